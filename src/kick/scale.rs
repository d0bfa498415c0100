//! Scaling: how many replicas each service runs and how many nodes the
//! cluster has. One step runs in the leader's reconcile loop (every
//! [`super::assign::RECONCILE_EVERY`]):
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
//! 3. **Nodes in** ([`super::consolidate`]): once the cluster has been
//!    steady for `consolidation.after`, nodes whose replicas all fit
//!    elsewhere are drained (their replicas start on other nodes and stop
//!    here once healthy there, make before break), then terminated with the
//!    group's desired capacity decremented. Never below `nodes.min`.
//!
//! Every decision is kept with its reason ([`Decision`]) and shown by
//! `GET /v1/cluster` and `huxley cluster describe`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, SystemTime};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::assign::{self, ReplicaState};
use super::config::{KickConfig, ReplicaBounds, ScalePolicy};
use super::consolidate::{self, Policy};
use super::placement::{self, NodeSpec, Placement, Replica, ServiceSpec};
use super::state::Kick;

/// Usage reports older than this are not counted.
pub const REPORT_FRESH: Duration = Duration::from_secs(30);
/// After a change, the longest a scale-out waits for the changed replicas
/// to report before it scales again on what it has.
pub const SETTLE: Duration = Duration::from_secs(60);
/// How long nodes asked of the group have to join before kick asks again.
pub const JOIN_WAIT: Duration = Duration::from_secs(600);
/// Within this of the target, nothing changes (Kubernetes' tolerance).
pub const TOLERANCE: f64 = 0.1;
/// Decisions kept for the description.
pub const DECISIONS_KEPT: usize = 50;

/// A service, by app and name.
pub type ServiceKey = (String, String);

/// One decision, for people.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Decision {
    /// Seconds since the Unix epoch.
    pub at: u64,
    pub decision: String,
}

/// What the scaler remembers between steps (the leader's only; a new
/// leader starts afresh from what runs).
#[derive(Debug, Default)]
pub struct Scaling {
    /// Each service's recommendations within its scale-in window.
    history: BTreeMap<ServiceKey, VecDeque<(Instant, u32)>>,
    /// Since when each service's recommendation has been below its count.
    low_since: BTreeMap<ServiceKey, Instant>,
    /// When each service's count last changed.
    changed: BTreeMap<ServiceKey, Instant>,
    /// Since when nothing has moved (for consolidation's `after`).
    steady_since: Option<Instant>,
    /// The nodes of the last step, to notice one joining or leaving.
    last_nodes: BTreeSet<String>,
    /// The desired capacity last asked for, and when.
    asked: Option<(u32, Instant)>,
    /// Drained nodes whose termination was asked for.
    terminating: BTreeSet<String>,
    pub decisions: VecDeque<Decision>,
}

impl Scaling {
    /// Records a decision (an identical one in a row only once) and logs it.
    fn decide(&mut self, text: String) {
        if self.decisions.back().is_some_and(|d| d.decision == text) {
            return;
        }
        eprintln!("kick: {text}");
        let at = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.decisions.push_back(Decision { at, decision: text });
        while self.decisions.len() > DECISIONS_KEPT {
            self.decisions.pop_front();
        }
    }
}

/// What a service's replicas use, summed over those that report it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Replicas reporting.
    pub replicas: u32,
    pub cpu_millis: u64,
    pub memory_mib: u64,
}

/// The replica count `policy` asks for at `usage`, with the reason; `None`
/// when no replica reports.
pub fn recommend(
    policy: &ScalePolicy,
    bounds: ReplicaBounds,
    requests: (u32, u64),
    current: u32,
    usage: &Usage,
) -> Option<(u32, String)> {
    if usage.replicas == 0 {
        return None;
    }
    let per_replica = |used: u64| used as f64 / f64::from(usage.replicas);
    let mut best: Option<(u32, String)> = None;
    let metrics = [
        (
            "cpu",
            policy.target_cpu_percent,
            per_replica(usage.cpu_millis),
            f64::from(requests.0),
        ),
        (
            "memory",
            policy.target_memory_percent,
            per_replica(usage.memory_mib),
            requests.1 as f64,
        ),
    ];
    for (name, target, used, request) in metrics {
        let Some(target) = target else { continue };
        if request <= 0.0 {
            continue;
        }
        let percent = used / request * 100.0;
        let ratio = percent / f64::from(target);
        let count = if (ratio - 1.0).abs() <= TOLERANCE {
            current
        } else {
            let wanted = (f64::from(current) * ratio).ceil();
            if wanted >= f64::from(u32::MAX) {
                u32::MAX
            } else {
                wanted.max(0.0) as u32
            }
        };
        let count = count.clamp(bounds.min, bounds.max.max(bounds.min));
        let reason = format!("{name} at {percent:.0}% of the request against a {target}% target");
        if best.as_ref().is_none_or(|(b, _)| count > *b) {
            best = Some((count, reason));
        }
    }
    best
}

