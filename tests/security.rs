//! Standing adversarial suite, part 1: one canonical path, or 400.
//!
//! Every request target whose meaning could differ between the gateway and an upstream
//! is refused before routing (400, a short reason, an `event="ambiguous_path"` audit
//! line), so a path that the gateway routes to the public prefix can never be served by
//! a decoding upstream from protected content. The upstream here is Debian nginx (see
//! `tests/common/security.rs`): `/public/..%2fsecret` sent to nginx directly is served
//! from its protected `location` as `/secret`; through the gateway it must be a 400.
//! Targets without ambiguity (plain and encoded dot segments, `//`) are resolved before
//! routing and need a login; legitimate paths (`%20`, UTF-8, `%2F` on an opt-in route)
//! keep working and reach the upstream exactly as the route matched them.
//!
//! Other parts: `security_host.rs` (Host, absolute-form, HTTP/2), `security_headers.rs`,
//! `security_login.rs`, `security_redirect.rs`, `security_forward_auth.rs`,
//! `security_jwt.rs`, `security_smuggling.rs`, `security_leaks.rs`.

mod common;

use common::security::*;

// ----- encoded separators after the public prefix --------------------------------------

/// Envoy CVE-2021-29492 (escaped `%2F` not decoded by the proxy, decoded by the
/// upstream); the first bypass: nginx and Jetty decode `%2F` and serve `/secret`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encoded_slash_after_public_prefix_is_refused() {
    let stack = Stack::light().await;
    assert_ambiguous(
        &stack,
        "encoded_slash_after_public_prefix_is_refused",
        "/public/..%2fsecret",
        None,
    )
    .await;
}

/// Envoy CVE-2021-29492: the same with upper-case hex (`%2F`), which RFC 3986 §2.1 makes
/// equivalent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uppercase_encoded_slash_after_public_prefix_is_refused() {
    let stack = Stack::light().await;
    assert_ambiguous(
        &stack,
        "uppercase_encoded_slash_after_public_prefix_is_refused",
        "/public/..%2Fsecret",
        None,
    )
    .await;
}

/// Envoy CVE-2019-9901 + CVE-2021-29492: dots and slash all encoded (`%2e%2e%2f`); nginx
/// decodes the whole segment into `../`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fully_encoded_traversal_after_public_prefix_is_refused() {
    let stack = Stack::light().await;
    assert_ambiguous(
        &stack,
        "fully_encoded_traversal_after_public_prefix_is_refused",
        "/public/%2e%2e%2fsecret",
        None,
    )
    .await;
}

/// RFC 3986 §2.2 / §7.3: an encoded `/` without dots still means two segments to nginx
/// (`/public/%2fsecret` is `/public//secret`, merged) and one to the gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encoded_slash_alone_in_public_segment_is_refused() {
    let stack = Stack::light().await;
    assert_ambiguous(
        &stack,
        "encoded_slash_alone_in_public_segment_is_refused",
        "/public/%2fsecret",
        None,
    )
    .await;
}

/// Envoy CVE-2021-29492: `%2F` glued to the prefix (`/public%2f..%2fsecret`): nginx
/// serves `/secret`; a segment-aware matcher sees one segment `public%2F..%2Fsecret`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encoded_slash_glued_to_public_prefix_is_refused() {
    let stack = Stack::light().await;
    assert_ambiguous(
        &stack,
        "encoded_slash_glued_to_public_prefix_is_refused",
        "/public%2f..%2fsecret",
        None,
    )
    .await;
}

/// Pomerium CVE-2023-33189 (GHSA-pvrc-wvj2-f59p, crafted paths gave wrong authorization
/// decisions): several encoded traversals in a row after `//`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_encoded_traversal_after_empty_segment_is_refused() {
    let stack = Stack::light().await;
    assert_ambiguous(
        &stack,
        "repeated_encoded_traversal_after_empty_segment_is_refused",
        "/public//..%2f..%2fsecret",
        None,
    )
    .await;
}

