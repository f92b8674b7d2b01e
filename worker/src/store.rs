//! The object store that a worker reads inputs from and writes documents to.
//!
//! [`Store::from_url`] parses the value of `JOBGATE_STORE`:
//!
//! - `file:///abs/path`: a folder on the local filesystem; a key is a relative
//!   path below it. The path is taken literally, without percent-decoding.
//! - `s3://bucket/prefix`: keys are objects below `prefix/` in an S3 bucket
//!   (see the `s3` module; needs the crate feature `s3`, which `tasks` turns on).
//!
//! Keys are validated before any filesystem or network access (see
//! [`validate_key`]), so no key can reach outside the store's root or prefix.
//!
//! Store operations make one attempt, apart from the S3 client's own retries
//! of single requests. [`RetryPolicy`] retries whole operations after
//! transient errors; [`crate::Job`] uses it for inputs, outputs and the result.

pub mod retry;
#[cfg(feature = "s3")]
pub mod s3;

use std::io;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use thiserror::Error;

pub use retry::RetryPolicy;
#[cfg(feature = "s3")]
pub use s3::S3Store;

/// Errors of store operations.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The store URL could not be parsed.
    #[error("invalid store URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// Reason the URL was rejected.
        reason: String,
    },
    /// The URL names an S3 store, but the crate was built without its `s3` feature.
    #[error(
        "the s3 store is not supported by this build of jobgate-worker (store URL {url:?}); \
         build it with the feature `s3` or `tasks`"
    )]
    S3Unsupported {
        /// The URL as given.
        url: String,
    },
    /// An environment variable that configures the store has an invalid value.
    #[error("invalid value {value:?} of {name}: {reason}")]
    InvalidSetting {
        /// The variable's name.
        name: &'static str,
        /// The value as given.
        value: String,
        /// Reason the value was rejected, with the expected form.
        reason: String,
    },
    /// A key is empty, absolute or contains an empty, `.` or `..` segment.
    #[error("invalid store key {key:?}: {reason}")]
    InvalidKey {
        /// The key as given.
        key: String,
        /// Reason the key was rejected.
        reason: &'static str,
    },
    /// No object exists under the key.
    #[error("object {key:?} not found in the store")]
    NotFound {
        /// The key that was read.
        key: String,
    },
    /// Reading an object failed for another reason than its absence.
    #[error("failed to read object {key:?}")]
    Get {
        /// The key that was read.
        key: String,
        /// The underlying I/O error.
        #[source]
        source: io::Error,
    },
    /// Writing an object failed.
    #[error("failed to write object {key:?}")]
    Put {
        /// The key that was written.
        key: String,
        /// The underlying I/O error.
        #[source]
        source: io::Error,
    },
    /// A request to the S3 server failed, or its response body broke off.
    #[error("S3 {operation} of {location} failed: {detail}")]
    S3 {
        /// The store operation, such as `get`, `put` or `multipart upload`.
        operation: &'static str,
        /// The store key, without the prefix.
        key: String,
        /// The object's URL, `s3://bucket/prefix/key`.
        location: String,
        /// The server's status, error code and message, or the transport
        /// error, followed by the fix when one is known.
        detail: String,
        /// Whether the failure can pass by itself (a timeout, a connection
        /// failure, HTTP 5xx or 429, or a throttling code), so that a later
        /// attempt can succeed.
        transient: bool,
    },
    /// An operation kept failing with transient errors until [`RetryPolicy::max_time`] ran out.
    #[error(
        "store {operation} of {key:?} still failed after {attempts} attempts over {seconds} s; \
         {env} sets how long to retry",
        env = retry::ENV_RETRY_SECONDS
    )]
    RetriesExhausted {
        /// The store operation.
        operation: &'static str,
        /// The store key.
        key: String,
        /// Attempts made, including the first.
        attempts: u32,
        /// Time from the first attempt to giving up, in whole seconds.
        seconds: u64,
        /// The error of the last attempt.
        #[source]
        source: Box<StoreError>,
    },
    /// Reading or writing the local file of `put_file` or `get_to_file` failed.
    #[error("failed to access local file {path}")]
    LocalFile {
        /// The local file.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: io::Error,
    },
}

