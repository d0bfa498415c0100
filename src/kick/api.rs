//! The kick server's HTTP API (axum), versioned under `/v1`.
//!
//! Every route but `/healthz` needs a bearer token: 401 without a valid
//! one, 403 when its scope does not cover the target, 404 for unknown
//! names, 400 for malformed bodies (bodies are limited to 64 KiB), 409 for
//! a DNS name that exists but is not Huxley's. Record writes answer once
//! Route53 has committed them.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::auth::Scope;
use super::config::KickConfig;
use super::registry::{Registration, RegistryError, Status};
use crate::aws::RecordChange;

pub use super::http::{Refusal, authenticate, body, error, refuse};
pub use super::integral;
pub use super::state::{Generations, Kick, Network, REAP_EVERY, Zone, Zones, own};

/// The body of a record write.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordRequest {
    /// A fully qualified name the calling service may use.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// A, AAAA, CNAME, SRV or TXT.
    #[serde(rename = "type")]
    #[schemars(extend("enum" = ["A", "AAAA", "CNAME", "SRV", "TXT"]))]
    pub kind: String,
    /// Time to live in seconds; default 60.
    #[serde(default, deserialize_with = "integral::option")]
    #[schemars(range(min = 0, max = 2_147_483_647))]
    pub ttl: Option<i64>,
    /// The record's values; ignored on delete.
    #[serde(default)]
    pub values: Vec<String>,
}

/// The self-description of the cluster (`GET /v1/cluster`).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct ClusterDescription {
    pub cluster: String,
    /// Seconds since the Unix epoch when this description was made.
    pub generated_at: u64,
    pub apps: BTreeMap<String, AppDescription>,
    pub nodes: BTreeMap<String, NodeDescription>,
    /// The scaler's latest decisions, oldest first, each with its reason.
    #[serde(default)]
    pub decisions: Vec<super::scale::Decision>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct AppDescription {
    pub services: BTreeMap<String, ServiceDescription>,
    /// The deploy rolling out now, if one is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploying: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct ServiceDescription {
    pub private_name: Option<String>,
    pub public_names: Vec<String>,
    pub desired: u32,
    pub running: usize,
    pub healthy: usize,
    pub instances: Vec<InstanceDescription>,
    /// Where the leader placed each replica, and what its node reports.
    #[serde(default)]
    pub placed: Vec<PlacedReplica>,
    /// Replicas that fit on no node, and why.
    #[serde(default)]
    pub unplaced: Vec<UnplacedReplica>,
    /// The release it runs, for a service built on push.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<super::deploy::ServiceRelease>,
    /// Built on push and never deployed: nothing is placed until a `git
    /// push` deploys it.
    #[serde(default)]
    pub awaiting_first_deploy: bool,
}

/// A replica's place and state, as its node reports it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct PlacedReplica {
    pub replica: u32,
    pub node: String,
    /// `starting`, `running`, `failed` or `stopped`; absent until the node
    /// reports.
    pub state: Option<super::assign::ReplicaState>,
    /// Why it failed: its last exit, or the image pull's error.
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct UnplacedReplica {
    pub replica: u32,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct InstanceDescription {
    pub id: String,
    pub node: String,
    pub address: IpAddr,
    pub port: u16,
    pub version: Option<String>,
    pub health: Status,
    pub last_check_output: String,
}

/// A node's capacity: what its replicas request against what it offers.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct NodeDescription {
    /// The EC2 instance type; empty for a node EC2 no longer lists.
    pub instance_type: String,
    /// The node's private address.
    pub address: Option<IpAddr>,
    pub instances: usize,
    pub cpu_requested_millis: u64,
    pub cpu_allocatable_millis: u32,
    pub memory_requested_mib: u64,
    pub memory_allocatable_mib: u64,
    /// Why the node is being drained, while it is.
    #[serde(default)]
    pub draining: Option<String>,
}

/// The router, with the body limit.
pub fn router(kick: Arc<Kick>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/cluster", get(describe_cluster))
        .route("/v1/apps/{app}", get(describe_app))
        .route("/v1/apps/{app}/services/{service}", get(describe_service))
        .route(
            "/v1/apps/{app}/deployments",
            post(super::deploy::post_deployment).get(super::deploy::list_deployments),
        )
        .route(
            "/v1/apps/{app}/deployments/{id}",
            get(super::deploy::get_deployment),
        )
        .route("/v1/instances", post(register))
        .route("/v1/instances/{id}", axum::routing::delete(deregister))
        .route("/v1/instances/{id}/heartbeat", put(heartbeat))
        .route("/v1/records", put(put_record).delete(delete_record))
        .route(
            "/v1/nodes/{id}/assignment",
            get(super::assign::get_assignment),
        )
        .route("/v1/nodes/{id}/status", put(super::assign::put_status))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such route") })
        .layer(DefaultBodyLimit::max(64 * 1024))
        .with_state(kick)
}