/// IIS/ASP.NET and Windows servers read `\` as `/` (Envoy CVE-2021-29492 covers `%5C`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encoded_backslash_after_public_prefix_is_refused() {
    let stack = Stack::light().await;
    assert_ambiguous(
        &stack,
        "encoded_backslash_after_public_prefix_is_refused",
        "/public/..%5csecret",
        None,
    )
    .await;
}

/// RFC 9112 §3.2 (the target's grammar has no `\`); servers that accept a raw `\` split
/// segments on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_backslash_after_public_prefix_is_refused() {
    let stack = Stack::light().await;
    assert_refused(
        &stack,
        "raw_backslash_after_public_prefix_is_refused",
        "GET",
        "/public/..\\secret",
        &[],
        None,
        false,
    )
    .await;
}

// ----- path parameters on dot segments (Tomcat, Jetty) ---------------------------------

/// Orange Tsai, "Breaking Parser Logic" (Black Hat USA 2018): Tomcat strips `;...`
/// before resolving dot segments, so `/public/..;/secret` is `/secret` there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tomcat_path_parameter_on_dot_dot_segment_is_refused() {
    let stack = Stack::light().await;
    assert_ambiguous(
        &stack,
        "tomcat_path_parameter_on_dot_dot_segment_is_refused",
        "/public/..;/secret",
        None,
    )
    .await;
}

/// Orange Tsai, "Breaking Parser Logic" (Black Hat USA 2018): a parameter with a value
/// (`..;jsessionid=x`) is stripped by Tomcat the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_parameter_with_value_on_dot_dot_segment_is_refused() {
    let stack = Stack::light().await;
    assert_ambiguous(
        &stack,
        "path_parameter_with_value_on_dot_dot_segment_is_refused",
        "/public/..;jsessionid=x/secret",
        None,
    )
    .await;
}

/// Orange Tsai, "Breaking Parser Logic" (Black Hat USA 2018): `.;x` is a single-dot
/// segment to Tomcat and Jetty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_parameter_on_single_dot_segment_is_refused() {
    let stack = Stack::light().await;
    assert_ambiguous(
        &stack,
        "path_parameter_on_single_dot_segment_is_refused",
        "/public/.;x/../../secret",
        None,
    )
    .await;
}

// ----- double encoding ---------------------------------------------------------------

/// CVE-2007-1860 (mod_jk double decoding reached Tomcat's manager): `%252e%252e` is
/// `%2e%2e` after one decode and `..` after two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn double_encoded_dots_are_refused() {
    let stack = Stack::light().await;
    assert_ambiguous(
        &stack,
        "double_encoded_dots_are_refused",
        "/public/%252e%252e/secret",
        None,
    )
    .await;
}

/// CVE-2007-1860 class: double-encoded slash (`%252f`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn double_encoded_slash_is_refused() {
    let stack = Stack::light().await;
    assert_ambiguous(
        &stack,
        "double_encoded_slash_is_refused",
        "/public/..%252fsecret",
        None,
    )
    .await;
}

/// CVE-2007-1860 class: double-encoded backslash (`%255c`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn double_encoded_backslash_is_refused() {
    let stack = Stack::light().await;
    assert_ambiguous(
        &stack,
        "double_encoded_backslash_is_refused",
        "/public/..%255csecret",
        None,
    )
    .await;
}

/// CVE-2001-0333 (IIS decoded twice): upper-case `%25` before `2E` must be caught too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uppercase_double_encoded_dots_are_refused() {
    let stack = Stack::light().await;
    assert_ambiguous(
        &stack,
        "uppercase_double_encoded_dots_are_refused",
        "/public/%252E%252E/secret",
        None,
    )
    .await;
}

/// RFC 3986 §2.1: a `%` not followed by two hex digits is not a valid escape; a server
/// that decodes `%%32%65` in two passes gets `.`. Refused, or forwarded neutralized (the
/// `%` re-encoded) so that nginx still serves it as public content.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stray_percent_before_encoded_dots_never_reaches_protected_content() {
    let stack = Stack::light().await;
    let case = "stray_percent_before_encoded_dots_never_reaches_protected_content";
    let reply = stack.get("/public/%%32%65%%32%65/secret").await;
    assert!(!reply.is_protected(), "{case}: BYPASS\n{reply}");
    assert!(
        reply.status == 400 || (reply.status == 200 && reply.body.starts_with(PUBLIC)),
        "{case}: refused or served as public content, got\n{reply}"
    );
}

