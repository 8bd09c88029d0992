//! Logging in, for `/oauth2/start` and `/oauth2/callback` (the handlers only speak HTTP).
//! The login in progress lives in a cookie sealed to its `state`; completing it checks
//! that `state` (issued form, constant time, once), the IdP's `error`, RFC 9207 `iss`,
//! exchanges the code with the PKCE verifier, and creates a session under a fresh id.

use http::header::{HeaderMap, HeaderValue};

use super::Auth;
use crate::clock::{now, now_ms};
use crate::errors::{Error, Kind};
use crate::oidc::login::{PendingLogin, TokenSet};
use crate::oidc::{printable, OidcClient};
use crate::secret::constant_time_eq;
use crate::session::login_cookie::is_issued_state;
use crate::session::{crypto::SessionId, find_cookie, Session};

/// What the IdP sent back to `/oauth2/callback` (each parameter at most once).
pub struct CallbackParams<'a> {
    pub state: Option<&'a str>,
    pub code: Option<&'a str>,
    pub iss: Option<&'a str>,
    pub error: Option<&'a str>,
    pub error_description: Option<&'a str>,
}

/// How a callback ended, when it was a genuine answer to one of our logins.
pub enum Completion {
    /// Signed in: go back to `return_to` with the new session cookie.
    SignedIn {
        return_to: String,
        set_cookie: HeaderValue,
    },
    /// The IdP said no (`error=`); `code` is its error code, made safe to show.
    Refused { code: String },
}

impl Auth {
    /// A fresh login returning to `rd` (validated): the IdP URL to send the browser to and
    /// the login cookie to set.
    pub fn start_login(&self, rd: Option<&str>) -> Result<(String, HeaderValue), Error> {
        let oidc = self.oidc.get().ok_or_else(|| Error::new(Kind::NotReady))?;
        let return_to = self.redirects.safe_target(rd);
        let (pending, authorize_url) = oidc.begin_login(return_to);
        let payload =
            serde_json::to_string(&pending).map_err(|e| Error::with_source(Kind::Internal, e))?;
        let set_cookie = self
            .login_cookies
            .seal(&pending.state, payload)
            .ok_or_else(|| Error::with_source(Kind::Internal, "sealing the login cookie failed"))?;
        crate::metrics::get().login("started", "ok");
        Ok((authorize_url.to_string(), set_cookie))
    }

    /// The `Set-Cookie` that removes the login cookie of `state` (only for a `state` of
    /// the form the gateway issues).
    pub fn clear_login_cookie(&self, state: &str) -> Option<HeaderValue> {
        self.login_cookies.clear(state)
    }

    /// Completes a login from the callback's parameters and the browser's cookies.
    pub async fn complete_login(
        &self,
        headers: &HeaderMap,
        params: &CallbackParams<'_>,
    ) -> Result<Completion, Error> {
        let oidc = self.oidc.get().ok_or_else(|| Error::new(Kind::NotReady))?;
        let pending = self.pending_login(headers, params.state)?;
        if let Some(error) = params.error {
            // The IdP's own words, logged whatever happens next (even when the response
            // is refused below): the operator needs them to fix e.g. a scope.
            tracing::warn!(
                event = "authorization_error",
                idp_error = %printable(error, 64),
                idp_error_description = %printable(params.error_description.unwrap_or(""), 300),
                "the identity provider answered the authorization request with an error"
            );
        }
        check_issuer(oidc, params.iss)?;
        if let Some(error) = params.error {
            let code = error
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                .take(64)
                .collect();
            crate::metrics::get().login("failed", "idp_error_response");
            return Ok(Completion::Refused { code });
        }
        let code = params
            .code
            .ok_or_else(|| Error::new(Kind::BadRequest("the login response has no code")))?
            .to_string();
        let return_to = pending.return_to.clone();
        let tokens = pending.complete(code, oidc).await?;
        let set_cookie = self.create_session(headers, tokens).await?;
        Ok(Completion::SignedIn {
            return_to,
            set_cookie,
        })
    }

    /// The login in progress that this `state` names: issued form, a login cookie that
    /// opens, the same `state` inside (constant time), not expired, not used before.
    fn pending_login(
        &self,
        headers: &HeaderMap,
        state: Option<&str>,
    ) -> Result<PendingLogin, Error> {
        let state =
            state.ok_or_else(|| Error::new(Kind::BadRequest("the login response has no state")))?;
        if !is_issued_state(state) {
            return Err(Error::new(Kind::BadRequest(
                "the login response's state is not one this gateway issues",
            )));
        }
        let unknown = || {
            Error::new(Kind::BadRequest(
                "unknown, expired or already used login; please sign in again",
            ))
        };
        let payload = self
            .login_cookies
            .open(headers, state)
            .ok_or_else(unknown)?;
        let pending: PendingLogin = serde_json::from_str(&payload).map_err(|_| unknown())?;
        if !constant_time_eq(pending.state.as_bytes(), state.as_bytes())
            || now().saturating_sub(pending.started_at) > self.login_timeout.as_secs()
        {
            return Err(unknown());
        }
        // One completion per state, even with a copy of the cookie.
        let fresh = self
            .used_states
            .entry(state.to_string())
            .or_insert(())
            .is_fresh();
        if !fresh {
            return Err(unknown());
        }
        Ok(pending)
    }

    /// Ends whatever session the browser had (no fixation) and stores the new one under a
    /// fresh id; returns its `Set-Cookie`.
    async fn create_session(
        &self,
        headers: &HeaderMap,
        tokens: TokenSet,
    ) -> Result<HeaderValue, Error> {
        let internal = |e| Error::with_source(Kind::Internal, e);
        let old =
            find_cookie(headers, self.sessions.cookie_name()).and_then(SessionId::from_cookie);
        if let Some(old) = old {
            self.sessions.delete(&old).await.map_err(internal)?;
        }
        let now = now();
        let session = Session {
            sub: tokens.sub,
            email: tokens.profile.email,
            name: tokens.profile.name,
            groups: tokens.profile.groups,
            claims: tokens.profile.claims,
            sid: tokens.sid,
            access_token: tokens.access_token,
            access_expires_at: tokens.access_expires_at,
            refresh_token: tokens.refresh_token,
            id_token: Some(tokens.id_token),
            created_at: now,
            last_seen: now,
            created_ms: now_ms(),
        };
        let set_cookie = self.sessions.create(&session).await.map_err(internal)?;
        crate::metrics::get().login("completed", "ok");
        tracing::info!(event = "login", sub = %session.sub, "login completed");
        Ok(set_cookie)
    }
}

/// RFC 9207 §2.4: when the IdP promises `iss`, it must be there and be this issuer, on
/// error responses too (a mix-up attack answers from another IdP).
fn check_issuer(oidc: &OidcClient, iss: Option<&str>) -> Result<(), Error> {
    match iss {
        Some(iss) if iss == oidc.issuer() => Ok(()),
        Some(_) => Err(Error::new(Kind::BadRequest(
            "the login response came from another issuer",
        ))),
        None if oidc.requires_iss_parameter() => Err(Error::new(Kind::BadRequest(
            "the login response names no issuer",
        ))),
        None => Ok(()),
    }
}
