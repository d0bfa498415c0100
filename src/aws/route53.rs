//! Route53: zones and record sets, changed in batches within its limits.

use aws_sdk_route53::types::{
    AliasTarget, Change, ChangeAction, ChangeBatch, ResourceRecord, ResourceRecordSet, RrType,
};

use super::{Aws, AwsError};

/// A record set in a zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordSet {
    pub name: String,
    pub kind: String,
    pub ttl: Option<i64>,
    pub values: Vec<String>,
    /// An alias record set's target (it has no values then).
    pub alias: Option<Alias>,
}

/// Where an alias record set points: a load balancer's DNS name in its
/// canonical zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alias {
    pub zone_id: String,
    /// Without the trailing dot.
    pub dns_name: String,
}

/// Route53 accepts at most 1,000 records and 32,000 characters of values
/// per request (an UPSERT counts twice).
const MAX_BATCH_RECORDS: usize = 1_000;

const MAX_BATCH_CHARS: usize = 32_000;

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
    /// An alias instead of values (`ttl` is then not sent).
    pub alias: Option<Alias>,
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
                    alias: set.alias_target().map(|a| Alias {
                        zone_id: a.hosted_zone_id().to_owned(),
                        dns_name: a.dns_name().trim_end_matches('.').to_owned(),
                    }),
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

    /// Applies a batch of record changes atomically; the change's id.
    pub async fn change_records(
        &self,
        zone: &str,
        changes: &[RecordChange],
    ) -> Result<String, ChangeError> {
        let mut built = Vec::with_capacity(changes.len());
        for change in changes {
            let mut set = ResourceRecordSet::builder()
                .name(&change.name)
                .r#type(RrType::from(change.kind.as_str()));
            set = match &change.alias {
                Some(alias) => set.alias_target(
                    AliasTarget::builder()
                        .hosted_zone_id(&alias.zone_id)
                        .dns_name(&alias.dns_name)
                        .evaluate_target_health(false)
                        .build()
                        .map_err(|e| ChangeError::Other(build_error(e)))?,
                ),
                None => set.ttl(change.ttl),
            };
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
            Ok(output) => Ok(output
                .change_info()
                .map(|c| c.id().trim_start_matches("/change/").to_owned())
                .unwrap_or_default()),
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

impl Aws {
    /// Waits until Route53 reports change `id` INSYNC (on every one of
    /// its authoritative servers), polling every 2 s, at most `limit`;
    /// whether it did.
    pub async fn wait_insync(&self, id: &str, limit: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            self.count();
            let status = self
                .route53
                .get_change()
                .id(id)
                .send()
                .await
                .ok()
                .and_then(|o| o.change_info().map(|c| c.status().as_str().to_owned()));
            if status.as_deref() == Some("INSYNC") {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_secs(2)).await;
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
