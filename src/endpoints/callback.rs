//! `GET /oauth2/callback`: completes a login. Checks `state` (constant time) against the
//! login cookie, the IdP's `error`, RFC 9207 `iss`, exchanges the code with the PKCE
//! verifier, validates the ID token, and creates a session under a fresh id. The login
//! cookie is cleared on every outcome; a replayed `state` is refused before the IdP is asked.

use http::header;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use super::{query_params, single};
use crate::auth::Auth;
use crate::body::Body;
use crate::clock::{now, now_ms};
use crate::errors::{Error, Kind};
use crate::oidc::login::PendingLogin;
use crate::oidc::printable;
use crate::request::RequestInfo;
use crate::response;
use crate::secret::constant_time_eq;
use crate::session::login_cookie::is_issued_state;
use crate::session::{crypto::SessionId, find_cookie, Session};

pub async fn handle(
    auth: &Auth,
    req: &Request<Incoming>,
    info: &RequestInfo<'_>,
) -> Response<Body> {
    let params = query_params(req.uri().query());
    let state = single(&params, "state").ok().flatten().map(str::to_owned);
    let mut resp = match complete(auth, req, &params, state.as_deref()).await {
        Ok(resp) => resp,
        Err(e) => {
            crate::metrics::get().login("failed", failure_reason(&e));
            tracing::info!(event = "login_failed", request_id = info.request_id, reason = %e, "login failed");
            response::error(&e, info.request_id, true)
        }
    };
    if let Some(clear) = state.as_deref().and_then(|s| auth.login_cookies.clear(s)) {
        resp.headers_mut().append(header::SET_COOKIE, clear);
    }
    // The callback URL carries the code: it must not leak through Referer.
    resp.headers_mut().insert(
        header::REFERRER_POLICY,
        header::HeaderValue::from_static("no-referrer"),
    );
    resp
}

/// A fixed label for the metrics (never error text).
fn failure_reason(e: &Error) -> &'static str {
    match e.kind {
        Kind::BadRequest(_) => "invalid_callback",
        Kind::Idp(_) => "idp_failure",
        Kind::NotReady => "not_ready",
        _ => "internal",
    }
}

async fn complete(
    auth: &Auth,
    req: &Request<Incoming>,
    params: &[(String, String)],
    state: Option<&str>,
) -> Result<Response<Body>, Error> {
    let oidc = auth.oidc.get().ok_or_else(|| Error::new(Kind::NotReady))?;
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
    let payload = auth
        .login_cookies
        .open(req.headers(), state)
        .ok_or_else(unknown)?;
    let pending: PendingLogin = serde_json::from_str(&payload).map_err(|_| unknown())?;
    if !constant_time_eq(pending.state.as_bytes(), state.as_bytes()) {
        return Err(unknown());
    }
    if now().saturating_sub(pending.started_at) > auth.login_timeout.as_secs() {
        return Err(unknown());
    }
    // One completion per state, even with a copy of the cookie.
    if !auth.consume_state(state) {
        return Err(unknown());
    }

    // The IdP's own words on a failed authorization, logged whatever happens next (even
    // when the response is refused below): the operator needs them to fix e.g. a scope.
    let idp_error = single(params, "error")?;
    if let Some(error) = idp_error {
        let description = single(params, "error_description")?.unwrap_or("");
        tracing::warn!(
            event = "authorization_error",
            idp_error = %printable(error, 64),
            idp_error_description = %printable(description, 300),
            "the identity provider answered the authorization request with an error"
        );
    }

    // RFC 9207 §2.4: when the IdP promises `iss`, it must be there and be this issuer —
    // on error responses too.
    match single(params, "iss")? {
        Some(iss) if iss == oidc.issuer() => {}
        Some(_) => {
            return Err(Error::new(Kind::BadRequest(
                "the login response came from another issuer",
            )))
        }
        None if oidc.requires_iss_parameter() => {
            return Err(Error::new(Kind::BadRequest(
                "the login response names no issuer",
            )))
        }
        None => {}
    }

    if let Some(error) = idp_error {
        let code: String = error
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .take(64)
            .collect();
        crate::metrics::get().login("failed", "idp_error_response");
        let message = format!(
            "The identity provider did not sign you in (error: {code}). You can try again."
        );
        return Ok(response::html_response(
            StatusCode::FORBIDDEN,
            response::render("Sign-in was not completed", &message, ""),
        ));
    }

    let code = single(params, "code")?
        .ok_or_else(|| Error::new(Kind::BadRequest("the login response has no code")))?
        .to_string();
    let return_to = pending.return_to.clone();
    let tokens = pending.complete(code, oidc).await?;

    // No fixation: whatever session the browser had is ended; the new one gets a fresh id.
    let old =
        find_cookie(req.headers(), auth.sessions.cookie_name()).and_then(SessionId::from_cookie);
    if let Some(old) = old {
        auth.sessions
            .delete(&old)
            .await
            .map_err(|e| Error::with_source(Kind::Internal, e))?;
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
    let set_cookie = auth
        .sessions
        .create(&session)
        .await
        .map_err(|e| Error::with_source(Kind::Internal, e))?;
    crate::metrics::get().login("completed", "ok");
    tracing::info!(event = "login", sub = %session.sub, "login completed");
    let mut resp = response::redirect(&return_to);
    resp.headers_mut().append(header::SET_COOKIE, set_cookie);
    Ok(resp)
}
