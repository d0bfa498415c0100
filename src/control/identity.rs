//! Nodes' identities, as STS proves them ([`crate::aws::identity`]).
//!
//! A node's request carries a signed `GetCallerIdentity`; kick sends it to
//! STS and accepts the caller when it is a session of the cluster's node
//! role (looked up in the cluster's stack), in kick's own account, named
//! after an instance: that instance id is the node. A checked proof is
//! remembered for [`REMEMBERED`] (never past the 15 minutes STS takes a
//! signature for), so a node costs STS one call every few minutes, not one
//! a request; a refused one for [`REFUSED_FOR`], and at most [`AT_ONCE`]
//! proofs are checked with STS at a time (503 beyond), so a flood of
//! forged proofs cannot make kick throttle STS for the real nodes.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use crate::aws::identity::{Caller, Proof, ProofError};
use crate::aws::{Aws, identity};

/// How long a checked proof is taken without asking STS again: shorter
/// than the 15 minutes STS accepts a signature for, and than the agents'
/// re-signing period.
pub const REMEMBERED: Duration = Duration::from_secs(5 * 60);

/// How long STS takes a signature for, from its `x-amz-date`.
const SIGNATURE_LIFE: Duration = Duration::from_secs(15 * 60);

/// How long a refused proof is refused without asking STS again.
pub const REFUSED_FOR: Duration = Duration::from_secs(60);

/// How many proofs are checked with STS at once.
pub const AT_ONCE: usize = 16;

/// How long whom proofs must come from is kept before it is read again
/// (the node role may be replaced by an update of the stack).
const EXPECTED_FOR: Duration = Duration::from_secs(10 * 60);

/// How long reading whom proofs must come from may take while a value is
/// known.
const READ_LIMIT: Duration = Duration::from_secs(5);

/// The stack's roles whose sessions are nodes, by logical id.
pub const NODE_ROLES: &[&str] = &["NodeRole"];

/// At most this many proofs are remembered (a node has one at a time, two
/// while it re-signs); beyond it the expired go, then all.
const LIMIT: usize = 4096;

/// Whom a proof must come from: kick's own account, one of the node roles.
#[derive(Debug, Clone)]
struct Expected {
    account: String,
    roles: Vec<String>,
}

/// What a proof was found to be, until when.
type Verdict = (Result<String, String>, Instant);

/// Checked proofs, and whom they must come from.
#[derive(Debug)]
pub struct Identities {
    checked: Mutex<HashMap<String, Verdict>>,
    expected: tokio::sync::Mutex<Option<(Expected, Instant)>>,
    checks: tokio::sync::Semaphore,
    client: OnceLock<reqwest::Client>,
}

impl Default for Identities {
    fn default() -> Self {
        Self {
            checked: Mutex::default(),
            expected: tokio::sync::Mutex::default(),
            checks: tokio::sync::Semaphore::new(AT_ONCE),
            client: OnceLock::new(),
        }
    }
}

impl Identities {
    /// The node `proof` proves, checking it with STS unless it was checked
    /// lately.
    pub async fn node(
        &self,
        aws: &Aws,
        cluster: &str,
        proof: &Proof,
    ) -> Result<String, ProofError> {
        let signed_at = well_formed(proof).map_err(ProofError::Refused)?;
        let life_left = (signed_at + SIGNATURE_LIFE)
            .duration_since(SystemTime::now())
            .map_err(|_| ProofError::Refused("the proof is over 15 minutes old".into()))?;
        let key = crate::digest::sha256(format!(
            "{}\n{}\n{}",
            proof.authorization,
            proof.date,
            proof.security_token.as_deref().unwrap_or_default()
        ));
        if let Some(verdict) = self.remembered(&key) {
            return verdict.map_err(ProofError::Refused);
        }
        let expected = self.expected(aws, cluster, EXPECTED_FOR).await?;
        let Ok(_permit) = self.checks.try_acquire() else {
            return Err(ProofError::Unavailable(
                "too many proofs are being checked; try again".into(),
            ));
        };
        let client = self.client.get_or_init(client);
        let verdict = match check_proof(client, aws, proof, cluster).await {
            Ok(caller) => match accept(&caller, &expected) {
                // The node role or account may have changed under an
                // update of the stack: read them again (at most once a
                // minute) before refusing.
                Err(ProofError::Refused(_)) if caller.session.starts_with("i-") => {
                    let fresh = self.expected(aws, cluster, REFUSED_FOR).await?;
                    accept(&caller, &fresh)
                }
                decided => decided,
            },
            Err(err) => Err(err),
        };
        let until = match &verdict {
            Ok(_) => REMEMBERED.min(life_left),
            Err(ProofError::Refused(_)) => REFUSED_FOR,
            // STS could not be asked: nothing is learned.
            Err(ProofError::Unavailable(_)) => return verdict,
        };
        let remembered = verdict
            .as_ref()
            .map(String::clone)
            .map_err(|err| match err {
                ProofError::Refused(why) | ProofError::Unavailable(why) => why.clone(),
            });
        let mut checked = self.checked.lock().expect("identities");
        if checked.len() >= LIMIT {
            // Refusals go first: a flood of forged proofs must not evict
            // the real nodes' accepted ones.
            checked.retain(|_, (verdict, until)| verdict.is_ok() && *until > Instant::now());
            if checked.len() >= LIMIT {
                checked.clear();
            }
        }
        checked.insert(key, (remembered, Instant::now() + until));
        verdict
    }

