//! The diff behind a plan: desired vs live, as data in and data out.
//!
//! Nothing here talks to AWS, so every rule is unit-tested directly.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use serde_json::Value;

use super::{
    Action, ArtifactChange, Base, Desired, FORMAT_VERSION, ParameterChange, Plan, PropertyChange,
    RecordChange, Replacement, ResourceChange, StackAction, Summary,
};
use crate::aws::live::Live;
use crate::digest::sha256;

/// Who and where, for the plan's header.
#[derive(Debug, Clone)]
pub struct Target {
    pub cluster: String,
    pub region: String,
    pub stack: String,
}

/// Whether a stack's status is what a failed creation leaves: rolled
/// back (`ROLLBACK_COMPLETE`), or not even that (`ROLLBACK_FAILED`, such
/// as a bucket something wrote in). CloudFormation can only delete such a
/// stack, and it never ran a cluster, so apply deletes it and creates it
/// again. (A failed deletion, `DELETE_FAILED`, is only deletable too, but
/// ran one: `prepare` refuses it and points at `huxley destroy`.)
pub fn failed_creation(status: &str) -> bool {
    matches!(status, "ROLLBACK_COMPLETE" | "ROLLBACK_FAILED")
}

/// Computes the plan.
pub fn plan(target: &Target, desired: Desired, live: &Live) -> Plan {
    let new_template: Value = serde_json::from_str(&desired.template_body).unwrap_or(Value::Null);
    let recreate = live
        .stack
        .as_ref()
        .is_some_and(|s| failed_creation(&s.status));
    let (old_template, old_parameters) = match &live.stack {
        Some(stack) if !recreate => (
            serde_json::from_str(&stack.template_body).unwrap_or(Value::Null),
            stack.parameters.clone(),
        ),
        _ => (Value::Null, BTreeMap::new()),
    };
    let resources = diff_resources(
        &resolve_refs(&old_template, &old_parameters),
        &resolve_refs(&new_template, &desired.parameters),
    );
    let parameters: Vec<ParameterChange> = desired
        .parameters
        .iter()
        .filter(|(name, value)| old_parameters.get(*name) != Some(value))
        .map(|(name, value)| ParameterChange {
            name: name.clone(),
            before: old_parameters.get(name).cloned(),
            after: value.clone(),
        })
        .collect();
    let artifacts = diff_artifacts(live.artifacts.as_ref(), &desired.artifacts);
    let (records, mut drift) = diff_records(&live.records, &desired.records);

    let stack_action = match &live.stack {
        None => StackAction::Create,
        Some(_) if recreate => StackAction::Recreate,
        Some(_) if !resources.is_empty() || !parameters.is_empty() => StackAction::Update,
        Some(_) => StackAction::None,
    };
    let mut summary = Summary::default();
    for change in &resources {
        match change.action {
            Action::Add => summary.add += 1,
            Action::Modify => summary.change += 1,
            Action::Replace => summary.replace += 1,
            Action::Remove => summary.destroy += 1,
        }
    }

    let mut notes = Vec::new();
    if let Some(stack) = &live.stack {
        if recreate {
            notes.push(format!(
                "the stack is {}: its creation failed and CloudFormation can only delete it, so apply deletes it (its bucket emptied first) and creates it again",
                stack.status
            ));
        } else if stack.status.ends_with("_IN_PROGRESS") {
            notes.push(format!(
                "the stack is {}: apply waits for it to finish first",
                stack.status
            ));
        } else if stack.status.ends_with("_FAILED") {
            notes.push(format!(
                "the stack is {}: apply recovers it first (continues the rollback) and then applies",
                stack.status
            ));
        }
        if stack.drift_status.as_deref() == Some("DRIFTED") {
            drift.push(
                "the stack has drifted: resources were changed outside CloudFormation (as of its last drift detection); apply sets them back to the template where the template names them".to_owned(),
            );
        }
        let rolls = resources
            .iter()
            .any(|r| r.logical_id == "NodeLaunchTemplate" && r.action == Action::Modify);
        if rolls && !recreate {
            notes.push("the node launch template changes: every node is replaced, one at a time (rolling update of NodeGroup)".to_owned());
        }
        let rolls_control = resources
            .iter()
            .any(|r| r.logical_id == "ControlLaunchTemplate" && r.action == Action::Modify);
        if rolls_control && !recreate {
            notes.push("the control plane's launch template changes: each control machine is replaced, one at a time (rolling update of ControlGroup; the lease moves to a standby)".to_owned());
        }
    }

    let base = Base {
        stack_id: live.stack.as_ref().map(|s| s.id.clone()),
        stack_status: live.stack.as_ref().map(|s| s.status.clone()),
        template_sha256: live.stack.as_ref().map(|s| sha256(&s.template_body)),
        manifest_sha256: live.manifest_sha256.clone(),
    };
    Plan {
        format_version: FORMAT_VERSION,
        huxley_version: env!("CARGO_PKG_VERSION").to_owned(),
        cluster: target.cluster.clone(),
        region: target.region.clone(),
        stack: target.stack.clone(),
        stack_action,
        summary,
        resources,
        parameters,
        artifacts,
        records,
        tokens: Vec::new(),
        certificate: None,
        drift,
        notes,
        base,
        desired,
    }
}

