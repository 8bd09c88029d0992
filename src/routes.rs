//! Route matching, step 1 of the request path: which upstream serves this host and path.
//!
//! Matching runs on the canonical path (`crate::path`): the same string the upstream then
//! receives, so the path the gateway authorized is the path the upstream serves. An
//! encoded slash `%2F` never splits a segment.

use http::uri::{Authority, Scheme};
use http::HeaderValue;

use crate::config::{PolicyConfig, RouteConfig};
use crate::metrics::RouteMetrics;

/// Where a route sends its requests.
#[derive(Debug)]
pub struct UpstreamTarget {
    pub scheme: Scheme,
    pub authority: Authority,
    /// Base path without a trailing slash ("" for none), prepended to the request path.
    pub base_path: String,
    /// The `Host` header sent upstream when the route rewrites it.
    pub host_header: HeaderValue,
}

#[derive(Debug)]
enum HostMatch {
    Any,
    Exact(String),
    /// `*.example.com`: stored as `.example.com`; matches any subdomain, not the apex.
    Suffix(String),
}

#[derive(Debug)]
pub struct Route {
    /// `route[i]`, used in logs and metrics.
    pub name: String,
    host: HostMatch,
    prefix: String,
    pub upstream: UpstreamTarget,
    pub public: bool,
    pub preserve_host: bool,
    pub accept_bearer: bool,
    pub policy: PolicyConfig,
    pub skip_auth_paths: Vec<regex::Regex>,
    pub methods: Vec<http::Method>,
    /// Takes paths with `%2F` inside a segment (`route[i].allow_encoded_slashes`).
    pub allow_encoded_slashes: bool,
    pub metrics: RouteMetrics,
}

/// All routes in file order; the first match wins.
#[derive(Debug)]
pub struct RouteTable {
    routes: Vec<Route>,
}

impl RouteTable {
    pub fn new(configs: &[RouteConfig]) -> Self {
        let routes = configs
            .iter()
            .enumerate()
            .map(|(i, c)| Route::new(i, c))
            .collect();
        RouteTable { routes }
    }

    /// The first route whose host and path prefix match. `host` may carry a port.
    pub fn match_request(&self, host: Option<&str>, normalized_path: &str) -> Option<&Route> {
        let host = host.map(strip_port);
        self.routes
            .iter()
            .find(|r| r.host_matches(host) && prefix_matches(&r.prefix, normalized_path))
    }
}

impl Route {
    fn new(index: usize, c: &RouteConfig) -> Self {
        let host = match c.host.as_deref() {
            None => HostMatch::Any,
            Some(h) => match h.strip_prefix('*') {
                Some(suffix) => HostMatch::Suffix(suffix.to_string()),
                None => HostMatch::Exact(h.to_string()),
            },
        };
        let scheme = if c.upstream.scheme() == "https" {
            Scheme::HTTPS
        } else {
            Scheme::HTTP
        };
        // `Url` has already checked the host; its authority string is valid for `http`.
        let authority_text = match c.upstream.port() {
            Some(port) => format!("{}:{port}", c.upstream.host_str().unwrap_or_default()),
            None => c.upstream.host_str().unwrap_or_default().to_string(),
        };
        let authority = Authority::try_from(authority_text.as_str())
            .unwrap_or_else(|_| Authority::from_static("invalid.upstream"));
        let host_header = HeaderValue::from_str(&authority_text)
            .unwrap_or_else(|_| HeaderValue::from_static("invalid.upstream"));
        let name = format!("route[{index}]");
        Route {
            metrics: crate::metrics::get().route(&name),
            name,
            host,
            prefix: c.path.clone(),
            upstream: UpstreamTarget {
                scheme,
                authority,
                base_path: c.upstream.path().trim_end_matches('/').to_string(),
                host_header,
            },
            public: c.public,
            preserve_host: c.preserve_host,
            accept_bearer: c.accept_bearer,
            policy: c.policy.clone(),
            skip_auth_paths: c.skip_auth_paths.clone(),
            methods: c.methods.clone(),
            allow_encoded_slashes: c.allow_encoded_slashes,
        }
    }

