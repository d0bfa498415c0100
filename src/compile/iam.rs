//! The stack's IAM: the control plane's and the nodes' roles and their
//! policies, scoped to the cluster's own resources (the artifact bucket's
//! prefixes, its tokens and the apps' secrets, its zones' names, its
//! group), sized against IAM's policy limits.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use super::cloudformation::{Resources, add, tags};
use crate::compile::cloudformation::built_apps;
use crate::model::{self, Config, naming};
use crate::spec::keys;
use crate::spec::names::ids;

/// The longest an SSM parameter ARN can be beyond the parameter name: the
/// longest partition and region names and a 12-digit account. Policies are
/// sized with it, as IAM measures the resolved document.
const ARN_OVERHEAD: usize = "arn:aws-us-gov:ssm:ap-southeast-4:123456789012:parameter".len();

/// IAM's limit on a managed policy document, in characters without spaces.
pub const MANAGED_POLICY_LIMIT: usize = 6_144;

/// The two roles and their instance profiles. The control plane's role
/// holds every right the cluster needs (the lease, DNS, the groups, the
/// tokens, the apps' secrets, publishing, pushing images); a node's may
/// only fetch its boot files and units and pull images: whatever else it
/// needs it asks kick for, as itself.
pub fn iam(config: &Config, r: &mut Resources) {
    let cluster = &config.cluster;
    let secret_policies = secret_policy_chunks(config);
    let mut managed = Vec::new();
    for (i, arns) in secret_policies.iter().enumerate() {
        let id = format!("ControlSecretsPolicy{}", i + 1);
        add(
            r,
            &id,
            json!({
                "Type": "AWS::IAM::ManagedPolicy",
                "Properties": {
                    "Description": format!("Huxley cluster {}: read the SSM parameters its services' secrets name", cluster.name),
                    "PolicyDocument": {
                        "Version": "2012-10-17",
                        "Statement": [{
                            "Sid": "ReadServiceSecrets",
                            "Effect": "Allow",
                            "Action": ["ssm:GetParameters"],
                            "Resource": arns.iter().map(|a| json!({"Fn::Sub": a})).collect::<Vec<_>>(),
                        }],
                    },
                },
            }),
        );
        managed.push(json!({"Ref": id}));
    }
    for (i, document) in public_name_policies(config).into_iter().enumerate() {
        let id = format!("ControlPublicNamesPolicy{}", i + 1);
        add(
            r,
            &id,
            json!({
                "Type": "AWS::IAM::ManagedPolicy",
                "Properties": {
                    "Description": format!("Huxley cluster {}: change only its own names in the public zone", cluster.name),
                    "PolicyDocument": document,
                },
            }),
        );
        managed.push(json!({"Ref": id}));
    }
    let mut control = role(
        config,
        &format!("The control plane of Huxley cluster {}", cluster.name),
        json!([
            { "PolicyName": "artifacts", "PolicyDocument": artifacts_policy(config) },
            { "PolicyName": "kick", "PolicyDocument": kick_policy(config) },
        ]),
    );
    if !managed.is_empty() {
        control["Properties"]["ManagedPolicyArns"] = Value::Array(managed);
    }
    add(r, "ControlRole", control);
    add(
        r,
        "ControlInstanceProfile",
        json!({
            "Type": "AWS::IAM::InstanceProfile",
            "Properties": { "Roles": [{"Ref": "ControlRole"}] },
        }),
    );
    add(
        r,
        "NodeRole",
        role(
            config,
            &format!(
                "Nodes of Huxley cluster {}: boot files, units and image pulls only",
                cluster.name
            ),
            json!([{ "PolicyName": "node", "PolicyDocument": node_policy(config) }]),
        ),
    );
    add(
        r,
        "NodeInstanceProfile",
        json!({
            "Type": "AWS::IAM::InstanceProfile",
            "Properties": { "Roles": [{"Ref": "NodeRole"}] },
        }),
    );
}

/// An EC2 instance role with `policies` inline.
fn role(config: &Config, description: &str, policies: Value) -> Value {
    json!({
        "Type": "AWS::IAM::Role",
        "Properties": {
            "Description": description,
            "AssumeRolePolicyDocument": {
                "Version": "2012-10-17",
                "Statement": [{
                    "Effect": "Allow",
                    "Principal": { "Service": "ec2.amazonaws.com" },
                    "Action": "sts:AssumeRole",
                }],
            },
            "Policies": policies,
            "Tags": tags(config, &[]),
        },
    })
}

