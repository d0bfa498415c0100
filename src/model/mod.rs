//! Stage 2 output: the validated model every later stage reads.
//!
//! A [`Config`] exists only when validation found no error, so the
//! compiler, the planner and the kick server can rely on what it says:
//! names are valid DNS labels, ports are in range, bounds are ordered,
//! requests fit on a node, dependencies form no cycle, and secrets are
//! references. Maps are `BTreeMap`s, so every walk over the model is in a
//! stable order and so is everything generated from it.

pub mod aws;
pub mod naming;

use std::collections::BTreeMap;
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net};

use crate::spec::kick::{Budget, DeployPolicy};

pub use aws::InstanceType;

/// CPU and memory a node keeps for the OS and Huxley's agents; services
/// are packed into what is left.
pub const NODE_RESERVED_CPU_MILLIS: u32 = 200;
pub const NODE_RESERVED_MEMORY_MIB: u64 = 512;
/// The control plane's instance type when huxley.toml names none: builds
/// run there, with half its memory.
pub const DEFAULT_CONTROL_TYPE: &str = "t3.medium";

/// Host ports the cluster's own agents use; services cannot publish them.
pub const SSH_PORT: u16 = 22;
pub const HOOK_SSH_PORT: u16 = 2222;
pub const KICK_INTERNAL_PORT: u16 = 7400;
pub const KICK_EXTERNAL_PORT: u16 = 7443;
/// Where nodes' container subnets come from, a /24 per node: the shared
/// address space of RFC 6598, outside any VPC range huxley.toml accepts
/// (VPC routes to an instance must lie outside the VPC's own range).
pub const CONTAINER_RANGE: &str = "100.64.0.0/16";

/// A validated `huxley.toml`.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub cluster: Cluster,
    pub apps: BTreeMap<String, App>,
}

impl Config {
    /// Every service with its app, in name order.
    pub fn services(&self) -> impl Iterator<Item = (&App, &Service)> {
        self.apps
            .values()
            .flat_map(|app| app.services.values().map(move |s| (app, s)))
    }

    /// The fully qualified private name of a service:
    /// `<service>.<app>.<private-domain>`.
    pub fn private_name(&self, app: &App, service: &Service) -> String {
        format!(
            "{}.{}.{}",
            service.name, app.name, self.cluster.private_domain
        )
    }

    /// Whether the load balancer serves a service's public names.
    pub fn behind_load_balancer(&self, service: &Service) -> bool {
        matches!(self.cluster.ingress, Ingress::LoadBalancer { .. })
            && !service.public.is_empty()
            && service.protocol == Protocol::Http
    }

    /// The services the load balancer serves, with their apps, in order.
    pub fn load_balanced(&self) -> impl Iterator<Item = (&App, &Service)> {
        self.services()
            .filter(|(_, s)| self.behind_load_balancer(s))
    }

    /// Every public name the load balancer serves, in order: the names
    /// its certificate covers.
    pub fn load_balanced_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .load_balanced()
            .flat_map(|(_, s)| self.public_names(s))
            .collect();
        names.sort();
        names
    }

    /// The fully qualified public names of a service.
    pub fn public_names(&self, service: &Service) -> Vec<String> {
        let Some(zone) = &self.cluster.public_domain else {
            return Vec::new();
        };
        service
            .public
            .iter()
            .map(|name| {
                if name == "@" {
                    zone.clone()
                } else {
                    format!("{name}.{zone}")
                }
            })
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Cluster {
    pub name: String,
    pub region: String,
    pub availability_zones: Vec<String>,
    pub vpc_cidr: Ipv4Net,
    /// The user's existing public zone, when any service is public.
    pub public_domain: Option<String>,
    /// How the internet reaches public HTTP services.
    pub ingress: Ingress,
    pub private_domain: String,
    /// Empty means nobody reaches SSH or the kick server's external API.
    pub admin_cidrs: Vec<IpNet>,
    pub ssh_keys: Vec<String>,
    /// Who may `git push`, and to which apps.
    pub deployers: Vec<Deployer>,
    pub nodes: Nodes,
    pub control: Control,
    /// How many days the log groups (and the load balancer's access logs)
    /// keep each line.
    pub log_retention_days: u32,
    /// Whether the load balancer writes access logs to the artifact bucket.
    pub access_logs: bool,
}

/// How the internet reaches public HTTP services.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ingress {
    /// An Application Load Balancer serving HTTPS with this certificate
    /// (`None`: the one `huxley apply` requests).
    LoadBalancer { certificate_arn: Option<String> },
    /// Public names carry the addresses of the nodes running a replica.
    Dns,
}

