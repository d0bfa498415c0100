//! Stage 2: [`RawConfig`] → [`Config`], reporting every problem at once.
//!
//! Each key is checked on its own and problems are collected, never
//! returned early, so one run shows them all. Checks that span services
//! (host-port and public-name clashes, dependencies and their cycles, unit
//! names, capacity) run on whatever parts were valid, with the spans of both
//! sides of a clash. A [`Config`] comes out only when there is no error.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net};

use super::names;
use super::parse::Rejected;
use super::raw::{
    RawApp, RawBudget, RawCluster, RawConfig, RawConsolidation, RawCpu, RawDeploy, RawEnvValue,
    RawHealth, RawNodes, RawReplicas, RawService,
};
use super::spanned::Spanned;
use crate::diagnostic::Diagnostic;
use crate::model::{
    self, App, Cluster, Config, Consolidation, FlatcarChannel, Health, HealthCheck, NodeImage,
    Nodes, Replicas, Scale, SecretRef, Service, Source, aws,
};
use crate::spec::kick::{Budget, DeployPolicy};
use crate::spec::quantity;

/// How long use must stay low before replicas are removed, by default: as
/// Kubernetes' horizontal autoscaler's scale-down stabilization.
pub const DEFAULT_SCALE_IN_AFTER: Duration = Duration::from_secs(300);

/// What stage 2 produced.
#[derive(Debug)]
pub struct Validated {
    /// Present only when there is no error.
    pub config: Option<Config>,
    pub diagnostics: Vec<Diagnostic>,
    /// Spans holding secret values written in plain text: never echoed.
    pub redact: Vec<Range<usize>>,
}

/// Validates a raw config; `source` is the text it was read from.
pub fn validate(source: &str, raw: &RawConfig, rejected: &Rejected) -> Validated {
    let mut checker = Checker {
        source,
        rejected,
        public_domain_declared: raw.cluster.as_ref().is_some_and(|c| {
            c.value.public_domain.is_some() || rejected.contains(&c.span, "public-domain")
        }),
        cluster_name: raw
            .cluster
            .as_ref()
            .and_then(|c| c.value.name.as_ref())
            .map_or_else(|| "<cluster>".to_owned(), |n| n.value.clone()),
        diagnostics: Vec::new(),
        redact: Vec::new(),
    };
    let cluster = checker.cluster(raw);
    let apps = checker.apps(raw, cluster.as_ref());
    let config = match (cluster, apps) {
        (Some(cluster), Some(apps)) if !checker.has_errors() => Some(Config { cluster, apps }),
        _ => None,
    };
    Validated {
        config,
        diagnostics: checker.diagnostics,
        redact: checker.redact,
    }
}

struct Checker<'a> {
    source: &'a str,
    rejected: &'a Rejected,
    /// Whether `[cluster]` names a public zone, valid or not.
    public_domain_declared: bool,
    /// The cluster's name as written, for examples in hints.
    cluster_name: String,
    diagnostics: Vec<Diagnostic>,
    redact: Vec<Range<usize>>,
}

/// Names that suggest a secret when they appear in `env`.
const SECRET_WORDS: [&str; 7] = [
    "PASSWORD",
    "PASSWD",
    "SECRET",
    "TOKEN",
    "API_KEY",
    "PRIVATE_KEY",
    "CREDENTIALS",
];

/// One service's pieces, kept for the checks across services.
struct ServiceEntry<'r> {
    app: &'r Spanned<String>,
    name: &'r Spanned<String>,
    raw: &'r RawService,
    model: Option<Service>,
}

