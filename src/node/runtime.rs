//! How a node runs replicas: the seam between the agent's logic and the
//! process manager.
//!
//! - [`Systemd`] (production): installs the generated template units from
//!   the artifact manifest, writes each replica's environment file, and
//!   starts and stops `<unit>@<n>.service` with `systemctl`; the unit runs
//!   the container on the node's container network.
//! - [`Processes`] (development and tests): runs each replica as a local
//!   process given on the command line (`--exec app.service=COMMAND`), with
//!   the same environment; no systemd or Docker needed.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::Ipv4Net;

use crate::kick::assign::{AssignedReplica, ReplicaState};

/// A replica, as a node tells them apart.
pub type ReplicaKey = (String, String, u32);

/// Everything a runtime needs to start a replica.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaSpec {
    pub assigned: AssignedReplica,
    /// Its address on the node's container network.
    pub address: IpAddr,
}

impl ReplicaSpec {
    pub fn key(&self) -> ReplicaKey {
        (
            self.assigned.app.clone(),
            self.assigned.service.clone(),
            self.assigned.replica,
        )
    }

    /// The digest its image is pinned by: the release it runs.
    pub fn version(&self) -> Option<&str> {
        self.assigned
            .image
            .as_deref()
            .and_then(crate::kick::deploy::version_of)
    }

    /// `<unit>@<n>`, as systemd names the instance.
    pub fn instance(&self) -> String {
        format!("{}@{}", self.assigned.unit, self.assigned.replica)
    }

    /// The replica's environment: who it is, where it listens, where its
    /// dependencies are.
    pub fn environment(&self) -> BTreeMap<String, String> {
        let mut env = self.assigned.env.clone();
        env.insert("HUXLEY_APP".into(), self.assigned.app.clone());
        env.insert("HUXLEY_SERVICE".into(), self.assigned.service.clone());
        env.insert("HUXLEY_REPLICA".into(), self.assigned.replica.to_string());
        env.insert("HUXLEY_ADDRESS".into(), self.address.to_string());
        if let Some(image) = &self.assigned.image {
            // The unit runs `${HUXLEY_IMAGE}`: a release's image, per replica.
            env.insert("HUXLEY_IMAGE".into(), image.clone());
        }
        if let Some(port) = self.assigned.port {
            env.insert("PORT".into(), port.to_string());
        }
        env
    }
}

/// What a runtime says of a replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub state: ReplicaState,
    /// Why it failed: the exit, or the start's error (an image pull).
    pub detail: Option<String>,
    pub memory_mib: Option<u64>,
    /// CPU time used so far, in nanoseconds (the agent turns two readings
    /// into a rate).
    pub cpu_ns: Option<u64>,
}

/// The process manager behind the node agent.
pub trait Runtime: Send {
    /// Makes the node's container network match `subnet`.
    fn prepare(
        &mut self,
        subnet: Option<Ipv4Net>,
    ) -> impl Future<Output = Result<(), String>> + Send;
    /// Starts a replica; an error says why it could not.
    fn start(&mut self, replica: &ReplicaSpec) -> impl Future<Output = Result<(), String>> + Send;
    /// Stops a replica and waits for it to end.
    fn stop(&mut self, replica: &ReplicaSpec) -> impl Future<Output = Result<(), String>> + Send;
    /// What the replica is doing now.
    fn observe(&mut self, replica: &ReplicaSpec) -> impl Future<Output = Observed> + Send;
    /// Picks up new artifacts (units) when the assignment changed.
    fn refresh(&mut self) -> impl Future<Output = Result<(), String>> + Send {
        async { Ok(()) }
    }
}

// ----- processes ---------------------------------------------------------------

/// Replicas as local processes: `commands` maps `app.service` to a shell
/// command. A process that exits is restarted by the agent, as systemd's
/// `Restart=on-failure` would.
#[derive(Debug)]
pub struct Processes {
    commands: BTreeMap<String, String>,
    logs: PathBuf,
    children: BTreeMap<ReplicaKey, tokio::process::Child>,
    exited: BTreeMap<ReplicaKey, String>,
}

impl Processes {
    pub fn new(commands: BTreeMap<String, String>, logs: &Path) -> Self {
        Self {
            commands,
            logs: logs.to_owned(),
            children: BTreeMap::new(),
            exited: BTreeMap::new(),
        }
    }
}

impl Runtime for Processes {
    async fn prepare(&mut self, _subnet: Option<Ipv4Net>) -> Result<(), String> {
        Ok(())
    }

