//! A live cluster on loopback for the end-to-end tests: the applied
//! config, kick servers and node agents as processes, their descriptions,
//! and Docker around the container tests.
use std::collections::BTreeSet;
use std::fs;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use huxley::testing::{Emulator, Imds, aws, create_public_zone, free_port, stand_in_binary};
use serde_json::Value;

use crate::support::{Test, root};

pub(crate) const REGION: &str = "us-west-2";

pub(crate) fn config(name: &str) -> String {
    format!(
        r#"[cluster]
name = "{name}"
region = "{REGION}"
availability-zones = ["us-west-2a", "us-west-2b"]
public-domain = "{name}.example.com"
private-domain = "{name}.internal"
# Public names at the nodes: the load balancer has tests of its own.
ingress = "dns"

[cluster.nodes]
instance-type = "m6i.large"
min = 2
max = 4
desired = 3

[apps.blog.services.web]
image = "ghcr.io/acme/web:1.0.0"
port = 8080
host-port = 80
public = ["www"]
replicas = {{ min = 2, max = 4 }}
health = {{ http = "/healthz", interval = "1s", timeout = "500ms", healthy = 1, unhealthy = 2 }}
depends-on = ["api"]

[apps.blog.services.api]
image = "ghcr.io/acme/api:1.4.2"
port = 9000
health = {{ tcp = 9000, interval = "1s", timeout = "500ms", healthy = 1, unhealthy = 2 }}

[apps.blog.services.redis]
image = "redis:7.2"
port = 6379
stateful = true
volumes = {{ redis-data = "/data" }}
health = {{ tcp = 6379, interval = "1s", timeout = "500ms", healthy = 1, unhealthy = 2 }}
"#
    )
}

/// Child processes, each in its own process group, killed with their
/// children when the test ends however it ends.
#[derive(Default)]
pub(crate) struct Processes(Vec<(String, Child)>);

impl Processes {
    pub(crate) fn spawn(&mut self, label: &str, mut command: Command, log: &Path) {
        let out = fs::File::create(log).expect("log file");
        let err = out.try_clone().expect("log file");
        command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        let child = command.spawn().expect("spawn");
        self.0.push((label.to_owned(), child));
    }

    pub(crate) fn pid(&self, label: &str) -> u32 {
        self.0
            .iter()
            .find(|(l, _)| l == label)
            .map(|(_, c)| c.id())
            .expect("a process with that label")
    }

    /// Sends `signal` to the process group of `label`.
    pub(crate) fn signal(&self, label: &str, signal: &str) {
        let status = Command::new("kill")
            .args([
                &format!("-{signal}"),
                "--",
                &format!("-{}", self.pid(label)),
            ])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{signal} {label}");
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for (_, child) in &mut self.0 {
            let _ = Command::new("kill")
                .args(["-CONT", "--", &format!("-{}", child.id())])
                .status();
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .status();
            let _ = child.wait();
        }
    }
}

impl Drop for DockerCleanup {
    fn drop(&mut self) {
        if let Ok(ids) = docker(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label=huxley.cluster={}", self.0),
        ]) {
            for id in ids.split_whitespace() {
                let _ = docker(&["rm", "--force", id]);
            }
        }
        let _ = docker(&["network", "rm", huxley::agent::runtime::NETWORK]);
        // The build network and the host rules a hook server made.
        let _ = docker(&["network", "rm", huxley::hook::sandbox::NETWORK]);
        for rule in huxley::hook::sandbox::rules(&huxley::hook::sandbox::resolvers()) {
            let _ = std::process::Command::new(rule.program)
                .args(["-w", "-D"])
                .args(&rule.args)
                .output();
        }
    }
}

/// The `[cluster]` of a test cluster named `name` in the test region, with
/// public and private zones, and its node group's bounds.
pub(crate) fn cluster_toml(name: &str, min: u32, max: u32, desired: u32) -> String {
    format!(
        r#"[cluster]
name = "{name}"
region = "{REGION}"
availability-zones = ["us-west-2a", "us-west-2b"]
public-domain = "{name}.example.com"
private-domain = "{name}.internal"
# Public names at the nodes: the load balancer has tests of its own.
ingress = "dns"

[cluster.nodes]
instance-type = "m6i.large"
min = {min}
max = {max}
desired = {desired}

"#
    )
}

/// An applied cluster with its kick.toml, tokens and nodes.
pub(crate) struct Live {
    pub(crate) name: String,
    pub(crate) dir: PathBuf,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) kick_toml: PathBuf,
    pub(crate) admin: String,
    pub(crate) nodes: Vec<String>,
    pub(crate) aws: Arc<huxley::aws::Aws>,
    /// The runtime the SDK clients were made on, kept for their lifetime.
    _runtime: tokio::runtime::Runtime,
    pub(crate) processes: Processes,
    /// Each kick's external (TLS) API, by label.
    pub(crate) externals: std::collections::BTreeMap<String, String>,
}

