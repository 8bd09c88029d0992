//! What the sessions share with every replica through the store, beyond the sessions
//! themselves: one-shot values (a login `state`, a logout token's `jti`) used once fleet-
//! wide, back-channel logout markers, and the refresh lock. Values are named by keyed
//! hashes (`Keyring::tag`) under the current secret and looked up under all of them, so
//! a secret rotation keeps every record.

use std::time::Duration;

use super::crypto::{SessionId, StoreKey};
use super::store::{LockToken, StoreError};
use super::{counted, Session, Sessions};
use crate::clock::now_ms;

/// How long a logout token's `jti` is remembered (its `iat` must be recent anyway).
const JTI_TTL: Duration = Duration::from_secs(15 * 60);

impl Sessions {
    /// The names of `value` for `purpose` under every secret, the current one first.
    fn tags(&self, purpose: &str, value: &str) -> Vec<String> {
        let keyring = self.keyring();
        (0..keyring.len())
            .filter_map(|i| keyring.tag(i, purpose, value))
            .map(|tag| format!("{purpose}:{tag}"))
            .collect()
    }

    /// Marks a login's `state` completed; `false` if it was before (on any replica), so a
    /// copied login cookie cannot be used twice.
    pub async fn claim_state(&self, state: &str) -> Result<bool, StoreError> {
        let names = self.tags("state", state);
        counted(self.store.claim_once(&names, self.login_timeout).await)
    }

    /// Marks a logout token's `jti` seen; `false` for a replay (on any replica).
    pub async fn claim_jti(&self, jti: &str) -> Result<bool, StoreError> {
        let names = self.tags("jti", jti);
        counted(self.store.claim_once(&names, JTI_TTL).await)
    }

    /// Ends every session of a subject and/or an IdP session id that started before now
    /// (back-channel logout). Rather than an index from users to sessions — which would cost
    /// memory for every session — the gateway remembers the logout itself, one small entry
    /// per logout, and sessions it covers are deleted when next read. The marker goes to
    /// the store (so every replica applies it) and to this process's mirror at once.
    pub async fn end_all(&self, sub: Option<&str>, sid: Option<&str>) -> Result<(), StoreError> {
        let at = now_ms();
        let horizon = at.saturating_sub(self.absolute_timeout.as_millis() as u64);
        let mut result = Ok(());
        for (purpose, value) in [("sub", sub), ("sid", sid)] {
            let Some(value) = value else { continue };
            let Some(marker) = self.tags(purpose, value).into_iter().next() else {
                continue;
            };
            let stored = self
                .store
                .end_sessions(&marker, at, self.absolute_timeout)
                .await;
            self.markers.insert(marker, at, horizon);
            if let Err(e) = counted(stored) {
                result = Err(e);
            }
        }
        result
    }

    /// Whether a back-channel logout covers this session (under any secret).
    pub(super) fn ended_by_logout(&self, s: &Session) -> bool {
        if self.markers.is_empty() {
            return false;
        }
        let mut names = self.tags("sub", &s.sub);
        if let Some(sid) = &s.sid {
            names.extend(self.tags("sid", sid));
        }
        self.markers
            .covers(names.iter().map(String::as_str), s.created_ms)
    }

    /// The session as the store holds it now, past any in-process cache: `None` when it
    /// is gone. A replica waiting for another one's refresh polls with this.
    pub async fn load_uncached(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        let keyring = self.keyring();
        for index in 0..keyring.len() {
            let Some(key) = keyring.store_key(index, id) else {
                continue;
            };
            let Some(sealed) = counted(self.store.get_uncached(&key).await)? else {
                continue;
            };
            if let Some(session) = keyring
                .open(index, id, &sealed)
                .and_then(|plain| serde_json::from_slice::<Session>(&plain).ok())
            {
                return Ok(Some(session));
            }
        }
        Ok(None)
    }

    /// The key the refresh lock of this session is taken on (under the current secret).
    fn lock_key(&self, id: &SessionId) -> Result<StoreKey, StoreError> {
        self.keyring()
            .store_key(0, id)
            .ok_or_else(|| StoreError("no session secret".into()))
    }

    /// Takes the session's refresh lock for `ttl`; `None` while another holds it.
    pub async fn lock_refresh(
        &self,
        id: &SessionId,
        ttl: Duration,
    ) -> Result<Option<RefreshLock>, StoreError> {
        let key = self.lock_key(id)?;
        let token = counted(self.store.lock(&key, ttl).await)?;
        Ok(token.map(|token| RefreshLock { key, token }))
    }

    /// Extends a held refresh lock; `false` when it was lost (expired and taken).
    pub async fn renew_refresh(
        &self,
        lock: &RefreshLock,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        counted(self.store.renew(&lock.key, &lock.token, ttl).await)
    }

    /// Releases a held refresh lock.
    pub async fn unlock_refresh(&self, lock: RefreshLock) -> Result<(), StoreError> {
        counted(self.store.unlock(&lock.key, &lock.token).await)
    }
}

/// A held refresh lock (see `Sessions::lock_refresh`).
#[derive(Debug)]
pub struct RefreshLock {
    key: StoreKey,
    token: LockToken,
}
