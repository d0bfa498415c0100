//! Assignments: which replicas each node runs, and each node's container
//! subnet. The leader places every service's replicas on the cluster's
//! nodes ([`crate::scheduler::placement`]), and node agents long-poll their own share
//! (`GET /v1/nodes/{id}/assignment?after=GENERATION`) and report what
//! they run (`PUT /v1/nodes/{id}/status`).
//!
//! Nothing here lives only in memory: after a failover the new leader
//! seeds the placement from the registered instances (each carries its node
//! and replica number, kept in Route53) and the subnets from the VPC route
//! table, so every replica stays where it runs.
//!
//! Networking: every node gets a /24 of the cluster's container range
//! (outside the VPC), routed to it in the VPC's route table; the node agent
//! gives each replica an address in it. DNS then carries container
//! addresses, any number of replicas of any service can share a node, and
//! a private service needs no host port.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use crate::control::state::Kick;
use crate::control::state::assignments::Assignments;
use crate::scheduler::placement::{self, NodeSpec, Replica, ServiceSpec, handoffs};
use crate::scheduler::subnets::{NodeSubnet, allocate_subnets};
use crate::spec::assignment::{AssignedReplica, Assignment};
use crate::spec::kick::KickConfig;

/// How often the leader re-reads the cluster's nodes from EC2 and places
/// again: a terminated node's replicas are re-placed within this.
pub const RECONCILE_EVERY: Duration = Duration::from_secs(5);
/// The longest a node agent's long poll is held.
pub const MAX_WAIT: Duration = Duration::from_secs(60);

/// A service's wanted replica count ([`Assignments::wanted_count`]); 0 for
/// a service the config does not have.
pub fn wanted_count(
    config: &KickConfig,
    assignments: &Assignments,
    key: &crate::spec::kick::ServiceKey,
) -> u32 {
    config
        .apps
        .get(&key.0)
        .and_then(|a| a.services.get(&key.1))
        .map_or(0, |s| assignments.wanted_count(key, s))
}

/// The services' replicas, as placement takes them: a deploy's count, the
/// scaler's, or `replicas.min`; none for a built service before its first
/// release.
pub fn service_specs(config: &KickConfig, assignments: &Assignments) -> Vec<ServiceSpec> {
    config
        .services()
        .map(|(key, s)| {
            let replicas = match assignments.rolling.get(&key) {
                Some(count) => *count,
                None if assignments.awaiting_first_deploy(&key, s) => 0,
                None => assignments.wanted_count(&key, s),
            };
            let first = assignments.first.get(&key).copied().unwrap_or(1);
            let (app, service) = key;
            ServiceSpec {
                first,
                app,
                service,
                replicas,
                cpu_millis: s.cpu_millis,
                memory_mib: s.memory_mib,
                host_port: s.host_port,
                stateful: s.stateful,
            }
        })
        .collect()
}

/// Marks the description as changed (a deploy's progress shows there).
pub fn bump(kick: &Kick) {
    kick.assignments.lock().expect("assignments").version += 1;
}

/// The environment that tells a replica where its dependencies are.
pub fn dependency_env(config: &KickConfig, app: &str, service: &str) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    let Some(section) = config.apps.get(app) else {
        return env;
    };
    let Some(own) = section.services.get(service) else {
        return env;
    };
    for dependency in &own.depends_on {
        let Some(target) = section.services.get(dependency) else {
            continue;
        };
        let (Some(host), Some(port)) = (&target.private_name, target.port) else {
            continue;
        };
        let prefix = dependency.to_ascii_uppercase().replace('-', "_");
        env.insert(format!("{prefix}_HOST"), host.clone());
        env.insert(format!("{prefix}_PORT"), port.to_string());
        env.insert(format!("{prefix}_URL"), format!("http://{host}:{port}"));
    }
    env
}