/// `/healthz`: 200 while this server can serve, 503 with the reason when it
/// cannot (the leader then steps down, see [`super::serve`]).
async fn healthz(State(kick): State<Arc<Kick>>) -> Response {
    match kick.health_problem().await {
        None => "ok\n".into_response(),
        Some(problem) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("unhealthy: {problem}\n"),
        )
            .into_response(),
    }
}

fn now() -> SystemTime {
    SystemTime::now()
}

async fn register(
    State(kick): State<Arc<Kick>>,
    headers: HeaderMap,
    payload: Result<Json<Registration>, JsonRejection>,
) -> Response {
    let scope = match authenticate(&kick, &headers) {
        Ok(scope) => scope,
        Err(response) => return *response,
    };
    let registration = match body(payload) {
        Ok(r) => r,
        Err(response) => return *response,
    };
    let (app, service) = (registration.app.clone(), registration.service.clone());
    if !scope.runs(&app, &service) {
        return error(
            StatusCode::FORBIDDEN,
            format!("this token may not register instances of {app}.{service}"),
        );
    }
    if kick
        .registry
        .lock()
        .expect("registry")
        .service(&app, &service)
        .is_none()
    {
        return error(
            StatusCode::NOT_FOUND,
            format!("no service {app}.{service} in this cluster"),
        );
    }
    if let Err(err) = registration.check() {
        return error(StatusCode::BAD_REQUEST, err.to_string());
    }
    // Kick checks what it registers and reports the result to the caller:
    // anything outside the cluster's own networks would make it a port
    // scanner for whoever holds a token.
    if let Err(why) = inside_the_cluster(&kick.config, registration.address) {
        return error(StatusCode::BAD_REQUEST, why);
    }
    match super::state::known(&kick, &registration.node).await {
        Ok(true) => {}
        Ok(false) => {
            return error(
                StatusCode::NOT_FOUND,
                format!(
                    "no node {} in cluster {}: register with the EC2 instance id of one of its running nodes",
                    registration.node, kick.config.cluster.name
                ),
            );
        }
        Err(err) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot list the cluster's nodes: {err}"),
            );
        }
    }
    let result = kick
        .registry
        .lock()
        .expect("registry")
        .register(&registration, now());
    let id = match result {
        Ok(id) => id,
        Err(err @ RegistryError::Invalid(_)) => {
            return error(StatusCode::BAD_REQUEST, err.to_string());
        }
        Err(err @ RegistryError::Full { .. }) => {
            return error(StatusCode::CONFLICT, err.to_string());
        }
        Err(err) => return error(StatusCode::NOT_FOUND, err.to_string()),
    };
    // Acknowledged only once Route53 holds it: a restarted kick finds it.
    match super::health::sync_replicas(&kick, &app, &service).await {
        Ok(()) => (
            StatusCode::CREATED,
            Json(json!({ "id": id, "committed": true })),
        )
            .into_response(),
        Err(reason) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the registration is not recorded in Route53 yet ({reason}); register again"),
        ),
    }
}

/// Checks that the caller may act on an instance; its (app, service).
fn instance_scope(kick: &Kick, headers: &HeaderMap, id: &str) -> Result<(String, String), Refusal> {
    let scope = authenticate(kick, headers)?;
    let located = kick
        .registry
        .lock()
        .expect("registry")
        .locate(id)
        .map(|(a, s)| (a.to_owned(), s.to_owned()));
    let Some((app, service)) = located else {
        return Err(refuse(StatusCode::NOT_FOUND, format!("no instance {id}")));
    };
    if !scope.runs(&app, &service) {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            format!("this token may not act on instances of {app}.{service}"),
        ));
    }
    Ok((app, service))
}

async fn heartbeat(
    State(kick): State<Arc<Kick>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(response) = instance_scope(&kick, &headers, &id) {
        return *response;
    }
    match kick
        .registry
        .lock()
        .expect("registry")
        .heartbeat(&id, now())
    {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(err) => error(StatusCode::NOT_FOUND, err.to_string()),
    }
}

