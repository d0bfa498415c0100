//! The node agent's loop: long-poll this node's assignment from the kick
//! server's leader, make the node match, report.
//!
//! Making the node match, in this order: new replicas are started first
//! (each at an address of the node's container subnet) and registered with
//! kick at that address once running; then replicas no longer assigned are
//! deregistered (so DNS drops them) and only then stopped. A replica that
//! exits is restarted after a pause, as systemd's `Restart=on-failure`.
//!
//! When kick cannot be reached the node keeps running what it runs: the
//! agent never stops a replica because kick is away; it retries with
//! backoff, and follows a standby's pointer to the leader.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use ipnet::Ipv4Net;
use serde_json::json;
use tokio::time::Instant;

use crate::agent::runs::RunSpec;
use crate::agent::runtime::{ReplicaKey, ReplicaSpec, Runtime};
use crate::spec::assignment::{
    AssignedReplica, Assignment, NodeReport, ReplicaReport, ReplicaState,
};
use crate::spec::run::AssignedRun;

/// How long one long poll asks kick to wait for a change.
pub const POLL_WAIT: Duration = Duration::from_secs(10);
/// Backoff after a failed call to kick, doubling up to the limit.
const BACKOFF_FIRST: Duration = Duration::from_millis(500);
const BACKOFF_LIMIT: Duration = Duration::from_secs(15);
/// How long a replica that exited waits before it is started again.
const RESTART_AFTER: Duration = Duration::from_secs(5);
/// How often registrations are refreshed (heartbeats) and the report sent
/// again even when nothing changed.
const REFRESH_EVERY: Duration = Duration::from_secs(10);
/// How often the applied artifacts (service units, kick.toml) are read
/// again from the bucket, whatever kick says.
const MANIFEST_EVERY: Duration = Duration::from_secs(60);

/// How a node proves who it is to kick: a bearer token (tests of kick's
/// API alone), or a signed STS `GetCallerIdentity` made with the
/// instance's own role, signed again every [`RESIGN_EVERY`].
pub enum Credential {
    Token(String),
    Identity {
        aws: std::sync::Arc<crate::aws::Aws>,
        cluster: String,
        proof: Option<(Instant, crate::aws::identity::Proof)>,
    },
}

/// How often a node signs its proof of identity again: well within the
/// 15 minutes STS accepts a signature for, and kick's memory of it.
pub const RESIGN_EVERY: Duration = Duration::from_secs(4 * 60);

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Neither a token nor a proof is printed.
        match self {
            Credential::Token(_) => f.write_str("Credential::Token"),
            Credential::Identity { cluster, .. } => write!(f, "Credential::Identity({cluster})"),
        }
    }
}

impl Credential {
    /// Signs again at the next call: kick refused the last proof.
    fn forget(&mut self) {
        if let Credential::Identity { proof, .. } = self {
            *proof = None;
        }
    }

    /// The headers a request to kick carries.
    async fn headers(&mut self) -> Result<Vec<(&'static str, String)>, CallError> {
        use crate::aws::identity::headers;
        match self {
            Credential::Token(token) => Ok(vec![("authorization", format!("Bearer {token}"))]),
            Credential::Identity {
                aws,
                cluster,
                proof,
            } => {
                if proof
                    .as_ref()
                    .is_none_or(|(at, _)| at.elapsed() >= RESIGN_EVERY)
                {
                    let signed = aws.prove_identity(cluster).await.map_err(|err| {
                        CallError::Unreachable(format!("cannot sign this node's identity: {err}"))
                    })?;
                    *proof = Some((Instant::now(), signed));
                }
                let Some((_, proof)) = proof.as_ref() else {
                    return Ok(Vec::new());
                };
                let mut sent = vec![
                    (headers::AUTHORIZATION, proof.authorization.clone()),
                    (headers::DATE, proof.date.clone()),
                ];
                if let Some(token) = &proof.security_token {
                    sent.push((headers::SECURITY_TOKEN, token.clone()));
                }
                Ok(sent)
            }
        }
    }
}

/// The kick servers the agent knows, and how it proves who it is.
#[derive(Debug)]
pub struct KickClient {
    client: reqwest::Client,
    /// The configured addresses; the first one answers first.
    bases: Vec<String>,
    /// The leader, when a standby named it.
    leader: Option<String>,
    next: usize,
    credential: Credential,
}

