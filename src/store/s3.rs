//! S3-compatible store (AWS S3, MinIO, Garage, Ceph) on aws-sdk-s3.
//!
//! Keys are stored below the URL's prefix in one bucket. Credentials,
//! region and endpoint come from the standard AWS chain (`AWS_*` variables,
//! profiles, instance or pod identity); the settings here override region
//! and endpoint and switch on path-style addressing, which MinIO-style
//! servers need.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream as S3Body;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use tokio_util::io::ReaderStream;

use super::{
    validate_key, ByteStream, Conditional, ObjectMeta, ObjectReader, ObjectStore, Result,
    StoreError,
};

/// Size of each part of a multipart upload, and the size above which an
/// upload uses multipart: S3 takes parts of 5 MiB and more, and 8 MiB keeps
/// the memory per upload small while needing few requests.
pub const MULTIPART_PART_BYTES: usize = 8 * 1024 * 1024;

/// Longest wait for a connection: a storage server on the same network
/// answers in milliseconds, so seconds mean it is down.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest single attempt of a request, enough for one multipart part on a
/// slow link; the SDK retries a timed-out attempt.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);

/// Settings of the S3 store beyond the bucket and prefix.
#[derive(Debug, Clone, Default)]
pub struct S3Settings {
    /// Endpoint URL, such as `http://127.0.0.1:3900`; AWS's when `None`.
    pub endpoint: Option<String>,
    /// Region; the AWS chain's, or `us-east-1`, when `None`.
    pub region: Option<String>,
    /// Address buckets as `endpoint/bucket/key` instead of `bucket.endpoint/key`.
    pub path_style: bool,
}

/// Store in an S3 bucket.
#[derive(Debug, Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    prefix: String,
    settings: S3Settings,
}

impl S3Store {
    /// Builds a client from the AWS chain and `settings`; makes no request.
    pub async fn new(bucket: String, prefix: String, settings: S3Settings) -> Self {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .connect_timeout(CONNECT_TIMEOUT)
                    .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                    .build(),
            )
            .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(3));
        if let Some(endpoint) = &settings.endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        if let Some(region) = &settings.region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        let shared = loader.load().await;
        let mut config = aws_sdk_s3::config::Builder::from(&shared).force_path_style(settings.path_style);
        if shared.region().is_none() {
            config = config.region(aws_config::Region::new("us-east-1"));
        }
        Self {
            client: Client::from_conf(config.build()),
            bucket,
            prefix,
            settings,
        }
    }

    /// Returns the bucket name.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Returns the settings workers need to reach the same store.
    pub fn settings(&self) -> &S3Settings {
        &self.settings
    }

    fn object_key(&self, key: &str) -> Result<String> {
        validate_key(key)?;
        Ok(if self.prefix.is_empty() {
            key.to_owned()
        } else {
            format!("{}/{key}", self.prefix)
        })
    }

    async fn put_multipart(&self, key: &str, object: &str, first: Bytes, mut body: ByteStream, limit: u64) -> Result<u64> {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(object)
            .send()
            .await
            .map_err(|e| backend("put", key, e))?;
        let upload_id = created
            .upload_id()
            .ok_or_else(|| StoreError::backend("put", key, "the server returned no upload id"))?
            .to_owned();
        let uploaded = async {
            let mut parts = Vec::new();
            let mut buffer = BytesMut::from(&first[..]);
            let mut size = first.len() as u64;
            let mut ended = false;
            while !ended {
                while buffer.len() < MULTIPART_PART_BYTES {
                    match body.next().await {
                        Some(chunk) => {
                            let chunk = chunk.map_err(|e| StoreError::backend("put", key, e))?;
                            size += chunk.len() as u64;
                            if size > limit {
                                return Err(StoreError::TooLarge { key: key.to_owned(), limit });
                            }
                            buffer.extend_from_slice(&chunk);
                        }
                        None => {
                            ended = true;
                            break;
                        }
                    }
                }
                if buffer.is_empty() && !parts.is_empty() {
                    break;
                }
                let part_number = parts.len() as i32 + 1;
                let part = buffer.split().freeze();
                let response = self
                    .client
                    .upload_part()
                    .bucket(&self.bucket)
                    .key(object)
                    .upload_id(&upload_id)
                    .part_number(part_number)
                    .body(S3Body::from(part))
                    .send()
                    .await
                    .map_err(|e| backend("put", key, e))?;
                parts.push(
                    CompletedPart::builder()
                        .part_number(part_number)
                        .set_e_tag(response.e_tag().map(str::to_owned))
                        .build(),
                );
            }
            self.client
                .complete_multipart_upload()
                .bucket(&self.bucket)
                .key(object)
                .upload_id(&upload_id)
                .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
                .send()
                .await
                .map_err(|e| backend("put", key, e))?;
            Ok(size)
        }
        .await;
        if uploaded.is_err() {
            // Abort so the server frees the parts; a failure here only
            // leaves parts that the bucket's lifecycle rules clean up.
            if let Err(error) = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(object)
                .upload_id(&upload_id)
                .send()
                .await
            {
                tracing::warn!(s3.key = %object, error = %DisplayErrorContext(&error), "aborting a multipart upload failed");
            }
        }
        uploaded
    }
}