// ----- UTF-8 tricks ------------------------------------------------------------------

/// CVE-2008-2938 (Tomcat UTF-8 traversal): overlong UTF-8 `%c0%ae` is `.` to decoders
/// that accept overlong forms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlong_utf8_dots_are_refused() {
    let stack = Stack::light().await;
    assert_ambiguous(
        &stack,
        "overlong_utf8_dots_are_refused",
        "/public/%c0%ae%c0%ae/secret",
        None,
    )
    .await;
}

/// CVE-2000-0884 (IIS "Unicode" traversal): overlong `%c0%af` is `/`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlong_utf8_slash_is_refused() {
    let stack = Stack::light().await;
    assert_ambiguous(
        &stack,
        "overlong_utf8_slash_is_refused",
        "/public/..%c0%afsecret",
        None,
    )
    .await;
}

/// RFC 3629 §3 (invalid octets MUST NOT be decoded as characters): `%ff` is no UTF-8.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_in_path_is_refused() {
    let stack = Stack::light().await;
    assert_ambiguous(
        &stack,
        "invalid_utf8_in_path_is_refused",
        "/public/%ff%fe/secret",
        None,
    )
    .await;
}

/// Unicode TR #36 §3.1 (NFKC maps U+FF0E FULLWIDTH FULL STOP to `.`): servers that
/// normalize (Python/Java frameworks, IIS best-fit) see `..`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fullwidth_dots_are_refused() {
    let stack = Stack::light().await;
    assert_ambiguous(
        &stack,
        "fullwidth_dots_are_refused",
        "/public/%ef%bc%8e%ef%bc%8e/secret",
        None,
    )
    .await;
}

/// Unicode TR #36 §3.1: U+FF0F FULLWIDTH SOLIDUS is `/` under NFKC.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fullwidth_solidus_is_refused() {
    let stack = Stack::light().await;
    assert_ambiguous(
        &stack,
        "fullwidth_solidus_is_refused",
        "/public/..%ef%bc%8fsecret",
        None,
    )
    .await;
}

/// Unicode TR #36 §3.1: U+FF3C FULLWIDTH REVERSE SOLIDUS is `\` under NFKC.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fullwidth_reverse_solidus_is_refused() {
    let stack = Stack::light().await;
    assert_ambiguous(
        &stack,
        "fullwidth_reverse_solidus_is_refused",
        "/public/..%ef%bc%bcsecret",
        None,
    )
    .await;
}

/// Unicode TR #36 §3.1: U+2025 TWO DOT LEADER is `..` under NFKC, a whole dot segment
/// in one code point.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_dot_leader_is_refused() {
    let stack = Stack::light().await;
    assert_ambiguous(
        &stack,
        "two_dot_leader_is_refused",
        "/public/%e2%80%a5/secret",
        None,
    )
    .await;
}

/// Unicode TR #36 §3.1: U+2024 ONE DOT LEADER twice is `..` under NFKC.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_dot_leaders_are_refused() {
    let stack = Stack::light().await;
    assert_ambiguous(
        &stack,
        "one_dot_leaders_are_refused",
        "/public/%e2%80%a4%e2%80%a4/secret",
        None,
    )
    .await;
}

// ----- control characters ------------------------------------------------------------

/// Envoy CVE-2019-9900 (NUL accepted, matchers bypassed); C upstreams truncate at NUL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encoded_nul_is_refused() {
    let stack = Stack::light().await;
    assert_ambiguous(
        &stack,
        "encoded_nul_is_refused",
        "/public/%00/../../secret",
        None,
    )
    .await;
}