impl StoreError {
    /// Returns true when the error means that the object does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::NotFound { .. })
    }

    /// Returns true when a later attempt of the operation can succeed: the S3
    /// server timed out, was unreachable, overloaded or failed with a 5xx.
    ///
    /// Errors of the file store, local files, keys and configuration are never
    /// transient, and neither is a 4xx of S3 other than 408 and 429.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            StoreError::S3 {
                transient: true,
                ..
            }
        )
    }
}

/// Checks that a key is a relative path of non-empty segments without `.` or `..`.
///
/// Backslashes and control characters are rejected too, so that a key means the
/// same object on every backend and cannot hide a path separator.
pub fn validate_key(key: &str) -> Result<(), StoreError> {
    let invalid = |reason| {
        Err(StoreError::InvalidKey {
            key: key.to_owned(),
            reason,
        })
    };

    if key.is_empty() {
        return invalid("the key is empty");
    }
    if key.starts_with('/') {
        return invalid("the key is an absolute path");
    }
    if key.contains('\\') || key.chars().any(char::is_control) {
        return invalid("the key contains a backslash or control character");
    }
    for segment in key.split('/') {
        if segment.is_empty() {
            return invalid("the key contains an empty segment");
        }
        if segment == "." || segment == ".." {
            return invalid("the key contains a `.` or `..` segment");
        }
    }
    Ok(())
}

/// A store backend, chosen by the scheme of the store URL.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Store {
    /// A folder on the local filesystem.
    File(FileStore),
    /// A bucket of an S3-compatible object store.
    #[cfg(feature = "s3")]
    S3(S3Store),
}

impl Store {
    /// Parses a store URL (`file:///abs/path` or `s3://bucket/prefix`).
    ///
    /// An S3 store also reads `JOBGATE_S3_PATH_STYLE` here; its client, with
    /// the endpoint, region and credentials of the AWS chain, is built on
    /// first use. No request is made.
    pub fn from_url(url: &str) -> Result<Store, StoreError> {
        if let Some(path) = url.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(StoreError::InvalidUrl {
                    url: url.to_owned(),
                    reason: "a file store URL must have an empty host and an absolute path, \
                             as in file:///var/lib/jobgate"
                        .into(),
                });
            }
            return Ok(Store::File(FileStore::new(path)));
        }
        if url.starts_with("s3://") {
            #[cfg(feature = "s3")]
            return Ok(Store::S3(S3Store::from_url(url)?));
            #[cfg(not(feature = "s3"))]
            return Err(StoreError::S3Unsupported {
                url: url.to_owned(),
            });
        }
        Err(StoreError::InvalidUrl {
            url: url.to_owned(),
            reason: "expected a URL starting with file:/// or s3://".into(),
        })
    }

    /// Reads a whole object into memory.
    pub async fn get(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        validate_key(key)?;
        match self {
            Store::File(store) => store.get(key).await,
            #[cfg(feature = "s3")]
            Store::S3(store) => store.get(key).await,
        }
    }

    /// Writes an object atomically, replacing any previous one.
    pub async fn put(&self, key: &str, bytes: impl Into<Bytes>) -> Result<(), StoreError> {
        validate_key(key)?;
        let bytes = bytes.into();
        match self {
            Store::File(store) => store.put(key, bytes).await,
            #[cfg(feature = "s3")]
            Store::S3(store) => store.put(key, bytes).await,
        }
    }

    /// Copies a local file into an object without reading it into memory and
    /// returns its size in bytes.
    pub async fn put_file(&self, key: &str, path: &Path) -> Result<u64, StoreError> {
        validate_key(key)?;
        match self {
            Store::File(store) => store.put_file(key, path).await,
            #[cfg(feature = "s3")]
            Store::S3(store) => store.put_file(key, path).await,
        }
    }

    /// Copies an object into a local file, replacing it, and returns its size in bytes.
    pub async fn get_to_file(&self, key: &str, path: &Path) -> Result<u64, StoreError> {
        validate_key(key)?;
        match self {
            Store::File(store) => store.get_to_file(key, path).await,
            #[cfg(feature = "s3")]
            Store::S3(store) => store.get_to_file(key, path).await,
        }
    }
}

