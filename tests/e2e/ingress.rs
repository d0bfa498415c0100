//! Public services behind the load balancer, on a running cluster: kick
//! registers exactly the healthy replicas as the target group's targets,
//! takes an unhealthy one out, points the public name at the load
//! balancer, and rolls a restart out make-before-break (the group never
//! has fewer healthy targets than the service's count; an old replica
//! stops only after its deregistration and the drain).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::cluster::{Live, all_healthy, config};
use crate::support::Test;

/// The web replicas' (address, port) as described.
fn web_targets(description: &Value) -> BTreeSet<(String, u16)> {
    description["apps"]["blog"]["services"]["web"]["instances"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter(|i| i["health"] == "healthy")
                .map(|i| {
                    (
                        i["address"].as_str().unwrap_or_default().to_owned(),
                        u16::try_from(i["port"].as_u64().unwrap_or(0)).unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// What the sampler saw: per tick, when and the healthy targets; and
/// when each replica last answered its own health check.
#[derive(Default)]
struct Samples {
    ticks: Vec<(Instant, BTreeSet<(String, u16)>)>,
    answered: BTreeMap<(String, u16), Instant>,
}

#[test]
fn kick_registers_the_healthy_replicas_and_drains_them_on_a_rollout() {
    let name = "ingress";
    let drain = Duration::from_secs(2);
    let fail = std::env::temp_dir().join(format!("huxley-{name}-{}.fail", std::process::id()));
    let _ = std::fs::remove_file(&fail);
    // The harness's web, behind the load balancer: no host port, no
    // `ingress = "dns"`.
    let text = config(name)
        .replace("ingress = \"dns\"\n", "")
        .replace("host-port = 80\n", "")
        .replace(
            "depends-on = [\"api\"]\n",
            &format!(
                "depends-on = [\"api\"]\nsecrets = {{ API_KEY = \"ssm:/{name}/blog/api-key\" }}\ndeploy = {{ timeout = \"60s\", drain = \"{}s\" }}\n",
                drain.as_secs()
            ),
        );
    assert!(
        !text.contains("host-port") && text.contains("drain"),
        "{text}"
    );
    let mut live = Live::with_config(name, "127.95.0.0/16", &text, 3);
    // The replicas (processes of the test service) inherit the agents'
    // environment: while this file exists their health check fails.
    live.env
        .push(("FAIL_FILE".into(), fail.display().to_string()));
    let stack = format!("huxley-{name}");
    let (group, balancer) = live.rt().block_on(async {
        let resources = live
            .aws
            .stack_resources(&stack)
            .await
            .expect("the stack's resources");
        let group = resources
            .iter()
            .find(|(k, _)| k.starts_with("TargetGroupBlogWeb"))
            .map(|(_, v)| v.clone())
            .expect("web's target group");
        let balancer = live
            .aws
            .load_balancer_alias(&resources["LoadBalancer"])
            .await
            .expect("the load balancer")
            .dns_name;
        (group, balancer)
    });
    let kicks = vec![live.kick("kick-a")];
    let rt = live.rt();
    rt.block_on(live.until_leader(&kicks, Duration::from_secs(30), "no leader"));
    for index in 0..3 {
        live.agent(index, &kicks);
    }
    let nodes: BTreeSet<String> = live.nodes.iter().cloned().collect();
    let rt = live.rt();
    let registered = |live: &Live| -> BTreeSet<(String, u16)> {
        live.rt()
            .block_on(live.aws.targets(&group))
            .expect("DescribeTargetHealth")
            .into_iter()
            .filter(|t| t.state == "healthy")
            .map(|t| (t.address, t.port))
            .collect()
    };

    // Every healthy replica is a target, and nothing else is.
    let before = rt.block_on(live.describe_until(
        &kicks,
        Duration::from_secs(60),
        "every replica healthy",
        |d| all_healthy(d, &nodes),
    ));
    let old = web_targets(&before);
    assert_eq!(old.len(), 2, "{before}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while registered(&live) != old {
        assert!(
            Instant::now() < deadline,
            "targets {:?} != replicas {old:?}",
            registered(&live)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The public name is an alias of the load balancer, not node addresses.
    let records = rt.block_on(async {
        let zone = live
            .aws
            .public_zone_id(&format!("{name}.example.com"))
            .await
            .expect("zone");
        live.aws.list_records(&zone).await.expect("records")
    });
    let www = records
        .iter()
        .find(|r| r.name == format!("www.{name}.example.com") && r.kind == "A")
        .expect("www's A record");
    assert_eq!(
        www.alias.as_ref().map(|a| a.dns_name.as_str()),
        Some(balancer.trim_end_matches('.')),
        "{www:?}"
    );
    assert!(www.values.is_empty(), "{www:?}");
    // Describe says what the load balancer thinks of each replica.
    let described = rt.block_on(live.describe_until(
        &kicks,
        Duration::from_secs(30),
        "the load balancer's word on web's replicas",
        |d| {
            d["apps"]["blog"]["services"]["web"]["instances"]
                .as_array()
                .is_some_and(|l| !l.is_empty() && l.iter().all(|i| i["load_balancer"] == "healthy"))
        },
    ));
    assert!(
        described["apps"]["blog"]["services"]["api"]["instances"][0]
            .get("load_balancer")
            .is_none(),
        "api is not behind it: {described}"
    );

    // A rollout (a secret's restart), sampled every 200 ms.
    let samples = Arc::new(Mutex::new(Samples::default()));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (samples, done, aws, group, old) = (
            Arc::clone(&samples),
            Arc::clone(&done),
            Arc::clone(&live.aws),
            group.clone(),
            old.clone(),
        );
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("rt");
            let started = Instant::now();
            while !done.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(120) {
                let now = Instant::now();
                if let Ok(targets) = rt.block_on(aws.targets(&group)) {
                    let healthy = targets
                        .into_iter()
                        .filter(|t| t.state == "healthy")
                        .map(|t| (t.address, t.port))
                        .collect();
                    samples.lock().expect("samples").ticks.push((now, healthy));
                }
                for (address, port) in &old {
                    // A replica that still accepts connections still runs.
                    let Ok(ip) = address.parse::<std::net::IpAddr>() else {
                        continue;
                    };
                    let socket = std::net::SocketAddr::new(ip, *port);
                    if std::net::TcpStream::connect_timeout(&socket, Duration::from_millis(150))
                        .is_ok()
                    {
                        samples
                            .lock()
                            .expect("samples")
                            .answered
                            .insert((address.clone(), *port), Instant::now());
                    }
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
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
    .stdin("tok_live_rollout-0456\n")
    .run();
    eprintln!("{}\n{}", set.stdout, set.stderr);
    set.code(0);
    let after = rt.block_on(live.describe_until(
        &kicks,
        Duration::from_secs(60),
        "every replica healthy after the restart",
        |d| all_healthy(d, &nodes) && web_targets(d).is_disjoint(&old),
    ));
    let new = web_targets(&after);
    let deadline = Instant::now() + Duration::from_secs(30);
    while registered(&live) != new {
        assert!(
            Instant::now() < deadline,
            "targets {:?} != new replicas {new:?}",
            registered(&live)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Let the old replicas' stops be seen, then stop sampling.
    std::thread::sleep(drain + Duration::from_secs(1));
    done.store(true, Ordering::Relaxed);
    sampler.join().expect("the sampler");
    let samples = samples.lock().expect("samples");
    assert!(samples.ticks.len() > 10, "{} samples", samples.ticks.len());
    let fewest = samples
        .ticks
        .iter()
        .map(|(_, t)| t.len())
        .min()
        .unwrap_or(0);
    assert!(
        fewest >= 2,
        "the group had {fewest} healthy targets at some point"
    );
    for target in &old {
        let left = samples
            .ticks
            .iter()
            .find(|(_, healthy)| !healthy.contains(target))
            .map(|(at, _)| *at)
            .unwrap_or_else(|| panic!("{target:?} was never deregistered"));
        let last = samples
            .answered
            .get(target)
            .copied()
            .expect("it answered once");
        // It answered until at least the drain after it left the group
        // (less one sampling period).
        assert!(
            last + Duration::from_millis(400) >= left + drain,
            "{target:?} stopped {:?} after its deregistration",
            last.saturating_duration_since(left)
        );
    }

    // Unhealthy replicas are taken out of the group, and come back.
    std::fs::write(&fail, "").expect("fail file");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !registered(&live).is_empty() {
        assert!(
            Instant::now() < deadline,
            "unhealthy replicas still targets: {:?}",
            registered(&live)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::fs::remove_file(&fail).expect("fail file");
    let deadline = Instant::now() + Duration::from_secs(30);
    while registered(&live) != new {
        assert!(
            Instant::now() < deadline,
            "targets {:?} != {new:?}",
            registered(&live)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
