//! Server-side sessions, step 3 of the request path: the browser holds only a random id in
//! `__Host-portcullis` (or `portcullis` without `cookie_secure`); the store holds the sealed
//! session under a key derived from that id. Idle and absolute timeouts are enforced here on
//! every read, whatever the backend does with its TTLs.

pub mod crypto;
#[cfg(test)]
pub(crate) mod flaky;
mod fleet;
pub use fleet::RefreshLock;
pub mod login_cookie;
pub mod markers;
pub mod memory;
pub mod model;
pub mod redis;
pub mod store;

use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderValue};

use crate::clock::{now, UnixTime};
use crate::config::SessionConfig;
use crate::identity_headers::UserHeaders;
use crypto::{Keyring, SessionId};
pub use model::Session;
use store::{SessionStore, StoreError};

/// Counts a store failure in the metrics and passes the result on.
fn counted<T>(result: Result<T, StoreError>) -> Result<T, StoreError> {
    if result.is_err() {
        crate::metrics::get().store_error();
    }
    result
}

const SECURE_NAME: &str = "__Host-portcullis";
const PLAIN_NAME: &str = "portcullis";

/// Opened sessions kept in plain form, so a session in use is not decrypted and parsed
/// on every request. The store stays the truth: an entry is used only while the store
/// still holds exactly the sealed bytes it was opened from (a refresh, touch or logout
/// changes or removes them), and every expiry and logout check still runs on each read.
const OPENED_CACHE_MAX: u64 = 10_000;
/// Plain tokens of a session nobody uses do not linger in memory.
const OPENED_CACHE_IDLE: Duration = Duration::from_secs(300);

/// A session as opened from the store, with what every request derives from it (the
/// identity headers) built once.
#[derive(Debug)]
pub struct OpenedSession {
    session: Session,
    user_headers: OnceLock<Option<UserHeaders>>,
}

impl OpenedSession {
    pub fn new(session: Session) -> Self {
        OpenedSession {
            session,
            user_headers: OnceLock::new(),
        }
    }

    /// The headers that tell an upstream who this is (bearer, user, email, groups).
    pub fn user_headers(&self) -> Option<&UserHeaders> {
        self.user_headers
            .get_or_init(|| {
                let s = &self.session;
                UserHeaders::for_access_token(
                    s.access_token.expose(),
                    &s.sub,
                    s.email.as_deref(),
                    &s.groups,
                )
            })
            .as_ref()
    }
}

impl std::ops::Deref for OpenedSession {
    type Target = Session;
    fn deref(&self) -> &Session {
        &self.session
    }
}

/// A session read from the store, with what is needed to write it back.
#[derive(Debug)]
pub struct LoadedSession {
    pub id: SessionId,
    /// Shared with the opened-session cache: changes make a new one.
    pub session: Arc<OpenedSession>,
    /// The write this read is due (see `Sessions::settle`).
    upkeep: Upkeep,
}

/// What a read of the store found.
// Made once per request and consumed at once by `settle`: boxing the big variant would
// only add an allocation to the hot path.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Lookup {
    Missing,
    /// Timed out or ended by a back-channel logout: to be deleted.
    Gone(crypto::StoreKey),
    Found(LoadedSession),
}

/// The write a read is due.
#[derive(Debug)]
enum Upkeep {
    None,
    /// Record last-seen, over exactly these sealed bytes.
    Touch(Arc<[u8]>),
    /// Move from a retired secret's key to the current one.
    Migrate(crypto::StoreKey),
}

pub struct Sessions {
    /// Swapped whole on a secret reload (SIGHUP); readers take a cheap `Arc` clone.
    keyring: RwLock<Arc<Keyring>>,
    store: Arc<dyn SessionStore>,
    secure: bool,
    idle_timeout: Duration,
    absolute_timeout: Duration,
    /// `last_seen` is written back at most this often per session, not on every request.
    touch_interval: u64,
    /// Back-channel logouts (see `end_all`), mirrored from the store.
    markers: Arc<markers::LogoutMarkers>,
    /// How long a consumed login `state` is remembered.
    login_timeout: Duration,
    /// Store key → (the sealed bytes it was opened from, the opened session).
    opened: moka::sync::Cache<
        crypto::StoreKey,
        (Arc<[u8]>, Arc<OpenedSession>),
        crypto::StoreKeyHasher,
    >,
}

impl Sessions {
    pub fn new(cfg: &SessionConfig, keyring: Arc<Keyring>, store: Arc<dyn SessionStore>) -> Self {
        Sessions {
            keyring: RwLock::new(keyring),
            markers: store.markers().clone(),
            store,
            secure: cfg.cookie_secure,
            idle_timeout: cfg.idle_timeout,
            absolute_timeout: cfg.absolute_timeout,
            touch_interval: (cfg.idle_timeout.as_secs() / 4).clamp(1, 60),
            login_timeout: cfg.login_timeout,
            opened: moka::sync::Cache::builder()
                .max_capacity(OPENED_CACHE_MAX.min(cfg.max_sessions))
                .time_to_idle(OPENED_CACHE_IDLE)
                .build_with_hasher(crypto::StoreKeyHasher),
        }
    }

