//! The generated template units run as systemd would run them, by the
//! agent itself, where systemd is not PID 1.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::Ipv4Net;

use super::processes::not_running;
use super::systemd::{Systemd, container_usage};
use super::{Commands, Observed, ReplicaKey, ReplicaSpec, Runtime};
use crate::agent::runs::{RunProcess, RunSpec};
use crate::agent::runtime::last_words;
use crate::agent::unitfile::{UnitFile, command_words};
use crate::spec::assignment::ReplicaState;

/// The generated template units run as systemd would run them, by the
/// agent itself: for hosts where systemd is not PID 1 (a development
/// machine, a container, CI). The unit's `Environment=` and
/// `EnvironmentFile=` make the environment, `ExecStartPre=` runs first
/// (`-` ignores a failure), `ExecStart=` is the replica, `ExecStop=` and
/// `ExecStopPost=` stop it; `%i`, `%p`, `%%`, `${VAR}`, `$VAR` and `$$`
/// are expanded as systemd does. So the containers run through the exact
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

impl<C: Commands> Units<C> {
    /// The replica's unit, its environment files under `/etc/huxley/`
    /// read from where this agent keeps that directory (`--etc`, the
    /// parent of its env files' directory), as the node's own would be.
    fn unit(&self, replica: &ReplicaSpec) -> Result<UnitFile, String> {
        self.systemd.unit_file(&replica.assigned.unit)
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
        self.systemd.write_env(replica)?;
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

    async fn start_run(&mut self, run: &RunSpec) -> Result<RunProcess, String> {
        self.systemd.start_run_from_unit(run).await
    }

    async fn forget_run(&mut self, run: &RunSpec) {
        self.systemd.forget_run_container(run).await;
    }

    async fn output(&mut self, replica: &ReplicaSpec) -> Vec<String> {
        super::tail_of(
            &self
                .systemd
                .replicas_dir
                .join(format!("{}.log", replica.instance())),
            16 * 1024,
        )
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
        super::forget_secrets(replica);
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
