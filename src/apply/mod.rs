//! Stage 5: making the live state match a plan, and removing a cluster.
//!
//! `prepare` compiles the config, reads the live state and computes the
//! plan. `apply` executes one: it first checks that the live state is still
//! the one the plan was made against, recovers a stack left mid-way by an
//! earlier run (waits for one in progress, continues a failed rollback,
//! deletes one whose creation failed), then creates and executes a change
//! set while streaming the stack's events, uploads the artifacts that are
//! new (content-addressed, so unchanged files are not sent again) and
//! updates the DNS ownership records in batches. Every step can be run
//! again: a re-run after an interruption picks up where the last one
//! stopped.

mod certificate;
mod destroy;
mod host_key;
pub mod progress;

use std::collections::BTreeMap;
use std::time::Duration;

use progress::Progress;

use crate::aws::{Aws, AwsError, Query, StackSummary, TemplateSource, read_live};
use crate::compile::{self, TemplateFormat};
use crate::digest::sha256;
use crate::model::{Config, NodeImage, naming};
use crate::plan::diff::{self, Target};
use crate::plan::{Action, Desired, Plan, StackAction};
use crate::spec::keys;
use crate::spec::manifest::Manifest;
use crate::spec::names::ids;

pub use destroy::{Destroyed, destroy};

/// Templates larger than this go to CloudFormation through the bucket.
const MAX_INLINE_TEMPLATE: usize = compile::quotas::MAX_INLINE_TEMPLATE;

/// Why an apply or destroy stopped.
#[derive(Debug)]
pub enum ApplyError {
    Aws(AwsError),
    /// The config exceeds a quota.
    Quota(Vec<compile::QuotaError>),
    /// The live state moved since the plan was made.
    Stale(String),
    /// The stack update failed: the root cause and the state left behind.
    Failed {
        cause: String,
        state: String,
    },
    /// Anything the user must act on.
    Refused(String),
}

impl From<AwsError> for ApplyError {
    fn from(err: AwsError) -> Self {
        Self::Aws(err)
    }
}

impl std::fmt::Display for ApplyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Aws(err) => write!(f, "{err}"),
            Self::Quota(errors) => {
                for e in errors {
                    writeln!(f, "{} ({})", e.message, e.quota)?;
                }
                Ok(())
            }
            Self::Stale(why) => write!(
                f,
                "the plan is stale: {why}\nhelp: run `huxley plan` again and apply the new plan"
            ),
            Self::Failed { cause, state } => write!(
                f,
                "the stack update failed: {cause}\nthe stack is now {state}; fix the cause and run `huxley apply` again"
            ),
            Self::Refused(why) => write!(f, "{why}"),
        }
    }
}

/// Options that change what a plan resolves.
#[derive(Debug, Clone, Copy, Default)]
pub struct PlanOptions {
    /// Resolve the Flatcar channel to its newest image even when the live
    /// stack already runs one.
    pub refresh_image: bool,
}

