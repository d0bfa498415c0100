//! The kick server's shared state: what the API handlers, the health
//! checks, placement and the publisher all read and change. Its own module,
//! so that those depend on it and not on each other.

pub mod assignments;
pub mod deploys;
pub mod describe;
pub mod runs;
pub mod scaling;
pub mod targets;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::aws::{Aws, RecordChange};
use crate::control::auth::Tokens;
use crate::control::dns::Writer;
use crate::control::nodes::Nodes;
use crate::control::registry::Registry;
use crate::spec::kick::KickConfig;

/// How long the registry may stay locked before /healthz says kick is stuck.
const STUCK_AFTER: Duration = Duration::from_secs(2);

/// A hosted zone kick writes to.
#[derive(Debug, Clone)]
pub struct Zone {
    pub id: String,
    pub name: String,
}

/// The zones of the cluster.
#[derive(Debug, Clone)]
pub struct Zones {
    pub private: Zone,
    pub public: Option<Zone>,
}

impl Zones {
    /// The zone a name lies in, if any.
    pub fn of(&self, name: &str) -> Option<&Zone> {
        let inside = |zone: &Zone| name == zone.name || name.ends_with(&format!(".{}", zone.name));
        std::iter::once(&self.private)
            .chain(self.public.as_ref())
            .find(|zone| inside(zone))
    }
}

/// How long a secret value read from SSM is served again without reading.
pub const SECRETS_KEPT: std::time::Duration = std::time::Duration::from_secs(30);

/// Secret values by parameter, with when they were read; never printed.
#[derive(Default)]
pub struct KeptSecrets {
    pub values: BTreeMap<String, (String, std::time::Instant)>,
    /// Bumped when every value is forgotten (a restart for a new value):
    /// a read that began before then is not kept.
    pub generation: u64,
}

impl KeptSecrets {
    /// Forgets every value, and whatever a read under way brings back.
    pub fn forget_all(&mut self) {
        self.values.clear();
        self.generation += 1;
    }
}

impl std::fmt::Debug for KeptSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeptSecrets({} values)", self.values.len())
    }
}

/// Everything the handlers share.
#[derive(Debug)]
pub struct Kick {
    pub config: KickConfig,
    pub registry: Mutex<Registry>,
    pub tokens: Tokens,
    /// Nodes' proofs of identity, checked through STS.
    pub identities: crate::control::identity::Identities,
    /// Secret values read from SSM lately, by parameter, with when: a
    /// node asking again and again costs SSM one read in
    /// [`SECRETS_KEPT`].
    pub secrets: Mutex<KeptSecrets>,
    pub writer: Writer,
    pub zones: Zones,
    pub aws: Arc<Aws>,
    /// The cluster's nodes, as EC2 lists them.
    pub nodes: Mutex<Nodes>,
    /// Held while the node list is re-read, so concurrent misses make one
    /// EC2 call, not one each.
    pub refreshing: tokio::sync::Mutex<()>,
    /// The last `GET /v1/cluster` body, with the (registry, nodes)
    /// generations it was made at: served again until either moves.
    pub described: Mutex<Option<(Generations, axum::body::Bytes)>>,
    /// Names kick owns (their `_huxley-owner.` record is kick's).
    pub owned: Mutex<BTreeSet<String>>,
    /// Names that exist in the zones and are not Huxley's: never touched.
    pub foreign: Mutex<BTreeSet<String>>,
    /// Services whose names a write left behind their health (a Route53
    /// failure), with that write's ticket: written again at their next
    /// check, until a write computed after it lands.
    pub dns_behind: Mutex<BTreeMap<(String, String), u64>>,
    pub requests: AtomicU64,
    /// The lease this server leads under; `None` when it runs alone.
    pub lease: Option<Arc<crate::control::lease::Lease>>,
    /// The tasks it runs while it leads, stopped when it steps down (add
    /// them with [`Kick::keep`]).
    pub tasks: Mutex<Vec<tokio::task::AbortHandle>>,
    /// Set once it stepped down: a task kept after that is stopped at once.
    pub stopped: std::sync::atomic::AtomicBool,
    /// Where every replica runs, and what the node agents report.
    pub assignments: Mutex<assignments::Assignments>,
    /// The assignment generation, for node agents' long polls.
    pub placed: tokio::sync::watch::Sender<u64>,
    pub network: Network,
    /// The scaler's memory and decisions.
    pub scaling: Mutex<scaling::Scaling>,
    /// The artifact bucket: deploy history, published description.
    pub bucket: Option<String>,
    /// The registry deployed images must come from.
    pub image_registry: Option<String>,
    /// Every app's deploys.
    pub deploys: Mutex<deploys::Deploys>,
    /// Held while a deploy history is written: one write at a time.
    pub history_writes: tokio::sync::Mutex<()>,
    /// The one-off runs this leader placed.
    pub runs: Mutex<runs::Runs>,
    /// Bumped whenever a run changes, for the long polls that follow one.
    pub ran: tokio::sync::watch::Sender<u64>,
    /// The load balancer in front of the public HTTP services, the target
    /// syncs' locks and what the groups said last.
    pub targets: targets::Targets,
}

