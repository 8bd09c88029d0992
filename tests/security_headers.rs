//! Standing adversarial suite, part 3: identity-header smuggling.
//!
//! Upstreams behind the gateway trust its identity headers (Grafana's auth proxy,
//! `REMOTE_USER` apps), so a client must never get its own copy through: every header
//! whose name, lowercased with `_` read as `-`, belongs to the gateway's identity
//! family, `X-Auth-Request-*`, `Remote-User`, `X-Remote-User`, `Gap-Auth`, or the
//! operator's `server.strip_request_headers` is stripped on every route (WSGI, CGI, PHP
//! and Rack map `_` and `-` to the same variable: oauth2-proxy CVE-2025-64484). With
//! `server.drop_underscore_headers` (the default, like nginx) any header with `_` goes.
//! A client can also not make the gateway drop its own headers by naming them in
//! `Connection`. The echo upstream shows what arrived.

mod common;

use common::security::*;
use common::Echoed;

/// `name` lowercased with `_` read as `-`.
fn normalized(name: &str) -> String {
    name.to_ascii_lowercase().replace('_', "-")
}

/// Received header names that normalize to `name`'s family member.
fn received_like(echo: &Echoed, name: &str) -> Vec<String> {
    let want = normalized(name);
    echo.headers
        .keys()
        .filter(|k| normalized(k) == want)
        .cloned()
        .collect()
}

/// No received header named exactly `names` (for underscore aliases of headers the
/// gateway itself sets, whose dashed form legitimately arrives).
fn assert_absent_exact(case: &str, echo: &Echoed, names: &[&str]) {
    for name in names {
        let values = echo.header_all(name);
        assert!(
            values.is_empty(),
            "{case}: SMUGGLED: the upstream received {name}: {values:?}"
        );
    }
}

fn assert_absent(case: &str, echo: &Echoed, names: &[&str]) {
    for name in names {
        let found = received_like(echo, name);
        assert!(
            found.is_empty(),
            "{case}: SMUGGLED: the upstream received {found:?} ({:?}) from the client",
            found.iter().map(|f| echo.header_all(f)).collect::<Vec<_>>()
        );
    }
}

/// Sends `headers` to the public echo route without a session; returns what arrived.
async fn public_echo(stack: &Stack, case: &str, headers: &[(&str, &str)]) -> Echoed {
    let reply = stack.request("GET", "/echo-public/probe", headers).await;
    echoed(case, &reply)
}

/// One forged header on a public route must not arrive (in any spelling).
async fn stripped_on_public_route(case: &str, name: &str) {
    let stack = Stack::light().await;
    let echo = public_echo(
        &stack,
        case,
        &[(name, "admin@corp.test"), ("x-control", "kept")],
    )
    .await;
    assert_absent(case, &echo, &[name]);
    assert_eq!(
        echo.header("x-control"),
        Some("kept"),
        "{case}: other headers still arrive"
    );
}

// ----- the gateway's own identity headers --------------------------------------------

/// README (client copies are always removed) and RFC 9700 §4.13 (a reverse proxy must
/// sanitize inbound headers the application servers rely on): on a public route.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_forwarded_user_is_stripped_on_public_route() {
    stripped_on_public_route(
        "forged_forwarded_user_is_stripped_on_public_route",
        "X-Forwarded-User",
    )
    .await;
}

/// oauth2-proxy CVE-2025-64484: `X_Forwarded_User` is `HTTP_X_FORWARDED_USER` to WSGI,
/// CGI, PHP and Rack, the same variable as `X-Forwarded-User`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn underscore_forwarded_user_is_stripped_on_public_route() {
    stripped_on_public_route(
        "underscore_forwarded_user_is_stripped_on_public_route",
        "X_Forwarded_User",
    )
    .await;
}

/// The issue: `X-Forwarded-Access-Token` (oauth2-proxy's `pass_access_token` header)
/// reached the upstream from the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_forwarded_access_token_is_stripped() {
    stripped_on_public_route(
        "forged_forwarded_access_token_is_stripped",
        "X-Forwarded-Access-Token",
    )
    .await;
}