/// Replaces `{"Ref": P}` with P's value for every parameter, so a changed
/// parameter shows up where it is used.
fn resolve_refs(value: &Value, parameters: &BTreeMap<String, String>) -> Value {
    match value {
        Value::Object(map) => {
            if map.len() == 1
                && let Some(Value::String(name)) = map.get("Ref")
                && let Some(v) = parameters.get(name)
            {
                return Value::String(v.clone());
            }
            Value::Object(
                map.iter()
                    .map(|(k, v)| (k.clone(), resolve_refs(v, parameters)))
                    .collect(),
            )
        }
        Value::Array(items) => {
            Value::Array(items.iter().map(|v| resolve_refs(v, parameters)).collect())
        }
        other => other.clone(),
    }
}

/// The replacement table generated from the CloudFormation schemas.
struct ReplacementTable(BTreeMap<String, (BTreeSet<String>, BTreeSet<String>)>);

fn table() -> &'static ReplacementTable {
    static TABLE: OnceLock<ReplacementTable> = OnceLock::new();
    TABLE.get_or_init(|| {
        let data: Value = serde_json::from_str(include_str!("../../schemas/cfn-replacement.json"))
            .expect("the replacement table is valid JSON");
        let mut types = BTreeMap::new();
        for (kind, entry) in data["types"].as_object().into_iter().flatten() {
            let set = |key: &str| -> BTreeSet<String> {
                entry[key]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|p| p.as_str().map(str::to_owned))
                    .collect()
            };
            types.insert(kind.clone(), (set("create-only"), set("conditional")));
        }
        ReplacementTable(types)
    })
}

/// Whether changing `path` (a property path under `Properties`) replaces a
/// resource of `kind`. Schema paths may be nested (`A/B`); a change under
/// one counts.
pub fn replacement(kind: &str, path: &str) -> Replacement {
    let Some((create_only, conditional)) = table().0.get(kind) else {
        // A type missing from the table: say it may replace rather than
        // promise it will not.
        return Replacement::Conditional;
    };
    let schema_path = path.replace('.', "/");
    let under = |p: &String| {
        let p = p.replace("/*", "");
        schema_path == p
            || schema_path.starts_with(&format!("{p}/"))
            || schema_path.starts_with(&format!("{p}["))
    };
    if create_only.iter().any(under) {
        Replacement::Always
    } else if conditional.iter().any(under) {
        Replacement::Conditional
    } else {
        Replacement::Never
    }
}

/// Whether the table covers a resource type (tests check every emitted one).
pub fn knows(kind: &str) -> bool {
    table().0.contains_key(kind)
}

