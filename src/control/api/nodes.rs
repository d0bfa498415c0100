//! Node agents' share (`GET /v1/nodes/{id}/assignment`, a long poll) and reports (`PUT /v1/nodes/{id}/status`).

use std::sync::Arc;
use std::time::Duration;
use std::time::SystemTime;

use axum::Json;
use axum::extract::Query;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::control::api::http::{authenticate, error};
use crate::control::controllers::assign::MAX_WAIT;
use crate::control::controllers::assign::assignment;
use crate::control::controllers::assign::replace;
use crate::control::state::{Kick, SECRETS_KEPT};
use crate::spec::assignment::NodeReport;
use crate::spec::assignment::ReplicaReport;
use crate::spec::assignment::ReplicaState;
use crate::spec::secrets::{SecretsError, env_file};

#[derive(Debug, Deserialize)]
pub struct Wait {
    /// The generation the agent has; answer when it changes.
    after: Option<u64>,
    /// Seconds to wait for a change, at most 60.
    wait: Option<u64>,
}

/// `GET /v1/nodes/{id}/assignment?after=G&wait=S`: the node's share, at
/// once when it differs from generation G, else when it changes or after S
/// seconds.
pub async fn get_assignment(
    State(kick): State<Arc<Kick>>,
    headers: HeaderMap,
    Path(node): Path<String>,
    query: Result<Query<Wait>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if let Err(response) = node_scope(&kick, &headers, &node).await {
        return *response;
    }
    let wait = match query {
        Ok(Query(wait)) => wait,
        Err(rejection) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("malformed query: {}", rejection.body_text()),
            );
        }
    };
    let newly_ready = kick
        .assignments
        .lock()
        .expect("assignments")
        .ready
        .insert(node.clone());
    if newly_ready {
        replace(&kick).await;
    }
    let mut changes = kick.placed.subscribe();
    let limit = Duration::from_secs(wait.wait.unwrap_or(0)).min(MAX_WAIT);
    if let Some(after) = wait.after {
        let deadline = tokio::time::Instant::now() + limit;
        while *changes.borrow_and_update() == after {
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => break,
            }
        }
    }
    // Checked again after the wait: a server whose lease lapsed meanwhile
    // hands out nothing (the agent keeps what it runs and asks again).
    if kick.lease.as_ref().is_some_and(|l| !l.valid()) {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "this kick server no longer leads; ask the leader",
        );
    }
    Json(assignment(&kick, &node)).into_response()
}

/// How long a replica's `detail` may be, in characters.
const DETAIL_WIDTH: usize = 500;

/// A replica cannot use more than its service's cpu and memory, which
/// Docker enforces: a reported figure is clamped to that, so one report
/// (of `1e15` CPU, or a node's whole allocatable CPU for a 500m service)
/// cannot scale every service and the node group to their maximum, nor
/// overflow the scaler's sums.
fn clamp_usage(report: &mut NodeReport, config: &crate::spec::kick::KickConfig) {
    for replica in &mut report.replicas {
        // Docker caps a replica at its service's cpu and memory (`--cpus`,
        // `--memory`): a figure above them is not a measurement.
        let (cpu, memory) = config
            .apps
            .get(&replica.app)
            .and_then(|a| a.services.get(&replica.service))
            .map_or((0, 0), |s| (u64::from(s.cpu_millis), s.memory_mib));
        replica.cpu_millis = replica.cpu_millis.map(|c| c.min(cpu));
        replica.memory_mib = replica.memory_mib.map(|m| m.min(memory));
        // Output and detail as a report may carry them, whatever a node
        // sends: they reach the pusher's terminal.
        replica.output =
            crate::spec::assignment::last_lines(replica.output.iter().map(String::as_str));
        replica.detail = replica
            .detail
            .as_deref()
            .map(|d| crate::spec::assignment::printable(d, DETAIL_WIDTH));
    }
}

/// `PUT /v1/nodes/{id}/status`: what the node runs.
pub async fn put_status(
    State(kick): State<Arc<Kick>>,
    headers: HeaderMap,
    Path(node): Path<String>,
    payload: Result<Json<NodeReport>, axum::extract::rejection::JsonRejection>,
) -> Response {
    if let Err(response) = node_scope(&kick, &headers, &node).await {
        return *response;
    }
    let mut report = match crate::control::api::http::body(payload) {
        Ok(report) => report,
        Err(response) => return *response,
    };
    clamp_usage(&mut report, &kick.config);
    let mut assignments = kick.assignments.lock().expect("assignments");
    // Usage alone changes nothing the description shows.
    let shown = |r: &ReplicaReport| {
        (
            r.app.clone(),
            r.service.clone(),
            r.replica,
            r.state,
            r.detail.clone(),
            r.address,
        )
    };
    let changed = assignments.reports.get(&node).is_none_or(|(_, old)| {
        !old.replicas
            .iter()
            .map(shown)
            .eq(report.replicas.iter().map(shown))
    });
    for replica in &report.replicas {
        let before = assignments
            .reports
            .get(&node)
            .and_then(|(_, old)| {
                old.replicas.iter().find(|r| {
                    r.app == replica.app
                        && r.service == replica.service
                        && r.replica == replica.replica
                })
            })
            .map(|r| r.state);
        if replica.state == ReplicaState::Failed && before != Some(ReplicaState::Failed) {
            eprintln!(
                "kick: {}.{}#{} failed on {node}: {}",
                replica.app,
                replica.service,
                replica.replica,
                replica.detail.as_deref().unwrap_or("no detail")
            );
        }
    }
    assignments
        .reports
        .insert(node, (SystemTime::now(), report));
    if changed {
        assignments.version += 1;
    }
    StatusCode::NO_CONTENT.into_response()
}

