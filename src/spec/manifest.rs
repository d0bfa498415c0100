//! The artifact manifest in the bucket: what the nodes run, and what the
//! next plan diffs against.
//!
//! `huxley/manifest.json` lists every artifact with its SHA-256 and the
//! content-addressed key of its blob (`huxley/blobs/<sha256>`), which the
//! node agent fetches. It also carries the text itself, so a plan reads one
//! object whatever the number of services.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::sha256;

/// Where the artifacts sit in a build and in the manifest: the kick
/// server's configuration, the service units, and each app's hook.
pub const KICK_TOML: &str = "kick/kick.toml";
pub const UNITS: &str = "units/";
pub const HOOKS: &str = "hooks/";

/// An app's pre-receive hook.
pub fn hook_path(app: &str) -> String {
    format!("{HOOKS}{app}/pre-receive")
}

/// The app whose pre-receive hook sits at `path`.
pub fn hook_app(path: &str) -> Option<&str> {
    path.strip_prefix(HOOKS)?.strip_suffix("/pre-receive")
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub files: BTreeMap<String, ManifestEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    pub sha256: String,
    pub key: String,
    pub executable: bool,
    pub content: String,
}

impl Manifest {
    /// The manifest for a set of artifacts; hooks are executable.
    pub fn new(artifacts: &BTreeMap<String, String>) -> Self {
        let files = artifacts
            .iter()
            .map(|(path, content)| {
                let sha = sha256(content);
                let entry = ManifestEntry {
                    key: crate::spec::keys::blob(&sha),
                    sha256: sha,
                    executable: path.starts_with(HOOKS),
                    content: content.clone(),
                };
                (path.clone(), entry)
            })
            .collect();
        Self { format: 1, files }
    }

    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).expect("a manifest always serializes");
        text.push('\n');
        text
    }

    /// The artifacts as path → text, for diffing.
    pub fn contents(&self) -> BTreeMap<String, String> {
        self.files
            .iter()
            .map(|(p, e)| (p.clone(), e.content.clone()))
            .collect()
    }
}