/// The nodes kick knows, as placement takes them, by id.
pub fn node_specs(kick: &Kick) -> BTreeMap<String, NodeSpec> {
    kick.nodes
        .lock()
        .expect("nodes")
        .known
        .values()
        .map(|n| {
            (
                n.id.clone(),
                NodeSpec {
                    id: n.id.clone(),
                    zone: n.zone.clone(),
                    cpu_millis: kick.config.nodes.allocatable_cpu_millis,
                    memory_mib: kick.config.nodes.allocatable_memory_mib,
                    ports_in_use: BTreeSet::new(),
                },
            )
        })
        .collect()
}

/// Places again from the nodes kick knows, keeping what runs where it is;
/// bumps the generation and wakes the node agents when anything moved.
pub async fn replace(kick: &Kick) {
    let specs = node_specs(kick);
    let node_ids: BTreeSet<String> = specs.keys().cloned().collect();
    let nodes: Vec<NodeSpec> = specs.into_values().collect();
    // What runs now: the last placement, and for replicas it does not
    // hold (a new leader), where the registry says they run.
    let mut current = kick
        .assignments
        .lock()
        .expect("assignments")
        .placement
        .assigned
        .clone();
    {
        let registry = kick.registry.lock().expect("registry");
        for (app, services) in &registry.apps {
            for (service, state) in services {
                for instance in state.instances.values() {
                    if let Some(replica) = instance.replica {
                        current
                            .entry(Replica {
                                app: app.clone(),
                                service: service.clone(),
                                index: replica,
                            })
                            .or_insert_with(|| instance.node.clone());
                    }
                }
            }
        }
    }
    let (ready, draining, specs, busy) = {
        let mut assignments = kick.assignments.lock().expect("assignments");
        assignments.ready.retain(|n| node_ids.contains(n));
        if !assignments.seeded {
            // A new leader keeps the counts the last one scaled to, and
            // the replica numbers that run.
            assignments.wanted = seed_wanted(&kick.config, &current);
            assignments.first = seed_first(&current);
            assignments.seeded = true;
        }
        // Services moving a replica or rolling out are not spread now.
        let busy: BTreeSet<(String, String)> = assignments
            .handoff
            .keys()
            .chain(assignments.lingering.iter().map(|(r, _)| r))
            .map(|r| (r.app.clone(), r.service.clone()))
            .chain(assignments.rolling.keys().cloned())
            .collect();
        (
            assignments.ready.clone(),
            assignments.draining.clone(),
            service_specs(&kick.config, &assignments),
            busy,
        )
    };
    let hosting: BTreeSet<&String> = current.values().collect();
    let nodes: Vec<NodeSpec> = nodes
        .into_iter()
        .filter(|n| ready.contains(&n.id) || hosting.contains(&n.id))
        .filter(|n| !draining.contains_key(&n.id))
        .collect();
    let mut placement = placement::place(&nodes, &specs, &current);
    // Nodes check in one at a time, and the first got every replica:
    // spread what crowds a node or a zone, a replica per service at a
    // time, make-before-break through the handoffs below.
    for moved in placement::spread(&mut placement, &nodes, &specs, &busy) {
        eprintln!(
            "kick: moving {moved} to {} to spread {}.{} over the nodes (it keeps running where it is until the new one is healthy)",
            placement.assigned.get(&moved).map_or("?", String::as_str),
            moved.app,
            moved.service
        );
    }
    if nodes.is_empty() && !node_ids.is_empty() {
        // The nodes are there, their agents are not (yet): say so, once.
        let reason = format!(
            "none of the cluster's {} nodes has a node agent that has checked in yet",
            node_ids.len()
        );
        placement
            .unplaced
            .values_mut()
            .for_each(|r| r.clone_from(&reason));
    }
    let healthy = healthy_replicas(kick);
    let mut routes = (Vec::new(), Vec::new());
    let (changed, back) = {
        let mut assignments = kick.assignments.lock().expect("assignments");
        let handoff = handoffs(
            &assignments.handoff,
            &assignments.placement.assigned,
            &placement.assigned,
            &node_ids,
            &healthy,
        );
        let mut changed = assignments.placement != placement || assignments.handoff != handoff;
        let back = settle_moves(&mut assignments, &handoff, &node_ids, &placement);
        assignments.handoff = handoff;
        if let Some(range) = kick.network.range {
            routes = allocate_subnets(range, &node_ids, &mut assignments.subnets);
            changed |= !routes.0.is_empty() || !routes.1.is_empty();
        }
        if changed {
            for (replica, reason) in &placement.unplaced {
                if assignments.placement.unplaced.get(replica) != Some(reason) && !nodes.is_empty()
                {
                    eprintln!("kick: cannot place {replica}: {reason}");
                }
            }
            assignments.placement = placement;
        }
        (changed, back)
    };
    undrain(kick, &back).await;
    if let Some(table) = &kick.network.route_table {
        route(kick, table, &routes.0, &routes.1).await;
    }
    if changed {
        new_generation(kick);
    }
}

