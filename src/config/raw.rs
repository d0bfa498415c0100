//! Stage 1: `huxley.toml` as serde reads it, before any checking.
//!
//! These types mirror the file one to one: kebab-case keys, unknown keys
//! rejected, every value spanned for diagnostics. Their doc comments are the
//! descriptions in `schemas/huxley.schema.json`. Keys the file needs are still
//! `Option` here and marked required for the schema only: the validator
//! reports a missing key itself, with a better message than serde's and
//! together with every other problem. Nothing outside `config` uses these
//! types; the rest of Huxley reads the validated [`crate::model`].

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

use super::spanned::Spanned;

/// A map keyed by names whose spans we keep.
pub type Named<T> = BTreeMap<Spanned<String>, Spanned<T>>;

/// huxley.toml: one cluster, and the apps deployed to it.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", expecting = "a table")]
#[schemars(title = "huxley.toml")]
pub struct RawConfig {
    /// The cluster: network, DNS zones, nodes and the agents that run on them.
    #[schemars(required)]
    pub cluster: Option<Spanned<RawCluster>>,
    /// The apps deployed to the cluster, by name. Each app is a git
    /// repository pushed to the cluster's hook server. Names are DNS labels.
    pub apps: Option<Named<RawApp>>,
}

/// The long-lived base that every app shares.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", expecting = "a table")]
pub struct RawCluster {
    /// The cluster's name: a DNS label of 1 to 28 lowercase letters, digits
    /// and hyphens, starting with a letter. It names the stack and prefixes
    /// every resource.
    #[schemars(
        required,
        length(min = 1, max = 28),
        regex(pattern = r"^[a-z]([a-z0-9-]*[a-z0-9])?$")
    )]
    pub name: Option<Spanned<String>>,
    /// The AWS region, e.g. "us-west-2".
    #[schemars(required, regex(pattern = r"^[a-z]{2}(-[a-z]+)+-[0-9]+$"))]
    pub region: Option<Spanned<String>>,
    /// At least two availability zones of `region`, e.g. ["us-west-2a",
    /// "us-west-2b"]. One subnet is created in each.
    #[schemars(required, length(min = 2))]
    pub availability_zones: Option<Spanned<Vec<Spanned<String>>>>,
    /// The VPC's IPv4 range, with a prefix from /16 to /24. Default
    /// "10.0.0.0/16".
    pub vpc_cidr: Option<Spanned<String>>,
    /// An existing public Route53 hosted zone, e.g. "acme.example.com".
    /// Required when any service has `public` names.
    pub public_domain: Option<Spanned<String>>,
    /// How the internet reaches public HTTP services: "alb" (default), an
    /// Application Load Balancer with an ACM certificate serving HTTPS,
    /// targets registered by the kick server; or "dns", public names
    /// pointing at the nodes' addresses and each service's `host-port`.
    #[schemars(regex(pattern = r"^(alb|dns)$"))]
    pub ingress: Option<Spanned<String>>,
    /// The ACM certificate the load balancer serves, in the cluster's
    /// region, e.g. "arn:aws:acm:us-west-2:123456789012:certificate/…".
    /// Default: `huxley apply` requests one for the public names and
    /// validates it by DNS in `public-domain`.
    pub certificate_arn: Option<Spanned<String>>,
    /// The private hosted zone created for the cluster and visible only
    /// inside its VPC. Default "<name>.cluster".
    pub private_domain: Option<Spanned<String>>,
    /// Who may reach SSH and the kick server's external API, as CIDRs
    /// ("203.0.113.0/24", "2001:db8::/32"). Default: nobody.
    pub admin_cidrs: Option<Vec<Spanned<String>>>,
    /// Public SSH keys allowed to log in to the nodes as `core`, in
    /// authorized_keys form ("ssh-ed25519 AAAA... ops@acme"). They cannot
    /// `git push`: see `deployers`.
    pub ssh_keys: Option<Vec<Spanned<String>>>,
    /// Who may `git push`: each a public key and the apps it may push to
    /// (default: every app). Deploy keys push as an unprivileged user and
    /// cannot log in to the nodes.
    pub deployers: Option<Vec<Spanned<RawDeployer>>>,
    /// The container hosts.
    #[schemars(required)]
    pub nodes: Option<Spanned<RawNodes>>,
    /// The control plane: a small group of its own, which runs the kick and
    /// hook servers (and the builds) with the control role, while the nodes
    /// run only replicas. Default { instance-type = "t3.medium", count = 2 }.
    pub control: Option<Spanned<RawControl>>,
    /// The apps' logs in CloudWatch Logs: a log group per app
    /// (`/huxley/<cluster>/<app>`) and one for the control plane
    /// (`/huxley/<cluster>/system`); and, when asked, the load balancer's
    /// access logs. Default { retention-days = 30, access-logs = false }.
    pub logs: Option<Spanned<RawLogs>>,
}

