//! One method per AWS operation Huxley uses: counted, paginated where the
//! API pages, and failing with an [`AwsError`].

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_cloudformation::types::{
    Capability, ChangeSetStatus, ChangeSetType, Parameter, Tag, TemplateStage,
};
use aws_sdk_route53::types::{
    Change, ChangeAction, ChangeBatch, ResourceRecord, ResourceRecordSet, RrType,
};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{Delete, ObjectIdentifier};

use super::error::classify;
use super::{Aws, AwsError};

/// A stack as `DescribeStacks` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct StackSummary {
    pub id: String,
    pub status: String,
    pub status_reason: Option<String>,
    pub parameters: BTreeMap<String, String>,
    pub outputs: BTreeMap<String, String>,
    pub drift_status: Option<String>,
}

impl StackSummary {
    /// Whether the stack holds only a change set never executed: it has no
    /// resources yet, and is created with a `CREATE` change set.
    pub fn is_review_only(&self) -> bool {
        self.status == "REVIEW_IN_PROGRESS"
    }

    /// The artifact bucket: the stack's output, or else the name Huxley
    /// gives it, with the account taken from the stack's ARN
    /// (`arn:aws:cloudformation:<region>:<account>:stack/...`). The local
    /// emulator's change sets leave no outputs.
    pub fn bucket(&self, cluster: &str) -> Option<String> {
        if let Some(bucket) = self.outputs.get("ArtifactBucketName") {
            return Some(bucket.clone());
        }
        let parts: Vec<&str> = self.id.split(':').collect();
        match parts.as_slice() {
            ["arn", _, "cloudformation", region, account, ..] => {
                Some(crate::spec::names::bucket(cluster, account, region))
            }
            _ => None,
        }
    }
}

/// One stack event, for the progress display.
#[derive(Debug, Clone, PartialEq)]
pub struct StackEvent {
    pub id: String,
    pub logical_id: String,
    pub resource_type: String,
    pub status: String,
    pub reason: Option<String>,
}

impl StackEvent {
    pub fn failed(&self) -> bool {
        self.status.ends_with("_FAILED")
    }
}

/// What a change set came to.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeSetState {
    pub status: String,
    pub reason: Option<String>,
    /// (action, logical id, type, replacement) as AWS reports them; the
    /// emulator fills in only the first three.
    pub changes: Vec<(String, String, String, Option<String>)>,
}

/// A record set in a zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordSet {
    pub name: String,
    pub kind: String,
    pub ttl: Option<i64>,
    pub values: Vec<String>,
}

/// The template source for a change set.
#[derive(Debug, Clone)]
pub enum TemplateSource {
    Body(String),
    Url(String),
}

/// Route53 accepts at most 1,000 records and 32,000 characters of values
/// per request (an UPSERT counts twice).
const MAX_BATCH_RECORDS: usize = 1_000;
const MAX_BATCH_CHARS: usize = 32_000;

impl Aws {
    pub(super) fn err<E, R>(&self, action: &str, err: aws_sdk_s3::error::SdkError<E, R>) -> AwsError
    where
        E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug + Send + Sync + 'static,
    {
        classify(action, self.endpoint(), err)
    }

    // ----- CloudFormation ---------------------------------------------------

