//! The leader's fence on the wire: every attempt of every AWS write a kick
//! server sends (Route53 changes, S3 puts, Auto Scaling and EC2 calls,
//! retries included) is checked right before it is transmitted against the
//! deadline its lease gives it. A write attempted after the deadline is not
//! sent and fails with [`AwsError::Fenced`](super::AwsError::Fenced), so a
//! leader whose lease lapsed while a call was in flight, retrying or
//! waiting for a lock, cannot act after a new leader may have started.
//!
//! Reads are not fenced (a standby reads too), nor are the lease's own
//! DynamoDB calls: the lease protocol fences itself with conditional
//! writes.

use std::sync::{Arc, Mutex};

use aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_s3::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use tokio::time::Instant;

use super::Aws;

/// Until when this process may write to AWS, by its monotonic clock;
/// nothing when it may not (it does not lead).
#[derive(Debug, Default)]
pub struct Deadline {
    until: Mutex<Option<Instant>>,
}

impl Deadline {
    fn until(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The deadline, if any.
    pub fn get(&self) -> Option<Instant> {
        *self.until()
    }

    /// Moves the deadline (`None`: no more writes).
    pub fn set(&self, until: Option<Instant>) {
        *self.until() = until;
    }

    /// Moves the deadline only while it has not passed: a renewal that
    /// answers after the deadline must not reopen it.
    pub fn extend(&self, until: Instant) -> bool {
        let mut current = self.until();
        if current.is_some_and(|c| Instant::now() < c) {
            *current = Some(until);
            true
        } else {
            false
        }
    }

    /// Whether this process may act now.
    pub fn open(&self) -> bool {
        self.get().is_some_and(|until| Instant::now() < until)
    }

    /// Whether a write may be sent now: with at least [`WRITE_SLACK`] left
    /// before the deadline, so that it reaches AWS before a standby could
    /// start (the lease leaves twice its clock margin between the two).
    pub fn open_for_writes(&self) -> bool {
        self.get()
            .is_some_and(|until| Instant::now() + WRITE_SLACK < until)
    }
}

/// How long before its deadline a leader stops sending writes: a write
/// checked just before the deadline still has to connect (at most
/// [`super::Calls::Leader`]'s 1 s) and travel.
pub const WRITE_SLACK: std::time::Duration = std::time::Duration::from_secs(2);

/// Why a write was not sent.
#[derive(Debug)]
pub struct Lapsed {
    pub operation: String,
}

impl std::fmt::Display for Lapsed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} was not sent: this kick server's lease has lapsed",
            self.operation
        )
    }
}

impl std::error::Error for Lapsed {}

/// Whether an operation only reads, by the AWS naming convention every
/// service Huxley uses follows.
pub fn reads(operation: &str) -> bool {
    ["Describe", "Get", "List", "Head", "BatchGet"]
        .iter()
        .any(|prefix| operation.starts_with(prefix))
}

#[derive(Debug)]
struct Fence {
    deadline: Arc<Deadline>,
}

impl Intercept for Fence {
    fn name(&self) -> &'static str {
        "HuxleyLeaseFence"
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        // An operation without its name is refused: it may write.
        let Some(metadata) = cfg.load::<Metadata>() else {
            return Err(Box::new(Lapsed {
                operation: "an unnamed AWS operation".into(),
            }));
        };
        if reads(metadata.name()) || self.deadline.open_for_writes() {
            return Ok(());
        }
        Err(Box::new(Lapsed {
            operation: format!("{}:{}", metadata.service(), metadata.name()),
        }))
    }
}

