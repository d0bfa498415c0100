//! Reading the live state a plan diffs against, in a fixed number of calls:
//! the stack and its template, the artifact manifest, and this cluster's
//! ownership records in the public zone (paged).

use std::collections::BTreeMap;

use super::StackSummary;
use super::{Aws, AwsError};
use crate::digest::sha256;
use crate::spec::manifest::Manifest;
use crate::spec::registry::OWNER_PREFIX;

/// What to read.
#[derive(Debug, Clone)]
pub struct Query<'a> {
    pub stack: &'a str,
    pub cluster: &'a str,
    pub public_domain: Option<&'a str>,
}

/// The live state and what was learnt on the way.
#[derive(Debug, Clone)]
pub struct LiveRead {
    pub live: Live,
    pub stack: Option<StackSummary>,
    pub public_zone_id: Option<String>,
    pub bucket: Option<String>,
}

/// Reads the live state.
pub async fn read_live(aws: &Aws, query: &Query<'_>) -> Result<LiveRead, AwsError> {
    // A stack holding only an unexecuted change set has nothing yet.
    let stack = aws
        .describe_stack(query.stack)
        .await?
        .filter(|s| !s.is_review_only());
    let mut live = Live::default();
    let mut bucket = None;
    if let Some(summary) = &stack {
        let template_body = if summary.status == "ROLLBACK_COMPLETE" {
            String::new()
        } else {
            aws.get_template(query.stack).await?
        };
        live.stack = Some(LiveStack {
            id: summary.id.clone(),
            status: summary.status.clone(),
            template_body,
            parameters: summary.parameters.clone(),
            drift_status: summary.drift_status.clone(),
        });
        bucket = summary.bucket(query.cluster);
    }
    if let Some(bucket) = &bucket
        && let Some(bytes) = aws.get_object(bucket, crate::spec::keys::MANIFEST).await?
    {
        let text = String::from_utf8_lossy(&bytes).into_owned();
        if let Ok(manifest) = serde_json::from_str::<Manifest>(&text) {
            live.artifacts = Some(manifest.contents());
        }
        live.manifest_sha256 = Some(sha256(&text));
    }
    let mut public_zone_id = None;
    if let Some(domain) = query.public_domain {
        let zone = aws.public_zone_id(domain).await?;
        live.records = owned(&aws.list_records(&zone).await?, query.cluster);
        public_zone_id = Some(zone);
    }
    Ok(LiveRead {
        live,
        stack,
        public_zone_id,
        bucket,
    })
}

impl Aws {
    /// The cluster's stack and its artifact bucket, or why there are none.
    pub async fn cluster_stack(
        &self,
        cluster: &str,
        stack: &str,
    ) -> Result<(StackSummary, String), String> {
        let summary = self
            .describe_stack(stack)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| {
                format!(
                    "no cluster {cluster} in {} (no stack {stack})",
                    self.region()
                )
            })?;
        let bucket = summary
            .bucket(cluster)
            .ok_or_else(|| format!("the stack {stack} names no artifact bucket"))?;
        Ok((summary, bucket))
    }

    /// The applied manifest in `bucket`, or why it cannot be had.
    pub async fn manifest(&self, bucket: &str) -> Result<Manifest, String> {
        let bytes = self
            .get_object(bucket, crate::spec::keys::MANIFEST)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("s3://{bucket} has no manifest: run `huxley apply`"))?;
        serde_json::from_slice(&bytes).map_err(|e| format!("the manifest does not parse: {e}"))
    }
}

