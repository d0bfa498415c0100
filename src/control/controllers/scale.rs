//! Scaling: how many replicas each service runs and how many nodes the
//! cluster has. One step runs in the leader's reconcile loop (every
//! [`crate::control::controllers::assign::RECONCILE_EVERY`]):
//!
//! 1. **Replicas**, from the CPU and memory the node agents report against
//!    each service's `scale` targets, as Kubernetes' horizontal autoscaler
//!    does: `ceil(replicas × use / target)` within a 10% tolerance, inside
//!    `replicas.min..=max`. Adding is prompt (once the last change's
//!    replicas report, so a change is measured before the next); removing
//!    waits until every recommendation over `scale-in-after` was lower, and
//!    goes to the highest of them.
//! 2. **Nodes out**: replicas that fit on no node raise the group's desired
//!    capacity by the fewest nodes that make them fit (the placement engine
//!    tries), never above `nodes.max`; no second raise until those nodes
//!    join or [`JOIN_WAIT`] passes.
//! 3. **Nodes in** ([`crate::scheduler::consolidate`]): once the cluster has been
//!    steady for `consolidation.after`, nodes whose replicas all fit
//!    elsewhere are drained (their replicas start on other nodes and stop
//!    here once healthy there, make before break), then terminated with the
//!    group's desired capacity decremented. Never below `nodes.min`.
//!
//! Every decision is kept with its reason ([`crate::spec::description::Decision`]) and shown by
//! `GET /v1/cluster` and `huxley cluster describe`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::control::controllers::assign;
use crate::control::state::Kick;
use crate::control::state::assignments::Assignments;
use crate::scheduler::consolidate::{self, Policy};
use crate::scheduler::placement::{self, NodeSpec, Placement, Replica};
use crate::scheduler::scale::Usage;
use crate::scheduler::scale::nodes_to_add;
use crate::scheduler::scale::recommend;
use crate::spec::assignment::ReplicaState;
use crate::spec::kick::KickConfig;
use crate::spec::kick::ServiceKey;

/// Usage reports older than this are not counted.
pub const REPORT_FRESH: Duration = Duration::from_secs(30);
/// After a change, the longest a scale-out waits for the changed replicas
/// to report before it scales again on what it has.
pub const SETTLE: Duration = Duration::from_secs(60);
/// How long nodes asked of the group have to join before kick asks again.
pub const JOIN_WAIT: Duration = Duration::from_secs(600);

/// One scaling step; see the module's documentation.
pub async fn step(kick: &Kick) {
    let now = Instant::now();
    let mut moved = scale_replicas(kick, now);
    moved |= finish_drains(kick).await;
    if moved {
        assign::replace(kick).await;
    }
    if scale_out(kick, now).await {
        assign::replace(kick).await;
    }
    if consolidate(kick, now) {
        assign::replace(kick).await;
    }
}

/// Every service's wanted replica count.
fn wanted(config: &KickConfig, assignments: &Assignments) -> BTreeMap<ServiceKey, u32> {
    config
        .services()
        .map(|(key, s)| {
            let count = assignments.wanted_count(&key, s);
            (key, count)
        })
        .collect()
}

/// What each service's placed replicas use, from fresh reports.
fn usage(assignments: &Assignments) -> BTreeMap<ServiceKey, Usage> {
    let fresh = SystemTime::now() - REPORT_FRESH;
    let mut usage: BTreeMap<ServiceKey, Usage> = BTreeMap::new();
    for (node, (at, report)) in &assignments.reports {
        if *at < fresh {
            continue;
        }
        for r in &report.replicas {
            let placed_here = assignments
                .placement
                .assigned
                .get(&Replica {
                    app: r.app.clone(),
                    service: r.service.clone(),
                    index: r.replica,
                })
                .is_some_and(|n| n == node);
            if !placed_here || r.state != ReplicaState::Running {
                continue;
            }
            let (Some(cpu), Some(memory)) = (r.cpu_millis, r.memory_mib) else {
                continue;
            };
            let entry = usage.entry((r.app.clone(), r.service.clone())).or_default();
            entry.replicas += 1;
            // Checked sums: reports are clamped, but a sum never wraps.
            entry.cpu_millis = entry.cpu_millis.saturating_add(cpu);
            entry.memory_mib = entry.memory_mib.saturating_add(memory);
        }
    }
    usage
}

