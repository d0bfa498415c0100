//! Placement: which node runs each replica. Pure and deterministic: nodes
//! and the services' desired replicas in, an assignment out, with the
//! replicas that fit nowhere and why.
//!
//! Guarantees (each pinned by a property test):
//! - a node's cpu and memory are never over-committed;
//! - no two replicas on one node publish the same host port, nor a port the
//!   node already uses;
//! - a stateful replica stays on its node while that node lives;
//! - a replica that is already placed, and still fits where it is, stays
//!   there: a small change of input moves only what must move;
//! - new replicas of a service go first to the nodes with the fewest of its
//!   replicas, then to the availability zones with the fewest, then where
//!   they fit most tightly (best fit, which leaves whole nodes empty for
//!   consolidation);
//! - the same input gives the same output.
//!
//! Cost: one pass over the nodes per replica to place, with flat arrays,
//! so 10,000 replicas on 1,000 nodes take milliseconds (`benches/placement.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

/// A node that replicas may be placed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    pub id: String,
    /// The availability zone, for spreading.
    pub zone: String,
    pub cpu_millis: u32,
    pub memory_mib: u64,
    /// Host ports the node uses for other things (the agents).
    pub ports_in_use: BTreeSet<u16>,
}

/// A service and how many replicas it wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    pub app: String,
    pub service: String,
    /// The lowest replica number (1, until a deploy moves it up).
    pub first: u32,
    pub replicas: u32,
    pub cpu_millis: u32,
    pub memory_mib: u64,
    pub host_port: Option<u16>,
    pub stateful: bool,
}

impl ServiceSpec {
    /// The service's replica numbers.
    pub fn numbers(&self) -> std::ops::Range<u32> {
        self.first..self.first.saturating_add(self.replicas)
    }
}

/// One replica of a service: replica numbers run from `first` to `first +
/// replicas - 1`, as the systemd instances `<unit>@<n>` do.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Replica {
    pub app: String,
    pub service: String,
    pub index: u32,
}

impl fmt::Display for Replica {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}#{}", self.app, self.service, self.index)
    }
}

/// Where every replica goes, and what did not fit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement {
    pub assigned: BTreeMap<Replica, String>,
    /// Replicas that fit on no node, with the reason.
    pub unplaced: BTreeMap<Replica, String>,
}

impl Placement {
    /// The replicas assigned to one node.
    pub fn on_node<'a>(&'a self, node: &'a str) -> impl Iterator<Item = &'a Replica> + 'a {
        self.assigned
            .iter()
            .filter(move |(_, n)| n.as_str() == node)
            .map(|(r, _)| r)
    }
}

/// What is free on one node while placing.
struct Free {
    cpu: Vec<u64>,
    memory: Vec<u64>,
    ports: Vec<BTreeSet<u16>>,
}

impl Free {
    fn fits(&self, node: usize, service: &ServiceSpec) -> bool {
        self.cpu[node] >= u64::from(service.cpu_millis)
            && self.memory[node] >= service.memory_mib
            && service
                .host_port
                .is_none_or(|port| !self.ports[node].contains(&port))
    }

    fn take(&mut self, node: usize, service: &ServiceSpec) {
        self.cpu[node] -= u64::from(service.cpu_millis);
        self.memory[node] -= service.memory_mib;
        if let Some(port) = service.host_port {
            self.ports[node].insert(port);
        }
    }
}

/// The nodes in id order (so an outcome does not depend on the input's),
/// each one's position in it, and what each has free with nothing placed.
fn layout(nodes: &[NodeSpec]) -> (Vec<&NodeSpec>, BTreeMap<&str, usize>, Free) {
    let mut order: Vec<&NodeSpec> = nodes.iter().collect();
    order.sort_by(|a, b| a.id.cmp(&b.id));
    order.dedup_by(|a, b| a.id == b.id);
    let index = order
        .iter()
        .enumerate()
        .map(|(i, n)| (n.id.as_str(), i))
        .collect();
    let free = Free {
        cpu: order.iter().map(|n| u64::from(n.cpu_millis)).collect(),
        memory: order.iter().map(|n| n.memory_mib).collect(),
        ports: order.iter().map(|n| n.ports_in_use.clone()).collect(),
    };
    (order, index, free)
}

