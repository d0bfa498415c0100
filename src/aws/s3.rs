//! S3: the artifact bucket's objects.

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{Delete, ObjectIdentifier};

use super::{Aws, AwsError};

impl Aws {
    /// An object's bytes, or `None` when the object or bucket is missing.
    pub async fn get_object(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, AwsError> {
        self.count();
        match self.s3.get_object().bucket(bucket).key(key).send().await {
            Ok(output) => {
                let bytes = output.body.collect().await.map_err(|e| AwsError::Other {
                    action: "s3:GetObject".into(),
                    detail: e.to_string(),
                })?;
                Ok(Some(bytes.into_bytes().to_vec()))
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
                self.s3
                    .delete_objects()
                    .bucket(bucket)
                    .delete(delete)
                    .send()
                    .await
                    .map_err(|e| self.err("s3:DeleteObject", e))?;
                deleted += chunk.len();
            }
        }
    }
}