impl Aws {
    /// These clients, with every write checked against `deadline` right
    /// before each attempt is sent (the lease's DynamoDB client excepted),
    /// retried and bounded in time as a leader's calls are
    /// ([`super::Calls::Leader`]: 60 s a call, connecting within 1 s).
    #[must_use]
    pub fn fenced(&self, deadline: &Arc<Deadline>) -> Aws {
        let fence = || Fence {
            deadline: Arc::clone(deadline),
        };
        let calls = super::Calls::Leader;
        macro_rules! fenced {
            ($krate:ident, $client:expr) => {
                $krate::Client::from_conf(
                    $client
                        .config()
                        .to_builder()
                        .interceptor(fence())
                        .retry_config(calls.retries())
                        .timeout_config(calls.timeouts())
                        .build(),
                )
            };
        }
        Aws {
            autoscaling: fenced!(aws_sdk_autoscaling, self.autoscaling),
            cfn: fenced!(aws_sdk_cloudformation, self.cfn),
            route53: fenced!(aws_sdk_route53, self.route53),
            ec2: fenced!(aws_sdk_ec2, self.ec2),
            elb: fenced!(aws_sdk_elasticloadbalancingv2, self.elb),
            ecr: fenced!(aws_sdk_ecr, self.ecr),
            s3: fenced!(aws_sdk_s3, self.s3),
            ssm: fenced!(aws_sdk_ssm, self.ssm),
            ..self.clone()
        }
    }
}

/// Whether `err` (an SDK error) is a write the fence stopped.
pub fn stopped<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a Lapsed> {
    let mut source = Some(err);
    while let Some(e) = source {
        if let Some(lapsed) = e.downcast_ref::<Lapsed>() {
            return Some(lapsed);
        }
        source = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_told_from_writes_by_name() {
        for read in [
            "DescribeInstances",
            "GetObject",
            "HeadObject",
            "ListResourceRecordSets",
            "GetChange",
            "BatchGetImage",
        ] {
            assert!(reads(read), "{read}");
        }
        for write in [
            "ChangeResourceRecordSets",
            "PutObject",
            "DeleteObject",
            "SetDesiredCapacity",
            "TerminateInstanceInAutoScalingGroup",
            "ReplaceRoute",
            "CreateRoute",
            "PutParameter",
        ] {
            assert!(!reads(write), "{write}");
        }
    }

    /// Regression (review): the fenced clients kept the CLI's 5-minute
    /// budget and 5 s connect, longer than the API's 90 s answer limit and
    /// than the write slack assumes.
    #[tokio::test]
    async fn a_leaders_clients_are_bounded_as_a_leaders_calls() {
        let aws = crate::testing::aws("http://127.0.0.1:9", "us-west-2").await;
        let fenced = aws.fenced(&Arc::new(Deadline::default()));
        let timeouts = fenced.route53.config().timeout_config().expect("timeouts");
        assert_eq!(
            timeouts.connect_timeout(),
            Some(std::time::Duration::from_secs(1))
        );
        assert_eq!(
            timeouts.operation_timeout(),
            Some(super::super::LEADER_BUDGET)
        );
        let s3 = fenced.s3.config().timeout_config().expect("timeouts");
        assert_eq!(s3.operation_timeout(), Some(super::super::LEADER_BUDGET));
        let retries = fenced.autoscaling.config().retry_config().expect("retries");
        assert_eq!(retries.max_attempts(), super::super::CONTROL_ATTEMPTS);
        assert_eq!(retries.max_backoff(), std::time::Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_closes_when_it_passes_and_is_not_reopened_by_a_late_renewal() {
        let deadline = Deadline::default();
        assert!(!deadline.open(), "closed until set");
        deadline.set(Some(Instant::now() + std::time::Duration::from_secs(10)));
        assert!(deadline.open());
        assert!(deadline.open_for_writes());
        tokio::time::advance(std::time::Duration::from_secs(9)).await;
        assert!(deadline.open(), "the leader still answers");
        assert!(!deadline.open_for_writes(), "but sends no write this close");
        tokio::time::advance(std::time::Duration::from_secs(1)).await;
        tokio::time::advance(std::time::Duration::from_secs(1)).await;
        assert!(!deadline.open());
        assert!(!deadline.extend(Instant::now() + std::time::Duration::from_secs(10)));
        assert!(!deadline.open());
    }
}
