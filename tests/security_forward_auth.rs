//! Standing adversarial suite, part 6: forward-auth (`GET /oauth2/auth`) and trusted
//! proxies.
//!
//! The description headers (`X-Original-URL`, `X-Original-Method`,
//! `X-Forwarded-Uri/Host/Method/Proto`) say which request the proxy in front is asking
//! about; they are honoured only from peers in `server.trusted_proxies` (default
//! loopback). From anyone else `/oauth2/auth` decides on the session and the `[policy]`
//! defaults alone, with no path or method exemption (oauth2-proxy CVE-2026-40575 /
//! CVE-2026-76835 class). All test traffic comes from 127.0.0.1, so "untrusted" stacks
//! set `trusted_proxies = ["10.0.0.0/8"]`. With `trust_forwarded_headers`, `X-Forwarded-*`
//! and `Forwarded` on proxied requests follow the same list.

mod common;

use std::net::SocketAddr;

use common::nginx::Nginx;
use common::security::*;
use common::{free_addr, Echoed};

const UNTRUSTED: &str = "trusted_proxies = [\"10.0.0.0/8\"]";

async fn ask(stack: &Stack, headers: &[(&str, &str)]) -> Reply {
    stack.request("GET", "/oauth2/auth", headers).await
}

fn assert_status_without_identity(case: &str, reply: &Reply, status: u16) {
    assert_eq!(reply.status, status, "{case}\n{reply}");
    for name in [
        "x-auth-request-user",
        "x-auth-request-email",
        "x-auth-request-groups",
        "x-auth-request-access-token",
        "authorization",
    ] {
        assert!(
            reply.header(name).is_none(),
            "{case}: {name} in the answer\n{reply}"
        );
    }
}

// ----- untrusted senders -------------------------------------------------------------

/// oauth2-proxy CVE-2026-40575 (GHSA-7x63-xv5r-3p2x, oauth2-proxy#3506: a spoofed
/// `X-Forwarded-Uri` naming a public path skipped authentication): from an untrusted
/// peer the description is ignored and the answer is 401 without a session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_sender_cannot_describe_a_public_path() {
    let stack = Stack::builder().server(UNTRUSTED).start().await;
    let case = "untrusted_sender_cannot_describe_a_public_path";
    let url = format!("http://{}/public/x", stack.host());
    assert_status_without_identity(case, &ask(&stack, &[("x-original-url", &url)]).await, 401);
    assert_status_without_identity(
        case,
        &ask(
            &stack,
            &[
                ("x-forwarded-uri", "/public/x"),
                ("x-forwarded-host", &stack.host()),
            ],
        )
        .await,
        401,
    );
}

/// oauth2-proxy CVE-2026-76835 (a described method and path opened an exemption): an
/// untrusted peer naming the exempt `GET /app/health` gets no exemption.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_sender_cannot_describe_an_exempt_path_or_method() {
    let stack = Stack::builder().server(UNTRUSTED).start().await;
    let case = "untrusted_sender_cannot_describe_an_exempt_path_or_method";
    let reply = ask(
        &stack,
        &[
            ("x-forwarded-uri", "/app/health"),
            ("x-forwarded-method", "GET"),
            ("x-original-method", "GET"),
        ],
    )
    .await;
    assert_status_without_identity(case, &reply, 401);
}

/// Envoy CVE-2024-45806 (internal headers honoured from external sources):
/// `X-Forwarded-Host` from an untrusted peer does not select the `docs.test` route.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_sender_cannot_describe_a_public_host() {
    let stack = Stack::builder().server(UNTRUSTED).start().await;
    let case = "untrusted_sender_cannot_describe_a_public_host";
    let reply = ask(
        &stack,
        &[
            ("x-forwarded-host", "docs.test"),
            ("x-forwarded-uri", "/"),
            ("x-forwarded-proto", "https"),
        ],
    )
    .await;
    assert_status_without_identity(case, &reply, 401);
    let reply = ask(&stack, &[("x-original-url", "https://docs.test/")]).await;
    assert_status_without_identity(case, &reply, 401);
}

