//! Benchmark: validate a generated config of 1,000 services across 50 apps.
//!
//! Run with `cargo bench --bench validate`. Prints the median and best of
//! repeated runs; the target is under 20 ms in release.

use std::time::{Duration, Instant};

fn main() {
    let source = huxley::testing::synth::config(50, 20);
    let runs = 30;
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            let checked = huxley::config::check(&source);
            let elapsed = start.elapsed();
            assert!(!checked.has_errors(), "the synthetic config must be valid");
            std::hint::black_box(checked);
            elapsed
        })
        .collect();
    times.sort();
    println!(
        "validate 1000 services / 50 apps ({} KiB): median {:.2} ms, best {:.2} ms over {runs} runs (target < 20 ms)",
        source.len() / 1024,
        times[runs / 2].as_secs_f64() * 1e3,
        times[0].as_secs_f64() * 1e3,
    );
}
