//! One-off runs: `POST /v1/apps/{app}/services/{service}/runs` (the
//! admin's `huxley run`), `GET` and `DELETE /v1/runs/{id}` to follow and
//! stop one, and `PUT /v1/nodes/{node}/runs/{id}`, where the node running
//! it sends its output and its end.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::control::api::http::{Refusal, body, error, refuse};
use crate::control::api::require_admin;
use crate::control::controllers::runs::{Purpose, changed, follow, image_for, place};
use crate::control::state::Kick;
use crate::control::state::runs::Refused;
use crate::spec::run::{DEFAULT_TIMEOUT_SECONDS, RunRequest, RunUpdate};

/// A run's id from its path: a number, else no run of kick's (404, as
/// JSON like every answer of the API).
fn run_id(text: &str) -> Result<u64, Refusal> {
    text.parse().map_err(|_| {
        refuse(
            StatusCode::NOT_FOUND,
            format!(
                "no run {}: runs are numbered",
                crate::spec::assignment::printable(text, 40)
            ),
        )
    })
}

/// 503 when this server no longer leads: a run is the leader's.
fn not_leading(kick: &Kick) -> Option<Response> {
    kick.lease.as_ref().is_some_and(|l| !l.valid()).then(|| {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "this kick server no longer leads; ask the leader",
        )
    })
}

/// `POST /v1/apps/{app}/services/{service}/runs`: 201 with the run as
/// placed.
pub async fn post_run(
    State(kick): State<Arc<Kick>>,
    headers: HeaderMap,
    Path((app, service)): Path<(String, String)>,
    payload: Result<Json<RunRequest>, JsonRejection>,
) -> Response {
    if let Err(response) = require_admin(&kick, &headers).await {
        return *response;
    }
    let request = match body(payload) {
        Ok(request) => request,
        Err(response) => return *response,
    };
    if let Some(problem) = request.problem() {
        return error(StatusCode::BAD_REQUEST, problem);
    }
    if let Some(response) = not_leading(&kick) {
        return response;
    }
    // The release to run from, from this leadership's view of the history.
    if let Err(why) = crate::control::controllers::deploy::read(&kick, &app).await {
        return error(StatusCode::SERVICE_UNAVAILABLE, why);
    }
    // The read took time: place only while this server still leads.
    if let Some(response) = not_leading(&kick) {
        return response;
    }
    let (image, release) = match image_for(&kick, &app, &service, request.release) {
        Ok(found) => found,
        Err((status, why)) => return error(status, why),
    };
    let purpose = Purpose {
        command: request.command,
        image,
        release,
        timeout_seconds: request.timeout_seconds.unwrap_or(DEFAULT_TIMEOUT_SECONDS),
        by: "the admin",
        redact: false,
    };
    match place(&kick, &app, &service, purpose) {
        Ok((id, _)) => {
            let status = kick
                .runs
                .lock()
                .expect("runs")
                .runs
                .get(&id)
                .map(|r| r.status(0));
            (StatusCode::CREATED, Json(status)).into_response()
        }
        Err((status, why)) => error(status, why),
    }
}

#[derive(Debug, Deserialize)]
pub struct After {
    /// The first line wanted.
    after: Option<u64>,
    /// Seconds to wait for a line or the end, at most 30.
    wait: Option<u64>,
}

/// `GET /v1/runs/{id}?after=N&wait=S`: the run, with its lines from N; at
/// once when there are any or it ended, else when there are or after S
/// seconds.
pub async fn get_run(
    State(kick): State<Arc<Kick>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    query: Result<Query<After>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if let Err(response) = require_admin(&kick, &headers).await {
        return *response;
    }
    let id = match run_id(&id) {
        Ok(id) => id,
        Err(response) => return *response,
    };
    let Ok(Query(after)) = query else {
        return error(StatusCode::BAD_REQUEST, "malformed query: after=N&wait=S");
    };
    if let Some(response) = not_leading(&kick) {
        return response;
    }
    let wait = Duration::from_secs(after.wait.unwrap_or(0).min(30));
    match follow(&kick, id, after.after.unwrap_or(0), wait).await {
        Some(status) => Json(status).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            format!("no run {id}: it ended over 10 minutes ago, or another kick server placed it"),
        ),
    }
}

/// `DELETE /v1/runs/{id}`: stops a run (its node stops the container).
pub async fn delete_run(
    State(kick): State<Arc<Kick>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(response) = require_admin(&kick, &headers).await {
        return *response;
    }
    let id = match run_id(&id) {
        Ok(id) => id,
        Err(response) => return *response,
    };
    if let Some(response) = not_leading(&kick) {
        return response;
    }
    let stopped = kick
        .runs
        .lock()
        .expect("runs")
        .cancel(id, "stopped at the caller's request");
    if stopped {
        eprintln!("kick: run {id} stopped at the admin's request");
        changed(&kick, true);
    }
    let status = kick
        .runs
        .lock()
        .expect("runs")
        .runs
        .get(&id)
        .map(|r| r.status(r.next()));
    match status {
        Some(status) => Json(status).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no run {id}")),
    }
}

/// `PUT /v1/nodes/{node}/runs/{id}`: the node's word on a run it runs.
/// 404 for a run this leader does not know (the node stops it), 403 for
/// another node's.
pub async fn put_run(
    State(kick): State<Arc<Kick>>,
    headers: HeaderMap,
    Path((node, id)): Path<(String, String)>,
    payload: Result<Json<RunUpdate>, JsonRejection>,
) -> Response {
    let scope = match crate::control::api::nodes::node_scope(&kick, &headers, &node).await {
        Ok(scope) => scope,
        Err(response) => return *response,
    };
    if scope.node() != Some(node.as_str()) {
        return error(
            StatusCode::FORBIDDEN,
            "a run's output comes only from the node that runs it, as itself",
        );
    }
    let id = match run_id(&id) {
        Ok(id) => id,
        Err(response) => return *response,
    };
    let update = match body(payload) {
        Ok(update) => update,
        Err(response) => return *response,
    };
    if update.lines.len() > 1000 {
        return error(StatusCode::BAD_REQUEST, "at most 1,000 lines an update");
    }
    if let Some(response) = not_leading(&kick) {
        return response;
    }
    let result = kick.runs.lock().expect("runs").update(&node, id, update);
    match result {
        Ok(share) => {
            // Only a run that started or ended changes the nodes' share.
            changed(&kick, share);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(Refused::Unknown) => error(StatusCode::NOT_FOUND, format!("no run {id}")),
        Err(Refused::NotYours(owner)) => error(
            StatusCode::FORBIDDEN,
            format!("run {id} is {owner}'s, not {node}'s"),
        ),
        Err(Refused::Claimed) => error(
            StatusCode::CONFLICT,
            format!("run {id} was started already, or ended: it is not started again"),
        ),
        Err(Refused::Ended) => error(
            StatusCode::GONE,
            format!("run {id} ended (cancelled or lost): stop it"),
        ),
        Err(Refused::OutOfRange) => error(
            StatusCode::BAD_REQUEST,
            format!("`from` is far past run {id}'s output"),
        ),
    }
}
