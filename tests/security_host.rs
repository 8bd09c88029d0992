//! Standing adversarial suite, part 2: `Host`, absolute-form targets and HTTP/2.
//!
//! Route 0 of the shared stack (`tests/common/security.rs`) is public for the host
//! `docs.test` only and goes to the echo upstream, so a request that gets itself routed
//! as `docs.test` without being `docs.test` shows up as the echo's JSON without a login.
//! RFC 9112 §3.2: more than one `Host`, or an invalid one, is a 400; an absolute-form
//! target is normalized like any path and its authority must equal `Host`. HTTP/2 (h2c
//! with prior knowledge on the plain listener) gets the same path rules, and malformed
//! pseudo-headers are refused (RFC 9113 §8.3).

mod common;

use common::http::builder as client_builder;
use common::security::*;
use common::security_h2::h2_request;

/// Asserts `reply` is a 400 that no upstream produced, and that nothing reached one.
fn assert_bad_request(stack: &Stack, case: &str, traffic: usize, reply: &Reply) {
    assert!(!reply.is_protected(), "{case}: BYPASS\n{reply}");
    assert!(
        reply.header("x-upstream-name").is_none(),
        "{case}: an upstream answered (routed as docs.test?)\n{reply}"
    );
    assert_eq!(reply.status, 400, "{case}: must be 400\n{reply}");
    assert_eq!(
        stack.upstream_traffic(),
        traffic,
        "{case}: reached an upstream"
    );
}

async fn host_case(case: &str, headers: &[(&str, &str)]) {
    let stack = Stack::light().await;
    let traffic = stack.upstream_traffic();
    let mut all = vec![("accept", HTML)];
    all.extend_from_slice(headers);
    let reply = stack.request("GET", "/secret", &all).await;
    assert_bad_request(&stack, case, traffic, &reply);
}

// ----- Host --------------------------------------------------------------------------

/// RFC 9112 §3.2 ("more than one Host header field line" → 400); Envoy CVE-2020-25017
/// (only the first of several values was considered).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_host_headers_are_refused() {
    let stack = Stack::light().await;
    let host = stack.host();
    let traffic = stack.upstream_traffic();
    let reply = stack
        .request(
            "GET",
            "/secret",
            &[("host", &host), ("host", "docs.test"), ("accept", HTML)],
        )
        .await;
    assert_bad_request(&stack, "two_host_headers_are_refused", traffic, &reply);
    // Either order.
    let reply = stack
        .request(
            "GET",
            "/secret",
            &[("host", "docs.test"), ("host", &host), ("accept", HTML)],
        )
        .await;
    assert_bad_request(
        &stack,
        "two_host_headers_are_refused (reversed)",
        traffic,
        &reply,
    );
}

/// RFC 9112 §3.2: two identical `Host` lines are still more than one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_identical_host_headers_are_refused() {
    host_case(
        "two_identical_host_headers_are_refused",
        &[("host", "docs.test"), ("host", "docs.test")],
    )
    .await;
}

/// RFC 9112 §3.2 ("a Host header field with an invalid field value" → 400): a path in
/// `Host`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_with_a_path_is_refused() {
    host_case(
        "host_with_a_path_is_refused",
        &[("host", "docs.test/secret")],
    )
    .await;
}

/// RFC 9112 §3.2 / RFC 9110 §7.2 (`Host = uri-host [ ":" port ]`): a list is invalid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_with_a_comma_list_is_refused() {
    host_case(
        "host_with_a_comma_list_is_refused",
        &[("host", "docs.test, 127.0.0.1")],
    )
    .await;
}

/// RFC 9110 §7.2: the port is digits only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_with_a_non_numeric_port_is_refused() {
    host_case(
        "host_with_a_non_numeric_port_is_refused",
        &[("host", "docs.test:abc")],
    )
    .await;
}

/// RFC 9110 §4.2.4 (userinfo is not allowed in http(s) URIs) and §7.2: `user@host`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_with_userinfo_is_refused() {
    host_case(
        "host_with_userinfo_is_refused",
        &[("host", "evil@docs.test")],
    )
    .await;
}

/// RFC 3986 §3.2.2: an unclosed IPv6 literal is no host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_with_an_unclosed_ipv6_literal_is_refused() {
    host_case(
        "host_with_an_unclosed_ipv6_literal_is_refused",
        &[("host", "[::1")],
    )
    .await;
}

/// RFC 9112 §3.2 ("A server MUST respond with a 400 ... to any HTTP/1.1 request message
/// that lacks a Host header field").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_host_is_refused() {
    let stack = Stack::light().await;
    let traffic = stack.upstream_traffic();
    let reply = stack
        .send_bytes(b"GET /public/x HTTP/1.1\r\nAccept: */*\r\nConnection: close\r\n\r\n")
        .await;
    assert!(
        !reply.body.contains(PUBLIC),
        "missing_host_is_refused: served\n{reply}"
    );
    assert_bad_request(&stack, "missing_host_is_refused", traffic, &reply);
}

