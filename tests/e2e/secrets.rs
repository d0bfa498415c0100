//! `huxley secrets set` on a running cluster: the new value is stored,
//! and exactly the services that read it are restarted through kick's
//! health-gated rollout (new replicas healthy before the old ones stop);
//! the others keep their replicas.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;

use crate::harness::cluster::{Live, all_healthy, config};
use crate::support::Test;

/// The replica numbers `service` has placed.
fn replicas(description: &Value, service: &str) -> BTreeSet<u64> {
    description["apps"]["blog"]["services"][service]["placed"]
        .as_array()
        .map(|placed| {
            placed
                .iter()
                .filter_map(|p| p["replica"].as_u64())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn setting_a_secret_restarts_exactly_the_services_that_read_it() {
    let name = "restarts";
    let text = config(name).replace(
        "depends-on = [\"api\"]\n",
        &format!("depends-on = [\"api\"]\nsecrets = {{ API_KEY = \"ssm:/{name}/blog/api-key\" }}\ndeploy = {{ timeout = \"60s\", drain = \"1s\" }}\n"),
    );
    assert!(text.contains("secrets ="), "{text}");
    let mut live = Live::with_config(name, "127.94.0.0/16", &text, 3);
    let kicks = vec![live.kick("kick-a")];
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(live.until_leader(&kicks, Duration::from_secs(30), "no leader"));
    // Three nodes, one of them free: web's host port leaves room for
    // one surge replica.
    for index in 0..3 {
        live.agent(index, &kicks);
    }
    let nodes: BTreeSet<String> = live.nodes.iter().cloned().collect();
    let before = rt.block_on(live.describe_until(
        &kicks,
        Duration::from_secs(60),
        "every replica healthy",
        |d| all_healthy(d, &nodes),
    ));
    let (web, api, redis) = (
        replicas(&before, "web"),
        replicas(&before, "api"),
        replicas(&before, "redis"),
    );
    assert_eq!(web.len(), 2, "{before}");

    let mut env = live.env.clone();
    env.push(("HUXLEY_TOKEN".into(), live.admin.clone()));
    let file = live.dir.join("huxley.toml").display().to_string();
    let set = Test::new(&[
        "secrets",
        "set",
        "blog",
        "API_KEY",
        "-f",
        &file,
        "--endpoint",
        &live.externals["kick-a"],
    ])
    .env(&env)
    .stdin("tok_live_new-value-0123\n")
    .run();
    eprintln!("{}\n{}", set.stdout, set.stderr);
    set.code(0);
    assert!(
        set.stdout.contains(&format!(
            "Set API_KEY of blog: /{name}/blog/api-key (version 2).\nRestarting web of blog, health-gated:"
        )),
        "{}",
        set.stdout
    );
    // Health-gated: each new replica healthy before an old one stops.
    let said = &set.stderr;
    let healthy = said.find("web: #3 healthy").expect(said);
    let stopped = said.find("old replica out of DNS").expect(said);
    assert!(healthy < stopped, "{said}");
    assert!(
        said.contains("every replica runs the new release"),
        "{said}"
    );
    assert!(said.contains("restarted blog's web (v1)"), "{said}");
    assert!(!said.contains("api:") && !said.contains("redis:"), "{said}");
    assert!(!said.contains("new-value") && !set.stdout.contains("new-value"));

    // web's replicas are new ones; api's and redis' are those that ran.
    let after = rt.block_on(live.describe_until(
        &kicks,
        Duration::from_secs(60),
        "every replica healthy after the restart",
        |d| all_healthy(d, &nodes),
    ));
    let restarted = replicas(&after, "web");
    assert_eq!(restarted.len(), 2, "{after}");
    assert!(restarted.is_disjoint(&web), "{web:?} → {restarted:?}");
    assert_eq!(replicas(&after, "api"), api);
    assert_eq!(replicas(&after, "redis"), redis);
    let value = rt
        .block_on(
            live.aws
                .secure_parameters(&[format!("/{name}/blog/api-key")]),
        )
        .expect("SSM");
    assert_eq!(
        value.values().next().map(String::as_str),
        Some("tok_live_new-value-0123")
    );

    // The history says what it was and why.
    let deploys = Test::new(&["deploys", "blog", "--cluster", name])
        .env(&env)
        .run();
    deploys.code(0);
    assert!(
        deploys.stdout.contains("(restart of web)"),
        "{}",
        deploys.stdout
    );
    let json = Test::new(&["deploys", "blog", "--cluster", name, "--json"])
        .env(&env)
        .run();
    let history: Value = serde_json::from_str(&json.stdout).expect("JSON");
    assert_eq!(
        history[0]["restarted"],
        serde_json::json!(["web"]),
        "{history}"
    );
    assert_eq!(history[0]["outcome"], "succeeded", "{history}");
    assert_eq!(
        history[0]["events"][0]["text"], "restart of web: secret API_KEY of blog set",
        "{history}"
    );
}
