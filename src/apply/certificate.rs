//! The load balancer's certificate: found or planned by `plan`, requested
//! and validated by `apply` before the stack that serves it changes, old
//! ones deleted once the stack no longer uses them, all of them deleted by
//! `destroy`.
//!
//! The emulator has no CloudFormation model of an ACM certificate, and a
//! certificate's DNS validation must be written into the user's zone (not
//! the stack's), so this is done through the ACM and Route53 APIs with the
//! operator's credentials; the stack takes the ARN as a parameter.

use std::time::Duration;

use super::{ApplyError, Progress};
use crate::aws::acm::Certificate;
use crate::aws::{Aws, RecordChange};
use crate::model::{Config, Ingress};
use crate::plan::{CertificateAction, CertificatePlan, KNOWN_AFTER_APPLY, Plan};
use crate::spec::names::ids;

/// How long apply waits for ACM to issue a certificate: DNS validation
/// usually takes minutes; a certificate still pending then is kept, and
/// the next apply waits for it again.
const ISSUE_WAIT: Duration = Duration::from_secs(45 * 60);
/// How long ACM may take to name a new certificate's validation records.
const RECORDS_WAIT: Duration = Duration::from_secs(120);
/// The TTL of the validation records.
const VALIDATION_TTL: i64 = 300;

/// What the plan does for the certificate, and the stack parameter's
/// value; `None` when the cluster has no load balancer and no
/// certificate of its own.
pub async fn plan(
    config: &Config,
    aws: &Aws,
) -> Result<(Option<CertificatePlan>, Option<String>), ApplyError> {
    let names = config.load_balanced_names();
    // No public zone, no certificate: nothing to look up.
    let Some(domain) = &config.cluster.public_domain else {
        return Ok((None, None));
    };
    let ours = aws
        .cluster_certificates(&config.cluster.name, domain)
        .await?;
    let given = match &config.cluster.ingress {
        Ingress::LoadBalancer {
            certificate_arn: Some(arn),
        } => Some(arn.clone()),
        _ => None,
    };
    let certificate = if names.is_empty() {
        CertificatePlan {
            domain: domain.clone(),
            names: Vec::new(),
            action: CertificateAction::None,
            arn: None,
            status: None,
            retire: ours.iter().map(|c| c.arn.clone()).collect(),
        }
    } else if let Some(arn) = given {
        let status = given_status(aws, &arn, &names).await?;
        CertificatePlan {
            domain: domain.clone(),
            names,
            action: CertificateAction::Given,
            status: Some(status),
            // Not the one named, should it be one Huxley requested.
            retire: ours
                .iter()
                .filter(|c| c.arn != arn)
                .map(|c| c.arn.clone())
                .collect(),
            arn: Some(arn),
        }
    } else {
        // A failed or expired one is retired, and a new one requested.
        let serving = ours
            .iter()
            .find(|c| covers(c, &names) && (c.issued() || c.status == "PENDING_VALIDATION"));
        CertificatePlan {
            domain: domain.clone(),
            action: if serving.is_some() {
                CertificateAction::Keep
            } else {
                CertificateAction::Request
            },
            arn: serving.map(|c| c.arn.clone()),
            status: serving.map(|c| c.status.clone()),
            retire: ours
                .iter()
                .filter(|c| Some(&c.arn) != serving.map(|s| &s.arn))
                .map(|c| c.arn.clone())
                .collect(),
            names,
        }
    };
    if certificate.action == CertificateAction::None && certificate.retire.is_empty() {
        return Ok((None, None));
    }
    let parameter = match certificate.action {
        CertificateAction::None => None,
        CertificateAction::Request => Some(KNOWN_AFTER_APPLY.to_owned()),
        _ => certificate.arn.clone(),
    };
    Ok((Some(certificate), parameter))
}