/// Step 1: replica counts. Whether any changed.
fn scale_replicas(kick: &Kick, now: Instant) -> bool {
    let mut assignments = kick.assignments.lock().expect("assignments");
    let mut scaling = kick.scaling.lock().expect("scaling");
    let counts = wanted(&kick.config, &assignments);
    let usage = usage(&assignments);
    let mut changed = false;
    for (app, section) in &kick.config.apps {
        for (name, service) in &section.services {
            let Some(policy) = &service.scale else {
                continue;
            };
            let key = (app.clone(), name.clone());
            if assignments.rolling.contains_key(&key) {
                // A deploy sets the count until it ends.
                continue;
            }
            let current = counts.get(&key).copied().unwrap_or(service.replicas.min);
            let used = usage.get(&key).copied().unwrap_or_default();
            let Some((count, reason)) = recommend(
                policy,
                service.replicas,
                (service.cpu_millis, service.memory_mib),
                current,
                &used,
            ) else {
                continue;
            };
            let history = scaling.history.entry(key.clone()).or_default();
            history.push_back((now, count));
            while history
                .front()
                .is_some_and(|(t, _)| now.duration_since(*t) > policy.scale_in_after)
            {
                history.pop_front();
            }
            let highest = history.iter().map(|(_, c)| *c).max().unwrap_or(count);
            let next = if count > current {
                scaling.low_since.remove(&key);
                let settled = used.replicas >= current
                    || scaling
                        .changed
                        .get(&key)
                        .is_none_or(|t| now.duration_since(*t) >= SETTLE);
                settled.then_some(count)
            } else if count < current {
                let since = *scaling.low_since.entry(key.clone()).or_insert(now);
                (now.duration_since(since) >= policy.scale_in_after && highest < current)
                    .then_some(highest)
            } else {
                scaling.low_since.remove(&key);
                None
            };
            if let Some(next) = next {
                scaling.decide(format!(
                    "scaling {app}.{name} from {current} to {next} replicas: {reason}"
                ));
                assignments.wanted.insert(key.clone(), next);
                scaling.changed.insert(key.clone(), now);
                scaling.low_since.remove(&key);
                scaling.history.remove(&key);
                changed = true;
            }
        }
    }
    if changed {
        scaling.steady_since = None;
        assignments.version += 1;
    }
    changed
}

/// Whether this server may still change AWS.
fn leading(kick: &Kick) -> bool {
    kick.lease.as_ref().is_none_or(|l| l.valid())
}

/// Drained nodes: terminated once they run nothing, forgotten once EC2
/// no longer lists them. Whether the draining set changed.
/// Whether a draining node has nothing left to stop: no replica placed
/// or handed off from it, its last report (fresh) running none, and no
/// one-off run under way on it (`busy`).
fn emptied(
    assignments: &crate::control::state::assignments::Assignments,
    node: &str,
    busy: &BTreeSet<String>,
    fresh: SystemTime,
) -> bool {
    !busy.contains(node)
        && assignments.placement.on_node(node).next().is_none()
        && !assignments.handoff.values().any(|from| from == node)
        && assignments.reports.get(node).is_none_or(|(at, report)| {
            *at >= fresh
                && report
                    .replicas
                    .iter()
                    .all(|r| matches!(r.state, ReplicaState::Stopped | ReplicaState::Failed))
        })
}

