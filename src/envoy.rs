//! Envoy's external authorization contract, shared by the HTTP check (`/oauth2/ext_authz`)
//! and the gRPC one (`server.ext_authz_grpc_listen`): where the HTTP check arrives, and what
//! an answer must tell Envoy to remove.
//!
//! Envoy copies upstream only the headers an allowed answer names (`allowed_upstream_headers`),
//! so a client's own `X-Forwarded-User` would reach the upstream on a public route. Every
//! answer therefore lists the identity headers in `x-envoy-auth-headers-to-remove` (gRPC:
//! `headers_to_remove`). Envoy removes them *after* setting the answer's headers, so the list
//! never names a header the answer sets.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};

use crate::body::Body;
use crate::identity_headers as id;
use crate::proxy::headers::ClientHeaderRules;

/// Envoy's `http_service.path_prefix`: the check for `GET /a?b` is `GET /oauth2/ext_authz/a?b`.
pub const PATH_PREFIX: &str = "/oauth2/ext_authz";

pub const HEADERS_TO_REMOVE: HeaderName = HeaderName::from_static("x-envoy-auth-headers-to-remove");

/// The headers an allowed answer may ask Envoy to set upstream: the bearer and the identity.
pub const ALLOWED_UPSTREAM: [HeaderName; 4] = [
    header::AUTHORIZATION,
    id::X_FORWARDED_USER,
    id::X_FORWARDED_EMAIL,
    id::X_FORWARDED_GROUPS,
];

/// The original request target of an HTTP check, read from the raw target (never its
/// canonical form: `/oauth2/ext_authz/../admin` is a check of `/../admin`, which the check
/// then refuses as ambiguous, not a request for `/admin`). `None` when the target is not
/// under the prefix.
pub fn original_target(target: &str) -> Option<&str> {
    let rest = target.strip_prefix(PATH_PREFIX)?;
    match rest.as_bytes().first() {
        None => Some("/"),
        Some(b'/') => Some(rest),
        Some(_) => None,
    }
}

/// The identity headers Envoy must remove from the request it forwards: every name the
/// gateway strips from clients (`ClientHeaderRules`: the known families, the operator's
/// `strip_request_headers`, and any variant present in the check such as `x_forwarded_user`),
/// except those the answer sets in `set`.
pub fn headers_to_remove(
    rules: &ClientHeaderRules,
    check: &HeaderMap,
    set: &HeaderMap,
) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    let mut add = |name: &str| {
        if !set.contains_key(name) && !names.iter().any(|n| n == name) {
            names.push(name.to_string());
        }
    };
    for name in rules.known_names() {
        add(name);
    }
    for name in check.keys() {
        if rules.strips(name.as_str()) {
            add(name.as_str());
        }
    }
    names
}

/// `resp` with `x-envoy-auth-headers-to-remove` listing `names` (comma-separated, as Envoy
/// splits it).
pub fn list_removals(mut resp: Response<Body>, names: &[String]) -> Response<Body> {
    if let Ok(value) = HeaderValue::from_str(&names.join(",")) {
        resp.headers_mut().insert(HEADERS_TO_REMOVE, value);
    }
    resp
}

/// The allowed answer: 200 (Envoy's HTTP client treats every other status as a denial) with
/// the headers to set upstream.
pub fn allowed(set: HeaderMap) -> Response<Body> {
    let mut resp = crate::response::empty_response(StatusCode::OK);
    resp.headers_mut().extend(set);
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_original_target_is_what_follows_the_prefix_unnormalized() {
        assert_eq!(
            original_target("/oauth2/ext_authz/a/b?c=1"),
            Some("/a/b?c=1")
        );
        assert_eq!(original_target("/oauth2/ext_authz/"), Some("/"));
        assert_eq!(original_target("/oauth2/ext_authz"), Some("/"));
        assert_eq!(
            original_target("/oauth2/ext_authz/../admin"),
            Some("/../admin")
        );
        assert_eq!(original_target("/oauth2/ext_authzx/a"), None);
        assert_eq!(original_target("/oauth2/ext_authz%2Fa"), None);
        assert_eq!(original_target("/app/oauth2/ext_authz/a"), None);
    }

    #[test]
    fn removals_cover_forged_variants_but_never_what_the_answer_sets() {
        let rules = ClientHeaderRules {
            drop_underscore: false,
            extra: vec!["x-tenant".into()],
        };
        let mut check = HeaderMap::new();
        check.insert("x_forwarded_user", HeaderValue::from_static("boss"));
        check.insert("accept", HeaderValue::from_static("*/*"));
        let mut set = HeaderMap::new();
        set.insert(id::X_FORWARDED_USER, HeaderValue::from_static("alice"));
        let names = headers_to_remove(&rules, &check, &set);
        for expected in [
            "x-forwarded-email",
            "x-auth-request-user",
            "remote-user",
            "x-tenant",
            "x_forwarded_user",
        ] {
            assert!(
                names.iter().any(|n| n == expected),
                "{expected} in {names:?}"
            );
        }
        assert!(!names.iter().any(|n| n == "x-forwarded-user"), "{names:?}");
        assert!(
            !names.iter().any(|n| n == "accept" || n == "authorization"),
            "{names:?}"
        );
    }
}
