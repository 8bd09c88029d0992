//! The session after login: refresh (single-flight, refused, IdP down), idle and absolute
//! timeouts, sign-out (RP-initiated logout and RFC 7009 revocation), back-channel logout,
//! API clients' own bearer JWTs, session-secret rotation and `/oauth2/userinfo`. The
//! gateway runs in-process, except for secret rotation, which sends the `portcullis`
//! process SIGHUP and reads its log.
//!
//! Most tests run against the node test IdP (`tests/idp`, oidc-provider) with short token
//! lifetimes, so they wait in real time (a few seconds). Tokens a correct IdP never sends —
//! a logout token with a nonce, an access token for another issuer — come from
//! [`MockIdp`], an in-process provider whose signing key the test holds.

mod common;

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use reqwest::header::{ACCEPT, AUTHORIZATION, COOKIE};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use url::Url;

use common::idp::{IdpBuilder, DEFAULT_API_RESOURCE};
use common::lifecycle::{signing_idp, start_gateway_for, GatewaySettings, LifecycleStack};
use common::login::{query_param, random_hex, Browser, Hop, IdpPage, SESSION_COOKIE};
use common::mock_idp::{jwt_parts, mint_jwt, unix_now, MockIdp, RsaPublic, Signer, SigningKey};
use common::{EchoUpstream, InProcessGateway};

const ALICE: &str = "alice";
const BOB: &str = "bob";
const ALICE_EMAIL: &str = "alice@corp.test";

/// `USERS_JSON` for the IdP: alice has her own email and groups; bob gets the defaults.
fn users() -> Value {
    json!({ "alice": { "email": ALICE_EMAIL, "groups": ["admins", "eng"] } })
}

/// The IdP with `users()` and, if given, a short access-token lifetime (seconds).
fn idp_with(access_token_ttl: Option<u64>) -> impl Fn(IdpBuilder) -> IdpBuilder {
    move |idp: IdpBuilder| {
        let idp = idp.users(&users());
        match access_token_ttl {
            Some(ttl) => idp.env("ACCESS_TOKEN_TTL", ttl.to_string()),
            None => idp,
        }
    }
}

// ----- small helpers ----------------------------------------------------------------------

/// The token in the `Authorization: Bearer ...` the upstream received.
fn upstream_bearer(hop: &Hop) -> String {
    let echo = hop.echo();
    let authorization = echo
        .header("authorization")
        .unwrap_or_else(|| panic!("the upstream got no Authorization header\n{hop}"));
    authorization
        .strip_prefix("Bearer ")
        .unwrap_or_else(|| panic!("not a Bearer token: {authorization}"))
        .to_string()
}

/// A browser holding only the session cookie `value` (a replayed or copied cookie).
fn browser_with_cookie(value: &str) -> Browser {
    let browser = Browser::new();
    browser.set_cookie(SESSION_COOKIE, value);
    browser
}

/// The response cleared the session cookie (empty value, `Max-Age=0`).
fn assert_cookie_cleared(hop: &Hop) {
    let cleared = hop
        .set_cookie(SESSION_COOKIE)
        .unwrap_or_else(|| panic!("the session cookie was not cleared\n{hop}"));
    assert_eq!(cleared.value(), "", "{hop}");
    assert_eq!(
        cleared.max_age().map(|a| a.whole_seconds()),
        Some(0),
        "{hop}"
    );
}

/// 401 for an API request without a usable session: `WWW-Authenticate: Bearer`, JSON.
fn assert_login_required(hop: &Hop) {
    assert_eq!(hop.status, StatusCode::UNAUTHORIZED, "{hop}");
    assert_eq!(hop.header("www-authenticate"), Some("Bearer"), "{hop}");
    assert!(
        hop.header("location").is_none(),
        "a 401 never redirects\n{hop}"
    );
    assert_eq!(hop.json()["error"], "unauthorized", "{hop}");
}

/// 401 for a bearer token that failed validation (RFC 6750 §3.1).
fn assert_invalid_token(hop: &Hop, what: &str) {
    assert_eq!(
        hop.status,
        StatusCode::UNAUTHORIZED,
        "{what}: expected 401\n{hop}"
    );
    assert_eq!(
        hop.header("www-authenticate"),
        Some("Bearer error=\"invalid_token\""),
        "{what}\n{hop}"
    );
}

/// `browser` has a live session: an API request reaches the upstream as `user`.
async fn assert_session_alive(stack_url: &str, browser: &Browser, user: &str) {
    let hop = browser.api_get(&format!("{stack_url}/whoami")).await;
    assert_eq!(
        hop.status,
        StatusCode::OK,
        "expected {user}'s session to be alive\n{hop}"
    );
    assert_eq!(hop.echo().header("x-forwarded-user"), Some(user), "{hop}");
}

/// `browser` has no session: an API request gets 401 and never reaches the upstream; a
/// navigation is sent to log in.
async fn assert_session_dead(stack_url: &str, upstream: &EchoUpstream, browser: &Browser) {
    let before = upstream.received().len();
    let api = browser.api_get(&format!("{stack_url}/whoami")).await;
    assert_login_required(&api);
    let nav = browser.navigate(&format!("{stack_url}/page")).await;
    assert_eq!(nav.status, StatusCode::FOUND, "{nav}");
    assert_eq!(nav.location_raw(), "/oauth2/start?rd=%2Fpage", "{nav}");
    assert_eq!(
        upstream.received().len(),
        before,
        "a request without a session reached the upstream"
    );
}

/// Sleeps until `deadline` (real time has to pass for token lifetimes).
async fn sleep_until(deadline: Instant) {
    tokio::time::sleep_until(deadline.into()).await;
}

/// A JWT in an `Authorization: Bearer` header, no cookies, `Accept: application/json`.
async fn bearer_get(url: &str, token: &str) -> Hop {
    let client = Browser::new();
    client
        .send(
            client
                .request(Method::GET, url)
                .header(ACCEPT, "application/json")
                .header(AUTHORIZATION, format!("Bearer {token}")),
        )
        .await
}

/// The IdP's JWKS, as JSON.
async fn idp_jwks(stack: &LifecycleStack) -> Value {
    let uri = stack.idp().discovery().await["jwks_uri"]
        .as_str()
        .expect("jwks_uri")
        .to_string();
    common::client()
        .get(&uri)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {uri}: {e}"))
        .json()
        .await
        .expect("JWKS is JSON")
}