/// RFC 9112 §3 / CWE-113: an encoded CR LF decoded by an upstream splits its request
/// line (and could add `X-Forwarded-User`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encoded_crlf_is_refused() {
    let stack = Stack::light().await;
    assert_ambiguous(
        &stack,
        "encoded_crlf_is_refused",
        "/public/a%0d%0aX-Forwarded-User:%20admin",
        None,
    )
    .await;
}

/// RFC 3986 §2 (controls are never data in a path): an encoded TAB is refused; browsers
/// strip raw tabs from URLs, so servers disagree on them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encoded_tab_is_refused() {
    let stack = Stack::light().await;
    assert_ambiguous(
        &stack,
        "encoded_tab_is_refused",
        "/public/%09/../secret",
        None,
    )
    .await;
}

/// RFC 5234 (DEL is a control, not VCHAR): encoded DEL is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encoded_delete_character_is_refused() {
    let stack = Stack::light().await;
    assert_ambiguous(
        &stack,
        "encoded_delete_character_is_refused",
        "/public/x%7f",
        None,
    )
    .await;
}

/// RFC 9112 §3 (request-target is visible ASCII): a raw TAB inside the target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_tab_in_target_is_refused() {
    let stack = Stack::light().await;
    assert_refused(
        &stack,
        "raw_tab_in_target_is_refused",
        "GET",
        "/public/a\tb/../../secret",
        &[],
        None,
        false,
    )
    .await;
}

/// Envoy CVE-2021-32779 and oauth2-proxy CVE-2026-41059 (GHSA-pxq7-h93f-9jrg): a `#`
/// fragment inside the request target was matched as path by one side only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fragment_in_request_target_never_reaches_protected_content() {
    let stack = Stack::light().await;
    let case = "fragment_in_request_target_never_reaches_protected_content";
    let reply = stack.get("/public/x#/../../secret").await;
    assert!(!reply.is_protected(), "{case}: BYPASS\n{reply}");
    if reply.status != 400 {
        // Accepted only if the fragment is dropped: routed and forwarded as `/public/x`.
        assert_eq!(
            reply.body,
            format!("{PUBLIC} /public/x\n"),
            "{case}\n{reply}"
        );
        let hits = stack.wait_nginx_hits(1).await;
        assert_eq!(
            hits.last().map(|h| h.0.as_str()),
            Some("/public/x"),
            "{case}: the fragment must not reach the upstream: {hits:?}"
        );
    }
}

// ----- unambiguous targets are resolved before routing --------------------------------

/// Envoy CVE-2019-9901 (paths not normalized before route matching): plain `..` after
/// the public prefix is `/secret`, which needs a login.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_dot_segments_are_resolved_before_routing() {
    let stack = Stack::light().await;
    assert_login_required(
        &stack,
        "plain_dot_segments_are_resolved_before_routing",
        "/public/../secret",
    )
    .await;
}

/// RFC 3986 §6.2.2.2 (`%2e` is `.`): encoded dot segments resolve the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encoded_dot_segments_are_resolved_before_routing() {
    let stack = Stack::light().await;
    assert_login_required(
        &stack,
        "encoded_dot_segments_are_resolved_before_routing",
        "/public/%2e%2e/secret",
    )
    .await;
}

/// RFC 3986 §6.2.2.2: half-encoded `.%2E` is `..` too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_encoded_dot_segment_is_resolved_before_routing() {
    let stack = Stack::light().await;
    assert_login_required(
        &stack,
        "half_encoded_dot_segment_is_resolved_before_routing",
        "/public/.%2E/secret",
    )
    .await;
}

/// RFC 3986 §5.2.4: `..` above the root clamps at `/`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dot_segments_above_root_clamp_before_routing() {
    let stack = Stack::light().await;
    assert_login_required(
        &stack,
        "dot_segments_above_root_clamp_before_routing",
        "/../../public/../secret",
    )
    .await;
}

/// Pomerium CVE-2023-33189 class: `//` merged before matching (`//public/../secret`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_segments_are_merged_before_routing() {
    let stack = Stack::light().await;
    assert_login_required(
        &stack,
        "empty_segments_are_merged_before_routing",
        "//public/..//secret",
    )
    .await;
}