    fn keyring(&self) -> Arc<Keyring> {
        match self.keyring.read() {
            Ok(k) => k.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Replaces the secrets (SIGHUP reload). Sessions sealed under a secret still in the
    /// list keep working and move to the first secret on their next write.
    pub fn set_keyring(&self, keyring: Arc<Keyring>) {
        match self.keyring.write() {
            Ok(mut k) => *k = keyring,
            Err(poisoned) => *poisoned.into_inner() = keyring,
        }
    }

    pub fn cookie_name(&self) -> &'static str {
        if self.secure {
            SECURE_NAME
        } else {
            PLAIN_NAME
        }
    }

    pub fn store(&self) -> &Arc<dyn SessionStore> {
        &self.store
    }

    /// The session named by the request's cookie, read (never written): `Missing` for a
    /// missing, malformed, forged or unknown cookie, `Gone` for one that timed out or a
    /// back-channel logout ended, `Found` otherwise, with the upkeep it is due. `settle`
    /// does the writes.
    pub async fn load(&self, headers: &HeaderMap) -> Result<Lookup, StoreError> {
        let Some(id) = find_cookie(headers, self.cookie_name()).and_then(SessionId::from_cookie)
        else {
            return Ok(Lookup::Missing);
        };
        let keyring = self.keyring();
        for index in 0..keyring.len() {
            let Some(key) = keyring.store_key(index, &id) else {
                continue;
            };
            let Some(sealed) = counted(self.store.get(&key).await)? else {
                continue;
            };
            let Some(session) = self.open(&keyring, index, &id, &key, &sealed) else {
                continue;
            };
            let now = now();
            if self.expired(&session, now) || self.ended_by_logout(&session) {
                return Ok(Lookup::Gone(key));
            }
            // A session under a retired secret moves to the current one; last-seen is
            // written back at most every `touch_interval`.
            let upkeep = if index > 0 {
                Upkeep::Migrate(key)
            } else if now.saturating_sub(session.last_seen) >= self.touch_interval {
                Upkeep::Touch(sealed)
            } else {
                Upkeep::None
            };
            return Ok(Lookup::Found(LoadedSession {
                id,
                session,
                upkeep,
            }));
        }
        Ok(Lookup::Missing)
    }

    /// The session sealed in `sealed`: from the opened-session cache while the store holds
    /// exactly the bytes it was opened from, else decrypted, parsed and cached.
    fn open(
        &self,
        keyring: &Keyring,
        index: usize,
        id: &SessionId,
        key: &crypto::StoreKey,
        sealed: &Arc<[u8]>,
    ) -> Option<Arc<OpenedSession>> {
        if let Some((from, opened)) = self.opened.get(key) {
            // The memory store hands out the very bytes it holds; Redis a copy of them.
            if Arc::ptr_eq(&from, sealed) || from[..] == sealed[..] {
                return Some(opened);
            }
        }
        let session = keyring
            .open(index, id, sealed)
            .and_then(|plain| serde_json::from_slice::<Session>(&plain).ok())?;
        let opened = Arc::new(OpenedSession::new(session));
        self.opened.insert(*key, (sealed.clone(), opened.clone()));
        Some(opened)
    }

    /// The writes a lookup is due: deletes a gone session, moves one to the current
    /// secret, or records last-seen (compare-and-set over what was read: if a refresh saved
    /// new tokens meanwhile, its write stands and the next read touches instead).
    pub async fn settle(&self, lookup: Lookup) -> Result<Option<LoadedSession>, StoreError> {
        let mut loaded = match lookup {
            Lookup::Missing => return Ok(None),
            Lookup::Gone(key) => {
                counted(self.store.delete(&key).await)?;
                self.opened.invalidate(&key);
                return Ok(None);
            }
            Lookup::Found(loaded) => loaded,
        };
        match std::mem::replace(&mut loaded.upkeep, Upkeep::None) {
            Upkeep::None => {}
            Upkeep::Migrate(old_key) => {
                let session = seen_now(&loaded.session);
                self.save(&loaded.id, &session).await?;
                counted(self.store.delete(&old_key).await)?;
                self.opened.invalidate(&old_key);
                loaded.session = Arc::new(OpenedSession::new(session));
            }
            Upkeep::Touch(read) => {
                let session = seen_now(&loaded.session);
                let (key, fresh, ttl) = self.seal(&loaded.id, &session)?;
                counted(self.store.replace(key, read, fresh, ttl).await)?;
                loaded.session = Arc::new(OpenedSession::new(session));
            }
        }
        Ok(Some(loaded))
    }

    fn expired(&self, s: &Session, now: UnixTime) -> bool {
        now.saturating_sub(s.last_seen) > self.idle_timeout.as_secs()
            || now.saturating_sub(s.created_at) > self.absolute_timeout.as_secs()
    }

    /// Stores a new session under a fresh id (so a login never reuses an id the browser
    /// had before: no fixation) and returns the `Set-Cookie` value.
    pub async fn create(&self, session: &Session) -> Result<HeaderValue, StoreError> {
        let id = SessionId::random().map_err(|_| StoreError("random generator failed".into()))?;
        self.save(&id, session).await?;
        Ok(self.set_cookie(&id))
    }

    /// Writes the session back under the current secret.
    pub async fn save(&self, id: &SessionId, session: &Session) -> Result<(), StoreError> {
        let (key, sealed, ttl) = self.seal(id, session)?;
        counted(self.store.put(key, sealed, ttl).await)
    }

    /// The store key, sealed value and time-to-live for `session` under the current secret.
    fn seal(
        &self,
        id: &SessionId,
        session: &Session,
    ) -> Result<(crypto::StoreKey, Arc<[u8]>, Duration), StoreError> {
        let plain = serde_json::to_vec(session).map_err(|e| StoreError(e.to_string()))?;
        let keyring = self.keyring();
        let sealed = keyring
            .seal(id, &plain)
            .ok_or_else(|| StoreError("sealing failed".into()))?;
        let key = keyring
            .store_key(0, id)
            .ok_or_else(|| StoreError("no session secret".into()))?;
        let now = now();
        let absolute_left =
            (session.created_at + self.absolute_timeout.as_secs()).saturating_sub(now);
        let ttl = Duration::from_secs(absolute_left.min(self.idle_timeout.as_secs()).max(1));
        Ok((key, Arc::from(sealed), ttl))
    }

    /// The sign-out form token for this session (under the current secret).
    pub fn form_token(&self, id: &SessionId) -> Option<String> {
        self.keyring().form_token(0, id)
    }

    /// Whether `token` is this session's form token under any current secret (constant
    /// time).
    pub fn check_form_token(&self, id: &SessionId, token: &str) -> bool {
        let keyring = self.keyring();
        (0..keyring.len()).any(|i| {
            keyring
                .form_token(i, id)
                .is_some_and(|t| crate::secret::constant_time_eq(t.as_bytes(), token.as_bytes()))
        })
    }

    /// Deletes the session under every secret it could be stored with.
    pub async fn delete(&self, id: &SessionId) -> Result<(), StoreError> {
        let keyring = self.keyring();
        for index in 0..keyring.len() {
            if let Some(key) = keyring.store_key(index, id) {
                counted(self.store.delete(&key).await)?;
                self.opened.invalidate(&key);
            }
        }
        Ok(())
    }

    fn set_cookie(&self, id: &SessionId) -> HeaderValue {
        let secure = if self.secure { "; Secure" } else { "" };
        let value = format!(
            "{}={}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}{secure}",
            self.cookie_name(),
            id.to_cookie(),
            self.absolute_timeout.as_secs()
        );
        HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    /// A `Set-Cookie` value that removes the session cookie.
    pub fn clear_cookie(&self) -> HeaderValue {
        let secure = if self.secure { "; Secure" } else { "" };
        let value = format!(
            "{}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0{secure}",
            self.cookie_name()
        );
        HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static(""))
    }
}

/// A copy of `session` seen now (for the write-back of last-seen).
fn seen_now(session: &Session) -> Session {
    let mut session = session.clone();
    session.last_seen = now();
    session
}

#[cfg(test)]
impl Sessions {
    /// Tests: the session a browser holding `set_cookie` has, read and settled.
    pub(crate) async fn load_for(&self, set_cookie: &HeaderValue) -> Option<LoadedSession> {
        let lookup = self.load(&test_cookie_request(set_cookie)).await.ok()?;
        self.settle(lookup).await.ok().flatten()
    }
}

/// Tests: the `Cookie` header a browser would send back for a `Set-Cookie` value.
#[cfg(test)]
pub(crate) fn test_cookie_request(set_cookie: &HeaderValue) -> HeaderMap {
    let pair = set_cookie
        .to_str()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("");
    let mut h = HeaderMap::new();
    h.insert(
        header::COOKIE,
        HeaderValue::from_str(pair).expect("cookie pair"),
    );
    h
}

/// The value of the first cookie called `name` in the request's `Cookie` headers.
pub fn find_cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.trim())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::now_ms;
    use crate::secret::Secret;

    fn config(secrets: &[&str], idle: u64) -> SessionConfig {
        SessionConfig {
            secrets: secrets.iter().map(|s| Secret::new(*s)).collect(),
            cookie_secure: true,
            max_sessions: 100,
            idle_timeout: Duration::from_secs(idle),
            absolute_timeout: Duration::from_secs(3600),
            login_timeout: Duration::from_secs(600),
            refresh_before: Duration::from_secs(60),
            sign_out_requires_post: false,
            store: crate::config::StoreConfig::Memory,
        }
    }

    fn sessions(cfg: &SessionConfig, store: Arc<dyn SessionStore>) -> Sessions {
        Sessions::new(cfg, Arc::new(Keyring::new(&cfg.secrets)), store)
    }

    fn session() -> Session {
        Session {
            sub: "alice".into(),
            email: Some("alice@example.com".into()),
            name: None,
            groups: vec![],
            sid: None,
            access_token: Secret::new("at"),
            access_expires_at: None,
            refresh_token: None,
            id_token: None,
            created_at: now(),
            last_seen: now(),
            claims: Default::default(),
            created_ms: now_ms(),
        }
    }

    const A: &str = "0123456789abcdef0123456789abcdef";
    const B: &str = "fedcba9876543210fedcba9876543210";

    #[tokio::test]
    async fn created_session_loads_and_cookie_is_host_prefixed() {
        let cfg = config(&[A], 3600);
        let s = sessions(&cfg, Arc::new(memory::MemoryStore::new(10)));
        let set = s.create(&session()).await.unwrap();
        let text = set.to_str().unwrap();
        assert!(text.starts_with("__Host-portcullis="));
        for attr in ["Path=/", "HttpOnly", "Secure", "SameSite=Lax"] {
            assert!(text.contains(attr), "{text}");
        }
        let loaded = s.load_for(&set).await.unwrap();
        assert_eq!(loaded.session.sub, "alice");
    }

    #[tokio::test]
    async fn session_from_retired_secret_still_loads() {
        let store: Arc<dyn SessionStore> = Arc::new(memory::MemoryStore::new(10));
        let old = sessions(&config(&[A], 3600), store.clone());
        let set = old.create(&session()).await.unwrap();
        let rotated = sessions(&config(&[B, A], 3600), store.clone());
        assert!(rotated
            .settle(
                rotated
                    .load(&crate::session::test_cookie_request(&set))
                    .await
                    .unwrap()
            )
            .await
            .unwrap()
            .is_some());
        // Moved to the current secret: still loads after the old one is dropped.
        let only_new = sessions(&config(&[B], 3600), store);
        assert!(only_new
            .settle(
                only_new
                    .load(&crate::session::test_cookie_request(&set))
                    .await
                    .unwrap()
            )
            .await
            .unwrap()
            .is_some());
    }

    #[tokio::test]
    async fn cookie_from_another_secret_does_not_load() {
        let store: Arc<dyn SessionStore> = Arc::new(memory::MemoryStore::new(10));
        let a = sessions(&config(&[A], 3600), store.clone());
        let set = a.create(&session()).await.unwrap();
        let b = sessions(&config(&[B], 3600), store);
        assert!(b.load_for(&set).await.is_none());
    }

    #[tokio::test]
    async fn idle_session_expires() {
        let cfg = config(&[A], 1);
        let s = sessions(&cfg, Arc::new(memory::MemoryStore::new(10)));
        let mut old = session();
        old.last_seen -= 5;
        old.created_at -= 5;
        let set = s.create(&old).await.unwrap();
        assert!(s.load_for(&set).await.is_none());
    }

    #[tokio::test]
    async fn back_channel_logout_ends_older_sessions_only() {
        let cfg = config(&[A], 3600);
        let s = sessions(&cfg, Arc::new(memory::MemoryStore::new(10)));
        let mut alice = session();
        alice.sid = Some("idp-session-1".into());
        let before = s.create(&alice).await.unwrap();
        let mut bob = session();
        bob.sub = "bob".into();
        let bobs = s.create(&bob).await.unwrap();
        std::thread::sleep(Duration::from_millis(2));
        s.end_all(Some("alice"), None).await.unwrap();
        std::thread::sleep(Duration::from_millis(2));
        let mut again = session();
        again.created_ms = now_ms();
        let after = s.create(&again).await.unwrap();
        assert!(s.load_for(&before).await.is_none());
        assert!(s.load_for(&bobs).await.is_some());
        assert!(s.load_for(&after).await.is_some());
    }

    #[test]
    fn find_cookie_reads_every_header() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1; b=2"));
        h.append(header::COOKIE, HeaderValue::from_static("c=3"));
        assert_eq!(find_cookie(&h, "b"), Some("2"));
        assert_eq!(find_cookie(&h, "c"), Some("3"));
        assert_eq!(find_cookie(&h, "d"), None);
    }
}
