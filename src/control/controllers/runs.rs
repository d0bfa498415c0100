//! One-off runs ([`crate::spec::run`]): the leader places each on a node
//! with room, hands it to that node in its assignment, follows what the
//! node says of it, and ends a run whose node went silent or away.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;

use crate::control::state::Kick;
use crate::spec::run::{AssignedRun, RunStatus};

/// How often runs whose node went silent are ended.
const TIDY_EVERY: Duration = Duration::from_secs(5);

/// Why a run cannot be placed: the status to answer, and what to say.
pub type Refusal = (StatusCode, String);

/// The section of `app.service` in kick.toml, or 404.
fn section_of<'a>(
    kick: &'a Kick,
    app: &str,
    service: &str,
) -> Result<&'a crate::spec::kick::ServiceSection, Refusal> {
    kick.config
        .apps
        .get(app)
        .and_then(|a| a.services.get(service))
        .ok_or_else(|| {
            (
                StatusCode::NOT_FOUND,
                format!("no service {app}.{service} in this cluster"),
            )
        })
}

/// The image a run of `app.service` takes: `release`'s for a service
/// built on push (default: the release it runs), else its prebuilt image;
/// with the release's number.
pub fn image_for(
    kick: &Kick,
    app: &str,
    service: &str,
    release: Option<u64>,
) -> Result<(Option<String>, Option<u64>), Refusal> {
    let section = section_of(kick, app, service)?;
    if let Some(image) = &section.image {
        return match release {
            None => Ok((Some(image.clone()), None)),
            Some(_) => Err((
                StatusCode::BAD_REQUEST,
                format!(
                    "{app}.{service} runs the prebuilt image {image}, not releases: leave out --release"
                ),
            )),
        };
    }
    let deploys = kick.deploys.lock().expect("deploys");
    match release {
        Some(id) => {
            let chosen = deploys
                .history
                .get(app)
                .and_then(|h| h.iter().find(|r| r.id == id))
                .ok_or_else(|| {
                    (
                        StatusCode::NOT_FOUND,
                        format!("{app} has no release v{id}: `huxley deploys {app}` lists them"),
                    )
                })?;
            let image = chosen.images.get(service).ok_or_else(|| {
                (
                    StatusCode::NOT_FOUND,
                    format!("release v{id} of {app} has no image of {service}"),
                )
            })?;
            Ok((Some(image.clone()), Some(id)))
        }
        None => {
            let (id, image) = deploys.current(app).remove(service).ok_or_else(|| {
                (
                    StatusCode::CONFLICT,
                    format!(
                        "{app}.{service} has no release yet: push the app to deploy it, then run"
                    ),
                )
            })?;
            Ok((Some(image), Some(id)))
        }
    }
}

/// A node's room, as a run takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Room {
    pub node: String,
    pub cpu_millis: i64,
    pub memory_mib: i64,
}

/// The node a run of `cpu_millis` and `memory_mib` goes to: of those with
/// room for it, the one with the most memory free (then CPU, then the
/// lowest id, so the choice is the same for the same cluster).
pub fn choose(rooms: &[Room], cpu_millis: u32, memory_mib: u64) -> Option<&str> {
    let (cpu, memory) = (
        i64::from(cpu_millis),
        i64::try_from(memory_mib).unwrap_or(i64::MAX),
    );
    rooms
        .iter()
        .filter(|r| r.cpu_millis >= cpu && r.memory_mib >= memory)
        .max_by(|a, b| {
            (a.memory_mib, a.cpu_millis, std::cmp::Reverse(&a.node)).cmp(&(
                b.memory_mib,
                b.cpu_millis,
                std::cmp::Reverse(&b.node),
            ))
        })
        .map(|r| r.node.as_str())
}

