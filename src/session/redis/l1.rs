//! The in-process L1 in front of Redis: sealed bytes by store key for `cache_ttl`, so a
//! busy session costs no round trip. Every write and delete, on any replica, publishes
//! `inv <key>` on `<p>events`; the listener here drops the entry at once. `cache_ttl` is
//! the bound only while pub/sub is down; after every reconnect the L1 is cleared and the
//! logout markers are read again, since messages may have been missed meanwhile. The
//! listener also feeds the logout-marker mirror (`end sub|sid <hmac> <ms>`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ::redis::{AsyncConnectionConfig, Client, Msg};
use futures_util::StreamExt;
use moka::future::Cache;

use super::connect::{store_error, Link};
use super::{parse_store_key, Keys};
use crate::clock::now_ms;
use crate::session::crypto::{StoreKey, StoreKeyHasher};
use crate::session::markers::LogoutMarkers;
use crate::session::store::StoreError;

/// How often the listener checks that its connection still answers.
const PING_EVERY: Duration = Duration::from_secs(5);
/// Pause before reconnecting, doubling up to `MAX_BACKOFF`.
const MIN_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

pub struct L1 {
    /// `None` with `cache_ttl = "0s"`.
    cache: Option<Cache<StoreKey, Arc<[u8]>, StoreKeyHasher>>,
    /// Bumped by every invalidation: a read that started before one does not fill the
    /// cache with what it read (it may be the value just invalidated).
    epoch: AtomicU64,
}

impl L1 {
    pub fn new(ttl: Duration, capacity: u64) -> L1 {
        let cache = (!ttl.is_zero()).then(|| {
            Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build_with_hasher(StoreKeyHasher)
        });
        L1 {
            cache,
            epoch: AtomicU64::new(0),
        }
    }

    pub async fn get(&self, key: &StoreKey) -> Option<Arc<[u8]>> {
        self.cache.as_ref()?.get(key).await
    }

    /// Where invalidations stand, to pass to `fill`.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Caches what a read that began at `epoch` found, unless an invalidation came since.
    pub async fn fill(&self, key: StoreKey, sealed: Arc<[u8]>, epoch: u64) {
        let Some(cache) = &self.cache else { return };
        if self.epoch() != epoch {
            return;
        }
        cache.insert(key, sealed).await;
        if self.epoch() != epoch {
            cache.invalidate(&key).await;
        }
    }

    pub async fn invalidate(&self, key: &StoreKey) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        if let Some(cache) = &self.cache {
            cache.invalidate(key).await;
        }
    }

    pub fn clear(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        if let Some(cache) = &self.cache {
            cache.invalidate_all();
        }
    }
}

/// What the listener updates.
pub struct Listener {
    pub link: Arc<Link>,
    pub keys: Keys,
    pub l1: Arc<L1>,
    pub markers: Arc<LogoutMarkers>,
    /// Markers older than this cover no live session (the absolute timeout).
    pub retention: Duration,
    pub timeout: Duration,
    /// Which node to listen on (see `Link::pubsub_targets`).
    pub target: usize,
}

impl Listener {
    /// Listens until aborted, reconnecting after every failure.
    pub async fn run(self) {
        let mut backoff = MIN_BACKOFF;
        let mut attempt = 0usize;
        let mut reported = false;
        loop {
            match self.listen().await {
                Ok(()) => {}
                Err(e) if !reported => {
                    tracing::warn!(error = %e, "session invalidations from Redis are not received; retrying (the L1 serves at most cache_ttl meanwhile)");
                    reported = true;
                }
                Err(e) => tracing::debug!(error = %e, "Redis pub/sub still down"),
            }
            self.l1.clear();
            attempt = attempt.wrapping_add(1);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
            if attempt.is_multiple_of(16) {
                reported = false;
            }
        }
    }

    /// One connection: subscribe, start afresh (clear the L1, reload the markers), then
    /// apply messages until the connection fails.
    async fn listen(&self) -> Result<(), StoreError> {
        let client = self.link.pubsub_client(self.target).await?;
        let pubsub = self
            .bounded(client.get_async_pubsub(), "connecting for pub/sub")
            .await?;
        let (mut sink, mut stream) = pubsub.split();
        let channel = self.keys.channel();
        self.bounded(sink.subscribe(&channel), "subscribing")
            .await?;
        self.l1.clear();
        // In a cluster each listener reads its own node: together, every node.
        if let Err(e) = self.reload_markers(&[client]).await {
            tracing::warn!(error = %e, "reloading the back-channel logout markers failed");
        }
        tracing::info!("listening for session invalidations on Redis");
        let mut tick = tokio::time::interval(PING_EVERY);
        tick.tick().await;
        loop {
            tokio::select! {
                msg = stream.next() => match msg {
                    Some(msg) => self.apply(&msg).await,
                    None => return Err(StoreError("the pub/sub connection closed".into())),
                },
                _ = tick.tick() => {
                    self.bounded(sink.ping::<::redis::Value>(), "pinging").await?;
                }
            }
        }
    }

    async fn bounded<T>(
        &self,
        work: impl std::future::Future<Output = ::redis::RedisResult<T>>,
        what: &str,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.timeout * 4, work).await {
            Ok(result) => result.map_err(store_error),
            Err(_) => Err(StoreError(format!("{what} timed out"))),
        }
    }

    async fn apply(&self, msg: &Msg) {
        let Ok(text) = std::str::from_utf8(msg.get_payload_bytes()) else {
            return;
        };
        let mut words = text.split(' ');
        match (words.next(), words.next(), words.next(), words.next()) {
            (Some("inv"), Some(hex), None, None) => {
                if let Some(key) = parse_store_key(hex) {
                    self.l1.invalidate(&key).await;
                }
            }
            (Some("end"), Some(kind @ ("sub" | "sid")), Some(tag), Some(ms)) => {
                if let Ok(at) = ms.parse::<u64>() {
                    self.markers
                        .insert(format!("{kind}:{tag}"), at, self.horizon());
                }
            }
            _ => tracing::debug!("ignored an unknown message on the session channel"),
        }
    }

    fn horizon(&self) -> u64 {
        now_ms().saturating_sub(self.retention.as_millis() as u64)
    }

    /// Reads every `<p>ended:*` marker (SCAN on each node) into the mirror.
    async fn reload_markers(&self, nodes: &[Client]) -> Result<(), StoreError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout));
        let prefix = self.keys.ended("");
        for node in nodes {
            let mut conn = self
                .bounded(
                    node.get_multiplexed_async_connection_with_config(&config),
                    "connecting to reload markers",
                )
                .await?;
            let mut cursor = 0u64;
            loop {
                let (next, found): (u64, Vec<String>) = self
                    .bounded(
                        ::redis::cmd("SCAN")
                            .arg(cursor)
                            .arg("MATCH")
                            .arg(self.keys.ended_pattern())
                            .arg("COUNT")
                            .arg(1000)
                            .query_async(&mut conn),
                        "scanning markers",
                    )
                    .await?;
                for key in found {
                    let at: Option<u64> = self
                        .bounded(
                            ::redis::cmd("GET").arg(&key).query_async(&mut conn),
                            "reading a marker",
                        )
                        .await?;
                    if let (Some(marker), Some(at)) = (key.strip_prefix(&prefix), at) {
                        self.markers.insert(marker.to_string(), at, self.horizon());
                    }
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(())
    }
}
