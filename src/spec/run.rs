//! One-off runs: a command run once in a new container of a service (its
//! image, environment and secrets), placed by kick on a node with room.
//! `huxley run` asks for one (`POST /v1/apps/{app}/services/{service}/runs`)
//! and follows it (`GET /v1/runs/{id}`); the deploy controller runs a
//! service's release command as one; the node agent runs it
//! ([`AssignedRun`], in its assignment) and sends its output and its end
//! (`PUT /v1/nodes/{node}/runs/{id}`).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A run's timeout when the request names none.
pub const DEFAULT_TIMEOUT_SECONDS: u64 = 10 * 60;
/// The longest timeout a run may ask for.
pub const MAX_TIMEOUT_SECONDS: u64 = 24 * 60 * 60;
/// How long one line of output may be, in bytes: a longer one is cut into
/// pieces of this size (six times as many as JSON at worst, within the
/// API's 64 KiB a request).
pub const LINE_BYTES: usize = 8 * 1024;

/// `POST /v1/apps/{app}/services/{service}/runs` (the admin only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    /// The command and its arguments, run instead of the image's command
    /// (no shell: `["sh", "-c", "…"]` for one). Its size is bounded by the
    /// API's 64 KiB a request.
    #[schemars(length(min = 1), inner(regex(pattern = r"^[^\u0000]*$")))]
    pub command: Vec<String>,
    /// Run from this release's image (`huxley deploys` lists them);
    /// default: the release the service runs.
    #[serde(default, deserialize_with = "crate::spec::integral::option")]
    pub release: Option<u64>,
    /// Seconds before the run is stopped; default 600, at most a day.
    #[serde(default, deserialize_with = "crate::spec::integral::option")]
    #[schemars(range(min = 1, max = 86400))]
    pub timeout_seconds: Option<u64>,
}

impl RunRequest {
    /// Why the command cannot be run, if it cannot.
    pub fn problem(&self) -> Option<String> {
        if self.command.is_empty() {
            return Some("the command is empty: name a program to run".into());
        }
        if self.command.iter().any(|w| w.contains('\0')) {
            return Some("the command holds a NUL character, which no program can be given".into());
        }
        match self.timeout_seconds {
            Some(0) => Some("the timeout is 0 seconds: give at least 1".into()),
            Some(t) if t > MAX_TIMEOUT_SECONDS => Some(format!(
                "the timeout is {t} seconds; at most {MAX_TIMEOUT_SECONDS} (a day)"
            )),
            _ => None,
        }
    }
}

/// A run a node must start (in its assignment).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AssignedRun {
    pub id: u64,
    pub app: String,
    pub service: String,
    /// The service's template unit: the run's container is made as its
    /// replicas' are, as instance `run-<id>`.
    pub unit: String,
    pub image: Option<String>,
    pub command: Vec<String>,
    /// Where the service's dependencies are, as its replicas are told.
    pub env: BTreeMap<String, String>,
    pub port: Option<u16>,
    /// The node stops the run after this many seconds.
    pub timeout_seconds: u64,
    /// Whether the node takes the service's secret values out of the
    /// output it sends (a release command's, which pushers read).
    #[serde(default)]
    pub redact: bool,
}

impl AssignedRun {
    /// The instance name the run's container and files take, where a
    /// replica's take its number.
    pub fn instance(&self) -> String {
        format!("run-{}", self.id)
    }
}

/// Which of the run's streams a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    Stdout,
    Stderr,
}

/// One line the run printed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Line {
    pub stream: Stream,
    pub text: String,
}

/// How a run ended, as its node says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum RunEnd {
    /// The command ended with this status (128 + N for signal N).
    Exited { code: i32 },
    /// It ran past its timeout and was stopped.
    TimedOut,
    /// It could not be started (its container could not be made, its
    /// node agent restarted while it ran).
    Failed { reason: String },
}