    fn host_matches(&self, host: Option<&str>) -> bool {
        match (&self.host, host) {
            (HostMatch::Any, _) => true,
            (_, None) => false,
            (HostMatch::Exact(want), Some(h)) => want.eq_ignore_ascii_case(h),
            (HostMatch::Suffix(suffix), Some(h)) => {
                h.len() > suffix.len()
                    && h.is_char_boundary(h.len() - suffix.len())
                    && h[h.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
            }
        }
    }
}

/// `host[:port]` or `[v6]:port` → host.
fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

/// Segment-aware prefix: `/api` matches `/api`, `/api/x` and `/api;v=1`, never `/apix`.
/// A `;` starts path parameters that some servers strip, so `/api;x` counts as `/api`.
fn prefix_matches(prefix: &str, path: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    match path.strip_prefix(prefix) {
        None => false,
        Some(rest) => prefix.ends_with('/') || rest.is_empty() || rest.starts_with(['/', ';']),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_is_segment_aware() {
        assert!(prefix_matches("/b", "/b"));
        assert!(prefix_matches("/b", "/b/x"));
        assert!(prefix_matches("/b", "/b;jsessionid=1"));
        assert!(!prefix_matches("/b", "/bx"));
        assert!(!prefix_matches("/b/x", "/b%2Fx"));
        assert!(prefix_matches("/b/", "/b/x"));
        assert!(prefix_matches("/", "/anything"));
    }

    fn table() -> RouteTable {
        let route = |host: Option<&str>, path: &str, port: u16| RouteConfig {
            host: host.map(String::from),
            path: path.to_string(),
            upstream: url::Url::parse(&format!("http://127.0.0.1:{port}/base/")).unwrap(),
            public: true,
            preserve_host: false,
            accept_bearer: false,
            policy: Default::default(),
            skip_auth_paths: Vec::new(),
            methods: Vec::new(),
            allow_encoded_slashes: false,
        };
        RouteTable::new(&[
            route(Some("a.test"), "/", 1),
            route(Some("*.wild.test"), "/", 2),
            route(None, "/b", 3),
            route(None, "/", 4),
        ])
    }

    #[test]
    fn first_matching_route_wins() {
        let t = table();
        let port = |h: Option<&str>, p: &str| {
            t.match_request(h, p)
                .map(|r| r.upstream.authority.port_u16().unwrap())
        };
        assert_eq!(port(Some("a.test"), "/b"), Some(1));
        assert_eq!(port(Some("A.TEST:4180"), "/"), Some(1));
        assert_eq!(port(Some("x.wild.test"), "/"), Some(2));
        assert_eq!(port(Some("wild.test"), "/"), Some(4));
        assert_eq!(port(Some("other"), "/b/c"), Some(3));
        assert_eq!(port(None, "/c"), Some(4));
        assert_eq!(
            t.match_request(None, "/c").unwrap().upstream.base_path,
            "/base"
        );
    }

    #[test]
    fn ports_are_stripped_from_hosts() {
        assert_eq!(strip_port("a.test:80"), "a.test");
        assert_eq!(strip_port("[::1]:4180"), "::1");
        assert_eq!(strip_port("a.test"), "a.test");
    }

    use proptest::prelude::*;

    proptest! {
        /// The upstream receives the canonical path, so it must route where the request
        /// did: canonicalizing what is forwarded changes nothing.
        #[test]
        fn the_route_of_a_request_is_the_route_of_what_the_upstream_receives(
            parts in prop::collection::vec(
                prop_oneof![
                    Just("b"), Just("x"), Just("a.test"), Just(".."), Just("."), Just("%2e%2e"),
                    Just("%62"), Just(";x"), Just("%3b"), Just("%2f"), Just("B"), Just(""),
                ],
                0..6,
            )
        ) {
            let raw = format!("/{}", parts.join("/"));
            if let Ok(canonical) = crate::path::canonicalize(&raw) {
                let t = table();
                let forwarded = crate::path::canonicalize(&canonical.path).expect("canonical is accepted");
                let port = |p: &str| t.match_request(Some("other"), p).map(|r| r.upstream.authority.port_u16());
                prop_assert_eq!(port(&canonical.path), port(&forwarded.path), "{}", raw);
            }
        }
    }
}
