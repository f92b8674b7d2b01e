//! Cached reads of job documents from the store.
//!
//! Browsers poll job views often; the cache makes the store see at most one
//! read per key per TTL, however many requests wait on it, because moka
//! coalesces concurrent loads of one key into a single load. A reload after
//! the TTL is a conditional read (`If-None-Match` with the last ETag), so an
//! unchanged document costs the store no body transfer.
//!
//! The last good copy of each document is also kept for a longer time, so
//! that during a storage outage views can still show the last progress they
//! had, marked stale.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use moka::future::Cache;
use moka::Expiry;

use crate::store::{Conditional, ObjectStore, StoreError};

/// Most documents cached at once; a view needs four per job.
const MAX_ENTRIES: u64 = 100_000;
/// How long the last good copy of a document is kept for conditional reads
/// and for answering during outages.
const LAST_GOOD_TTL: Duration = Duration::from_secs(3600);

/// A cached document: its bytes, or `None` for a key that did not exist.
#[derive(Debug, Clone)]
struct Cached {
    bytes: Option<Bytes>,
    ttl: Duration,
}

struct PerEntryTtl;

impl Expiry<String, Cached> for PerEntryTtl {
    fn expire_after_create(&self, _key: &String, value: &Cached, _now: Instant) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// The last copy read from the store, with its version tag.
#[derive(Debug, Clone)]
struct LastGood {
    bytes: Bytes,
    etag: Option<String>,
}

/// How long one read may be served from the cache.
#[derive(Debug, Clone, Copy)]
pub struct Ttl {
    /// When the document exists.
    pub found: Duration,
    /// When it does not exist (yet).
    pub missing: Duration,
}

/// A document read through the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read {
    /// Current content, or `None` when the key does not exist.
    Fresh(Option<Bytes>),
    /// The store failed; this is the last copy read before the failure.
    Stale(Bytes),
}

/// Read-through cache in front of an [`ObjectStore`].
#[derive(Clone)]
pub struct DocCache {
    store: Arc<dyn ObjectStore>,
    fresh: Cache<String, Cached>,
    last_good: Cache<String, LastGood>,
}

impl DocCache {
    /// Creates an empty cache for `store`.
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        Self {
            store,
            fresh: Cache::builder()
                .max_capacity(MAX_ENTRIES)
                .expire_after(PerEntryTtl)
                .build(),
            last_good: Cache::builder()
                .max_capacity(MAX_ENTRIES)
                .time_to_live(LAST_GOOD_TTL)
                .build(),
        }
    }

    /// Returns a document, from the cache while its TTL lasts. Failed reads
    /// are not cached, so the next request tries the store again.
    pub async fn get(&self, key: &str, ttl: Ttl) -> Result<Option<Bytes>, Arc<StoreError>> {
        let store = self.store.clone();
        let last_good = self.last_good.clone();
        let owned_key = key.to_owned();
        let cached = self
            .fresh
            .try_get_with(key.to_owned(), async move {
                let previous = last_good.get(&owned_key).await;
                let etag = previous.as_ref().and_then(|p| p.etag.clone());
                match store.get_if_none_match(&owned_key, etag.as_deref()).await {
                    Ok(Conditional::NotModified) => Ok(Cached {
                        bytes: previous.map(|p| p.bytes),
                        ttl: ttl.found,
                    }),
                    Ok(Conditional::Found { bytes, etag }) => {
                        last_good
                            .insert(owned_key, LastGood { bytes: bytes.clone(), etag })
                            .await;
                        Ok(Cached {
                            bytes: Some(bytes),
                            ttl: ttl.found,
                        })
                    }
                    Err(StoreError::NotFound { .. }) => {
                        last_good.invalidate(&owned_key).await;
                        Ok(Cached {
                            bytes: None,
                            ttl: ttl.missing,
                        })
                    }
                    Err(error) => Err(error),
                }
            })
            .await?;
        Ok(cached.bytes)
    }

    /// Like [`DocCache::get`], but answers a failed read with the last copy
    /// read before, when there is one.
    pub async fn get_or_stale(&self, key: &str, ttl: Ttl) -> Result<Read, Arc<StoreError>> {
        match self.get(key, ttl).await {
            Ok(bytes) => Ok(Read::Fresh(bytes)),
            Err(error) => match self.last_good.get(key).await {
                Some(last) => Ok(Read::Stale(last.bytes)),
                None => Err(error),
            },
        }
    }

    /// Stores a document the gateway itself just wrote, so the next read
    /// needs no store request.
    pub async fn insert(&self, key: &str, bytes: Bytes, ttl: Duration) {
        self.last_good
            .insert(key.to_owned(), LastGood { bytes: bytes.clone(), etag: None })
            .await;
        self.fresh
            .insert(key.to_owned(), Cached {
                bytes: Some(bytes),
                ttl,
            })
            .await;
    }

    /// Drops a key, so the next read goes to the store.
    pub async fn invalidate(&self, key: &str) {
        self.fresh.invalidate(key).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::fs::FsStore;

    fn ttl(ms: u64) -> Ttl {
        Ttl {
            found: Duration::from_millis(ms),
            missing: Duration::from_millis(ms),
        }
    }

    #[tokio::test]
    async fn cache_serves_until_ttl() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(FsStore::new(dir.path().into()).await.unwrap());
        store.put("a.json", Bytes::from_static(b"1")).await.unwrap();
        let cache = DocCache::new(store.clone());
        assert_eq!(cache.get("a.json", ttl(200)).await.unwrap(), Some(Bytes::from_static(b"1")));
        store.put("a.json", Bytes::from_static(b"2")).await.unwrap();
        assert_eq!(cache.get("a.json", ttl(200)).await.unwrap(), Some(Bytes::from_static(b"1")));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(cache.get("a.json", ttl(200)).await.unwrap(), Some(Bytes::from_static(b"2")));
    }

    #[tokio::test]
    async fn missing_then_created_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(FsStore::new(dir.path().into()).await.unwrap());
        let cache = DocCache::new(store.clone());
        assert_eq!(cache.get("b.json", ttl(100)).await.unwrap(), None);
        store.put("b.json", Bytes::from_static(b"x")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(cache.get("b.json", ttl(100)).await.unwrap(), Some(Bytes::from_static(b"x")));
    }

    #[tokio::test]
    async fn failed_read_falls_back_to_stale() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(FsStore::new(dir.path().into()).await.unwrap());
        store.put("c/d.json", Bytes::from_static(b"old")).await.unwrap();
        let cache = DocCache::new(store.clone());
        assert_eq!(
            cache.get_or_stale("c/d.json", ttl(50)).await.unwrap(),
            Read::Fresh(Some(Bytes::from_static(b"old")))
        );
        // A folder where the file was makes the next read fail.
        std::fs::remove_file(dir.path().join("c/d.json")).unwrap();
        std::fs::create_dir(dir.path().join("c/d.json")).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            cache.get_or_stale("c/d.json", ttl(50)).await.unwrap(),
            Read::Stale(Bytes::from_static(b"old"))
        );
    }
}
