//! The `[cluster]` table: name, region, zones, network, admin access, keys.

use std::collections::BTreeMap;
use std::ops::Range;

use ipnet::{IpNet, Ipv4Net};

use super::Checker;
use crate::config::names;
use crate::config::raw::{RawCluster, RawConfig};
use crate::config::spanned::Spanned;
use crate::diagnostic::Diagnostic;
use crate::model::{Cluster, Ingress, aws};

impl Checker<'_> {
    pub(super) fn cluster(&mut self, raw: &RawConfig) -> Option<Cluster> {
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

        let name = self.cluster_name(rc, table, head.clone());

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

        let (public_domain, private_domain) = self.domains(rc, name.as_deref());

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
        let control = self.control(rc.control.as_ref());
        let log_retention_days = self.log_retention(rc.logs.as_ref());
        let ingress = self.ingress(rc, region.as_deref());

        Some(Cluster {
            name: name?,
            region: region?,
            availability_zones: zones?,
            vpc_cidr: vpc_cidr?,
            public_domain,
            ingress: ingress?,
            private_domain: private_domain?,
            admin_cidrs: admin_cidrs?,
            ssh_keys: ssh_keys?,
            // Checked with the apps they name (`deployers`).
            deployers: Vec::new(),
            nodes: nodes?,
            control: control?,
            log_retention_days: log_retention_days?,
            access_logs: rc
                .logs
                .as_ref()
                .and_then(|l| l.value.access_logs.as_ref())
                .is_some_and(|a| a.value),
        })
    }

    /// The cluster's name: a DNS label, not AWS's reserved prefix.
    fn cluster_name(
        &mut self,
        rc: &RawCluster,
        table: &Range<usize>,
        head: Range<usize>,
    ) -> Option<String> {
        let place = "`[cluster]`";
        let name = self
            .required(&rc.name, table, head, "name", place, "name = \"acme\"")
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
        name
    }

    /// `ingress` and `certificate-arn`: the load balancer (by default) with
    /// the certificate named or the one apply requests, or DNS.
    fn ingress(&mut self, rc: &RawCluster, region: Option<&str>) -> Option<Ingress> {
        let dns = match &rc.ingress {
            None => false,
            Some(i) if i.value == "alb" => false,
            Some(i) if i.value == "dns" => true,
            Some(i) => {
                self.push(
                    Diagnostic::error(format!("unknown ingress `{}`", i.value))
                        .at(i.span.clone(), "expected \"alb\" or \"dns\"")
                        .help("\"alb\" serves public HTTP services over HTTPS through a load balancer; \"dns\" points public names at the nodes"),
                );
                return None;
            }
        };
        let Some(arn) = &rc.certificate_arn else {
            return Some(if dns {
                Ingress::Dns
            } else {
                Ingress::LoadBalancer {
                    certificate_arn: None,
                }
            });
        };
        if dns {
            let ingress = rc.ingress.as_ref().map_or(0..0, |i| i.span.clone());
            self.push(
                Diagnostic::warning("`certificate-arn` has no effect with `ingress = \"dns\"`")
                    .at(arn.span.clone(), "no load balancer serves it")
                    .also(ingress, "public names point at the nodes")
                    .help("remove `certificate-arn`, or use `ingress = \"alb\"`"),
            );
            return Some(Ingress::Dns);
        }
        let checked = names::certificate_arn(&arn.value).and_then(|in_region| match region {
            Some(region) if region != in_region => Err(format!(
                "this certificate is in {in_region}; the load balancer in {region} can serve only a certificate of its own region"
            )),
            _ => Ok(()),
        });
        match checked {
            Ok(()) => Some(Ingress::LoadBalancer {
                certificate_arn: Some(arn.value.clone()),
            }),
            Err(reason) => {
                self.push(
                    Diagnostic::error(format!(
                        "`{}` is not an ACM certificate the cluster can use",
                        arn.value
                    ))
                    .at(arn.span.clone(), reason)
                    .help("request or import the certificate in ACM in the cluster's region and name its ARN, or leave `certificate-arn` out: `huxley apply` then requests one for the public names"),
                );
                None
            }
        }
    }

    /// `logs.access-logs = true` on a cluster with no load balancer: there
    /// is nothing to log (said once the whole config is known).
    pub(super) fn access_logs_without_load_balancer(
        &mut self,
        raw: &RawConfig,
        config: &crate::model::Config,
    ) {
        let Some(asked) = raw
            .cluster
            .as_ref()
            .and_then(|c| c.value.logs.as_ref())
            .and_then(|l| l.value.access_logs.as_ref())
            .filter(|a| a.value)
        else {
            return;
        };
        if config.load_balanced().next().is_some() {
            return;
        }
        let (why, help) = if config.cluster.ingress == Ingress::Dns {
            (
                "`ingress = \"dns\"`: public names point at the nodes",
                "remove `access-logs`, or set `ingress = \"alb\"` to serve public HTTP names through a load balancer",
            )
        } else {
            (
                "no service has public HTTP names",
                "remove `access-logs`, or give a service `public` names served over HTTP",
            )
        };
        self.push(
            Diagnostic::warning("`access-logs` has no effect without a load balancer")
                .at(asked.span.clone(), why)
                .help(help),
        );
    }

    /// The public domain, and the private one (by default `<name>.cluster`),
    /// which must differ from it.
    fn domains(&mut self, rc: &RawCluster, name: Option<&str>) -> (Option<String>, Option<String>) {
        let public_domain = rc.public_domain.as_ref().and_then(|d| {
            let value = d.value.trim_end_matches('.').to_owned();
            self.check(names::domain(&value), &d.span, || {
                format!("`{}` is not a valid domain name", d.value)
            })
            .map(|()| value)
        });
        let private_domain = match &rc.private_domain {
            None => name.map(|n| format!("{n}.cluster")),
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
        (public_domain, private_domain)
    }

    pub(super) fn region(&mut self, region: &Spanned<String>) -> Option<String> {
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

    pub(super) fn zones(
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

    pub(super) fn vpc_cidr(&mut self, cidr: &Spanned<String>) -> Option<Ipv4Net> {
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

    pub(super) fn admin_cidrs(&mut self, cidrs: &[Spanned<String>]) -> Option<Vec<IpNet>> {
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

    /// `[[cluster.deployers]]`: each a public key that may push to the
    /// apps it names (every app when it names none), never a key that also
    /// logs in to the nodes, each key once.
    pub(super) fn deployers(&mut self, raw: &RawConfig) -> Vec<crate::model::Deployer> {
        let Some(cluster) = &raw.cluster else {
            return Vec::new();
        };
        let apps: Vec<String> = raw
            .apps
            .iter()
            .flatten()
            .map(|(name, _)| name.value.clone())
            .collect();
        let logins: Vec<&str> = cluster
            .value
            .ssh_keys
            .iter()
            .flatten()
            .filter_map(|k| key_body(&k.value))
            .collect();
        let mut seen: Vec<(&str, Range<usize>)> = Vec::new();
        let mut out = Vec::new();
        for entry in cluster.value.deployers.iter().flatten() {
            let Some(key) = self.required(
                &entry.value.key,
                &entry.span,
                entry.span.clone(),
                "key",
                "a `[[cluster.deployers]]` entry",
                "key = \"ssh-ed25519 AAAA... ci@acme\"",
            ) else {
                continue;
            };
            if self.ssh_keys(std::slice::from_ref(key)).is_none() {
                continue;
            }
            let body = key_body(&key.value).unwrap_or_default();
            if logins.contains(&body) {
                self.push(
                    Diagnostic::error("a deploy key cannot also log in to the nodes")
                        .at(key.span.clone(), "this key is in `ssh-keys` too")
                        .help("use a key of its own for pushes: a login key is root on every node, a deploy key only pushes"),
                );
                continue;
            }
            if let Some((_, first)) = seen.iter().find(|(b, _)| *b == body) {
                self.push(
                    Diagnostic::error("this key is a deployer twice")
                        .at(key.span.clone(), "again here")
                        .also(first.clone(), "first here")
                        .help("list its apps in one entry"),
                );
                continue;
            }
            seen.push((body, key.span.clone()));
            let mut named = Vec::new();
            for app in entry.value.apps.iter().flatten() {
                if apps.contains(&app.value) {
                    named.push(app.value.clone());
                } else {
                    self.push(
                        Diagnostic::error(format!("no app `{}` to push to", app.value))
                            .at(app.span.clone(), "not in [apps]")
                            .help(format!("the apps are: {}", apps.join(", "))),
                    );
                }
            }
            named.sort();
            named.dedup();
            out.push(crate::model::Deployer {
                key: key.value.trim().to_owned(),
                apps: if entry.value.apps.is_some() {
                    named
                } else {
                    apps.clone()
                },
            });
        }
        out
    }

    pub(super) fn ssh_keys(&mut self, keys: &[Spanned<String>]) -> Option<Vec<String>> {
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
            if key.value.trim().chars().any(char::is_control) {
                self.push(
                    Diagnostic::error("an SSH key holds a line break or another control character")
                        .at(key.span.clone(), "one key is one line")
                        .help("put each key in its own string"),
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
}

/// The base64 part of a public key, which names it whatever its comment.
fn key_body(key: &str) -> Option<&str> {
    key.split_whitespace().nth(1)
}
