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
