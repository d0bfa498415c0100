//! Starting the kick server: state rebuilt from Route53 and EC2, the check
//! loops, and the API on a listener.
//!
//! Nothing that matters lives only in memory. At start kick reads both
//! zones and the cluster's EC2 instances, then:
//! - takes the names whose ownership record names this cluster as its own
//!   (and the record sets it published under them), and marks every other
//!   existing name as foreign, never to be touched;
//! - rebuilds the registry from each service's replicas record, keeping
//!   the instances whose node EC2 still lists, healthy when the service's
//!   DNS answer carries them;
//! - brings the DNS answers and replicas records of those services in line
//!   with that registry (an instance whose node is gone leaves both)
//!   before it serves.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::aws::{Aws, AwsError, RecordChange};
use crate::control::api;
use crate::control::auth::Tokens;
use crate::control::controllers::health::{futures_join, sync_dns, sync_replicas};
use crate::control::dns::{Published, Settings, Writer};
use crate::control::lease::Lease;
use crate::control::nodes::Nodes;
use crate::control::registry::Registry;
use crate::control::registry::{REPLICAS_PREFIX, parse_replica};
use crate::control::state::assignments::Assignments;
use crate::control::state::deploys::Deploys;
use crate::control::state::scaling::Scaling;
use crate::control::state::{Kick, Network, Zones};
use crate::spec::kick::KickConfig;
use crate::spec::registry::OWNER_PREFIX;

/// How a server that leads runs: its lease, and the VPC route table the
/// container subnets are routed in.
#[derive(Debug, Default)]
pub struct Leading {
    pub lease: Option<Arc<Lease>>,
    pub route_table: Option<String>,
    /// The artifact bucket, where deploys are recorded.
    pub bucket: Option<String>,
    /// The registry deployed images must come from (`None`: any host
    /// name, for a server run by hand).
    pub registry: Option<String>,
}

/// Builds the server's state from Route53 and EC2, and reconciles both
/// with it; for a server that runs alone (no lease, no routes).
pub async fn start(
    config: KickConfig,
    tokens: Tokens,
    aws: Arc<Aws>,
    zones: Zones,
    settings: Settings,
) -> Result<Arc<Kick>, AwsError> {
    start_leading(config, tokens, aws, zones, settings, Leading::default()).await
}

/// Builds the leader's state from Route53, EC2 and the route table,
/// reconciles them with it, and starts its loops: health checks, placement.
pub async fn start_leading(
    config: KickConfig,
    tokens: Tokens,
    aws: Arc<Aws>,
    zones: Zones,
    settings: Settings,
    leading: Leading,
) -> Result<Arc<Kick>, AwsError> {
    let marker = format!("cluster={},", config.cluster.name);
    let mut owned = BTreeSet::new();
    let mut foreign = BTreeSet::new();
    let mut published = Published::new();
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
    let mut replicas = Vec::new();
    for record in present {
        let key = (record.name.clone(), record.kind.clone());
        let change = RecordChange {
            upsert: true,
            ttl: record.ttl.unwrap_or(60),
            name: record.name,
            kind: record.kind,
            values: record.values,
            alias: record.alias,
        };
        if change.name.starts_with(REPLICAS_PREFIX) && change.kind == "TXT" {
            replicas.push(change.clone());
            published.insert(key, change);
        } else if owned.contains(&change.name) {
            published.insert(key, change);
        } else {
            foreign.insert(change.name);
        }
    }
    // The first read of a leadership is careful too: one that lists no
    // node while the replicas records name some is read again, and if it
    // still lists none the registry is rebuilt from the records as they
    // are (dropping every instance would empty every DNS answer).
    let mut listed = aws.cluster_nodes(&config.cluster.name).await?;
    for _ in 0..2 {
        if !listed.is_empty() || replicas.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        listed = aws.cluster_nodes(&config.cluster.name).await?;
    }
    let trust_records = listed.is_empty() && !replicas.is_empty();
    if trust_records {
        eprintln!(
            "kick: EC2 lists none of the cluster's nodes; the registry keeps every replica its records name until a read lists some"
        );
    }
    let nodes = Nodes::from_list(listed);
    let (registry, managed) = rebuild(
        &config,
        &zones,
        &replicas,
        &published,
        &nodes,
        trust_records,
    );
    let range = config.network.container_range.parse().ok();
    let mut assignments = Assignments::default();
    if let (Some(table), Some(range)) = (&leading.route_table, range) {
        // The subnets as the route table holds them: a new leader keeps
        // every node's subnet.
        for (destination, node) in aws.instance_routes(table).await? {
            if let Ok(subnet) = destination.parse::<ipnet::Ipv4Net>()
                && ipnet::Ipv4Net::contains(&range, &subnet)
            {
                assignments.subnets.insert(node, subnet);
            }
        }
    }
    // A leader's clients are fenced (crate::aws::fence): a change is sent
    // only while its lease has not lapsed by its own clock, retries
    // included.
    let writer = Writer::spawn(Arc::clone(&aws), settings, published);
    let kick = Arc::new(Kick {
        registry: Mutex::new(registry),
        config,
        tokens,
        identities: crate::control::identity::Identities::default(),
        secrets: Mutex::default(),
        writer,
        zones,
        aws,
        nodes: Mutex::new(nodes),
        refreshing: tokio::sync::Mutex::new(()),
        described: Mutex::new(None),
        owned: Mutex::new(owned),
        foreign: Mutex::new(foreign),
        dns_behind: Mutex::default(),
        requests: AtomicU64::new(0),
        lease: leading.lease,
        tasks: Mutex::new(Vec::new()),
        stopped: std::sync::atomic::AtomicBool::new(false),
        assignments: Mutex::new(assignments),
        placed: tokio::sync::watch::channel(0).0,
        scaling: Mutex::new(Scaling::default()),
        bucket: leading.bucket,
        image_registry: leading.registry,
        deploys: Mutex::new(Deploys {
            writer: fastrand::u64(..),
            ..Deploys::default()
        }),
        history_writes: tokio::sync::Mutex::new(()),
        runs: Mutex::new(Default::default()),
        ran: tokio::sync::watch::channel(0).0,
        targets: Default::default(),
        network: Network {
            range,
            route_table: leading.route_table,
        },
    });
    // The load balancer, before names and targets are brought in line.
    crate::control::controllers::targets::refresh(&kick).await;
    reconcile(&kick, managed).await;
    // The releases to run, before anything is placed.
    crate::control::controllers::deploy::restore(&kick).await;
    crate::control::controllers::assign::replace(&kick).await;
    spawn_loops(&kick);
    Ok(kick)
}