/// Places every service's replicas on `nodes`, keeping those in `current`
/// (replica → node) where they still fit.
pub fn place(
    nodes: &[NodeSpec],
    services: &[ServiceSpec],
    current: &BTreeMap<Replica, String>,
) -> Placement {
    let (order, index, mut free) = layout(nodes);
    let zones: BTreeMap<&str, usize> = order
        .iter()
        .map(|n| n.zone.as_str())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .enumerate()
        .map(|(i, z)| (z, i))
        .collect();
    let zone_of: Vec<usize> = order.iter().map(|n| zones[n.zone.as_str()]).collect();
    let mut services: Vec<&ServiceSpec> = services.iter().collect();
    services.sort_by(|a, b| (&a.app, &a.service).cmp(&(&b.app, &b.service)));
    services.dedup_by(|a, b| a.app == b.app && a.service == b.service);

    let mut placement = Placement::default();
    // First keep what runs where it may stay: stateful replicas before the
    // others, so a stateful replica never loses its node to a stateless one.
    for stateful in [true, false] {
        for service in services.iter().filter(|s| s.stateful == stateful) {
            for number in service.numbers() {
                let replica = replica(service, number);
                let Some(&node) = current.get(&replica).and_then(|n| index.get(n.as_str())) else {
                    continue;
                };
                if free.fits(node, service) {
                    free.take(node, service);
                    placement.assigned.insert(replica, order[node].id.clone());
                }
            }
        }
    }
    // Then the rest, largest services first (first-fit decreasing packs
    // better), each replica where the spread and the fit are best.
    let mut pending: Vec<&ServiceSpec> = services.clone();
    pending.sort_by(|a, b| {
        size(b, &order)
            .cmp(&size(a, &order))
            .then_with(|| (&a.app, &a.service).cmp(&(&b.app, &b.service)))
    });
    // Each node's capacity as reciprocals, so the hot loop multiplies.
    let scale: Vec<(f64, f64)> = order
        .iter()
        .map(|n| {
            (
                1.0 / f64::from(n.cpu_millis.max(1)),
                1.0 / n.memory_mib.max(1) as f64,
            )
        })
        .collect();
    let mut per_node = vec![0u32; order.len()];
    let mut per_zone = vec![0u32; zones.len()];
    for service in pending {
        let missing: Vec<u32> = service
            .numbers()
            .filter(|&n| !placement.assigned.contains_key(&replica(service, n)))
            .collect();
        if missing.is_empty() {
            continue;
        }
        per_node.iter_mut().for_each(|c| *c = 0);
        per_zone.iter_mut().for_each(|c| *c = 0);
        for number in service.numbers() {
            if let Some(node) = placement
                .assigned
                .get(&replica(service, number))
                .and_then(|n| index.get(n.as_str()))
            {
                per_node[*node] += 1;
                per_zone[zone_of[*node]] += 1;
            }
        }
        for number in missing {
            let chosen = best_node(&free, &scale, service, &per_node, &per_zone, &zone_of);
            let replica = replica(service, number);
            match chosen {
                Some(node) => {
                    free.take(node, service);
                    per_node[node] += 1;
                    per_zone[zone_of[node]] += 1;
                    placement.assigned.insert(replica, order[node].id.clone());
                }
                None => {
                    let reason = why_not(&free, &order, service);
                    placement.unplaced.insert(replica, reason);
                }
            }
        }
    }
    placement
}

fn replica(service: &ServiceSpec, index: u32) -> Replica {
    Replica {
        app: service.app.clone(),
        service: service.service.clone(),
        index,
    }
}

/// The node a new replica of `service` goes to: the fewest replicas of
/// the service, then the zone with the fewest, then the tightest fit, then
/// the first in id order. One pass, no allocation: this loop is the
/// engine's cost.
fn best_node(
    free: &Free,
    scale: &[(f64, f64)],
    service: &ServiceSpec,
    per_node: &[u32],
    per_zone: &[u32],
    zone_of: &[usize],
) -> Option<usize> {
    let (cpu, memory) = (u64::from(service.cpu_millis), service.memory_mib);
    let mut best: Option<(u32, u32, f64, usize)> = None;
    for node in 0..free.cpu.len() {
        if !free.fits(node, service) {
            continue;
        }
        let count = per_node[node];
        if best.is_some_and(|b| count > b.0) {
            continue;
        }
        let zone = per_zone[zone_of[node]];
        // What would be left, as a fraction of the node, on the larger
        // dimension: lower is a tighter fit.
        let left = ((free.cpu[node] - cpu) as f64 * scale[node].0)
            .max((free.memory[node] - memory) as f64 * scale[node].1);
        let better = match best {
            None => true,
            Some((c, z, l, _)) => (count, zone) < (c, z) || ((count, zone) == (c, z) && left < l),
        };
        if better {
            best = Some((count, zone, left, node));
        }
    }
    best.map(|(_, _, _, node)| node)
}

