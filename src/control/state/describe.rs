//! The cluster's description as of now, made from the shared state: what
//! `GET /v1/cluster` serves and the publisher copies to the bucket.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::Kick;
use super::assignments::Assignments;
use crate::control::registry::ServiceState;
use crate::spec::description::{
    AppDescription, ClusterDescription, InstanceDescription, NodeDescription, PlacedReplica,
    ServiceDescription, UnplacedReplica,
};
use crate::spec::registry::Status;
use crate::spec::release::{ServiceRelease, short};

/// Where a service's replicas are placed and how they run; what did not fit.
///
/// A replica's state is its node's last report. Before its node has
/// reported to this server (a new leader, for up to one report period), a
/// replica registered on that node is shown running, as the registry the
/// leader rebuilt from Route53 says: a takeover never blanks the
/// description.
fn placement_of(
    assignments: &Assignments,
    registered: &ServiceState,
    app: &str,
    service: &str,
) -> (Vec<PlacedReplica>, Vec<UnplacedReplica>) {
    let ours = |r: &&crate::scheduler::placement::Replica| r.app == app && r.service == service;
    let placed = assignments
        .placement
        .assigned
        .iter()
        .filter(|(r, _)| ours(r))
        .map(|(replica, node)| {
            let report = assignments.reports.get(node).and_then(|(_, report)| {
                report
                    .replicas
                    .iter()
                    .find(|r| r.app == app && r.service == service && r.replica == replica.index)
            });
            let unreported = !assignments.reports.contains_key(node);
            let registered = unreported
                && registered
                    .instances
                    .values()
                    .any(|i| i.node == *node && i.replica == Some(replica.index));
            PlacedReplica {
                replica: replica.index,
                node: node.clone(),
                state: report
                    .map(|r| r.state)
                    .or(registered.then_some(crate::spec::assignment::ReplicaState::Running)),
                detail: report.and_then(|r| r.detail.clone()),
                output: report
                    .filter(|r| r.state == crate::spec::assignment::ReplicaState::Failed)
                    .map(|r| r.output.clone())
                    .unwrap_or_default(),
            }
        })
        .collect();
    let unplaced = assignments
        .placement
        .unplaced
        .iter()
        .filter(|(r, _)| ours(r))
        .map(|(replica, reason)| UnplacedReplica {
            replica: replica.index,
            reason: reason.clone(),
        })
        .collect();
    (placed, unplaced)
}

/// One service's description.
pub fn service_description(
    state: &ServiceState,
    assignments: &Assignments,
    app: &str,
    name: &str,
) -> ServiceDescription {
    let instances: Vec<InstanceDescription> = state
        .instances
        .values()
        .map(|i| InstanceDescription {
            id: i.id.clone(),
            node: i.node.clone(),
            address: i.address,
            port: i.port,
            version: i.version.clone(),
            health: i.health.status,
            last_check_output: i.health.last_output.clone(),
            load_balancer: None,
        })
        .collect();
    let (placed, unplaced) = placement_of(assignments, state, app, name);
    let key = (app.to_owned(), name.to_owned());
    let awaiting = assignments.awaiting_first_deploy(&key, &state.config);
    ServiceDescription {
        placed,
        unplaced,
        private_name: state.config.private_name.clone(),
        public_names: state.config.public_names.clone(),
        desired: assignments.desired_count(&key, &state.config),
        awaiting_first_deploy: awaiting,
        runs: Vec::new(),
        release: None,
        running: instances.len(),
        healthy: instances
            .iter()
            .filter(|i| i.health == Status::Healthy)
            .count(),
        instances,
    }
}