/// `GET /v1/nodes/{id}/secrets/{app}/{service}`: the env file of the
/// service's secrets, for the node itself and only while a replica of the
/// service is placed on it. Kick reads them with the control plane's role;
/// nodes cannot. A missing parameter or an unwritable value is named
/// (422), never shown; no value is ever logged.
pub async fn get_secrets(
    State(kick): State<Arc<Kick>>,
    headers: HeaderMap,
    Path((node, app, service)): Path<(String, String, String)>,
) -> Response {
    let scope = match node_scope(&kick, &headers, &node).await {
        Ok(scope) => scope,
        Err(response) => return *response,
    };
    if scope.node() != Some(node.as_str()) {
        return error(
            StatusCode::FORBIDDEN,
            "a service's secrets go only to a node that runs it, asking as itself",
        );
    }
    let Some(section) = kick
        .config
        .apps
        .get(&app)
        .and_then(|a| a.services.get(&service))
    else {
        return error(
            StatusCode::NOT_FOUND,
            format!("no service {app}.{service} in this cluster"),
        );
    };
    let placed = runs_here(&assignment(&kick, &node), &app, &service);
    if !placed {
        return error(
            StatusCode::FORBIDDEN,
            SecretsError::NotPlaced(format!("{app}.{service}")).to_string(),
        );
    }
    if kick.lease.as_ref().is_some_and(|l| !l.valid()) {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "this kick server no longer leads; ask the leader",
        );
    }
    // Within the node's own 15 s, so it hears why.
    let read =
        tokio::time::timeout(SECRETS_READ, secret_values(&kick, section.secrets.values())).await;
    let values = match read {
        Ok(Ok(values)) => values,
        Ok(Err(err)) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot read the secrets from SSM: {err}"),
            );
        }
        Err(_) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "SSM did not answer within {}s; try again",
                    SECRETS_READ.as_secs()
                ),
            );
        }
    };
    // The read took time: this server must still lead, and the service
    // still be placed on the node, for the values to leave.
    let still_placed = runs_here(&assignment(&kick, &node), &app, &service);
    if kick.lease.as_ref().is_some_and(|l| !l.valid()) {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "this kick server stopped leading while the secrets were read; ask the leader",
        );
    }
    if !still_placed {
        return error(
            StatusCode::FORBIDDEN,
            SecretsError::NotPlaced(format!("{app}.{service}")).to_string(),
        );
    }
    match env_file(&section.secrets, &values) {
        Ok(text) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(err) => error(StatusCode::UNPROCESSABLE_ENTITY, err.to_string()),
    }
}

/// Whether a node's share holds a replica or a run of `app.service`.
fn runs_here(share: &crate::spec::assignment::Assignment, app: &str, service: &str) -> bool {
    share
        .replicas
        .iter()
        .map(|r| (&r.app, &r.service))
        .chain(share.runs.iter().map(|r| (&r.app, &r.service)))
        .any(|(a, s)| a == app && s == service)
}

/// How long the secrets route waits for SSM (the node waits 15 s).
const SECRETS_READ: std::time::Duration = std::time::Duration::from_secs(10);

/// The values of `parameters` that SSM has: those read in the last
/// [`SECRETS_KEPT`] from memory, the others from SSM.
async fn secret_values<'a>(
    kick: &Kick,
    parameters: impl Iterator<Item = &'a String>,
) -> Result<std::collections::BTreeMap<String, String>, crate::aws::AwsError> {
    let mut values = std::collections::BTreeMap::new();
    let mut missing = Vec::new();
    let generation = {
        let kept = kick.secrets.lock().expect("secrets");
        for name in parameters {
            match kept.values.get(name) {
                Some((value, at)) if at.elapsed() < SECRETS_KEPT => {
                    values.insert(name.clone(), value.clone());
                }
                _ => missing.push(name.clone()),
            }
        }
        kept.generation
    };
    if missing.is_empty() {
        return Ok(values);
    }
    let read = kick.aws.secure_parameters(&missing).await?;
    let mut kept = kick.secrets.lock().expect("secrets");
    kept.values.retain(|_, (_, at)| at.elapsed() < SECRETS_KEPT);
    // Values read from before a restart forgot them (a new value was
    // set meanwhile) serve this request only.
    let keep = kept.generation == generation;
    for (name, value) in read {
        if keep {
            kept.values
                .insert(name.clone(), (value.clone(), std::time::Instant::now()));
        }
        values.insert(name, value);
    }
    Ok(values)
}

