//! `GET|POST /oauth2/sign_out?rd=<path>`: ends the session everywhere. The session is
//! deleted server-side (a replayed cookie stops working at once) and the cookie cleared;
//! the refresh token is revoked at the IdP (RFC 7009); then the browser goes through the
//! IdP's `end_session_endpoint` (RP-Initiated Logout) back to `rd`. With
//! `session.sign_out_requires_post`, a GET only shows a confirmation form, so another site
//! cannot log a user out with a link or an image.

use http::header;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::{page, query_params, single};
use crate::errors::{Error, Kind};
use crate::gateway::Auth;
use crate::proxy::Body;

pub async fn handle(auth: &Auth, req: &Request<Incoming>) -> Result<Response<Body>, Error> {
    let params = query_params(req.uri().query());
    let return_to = auth.redirects.safe_target(single(&params, "rd")?);
    if auth.sign_out_requires_post && req.method() != Method::POST {
        return Ok(confirmation_page(&return_to));
    }
    let loaded = auth
        .sessions
        .load(req.headers())
        .await
        .map_err(|e| Error::with_source(Kind::Internal, e))?;
    let mut location = return_to.clone();
    if let Some(loaded) = loaded {
        auth.sessions
            .delete(&loaded.id)
            .await
            .map_err(|e| Error::with_source(Kind::Internal, e))?;
        tracing::info!(event = "logout", sub = %loaded.session.sub, "session ended by sign-out");
        if let Some(client) = auth.oidc.get() {
            if let Some(refresh_token) = &loaded.session.refresh_token {
                client.revoke_refresh_token(refresh_token).await;
            }
            // Relative targets become absolute on the gateway's origin.
            let post_logout = if return_to.starts_with('/') {
                format!("{}{return_to}", auth.public_origin)
            } else {
                return_to.clone()
            };
            if let Some(url) =
                client.end_session_url(loaded.session.id_token.as_ref(), &post_logout)
            {
                location = url.to_string();
            }
        }
    }
    let mut resp = page::redirect(&location);
    resp.headers_mut()
        .append(header::SET_COOKIE, auth.sessions.clear_cookie());
    Ok(resp)
}

fn confirmation_page(return_to: &str) -> Response<Body> {
    let action = format!(
        "/oauth2/sign_out?rd={}",
        url::form_urlencoded::byte_serialize(return_to.as_bytes()).collect::<String>()
    );
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Sign out</title>\
<style>body{{font-family:system-ui,sans-serif;max-width:40rem;margin:4rem auto;color:#222}}</style></head>\
<body><h1>Sign out?</h1><form method=\"post\" action=\"{}\"><button type=\"submit\">Sign out</button></form></body></html>",
        page::escape(&action)
    );
    page::html_response(StatusCode::OK, body)
}
