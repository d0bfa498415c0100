//! The only module that talks to AWS, through the official SDK and
//! `aws-config`'s standard chain (environment, profiles, SSO, roles), with
//! the endpoint from the SDK's own override (`AWS_ENDPOINT_URL`).
//!
//! Every call is counted (`--verbose` prints the count), bounded in retries
//! and time, and its failure is turned into an [`AwsError`] that says what
//! went wrong in the user's terms: no or expired credentials, access denied
//! (naming the action), an unreachable endpoint, a missing zone.

pub mod acm;
mod cloudformation;
mod ec2;
pub mod elb;
mod error;
pub mod fence;
pub mod identity;
mod images;
pub mod imds;
mod lease;
pub mod live;
mod logs;
mod network;
mod route53;
mod s3;
mod scaling;
mod ssm;
pub use logs::LogEvent;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_credential_types::provider::ProvideCredentials;
use error::classify;

pub use cloudformation::{ChangeSetState, StackEvent, StackSummary, TemplateSource};
pub use ec2::{DO_NOT_DISRUPT, Node};
pub use error::AwsError;
pub use fence::Deadline;
pub use images::Repository;
pub use lease::{LeaseRecord, LeaseWrite};
pub use live::{LiveRead, Query, read_live};
pub use route53::{Alias, ChangeError, RecordChange, RecordSet, batch_sizes};
pub use scaling::NodeGroup;

/// Flatcar's publisher account, whose images `flatcar-*` resolves to.
pub const FLATCAR_OWNER: &str = "075585003325";

/// How a class of calls is retried and bounded in time. Throttling, 5xx
/// answers (whatever their body: a load balancer's 503 is plain text),
/// timeouts and dropped connections are retried with exponential backoff
/// and full jitter; anything else (access denied, a validation error, a
/// failed condition) is not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Calls {
    /// CloudFormation, Route53, EC2, Auto Scaling, ECR, SSM and S3: up to
    /// [`CONTROL_ATTEMPTS`] attempts, backing off from 0.5 s to 20 s, within
    /// [`CONTROL_BUDGET`] a call (Route53 allows five requests a second per
    /// account and sheds more with `Throttling`). The kick server's loops
    /// never give up beyond that: they try again on their next round.
    Control,
    /// A leading kick server's calls (its clients are also fenced, see
    /// [`fence`]): up to [`CONTROL_ATTEMPTS`] attempts, backing off from
    /// 0.5 s to 5 s, within [`LEADER_BUDGET`] a call (shorter than its API's
    /// 90 s answer limit, so a handler waiting on AWS answers), connecting
    /// within 1 s (a write checked against the lease must go out soon).
    Leader,
    /// The lease's DynamoDB calls: a few quick attempts, each at most
    /// [`LEASE_ATTEMPT`] and all of them less than the lease's clock margin,
    /// so a renewal that hangs is given up in time to try another (the
    /// lease also bounds every call by its own deadline).
    Lease,
}

/// Attempts of a control-plane call (Terraform's AWS provider makes 25;
/// ten at a 10% fault rate fail one call in ten billion).
pub const CONTROL_ATTEMPTS: u32 = 10;
/// The time one control-plane call may take, its retries included.
pub const CONTROL_BUDGET: Duration = Duration::from_secs(5 * 60);
/// The time one of a leader's calls may take, its retries included.
pub const LEADER_BUDGET: Duration = Duration::from_secs(60);
/// The time one attempt of a lease call may take.
pub const LEASE_ATTEMPT: Duration = Duration::from_millis(800);

impl Calls {
    pub fn retries(self) -> RetryConfig {
        match self {
            Calls::Control => RetryConfig::standard()
                .with_max_attempts(CONTROL_ATTEMPTS)
                .with_initial_backoff(Duration::from_millis(500))
                .with_max_backoff(Duration::from_secs(20)),
            Calls::Leader => RetryConfig::standard()
                .with_max_attempts(CONTROL_ATTEMPTS)
                .with_initial_backoff(Duration::from_millis(500))
                .with_max_backoff(Duration::from_secs(5)),
            Calls::Lease => RetryConfig::standard()
                .with_max_attempts(3)
                .with_initial_backoff(Duration::from_millis(50))
                .with_max_backoff(Duration::from_millis(400)),
        }
    }

    pub fn timeouts(self) -> TimeoutConfig {
        match self {
            Calls::Control => TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                .operation_attempt_timeout(Duration::from_secs(30))
                .operation_timeout(CONTROL_BUDGET)
                .build(),
            Calls::Leader => TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(1))
                .operation_attempt_timeout(Duration::from_secs(20))
                .operation_timeout(LEADER_BUDGET)
                .build(),
            Calls::Lease => TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(1))
                .operation_attempt_timeout(LEASE_ATTEMPT)
                .operation_timeout(Duration::from_millis(1_800))
                .build(),
        }
    }
}

/// STS's regional endpoint (the China regions are in their own partition).
pub(crate) fn sts_endpoint(region: &str) -> String {
    let suffix = if region.starts_with("cn-") {
        "amazonaws.com.cn"
    } else {
        "amazonaws.com"
    };
    format!("https://sts.{region}.{suffix}/")
}

/// Where and as whom to connect.
#[derive(Debug, Clone, Default)]
pub struct Connect {
    pub profile: Option<String>,
    pub region: Option<String>,
}

