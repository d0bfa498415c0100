//! Autoscaling end to end, on the emulator and loopback: one `huxley kick
//! serve` and a node agent per EC2 instance of the node group, running the
//! test service as real processes. Load (CPU-burning requests) raises the
//! service's replicas beyond what the nodes hold, so kick raises the
//! group's desired capacity; the test boots the new node's agent as the
//! node's own boot would. Then the load stops: the replicas go, the node
//! that emptied is drained and terminated with the desired capacity
//! decremented, and the cluster stays at `nodes.min`. Throughout, the
//! service never has zero healthy replicas.

use std::collections::BTreeSet;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::cluster::{Live, REGION};

fn config(name: &str) -> String {
    format!(
        r#"[cluster]
name = "{name}"
region = "{REGION}"
availability-zones = ["us-west-2a", "us-west-2b"]
private-domain = "{name}.internal"

[cluster.nodes]
instance-type = "m6i.large"
min = 2
max = 3
consolidation = {{ budget = 1, min-savings = 0, after = "3s" }}

# One replica per node (1 CPU of the 1.8 a node offers), so a third
# replica needs a third node.
[apps.shop.services.web]
image = "ghcr.io/acme/web:1.0.0"
port = 8080
cpu = "1"
replicas = {{ min = 1, max = 3 }}
scale = {{ target-cpu = 10, scale-in-after = "6s" }}
health = {{ http = "/healthz", interval = "1s", timeout = "500ms", healthy = 1, unhealthy = 2 }}
"#
    )
}

/// A load generator: while `on`, one request a tenth of a second that
/// burns 40 ms of CPU (0.4 of a core in all), round robin over
/// `targets`. Bounded: it ends when told to or after four minutes.
struct Load {
    on: Arc<AtomicBool>,
    done: Arc<AtomicBool>,
    targets: Arc<Mutex<Vec<String>>>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl Load {
    fn start() -> Load {
        let on = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicBool::new(false));
        let targets: Arc<Mutex<Vec<String>>> = Arc::default();
        let thread = {
            let (on, done, targets) = (on.clone(), done.clone(), targets.clone());
            std::thread::spawn(move || {
                let end = Instant::now() + Duration::from_secs(240);
                let mut sent = 0u64;
                let mut next = 0usize;
                let mut due = Instant::now();
                while !done.load(Ordering::Relaxed) && Instant::now() < end {
                    // On a fixed beat, however long each request took.
                    due += Duration::from_millis(100);
                    std::thread::sleep(due.saturating_duration_since(Instant::now()));
                    if !on.load(Ordering::Relaxed) {
                        continue;
                    }
                    let target = {
                        let list = targets.lock().expect("targets");
                        if list.is_empty() {
                            continue;
                        }
                        next = next.wrapping_add(1);
                        list[next % list.len()].clone()
                    };
                    if burn(&target).is_ok() {
                        sent += 1;
                    }
                }
                sent
            })
        };
        Load {
            on,
            done,
            targets,
            thread: Some(thread),
        }
    }

    fn stop(&mut self) -> u64 {
        self.done.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .map_or(0, |t| t.join().expect("the load thread"))
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop();
    }
}

fn burn(target: &str) -> std::io::Result<()> {
    let mut stream = TcpStream::connect(target)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(stream, "GET /burn?ms=40 HTTP/1.0\r\nhost: load\r\n\r\n")?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(())
}

fn web(description: &Value) -> &Value {
    &description["apps"]["shop"]["services"]["web"]
}

