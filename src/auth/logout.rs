//! Ending sessions: sign-out by the user (the session deleted server-side, the refresh
//! token revoked at the IdP per RFC 7009, then RP-initiated logout) and back-channel
//! logout by the IdP (OpenID Connect Back-Channel Logout 1.0).

use http::header::HeaderValue;

use super::Auth;
use crate::errors::{Error, Kind};
use crate::session::LoadedSession;

impl Auth {
    /// Where `rd` may send the browser after sign-out (validated; `/` when unsafe).
    pub fn sign_out_target(&self, rd: Option<&str>) -> String {
        self.redirects.safe_target(rd)
    }

    /// Whether every GET sign-out shows the confirmation form (`session.sign_out_requires_post`).
    pub fn sign_out_requires_post(&self) -> bool {
        self.sign_out_requires_post
    }

    /// `server.public_url`'s origin, e.g. to check a request's `Origin`.
    pub fn public_origin(&self) -> &str {
        &self.public_origin
    }

    /// The token the sign-out confirmation form carries for this session.
    pub fn sign_out_token(&self, session: &LoadedSession) -> Option<String> {
        self.sessions.form_token(&session.id)
    }

    /// Whether `token` is this session's sign-out form token (constant time).
    pub fn check_sign_out_token(&self, session: &LoadedSession, token: &str) -> bool {
        self.sessions.check_form_token(&session.id, token)
    }

    /// Ends `session` (if any) and returns where the browser goes next (the IdP's
    /// `end_session_endpoint` when it has one, else `return_to`) and the `Set-Cookie`
    /// that clears the session cookie.
    pub async fn sign_out(
        &self,
        session: Option<LoadedSession>,
        return_to: String,
    ) -> Result<(String, HeaderValue), Error> {
        let mut location = return_to.clone();
        if let Some(session) = session {
            self.sessions
                .delete(&session.id)
                .await
                .map_err(|e| Error::with_source(Kind::StoreUnavailable, e))?;
            tracing::info!(event = "logout", sub = %session.session.sub, "session ended by sign-out");
            if let Some(client) = self.oidc.get() {
                if let Some(refresh_token) = &session.session.refresh_token {
                    client.revoke_refresh_token(refresh_token).await;
                }
                // Relative targets become absolute on the gateway's origin.
                let post_logout = if return_to.starts_with('/') {
                    format!("{}{return_to}", self.public_origin)
                } else {
                    return_to
                };
                if let Some(url) =
                    client.end_session_url(session.session.id_token.as_ref(), &post_logout)
                {
                    location = url.to_string();
                }
            }
        }
        Ok((location, self.sessions.clear_cookie()))
    }

    /// A logout token from the IdP: valid (signature, `iss`, `aud`, recent `iat`, the
    /// back-channel event, `sid` or `sub`, no `nonce`) and not replayed (`jti`) ends every
    /// session of that `sid`, or without one of that `sub` (§2.4). `Err` says why it was
    /// refused.
    pub async fn backchannel_logout(&self, token: &str) -> Result<(), Error> {
        let client = self.oidc.get().ok_or_else(|| Error::new(Kind::NotReady))?;
        let subject = client.validate_logout_token(token).await?;
        let store_error = |e| Error::with_source(Kind::StoreUnavailable, e);
        let fresh = self
            .sessions
            .claim_jti(&subject.jti)
            .await
            .map_err(store_error)?;
        if !fresh {
            return Err(Error::with_source(
                Kind::BadRequest("invalid logout token"),
                "replayed jti",
            ));
        }
        match subject.sid.as_deref() {
            Some(sid) => self.sessions.end_all(None, Some(sid)).await,
            None => self.sessions.end_all(subject.sub.as_deref(), None).await,
        }
        .map_err(store_error)?;
        tracing::info!(
            event = "backchannel_logout",
            sub = subject.sub.as_deref(),
            sid = subject.sid.as_deref(),
            "sessions ended by the identity provider"
        );
        Ok(())
    }
}
