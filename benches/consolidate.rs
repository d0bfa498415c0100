//! Benchmark and simulation of consolidation: how close to the lower bound
//! it packs, how many moves it makes, what it saves, and how long one
//! decision takes on 1,000 nodes.
//!
//! Run with `cargo bench --bench consolidate`. Workloads are generated from
//! fixed seeds, so the numbers are the same run to run (times aside).
//! `huxley simulate` prints the same workloads' figures and a day of load.

use std::collections::BTreeMap;
use std::time::Instant;

use huxley::scheduler::consolidate::{self, Policy};
use huxley::scheduler::placement::{self, NodeSpec, ServiceSpec};
use huxley::scheduler::simulate;

fn main() {
    // 100 workloads, each first spread over twice the nodes it needs (as a
    // day's peak would leave them), then consolidated until nothing moves:
    // `huxley simulate`'s first run, with a $20 threshold.
    let options = simulate::Options {
        min_savings: 20.0,
        budget: 1_000,
        ..simulate::Options::default()
    };
    let w = simulate::workloads(&options);
    println!(
        "consolidation over {} workloads: nodes used {:.3} x the lower bound on average (target <= 1.1), {} nodes drained with {} moves, saving ${:.0}/month across the clusters",
        w.count,
        w.mean_ratio,
        w.drained,
        w.moves,
        w.drained as f64 * 0.096 * consolidate::HOURS_A_MONTH
    );

    // One decision on 10,000 replicas over 1,000 nodes, spread thin.
    let services: Vec<ServiceSpec> = (0..1000u32)
        .map(|i| ServiceSpec {
            first: 1,
            app: format!("app{:02}", i / 20),
            service: format!("svc{i:04}"),
            replicas: 10,
            cpu_millis: [50, 100, 250][(i % 3) as usize],
            memory_mib: [128, 256, 512][(i % 3) as usize],
            host_port: None,
            stateful: i % 50 == 0,
        })
        .collect();
    let nodes: Vec<NodeSpec> = (0..1000).map(|i| simulate::node(&options, i)).collect();
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
                ..simulate::policy(&options)
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
