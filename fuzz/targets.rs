//! The fuzz targets' bodies, shared by `fuzz_targets/*.rs` (libFuzzer, nightly) and
//! `tests/fuzz_corpus.rs` (every corpus file on stable, in the normal suite). Each checks
//! a property, not only "does not panic".

use http::header::{HeaderMap, HeaderName, HeaderValue};
use portcullis::config::{PolicyConfig, RouteConfig};
use portcullis::path::canonicalize;
use portcullis::redirect::RedirectPolicy;
use portcullis::routes::RouteTable;

fn route(path: &str, allow_encoded_slashes: bool, port: u16) -> RouteConfig {
    RouteConfig {
        host: None,
        path: path.to_string(),
        upstream: format!("http://127.0.0.1:{port}/")
            .parse()
            .expect("upstream URL"),
        public: path == "/public",
        preserve_host: false,
        accept_bearer: false,
        policy: PolicyConfig::default(),
        skip_auth_paths: Vec::new(),
        methods: Vec::new(),
        allow_encoded_slashes,
    }
}

/// Path canonicalization and routing: idempotent, and the route of the canonical path is
/// the route of what the upstream receives (that same path).
pub fn path(data: &[u8]) {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(once) = canonicalize(raw) else {
        return;
    };
    let twice = canonicalize(&once.path).expect("a canonical path is accepted again");
    assert_eq!(twice.path, once.path, "not idempotent for {raw:?}");
    for segment in once.path.split('/') {
        assert!(
            segment != "." && segment != "..",
            "dot segment left in {raw:?}"
        );
    }
    let table = RouteTable::new(&[
        route("/public", false, 1),
        route("/api", true, 2),
        route("/", false, 3),
    ]);
    let chosen = table
        .match_request(None, &once.path)
        .map(|r| r.name.clone());
    let upstream = table
        .match_request(None, &twice.path)
        .map(|r| r.name.clone());
    assert_eq!(chosen, upstream, "route differs for {raw:?}");
}

/// Cookie and session-id parsing: never panics, and only a well-formed id parses.
pub fn cookie(data: &[u8]) {
    let Ok(text) = HeaderValue::from_bytes(data) else {
        return;
    };
    let mut headers = HeaderMap::new();
    headers.insert(http::header::COOKIE, text);
    if let Some(value) = portcullis::session::find_cookie(&headers, "__Host-portcullis") {
        if let Some(id) = portcullis::session::crypto::SessionId::from_cookie(value) {
            assert_eq!(
                id.to_cookie(),
                value,
                "a session id must round-trip exactly"
            );
        }
    }
}

/// `rd` validation: the result is `/`-relative on this origin or on an allowed host.
pub fn redirect(data: &[u8]) {
    let Ok(rd) = std::str::from_utf8(data) else {
        return;
    };
    let policy = RedirectPolicy::new(&["app.test".to_string(), "*.corp.test".to_string()]);
    let target = policy.safe_target(Some(rd));
    let base = url::Url::parse("https://gateway.test/start").expect("base URL");
    let resolved = base
        .join(&target)
        .expect("the target is a valid URL reference");
    let host = resolved.host_str().unwrap_or("");
    assert!(
        host == "gateway.test" || host == "app.test" || host.ends_with(".corp.test"),
        "{rd:?} -> {target:?} leaves the site"
    );
}

/// Forward-auth descriptions: header pairs (`name: value` lines) never panic the parser,
/// and an accepted description names an absolute path.
pub fn forward_auth(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut headers = HeaderMap::new();
    for line in text.lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.trim().as_bytes()),
            HeaderValue::from_str(value.trim()),
        ) {
            headers.append(n, v);
        }
    }
    if let Ok(Some(original)) = portcullis::endpoints::auth::original_request(&headers) {
        assert!(original.path.starts_with('/'), "{text:?} gave {original:?}");
    }
}
