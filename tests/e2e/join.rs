//! Nodes join one by one, as they boot on AWS minutes apart: the first
//! node to check in gets every replica, and kick spreads them over the
//! nodes that join, make-before-break, so losing any one node leaves every
//! service a healthy replica.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::cluster::{Live, cluster_toml};

/// The nodes each service's healthy, settled replicas run on (`None` while
/// a replica moves: more instances than replicas, or one not healthy).
fn spread_of(description: &Value, service: &str, replicas: usize) -> Option<BTreeSet<String>> {
    let state = &description["apps"]["shop"]["services"][service];
    let instances = state["instances"].as_array()?;
    if instances.len() != replicas || state["healthy"] != replicas {
        return None;
    }
    Some(
        instances
            .iter()
            .filter_map(|i| i["node"].as_str().map(str::to_owned))
            .collect(),
    )
}

#[test]
fn three_agents_checking_in_apart_end_spread_and_losing_one_keeps_every_service_up() {
    let name = "joining";
    let text = cluster_toml(name, 3, 3, 3)
        + r#"[apps.shop.services.web]
image = "ghcr.io/acme/web:1.0.0"
port = 8080
replicas = 2
health = { http = "/healthz", interval = "1s", timeout = "500ms", healthy = 1, unhealthy = 2 }
deploy = { drain = "2s" }

[apps.shop.services.api]
image = "ghcr.io/acme/api:1.0.0"
port = 9000
replicas = 2
health = { http = "/healthz", interval = "1s", timeout = "500ms", healthy = 1, unhealthy = 2 }
deploy = { drain = "2s" }
"#;
    let mut live = Live::with_config(name, "127.82.0.0/16", &text, 3);
    let kicks = vec![live.kick("kick")];
    let start = |live: &mut Live, index: usize| {
        live.process_agent(index, &kicks, &["shop.web", "shop.api"]);
    };
    // The first node checks in alone and gets every replica.
    start(&mut live, 0);
    let first = live.rt().block_on(live.describe_until(
        &kicks,
        Duration::from_secs(60),
        "every replica healthy on the first node",
        |d| spread_of(d, "web", 2).is_some() && spread_of(d, "api", 2).is_some(),
    ));
    for service in ["web", "api"] {
        assert_eq!(
            spread_of(&first, service, 2).map(|n| n.len()),
            Some(1),
            "{service} on one node before the others join: {first:#}"
        );
    }
    // The others check in 5 s apart, while a client that caches web's DNS
    // answer for its TTL sends it a request every 100 ms: the replicas
    // that move drain before they stop, as a rollout's do.
    let (running, client) =
        crate::drain::caching_client(&live, &format!("web.shop.{name}.internal"), 8080);
    for index in 1..3 {
        std::thread::sleep(Duration::from_secs(5));
        start(&mut live, index);
    }
    let spread = live.rt().block_on(live.describe_until(
        &kicks,
        Duration::from_secs(90),
        "each service on two nodes",
        |d| {
            ["web", "api"]
                .iter()
                .all(|s| spread_of(d, s, 2).is_some_and(|nodes| nodes.len() == 2))
        },
    ));
    // Past the last move's drain, so the client's cache turns over.
    std::thread::sleep(Duration::from_secs(3));
    running.store(false, std::sync::atomic::Ordering::Relaxed);
    let seen = client.join().expect("the client");
    assert!(seen.answers.len() >= 2, "the client saw web move: {seen:?}");
    assert!(
        seen.failures.is_empty(),
        "a client holding a DNS answer for its TTL met a stopped replica while web spread: {seen:?}\n{}",
        live.logs()
    );
    let on_first: Vec<&str> = ["web", "api"]
        .into_iter()
        .filter(|s| spread_of(&spread, s, 2).is_some_and(|nodes| nodes.contains(&live.nodes[0])))
        .collect();
    assert!(!on_first.is_empty(), "{spread:#}");

    // Losing the first node (its agent and its replicas) leaves every
    // service a healthy replica all along.
    live.processes.signal("node-0", "KILL");
    let leader = kicks[0].clone();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut samples = 0;
    while Instant::now() < deadline {
        let description: Value = live
            .rt()
            .block_on(live.get(&format!("{leader}/v1/cluster"), Some(&live.admin)))
            .and_then(|(_, t)| serde_json::from_str(&t).ok())
            .unwrap_or(Value::Null);
        for service in ["web", "api"] {
            let healthy = description["apps"]["shop"]["services"][service]["healthy"]
                .as_u64()
                .unwrap_or(0);
            assert!(
                healthy >= 1,
                "{service} lost every healthy replica with one node:\n{description:#}\n{}",
                live.logs()
            );
        }
        samples += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(samples > 20, "{samples} samples");
}
