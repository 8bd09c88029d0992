//! The IdP's signing keys (JWKS), cached. An unknown `kid` triggers a refetch (the IdP
//! rotated keys), at most once per `REFETCH_INTERVAL`, so forged tokens with random kids
//! cannot make the gateway hammer the IdP.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use url::Url;

use super::http::IdpHttp;
use crate::errors::{Error, Kind};

const REFETCH_INTERVAL: Duration = Duration::from_secs(10);

pub struct Jwks {
    http: IdpHttp,
    uri: Url,
    keys: RwLock<Arc<JwkSet>>,
    /// Serializes refetches and remembers when the last one ran.
    last_fetch: tokio::sync::Mutex<Instant>,
}

impl Jwks {
    pub async fn load(http: IdpHttp, uri: Url) -> Result<Self, Error> {
        let keys: JwkSet = http
            .get_json(&uri, "jwks", "fetching the JWKS failed")
            .await?;
        Ok(Jwks {
            http,
            uri,
            keys: RwLock::new(Arc::new(keys)),
            last_fetch: tokio::sync::Mutex::new(Instant::now()),
        })
    }

    fn current(&self) -> Arc<JwkSet> {
        match self.keys.read() {
            Ok(k) => k.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The key for `kid` (or the only key when the token names none).
    pub async fn key(&self, kid: Option<&str>) -> Result<DecodingKey, Error> {
        if let Some(key) = find(&self.current(), kid) {
            return key;
        }
        {
            let mut last = self.last_fetch.lock().await;
            // Another task may have refetched while we waited.
            if let Some(key) = find(&self.current(), kid) {
                return key;
            }
            if last.elapsed() >= REFETCH_INTERVAL {
                *last = Instant::now();
                let fresh: JwkSet = self
                    .http
                    .get_json(&self.uri, "jwks", "fetching the JWKS failed")
                    .await?;
                match self.keys.write() {
                    Ok(mut k) => *k = Arc::new(fresh),
                    Err(poisoned) => *poisoned.into_inner() = Arc::new(fresh),
                }
            }
        }
        find(&self.current(), kid).unwrap_or_else(|| {
            Err(Error::with_source(
                Kind::Idp("token signed with an unknown key"),
                "no JWK matches the token's kid",
            ))
        })
    }
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
        let mut v = Validation::new(header.alg);
        v.algorithms = algorithms.to_vec();
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