/// Starts the leader's loops, kept with it: health checks, placement,
/// runs, the load balancer's targets.
fn spawn_loops(kick: &Arc<Kick>) {
    let mut tasks = crate::control::controllers::health::spawn(Arc::clone(kick));
    tasks.push(crate::control::controllers::assign::spawn(Arc::clone(kick)));
    tasks.push(crate::control::controllers::runs::spawn(Arc::clone(kick)));
    tasks.push(crate::control::controllers::targets::spawn(Arc::clone(
        kick,
    )));
    kick.keep(tasks);
}

/// The registry as the replicas records and DNS answers describe it, and
/// the services that have a replicas record: their DNS answers follow the
/// registry; other services' names are left as their services wrote them.
fn rebuild(
    config: &KickConfig,
    zones: &Zones,
    replicas: &[RecordChange],
    published: &Published,
    nodes: &Nodes,
    every_node: bool,
) -> (Registry, Vec<(String, String)>) {
    let mut registry = Registry::new(config);
    let mut managed = Vec::new();
    let now = SystemTime::now();
    let suffix = format!(".{}", zones.private.name);
    for record in replicas {
        let Some((service, app)) = record
            .name
            .strip_prefix(REPLICAS_PREFIX)
            .and_then(|rest| rest.strip_suffix(&suffix))
            .and_then(|rest| rest.split_once('.'))
        else {
            continue;
        };
        let Some(section) = config.apps.get(app).and_then(|a| a.services.get(service)) else {
            continue;
        };
        managed.push((app.to_owned(), service.to_owned()));
        // DNS carries exactly the healthy instances: read their addresses
        // from the service's first name.
        let healthy: BTreeSet<IpAddr> = section
            .private_name
            .iter()
            .chain(&section.public_names)
            .take(1)
            .flat_map(|name| {
                ["A", "AAAA"]
                    .into_iter()
                    .filter_map(|kind| published.get(&(name.clone(), kind.to_owned())))
                    .flat_map(|c| c.values.iter().filter_map(|v| v.parse().ok()))
            })
            .collect();
        for value in &record.values {
            let Some(registration) = parse_replica(app, service, value) else {
                continue;
            };
            if every_node || nodes.known.contains_key(&registration.node) {
                let _ =
                    registry.restore(&registration, healthy.contains(&registration.address), now);
            }
        }
    }
    (registry, managed)
}

/// Brings the DNS answers and replicas records of `services` in line with
/// the registry, all at once (the writer batches them).
async fn reconcile(kick: &Arc<Kick>, services: Vec<(String, String)>) {
    futures_join(services.into_iter().map(|(app, service)| {
        let kick = Arc::clone(kick);
        async move {
            let _ = sync_dns(&kick, &app, &service).await;
            let _ = sync_replicas(&kick, &app, &service).await;
        }
    }))
    .await;
}

/// Serves the API on a listener until the task is dropped.
pub async fn serve(kick: Arc<Kick>, listener: tokio::net::TcpListener) -> std::io::Result<()> {
    crate::control::listener::serve(
        listener,
        None,
        api::router(kick),
        crate::control::listener::Limits::default(),
    )
    .await
}