/// oauth2-proxy CVE-2026-40575 with a session: an untrusted description cannot pick a
/// route whose policy is looser than the `[policy]` defaults (eve is not corp.test).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_description_cannot_pick_a_more_permissive_route() {
    let stack = Stack::builder()
        .node_idp()
        .server(UNTRUSTED)
        .section("[policy]\nallow_domains = [\"corp.test\"]")
        .route("[[route]]\npath = \"/open\"\nupstream = \"@ECHO@\"\nallow_domains = []\n")
        .start()
        .await;
    let case = "untrusted_description_cannot_pick_a_more_permissive_route";
    let eve = stack.login_via_start("eve").await;
    let cookie = eve.cookie_header();
    let url = format!("http://{}/open/x", stack.host());
    let reply = ask(&stack, &[("cookie", &cookie), ("x-original-url", &url)]).await;
    assert_status_without_identity(case, &reply, 403);
    let boss = stack.login_via_start("boss").await;
    let cookie = boss.cookie_header();
    let reply = ask(&stack, &[("cookie", &cookie), ("x-original-url", &url)]).await;
    assert_eq!(
        reply.status, 202,
        "{case}: the policy defaults admit boss\n{reply}"
    );
    assert_eq!(
        reply.header("x-auth-request-user"),
        Some("boss"),
        "{case}\n{reply}"
    );
}

/// README "Forward-auth" (descriptions believed from `trusted_proxies`), control for the
/// case above: from a trusted proxy (the default loopback list) the
/// description selects the route, and `/open` admits eve.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_proxy_description_selects_the_route() {
    let stack = Stack::builder()
        .node_idp()
        .section("[policy]\nallow_domains = [\"corp.test\"]")
        .route("[[route]]\npath = \"/open\"\nupstream = \"@ECHO@\"\nallow_domains = []\n")
        .start()
        .await;
    let case = "trusted_proxy_description_selects_the_route";
    let eve = stack.login_via_start("eve").await;
    let cookie = eve.cookie_header();
    let url = format!("http://{}/open/x", stack.host());
    let reply = ask(&stack, &[("cookie", &cookie), ("x-original-url", &url)]).await;
    assert_eq!(reply.status, 202, "{case}\n{reply}");
    assert_eq!(
        reply.header("x-auth-request-user"),
        Some("eve"),
        "{case}\n{reply}"
    );
    let url = format!("http://{}/echo/x", stack.host());
    let reply = ask(&stack, &[("cookie", &cookie), ("x-original-url", &url)]).await;
    assert_status_without_identity(
        &format!("{case} (/echo inherits the defaults)"),
        &reply,
        403,
    );
}

// ----- without a description ---------------------------------------------------------

/// The issue (oauth2-proxy answers 202/401 from the session alone; portcullis answered
/// 400): no description at all decides on the session and the `[policy]` defaults.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_description_decides_on_the_session_alone() {
    let stack = Stack::full().await;
    let case = "no_description_decides_on_the_session_alone";
    assert_status_without_identity(case, &ask(&stack, &[]).await, 401);
    let eve = stack.login_via_start("eve").await;
    let cookie = eve.cookie_header();
    let reply = ask(&stack, &[("cookie", &cookie)]).await;
    assert_eq!(reply.status, 202, "{case}\n{reply}");
    assert_eq!(
        reply.header_all("x-auth-request-user"),
        ["eve"],
        "{case}\n{reply}"
    );
}

/// README (two descriptions that disagree are refused, never read as `/`): stays 400
/// from a trusted proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contradicting_descriptions_are_refused() {
    let stack = Stack::light().await;
    let case = "contradicting_descriptions_are_refused";
    let url = format!("http://{}/public/x", stack.host());
    let reply = ask(
        &stack,
        &[("x-original-url", &url), ("x-forwarded-uri", "/secret")],
    )
    .await;
    assert_status_without_identity(case, &reply, 400);
    let reply = ask(
        &stack,
        &[
            ("x-original-url", &url),
            ("x-forwarded-uri", "/public/x"),
            ("x-forwarded-host", "docs.test"),
        ],
    )
    .await;
    assert_status_without_identity(&format!("{case} (hosts)"), &reply, 400);
}

