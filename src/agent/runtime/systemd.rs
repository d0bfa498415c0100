//! Replicas as systemd template units running containers (production):
//! the generated units installed from the manifest, each replica's
//! environment file, `systemctl` to start and stop `<unit>@<n>.service`,
//! and each container's use read from its cgroup.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;

use super::{Commands, Observed, ReplicaSpec, Runtime};
use crate::agent::runs::{RunProcess, RunSpec};
use crate::agent::runtime::BRIDGE;
use crate::agent::runtime::KICK_TOML;
use crate::agent::runtime::NETWORK;
use crate::agent::runtime::SERVICE_ENV_DIR;
use crate::agent::unitfile::{UnitFile, command_words};
use crate::files::write_atomically;
use crate::spec::assignment::ReplicaState;

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
    /// Whether this machine runs the kick and hook servers (a control
    /// machine), which a new kick.toml restarts.
    pub daemons: bool,
    /// Docker's configuration directory for the units ([`DOCKER_CONFIG`]).
    pub docker_config: PathBuf,
    /// When each registry's authorization was last written.
    logins: BTreeMap<String, std::time::Instant>,
}

/// A run's command line from its unit's `ExecStart=`: the `docker run`
/// line up to the image, without `--publish` (the replicas hold the
/// service's host port) and with Docker's `local` log driver instead of
/// the unit's (a run's output goes to its caller through kick, not to
/// the app's log group, where whoever reads the logs would read what
/// `huxley run -- printenv` printed), then the run's command, word for
/// word.
pub fn run_words(
    start: &str,
    instance: &str,
    prefix: &str,
    env: &BTreeMap<String, String>,
    command: &[String],
) -> Result<Vec<String>, String> {
    const IMAGE: &str = "${HUXLEY_IMAGE}";
    let Some((head, _)) = start.split_once(IMAGE) else {
        return Err(format!("{prefix}@.service runs no {IMAGE}"));
    };
    let words = command_words(&format!("{head}{IMAGE}"), instance, prefix, env);
    let mut kept = Vec::with_capacity(words.len() + command.len());
    let mut skip = false;
    for word in words {
        if std::mem::take(&mut skip) {
            continue;
        }
        if matches!(
            word.as_str(),
            "--publish" | "-p" | "--log-driver" | "--log-opt"
        ) {
            skip = true;
            continue;
        }
        if word.starts_with("--publish=")
            || word.starts_with("--log-driver=")
            || word.starts_with("--log-opt=")
        {
            continue;
        }
        kept.push(word);
    }
    // Before the image: its name is the last word kept.
    let image = kept.pop().unwrap_or_default();
    kept.extend(["--log-driver".to_owned(), "local".to_owned(), image]);
    kept.extend(command.iter().cloned());
    Ok(kept)
}

/// Whether the applied kick.toml should replace the one the node has
/// (`before`): when it differs, and only if this node's huxley can read
/// it. An `apply` from a newer CLI can write keys an older binary refuses;
/// installed, it would put every node's kick and hook servers into a
/// restart loop with no leader left to replace the nodes. Such a file is
/// refused, with the reason, and the node keeps the one it runs.
fn kick_toml_to_install(before: Option<&str>, applied: &str) -> Result<bool, String> {
    if before == Some(applied) {
        return Ok(false);
    }
    toml::from_str::<crate::spec::kick::KickConfig>(applied)
        .map(|_| true)
        .map_err(|err| {
            format!(
                "the applied kick.toml is not one this node's huxley ({}) reads, so the node keeps the one it runs until it is replaced: {err}",
                env!("CARGO_PKG_VERSION")
            )
        })
}

impl<C: Commands> Systemd<C> {
    /// The Docker engine's major version; 0 when it cannot be read.
    async fn docker_major(&self) -> u32 {
        let format = ["version", "--format", "{{.Server.Version}}"].map(str::to_owned);
        self.commands
            .run("docker", &format)
            .await
            .ok()
            .and_then(|v| v.trim().split('.').next()?.parse().ok())
            .unwrap_or(0)
    }