async fn deregister(
    State(kick): State<Arc<Kick>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let (app, service) = match instance_scope(&kick, &headers, &id) {
        Ok(pair) => pair,
        Err(response) => return *response,
    };
    let removed = kick.registry.lock().expect("registry").deregister(&id);
    match removed {
        Ok(_) => {
            super::health::sync_dns(&kick, &app, &service).await;
            match super::health::sync_replicas(&kick, &app, &service).await {
                Ok(()) => StatusCode::NO_CONTENT.into_response(),
                Err(reason) => error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "the instance is deregistered, but Route53 still lists it ({reason}); a later change removes it"
                    ),
                ),
            }
        }
        Err(err) => error(StatusCode::NOT_FOUND, err.to_string()),
    }
}

const RECORD_TYPES: [&str; 5] = ["A", "AAAA", "CNAME", "SRV", "TXT"];

/// Whether `address` lies in the cluster's VPC or its containers' range.
pub fn inside_the_cluster(config: &KickConfig, address: IpAddr) -> Result<(), String> {
    let ranges: Vec<ipnet::IpNet> = [&config.network.vpc_cidr, &config.network.container_range]
        .into_iter()
        .filter_map(|r| r.parse().ok())
        .collect();
    if ranges.iter().any(|r| r.contains(&address)) {
        return Ok(());
    }
    let shown: Vec<String> = ranges.iter().map(ToString::to_string).collect();
    Err(format!(
        "address {address} is outside the cluster's networks ({}): kick registers and checks only its own cluster's addresses",
        shown.join(", ")
    ))
}

/// Checks a record's values before they reach Route53, where one bad value
/// fails a whole batch of other services' changes.
pub fn check_values(kind: &str, values: &[String]) -> Result<(), String> {
    if values.len() > 100 {
        return Err(format!("{} values; at most 100", values.len()));
    }
    let hostname = |v: &str| {
        let name = v.trim_end_matches('.');
        !name.is_empty()
            && name.len() <= 253
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            })
    };
    for value in values {
        let ok = match kind {
            "A" => value.parse::<std::net::Ipv4Addr>().is_ok(),
            "AAAA" => value.parse::<std::net::Ipv6Addr>().is_ok(),
            "CNAME" => values.len() == 1 && hostname(value),
            "SRV" => {
                let parts: Vec<&str> = value.split_whitespace().collect();
                parts.len() == 4
                    && parts[..3].iter().all(|p| p.parse::<u16>().is_ok())
                    && hostname(parts[3])
            }
            "TXT" => {
                value.len() >= 2
                    && value.len() <= 4000
                    && value.starts_with('"')
                    && value.ends_with('"')
                    && value.chars().all(|c| c.is_ascii() && !c.is_ascii_control())
            }
            _ => false,
        };
        if !ok {
            let expected = match kind {
                "A" => "an IPv4 address",
                "AAAA" => "an IPv6 address",
                "CNAME" => "one host name",
                "SRV" => "`priority weight port host`",
                _ => "a quoted string of printable ASCII, at most 4000 characters",
            };
            return Err(format!(
                "`{value}` is not a valid {kind} value: expected {expected}"
            ));
        }
    }
    Ok(())
}

/// Checks a record request: the caller's scope, the zone, the names the
/// caller may use, and ownership. Returns the zone id and the normalized
/// name.
fn record_target(
    kick: &Kick,
    scope: &Scope,
    request: &RecordRequest,
) -> Result<(String, String), Refusal> {
    if !RECORD_TYPES.contains(&request.kind.as_str()) {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            format!("type must be one of {}", RECORD_TYPES.join(", ")),
        ));
    }
    let name = request.name.trim_end_matches('.').to_ascii_lowercase();
    let Some(zone) = kick.zones.of(&name) else {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            format!("{name} is outside the cluster's zones"),
        ));
    };
    let allowed = kick.config.apps.iter().any(|(app, section)| {
        section.services.iter().any(|(service, s)| {
            scope.covers(app, service)
                && (s.private_name.as_deref() == Some(name.as_str())
                    || s.public_names.contains(&name))
        })
    });
    if !allowed {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            format!("this token may not change {name}"),
        ));
    }
    if kick.foreign.lock().expect("foreign").contains(&name) {
        return Err(refuse(
            StatusCode::CONFLICT,
            format!("{name} exists and is not Huxley's: kick never overwrites it"),
        ));
    }
    Ok((zone.id.clone(), name))
}