/// A new assignment generation, told to the long polls that wait for one.
pub fn new_generation(kick: &Kick) {
    let mut assignments = kick.assignments.lock().expect("assignments");
    assignments.generation += 1;
    assignments.version += 1;
    let generation = assignments.generation;
    drop(assignments);
    kick.placed.send_replace(generation);
}

/// Moves that ended (in `old` handoffs, not in `new`), from a node that
/// is still there and the replica is not placed back on: the copy the node
/// ran drains before it stops, as a rollout's do.
fn ended_moves(
    old: &BTreeMap<Replica, String>,
    new: &BTreeMap<Replica, String>,
    alive: &BTreeSet<String>,
    placement: &placement::Placement,
) -> Vec<(Replica, String)> {
    old.iter()
        .filter(|(replica, from)| {
            !new.contains_key(*replica)
                && alive.contains(*from)
                && placement.assigned.get(*replica) != Some(*from)
        })
        .map(|(replica, from)| (replica.clone(), from.clone()))
        .collect()
}

/// Drains a replica whose move ended on the node it left (`moved`): out of
/// DNS, then, once Route53 has the change everywhere, running for the
/// service's drain; then its node is told to stop it. In a task of the
/// leader's own.
fn drain_after_move(leader: &Arc<Kick>, moved: (Replica, String)) {
    let kick = Arc::clone(leader);
    let task = tokio::spawn(async move {
        let (replica, node) = &moved;
        let drain = kick
            .config
            .apps
            .get(&replica.app)
            .and_then(|a| a.services.get(&replica.service))
            .map_or(crate::spec::kick::DEFAULT_DRAIN, |s| s.deploy.drain);
        // Placed back on that node meanwhile: that copy runs, undrained.
        let back = kick
            .assignments
            .lock()
            .expect("assignments")
            .placement
            .assigned
            .get(replica)
            == Some(node);
        if !back {
            crate::control::controllers::health::drain_out_of_dns(
                &kick,
                &(replica.app.clone(), replica.service.clone()),
                |i| i.node == *node && i.replica == Some(replica.index),
                drain,
            )
            .await;
        }
        let lingered = kick
            .assignments
            .lock()
            .expect("assignments")
            .lingering
            .remove(&moved);
        if lingered {
            // The node is told to stop it now, not at its next poll.
            new_generation(&kick);
        }
        replace(&kick).await;
    });
    leader.keep([task.abort_handle()]);
}

/// Moves that ended (`handoff` is the new handoffs) start lingering on
/// the node they left, to drain; a replica placed back on a node where its
/// copy lingers stops lingering: that copy is the one that runs now. The
/// copies placed back, to take out of draining.
fn settle_moves(
    assignments: &mut Assignments,
    handoff: &BTreeMap<Replica, String>,
    alive: &BTreeSet<String>,
    placement: &placement::Placement,
) -> Vec<(Replica, String)> {
    for moved in ended_moves(&assignments.handoff, handoff, alive, placement) {
        if assignments.lingering.insert(moved.clone()) {
            assignments.to_drain.push(moved);
        }
    }
    let back: Vec<(Replica, String)> = assignments
        .lingering
        .iter()
        .filter(|(replica, from)| placement.assigned.get(replica) == Some(from))
        .cloned()
        .collect();
    for copy in &back {
        assignments.lingering.remove(copy);
    }
    back
}

