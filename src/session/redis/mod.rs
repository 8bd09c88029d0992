//! The Redis session store (`session.store = "redis"`), shared by every replica: sessions
//! stay sealed exactly as in memory, under keys that are keyed hashes, with a time-to-live
//! equal to what the memory store gives them. Layout, all under `redis_key_prefix` `<p>`:
//!
//! | key | what |
//! |---|---|
//! | `<p>s:<hex store key>` | a sealed session |
//! | `<p>state:<hmac>`, `<p>jti:<hmac>` | a consumed login `state`, a seen logout `jti` |
//! | `<p>ended:sub:<hmac>`, `<p>ended:sid:<hmac>` | a back-channel logout (ms) |
//! | `<p>lock:<hex store key>` | a session's refresh lock (random token) |
//!
//! Channel `<p>events`: `inv <hex store key>` after every write or delete of a session,
//! `end sub|sid <hmac> <ms>` after a back-channel logout. No plaintext `sub`, `sid`,
//! email, token or cookie is ever sent to Redis.

mod connect;
mod l1;
mod lock;
mod scripts;
mod store;

pub use store::RedisStore;

use crate::session::crypto::{hex, StoreKey};

/// Key names under the prefix.
#[derive(Clone)]
struct Keys {
    prefix: String,
}

impl Keys {
    fn session(&self, key: &StoreKey) -> String {
        format!("{}s:{}", self.prefix, hex(key))
    }
    fn lock(&self, key: &StoreKey) -> String {
        format!("{}lock:{}", self.prefix, hex(key))
    }
    /// `state:<hmac>` / `jti:<hmac>`, as the sessions name them.
    fn once(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }
    /// `sub:<hmac>` / `sid:<hmac>` → `<p>ended:sub:<hmac>`.
    fn ended(&self, marker: &str) -> String {
        format!("{}ended:{marker}", self.prefix)
    }
    fn ended_pattern(&self) -> String {
        format!("{}ended:*", self.prefix)
    }
    fn channel(&self) -> String {
        format!("{}events", self.prefix)
    }
}

/// The store key named by an `inv` message's hex.
fn parse_store_key(text: &str) -> Option<StoreKey> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut key = [0u8; 32];
    for (i, pair) in text.as_bytes().chunks(2).enumerate() {
        let pair = std::str::from_utf8(pair).ok()?;
        key[i] = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_names_are_prefixed_hashes() {
        let keys = Keys {
            prefix: "p:".into(),
        };
        let k = [0xabu8; 32];
        assert_eq!(keys.session(&k), format!("p:s:{}", "ab".repeat(32)));
        assert_eq!(keys.lock(&k), format!("p:lock:{}", "ab".repeat(32)));
        assert_eq!(keys.once("state:00"), "p:state:00");
        assert_eq!(keys.ended("sub:01"), "p:ended:sub:01");
        assert_eq!(keys.channel(), "p:events");
        assert_eq!(parse_store_key(&hex(&k)), Some(k));
        assert_eq!(parse_store_key("zz"), None);
    }
}

/// Tests against a real `redis-server` on a free port (skipped, with a note, without one).
#[cfg(test)]
mod server_tests {
    use std::process::{Child, Command, Stdio};
    use std::sync::Arc;
    use std::time::Duration;

    use super::RedisStore;
    use crate::config::{RedisConfig, RedisMode};
    use crate::session::store::{LockToken, SessionStore};

