//! `huxley simulate`: the scaling engine on generated clusters, with no
//! AWS and no nodes: the same pure parts the leader runs (replica
//! recommendations, placement, the fewest nodes to add, consolidation),
//! stepped over generated workloads.
//!
//! Two runs:
//! - **Workloads**: random workloads spread over twice the nodes they need
//!   (as a peak leaves a cluster), consolidated until nothing moves: nodes
//!   used against the lower bound `max(ceil(Σcpu/cap), ceil(Σmem/cap))`,
//!   and the moves it took.
//! - **A day**: one cluster through a day-long load curve (night trough,
//!   morning ramp, midday and evening peaks, noise), every 10 minutes:
//!   replicas scaled on the load, nodes added when replicas do not fit,
//!   drains once steady; each hour's nodes, lower bound, moves, cost and
//!   the slowest decision.
//!
//! Seeded: the same options print the same numbers (times aside).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use crate::scheduler::consolidate::{self, HOURS_A_MONTH, Policy};
use crate::scheduler::placement::{self, NodeSpec, Placement, Replica, ServiceSpec};
use crate::scheduler::scale::{Usage, nodes_to_add, recommend};
use crate::spec::kick::{ReplicaBounds, ScalePolicy};

/// What to simulate.
#[derive(Debug, Clone)]
pub struct Options {
    pub seed: u64,
    /// Random workloads in the first run.
    pub workloads: u32,
    /// Services per workload.
    pub services: u32,
    /// What a node offers services.
    pub node_cpu_millis: u32,
    pub node_memory_mib: u64,
    pub hourly_cost: f64,
    pub min_nodes: usize,
    pub max_nodes: usize,
    /// Nodes drained at once.
    pub budget: usize,
    /// USD a month a drain must save.
    pub min_savings: f64,
}

impl Default for Options {
    fn default() -> Self {
        // An m6i.large cluster, as `nodes.instance-type = "m6i.large"`.
        Options {
            seed: 1,
            workloads: 100,
            services: 40,
            node_cpu_millis: 1800,
            node_memory_mib: 7680,
            hourly_cost: 0.096,
            min_nodes: 2,
            max_nodes: 200,
            budget: 2,
            min_savings: 10.0,
        }
    }
}

/// The first run's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct Workloads {
    pub count: u32,
    /// Nodes used over the lower bound, averaged.
    pub mean_ratio: f64,
    pub worst_ratio: f64,
    pub drained: usize,
    pub moves: usize,
    /// Drains saving less than the threshold: must be none.
    pub below_threshold: usize,
}

/// One hour of the day.
#[derive(Debug, Clone, PartialEq)]
pub struct Hour {
    pub hour: u32,
    /// The load, in percent of the day's peak.
    pub load_percent: u32,
    pub replicas: u32,
    /// Nodes at the hour's end.
    pub nodes: usize,
    pub lower_bound: u64,
    pub added: usize,
    pub drained: usize,
    /// Replicas moved by drains.
    pub moves: usize,
    pub cost_per_hour: f64,
    pub slowest_decision: Duration,
}

/// The day's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct Day {
    pub hours: Vec<Hour>,
    /// Node-hours used over the lower bound's node-hours.
    pub ratio: f64,
    pub cost: f64,
    /// What a cluster sized for the peak all day would have cost.
    pub static_cost: f64,
    pub below_threshold: usize,
}

/// Node `i` of a generated cluster, spread over three zones.
pub fn node(options: &Options, i: usize) -> NodeSpec {
    NodeSpec {
        id: format!("i-{i:05}"),
        zone: ["us-west-2a", "us-west-2b", "us-west-2c"][i % 3].to_owned(),
        cpu_millis: options.node_cpu_millis,
        memory_mib: options.node_memory_mib,
        ports_in_use: BTreeSet::new(),
    }
}

fn workload(rng: &mut fastrand::Rng, services: u32) -> Vec<ServiceSpec> {
    (0..services)
        .map(|i| ServiceSpec {
            first: 1,
            app: format!("app{}", i / 10),
            service: format!("svc{i:03}"),
            replicas: rng.u32(1..=6),
            cpu_millis: [100, 250, 500, 1000][rng.usize(0..4)],
            memory_mib: [128, 256, 512, 1024, 2048][rng.usize(0..5)],
            host_port: None,
            stateful: rng.u8(0..20) == 0,
        })
        .collect()
}

/// The consolidation policy of `options`.
pub fn policy(options: &Options) -> Policy {
    Policy {
        min_nodes: options.min_nodes,
        budget: options.budget,
        threshold_monthly: options.min_savings,
        hourly_cost: options.hourly_cost,
        do_not_disrupt: BTreeSet::new(),
    }
}

