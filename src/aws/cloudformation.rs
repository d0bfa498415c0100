//! CloudFormation: the stack, its change sets, events and resources.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_cloudformation::types::{
    Capability, ChangeSetStatus, ChangeSetType, Parameter, Tag, TemplateStage,
};

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

    /// The account's image registry: the stack's `ImageRegistry` output,
    /// or else ECR's host for the account and region of the stack's ARN.
    pub fn registry(&self) -> Option<String> {
        if let Some(registry) = self.outputs.get("ImageRegistry") {
            return Some(registry.clone());
        }
        let parts: Vec<&str> = self.id.split(':').collect();
        match parts.as_slice() {
            ["arn", _, "cloudformation", region, account, ..] => {
                Some(format!("{account}.dkr.ecr.{region}.amazonaws.com"))
            }
            _ => None,
        }
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

/// The template source for a change set.
#[derive(Debug, Clone)]
pub enum TemplateSource {
    Body(String),
    Url(String),
}

impl Aws {
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
        Ok(self.stack_resources(stack).await?.remove(logical_id))
    }

    /// Every resource of a stack: logical id → physical id.
    pub async fn stack_resources(
        &self,
        stack: &str,
    ) -> Result<std::collections::BTreeMap<String, String>, AwsError> {
        let mut found = std::collections::BTreeMap::new();
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
            found.extend(page.stack_resource_summaries().iter().filter_map(|r| {
                Some((
                    r.logical_resource_id()?.to_owned(),
                    r.physical_resource_id()?.to_owned(),
                ))
            }));
            match page.next_token() {
                Some(next) => token = Some(next.to_owned()),
                None => return Ok(found),
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
}
