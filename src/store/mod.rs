//! Object storage for job records, progress, results, outputs and uploads.
//!
//! One trait, [`ObjectStore`], with a filesystem backend ([`fs::FsStore`]).
//! Both use the key layout of [`jobgate_worker::protocol`], so workers and
//! gateway replicas agree on where each document lives.

pub mod fs;
pub mod s3;

use std::fmt;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;

/// A stream of body chunks, as read from or written to the store.
pub type ByteStream = Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>;

/// Errors of store operations.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The key does not exist.
    #[error("object {key:?} not found")]
    NotFound {
        /// Key that was looked up.
        key: String,
    },
    /// The key is not a safe relative path.
    #[error("invalid object key {key:?}: {why}")]
    InvalidKey {
        /// Rejected key.
        key: String,
        /// Rule the key breaks.
        why: &'static str,
    },
    /// A streamed write went past its size limit; nothing was stored.
    #[error("object {key:?} is larger than the limit of {limit} bytes")]
    TooLarge {
        /// Key that was being written.
        key: String,
        /// Limit in bytes.
        limit: u64,
    },
    /// The backend failed.
    #[error("store {operation} of {key:?} failed")]
    Backend {
        /// Operation that failed, such as `get` or `put`.
        operation: &'static str,
        /// Key involved.
        key: String,
        /// Underlying error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl StoreError {
    /// Wraps a backend error with the operation and key it happened on.
    pub fn backend(
        operation: &'static str,
        key: &str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self::Backend {
            operation,
            key: key.to_owned(),
            source: source.into(),
        }
    }
}

/// Result alias for store operations.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Size and type of a stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Size in bytes.
    pub size: u64,
}

/// Outcome of a conditional read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conditional {
    /// The object still has the given ETag.
    NotModified,
    /// The object's current content and ETag.
    Found {
        /// Content.
        bytes: Bytes,
        /// Version tag for the next conditional read.
        etag: Option<String>,
    },
}

/// An object opened for streaming.
pub struct ObjectReader {
    /// Size and type.
    pub meta: ObjectMeta,
    /// Body chunks.
    pub body: ByteStream,
}

/// Storage for job documents, outputs and uploads.
///
/// Keys are relative paths such as `jobs/<id>/progress.json`; backends add
/// their own prefix. Writes are atomic: a reader sees the old object or the
/// new one, never a part.
#[async_trait]
pub trait ObjectStore: Send + Sync + 'static {
    /// Reads a whole object into memory. Meant for small JSON documents.
    async fn get(&self, key: &str) -> Result<Bytes>;

    /// Reads an object unless its ETag still equals `etag`.
    async fn get_if_none_match(&self, key: &str, etag: Option<&str>) -> Result<Conditional> {
        let _ = etag;
        Ok(Conditional::Found {
            bytes: self.get(key).await?,
            etag: None,
        })
    }

    /// Opens an object for streaming.
    async fn open(&self, key: &str) -> Result<ObjectReader>;

    /// Returns an object's size without reading it.
    async fn head(&self, key: &str) -> Result<ObjectMeta>;

    /// Writes a whole object.
    async fn put(&self, key: &str, body: Bytes) -> Result<()>;

    /// Writes an object from a stream, rejecting it with
    /// [`StoreError::TooLarge`] once it passes `limit` bytes. Returns the size.
    async fn put_stream(&self, key: &str, body: ByteStream, limit: u64) -> Result<u64>;

    /// Deletes an object; deleting a missing object is not an error.
    async fn delete(&self, key: &str) -> Result<()>;

    /// Lists the names directly below `prefix` (which ends with `/`): the
    /// next path segment of every key under it, each once, in any order.
    async fn list_children(&self, prefix: &str) -> Result<Vec<String>>;

    /// Checks that the store can be read and written.
    async fn check(&self) -> Result<()>;

    /// Returns a URL that reads the object without credentials until
    /// `expiry`, or `None` when the store has no such URLs.
    async fn presign_get(&self, key: &str, expiry: Duration) -> Result<Option<String>> {
        let _ = (key, expiry);
        Ok(None)
    }

    /// Returns a URL that writes the object with a PUT without credentials
    /// until `expiry`, or `None` when the store has no such URLs.
    async fn presign_put(&self, key: &str, expiry: Duration) -> Result<Option<String>> {
        let _ = (key, expiry);
        Ok(None)
    }

    /// Returns the URL that workers receive in `JOBGATE_STORE`.
    fn worker_url(&self) -> String;

    /// Returns further environment variables workers need to reach the store,
    /// such as the S3 endpoint; never credentials.
    fn worker_env(&self) -> Vec<(String, String)> {
        Vec::new()
    }
}

