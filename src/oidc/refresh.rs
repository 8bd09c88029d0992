//! Refresh, step 5 of the request path: when the access token is about to expire, trade the
//! refresh token for new tokens before forwarding. Single-flight: concurrent requests on one
//! session (all holding the same refresh token) share one call to the IdP and its outcome.
//! That matters because IdPs rotate refresh tokens and revoke the whole grant when an old
//! one is replayed, so a second call is not waste but a logout.

use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::digest;
use moka::future::Cache;
use oauth2::{RefreshToken, RequestTokenError, TokenResponse as _};

use super::id_token::{self, Expectations};
use super::OidcClient;
use crate::errors::{Error, Kind};
use crate::secret::Secret;
use crate::session::model::now;
use crate::session::{LoadedSession, Session, Sessions};

/// How a refresh ended.
#[derive(Debug, Clone)]
pub enum Refreshed {
    /// New tokens, already saved to the store.
    Fresh(Box<Session>),
    /// The IdP refused the refresh token (`invalid_grant`): the session is over.
    Ended,
    /// The IdP could not be reached or answered garbage: try again later.
    Unavailable,
}

/// Outcomes of recent refreshes, keyed by a hash of the refresh token they used: requests
/// that arrive while one runs wait for it; ones that come shortly after with the same stale
/// session read its result.
pub struct Refresher {
    outcomes: Cache<[u8; 32], Arc<Refreshed>>,
}

impl Default for Refresher {
    fn default() -> Self {
        Self::new()
    }
}

impl Refresher {
    pub fn new() -> Self {
        Refresher {
            outcomes: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(60))
                .build(),
        }
    }

    /// Whether the session's access token expires within `before` (and can be refreshed).
    pub fn is_stale(session: &Session, before: Duration) -> bool {
        session
            .access_expires_at
            .is_some_and(|at| at <= now() + before.as_secs())
    }

    /// Refreshes `loaded` once, however many requests ask at the same time.
    pub async fn refresh(
        &self,
        loaded: &LoadedSession,
        client: &OidcClient,
        sessions: &Sessions,
    ) -> Arc<Refreshed> {
        let Some(refresh_token) = loaded.session.refresh_token.as_ref() else {
            return Arc::new(Refreshed::Ended);
        };
        let key: [u8; 32] = digest::digest(&digest::SHA256, refresh_token.expose().as_bytes())
            .as_ref()
            .try_into()
            .unwrap_or([0; 32]);
        self.outcomes
            .get_with(key, async {
                let result = client.refresh(&loaded.session).await;
                crate::metrics::get().refresh(result.is_ok());
                let outcome = match result {
                    Ok(session) => match sessions.save(&loaded.id, &session).await {
                        Ok(()) => Refreshed::Fresh(Box::new(session)),
                        Err(e) => {
                            tracing::warn!(error = %e, "saving the refreshed session failed");
                            Refreshed::Unavailable
                        }
                    },
                    Err(RefreshError::Rejected(e)) => {
                        tracing::info!(event = "refresh_failed", sub = %loaded.session.sub, reason = %e, "refresh token rejected; session ended");
                        if let Err(e) = sessions.delete(&loaded.id).await {
                            tracing::warn!(error = %e, "deleting the ended session failed");
                        }
                        Refreshed::Ended
                    }
                    Err(RefreshError::Unavailable(e)) => {
                        tracing::warn!(event = "refresh_failed", reason = %e, "identity provider unavailable for refresh");
                        Refreshed::Unavailable
                    }
                };
                Arc::new(outcome)
            })
            .await
    }
}

pub enum RefreshError {
    /// `invalid_grant`: the refresh token is dead (revoked, expired, or replayed).
    Rejected(Error),
    /// Network trouble or a malformed answer; the session may still be good.
    Unavailable(Error),
}

impl OidcClient {
    /// One refresh-token grant (RFC 6749 §6). A new ID token, if any, must be for the same
    /// subject (OIDC Core §12.2).
    pub async fn refresh(&self, session: &Session) -> Result<Session, RefreshError> {
        let Some(refresh_token) = &session.refresh_token else {
            return Err(RefreshError::Rejected(Error::new(Kind::BadRequest(
                "no refresh token",
            ))));
        };
        let token = RefreshToken::new(refresh_token.expose().to_string());
        let resp = self
            .oauth
            .exchange_refresh_token(&token)
            .request_async(&self.http)
            .await
            .map_err(|e| match e {
                RequestTokenError::ServerResponse(r)
                    if matches!(
                        r.error(),
                        oauth2::basic::BasicErrorResponseType::InvalidGrant
                    ) =>
                {
                    RefreshError::Rejected(Error::with_source(
                        Kind::BadRequest("session ended"),
                        "refresh token rejected (invalid_grant)",
                    ))
                }
                other => RefreshError::Unavailable(Error::with_source(
                    Kind::Idp("refresh failed"),
                    other.to_string(),
                )),
            })?;
        let mut next = session.clone();
        if let Some(id_token) = resp.extra_fields().id_token.clone() {
            let claims = id_token::validate(
                &id_token,
                &self.jwks,
                &Expectations {
                    issuer: self.issuer(),
                    client_id: &self.client_id,
                    algorithms: &self.algorithms,
                    nonce: None,
                    groups_claim: &self.groups_claim,
                    policy_claims: &self.policy_claims,
                },
            )
            .await
            .map_err(RefreshError::Unavailable)?;
            if claims.sub != session.sub {
                return Err(RefreshError::Rejected(Error::with_source(
                    Kind::BadRequest("session ended"),
                    "refreshed ID token is for another subject",
                )));
            }
            next.email = claims.email.or(next.email);
            next.name = claims.name.or(next.name);
            next.groups = claims.groups;
            next.claims = claims.claims;
            next.id_token = Some(Secret::new(id_token));
        }
        next.access_token = Secret::new(resp.access_token().secret().clone());
        next.access_expires_at = resp.expires_in().map(|d| now() + d.as_secs());
        if let Some(rotated) = resp.refresh_token() {
            next.refresh_token = Some(Secret::new(rotated.secret().clone()));
        }
        Ok(next)
    }
}
