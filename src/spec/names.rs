//! Names the compiler gives AWS resources and the runtime looks up: the
//! artifact bucket, the token parameters, the image repositories, and the
//! stack's logical ids.

/// The artifact bucket's name in an account and region.
pub fn bucket(cluster: &str, account: &str, region: &str) -> String {
    format!("huxley-{account}-{region}-{cluster}")
}

/// SSM parameter holding a token of cluster `cluster`.
pub fn cluster_token_parameter(cluster: &str, who: &str) -> String {
    format!("{}{who}", tokens_path(cluster))
}

/// Where a cluster's kick tokens live in SSM Parameter Store.
pub fn tokens_path(cluster: &str) -> String {
    format!("/huxley/{cluster}/tokens/")
}

/// The SSM parameter `huxley secrets set` writes for a variable no
/// service references yet: under the app's prefix, in lower case with
/// dashes (`API_KEY` → `/acme/shop/api-key`), as validation suggests.
pub fn secret_parameter(cluster: &str, app: &str, variable: &str) -> String {
    format!("/{cluster}/{app}/{}", secret_leaf(variable))
}

/// The last part of a variable's parameter: lower case, `_` as `-`.
pub fn secret_leaf(variable: &str) -> String {
    variable.to_ascii_lowercase().replace('_', "-")
}

/// The log group an app's replicas write to (`awslogs`), one stream per
/// service, replica and container start.
pub fn log_group(cluster: &str, app: &str) -> String {
    format!("/huxley/{cluster}/{app}")
}

/// The last part of the control plane's log group (no app may have it).
pub const SYSTEM_LOGS: &str = "system";

/// The ECR repository of an app's built images, by cluster and app name.
pub fn repository_name(cluster: &str, app: &str) -> String {
    format!("huxley-{cluster}/{app}")
}

/// The unprivileged user pushes log in as on a node (no sudo, no login
/// keys; every session runs the hook's forced command).
pub const GIT_USER: &str = "huxley-git";

/// The tag that tells the control plane's machines (`control`) from the
/// nodes (`node`).
pub const ROLE_TAG: &str = "huxley:role";

/// A cluster's CloudFormation stack.
pub fn stack(cluster: &str) -> String {
    format!("huxley-{cluster}")
}

/// Logical ids and parameter names other stages refer to.
pub mod ids {
    pub const NODE_IMAGE_PARAMETER: &str = "NodeImageId";
    pub const PUBLIC_ZONE_PARAMETER: &str = "PublicZoneId";
    pub const CERTIFICATE_PARAMETER: &str = "CertificateArn";
    pub const LOAD_BALANCER: &str = "LoadBalancer";
    pub const LOAD_BALANCER_SECURITY_GROUP: &str = "LoadBalancerSecurityGroup";
    pub const ARTIFACT_BUCKET: &str = "ArtifactBucket";
    pub const ARTIFACT_BUCKET_POLICY: &str = "ArtifactBucketPolicy";
    pub const PRIVATE_ZONE: &str = "PrivateZone";
    pub const NODE_GROUP: &str = "NodeGroup";
    pub const CONTROL_GROUP: &str = "ControlGroup";
    pub const LEASE_TABLE: &str = "LeaseTable";
    pub const ROUTE_TABLE: &str = "PublicRouteTable";
}
