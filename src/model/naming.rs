//! Names derived from the model, in one place, because the compiler, the
//! planner and the agents must all agree on them.
//!
//! Resource names that AWS needs unique are built from the cluster name
//! (a DNS label of at most 28 characters, so the longest bucket name still
//! fits in S3's 63).

use super::{App, Config, Service};
use crate::spec::names::{cluster_token_parameter, repository_name};

/// The CloudFormation stack of a cluster.
pub fn stack(config: &Config) -> String {
    crate::spec::names::stack(&config.cluster.name)
}

/// The artifact bucket, as a CloudFormation `Fn::Sub` pattern: unique per
/// account, region and cluster, and computable on a node from its identity
/// document without a lookup.
pub fn bucket_pattern(config: &Config) -> String {
    format!(
        "huxley-${{AWS::AccountId}}-${{AWS::Region}}-{}",
        config.cluster.name
    )
}

/// The DynamoDB table holding the control plane's lease.
pub fn lease_table(config: &Config) -> String {
    format!("huxley-{}-lease", config.cluster.name)
}

/// The node auto-scaling group, named so IAM statements can name it
/// without a reference cycle.
pub fn node_group(config: &Config) -> String {
    format!("huxley-{}-nodes", config.cluster.name)
}

/// The control plane's auto-scaling group.
pub fn control_group(config: &Config) -> String {
    format!("huxley-{}-control", config.cluster.name)
}

/// A service's unit stem: `<app>-<service>`; replicas run as
/// `<app>-<service>@<n>.service`.
pub fn unit(app: &App, service: &Service) -> String {
    format!("{}-{}", app.name, service.name)
}

/// SSM parameter holding a token the kick server accepts.
pub fn token_parameter(config: &Config, who: &str) -> String {
    cluster_token_parameter(&config.cluster.name, who)
}

/// SSM parameter holding a service's own kick token.
pub fn service_token_parameter(config: &Config, app: &App, service: &Service) -> String {
    token_parameter(config, &format!("{}/{}", app.name, service.name))
}

/// The ECR repository of an app's services built on push: one per app,
/// each service's images tagged `<service>_<commit>_<time>`. One per app, not per
/// service: CloudFormation holds 500 resources a stack, and a repository
/// per service would make the stack grow with the services.
pub fn repository(config: &Config, app: &App) -> String {
    repository_name(&config.cluster.name, &app.name)
}

/// What every repository of the cluster starts with.
pub fn repository_prefix(config: &Config) -> String {
    format!("huxley-{}", config.cluster.name)
}

/// The name the kick server registers for its external API: in the public
/// zone when there is one, so operators can resolve it.
pub fn kick_name(config: &Config) -> String {
    let zone = config
        .cluster
        .public_domain
        .as_deref()
        .unwrap_or(&config.cluster.private_domain);
    format!("kick-{}.{zone}", config.cluster.name)
}

/// The object key of the `huxley` binary the nodes boot with.
pub fn binary_key() -> String {
    format!("bin/huxley-{}-x86_64-linux", env!("CARGO_PKG_VERSION"))
}