    async fn start(&mut self, replica: &ReplicaSpec) -> Result<(), String> {
        let name = format!("{}.{}", replica.assigned.app, replica.assigned.service);
        let command = self
            .commands
            .get(&name)
            .ok_or_else(|| format!("no command for {name}: pass --exec {name}=COMMAND"))?;
        std::fs::create_dir_all(&self.logs).map_err(|e| e.to_string())?;
        let log = self.logs.join(format!("{}.log", replica.instance()));
        let out = std::fs::File::create(&log)
            .map_err(|e| format!("cannot write {}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        // `exec`: the shell becomes the command, so its signals reach it.
        let child = tokio::process::Command::new("sh")
            .args(["-c", &format!("exec {command}")])
            .envs(replica.environment())
            .stdin(std::process::Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start `{command}`: {e}"))?;
        self.exited.remove(&replica.key());
        self.children.insert(replica.key(), child);
        Ok(())
    }

    async fn stop(&mut self, replica: &ReplicaSpec) -> Result<(), String> {
        self.exited.remove(&replica.key());
        let Some(mut child) = self.children.remove(&replica.key()) else {
            return Ok(());
        };
        // SIGTERM first, as `docker stop` does; SIGKILL after the timeout.
        let signal = |name: &'static str, pid: u32| async move {
            let _ = tokio::process::Command::new("kill")
                .args([name, &pid.to_string()])
                .status()
                .await;
        };
        let Some(pid) = child.id() else {
            return Ok(());
        };
        signal("-TERM", pid).await;
        if tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .is_err()
        {
            signal("-KILL", pid).await;
            let _ = child.wait().await;
        }
        Ok(())
    }

    async fn observe(&mut self, replica: &ReplicaSpec) -> Observed {
        let key = replica.key();
        if let Some(child) = self.children.get_mut(&key) {
            match child.try_wait() {
                Ok(None) => {
                    return Observed {
                        state: ReplicaState::Running,
                        detail: None,
                        memory_mib: child.id().and_then(resident_mib),
                        cpu_ns: child.id().and_then(cpu_time_ns),
                    };
                }
                Ok(Some(status)) => {
                    self.exited.insert(key.clone(), format!("exited: {status}"));
                    self.children.remove(&key);
                }
                Err(err) => {
                    self.exited.insert(key.clone(), err.to_string());
                    self.children.remove(&key);
                }
            }
        }
        not_running(&self.exited, &key)
    }
}

/// A replica with no process: failed with its last exit, or stopped.
fn not_running(exited: &BTreeMap<ReplicaKey, String>, key: &ReplicaKey) -> Observed {
    Observed {
        state: if exited.contains_key(key) {
            ReplicaState::Failed
        } else {
            ReplicaState::Stopped
        },
        detail: exited.get(key).cloned(),
        memory_mib: None,
        cpu_ns: None,
    }
}

/// A process's CPU time (user and system), from /proc; Linux counts it in
/// ticks of 1/100 s (USER_HZ).
fn cpu_time_ns(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: count from
    // after it. utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks * 10_000_000)
}

/// A process's resident memory, from /proc.
fn resident_mib(pid: u32) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096 / (1024 * 1024))
}

/// The container a generated unit runs for `replica` (`<unit>-<n>`, as
/// the unit's `docker run --name`).
fn container(replica: &ReplicaSpec) -> String {
    format!("{}-{}", replica.assigned.unit, replica.assigned.replica)
}

/// What a replica's container uses: (CPU time in ns, memory in MiB), from
/// the cgroup of its main process. A unit's own accounting does not see
/// it (the container runs under Docker, not under the unit's `docker run`
/// client). `None`s when it does not run or cannot be read.
async fn container_usage<C: Commands>(
    commands: &C,
    replica: &ReplicaSpec,
) -> (Option<u64>, Option<u64>) {
    let args = ["inspect", "--format", "{{.State.Pid}}", &container(replica)].map(str::to_owned);
    let pid = commands
        .run("docker", &args)
        .await
        .ok()
        .and_then(|out| out.trim().parse::<u32>().ok())
        .filter(|pid| *pid > 0);
    match pid {
        Some(pid) => cgroup_usage(pid, Path::new("/")),
        None => (None, None),
    }
}

/// A process's cgroup's CPU time (ns) and memory (MiB), under `root`
/// (`/` but in tests): cgroup v1 (`cpuacct`, `memory`) when the process
/// is in v1 controllers, else v2 (`cpu.stat`, `memory.current`).
fn cgroup_usage(pid: u32, root: &Path) -> (Option<u64>, Option<u64>) {
    let Ok(text) = std::fs::read_to_string(root.join(format!("proc/{pid}/cgroup"))) else {
        return (None, None);
    };
    let (mut unified, mut cpuacct, mut memory) = (None, None, None);
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let path = path.trim_start_matches('/');
        if id == "0" && controllers.is_empty() {
            unified = Some(path);
        }
        for controller in controllers.split(',') {
            match controller {
                "cpuacct" => cpuacct = Some(path),
                "memory" => memory = Some(path),
                _ => {}
            }
        }
    }
    let read = |relative: String| -> Option<String> {
        std::fs::read_to_string(root.join("sys/fs/cgroup").join(relative)).ok()
    };
    let number = |text: Option<String>| text.and_then(|t| t.trim().parse::<u64>().ok());
    let v2_cpu = |path: &str| {
        read(format!("{path}/cpu.stat")).and_then(|stat| {
            stat.lines()
                .find_map(|l| l.strip_prefix("usage_usec "))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(|usec| usec * 1000)
        })
    };
    let cpu = cpuacct
        .and_then(|p| number(read(format!("cpuacct/{p}/cpuacct.usage"))))
        .or_else(|| unified.and_then(v2_cpu));
    let bytes = memory
        .and_then(|p| number(read(format!("memory/{p}/memory.usage_in_bytes"))))
        .or_else(|| unified.and_then(|p| number(read(format!("{p}/memory.current")))));
    (cpu, bytes.map(|b| b / (1024 * 1024)))
}

