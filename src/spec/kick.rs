//! `kick.toml`: everything the kick server must know about the cluster.
//!
//! The compiler ([`crate::compile::kick`]) serializes this type and the
//! kick server deserializes it, so both sides agree on every key by
//! construction. It holds names, ports, health checks, resources, replica
//! bounds and the *names* of the SSM parameters holding tokens, never a
//! secret value. Zone ids and the bucket name are not known at build time:
//! the kick server reads them from the stack outputs at start.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The format version, bumped on incompatible changes.
pub const VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct KickConfig {
    pub version: u32,
    pub cluster: ClusterSection,
    pub listen: Listen,
    pub tokens: Tokens,
    pub nodes: NodesSection,
    pub network: NetworkSection,
    pub apps: BTreeMap<String, AppSection>,
    /// Who may `git push` (public keys, not secrets), and to which apps:
    /// the hook server's only keys.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deployers: Vec<DeployerEntry>,
}

/// A key that may `git push`, and the apps it may push to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DeployerEntry {
    pub key: String,
    pub apps: Vec<String>,
}

impl KickConfig {
    /// Every service of every app, with its key, in order.
    pub fn services(&self) -> impl Iterator<Item = (ServiceKey, &ServiceSection)> {
        self.apps.iter().flat_map(|(app, section)| {
            section
                .services
                .iter()
                .map(move |(name, s)| ((app.clone(), name.clone()), s))
        })
    }

    /// Every parameter name kick reads its tokens from (the admin's hash,
    /// not the admin token).
    pub fn token_parameters(&self) -> Vec<String> {
        let mut names = vec![self.tokens.admin_sha256.clone(), self.tokens.hook.clone()];
        names.extend(
            self.apps
                .values()
                .flat_map(|a| a.services.values().map(|s| s.token.clone())),
        );
        names
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ClusterSection {
    pub name: String,
    pub region: String,
    /// The CloudFormation stack whose outputs carry zone ids and the bucket.
    pub stack: String,
    pub private_zone: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_zone: Option<String>,
    /// The name kick registers for its own external API.
    pub kick_name: String,
    /// The DynamoDB table holding the control plane's lease.
    pub lease_table: String,
}

/// The container network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct NetworkSection {
    /// Where nodes' container subnets (a /24 each) come from: outside the
    /// VPC, routed to each node in the VPC's route table.
    pub container_range: String,
    /// The VPC's range: with the containers', the only addresses kick
    /// registers (and so health-checks).
    pub vpc_cidr: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Listen {
    /// Services' API, reachable inside the VPC.
    pub internal: String,
    /// Operators' API over TLS, reachable from `admin-cidrs`.
    pub external: String,
}

/// SSM parameter names (never values) of the bearer tokens kick accepts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Tokens {
    /// The admin token itself: read by the CLI with the user's rights; the
    /// nodes may not read it.
    pub admin: String,
    /// The admin token's SHA-256, which kick checks presented tokens
    /// against.
    pub admin_sha256: String,
    pub hook: String,
    /// The hook server's SSH host key (the cluster's one, so the git
    /// remote keeps its key across failovers); kick does not read it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hook_host_key: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct NodesSection {
    pub instance_type: String,
    /// The EC2 Auto Scaling group kick resizes.
    pub group: String,
    pub min: u32,
    pub max: u32,
    /// USD an hour per node: what terminating one saves.
    pub hourly_cost: f64,
    /// Absent when consolidation is off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consolidation: Option<Consolidation>,
    /// What one node offers services, after the OS and agents' reserve.
    pub allocatable_cpu_millis: u32,
    pub allocatable_memory_mib: u64,
}

/// How far consolidation may go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Consolidation {
    pub budget: Budget,
    /// USD a month a drain must save.
    pub min_monthly_savings: f64,
    /// How long the cluster must be steady before a drain.
    #[serde(with = "duration_text")]
    pub after: Duration,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AppSection {
    pub branch: String,
    pub services: BTreeMap<String, ServiceSection>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ServiceSection {
    /// The systemd template unit that runs a replica: `<unit>@<n>.service`.
    pub unit: String,
    /// A prebuilt image, or absent when the hook server builds it on push.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The build context in the app's repository, for a service built on
    /// push.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<String>,
    /// SSM parameter name of this service's own token: it may change only
    /// its own records and instances.
    pub token: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_port: Option<u16>,
    /// Fully qualified names kick may register for this service.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub private_name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub public_names: Vec<String>,
    /// For a service behind the load balancer: the logical id of its
    /// target group in the stack. Its public names are then aliases of the
    /// load balancer, and its healthy replicas the group's targets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_group: Option<String>,
    pub cpu_millis: u32,
    pub memory_mib: u64,
    pub replicas: ReplicaBounds,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scale: Option<ScalePolicy>,
    pub health: HealthCheck,
    pub stateful: bool,
    /// How a new release replaces the running replicas.
    #[serde(default)]
    pub deploy: DeployPolicy,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    /// The command run once before each deploy that changes the image.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub release: Vec<String>,
    /// Environment variable → the SSM parameter *name* holding its value;
    /// `huxley node secrets` reads them when a replica starts.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicaBounds {
    pub min: u32,
    pub max: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ScalePolicy {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_cpu_percent: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_memory_percent: Option<u8>,
    /// How long use must stay low before replicas are removed.
    #[serde(with = "duration_text")]
    pub scale_in_after: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct HealthCheck {
    /// `http`, `tcp` or `running`.
    pub kind: HealthKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(with = "duration_text")]
    pub interval: Duration,
    #[serde(with = "duration_text")]
    pub timeout: Duration,
    pub healthy: u32,
    pub unhealthy: u32,
    #[serde(with = "duration_text")]
    pub grace: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HealthKind {
    Http,
    Tcp,
    Running,
}

/// Durations as the same text users write in huxley.toml ("10s", "1m30s").
pub mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    use crate::spec::quantity;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&quantity::format_duration(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        quantity::duration(&text).map_err(serde::de::Error::custom)
    }
}

/// Nodes draining at once, at most. Written as huxley.toml writes it: a
/// count (`1`) or a share (`"10%"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    Nodes(u32),
    Percent(u8),
}

impl serde::Serialize for Budget {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Budget::Nodes(n) => s.serialize_u32(*n),
            Budget::Percent(p) => s.serialize_str(&format!("{p}%")),
        }
    }
}