fn diff_resources(old: &Value, new: &Value) -> Vec<ResourceChange> {
    let empty = serde_json::Map::new();
    let old = old["Resources"].as_object().unwrap_or(&empty);
    let new = new["Resources"].as_object().unwrap_or(&empty);
    let mut changes = Vec::new();
    for (id, resource) in new {
        let kind = resource["Type"].as_str().unwrap_or_default().to_owned();
        match old.get(id) {
            None => changes.push(ResourceChange {
                logical_id: id.clone(),
                resource_type: kind,
                action: Action::Add,
                replacement: Replacement::Never,
                properties: Vec::new(),
            }),
            Some(before) if before["Type"] != resource["Type"] => changes.push(ResourceChange {
                logical_id: id.clone(),
                resource_type: kind,
                action: Action::Replace,
                replacement: Replacement::Always,
                properties: vec![PropertyChange {
                    path: "Type".to_owned(),
                    before: Some(before["Type"].clone()),
                    after: Some(resource["Type"].clone()),
                    replacement: Replacement::Always,
                }],
            }),
            Some(before) => {
                let mut leaves = Vec::new();
                diff_values(
                    "",
                    Some(&before["Properties"]),
                    Some(&resource["Properties"]),
                    &mut leaves,
                );
                let mut properties: Vec<PropertyChange> = leaves
                    .into_iter()
                    .map(|(path, before, after)| PropertyChange {
                        replacement: replacement(&kind, &path),
                        path,
                        before,
                        after,
                    })
                    .collect();
                // Attributes beside Properties (Metadata, UpdatePolicy,
                // DependsOn) update the stack but never replace.
                for key in ["DependsOn", "Metadata", "UpdatePolicy", "DeletionPolicy"] {
                    let mut leaves = Vec::new();
                    diff_values(key, before.get(key), resource.get(key), &mut leaves);
                    properties.extend(leaves.into_iter().map(|(path, before, after)| {
                        PropertyChange {
                            path,
                            before,
                            after,
                            replacement: Replacement::Never,
                        }
                    }));
                }
                if properties.is_empty() {
                    continue;
                }
                let worst = properties
                    .iter()
                    .map(|p| p.replacement)
                    .max()
                    .unwrap_or(Replacement::Never);
                changes.push(ResourceChange {
                    logical_id: id.clone(),
                    resource_type: kind,
                    action: if worst == Replacement::Always {
                        Action::Replace
                    } else {
                        Action::Modify
                    },
                    replacement: worst,
                    properties,
                });
            }
        }
    }
    for (id, resource) in old {
        if !new.contains_key(id) {
            changes.push(ResourceChange {
                logical_id: id.clone(),
                resource_type: resource["Type"].as_str().unwrap_or_default().to_owned(),
                action: Action::Remove,
                replacement: Replacement::Never,
                properties: Vec::new(),
            });
        }
    }
    changes.sort_by(|a, b| (a.action, &a.logical_id).cmp(&(b.action, &b.logical_id)));
    changes
}

/// Collects the changed leaves between two values as (path, before, after).
/// Maps are compared key by key and lists of equal length item by item;
/// anything else that differs is one change.
fn diff_values(
    path: &str,
    before: Option<&Value>,
    after: Option<&Value>,
    out: &mut Vec<(String, Option<Value>, Option<Value>)>,
) {
    let join = |key: &str| {
        if path.is_empty() {
            key.to_owned()
        } else {
            format!("{path}.{key}")
        }
    };
    match (before, after) {
        (Some(Value::Object(a)), Some(Value::Object(b))) => {
            let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for key in keys {
                diff_values(&join(key), a.get(key), b.get(key), out);
            }
        }
        (Some(Value::Array(a)), Some(Value::Array(b))) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                diff_values(&format!("{path}[{i}]"), Some(x), Some(y), out);
            }
        }
        (a, b) if a != b => out.push((path.to_owned(), a.cloned(), b.cloned())),
        _ => {}
    }
}

