//! The `s3://bucket/prefix` store on aws-sdk-s3, for AWS S3 and compatible
//! servers such as MinIO, Garage and Ceph.
//!
//! The key `a/b` is the object `prefix/a/b` in the bucket, or `a/b` when the
//! prefix is empty. Endpoint, region and credentials come from the standard
//! AWS chain of aws-config: `AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL`,
//! `AWS_REGION` (`us-east-1` when the chain has none), `AWS_ACCESS_KEY_ID` and
//! `AWS_SECRET_ACCESS_KEY`, profiles, web identity and instance roles.
//! `JOBGATE_S3_PATH_STYLE=true` addresses the bucket in the path
//! (`endpoint/bucket/key`), which servers without bucket subdomains need.
//!
//! The client makes up to [`SDK_MAX_ATTEMPTS`] attempts per request (standard
//! retry mode, with jittered exponential backoff). A connection gets
//! [`CONNECT_TIMEOUT`], each attempt [`ATTEMPT_TIMEOUT`], and a transfer whose
//! body stalls fails (the SDK's stalled-stream protection), so a dead endpoint
//! cannot hang an operation. Errors say whether they are transient
//! ([`StoreError::is_transient`]); retrying whole operations is left to
//! [`super::RetryPolicy`].

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_s3::config::RequestChecksumCalculation;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::{ByteStream, ByteStreamError, Length};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::sync::OnceCell;

use super::{validate_key, StoreError};

/// Environment variable that switches on path-style addressing: `true` or `false`.
pub const ENV_PATH_STYLE: &str = "JOBGATE_S3_PATH_STYLE";
/// Region used when the AWS chain sets none.
pub const DEFAULT_REGION: &str = "us-east-1";
/// Size above which a file goes up as a multipart upload, and the size of its parts.
/// S3 takes parts of 5 MiB and more, and 8 MiB needs few requests while a
/// failed part stays cheap to send again.
pub const MULTIPART_PART_SIZE: u64 = 8 * 1024 * 1024;
/// Maximum number of parts of one multipart upload, set by S3. Larger files
/// get larger parts.
const MAX_PARTS: u64 = 10_000;
/// Attempts of one request by the S3 client, including the first.
pub const SDK_MAX_ATTEMPTS: u32 = 5;
/// Base of the client's exponential backoff between attempts.
const SDK_INITIAL_BACKOFF: Duration = Duration::from_millis(500);
/// Maximum backoff of the client between attempts.
const SDK_MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Time allowed to open a connection to the endpoint.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time allowed for one attempt of a request until its response headers
/// arrive, including sending a body of up to one multipart part. A download's
/// body is guarded by the stalled-stream protection instead.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(120);

/// Error codes of S3 and compatible servers that ask the client to slow down
/// or to send the request again.
const TRANSIENT_CODES: &[&str] = &[
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestThrottled",
    "RequestLimitExceeded",
    "TooManyRequests",
    "RequestTimeout",
    "InternalError",
    "ServiceUnavailable",
];

/// A store in an S3 bucket.
#[derive(Debug, Clone)]
pub struct S3Store {
    bucket: String,
    prefix: String,
    path_style: bool,
    client: Arc<OnceCell<Client>>,
}

impl S3Store {
    /// Creates a store for a bucket and a key prefix without a trailing slash
    /// (empty for the bucket's root). Makes no request.
    pub fn new(bucket: impl Into<String>, prefix: impl Into<String>, path_style: bool) -> S3Store {
        S3Store {
            bucket: bucket.into(),
            prefix: prefix.into(),
            path_style,
            client: Arc::new(OnceCell::new()),
        }
    }

    /// Parses `s3://bucket/prefix` and reads `JOBGATE_S3_PATH_STYLE`.
    pub(crate) fn from_url(url: &str) -> Result<S3Store, StoreError> {
        let (bucket, prefix) = parse_url(url)?;
        let path_style = match std::env::var(ENV_PATH_STYLE) {
            Ok(value) => parse_bool(&value).ok_or_else(|| StoreError::InvalidSetting {
                name: ENV_PATH_STYLE,
                value: value.clone(),
                reason: "expected true or false".into(),
            })?,
            Err(_) => false,
        };
        Ok(S3Store::new(bucket, prefix, path_style))
    }

