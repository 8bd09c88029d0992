//! In-process session store on `moka`: bounded by `session.max_sessions`, entries expire on
//! their own time-to-live (the session's absolute deadline), so memory cannot grow without
//! bound and expired sessions need no sweeper.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use moka::future::Cache;
use moka::Expiry;

use super::crypto::StoreKey;
use super::store::{SessionStore, StoreError};

#[derive(Clone)]
struct Entry {
    sealed: Arc<[u8]>,
    ttl: Duration,
}

struct PerEntryTtl;

impl Expiry<StoreKey, Entry> for PerEntryTtl {
    fn expire_after_create(&self, _k: &StoreKey, v: &Entry, _now: Instant) -> Option<Duration> {
        Some(v.ttl)
    }
    fn expire_after_update(
        &self,
        _k: &StoreKey,
        v: &Entry,
        _now: Instant,
        _current: Option<Duration>,
    ) -> Option<Duration> {
        Some(v.ttl)
    }
}

pub struct MemoryStore {
    cache: Cache<StoreKey, Entry>,
}

impl MemoryStore {
    pub fn new(max_sessions: u64) -> Self {
        MemoryStore {
            cache: Cache::builder()
                .max_capacity(max_sessions)
                .expire_after(PerEntryTtl)
                .build(),
        }
    }
}

impl SessionStore for MemoryStore {
    fn get<'a>(
        &'a self,
        key: &'a StoreKey,
    ) -> BoxFuture<'a, Result<Option<Arc<[u8]>>, StoreError>> {
        async move { Ok(self.cache.get(key).await.map(|e| e.sealed)) }.boxed()
    }

    fn put<'a>(
        &'a self,
        key: StoreKey,
        sealed: Arc<[u8]>,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        async move {
            self.cache.insert(key, Entry { sealed, ttl }).await;
            Ok(())
        }
        .boxed()
    }

    fn delete<'a>(&'a self, key: &'a StoreKey) -> BoxFuture<'a, Result<(), StoreError>> {
        async move {
            self.cache.invalidate(key).await;
            Ok(())
        }
        .boxed()
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        async { Ok(()) }.boxed()
    }

    fn entry_count(&self) -> BoxFuture<'_, Option<u64>> {
        async {
            // moka counts lazily; settle pending inserts and evictions first.
            self.cache.run_pending_tasks().await;
            Some(self.cache.entry_count())
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn put_get_delete() {
        let s = MemoryStore::new(10);
        let k = [7u8; 32];
        s.put(k, Arc::from(&b"v"[..]), Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(s.get(&k).await.unwrap().as_deref(), Some(&b"v"[..]));
        s.delete(&k).await.unwrap();
        assert!(s.get(&k).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn entries_expire() {
        let s = MemoryStore::new(10);
        let k = [1u8; 32];
        s.put(k, Arc::from(&b"v"[..]), Duration::from_millis(50))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert!(s.get(&k).await.unwrap().is_none());
    }
}
