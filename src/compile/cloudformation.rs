//! The cluster's CloudFormation template: network, security groups, the
//! private zone, the artifact bucket, IAM, the launch template and the node
//! group.
//!
//! Built as a `serde_json::Value`, whose maps are sorted, so the output is
//! byte-for-byte deterministic. What grows with the number of services is
//! kept out of the stack: only public host-ports (one ingress rule each) and
//! the SSM parameters named by `secrets` (one ARN each, in managed policies)
//! appear here; everything else lives in the units and the kick config.
//!
//! Where checkov or cfn-lint flags a deliberate choice, the resource's
//! Metadata carries the skip and its justification (listed in the README).

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::model::{self, Config, naming};

/// Logical ids and parameter names other stages refer to.
pub mod ids {
    pub const NODE_IMAGE_PARAMETER: &str = "NodeImageId";
    pub const PUBLIC_ZONE_PARAMETER: &str = "PublicZoneId";
    pub const ARTIFACT_BUCKET: &str = "ArtifactBucket";
    pub const PRIVATE_ZONE: &str = "PrivateZone";
    pub const NODE_GROUP: &str = "NodeGroup";
    pub const LEASE_TABLE: &str = "LeaseTable";
    pub const ROUTE_TABLE: &str = "PublicRouteTable";
}

/// The longest an SSM parameter ARN can be beyond the parameter name: the
/// longest partition and region names and a 12-digit account. Policies are
/// sized with it, as IAM measures the resolved document.
const ARN_OVERHEAD: usize = "arn:aws-us-gov:ssm:ap-southeast-4:123456789012:parameter".len();

/// IAM's limit on a managed policy document, in characters without spaces.
pub const MANAGED_POLICY_LIMIT: usize = 6_144;

/// Everything the template needs beyond the model.
#[derive(Debug)]
pub struct TemplateInput<'a> {
    pub config: &'a Config,
    /// The Ignition config, with `${ArtifactBucket}` left for `Fn::Sub`.
    pub user_data: &'a str,
}

