//! Benchmark: place 10,000 replicas on 1,000 nodes across three zones, from
//! nothing, and again after one node is lost (the common re-placement).
//!
//! Run with `cargo bench --bench placement`. Prints the median and best of
//! repeated runs; the target is under 100 ms in release.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use huxley::scheduler::placement::{NodeSpec, ServiceSpec, place};

fn main() {
    let nodes: Vec<NodeSpec> = (0..1000)
        .map(|i| NodeSpec {
            id: format!("i-{i:017x}"),
            zone: ["us-west-2a", "us-west-2b", "us-west-2c"][i % 3].to_owned(),
            cpu_millis: 3800,
            memory_mib: 15 * 1024,
            ports_in_use: BTreeSet::from([22, 2222, 7400, 7443]),
        })
        .collect();
    // 1,000 services of 10 replicas, of varied sizes; one in ten publishes
    // a host port.
    let services: Vec<ServiceSpec> = (0..1000u32)
        .map(|i| ServiceSpec {
            first: 1,
            app: format!("app{:02}", i / 20),
            service: format!("svc{i:04}"),
            replicas: 10,
            cpu_millis: [50, 100, 250, 500][(i % 4) as usize],
            memory_mib: [128, 256, 512, 1024][((i / 4) % 4) as usize],
            host_port: (i % 10 == 0).then(|| 10_000 + i as u16),
            stateful: i % 50 == 0,
        })
        .collect();
    let runs = 15;
    let time = |current: &BTreeMap<_, _>, nodes: &[NodeSpec]| {
        let mut times: Vec<Duration> = (0..runs)
            .map(|_| {
                let start = Instant::now();
                let placement = place(nodes, &services, current);
                let elapsed = start.elapsed();
                std::hint::black_box(placement);
                elapsed
            })
            .collect();
        times.sort();
        times
    };
    let first = place(&nodes, &services, &BTreeMap::new());
    assert!(
        first.unplaced.is_empty(),
        "the benchmark's replicas all fit"
    );
    let cold = time(&BTreeMap::new(), &nodes);
    let warm = time(&first.assigned, &nodes[1..]);
    let used: BTreeSet<&String> = first.assigned.values().collect();
    println!(
        "placement of {} replicas on {} nodes ({} used): from nothing median {:.1} ms, best {:.1} ms; after losing a node median {:.1} ms, best {:.1} ms; {runs} runs each (target < 100 ms)",
        first.assigned.len(),
        nodes.len(),
        used.len(),
        cold[runs / 2].as_secs_f64() * 1e3,
        cold[0].as_secs_f64() * 1e3,
        warm[runs / 2].as_secs_f64() * 1e3,
        warm[0].as_secs_f64() * 1e3,
    );
}
