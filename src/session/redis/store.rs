//! `SessionStore` on Redis: one GET per request at most (none on an L1 hit), writes and
//! deletes by Lua scripts that also publish the L1 invalidation, `replace` as a Lua
//! compare-and-set, one-shot values by `SET NX PX`, logout markers as keys with the
//! absolute timeout as TTL plus a message to every replica. Every call returns a
//! `StoreError` within `redis_timeout` when Redis does not answer.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use rustls_pki_types::CertificateDer;

use super::connect::Link;
use super::l1::{Listener, L1};
use super::lock::{self, millis};
use super::{scripts, Keys};
use crate::config::RedisConfig;
use crate::session::crypto::{hex, StoreKey};
use crate::session::markers::LogoutMarkers;
use crate::session::store::{LockToken, SessionStore, StoreError};

pub struct RedisStore {
    link: Arc<Link>,
    keys: Keys,
    l1: Arc<L1>,
    markers: Arc<LogoutMarkers>,
    listeners: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        for listener in &self.listeners {
            listener.abort();
        }
    }
}

impl RedisStore {
    /// The store for `cfg`, not yet connected (start-up never waits for Redis), with its
    /// pub/sub listener started. `capacity` bounds the L1; logout markers are kept for
    /// `retention` (the absolute session timeout). Must run inside the tokio runtime.
    pub fn open(
        cfg: &RedisConfig,
        capacity: u64,
        retention: Duration,
        ca: &[CertificateDer<'static>],
    ) -> RedisStore {
        let link = Arc::new(Link::new(cfg, ca));
        let keys = Keys {
            prefix: cfg.key_prefix.clone(),
        };
        let l1 = Arc::new(L1::new(cfg.cache_ttl, capacity));
        let markers = Arc::new(LogoutMarkers::new());
        let listeners = (0..link.pubsub_targets())
            .map(|target| {
                tokio::spawn(
                    Listener {
                        link: link.clone(),
                        keys: keys.clone(),
                        l1: l1.clone(),
                        markers: markers.clone(),
                        retention,
                        timeout: cfg.timeout,
                        target,
                    }
                    .run(),
                )
            })
            .collect();
        RedisStore {
            link,
            keys,
            l1,
            markers,
            listeners,
        }
    }

    fn invalidation(&self, key: &StoreKey) -> String {
        format!("inv {}", hex(key))
    }

    async fn read(&self, key: &StoreKey) -> Result<Option<Arc<[u8]>>, StoreError> {
        let epoch = self.l1.epoch();
        let found: Option<Vec<u8>> = self
            .link
            .query(::redis::cmd("GET").arg(self.keys.session(key)))
            .await?;
        let found: Option<Arc<[u8]>> = found.map(Arc::from);
        if let Some(sealed) = &found {
            self.l1.fill(*key, sealed.clone(), epoch).await;
        }
        Ok(found)
    }
}

impl SessionStore for RedisStore {
    fn get<'a>(
        &'a self,
        key: &'a StoreKey,
    ) -> BoxFuture<'a, Result<Option<Arc<[u8]>>, StoreError>> {
        async move {
            if let Some(hit) = self.l1.get(key).await {
                return Ok(Some(hit));
            }
            self.read(key).await
        }
        .boxed()
    }

    fn get_uncached<'a>(
        &'a self,
        key: &'a StoreKey,
    ) -> BoxFuture<'a, Result<Option<Arc<[u8]>>, StoreError>> {
        self.read(key).boxed()
    }

    fn put<'a>(
        &'a self,
        key: StoreKey,
        sealed: Arc<[u8]>,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        async move {
            self.l1.invalidate(&key).await;
            let _: i64 = self
                .link
                .invoke(
                    scripts::PUT
                        .key(self.keys.session(&key))
                        .arg(&*sealed)
                        .arg(millis(ttl))
                        .arg(self.keys.channel())
                        .arg(self.invalidation(&key)),
                )
                .await?;
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
            self.l1.invalidate(&key).await;
            let written: i64 = self
                .link
                .invoke(
                    scripts::REPLACE
                        .key(self.keys.session(&key))
                        .arg(&*expected)
                        .arg(&*sealed)
                        .arg(millis(ttl))
                        .arg(self.keys.channel())
                        .arg(self.invalidation(&key)),
                )
                .await?;
            Ok(written == 1)
        }
        .boxed()
    }

    fn delete<'a>(&'a self, key: &'a StoreKey) -> BoxFuture<'a, Result<(), StoreError>> {
        async move {
            self.l1.invalidate(key).await;
            let _: i64 = self
                .link
                .invoke(
                    scripts::DELETE
                        .key(self.keys.session(key))
                        .arg(self.keys.channel())
                        .arg(self.invalidation(key)),
                )
                .await?;
            Ok(())
        }
        .boxed()
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        async move {
            let _: String = self.link.query(&::redis::cmd("PING")).await?;
            Ok(())
        }
        .boxed()
    }

    fn entry_count(&self) -> BoxFuture<'_, Option<u64>> {
        // Redis holds other replicas' sessions and other data: no count of ours.
        async { None }.boxed()
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
            // One key per command, so a cluster never sees CROSSSLOT: claim under the
            // current secret first (atomic), then look for a use under a retired one.
            let set: Option<String> = self
                .link
                .query(
                    ::redis::cmd("SET")
                        .arg(self.keys.once(current))
                        .arg(1)
                        .arg("NX")
                        .arg("PX")
                        .arg(millis(ttl)),
                )
                .await?;
            if set.is_none() {
                return Ok(false);
            }
            for name in retired {
                let seen: bool = self
                    .link
                    .query(::redis::cmd("EXISTS").arg(self.keys.once(name)))
                    .await?;
                if seen {
                    return Ok(false);
                }
            }
            Ok(true)
        }
        .boxed()
    }

    fn end_sessions<'a>(
        &'a self,
        marker: &'a str,
        at_ms: u64,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        async move {
            let (kind, tag) = marker.split_once(':').unwrap_or(("sub", marker));
            let _: i64 = self
                .link
                .invoke(
                    scripts::PUT
                        .key(self.keys.ended(marker))
                        .arg(at_ms)
                        .arg(millis(ttl))
                        .arg(self.keys.channel())
                        .arg(format!("end {kind} {tag} {at_ms}")),
                )
                .await?;
            Ok(())
        }
        .boxed()
    }

    fn markers(&self) -> &Arc<LogoutMarkers> {
        &self.markers
    }

    fn lock<'a>(
        &'a self,
        key: &'a StoreKey,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Option<LockToken>, StoreError>> {
        async move { lock::lock(&self.link, &self.keys.lock(key), ttl).await }.boxed()
    }

    fn renew<'a>(
        &'a self,
        key: &'a StoreKey,
        token: &'a LockToken,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        async move { lock::renew(&self.link, &self.keys.lock(key), token, ttl).await }.boxed()
    }

    fn unlock<'a>(
        &'a self,
        key: &'a StoreKey,
        token: &'a LockToken,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        async move { lock::unlock(&self.link, &self.keys.lock(key), token).await }.boxed()
    }
}
