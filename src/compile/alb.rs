//! The load balancer in front of public HTTP services: an internet-facing
//! Application Load Balancer across the cluster's subnets, HTTPS on 443
//! with the cluster's certificate, 80 redirecting to it, and per service a
//! target group (its replicas' container addresses, registered by the
//! kick server) and a listener rule matching its public names.
//!
//! The public names themselves are alias records the kick server writes
//! (it owns them, as in DNS mode); the stack hands it the load balancer
//! and each target group through its outputs.

use std::time::Duration;

use serde_json::{Value, json};

use super::cloudformation::{Resources, add, justify, short_hash, tags};
use crate::model::{self, Config, HealthCheck, Service};
use crate::spec::names::ids;

/// ELB's bounds on a target group's health check.
const CHECK_INTERVAL: (u64, u64) = (5, 300);
const CHECK_TIMEOUT: (u64, u64) = (2, 120);
const CHECK_THRESHOLD: (u32, u32) = (2, 10);
/// ELB's longest deregistration delay.
const MAX_DEREGISTRATION_DELAY: u64 = 3600;
/// Listener rule priorities ELB accepts: 1 to 50,000.
const MAX_PRIORITY: u32 = 50_000;

/// The TLS policy of the HTTPS listener: TLS 1.3, and TLS 1.2 with
/// forward-secret AES-GCM ciphers only (AWS's restricted policy).
pub const TLS_POLICY: &str = "ELBSecurityPolicy-TLS13-1-2-Res-2021-06";

/// Where in the artifact bucket the load balancer writes its access logs.
pub const ACCESS_LOG_PREFIX: &str = "access-logs";

/// Whether the stack has a load balancer that writes access logs.
pub fn writes_access_logs(config: &Config) -> bool {
    config.cluster.access_logs && config.load_balanced().next().is_some()
}

/// The artifact bucket policy's statement that lets Elastic Load
/// Balancing write the access logs: the region's log-delivery account
/// where it has one, else the log-delivery service principal.
pub fn access_log_statement(config: &Config, bucket: &str) -> Value {
    let principal = match model::aws::elb_log_account(&config.cluster.region) {
        Some(account) => {
            json!({ "AWS": {"Fn::Sub": format!("arn:${{AWS::Partition}}:iam::{account}:root")} })
        }
        None => json!({ "Service": model::aws::ELB_LOG_DELIVERY }),
    };
    json!({
        "Sid": "LoadBalancerAccessLogs",
        "Effect": "Allow",
        "Principal": principal,
        "Action": "s3:PutObject",
        "Resource": {"Fn::Sub": format!(
            "arn:${{AWS::Partition}}:s3:::{bucket}/{ACCESS_LOG_PREFIX}/AWSLogs/${{AWS::AccountId}}/*"
        )},
    })
}

/// The logical id of a service's target group; the stack output that
/// carries its ARN is this id followed by `Arn`.
pub fn target_group_id(app: &str, service: &str) -> String {
    let camel = |name: &str| -> String {
        name.split('-')
            .map(|part| {
                let mut chars = part.chars();
                chars.next().map_or_else(String::new, |c| {
                    c.to_ascii_uppercase().to_string() + chars.as_str()
                })
            })
            .collect()
    };
    format!(
        "TargetGroup{}{}{}",
        camel(app),
        camel(service),
        short_hash(&format!("{app}/{service}"))
    )
}

/// The stack output holding a service's target group ARN.
pub fn target_group_output(app: &str, service: &str) -> String {
    format!("{}Arn", target_group_id(app, service))
}