/// Compiles the config, reads the live state and computes the plan.
pub async fn prepare(config: &Config, aws: &Aws, options: PlanOptions) -> Result<Plan, ApplyError> {
    let artifacts = compile::compile(config, TemplateFormat::Json).map_err(ApplyError::Quota)?;
    let stack = naming::stack(config);
    let read = read_live(
        aws,
        &Query {
            stack: &stack,
            cluster: &config.cluster.name,
            public_domain: config.cluster.public_domain.as_deref(),
        },
    )
    .await?;
    // What a failed deletion leaves CloudFormation can only delete, and
    // its bucket may hold the last copy of the apps' pushed repositories
    // and deploy history: that is destroy's to finish, asked as destroy
    // asks, not apply's to do on a `--yes`.
    if read
        .live
        .stack
        .as_ref()
        .is_some_and(|s| s.status == "DELETE_FAILED")
    {
        return Err(ApplyError::Refused(format!(
            "the stack {stack} is DELETE_FAILED: a deletion stopped half-way, and CloudFormation can only delete it now; finish it with `huxley destroy`, then apply creates the cluster again"
        )));
    }

    let mut notes = Vec::new();
    let image = match &config.cluster.nodes.image {
        NodeImage::Ami(id) => id.clone(),
        NodeImage::Flatcar(channel) => {
            let live = read
                .stack
                .as_ref()
                .and_then(|s| s.parameters.get(ids::NODE_IMAGE_PARAMETER));
            match live {
                Some(id) if !options.refresh_image => {
                    notes.push(format!(
                        "the nodes keep their image {id} (Flatcar {}); `--refresh-image` looks up the newest",
                        channel.as_str()
                    ));
                    id.clone()
                }
                _ => aws.newest_flatcar(channel.as_str()).await?,
            }
        }
    };
    let mut parameters = BTreeMap::from([(ids::NODE_IMAGE_PARAMETER.to_owned(), image)]);
    if let Some(zone) = &read.public_zone_id {
        parameters.insert(ids::PUBLIC_ZONE_PARAMETER.to_owned(), zone.clone());
    }
    let (certificate, arn) = certificate::plan(config, aws).await?;
    if let Some(arn) = arn {
        parameters.insert(ids::CERTIFICATE_PARAMETER.to_owned(), arn);
    }

    let mut files = BTreeMap::new();
    let mut template_body = String::new();
    for (path, artifact) in artifacts.files {
        if path.starts_with("cloudformation/") {
            template_body = artifact.contents;
        } else {
            files.insert(path, artifact.contents);
        }
    }
    let desired = Desired {
        template_body,
        parameters,
        artifacts: files,
        records: crate::plan::desired::ownership_records(config),
        public_zone_id: read.public_zone_id.clone(),
    };
    let target = Target {
        cluster: config.cluster.name.clone(),
        region: config.cluster.region.clone(),
        stack,
    };
    missing_secrets(config, aws).await?;
    let mut plan = diff::plan(&target, desired, &read.live);
    plan.certificate = certificate;
    plan.notes.extend(notes);
    plan.notes.extend(cost_notes(config, &plan.resources));
    let existing = aws
        .parameter_names(&crate::spec::names::tokens_path(&config.cluster.name))
        .await?;
    plan.tokens =
        crate::plan::token_changes(&crate::plan::desired::token_parameters(config), &existing);
    Ok(plan)
}

/// An Application Load Balancer's hourly price and an LCU's, in USD, on
/// demand in us-east-1 (AWS's list prices; other regions differ a little).
pub const LOAD_BALANCER_HOURLY: f64 = 0.0225;
pub const LCU_HOURLY: f64 = 0.008;

/// What the plan's load balancer changes cost: its monthly price when
/// it comes or goes, and the access logs' storage when they are turned on.
fn cost_notes(config: &Config, resources: &[crate::plan::ResourceChange]) -> Vec<String> {
    let action = |id: &str| {
        resources
            .iter()
            .find(|r| r.logical_id == id)
            .map(|r| r.action)
    };
    let base = LOAD_BALANCER_HOURLY * 730.0;
    let lcu = LCU_HOURLY * 730.0;
    let mut notes = Vec::new();
    match action(ids::LOAD_BALANCER) {
        Some(Action::Remove) => notes.push(format!(
            "the load balancer goes: about ${base:.2} a month less, and its LCUs (us-east-1 prices)"
        )),
        Some(Action::Add) => notes.push(format!(
            "the load balancer costs about ${base:.2} a month (730 hours at ${LOAD_BALANCER_HOURLY}, us-east-1), plus ${lcu:.2} a month for each LCU of traffic it serves on average"
        )),
        _ => {}
    }
    // The bucket policy changes when the logs' writer is let in.
    if crate::compile::alb::writes_access_logs(config)
        && matches!(
            action(ids::ARTIFACT_BUCKET_POLICY),
            Some(Action::Add | Action::Modify)
        )
    {
        notes.push(format!(
            "the load balancer's access logs cost S3 storage: about ${S3_GB_MONTH} per GB-month (us-east-1), gzipped, kept {} days",
            config.cluster.log_retention_days
        ));
    }
    notes
}

/// S3 Standard's storage price per GB-month, us-east-1, first 50 TB.
const S3_GB_MONTH: f64 = 0.023;

