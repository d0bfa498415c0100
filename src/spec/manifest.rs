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
                    executable: path.starts_with("hooks/"),
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
