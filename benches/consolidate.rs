//! Benchmark and simulation of consolidation: how close to the lower bound
//! it packs, how many moves it makes, what it saves, and how long one
//! decision takes on 1,000 nodes.
//!
//! Run with `cargo bench --bench consolidate`. Workloads are generated from
//! fixed seeds, so the numbers are the same run to run (times aside).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use huxley::kick::consolidate::{self, Policy};
use huxley::kick::placement::{self, NodeSpec, ServiceSpec};

fn node(i: usize) -> NodeSpec {
    NodeSpec {
        id: format!("i-{i:05}"),
        zone: ["us-west-2a", "us-west-2b", "us-west-2c"][i % 3].to_owned(),
        cpu_millis: 1800,
        memory_mib: 7680,
        ports_in_use: BTreeSet::new(),
    }
}

fn workload(seed: u64, services: usize) -> Vec<ServiceSpec> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..services)
        .map(|i| ServiceSpec {
            app: format!("app{}", i / 10),
            service: format!("svc{i}"),
            replicas: rng.u32(1..=6),
            cpu_millis: [100, 250, 500, 1000][rng.usize(0..4)],
            memory_mib: [128, 256, 512, 1024, 2048][rng.usize(0..5)],
            host_port: None,
            stateful: rng.u8(0..20) == 0,
        })
        .collect()
}

fn policy() -> Policy {
    Policy {
        min_nodes: 2,
        budget: 1_000,
        threshold_monthly: 20.0,
        hourly_cost: 0.096,
        do_not_disrupt: BTreeSet::new(),
    }
}

fn main() {
    // 100 workloads, each first spread over twice the nodes it needs (as a
    // day's peak would leave them), then consolidated until nothing moves.
    let (mut ratio_sum, mut moves, mut drained_total) = (0.0, 0usize, 0usize);
    for seed in 0..100 {
        let services = workload(seed, 40);
        let bound = consolidate::lower_bound(&services, &node(0));
        let nodes: Vec<NodeSpec> = (0..(bound as usize * 2).max(4)).map(node).collect();
        let mut placement = placement::place(&nodes, &services, &BTreeMap::new());
        assert!(
            placement.unplaced.is_empty(),
            "seed {seed}: the workload fits"
        );
        let mut alive = nodes.clone();
        loop {
            let drains = consolidate::plan(&alive, &services, &placement, &policy());
            if drains.is_empty() {
                break;
            }
            for drain in &drains {
                moves += drain.moves.len();
                placement.assigned.extend(drain.moves.clone());
            }
            let gone: BTreeSet<&str> = drains.iter().map(|d| d.node.as_str()).collect();
            alive.retain(|n| !gone.contains(n.id.as_str()));
            drained_total += drains.len();
        }
        ratio_sum += alive.len() as f64 / bound.max(1) as f64;
    }
    println!(
        "consolidation over 100 workloads: nodes used {:.3} x the lower bound on average (target <= 1.1), {drained_total} nodes drained with {moves} moves, saving ${:.0}/month across the 100 clusters",
        ratio_sum / 100.0,
        drained_total as f64 * 0.096 * consolidate::HOURS_A_MONTH
    );

    // One decision on 10,000 replicas over 1,000 nodes, spread thin.
    let services: Vec<ServiceSpec> = (0..1000u32)
        .map(|i| ServiceSpec {
            app: format!("app{:02}", i / 20),
            service: format!("svc{i:04}"),
            replicas: 10,
            cpu_millis: [50, 100, 250][(i % 3) as usize],
            memory_mib: [128, 256, 512][(i % 3) as usize],
            host_port: None,
            stateful: i % 50 == 0,
        })
        .collect();
    let nodes: Vec<NodeSpec> = (0..1000).map(node).collect();
    let placement = placement::place(&nodes, &services, &BTreeMap::new());
    let mut times = Vec::new();
    let mut drained = 0;
    for _ in 0..5 {
        let start = Instant::now();
        let drains = consolidate::plan(
            &nodes,
            &services,
            &placement,
            &Policy {
                budget: 100,
                ..policy()
            },
        );
        times.push(start.elapsed());
        drained = drains.len();
    }
    times.sort();
    println!(
        "one consolidation decision on {} replicas over {} nodes: median {:.1} ms ({drained} nodes to drain within a budget of 100; target < 1 s)",
        placement.assigned.len(),
        nodes.len(),
        times[2].as_secs_f64() * 1e3
    );
}
