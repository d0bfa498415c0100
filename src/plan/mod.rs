//! Stage 4: what `apply` would change, as a pure function of the desired
//! state (the build, with the image and zone resolved) and the live state
//! (read by [`crate::aws`]).
//!
//! The plan is Huxley's own diff: the live template from `GetTemplate`
//! against the new one, resource by resource, with replacement decided from
//! the CloudFormation resource schemas (`schemas/cfn-replacement.json`).
//! It is serialized as the documented JSON plan (`--json`,
//! `schemas/plan.schema.json`) and as the plan file `apply` executes.

pub mod desired;
pub mod diff;
pub mod markdown;
pub mod render;

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The plan format's version; a plan file of another version is refused.
pub const FORMAT_VERSION: u32 = 1;

/// Everything `apply` needs to make the live state match, and what it
/// would change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct Plan {
    /// [`FORMAT_VERSION`].
    pub format_version: u32,
    /// The Huxley version that made the plan.
    pub huxley_version: String,
    pub cluster: String,
    pub region: String,
    pub stack: String,
    /// What happens to the stack as a whole.
    pub stack_action: StackAction,
    /// Counts for the summary line.
    pub summary: Summary,
    /// Resource changes, destroys and replacements first.
    pub resources: Vec<ResourceChange>,
    /// Stack parameters whose values change.
    pub parameters: Vec<ParameterChange>,
    /// Changed artifacts (units, hooks, kick config, Ignition).
    pub artifacts: Vec<ArtifactChange>,
    /// Huxley's ownership records in the public zone.
    pub records: Vec<RecordChange>,
    /// The kick server's bearer tokens, SecureString parameters in SSM
    /// under `/huxley/<cluster>/tokens/`: created with a random value
    /// (never shown) for the admin, the hook server and each service, and
    /// removed when their service is.
    #[serde(default)]
    pub tokens: Vec<TokenChange>,
    /// The load balancer's certificate, when public services are behind
    /// one (or the cluster's old certificates, to delete).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<CertificatePlan>,
    /// What changed outside Huxley: the stack's drift, hand-edited records.
    pub drift: Vec<String>,
    /// Consequences worth knowing, such as nodes being replaced.
    pub notes: Vec<String>,
    /// The live state the plan was made against: `apply` refuses a plan
    /// whose base no longer matches.
    pub base: Base,
    /// What `apply` sends: the template, parameters, artifacts, records.
    pub desired: Desired,
}

impl Plan {
    pub fn has_changes(&self) -> bool {
        self.stack_action != StackAction::None
            || !self.artifacts.is_empty()
            || !self.records.is_empty()
            || !self.tokens.is_empty()
            || self
                .certificate
                .as_ref()
                .is_some_and(CertificatePlan::has_changes)
    }
}

/// The value a plan shows for what only `apply` can know (Terraform's
/// words).
pub const KNOWN_AFTER_APPLY: &str = "(known after apply)";

/// What happens to the load balancer's certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CertificatePlan {
    /// The public zone its names are in.
    pub domain: String,
    /// The names it must cover; empty when no load balancer is left.
    pub names: Vec<String>,
    pub action: CertificateAction,
    /// The certificate's ARN, when it exists already.
    pub arn: Option<String>,
    /// ACM's status of it: `ISSUED`, `PENDING_VALIDATION`.
    pub status: Option<String>,
    /// The cluster's certificates no longer wanted: deleted, with their
    /// validation records, once the stack no longer uses them.
    pub retire: Vec<String>,
}

impl CertificatePlan {
    pub fn has_changes(&self) -> bool {
        self.action == CertificateAction::Request
            || self.status.as_deref().is_some_and(|s| s != "ISSUED")
            || !self.retire.is_empty()
    }
}