impl<'a> Checker<'a> {
    fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }

    fn push(&mut self, diagnostic: Diagnostic) {
        self.diagnostics.push(diagnostic);
    }

    /// The first line of a span: where a table starts.
    fn header(&self, span: &Range<usize>) -> Range<usize> {
        let start = span.start.min(self.source.len());
        let end = self.source[start..]
            .find('\n')
            .map_or(self.source.len(), |i| start + i)
            .min(span.end.max(start + 1))
            .min(self.source.len());
        start..end
    }

    /// Reports a missing key unless it was present with a rejected value.
    fn required<'v, T>(
        &mut self,
        value: &'v Option<Spanned<T>>,
        table: &Range<usize>,
        anchor: Range<usize>,
        key: &str,
        place: &str,
        example: &str,
    ) -> Option<&'v Spanned<T>> {
        if value.is_none() && !self.rejected.contains(table, key) {
            self.push(
                Diagnostic::error(format!("missing `{key}` in {place}"))
                    .at(anchor, format!("`{key}` is required here"))
                    .help(format!("add `{example}`")),
            );
        }
        value.as_ref()
    }

    /// Reports `result`'s error at `span`; passes its value on.
    fn check<T>(
        &mut self,
        result: Result<T, String>,
        span: &Range<usize>,
        message: impl FnOnce() -> String,
    ) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(reason) => {
                self.push(Diagnostic::error(message()).at(span.clone(), reason));
                None
            }
        }
    }

    /// An integer in `range`, or a diagnostic that names the range.
    fn int_in<T: TryFrom<i64>>(
        &mut self,
        value: &Spanned<i64>,
        range: std::ops::RangeInclusive<i64>,
        what: &str,
    ) -> Option<T> {
        if range.contains(&value.value) {
            T::try_from(value.value).ok()
        } else {
            self.push(Diagnostic::error(format!("{what} is out of range")).at(
                value.span.clone(),
                format!(
                    "{} is not between {} and {}",
                    value.value,
                    range.start(),
                    range.end()
                ),
            ));
            None
        }
    }

    // ----- cluster -------------------------------------------------------

    fn cluster(&mut self, raw: &RawConfig) -> Option<Cluster> {
        let Some(spanned) = &raw.cluster else {
            if !self.rejected.contains(&(0..0), "cluster") {
                self.push(
                    Diagnostic::error("missing the `[cluster]` table")
                        .at(0..0, "expected a [cluster] table in this file")
                        .help("start the file with:\n[cluster]\nname = \"acme\"\nregion = \"us-west-2\"\navailability-zones = [\"us-west-2a\", \"us-west-2b\"]"),
                );
            }
            return None;
        };
        let table = &spanned.span;
        let head = self.header(table);
        let rc: &RawCluster = &spanned.value;
        let place = "`[cluster]`";

        let name = self
            .required(
                &rc.name,
                table,
                head.clone(),
                "name",
                place,
                "name = \"acme\"",
            )
            .and_then(|n| {
                self.check(names::dns_label(&n.value, 28), &n.span, || {
                    format!("cluster name `{}` is not a valid DNS label", n.value)
                })
                .map(|()| n.value.clone())
            });
        if let Some(n) = &name
            && let Some(spanned) = &rc.name
            && n.starts_with("aws")
        {
            self.push(
                Diagnostic::error("cluster names cannot start with `aws`").at(
                    spanned.span.clone(),
                    "AWS reserves this prefix for its own resource names",
                ),
            );
        }

        let region = self
            .required(
                &rc.region,
                table,
                head.clone(),
                "region",
                place,
                "region = \"us-west-2\"",
            )
            .and_then(|r| self.region(r));
        let zones = self
            .required(
                &rc.availability_zones,
                table,
                head.clone(),
                "availability-zones",
                place,
                "availability-zones = [\"us-west-2a\", \"us-west-2b\"]",
            )
            .and_then(|zones| self.zones(zones, region.as_deref()));

        let vpc_cidr = match &rc.vpc_cidr {
            None => {
                Some(Ipv4Net::new(std::net::Ipv4Addr::new(10, 0, 0, 0), 16).expect("valid default"))
            }
            Some(cidr) => self.vpc_cidr(cidr),
        };

        let public_domain = rc.public_domain.as_ref().and_then(|d| {
            let value = d.value.trim_end_matches('.').to_owned();
            self.check(names::domain(&value), &d.span, || {
                format!("`{}` is not a valid domain name", d.value)
            })
            .map(|()| value)
        });
        let private_domain = match &rc.private_domain {
            None => name.as_ref().map(|n| format!("{n}.cluster")),
            Some(d) => {
                let value = d.value.trim_end_matches('.').to_owned();
                let checked = self
                    .check(names::domain(&value), &d.span, || {
                        format!("`{}` is not a valid domain name", d.value)
                    })
                    .map(|()| value);
                if let Some(private) = &checked {
                    if public_domain.as_deref() == Some(private.as_str()) {
                        self.push(
                            Diagnostic::error("the private and public domains are the same")
                                .at(d.span.clone(), "private zone")
                                .also(rc.public_domain.as_ref().map_or(0..0, |p| p.span.clone()), "public zone")
                                .help("use a name of its own for the private zone, such as \"acme.internal\""),
                        );
                    }
                    if private.ends_with(".local") {
                        self.push(
                            Diagnostic::warning("`.local` is reserved for multicast DNS")
                                .at(
                                    d.span.clone(),
                                    "resolvers may never ask Route53 for this name",
                                )
                                .help("use `.internal` instead"),
                        );
                    }
                }
                checked
            }
        };

        let admin_cidrs = self.admin_cidrs(rc.admin_cidrs.as_deref().unwrap_or_default());
        let ssh_keys = self.ssh_keys(rc.ssh_keys.as_deref().unwrap_or_default());
        let nodes = self
            .required(
                &rc.nodes,
                table,
                head,
                "nodes",
                place,
                "[cluster.nodes] with instance-type, min and max",
            )
            .and_then(|nodes| self.nodes(nodes));

        Some(Cluster {
            name: name?,
            region: region?,
            availability_zones: zones?,
            vpc_cidr: vpc_cidr?,
            public_domain,
            private_domain: private_domain?,
            admin_cidrs: admin_cidrs?,
            ssh_keys: ssh_keys?,
            nodes: nodes?,
        })
    }

    fn region(&mut self, region: &Spanned<String>) -> Option<String> {
        let value = &region.value;
        if aws::REGIONS.contains(&value.as_str()) {
            return Some(value.clone());
        }
        let suggestion = names::did_you_mean(value, aws::REGIONS.iter().copied());
        if aws::is_region_shaped(value) {
            let d = Diagnostic::warning(format!("`{value}` is not a region Huxley knows"))
                .at(region.span.clone(), "unknown region");
            self.push(match suggestion {
                Some(s) => d.help(format!("did you mean `{s}`?")),
                None => d.note("if AWS opened it recently, this is fine"),
            });
            return Some(value.clone());
        }
        let d = Diagnostic::error(format!("`{value}` is not an AWS region"))
            .at(region.span.clone(), "not a region name");
        self.push(match suggestion {
            Some(s) => d.help(format!("did you mean `{s}`?")),
            None => d.help("regions look like \"us-west-2\" or \"eu-central-1\""),
        });
        None
    }

    fn zones(
        &mut self,
        zones: &Spanned<Vec<Spanned<String>>>,
        region: Option<&str>,
    ) -> Option<Vec<String>> {
        let before = self.diagnostics.len();
        if zones.value.len() < 2 {
            self.push(
                Diagnostic::error("a cluster needs at least two availability zones")
                    .at(zones.span.clone(), format!("{} given", zones.value.len()))
                    .note("a node group in one zone goes down with that zone")
                    .help("list two or more, such as [\"us-west-2a\", \"us-west-2b\"]"),
            );
        }
        let mut seen: BTreeMap<&str, &Range<usize>> = BTreeMap::new();
        for zone in &zones.value {
            if let Some(first) = seen.insert(&zone.value, &zone.span) {
                let first = first.clone();
                self.push(
                    Diagnostic::error(format!(
                        "availability zone `{}` is listed twice",
                        zone.value
                    ))
                    .at(zone.span.clone(), "again here")
                    .also(first, "first here"),
                );
                continue;
            }
            let Some(region) = region else { continue };
            let suffix_ok = zone
                .value
                .strip_prefix(region)
                .is_some_and(|s| s.len() == 1 && s.chars().all(|c| c.is_ascii_lowercase()));
            if !suffix_ok {
                self.push(
                    Diagnostic::error(format!(
                        "`{}` is not an availability zone of `{region}`",
                        zone.value
                    ))
                    .at(zone.span.clone(), format!("not in {region}"))
                    .help(format!(
                        "zones of {region} are named like \"{region}a\", \"{region}b\""
                    )),
                );
            }
        }
        (self.diagnostics.len() == before)
            .then(|| zones.value.iter().map(|z| z.value.clone()).collect())
    }

    fn vpc_cidr(&mut self, cidr: &Spanned<String>) -> Option<Ipv4Net> {
        let parsed: Ipv4Net = match cidr.value.parse() {
            Ok(net) => net,
            Err(_) => {
                let d = Diagnostic::error(format!("`{}` is not an IPv4 CIDR", cidr.value))
                    .at(cidr.span.clone(), "expected an address and a prefix length");
                self.push(d.help("write it like \"10.40.0.0/16\""));
                return None;
            }
        };
        if !(16..=24).contains(&parsed.prefix_len()) {
            self.push(
                Diagnostic::error("the VPC range must have a prefix from /16 to /24")
                    .at(
                        cidr.span.clone(),
                        format!("/{} is outside /16–/24", parsed.prefix_len()),
                    )
                    .note("AWS allows /16 to /28; Huxley needs room for one subnet per zone"),
            );
            return None;
        }
        if parsed.trunc() != parsed {
            self.push(
                Diagnostic::error(format!("`{}` has host bits set", cidr.value))
                    .at(cidr.span.clone(), "not the first address of its range")
                    .help(format!("did you mean \"{}\"?", parsed.trunc())),
            );
            return None;
        }
        if let Ok(containers) = crate::model::CONTAINER_RANGE.parse::<Ipv4Net>()
            && (containers.contains(&parsed) || parsed.contains(&containers))
        {
            self.push(
                Diagnostic::error(format!(
                    "`{parsed}` overlaps the containers' range {containers}"
                ))
                .at(cidr.span.clone(), "the VPC must lie outside it")
                .note("every node's containers get a /24 of that range, routed to the node in the VPC's route table")
                .help("use a range inside 10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16"),
            );
            return None;
        }
        if !parsed.addr().is_private()
            && !Ipv4Net::new(std::net::Ipv4Addr::new(100, 64, 0, 0), 10)
                .is_ok_and(|cgn| cgn.contains(&parsed))
        {
            self.push(
                Diagnostic::warning(format!("`{parsed}` is not a private range"))
                    .at(
                        cidr.span.clone(),
                        "addresses here may clash with the internet",
                    )
                    .help("use a range inside 10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16"),
            );
        }
        Some(parsed)
    }

    fn admin_cidrs(&mut self, cidrs: &[Spanned<String>]) -> Option<Vec<IpNet>> {
        let before = self.diagnostics.len();
        let mut out = Vec::new();
        for cidr in cidrs {
            match cidr.value.parse::<IpNet>() {
                Ok(net) if net.prefix_len() == 0 => self.push(
                    Diagnostic::error(format!(
                        "`{}` opens SSH and the kick API to the whole internet",
                        cidr.value
                    ))
                    .at(cidr.span.clone(), "every address")
                    .help("list your office or VPN ranges instead, such as \"203.0.113.0/24\""),
                ),
                Ok(net) if net.trunc() != net => self.push(
                    Diagnostic::error(format!("`{}` has host bits set", cidr.value))
                        .at(cidr.span.clone(), "not the first address of its range")
                        .help(format!("did you mean \"{}\"?", net.trunc())),
                ),
                Ok(net) => out.push(net),
                Err(_) => {
                    let d = Diagnostic::error(format!("`{}` is not a CIDR", cidr.value))
                        .at(cidr.span.clone(), "expected an address and a prefix length");
                    let d = match cidr.value.parse::<std::net::IpAddr>() {
                        Ok(std::net::IpAddr::V4(_)) => {
                            d.help(format!("for one address write \"{}/32\"", cidr.value))
                        }
                        Ok(std::net::IpAddr::V6(_)) => {
                            d.help(format!("for one address write \"{}/128\"", cidr.value))
                        }
                        Err(_) => d.help("write it like \"203.0.113.0/24\""),
                    };
                    self.push(d);
                }
            }
        }
        (self.diagnostics.len() == before).then_some(out)
    }

    fn ssh_keys(&mut self, keys: &[Spanned<String>]) -> Option<Vec<String>> {
        const TYPES: [&str; 6] = [
            "ssh-ed25519",
            "ssh-rsa",
            "ecdsa-sha2-nistp256",
            "ecdsa-sha2-nistp384",
            "ecdsa-sha2-nistp521",
            "sk-ssh-ed25519@openssh.com",
        ];
        let before = self.diagnostics.len();
        for key in keys {
            if key.value.contains("PRIVATE KEY") {
                self.redact.push(key.span.clone());
                self.push(
                    Diagnostic::error("this is a private key")
                        .at(key.span.clone(), "never share a private key")
                        .help("use the public key: the contents of the `.pub` file, such as ~/.ssh/id_ed25519.pub")
                        .note("treat this key as leaked: it is in this file's history"),
                );
                continue;
            }
            let mut parts = key.value.split_whitespace();
            let kind = parts.next().unwrap_or("");
            let body = parts.next().unwrap_or("");
            let body_ok = body.len() >= 16
                && body
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+/=".contains(c));
            if !TYPES.contains(&kind) || !body_ok {
                self.push(
                    Diagnostic::error("not an SSH public key")
                        .at(key.span.clone(), "expected `<type> <base64> [comment]`")
                        .help(format!(
                            "paste a line of a `.pub` file; types: {}",
                            TYPES.join(", ")
                        )),
                );
            }
        }
        (self.diagnostics.len() == before)
            .then(|| keys.iter().map(|k| k.value.trim().to_owned()).collect())
    }

    fn nodes(&mut self, spanned: &Spanned<RawNodes>) -> Option<Nodes> {
        let table = &spanned.span;
        let head = self.header(table);
        let raw = &spanned.value;
        let place = "`[cluster.nodes]`";
        let instance_type = self
            .required(
                &raw.instance_type,
                table,
                head.clone(),
                "instance-type",
                place,
                "instance-type = \"m6i.large\"",
            )
            .and_then(|t| self.instance_type(t));
        let min = self
            .required(&raw.min, table, head.clone(), "min", place, "min = 2")
            .and_then(|v| self.int_in::<u32>(v, 1..=1000, "nodes.min"));
        let max = self
            .required(&raw.max, table, head, "max", place, "max = 10")
            .and_then(|v| self.int_in::<u32>(v, 1..=1000, "nodes.max"));
        let desired = raw
            .desired
            .as_ref()
            .map(|v| (v, self.int_in::<u32>(v, 1..=1000, "nodes.desired")));
        if let (Some(lo), Some(hi), Some(min_raw), Some(max_raw)) = (min, max, &raw.min, &raw.max)
            && lo > hi
        {
            self.push(
                Diagnostic::error("nodes.min is greater than nodes.max")
                    .at(min_raw.span.clone(), format!("min = {lo}"))
                    .also(max_raw.span.clone(), format!("max = {hi}"))
                    .help("make min at most max"),
            );
        }
        let desired = match desired {
            None => min,
            Some((raw_desired, Some(d))) => {
                if let (Some(lo), Some(hi)) = (min, max)
                    && !(lo..=hi).contains(&d)
                {
                    self.push(Diagnostic::error("nodes.desired is outside min..max").at(
                        raw_desired.span.clone(),
                        format!("{d} is not between {lo} and {hi}"),
                    ));
                }
                Some(d)
            }
            Some((_, None)) => None,
        };
        let disk_gb = match &raw.disk_gb {
            None => Some(30),
            Some(v) => self.int_in::<u32>(v, 8..=16384, "nodes.disk-gb"),
        };
        let image = match &raw.image {
            None => Some(NodeImage::Flatcar(FlatcarChannel::Stable)),
            Some(image) => self.node_image(image),
        };
        let hourly_cost = match &raw.hourly_cost {
            Some(cost) => self.money(cost, "nodes.hourly-cost"),
            None => instance_type.map(aws::hourly_cost),
        };
        let consolidation = self.consolidation(raw.consolidation.as_ref());
        Some(Nodes {
            instance_type: instance_type?,
            min: min?,
            max: max?,
            desired: desired?,
            disk_gb: disk_gb?,
            image: image?,
            hourly_cost: hourly_cost?,
            consolidation: consolidation?,
        })
    }

    /// An amount of USD: finite and not negative.
    fn money(&mut self, value: &Spanned<f64>, what: &str) -> Option<f64> {
        if value.value.is_finite() && value.value >= 0.0 && value.value < 1e9 {
            return Some(value.value);
        }
        self.push(
            Diagnostic::error(format!("{what} is out of range"))
                .at(
                    value.span.clone(),
                    format!("{} is not an amount of USD", value.value),
                )
                .help("write a number of dollars, such as 0.096"),
        );
        None
    }

    /// A duration of at most an hour (kick multiplies some), or `default`.
    fn duration_or(
        &mut self,
        value: Option<&Spanned<String>>,
        default: Duration,
        what: &str,
    ) -> Option<Duration> {
        let Some(value) = value else {
            return Some(default);
        };
        let duration = self.check(quantity::duration(&value.value), &value.span, || {
            format!("invalid duration for `{what}`")
        })?;
        if duration > Duration::from_secs(3600) {
            self.push(
                Diagnostic::error(format!("`{what}` is longer than an hour"))
                    .at(value.span.clone(), "too long")
                    .help("use at most \"1h\""),
            );
            return None;
        }
        Some(duration)
    }

    /// `consolidation`: `Some(None)` when turned off.
    fn consolidation(
        &mut self,
        raw: Option<&Spanned<RawConsolidation>>,
    ) -> Option<Option<Consolidation>> {
        let defaults = Consolidation {
            budget: Budget::Percent(10),
            min_monthly_savings: 10.0,
            after: Duration::from_secs(600),
        };
        let Some(raw) = raw else {
            return Some(Some(defaults));
        };
        let settings = match &raw.value {
            RawConsolidation::Enabled(true) => return Some(Some(defaults)),
            RawConsolidation::Enabled(false) => return Some(None),
            RawConsolidation::Settings(settings) => settings,
        };
        // Inside a value that is either a boolean or a table, TOML keeps no
        // places: problems point at the table and name the key.
        let budget = match &settings.budget {
            None => Some(defaults.budget),
            Some(RawBudget::Count(n)) if (1..=1000).contains(n) => {
                u32::try_from(*n).ok().map(Budget::Nodes)
            }
            Some(RawBudget::Share(text))
                if text
                    .strip_suffix('%')
                    .and_then(|p| p.trim().parse::<u8>().ok())
                    .is_some_and(|p| (1..=100).contains(&p)) =>
            {
                text.strip_suffix('%')
                    .and_then(|p| p.trim().parse::<u8>().ok())
                    .map(Budget::Percent)
            }
            Some(other) => {
                let given = match other {
                    RawBudget::Count(n) => n.to_string(),
                    RawBudget::Share(text) => format!("\"{text}\""),
                };
                self.push(
                    Diagnostic::error("consolidation.budget is out of range")
                        .at(raw.span.clone(), format!("budget = {given}"))
                        .help(
                            "write a node count from 1 to 1000, or a share from \"1%\" to \"100%\"",
                        ),
                );
                None
            }
        };
        let min_monthly_savings = match settings.min_savings {
            None => Some(defaults.min_monthly_savings),
            Some(v) => self.money(
                &Spanned {
                    span: raw.span.clone(),
                    value: v,
                },
                "consolidation.min-savings",
            ),
        };
        let after_text = settings.after.as_ref().map(|a| Spanned {
            value: a.clone(),
            span: raw.span.clone(),
        });
        let after = self.duration_or(after_text.as_ref(), defaults.after, "consolidation.after");
        Some(Some(Consolidation {
            budget: budget?,
            min_monthly_savings: min_monthly_savings?,
            after: after?,
        }))
    }

    fn instance_type(&mut self, name: &Spanned<String>) -> Option<&'static aws::InstanceType> {
        if let Some(t) = aws::instance_type(&name.value) {
            if t.memory_mib <= model::NODE_RESERVED_MEMORY_MIB {
                self.push(
                    Diagnostic::error(format!("`{}` is too small for a node", name.value))
                        .at(name.span.clone(), format!("{} MiB of memory", t.memory_mib))
                        .note(format!(
                            "each node keeps {} MiB for the OS and Huxley's agents",
                            model::NODE_RESERVED_MEMORY_MIB
                        ))
                        .help("use t3.small or larger"),
                );
                return None;
            }
            return Some(t);
        }
        let d = Diagnostic::error(format!("unknown instance type `{}`", name.value));
        let d = if aws::is_arm64(&name.value) {
            d.at(name.span.clone(), "an arm64 (Graviton) type")
                .note("Huxley resolves x86_64 Flatcar images; arm64 nodes are not supported yet")
                .help("pick the x86_64 sibling, such as m6i for m6g")
        } else {
            let d = d.at(
                name.span.clone(),
                "not in Huxley's table of EC2 instance types",
            );
            match names::did_you_mean(&name.value, aws::instance_types().map(|t| t.name)) {
                Some(s) => d.help(format!("did you mean `{s}`?")),
                None => d.help("use a t3, m5, m6i, m7i, c5, c6i, c7i, r5, r6i or r7i type (and their `a` variants)"),
            }
        };
        self.push(d);
        None
    }

    fn node_image(&mut self, image: &Spanned<String>) -> Option<NodeImage> {
        let value = image.value.as_str();
        let channel = match value {
            "flatcar-stable" => Some(FlatcarChannel::Stable),
            "flatcar-beta" => Some(FlatcarChannel::Beta),
            "flatcar-alpha" => Some(FlatcarChannel::Alpha),
            _ => None,
        };
        if let Some(channel) = channel {
            return Some(NodeImage::Flatcar(channel));
        }
        let ami_ok = value.strip_prefix("ami-").is_some_and(|hex| {
            (hex.len() == 8 || hex.len() == 17)
                && hex
                    .chars()
                    .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
        });
        if ami_ok {
            return Some(NodeImage::Ami(value.to_owned()));
        }
        let d = Diagnostic::error(format!("`{value}` is not a node image")).at(
            image.span.clone(),
            "expected a Flatcar channel or an AMI id",
        );
        let d = match names::did_you_mean(value, ["flatcar-stable", "flatcar-beta", "flatcar-alpha"]) {
            Some(s) => d.help(format!("did you mean `{s}`?")),
            None => d.help("use \"flatcar-stable\", \"flatcar-beta\", \"flatcar-alpha\" or \"ami-0123456789abcdef0\""),
        };
        self.push(d);
        None
    }

    // ----- apps and services ---------------------------------------------

    fn apps(
        &mut self,
        raw: &RawConfig,
        cluster: Option<&Cluster>,
    ) -> Option<BTreeMap<String, App>> {
        let before = self.diagnostics.len();
        let (no_apps, no_services) = (BTreeMap::new(), BTreeMap::new());
        let raw_apps = raw.apps.as_ref().unwrap_or(&no_apps);
        let mut entries: Vec<ServiceEntry<'_>> = Vec::new();
        let mut apps = BTreeMap::new();
        for (name, app) in raw_apps {
            let valid_name = self
                .check(names::dns_label(&name.value, 63), &name.span, || {
                    format!("app name `{}` is not a valid DNS label", name.value)
                })
                .is_some();
            let branch = self.branch(&app.value);
            let services = app.value.services.as_ref().unwrap_or(&no_services);
            if services.is_empty() {
                self.push(
                    Diagnostic::warning(format!("app `{}` has no services", name.value))
                        .at(name.span.clone(), "nothing to deploy")
                        .help(format!("add a [apps.{}.services.<name>] table", name.value)),
                );
            }
            for (service_name, service) in services {
                let model = self.service(cluster, &name.value, service_name, service);
                entries.push(ServiceEntry {
                    app: name,
                    name: service_name,
                    raw: &service.value,
                    model,
                });
            }
            if valid_name && let Some(branch) = branch {
                apps.insert(
                    name.value.clone(),
                    App {
                        name: name.value.clone(),
                        branch,
                        services: BTreeMap::new(),
                    },
                );
            }
        }

        // Clashes are reported at the later of two places, "first" meaning
        // first in the file, so walk the services in file order.
        entries.sort_by_key(|e| e.name.span.start);
        self.unit_name_clashes(&entries);
        self.host_port_clashes(&entries, cluster);
        self.public_name_clashes(&entries);
        self.dependencies(&entries);
        if let Some(cluster) = cluster {
            self.capacity(&entries, cluster);
        }
        if self.diagnostics[before..].iter().any(Diagnostic::is_error) {
            return None;
        }
        for entry in entries {
            if let (Some(app), Some(service)) = (apps.get_mut(&entry.app.value), entry.model) {
                app.services.insert(service.name.clone(), service);
            }
        }
        Some(apps)
    }

    fn branch(&mut self, app: &RawApp) -> Option<String> {
        match &app.branch {
            None => Some("main".to_owned()),
            Some(b) => self
                .check(names::branch(&b.value), &b.span, || {
                    format!("`{}` is not a branch name", b.value)
                })
                .map(|()| b.value.clone()),
        }
    }

    fn service(
        &mut self,
        cluster: Option<&Cluster>,
        app: &str,
        name: &Spanned<String>,
        spanned: &Spanned<RawService>,
    ) -> Option<Service> {
        let before = self.diagnostics.len();
        let raw = &spanned.value;
        let place = format!("`[apps.{app}.services.{}]`", name.value);
        self.check(names::dns_label(&name.value, 63), &name.span, || {
            format!("service name `{}` is not a valid DNS label", name.value)
        });

        let source = self.source_of(raw, name, &place);
        let command = raw
            .command
            .as_ref()
            .map_or_else(Vec::new, |c| c.iter().map(|s| s.value.clone()).collect());
        if let Some(first) = raw
            .command
            .as_ref()
            .and_then(|c| c.iter().find(|s| s.value.is_empty()))
        {
            self.push(
                Diagnostic::error("empty command argument").at(first.span.clone(), "empty string"),
            );
        }
        let port = raw
            .port
            .as_ref()
            .and_then(|p| self.int_in::<u16>(p, 1..=65535, "port"));
        let host_port = raw
            .host_port
            .as_ref()
            .and_then(|p| self.int_in::<u16>(p, 1..=65535, "host-port"));
        if let Some(hp) = &raw.host_port
            && raw.port.is_none()
            && !self.rejected.contains(&spanned.span, "port")
        {
            self.push(
                Diagnostic::error(format!("`host-port` needs a `port` in {place}"))
                    .at(hp.span.clone(), "publishes which container port?")
                    .help("add `port = <the port the container listens on>`"),
            );
        }
        let public = self.public_names(raw, &place, &spanned.span);
        let cpu_millis = match &raw.cpu {
            None => Some(250),
            Some(cpu) => {
                let result = match &cpu.value {
                    RawCpu::Text(text) => quantity::cpu_millis_text(text),
                    RawCpu::Number(n) => quantity::cpu_millis_number(*n),
                };
                self.check(result, &cpu.span, || "invalid CPU amount".into())
            }
        };
        let memory_mib = match &raw.memory {
            None => Some(256),
            Some(m) => self
                .check(quantity::memory_mib(&m.value), &m.span, || {
                    format!("invalid memory size `{}`", m.value)
                })
                .and_then(|mib| {
                    if mib < 16 {
                        self.push(
                            Diagnostic::error("memory request too small")
                                .at(m.span.clone(), "Docker needs at least 16Mi for a container"),
                        );
                        None
                    } else {
                        Some(mib)
                    }
                }),
        };
        if let Some(cluster) = cluster {
            self.fits(cluster, raw, cpu_millis, memory_mib);
        }
        let replicas = self.replicas(raw);
        let scale = self.scale(raw, replicas);
        let health = self.health(raw, port);
        let parameters = format!("/{}/{app}", self.cluster_name);
        let env = self.env(raw, &parameters);
        let secrets = self.secrets(raw, &parameters);
        let stateful = raw.stateful.as_ref().is_some_and(|s| s.value);
        let volumes = self.volumes(raw, stateful);
        let deploy = self.deploy(raw.deploy.as_ref(), replicas);
        if let (Some(d), Some(image)) = (&raw.deploy, &raw.image) {
            self.push(
                Diagnostic::warning("`deploy` has no effect on a prebuilt image")
                    .at(d.span.clone(), "only a `git push` rolls out a release")
                    .also(image.span.clone(), "this image changes with `huxley apply`")
                    .help("remove `deploy`, or build the service on push with `build`"),
            );
        }
        let depends_on = raw
            .depends_on
            .as_ref()
            .map_or_else(Vec::new, |d| d.iter().map(|s| s.value.clone()).collect());

        if self.diagnostics[before..].iter().any(Diagnostic::is_error) {
            return None;
        }
        Some(Service {
            name: name.value.clone(),
            source: source?,
            command,
            port,
            host_port,
            public: public?,
            cpu_millis: cpu_millis?,
            memory_mib: memory_mib?,
            replicas: replicas?,
            scale,
            health: health?,
            env: env?,
            secrets: secrets?,
            depends_on,
            stateful,
            volumes: volumes?,
            deploy: deploy?,
        })
    }

    /// `deploy`: the pace of a rollout, which must make progress.
    fn deploy(
        &mut self,
        raw: Option<&Spanned<RawDeploy>>,
        replicas: Option<Replicas>,
    ) -> Option<DeployPolicy> {
        let defaults = DeployPolicy::default();
        let Some(raw) = raw else {
            return Some(defaults);
        };
        let budget = |this: &mut Self, value: &Option<Spanned<RawBudget>>, what: &str| {
            let Some(value) = value else {
                return Some(None);
            };
            let parsed = match &value.value {
                RawBudget::Count(n) => u32::try_from(*n)
                    .ok()
                    .filter(|n| *n <= 1000)
                    .map(Budget::Nodes),
                RawBudget::Share(text) => text
                    .strip_suffix('%')
                    .and_then(|p| p.trim().parse::<u8>().ok())
                    .filter(|p| *p <= 100)
                    .map(Budget::Percent),
            };
            if parsed.is_none() {
                let given = match &value.value {
                    RawBudget::Count(n) => n.to_string(),
                    RawBudget::Share(text) => format!("\"{text}\""),
                };
                this.push(
                    Diagnostic::error(format!("deploy.{what} is out of range"))
                        .at(value.span.clone(), format!("{what} = {given}"))
                        .help("write a replica count from 0 to 1000, or a share from \"0%\" to \"100%\""),
                );
                return None;
            }
            Some(parsed)
        };
        let surge = budget(self, &raw.value.max_surge, "max-surge");
        let unavailable = budget(self, &raw.value.max_unavailable, "max-unavailable");
        let timeout = self.duration_or(
            raw.value.timeout.as_ref(),
            defaults.timeout,
            "deploy.timeout",
        );
        if let Some(timeout) = &raw.value.timeout
            && timeout_is_zero(timeout)
        {
            self.push(
                Diagnostic::error("deploy.timeout is zero")
                    .at(timeout.span.clone(), "no replica is healthy that fast")
                    .help("give new replicas time to pass their health check, such as \"2m\""),
            );
        }
        let policy = DeployPolicy {
            max_surge: surge?.unwrap_or(defaults.max_surge),
            max_unavailable: unavailable?.unwrap_or(defaults.max_unavailable),
            timeout: timeout?,
        };
        let count = replicas.map_or(1, |r| r.min.max(1) as usize);
        if policy.max_surge.count(count) == 0 && policy.max_unavailable.count(count) == 0 {
            self.push(
                Diagnostic::error("this deploy can never start a new replica")
                    .at(raw.span.clone(), "max-surge and max-unavailable are both 0")
                    .help("allow a surge (`max-surge = 1`, the default) or let a replica go first (`max-unavailable = 1`)"),
            );
            return None;
        }
        Some(policy)
    }

    fn source_of(
        &mut self,
        raw: &RawService,
        name: &Spanned<String>,
        place: &str,
    ) -> Option<Source> {
        match (&raw.build, &raw.image) {
            (Some(build), Some(image)) => {
                self.push(
                    Diagnostic::error(format!("both `build` and `image` in {place}"))
                        .at(build.span.clone(), "built from the repository")
                        .also(image.span.clone(), "and also a prebuilt image")
                        .help("keep exactly one: `build` to build on push, `image` to run a prebuilt image"),
                );
                None
            }
            (None, None) => {
                self.push(
                    Diagnostic::error(format!("neither `build` nor `image` in {place}"))
                        .at(name.span.clone(), "where does this service's image come from?")
                        .help("add `build = \".\"` (a Docker build context in the app's repository) or `image = \"nginx:1.27\"`"),
                );
                None
            }
            (Some(build), None) => {
                let context = build.value.trim_end_matches('/');
                let reason = if context.is_empty() || context.starts_with('/') {
                    Some("must be a path inside the app's repository, such as \".\" or \"web\"")
                } else if context.split('/').any(|part| part == "..") {
                    Some("must not leave the app's repository (`..`)")
                } else {
                    None
                };
                match reason {
                    Some(reason) => {
                        self.push(
                            Diagnostic::error(format!("invalid build context `{}`", build.value))
                                .at(build.span.clone(), reason),
                        );
                        None
                    }
                    None => Some(Source::Build {
                        context: context.to_owned(),
                    }),
                }
            }
            (None, Some(image)) => self
                .check(names::image_reference(&image.value), &image.span, || {
                    format!("`{}` is not a valid image reference", image.value)
                })
                .map(|()| Source::Image {
                    reference: image.value.clone(),
                }),
        }
    }

    fn public_names(
        &mut self,
        raw: &RawService,
        place: &str,
        table: &Range<usize>,
    ) -> Option<Vec<String>> {
        let Some(public) = &raw.public else {
            return Some(Vec::new());
        };
        let before = self.diagnostics.len();
        let mut seen = BTreeMap::new();
        for name in public {
            if let Some(first) = seen.insert(name.value.as_str(), name.span.clone()) {
                self.push(
                    Diagnostic::error(format!("public name `{}` is listed twice", name.value))
                        .at(name.span.clone(), "again here")
                        .also(first, "first here"),
                );
                continue;
            }
            self.check(names::relative_name(&name.value), &name.span, || {
                format!("`{}` is not a valid public name", name.value)
            });
            let kick = format!("kick-{}", self.cluster_name);
            if name.value == kick {
                self.push(
                    Diagnostic::error(format!("public name `{kick}` is reserved"))
                        .at(
                            name.span.clone(),
                            "the kick server registers this name for its external API",
                        )
                        .help("choose another name"),
                );
            }
        }
        if let Some(first) = public.first() {
            if raw.host_port.is_none() && !self.rejected.contains(table, "host-port") {
                self.push(
                    Diagnostic::error(format!("`public` needs a `host-port` in {place}"))
                        .at(
                            first.span.clone(),
                            "public names point at the nodes, on which port?",
                        )
                        .help(
                            "add `host-port = 80` (or the port the load balancer or clients use)",
                        ),
                );
            }
            if !self.public_domain_declared {
                self.push(
                    Diagnostic::error("public names need `cluster.public-domain`")
                        .at(first.span.clone(), "in which zone?")
                        .help("add `public-domain = \"example.com\"` (an existing public Route53 zone) to [cluster]"),
                );
            }
        }
        (self.diagnostics.len() == before).then(|| public.iter().map(|n| n.value.clone()).collect())
    }

    fn fits(&mut self, cluster: &Cluster, raw: &RawService, cpu: Option<u32>, memory: Option<u64>) {
        let nodes = &cluster.nodes;
        let kind = nodes.instance_type.name;
        if let (Some(cpu), Some(span)) = (cpu, raw.cpu.as_ref().map(|c| c.span.clone()))
            && cpu > nodes.allocatable_cpu_millis()
        {
            self.push(
                Diagnostic::error(format!("this CPU request does not fit on one {kind} node"))
                    .at(span, format!("{} requested", quantity::format_cpu(cpu)))
                    .note(format!(
                        "each {kind} node has {} vCPU; {} of it is kept for the OS and agents, leaving {}",
                        nodes.instance_type.vcpus,
                        quantity::format_cpu(model::NODE_RESERVED_CPU_MILLIS),
                        quantity::format_cpu(nodes.allocatable_cpu_millis())
                    ))
                    .help("lower the request or choose a larger instance-type"),
            );
        }
        if let (Some(memory), Some(span)) = (memory, raw.memory.as_ref().map(|m| m.span.clone()))
            && memory > nodes.allocatable_memory_mib()
        {
            self.push(
                Diagnostic::error(format!(
                    "this memory request does not fit on one {kind} node"
                ))
                .at(
                    span,
                    format!("{} requested", quantity::format_memory(memory)),
                )
                .note(format!(
                    "each {kind} node has {}; {} is kept for the OS and agents, leaving {}",
                    quantity::format_memory(nodes.instance_type.memory_mib),
                    quantity::format_memory(model::NODE_RESERVED_MEMORY_MIB),
                    quantity::format_memory(nodes.allocatable_memory_mib())
                ))
                .help("lower the request or choose a larger instance-type"),
            );
        }
    }

    fn replicas(&mut self, raw: &RawService) -> Option<Replicas> {
        let Some(replicas) = &raw.replicas else {
            return Some(Replicas { min: 1, max: 1 });
        };
        let span = replicas.span.clone();
        let (min, max) = match &replicas.value {
            RawReplicas::Fixed(n) => (*n, *n),
            RawReplicas::Range(r) => (r.min, r.max),
        };
        let out_of_range = |n: i64| !(0..=1000).contains(&n);
        if out_of_range(min) || out_of_range(max) {
            self.push(
                Diagnostic::error("replica count out of range")
                    .at(span, "replicas must be between 0 and 1000"),
            );
            return None;
        }
        if min > max {
            self.push(
                Diagnostic::error("replicas.min is greater than replicas.max")
                    .at(span, format!("min = {min}, max = {max}"))
                    .help("make min at most max"),
            );
            return None;
        }
        if max == 0 {
            self.push(
                Diagnostic::warning("this service never runs")
                    .at(span, "0 replicas")
                    .note("set replicas to 1 or more to run it"),
            );
        }
        Some(Replicas {
            min: min as u32,
            max: max as u32,
        })
    }

    fn scale(&mut self, raw: &RawService, replicas: Option<Replicas>) -> Option<Scale> {
        let percent = |this: &mut Self, v: &Option<Spanned<i64>>, what: &str| {
            v.as_ref().and_then(|v| this.int_in::<u8>(v, 1..=100, what))
        };
        match (&raw.scale, replicas) {
            (Some(scale), Some(replicas)) if replicas.min == replicas.max => {
                self.push(
                    Diagnostic::error("`scale` has no room to scale")
                        .at(
                            scale.span.clone(),
                            format!("but replicas is fixed at {}", replicas.min),
                        )
                        .help("give replicas bounds, such as `replicas = { min = 2, max = 8 }`"),
                );
                None
            }
            (Some(scale), _) => {
                let target_cpu_percent = percent(self, &scale.value.target_cpu, "scale.target-cpu");
                let target_memory_percent =
                    percent(self, &scale.value.target_memory, "scale.target-memory");
                let scale_in_after = self.duration_or(
                    scale.value.scale_in_after.as_ref(),
                    DEFAULT_SCALE_IN_AFTER,
                    "scale.scale-in-after",
                );
                if scale.value.target_cpu.is_none() && scale.value.target_memory.is_none() {
                    self.push(
                        Diagnostic::error("`scale` names no target")
                            .at(scale.span.clone(), "scale on what?")
                            .help("add `target-cpu = 60` or `target-memory = 80` (percent of the request)"),
                    );
                }
                Some(Scale {
                    target_cpu_percent,
                    target_memory_percent,
                    scale_in_after: scale_in_after?,
                })
            }
            (None, Some(replicas)) if replicas.min < replicas.max => Some(Scale {
                target_cpu_percent: Some(70),
                target_memory_percent: None,
                scale_in_after: DEFAULT_SCALE_IN_AFTER,
            }),
            (None, _) => None,
        }
    }

    fn health(&mut self, raw: &RawService, port: Option<u16>) -> Option<Health> {
        let default_check = || match port {
            Some(port) => HealthCheck::Tcp { port },
            None => HealthCheck::Running,
        };
        let Some(spanned) = &raw.health else {
            return Some(Health {
                check: default_check(),
                interval: Duration::from_secs(10),
                timeout: Duration::from_secs(2),
                healthy_threshold: 2,
                unhealthy_threshold: 3,
                grace: Duration::ZERO,
            });
        };
        let before = self.diagnostics.len();
        let h: &RawHealth = &spanned.value;
        let check = match (&h.http, &h.tcp) {
            (Some(http), Some(tcp)) => {
                self.push(
                    Diagnostic::error("a health check is `http` or `tcp`, not both")
                        .at(http.span.clone(), "HTTP check")
                        .also(tcp.span.clone(), "TCP check"),
                );
                None
            }
            (Some(http), None) => {
                if !http.value.starts_with('/') {
                    self.push(
                        Diagnostic::error("an HTTP health check path starts with `/`")
                            .at(http.span.clone(), "not a path")
                            .help(format!(
                                "did you mean \"/{}\"?",
                                http.value.trim_start_matches('/')
                            )),
                    );
                }
                if port.is_none() && raw.port.is_none() {
                    self.push(
                        Diagnostic::error("an HTTP health check needs the service's `port`")
                            .at(http.span.clone(), "checked on which port?")
                            .help("add `port = <the port the container listens on>`"),
                    );
                }
                Some(HealthCheck::Http {
                    path: http.value.clone(),
                })
            }
            (None, Some(tcp)) => {
                let tcp_port = self.int_in::<u16>(tcp, 1..=65535, "health.tcp");
                if let (Some(tcp_port), Some(port)) = (tcp_port, port)
                    && tcp_port != port
                {
                    self.push(
                        Diagnostic::error("the TCP health check must use the service's `port`")
                            .at(tcp.span.clone(), format!("{tcp_port} is not the service's port {port}"))
                            .note("the kick server reaches replicas only through the port they expose")
                            .help(format!("write `tcp = {port}`")),
                    );
                }
                if raw.port.is_none() {
                    self.push(
                        Diagnostic::error("a TCP health check needs the service's `port`")
                            .at(tcp.span.clone(), "the service exposes no port")
                            .help("add `port = <the port the container listens on>`"),
                    );
                }
                tcp_port.map(|port| HealthCheck::Tcp { port })
            }
            (None, None) => Some(default_check()),
        };
        let duration =
            |this: &mut Self, v: &Option<Spanned<String>>, default: Duration, what: &str| match v {
                None => Some(default),
                Some(v) => this.check(quantity::duration(&v.value), &v.span, || {
                    format!("invalid duration for `{what}`")
                }),
            };
        let interval = duration(self, &h.interval, Duration::from_secs(10), "interval");
        let timeout = duration(self, &h.timeout, Duration::from_secs(2), "timeout");
        let grace = duration(self, &h.grace, Duration::ZERO, "grace");
        if let (Some(interval), Some(raw_interval)) = (interval, &h.interval)
            && interval < Duration::from_secs(1)
        {
            self.push(
                Diagnostic::error("health checks run at most once a second")
                    .at(raw_interval.span.clone(), "too often"),
            );
        }
        // A check an hour apart notices nothing; and kick multiplies these
        // durations (flap windows), which must stay far from overflow.
        for (value, raw, what) in [
            (interval, &h.interval, "interval"),
            (grace, &h.grace, "grace"),
        ] {
            if let (Some(value), Some(raw)) = (value, raw)
                && value > Duration::from_secs(3600)
            {
                self.push(
                    Diagnostic::error(format!("the health check {what} is longer than an hour"))
                        .at(
                            raw.span.clone(),
                            format!("{} is too long", quantity::format_duration(value)),
                        )
                        .help(format!("give `{what}` at most \"1h\"")),
                );
            }
        }
        if let (Some(interval), Some(timeout)) = (interval, timeout)
            && timeout >= interval
        {
            let span = h
                .timeout
                .as_ref()
                .or(h.interval.as_ref())
                .map_or(spanned.span.clone(), |s| s.span.clone());
            self.push(
                Diagnostic::error("the health check timeout must be shorter than its interval").at(
                    span,
                    format!(
                        "timeout {} ≥ interval {}",
                        quantity::format_duration(timeout),
                        quantity::format_duration(interval)
                    ),
                ),
            );
        }
        let threshold =
            |this: &mut Self, v: &Option<Spanned<i64>>, default: u32, what: &str| match v {
                None => Some(default),
                Some(v) => this.int_in::<u32>(v, 1..=10, what),
            };
        let healthy = threshold(self, &h.healthy, 2, "health.healthy");
        let unhealthy = threshold(self, &h.unhealthy, 3, "health.unhealthy");
        if self.diagnostics.len() != before {
            return None;
        }
        Some(Health {
            check: check?,
            interval: interval?,
            timeout: timeout?,
            healthy_threshold: healthy?,
            unhealthy_threshold: unhealthy?,
            grace: grace?,
        })
    }

    fn env(&mut self, raw: &RawService, parameters: &str) -> Option<BTreeMap<String, String>> {
        let before = self.diagnostics.len();
        let mut out = BTreeMap::new();
        for (key, value) in raw.env.iter().flatten() {
            self.check(names::env_name(&key.value), &key.span, || {
                format!("`{}` is not an environment variable name", key.value)
            });
            let text = match &value.value {
                RawEnvValue::Text(s) => s.clone(),
                RawEnvValue::Integer(i) => i.to_string(),
                RawEnvValue::Float(f) => f.to_string(),
                RawEnvValue::Bool(b) => b.to_string(),
            };
            let upper = key.value.to_ascii_uppercase();
            if text.starts_with("ssm:") {
                self.push(
                    Diagnostic::error(format!("`{}` holds a secret reference in `env`", key.value))
                        .at(value.span.clone(), "`env` values are passed as they are")
                        .help("move it to `secrets`, which resolves references at start"),
                );
            } else if !text.is_empty() && SECRET_WORDS.iter().any(|w| upper.contains(w)) {
                self.redact.push(value.span.clone());
                self.push(
                    Diagnostic::warning(format!("`{}` looks like a secret written in plain text", key.value))
                        .at(value.span.clone(), "this value would be written into the generated unit files")
                        .help(format!(
                            "store it in SSM Parameter Store and reference it: `secrets = {{ {} = \"ssm:{parameters}/{}\" }}`",
                            key.value,
                            key.value.to_ascii_lowercase().replace('_', "-")
                        )),
                );
            }
            if raw
                .secrets
                .as_ref()
                .is_some_and(|s| s.contains_key(key.value.as_str()))
            {
                let other = raw
                    .secrets
                    .as_ref()
                    .and_then(|s| s.keys().find(|k| k.value == key.value))
                    .map_or(0..0, |k| k.span.clone());
                self.push(
                    Diagnostic::error(format!(
                        "`{}` is set in both `env` and `secrets`",
                        key.value
                    ))
                    .at(key.span.clone(), "in env")
                    .also(other, "in secrets")
                    .help("keep one"),
                );
            }
            if text.contains(['\n', '\r', '\0']) {
                self.push(
                    Diagnostic::error(format!("`{}` has a line break in its value", key.value))
                        .at(value.span.clone(), "environment values are one line")
                        .help("encode it (for example as base64) or use a file in the image"),
                );
            }
            out.insert(key.value.clone(), text);
        }
        (self.diagnostics.len() == before).then_some(out)
    }

    fn secrets(
        &mut self,
        raw: &RawService,
        parameters: &str,
    ) -> Option<BTreeMap<String, SecretRef>> {
        let before = self.diagnostics.len();
        let mut out = BTreeMap::new();
        for (key, value) in raw.secrets.iter().flatten() {
            self.check(names::env_name(&key.value), &key.span, || {
                format!("`{}` is not an environment variable name", key.value)
            });
            let Some(parameter) = value.value.strip_prefix("ssm:") else {
                // The value may be the secret itself: never echo it.
                self.redact.push(value.span.clone());
                self.push(
                    Diagnostic::error(format!("secret `{}` is not a reference", key.value))
                        .at(value.span.clone(), "expected `ssm:/path/to/parameter`")
                        .note("secret values must never be written in huxley.toml: they would end up in generated files")
                        .help(format!(
                            "store it with `aws ssm put-parameter --type SecureString --name {parameters}/{0}` and write `{1} = \"ssm:{parameters}/{0}\"`",
                            key.value.to_ascii_lowercase().replace('_', "-"),
                            key.value
                        )),
                );
                continue;
            };
            let valid = parameter.starts_with('/')
                && parameter.len() > 1
                && parameter.len() <= 2048
                && !parameter.ends_with('/')
                && parameter
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.-/".contains(c))
                && !parameter.to_ascii_lowercase().starts_with("/aws")
                && !parameter.to_ascii_lowercase().starts_with("/ssm");
            if !valid {
                self.push(
                    Diagnostic::error(format!("`{parameter}` is not an SSM parameter name"))
                        .at(value.span.clone(), "expected a path such as `/acme/blog/database-url`")
                        .note("parameter names start with `/`, use letters, digits and `_.-/`, and cannot start with /aws or /ssm"),
                );
                continue;
            }
            out.insert(
                key.value.clone(),
                SecretRef::Ssm {
                    parameter: parameter.to_owned(),
                },
            );
        }
        (self.diagnostics.len() == before).then_some(out)
    }

    fn volumes(&mut self, raw: &RawService, stateful: bool) -> Option<BTreeMap<String, String>> {
        let before = self.diagnostics.len();
        let mut out = BTreeMap::new();
        let mut first = None;
        for (name, path) in raw.volumes.iter().flatten() {
            first.get_or_insert(name.span.clone());
            let name_ok = name.value.starts_with(|c: char| c.is_ascii_alphanumeric())
                && name
                    .value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
            if !name_ok {
                self.push(
                    Diagnostic::error(format!("`{}` is not a volume name", name.value)).at(
                        name.span.clone(),
                        "letters, digits, `_`, `.` and `-`, starting with a letter or digit",
                    ),
                );
            }
            if !path.value.starts_with('/') || path.value.split('/').any(|p| p == "..") {
                self.push(
                    Diagnostic::error(format!("`{}` is not a container path", path.value)).at(
                        path.span.clone(),
                        "expected an absolute path such as \"/data\"",
                    ),
                );
            }
            out.insert(name.value.clone(), path.value.clone());
        }
        if let Some(span) = first
            && !stateful
        {
            self.push(
                Diagnostic::warning("volumes on a service that is not `stateful`")
                    .at(span, "this data stays on the node")
                    .note("consolidation may move the service to another node, away from its data")
                    .help("add `stateful = true`"),
            );
        }
        (self.diagnostics[before..].iter().all(|d| !d.is_error())).then_some(out)
    }

    // ----- checks across services ------------------------------------------

    fn unit_name_clashes(&mut self, entries: &[ServiceEntry<'_>]) {
        let mut seen: BTreeMap<String, &ServiceEntry<'_>> = BTreeMap::new();
        for entry in entries {
            let unit = format!("{}-{}", entry.app.value, entry.name.value);
            match seen.get(&unit) {
                Some(first) => self.push(
                    Diagnostic::error(format!(
                        "services `{}.{}` and `{}.{}` would share the unit name `{unit}@.service`",
                        first.app.value, first.name.value, entry.app.value, entry.name.value
                    ))
                    .at(entry.name.span.clone(), "this one")
                    .also(first.name.span.clone(), "clashes with this one")
                    .help("rename one of them"),
                ),
                None => {
                    seen.insert(unit, entry);
                }
            }
        }
    }

    fn host_port_clashes(&mut self, entries: &[ServiceEntry<'_>], cluster: Option<&Cluster>) {
        let reserved = [
            (model::SSH_PORT, "SSH"),
            (model::HOOK_SSH_PORT, "the hook server"),
            (model::KICK_INTERNAL_PORT, "the kick server"),
            (model::KICK_EXTERNAL_PORT, "the kick server's external API"),
        ];
        let mut seen: BTreeMap<i64, &ServiceEntry<'_>> = BTreeMap::new();
        for entry in entries {
            let Some(hp) = &entry.raw.host_port else {
                continue;
            };
            if let Some((_, owner)) = reserved.iter().find(|(p, _)| i64::from(*p) == hp.value) {
                self.push(
                    Diagnostic::error(format!("host port {} is reserved", hp.value))
                        .at(hp.span.clone(), format!("used by {owner} on every node"))
                        .help("choose another host-port"),
                );
                continue;
            }
            match seen.get(&hp.value) {
                Some(first) => {
                    let first_span = first
                        .raw
                        .host_port
                        .as_ref()
                        .map_or(0..0, |p| p.span.clone());
                    self.push(
                        Diagnostic::error(format!("host port {} is published by two services", hp.value))
                            .at(hp.span.clone(), format!("{}.{}", entry.app.value, entry.name.value))
                            .also(first_span, format!("also {}.{}", first.app.value, first.name.value))
                            .note("every node may run any service, so host ports are unique across the cluster")
                            .help("choose another host-port for one of them"),
                    );
                }
                None => {
                    seen.insert(hp.value, entry);
                }
            }
            if let (Some(cluster), Some(service)) = (cluster, &entry.model)
                && service.replicas.min > cluster.nodes.max
            {
                let span = entry
                    .raw
                    .replicas
                    .as_ref()
                    .map_or(hp.span.clone(), |r| r.span.clone());
                self.push(
                    Diagnostic::error("more replicas than nodes for a service with a host-port")
                        .at(span, format!("at least {} replicas", service.replicas.min))
                        .also(
                            hp.span.clone(),
                            "one replica per node, as the port is published",
                        )
                        .note(format!(
                            "the cluster has at most {} nodes",
                            cluster.nodes.max
                        ))
                        .help("lower replicas or raise nodes.max"),
                );
            }
        }
    }

    fn public_name_clashes(&mut self, entries: &[ServiceEntry<'_>]) {
        let mut seen: BTreeMap<&str, (&ServiceEntry<'_>, Range<usize>)> = BTreeMap::new();
        for entry in entries {
            let mut own = BTreeSet::new();
            for name in entry.raw.public.iter().flatten() {
                if !own.insert(name.value.as_str()) {
                    continue; // reported as listed twice
                }
                match seen.get(name.value.as_str()) {
                    Some((first, first_span)) => {
                        let label = if name.value == "@" {
                            "the apex".to_owned()
                        } else {
                            format!("`{}`", name.value)
                        };
                        self.push(
                            Diagnostic::error(format!(
                                "public name {label} is claimed by two services"
                            ))
                            .at(
                                name.span.clone(),
                                format!("{}.{}", entry.app.value, entry.name.value),
                            )
                            .also(
                                first_span.clone(),
                                format!("also {}.{}", first.app.value, first.name.value),
                            )
                            .help("give each service names of its own"),
                        );
                    }
                    None => {
                        seen.insert(&name.value, (entry, name.span.clone()));
                    }
                }
            }
        }
    }

    fn dependencies(&mut self, entries: &[ServiceEntry<'_>]) {
        let mut by_app: BTreeMap<&str, Vec<&ServiceEntry<'_>>> = BTreeMap::new();
        for entry in entries {
            by_app.entry(&entry.app.value).or_default().push(entry);
        }
        for (app, services) in by_app {
            let known: BTreeSet<&str> = services.iter().map(|s| s.name.value.as_str()).collect();
            // Edges whose target exists, with the span of the depends-on entry.
            let mut edges: BTreeMap<&str, Vec<(&str, Range<usize>)>> = BTreeMap::new();
            for entry in &services {
                let mut seen = BTreeSet::new();
                for dep in entry.raw.depends_on.iter().flatten() {
                    let from = entry.name.value.as_str();
                    if dep.value == from {
                        self.push(
                            Diagnostic::error(format!("service `{from}` depends on itself"))
                                .at(dep.span.clone(), "remove this"),
                        );
                    } else if !known.contains(dep.value.as_str()) {
                        let d = Diagnostic::error(format!(
                            "`{}` is not a service of app `{app}`",
                            dep.value
                        ))
                        .at(dep.span.clone(), "unknown service");
                        self.push(
                            match names::did_you_mean(&dep.value, known.iter().copied()) {
                                Some(s) => d.help(format!("did you mean `{s}`?")),
                                None => d.help(format!(
                                    "services of `{app}`: {}",
                                    known.iter().copied().collect::<Vec<_>>().join(", ")
                                )),
                            },
                        );
                    } else if !seen.insert(dep.value.as_str()) {
                        self.push(
                            Diagnostic::warning(format!("`{}` is listed twice", dep.value))
                                .at(dep.span.clone(), "again here"),
                        );
                    } else {
                        edges
                            .entry(from)
                            .or_default()
                            .push((dep.value.as_str(), dep.span.clone()));
                    }
                }
            }
            for cycle in cycles(&edges) {
                let path: Vec<&str> = cycle
                    .iter()
                    .map(|(from, _, _)| *from)
                    .chain(cycle.first().map(|(f, _, _)| *f))
                    .collect();
                let mut d = Diagnostic::error(format!(
                    "dependency cycle in app `{app}`: {}",
                    path.join(" → ")
                ));
                for (i, (from, to, span)) in cycle.iter().enumerate() {
                    let label = format!("`{from}` depends on `{to}`");
                    d = if i == 0 {
                        d.at(span.clone(), label)
                    } else {
                        d.also(span.clone(), label)
                    };
                }
                self.push(d.help("services start in dependency order, so a cycle can never start; remove one of these dependencies"));
            }
        }
    }

    fn capacity(&mut self, entries: &[ServiceEntry<'_>], cluster: &Cluster) {
        let nodes = &cluster.nodes;
        let (mut cpu, mut memory) = (0u64, 0u64);
        for service in entries.iter().filter_map(|e| e.model.as_ref()) {
            cpu += u64::from(service.cpu_millis) * u64::from(service.replicas.min);
            memory += service.memory_mib * u64::from(service.replicas.min);
        }
        let max_cpu = u64::from(nodes.allocatable_cpu_millis()) * u64::from(nodes.max);
        let max_memory = nodes.allocatable_memory_mib() * u64::from(nodes.max);
        if cpu > max_cpu || memory > max_memory {
            let span = cluster_nodes_anchor(entries);
            self.push(
                Diagnostic::error("the services' minimum replicas do not fit in the cluster")
                    .at(span, "too little room")
                    .note(format!(
                        "minimum replicas request {} CPU and {}; {} × {} nodes offer {} CPU and {}",
                        quantity::format_cpu(cpu as u32),
                        quantity::format_memory(memory),
                        nodes.max,
                        nodes.instance_type.name,
                        quantity::format_cpu(max_cpu as u32),
                        quantity::format_memory(max_memory)
                    ))
                    .help("raise nodes.max, choose a larger instance-type, or lower replicas or requests"),
            );
        }
    }
}

/// Where to point a whole-cluster capacity problem: the first service.
/// Whether a written duration parses as zero.
fn timeout_is_zero(value: &Spanned<String>) -> bool {
    quantity::duration(&value.value).is_ok_and(|d| d.is_zero())
}

fn cluster_nodes_anchor(entries: &[ServiceEntry<'_>]) -> Range<usize> {
    entries.first().map_or(0..0, |e| e.name.span.clone())
}

/// A dependency edge: from, to, and the span of the `depends-on` entry.
type Edge<'s> = (&'s str, &'s str, Range<usize>);

/// Every elementary cycle reachable in a dependency graph, once each, as the
/// list of its edges (from, to, span), starting at its smallest name.
fn cycles<'s>(edges: &BTreeMap<&'s str, Vec<(&'s str, Range<usize>)>>) -> Vec<Vec<Edge<'s>>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    fn visit<'s>(
        node: &'s str,
        edges: &BTreeMap<&'s str, Vec<(&'s str, Range<usize>)>>,
        marks: &mut BTreeMap<&'s str, Mark>,
        stack: &mut Vec<Edge<'s>>,
        found: &mut BTreeMap<Vec<&'s str>, Vec<Edge<'s>>>,
    ) {
        marks.insert(node, Mark::Active);
        for (to, span) in edges.get(node).into_iter().flatten() {
            stack.push((node, to, span.clone()));
            match marks.get(to).copied().unwrap_or(Mark::New) {
                Mark::New => visit(to, edges, marks, stack, found),
                Mark::Active => {
                    let start = stack
                        .iter()
                        .position(|(from, _, _)| from == to)
                        .unwrap_or(0);
                    let mut cycle = stack[start..].to_vec();
                    let min = cycle
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, e)| e.0)
                        .map_or(0, |(i, _)| i);
                    cycle.rotate_left(min);
                    found
                        .entry(cycle.iter().map(|e| e.0).collect())
                        .or_insert(cycle);
                }
                Mark::Done => {}
            }
            stack.pop();
        }
        marks.insert(node, Mark::Done);
    }
    let mut marks = BTreeMap::new();
    let mut found = BTreeMap::new();
    for node in edges.keys() {
        if marks.get(node).copied().unwrap_or(Mark::New) == Mark::New {
            visit(node, edges, &mut marks, &mut Vec::new(), &mut found);
        }
    }
    found.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph<'a>(pairs: &[(&'a str, &'a str)]) -> BTreeMap<&'a str, Vec<(&'a str, Range<usize>)>> {
        let mut g: BTreeMap<&str, Vec<(&str, Range<usize>)>> = BTreeMap::new();
        for (i, (a, b)) in pairs.iter().enumerate() {
            g.entry(a).or_default().push((b, i..i + 1));
        }
        g
    }

    fn names(cycles: &[Vec<Edge<'_>>]) -> Vec<Vec<String>> {
        cycles
            .iter()
            .map(|c| c.iter().map(|e| e.0.to_owned()).collect())
            .collect()
    }

    #[test]
    fn finds_a_cycle_once_from_its_smallest_member() {
        let g = graph(&[
            ("web", "api"),
            ("api", "worker"),
            ("worker", "web"),
            ("web", "db"),
        ]);
        assert_eq!(names(&cycles(&g)), [["api", "worker", "web"]]);
    }

    #[test]
    fn no_cycle_in_a_dag() {
        let g = graph(&[("web", "api"), ("api", "db"), ("web", "db")]);
        assert!(cycles(&g).is_empty());
    }

    #[test]
    fn two_separate_cycles() {
        let g = graph(&[("a", "b"), ("b", "a"), ("c", "d"), ("d", "c")]);
        assert_eq!(names(&cycles(&g)), [["a", "b"], ["c", "d"]]);
    }
}