/// The fewest nodes to add (at most `room`) so that everything places,
/// with whether that is enough: each new node like `template`, in the
/// zone with the fewest nodes.
pub fn nodes_to_add(
    nodes: &[NodeSpec],
    services: &[ServiceSpec],
    current: &BTreeMap<Replica, String>,
    template: &NodeSpec,
    zones: &[String],
    room: u32,
) -> (u32, bool) {
    let mut more: Vec<NodeSpec> = nodes.to_vec();
    for k in 1..=room {
        let mut count: BTreeMap<&str, usize> = zones.iter().map(|z| (z.as_str(), 0)).collect();
        for node in &more {
            *count.entry(node.zone.as_str()).or_default() += 1;
        }
        let zone = count
            .iter()
            .min_by_key(|(z, n)| (**n, **z))
            .map_or_else(|| template.zone.clone(), |(z, _)| (*z).to_owned());
        more.push(NodeSpec {
            id: format!("~new-{k}"),
            zone,
            ..template.clone()
        });
        if placement::place(&more, services, current)
            .unplaced
            .is_empty()
        {
            return (k, true);
        }
    }
    (room, false)
}

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
fn wanted(config: &KickConfig, assignments: &assign::Assignments) -> BTreeMap<ServiceKey, u32> {
    config
        .apps
        .iter()
        .flat_map(|(app, section)| {
            section.services.iter().map(move |(name, s)| {
                let key = (app.clone(), name.clone());
                let count = assignments
                    .wanted
                    .get(&key)
                    .copied()
                    .unwrap_or(s.replicas.min);
                (key, count)
            })
        })
        .collect()
}

