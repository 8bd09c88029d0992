//! The storage seam: callers hand over opaque sealed bytes under a derived key, so a
//! backend (memory, or Redis shared by replicas) never sees plaintext and can be swapped
//! freely. Besides sessions it holds what must be shared by every replica: consumed
//! one-shot values (login `state`s, logout `jti`s), back-channel logout markers, and the
//! per-session refresh lock. Every name it is given is already a keyed hash.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;

use super::crypto::StoreKey;
use super::markers::LogoutMarkers;

#[derive(Debug, thiserror::Error)]
#[error("session store: {0}")]
pub struct StoreError(pub String);

/// Proof of holding a refresh lock: a random value only the holder knows, so only it can
/// renew or release the lock (compare-and-delete).
#[derive(Clone, PartialEq, Eq)]
pub struct LockToken(pub String);

impl std::fmt::Debug for LockToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LockToken([redacted])")
    }
}

/// A key-value store of sealed sessions with per-entry time-to-live.
pub trait SessionStore: Send + Sync {
    fn get<'a>(&'a self, key: &'a StoreKey)
        -> BoxFuture<'a, Result<Option<Arc<[u8]>>, StoreError>>;
    /// Like `get`, past any in-process cache: what the store holds now (a replica waiting
    /// for another one's refresh polls with it).
    fn get_uncached<'a>(
        &'a self,
        key: &'a StoreKey,
    ) -> BoxFuture<'a, Result<Option<Arc<[u8]>>, StoreError>> {
        self.get(key)
    }
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

    /// Marks a one-shot value used (`state:<tag>`, `jti:<tag>`): `names[0]`, its name under
    /// the current secret, is remembered for `ttl`; the others (retired secrets) are only
    /// looked at. `true` when none was there: this is the first use.
    fn claim_once<'a>(
        &'a self,
        names: &'a [String],
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;
    /// Records a back-channel logout marker (`sub:<tag>` or `sid:<tag>`, at `at_ms`) for
    /// `ttl` where every replica sees it. The caller updates its own mirror.
    fn end_sessions<'a>(
        &'a self,
        marker: &'a str,
        at_ms: u64,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
    /// The local mirror of logout markers this store keeps up to date (from other replicas
    /// too, where it is shared).
    fn markers(&self) -> &Arc<LogoutMarkers>;

    /// Takes the refresh lock of a session for `ttl`, unless someone holds it: `None`.
    /// A store used by one process only grants it at once (the in-process single flight
    /// already serializes refreshes there).
    fn lock<'a>(
        &'a self,
        key: &'a StoreKey,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Option<LockToken>, StoreError>>;
    /// Extends a held lock to `ttl` from now; `false` if it is no longer ours.
    fn renew<'a>(
        &'a self,
        key: &'a StoreKey,
        token: &'a LockToken,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;
    /// Releases a held lock (only if still ours).
    fn unlock<'a>(
        &'a self,
        key: &'a StoreKey,
        token: &'a LockToken,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
}

/// For stores used by one process: the lock is always free (see `SessionStore::lock`).
pub(crate) fn local_lock<'a>() -> BoxFuture<'a, Result<Option<LockToken>, StoreError>> {
    async { Ok(Some(LockToken(String::new()))) }.boxed()
}