/// A store in a local folder: the key `a/b` is the file `<root>/a/b`.
#[derive(Debug, Clone)]
pub struct FileStore {
    root: PathBuf,
}

impl FileStore {
    /// Creates a store rooted at a folder, which need not exist yet.
    pub fn new(root: impl Into<PathBuf>) -> FileStore {
        FileStore { root: root.into() }
    }

    /// Returns the root folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Returns the file path of a key that [`validate_key`] accepted.
    fn path_of(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        let path = self.path_of(key);
        let key = key.to_owned();
        run_blocking(move || std::fs::read(&path).map_err(|source| read_error(key, source))).await
    }

    async fn put(&self, key: &str, bytes: Bytes) -> Result<(), StoreError> {
        let path = self.path_of(key);
        let key = key.to_owned();
        run_blocking(move || {
            write_atomically(&path, |file| {
                use std::io::Write;
                file.write_all(&bytes)
            })
            .map_err(|source| StoreError::Put { key, source })
        })
        .await
    }

    async fn put_file(&self, key: &str, source_path: &Path) -> Result<u64, StoreError> {
        let path = self.path_of(key);
        let key = key.to_owned();
        let source_path = source_path.to_owned();
        run_blocking(move || {
            let mut source =
                std::fs::File::open(&source_path).map_err(|source| StoreError::LocalFile {
                    path: source_path.clone(),
                    source,
                })?;
            let mut size = 0;
            write_atomically(&path, |file| {
                size = io::copy(&mut source, file)?;
                Ok(())
            })
            .map_err(|source| StoreError::Put { key, source })?;
            Ok(size)
        })
        .await
    }

    async fn get_to_file(&self, key: &str, target_path: &Path) -> Result<u64, StoreError> {
        let path = self.path_of(key);
        let key = key.to_owned();
        let target_path = target_path.to_owned();
        run_blocking(move || {
            let mut source =
                std::fs::File::open(&path).map_err(|source| read_error(key, source))?;
            let mut size = 0;
            write_atomically(&target_path, |file| {
                size = io::copy(&mut source, file)?;
                Ok(())
            })
            .map_err(|source| StoreError::LocalFile {
                path: target_path.clone(),
                source,
            })?;
            Ok(size)
        })
        .await
    }
}

fn read_error(key: String, source: io::Error) -> StoreError {
    if source.kind() == io::ErrorKind::NotFound {
        StoreError::NotFound { key }
    } else {
        StoreError::Get { key, source }
    }
}

/// Runs blocking filesystem work off the async worker threads.
async fn run_blocking<T, F>(work: F) -> Result<T, StoreError>
where
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        // The closures above do not panic, so a join error means a bug here.
        Err(join_error) => std::panic::resume_unwind(join_error.into_panic()),
    }
}

