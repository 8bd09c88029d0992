//! Reverse-proxy behaviour on public routes (no login): forwarding, header rewriting,
//! request ids, upstream errors, routing, path normalization, limits, WebSocket, TLS,
//! streaming memory, graceful shutdown, logs.
//!
//! Every test starts its own gateway and in-process upstreams on ports chosen at run time
//! (see `tests/common`). The gateway runs in-process (the library on the test's runtime),
//! except where a test needs the real `portcullis` process: its memory, SIGTERM and exit
//! status, or its log.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::http::{builder as client_builder, try_raw_request};
use common::{
    client, pattern_sha256, pattern_stream, process_memory, raw_request, sha256_hex, EchoUpstream,
    Echoed, Gateway, GatewayAddr, InProcessGateway, SelfSignedCert, Sha256,
};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

/// A config listening on a free port with the given extra `[server]` keys and routes.
fn config(server_extra: &str, routes: &str) -> String {
    format!(
        r#"[server]
listen = "@LISTEN@"
public_url = "@PUBLIC_URL@"
{server_extra}

[log]
format = "text"
filter = "info"

{routes}
"#
    )
}

/// A public `[[route]]` for `path` (and optionally `host`) to `upstream`.
fn route(host: Option<&str>, path: &str, upstream: &str) -> String {
    let host = host
        .map(|h| format!("host = \"{h}\"\n"))
        .unwrap_or_default();
    format!("[[route]]\n{host}path = \"{path}\"\nupstream = \"{upstream}\"\npublic = true\n\n")
}

/// One in-process gateway with a single public route `/` to `upstream`.
async fn gateway_for(upstream: &EchoUpstream) -> InProcessGateway {
    InProcessGateway::start(&config("", &route(None, "/", &upstream.url()))).await
}

async fn get_echo(gw: &impl GatewayAddr, target: &str, headers: &[(&str, &str)]) -> Echoed {
    let resp = raw_request(gw.addr(), "GET", target, headers, "").await;
    assert_eq!(
        resp.status,
        200,
        "GET {target} {headers:?}: body {}",
        resp.text()
    );
    Echoed::parse(&resp.body)
}