/// Clients for the services Huxley uses, and a count of the calls made.
#[derive(Debug, Clone)]
pub struct Aws {
    pub(crate) acm: aws_sdk_acm::Client,
    pub(crate) autoscaling: aws_sdk_autoscaling::Client,
    pub(crate) cfn: aws_sdk_cloudformation::Client,
    pub(crate) route53: aws_sdk_route53::Client,
    pub(crate) ec2: aws_sdk_ec2::Client,
    pub(crate) elb: aws_sdk_elasticloadbalancingv2::Client,
    pub(crate) ecr: aws_sdk_ecr::Client,
    pub(crate) s3: aws_sdk_s3::Client,
    pub(crate) ssm: aws_sdk_ssm::Client,
    pub(crate) logs: aws_sdk_cloudwatchlogs::Client,
    pub(crate) dynamodb: aws_sdk_dynamodb::Client,
    /// Route53 change requests sent: a standby, or a leader whose lease
    /// lapsed, must send none.
    route53_changes: Arc<AtomicUsize>,
    calls: Arc<AtomicUsize>,
    region: String,
    endpoint: String,
    /// STS's endpoint, where kick checks a node's proof of identity.
    sts: String,
    /// The session's credentials, to sign that proof with.
    credentials: Option<aws_credential_types::provider::SharedCredentialsProvider>,
}

impl Aws {
    /// The SDK error of `action`, in the user's terms.
    fn err<E, R>(&self, action: &str, err: aws_sdk_s3::error::SdkError<E, R>) -> AwsError
    where
        E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug + Send + Sync + 'static,
    {
        classify(action, self.endpoint(), err)
    }

    /// Loads the configuration and checks that credentials can be had,
    /// before any call, so a missing login is reported as such.
    /// `config_region` is the cluster's region when a config names one:
    /// the session must agree with it. Without one, the session's region is
    /// used.
    pub async fn connect(options: &Connect, config_region: Option<&str>) -> Result<Self, AwsError> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .timeout_config(Calls::Control.timeouts())
            .retry_config(Calls::Control.retries());
        if let Some(profile) = &options.profile {
            loader = loader.profile_name(profile);
        }
        if let Some(region) = &options.region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        let sdk = loader.load().await;
        let region = match (sdk.region(), config_region) {
            (None, Some(config)) => config.to_owned(),
            (Some(region), Some(config)) if region.as_ref() == config => config.to_owned(),
            (Some(region), Some(config)) => {
                return Err(AwsError::RegionMismatch {
                    session: region.to_string(),
                    config: config.to_owned(),
                });
            }
            (Some(region), None) => region.to_string(),
            (None, None) => {
                return Err(AwsError::Other {
                    action: "choosing a region".into(),
                    detail: "no AWS region is set: pass --region or set AWS_REGION".into(),
                });
            }
        };
        let sdk = sdk
            .into_builder()
            .region(aws_config::Region::new(region.clone()))
            .build();
        let Some(credentials) = sdk.credentials_provider() else {
            return Err(AwsError::NoCredentials(
                "no credentials provider is configured".into(),
            ));
        };
        if let Err(err) = credentials.provide_credentials().await {
            return Err(error::credentials(err));
        }
        Ok(Self::from_config(&sdk, region))
    }

    /// Clients for a loaded SDK configuration, each retried and bounded in
    /// time as its class of calls is (see [`Calls`]).
    pub fn from_config(sdk: &aws_config::SdkConfig, region: String) -> Self {
        let endpoint = sdk
            .endpoint_url()
            .map_or_else(|| format!("AWS ({region})"), str::to_owned);
        let control = Calls::Control;
        macro_rules! client {
            ($krate:ident, $calls:expr) => {
                $krate::Client::from_conf(
                    $krate::config::Builder::from(sdk)
                        .retry_config($calls.retries())
                        .timeout_config($calls.timeouts())
                        .build(),
                )
            };
        }
        // A custom endpoint (a local emulator, a proxy) is reached by path,
        // not by bucket subdomains.
        let s3_config = aws_sdk_s3::config::Builder::from(sdk)
            .retry_config(control.retries())
            .timeout_config(control.timeouts())
            .force_path_style(sdk.endpoint_url().is_some())
            .build();
        Self {
            acm: client!(aws_sdk_acm, control),
            autoscaling: client!(aws_sdk_autoscaling, control),
            cfn: client!(aws_sdk_cloudformation, control),
            route53: client!(aws_sdk_route53, control),
            ec2: client!(aws_sdk_ec2, control),
            elb: client!(aws_sdk_elasticloadbalancingv2, control),
            ecr: client!(aws_sdk_ecr, control),
            s3: aws_sdk_s3::Client::from_conf(s3_config),
            ssm: client!(aws_sdk_ssm, control),
            logs: client!(aws_sdk_cloudwatchlogs, control),
            dynamodb: client!(aws_sdk_dynamodb, Calls::Lease),
            route53_changes: Arc::new(AtomicUsize::new(0)),
            calls: Arc::new(AtomicUsize::new(0)),
            sts: sdk
                .endpoint_url()
                .map_or_else(|| sts_endpoint(&region), str::to_owned),
            credentials: sdk.credentials_provider(),
            region,
            endpoint,
        }
    }

    /// Calls made so far (each page of a paginated call counts).
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::Relaxed)
    }

    /// Route53 `ChangeResourceRecordSets` requests sent so far.
    pub fn route53_changes(&self) -> usize {
        self.route53_changes.load(Ordering::Relaxed)
    }

    pub(crate) fn count_route53_change(&self) {
        self.route53_changes.fetch_add(1, Ordering::Relaxed);
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub(crate) fn count(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
    }
}