/// What a service's public names serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP: behind the load balancer when the cluster has one.
    Http,
    /// Anything over TCP: always at the nodes, on the host port.
    Tcp,
}

/// The retention periods CloudWatch Logs accepts, in days.
pub const LOG_RETENTION_DAYS: [u32; 22] = [
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922,
    3288, 3653,
];

/// The control plane's group: the kick and hook servers run there, with
/// the control role; the nodes run replicas only.
#[derive(Debug, Clone, PartialEq)]
pub struct Control {
    pub instance_type: &'static InstanceType,
    pub count: u32,
    pub disk_gb: u32,
}

/// A key that may `git push`, and the apps it may push to (every app
/// when huxley.toml names none).
#[derive(Debug, Clone, PartialEq)]
pub struct Deployer {
    pub key: String,
    pub apps: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Nodes {
    pub instance_type: &'static InstanceType,
    pub min: u32,
    pub max: u32,
    pub desired: u32,
    pub disk_gb: u32,
    pub image: NodeImage,
    /// USD an hour per node.
    pub hourly_cost: f64,
    /// `None` when turned off.
    pub consolidation: Option<Consolidation>,
}

/// How far consolidation may go.
#[derive(Debug, Clone, PartialEq)]
pub struct Consolidation {
    pub budget: Budget,
    /// USD a month a drain must save.
    pub min_monthly_savings: f64,
    /// How long the cluster must be steady before a drain.
    pub after: Duration,
}

impl Nodes {
    /// CPU a node offers to services, after the reserve.
    pub fn allocatable_cpu_millis(&self) -> u32 {
        (self.instance_type.vcpus * 1000).saturating_sub(NODE_RESERVED_CPU_MILLIS)
    }

    /// Memory a node offers to services, after the reserve.
    pub fn allocatable_memory_mib(&self) -> u64 {
        self.instance_type
            .memory_mib
            .saturating_sub(NODE_RESERVED_MEMORY_MIB)
    }
}

/// Which machine image the nodes boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeImage {
    /// The newest Flatcar release of a channel, resolved at plan time.
    Flatcar(FlatcarChannel),
    /// An explicit AMI id.
    Ami(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlatcarChannel {
    Stable,
    Beta,
    Alpha,
}

impl FlatcarChannel {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stable => "stable",
            Self::Beta => "beta",
            Self::Alpha => "alpha",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct App {
    pub name: String,
    pub branch: String,
    pub services: BTreeMap<String, Service>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    pub name: String,
    pub source: Source,
    /// Empty means the image's own command.
    pub command: Vec<String>,
    /// Run once before each deploy that changes the image; empty: none.
    pub release: Vec<String>,
    pub port: Option<u16>,
    pub host_port: Option<u16>,
    /// Names relative to the public zone; `@` is the apex.
    pub public: Vec<String>,
    pub protocol: Protocol,
    pub cpu_millis: u32,
    pub memory_mib: u64,
    pub replicas: Replicas,
    /// Present when the replica count may change.
    pub scale: Option<Scale>,
    pub health: Health,
    pub env: BTreeMap<String, String>,
    pub secrets: BTreeMap<String, SecretRef>,
    pub depends_on: Vec<String>,
    pub stateful: bool,
    /// Volume name → mount path in the container.
    pub volumes: BTreeMap<String, String>,
    /// How a new release replaces the running one.
    pub deploy: DeployPolicy,
}

/// Where a service's image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Built from this context directory of the app's repository on push.
    Build { context: String },
    /// A prebuilt image reference.
    Image { reference: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replicas {
    pub min: u32,
    pub max: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scale {
    pub target_cpu_percent: Option<u8>,
    pub target_memory_percent: Option<u8>,
    /// How long use must stay low before replicas are removed.
    pub scale_in_after: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    pub check: HealthCheck,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
    pub grace: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthCheck {
    /// GET this path on the service's port; 2xx is healthy.
    Http { path: String },
    /// Connect to this port.
    Tcp { port: u16 },
    /// The container is running: for services without a port.
    Running,
}

/// A reference to a secret, resolved on the node at start.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum SecretRef {
    /// An SSM Parameter Store parameter name, starting with `/`.
    Ssm { parameter: String },
}

impl std::fmt::Display for SecretRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Ssm { parameter } => write!(f, "ssm:{parameter}"),
        }
    }
}