    /// The last `lines` lines of one run of a unit (its `InvocationID`:
    /// a replica number comes back in a later deploy, and the unit's
    /// journal holds every earlier run), its messages only; none when
    /// there is no run or journalctl fails.
    async fn journal(&self, invocation: &str, lines: usize) -> String {
        if invocation.is_empty() || !invocation.chars().all(|c| c.is_ascii_hexdigit()) {
            return String::new();
        }
        let lines = lines.to_string();
        self.commands
            .run(
                "journalctl",
                &[
                    &format!("_SYSTEMD_INVOCATION_ID={invocation}"),
                    "--lines",
                    &lines,
                    "--no-pager",
                    "--output",
                    "cat",
                ]
                .map(str::to_owned),
            )
            .await
            .unwrap_or_default()
    }

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
            daemons: false,
            docker_config: PathBuf::from(crate::agent::runtime::DOCKER_CONFIG),
            logins: BTreeMap::new(),
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

    /// Before a replica of an image in the account's ECR starts: the
    /// registry's authorization (the node role's, 12 hours) in the units'
    /// Docker configuration, written again after 6 hours. Only the hook
    /// server logged in before, so other nodes could not pull the images
    /// built on push.
    async fn log_in_for(&mut self, image: &str) -> Result<(), String> {
        let host = image.split('/').next().unwrap_or_default();
        if !host.contains(".dkr.ecr.") {
            return Ok(());
        }
        if self
            .logins
            .get(host)
            .is_some_and(|at| at.elapsed() < std::time::Duration::from_secs(6 * 3600))
        {
            return Ok(());
        }
        let Some((aws, _)) = &self.source else {
            return Ok(());
        };
        // A failure is said, not fatal: an image already on the node
        // starts anyway, and a pull that needs the login fails on its own.
        match aws.registry_authorization().await {
            Ok(auth) if !auth.is_empty() => {
                write_registry_auth(&self.docker_config, host, &auth)?;
                self.logins
                    .insert(host.to_owned(), std::time::Instant::now());
            }
            Ok(_) => eprintln!("node: ECR gave no authorization for {host}"),
            Err(err) => eprintln!("node: cannot log in to {host}: {err}"),
        }
        Ok(())
    }

    /// Writes a replica's own env file, read by systemd (the unit's
    /// `EnvironmentFile=`) and by Docker (`--env-file`): a value they
    /// would read differently is refused.
    pub(crate) fn write_env(&self, replica: &ReplicaSpec) -> Result<(), String> {
        let environment = replica.environment();
        let text = crate::spec::envfile::text(
            "# Written by the huxley node agent for this replica.\n",
            environment.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            crate::spec::envfile::Readers::DockerAndSystemd,
        )?;
        write_atomically(&self.env_file(replica), text.as_bytes(), 0o600)
    }

    /// The template unit `<unit>@.service` as installed, its environment
    /// files under `/etc/huxley/` read from where this agent keeps that
    /// directory (the parent of its env files' directory: `--etc`).
    pub fn unit_file(&self, unit: &str) -> Result<UnitFile, String> {
        let name = format!("{unit}@.service");
        let mut parsed = self
            .units
            .get(&name)
            .map(|text| UnitFile::parse(text))
            .ok_or_else(|| format!("the manifest has no unit {name}"))?;
        if let Some(etc) = self.env_dir.parent() {
            for (path, _) in &mut parsed.environment_files {
                if let Some(rest) = path.strip_prefix("/etc/huxley/") {
                    *path = etc.join(rest).display().to_string();
                }
            }
        }
        Ok(parsed)
    }

