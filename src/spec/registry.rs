//! The registry's contract: what registering a replica carries, a record
//! write's body, an instance's health status, an instance's id, and the
//! prefix of the ownership records kick and `huxley plan` both read.

use std::net::IpAddr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Unknown,
    Healthy,
    Unhealthy,
}

/// What registering an instance needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    pub app: String,
    pub service: String,
    /// The node the replica runs on: the EC2 instance id of one of the
    /// cluster's nodes.
    #[schemars(length(min = 1, max = 32), extend("pattern" = "^[A-Za-z0-9._:@+/-]+$"))]
    pub node: String,
    /// The address the replica is reached at (IPv4 or IPv6).
    #[schemars(schema_with = "ip_schema")]
    pub address: IpAddr,
    #[schemars(range(min = 1))]
    #[serde(deserialize_with = "crate::spec::integral::value")]
    pub port: u16,
    /// The deployed version (commit, image tag or digest): letters, digits
    /// and `._:@+/-`, at most 128 characters.
    #[serde(default)]
    #[schemars(length(min = 1, max = 128), extend("pattern" = "^[A-Za-z0-9._:@+/-]+$"))]
    pub version: Option<String>,
    /// The replica number (`<unit>@<n>`) when a node agent runs it; kick
    /// keeps each replica on its node across restarts and failovers by it.
    #[serde(default, deserialize_with = "crate::spec::integral::option")]
    #[schemars(range(min = 1, max = 10_000))]
    pub replica: Option<u32>,
}

/// Characters a node id or version may hold: they are written into a TXT
/// record, space-separated.
fn recordable(text: &str) -> bool {
    text.chars()
        .all(|c| c.is_ascii_alphanumeric() || "._:@+/-".contains(c))
}

impl Registration {
    /// Refuses what cannot be recorded in the replicas record.
    pub fn check(&self) -> Result<(), String> {
        if self.node.is_empty() || self.node.len() > 32 || !recordable(&self.node) {
            return Err(format!(
                "node `{}` is not a node id: use the EC2 instance id (letters, digits, `-`)",
                self.node
            ));
        }
        if let Some(version) = &self.version
            && (version.is_empty() || version.len() > 128 || !recordable(version))
        {
            return Err(
                "version must be 1 to 128 letters, digits or `._:@+/-` (a commit, image tag or digest)"
                    .into(),
            );
        }
        if self.replica.is_some_and(|n| n == 0 || n > 10_000) {
            return Err("replica must be a number from 1 to 10000".into());
        }
        Ok(())
    }
}

/// An IP address, as JSON Schema's standard formats say it.
fn ip_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "anyOf": [{ "format": "ipv4" }, { "format": "ipv6" }],
    })
}

/// A stable id for a replica: service, node, address and port.
pub fn instance_id(r: &Registration) -> String {
    let digest = crate::digest::sha256(format!(
        "{}/{}/{}/{}/{}",
        r.app, r.service, r.node, r.address, r.port
    ));
    format!("{}-{}-{}", r.app, r.service, &digest[..12])
}

/// The prefix of Huxley's ownership records: `_huxley-owner.<name>`.
pub const OWNER_PREFIX: &str = "_huxley-owner.";

/// The body of a record write.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordRequest {
    /// A fully qualified name the calling service may use.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// A, AAAA, CNAME, SRV or TXT.
    #[serde(rename = "type")]
    #[schemars(extend("enum" = ["A", "AAAA", "CNAME", "SRV", "TXT"]))]
    pub kind: String,
    /// Time to live in seconds; default 60.
    #[serde(default, deserialize_with = "crate::spec::integral::option")]
    #[schemars(range(min = 0, max = 2_147_483_647))]
    pub ttl: Option<i64>,
    /// The record's values; ignored on delete.
    #[serde(default)]
    pub values: Vec<String>,
}
