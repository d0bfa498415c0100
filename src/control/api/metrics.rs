//! `/metrics`, in Prometheus' text format.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};

use crate::control::api::http::authenticate;
use crate::control::state::Kick;
use crate::spec::registry::Status;

pub async fn metrics(State(kick): State<Arc<Kick>>, headers: HeaderMap) -> Response {
    if let Err(response) = authenticate(&kick, &headers).await {
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
        crate::control::front::route53_sent(&kick.aws)
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