    fn remembered(&self, key: &str) -> Option<Result<String, String>> {
        let checked = self.checked.lock().expect("identities");
        checked
            .get(key)
            .filter(|(_, until)| *until > Instant::now())
            .map(|(verdict, _)| verdict.clone())
    }

    /// Whom proofs must come from, read again when older than `age`. When
    /// reading fails or takes over [`READ_LIMIT`] while a value is known,
    /// the known value serves (a throttled CloudFormation must not lock
    /// every node out), and is read again a minute later.
    async fn expected(
        &self,
        aws: &Aws,
        cluster: &str,
        age: Duration,
    ) -> Result<Expected, ProofError> {
        let mut held = self.expected.lock().await;
        if let Some((expected, at)) = held.as_ref()
            && at.elapsed() < age
        {
            return Ok(expected.clone());
        }
        let client = self.client.get_or_init(client);
        let read = tokio::time::timeout(READ_LIMIT, expected(client, aws, cluster)).await;
        match (read, held.as_mut()) {
            (Ok(Ok(fresh)), _) => {
                *held = Some((fresh.clone(), Instant::now()));
                Ok(fresh)
            }
            (failed, Some((known, at))) => {
                if let Ok(Err(err)) = failed {
                    eprintln!("kick: keeping the node role it knows: {err}");
                }
                // Tried again in a minute, not at every request.
                *at = Instant::now()
                    .checked_sub(EXPECTED_FOR - REFUSED_FOR)
                    .unwrap_or(*at);
                Ok(known.clone())
            }
            (Ok(Err(err)), None) => Err(err),
            (Err(_), None) => Err(ProofError::Unavailable(
                "reading the node role took too long; try again".into(),
            )),
        }
    }
}

/// The one HTTP client proofs are sent to STS with.
fn client() -> reqwest::Client {
    crate::tls::ensure_provider();
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5))
        .build()
        .expect("an HTTP client")
}

/// Checks a proof's shape before STS is asked: exactly a SigV4
/// `Authorization` for STS (`Credential=<key>/<day>/<region>/sts/aws4_request,
/// SignedHeaders=…, Signature=<64 hex>`) over `host`, `x-amz-date` and the
/// cluster's header, of the day its `x-amz-date` names. When it was signed.
fn well_formed(proof: &Proof) -> Result<SystemTime, String> {
    let malformed = |what: &str| format!("not a SigV4 signature for STS: {what}");
    let rest = proof
        .authorization
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .ok_or_else(|| malformed("the algorithm"))?;
    let parts: Vec<&str> = rest.split(", ").collect();
    let [credential, signed, signature] = parts.as_slice() else {
        return Err(malformed("three parts"));
    };
    let credential = credential
        .strip_prefix("Credential=")
        .ok_or_else(|| malformed("the credential"))?;
    let scope: Vec<&str> = credential.split('/').collect();
    let [key, day, region, service, terminal] = scope.as_slice() else {
        return Err(malformed("the credential scope"));
    };
    if key.is_empty() || region.is_empty() || *service != "sts" || *terminal != "aws4_request" {
        return Err(malformed("the credential scope"));
    }
    if proof.date.get(..8) != Some(*day) {
        return Err(malformed("the day"));
    }
    let signed = signed
        .strip_prefix("SignedHeaders=")
        .ok_or_else(|| malformed("the signed headers"))?;
    let covered: Vec<&str> = signed.split(';').collect();
    for needed in ["host", "x-amz-date", identity::SERVER_HEADER] {
        if !covered.contains(&needed) {
            return Err(format!("the signature does not cover `{needed}`"));
        }
    }
    let signature = signature
        .strip_prefix("Signature=")
        .ok_or_else(|| malformed("the signature"))?;
    if signature.len() != 64
        || !signature
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return Err(malformed("the signature"));
    }
    amz_date(&proof.date).ok_or_else(|| malformed("x-amz-date"))
}

/// An `x-amz-date` (`20261130T235959Z`) as a time.
fn amz_date(date: &str) -> Option<SystemTime> {
    if date.len() != 16 || date.get(8..9) != Some("T") || !date.ends_with('Z') {
        return None;
    }
    let n = |a: usize, b: usize| date.get(a..b)?.parse::<i64>().ok();
    let (y, m, d) = (n(0, 4)?, n(4, 6)?, n(6, 8)?);
    let (hh, mm, ss) = (n(9, 11)?, n(11, 13)?, n(13, 15)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let seconds = u64::try_from(days * 86_400 + hh * 3600 + mm * 60 + ss).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(seconds))
}

