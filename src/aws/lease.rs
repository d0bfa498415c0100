//! The control plane's lease: one item in the cluster's DynamoDB table,
//! changed only by conditional writes, so two kick servers can never both
//! believe they took it.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

use super::{Aws, AwsError};

/// The lease as the table holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRecord {
    /// Who holds it: a kick server's id, new at every start.
    pub holder: String,
    /// The holder's internal API, for standbys to point callers at.
    pub address: String,
    /// Increases at every takeover; a holder acts only under its own.
    pub fence: u64,
    /// When the lease ends, in milliseconds since the Unix epoch, by the
    /// holder's clock.
    pub expires_ms: u64,
}

/// What a conditional write found.
#[derive(Debug)]
pub enum LeaseWrite {
    Done,
    /// The condition failed: someone else holds the lease, or took it.
    Lost,
    Failed(AwsError),
}

const KEY: &str = "name";
const ITEM: &str = "leader";

fn text(item: &HashMap<String, AttributeValue>, key: &str) -> Option<String> {
    item.get(key)
        .and_then(|v| v.as_s().ok())
        .map(ToOwned::to_owned)
}

fn number(item: &HashMap<String, AttributeValue>, key: &str) -> Option<u64> {
    item.get(key)
        .and_then(|v| v.as_n().ok())
        .and_then(|n| n.parse().ok())
}

impl Aws {
    /// The lease, read consistently; `None` when nobody ever took it.
    pub async fn read_lease(&self, table: &str) -> Result<Option<LeaseRecord>, AwsError> {
        self.count();
        let output = self
            .dynamodb
            .get_item()
            .table_name(table)
            .key(KEY, AttributeValue::S(ITEM.to_owned()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| self.err("dynamodb:GetItem", e))?;
        Ok(output.item().and_then(|item| {
            Some(LeaseRecord {
                holder: text(item, "holder")?,
                address: text(item, "address").unwrap_or_default(),
                fence: number(item, "fence")?,
                expires_ms: number(item, "expires_ms")?,
            })
        }))
    }

    /// Takes the lease: when `previous` is `None`, only if nobody ever took
    /// it; otherwise only if it is still exactly `previous` (nobody took or
    /// renewed it in between).
    pub async fn take_lease(
        &self,
        table: &str,
        new: &LeaseRecord,
        previous: Option<&LeaseRecord>,
    ) -> LeaseWrite {
        self.count();
        let request = self
            .dynamodb
            .put_item()
            .table_name(table)
            .item(KEY, AttributeValue::S(ITEM.to_owned()))
            .item("holder", AttributeValue::S(new.holder.clone()))
            .item("address", AttributeValue::S(new.address.clone()))
            .item("fence", AttributeValue::N(new.fence.to_string()))
            .item("expires_ms", AttributeValue::N(new.expires_ms.to_string()));
        let request = match previous {
            None => request
                .condition_expression("attribute_not_exists(#k)")
                .expression_attribute_names("#k", KEY),
            Some(previous) => request
                .condition_expression(
                    "holder = :holder AND fence = :fence AND expires_ms = :expires",
                )
                .expression_attribute_values(":holder", AttributeValue::S(previous.holder.clone()))
                .expression_attribute_values(
                    ":fence",
                    AttributeValue::N(previous.fence.to_string()),
                )
                .expression_attribute_values(
                    ":expires",
                    AttributeValue::N(previous.expires_ms.to_string()),
                ),
        };
        match request.send().await {
            Ok(_) => LeaseWrite::Done,
            Err(err) => {
                let lost = err
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception());
                self.lost_or_failed(lost, "dynamodb:PutItem", err)
            }
        }
    }

    /// Moves the lease's end, only while `holder` holds it under `fence`.
    pub async fn renew_lease(
        &self,
        table: &str,
        holder: &str,
        fence: u64,
        expires_ms: u64,
    ) -> LeaseWrite {
        self.count();
        let result = self
            .dynamodb
            .update_item()
            .table_name(table)
            .key(KEY, AttributeValue::S(ITEM.to_owned()))
            .update_expression("SET expires_ms = :expires")
            .condition_expression("holder = :holder AND fence = :fence")
            .expression_attribute_values(":expires", AttributeValue::N(expires_ms.to_string()))
            .expression_attribute_values(":holder", AttributeValue::S(holder.to_owned()))
            .expression_attribute_values(":fence", AttributeValue::N(fence.to_string()))
            .send()
            .await;
        match result {
            Ok(_) => LeaseWrite::Done,
            Err(err) => {
                let lost = err
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception());
                self.lost_or_failed(lost, "dynamodb:UpdateItem", err)
            }
        }
    }

    /// A conditional write's failure: the condition (someone else holds the
    /// lease), or anything else.
    fn lost_or_failed<E, R>(
        &self,
        condition_failed: bool,
        action: &str,
        err: aws_sdk_s3::error::SdkError<E, R>,
    ) -> LeaseWrite
    where
        E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug + Send + Sync + 'static,
    {
        if condition_failed {
            LeaseWrite::Lost
        } else {
            LeaseWrite::Failed(self.err(action, err))
        }
    }
}