/// Builds the template.
pub fn template(input: &TemplateInput<'_>) -> Value {
    let config = input.config;
    let cluster = &config.cluster;
    let mut resources = serde_json::Map::new();
    let mut add = |id: &str, value: Value| {
        resources.insert(id.to_owned(), value);
    };

    // --- network -----------------------------------------------------------
    add(
        "Vpc",
        json!({
            "Type": "AWS::EC2::VPC",
            "Properties": {
                "CidrBlock": cluster.vpc_cidr.to_string(),
                "EnableDnsHostnames": true,
                "EnableDnsSupport": true,
                "Tags": tags(config, &[("Name", &naming::stack(config))]),
            },
        }),
    );
    add(
        "InternetGateway",
        json!({
            "Type": "AWS::EC2::InternetGateway",
            "Properties": { "Tags": tags(config, &[]) },
        }),
    );
    add(
        "InternetGatewayAttachment",
        json!({
            "Type": "AWS::EC2::VPCGatewayAttachment",
            "Properties": { "InternetGatewayId": {"Ref": "InternetGateway"}, "VpcId": {"Ref": "Vpc"} },
        }),
    );
    add(
        "PublicRouteTable",
        json!({
            "Type": "AWS::EC2::RouteTable",
            "Properties": { "VpcId": {"Ref": "Vpc"}, "Tags": tags(config, &[]) },
        }),
    );
    add(
        "PublicRoute",
        json!({
            "Type": "AWS::EC2::Route",
            "DependsOn": "InternetGatewayAttachment",
            "Properties": {
                "RouteTableId": {"Ref": "PublicRouteTable"},
                "DestinationCidrBlock": "0.0.0.0/0",
                "GatewayId": {"Ref": "InternetGateway"},
            },
        }),
    );
    let subnets = subnet_ids(config);
    for ((id, zone), cidr) in subnets
        .iter()
        .zip(&cluster.availability_zones)
        .zip(subnet_cidrs(config))
    {
        add(
            id,
            json!({
                "Type": "AWS::EC2::Subnet",
                "Metadata": justify(&[], &[("W3010", "The zones are the ones huxley.toml names, on purpose: they must match where the user's other resources live.")]),
                "Properties": {
                    "VpcId": {"Ref": "Vpc"},
                    "AvailabilityZone": zone,
                    "CidrBlock": cidr,
                    "MapPublicIpOnLaunch": true,
                    "Tags": tags(config, &[("Name", &format!("{}-{zone}", naming::stack(config)))]),
                },
            }),
        );
        add(
            &format!("{id}RouteTableAssociation"),
            json!({
                "Type": "AWS::EC2::SubnetRouteTableAssociation",
                "Properties": { "SubnetId": {"Ref": id}, "RouteTableId": {"Ref": "PublicRouteTable"} },
            }),
        );
    }

    // --- security group: one resource per rule (see EMULATOR.md) -----------
    add(
        "NodeSecurityGroup",
        json!({
            "Type": "AWS::EC2::SecurityGroup",
            "Properties": {
                "GroupDescription": format!("Huxley cluster {} nodes", cluster.name),
                "VpcId": {"Ref": "Vpc"},
                "SecurityGroupEgress": [{
                    "CidrIp": "0.0.0.0/0",
                    "IpProtocol": "-1",
                    "Description": "Image pulls, AWS APIs and service traffic",
                }],
                "Tags": tags(config, &[]),
            },
        }),
    );
    add(
        "IngressNodes",
        json!({
            "Type": "AWS::EC2::SecurityGroupIngress",
            "Properties": {
                "GroupId": {"Ref": "NodeSecurityGroup"},
                "SourceSecurityGroupId": {"Ref": "NodeSecurityGroup"},
                "IpProtocol": "-1",
                "Description": "Nodes talk to each other freely",
            },
        }),
    );
    add(
        "IngressContainers",
        json!({
            "Type": "AWS::EC2::SecurityGroupIngress",
            "Properties": {
                "GroupId": {"Ref": "NodeSecurityGroup"},
                "CidrIp": model::CONTAINER_RANGE,
                "IpProtocol": "-1",
                "Description": "Containers on other nodes, from their routed subnets",
            },
        }),
    );
    for rule in ingress_rules(config) {
        let mut properties = json!({
            "GroupId": {"Ref": "NodeSecurityGroup"},
            "IpProtocol": "tcp",
            "FromPort": rule.from_port,
            "ToPort": rule.to_port,
            "Description": rule.description,
        });
        let key = if rule.cidr.contains(':') {
            "CidrIpv6"
        } else {
            "CidrIp"
        };
        properties[key] = json!(rule.cidr);
        let mut resource =
            json!({ "Type": "AWS::EC2::SecurityGroupIngress", "Properties": properties });
        if rule.public && (rule.from_port..=rule.to_port).contains(&80) {
            resource["Metadata"] = justify(
                &[(
                    "CKV_AWS_260",
                    "Port 80 serves a service's public names; opening it to the internet is what `public` asks for.",
                )],
                &[],
            );
        }
        add(&rule.id, resource);
    }

    // --- the control plane's lease -------------------------------------------
    add(
        ids::LEASE_TABLE,
        json!({
            "Type": "AWS::DynamoDB::Table",
            "DeletionPolicy": "Delete",
            "UpdateReplacePolicy": "Delete",
            "Metadata": justify(&[(
                "CKV_AWS_119",
                "The table holds one lease item (a kick server's id, address and a counter), no customer data; AWS-owned-key encryption is on, and a customer-managed key would cost more than the table.",
            )], &[]),
            "Properties": {
                "TableName": naming::lease_table(config),
                "BillingMode": "PAY_PER_REQUEST",
                "AttributeDefinitions": [{"AttributeName": "name", "AttributeType": "S"}],
                "KeySchema": [{"AttributeName": "name", "KeyType": "HASH"}],
                "SSESpecification": {"SSEEnabled": true},
                "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": true},
                "Tags": tags(config, &[]),
            },
        }),
    );

    // --- DNS ----------------------------------------------------------------
    add(
        ids::PRIVATE_ZONE,
        json!({
            "Type": "AWS::Route53::HostedZone",
            "Properties": {
                "Name": cluster.private_domain,
                "HostedZoneConfig": { "Comment": format!("Private names of Huxley cluster {}", cluster.name) },
                "VPCs": [{ "VPCId": {"Ref": "Vpc"}, "VPCRegion": {"Ref": "AWS::Region"} }],
                "HostedZoneTags": tags(config, &[]),
            },
        }),
    );

    // --- artifact bucket ----------------------------------------------------
    let bucket = naming::bucket_pattern(config);
    add(
        ids::ARTIFACT_BUCKET,
        json!({
            "Type": "AWS::S3::Bucket",
            "Metadata": justify(
                &[("CKV_AWS_18", "Access logging needs a second bucket per cluster; this bucket holds only generated artifacts written by `huxley apply`, and CloudTrail records its API use.")],
                &[],
            ),
            "Properties": {
                "BucketName": {"Fn::Sub": bucket},
                "BucketEncryption": {
                    "ServerSideEncryptionConfiguration": [{
                        "ServerSideEncryptionByDefault": { "SSEAlgorithm": "AES256" },
                        "BucketKeyEnabled": true,
                    }],
                },
                "PublicAccessBlockConfiguration": {
                    "BlockPublicAcls": true,
                    "BlockPublicPolicy": true,
                    "IgnorePublicAcls": true,
                    "RestrictPublicBuckets": true,
                },
                "OwnershipControls": { "Rules": [{ "ObjectOwnership": "BucketOwnerEnforced" }] },
                "VersioningConfiguration": { "Status": "Enabled" },
                "LifecycleConfiguration": {
                    "Rules": [{
                        "Id": "expire-old-versions",
                        "Status": "Enabled",
                        "NoncurrentVersionExpiration": { "NoncurrentDays": 30 },
                        "AbortIncompleteMultipartUpload": { "DaysAfterInitiation": 7 },
                    }],
                },
                "Tags": tags(config, &[]),
            },
        }),
    );
    add(
        "ArtifactBucketPolicy",
        json!({
            "Type": "AWS::S3::BucketPolicy",
            "Properties": {
                "Bucket": {"Ref": ids::ARTIFACT_BUCKET},
                "PolicyDocument": {
                    "Version": "2012-10-17",
                    "Statement": [{
                        "Sid": "TlsOnly",
                        "Effect": "Deny",
                        "Principal": "*",
                        "Action": "s3:*",
                        "Resource": [
                            {"Fn::GetAtt": [ids::ARTIFACT_BUCKET, "Arn"]},
                            {"Fn::Sub": format!("arn:${{AWS::Partition}}:s3:::{bucket}/*")},
                        ],
                        "Condition": { "Bool": { "aws:SecureTransport": "false" } },
                    }],
                },
            },
        }),
    );

    // --- IAM ------------------------------------------------------------------
    let secret_policies = secret_policy_chunks(config);
    let mut managed = Vec::new();
    for (i, arns) in secret_policies.iter().enumerate() {
        let id = format!("NodeSecretsPolicy{}", i + 1);
        add(
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
    add("NodeRole", role);
    add(
        "NodeInstanceProfile",
        json!({
            "Type": "AWS::IAM::InstanceProfile",
            "Properties": { "Roles": [{"Ref": "NodeRole"}] },
        }),
    );

    // --- nodes ----------------------------------------------------------------
    let nodes = &cluster.nodes;
    add(
        "NodeLaunchTemplate",
        json!({
            "Type": "AWS::EC2::LaunchTemplate",
            "Properties": {
                "LaunchTemplateData": {
                    "ImageId": {"Ref": ids::NODE_IMAGE_PARAMETER},
                    "InstanceType": nodes.instance_type.name,
                    "IamInstanceProfile": { "Arn": {"Fn::GetAtt": ["NodeInstanceProfile", "Arn"]} },
                    "SecurityGroupIds": [{"Ref": "NodeSecurityGroup"}],
                    "BlockDeviceMappings": [{
                        "DeviceName": "/dev/xvda",
                        "Ebs": {
                            "DeleteOnTermination": true,
                            "Encrypted": true,
                            "VolumeSize": nodes.disk_gb,
                            "VolumeType": "gp3",
                        },
                    }],
                    "MetadataOptions": {
                        "HttpEndpoint": "enabled",
                        "HttpTokens": "required",
                        // One hop: the node's agents reach the instance role,
                        // containers behind Docker's bridge do not.
                        "HttpPutResponseHopLimit": 1,
                    },
                    "Monitoring": { "Enabled": true },
                    "UserData": { "Fn::Base64": { "Fn::Sub": input.user_data } },
                    "TagSpecifications": [
                        { "ResourceType": "instance", "Tags": tags(config, &[("Name", &format!("{}-node", naming::stack(config)))]) },
                        { "ResourceType": "volume", "Tags": tags(config, &[]) },
                    ],
                },
                "TagSpecifications": [{ "ResourceType": "launch-template", "Tags": tags(config, &[]) }],
            },
        }),
    );
    let min_in_service = nodes.min.min(nodes.max.saturating_sub(1));
    add(
        ids::NODE_GROUP,
        json!({
            "Type": "AWS::AutoScaling::AutoScalingGroup",
            "UpdatePolicy": {
                "AutoScalingRollingUpdate": {
                    "MaxBatchSize": 1,
                    "MinInstancesInService": min_in_service,
                    "PauseTime": "PT2M",
                },
            },
            "Properties": {
                "AutoScalingGroupName": naming::node_group(config),
                "LaunchTemplate": {
                    "LaunchTemplateId": {"Ref": "NodeLaunchTemplate"},
                    "Version": {"Fn::GetAtt": ["NodeLaunchTemplate", "LatestVersionNumber"]},
                },
                "MinSize": nodes.min.to_string(),
                "MaxSize": nodes.max.to_string(),
                "DesiredCapacity": nodes.desired.to_string(),
                "VPCZoneIdentifier": subnets.iter().map(|id| json!({"Ref": id})).collect::<Vec<_>>(),
                "HealthCheckType": "EC2",
                "HealthCheckGracePeriod": 300,
                "Tags": cluster_tags_propagated(config),
            },
        }),
    );

    // --- parameters and outputs ------------------------------------------------
    let mut parameters = serde_json::Map::new();
    parameters.insert(
        ids::NODE_IMAGE_PARAMETER.to_owned(),
        json!({
            "Type": "AWS::EC2::Image::Id",
            "Description": match &nodes.image {
                model::NodeImage::Flatcar(channel) => format!("Flatcar Container Linux ({}) AMI, resolved by huxley plan", channel.as_str()),
                model::NodeImage::Ami(_) => "The AMI named in huxley.toml".to_owned(),
            },
        }),
    );
    if cluster.public_domain.is_some() {
        parameters.insert(
            ids::PUBLIC_ZONE_PARAMETER.to_owned(),
            json!({
                "Type": "AWS::Route53::HostedZone::Id",
                "Description": format!("The existing public hosted zone {}, looked up by huxley plan", cluster.public_domain.as_deref().unwrap_or_default()),
            }),
        );
    }
    let outputs = json!({
        "ClusterName": { "Description": "The Huxley cluster", "Value": cluster.name },
        "VpcId": { "Description": "The cluster's VPC", "Value": {"Ref": "Vpc"} },
        "SubnetIds": {
            "Description": "The cluster's subnets, one per availability zone",
            "Value": {"Fn::Join": [",", subnets.iter().map(|id| json!({"Ref": id})).collect::<Vec<_>>()]},
        },
        "PrivateZoneId": { "Description": "The private hosted zone", "Value": {"Ref": ids::PRIVATE_ZONE} },
        "ArtifactBucketName": { "Description": "Where units, hooks and the kick config live", "Value": {"Ref": ids::ARTIFACT_BUCKET} },
        "NodeGroupName": { "Description": "The nodes' auto-scaling group", "Value": {"Ref": ids::NODE_GROUP} },
        "KickServerAddress": {
            "Description": "The kick server's external API (TLS), which it registers at start",
            "Value": format!("{}:{}", naming::kick_name(config), model::KICK_EXTERNAL_PORT),
        },
    });

    json!({
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": format!("Huxley cluster {} (generated by huxley build; do not edit)", cluster.name),
        "Metadata": { "Huxley": { "Cluster": cluster.name, "Version": env!("CARGO_PKG_VERSION") } },
        "Parameters": parameters,
        "Resources": resources,
        "Outputs": outputs,
    })
}

/// The template as pretty JSON with a trailing newline.
pub fn to_json(template: &Value) -> String {
    let mut text = serde_json::to_string_pretty(template).expect("a template always serializes");
    text.push('\n');
    text
}

/// One `AWS::EC2::SecurityGroupIngress` rule beyond node-to-node traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngressRule {
    pub id: String,
    pub from_port: u16,
    pub to_port: u16,
    pub cidr: String,
    pub description: String,
    /// Open to the internet for a service's public names.
    pub public: bool,
}

