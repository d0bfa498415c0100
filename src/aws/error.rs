//! AWS failures, in the user's terms.

use std::fmt;

use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

/// What went wrong talking to AWS, and what to do about it.
#[derive(Debug)]
pub enum AwsError {
    /// No credentials anywhere in the chain.
    NoCredentials(String),
    /// Credentials were found but have expired.
    ExpiredCredentials(String),
    /// The session's region is not the one huxley.toml names.
    RegionMismatch { session: String, config: String },
    /// The caller may not perform `action`.
    AccessDenied { action: String, message: String },
    /// The endpoint could not be reached within the retries and timeouts.
    Unreachable { endpoint: String, detail: String },
    /// The public zone huxley.toml names does not exist in the account.
    ZoneNotFound(String),
    /// A resource the stack should hold is not there.
    StackResourceMissing { stack: String, resource: String },
    /// No image matches a Flatcar channel.
    ImageNotFound(String),
    /// The stack ended in a failed state.
    StackFailed { status: String, cause: String },
    /// A conditional write found the object changed since it was read
    /// (S3's 412 PreconditionFailed): another writer came first.
    Conflict { action: String, key: String },
    /// A write this kick server did not send: its lease had lapsed (a
    /// new leader may be acting), see [`super::fence`].
    Fenced(String),
    /// Anything else: the action, the service's code and message.
    Other { action: String, detail: String },
}

impl fmt::Display for AwsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoCredentials(detail) => write!(
                f,
                "no AWS credentials found ({detail})\nhelp: set AWS_PROFILE (and run `aws sso login` for SSO profiles), pass --profile, or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
            ),
            Self::ExpiredCredentials(detail) => write!(
                f,
                "the AWS credentials have expired ({detail})\nhelp: log in again (`aws sso login`) or refresh the session credentials"
            ),
            Self::RegionMismatch { session, config } => write!(
                f,
                "the AWS session is for region {session}, but huxley.toml's cluster is in {config}\nhelp: pass --region {config}, or unset AWS_REGION / the profile's region"
            ),
            Self::AccessDenied { action, message } => write!(
                f,
                "access denied: the caller may not perform {action} ({message})\nhelp: grant {action} to the role or user you run huxley as"
            ),
            Self::Unreachable { endpoint, detail } => write!(
                f,
                "cannot reach {endpoint}: {detail}\nhelp: check the network, or AWS_ENDPOINT_URL if you set one"
            ),
            Self::ZoneNotFound(zone) => write!(
                f,
                "the public hosted zone {zone} does not exist in this account\nhelp: create it in Route53, or fix cluster.public-domain"
            ),
            Self::StackResourceMissing { stack, resource } => write!(
                f,
                "the stack {stack} has no {resource}\nhelp: run `huxley apply` to create or repair the cluster"
            ),
            Self::ImageNotFound(what) => write!(f, "no machine image found: {what}"),
            Self::StackFailed { status, cause } => write!(f, "the stack is {status}: {cause}"),
            Self::Conflict { action, key } => write!(
                f,
                "{action} refused: {key} changed since this process read it (another writer came first)"
            ),
            Self::Fenced(detail) => write!(f, "{detail} (another kick server may lead now)"),
            Self::Other { action, detail } => write!(f, "{action} failed: {detail}"),
        }
    }
}

impl std::error::Error for AwsError {}

/// Turns a failed call into an [`AwsError`]; `action` is the IAM action
/// name of the call, such as `cloudformation:CreateStack`.
pub fn classify<E, R>(action: &str, endpoint: &str, err: SdkError<E, R>) -> AwsError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: fmt::Debug + Send + Sync + 'static,
{
    if let Some(lapsed) = super::fence::stopped(&err) {
        return AwsError::Fenced(lapsed.to_string());
    }
    match &err {
        SdkError::DispatchFailure(failure) => {
            let detail = if failure.is_timeout() {
                "timed out".to_owned()
            } else {
                DisplayErrorContext(&err).to_string()
            };
            if failure.is_user() {
                return credentials_from_text(&detail).unwrap_or(AwsError::Other {
                    action: action.to_owned(),
                    detail,
                });
            }
            return AwsError::Unreachable {
                endpoint: endpoint.to_owned(),
                detail,
            };
        }
        SdkError::TimeoutError(_) => {
            return AwsError::Unreachable {
                endpoint: endpoint.to_owned(),
                detail: "timed out".to_owned(),
            };
        }
        _ => {}
    }
    let code = err.code().unwrap_or_default().to_owned();
    let message = err.message().unwrap_or_default().to_owned();
    match code.as_str() {
        "AccessDenied"
        | "AccessDeniedException"
        | "UnauthorizedOperation"
        | "UnauthorizedAccess" => AwsError::AccessDenied {
            action: action.to_owned(),
            message,
        },
        "ExpiredToken" | "ExpiredTokenException" | "RequestExpired" | "TokenRefreshRequired" => {
            AwsError::ExpiredCredentials(message)
        }
        "InvalidClientTokenId"
        | "UnrecognizedClientException"
        | "InvalidAccessKeyId"
        | "SignatureDoesNotMatch" => AwsError::NoCredentials(format!("{code}: {message}")),
        _ => AwsError::Other {
            action: action.to_owned(),
            detail: if code.is_empty() {
                DisplayErrorContext(&err).to_string()
            } else {
                format!("{code}: {message}")
            },
        },
    }
}

/// A failed credentials lookup.
pub fn credentials(err: CredentialsError) -> AwsError {
    let detail = DisplayErrorContext(&err).to_string();
    match err {
        CredentialsError::CredentialsNotLoaded(_) => AwsError::NoCredentials(detail),
        _ => credentials_from_text(&detail).unwrap_or(AwsError::NoCredentials(detail)),
    }
}

fn credentials_from_text(detail: &str) -> Option<AwsError> {
    let lower = detail.to_ascii_lowercase();
    if lower.contains("expired") {
        Some(AwsError::ExpiredCredentials(detail.to_owned()))
    } else if lower.contains("credential") {
        Some(AwsError::NoCredentials(detail.to_owned()))
    } else {
        None
    }
}