/// The cluster's log groups.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", expecting = "a table")]
pub struct RawLogs {
    /// How many days CloudWatch Logs keeps each line: one of 1, 3, 5, 7,
    /// 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827,
    /// 2192, 2557, 2922, 3288 or 3653. Default 30.
    #[schemars(range(min = 1, max = 3653))]
    pub retention_days: Option<Spanned<i64>>,
    /// Whether the load balancer writes its access logs (a line per
    /// request) to the artifact bucket, under `access-logs/`, kept
    /// `retention-days` days. Default false.
    pub access_logs: Option<Spanned<bool>>,
}

/// The control plane's group.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", expecting = "a table")]
pub struct RawControl {
    /// An EC2 instance type. Default "t3.medium": builds run here, with half
    /// its memory.
    pub instance_type: Option<Spanned<String>>,
    /// How many control nodes: one leads, the others stand by. 1 to 3,
    /// default 2.
    #[schemars(range(min = 1, max = 3))]
    pub count: Option<Spanned<i64>>,
    /// Size of each control node's encrypted gp3 root volume in GiB (the
    /// hook's repositories and build images). Default 30.
    #[schemars(range(min = 8, max = 16384))]
    pub disk_gb: Option<Spanned<i64>>,
}

/// A key that may `git push`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", expecting = "a table")]
pub struct RawDeployer {
    /// The public key, in authorized_keys form ("ssh-ed25519 AAAA... ci@acme").
    #[schemars(required)]
    pub key: Option<Spanned<String>>,
    /// The apps it may push to. Default: every app.
    pub apps: Option<Vec<Spanned<String>>>,
}

/// The auto-scaling group of container hosts.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", expecting = "a table")]
pub struct RawNodes {
    /// An EC2 instance type, e.g. "m6i.large" (x86_64 families).
    #[schemars(required)]
    pub instance_type: Option<Spanned<String>>,
    /// The fewest nodes, at least 1.
    #[schemars(required, range(min = 1))]
    pub min: Option<Spanned<i64>>,
    /// The most nodes the kick server may scale out to.
    #[schemars(required, range(min = 1))]
    pub max: Option<Spanned<i64>>,
    /// The node count to start with, between `min` and `max`. Default `min`.
    #[schemars(range(min = 1))]
    pub desired: Option<Spanned<i64>>,
    /// Size of each node's encrypted gp3 root volume in GiB. Default 30.
    #[schemars(range(min = 8, max = 16384))]
    pub disk_gb: Option<Spanned<i64>>,
    /// "flatcar-stable" (default), "flatcar-beta", "flatcar-alpha", or an
    /// explicit AMI id "ami-...". A channel is resolved to an AMI at plan
    /// time and then kept until you ask for a newer one.
    pub image: Option<Spanned<String>>,
    /// What one node costs an hour, in USD: what consolidation saves by
    /// terminating one. Default: the instance type's on-demand Linux price
    /// in us-east-1, an estimate; set your own for another region, a
    /// savings plan or spot.
    #[schemars(range(min = 0.0))]
    pub hourly_cost: Option<Spanned<f64>>,
    /// Draining and terminating nodes whose replicas all fit elsewhere.
    /// `false` turns it off. Default { budget = "10%", min-savings = 10,
    /// after = "10m" }.
    pub consolidation: Option<Spanned<RawConsolidation>>,
}

/// Consolidation: on, off, or with settings.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(
    untagged,
    expecting = "true, false, or a table such as { budget = 1, min-savings = 20, after = \"10m\" }"
)]
pub enum RawConsolidation {
    Enabled(bool),
    Settings(RawConsolidationSettings),
}

/// How far consolidation may go.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawConsolidationSettings {
    /// Nodes draining at once, at most: a count (1) or a share of the
    /// nodes ("10%", at least one). Default "10%".
    pub budget: Option<RawBudget>,
    /// The least a drain must save a month, in USD: a node whose
    /// termination saves less is left alone, so consolidation does not
    /// churn. Default 10.
    #[schemars(range(min = 0.0))]
    pub min_savings: Option<f64>,
    /// How long the cluster must have been steady (nothing unplaced, no
    /// scaling) before a node is drained, e.g. "10m". Default "10m".
    pub after: Option<String>,
}