/// A service's size, in thousandths of the largest node, on its larger
/// dimension.
fn size(service: &ServiceSpec, nodes: &[&NodeSpec]) -> u64 {
    let cpu = nodes.iter().map(|n| n.cpu_millis).max().unwrap_or(1).max(1);
    let memory = nodes.iter().map(|n| n.memory_mib).max().unwrap_or(1).max(1);
    (u64::from(service.cpu_millis) * 1000 / u64::from(cpu))
        .max(service.memory_mib.saturating_mul(1000) / memory)
}

/// Why a replica of `service` fits on no node.
fn why_not(free: &Free, nodes: &[&NodeSpec], service: &ServiceSpec) -> String {
    if nodes.is_empty() {
        return "the cluster has no nodes".to_owned();
    }
    let need = format!(
        "needs {}m cpu and {} MiB memory",
        service.cpu_millis, service.memory_mib
    );
    let roomy = (0..nodes.len())
        .filter(|&n| {
            free.cpu[n] >= u64::from(service.cpu_millis) && free.memory[n] >= service.memory_mib
        })
        .count();
    match service.host_port {
        Some(port) if roomy > 0 => format!(
            "host port {port} is taken on every node with room ({roomy} of {}); add nodes or remove the host-port",
            nodes.len()
        ),
        _ => {
            let most_cpu = free.cpu.iter().max().copied().unwrap_or(0);
            let most_memory = free.memory.iter().max().copied().unwrap_or(0);
            format!(
                "{need}; the most free on one of the {} nodes is {most_cpu}m cpu and {most_memory} MiB memory",
                nodes.len()
            )
        }
    }
}

/// Spreads replicas that share a node (or a zone) while another node can
/// take one: the highest-numbered replica on the node with the most of its
/// service moves to a node with none, in the zone with the fewest, where
/// it fits most tightly. One move per service a call, and none for the
/// services in `busy` (moving, or rolling out), so a service loses at most
/// one replica's place at a time; with [`handoffs`] the moved replica
/// keeps running where it was until its new one is healthy. Stateful
/// replicas never move. Nodes join one at a time on AWS, and the first to
/// check in gets every replica: this is what evens them out. The replicas
/// moved.
pub fn spread(
    placement: &mut Placement,
    nodes: &[NodeSpec],
    services: &[ServiceSpec],
    busy: &BTreeSet<(String, String)>,
) -> Vec<Replica> {
    let (order, index, mut free) = layout(nodes);
    let by_name: BTreeMap<(&str, &str), &ServiceSpec> = services
        .iter()
        .map(|s| ((s.app.as_str(), s.service.as_str()), s))
        .collect();
    for (replica, node) in &placement.assigned {
        if let (Some(&node), Some(service)) = (
            index.get(node.as_str()),
            by_name.get(&(replica.app.as_str(), replica.service.as_str())),
        ) {
            // Over-committed nodes are not a placement's: saturate.
            free.cpu[node] = free.cpu[node].saturating_sub(u64::from(service.cpu_millis));
            free.memory[node] = free.memory[node].saturating_sub(service.memory_mib);
            if let Some(port) = service.host_port {
                free.ports[node].insert(port);
            }
        }
    }
    let mut moved = Vec::new();
    for service in services {
        if service.stateful || busy.contains(&(service.app.clone(), service.service.clone())) {
            continue;
        }
        let mine: Vec<(u32, usize)> = service
            .numbers()
            .filter_map(|n| {
                let node = placement.assigned.get(&replica(service, n))?;
                Some((n, *index.get(node.as_str())?))
            })
            .collect();
        if mine.len() < 2 {
            continue;
        }
        let mut per_node = vec![0u32; order.len()];
        let mut per_zone: BTreeMap<&str, u32> = BTreeMap::new();
        for &(_, node) in &mine {
            per_node[node] += 1;
            *per_zone.entry(order[node].zone.as_str()).or_default() += 1;
        }
        let zone_count = |node: usize| {
            per_zone
                .get(order[node].zone.as_str())
                .copied()
                .unwrap_or(0)
        };
        // The crowded: most of this service on its node, then in its zone.
        let Some(&(number, source)) = mine
            .iter()
            .filter(|(_, node)| per_node[*node] >= 2 || zone_count(*node) >= 2)
            .max_by_key(|(n, node)| (per_node[*node], zone_count(*node), *n))
        else {
            continue;
        };
        let target = (0..order.len())
            .filter(|&node| per_node[node] == 0 && free.fits(node, service))
            // A move that helps: off a shared node, or out of a shared
            // zone into an empty one.
            .filter(|&node| per_node[source] >= 2 || zone_count(node) == 0)
            .min_by_key(|&node| {
                (
                    zone_count(node),
                    free.cpu[node].saturating_sub(u64::from(service.cpu_millis)),
                    node,
                )
            });
        let Some(target) = target else {
            continue;
        };
        free.take(target, service);
        free.cpu[source] += u64::from(service.cpu_millis);
        free.memory[source] += service.memory_mib;
        if let Some(port) = service.host_port {
            free.ports[source].remove(&port);
        }
        let moving = replica(service, number);
        placement
            .assigned
            .insert(moving.clone(), order[target].id.clone());
        moved.push(moving);
    }
    moved
}