/// Drains until nothing more is worth it; returns (drains, moves, below
/// the threshold).
fn consolidate_fully(
    nodes: &mut Vec<NodeSpec>,
    services: &[ServiceSpec],
    placement: &mut Placement,
    options: &Options,
) -> (usize, usize, usize, Duration) {
    let (mut drained, mut moves, mut below) = (0, 0, 0);
    let mut slowest = Duration::ZERO;
    loop {
        let start = Instant::now();
        let drains = consolidate::plan(nodes, services, placement, &policy(options));
        slowest = slowest.max(start.elapsed());
        if drains.is_empty() {
            return (drained, moves, below, slowest);
        }
        for drain in &drains {
            moves += drain.moves.len();
            below += usize::from(drain.saves_monthly < options.min_savings);
            placement.assigned.extend(drain.moves.clone());
        }
        let gone: BTreeSet<&str> = drains.iter().map(|d| d.node.as_str()).collect();
        nodes.retain(|n| !gone.contains(n.id.as_str()));
        drained += drains.len();
    }
}

/// The first run: random workloads from a peak's spread to consolidated.
pub fn workloads(options: &Options) -> Workloads {
    let mut rng = fastrand::Rng::with_seed(options.seed);
    let (mut sum, mut worst) = (0.0f64, 0.0f64);
    let (mut drained, mut moves, mut below) = (0, 0, 0);
    for _ in 0..options.workloads {
        let services = workload(&mut rng, options.services);
        let bound = consolidate::lower_bound(&services, &node(options, 0)).max(1);
        let mut nodes: Vec<NodeSpec> = (0..(bound as usize * 2).max(options.min_nodes))
            .map(|i| node(options, i))
            .collect();
        let mut placement = placement::place(&nodes, &services, &BTreeMap::new());
        let (d, m, b, _) = consolidate_fully(&mut nodes, &services, &mut placement, options);
        drained += d;
        moves += m;
        below += b;
        let ratio = nodes.len() as f64 / bound as f64;
        sum += ratio;
        worst = worst.max(ratio);
    }
    Workloads {
        count: options.workloads,
        mean_ratio: sum / f64::from(options.workloads.max(1)),
        worst_ratio: worst,
        drained,
        moves,
        below_threshold: below,
    }
}

/// The day's load at `minute`, in (0, 1]: a night trough, a morning ramp,
/// peaks at 11:00 and 20:00, with ±5% noise.
pub fn load_at(minute: u32, rng: &mut fastrand::Rng) -> f64 {
    let h = f64::from(minute) / 60.0;
    let bump = |centre: f64, width: f64| (-((h - centre) / width).powi(2)).exp();
    let base = 0.2 + 0.7 * bump(11.0, 3.0) + 0.8 * bump(20.0, 2.5);
    let noise = 1.0 + (rng.f64() - 0.5) * 0.1;
    (base * noise).clamp(0.05, 1.0)
}

/// Steps between replica changes down (the scale-in window: 30 minutes).
const SCALE_IN_STEPS: usize = 3;
/// Steady steps before a drain (`consolidation.after`: 10 minutes).
const STEADY_STEPS: u32 = 1;

