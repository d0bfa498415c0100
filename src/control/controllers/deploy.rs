//! Deploys: the leader rolls a new release of an app's built services out
//! in health-gated batches, and rolls it back when a new replica fails.
//!
//! A release pins each built service's image by digest. A service's
//! replicas are a window of replica numbers `first..first + count`: a
//! deploy starts new replicas above the window (max-surge at a time, each
//! on the new image), waits for them to pass the service's health check,
//! then retires the lowest (the old release's): out of DNS, stopped (the
//! node agent's order), so the numbers stay one window and a replica never
//! changes image under its number, except when a failed deploy puts the
//! previous release back on the replicas that got the new one.
//!
//! Every deploy is recorded in the artifact bucket
//! (`huxley/deploys/<app>.json`), so `huxley deploys` reads the history
//! without the cluster and a new leader runs what the last successful
//! release pinned. One deploy per app at a time: a second is refused with
//! who holds it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::control::state::Kick;
use crate::scheduler::rollout::batches;
use crate::scheduler::rollout::dependency_order;
use crate::scheduler::rollout::effective_surge;
use crate::spec::kick::ServiceKey;
use crate::spec::registry::Status;
use crate::spec::release::Event;
use crate::spec::release::Outcome;
use crate::spec::release::Release;
use crate::spec::release::short;
use crate::spec::release::version_of;

/// How many events one deploy keeps.
const EVENTS_KEPT: usize = 400;
/// How often a rollout looks at its replicas' health.
const POLL: Duration = Duration::from_millis(200);

/// Reads every app's deploy history from the bucket when a leadership
/// starts: a deploy left running by an earlier leader is recorded as
/// interrupted, and each service runs its last successful release. Each
/// app on its own: one whose history cannot be read (or parse) keeps its
/// running replicas on the releases the registry says they run, is read
/// again before its next deploy, and leaves every other app untouched.
pub async fn restore(kick: &Kick) {
    for app in kick.config.apps.keys() {
        if let Err(why) = read(kick, app).await {
            eprintln!("kick: {why}; {app} keeps what runs and is read again before it deploys");
            kick.deploys
                .lock()
                .expect("deploys")
                .unreadable
                .insert(app.clone(), why);
            keep_what_runs(kick, app);
        }
    }
}

/// Reads `app`'s history (when this leadership has not yet) and puts each
/// of its services on its last successful release.
pub async fn read(kick: &Kick, app: &str) -> Result<(), String> {
    if kick.deploys.lock().expect("deploys").is_read(app) {
        return Ok(());
    }
    let Some(bucket) = &kick.bucket else {
        let mut deploys = kick.deploys.lock().expect("deploys");
        deploys.read.insert(app.to_owned(), None);
        return Ok(());
    };
    let key = crate::spec::keys::history(app);
    let (mut releases, version): (Vec<Release>, Option<String>) = match kick
        .aws
        .get_object_versioned(bucket, &key)
        .await
        .map_err(|e| format!("cannot read the deploy history of {app}: {e}"))?
    {
        None => (Vec::new(), None),
        Some((bytes, etag)) => (
            crate::spec::release::parse_history(&bytes)
                .map_err(|e| format!("the deploy history of {app} ({key}) does not parse: {e}"))?,
            Some(etag),
        ),
    };
    for release in &mut releases {
        if release.outcome == Outcome::Running {
            release.outcome = Outcome::Interrupted;
            release.finished = Some(crate::clock::unix_seconds());
            release.reason = Some(
                "the kick server running it stopped leading; the last successful release runs"
                    .into(),
            );
        }
    }
    let current: Vec<(ServiceKey, String)> = {
        let mut deploys = kick.deploys.lock().expect("deploys");
        // Another request read it meanwhile (and may have recorded a
        // deploy since): its view stands.
        if deploys.is_read(app) {
            return Ok(());
        }
        deploys.history.insert(app.to_owned(), releases);
        deploys.read.insert(app.to_owned(), version);
        deploys.unreadable.remove(app);
        deploys
            .current(app)
            .into_iter()
            .map(|(service, (_, image))| ((app.to_owned(), service), image))
            .collect()
    };
    kick.assignments
        .lock()
        .expect("assignments")
        .current
        .extend(current);
    // Written back at once (with what was found running marked
    // interrupted): the version an earlier leader read is gone, so that
    // leader, should it still run after its lease lapsed, cannot write
    // over this one's history.
    if let Err(err) = save(kick, app).await {
        eprintln!("kick: {err}");
    }
    Ok(())
}

