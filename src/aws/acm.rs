//! ACM: the load balancer's certificate, requested for the cluster's
//! public names and validated by DNS in the public zone.

use aws_sdk_acm::types::{RecordType, Tag, ValidationMethod};

use super::{Aws, AwsError};

/// A certificate as Huxley needs to know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certificate {
    pub arn: String,
    /// Its names: the domain name first, then the other SANs, sorted.
    pub names: Vec<String>,
    /// `ISSUED`, `PENDING_VALIDATION`, `FAILED`, ...
    pub status: String,
    /// The CNAME records ACM checks, (name, value), without trailing dots;
    /// empty until ACM has made them.
    pub validation: Vec<(String, String)>,
    /// Whether ACM has named the validation record of every name.
    pub complete: bool,
    /// What uses it (load balancers' ARNs).
    pub in_use_by: Vec<String>,
}

impl Certificate {
    pub fn issued(&self) -> bool {
        self.status == "ISSUED"
    }
}

/// The tag that marks a certificate as a cluster's.
pub const CLUSTER_TAG: &str = "huxley:cluster";

impl Aws {
    /// The certificates tagged as `cluster`'s, described: only those for
    /// names in `domain` are looked at closer.
    pub async fn cluster_certificates(
        &self,
        cluster: &str,
        domain: &str,
    ) -> Result<Vec<Certificate>, AwsError> {
        let mut found = Vec::new();
        for arn in self.domain_certificates(domain).await? {
            self.count();
            let tags = self
                .acm
                .list_tags_for_certificate()
                .certificate_arn(&arn)
                .send()
                .await
                .map_err(|e| self.err("acm:ListTagsForCertificate", e))?;
            let ours = tags
                .tags()
                .iter()
                .any(|t| t.key() == CLUSTER_TAG && t.value() == Some(cluster));
            if ours && let Some(certificate) = self.certificate(&arn).await? {
                found.push(certificate);
            }
        }
        Ok(found)
    }

    /// The ARNs of the account's certificates (whoever made them) whose
    /// domain name is `domain` or in it, sorted; failed ones included.
    pub async fn domain_certificates(&self, domain: &str) -> Result<Vec<String>, AwsError> {
        let suffix = format!(".{domain}");
        let mut arns = Vec::new();
        let mut pages = self.acm.list_certificates().into_paginator().send();
        while let Some(page) = pages.next().await {
            self.count();
            let page = page.map_err(|e| self.err("acm:ListCertificates", e))?;
            arns.extend(
                page.certificate_summary_list()
                    .iter()
                    .filter(|c| {
                        c.domain_name()
                            .is_some_and(|d| d == domain || d.ends_with(&suffix))
                    })
                    .filter_map(|c| c.certificate_arn().map(str::to_owned)),
            );
        }
        arns.sort();
        Ok(arns)
    }

    /// A certificate by ARN; `None` when it does not exist.
    pub async fn certificate(&self, arn: &str) -> Result<Option<Certificate>, AwsError> {
        use aws_sdk_s3::error::ProvideErrorMetadata as _;
        self.count();
        let output = match self
            .acm
            .describe_certificate()
            .certificate_arn(arn)
            .send()
            .await
        {
            Ok(output) => output,
            Err(err) if err.code() == Some("ResourceNotFoundException") => return Ok(None),
            Err(err) => return Err(self.err("acm:DescribeCertificate", err)),
        };
        let Some(detail) = output.certificate() else {
            return Ok(None);
        };
        let mut names: Vec<String> = detail
            .subject_alternative_names()
            .iter()
            .filter(|n| Some(n.as_str()) != detail.domain_name())
            .cloned()
            .collect();
        names.sort();
        names.dedup();
        if let Some(domain) = detail.domain_name() {
            names.insert(0, domain.to_owned());
        }
        let complete = detail
            .domain_validation_options()
            .iter()
            .all(|v| v.resource_record().is_some());
        let mut validation: Vec<(String, String)> = detail
            .domain_validation_options()
            .iter()
            .filter_map(|v| v.resource_record())
            .filter(|r| r.r#type() == &RecordType::Cname)
            .map(|r| {
                (
                    r.name().trim_end_matches('.').to_owned(),
                    r.value().trim_end_matches('.').to_owned(),
                )
            })
            .collect();
        validation.sort();
        validation.dedup();
        Ok(Some(Certificate {
            arn: arn.to_owned(),
            names,
            status: detail
                .status()
                .map_or_else(String::new, |s| s.as_str().to_owned()),
            validation,
            complete,
            in_use_by: detail.in_use_by().to_vec(),
        }))
    }

    /// Requests a certificate for `names` (the first is its domain name),
    /// validated by DNS and tagged as `cluster`'s; its ARN. The same
    /// names within an hour give the same certificate (ACM's idempotency
    /// token), so an apply run twice does not request two.
    pub async fn request_certificate(
        &self,
        cluster: &str,
        names: &[String],
    ) -> Result<String, AwsError> {
        let Some((domain, others)) = names.split_first() else {
            return Err(AwsError::Other {
                action: "acm:RequestCertificate".into(),
                detail: "a certificate needs at least one name".into(),
            });
        };
        let token: String = crate::digest::sha256(format!("{cluster}\n{}", names.join("\n")))
            .chars()
            .take(32)
            .collect();
        let tag = |key: &str, value: &str| {
            Tag::builder()
                .key(key)
                .value(value)
                .build()
                .map_err(|e| AwsError::Other {
                    action: "building an ACM request".into(),
                    detail: e.to_string(),
                })
        };
        self.count();
        let output = self
            .acm
            .request_certificate()
            .domain_name(domain)
            .set_subject_alternative_names((!others.is_empty()).then(|| names.to_vec()))
            .validation_method(ValidationMethod::Dns)
            .idempotency_token(token)
            .tags(tag(CLUSTER_TAG, cluster)?)
            .tags(tag("Name", &format!("huxley-{cluster}"))?)
            .send()
            .await
            .map_err(|e| self.err("acm:RequestCertificate", e))?;
        output
            .certificate_arn()
            .map(str::to_owned)
            .ok_or_else(|| AwsError::Other {
                action: "acm:RequestCertificate".into(),
                detail: "ACM answered without the certificate's ARN".into(),
            })
    }

    /// Deletes a certificate: `false` when ACM still counts it in use (a
    /// load balancer deleted a moment ago still does for a while).
    pub async fn delete_certificate(&self, arn: &str) -> Result<bool, AwsError> {
        use aws_sdk_s3::error::ProvideErrorMetadata as _;
        self.count();
        match self
            .acm
            .delete_certificate()
            .certificate_arn(arn)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(err) if err.code() == Some("ResourceNotFoundException") => Ok(true),
            Err(err) if err.code() == Some("ResourceInUseException") => Ok(false),
            Err(err) => Err(self.err("acm:DeleteCertificate", err)),
        }
    }
}
