//! The demo's sample upstream: a dashboard page that shows what the gateway forwarded —
//! the identity headers and the decoded claims of the bearer token, never the token itself.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::{header, Request, Response, StatusCode};

use crate::body::Body;
use crate::response::{self, escape};

pub fn handle<B>(req: &Request<B>) -> Response<Body> {
    let header_text = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("(not sent)")
            .to_string()
    };
    let claims = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .and_then(decode_payload)
        .unwrap_or_else(|| "(no bearer token)".to_string());
    let rows: String = [
        "x-forwarded-user",
        "x-forwarded-email",
        "x-forwarded-groups",
        "x-forwarded-for",
        "x-request-id",
    ]
    .iter()
    .map(|h| format!("<tr><th>{h}</th><td>{}</td></tr>", escape(&header_text(h))))
    .collect();
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Demo dashboard</title>\
<style>body{{font-family:system-ui,sans-serif;max-width:48rem;margin:3rem auto;color:#222}}th{{text-align:left;padding-right:1rem}}pre{{background:#f4f4f4;padding:1rem;overflow:auto}}</style></head>\
<body><h1>Demo dashboard</h1><p>This page is the <em>upstream</em>: an app that knows nothing about login. \
portcullis logged you in at the identity provider and forwarded this request with your identity.</p>\
<h2>Identity headers</h2><table>{rows}</table>\
<h2>Bearer token claims</h2><p>The gateway sent <code>Authorization: Bearer &lt;access token&gt;</code>; its decoded claims:</p><pre>{}</pre>\
<p>Path: <code>{}</code></p><p><a href=\"/oauth2/sign_out\">Sign out</a></p></body></html>",
        escape(&claims),
        escape(req.uri().path()),
    );
    response::html_response(StatusCode::OK, body)
}

/// The JWT's payload as pretty JSON (not verified: this is a display).
fn decode_payload(jwt: &str) -> Option<String> {
    let payload = jwt.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    serde_json::to_string_pretty(&value).ok()
}
