//! The kick server's HTTP API (axum), versioned under `/v1`.
//!
//! Every route but `/healthz` needs a bearer token: 401 without a valid
//! one, 403 when its scope does not cover the target, 404 for unknown
//! names, 400 for malformed bodies (bodies are limited to 64 KiB), 409 for
//! a DNS name that exists but is not Huxley's. Record writes answer once
//! Route53 has committed them.

mod cluster;
mod deploys;
pub mod http;
pub mod instances;
mod metrics;
mod nodes;
pub mod records;
mod runs;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};

use crate::control::api::http::refuse;
use crate::control::api::http::{Refusal, authenticate, error};
use crate::control::auth::Scope;
use crate::control::state::Kick;

/// The router, with the body limit.
pub fn router(kick: Arc<Kick>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics::metrics))
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/cluster", get(cluster::describe_cluster))
        .route("/v1/apps/{app}", get(cluster::describe_app))
        .route(
            "/v1/apps/{app}/services/{service}",
            get(cluster::describe_service),
        )
        .route(
            "/v1/apps/{app}/deployments",
            post(deploys::post_deployment).get(deploys::list_deployments),
        )
        .route(
            "/v1/apps/{app}/deployments/{id}",
            get(deploys::get_deployment),
        )
        .route(
            "/v1/apps/{app}/services/{service}/runs",
            post(runs::post_run),
        )
        .route("/v1/runs/{id}", get(runs::get_run).delete(runs::delete_run))
        .route("/v1/nodes/{id}/runs/{run}", put(runs::put_run))
        .route("/v1/instances", post(instances::register))
        .route(
            "/v1/instances/{id}",
            axum::routing::delete(instances::deregister),
        )
        .route("/v1/instances/{id}/heartbeat", put(instances::heartbeat))
        .route(
            "/v1/records",
            put(records::put_record).delete(records::delete_record),
        )
        .route("/v1/nodes/{id}/assignment", get(nodes::get_assignment))
        .route("/v1/nodes/{id}/status", put(nodes::put_status))
        .route(
            "/v1/nodes/{id}/secrets/{app}/{service}",
            get(nodes::get_secrets),
        )
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such route") })
        .layer(DefaultBodyLimit::max(64 * 1024))
        .with_state(kick)
}

/// `/healthz`: 200 while this server can serve, 503 with the reason when it
/// cannot (the leader then steps down, see [`crate::control::server`]).
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

async fn require_admin(kick: &Kick, headers: &HeaderMap) -> Result<(), Refusal> {
    match authenticate(kick, headers).await? {
        Scope::Admin => Ok(()),
        _ => Err(refuse(StatusCode::FORBIDDEN, "this needs the admin token")),
    }
}

async fn openapi(State(kick): State<Arc<Kick>>, headers: HeaderMap) -> Response {
    if let Err(response) = authenticate(&kick, &headers).await {
        return *response;
    }
    Json(crate::spec::openapi::document()).into_response()
}