// ----- 1. refresh ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_concurrent_requests_refresh_once() {
    // Access tokens live 5 s; the gateway refreshes when one expires within 2 s.
    let settings = GatewaySettings {
        refresh_before: "2s".into(),
        ..Default::default()
    };
    let stack = LifecycleStack::start(settings, idp_with(Some(5))).await;
    let browser = Browser::new();
    let login = browser.login(&stack.url(), "/start", ALICE).await;
    let logged_in = Instant::now();
    let old_token = upstream_bearer(&login.landing);
    // The IdP's opaque access token: live at the IdP, alice's, issued to the gateway.
    let old_info = stack.assert_token_active(&old_token, ALICE).await;
    assert_eq!(
        stack.refresh_grants().await,
        0,
        "nothing to refresh right after the login"
    );

    // Stale (expires within 2 s) from 3 s after the callback, expired only after 4 s.
    sleep_until(logged_in + Duration::from_millis(3200)).await;
    let client = common::client();
    let cookie = format!("{SESSION_COOKIE}={}", login.session_cookie);
    let requests = (0..100).map(|i| {
        client
            .get(stack.url_for(&format!("/call/{i}")))
            .header(COOKIE, &cookie)
            .header(ACCEPT, "application/json")
            .send()
    });
    let mut tokens = Vec::new();
    for (i, result) in join_all(requests).await.into_iter().enumerate() {
        let resp = result.unwrap_or_else(|e| panic!("request {i}: {e}"));
        let status = resp.status();
        let body = resp.bytes().await.expect("body");
        assert_eq!(
            status,
            StatusCode::OK,
            "request {i}: {}",
            String::from_utf8_lossy(&body)
        );
        let echo = common::Echoed::parse(&body);
        assert_eq!(echo.path, format!("/call/{i}"));
        let authorization = echo.header("authorization").expect("Authorization");
        tokens.push(authorization.strip_prefix("Bearer ").unwrap().to_string());
    }
    let refreshed_at = Instant::now();

    assert_eq!(
        stack.refresh_grants().await,
        1,
        "100 concurrent requests on one stale session must share ONE refresh"
    );
    let new_token = tokens[0].clone();
    assert!(
        tokens.iter().all(|t| *t == new_token),
        "every request must be forwarded with the same refreshed token"
    );
    assert_ne!(
        new_token, old_token,
        "the forwarded token must be the new one"
    );
    let new_info = stack.assert_token_active(&new_token, ALICE).await;
    assert!(
        new_info["exp"].as_u64() > old_info["exp"].as_u64(),
        "the new token must live longer: old {old_info}, new {new_info}"
    );

    // The refreshed session was stored: the next request uses it without another refresh.
    let next = browser.api_get(&stack.url_for("/after")).await;
    assert_eq!(upstream_bearer(&next), new_token);
    assert_eq!(stack.refresh_grants().await, 1);

    // And the rotated refresh token was stored: once the new token is stale, the next
    // refresh succeeds. (Replaying the used refresh token would make the IdP revoke the
    // whole grant: invalid_grant and a 401 here.)
    sleep_until(refreshed_at + Duration::from_millis(3200)).await;
    let again = browser.api_get(&stack.url_for("/again")).await;
    assert_eq!(
        again.status,
        StatusCode::OK,
        "second refresh failed: was the rotated refresh token stored?\n{again}"
    );
    let third_token = upstream_bearer(&again);
    assert_ne!(third_token, new_token);
    assert_eq!(stack.refresh_grants().await, 2);
    stack.assert_token_active(&third_token, ALICE).await;
    // oidc-provider does not revoke the previous access token on a refresh; the first one
    // has simply expired by now (5 s lifetime), and the IdP says so.
    stack.assert_token_inactive(&old_token).await;
}

#[tokio::test]
async fn revoked_refresh_token_sends_browser_to_login() {
    let settings = GatewaySettings {
        refresh_before: "2s".into(),
        ..Default::default()
    };
    let stack = LifecycleStack::start(settings, idp_with(Some(4))).await;
    // Two sessions of alice: one for a browser navigation, one for an API request.
    let browser = Browser::new();
    let api_client = Browser::new();
    let browser_login = browser.login(&stack.url(), "/page?a=1", ALICE).await;
    let api_login = api_client.login(&stack.url(), "/start", ALICE).await;
    let logged_in = Instant::now();
    let tokens = [
        upstream_bearer(&browser_login.landing),
        upstream_bearer(&api_login.landing),
    ];
    for token in &tokens {
        stack.assert_token_active(token, ALICE).await;
    }

    let revoked = stack.idp_hook("revoke_grants", &[("sub", ALICE)]).await;
    assert!(
        !revoked["revoked"].as_array().unwrap().is_empty(),
        "the IdP revoked no grant: {revoked}"
    );
    // The sessions' access tokens died with their grants.
    for token in &tokens {
        stack.assert_token_inactive(token).await;
    }
    let refreshes_before = stack.refresh_grants().await;
    let upstream_before = stack.upstream.received().len();

    // Both access tokens are stale 2 s after their logins.
    sleep_until(logged_in + Duration::from_millis(2300)).await;

    // A browser navigation: the refresh is refused (invalid_grant), so log in again.
    let nav = browser.navigate(&stack.url_for("/page?a=1")).await;
    assert_eq!(
        nav.status,
        StatusCode::FOUND,
        "a refused refresh must send the browser to log in (not an error page)\n{nav}"
    );
    assert_eq!(nav.location_raw(), "/oauth2/start?rd=%2Fpage%3Fa%3D1");
    assert_cookie_cleared(&nav);
    assert!(browser.cookie(SESSION_COOKIE).is_none());

    // An API request: 401, cookie cleared too.
    let api = api_client.api_get(&stack.url_for("/data")).await;
    assert_login_required(&api);
    assert_cookie_cleared(&api);

    assert_eq!(
        stack.upstream.received().len(),
        upstream_before,
        "nothing reached the upstream"
    );
    assert_eq!(
        stack.refresh_grants().await,
        refreshes_before + 2,
        "one refresh attempt per session"
    );

    // The old cookies are dead server-side: no session, and no further call to the IdP.
    for cookie in [&browser_login.session_cookie, &api_login.session_cookie] {
        let replay = browser_with_cookie(cookie);
        assert_session_dead(&stack.url(), &stack.upstream, &replay).await;
    }
    assert_eq!(stack.refresh_grants().await, refreshes_before + 2);

    // Following the redirect logs the user in again (the IdP asks for consent again).
    let again = browser.login(&stack.url(), "/page?a=1", ALICE).await;
    assert_eq!(again.landing.echo().header("x-forwarded-user"), Some(ALICE));
    assert!(again.idp.pages.contains(&IdpPage::Consent));
}