    /// Starts a one-off run as its service's replicas start, from the
    /// same unit, as instance `run-<id>`: the unit's `ExecStartPre=`
    /// lines (its secrets among them), then its `docker run` line with
    /// the run's command after the image and no published port. The
    /// agent runs it, attached: the container's output is the process's.
    pub async fn start_run_from_unit(&mut self, run: &RunSpec) -> Result<RunProcess, String> {
        let prefix = run.assigned.unit.clone();
        let unit = self.unit_file(&prefix)?;
        let instance = run.assigned.instance();
        let env_path = self.replicas_dir.join(format!("{prefix}-{instance}.env"));
        let text = crate::spec::envfile::text(
            "# Written by the huxley node agent for this run.\n",
            run.environment()
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str())),
            crate::spec::envfile::Readers::DockerAndSystemd,
        )?;
        write_atomically(&env_path, text.as_bytes(), 0o600)?;
        let leftovers = vec![env_path, run.secrets_file()];
        let started = async {
            if let Some(image) = &run.assigned.image {
                self.log_in_for(image).await?;
            }
            let env = unit.environment(&instance, &prefix)?;
            for (line, may_fail) in &unit.start_pre {
                let words = command_words(line, &instance, &prefix, &env);
                let Some((program, args)) = words.split_first() else {
                    continue;
                };
                if let Err(err) = self.commands.run(program, args).await
                    && !may_fail
                {
                    return Err(err);
                }
            }
            let words = run_words(&unit.start, &instance, &prefix, &env, &run.assigned.command)?;
            let name = words
                .iter()
                .position(|w| w == "--name")
                .and_then(|at| words.get(at + 1))
                .cloned()
                .ok_or_else(|| format!("{prefix}@.service names no container"))?;
            // The unit's environment, as systemd gives it to its lines:
            // DOCKER_CONFIG (the account registry's login) among it.
            RunProcess::spawn(
                &words,
                &env,
                Some((
                    "docker".to_owned(),
                    vec!["stop".into(), "--time".into(), "10".into(), name],
                )),
                leftovers.clone(),
            )
        }
        .await;
        if started.is_err() {
            for path in &leftovers {
                let _ = std::fs::remove_file(path);
            }
        }
        started
    }

    /// Removes a run's container and files, as an earlier agent left
    /// them.
    pub async fn forget_run_container(&mut self, run: &RunSpec) {
        let name = format!("{}-{}", run.assigned.unit, run.assigned.instance());
        let _ = self
            .commands
            .run("docker", &["rm".to_owned(), "--force".to_owned(), name])
            .await;
        let _ = std::fs::remove_file(self.replicas_dir.join(format!(
            "{}-{}.env",
            run.assigned.unit,
            run.assigned.instance()
        )));
        let _ = std::fs::remove_file(run.secrets_file());
    }

    pub fn env_file(&self, replica: &ReplicaSpec) -> PathBuf {
        self.replicas_dir.join(format!(
            "{}-{}.env",
            replica.assigned.unit, replica.assigned.replica
        ))
    }
}

impl<C: Commands> Runtime for Systemd<C> {
    async fn start_run(&mut self, run: &RunSpec) -> Result<RunProcess, String> {
        self.start_run_from_unit(run).await
    }