/// What a node may do: read its boot binary, the manifest and the blobs it
/// names (units, kick.toml), and pull the cluster's images. Nothing that
/// acts on the cluster: no lease, DNS, group, token, secret, published
/// state, repository or image push.
fn node_policy(config: &Config) -> Value {
    let bucket = naming::bucket_pattern(config);
    let object =
        |key: &str| json!({"Fn::Sub": format!("arn:${{AWS::Partition}}:s3:::{bucket}/{key}")});
    let mut statements = vec![json!({
        "Sid": "ReadBootFilesAndUnits",
        "Effect": "Allow",
        "Action": ["s3:GetObject"],
        "Resource": [
            object(keys::MANIFEST),
            object(&format!("{}*", keys::BLOBS)),
            object("bin/*"),
        ],
    })];
    // Docker's awslogs driver writes the replicas' output, with the node's
    // role, into its cluster's app log groups (each named: a wildcard
    // would also match the system group); the agent writes its own
    // journal into the system group.
    let group = |name: &str, suffix: &str| {
        json!({"Fn::Sub": format!(
            "arn:${{AWS::Partition}}:logs:${{AWS::Region}}:${{AWS::AccountId}}:log-group:{name}{suffix}"
        )})
    };
    let apps: Vec<String> = config
        .apps
        .keys()
        .map(|app| crate::spec::names::log_group(&config.cluster.name, app))
        .collect();
    if !apps.is_empty() {
        statements.push(json!({
            "Sid": "WriteReplicaLogs",
            "Effect": "Allow",
            "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
            "Resource": apps
                .iter()
                .flat_map(|g| [group(g, ""), group(g, ":log-stream:*")])
                .collect::<Vec<_>>(),
        }));
    }
    let system =
        crate::spec::names::log_group(&config.cluster.name, crate::spec::names::SYSTEM_LOGS);
    // Lines only into the agents' streams (`<instance>/huxley-node`): a
    // node cannot write lines that read as kick's or the hook server's
    // (CreateLogStream is authorized on the group: an empty stream is
    // all another name gets).
    statements.push(json!({
        "Sid": "WriteAgentLogs",
        "Effect": "Allow",
        "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
        "Resource": [group(&system, ""), group(&system, ":log-stream:*/huxley-node")],
    }));
    if !built_apps(config).is_empty() {
        statements.push(registry_login());
        statements.push(json!({
            "Sid": "PullImages",
            "Effect": "Allow",
            "Action": ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"],
            "Resource": repositories(config),
        }));
    }
    json!({ "Version": "2012-10-17", "Statement": statements })
}

/// Asking ECR for a registry password (it names no repository).
fn registry_login() -> Value {
    json!({
        "Sid": "RegistryLogin",
        "Effect": "Allow",
        "Action": ["ecr:GetAuthorizationToken"],
        "Resource": "*",
    })
}

/// The cluster's ECR repositories.
fn repositories(config: &Config) -> Value {
    json!({"Fn::Sub": format!(
        "arn:${{AWS::Partition}}:ecr:${{AWS::Region}}:${{AWS::AccountId}}:repository/{}/*",
        naming::repository_prefix(config)
    )})
}

/// The SSM parameter ARNs the services' secrets name, as `Fn::Sub`
/// patterns, split into managed policies that each stay under IAM's size
/// limit.
pub fn secret_policy_chunks(config: &Config) -> Vec<Vec<String>> {
    let parameters: BTreeSet<String> = config
        .services()
        .flat_map(|(_, s)| s.secrets.values())
        .map(|secret| match secret {
            model::SecretRef::Ssm { parameter } => parameter.clone(),
        })
        .collect();
    // The statement around the ARNs, measured without whitespace.
    const STATEMENT: usize = 160;
    let mut chunks: Vec<Vec<String>> = Vec::new();
    let mut size = STATEMENT;
    for parameter in parameters {
        let arn = format!(
            "arn:${{AWS::Partition}}:ssm:${{AWS::Region}}:${{AWS::AccountId}}:parameter{parameter}"
        );
        let cost = ARN_OVERHEAD + parameter.len() + 3;
        if chunks.is_empty() || size + cost > MANAGED_POLICY_LIMIT {
            chunks.push(Vec::new());
            size = STATEMENT;
        }
        size += cost;
        if let Some(chunk) = chunks.last_mut() {
            chunk.push(arn);
        }
    }
    chunks
}

