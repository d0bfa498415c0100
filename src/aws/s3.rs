//! S3: the artifact bucket's objects.

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{Delete, ObjectIdentifier};

use super::{Aws, AwsError};

impl Aws {
    /// An object's bytes, or `None` when the object or bucket is missing.
    pub async fn get_object(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, AwsError> {
        Ok(self
            .get_object_versioned(bucket, key)
            .await?
            .map(|(bytes, _)| bytes))
    }

    /// An object with its ETag, the version a conditional write names.
    pub async fn get_object_versioned(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<Option<(Vec<u8>, String)>, AwsError> {
        self.count();
        match self.s3.get_object().bucket(bucket).key(key).send().await {
            Ok(output) => {
                let etag = output.e_tag().unwrap_or_default().to_owned();
                let bytes = output.body.collect().await.map_err(|e| AwsError::Other {
                    action: "s3:GetObject".into(),
                    detail: e.to_string(),
                })?;
                Ok(Some((bytes.into_bytes().to_vec(), etag)))
            }
            Err(err) => {
                use aws_sdk_s3::error::ProvideErrorMetadata as _;
                if matches!(err.code(), Some("NoSuchKey" | "NoSuchBucket" | "NotFound")) {
                    Ok(None)
                } else {
                    Err(self.err("s3:GetObject", err))
                }
            }
        }
    }

    /// Writes an object only if it is as the writer last saw it: absent
    /// (`If-None-Match: *`) or at `expected`'s ETag (`If-Match`). The new
    /// ETag; [`AwsError::Conflict`] when another writer came first.
    pub async fn put_object_if(
        &self,
        bucket: &str,
        key: &str,
        body: Vec<u8>,
        content_type: &str,
        expected: Option<&str>,
    ) -> Result<String, AwsError> {
        use aws_sdk_s3::error::ProvideErrorMetadata as _;
        self.count();
        let request = self
            .s3
            .put_object()
            .bucket(bucket)
            .key(key)
            .content_type(content_type)
            .body(ByteStream::from(body));
        let request = match expected {
            Some(etag) => request.if_match(etag),
            None => request.if_none_match("*"),
        };
        match request.send().await {
            Ok(output) => Ok(output.e_tag().unwrap_or_default().to_owned()),
            Err(err)
                if matches!(
                    err.code(),
                    Some("PreconditionFailed" | "ConditionalRequestConflict")
                ) || err
                    .raw_response()
                    .is_some_and(|r| r.status().as_u16() == 412) =>
            {
                Err(AwsError::Conflict {
                    action: "s3:PutObject".into(),
                    key: key.to_owned(),
                })
            }
            Err(err) => Err(self.err("s3:PutObject", err)),
        }
    }

    pub async fn object_exists(&self, bucket: &str, key: &str) -> Result<bool, AwsError> {
        self.count();
        match self.s3.head_object().bucket(bucket).key(key).send().await {
            Ok(_) => Ok(true),
            Err(err) => {
                if err.as_service_error().is_some_and(|e| e.is_not_found()) {
                    Ok(false)
                } else {
                    Err(self.err("s3:GetObject", err))
                }
            }
        }
    }

    pub async fn put_object(
        &self,
        bucket: &str,
        key: &str,
        body: Vec<u8>,
        content_type: &str,
    ) -> Result<(), AwsError> {
        self.count();
        self.s3
            .put_object()
            .bucket(bucket)
            .key(key)
            .content_type(content_type)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| self.err("s3:PutObject", e))?;
        Ok(())
    }

    /// Deletes every object version and delete marker; returns how many.
    /// A version S3 will not delete (a lock, a bucket policy) is an error
    /// that names it.
    pub async fn empty_bucket(&self, bucket: &str) -> Result<usize, AwsError> {
        let mut deleted = 0;
        loop {
            self.count();
            let page = match self.s3.list_object_versions().bucket(bucket).send().await {
                Ok(page) => page,
                Err(err) => {
                    use aws_sdk_s3::error::ProvideErrorMetadata as _;
                    if err.code() == Some("NoSuchBucket") {
                        return Ok(deleted);
                    }
                    return Err(self.err("s3:ListBucketVersions", err));
                }
            };
            let mut objects = Vec::new();
            for v in page.versions() {
                objects.push((
                    v.key().unwrap_or_default().to_owned(),
                    v.version_id().map(str::to_owned),
                ));
            }
            for m in page.delete_markers() {
                objects.push((
                    m.key().unwrap_or_default().to_owned(),
                    m.version_id().map(str::to_owned),
                ));
            }
            if objects.is_empty() {
                return Ok(deleted);
            }
            for chunk in objects.chunks(1000) {
                let ids = chunk
                    .iter()
                    .map(|(key, version)| {
                        ObjectIdentifier::builder()
                            .key(key)
                            .set_version_id(version.clone())
                            .build()
                            .map_err(|e| AwsError::Other {
                                action: "s3:DeleteObject".into(),
                                detail: e.to_string(),
                            })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let delete = Delete::builder()
                    .set_objects(Some(ids))
                    .quiet(true)
                    .build()
                    .map_err(|e| AwsError::Other {
                        action: "s3:DeleteObject".into(),
                        detail: e.to_string(),
                    })?;
                self.count();
                let output = self
                    .s3
                    .delete_objects()
                    .bucket(bucket)
                    .delete(delete)
                    .send()
                    .await
                    .map_err(|e| self.err("s3:DeleteObject", e))?;
                // A key S3 would not delete (a lock, a policy) would be
                // listed and sent again forever: said instead.
                if let Some(first) = output.errors().first() {
                    return Err(AwsError::Other {
                        action: "s3:DeleteObject".into(),
                        detail: format!(
                            "s3://{bucket}: {} of {} object versions were not deleted; {}: {} ({})",
                            output.errors().len(),
                            chunk.len(),
                            first.key().unwrap_or_default(),
                            first.code().unwrap_or("no code"),
                            first.message().unwrap_or("no message"),
                        ),
                    });
                }
                deleted += chunk.len();
            }
        }
    }
}
