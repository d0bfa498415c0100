//! The cluster runs what it compiles: `huxley apply` on the emulator, then
//! two `huxley kick serve` processes (a leader and a standby) and three
//! `huxley node run` agents, each with its own EC2 instance from the
//! emulator and its own instance-metadata stand-in, running the services'
//! replicas as real processes on loopback addresses of their nodes'
//! container subnets. Nothing is faked above the HTTP wire.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use huxley::testing::{Emulator, aws};
use serde_json::Value;

use crate::harness::cluster::{
    CONTAINERS, DockerCleanup, Live, REGION, all_healthy, cluster_toml, docker,
};
use crate::support::{Test, root};

fn instances<'a>(description: &'a Value, service: &str) -> Vec<&'a Value> {
    description["apps"]["blog"]["services"][service]["instances"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default()
}

#[test]
fn the_cluster_runs_every_replica_survives_a_lost_node_and_fails_over() {
    let mut live = Live::new("runtime", "127.77.0.0/16");
    // On AWS the public subnets give each node a public address; the
    // emulator does not, so an Elastic IP stands in.
    live.rt().block_on(huxley::testing::give_public_addresses(
        &live.aws,
        &live.nodes,
    ));
    let kicks = vec![live.kick("kick-a"), live.kick("kick-b")];
    // One of them leads before the agents start.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(live.until_leader(
        &kicks,
        Duration::from_secs(30),
        "no kick server took the lease",
    ));
    for index in 0..3 {
        live.agent(index, &kicks);
    }
    let nodes: BTreeSet<String> = live.nodes.iter().cloned().collect();
    let described = rt.block_on(live.describe_until(
        &kicks,
        Duration::from_secs(60),
        "every replica placed, running and healthy",
        |d| all_healthy(d, &nodes),
    ));

    // The nodes measure what their replicas use; kick exports it.
    let metrics = rt.block_on(async {
        let leader = live.leader(&kicks).await.expect("a leader");
        live.get(&format!("{leader}/metrics"), Some(&live.admin))
            .await
    });
    let metrics = metrics.map(|(_, text)| text).unwrap_or_default();
    assert!(
        metrics
            .contains("huxley_kick_replica_memory_mib{app=\"blog\",service=\"web\",replica=\"1\""),
        "{metrics}"
    );

    // Spread: web's two replicas on two nodes; every address in its node's
    // routed container subnet, and DNS carries exactly the healthy ones.
    let web = instances(&described, "web");
    let web_nodes: BTreeSet<&str> = web.iter().filter_map(|i| i["node"].as_str()).collect();
    assert_eq!(web_nodes.len(), 2, "{described}");
    let range: ipnet::Ipv4Net = "127.77.0.0/16".parse().expect("range");
    let mut web_addresses: Vec<String> = web
        .iter()
        .map(|i| i["address"].as_str().expect("address").to_owned())
        .collect();
    web_addresses.sort();
    for address in &web_addresses {
        let ip: std::net::Ipv4Addr = address.parse().expect("IPv4");
        assert!(
            range.contains(&ip),
            "{address} is outside the containers' range"
        );
    }
    rt.block_on(live.dns_until("web.blog.runtime.internal", &web_addresses));
    // The public name: the public addresses of the nodes that run web,
    // never an address in the containers' range.
    rt.block_on(async {
        let mut expected: Vec<String> = live
            .aws
            .cluster_nodes("runtime")
            .await
            .expect("nodes")
            .into_iter()
            .filter(|n| web_nodes.contains(n.id.as_str()))
            .filter_map(|n| n.public_address.map(|a| a.to_string()))
            .collect();
        expected.sort();
        assert_eq!(expected.len(), 2, "every node has a public address");
        let zone = live
            .aws
            .public_zone_id("runtime.example.com")
            .await
            .expect("the public zone");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let records = live.aws.list_records(&zone).await.expect("records");
            let mut www: Vec<String> = records
                .into_iter()
                .find(|r| r.name == "www.runtime.example.com" && r.kind == "A")
                .map(|r| r.values)
                .unwrap_or_default();
            www.sort();
            for address in &www {
                let ip: std::net::Ipv4Addr = address.parse().expect("IPv4");
                assert!(
                    !range.contains(&ip),
                    "www carries a container address: {www:?}"
                );
            }
            if www == expected {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "www is {www:?}, not {expected:?}"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    let routes = rt.block_on(async {
        let table = live
            .aws
            .stack_resource("huxley-runtime", "PublicRouteTable")
            .await
            .expect("resources")
            .expect("a route table");
        live.aws.instance_routes(&table).await.expect("routes")
    });
    let routed: BTreeSet<&str> = routes
        .iter()
        .filter(|(cidr, _)| cidr.starts_with("127.77."))
        .map(|(_, node)| node.as_str())
        .collect();
    assert_eq!(
        routed,
        nodes.iter().map(String::as_str).collect(),
        "{routes:?}"
    );
    // A replica is told where its dependencies are.
    let env = rt
        .block_on(live.get(&format!("http://{}:8080/env", web_addresses[0]), None))
        .map(|(_, text)| text)
        .unwrap_or_default();
    assert!(
        env.contains("API_URL=http://api.blog.runtime.internal:9000\n"),
        "{env}"
    );

    // Lose the node that runs the API: terminated in EC2, its agent and
    // replicas killed. The API is placed again and healthy elsewhere.
    let api_node = instances(&described, "api")[0]["node"]
        .as_str()
        .expect("node")
        .to_owned();
    let index = live
        .nodes
        .iter()
        .position(|n| *n == api_node)
        .expect("a node of ours");
    rt.block_on(huxley::testing::terminate_nodes(
        &live.aws,
        std::slice::from_ref(&api_node),
    ));
    live.processes.signal(&format!("node-{index}"), "KILL");
    let rest: BTreeSet<String> = nodes.iter().filter(|n| **n != api_node).cloned().collect();
    let after_loss = rt.block_on(live.describe_until(
        &kicks,
        Duration::from_secs(60),
        "every replica healthy on the two nodes left",
        |d| all_healthy(d, &rest),
    ));
    assert_ne!(instances(&after_loss, "api")[0]["node"], api_node.as_str());
    let routes_after = rt.block_on(async {
        let table = live
            .aws
            .stack_resource("huxley-runtime", "PublicRouteTable")
            .await
            .expect("resources")
            .expect("a route table");
        live.aws.instance_routes(&table).await.expect("routes")
    });
    assert!(
        routes_after.iter().all(|(_, node)| *node != api_node),
        "the lost node's subnet is no longer routed: {routes_after:?}"
    );

    // Kill the leader: the standby takes over within 30 s, and nothing
    // changes: the description, and DNS. DNS follows health within a
    // check, so it is read once it names every healthy replica.
    rt.block_on(live.dns_until_described(&after_loss));
    let dns_before = rt.block_on(live.private_records());
    let leader = rt.block_on(live.leader(&kicks)).expect("a leader");
    let (dead, standby) = if leader == kicks[0] {
        ("kick-a", kicks[1].clone())
    } else {
        ("kick-b", kicks[0].clone())
    };
    let killed = Instant::now();
    live.processes.signal(dead, "KILL");
    let took = rt.block_on(async {
        loop {
            if live.leader(std::slice::from_ref(&standby)).await.is_some() {
                return killed.elapsed();
            }
            assert!(
                killed.elapsed() < Duration::from_secs(30),
                "the standby did not take over within 30 s:\n{}",
                live.logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    eprintln!("failover took {took:?}");
    // A takeover users do not see: the new leader's first description
    // already shows every replica placed, in a state, and healthy, before
    // any agent has reported to it.
    let first = rt
        .block_on(live.get(&format!("{standby}/v1/cluster"), Some(&live.admin)))
        .and_then(|(_, text)| serde_json::from_str::<Value>(&text).ok())
        .expect("the new leader describes the cluster");
    for service in ["web", "api", "redis"] {
        let placed = first["apps"]["blog"]["services"][service]["placed"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(
            !placed.is_empty() && placed.iter().all(|p| p["state"].is_string()),
            "{service} right after the failover: {first:#}"
        );
        assert_eq!(
            instances(&first, service).len(),
            instances(&after_loss, service).len(),
            "{service} right after the failover: {first:#}"
        );
    }
    let after_failover = rt.block_on(live.describe_until(
        std::slice::from_ref(&standby),
        Duration::from_secs(30),
        "the description from before the failover",
        |d| {
            let mut d = d.clone();
            if let Some(map) = d.as_object_mut() {
                map.remove("generated_at");
            }
            d == after_loss
        },
    ));
    assert_eq!(after_failover, after_loss);
    assert_eq!(rt.block_on(live.private_records()), dns_before);

    // No kick server at all: the nodes keep running every replica.
    let last = if dead == "kick-a" { "kick-b" } else { "kick-a" };
    live.processes.signal(last, "KILL");
    std::thread::sleep(Duration::from_secs(5));
    for service in ["web", "api", "redis"] {
        for instance in instances(&after_failover, service) {
            let address = instance["address"].as_str().expect("address");
            let port = instance["port"].as_u64().expect("port");
            let answer = rt.block_on(live.get(&format!("http://{address}:{port}/healthz"), None));
            assert_eq!(
                answer.map(|(status, _)| status),
                Some(200),
                "{service} at {address}:{port} stopped while kick was away:\n{}",
                live.logs()
            );
        }
    }
    assert!(
        live.logs().contains("the node keeps running its"),
        "the agents say they keep their replicas:\n{}",
        live.logs()
    );
    drop(live);
}

#[test]
#[ignore = "needs Docker and a registry on 127.0.0.1:5000, and root: scripts/test.sh starts them and runs it"]
fn replicas_run_as_real_containers_through_the_generated_units() {
    // The test service, linked statically, in an image `FROM scratch`
    // pushed to the local registry (scripts/test.sh builds the binary).
    let binary = std::env::var("HUXLEY_STATIC_SERVICE")
        .expect("HUXLEY_STATIC_SERVICE names the statically linked test service (scripts/test.sh builds it)");
    let context = Path::new(env!("CARGO_TARGET_TMPDIR")).join("image");
    let _ = fs::remove_dir_all(&context);
    fs::create_dir_all(&context).expect("context");
    fs::copy(&binary, context.join("service")).expect("copy the binary");
    fs::write(
        context.join("Containerfile"),
        "FROM scratch\nCOPY service /service\nENTRYPOINT [\"/service\"]\n",
    )
    .expect("Containerfile");
    let image = format!("127.0.0.1:5000/huxley-test-service:{}", std::process::id());
    let context_arg = context.display().to_string();
    let containerfile = context.join("Containerfile").display().to_string();
    docker(&[
        "build",
        "--quiet",
        "--tag",
        &image,
        "--file",
        &containerfile,
        &context_arg,
    ])
    .expect("docker build");
    docker(&["push", "--quiet", &image]).expect("docker push");
    docker(&["image", "rm", &image]).expect("the node pulls it again");

    let name = "containers";
    let text = cluster_toml(name, 1, 2, 1)
        + &format!(
            r#"[apps.shop.services.web]
image = "{image}"
port = 8080
replicas = {{ min = 2, max = 2 }}
health = {{ http = "/healthz", interval = "1s", timeout = "500ms", healthy = 1, unhealthy = 2 }}
depends-on = ["api"]

[apps.shop.services.api]
image = "{image}"
port = 9000
health = {{ tcp = 9000, interval = "1s", timeout = "500ms", healthy = 1, unhealthy = 2 }}

[apps.shop.services.broken]
image = "127.0.0.1:5000/huxley-no-such-image:1"
port = 7000
health = {{ tcp = 7000, interval = "1s", timeout = "500ms", healthy = 1, unhealthy = 2 }}
"#
        );
    let _turn = CONTAINERS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let _cleanup = DockerCleanup(name.to_owned());
    let _ = docker(&["network", "rm", huxley::agent::runtime::NETWORK]);
    // The real containers' range: a bridge on this host, reached from it.
    let mut live = Live::with_config(name, "100.64.0.0/16", &text, 1);
    let kicks = vec![live.kick("kick")];
    live.container_agent(0, &kicks);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let described = rt.block_on(live.describe_until(
        &kicks,
        Duration::from_secs(90),
        "web and api healthy in containers, and the broken image reported with its output",
        |d| {
            let services = &d["apps"]["shop"]["services"];
            let broken = services["broken"]["placed"][0]["detail"]
                .as_str()
                .unwrap_or("");
            services["web"]["healthy"] == 2
                && services["api"]["healthy"] == 1
                && services["broken"]["placed"][0]["state"] == "failed"
                && !broken.is_empty()
                && services["broken"]["placed"][0]["output"]
                    .as_array()
                    .is_some_and(|lines| !lines.is_empty())
        },
    ));
    // The pull error reaches describe, as the agent saw it.
    let broken = described["apps"]["shop"]["services"]["broken"]["placed"][0]["detail"]
        .as_str()
        .unwrap_or_default();
    assert!(
        broken.contains("huxley-no-such-image")
            || broken.contains("not found")
            || broken.contains("manifest unknown"),
        "{broken}"
    );
    // And what it printed: Docker's lines of the failed pull.
    let output = &described["apps"]["shop"]["services"]["broken"]["placed"][0]["output"];
    assert!(
        output.as_array().is_some_and(|lines| lines.iter().any(|l| l
            .as_str()
            .is_some_and(|l| l.contains("huxley-no-such-image")))),
        "{output}"
    );
    // They are containers, named and labelled by the unit, on the node's
    // routed subnet.
    let running = docker(&[
        "ps",
        "--filter",
        &format!("label=huxley.cluster={name}"),
        "--format",
        "{{.Names}}",
    ])
    .expect("docker ps");
    let mut names: Vec<&str> = running.split_whitespace().collect();
    names.sort_unstable();
    assert_eq!(
        names,
        ["shop-api-1", "shop-web-1", "shop-web-2"],
        "{running}"
    );
    let web = instances_of(&described, "shop", "web");
    let address = web[0]["address"].as_str().expect("address").to_owned();
    assert!(address.starts_with("100.64."), "{address}");
    let env = rt
        .block_on(live.get(&format!("http://{address}:8080/env"), None))
        .map(|(_, text)| text)
        .unwrap_or_default();
    assert!(
        env.contains("API_URL=http://api.shop.containers.internal:9000\n"),
        "{env}"
    );
    // A one-off run is a container of the service's, made from its unit:
    // its environment, its status, and gone once it ended.
    let mut admin_env = live.env.clone();
    admin_env.push(("HUXLEY_TOKEN".into(), live.admin.clone()));
    let endpoint = live.externals["kick"].clone();
    let one_off = |command: &[&str]| {
        let mut args = vec![
            "run",
            "--cluster",
            name,
            "--endpoint",
            &endpoint,
            "shop",
            "web",
            "--",
        ];
        args.extend_from_slice(command);
        Test::new(&args)
            .env(&admin_env)
            .run_within(Duration::from_secs(120))
    };
    let printed = one_off(&["printenv", "API_URL"]);
    printed.code(0);
    assert_eq!(printed.stdout, "http://api.shop.containers.internal:9000\n");
    let exited = one_off(&["exit", "3"]);
    exited.code(3);
    assert!(
        exited.stderr.contains("exiting with 3"),
        "{}",
        exited.stderr
    );
    let left = docker(&[
        "ps",
        "--all",
        "--filter",
        "name=shop-web-run-",
        "--format",
        "{{.Names}}",
    ])
    .expect("docker ps");
    assert_eq!(left.trim(), "", "run containers left behind");
    // What the containers wrote is in the app's log group, through the
    // unit's awslogs driver: `huxley logs` merges it, each line with its
    // service and replica.
    let mut cli_env = live.env.clone();
    cli_env.push(("HUXLEY_CLUSTER".into(), name.to_owned()));
    let deadline = Instant::now() + Duration::from_secs(60);
    let printed = loop {
        let out = Test::new(&["logs", "shop/web", "--since", "5m"])
            .env(&cli_env)
            .run();
        out.code(0);
        let listening: BTreeSet<&str> = out
            .stdout
            .lines()
            .filter(|l| l.contains("huxley-test-service: listening on 100.64."))
            .filter_map(|l| l.split_whitespace().nth(1))
            .collect();
        if listening == BTreeSet::from(["web/1", "web/2"]) {
            break out.stdout;
        }
        assert!(
            Instant::now() < deadline,
            "no listening lines from web/1 and web/2 in:\n{}\n{}",
            out.stdout,
            live.logs()
        );
        std::thread::sleep(Duration::from_secs(1));
    };
    assert!(!printed.contains("api/"), "{printed}");
    // `-f` prints a line written after it started, and ends on Ctrl-C.
    let mut follower = Test::new(&["logs", "shop", "-f", "--since", "1s"])
        .env(&cli_env)
        .command()
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("huxley logs -f");
    let (lines, seen) = std::sync::mpsc::channel();
    let stdout = follower.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)).map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    std::thread::sleep(Duration::from_secs(2));
    let word = format!("said-after-follow-{}", std::process::id());
    rt.block_on(live.get(&format!("http://{address}:8080/say?line={word}"), None))
        .expect("web answers");
    let deadline = Instant::now() + Duration::from_secs(60);
    let said = loop {
        match seen.recv_timeout(Duration::from_secs(1)) {
            Ok(line) if line.contains(&word) => break line,
            _ => assert!(
                Instant::now() < deadline,
                "`huxley logs shop -f` never printed {word}"
            ),
        }
    };
    let who = said.split_whitespace().nth(1).unwrap_or_default();
    assert!(who == "web/1" || who == "web/2", "{said}");
    let pid = follower.id().to_string();
    std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill -INT");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = follower.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "`huxley logs -f` ignored Ctrl-C");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{status}");
    // --grep and --json.
    let grep = Test::new(&["logs", "shop", "--since", "5m", "--grep", &word, "--json"])
        .env(&cli_env)
        .run();
    grep.code(0);
    let found: Vec<Value> = grep
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(found.len(), 1, "{}", grep.stdout);
    assert_eq!(found[0]["service"], "web");
    assert_eq!(found[0]["message"], word.as_str());

    // The container's own CPU reaches kick (from its cgroup: the unit's
    // `docker run` client uses none), which the scaler acts on.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        rt.block_on(async {
            for _ in 0..3 {
                live.get(&format!("http://{address}:8080/burn?ms=400"), None)
                    .await;
            }
        });
        let metrics = rt
            .block_on(live.get(&format!("{}/metrics", kicks[0]), Some(&live.admin)))
            .map(|(_, text)| text)
            .unwrap_or_default();
        let busy = metrics.lines().any(|line| {
            line.starts_with("huxley_kick_replica_cpu_millis{app=\"shop\",service=\"web\"")
                && line
                    .rsplit(' ')
                    .next()
                    .and_then(|v| v.parse::<u64>().ok())
                    .is_some_and(|v| v > 0)
        });
        if busy {
            assert!(
                metrics.contains("huxley_kick_replica_memory_mib{app=\"shop\",service=\"web\""),
                "{metrics}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no CPU measured for web's containers:\n{metrics}\n{}",
            live.logs()
        );
    }
}

fn instances_of<'a>(description: &'a Value, app: &str, service: &str) -> Vec<&'a Value> {
    description["apps"][app]["services"][service]["instances"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default()
}

/// Regression: a node got kick.toml only with its first assignment,
/// which only a leading kick server gives, and a kick server cannot lead
/// without kick.toml: a new cluster never came up. The agent installs the
/// applied artifacts from the bucket first, whatever kick says.
#[test]
fn a_node_installs_the_applied_artifacts_before_any_kick_server_answers() {
    let mut live = Live::new("artifacts", "127.76.0.0/16");
    let nowhere = format!("http://127.0.0.1:{}", huxley::testing::free_port());
    let (etc, units) = (live.dir.join("etc"), live.dir.join("units"));
    let args = [
        "--runtime",
        "units",
        "--bucket",
        &format!("huxley-123456789012-us-west-2-{}", live.name),
        "--state-dir",
        &live.dir.join("replicas").display().to_string(),
        "--etc",
        &etc.display().to_string(),
        "--units-dir",
        &units.display().to_string(),
    ]
    .map(str::to_owned);
    live.agent_with(0, &[nowhere], &args);
    let applied = fs::read_to_string(live.dir.join("out/kick/kick.toml")).expect("built kick.toml");
    let deadline = Instant::now() + Duration::from_secs(30);
    while fs::read_to_string(etc.join("kick.toml")).ok().as_deref() != Some(applied.as_str()) {
        assert!(
            Instant::now() < deadline,
            "the agent never installed kick.toml:\n{}",
            live.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(units.join("blog-web@.service").exists(), "{}", live.logs());
    assert!(
        live.logs().contains("kick cannot be reached") || live.logs().contains("tries again"),
        "no kick server answered all along:\n{}",
        live.logs()
    );
}

/// Every node pulls the images built on push: the agent writes the
/// registry's authorization (the node role's, through the SDK) into the
/// units' Docker configuration. Here against the emulator's ECR.
#[test]
fn the_registry_authorization_a_node_writes_is_dockers_user_and_password() {
    let emulator = Emulator::shared(&root());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let auth = rt
        .block_on(async {
            aws(&emulator.endpoint(), REGION)
                .await
                .registry_authorization()
                .await
        })
        .expect("ecr:GetAuthorizationToken");
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("docker-config");
    let _ = fs::remove_dir_all(&dir);
    huxley::agent::runtime::systemd::write_registry_auth(
        &dir,
        "123456789012.dkr.ecr.us-west-2.amazonaws.com",
        &auth,
    )
    .expect("written");
    let config: Value =
        serde_json::from_slice(&fs::read(dir.join("config.json")).expect("config")).expect("json");
    let written = config["auths"]["123456789012.dkr.ecr.us-west-2.amazonaws.com"]["auth"]
        .as_str()
        .expect("an auth");
    let decoded = String::from_utf8(aws_smithy_types::base64::decode(written).expect("base64"))
        .expect("utf-8");
    assert!(
        decoded.starts_with("AWS:") && decoded.len() > 4,
        "{decoded}"
    );
}
