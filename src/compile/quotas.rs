//! AWS quotas a config can reach, checked before anything is written.

use serde_json::Value;

use super::ingress::{IngressRule, ingress_rules};
use crate::compile::iam::public_name_policies;
use crate::compile::iam::secret_policy_chunks;
use crate::model::{Config, naming};

/// CloudFormation: resources in one stack.
pub const MAX_RESOURCES: usize = 500;
/// CloudFormation: a template body passed inline.
pub const MAX_INLINE_TEMPLATE: usize = 51_200;
/// CloudFormation: a template passed through S3.
pub const MAX_TEMPLATE: usize = 1_000_000;
/// EC2: user data, before base64.
pub const MAX_USER_DATA: usize = 16 * 1024;
/// EC2: inbound rules per security group, for each address family.
pub const MAX_INGRESS_RULES: usize = 60;
/// IAM: managed policies attached to one role (the default quota).
pub const MAX_MANAGED_POLICIES: usize = 10;
/// VPC: routes per route table (the default quota).
pub const MAX_ROUTES: usize = 50;
/// Routes of the nodes' route table besides the containers': the VPC's
/// local route and the default route to the internet gateway.
pub const FIXED_ROUTES: usize = 2;

/// ELB: target groups per Application Load Balancer, and rules per
/// listener (both 100 by default): one each per service behind it.
pub const MAX_LOAD_BALANCED: usize = 100;
/// ACM: names on one certificate (the default quota).
pub const MAX_CERTIFICATE_NAMES: usize = 10;

/// A quota the config would exceed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaError {
    /// The quota's name as AWS documents it.
    pub quota: &'static str,
    pub message: String,
    pub help: String,
}

/// Checks every quota; returns all that are exceeded.
pub fn check(
    config: &Config,
    template: &Value,
    template_bytes: usize,
    user_data: &str,
) -> Vec<QuotaError> {
    let mut errors = Vec::new();
    let resources = template["Resources"].as_object().map_or(0, |r| r.len());
    if resources > MAX_RESOURCES {
        errors.push(QuotaError {
            quota: "CloudFormation: resources per stack",
            message: format!("the stack would have {resources} resources; CloudFormation allows {MAX_RESOURCES}"),
            help: "fewer public host-ports, admin CIDRs or secret parameters; the stack does not grow with services otherwise".into(),
        });
    }
    if template_bytes > MAX_TEMPLATE {
        errors.push(QuotaError {
            quota: "CloudFormation: template body size in S3",
            message: format!("the template is {template_bytes} bytes; CloudFormation accepts at most {MAX_TEMPLATE} through S3"),
            help: "fewer public host-ports, admin CIDRs or secret parameters".into(),
        });
    }
    // The bucket name replaces `${ArtifactBucket}` on the way to the node.
    let bucket = naming::bucket_pattern(config).len() + "123456789012ap-southeast-4".len();
    let substituted = user_data.len() + user_data.matches("${ArtifactBucket}").count() * bucket;
    if substituted > MAX_USER_DATA {
        errors.push(QuotaError {
            quota: "EC2: user data size",
            message: format!("the Ignition config is {substituted} bytes; EC2 user data holds at most {MAX_USER_DATA}"),
            help: "fewer or shorter ssh-keys".into(),
        });
    }
    let rules = ingress_rules(config);
    let family = |v6: bool| {
        rules
            .iter()
            .filter(|r: &&IngressRule| r.cidr.contains(':') == v6)
            .count()
    };
    // Node-to-node and container traffic are two more IPv4 rules.
    for (count, name) in [(family(false) + 2, "IPv4"), (family(true), "IPv6")] {
        if count > MAX_INGRESS_RULES {
            errors.push(QuotaError {
                quota: "EC2: inbound rules per security group",
                message: format!("the node security group would have {count} {name} inbound rules; EC2 allows {MAX_INGRESS_RULES}"),
                help: "each run of consecutive public host-ports is one rule and each admin CIDR three (SSH, git, kick): number public host-ports consecutively, or merge admin CIDRs".into(),
            });
        }
    }
    let policies = secret_policy_chunks(config).len() + public_name_policies(config).len();
    if policies > MAX_MANAGED_POLICIES {
        errors.push(QuotaError {
            quota: "IAM: managed policies per role",
            message: format!("the services' secrets and public names need {policies} managed policies on the control role; IAM allows {MAX_MANAGED_POLICIES} by default"),
            help: "use fewer, shared SSM parameters or fewer public names, or raise the quota to 20 in Service Quotas".into(),
        });
    }
    errors.extend(load_balancer(config));
    // Every node's container subnet is one route.
    let routes = FIXED_ROUTES + config.cluster.nodes.max as usize;
    if routes > MAX_ROUTES {
        errors.push(QuotaError {
            quota: "VPC: routes per route table",
            message: format!(
                "nodes.max = {} needs {routes} routes (one per node's container subnet, plus {FIXED_ROUTES}); a route table holds {MAX_ROUTES} by default, so at most {} nodes",
                config.cluster.nodes.max,
                MAX_ROUTES - FIXED_ROUTES
            ),
            help: format!(
                "lower nodes.max to {} or less, or raise the quota (up to 1,000) in Service Quotas",
                MAX_ROUTES - FIXED_ROUTES
            ),
        });
    }
    errors
}

/// The load balancer's quotas: its target groups and rules, and the names
/// on the certificate Huxley requests.
fn load_balancer(config: &Config) -> Vec<QuotaError> {
    let mut errors = Vec::new();
    let services = config.load_balanced().count();
    if services > MAX_LOAD_BALANCED {
        errors.push(QuotaError {
            quota: "ELB: target groups per load balancer, rules per listener",
            message: format!("{services} public HTTP services are behind the load balancer, one target group and one rule each; ELB allows {MAX_LOAD_BALANCED} by default"),
            help: "serve some with `protocol = \"tcp\"` at the nodes, or raise both quotas in Service Quotas".into(),
        });
    }
    let names = config.load_balanced_names().len();
    let requested = matches!(
        config.cluster.ingress,
        crate::model::Ingress::LoadBalancer {
            certificate_arn: None
        }
    );
    if requested && names > MAX_CERTIFICATE_NAMES {
        errors.push(QuotaError {
            quota: "ACM: domain names per certificate",
            message: format!("the load balancer's certificate would name {names} public names; ACM allows {MAX_CERTIFICATE_NAMES} by default"),
            help: "raise the quota in Service Quotas and request the certificate yourself (`certificate-arn`), or use fewer public names".into(),
        });
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The synthetic config's public services behind the load balancer.
    fn balanced(apps: usize) -> String {
        crate::testing::synth::config(apps, 1)
            .replace("ingress = \"dns\"\n", "")
            .lines()
            .filter(|l| !l.starts_with("host-port = "))
            .map(|l| format!("{l}\n"))
            .collect()
    }

    #[test]
    fn the_load_balancer_quotas_are_checked() {
        let source = balanced(101);
        let config = crate::config::check(&source).config.expect("valid");
        assert_eq!(config.load_balanced().count(), 101);
        let quotas: Vec<&str> = load_balancer(&config).iter().map(|e| e.quota).collect();
        assert_eq!(
            quotas,
            [
                "ELB: target groups per load balancer, rules per listener",
                "ACM: domain names per certificate"
            ]
        );
        // Ten names, and a certificate of one's own: within bounds.
        let source = balanced(10);
        let config = crate::config::check(&source).config.expect("valid");
        assert!(load_balancer(&config).is_empty());
    }
}
