//! Standing adversarial suite, part 9: leaks. Tokens, codes, cookies and secrets never
//! appear in the gateway's log (at info and at debug), in error pages, in `Location`
//! headers, in `Referer` (the callback sets `Referrer-Policy: no-referrer`), or in what an
//! upstream receives beyond the access token the route is meant to carry.
//!
//! Each case drives a real login at the node test IdP (default settings), collects the
//! secrets of that session — access token, ID token (from the sign-out redirect's
//! `id_token_hint`), authorization code, session and login cookie values, the client
//! secret — and searches every place they must not be.

mod common;

use std::time::Duration;

use common::login::query_param;
use common::security::*;
use url::Url;

/// The ID token of `session`, read from the IdP end-session redirect of a sign-out
/// (which ends the session).
async fn sign_out_for_id_token(stack: &Stack, session: &Session) -> (String, Reply) {
    let cookie = session.cookie_header();
    let reply = stack
        .request(
            "POST",
            "/oauth2/sign_out?rd=%2Fbye",
            &[("cookie", &cookie), ("content-length", "0")],
        )
        .await;
    assert_eq!(reply.status, 302, "sign-out\n{reply}");
    let location = Url::parse(reply.header("location").unwrap()).expect("end-session URL");
    let id_token =
        query_param(&location, "id_token_hint").expect("id_token_hint in the end-session URL");
    (id_token, reply)
}

/// Exercises the gateway with `session`: proxied requests (protected, public, 404),
/// forward-auth, userinfo, a failed callback, then a sign-out. Returns everything the
/// client saw except the sign-out redirect to the IdP, and the secrets.
async fn exercise(stack: &Stack, session: &Session) -> (String, Vec<(&'static str, String)>) {
    let cookie = session.cookie_header();
    let mut seen = String::new();
    let forward_auth_url = format!("http://{}/echo/x", stack.host());
    for (method, target, extra) in [
        ("GET", "/echo/page?token=probe", vec![]),
        ("GET", "/secret", vec![("accept", HTML)]),
        ("GET", "/public/x", vec![]),
        ("GET", "/echo-public/x", vec![]),
        ("GET", "/oauth2/userinfo", vec![]),
        (
            "GET",
            "/oauth2/auth",
            vec![("x-original-url", forward_auth_url.as_str())],
        ),
        (
            "GET",
            "/oauth2/callback?code=reused&state=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            vec![("accept", HTML)],
        ),
        ("GET", "/oauth2/nonexistent", vec![("accept", HTML)]),
    ] {
        let mut headers = vec![("cookie", cookie.as_str())];
        headers.extend(extra);
        let reply = stack.request(method, target, &headers).await;
        // The protected echo shows the access token it was given: that is the route
        // working, not a leak to the client, so it is left out of what the client "saw".
        if target.starts_with("/echo/") {
            // Proves the searched value is the real token (so a leak would be found).
            assert!(
                reply.raw.contains(&session.access_token),
                "the protected echo got the access token\n{reply}"
            );
        } else {
            seen.push_str(&format!(
                "--- {method} {target} -> {}\n{}\n",
                reply.status, reply.raw
            ));
        }
    }
    // The code of the login replayed at the callback (a leak would echo it).
    let replay = format!(
        "/oauth2/callback?code={}&state={}",
        session.code, session.login.started.state
    );
    let reply = stack
        .request("GET", &replay, &[("cookie", &cookie), ("accept", HTML)])
        .await;
    seen.push_str(&reply.raw);
    let (id_token, _) = sign_out_for_id_token(stack, session).await;
    let mut secrets = session.secrets();
    secrets.push(("ID token", id_token));
    secrets.push(("client secret", stack.client_secret.clone()));
    (seen, secrets)
}

/// The gateway's log once the sign-out's request line is in it: the log is written by a
/// background thread, and the sign-out is the last request `exercise` makes.
async fn gateway_log(stack: &Stack) -> String {
    stack
        .gateway
        .wait_for_log(
            "the sign-out's request line",
            Duration::from_secs(10),
            |log| log.contains("\"path\":\"/oauth2/sign_out\""),
        )
        .await
}

/// mod_auth_openidc / oauth2-proxy logging hardening, README "Logs" (cookies, tokens,
/// codes and secrets are never logged) and CWE-532: nothing of the session's secrets in
/// the gateway's log after a full login, use and sign-out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_appear_in_the_gateway_log() {
    let stack = Stack::full().await;
    let case = "secrets_never_appear_in_the_gateway_log";
    let eve = stack.login("eve").await;
    let (_, secrets) = exercise(&stack, &eve).await;
    assert_no_secrets(
        case,
        "the gateway log",
        &gateway_log(&stack).await,
        &secrets,
    );
}

