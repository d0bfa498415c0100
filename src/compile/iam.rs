//! The stack's IAM: the nodes' role and its policies, scoped to the
//! cluster's own resources (the artifact bucket's prefixes, its tokens and
//! the apps' secrets, its zones' names, its group), sized against IAM's
//! policy limits.

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

/// The node role, its managed policies and instance profile.
pub fn iam(config: &Config, r: &mut Resources) {
    let cluster = &config.cluster;
    let secret_policies = secret_policy_chunks(config);
    let mut managed = Vec::new();
    for (i, arns) in secret_policies.iter().enumerate() {
        let id = format!("NodeSecretsPolicy{}", i + 1);
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
        let id = format!("NodePublicNamesPolicy{}", i + 1);
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
    let mut role = json!({
        "Type": "AWS::IAM::Role",
        "Properties": {
            "Description": format!("Nodes of Huxley cluster {}", cluster.name),
            "AssumeRolePolicyDocument": {
                "Version": "2012-10-17",
                "Statement": [{
                    "Effect": "Allow",
                    "Principal": { "Service": "ec2.amazonaws.com" },
                    "Action": "sts:AssumeRole",
                }],
            },
            "Policies": [
                { "PolicyName": "artifacts", "PolicyDocument": artifacts_policy(config) },
                { "PolicyName": "kick", "PolicyDocument": kick_policy(config) },
            ],
            "Tags": tags(config, &[]),
        },
    });
    if !managed.is_empty() {
        role["Properties"]["ManagedPolicyArns"] = Value::Array(managed);
    }
    add(r, "NodeRole", role);
    add(
        r,
        "NodeInstanceProfile",
        json!({
            "Type": "AWS::IAM::InstanceProfile",
            "Properties": { "Roles": [{"Ref": "NodeRole"}] },
        }),
    );
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

/// What the kick server may do: its zones' records, this cluster's node
/// group, its own tokens, and publishing the cluster's description.
pub fn kick_policy(config: &Config) -> Value {
    let bucket = naming::bucket_pattern(config);
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
    if !built_apps(config).is_empty() {
        // The leader's hook server pushes what it builds; every node pulls.
        // Replicas' containers cannot use the role (IMDS hop limit 1).
        let repositories = json!({"Fn::Sub": format!(
            "arn:${{AWS::Partition}}:ecr:${{AWS::Region}}:${{AWS::AccountId}}:repository/{}/*",
            naming::repository_prefix(config)
        )});
        statements.push(json!({
            "Sid": "RegistryLogin",
            "Effect": "Allow",
            "Action": ["ecr:GetAuthorizationToken"],
            "Resource": "*",
        }));
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