/// README "What happens to a request" (routes match on `Host`, forwarded headers are
/// replaced unless trusted); oauth2-proxy GHSA-7x63-xv5r-3p2x class: `X-Forwarded-Host`
/// from a client does not select the `docs.test` route.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_host_header_does_not_select_routes() {
    let stack = Stack::light().await;
    let case = "forwarded_host_header_does_not_select_routes";
    let traffic = stack.upstream_traffic();
    let reply = stack
        .request(
            "GET",
            "/secret",
            &[("accept", HTML), ("x-forwarded-host", "docs.test")],
        )
        .await;
    assert_eq!(reply.status, 302, "{case}: still a login redirect\n{reply}");
    assert!(reply.header("x-upstream-name").is_none(), "{case}\n{reply}");
    assert_eq!(stack.upstream_traffic(), traffic, "{case}");
}

/// RFC 7239 §5.3 (`Forwarded: host=` is only as trustworthy as its sender): it does not
/// select routes either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_header_host_does_not_select_routes() {
    let stack = Stack::light().await;
    let case = "forwarded_header_host_does_not_select_routes";
    let traffic = stack.upstream_traffic();
    let reply = stack
        .request(
            "GET",
            "/secret",
            &[
                ("accept", HTML),
                ("forwarded", "host=docs.test;proto=https"),
            ],
        )
        .await;
    assert_eq!(reply.status, 302, "{case}: still a login redirect\n{reply}");
    assert_eq!(stack.upstream_traffic(), traffic, "{case}");
}

/// RFC 9110 §4.2.3 (the host is case-insensitive): a valid `Host` in another case still
/// selects its route (control: the Host checks refuse only what is invalid).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_case_variant_still_selects_its_route() {
    let stack = Stack::light().await;
    let case = "host_case_variant_still_selects_its_route";
    let reply = stack
        .request("GET", "/docs", &[("host", "DOCS.test:80")])
        .await;
    let echo = echoed(case, &reply);
    assert_eq!(echo.path, "/docs", "{case}");
}

// ----- absolute-form -----------------------------------------------------------------

/// RFC 9112 §3.2.2 (absolute-form) + the issue: the path of an absolute-form target is
/// normalized and refused like any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_form_target_is_checked_like_origin_form() {
    let stack = Stack::light().await;
    let target = format!("http://{}/public/..%2fsecret", stack.host());
    assert_refused(
        &stack,
        "absolute_form_target_is_checked_like_origin_form",
        "GET",
        &target,
        &[],
        None,
        true,
    )
    .await;
}

/// RFC 9112 §3.2.2 / §3.2.3: an absolute-form authority that disagrees with `Host` is a
/// 400 (never routed by either of them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_form_authority_must_match_host() {
    let stack = Stack::light().await;
    let case = "absolute_form_authority_must_match_host";
    let traffic = stack.upstream_traffic();
    let reply = stack
        .request("GET", "http://docs.test/secret", &[("accept", HTML)])
        .await;
    assert_bad_request(&stack, case, traffic, &reply);
    // And the other way round: Host names the public host, the target the gateway.
    let target = format!("http://{}/secret", stack.host());
    let reply = stack
        .request("GET", &target, &[("host", "docs.test"), ("accept", HTML)])
        .await;
    assert_bad_request(&stack, &format!("{case} (reversed)"), traffic, &reply);
}

/// RFC 9112 §3.2.2 (absolute-form MUST be accepted by servers), control: an
/// absolute-form target whose authority equals `Host` is served, as origin-form upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_form_with_matching_host_is_served() {
    let stack = Stack::light().await;
    let case = "absolute_form_with_matching_host_is_served";
    let target = format!("http://{}/public/x", stack.host());
    let reply = stack.request("GET", &target, &[]).await;
    assert_eq!(
        reply.body,
        format!("{PUBLIC} /public/x\n"),
        "{case}\n{reply}"
    );
    assert_eq!(
        stack.wait_nginx_hits(1).await.last().map(|h| h.0.clone()),
        Some("/public/x".into()),
        "{case}: nginx gets origin-form"
    );
}

/// Envoy CVE-2023-35944 (mixed-case schemes bypassed checks): `HtTp://` is the same
/// scheme, and the path is checked the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_form_with_mixed_case_scheme_is_checked_too() {
    let stack = Stack::light().await;
    let target = format!("HtTp://{}/public/..%2fsecret", stack.host());
    assert_refused(
        &stack,
        "absolute_form_with_mixed_case_scheme_is_checked_too",
        "GET",
        &target,
        &[],
        None,
        false,
    )
    .await;
}

/// RFC 9110 §4.2.4 (no userinfo in http URIs): `http://user@docs.test/` in the target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_form_with_userinfo_is_refused() {
    let stack = Stack::light().await;
    let case = "absolute_form_with_userinfo_is_refused";
    let traffic = stack.upstream_traffic();
    let reply = stack
        .request(
            "GET",
            "http://attacker@docs.test/secret",
            &[("host", "docs.test")],
        )
        .await;
    assert_bad_request(&stack, case, traffic, &reply);
}