    struct Server {
        child: Child,
        port: u16,
        _dir: tempfile::TempDir,
    }

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn free_port() -> u16 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    }

    /// A redis-server of its own, or `None` (printed) where there is none on PATH.
    async fn start(port: u16) -> Option<Server> {
        let dir = tempfile::tempdir().ok()?;
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "no", "--dir"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let Ok(child) = child else {
            println!("note: redis-server not on PATH; skipping this test");
            return None;
        };
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Some(Server {
                    child,
                    port,
                    _dir: dir,
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("redis-server did not start");
    }

    fn config(port: u16, cache_ttl: Duration) -> RedisConfig {
        RedisConfig {
            url: url::Url::parse(&format!("redis://127.0.0.1:{port}/0")).expect("url"),
            mode: RedisMode::Standalone,
            urls: vec![],
            sentinel_master: None,
            password: None,
            password_file: None,
            key_prefix: "t:".into(),
            cache_ttl,
            timeout: Duration::from_millis(500),
        }
    }

    fn store(port: u16, cache_ttl: Duration) -> RedisStore {
        RedisStore::open(
            &config(port, cache_ttl),
            100,
            Duration::from_secs(3600),
            &[],
        )
    }

    fn bytes(s: &str) -> Arc<[u8]> {
        Arc::from(s.as_bytes())
    }

    const TTL: Duration = Duration::from_secs(60);

    #[tokio::test]
    async fn put_get_replace_and_delete_run_on_redis() {
        let Some(server) = start(free_port()).await else {
            return;
        };
        let s = store(server.port, Duration::ZERO);
        let k = [5u8; 32];
        s.put(k, bytes("one"), TTL).await.unwrap();
        assert_eq!(s.get(&k).await.unwrap().as_deref(), Some(&b"one"[..]));
        assert!(!s.replace(k, bytes("stale"), bytes("x"), TTL).await.unwrap());
        assert!(s.replace(k, bytes("one"), bytes("two"), TTL).await.unwrap());
        assert_eq!(s.get(&k).await.unwrap().as_deref(), Some(&b"two"[..]));
        s.delete(&k).await.unwrap();
        assert!(s.get(&k).await.unwrap().is_none());
        assert!(!s.replace(k, bytes("two"), bytes("3"), TTL).await.unwrap());
        s.ping().await.unwrap();

        let names = ["state:a".to_string(), "state:b".to_string()];
        assert!(s.claim_once(&names, TTL).await.unwrap());
        assert!(!s.claim_once(&names, TTL).await.unwrap());
        let rotated = ["state:c".to_string(), "state:a".to_string()];
        assert!(!s.claim_once(&rotated, TTL).await.unwrap());
    }

    #[tokio::test]
    async fn the_lock_is_exclusive_renewable_and_released_only_by_its_holder() {
        let Some(server) = start(free_port()).await else {
            return;
        };
        let s = store(server.port, Duration::ZERO);
        let k = [9u8; 32];
        let short = Duration::from_millis(300);
        let token = s.lock(&k, short).await.unwrap().expect("free lock");
        assert!(s.lock(&k, short).await.unwrap().is_none());
        // Renewed past its first time-to-live, it is still held.
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(150)).await;
            assert!(s.renew(&k, &token, short).await.unwrap());
        }
        assert!(s.lock(&k, short).await.unwrap().is_none());
        let stranger = LockToken("not-the-token".into());
        assert!(!s.renew(&k, &stranger, short).await.unwrap());
        s.unlock(&k, &stranger).await.unwrap();
        assert!(s.lock(&k, short).await.unwrap().is_none());
        s.unlock(&k, &token).await.unwrap();
        let again = s.lock(&k, short).await.unwrap().expect("released");
        // Unrenewed, it expires on its own.
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(!s.renew(&k, &again, short).await.unwrap());
        assert!(s.lock(&k, short).await.unwrap().is_some());
    }

    /// Waits until `check` holds (the pub/sub message travels asynchronously).
    async fn eventually(mut check: impl AsyncFnMut() -> bool) -> bool {
        for _ in 0..100 {
            if check().await {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    #[tokio::test]
    async fn a_write_on_one_replica_invalidates_the_others_l1_and_markers_travel() {
        let Some(server) = start(free_port()).await else {
            return;
        };
        let a = store(server.port, Duration::from_secs(60));
        let b = store(server.port, Duration::from_secs(60));
        let k = [1u8; 32];
        // Both listeners subscribed before the writes.
        assert!(eventually(async || a.markers().is_empty() && b.ping().await.is_ok()).await);
        tokio::time::sleep(Duration::from_millis(300)).await;
        a.put(k, bytes("v1"), TTL).await.unwrap();
        assert_eq!(b.get(&k).await.unwrap().as_deref(), Some(&b"v1"[..]));
        a.put(k, bytes("v2"), TTL).await.unwrap();
        assert!(eventually(async || b.get(&k).await.unwrap().as_deref() == Some(&b"v2"[..])).await);
        a.delete(&k).await.unwrap();
        assert!(eventually(async || b.get(&k).await.unwrap().is_none()).await);

        b.end_sessions("sub:abc", 1234, TTL).await.unwrap();
        assert!(eventually(async || a.markers().covers(["sub:abc"], 1000)).await);
        // A replica started later reads the markers already there.
        let c = store(server.port, Duration::from_secs(60));
        assert!(eventually(async || c.markers().covers(["sub:abc"], 1234)).await);
    }

    #[tokio::test]
    async fn redis_down_fails_fast_and_the_store_recovers_without_restart() {
        crate::install_crypto_provider();
        let port = free_port();
        let s = store(port, Duration::from_secs(60));
        let k = [2u8; 32];
        let started = std::time::Instant::now();
        assert!(s.get(&k).await.is_err());
        assert!(s.ping().await.is_err());
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        let Some(_server) = start(port).await else {
            return;
        };
        assert!(
            eventually(async || s.ping().await.is_ok()).await,
            "no recovery"
        );
        s.put(k, bytes("back"), TTL).await.unwrap();
        assert_eq!(s.get(&k).await.unwrap().as_deref(), Some(&b"back"[..]));
    }
}