    /// The stack, or `None` when it does not exist.
    pub async fn describe_stack(&self, name: &str) -> Result<Option<StackSummary>, AwsError> {
        self.count();
        let output = match self.cfn.describe_stacks().stack_name(name).send().await {
            Ok(output) => output,
            Err(err) => {
                use aws_sdk_s3::error::ProvideErrorMetadata as _;
                if err.code() == Some("ValidationError")
                    && err.message().is_some_and(|m| m.contains("does not exist"))
                {
                    return Ok(None);
                }
                return Err(self.err("cloudformation:DescribeStacks", err));
            }
        };
        let Some(stack) = output.stacks().first() else {
            return Ok(None);
        };
        let status = stack
            .stack_status()
            .map(|s| s.as_str().to_owned())
            .unwrap_or_default();
        if status == "DELETE_COMPLETE" {
            return Ok(None);
        }
        Ok(Some(StackSummary {
            id: stack.stack_id().unwrap_or_default().to_owned(),
            status,
            status_reason: stack.stack_status_reason().map(str::to_owned),
            parameters: stack
                .parameters()
                .iter()
                .filter_map(|p| {
                    Some((
                        p.parameter_key()?.to_owned(),
                        p.parameter_value()?.to_owned(),
                    ))
                })
                .collect(),
            outputs: stack
                .outputs()
                .iter()
                .filter_map(|o| Some((o.output_key()?.to_owned(), o.output_value()?.to_owned())))
                .collect(),
            drift_status: stack
                .drift_information()
                .and_then(|d| d.stack_drift_status())
                .map(|s| s.as_str().to_owned()),
        }))
    }

    /// The template the stack was last given, as submitted.
    pub async fn get_template(&self, name: &str) -> Result<String, AwsError> {
        self.count();
        let output = self
            .cfn
            .get_template()
            .stack_name(name)
            .template_stage(TemplateStage::Original)
            .send()
            .await
            .map_err(|e| self.err("cloudformation:GetTemplate", e))?;
        Ok(output.template_body().unwrap_or_default().to_owned())
    }

    /// Creates a change set; `create` for a stack that does not exist yet.
    pub async fn create_change_set(
        &self,
        stack: &str,
        change_set: &str,
        create: bool,
        template: &TemplateSource,
        parameters: &BTreeMap<String, String>,
        tags: &[(&str, &str)],
    ) -> Result<(), AwsError> {
        self.count();
        let mut request = self
            .cfn
            .create_change_set()
            .stack_name(stack)
            .change_set_name(change_set)
            .change_set_type(if create {
                ChangeSetType::Create
            } else {
                ChangeSetType::Update
            })
            .capabilities(Capability::CapabilityIam)
            .description("huxley apply");
        request = match template {
            TemplateSource::Body(body) => request.template_body(body),
            TemplateSource::Url(url) => request.template_url(url),
        };
        for (key, value) in parameters {
            request = request.parameters(
                Parameter::builder()
                    .parameter_key(key)
                    .parameter_value(value)
                    .build(),
            );
        }
        for (key, value) in tags {
            request = request.tags(Tag::builder().key(*key).value(*value).build());
        }
        request
            .send()
            .await
            .map_err(|e| self.err("cloudformation:CreateChangeSet", e))?;
        Ok(())
    }