/// The issue: `X-Forwarded-Preferred-Username` reached the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_forwarded_preferred_username_is_stripped() {
    stripped_on_public_route(
        "forged_forwarded_preferred_username_is_stripped",
        "X-Forwarded-Preferred-Username",
    )
    .await;
}

/// oauth2-proxy CVE-2025-64484: `X_Forwarded_Email` on a public route.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn underscore_forwarded_email_is_stripped() {
    stripped_on_public_route(
        "underscore_forwarded_email_is_stripped",
        "X_Forwarded_Email",
    )
    .await;
}

// ----- X-Auth-Request-* --------------------------------------------------------------

/// oauth2-proxy CVE-2025-64484: `x_auth_request_user`, all lower case with underscores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn underscore_auth_request_user_is_stripped() {
    stripped_on_public_route(
        "underscore_auth_request_user_is_stripped",
        "x_auth_request_user",
    )
    .await;
}

/// oauth2-proxy CVE-2025-64484: mixed separators, `X-Auth_Request-Groups`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_separator_auth_request_groups_is_stripped() {
    stripped_on_public_route(
        "mixed_separator_auth_request_groups_is_stripped",
        "X-Auth_Request-Groups",
    )
    .await;
}

/// The issue: `X-Auth-Request-Preferred-Username` reached the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_request_preferred_username_is_stripped() {
    stripped_on_public_route(
        "auth_request_preferred_username_is_stripped",
        "X-Auth-Request-Preferred-Username",
    )
    .await;
}

/// oauth2-proxy CVE-2025-64484 (the whole `X-Auth-Request-*` family, not a list of
/// names): a member the gateway never sets itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_auth_request_header_is_stripped() {
    stripped_on_public_route(
        "any_auth_request_header_is_stripped",
        "X-Auth-Request-Tenant-Role",
    )
    .await;
}

// ----- other identity conventions ----------------------------------------------------

/// RFC 3875 §4.1.11 (`REMOTE_USER`) and mod_auth_openidc CVE-2017-6413 (claim headers
/// not stripped, authentication bypassed): `Remote-User`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_remote_user_is_stripped() {
    stripped_on_public_route("forged_remote_user_is_stripped", "Remote-User").await;
}

/// mod_auth_openidc CVE-2017-6413 class: `X-Remote-User`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_x_remote_user_is_stripped() {
    stripped_on_public_route("forged_x_remote_user_is_stripped", "X-Remote-User").await;
}

/// oauth2-proxy's `GAP-Auth` identity header (set for upstreams with
/// `--set-basic-auth`/`--pass-user-headers`): a client copy is forged identity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_gap_auth_is_stripped() {
    stripped_on_public_route("forged_gap_auth_is_stripped", "Gap-Auth").await;
}

/// RFC 3875 §4.1.18 (CGI maps `-` to `_`): `REMOTE_USER` as a header name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn underscore_remote_user_is_stripped() {
    stripped_on_public_route("underscore_remote_user_is_stripped", "REMOTE_USER").await;
}

/// Traefik GHSA-x677-9fxg-v5c5 and its dot-alias sibling (PHP maps `.` to `_` as well):
/// `X.Forwarded.User` must not reach the upstream either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dot_alias_of_identity_header_is_stripped() {
    let stack = Stack::light().await;
    let case = "dot_alias_of_identity_header_is_stripped";
    let echo = public_echo(&stack, case, &[("X.Forwarded.User", "admin")]).await;
    let found: Vec<&String> = echo
        .headers
        .keys()
        .filter(|k| k.replace(['.', '_'], "-") == "x-forwarded-user")
        .collect();
    assert!(found.is_empty(), "{case}: SMUGGLED {found:?}");
}

/// Envoy CVE-2020-25017 (only the first of several values was looked at): every copy of
/// a repeated identity header goes, in every spelling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_identity_headers_are_all_stripped() {
    let stack = Stack::light().await;
    let case = "repeated_identity_headers_are_all_stripped";
    let echo = public_echo(
        &stack,
        case,
        &[
            ("X-Forwarded-Email", "a@corp.test"),
            ("x-forwarded-email", "b@corp.test"),
            ("X_FORWARDED_EMAIL", "c@corp.test"),
            ("X-Auth-Request-Email", "d@corp.test"),
            ("x-auth-request-email", "e@corp.test"),
        ],
    )
    .await;
    assert_absent(case, &echo, &["x-forwarded-email", "x-auth-request-email"]);
}

