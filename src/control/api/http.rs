//! The API's request plumbing shared by its handlers: errors as JSON,
//! bearer tokens, bodies.

use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::aws::identity::ProofError;
use crate::control::auth::Scope;
use crate::control::state::Kick;

pub fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// A refused request, boxed: a response is large, and most calls succeed.
pub type Refusal = Box<Response>;

pub fn refuse(status: StatusCode, message: impl Into<String>) -> Refusal {
    Box::new(error(status, message))
}

/// The caller's scope, or the 401 to answer: a bearer token's, or the
/// node a proof of identity names (503 when STS cannot be asked).
pub async fn authenticate(kick: &Kick, headers: &HeaderMap) -> Result<Scope, Refusal> {
    kick.requests.fetch_add(1, Ordering::Relaxed);
    if let Some(proof) = crate::control::identity::proof(headers) {
        return match kick
            .identities
            .node(&kick.aws, &kick.config.cluster.name, &proof)
            .await
        {
            Ok(node) => Ok(Scope::Node(node)),
            Err(err @ ProofError::Refused(_)) => {
                eprintln!("kick: {err}");
                Err(refuse(StatusCode::UNAUTHORIZED, err.to_string()))
            }
            Err(err @ ProofError::Unavailable(_)) => {
                eprintln!("kick: {err}");
                Err(refuse(StatusCode::SERVICE_UNAVAILABLE, err.to_string()))
            }
        };
    }
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    token
        .and_then(|t| kick.tokens.scope(t.trim()))
        .ok_or_else(|| refuse(StatusCode::UNAUTHORIZED, "missing or invalid bearer token"))
}

pub fn body<T>(payload: Result<Json<T>, JsonRejection>) -> Result<T, Refusal> {
    payload
        .map(|Json(value)| value)
        .map_err(|rejection| match rejection {
            JsonRejection::BytesRejection(_) => {
                refuse(StatusCode::PAYLOAD_TOO_LARGE, "the body is over 64 KiB")
            }
            other => refuse(
                StatusCode::BAD_REQUEST,
                format!("malformed body: {}", other.body_text()),
            ),
        })
}