/// For an app whose history cannot be read: each built service that has
/// no release yet runs the image its registered replicas run (the most
/// common digest), so a new leader never stops what runs for want of a
/// history.
fn keep_what_runs(kick: &Kick, app: &str) {
    let Some(registry_host) = &kick.image_registry else {
        return;
    };
    let repository = crate::spec::names::repository_name(&kick.config.cluster.name, app);
    let mut seen: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    {
        let registry = kick.registry.lock().expect("registry");
        for (service, state) in registry.apps.get(app).into_iter().flatten() {
            for instance in state.instances.values() {
                if let Some(version) = &instance.version {
                    *seen
                        .entry(service.clone())
                        .or_default()
                        .entry(version.clone())
                        .or_default() += 1;
                }
            }
        }
    }
    let mut assignments = kick.assignments.lock().expect("assignments");
    for (service, versions) in seen {
        let Some((version, _)) = versions.into_iter().max_by_key(|(_, n)| *n) else {
            continue;
        };
        let image = format!("{registry_host}/{repository}@{version}");
        if crate::spec::release::check_image(&image, Some(registry_host), &repository).is_ok() {
            assignments
                .current
                .entry((app.to_owned(), service))
                .or_insert(image);
        }
    }
}

/// Writes `app`'s history to the bucket, only over the version this
/// leader read or last wrote: when another writer came first the write
/// fails ([`crate::aws::AwsError::Conflict`]), and the app is read again
/// before its next deploy.
pub async fn save(kick: &Kick, app: &str) -> Result<(), crate::aws::AwsError> {
    let Some(bucket) = &kick.bucket else {
        return Ok(());
    };
    // One write at a time, each of the latest state: two writers with
    // the same version would refuse each other.
    let _writing = kick.history_writes.lock().await;
    let (body, version) = {
        let deploys = kick.deploys.lock().expect("deploys");
        let Some(version) = deploys.read.get(app).cloned() else {
            return Err(crate::aws::AwsError::Conflict {
                action: "s3:PutObject".into(),
                key: crate::spec::keys::history(app),
            });
        };
        let releases = deploys.history.get(app).map_or(&[][..], Vec::as_slice);
        (
            crate::spec::release::history_bytes(releases, deploys.writer),
            version,
        )
    };
    let key = crate::spec::keys::history(app);
    let mut written = kick
        .aws
        .put_object_if(
            bucket,
            &key,
            body.clone(),
            "application/json",
            version.as_deref(),
        )
        .await;
    if matches!(written, Err(crate::aws::AwsError::Conflict { .. })) {
        // A write of ours whose answer was lost (and retried) lands as a
        // conflict with itself: when the bucket holds exactly what this
        // leader wrote, that version is ours.
        if let Ok(Some((stored, etag))) = kick.aws.get_object_versioned(bucket, &key).await
            && stored == body
        {
            written = Ok(etag);
        }
    }
    let mut deploys = kick.deploys.lock().expect("deploys");
    match written {
        Ok(etag) => {
            deploys.read.insert(app.to_owned(), Some(etag));
            Ok(())
        }
        Err(err) => {
            if matches!(err, crate::aws::AwsError::Conflict { .. }) {
                deploys.read.remove(app);
            }
            Err(err)
        }
    }
}

/// Records progress, saying (not failing) when the write is refused: the
/// rollout goes on and the next write carries it.
async fn save_progress(kick: &Kick, app: &str) {
    if let Err(err) = save(kick, app).await {
        eprintln!("kick: cannot record the deploys of {app}: {err}");
    }
}

