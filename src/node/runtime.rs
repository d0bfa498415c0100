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
        let child = tokio::process::Command::new("sh")
            .args(["-c", command])
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
        if let Some(pid) = child.id() {
            let _ = tokio::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
        }
        match tokio::time::timeout(Duration::from_secs(10), child.wait()).await {
            Ok(_) => Ok(()),
            Err(_) => child.kill().await.map_err(|e| e.to_string()),
        }
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
        Observed {
            state: if self.exited.contains_key(&key) {
                ReplicaState::Failed
            } else {
                ReplicaState::Stopped
            },
            detail: self.exited.get(&key).cloned(),
            memory_mib: None,
        }
    }
}

/// A process's resident memory, from /proc.
fn resident_mib(pid: u32) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096 / (1024 * 1024))
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
    subnet: Option<Ipv4Net>,
    /// Where the artifact manifest is: the units come from it.
    pub source: Option<(std::sync::Arc<crate::aws::Aws>, String)>,
}

impl<C: Commands> Systemd<C> {
    pub fn new(commands: C, replicas_dir: &Path, units_dir: &Path) -> Self {
        Self {
            commands,
            replicas_dir: replicas_dir.to_owned(),
            units: BTreeMap::new(),
            units_dir: units_dir.to_owned(),
            subnet: None,
            source: None,
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
                Path::new(SERVICE_ENV_DIR).join(name)
            } else {
                self.units_dir.join(name)
            };
            if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
                write_atomically(&path, text.as_bytes(), 0o644)?;
                changed = true;
            }
        }
        self.units = units;
        if changed {
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
        let manifest = aws
            .get_object(&bucket, crate::plan::manifest::MANIFEST_KEY)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("s3://{bucket} has no manifest: run `huxley apply`"))?;
        let manifest: crate::plan::manifest::Manifest = serde_json::from_slice(&manifest)
            .map_err(|e| format!("the manifest does not parse: {e}"))?;
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
            write_atomically(Path::new(KICK_TOML), kick.content.as_bytes(), 0o644)?;
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
                "--property=ActiveState,SubState,Result,ExecMainStatus,MemoryCurrent",
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
        match properties.get("ActiveState").copied() {
            Some("active") => Observed {
                state: ReplicaState::Running,
                detail: None,
                memory_mib,
            },
            Some("activating" | "reloading") => Observed {
                state: ReplicaState::Starting,
                detail: None,
                memory_mib,
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
                }
            }
            _ => Observed {
                state: ReplicaState::Stopped,
                detail: None,
                memory_mib: None,
            },
        }
    }
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