/// README route 0 (`docs.test`, public, echo): the stripping holds on a host-routed
/// public route too, not only on path prefixes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_headers_are_stripped_on_host_routed_public_route() {
    let stack = Stack::light().await;
    let case = "identity_headers_are_stripped_on_host_routed_public_route";
    let reply = stack
        .request(
            "GET",
            "/x",
            &[
                ("host", "docs.test"),
                ("x_forwarded_user", "admin"),
                ("X-Auth-Request-User", "admin"),
            ],
        )
        .await;
    let echo = echoed(case, &reply);
    assert_absent(case, &echo, &["x-forwarded-user", "x-auth-request-user"]);
}

/// mod_auth_openidc CVE-2017-6413: forged identity headers never sign anyone in — a
/// protected route still needs a login and the upstream sees nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_identity_headers_do_not_sign_anyone_in() {
    let stack = Stack::light().await;
    let case = "forged_identity_headers_do_not_sign_anyone_in";
    let traffic = stack.upstream_traffic();
    let reply = stack
        .request(
            "GET",
            "/echo/admin",
            &[
                ("accept", "application/json"),
                ("x-forwarded-user", "admin"),
                ("x_auth_request_user", "admin"),
                ("remote-user", "admin"),
                ("authorization", "Basic YWRtaW46YWRtaW4="),
            ],
        )
        .await;
    assert_eq!(reply.status, 401, "{case}\n{reply}");
    assert_eq!(
        stack.upstream_traffic(),
        traffic,
        "{case}: reached the upstream"
    );
}

// ----- with a session ----------------------------------------------------------------

/// RFC 9700 §4.13: on a protected route the upstream gets exactly the gateway's identity
/// (one value each), whatever the client sent in whatever spelling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_identity_on_protected_route_is_replaced_by_the_real_one() {
    let stack = Stack::full().await;
    let case = "forged_identity_on_protected_route_is_replaced_by_the_real_one";
    let eve = stack.login("eve").await;
    let cookie = eve.cookie_header();
    let reply = stack
        .request(
            "GET",
            "/echo/me",
            &[
                ("cookie", &cookie),
                ("X-Forwarded-User", "admin"),
                ("X_Forwarded_User", "admin"),
                ("X-Forwarded-Email", "admin@corp.test"),
                ("x_forwarded_email", "admin@corp.test"),
                ("X-Forwarded-Preferred-Username", "admin"),
                ("X-Auth-Request-User", "admin"),
            ],
        )
        .await;
    let echo = echoed(case, &reply);
    assert_eq!(echo.header_all("x-forwarded-user"), ["eve"], "{case}");
    assert_eq!(
        echo.header_all("x-forwarded-email"),
        ["eve@example.com"],
        "{case}"
    );
    assert_absent_exact(case, &echo, &["x_forwarded_user", "x_forwarded_email"]);
    assert_absent(
        case,
        &echo,
        &["x-auth-request-user", "x-forwarded-preferred-username"],
    );
    for value in echo.headers.values().flatten() {
        assert!(
            !value.contains("admin"),
            "{case}: a forged value arrived: {:?}",
            echo.headers
        );
    }
}

/// RFC 9700 §4.13: a user without groups must not be able to supply some — the gateway
/// sets no `X-Forwarded-Groups` for eve, so the client's copy must be removed, not kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_groups_are_removed_for_a_user_without_groups() {
    let stack = Stack::full().await;
    let case = "forged_groups_are_removed_for_a_user_without_groups";
    let eve = stack.login("eve").await;
    let cookie = eve.cookie_header();
    let reply = stack
        .request(
            "GET",
            "/echo/me",
            &[
                ("cookie", &cookie),
                ("X-Forwarded-Groups", "admins"),
                ("X_Forwarded_Groups", "admins"),
                ("X-Auth-Request-Groups", "admins"),
            ],
        )
        .await;
    let echo = echoed(case, &reply);
    assert_eq!(echo.header("x-forwarded-user"), Some("eve"), "{case}");
    assert_absent(
        case,
        &echo,
        &["x-forwarded-groups", "x-auth-request-groups"],
    );
}

