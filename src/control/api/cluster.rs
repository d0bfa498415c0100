//! The description (`/v1/cluster`, `/v1/apps/{app}`, `/v1/apps/{app}/services/{service}`), for the admin and a service's own token.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::require_admin;
use crate::control::api::http::{authenticate, error};
use crate::control::state::Kick;
use crate::control::state::describe::describe;
use crate::control::state::describe::service_description;

pub async fn describe_cluster(State(kick): State<Arc<Kick>>, headers: HeaderMap) -> Response {
    if let Err(response) = require_admin(&kick, &headers).await {
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

pub async fn describe_app(
    State(kick): State<Arc<Kick>>,
    headers: HeaderMap,
    Path(app): Path<String>,
) -> Response {
    if let Err(response) = require_admin(&kick, &headers).await {
        return *response;
    }
    match describe(&kick).apps.remove(&app) {
        Some(description) => Json(description).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no app {app}")),
    }
}

pub async fn describe_service(
    State(kick): State<Arc<Kick>>,
    headers: HeaderMap,
    Path((app, service)): Path<(String, String)>,
) -> Response {
    let scope = match authenticate(&kick, &headers).await {
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
