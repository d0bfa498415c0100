//! Releases: what `POST /v1/apps/{app}/deployments` asks for, and each
//! deploy as the history in the artifact bucket records it
//! ([`super::keys::history`]), which `huxley deploys` reads without the
//! cluster.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What a deploy did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Rolling out now.
    Running,
    /// Every replica runs the release.
    Succeeded,
    /// A new replica failed; the previous release runs again.
    RolledBack,
    /// A new replica failed and the previous release could not be put
    /// back everywhere either: see the events.
    Failed,
    /// The leader that ran it stopped leading before it ended; the next
    /// leader runs the last successful release.
    Interrupted,
    /// A release command did not succeed: no replica moved.
    Refused,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Running => "running",
            Outcome::Succeeded => "succeeded",
            Outcome::RolledBack => "rolled back",
            Outcome::Failed => "failed",
            Outcome::Interrupted => "interrupted",
            Outcome::Refused => "refused",
        }
    }
}

/// One line of a deploy's progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Event {
    /// Seconds since the Unix epoch.
    pub at: u64,
    pub text: String,
}

/// One deploy of an app: a release.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Release {
    /// The app's release number, from 1.
    pub id: u64,
    pub app: String,
    /// The commit pushed, or the one a rollback redeploys.
    pub commit: Option<String>,
    /// The SHA-256 fingerprint of the pusher's SSH key; `admin` for a
    /// rollback asked with the admin token.
    pub by: Option<String>,
    /// For a rollback: the release it redeploys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_of: Option<u64>,
    /// Seconds since the Unix epoch.
    pub started: u64,
    pub finished: Option<u64>,
    pub outcome: Outcome,
    /// Each built service's image, pinned by digest.
    pub images: BTreeMap<String, String>,
    /// A digest of each built service's build context (what its image
    /// was built from), so a push of the same files keeps the image.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sources: BTreeMap<String, String>,
    /// What each service ran before.
    #[serde(default)]
    pub previous: BTreeMap<String, String>,
    /// For a restart: the services whose replicas were replaced on the
    /// images they run (after a secret they read changed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restarted: Vec<String>,
    /// Replicas started on the new images (old ones they replaced).
    pub replaced: u32,
    /// Why it did not succeed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default)]
    pub events: Vec<Event>,
}

impl Release {
    /// Whether this deploy put its images in place: it succeeded and was
    /// not a restart (which ran the images it found). What runs, and what
    /// a rollback returns to, are such releases.
    pub fn placed_images(&self) -> bool {
        self.outcome == Outcome::Succeeded && self.restarted.is_empty()
    }
}

/// `POST /v1/apps/{app}/deployments`: a new release (the hook server,
/// after a push and a build) or a rollback (the admin).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeployRequest {
    /// The pushed commit.
    #[serde(default)]
    pub commit: Option<String>,
    /// Each built service's image, pinned by digest
    /// (`registry/repository@sha256:…`).
    #[serde(default)]
    pub images: BTreeMap<String, String>,
    /// A digest of each built service's build context
    /// (`sha256:` and 64 hex digits).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sources: BTreeMap<String, String>,
    /// The pusher's SSH key fingerprint.
    #[serde(default)]
    pub by: Option<String>,
    /// Redeploy this earlier release instead (0: the one before the
    /// current release).
    #[serde(default, deserialize_with = "crate::spec::integral::option")]
    pub rollback_to: Option<u64>,
    /// Restart these services instead (the admin only): each replica is
    /// replaced by one on the image it runs, through the same health-gated
    /// rollout, so it reads its secrets again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restart: Vec<String>,
    /// Why, for the history (`secret API_KEY set`): one printable line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}

/// The release a service runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ServiceRelease {
    /// The app's release number.
    pub id: u64,
    pub commit: Option<String>,
    /// The image, pinned by digest.
    pub image: String,
}

/// Checks an image a deploy names: `REGISTRY/REPOSITORY@sha256:` and 64
/// lowercase hex digits, where REPOSITORY is the app's own repository and
/// REGISTRY the cluster's (when the caller knows it; otherwise a host name
/// with an optional port). The reason it is refused, otherwise.
pub fn check_image(image: &str, registry: Option<&str>, repository: &str) -> Result<(), String> {
    let expected = || {
        format!(
            "expected {}/{repository}@sha256:<64 hex digits>",
            registry.unwrap_or("<registry>")
        )
    };
    let (name, digest) = image
        .split_once('@')
        .ok_or_else(|| format!("is not pinned by digest; {}", expected()))?;
    let hex = digest
        .strip_prefix("sha256:")
        .ok_or_else(|| format!("is not pinned by a sha256 digest; {}", expected()))?;
    if hex.len() != 64
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(format!("has a malformed digest; {}", expected()));
    }
    let (host, path) = name
        .split_once('/')
        .ok_or_else(|| format!("names no registry; {}", expected()))?;
    if path != repository {
        return Err(format!("is not from the app's repository; {}", expected()));
    }
    let host_ok = match registry {
        Some(registry) => host == registry,
        None => {
            let (domain, port) = host.split_once(':').unwrap_or((host, "1"));
            domain.starts_with(|c: char| c.is_ascii_alphanumeric())
                && domain
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
                && port.parse::<u16>().is_ok()
        }
    };
    if !host_ok {
        return Err(format!(
            "is not from the cluster's registry; {}",
            expected()
        ));
    }
    Ok(())
}

