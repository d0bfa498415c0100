//! The leader's placement and what node agents report: which replicas each
//! node runs, each node's container subnet, the replica counts the scaler
//! and deploys set, and each built service's current release.

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use ipnet::Ipv4Net;

use crate::scheduler::placement::{Placement, Replica};
use crate::spec::assignment::NodeReport;
use crate::spec::kick::{ServiceKey, ServiceSection};

/// The leader's placement and what node agents reported.
#[derive(Debug, Default)]
pub struct Assignments {
    pub placement: Placement,
    /// Bumped whenever any node's share or subnet changes.
    pub generation: u64,
    /// Each node's container subnet.
    pub subnets: BTreeMap<String, Ipv4Net>,
    /// Each node's last report, with when it came.
    pub reports: BTreeMap<String, (SystemTime, NodeReport)>,
    /// Bumped on every change the description shows.
    pub version: u64,
    /// Nodes whose agent has asked for its assignment: only these, and
    /// nodes that already run replicas, get new ones (a node still booting
    /// would leave them waiting).
    pub ready: BTreeSet<String>,
    /// Replicas moving between two live nodes: replica → the node it
    /// leaves, which keeps running it until it is healthy on the new one
    /// (make before break: a move never leaves a service without it).
    pub handoff: BTreeMap<Replica, String>,
    /// Replicas whose move has ended, still running on the node they left
    /// while they drain: out of DNS, kept until the service's drain has
    /// passed since Route53 had the change everywhere.
    pub lingering: BTreeSet<(Replica, String)>,
    /// Of those, the ones whose drain has not started (the leader's
    /// placement loop starts it).
    pub to_drain: Vec<(Replica, String)>,
    /// Each scaled service's replica count, as the scaler set it; a
    /// service absent here runs `replicas.min`.
    pub wanted: BTreeMap<ServiceKey, u32>,
    /// Nodes being drained, with the reason: nothing new is placed on
    /// them, and what runs there moves (make before break).
    pub draining: BTreeMap<String, String>,
    /// Whether `wanted` was seeded from what runs (once, by a new leader).
    pub seeded: bool,
    /// Each service's lowest replica number (absent: 1). A deploy starts
    /// new replicas above a service's replicas and retires the lowest, so
    /// its replicas stay the window `first..first + count`.
    pub first: BTreeMap<ServiceKey, u32>,
    /// The replica count of services being deployed, which the deploy
    /// sets (the scaler leaves them alone meanwhile).
    pub rolling: BTreeMap<ServiceKey, u32>,
    /// The image each built service runs: its current release, pinned by
    /// digest. A built service without one has no replicas yet.
    pub current: BTreeMap<ServiceKey, String>,
    /// Replicas a deploy started on a new image, until it ends.
    pub images: BTreeMap<Replica, String>,
}

impl Assignments {
    /// A service's wanted replica count: the scaler's, or `replicas.min`.
    pub fn wanted_count(&self, key: &ServiceKey, section: &ServiceSection) -> u32 {
        self.wanted
            .get(key)
            .copied()
            .unwrap_or(section.replicas.min)
    }

    /// The replicas a service runs for now: a deploy's count while one
    /// rolls out, else the wanted count.
    pub fn desired_count(&self, key: &ServiceKey, section: &ServiceSection) -> u32 {
        self.rolling
            .get(key)
            .copied()
            .unwrap_or_else(|| self.wanted_count(key, section))
    }

    /// Whether `key` is built on push and was never deployed (nor is being):
    /// nothing of it runs yet.
    pub fn awaiting_first_deploy(&self, key: &ServiceKey, section: &ServiceSection) -> bool {
        section.image.is_none()
            && !self.current.contains_key(key)
            && !self.rolling.contains_key(key)
    }

    /// The image `replica` runs: the deploy's, else its service's release.
    pub fn image_of(&self, replica: &Replica, prebuilt: Option<&String>) -> Option<String> {
        self.images
            .get(replica)
            .or_else(|| {
                self.current
                    .get(&(replica.app.clone(), replica.service.clone()))
            })
            .or(prebuilt)
            .cloned()
    }
}