/// Every node's room now: what its agent asked for work, is not being
/// drained, and has left once its replicas and runs are counted.
fn rooms(kick: &Kick) -> Vec<Room> {
    let specs = crate::control::controllers::assign::node_specs(kick);
    let assignments = kick.assignments.lock().expect("assignments");
    let runs = kick.runs.lock().expect("runs");
    let size = |app: &str, service: &str| {
        kick.config
            .apps
            .get(app)
            .and_then(|a| a.services.get(service))
            .map_or((0, 0), |s| {
                (
                    i64::from(s.cpu_millis),
                    i64::try_from(s.memory_mib).unwrap_or(i64::MAX),
                )
            })
    };
    specs
        .values()
        .filter(|n| assignments.ready.contains(&n.id) && !assignments.draining.contains_key(&n.id))
        .map(|n| {
            let mut room = Room {
                node: n.id.clone(),
                cpu_millis: i64::from(n.cpu_millis),
                memory_mib: i64::try_from(n.memory_mib).unwrap_or(i64::MAX),
            };
            let used = assignments
                .placement
                .on_node(&n.id)
                .map(|r| size(&r.app, &r.service))
                .chain(
                    runs.on_node(&n.id)
                        .map(|r| size(&r.assigned.app, &r.assigned.service)),
                );
            for (cpu, memory) in used {
                room.cpu_millis -= cpu;
                room.memory_mib -= memory;
            }
            room
        })
        .collect()
}

/// What a run is for: who asked, to say in kick's log.
#[derive(Debug, Clone)]
pub struct Purpose<'a> {
    pub command: Vec<String>,
    pub image: Option<String>,
    pub release: Option<u64>,
    pub timeout_seconds: u64,
    pub by: &'a str,
    /// Whether its output leaves without the service's secrets.
    pub redact: bool,
}

/// Places a run of `app.service` and hands it to its node; its id and
/// node. A stateful service's run goes to the node of its first replica,
/// where its volumes are; any other to the node with the most room.
pub fn place(
    kick: &Kick,
    app: &str,
    service: &str,
    run: Purpose,
) -> Result<(u64, String), Refusal> {
    let section = section_of(kick, app, service)?;
    if kick.runs.lock().expect("runs").under_way() >= crate::control::state::runs::AT_ONCE {
        return Err((
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "{} runs are under way, the most kick follows at once: wait for one to end",
                crate::control::state::runs::AT_ONCE
            ),
        ));
    }
    let node = if section.stateful {
        let assignments = kick.assignments.lock().expect("assignments");
        assignments
            .placement
            .assigned
            .iter()
            .filter(|(r, _)| r.app == app && r.service == service)
            .min_by_key(|(r, _)| r.index)
            .map(|(_, node)| node.clone())
            .ok_or_else(|| {
                (
                    StatusCode::CONFLICT,
                    format!("{app}.{service} is stateful and has no replica placed: its run goes where its volumes are"),
                )
            })?
    } else {
        let rooms = rooms(kick);
        choose(&rooms, section.cpu_millis, section.memory_mib)
            .map(str::to_owned)
            .ok_or_else(|| {
                (
                    StatusCode::CONFLICT,
                    format!(
                        "no node has room for a run of {app}.{service} ({}m CPU, {} MiB) beside what it runs; wait for the cluster to scale, or make room",
                        section.cpu_millis, section.memory_mib
                    ),
                )
            })?
    };
    let assigned = AssignedRun {
        id: 0,
        app: app.to_owned(),
        service: service.to_owned(),
        unit: section.unit.clone(),
        image: run.image,
        command: run.command,
        env: crate::control::controllers::assign::dependency_env(&kick.config, app, service),
        port: section.port,
        timeout_seconds: run.timeout_seconds,
        redact: run.redact,
    };
    let id = kick
        .runs
        .lock()
        .expect("runs")
        .add(assigned, &node, run.release);
    eprintln!(
        "kick: run {id} of {app}.{service} placed on {node} for {}",
        run.by
    );
    changed(kick, true);
    Ok((id, node))
}