/// The (registry, nodes, assignments) generations a description was made at.
pub type Generations = (u64, u64, u64);

/// The container network: the range nodes' subnets come from, and the VPC
/// route table that routes each subnet to its node.
#[derive(Debug, Clone, Default)]
pub struct Network {
    pub range: Option<ipnet::Ipv4Net>,
    pub route_table: Option<String>,
}

impl Kick {
    /// Why this server cannot serve, if it cannot: a lock poisoned by a
    /// panic (every later request touching it would fail), or the registry
    /// held for seconds (everything waits on it).
    pub async fn health_problem(&self) -> Option<String> {
        let poisoned = [
            ("registry", self.registry.is_poisoned()),
            ("nodes", self.nodes.is_poisoned()),
            ("assignments", self.assignments.is_poisoned()),
            ("described", self.described.is_poisoned()),
            ("owned", self.owned.is_poisoned()),
            ("foreign", self.foreign.is_poisoned()),
            ("tasks", self.tasks.is_poisoned()),
            ("scaling", self.scaling.is_poisoned()),
            ("deploys", self.deploys.is_poisoned()),
            ("runs", self.runs.is_poisoned()),
        ];
        if let Some((name, _)) = poisoned.iter().find(|(_, p)| *p) {
            return Some(format!("the {name} lock is poisoned (a request panicked)"));
        }
        let deadline = tokio::time::Instant::now() + STUCK_AFTER;
        loop {
            if self.registry.try_lock().is_ok() {
                return None;
            }
            if tokio::time::Instant::now() > deadline {
                return Some(format!(
                    "the registry has been locked for over {}s",
                    STUCK_AFTER.as_secs()
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Keeps `tasks` to stop when this server steps down; stops them at
    /// once if it already has (a request handled across the step-down must
    /// not leave a task of the old leadership running, which the lease
    /// would let write again if this server led again).
    pub fn keep(&self, tasks: impl IntoIterator<Item = tokio::task::AbortHandle>) {
        let mut kept = self.tasks.lock().expect("tasks");
        for task in tasks {
            if self.stopped.load(std::sync::atomic::Ordering::SeqCst) {
                task.abort();
            } else {
                kept.push(task);
            }
        }
    }

    /// Stops everything this server runs as the leader.
    pub fn stop(&self) {
        if let Some(lease) = &self.lease {
            lease.step_down();
        }
        {
            let mut tasks = self.tasks.lock().expect("tasks");
            self.stopped
                .store(true, std::sync::atomic::Ordering::SeqCst);
            for task in tasks.drain(..) {
                task.abort();
            }
        }
        self.writer.stop();
    }
}

/// Writes the ownership record of a name once.
pub async fn own(kick: &Kick, zone: &str, name: &str) -> Result<(), String> {
    if kick.owned.lock().expect("owned").contains(name) {
        return Ok(());
    }
    let change = RecordChange {
        upsert: true,
        name: format!("{}{name}", crate::spec::registry::OWNER_PREFIX),
        kind: "TXT".into(),
        ttl: 300,
        values: vec![format!(
            "\"heritage=huxley,cluster={},owner=kick\"",
            kick.config.cluster.name
        )],
        alias: None,
    };
    kick.writer.submit(zone, change).await?;
    kick.owned.lock().expect("owned").insert(name.to_owned());
    Ok(())
}

/// How long DNS and health keep in step: the reaper's period.
pub const REAP_EVERY: Duration = Duration::from_secs(30);

/// Whether `id` is one of the cluster's nodes, asking EC2 again when it is
/// not known and the last answer is old enough.
pub async fn known(kick: &Kick, id: &str) -> Result<bool, crate::aws::AwsError> {
    let answer = || {
        let nodes = kick.nodes.lock().expect("nodes");
        if nodes.known.contains_key(id) {
            return Some(true);
        }
        nodes
            .refreshed
            .is_some_and(|at| at.elapsed() < crate::control::nodes::REFRESH_AT_MOST_EVERY)
            .then_some(false)
    };
    if let Some(known) = answer() {
        return Ok(known);
    }
    // One caller reads EC2; the others wait for it and take its answer.
    let _refreshing = kick.refreshing.lock().await;
    if let Some(known) = answer() {
        return Ok(known);
    }
    let list = kick.aws.cluster_nodes(&kick.config.cluster.name).await?;
    let mut nodes = kick.nodes.lock().expect("nodes");
    let held = nodes.held.clone();
    nodes.replace(list);
    if nodes.held != held {
        // The description says why: made again.
        nodes.generation += 1;
    }
    Ok(nodes.known.contains_key(id))
}