    /// Returns the bucket name.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Returns the key prefix, empty for the bucket's root.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Returns whether the bucket is addressed in the path instead of the host name.
    pub fn path_style(&self) -> bool {
        self.path_style
    }

    /// Returns the client, building it from the AWS chain on first use.
    async fn client(&self) -> &Client {
        self.client
            .get_or_init(|| build_client(self.path_style))
            .await
    }

    fn object_key(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_owned()
        } else {
            format!("{}/{key}", self.prefix)
        }
    }

    pub(super) async fn get(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        let output = self
            .client()
            .await
            .get_object()
            .bucket(&self.bucket)
            .key(self.object_key(key))
            .send()
            .await
            .map_err(|error| self.read_error("get", key, error))?;
        let bytes = output
            .body
            .collect()
            .await
            .map_err(|error| self.body_error("get", key, error))?;
        Ok(bytes.to_vec())
    }

    pub(super) async fn put(&self, key: &str, bytes: Bytes) -> Result<(), StoreError> {
        self.client()
            .await
            .put_object()
            .bucket(&self.bucket)
            .key(self.object_key(key))
            .content_type(content_type_of(key))
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(|error| self.error("put", key, error))?;
        Ok(())
    }

    /// Uploads a file in one request, or as a multipart upload when it is
    /// larger than [`MULTIPART_PART_SIZE`]. The file is streamed from disk.
    pub(super) async fn put_file(&self, key: &str, path: &Path) -> Result<u64, StoreError> {
        let size = tokio::fs::metadata(path)
            .await
            .map_err(|source| local_file_error(path, source))?
            .len();
        if size > MULTIPART_PART_SIZE {
            return self.put_multipart(key, path, size).await;
        }

        let body = ByteStream::read_from()
            .path(path)
            .length(Length::Exact(size))
            .build()
            .await
            .map_err(|error| local_file_error(path, error.into()))?;
        self.client()
            .await
            .put_object()
            .bucket(&self.bucket)
            .key(self.object_key(key))
            .content_type(content_type_of(key))
            .body(body)
            .send()
            .await
            .map_err(|error| self.error("put", key, error))?;
        Ok(size)
    }

    /// Uploads a file in parts. On failure it aborts the upload, so that the
    /// server drops the parts sent so far.
    async fn put_multipart(&self, key: &str, path: &Path, size: u64) -> Result<u64, StoreError> {
        let client = self.client().await;
        let object = self.object_key(key);
        let created = client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(&object)
            .content_type(content_type_of(key))
            .send()
            .await
            .map_err(|error| self.error("multipart upload", key, error))?;
        let Some(upload_id) = created.upload_id().map(str::to_owned) else {
            return Err(StoreError::S3 {
                operation: "multipart upload",
                key: key.to_owned(),
                location: self.location(key),
                detail: "the server returned no upload id".into(),
                transient: false,
            });
        };

        let result = self.upload_parts(key, &upload_id, path, size).await;
        if let Err(error) = &result {
            tracing::debug!(s3.key = %object, %error, "aborting the multipart upload");
            let aborted = client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(&object)
                .upload_id(&upload_id)
                .send()
                .await;
            if let Err(abort_error) = aborted {
                // The parts stay until a lifecycle rule of the bucket removes
                // incomplete uploads. The upload's own error is the one returned.
                tracing::warn!(
                    s3.key = %object,
                    error = %DisplayErrorContext(&abort_error),
                    "failed to abort a multipart upload, so its parts stay in the bucket"
                );
            }
        }
        result.map(|()| size)
    }

    async fn upload_parts(
        &self,
        key: &str,
        upload_id: &str,
        path: &Path,
        size: u64,
    ) -> Result<(), StoreError> {
        let client = self.client().await;
        let object = self.object_key(key);
        let part_size = part_size_for(size);
        let mut parts = Vec::new();
        let mut offset = 0;

        while offset < size {
            let length = part_size.min(size - offset);
            // S3 numbers parts from 1, and `part_size_for` keeps them at most 10000.
            let part_number = parts.len() as i32 + 1;
            let body = ByteStream::read_from()
                .path(path)
                .offset(offset)
                .length(Length::Exact(length))
                .build()
                .await
                .map_err(|error| local_file_error(path, error.into()))?;
            let response = client
                .upload_part()
                .bucket(&self.bucket)
                .key(&object)
                .upload_id(upload_id)
                .part_number(part_number)
                .content_length(length as i64)
                .body(body)
                .send()
                .await
                .map_err(|error| self.error("multipart upload", key, error))?;
            parts.push(
                CompletedPart::builder()
                    .part_number(part_number)
                    .set_e_tag(response.e_tag().map(str::to_owned))
                    .build(),
            );
            offset += length;
        }

        client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(&object)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|error| self.error("multipart upload", key, error))?;
        Ok(())
    }

    /// Streams an object into a temporary file next to `path` and renames it
    /// over `path`, so that `path` never contains a partial download.
    pub(super) async fn get_to_file(&self, key: &str, path: &Path) -> Result<u64, StoreError> {
        let output = self
            .client()
            .await
            .get_object()
            .bucket(&self.bucket)
            .key(self.object_key(key))
            .send()
            .await
            .map_err(|error| self.read_error("get", key, error))?;

        let temporary = temporary_path(path)?;
        let result = self.write_body(key, output.body, &temporary).await;
        let result = match result {
            Ok(size) => tokio::fs::rename(&temporary, path)
                .await
                .map(|()| size)
                .map_err(|source| local_file_error(path, source)),
            Err(error) => Err(error),
        };
        if result.is_err() {
            // The partial file is useless, and the download's error matters
            // more than a failure to remove it.
            let _ = tokio::fs::remove_file(&temporary).await;
        }
        result
    }

    async fn write_body(
        &self,
        key: &str,
        mut body: ByteStream,
        temporary: &Path,
    ) -> Result<u64, StoreError> {
        let mut file = tokio::fs::File::create(temporary)
            .await
            .map_err(|source| local_file_error(temporary, source))?;
        let mut size = 0;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|error| self.body_error("get", key, error))?;
            file.write_all(&chunk)
                .await
                .map_err(|source| local_file_error(temporary, source))?;
            size += chunk.len() as u64;
        }
        file.sync_all()
            .await
            .map_err(|source| local_file_error(temporary, source))?;
        Ok(size)
    }

    fn location(&self, key: &str) -> String {
        format!("s3://{}/{}", self.bucket, self.object_key(key))
    }

    /// Converts the error of a read request: a missing key becomes
    /// [`StoreError::NotFound`], everything else as in [`Self::error`].
    fn read_error<E>(&self, operation: &'static str, key: &str, error: SdkError<E>) -> StoreError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        if is_missing_key(&error) {
            return StoreError::NotFound {
                key: key.to_owned(),
            };
        }
        self.error(operation, key, error)
    }

    /// Converts an SDK error into [`StoreError::S3`], with whether it is
    /// transient and, for configuration errors, the fix.
    fn error<E>(&self, operation: &'static str, key: &str, error: SdkError<E>) -> StoreError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let transient = is_transient(&error);
        let mut detail = describe(&error);
        if let Some(fix) = self.fix_for(&error) {
            detail.push_str("; ");
            detail.push_str(&fix);
        }
        StoreError::S3 {
            operation,
            key: key.to_owned(),
            location: self.location(key),
            detail,
            transient,
        }
    }

    /// Converts an error while reading a response body: the connection broke
    /// or stalled, which is transient.
    fn body_error(&self, operation: &'static str, key: &str, error: ByteStreamError) -> StoreError {
        StoreError::S3 {
            operation,
            key: key.to_owned(),
            location: self.location(key),
            detail: format!(
                "failed to read the response body: {}",
                DisplayErrorContext(&error)
            ),
            transient: true,
        }
    }

    /// Returns what to change when an error comes from the configuration, not the server's state.
    fn fix_for<E>(&self, error: &SdkError<E>) -> Option<String>
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let bucket = &self.bucket;
        let status = status_of(error);
        let code = match error {
            SdkError::ServiceError(service) => service.err().code(),
            _ => None,
        };
        match (status, code) {
            (_, Some("NoSuchBucket")) => Some(format!(
                "the bucket {bucket:?} does not exist at this endpoint; create it, or correct \
                 the bucket in JOBGATE_STORE (s3://bucket/prefix) or the endpoint in \
                 AWS_ENDPOINT_URL_S3"
            )),
            (
                _,
                Some(
                    "InvalidAccessKeyId"
                    | "SignatureDoesNotMatch"
                    | "InvalidToken"
                    | "ExpiredToken",
                ),
            )
            | (Some(401), _) => Some(format!(
                "the server rejected the credentials for bucket {bucket:?}; check \
                 AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN), or the \
                 role that the AWS chain picks up"
            )),
            (_, Some("AccessDenied")) | (Some(403), _) => Some(format!(
                "the credentials may not access bucket {bucket:?}; allow s3:GetObject, \
                 s3:PutObject and s3:AbortMultipartUpload on {}* to the key or role",
                self.location("").trim_start_matches("s3://")
            )),
            (_, Some("PermanentRedirect" | "AuthorizationHeaderMalformed")) | (Some(301), _) => {
                Some(format!(
                "the bucket {bucket:?} is in another region; set AWS_REGION to the bucket's region"
            ))
            }
            // Virtual-hosted addressing puts the bucket into the host name,
            // which fails to resolve on most self-hosted servers.
            (_, _) if is_dns_failure(error) && !self.path_style => Some(format!(
                "if the server has no bucket subdomains (MinIO, Garage and most \
                     self-hosted servers), set {ENV_PATH_STYLE}=true"
            )),
            _ => None,
        }
    }
}

