//! Cached reads of job documents from the store.
//!
//! Browsers poll job views often; the cache makes the store see at most one
//! read per key per TTL, however many requests wait on it, because moka
//! coalesces concurrent loads of one key into a single load.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use moka::future::Cache;
use moka::Expiry;

use crate::store::{ObjectStore, StoreError};

/// Most documents cached at once; a view needs four per job.
const MAX_ENTRIES: u64 = 100_000;

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

/// How long one read may be served from the cache.
#[derive(Debug, Clone, Copy)]
pub struct Ttl {
    /// When the document exists.
    pub found: Duration,
    /// When it does not exist (yet).
    pub missing: Duration,
}

/// Read-through cache in front of an [`ObjectStore`].
#[derive(Clone)]
pub struct DocCache {
    store: Arc<dyn ObjectStore>,
    cache: Cache<String, Cached>,
}

impl DocCache {
    /// Creates an empty cache for `store`.
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        Self {
            store,
            cache: Cache::builder()
                .max_capacity(MAX_ENTRIES)
                .expire_after(PerEntryTtl)
                .build(),
        }
    }

    /// Returns a document, from the cache while its TTL lasts. Failed reads
    /// are not cached, so the next request tries the store again.
    pub async fn get(&self, key: &str, ttl: Ttl) -> Result<Option<Bytes>, Arc<StoreError>> {
        let store = self.store.clone();
        let owned_key = key.to_owned();
        let cached = self
            .cache
            .try_get_with(key.to_owned(), async move {
                match store.get(&owned_key).await {
                    Ok(bytes) => Ok(Cached {
                        bytes: Some(bytes),
                        ttl: ttl.found,
                    }),
                    Err(StoreError::NotFound { .. }) => Ok(Cached {
                        bytes: None,
                        ttl: ttl.missing,
                    }),
                    Err(error) => Err(error),
                }
            })
            .await?;
        Ok(cached.bytes)
    }

    /// Stores a document the gateway itself just wrote, so the next read
    /// needs no store request.
    pub async fn insert(&self, key: &str, bytes: Bytes, ttl: Duration) {
        self.cache
            .insert(key.to_owned(), Cached {
                bytes: Some(bytes),
                ttl,
            })
            .await;
    }

    /// Drops a key, so the next read goes to the store.
    pub async fn invalidate(&self, key: &str) {
        self.cache.invalidate(key).await;
    }
}