impl Live {
    /// Applies the test config as cluster `name` and builds its kick.toml
    /// with the containers' range moved to `range` (loopback here).
    pub(crate) fn new(name: &str, range: &str) -> Live {
        Live::with_config(name, range, &config(name), 3)
    }

    /// Applies `text` as cluster `name`, whose node group launches `count`
    /// nodes; the containers' range becomes `range`.
    pub(crate) fn with_config(name: &str, range: &str, text: &str, count: usize) -> Live {
        let emulator = Emulator::shared(&root());
        create_public_zone(&emulator.endpoint(), REGION, &format!("{name}.example.com"));
        // Plan refuses secrets SSM does not have.
        huxley::testing::store_secrets(&emulator.endpoint(), REGION, text);
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("runtime")
            .join(name);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("scratch dir");
        let file = dir.join("huxley.toml");
        fs::write(&file, text).expect("write huxley.toml");
        let mut env = emulator.env(REGION);
        env.push((
            "HUXLEY_NODE_BINARY".into(),
            stand_in_binary().display().to_string(),
        ));
        let file_arg = file.display().to_string();
        Test::new(&["apply", "--yes", "-f", &file_arg])
            .env(&env)
            .run()
            .code(0);
        let out = dir.join("out");
        Test::new(&["build", "-f", &file_arg, "-o", &out.display().to_string()])
            .run()
            .code(0);
        let kick_toml = dir.join("kick.toml");
        let text = fs::read_to_string(out.join("kick/kick.toml")).expect("kick.toml");
        let moved = text.replace(
            "container-range = \"100.64.0.0/16\"",
            &format!("container-range = \"{range}\""),
        );
        assert!(
            moved.contains(range),
            "kick.toml names the containers' range"
        );
        fs::write(&kick_toml, moved).expect("write kick.toml");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let aws = Arc::new(runtime.block_on(aws(&emulator.endpoint(), REGION)));
        // The node group's instances, as the emulator launched them.
        let nodes = runtime.block_on(async {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let nodes = aws.cluster_nodes(name).await.expect("list nodes");
                if nodes.len() >= count || Instant::now() > deadline {
                    break nodes.into_iter().map(|n| n.id).collect::<Vec<_>>();
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        assert_eq!(nodes.len(), count, "the node group launched {count} nodes");
        let admin_name = format!("/huxley/{name}/tokens/admin");
        let admin = runtime
            .block_on(aws.secure_parameters(std::slice::from_ref(&admin_name)))
            .expect("read the admin token")[&admin_name]
            .clone();
        Live {
            name: name.to_owned(),
            dir,
            env,
            kick_toml,
            admin,
            nodes,
            aws,
            _runtime: runtime,
            processes: Processes::default(),
            externals: std::collections::BTreeMap::new(),
        }
    }

    /// The runtime the SDK clients live on, to block on them.
    pub(crate) fn rt(&self) -> &tokio::runtime::Runtime {
        &self._runtime
    }

    /// Starts `huxley kick serve` as `label`; its internal API's URL.
    pub(crate) fn kick(&mut self, label: &str) -> String {
        let env = self.env.clone();
        self.kick_with(label, &env)
    }

    /// Starts a kick server that reaches AWS through `endpoint` (a
    /// [`huxley::testing::Proxy`]); returns its internal API's base URL.
    pub(crate) fn kick_via(&mut self, label: &str, endpoint: &str) -> String {
        let mut env = self.env.clone();
        env.retain(|(k, _)| k != "AWS_ENDPOINT_URL");
        env.push(("AWS_ENDPOINT_URL".into(), endpoint.to_owned()));
        self.kick_with(label, &env)
    }

    fn kick_with(&mut self, label: &str, env: &[(String, String)]) -> String {
        let (port, external) = (free_port(), free_port());
        let mut command = Test::new(&[
            "kick",
            "serve",
            "--config",
            &self.kick_toml.display().to_string(),
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--external",
            &format!("127.0.0.1:{external}"),
            "--state-dir",
            &self.dir.join(label).display().to_string(),
            "--advertise",
            "127.0.0.1",
            "--route53-rate",
            "50",
        ])
        .env(env)
        .command();
        command.env_remove("HUXLEY_NODE_BINARY");
        let log = self.dir.join(format!("{label}.log"));
        self.processes.spawn(label, command, &log);
        self.externals
            .insert(label.to_owned(), format!("https://127.0.0.1:{external}"));
        format!("http://127.0.0.1:{port}")
    }

    /// Starts `huxley node run` for node `index` as `node-<index>`, with
    /// the replicas of blog's services as processes of the test service.
    pub(crate) fn agent(&mut self, index: usize, kicks: &[String]) {
        self.process_agent(index, kicks, &["blog.web", "blog.api", "blog.redis"]);
    }

    /// Starts `huxley node run` for node `index` as `node-<index>`, with
    /// the replicas of `services` (`app.service`) as processes of the test
    /// service.
    pub(crate) fn process_agent(&mut self, index: usize, kicks: &[String], services: &[&str]) {
        let service = env!("CARGO_BIN_EXE_huxley-test-service");
        let state = self.dir.join(format!("node-{index}"));
        let mut args = vec![
            "--runtime".to_owned(),
            "processes".into(),
            "--state-dir".into(),
            state.display().to_string(),
        ];
        for name in services {
            args.push("--exec".into());
            args.push(format!("{name}={service}"));
        }
        self.agent_with(index, kicks, &args);
    }

    /// Starts `huxley node run` for node `index` running replicas as real
    /// containers through the generated units (Docker, root).
    pub(crate) fn container_agent(&mut self, index: usize, kicks: &[String]) {
        let bucket = format!("huxley-123456789012-{REGION}-{}", self.name);
        // The node's settings, as Ignition writes them: here only where
        // its containers' awslogs driver finds CloudWatch Logs.
        fs::create_dir_all(self.dir.join("etc")).expect("etc");
        fs::write(
            self.dir.join("etc/cluster.env"),
            format!("HUXLEY_LOG_OPTIONS={}\n", self.log_options()),
        )
        .expect("cluster.env");
        let etc = self.dir.join("etc").display().to_string();
        let units = self.dir.join("units").display().to_string();
        self.agent_with(
            index,
            kicks,
            &[
                "--runtime".into(),
                "units".into(),
                "--bucket".into(),
                bucket,
                "--state-dir".into(),
                "/run/huxley/replicas".into(),
                "--etc".into(),
                etc,
                "--units-dir".into(),
                units,
            ],
        );
    }

    /// What a node's units add to `docker run` here (`HUXLEY_LOG_OPTIONS`):
    /// the awslogs driver, which runs in dockerd, writes to this test's
    /// emulator.
    pub(crate) fn log_options(&self) -> String {
        let endpoint = self
            .env
            .iter()
            .find(|(k, _)| k == "AWS_ENDPOINT_URL")
            .map(|(_, v)| v.clone())
            .expect("the emulator's endpoint");
        format!("--log-opt=awslogs-endpoint={endpoint}")
    }

    /// Starts `huxley node run` for node `index` with `extra` arguments.
    pub(crate) fn agent_with(&mut self, index: usize, kicks: &[String], extra: &[String]) {
        let node = self.nodes[index].clone();
        let imds = Imds::start(&node, "us-west-2a", &format!("10.40.0.{}", 10 + index));
        let label = format!("node-{index}");
        let mut args = vec![
            "node".to_owned(),
            "run".into(),
            "--cluster".into(),
            self.name.clone(),
            "--kick".into(),
            kicks.join(","),
        ];
        args.extend(extra.iter().cloned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut command = Test::new(&args).env(&self.env).command();
        command
            .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.endpoint())
            .env("AWS_EC2_METADATA_DISABLED", "false");
        // The node's own instance role session: what it proves itself with.
        let credentials = self.rt().block_on(huxley::testing::instance_credentials(
            &self.aws, &self.name, "NodeRole", &node,
        ));
        command.envs(credentials);
        // What cluster.env gives a node: the units' `node secrets` reads it.
        command.env("HUXLEY_KICK_URL", kicks.join(","));
        let log = self.dir.join(format!("{label}.log"));
        self.processes.spawn(&label, command, &log);
    }

    pub(crate) fn logs(&self) -> String {
        let mut text = String::new();
        for entry in fs::read_dir(&self.dir).expect("dir").flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "log") {
                let log = fs::read_to_string(&path).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(25).collect();
                text.push_str(&format!("--- {}\n", path.display()));
                for line in tail.into_iter().rev() {
                    text.push_str(line);
                    text.push('\n');
                }
            }
        }
        text
    }

    pub(crate) async fn get(&self, url: &str, token: Option<&str>) -> Option<(u16, String)> {
        huxley::tls::ensure_provider();
        let client = reqwest::Client::new();
        let mut request = client.get(url).timeout(Duration::from_secs(5));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.ok()?;
        let status = response.status().as_u16();
        Some((status, response.text().await.unwrap_or_default()))
    }

    /// The kick that leads, among `kicks`, by its /healthz.
    pub(crate) async fn leader(&self, kicks: &[String]) -> Option<String> {
        for kick in kicks {
            if let Some((200, text)) = self.get(&format!("{kick}/healthz"), None).await
                && text.starts_with("ok: leader")
            {
                return Some(kick.clone());
            }
        }
        None
    }

    /// Waits (at most `limit`) until one of `kicks` leads; its URL. `what`
    /// names the wait in the failure.
    pub(crate) async fn until_leader(
        &self,
        kicks: &[String],
        limit: Duration,
        what: &str,
    ) -> String {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(leader) = self.leader(kicks).await {
                return leader;
            }
            assert!(Instant::now() < deadline, "{what}:\n{}", self.logs());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits (at most `limit`) until the leader's description satisfies
    /// `done`; returns it without its timestamp.
    pub(crate) async fn describe_until(
        &self,
        kicks: &[String],
        limit: Duration,
        what: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + limit;
        let mut last = Value::Null;
        loop {
            if let Some(leader) = self.leader(kicks).await
                && let Some((200, text)) = self
                    .get(&format!("{leader}/v1/cluster"), Some(&self.admin))
                    .await
            {
                last = serde_json::from_str(&text).expect("a description");
                if done(&last) {
                    if let Some(map) = last.as_object_mut() {
                        map.remove("generated_at");
                    }
                    return last;
                }
            }
            assert!(
                Instant::now() < deadline,
                "never {what} within {limit:?}:\n{}\n{}",
                serde_json::to_string_pretty(&last).unwrap_or_default(),
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// Waits until the private zone's A record `name` holds exactly
    /// `addresses` (DNS follows health within a check or two).
    pub(crate) async fn dns_until(&self, name: &str, addresses: &[String]) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let records = self.private_records().await;
            let found = records
                .iter()
                .find(|(n, kind, _)| n == name && kind == "A")
                .map(|(_, _, values)| {
                    let mut v = values.clone();
                    v.sort();
                    v
                });
            if found.as_deref() == Some(addresses) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{name} never held {addresses:?}: {records:?}"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// Waits until the private A record of every service of blog names
    /// exactly its instances' addresses in `description`: DNS follows
    /// health within a check, so a description can run ahead of it.
    pub(crate) async fn dns_until_described(&self, description: &Value) {
        for service in ["web", "api", "redis"] {
            let mut addresses: Vec<String> =
                description["apps"]["blog"]["services"][service]["instances"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|i| i["address"].as_str().map(str::to_owned))
                    .collect();
            addresses.sort();
            let name = format!("{service}.blog.{}.internal", self.name);
            self.dns_until(&name, &addresses).await;
        }
    }

    pub(crate) async fn private_records(&self) -> Vec<(String, String, Vec<String>)> {
        let stack = format!("huxley-{}", self.name);
        let zone = self
            .aws
            .stack_resource(&stack, "PrivateZone")
            .await
            .expect("stack resources")
            .expect("a private zone");
        let zone = zone.trim_start_matches("/hostedzone/");
        let mut records: Vec<_> = self
            .aws
            .list_records(zone)
            .await
            .expect("records")
            .into_iter()
            .filter(|r| r.kind != "SOA" && r.kind != "NS")
            .map(|r| (r.name, r.kind, r.values))
            .collect();
        records.sort();
        records
    }
}

/// Every service has its desired replicas placed, running and healthy,
/// and none on a node outside `nodes`.
pub(crate) fn all_healthy(description: &Value, nodes: &BTreeSet<String>) -> bool {
    let services = &description["apps"]["blog"]["services"];
    ["web", "api", "redis"].iter().all(|name| {
        let s = &services[*name];
        let desired = s["desired"].as_u64().unwrap_or(0);
        let placed = s["placed"].as_array().cloned().unwrap_or_default();
        let instances = s["instances"].as_array().cloned().unwrap_or_default();
        desired > 0
            && s["healthy"].as_u64() == Some(desired)
            && instances.len() as u64 == desired
            && placed.len() as u64 == desired
            && placed.iter().all(|p| {
                p["state"] == "running" && p["node"].as_str().is_some_and(|n| nodes.contains(n))
            })
            && instances
                .iter()
                .all(|i| i["node"].as_str().is_some_and(|n| nodes.contains(n)))
    })
}

/// Runs `docker` with `args`; its standard output, or the failure.
pub(crate) fn docker(args: &[&str]) -> Result<String, String> {
    let output = Command::new("docker")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run docker: {e}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "docker {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// Held by the tests that run containers on the node's `huxley` network:
/// one host has one such network, so they take turns.
pub(crate) static CONTAINERS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Removes the containers and network a test left.
pub(crate) struct DockerCleanup(pub(crate) String);