fn artifacts_policy(config: &Config) -> Value {
    let bucket = naming::bucket_pattern(config);
    json!({
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ReadArtifacts",
                "Effect": "Allow",
                "Action": ["s3:GetObject"],
                "Resource": {"Fn::Sub": format!("arn:${{AWS::Partition}}:s3:::{bucket}/*")},
            },
            {
                "Sid": "ListArtifacts",
                "Effect": "Allow",
                "Action": ["s3:ListBucket"],
                "Resource": {"Fn::Sub": format!("arn:${{AWS::Partition}}:s3:::{bucket}")},
            },
        ],
    })
}

/// What the control plane may do: its zones' records, this cluster's node
/// group, its own tokens, publishing the cluster's description, keeping
/// the pushed repositories and deploys, and pushing the images it builds.
pub fn kick_policy(config: &Config) -> Value {
    let bucket = naming::bucket_pattern(config);
    let system =
        crate::spec::names::log_group(&config.cluster.name, crate::spec::names::SYSTEM_LOGS);
    let zone = |id: &str| json!({"Fn::Sub": format!("arn:${{AWS::Partition}}:route53:::hostedzone/${{{id}}}")});
    let mut read = vec![zone(ids::PRIVATE_ZONE)];
    if config.cluster.public_domain.is_some() {
        read.push(zone(ids::PUBLIC_ZONE_PARAMETER));
    }
    let mut statements = vec![
        json!({
            "Sid": "PrivateRecords",
            "Effect": "Allow",
            "Action": ["route53:ChangeResourceRecordSets"],
            "Resource": zone(ids::PRIVATE_ZONE),
        }),
        json!({
            "Sid": "ReadRecords",
            "Effect": "Allow",
            "Action": ["route53:ListResourceRecordSets"],
            "Resource": read,
        }),
    ];
    let mut policy = json!({
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "RecordChanges",
                "Effect": "Allow",
                "Action": ["route53:GetChange"],
                "Resource": {"Fn::Sub": "arn:${AWS::Partition}:route53:::change/*"},
            },
            {
                "Sid": "ScaleNodeGroup",
                "Effect": "Allow",
                "Action": ["autoscaling:SetDesiredCapacity", "autoscaling:TerminateInstanceInAutoScalingGroup"],
                "Resource": {"Fn::Sub": format!(
                    "arn:${{AWS::Partition}}:autoscaling:${{AWS::Region}}:${{AWS::AccountId}}:autoScalingGroup:*:autoScalingGroupName/{}",
                    naming::node_group(config)
                )},
            },
            {
                "Sid": "Describe",
                "Effect": "Allow",
                "Action": ["autoscaling:DescribeAutoScalingGroups", "ec2:DescribeInstances", "ec2:DescribeRouteTables", "ec2:DescribeTags"],
                "Resource": "*",
            },
            {
                "Sid": "Lease",
                "Effect": "Allow",
                "Action": ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"],
                "Resource": {"Fn::GetAtt": [ids::LEASE_TABLE, "Arn"]},
            },
            {
                "Sid": "ContainerRoutes",
                "Effect": "Allow",
                "Action": ["ec2:CreateRoute", "ec2:DeleteRoute", "ec2:ReplaceRoute"],
                "Resource": {"Fn::Sub": format!("arn:${{AWS::Partition}}:ec2:${{AWS::Region}}:${{AWS::AccountId}}:route-table/${{{}}}", ids::ROUTE_TABLE)},
            },
            {
                "Sid": "RouteThroughNodes",
                "Effect": "Allow",
                "Action": ["ec2:ModifyInstanceAttribute"],
                "Resource": {"Fn::Sub": "arn:${AWS::Partition}:ec2:${AWS::Region}:${AWS::AccountId}:instance/*"},
                "Condition": {"StringEquals": {"ec2:ResourceTag/huxley:cluster": config.cluster.name}},
            },
            {
                "Sid": "StackLookups",
                "Effect": "Allow",
                "Action": ["cloudformation:DescribeStacks", "cloudformation:ListStackResources"],
                "Resource": {"Fn::Sub": format!("arn:${{AWS::Partition}}:cloudformation:${{AWS::Region}}:${{AWS::AccountId}}:stack/{}/*", naming::stack(config))},
            },
            {
                "Sid": "Tokens",
                "Effect": "Allow",
                "Action": ["ssm:GetParameters"],
                "Resource": {"Fn::Sub": format!(
                    "arn:${{AWS::Partition}}:ssm:${{AWS::Region}}:${{AWS::AccountId}}:parameter/huxley/{}/tokens/*",
                    config.cluster.name
                )},
            },
            {
                "Sid": "NotTheAdminToken",
                "Effect": "Deny",
                "Action": ["ssm:GetParameter", "ssm:GetParameters", "ssm:GetParametersByPath", "ssm:GetParameterHistory"],
                "Resource": {"Fn::Sub": format!(
                    "arn:${{AWS::Partition}}:ssm:${{AWS::Region}}:${{AWS::AccountId}}:parameter/huxley/{}/tokens/admin",
                    config.cluster.name
                )},
            },
            {
                // The control machines' agents send the daemons' journal.
                "Sid": "WriteSystemLogs",
                "Effect": "Allow",
                "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                "Resource": [
                    {"Fn::Sub": format!("arn:${{AWS::Partition}}:logs:${{AWS::Region}}:${{AWS::AccountId}}:log-group:{system}")},
                    {"Fn::Sub": format!("arn:${{AWS::Partition}}:logs:${{AWS::Region}}:${{AWS::AccountId}}:log-group:{system}:log-stream:*")},
                ],
            },
            {
                "Sid": "PublishDescription",
                "Effect": "Allow",
                "Action": ["s3:PutObject"],
                "Resource": {"Fn::Sub": format!("arn:${{AWS::Partition}}:s3:::{bucket}/{}*", keys::PUBLISHED)},
            },
            {
                "Sid": "KeepRepositories",
                "Effect": "Allow",
                "Action": ["s3:PutObject"],
                "Resource": {"Fn::Sub": format!("arn:${{AWS::Partition}}:s3:::{bucket}/{}*", keys::REPOS)},
            },
            {
                "Sid": "RecordDeploys",
                "Effect": "Allow",
                "Action": ["s3:PutObject"],
                "Resource": {"Fn::Sub": format!("arn:${{AWS::Partition}}:s3:::{bucket}/{}*", keys::DEPLOYS)},
            },
            {
                "Sid": "FindPublicZone",
                "Effect": "Allow",
                "Action": ["route53:ListHostedZonesByName"],
                "Resource": "*",
            },
        ],
    });
    if config.load_balanced().next().is_some() {
        // The groups by their tag, not by ARN: a hundred ARNs would not
        // fit in the role's inline policies.
        statements.push(json!({
            "Sid": "Targets",
            "Effect": "Allow",
            "Action": ["elasticloadbalancing:RegisterTargets", "elasticloadbalancing:DeregisterTargets"],
            "Resource": {"Fn::Sub": "arn:${AWS::Partition}:elasticloadbalancing:${AWS::Region}:${AWS::AccountId}:targetgroup/*/*"},
            "Condition": {"StringEquals": {"aws:ResourceTag/huxley:cluster": config.cluster.name}},
        }));
        statements.push(json!({
            // ELB's describe actions take no resource.
            "Sid": "TargetHealth",
            "Effect": "Allow",
            "Action": ["elasticloadbalancing:DescribeTargetHealth", "elasticloadbalancing:DescribeLoadBalancers"],
            "Resource": "*",
        }));
    }
    if !built_apps(config).is_empty() {
        // The leader's hook server pushes what it builds. Replicas'
        // containers cannot use the role (IMDS hop limit 1).
        let repositories = repositories(config);
        statements.push(registry_login());
        statements.push(json!({
            "Sid": "PullAndPushImages",
            "Effect": "Allow",
            "Action": [
                "ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:CompleteLayerUpload",
                "ecr:DescribeImages", "ecr:GetDownloadUrlForLayer", "ecr:InitiateLayerUpload",
                "ecr:PutImage", "ecr:UploadLayerPart",
            ],
            "Resource": repositories,
        }));
    }
    if let Some(list) = policy["Statement"].as_array_mut() {
        statements.append(list);
        *list = statements;
    }
    policy
}

