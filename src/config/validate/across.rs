//! Checks across services: clashing units, ports and names, dependencies, capacity.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use super::{Checker, ServiceEntry, cluster_nodes_anchor, cycles};
use crate::config::names;
use crate::diagnostic::Diagnostic;
use crate::model::{self, Cluster};
use crate::spec::quantity;

impl Checker<'_> {
    pub(super) fn unit_name_clashes(&mut self, entries: &[ServiceEntry<'_>]) {
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

    pub(super) fn host_port_clashes(
        &mut self,
        entries: &[ServiceEntry<'_>],
        cluster: Option<&Cluster>,
    ) {
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
            if self.behind_load_balancer_raw(entry.raw) {
                // Not published: said where the service is checked.
                continue;
            }
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
                && service.host_port.is_some()
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

    pub(super) fn public_name_clashes(&mut self, entries: &[ServiceEntry<'_>]) {
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

    pub(super) fn dependencies(&mut self, entries: &[ServiceEntry<'_>]) {
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

    pub(super) fn capacity(&mut self, entries: &[ServiceEntry<'_>], cluster: &Cluster) {
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