/// A disruption budget: a node count, or a share such as "10%".
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged, expecting = "a count such as 1, or a share such as \"10%\"")]
pub enum RawBudget {
    Count(i64),
    Share(String),
}

/// An app: one git repository deployed to the cluster.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", expecting = "a table")]
pub struct RawApp {
    /// The branch whose pushes deploy. Default "main".
    pub branch: Option<Spanned<String>>,
    /// The app's microservices, by name. Names are DNS labels.
    pub services: Option<Named<RawService>>,
}

/// A microservice: one container image of an app.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", expecting = "a table")]
pub struct RawService {
    /// Docker build context inside the app's repository, built on every push
    /// ("." for the root). Exactly one of `build` and `image`.
    pub build: Option<Spanned<String>>,
    /// A prebuilt image reference, e.g. "ghcr.io/acme/api:1.4.2". Exactly one
    /// of `build` and `image`.
    pub image: Option<Spanned<String>>,
    /// Overrides the image's command, e.g. ["bin/worker", "--queue", "mail"].
    pub command: Option<Vec<Spanned<String>>>,
    /// A command run once, from the new image with the new environment,
    /// before any replica moves on every deploy that changes this
    /// service's image (a database migration): "bin/migrate" (words split
    /// at spaces) or ["bin/migrate", "--all"]. A failure refuses the push
    /// and changes nothing. Only for a service built on push.
    pub release: Option<Spanned<RawCommand>>,
    /// The container port the service listens on. Services without a port
    /// (workers) get no DNS names and are checked by their process only.
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<Spanned<i64>>,
    /// The port published on every node that runs the service; required
    /// for public names served by DNS (`cluster.ingress = "dns"`, or
    /// `protocol = "tcp"`). Unique across the cluster, and at most one
    /// replica of the service runs on a node.
    #[schemars(range(min = 1, max = 65535))]
    pub host_port: Option<Spanned<i64>>,
    /// Names in the cluster's `public-domain` where the internet reaches
    /// this service: labels such as "www", or "@" for the apex. Through the
    /// load balancer over HTTPS, or (`ingress = "dns"`) at the nodes.
    pub public: Option<Vec<Spanned<String>>>,
    /// What the public names serve: "http" (default; behind the load
    /// balancer, over HTTPS) or "tcp" (any protocol: the names point at
    /// the nodes, on `host-port`).
    #[schemars(regex(pattern = r"^(http|tcp)$"))]
    pub protocol: Option<Spanned<String>>,
    /// CPU requested per replica: "500m" (millicores) or a number of vCPUs
    /// (0.5, 2). Default "250m".
    pub cpu: Option<Spanned<RawCpu>>,
    /// Memory requested per replica, in Mi or Gi ("512Mi", "2Gi"). Also the
    /// container's hard limit. Default "256Mi".
    #[schemars(regex(pattern = r"^[0-9]+(\.[0-9]+)?(Mi|Gi)$"))]
    pub memory: Option<Spanned<String>>,
    /// A fixed replica count, or bounds { min, max } for autoscaling. Default 1.
    pub replicas: Option<Spanned<RawReplicas>>,
    /// Autoscaling policy, used when `replicas` has bounds. Default
    /// { target-cpu = 70 }.
    pub scale: Option<Spanned<RawScale>>,
    /// How the kick server checks each replica. Default: a TCP connect to
    /// `port` (or, without a port, that the container runs).
    pub health: Option<Spanned<RawHealth>>,
    /// Environment variables, written into the unit in plain text. Never put
    /// secrets here: use `secrets`.
    pub env: Option<BTreeMap<Spanned<String>, Spanned<RawEnvValue>>>,
    /// Environment variables whose values are fetched at start from SSM
    /// Parameter Store: references such as "ssm:/acme/blog/database-url",
    /// never values.
    pub secrets: Option<BTreeMap<Spanned<String>, Spanned<String>>>,
    /// Services of the same app that must be started first.
    pub depends_on: Option<Vec<Spanned<String>>>,
    /// Keeps the service where it is: consolidation never moves a stateful
    /// service. Default false.
    pub stateful: Option<Spanned<bool>>,
    /// Named Docker volumes on the node, mounted at container paths, e.g.
    /// { data = "/data" }. The data stays on the node: pair with `stateful`.
    pub volumes: Option<BTreeMap<Spanned<String>, Spanned<String>>>,
    /// How a new release replaces the running replicas (on `git push` and
    /// `huxley rollback`). Default: one extra replica at a time, none
    /// missing, 5 minutes for each to become healthy.
    pub deploy: Option<Spanned<RawDeploy>>,
}