/// README "Who may pass" (matching is case-sensitive): `/PUBLIC` is not the public route.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_variant_of_public_prefix_is_not_public() {
    let stack = Stack::light().await;
    assert_login_required(
        &stack,
        "case_variant_of_public_prefix_is_not_public",
        "/PUBLIC/x",
    )
    .await;
}

/// oauth2-proxy CVE-2025-54576 (GHSA-7rh7-c77v-6434: the query took part in matching):
/// encoded slashes and traversals in the query are data, not path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encoded_traversal_in_query_is_not_path() {
    let stack = Stack::light().await;
    let reply = assert_nginx_served(
        &stack,
        "encoded_traversal_in_query_is_not_path",
        "/public/x?next=%2F..%2Fsecret",
        None,
        PUBLIC,
        "/public/x",
    )
    .await;
    assert!(!reply.is_protected());
    assert_eq!(
        stack.wait_nginx_hits(1).await.last().map(|h| h.0.as_str()),
        Some("/public/x?next=%2F..%2Fsecret"),
        "encoded_traversal_in_query_is_not_path: the query reaches nginx unchanged"
    );
}

/// RFC 3986 §6.2.2 + README "What happens to a request" (the upstream receives the
/// normalized path): the echo upstream sees the resolved path, not the one sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_receives_the_resolved_path() {
    let stack = Stack::light().await;
    let case = "upstream_receives_the_resolved_path";
    let reply = stack.get("/echo-public/a/./b/../c//d").await;
    assert_eq!(
        echoed(case, &reply).path,
        "/echo-public/a/c/d",
        "{case}\n{reply}"
    );
}

// ----- legitimate paths keep working -------------------------------------------------

/// RFC 3986 §2.1 (percent-encoding of data): a space in a public path is not ambiguous;
/// nginx decodes it, and the upstream receives exactly `%20`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encoded_space_in_public_path_still_works() {
    let stack = Stack::light().await;
    let case = "encoded_space_in_public_path_still_works";
    assert_nginx_served(&stack, case, "/public/a%20b", None, PUBLIC, "/public/a b").await;
    let reply = stack.get("/echo-public/a%20b").await;
    assert_eq!(
        echoed(case, &reply).path,
        "/echo-public/a%20b",
        "{case}\n{reply}"
    );
}

/// RFC 3987 §3.1 (IRIs map to UTF-8 percent-encodings): valid UTF-8 is data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn utf8_in_public_path_still_works() {
    let stack = Stack::light().await;
    let case = "utf8_in_public_path_still_works";
    assert_nginx_served(
        &stack,
        case,
        "/public/caf%C3%A9",
        None,
        PUBLIC,
        "/public/café",
    )
    .await;
    let reply = stack.get("/echo-public/caf%C3%A9").await;
    assert_eq!(
        echoed(case, &reply).path,
        "/echo-public/caf%C3%A9",
        "{case}\n{reply}"
    );
}

/// RFC 3986 §2.4 (`%2F` is data in a segment): on an `allow_encoded_slashes` route the
/// upstream receives exactly the path the route matched, `%2F` and all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encoded_slash_on_opt_in_route_reaches_upstream_unchanged() {
    let stack = Stack::builder().node_idp().api_route().start().await;
    let case = "encoded_slash_on_opt_in_route_reaches_upstream_unchanged";
    let session = stack.login("eve").await;
    let reply = stack.get_as(&session, "/api/a%2Fb").await;
    let echo = echoed(case, &reply);
    assert_eq!(
        echo.path, "/api/a%2Fb",
        "{case}: the upstream must get the path as matched"
    );
    assert_eq!(echo.header("x-forwarded-user"), Some("eve"), "{case}");
    // Without a session the route still needs a login.
    assert_login_required(&stack, case, "/api/a%2Fb").await;
}

/// Envoy CVE-2021-29492: even where `%2F` is allowed, `..%2F` decodes to a dot segment
/// and is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encoded_traversal_on_opt_in_route_is_refused() {
    let stack = Stack::builder().api_route().start().await;
    assert_ambiguous(
        &stack,
        "encoded_traversal_on_opt_in_route_is_refused",
        "/api/..%2Fsecret",
        None,
    )
    .await;
}