/// The second run: one cluster through a day, every 10 minutes.
pub fn day(options: &Options) -> Day {
    let mut rng = fastrand::Rng::with_seed(options.seed ^ 0x5EED);
    let mut services = workload(&mut rng, options.services);
    // Each service's CPU demand at the peak, in millicores: enough for
    // up to 8 replicas at a 60% target.
    let demand = Demand {
        peak: services
            .iter()
            .map(|s| f64::from(s.cpu_millis) * 0.6 * f64::from(rng.u32(2..=8)))
            .collect(),
        bounds: services
            .iter()
            .map(|s| ReplicaBounds {
                min: if s.stateful { s.replicas } else { 1 },
                max: if s.stateful { s.replicas } else { 8 },
            })
            .collect(),
        scale: ScalePolicy {
            target_cpu_percent: Some(60),
            target_memory_percent: None,
            scale_in_after: Duration::from_secs(30 * 60),
        },
    };
    for (s, b) in services.iter_mut().zip(&demand.bounds) {
        s.replicas = b.min;
    }
    let mut nodes: Vec<NodeSpec> = (0..options.min_nodes).map(|i| node(options, i)).collect();
    let mut next_id = nodes.len();
    let mut placement = placement::place(&nodes, &services, &BTreeMap::new());
    let mut history: Vec<VecDeque<u32>> = vec![VecDeque::new(); services.len()];
    let mut steady = 0u32;
    let mut hours = Vec::new();
    let (mut node_steps, mut bound_steps, mut below) = (0usize, 0u64, 0usize);
    let mut peak_nodes = 0usize;
    for hour in 0..24u32 {
        let mut h = Hour {
            hour,
            load_percent: 0,
            replicas: 0,
            nodes: 0,
            lower_bound: 0,
            added: 0,
            drained: 0,
            moves: 0,
            cost_per_hour: 0.0,
            slowest_decision: Duration::ZERO,
        };
        for step in 0..6u32 {
            let load = load_at(hour * 60 + step * 10, &mut rng);
            h.load_percent = h.load_percent.max((load * 100.0).round() as u32);
            let start = Instant::now();
            // Replicas, as the scaler decides them.
            let mut changed = scale_replicas(&mut services, &demand, load, &mut history);
            placement = placement::place(&nodes, &services, &placement.assigned);
            // Nodes out: the fewest that hold what did not fit.
            if !placement.unplaced.is_empty() && nodes.len() < options.max_nodes {
                let zones: Vec<String> = (0..3).map(|i| node(options, i).zone).collect();
                let room = u32::try_from(options.max_nodes - nodes.len()).unwrap_or(u32::MAX);
                let (add, _) = nodes_to_add(
                    &nodes,
                    &services,
                    &placement.assigned,
                    &node(options, 0),
                    &zones,
                    room,
                );
                for _ in 0..add {
                    nodes.push(node(options, next_id));
                    next_id += 1;
                }
                h.added += add as usize;
                placement = placement::place(&nodes, &services, &placement.assigned);
                changed = true;
            }
            // Nodes in: once steady, drains (which the placement engine
            // then confirms, as the leader does).
            steady = if changed { 0 } else { steady + 1 };
            if steady >= STEADY_STEPS {
                let (drained, moves, under) = drain(&mut nodes, &services, &mut placement, options);
                h.drained += drained;
                h.moves += moves;
                below += under;
            }
            h.slowest_decision = h.slowest_decision.max(start.elapsed());
            node_steps += nodes.len();
            bound_steps += consolidate::lower_bound(&services, &node(options, 0));
            peak_nodes = peak_nodes.max(nodes.len());
        }
        h.replicas = services.iter().map(|s| s.replicas).sum();
        h.nodes = nodes.len();
        h.lower_bound = consolidate::lower_bound(&services, &node(options, 0));
        h.cost_per_hour = nodes.len() as f64 * options.hourly_cost;
        hours.push(h);
    }
    Day {
        ratio: node_steps as f64 / bound_steps.max(1) as f64,
        cost: node_steps as f64 / 6.0 * options.hourly_cost,
        static_cost: peak_nodes as f64 * 24.0 * options.hourly_cost,
        hours,
        below_threshold: below,
    }
}

/// What the day's services ask of the scaler: each one's CPU at the
/// peak, its replica bounds, and the scaling policy.
struct Demand {
    peak: Vec<f64>,
    bounds: Vec<ReplicaBounds>,
    scale: ScalePolicy,
}

/// Each service's replicas at `load`, as the scaler decides them: up at
/// once, down only to the highest of the last [`SCALE_IN_STEPS`]
/// recommendations; whether any changed.
fn scale_replicas(
    services: &mut [ServiceSpec],
    demand: &Demand,
    load: f64,
    history: &mut [VecDeque<u32>],
) -> bool {
    let mut changed = false;
    for (i, s) in services.iter_mut().enumerate() {
        if demand.bounds[i].min == demand.bounds[i].max {
            continue;
        }
        let usage = Usage {
            replicas: s.replicas,
            cpu_millis: (demand.peak[i] * load) as u64,
            memory_mib: 0,
        };
        let Some((count, _)) = recommend(
            &demand.scale,
            demand.bounds[i],
            (s.cpu_millis, s.memory_mib),
            s.replicas,
            &usage,
        ) else {
            continue;
        };
        let recent = &mut history[i];
        recent.push_back(count);
        if recent.len() > SCALE_IN_STEPS {
            recent.pop_front();
        }
        let highest = recent.iter().copied().max().unwrap_or(count);
        let next = if count > s.replicas {
            count
        } else if recent.len() == SCALE_IN_STEPS && highest < s.replicas {
            highest
        } else {
            s.replicas
        };
        if next != s.replicas {
            s.replicas = next;
            changed = true;
        }
    }
    changed
}

/// The drains consolidation plans, each confirmed by the placement engine
/// (as the leader does): (nodes drained, replicas moved, drains below the
/// savings threshold).
fn drain(
    nodes: &mut Vec<NodeSpec>,
    services: &[ServiceSpec],
    placement: &mut Placement,
    options: &Options,
) -> (usize, usize, usize) {
    let (mut drained, mut moves, mut below) = (0, 0, 0);
    for drain in consolidate::plan(nodes, services, placement, &policy(options)) {
        let without: Vec<NodeSpec> = nodes
            .iter()
            .filter(|n| n.id != drain.node)
            .cloned()
            .collect();
        let check = placement::place(&without, services, &placement.assigned);
        if !check.unplaced.is_empty() {
            continue;
        }
        moves += moved(placement, &check);
        below += usize::from(drain.saves_monthly < options.min_savings);
        *nodes = without;
        *placement = check;
        drained += 1;
    }
    (drained, moves, below)
}