// ---------------------------------------------------------------------------------
// Basics and forwarding
// ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_answers_ok() {
    let upstream = EchoUpstream::start().await;
    let gw = gateway_for(&upstream).await;
    let resp = client().get(gw.url_for("/healthz")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap().trim(), "ok");
    assert!(
        upstream.received().is_empty(),
        "/healthz must be answered by the gateway, not proxied"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn method_path_query_and_body_are_forwarded() {
    let upstream = EchoUpstream::start().await;
    let gw = gateway_for(&upstream).await;
    let http = client();

    for method in ["GET", "DELETE", "OPTIONS"] {
        let resp = http
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                gw.url_for("/some/path?x=1&y=a%20b&z"),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{method}");
        let echoed = Echoed::parse(&resp.bytes().await.unwrap());
        assert_eq!(echoed.method, method);
        assert_eq!(echoed.path, "/some/path?x=1&y=a%20b&z");
        assert_eq!(echoed.body_len, 0);
    }

    for method in ["POST", "PUT", "PATCH"] {
        let body = format!("{method} body \u{1F600} with some bytes");
        let resp = http
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                gw.url_for("/submit?kind=form"),
            )
            .header("content-type", "text/plain; charset=utf-8")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{method}");
        assert_eq!(
            resp.headers()
                .get("x-upstream-name")
                .map(|v| v.to_str().unwrap()),
            Some("echo"),
            "upstream response headers reach the client"
        );
        let echoed = Echoed::parse(&resp.bytes().await.unwrap());
        assert_eq!(echoed.method, method);
        assert_eq!(echoed.path, "/submit?kind=form");
        assert_eq!(echoed.body_len, body.len() as u64);
        assert_eq!(echoed.body_sha256, sha256_hex(body.as_bytes()));
        assert_eq!(
            echoed.header("content-type"),
            Some("text/plain; charset=utf-8")
        );
    }

    // HEAD: status and headers only.
    let resp = http.head(gw.url_for("/head")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(upstream.received().last().unwrap().method, "HEAD");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_status_and_body_are_passed_back() {
    let upstream = EchoUpstream::start().await;
    let gw = gateway_for(&upstream).await;
    for code in [201u16, 204, 301, 404, 418, 500, 503] {
        let resp = raw_request(gw.addr(), "GET", &format!("/status?code={code}"), &[], "").await;
        assert_eq!(resp.status.as_u16(), code, "body: {}", resp.text());
        if code != 204 {
            // The gateway passes upstream error pages through untouched.
            let echoed = Echoed::parse(&resp.body);
            assert_eq!(echoed.path, format!("/status?code={code}"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_base_path_is_prepended() {
    let upstream = EchoUpstream::start().await;
    let gw = InProcessGateway::start(&config(
        "",
        &route(None, "/", &format!("{}/base", upstream.url())),
    ))
    .await;
    let echoed = get_echo(&gw, "/foo/bar?x=1", &[]).await;
    assert_eq!(echoed.path, "/base/foo/bar?x=1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_is_rewritten_unless_preserve_host() {
    let upstream = EchoUpstream::start().await;
    let routes = format!(
        "{}preserve_host = true\n\n{}preserve_host = false\n\n",
        route(Some("keep.test"), "/", &upstream.url()),
        route(Some("rewrite.test"), "/", &upstream.url()),
    );
    let gw = InProcessGateway::start(&config("", &routes)).await;

    let kept = get_echo(&gw, "/", &[("host", "keep.test")]).await;
    assert_eq!(kept.header("host"), Some("keep.test"));

    let rewritten = get_echo(&gw, "/", &[("host", "rewrite.test")]).await;
    assert_eq!(
        rewritten.header("host"),
        Some(upstream.addr().to_string().as_str()),
        "preserve_host = false sends the upstream authority"
    );
    assert_eq!(rewritten.header("x-forwarded-host"), Some("rewrite.test"));
}

// ---------------------------------------------------------------------------------
// Header rewriting
// ---------------------------------------------------------------------------------

const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_are_stripped() {
    let upstream = EchoUpstream::start().await;
    let gw = gateway_for(&upstream).await;
    let echoed = get_echo(
        &gw,
        "/hop",
        &[
            ("connection", "close, X-Secret-Hop"),
            ("x-secret-hop", "must-not-reach-upstream"),
            ("keep-alive", "timeout=5"),
            ("proxy-authenticate", "Basic realm=\"x\""),
            ("proxy-authorization", "Basic dXNlcjpwYXNz"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("trailer", "X-Checksum"),
            ("upgrade", "foo/1"),
            ("x-end-to-end", "kept"),
        ],
    )
    .await;
    for name in HOP_BY_HOP.iter().chain(&["x-secret-hop"]) {
        assert!(
            echoed.header_all(name).is_empty(),
            "upstream received hop-by-hop header {name}: {:?}",
            echoed.header_all(name)
        );
    }
    assert_eq!(echoed.header("x-end-to-end"), Some("kept"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_response_headers_are_stripped() {
    let upstream = EchoUpstream::start().await;
    let gw = gateway_for(&upstream).await;
    let resp = raw_request(gw.addr(), "GET", "/hop-response", &[], "").await;
    assert_eq!(resp.status, 200);
    for name in [
        "x-upstream-hop",
        "keep-alive",
        "proxy-authenticate",
        "proxy-connection",
        "trailer",
        "upgrade",
    ] {
        assert!(
            resp.headers.get(name).is_none(),
            "client received hop-by-hop response header {name}: {:?}",
            resp.headers.get(name)
        );
    }
    if let Some(connection) = resp.header("connection") {
        assert!(
            !connection.to_ascii_lowercase().contains("x-upstream-hop"),
            "upstream's Connection header was passed on: {connection}"
        );
    }
    assert_eq!(resp.header("x-normal"), Some("kept"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_are_replaced_when_untrusted() {
    let upstream = EchoUpstream::start().await;
    let gw = gateway_for(&upstream).await;
    let echoed = get_echo(
        &gw,
        "/fwd",
        &[
            ("host", "app.test:8443"),
            ("x-forwarded-for", "203.0.113.7"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.example"),
            ("forwarded", "for=203.0.113.7;proto=https;host=evil.example"),
        ],
    )
    .await;
    assert_eq!(echoed.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(echoed.header("x-forwarded-proto"), Some("http"));
    assert_eq!(echoed.header("x-forwarded-host"), Some("app.test:8443"));
    assert_eq!(
        echoed.header("forwarded"),
        Some("for=127.0.0.1;proto=http;host=\"app.test:8443\"")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_are_extended_when_trusted() {
    let upstream = EchoUpstream::start().await;
    let gw = InProcessGateway::start(&config(
        "trust_forwarded_headers = true",
        &route(None, "/", &upstream.url()),
    ))
    .await;
    let echoed = get_echo(
        &gw,
        "/fwd",
        &[
            ("host", "internal.test"),
            ("x-forwarded-for", "203.0.113.7"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "public.example"),
        ],
    )
    .await;
    assert_eq!(
        echoed.header("x-forwarded-for"),
        Some("203.0.113.7, 127.0.0.1")
    );
    assert_eq!(echoed.header("x-forwarded-proto"), Some("https"));
    assert_eq!(echoed.header("x-forwarded-host"), Some("public.example"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_header_quotes_ipv6_peer() {
    let Ok(probe) = std::net::TcpListener::bind("[::1]:0") else {
        eprintln!("skipped: no IPv6 loopback on this machine");
        return;
    };
    let port = probe.local_addr().unwrap().port();
    drop(probe);
    let upstream = EchoUpstream::start().await;
    let config = format!(
        "[server]\nlisten = \"[::1]:{port}\"\npublic_url = \"http://[::1]:{port}\"\n\n{}",
        route(None, "/", &upstream.url())
    );
    let gw = InProcessGateway::start(&config).await;
    let addr: SocketAddr = format!("[::1]:{port}").parse().unwrap();
    assert_eq!(gw.addr(), addr);
    let echoed = get_echo(&gw, "/v6", &[("host", "v6.test")]).await;
    assert_eq!(echoed.header("x-forwarded-for"), Some("::1"));
    assert_eq!(
        echoed.header("forwarded"),
        Some("for=\"[::1]\";proto=http;host=\"v6.test\"")
    );
}

// ---------------------------------------------------------------------------------
// Request ids
// ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_request_id_is_passed_upstream_and_echoed() {
    let upstream = EchoUpstream::start().await;
    let gw = gateway_for(&upstream).await;
    let resp = raw_request(
        gw.addr(),
        "GET",
        "/rid",
        &[("x-request-id", "client-req-0123456789")],
        "",
    )
    .await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("x-request-id"), Some("client-req-0123456789"));
    let echoed = Echoed::parse(&resp.body);
    assert_eq!(echoed.header("x-request-id"), Some("client-req-0123456789"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_id_is_generated_when_absent() {
    let upstream = EchoUpstream::start().await;
    let gw = gateway_for(&upstream).await;
    let mut seen = Vec::new();
    for _ in 0..2 {
        let resp = raw_request(gw.addr(), "GET", "/rid", &[], "").await;
        assert_eq!(resp.status, 200);
        let echoed = Echoed::parse(&resp.body);
        let upstream_id = echoed
            .header("x-request-id")
            .expect("upstream got no X-Request-Id")
            .to_string();
        assert!(!upstream_id.trim().is_empty());
        assert_eq!(
            resp.header("x-request-id"),
            Some(upstream_id.as_str()),
            "response echoes the id sent upstream"
        );
        seen.push(upstream_id);
    }
    assert_ne!(seen[0], seen[1], "generated ids are unique per request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlong_client_request_id_is_replaced() {
    let upstream = EchoUpstream::start().await;
    let gw = gateway_for(&upstream).await;
    let long_id = "x".repeat(200);
    let resp = raw_request(gw.addr(), "GET", "/rid", &[("x-request-id", &long_id)], "").await;
    assert_eq!(resp.status, 200);
    let echoed = Echoed::parse(&resp.body);
    let upstream_id = echoed.header("x-request-id").expect("no X-Request-Id");
    assert_ne!(upstream_id, long_id, "a 200-char id must not be trusted");
    assert!(!upstream_id.is_empty() && upstream_id.len() <= 128);
    assert_eq!(resp.header("x-request-id"), Some(upstream_id));
}

// ---------------------------------------------------------------------------------
// Upstream failures
// ---------------------------------------------------------------------------------

/// Error pages carry only the status and the request id: no internal error text.
fn assert_safe_error_body(resp: &common::RawResponse, request_id: &str) {
    let content_type = resp.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("text/plain"),
        "error content-type: {content_type:?}"
    );
    let body = resp.text();
    assert!(
        body.contains(request_id),
        "error body should mention the request id {request_id}: {body:?}"
    );
    assert!(body.len() < 1024, "error body too long: {body:?}");
    let lower = body.to_ascii_lowercase();
    for internal in [
        "os error",
        "refused",
        "hyper",
        "error trying",
        "127.0.0.1",
        "elapsed",
        "panick",
    ] {
        assert!(
            !lower.contains(internal),
            "error body leaks internal detail {internal:?}: {body:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_upstream_is_502() {
    // A port nothing listens on: connection refused.
    let dead = format!("http://127.0.0.1:{}", common::free_port());
    let gw = InProcessGateway::start(&config(
        "connect_timeout = \"2s\"",
        &route(None, "/", &dead),
    ))
    .await;
    let resp = raw_request(
        gw.addr(),
        "GET",
        "/down",
        &[("x-request-id", "req-502-check")],
        "",
    )
    .await;
    assert_eq!(resp.status, 502, "body: {}", resp.text());
    assert_safe_error_body(&resp, "req-502-check");
    assert_eq!(resp.header("x-request-id"), Some("req-502-check"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_upstream_is_504_after_upstream_timeout() {
    let upstream = EchoUpstream::start().await;
    let gw = InProcessGateway::start(&config(
        "upstream_timeout = \"1s\"",
        &route(None, "/", &upstream.url()),
    ))
    .await;
    let started = Instant::now();
    let resp = raw_request(
        gw.addr(),
        "GET",
        "/slow?ms=5000",
        &[("x-request-id", "req-504-check")],
        "",
    )
    .await;
    let elapsed = started.elapsed();
    assert_eq!(resp.status, 504, "body: {}", resp.text());
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_millis(4000),
        "504 should come after ~1 s (upstream_timeout), came after {elapsed:?}"
    );
    assert_safe_error_body(&resp, "req-504-check");
}

// ---------------------------------------------------------------------------------
// Routing
// ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_match_by_host_and_path_first_match_wins() {
    let a = EchoUpstream::start_named("A").await;
    let b = EchoUpstream::start_named("B").await;
    let c = EchoUpstream::start_named("C").await;
    let d = EchoUpstream::start_named("D").await;
    let routes = [
        route(Some("a.test"), "/", &a.url()),
        route(Some("*.wild.test"), "/", &b.url()),
        route(None, "/api", &c.url()),
        route(Some("*"), "/", &d.url()),
    ]
    .concat();
    let gw = InProcessGateway::start(&config("", &routes)).await;

    let cases = [
        ("a.test", "/", "A", "exact host"),
        ("a.test:8080", "/x", "A", "host port is ignored"),
        ("A.Test", "/x", "A", "host match is case-insensitive"),
        (
            "a.test",
            "/api/x",
            "A",
            "first match wins over a later path route",
        ),
        ("x.wild.test", "/", "B", "wildcard host"),
        (
            "x.wild.test",
            "/api",
            "B",
            "first match wins (wildcard before /api)",
        ),
        (
            "wild.test",
            "/api",
            "C",
            "*.wild.test does not match wild.test",
        ),
        ("wild.test", "/", "D", "catch-all host"),
        (
            "other.test",
            "/api/v1/items",
            "C",
            "route without host, path prefix",
        ),
        ("other.test", "/apiary", "D", "prefix is segment-aware"),
        ("other.test", "/", "D", "catch-all"),
    ];
    for (host, path, expected, why) in cases {
        let resp = raw_request(gw.addr(), "GET", path, &[("host", host)], "").await;
        assert_eq!(
            resp.status,
            200,
            "Host {host} {path} ({why}): {}",
            resp.text()
        );
        let echoed = Echoed::parse(&resp.body);
        assert_eq!(
            echoed.upstream, expected,
            "Host {host} {path} should go to {expected} ({why})"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_without_matching_route_is_404() {
    let upstream = EchoUpstream::start().await;
    let routes = [
        route(Some("a.test"), "/", &upstream.url()),
        route(Some("b.test"), "/only", &upstream.url()),
    ]
    .concat();
    let gw = InProcessGateway::start(&config("", &routes)).await;

    for (host, path) in [
        ("c.test", "/"),
        ("sub.a.test", "/"),
        ("b.test", "/other"),
        ("b.test", "/onlyx"),
    ] {
        let resp = raw_request(gw.addr(), "GET", path, &[("host", host)], "").await;
        assert_eq!(resp.status, 404, "Host {host} {path}: {}", resp.text());
    }
    assert!(
        upstream.received().is_empty(),
        "nothing should be proxied: {:?}",
        upstream.received()
    );
    // Sanity: the matching ones do reach the upstream.
    get_echo(&gw, "/", &[("host", "a.test")]).await;
    get_echo(&gw, "/only/x", &[("host", "b.test")]).await;
}

// ---------------------------------------------------------------------------------
// Path normalization: routes `/b/x` -> C, `/b` -> B, `/` -> A
// ---------------------------------------------------------------------------------

struct NormalizationSetup {
    gw: InProcessGateway,
    _a: EchoUpstream,
    _b: EchoUpstream,
    _c: EchoUpstream,
}

async fn normalization_setup() -> NormalizationSetup {
    let a = EchoUpstream::start_named("A").await;
    let b = EchoUpstream::start_named("B").await;
    let c = EchoUpstream::start_named("C").await;
    let routes = [
        route(None, "/b/x", &c.url()),
        route(None, "/b", &b.url()),
        route(None, "/", &a.url()),
    ]
    .concat();
    let gw = InProcessGateway::start(&config("", &routes)).await;
    NormalizationSetup {
        gw,
        _a: a,
        _b: b,
        _c: c,
    }
}

/// Sends each raw target and checks which upstream got it and which path it saw.
async fn assert_routed(gw: &InProcessGateway, cases: &[(&str, &str, &str)]) {
    let mut failures = Vec::new();
    for (target, upstream, path) in cases {
        let resp = raw_request(gw.addr(), "GET", target, &[], "").await;
        if resp.status != 200 {
            failures.push(format!(
                "{target}: status {} (expected {upstream} seeing {path}): {}",
                resp.status,
                resp.text()
            ));
            continue;
        }
        let echoed = Echoed::parse(&resp.body);
        if echoed.upstream != *upstream || echoed.path != *path {
            failures.push(format!(
                "{target}: went to {} seeing {:?}, expected {upstream} seeing {path:?}",
                echoed.upstream, echoed.path
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dot_segments_are_resolved_before_routing() {
    let setup = normalization_setup().await;
    assert_routed(
        &setup.gw,
        &[
            ("/a/../b", "B", "/b"),
            ("/./b", "B", "/b"),
            ("/a/./../b/", "B", "/b/"),
            ("/%2e%2e/b", "B", "/b"),
            ("/a/%2E%2E/b", "B", "/b"),
            ("/a/.%2e/b", "B", "/b"),
            ("/b/../a", "A", "/a"),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dot_segments_above_root_clamp_at_root() {
    let setup = normalization_setup().await;
    assert_routed(
        &setup.gw,
        &[
            ("/../b", "B", "/b"),
            ("/../../../b/x", "C", "/b/x"),
            ("/..", "A", "/"),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_slashes_are_merged() {
    let setup = normalization_setup().await;
    assert_routed(
        &setup.gw,
        &[
            ("//b", "B", "/b"),
            ("/b//x", "C", "/b/x"),
            ("///a", "A", "/a"),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn percent_encoded_unreserved_characters_are_decoded() {
    let setup = normalization_setup().await;
    assert_routed(&setup.gw, &[("/%62", "B", "/b"), ("/%62/%78", "C", "/b/x")]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encoded_slash_is_refused_unless_the_route_allows_it() {
    // Default: nginx and Jetty decode %2F, so the gateway refuses it rather than route
    // `/a%2Fb` by one meaning and have the upstream serve another.
    let setup = normalization_setup().await;
    for target in ["/a%2Fb", "/b%2Fx"] {
        let resp = raw_request(setup.gw.addr(), "GET", target, &[], "").await;
        assert_eq!(resp.status, 400, "{target}: {}", resp.text());
        assert!(
            resp.text().contains("ambiguous_path"),
            "{target}: {}",
            resp.text()
        );
    }

    // An API that needs %2F opts in: the segment stays whole, matched and forwarded as one
    // string, upper-cased; a dot segment next to it is still refused.
    let api = EchoUpstream::start_named("API").await;
    let other = EchoUpstream::start_named("OTHER").await;
    let routes = [
        format!(
            "{}\nallow_encoded_slashes = true\n\n",
            route(None, "/api", &api.url()).trim_end()
        ),
        route(None, "/", &other.url()),
    ]
    .concat();
    let gw = InProcessGateway::start(&config("", &routes)).await;
    assert_routed(
        &gw,
        &[
            ("/api/a%2fb", "API", "/api/a%2Fb"),
            ("/api/repos/o%2Fr/x", "API", "/api/repos/o%2Fr/x"),
        ],
    )
    .await;
    for target in ["/api/..%2Fx", "/api/a%2F..%2Fb", "/api/.%2F", "/a%2Fb"] {
        let resp = raw_request(gw.addr(), "GET", target, &[], "").await;
        assert_eq!(resp.status, 400, "{target}: {}", resp.text());
    }
    assert!(other.received().is_empty(), "{:?}", other.received());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_prefix_match_is_segment_aware() {
    let setup = normalization_setup().await;
    assert_routed(
        &setup.gw,
        &[
            ("/b", "B", "/b"),
            ("/b/", "B", "/b/"),
            ("/bx", "A", "/bx"),
            ("/b/xy", "B", "/b/xy"),
            ("/b/x/y", "C", "/b/x/y"),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_is_forwarded_unchanged_after_normalization() {
    let setup = normalization_setup().await;
    assert_routed(
        &setup.gw,
        &[
            ("/a/../b?p=%2e%2e/x&q=1", "B", "/b?p=%2e%2e/x&q=1"),
            ("//b?x=a%2Fb&&y", "B", "/b?x=a%2Fb&&y"),
        ],
    )
    .await;
}

// ---------------------------------------------------------------------------------
// Limits
// ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_request_headers_are_431() {
    let upstream = EchoUpstream::start().await;
    let gw = InProcessGateway::start(&config(
        "max_header_bytes = 16384",
        &route(None, "/", &upstream.url()),
    ))
    .await;

    let medium = "m".repeat(8 * 1024);
    let resp = raw_request(gw.addr(), "GET", "/ok", &[("x-medium", &medium)], "").await;
    assert_eq!(resp.status, 200, "an 8 KB header is within the limit");

    let big = "b".repeat(20 * 1024);
    let resp = try_raw_request(gw.addr(), "GET", "/big", &[("x-big", &big)], "")
        .await
        .unwrap_or_else(|e| panic!("expected a 431 response, got transport error: {e}"));
    assert_eq!(resp.status, 431);

    // Many headers adding up to more than the limit count too.
    let piece = "p".repeat(1024);
    let names: Vec<String> = (0..20).map(|i| format!("x-piece-{i}")).collect();
    let many: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), piece.as_str())).collect();
    let resp = try_raw_request(gw.addr(), "GET", "/many", &many, "")
        .await
        .unwrap_or_else(|e| panic!("expected a 431 response, got transport error: {e}"));
    assert_eq!(resp.status, 431);

    assert!(
        upstream.received().iter().all(|r| r.path == "/ok"),
        "oversized requests must not be proxied"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlong_uri_is_414() {
    let upstream = EchoUpstream::start().await;
    let gw = InProcessGateway::start(&config(
        "max_uri_length = 8192",
        &route(None, "/", &upstream.url()),
    ))
    .await;

    let ok_target = format!("/{}", "a".repeat(4000));
    let resp = raw_request(gw.addr(), "GET", &ok_target, &[], "").await;
    assert_eq!(resp.status, 200);

    let long_target = format!("/long?q={}", "a".repeat(9000));
    let resp = try_raw_request(gw.addr(), "GET", &long_target, &[], "")
        .await
        .unwrap_or_else(|e| panic!("expected a 414 response, got transport error: {e}"));
    assert_eq!(resp.status, 414);
    assert!(upstream.received().iter().all(|r| r.path.len() < 5000));
}

// ---------------------------------------------------------------------------------
// WebSocket
// ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_is_proxied_end_to_end() {
    let upstream = EchoUpstream::start().await;
    let gw = gateway_for(&upstream).await;
    let url = format!("ws://{}/ws/echo?room=1", gw.addr());
    let (mut ws, response) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async(url.as_str()),
    )
    .await
    .expect("websocket handshake timed out")
    .expect("websocket handshake through the gateway");
    assert_eq!(response.status(), 101);

    let exchange = async {
        ws.send(Message::Text("hello through the gateway".into()))
            .await
            .unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::Text("hello through the gateway".into())
        );
        let binary: Vec<u8> = (0..=255u8).chain(0..=255u8).collect();
        ws.send(Message::Binary(binary.clone())).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::Binary(binary));
        // A bigger message spanning several reads.
        let big = "w".repeat(200_000);
        ws.send(Message::Text(big.clone())).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::Text(big));
        ws.close(None).await.unwrap();
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .expect("websocket exchange timed out");

    let received = upstream.received();
    let upgrade = received
        .iter()
        .find(|r| r.path == "/ws/echo?room=1")
        .expect("upstream saw the upgrade request");
    assert_eq!(upgrade.method, "GET");
}

// ---------------------------------------------------------------------------------
// TLS
// ---------------------------------------------------------------------------------

async fn tls_gateway(upstream: &EchoUpstream) -> InProcessGateway {
    let config = config(
        "tls_cert_file = \"@DIR@/cert.pem\"\ntls_key_file = \"@DIR@/key.pem\"",
        &route(None, "/", &upstream.url()),
    );
    let builder = InProcessGateway::builder(&config);
    SelfSignedCert::generate().write_to(builder.dir());
    builder.start().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_listener_negotiates_http2_via_alpn() {
    let upstream = EchoUpstream::start().await;
    let gw = tls_gateway(&upstream).await;
    assert!(gw.url().starts_with("https://"));

    let resp = client().get(gw.url_for("/h2?x=1")).send().await.unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    let echoed = Echoed::parse(&resp.bytes().await.unwrap());
    assert_eq!(echoed.path, "/h2?x=1");
    assert_eq!(echoed.header("x-forwarded-proto"), Some("https"));

    // A POST body over h2 arrives intact.
    let body = vec![7u8; 300_000];
    let resp = client()
        .post(gw.url_for("/h2-upload"))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let echoed = Echoed::parse(&resp.bytes().await.unwrap());
    assert_eq!(echoed.body_len, body.len() as u64);
    assert_eq!(echoed.body_sha256, sha256_hex(&body));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_listener_serves_http1_too() {
    let upstream = EchoUpstream::start().await;
    let gw = tls_gateway(&upstream).await;
    let http1 = client_builder().http1_only().build().unwrap();
    let resp = http1.get(gw.url_for("/h1")).send().await.unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_11);
    assert_eq!(resp.status(), 200);
    let echoed = Echoed::parse(&resp.bytes().await.unwrap());
    assert_eq!(echoed.header("x-forwarded-proto"), Some("https"));
    assert!(echoed
        .header("forwarded")
        .is_some_and(|f| f.contains("proto=https")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_upstream_with_untrusted_certificate_is_502() {
    let cert = SelfSignedCert::generate();
    let upstream = EchoUpstream::start_tls("tls-upstream", &cert).await;
    // Control: the upstream itself works for a client that skips verification.
    let direct = client()
        .get(format!("{}/direct", upstream.url()))
        .send()
        .await;
    assert_eq!(direct.expect("direct https to upstream").status(), 200);
    let direct_count = upstream.received().len();

    let gw = gateway_for(&upstream).await;
    let resp = raw_request(gw.addr(), "GET", "/via-gateway", &[], "").await;
    assert_eq!(
        resp.status,
        502,
        "a self-signed upstream certificate must not be trusted by default: {}",
        resp.text()
    );
    assert_eq!(
        upstream.received().len(),
        direct_count,
        "no request may reach an upstream whose certificate failed verification"
    );
}

// ---------------------------------------------------------------------------------
// Streaming and memory
// ---------------------------------------------------------------------------------

async fn upload(http: &reqwest::Client, url: &str, total: u64) -> Echoed {
    let body = reqwest::Body::wrap_stream(pattern_stream(total, 64 * 1024));
    let resp = http.post(url).body(body).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    Echoed::parse(&resp.bytes().await.unwrap())
}

async fn download(http: &reqwest::Client, url: &str) -> (u64, String) {
    let resp = http.get(url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut stream = resp.bytes_stream();
    let mut hasher = Sha256::new();
    let mut len = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.expect("download chunk");
        len += chunk.len() as u64;
        hasher.update(&chunk);
    }
    (len, hasher.finish_hex())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_stream_through_without_buffering() {
    const MB: u64 = 1024 * 1024;
    const BIG: u64 = 50 * MB;
    let upstream = EchoUpstream::start().await;
    // The process: its memory is the gateway's alone.
    let gw = Gateway::start(&config("", &route(None, "/", &upstream.url()))).await;
    let http = client_builder()
        .timeout(Duration::from_secs(300))
        .build()
        .unwrap();

    // Warm-up: connection pools, buffers, allocator arenas.
    let echoed = upload(&http, &gw.url_for("/upload"), MB).await;
    assert_eq!(echoed.body_len, MB);
    let (len, _) = download(&http, &gw.url_for(&format!("/download?bytes={MB}"))).await;
    assert_eq!(len, MB);
    let baseline = process_memory(gw.pid());

    let echoed = upload(&http, &gw.url_for("/upload"), BIG).await;
    assert_eq!(echoed.body_len, BIG, "upload arrived incomplete");
    assert_eq!(echoed.body_sha256, pattern_sha256(BIG), "upload corrupted");

    let (len, sha) = download(&http, &gw.url_for(&format!("/download?bytes={BIG}"))).await;
    assert_eq!(len, BIG, "download arrived incomplete");
    assert_eq!(sha, pattern_sha256(BIG), "download corrupted");

    let after = process_memory(gw.pid());
    let growth_kib = after.hwm_kib.saturating_sub(baseline.hwm_kib);
    eprintln!(
        "gateway memory: baseline {baseline:?}, after {after:?}, VmHWM growth {} KiB",
        growth_kib
    );
    assert!(
        growth_kib < 25 * 1024,
        "gateway peak RSS grew by {growth_kib} KiB moving 2 x 50 MB: bodies are being buffered \
         (baseline {baseline:?}, after {after:?})"
    );
}

// ---------------------------------------------------------------------------------
// Graceful shutdown
// ---------------------------------------------------------------------------------

async fn connection_refused(addr: SocketAddr) -> bool {
    matches!(
        tokio::net::TcpStream::connect(addr).await,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_then_exits_zero() {
    let upstream = EchoUpstream::start().await;
    let mut gw = Gateway::start(&config(
        "drain_timeout = \"10s\"",
        &route(None, "/", &upstream.url()),
    ))
    .await;

    let url = gw.url_for("/slow?ms=1500");
    let in_flight = tokio::spawn(async move {
        let resp = client().get(url).send().await?;
        let status = resp.status();
        let body = resp.bytes().await?;
        Ok::<_, reqwest::Error>((status, body))
    });
    // The request is in flight once the upstream has it (it answers 1.5 s later).
    upstream.wait_for_requests(1, Duration::from_secs(10)).await;
    let terminated_at = Instant::now();
    gw.terminate();

    // The listener closes promptly: new connections are refused while the old
    // request is still being served.
    let addr = gw.addr();
    common::wait_until(
        "new connections to be refused after SIGTERM",
        Duration::from_secs(1),
        || async move { connection_refused(addr).await.then_some(()) },
    )
    .await;

    let (status, body) = tokio::time::timeout(Duration::from_secs(10), in_flight)
        .await
        .expect("in-flight request did not finish")
        .unwrap()
        .expect("in-flight request failed during graceful shutdown");
    assert_eq!(status, 200);
    let echoed = Echoed::parse(&body);
    assert_eq!(echoed.path, "/slow?ms=1500");

    let exit = gw
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("gateway did not exit within drain_timeout");
    assert!(exit.success(), "exit status after SIGTERM: {exit}");
    eprintln!("exited {:?} after SIGTERM", terminated_at.elapsed());
    assert!(connection_refused(addr).await);
    // The log is written by a background thread: what it had queued at the exit, the
    // drained request's line and the last line, was written before the process ended.
    let log = gw.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains(" request ") && l.contains("path=\"/slow\"")),
        "no access line for the drained request:\n{log}"
    );
    assert_drained_last(&log);
}

/// A burst of requests answered just before SIGTERM: every access line is in the log
/// once the process has exited (the background log writer is drained at exit, nothing
/// is dropped when its queue fills).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_access_line_is_written_before_exit() {
    const CLIENTS: usize = 8;
    const EACH: usize = 50;
    let upstream = EchoUpstream::start().await;
    let mut gw = Gateway::builder(&config("", &route(None, "/", &upstream.url())))
        .arg("--log-format")
        .arg("json")
        .start()
        .await;
    let addr = gw.addr();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            tokio::spawn(async move {
                for i in 0..EACH {
                    let id = format!("burst-{c}-{i}");
                    let resp =
                        raw_request(addr, "GET", "/burst", &[("x-request-id", &id)], "").await;
                    assert_eq!(resp.status, 200, "{id}");
                }
            })
        })
        .collect();
    for client in clients {
        client.await.unwrap();
    }
    gw.terminate();
    let exit = gw
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("gateway did not exit after SIGTERM");
    assert!(exit.success(), "exit status after SIGTERM: {exit}");

    let log = gw.log_text();
    let mut logged: Vec<String> = log
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|e| e["message"] == "request")
        .filter_map(|e| e["request_id"].as_str().map(str::to_string))
        .filter(|id| id.starts_with("burst-"))
        .collect();
    logged.sort();
    let mut expected: Vec<String> = (0..CLIENTS)
        .flat_map(|c| (0..EACH).map(move |i| format!("burst-{c}-{i}")))
        .collect();
    expected.sort();
    assert_eq!(
        logged,
        expected,
        "access lines missing at exit; log tail:\n{}",
        {
            let lines: Vec<&str> = log.lines().collect();
            lines[lines.len().saturating_sub(5)..].join("\n")
        }
    );
    assert_drained_last(&log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_does_not_wait_past_drain_timeout() {
    let upstream = EchoUpstream::start().await;
    let mut gw = Gateway::start(&config(
        "drain_timeout = \"1s\"\nupstream_timeout = \"60s\"",
        &route(None, "/", &upstream.url()),
    ))
    .await;
    let url = gw.url_for("/slow?ms=30000");
    let stuck = tokio::spawn(async move { client().get(url).send().await.map(|r| r.status()) });
    upstream.wait_for_requests(1, Duration::from_secs(10)).await;

    let terminated_at = Instant::now();
    gw.terminate();
    let exit = gw
        .wait_exit(Duration::from_secs(6))
        .await
        .expect("gateway still running 6 s after SIGTERM with drain_timeout = 1s");
    eprintln!(
        "exit {exit} after {:?}; stuck request: {:?}",
        terminated_at.elapsed(),
        stuck.await
    );
}

// ---------------------------------------------------------------------------------
// Logs
// ---------------------------------------------------------------------------------

/// Looks `key` up in a tracing JSON event: top level, `fields`, `span`, `spans[*]`.
fn json_field<'a>(event: &'a serde_json::Value, key: &str) -> Option<&'a serde_json::Value> {
    let mut places = vec![event, &event["fields"], &event["span"]];
    if let Some(spans) = event["spans"].as_array() {
        places.extend(spans.iter());
    }
    places.into_iter().find_map(|obj| {
        obj.as_object()?
            .iter()
            .find(|(k, _)| k.as_str() == key || (key == "latency" && k.starts_with("latency")))
            .map(|(_, v)| v)
    })
}

fn as_text(value: &serde_json::Value) -> String {
    value
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| value.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_log_has_one_line_per_request_with_fields() {
    let upstream = EchoUpstream::start().await;
    let gw = Gateway::builder(&config("", &route(None, "/", &upstream.url())))
        .arg("--log-format")
        .arg("json")
        .start()
        .await;

    let resp = raw_request(
        gw.addr(),
        "GET",
        "/logged/path?x=1",
        &[("x-request-id", "log-line-req-1")],
        "",
    )
    .await;
    assert_eq!(resp.status, 200);
    // A second request as a marker: once its line is written, the first request's
    // lines are too.
    raw_request(
        gw.addr(),
        "GET",
        "/marker",
        &[("x-request-id", "log-marker-2")],
        "",
    )
    .await;
    let log = gw
        .wait_for_log(
            "the marker request's line",
            Duration::from_secs(10),
            |log| log.contains("log-marker-2"),
        )
        .await;

    let mut events = Vec::new();
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let event: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("--log-format json printed a non-JSON line ({e}): {line}"));
        events.push(event);
    }
    let for_request: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e.to_string().contains("log-line-req-1"))
        .collect();
    assert_eq!(
        for_request.len(),
        1,
        "expected exactly one log line for the request, got:\n{for_request:#?}"
    );
    let event = for_request[0];
    assert!(
        event["level"]
            .as_str()
            .is_some_and(|l| l.eq_ignore_ascii_case("info")),
        "level: {event}"
    );
    for key in ["method", "route", "status", "latency", "request_id"] {
        assert!(
            json_field(event, key).is_some(),
            "request log line lacks {key}: {event}"
        );
    }
    assert_eq!(as_text(json_field(event, "method").unwrap()), "GET");
    assert_eq!(as_text(json_field(event, "status").unwrap()), "200");
    assert_eq!(
        as_text(json_field(event, "request_id").unwrap()),
        "log-line-req-1"
    );
}

async fn assert_secrets_not_logged(gw: &Gateway) {
    let resp = raw_request(
        gw.addr(),
        "GET",
        "/private",
        &[
            ("cookie", "session=SECRETCOOKIE; other=x"),
            ("authorization", "Bearer SECRETTOKEN"),
            ("x-request-id", "secret-req-1"),
        ],
        "",
    )
    .await;
    assert_eq!(resp.status, 200);
    raw_request(
        gw.addr(),
        "GET",
        "/marker",
        &[("x-request-id", "secret-marker-2")],
        "",
    )
    .await;
    let log = gw
        .wait_for_log(
            "the marker request's line",
            Duration::from_secs(10),
            |log| log.contains("secret-marker-2"),
        )
        .await;
    assert!(
        log.contains("secret-req-1"),
        "request was not logged:\n{log}"
    );
    for secret in ["SECRETCOOKIE", "SECRETTOKEN"] {
        assert!(!log.contains(secret), "{secret} appears in the log:\n{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookies_and_authorization_are_never_logged() {
    let upstream = EchoUpstream::start().await;
    let gw = Gateway::builder(&config("", &route(None, "/", &upstream.url())))
        .arg("--log-format")
        .arg("json")
        .start()
        .await;
    assert_secrets_not_logged(&gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookies_and_authorization_are_not_logged_even_at_debug() {
    let upstream = EchoUpstream::start().await;
    let config = config("", &route(None, "/", &upstream.url()))
        .replace("filter = \"info\"", "filter = \"debug\"");
    let gw = Gateway::start(&config).await;
    assert_secrets_not_logged(&gw).await;
}

/// The gateway's last log line before a SIGTERM exit is the drain's.
fn assert_drained_last(log: &str) {
    assert!(
        log.lines()
            .last()
            .is_some_and(|l| l.contains("drained, exiting")),
        "the last line logged before the exit is missing:\n{log}"
    );
}
