//! Nodes' identities, as STS proves them ([`crate::aws::identity`]).
//!
//! A node's request carries a signed `GetCallerIdentity`; kick sends it to
//! STS and accepts the caller when it is a session of the cluster's node
//! role (looked up in the cluster's stack), in kick's own account, named
//! after an instance: that instance id is the node. A checked proof is
//! remembered for [`REMEMBERED`], so a node costs STS one call every few
//! minutes, not one a request.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::aws::identity::{Caller, Proof, ProofError};
use crate::aws::{Aws, identity};

/// How long a checked proof is taken without asking STS again: shorter
/// than the 15 minutes STS accepts a signature for, and than the agents'
/// re-signing period.
pub const REMEMBERED: Duration = Duration::from_secs(5 * 60);

/// The stack's roles whose sessions are nodes, by logical id.
pub const NODE_ROLES: &[&str] = &["NodeRole"];

/// At most this many proofs are remembered (a node has one at a time, two
/// while it re-signs); beyond it the oldest go.
const LIMIT: usize = 4096;

/// Whom a proof must come from: kick's own account, one of the node roles.
#[derive(Debug, Clone)]
struct Expected {
    account: String,
    roles: Vec<String>,
}

/// Checked proofs, and whom they must come from.
#[derive(Debug, Default)]
pub struct Identities {
    checked: Mutex<HashMap<String, (String, Instant)>>,
    expected: tokio::sync::OnceCell<Expected>,
}

impl Identities {
    /// The node `proof` proves, checking it with STS unless it was checked
    /// in the last [`REMEMBERED`].
    pub async fn node(
        &self,
        aws: &Aws,
        cluster: &str,
        proof: &Proof,
    ) -> Result<String, ProofError> {
        let key = crate::digest::sha256(format!(
            "{}\n{}\n{}",
            proof.authorization,
            proof.date,
            proof.security_token.as_deref().unwrap_or_default()
        ));
        if let Some(node) = self.remembered(&key) {
            return Ok(node);
        }
        let expected = self
            .expected
            .get_or_try_init(|| expected(aws, cluster))
            .await?;
        let caller = check_proof(aws, proof, cluster).await?;
        let node = accept(&caller, expected)?;
        let mut checked = self.checked.lock().expect("identities");
        if checked.len() >= LIMIT {
            checked.retain(|_, (_, at)| at.elapsed() < REMEMBERED);
            if checked.len() >= LIMIT {
                checked.clear();
            }
        }
        checked.insert(key, (node.clone(), Instant::now()));
        Ok(node)
    }

    fn remembered(&self, key: &str) -> Option<String> {
        let checked = self.checked.lock().expect("identities");
        checked
            .get(key)
            .filter(|(_, at)| at.elapsed() < REMEMBERED)
            .map(|(node, _)| node.clone())
    }
}

/// Whom proofs must come from: the account kick's own credentials are in,
/// and the stack's node roles.
async fn expected(aws: &Aws, cluster: &str) -> Result<Expected, ProofError> {
    let own = aws
        .prove_identity(cluster)
        .await
        .map_err(|err| ProofError::Unavailable(format!("signing kick's own identity: {err}")))?;
    let account = check_caller(aws, &own, cluster).await?;
    let stack = crate::spec::names::stack(cluster);
    let mut roles = Vec::new();
    for logical in NODE_ROLES {
        match aws.stack_resource(&stack, logical).await {
            Ok(Some(role)) => roles.push(role),
            Ok(None) => {}
            Err(err) => {
                return Err(ProofError::Unavailable(format!(
                    "reading the node role from stack {stack}: {err}"
                )));
            }
        }
    }
    if roles.is_empty() {
        return Err(ProofError::Unavailable(format!(
            "stack {stack} has no node role yet"
        )));
    }
    Ok(Expected { account, roles })
}

/// The node a caller is, when it is a session of a node role in kick's
/// account named after an instance.
fn accept(caller: &Caller, expected: &Expected) -> Result<String, ProofError> {
    if caller.account != expected.account {
        return Err(ProofError::Refused(format!(
            "the caller is in account {}, not this cluster's",
            caller.account
        )));
    }
    if !expected.roles.contains(&caller.role) {
        return Err(ProofError::Refused(format!(
            "role {} is not this cluster's node role",
            caller.role
        )));
    }
    let instance = caller
        .session
        .strip_prefix("i-")
        .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_hexdigit()));
    if !instance {
        return Err(ProofError::Refused(format!(
            "session {} is not named after an instance",
            caller.session
        )));
    }
    Ok(caller.session.clone())
}

/// The proof a request carries, if any.
pub fn proof(headers: &axum::http::HeaderMap) -> Option<Proof> {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    Some(Proof {
        authorization: text(identity::headers::AUTHORIZATION)?,
        date: text(identity::headers::DATE)?,
        security_token: text(identity::headers::SECURITY_TOKEN),
    })
}