/// Replicas whose node differs between two placements.
fn moved(before: &Placement, after: &Placement) -> usize {
    after
        .assigned
        .iter()
        .filter(|(r, n): &(&Replica, &String)| before.assigned.get(*r).is_some_and(|b| b != *n))
        .count()
}

/// The report `huxley simulate` prints.
pub fn report(options: &Options) -> String {
    let mut out = String::new();
    let w = workloads(options);
    let _ = writeln!(
        out,
        "{} random workloads of {} services, from a peak's spread (twice the nodes needed) to consolidated:",
        w.count, options.services
    );
    let _ = writeln!(
        out,
        "  nodes used: {:.3} x the lower bound on average (worst {:.3}; target <= 1.1)",
        w.mean_ratio, w.worst_ratio
    );
    let _ = writeln!(
        out,
        "  {} nodes drained with {} replica moves ({:.1} moves a node); saves ${:.0}/month; drains below the ${} threshold: {}",
        w.drained,
        w.moves,
        w.moves as f64 / w.drained.max(1) as f64,
        w.drained as f64 * options.hourly_cost * HOURS_A_MONTH,
        options.min_savings,
        w.below_threshold
    );
    let d = day(options);
    let _ = writeln!(
        out,
        "\na day of load on one cluster of {} services, every 10 minutes (scale-in after 30 minutes, drains when steady):",
        options.services
    );
    let _ = writeln!(
        out,
        "  hour  load  replicas  nodes  bound  added  drained  moves  cost/hour  slowest decision"
    );
    for h in &d.hours {
        let _ = writeln!(
            out,
            "  {:>4}  {:>3}%  {:>8}  {:>5}  {:>5}  {:>5}  {:>7}  {:>5}  {:>9}  {:>13.1} ms",
            format!("{:02}", h.hour),
            h.load_percent,
            h.replicas,
            h.nodes,
            h.lower_bound,
            h.added,
            h.drained,
            h.moves,
            format!("${:.2}", h.cost_per_hour),
            h.slowest_decision.as_secs_f64() * 1e3
        );
    }
    let moves: usize = d.hours.iter().map(|h| h.moves).sum();
    let _ = writeln!(
        out,
        "  node-hours: {:.3} x the lower bound; {} replica moves; ${:.2} for the day against ${:.2} for a cluster sized for the peak; drains below the threshold: {}",
        d.ratio, moves, d.cost, d.static_cost, d.below_threshold
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> Options {
        Options {
            workloads: 10,
            services: 12,
            ..Options::default()
        }
    }

    #[test]
    fn workloads_pack_near_the_lower_bound_and_never_below_the_threshold() {
        let w = workloads(&small());
        assert!(w.mean_ratio >= 1.0 && w.mean_ratio <= 1.1, "{w:?}");
        assert!(w.drained > 0 && w.moves > 0, "{w:?}");
        assert_eq!(w.below_threshold, 0);
        // A threshold above what a node costs stops every drain.
        let none = workloads(&Options {
            min_savings: 1_000.0,
            ..small()
        });
        assert_eq!(none.drained, 0);
    }

    #[test]
    fn the_day_follows_the_load_out_and_back_in() {
        let d = day(&small());
        assert_eq!(d.hours.len(), 24);
        let at = |hour: usize| &d.hours[hour];
        // More nodes at the evening peak than at night, fewer again by the
        // next night; never below the minimum.
        assert!(at(20).nodes > at(3).nodes, "{:?}", d.hours);
        assert!(at(23).replicas < at(20).replicas, "{:?}", d.hours);
        assert!(d.hours.iter().all(|h| h.nodes >= 2));
        assert!(d.hours.iter().any(|h| h.added > 0) && d.hours.iter().any(|h| h.drained > 0));
        assert!(d.cost < d.static_cost, "{d:?}");
        assert_eq!(d.below_threshold, 0);
        assert!(d.ratio >= 1.0, "{d:?}");
    }

    #[test]
    fn the_same_seed_prints_the_same_numbers() {
        let strip = |d: Day| {
            d.hours
                .into_iter()
                .map(|h| (h.nodes, h.replicas, h.moves, h.added, h.drained))
                .collect::<Vec<_>>()
        };
        assert_eq!(strip(day(&small())), strip(day(&small())));
        assert_eq!(workloads(&small()), workloads(&small()));
    }
}