/// Why a call to kick failed.
#[derive(Debug)]
pub enum CallError {
    /// No kick server could be reached, or none leads yet.
    Unreachable(String),
    /// Kick answered with an error.
    Refused(u16, String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Unreachable(why) => write!(f, "kick cannot be reached: {why}"),
            CallError::Refused(status, why) => write!(f, "kick answered {status}: {why}"),
        }
    }
}

impl KickClient {
    pub fn new(bases: Vec<String>, credential: Credential) -> Self {
        crate::tls::ensure_provider();
        Self {
            client: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(3))
                .build()
                .expect("an HTTP client"),
            bases,
            leader: None,
            next: 0,
            credential,
        }
    }

    /// A client of its own to the same kick servers, with the same
    /// credential (a proof is signed again): for a task that talks to kick
    /// beside the agent's loop.
    pub fn fork(&self) -> KickClient {
        let credential = match &self.credential {
            Credential::Token(token) => Credential::Token(token.clone()),
            Credential::Identity { aws, cluster, .. } => Credential::Identity {
                aws: std::sync::Arc::clone(aws),
                cluster: cluster.clone(),
                proof: None,
            },
        };
        let mut fork = KickClient::new(self.bases.clone(), credential);
        fork.leader = self.leader.clone();
        fork
    }

    fn base(&self) -> String {
        self.leader
            .clone()
            .unwrap_or_else(|| self.bases[self.next % self.bases.len().max(1)].clone())
    }

    /// One call; on a standby's 503 it follows the named leader, on a
    /// connection failure it tries the next address, each once.
    async fn call(
        &mut self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
        timeout: Duration,
    ) -> Result<(u16, String), CallError> {
        let mut last = String::new();
        let headers = self.credential.headers().await?;
        for _ in 0..=self.bases.len() {
            let url = format!("{}{path}", self.base());
            let mut request = self.client.request(method.clone(), &url).timeout(timeout);
            for (name, value) in &headers {
                request = request.header(*name, value);
            }
            if let Some(body) = &body {
                request = request.json(body);
            }
            match request.send().await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let text = response.text().await.unwrap_or_default();
                    if status == 401 {
                        self.credential.forget();
                    }
                    if status == 503 {
                        let leader = serde_json::from_str::<serde_json::Value>(&text)
                            .ok()
                            .and_then(|v| v["leader"].as_str().map(str::to_owned));
                        match leader {
                            Some(leader) if Some(&leader) != self.leader.as_ref() => {
                                self.leader = Some(leader);
                                continue;
                            }
                            _ => {
                                self.forget_leader();
                                last = text;
                                continue;
                            }
                        }
                    }
                    return Ok((status, text));
                }
                Err(err) => {
                    last = format!("{url}: {err}");
                    self.forget_leader();
                }
            }
        }
        Err(CallError::Unreachable(last))
    }

    fn forget_leader(&mut self) {
        if self.leader.take().is_none() {
            self.next += 1;
        }
    }

    pub async fn expect(
        &mut self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
        timeout: Duration,
    ) -> Result<String, CallError> {
        let (status, text) = self.call(method, path, body, timeout).await?;
        if (200..300).contains(&status) {
            Ok(text)
        } else {
            let message = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_owned))
                .unwrap_or(text);
            Err(CallError::Refused(status, message))
        }
    }
}

/// A replica the node runs.
#[derive(Debug)]
struct Running {
    spec: ReplicaSpec,
    /// Its instance id at kick, once registered.
    registered: Option<String>,
    /// When it last exited, to restart it after a pause.
    exited_at: Option<Instant>,
    state: ReplicaState,
    detail: Option<String>,
    memory_mib: Option<u64>,
    /// The last CPU time reading, and when it was taken.
    cpu_reading: Option<(Instant, u64)>,
    /// CPU used between the last two readings, in thousandths of a core.
    cpu_millis: Option<u64>,
    /// When it was started, for how long its output is reported.
    started: Instant,
    /// Its last lines of output, while it is new or after it failed.
    output: Vec<String>,
}

