//! `GET|POST /oauth2/sign_out?rd=<path>`: ends the session everywhere. The session is
//! deleted server-side (a replayed cookie stops working at once) and the cookie cleared;
//! the refresh token is revoked at the IdP (RFC 7009); then the browser goes through the
//! IdP's `end_session_endpoint` (RP-Initiated Logout) back to `rd`.
//!
//! Cross-site requests cannot end a session (logout CSRF): a GET does so only for a
//! same-origin or user-typed navigation (`Sec-Fetch-Site: same-origin` or `none`; without
//! Fetch Metadata, a same-origin `Referer`), otherwise it shows a confirmation form. That
//! form POSTs a token bound to the session; a POST with a foreign `Origin` is refused.
//! Scripts that POST without `Origin` (curl, API clients) keep working. With
//! `session.sign_out_requires_post`, every GET shows the form.

use http::header::{self, HeaderMap};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};

use super::{query_params, single};
use crate::auth::Auth;
use crate::body::Body;
use crate::errors::{Error, Kind};
use crate::response;

/// The confirmation form's body is one small field.
const MAX_FORM: usize = 4096;

pub async fn handle(auth: &Auth, req: Request<Body>) -> Result<Response<Body>, Error> {
    let params = query_params(req.uri().query());
    let return_to = auth.sign_out_target(single(&params, "rd")?);
    let loaded = auth.identify(req.headers()).await?.session;
    if req.method() == Method::POST {
        if let Some(origin) = req.headers().get(header::ORIGIN) {
            if !same_origin(origin.to_str().unwrap_or("null"), auth.public_origin()) {
                tracing::info!(
                    event = "sign_out_refused",
                    reason = "foreign Origin",
                    "cross-origin sign-out refused"
                );
                return Ok(refused());
            }
        }
        let token = form_token(req).await?;
        if let (Some(token), Some(loaded)) = (token, &loaded) {
            if !auth.check_sign_out_token(loaded, &token) {
                tracing::info!(
                    event = "sign_out_refused",
                    reason = "bad form token",
                    "sign-out with a wrong token refused"
                );
                return Ok(refused());
            }
        }
    } else if auth.sign_out_requires_post()
        || !same_origin_navigation(req.headers(), auth.public_origin())
    {
        let token = loaded.as_ref().and_then(|l| auth.sign_out_token(l));
        return Ok(confirmation_page(&return_to, token.as_deref()));
    }
    let (location, clear_cookie) = auth.sign_out(loaded, return_to).await?;
    let mut resp = response::redirect(&location);
    resp.headers_mut().append(header::SET_COOKIE, clear_cookie);
    Ok(resp)
}

/// A GET the user made on this site or typed themselves.
fn same_origin_navigation(headers: &HeaderMap, public_origin: &str) -> bool {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = text("sec-fetch-site") {
        return site.eq_ignore_ascii_case("same-origin") || site.eq_ignore_ascii_case("none");
    }
    text("referer")
        .and_then(|r| url::Url::parse(r).ok())
        .is_some_and(|r| same_origin(&r.origin().ascii_serialization(), public_origin))
}

fn same_origin(origin: &str, public_origin: &str) -> bool {
    origin
        .trim_end_matches('/')
        .eq_ignore_ascii_case(public_origin)
}

/// The `token` field of a form POST, if the body has one.
async fn form_token(req: Request<Body>) -> Result<Option<String>, Error> {
    let body = Limited::new(req.into_body(), MAX_FORM)
        .collect()
        .await
        .map_err(|e| Error::with_source(Kind::BadRequest("unreadable request body"), e))?
        .to_bytes();
    Ok(url::form_urlencoded::parse(&body)
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned()))
}

fn refused() -> Response<Body> {
    response::html_response(
        StatusCode::FORBIDDEN,
        response::render(
            "403 Forbidden",
            "Sign-out was requested from another site and was not carried out. Use the sign-out button of this site.",
            "",
        ),
    )
}

fn confirmation_page(return_to: &str, token: Option<&str>) -> Response<Body> {
    let action = format!(
        "/oauth2/sign_out?rd={}",
        url::form_urlencoded::byte_serialize(return_to.as_bytes()).collect::<String>()
    );
    let token_field = token.map_or(String::new(), |t| {
        format!(
            "<input type=\"hidden\" name=\"token\" value=\"{}\">",
            response::escape(t)
        )
    });
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Sign out</title>\
<style>body{{font-family:system-ui,sans-serif;max-width:40rem;margin:4rem auto;color:#222}}</style></head>\
<body><h1>Sign out?</h1><form method=\"post\" action=\"{}\">{token_field}<button type=\"submit\">Sign out</button></form></body></html>",
        response::escape(&action)
    );
    response::html_response(StatusCode::OK, body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    const ORIGIN: &str = "https://app.test";

    #[test]
    fn only_same_origin_or_typed_navigations_sign_out_on_get() {
        for ok in [
            headers(&[("sec-fetch-site", "same-origin")]),
            headers(&[("sec-fetch-site", "none")]),
            headers(&[("referer", "https://app.test/page")]),
        ] {
            assert!(same_origin_navigation(&ok, ORIGIN), "{ok:?}");
        }
        for cross in [
            headers(&[("sec-fetch-site", "cross-site")]),
            headers(&[("sec-fetch-site", "same-site")]),
            // Fetch Metadata wins over a Referer that claims the site.
            headers(&[
                ("sec-fetch-site", "cross-site"),
                ("referer", "https://app.test/"),
            ]),
            headers(&[("referer", "https://evil.test/")]),
            headers(&[("referer", "https://app.test.evil.test/")]),
            headers(&[]),
        ] {
            assert!(!same_origin_navigation(&cross, ORIGIN), "{cross:?}");
        }
    }

    #[test]
    fn origins_compare_exactly() {
        assert!(same_origin("https://app.test", ORIGIN));
        assert!(same_origin("HTTPS://APP.TEST/", ORIGIN));
        for other in [
            "null",
            "https://app.test:8443",
            "http://app.test",
            "https://evil.test",
        ] {
            assert!(!same_origin(other, ORIGIN), "{other}");
        }
    }
}