impl CertificatePlan {
    /// What apply does for the certificate, a line each, for people.
    pub fn lines(&self) -> Vec<String> {
        let names = self.names.join(", ");
        let arn = self.arn.as_deref().unwrap_or(KNOWN_AFTER_APPLY);
        let mut lines = match self.action {
            CertificateAction::Request => vec![format!(
                "+ request an ACM certificate for {names}, validated by DNS in the public zone (apply waits until it is issued)"
            )],
            CertificateAction::Keep if self.status.as_deref() == Some("ISSUED") => {
                vec![format!("  keep {arn} ({names})")]
            }
            CertificateAction::Keep => vec![format!(
                "~ validate {arn} ({names}): it is {}; apply writes its validation records and waits until it is issued",
                self.status.as_deref().unwrap_or("not issued")
            )],
            CertificateAction::Given => vec![format!("  serve {arn}, named in huxley.toml")],
            CertificateAction::None => Vec::new(),
        };
        lines.extend(self.retire.iter().map(|arn| {
            format!("- delete {arn} and its validation records, once the load balancer no longer uses it")
        }));
        lines
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CertificateAction {
    /// A new certificate is requested from ACM and validated by DNS in
    /// the public zone before the stack changes.
    Request,
    /// The cluster's certificate for these names serves on (validated
    /// first, if it is still pending).
    Keep,
    /// The certificate named by `certificate-arn` in huxley.toml.
    Given,
    /// No service is behind a load balancer.
    None,
}

/// A token parameter created or removed: its name, never its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TokenChange {
    pub name: String,
    /// `add` or `remove`.
    pub action: Action,
}

/// The token parameters to create and to remove, given the ones wanted and
/// the ones that exist.
pub fn token_changes(wanted: &[String], existing: &[String]) -> Vec<TokenChange> {
    let mut changes: Vec<TokenChange> = existing
        .iter()
        .filter(|name| !wanted.contains(name))
        .map(|name| TokenChange {
            name: name.clone(),
            action: Action::Remove,
        })
        .collect();
    let mut added: Vec<&String> = wanted.iter().filter(|n| !existing.contains(n)).collect();
    added.sort();
    added.dedup();
    changes.extend(added.into_iter().map(|name| TokenChange {
        name: name.clone(),
        action: Action::Add,
    }));
    changes
}

#[cfg(test)]
mod token_tests {
    use super::*;

    #[test]
    fn tokens_are_created_for_new_services_and_removed_with_old_ones() {
        let names = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let changes = token_changes(
            &names(&["/t/admin", "/t/hook", "/t/blog/web"]),
            &names(&["/t/admin", "/t/blog/old"]),
        );
        let summary: Vec<(&str, Action)> = changes
            .iter()
            .map(|c| (c.name.as_str(), c.action))
            .collect();
        assert_eq!(
            summary,
            [
                ("/t/blog/old", Action::Remove),
                ("/t/blog/web", Action::Add),
                ("/t/hook", Action::Add)
            ]
        );
        assert!(token_changes(&names(&["/t/admin"]), &names(&["/t/admin"])).is_empty());
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StackAction {
    /// No stack yet: it is created.
    Create,
    /// The stack changes.
    Update,
    /// A stack left by a failed creation (`ROLLBACK_COMPLETE` or
    /// `ROLLBACK_FAILED`) cannot be updated: it is deleted (its bucket
    /// emptied first) and created again.
    Recreate,
    /// The stack stays as it is.
    None,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Summary {
    pub add: usize,
    pub change: usize,
    pub replace: usize,
    pub destroy: usize,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Remove,
    Replace,
    Add,
    Modify,
}

/// Whether a property change replaces its resource.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Replacement {
    Never,
    /// "Conditional" in CloudFormation's words: it depends on other values.
    Conditional,
    Always,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ResourceChange {
    pub logical_id: String,
    pub resource_type: String,
    pub action: Action,
    /// For `modify`: `conditional` when a change may replace it.
    pub replacement: Replacement,
    /// Changed property paths, such as `LaunchTemplateData.InstanceType`.
    pub properties: Vec<PropertyChange>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PropertyChange {
    pub path: String,
    /// Absent when the property is added.
    pub before: Option<Value>,
    /// Absent when the property is removed.
    pub after: Option<Value>,
    pub replacement: Replacement,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ParameterChange {
    pub name: String,
    pub before: Option<String>,
    pub after: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ArtifactChange {
    pub path: String,
    pub action: Action,
    /// A unified diff from the live file to the new one.
    pub diff: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RecordChange {
    pub name: String,
    /// `add` (UPSERT), `modify` (UPSERT over a hand-edited value) or
    /// `remove` (DELETE).
    pub action: Action,
    pub value: String,
}

/// A fingerprint of the live state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Base {
    /// The stack's id, absent when there was no stack.
    pub stack_id: Option<String>,
    pub stack_status: Option<String>,
    /// SHA-256 of the live template body.
    pub template_sha256: Option<String>,
    /// SHA-256 of the live artifact manifest.
    pub manifest_sha256: Option<String>,
}

/// What `apply` sends to AWS.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Desired {
    pub template_body: String,
    pub parameters: BTreeMap<String, String>,
    /// Artifact path → contents. Never holds a secret value: secrets are
    /// references by construction.
    pub artifacts: BTreeMap<String, String>,
    /// Ownership record name → TXT value, in the public zone.
    pub records: BTreeMap<String, String>,
    /// The public zone's id, when the cluster has one.
    pub public_zone_id: Option<String>,
}