/// A one-off run the node runs, followed by a task of its own
/// ([`crate::agent::runs::follow`]).
#[derive(Debug)]
struct NodeRun {
    address: IpAddr,
    /// Fired when kick takes the run back: the task stops it.
    cancel: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

/// How long the node waits for its runs to stop when the agent stops.
const RUNS_STOP: Duration = Duration::from_secs(15);

/// How long a new replica's output goes with the reports: longer than a
/// deploy waits for it to pass its health check (`deploy.timeout`, 5
/// minutes unless set).
const OUTPUT_WHILE_NEW: Duration = Duration::from_secs(15 * 60);

/// How much output one report carries, in bytes, across its replicas.
const OUTPUT_BUDGET: usize = 16 * 1024;

/// The node agent.
#[derive(Debug)]
pub struct Agent<R: Runtime> {
    pub node: String,
    pub kick: KickClient,
    pub runtime: R,
    generation: Option<u64>,
    subnet: Option<Ipv4Net>,
    /// The node's address, used for replicas when it has no subnet.
    fallback_address: IpAddr,
    running: BTreeMap<ReplicaKey, Running>,
    runs: BTreeMap<u64, NodeRun>,
    /// Drawn when the agent starts: the claim it makes of each run.
    claimant: u64,
    last_report: Option<(Instant, Vec<ReplicaReport>)>,
    last_refresh: Option<Instant>,
    /// When the applied artifacts were last installed.
    installed: Option<Instant>,
}

impl<R: Runtime> Agent<R> {
    pub fn new(node: String, kick: KickClient, runtime: R, fallback_address: IpAddr) -> Self {
        Self {
            node,
            kick,
            runtime,
            generation: None,
            subnet: None,
            fallback_address,
            running: BTreeMap::new(),
            runs: BTreeMap::new(),
            claimant: fastrand::u64(..),
            last_report: None,
            last_refresh: None,
            installed: None,
        }
    }

    /// Runs until the task is dropped.
    pub async fn run(&mut self) {
        let mut backoff = BACKOFF_FIRST;
        let mut said: Option<String> = None;
        loop {
            // The artifacts first, from the bucket: kick.toml among them,
            // which this node's kick and hook servers need before any
            // kick server can lead (and answer the poll below).
            self.install_artifacts(false).await;
            match self.step().await {
                Ok(()) => {
                    if said.take().is_some() {
                        eprintln!("node: kick answers again");
                    }
                    backoff = BACKOFF_FIRST;
                }
                Err(err) => {
                    let text = err.to_string();
                    if said.as_ref() != Some(&text) {
                        eprintln!(
                            "node: {text}; the node keeps running its {} replicas and tries again",
                            self.running.len()
                        );
                        said = Some(text);
                    }
                    // Replicas that exit are restarted even while kick is away.
                    self.restart_exited().await;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_LIMIT);
                }
            }
        }
    }

    /// The agent of a control machine: it keeps the applied artifacts
    /// installed (kick.toml, which its kick and hook servers read) and
    /// runs no replica; it never asks kick for work.
    pub async fn run_control(&mut self) {
        loop {
            self.install_artifacts(false).await;
            tokio::time::sleep(REFRESH_EVERY).await;
        }
    }

    /// Stops every replica this agent runs, each leaving DNS first: for
    /// runtimes whose replicas are the agent's own children, which would
    /// otherwise outlive it.
    pub async fn stop_all(&mut self) {
        // Runs first: each task stops its container and says so.
        let runs = std::mem::take(&mut self.runs);
        for (_, mut run) in runs {
            if let Some(cancel) = run.cancel.take() {
                let _ = cancel.send(());
            }
            let _ = tokio::time::timeout(RUNS_STOP, run.task).await;
        }
        let keys: Vec<ReplicaKey> = self.running.keys().cloned().collect();
        for key in keys {
            let Some(running) = self.running.remove(&key) else {
                continue;
            };
            if let Some(id) = &running.registered {
                let path = format!("/v1/instances/{id}");
                let _ = self
                    .kick
                    .expect(reqwest::Method::DELETE, &path, None, Duration::from_secs(5))
                    .await;
            }
            match self.runtime.stop(&running.spec).await {
                Ok(()) => eprintln!("node: stopped {}", describe(&key)),
                Err(err) => eprintln!("node: cannot stop {}: {err}", describe(&key)),
            }
        }
    }