/// Builds a client from the AWS chain with the worker's retry and timeout settings.
async fn build_client(path_style: bool) -> Client {
    let retry = RetryConfig::standard()
        .with_max_attempts(SDK_MAX_ATTEMPTS)
        .with_initial_backoff(SDK_INITIAL_BACKOFF)
        .with_max_backoff(SDK_MAX_BACKOFF);
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .operation_attempt_timeout(ATTEMPT_TIMEOUT)
        .build();
    let shared = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(retry)
        .timeout_config(timeouts)
        .load()
        .await;

    // Checksums "when supported" send file bodies with aws-chunked encoding
    // and a trailing checksum, which some compatible servers reject (Garage
    // 2.5 rejects them with "Invalid payload signature"). With "when required" the
    // body goes as a plain payload, which the tests against Garage pass.
    let mut config = aws_sdk_s3::config::Builder::from(&shared)
        .force_path_style(path_style)
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired);
    if shared.region().is_none() {
        config = config.region(Region::new(DEFAULT_REGION));
    }
    Client::from_conf(config.build())
}

/// Splits `s3://bucket/prefix` into the bucket and the prefix without slashes at its ends.
fn parse_url(url: &str) -> Result<(String, String), StoreError> {
    let invalid = |reason: &str| StoreError::InvalidUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let rest = url
        .strip_prefix("s3://")
        .ok_or_else(|| invalid("expected a URL starting with s3://"))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(invalid(
            "the bucket is missing; expected s3://bucket or s3://bucket/prefix",
        ));
    }
    if bucket.contains(['?', '#']) || bucket.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid(
            "the bucket name contains a space, control character, `?` or `#`",
        ));
    }
    let prefix = prefix.trim_end_matches('/');
    if !prefix.is_empty() {
        validate_key(prefix)
            .map_err(|error| invalid(&format!("the prefix is invalid: {error}")))?;
    }
    Ok((bucket.to_owned(), prefix.to_owned()))
}