impl<'de> serde::Deserialize<'de> for Budget {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Form {
            Nodes(u32),
            Share(String),
        }
        match Form::deserialize(d)? {
            Form::Nodes(n) => Ok(Budget::Nodes(n)),
            Form::Share(text) => text
                .strip_suffix('%')
                .and_then(|p| p.parse().ok())
                .map(Budget::Percent)
                .ok_or_else(|| {
                    serde::de::Error::custom(format!("`{text}` is not a share such as \"10%\""))
                }),
        }
    }
}

impl Budget {
    /// The nodes that may drain at once out of `nodes`: at least one.
    pub fn of(self, nodes: usize) -> usize {
        self.count(nodes).max(1)
    }

    /// The count out of `total`, shares rounded up; may be zero.
    pub fn count(self, total: usize) -> usize {
        match self {
            Budget::Nodes(n) => usize::try_from(n).unwrap_or(usize::MAX),
            Budget::Percent(p) => (total * usize::from(p)).div_ceil(100),
        }
    }
}

/// How a deploy replaces a service's replicas: in batches, each new
/// replica healthy before an old one goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DeployPolicy {
    /// Replicas started above the count at once.
    pub max_surge: Budget,
    /// Replicas that may be missing (stopped before their replacement is
    /// healthy) at once.
    pub max_unavailable: Budget,
    /// How long a batch's new replicas have to become healthy.
    #[serde(with = "duration_text")]
    pub timeout: Duration,
    /// How long a replica leaving a rollout keeps running after Route53
    /// has dropped it everywhere (INSYNC): the TTL of the service's
    /// records, so a client holding the old answer still reaches it.
    #[serde(with = "duration_text", default = "default_drain")]
    pub drain: Duration,
    /// How long the image's build on push may take before it is stopped.
    #[serde(with = "duration_text", default = "default_build_timeout")]
    pub build_timeout: Duration,
    /// How long the service's release command may run before it is
    /// stopped and the deploy refused.
    #[serde(
        with = "duration_text",
        default = "default_release_timeout",
        skip_serializing_if = "is_default_release_timeout"
    )]
    pub release_timeout: Duration,
}

fn default_release_timeout() -> Duration {
    DEFAULT_RELEASE_TIMEOUT
}

fn is_default_release_timeout(timeout: &Duration) -> bool {
    *timeout == DEFAULT_RELEASE_TIMEOUT
}

/// How long a release command may run by default.
pub const DEFAULT_RELEASE_TIMEOUT: Duration = Duration::from_secs(10 * 60);

fn default_drain() -> Duration {
    DEFAULT_DRAIN
}

fn default_build_timeout() -> Duration {
    DEFAULT_BUILD_TIMEOUT
}

/// How long a build on push may take by default.
pub const DEFAULT_BUILD_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// The default drain, and TTL of a service's records.
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(30);

impl Default for DeployPolicy {
    /// One new replica at a time, none missing: capacity never drops.
    fn default() -> Self {
        DeployPolicy {
            max_surge: Budget::Nodes(1),
            max_unavailable: Budget::Nodes(0),
            timeout: DEFAULT_DEPLOY_TIMEOUT,
            drain: DEFAULT_DRAIN,
            build_timeout: DEFAULT_BUILD_TIMEOUT,
            release_timeout: DEFAULT_RELEASE_TIMEOUT,
        }
    }
}

/// How long a deploy's batch waits for health by default.
pub const DEFAULT_DEPLOY_TIMEOUT: Duration = Duration::from_secs(300);

/// A service, by app and name.
pub type ServiceKey = (String, String);