/// In the user's zone the nodes may change only the names the cluster owns
/// (and their ownership records), named in managed policies that each stay
/// under IAM's size limit: nothing else of the zone is theirs to change.
pub fn public_name_policies(config: &Config) -> Vec<Value> {
    if config.cluster.public_domain.is_none() {
        return Vec::new();
    }
    const STATEMENT: usize = 400;
    let mut chunks: Vec<Vec<String>> = Vec::new();
    let mut size = STATEMENT;
    for name in owned_public_names(config) {
        let cost = name.len() + 3;
        if chunks.is_empty() || size + cost > MANAGED_POLICY_LIMIT {
            chunks.push(Vec::new());
            size = STATEMENT;
        }
        size += cost;
        if let Some(chunk) = chunks.last_mut() {
            chunk.push(name);
        }
    }
    chunks
        .into_iter()
        .map(|names| {
            json!({
                "Version": "2012-10-17",
                "Statement": [{
                    "Sid": "PublicNames",
                    "Effect": "Allow",
                    "Action": ["route53:ChangeResourceRecordSets"],
                    "Resource": {"Fn::Sub": format!("arn:${{AWS::Partition}}:route53:::hostedzone/${{{}}}", ids::PUBLIC_ZONE_PARAMETER)},
                    "Condition": {
                        "ForAllValues:StringEquals": {
                            "route53:ChangeResourceRecordSetsNormalizedRecordNames": names,
                        },
                    },
                }],
            })
        })
        .collect()
}