/// The cluster's description as of now.
pub fn describe(kick: &Kick) -> ClusterDescription {
    let mut releases = shown(kick);
    let registry = kick.registry.lock().expect("registry");
    let assignments = kick.assignments.lock().expect("assignments");
    let mut runs = runs_shown(kick);
    let nodes_config = &kick.config.nodes;
    let empty = |instance_type: String, address: Option<IpAddr>| NodeDescription {
        instance_type,
        address,
        instances: 0,
        cpu_requested_millis: 0,
        cpu_allocatable_millis: nodes_config.allocatable_cpu_millis,
        memory_requested_mib: 0,
        memory_allocatable_mib: nodes_config.allocatable_memory_mib,
        draining: None,
    };
    let mut nodes: BTreeMap<String, NodeDescription> = kick
        .nodes
        .lock()
        .expect("nodes")
        .known
        .values()
        .map(|n| (n.id.clone(), empty(n.instance_type.clone(), n.address)))
        .collect();
    let apps = registry
        .apps
        .iter()
        .map(|(app, services)| {
            let services = services
                .iter()
                .map(|(name, state)| {
                    for instance in state.instances.values() {
                        let node = nodes
                            .entry(instance.node.clone())
                            .or_insert_with(|| empty(String::new(), None));
                        node.instances += 1;
                        node.cpu_requested_millis += u64::from(state.config.cpu_millis);
                        node.memory_requested_mib += state.config.memory_mib;
                    }
                    let mut description = service_description(state, &assignments, app, name);
                    let key = (app.clone(), name.clone());
                    for instance in &mut description.instances {
                        instance.load_balancer = crate::control::state::targets::health_of(
                            kick,
                            &key,
                            instance.address,
                            instance.port,
                        );
                    }
                    description.release =
                        releases.get_mut(app).and_then(|r| r.services.remove(name));
                    description.runs = runs
                        .remove(&(app.clone(), name.clone()))
                        .unwrap_or_default();
                    (name.clone(), description)
                })
                .collect();
            let deploying = releases.get_mut(app).and_then(|r| r.deploying.take());
            (
                app.clone(),
                AppDescription {
                    services,
                    deploying,
                },
            )
        })
        .collect();
    for (node, reason) in &assignments.draining {
        if let Some(description) = nodes.get_mut(node) {
            description.draining = Some(reason.clone());
        }
    }
    let decisions = kick
        .scaling
        .lock()
        .expect("scaling")
        .decisions
        .iter()
        .cloned()
        .collect();
    ClusterDescription {
        cluster: registry.cluster.clone(),
        generated_at: crate::clock::unix_seconds(),
        apps,
        nodes,
        decisions,
        nodes_held: kick.nodes.lock().expect("nodes").held.clone(),
    }
}

/// The runs under way, by service.
fn runs_shown(
    kick: &Kick,
) -> BTreeMap<(String, String), Vec<crate::spec::description::RunDescription>> {
    let mut shown: BTreeMap<_, Vec<_>> = BTreeMap::new();
    for run in kick.runs.lock().expect("runs").runs.values() {
        if run.state.ended() {
            continue;
        }
        shown
            .entry((run.assigned.app.clone(), run.assigned.service.clone()))
            .or_default()
            .push(crate::spec::description::RunDescription {
                id: run.assigned.id,
                node: run.node.clone(),
                command: run.assigned.command.clone(),
                state: run.state,
                created: run.created,
            });
    }
    shown
}

/// What describe shows of an app's releases: each service's, and the
/// deploy rolling out.
#[derive(Debug, Clone, Default)]
struct Shown {
    pub services: BTreeMap<String, ServiceRelease>,
    pub deploying: Option<String>,
}

/// Each app's releases, for the description.
fn shown(kick: &Kick) -> BTreeMap<String, Shown> {
    let deploys = kick.deploys.lock().expect("deploys");
    deploys
        .history
        .iter()
        .map(|(app, releases)| {
            let services = deploys
                .current(app)
                .into_iter()
                .map(|(service, (id, image))| {
                    let commit = releases
                        .iter()
                        .find(|r| r.id == id)
                        .and_then(|r| r.commit.clone());
                    (service, ServiceRelease { id, commit, image })
                })
                .collect();
            let deploying = deploys.active(app).map(|r| {
                format!(
                    "v{}{} by {}, started {} ago",
                    r.id,
                    r.commit
                        .as_deref()
                        .map_or(String::new(), |c| format!(" ({})", short(c))),
                    r.by.as_deref().unwrap_or("someone"),
                    crate::ui::describe::age(
                        crate::clock::unix_seconds().saturating_sub(r.started)
                    )
                )
            });
            (
                app.clone(),
                Shown {
                    services,
                    deploying,
                },
            )
        })
        .collect()
}
