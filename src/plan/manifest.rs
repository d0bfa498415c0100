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

pub const MANIFEST_KEY: &str = "huxley/manifest.json";

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

/// The key of a blob with this content hash.
pub fn blob_key(sha256: &str) -> String {
    format!("huxley/blobs/{sha256}")
}

impl Manifest {
    /// The manifest for a set of artifacts; hooks are executable.
    pub fn new(artifacts: &BTreeMap<String, String>) -> Self {
        let files = artifacts
            .iter()
            .map(|(path, content)| {
                let sha = sha256(content);
                let entry = ManifestEntry {
                    key: blob_key(&sha),
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

    /// The applied manifest in `bucket`, or why it cannot be had.
    pub async fn read(aws: &crate::aws::Aws, bucket: &str) -> Result<Self, String> {
        let bytes = aws
            .get_object(bucket, MANIFEST_KEY)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("s3://{bucket} has no manifest: run `huxley apply`"))?;
        serde_json::from_slice(&bytes).map_err(|e| format!("the manifest does not parse: {e}"))
    }

    /// The artifacts as path → text, for diffing.
    pub fn contents(&self) -> BTreeMap<String, String> {
        self.files
            .iter()
            .map(|(p, e)| (p.clone(), e.content.clone()))
            .collect()
    }
}
