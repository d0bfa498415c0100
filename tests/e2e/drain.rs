//! A rollout as a client sees it: a client that resolves the service's
//! private name through Route53 (the emulator), keeps the answer for its
//! TTL as a resolver would, and sends a request every 100 ms through a
//! rollout never meets a stopped replica, because old replicas leave DNS
//! first and stop only after the records' TTL (the service's drain) has
//! passed since Route53 had the change everywhere.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::cluster::{Live, cluster_toml};

const REGISTRY: &str = "r.example";

fn image(name: &str, n: u32) -> String {
    format!("{REGISTRY}/huxley-{name}/shop@sha256:{n:064x}")
}

/// What the client saw: requests, failures (with why), distinct answers.
#[derive(Debug, Default)]
pub(crate) struct Seen {
    pub(crate) requests: u32,
    pub(crate) failures: Vec<String>,
    pub(crate) answers: std::collections::BTreeSet<Vec<String>>,
}

#[test]
fn a_client_that_caches_dns_for_its_ttl_meets_no_stopped_replica_through_a_rollout() {
    let name = "drain";
    let text = cluster_toml(name, 2, 2, 2)
        + r#"[apps.shop.services.web]
build = "."
port = 8080
replicas = 2
health = { http = "/healthz", interval = "1s", timeout = "500ms", healthy = 1, unhealthy = 2 }
deploy = { timeout = "30s", drain = "2s" }
"#;
    let mut live = Live::with_config(name, "127.81.0.0/16", &text, 2);
    live.env.push(("HUXLEY_REGISTRY".into(), REGISTRY.into()));
    let kicks = vec![live.kick("kick")];
    for index in 0..2 {
        live.process_agent(index, &kicks, &["shop.web"]);
    }
    let kick = kicks[0].clone();
    let deploy = |n: u32| -> (u16, Value) {
        live.rt().block_on(async {
            huxley::tls::ensure_provider();
            let response = reqwest::Client::new()
                .post(format!("{kick}/v1/apps/shop/deployments"))
                .bearer_auth(&live.admin)
                .json(
                    &json!({ "commit": format!("{n:040x}"), "images": { "web": image(name, n) } }),
                )
                .send()
                .await
                .expect("kick answers");
            let status = response.status().as_u16();
            (status, response.json().await.unwrap_or(Value::Null))
        })
    };
    let deployed = |n: u32| {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let history = live
                .rt()
                .block_on(live.get(
                    &format!("{kick}/v1/apps/shop/deployments"),
                    Some(&live.admin),
                ))
                .and_then(|(_, t)| serde_json::from_str::<Value>(&t).ok())
                .unwrap_or(Value::Null);
            let newest = &history[0];
            if newest["images"]["web"] == image(name, n).as_str()
                && newest["outcome"] == "succeeded"
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "v{n} never deployed: {history:#}\n{}",
                live.logs()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    };
    // Kick leads before the first deploy.
    live.rt()
        .block_on(live.until_leader(&kicks, Duration::from_secs(30), "no leader"));
    let (status, body) = deploy(1);
    assert_eq!(status, 202, "{body}");
    deployed(1);
    // web's replicas settled on both nodes (spread, if the first node got
    // both): the only replicas that leave below are the rollout's.
    live.rt().block_on(live.describe_until(
        &kicks,
        Duration::from_secs(60),
        "web on both nodes",
        |d| {
            let web = &d["apps"]["shop"]["services"]["web"];
            let nodes: std::collections::BTreeSet<&str> = web["instances"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|i| i["node"].as_str())
                .collect();
            web["healthy"] == 2
                && web["instances"].as_array().is_some_and(|i| i.len() == 2)
                && nodes.len() == 2
        },
    ));

    // The client: resolves through the private zone, caches for the TTL.
    let (running, client) = caching_client(&live, &format!("web.shop.{name}.internal"), 8080);
    std::thread::sleep(Duration::from_secs(1));
    let (status, body) = deploy(2);
    assert_eq!(status, 202, "{body}");
    deployed(2);
    // Past the last drain, so the client's cache turns over once more.
    std::thread::sleep(Duration::from_secs(3));
    running.store(false, Ordering::Relaxed);
    let seen = client.join().expect("the client");
    assert!(seen.requests >= 50, "{seen:?}");
    assert!(
        seen.answers.len() >= 2,
        "the client saw the rollout's answers change: {seen:?}"
    );
    assert!(
        seen.failures.is_empty(),
        "a client holding a DNS answer for its TTL met a stopped replica: {seen:?}\n{}",
        live.logs()
    );
}

/// A client of `record` (in the cluster's private zone) on `port`: it
/// resolves through Route53, keeps each answer for its TTL as a resolver
/// would, and sends a request every 100 ms (for two minutes at most) until
/// told to stop; what it saw.
pub(crate) fn caching_client(
    live: &Live,
    record: &str,
    port: u16,
) -> (Arc<AtomicBool>, std::thread::JoinHandle<Seen>) {
    let zone = live
        .rt()
        .block_on(
            live.aws
                .stack_resource(&format!("huxley-{}", live.name), "PrivateZone"),
        )
        .expect("stack resources")
        .expect("a private zone")
        .trim_start_matches("/hostedzone/")
        .to_owned();
    let running = Arc::new(AtomicBool::new(true));
    let client = {
        let (running, aws, record) = (
            Arc::clone(&running),
            Arc::clone(&live.aws),
            record.to_owned(),
        );
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("rt");
            let mut seen = Seen::default();
            let mut cache: Option<(Vec<String>, Instant)> = None;
            let started = Instant::now();
            while running.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(120) {
                if cache
                    .as_ref()
                    .is_none_or(|(_, until)| Instant::now() >= *until)
                {
                    let records = rt.block_on(aws.list_records(&zone)).expect("records");
                    if let Some(a) = records
                        .into_iter()
                        .find(|r| r.name == record && r.kind == "A")
                    {
                        let ttl = Duration::from_secs(
                            a.ttl.and_then(|t| u64::try_from(t).ok()).unwrap_or(0),
                        );
                        seen.answers.insert(a.values.clone());
                        cache = Some((a.values, Instant::now() + ttl));
                    }
                }
                if let Some((addresses, _)) = &cache
                    && !addresses.is_empty()
                {
                    let address = &addresses[seen.requests as usize % addresses.len()];
                    seen.requests += 1;
                    match http_get(address, port) {
                        Ok(200) => {}
                        Ok(status) => seen.failures.push(format!("{address}: HTTP {status}")),
                        Err(err) => seen.failures.push(format!("{address}: {err}")),
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            seen
        })
    };
    (running, client)
}

/// One HTTP GET of /healthz; the status, or why there was none.
fn http_get(address: &str, port: u16) -> Result<u16, String> {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect_timeout(
        &format!("{address}:{port}")
            .parse()
            .map_err(|e| format!("{e}"))?,
        Duration::from_secs(1),
    )
    .map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(
            format!("GET /healthz HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .map_err(|e| e.to_string())?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .map_err(|e| e.to_string())?;
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no HTTP answer: {answer:?}"))
}
