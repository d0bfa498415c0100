//! Consolidation: which nodes to empty and terminate so the cluster stops
//! paying for capacity it does not use. Pure and deterministic, on top of
//! [`crate::scheduler::placement`]: the same input gives the same decisions.
//!
//! Only moves that free a whole node are made (a node is drained when every
//! replica on it fits in what the nodes that stay have free: capacity,
//! host ports, the service spread over them);
//! empty nodes go first, then the cheapest to empty (fewest replicas, least
//! used). Never below the group's minimum, never more than the disruption
//! budget at once, never a node that runs a stateful replica or is marked
//! do-not-disrupt, and never a move that saves less than the threshold:
//! consolidation that churns costs more than it saves. Every decision
//! carries its reason, as `huxley cluster describe` shows it.
//!
//! The leader's scaler ([`crate::control::controllers::scale`]) runs it once the cluster is
//! steady, and drains what it decides.

use std::collections::{BTreeMap, BTreeSet};

#[cfg(test)]
use crate::scheduler::placement;
use crate::scheduler::placement::{NodeSpec, Placement, Replica, ServiceSpec};

/// What consolidation may do.
#[derive(Debug, Clone)]
pub struct Policy {
    /// The group's minimum: never fewer nodes.
    pub min_nodes: usize,
    /// Nodes drained at once, at most.
    pub budget: usize,
    /// A drain must save at least this much a month (USD).
    pub threshold_monthly: f64,
    /// What one node costs an hour (USD).
    pub hourly_cost: f64,
    /// Nodes never drained.
    pub do_not_disrupt: BTreeSet<String>,
}

/// Hours in a month, as AWS prices them.
pub const HOURS_A_MONTH: f64 = 730.0;

/// One node to drain: where its replicas go, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Drain {
    pub node: String,
    /// Replica → the node it moves to.
    pub moves: BTreeMap<Replica, String>,
    pub saves_monthly: f64,
    /// For people: "draining i-0abc: its 3 replicas fit on i-0def, i-0123;
    /// saves $70/month".
    pub reason: String,
}

/// The nodes to drain now, in order.
pub fn plan(
    nodes: &[NodeSpec],
    services: &[ServiceSpec],
    placement: &Placement,
    policy: &Policy,
) -> Vec<Drain> {
    let saves_monthly = policy.hourly_cost * HOURS_A_MONTH;
    if saves_monthly < policy.threshold_monthly {
        return Vec::new();
    }
    let spec: BTreeMap<(&str, &str), &ServiceSpec> = services
        .iter()
        .map(|s| ((s.app.as_str(), s.service.as_str()), s))
        .collect();
    // Each node's replicas, found once (not a scan of every replica per
    // node: that alone was most of a decision on 1,000 nodes).
    let mut on_node: BTreeMap<&str, Vec<&Replica>> = BTreeMap::new();
    for (replica, node) in &placement.assigned {
        on_node.entry(node.as_str()).or_default().push(replica);
    }
    let here_on = |id: &str| on_node.get(id).map_or(&[][..], Vec::as_slice);
    let mut free = rooms(nodes, &spec, placement);
    let mut drained: Vec<Drain> = Vec::new();
    for node in candidates(nodes, &spec, &here_on) {
        if drained.len() >= policy.budget || nodes.len() - drained.len() <= policy.min_nodes {
            break;
        }
        // A node an earlier drain moves replicas onto stays: draining it too
        // would strand them.
        let receiving = drained
            .iter()
            .any(|d| d.moves.values().any(|to| *to == node.id));
        if policy.do_not_disrupt.contains(&node.id) || receiving {
            continue;
        }
        let here: Vec<(&Replica, &ServiceSpec)> = here_on(&node.id)
            .iter()
            .filter_map(|r| Some((*r, *spec.get(&(r.app.as_str(), r.service.as_str()))?)))
            .collect();
        if here.iter().any(|(_, s)| s.stateful) {
            continue;
        }
        let gone: BTreeSet<&str> = drained
            .iter()
            .map(|d| d.node.as_str())
            .chain([node.id.as_str()])
            .collect();
        let Some(moves) = move_all(here, &mut free, &gone) else {
            continue;
        };
        drained.push(Drain {
            reason: reason(&node.id, &moves, saves_monthly),
            node: node.id.clone(),
            moves,
            saves_monthly,
        });
    }
    drained
}

