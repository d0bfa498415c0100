//! Elastic Load Balancing: the load balancer's DNS name, and the targets
//! of the public services' target groups, which a leading kick server
//! registers (its writes fenced like all others).

use aws_sdk_elasticloadbalancingv2::error::ProvideErrorMetadata as _;
use aws_sdk_elasticloadbalancingv2::types::{LoadBalancerAttribute, TargetDescription};

use super::{Alias, Aws, AwsError};

/// A registered target and what the load balancer thinks of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The replica's address.
    pub address: String,
    pub port: u16,
    /// `initial`, `healthy`, `unhealthy`, `draining`, `unused`,
    /// `unavailable`.
    pub state: String,
    /// ELB's reason, such as `Target.ResponseCodeMismatch`, when not
    /// healthy.
    pub reason: Option<String>,
}

impl Aws {
    /// Where the load balancer `arn` answers: the alias target of the
    /// public names.
    pub async fn load_balancer_alias(&self, arn: &str) -> Result<Alias, AwsError> {
        self.count();
        let output = self
            .elb
            .describe_load_balancers()
            .load_balancer_arns(arn)
            .send()
            .await
            .map_err(|e| self.err("elasticloadbalancing:DescribeLoadBalancers", e))?;
        output
            .load_balancers()
            .first()
            .and_then(|lb| {
                Some(Alias {
                    zone_id: lb.canonical_hosted_zone_id()?.to_owned(),
                    dns_name: lb.dns_name()?.trim_end_matches('.').to_owned(),
                })
            })
            .ok_or_else(|| AwsError::Other {
                action: "elasticloadbalancing:DescribeLoadBalancers".into(),
                detail: format!("no load balancer {arn}"),
            })
    }

    /// The targets registered in a target group, with their health.
    pub async fn targets(&self, group: &str) -> Result<Vec<Target>, AwsError> {
        self.count();
        let output = self
            .elb
            .describe_target_health()
            .target_group_arn(group)
            .send()
            .await
            .map_err(|e| self.err("elasticloadbalancing:DescribeTargetHealth", e))?;
        let mut targets: Vec<Target> = output
            .target_health_descriptions()
            .iter()
            .filter_map(|d| {
                let target = d.target()?;
                let health = d.target_health();
                Some(Target {
                    address: target.id()?.to_owned(),
                    port: target
                        .port()
                        .and_then(|p| u16::try_from(p).ok())
                        .unwrap_or(0),
                    state: health
                        .and_then(|h| h.state())
                        .map_or_else(|| "unknown".to_owned(), |s| s.as_str().to_owned()),
                    reason: health
                        .and_then(|h| h.reason())
                        .map(|r| r.as_str().to_owned()),
                })
            })
            .collect();
        targets.sort_by(|a, b| (&a.address, a.port).cmp(&(&b.address, b.port)));
        Ok(targets)
    }

    /// Registers (`register`) or deregisters targets (address, port) in a
    /// group. The replicas' addresses lie outside the VPC's range (routed
    /// to their nodes), which ELB takes only with the zone `all`.
    pub async fn change_targets(
        &self,
        group: &str,
        targets: &[(String, u16)],
        register: bool,
    ) -> Result<(), AwsError> {
        if targets.is_empty() {
            return Ok(());
        }
        let descriptions: Vec<TargetDescription> = targets
            .iter()
            .map(|(address, port)| {
                TargetDescription::builder()
                    .id(address)
                    .port(i32::from(*port))
                    .availability_zone("all")
                    .build()
            })
            .collect();
        self.count();
        if register {
            self.elb
                .register_targets()
                .target_group_arn(group)
                .set_targets(Some(descriptions))
                .send()
                .await
                .map(|_| ())
                .map_err(|e| self.err("elasticloadbalancing:RegisterTargets", e))
        } else {
            self.elb
                .deregister_targets()
                .target_group_arn(group)
                .set_targets(Some(descriptions))
                .send()
                .await
                .map(|_| ())
                .map_err(|e| self.err("elasticloadbalancing:DeregisterTargets", e))
        }
    }

    /// Turns the load balancer's access logs on or off (`on`); says whether
    /// that changed them. `destroy` turns them off before it empties the
    /// bucket, so no log lands in it while the stack goes, and on again if
    /// the stack stays.
    pub async fn switch_access_logs(&self, arn: &str, on: bool) -> Result<bool, AwsError> {
        const ENABLED: &str = "access_logs.s3.enabled";
        let wanted = if on { "true" } else { "false" };
        self.count();
        let attributes = match self
            .elb
            .describe_load_balancer_attributes()
            .load_balancer_arn(arn)
            .send()
            .await
        {
            Ok(attributes) => attributes,
            // Gone already (a destroy run again): it writes nothing.
            Err(err) if err.code() == Some("LoadBalancerNotFound") => return Ok(false),
            Err(err) => {
                return Err(self.err("elasticloadbalancing:DescribeLoadBalancerAttributes", err));
            }
        };
        // Off when unset, as ELB has it.
        let now = attributes
            .attributes()
            .iter()
            .find(|a| a.key() == Some(ENABLED))
            .and_then(|a| a.value())
            .unwrap_or("false");
        if now == wanted {
            return Ok(false);
        }
        self.count();
        self.elb
            .modify_load_balancer_attributes()
            .load_balancer_arn(arn)
            .attributes(
                LoadBalancerAttribute::builder()
                    .key(ENABLED)
                    .value(wanted)
                    .build(),
            )
            .send()
            .await
            .map_err(|e| self.err("elasticloadbalancing:ModifyLoadBalancerAttributes", e))?;
        Ok(true)
    }
}