/// RFC 6750 §2.1 + README (client `Authorization` removed where the gateway sets it): the
/// upstream gets the session's access token, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_authorization_is_replaced_on_protected_route() {
    let stack = Stack::full().await;
    let case = "client_authorization_is_replaced_on_protected_route";
    let eve = stack.login("eve").await;
    let cookie = eve.cookie_header();
    let reply = stack
        .request(
            "GET",
            "/echo/me",
            &[
                ("cookie", &cookie),
                ("authorization", "Bearer forged"),
                ("Authorization", "Basic YWRtaW46YWRtaW4="),
            ],
        )
        .await;
    let echo = echoed(case, &reply);
    assert_eq!(
        echo.header_all("authorization"),
        [format!("Bearer {}", eve.access_token)],
        "{case}"
    );
}

/// RFC 9110 §7.6.1 and the hop-by-hop abuse class (a `Connection` header naming a
/// header the proxy adds makes a naive proxy delete its own value): the gateway's
/// `Authorization` and identity still arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_nominated_identity_headers_keep_the_gateways_values() {
    let stack = Stack::full().await;
    let case = "connection_nominated_identity_headers_keep_the_gateways_values";
    let eve = stack.login("eve").await;
    let cookie = eve.cookie_header();
    let reply = stack
        .request(
            "GET",
            "/echo/me",
            &[
                ("cookie", &cookie),
                (
                    "connection",
                    "close, X-Forwarded-User, Authorization, X-Forwarded-Email",
                ),
                ("x-forwarded-user", "admin"),
            ],
        )
        .await;
    let echo = echoed(case, &reply);
    assert_eq!(echo.header_all("x-forwarded-user"), ["eve"], "{case}");
    assert_eq!(
        echo.header_all("x-forwarded-email"),
        ["eve@example.com"],
        "{case}"
    );
    assert_eq!(
        echo.header_all("authorization"),
        [format!("Bearer {}", eve.access_token)],
        "{case}"
    );
}

/// oauth2-proxy CVE-2025-64484 on a protected route: underscore aliases next to the
/// real values must not arrive as a second identity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn underscore_aliases_on_protected_route_are_stripped() {
    let stack = Stack::full().await;
    let case = "underscore_aliases_on_protected_route_are_stripped";
    let eve = stack.login("eve").await;
    let cookie = eve.cookie_header();
    let reply = stack
        .request(
            "GET",
            "/echo/me",
            &[
                ("cookie", &cookie),
                ("x_auth_request_email", "admin@corp.test"),
                ("X-Auth_Request-User", "admin"),
                ("remote_user", "admin"),
            ],
        )
        .await;
    let echo = echoed(case, &reply);
    assert_absent(
        case,
        &echo,
        &["x-auth-request-email", "x-auth-request-user", "remote-user"],
    );
    assert_eq!(echo.header("x-forwarded-user"), Some("eve"), "{case}");
}

// ----- Connection-nominated and hop-by-hop -------------------------------------------

/// RFC 9110 §7.6.1: naming a forged identity header in `Connection` on a public route
/// does not smuggle it either way (it is stripped as hop-by-hop and as identity).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_nominated_forged_header_on_public_route_is_stripped() {
    let stack = Stack::light().await;
    let case = "connection_nominated_forged_header_on_public_route_is_stripped";
    let echo = public_echo(
        &stack,
        case,
        &[
            ("connection", "close, x-forwarded-user"),
            ("x-forwarded-user", "admin"),
            ("x_forwarded_user", "admin"),
        ],
    )
    .await;
    assert_absent(case, &echo, &["x-forwarded-user"]);
}

/// RFC 9110 §7.6.1 and hop-by-hop abuse (a client lists `X-Forwarded-For` in `Connection` so the backend
/// sees no client address and treats the request as internal): the gateway still sends
/// the peer address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_nominating_forwarded_for_keeps_the_client_address() {
    let stack = Stack::light().await;
    let case = "connection_nominating_forwarded_for_keeps_the_client_address";
    let echo = public_echo(
        &stack,
        case,
        &[
            ("connection", "close, X-Forwarded-For, Forwarded"),
            ("x-forwarded-for", "10.0.0.1"),
        ],
    )
    .await;
    assert_eq!(
        echo.header_all("x-forwarded-for"),
        ["127.0.0.1"],
        "{case}: {:?}",
        echo.headers
    );
    assert!(
        echo.header("forwarded")
            .is_some_and(|f| f.contains("for=127.0.0.1")),
        "{case}: Forwarded names the peer: {:?}",
        echo.headers
    );
}

