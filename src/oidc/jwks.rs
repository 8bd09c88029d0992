//! The IdP's signing keys (JWKS), cached.
//!
//! Two reasons to fetch again:
//! - **age**: the set is refetched once it is older than the IdP's `Cache-Control: max-age`
//!   (clamped to [`MIN_MAX_AGE`, `MAX_MAX_AGE`]; [`DEFAULT_MAX_AGE`] without one);
//! - **an unknown `kid`**: the IdP rotated keys (Keycloak and others sign with a new key as
//!   soon as they publish it). The refetch happens at once, or as soon as
//!   [`MIN_FETCH_SPACING`] after the previous fetch has passed, and every request that was
//!   waiting for a key when that fetch started shares its result.
//!
//! Forged tokens with random `kid`s can therefore cost the IdP at most one fetch per
//! spacing interval and can never push a needed refetch further away: the limit counts
//! from the last fetch, not from the last request, and a `kid` that a fresh set did not
//! contain is refused without another fetch for [`UNKNOWN_KID_TTL`] (the per-kid limit).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use url::Url;

use super::http::{IdpCall, IdpHttp};
use crate::errors::{Error, Kind};

/// At most one fetch per this interval, however many unknown kids arrive.
const MIN_FETCH_SPACING: Duration = Duration::from_millis(500);
/// A kid that a fetch made after it was seen did not contain is refused this long.
const UNKNOWN_KID_TTL: Duration = Duration::from_secs(30);
const DEFAULT_MAX_AGE: Duration = Duration::from_secs(600);
const MIN_MAX_AGE: Duration = Duration::from_secs(60);
const MAX_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// One fetched key set and how long it may be used without asking again.
struct KeySet {
    keys: JwkSet,
    fetched: Instant,
    max_age: Duration,
}

pub struct Jwks {
    http: IdpHttp,
    uri: Url,
    current: RwLock<Arc<KeySet>>,
    /// Held while fetching; waiters queue here instead of fetching again.
    fetching: tokio::sync::Mutex<()>,
    /// Fetches started so far: a waiter that saw N and finds more knows a fetch began
    /// (and, once it holds the lock, ended) after it looked.
    fetches_started: AtomicU64,
    unknown_kids: moka::sync::Cache<String, ()>,
}

impl Jwks {
    pub async fn load(http: IdpHttp, uri: Url) -> Result<Self, Error> {
        let first = fetch(&http, &uri).await?;
        Ok(Jwks {
            http,
            uri,
            current: RwLock::new(Arc::new(first)),
            fetching: tokio::sync::Mutex::new(()),
            fetches_started: AtomicU64::new(1),
            unknown_kids: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(UNKNOWN_KID_TTL)
                .build(),
        })
    }