async fn finish_drains(kick: &Kick) -> bool {
    let known: BTreeSet<String> = kick
        .nodes
        .lock()
        .expect("nodes")
        .known
        .keys()
        .cloned()
        .collect();
    // A node running a one-off run (a release command) is not empty: its
    // run would be cut off with the machine.
    let busy = kick.runs.lock().expect("runs").busy_nodes();
    let (gone, empty) = {
        let assignments = kick.assignments.lock().expect("assignments");
        let fresh = SystemTime::now() - REPORT_FRESH;
        let gone: Vec<String> = assignments
            .draining
            .keys()
            .filter(|n| !known.contains(*n))
            .cloned()
            .collect();
        let empty: Vec<String> = assignments
            .draining
            .keys()
            .filter(|n| known.contains(*n))
            .filter(|n| emptied(&assignments, n, &busy, fresh))
            .cloned()
            .collect();
        (gone, empty)
    };
    let mut changed = false;
    if !gone.is_empty() {
        let mut assignments = kick.assignments.lock().expect("assignments");
        let mut scaling = kick.scaling.lock().expect("scaling");
        for node in &gone {
            assignments.draining.remove(node);
            scaling.terminating.remove(node);
            scaling.decide(format!("{node} is gone"));
        }
        assignments.version += 1;
        changed = true;
    }
    for node in empty {
        if kick
            .scaling
            .lock()
            .expect("scaling")
            .terminating
            .contains(&node)
            || !leading(kick)
        {
            continue;
        }
        let min = kick.config.nodes.min as usize;
        let leaving = {
            let scaling = kick.scaling.lock().expect("scaling");
            scaling.terminating.intersection(&known).count()
        };
        let remaining = known.len() - leaving;
        let outcome = if remaining <= min {
            Err(format!(
                "kept {node}: the cluster is at its minimum of {min} node{}",
                if min == 1 { "" } else { "s" }
            ))
        } else {
            match kick.aws.terminate_node(&node).await {
                Ok(()) => Ok(format!(
                    "terminated {node}: drained; the node group now wants {} nodes",
                    remaining - 1
                )),
                Err(err) => Err(format!("kept {node}: cannot terminate it: {err}")),
            }
        };
        let mut assignments = kick.assignments.lock().expect("assignments");
        let mut scaling = kick.scaling.lock().expect("scaling");
        match outcome {
            Ok(text) => {
                scaling.terminating.insert(node.clone());
                scaling.decide(text);
            }
            Err(text) => {
                assignments.draining.remove(&node);
                scaling.decide(text);
                changed = true;
            }
        }
        assignments.version += 1;
    }
    changed
}

/// Step 2: replicas that fit nowhere. Drains stop first (their nodes are
/// needed); then the group grows. Whether the draining set changed.
async fn scale_out(kick: &Kick, now: Instant) -> bool {
    let ask = match plan_scale_out(kick, now) {
        Grow::Undrained => return true,
        Grow::Nothing => return false,
        Grow::Ask(ask) => ask,
    };
    if !leading(kick) {
        return false;
    }
    let outcome = kick
        .aws
        .set_desired_capacity(&kick.config.nodes.group, ask.desired)
        .await;
    {
        let mut scaling = kick.scaling.lock().expect("scaling");
        match outcome {
            Ok(()) => {
                scaling.asked = Some((ask.desired, now));
                scaling.decide(ask.reason);
            }
            Err(err) => scaling.decide(format!("cannot add nodes: {err}")),
        }
    }
    kick.assignments.lock().expect("assignments").version += 1;
    false
}

/// What step 2 does.
enum Grow {
    Nothing,
    /// Drains were stopped.
    Undrained,
    Ask(Ask),
}

/// A desired capacity to ask for, and why.
struct Ask {
    desired: u32,
    reason: String,
}