/// The ingress rules: public host-ports from anywhere, SSH, git and the
/// kick API only from `admin-cidrs`. Contiguous public host-ports share one
/// range rule (every port in the range is a public service's, so nothing
/// more is opened). Ids are derived from what a rule allows, so adding a
/// CIDR does not rename the other rules' resources.
pub fn ingress_rules(config: &Config) -> Vec<IngressRule> {
    let mut rules = Vec::new();
    let public_ports: BTreeSet<u16> = config
        .services()
        .filter(|(_, s)| !s.public.is_empty())
        .filter_map(|(_, s)| s.host_port)
        .collect();
    for (from, to) in runs(&public_ports) {
        let (id, description) = if from == to {
            (
                format!("IngressPublicTcp{from}"),
                format!("Public services on host port {from}"),
            )
        } else {
            (
                format!("IngressPublicTcp{from}To{to}"),
                format!("Public services on host ports {from}-{to}"),
            )
        };
        rules.push(IngressRule {
            id,
            from_port: from,
            to_port: to,
            cidr: "0.0.0.0/0".to_owned(),
            description,
            public: true,
        });
    }
    for cidr in &config.cluster.admin_cidrs {
        let cidr = cidr.to_string();
        for (name, port, what) in [
            ("Ssh", model::SSH_PORT, "SSH"),
            ("Git", model::HOOK_SSH_PORT, "git push to the hook server"),
            (
                "Kick",
                model::KICK_EXTERNAL_PORT,
                "the kick server's external API",
            ),
        ] {
            rules.push(IngressRule {
                id: format!("IngressAdmin{name}{}", short_hash(&cidr)),
                from_port: port,
                to_port: port,
                cidr: cidr.clone(),
                description: format!("{what} from admin range {cidr}"),
                public: false,
            });
        }
    }
    rules
}