/// Refuses a config whose secrets name SSM parameters that do not exist:
/// its replicas could not start. Every missing one is named, with the
/// command that sets it.
async fn missing_secrets(config: &crate::model::Config, aws: &Aws) -> Result<(), ApplyError> {
    let mut wanted: BTreeMap<String, Vec<(String, String, String)>> = BTreeMap::new();
    for (app, service) in config.services() {
        for (variable, crate::model::SecretRef::Ssm { parameter }) in &service.secrets {
            wanted.entry(parameter.clone()).or_default().push((
                app.name.clone(),
                service.name.clone(),
                variable.clone(),
            ));
        }
    }
    if wanted.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = wanted.keys().cloned().collect();
    let found = aws.parameter_versions(&names).await?;
    let missing: Vec<String> = wanted
        .iter()
        .filter(|(parameter, _)| !found.contains_key(*parameter))
        .map(|(parameter, users)| {
            let users: Vec<String> = users
                .iter()
                .map(|(app, service, variable)| format!("{variable} of {app}/{service}"))
                .collect();
            format!("  {parameter} ({})", users.join(", "))
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let example = wanted
        .iter()
        .find(|(parameter, _)| !found.contains_key(*parameter))
        .and_then(|(_, users)| users.first())
        .map(|(app, _, variable)| format!("huxley secrets set {app} {variable} -"))
        .unwrap_or_default();
    Err(ApplyError::Refused(format!(
        "SSM has no parameter for {} that huxley.toml references, so the replicas that read them could not start:\n{}\nhelp: set each one, e.g. `{example}` (reads the value from standard input)",
        crate::diagnostic::plural(missing.len(), "secret"),
        missing.join("\n")
    )))
}

/// A new bearer token: 32 bytes from the system's secure random source, as
/// hex.
fn new_token() -> Result<String, ApplyError> {
    crate::tls::ensure_provider();
    let mut bytes = [0u8; 32];
    rustls::crypto::aws_lc_rs::default_provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| ApplyError::Refused("the system's random source failed".into()))?;
    Ok(crate::digest::hex(&bytes))
}

/// Waits for a stack that another run left in progress, and recovers one
/// that cannot be updated as it is. Returns the stack's state afterwards.
pub async fn settle(
    aws: &Aws,
    stack: &str,
    progress: &mut Progress,
) -> Result<Option<StackSummary>, ApplyError> {
    let Some(summary) = aws.describe_stack(stack).await? else {
        return Ok(None);
    };
    if summary.is_review_only() {
        // Only an unexecuted change set: nothing runs, nothing to wait for.
        return Ok(Some(summary));
    }
    if summary.status.ends_with("_IN_PROGRESS") {
        progress.line(&format!(
            "the stack is {}: waiting for it to finish",
            summary.status
        ));
        return Ok(wait(aws, stack, progress).await?.0);
    }
    if summary.status == "UPDATE_ROLLBACK_FAILED" {
        progress.line("the stack's last rollback failed: continuing it");
        aws.continue_update_rollback(stack).await?;
        return Ok(wait(aws, stack, progress).await?.0);
    }
    Ok(Some(summary))
}

/// Executes a plan.
pub async fn apply(aws: &Aws, plan: &Plan, progress: &mut Progress) -> Result<Summary, ApplyError> {
    let live = check_base(aws, plan).await?;
    let mut summary = Summary::default();
    let stack = plan.stack.as_str();

    // Tokens first: the kick server reads them when its node boots.
    let added = create_tokens(aws, plan, progress).await?;
    // The certificate issued before the stack that serves it changes;
    // that may take long, so the plan's base is checked again after.
    let plan = &certificate::ensure(aws, plan, progress).await?;
    let live = if plan.certificate.is_some() {
        check_base(aws, plan).await?
    } else {
        live
    };
    if plan.stack_action == StackAction::Recreate {
        progress.line(&format!("deleting the failed stack {stack} first"));
        // A rollback that could not delete the bucket (something wrote in
        // it, such as the load balancer's first access log) left it: the
        // stack goes only with it empty.
        let bucket = live.as_ref().and_then(|s| s.bucket(&plan.cluster));
        let balancer = aws.stack_resource(stack, ids::LOAD_BALANCER).await?;
        destroy::delete_with_bucket(aws, stack, balancer.as_deref(), bucket.as_deref(), progress)
            .await?;
    }

    // On an update, the new artifacts are in the bucket before the stack
    // changes, so new nodes boot with them. A recreated stack is gone by
    // now, and so is its bucket.
    let mut live_bucket = live
        .filter(|_| plan.stack_action != StackAction::Recreate)
        .and_then(|s| s.bucket(&plan.cluster));
    let mut create = matches!(
        plan.stack_action,
        StackAction::Create | StackAction::Recreate
    );
    if create && plan.desired.template_body.len() > MAX_INLINE_TEMPLATE {
        live_bucket = Some(create_bucket_first(aws, plan, progress).await?);
        create = false;
    }
    if let Some(bucket) = &live_bucket {
        summary.uploaded += upload(aws, bucket, plan, progress).await?;
    }

    if plan.stack_action != StackAction::None {
        summary.stack = change_stack(aws, plan, live_bucket.as_deref(), create, progress).await?;
    }

    if live_bucket.is_none() {
        let bucket = aws
            .describe_stack(stack)
            .await?
            .and_then(|s| s.bucket(&plan.cluster))
            .ok_or_else(|| {
                ApplyError::Refused(format!(
                    "the stack {stack} is gone, or its id is not an ARN"
                ))
            })?;
        summary.uploaded += upload(aws, &bucket, plan, progress).await?;
        replace_early_nodes(aws, plan, progress).await?;
    }

    summary.records = update_records(aws, plan, progress).await?;
    summary.certificates = certificate::retire(aws, plan, progress).await?;
    let removed = remove_tokens(aws, plan, progress).await?;
    summary.tokens = added + removed;
    Ok(summary)
}

/// On a new stack the groups launch their machines while the stack is
/// created, before the bucket holds the binary their Ignition config
/// fetches (Ignition gives up on a 404, and the node never joins): they
/// are replaced now that it does. How many.
async fn replace_early_nodes(
    aws: &Aws,
    plan: &Plan,
    progress: &mut Progress,
) -> Result<usize, ApplyError> {
    let early = aws.cluster_machines(&plan.cluster).await?;
    for node in &early {
        aws.replace_node(&node.id).await?;
    }
    if !early.is_empty() {
        progress.line(&format!(
            "replaced {} that booted before their boot files were uploaded",
            crate::diagnostic::plural(early.len(), "machine")
        ));
    }
    Ok(early.len())
}

/// Creates the kick tokens the plan adds (the admin token before its
/// hash); how many.
async fn create_tokens(
    aws: &Aws,
    plan: &Plan,
    progress: &mut Progress,
) -> Result<usize, ApplyError> {
    let added: Vec<&str> = plan
        .tokens
        .iter()
        .filter(|t| t.action == Action::Add)
        .map(|t| t.name.as_str())
        .collect();
    let tokens_path = crate::spec::names::tokens_path(&plan.cluster);
    let admin = format!("{tokens_path}admin");
    let admin_hash = format!("{tokens_path}{}", compile::kick::ADMIN_SHA256);
    let host_key_name = format!("{tokens_path}{}", compile::kick::HOOK_HOST_KEY);
    // The admin token before its hash (the names sort that way).
    for name in &added {
        let description = if *name == host_key_name {
            format!(
                "Huxley cluster {}: the hook server's SSH host key",
                plan.cluster
            )
        } else {
            format!(
                "Huxley cluster {}: a kick server bearer token",
                plan.cluster
            )
        };
        let value = if *name == host_key_name {
            host_key::generate(&format!("huxley-hook@{}", plan.cluster))
                .map_err(ApplyError::Refused)?
                .0
        } else if *name == admin_hash {
            // Kick checks the admin token against this; the nodes may not
            // read the token itself.
            let token = aws
                .secure_parameters(std::slice::from_ref(&admin))
                .await?
                .remove(&admin)
                .ok_or_else(|| ApplyError::Failed {
                    cause: format!("{admin} is missing, so its hash cannot be made"),
                    state: "the tokens are incomplete; run `huxley apply` again".into(),
                })?;
            crate::digest::sha256(token.trim())
        } else {
            new_token()?
        };
        aws.create_secure_parameter(name, &value, &description)
            .await?;
    }
    if !added.is_empty() {
        progress.line(&format!(
            "created {} in SSM (SecureString)",
            crate::diagnostic::plural(added.len(), "kick token")
        ));
    }
    Ok(added.len())
}

/// A new stack whose template is over CloudFormation's inline limit is
/// created in two steps: first with only its artifact bucket (which then
/// carries the template, and the artifacts, so no node boots without
/// them), then updated to the whole template. The bucket's name.
async fn create_bucket_first(
    aws: &Aws,
    plan: &Plan,
    progress: &mut Progress,
) -> Result<String, ApplyError> {
    let full: serde_json::Value = serde_json::from_str(&plan.desired.template_body)
        .map_err(|e| ApplyError::Refused(format!("the template does not parse: {e}")))?;
    let resources: serde_json::Map<String, serde_json::Value> =
        [ids::ARTIFACT_BUCKET, ids::ARTIFACT_BUCKET_POLICY]
            .iter()
            .filter_map(|id| Some(((*id).to_owned(), full["Resources"].get(*id)?.clone())))
            .collect();
    let first = serde_json::json!({
        "AWSTemplateFormatVersion": full["AWSTemplateFormatVersion"],
        "Description": full["Description"],
        "Metadata": full["Metadata"],
        "Resources": resources,
        "Outputs": { "ArtifactBucketName": full["Outputs"]["ArtifactBucketName"] },
    });
    let mut bootstrap = plan.clone();
    bootstrap.desired.template_body = crate::compile::cloudformation::to_json(&first);
    bootstrap.desired.parameters = BTreeMap::new();
    progress.line(&format!(
        "the template is {} bytes, over CloudFormation's {MAX_INLINE_TEMPLATE} for inline templates: creating the stack with its artifact bucket first, to carry it",
        plan.desired.template_body.len()
    ));
    change_stack(aws, &bootstrap, None, true, progress).await?;
    aws.describe_stack(&plan.stack)
        .await?
        .and_then(|s| s.bucket(&plan.cluster))
        .ok_or_else(|| {
            ApplyError::Refused(format!(
                "the stack {} has no artifact bucket after its first step",
                plan.stack
            ))
        })
}

/// Creates and executes the stack's change set and waits for it; the
/// stack's status after, or none when CloudFormation found nothing to
/// change.
async fn change_stack(
    aws: &Aws,
    plan: &Plan,
    live_bucket: Option<&str>,
    create: bool,
    progress: &mut Progress,
) -> Result<Option<String>, ApplyError> {
    let stack = plan.stack.as_str();
    let template = template_source(aws, live_bucket, &plan.desired.template_body).await?;
    // Unique even for two applies in the same second (the emulator
    // finds change sets by name alone).
    let change_set = format!(
        "huxley-{}-{:08x}",
        crate::clock::unix_seconds(),
        fastrand::u32(..)
    );
    progress.line(&format!("creating change set {change_set}"));
    aws.create_change_set(
        stack,
        &change_set,
        create,
        &template,
        &plan.desired.parameters,
        &[("huxley:cluster", &plan.cluster)],
    )
    .await?;
    let state = aws.wait_change_set(stack, &change_set).await?;
    if state.status == "FAILED" {
        let reason = state.reason.unwrap_or_default();
        let _ = aws.delete_change_set(stack, &change_set).await;
        if reason.contains("didn't contain changes") || reason.contains("No updates") {
            progress.line("CloudFormation found nothing to change in the stack");
            return Ok(None);
        }
        return Err(ApplyError::Failed {
            cause: format!("the change set was rejected: {reason}"),
            state: "unchanged".into(),
        });
    }
    for (action, id, kind, replacement) in &state.changes {
        let replacement = replacement
            .as_deref()
            .map(|r| format!(" (replacement: {r})"))
            .unwrap_or_default();
        progress.line(&format!(
            "  change set: {action} {id} ({kind}){replacement}"
        ));
    }
    aws.execute_change_set(stack, &change_set).await?;
    let (after, failure) = wait(aws, stack, progress).await?;
    let status = after
        .as_ref()
        .map_or("gone".to_owned(), |s| s.status.clone());
    if let Some(cause) = failure {
        return Err(ApplyError::Failed {
            cause,
            state: status,
        });
    }
    if !status.ends_with("_COMPLETE") || status.contains("ROLLBACK") {
        return Err(ApplyError::Failed {
            cause: after
                .and_then(|s| s.status_reason)
                .unwrap_or_else(|| "no reason given".into()),
            state: status,
        });
    }
    Ok(Some(status))
}

/// Writes the plan's ownership records in the public zone; how many.
async fn update_records(
    aws: &Aws,
    plan: &Plan,
    progress: &mut Progress,
) -> Result<usize, ApplyError> {
    if plan.records.is_empty() {
        return Ok(0);
    }
    let zone = plan
        .desired
        .public_zone_id
        .as_deref()
        .ok_or_else(|| ApplyError::Refused("DNS changes without a public zone".into()))?;
    let changes: Vec<(String, String, bool)> = plan
        .records
        .iter()
        .map(|r| (r.name.clone(), r.value.clone(), r.action != Action::Remove))
        .collect();
    let requests = aws.change_txt_records(zone, &changes).await?;
    progress.line(&format!(
        "updated {} DNS records in {requests} request(s)",
        changes.len()
    ));
    Ok(changes.len())
}

/// Removes the tokens of services no longer in huxley.toml; how many.
async fn remove_tokens(
    aws: &Aws,
    plan: &Plan,
    progress: &mut Progress,
) -> Result<usize, ApplyError> {
    let removed: Vec<String> = plan
        .tokens
        .iter()
        .filter(|t| t.action == Action::Remove)
        .map(|t| t.name.clone())
        .collect();
    if !removed.is_empty() {
        aws.delete_parameters(&removed).await?;
        progress.line(&format!(
            "removed {} of services no longer in huxley.toml",
            crate::diagnostic::plural(removed.len(), "kick token")
        ));
    }
    Ok(removed.len())
}

/// What an apply did.
#[derive(Debug, Default)]
pub struct Summary {
    pub stack: Option<String>,
    pub uploaded: usize,
    pub records: usize,
    pub tokens: usize,
    /// Old certificates deleted.
    pub certificates: usize,
}

/// Refuses a plan whose live state has moved; returns the live stack
/// (none when there is none, or only an unexecuted change set).
async fn check_base(aws: &Aws, plan: &Plan) -> Result<Option<StackSummary>, ApplyError> {
    let live = aws
        .describe_stack(&plan.stack)
        .await?
        .filter(|s| !s.is_review_only());
    let base = &plan.base;
    match (&base.stack_id, &live) {
        (None, None) => return Ok(None),
        (None, Some(_)) => {
            return Err(ApplyError::Stale(format!(
                "the plan expected no stack, but {} now exists",
                plan.stack
            )));
        }
        (Some(_), None) => {
            return Err(ApplyError::Stale(format!(
                "the stack {} was deleted since the plan was made",
                plan.stack
            )));
        }
        (Some(id), Some(stack)) if *id != stack.id => {
            return Err(ApplyError::Stale(format!(
                "the stack {} was replaced since the plan was made",
                plan.stack
            )));
        }
        _ => {}
    }
    let Some(stack) = live else { return Ok(None) };
    if base.stack_status.as_deref() != Some(stack.status.as_str()) {
        return Err(ApplyError::Stale(format!(
            "the stack was {} when planned and is {} now",
            base.stack_status.as_deref().unwrap_or("absent"),
            stack.status
        )));
    }
    if stack.status != "ROLLBACK_COMPLETE" {
        let template = sha256(&aws.get_template(&plan.stack).await?);
        if base.template_sha256.as_deref() != Some(template.as_str()) {
            return Err(ApplyError::Stale(
                "the stack's template changed since the plan was made (another apply ran)".into(),
            ));
        }
    }
    if let Some(bucket) = stack.bucket(&plan.cluster) {
        let manifest = aws
            .get_object(&bucket, keys::MANIFEST)
            .await?
            .map(|b| sha256(String::from_utf8_lossy(&b).as_bytes()));
        if manifest != base.manifest_sha256 {
            return Err(ApplyError::Stale(
                "the artifacts in the bucket changed since the plan was made (another apply ran)"
                    .into(),
            ));
        }
    }
    Ok(Some(stack))
}

/// Uploads the blobs the bucket lacks, the `huxley` binary the nodes boot
/// with when it is missing, and the manifest last.
async fn upload(
    aws: &Aws,
    bucket: &str,
    plan: &Plan,
    progress: &mut Progress,
) -> Result<usize, ApplyError> {
    let manifest = Manifest::new(&plan.desired.artifacts);
    let live_manifest: Option<Manifest> = aws
        .get_object(bucket, keys::MANIFEST)
        .await?
        .and_then(|bytes| serde_json::from_slice(&bytes).ok());
    if live_manifest.as_ref() == Some(&manifest) {
        return Ok(0);
    }
    let present: std::collections::BTreeSet<String> = live_manifest
        .iter()
        .flat_map(|m| m.files.values().map(|e| e.sha256.clone()))
        .collect();
    let mut uploaded = 0;
    let mut sent = std::collections::BTreeSet::new();
    for entry in manifest.files.values() {
        if present.contains(&entry.sha256) || !sent.insert(entry.sha256.clone()) {
            continue;
        }
        aws.put_object(
            bucket,
            &keys::blob(&entry.sha256),
            entry.content.clone().into_bytes(),
            "text/plain; charset=utf-8",
        )
        .await?;
        uploaded += 1;
    }
    let binary = naming::binary_key();
    if !aws.object_exists(bucket, &binary).await? {
        match node_binary() {
            Some(bytes) => {
                aws.put_object(bucket, &binary, bytes, "application/octet-stream").await?;
                uploaded += 1;
            }
            None => progress.line(&format!(
                "note: {binary} is not in the bucket and this huxley is not an x86_64 Linux build; upload one before nodes boot"
            )),
        }
    }
    aws.put_object(
        bucket,
        keys::MANIFEST,
        manifest.to_json().into_bytes(),
        "application/json",
    )
    .await?;
    progress.line(&format!(
        "uploaded {uploaded} new artifact(s) and the manifest to s3://{bucket}"
    ));
    Ok(uploaded)
}

/// The `huxley` binary the nodes boot with: `HUXLEY_NODE_BINARY` when set
/// (a Linux build, from a Mac say), else this very binary when it can run
/// on the nodes.
fn node_binary() -> Option<Vec<u8>> {
    if let Some(path) = std::env::var_os("HUXLEY_NODE_BINARY") {
        return std::fs::read(path).ok();
    }
    if !(cfg!(target_os = "linux") && cfg!(target_arch = "x86_64")) {
        return None;
    }
    std::env::current_exe()
        .ok()
        .and_then(|path| std::fs::read(path).ok())
}

async fn template_source(
    aws: &Aws,
    bucket: Option<&str>,
    body: &str,
) -> Result<TemplateSource, ApplyError> {
    if body.len() <= MAX_INLINE_TEMPLATE {
        return Ok(TemplateSource::Body(body.to_owned()));
    }
    let Some(bucket) = bucket else {
        return Err(ApplyError::Refused(format!(
            "the template is {} bytes, over CloudFormation's {MAX_INLINE_TEMPLATE} for inline templates, and the bucket that would carry it does not exist",
            body.len()
        )));
    };
    let key = keys::template(&sha256(body));
    aws.put_object(bucket, &key, body.as_bytes().to_vec(), "application/json")
        .await?;
    // CloudFormation reads it from S3 itself, by S3's own address (the
    // emulator reads the bucket from that address too).
    Ok(TemplateSource::Url(format!(
        "https://{bucket}.s3.{}.amazonaws.com/{key}",
        aws.region()
    )))
}

/// Polls the stack until it leaves every `_IN_PROGRESS` state, showing its
/// events. Returns its final state (`None` once deleted) and, when it
/// failed, the root cause: the first failed resource and its reason, not
/// the rollback noise after it.
pub async fn wait(
    aws: &Aws,
    stack: &str,
    progress: &mut Progress,
) -> Result<(Option<StackSummary>, Option<String>), AwsError> {
    let mut seen: std::collections::BTreeSet<String> = aws
        .stack_events(stack)
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|e| e.id)
        .collect();
    let mut root_cause: Option<String> = None;
    let mut delay = Duration::from_millis(250);
    let deadline = tokio::time::Instant::now() + progress.wait_limit;
    loop {
        let summary = aws.describe_stack(stack).await?;
        if summary.is_some() {
            for event in aws.stack_events(stack).await.unwrap_or_default() {
                if seen.insert(event.id.clone()) {
                    progress.event(&event);
                    let noise = event
                        .reason
                        .as_deref()
                        .is_some_and(|r| r.contains("cancelled"));
                    if event.failed() && !noise && root_cause.is_none() {
                        root_cause = Some(format!(
                            "{} ({}): {}",
                            event.logical_id,
                            event.resource_type,
                            event.reason.clone().unwrap_or_else(|| event.status.clone())
                        ));
                    }
                }
            }
        }
        match &summary {
            None => return Ok((None, None)),
            Some(s) if !s.status.ends_with("_IN_PROGRESS") => {
                let failed = s.status.contains("FAILED") || s.status.contains("ROLLBACK");
                let cause = if failed {
                    Some(root_cause.unwrap_or_else(|| {
                        s.status_reason.clone().unwrap_or_else(|| s.status.clone())
                    }))
                } else {
                    None
                };
                progress.done(&s.status);
                return Ok((summary, cause));
            }
            Some(s) if s.is_review_only() => return Ok((summary, None)),
            Some(s) => {
                if tokio::time::Instant::now() >= deadline {
                    return Err(AwsError::StackFailed {
                        status: s.status.clone(),
                        cause: format!(
                            "still in progress after {}s; huxley stopped waiting (the operation goes on in AWS): run `huxley apply` again to pick it up",
                            progress.wait_limit.as_secs()
                        ),
                    });
                }
                progress.status(&s.status);
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// Deletes a stack and waits for it to go; returns what is left, if
/// anything.
async fn delete_stack(
    aws: &Aws,
    stack: &str,
    progress: &mut Progress,
) -> Result<Option<StackSummary>, ApplyError> {
    if let Err(err) = aws.delete_stack(stack).await {
        // Some endpoints (the local emulator) delete synchronously and
        // report a failure on the way while the stack is in fact gone: the
        // stack's state decides.
        if aws.describe_stack(stack).await?.is_some() {
            return Err(err.into());
        }
        progress.line(&format!(
            "note: the endpoint reported an error, but the stack is gone: {err}"
        ));
    }
    Ok(wait(aws, stack, progress).await?.0)
}

/// Changes record sets in batches within Route53's limits.
async fn write_records(
    aws: &Aws,
    zone: &str,
    changes: &[crate::aws::RecordChange],
) -> Result<(), ApplyError> {
    let sizes = crate::aws::batch_sizes(changes.iter().map(|c| {
        (
            c.values.len().max(1),
            c.values.iter().map(String::len).sum(),
            false,
        )
    }));
    let mut rest = changes;
    for size in sizes {
        let (batch, later) = rest.split_at(size);
        rest = later;
        aws.change_records(zone, batch).await.map_err(|e| match e {
            crate::aws::ChangeError::Other(err) => ApplyError::from(err),
            crate::aws::ChangeError::Rejected(why) | crate::aws::ChangeError::Busy(why) => {
                ApplyError::Failed {
                    cause: format!("Route53 refused to change the cluster's records: {why}"),
                    state: "the stack is still there; run `huxley destroy` again".into(),
                }
            }
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Replacement, ResourceChange};

    fn change(logical_id: &str, action: Action) -> ResourceChange {
        ResourceChange {
            logical_id: logical_id.to_owned(),
            resource_type: String::new(),
            action,
            replacement: Replacement::Never,
            properties: Vec::new(),
        }
    }

    fn platform() -> Config {
        let source = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/platform/huxley.toml"
        ))
        .expect("example");
        crate::config::check(&source).config.expect("valid")
    }

    #[test]
    fn the_plan_prices_the_load_balancer_when_it_comes_or_goes() {
        let config = platform();
        let added = cost_notes(&config, &[change(ids::LOAD_BALANCER, Action::Add)]);
        assert_eq!(added.len(), 1, "{added:?}");
        assert!(added[0].contains("about $16.43 a month"), "{added:?}");
        let removed = cost_notes(&config, &[change(ids::LOAD_BALANCER, Action::Remove)]);
        assert!(removed[0].contains("$16.43 a month less"), "{removed:?}");
        // A changed attribute costs nothing more.
        assert!(cost_notes(&config, &[change(ids::LOAD_BALANCER, Action::Modify)]).is_empty());
        assert!(cost_notes(&config, &[]).is_empty());
    }

    #[test]
    fn the_plan_prices_access_logs_when_they_are_turned_on() {
        let on = platform();
        let policy = [change(ids::ARTIFACT_BUCKET_POLICY, Action::Modify)];
        let notes = cost_notes(&on, &policy);
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(
            notes[0].contains("access logs cost S3 storage"),
            "{notes:?}"
        );
        assert!(notes[0].contains("kept 90 days"), "{notes:?}");
        let mut off = on.clone();
        off.cluster.access_logs = false;
        assert!(cost_notes(&off, &policy).is_empty());
    }
}
