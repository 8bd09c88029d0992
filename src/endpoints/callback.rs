//! `GET /oauth2/callback`: the IdP's answer to a login (see `Auth::complete_login`). The
//! login cookie is cleared on every outcome, and the page never leaks the code through
//! `Referer`.

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};

use super::{query_params, single};
use crate::auth::login::{CallbackParams, Completion};
use crate::auth::Auth;
use crate::body::Body;
use crate::errors::{Error, Kind};
use crate::request::RequestInfo;
use crate::response;

pub async fn handle<B>(auth: &Auth, req: &Request<B>, info: &RequestInfo<'_>) -> Response<Body> {
    let params = query_params(req.uri().query());
    let state = single(&params, "state").ok().flatten();
    let outcome = match callback_params(&params) {
        Ok(p) => auth.complete_login(req.headers(), &p).await,
        Err(e) => Err(e),
    };
    let mut resp = match outcome {
        Ok(Completion::SignedIn {
            return_to,
            set_cookie,
        }) => {
            let mut resp = response::redirect(&return_to);
            resp.headers_mut().append(header::SET_COOKIE, set_cookie);
            resp
        }
        Ok(Completion::Refused { code }) => response::html_response(
            StatusCode::FORBIDDEN,
            response::render(
                "Sign-in was not completed",
                &format!(
                    "The identity provider did not sign you in (error: {code}). You can try again."
                ),
                "",
            ),
        ),
        Err(e) => {
            crate::metrics::get().login("failed", failure_reason(&e));
            tracing::info!(event = "login_failed", request_id = info.request_id, reason = %e, "login failed");
            response::error(&e, info.request_id, true)
        }
    };
    if let Some(clear) = state.and_then(|s| auth.clear_login_cookie(s)) {
        resp.headers_mut().append(header::SET_COOKIE, clear);
    }
    resp.headers_mut().insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

fn callback_params(params: &[(String, String)]) -> Result<CallbackParams<'_>, Error> {
    Ok(CallbackParams {
        state: single(params, "state")?,
        code: single(params, "code")?,
        iss: single(params, "iss")?,
        error: single(params, "error")?,
        error_description: single(params, "error_description")?,
    })
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