/// Adds a line to a release's events (and kick's log).
pub(super) fn say(kick: &Kick, app: &str, id: u64, text: impl Into<String>) {
    let text = text.into();
    eprintln!("kick: deploy {app} v{id}: {text}");
    let mut deploys = kick.deploys.lock().expect("deploys");
    if let Some(release) = deploys.release_mut(app, id) {
        if release.events.len() >= EVENTS_KEPT {
            release.events.remove(0);
        }
        release.events.push(Event {
            at: crate::clock::unix_seconds(),
            text,
        });
    }
    drop(deploys);
    // The description shows a running deploy.
    crate::control::controllers::assign::bump(kick);
}

/// Why a rollout stopped.
struct Stopped {
    reason: String,
}

/// Rolls release `id` of `app` out, service by service (dependencies
/// first); on a failure, puts the previous release back.
pub async fn run(kick: &Arc<Kick>, app: &str, id: u64) {
    let Some(release) = kick
        .deploys
        .lock()
        .expect("deploys")
        .release_mut(app, id)
        .cloned()
    else {
        return;
    };
    let what = match (release.rollback_of, &release.commit) {
        _ if !release.restarted.is_empty() => {
            format!("restarting {}", release.restarted.join(", "))
        }
        (Some(of), _) => format!("rolling back to v{of}"),
        (None, Some(commit)) => format!("rolling out {}", short(commit)),
        (None, None) => "rolling out".to_owned(),
    };
    say(kick, app, id, what);
    let section = &kick.config.apps[app];
    let depends_on = |name: &str| {
        section
            .services
            .get(name)
            .map_or(&[][..], |s| s.depends_on.as_slice())
    };
    let order = dependency_order(
        depends_on,
        release.images.keys().chain(release.restarted.iter()),
    );
    // Release commands first, before any replica moves: one that fails
    // ends the deploy with nothing changed.
    if release.restarted.is_empty()
        && let Err(reason) =
            crate::control::controllers::release::release_phase(kick, app, id, &release, &order)
                .await
    {
        say(kick, app, id, reason.clone());
        {
            let mut deploys = kick.deploys.lock().expect("deploys");
            if let Some(r) = deploys.release_mut(app, id) {
                r.reason = Some(reason);
                r.outcome = Outcome::Refused;
                r.finished = Some(crate::clock::unix_seconds());
            }
        }
        save_progress(kick, app).await;
        crate::control::controllers::assign::bump(kick);
        return;
    }
    let mut done: Vec<String> = Vec::new();
    let mut failure = None;
    for service in &order {
        let Some(image) = image_of(kick, &release, service) else {
            continue;
        };
        let image = &image;
        if release.previous.get(service) == Some(image) && !release.restarted.contains(service) {
            say(
                kick,
                app,
                id,
                format!("{service}: already runs {}", label(image)),
            );
            continue;
        }
        match roll(kick, app, id, service, image).await {
            Ok(replaced) => {
                if let Some(r) = kick.deploys.lock().expect("deploys").release_mut(app, id) {
                    r.replaced += replaced;
                }
                done.push(service.clone());
            }
            Err(stopped) => {
                failure = Some((service.clone(), stopped.reason));
                break;
            }
        }
        save_progress(kick, app).await;
    }
    let outcome = match failure {
        None => {
            say(kick, app, id, "every replica runs the new release");
            Outcome::Succeeded
        }
        Some((service, reason)) => {
            say(kick, app, id, reason.clone());
            let put_back = put_back(kick, app, id, &release, &service, &done).await;
            let mut deploys = kick.deploys.lock().expect("deploys");
            if let Some(r) = deploys.release_mut(app, id) {
                r.reason = Some(reason);
            }
            if put_back {
                Outcome::RolledBack
            } else {
                Outcome::Failed
            }
        }
    };
    {
        let mut deploys = kick.deploys.lock().expect("deploys");
        if let Some(r) = deploys.release_mut(app, id) {
            r.outcome = outcome;
            r.finished = Some(crate::clock::unix_seconds());
        }
    }
    save_progress(kick, app).await;
    crate::control::controllers::assign::bump(kick);
}

/// An image in a deploy's events: a digest's first 12 hex digits, or a
/// prebuilt image's whole name and tag.
pub(super) fn label(image: &str) -> &str {
    if version_of(image).is_some() {
        short(image)
    } else {
        image
    }
}