fn decisions(description: &Value) -> Vec<String> {
    description["decisions"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|d| d["decision"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The cluster's node group, as the emulator's Auto Scaling API has it.
fn node_group(live: &Live, rt: &tokio::runtime::Runtime) -> huxley::aws::NodeGroup {
    rt.block_on(live.aws.node_group("huxley-scaling-nodes"))
        .expect("describe the group")
        .expect("the group")
}

/// The leader's description now, if it answers.
fn describe(live: &Live, rt: &tokio::runtime::Runtime, kicks: &[String]) -> Option<Value> {
    rt.block_on(async {
        let leader = live.leader(kicks).await?;
        let (status, text) = live
            .get(&format!("{leader}/v1/cluster"), Some(&live.admin))
            .await?;
        (status == 200).then(|| serde_json::from_str(&text).expect("a description"))
    })
}

#[test]
fn load_adds_replicas_and_a_node_and_its_end_drains_and_terminates_one() {
    let mut live = Live::with_config("scaling", "127.78.0.0/16", &config("scaling"), 2);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let kicks = vec![live.kick("kick")];
    for index in 0..2 {
        live.process_agent(index, &kicks, &["shop.web"]);
    }
    let mut load = Load::start();
    // The healthy count of web at every look, for the history check.
    let mut history: Vec<u64> = Vec::new();
    let mut last = Value::Null;

    // Waits until `done` holds, looking every 300 ms: records the health
    // history, keeps the load's targets current, and boots the agent of
    // any node the group launches.
    let mut watch =
        |live: &mut Live, what: &str, limit: Duration, done: &dyn Fn(&Value) -> bool| {
            let deadline = Instant::now() + limit;
            loop {
                if let Some(description) = describe(live, &rt, &kicks) {
                    let healthy = web(&description)["healthy"].as_u64().unwrap_or(0);
                    history.push(healthy);
                    let targets: Vec<String> = web(&description)["instances"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter(|i| i["health"] == "healthy")
                        .filter_map(|i| Some(format!("{}:{}", i["address"].as_str()?, i["port"])))
                        .collect();
                    *load.targets.lock().expect("targets") = targets;
                    last = description;
                    if done(&last) {
                        return last.clone();
                    }
                }
                let listed = rt
                    .block_on(live.aws.cluster_nodes(&live.name))
                    .expect("list nodes");
                for node in listed {
                    if !live.nodes.contains(&node.id) {
                        live.nodes.push(node.id);
                        let index = live.nodes.len() - 1;
                        live.process_agent(index, &kicks, &["shop.web"]);
                    }
                }
                assert!(
                    Instant::now() < deadline,
                    "never {what} within {limit:?}:\n{}\n{}",
                    serde_json::to_string_pretty(&last).unwrap_or_default(),
                    live.logs()
                );
                std::thread::sleep(Duration::from_millis(300));
            }
        };

    watch(
        &mut live,
        "one healthy replica",
        Duration::from_secs(60),
        &|d| web(d)["healthy"].as_u64() == Some(1),
    );
    let first_nodes: BTreeSet<String> = live.nodes.iter().cloned().collect();

    // Load: 0.4 of a core against a 10% target of 1 CPU → 3 replicas (the
    // most), one more than two nodes hold → a third node.
    load.on.store(true, Ordering::Relaxed);
    let grown = watch(
        &mut live,
        "three healthy replicas on three nodes",
        Duration::from_secs(150),
        &|d| {
            web(d)["desired"].as_u64() == Some(3)
                && web(d)["healthy"].as_u64() == Some(3)
                && d["nodes"].as_object().is_some_and(|n| n.len() == 3)
        },
    );
    let said = decisions(&grown);
    assert!(
        said.iter()
            .any(|d| d.starts_with("scaling shop.web from 1 to") && d.contains("cpu at")),
        "{said:?}"
    );
    assert!(
        said.iter().any(|d| d.starts_with(
            "adding 1 node (desired capacity 3): shop.web#3 fit on no node"
        )),
        "{said:?}"
    );
    let group = node_group(&live, &rt);
    assert_eq!((group.desired, group.max), (3, 3), "{group:?}");
    let added: Vec<String> = live
        .nodes
        .iter()
        .filter(|n| !first_nodes.contains(*n))
        .cloned()
        .collect();
    assert_eq!(added.len(), 1, "{added:?}");

    // The load ends: back to one replica, and a node that emptied is
    // drained and terminated.
    load.on.store(false, Ordering::Relaxed);
    let shrunk = watch(
        &mut live,
        "one replica and a node terminated",
        Duration::from_secs(150),
        &|d| {
            web(d)["desired"].as_u64() == Some(1)
                && web(d)["healthy"].as_u64() == Some(1)
                && decisions(d).iter().any(|x| x.starts_with("terminated "))
        },
    );
    let sent = load.stop();
    assert!(sent > 50, "the load sent {sent} requests");
    let said = decisions(&shrunk);
    assert!(
        said.iter()
            .any(|d| d.starts_with("scaling shop.web from 3 to 1 replicas: cpu at")),
        "{said:?}"
    );
    let drained = said
        .iter()
        .find_map(|d| d.strip_prefix("draining "))
        .and_then(|d| d.split(':').next())
        .expect("a drain decision")
        .to_owned();
    assert!(
        said.iter()
            .any(|d| d
                == &format!("terminated {drained}: drained; the node group now wants 2 nodes")),
        "{said:?}"
    );
    let group = node_group(&live, &rt);
    assert_eq!(group.desired, 2, "the termination decremented: {group:?}");
    assert!(!group.instances.contains(&drained), "{group:?}");
    // Exactly the drained node went; the others still run.
    let listed: BTreeSet<String> = rt
        .block_on(live.aws.cluster_nodes(&live.name))
        .expect("list nodes")
        .into_iter()
        .map(|n| n.id)
        .collect();
    let expected: BTreeSet<String> = live
        .nodes
        .iter()
        .filter(|n| **n != drained)
        .cloned()
        .collect();
    assert_eq!(listed, expected);

    // At nodes.min, nothing more goes, though one node is empty.
    std::thread::sleep(Duration::from_secs(8));
    let group = node_group(&live, &rt);
    assert_eq!(group.desired, 2, "{group:?}");
    let listed = rt
        .block_on(live.aws.cluster_nodes(&live.name))
        .expect("list nodes");
    assert_eq!(listed.len(), 2, "{listed:?}");

    // Never a moment without a healthy replica, once there was one.
    let from = history.iter().position(|h| *h > 0).expect("healthy once");
    assert!(
        history[from..].iter().all(|h| *h > 0),
        "web had no healthy replica at some point: {history:?}"
    );
    assert!(history.len() > 50, "{} looks", history.len());
    drop(live);
}
