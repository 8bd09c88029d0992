//! Back-channel logout markers, mirrored in this process for the hot path: "every session
//! of this `sub` (or IdP `sid`) that started before this instant is over". Checking one
//! costs a hash lookup, no store round trip. Keys are the store's tags (`sub:<hmac>`,
//! `sid:<hmac>`), never the plain values. The memory store fills the mirror only from
//! this process; the Redis store also from its pub/sub listener and a full reload after
//! every reconnect, so a logout delivered to any replica ends the sessions on all of them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::RwLock;

/// The mirror: marker key → when (ms since the epoch).
#[derive(Default)]
pub struct LogoutMarkers {
    ended: RwLock<HashMap<String, u64>>,
    /// Skips the lookup on the hot path until the first back-channel logout.
    any: AtomicBool,
}

impl LogoutMarkers {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a marker (the later instant wins) and forgets markers older than
    /// `horizon_ms`: they cover no live session any more.
    pub fn insert(&self, key: String, at_ms: u64, horizon_ms: u64) {
        let mut ended = match self.ended.write() {
            Ok(e) => e,
            Err(poisoned) => poisoned.into_inner(),
        };
        ended.retain(|_, t| *t >= horizon_ms);
        let slot = ended.entry(key).or_insert(at_ms);
        *slot = (*slot).max(at_ms);
        self.any.store(true, Ordering::Relaxed);
    }

    /// Whether any of `keys` marks a logout at or after `created_ms`.
    pub fn covers<'k>(&self, keys: impl IntoIterator<Item = &'k str>, created_ms: u64) -> bool {
        if !self.any.load(Ordering::Relaxed) {
            return false;
        }
        let ended = match self.ended.read() {
            Ok(e) => e,
            Err(poisoned) => poisoned.into_inner(),
        };
        keys.into_iter()
            .any(|k| ended.get(k).is_some_and(|t| created_ms <= *t))
    }

    /// Whether the mirror holds anything (so callers can skip computing tags).
    pub fn is_empty(&self) -> bool {
        !self.any.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marker_covers_sessions_started_before_it() {
        let m = LogoutMarkers::new();
        assert!(m.is_empty() && !m.covers(["sub:a"], 1));
        m.insert("sub:a".into(), 100, 0);
        assert!(m.covers(["sub:x", "sub:a"], 100));
        assert!(!m.covers(["sub:a"], 101));
        m.insert("sub:a".into(), 50, 0);
        assert!(m.covers(["sub:a"], 99), "the later instant stays");
        m.insert("sid:b".into(), 500, 200);
        assert!(!m.covers(["sub:a"], 1), "older than the horizon: forgotten");
    }
}
