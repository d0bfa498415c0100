//! Starting the kick server: state rebuilt from Route53, the check loops,
//! and the API on a listener.
//!
//! Nothing that matters lives only in memory: at start kick reads both
//! zones, takes the names whose ownership record names this cluster as its
//! own (and the values it published under them), and marks every other
//! existing name as foreign, never to be touched.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use super::api::{self, Kick, Zones};
use super::auth::Tokens;
use super::config::KickConfig;
use super::dns::{Settings, Writer};
use super::registry::Registry;
use crate::aws::{Aws, AwsError, OWNER_PREFIX, RecordChange};

/// Builds the server's state, reading what it owns from the zones.
pub async fn start(
    config: KickConfig,
    tokens: Tokens,
    aws: Arc<Aws>,
    zones: Zones,
    settings: Settings,
) -> Result<Arc<Kick>, AwsError> {
    let marker = format!("cluster={},", config.cluster.name);
    let mut owned = BTreeSet::new();
    let mut foreign = BTreeSet::new();
    let mut published = BTreeMap::new();
    let mut present = Vec::new();
    for zone in std::iter::once(&zones.private).chain(zones.public.as_ref()) {
        for record in aws.list_records(&zone.id).await? {
            if let Some(name) = record.name.strip_prefix(OWNER_PREFIX) {
                if record.kind == "TXT" && record.values.iter().any(|v| v.contains(&marker)) {
                    owned.insert(name.to_owned());
                }
            } else if !matches!(record.kind.as_str(), "SOA" | "NS") {
                present.push(record);
            }
        }
    }
    for record in present {
        if owned.contains(&record.name) {
            let key = (record.name.clone(), record.kind.clone());
            published.insert(
                key,
                RecordChange {
                    upsert: true,
                    ttl: record.ttl.unwrap_or(60),
                    name: record.name,
                    kind: record.kind,
                    values: record.values,
                },
            );
        } else {
            foreign.insert(record.name);
        }
    }
    let writer = Writer::spawn(aws, settings);
    let kick = Arc::new(Kick {
        registry: Mutex::new(Registry::new(&config)),
        config,
        tokens,
        writer,
        zones,
        published: Mutex::new(published),
        owned: Mutex::new(owned),
        foreign: Mutex::new(foreign),
        requests: AtomicU64::new(0),
    });
    super::health::spawn(Arc::clone(&kick));
    Ok(kick)
}

/// Serves the API on a listener until the task is dropped.
pub async fn serve(kick: Arc<Kick>, listener: tokio::net::TcpListener) -> std::io::Result<()> {
    axum::serve(listener, api::router(kick)).await
}