/// Maximal runs of consecutive ports, as (first, last).
fn runs(ports: &BTreeSet<u16>) -> Vec<(u16, u16)> {
    let mut runs: Vec<(u16, u16)> = Vec::new();
    for &port in ports {
        match runs.last_mut() {
            Some((_, last)) if last.checked_add(1) == Some(port) => *last = port,
            _ => runs.push((port, port)),
        }
    }
    runs
}

/// Subnet logical ids, one per zone, named by the zone's letter.
fn subnet_ids(config: &Config) -> Vec<String> {
    config
        .cluster
        .availability_zones
        .iter()
        .map(|zone| {
            format!(
                "Subnet{}",
                zone[config.cluster.region.len()..].to_ascii_uppercase()
            )
        })
        .collect()
}

/// Subnet ranges carved from the VPC range: the first half is split evenly
/// among the zones; the second half stays free for private subnets later.
pub fn subnet_cidrs(config: &Config) -> Vec<String> {
    let vpc = config.cluster.vpc_cidr;
    let zones = config.cluster.availability_zones.len();
    let bits = zones.next_power_of_two().trailing_zeros() as u8;
    let prefix = (vpc.prefix_len() + bits + 1).min(28);
    vpc.subnets(prefix)
        .map(|subnets| subnets.take(zones).map(|s| s.to_string()).collect())
        .unwrap_or_default()
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
fn kick_policy(config: &Config) -> Value {
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
                "Resource": {"Fn::Sub": format!("arn:${{AWS::Partition}}:s3:::{bucket}/huxley/published/*")},
            },
            {
                "Sid": "FindPublicZone",
                "Effect": "Allow",
                "Action": ["route53:ListHostedZonesByName"],
                "Resource": "*",
            },
        ],
    });
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
        .map(|n| format!("{}{n}", crate::aws::OWNER_PREFIX))
        .collect();
    names.extend(owners);
    names.into_iter().map(|n| n.to_ascii_lowercase()).collect()
}

