//! Record writes (`/v1/records`): a service's own DNS names, committed in Route53 before the answer.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::aws::RecordChange;
use crate::control::api::http::{Refusal, authenticate, body, error, refuse};
use crate::control::auth::Scope;
use crate::control::state::Kick;
use crate::control::state::own;
use crate::spec::registry::RecordRequest;

const RECORD_TYPES: [&str; 5] = ["A", "AAAA", "CNAME", "SRV", "TXT"];

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
async fn record_request(
    kick: &Kick,
    headers: &HeaderMap,
    payload: Result<Json<RecordRequest>, JsonRejection>,
) -> Result<(RecordRequest, String, String), Refusal> {
    let scope = authenticate(kick, headers).await?;
    let request = body(payload)?;
    let (zone, name) = record_target(kick, &scope, &request)?;
    Ok((request, zone, name))
}

pub async fn put_record(
    State(kick): State<Arc<Kick>>,
    headers: HeaderMap,
    payload: Result<Json<RecordRequest>, JsonRejection>,
) -> Response {
    let (request, zone, name) = match record_request(&kick, &headers, payload).await {
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
        alias: None,
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

pub async fn delete_record(
    State(kick): State<Arc<Kick>>,
    headers: HeaderMap,
    payload: Result<Json<RecordRequest>, JsonRejection>,
) -> Response {
    let (request, zone, name) = match record_request(&kick, &headers, payload).await {
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