/// README "Logs" (never logged, at any level) and CWE-532, at debug level (operators turn
/// it on when something breaks).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_appear_in_the_gateway_log_at_debug_level() {
    let stack = Stack::builder()
        .node_idp()
        .log_filter("debug")
        .start()
        .await;
    let case = "secrets_never_appear_in_the_gateway_log_at_debug_level";
    let eve = stack.login("eve").await;
    let (_, secrets) = exercise(&stack, &eve).await;
    assert_no_secrets(
        case,
        "the gateway log (debug)",
        &gateway_log(&stack).await,
        &secrets,
    );
}

/// CWE-209 / RFC 9700 §4.3 (credentials in responses and browser history): no response
/// the client gets — error pages, 401/403/404, userinfo, forward-auth, the callback
/// replay — carries a token, the code, or the login cookie.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_appear_in_responses() {
    let stack = Stack::full().await;
    let case = "secrets_never_appear_in_responses";
    let eve = stack.login("eve").await;
    let (seen, secrets) = exercise(&stack, &eve).await;
    // The session cookie is searched too: a response reflecting the request's Cookie
    // header would show it.
    assert_no_secrets(case, "responses", &seen, &secrets);
}

/// RFC 9700 §4.2 (credential leakage via Referer): the callback response, successful or
/// not, sets `Referrer-Policy: no-referrer`, so the page it leads to cannot leak the
/// code in `Referer`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callback_responses_forbid_referer() {
    let stack = Stack::full().await;
    let case = "callback_responses_forbid_referer";
    let eve = stack.login("eve").await;
    assert_eq!(
        eve.login.callback.header("referrer-policy"),
        Some("no-referrer"),
        "{case}: success\n{}",
        eve.login.callback
    );
    let failed = stack
        .get("/oauth2/callback?code=abc&state=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
        .await;
    assert_eq!(
        failed.header("referrer-policy"),
        Some("no-referrer"),
        "{case}: failure\n{failed}"
    );
}

/// RFC 9700 §4.2/§4.3: the callback's `Location` is the return path only — no code, no
/// token, no state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callback_location_carries_no_credentials() {
    let stack = Stack::full().await;
    let case = "callback_location_carries_no_credentials";
    let eve = stack.login("eve").await;
    let location = eve.login.callback.location_raw();
    assert_eq!(location, "/echo/landing", "{case}");
    assert_no_secrets(case, "the callback Location", location, &eve.secrets());
    assert!(
        !location.contains(&eve.login.started.state),
        "{case}: state in Location"
    );
}

/// RFC 9700 §4.9 (tokens only to the resource they are for) and README (the upstream
/// never sees the gateway's cookies): the protected upstream gets the access token and
/// no gateway cookie; the client's other cookies still pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protected_upstream_gets_the_token_but_never_the_gateway_cookies() {
    let stack = Stack::full().await;
    let case = "protected_upstream_gets_the_token_but_never_the_gateway_cookies";
    let eve = stack.login("eve").await;
    let login_cookie = format!(
        "{}={}",
        eve.login.started.login_cookie_name, eve.login.started.login_cookie_value
    );
    let cookie = format!("theme=dark; {}; {login_cookie}", eve.cookie_header());
    let reply = stack
        .request("GET", "/echo/x", &[("cookie", &cookie)])
        .await;
    let echo = echoed(case, &reply);
    let cookies = echo.header_all("cookie").join("; ");
    assert!(
        cookies.contains("theme=dark"),
        "{case}: other cookies pass: {cookies:?}"
    );
    assert_no_secrets(
        case,
        "the upstream's Cookie",
        &cookies,
        &[
            ("session cookie", eve.cookie.clone()),
            ("login cookie", eve.login_cookie.clone()),
        ],
    );
    let all: String = echo
        .headers
        .iter()
        .map(|(k, v)| format!("{k}: {v:?}\n"))
        .collect();
    assert!(
        !all.contains("portcullis"),
        "{case}: a gateway cookie name reached the upstream:\n{all}"
    );
}

