//! Reading the live state a plan diffs against, in a fixed number of calls:
//! the stack and its template, the artifact manifest, and this cluster's
//! ownership records in the public zone (paged).

use std::collections::BTreeMap;

use super::ops::StackSummary;
use super::{Aws, AwsError};
use crate::plan::diff::{Live, LiveStack, sha256};
use crate::plan::manifest::{MANIFEST_KEY, Manifest};

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

/// The prefix of Huxley's ownership records: `_huxley-owner.<name>`.
pub const OWNER_PREFIX: &str = "_huxley-owner.";

/// Reads the live state.
pub async fn read_live(aws: &Aws, query: &Query<'_>) -> Result<LiveRead, AwsError> {
    // A stack holding only an unexecuted change set has nothing yet.
    let stack = aws
        .describe_stack(query.stack)
        .await?
        .filter(|s| !crate::apply::is_review(&s.status));
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
        && let Some(bytes) = aws.get_object(bucket, MANIFEST_KEY).await?
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

/// The ownership records that name this cluster.
pub fn owned(records: &[super::ops::RecordSet], cluster: &str) -> BTreeMap<String, String> {
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