/// Checks the caller may act for `node` (the node itself, or the admin)
/// and that `node` is one of the cluster's.
pub(super) async fn node_scope(
    kick: &Kick,
    headers: &HeaderMap,
    node: &str,
) -> Result<crate::control::auth::Scope, Box<Response>> {
    let scope = authenticate(kick, headers).await?;
    if !scope.manages_node(node) {
        return Err(Box::new(error(
            StatusCode::FORBIDDEN,
            match scope.node() {
                Some(caller) => format!("node {caller} may act only for itself, not for {node}"),
                None => "this needs the node's own identity".to_owned(),
            },
        )));
    }
    match crate::control::state::known(kick, node).await {
        Ok(true) => Ok(scope),
        Ok(false) => Err(Box::new(error(
            StatusCode::NOT_FOUND,
            format!(
                "no node {node} in cluster {}: use the EC2 instance id of one of its running nodes",
                kick.config.cluster.name
            ),
        ))),
        Err(err) => Err(Box::new(error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("cannot list the cluster's nodes: {err}"),
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The blog example's kick.toml.
    fn blog() -> crate::spec::kick::KickConfig {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/blog/huxley.toml"
        ))
        .expect("the blog example");
        crate::compile::kick::kick_config(&crate::config::check(&text).config.expect("valid"))
    }

    #[test]
    fn reported_usage_is_clamped_to_the_services_cpu_and_memory() {
        let replica = |cpu: Option<u64>, memory: Option<u64>| ReplicaReport {
            app: "blog".into(),
            service: "web".into(),
            replica: 1,
            state: ReplicaState::Running,
            detail: None,
            address: None,
            version: None,
            cpu_millis: cpu,
            memory_mib: memory,
            output: Vec::new(),
        };
        let mut report = NodeReport {
            generation: 1,
            replicas: vec![
                replica(Some(1_000_000_000_000_000), Some(u64::MAX)),
                replica(Some(250), Some(100)),
                replica(None, None),
            ],
        };
        let config = blog();
        // blog.web asks for 500m and 512 MiB; no app has a service `ghost`.
        report.replicas.push(ReplicaReport {
            service: "ghost".into(),
            ..replica(Some(9), Some(9))
        });
        clamp_usage(&mut report, &config);
        let figures: Vec<(Option<u64>, Option<u64>)> = report
            .replicas
            .iter()
            .map(|r| (r.cpu_millis, r.memory_mib))
            .collect();
        assert_eq!(
            figures,
            vec![
                (Some(500), Some(512)),
                (Some(250), Some(100)),
                (None, None),
                (Some(0), Some(0))
            ]
        );
    }

    /// A node's report carries what a replica printed, bounded whatever
    /// the node sends: 20 lines, 200 characters each, no control
    /// characters (an escape sequence would reach the pusher's terminal).
    #[test]
    fn reported_output_is_bounded_and_printable() {
        let mut report = NodeReport {
            generation: 1,
            replicas: vec![ReplicaReport {
                app: "blog".into(),
                service: "web".into(),
                replica: 1,
                state: ReplicaState::Failed,
                detail: None,
                address: None,
                version: None,
                cpu_millis: None,
                memory_mib: None,
                output: (0..100)
                    .map(|i| format!("line {i} \u{1b}[31mred\r{}", "x".repeat(500)))
                    .collect(),
            }],
        };
        report.replicas[0].detail = Some("exited\nhuxley: deployed shop v9".into());
        let config = blog();
        clamp_usage(&mut report, &config);
        let output = &report.replicas[0].output;
        assert_eq!(output.len(), 20);
        assert!(
            output[0].starts_with("line 80 ?[31mred?xxx"),
            "{}",
            output[0]
        );
        assert!(output.iter().all(|l| l.chars().count() == 200));
        assert!(!output.iter().any(|l| l.chars().any(char::is_control)));
        assert_eq!(
            report.replicas[0].detail.as_deref(),
            Some("exited?huxley: deployed shop v9")
        );
        // Nor what reorders or hides text on a terminal: a right-to-left
        // override, a zero-width space.
        report.replicas[0].detail = Some("ok \u{202e}deyolped\u{200b}".into());
        clamp_usage(&mut report, &config);
        assert_eq!(report.replicas[0].detail.as_deref(), Some("ok ?deyolped?"));
    }
}