/// Envoy CVE-2021-32777 (ext_authz saw one of several values): a repeated description
/// header is a contradiction, not a choice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_description_header_is_refused() {
    let stack = Stack::light().await;
    let case = "repeated_description_header_is_refused";
    let public = format!("http://{}/public/x", stack.host());
    let secret = format!("http://{}/secret", stack.host());
    let reply = ask(
        &stack,
        &[("x-original-url", &public), ("x-original-url", &secret)],
    )
    .await;
    assert!(
        matches!(reply.status, 400 | 401),
        "{case}: must not be read as the public path\n{reply}"
    );
    assert_status_without_identity(case, &reply, reply.status);
}

/// Envoy CVE-2021-29492 through forward-auth: nginx sends `$request_uri` raw; an
/// ambiguous described path is never accepted as the public prefix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_described_path_is_never_accepted() {
    let stack = Stack::light().await;
    let case = "ambiguous_described_path_is_never_accepted";
    for path in [
        "/public/..%2fsecret",
        "/public/..;/secret",
        "/public/%c0%ae%c0%ae/secret",
        "/public/..%5csecret",
    ] {
        let url = format!("http://{}{path}", stack.host());
        let reply = ask(&stack, &[("x-original-url", &url)]).await;
        assert!(
            matches!(reply.status, 400 | 401),
            "{case}: {path} must not pass (got {})\n{reply}",
            reply.status
        );
        let reply = ask(
            &stack,
            &[
                ("x-forwarded-uri", path),
                ("x-forwarded-host", &stack.host()),
            ],
        )
        .await;
        assert!(
            matches!(reply.status, 400 | 401),
            "{case}: {path} via X-Forwarded-Uri\n{reply}"
        );
    }
}

/// oauth2-proxy CVE-2025-64484 on the forward-auth endpoint: client-sent `X-Auth-Request-*`
/// are never reflected in the answer; with a session the answer names the real user once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_identity_headers_are_never_reflected_by_forward_auth() {
    let stack = Stack::full().await;
    let case = "forged_identity_headers_are_never_reflected_by_forward_auth";
    let url = format!("http://{}/echo/x", stack.host());
    let forged = [
        ("x-original-url", url.as_str()),
        ("x-auth-request-user", "admin"),
        ("x_auth_request_email", "admin@corp.test"),
        ("x-forwarded-user", "admin"),
    ];
    assert_status_without_identity(case, &ask(&stack, &forged).await, 401);
    let eve = stack.login_via_start("eve").await;
    let cookie = eve.cookie_header();
    let mut with_session = forged.to_vec();
    with_session.push(("cookie", &cookie));
    let reply = ask(&stack, &with_session).await;
    assert_eq!(reply.status, 202, "{case}\n{reply}");
    assert_eq!(
        reply.header_all("x-auth-request-user"),
        ["eve"],
        "{case}\n{reply}"
    );
    assert!(
        !reply.raw.contains("admin"),
        "{case}: a forged value is reflected\n{reply}"
    );
}

// ----- trusted forwarded headers on proxied requests ---------------------------------

/// Envoy CVE-2024-45806 / RFC 7239 §8.1: with `trust_forwarded_headers`, a peer outside
/// `trusted_proxies` still gets its `X-Forwarded-*` replaced, not extended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_from_untrusted_peers_are_replaced() {
    let stack = Stack::builder()
        .server(UNTRUSTED)
        .server("trust_forwarded_headers = true")
        .start()
        .await;
    let case = "forwarded_headers_from_untrusted_peers_are_replaced";
    let reply = stack
        .request(
            "GET",
            "/echo-public/x",
            &[
                ("x-forwarded-for", "10.1.2.3"),
                ("x-forwarded-host", "evil.test"),
                ("x-forwarded-proto", "https"),
                ("forwarded", "for=10.1.2.3;host=evil.test"),
            ],
        )
        .await;
    let echo: Echoed = echoed(case, &reply);
    assert_eq!(
        echo.header_all("x-forwarded-for"),
        ["127.0.0.1"],
        "{case}: {:?}",
        echo.headers
    );
    assert_eq!(echo.header("x-forwarded-proto"), Some("http"), "{case}");
    assert_ne!(echo.header("x-forwarded-host"), Some("evil.test"), "{case}");
    assert!(
        !echo
            .header_all("forwarded")
            .iter()
            .any(|f| f.contains("evil.test") || f.contains("10.1.2.3")),
        "{case}: {:?}",
        echo.headers
    );
}