// ----- systemd -----------------------------------------------------------------

/// Runs commands: the seam under [`Systemd`], so the exact `systemctl` and
/// `docker` calls are tested without systemd as PID 1.
pub trait Commands: Send + Sync {
    fn run(
        &self,
        program: &str,
        args: &[String],
    ) -> impl Future<Output = Result<String, String>> + Send;
}

/// The real thing: runs the program, its standard output or its error.
#[derive(Debug, Clone, Copy, Default)]
pub struct Host;

impl Commands for Host {
    async fn run(&self, program: &str, args: &[String]) -> Result<String, String> {
        let output = tokio::process::Command::new(program)
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .map_err(|e| format!("cannot run {program}: {e}"))?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(format!(
                "`{program} {}` failed ({}): {}",
                args.join(" "),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ))
        }
    }
}

/// Where the services' plain env files go (the units name this path).
pub const SERVICE_ENV_DIR: &str = "/etc/huxley/units";

/// Where the node keeps kick.toml (read by `huxley node secrets`).
pub const KICK_TOML: &str = "/etc/huxley/kick.toml";

/// The name of the node's container network in Docker, and its bridge.
pub const NETWORK: &str = "huxley";
pub const BRIDGE: &str = "huxley0";

/// Replicas as systemd template units running containers.
#[derive(Debug)]
pub struct Systemd<C: Commands> {
    pub commands: C,
    /// Where replicas' environment files go (`<unit>-<n>.env`), read by the
    /// units (`EnvironmentFile=` and `docker run --env-file`).
    pub replicas_dir: PathBuf,
    /// The units the agent installs from the manifest: file name → text.
    pub units: BTreeMap<String, String>,
    pub units_dir: PathBuf,
    /// Where the services' plain env files go ([`SERVICE_ENV_DIR`]).
    pub env_dir: PathBuf,
    /// Where kick.toml goes ([`KICK_TOML`]), for `huxley node secrets`.
    pub kick_toml: PathBuf,
    subnet: Option<Ipv4Net>,
    /// Where the artifact manifest is: the units come from it.
    pub source: Option<(std::sync::Arc<crate::aws::Aws>, String)>,
    /// Whether systemd is told of new units (not when the agent runs them).
    pub reload: bool,
}

impl<C: Commands> Systemd<C> {
    pub fn new(commands: C, replicas_dir: &Path, units_dir: &Path) -> Self {
        Self {
            commands,
            replicas_dir: replicas_dir.to_owned(),
            units: BTreeMap::new(),
            units_dir: units_dir.to_owned(),
            env_dir: PathBuf::from(SERVICE_ENV_DIR),
            kick_toml: PathBuf::from(KICK_TOML),
            subnet: None,
            source: None,
            reload: true,
        }
    }

    async fn systemctl(&self, args: &[&str]) -> Result<String, String> {
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        self.commands.run("systemctl", &args).await
    }

    /// Writes the units that changed; reloads systemd when any did.
    pub async fn install_units(&mut self, units: BTreeMap<String, String>) -> Result<(), String> {
        let mut changed = false;
        for (name, text) in &units {
            // Plain env files beside the unit, where `docker run --env-file`
            // reads them; units where systemd does.
            let path = if name.ends_with(".env") {
                self.env_dir.join(name)
            } else {
                self.units_dir.join(name)
            };
            if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
                write_atomically(&path, text.as_bytes(), 0o644)?;
                changed = true;
            }
        }
        self.units = units;
        if changed && self.reload {
            self.systemctl(&["daemon-reload"]).await?;
        }
        Ok(())
    }

    fn env_file(&self, replica: &ReplicaSpec) -> PathBuf {
        self.replicas_dir.join(format!(
            "{}-{}.env",
            replica.assigned.unit, replica.assigned.replica
        ))
    }
}

impl<C: Commands> Runtime for Systemd<C> {
    async fn prepare(&mut self, subnet: Option<Ipv4Net>) -> Result<(), String> {
        if subnet == self.subnet {
            return Ok(());
        }
        let Some(subnet) = subnet else {
            return Ok(());
        };
        let args = |words: &[&str]| words.iter().map(|w| (*w).to_owned()).collect::<Vec<_>>();
        let inspect = self
            .commands
            .run(
                "docker",
                &args(&[
                    "network",
                    "inspect",
                    "--format",
                    "{{range .IPAM.Config}}{{.Subnet}}{{end}}",
                    NETWORK,
                ]),
            )
            .await;
        match inspect {
            Ok(current) if current.trim() == subnet.to_string() => {}
            found => {
                if found.is_ok() {
                    // Another subnet: the node was given a new one.
                    self.commands
                        .run("docker", &args(&["network", "rm", NETWORK]))
                        .await?;
                }
                let gateway = subnet
                    .hosts()
                    .next()
                    .map(|g| g.to_string())
                    .unwrap_or_default();
                self.commands
                    .run(
                        "docker",
                        &args(&[
                            "network",
                            "create",
                            "--driver",
                            "bridge",
                            "--subnet",
                            &subnet.to_string(),
                            "--gateway",
                            &gateway,
                            "--opt",
                            &format!("com.docker.network.bridge.name={BRIDGE}"),
                            NETWORK,
                        ]),
                    )
                    .await?;
            }
        }
        self.subnet = Some(subnet);
        Ok(())
    }

