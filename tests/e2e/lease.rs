//! The leader's lease end to end: kick servers and leases against the
//! emulator, with a [`Proxy`] on the wire that stalls calls and counts
//! every request a server sent (at the wire, not by the server's word).

use std::fs;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use huxley::control::lease::{CLOCK_MARGIN, LEASE, Lease, Lost, STANDBY_POLL};
use huxley::testing::{Emulator, Faults, Proxy, aws};

use crate::harness::cluster::{Live, REGION};
use crate::support::root;

/// Faults that hold every lease renewal for a minute.
fn stalled_renewals() -> Faults {
    Faults {
        stall: Some(("dynamodb:UpdateItem".into(), Duration::from_secs(60))),
        ..Faults::default()
    }
}

/// Whether a request (as the proxy names it) writes: the lease's own
/// DynamoDB calls aside, which fence themselves.
fn is_write(action: &str) -> bool {
    let (service, operation) = action.split_once(':').unwrap_or(("", action));
    if service == "dynamodb" {
        return false;
    }
    match operation.split_once(' ') {
        Some((method, _)) => !matches!(method, "GET" | "HEAD"),
        None => !huxley::aws::fence::reads(operation),
    }
}

/// The writes that reached the wire after `after`.
fn writes_after(proxy: &Proxy, after: Instant) -> Vec<String> {
    proxy
        .requests()
        .into_iter()
        .filter(|r| r.at > after && is_write(&r.action))
        .map(|r| r.action)
        .collect()
}

#[test]
fn a_leader_paused_past_its_lease_steps_down_without_writing_dns() {
    let mut live = Live::new("paused", "127.78.0.0/16");
    let proxy = Proxy::start(Emulator::shared(&root()).port);
    let kicks = vec![live.kick_via("kick-a", &proxy.endpoint())];
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(live.until_leader(&kicks, Duration::from_secs(30), "no leader"));
    let mut kicks = kicks;
    kicks.push(live.kick("kick-b"));
    // One healthy API instance, registered (by the admin) as a node agent
    // would.
    let node_token = live.admin.clone();
    let mut service = Command::new(env!("CARGO_BIN_EXE_huxley-test-service"));
    service
        .env("HUXLEY_ADDRESS", "127.78.0.9")
        .env("PORT", "9000");
    let log = live.dir.join("api.log");
    live.processes.spawn("api", service, &log);
    rt.block_on(async {
        huxley::tls::ensure_provider();
        let client = reqwest::Client::new();
        let registration = serde_json::json!({"app": "blog", "service": "api", "node": live.nodes[0], "address": "127.78.0.9", "port": 9000, "replica": 1});
        let response = client
            .post(format!("{}/v1/instances", kicks[0]))
            .bearer_auth(&node_token)
            .json(&registration)
            .send()
            .await
            .expect("kick answers");
        assert_eq!(response.status().as_u16(), 201);
    });
    rt.block_on(live.describe_until(
        &kicks[..1],
        Duration::from_secs(30),
        "the API healthy",
        |d| d["apps"]["blog"]["services"]["api"]["healthy"] == 1,
    ));

    // Pause the leader past its lease; meanwhile the API dies, so the
    // paused leader wakes up to a health change it would write to DNS.
    live.processes.signal("kick-a", "STOP");
    live.processes.signal("api", "KILL");
    rt.block_on(live.until_leader(
        &kicks[1..],
        Duration::from_secs(40),
        "the standby never took over",
    ));
    // The new leader sees the API fail and takes it out of DNS.
    rt.block_on(live.describe_until(
        &kicks[1..],
        Duration::from_secs(30),
        "the API unhealthy",
        |d| d["apps"]["blog"]["services"]["api"]["healthy"] == 0,
    ));
    let woken = Instant::now();
    live.processes.signal("kick-a", "CONT");
    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let health = live.get(&format!("{}/healthz", kicks[0]), None).await;
            if health.as_ref().is_some_and(|(_, t)| t.contains("standby")) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the old leader never stepped down: {health:?}\n{}",
                live.logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // Time for any stale loop to try its write: until the old leader
        // has read the lease again as a standby, and a little more.
        while !proxy
            .requests()
            .iter()
            .any(|r| r.at > woken && r.action == "dynamodb:GetItem")
        {
            assert!(
                Instant::now() < deadline,
                "the old leader never read the lease again"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    });
    let late = writes_after(&proxy, woken);
    assert!(
        late.is_empty(),
        "the paused leader wrote to AWS after its lease lapsed: {late:?}\n{}",
        live.logs()
    );
    let health = rt
        .block_on(live.get(&format!("{}/healthz", kicks[1]), None))
        .map(|(_, t)| t)
        .unwrap_or_default();
    assert!(health.contains("fence 2"), "{health}");
}