    async fn forget_run(&mut self, run: &RunSpec) {
        self.forget_run_container(run).await;
    }

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
                let mut create = args(&[
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
                ]);
                // Docker 28 drops routed traffic from other hosts to a
                // container's unpublished ports, which is how other nodes
                // and the load balancer reach replicas: keep NAT for the
                // containers' way out, and let that traffic in.
                if self.docker_major().await >= 28 {
                    create.extend(args(&[
                        "--opt",
                        "com.docker.network.bridge.gateway_mode_ipv4=nat-unprotected",
                    ]));
                }
                create.push(NETWORK.to_owned());
                self.commands.run("docker", &create).await?;
            }
        }
        self.subnet = Some(subnet);
        Ok(())
    }

    async fn refresh(&mut self) -> Result<(), String> {
        let Some((aws, bucket)) = self.source.clone() else {
            return Ok(());
        };
        let manifest = aws.manifest(&bucket).await?;
        // The service units and their plain env files; the agents' own
        // units come with the node's boot config.
        let units = manifest
            .files
            .iter()
            .filter_map(|(path, entry)| {
                let name = path.strip_prefix(crate::spec::manifest::UNITS)?;
                (name.contains("@.service") || name.ends_with(".env"))
                    .then(|| (name.to_owned(), entry.content.clone()))
            })
            .collect();
        let mut restart = false;
        if let Some(kick) = manifest.files.get(crate::spec::manifest::KICK_TOML) {
            let before = std::fs::read_to_string(&self.kick_toml).ok();
            let install =
                kick_toml_to_install(before.as_deref(), &kick.content).unwrap_or_else(|why| {
                    eprintln!("node: {why}");
                    false
                });
            if install {
                write_atomically(&self.kick_toml, kick.content.as_bytes(), 0o644)?;
                // kick and the hook server read it once: an `apply` that
                // changed it reaches them through a restart (a daemon that
                // waited for the file starts on its own next try). Only a
                // control machine runs them; a node has no such unit, and
                // systemd refuses to restart a unit it cannot find.
                restart = before.is_some() && self.reload && self.daemons;
            }
        }
        self.install_units(units).await?;
        if restart
            && let Err(err) = self
                .systemctl(&["try-restart", "huxley-kick.service", "huxley-hook.service"])
                .await
        {
            eprintln!(
                "node: kick.toml changed, but kick and the hook server did not restart: {err}"
            );
        }
        Ok(())
    }

    async fn start(&mut self, replica: &ReplicaSpec) -> Result<(), String> {
        let unit = format!("{}@.service", replica.assigned.unit);
        if !self.units.contains_key(&unit) {
            return Err(format!("the manifest has no unit {unit}"));
        }
        self.write_env(replica)?;
        if let Some(image) = &replica.assigned.image {
            self.log_in_for(image).await?;
        }
        self.systemctl(&[
            "start",
            "--no-block",
            &format!("{}.service", replica.instance()),
        ])
        .await
        .map(|_| ())
    }

    async fn stop(&mut self, replica: &ReplicaSpec) -> Result<(), String> {
        let stopped = self
            .systemctl(&["stop", &format!("{}.service", replica.instance())])
            .await;
        // Gone from this node whether or not systemd said so.
        let _ = std::fs::remove_file(self.env_file(replica));
        super::forget_secrets(replica);
        stopped.map(|_| ())
    }

    async fn output(&mut self, replica: &ReplicaSpec) -> Vec<String> {
        let unit = format!("{}.service", replica.instance());
        let invocation = self
            .systemctl(&["show", &unit, "--property=InvocationID", "--value"])
            .await
            .unwrap_or_default();
        let journal = self
            .journal(invocation.trim(), crate::spec::assignment::OUTPUT_LINES)
            .await;
        crate::spec::assignment::recent(journal.lines())
    }

    async fn observe(&mut self, replica: &ReplicaSpec) -> Observed {
        let unit = format!("{}.service", replica.instance());
        let shown = self
            .systemctl(&[
                "show",
                &unit,
                "--property=ActiveState,SubState,Result,ExecMainStatus,MemoryCurrent,CPUUsageNSec,InvocationID",
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
                let invocation = properties.get("InvocationID").copied().unwrap_or("");
                let journal = self.journal(invocation, 3).await;
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

/// The container a generated unit runs for `replica` (`<unit>-<n>`, as
/// the unit's `docker run --name`).
pub fn container(replica: &ReplicaSpec) -> String {
    format!("{}-{}", replica.assigned.unit, replica.assigned.replica)
}

/// What a replica's container uses: (CPU time in ns, memory in MiB), from
/// the cgroup of its main process. A unit's own accounting does not see
/// it (the container runs under Docker, not under the unit's `docker run`
/// client). `None`s when it does not run or cannot be read.
pub async fn container_usage<C: Commands>(
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

/// Puts `auth` (base64 of `user:password`) for `host` into Docker's
/// `config.json` under `dir`, keeping its other entries; the file is the
/// root's alone (0600).
pub fn write_registry_auth(dir: &Path, host: &str, auth: &str) -> Result<(), String> {
    let path = dir.join("config.json");
    let mut config: serde_json::Value = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .filter(serde_json::Value::is_object)
        .unwrap_or_else(|| serde_json::json!({}));
    config["auths"][host] = serde_json::json!({ "auth": auth });
    let text = serde_json::to_vec_pretty(&config).map_err(|e| e.to_string())?;
    write_atomically(&path, &text, 0o600)
}

#[cfg(test)]
mod kick_toml_tests {
    use super::kick_toml_to_install;

    /// Regression (review): the agent installed any applied kick.toml and
    /// restarted kick and the hook server, so a kick.toml with a key this
    /// binary does not know put them into a restart loop on every node.
    #[test]
    fn a_kick_toml_this_binary_cannot_read_is_not_installed() {
        let golden = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("golden/blog/kick/kick.toml"),
        )
        .expect("the blog golden kick.toml");
        assert_eq!(kick_toml_to_install(None, &golden), Ok(true));
        assert_eq!(kick_toml_to_install(Some(&golden), &golden), Ok(false));
        let newer = golden.replacen(
            "[cluster]\n",
            "[cluster]\na-key-from-a-newer-huxley = 1\n",
            1,
        );
        assert_ne!(newer, golden);
        let refused = kick_toml_to_install(Some(&golden), &newer).expect_err("refused");
        assert!(refused.contains("a-key-from-a-newer-huxley"), "{refused}");
    }
}

#[cfg(test)]
mod tests {
    use super::super::fake::{Recorder, replica};
    use super::super::last_words;
    use super::*;

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

    #[test]
    fn registry_authorization_is_merged_into_dockers_config_for_root_alone() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("huxley-docker-config-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(
            dir.join("config.json"),
            r#"{"auths":{"other.example":{"auth":"eA=="}},"detachKeys":"ctrl-q"}"#,
        )
        .expect("config");
        write_registry_auth(
            &dir,
            "1234.dkr.ecr.us-west-2.amazonaws.com",
            "QVdTOnNlY3JldA==",
        )
        .expect("written");
        let config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("config.json")).expect("read"))
                .expect("json");
        assert_eq!(
            config["auths"]["1234.dkr.ecr.us-west-2.amazonaws.com"]["auth"],
            "QVdTOnNlY3JldA=="
        );
        assert_eq!(config["auths"]["other.example"]["auth"], "eA==");
        assert_eq!(config["detachKeys"], "ctrl-q");
        let mode = std::fs::metadata(dir.join("config.json"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let _ = std::fs::remove_dir_all(&dir);
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
        // On Docker 28, routed traffic to unpublished ports is let in.
        recorder.answer("docker network inspect", Err("no such network"));
        recorder.answer("docker version", Ok("28.1.1\n"));
        let subnet: Ipv4Net = "100.64.3.0/24".parse().expect("subnet");
        systemd.prepare(Some(subnet)).await.expect("network");
        assert_eq!(
            recorder.take(),
            [
                "docker network inspect --format {{range .IPAM.Config}}{{.Subnet}}{{end}} huxley",
                "docker version --format {{.Server.Version}}",
                "docker network create --driver bridge --subnet 100.64.3.0/24 --gateway 100.64.3.1 --opt com.docker.network.bridge.name=huxley0 --opt com.docker.network.bridge.gateway_mode_ipv4=nat-unprotected huxley",
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
            Ok("ActiveState=failed\nSubState=failed\nResult=exit-code\nExecMainStatus=125\nInvocationID=0ddba11\n"),
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
                "systemctl show blog-web@2.service --property=ActiveState,SubState,Result,ExecMainStatus,MemoryCurrent,CPUUsageNSec,InvocationID",
                "journalctl _SYSTEMD_INVOCATION_ID=0ddba11 --lines 3 --no-pager --output cat",
            ]
        );

        // Its output: this run's journal lines only, by its invocation.
        recorder.answers.lock().expect("answers").clear();
        recorder.answer("systemctl show", Ok("5f1c0ffee0\n"));
        recorder.answer("journalctl", Ok("listening\n\nunhealthy\n"));
        assert_eq!(systemd.output(&replica()).await, ["listening", "unhealthy"]);
        assert_eq!(
            recorder.take(),
            [
                "systemctl show blog-web@2.service --property=InvocationID --value",
                "journalctl _SYSTEMD_INVOCATION_ID=5f1c0ffee0 --lines 20 --no-pager --output cat",
            ]
        );
        // No invocation (never started): nothing, and no journal read.
        recorder.answers.lock().expect("answers").clear();
        recorder.answer("systemctl show", Ok("\n"));
        assert!(systemd.output(&replica()).await.is_empty());
        assert_eq!(recorder.take().len(), 1);

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
                "systemctl show blog-web@2.service --property=ActiveState,SubState,Result,ExecMainStatus,MemoryCurrent,CPUUsageNSec,InvocationID",
                "docker inspect --format {{.State.Pid}} blog-web-2",
            ]
        );

        systemd.stop(&replica()).await.expect("stopped");
        assert_eq!(recorder.take(), ["systemctl stop blog-web@2.service"]);
        assert!(!env_file.exists(), "the env file goes with the replica");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[cfg(test)]
mod run_tests {
    use std::collections::BTreeMap;

    use super::run_words;
    use crate::agent::unitfile::UnitFile;

    /// A run's container is its service's, from the generated unit: the
    /// same network, limits, logs, env files and volumes, its own name and
    /// address, no published port, and the run's command after the image.
    #[test]
    fn a_run_is_the_units_docker_run_with_its_own_command() {
        let golden = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("golden/blog/units");
        let text = std::fs::read_to_string(golden.join("blog-web@.service")).expect("unit");
        let unit = UnitFile::parse(&text);
        let env = BTreeMap::from([
            (
                "HUXLEY_IMAGE".to_owned(),
                "r.example/blog@sha256:ab".to_owned(),
            ),
            ("HUXLEY_ADDRESS".to_owned(), "100.64.3.9".to_owned()),
            ("HUXLEY_LOG_OPTIONS".to_owned(), String::new()),
        ]);
        let command = vec!["sh".to_owned(), "-c".to_owned(), "echo \"$A b\"".to_owned()];
        let words = run_words(&unit.start, "run-7", "blog-web", &env, &command).expect("words");
        let line = words.join(" ");
        assert!(line.contains("--name blog-web-run-7 "), "{line}");
        assert!(line.contains("--ip 100.64.3.9 "), "{line}");
        assert!(
            line.contains("--env-file /run/huxley/replicas/blog-web-run-7.env"),
            "{line}"
        );
        assert!(
            text.contains("--log-driver awslogs"),
            "the replicas log to CloudWatch"
        );
        assert!(!line.contains("awslogs"), "{line}");
        assert!(line.contains("--log-driver local "), "{line}");
        // A service published on the nodes: its runs publish nothing.
        let gateway = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("golden/platform/units/auth-gateway@.service"),
        )
        .expect("unit");
        assert!(gateway.contains("--publish"), "the replicas publish a port");
        let published = run_words(
            &UnitFile::parse(&gateway).start,
            "run-8",
            "auth-gateway",
            &env,
            &command,
        )
        .expect("words")
        .join(" ");
        assert!(!published.contains("--publish"), "{published}");
        assert!(!line.contains("--publish"), "{line}");
        let image = words
            .iter()
            .position(|w| w == "r.example/blog@sha256:ab")
            .expect("the image");
        assert_eq!(
            words[image + 1..],
            command[..],
            "the command, word for word"
        );
        assert_eq!(words[0], "/usr/bin/docker");
        // A unit that runs no image is refused, not run half.
        assert!(run_words("/usr/bin/true", "run-7", "x", &env, &command).is_err());
    }
}