    async fn refresh(&mut self) -> Result<(), String> {
        let Some((aws, bucket)) = self.source.clone() else {
            return Ok(());
        };
        let manifest = crate::plan::manifest::Manifest::read(&aws, &bucket).await?;
        // The service units and their plain env files; the agents' own
        // units come with the node's boot config.
        let units = manifest
            .files
            .iter()
            .filter_map(|(path, entry)| {
                let name = path.strip_prefix("units/")?;
                (name.contains("@.service") || name.ends_with(".env"))
                    .then(|| (name.to_owned(), entry.content.clone()))
            })
            .collect();
        if let Some(kick) = manifest.files.get("kick/kick.toml") {
            write_atomically(&self.kick_toml, kick.content.as_bytes(), 0o644)?;
        }
        self.install_units(units).await
    }

    async fn start(&mut self, replica: &ReplicaSpec) -> Result<(), String> {
        let unit = format!("{}@.service", replica.assigned.unit);
        if !self.units.contains_key(&unit) {
            return Err(format!("the manifest has no unit {unit}"));
        }
        let mut text = String::from("# Written by the huxley node agent for this replica.\n");
        for (key, value) in replica.environment() {
            text.push_str(&format!("{key}={value}\n"));
        }
        write_atomically(&self.env_file(replica), text.as_bytes(), 0o600)?;
        self.systemctl(&[
            "start",
            "--no-block",
            &format!("{}.service", replica.instance()),
        ])
        .await
        .map(|_| ())
    }

    async fn stop(&mut self, replica: &ReplicaSpec) -> Result<(), String> {
        self.systemctl(&["stop", &format!("{}.service", replica.instance())])
            .await?;
        let _ = std::fs::remove_file(self.env_file(replica));
        Ok(())
    }

    async fn observe(&mut self, replica: &ReplicaSpec) -> Observed {
        let unit = format!("{}.service", replica.instance());
        let shown = self
            .systemctl(&[
                "show",
                &unit,
                "--property=ActiveState,SubState,Result,ExecMainStatus,MemoryCurrent,CPUUsageNSec",
            ])
            .await
            .unwrap_or_default();
        let properties: BTreeMap<&str, &str> = shown
            .lines()
            .filter_map(|line| line.split_once('='))
            .collect();
        let memory_mib = properties
            .get("MemoryCurrent")
            .and_then(|m| m.parse::<u64>().ok())
            .map(|bytes| bytes / (1024 * 1024));
        let active = matches!(
            properties.get("ActiveState").copied(),
            Some("active" | "activating" | "reloading")
        );
        // The container's own use when it runs one; else the unit's.
        let (container_cpu, container_memory) = if active {
            container_usage(&self.commands, replica).await
        } else {
            (None, None)
        };
        let cpu_ns = container_cpu.or_else(|| {
            properties
                .get("CPUUsageNSec")
                .and_then(|n| n.parse::<u64>().ok())
        });
        let memory_mib = container_memory.or(memory_mib);
        match properties.get("ActiveState").copied() {
            Some("active") => Observed {
                state: ReplicaState::Running,
                detail: None,
                memory_mib,
                cpu_ns,
            },
            Some("activating" | "reloading") => Observed {
                state: ReplicaState::Starting,
                detail: None,
                memory_mib,
                cpu_ns,
            },
            Some("failed") | Some("inactive") if properties.get("Result") != Some(&"success") => {
                // The unit's own last words say why: an image that cannot
                // be pulled, a container that exits.
                let journal = self
                    .commands
                    .run(
                        "journalctl",
                        &[
                            "--unit",
                            &unit,
                            "--lines",
                            "3",
                            "--no-pager",
                            "--output",
                            "cat",
                        ]
                        .map(str::to_owned),
                    )
                    .await
                    .unwrap_or_default();
                let status = properties.get("ExecMainStatus").copied().unwrap_or("?");
                let result = properties.get("Result").copied().unwrap_or("?");
                let last = journal
                    .trim()
                    .lines()
                    .last()
                    .unwrap_or("")
                    .trim()
                    .to_owned();
                Observed {
                    state: ReplicaState::Failed,
                    detail: Some(if last.is_empty() {
                        format!("{result}, exit status {status}")
                    } else {
                        format!("{result}, exit status {status}: {last}")
                    }),
                    memory_mib: None,
                    cpu_ns: None,
                }
            }
            _ => Observed {
                state: ReplicaState::Stopped,
                detail: None,
                memory_mib: None,
                cpu_ns: None,
            },
        }
    }
}

// ----- the units, without systemd ----------------------------------------------