/// Regression: the leader awaited its renewal inline, and with the SDK's
/// timeouts (30 s an attempt, 90 s in all) one hung UpdateItem kept it
/// leading well past its lease, while a standby took over. The renewal
/// now races the lease's own deadline.
#[test]
fn a_renewal_that_hangs_ends_the_leadership_at_its_deadline() {
    let live = Live::new("leasestall", "127.83.0.0/16");
    let proxy = Proxy::start(Emulator::shared(&root()).port);
    live.rt().block_on(async {
        let aws = Arc::new(aws(&proxy.endpoint(), REGION).await);
        let lease = Arc::new(Lease::new(
            Arc::clone(&aws),
            "huxley-leasestall-lease",
            "http://127.0.0.1:1",
        ));
        lease
            .try_take()
            .await
            .expect("the lease table answers")
            .expect("the lease is free");
        assert!(lease.valid());
        proxy.set_faults(stalled_renewals());
        let started = Instant::now();
        let lost = tokio::time::timeout(LEASE + Duration::from_secs(10), lease.hold())
            .await
            .expect("hold gives up at the lease's deadline, not the SDK's");
        assert!(matches!(lost, Lost::Lapsed(_)), "{lost:?}");
        assert!(!lease.valid());
        assert!(
            started.elapsed() <= LEASE + Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        // The API and /healthz answer as a standby from the deadline on,
        // before anything stepped the server down: the hook server asks
        // /healthz whether to serve git.
        let config: huxley::spec::kick::KickConfig =
            toml::from_str(&fs::read_to_string(&live.kick_toml).expect("kick.toml"))
                .expect("kick.toml");
        let tokens_dir = live.dir.join("stall-tokens");
        fs::create_dir_all(&tokens_dir).expect("tokens");
        fs::write(tokens_dir.join("admin"), "admin").expect("token");
        let tokens = huxley::control::auth::Tokens::from_dir(&tokens_dir, &config).expect("tokens");
        let front = huxley::control::front::Front::new(Arc::clone(&lease), aws, tokens);
        front.activate(
            axum::Router::new().route("/healthz", axum::routing::get(|| async { "ok\n" })),
        );
        let answer = {
            use tower::ServiceExt as _;
            let response = huxley::control::front::router(front)
                .oneshot(
                    axum::http::Request::get("/healthz")
                        .body(axum::body::Body::empty())
                        .expect("request"),
                )
                .await
                .expect("an answer");
            let body = axum::body::to_bytes(response.into_body(), 1 << 16)
                .await
                .expect("body");
            String::from_utf8_lossy(&body).into_owned()
        };
        assert!(answer.starts_with("ok: standby"), "{answer}");
        proxy.set_faults(Faults::default());
    });
}

/// Regression (issue 19): a standby compared its own wall clock with the
/// expiry the holder wrote by its clock. With the holder's clock 60 s fast
/// and the standby's 10 s fast, a dead holder's lease was kept for over a
/// minute. Now the standby waits the lease it watched, by its own
/// monotonic clock.
#[test]
fn a_takeover_waits_the_watched_lease_whatever_the_wall_clocks_say() {
    let live = Live::new("leaseskew", "127.85.0.0/16");
    let table = "huxley-leaseskew-lease";
    live.rt().block_on(async {
        let aws = Arc::new(aws(&Emulator::shared(&root()).endpoint(), REGION).await);
        let holder =
            Lease::new(Arc::clone(&aws), table, "http://127.0.0.1:1").with_clock_skew(60_000);
        let standby = Lease::new(aws, table, "http://127.0.0.1:2").with_clock_skew(10_000);
        assert_eq!(holder.try_take().await.expect("the table answers"), Some(1));
        // The standby watches from now; the holder dies without renewing.
        let died = Instant::now();
        assert_eq!(standby.try_take().await.expect("the table answers"), None);
        let bound = LEASE + CLOCK_MARGIN + STANDBY_POLL + Duration::from_secs(3);
        let fence = tokio::time::timeout(bound, standby.campaign())
            .await
            .unwrap_or_else(|_| panic!("no takeover within {bound:?} of the holder's death"));
        assert_eq!(fence, 2);
        assert!(
            died.elapsed() >= LEASE + CLOCK_MARGIN,
            "taken after {:?}, before the watched lease ran out",
            died.elapsed()
        );
        assert!(!holder.valid(), "the holder had stopped by then");
    });
}

/// Issue 19: a renewal that hangs at the table. Two kick servers' /healthz
/// sampled every 100 ms never both say leader; the old leader sends no
/// write after its deadline (counted at the wire); the standby leads
/// within the lease, the margin and 5 s.
#[test]
fn a_renewal_stalled_at_the_table_leaves_one_leader_and_no_late_write() {
    let mut live = Live::new("tablestall", "127.86.0.0/16");
    let proxy = Proxy::start(Emulator::shared(&root()).port);
    let a = live.kick_via("kick-a", &proxy.endpoint());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(live.until_leader(
        std::slice::from_ref(&a),
        Duration::from_secs(30),
        "no leader",
    ));
    let b = live.kick("kick-b");
    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !live
            .get(&format!("{b}/healthz"), None)
            .await
            .is_some_and(|(_, t)| t.contains("standby"))
        {
            assert!(
                Instant::now() < deadline,
                "kick-b never stood by:\n{}",
                live.logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    // A node agent's long poll (the admin may make it), waiting on kick-a
    // when its lease lapses.
    let node_token = live.admin.clone();
    let assignment = format!("{a}/v1/nodes/{}/assignment", live.nodes[0]);
    let generation = rt
        .block_on(live.get(&assignment, Some(&node_token)))
        .and_then(|(_, text)| serde_json::from_str::<serde_json::Value>(&text).ok())
        .and_then(|v| v["generation"].as_u64())
        .expect("an assignment from the leader");
    let polling = {
        let url = format!("{assignment}?after={generation}&wait=60");
        let token = node_token.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("rt");
            rt.block_on(async {
                huxley::tls::ensure_provider();
                let answer = reqwest::Client::new()
                    .get(url)
                    .bearer_auth(token)
                    .send()
                    .await
                    .expect("kick-a answers the long poll");
                (
                    answer.status().as_u16(),
                    answer.text().await.unwrap_or_default(),
                )
            })
        })
    };
    let writes_before = writes_after(&proxy, Instant::now() - Duration::from_secs(3600)).len();
    let stalled = Instant::now();
    proxy.set_faults(stalled_renewals());
    let mut b_led = None;
    rt.block_on(async {
        let until = stalled + LEASE + CLOCK_MARGIN + Duration::from_secs(8);
        while Instant::now() < until {
            let (url_a, url_b) = (format!("{a}/healthz"), format!("{b}/healthz"));
            let (ha, hb) = tokio::join!(live.get(&url_a, None), live.get(&url_b, None));
            let leads = |h: &Option<(u16, String)>| {
                h.as_ref().is_some_and(|(_, t)| t.starts_with("ok: leader"))
            };
            assert!(
                !(leads(&ha) && leads(&hb)),
                "two leaders {:?} after the stall: {ha:?} {hb:?}",
                stalled.elapsed()
            );
            if leads(&hb) && b_led.is_none() {
                b_led = Some(stalled.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let b_led = b_led.unwrap_or_else(|| panic!("kick-b never led:\n{}", live.logs()));
    assert!(
        b_led <= LEASE + CLOCK_MARGIN + Duration::from_secs(5),
        "kick-b led {b_led:?} after the stall"
    );
    // kick-a's last renewal was sent before the stall, so its deadline
    // came at most LEASE - CLOCK_MARGIN after it; a write checked just
    // before the deadline may reach the wire a moment later.
    let deadline = stalled + LEASE - CLOCK_MARGIN + Duration::from_millis(250);
    let late = writes_after(&proxy, deadline);
    assert!(
        late.is_empty(),
        "kick-a wrote after its deadline: {late:?}\n{}",
        live.logs()
    );
    assert!(
        writes_before > 0,
        "kick-a wrote nothing while it led: the count sees nothing"
    );
    // The long poll that waited on kick-a is answered as a standby, not
    // with an assignment kick-a made while it led.
    let (status, body) = polling.join().expect("the long poll");
    assert_eq!(status, 503, "{body}");
    proxy.set_faults(Faults::default());
}
