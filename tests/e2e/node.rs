//! A cluster as it boots: three systemd machines, two of the control
//! group and a node, each given its group's generated Ignition config
//! exactly (see `harness::node` for what their environment stands in for),
//! each with its own role's credentials and instance id, and no
//! command-line flag beyond what the units say. kick leads on the first
//! control machine, the node's agent proves who it is and runs the
//! replicas, the hook server serves git as the unprivileged push user, a
//! `git push` with a deploy key deploys (the replicas get their secret
//! from kick), and a build's `RUN` step reaches neither the control plane
//! nor a replica. The second control machine stands by, and takes over
//! (kick leads, the kick name moves to it, its hook server serves git)
//! when the first one's kick server stops.

use std::fs;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::bridge::Bridge;
use crate::harness::cluster::{CONTAINERS, DockerCleanup, Live, REGION, cluster_toml, docker};
use crate::harness::git::keygen;
use crate::harness::node::{Node, apply};
use crate::push::{commit, push, working_copy};
use crate::support::Test;

#[test]
#[ignore = "needs Docker, the node image and a registry on 127.0.0.1:5000, and root: scripts/test.sh makes them and runs it"]
fn a_node_booted_from_its_ignition_leads_runs_replicas_and_deploys_a_push() {
    let name = "booted";
    let image = std::env::var("HUXLEY_NODE_IMAGE")
        .expect("HUXLEY_NODE_IMAGE names the node test's systemd image (scripts/test.sh makes it)");
    let _turn = CONTAINERS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let _cleanup = DockerCleanup(name.to_owned());
    let _ = docker(&["network", "rm", huxley::agent::runtime::NETWORK]);
    let scratch = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("node-keys");
    let _ = fs::remove_dir_all(&scratch);
    fs::create_dir_all(&scratch).expect("scratch");
    let (deploy_key, login_key) = (scratch.join("deploy"), scratch.join("login"));
    keygen(&deploy_key);
    keygen(&login_key);
    let public = |key: &std::path::Path| {
        fs::read_to_string(key.with_extension("pub"))
            .expect("a public key")
            .trim()
            .to_owned()
    };
    let text = cluster_toml(name, 1, 1, 1).replace(
        "[cluster.nodes]",
        &format!(
            "ssh-keys = [\"{}\"]\ndeployers = [{{ key = \"{}\", apps = [\"shop\"] }}]\n\n[cluster.nodes]",
            public(&login_key),
            public(&deploy_key)
        ),
    ) + r#"[apps.shop.services.web]
build = "."
port = 8080
replicas = 2
health = { http = "/healthz", interval = "1s", timeout = "500ms", healthy = 1, unhealthy = 2 }
deploy = { timeout = "30s" }
secrets = { VAULT_URL = "ssm:/booted/shop/vault-url" }
"#;
    let live = Live::with_config(name, "100.64.0.0/16", &text, 1);
    live.rt()
        .block_on(live.aws.put_secret(
            "/booted/shop/vault-url",
            "https://s3cret-token@vault.internal",
            "test",
        ))
        .expect("the web service's secret");
    // The control group's machines, as the emulator launched them: one
    // boots first and leads, the other stands by.
    let controls: Vec<String> = live
        .rt()
        .block_on(live.aws.cluster_machines(name))
        .expect("the cluster's machines")
        .into_iter()
        .map(|m| m.id)
        .filter(|id| !live.nodes.contains(id))
        .collect();
    assert_eq!(controls.len(), 2, "the control group launches two machines");
    let control = boot(
        &live,
        &image,
        &Machine {
            role: "control",
            instance: &controls[0],
            iam_role: "ControlRole",
            address: "127.0.0.1",
            own_network: false,
        },
    );
    let node = boot(
        &live,
        &image,
        &Machine {
            role: "node",
            instance: &live.nodes[0],
            iam_role: "NodeRole",
            address: "127.0.0.1",
            own_network: false,
        },
    );
    let journals = || format!("{}\n{}", control.journal(), node.journal());

    // kick leads, with the units' own flags.
    let kick = "http://127.0.0.1:7400";
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let health = live
            .rt()
            .block_on(live.get(&format!("{kick}/healthz"), None));
        if health
            .as_ref()
            .is_some_and(|(_, t)| t.starts_with("ok: leader"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "kick never led on the control machine ({health:?}):\n{}",
            journals()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // The daemons' journal reaches the cluster's system log group, sent
    // by each machine's agent: `huxley logs --system` shows kick leading
    // on the control machine, and the node's agent starting.
    let mut cli_env = live.env.clone();
    cli_env.push(("HUXLEY_CLUSTER".into(), name.to_owned()));
    let kick_stream = format!("{}/huxley-kick", controls[0]);
    let agent_stream = format!("{}/huxley-node", live.nodes[0]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = Test::new(&["logs", "--system", "--since", "10m"])
            .env(&cli_env)
            .run();
        out.code(0);
        let from = |stream: &str, text: &str| {
            out.stdout
                .lines()
                .any(|l| l.split_whitespace().nth(1) == Some(stream) && l.contains(text))
        };
        if from(&kick_stream, "kick: leading") && from(&agent_stream, "node: ") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no kick and agent lines in the system log group:\n{}\n{}",
            out.stdout,
            journals()
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    // The second control machine boots once the first leads.
    let standby = boot(
        &live,
        &image,
        &Machine {
            role: "control",
            instance: &controls[1],
            iam_role: "ControlRole",
            address: "127.0.0.2",
            own_network: true,
        },
    );
    let journals = || format!("{}\n{}", journals(), standby.journal());
    // The agent checked in: the node is ready for placement.
    let describe = || -> Value {
        live.rt()
            .block_on(live.get(&format!("{kick}/v1/cluster"), Some(&live.admin)))
            .and_then(|(_, text)| serde_json::from_str(&text).ok())
            .unwrap_or(Value::Null)
    };
    // The hook server serves git, as the push user, with the deploy keys.
    let deadline = Instant::now() + Duration::from_secs(90);
    while std::net::TcpStream::connect(("127.0.0.1", 2222)).is_err() {
        assert!(
            Instant::now() < deadline,
            "the hook server never served git:\n{}",
            journals()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let sshd = control.exec(&["cat", "/var/lib/huxley/hook/sshd_config"]);
    assert!(
        sshd.contains(&format!("AllowUsers {}", huxley::spec::names::GIT_USER)),
        "{sshd}"
    );
    let keys = control.exec(&["cat", "/var/lib/huxley/hook/authorized_keys"]);
    assert!(
        keys.contains("--apps shop") && keys.contains(&public(&deploy_key)),
        "{keys}"
    );
    assert!(
        !keys.contains(&public(&login_key)),
        "a login key may push:\n{keys}"
    );

    // A push with the deploy key deploys; the login key cannot push.
    let work = working_copy(&live.dir);
    let first = commit(&work, "one", "");
    let remote = format!("ssh://{}@127.0.0.1/shop.git", huxley::spec::names::GIT_USER);
    let (pushed, said) = push(&work, &remote, &login_key, 2222, "main");
    assert!(!pushed && said.contains("Permission denied"), "{said}");
    let (pushed, said) = push(&work, &remote, &deploy_key, 2222, "main");
    assert!(pushed, "{said}\n{}", journals());
    assert!(said.contains("deployed shop v1"), "{said}");
    let described = describe();
    let web = &described["apps"]["shop"]["services"]["web"];
    assert_eq!(web["healthy"], 2, "{described:#}");
    assert_eq!(web["release"]["commit"], first.as_str(), "{described:#}");
    assert!(
        web["instances"]
            .as_array()
            .into_iter()
            .flatten()
            .all(|i| i["node"] == live.nodes[0].as_str()),
        "{described:#}"
    );

    // The replicas got their secret from kick, which read it from SSM;
    // the node's role could not have.
    let first_replica = web["instances"][0]["address"].as_str().unwrap_or_default();
    let env = live
        .rt()
        .block_on(live.get(&format!("http://{first_replica}:8080/env"), None))
        .map(|(_, text)| text)
        .unwrap_or_default();
    // (The test service shows its `*_URL` variables.)
    assert!(
        env.contains("VAULT_URL=https://s3cret-token@vault.internal\n"),
        "{env}"
    );
    assert!(
        !journals().contains("s3cret-token"),
        "a secret reached a journal"
    );

    // A build is contained: a RUN step cannot reach the node (kick's API
    // through the build network's gateway) nor a replica, so this push is
    // refused and v1 keeps running. (With Docker's default bridge both
    // answer, and the push deploys.)
    let replica = web["instances"][0]["address"]
        .as_str()
        .unwrap_or_else(|| panic!("a replica's address: {described:#}"))
        .to_owned();
    let probing = commit(
        &work,
        "probe",
        &format!("RUN [\"/service\", \"probe\", \"gateway:7400\", \"{replica}:8080\"]\n"),
    );
    let (pushed, said) = push(&work, &remote, &deploy_key, 2222, "main");
    assert!(!pushed, "a build reached the node or a replica:\n{said}");
    assert!(said.contains("probe: cannot reach gateway:7400"), "{said}");
    assert!(
        said.contains(&format!("probe: cannot reach {replica}:8080")),
        "{said}"
    );
    let described = describe();
    assert_eq!(
        described["apps"]["shop"]["services"]["web"]["release"]["commit"],
        first.as_str(),
        "{described:#}"
    );
    assert!(
        control
            .journal()
            .contains("builds run on the huxley-build network"),
        "{}",
        control.journal()
    );
    let _ = probing;
    // The node runs no server, and takes no push: no push user there.
    assert!(
        !node
            .exec(&["cat", "/etc/passwd"])
            .contains(huxley::spec::names::GIT_USER),
        "the node has the push user"
    );

    // The second control machine stands by: its kick server answers as a
    // standby naming the leader, and its hook server serves no git.
    let standing = until(Duration::from_secs(90), || {
        let health = health_on(&standby);
        health
            .contains("ok: standby; the leader is")
            .then_some(health)
    })
    .unwrap_or_else(|| {
        panic!(
            "the second control machine never stood by ({}):\n{}",
            health_on(&standby),
            journals()
        )
    });
    assert!(standing.contains("127.0.0.1"), "{standing}");
    // Its hook server runs, and serves nothing.
    until(Duration::from_secs(60), || {
        standby
            .try_exec(&["systemctl", "is-active", "huxley-hook.service"])
            .is_ok_and(|s| s.trim() == "active")
            .then_some(())
    })
    .unwrap_or_else(|| panic!("the standby's hook server never ran:\n{}", journals()));
    for _ in 0..6 {
        assert!(!listening(&standby, 2222), "a standby serves git");
        std::thread::sleep(Duration::from_millis(500));
    }
    // The kick name is the first machine's address, until the takeover.
    let kick_name = format!("kick.{name}.internal");
    let kick_record = || -> Option<Vec<String>> {
        live.rt()
            .block_on(live.private_records())
            .into_iter()
            .find(|(n, kind, _)| n.trim_end_matches('.') == kick_name && kind == "A")
            .map(|(_, _, values)| values)
    };
    assert_eq!(kick_record(), Some(vec!["127.0.0.1".to_owned()]));
    // The leader's kick server stops: the standby takes over, with its
    // units' own flags. It leads, serves git, and the kick name is its
    // address; the old leader's hook server stops serving.
    control.exec(&["systemctl", "stop", "huxley-kick.service"]);
    until(Duration::from_secs(90), || {
        health_on(&standby).starts_with("ok: leader").then_some(())
    })
    .unwrap_or_else(|| panic!("the standby never led:\n{}", journals()));
    until(Duration::from_secs(60), || {
        listening(&standby, 2222).then_some(())
    })
    .unwrap_or_else(|| panic!("the new leader never served git:\n{}", journals()));
    until(Duration::from_secs(60), || {
        std::net::TcpStream::connect(("127.0.0.1", 2222))
            .is_err()
            .then_some(())
    })
    .unwrap_or_else(|| panic!("the old leader still serves git:\n{}", journals()));
    until(Duration::from_secs(60), || {
        (kick_record() == Some(vec!["127.0.0.2".to_owned()])).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "the kick name never named the new leader: {:?}",
            kick_record()
        )
    });
    drop(standby);
    drop(node);
    drop(control);
}

/// Asks `check` every half second until it answers, for at most `limit`.
fn until<T>(limit: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(answer) = check() {
            return Some(answer);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// What the kick server on a machine answers to `GET /healthz`, asked on
/// the machine (a machine on a network of its own is not reachable from
/// the host).
fn health_on(machine: &Node) -> String {
    machine
        .try_exec(&[
            "bash",
            "-c",
            "exec 3<>/dev/tcp/127.0.0.1/7400 && printf 'GET /healthz HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && cat <&3",
        ])
        .map(|answer| {
            answer
                .split_once("\r\n\r\n")
                .map_or(answer.clone(), |(_, body)| body.to_owned())
        })
        .unwrap_or_else(|e| e)
}

/// Whether something listens on TCP `port` on a machine.
fn listening(machine: &Node, port: u16) -> bool {
    machine
        .try_exec(&["ss", "-Hltn", &format!("sport = :{port}")])
        .is_ok_and(|out| !out.trim().is_empty())
}

/// A machine of the group `role` ("node" or "control"), as the emulator
/// launched it: its instance id and the address its metadata gives.
struct Machine<'a> {
    role: &'a str,
    instance: &'a str,
    iam_role: &'a str,
    address: &'a str,
    /// On a network of its own (a second control machine, whose ports
    /// would be the first one's), instead of the host's.
    own_network: bool,
}

/// Boots a machine from its group's generated Ignition config, with the
/// credentials of the stack's role session named after it and its own
/// instance metadata, as EC2 gives them.
fn boot(live: &Live, image: &str, machine: &Machine<'_>) -> Node {
    let Machine {
        role,
        instance,
        iam_role,
        address,
        own_network,
    } = *machine;
    let name = &live.name;
    let bucket = format!("huxley-123456789012-{REGION}-{name}");
    // What Ignition puts on the disk, from the generated config after the
    // stack's substitution.
    let ignition: Value = serde_json::from_str(
        &fs::read_to_string(live.dir.join(format!("out/ignition/{role}.ign")))
            .expect("the generated Ignition config")
            .replace("${ArtifactBucket}", &bucket),
    )
    .expect("Ignition is JSON");
    let tree = live.dir.join(format!("{instance}-root"));
    let _ = fs::remove_dir_all(&tree);
    let users = apply(&ignition, &tree, &|bucket, key| {
        live.rt()
            .block_on(live.aws.get_object(bucket, key))
            .expect("read the bucket")
            .unwrap_or_else(|| {
                panic!("Ignition names s3://{bucket}/{key}, which apply did not upload")
            })
    });
    assert_eq!(
        users
            .iter()
            .any(|u| u.name == huxley::spec::names::GIT_USER),
        role == "control",
        "Ignition makes the push user on the control plane only"
    );
    // Ignition fetched the binary apply uploaded (a stand-in in the tests):
    // this build's is bind-mounted there instead.
    fs::remove_file(tree.join("opt/bin/huxley")).expect("Ignition wrote /opt/bin/huxley");
    // The environment a machine gets on AWS: its instance metadata, and
    // its instance role's session, named after the instance.
    let imds = huxley::testing::Imds::start(instance, "us-west-2a", address);
    let mut environment: Vec<(String, String)> = live
        .env
        .iter()
        .filter(|(k, _)| k.starts_with("AWS_"))
        .cloned()
        .collect();
    let credentials = live.rt().block_on(huxley::testing::instance_credentials(
        &live.aws, name, iam_role, instance,
    ));
    environment.retain(|(k, _)| !credentials.iter().any(|(c, _)| c == k));
    environment.extend(credentials);
    environment.push(("AWS_EC2_METADATA_SERVICE_ENDPOINT".into(), imds.endpoint()));
    environment.push(("AWS_EC2_METADATA_DISABLED".into(), "false".into()));
    environment.push(("HUXLEY_REGISTRY".into(), "127.0.0.1:5000".into()));
    environment.push(("HUXLEY_LOG_OPTIONS".into(), live.log_options()));
    // A network of its own reaches the emulator and the metadata at the
    // same addresses, forwarded.
    let bridge = own_network.then(|| {
        let emulator = live
            .env
            .iter()
            .find(|(k, _)| k == "AWS_ENDPOINT_URL")
            .and_then(|(_, url)| url.rsplit(':').next())
            .and_then(|port| port.trim_end_matches('/').parse::<u16>().ok())
            .expect("the emulator's port");
        Bridge::start(instance, &[emulator, imds.port])
    });
    Node::boot(
        image,
        &format!("huxley-{role}-{instance}"),
        &tree,
        &users,
        &environment,
        &format!("127.0.0.1 kick.{name}.internal"),
        imds,
        bridge,
    )
}