/// The nodes worth draining, best first: empty nodes, then the fewest
/// replicas, then the least used.
fn candidates<'n, 'r>(
    nodes: &'n [NodeSpec],
    spec: &BTreeMap<(&str, &str), &ServiceSpec>,
    here_on: &impl Fn(&str) -> &'r [&'r Replica],
) -> Vec<&'n NodeSpec> {
    let mut candidates: Vec<(usize, u64, &NodeSpec)> = nodes
        .iter()
        .map(|n| {
            let here = here_on(&n.id);
            let used: u64 = here
                .iter()
                .map(|r| {
                    let (cpu, memory) = spec
                        .get(&(r.app.as_str(), r.service.as_str()))
                        .map_or((0, 0), |s| (u64::from(s.cpu_millis), s.memory_mib));
                    // Thousandths of the node, on the larger dimension.
                    (cpu * 1000 / u64::from(n.cpu_millis.max(1)))
                        .max(memory * 1000 / n.memory_mib.max(1))
                })
                .sum();
            (here.len(), used, n)
        })
        .collect();
    candidates.sort_by(|a, b| (a.0, a.1, &a.2.id).cmp(&(b.0, b.1, &b.2.id)));
    candidates.into_iter().map(|(_, _, n)| n).collect()
}

/// What each node has free, as the current placement leaves it.
fn rooms<'a>(
    nodes: &'a [NodeSpec],
    spec: &BTreeMap<(&str, &str), &'a ServiceSpec>,
    placement: &Placement,
) -> BTreeMap<&'a str, Room<'a>> {
    let mut free: BTreeMap<&str, Room> = nodes
        .iter()
        .map(|n| {
            (
                n.id.as_str(),
                Room {
                    cpu: u64::from(n.cpu_millis),
                    memory: n.memory_mib,
                    ports: n.ports_in_use.clone(),
                    services: BTreeMap::new(),
                },
            )
        })
        .collect();
    for (replica, node) in &placement.assigned {
        if let (Some(room), Some(s)) = (
            free.get_mut(node.as_str()),
            spec.get(&(replica.app.as_str(), replica.service.as_str())),
        ) {
            room.take(s);
        }
    }
    free
}

/// Where a node's replicas go, the largest first (first-fit decreasing),
/// each where its service has the fewest replicas, then where it fits
/// tightest, never onto a node in `gone`; `None`, with `free` as it was,
/// when they do not all fit.
fn move_all<'a>(
    mut here: Vec<(&Replica, &'a ServiceSpec)>,
    free: &mut BTreeMap<&'a str, Room<'a>>,
    gone: &BTreeSet<&str>,
) -> Option<BTreeMap<Replica, String>> {
    here.sort_by(|a, b| {
        (b.1.cpu_millis, b.1.memory_mib, a.0).cmp(&(a.1.cpu_millis, a.1.memory_mib, b.0))
    });
    // Taken from `free` as the moves are tried; given back when the
    // node's replicas do not all fit (no copy of `free` per candidate).
    let mut taken: Vec<(&str, &ServiceSpec)> = Vec::new();
    let mut moves = BTreeMap::new();
    for (replica, s) in &here {
        let key = (s.app.as_str(), s.service.as_str());
        let best = free
            .iter()
            .filter(|(id, room)| !gone.contains(*id) && room.fits(s))
            .min_by_key(|(id, room)| {
                (
                    room.services.get(&key).copied().unwrap_or(0),
                    room.cpu.saturating_sub(u64::from(s.cpu_millis)),
                    **id,
                )
            })
            .map(|(id, _)| *id);
        let Some(to) = best else {
            for (to, s) in taken {
                if let Some(room) = free.get_mut(to) {
                    room.give(s);
                }
            }
            return None;
        };
        if let Some(room) = free.get_mut(to) {
            room.take(s);
            taken.push((to, s));
        }
        moves.insert((*replica).clone(), to.to_owned());
    }
    Some(moves)
}

/// A drain's reason, for people.
fn reason(node: &str, moves: &BTreeMap<Replica, String>, saves_monthly: f64) -> String {
    if moves.is_empty() {
        return format!("draining {node}: it runs nothing; saves ${saves_monthly:.0}/month");
    }
    let targets: BTreeSet<&str> = moves.values().map(String::as_str).collect();
    format!(
        "draining {node}: its {} replica{} fit on {}; saves ${saves_monthly:.0}/month",
        moves.len(),
        if moves.len() == 1 { "" } else { "s" },
        targets.into_iter().collect::<Vec<_>>().join(", ")
    )
}

