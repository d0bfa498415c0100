//! What a kick server answers on its listeners: the leader's API while it
//! leads; as a standby, `503 Service Unavailable` naming the leader's
//! internal API (`leader` in the body, and `Retry-After`), so node agents
//! and the CLI go there. `/healthz` answers either way and says which.

use std::sync::{Arc, RwLock};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use tower::ServiceExt as _;

use crate::control::lease::Lease;

/// The listeners' state: the leader's router while this server leads.
#[derive(Debug)]
pub struct Front {
    active: RwLock<Option<Router>>,
    lease: Arc<Lease>,
    aws: Arc<crate::aws::Aws>,
    tokens: crate::control::auth::Tokens,
}

impl Front {
    pub fn new(
        lease: Arc<Lease>,
        aws: Arc<crate::aws::Aws>,
        tokens: crate::control::auth::Tokens,
    ) -> Arc<Self> {
        Arc::new(Self {
            active: RwLock::new(None),
            lease,
            aws,
            tokens,
        })
    }

    /// Serves `router` from now on.
    pub fn activate(&self, router: Router) {
        *self
            .active
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(router);
    }

    /// Answers as a standby from now on.
    pub fn deactivate(&self) {
        *self
            .active
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }

    /// The leader's router, while this server leads by its own clock: the
    /// moment the lease may have lapsed it answers as a standby (the API,
    /// `/healthz`, so the hook server stops serving git), whether or not
    /// the task that steps it down has run yet.
    fn active(&self) -> Option<Router> {
        if !self.lease.valid() {
            return None;
        }
        self.active
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// The router both listeners serve.
pub fn router(front: Arc<Front>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .fallback(forward)
        .with_state(front)
}

async fn healthz(State(front): State<Arc<Front>>, request: Request) -> Response {
    match (front.active(), front.lease.fence()) {
        (Some(router), Some(fence)) => {
            // The leader's own state decides: a poisoned or stuck leader
            // says so.
            let answer = match router.oneshot(request).await {
                Ok(answer) => answer,
                Err(never) => match never {},
            };
            if answer.status().is_success() {
                format!("ok: leader (fence {fence})\n").into_response()
            } else {
                answer
            }
        }
        _ => match front.lease.leader_address() {
            Some(leader) => format!("ok: standby; the leader is {leader}\n").into_response(),
            None => "ok: standby; no leader yet\n".into_response(),
        },
    }
}

/// The leader's metrics; a standby's own: that it is one, and the Route53
/// changes this process ever sent (a standby must send none).
async fn metrics(State(front): State<Arc<Front>>, request: Request) -> Response {
    if front.active().is_some() {
        return forward(State(front), request).await;
    }
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if token.and_then(|t| front.tokens.scope(t.trim())).is_none() {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({ "error": "missing or invalid bearer token" })),
        )
            .into_response();
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        format!(
            "# HELP huxley_kick_leader Whether this server leads.\n# TYPE huxley_kick_leader gauge\nhuxley_kick_leader 0\n{}",
            route53_sent(&front.aws)
        ),
    )
        .into_response()
}

/// The process-wide count of Route53 change requests, as metrics text.
pub fn route53_sent(aws: &crate::aws::Aws) -> String {
    format!(
        "# HELP huxley_kick_route53_requests_sent_total ChangeResourceRecordSets calls this process sent, as leader or not.\n# TYPE huxley_kick_route53_requests_sent_total counter\nhuxley_kick_route53_requests_sent_total {}\n",
        aws.route53_changes()
    )
}

async fn forward(State(front): State<Arc<Front>>, request: Request) -> Response {
    match front.active() {
        Some(router) => match router.oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        },
        None => {
            let leader = front.lease.leader_address();
            let message = match &leader {
                Some(address) => {
                    format!("this kick server is a standby; the leader is at {address}")
                }
                None => {
                    "this kick server is a standby and no leader is known yet; try again".to_owned()
                }
            };
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, "2")],
                axum::Json(json!({ "error": message, "leader": leader })),
            )
                .into_response()
        }
    }
}
