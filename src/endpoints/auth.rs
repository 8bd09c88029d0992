//! `GET /oauth2/auth`: forward-auth for proxies teams already run (oauth2-proxy
//! compatible). nginx `auth_request` sends `X-Original-URL`; Traefik `forwardAuth` and
//! Caddy `forward_auth` send `X-Forwarded-Host`, `X-Forwarded-Uri` and `X-Forwarded-Method`.
//! The policy of the route matching that original request applies (the `[policy]` defaults
//! when none matches, so it works without any upstream configured), with the same session
//! refresh as proxied traffic. Answers: 202 with `X-Auth-Request-User/Email/Groups` (and,
//! per `[forward_auth]`, the access token), always all of them, empty when unset; 401 when
//! not signed in (a 302 to log in for a navigation described by `X-Forwarded-Uri`, whose
//! proxies relay it); 403 when the policy denies. An answer that would carry the access
//! token is given only to `server.trusted_proxies`.
//!
//! The description is believed only from a peer in `server.trusted_proxies`: anyone else
//! could claim a public path for a protected request (the class of oauth2-proxy
//! CVE-2026-40575). Without a trusted description the answer comes from the session and
//! the `[policy]` defaults alone, with no path or method exemption, as oauth2-proxy does.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};

use crate::auth::Auth;
use crate::body::Body;
use crate::config::ForwardAuthConfig;
use crate::errors::{Error, Kind};
use crate::identity_headers as id;
use crate::path::canonicalize;
use crate::policy::{self, Decision, Principal};
use crate::request::ClientConn;
use crate::response;
use crate::response::{forbidden, unauthorized};
use crate::routes::RouteTable;

const X_ORIGINAL_URL: HeaderName = HeaderName::from_static("x-original-url");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");
const X_FORWARDED_METHOD: HeaderName = HeaderName::from_static("x-forwarded-method");

/// The request the proxy in front is asking about.
#[derive(Debug, PartialEq)]
pub struct Original {
    pub host: Option<String>,
    pub path: String,
    /// `None` when the proxy did not say (nginx's subrequest is always a GET).
    pub method: Option<Method>,
    /// The original path and query as `X-Forwarded-Uri` gave it: Traefik and Caddy, which
    /// send it, relay a non-2xx answer to the client, so a browser can be sent to log in
    /// and back here. `None` from nginx (`auth_request` cannot relay a redirect).
    pub relayed_uri: Option<String>,
}

/// Splits `scheme://host/path?query` (or `/path?query`) without a full URL parser, so a
/// host nginx accepted but `url` would not (`[app`, `app|x`) cannot hide the path.
fn split_original_url(value: &str) -> Option<(Option<String>, String)> {
    let (host, rest) = match value.split_once("://") {
        Some((_, after)) => {
            let slash = after.find('/').unwrap_or(after.len());
            (Some(after[..slash].to_string()), &after[slash..])
        }
        None if value.starts_with('/') => (None, value),
        None => return None,
    };
    let path = rest.split(['?', '#']).next().unwrap_or("");
    let path = if path.is_empty() { "/" } else { path };
    Some((host.filter(|h| !h.is_empty()), path.to_string()))
}