/// What a node has free while drains are planned.
#[derive(Debug, Clone)]
struct Room<'a> {
    cpu: u64,
    memory: u64,
    ports: BTreeSet<u16>,
    /// Replicas of each service on it, for spreading.
    services: BTreeMap<(&'a str, &'a str), u32>,
}

impl<'a> Room<'a> {
    fn fits(&self, s: &ServiceSpec) -> bool {
        self.cpu >= u64::from(s.cpu_millis)
            && self.memory >= s.memory_mib
            && s.host_port.is_none_or(|p| !self.ports.contains(&p))
    }

    fn take(&mut self, s: &'a ServiceSpec) {
        self.cpu = self.cpu.saturating_sub(u64::from(s.cpu_millis));
        self.memory = self.memory.saturating_sub(s.memory_mib);
        if let Some(port) = s.host_port {
            self.ports.insert(port);
        }
        *self
            .services
            .entry((s.app.as_str(), s.service.as_str()))
            .or_insert(0) += 1;
    }

    /// Undoes [`Room::take`] (which added the port: `fits` saw it free).
    fn give(&mut self, s: &'a ServiceSpec) {
        self.cpu += u64::from(s.cpu_millis);
        self.memory += s.memory_mib;
        if let Some(port) = s.host_port {
            self.ports.remove(&port);
        }
        let key = (s.app.as_str(), s.service.as_str());
        if let Some(count) = self.services.get_mut(&key) {
            *count -= 1;
            if *count == 0 {
                self.services.remove(&key);
            }
        }
    }
}