/// The status of the certificate `certificate-arn` names, refusing one
/// a listener cannot serve: missing, not issued, or not covering every
/// public name (a wildcard covers one label).
async fn given_status(aws: &Aws, arn: &str, names: &[String]) -> Result<String, ApplyError> {
    let fix =
        "fix `certificate-arn` in huxley.toml, or leave it out and `huxley apply` requests one";
    let Some(certificate) = aws.certificate(arn).await? else {
        return Err(ApplyError::Refused(format!(
            "certificate-arn {arn} does not exist in ACM in {}\nhelp: {fix}",
            aws.region()
        )));
    };
    if !certificate.issued() {
        return Err(ApplyError::Refused(format!(
            "certificate-arn {arn} is {}, and a load balancer serves only an issued certificate\nhelp: {fix}",
            certificate.status
        )));
    }
    let uncovered: Vec<&String> = names
        .iter()
        .filter(|name| !certificate.names.iter().any(|n| name_matches(n, name)))
        .collect();
    if !uncovered.is_empty() {
        return Err(ApplyError::Refused(format!(
            "certificate-arn {arn} does not cover {}\nhelp: {fix}",
            uncovered
                .iter()
                .map(|n| n.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    Ok(certificate.status)
}

/// Whether a certificate name (`www.example.com`, `*.example.com`)
/// covers a host name.
fn name_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(zone) => name
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest.eq_ignore_ascii_case(zone)),
        None => pattern.eq_ignore_ascii_case(name),
    }
}

/// Whether a certificate's names are exactly `names`.
fn covers(certificate: &Certificate, names: &[String]) -> bool {
    let mut have = certificate.names.clone();
    have.sort();
    have.dedup();
    have == names
}

/// Before the stack changes: the certificate the load balancer serves,
/// requested if need be, its validation records in the public zone,
/// issued. The plan with its ARN as the stack's parameter.
pub async fn ensure(aws: &Aws, plan: &Plan, progress: &mut Progress) -> Result<Plan, ApplyError> {
    let mut plan = plan.clone();
    let Some(certificate) = &plan.certificate else {
        return Ok(plan);
    };
    let arn = match certificate.action {
        CertificateAction::None | CertificateAction::Given => return Ok(plan),
        CertificateAction::Keep => certificate.arn.clone().unwrap_or_default(),
        CertificateAction::Request => {
            let arn = aws
                .request_certificate(&plan.cluster, &certificate.names)
                .await?;
            progress.line(&format!(
                "requested certificate {arn} for {}",
                certificate.names.join(", ")
            ));
            arn
        }
    };
    let zone = plan.desired.public_zone_id.clone().ok_or_else(|| {
        ApplyError::Refused(
            "the certificate is validated in the public zone, and there is none".into(),
        )
    })?;
    let issued = validate(aws, &zone, &arn, progress).await?;
    if !issued.issued() {
        return Err(ApplyError::Failed {
            cause: format!(
                "ACM has not issued {arn} after {} minutes (it is {})",
                ISSUE_WAIT.as_secs() / 60,
                issued.status
            ),
            state: "unchanged: the stack waits for the certificate; check that the public zone is the domain's delegated zone, then run `huxley apply` again".into(),
        });
    }
    plan.desired
        .parameters
        .insert(ids::CERTIFICATE_PARAMETER.to_owned(), arn.clone());
    if let Some(p) = plan
        .parameters
        .iter_mut()
        .find(|p| p.name == ids::CERTIFICATE_PARAMETER)
    {
        p.after = arn;
    }
    Ok(plan)
}

/// Writes a certificate's validation records and waits until it is issued
/// (or failed, or [`ISSUE_WAIT`] has passed); the certificate then.
async fn validate(
    aws: &Aws,
    zone: &str,
    arn: &str,
    progress: &mut Progress,
) -> Result<Certificate, ApplyError> {
    let started = tokio::time::Instant::now();
    let gone = || {
        ApplyError::Refused(format!(
            "the certificate {arn} is gone: run `huxley plan` again"
        ))
    };
    let mut certificate = loop {
        let found = aws.certificate(arn).await?.ok_or_else(gone)?;
        if found.complete || found.issued() || started.elapsed() > RECORDS_WAIT {
            break found;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    // Written on every apply, so ACM's renewals find them; and again as
    // ACM names more of them.
    let mut written: Vec<(String, String)> = Vec::new();
    let mut wait = Duration::from_secs(2);
    loop {
        let fresh: Vec<RecordChange> = certificate
            .validation
            .iter()
            .filter(|record| !written.contains(record))
            .map(|(name, value)| validation_record(name, value, true))
            .collect();
        if !fresh.is_empty() {
            super::write_records(aws, zone, &fresh).await?;
            progress.line(&format!(
                "wrote {} in the public zone",
                crate::diagnostic::plural(fresh.len(), "certificate validation record")
            ));
            written.clone_from(&certificate.validation);
        }
        if certificate.issued() {
            break;
        }
        if certificate.status == "FAILED" || certificate.status == "VALIDATION_TIMED_OUT" {
            return Err(ApplyError::Failed {
                cause: format!("ACM could not validate {arn}: it is {}", certificate.status),
                state: "unchanged: the stack was not updated; run `huxley apply` again to request a new one".into(),
            });
        }
        if started.elapsed() > ISSUE_WAIT {
            return Ok(certificate);
        }
        progress.line(&format!(
            "waiting for ACM to issue {arn} ({}, {}s)",
            certificate.status,
            started.elapsed().as_secs()
        ));
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(15));
        certificate = aws.certificate(arn).await?.ok_or_else(gone)?;
    }
    progress.line(&format!("certificate {arn} is issued"));
    Ok(certificate)
}

fn validation_record(name: &str, value: &str, upsert: bool) -> RecordChange {
    RecordChange {
        upsert,
        name: name.to_owned(),
        kind: "CNAME".to_owned(),
        ttl: VALIDATION_TTL,
        values: vec![value.to_owned()],
        alias: None,
    }
}

/// After the stack changed: deletes the certificates the plan retires
/// (one the load balancer still uses is left, and said), with the
/// validation records no kept certificate shares; how many it deleted.
pub async fn retire(aws: &Aws, plan: &Plan, progress: &mut Progress) -> Result<usize, ApplyError> {
    let Some(certificate) = &plan.certificate else {
        return Ok(0);
    };
    if certificate.retire.is_empty() {
        return Ok(0);
    }
    let kept = records_in_use(aws, &certificate.domain, &certificate.retire).await?;
    let mut deleted = 0;
    for arn in &certificate.retire {
        let Some(old) = aws.certificate(arn).await? else {
            continue;
        };
        if !old.in_use_by.is_empty() {
            progress.line(&format!(
                "note: {arn} is still used by {}; it is left for the next apply",
                old.in_use_by.join(", ")
            ));
            continue;
        }
        remove(
            aws,
            plan.desired.public_zone_id.as_deref(),
            &old,
            &kept,
            progress,
        )
        .await?;
        deleted += 1;
        progress.line(&format!("deleted certificate {arn}"));
    }
    Ok(deleted)
}

/// The validation records of every certificate for names in `domain`
/// but those in `leaving`, whoever made them: ACM gives one account the
/// same record for the same name, so another certificate of the name
/// (the new one, or one of the user's) renews with it.
async fn records_in_use(
    aws: &Aws,
    domain: &str,
    leaving: &[String],
) -> Result<Vec<(String, String)>, ApplyError> {
    let mut records = Vec::new();
    for arn in aws.domain_certificates(domain).await? {
        if leaving.contains(&arn) {
            continue;
        }
        if let Some(certificate) = aws.certificate(&arn).await? {
            records.extend(certificate.validation);
        }
    }
    Ok(records)
}

/// How long a delete waits for ACM to stop counting a certificate in
/// use (for a while after its load balancer or listener went).
const IN_USE_WAIT: Duration = Duration::from_secs(10 * 60);

/// Deletes a certificate, waiting while ACM still counts it in use, and
/// its validation records that are not in `shared`.
async fn remove(
    aws: &Aws,
    zone: Option<&str>,
    certificate: &Certificate,
    shared: &[(String, String)],
    progress: &mut Progress,
) -> Result<(), ApplyError> {
    let started = tokio::time::Instant::now();
    while !aws.delete_certificate(&certificate.arn).await? {
        if started.elapsed() > IN_USE_WAIT {
            return Err(ApplyError::Failed {
                cause: format!(
                    "ACM still counts {} in use after {} minutes",
                    certificate.arn,
                    IN_USE_WAIT.as_secs() / 60
                ),
                state: "the certificate and its validation records are left; delete them in ACM once nothing uses it".into(),
            });
        }
        progress.line(&format!(
            "waiting for ACM to release {} ({}s)",
            certificate.arn,
            started.elapsed().as_secs()
        ));
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
    let Some(zone) = zone else {
        return Ok(());
    };
    let present = aws.list_records(zone).await?;
    let changes: Vec<RecordChange> = certificate
        .validation
        .iter()
        .filter(|record| !shared.contains(record))
        .filter_map(|(name, value)| {
            // Deleted exactly as Route53 holds it.
            let live = present.iter().find(|r| {
                &r.name == name
                    && r.kind == "CNAME"
                    && r.values.iter().any(|v| v.trim_end_matches('.') == value)
            })?;
            let mut change = validation_record(name, value, false);
            change.ttl = live.ttl.unwrap_or(VALIDATION_TTL);
            change.values.clone_from(&live.values);
            Some(change)
        })
        .collect();
    if !changes.is_empty() {
        super::write_records(aws, zone, &changes).await?;
    }
    Ok(())
}

/// `destroy`, once the stack is gone: every certificate of the cluster
/// and its validation records; how many.
pub async fn destroy(
    aws: &Aws,
    config: &Config,
    zone: Option<&str>,
    progress: &mut Progress,
) -> Result<usize, ApplyError> {
    let Some(domain) = &config.cluster.public_domain else {
        return Ok(0);
    };
    let ours = aws
        .cluster_certificates(&config.cluster.name, domain)
        .await?;
    let leaving: Vec<String> = ours.iter().map(|c| c.arn.clone()).collect();
    let shared = records_in_use(aws, domain, &leaving).await?;
    for certificate in &ours {
        remove(aws, zone, certificate, &shared, progress).await?;
        progress.line(&format!(
            "deleted certificate {} and its validation records",
            certificate.arn
        ));
    }
    Ok(ours.len())
}

#[cfg(test)]
mod tests {
    use super::name_matches;

    #[test]
    fn a_wildcard_covers_one_label() {
        assert!(name_matches("*.example.com", "www.example.com"));
        assert!(name_matches("www.Example.com", "www.example.com"));
        assert!(!name_matches("*.example.com", "example.com"));
        assert!(!name_matches("*.example.com", "a.b.example.com"));
        assert!(!name_matches("www.example.com", "api.example.com"));
    }
}
