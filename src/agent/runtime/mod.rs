//! How a node runs replicas: the seam between the agent's logic and the
//! process manager.
//!
//! - [`systemd::Systemd`] (production): installs the generated template units from
//!   the artifact manifest, writes each replica's environment file, and
//!   starts and stops `<unit>@<n>.service` with `systemctl`; the unit runs
//!   the container on the node's container network.
//! - [`processes::Processes`] (development and tests): runs each replica as a local
//!   process given on the command line (`--exec app.service=COMMAND`), with
//!   the same environment; no systemd or Docker needed.

pub mod processes;
pub mod systemd;
pub mod units;

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::Ipv4Net;

use crate::spec::assignment::{AssignedReplica, ReplicaState};

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
            .and_then(crate::spec::release::version_of)
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
    /// Starts a one-off run: its process, whose output is piped.
    fn start_run(
        &mut self,
        run: &crate::agent::runs::RunSpec,
    ) -> impl Future<Output = Result<crate::agent::runs::RunProcess, String>> + Send;
    /// Removes what is left of a run this agent did not start (an
    /// earlier agent on this node did): its container, its files.
    fn forget_run(
        &mut self,
        _run: &crate::agent::runs::RunSpec,
    ) -> impl Future<Output = ()> + Send {
        async {}
    }
    /// The replica's last lines of output since it last started (see
    /// [`crate::spec::assignment::recent`]); none where the runtime keeps
    /// none.
    fn output(&mut self, _replica: &ReplicaSpec) -> impl Future<Output = Vec<String>> + Send {
        async { Vec::new() }
    }
}

/// The end of a log file, at most `bytes` of it, as lines.
pub fn tail_of(path: &std::path::Path, bytes: u64) -> Vec<String> {
    use std::io::{Read as _, Seek as _};
    let Ok(mut file) = std::fs::File::open(path) else {
        return Vec::new();
    };
    let len = file.metadata().map_or(0, |m| m.len());
    let start = len.saturating_sub(bytes);
    if file.seek(std::io::SeekFrom::Start(start)).is_err() {
        return Vec::new();
    }
    let mut raw = Vec::new();
    if file.take(bytes).read_to_end(&mut raw).is_err() {
        return Vec::new();
    }
    let text = String::from_utf8_lossy(&raw);
    // A cut first line is not shown.
    let text = if start > 0 {
        text.split_once('\n').map_or("", |(_, rest)| rest)
    } else {
        &text
    };
    crate::spec::assignment::recent(text.lines())
}

/// Runs commands: the seam under [`systemd::Systemd`], so the exact `systemctl` and
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
/// Docker's configuration for the replicas' units (`DOCKER_CONFIG`): the
/// account registry's authorization, so every node pulls the images built
/// on push.
pub const DOCKER_CONFIG: &str = "/etc/huxley/docker";

/// Where the node keeps kick.toml (read by `huxley node secrets`).
pub const KICK_TOML: &str = "/etc/huxley/kick.toml";

/// Where a replica's secrets are while it is placed on the node (tmpfs,
/// root only): `<unit>-<replica>.env`, as the service units name it.
pub const SECRETS_DIR: &str = "/run/huxley/secrets";

/// Forgets a replica's secrets once it no longer runs on this node.
pub fn forget_secrets(replica: &ReplicaSpec) {
    let _ = std::fs::remove_file(secrets_file(replica));
}

/// Where a replica's secrets are while it runs (`huxley node secrets`
/// writes them there for its unit).
pub fn secrets_file(replica: &ReplicaSpec) -> std::path::PathBuf {
    std::path::Path::new(SECRETS_DIR).join(format!(
        "{}-{}.env",
        replica.assigned.unit, replica.assigned.replica
    ))
}