/// Tags for a resource: the cluster tag plus `extra`, sorted by key.
fn tags(config: &Config, extra: &[(&str, &str)]) -> Value {
    let mut pairs: Vec<(&str, &str)> = vec![("huxley:cluster", &config.cluster.name)];
    pairs.extend_from_slice(extra);
    pairs.sort();
    Value::Array(
        pairs
            .into_iter()
            .map(|(k, v)| json!({"Key": k, "Value": v}))
            .collect(),
    )
}

fn cluster_tags_propagated(config: &Config) -> Value {
    json!([
        { "Key": "huxley:cluster", "Value": config.cluster.name, "PropagateAtLaunch": true },
    ])
}

/// Checks a resource deliberately fails, each with its justification: the
/// checkov skips in the form checkov reads, the cfn-lint rules in cfn-lint's
/// `ignore_checks`, and every reason under `Huxley.Justifications` so a
/// reader of the template sees why.
fn justify(checkov: &[(&str, &str)], cfn_lint: &[(&str, &str)]) -> Value {
    let mut metadata = serde_json::Map::new();
    if !checkov.is_empty() {
        metadata.insert(
            "checkov".to_owned(),
            json!({ "skip": checkov.iter().map(|(id, comment)| json!({"id": id, "comment": comment})).collect::<Vec<_>>() }),
        );
    }
    if !cfn_lint.is_empty() {
        metadata.insert(
            "cfn-lint".to_owned(),
            json!({ "config": { "ignore_checks": cfn_lint.iter().map(|(id, _)| *id).collect::<Vec<_>>() } }),
        );
    }
    let reasons: serde_json::Map<String, Value> = checkov
        .iter()
        .chain(cfn_lint)
        .map(|(id, why)| ((*id).to_owned(), json!(why)))
        .collect();
    metadata.insert("Huxley".to_owned(), json!({ "Justifications": reasons }));
    Value::Object(metadata)
}

