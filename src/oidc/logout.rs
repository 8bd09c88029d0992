//! Ending sessions at the IdP: RFC 7009 revocation of the refresh token, the RP-initiated
//! logout URL (OpenID Connect RP-Initiated Logout 1.0 §2), and validation of back-channel
//! logout tokens (OpenID Connect Back-Channel Logout 1.0 §2.6).

use jsonwebtoken::Validation;
use oauth2::{RefreshToken, StandardRevocableToken};
use serde::Deserialize;
use url::Url;

use super::OidcClient;
use crate::errors::{Error, Kind};
use crate::secret::Secret;

const BACKCHANNEL_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// Who a valid logout token says to log out.
#[derive(Debug)]
pub struct LogoutSubject {
    pub sub: Option<String>,
    pub sid: Option<String>,
    pub jti: String,
}

#[derive(Deserialize)]
struct LogoutClaims {
    sub: Option<String>,
    sid: Option<String>,
    jti: Option<String>,
    iat: Option<u64>,
    nonce: Option<serde_json::Value>,
    events: Option<serde_json::Map<String, serde_json::Value>>,
}

fn invalid(reason: &'static str) -> Error {
    Error::with_source(Kind::BadRequest("invalid logout token"), reason)
}

impl OidcClient {
    /// Revokes the refresh token at the IdP, when it has a revocation endpoint. Best effort:
    /// the session is already gone on our side, so a failure is logged, not shown.
    pub async fn revoke_refresh_token(&self, token: &Secret) {
        let token =
            StandardRevocableToken::RefreshToken(RefreshToken::new(token.expose().to_string()));
        let request = match self.oauth.revoke_token(token) {
            Ok(r) => r,
            Err(_) => return, // no revocation endpoint advertised
        };
        if let Err(e) = request.request_async(&self.http).await {
            tracing::warn!(error = %e, "revoking the refresh token at the IdP failed");
        }
    }

    /// The IdP's `end_session_endpoint` with `id_token_hint`, `client_id` and
    /// `post_logout_redirect_uri`, if the IdP has one.
    pub fn end_session_url(
        &self,
        id_token: Option<&Secret>,
        post_logout_redirect_uri: &str,
    ) -> Option<Url> {
        let mut url = self.metadata.end_session_endpoint.clone()?;
        {
            let mut q = url.query_pairs_mut();
            if let Some(hint) = id_token {
                q.append_pair("id_token_hint", hint.expose());
            }
            q.append_pair("client_id", &self.client_id);
            q.append_pair("post_logout_redirect_uri", post_logout_redirect_uri);
        }
        Some(url)
    }

    /// Validates a back-channel logout token (§2.6): signature, iss, aud, iat, the
    /// back-channel event, sub and/or sid, no nonce, a jti.
    pub async fn validate_logout_token(&self, token: &str) -> Result<LogoutSubject, Error> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| invalid("not a JWT"))?;
        if !self.algorithms.contains(&header.alg) {
            return Err(invalid("algorithm not accepted"));
        }
        let key = self.jwks.key(header.kid.as_deref()).await?;
        let mut v = Validation::new(header.alg);
        v.algorithms = self.algorithms.clone();
        v.leeway = 60;
        v.set_issuer(&[self.issuer()]);
        v.set_audience(&[&self.client_id]);
        v.set_required_spec_claims(&["iss", "aud", "iat"]);
        let claims = jsonwebtoken::decode::<LogoutClaims>(token, &key, &v)
            .map_err(|_| invalid("signature, issuer, audience or time check failed"))?
            .claims;
        if claims.nonce.is_some() {
            return Err(invalid("a logout token must not contain a nonce"));
        }
        if !claims
            .events
            .as_ref()
            .is_some_and(|e| e.contains_key(BACKCHANNEL_EVENT))
        {
            return Err(invalid("missing the back-channel logout event"));
        }
        let now = crate::session::model::now();
        if claims
            .iat
            .is_none_or(|iat| iat > now + 60 || iat + 600 < now)
        {
            return Err(invalid("iat is not recent"));
        }
        if claims.sub.is_none() && claims.sid.is_none() {
            return Err(invalid("neither sub nor sid"));
        }
        let jti = claims.jti.ok_or_else(|| invalid("missing jti"))?;
        Ok(LogoutSubject {
            sub: claims.sub,
            sid: claims.sid,
            jti,
        })
    }
}