    /// Waits until a change set is ready (or failed) and describes it.
    pub async fn wait_change_set(
        &self,
        stack: &str,
        change_set: &str,
    ) -> Result<ChangeSetState, AwsError> {
        let mut delay = Duration::from_millis(200);
        loop {
            self.count();
            let output = self
                .cfn
                .describe_change_set()
                .stack_name(stack)
                .change_set_name(change_set)
                .send()
                .await
                .map_err(|e| self.err("cloudformation:DescribeChangeSet", e))?;
            let status = output.status().cloned();
            let done = matches!(
                status,
                Some(
                    ChangeSetStatus::CreateComplete
                        | ChangeSetStatus::Failed
                        | ChangeSetStatus::DeleteComplete
                )
            );
            if done {
                return Ok(ChangeSetState {
                    status: status.map(|s| s.as_str().to_owned()).unwrap_or_default(),
                    reason: output.status_reason().map(str::to_owned),
                    changes: output
                        .changes()
                        .iter()
                        .filter_map(|c| c.resource_change())
                        .map(|r| {
                            (
                                r.action()
                                    .map(|a| a.as_str().to_owned())
                                    .unwrap_or_default(),
                                r.logical_resource_id().unwrap_or_default().to_owned(),
                                r.resource_type().unwrap_or_default().to_owned(),
                                r.replacement().map(|x| x.as_str().to_owned()),
                            )
                        })
                        .collect(),
                });
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    pub async fn execute_change_set(&self, stack: &str, change_set: &str) -> Result<(), AwsError> {
        self.count();
        self.cfn
            .execute_change_set()
            .stack_name(stack)
            .change_set_name(change_set)
            .send()
            .await
            .map_err(|e| self.err("cloudformation:ExecuteChangeSet", e))?;
        Ok(())
    }

    pub async fn delete_change_set(&self, stack: &str, change_set: &str) -> Result<(), AwsError> {
        self.count();
        self.cfn
            .delete_change_set()
            .stack_name(stack)
            .change_set_name(change_set)
            .send()
            .await
            .map_err(|e| self.err("cloudformation:DeleteChangeSet", e))?;
        Ok(())
    }

    /// The newest page of the stack's events, oldest first.
    pub async fn stack_events(&self, stack: &str) -> Result<Vec<StackEvent>, AwsError> {
        self.count();
        let output = self
            .cfn
            .describe_stack_events()
            .stack_name(stack)
            .send()
            .await
            .map_err(|e| self.err("cloudformation:DescribeStackEvents", e))?;
        let mut events: Vec<StackEvent> = output
            .stack_events()
            .iter()
            .map(|e| StackEvent {
                id: e.event_id().unwrap_or_default().to_owned(),
                logical_id: e.logical_resource_id().unwrap_or_default().to_owned(),
                resource_type: e.resource_type().unwrap_or_default().to_owned(),
                status: e
                    .resource_status()
                    .map(|s| s.as_str().to_owned())
                    .unwrap_or_default(),
                reason: e.resource_status_reason().map(str::to_owned),
            })
            .collect();
        events.reverse();
        Ok(events)
    }

    /// The physical id of one of a stack's resources.
    pub async fn stack_resource(
        &self,
        stack: &str,
        logical_id: &str,
    ) -> Result<Option<String>, AwsError> {
        let mut token: Option<String> = None;
        loop {
            self.count();
            let page = self
                .cfn
                .list_stack_resources()
                .stack_name(stack)
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| self.err("cloudformation:ListStackResources", e))?;
            if let Some(found) = page
                .stack_resource_summaries()
                .iter()
                .find(|r| r.logical_resource_id() == Some(logical_id))
            {
                return Ok(found.physical_resource_id().map(str::to_owned));
            }
            match page.next_token() {
                Some(next) => token = Some(next.to_owned()),
                None => return Ok(None),
            }
        }
    }

    pub async fn delete_stack(&self, stack: &str) -> Result<(), AwsError> {
        self.count();
        self.cfn
            .delete_stack()
            .stack_name(stack)
            .send()
            .await
            .map_err(|e| self.err("cloudformation:DeleteStack", e))?;
        Ok(())
    }

    pub async fn continue_update_rollback(&self, stack: &str) -> Result<(), AwsError> {
        self.count();
        self.cfn
            .continue_update_rollback()
            .stack_name(stack)
            .send()
            .await
            .map_err(|e| self.err("cloudformation:ContinueUpdateRollback", e))?;
        Ok(())
    }

    // ----- S3 -----------------------------------------------------------------

    /// An object's bytes, or `None` when the object or bucket is missing.
    pub async fn get_object(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, AwsError> {
        self.count();
        match self.s3.get_object().bucket(bucket).key(key).send().await {
            Ok(output) => {
                let bytes = output.body.collect().await.map_err(|e| AwsError::Other {
                    action: "s3:GetObject".into(),
                    detail: e.to_string(),
                })?;
                Ok(Some(bytes.into_bytes().to_vec()))
            }
            Err(err) => {
                use aws_sdk_s3::error::ProvideErrorMetadata as _;
                if matches!(err.code(), Some("NoSuchKey" | "NoSuchBucket" | "NotFound")) {
                    Ok(None)
                } else {
                    Err(self.err("s3:GetObject", err))
                }
            }
        }
    }

    pub async fn object_exists(&self, bucket: &str, key: &str) -> Result<bool, AwsError> {
        self.count();
        match self.s3.head_object().bucket(bucket).key(key).send().await {
            Ok(_) => Ok(true),
            Err(err) => {
                if err.as_service_error().is_some_and(|e| e.is_not_found()) {
                    Ok(false)
                } else {
                    Err(self.err("s3:GetObject", err))
                }
            }
        }
    }

    pub async fn put_object(
        &self,
        bucket: &str,
        key: &str,
        body: Vec<u8>,
        content_type: &str,
    ) -> Result<(), AwsError> {
        self.count();
        self.s3
            .put_object()
            .bucket(bucket)
            .key(key)
            .content_type(content_type)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| self.err("s3:PutObject", e))?;
        Ok(())
    }

    /// Deletes every object version and delete marker; returns how many.
    pub async fn empty_bucket(&self, bucket: &str) -> Result<usize, AwsError> {
        let mut deleted = 0;
        loop {
            self.count();
            let page = match self.s3.list_object_versions().bucket(bucket).send().await {
                Ok(page) => page,
                Err(err) => {
                    use aws_sdk_s3::error::ProvideErrorMetadata as _;
                    if err.code() == Some("NoSuchBucket") {
                        return Ok(deleted);
                    }
                    return Err(self.err("s3:ListBucketVersions", err));
                }
            };
            let mut objects = Vec::new();
            for v in page.versions() {
                objects.push((
                    v.key().unwrap_or_default().to_owned(),
                    v.version_id().map(str::to_owned),
                ));
            }
            for m in page.delete_markers() {
                objects.push((
                    m.key().unwrap_or_default().to_owned(),
                    m.version_id().map(str::to_owned),
                ));
            }
            if objects.is_empty() {
                return Ok(deleted);
            }
            for chunk in objects.chunks(1000) {
                let ids = chunk
                    .iter()
                    .map(|(key, version)| {
                        ObjectIdentifier::builder()
                            .key(key)
                            .set_version_id(version.clone())
                            .build()
                            .map_err(|e| AwsError::Other {
                                action: "s3:DeleteObject".into(),
                                detail: e.to_string(),
                            })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let delete = Delete::builder()
                    .set_objects(Some(ids))
                    .quiet(true)
                    .build()
                    .map_err(|e| AwsError::Other {
                        action: "s3:DeleteObject".into(),
                        detail: e.to_string(),
                    })?;
                self.count();
                self.s3
                    .delete_objects()
                    .bucket(bucket)
                    .delete(delete)
                    .send()
                    .await
                    .map_err(|e| self.err("s3:DeleteObject", e))?;
                deleted += chunk.len();
            }
        }
    }

    // ----- Route53 ------------------------------------------------------------

    /// The id of the public zone named `name` (without `/hostedzone/`).
    pub async fn public_zone_id(&self, name: &str) -> Result<String, AwsError> {
        self.count();
        let wanted = format!("{}.", name.trim_end_matches('.'));
        let output = self
            .route53
            .list_hosted_zones_by_name()
            .dns_name(&wanted)
            .send()
            .await
            .map_err(|e| self.err("route53:ListHostedZonesByName", e))?;
        output
            .hosted_zones()
            .iter()
            .find(|z| z.name() == wanted && !z.config().is_some_and(|c| c.private_zone()))
            .map(|z| z.id().trim_start_matches("/hostedzone/").to_owned())
            .ok_or_else(|| AwsError::ZoneNotFound(name.to_owned()))
    }

    /// The names of the stacks that are Huxley clusters, with their status.
    pub async fn huxley_stacks(&self) -> Result<Vec<(String, String)>, AwsError> {
        let mut stacks = Vec::new();
        let mut token: Option<String> = None;
        loop {
            self.count();
            let page = self
                .cfn
                .list_stacks()
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| self.err("cloudformation:ListStacks", e))?;
            for summary in page.stack_summaries() {
                let status = summary
                    .stack_status()
                    .map(|s| s.as_str().to_owned())
                    .unwrap_or_default();
                let name = summary.stack_name().unwrap_or_default();
                if let Some(cluster) = name.strip_prefix("huxley-")
                    && status != "DELETE_COMPLETE"
                {
                    stacks.push((cluster.to_owned(), status));
                }
            }
            match page.next_token() {
                Some(next) => token = Some(next.to_owned()),
                None => break,
            }
        }
        stacks.sort();
        stacks.dedup();
        Ok(stacks)
    }

    /// Every record set in a zone.
    pub async fn list_records(&self, zone: &str) -> Result<Vec<RecordSet>, AwsError> {
        let mut records = Vec::new();
        let mut next: Option<(String, RrType)> = None;
        loop {
            self.count();
            let mut request = self
                .route53
                .list_resource_record_sets()
                .hosted_zone_id(zone);
            if let Some((name, kind)) = next.take() {
                request = request.start_record_name(name).start_record_type(kind);
            }
            let page = request
                .send()
                .await
                .map_err(|e| self.err("route53:ListResourceRecordSets", e))?;
            for set in page.resource_record_sets() {
                records.push(RecordSet {
                    name: set.name().trim_end_matches('.').to_owned(),
                    kind: set.r#type().as_str().to_owned(),
                    ttl: set.ttl(),
                    values: set
                        .resource_records()
                        .iter()
                        .map(|r| r.value().to_owned())
                        .collect(),
                });
            }
            match (
                page.is_truncated(),
                page.next_record_name(),
                page.next_record_type(),
            ) {
                (true, Some(name), Some(kind)) => next = Some((name.to_owned(), kind.clone())),
                _ => return Ok(records),
            }
        }
    }

    /// Upserts (`Some(value)`) or deletes (`None`, with the old value) TXT
    /// records, in batches within Route53's limits; returns the number of
    /// requests made.
    pub async fn change_txt_records(
        &self,
        zone: &str,
        changes: &[(String, String, bool)],
    ) -> Result<usize, AwsError> {
        let mut all = Vec::with_capacity(changes.len());
        for (name, value, upsert) in changes {
            let set = ResourceRecordSet::builder()
                .name(name)
                .r#type(RrType::Txt)
                .ttl(300)
                .resource_records(
                    ResourceRecord::builder()
                        .value(value)
                        .build()
                        .map_err(build_error)?,
                )
                .build()
                .map_err(build_error)?;
            let change = Change::builder()
                .action(if *upsert {
                    ChangeAction::Upsert
                } else {
                    ChangeAction::Delete
                })
                .resource_record_set(set)
                .build()
                .map_err(build_error)?;
            all.push(change);
        }
        let mut batches: Vec<Vec<Change>> = Vec::new();
        let mut rest = all.as_slice();
        for size in batch_sizes(
            changes
                .iter()
                .map(|(_, value, upsert)| (1, value.len(), *upsert)),
        ) {
            let (batch, tail) = rest.split_at(size);
            batches.push(batch.to_vec());
            rest = tail;
        }
        for batch in &batches {
            self.count();
            self.route53
                .change_resource_record_sets()
                .hosted_zone_id(zone)
                .change_batch(
                    ChangeBatch::builder()
                        .set_changes(Some(batch.clone()))
                        .build()
                        .map_err(build_error)?,
                )
                .send()
                .await
                .map_err(|e| self.err("route53:ChangeResourceRecordSets", e))?;
        }
        Ok(batches.len())
    }

    // ----- EC2 ----------------------------------------------------------------

    /// The newest x86_64 HVM Flatcar image of a channel.
    pub async fn newest_flatcar(&self, channel: &str) -> Result<String, AwsError> {
        use aws_sdk_ec2::types::Filter;
        self.count();
        let pattern = format!("Flatcar-{channel}-*");
        let output = self
            .ec2
            .describe_images()
            .owners(super::FLATCAR_OWNER)
            .filters(Filter::builder().name("name").values(&pattern).build())
            .filters(
                Filter::builder()
                    .name("architecture")
                    .values("x86_64")
                    .build(),
            )
            .filters(
                Filter::builder()
                    .name("virtualization-type")
                    .values("hvm")
                    .build(),
            )
            .filters(Filter::builder().name("state").values("available").build())
            .send()
            .await
            .map_err(|e| self.err("ec2:DescribeImages", e))?;
        output
            .images()
            .iter()
            .filter(|i| i.image_id().is_some())
            .max_by(|a, b| {
                a.creation_date()
                    .cmp(&b.creation_date())
                    .then(a.name().cmp(&b.name()))
            })
            .and_then(|i| i.image_id().map(str::to_owned))
            .ok_or_else(|| {
                AwsError::ImageNotFound(format!(
                    "no available x86_64 image named {pattern} owned by {} in this region",
                    super::FLATCAR_OWNER
                ))
            })
    }

    /// The cluster's nodes: its pending and running EC2 instances (those
    /// tagged `huxley:cluster=<cluster>`), sorted by id.
    pub async fn cluster_nodes(&self, cluster: &str) -> Result<Vec<Node>, AwsError> {
        use aws_sdk_ec2::types::Filter;
        let mut nodes = Vec::new();
        let mut pages = self
            .ec2
            .describe_instances()
            .filters(
                Filter::builder()
                    .name("tag:huxley:cluster")
                    .values(cluster)
                    .build(),
            )
            .filters(
                Filter::builder()
                    .name("instance-state-name")
                    .values("pending")
                    .values("running")
                    .build(),
            )
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            self.count();
            let page = page.map_err(|e| self.err("ec2:DescribeInstances", e))?;
            for instance in page.reservations().iter().flat_map(|r| r.instances()) {
                let Some(id) = instance.instance_id() else {
                    continue;
                };
                nodes.push(Node {
                    id: id.to_owned(),
                    address: instance.private_ip_address().and_then(|a| a.parse().ok()),
                    instance_type: instance
                        .instance_type()
                        .map(|t| t.as_str().to_owned())
                        .unwrap_or_default(),
                    zone: instance
                        .placement()
                        .and_then(|p| p.availability_zone())
                        .unwrap_or_default()
                        .to_owned(),
                    do_not_disrupt: instance
                        .tags()
                        .iter()
                        .any(|t| t.key() == Some(DO_NOT_DISRUPT) && t.value() == Some("true")),
                });
            }
        }
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(nodes)
    }
}

/// A node of the cluster: an EC2 instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub id: String,
    pub address: Option<std::net::IpAddr>,
    pub instance_type: String,
    /// The availability zone.
    pub zone: String,
    /// Tagged `huxley:do-not-disrupt=true`: consolidation never drains it.
    pub do_not_disrupt: bool,
}

/// The instance tag that keeps consolidation off a node, as Karpenter's
/// `karpenter.sh/do-not-disrupt` annotation does.
pub const DO_NOT_DISRUPT: &str = "huxley:do-not-disrupt";

/// One record set to upsert or delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordChange {
    pub upsert: bool,
    /// Fully qualified, without the trailing dot.
    pub name: String,
    /// `A`, `AAAA`, `CNAME`, `SRV` or `TXT`.
    pub kind: String,
    pub ttl: i64,
    pub values: Vec<String>,
}

