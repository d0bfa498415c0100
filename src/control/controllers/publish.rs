//! The published copy of the cluster's description, in the artifact
//! bucket, so `huxley cluster describe` works even when the kick server
//! cannot be reached.
//!
//! Changes are debounced: the description is compared once a second and
//! written only when it differs from the last copy (the time it was made
//! aside), so a burst of registrations is one write.

use std::sync::Arc;
use std::time::Duration;

use crate::aws::Aws;
use crate::control::state::Kick;
use crate::control::state::describe::describe;
use crate::spec::description::ClusterDescription;

/// Starts the publisher; it writes only while this server leads.
pub fn spawn(
    kick: Arc<Kick>,
    aws: Arc<Aws>,
    bucket: String,
    every: Duration,
) -> tokio::task::AbortHandle {
    tokio::spawn(async move {
        let mut last: Option<ClusterDescription> = None;
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            let description = describe(&kick);
            let unchanged = last.as_ref().is_some_and(|l| {
                ClusterDescription {
                    generated_at: description.generated_at,
                    ..l.clone()
                } == description
            });
            if unchanged || kick.lease.as_ref().is_some_and(|l| !l.valid()) {
                continue;
            }
            let mut body =
                serde_json::to_vec_pretty(&description).expect("a description serializes");
            body.push(b'\n');
            if aws
                .put_object(
                    &bucket,
                    crate::spec::keys::DESCRIPTION,
                    body,
                    "application/json",
                )
                .await
                .is_ok()
            {
                last = Some(description);
            }
        }
    })
    .abort_handle()
}
