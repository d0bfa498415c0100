//! Replicas as local processes (development and tests): each runs a
//! command given on the command line, with the environment a unit would
//! give it; no systemd or Docker needed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::Ipv4Net;

use super::{Observed, ReplicaKey, ReplicaSpec, Runtime};
use crate::agent::runs::{RunProcess, RunSpec};
use crate::spec::assignment::ReplicaState;

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

    /// The run's command itself, with the environment a replica has.
    async fn start_run(&mut self, run: &RunSpec) -> Result<RunProcess, String> {
        RunProcess::spawn(&run.assigned.command, &run.environment(), None, Vec::new())
    }

    async fn output(&mut self, replica: &ReplicaSpec) -> Vec<String> {
        super::tail_of(
            &self.logs.join(format!("{}.log", replica.instance())),
            16 * 1024,
        )
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
pub fn not_running(exited: &BTreeMap<ReplicaKey, String>, key: &ReplicaKey) -> Observed {
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