/// Wraps an SDK error, keeping the server's error code and message.
fn backend<E>(operation: &'static str, key: &str, error: SdkError<E>) -> StoreError
where
    E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
{
    StoreError::backend(operation, key, describe(&error))
}

/// Describes an SDK error in one line: the server's code and message when it
/// answered, the transport failure when it did not.
pub fn describe<E>(error: &SdkError<E>) -> String
where
    E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
{
    match error {
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            let code = service.err().code().unwrap_or("no error code");
            let message = service.err().message().unwrap_or("no message");
            format!("HTTP {status} {code}: {message}")
        }
        other => DisplayErrorContext(other).to_string(),
    }
}

/// Returns what to do about a failed store check, from the error text that
/// [`describe`] produced.
pub fn advice(detail: &str) -> &'static str {
    if detail.contains("NoSuchBucket") {
        "the bucket does not exist: create it, or fix the bucket name in JOBGATE_STORE"
    } else if detail.contains("RequestTimeTooSkewed") {
        "this machine's clock differs too much from the storage server's: synchronise it (NTP)"
    } else if detail.contains("InvalidAccessKeyId")
        || detail.contains("SignatureDoesNotMatch")
        || detail.contains("AccessDenied")
        || detail.contains("HTTP 403")
    {
        "the credentials were rejected: check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, \
         and that the key may read and write the bucket"
    } else if detail.contains("dispatch failure")
        || detail.contains("connect")
        || detail.contains("timed out")
        || detail.contains("dns error")
    {
        "the endpoint cannot be reached: check JOBGATE_S3_ENDPOINT (or AWS_ENDPOINT_URL) \
         and that the storage server runs"
    } else {
        "check the store URL, endpoint, region and credentials"
    }
}

fn status_of<E>(error: &SdkError<E>) -> Option<u16> {
    match error {
        SdkError::ServiceError(service) => Some(service.raw().status().as_u16()),
        SdkError::ResponseError(response) => Some(response.raw().status().as_u16()),
        _ => None,
    }
}

#[async_trait]
impl ObjectStore for S3Store {
    async fn get(&self, key: &str) -> Result<Bytes> {
        match self.get_if_none_match(key, None).await? {
            Conditional::Found { bytes, .. } => Ok(bytes),
            Conditional::NotModified => Err(StoreError::backend("get", key, "the server returned 304 Not Modified for an unconditional read")),
        }
    }

