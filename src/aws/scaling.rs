//! The node group (an EC2 Auto Scaling group): how many nodes it wants, and
//! the two changes the control plane makes to it: a larger desired
//! capacity when replicas do not fit, and terminating a drained node with
//! the desired capacity decremented, so the group does not replace it.

use super::{Aws, AwsError};

/// The group's bounds and its wanted size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeGroup {
    pub min: u32,
    pub max: u32,
    pub desired: u32,
    /// Its instances that are not on their way out.
    pub instances: Vec<String>,
}

impl Aws {
    /// The node group `name`, or `None` when there is none.
    pub async fn node_group(&self, name: &str) -> Result<Option<NodeGroup>, AwsError> {
        self.count();
        let out = self
            .autoscaling
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(name)
            .send()
            .await
            .map_err(|e| self.err("autoscaling:DescribeAutoScalingGroups", e))?;
        let count = |n: Option<i32>| n.and_then(|n| u32::try_from(n).ok()).unwrap_or(0);
        Ok(out.auto_scaling_groups().first().map(|group| {
            let mut instances: Vec<String> = group
                .instances()
                .iter()
                .filter(|i| {
                    !i.lifecycle_state()
                        .is_some_and(|s| s.as_str().starts_with("Terminat"))
                })
                .filter_map(|i| i.instance_id().map(str::to_owned))
                .collect();
            instances.sort();
            NodeGroup {
                min: count(group.min_size()),
                max: count(group.max_size()),
                desired: count(group.desired_capacity()),
                instances,
            }
        }))
    }

    /// Asks the group for `desired` nodes (within its bounds: AWS refuses
    /// more than its maximum).
    pub async fn set_desired_capacity(&self, group: &str, desired: u32) -> Result<(), AwsError> {
        self.count();
        self.autoscaling
            .set_desired_capacity()
            .auto_scaling_group_name(group)
            .desired_capacity(i32::try_from(desired).unwrap_or(i32::MAX))
            .honor_cooldown(false)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.err("autoscaling:SetDesiredCapacity", e))
    }

    /// Terminates `instance` and keeps the group's desired capacity, so
    /// the group launches a new one in its place.
    pub async fn replace_node(&self, instance: &str) -> Result<(), AwsError> {
        self.terminate_in_group(instance, false).await
    }

    /// Terminates `instance` and lowers the group's desired capacity by
    /// one, so it is not replaced. AWS refuses it below the group's
    /// minimum.
    pub async fn terminate_node(&self, instance: &str) -> Result<(), AwsError> {
        self.terminate_in_group(instance, true).await
    }

    async fn terminate_in_group(&self, instance: &str, decrement: bool) -> Result<(), AwsError> {
        self.count();
        self.autoscaling
            .terminate_instance_in_auto_scaling_group()
            .instance_id(instance)
            .should_decrement_desired_capacity(decrement)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.err("autoscaling:TerminateInstanceInAutoScalingGroup", e))
    }
}
