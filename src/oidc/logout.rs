//! Ending sessions at the IdP: RFC 7009 revocation of the refresh token, the RP-initiated
//! logout URL (OpenID Connect RP-Initiated Logout 1.0 §2), and validation of back-channel
//! logout tokens (OpenID Connect Back-Channel Logout 1.0 §2.6).

use base64::Engine;
use serde::Deserialize;
use url::Url;

use super::http::IdpCall;
use super::{ClientAuth, OidcClient};
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

/// Why the revocation request could not be built.
#[derive(Debug, thiserror::Error)]
enum RevocationRequestError {
    #[error("client authentication: {0}")]
    Auth(Error),
    #[error(transparent)]
    Http(http::Error),
}

fn invalid(reason: &'static str) -> Error {
    Error::with_source(Kind::BadRequest("invalid logout token"), reason)
}

impl OidcClient {
    /// Revokes the refresh token at the IdP, when it has a revocation endpoint. Best effort:
    /// the session is already gone on our side, so a failure is logged, not shown.
    ///
    /// Built here rather than with the `oauth2` crate, which refuses non-https revocation
    /// endpoints outright (loopback IdPs in development and tests are plain http).
    pub async fn revoke_refresh_token(&self, token: &Secret) {
        let Some(endpoint) = &self.metadata.revocation_endpoint else {
            tracing::debug!("the IdP advertises no revocation endpoint; refresh token not revoked");
            return;
        };
        let request = match self.revocation_request(endpoint, token) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "building the revocation request failed");
                return;
            }
        };
        match self.http.send(request, IdpCall::Revocation).await {
            Ok(resp) if resp.status().is_success() => {
                tracing::debug!("refresh token revoked at the IdP");
            }
            Ok(resp) => tracing::warn!(
                status = resp.status().as_u16(),
                // RFC 7009 §2.2.1: an OAuth error body, e.g. invalid_client.
                idp_error = %super::printable(&String::from_utf8_lossy(resp.body()), 200),
                "the IdP refused to revoke the refresh token"
            ),
            Err(e) => tracing::warn!(error = %e, "revoking the refresh token at the IdP failed"),
        }
    }

    fn revocation_request(
        &self,
        endpoint: &Url,
        token: &Secret,
    ) -> Result<http::Request<crate::body::Body>, RevocationRequestError> {
        let mut form = url::form_urlencoded::Serializer::new(String::new());
        form.append_pair("token", token.expose())
            .append_pair("token_type_hint", "refresh_token");
        let mut request = http::Request::post(endpoint.as_str())
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(http::header::ACCEPT, "application/json");
        // Client authentication as at the token endpoint (RFC 7009 §2.1, RFC 6749 §2.3.1).
        match &self.auth {
            ClientAuth::Secret {
                secret,
                in_body: false,
            } => {
                let enc = |s: &str| {
                    url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>()
                };
                let basic = base64::engine::general_purpose::STANDARD.encode(format!(
                    "{}:{}",
                    enc(&self.client_id),
                    enc(secret.expose())
                ));
                request = request.header(http::header::AUTHORIZATION, format!("Basic {basic}"));
            }
            ClientAuth::Secret {
                secret,
                in_body: true,
            } => {
                form.append_pair("client_id", &self.client_id)
                    .append_pair("client_secret", secret.expose());
            }
            ClientAuth::None | ClientAuth::PrivateKeyJwt(_) => {
                form.append_pair("client_id", &self.client_id);
            }
        }
        for (name, value) in self.auth_params().map_err(RevocationRequestError::Auth)? {
            form.append_pair(name, &value);
        }
        request
            .body(crate::body::full(form.finish()))
            .map_err(RevocationRequestError::Http)
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
        let (key, mut v) = self
            .jwks
            .verifier(token, &self.algorithms, self.issuer(), invalid)
            .await?;
        v.leeway = 60;
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
        let now = crate::clock::now();
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