/// The preamble of a record request: the token first, then the body, then
/// the target. Returns the request, its zone id and the normalized name.
fn record_request(
    kick: &Kick,
    headers: &HeaderMap,
    payload: Result<Json<RecordRequest>, JsonRejection>,
) -> Result<(RecordRequest, String, String), Refusal> {
    let scope = authenticate(kick, headers)?;
    let request = body(payload)?;
    let (zone, name) = record_target(kick, &scope, &request)?;
    Ok((request, zone, name))
}

async fn put_record(
    State(kick): State<Arc<Kick>>,
    headers: HeaderMap,
    payload: Result<Json<RecordRequest>, JsonRejection>,
) -> Response {
    let (request, zone, name) = match record_request(&kick, &headers, payload) {
        Ok(parts) => parts,
        Err(response) => return *response,
    };
    if request.values.is_empty() {
        return error(StatusCode::BAD_REQUEST, "values must not be empty");
    }
    if let Err(why) = check_values(&request.kind, &request.values) {
        return error(StatusCode::BAD_REQUEST, why);
    }
    if let Err(reason) = own(&kick, &zone, &name).await {
        return error(StatusCode::BAD_GATEWAY, reason);
    }
    let change = RecordChange {
        upsert: true,
        name: name.clone(),
        kind: request.kind.clone(),
        ttl: request.ttl.unwrap_or(60),
        values: request.values.clone(),
    };
    match kick.writer.submit(&zone, change).await {
        Ok(()) => (
            StatusCode::OK,
            Json(json!({ "name": name, "type": request.kind, "committed": true })),
        )
            .into_response(),
        Err(reason) => error(StatusCode::BAD_REQUEST, reason),
    }
}

async fn delete_record(
    State(kick): State<Arc<Kick>>,
    headers: HeaderMap,
    payload: Result<Json<RecordRequest>, JsonRejection>,
) -> Response {
    let (request, zone, name) = match record_request(&kick, &headers, payload) {
        Ok(parts) => parts,
        Err(response) => return *response,
    };
    let Some(current) = kick.writer.published(&name, &request.kind) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("no {} record at {name}", request.kind),
        );
    };
    let change = RecordChange {
        upsert: false,
        ..current
    };
    match kick.writer.submit(&zone, change).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(reason) => error(StatusCode::BAD_GATEWAY, reason),
    }
}

fn require_admin(kick: &Kick, headers: &HeaderMap) -> Result<(), Refusal> {
    match authenticate(kick, headers)? {
        Scope::Admin => Ok(()),
        _ => Err(refuse(StatusCode::FORBIDDEN, "this needs the admin token")),
    }
}