#[tokio::test]
async fn refresh_while_idp_unreachable_keeps_valid_token_then_503() {
    // Tokens live 4 s; refresh is due 3 s before expiry, i.e. right after login.
    let settings = GatewaySettings {
        refresh_before: "3s".into(),
        ..Default::default()
    };
    let mut stack = LifecycleStack::start(settings, idp_with(Some(4))).await;
    let browser = Browser::new();
    let login = browser.login(&stack.url(), "/start", ALICE).await;
    let logged_in = Instant::now();
    let token = upstream_bearer(&login.landing);
    stack.stop_idp();

    // Stale but still valid: forwarded with the old token.
    sleep_until(logged_in + Duration::from_millis(1500)).await;
    let stale = browser.api_get(&stack.url_for("/stale")).await;
    assert_eq!(
        stale.status,
        StatusCode::OK,
        "the IdP is down but the token still works\n{stale}"
    );
    assert_eq!(upstream_bearer(&stale), token);

    // Expired: 503 with a text body; the session is not ended.
    sleep_until(logged_in + Duration::from_millis(4300)).await;
    let before = stack.upstream.received().len();
    let expired = browser.api_get(&stack.url_for("/expired")).await;
    assert_eq!(expired.status, StatusCode::SERVICE_UNAVAILABLE, "{expired}");
    assert!(
        expired
            .header("content-type")
            .unwrap_or_default()
            .starts_with("text/plain"),
        "{expired}"
    );
    assert!(
        expired.body.contains("identity provider"),
        "the body should say why\n{expired}"
    );
    assert!(
        expired.set_cookie(SESSION_COOKIE).is_none(),
        "an unreachable IdP must not end the session\n{expired}"
    );
    assert_eq!(stack.upstream.received().len(), before);
}

// ----- 3. timeouts --------------------------------------------------------------------------

