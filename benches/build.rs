//! Benchmark: compile a generated config of 1,000 services across 50 apps
//! into every artifact (in memory; writing files is the disk's business).
//!
//! Run with `cargo bench --bench build`. Target: under 100 ms in release.

use std::time::{Duration, Instant};

use huxley::compile::{TemplateFormat, compile};

fn main() {
    let source = huxley::testing::synth::config(50, 20);
    let config = huxley::config::check(&source)
        .config
        .expect("the synthetic config is valid");
    let runs = 20;
    let mut files = 0;
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            let artifacts = compile(&config, TemplateFormat::Json).expect("within quotas");
            let elapsed = start.elapsed();
            files = artifacts.files.len();
            std::hint::black_box(artifacts);
            elapsed
        })
        .collect();
    times.sort();
    let mut total: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            let config = huxley::config::check(&source).config.expect("valid");
            std::hint::black_box(compile(&config, TemplateFormat::Json).expect("within quotas"));
            start.elapsed()
        })
        .collect();
    total.sort();
    println!(
        "build 1000 services / 50 apps -> {files} files: compile median {:.2} ms (best {:.2}); validate+compile median {:.2} ms over {runs} runs (target < 100 ms)",
        times[runs / 2].as_secs_f64() * 1e3,
        times[0].as_secs_f64() * 1e3,
        total[runs / 2].as_secs_f64() * 1e3,
    );
}
