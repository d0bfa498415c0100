//! The apps and their services: source, names, replicas, scaling, deploys.

use std::collections::BTreeMap;
use std::ops::Range;

use super::{Checker, DEFAULT_SCALE_IN_AFTER, ServiceEntry, timeout_is_zero};
use crate::config::names;
use crate::config::raw::{
    RawApp, RawBudget, RawCommand, RawConfig, RawCpu, RawDeploy, RawReplicas, RawService,
};
use crate::config::spanned::Spanned;
use crate::diagnostic::Diagnostic;
use crate::model::{self, App, Cluster, Replicas, Scale, Service, Source};
use crate::spec::kick::{Budget, DeployPolicy};
use crate::spec::quantity;

/// Host names one listener rule matches, at most (ELB's "condition
/// values per rule").
pub const MAX_RULE_NAMES: usize = 5;

impl Checker<'_> {
    pub(super) fn apps(
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
            if name.value == crate::spec::names::SYSTEM_LOGS {
                self.push(
                    Diagnostic::error(format!("app name `{}` is reserved", name.value))
                        .at(name.span.clone(), "the control plane's log group has this name")
                        .note(format!(
                            "each app logs to /huxley/<cluster>/<app>, and the kick, hook and node daemons to /huxley/<cluster>/{}",
                            crate::spec::names::SYSTEM_LOGS
                        ))
                        .help("choose another name"),
                );
            }
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

    pub(super) fn branch(&mut self, app: &RawApp) -> Option<String> {
        match &app.branch {
            None => Some("main".to_owned()),
            Some(b) => self
                .check(names::branch(&b.value), &b.span, || {
                    format!("`{}` is not a branch name", b.value)
                })
                .map(|()| b.value.clone()),
        }
    }

    pub(super) fn service(
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
        let command = self.command(raw);
        let release = self.release(raw);
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
        let protocol = self.protocol(raw);
        let public = self.public_names(raw, &place, &spanned.span, protocol);
        let protocol = protocol.unwrap_or(model::Protocol::Http);
        // Behind the load balancer nothing is published on the nodes.
        let host_port = host_port.filter(|_| !self.behind_load_balancer_raw(raw));
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
        // `drain` applies to every service (its records' TTL, and replicas
        // that move), the batches to every rollout (a prebuilt service's
        // restart too); only the build's timeout needs a build.
        if let (Some(d), Some(image)) = (&raw.deploy, &raw.image)
            && let Some(build_timeout) = &d.value.build_timeout
        {
            self.push(
                Diagnostic::warning("`build-timeout` has no effect on a prebuilt image")
                    .at(
                        build_timeout.span.clone(),
                        "nothing is built for this service",
                    )
                    .also(image.span.clone(), "its image is pulled as it is")
                    .help("remove `build-timeout`, or build the service on push with `build`"),
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
            release: release?,
            port,
            host_port,
            public: public?,
            protocol,
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

    /// `release`: a command run before each deploy, for a service built
    /// on push and not stateful.
    fn release(&mut self, raw: &RawService) -> Option<Vec<String>> {
        let Some(given) = &raw.release else {
            return Some(Vec::new());
        };
        let words: Vec<String> = match &given.value {
            RawCommand::Text(text) => {
                if text.contains(['"', '\'', '\\', '$', '`']) {
                    self.push(
                        Diagnostic::error("a release command in one string is split at spaces only")
                            .at(given.span.clone(), "quotes, `$` and `\\` are not read as a shell would")
                            .help("give the words as an array, such as [\"sh\", \"-c\", \"bin/migrate && bin/seed\"]"),
                    );
                    return None;
                }
                text.split_whitespace().map(str::to_owned).collect()
            }
            RawCommand::Words(words) => words.clone(),
        };
        if words.is_empty() || words.iter().any(String::is_empty) {
            self.push(
                Diagnostic::error("empty release command")
                    .at(given.span.clone(), "no program to run")
                    .help("name the command to run before each deploy, such as \"bin/migrate\", or remove `release`"),
            );
            return None;
        }
        if let Some(image) = &raw.image {
            self.push(
                Diagnostic::error("a release command needs a service built on push")
                    .at(given.span.clone(), "it runs on each push that changes the image")
                    .also(image.span.clone(), "this image changes only through `huxley apply`")
                    .help("run the command with `huxley run` before `huxley apply`, or build the service with `build`"),
            );
            return None;
        }
        if let Some(stateful) = raw.stateful.as_ref().filter(|s| s.value) {
            self.push(
                Diagnostic::error("a stateful service cannot have a release command")
                    .at(given.span.clone(), "it would run beside the live replica, on its volume, before every deploy")
                    .also(stateful.span.clone(), "this service's data stays on its node")
                    .help("give the release command to the service that uses the data (the app, not its database)"),
            );
            return None;
        }
        Some(words)
    }

    /// `deploy`: the pace of a rollout, which must make progress.
    pub(super) fn deploy(
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
        let drain = self.duration_or(raw.value.drain.as_ref(), defaults.drain, "deploy.drain");
        if let (Some(given), Some(drain)) = (&raw.value.drain, drain)
            && drain > std::time::Duration::from_secs(3600)
        {
            self.push(
                Diagnostic::error("deploy.drain is over an hour")
                    .at(
                        given.span.clone(),
                        "clients would keep this answer that long",
                    )
                    .help("a drain is the records' TTL: seconds to minutes, such as \"30s\""),
            );
        }
        let build_timeout = self.duration_or(
            raw.value.build_timeout.as_ref(),
            defaults.build_timeout,
            "deploy.build-timeout",
        );
        if let Some(given) = &raw.value.build_timeout
            && timeout_is_zero(given)
        {
            self.push(
                Diagnostic::error("deploy.build-timeout is zero")
                    .at(given.span.clone(), "no build finishes that fast")
                    .help("give the build time to finish, such as \"15m\" (the default)"),
            );
        }
        let release_timeout = self.duration_or(
            raw.value.release_timeout.as_ref(),
            defaults.release_timeout,
            "deploy.release-timeout",
        );
        if let Some(given) = &raw.value.release_timeout
            && timeout_is_zero(given)
        {
            self.push(
                Diagnostic::error("deploy.release-timeout is zero")
                    .at(given.span.clone(), "no release command ends that fast")
                    .help("give the release command time to finish, such as \"10m\" (the default)"),
            );
        }
        let policy = DeployPolicy {
            max_surge: surge?.unwrap_or(defaults.max_surge),
            max_unavailable: unavailable?.unwrap_or(defaults.max_unavailable),
            timeout: timeout?,
            drain: drain?,
            build_timeout: build_timeout?,
            release_timeout: release_timeout?,
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

    /// `command`, whose words may not be empty.
    fn command(&mut self, raw: &RawService) -> Vec<String> {
        if let Some(first) = raw
            .command
            .as_ref()
            .and_then(|c| c.iter().find(|s| s.value.is_empty()))
        {
            self.push(
                Diagnostic::error("empty command argument").at(first.span.clone(), "empty string"),
            );
        }
        raw.command
            .as_ref()
            .map_or_else(Vec::new, |c| c.iter().map(|s| s.value.clone()).collect())
    }

    /// Whether the load balancer serves a service, as written.
    pub(super) fn behind_load_balancer_raw(&self, raw: &RawService) -> bool {
        !self.ingress_dns
            && raw.protocol.as_ref().is_none_or(|p| p.value != "tcp")
            && raw.public.as_ref().is_some_and(|p| !p.is_empty())
    }

    /// `protocol`: what the public names serve.
    fn protocol(&mut self, raw: &RawService) -> Option<model::Protocol> {
        if let Some(p) = &raw.protocol
            && raw.public.is_none()
        {
            self.push(
                Diagnostic::warning("`protocol` has no effect without `public` names")
                    .at(p.span.clone(), "says what public names serve")
                    .help("remove `protocol`, or add `public = [\"www\"]`"),
            );
        }
        match &raw.protocol {
            None => Some(model::Protocol::Http),
            Some(p) if p.value == "http" => Some(model::Protocol::Http),
            Some(p) if p.value == "tcp" => Some(model::Protocol::Tcp),
            Some(p) => {
                self.push(
                    Diagnostic::error(format!("unknown protocol `{}`", p.value))
                        .at(p.span.clone(), "expected \"http\" or \"tcp\"")
                        .help("\"http\" is served over HTTPS by the load balancer; \"tcp\" at the nodes' addresses, on `host-port`"),
                );
                None
            }
        }
    }

    /// A service the load balancer serves: it needs the container port
    /// (the targets' port), a host port is not used, and a listener rule
    /// matches at most [`MAX_RULE_NAMES`] names.
    fn behind_load_balancer(
        &mut self,
        raw: &RawService,
        place: &str,
        table: &Range<usize>,
        public: &[Spanned<String>],
    ) {
        let first = public.first().map_or(0..0, |n| n.span.clone());
        if raw.port.is_none() && !self.rejected.contains(table, "port") {
            self.push(
                Diagnostic::error(format!("`public` needs a `port` in {place}"))
                    .at(
                        first.clone(),
                        "the load balancer sends requests to which container port?",
                    )
                    .help("add `port = <the port the container listens on>`"),
            );
        }
        if let Some(hp) = raw.host_port.as_ref().filter(|_| raw.protocol.is_none()) {
            // Said before the load balancer came: say what it serves, not
            // to move a TCP service behind HTTPS unasked.
            self.push(
                Diagnostic::error(format!("a public service with a `host-port` must say its `protocol` in {place}"))
                    .at(hp.span.clone(), "published on the nodes")
                    .also(first.clone(), "public names")
                    .note("public HTTP services are now served over HTTPS by the cluster's load balancer, which needs no host-port")
                    .help("add `protocol = \"http\"` and remove `host-port` to serve the names through the load balancer, or `protocol = \"tcp\"` to keep them at the nodes on this port (`ingress = \"dns\"` in [cluster] keeps every service at the nodes)"),
            );
        } else if let Some(hp) = &raw.host_port {
            self.push(
                Diagnostic::warning("`host-port` is not used behind the load balancer")
                    .at(hp.span.clone(), "no port is published on the nodes")
                    .also(first, "served over HTTPS by the cluster's load balancer")
                    .note("the load balancer reaches each replica at its own address, so several replicas may share a node")
                    .help("remove `host-port`; or set `protocol = \"tcp\"` (or `ingress = \"dns\"` in [cluster]) to serve these names at the nodes"),
            );
        }
        if let Some(extra) = public.get(MAX_RULE_NAMES) {
            self.push(
                Diagnostic::error(format!(
                    "more than {MAX_RULE_NAMES} public names for one service behind the load balancer"
                ))
                .at(extra.span.clone(), format!("name {}", MAX_RULE_NAMES + 1))
                .note(format!(
                    "a load balancer rule matches at most {MAX_RULE_NAMES} host names (an ELB quota)"
                ))
                .help("split the names across services, or serve them with `ingress = \"dns\"`"),
            );
        }
    }

    pub(super) fn public_names(
        &mut self,
        raw: &RawService,
        place: &str,
        table: &Range<usize>,
        protocol: Option<model::Protocol>,
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
        let at_nodes = self.ingress_dns || protocol == Some(model::Protocol::Tcp);
        if let Some(first) = public.first() {
            if at_nodes && raw.host_port.is_none() && !self.rejected.contains(table, "host-port") {
                self.push(
                    Diagnostic::error(format!("`public` needs a `host-port` in {place}"))
                        .at(
                            first.span.clone(),
                            "these public names point at the nodes, on which port?",
                        )
                        .help(if self.ingress_dns {
                            "add `host-port = 80` (or the port clients use), or serve HTTP through the load balancer: remove `ingress = \"dns\"` from [cluster]"
                        } else {
                            "add `host-port = <the port clients use>`: a `tcp` service is reached at the nodes"
                        }),
                );
            }
            if !at_nodes {
                self.behind_load_balancer(raw, place, table, public);
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

    pub(super) fn fits(
        &mut self,
        cluster: &Cluster,
        raw: &RawService,
        cpu: Option<u32>,
        memory: Option<u64>,
    ) {
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

    pub(super) fn replicas(&mut self, raw: &RawService) -> Option<Replicas> {
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

    pub(super) fn scale(&mut self, raw: &RawService, replicas: Option<Replicas>) -> Option<Scale> {
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
}