/// The image `service` runs in `release`: its built image, or for a
/// prebuilt service a restart names, the one kick.toml gives it.
fn image_of(kick: &Kick, release: &Release, service: &str) -> Option<String> {
    release.images.get(service).cloned().or_else(|| {
        release
            .restarted
            .iter()
            .any(|s| s == service)
            .then(|| {
                kick.config.apps[&release.app]
                    .services
                    .get(service)?
                    .image
                    .clone()
            })
            .flatten()
    })
}

/// The replica window of a service: its first number and how many.
fn window(kick: &Kick, key: &ServiceKey) -> (u32, u32) {
    let assignments = kick.assignments.lock().expect("assignments");
    let first = assignments.first.get(key).copied().unwrap_or(1);
    let count = assignments.rolling.get(key).copied().unwrap_or_else(|| {
        crate::control::controllers::assign::wanted_count(&kick.config, &assignments, key)
    });
    (first, count)
}

/// Sets a service's window and the images of its new replicas, then
/// places again.
async fn set_window(
    kick: &Kick,
    key: &ServiceKey,
    first: u32,
    count: u32,
    images: &[(u32, String)],
) {
    {
        let mut assignments = kick.assignments.lock().expect("assignments");
        assignments.first.insert(key.clone(), first);
        assignments.rolling.insert(key.clone(), count);
        for (index, image) in images {
            assignments.images.insert(
                crate::scheduler::placement::Replica {
                    app: key.0.clone(),
                    service: key.1.clone(),
                    index: *index,
                },
                image.clone(),
            );
        }
        let end = first + count;
        assignments.images.retain(|r, _| {
            (&r.app, &r.service) != (&key.0, &key.1) || (first..end).contains(&r.index)
        });
    }
    crate::control::controllers::assign::replace(kick).await;
}