/// README (`trust_forwarded_headers = false`): a client's `X-Forwarded-For` is replaced,
/// never passed on as the client address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_forwarded_for_is_replaced() {
    let stack = Stack::light().await;
    let case = "spoofed_forwarded_for_is_replaced";
    let echo = public_echo(
        &stack,
        case,
        &[
            ("x-forwarded-for", "10.0.0.1"),
            ("x_forwarded_for", "10.0.0.2"),
        ],
    )
    .await;
    assert_eq!(echo.header_all("x-forwarded-for"), ["127.0.0.1"], "{case}");
    assert_absent_exact(case, &echo, &["x_forwarded_for"]);
}

// ----- operator additions and underscores --------------------------------------------

/// The issue (`server.strip_request_headers`): an operator's own trusted header is
/// stripped in every spelling; a merely similar name is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_strip_list_is_applied_in_every_spelling() {
    let stack = Stack::builder()
        .server("strip_request_headers = [\"X-Tenant-Admin\"]")
        .start()
        .await;
    let case = "operator_strip_list_is_applied_in_every_spelling";
    let echo = public_echo(
        &stack,
        case,
        &[
            ("X-Tenant-Admin", "1"),
            ("x-tenant-admin", "2"),
            ("X_Tenant_Admin", "3"),
            ("X-Tenant", "kept"),
        ],
    )
    .await;
    assert_absent(case, &echo, &["x-tenant-admin"]);
    assert_eq!(echo.header("x-tenant"), Some("kept"), "{case}");
}

/// nginx `underscores_in_headers off` (the default) and oauth2-proxy CVE-2025-64484:
/// `server.drop_underscore_headers` defaults to true and drops any `_` header, while
/// dashed names pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn underscore_headers_are_dropped_by_default() {
    let stack = Stack::light().await;
    let case = "underscore_headers_are_dropped_by_default";
    let echo = public_echo(
        &stack,
        case,
        &[("X_Custom_Role", "admin"), ("X-Custom-Role", "user")],
    )
    .await;
    assert!(
        echo.header("x_custom_role").is_none(),
        "{case}: {:?}",
        echo.headers
    );
    assert_eq!(echo.header("x-custom-role"), Some("user"), "{case}");
}

/// The issue: with `drop_underscore_headers = false` other underscore headers pass, but
/// the identity families are still matched with `_` read as `-`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_aliases_are_stripped_even_when_underscores_are_allowed() {
    let stack = Stack::builder()
        .server("drop_underscore_headers = false")
        .start()
        .await;
    let case = "identity_aliases_are_stripped_even_when_underscores_are_allowed";
    let echo = public_echo(
        &stack,
        case,
        &[
            ("x_custom_role", "kept"),
            ("x_forwarded_user", "admin"),
            ("X_Auth_Request_Email", "a@b.c"),
        ],
    )
    .await;
    assert_eq!(
        echo.header("x_custom_role"),
        Some("kept"),
        "{case}: allowed underscore header"
    );
    assert_absent(case, &echo, &["x-forwarded-user", "x-auth-request-email"]);
}

/// oauth2-proxy CVE-2025-64484 over HTTP/2: names arrive lower-case in HPACK; the same
/// families are stripped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_underscore_identity_headers_are_stripped() {
    let stack = Stack::light().await;
    let case = "h2c_underscore_identity_headers_are_stripped";
    let client = common::http::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let resp = client
        .get(stack.url_for("/echo-public/probe"))
        .header("x_forwarded_user", "admin")
        .header("x-auth-request-groups", "admins")
        .header("remote-user", "admin")
        .send()
        .await
        .expect("h2c request");
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    let echo = Echoed::parse(&resp.bytes().await.unwrap());
    assert_absent(
        case,
        &echo,
        &["x-forwarded-user", "x-auth-request-groups", "remote-user"],
    );
}