/// The fewest nodes that could hold these services by capacity alone:
/// `max(ceil(Σcpu / node cpu), ceil(Σmemory / node memory))`.
pub fn lower_bound(services: &[ServiceSpec], node: &NodeSpec) -> u64 {
    let cpu: u64 = services
        .iter()
        .map(|s| u64::from(s.cpu_millis) * u64::from(s.replicas))
        .sum();
    let memory: u64 = services
        .iter()
        .map(|s| s.memory_mib * u64::from(s.replicas))
        .sum();
    cpu.div_ceil(u64::from(node.cpu_millis.max(1)))
        .max(memory.div_ceil(node.memory_mib.max(1)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn node(id: &str) -> NodeSpec {
        NodeSpec {
            id: id.into(),
            zone: "a".into(),
            cpu_millis: 2000,
            memory_mib: 4096,
            ports_in_use: BTreeSet::new(),
        }
    }

    fn service(name: &str, replicas: u32, cpu: u32, stateful: bool) -> ServiceSpec {
        ServiceSpec {
            first: 1,
            app: "app".into(),
            service: name.into(),
            replicas,
            cpu_millis: cpu,
            memory_mib: 256,
            host_port: None,
            stateful,
        }
    }

    fn policy(min_nodes: usize) -> Policy {
        Policy {
            min_nodes,
            budget: 2,
            threshold_monthly: 10.0,
            hourly_cost: 0.096,
            do_not_disrupt: BTreeSet::new(),
        }
    }

    /// A placement spread as if each replica had been put on its own node.
    fn spread(nodes: &[NodeSpec], services: &[ServiceSpec]) -> Placement {
        let mut assigned = BTreeMap::new();
        let mut i = 0;
        for s in services {
            for index in s.numbers() {
                let r = Replica {
                    app: s.app.clone(),
                    service: s.service.clone(),
                    index,
                };
                assigned.insert(r, nodes[i % nodes.len()].id.clone());
                i += 1;
            }
        }
        Placement {
            assigned,
            unplaced: BTreeMap::new(),
        }
    }

    #[test]
    fn an_empty_node_goes_first_and_a_nearly_empty_one_next_with_its_reason() {
        let nodes = [node("i-1"), node("i-2"), node("i-3")];
        let services = [service("web", 2, 200, false)];
        // web on i-1 and i-2; i-3 runs nothing.
        let placement = spread(&nodes[..2], &services);
        let drains = plan(&nodes, &services, &placement, &policy(1));
        assert_eq!(drains.len(), 2);
        assert_eq!(drains[0].node, "i-3");
        assert!(
            drains[0].reason.contains("runs nothing"),
            "{}",
            drains[0].reason
        );
        assert_eq!(drains[1].node, "i-1");
        assert_eq!(
            drains[1].reason,
            "draining i-1: its 1 replica fit on i-2; saves $70/month"
        );
    }

    #[test]
    fn stateful_do_not_disrupt_the_minimum_and_the_threshold_are_respected() {
        let nodes = [node("i-1"), node("i-2"), node("i-3")];
        let services = [service("db", 1, 200, true), service("web", 1, 200, false)];
        let placement = spread(&nodes[..2], &services);
        // i-1 runs the stateful db: never drained; i-3 is marked.
        let mut p = policy(1);
        p.do_not_disrupt.insert("i-3".into());
        let drains = plan(&nodes, &services, &placement, &p);
        assert_eq!(
            drains.iter().map(|d| d.node.as_str()).collect::<Vec<_>>(),
            ["i-2"]
        );
        // The minimum: with min 3 nothing goes.
        assert!(plan(&nodes, &services, &placement, &policy(3)).is_empty());
        // A saving under the threshold is no reason to disrupt.
        let mut cheap = policy(1);
        cheap.threshold_monthly = 100.0;
        assert!(plan(&nodes, &services, &placement, &cheap).is_empty());
    }

    #[test]
    fn the_lower_bound_is_by_the_tighter_dimension() {
        let services = [service("web", 10, 500, false)];
        // 5,000m cpu on 2,000m nodes: 3; 2,560 MiB on 4,096: 1.
        assert_eq!(lower_bound(&services, &node("n")), 3);
    }

    #[test]
    fn a_node_receiving_an_earlier_drains_replicas_is_not_drained() {
        // Found by proptest: 7 replicas of 700m on 6 nodes of 2,000m. The
        // first drain moved a replica onto a node a later drain then
        // emptied, stranding it.
        let nodes: Vec<NodeSpec> = (0..6).map(|i| node(&format!("i-{i:02}"))).collect();
        let services = [
            service("s0", 1, 700, false),
            service("s1", 2, 700, false),
            service("s2", 4, 700, false),
        ];
        let placement = placement::place(&nodes, &services, &BTreeMap::new());
        let drains = plan(
            &nodes,
            &services,
            &placement,
            &Policy {
                budget: 3,
                ..policy(1)
            },
        );
        assert!(!drains.is_empty());
        let gone: BTreeSet<&str> = drains.iter().map(|d| d.node.as_str()).collect();
        for drain in &drains {
            for to in drain.moves.values() {
                assert!(!gone.contains(to.as_str()), "{drains:?}");
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn drains_keep_every_replica_placed_within_capacity_and_the_rules(
            count in 2usize..10,
            specs in prop::collection::vec((1u32..5, 1u32..8, any::<bool>()), 1..6),
            min_nodes in 1usize..4,
            budget in 1usize..4,
        ) {
            let nodes: Vec<NodeSpec> = (0..count).map(|i| node(&format!("i-{i:02}"))).collect();
            let services: Vec<ServiceSpec> = specs
                .iter()
                .enumerate()
                .map(|(i, (replicas, cpu, stateful))| service(&format!("s{i}"), *replicas, cpu * 100, *stateful))
                .collect();
            let placement = placement::place(&nodes, &services, &BTreeMap::new());
            prop_assume!(placement.unplaced.is_empty());
            let policy = Policy { min_nodes, budget, ..policy(min_nodes) };
            let drains = plan(&nodes, &services, &placement, &policy);
            prop_assert!(drains.len() <= budget);
            prop_assert!(drains.is_empty() || count - drains.len() >= min_nodes);
            let gone: BTreeSet<&str> = drains.iter().map(|d| d.node.as_str()).collect();
            let stateful: BTreeSet<&str> = services.iter().filter(|s| s.stateful).map(|s| s.service.as_str()).collect();
            for (replica, node) in &placement.assigned {
                if gone.contains(node.as_str()) {
                    prop_assert!(!stateful.contains(replica.service.as_str()), "drained a stateful replica's node");
                }
            }
            // Everything still fits on the nodes that stay, within capacity.
            let staying: Vec<NodeSpec> = nodes.iter().filter(|n| !gone.contains(n.id.as_str())).cloned().collect();
            let mut current = placement.assigned.clone();
            for drain in &drains {
                current.extend(drain.moves.clone());
            }
            let after = placement::place(&staying, &services, &current);
            prop_assert!(after.unplaced.is_empty());
            for node in &staying {
                let cpu: u64 = after
                    .on_node(&node.id)
                    .map(|r| services.iter().find(|s| s.service == r.service).map_or(0, |s| u64::from(s.cpu_millis)))
                    .sum();
                prop_assert!(cpu <= u64::from(node.cpu_millis));
            }
            // The same input gives the same decisions.
            prop_assert_eq!(drains, plan(&nodes, &services, &placement, &policy));
        }
    }
}