    /// Installs the applied artifacts from the bucket when `now`, when
    /// they never were, or every [`MANIFEST_EVERY`]; a failure is said
    /// and tried again next round.
    async fn install_artifacts(&mut self, now: bool) {
        if !now
            && self
                .installed
                .is_some_and(|at| at.elapsed() < MANIFEST_EVERY)
        {
            return;
        }
        match self.runtime.refresh().await {
            Ok(()) => self.installed = Some(Instant::now()),
            Err(err) => {
                eprintln!(
                    "node: cannot fetch the applied artifacts (units, kick.toml): {err}; trying again"
                );
                self.installed = None;
            }
        }
    }

    /// One round: poll, converge, register, report.
    pub async fn step(&mut self) -> Result<(), CallError> {
        let path = match self.generation {
            Some(generation) => format!(
                "/v1/nodes/{}/assignment?after={generation}&wait={}",
                self.node,
                POLL_WAIT.as_secs()
            ),
            None => format!("/v1/nodes/{}/assignment", self.node),
        };
        let text = self
            .kick
            .expect(
                reqwest::Method::GET,
                &path,
                None,
                POLL_WAIT + Duration::from_secs(5),
            )
            .await?;
        let assignment: Assignment = serde_json::from_str(&text).map_err(|e| {
            CallError::Refused(200, format!("an assignment that does not parse: {e}"))
        })?;
        self.converge(&assignment).await;
        self.restart_exited().await;
        self.register_and_refresh().await?;
        self.report().await
    }