    fn current(&self) -> Arc<KeySet> {
        match self.current.read() {
            Ok(k) => k.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn replace(&self, set: KeySet) {
        let set = Arc::new(set);
        match self.current.write() {
            Ok(mut k) => *k = set,
            Err(poisoned) => *poisoned.into_inner() = set,
        }
    }

    /// The key for `kid` (or the only key when the token names none).
    pub async fn key(&self, kid: Option<&str>) -> Result<DecodingKey, Error> {
        let set = self.current();
        if set.fetched.elapsed() >= set.max_age {
            self.refetch_expired().await;
        }
        if let Some(key) = find(&self.current().keys, kid) {
            return key;
        }
        let label = kid.unwrap_or("");
        if self.unknown_kids.contains_key(label) {
            return Err(unknown_key());
        }
        let seen = self.fetches_started.load(Ordering::Acquire);
        {
            let _fetching = self.fetching.lock().await;
            if self.fetches_started.load(Ordering::Acquire) == seen {
                // No fetch began since this kid was looked for: start one, once the
                // spacing since the last one has passed.
                let since = self.current().fetched.elapsed();
                if since < MIN_FETCH_SPACING {
                    tokio::time::sleep(MIN_FETCH_SPACING - since).await;
                }
                self.fetch_now().await?;
            }
        }
        match find(&self.current().keys, kid) {
            Some(key) => key,
            None => {
                self.unknown_kids.insert(label.to_string(), ());
                Err(unknown_key())
            }
        }
    }

    /// The regular refresh: one caller fetches, the others keep using the current set.
    async fn refetch_expired(&self) {
        let Ok(_fetching) = self.fetching.try_lock() else {
            return;
        };
        if self.current().fetched.elapsed() < self.current().max_age {
            return; // another caller just did it
        }
        if let Err(e) = self.fetch_now().await {
            tracing::warn!(error = %e, "refreshing the identity provider's JWKS failed; keeping the current keys");
        }
    }

    /// Fetches now; the caller holds `fetching`.
    async fn fetch_now(&self) -> Result<(), Error> {
        self.fetches_started.fetch_add(1, Ordering::AcqRel);
        match fetch(&self.http, &self.uri).await {
            Ok(set) => {
                tracing::debug!(keys = set.keys.keys.len(), max_age = ?set.max_age, "JWKS fetched");
                self.replace(set);
                Ok(())
            }
            Err(e) => {
                // Keep the keys; the attempt counts for the spacing, and the next regular
                // try comes after the shortest age.
                let keys = self.current().keys.clone();
                self.replace(KeySet {
                    keys,
                    fetched: Instant::now(),
                    max_age: MIN_MAX_AGE,
                });
                Err(e)
            }
        }
    }
}

async fn fetch(http: &IdpHttp, uri: &Url) -> Result<KeySet, Error> {
    let (keys, headers): (JwkSet, _) = http
        .get_json_with_headers(uri, IdpCall::Jwks, "fetching the JWKS failed")
        .await?;
    Ok(KeySet {
        keys,
        fetched: Instant::now(),
        max_age: max_age(&headers),
    })
}

/// `Cache-Control: max-age` of the JWKS response, clamped; `no-cache`/`no-store` count as
/// the minimum (a key set refetched on every token would hand the IdP our traffic).
fn max_age(headers: &http::HeaderMap) -> Duration {
    let Some(value) = headers
        .get(http::header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
    else {
        return DEFAULT_MAX_AGE;
    };
    let mut age = DEFAULT_MAX_AGE;
    for directive in value.split(',').map(str::trim) {
        let lower = directive.to_ascii_lowercase();
        if lower == "no-cache" || lower == "no-store" {
            return MIN_MAX_AGE;
        }
        if let Some(secs) = lower
            .strip_prefix("max-age=")
            .and_then(|n| n.trim_matches('"').parse::<u64>().ok())
        {
            age = Duration::from_secs(secs);
        }
    }
    age.clamp(MIN_MAX_AGE, MAX_MAX_AGE)
}

fn unknown_key() -> Error {
    Error::with_source(
        Kind::Idp("token signed with an unknown key"),
        "no JWK matches the token's kid, also after refetching the JWKS",
    )
}

impl Jwks {
    /// The shared first half of every JWT check: the header's `alg` must be one of
    /// `algorithms` (the IdP's advertised asymmetric ones: never `none`, never HMAC), its
    /// key must be in the JWKS. Returns that key and a `Validation` pinned to those
    /// algorithms and `issuer`; callers add audience, leeway and required claims.
    /// `reject` makes the error for a malformed or refused header.
    pub async fn verifier(
        &self,
        token: &str,
        algorithms: &[Algorithm],
        issuer: &str,
        reject: fn(&'static str) -> Error,
    ) -> Result<(DecodingKey, Validation), Error> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| reject("not a JWT"))?;
        if !algorithms.contains(&header.alg) {
            return Err(reject("algorithm not accepted"));
        }
        let key = self.key(header.kid.as_deref()).await?;
        // Exactly the header's algorithm (already one the IdP advertises): jsonwebtoken
        // refuses a key whose family differs from any listed one, so listing RS256 and
        // ES256 together would refuse every token of an IdP that publishes both.
        let v = Validation::new(header.alg);
        let mut v = v;
        v.set_issuer(&[issuer]);
        Ok((key, v))
    }
}

fn find(set: &JwkSet, kid: Option<&str>) -> Option<Result<DecodingKey, Error>> {
    let jwk = match kid {
        Some(kid) => set.find(kid)?,
        None if set.keys.len() == 1 => &set.keys[0],
        None => return None,
    };
    Some(DecodingKey::from_jwk(jwk).map_err(|e| Error::with_source(Kind::Idp("unusable JWK"), e)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn headers(cache_control: &str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert(
            http::header::CACHE_CONTROL,
            http::HeaderValue::from_str(cache_control).unwrap(),
        );
        h
    }

    #[test]
    fn max_age_follows_cache_control_within_bounds() {
        assert_eq!(max_age(&http::HeaderMap::new()), DEFAULT_MAX_AGE);
        assert_eq!(
            max_age(&headers("public, max-age=3600")),
            Duration::from_secs(3600)
        );
        assert_eq!(max_age(&headers("max-age=1")), MIN_MAX_AGE);
        assert_eq!(max_age(&headers("max-age=99999999")), MAX_MAX_AGE);
        assert_eq!(max_age(&headers("no-store")), MIN_MAX_AGE);
        assert_eq!(max_age(&headers("max-age=junk")), DEFAULT_MAX_AGE);
    }

    /// A JWKS endpoint whose key set can be swapped, counting fetches.
    struct FakeJwks {
        addr: std::net::SocketAddr,
        body: Arc<RwLock<String>>,
        fetches: Arc<AtomicUsize>,
    }

    async fn fake_jwks(body: String) -> FakeJwks {
        use hyper::service::service_fn;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let body = Arc::new(RwLock::new(body));
        let fetches = Arc::new(AtomicUsize::new(0));
        let (b, f) = (body.clone(), fetches.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (b, f) = (b.clone(), f.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |_req| {
                        f.fetch_add(1, Ordering::SeqCst);
                        let text = b.read().unwrap().clone();
                        async move {
                            Ok::<_, std::convert::Infallible>(http::Response::new(
                                crate::body::full(text),
                            ))
                        }
                    });
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, svc)
                        .await;
                });
            }
        });
        FakeJwks {
            addr,
            body,
            fetches,
        }
    }

    fn set_of(kids: &[&str]) -> String {
        // A valid P-256 public key; only the kids matter here.
        let keys: Vec<serde_json::Value> = kids
            .iter()
            .map(|kid| {
                serde_json::json!({
                    "kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256", "use": "sig",
                    "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uE9V9V8E",
                    "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
                })
            })
            .collect();
        serde_json::json!({ "keys": keys }).to_string()
    }

    async fn jwks_for(fake: &FakeJwks) -> Jwks {
        crate::install_crypto_provider();
        let upstream = crate::http_client::HttpClient::new(
            Duration::from_secs(2),
            Duration::from_secs(5),
            &[],
        );
        let uri = Url::parse(&format!("http://{}/jwks", fake.addr)).unwrap();
        Jwks::load(IdpHttp::new(upstream), uri).await.unwrap()
    }

    #[tokio::test]
    async fn random_kids_cannot_starve_the_refetch_a_rotation_needs() {
        let fake = fake_jwks(set_of(&["old"])).await;
        let jwks = Arc::new(jwks_for(&fake).await);
        // A flood of forged kids, concurrently: they share fetches.
        let flood: Vec<_> = (0..200)
            .map(|i| {
                let jwks = jwks.clone();
                tokio::spawn(async move { jwks.key(Some(&format!("forged-{i}"))).await.is_err() })
            })
            .collect();
        for task in flood {
            assert!(task.await.unwrap());
        }
        let during_flood = fake.fetches.load(Ordering::SeqCst);
        assert!(
            during_flood <= 6,
            "{during_flood} fetches for 200 forged kids"
        );
        // The same forged kid again: refused without a fetch (per-kid limit).
        assert!(jwks.key(Some("forged-7")).await.is_err());
        assert_eq!(fake.fetches.load(Ordering::SeqCst), during_flood);
        // Now the IdP really rotates: the new kid is found at once.
        *fake.body.write().unwrap() = set_of(&["new", "old"]);
        let started = Instant::now();
        assert!(jwks.key(Some("new")).await.is_ok());
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        assert!(jwks.key(Some("old")).await.is_ok());
    }

    #[tokio::test]
    async fn rotation_right_after_a_fetch_is_found_after_the_spacing() {
        let fake = fake_jwks(set_of(&["old"])).await;
        let jwks = jwks_for(&fake).await;
        *fake.body.write().unwrap() = set_of(&["new"]);
        // Within the spacing of the load: waits for it, then fetches; never refuses.
        assert!(jwks.key(Some("new")).await.is_ok());
        assert_eq!(fake.fetches.load(Ordering::SeqCst), 2);
    }
}
