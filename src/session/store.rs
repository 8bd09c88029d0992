//! The storage seam: callers hand over opaque sealed bytes under a derived key, so a
//! backend (memory now, Redis later) never sees plaintext and can be swapped freely.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;

use super::crypto::StoreKey;

#[derive(Debug, thiserror::Error)]
#[error("session store: {0}")]
pub struct StoreError(pub String);

/// A key-value store of sealed sessions with per-entry time-to-live.
pub trait SessionStore: Send + Sync {
    fn get<'a>(&'a self, key: &'a StoreKey)
        -> BoxFuture<'a, Result<Option<Arc<[u8]>>, StoreError>>;
    fn put<'a>(
        &'a self,
        key: StoreKey,
        sealed: Arc<[u8]>,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
    /// Writes `sealed` only if the entry still holds `expected` (compare-and-set), so a
    /// last-seen update built from a stale read cannot undo a concurrent refresh.
    /// Returns whether it wrote.
    fn replace<'a>(
        &'a self,
        key: StoreKey,
        expected: Arc<[u8]>,
        sealed: Arc<[u8]>,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;
    fn delete<'a>(&'a self, key: &'a StoreKey) -> BoxFuture<'a, Result<(), StoreError>>;
    /// Whether the store answers (for `/readyz`).
    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>>;
    /// Entries held, where the backend knows (memory store), for metrics.
    fn entry_count(&self) -> BoxFuture<'_, Option<u64>>;
}
