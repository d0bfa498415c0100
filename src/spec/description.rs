//! The cluster's self-description (`GET /v1/cluster`, and the copy the
//! leader publishes in the bucket): what `huxley cluster describe` shows.

use std::collections::BTreeMap;
use std::net::IpAddr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::assignment::ReplicaState;
use super::registry::Status;
use super::release::ServiceRelease;

/// The self-description of the cluster (`GET /v1/cluster`).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct ClusterDescription {
    pub cluster: String,
    /// Seconds since the Unix epoch when this description was made.
    pub generated_at: u64,
    pub apps: BTreeMap<String, AppDescription>,
    pub nodes: BTreeMap<String, NodeDescription>,
    /// The scaler's latest decisions, oldest first, each with its reason.
    #[serde(default)]
    pub decisions: Vec<Decision>,
    /// Why kick keeps its previous list of nodes rather than the last
    /// EC2 read (a read that lists none, or too many gone at once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes_held: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct AppDescription {
    pub services: BTreeMap<String, ServiceDescription>,
    /// The deploy rolling out now, if one is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploying: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct ServiceDescription {
    pub private_name: Option<String>,
    pub public_names: Vec<String>,
    pub desired: u32,
    pub running: usize,
    pub healthy: usize,
    pub instances: Vec<InstanceDescription>,
    /// Where the leader placed each replica, and what its node reports.
    #[serde(default)]
    pub placed: Vec<PlacedReplica>,
    /// Replicas that fit on no node, and why.
    #[serde(default)]
    pub unplaced: Vec<UnplacedReplica>,
    /// The release it runs, for a service built on push.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<ServiceRelease>,
    /// Built on push and never deployed: nothing is placed until a `git
    /// push` deploys it.
    #[serde(default)]
    pub awaiting_first_deploy: bool,
    /// One-off runs under way (`huxley run`, release commands).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runs: Vec<RunDescription>,
}

/// A one-off run under way.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct RunDescription {
    pub id: u64,
    pub node: String,
    pub command: Vec<String>,
    pub state: crate::spec::run::RunState,
    /// Seconds since the Unix epoch.
    pub created: u64,
}

/// A replica's place and state, as its node reports it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct PlacedReplica {
    pub replica: u32,
    pub node: String,
    /// `starting`, `running`, `failed` or `stopped`; absent until the node
    /// reports.
    pub state: Option<ReplicaState>,
    /// Why it failed: its last exit, or the image pull's error.
    pub detail: Option<String>,
    /// For a failed replica: what it printed last, as its node reported
    /// it (secrets out, at most 20 lines).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub output: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct UnplacedReplica {
    pub replica: u32,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct InstanceDescription {
    pub id: String,
    pub node: String,
    pub address: IpAddr,
    pub port: u16,
    pub version: Option<String>,
    pub health: Status,
    pub last_check_output: String,
    /// What the load balancer says of it (`healthy`, `initial`,
    /// `unhealthy (Target.Timeout)`, `draining`, `not registered`), for
    /// a service behind one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<String>,
}

/// A node's capacity: what its replicas request against what it offers.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct NodeDescription {
    /// The EC2 instance type; empty for a node EC2 no longer lists.
    pub instance_type: String,
    /// The node's private address.
    pub address: Option<IpAddr>,
    pub instances: usize,
    pub cpu_requested_millis: u64,
    pub cpu_allocatable_millis: u32,
    pub memory_requested_mib: u64,
    pub memory_allocatable_mib: u64,
    /// Why the node is being drained, while it is.
    #[serde(default)]
    pub draining: Option<String>,
}

/// One decision, for people.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Decision {
    /// Seconds since the Unix epoch.
    pub at: u64,
    pub decision: String,
}