/// Whom proofs must come from: the account kick's own credentials are in,
/// and the stack's node roles. Every failure here is kick's, not the
/// node's: 503, never 401.
async fn expected(
    client: &reqwest::Client,
    aws: &Aws,
    cluster: &str,
) -> Result<Expected, ProofError> {
    let own = aws
        .prove_identity(cluster)
        .await
        .map_err(|err| ProofError::Unavailable(format!("signing kick's own identity: {err}")))?;
    let account = match signer(client, aws, &own, cluster).await {
        Ok(arn) => arn
            .split(':')
            .nth(4)
            .filter(|account| !account.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| ProofError::Unavailable(format!("STS named no account in {arn}")))?,
        Err(ProofError::Refused(why) | ProofError::Unavailable(why)) => {
            return Err(ProofError::Unavailable(format!(
                "STS does not take kick's own identity: {why}"
            )));
        }
    };
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
/// role's session.
async fn check_proof(
    client: &reqwest::Client,
    aws: &Aws,
    proof: &Proof,
    cluster: &str,
) -> Result<Caller, ProofError> {
    let arn = signer(client, aws, proof, cluster).await?;
    Caller::from_arn(&arn)
        .ok_or_else(|| ProofError::Refused(format!("{arn} is not an instance role's session")))
}

/// STS's error codes that say it is busy or failing, not that the proof is
/// wrong.
const STS_BUSY: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
    "InternalFailure",
    "ServiceUnavailable",
];

/// The ARN STS names as the signer of `proof`.
async fn signer(
    client: &reqwest::Client,
    aws: &Aws,
    proof: &Proof,
    cluster: &str,
) -> Result<String, ProofError> {
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
    let code = element(&text, "Code").unwrap_or("no code");
    if status.is_server_error() || status.as_u16() == 429 || STS_BUSY.contains(&code) {
        return Err(ProofError::Unavailable(format!(
            "STS answered {status} ({code})"
        )));
    }
    if !status.is_success() {
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

    /// A throttled or unreachable STS or CloudFormation must not lock every
    /// node out: the node role kick knows serves until it can be read
    /// again; with none known, the node hears 503 (kick's problem).
    #[tokio::test]
    async fn a_known_node_role_serves_while_it_cannot_be_read_again() {
        let nowhere = crate::testing::aws("http://127.0.0.1:9", "us-west-2").await;
        let identities = Identities::default();
        *identities.expected.lock().await = Some((
            Expected {
                account: "123456789012".into(),
                roles: vec!["huxley-web-NodeRole-1".into()],
            },
            Instant::now(),
        ));
        let kept = identities
            .expected(&nowhere, "web", Duration::ZERO)
            .await
            .expect("the known role");
        assert_eq!(kept.roles, ["huxley-web-NodeRole-1"]);
        let unknown = Identities::default()
            .expected(&nowhere, "web", Duration::ZERO)
            .await;
        assert!(
            matches!(unknown, Err(ProofError::Unavailable(_))),
            "{unknown:?}"
        );
    }

    #[test]
    fn x_amz_dates_are_read_as_utc() {
        let at = |d: &str| {
            amz_date(d).map(|t| {
                t.duration_since(SystemTime::UNIX_EPOCH)
                    .expect("after 1970")
                    .as_secs()
            })
        };
        assert_eq!(at("19700101T000000Z"), Some(0));
        assert_eq!(at("20000301T000000Z"), Some(951_868_800));
        assert_eq!(at("20261130T235959Z"), Some(1_796_083_199));
        for bad in [
            "20261130T2359Z",
            "2026113OT235959Z",
            "20261330T000000Z",
            "20261130 235959Z",
            "",
        ] {
            assert_eq!(at(bad), None, "{bad}");
        }
    }

    #[test]
    fn only_a_whole_sigv4_signature_for_sts_over_the_clusters_header_is_checked() {
        let good = Proof {
            authorization: format!(
                "AWS4-HMAC-SHA256 Credential=ASIAX/20261130/us-west-2/sts/aws4_request, SignedHeaders=content-type;host;x-amz-date;x-huxley-server, Signature={}",
                "ab".repeat(32)
            ),
            date: "20261130T101010Z".into(),
            security_token: None,
        };
        assert!(well_formed(&good).is_ok());
        let variant = |from: &str, to: &str| Proof {
            authorization: good.authorization.replace(from, to),
            ..good.clone()
        };
        for (proof, why) in [
            (variant(";x-huxley-server", ""), "x-huxley-server"),
            (variant("/sts/", "/s3/"), "credential scope"),
            (variant("20261130/", "20261129/"), "the day"),
            (variant("Signature=ab", "Signature=AB"), "the signature"),
            (
                variant(", Signature=", ", SignedHeaders=host, Signature="),
                "three parts",
            ),
            (
                variant("AWS4-HMAC-SHA256 ", "AWS4-ECDSA-P256-SHA256 "),
                "algorithm",
            ),
        ] {
            let said = well_formed(&proof).expect_err(why);
            assert!(said.contains(why), "{said}");
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