fn plan_scale_out(kick: &Kick, now: Instant) -> Grow {
    let nodes = assign::node_specs(kick);
    let mut assignments = kick.assignments.lock().expect("assignments");
    if assignments.placement.unplaced.is_empty() {
        return Grow::Nothing;
    }
    let mut scaling = kick.scaling.lock().expect("scaling");
    scaling.steady_since = None;
    let unplaced = assignments.placement.unplaced.len();
    let stop: Vec<String> = assignments
        .draining
        .keys()
        .filter(|n| !scaling.terminating.contains(*n))
        .cloned()
        .collect();
    if !stop.is_empty() {
        for node in stop {
            assignments.draining.remove(&node);
            scaling.decide(format!(
                "stopped draining {node}: {unplaced} replica{} no longer fit without it",
                if unplaced == 1 { "" } else { "s" }
            ));
        }
        assignments.version += 1;
        return Grow::Undrained;
    }
    // Nodes still booting will take some; wait for them.
    if nodes.keys().any(|n| !assignments.ready.contains(n)) {
        return Grow::Nothing;
    }
    let known = u32::try_from(nodes.len()).unwrap_or(u32::MAX);
    if let Some((asked, at)) = scaling.asked
        && asked > known
        && now.duration_since(at) < JOIN_WAIT
    {
        return Grow::Nothing;
    }
    let max = kick.config.nodes.max;
    let names: Vec<String> = assignments
        .placement
        .unplaced
        .keys()
        .map(ToString::to_string)
        .collect();
    let names = names.join(", ");
    if known >= max {
        scaling.decide(format!(
            "cannot add nodes: {names} fit on no node and the cluster is at its maximum of {max} nodes (nodes.max)"
        ));
        return Grow::Nothing;
    }
    let list: Vec<NodeSpec> = nodes.values().cloned().collect();
    let template = NodeSpec {
        id: String::new(),
        zone: list.first().map(|n| n.zone.clone()).unwrap_or_default(),
        cpu_millis: kick.config.nodes.allocatable_cpu_millis,
        memory_mib: kick.config.nodes.allocatable_memory_mib,
        ports_in_use: BTreeSet::new(),
    };
    let zones: Vec<String> = list
        .iter()
        .map(|n| n.zone.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let specs = assign::service_specs(&kick.config, &assignments);
    let (add, enough) = nodes_to_add(
        &list,
        &specs,
        &assignments.placement.assigned,
        &template,
        &zones,
        max - known,
    );
    let desired = known + add;
    Grow::Ask(Ask {
        desired,
        reason: format!(
            "adding {add} node{} (desired capacity {desired}): {names} fit on no node{}",
            if add == 1 { "" } else { "s" },
            if enough {
                String::new()
            } else {
                format!("; even {max} nodes (nodes.max) will not hold them all")
            }
        ),
    })
}

/// Step 3: consolidation, once steady. Whether it started a drain.
fn consolidate(kick: &Kick, now: Instant) -> bool {
    let Some(settings) = &kick.config.nodes.consolidation else {
        return false;
    };
    let nodes = assign::node_specs(kick);
    // Nodes marked so, and those running a one-off run.
    let mut do_not_disrupt: BTreeSet<String> = kick
        .nodes
        .lock()
        .expect("nodes")
        .known
        .values()
        .filter(|n| n.do_not_disrupt)
        .map(|n| n.id.clone())
        .collect();
    do_not_disrupt.extend(kick.runs.lock().expect("runs").busy_nodes());
    let mut assignments = kick.assignments.lock().expect("assignments");
    let mut scaling = kick.scaling.lock().expect("scaling");
    let ids: BTreeSet<String> = nodes.keys().cloned().collect();
    let unsteady = ids != scaling.last_nodes
        || !assignments.placement.unplaced.is_empty()
        || !assignments.handoff.is_empty()
        || !assignments.lingering.is_empty()
        || !assignments.draining.is_empty()
        || ids.iter().any(|n| !assignments.ready.contains(n));
    scaling.last_nodes = ids;
    if unsteady {
        scaling.steady_since = None;
        return false;
    }
    let since = *scaling.steady_since.get_or_insert(now);
    if now.duration_since(since) < settings.after {
        return false;
    }
    let specs = assign::service_specs(&kick.config, &assignments);
    let list: Vec<NodeSpec> = nodes.values().cloned().collect();
    let policy = Policy {
        min_nodes: kick.config.nodes.min as usize,
        budget: settings.budget.of(list.len()),
        threshold_monthly: settings.min_monthly_savings,
        hourly_cost: kick.config.nodes.hourly_cost,
        do_not_disrupt,
    };
    let drains = consolidate::plan(&list, &specs, &assignments.placement, &policy);
    let mut started = false;
    let mut without: Vec<NodeSpec> = list.clone();
    for drain in drains {
        // The placement engine has the last word: the drain goes ahead
        // only when it places everything without the node.
        without.retain(|n| n.id != drain.node);
        let check: Placement = placement::place(&without, &specs, &assignments.placement.assigned);
        if !check.unplaced.is_empty() {
            without.push(nodes[&drain.node].clone());
            continue;
        }
        scaling.decide(drain.reason.clone());
        assignments
            .draining
            .insert(drain.node.clone(), drain.reason);
        started = true;
    }
    if started {
        scaling.steady_since = None;
        assignments.version += 1;
    }
    started
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::emptied;
    use crate::control::state::assignments::Assignments;
    use crate::control::state::runs::Runs;

    /// Regression (review): a drained node was terminated while a release
    /// command ran on it (runs go to the node with the most room, which
    /// is the one a drain empties), cutting the migration off.
    #[test]
    fn a_node_running_a_one_off_run_is_not_empty() {
        let assignments = Assignments::default();
        let fresh = SystemTime::now() - Duration::from_secs(60);
        let mut runs = Runs::default();
        assert!(emptied(&assignments, "i-1", &runs.busy_nodes(), fresh));
        let id = runs.add(crate::control::state::runs::tests::assigned(), "i-1", None);
        assert!(!emptied(&assignments, "i-1", &runs.busy_nodes(), fresh));
        assert!(emptied(&assignments, "i-2", &runs.busy_nodes(), fresh));
        assert!(runs.cancel(id, "done"));
        assert!(emptied(&assignments, "i-1", &runs.busy_nodes(), fresh));
    }
}