/// Adds the load balancer and everything around it when some service is
/// behind it; its outputs.
pub fn load_balancer(
    config: &Config,
    r: &mut Resources,
    subnets: &[String],
) -> Vec<(String, Value)> {
    let services: Vec<(&model::App, &Service)> = config.load_balanced().collect();
    if services.is_empty() {
        return Vec::new();
    }
    security_groups(config, r);
    let mut skips = vec![(
        "CKV_AWS_150",
        "`huxley destroy` deletes the load balancer with the cluster; the stack is the unit users protect.",
    )];
    let mut attributes =
        vec![json!({"Key": "routing.http.drop_invalid_header_fields.enabled", "Value": "true"})];
    let mut balancer = json!({
        "Type": "AWS::ElasticLoadBalancingV2::LoadBalancer",
        "Properties": {
            "Type": "application",
            "Scheme": "internet-facing",
            "IpAddressType": "ipv4",
            "Subnets": subnets.iter().map(|id| json!({"Ref": id})).collect::<Vec<_>>(),
            "SecurityGroups": [{"Ref": ids::LOAD_BALANCER_SECURITY_GROUP}],
            "Tags": tags(config, &[]),
        },
    });
    if writes_access_logs(config) {
        attributes.extend([
            json!({"Key": "access_logs.s3.enabled", "Value": "true"}),
            json!({"Key": "access_logs.s3.bucket", "Value": {"Ref": ids::ARTIFACT_BUCKET}}),
            json!({"Key": "access_logs.s3.prefix", "Value": ACCESS_LOG_PREFIX}),
        ]);
        // ELB writes a test object when logging is turned on: the bucket
        // policy must let it first.
        balancer["DependsOn"] = json!(ids::ARTIFACT_BUCKET_POLICY);
    } else {
        // Said, not left out: CloudFormation leaves an attribute a template
        // stops naming as it was, so turning the logs off must say so.
        attributes.push(json!({"Key": "access_logs.s3.enabled", "Value": "false"}));
        skips.insert(0, (
            "CKV_AWS_91",
            "Access logs are off in this config; `[cluster.logs] access-logs = true` writes them to the artifact bucket.",
        ));
    }
    balancer["Metadata"] = justify(&skips, &[]);
    balancer["Properties"]["LoadBalancerAttributes"] = Value::Array(attributes);
    add(r, ids::LOAD_BALANCER, balancer);
    listeners(r);
    let priorities = priorities(&services);
    let mut outputs = vec![
        (
            "LoadBalancerArn".to_owned(),
            json!({ "Description": "The load balancer in front of the public HTTP services", "Value": {"Ref": ids::LOAD_BALANCER} }),
        ),
        (
            "LoadBalancerDnsName".to_owned(),
            json!({ "Description": "The load balancer's DNS name, which the public names alias", "Value": {"Fn::GetAtt": [ids::LOAD_BALANCER, "DNSName"]} }),
        ),
    ];
    for ((app, service), priority) in services.iter().zip(priorities) {
        let id = target_group_id(&app.name, &service.name);
        add(r, &id, target_group(config, app, service));
        add(
            r,
            &format!("Rule{}", &id["TargetGroup".len()..]),
            json!({
                "Type": "AWS::ElasticLoadBalancingV2::ListenerRule",
                "Properties": {
                    "ListenerArn": {"Ref": "ListenerHttps"},
                    "Priority": priority,
                    "Conditions": [{
                        "Field": "host-header",
                        "HostHeaderConfig": { "Values": config.public_names(service) },
                    }],
                    "Actions": [{ "Type": "forward", "TargetGroupArn": {"Ref": id} }],
                },
            }),
        );
        outputs.push((
            target_group_output(&app.name, &service.name),
            json!({
                "Description": format!("The target group of {}.{}, whose targets the kick server registers", app.name, service.name),
                "Value": {"Ref": id},
            }),
        ));
    }
    outputs
}

/// HTTPS with the certificate (a 404 for names no rule matches), and HTTP
/// redirecting to it.
fn listeners(r: &mut Resources) {
    add(
        r,
        "ListenerHttps",
        json!({
            "Type": "AWS::ElasticLoadBalancingV2::Listener",
            "Properties": {
                "LoadBalancerArn": {"Ref": ids::LOAD_BALANCER},
                "Port": 443,
                "Protocol": "HTTPS",
                "SslPolicy": TLS_POLICY,
                "Certificates": [{"CertificateArn": {"Ref": ids::CERTIFICATE_PARAMETER}}],
                "DefaultActions": [{
                    "Type": "fixed-response",
                    "FixedResponseConfig": {
                        "StatusCode": "404",
                        "ContentType": "text/plain",
                        "MessageBody": "no service has this name",
                    },
                }],
            },
        }),
    );
    add(
        r,
        "ListenerHttp",
        json!({
            "Type": "AWS::ElasticLoadBalancingV2::Listener",
            "Metadata": justify(&[(
                "CKV_AWS_2",
                "Port 80 only redirects to HTTPS (301); no request is forwarded over plain HTTP.",
            ), (
                "CKV_AWS_103",
                "Port 80 only redirects to HTTPS, where the listener's policy allows TLS 1.2 and 1.3.",
            )], &[]),
            "Properties": {
                "LoadBalancerArn": {"Ref": ids::LOAD_BALANCER},
                "Port": 80,
                "Protocol": "HTTP",
                "DefaultActions": [{
                    "Type": "redirect",
                    "RedirectConfig": {
                        "Protocol": "HTTPS",
                        "Port": "443",
                        "Host": "#{host}",
                        "Path": "/#{path}",
                        "Query": "#{query}",
                        "StatusCode": "HTTP_301",
                    },
                }],
            },
        }),
    );
}

