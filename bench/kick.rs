//! Load benchmark of the kick server, on loopback against the local AWS
//! emulator: `bash bench/kick.sh` (which runs this example).
//!
//! 1. 1,000 concurrent registrations (one instance of each of 1,000
//!    services) at the default pace of 5 Route53 requests a second: the
//!    time until all are committed to Route53, registrations per second,
//!    p50/p99 latency, and the ChangeResourceRecordSets calls they took.
//! 2. Up to 10,000 instances (9,000 more, in bursts of 1,000), then
//!    `GET /v1/cluster` 200 times in a row: p50/p99 latency.
//!
//! Bounded: fixed counts, every request with a timeout.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use huxley::control::dns::Settings;
use huxley::control::state::{Zone, Zones};
use huxley::testing::{Emulator, aws, create_public_zone, run_nodes};

const REGION: &str = "us-west-2";
const SERVICES: usize = 1000;
const PER_NODE: usize = 40;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// Registers instance `n` of every service at once; returns each call's
/// latency and the wall time of the burst.
async fn burst(
    client: &reqwest::Client,
    base: &str,
    nodes: &[String],
    n: usize,
) -> (Vec<Duration>, Duration) {
    let start = Instant::now();
    let tasks: Vec<_> = (0..SERVICES)
        .map(|s| {
            let i = n * SERVICES + s;
            let body = serde_json::json!({
                "app": format!("app{}", s / 20), "service": format!("svc{}", s % 20),
                "node": nodes[i / PER_NODE],
                // Loopback, nothing listening: health checks fail fast.
                "address": format!("127.{}.{}.{}", 1 + i / 62_500, (i / 250) % 250, i % 250 + 1),
                "port": 8080, "version": "bench",
            });
            let request = client
                .post(format!("{base}/v1/instances"))
                .bearer_auth("bench-admin")
                .timeout(Duration::from_secs(60))
                .json(&body);
            tokio::spawn(async move {
                let sent = Instant::now();
                let status = request.send().await.map(|r| r.status().as_u16());
                (status, sent.elapsed())
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(tasks.len());
    for task in tasks {
        let (status, took) = task.await.expect("join");
        assert_eq!(status.ok(), Some(201), "a registration failed");
        latencies.push(took);
    }
    let wall = start.elapsed();
    latencies.sort();
    (latencies, wall)
}

fn main() {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let emulator = Emulator::shared(&root);
    let endpoint = emulator.endpoint();
    let private = create_public_zone(&endpoint, REGION, "synth.internal");
    let public = create_public_zone(&endpoint, REGION, "synth.example.com");
    let tokens = std::env::temp_dir().join(format!("huxley-bench-kick-{}", std::process::id()));
    std::fs::create_dir_all(&tokens).expect("tokens dir");
    std::fs::write(tokens.join("admin"), "bench-admin").expect("token");

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let checked = huxley::config::check(&huxley::testing::synth::config(50, 20));
        let config = huxley::compile::kick::kick_config(&checked.config.expect("valid synthetic config"));
        let aws = Arc::new(aws(&endpoint, REGION).await);
        let nodes = run_nodes(&aws, "synth", (10 * SERVICES / PER_NODE) as i32).await;
        let zones = Zones {
            private: Zone { id: private, name: "synth.internal".into() },
            public: Some(Zone { id: public, name: "synth.example.com".into() }),
        };
        let tokens = huxley::control::auth::Tokens::from_dir(&tokens, &config).expect("tokens");
        let kick = huxley::control::leader::start(config, tokens, aws, zones, Settings::default())
            .await
            .expect("kick starts");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        tokio::spawn(huxley::control::leader::serve(Arc::clone(&kick), listener));
        huxley::tls::ensure_provider();
        let client = reqwest::Client::new();

        println!("kick server load, debug build, loopback, local emulator, Route53 paced at 5 requests/s:");
        let calls = || kick.writer.metrics.requests.load(Ordering::Relaxed);
        let before = calls();
        let (latencies, wall) = burst(&client, &base, &nodes, 0).await;
        println!(
            "  1,000 concurrent registrations committed to Route53 in {:.2} s ({:.0}/s; target: under 10 s)",
            wall.as_secs_f64(),
            latencies.len() as f64 / wall.as_secs_f64()
        );
        println!(
            "    latency p50 {}  p99 {}  max {}; {} ChangeResourceRecordSets calls",
            ms(percentile(&latencies, 0.5)),
            ms(percentile(&latencies, 0.99)),
            ms(percentile(&latencies, 1.0)),
            calls() - before
        );

        for n in 1..10 {
            burst(&client, &base, &nodes, n).await;
        }
        let mut latencies = Vec::with_capacity(200);
        let mut size = 0;
        for _ in 0..200 {
            let sent = Instant::now();
            let response = client
                .get(format!("{base}/v1/cluster"))
                .bearer_auth("bench-admin")
                .timeout(Duration::from_secs(10))
                .send()
                .await
                .expect("describe");
            let body = response.bytes().await.expect("body");
            latencies.push(sent.elapsed());
            size = body.len();
        }
        latencies.sort();
        let running: usize = kick
            .registry
            .lock()
            .expect("registry")
            .apps
            .values()
            .flat_map(|s| s.values())
            .map(|s| s.instances.len())
            .sum();
        println!(
            "  GET /v1/cluster with {running} instances ({} KiB): p50 {}  p99 {} (target: p99 under 20 ms)",
            size / 1024,
            ms(percentile(&latencies, 0.5)),
            ms(percentile(&latencies, 0.99))
        );
    });
}