/// Takes the copies in `copies` (replica, node) out of draining: they run
/// as placed again, back in their service's DNS answers.
async fn undrain(kick: &Kick, copies: &[(Replica, String)]) {
    let mut touched = BTreeSet::new();
    {
        let mut registry = kick.registry.lock().expect("registry");
        for (replica, node) in copies {
            if let Ok(state) = registry.service_mut(&replica.app, &replica.service)
                && state.set_draining(
                    |i| i.node == *node && i.replica == Some(replica.index),
                    false,
                ) > 0
            {
                touched.insert((replica.app.clone(), replica.service.clone()));
            }
        }
    }
    for (app, service) in touched {
        let _ = crate::control::controllers::health::sync_dns(kick, &app, &service).await;
    }
}

/// Replicas healthy where they run, for the handoffs.
fn healthy_replicas(kick: &Kick) -> BTreeSet<(Replica, String)> {
    let registry = kick.registry.lock().expect("registry");
    registry
        .apps
        .iter()
        .flat_map(|(app, services)| {
            services.iter().flat_map(move |(service, state)| {
                // A draining copy is on its way out: it never completes
                // a move.
                state.instances.values().filter_map(move |i| {
                    i.in_service().then_some((
                        Replica {
                            app: app.clone(),
                            service: service.clone(),
                            index: i.replica?,
                        },
                        i.node.clone(),
                    ))
                })
            })
        })
        .collect()
}

/// The replica counts of scaled services as they run: as many as are
/// placed or registered, within the service's bounds.
pub fn seed_wanted(
    config: &KickConfig,
    running: &BTreeMap<Replica, String>,
) -> BTreeMap<crate::spec::kick::ServiceKey, u32> {
    let mut counts: BTreeMap<crate::spec::kick::ServiceKey, u32> = BTreeMap::new();
    for replica in running.keys() {
        *counts
            .entry((replica.app.clone(), replica.service.clone()))
            .or_default() += 1;
    }
    counts
        .into_iter()
        .filter_map(|(key, count)| {
            let s = config.apps.get(&key.0)?.services.get(&key.1)?;
            (s.scale.is_some() && s.replicas.min < s.replicas.max)
                .then(|| (key, count.clamp(s.replicas.min, s.replicas.max)))
        })
        .collect()
}

/// Each service's lowest running replica number, where it is not 1.
pub fn seed_first(
    running: &BTreeMap<Replica, String>,
) -> BTreeMap<crate::spec::kick::ServiceKey, u32> {
    let mut first: BTreeMap<crate::spec::kick::ServiceKey, u32> = BTreeMap::new();
    for replica in running.keys() {
        let entry = first
            .entry((replica.app.clone(), replica.service.clone()))
            .or_insert(replica.index);
        *entry = (*entry).min(replica.index);
    }
    first.retain(|_, n| *n != 1);
    first
}

/// Adds the routes of new nodes' subnets and removes those of nodes that
/// are gone, in the VPC's route table. A failure is logged and tried again
/// at the next reconcile (the route is then missing, not wrong).
async fn route(kick: &Kick, table: &str, added: &[NodeSubnet], removed: &[NodeSubnet]) {
    if kick.lease.as_ref().is_some_and(|l| !l.valid()) {
        return;
    }
    for (node, subnet) in removed {
        if let Err(err) = kick.aws.delete_route(table, &subnet.to_string()).await {
            eprintln!("kick: cannot remove the route of {node}'s subnet {subnet}: {err}");
        }
    }
    for (node, subnet) in added {
        if let Err(err) = kick
            .aws
            .route_to_node(table, &subnet.to_string(), node)
            .await
        {
            eprintln!("kick: cannot route {subnet} to {node}: {err}");
            kick.assignments
                .lock()
                .expect("assignments")
                .subnets
                .remove(node);
        }
    }
}