/// Sends a node's proof to STS and names who signed it: an instance
/// role's session. Refused unless the signature covers the cluster's
/// [`identity::SERVER_HEADER`].
pub async fn check_proof(aws: &Aws, proof: &Proof, cluster: &str) -> Result<Caller, ProofError> {
    let arn = signer(aws, proof, cluster).await?;
    Caller::from_arn(&arn)
        .ok_or_else(|| ProofError::Refused(format!("{arn} is not an instance role's session")))
}

/// The account of whoever signed `proof` (any principal).
pub async fn check_caller(aws: &Aws, proof: &Proof, cluster: &str) -> Result<String, ProofError> {
    let arn = signer(aws, proof, cluster).await?;
    arn.split(':')
        .nth(4)
        .filter(|account| !account.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| ProofError::Unavailable(format!("STS named no account in {arn}")))
}

/// The ARN STS names as the signer of `proof`.
async fn signer(aws: &Aws, proof: &Proof, cluster: &str) -> Result<String, ProofError> {
    let signed_headers = proof
        .authorization
        .split(", ")
        .find_map(|part| part.strip_prefix("SignedHeaders="))
        .unwrap_or_default();
    let covered: Vec<&str> = signed_headers.split(';').collect();
    for needed in ["host", "x-amz-date", identity::SERVER_HEADER] {
        if !covered.contains(&needed) {
            return Err(ProofError::Refused(format!(
                "the signature does not cover `{needed}`"
            )));
        }
    }
    if !proof
        .authorization
        .starts_with("AWS4-HMAC-SHA256 Credential=")
    {
        return Err(ProofError::Refused("not a SigV4 signature".into()));
    }
    crate::tls::ensure_provider();
    let client = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(2))
        .timeout(std::time::Duration::from_secs(5))
        .build()
        .map_err(|err| ProofError::Unavailable(err.to_string()))?;
    let mut request = client
        .post(aws.sts_endpoint())
        .header("content-type", identity::CONTENT_TYPE)
        .header(identity::SERVER_HEADER, identity::server(cluster))
        .header("authorization", &proof.authorization)
        .header("x-amz-date", &proof.date)
        .body(identity::BODY);
    if let Some(token) = &proof.security_token {
        request = request.header("x-amz-security-token", token);
    }
    aws.count();
    let response = request
        .send()
        .await
        .map_err(|err| ProofError::Unavailable(format!("STS: {err}")))?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    if status.is_server_error() || status.as_u16() == 429 {
        return Err(ProofError::Unavailable(format!("STS answered {status}")));
    }
    if !status.is_success() {
        let code = element(&text, "Code").unwrap_or("no code");
        return Err(ProofError::Refused(format!(
            "STS answered {status} ({code})"
        )));
    }
    element(&text, "Arn")
        .map(str::to_owned)
        .ok_or_else(|| ProofError::Unavailable("STS's answer names no ARN".into()))
}

/// The text of the first `<name>` element of an STS answer (its XML is
/// flat and its values plain: ARNs, ids, error codes).
fn element<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{name}>"))?;
    Some(xml[start..start + end].trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_session_of_the_node_role_in_the_account_named_after_an_instance_is_a_node() {
        let expected = Expected {
            account: "123456789012".into(),
            roles: vec!["huxley-web-NodeRole-1".into()],
        };
        let caller = |account: &str, role: &str, session: &str| Caller {
            account: account.into(),
            role: role.into(),
            session: session.into(),
        };
        assert_eq!(
            accept(
                &caller("123456789012", "huxley-web-NodeRole-1", "i-0abc12"),
                &expected
            )
            .ok(),
            Some("i-0abc12".to_owned())
        );
        for refused in [
            caller("999999999999", "huxley-web-NodeRole-1", "i-0abc12"),
            caller("123456789012", "huxley-web-OtherRole", "i-0abc12"),
            caller("123456789012", "huxley-web-NodeRole-1", "bob"),
            caller("123456789012", "huxley-web-NodeRole-1", "i-"),
            caller("123456789012", "huxley-web-NodeRole-1", "i-zz"),
        ] {
            assert!(
                matches!(accept(&refused, &expected), Err(ProofError::Refused(_))),
                "{refused:?}"
            );
        }
    }

    #[test]
    fn elements_are_read_from_sts_answers() {
        let answer = "<GetCallerIdentityResponse><GetCallerIdentityResult>\n<Arn>arn:aws:sts::1:assumed-role/r/i</Arn><UserId>X</UserId></GetCallerIdentityResult></GetCallerIdentityResponse>";
        assert_eq!(
            element(answer, "Arn"),
            Some("arn:aws:sts::1:assumed-role/r/i")
        );
        assert_eq!(element(answer, "Code"), None);
    }
}
