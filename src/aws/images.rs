//! The cluster's image repositories (ECR): what `destroy` counts before it
//! asks, and deletes before the stack goes.

use super::{Aws, AwsError};

/// A repository and the images it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repository {
    pub name: String,
    /// Image digests with their tags (`imageDigest`, `imageTag`).
    pub images: Vec<(Option<String>, Option<String>)>,
}

impl Aws {
    /// The account registry's authorization for the caller's role: base64
    /// of `AWS:<password>`, as Docker's `config.json` keeps an `auth`
    /// (valid 12 hours).
    pub async fn registry_authorization(&self) -> Result<String, AwsError> {
        self.count();
        let answer = self
            .ecr
            .get_authorization_token()
            .send()
            .await
            .map_err(|e| self.err("ecr:GetAuthorizationToken", e))?;
        Ok(answer
            .authorization_data()
            .first()
            .and_then(|d| d.authorization_token())
            .unwrap_or_default()
            .to_owned())
    }

    /// The repositories whose names start with `prefix/`, with their images.
    pub async fn repositories(&self, prefix: &str) -> Result<Vec<Repository>, AwsError> {
        let mut names = Vec::new();
        let mut pages = self.ecr.describe_repositories().into_paginator().send();
        while let Some(page) = pages.next().await {
            self.count();
            let page = page.map_err(|e| self.err("ecr:DescribeRepositories", e))?;
            names.extend(
                page.repositories()
                    .iter()
                    .filter_map(|r| r.repository_name())
                    .filter(|n| n.starts_with(&format!("{prefix}/")))
                    .map(str::to_owned),
            );
        }
        names.sort();
        let mut repositories = Vec::new();
        for name in names {
            let mut images = Vec::new();
            let mut pages = self
                .ecr
                .list_images()
                .repository_name(&name)
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                self.count();
                let page = page.map_err(|e| self.err("ecr:ListImages", e))?;
                images.extend(page.image_ids().iter().map(|id| {
                    (
                        id.image_digest().map(str::to_owned),
                        id.image_tag().map(str::to_owned),
                    )
                }));
            }
            repositories.push(Repository { name, images });
        }
        Ok(repositories)
    }

    /// Deletes every image of `repository` (as listed), 100 at a time (the
    /// API's limit).
    pub async fn delete_images(&self, repository: &Repository) -> Result<(), AwsError> {
        use aws_sdk_ecr::types::ImageIdentifier;
        for chunk in repository.images.chunks(100) {
            let ids: Vec<ImageIdentifier> = chunk
                .iter()
                .map(|(digest, tag)| {
                    ImageIdentifier::builder()
                        .set_image_digest(digest.clone())
                        .set_image_tag(tag.clone())
                        .build()
                })
                .collect();
            self.count();
            self.ecr
                .batch_delete_image()
                .repository_name(&repository.name)
                .set_image_ids(Some(ids))
                .send()
                .await
                .map_err(|e| self.err("ecr:BatchDeleteImage", e))?;
        }
        Ok(())
    }
}

impl Aws {
    /// A password for `docker login` to the account's ECR registry (good
    /// for 12 hours), from `GetAuthorizationToken`.
    pub async fn registry_password(&self) -> Result<String, AwsError> {
        let token = self.registry_authorization().await?;
        // base64 of `AWS:<password>`.
        let decoded = aws_smithy_types::base64::decode(&token).unwrap_or_default();
        let text = String::from_utf8_lossy(&decoded);
        Ok(text
            .split_once(':')
            .map(|(_, password)| password.to_owned())
            .unwrap_or_default())
    }
}
