//! The UserInfo endpoint (OIDC Core §5.3), for claims the ID token does not carry. Many
//! IdPs (node `oidc-provider` by default, among others) put scope claims such as `email`
//! only here when they issue an access token, so without it email and group policies
//! would deny everyone.
//!
//! The response is `application/json` or a signed `application/jwt`, verified with the
//! IdP's keys. Its `sub` must be the ID token's (§5.3.2): a mismatch is a failure, never
//! merged.

use http::header::{self, HeaderValue};
use serde_json::{Map, Value};

use super::http::IdpCall;
use super::id_token::allowed_algorithms;
use super::OidcClient;
use crate::config::UserinfoMode;
use crate::errors::{Error, Kind};
use crate::secret::Secret;

fn failed(reason: impl Into<crate::errors::BoxError>) -> Error {
    Error::with_source(
        Kind::Idp("the identity provider's userinfo endpoint failed, so your identity is incomplete; please try again or contact the operator"),
        reason,
    )
}

impl OidcClient {
    /// Whether to call userinfo for an ID token that does (`incomplete`) or does not lack
    /// a claim the gateway needs, at login or after a refresh.
    pub fn wants_userinfo(&self, incomplete: bool, after_refresh: bool) -> bool {
        if self.metadata.userinfo_endpoint.is_none() {
            return false;
        }
        match self.userinfo {
            UserinfoMode::Never => false,
            UserinfoMode::Always => true,
            UserinfoMode::Auto => incomplete && !after_refresh,
        }
    }

    /// The userinfo claims for `access_token`, checked to be about `sub`.
    pub async fn userinfo(
        &self,
        access_token: &Secret,
        sub: &str,
    ) -> Result<Map<String, Value>, Error> {
        let endpoint = self
            .metadata
            .userinfo_endpoint
            .as_ref()
            .ok_or_else(|| failed("the identity provider advertises no userinfo_endpoint"))?;
        let bearer = HeaderValue::from_str(&format!("Bearer {}", access_token.expose()))
            .map_err(|_| failed("the access token is not a valid header value"))?;
        let req = http::Request::get(endpoint.as_str())
            .header(header::ACCEPT, "application/json, application/jwt")
            .header(header::AUTHORIZATION, bearer)
            .body(crate::body::empty())
            .map_err(failed)?;
        let resp = self.http.send(req, IdpCall::Userinfo).await?;
        if !resp.status().is_success() {
            // RFC 6750 §3: the reason is in WWW-Authenticate (error="invalid_token", ...).
            let challenge = resp
                .headers()
                .get(header::WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .map(|v| super::printable(v, 200))
                .unwrap_or_default();
            return Err(failed(format!(
                "userinfo answered {} {challenge}",
                resp.status()
            )));
        }
        let media_type = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|v| v.trim().to_ascii_lowercase())
            .unwrap_or_default();
        let claims = match media_type.as_str() {
            "application/json" => serde_json::from_slice::<Map<String, Value>>(resp.body())
                .map_err(|e| failed(format!("userinfo is not a JSON object: {e}")))?,
            "application/jwt" => {
                let text = std::str::from_utf8(resp.body())
                    .map_err(|_| failed("signed userinfo is not text"))?;
                self.verify_signed_userinfo(text.trim()).await?
            }
            other => {
                return Err(failed(format!(
                    "userinfo has content type {other:?} (expected application/json or application/jwt)"
                )))
            }
        };
        match claims.get("sub").and_then(Value::as_str) {
            Some(s) if s == sub => Ok(claims),
            Some(_) => Err(failed(
                "userinfo sub does not match the ID token's sub (OIDC Core 5.3.2)",
            )),
            None => Err(failed("userinfo has no sub")),
        }
    }

    /// A signed userinfo response: a JWS by one of the IdP's keys; `iss` and `aud`, when
    /// present (§5.3.2 says SHOULD), must be the issuer and this client. An encrypted
    /// (JWE, five parts) response is refused: the gateway registers no encryption key.
    async fn verify_signed_userinfo(&self, token: &str) -> Result<Map<String, Value>, Error> {
        if token.split('.').count() != 3 {
            return Err(failed(
                "userinfo is not a signed JWT (encrypted userinfo is not supported)",
            ));
        }
        let advertised = allowed_algorithms(&self.metadata.userinfo_signing_alg_values_supported);
        let algorithms = if self
            .metadata
            .userinfo_signing_alg_values_supported
            .is_empty()
        {
            &self.algorithms
        } else {
            &advertised
        };
        let (key, mut v) = self
            .jwks
            .verifier(token, algorithms, self.issuer(), failed)
            .await?;
        v.validate_aud = false;
        v.validate_exp = true;
        v.leeway = 60;
        v.set_required_spec_claims(&["sub"]);
        let claims = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &v)
            .map_err(|e| failed(format!("signed userinfo does not verify: {e}")))?
            .claims;
        let for_us = match claims.get("aud") {
            None => true,
            Some(Value::String(a)) => a == &self.client_id,
            Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(&self.client_id)),
            Some(_) => false,
        };
        if !for_us {
            return Err(failed("signed userinfo is for another audience"));
        }
        Ok(claims)
    }
}