/// RFC 7239 §5.2 (a proxy appends to `Forwarded`/`X-Forwarded-For`), control: from a
/// trusted proxy (default loopback) with `trust_forwarded_headers` the
/// client's chain is kept and the peer appended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_from_trusted_proxies_are_extended() {
    let stack = Stack::builder()
        .server("trust_forwarded_headers = true")
        .start()
        .await;
    let case = "forwarded_headers_from_trusted_proxies_are_extended";
    let reply = stack
        .request("GET", "/echo-public/x", &[("x-forwarded-for", "10.1.2.3")])
        .await;
    let echo = echoed(case, &reply);
    let chain = echo.header_all("x-forwarded-for").join(", ");
    assert!(
        chain.contains("10.1.2.3") && chain.contains("127.0.0.1"),
        "{case}: {chain}"
    );
}

// ----- through real nginx auth_request -----------------------------------------------

/// nginx in front with `auth_request` (README "Forward-auth for nginx"), serving content
/// from the echo upstream; nginx picks the location on its decoded `$uri` and sends the
/// raw `$request_uri` to the gateway.
async fn nginx_in_front(stack: &Stack) -> Nginx {
    let site = format!(
        r#"
server {{
    listen @LISTEN@;
    location = /oauth2/auth {{
        internal;
        proxy_pass http://{gateway};
        proxy_set_header Host $http_host;
        proxy_set_header X-Original-URL $scheme://$http_host$request_uri;
        proxy_set_header X-Forwarded-Method $request_method;
        proxy_pass_request_body off;
        proxy_set_header Content-Length "";
    }}
    location / {{
        auth_request /oauth2/auth;
        proxy_pass http://{echo};
    }}
}}
"#,
        gateway = stack.addr(),
        echo = stack.echo.addr(),
    );
    let mut last = String::new();
    for _ in 0..3 {
        match Nginx::start(free_addr(), &site).await {
            Ok(nginx) => return nginx,
            Err(e) => last = e,
        }
    }
    panic!("nginx did not start: {last}");
}

async fn via(nginx_addr: SocketAddr, target: &str) -> Reply {
    let bytes = request_bytes(
        &nginx_addr.to_string(),
        "GET",
        target,
        &[("accept", "*/*")],
        b"",
    );
    Reply::from_exchange(
        &common::http::raw_exchange(nginx_addr, &bytes, std::time::Duration::from_millis(1500))
            .await,
    )
}

/// oauth2-proxy CVE-2026-40575 class end to end: nginx serves `/public/..%2fsecret` from
/// its protected location while asking about the raw target; the gateway must not
/// answer 202, so the protected upstream is never reached without login.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_auth_request_with_encoded_traversal_reaches_nothing() {
    let stack = Stack::light().await;
    let nginx = nginx_in_front(&stack).await;
    let case = "nginx_auth_request_with_encoded_traversal_reaches_nothing";
    let control = via(nginx.addr(), "/public/x").await;
    assert_eq!(
        control.status, 200,
        "{case}: control, the public path passes\n{control}"
    );
    let before = stack.echo.received().len();
    for target in [
        "/public/..%2fsecret",
        "/public/%2e%2e%2fsecret",
        "/public%2f..%2fsecret",
    ] {
        let reply = via(nginx.addr(), target).await;
        assert_ne!(
            reply.status, 200,
            "{case}: BYPASS: {target} served through nginx\n{reply}"
        );
    }
    assert_eq!(
        stack.echo.received().len(),
        before,
        "{case}: the protected upstream was reached"
    );
}

/// README "Forward-auth for nginx" (401 when not signed in), control with a protected
/// path through nginx: 401 without a session (nginx passes the
/// gateway's 401 on).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_auth_request_protected_path_needs_login() {
    let stack = Stack::light().await;
    let nginx = nginx_in_front(&stack).await;
    let reply = via(nginx.addr(), "/secret").await;
    assert_eq!(
        reply.status, 401,
        "nginx_auth_request_protected_path_needs_login\n{reply}"
    );
    assert!(
        stack.echo.received().is_empty(),
        "nginx_auth_request_protected_path_needs_login: upstream reached"
    );
}