/// Envoy CVE-2021-29492 on an opt-in route: `%2F..%2F` around a dot segment inside one
/// segment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encoded_slashes_around_dot_segment_on_opt_in_route_are_refused() {
    let stack = Stack::builder().api_route().start().await;
    assert_ambiguous(
        &stack,
        "encoded_slashes_around_dot_segment_on_opt_in_route_are_refused",
        "/api/a%2F..%2Fb",
        None,
    )
    .await;
}

/// Envoy CVE-2021-29492 on an opt-in route: `.%2F` is a single-dot segment once decoded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encoded_single_dot_segment_on_opt_in_route_is_refused() {
    let stack = Stack::builder().api_route().start().await;
    assert_ambiguous(
        &stack,
        "encoded_single_dot_segment_on_opt_in_route_is_refused",
        "/api/.%2Fb",
        None,
    )
    .await;
}

/// Envoy CVE-2021-29492 (the escaped-slash action is per listener there; per route here):
/// another route allowing `%2F` does not open the public one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opt_in_on_one_route_does_not_open_another() {
    let stack = Stack::builder().api_route().start().await;
    assert_ambiguous(
        &stack,
        "opt_in_on_one_route_does_not_open_another",
        "/public/..%2fsecret",
        None,
    )
    .await;
}

// ----- with a session, and policies ----------------------------------------------------

/// A session never makes an ambiguous target acceptable (Pomerium CVE-2023-33189: wrong
/// decisions for signed-in users too), while the session keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_targets_are_refused_with_a_session_too() {
    let stack = Stack::full().await;
    let session = stack.login("eve").await;
    for (case, target) in [
        ("session: encoded slash", "/public/..%2fsecret"),
        ("session: path parameter", "/public/..;/secret"),
        ("session: overlong UTF-8", "/public/%c0%ae%c0%ae/secret"),
    ] {
        assert_ambiguous(&stack, case, target, Some(&session)).await;
    }
    assert!(
        stack.session_works(&session).await,
        "the session still works"
    );
    assert_nginx_served(
        &stack,
        "signed-in control",
        "/secret",
        Some(&session),
        PROTECTED,
        "/secret",
    )
    .await;
}

/// Envoy CVE-2021-29492 against a policy: eve (not corp.test) is admitted to `/`; an
/// encoded traversal into `/corp` must not reach nginx's corp content.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encoded_traversal_into_policy_prefix_is_refused_for_a_denied_user() {
    let stack = Stack::full().await;
    let eve = stack.login("eve").await;
    let reply = assert_ambiguous(
        &stack,
        "encoded_traversal_into_policy_prefix_is_refused_for_a_denied_user",
        "/x/..%2fcorp/y",
        Some(&eve),
    )
    .await;
    assert!(!reply.body.contains("corp"), "{reply}");
}

/// Envoy CVE-2021-29492: `/corp%2fy` is one segment to the gateway (the `/` route, which
/// admits eve) and `/corp/y` to nginx.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encoded_slash_inside_policy_prefix_is_refused() {
    let stack = Stack::full().await;
    let eve = stack.login("eve").await;
    assert_ambiguous(
        &stack,
        "encoded_slash_inside_policy_prefix_is_refused",
        "/corp%2fy",
        Some(&eve),
    )
    .await;
}

/// Envoy CVE-2019-9901: resolved dot segments land on `/corp`, whose policy denies eve:
/// 403, no corp content, a `policy_deny` audit line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dot_segments_into_policy_prefix_are_resolved_then_denied() {
    let stack = Stack::full().await;
    let eve = stack.login("eve").await;
    let case = "dot_segments_into_policy_prefix_are_resolved_then_denied";
    let denials = stack.events("policy_deny");
    for target in ["/x/../corp/y", "/%63orp/y", "//corp/./y", "/corp;x/y"] {
        let reply = stack.get_as(&eve, target).await;
        assert_eq!(
            reply.status, 403,
            "{case}: {target} is /corp for the policy\n{reply}"
        );
        assert!(!reply.is_protected(), "{case}: {target}: BYPASS\n{reply}");
    }
    stack.wait_event(case, "policy_deny", denials + 3).await;
}

