//! EC2: the cluster's nodes and the Flatcar images they boot.

use super::{Aws, AwsError};

/// A node of the cluster: an EC2 instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub id: String,
    pub address: Option<std::net::IpAddr>,
    /// The public IPv4 address, when the node has one: what a service's
    /// public names carry in DNS mode.
    pub public_address: Option<std::net::IpAddr>,
    pub instance_type: String,
    /// The availability zone.
    pub zone: String,
    /// Tagged `huxley:do-not-disrupt=true`: consolidation never drains it.
    pub do_not_disrupt: bool,
}

/// The instance tag that keeps consolidation off a node, as Karpenter's
/// `karpenter.sh/do-not-disrupt` annotation does.
pub const DO_NOT_DISRUPT: &str = "huxley:do-not-disrupt";

impl Aws {
    /// The newest x86_64 HVM Flatcar image of a channel.
    pub async fn newest_flatcar(&self, channel: &str) -> Result<String, AwsError> {
        use aws_sdk_ec2::types::Filter;
        self.count();
        let pattern = format!("Flatcar-{channel}-*");
        let output = self
            .ec2
            .describe_images()
            .owners(super::FLATCAR_OWNER)
            .filters(Filter::builder().name("name").values(&pattern).build())
            .filters(
                Filter::builder()
                    .name("architecture")
                    .values("x86_64")
                    .build(),
            )
            .filters(
                Filter::builder()
                    .name("virtualization-type")
                    .values("hvm")
                    .build(),
            )
            .filters(Filter::builder().name("state").values("available").build())
            .send()
            .await
            .map_err(|e| self.err("ec2:DescribeImages", e))?;
        output
            .images()
            .iter()
            .filter(|i| i.image_id().is_some())
            .max_by(|a, b| {
                a.creation_date()
                    .cmp(&b.creation_date())
                    .then(a.name().cmp(&b.name()))
            })
            .and_then(|i| i.image_id().map(str::to_owned))
            .ok_or_else(|| {
                AwsError::ImageNotFound(format!(
                    "no available x86_64 image named {pattern} owned by {} in this region",
                    super::FLATCAR_OWNER
                ))
            })
    }

    /// The cluster's nodes: its pending and running EC2 instances (those
    /// tagged `huxley:cluster=<cluster>`) but the control plane's, sorted
    /// by id.
    pub async fn cluster_nodes(&self, cluster: &str) -> Result<Vec<Node>, AwsError> {
        self.cluster_instances(cluster, false).await
    }

    /// Every pending and running instance of the cluster, the control
    /// plane's included, sorted by id.
    pub async fn cluster_machines(&self, cluster: &str) -> Result<Vec<Node>, AwsError> {
        self.cluster_instances(cluster, true).await
    }

    async fn cluster_instances(
        &self,
        cluster: &str,
        with_control: bool,
    ) -> Result<Vec<Node>, AwsError> {
        use aws_sdk_ec2::types::Filter;
        let mut nodes = Vec::new();
        let mut pages = self
            .ec2
            .describe_instances()
            .filters(
                Filter::builder()
                    .name("tag:huxley:cluster")
                    .values(cluster)
                    .build(),
            )
            .filters(
                Filter::builder()
                    .name("instance-state-name")
                    .values("pending")
                    .values("running")
                    .build(),
            )
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            self.count();
            let page = page.map_err(|e| self.err("ec2:DescribeInstances", e))?;
            for instance in page.reservations().iter().flat_map(|r| r.instances()) {
                let Some(id) = instance.instance_id() else {
                    continue;
                };
                let control = instance.tags().iter().any(|t| {
                    t.key() == Some(crate::spec::names::ROLE_TAG) && t.value() == Some("control")
                });
                if control && !with_control {
                    continue;
                }
                nodes.push(Node {
                    id: id.to_owned(),
                    address: instance.private_ip_address().and_then(|a| a.parse().ok()),
                    public_address: instance.public_ip_address().and_then(|a| a.parse().ok()),
                    instance_type: instance
                        .instance_type()
                        .map(|t| t.as_str().to_owned())
                        .unwrap_or_default(),
                    zone: instance
                        .placement()
                        .and_then(|p| p.availability_zone())
                        .unwrap_or_default()
                        .to_owned(),
                    do_not_disrupt: instance
                        .tags()
                        .iter()
                        .any(|t| t.key() == Some(DO_NOT_DISRUPT) && t.value() == Some("true")),
                });
            }
        }
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(nodes)
    }
}