/// The entries of two maps that differ, as (key, action, old, new) in key
/// order: `add` when only `desired` has it, `remove` when only `live` has
/// it, `modify` when the values differ.
fn map_changes<'a>(
    live: &'a BTreeMap<String, String>,
    desired: &'a BTreeMap<String, String>,
) -> Vec<(&'a String, Action, Option<&'a String>, Option<&'a String>)> {
    let keys: BTreeSet<&String> = live.keys().chain(desired.keys()).collect();
    keys.into_iter()
        .filter_map(|key| match (live.get(key), desired.get(key)) {
            (None, Some(new)) => Some((key, Action::Add, None, Some(new))),
            (Some(old), None) => Some((key, Action::Remove, Some(old), None)),
            (Some(old), Some(new)) if old != new => {
                Some((key, Action::Modify, Some(old), Some(new)))
            }
            _ => None,
        })
        .collect()
}

fn diff_artifacts(
    live: Option<&BTreeMap<String, String>>,
    desired: &BTreeMap<String, String>,
) -> Vec<ArtifactChange> {
    let empty = BTreeMap::new();
    let mut changes: Vec<ArtifactChange> = map_changes(live.unwrap_or(&empty), desired)
        .into_iter()
        .map(|(path, action, old, new)| ArtifactChange {
            path: path.clone(),
            action,
            diff: similar::TextDiff::from_lines(
                old.map_or("", String::as_str),
                new.map_or("", String::as_str),
            )
            .unified_diff()
            .context_radius(3)
            .header(&format!("live: {path}"), &format!("new: {path}"))
            .to_string(),
        })
        .collect();
    changes.sort_by(|a, b| (a.action, &a.path).cmp(&(b.action, &b.path)));
    changes
}