/// An app's deploy history as the bucket keeps it: its releases, oldest
/// first, and the leadership that wrote it last. Every leadership's first
/// write changes the object (and its ETag), so a version an earlier leader
/// read is gone and that leader's conditional writes are refused.
#[derive(Debug, Serialize, Deserialize)]
struct StoredHistory {
    writer: u64,
    releases: Vec<Release>,
}

/// An app's history, as the bucket keeps it (or kept it before it named
/// its writer: a bare list of releases).
pub fn parse_history(bytes: &[u8]) -> Result<Vec<Release>, serde_json::Error> {
    match serde_json::from_slice::<StoredHistory>(bytes) {
        Ok(stored) => Ok(stored.releases),
        Err(_) => serde_json::from_slice(bytes),
    }
}

/// The bytes of `releases` written by leadership `writer`.
pub fn history_bytes(releases: &[Release], writer: u64) -> Vec<u8> {
    serde_json::to_vec_pretty(&StoredHistory {
        writer,
        releases: releases.to_vec(),
    })
    .expect("releases serialize")
}

/// The short form of a commit or digest, as people read them.
pub fn short(text: &str) -> &str {
    let text = text.rsplit('@').next().unwrap_or(text);
    let hex = text.strip_prefix("sha256:").unwrap_or(text);
    &hex[..hex.len().min(12)]
}

/// The digest of an image pinned by digest (`…@sha256:…`), which node
/// agents report as the replica's version.
pub fn version_of(image: &str) -> Option<&str> {
    image.rsplit_once('@').map(|(_, digest)| digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "2850f9785568690e626e9b1a2079a64b8507358302810817b3f7f0c63299c405";

    /// Regression (schemathesis, ST202): `3322.0` is an integer to JSON
    /// Schema, and the API refused it with 400.
    #[test]
    fn a_rollback_to_a_whole_number_written_with_a_fraction_is_accepted() {
        let ask = |text: &str| serde_json::from_str::<DeployRequest>(text).map(|r| r.rollback_to);
        assert_eq!(ask(r#"{"rollback_to": 3322.0}"#).ok(), Some(Some(3322)));
        assert_eq!(ask(r#"{"rollback_to": 2}"#).ok(), Some(Some(2)));
        assert_eq!(ask(r#"{"rollback_to": null}"#).ok(), Some(None));
        assert_eq!(ask("{}").ok(), Some(None));
        assert!(ask(r#"{"rollback_to": 2.5}"#).is_err());
        assert!(ask(r#"{"rollback_to": -1}"#).is_err());
    }

    #[test]
    fn a_history_names_its_writer_and_one_written_before_still_reads() {
        assert!(parse_history(b"[]").expect("a bare list").is_empty());
        let written = history_bytes(&[], 7);
        let text = String::from_utf8(written.clone()).expect("utf-8");
        assert!(text.contains("\"writer\": 7"), "{text}");
        assert!(parse_history(&written).expect("parses").is_empty());
        assert_ne!(
            history_bytes(&[], 7),
            history_bytes(&[], 8),
            "two leaderships, two objects"
        );
        assert!(parse_history(b"{ not json").is_err());
    }

    #[test]
    fn images_come_from_the_apps_repository_pinned_by_a_well_formed_digest() {
        let good = format!("1234.dkr.ecr.us-west-2.amazonaws.com/huxley-acme/blog@sha256:{HEX}");
        let registry = Some("1234.dkr.ecr.us-west-2.amazonaws.com");
        assert_eq!(check_image(&good, registry, "huxley-acme/blog"), Ok(()));
        assert_eq!(check_image(&good, None, "huxley-acme/blog"), Ok(()));
        assert_eq!(
            check_image(
                &format!("127.0.0.1:5000/huxley-acme/blog@sha256:{HEX}"),
                None,
                "huxley-acme/blog"
            ),
            Ok(())
        );
        for bad in [
            // The issue's injection: a line break after a short digest.
            "x@sha256:0\nDOCKER_HOST=tcp://10.0.0.9:2375".to_owned(),
            format!("1234.dkr.ecr.us-west-2.amazonaws.com/huxley-acme/blog@sha256:{HEX}\r"),
            format!(
                "1234.dkr.ecr.us-west-2.amazonaws.com/huxley-acme/blog@sha256:{}",
                HEX.to_uppercase()
            ),
            "1234.dkr.ecr.us-west-2.amazonaws.com/huxley-acme/blog:latest".to_owned(),
            format!("1234.dkr.ecr.us-west-2.amazonaws.com/huxley-acme/other@sha256:{HEX}"),
            format!("evil.example/huxley-acme/blog@sha256:{HEX}"),
            format!("huxley-acme/blog@sha256:{HEX}"),
            format!("1234.dkr.ecr.us-west-2.amazonaws.com/huxley-acme/blog@sha512:{HEX}"),
        ] {
            assert!(
                check_image(&bad, registry, "huxley-acme/blog").is_err(),
                "{bad:?}"
            );
        }
        for bad in [
            format!("ev il/huxley-acme/blog@sha256:{HEX}"),
            format!("-e/huxley-acme/blog@sha256:{HEX}"),
            format!("h:99999/huxley-acme/blog@sha256:{HEX}"),
        ] {
            assert!(
                check_image(&bad, None, "huxley-acme/blog").is_err(),
                "{bad:?}"
            );
        }
    }
}