#[tokio::test]
async fn idle_timeout_ends_session() {
    let settings = GatewaySettings {
        idle_timeout: "3s".into(),
        absolute_timeout: "1h".into(),
        ..Default::default()
    };
    let stack = LifecycleStack::start(settings, idp_with(None)).await;
    let browser = Browser::new();
    let login = browser.login(&stack.url(), "/start", ALICE).await;

    // Busy for longer than the idle timeout: every request keeps the session alive.
    let busy_until = Instant::now() + Duration::from_millis(4500);
    let mut requests = 0;
    while Instant::now() < busy_until {
        assert_session_alive(&stack.url(), &browser, ALICE).await;
        requests += 1;
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    assert!(requests >= 10);

    // Idle for more than 3 s (+1 s for whole-second timestamps): over.
    tokio::time::sleep(Duration::from_millis(4200)).await;
    assert_session_dead(&stack.url(), &stack.upstream, &browser).await;
    let replay = browser_with_cookie(&login.session_cookie);
    assert_session_dead(&stack.url(), &stack.upstream, &replay).await;
    let me = browser.api_get(&stack.url_for("/oauth2/userinfo")).await;
    assert_eq!(me.status, StatusCode::UNAUTHORIZED, "{me}");
}

#[tokio::test]
async fn absolute_timeout_ends_session() {
    let settings = GatewaySettings {
        idle_timeout: "3s".into(),
        absolute_timeout: "6s".into(),
        ..Default::default()
    };
    let stack = LifecycleStack::start(settings, idp_with(None)).await;
    let browser = Browser::new();
    // The session is created between these two instants.
    let login_started = Instant::now();
    browser.login(&stack.url(), "/start", ALICE).await;
    let logged_in = Instant::now();

    // Keep the session busy (a request every 400 ms, well within the 3 s idle timeout)
    // until it ends.
    let ended = loop {
        let hop = browser.api_get(&stack.url_for("/busy")).await;
        let now = Instant::now();
        if hop.status != StatusCode::OK {
            assert_login_required(&hop);
            break now;
        }
        assert!(
            now < logged_in + Duration::from_secs(9),
            "the session outlived its 6 s absolute timeout"
        );
        tokio::time::sleep(Duration::from_millis(400)).await;
    };
    // Whole-second timestamps may end it up to 1 s early; idle (3 s) must not end it.
    let lived = ended - login_started;
    assert!(
        lived >= Duration::from_millis(4800),
        "a busy session ended after {lived:?}, before its absolute timeout \
         (6 s; idle timeout 3 s)"
    );
    // It stays ended.
    assert_session_dead(&stack.url(), &stack.upstream, &browser).await;
}

// ----- 4–5. sign-out ------------------------------------------------------------------------

/// How often the IdP logged `grant revoked` (a refresh token or grant really revoked, not
/// just a call to the revocation endpoint, which answers 200 for unknown tokens too).
fn grants_revoked_in_log(stack: &LifecycleStack) -> usize {
    stack.idp().output().matches("grant revoked").count()
}

#[tokio::test]
async fn sign_out_ends_session_everywhere() {
    let stack = LifecycleStack::start(GatewaySettings::default(), idp_with(None)).await;
    let discovery = stack.idp().discovery().await;
    let end_session = discovery["end_session_endpoint"]
        .as_str()
        .expect("end_session_endpoint")
        .to_string();
    let browser = Browser::new();
    let login = browser.login(&stack.url(), "/home", ALICE).await;
    let access_token = upstream_bearer(&login.landing);
    stack.assert_token_active(&access_token, ALICE).await;
    let stats_before = stack.idp().stats().await;
    let grants_revoked_before = grants_revoked_in_log(&stack);

    let out = browser
        .navigate(&stack.url_for("/oauth2/sign_out?rd=/x"))
        .await;
    assert_eq!(out.status, StatusCode::FOUND, "{out}");
    assert_cookie_cleared(&out);

    // The browser goes to the IdP's end_session_endpoint.
    let to_idp = out.location();
    assert_eq!(to_idp.as_str().split('?').next().unwrap(), end_session);
    assert_eq!(
        query_param(&to_idp, "client_id").as_deref(),
        Some("gateway")
    );
    assert_eq!(
        query_param(&to_idp, "post_logout_redirect_uri"),
        Some(stack.url_for("/x"))
    );
    let hint = query_param(&to_idp, "id_token_hint").expect("id_token_hint");
    let hint_claims = stack.idp().verify_jwt(&hint, "gateway").await;
    assert_eq!(hint_claims["sub"], ALICE);

    // The refresh token was revoked at the IdP (RFC 7009) — and it was a real one: the IdP
    // revoked its grant, so alice has no grant left for the gateway. (Checked now, before
    // the IdP's own logout revokes the grant; reported at the end so that the rest of the
    // sign-out is checked too.)
    let revocation_problems = refresh_token_revocation_problems(
        &stack,
        &stats_before,
        grants_revoked_before,
        ALICE,
        &access_token,
    )
    .await;

    // Gone server-side: the old cookie, replayed, is no session.
    let replay = browser_with_cookie(&login.session_cookie);
    assert_session_dead(&stack.url(), &stack.upstream, &replay).await;
    let me = replay.api_get(&stack.url_for("/oauth2/userinfo")).await;
    assert_eq!(me.status, StatusCode::UNAUTHORIZED, "{me}");

    // Completing the IdP's logout lands on the gateway at /x, signed out.
    let back = browser.idp_end_session(&to_idp).await;
    assert_eq!(back.as_str(), stack.url_for("/x"));
    let landing = browser.navigate(back.as_str()).await;
    assert_eq!(landing.status, StatusCode::FOUND, "{landing}");
    assert_eq!(landing.location_raw(), "/oauth2/start?rd=%2Fx");
    let stats = stack.idp().stats().await;
    assert_eq!(
        stats["end_session_confirm"].as_u64(),
        stats_before["end_session_confirm"].as_u64().map(|n| n + 1)
    );

    // The IdP session ended too: logging in again asks for the password.
    let again = browser.login(&stack.url(), "/x", ALICE).await;
    assert!(
        again.idp.pages.contains(&IdpPage::Login),
        "the IdP session survived the sign-out: {:?}",
        again.idp.pages
    );

    assert!(
        revocation_problems.is_empty(),
        "sign-out did not revoke the refresh token at the IdP:\n{}",
        revocation_problems.join("\n")
    );
}

/// What is wrong with the revocation of `sub`'s refresh token at the IdP since
/// `stats_before` / `grants_revoked_before` (empty: it was revoked): one call to the
/// revocation endpoint, the IdP revoked a grant with it, the session's `access_token` died
/// with that grant (introspection: inactive), and `sub` has no grant left for the gateway
/// (checked with the destructive `revoke_grants` hook, so call this last).
async fn refresh_token_revocation_problems(
    stack: &LifecycleStack,
    stats_before: &Value,
    grants_revoked_before: usize,
    sub: &str,
    access_token: &str,
) -> Vec<String> {
    let mut problems = Vec::new();
    let stats = stack.idp().stats().await;
    let calls = stats["revocations"].as_u64().unwrap_or(0)
        - stats_before["revocations"].as_u64().unwrap_or(0);
    if calls != 1 {
        problems.push(format!(
            "{calls} call(s) to the IdP's revocation endpoint, expected 1 (stats {stats})"
        ));
    }
    // The IdP logs `grant revoked` once the revocation request has been handled.
    let deadline = Instant::now() + Duration::from_secs(2);
    while grants_revoked_in_log(stack) <= grants_revoked_before && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    if grants_revoked_in_log(stack) <= grants_revoked_before {
        problems.push("the IdP revoked no grant (its log has no new `grant revoked`)".into());
    }
    // Checked before the hook below, which would revoke the grant itself.
    let introspected = stack
        .idp()
        .introspect(
            access_token,
            &stack.settings.client_id,
            Some(&stack.settings.client_secret),
        )
        .await;
    if introspected["active"] != json!(false) {
        problems.push(format!(
            "the session's access token is still active at the IdP: {introspected}"
        ));
    }
    let left = stack
        .idp_hook("revoke_grants", &[("sub", sub), ("client_id", "gateway")])
        .await;
    if left["revoked"] != json!([]) {
        problems.push(format!(
            "{sub} still had a live grant (refresh token) at the IdP: {left}"
        ));
    }
    problems
}

#[tokio::test]
async fn sign_out_requires_post() {
    let settings = GatewaySettings {
        sign_out_requires_post: true,
        ..Default::default()
    };
    let stack = LifecycleStack::start(settings, idp_with(None)).await;
    let browser = Browser::new();
    let login = browser.login(&stack.url(), "/home", ALICE).await;
    let access_token = upstream_bearer(&login.landing);
    stack.assert_token_active(&access_token, ALICE).await;
    let stack_ref = &stack;
    let revocations = move || async move {
        stack_ref.idp().stats().await["revocations"]
            .as_u64()
            .unwrap()
    };
    let revocations_before = revocations().await;
    let stats_before = stack.idp().stats().await;
    let grants_revoked_before = grants_revoked_in_log(&stack);

    // GET only asks.
    let page = browser
        .navigate(&stack.url_for("/oauth2/sign_out?rd=/x"))
        .await;
    assert_eq!(page.status, StatusCode::OK, "{page}");
    assert!(
        page.header("content-type")
            .unwrap_or_default()
            .starts_with("text/html"),
        "{page}"
    );
    assert!(page.set_cookie(SESSION_COOKIE).is_none(), "{page}");
    let document = scraper::Html::parse_document(&page.body);
    let selector = scraper::Selector::parse("form").unwrap();
    let form = document
        .select(&selector)
        .next()
        .unwrap_or_else(|| panic!("no form on the confirmation page\n{page}"));
    assert_eq!(
        form.value().attr("method").map(str::to_ascii_lowercase),
        Some("post".to_string()),
        "{page}"
    );
    let action = page
        .url
        .join(form.value().attr("action").unwrap_or_default())
        .unwrap();
    assert_eq!(action.path(), "/oauth2/sign_out");
    assert_eq!(query_param(&action, "rd").as_deref(), Some("/x"));

    // ... and the session is untouched.
    assert_session_alive(&stack.url(), &browser, ALICE).await;
    assert_eq!(revocations().await, revocations_before);

    // POST (the form) signs out.
    let out = browser
        .send(browser.request(Method::POST, action.as_str()))
        .await;
    assert_eq!(out.status, StatusCode::FOUND, "{out}");
    assert_cookie_cleared(&out);
    assert_eq!(
        query_param(&out.location(), "post_logout_redirect_uri"),
        Some(stack.url_for("/x"))
    );
    let replay = browser_with_cookie(&login.session_cookie);
    assert_session_dead(&stack.url(), &stack.upstream, &replay).await;
    let problems = refresh_token_revocation_problems(
        &stack,
        &stats_before,
        grants_revoked_before,
        ALICE,
        &access_token,
    )
    .await;
    assert!(
        problems.is_empty(),
        "POST sign-out did not revoke the refresh token at the IdP:\n{}",
        problems.join("\n")
    );
}

// ----- 6. back-channel logout ---------------------------------------------------------------

/// POSTs `logout_token=<token>` to the gateway's back-channel endpoint.
async fn post_logout_token(gateway_url: &str, token: &str) -> Hop {
    let browser = Browser::new();
    browser
        .send(
            browser
                .request(
                    Method::POST,
                    &format!("{gateway_url}/oauth2/backchannel-logout"),
                )
                .form(&[("logout_token", token)]),
        )
        .await
}

fn assert_logout_refused(hop: &Hop, what: &str) {
    assert_eq!(
        hop.status,
        StatusCode::BAD_REQUEST,
        "{what}: must be refused\n{hop}"
    );
    assert_eq!(hop.json()["error"], "invalid_request", "{what}\n{hop}");
}

/// Makes the IdP send back-channel logout tokens for `sub`; returns them (all answered 200).
async fn idp_backchannel_logout(stack: &LifecycleStack, sub: &str) -> Vec<String> {
    let result = stack.idp_hook("backchannel_logout", &[("sub", sub)]).await;
    let sent = result["sent"].as_array().expect("sent");
    assert!(!sent.is_empty(), "the IdP sent no logout token: {result}");
    sent.iter()
        .map(|s| {
            assert_eq!(
                s["status"], 200,
                "the gateway refused a real logout token: {s}"
            );
            assert_eq!(s["sub"], sub);
            s["logout_token"].as_str().unwrap().to_string()
        })
        .collect()
}

#[tokio::test]
async fn backchannel_logout_ends_sessions() {
    let stack = LifecycleStack::start(GatewaySettings::default(), idp_with(None)).await;
    let alice_1 = Browser::new();
    let alice_2 = Browser::new();
    let bob = Browser::new();
    alice_1.login(&stack.url(), "/a", ALICE).await;
    alice_2.login(&stack.url(), "/a", ALICE).await;
    bob.login(&stack.url(), "/b", BOB).await;

    // A logout token for alice signed with another key (under the IdP's kid) changes nothing.
    let jwks = idp_jwks(&stack).await;
    let kid = jwks["keys"][0]["kid"].as_str().unwrap();
    let other_key = SigningKey::rsa(kid);
    let now = unix_now();
    let forged = mint_jwt(
        &json!({"alg": "RS256", "kid": kid, "typ": "logout+jwt"}),
        &json!({
            "iss": stack.idp().issuer(), "aud": "gateway", "iat": now, "exp": now + 120,
            "jti": random_hex(12), "sub": ALICE,
            "events": {"http://schemas.openid.net/event/backchannel-logout": {}},
        }),
        Signer::Key(&other_key),
    );
    let refused = post_logout_token(&stack.url(), &forged).await;
    assert_logout_refused(&refused, "logout token signed with another key");
    assert_session_alive(&stack.url(), &alice_1, ALICE).await;

    // The IdP logs alice out (one logout token per IdP session of hers).
    let tokens = idp_backchannel_logout(&stack, ALICE).await;
    for token in &tokens {
        let (header, claims) = jwt_parts(token);
        assert_eq!(header["typ"], "logout+jwt");
        assert_eq!(claims["sub"], ALICE);
    }
    assert_session_dead(&stack.url(), &stack.upstream, &alice_1).await;
    assert_session_dead(&stack.url(), &stack.upstream, &alice_2).await;
    assert_session_alive(&stack.url(), &bob, BOB).await;

    // A login after the logout is not affected by it.
    alice_1.login(&stack.url(), "/a", ALICE).await;
    assert_session_alive(&stack.url(), &alice_1, ALICE).await;
}

/// OpenID Connect Back-Channel Logout 1.0 §2.4: "If a sid Claim is not present, the intent
/// is that all sessions at the RP for the End-User identified by the iss and sub Claims be
/// logged out" — so a token with a `sid` ends the sessions of that IdP session only.
#[tokio::test]
async fn backchannel_logout_of_one_idp_session_keeps_the_users_other_sessions() {
    let stack = LifecycleStack::start(GatewaySettings::default(), idp_with(None)).await;
    let end_session = stack.idp().discovery().await["end_session_endpoint"]
        .as_str()
        .expect("end_session_endpoint")
        .to_string();
    // Alice on two devices: two IdP sessions (two sids), two gateway sessions.
    let laptop = Browser::new();
    let phone = Browser::new();
    laptop.login(&stack.url(), "/a", ALICE).await;
    phone.login(&stack.url(), "/a", ALICE).await;
    let sent_before = stack.idp().stats().await["backchannel_logouts_sent"]
        .as_u64()
        .unwrap();

    // She signs out at the IdP on the laptop only; the IdP sends the gateway a logout
    // token for the laptop's IdP session (sub + sid).
    laptop
        .idp_end_session(&Url::parse(&end_session).unwrap())
        .await;
    let idp = stack.idp();
    common::wait_until(
        "the IdP to send a back-channel logout",
        Duration::from_secs(5),
        || async move {
            let sent = idp.stats().await["backchannel_logouts_sent"]
                .as_u64()
                .unwrap();
            (sent > sent_before).then_some(())
        },
    )
    .await;

    assert_session_dead(&stack.url(), &stack.upstream, &laptop).await;
    let phone_hop = phone.api_get(&stack.url_for("/whoami")).await;
    assert_eq!(
        phone_hop.status,
        StatusCode::OK,
        "a logout token for the laptop's IdP session (it carries sid) also ended alice's \
         session on the phone, which belongs to another IdP session\n{phone_hop}"
    );
}

#[tokio::test]
async fn replayed_logout_token_rejected() {
    let stack = LifecycleStack::start(GatewaySettings::default(), idp_with(None)).await;
    let alice = Browser::new();
    alice.login(&stack.url(), "/a", ALICE).await;
    let tokens = idp_backchannel_logout(&stack, ALICE).await;
    assert_session_dead(&stack.url(), &stack.upstream, &alice).await;

    // Alice logs in again; the same logout token, replayed, must not end the new session.
    alice.login(&stack.url(), "/a", ALICE).await;
    for token in &tokens {
        let replayed = post_logout_token(&stack.url(), token).await;
        assert_logout_refused(&replayed, "replayed logout token");
    }
    assert_session_alive(&stack.url(), &alice, ALICE).await;
}

/// A login through the [`MockIdp`] (no pages: straight back with a code).
async fn signing_login(gateway: &InProcessGateway, idp: &MockIdp, browser: &Browser, user: &str) {
    idp.set_user(user);
    let started = browser.begin_login(&gateway.url(), "/start").await;
    let callback = match browser.idp_open(&started.authorize_url).await {
        common::login::IdpStep::Left(url) => url,
        common::login::IdpStep::Page(page) => panic!("the mock IdP showed a page\n{page}"),
    };
    let hop = browser.callback(&callback).await;
    assert_eq!(hop.status, StatusCode::FOUND, "callback\n{hop}");
    assert!(hop.set_cookie(SESSION_COOKIE).is_some(), "{hop}");
}

#[tokio::test]
async fn forged_logout_token_rejected() {
    let settings = GatewaySettings::default();
    let idp = signing_idp(&settings).await;
    let upstream = EchoUpstream::start().await;
    let gateway = start_gateway_for(&idp, &upstream, &settings).await;
    let url = gateway.url();
    let alice = Browser::new();
    let bob = Browser::new();
    signing_login(&gateway, &idp, &alice, ALICE).await;
    signing_login(&gateway, &idp, &bob, BOB).await;
    assert_session_alive(&url, &alice, ALICE).await;
    let sid = idp.sid_of(ALICE).expect("alice's sid");

    let header = json!({"alg": "RS256", "kid": idp.key().kid, "typ": "logout+jwt"});
    let valid = || idp.logout_claims(Some(ALICE), Some(&sid));
    let with = |changes: Value| {
        let mut claims = valid();
        for (k, v) in changes.as_object().unwrap() {
            if v.is_null() {
                claims.as_object_mut().unwrap().remove(k);
            } else {
                claims[k] = v.clone();
            }
        }
        claims
    };
    let key = idp.key();
    let other_key = SigningKey::rsa(&key.kid);
    let public_pem = key.rsa_public().spki_pem();
    let now = unix_now();

    let forgeries: Vec<(&str, String)> = vec![
        (
            "signed with another key (same kid)",
            mint_jwt(&header, &valid(), Signer::Key(&other_key)),
        ),
        (
            "alg none",
            mint_jwt(
                &json!({"alg": "none", "typ": "logout+jwt"}),
                &valid(),
                Signer::Unsigned,
            ),
        ),
        (
            "HS256 with the IdP's public key as the HMAC secret",
            mint_jwt(
                &json!({"alg": "HS256", "kid": key.kid, "typ": "logout+jwt"}),
                &valid(),
                Signer::Hs256(public_pem.as_bytes()),
            ),
        ),
        (
            "wrong aud",
            mint_jwt(
                &header,
                &with(json!({"aud": "another-client"})),
                Signer::Key(key),
            ),
        ),
        (
            "wrong iss",
            mint_jwt(
                &header,
                &with(json!({"iss": "http://127.0.0.1:9/other"})),
                Signer::Key(key),
            ),
        ),
        (
            "with a nonce",
            mint_jwt(
                &header,
                &with(json!({"nonce": "n-0S6_WzA2Mj"})),
                Signer::Key(key),
            ),
        ),
        (
            "missing events",
            mint_jwt(&header, &with(json!({"events": null})), Signer::Key(key)),
        ),
        (
            "events without the back-channel logout event",
            mint_jwt(
                &header,
                &with(json!({"events": {"http://schemas.openid.net/event/other": {}}})),
                Signer::Key(key),
            ),
        ),
        (
            "neither sub nor sid",
            mint_jwt(
                &header,
                &with(json!({"sub": null, "sid": null})),
                Signer::Key(key),
            ),
        ),
        (
            "missing jti",
            mint_jwt(&header, &with(json!({"jti": null})), Signer::Key(key)),
        ),
        (
            "iat 11 minutes old",
            mint_jwt(
                &header,
                &with(json!({"iat": now - 660, "exp": now + 60})),
                Signer::Key(key),
            ),
        ),
        (
            "expired",
            mint_jwt(
                &header,
                &with(json!({"iat": now - 400, "exp": now - 300})),
                Signer::Key(key),
            ),
        ),
    ];
    for (what, token) in &forgeries {
        let hop = post_logout_token(&url, token).await;
        assert_logout_refused(&hop, what);
    }
    let missing = Browser::new();
    let no_token = missing
        .send(
            missing
                .request(Method::POST, &format!("{url}/oauth2/backchannel-logout"))
                .form(&[("something_else", "x")]),
        )
        .await;
    assert_eq!(no_token.status, StatusCode::BAD_REQUEST, "{no_token}");
    assert_session_alive(&url, &alice, ALICE).await;
    assert_session_alive(&url, &bob, BOB).await;

    // Control: the same token without the fault ends alice's session, not bob's.
    let good = post_logout_token(&url, &mint_jwt(&header, &valid(), Signer::Key(key))).await;
    assert_eq!(
        good.status,
        StatusCode::OK,
        "a correct logout token\n{good}"
    );
    assert_session_dead(&url, &upstream, &alice).await;
    assert_session_alive(&url, &bob, BOB).await;
}

// ----- 7. API clients' own bearer tokens ----------------------------------------------------

/// A real access token from the IdP for `resource` (an authorization code flow of the
/// gateway's client, done by the test itself with PKCE and a `resource` parameter).
async fn idp_access_token_for(stack: &LifecycleStack, user: &str, resource: &str) -> String {
    let discovery = stack.idp().discovery().await;
    let verifier = random_hex(32);
    let challenge = base64_url(
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes()).as_ref(),
    );
    let redirect_uri = stack.url_for("/oauth2/callback");
    let mut authorize = Url::parse(discovery["authorization_endpoint"].as_str().unwrap()).unwrap();
    authorize
        .query_pairs_mut()
        .append_pair("client_id", &stack.settings.client_id)
        .append_pair("response_type", "code")
        .append_pair("scope", "openid")
        .append_pair("redirect_uri", &redirect_uri)
        .append_pair("state", &random_hex(8))
        .append_pair("nonce", &random_hex(8))
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256")
        .append_pair("resource", resource);
    let outcome = Browser::new().idp_sign_in(&authorize, user).await;
    let code = query_param(&outcome.redirect, "code")
        .unwrap_or_else(|| panic!("no code in {}", outcome.redirect));
    let resp = common::client()
        .post(discovery["token_endpoint"].as_str().unwrap())
        .basic_auth(
            &stack.settings.client_id,
            Some(&stack.settings.client_secret),
        )
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", redirect_uri.as_str()),
            ("code_verifier", verifier.as_str()),
            ("resource", resource),
        ])
        .send()
        .await
        .expect("token request");
    let status = resp.status();
    let body: Value = resp.json().await.expect("token response JSON");
    assert_eq!(status, StatusCode::OK, "token response {body}");
    body["access_token"].as_str().unwrap().to_string()
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[tokio::test]
async fn api_bearer_token_from_the_idp_is_forwarded_unchanged() {
    let stack = LifecycleStack::start(GatewaySettings::default(), idp_with(None)).await;
    let browser = Browser::new();
    // A session of alice: the upstream gets the session's access token (opaque, from the
    // gateway's own login without a `resource`), live at the IdP.
    let login = browser.login(&stack.url(), "/api/me", ALICE).await;
    let session_token = upstream_bearer(&login.landing);
    stack.assert_token_active(&session_token, ALICE).await;

    // An API client's own token: a real IdP JWT for the gateway's API audience.
    let token = idp_access_token_for(&stack, ALICE, DEFAULT_API_RESOURCE).await;
    let claims = stack.idp().verify_jwt(&token, DEFAULT_API_RESOURCE).await;
    assert_eq!(claims["aud"], DEFAULT_API_RESOURCE);
    assert_eq!(claims["sub"], ALICE);
    assert_eq!(claims["client_id"], stack.settings.client_id.as_str());

    // Sent directly, without cookies, to the accept_bearer route: forwarded unchanged,
    // identity from the token (client-sent identity headers dropped).
    let client = Browser::new();
    let direct = client
        .send(
            client
                .request(Method::GET, &stack.url_for("/api/orders?id=7"))
                .header(ACCEPT, "application/json")
                .header(AUTHORIZATION, format!("Bearer {token}"))
                .header("X-Forwarded-User", "mallory")
                .header("X-Forwarded-Email", "mallory@evil.test"),
        )
        .await;
    assert_eq!(direct.status, StatusCode::OK, "{direct}");
    let echo = direct.echo();
    assert_eq!(echo.path, "/api/orders?id=7");
    assert_eq!(
        echo.header("authorization"),
        Some(format!("Bearer {token}").as_str())
    );
    assert_eq!(echo.header("x-forwarded-user"), Some(ALICE));
    assert_ne!(echo.header("x-forwarded-email"), Some("mallory@evil.test"));
    assert!(echo.header("cookie").is_none());
    assert!(direct.set_cookie(SESSION_COOKIE).is_none(), "{direct}");

    // A real IdP token for another resource (everything else valid): 401.
    let other_resource = "https://other.portcullis.test";
    let foreign = idp_access_token_for(&stack, ALICE, other_resource).await;
    let foreign_claims = stack.idp().verify_jwt(&foreign, other_resource).await;
    assert_eq!(foreign_claims["sub"], ALICE);
    let before = stack.upstream.received().len();
    assert_invalid_token(
        &bearer_get(&stack.url_for("/api/orders"), &foreign).await,
        "token for another audience",
    );

    // Forgeries built from the real token's claims.
    let (header, claims) = jwt_parts(&token);
    let kid = header["kid"].as_str().unwrap();
    let jwks = idp_jwks(&stack).await;
    let public = RsaPublic::from_jwk(&jwks["keys"][0]);
    let other_key = SigningKey::rsa(kid);
    let hs256 = json!({"alg": "HS256", "typ": "at+jwt", "kid": kid});
    let mut tampered_claims = claims.clone();
    tampered_claims["sub"] = json!(BOB);
    let signature = token.rsplit('.').next().unwrap();
    let tampered = format!(
        "{}.{signature}",
        mint_jwt(&header, &tampered_claims, Signer::Unsigned).trim_end_matches('.')
    );
    let forgeries = [
        (
            "alg none",
            mint_jwt(
                &json!({"alg": "none", "typ": "at+jwt"}),
                &claims,
                Signer::Unsigned,
            ),
        ),
        (
            "HS256 keyed with the IdP's public key (PEM)",
            mint_jwt(&hs256, &claims, Signer::Hs256(public.spki_pem().as_bytes())),
        ),
        (
            "HS256 keyed with the IdP's public key (DER)",
            mint_jwt(&hs256, &claims, Signer::Hs256(&public.spki_der())),
        ),
        (
            "HS256 keyed with the IdP's public key (PKCS#1)",
            mint_jwt(&hs256, &claims, Signer::Hs256(&public.pkcs1_der())),
        ),
        (
            "RS256 signed by another key under the IdP's kid",
            mint_jwt(&header, &claims, Signer::Key(&other_key)),
        ),
        ("claims changed after signing", tampered),
        ("not a JWT", "opaque-access-token".to_string()),
    ];
    for (what, forged) in &forgeries {
        assert_invalid_token(
            &bearer_get(&stack.url_for("/api/orders"), forged).await,
            what,
        );
    }
    assert_eq!(
        stack.upstream.received().len(),
        before,
        "a refused bearer token reached the upstream"
    );

    // An invalid bearer token is refused even with a valid session cookie: no fallback.
    let both = browser
        .send(
            browser
                .request(Method::GET, &stack.url_for("/api/orders"))
                .header(ACCEPT, "application/json")
                .header(AUTHORIZATION, format!("Bearer {foreign}")),
        )
        .await;
    assert_invalid_token(&both, "invalid bearer token with a session cookie");
    // Without a bearer header, the route uses the session as usual.
    let session = browser.api_get(&stack.url_for("/api/orders")).await;
    assert_eq!(upstream_bearer(&session), session_token);

    // A route without accept_bearer ignores the header: no session, so login required...
    let before = stack.upstream.received().len();
    let plain = bearer_get(&stack.url_for("/reports"), &token).await;
    assert_login_required(&plain);
    assert_eq!(stack.upstream.received().len(), before);
    // ... and with a session, the upstream gets the session's token, not the client's.
    let mixed = browser
        .send(
            browser
                .request(Method::GET, &stack.url_for("/reports"))
                .header(ACCEPT, "application/json")
                .header(AUTHORIZATION, format!("Bearer {foreign}")),
        )
        .await;
    let echo = mixed.echo();
    assert_eq!(
        echo.header_all("authorization"),
        [format!("Bearer {session_token}")]
    );
}