    async fn get_if_none_match(&self, key: &str, etag: Option<&str>) -> Result<Conditional> {
        let object = self.object_key(key)?;
        let response = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&object)
            .set_if_none_match(etag.map(str::to_owned))
            .send()
            .await;
        match response {
            Ok(output) => {
                let etag = output.e_tag().map(str::to_owned);
                let bytes = output
                    .body
                    .collect()
                    .await
                    .map_err(|e| StoreError::backend("get", key, e))?
                    .into_bytes();
                Ok(Conditional::Found { bytes, etag })
            }
            Err(error) if status_of(&error) == Some(304) => Ok(Conditional::NotModified),
            Err(error) if status_of(&error) == Some(404) => Err(StoreError::NotFound { key: key.to_owned() }),
            Err(error) => Err(backend("get", key, error)),
        }
    }

    async fn open(&self, key: &str) -> Result<ObjectReader> {
        let object = self.object_key(key)?;
        let output = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&object)
            .send()
            .await
            .map_err(|error| match status_of(&error) {
                Some(404) => StoreError::NotFound { key: key.to_owned() },
                _ => backend("get", key, error),
            })?;
        let size = output.content_length().unwrap_or(0).max(0) as u64;
        let reader = output.body.into_async_read();
        Ok(ObjectReader {
            meta: ObjectMeta { size },
            body: Box::pin(ReaderStream::new(reader)),
        })
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        let object = self.object_key(key)?;
        let output = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(&object)
            .send()
            .await
            .map_err(|error| match status_of(&error) {
                Some(404) => StoreError::NotFound { key: key.to_owned() },
                _ => backend("head", key, error),
            })?;
        Ok(ObjectMeta {
            size: output.content_length().unwrap_or(0).max(0) as u64,
        })
    }

    async fn put(&self, key: &str, body: Bytes) -> Result<()> {
        let object = self.object_key(key)?;
        let content_type = mime_guess::from_path(key).first_or_octet_stream().to_string();
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(&object)
            .content_type(content_type)
            .body(S3Body::from(body))
            .send()
            .await
            .map_err(|e| backend("put", key, e))?;
        Ok(())
    }

    async fn put_stream(&self, key: &str, mut body: ByteStream, limit: u64) -> Result<u64> {
        let object = self.object_key(key)?;
        // Read up to one part: a small object goes up in one request, a
        // larger one continues as a multipart upload.
        let mut first = BytesMut::new();
        while first.len() < MULTIPART_PART_BYTES {
            match body.next().await {
                Some(chunk) => {
                    let chunk = chunk.map_err(|e| StoreError::backend("put", key, e))?;
                    first.extend_from_slice(&chunk);
                    if first.len() as u64 > limit {
                        return Err(StoreError::TooLarge { key: key.to_owned(), limit });
                    }
                }
                None => {
                    let size = first.len() as u64;
                    self.put(key, first.freeze()).await?;
                    return Ok(size);
                }
            }
        }
        self.put_multipart(key, &object, first.freeze(), body, limit).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let object = self.object_key(key)?;
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(&object)
            .send()
            .await
            .map_err(|e| backend("delete", key, e))?;
        Ok(())
    }

    async fn list_children(&self, prefix: &str) -> Result<Vec<String>> {
        let full = format!("{}/", self.object_key(prefix.trim_end_matches('/'))?);
        let mut names = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&full)
            .delimiter("/")
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| backend("list", prefix, e))?;
            for common in page.common_prefixes() {
                if let Some(name) = common.prefix().and_then(|p| p.strip_prefix(&full)) {
                    names.push(name.trim_end_matches('/').to_owned());
                }
            }
            for object in page.contents() {
                if let Some(name) = object.key().and_then(|k| k.strip_prefix(&full)) {
                    names.push(name.to_owned());
                }
            }
        }
        Ok(names)
    }

    async fn check(&self) -> Result<()> {
        let key = ".jobgate-readiness-check";
        self.put(key, Bytes::from_static(b"ok")).await?;
        self.get(key).await?;
        self.delete(key).await
    }

    async fn presign_get(&self, key: &str, expiry: Duration) -> Result<Option<String>> {
        let object = self.object_key(key)?;
        let config = PresigningConfig::expires_in(expiry).map_err(|e| StoreError::backend("presign", key, e))?;
        let request = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&object)
            .presigned(config)
            .await
            .map_err(|e| backend("presign", key, e))?;
        Ok(Some(request.uri().to_owned()))
    }

    async fn presign_put(&self, key: &str, expiry: Duration) -> Result<Option<String>> {
        let object = self.object_key(key)?;
        let config = PresigningConfig::expires_in(expiry).map_err(|e| StoreError::backend("presign", key, e))?;
        let request = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(&object)
            .presigned(config)
            .await
            .map_err(|e| backend("presign", key, e))?;
        Ok(Some(request.uri().to_owned()))
    }

    fn worker_url(&self) -> String {
        if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix)
        }
    }

    fn worker_env(&self) -> Vec<(String, String)> {
        let mut env = Vec::new();
        if let Some(endpoint) = &self.settings.endpoint {
            env.push(("AWS_ENDPOINT_URL_S3".to_owned(), endpoint.clone()));
        }
        if let Some(region) = &self.settings.region {
            env.push(("AWS_REGION".to_owned(), region.clone()));
        }
        env.push((
            "JOBGATE_S3_PATH_STYLE".to_owned(),
            self.settings.path_style.to_string(),
        ));
        env
    }
}