/// The generated template units run as systemd would run them, by the
/// agent itself: for hosts where systemd is not PID 1 (a development
/// machine, a container, CI). The unit's `Environment=` and
/// `EnvironmentFile=` make the environment, `ExecStartPre=` runs first
/// (`-` ignores a failure), `ExecStart=` is the replica, `ExecStop=` and
/// `ExecStopPost=` stop it; `%i`, `%p`, `%%`, `${VAR}` and `$$` are
/// expanded as systemd does. So the containers run through the exact
/// `docker run` line the unit holds.
#[derive(Debug)]
pub struct Units<C: Commands> {
    pub systemd: Systemd<C>,
    children: BTreeMap<ReplicaKey, (tokio::process::Child, PathBuf)>,
    exited: BTreeMap<ReplicaKey, String>,
}

impl<C: Commands> Units<C> {
    pub fn new(mut systemd: Systemd<C>) -> Self {
        systemd.reload = false;
        Self {
            systemd,
            children: BTreeMap::new(),
            exited: BTreeMap::new(),
        }
    }
}

/// What the agent takes from a unit file.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct UnitFile {
    pub environment: Vec<(String, String)>,
    /// Paths, and whether a missing one is fine (`-`).
    pub environment_files: Vec<(String, bool)>,
    /// Command lines, and whether a failure is ignored (`-`).
    pub start_pre: Vec<(String, bool)>,
    pub start: String,
    pub stop: Vec<(String, bool)>,
    pub stop_post: Vec<(String, bool)>,
}

impl UnitFile {
    /// Reads the `[Service]` keys the agent runs; lines ending in `\`
    /// continue on the next.
    pub fn parse(text: &str) -> UnitFile {
        let mut unit = UnitFile::default();
        let mut logical = String::new();
        let mut lines = Vec::new();
        for line in text.lines() {
            let trimmed = line.trim();
            if logical.is_empty() && (trimmed.starts_with('#') || trimmed.starts_with(';')) {
                continue;
            }
            match trimmed.strip_suffix('\\') {
                Some(head) => {
                    logical.push_str(head);
                    logical.push(' ');
                }
                None => {
                    logical.push_str(trimmed);
                    lines.push(std::mem::take(&mut logical));
                }
            }
        }
        let optional = |value: &str| match value.strip_prefix('-') {
            Some(rest) => (rest.trim().to_owned(), true),
            None => (value.trim().to_owned(), false),
        };
        for line in lines {
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            match key.trim() {
                "Environment" => {
                    if let Some((k, v)) = value.split_once('=') {
                        unit.environment
                            .push((k.trim().to_owned(), v.trim().to_owned()));
                    }
                }
                "EnvironmentFile" => unit.environment_files.push(optional(value)),
                "ExecStartPre" => unit.start_pre.push(optional(value)),
                "ExecStart" => unit.start = value.trim().to_owned(),
                "ExecStop" => unit.stop.push(optional(value)),
                "ExecStopPost" => unit.stop_post.push(optional(value)),
                _ => {}
            }
        }
        unit
    }

    /// The environment of replica `instance` of unit `prefix`:
    /// `Environment=` first, then each file's lines.
    pub fn environment(
        &self,
        instance: &str,
        prefix: &str,
    ) -> Result<BTreeMap<String, String>, String> {
        let mut env: BTreeMap<String, String> = self.environment.iter().cloned().collect();
        for (path, optional) in &self.environment_files {
            let path = specifiers(path, instance, prefix);
            match std::fs::read_to_string(&path) {
                Ok(text) => {
                    for line in text.lines() {
                        let line = line.trim();
                        if line.is_empty() || line.starts_with('#') {
                            continue;
                        }
                        if let Some((k, v)) = line.split_once('=') {
                            env.insert(k.trim().to_owned(), v.to_owned());
                        }
                    }
                }
                Err(_) if *optional => {}
                Err(err) => return Err(format!("cannot read {path}: {err}")),
            }
        }
        Ok(env)
    }
}

/// `%i`, `%p` and `%%` expanded.
fn specifiers(line: &str, instance: &str, prefix: &str) -> String {
    let mut specified = String::new();
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '%' {
            match chars.next() {
                Some('i') => specified.push_str(instance),
                Some('p') => specified.push_str(prefix),
                Some('%') => specified.push('%'),
                Some(other) => {
                    specified.push('%');
                    specified.push(other);
                }
                None => specified.push('%'),
            }
        } else {
            specified.push(c);
        }
    }
    specified
}