#[tokio::test]
async fn api_bearer_token_claims_are_checked() {
    let settings = GatewaySettings::default();
    let idp = signing_idp(&settings).await;
    let upstream = EchoUpstream::start().await;
    let gateway = start_gateway_for(&idp, &upstream, &settings).await;
    let url = gateway.url_for("/api/items");
    let key = idp.key();
    let header = json!({"alg": "RS256", "kid": key.kid, "typ": "at+jwt"});
    let with = |changes: Value| {
        let mut claims = idp.access_claims("carol");
        for (k, v) in changes.as_object().unwrap() {
            if v.is_null() {
                claims.as_object_mut().unwrap().remove(k);
            } else {
                claims[k] = v.clone();
            }
        }
        claims
    };

    // Control: a correct token passes, unchanged, as carol.
    let valid = mint_jwt(&header, &with(json!({})), Signer::Key(key));
    let ok = bearer_get(&url, &valid).await;
    assert_eq!(ok.status, StatusCode::OK, "{ok}");
    let echo = ok.echo();
    assert_eq!(
        echo.header("authorization"),
        Some(format!("Bearer {valid}").as_str())
    );
    assert_eq!(echo.header("x-forwarded-user"), Some("carol"));

    let now = unix_now();
    let other_key = SigningKey::rsa(&key.kid);
    let unknown_key = SigningKey::rsa("not-in-the-jwks");
    let public_pem = key.rsa_public().spki_pem();
    let forgeries = [
        (
            "expired (beyond any clock-skew leeway)",
            mint_jwt(
                &header,
                &with(json!({"iat": now - 3600, "exp": now - 300})),
                Signer::Key(key),
            ),
        ),
        (
            "not yet valid (nbf in 10 minutes)",
            mint_jwt(&header, &with(json!({"nbf": now + 600})), Signer::Key(key)),
        ),
        (
            "another issuer",
            mint_jwt(
                &header,
                &with(json!({"iss": "http://127.0.0.1:9/other"})),
                Signer::Key(key),
            ),
        ),
        (
            "another audience",
            mint_jwt(
                &header,
                &with(json!({"aud": "https://other.portcullis.test"})),
                Signer::Key(key),
            ),
        ),
        (
            "the gateway's client id as audience (an ID token)",
            mint_jwt(
                &header,
                &with(json!({"aud": settings.client_id})),
                Signer::Key(key),
            ),
        ),
        (
            "no exp",
            mint_jwt(&header, &with(json!({"exp": null})), Signer::Key(key)),
        ),
        (
            "no sub",
            mint_jwt(&header, &with(json!({"sub": null})), Signer::Key(key)),
        ),
        (
            "signed by another key under the IdP's kid",
            mint_jwt(&header, &with(json!({})), Signer::Key(&other_key)),
        ),
        (
            "signed by a key the IdP does not publish",
            mint_jwt(
                &json!({"alg": "RS256", "kid": unknown_key.kid, "typ": "at+jwt"}),
                &with(json!({})),
                Signer::Key(&unknown_key),
            ),
        ),
        (
            "alg none",
            mint_jwt(
                &json!({"alg": "none", "typ": "at+jwt"}),
                &with(json!({})),
                Signer::Unsigned,
            ),
        ),
        (
            "HS256 keyed with the IdP's public key (PEM)",
            mint_jwt(
                &json!({"alg": "HS256", "kid": key.kid, "typ": "at+jwt"}),
                &with(json!({})),
                Signer::Hs256(public_pem.as_bytes()),
            ),
        ),
        (
            "HS256 keyed with the IdP's public key (PKCS#1 DER)",
            mint_jwt(
                &json!({"alg": "HS256", "kid": key.kid, "typ": "at+jwt"}),
                &with(json!({})),
                Signer::Hs256(&key.rsa_public().pkcs1_der()),
            ),
        ),
    ];
    let before = upstream.received().len();
    for (what, token) in &forgeries {
        assert_invalid_token(&bearer_get(&url, token).await, what);
    }
    assert_eq!(
        upstream.received().len(),
        before,
        "a refused bearer token reached the upstream"
    );
    // The control still passes afterwards (nothing was cached as refused).
    assert_eq!(bearer_get(&url, &valid).await.status, StatusCode::OK);
}