/// Where the store lives, parsed from `JOBGATE_STORE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// `file:///abs/path`: a folder on the local filesystem.
    File(PathBuf),
    /// `s3://bucket/prefix`: an S3-compatible bucket.
    S3 {
        /// Bucket name.
        bucket: String,
        /// Key prefix without leading or trailing slash; may be empty.
        prefix: String,
    },
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(path) => write!(f, "file://{}", path.display()),
            Self::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            Self::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

impl std::str::FromStr for StoreUrl {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        if let Some(path) = s.strip_prefix("file://") {
            let path = PathBuf::from(path);
            if !path.is_absolute() {
                return Err(format!(
                    "{s:?} is not an absolute file URL; write file:///absolute/path"
                ));
            }
            return Ok(Self::File(path));
        }
        if let Some(rest) = s.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(format!("{s:?} names no bucket; write s3://bucket/prefix"));
            }
            return Ok(Self::S3 {
                bucket: bucket.to_owned(),
                prefix: prefix.trim_matches('/').to_owned(),
            });
        }
        Err(format!(
            "{s:?} is not a store URL; write file:///absolute/path or s3://bucket/prefix"
        ))
    }
}

/// Checks that a key is a relative path of normal segments.
pub fn validate_key(key: &str) -> Result<()> {
    let invalid = |why| StoreError::InvalidKey {
        key: key.to_owned(),
        why,
    };
    if key.is_empty() {
        return Err(invalid("empty key"));
    }
    if key.len() > 1024 {
        return Err(invalid("longer than 1024 bytes"));
    }
    if key.starts_with('/') {
        return Err(invalid("absolute path"));
    }
    if key.contains('\\') || key.chars().any(char::is_control) {
        return Err(invalid("backslash or control character"));
    }
    for segment in key.split('/') {
        match segment {
            "" => return Err(invalid("empty path segment")),
            "." | ".." => return Err(invalid("dot segment")),
            _ => {}
        }
    }
    Ok(())
}

/// Opens the store a URL names; `s3` applies to `s3://` URLs only.
pub async fn open(url: &StoreUrl, s3: &s3::S3Settings) -> Result<Arc<dyn ObjectStore>> {
    match url {
        StoreUrl::File(root) => Ok(Arc::new(fs::FsStore::new(root.clone()).await?)),
        StoreUrl::S3 { bucket, prefix } => Ok(Arc::new(
            s3::S3Store::new(bucket.clone(), prefix.clone(), s3.clone()).await,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_url_parses_both_schemes() {
        assert_eq!(
            "file:///var/lib/jobgate".parse::<StoreUrl>().unwrap(),
            StoreUrl::File("/var/lib/jobgate".into())
        );
        assert_eq!(
            "s3://bucket/a/b/".parse::<StoreUrl>().unwrap(),
            StoreUrl::S3 {
                bucket: "bucket".into(),
                prefix: "a/b".into()
            }
        );
        assert!("file://relative".parse::<StoreUrl>().is_err());
        assert!("s3:///prefix".parse::<StoreUrl>().is_err());
        assert!("http://x".parse::<StoreUrl>().is_err());
    }

    #[test]
    fn key_validation_rejects_escapes() {
        assert!(validate_key("jobs/x/progress.json").is_ok());
        for bad in ["", "/etc/passwd", "a/../b", "a//b", "./a", "a\\b", "a\nb", "a/"] {
            assert!(validate_key(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
