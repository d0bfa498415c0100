//! The kick server's parts that talk to AWS, against the local emulator.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use huxley::aws::RecordChange;
use huxley::control::dns::{Settings, Writer};
use huxley::testing::{Emulator, aws, create_public_zone};

use crate::support::root;

const REGION: &str = "us-west-2";

fn a_record(name: &str, ip: &str) -> RecordChange {
    RecordChange {
        upsert: true,
        name: name.to_owned(),
        kind: "A".to_owned(),
        ttl: 60,
        values: vec![ip.to_owned()],
        alias: None,
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

#[test]
fn a_thousand_concurrent_changes_commit_in_a_handful_of_requests() {
    let emulator = Emulator::shared(&root());
    let zone = create_public_zone(&emulator.endpoint(), REGION, "burst.internal");
    runtime().block_on(async {
        let aws = Arc::new(aws(&emulator.endpoint(), REGION).await);
        // The default pacing: 5 requests a second.
        let writer = Writer::spawn(Arc::clone(&aws), Settings::default(), Default::default());
        let tasks: Vec<_> = (0..1000)
            .map(|i| {
                let writer = writer.clone();
                let zone = zone.clone();
                let name = format!("i{i}.web.blog.burst.internal");
                let ip = format!("10.1.{}.{}", i / 250, i % 250 + 1);
                tokio::spawn(async move { writer.submit(&zone, a_record(&name, &ip)).await })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.expect("join"), Ok(()));
        }
        let requests = writer.metrics.requests.load(Ordering::Relaxed);
        assert!(
            requests <= 5,
            "1,000 changes took {requests} ChangeResourceRecordSets calls"
        );
        let records = aws.list_records(&zone).await.expect("list");
        let written = records
            .iter()
            .filter(|r| r.kind == "A" && r.name.ends_with(".web.blog.burst.internal"))
            .count();
        assert_eq!(written, 1000, "every record is in the zone");
    });
}

#[test]
fn one_bad_change_fails_alone_and_the_rest_commit() {
    let emulator = Emulator::shared(&root());
    let zone = create_public_zone(&emulator.endpoint(), REGION, "bisect.internal");
    runtime().block_on(async {
        let aws = Arc::new(aws(&emulator.endpoint(), REGION).await);
        let writer = Writer::spawn(Arc::clone(&aws), Settings::default(), Default::default());
        let mut tasks = Vec::new();
        for i in 0..20 {
            let (writer, zone) = (writer.clone(), zone.clone());
            tasks.push(tokio::spawn(async move {
                writer
                    .submit(
                        &zone,
                        a_record(&format!("ok{i}.bisect.internal"), "10.0.0.1"),
                    )
                    .await
            }));
        }
        // A name outside the zone: Route53 rejects the batch that holds it.
        let bad = {
            let (writer, zone) = (writer.clone(), zone.clone());
            tokio::spawn(async move {
                writer
                    .submit(&zone, a_record("stray.example.org", "10.0.0.9"))
                    .await
            })
        };
        for task in tasks {
            assert_eq!(task.await.expect("join"), Ok(()));
        }
        let error = bad
            .await
            .expect("join")
            .expect_err("the stray name is rejected");
        assert!(error.contains("Route53 rejected the change"), "{error}");
        assert_eq!(writer.metrics.rejected.load(Ordering::Relaxed), 1);
        let records = aws.list_records(&zone).await.expect("list");
        assert_eq!(
            records.iter().filter(|r| r.name.starts_with("ok")).count(),
            20
        );
    });
}

// ----- the API on loopback -------------------------------------------------

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use huxley::control::auth::Tokens;
use huxley::control::state::{Kick, Zone, Zones};
use huxley::spec::kick::KickConfig;
use serde_json::{Value, json};

/// A kick server for cluster `name` on 127.0.0.1, with its zones in the
/// emulator and tokens `admin`, `web` (blog.web) and `api` (blog.api).
struct Harness {
    base: String,
    kick: Arc<Kick>,
    aws: Arc<huxley::aws::Aws>,
    zones: Zones,
    config: KickConfig,
    tokens_dir: std::path::PathBuf,
    /// The cluster's nodes: EC2 instances in the emulator.
    nodes: Vec<String>,
}

fn kick_config(name: &str) -> KickConfig {
    let toml = format!(
        r#"[cluster]
name = "{name}"
region = "us-west-2"
availability-zones = ["us-west-2a", "us-west-2b"]
public-domain = "{name}.example.com"
private-domain = "{name}.internal"
ingress = "dns"

[cluster.nodes]
instance-type = "m6i.large"
min = 2
max = 4

[apps.blog.services.web]
image = "nginx:1.27"
port = 8080
host-port = 80
public = ["www"]
health = {{ http = "/healthz", interval = "1s", timeout = "500ms", healthy = 2, unhealthy = 2 }}

[apps.blog.services.api]
image = "ghcr.io/acme/api:1.4.2"
port = 9000
"#
    );
    let checked = huxley::config::check(&toml);
    huxley::compile::kick::kick_config(&checked.config.expect("valid test config"))
}

async fn harness(name: &str) -> Harness {
    let settings = Settings {
        requests_per_second: 50.0,
        ..Settings::default()
    };
    harness_for(name, kick_config(name), settings).await
}

/// A harness for any kick config whose zones are `<name>.internal` and
/// `<name>.example.com`; its instances may be anywhere in 10.0.0.0/8 (the
/// "VPC") and 127.0.0.0/8 (the "containers", where the tests' services
/// listen).
async fn harness_for(name: &str, config: KickConfig, settings: Settings) -> Harness {
    let endpoint = Emulator::shared(&root()).endpoint();
    harness_through(name, config, settings, &endpoint).await
}

/// [`harness_for`], with the kick server reaching AWS through `endpoint`
/// (a [`huxley::testing::Proxy`]); the harness's own client goes straight
/// to the emulator.
async fn harness_through(
    name: &str,
    mut config: KickConfig,
    settings: Settings,
    kick_endpoint: &str,
) -> Harness {
    config.network.vpc_cidr = "10.0.0.0/8".into();
    config.network.container_range = "127.0.0.0/8".into();
    let emulator = Emulator::shared(&root());
    let endpoint = emulator.endpoint();
    let (private, public) = {
        let (e1, e2) = (endpoint.clone(), endpoint.clone());
        let (p1, p2) = (format!("{name}.internal"), format!("{name}.example.com"));
        let a = tokio::task::spawn_blocking(move || create_public_zone(&e1, REGION, &p1))
            .await
            .expect("zone");
        let b = tokio::task::spawn_blocking(move || create_public_zone(&e2, REGION, &p2))
            .await
            .expect("zone");
        (a, b)
    };
    let zones = Zones {
        private: Zone {
            id: private,
            name: format!("{name}.internal"),
        },
        public: Some(Zone {
            id: public,
            name: format!("{name}.example.com"),
        }),
    };
    let tokens_dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("kick")
        .join(name);
    let _ = std::fs::remove_dir_all(&tokens_dir);
    std::fs::create_dir_all(tokens_dir.join("blog")).expect("tokens dir");
    std::fs::write(tokens_dir.join("admin"), "admin-token").expect("token");
    std::fs::write(tokens_dir.join("blog/web"), "web-token").expect("token");
    std::fs::write(tokens_dir.join("blog/api"), "api-token").expect("token");
    let aws = Arc::new(aws(&endpoint, REGION).await);
    // The kick server's own clients (so tests count its calls with
    // `h.kick.aws`, not the harness's).
    let kick_aws = Arc::new(huxley::testing::aws(kick_endpoint, REGION).await);
    let nodes = huxley::testing::run_nodes(&aws, name, 2).await;
    let mut harness = Harness {
        base: String::new(),
        kick: start_kick_with(&config, &tokens_dir, &kick_aws, &zones, settings).await,
        aws,
        zones,
        config,
        tokens_dir,
        nodes,
    };
    harness.base = serve(Arc::clone(&harness.kick)).await;
    harness
}

async fn start_kick(
    config: &KickConfig,
    tokens_dir: &std::path::Path,
    aws: &Arc<huxley::aws::Aws>,
    zones: &Zones,
) -> Arc<Kick> {
    let settings = Settings {
        requests_per_second: 50.0,
        ..Settings::default()
    };
    start_kick_with(config, tokens_dir, aws, zones, settings).await
}

async fn start_kick_with(
    config: &KickConfig,
    tokens_dir: &std::path::Path,
    aws: &Arc<huxley::aws::Aws>,
    zones: &Zones,
    settings: Settings,
) -> Arc<Kick> {
    let tokens = Tokens::from_dir(tokens_dir, config).expect("tokens");
    huxley::control::leader::start(
        config.clone(),
        tokens,
        Arc::clone(aws),
        zones.clone(),
        settings,
    )
    .await
    .expect("kick starts")
}

async fn serve(kick: Arc<Kick>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(huxley::control::leader::serve(kick, listener));
    format!("http://{address}")
}

async fn call(
    method: reqwest::Method,
    url: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    huxley::tls::ensure_provider();
    let client = reqwest::Client::new();
    let mut request = client.request(method, url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("kick answers");
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// The zone's records, excluding SOA and NS: (name, type, values).
async fn records(aws: &huxley::aws::Aws, zone: &str) -> Vec<(String, String, Vec<String>)> {
    aws.list_records(zone)
        .await
        .expect("list")
        .into_iter()
        .filter(|r| r.kind != "SOA" && r.kind != "NS")
        .map(|r| (r.name, r.kind, r.values))
        .collect()
}

#[test]
fn requests_are_authenticated_and_scoped_and_rejected_ones_change_nothing() {
    runtime().block_on(async {
        let h = harness("kickauth").await;
        let get = reqwest::Method::GET;
        let (put, post, delete) = (reqwest::Method::PUT, reqwest::Method::POST, reqwest::Method::DELETE);
        assert_eq!(call(get.clone(), &format!("{}/healthz", h.base), None, None).await.0, 200);
        assert_eq!(call(get.clone(), &format!("{}/v1/cluster", h.base), None, None).await.0, 401);
        assert_eq!(call(get.clone(), &format!("{}/v1/cluster", h.base), Some("wrong"), None).await.0, 401);
        assert_eq!(call(get.clone(), &format!("{}/v1/cluster", h.base), Some("web-token"), None).await.0, 403);
        let (status, described) = call(get.clone(), &format!("{}/v1/cluster", h.base), Some("admin-token"), None).await;
        assert_eq!(status, 200);
        assert_eq!(described["cluster"], "kickauth");
        assert_eq!(call(get.clone(), &format!("{}/v1/apps/nope", h.base), Some("admin-token"), None).await.0, 404);
        assert_eq!(call(get.clone(), &format!("{}/v1/apps/blog/services/web", h.base), Some("api-token"), None).await.0, 403);
        assert_eq!(call(get.clone(), &format!("{}/v1/apps/blog/services/web", h.base), Some("web-token"), None).await.0, 200);
        // Regression: an unknown service answered 404 to any token, so any
        // token could list the services; the scope is checked first.
        assert_eq!(call(get.clone(), &format!("{}/v1/apps/blog/services/nope", h.base), Some("web-token"), None).await.0, 403);
        assert_eq!(call(get.clone(), &format!("{}/v1/apps/blog/services/nope", h.base), Some("admin-token"), None).await.0, 404);
        // Regression: any address was accepted, and its health came back to
        // the caller: a port scanner. Only the cluster's own networks are.
        let scan = json!({"app": "blog", "service": "web", "node": h.nodes[0], "address": "192.0.2.10", "port": 22});
        let (status, body) = call(post.clone(), &format!("{}/v1/instances", h.base), Some("web-token"), Some(scan)).await;
        assert_eq!(status, 400, "{body}");
        assert!(body["error"].as_str().is_some_and(|e| e.contains("outside the cluster's networks")), "{body}");
        // Regression: record values went unchecked to the shared writer,
        // where one bad value splits everyone's batch.
        let before = h.kick.writer.metrics.requests.load(Ordering::Relaxed);
        for (kind, value) in [("A", "not-an-address"), ("AAAA", "10.0.0.1"), ("CNAME", "a..b"), ("SRV", "1 2 x host"), ("TXT", "unquoted")] {
            let bad = json!({"name": "www.kickauth.example.com", "type": kind, "values": [value]});
            let (status, body) = call(put.clone(), &format!("{}/v1/records", h.base), Some("web-token"), Some(bad)).await;
            assert_eq!(status, 400, "{kind} {value}: {body}");
            assert!(body["error"].as_str().is_some_and(|e| e.contains("is not a valid")), "{body}");
        }
        assert_eq!(h.kick.writer.metrics.requests.load(Ordering::Relaxed), before, "nothing reached Route53");

        let web = json!({"app": "blog", "service": "web", "node": h.nodes[0], "address": "127.0.0.1", "port": 1});
        let (status, body) = call(post.clone(), &format!("{}/v1/instances", h.base), Some("api-token"), Some(web.clone())).await;
        assert_eq!(status, 403, "{body}");
        let (status, body) = call(post.clone(), &format!("{}/v1/instances", h.base), Some("web-token"), Some(json!({"app": "blog"}))).await;
        assert_eq!(status, 400, "{body}");
        assert!(body["error"].as_str().is_some_and(|e| e.contains("malformed body")), "{body}");
        assert_eq!(call(put.clone(), &format!("{}/v1/instances/nope/heartbeat", h.base), Some("web-token"), None).await.0, 404);

        let outside = json!({"name": "www.elsewhere.org", "type": "A", "values": ["10.0.0.1"]});
        let (status, body) = call(put.clone(), &format!("{}/v1/records", h.base), Some("web-token"), Some(outside)).await;
        assert_eq!(status, 403, "{body}");
        assert!(body["error"].as_str().is_some_and(|e| e.contains("outside the cluster's zones")), "{body}");
        let other = json!({"name": "api.blog.kickauth.internal", "type": "A", "values": ["10.0.0.1"]});
        assert_eq!(call(put.clone(), &format!("{}/v1/records", h.base), Some("web-token"), Some(other)).await.0, 403);
        let bad_type = json!({"name": "www.kickauth.example.com", "type": "MX", "values": ["10 mail"]});
        assert_eq!(call(put.clone(), &format!("{}/v1/records", h.base), Some("web-token"), Some(bad_type)).await.0, 400);
        let no_token = json!({"name": "www.kickauth.example.com", "type": "A", "values": ["10.0.0.1"]});
        assert_eq!(call(delete, &format!("{}/v1/records", h.base), None, Some(no_token)).await.0, 401);

        for zone in [&h.zones.private.id, &h.zones.public.as_ref().expect("public").id] {
            assert!(records(&h.aws, zone).await.is_empty(), "a rejected request changed Route53");
        }
    });
}

#[test]
fn records_are_written_with_an_ownership_record_and_foreign_names_are_refused() {
    runtime().block_on(async {
        let h = harness("kickrecords").await;
        let public = h.zones.public.clone().expect("public");
        let record =
            json!({"name": "www.kickrecords.example.com", "type": "A", "ttl": 300, "values": ["10.0.0.7"]});
        let (status, body) = call(
            reqwest::Method::PUT,
            &format!("{}/v1/records", h.base),
            Some("web-token"),
            Some(record.clone()),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let live = records(&h.aws, &public.id).await;
        assert!(
            live.contains(&(
                "www.kickrecords.example.com".into(),
                "A".into(),
                vec!["10.0.0.7".into()]
            )),
            "{live:?}"
        );
        assert!(
            live.iter()
                .any(|(n, t, v)| n == "_huxley-owner.www.kickrecords.example.com"
                    && t == "TXT"
                    && v[0].contains("cluster=kickrecords,")),
            "{live:?}"
        );

        // A restarted kick knows the name is its own, and what it holds.
        let restarted = start_kick(&h.config, &h.tokens_dir, &h.aws, &h.zones).await;
        assert!(
            restarted
                .owned
                .lock()
                .expect("owned")
                .contains("www.kickrecords.example.com")
        );
        // With its TTL: Route53 deletes only an exact match.
        let held = restarted
            .writer
            .published("www.kickrecords.example.com", "A")
            .map(|c| (c.ttl, c.values));
        assert_eq!(held, Some((300, vec!["10.0.0.7".to_owned()])));
        let base = serve(restarted).await;
        let (status, _) = call(
            reqwest::Method::DELETE,
            &format!("{base}/v1/records"),
            Some("web-token"),
            Some(record),
        )
        .await;
        assert_eq!(status, 204);
        let live = records(&h.aws, &public.id).await;
        assert!(
            !live
                .iter()
                .any(|(n, t, _)| n == "www.kickrecords.example.com" && t == "A"),
            "{live:?}"
        );
    });
}

#[test]
fn a_name_that_is_not_huxleys_is_never_overwritten() {
    runtime().block_on(async {
        let emulator = Emulator::shared(&root());
        // The public zone already holds www, written by someone else.
        let zone = {
            let endpoint = emulator.endpoint();
            tokio::task::spawn_blocking(move || {
                create_public_zone(&endpoint, REGION, "kickforeign.example.com")
            })
            .await
            .expect("zone")
        };
        let aws = Arc::new(aws(&emulator.endpoint(), REGION).await);
        aws.change_records(
            &zone,
            &[a_record("www.kickforeign.example.com", "192.0.2.1")],
        )
        .await
        .expect("seed");
        let private = {
            let endpoint = emulator.endpoint();
            tokio::task::spawn_blocking(move || {
                create_public_zone(&endpoint, REGION, "kickforeign.internal")
            })
            .await
            .expect("zone")
        };
        let zones = Zones {
            private: Zone {
                id: private,
                name: "kickforeign.internal".into(),
            },
            public: Some(Zone {
                id: zone.clone(),
                name: "kickforeign.example.com".into(),
            }),
        };
        let config = kick_config("kickforeign");
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("kick/kickforeign");
        std::fs::create_dir_all(dir.join("blog")).expect("dir");
        std::fs::write(dir.join("admin"), "admin-token").expect("token");
        std::fs::write(dir.join("blog/web"), "web-token").expect("token");
        let base = serve(start_kick(&config, &dir, &aws, &zones).await).await;
        let record =
            json!({"name": "www.kickforeign.example.com", "type": "A", "values": ["10.0.0.7"]});
        let (status, body) = call(
            reqwest::Method::PUT,
            &format!("{base}/v1/records"),
            Some("web-token"),
            Some(record),
        )
        .await;
        assert_eq!(status, 409, "{body}");
        let live = records(&aws, &zone).await;
        assert_eq!(
            live,
            [(
                "www.kickforeign.example.com".into(),
                "A".into(),
                vec!["192.0.2.1".into()]
            )]
        );
    });
}

/// A tiny HTTP service on 127.0.0.1 whose `/healthz` answers 200 or 503.
async fn test_service(healthy: Arc<AtomicBool>) -> SocketAddr {
    test_service_on("127.0.0.1", healthy).await
}

/// A tiny HTTP service on a loopback address whose `/healthz` answers 200
/// or 503.
async fn test_service_on(ip: &str, healthy: Arc<AtomicBool>) -> SocketAddr {
    let app = axum::Router::new().route(
        "/healthz",
        axum::routing::get(move || {
            let healthy = Arc::clone(&healthy);
            async move {
                if healthy.load(Ordering::Relaxed) {
                    (axum::http::StatusCode::OK, "ok")
                } else {
                    (axum::http::StatusCode::SERVICE_UNAVAILABLE, "down")
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    address
}

/// Waits (bounded) until blog.web's private name's A record is `expected`.
async fn until_dns(h: &Harness, expected: Option<&str>) -> Vec<(String, String, Vec<String>)> {
    let expected: Vec<&str> = expected.into_iter().collect();
    until_dns_is(h, &expected, Duration::from_secs(20)).await
}

/// Waits (at most `limit`) until blog.web's private name answers exactly
/// `expected` (none: no record).
async fn until_dns_is(
    h: &Harness,
    expected: &[&str],
    limit: Duration,
) -> Vec<(String, String, Vec<String>)> {
    let name = h.config.apps["blog"].services["web"]
        .private_name
        .clone()
        .expect("blog.web has a private name");
    let mut expected: Vec<String> = expected.iter().map(|e| (*e).to_owned()).collect();
    expected.sort();
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let live = records(&h.aws, &h.zones.private.id).await;
        let mut current = live
            .iter()
            .find(|(n, t, _)| *n == name && t == "A")
            .map(|(_, _, v)| v.clone())
            .unwrap_or_default();
        current.sort();
        if current == expected {
            return live;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} never became {expected:?}: {live:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the public zone's A record of `name` is `expected`.
async fn until_public(h: &Harness, name: &str, expected: Option<&str>) {
    let zone = &h.zones.public.as_ref().expect("a public zone").id;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let live = records(&h.aws, zone).await;
        let current = live
            .iter()
            .find(|(n, t, _)| n == name && t == "A")
            .map(|(_, _, v)| v.clone());
        if current.as_deref() == expected.map(|e| vec![e.to_owned()]).as_deref() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} never became {expected:?}: {live:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[test]
fn health_checks_decide_what_dns_answers() {
    runtime().block_on(async {
        let h = harness("kickhealth").await;
        let healthy = Arc::new(AtomicBool::new(true));
        let service = test_service(Arc::clone(&healthy)).await;
        let registration = json!({"app": "blog", "service": "web", "node": h.nodes[0], "address": "127.0.0.1", "port": service.port(), "version": "abc123"});
        let (status, body) = call(reqwest::Method::POST, &format!("{}/v1/instances", h.base), Some("web-token"), Some(registration)).await;
        assert_eq!(status, 201, "{body}");

        until_dns(&h, Some("127.0.0.1")).await;
        // The public name carries the public address of the node that runs
        // the healthy replica, never the replica's own address (the
        // internet cannot reach a container).
        let public_ip = h
            .aws
            .cluster_nodes("kickhealth")
            .await
            .expect("nodes")
            .into_iter()
            .find(|n| n.id == h.nodes[0])
            .and_then(|n| n.public_address)
            .expect("the emulator gives nodes a public address")
            .to_string();
        until_public(&h, "www.kickhealth.example.com", Some(&public_ip)).await;
        let (_, described) = call(reqwest::Method::GET, &format!("{}/v1/apps/blog/services/web", h.base), Some("admin-token"), None).await;
        assert_eq!((described["running"].as_u64(), described["healthy"].as_u64()), (Some(1), Some(1)), "{described}");
        assert_eq!(described["instances"][0]["last_check_output"], "HTTP 200");

        healthy.store(false, Ordering::Relaxed);
        until_dns(&h, None).await;
        until_public(&h, "www.kickhealth.example.com", None).await;
        let (_, described) = call(reqwest::Method::GET, &format!("{}/v1/cluster", h.base), Some("admin-token"), None).await;
        let web = &described["apps"]["blog"]["services"]["web"];
        assert_eq!(web["instances"][0]["health"], "unhealthy", "{described}");
        assert_eq!(web["instances"][0]["last_check_output"], "HTTP 503");
        assert_eq!(described["nodes"][&h.nodes[0]]["cpu_requested_millis"], 250);
        assert_eq!(described["nodes"][&h.nodes[1]]["instances"], 0, "an empty node is described too");
        assert_eq!(described["nodes"][&h.nodes[1]]["instance_type"], "m6i.large");

        healthy.store(true, Ordering::Relaxed);
        until_dns(&h, Some("127.0.0.1")).await;

        let (status, metrics) = call(reqwest::Method::GET, &format!("{}/metrics", h.base), Some("admin-token"), None).await;
        assert_eq!(status, 200);
        let text = metrics.as_str().unwrap_or_default();
        assert!(text.contains("huxley_kick_instances{app=\"blog\",service=\"web\",health=\"healthy\"} 1"), "{text}");
        assert!(text.contains("huxley_kick_route53_requests_total"), "{text}");
    });
}

/// Issue 19: throttling and 5xx are normal on AWS. Through a wire that
/// answers 10% of calls with a plain-text 503 and adds up to 200 ms, the
/// kick server keeps the private name exactly the healthy replicas as they
/// fail and recover (two seeds).
#[test]
fn dns_follows_health_exactly_through_aws_faults() {
    for seed in [7, 8] {
        runtime().block_on(async {
            let proxy = huxley::testing::Proxy::start(Emulator::shared(&root()).port);
            proxy.set_faults(huxley::testing::Faults {
                unavailable: 0.1,
                latency: Duration::from_millis(200),
                seed,
                ..huxley::testing::Faults::default()
            });
            let settings = Settings {
                requests_per_second: 50.0,
                ..Settings::default()
            };
            let name = format!("kickfaults{seed}");
            let h = harness_through(&name, kick_config(&name), settings, &proxy.endpoint()).await;
            let mut flags = Vec::new();
            for ip in ["127.0.0.11", "127.0.0.12", "127.0.0.13"] {
                let healthy = Arc::new(AtomicBool::new(true));
                let service = test_service_on(ip, Arc::clone(&healthy)).await;
                let registration = json!({"app": "blog", "service": "web", "node": h.nodes[0], "address": ip, "port": service.port()});
                let (status, body) = call(reqwest::Method::POST, &format!("{}/v1/instances", h.base), Some("web-token"), Some(registration)).await;
                assert_eq!(status, 201, "{body}");
                flags.push(healthy);
            }
            let limit = Duration::from_secs(60);
            until_dns_is(&h, &["127.0.0.11", "127.0.0.12", "127.0.0.13"], limit).await;
            flags[1].store(false, Ordering::Relaxed);
            until_dns_is(&h, &["127.0.0.11", "127.0.0.13"], limit).await;
            flags[0].store(false, Ordering::Relaxed);
            flags[1].store(true, Ordering::Relaxed);
            until_dns_is(&h, &["127.0.0.12", "127.0.0.13"], limit).await;
            let requests = proxy.requests();
            // The draws are seeded: the n-th request gets the n-th.
            assert!(
                requests.iter().any(|r| r.failed),
                "no call failed: the test saw no fault ({} requests)",
                requests.len()
            );
        });
    }
}

/// Regression: a Route53 write that failed past its retries left the
/// record as it was until the service's health changed again (perhaps
/// never), and a drain went on to stop replicas DNS still named. A
/// service whose write failed is written again at its next check.
#[test]
fn a_failed_dns_write_is_written_again_at_the_next_check() {
    runtime().block_on(async {
        let proxy = huxley::testing::Proxy::start(Emulator::shared(&root()).port);
        let settings = Settings {
            requests_per_second: 50.0,
            ..Settings::default()
        };
        let name = "kickbehind";
        let h = harness_through(name, kick_config(name), settings, &proxy.endpoint()).await;
        let mut flags = Vec::new();
        for (ip, healthy) in [("127.0.0.21", true), ("127.0.0.22", false)] {
            let healthy = Arc::new(AtomicBool::new(healthy));
            let service = test_service_on(ip, Arc::clone(&healthy)).await;
            let registration = json!({"app": "blog", "service": "web", "node": h.nodes[0], "address": ip, "port": service.port()});
            let (status, body) = call(reqwest::Method::POST, &format!("{}/v1/instances", h.base), Some("web-token"), Some(registration)).await;
            assert_eq!(status, 201, "{body}");
            flags.push(healthy);
        }
        until_dns_is(&h, &["127.0.0.21"], Duration::from_secs(20)).await;
        // Route53 refuses every change while the second replica turns
        // healthy; then it takes them again, and nothing else changes.
        proxy.set_faults(huxley::testing::Faults {
            deny: Some("route53:POST".into()),
            ..huxley::testing::Faults::default()
        });
        flags[1].store(true, Ordering::Relaxed);
        // Kick sees both healthy, and its write of that is refused.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let (_, web) = call(reqwest::Method::GET, &format!("{}/v1/apps/blog/services/web", h.base), Some("admin-token"), None).await;
            if web["healthy"].as_u64() == Some(2) {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "never both healthy: {web}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(proxy.requests().iter().any(|r| r.failed && r.action.starts_with("route53:POST")));
        // Still the first replica only.
        until_dns_is(&h, &["127.0.0.21"], Duration::from_secs(1)).await;
        proxy.set_faults(huxley::testing::Faults::default());
        until_dns_is(&h, &["127.0.0.21", "127.0.0.22"], Duration::from_secs(20)).await;
        drop(flags);
    });
}

#[test]
fn the_openapi_document_is_served() {
    let document: Value = serde_json::from_str(&huxley::spec::openapi::to_json()).expect("JSON");
    runtime().block_on(async {
        let h = harness("kickopenapi").await;
        let (status, served) = call(
            reqwest::Method::GET,
            &format!("{}/v1/openapi.json", h.base),
            Some("api-token"),
            None,
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(served, document);
    });
}

/// schemathesis (PyPI, in .venv/) sends generated requests to a running
/// kick server and checks every answer against the OpenAPI document: no
/// server errors, documented status codes, content types and bodies.
#[test]
fn the_api_keeps_its_openapi_contract_under_schemathesis() {
    let schemathesis = root().join(".venv/bin/schemathesis");
    assert!(
        schemathesis.exists(),
        "run scripts/test.sh to install schemathesis into .venv/"
    );
    runtime().block_on(async {
        let h = harness("kickfuzz").await;
        let base = h.base.clone();
        let output = tokio::task::spawn_blocking(move || {
            std::process::Command::new(schemathesis)
                .current_dir(root())
                .args(["run", "schemas/kick.openapi.json", "--url", &base])
                .args(["-H", "Authorization: Bearer admin-token"])
                .args([
                    "--checks",
                    "all",
                    "--max-examples",
                    "25",
                    "--generation-deterministic",
                    "--request-timeout",
                    "10",
                ])
                .env("SCHEMATHESIS_HOOKS", "")
                .env("NO_COLOR", "1")
                .output()
                .expect("run schemathesis")
        })
        .await
        .expect("join");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "schemathesis found problems:\n{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    });
}

/// The description without the moment it was made.
fn timeless(mut description: Value) -> Value {
    if let Some(object) = description.as_object_mut() {
        object.remove("generated_at");
    }
    description
}

/// Polls `GET /v1/cluster` (bounded) until `done` holds; returns it.
async fn describe_until(base: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, described) = call(
            reqwest::Method::GET,
            &format!("{base}/v1/cluster"),
            Some("admin-token"),
            None,
        )
        .await;
        if status == 200 && done(&described) {
            return timeless(described);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never {what}: {described}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The description, and blog.web's instances in it.
async fn web_instances(base: &str) -> (Value, Vec<Value>) {
    let (_, described) = call(
        reqwest::Method::GET,
        &format!("{base}/v1/cluster"),
        Some("admin-token"),
        None,
    )
    .await;
    let instances = described["apps"]["blog"]["services"]["web"]["instances"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    (described, instances)
}

#[test]
fn a_restarted_kick_rebuilds_its_registry_from_route53_and_ec2() {
    // The test services outlive every kick: they run on their own runtime.
    let services = runtime();
    let healthy = services.block_on(test_service_on(
        "127.0.0.1",
        Arc::new(AtomicBool::new(true)),
    ));
    let failing = services.block_on(test_service_on(
        "127.0.0.2",
        Arc::new(AtomicBool::new(false)),
    ));

    // The first kick runs on a runtime of its own: dropping it stops kick
    // (its API, check loops and writer) as a crash would.
    let first = runtime();
    let h = first.block_on(harness("kickrestart"));
    let (config, zones, tokens_dir, nodes) = (
        h.config.clone(),
        h.zones.clone(),
        h.tokens_dir.clone(),
        h.nodes.clone(),
    );
    let before = first.block_on(async {
        for (service, node, version) in [(healthy, &nodes[0], "v1"), (failing, &nodes[1], "v2")] {
            let registration = json!({"app": "blog", "service": "web", "node": node, "address": service.ip().to_string(), "port": service.port(), "version": version});
            let (status, body) = call(reqwest::Method::POST, &format!("{}/v1/instances", h.base), Some("web-token"), Some(registration)).await;
            assert_eq!((status, body["committed"].as_bool()), (201, Some(true)), "{body}");
        }
        let described = describe_until(&h.base, "one healthy and one unhealthy instance", |d| {
            let web = &d["apps"]["blog"]["services"]["web"];
            web["healthy"] == 1 && web["instances"].as_array().is_some_and(|i| i.iter().any(|i| i["health"] == "unhealthy"))
        })
        .await;
        // ...and DNS carries the healthy one.
        until_dns(&h, Some("127.0.0.1")).await;
        described
    });
    drop(h);
    drop(first);

    let second = runtime();
    second.block_on(async {
        let aws = Arc::new(aws(&Emulator::shared(&root()).endpoint(), REGION).await);
        let dns_before = records(&aws, &zones.private.id).await;
        let kick = start_kick(&config, &tokens_dir, &aws, &zones).await;
        assert!(
            kick.owned
                .lock()
                .expect("owned")
                .contains("web.blog.kickrestart.internal"),
            "{dns_before:?}"
        );
        let base = serve(Arc::clone(&kick)).await;
        // Restored at once (health from what DNS carries), then re-checked:
        // the description comes back the same, and DNS never moved.
        let after = describe_until(&base, "the description from before the restart", |d| {
            timeless(d.clone()) == before
        })
        .await;
        assert_eq!(after, before);
        assert_eq!(records(&aws, &zones.private.id).await, dns_before);
    });
    drop(second);

    // A node that is gone takes its instances with it, from the registry
    // and from Route53, at the next start.
    let third = runtime();
    third.block_on(async {
        let aws = Arc::new(aws(&Emulator::shared(&root()).endpoint(), REGION).await);
        huxley::testing::terminate_nodes(&aws, &nodes[1..]).await;
        let kick = start_kick(&config, &tokens_dir, &aws, &zones).await;
        let base = serve(kick).await;
        let (described, instances) = web_instances(&base).await;
        assert_eq!(instances.len(), 1, "{described}");
        assert_eq!(instances[0]["node"], nodes[0].as_str());
        let replicas = records(&aws, &zones.private.id)
            .await
            .into_iter()
            .find(|(name, _, _)| name == "_huxley-replicas.web.blog.kickrestart.internal")
            .map(|(_, _, values)| values);
        assert_eq!(replicas.map(|v| v.len()), Some(1));
    });

    // Regression: a new leader whose one read of EC2 lists no node at all
    // dropped every instance and emptied every DNS answer. It reads again,
    // then keeps what the records name until a read lists some.
    let fourth = runtime();
    fourth.block_on(async {
        let aws = Arc::new(aws(&Emulator::shared(&root()).endpoint(), REGION).await);
        huxley::testing::terminate_nodes(&aws, &nodes[..1]).await;
        let dns_before = records(&aws, &zones.private.id).await;
        let kick = start_kick(&config, &tokens_dir, &aws, &zones).await;
        let base = serve(kick).await;
        let (described, instances) = web_instances(&base).await;
        assert_eq!(instances.len(), 1, "{described}");
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(records(&aws, &zones.private.id).await, dns_before);
    });
}

#[test]
fn a_thousand_concurrent_registrations_are_all_recorded_in_a_handful_of_requests() {
    runtime().block_on(async {
        // 100 services (10 apps of 10), 10 replicas each, at the default
        // pace of 5 Route53 requests a second.
        let toml = huxley::testing::synth::config(10, 10).replace("synth", "kickburst");
        let checked = huxley::config::check(&toml);
        let config = huxley::compile::kick::kick_config(&checked.config.expect("valid synthetic config"));
        let h = harness_for("kickburst", config, Settings::default()).await;
        let requests = || h.kick.writer.metrics.requests.load(Ordering::Relaxed);
        let before = requests();
        let client = reqwest::Client::new();
        let tasks: Vec<_> = (0..1000)
            .map(|i| {
                let service = i % 100;
                let registration = json!({
                    "app": format!("app{}", service / 10), "service": format!("svc{}", service % 10),
                    "node": h.nodes[i % 2], "address": format!("10.50.{}.{}", i / 250, i % 250 + 1), "port": 8080,
                });
                let request = client.post(format!("{}/v1/instances", h.base)).bearer_auth("admin-token").json(&registration);
                tokio::spawn(async move { request.send().await.map(|r| r.status().as_u16()) })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.expect("join").expect("kick answers"), 201);
        }
        let used = requests() - before;
        assert!(used <= 20, "1,000 registrations took {used} ChangeResourceRecordSets calls");
        // Every registration is in Route53, none lost.
        let recorded: usize = records(&h.aws, &h.zones.private.id)
            .await
            .iter()
            .filter(|(name, kind, _)| name.starts_with("_huxley-replicas.") && kind == "TXT")
            .map(|(_, _, values)| values.len())
            .sum();
        assert_eq!(recorded, 1000);
    });
}

// ----- listeners under slow and hostile clients -------------------------------

/// A listener serving a one-route router, with `limits`, over TLS when
/// `identity` is given; its address.
async fn listening(
    identity: Option<&huxley::tls::Identity>,
    limits: huxley::control::listener::Limits,
) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let router = axum::Router::new()
        .route("/healthz", axum::routing::get(|| async { "ok\n" }))
        .route(
            "/slow",
            axum::routing::get(|| async {
                tokio::time::sleep(Duration::from_millis(800)).await;
                "slow\n"
            }),
        );
    let tls = identity.map(|i| huxley::tls::acceptor(i).expect("acceptor"));
    tokio::spawn(huxley::control::listener::serve(
        listener, tls, router, limits,
    ));
    address
}

#[test]
fn a_stalled_tls_handshake_does_not_block_other_clients() {
    runtime().block_on(async {
        huxley::tls::ensure_provider();
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("kick-stall");
        let _ = std::fs::remove_dir_all(&dir);
        let identity =
            huxley::tls::load_or_create(&dir, &["localhost".to_owned()]).expect("identity");
        let address = listening(
            Some(&identity),
            huxley::control::listener::Limits::default(),
        )
        .await;
        // Regression: the handshake ran inside accept, so this client, which
        // connects and says nothing, held every later one for 10 s.
        let _stalled = tokio::net::TcpStream::connect(address)
            .await
            .expect("connect");
        let tls = huxley::tls::pinned_client(&identity.fingerprint).expect("client");
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .build()
            .expect("client");
        let answer = tokio::time::timeout(
            Duration::from_secs(5),
            client
                .get(format!("https://localhost:{}/healthz", address.port()))
                .send(),
        )
        .await
        .expect("answered while another client stalls its handshake")
        .expect("a response");
        assert_eq!(answer.status().as_u16(), 200);
    });
}

#[test]
fn a_client_that_never_finishes_its_headers_is_cut_off() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    runtime().block_on(async {
        let limits = huxley::control::listener::Limits {
            header_read: Duration::from_millis(500),
            ..huxley::control::listener::Limits::default()
        };
        let address = listening(None, limits).await;
        let mut slow = tokio::net::TcpStream::connect(address)
            .await
            .expect("connect");
        slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .await
            .expect("write");
        // The server closes it (after an answer of its own, if any).
        let mut rest = Vec::new();
        let closed =
            tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut rest)).await;
        assert!(
            closed.is_ok(),
            "a connection with unfinished headers was kept open"
        );
        assert!(!String::from_utf8_lossy(&rest).contains("200 OK"));
    });
}

#[test]
fn requests_beyond_the_cap_wait_for_a_free_place_or_are_told_busy() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    runtime().block_on(async {
        let limits = huxley::control::listener::Limits {
            connections: 1,
            ..huxley::control::listener::Limits::default()
        };
        let address = listening(None, limits).await;
        let ask = async |path: &str| {
            let mut stream = tokio::net::TcpStream::connect(address)
                .await
                .expect("connect");
            stream
                .write_all(
                    format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                        .as_bytes(),
                )
                .await
                .expect("write");
            stream
        };
        // A request being handled holds the only place...
        let _slow = ask("/slow").await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut second = ask("/healthz").await;
        // ...so the second waits...
        let early =
            tokio::time::timeout(Duration::from_millis(300), second.read(&mut [0u8; 1])).await;
        assert!(early.is_err(), "served beyond the cap");
        // ...and is served once the first is answered.
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), second.read_to_end(&mut answer))
            .await
            .expect("served once a place was free")
            .expect("read");
        assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200 OK"));

        // A request that finds no place in time is told the server is busy.
        let limits = huxley::control::listener::Limits {
            connections: 1,
            place_wait: Duration::from_millis(200),
            ..huxley::control::listener::Limits::default()
        };
        let address = listening(None, limits).await;
        let mut slow = tokio::net::TcpStream::connect(address)
            .await
            .expect("connect");
        slow.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut busy = tokio::net::TcpStream::connect(address)
            .await
            .expect("connect");
        busy.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), busy.read_to_end(&mut answer))
            .await
            .expect("an answer")
            .expect("read");
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        assert!(
            answer.to_ascii_lowercase().contains("retry-after: 1"),
            "{answer}"
        );
    });
}

/// Regression (review): a serving place was held for a connection's whole
/// life, so 1,024 keep-alive connections each sending a cheap request
/// every few seconds held every place. A place is now held for a request
/// only; idle connections wait in the pool the newcomers push out of.
#[test]
fn idle_keep_alive_connections_hold_no_serving_place() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    runtime().block_on(async {
        huxley::tls::ensure_provider();
        let limits = huxley::control::listener::Limits {
            connections: 8,
            ..huxley::control::listener::Limits::default()
        };
        let address = listening(None, limits).await;
        let mut idle = Vec::new();
        for _ in 0..64 {
            let mut stream = tokio::net::TcpStream::connect(address)
                .await
                .expect("connect");
            stream
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .expect("write");
            let mut buffer = [0u8; 256];
            let n = tokio::time::timeout(Duration::from_secs(3), stream.read(&mut buffer))
                .await
                .unwrap_or_else(|_| panic!("connection {} found no place", idle.len() + 1))
                .expect("an answer");
            assert!(String::from_utf8_lossy(&buffer[..n]).starts_with("HTTP/1.1 200 OK"));
            idle.push(stream);
        }
        let answer = tokio::time::timeout(
            Duration::from_secs(3),
            reqwest::Client::new()
                .get(format!("http://{address}/healthz"))
                .send(),
        )
        .await
        .expect("answered while 64 idle connections stay open")
        .expect("a response");
        assert_eq!(answer.status().as_u16(), 200);
        drop(idle);
    });
}

/// Regression (issue 19): a place was taken before a client sent anything
/// and kept 10 s for its headers, so 1,024 clients that never finish their
/// headers (a container reconnecting every 9 s) shut the agents and the
/// hook server's leader check out. Waiting clients now hold no serving
/// place, and a full waiting pool pushes out the busiest address's oldest.
#[test]
fn clients_that_never_finish_their_headers_shut_nobody_out() {
    use tokio::io::AsyncWriteExt as _;
    runtime().block_on(async {
        huxley::tls::ensure_provider();
        let address = listening(None, huxley::control::listener::Limits::default()).await;
        let mut slow = Vec::new();
        for _ in 0..1024 {
            let mut stream = tokio::net::TcpStream::connect(address)
                .await
                .expect("connect");
            stream
                .write_all(b"GET /healthz HTTP/1.1\r\n")
                .await
                .expect("write");
            slow.push(stream);
        }
        // From another address (an agent on another node), then from the
        // slow clients' own (a container masquerades as its node).
        for source in [[127, 0, 0, 2], [127, 0, 0, 1]] {
            let client = reqwest::Client::builder()
                .local_address(std::net::IpAddr::from(source))
                .build()
                .expect("client");
            let answer = tokio::time::timeout(
                Duration::from_secs(3),
                client.get(format!("http://{address}/healthz")).send(),
            )
            .await
            .unwrap_or_else(|_| panic!("no answer from {source:?} while 1,024 clients stall"))
            .expect("a response");
            assert_eq!(answer.status().as_u16(), 200);
        }
        drop(slow);
    });
}

#[test]
fn healthz_says_so_when_a_panic_poisoned_the_registry() {
    runtime().block_on(async {
        let h = harness("kickpoison").await;
        let (status, _) = call(
            reqwest::Method::GET,
            &format!("{}/healthz", h.base),
            None,
            None,
        )
        .await;
        assert_eq!(status, 200);
        // A handler that panics while holding the registry poisons it.
        let kick = Arc::clone(&h.kick);
        let _ = std::thread::spawn(move || {
            let _held = kick.registry.lock();
            panic!("a handler's bug");
        })
        .join();
        // Regression: /healthz answered "ok" while every request touching
        // the registry failed.
        let (status, body) = call(
            reqwest::Method::GET,
            &format!("{}/healthz", h.base),
            None,
            None,
        )
        .await;
        assert_eq!(status, 503, "{body}");
        assert!(
            body.as_str()
                .is_some_and(|b| b.contains("the registry lock is poisoned")),
            "{body}"
        );
    });
}

#[test]
fn concurrent_registrations_on_unknown_nodes_make_one_ec2_call() {
    runtime().block_on(async {
        let h = harness("kickcoalesce").await;
        // Let the start-up read of the node list age past its freshness.
        tokio::time::sleep(Duration::from_millis(2100)).await;
        let before = h.kick.aws.calls();
        let client = reqwest::Client::new();
        let tasks: Vec<_> = (0..50)
            .map(|i| {
                let registration = json!({"app": "blog", "service": "web", "node": format!("i-unknown{i:03}"), "address": "127.0.0.1", "port": 8080});
                let request = client.post(format!("{}/v1/instances", h.base)).bearer_auth("web-token").json(&registration);
                tokio::spawn(async move { request.send().await.map(|r| r.status().as_u16()) })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.expect("join").expect("kick answers"), 404);
        }
        // Regression: each of the 50 called DescribeInstances. At least
        // one call: the list had aged, so the misses did ask EC2 (a test
        // that made none would prove nothing about coalescing).
        let calls = h.kick.aws.calls() - before;
        assert!(
            (1..=2).contains(&calls),
            "50 concurrent misses made {calls} EC2 calls"
        );
    });
}
