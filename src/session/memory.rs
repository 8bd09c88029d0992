//! In-process session store on `moka`: bounded by `session.max_sessions`, entries expire on
//! their own time-to-live (the session's absolute deadline), so memory cannot grow without
//! bound and expired sessions need no sweeper. Consumed one-shot values and logout
//! markers stay in this process, as before there was a Redis store.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use moka::future::Cache;
use moka::ops::compute::{CompResult, Op};
use moka::Expiry;

use super::crypto::{StoreKey, StoreKeyHasher};
use super::markers::LogoutMarkers;
use super::store::{local_lock, LockToken, SessionStore, StoreError};

/// One-shot values remembered at most (login `state`s and logout `jti`s together).
const MAX_USED: u64 = 200_000;

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

/// A used one-shot value lives for the time-to-live it was claimed with.
struct UsedTtl;

impl Expiry<String, Duration> for UsedTtl {
    fn expire_after_create(&self, _k: &String, ttl: &Duration, _now: Instant) -> Option<Duration> {
        Some(*ttl)
    }
}

pub struct MemoryStore {
    cache: Cache<StoreKey, Entry, StoreKeyHasher>,
    used: Cache<String, Duration>,
    markers: Arc<LogoutMarkers>,
}

impl MemoryStore {
    pub fn new(max_sessions: u64) -> Self {
        MemoryStore {
            cache: Cache::builder()
                .max_capacity(max_sessions)
                .expire_after(PerEntryTtl)
                .build_with_hasher(StoreKeyHasher),
            used: Cache::builder()
                .max_capacity(MAX_USED)
                .expire_after(UsedTtl)
                .build(),
            markers: Arc::new(LogoutMarkers::new()),
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

    fn claim_once<'a>(
        &'a self,
        names: &'a [String],
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        async move {
            let Some((current, retired)) = names.split_first() else {
                return Ok(false);
            };
            if retired.iter().any(|n| self.used.contains_key(n)) {
                return Ok(false);
            }
            Ok(self
                .used
                .entry(current.clone())
                .or_insert(ttl)
                .await
                .is_fresh())
        }
        .boxed()
    }

    fn end_sessions<'a>(
        &'a self,
        _marker: &'a str,
        _at_ms: u64,
        _ttl: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        // Only this process reads sessions: the caller's mirror is the record.
        async { Ok(()) }.boxed()
    }

    fn markers(&self) -> &Arc<LogoutMarkers> {
        &self.markers
    }

    fn lock<'a>(
        &'a self,
        _key: &'a StoreKey,
        _ttl: Duration,
    ) -> BoxFuture<'a, Result<Option<LockToken>, StoreError>> {
        local_lock()
    }

    fn renew<'a>(
        &'a self,
        _key: &'a StoreKey,
        _token: &'a LockToken,
        _ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        async { Ok(true) }.boxed()
    }

    fn unlock<'a>(
        &'a self,
        _key: &'a StoreKey,
        _token: &'a LockToken,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        async { Ok(()) }.boxed()
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
    async fn a_one_shot_value_is_claimed_once_under_any_secret() {
        let s = MemoryStore::new(10);
        let ttl = Duration::from_secs(60);
        let old = ["state:old".to_string()];
        assert!(s.claim_once(&old, ttl).await.unwrap());
        assert!(!s.claim_once(&old, ttl).await.unwrap());
        // After a rotation the value is claimed under the new secret, and its name under
        // the retired one is still seen.
        let rotated = ["state:new".to_string(), "state:old".to_string()];
        assert!(!s.claim_once(&rotated, ttl).await.unwrap());
        let other = ["state:x".to_string(), "state:y".to_string()];
        assert!(s.claim_once(&other, ttl).await.unwrap());
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
