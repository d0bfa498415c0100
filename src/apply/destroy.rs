//! `huxley destroy`: the cluster removed, with what the stack cannot
//! delete by itself (images, objects, the records kick wrote, the
//! certificates and the tokens).

use super::progress::Progress;
use super::{ApplyError, certificate, delete_stack, settle, write_records};
use crate::aws::Aws;
use crate::model::{Config, naming};
use crate::spec::names::ids;

/// What a destroy removed.
#[derive(Debug, Default)]
pub struct Destroyed {
    pub resources: usize,
    pub objects: usize,
    /// Images deleted from the cluster's repositories.
    pub images: usize,
    pub records: usize,
    pub bucket: Option<String>,
    /// The load balancer's certificates deleted.
    pub certificates: usize,
}

/// Removes the cluster: empties the bucket, deletes the ownership records,
/// deletes the stack and waits for it to go.
pub async fn destroy(
    aws: &Aws,
    config: &Config,
    progress: &mut Progress,
) -> Result<Option<Destroyed>, ApplyError> {
    let stack = naming::stack(config);
    let Some(summary) = settle(aws, &stack, progress).await? else {
        return Ok(None);
    };
    let mut destroyed = Destroyed::default();
    if summary.status != "ROLLBACK_COMPLETE" {
        let template: serde_json::Value =
            serde_json::from_str(&aws.get_template(&stack).await?).unwrap_or_default();
        destroyed.resources = template["Resources"].as_object().map_or(0, |r| r.len());
    }
    // The images built on push: deleted here, so the repositories go with
    // the stack (the CLI counted them and asked first).
    for repository in aws.repositories(&naming::repository_prefix(config)).await? {
        if repository.images.is_empty() {
            continue;
        }
        aws.delete_images(&repository).await?;
        destroyed.images += repository.images.len();
        progress.line(&format!(
            "deleted {} from {}",
            crate::diagnostic::plural(repository.images.len(), "image"),
            repository.name
        ));
    }
    // The load balancer writes its access logs every five minutes until
    // it goes: stopped first, so the bucket stays empty.
    if let Some(balancer) = aws.stack_resource(&stack, ids::LOAD_BALANCER).await? {
        if aws.stop_access_logs(&balancer).await? {
            progress.line("stopped the load balancer's access logs");
        }
    }
    if let Some(bucket) = summary.bucket(&config.cluster.name) {
        destroyed.objects = aws.empty_bucket(&bucket).await?;
        progress.line(&format!(
            "emptied s3://{bucket}: {} object versions",
            destroyed.objects
        ));
        destroyed.bucket = Some(bucket);
    }
    // Every record the cluster owns: the addresses kick wrote in the
    // user's zone with their ownership records, and everything in its own
    // zone (which CloudFormation cannot delete while it holds records).
    let mut zones = Vec::new();
    let mut public_zone = None;
    if let Some(domain) = &config.cluster.public_domain {
        let id = aws.public_zone_id(domain).await?;
        public_zone = Some(id.clone());
        zones.push((id, false));
    }
    if let Some(private) = aws
        .stack_resource(&stack, crate::spec::names::ids::PRIVATE_ZONE)
        .await?
    {
        zones.push((private.trim_start_matches("/hostedzone/").to_owned(), true));
    }
    for (zone, whole) in zones {
        let changes = crate::aws::live::to_remove(
            &aws.list_records(&zone).await?,
            &config.cluster.name,
            whole,
        );
        write_records(aws, &zone, &changes).await?;
        destroyed.records += changes.len();
    }
    progress.line(&format!("deleting stack {stack}"));
    let mut after = delete_stack(aws, &stack, progress).await?;
    // A file written while the stack went (a log delivered as the logs
    // stopped) keeps the bucket; with the rest gone nothing writes more.
    if let (Some(left), Some(bucket)) = (&after, &destroyed.bucket) {
        let late = if left.status == "DELETE_FAILED" {
            aws.empty_bucket(bucket).await?
        } else {
            0
        };
        if late > 0 {
            progress.line(&format!(
                "s3://{bucket} had {late} object versions written while the stack went: emptied, deleting again"
            ));
            destroyed.objects += late;
            after = delete_stack(aws, &stack, progress).await?;
        }
    }
    if let Some(after) = after {
        return Err(ApplyError::Failed {
            cause: after
                .status_reason
                .unwrap_or_else(|| "the stack was not deleted".into()),
            state: after.status,
        });
    }
    // The certificates once no load balancer uses them.
    destroyed.certificates =
        certificate::destroy(aws, config, public_zone.as_deref(), progress).await?;
    // The tokens go last: a stack that failed to delete keeps working.
    let tokens = aws
        .parameter_names(&crate::spec::names::tokens_path(&config.cluster.name))
        .await?;
    if !tokens.is_empty() {
        aws.delete_parameters(&tokens).await?;
        progress.line(&format!(
            "deleted {} from SSM",
            crate::diagnostic::plural(tokens.len(), "kick token")
        ));
    }
    Ok(Some(destroyed))
}