/// The load balancer's group (HTTP and HTTPS from anywhere; out only to
/// the containers) and the nodes' rule letting it in.
fn security_groups(config: &Config, r: &mut Resources) {
    add(
        r,
        ids::LOAD_BALANCER_SECURITY_GROUP,
        json!({
            "Type": "AWS::EC2::SecurityGroup",
            "Properties": {
                "GroupDescription": format!("Huxley cluster {} load balancer", config.cluster.name),
                "VpcId": {"Ref": "Vpc"},
                // Fixed, so it never changes inline (see EMULATOR.md).
                "SecurityGroupEgress": [{
                    "CidrIp": model::CONTAINER_RANGE,
                    "IpProtocol": "tcp",
                    "FromPort": 1,
                    "ToPort": 65535,
                    "Description": "Requests and health checks to the replicas' container addresses",
                }],
                "Tags": tags(config, &[]),
            },
        }),
    );
    // IPv4 only, as the load balancer is.
    for (port, scheme) in [(80, "Http"), (443, "Https")] {
        let mut resource = json!({
            "Type": "AWS::EC2::SecurityGroupIngress",
            "Properties": {
                "GroupId": {"Ref": ids::LOAD_BALANCER_SECURITY_GROUP},
                "IpProtocol": "tcp",
                "FromPort": port,
                "ToPort": port,
                "CidrIp": "0.0.0.0/0",
                "Description": format!("{} from the internet", scheme.to_uppercase()),
            },
        });
        if port == 80 {
            resource["Metadata"] = justify(
                &[(
                    "CKV_AWS_260",
                    "Port 80 on the load balancer only redirects to HTTPS.",
                )],
                &[],
            );
        }
        add(r, &format!("LoadBalancerIngress{scheme}"), resource);
    }
    add(
        r,
        "IngressLoadBalancer",
        json!({
            "Type": "AWS::EC2::SecurityGroupIngress",
            "Properties": {
                "GroupId": {"Ref": "NodeSecurityGroup"},
                "SourceSecurityGroupId": {"Ref": ids::LOAD_BALANCER_SECURITY_GROUP},
                "IpProtocol": "tcp",
                "FromPort": 1,
                "ToPort": 65535,
                "Description": "The load balancer, to the replicas registered as its targets",
            },
        }),
    );
}

/// A service's target group: its replicas' container addresses on its
/// port, checked as the service's `health` says within ELB's bounds.
fn target_group(config: &Config, app: &model::App, service: &Service) -> Value {
    let health = &service.health;
    let (path, matcher) = match &health.check {
        HealthCheck::Http { path } => (path.clone(), "200-299"),
        // Any HTTP answer means the replica is up: the service's own
        // check is a TCP connect.
        HealthCheck::Tcp { .. } | HealthCheck::Running => ("/".to_owned(), "200-499"),
    };
    let interval = clamp_secs(health.interval, CHECK_INTERVAL);
    let timeout = clamp_secs(health.timeout, CHECK_TIMEOUT).min(interval - 1);
    let threshold = |n: u32| n.clamp(CHECK_THRESHOLD.0, CHECK_THRESHOLD.1);
    let drain = service.deploy.drain.as_secs().min(MAX_DEREGISTRATION_DELAY);
    json!({
        "Type": "AWS::ElasticLoadBalancingV2::TargetGroup",
        "Properties": {
            "TargetType": "ip",
            "Protocol": "HTTP",
            "ProtocolVersion": "HTTP1",
            "Port": service.port.unwrap_or(80),
            "VpcId": {"Ref": "Vpc"},
            "HealthCheckEnabled": true,
            "HealthCheckProtocol": "HTTP",
            "HealthCheckPort": "traffic-port",
            "HealthCheckPath": path,
            "HealthCheckIntervalSeconds": interval,
            "HealthCheckTimeoutSeconds": timeout,
            "HealthyThresholdCount": threshold(health.healthy_threshold),
            "UnhealthyThresholdCount": threshold(health.unhealthy_threshold),
            "Matcher": {"HttpCode": matcher},
            "TargetGroupAttributes": [
                {"Key": "deregistration_delay.timeout_seconds", "Value": drain.to_string()},
            ],
            "Tags": tags(config, &[("huxley:app", &app.name), ("huxley:service", &service.name)]),
        },
    })
}