/// Writes a file so that readers see either the old content or the new one.
///
/// The content goes to a temporary file in the same folder, which is synced
/// and then renamed over the target, because a rename within one filesystem is
/// atomic. Missing parent folders are created.
fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut std::fs::File) -> io::Result<()>,
) -> io::Result<()> {
    let parent = path.parent().ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, "the path has no parent folder")
    })?;
    std::fs::create_dir_all(parent)?;

    let file_name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = parent.join(format!(".{file_name}.{}.tmp", uuid::Uuid::now_v7()));

    let result = (|| {
        let mut file = std::fs::File::create(&temporary)?;
        write(&mut file)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&temporary, path)
    })();
    if result.is_err() {
        // The temporary file is useless after a failure; the original error matters more
        // than a failure to remove it.
        let _ = std::fs::remove_file(&temporary);
        return result;
    }

    // Sync the folder so that the rename itself survives a crash.
    if let Ok(folder) = std::fs::File::open(parent) {
        let _ = folder.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", dir.path().display());
        let store = Store::from_url(&url).unwrap();
        (dir, store)
    }

    #[test]
    fn key_validation_rejects_escapes() {
        for bad in [
            "",
            "/etc/passwd",
            "../secret",
            "jobs/../../x",
            "jobs//x",
            "jobs/x/",
            "jobs/./x",
            "jobs\\x",
            "jobs/x\n",
        ] {
            assert!(validate_key(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn key_validation_accepts_upload_keys() {
        assert!(validate_key("uploads/0190a0b4-0000-7000-8000-000000000000/DSC 001.jpg").is_ok());
        assert!(validate_key("jobs/x/outputs/a..b.png").is_ok());
    }

    #[cfg(not(feature = "s3"))]
    #[test]
    fn store_url_s3_needs_feature() {
        let error = Store::from_url("s3://bucket/prefix").unwrap_err();
        assert!(matches!(error, StoreError::S3Unsupported { .. }), "{error}");
    }

    #[test]
    fn transient_only_for_s3_failures() {
        let io_error = || io::Error::new(io::ErrorKind::TimedOut, "timed out");
        let s3_error = |transient| StoreError::S3 {
            operation: "put",
            key: "k".into(),
            location: "s3://bucket/k".into(),
            detail: "HTTP 503 SlowDown: Please reduce your request rate.".into(),
            transient,
        };
        assert!(s3_error(true).is_transient());
        assert!(!s3_error(false).is_transient());
        assert!(!StoreError::Put {
            key: "k".into(),
            source: io_error()
        }
        .is_transient());
        assert!(!StoreError::NotFound { key: "k".into() }.is_transient());
    }

    #[test]
    fn store_url_relative_path_rejected() {
        assert!(Store::from_url("file://relative/path").is_err());
        assert!(Store::from_url("http://example.com/").is_err());
    }

    #[tokio::test]
    async fn file_store_put_then_get() {
        let (_dir, store) = temp_store();
        store
            .put("jobs/a/progress.json", b"{}".to_vec())
            .await
            .unwrap();
        let bytes = store.get("jobs/a/progress.json").await.unwrap();
        assert_eq!(bytes, b"{}");
    }

    #[tokio::test]
    async fn file_store_missing_is_not_found() {
        let (_dir, store) = temp_store();
        let error = store.get("jobs/a/missing.json").await.unwrap_err();
        assert!(error.is_not_found(), "{error:?}");
    }

    #[tokio::test]
    async fn file_store_put_leaves_no_temporary() {
        let (dir, store) = temp_store();
        store.put("a/b", b"one".to_vec()).await.unwrap();
        store.put("a/b", b"two".to_vec()).await.unwrap();
        let names: Vec<_> = std::fs::read_dir(dir.path().join("a"))
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(names, vec!["b"]);
        assert_eq!(store.get("a/b").await.unwrap(), b"two");
    }

    #[tokio::test]
    async fn file_store_copies_files_both_ways() {
        let (dir, store) = temp_store();
        let local = dir.path().join("local.bin");
        std::fs::write(&local, vec![7u8; 100_000]).unwrap();

        let size = store.put_file("x/y.bin", &local).await.unwrap();
        assert_eq!(size, 100_000);

        let copy = dir.path().join("copy/y.bin");
        let size = store.get_to_file("x/y.bin", &copy).await.unwrap();
        assert_eq!(size, 100_000);
        assert_eq!(std::fs::read(&copy).unwrap(), vec![7u8; 100_000]);
    }

    #[tokio::test]
    async fn file_store_rejects_escaping_key() {
        let (_dir, store) = temp_store();
        let error = store.put("../outside", b"x".to_vec()).await.unwrap_err();
        assert!(matches!(error, StoreError::InvalidKey { .. }), "{error:?}");
    }
}