/// The handoffs after a placement change: every replica that moved from a
/// node that is still alive, and every earlier handoff, until the replica
/// is healthy on its new node, its old node is gone, or it is no longer
/// wanted there.
pub fn handoffs(
    earlier: &BTreeMap<Replica, String>,
    old: &BTreeMap<Replica, String>,
    new: &BTreeMap<Replica, String>,
    alive: &BTreeSet<String>,
    healthy: &BTreeSet<(Replica, String)>,
) -> BTreeMap<Replica, String> {
    let moved = old
        .iter()
        .filter(|(replica, node)| new.get(*replica).is_some_and(|n| n != *node));
    earlier
        .iter()
        .chain(moved)
        .filter(|(replica, leaving)| {
            alive.contains(*leaving)
                && new.get(*replica).is_some_and(|to| {
                    to != *leaving && !healthy.contains(&((*replica).clone(), to.clone()))
                })
        })
        .map(|(r, n)| (r.clone(), n.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replica_moving_between_live_nodes_stays_on_the_old_one_until_healthy() {
        let r = Replica {
            app: "blog".into(),
            service: "api".into(),
            index: 1,
        };
        let on = |node: &str| BTreeMap::from([(r.clone(), node.to_owned())]);
        let alive: BTreeSet<String> = ["a", "b"].map(String::from).into();
        let none = BTreeSet::new();
        // Moved from a to b: a keeps it.
        let handoff = handoffs(&BTreeMap::new(), &on("a"), &on("b"), &alive, &none);
        assert_eq!(handoff, on("a"));
        // Still moving while b's is not healthy (placement unchanged).
        assert_eq!(
            handoffs(&handoff, &on("b"), &on("b"), &alive, &none),
            on("a")
        );
        // Healthy on b: a lets go.
        let healthy = BTreeSet::from([(r.clone(), "b".to_owned())]);
        assert!(handoffs(&handoff, &on("b"), &on("b"), &alive, &healthy).is_empty());
        // A node that is gone keeps nothing.
        let only_b: BTreeSet<String> = ["b"].map(String::from).into();
        assert!(handoffs(&BTreeMap::new(), &on("a"), &on("b"), &only_b, &none).is_empty());
        // Unchanged placements hand nothing off.
        assert!(handoffs(&BTreeMap::new(), &on("a"), &on("a"), &alive, &none).is_empty());
    }

    /// examples/blog's kick.toml.
    use proptest::prelude::*;

    fn node(id: &str, zone: &str, cpu: u32, memory: u64) -> NodeSpec {
        NodeSpec {
            id: id.to_owned(),
            zone: zone.to_owned(),
            cpu_millis: cpu,
            memory_mib: memory,
            ports_in_use: BTreeSet::new(),
        }
    }

    fn service(name: &str, replicas: u32, cpu: u32, memory: u64) -> ServiceSpec {
        ServiceSpec {
            first: 1,
            app: "app".to_owned(),
            service: name.to_owned(),
            replicas,
            cpu_millis: cpu,
            memory_mib: memory,
            host_port: None,
            stateful: false,
        }
    }

    fn nodes_of<'a>(placement: &'a Placement, name: &str) -> Vec<&'a str> {
        placement
            .assigned
            .iter()
            .filter(|(r, _)| r.service == name)
            .map(|(_, n)| n.as_str())
            .collect()
    }

    /// Regression: nodes check in one at a time on AWS, and placement never
    /// moved a running replica, so the first node kept every replica and
    /// losing it took the services to zero.
    #[test]
    fn replicas_crowded_on_the_first_node_spread_one_move_per_service_at_a_time() {
        let first = [node("a1", "a", 4000, 8192)];
        let web = service("web", 2, 100, 100);
        let api = service("api", 2, 100, 100);
        let mut db = service("db", 2, 100, 100);
        db.stateful = true;
        let services = [web.clone(), api, db];
        let mut placement = place(&first, &services, &BTreeMap::new());
        assert_eq!(nodes_of(&placement, "web"), ["a1", "a1"]);
        // Two more nodes check in: nothing moves by placement alone.
        let all = [
            node("a1", "a", 4000, 8192),
            node("a2", "a", 4000, 8192),
            node("b1", "b", 4000, 8192),
        ];
        let kept = place(&all, &services, &placement.assigned);
        assert_eq!(kept, placement);
        placement = kept;
        // Spread: each stateless service moves one replica, to the other
        // zone first; stateful ones stay.
        let moved = spread(&mut placement, &all, &services, &BTreeSet::new());
        assert_eq!(moved.len(), 2, "{moved:?}");
        assert_eq!(nodes_of(&placement, "web"), ["a1", "b1"]);
        assert_eq!(nodes_of(&placement, "api"), ["a1", "b1"]);
        assert_eq!(nodes_of(&placement, "db"), ["a1", "a1"]);
        // Spread out already: nothing more moves; a busy service waits.
        assert!(spread(&mut placement, &all, &services, &BTreeSet::new()).is_empty());
        let mut crowded = place(&first, &services, &BTreeMap::new());
        let busy = BTreeSet::from([("app".to_owned(), "web".to_owned())]);
        let moved = spread(&mut crowded, &all, &services, &busy);
        assert_eq!(
            moved.iter().map(|r| r.service.as_str()).collect::<Vec<_>>(),
            ["api"]
        );
    }

    #[test]
    fn spreading_respects_room_and_host_ports() {
        // Two replicas with a host port share a zone, not a node: the
        // one node of the other zone that has the port free takes one.
        let mut web = service("web", 2, 100, 100);
        web.host_port = Some(80);
        let zone_a = [node("a1", "a", 4000, 8192), node("a2", "a", 4000, 8192)];
        let mut placement = place(&zone_a, std::slice::from_ref(&web), &BTreeMap::new());
        assert_eq!(nodes_of(&placement, "web"), ["a1", "a2"]);
        let mut taken = node("b1", "b", 4000, 8192);
        taken.ports_in_use.insert(80);
        let with_taken = [zone_a[0].clone(), zone_a[1].clone(), taken.clone()];
        assert!(
            spread(
                &mut placement,
                &with_taken,
                std::slice::from_ref(&web),
                &BTreeSet::new()
            )
            .is_empty(),
            "b1's port 80 is taken"
        );
        let all = [
            zone_a[0].clone(),
            zone_a[1].clone(),
            taken,
            node("b2", "b", 4000, 8192),
        ];
        let moved = spread(
            &mut placement,
            &all,
            std::slice::from_ref(&web),
            &BTreeSet::new(),
        );
        assert_eq!(moved.len(), 1);
        assert_eq!(placement.assigned[&moved[0]], "b2");
        // No room: nothing moves.
        let api = service("api", 3, 1000, 100);
        let crowded = [node("a1", "a", 4000, 8192)];
        let mut placement = place(&crowded, std::slice::from_ref(&api), &BTreeMap::new());
        let nodes = [node("a1", "a", 4000, 8192), node("b1", "b", 500, 8192)];
        assert!(
            spread(
                &mut placement,
                &nodes,
                std::slice::from_ref(&api),
                &BTreeSet::new()
            )
            .is_empty(),
            "b1 has no room for api"
        );
    }

    #[test]
    fn replicas_spread_over_nodes_and_zones_first() {
        let nodes = [
            node("a1", "a", 2000, 4096),
            node("a2", "a", 2000, 4096),
            node("b1", "b", 2000, 4096),
        ];
        let placement = place(&nodes, &[service("web", 2, 100, 100)], &BTreeMap::new());
        let mut used = nodes_of(&placement, "web");
        used.sort();
        // One in each zone: a1 (first in order) and then zone b.
        assert_eq!(used, ["a1", "b1"]);
    }

    #[test]
    fn what_fits_nowhere_says_why() {
        let nodes = [node("n1", "a", 1000, 1024)];
        let placement = place(&nodes, &[service("big", 1, 1500, 100)], &BTreeMap::new());
        let reason = placement.unplaced.values().next().expect("unplaced");
        assert!(reason.contains("needs 1500m cpu"), "{reason}");
        assert!(reason.contains("1000m cpu and 1024 MiB"), "{reason}");

        let mut web = service("web", 2, 100, 100);
        web.host_port = Some(80);
        let placement = place(&nodes, &[web], &BTreeMap::new());
        assert_eq!(placement.assigned.len(), 1);
        let reason = placement.unplaced.values().next().expect("unplaced");
        assert!(reason.contains("host port 80 is taken"), "{reason}");
    }

    #[test]
    fn a_lost_node_moves_only_its_replicas() {
        let nodes = [
            node("n1", "a", 2000, 4096),
            node("n2", "b", 2000, 4096),
            node("n3", "a", 2000, 4096),
        ];
        let services = [service("web", 3, 500, 512), service("api", 2, 250, 256)];
        let before = place(&nodes, &services, &BTreeMap::new());
        let after = place(&nodes[1..], &services, &before.assigned);
        assert!(after.unplaced.is_empty());
        for (replica, node) in &before.assigned {
            if node != "n1" {
                assert_eq!(after.assigned.get(replica), Some(node), "{replica} moved");
            } else {
                assert_ne!(after.assigned.get(replica).map(String::as_str), Some("n1"));
            }
        }
    }

    #[test]
    fn a_stateful_replica_keeps_its_node_even_when_a_stateless_one_was_there_first() {
        let nodes = [node("n1", "a", 1000, 1024), node("n2", "b", 1000, 1024)];
        let mut redis = service("redis", 1, 800, 512);
        redis.stateful = true;
        let web = service("web", 1, 800, 512);
        let current = BTreeMap::from([
            (replica(&redis, 1), "n2".to_owned()),
            (replica(&web, 1), "n2".to_owned()),
        ]);
        let placement = place(&nodes, &[web.clone(), redis.clone()], &current);
        assert_eq!(placement.assigned[&replica(&redis, 1)], "n2");
        assert_eq!(placement.assigned[&replica(&web, 1)], "n1");
    }

    prop_compose! {
        fn cluster()(
            nodes in prop::collection::vec((0u8..3, 1u32..=8, 1u64..=16), 1..12),
            services in prop::collection::vec(
                (0u32..6, 1u32..=20, 1u64..=40, prop::option::of(prop::sample::select(vec![80u16, 443, 8080])), any::<bool>()),
                1..10,
            ),
        ) -> (Vec<NodeSpec>, Vec<ServiceSpec>) {
            let nodes = nodes
                .into_iter()
                .enumerate()
                .map(|(i, (zone, cpu, memory))| {
                    node(&format!("i-{i:03}"), ["us-a", "us-b", "us-c"][usize::from(zone)], cpu * 500, memory * 512)
                })
                .collect();
            let services = services
                .into_iter()
                .enumerate()
                .map(|(i, (replicas, cpu, memory, host_port, stateful))| ServiceSpec {
                    host_port,
                    stateful,
                    ..service(&format!("s{i}"), replicas, cpu * 50, memory * 64)
                })
                .collect();
            (nodes, services)
        }
    }

    fn check_invariants(nodes: &[NodeSpec], services: &[ServiceSpec], placement: &Placement) {
        let by_name: BTreeMap<&str, &ServiceSpec> =
            services.iter().map(|s| (s.service.as_str(), s)).collect();
        for node in nodes {
            let here: Vec<&ServiceSpec> = placement
                .on_node(&node.id)
                .map(|r| by_name[r.service.as_str()])
                .collect();
            let cpu: u64 = here.iter().map(|s| u64::from(s.cpu_millis)).sum();
            let memory: u64 = here.iter().map(|s| s.memory_mib).sum();
            assert!(cpu <= u64::from(node.cpu_millis), "cpu over on {}", node.id);
            assert!(memory <= node.memory_mib, "memory over on {}", node.id);
            let ports: Vec<u16> = here.iter().filter_map(|s| s.host_port).collect();
            let unique: BTreeSet<u16> = ports.iter().copied().collect();
            assert_eq!(ports.len(), unique.len(), "host port clash on {}", node.id);
        }
        for service in services {
            for n in service.numbers() {
                let r = replica(service, n);
                assert!(
                    placement.assigned.contains_key(&r) != placement.unplaced.contains_key(&r),
                    "{r} must be either placed or unplaced"
                );
            }
        }
        let wanted: usize = services.iter().map(|s| s.replicas as usize).sum();
        assert_eq!(placement.assigned.len() + placement.unplaced.len(), wanted);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn capacity_ports_and_completeness_hold((nodes, services) in cluster()) {
            let placement = place(&nodes, &services, &BTreeMap::new());
            check_invariants(&nodes, &services, &placement);
        }

        #[test]
        fn the_same_input_gives_the_same_output((nodes, services) in cluster()) {
            let first = place(&nodes, &services, &BTreeMap::new());
            let mut shuffled = nodes.clone();
            shuffled.reverse();
            let mut services_reversed = services.clone();
            services_reversed.reverse();
            prop_assert_eq!(&first, &place(&shuffled, &services_reversed, &BTreeMap::new()));
            prop_assert_eq!(&first, &place(&nodes, &services, &BTreeMap::new()));
        }

        #[test]
        fn placing_again_moves_nothing_and_a_new_node_moves_nothing((nodes, services) in cluster()) {
            let first = place(&nodes, &services, &BTreeMap::new());
            let again = place(&nodes, &services, &first.assigned);
            prop_assert_eq!(&first.assigned, &again.assigned);
            let mut more = nodes.clone();
            more.push(node("i-999", "us-a", 4000, 8192));
            let grown = place(&more, &services, &first.assigned);
            check_invariants(&more, &services, &grown);
            for (replica, node) in &first.assigned {
                prop_assert_eq!(grown.assigned.get(replica), Some(node));
            }
        }

        #[test]
        fn losing_a_node_moves_only_its_replicas_and_stateful_ones_stay(
            (nodes, services) in cluster(),
            lost in any::<prop::sample::Index>(),
        ) {
            let first = place(&nodes, &services, &BTreeMap::new());
            let gone = nodes[lost.index(nodes.len())].id.clone();
            let rest: Vec<NodeSpec> = nodes.iter().filter(|n| n.id != gone).cloned().collect();
            let after = place(&rest, &services, &first.assigned);
            check_invariants(&rest, &services, &after);
            for (replica, node) in &first.assigned {
                if *node != gone {
                    prop_assert_eq!(after.assigned.get(replica), Some(node), "{} moved", replica);
                }
            }
        }

        #[test]
        fn with_room_to_spare_replicas_spread_evenly(
            zones in 1usize..=3,
            count in 2usize..10,
            replicas in prop::collection::vec(1u32..12, 1..6),
        ) {
            let nodes: Vec<NodeSpec> = (0..count)
                .map(|i| node(&format!("n{i:02}"), ["a", "b", "c"][i % zones], 64_000, 1 << 20))
                .collect();
            let services: Vec<ServiceSpec> = replicas
                .iter()
                .enumerate()
                .map(|(i, &n)| service(&format!("s{i}"), n, 100, 128))
                .collect();
            let placement = place(&nodes, &services, &BTreeMap::new());
            prop_assert!(placement.unplaced.is_empty());
            for service in &services {
                let used = nodes_of(&placement, &service.service);
                let counts: Vec<usize> = nodes
                    .iter()
                    .map(|n| used.iter().filter(|u| **u == n.id).count())
                    .collect();
                let (most, least) = (counts.iter().max().unwrap_or(&0), counts.iter().min().unwrap_or(&0));
                prop_assert!(most - least <= 1, "{} spread {:?}", service.service, counts);
                let zones_used: BTreeSet<&str> = used
                    .iter()
                    .map(|u| nodes.iter().find(|n| n.id == *u).map_or("", |n| n.zone.as_str()))
                    .collect();
                prop_assert_eq!(zones_used.len(), zones.min(service.replicas as usize).min(count));
            }
        }
    }
}