// ----- 8. secret rotation -------------------------------------------------------------------

#[tokio::test]
async fn secret_rotation_keeps_old_sessions() {
    let secret_a = random_hex(32);
    let secret_b = random_hex(32);
    let settings = GatewaySettings {
        secrets: vec![secret_a.clone()],
        ..Default::default()
    };
    let mut stack = LifecycleStack::start_process(settings.clone(), idp_with(None)).await;
    let browser = Browser::new();
    let login = browser.login(&stack.url(), "/start", ALICE).await;
    assert_session_alive(&stack.url(), &browser, ALICE).await;

    // Rotate without a restart (SIGHUP): B seals, A still opens.
    stack
        .reload_gateway(GatewaySettings {
            secrets: vec![secret_b.clone(), secret_a.clone()],
            ..settings.clone()
        })
        .await;
    assert_session_alive(&stack.url(), &browser, ALICE).await;

    // A retired: the session was re-sealed under B on its first read.
    stack
        .reload_gateway(GatewaySettings {
            secrets: vec![secret_b.clone()],
            ..settings.clone()
        })
        .await;
    assert_session_alive(&stack.url(), &browser, ALICE).await;
    assert_eq!(browser.cookie(SESSION_COOKIE), Some(login.session_cookie));

    // Control: dropping every secret the session could open with ends it.
    stack
        .reload_gateway(GatewaySettings {
            secrets: vec![random_hex(32)],
            ..settings
        })
        .await;
    let gone = browser.api_get(&stack.url_for("/whoami")).await;
    assert_eq!(gone.status, StatusCode::UNAUTHORIZED, "{gone}");
}