/// What each service's placed replicas use, from fresh reports.
fn usage(assignments: &assign::Assignments) -> BTreeMap<ServiceKey, Usage> {
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
            entry.cpu_millis += cpu;
            entry.memory_mib += memory;
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
async fn finish_drains(kick: &Kick) -> bool {
    let known: BTreeSet<String> = kick
        .nodes
        .lock()
        .expect("nodes")
        .known
        .keys()
        .cloned()
        .collect();
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
            .filter(|n| {
                assignments.placement.on_node(n).next().is_none()
                    && !assignments.handoff.values().any(|from| from == *n)
                    && assignments.reports.get(*n).is_none_or(|(at, report)| {
                        *at >= fresh
                            && report.replicas.iter().all(|r| {
                                matches!(r.state, ReplicaState::Stopped | ReplicaState::Failed)
                            })
                    })
            })
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
    let do_not_disrupt: BTreeSet<String> = kick
        .nodes
        .lock()
        .expect("nodes")
        .known
        .values()
        .filter(|n| n.do_not_disrupt)
        .map(|n| n.id.clone())
        .collect();
    let mut assignments = kick.assignments.lock().expect("assignments");
    let mut scaling = kick.scaling.lock().expect("scaling");
    let ids: BTreeSet<String> = nodes.keys().cloned().collect();
    let unsteady = ids != scaling.last_nodes
        || !assignments.placement.unplaced.is_empty()
        || !assignments.handoff.is_empty()
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
    use super::*;

    fn policy(cpu: Option<u8>, memory: Option<u8>) -> ScalePolicy {
        ScalePolicy {
            target_cpu_percent: cpu,
            target_memory_percent: memory,
            scale_in_after: Duration::from_secs(300),
        }
    }

    const BOUNDS: ReplicaBounds = ReplicaBounds { min: 2, max: 10 };

    fn usage(replicas: u32, cpu_millis: u64, memory_mib: u64) -> Usage {
        Usage {
            replicas,
            cpu_millis,
            memory_mib,
        }
    }

    #[test]
    fn replicas_follow_use_against_the_target_within_bounds() {
        let p = policy(Some(50), None);
        // 2 replicas of 200m using 180m each: 90% against 50% → ceil(3.6).
        let (count, reason) =
            recommend(&p, BOUNDS, (200, 256), 2, &usage(2, 360, 100)).expect("a count");
        assert_eq!(count, 4);
        assert_eq!(reason, "cpu at 90% of the request against a 50% target");
        // Within 10% of the target: unchanged.
        assert_eq!(
            recommend(&p, BOUNDS, (200, 256), 3, &usage(3, 318, 0)).map(|r| r.0),
            Some(3)
        );
        // Idle: down to the minimum, never below.
        assert_eq!(
            recommend(&p, BOUNDS, (200, 256), 6, &usage(6, 0, 0)).map(|r| r.0),
            Some(2)
        );
        // Far over: up to the maximum, never above.
        assert_eq!(
            recommend(&p, BOUNDS, (200, 256), 6, &usage(6, 12_000, 0)).map(|r| r.0),
            Some(10)
        );
        // Nothing reports: no recommendation.
        assert_eq!(recommend(&p, BOUNDS, (200, 256), 2, &usage(0, 0, 0)), None);
    }

    #[test]
    fn the_metric_asking_for_more_replicas_wins() {
        let p = policy(Some(50), Some(50));
        // CPU says 2, memory (150% of 50%) says 6.
        let (count, reason) =
            recommend(&p, BOUNDS, (200, 100), 2, &usage(2, 200, 300)).expect("a count");
        assert_eq!(count, 6);
        assert!(reason.starts_with("memory at 150%"), "{reason}");
    }

    fn node(id: &str, zone: &str) -> NodeSpec {
        NodeSpec {
            id: id.into(),
            zone: zone.into(),
            cpu_millis: 1000,
            memory_mib: 1024,
            ports_in_use: BTreeSet::new(),
        }
    }

    fn service(replicas: u32, cpu_millis: u32) -> ServiceSpec {
        ServiceSpec {
            first: 1,
            app: "shop".into(),
            service: "api".into(),
            replicas,
            cpu_millis,
            memory_mib: 64,
            host_port: None,
            stateful: false,
        }
    }

    #[test]
    fn scale_out_asks_for_the_fewest_nodes_that_hold_everything() {
        let nodes = [node("i-a", "z1")];
        let zones = ["z1".to_owned(), "z2".to_owned()];
        let template = node("", "z1");
        // 5 replicas of 400m: 2 per node → 3 nodes, so 2 more.
        let specs = [service(5, 400)];
        assert_eq!(
            nodes_to_add(&nodes, &specs, &BTreeMap::new(), &template, &zones, 10),
            (2, true)
        );
        // With room for one only: that one, and not enough.
        assert_eq!(
            nodes_to_add(&nodes, &specs, &BTreeMap::new(), &template, &zones, 1),
            (1, false)
        );
        // A replica larger than any node: no count of nodes helps.
        let huge = [service(1, 5000)];
        assert_eq!(
            nodes_to_add(&nodes, &huge, &BTreeMap::new(), &template, &zones, 3),
            (3, false)
        );
    }

    #[test]
    fn budgets_allow_at_least_one_node() {
        use crate::model::Budget;
        assert_eq!(Budget::Percent(10).of(3), 1);
        assert_eq!(Budget::Percent(10).of(25), 3);
        assert_eq!(Budget::Percent(50).of(0), 1);
        assert_eq!(Budget::Nodes(2).of(30), 2);
    }

    #[test]
    fn decisions_are_kept_once_each_and_bounded() {
        let mut scaling = Scaling::default();
        scaling.decide("a".into());
        scaling.decide("a".into());
        assert_eq!(scaling.decisions.len(), 1);
        for i in 0..(DECISIONS_KEPT + 5) {
            scaling.decide(i.to_string());
        }
        assert_eq!(scaling.decisions.len(), DECISIONS_KEPT);
        assert_eq!(
            scaling.decisions.back().map(|d| d.decision.as_str()),
            Some((DECISIONS_KEPT + 4).to_string().as_str())
        );
    }
}