fn parse_bool(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" => Some(true),
        "false" | "0" | "" => Some(false),
        _ => None,
    }
}

/// Returns the part size for a file: [`MULTIPART_PART_SIZE`], or a whole
/// number of MiB large enough to stay within [`MAX_PARTS`] parts.
fn part_size_for(size: u64) -> u64 {
    const MIB: u64 = 1024 * 1024;
    let minimum = size.div_ceil(MAX_PARTS).div_ceil(MIB) * MIB;
    minimum.max(MULTIPART_PART_SIZE)
}

fn content_type_of(key: &str) -> String {
    mime_guess::from_path(key)
        .first_or_octet_stream()
        .essence_str()
        .to_owned()
}

fn local_file_error(path: &Path, source: io::Error) -> StoreError {
    StoreError::LocalFile {
        path: path.to_owned(),
        source,
    }
}

/// Returns a unique path in the same folder as `path`, creating the folder.
fn temporary_path(path: &Path) -> Result<PathBuf, StoreError> {
    let parent = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty());
    let parent = parent.unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|source| local_file_error(parent, source))?;
    let file_name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(parent.join(format!(".{file_name}.{}.tmp", uuid::Uuid::now_v7())))
}

fn status_of<E>(error: &SdkError<E>) -> Option<u16> {
    match error {
        SdkError::ServiceError(service) => Some(service.raw().status().as_u16()),
        SdkError::ResponseError(response) => Some(response.raw().status().as_u16()),
        _ => None,
    }
}