/// One command line as words, with `%i`/`%p`/`%%` and `${VAR}`/`$$`
/// expanded, quotes and backslash escapes honoured.
pub fn command_words(
    line: &str,
    instance: &str,
    prefix: &str,
    env: &BTreeMap<String, String>,
) -> Vec<String> {
    let specified = specifiers(line, instance, prefix);
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = specified.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' | '\'' if quote.is_none_or(|q| q == c) => {
                quote = if quote.is_some() { None } else { Some(c) };
                in_word = true;
            }
            '\\' => {
                if let Some(next) = chars.next() {
                    word.push(next);
                }
                in_word = true;
            }
            '$' => match chars.peek() {
                Some('$') => {
                    chars.next();
                    word.push('$');
                    in_word = true;
                }
                Some('{') => {
                    chars.next();
                    let name: String = chars.by_ref().take_while(|c| *c != '}').collect();
                    word.push_str(env.get(&name).map_or("", String::as_str));
                    in_word = true;
                }
                _ => {
                    word.push('$');
                    in_word = true;
                }
            },
            c if c.is_whitespace() && quote.is_none() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

impl<C: Commands> Units<C> {
    fn unit(&self, replica: &ReplicaSpec) -> Result<UnitFile, String> {
        let name = format!("{}@.service", replica.assigned.unit);
        self.systemd
            .units
            .get(&name)
            .map(|text| UnitFile::parse(text))
            .ok_or_else(|| format!("the manifest has no unit {name}"))
    }

    /// Runs the lines one after the other; a failing line stops them unless
    /// it may fail.
    async fn run_lines(
        &self,
        replica: &ReplicaSpec,
        lines: &[(String, bool)],
    ) -> Result<(), String> {
        let unit = self.unit(replica)?;
        let instance = replica.assigned.replica.to_string();
        let env = unit.environment(&instance, &replica.assigned.unit)?;
        for (line, may_fail) in lines {
            let words = command_words(
                line,
                &replica.assigned.replica.to_string(),
                &replica.assigned.unit,
                &env,
            );
            let Some((program, args)) = words.split_first() else {
                continue;
            };
            let result = self.systemd.commands.run(program, args).await;
            if let Err(err) = result
                && !may_fail
            {
                return Err(err);
            }
        }
        Ok(())
    }
}

impl<C: Commands> Runtime for Units<C> {
    async fn prepare(&mut self, subnet: Option<Ipv4Net>) -> Result<(), String> {
        self.systemd.prepare(subnet).await
    }

    async fn refresh(&mut self) -> Result<(), String> {
        self.systemd.refresh().await
    }

    async fn start(&mut self, replica: &ReplicaSpec) -> Result<(), String> {
        let mut text = String::from("# Written by the huxley node agent for this replica.\n");
        for (key, value) in replica.environment() {
            text.push_str(&format!("{key}={value}\n"));
        }
        write_atomically(&self.systemd.env_file(replica), text.as_bytes(), 0o600)?;
        let unit = self.unit(replica)?;
        self.run_lines(replica, &unit.start_pre).await?;
        let instance = replica.assigned.replica.to_string();
        let env = unit.environment(&instance, &replica.assigned.unit)?;
        let words = command_words(
            &unit.start,
            &replica.assigned.replica.to_string(),
            &replica.assigned.unit,
            &env,
        );
        let (program, args) = words
            .split_first()
            .ok_or_else(|| format!("{}@.service has no ExecStart", replica.assigned.unit))?;
        std::fs::create_dir_all(&self.systemd.replicas_dir).map_err(|e| e.to_string())?;
        let log = self
            .systemd
            .replicas_dir
            .join(format!("{}.log", replica.instance()));
        let out = std::fs::File::create(&log)
            .map_err(|e| format!("cannot write {}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let child = tokio::process::Command::new(program)
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot run {program}: {e}"))?;
        self.exited.remove(&replica.key());
        self.children.insert(replica.key(), (child, log));
        Ok(())
    }

    async fn stop(&mut self, replica: &ReplicaSpec) -> Result<(), String> {
        self.exited.remove(&replica.key());
        let unit = self.unit(replica)?;
        let stopped = self.run_lines(replica, &unit.stop).await;
        if let Some((mut child, _)) = self.children.remove(&replica.key())
            && tokio::time::timeout(Duration::from_secs(45), child.wait())
                .await
                .is_err()
        {
            let _ = child.kill().await;
        }
        let _ = self.run_lines(replica, &unit.stop_post).await;
        let _ = std::fs::remove_file(self.systemd.env_file(replica));
        stopped
    }

    async fn observe(&mut self, replica: &ReplicaSpec) -> Observed {
        let key = replica.key();
        if let Some((child, log)) = self.children.get_mut(&key) {
            match child.try_wait() {
                Ok(None) => {
                    let (cpu_ns, memory_mib) =
                        container_usage(&self.systemd.commands, replica).await;
                    return Observed {
                        state: ReplicaState::Running,
                        detail: None,
                        memory_mib,
                        cpu_ns,
                    };
                }
                Ok(Some(status)) => {
                    // The process's last words say why: a pull that failed,
                    // a container that exited.
                    let said = std::fs::read_to_string(&*log).unwrap_or_default();
                    let last = last_words(&said);
                    let detail = match status.code() {
                        Some(code) if last.is_empty() => format!("exited with status {code}"),
                        Some(code) => format!("exited with status {code}: {last}"),
                        None => format!("ended by a signal: {status}"),
                    };
                    self.exited.insert(key.clone(), detail);
                    self.children.remove(&key);
                }
                Err(err) => {
                    self.exited.insert(key.clone(), err.to_string());
                    self.children.remove(&key);
                }
            }
        }
        not_running(&self.exited, &key)
    }
}

/// The line of a failed process's output that says why: the last one that
/// reads as an error (Docker ends a failed pull with a usage hint), else
/// the last one.
pub fn last_words(output: &str) -> String {
    let lines: Vec<&str> = output
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines
        .iter()
        .rev()
        .find(|l| {
            let lower = l.to_ascii_lowercase();
            lower.contains("error") || lower.contains("denied") || lower.contains("not found")
        })
        .or(lines.last())
        .map_or_else(String::new, |l| (*l).to_owned())
}

/// Writes a file whole (a temporary sibling, then a rename) with `mode`.
pub fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> Result<(), String> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let parent = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)
        .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    let temporary = parent.join(format!(
        ".{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file")
    ));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&temporary)
        .and_then(|mut file| {
            file.write_all(bytes)?;
            file.sync_all()
        })
        .and_then(|()| std::fs::rename(&temporary, path));
    written.map_err(|e| {
        let _ = std::fs::remove_file(&temporary);
        format!("cannot write {}: {e}", path.display())
    })
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    type Answer = Result<String, String>;

    /// Records every command and answers from a table (by prefix).
    #[derive(Debug, Clone, Default)]
    struct Recorder {
        calls: Arc<Mutex<Vec<String>>>,
        answers: Arc<Mutex<Vec<(String, Answer)>>>,
    }

    impl Recorder {
        fn answer(&self, prefix: &str, answer: Result<&str, &str>) {
            self.answers.lock().expect("answers").push((
                prefix.to_owned(),
                answer.map(str::to_owned).map_err(str::to_owned),
            ));
        }

        fn take(&self) -> Vec<String> {
            std::mem::take(&mut *self.calls.lock().expect("calls"))
        }
    }

    impl Commands for Recorder {
        async fn run(&self, program: &str, args: &[String]) -> Result<String, String> {
            let line = format!("{program} {}", args.join(" "));
            self.calls.lock().expect("calls").push(line.clone());
            self.answers
                .lock()
                .expect("answers")
                .iter()
                .find(|(prefix, _)| line.starts_with(prefix.as_str()))
                .map_or(Ok(String::new()), |(_, answer)| answer.clone())
        }
    }

    fn replica() -> ReplicaSpec {
        ReplicaSpec {
            assigned: AssignedReplica {
                app: "blog".into(),
                service: "web".into(),
                replica: 2,
                unit: "blog-web".into(),
                image: None,
                port: Some(8080),
                host_port: Some(80),
                env: BTreeMap::from([(
                    "API_URL".into(),
                    "http://api.blog.acme.internal:9000".into(),
                )]),
            },
            address: "100.64.3.5".parse().expect("ip"),
        }
    }

    #[test]
    fn a_unit_reads_back_as_systemd_would_run_it() {
        let text = "[Service]\nEnvironment=HUXLEY_IMAGE=web:1\nEnvironmentFile=-/nonexistent/x.env\nExecStartPre=-/usr/bin/docker rm --force blog-web-%i\nExecStart=/usr/bin/docker run --rm --name %p-%i \\\n  --ip ${HUXLEY_ADDRESS} --label \"a b\" \\\n  ${HUXLEY_IMAGE} sh -c 'echo $$HOME 100%%'\nExecStop=/usr/bin/docker stop --time 30 blog-web-%i\n";
        let unit = UnitFile::parse(text);
        assert_eq!(
            unit.environment_files,
            [("/nonexistent/x.env".to_owned(), true)]
        );
        assert_eq!(
            unit.start_pre,
            [("/usr/bin/docker rm --force blog-web-%i".to_owned(), true)]
        );
        let mut env = unit
            .environment("3", "blog-web")
            .expect("a missing optional file is fine");
        env.insert("HUXLEY_ADDRESS".into(), "100.64.0.2".into());
        assert_eq!(
            command_words(&unit.start, "3", "blog-web", &env),
            [
                "/usr/bin/docker",
                "run",
                "--rm",
                "--name",
                "blog-web-3",
                "--ip",
                "100.64.0.2",
                "--label",
                "a b",
                "web:1",
                "sh",
                "-c",
                "echo $HOME 100%",
            ]
        );
        assert_eq!(
            command_words(&unit.stop[0].0, "3", "blog-web", &env),
            ["/usr/bin/docker", "stop", "--time", "30", "blog-web-3"]
        );
    }

    #[test]
    fn a_containers_use_is_read_from_its_cgroup_v1_or_v2() {
        let root = std::env::temp_dir().join(format!("huxley-cgroup-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let write = |path: &str, text: &str| {
            let file = root.join(path);
            std::fs::create_dir_all(file.parent().expect("parent")).expect("dir");
            std::fs::write(file, text).expect("write");
        };
        // cgroup v2, as Flatcar runs Docker (systemd driver).
        write("proc/10/cgroup", "0::/system.slice/docker-abc.scope\n");
        write(
            "sys/fs/cgroup/system.slice/docker-abc.scope/cpu.stat",
            "usage_usec 2500000\nuser_usec 2000000\n",
        );
        write(
            "sys/fs/cgroup/system.slice/docker-abc.scope/memory.current",
            "104857600\n",
        );
        assert_eq!(cgroup_usage(10, &root), (Some(2_500_000_000), Some(100)));
        // cgroup v1 (a hybrid host lists an empty v2 line too).
        write(
            "proc/11/cgroup",
            "4:memory:/docker/def\n2:cpu,cpuacct:/docker/def\n0::/\n",
        );
        write("sys/fs/cgroup/cpuacct/docker/def/cpuacct.usage", "7000\n");
        write(
            "sys/fs/cgroup/memory/docker/def/memory.usage_in_bytes",
            "2097152\n",
        );
        assert_eq!(cgroup_usage(11, &root), (Some(7000), Some(2)));
        // Not running: nothing.
        assert_eq!(cgroup_usage(12, &root), (None, None));
        let _ = std::fs::remove_dir_all(&root);
    }

    #[tokio::test]
    async fn systemd_is_driven_with_exactly_these_calls() {
        let dir = std::env::temp_dir().join(format!("huxley-systemd-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let recorder = Recorder::default();
        let mut systemd = Systemd::new(recorder.clone(), &dir.join("run"), &dir.join("units"));
        systemd.env_dir = dir.join("env");
        let units = BTreeMap::from([
            ("blog-web@.service".to_owned(), "[Service]\n".to_owned()),
            ("blog-web.env".to_owned(), "RUST_LOG=info\n".to_owned()),
        ]);
        systemd
            .install_units(units.clone())
            .await
            .expect("installed");
        assert_eq!(recorder.take(), ["systemctl daemon-reload"]);
        assert!(
            dir.join("units/blog-web@.service").exists() && dir.join("env/blog-web.env").exists()
        );
        // The same units again: nothing to reload.
        systemd.install_units(units).await.expect("installed");
        assert!(recorder.take().is_empty());

        // The node's network: created when Docker does not have it.
        recorder.answer("docker network inspect", Err("no such network"));
        let subnet: Ipv4Net = "100.64.3.0/24".parse().expect("subnet");
        systemd.prepare(Some(subnet)).await.expect("network");
        assert_eq!(
            recorder.take(),
            [
                "docker network inspect --format {{range .IPAM.Config}}{{.Subnet}}{{end}} huxley",
                "docker network create --driver bridge --subnet 100.64.3.0/24 --gateway 100.64.3.1 --opt com.docker.network.bridge.name=huxley0 huxley",
            ]
        );

        systemd.start(&replica()).await.expect("started");
        assert_eq!(
            recorder.take(),
            ["systemctl start --no-block blog-web@2.service"]
        );
        let env_file = dir.join("run/blog-web-2.env");
        let written = std::fs::read_to_string(&env_file).expect("the replica's env file");
        assert!(written.contains("HUXLEY_ADDRESS=100.64.3.5\n"), "{written}");
        assert!(
            written.contains("API_URL=http://api.blog.acme.internal:9000\n"),
            "{written}"
        );
        assert!(written.contains("PORT=8080\n"), "{written}");
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&env_file)
            .expect("meta")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);

        // A unit that failed to pull its image: the journal's last line says so.
        recorder.answer(
            "systemctl show",
            Ok("ActiveState=failed\nSubState=failed\nResult=exit-code\nExecMainStatus=125\n"),
        );
        recorder.answer(
            "journalctl",
            Ok("Unable to find image 'web:abc' locally\nError response from daemon: pull access denied for web\n"),
        );
        let observed = systemd.observe(&replica()).await;
        assert_eq!(observed.state, ReplicaState::Failed);
        let detail = observed.detail.expect("a reason");
        assert_eq!(
            last_words(
                "Unable to find image 'x' locally\ndocker: Error response from daemon: manifest unknown.\nSee 'docker run --help'.\n"
            ),
            "docker: Error response from daemon: manifest unknown."
        );
        assert!(
            detail.contains("exit status 125") && detail.contains("pull access denied"),
            "{detail}"
        );
        assert_eq!(
            recorder.take(),
            [
                "systemctl show blog-web@2.service --property=ActiveState,SubState,Result,ExecMainStatus,MemoryCurrent,CPUUsageNSec",
                "journalctl --unit blog-web@2.service --lines 3 --no-pager --output cat",
            ]
        );

        // A running unit: its container's use, by the container's pid.
        recorder.answers.lock().expect("answers").clear();
        recorder.answer(
            "systemctl show",
            Ok("ActiveState=active\nSubState=running\nResult=success\nMemoryCurrent=1048576\nCPUUsageNSec=5\n"),
        );
        recorder.answer("docker inspect", Ok("0\n"));
        let observed = systemd.observe(&replica()).await;
        assert_eq!(observed.state, ReplicaState::Running);
        // No container pid: the unit's own accounting.
        assert_eq!((observed.cpu_ns, observed.memory_mib), (Some(5), Some(1)));
        assert_eq!(
            recorder.take(),
            [
                "systemctl show blog-web@2.service --property=ActiveState,SubState,Result,ExecMainStatus,MemoryCurrent,CPUUsageNSec",
                "docker inspect --format {{.State.Pid}} blog-web-2",
            ]
        );

        systemd.stop(&replica()).await.expect("stopped");
        assert_eq!(recorder.take(), ["systemctl stop blog-web@2.service"]);
        assert!(!env_file.exists(), "the env file goes with the replica");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