/// Why a change batch did not commit.
#[derive(Debug)]
pub enum ChangeError {
    /// Route53 refused the batch as a whole (`InvalidChangeBatch`,
    /// `InvalidInput`): one of its changes is bad.
    Rejected(String),
    /// Throttled, or an earlier change still in flight: try again later.
    Busy(String),
    Other(AwsError),
}

impl Aws {
    /// Applies a batch of record changes atomically.
    pub async fn change_records(
        &self,
        zone: &str,
        changes: &[RecordChange],
    ) -> Result<(), ChangeError> {
        let mut built = Vec::with_capacity(changes.len());
        for change in changes {
            let mut set = ResourceRecordSet::builder()
                .name(&change.name)
                .r#type(RrType::from(change.kind.as_str()))
                .ttl(change.ttl);
            for value in &change.values {
                set = set.resource_records(
                    ResourceRecord::builder()
                        .value(value)
                        .build()
                        .map_err(|e| ChangeError::Other(build_error(e)))?,
                );
            }
            let set = set
                .build()
                .map_err(|e| ChangeError::Other(build_error(e)))?;
            built.push(
                Change::builder()
                    .action(if change.upsert {
                        ChangeAction::Upsert
                    } else {
                        ChangeAction::Delete
                    })
                    .resource_record_set(set)
                    .build()
                    .map_err(|e| ChangeError::Other(build_error(e)))?,
            );
        }
        let batch = ChangeBatch::builder()
            .set_changes(Some(built))
            .build()
            .map_err(|e| ChangeError::Other(build_error(e)))?;
        self.count();
        self.count_route53_change();
        match self
            .route53
            .change_resource_record_sets()
            .hosted_zone_id(zone)
            .change_batch(batch)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(err) => {
                use aws_sdk_s3::error::ProvideErrorMetadata as _;
                let message = err.message().unwrap_or_default().to_owned();
                match err.code() {
                    Some("InvalidChangeBatch" | "InvalidInput") => {
                        Err(ChangeError::Rejected(message))
                    }
                    Some("Throttling" | "ThrottlingException" | "PriorRequestNotComplete") => {
                        Err(ChangeError::Busy(message))
                    }
                    _ => Err(ChangeError::Other(
                        self.err("route53:ChangeResourceRecordSets", err),
                    )),
                }
            }
        }
    }
}