// ----- 9. userinfo --------------------------------------------------------------------------

#[tokio::test]
async fn userinfo_returns_the_user() {
    let stack = LifecycleStack::start(GatewaySettings::default(), idp_with(None)).await;
    let browser = Browser::new();
    let login = browser.login(&stack.url(), "/start", ALICE).await;
    let access_token = upstream_bearer(&login.landing);

    let me = browser.api_get(&stack.url_for("/oauth2/userinfo")).await;
    assert_eq!(me.status, StatusCode::OK, "{me}");
    assert!(
        me.header("content-type")
            .unwrap_or_default()
            .starts_with("application/json"),
        "{me}"
    );
    assert_eq!(me.header("cache-control"), Some("no-store"), "{me}");
    assert_eq!(
        me.json(),
        json!({
            "sub": ALICE,
            "email": ALICE_EMAIL,
            "name": "Alice",
            "groups": ["admins", "eng"],
        })
    );
    assert!(
        !me.body.contains(&access_token),
        "userinfo leaked the access token"
    );
    assert!(
        !me.body.contains("eyJ"),
        "userinfo contains a JWT: {}",
        me.body
    );

    let bob = Browser::new();
    bob.login(&stack.url(), "/start", BOB).await;
    let bob_me = bob.api_get(&stack.url_for("/oauth2/userinfo")).await;
    assert_eq!(bob_me.json()["sub"], BOB);
    assert_eq!(bob_me.json()["email"], "bob@example.com");

    let nobody = Browser::new()
        .api_get(&stack.url_for("/oauth2/userinfo"))
        .await;
    assert_login_required(&nobody);
    let forged = browser_with_cookie(&random_hex(32))
        .api_get(&stack.url_for("/oauth2/userinfo"))
        .await;
    assert_login_required(&forged);
}