/// Whole seconds, within ELB's bounds.
fn clamp_secs(d: Duration, (low, high): (u64, u64)) -> u64 {
    d.as_secs().clamp(low, high)
}

/// Each service's listener rule priority: from a hash of its name, so
/// adding or removing a service leaves the others' rules alone; a clash
/// takes the next free one, in name order.
fn priorities(services: &[(&model::App, &Service)]) -> Vec<u32> {
    let mut taken = std::collections::BTreeSet::new();
    services
        .iter()
        .map(|(app, service)| {
            let hash = short_hash(&format!("{}/{}", app.name, service.name));
            let mut priority = u32::from_str_radix(&hash, 16).unwrap_or(0) % MAX_PRIORITY + 1;
            while !taken.insert(priority) {
                priority = priority % MAX_PRIORITY + 1;
            }
            priority
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(source: &str) -> Config {
        crate::config::check(source).config.expect("valid")
    }

    fn blog() -> Config {
        config(
            &std::fs::read_to_string(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/examples/blog/huxley.toml"
            ))
            .expect("example"),
        )
    }

    #[test]
    fn a_public_http_service_gets_a_target_group_checked_as_its_health_says() {
        let c = blog();
        let mut r = Resources::new();
        let outputs = load_balancer(&c, &mut r, &["SubnetA".to_owned()]);
        let id = target_group_id("blog", "web");
        let group = &r[&id]["Properties"];
        assert_eq!(group["TargetType"], "ip");
        assert_eq!(group["Port"], 8080);
        assert_eq!(group["HealthCheckPath"], "/healthz");
        assert_eq!(group["HealthCheckIntervalSeconds"], 10);
        assert_eq!(group["HealthCheckTimeoutSeconds"], 2);
        assert_eq!(group["HealthyThresholdCount"], 2);
        assert_eq!(group["UnhealthyThresholdCount"], 3);
        assert_eq!(
            group["TargetGroupAttributes"][0],
            json!({"Key": "deregistration_delay.timeout_seconds", "Value": "30"})
        );
        let rule = r
            .iter()
            .find(|(k, _)| k.starts_with("Rule"))
            .map(|(_, v)| v)
            .expect("a rule");
        assert_eq!(
            rule["Properties"]["Conditions"][0]["HostHeaderConfig"]["Values"],
            json!(["www.acme.example.com", "acme.example.com"])
        );
        let keys: Vec<&str> = outputs.iter().map(|(k, _)| k.as_str()).collect();
        assert!(
            keys.contains(&target_group_output("blog", "web").as_str()),
            "{keys:?}"
        );
        // Only the public service is behind it.
        assert_eq!(
            r.values()
                .filter(|v| v["Type"] == "AWS::ElasticLoadBalancingV2::TargetGroup")
                .count(),
            1
        );
    }

    #[test]
    fn checks_outside_elbs_bounds_are_brought_inside() {
        let source = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/blog/huxley.toml"
        ))
        .expect("example")
        .replace(
            "health = { http = \"/healthz\", interval = \"10s\", timeout = \"2s\", healthy = 2, unhealthy = 3 }",
            "health = { http = \"/healthz\", interval = \"1s\", timeout = \"500ms\", healthy = 1, unhealthy = 1 }",
        );
        let c = config(&source);
        let mut r = Resources::new();
        load_balancer(&c, &mut r, &["SubnetA".to_owned()]);
        let group = &r[&target_group_id("blog", "web")]["Properties"];
        assert_eq!(group["HealthCheckIntervalSeconds"], 5);
        assert_eq!(group["HealthCheckTimeoutSeconds"], 2);
        assert_eq!(group["HealthyThresholdCount"], 2);
        assert_eq!(group["UnhealthyThresholdCount"], 2);
    }

    /// The blog with access logs on, in `region`.
    fn blog_logging_in(region: &str) -> Config {
        let source = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/blog/huxley.toml"
        ))
        .expect("example")
        .replace("us-west-2", region)
        .replace(
            "[cluster.nodes]\n",
            "[cluster.logs]\naccess-logs = true\n\n[cluster.nodes]\n",
        );
        config(&source)
    }

    #[test]
    fn access_logs_go_to_the_artifact_bucket_only_when_asked() {
        let mut r = Resources::new();
        load_balancer(&blog(), &mut r, &["SubnetA".to_owned()]);
        let balancer = &r[ids::LOAD_BALANCER];
        let keys: Vec<&str> = balancer["Properties"]["LoadBalancerAttributes"]
            .as_array()
            .expect("attributes")
            .iter()
            .filter_map(|a| a["Key"].as_str())
            .collect();
        assert!(
            balancer["Properties"]["LoadBalancerAttributes"]
                .as_array()
                .expect("attributes")
                .contains(&json!({"Key": "access_logs.s3.enabled", "Value": "false"})),
            "turned off in so many words: {keys:?}"
        );
        assert!(!keys.contains(&"access_logs.s3.bucket"), "{keys:?}");
        assert!(balancer["Metadata"]["Huxley"]["Justifications"]["CKV_AWS_91"].is_string());
        assert!(balancer.get("DependsOn").is_none());

        let c = blog_logging_in("us-west-2");
        assert!(writes_access_logs(&c));
        let mut r = Resources::new();
        load_balancer(&c, &mut r, &["SubnetA".to_owned()]);
        let balancer = &r[ids::LOAD_BALANCER];
        let attributes = &balancer["Properties"]["LoadBalancerAttributes"];
        for expected in [
            json!({"Key": "access_logs.s3.enabled", "Value": "true"}),
            json!({"Key": "access_logs.s3.bucket", "Value": {"Ref": ids::ARTIFACT_BUCKET}}),
            json!({"Key": "access_logs.s3.prefix", "Value": "access-logs"}),
        ] {
            assert!(
                attributes
                    .as_array()
                    .expect("attributes")
                    .contains(&expected),
                "{expected} in {attributes}"
            );
        }
        assert!(balancer["Metadata"]["Huxley"]["Justifications"]["CKV_AWS_91"].is_null());
        assert_eq!(balancer["DependsOn"], ids::ARTIFACT_BUCKET_POLICY);
    }

    #[test]
    fn access_logs_are_written_by_the_regions_documented_writer() {
        let older = access_log_statement(&blog_logging_in("us-west-2"), "b");
        assert_eq!(
            older["Principal"],
            json!({"AWS": {"Fn::Sub": "arn:${AWS::Partition}:iam::797873946194:root"}})
        );
        assert_eq!(older["Action"], "s3:PutObject");
        assert_eq!(
            older["Resource"],
            json!({"Fn::Sub": "arn:${AWS::Partition}:s3:::b/access-logs/AWSLogs/${AWS::AccountId}/*"})
        );
        let newer = access_log_statement(&blog_logging_in("me-central-1"), "b");
        assert_eq!(
            newer["Principal"],
            json!({"Service": "logdelivery.elasticloadbalancing.amazonaws.com"})
        );
    }

    #[test]
    fn dns_ingress_has_no_load_balancer() {
        let source = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/blog/huxley.toml"
        ))
        .expect("example")
        .replace("[cluster]\n", "[cluster]\ningress = \"dns\"\n")
        .replace(
            "public = [\"www\", \"@\"]",
            "public = [\"www\", \"@\"]\nhost-port = 80",
        );
        let c = config(&source);
        let mut r = Resources::new();
        assert!(load_balancer(&c, &mut r, &["SubnetA".to_owned()]).is_empty());
        assert!(r.is_empty());
    }

    #[test]
    fn rule_priorities_do_not_move_when_services_come_and_go() {
        let c = config(&crate::testing::synth::config(3, 4));
        let services: Vec<_> = c.services().collect();
        let all = priorities(&services);
        let fewer = priorities(&services[1..]);
        assert_eq!(&all[1..], &fewer[..]);
        let unique: std::collections::BTreeSet<_> = all.iter().collect();
        assert_eq!(unique.len(), all.len());
        assert!(all.iter().all(|p| (1..=MAX_PRIORITY).contains(p)));
    }
}
