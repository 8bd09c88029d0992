//! The gateway's own responses, all built here: small pages, JSON and text answers,
//! redirects, and every error and decision turned into a response (`error`, `forbidden`,
//! `unauthorized`, `invalid_token`, `login_or_unauthorized`), each with the headers such a
//! response carries: no caching, no sniffing, no referrer, and a CSP that allows nothing
//! but the inline style. A leaf: it knows the body type and the error kinds, nothing of
//! the request path.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};

use crate::body::{self, Body};
use crate::errors::{Error, Kind};

pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A minimal HTML page; every argument is escaped.
pub fn render(title: &str, message: &str, request_id: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title>\
<style>body{{font-family:system-ui,sans-serif;max-width:40rem;margin:4rem auto;color:#222}}small{{color:#777}}</style>\
</head><body><h1>{t}</h1><p>{m}</p><p><a href=\"/\">Start again</a></p><p><small>request id: {r}</small></p></body></html>",
        t = escape(title),
        m = escape(message),
        r = escape(request_id)
    )
}

fn no_store(resp: &mut Response<Body>) {
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
}

/// A response of the gateway's own: status, content type, body, and the no-store /
/// nosniff / no-referrer headers every such response carries.
fn own(status: StatusCode, content_type: &'static str, body: Body) -> Response<Body> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    no_store(&mut resp);
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

pub fn html_response(status: StatusCode, body: String) -> Response<Body> {
    let mut resp = own(status, "text/html; charset=utf-8", body::full(body));
    resp.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"),
    );
    resp
}

pub fn json_response(status: StatusCode, body: String) -> Response<Body> {
    own(status, "application/json", body::full(body))
}

pub fn text_response(status: StatusCode, body: impl Into<bytes::Bytes>) -> Response<Body> {
    own(status, "text/plain; charset=utf-8", body::full(body))
}

/// A body-less answer (forward-auth's 202).
pub fn empty_response(status: StatusCode) -> Response<Body> {
    let mut resp = Response::new(body::empty());
    *resp.status_mut() = status;
    no_store(&mut resp);
    resp
}

/// `GET /metrics`: the Prometheus text exposition (OpenMetrics content type).
pub fn metrics_response(text: String) -> Response<Body> {
    own(
        StatusCode::OK,
        "application/openmetrics-text; version=1.0.0; charset=utf-8",
        body::full(text),
    )
}

/// A 302 to `location` (already validated by the caller).
pub fn redirect(location: &str) -> Response<Body> {
    let mut resp = Response::new(body::empty());
    *resp.status_mut() = StatusCode::FOUND;
    no_store(&mut resp);
    let value = HeaderValue::from_str(location).unwrap_or_else(|_| HeaderValue::from_static("/"));
    resp.headers_mut().insert(header::LOCATION, value);
    resp
}

/// The status for an error of this kind.
pub fn status_of(kind: Kind) -> StatusCode {
    match kind {
        Kind::NotFound => StatusCode::NOT_FOUND,
        Kind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        Kind::BadRequest(_) => StatusCode::BAD_REQUEST,
        Kind::UriTooLong => StatusCode::URI_TOO_LONG,
        Kind::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        Kind::UpstreamUnavailable | Kind::Idp(_) => StatusCode::BAD_GATEWAY,
        Kind::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
        Kind::NotReady | Kind::RefreshUnavailable(_) | Kind::StoreUnavailable => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        Kind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The one place that turns an error into a response: logs the cause (a warning for
/// server errors) and renders a small HTML page for browsers, plain text otherwise.
pub fn error(e: &Error, request_id: &str, wants_html: bool) -> Response<Body> {
    let status = status_of(e.kind);
    if status.is_server_error() {
        tracing::warn!(request_id, status = status.as_u16(), cause = %e.cause_chain(), "{}", e.public_message());
    } else {
        tracing::debug!(request_id, status = status.as_u16(), cause = %e.cause_chain(), "{}", e.public_message());
    }
    let reason = status.canonical_reason().unwrap_or("Error");
    let mut resp = if wants_html {
        let body = render(
            &format!("{} {reason}", status.as_u16()),
            e.public_message(),
            request_id,
        );
        html_response(status, body)
    } else {
        let body = format!(
            "{} {reason}: {}\nrequest id: {request_id}\n",
            status.as_u16(),
            e.public_message()
        );
        text_response(status, body)
    };
    if e.kind == Kind::StoreUnavailable {
        // RFC 9110 §10.2.3: the store usually comes back within seconds.
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
    }
    resp
}

/// 403 for a signed-in user the policy does not admit: a page for browsers, JSON for APIs.
/// Never a redirect, so a denied user cannot end up in a login loop.
pub fn forbidden(html: bool) -> Response<Body> {
    if html {
        return html_response(
            StatusCode::FORBIDDEN,
            render(
                "403 Forbidden",
                "You are signed in, but your account is not allowed to see this page. Ask its owner for access, or sign out and use another account.",
                "",
            ),
        );
    }
    json_response(
        StatusCode::FORBIDDEN,
        r#"{"error":"forbidden","error_description":"not allowed by policy"}"#.to_string(),
    )
}

/// 403 for an authorization check (Envoy's ext_authz, a token-carrying forward-auth) from a
/// peer outside `server.trusted_proxies`: its answers carry the user's access token.
pub fn untrusted_peer() -> Response<Body> {
    json_response(
        StatusCode::FORBIDDEN,
        r#"{"error":"forbidden","error_description":"authorization checks are answered only to server.trusted_proxies"}"#
            .to_string(),
    )
}

/// 401 for a bearer token that failed validation (RFC 6750 §3.1).
pub fn invalid_token() -> Response<Body> {
    let mut resp = json_response(
        StatusCode::UNAUTHORIZED,
        r#"{"error":"invalid_token","error_description":"the bearer token is invalid or expired"}"#
            .to_string(),
    );
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer error=\"invalid_token\""),
    );
    resp
}

/// 400 for a path that servers could read differently: a page for browsers, JSON else.
pub fn ambiguous_path(reason: &str, request_id: &str, html: bool) -> Response<Body> {
    if html {
        return html_response(
            StatusCode::BAD_REQUEST,
            render("400 Bad Request", reason, request_id),
        );
    }
    let body = serde_json::json!({ "error": "ambiguous_path", "error_description": reason });
    json_response(StatusCode::BAD_REQUEST, body.to_string())
}

/// A browser navigation: GET/HEAD that accepts HTML.
pub fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"))
}

/// No session: a browser navigating is sent to log in (and back here afterwards); anything
/// else — APIs, XHR, non-GET — gets a 401, so a POST can never start a redirect loop.
pub fn login_or_unauthorized<B>(req: &Request<B>) -> Response<Body> {
    let navigation =
        (req.method() == Method::GET || req.method() == Method::HEAD) && wants_html(req.headers());
    if !navigation {
        return unauthorized();
    }
    login_redirect(req.uri().path_and_query().map_or("/", |p| p.as_str()))
}

/// A 302 to log in and come back to `original` (a path and query; `/oauth2/start`
/// validates it again).
pub fn login_redirect(original: &str) -> Response<Body> {
    let rd: String = url::form_urlencoded::byte_serialize(original.as_bytes()).collect();
    redirect(&format!("/oauth2/start?rd={rd}"))
}

/// 401 with `WWW-Authenticate: Bearer` (RFC 6750 §3) and a JSON body.
pub fn unauthorized() -> Response<Body> {
    let mut resp = json_response(
        StatusCode::UNAUTHORIZED,
        r#"{"error":"unauthorized","error_description":"login required"}"#.to_string(),
    );
    resp.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreachable_store_is_a_503_to_retry_never_a_500() {
        let e = Error::with_source(Kind::StoreUnavailable, "redis: timed out");
        for html in [true, false] {
            let resp = error(&e, "req-1", html);
            assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(resp.headers()[header::RETRY_AFTER], "2");
        }
        let other = error(&Error::new(Kind::NotReady), "req-2", false);
        assert!(other.headers().get(header::RETRY_AFTER).is_none());
    }

    #[test]
    fn page_escapes_everything() {
        let html = render("<t>", "<script>alert(1)</script>", "\"id\"");
        assert!(!html.contains("<script>"));
        assert!(html.contains("&lt;script&gt;"));
        assert!(html.contains("&quot;id&quot;"));
    }
}