/// Lines a replica printed with its secrets taken out (see [`redact`]),
/// read from its secrets file: what leaves the node of its output, and
/// of the reason it failed, which is its last line.
pub fn scrub(replica: &ReplicaSpec, lines: Vec<String>) -> Vec<String> {
    let secrets = std::fs::read_to_string(secrets_file(replica)).unwrap_or_default();
    redact(lines, &secrets)
}

/// Output lines with every value of a secrets file (`NAME=value` a line)
/// replaced by `[secret NAME]`: an app that prints its database URL in
/// an error does not send the password with its report. Values shorter
/// than 4 characters are left (they would hide ordinary words).
pub fn redact(lines: Vec<String>, secrets: &str) -> Vec<String> {
    let mut values: Vec<(&str, &str)> = secrets
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .filter(|(_, value)| value.len() >= 4)
        .collect();
    // The longest first, so a value inside another is not left half shown.
    values.sort_by_key(|(_, value)| std::cmp::Reverse(value.len()));
    lines
        .into_iter()
        .map(|mut line| {
            for (name, value) in &values {
                if line.contains(value) {
                    line = line.replace(value, &format!("[secret {name}]"));
                }
            }
            line
        })
        .collect()
}

/// The name of the node's container network in Docker, and its bridge.
pub const NETWORK: &str = "huxley";
pub const BRIDGE: &str = "huxley0";

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

/// A fake [`Commands`] and a replica, for the runtimes' tests.
#[cfg(test)]
pub mod fake {
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};

    use super::{Commands, ReplicaSpec};
    use crate::spec::assignment::AssignedReplica;

    type Answer = Result<String, String>;

    /// Records every command and answers from a table (by prefix).
    #[derive(Debug, Clone, Default)]
    pub struct Recorder {
        pub calls: Arc<Mutex<Vec<String>>>,
        pub answers: Arc<Mutex<Vec<(String, Answer)>>>,
    }

    impl Recorder {
        pub fn answer(&self, prefix: &str, answer: Result<&str, &str>) {
            self.answers.lock().expect("answers").push((
                prefix.to_owned(),
                answer.map(str::to_owned).map_err(str::to_owned),
            ));
        }

        pub fn take(&self) -> Vec<String> {
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

    pub fn replica() -> ReplicaSpec {
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
}

#[cfg(test)]
mod tail_tests {
    #[test]
    fn secrets_are_taken_out_of_output() {
        let lines = vec![
            "connecting to postgres://app:hunter2-long@db:5432/shop".to_owned(),
            "token tok_live_0123 and tok_live_0123456789".to_owned(),
            "an ordinary line".to_owned(),
        ];
        let secrets = "# written by huxley node secrets\nDB_PASSWORD=hunter2-long\nAPI=tok_live_0123456789\nSHORT=an\nPREFIX=tok_live_0123\n";
        assert_eq!(
            super::redact(lines, secrets),
            [
                "connecting to postgres://app:[secret DB_PASSWORD]@db:5432/shop",
                "token [secret PREFIX] and [secret API]",
                "an ordinary line",
            ]
        );
    }

    #[test]
    fn the_tail_of_a_log_is_its_last_whole_lines() {
        let path = std::env::temp_dir().join(format!("huxley-tail-{}.log", std::process::id()));
        let text: String = (0..1000).map(|i| format!("line {i}\n\n")).collect();
        std::fs::write(&path, &text).expect("log");
        let tail = super::tail_of(&path, 256);
        assert_eq!(tail.len(), crate::spec::assignment::OUTPUT_LINES);
        assert_eq!(crate::spec::assignment::recent(["a", "", "b"]), ["a", "b"]);
        assert_eq!(tail.last().map(String::as_str), Some("line 999"));
        assert_eq!(tail[0], "line 980");
        // A short log whole; none for a log that is not there.
        std::fs::write(&path, "one\ntwo\n").expect("log");
        assert_eq!(super::tail_of(&path, 256), ["one", "two"]);
        let _ = std::fs::remove_file(&path);
        assert!(super::tail_of(&path, 256).is_empty());
    }
}
