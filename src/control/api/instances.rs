//! Instances: replicas register, heartbeat and deregister (`/v1/instances`).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::control::api::http::{Refusal, authenticate, body, error, refuse};
use crate::control::registry::RegistryError;
use crate::control::state::Kick;
use crate::spec::kick::KickConfig;
use crate::spec::registry::Registration;

fn now() -> SystemTime {
    SystemTime::now()
}

pub async fn register(
    State(kick): State<Arc<Kick>>,
    headers: HeaderMap,
    payload: Result<Json<Registration>, JsonRejection>,
) -> Response {
    let scope = match authenticate(&kick, &headers).await {
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
    match crate::control::state::known(&kick, &registration.node).await {
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
    // Known first (the node list is read again when it misses), then
    // the node's own rights.
    if let Some(node) = scope.node()
        && let Err(why) = on_itself(&kick, node, &registration)
    {
        return error(StatusCode::FORBIDDEN, why);
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
    match crate::control::controllers::health::sync_replicas(&kick, &app, &service).await {
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

/// Checks that the caller may act on an instance (a node only on its
/// own); its (app, service).
async fn instance_scope(
    kick: &Kick,
    headers: &HeaderMap,
    id: &str,
) -> Result<(String, String), Refusal> {
    let scope = authenticate(kick, headers).await?;
    let located = {
        let registry = kick.registry.lock().expect("registry");
        registry.locate(id).map(|(a, s)| {
            let node = registry
                .service(a, s)
                .and_then(|state| state.instances.get(id))
                .map(|i| i.node.clone());
            (a.to_owned(), s.to_owned(), node)
        })
    };
    let Some((app, service, node)) = located else {
        return Err(refuse(StatusCode::NOT_FOUND, format!("no instance {id}")));
    };
    if !scope.runs(&app, &service) {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            format!("this token may not act on instances of {app}.{service}"),
        ));
    }
    if let Some(caller) = scope.node()
        && node.as_deref() != Some(caller)
    {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            format!("node {caller} may act only on its own instances; {id} is not one"),
        ));
    }
    Ok((app, service))
}

/// Whether node `caller` registers a replica on itself: under its own id,
/// a replica placed on it (or leaving it), named by its number, at an address of its own
/// container subnet (or its own address, before it has a subnet).
fn on_itself(kick: &Kick, caller: &str, registration: &Registration) -> Result<(), String> {
    if registration.node != caller {
        return Err(format!(
            "node {caller} may register replicas only on itself, not on {}",
            registration.node
        ));
    }
    let placed = crate::control::controllers::assign::assignment(kick, caller)
        .replicas
        .iter()
        .any(|r| {
            r.app == registration.app
                && r.service == registration.service
                && registration.replica == Some(r.replica)
        });
    if !placed {
        return Err(format!(
            "no replica of {}.{}{} is placed on node {caller}: a node registers only the replicas it runs",
            registration.app,
            registration.service,
            registration
                .replica
                .map(|n| format!(" #{n}"))
                .unwrap_or_default()
        ));
    }
    let subnet = kick
        .assignments
        .lock()
        .expect("assignments")
        .subnets
        .get(caller)
        .copied();
    let own = kick
        .nodes
        .lock()
        .expect("nodes")
        .known
        .get(caller)
        .and_then(|n| n.address);
    let address = registration.address;
    let inside = match (subnet, address) {
        (Some(subnet), IpAddr::V4(v4)) => subnet.contains(&v4),
        _ => false,
    };
    if inside || (subnet.is_none() && own == Some(address)) {
        return Ok(());
    }
    Err(match subnet {
        Some(subnet) => format!(
            "address {address} is not in node {caller}'s container subnet {subnet}: a node registers only its own replicas"
        ),
        None => format!(
            "node {caller} has no container subnet yet, and {address} is not its own address"
        ),
    })
}

pub async fn heartbeat(
    State(kick): State<Arc<Kick>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(response) = instance_scope(&kick, &headers, &id).await {
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

pub async fn deregister(
    State(kick): State<Arc<Kick>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let (app, service) = match instance_scope(&kick, &headers, &id).await {
        Ok(pair) => pair,
        Err(response) => return *response,
    };
    let removed = kick.registry.lock().expect("registry").deregister(&id);
    match removed {
        Ok(_) => {
            let _ = crate::control::controllers::health::sync_dns(&kick, &app, &service).await;
            match crate::control::controllers::health::sync_replicas(&kick, &app, &service).await {
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