/// The assignment of `node` as of now.
pub fn assignment(kick: &Kick, node: &str) -> Assignment {
    let assignments = kick.assignments.lock().expect("assignments");
    let leaving = assignments
        .handoff
        .iter()
        .filter(|(_, from)| from.as_str() == node)
        .map(|(replica, _)| replica)
        .chain(
            assignments
                .lingering
                .iter()
                .filter(|(_, from)| from.as_str() == node)
                .map(|(replica, _)| replica),
        );
    let replicas = assignments
        .placement
        .on_node(node)
        .chain(leaving)
        .filter_map(|replica| {
            let section = kick
                .config
                .apps
                .get(&replica.app)?
                .services
                .get(&replica.service)?;
            Some(AssignedReplica {
                app: replica.app.clone(),
                service: replica.service.clone(),
                replica: replica.index,
                unit: section.unit.clone(),
                image: assignments.image_of(replica, section.image.as_ref()),
                port: section.port,
                host_port: section.host_port,
                env: dependency_env(&kick.config, &replica.app, &replica.service),
            })
        })
        .collect();
    let generation = assignments.generation;
    let subnet = assignments.subnets.get(node).map(ToString::to_string);
    drop(assignments);
    let runs = kick
        .runs
        .lock()
        .expect("runs")
        .on_node(node)
        .map(|r| r.assigned.clone())
        .collect();
    Assignment {
        node: node.to_owned(),
        generation,
        subnet,
        replicas,
        runs,
    }
}

/// The Auto Scaling group's instances in service, read only when EC2's
/// `list` lacks a known node (`None` when it lacks none, or the group
/// cannot be read).
async fn group_if_missing(kick: &Kick, list: &[crate::aws::Node]) -> Option<BTreeSet<String>> {
    let missing = {
        let nodes = kick.nodes.lock().expect("nodes");
        nodes
            .known
            .keys()
            .any(|id| !list.iter().any(|n| &n.id == id))
    };
    if !missing {
        return None;
    }
    match kick.aws.node_group(&kick.config.nodes.group).await {
        Ok(group) => group.map(|g| g.instances.into_iter().collect()),
        Err(err) => {
            eprintln!("kick: cannot cross-check the nodes with the Auto Scaling group: {err}");
            None
        }
    }
}

/// Re-reads the nodes from EC2 and places again, every
/// [`RECONCILE_EVERY`], while this server leads.
pub fn spawn(kick: Arc<Kick>) -> tokio::task::AbortHandle {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(RECONCILE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match kick.aws.cluster_nodes(&kick.config.cluster.name).await {
                Ok(list) => {
                    let in_group = group_if_missing(&kick, &list).await;
                    let (changed, known) = {
                        let mut nodes = kick.nodes.lock().expect("nodes");
                        let before = (nodes.generation, nodes.held.clone());
                        nodes.replace_checked(list, in_group.as_ref());
                        let changed = nodes.generation != before.0;
                        if nodes.held != before.1 {
                            if let Some(held) = &nodes.held {
                                eprintln!("kick: {held}");
                            }
                            // The description says why: made again.
                            nodes.generation += 1;
                        }
                        let known: BTreeSet<String> = nodes.known.keys().cloned().collect();
                        (changed, known)
                    };
                    // Reports of nodes that left go with them (a stale
                    // failure of a gone node must not fail a deploy).
                    kick.assignments
                        .lock()
                        .expect("assignments")
                        .reports
                        .retain(|node, _| known.contains(node));
                    // A node that is gone takes its instances with it: out
                    // of DNS at once, and placed again below.
                    // With no node in view yet (a leader that started on a
                    // read listing none), the registry keeps what its
                    // records name.
                    let mut touched: BTreeSet<(String, String)> = if known.is_empty() {
                        BTreeSet::new()
                    } else {
                        kick.registry
                            .lock()
                            .expect("registry")
                            .drop_gone_nodes(&known)
                            .into_iter()
                            .collect()
                    };
                    if changed {
                        // Public names carry nodes' public addresses: a
                        // node that got (or lost) one changes them.
                        touched.extend(kick.config.services().filter_map(|(key, section)| {
                            (!section.public_names.is_empty()).then_some(key)
                        }));
                    }
                    for (app, service) in touched {
                        let _ =
                            crate::control::controllers::health::sync_dns(&kick, &app, &service)
                                .await;
                        let _ = crate::control::controllers::health::sync_replicas(
                            &kick, &app, &service,
                        )
                        .await;
                    }
                }
                Err(err) => eprintln!("kick: cannot list the cluster's nodes: {err}"),
            }
            replace(&kick).await;
            let ended = std::mem::take(&mut kick.assignments.lock().expect("assignments").to_drain);
            for moved in ended {
                drain_after_move(&kick, moved);
            }
            crate::control::controllers::scale::step(&kick).await;
        }
    })
    .abort_handle()
}