/// Reads nginx's `X-Original-URL` or Traefik's `X-Forwarded-Host/Uri/Method`: `None` when
/// there is no description at all. Fails closed: an unusable description, or two that
/// disagree, are refused rather than read as `/` (which a public catch-all route would let
/// through).
pub fn original_request(headers: &HeaderMap) -> Result<Option<Original>, Error> {
    let text = |name: &HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let bad = |why: &'static str| Error::new(Kind::BadRequest(why));
    // Two copies of a description header: one may be the client's, and which one a proxy
    // meant cannot be known.
    for name in [
        &X_ORIGINAL_URL,
        &X_FORWARDED_URI,
        &X_FORWARDED_HOST,
        &X_FORWARDED_METHOD,
    ] {
        if headers.get_all(name).iter().nth(1).is_some() {
            return Err(bad("a forward-auth description header is repeated"));
        }
    }
    let method = match headers.get(&X_FORWARDED_METHOD) {
        None => None,
        Some(v) => {
            Some(Method::from_bytes(v.as_bytes()).map_err(|_| bad("unusable X-Forwarded-Method"))?)
        }
    };
    let from_nginx = match headers.get(&X_ORIGINAL_URL) {
        None => None,
        Some(v) => {
            let value = v.to_str().map_err(|_| bad("unusable X-Original-URL"))?;
            Some(split_original_url(value).ok_or_else(|| bad("unusable X-Original-URL"))?)
        }
    };
    let forwarded_uri = text(&X_FORWARDED_URI);
    let from_traefik = match forwarded_uri {
        None => None,
        Some(uri) => match split_original_url(uri) {
            Some((_, path)) if uri.starts_with('/') => {
                Some((text(&X_FORWARDED_HOST).map(str::to_owned), path))
            }
            _ => return Err(bad("unusable X-Forwarded-Uri")),
        },
    };
    // With nginx's X-Original-URL present the answer goes to nginx, which cannot relay it.
    let relayed_uri = match from_nginx {
        None => forwarded_uri.map(str::to_owned),
        Some(_) => None,
    };
    let (host, path) = match (from_nginx, from_traefik) {
        (Some(n), Some(t)) => {
            // A client can add one of these; the proxy sets the other. Agree or refuse.
            let same_host = match (&n.0, &t.0) {
                (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
                _ => true,
            };
            let same_path = match (canonicalize(&n.1), canonicalize(&t.1)) {
                (Ok(a), Ok(b)) => a == b,
                _ => n.1 == t.1,
            };
            if !same_host || !same_path {
                return Err(bad("X-Original-URL and X-Forwarded-Uri disagree"));
            }
            n
        }
        (Some(n), None) => n,
        (None, Some(t)) => t,
        (None, None) if method.is_none() && !headers.contains_key(&X_FORWARDED_HOST) => {
            return Ok(None)
        }
        (None, None) => return Err(bad("forward-auth needs X-Original-URL or X-Forwarded-Uri")),
    };
    let host = host.or_else(|| text(&header::HOST).map(str::to_owned));
    Ok(Some(Original {
        host,
        path,
        method,
        relayed_uri,
    }))
}

pub async fn handle(
    auth: &Auth,
    routes: &RouteTable,
    req: &Request<Body>,
    conn: &ClientConn,
) -> Result<Response<Body>, Error> {
    let cfg = auth.forward_auth();
    if (cfg.pass_access_token || cfg.set_authorization) && !conn.trusted {
        // This answer would hand the user's access token to whoever asks.
        tracing::info!(event = "forward_auth_untrusted", peer = %conn.peer, "token-carrying forward-auth check from a peer outside server.trusted_proxies refused");
        return Ok(response::untrusted_peer());
    }
    let original = if conn.trusted {
        original_request(req.headers())?
    } else {
        None
    };
    let mut route = None;
    if let Some(original) = &original {
        let bad = |why: &'static str| Error::new(Kind::BadRequest(why));
        let canonical = canonicalize(&original.path).map_err(|why| bad(why.0))?;
        route = routes.match_request(original.host.as_deref(), &canonical.path);
        if canonical.encoded_slash && !route.is_some_and(|r| r.allow_encoded_slashes) {
            return Err(bad("encoded slash in the original request's path"));
        }
        if route.is_some_and(|r| policy::skips_auth(r, original.method.as_ref(), &canonical.path)) {
            let mut resp = accepted();
            blank_identity_headers(cfg, req.headers(), resp.headers_mut());
            return Ok(resp);
        }
    }
    let policy = route.map_or(auth.global_policy(), |r| &r.policy);
    let caller = auth.identify(req.headers()).await?;
    let session = caller.session.as_ref().map(|l| &l.session);
    let resp = match policy::decide(policy, session.map(|s| Principal::Session(s))) {
        Decision::Allow(permit) => {
            let mut resp = accepted();
            blank_identity_headers(cfg, req.headers(), resp.headers_mut());
            permit.forward_auth_headers(cfg, resp.headers_mut());
            resp
        }
        Decision::Login => match original.as_ref().and_then(|o| o.relayed_uri.as_deref()) {
            Some(uri) if is_navigation(original.as_ref(), req.headers()) => {
                response::login_redirect(uri)
            }
            _ => unauthorized(),
        },
        Decision::Deny => {
            tracing::info!(
                event = "policy_deny",
                route = route.map_or("forward_auth", |r| r.name.as_str()),
                sub = session.map_or("", |s| s.sub.as_str()),
                "access denied by policy"
            );
            forbidden(false)
        }
    };
    Ok(caller.finish(auth, resp))
}

fn accepted() -> Response<Body> {
    response::empty_response(StatusCode::ACCEPTED)
}

/// Every header a 2xx may carry, empty, for the user's values to replace: a proxy told to
/// copy a header the answer lacks may copy something worse than nothing (Caddy before 2.10
/// copies the literal `{http.reverse_proxy.header.X-…}` text, caddy#6610). With
/// `set_authorization`, a public answer gives back the client's own `Authorization`, which
/// the reverse-proxy path lets through on public routes too.
fn blank_identity_headers(cfg: &ForwardAuthConfig, request: &HeaderMap, out: &mut HeaderMap) {
    let empty = HeaderValue::from_static("");
    out.insert(id::X_AUTH_REQUEST_USER, empty.clone());
    out.insert(id::X_AUTH_REQUEST_EMAIL, empty.clone());
    out.insert(id::X_AUTH_REQUEST_GROUPS, empty.clone());
    if cfg.pass_access_token {
        out.insert(id::X_AUTH_REQUEST_ACCESS_TOKEN, empty.clone());
    }
    if cfg.set_authorization {
        let own = request.get(header::AUTHORIZATION).cloned();
        out.insert(header::AUTHORIZATION, own.unwrap_or(empty));
    }
}

/// A browser navigation: a GET or HEAD (as the proxy said: an unknown method is not one)
/// that accepts HTML.
fn is_navigation(original: Option<&Original>, request: &HeaderMap) -> bool {
    let method = original.and_then(|o| o.method.as_ref());
    method.is_some_and(|m| m == Method::GET || m == Method::HEAD) && response::wants_html(request)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn nginx_and_traefik_headers_are_read() {
        let o = original_request(&headers(&[(
            "x-original-url",
            "https://app.test:8443/admin/x?y=1",
        )]))
        .unwrap()
        .unwrap();
        assert_eq!(
            (o.host.as_deref(), o.path.as_str(), o.method),
            (Some("app.test:8443"), "/admin/x", None)
        );
        let o = original_request(&headers(&[
            ("x-forwarded-host", "dash.test"),
            ("x-forwarded-uri", "/a/../admin?q"),
            ("x-forwarded-method", "POST"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(
            (o.host.as_deref(), o.path.as_str(), o.method),
            (Some("dash.test"), "/a/../admin", Some(Method::POST))
        );
    }

    #[test]
    fn hosts_url_parsers_reject_still_yield_the_path() {
        for url in [
            "http://[app/admin/x",
            "http://app|x/admin/x",
            "http://app%/admin/x",
        ] {
            let h = HeaderMap::from_iter([(X_ORIGINAL_URL, HeaderValue::from_str(url).unwrap())]);
            assert_eq!(
                original_request(&h).unwrap().unwrap().path,
                "/admin/x",
                "{url}"
            );
        }
    }

    #[test]
    fn missing_descriptions_are_none_and_conflicting_ones_refused() {
        assert!(original_request(&HeaderMap::new()).unwrap().is_none());
        assert!(original_request(&headers(&[("x-forwarded-method", "GET")])).is_err());
        assert!(original_request(&headers(&[("x-original-url", "admin")])).is_err());
        assert!(original_request(&headers(&[
            ("x-original-url", "http://app.test/"),
            ("x-forwarded-host", "app.test"),
            ("x-forwarded-uri", "/admin/x"),
        ]))
        .is_err());
    }
}
