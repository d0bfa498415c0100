//! The cluster's log groups in CloudWatch Logs: one per app, which its
//! replicas write to through Docker's `awslogs` driver (a stream per
//! service, replica and container start), and one for the control plane's
//! daemons; each keeps lines for `[cluster.logs] retention-days`.

use serde_json::json;

use super::cloudformation::{Resources, add, app_id, justify, tags};
use crate::model::Config;
use crate::spec::names;

/// The logical id of the control plane's log group.
pub const SYSTEM_LOG_GROUP: &str = "LogsSystem";

/// Adds the log groups.
pub fn log_groups(config: &Config, r: &mut Resources) {
    let cluster = &config.cluster.name;
    let groups = config
        .apps
        .values()
        .map(|app| {
            (
                app_id("Logs", &app.name),
                names::log_group(cluster, &app.name),
                Some(app.name.as_str()),
            )
        })
        .chain(std::iter::once((
            SYSTEM_LOG_GROUP.to_owned(),
            names::log_group(cluster, names::SYSTEM_LOGS),
            None,
        )));
    for (id, name, app) in groups {
        let extra: Vec<(&str, &str)> = app.map(|a| ("huxley:app", a)).into_iter().collect();
        add(
            r,
            &id,
            json!({
                "Type": "AWS::Logs::LogGroup",
                // The logs go with the cluster, as its other resources do.
                "DeletionPolicy": "Delete",
                "UpdateReplacePolicy": "Delete",
                "Metadata": justify(&[(
                    "CKV_AWS_158",
                    "CloudWatch Logs encrypts every log group at rest with its own keys; a customer-managed KMS key adds cost and a key policy that must let the logs service in, without keeping out anyone the IAM policies do not already.",
                )], &[]),
                "Properties": {
                    "LogGroupName": name,
                    "RetentionInDays": config.cluster.log_retention_days,
                    "Tags": tags(config, &extra),
                },
            }),
        );
    }
}
