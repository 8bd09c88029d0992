//! Tests: a memory store whose writes fail on demand (a store outage while a refresh or a
//! sign-in runs).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;

use super::crypto::StoreKey;
use super::markers::LogoutMarkers;
use super::memory::MemoryStore;
use super::store::{LockToken, SessionStore, StoreError};

/// A memory store whose writes fail while `failing` is set.
pub(crate) struct FlakyStore {
    pub inner: MemoryStore,
    pub failing: AtomicBool,
    pub refused_writes: AtomicUsize,
}

impl FlakyStore {
    fn refuse(&self) -> Option<StoreError> {
        self.failing.load(Ordering::SeqCst).then(|| {
            self.refused_writes.fetch_add(1, Ordering::SeqCst);
            StoreError("injected write failure".into())
        })
    }
}

impl SessionStore for FlakyStore {
    fn get<'a>(
        &'a self,
        key: &'a StoreKey,
    ) -> BoxFuture<'a, Result<Option<Arc<[u8]>>, StoreError>> {
        self.inner.get(key)
    }
    fn put<'a>(
        &'a self,
        key: StoreKey,
        sealed: Arc<[u8]>,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        match self.refuse() {
            Some(e) => async move { Err(e) }.boxed(),
            None => self.inner.put(key, sealed, ttl),
        }
    }
    fn replace<'a>(
        &'a self,
        key: StoreKey,
        expected: Arc<[u8]>,
        sealed: Arc<[u8]>,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        match self.refuse() {
            Some(e) => async move { Err(e) }.boxed(),
            None => self.inner.replace(key, expected, sealed, ttl),
        }
    }
    fn delete<'a>(&'a self, key: &'a StoreKey) -> BoxFuture<'a, Result<(), StoreError>> {
        self.inner.delete(key)
    }
    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        self.inner.ping()
    }
    fn entry_count(&self) -> BoxFuture<'_, Option<u64>> {
        self.inner.entry_count()
    }
    fn claim_once<'a>(
        &'a self,
        names: &'a [String],
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        self.inner.claim_once(names, ttl)
    }
    fn end_sessions<'a>(
        &'a self,
        marker: &'a str,
        at_ms: u64,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.inner.end_sessions(marker, at_ms, ttl)
    }
    fn markers(&self) -> &Arc<LogoutMarkers> {
        self.inner.markers()
    }
    fn lock<'a>(
        &'a self,
        key: &'a StoreKey,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Option<LockToken>, StoreError>> {
        self.inner.lock(key, ttl)
    }
    fn renew<'a>(
        &'a self,
        key: &'a StoreKey,
        token: &'a LockToken,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        self.inner.renew(key, token, ttl)
    }
    fn unlock<'a>(
        &'a self,
        key: &'a StoreKey,
        token: &'a LockToken,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.inner.unlock(key, token)
    }
}

impl FlakyStore {
    pub fn new() -> Self {
        FlakyStore {
            inner: MemoryStore::new(100),
            failing: AtomicBool::new(false),
            refused_writes: AtomicUsize::new(0),
        }
    }
}
