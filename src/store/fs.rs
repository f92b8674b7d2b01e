//! Filesystem store: one file per key below a root folder.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use tokio::fs;
use tokio::io::AsyncWriteExt;
use tokio_util::io::ReaderStream;

use super::{
    validate_key, ByteStream, Conditional, ObjectMeta, ObjectReader, ObjectStore, Result,
    StoreError,
};

/// Folder of temporary files below the root; renamed into place when complete.
const TMP_DIR: &str = ".tmp";

/// Store that keeps each object as a file below `root`.
#[derive(Debug, Clone)]
pub struct FsStore {
    root: PathBuf,
}

impl FsStore {
    /// Opens (and creates, if missing) a store rooted at `root`.
    pub async fn new(root: PathBuf) -> Result<Self> {
        fs::create_dir_all(root.join(TMP_DIR))
            .await
            .map_err(|e| StoreError::backend("open", &root.display().to_string(), e))?;
        Ok(Self { root })
    }

    /// Creates a store handle without touching the filesystem, for code
    /// that needs a store value but never calls it.
    pub fn unopened(root: PathBuf) -> Self {
        Self { root }
    }

    /// Returns the root folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &str) -> Result<PathBuf> {
        validate_key(key)?;
        Ok(self.root.join(key))
    }

    fn map_err(operation: &'static str, key: &str, err: std::io::Error) -> StoreError {
        if err.kind() == ErrorKind::NotFound {
            StoreError::NotFound {
                key: key.to_owned(),
            }
        } else {
            StoreError::backend(operation, key, err)
        }
    }

    fn temp_path(&self) -> PathBuf {
        self.root
            .join(TMP_DIR)
            .join(format!("{}.part", uuid::Uuid::new_v4()))
    }

    /// Moves a finished temporary file to its key, creating parent folders.
    async fn commit(&self, temp: &Path, key: &str, target: &Path) -> Result<()> {
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent)
                .await
                .map_err(|e| StoreError::backend("put", key, e))?;
        }
        fs::rename(temp, target)
            .await
            .map_err(|e| StoreError::backend("put", key, e))
    }
}

/// Builds a version tag from size and modification time; a rename of a new
/// file always changes the time, so a rewritten object gets a new tag.
fn file_etag(metadata: &std::fs::Metadata) -> String {
    let modified = metadata
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    format!("{}-{modified}", metadata.len())
}

#[async_trait]
impl ObjectStore for FsStore {
    async fn get(&self, key: &str) -> Result<Bytes> {
        let path = self.path(key)?;
        fs::read(&path)
            .await
            .map(Bytes::from)
            .map_err(|e| Self::map_err("get", key, e))
    }

    async fn get_if_none_match(&self, key: &str, etag: Option<&str>) -> Result<Conditional> {
        let path = self.path(key)?;
        let metadata = fs::metadata(&path)
            .await
            .map_err(|e| Self::map_err("get", key, e))?;
        let current = file_etag(&metadata);
        if etag == Some(current.as_str()) {
            return Ok(Conditional::NotModified);
        }
        // NB: a write between the stat and the read gives new bytes under the
        // old tag; the next read then fetches them again, which is harmless.
        let bytes = self.get(key).await?;
        Ok(Conditional::Found {
            bytes,
            etag: Some(current),
        })
    }

    async fn open(&self, key: &str) -> Result<ObjectReader> {
        let path = self.path(key)?;
        let file = fs::File::open(&path)
            .await
            .map_err(|e| Self::map_err("get", key, e))?;
        let metadata = file
            .metadata()
            .await
            .map_err(|e| Self::map_err("get", key, e))?;
        if !metadata.is_file() {
            return Err(StoreError::NotFound {
                key: key.to_owned(),
            });
        }
        Ok(ObjectReader {
            meta: ObjectMeta {
                size: metadata.len(),
            },
            body: Box::pin(ReaderStream::new(file)),
        })
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        let path = self.path(key)?;
        let metadata = fs::metadata(&path)
            .await
            .map_err(|e| Self::map_err("head", key, e))?;
        if !metadata.is_file() {
            return Err(StoreError::NotFound {
                key: key.to_owned(),
            });
        }
        Ok(ObjectMeta {
            size: metadata.len(),
        })
    }

    async fn put(&self, key: &str, body: Bytes) -> Result<()> {
        let limit = body.len() as u64;
        let stream: ByteStream = Box::pin(futures::stream::once(async move { Ok(body) }));
        self.put_stream(key, stream, limit).await.map(|_| ())
    }

    async fn put_stream(&self, key: &str, mut body: ByteStream, limit: u64) -> Result<u64> {
        let target = self.path(key)?;
        let temp = self.temp_path();
        let written = async {
            let mut file = fs::File::create(&temp)
                .await
                .map_err(|e| StoreError::backend("put", key, e))?;
            let mut size: u64 = 0;
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| StoreError::backend("put", key, e))?;
                size += chunk.len() as u64;
                if size > limit {
                    return Err(StoreError::TooLarge {
                        key: key.to_owned(),
                        limit,
                    });
                }
                file.write_all(&chunk)
                    .await
                    .map_err(|e| StoreError::backend("put", key, e))?;
            }
            // NB: the data must be on disk before the rename makes it visible,
            // or a crash could leave a complete-looking empty file.
            file.sync_all()
                .await
                .map_err(|e| StoreError::backend("put", key, e))?;
            Ok(size)
        }
        .await;
        match written {
            Ok(size) => {
                self.commit(&temp, key, &target).await?;
                Ok(size)
            }
            Err(err) => {
                let _ = fs::remove_file(&temp).await;
                Err(err)
            }
        }
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let path = self.path(key)?;
        match fs::remove_file(&path).await {
            Err(e) if e.kind() != ErrorKind::NotFound => Err(StoreError::backend("delete", key, e)),
            _ => Ok(()),
        }
    }

    async fn list_children(&self, prefix: &str) -> Result<Vec<String>> {
        let folder = self.path(prefix.trim_end_matches('/'))?;
        let mut entries = match fs::read_dir(&folder).await {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(StoreError::backend("list", prefix, e)),
        };
        let mut names = Vec::new();
        while let Some(entry) = entries
            .next_entry()
            .await
            .map_err(|e| StoreError::backend("list", prefix, e))?
        {
            if let Some(name) = entry.file_name().to_str() {
                names.push(name.to_owned());
            }
        }
        Ok(names)
    }

    async fn check(&self) -> Result<()> {
        let key = ".tmp/readiness-check";
        self.put(key, Bytes::from_static(b"ok")).await?;
        self.get(key).await?;
        self.delete(key).await
    }

    fn worker_url(&self) -> String {
        format!("file://{}", self.root.display())
    }
}