/// The public names the cluster may change, as Route53 normalizes them
/// (lower case, no final dot): the services' names, the kick server's, and
/// the ownership record of each.
fn owned_public_names(config: &Config) -> Vec<String> {
    let mut names: BTreeSet<String> = config
        .services()
        .flat_map(|(_, service)| config.public_names(service))
        .collect();
    names.insert(naming::kick_name(config));
    let owners: Vec<String> = names
        .iter()
        .map(|n| format!("{}{n}", crate::spec::registry::OWNER_PREFIX))
        .collect();
    names.extend(owners);
    names.into_iter().map(|n| n.to_ascii_lowercase()).collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;

    use crate::compile::cloudformation::TemplateInput;
    use crate::model::Config;

    /// What the control plane calls, by IAM action: the kick and hook
    /// servers, with the control role.
    const ON_THE_CONTROL_PLANE: &[&str] = &[
        "logs:CreateLogStream",
        "logs:PutLogEvents",
        "autoscaling:DescribeAutoScalingGroups",
        "autoscaling:SetDesiredCapacity",
        "autoscaling:TerminateInstanceInAutoScalingGroup",
        "cloudformation:DescribeStacks",
        "cloudformation:ListStackResources",
        "dynamodb:GetItem",
        "ecr:GetAuthorizationToken",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "ec2:CreateRoute",
        "ec2:DeleteRoute",
        "ec2:DescribeInstances",
        "ec2:DescribeRouteTables",
        "ec2:ModifyInstanceAttribute",
        "ec2:ReplaceRoute",
        "elasticloadbalancing:DeregisterTargets",
        "elasticloadbalancing:DescribeLoadBalancers",
        "elasticloadbalancing:DescribeTargetHealth",
        "elasticloadbalancing:RegisterTargets",
        "route53:ChangeResourceRecordSets",
        "route53:ListHostedZonesByName",
        "route53:ListResourceRecordSets",
        "s3:GetObject",
        "s3:PutObject",
        "ssm:GetParameters",
    ];

    /// What a node's agent calls, with the node role: its boot files and
    /// units, and the registry's authorization (images are pulled by
    /// Docker with it).
    const ON_THE_NODES: &[&str] = &["ecr:GetAuthorizationToken", "s3:GetObject"];

    /// What only the CLI calls, with the user's own rights.
    const CLI_ONLY: &[&str] = &[
        "acm:DeleteCertificate",
        "acm:DescribeCertificate",
        "acm:ListCertificates",
        "acm:ListTagsForCertificate",
        "acm:RequestCertificate",
        "logs:DescribeLogGroups",
        "logs:FilterLogEvents",
        "cloudformation:ContinueUpdateRollback",
        "cloudformation:CreateChangeSet",
        "cloudformation:DeleteChangeSet",
        "cloudformation:DeleteStack",
        "cloudformation:DescribeChangeSet",
        "cloudformation:DescribeStackEvents",
        "cloudformation:ExecuteChangeSet",
        "cloudformation:GetTemplate",
        "cloudformation:ListStacks",
        "ec2:DescribeImages",
        "ecr:BatchDeleteImage",
        "ecr:DescribeRepositories",
        "ecr:ListImages",
        "elasticloadbalancing:DescribeLoadBalancerAttributes",
        "elasticloadbalancing:ModifyLoadBalancerAttributes",
        "s3:DeleteObject",
        "s3:ListBucketVersions",
        "ssm:DeleteParameters",
        "ssm:GetParametersByPath",
        "ssm:PutParameter",
    ];

    /// Every IAM action the code names when it maps an SDK error (each call
    /// does), read from src/aws/.
    fn actions_in_the_code() -> BTreeSet<String> {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/aws");
        let mut actions = BTreeSet::new();
        for entry in std::fs::read_dir(dir).expect("src/aws") {
            let text = std::fs::read_to_string(entry.expect("entry").path()).expect("source");
            for piece in text.split("self.err(\"").skip(1) {
                if let Some((action, _)) = piece.split_once('"') {
                    actions.insert(action.to_owned());
                }
            }
        }
        actions
    }

    #[test]
    fn every_aws_call_is_classified_and_each_role_allows_its_own() {
        let code = actions_in_the_code();
        assert!(code.len() > 20, "{code:?}");
        for action in &code {
            assert!(
                ON_THE_CONTROL_PLANE.contains(&action.as_str())
                    || CLI_ONLY.contains(&action.as_str()),
                "{action} is called but not classified: add it to ON_THE_CONTROL_PLANE (and the control role) or CLI_ONLY"
            );
        }
        // The control role's statements, inline and managed, in the template.
        let c = config(
            &std::fs::read_to_string(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/examples/blog/huxley.toml"
            ))
            .expect("example"),
        );
        let template = crate::compile::cloudformation::template(&TemplateInput {
            config: &c,
            user_data: "",
            control_user_data: "",
        });
        let resources = template["Resources"].as_object().expect("resources");
        let mut statements: Vec<&Value> = Vec::new();
        for policy in resources["ControlRole"]["Properties"]["Policies"]
            .as_array()
            .expect("policies")
        {
            statements.extend(
                policy["PolicyDocument"]["Statement"]
                    .as_array()
                    .expect("statements"),
            );
        }
        for resource in resources
            .values()
            .filter(|r| r["Type"] == "AWS::IAM::ManagedPolicy")
        {
            statements.extend(
                resource["Properties"]["PolicyDocument"]["Statement"]
                    .as_array()
                    .expect("statements"),
            );
        }
        let allows = |action: &str| -> Vec<&Value> {
            statements
                .iter()
                .copied()
                .filter(|s| {
                    s["Effect"] == "Allow"
                        && s["Action"]
                            .as_array()
                            .is_some_and(|a| a.iter().any(|x| x == action))
                })
                .collect()
        };
        for action in ON_THE_CONTROL_PLANE {
            assert!(
                !allows(action).is_empty(),
                "the control role does not allow {action}"
            );
        }
        let node = statements_of(&resources["NodeRole"]);
        for action in ON_THE_NODES {
            assert!(
                node.iter().any(|s| s["Action"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|x| x == action))),
                "the node role does not allow {action}"
            );
        }
        // Regression: the nodes could read the admin token; kick checks its
        // hash instead.
        let denied = statements.iter().any(|s| {
            s["Effect"] == "Deny"
                && s["Action"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|x| x == "ssm:GetParameters"))
                && s["Resource"]["Fn::Sub"]
                    .as_str()
                    .is_some_and(|r| r.ends_with("/tokens/admin"))
        });
        assert!(denied, "the control role may read the admin token");
        // Regression: kick publishes under huxley/published/, the role
        // allowed published/ only.
        for key in [
            crate::spec::keys::DESCRIPTION,
            crate::spec::keys::TLS_FINGERPRINT,
            &crate::spec::keys::history("blog"),
            &crate::spec::keys::bundle("blog"),
        ] {
            let covered = allows("s3:PutObject").iter().any(|s| {
                s["Resource"]["Fn::Sub"]
                    .as_str()
                    .and_then(|arn| arn.split_once(":::"))
                    .and_then(|(_, object)| object.split_once('/'))
                    .is_some_and(|(_, pattern)| key.starts_with(pattern.trim_end_matches('*')))
            });
            assert!(covered, "the control role may not write {key}");
        }
    }

    /// A role's inline statements (a node's role has no managed policy).
    fn statements_of(role: &Value) -> Vec<Value> {
        role["Properties"]["Policies"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|p| {
                p["PolicyDocument"]["Statement"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .collect()
    }

    /// The blog example's template.
    fn blog_template() -> Value {
        let c = config(
            &std::fs::read_to_string(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/examples/blog/huxley.toml"
            ))
            .expect("example"),
        );
        crate::compile::cloudformation::template(&TemplateInput {
            config: &c,
            user_data: "",
            control_user_data: "",
        })
    }

    /// A node's role cannot act on the cluster: no lease, DNS, group,
    /// route, token, secret, published state, repository or image push.
    /// It reads only its boot files, the manifest and its blobs, and pulls.
    #[test]
    fn a_nodes_role_reads_its_files_and_pulls_images_and_nothing_else() {
        let template = blog_template();
        let resources = template["Resources"].as_object().expect("resources");
        assert!(
            resources["NodeRole"]["Properties"]
                .get("ManagedPolicyArns")
                .is_none(),
            "no managed policy (secrets, public names) is the nodes'"
        );
        let statements = statements_of(&resources["NodeRole"]);
        let actions: BTreeSet<String> = statements
            .iter()
            .flat_map(|s| s["Action"].as_array().cloned().unwrap_or_default())
            .filter_map(|a| a.as_str().map(str::to_owned))
            .collect();
        assert_eq!(
            actions,
            [
                "ecr:BatchCheckLayerAvailability",
                "ecr:BatchGetImage",
                "ecr:GetAuthorizationToken",
                "ecr:GetDownloadUrlForLayer",
                "logs:CreateLogStream",
                "logs:PutLogEvents",
                "s3:GetObject",
            ]
            .map(str::to_owned)
            .into(),
        );
        // Logs only into its own cluster's groups.
        let logs = statements
            .iter()
            .find(|s| s["Sid"] == "WriteReplicaLogs")
            .expect("the logs statement");
        assert_eq!(
            logs["Resource"][1]["Fn::Sub"],
            "arn:${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}:log-group:/huxley/acme/blog:log-stream:*"
        );
        // In the system group, only agents' streams.
        let agent = statements
            .iter()
            .find(|s| s["Sid"] == "WriteAgentLogs")
            .expect("the agent's logs statement");
        assert_eq!(
            agent["Resource"],
            serde_json::json!([
                {"Fn::Sub": "arn:${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}:log-group:/huxley/acme/system"},
                {"Fn::Sub": "arn:${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}:log-group:/huxley/acme/system:log-stream:*/huxley-node"}
            ])
        );
        // No wildcard over the groups: the system group is written only
        // by the agent's own statement.
        assert!(
            statements
                .iter()
                .flat_map(|s| s["Resource"].as_array().cloned().unwrap_or_default())
                .filter_map(|r| r["Fn::Sub"].as_str().map(str::to_owned))
                .all(|r| !r.contains("log-group:/huxley/acme/*")),
            "{statements:?}"
        );
        let readable = statements
            .iter()
            .filter(|s| {
                s["Action"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|x| x == "s3:GetObject"))
            })
            .flat_map(|s| s["Resource"].as_array().cloned().unwrap_or_default())
            .filter_map(|r| r["Fn::Sub"].as_str().map(str::to_owned))
            .collect::<Vec<_>>()
            .join(" ");
        for key in [
            crate::spec::keys::DESCRIPTION,
            crate::spec::keys::TLS_FINGERPRINT,
            &crate::spec::keys::history("blog"),
            &crate::spec::keys::bundle("blog"),
        ] {
            let (prefix, _) = key.rsplit_once('/').expect("a prefix");
            assert!(
                !readable.contains(prefix),
                "a node may read {key}: {readable}"
            );
        }
        // Every statement is an Allow: nothing to override.
        assert!(statements.iter().all(|s| s["Effect"] == "Allow"));
        // The control plane's machines have their own profile and role.
        let control = &resources["ControlLaunchTemplate"]["Properties"]["LaunchTemplateData"];
        assert_eq!(
            control["IamInstanceProfile"]["Arn"]["Fn::GetAtt"][0],
            "ControlInstanceProfile"
        );
        let node = &resources["NodeLaunchTemplate"]["Properties"]["LaunchTemplateData"];
        assert_eq!(
            node["IamInstanceProfile"]["Arn"]["Fn::GetAtt"][0],
            "NodeInstanceProfile"
        );
    }

    fn config(source: &str) -> Config {
        crate::config::check(source).config.expect("valid")
    }
}