/// Returns true for a 404 about the key, but not for a missing bucket or upload.
fn is_missing_key<E>(error: &SdkError<E>) -> bool
where
    E: ProvideErrorMetadata,
{
    let SdkError::ServiceError(service) = error else {
        return false;
    };
    // A HEAD response, or a server that sends no error body, has no code.
    service.raw().status().as_u16() == 404
        && matches!(service.err().code(), None | Some("NoSuchKey" | "NotFound"))
}

/// Returns true for timeouts, connection failures, HTTP 5xx, 408 and 429, and throttling codes.
fn is_transient<E>(error: &SdkError<E>) -> bool
where
    E: ProvideErrorMetadata,
{
    match error {
        SdkError::TimeoutError(_) => true,
        // A user error is a request that the connector refused to send, such as an invalid URI.
        SdkError::DispatchFailure(failure) => !failure.is_user(),
        // The server returned something that is not a valid S3 response, such
        // as a proxy's error page or a body cut short.
        SdkError::ResponseError(response) => {
            let status = response.raw().status();
            is_transient_status(status.as_u16()) || !status.is_client_error()
        }
        SdkError::ServiceError(service) => {
            is_transient_status(service.raw().status().as_u16())
                || service
                    .err()
                    .code()
                    .is_some_and(|code| TRANSIENT_CODES.contains(&code))
        }
        // Building the request failed, for example because no credentials were found.
        _ => false,
    }
}

fn is_dns_failure<E>(error: &SdkError<E>) -> bool
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    matches!(error, SdkError::DispatchFailure(_)) && describe(error).contains("dns error")
}

fn is_transient_status(status: u16) -> bool {
    status >= 500 || status == 408 || status == 429
}

/// Describes an SDK error in one line: the server's status, code and message
/// when it responded, or else the transport failure.
fn describe<E>(error: &SdkError<E>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_with_prefix_parsed() {
        let (bucket, prefix) = parse_url("s3://jobgate/env/prod/").unwrap();
        assert_eq!(bucket, "jobgate");
        assert_eq!(prefix, "env/prod");
    }

    #[test]
    fn url_without_prefix_parsed() {
        for url in ["s3://jobgate", "s3://jobgate/"] {
            let (bucket, prefix) = parse_url(url).unwrap();
            assert_eq!(bucket, "jobgate", "{url}");
            assert_eq!(prefix, "", "{url}");
        }
    }

    #[test]
    fn url_invalid_forms_rejected() {
        for url in [
            "s3://",
            "s3:///prefix",
            "s3://bucket/a//b",
            "s3://bucket/../x",
            "s3://my bucket/x",
        ] {
            let error = parse_url(url).unwrap_err();
            assert!(
                matches!(error, StoreError::InvalidUrl { .. }),
                "{url}: {error}"
            );
        }
    }

    #[test]
    fn path_style_values_parsed() {
        assert_eq!(parse_bool("true"), Some(true));
        assert_eq!(parse_bool(" TRUE "), Some(true));
        assert_eq!(parse_bool("1"), Some(true));
        assert_eq!(parse_bool("false"), Some(false));
        assert_eq!(parse_bool(""), Some(false));
        assert_eq!(parse_bool("yes please"), None);
    }

    #[test]
    fn part_size_stays_within_part_limit() {
        assert_eq!(part_size_for(20 * 1024 * 1024), MULTIPART_PART_SIZE);
        let huge = 200 * 1024 * 1024 * 1024;
        let part_size = part_size_for(huge);
        assert!(huge.div_ceil(part_size) <= MAX_PARTS);
        assert_eq!(part_size % (1024 * 1024), 0);
    }

    #[test]
    fn object_key_joins_prefix() {
        assert_eq!(
            S3Store::new("b", "p/q", true).object_key("jobs/x"),
            "p/q/jobs/x"
        );
        assert_eq!(S3Store::new("b", "", true).object_key("jobs/x"), "jobs/x");
    }
}
