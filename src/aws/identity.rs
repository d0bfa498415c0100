//! Who a node is, proven with AWS's own signature: the node signs an STS
//! `GetCallerIdentity` request with its instance role's credentials and
//! hands the signed headers to kick, which sends that request to STS
//! itself and reads who signed it (as Vault's AWS IAM auth and
//! aws-iam-authenticator do). On EC2 an instance profile's session is named
//! after the instance, so the answer names the node's role and instance id;
//! only STS can tell, and only the instance holds those credentials.
//!
//! The request carries a signed `x-huxley-server` header naming the
//! cluster, so a proof made for one cluster is refused by another's kick
//! (STS checks the signature covers it), and STS refuses it 15 minutes
//! after it was signed.

use aws_credential_types::provider::ProvideCredentials as _;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;

use super::{Aws, AwsError};

/// The one request a proof is: STS `GetCallerIdentity`, as a form post.
pub const BODY: &str = "Action=GetCallerIdentity&Version=2011-06-15";
pub const CONTENT_TYPE: &str = "application/x-www-form-urlencoded; charset=utf-8";
/// The signed header that binds a proof to one cluster's kick servers.
pub const SERVER_HEADER: &str = "x-huxley-server";

/// The headers a node sends kick as its proof (the signed request's own).
pub mod headers {
    pub const AUTHORIZATION: &str = "x-huxley-sts-authorization";
    pub const DATE: &str = "x-huxley-sts-date";
    pub const SECURITY_TOKEN: &str = "x-huxley-sts-security-token";
}

/// A signed `GetCallerIdentity`: what kick needs to send it again.
#[derive(Clone, PartialEq, Eq)]
pub struct Proof {
    pub authorization: String,
    pub date: String,
    pub security_token: Option<String>,
}

impl std::fmt::Debug for Proof {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A proof is a credential for 15 minutes: never printed.
        f.debug_struct("Proof").field("date", &self.date).finish()
    }
}

/// The value of [`SERVER_HEADER`] for a cluster.
pub fn server(cluster: &str) -> String {
    format!("huxley-kick.{cluster}")
}

/// Who signed a proof, as STS answered: an assumed role's ARN
/// `arn:<partition>:sts::<account>:assumed-role/<role>/<session>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub account: String,
    pub role: String,
    pub session: String,
}

impl Caller {
    /// Reads an assumed role's ARN; `None` for any other principal (a user,
    /// a root account, a federated user).
    pub fn from_arn(arn: &str) -> Option<Self> {
        let mut parts = arn.splitn(6, ':');
        let (Some("arn"), Some(_partition), Some("sts"), Some(""), Some(account), Some(resource)) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return None;
        };
        let mut resource = resource.split('/');
        let (Some("assumed-role"), Some(role), Some(session), None) = (
            resource.next(),
            resource.next(),
            resource.next(),
            resource.next(),
        ) else {
            return None;
        };
        let digits = account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit());
        (digits && !role.is_empty() && !session.is_empty()).then(|| Self {
            account: account.to_owned(),
            role: role.to_owned(),
            session: session.to_owned(),
        })
    }
}

/// Why a proof could not be checked or was refused.
#[derive(Debug)]
pub enum ProofError {
    /// The proof is not one: malformed, not signed over the cluster's
    /// header, or STS refused its signature.
    Refused(String),
    /// STS could not be asked (the caller may try again).
    Unavailable(String),
}

impl std::fmt::Display for ProofError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProofError::Refused(why) => write!(f, "node identity refused: {why}"),
            ProofError::Unavailable(why) => write!(f, "node identity cannot be checked: {why}"),
        }
    }
}

impl Aws {
    /// STS's endpoint: the SDK's override when one is set (an emulator),
    /// else the region's own.
    pub fn sts_endpoint(&self) -> String {
        self.sts.clone()
    }

    /// Signs a `GetCallerIdentity` for `cluster`'s kick servers with this
    /// session's credentials.
    pub async fn prove_identity(&self, cluster: &str) -> Result<Proof, AwsError> {
        let Some(provider) = &self.credentials else {
            return Err(AwsError::NoCredentials(
                "no credentials provider is configured".into(),
            ));
        };
        let credentials = provider
            .provide_credentials()
            .await
            .map_err(super::error::credentials)?;
        let identity = credentials.into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("sts")
            .time(std::time::SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|err| AwsError::Other {
                action: "signing the node's identity".into(),
                detail: err.to_string(),
            })?
            .into();
        let server = server(cluster);
        let url = self.sts_endpoint();
        let signed = SignableRequest::new(
            "POST",
            url.as_str(),
            [
                ("content-type", CONTENT_TYPE),
                (SERVER_HEADER, server.as_str()),
            ]
            .into_iter(),
            SignableBody::Bytes(BODY.as_bytes()),
        )
        .and_then(|request| sign(request, &params))
        .map_err(|err| AwsError::Other {
            action: "signing the node's identity".into(),
            detail: err.to_string(),
        })?;
        let mut proof = Proof {
            authorization: String::new(),
            date: String::new(),
            security_token: None,
        };
        for (name, value) in signed.output().headers() {
            match name {
                "authorization" => proof.authorization = value.to_owned(),
                "x-amz-date" => proof.date = value.to_owned(),
                "x-amz-security-token" => proof.security_token = Some(value.to_owned()),
                _ => {}
            }
        }
        Ok(proof)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_assumed_roles_session_is_a_caller() {
        assert_eq!(
            Caller::from_arn(
                "arn:aws:sts::123456789012:assumed-role/huxley-web-NodeRole-X1/i-0abc"
            ),
            Some(Caller {
                account: "123456789012".into(),
                role: "huxley-web-NodeRole-X1".into(),
                session: "i-0abc".into(),
            })
        );
        for arn in [
            "arn:aws:iam::123456789012:user/moto",
            "arn:aws:sts::123456789012:federated-user/bob",
            "arn:aws:sts::123456789012:assumed-role/r/s/extra",
            "arn:aws:sts::123456789012:assumed-role/r/",
            "arn:aws:sts::12345:assumed-role/r/i-1",
            "arn:aws:sts:us-east-1:123456789012:assumed-role/r/i-1",
            "",
        ] {
            assert_eq!(Caller::from_arn(arn), None, "{arn}");
        }
    }

    #[test]
    fn sts_is_asked_in_the_regions_own_partition() {
        assert_eq!(
            crate::aws::sts_endpoint("us-west-2"),
            "https://sts.us-west-2.amazonaws.com/"
        );
        assert_eq!(
            crate::aws::sts_endpoint("cn-north-1"),
            "https://sts.cn-north-1.amazonaws.com.cn/"
        );
    }

    #[test]
    fn a_proof_never_prints_its_signature() {
        let proof = Proof {
            authorization: "AWS4-HMAC-SHA256 Credential=AKIA/x, SignedHeaders=host, Signature=abc"
                .into(),
            date: "20261130T000000Z".into(),
            security_token: Some("secret-token".into()),
        };
        let shown = format!("{proof:?}");
        assert!(
            !shown.contains("Signature") && !shown.contains("secret-token"),
            "{shown}"
        );
    }
}
