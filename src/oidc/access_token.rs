//! API clients' own bearer tokens (routes with `accept_bearer = true`): a JWT access token
//! (RFC 9068) validated locally against the IdP's keys — an asymmetric algorithm the IdP
//! advertises (never `none`, never HMAC), `iss`, `aud` = `oidc.api_audience`, `exp`
//! (required), `nbf`, and an `iat` that is not in the future.

use serde::Deserialize;

use super::OidcClient;
use crate::errors::{Error, Kind};

/// Who a valid API token speaks for.
#[derive(Debug)]
pub struct ApiIdentity {
    pub sub: String,
    pub email: Option<String>,
    pub groups: Vec<String>,
    pub claims: std::collections::BTreeMap<String, Vec<String>>,
}

#[derive(Deserialize)]
struct AccessClaims {
    sub: String,
    iat: Option<u64>,
    email: Option<String>,
    #[serde(flatten)]
    other: serde_json::Map<String, serde_json::Value>,
}

/// Clock skew tolerated for `exp`, `nbf` and `iat`.
const LEEWAY_SECS: u64 = 30;

fn invalid(reason: &'static str) -> Error {
    Error::with_source(Kind::BadRequest("invalid bearer token"), reason)
}

impl OidcClient {
    pub async fn validate_access_token(&self, token: &str) -> Result<ApiIdentity, Error> {
        let Some(audience) = self.api_audience.as_deref() else {
            return Err(invalid("oidc.api_audience is not configured"));
        };
        let (key, mut v) = self
            .jwks
            .verifier(token, &self.algorithms, self.issuer(), invalid)
            .await?;
        v.leeway = LEEWAY_SECS;
        v.validate_exp = true;
        v.validate_nbf = true;
        v.set_audience(&[audience]);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let claims = jsonwebtoken::decode::<AccessClaims>(token, &key, &v)
            .map_err(|_| invalid("signature, issuer, audience or time check failed"))?
            .claims;
        // A token "issued" in the future was minted with a wrong clock or to outlive its
        // key; RFC 9068 §4 makes iat REQUIRED and it must not lie ahead.
        if claims
            .iat
            .is_some_and(|iat| iat > crate::clock::now() + LEEWAY_SECS)
        {
            return Err(invalid("iat is in the future"));
        }
        let groups = super::claims::groups_from(&claims.other, &self.groups_claim);
        Ok(ApiIdentity {
            claims: super::claims::claims_from(&claims.other, &self.policy_claims),
            sub: claims.sub,
            email: claims.email,
            groups,
        })
    }
}
