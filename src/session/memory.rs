//! In-process session store on `moka`: bounded by `session.max_sessions`, entries expire on
//! their own time-to-live (the session's absolute deadline), so memory cannot grow without
//! bound and expired sessions need no sweeper.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use moka::future::Cache;
use moka::ops::compute::{CompResult, Op};
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

    fn replace<'a>(
        &'a self,
        key: StoreKey,
        expected: Arc<[u8]>,
        sealed: Arc<[u8]>,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        async move {
            let result = self
                .cache
                .entry(key)
                .and_compute_with(|current| {
                    let same = current.is_some_and(|e| e.value().sealed == expected);
                    std::future::ready(if same {
                        Op::Put(Entry { sealed, ttl })
                    } else {
                        Op::Nop
                    })
                })
                .await;
            Ok(matches!(result, CompResult::ReplacedWith(_)))
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
    async fn replace_writes_only_over_the_expected_value() {
        let s = MemoryStore::new(10);
        let k = [3u8; 32];
        let v1: Arc<[u8]> = Arc::from(&b"one"[..]);
        s.put(k, v1.clone(), Duration::from_secs(60)).await.unwrap();
        let stale: Arc<[u8]> = Arc::from(&b"zero"[..]);
        let ttl = Duration::from_secs(60);
        assert!(!s
            .replace(k, stale, Arc::from(&b"x"[..]), ttl)
            .await
            .unwrap());
        assert!(s.replace(k, v1, Arc::from(&b"two"[..]), ttl).await.unwrap());
        assert_eq!(s.get(&k).await.unwrap().as_deref(), Some(&b"two"[..]));
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