async fn describe_cluster(State(kick): State<Arc<Kick>>, headers: HeaderMap) -> Response {
    if let Err(response) = require_admin(&kick, &headers) {
        return *response;
    }
    let body = described_body(&kick);
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// The description as JSON, made again only when the registry or the node
/// list changed since the last one.
fn described_body(kick: &Kick) -> axum::body::Bytes {
    let generations = || {
        (
            kick.registry.lock().expect("registry").generation,
            kick.nodes.lock().expect("nodes").generation,
            kick.assignments.lock().expect("assignments").version,
        )
    };
    let current = generations();
    if let Some((made_at, body)) = kick.described.lock().expect("described").as_ref()
        && *made_at == current
    {
        return body.clone();
    }
    // Generations read before describing: a change racing with it makes
    // the next request describe again.
    let body = axum::body::Bytes::from(
        serde_json::to_vec(&describe(kick)).expect("a description serializes"),
    );
    *kick.described.lock().expect("described") = Some((current, body.clone()));
    body
}

async fn describe_app(
    State(kick): State<Arc<Kick>>,
    headers: HeaderMap,
    Path(app): Path<String>,
) -> Response {
    if let Err(response) = require_admin(&kick, &headers) {
        return *response;
    }
    match describe(&kick).apps.remove(&app) {
        Some(description) => Json(description).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no app {app}")),
    }
}

async fn describe_service(
    State(kick): State<Arc<Kick>>,
    headers: HeaderMap,
    Path((app, service)): Path<(String, String)>,
) -> Response {
    let scope = match authenticate(&kick, &headers) {
        Ok(scope) => scope,
        Err(response) => return *response,
    };
    // The scope first: whether a service exists is not for every token
    // to learn.
    if !scope.covers(&app, &service) {
        return error(
            StatusCode::FORBIDDEN,
            format!("this token may not read {app}.{service}"),
        );
    }
    let description = {
        let registry = kick.registry.lock().expect("registry");
        let assignments = kick.assignments.lock().expect("assignments");
        registry
            .service(&app, &service)
            .map(|state| service_description(state, &assignments, &app, &service))
    };
    match description {
        None => error(StatusCode::NOT_FOUND, format!("no service {app}.{service}")),
        Some(description) => Json(description).into_response(),
    }
}

/// Where a service's replicas are placed and how they run; what did not fit.
fn placement_of(
    assignments: &super::assign::Assignments,
    app: &str,
    service: &str,
) -> (Vec<PlacedReplica>, Vec<UnplacedReplica>) {
    let ours = |r: &&super::placement::Replica| r.app == app && r.service == service;
    let placed = assignments
        .placement
        .assigned
        .iter()
        .filter(|(r, _)| ours(r))
        .map(|(replica, node)| {
            let report = assignments.reports.get(node).and_then(|(_, report)| {
                report
                    .replicas
                    .iter()
                    .find(|r| r.app == app && r.service == service && r.replica == replica.index)
            });
            PlacedReplica {
                replica: replica.index,
                node: node.clone(),
                state: report.map(|r| r.state),
                detail: report.and_then(|r| r.detail.clone()),
            }
        })
        .collect();
    let unplaced = assignments
        .placement
        .unplaced
        .iter()
        .filter(|(r, _)| ours(r))
        .map(|(replica, reason)| UnplacedReplica {
            replica: replica.index,
            reason: reason.clone(),
        })
        .collect();
    (placed, unplaced)
}

/// One service's description.
fn service_description(
    state: &super::registry::ServiceState,
    assignments: &super::assign::Assignments,
    app: &str,
    name: &str,
) -> ServiceDescription {
    let instances: Vec<InstanceDescription> = state
        .instances
        .values()
        .map(|i| InstanceDescription {
            id: i.id.clone(),
            node: i.node.clone(),
            address: i.address,
            port: i.port,
            version: i.version.clone(),
            health: i.health.status,
            last_check_output: i.health.last_output.clone(),
        })
        .collect();
    let (placed, unplaced) = placement_of(assignments, app, name);
    let key = (app.to_owned(), name.to_owned());
    let wanted = assignments
        .wanted
        .get(&key)
        .copied()
        .unwrap_or(state.config.replicas.min);
    let awaiting = assignments.awaiting_first_deploy(&key, &state.config);
    ServiceDescription {
        placed,
        unplaced,
        private_name: state.config.private_name.clone(),
        public_names: state.config.public_names.clone(),
        desired: assignments.rolling.get(&key).copied().unwrap_or(wanted),
        awaiting_first_deploy: awaiting,
        release: None,
        running: instances.len(),
        healthy: instances
            .iter()
            .filter(|i| i.health == Status::Healthy)
            .count(),
        instances,
    }
}

/// The cluster's description as of now.
pub fn describe(kick: &Kick) -> ClusterDescription {
    let mut releases = super::deploy::shown(kick);
    let registry = kick.registry.lock().expect("registry");
    let assignments = kick.assignments.lock().expect("assignments");
    let nodes_config = &kick.config.nodes;
    let empty = |instance_type: String, address: Option<IpAddr>| NodeDescription {
        instance_type,
        address,
        instances: 0,
        cpu_requested_millis: 0,
        cpu_allocatable_millis: nodes_config.allocatable_cpu_millis,
        memory_requested_mib: 0,
        memory_allocatable_mib: nodes_config.allocatable_memory_mib,
        draining: None,
    };
    let mut nodes: BTreeMap<String, NodeDescription> = kick
        .nodes
        .lock()
        .expect("nodes")
        .known
        .values()
        .map(|n| (n.id.clone(), empty(n.instance_type.clone(), n.address)))
        .collect();
    let apps = registry
        .apps
        .iter()
        .map(|(app, services)| {
            let services = services
                .iter()
                .map(|(name, state)| {
                    for instance in state.instances.values() {
                        let node = nodes
                            .entry(instance.node.clone())
                            .or_insert_with(|| empty(String::new(), None));
                        node.instances += 1;
                        node.cpu_requested_millis += u64::from(state.config.cpu_millis);
                        node.memory_requested_mib += state.config.memory_mib;
                    }
                    let mut description = service_description(state, &assignments, app, name);
                    description.release =
                        releases.get_mut(app).and_then(|r| r.services.remove(name));
                    (name.clone(), description)
                })
                .collect();
            let deploying = releases.get_mut(app).and_then(|r| r.deploying.take());
            (
                app.clone(),
                AppDescription {
                    services,
                    deploying,
                },
            )
        })
        .collect();
    for (node, reason) in &assignments.draining {
        if let Some(description) = nodes.get_mut(node) {
            description.draining = Some(reason.clone());
        }
    }
    let decisions = kick
        .scaling
        .lock()
        .expect("scaling")
        .decisions
        .iter()
        .cloned()
        .collect();
    ClusterDescription {
        cluster: registry.cluster.clone(),
        generated_at: SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        apps,
        nodes,
        decisions,
    }
}

async fn openapi(State(kick): State<Arc<Kick>>, headers: HeaderMap) -> Response {
    if let Err(response) = authenticate(&kick, &headers) {
        return *response;
    }
    Json(super::openapi::document()).into_response()
}

async fn metrics(State(kick): State<Arc<Kick>>, headers: HeaderMap) -> Response {
    if let Err(response) = authenticate(&kick, &headers) {
        return *response;
    }
    let m = &kick.writer.metrics;
    let mut text = String::new();
    let mut counter = |name: &str, help: &str, value: u64| {
        text.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}\n"
        ));
    };
    counter(
        "huxley_kick_requests_total",
        "API requests received.",
        kick.requests.load(Ordering::Relaxed),
    );
    counter(
        "huxley_kick_route53_requests_total",
        "ChangeResourceRecordSets calls.",
        m.requests.load(Ordering::Relaxed),
    );
    counter(
        "huxley_kick_route53_changes_total",
        "Record changes committed.",
        m.changes.load(Ordering::Relaxed),
    );
    counter(
        "huxley_kick_route53_rejected_total",
        "Record changes Route53 rejected.",
        m.rejected.load(Ordering::Relaxed),
    );
    counter(
        "huxley_kick_route53_retries_total",
        "Throttled requests retried.",
        m.retries.load(Ordering::Relaxed),
    );
    text.push_str(&format!(
        "# HELP huxley_kick_leader Whether this server leads.\n# TYPE huxley_kick_leader gauge\nhuxley_kick_leader 1\n{}",
        super::front::route53_sent(&kick.aws)
    ));
    text.push_str(&format!(
        "# HELP huxley_kick_route53_largest_batch Most changes in one request.\n# TYPE huxley_kick_route53_largest_batch gauge\nhuxley_kick_route53_largest_batch {}\n",
        m.largest_batch.load(Ordering::Relaxed)
    ));
    let registry = kick.registry.lock().expect("registry");
    text.push_str("# HELP huxley_kick_instances Registered instances by health.\n# TYPE huxley_kick_instances gauge\n");
    for (app, services) in &registry.apps {
        for (service, state) in services {
            for status in [Status::Healthy, Status::Unhealthy, Status::Unknown] {
                let count = state
                    .instances
                    .values()
                    .filter(|i| i.health.status == status)
                    .count();
                let label = serde_json::to_value(status)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                text.push_str(&format!("huxley_kick_instances{{app=\"{app}\",service=\"{service}\",health=\"{label}\"}} {count}\n"));
            }
        }
    }
    drop(registry);
    // What the nodes measured, per replica (the description shows where
    // replicas run and how they are; usage moves too often for it).
    let assignments = kick.assignments.lock().expect("assignments");
    text.push_str("# HELP huxley_kick_replica_cpu_millis CPU a replica uses, in thousandths of a core, as its node measured.\n# TYPE huxley_kick_replica_cpu_millis gauge\n");
    let mut memory = String::from(
        "# HELP huxley_kick_replica_memory_mib Memory a replica uses, in MiB, as its node measured.\n# TYPE huxley_kick_replica_memory_mib gauge\n",
    );
    for (node, (_, report)) in &assignments.reports {
        for r in &report.replicas {
            let labels = format!(
                "app=\"{}\",service=\"{}\",replica=\"{}\",node=\"{node}\"",
                r.app, r.service, r.replica
            );
            if let Some(cpu) = r.cpu_millis {
                text.push_str(&format!(
                    "huxley_kick_replica_cpu_millis{{{labels}}} {cpu}\n"
                ));
            }
            if let Some(mib) = r.memory_mib {
                memory.push_str(&format!(
                    "huxley_kick_replica_memory_mib{{{labels}}} {mib}\n"
                ));
            }
        }
    }
    text.push_str(&memory);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}
