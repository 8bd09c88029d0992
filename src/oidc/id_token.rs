//! ID token validation (OIDC Core §3.1.3.7): signature with one of the IdP's advertised
//! asymmetric algorithms only (never `none`, never HMAC), `iss`, `aud`, `azp`, `exp`, `iat`
//! with a small leeway, and `nonce` against the one sent with this login.

use jsonwebtoken::Algorithm;
use serde::Deserialize;

use super::jwks::Jwks;
use crate::errors::{Error, Kind};
use crate::secret::constant_time_eq;

/// Clock skew tolerated between gateway and IdP.
const LEEWAY_SECS: u64 = 60;

/// The asymmetric algorithms the gateway accepts at all.
const ASYMMETRIC: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// Intersection of what the IdP advertises and what is safe; RS256 when it says nothing
/// (OIDC Discovery §3 makes RS256 the default).
pub fn allowed_algorithms(advertised: &[String]) -> Vec<Algorithm> {
    let names: Vec<&str> = if advertised.is_empty() {
        vec!["RS256"]
    } else {
        advertised.iter().map(String::as_str).collect()
    };
    ASYMMETRIC
        .into_iter()
        .filter(|a| {
            names
                .iter()
                .any(|n| n.parse::<Algorithm>().ok() == Some(*a))
        })
        .collect()
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Audience {
    #[allow(dead_code)] // checked by jsonwebtoken; only the count matters here
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
struct RawClaims {
    sub: String,
    aud: Audience,
    iat: Option<u64>,
    azp: Option<String>,
    nonce: Option<String>,
    sid: Option<String>,
    #[serde(flatten)]
    other: serde_json::Map<String, serde_json::Value>,
}

/// What the gateway keeps from a valid ID token.
#[derive(Debug, Clone)]
pub struct IdClaims {
    pub sub: String,
    pub sid: Option<String>,
    /// The other claims, for `Profile` (and `Wanted::missing_from`).
    pub other: serde_json::Map<String, serde_json::Value>,
}

pub struct Expectations<'a> {
    pub issuer: &'a str,
    pub client_id: &'a str,
    pub algorithms: &'a [Algorithm],
    /// The login's nonce; `None` for ID tokens from a refresh, which need not carry one.
    pub nonce: Option<&'a str>,
}

fn invalid(reason: impl Into<crate::errors::BoxError>) -> Error {
    Error::with_source(
        Kind::Idp("the identity provider sent an invalid ID token"),
        reason,
    )
}

pub async fn validate(
    token: &str,
    jwks: &Jwks,
    want: &Expectations<'_>,
) -> Result<IdClaims, Error> {
    let (key, mut v) = jwks
        .verifier(token, want.algorithms, want.issuer, invalid)
        .await?;
    v.leeway = LEEWAY_SECS;
    v.validate_exp = true;
    v.set_audience(&[want.client_id]);
    v.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
    let data = jsonwebtoken::decode::<RawClaims>(token, &key, &v).map_err(invalid)?;
    let c = data.claims;

    // §3.1.3.7 items 4–5: with several audiences, azp must be present; when present it is us.
    let several_audiences = matches!(&c.aud, Audience::Many(list) if list.len() > 1);
    match c.azp.as_deref() {
        Some(azp) if azp != want.client_id => return Err(invalid("azp is another client")),
        None if several_audiences => return Err(invalid("azp missing with several audiences")),
        _ => {}
    }
    let now = crate::clock::now();
    match c.iat {
        Some(iat) if iat > now + LEEWAY_SECS => return Err(invalid("iat is in the future")),
        Some(_) => {}
        None => return Err(invalid("iat missing")),
    }
    if let Some(expected) = want.nonce {
        match c.nonce.as_deref() {
            Some(n) if constant_time_eq(n.as_bytes(), expected.as_bytes()) => {}
            Some(_) => return Err(invalid("nonce does not match this login")),
            None => return Err(invalid("nonce missing")),
        }
    }
    Ok(IdClaims {
        sub: c.sub,
        sid: c.sid,
        other: c.other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_advertised_asymmetric_algorithms_are_allowed() {
        let advertised = ["HS256", "RS256", "none", "ES256"].map(String::from);
        assert_eq!(
            allowed_algorithms(&advertised),
            vec![Algorithm::RS256, Algorithm::ES256]
        );
        assert_eq!(allowed_algorithms(&[]), vec![Algorithm::RS256]);
    }
}