/// Tells the followers of runs, and when the nodes' share changed (a run
/// placed or ended) the node agents too.
pub fn changed(kick: &Kick, share: bool) {
    kick.ran.send_modify(|n| *n += 1);
    // The description shows the runs under way.
    crate::control::controllers::assign::bump(kick);
    if share {
        crate::control::controllers::assign::new_generation(kick);
    }
}

/// A run's status from line `after`, at once when it has lines from
/// there or ended, else when it does or `wait` passed; `None` for a run
/// kick does not know.
pub async fn follow(kick: &Kick, id: u64, after: u64, wait: Duration) -> Option<RunStatus> {
    let mut changes = kick.ran.subscribe();
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        changes.borrow_and_update();
        let status = kick.runs.lock().expect("runs").runs.get(&id)?.status(after);
        if status.state.ended() || !status.lines.is_empty() {
            return Some(status);
        }
        match tokio::time::timeout_at(deadline, changes.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) | Err(_) => {
                return kick
                    .runs
                    .lock()
                    .expect("runs")
                    .runs
                    .get(&id)
                    .map(|r| r.status(after));
            }
        }
    }
}

/// Waits for a run to end; its status (its last lines in
/// [`crate::control::state::runs::Run::last_lines`]).
pub async fn ended(kick: &Kick, id: u64) -> Option<RunStatus> {
    let mut changes = kick.ran.subscribe();
    loop {
        changes.borrow_and_update();
        {
            let runs = kick.runs.lock().expect("runs");
            let run = runs.runs.get(&id)?;
            if run.state.ended() {
                return Some(run.status(run.next()));
            }
        }
        // A change, or another look at least every second.
        let _ = tokio::time::timeout(Duration::from_secs(1), changes.changed()).await;
    }
}

/// The last `count` lines a run printed, each printable on one line.
pub fn last_output(kick: &Kick, id: u64, count: usize) -> Vec<String> {
    kick.runs
        .lock()
        .expect("runs")
        .runs
        .get(&id)
        .map(|r| {
            r.last_lines(count)
                .into_iter()
                .map(|l| {
                    crate::spec::assignment::printable(
                        l.text.trim_end(),
                        crate::spec::assignment::OUTPUT_WIDTH,
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Ends the runs of nodes that went silent or left, every few seconds.
pub fn spawn(kick: Arc<Kick>) -> tokio::task::AbortHandle {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(TIDY_EVERY);
        loop {
            tick.tick().await;
            let known: BTreeSet<String> = kick
                .nodes
                .lock()
                .expect("nodes")
                .known
                .keys()
                .cloned()
                .collect();
            let ended = kick
                .runs
                .lock()
                .expect("runs")
                .tidy(|node| known.is_empty() || known.contains(node));
            if ended {
                changed(kick.as_ref(), true);
            }
        }
    })
    .abort_handle()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(node: &str, cpu: i64, memory: i64) -> Room {
        Room {
            node: node.into(),
            cpu_millis: cpu,
            memory_mib: memory,
        }
    }

    #[test]
    fn a_run_goes_to_the_node_with_the_most_room_that_fits_it() {
        let rooms = [
            room("i-a", 2000, 512),
            room("i-b", 250, 4096),
            room("i-c", 1000, 2048),
            room("i-d", 1000, 2048),
        ];
        assert_eq!(choose(&rooms, 250, 256), Some("i-b"));
        // i-b has too little CPU; i-c and i-d tie, the lower id wins.
        assert_eq!(choose(&rooms, 500, 256), Some("i-c"));
        assert_eq!(choose(&rooms, 1500, 256), Some("i-a"));
        assert_eq!(choose(&rooms, 250, 8192), None);
        // A node over its room (replicas placed beyond it) takes nothing.
        assert_eq!(choose(&[room("i-a", -250, 1024)], 250, 256), None);
    }
}