fn diff_records(
    live: &BTreeMap<String, String>,
    desired: &BTreeMap<String, String>,
) -> (Vec<RecordChange>, Vec<String>) {
    let mut drift = Vec::new();
    let mut changes: Vec<RecordChange> = map_changes(live, desired)
        .into_iter()
        .map(|(name, action, old, new)| {
            if let (Some(old), Some(new)) = (old, new) {
                drift.push(format!(
                    "the record {name} was changed outside Huxley: {old} (apply restores {new})"
                ));
            }
            RecordChange {
                name: name.clone(),
                action,
                value: new.or(old).cloned().unwrap_or_default(),
            }
        })
        .collect();
    changes.sort_by(|a, b| (a.action, &a.name).cmp(&(b.action, &b.name)));
    (changes, drift)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::live::LiveStack;
    use serde_json::json;

    fn target() -> Target {
        Target {
            cluster: "acme".into(),
            region: "us-west-2".into(),
            stack: "huxley-acme".into(),
        }
    }

    fn template(resources: Value) -> String {
        json!({ "Resources": resources }).to_string()
    }

    fn live(body: String, parameters: &[(&str, &str)]) -> Live {
        Live {
            stack: Some(LiveStack {
                id: "stack-1".into(),
                status: "CREATE_COMPLETE".into(),
                template_body: body,
                parameters: parameters
                    .iter()
                    .map(|(k, v)| ((*k).into(), (*v).into()))
                    .collect(),
                drift_status: None,
            }),
            ..Live::default()
        }
    }

    #[test]
    fn an_empty_account_adds_everything() {
        let desired = Desired {
            template_body: template(
                json!({"Vpc": {"Type": "AWS::EC2::VPC", "Properties": {"CidrBlock": "10.0.0.0/16"}}}),
            ),
            artifacts: [("kick/kick.toml".to_owned(), "x\n".to_owned())].into(),
            ..Desired::default()
        };
        let plan = plan(&target(), desired, &Live::default());
        assert_eq!(plan.stack_action, StackAction::Create);
        assert_eq!(
            plan.summary,
            Summary {
                add: 1,
                change: 0,
                replace: 0,
                destroy: 0
            }
        );
        assert_eq!(plan.artifacts[0].action, Action::Add);
        assert!(plan.has_changes());
    }

    #[test]
    fn no_changes_when_live_matches() {
        let body = template(
            json!({"Vpc": {"Type": "AWS::EC2::VPC", "Properties": {"CidrBlock": "10.0.0.0/16"}}}),
        );
        let desired = Desired {
            template_body: body.clone(),
            ..Desired::default()
        };
        let mut live = live(body, &[]);
        live.artifacts = Some(BTreeMap::new());
        let plan = plan(&target(), desired, &live);
        assert_eq!(plan.stack_action, StackAction::None);
        assert!(!plan.has_changes(), "{plan:?}");
    }

    #[test]
    fn create_only_properties_force_replacement() {
        let old = template(
            json!({"Vpc": {"Type": "AWS::EC2::VPC", "Properties": {"CidrBlock": "10.0.0.0/16", "EnableDnsSupport": true}}}),
        );
        let new = template(
            json!({"Vpc": {"Type": "AWS::EC2::VPC", "Properties": {"CidrBlock": "10.1.0.0/16", "EnableDnsSupport": false}}}),
        );
        let plan = plan(
            &target(),
            Desired {
                template_body: new,
                ..Desired::default()
            },
            &live(old, &[]),
        );
        let vpc = &plan.resources[0];
        assert_eq!(vpc.action, Action::Replace);
        let cidr = vpc
            .properties
            .iter()
            .find(|p| p.path == "CidrBlock")
            .expect("cidr change");
        assert_eq!(cidr.replacement, Replacement::Always);
        assert_eq!(cidr.before, Some(json!("10.0.0.0/16")));
        let dns = vpc
            .properties
            .iter()
            .find(|p| p.path == "EnableDnsSupport")
            .expect("dns change");
        assert_eq!(dns.replacement, Replacement::Never);
        assert_eq!(plan.summary.replace, 1);
    }

    #[test]
    fn conditional_properties_may_replace() {
        assert_eq!(
            replacement("AWS::AutoScaling::AutoScalingGroup", "VPCZoneIdentifier[0]"),
            Replacement::Conditional
        );
        assert_eq!(
            replacement("AWS::AutoScaling::AutoScalingGroup", "MaxSize"),
            Replacement::Never
        );
        assert_eq!(
            replacement("AWS::EC2::SecurityGroupIngress", "FromPort"),
            Replacement::Always
        );
        assert_eq!(replacement("AWS::Made::Up", "X"), Replacement::Conditional);
    }

    #[test]
    fn a_changed_parameter_shows_where_it_is_used_and_rolls_the_nodes() {
        let body = template(
            json!({"NodeLaunchTemplate": {"Type": "AWS::EC2::LaunchTemplate", "Properties": {"LaunchTemplateData": {"ImageId": {"Ref": "NodeImageId"}}}}}),
        );
        let desired = Desired {
            template_body: body.clone(),
            parameters: [("NodeImageId".to_owned(), "ami-2".to_owned())].into(),
            ..Desired::default()
        };
        let plan = plan(&target(), desired, &live(body, &[("NodeImageId", "ami-1")]));
        assert_eq!(plan.stack_action, StackAction::Update);
        assert_eq!(plan.parameters[0].before.as_deref(), Some("ami-1"));
        let change = &plan.resources[0].properties[0];
        assert_eq!(change.path, "LaunchTemplateData.ImageId");
        assert_eq!(
            (change.before.clone(), change.after.clone()),
            (Some(json!("ami-1")), Some(json!("ami-2")))
        );
        assert!(
            plan.notes
                .iter()
                .any(|n| n.contains("every node is replaced")),
            "{:?}",
            plan.notes
        );
    }

    #[test]
    fn destroys_and_replacements_come_first() {
        let old = template(json!({
            "A": {"Type": "AWS::EC2::VPC", "Properties": {"CidrBlock": "10.0.0.0/16"}},
            "Gone": {"Type": "AWS::EC2::InternetGateway", "Properties": {}},
            "M": {"Type": "AWS::EC2::VPC", "Properties": {"EnableDnsSupport": true}},
        }));
        let new = template(json!({
            "A": {"Type": "AWS::EC2::VPC", "Properties": {"CidrBlock": "10.9.0.0/16"}},
            "B": {"Type": "AWS::EC2::InternetGateway", "Properties": {}},
            "M": {"Type": "AWS::EC2::VPC", "Properties": {"EnableDnsSupport": false}},
        }));
        let plan = plan(
            &target(),
            Desired {
                template_body: new,
                ..Desired::default()
            },
            &live(old, &[]),
        );
        let order: Vec<(&str, Action)> = plan
            .resources
            .iter()
            .map(|r| (r.logical_id.as_str(), r.action))
            .collect();
        assert_eq!(
            order,
            [
                ("Gone", Action::Remove),
                ("A", Action::Replace),
                ("B", Action::Add),
                ("M", Action::Modify)
            ]
        );
    }

    #[test]
    fn a_failed_creation_is_recreated() {
        let body = template(json!({"Vpc": {"Type": "AWS::EC2::VPC", "Properties": {}}}));
        let mut live = live(body.clone(), &[]);
        if let Some(stack) = live.stack.as_mut() {
            stack.status = "ROLLBACK_COMPLETE".into();
        }
        let plan = plan(
            &target(),
            Desired {
                template_body: body.clone(),
                ..Desired::default()
            },
            &live,
        );
        assert_eq!(plan.stack_action, StackAction::Recreate);
        assert_eq!(plan.summary.add, 1);
        // A rollback that could not delete everything: the same.
        if let Some(stack) = live.stack.as_mut() {
            stack.status = "ROLLBACK_FAILED".into();
        }
        let plan = super::plan(
            &target(),
            Desired {
                template_body: body,
                ..Desired::default()
            },
            &live,
        );
        assert_eq!(plan.stack_action, StackAction::Recreate);
        // A failed deletion ran a cluster; a failed update is recovered:
        // neither is deleted here.
        assert!(!failed_creation("DELETE_FAILED"));
        assert!(!failed_creation("UPDATE_ROLLBACK_FAILED"));
    }

    #[test]
    fn hand_edited_records_are_drift() {
        let desired = Desired {
            records: [(
                "_huxley-owner.www.acme.example.com".to_owned(),
                "\"mine\"".to_owned(),
            )]
            .into(),
            ..Desired::default()
        };
        let live = Live {
            records: [
                (
                    "_huxley-owner.www.acme.example.com".to_owned(),
                    "\"edited\"".to_owned(),
                ),
                (
                    "_huxley-owner.old.acme.example.com".to_owned(),
                    "\"mine\"".to_owned(),
                ),
            ]
            .into(),
            ..Live::default()
        };
        let plan = plan(&target(), desired, &live);
        let actions: Vec<Action> = plan.records.iter().map(|r| r.action).collect();
        assert_eq!(actions, [Action::Remove, Action::Modify]);
        assert!(plan.drift[0].contains("changed outside Huxley"));
    }

    #[test]
    fn artifact_changes_are_unified_diffs() {
        let desired = Desired {
            artifacts: [("a".to_owned(), "one\ntwo\n".to_owned())].into(),
            ..Desired::default()
        };
        let live = Live {
            artifacts: Some(
                [
                    ("a".to_owned(), "one\n".to_owned()),
                    ("b".to_owned(), "x\n".to_owned()),
                ]
                .into(),
            ),
            ..Live::default()
        };
        let plan = plan(&target(), desired, &live);
        assert_eq!(plan.artifacts.len(), 2);
        assert_eq!(plan.artifacts[0].action, Action::Remove);
        assert!(
            plan.artifacts[1].diff.contains("+two"),
            "{}",
            plan.artifacts[1].diff
        );
    }
}