#[cfg(test)]
mod tests {

    /// A move that ended drains the copy on the node it left, unless the
    /// replica is placed back there (that copy is the one that runs) or
    /// the node is gone.
    #[test]
    fn only_the_copy_left_behind_by_an_ended_move_drains() {
        let r = |index: u32| Replica {
            app: "blog".into(),
            service: "web".into(),
            index,
        };
        let old = BTreeMap::from([
            (r(1), "a".to_owned()),
            (r(2), "a".to_owned()),
            (r(3), "gone".to_owned()),
            (r(4), "a".to_owned()),
        ]);
        let new = BTreeMap::from([(r(4), "a".to_owned())]);
        let alive: BTreeSet<String> = ["a", "b"].map(String::from).into();
        let mut placement = placement::Placement::default();
        placement.assigned.insert(r(1), "b".into());
        placement.assigned.insert(r(2), "a".into());
        placement.assigned.insert(r(3), "b".into());
        placement.assigned.insert(r(4), "b".into());
        assert_eq!(
            ended_moves(&old, &new, &alive, &placement),
            vec![(r(1), "a".to_owned())]
        );
    }
    use super::*;

    fn blog() -> KickConfig {
        let checked = crate::config::check(
            &std::fs::read_to_string(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/examples/blog/huxley.toml"
            ))
            .expect("the blog example"),
        );
        crate::compile::kick::kick_config(&checked.config.expect("valid"))
    }

    #[test]
    fn a_new_leader_keeps_the_replica_counts_that_run() {
        let config = blog();
        let web = &config.apps["blog"].services["web"];
        assert!(web.scale.is_some() && web.replicas.min < web.replicas.max);
        let running = |service: &'static str, count: u32| {
            (1..=count).map(move |index| {
                (
                    Replica {
                        app: "blog".into(),
                        service: service.into(),
                        index,
                    },
                    format!("i-{index}"),
                )
            })
        };
        // web runs one more than its minimum; api is not scaled.
        let counts = seed_wanted(
            &config,
            &running("web", web.replicas.min + 1)
                .chain(running("api", 1))
                .collect(),
        );
        let key = ("blog".to_owned(), "web".to_owned());
        assert_eq!(
            counts,
            BTreeMap::from([(key.clone(), web.replicas.min + 1)])
        );
        // Never beyond the bounds.
        let counts = seed_wanted(&config, &running("web", web.replicas.max + 5).collect());
        assert_eq!(counts[&key], web.replicas.max);
    }

    #[test]
    fn dependencies_are_named_in_the_environment() {
        let config = blog();
        let env = dependency_env(&config, "blog", "web");
        assert_eq!(env["API_HOST"], "api.blog.acme.internal");
        assert_eq!(env["API_PORT"], "9000");
        assert_eq!(env["API_URL"], "http://api.blog.acme.internal:9000");
        assert!(dependency_env(&config, "blog", "api").is_empty());
    }
}