/// The first 8 hex digits of SHA-256: a stable, compact id suffix.
fn short_hash(text: &str) -> String {
    crate::digest::sha256(text)[..8].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the agents on a node call, by IAM action: the kick server and
    /// the node agent both run with the node role.
    const ON_THE_NODES: &[&str] = &[
        "cloudformation:DescribeStacks",
        "cloudformation:ListStackResources",
        "dynamodb:GetItem",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "ec2:CreateRoute",
        "ec2:DeleteRoute",
        "ec2:DescribeInstances",
        "ec2:DescribeRouteTables",
        "ec2:ModifyInstanceAttribute",
        "ec2:ReplaceRoute",
        "route53:ChangeResourceRecordSets",
        "route53:ListHostedZonesByName",
        "route53:ListResourceRecordSets",
        "s3:GetObject",
        "s3:PutObject",
        "ssm:GetParameters",
    ];

    /// What only the CLI calls, with the user's own rights.
    const CLI_ONLY: &[&str] = &[
        "cloudformation:ContinueUpdateRollback",
        "cloudformation:CreateChangeSet",
        "cloudformation:DeleteChangeSet",
        "cloudformation:DeleteStack",
        "cloudformation:DescribeChangeSet",
        "cloudformation:DescribeStackEvents",
        "cloudformation:ExecuteChangeSet",
        "cloudformation:GetTemplate",
        "cloudformation:ListStacks",
        "dynamodb:CreateTable",
        "ec2:DescribeImages",
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
    fn in_the_users_zone_the_nodes_may_change_only_the_clusters_names() {
        let c = config(
            &std::fs::read_to_string(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/examples/blog/huxley.toml"
            ))
            .expect("example"),
        );
        let policy = kick_policy(&c);
        let statements = policy["Statement"].as_array().expect("statements");
        let documents = public_name_policies(&c);
        assert_eq!(documents.len(), 1);
        let public = &documents[0]["Statement"][0];
        let names = &public["Condition"]["ForAllValues:StringEquals"]["route53:ChangeResourceRecordSetsNormalizedRecordNames"];
        assert_eq!(
            names,
            &json!([
                "_huxley-owner.acme.example.com",
                "_huxley-owner.kick-acme.acme.example.com",
                "_huxley-owner.www.acme.example.com",
                "acme.example.com",
                "kick-acme.acme.example.com",
                "www.acme.example.com",
            ])
        );
        // Regression: the public zone was in a statement with no condition.
        for s in statements.iter().filter(|s| s["Sid"] != "PublicNames") {
            let actions = s["Action"].as_array().expect("actions");
            let writes = actions
                .iter()
                .any(|a| a == "route53:ChangeResourceRecordSets");
            assert!(
                !(writes
                    && s["Resource"]
                        .to_string()
                        .contains(ids::PUBLIC_ZONE_PARAMETER)),
                "{s}"
            );
        }
    }

    #[test]
    fn every_aws_call_is_classified_and_the_node_role_allows_the_agents_calls() {
        let code = actions_in_the_code();
        assert!(code.len() > 20, "{code:?}");
        for action in &code {
            assert!(
                ON_THE_NODES.contains(&action.as_str()) || CLI_ONLY.contains(&action.as_str()),
                "{action} is called but not classified: add it to ON_THE_NODES (and the node role) or CLI_ONLY"
            );
        }
        // The node role's statements, inline and managed, in the template.
        let c = config(
            &std::fs::read_to_string(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/examples/blog/huxley.toml"
            ))
            .expect("example"),
        );
        let template = super::template(&TemplateInput {
            config: &c,
            user_data: "",
        });
        let resources = template["Resources"].as_object().expect("resources");
        let mut statements: Vec<&Value> = Vec::new();
        for policy in resources["NodeRole"]["Properties"]["Policies"]
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
        for action in ON_THE_NODES {
            assert!(
                !allows(action).is_empty(),
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
        assert!(denied, "the node role may read the admin token");
        // Regression: kick publishes under huxley/published/, the role
        // allowed published/ only.
        for key in [
            crate::kick::publish::DESCRIPTION_KEY,
            crate::kick::tls::FINGERPRINT_KEY,
        ] {
            let covered = allows("s3:PutObject").iter().any(|s| {
                s["Resource"]["Fn::Sub"]
                    .as_str()
                    .and_then(|arn| arn.split_once(":::"))
                    .and_then(|(_, object)| object.split_once('/'))
                    .is_some_and(|(_, pattern)| key.starts_with(pattern.trim_end_matches('*')))
            });
            assert!(covered, "the node role may not write {key}");
        }
    }

    fn config(source: &str) -> Config {
        crate::config::check(source).config.expect("valid")
    }

    #[test]
    fn subnets_take_the_first_half_of_the_vpc() {
        let c = config(&crate::synth::config(1, 1));
        // 10.40.0.0/16 across 3 zones: /19s.
        assert_eq!(
            subnet_cidrs(&c),
            ["10.40.0.0/19", "10.40.32.0/19", "10.40.64.0/19"]
        );
    }

    #[test]
    fn contiguous_public_ports_share_a_rule() {
        let ports: BTreeSet<u16> = [80, 443, 444, 445, 8080, 65535].into();
        assert_eq!(
            runs(&ports),
            [(80, 80), (443, 445), (8080, 8080), (65535, 65535)]
        );
        let c = config(&crate::synth::config(50, 20));
        let public: Vec<_> = ingress_rules(&c).into_iter().filter(|r| r.public).collect();
        assert_eq!(public.len(), 1, "{public:?}");
        assert_eq!((public[0].from_port, public[0].to_port), (10001, 10200));
    }

    #[test]
    fn secret_policies_split_under_the_iam_limit() {
        let c = config(
            &crate::synth::Synth {
                apps: 20,
                services_per_app: 20,
                host_port_step: 1,
                secret_per_service: true,
            }
            .render(),
        );
        let chunks = secret_policy_chunks(&c);
        assert!(chunks.len() > 1, "400 secrets need more than one policy");
        assert_eq!(chunks.iter().map(Vec::len).sum::<usize>(), 400);
        for chunk in &chunks {
            // Resolved as IAM sees it, in the worst case.
            let size: usize = chunk
                .iter()
                .map(|a| {
                    a.replace("${AWS::Partition}", "aws-us-gov")
                        .replace("${AWS::Region}", "ap-southeast-4")
                        .replace("${AWS::AccountId}", "123456789012")
                        .len()
                        + 3
                })
                .sum();
            assert!(size + 160 <= MANAGED_POLICY_LIMIT, "{size}");
        }
    }

    #[test]
    fn admin_rule_ids_do_not_depend_on_order() {
        let c = config(&crate::synth::config(1, 1));
        let ids: Vec<_> = ingress_rules(&c).into_iter().map(|r| r.id).collect();
        assert!(ids.contains(&"IngressPublicTcp10001".to_owned()), "{ids:?}");
        assert!(ids.iter().any(|id| id.starts_with("IngressAdminSsh")));
        // The same CIDRs in another order, and one more: the existing rules
        // keep their ids (a plan would otherwise replace them).
        let source = crate::synth::config(1, 1);
        let with = |cidrs: &str| {
            let text = source.replace(
                "admin-cidrs = [\"203.0.113.0/24\"]",
                &format!("admin-cidrs = [{cidrs}]"),
            );
            assert_ne!(text, source, "the synthetic config names its admin CIDR");
            let ids: BTreeSet<String> = ingress_rules(&config(&text))
                .into_iter()
                .filter(|r| !r.public)
                .map(|r| r.id)
                .collect();
            ids
        };
        let two = with("\"203.0.113.0/24\", \"198.51.100.0/24\"");
        assert_eq!(two, with("\"198.51.100.0/24\", \"203.0.113.0/24\""));
        let three = with("\"192.0.2.0/24\", \"198.51.100.0/24\", \"203.0.113.0/24\"");
        assert!(two.is_subset(&three), "{two:?} {three:?}");
        assert_eq!(three.len(), 9, "three rules per admin CIDR: {three:?}");
    }
}