/// How many changes go into each Route53 request, in order. Each change is
/// given as (number of values, characters of values, is an UPSERT): a
/// request holds at most 1,000 values and 32,000 characters, an UPSERT
/// counting twice (as Route53 counts them).
pub fn batch_sizes(changes: impl IntoIterator<Item = (usize, usize, bool)>) -> Vec<usize> {
    let mut sizes: Vec<usize> = Vec::new();
    let (mut records, mut chars) = (0, 0);
    for (values, length, upsert) in changes {
        let weight = if upsert { 2 } else { 1 };
        let (values, length) = (values * weight, length * weight);
        if sizes.is_empty()
            || records + values > MAX_BATCH_RECORDS
            || chars + length > MAX_BATCH_CHARS
        {
            sizes.push(0);
            records = 0;
            chars = 0;
        }
        records += values;
        chars += length;
        if let Some(last) = sizes.last_mut() {
            *last += 1;
        }
    }
    sizes
}

fn build_error(e: impl std::fmt::Display) -> AwsError {
    AwsError::Other {
        action: "building a Route53 request".into(),
        detail: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn changes(n: usize, values: usize, length: usize, upsert: bool) -> Vec<(usize, usize, bool)> {
        vec![(values, length, upsert); n]
    }

    #[test]
    fn upserts_count_twice_against_the_record_limit() {
        assert_eq!(batch_sizes(changes(1200, 1, 3, true)), [500, 500, 200]);
        assert_eq!(batch_sizes(changes(1200, 1, 3, false)), [1000, 200]);
        assert!(batch_sizes(Vec::new()).is_empty());
    }

    #[test]
    fn every_value_of_a_multi_value_record_counts() {
        // Ten healthy replicas behind each name, upserted: 50 names a request.
        assert_eq!(batch_sizes(changes(120, 10, 100, true)), [50, 50, 20]);
    }

    #[test]
    fn long_values_are_split_by_characters() {
        // 4,000 characters, counted twice for an upsert: four per 32,000.
        assert_eq!(batch_sizes(changes(10, 1, 4_000, true)), [4, 4, 2]);
    }
}