/// README "Who may pass" (`allow_domains`), control for the policy cases: boss
/// (corp.test) reaches the corp content, so the denials
/// above are the policy, not a broken route.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admitted_user_reaches_policy_content() {
    let stack = Stack::full().await;
    let boss = stack.login("boss").await;
    assert_nginx_served(
        &stack,
        "admitted_user_reaches_policy_content",
        "/corp/y",
        Some(&boss),
        "PROTECTED-CONTENT corp",
        "/corp/y",
    )
    .await;
}

// ----- skip_auth_paths ---------------------------------------------------------------

/// oauth2-proxy CVE-2025-54576: the exemption regex is matched on the path only, so a
/// query naming the exempt path opens nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_naming_the_exempt_path_opens_nothing() {
    let stack = Stack::light().await;
    assert_nginx_served(
        &stack,
        "exempt control",
        "/app/health",
        None,
        APP_HEALTH,
        "/app/health",
    )
    .await;
    assert_login_required(
        &stack,
        "query_naming_the_exempt_path_opens_nothing",
        "/app/secret?x=/app/health",
    )
    .await;
}

/// Envoy CVE-2021-29492 against an exemption: `/app/health%2f..%2fsecret` is
/// `/app/secret` to nginx.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encoded_traversal_out_of_exempt_path_is_refused() {
    let stack = Stack::light().await;
    assert_ambiguous(
        &stack,
        "encoded_traversal_out_of_exempt_path_is_refused",
        "/app/health%2f..%2fsecret",
        None,
    )
    .await;
}

/// oauth2-proxy CVE-2026-41059 (patterns widened by suffixes): a `;` parameter or a
/// trailing dot segment on the exempt path must not keep the exemption while nginx
/// serves another location.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suffixes_on_the_exempt_path_do_not_keep_the_exemption() {
    let stack = Stack::light().await;
    let case = "suffixes_on_the_exempt_path_do_not_keep_the_exemption";
    for target in [
        "/app/health;x",
        "/app/health/.",
        "/app/health/",
        "/app/health%3f",
    ] {
        let reply = stack.get(target).await;
        assert!(
            !reply.is_protected(),
            "{case}: BYPASS via {target}\n{reply}"
        );
        assert!(
            matches!(reply.status, 302 | 400) || reply.body.starts_with(APP_HEALTH),
            "{case}: {target} must need a login, be refused, or be the health check itself\n{reply}"
        );
    }
}

/// oauth2-proxy `skip_auth_routes` `METHOD=` semantics: an exemption bound to GET does
/// not open POST on the same path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exemption_bound_to_get_does_not_open_post() {
    let stack = Stack::light().await;
    let case = "exemption_bound_to_get_does_not_open_post";
    let traffic = stack.upstream_traffic();
    let reply = stack
        .request("POST", "/app/health", &[("content-length", "0")])
        .await;
    assert_eq!(reply.status, 401, "{case}\n{reply}");
    assert_eq!(stack.upstream_traffic(), traffic, "{case}: reached nginx");
}

/// mod_auth_openidc CVE-2025-31492 (content leaked to unauthenticated POSTs): a POST
/// without a session to protected content gets 401, never the upstream's answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_without_session_never_reaches_protected_content() {
    let stack = Stack::light().await;
    let case = "post_without_session_never_reaches_protected_content";
    let traffic = stack.upstream_traffic();
    let reply = stack
        .request(
            "POST",
            "/secret",
            &[
                ("accept", HTML),
                ("content-type", "application/x-www-form-urlencoded"),
            ],
        )
        .await;
    assert!(!reply.is_protected(), "{case}: BYPASS\n{reply}");
    assert_eq!(
        reply.status, 401,
        "{case}: a POST never starts a login redirect\n{reply}"
    );
    assert_eq!(stack.upstream_traffic(), traffic, "{case}: reached nginx");
}
