//! `GET /oauth2/auth`: forward-auth for proxies teams already run (oauth2-proxy
//! compatible). nginx `auth_request` sends `X-Original-URL`; Traefik `forwardAuth` sends
//! `X-Forwarded-Host`, `X-Forwarded-Uri` and `X-Forwarded-Method`. The policy of the route
//! matching that original request applies (the `[policy]` defaults when none matches, so it
//! works without any upstream configured), with the same session refresh as proxied traffic.
//! Answers: 202 with `X-Auth-Request-User/Email/Groups` (and, per `[forward_auth]`, the
//! access token), 401 when not signed in, 403 when the policy denies.

use http::header::{self, HeaderMap, HeaderName};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::page;
use crate::errors::Error;
use crate::gateway::{forbidden, unauthorized, Auth, CurrentSession};
use crate::policy::{self, Decision};
use crate::proxy::{self, Body};
use crate::routes::{normalize_path, RouteTable};

const X_ORIGINAL_URL: HeaderName = HeaderName::from_static("x-original-url");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");
const X_FORWARDED_METHOD: HeaderName = HeaderName::from_static("x-forwarded-method");

/// The request the proxy in front is asking about.
struct Original {
    host: Option<String>,
    path: String,
    method: Method,
}

fn original_request(headers: &HeaderMap) -> Original {
    let text = |name: &HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let method = text(&X_FORWARDED_METHOD)
        .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
        .unwrap_or(Method::GET);
    if let Some(url) = text(&X_ORIGINAL_URL).and_then(|u| url::Url::parse(u).ok()) {
        let host = url.host_str().map(|h| match url.port() {
            Some(p) => format!("{h}:{p}"),
            None => h.to_string(),
        });
        return Original {
            host,
            path: url.path().to_string(),
            method,
        };
    }
    let uri = text(&X_FORWARDED_URI).unwrap_or("/");
    let path = uri.split(['?', '#']).next().unwrap_or("/");
    Original {
        host: text(&X_FORWARDED_HOST)
            .or_else(|| text(&header::HOST))
            .map(str::to_owned),
        path: if path.starts_with('/') {
            path.to_string()
        } else {
            "/".to_string()
        },
        method,
    }
}

pub async fn handle(
    auth: &Auth,
    routes: &RouteTable,
    req: &Request<Incoming>,
) -> Result<Response<Body>, Error> {
    let original = original_request(req.headers());
    let path = normalize_path(&original.path);
    let route = routes.match_request(original.host.as_deref(), &path);
    if route.is_some_and(|r| policy::skips_auth(r, &original.method, &path)) {
        return Ok(accepted());
    }
    let policy = route.map_or(&auth.global_policy, |r| &r.policy);
    let CurrentSession { loaded, ended } = auth.current_session(req.headers()).await?;
    let session = loaded.as_ref().map(|l| &l.session);
    let mut resp = match policy::evaluate_forward(policy, session) {
        Decision::Allow(permit) => {
            let mut resp = accepted();
            permit.forward_auth_headers(&auth.forward_auth, resp.headers_mut());
            resp
        }
        Decision::Login => unauthorized(),
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
    if ended {
        resp.headers_mut()
            .append(header::SET_COOKIE, auth.sessions.clear_cookie());
    }
    Ok(resp)
}

fn accepted() -> Response<Body> {
    let mut resp = page::text_response(StatusCode::ACCEPTED, "");
    *resp.body_mut() = proxy::empty();
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn nginx_and_traefik_headers_are_read() {
        let mut h = HeaderMap::new();
        h.insert(
            X_ORIGINAL_URL,
            HeaderValue::from_static("https://app.test:8443/admin/x?y=1"),
        );
        let o = original_request(&h);
        assert_eq!(
            (o.host.as_deref(), o.path.as_str()),
            (Some("app.test:8443"), "/admin/x")
        );

        let mut h = HeaderMap::new();
        h.insert(X_FORWARDED_HOST, HeaderValue::from_static("dash.test"));
        h.insert(X_FORWARDED_URI, HeaderValue::from_static("/a/../admin?q"));
        h.insert(X_FORWARDED_METHOD, HeaderValue::from_static("POST"));
        let o = original_request(&h);
        assert_eq!(
            (o.host.as_deref(), o.path.as_str(), o.method),
            (Some("dash.test"), "/a/../admin", Method::POST)
        );
    }
}