// ----- HTTP/2 (h2c, prior knowledge) -------------------------------------------------

fn h2c() -> reqwest::Client {
    client_builder()
        .http2_prior_knowledge()
        .build()
        .expect("h2c client")
}

async fn h2c_get(stack: &Stack, path: &str) -> (u16, String) {
    let resp = h2c()
        .get(stack.url_for(path))
        .header("accept", HTML)
        .send()
        .await
        .unwrap_or_else(|e| panic!("h2c GET {path}: {e}"));
    assert_eq!(
        resp.version(),
        reqwest::Version::HTTP_2,
        "h2c GET {path} spoke HTTP/2"
    );
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

async fn h2c_refused(case: &str, path: &str) {
    let stack = Stack::light().await;
    let traffic = stack.upstream_traffic();
    let events = stack.events("ambiguous_path");
    let (status, body) = h2c_get(&stack, path).await;
    assert!(!body.contains(PROTECTED), "{case}: BYPASS over h2c: {body}");
    assert_eq!(status, 400, "{case}: h2c {path} must be 400: {body}");
    assert_eq!(
        stack.upstream_traffic(),
        traffic,
        "{case}: reached an upstream"
    );
    stack.wait_event(case, "ambiguous_path", events).await;
}

/// The issue ("same rules for HTTP/1.1 and HTTP/2"); Envoy CVE-2021-29492 over h2c.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_encoded_slash_after_public_prefix_is_refused() {
    h2c_refused(
        "h2c_encoded_slash_after_public_prefix_is_refused",
        "/public/..%2fsecret",
    )
    .await;
}

/// Orange Tsai, "Breaking Parser Logic" (2018), over h2c.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_path_parameter_on_dot_segment_is_refused() {
    h2c_refused(
        "h2c_path_parameter_on_dot_segment_is_refused",
        "/public/..;/secret",
    )
    .await;
}

/// CVE-2008-2938 (overlong UTF-8), over h2c.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_overlong_utf8_dots_are_refused() {
    h2c_refused(
        "h2c_overlong_utf8_dots_are_refused",
        "/public/%c0%ae%c0%ae/secret",
    )
    .await;
}

/// CVE-2007-1860 (double encoding), over h2c.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_double_encoded_dots_are_refused() {
    h2c_refused(
        "h2c_double_encoded_dots_are_refused",
        "/public/%252e%252e/secret",
    )
    .await;
}

/// RFC 9113 §3.3 (h2c with prior knowledge), control: legitimate paths work over h2c and
/// reach nginx as sent; a protected one needs a login.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_legitimate_public_path_still_works() {
    let stack = Stack::light().await;
    let (status, body) = h2c_get(&stack, "/public/a%20b").await;
    assert_eq!(
        (status, body.as_str()),
        (200, "PUBLIC-CONTENT /public/a b\n"),
        "h2c_legitimate_public_path_still_works"
    );
    let (status, _) = h2c_get(&stack, "/secret").await;
    assert_eq!(
        status, 302,
        "h2c_legitimate_public_path_still_works: /secret needs a login over h2c too"
    );
}

/// RFC 9113 §8.3.1 (a `Host` that differs from `:authority` makes the request
/// malformed): must not be routed as `docs.test`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_authority_and_host_that_disagree_are_refused() {
    let stack = Stack::light().await;
    let case = "h2c_authority_and_host_that_disagree_are_refused";
    let traffic = stack.upstream_traffic();
    let host = stack.host();
    for (authority, host) in [("docs.test", host.as_str()), (host.as_str(), "docs.test")] {
        let out = h2_request(
            stack.addr(),
            &[
                (":method", "GET"),
                (":scheme", "http"),
                (":authority", authority),
                (":path", "/secret"),
                ("host", host),
            ],
            None,
        )
        .await;
        assert!(
            !out.body_text().contains("\"upstream\""),
            "{case}: routed as docs.test: {out:?}"
        );
        assert!(
            out.refused(),
            "{case}: :authority {authority} with host {host} must be refused: {out:?}"
        );
    }
    assert_eq!(
        stack.upstream_traffic(),
        traffic,
        "{case}: reached an upstream"
    );
}

/// RFC 9113 §8.3.1 (`:path` carries the target) + RFC 9112 §3.2: a raw `\` in an h2
/// `:path`, which no URL library would send.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_raw_backslash_in_path_is_refused() {
    let stack = Stack::light().await;
    let case = "h2c_raw_backslash_in_path_is_refused";
    let traffic = stack.upstream_traffic();
    let host = stack.host();
    let out = h2_request(
        stack.addr(),
        &[
            (":method", "GET"),
            (":scheme", "http"),
            (":authority", &host),
            (":path", "/public/..\\secret"),
        ],
        None,
    )
    .await;
    assert!(
        !out.body_text().contains(PROTECTED),
        "{case}: BYPASS: {out:?}"
    );
    assert!(out.refused(), "{case}: must be refused: {out:?}");
    assert_eq!(
        stack.upstream_traffic(),
        traffic,
        "{case}: reached an upstream"
    );
}