/// `PUT /v1/nodes/{node}/runs/{id}`: what a run printed since the last
/// update, and its end once it ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunUpdate {
    /// The index of the first line below in the run's output: a resent
    /// update is not counted twice.
    #[serde(deserialize_with = "crate::spec::integral::value")]
    pub from: u64,
    #[serde(default)]
    #[schemars(length(max = 1000))]
    pub lines: Vec<Line>,
    #[serde(default)]
    pub end: Option<RunEnd>,
    /// The node claims the run before it starts it, with a number its
    /// agent drew when it started: kick grants one claim (a repeat of it,
    /// whose answer was lost, too; 409 to any other), so a node agent that
    /// restarted never starts a run a second time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<u64>,
}

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Placed; its node has not said it started.
    Pending,
    Running,
    /// It ended with an exit status (`exit_code`).
    Exited,
    TimedOut,
    /// It could not start (`reason`).
    Failed,
    /// Stopped at the caller's request.
    Cancelled,
    /// Its node stopped answering for it, or the leader changed.
    Lost,
}

impl RunState {
    pub fn ended(self) -> bool {
        !matches!(self, RunState::Pending | RunState::Running)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Pending => "pending",
            RunState::Running => "running",
            RunState::Exited => "exited",
            RunState::TimedOut => "timed out",
            RunState::Failed => "failed",
            RunState::Cancelled => "cancelled",
            RunState::Lost => "lost",
        }
    }
}

/// `GET /v1/runs/{id}?after=N&wait=S`: a run and its output from line N.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RunStatus {
    pub id: u64,
    pub app: String,
    pub service: String,
    pub node: String,
    pub command: Vec<String>,
    pub image: Option<String>,
    /// The release whose image it runs, for a service built on push.
    pub release: Option<u64>,
    pub state: RunState,
    pub exit_code: Option<i32>,
    /// Why it failed, was lost or cancelled.
    pub reason: Option<String>,
    /// Seconds since the Unix epoch.
    pub created: u64,
    pub finished: Option<u64>,
    pub timeout_seconds: u64,
    /// Lines from `after` on (at most 1,000 an answer).
    pub lines: Vec<Line>,
    /// The index to ask from next.
    pub next: u64,
    /// Lines before `next` that kick no longer holds (it keeps the last
    /// 10,000 of a run) and this answer skipped.
    pub skipped: u64,
}

/// The exit status `huxley run` ends with for a run that did not end by
/// itself: `timeout(1)`'s for a timeout, Docker's for a container that
/// could not run.
pub fn exit_status(state: RunState, exit_code: Option<i32>) -> i32 {
    match state {
        RunState::Exited => exit_code.unwrap_or(1),
        RunState::TimedOut => 124,
        RunState::Cancelled => 130,
        _ => 125,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(command: &[&str], timeout: Option<u64>) -> RunRequest {
        RunRequest {
            command: command.iter().map(|w| (*w).to_owned()).collect(),
            release: None,
            timeout_seconds: timeout,
        }
    }

    #[test]
    fn a_run_request_is_checked() {
        assert_eq!(request(&["printenv", "API_URL"], None).problem(), None);
        assert!(request(&[], None).problem().unwrap().contains("empty"));
        // An empty program is the container's to refuse, as `docker run`'s.
        assert_eq!(request(&[""], None).problem(), None);
        assert!(request(&["a\0b"], None).problem().unwrap().contains("NUL"));
        assert!(
            request(&["x"], Some(0))
                .problem()
                .unwrap()
                .contains("at least 1")
        );
        assert!(
            request(&["x"], Some(MAX_TIMEOUT_SECONDS + 1))
                .problem()
                .unwrap()
                .contains("a day")
        );
    }

    #[test]
    fn the_cli_ends_as_the_run_did() {
        assert_eq!(exit_status(RunState::Exited, Some(3)), 3);
        assert_eq!(exit_status(RunState::Exited, Some(0)), 0);
        assert_eq!(exit_status(RunState::TimedOut, None), 124);
        assert_eq!(exit_status(RunState::Failed, None), 125);
        assert_eq!(exit_status(RunState::Lost, None), 125);
        assert_eq!(exit_status(RunState::Cancelled, None), 130);
    }
}
