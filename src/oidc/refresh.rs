//! The refresh-token grant (RFC 6749 §6) and what the IdP says about the user after it
//! (OIDC Core §12.2): protocol only. Single flight, storing the new tokens and what a
//! failure means for the session are the auth service's (`crate::auth::refresh`).

use oauth2::{RefreshToken, TokenResponse as _};

use super::claims::Profile;
use super::http::IdpCall;
use super::id_token::{self, Expectations};
use super::token_error::{classify, TokenFailure};
use super::OidcClient;
use crate::clock::now;
use crate::secret::Secret;

/// What the token endpoint returned for a refresh.
pub struct Grant {
    pub access_token: Secret,
    pub access_expires_at: Option<u64>,
    /// A rotated refresh token; `None` when the IdP keeps the old one valid.
    pub refresh_token: Option<Secret>,
    pub id_token: Option<String>,
}

/// The identity after a refresh, next to the tokens already saved.
pub enum IdentityUpdate {
    Unchanged,
    Updated {
        profile: Profile,
        id_token: Option<Secret>,
    },
    /// A valid new ID token names another `sub`: the tokens are not this user's.
    OtherSubject,
}

impl OidcClient {
    /// One refresh-token grant (RFC 6749 §6).
    pub async fn redeem_refresh_token(
        &self,
        refresh_token: &Secret,
    ) -> Result<Grant, TokenFailure> {
        let token = RefreshToken::new(refresh_token.expose().to_string());
        let mut request = self.oauth.exchange_refresh_token(&token);
        let auth = self
            .auth_params()
            .map_err(|e| TokenFailure::Refused(e.to_string()))?;
        for (name, value) in auth {
            request = request.add_extra_param(name, value);
        }
        let resp = request
            .request_async(&self.http.token_endpoint(IdpCall::Refresh))
            .await
            .map_err(classify)?;
        Ok(Grant {
            access_token: Secret::new(resp.access_token().secret().clone()),
            access_expires_at: resp.expires_in().map(|d| now() + d.as_secs()),
            refresh_token: resp
                .refresh_token()
                .map(|t| Secret::new(t.secret().clone())),
            id_token: resp.extra_fields().id_token.clone(),
        })
    }

    /// The identity after a refresh: a new ID token must pass OIDC Core §12.2 (signature,
    /// same `iss`, `aud`, same `sub`; an unknown `kid` makes the JWKS refetch at once);
    /// with `oidc.userinfo = "always"` userinfo is asked again. A check that fails keeps
    /// the claims as they were and logs a warning: the new tokens are good either way.
    pub async fn refreshed_identity(
        &self,
        sub: &str,
        current: &Profile,
        access_token: &Secret,
        id_token: Option<String>,
    ) -> IdentityUpdate {
        let mut profile = current.clone();
        let mut new_id_token = None;
        if let Some(token) = id_token {
            let checked = id_token::validate(
                &token,
                &self.jwks,
                &Expectations {
                    issuer: self.issuer(),
                    client_id: &self.client_id,
                    algorithms: &self.algorithms,
                    nonce: None,
                },
            )
            .await;
            match checked {
                Ok(claims) if claims.sub != sub => return IdentityUpdate::OtherSubject,
                Ok(claims) => {
                    profile.overlay(&claims.other, self.wanted());
                    new_id_token = Some(Secret::new(token));
                }
                Err(e) => {
                    tracing::warn!(event = "refresh_id_token_invalid", sub = %sub, error = %e, "the refreshed ID token failed validation; keeping the new tokens and the identity as it was");
                }
            }
        }
        if self.wants_userinfo(false, true) {
            match self.userinfo(access_token, sub).await {
                Ok(claims) => profile.overlay(&claims, self.wanted()),
                Err(e) => {
                    tracing::warn!(event = "refresh_userinfo_failed", sub = %sub, error = %e, "userinfo after a refresh failed; keeping the identity as it was");
                }
            }
        }
        let unchanged = new_id_token.is_none() && profile == *current;
        if unchanged {
            IdentityUpdate::Unchanged
        } else {
            IdentityUpdate::Updated {
                profile,
                id_token: new_id_token,
            }
        }
    }
}
