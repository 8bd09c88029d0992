//! The gateway's own small pages and responses (errors, login failures, redirects), with
//! the headers every such response carries: no caching, no sniffing, no referrer, and a
//! CSP that allows nothing but the inline style.

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use crate::body::{self, Body};

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_escapes_everything() {
        let html = render("<t>", "<script>alert(1)</script>", "\"id\"");
        assert!(!html.contains("<script>"));
        assert!(html.contains("&lt;script&gt;"));
        assert!(html.contains("&quot;id&quot;"));
    }
}
