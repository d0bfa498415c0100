//! What the leader hands each node agent and what the agent reports back:
//! `GET /v1/nodes/{id}/assignment` and `PUT /v1/nodes/{id}/status`.

use std::collections::BTreeMap;
use std::net::IpAddr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One node's share (`GET /v1/nodes/{id}/assignment`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Assignment {
    pub node: String,
    /// Changes whenever any node's assignment changes; pass it back as
    /// `after` to wait for the next change.
    pub generation: u64,
    /// The node's container subnet: replicas take addresses in it.
    pub subnet: Option<String>,
    pub replicas: Vec<AssignedReplica>,
    /// One-off runs to start (`huxley run`, release commands); a run that
    /// leaves the list is stopped.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runs: Vec<crate::spec::run::AssignedRun>,
}

/// One replica a node must run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AssignedReplica {
    pub app: String,
    pub service: String,
    /// The replica number: the systemd instance `<unit>@<replica>`.
    pub replica: u32,
    pub unit: String,
    /// The image: prebuilt, or the release of a service built on push
    /// (pinned by digest).
    pub image: Option<String>,
    pub port: Option<u16>,
    pub host_port: Option<u16>,
    /// Where the services it depends on are found (`<NAME>_HOST`,
    /// `<NAME>_PORT` and `<NAME>_URL`).
    pub env: BTreeMap<String, String>,
}

/// What a node agent runs (`PUT /v1/nodes/{id}/status`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeReport {
    /// The assignment generation the node has applied.
    #[serde(deserialize_with = "crate::spec::integral::value")]
    pub generation: u64,
    pub replicas: Vec<ReplicaReport>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplicaReport {
    pub app: String,
    pub service: String,
    #[serde(deserialize_with = "crate::spec::integral::value")]
    pub replica: u32,
    pub state: ReplicaState,
    /// Why it failed: the last exit, or the image pull's error.
    #[serde(default)]
    pub detail: Option<String>,
    #[serde(default)]
    pub address: Option<IpAddr>,
    /// The image's digest, for an image pinned by one: the release it runs.
    #[serde(default)]
    pub version: Option<String>,
    /// CPU used, in thousandths of a core.
    #[serde(default, deserialize_with = "crate::spec::integral::option")]
    pub cpu_millis: Option<u64>,
    #[serde(default, deserialize_with = "crate::spec::integral::option")]
    pub memory_mib: Option<u64>,
    /// What it printed last (at most [`OUTPUT_LINES`] lines of at most
    /// [`OUTPUT_WIDTH`] characters): sent while it is new or after it
    /// failed, so a deploy that fails on it can say what it printed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub output: Vec<String>,
}

/// How many lines of a replica's output a report carries.
pub const OUTPUT_LINES: usize = 20;
/// How long each line may be, in characters.
pub const OUTPUT_WIDTH: usize = 200;

/// A replica's output as a report carries it: the [`recent`] lines, each
/// [`printable`] in [`OUTPUT_WIDTH`] characters.
pub fn last_lines<'a>(lines: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    recent(lines)
        .iter()
        .map(|line| printable(line.trim_end(), OUTPUT_WIDTH))
        .collect()
}

/// The last [`OUTPUT_LINES`] lines that are not empty, as they are (the
/// agent takes secrets out of them before they are cut).
pub fn recent<'a>(lines: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let lines: Vec<&str> = lines.into_iter().filter(|l| !l.trim().is_empty()).collect();
    let skip = lines.len().saturating_sub(OUTPUT_LINES);
    lines.into_iter().skip(skip).map(str::to_owned).collect()
}

/// Text as one printable line of at most `width` characters: control
/// characters (escape sequences, carriage returns, line breaks) and the
/// invisible ones that reorder or hide text on a terminal (bidirectional
/// overrides and isolates, zero-width characters) as `?`.
pub fn printable(text: &str, width: usize) -> String {
    text.chars()
        .take(width)
        .map(|c| {
            if c.is_control() || invisible(c) {
                '?'
            } else {
                c
            }
        })
        .collect()
}

/// Unicode format characters that change how a line reads without
/// showing: bidirectional marks, embeddings, overrides and isolates, and
/// zero-width spaces and joiners.
pub fn invisible(c: char) -> bool {
    matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}' | '\u{061c}')
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReplicaState {
    Starting,
    Running,
    Failed,
    Stopped,
}
