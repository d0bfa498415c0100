//! One-off runs on a running cluster: `huxley run` places a container of a
//! service on a node through kick, streams what it prints and ends with
//! its status; a service's release command runs once before each deploy
//! that changes its image, and one that fails refuses the deploy with its
//! output, changing nothing.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::cluster::{Live, all_healthy, cluster_toml};
use crate::support::{Output, Test};

/// `huxley run` against `live`'s kick, with `token` as the admin's.
fn run(live: &Live, token: &str, args: &[&str]) -> Output {
    let mut env = live.env.clone();
    env.push(("HUXLEY_TOKEN".into(), token.to_owned()));
    let endpoint = live.externals["kick-a"].clone();
    let mut all = vec!["run", "--cluster", &live.name, "--endpoint", &endpoint];
    all.extend_from_slice(args);
    Test::new(&all)
        .env(&env)
        .run_within(Duration::from_secs(120))
}

#[test]
fn huxley_run_streams_a_commands_output_and_ends_with_its_status() {
    let name = "oneoff";
    let mut live = Live::new(name, "127.95.0.0/16");
    let kicks = vec![live.kick("kick-a")];
    live.rt()
        .block_on(live.until_leader(&kicks, Duration::from_secs(30), "no leader"));
    for index in 0..3 {
        live.agent(index, &kicks);
    }
    let nodes: BTreeSet<String> = live.nodes.iter().cloned().collect();
    live.rt().block_on(live.describe_until(
        &kicks,
        Duration::from_secs(60),
        "every replica healthy",
        |d| all_healthy(d, &nodes),
    ));
    let admin = live.admin.clone();

    // The service's environment: web is told where api is.
    let printed = run(&live, &admin, &["blog", "web", "--", "printenv", "API_URL"]);
    printed.code(0);
    assert_eq!(
        printed.stdout,
        format!("http://api.blog.{name}.internal:9000\n"),
        "{}",
        printed.stderr
    );
    assert!(printed.stderr.contains("run "), "{}", printed.stderr);
    assert!(
        printed.stderr.contains("printenv API_URL"),
        "{}",
        printed.stderr
    );

    // Its status is the CLI's; standard error stays standard error.
    let failed = run(
        &live,
        &admin,
        &[
            "blog",
            "web",
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 3",
        ],
    );
    failed.code(3);
    assert_eq!(failed.stdout, "out\n");
    assert!(failed.stderr.contains("err\n"), "{}", failed.stderr);

    // Many lines arrive whole and in order.
    let many = run(&live, &admin, &["blog", "api", "--", "seq", "1", "3000"]);
    many.code(0);
    let expected: String = (1..=3000).map(|n| format!("{n}\n")).collect();
    assert!(
        many.stdout == expected,
        "{} lines",
        many.stdout.lines().count()
    );

    // A timeout stops it: 124, as timeout(1).
    let started = Instant::now();
    let slow = run(
        &live,
        &admin,
        &["blog", "api", "--timeout", "2s", "--", "sleep", "60"],
    );
    slow.code(124);
    assert!(slow.stderr.contains("timeout"), "{}", slow.stderr);
    assert!(
        started.elapsed() < Duration::from_secs(45),
        "{:?}",
        started.elapsed()
    );

    // Only the admin may run anything.
    let refused = run(&live, "not-the-admin-token", &["blog", "web", "--", "true"]);
    refused.code(125);
    assert!(refused.stderr.contains("401"), "{}", refused.stderr);

    // A run shows in describe while it runs; Ctrl-C stops it (130) and
    // its node stops the process.
    let marker = live.dir.join("still-running");
    let script = format!("sleep 3; touch {}", marker.display());
    let mut env = live.env.clone();
    env.push(("HUXLEY_TOKEN".into(), admin.clone()));
    let endpoint = live.externals["kick-a"].clone();
    let child = Test::new(&[
        "run",
        "--cluster",
        name,
        "--endpoint",
        &endpoint,
        "blog",
        "api",
        "--",
        "sh",
        "-c",
        &script,
    ])
    .env(&env)
    .command()
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .expect("huxley run");
    let described = live.rt().block_on(live.describe_until(
        &kicks,
        Duration::from_secs(30),
        "the run in describe",
        |d| {
            d["apps"]["blog"]["services"]["api"]["runs"]
                .as_array()
                .is_some_and(|r| r.len() == 1)
        },
    ));
    let shown = &described["apps"]["blog"]["services"]["api"]["runs"][0];
    assert_eq!(
        shown["command"],
        json!(["sh", "-c", script]),
        "{described:#}"
    );
    assert!(
        nodes.contains(shown["node"].as_str().unwrap_or_default()),
        "{shown}"
    );
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let output = child.wait_with_output().expect("huxley run ends");
    assert_eq!(
        output.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    live.rt().block_on(live.describe_until(
        &kicks,
        Duration::from_secs(30),
        "no run in describe",
        |d| d["apps"]["blog"]["services"]["api"]["runs"].is_null(),
    ));
    std::thread::sleep(Duration::from_secs(5));
    assert!(!marker.exists(), "the stopped run went on: {}", live.logs());
}

const REGISTRY: &str = "r.example";

fn image(name: &str, n: u32) -> String {
    format!("{REGISTRY}/huxley-{name}/shop@sha256:{n:064x}")
}

/// The lines the release command wrote to `log`.
fn ran(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_release_command_runs_once_before_each_deploy_and_one_that_fails_changes_nothing() {
    let name = "release";
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("release-phase");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let log = dir.join("migrations.log");
    let fail = dir.join("fail");
    // Each run says what it ran from and when; with `fail` present it
    // fails as a migration would, after printing why.
    let script = format!(
        "echo \"$HUXLEY_IMAGE $(date +%s%N)\" >> {log}; if [ -e {fail} ]; then echo 'applying 0007_orders'; echo 'ERROR: relation \"orders\" already exists' >&2; exit 3; fi; echo migrated",
        log = log.display(),
        fail = fail.display()
    );
    let text = cluster_toml(name, 2, 2, 2)
        + &format!(
            r#"[apps.shop.services.web]
build = "."
port = 8080
replicas = 2
release = ["sh", "-c", {script:?}]
health = {{ http = "/healthz", interval = "1s", timeout = "500ms", healthy = 1, unhealthy = 2 }}
deploy = {{ timeout = "30s", drain = "1s", release-timeout = "30s" }}
"#
        );
    let mut live = Live::with_config(name, "127.96.0.0/16", &text, 2);
    live.env.push(("HUXLEY_REGISTRY".into(), REGISTRY.into()));
    let kicks = vec![live.kick("kick-a")];
    for index in 0..2 {
        live.process_agent(index, &kicks, &["shop.web"]);
    }
    let kick = kicks[0].clone();
    live.rt()
        .block_on(live.until_leader(&kicks, Duration::from_secs(30), "no leader"));
    let deploy = |n: u32| -> Value {
        let (status, body) = live.rt().block_on(async {
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
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        });
        assert_eq!(status, 202, "{body}");
        let id = body["id"].as_u64().expect("a release number");
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let release = live
                .rt()
                .block_on(live.get(
                    &format!("{kick}/v1/apps/shop/deployments/{id}"),
                    Some(&live.admin),
                ))
                .and_then(|(_, t)| serde_json::from_str::<Value>(&t).ok())
                .unwrap_or(Value::Null);
            if release["outcome"].as_str().is_some_and(|o| o != "running") {
                return release;
            }
            assert!(
                Instant::now() < deadline,
                "v{id} never ended: {release:#}\n{}",
                live.logs()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    };
    let events = |release: &Value| -> Vec<String> {
        release["events"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["text"].as_str().map(str::to_owned))
            .collect()
    };
    let versions = || -> BTreeSet<String> {
        let d = live.rt().block_on(live.describe_until(
            &kicks,
            Duration::from_secs(60),
            "web healthy",
            |d| d["apps"]["shop"]["services"]["web"]["healthy"] == 2,
        ));
        d["apps"]["shop"]["services"]["web"]["instances"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| i["version"].as_str().map(str::to_owned))
            .collect()
    };
    let digest = |n: u32| format!("sha256:{n:064x}");

    // The first deploy: the command runs once, before any replica starts.
    let first = deploy(1);
    assert_eq!(first["outcome"], "succeeded", "{first:#}");
    let said = events(&first);
    let released = said
        .iter()
        .position(|e| e.contains("release command succeeded"))
        .unwrap_or_else(|| panic!("{said:#?}"));
    let started = said
        .iter()
        .position(|e| e.contains("starting") || e.contains("started"))
        .unwrap_or_else(|| panic!("{said:#?}"));
    assert!(released < started, "{said:#?}");
    assert_eq!(ran(&log).len(), 1);
    assert!(ran(&log)[0].starts_with(&image(name, 1)), "{:?}", ran(&log));
    assert_eq!(versions(), BTreeSet::from([digest(1)]));

    // A failing command refuses the deploy with what it printed (out and
    // err); every replica stays on v1.
    std::fs::write(&fail, "").expect("fail");
    let refused = deploy(2);
    assert_eq!(refused["outcome"], "refused", "{refused:#}");
    let reason = refused["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("exited with 3"), "{reason}");
    assert!(reason.contains("no replica moved"), "{reason}");
    assert!(reason.contains("applying 0007_orders"), "{reason}");
    assert!(reason.contains("already exists"), "{reason}");
    assert!(
        !events(&refused)
            .iter()
            .any(|e| e.contains("starting") || e.contains("started")),
        "{refused:#}"
    );
    assert_eq!(ran(&log).len(), 2);
    assert!(ran(&log)[1].starts_with(&image(name, 2)));
    assert_eq!(versions(), BTreeSet::from([digest(1)]));
    // The history says so too, as `huxley deploys` reads it.
    let history = live
        .rt()
        .block_on(live.get(
            &format!("{kick}/v1/apps/shop/deployments"),
            Some(&live.admin),
        ))
        .and_then(|(_, t)| serde_json::from_str::<Value>(&t).ok())
        .unwrap_or(Value::Null);
    assert_eq!(history[0]["outcome"], "refused", "{history:#}");

    // Fixed: the next deploy runs it once more, then rolls out.
    std::fs::remove_file(&fail).expect("fail");
    let third = deploy(3);
    assert_eq!(third["outcome"], "succeeded", "{third:#}");
    let lines = ran(&log);
    assert_eq!(lines.len(), 3, "once per deploy: {lines:?}");
    assert!(lines[2].starts_with(&image(name, 3)));
    assert_eq!(versions(), BTreeSet::from([digest(3)]));
    // When it ran: before the first replica of v3 was started (the
    // command's own clock against the deploy's events, in seconds).
    let ran_at: u64 = lines[2]
        .rsplit(' ')
        .next()
        .and_then(|n| n.parse::<u128>().ok())
        .map(|ns| (ns / 1_000_000_000) as u64)
        .expect("a time");
    let first_start = third["events"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| {
            e["text"]
                .as_str()
                .is_some_and(|t| t.contains("starting") || t.contains("replacing"))
        })
        .and_then(|e| e["at"].as_u64())
        .expect("a start event");
    assert!(
        ran_at <= first_start,
        "ran at {ran_at}, replicas from {first_start}"
    );
}