/// The record sets of a zone that a cluster's destroy removes: in its own
/// (private) zone every record but SOA and NS; in the user's zone the
/// ownership records that name this cluster and every record set at the
/// names they own (the addresses kick wrote: left behind, they would point
/// at addresses AWS gives to someone else), never anything else.
pub fn to_remove(
    records: &[super::RecordSet],
    cluster: &str,
    whole_zone: bool,
) -> Vec<super::RecordChange> {
    let owners = owned(records, cluster);
    let names: std::collections::BTreeSet<&str> = owners
        .keys()
        .filter_map(|owner| owner.strip_prefix(OWNER_PREFIX))
        .collect();
    records
        .iter()
        .filter(|r| r.kind != "SOA" && r.kind != "NS")
        .filter(|r| whole_zone || owners.contains_key(&r.name) || names.contains(r.name.as_str()))
        .map(|r| super::RecordChange {
            upsert: false,
            name: r.name.clone(),
            kind: r.kind.clone(),
            ttl: r.ttl.unwrap_or(300),
            values: r.values.clone(),
            alias: r.alias.clone(),
        })
        .collect()
}

/// The ownership records that name this cluster.
pub fn owned(records: &[super::RecordSet], cluster: &str) -> BTreeMap<String, String> {
    let marker = format!("cluster={cluster},");
    records
        .iter()
        .filter(|r| r.kind == "TXT" && r.name.starts_with(OWNER_PREFIX))
        .filter_map(|r| {
            let value = r.values.first()?;
            value
                .contains(&marker)
                .then(|| (r.name.clone(), value.clone()))
        })
        .collect()
}

/// The live state a plan diffs against.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Live {
    pub stack: Option<LiveStack>,
    /// The artifacts in the bucket, from its manifest; `None` when there is
    /// no manifest yet.
    pub artifacts: Option<BTreeMap<String, String>>,
    pub manifest_sha256: Option<String>,
    /// This cluster's ownership records in the public zone: name → value.
    pub records: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LiveStack {
    pub id: String,
    pub status: String,
    pub template_body: String,
    pub parameters: BTreeMap<String, String>,
    /// `DRIFTED`, `IN_SYNC`, `NOT_CHECKED` or `UNKNOWN`, from the last drift
    /// detection.
    pub drift_status: Option<String>,
}

#[cfg(test)]
mod removal_tests {
    use super::*;
    use crate::aws::RecordSet;

    fn set(name: &str, kind: &str, value: &str) -> RecordSet {
        RecordSet {
            name: name.into(),
            kind: kind.into(),
            ttl: Some(60),
            values: vec![value.into()],
            alias: None,
        }
    }

    #[test]
    fn destroy_removes_what_the_cluster_owns_and_nothing_else() {
        let records = [
            set("acme.example.com", "SOA", "ns. hostmaster. 1 2 3 4 5"),
            set("acme.example.com", "NS", "ns-1.awsdns.com."),
            set(
                "_huxley-owner.www.acme.example.com",
                "TXT",
                "\"heritage=huxley,cluster=acme,app=blog,service=web\"",
            ),
            set("www.acme.example.com", "A", "203.0.113.7"),
            set("www.acme.example.com", "AAAA", "2001:db8::7"),
            // Another cluster's name, and one that is nobody's.
            set(
                "_huxley-owner.shop.acme.example.com",
                "TXT",
                "\"heritage=huxley,cluster=acme2,app=x,service=y\"",
            ),
            set("shop.acme.example.com", "A", "203.0.113.8"),
            set("mail.acme.example.com", "MX", "10 mail.example.net."),
        ];
        let removed: Vec<(String, String)> = to_remove(&records, "acme", false)
            .into_iter()
            .map(|c| (c.name, c.kind))
            .collect();
        assert_eq!(
            removed,
            [
                (
                    "_huxley-owner.www.acme.example.com".to_owned(),
                    "TXT".to_owned()
                ),
                ("www.acme.example.com".to_owned(), "A".to_owned()),
                ("www.acme.example.com".to_owned(), "AAAA".to_owned()),
            ]
        );
        // The cluster's own zone is emptied but for SOA and NS.
        assert_eq!(to_remove(&records, "acme", true).len(), records.len() - 2);
    }
}
