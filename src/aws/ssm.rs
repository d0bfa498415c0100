//! SSM Parameter Store: the cluster's tokens and the apps' secrets.

use std::collections::BTreeMap;

use super::{Aws, AwsError};

impl Aws {
    /// The names of the parameters under `path` (recursively), sorted.
    pub async fn parameter_names(&self, path: &str) -> Result<Vec<String>, AwsError> {
        let mut names = Vec::new();
        let mut pages = self
            .ssm
            .get_parameters_by_path()
            .path(path)
            .recursive(true)
            .with_decryption(false)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            self.count();
            let page = page.map_err(|e| self.err("ssm:GetParametersByPath", e))?;
            names.extend(
                page.parameters()
                    .iter()
                    .filter_map(|p| p.name().map(str::to_owned)),
            );
        }
        names.sort();
        Ok(names)
    }

    /// The parameters that exist among `names`, their values decrypted or
    /// not.
    async fn get_parameters(
        &self,
        names: &[String],
        decrypt: bool,
    ) -> Result<Vec<aws_sdk_ssm::types::Parameter>, AwsError> {
        let mut found = Vec::new();
        // GetParameters takes at most 10 names.
        for chunk in names.chunks(10) {
            self.count();
            let output = self
                .ssm
                .get_parameters()
                .set_names(Some(chunk.to_vec()))
                .with_decryption(decrypt)
                .send()
                .await
                .map_err(|e| self.err("ssm:GetParameters", e))?;
            found.extend(output.parameters().iter().cloned());
        }
        Ok(found)
    }

    /// Decrypted values of the parameters that exist among `names`.
    pub async fn secure_parameters(
        &self,
        names: &[String],
    ) -> Result<BTreeMap<String, String>, AwsError> {
        Ok(self
            .get_parameters(names, true)
            .await?
            .into_iter()
            .filter_map(|p| Some((p.name?, p.value?)))
            .collect())
    }

    /// The version and last change (seconds since the epoch) of each
    /// parameter among `names` that exists; values are not decrypted, and
    /// not kept.
    pub async fn parameter_versions(
        &self,
        names: &[String],
    ) -> Result<BTreeMap<String, (i64, Option<i64>)>, AwsError> {
        Ok(self
            .get_parameters(names, false)
            .await?
            .into_iter()
            .filter_map(|p| {
                let changed = p.last_modified_date().map(|d| d.secs());
                Some((p.name?, (p.version, changed)))
            })
            .collect())
    }

    /// Writes a SecureString parameter, over the value it had; its new
    /// version.
    pub async fn put_secret(
        &self,
        name: &str,
        value: &str,
        description: &str,
    ) -> Result<i64, AwsError> {
        Ok(self
            .put_secure(name, value, description, true)
            .await?
            .unwrap_or_default())
    }

    /// A daemon's bearer token: the SecureString parameter `name`,
    /// decrypted, which `huxley apply` creates; an error that names the
    /// parameter and says how to make it.
    pub async fn token(&self, name: &str) -> Result<String, String> {
        let values = self
            .secure_parameters(&[name.to_owned()])
            .await
            .map_err(|e| format!("cannot read the token {name} from SSM: {e}"))?;
        match values.get(name).map(|t| t.trim()) {
            Some(token) if !token.is_empty() => Ok(token.to_owned()),
            Some(_) => Err(format!(
                "the SSM parameter {name} is empty: run `huxley apply`"
            )),
            None => Err(format!("SSM has no parameter {name}: run `huxley apply`")),
        }
    }

    /// Creates a SecureString parameter; one that exists is left as it is.
    pub async fn create_secure_parameter(
        &self,
        name: &str,
        value: &str,
        description: &str,
    ) -> Result<(), AwsError> {
        self.put_secure(name, value, description, false)
            .await
            .map(|_| ())
    }

    /// PutParameter of a SecureString: its new version, or none when it
    /// exists and `overwrite` is false (it is left as it is).
    async fn put_secure(
        &self,
        name: &str,
        value: &str,
        description: &str,
        overwrite: bool,
    ) -> Result<Option<i64>, AwsError> {
        self.count();
        let result = self
            .ssm
            .put_parameter()
            .name(name)
            .value(value)
            .description(description)
            .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
            .overwrite(overwrite)
            .send()
            .await;
        match result {
            Ok(output) => Ok(Some(output.version())),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_parameter_already_exists()) =>
            {
                Ok(None)
            }
            Err(err) => Err(self.err("ssm:PutParameter", err)),
        }
    }

    /// Deletes parameters (those already gone are no error).
    pub async fn delete_parameters(&self, names: &[String]) -> Result<(), AwsError> {
        for chunk in names.chunks(10) {
            self.count();
            self.ssm
                .delete_parameters()
                .set_names(Some(chunk.to_vec()))
                .send()
                .await
                .map_err(|e| self.err("ssm:DeleteParameters", e))?;
        }
        Ok(())
    }
}