    /// Starts what is assigned and not running, then stops what runs and is
    /// no longer assigned.
    async fn converge(&mut self, assignment: &Assignment) {
        let subnet = assignment.subnet.as_deref().and_then(|s| s.parse().ok());
        if subnet != self.subnet {
            match self.runtime.prepare(subnet).await {
                Ok(()) => self.subnet = subnet,
                Err(err) => {
                    eprintln!("node: cannot set up the container network {subnet:?}: {err}");
                    return;
                }
            }
        }
        if self.generation != Some(assignment.generation) {
            self.install_artifacts(true).await;
        }
        self.generation = Some(assignment.generation);
        // Runs first: kick counts a run's silence from when it placed it,
        // and retiring replicas can take a while.
        self.converge_runs(&assignment.runs).await;
        let wanted: BTreeMap<ReplicaKey, &AssignedReplica> = assignment
            .replicas
            .iter()
            .map(|r| ((r.app.clone(), r.service.clone(), r.replica), r))
            .collect();
        // A replica whose image changed (a failed deploy puts the previous
        // release back) stops, then starts again on its image.
        let changed: Vec<ReplicaKey> = self
            .running
            .iter()
            .filter(|(k, r)| {
                wanted
                    .get(*k)
                    .is_some_and(|a| a.image != r.spec.assigned.image)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in &changed {
            self.retire(key).await;
        }
        for (key, assigned) in &wanted {
            if self.running.contains_key(key) {
                continue;
            }
            let Some(address) = self.free_address() else {
                eprintln!("node: no free address in {subnet:?} for {}", describe(key));
                continue;
            };
            let spec = ReplicaSpec {
                assigned: (*assigned).clone(),
                address,
            };
            let (state, detail) = match self.runtime.start(&spec).await {
                Ok(()) => {
                    eprintln!("node: started {} at {address}", describe(key));
                    (ReplicaState::Starting, None)
                }
                Err(err) => {
                    eprintln!("node: cannot start {}: {err}", describe(key));
                    (ReplicaState::Failed, Some(err))
                }
            };
            let failed = state == ReplicaState::Failed;
            self.running.insert(
                key.clone(),
                Running {
                    spec,
                    registered: None,
                    exited_at: failed.then(Instant::now),
                    state,
                    detail,
                    memory_mib: None,
                    cpu_reading: None,
                    cpu_millis: None,
                    started: Instant::now(),
                    output: Vec::new(),
                },
            );
        }
        let gone: Vec<ReplicaKey> = self
            .running
            .keys()
            .filter(|k| !wanted.contains_key(*k))
            .cloned()
            .collect();
        for key in gone {
            self.retire(&key).await;
        }
    }

    /// Starts the runs assigned and not started, each followed by a task
    /// of its own; stops those kick took back; forgets those that ended
    /// and left the assignment (one that ended is never started again).
    async fn converge_runs(&mut self, assigned: &[AssignedRun]) {
        let wanted: BTreeMap<u64, &AssignedRun> = assigned.iter().map(|r| (r.id, r)).collect();
        for (id, run) in &mut self.runs {
            if !wanted.contains_key(id)
                && let Some(cancel) = run.cancel.take()
            {
                let _ = cancel.send(());
            }
        }
        self.runs
            .retain(|id, run| wanted.contains_key(id) || !run.task.is_finished());
        for (id, assigned) in wanted {
            if self.runs.contains_key(&id) {
                continue;
            }
            let Some(address) = self.free_run_address() else {
                eprintln!("node: no free address for run {id}");
                continue;
            };
            let spec = RunSpec {
                assigned: assigned.clone(),
                address,
            };
            let (cancel, cancelled) = tokio::sync::oneshot::channel();
            let kick = self.kick.fork();
            let node = self.node.clone();
            // Claimed first: kick hands a run to one start only, so an
            // agent that restarted while it ran does not run it again.
            let claim = json!({ "from": 0, "lines": [], "start": self.claimant });
            let path = format!("/v1/nodes/{}/runs/{id}", self.node);
            let claimed = self
                .kick
                .expect(
                    reqwest::Method::PUT,
                    &path,
                    Some(claim),
                    Duration::from_secs(10),
                )
                .await;
            let task = match claimed {
                Ok(_) => match self.runtime.start_run(&spec).await {
                    Ok(process) => {
                        eprintln!(
                            "node: run {id} of {}.{} started at {address}",
                            assigned.app, assigned.service
                        );
                        tokio::spawn(crate::agent::runs::follow(
                            process, spec, kick, node, cancelled,
                        ))
                    }
                    Err(err) => {
                        eprintln!("node: cannot start run {id}: {err}");
                        tokio::spawn(crate::agent::runs::refused(kick, node, id, err))
                    }
                },
                Err(CallError::Refused(status @ (403 | 404 | 409 | 410), why)) => {
                    // Started before (by this node's earlier agent): what
                    // is left of it is removed, and kick told.
                    eprintln!("node: run {id} is not started ({status}: {why})");
                    self.runtime.forget_run(&spec).await;
                    tokio::spawn(crate::agent::runs::refused(
                        kick,
                        node,
                        id,
                        "the node agent restarted while it ran; it was stopped, not run again"
                            .to_owned(),
                    ))
                }
                Err(err) => {
                    eprintln!("node: cannot claim run {id}: {err}; trying again");
                    continue;
                }
            };
            self.runs.insert(
                id,
                NodeRun {
                    address,
                    cancel: Some(cancel),
                    task,
                },
            );
        }
    }

    /// Takes a replica out of DNS, then stops it.
    async fn retire(&mut self, key: &ReplicaKey) {
        let Some(running) = self.running.remove(key) else {
            return;
        };
        // Out of DNS first, then stopped.
        if let Some(id) = &running.registered {
            let path = format!("/v1/instances/{id}");
            if let Err(err) = self
                .kick
                .expect(
                    reqwest::Method::DELETE,
                    &path,
                    None,
                    Duration::from_secs(10),
                )
                .await
            {
                eprintln!("node: cannot deregister {}: {err}", describe(key));
            }
        }
        match self.runtime.stop(&running.spec).await {
            Ok(()) => eprintln!("node: stopped {}", describe(key)),
            Err(err) => eprintln!("node: cannot stop {}: {err}", describe(key)),
        }
    }

    /// The lowest address of the subnet no replica holds (the first is the
    /// bridge's gateway), or the node's own without a subnet.
    fn free_address(&self) -> Option<IpAddr> {
        self.free(false)
    }

    /// A free address for a run: from the top of the subnet, so that runs
    /// never take the addresses replicas take from the bottom (after the
    /// agent restarts, it starts its runs before it learns its replicas
    /// again, which keep the addresses they had).
    fn free_run_address(&self) -> Option<IpAddr> {
        self.free(true)
    }

    fn free(&self, from_top: bool) -> Option<IpAddr> {
        let Some(subnet) = self.subnet else {
            return Some(self.fallback_address);
        };
        let used: BTreeSet<IpAddr> = self
            .running
            .values()
            .map(|r| r.spec.address)
            .chain(self.runs.values().map(|r| r.address))
            .collect();
        free_in(subnet, &used, from_top)
    }

    /// Observes every replica; starts again, after a pause, those that
    /// exited.
    async fn restart_exited(&mut self) {
        for (key, running) in &mut self.running {
            let observed = self.runtime.observe(&running.spec).await;
            running.memory_mib = observed.memory_mib;
            if let Some(ns) = observed.cpu_ns {
                let now = Instant::now();
                if let Some((at, before)) = running.cpu_reading {
                    let elapsed = now.duration_since(at).as_nanos().max(1);
                    let used = u128::from(ns.saturating_sub(before));
                    running.cpu_millis = u64::try_from(used * 1000 / elapsed).ok();
                }
                running.cpu_reading = Some((now, ns));
            }
            // The reason is the replica's last line: no secret leaves in it.
            let detail = observed.detail.map(|d| {
                crate::agent::runtime::scrub(&running.spec, vec![d])
                    .pop()
                    .unwrap_or_default()
            });
            match observed.state {
                ReplicaState::Failed | ReplicaState::Stopped => {
                    if running.state != ReplicaState::Failed {
                        eprintln!(
                            "node: {} {}",
                            describe(key),
                            detail.as_deref().unwrap_or("stopped")
                        );
                    }
                    running.state = ReplicaState::Failed;
                    running.detail = detail.or(running.detail.take());
                    let since = *running.exited_at.get_or_insert_with(Instant::now);
                    if since.elapsed() >= RESTART_AFTER {
                        running.exited_at = None;
                        if let Err(err) = self.runtime.start(&running.spec).await {
                            running.detail = Some(err);
                            running.exited_at = Some(Instant::now());
                        }
                    }
                }
                state => {
                    running.state = state;
                    if state == ReplicaState::Running {
                        running.detail = None;
                        running.exited_at = None;
                    }
                }
            }
            running.output = if running.state == ReplicaState::Failed
                || running.started.elapsed() < OUTPUT_WHILE_NEW
            {
                let printed = self.runtime.output(&running.spec).await;
                let printed = crate::agent::runtime::scrub(&running.spec, printed);
                crate::spec::assignment::last_lines(printed.iter().map(String::as_str))
            } else {
                Vec::new()
            };
        }
    }

    /// Registers running replicas not yet registered; heartbeats the others
    /// now and then (a kick restarted since re-learns them from Route53,
    /// but a heartbeat to an instance it no longer knows re-registers it).
    async fn register_and_refresh(&mut self) -> Result<(), CallError> {
        let refresh = self
            .last_refresh
            .is_none_or(|at| at.elapsed() >= REFRESH_EVERY);
        for (key, running) in &mut self.running {
            if running.state != ReplicaState::Running {
                continue;
            }
            if let (Some(id), true) = (&running.registered, refresh) {
                let path = format!("/v1/instances/{id}/heartbeat");
                match self
                    .kick
                    .call(reqwest::Method::PUT, &path, None, Duration::from_secs(10))
                    .await?
                {
                    (404, _) => running.registered = None,
                    _ => continue,
                }
            }
            if running.registered.is_some() {
                continue;
            }
            let Some(port) = running.spec.assigned.port else {
                // A worker without a port is not in DNS; kick learns of it
                // from the report.
                continue;
            };
            let mut body = json!({
                "app": key.0, "service": key.1, "node": self.node,
                "address": running.spec.address, "port": port, "replica": key.2,
            });
            if let Some(version) = running.spec.version() {
                // The release it runs: a deploy waits for this one.
                body["version"] = json!(version);
            }
            let answer = self
                .kick
                .expect(
                    reqwest::Method::POST,
                    "/v1/instances",
                    Some(body),
                    Duration::from_secs(30),
                )
                .await;
            match answer {
                Ok(text) => {
                    running.registered = serde_json::from_str::<serde_json::Value>(&text)
                        .ok()
                        .and_then(|v| v["id"].as_str().map(str::to_owned));
                }
                Err(CallError::Refused(status, why)) => {
                    eprintln!(
                        "node: kick refused the registration of {} ({status}): {why}",
                        describe(key)
                    );
                }
                Err(err) => return Err(err),
            }
        }
        if refresh {
            self.last_refresh = Some(Instant::now());
        }
        Ok(())
    }

    /// Sends what the node runs when it changed, or now and then.
    async fn report(&mut self) -> Result<(), CallError> {
        // Output within a budget, failed replicas' first: kick takes a
        // report of at most 64 KiB.
        let mut budget = OUTPUT_BUDGET;
        let mut outputs: BTreeMap<&ReplicaKey, Vec<String>> = BTreeMap::new();
        let mut by_need: Vec<(&ReplicaKey, &Running)> = self.running.iter().collect();
        by_need.sort_by_key(|(_, r)| r.state != ReplicaState::Failed);
        for (key, r) in by_need {
            let size: usize = r.output.iter().map(|l| l.len() + 1).sum();
            if size > 0 && size <= budget {
                budget -= size;
                outputs.insert(key, r.output.clone());
            }
        }
        let replicas: Vec<ReplicaReport> = self
            .running
            .iter()
            .map(|(key, r)| ReplicaReport {
                app: key.0.clone(),
                service: key.1.clone(),
                replica: key.2,
                state: r.state,
                detail: r.detail.clone(),
                address: Some(r.spec.address),
                version: r.spec.version().map(str::to_owned),
                cpu_millis: r.cpu_millis,
                memory_mib: r.memory_mib,
                output: outputs.remove(key).unwrap_or_default(),
            })
            .collect();
        let unchanged = self.last_report.as_ref().is_some_and(|(at, last)| {
            at.elapsed() < REFRESH_EVERY
                && last.len() == replicas.len()
                && last.iter().zip(&replicas).all(|(a, b)| {
                    (a.state, &a.detail, a.address, &a.output)
                        == (b.state, &b.detail, b.address, &b.output)
                })
        });
        if unchanged {
            return Ok(());
        }
        let report = NodeReport {
            generation: self.generation.unwrap_or(0),
            replicas: replicas.clone(),
        };
        let body = serde_json::to_value(&report).expect("a report serializes");
        let path = format!("/v1/nodes/{}/status", self.node);
        self.kick
            .expect(
                reqwest::Method::PUT,
                &path,
                Some(body),
                Duration::from_secs(10),
            )
            .await?;
        self.last_report = Some((Instant::now(), replicas));
        Ok(())
    }
}

/// The first address of `subnet` not in `used`, from the bottom (after
/// the bridge's gateway, its first) or from the top.
fn free_in(subnet: Ipv4Net, used: &BTreeSet<IpAddr>, from_top: bool) -> Option<IpAddr> {
    let gateway = subnet.hosts().next();
    let free = |a: &std::net::Ipv4Addr| Some(*a) != gateway && !used.contains(&IpAddr::V4(*a));
    if from_top {
        subnet.hosts().rev().find(free).map(IpAddr::V4)
    } else {
        subnet.hosts().find(free).map(IpAddr::V4)
    }
}

fn describe(key: &ReplicaKey) -> String {
    format!("{}.{}#{}", key.0, key.1, key.2)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::net::IpAddr;

    /// Regression (review): runs took addresses from the bottom, as
    /// replicas do; an agent that restarted started its runs first, on
    /// the addresses its running replicas held, and gave those replicas
    /// new ones.
    #[test]
    fn runs_take_addresses_from_the_top_and_replicas_from_the_bottom() {
        let subnet = "100.64.3.0/29".parse().expect("subnet");
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        let mut used = BTreeSet::new();
        assert_eq!(super::free_in(subnet, &used, false), Some(ip("100.64.3.2")));
        assert_eq!(super::free_in(subnet, &used, true), Some(ip("100.64.3.6")));
        used.extend([
            ip("100.64.3.6"),
            ip("100.64.3.5"),
            ip("100.64.3.4"),
            ip("100.64.3.3"),
        ]);
        assert_eq!(super::free_in(subnet, &used, true), Some(ip("100.64.3.2")));
        used.insert(ip("100.64.3.2"));
        assert_eq!(
            super::free_in(subnet, &used, true),
            None,
            "never the gateway"
        );
    }
}