/// Replaces every replica of `service` with one on `image`, in batches;
/// the number started. On a failure the window is left as it stands (the
/// caller puts the previous release back).
async fn roll(
    kick: &Arc<Kick>,
    app: &str,
    id: u64,
    service: &str,
    image: &str,
) -> Result<u32, Stopped> {
    let key: ServiceKey = (app.to_owned(), service.to_owned());
    let section = kick.config.apps[app].services[service].clone();
    let policy = section.deploy;
    let (mut first, running) = window(kick, &key);
    let target = {
        let assignments = kick.assignments.lock().expect("assignments");
        crate::control::controllers::assign::wanted_count(&kick.config, &assignments, &key).max(1)
    };
    // What runs now is the old release (none before a first deploy).
    // A prebuilt service always runs (its image comes with kick.toml).
    let built = section.image.is_none();
    let fresh = built
        && !kick
            .assignments
            .lock()
            .expect("assignments")
            .current
            .contains_key(&key);
    let mut old = if fresh { 0 } else { running };
    let mut new = 0u32;
    let count = |n: u32| usize::try_from(n).unwrap_or(usize::MAX);
    let surge = u32::try_from(policy.max_surge.count(count(target))).unwrap_or(u32::MAX);
    let unavailable =
        u32::try_from(policy.max_unavailable.count(count(target))).unwrap_or(u32::MAX);
    let surge = effective_surge(surge, unavailable);
    let mut started = 0;
    say(
        kick,
        app,
        id,
        format!(
            "{service}: {} {} on {} (max-surge {surge}, max-unavailable {unavailable}, {} per batch to pass {})",
            if fresh { "starting" } else { "replacing" },
            count_of(old.max(target), "replica"),
            label(image),
            crate::spec::quantity::format_duration(policy.timeout),
            describe_check(&section.health),
        ),
    );
    let numbered = |numbers: &[u32]| {
        numbers
            .iter()
            .map(|n| format!("#{n}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let retired = |n: u32| {
        format!(
            "{service}: {} out of DNS, drained {} and stopped",
            count_of(n, "old replica"),
            crate::spec::quantity::format_duration(policy.drain)
        )
    };
    for batch in batches(old, target, surge, unavailable) {
        if batch.stop_first > 0 {
            (first, old) = retire(
                kick,
                &key,
                (first, old, new),
                batch.stop_first,
                policy.drain,
            )
            .await;
            say(
                kick,
                app,
                id,
                format!("{} first (max-unavailable)", retired(batch.stop_first)),
            );
        }
        if batch.start > 0 {
            let from = first + old + new;
            let numbers: Vec<u32> = (from..from + batch.start).collect();
            let images: Vec<(u32, String)> =
                numbers.iter().map(|n| (*n, image.to_owned())).collect();
            set_window(kick, &key, first, old + new + batch.start, &images).await;
            say(
                kick,
                app,
                id,
                format!(
                    "{service}: started {} ({})",
                    count_of(batch.start, "new replica"),
                    numbered(&numbers)
                ),
            );
            started += batch.start;
            wait_healthy(kick, &key, &numbers, image, policy.timeout).await?;
            say(
                kick,
                app,
                id,
                format!("{service}: {} healthy", numbered(&numbers)),
            );
            new += batch.start;
        }
        if batch.retire > 0 {
            (first, old) = retire(kick, &key, (first, old, new), batch.retire, policy.drain).await;
            say(kick, app, id, retired(batch.retire));
        }
    }
    // Done: the image is the service's release; the window is its count.
    {
        let mut assignments = kick.assignments.lock().expect("assignments");
        if built {
            assignments.current.insert(key.clone(), image.to_owned());
        }
        assignments.rolling.remove(&key);
        assignments.first.insert(key.clone(), first);
        assignments
            .images
            .retain(|r, _| (&r.app, &r.service) != (&key.0, &key.1));
    }
    crate::control::controllers::assign::replace(kick).await;
    say(
        kick,
        app,
        id,
        format!("{service}: every replica runs {}", label(image)),
    );
    Ok(started)
}

/// Retires the `n` lowest replicas of a window (`first`, `old` on the old
/// release, `new` above them): out of DNS first; once Route53 has the
/// change everywhere (INSYNC), still running for `drain` (the records'
/// TTL, so a client holding the old answer still reaches them); then
/// stopped, by their node agents. The window's new `first` and `old`.
async fn retire(
    kick: &Kick,
    key: &ServiceKey,
    (first, old, new): (u32, u32, u32),
    n: u32,
    drain: Duration,
) -> (u32, u32) {
    let leaving = first..first + n;
    crate::control::controllers::health::drain_out_of_dns(
        kick,
        key,
        |i| i.replica.is_some_and(|r| leaving.contains(&r)),
        drain,
    )
    .await;
    let (first, old) = (first + n, old - n);
    set_window(kick, key, first, old + new, &[]).await;
    (first, old)
}

/// How a service's health is checked, in words.
pub fn describe_check(check: &crate::spec::kick::HealthCheck) -> String {
    use crate::spec::kick::HealthKind;
    let what = match check.kind {
        HealthKind::Http => format!(
            "GET {} on port {}",
            check.path.as_deref().unwrap_or("/"),
            check.port.map_or_else(|| "?".to_owned(), |p| p.to_string())
        ),
        HealthKind::Tcp => format!(
            "a TCP connect to port {}",
            check.port.map_or_else(|| "?".to_owned(), |p| p.to_string())
        ),
        HealthKind::Running => "the container running".to_owned(),
    };
    let format = crate::spec::quantity::format_duration;
    format!(
        "its health check ({what} every {}, timeout {}, healthy after {} passing)",
        format(check.interval),
        format(check.timeout),
        check.healthy,
    )
}

/// Waits until every replica in `numbers` runs `image` and passes its
/// health check, or says why not by the deadline.
async fn wait_healthy(
    kick: &Kick,
    key: &ServiceKey,
    numbers: &[u32],
    image: &str,
    timeout: Duration,
) -> Result<(), Stopped> {
    let deadline = tokio::time::Instant::now() + timeout;
    // A prebuilt image (a tag, restarted) has no version: its replicas
    // report none.
    let version = version_of(image).map(str::to_owned);
    let version = version.as_deref();
    let section = &kick.config.apps[&key.0].services[&key.1];
    loop {
        let (pending, failed) = replica_states(kick, key, numbers, version, section);
        if pending.is_empty() {
            return Ok(());
        }
        if let Some((number, detail)) = failed {
            return Err(Stopped {
                reason: format!(
                    "{}'s new replica #{number} failed: {detail}{}",
                    key.1,
                    printed(kick, key, number, version)
                ),
            });
        }
        if tokio::time::Instant::now() >= deadline {
            let (number, last) = pending.into_iter().next().unwrap_or_default();
            return Err(Stopped {
                reason: format!(
                    "{}'s new replica #{number} did not pass {} within {} (deploy.timeout); last: {last}{}",
                    key.1,
                    describe_check(&section.health),
                    crate::spec::quantity::format_duration(timeout),
                    printed(kick, key, number, version)
                ),
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// What replica `number` on `version` printed last, as its node reported
/// it, on lines of their own after the reason; nothing when it printed
/// nothing.
fn printed(kick: &Kick, key: &ServiceKey, number: u32, version: Option<&str>) -> String {
    let assignments = kick.assignments.lock().expect("assignments");
    let replica = crate::scheduler::placement::Replica {
        app: key.0.clone(),
        service: key.1.clone(),
        index: number,
    };
    let output = assignments
        .placement
        .assigned
        .get(&replica)
        .and_then(|node| assignments.reports.get(node))
        .and_then(|(_, report)| {
            report
                .replicas
                .iter()
                .find(|r| (&r.app, &r.service, r.replica) == (&key.0, &key.1, number))
        })
        .filter(|r| r.version.as_deref() == version)
        .map(|r| r.output.clone())
        .unwrap_or_default();
    if output.is_empty() {
        return String::new();
    }
    let mut text = format!("\n#{number}'s last output:");
    for line in output {
        text.push_str("\n  ");
        text.push_str(&line);
    }
    text
}

/// The replicas of `numbers` not yet healthy on `version`, each with what
/// was last seen of it, and one that failed outright (its container
/// exited, its image would not pull).
fn replica_states(
    kick: &Kick,
    key: &ServiceKey,
    numbers: &[u32],
    version: Option<&str>,
    section: &crate::spec::kick::ServiceSection,
) -> (BTreeMap<u32, String>, Option<(u32, String)>) {
    use crate::spec::assignment::ReplicaState;
    let mut pending = BTreeMap::new();
    let mut failed = None;
    let registry = kick.registry.lock().expect("registry");
    let assignments = kick.assignments.lock().expect("assignments");
    let state = registry.service(&key.0, &key.1);
    for number in numbers {
        // Only the node the replica is placed on speaks for it: any other
        // node's report of it (a forged Failed, or Running) is not heard.
        let placed_on = assignments
            .placement
            .assigned
            .get(&crate::scheduler::placement::Replica {
                app: key.0.clone(),
                service: key.1.clone(),
                index: *number,
            });
        let reported = placed_on
            .and_then(|node| assignments.reports.get(node))
            .and_then(|(_, report)| {
                report
                    .replicas
                    .iter()
                    .find(|r| (&r.app, &r.service, r.replica) == (&key.0, &key.1, *number))
            });
        let on_version = reported.is_some_and(|r| r.version.as_deref() == version);
        if let Some(r) = reported.filter(|_| on_version)
            && r.state == ReplicaState::Failed
        {
            failed.get_or_insert((
                *number,
                r.detail.clone().unwrap_or_else(|| "it stopped".to_owned()),
            ));
        }
        // Nor does another node's registration of it.
        let instance = state.and_then(|s| {
            s.instances.values().find(|i| {
                i.replica == Some(*number)
                    && i.version.as_deref() == version
                    && Some(&i.node) == placed_on
            })
        });
        let healthy = match section.port {
            // Without a port there is no check but that it runs.
            None => on_version && reported.is_some_and(|r| r.state == ReplicaState::Running),
            Some(_) => instance.is_some_and(|i| i.health.status == Status::Healthy),
        };
        if healthy {
            continue;
        }
        let last = match (instance, reported) {
            (Some(i), _) if !i.health.last_output.is_empty() => {
                format!(
                    "{} at {}: {}",
                    status_word(i.health.status),
                    i.address,
                    i.health.last_output.trim()
                )
            }
            (Some(i), _) => format!("registered at {}, not checked yet", i.address),
            (None, Some(r)) if on_version => format!(
                "{} on {}, not registered yet",
                format!("{:?}", r.state).to_lowercase(),
                assignments
                    .placement
                    .assigned
                    .iter()
                    .find(|(p, _)| (&p.app, &p.service, p.index) == (&key.0, &key.1, *number))
                    .map_or("its node", |(_, node)| node.as_str())
            ),
            _ => match assignments
                .placement
                .unplaced
                .iter()
                .find(|(p, _)| (&p.app, &p.service, p.index) == (&key.0, &key.1, *number))
            {
                Some((_, why)) => format!("not placed: {why}"),
                None => "its node has not started it yet".to_owned(),
            },
        };
        pending.insert(*number, last);
    }
    (pending, failed)
}

/// `n` `noun`s, in words.
fn count_of(n: u32, noun: &str) -> String {
    crate::diagnostic::plural(usize::try_from(n).unwrap_or(usize::MAX), noun)
}

fn status_word(status: Status) -> &'static str {
    match status {
        Status::Unknown => "not healthy yet",
        Status::Healthy => "healthy",
        Status::Unhealthy => "unhealthy",
    }
}

/// Puts the previous release back after `failed` stopped the rollout:
/// `failed`'s replicas on the new image go back to the previous one (the
/// old replicas never stopped serving), and services already rolled
/// (`done`) roll back through the same health-gated batches. Whether every
/// service runs its previous release again.
async fn put_back(
    kick: &Arc<Kick>,
    app: &str,
    id: u64,
    release: &Release,
    failed: &str,
    done: &[String],
) -> bool {
    let key: ServiceKey = (app.to_owned(), failed.to_owned());
    let section = kick.config.apps[app].services[failed].clone();
    {
        let mut assignments = kick.assignments.lock().expect("assignments");
        assignments.rolling.remove(&key);
        assignments
            .images
            .retain(|r, _| (&r.app, &r.service) != (&key.0, &key.1));
    }
    crate::control::controllers::assign::replace(kick).await;
    let mut ok = true;
    let before = |service: &str| {
        release.previous.get(service).cloned().or_else(|| {
            release
                .restarted
                .iter()
                .any(|s| s == service)
                .then(|| image_of(kick, release, service))
                .flatten()
        })
    };
    match before(failed).as_ref() {
        None => say(
            kick,
            app,
            id,
            format!("{failed}: no earlier release to put back; its new replicas are stopped"),
        ),
        Some(previous) => {
            say(
                kick,
                app,
                id,
                format!("{failed}: putting {} back", label(previous)),
            );
            let (first, count) = window(kick, &key);
            let numbers: Vec<u32> = (first..first + count).collect();
            match wait_healthy(kick, &key, &numbers, previous, section.deploy.timeout).await {
                Ok(()) => say(
                    kick,
                    app,
                    id,
                    format!("{failed}: every replica runs {} again", label(previous)),
                ),
                Err(stopped) => {
                    say(kick, app, id, format!("rollback: {}", stopped.reason));
                    ok = false;
                }
            }
        }
    }
    for service in done.iter().rev() {
        if release.restarted.contains(service) {
            // Restarted on the image it ran: nothing to put back.
            continue;
        }
        let Some(previous) = before(service) else {
            // Its first release: it goes, as it came, with the deploy.
            say(
                kick,
                app,
                id,
                format!("{service}: no earlier release to put back; its replicas are stopped"),
            );
            kick.assignments
                .lock()
                .expect("assignments")
                .current
                .remove(&(app.to_owned(), service.clone()));
            crate::control::controllers::assign::replace(kick).await;
            continue;
        };
        say(
            kick,
            app,
            id,
            format!("{service}: rolling back to {}", label(&previous)),
        );
        if let Err(stopped) = roll(kick, app, id, service, &previous).await {
            say(kick, app, id, format!("rollback: {}", stopped.reason));
            ok = false;
        }
    }
    ok
}