/// A deploy's pace.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", expecting = "a table")]
pub struct RawDeploy {
    /// New replicas started above the replica count at once: a count (1)
    /// or a share of the replicas ("25%", rounded up). Default 1.
    pub max_surge: Option<Spanned<RawBudget>>,
    /// Replicas that may be stopped before their replacement is healthy: a
    /// count or a share (rounded up). Default 0: capacity never drops.
    pub max_unavailable: Option<Spanned<RawBudget>>,
    /// How long new replicas have to pass their health check before the
    /// deploy is rolled back, e.g. "2m". Default "5m".
    pub timeout: Option<Spanned<String>>,
    /// How long clients may keep the service's DNS answer (its records'
    /// TTL), and so how long a replica leaving a rollout keeps running
    /// after Route53 has dropped it everywhere, e.g. "10s". Default "30s".
    pub drain: Option<Spanned<String>>,
    /// How long the image's build on `git push` may take before it is
    /// stopped and the push refused, e.g. "30m". Default "15m"; at most an
    /// hour.
    pub build_timeout: Option<Spanned<String>>,
    /// How long the service's `release` command may run before it is
    /// stopped and the push refused, e.g. "30m". Default "10m"; at most an
    /// hour.
    pub release_timeout: Option<Spanned<String>>,
}

/// A command: words split at spaces, or an array of them.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(
    untagged,
    expecting = "a command such as \"bin/migrate\" or [\"bin/migrate\", \"--all\"]"
)]
pub enum RawCommand {
    Text(String),
    Words(Vec<String>),
}

/// CPU as "500m" or as a number of vCPUs.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged, expecting = "a CPU amount such as \"500m\" or 0.5")]
pub enum RawCpu {
    Text(String),
    Number(f64),
}

/// An environment value: strings, numbers and booleans are all accepted and
/// passed to the container as text.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged, expecting = "a string, number or boolean")]
pub enum RawEnvValue {
    Text(String),
    Integer(i64),
    Float(f64),
    Bool(bool),
}

/// A fixed count, or bounds for autoscaling.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(
    untagged,
    expecting = "a replica count such as 3, or bounds such as { min = 2, max = 8 }"
)]
pub enum RawReplicas {
    Fixed(i64),
    Range(RawReplicaRange),
}

/// Replica bounds for autoscaling.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawReplicaRange {
    /// The fewest replicas.
    #[schemars(range(min = 0))]
    pub min: i64,
    /// The most replicas.
    #[schemars(range(min = 1))]
    pub max: i64,
}

/// When to add or remove replicas.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", expecting = "a table")]
pub struct RawScale {
    /// Average CPU use, in percent of the request, that the kick server
    /// keeps replicas near.
    #[schemars(range(min = 1, max = 100))]
    pub target_cpu: Option<Spanned<i64>>,
    /// Average memory use, in percent of the request, to keep replicas near.
    #[schemars(range(min = 1, max = 100))]
    pub target_memory: Option<Spanned<i64>>,
    /// How long use must stay low before replicas are removed, e.g. "5m":
    /// removing is slower than adding, so a dip does not drop capacity a
    /// spike needs back. Default "5m".
    pub scale_in_after: Option<Spanned<String>>,
}

/// A health check: `http` or `tcp`, with timing.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", expecting = "a table")]
pub struct RawHealth {
    /// An HTTP path on `port` that answers 2xx when healthy, e.g. "/healthz".
    pub http: Option<Spanned<String>>,
    /// A TCP port that accepts connections when healthy: the service's `port`.
    #[schemars(range(min = 1, max = 65535))]
    pub tcp: Option<Spanned<i64>>,
    /// Time between checks, e.g. "10s". Default "10s".
    pub interval: Option<Spanned<String>>,
    /// How long one check may take, shorter than `interval`. Default "2s".
    pub timeout: Option<Spanned<String>>,
    /// Consecutive passes that make a replica healthy. Default 2.
    #[schemars(range(min = 1, max = 10))]
    pub healthy: Option<Spanned<i64>>,
    /// Consecutive failures that make a replica unhealthy. Default 3.
    #[schemars(range(min = 1, max = 10))]
    pub unhealthy: Option<Spanned<i64>>,
    /// Time after start during which failures do not count, e.g. "30s".
    /// Default "0s".
    pub grace: Option<Spanned<String>>,
}
