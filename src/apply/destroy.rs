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

/// Removes the cluster: deletes the images and the records kick wrote,
/// then the stack with its bucket ([`delete_with_bucket`]), waiting for it
/// to go, then the certificates no load balancer uses and the tokens.
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
    let resources = aws.stack_resources(&stack).await?;
    if let Some(private) = resources.get(ids::PRIVATE_ZONE) {
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
    let bucket = summary.bucket(&config.cluster.name);
    progress.line(&format!("deleting stack {stack}"));
    let balancer = resources.get(ids::LOAD_BALANCER).map(String::as_str);
    destroyed.objects =
        delete_with_bucket(aws, &stack, balancer, bucket.as_deref(), progress).await?;
    destroyed.bucket = bucket;
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

/// Deletes a stack with its artifact bucket, which CloudFormation deletes
/// only empty: the load balancer's access logs stopped (it writes them
/// every five minutes until it goes), then [`empty_and_delete`]; when the
/// stack stays after all, its logs are turned on again, as its template
/// has them. `balancer` is the stack's load balancer, as its resources
/// name it. Returns how many object versions went; an error, with
/// CloudFormation's reason, when the stack stays.
pub(super) async fn delete_with_bucket(
    aws: &Aws,
    stack: &str,
    balancer: Option<&str>,
    bucket: Option<&str>,
    progress: &mut Progress,
) -> Result<usize, ApplyError> {
    let mut stopped = None;
    if let Some(balancer) = balancer.filter(|id| !id.is_empty()) {
        // Not a reason to keep the cluster: a late log is dealt with by
        // emptying the bucket again.
        match aws.switch_access_logs(balancer, false).await {
            Ok(true) => {
                progress.line("stopped the load balancer's access logs");
                stopped = Some(balancer);
            }
            Ok(false) => {}
            Err(err) => progress.line(&format!(
                "note: the load balancer's access logs were not stopped ({err}); a log written while the stack goes is deleted after"
            )),
        }
    }
    let deleted = empty_and_delete(aws, stack, bucket, progress).await;
    if let (Err(_), Some(balancer)) = (&deleted, stopped) {
        // A stack that is not going keeps its logs: nothing else would
        // turn them on again, its template being unchanged.
        let standing = aws
            .describe_stack(stack)
            .await
            .ok()
            .flatten()
            .is_some_and(|s| !s.status.starts_with("DELETE_"));
        if standing {
            match aws.switch_access_logs(balancer, true).await {
                Ok(_) => progress.line("the stack stays: its load balancer's access logs are on again"),
                Err(err) => progress.line(&format!(
                    "note: the stack stays, and its load balancer's access logs are still off ({err}); set access_logs.s3.enabled back to true on it"
                )),
            }
        }
    }
    deleted
}

/// Empties the bucket and deletes the stack, and when a file that landed
/// meanwhile kept the bucket, empties it and deletes the stack once more.
async fn empty_and_delete(
    aws: &Aws,
    stack: &str,
    bucket: Option<&str>,
    progress: &mut Progress,
) -> Result<usize, ApplyError> {
    let mut objects = 0;
    if let Some(bucket) = bucket {
        objects = aws.empty_bucket(bucket).await?;
        if objects > 0 {
            progress.line(&format!("emptied s3://{bucket}: {objects} object versions"));
        }
    }
    let mut left = delete_stack(aws, stack, progress).await?;
    if let (Some(failed), Some(bucket)) = (&left, bucket)
        && failed.status == "DELETE_FAILED"
    {
        match aws.empty_bucket(bucket).await {
            Ok(0) => {}
            Ok(late) => {
                progress.line(&format!(
                    "s3://{bucket} had {late} object versions written while the stack went: emptied, deleting the stack again"
                ));
                objects += late;
                left = delete_stack(aws, stack, progress).await?;
            }
            // The stack's own reason is the one to report.
            Err(err) => progress.line(&format!("note: s3://{bucket} was not emptied again: {err}")),
        }
    }
    match left {
        None => Ok(objects),
        Some(left) => Err(ApplyError::Failed {
            cause: left
                .status_reason
                .unwrap_or_else(|| "the stack was not deleted".into()),
            state: left.status,
        }),
    }
}