/// RFC 9700 §2.3 (privilege restriction: no token where none is needed): a public route
/// gets neither the session's token nor its cookie, even from a signed-in browser.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_upstream_gets_no_token_and_no_gateway_cookie() {
    let stack = Stack::full().await;
    let case = "public_upstream_gets_no_token_and_no_gateway_cookie";
    let eve = stack.login("eve").await;
    let cookie = eve.cookie_header();
    let reply = stack
        .request("GET", "/echo-public/x", &[("cookie", &cookie)])
        .await;
    let echo = echoed(case, &reply);
    let all: String = echo
        .headers
        .iter()
        .map(|(k, v)| format!("{k}: {v:?}\n"))
        .collect();
    assert_no_secrets(
        case,
        "the public upstream's request",
        &all,
        &[
            ("access token", eve.access_token.clone()),
            ("session cookie", eve.cookie.clone()),
        ],
    );
}

/// mod_auth_openidc CVE-2017-6059 (content injected into error pages) / CWE-79: a hostile `X-Request-Id`
/// and credentials in headers never show up raw in the gateway's own error pages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_pages_never_reflect_request_headers() {
    let stack = Stack::light().await;
    let case = "error_pages_never_reflect_request_headers";
    let secret = "Bearer sekrit-4f1c9e2a7b";
    let cookie = "portcullis=cookie-8d2e4f6a1b3c";
    for (target, extra) in [
        ("/oauth2/nope", vec![]),
        ("/oauth2/callback?state=x", vec![]),
        ("/echo/x", vec![("accept", "application/json")]),
        ("/oauth2/auth", vec![("x-original-url", "not a url")]),
    ] {
        let mut headers = vec![
            ("accept", HTML),
            ("x-request-id", "<script>alert(1)</script>"),
            ("authorization", secret),
            ("cookie", cookie),
            ("x-forwarded-user", "<b>admin</b>"),
        ];
        headers.extend(extra);
        let reply = stack.request("GET", target, &headers).await;
        assert!(
            !reply.body.contains("<script>alert(1)"),
            "{case}: {target}: script reflected\n{reply}"
        );
        assert!(
            !reply.body.contains("<b>admin</b>"),
            "{case}: {target}: header reflected\n{reply}"
        );
        assert!(
            !reply.raw.contains("sekrit-4f1c9e2a7b"),
            "{case}: {target}: Authorization reflected\n{reply}"
        );
        assert!(
            !reply.raw.contains("cookie-8d2e4f6a1b3c"),
            "{case}: {target}: Cookie reflected\n{reply}"
        );
    }
}

/// README "Metrics" (labels never carry user data): after a login and traffic, `/metrics`
/// names no user, email, token or cookie.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_carry_no_user_data() {
    let stack = Stack::full().await;
    let case = "metrics_carry_no_user_data";
    let eve = stack.login("eve").await;
    let _ = stack.get_as(&eve, "/secret").await;
    let reply = stack.request("GET", "/metrics", &[]).await;
    assert_eq!(reply.status, 200, "{case}\n{reply}");
    assert!(
        !reply.body.contains("eve@example.com") && !reply.body.contains("\"eve\""),
        "{case}: user data in metrics"
    );
    assert_no_secrets(case, "/metrics", &reply.body, &eve.secrets());
}

/// RFC 6749 §10.3 (access tokens are confidential): `/oauth2/userinfo` and a 202 from
/// forward-auth (without `pass_access_token`) carry identity only, no token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_endpoints_return_no_tokens() {
    let stack = Stack::full().await;
    let case = "identity_endpoints_return_no_tokens";
    let eve = stack.login("eve").await;
    let cookie = eve.cookie_header();
    let userinfo = stack
        .request("GET", "/oauth2/userinfo", &[("cookie", &cookie)])
        .await;
    assert_eq!(userinfo.status, 200, "{case}\n{userinfo}");
    assert!(userinfo.body.contains("eve"), "{case}\n{userinfo}");
    let url = format!("http://{}/echo/x", stack.host());
    let auth = stack
        .request(
            "GET",
            "/oauth2/auth",
            &[("cookie", &cookie), ("x-original-url", &url)],
        )
        .await;
    assert_eq!(auth.status, 202, "{case}\n{auth}");
    let (id_token, _) = sign_out_for_id_token(&stack, &eve).await;
    let mut secrets = eve.secrets();
    secrets.retain(|(name, _)| *name != "session cookie");
    secrets.push(("ID token", id_token));
    assert_no_secrets(case, "/oauth2/userinfo", &userinfo.raw, &secrets);
    assert_no_secrets(case, "/oauth2/auth", &auth.raw, &secrets);
}
