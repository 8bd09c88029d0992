//! Standing adversarial suite, part 4: the login itself — login CSRF and `state`
//! handling, PKCE downgrade, mix-up, code injection and replay, error-response
//! injection, session fixation and tampered or oversized cookies.
//!
//! Against the node test IdP in its default settings (`tests/common/security.rs`); each
//! callback is loaded hop by hop with the browser driver of `tests/common/login.rs`, so
//! the test can swap, drop or forge any parameter and cookie. A refused callback must set
//! no session, and (where the refusal can happen first) never exchange the code: the
//! IdP's `/__test/stats` count `authorization_code` token requests.

mod common;

use std::time::Duration;

use common::login::{
    flip_char, query_param, random_hex, with_query_param, Browser, Hop, LOGIN_COOKIE_PREFIX,
    SESSION_COOKIE,
};
use common::security::*;
use url::Url;

/// A login begun and signed in at the IdP, not yet back at the gateway.
struct Pending {
    browser: Browser,
    state: String,
    login_cookie_name: String,
    login_cookie_value: String,
    /// The callback URL the IdP sends the browser to (code, state, iss).
    callback: Url,
}

async fn pending_login(stack: &Stack, user: &str) -> Pending {
    let browser = Browser::new();
    let started = browser.start_login(&stack.url(), "/echo/landing").await;
    let idp = browser.idp_sign_in(&started.authorize_url, user).await;
    Pending {
        state: started.state.clone(),
        login_cookie_name: started.login_cookie_name.clone(),
        login_cookie_value: started.login_cookie_value.clone(),
        callback: idp.redirect,
        browser,
    }
}

/// Every `Set-Cookie` name in a response.
fn set_cookie_names(hop: &Hop) -> Vec<String> {
    hop.headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(|v| v.split('=').next().unwrap_or("").trim().to_string())
        .collect()
}

/// The callback was refused: an error status, no session cookie, not sent on to `rd`,
/// the code not exchanged (when `exchanged_before` is given), a `login_failed` line.
async fn assert_callback_refused(
    stack: &Stack,
    case: &str,
    hop: &Hop,
    exchanged_before: Option<u64>,
) {
    assert!(
        hop.status.is_client_error(),
        "{case}: the callback must be refused with a 4xx\n{hop}"
    );
    let session = hop.set_cookie(SESSION_COOKIE);
    assert!(
        session.as_ref().is_none_or(|c| c.value().is_empty()),
        "{case}: a refused callback set a session cookie\n{hop}"
    );
    assert!(
        hop.header("location").is_none(),
        "{case}: redirected after a refused callback\n{hop}"
    );
    if let Some(before) = exchanged_before {
        assert_eq!(
            stack.idp().code_exchanges().await,
            before,
            "{case}: the code was exchanged although the callback was refused first"
        );
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    // `authorization_error` for an IdP error response, `login_failed` for the rest.
    while stack.events("login_failed") + stack.events("authorization_error") == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "{case}: no login_failed/authorization_error audit line"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Raw `GET` of a callback target (query exactly as given), from a client without any
/// login cookie.
async fn raw_callback(stack: &Stack, query: &str) -> Reply {
    stack
        .request(
            "GET",
            &format!("/oauth2/callback?{query}"),
            &[("accept", HTML)],
        )
        .await
}

/// No `Set-Cookie` name outside the gateway's own format (`portcullis`, or the login
/// prefix plus 16 base64url characters), and nothing of `needle` in any header.
fn assert_no_reflection(case: &str, reply: &Reply, needle: &str) {
    for value in reply.header_all("set-cookie") {
        let name = value.split('=').next().unwrap_or("");
        let ok = name == SESSION_COOKIE
            || name.strip_prefix(LOGIN_COOKIE_PREFIX).is_some_and(|rest| {
                rest.len() == 16
                    && rest
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
        assert!(
            ok,
            "{case}: request data was written into a cookie name: {value:?}\n{reply}"
        );
    }
    for (name, value) in &reply.headers {
        assert!(
            !value.contains(needle) && !name.contains(needle),
            "{case}: the request's {needle:?} is reflected in {name}: {value}\n{reply}"
        );
    }
}

// ----- state -------------------------------------------------------------------------

/// The issue (`state=a;Domain=evil` became a `Set-Cookie` name), RFC 6265 §4.1.1 (a
/// cookie-name is a token) and thomseddon/traefik-forward-auth#187 (the same pattern: CSRF
/// cookies named by a nonce prefix): a malformed `state` is refused before any use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_with_cookie_syntax_is_not_reflected_into_set_cookie() {
    let stack = Stack::full().await;
    let case = "state_with_cookie_syntax_is_not_reflected_into_set_cookie";
    let before = stack.idp().code_exchanges().await;
    let reply = raw_callback(&stack, "code=abc&state=a;Domain=evil").await;
    assert_eq!(reply.status, 400, "{case}\n{reply}");
    assert_no_reflection(case, &reply, "evil");
    assert_eq!(
        stack.idp().code_exchanges().await,
        before,
        "{case}: code exchanged"
    );
}

/// RFC 9110 §5.5 (CR/LF are never field content) / CWE-113: an encoded CR LF in `state`
/// never reaches a header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_with_crlf_is_not_reflected() {
    let stack = Stack::full().await;
    let case = "state_with_crlf_is_not_reflected";
    let reply = raw_callback(&stack, "code=abc&state=AAAAAAAA%0d%0aSet-Cookie:%20pwned=1").await;
    assert_eq!(reply.status, 400, "{case}\n{reply}");
    assert_no_reflection(case, &reply, "pwned");
}

/// The issue (`state` checked against the issued format, length included, before any
/// use): a 600-character state gets no cookie named after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_state_is_refused_before_use() {
    let stack = Stack::full().await;
    let case = "oversized_state_is_refused_before_use";
    let state = "Q".repeat(600);
    let reply = raw_callback(&stack, &format!("code=abc&state={state}")).await;
    assert_eq!(reply.status, 400, "{case}\n{reply}");
    assert_no_reflection(case, &reply, "QQQQQQQQQQQQ");
}

/// The issue (base64url alphabet only): a state of the right length with `+`, `/`, `=`
/// is not the gateway's and is refused before use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_outside_the_base64url_alphabet_is_refused_before_use() {
    let stack = Stack::full().await;
    let case = "state_outside_the_base64url_alphabet_is_refused_before_use";
    let reply = raw_callback(
        &stack,
        "code=abc&state=AAAAAAAA%2BBBBBBB%2FCCCCCCCCCCCCCCCCCCCCCCCCC%3D",
    )
    .await;
    assert_eq!(reply.status, 400, "{case}\n{reply}");
    assert_no_reflection(case, &reply, "BBBBBBB");
}

/// Envoy CVE-2023-27496 (the OAuth2 filter crashed on a callback without `state`) and
/// RFC 6749 §10.12: no state, no login.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callback_without_state_is_refused() {
    let stack = Stack::full().await;
    let p = pending_login(&stack, "eve").await;
    let before = stack.idp().code_exchanges().await;
    let url = with_query_param(&p.callback, "state", None);
    let hop = p.browser.callback(&url).await;
    assert_callback_refused(
        &stack,
        "callback_without_state_is_refused",
        &hop,
        Some(before),
    )
    .await;
}

/// RFC 6749 §10.12: an empty `state` is no state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callback_with_empty_state_is_refused() {
    let stack = Stack::full().await;
    let p = pending_login(&stack, "eve").await;
    let before = stack.idp().code_exchanges().await;
    let url = with_query_param(&p.callback, "state", Some(""));
    let hop = p.browser.callback(&url).await;
    assert_callback_refused(
        &stack,
        "callback_with_empty_state_is_refused",
        &hop,
        Some(before),
    )
    .await;
}

/// RFC 6749 §3.1 (request and response parameters MUST NOT be included more than once):
/// the right state plus a second one is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callback_with_repeated_state_is_refused() {
    let stack = Stack::full().await;
    let p = pending_login(&stack, "eve").await;
    let before = stack.idp().code_exchanges().await;
    let mut url = p.callback.clone();
    url.query_pairs_mut().append_pair("state", &random_hex(16));
    let hop = p.browser.callback(&url).await;
    assert_callback_refused(
        &stack,
        "callback_with_repeated_state_is_refused",
        &hop,
        Some(before),
    )
    .await;
}

/// RFC 6749 §10.12 / RFC 9700 §4.7 (login CSRF): the attacker signs in and sends the
/// victim the callback URL; the victim's browser has no login cookie for that state, so
/// the victim is not signed in as the attacker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attackers_callback_in_victims_browser_is_refused() {
    let stack = Stack::full().await;
    let case = "attackers_callback_in_victims_browser_is_refused";
    let attacker = pending_login(&stack, "mallory").await;
    let before = stack.idp().code_exchanges().await;
    let victim = Browser::new();
    let hop = victim.callback(&attacker.callback).await;
    assert_callback_refused(&stack, case, &hop, Some(before)).await;
    assert!(
        victim.cookie(SESSION_COOKIE).is_none(),
        "{case}: the victim holds a session"
    );
}

/// RFC 6749 §10.12 (state binds the response to the user agent): the victim has a login
/// of its own in progress; the attacker's callback still does not match it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attackers_callback_does_not_match_the_victims_login_in_progress() {
    let stack = Stack::full().await;
    let case = "attackers_callback_does_not_match_the_victims_login_in_progress";
    let attacker = pending_login(&stack, "mallory").await;
    let victim = Browser::new();
    let _victims_own = victim.start_login(&stack.url(), "/").await;
    let before = stack.idp().code_exchanges().await;
    let hop = victim.callback(&attacker.callback).await;
    assert_callback_refused(&stack, case, &hop, Some(before)).await;
}

/// Constant-time `state` comparison (README): one changed character, with the login
/// cookie that the first 16 characters select, is refused before the exchange.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_state_is_refused() {
    let stack = Stack::full().await;
    let p = pending_login(&stack, "eve").await;
    let before = stack.idp().code_exchanges().await;
    let tampered = flip_char(&p.state, p.state.len() - 1);
    let url = with_query_param(&p.callback, "state", Some(&tampered));
    let hop = p.browser.callback(&url).await;
    assert_callback_refused(&stack, "tampered_state_is_refused", &hop, Some(before)).await;
}

/// RFC 9700 §4.7.1 (the state value is bound to the user agent by an integrity-protected
/// cookie): a tampered login cookie opens nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_login_cookie_is_refused() {
    let stack = Stack::full().await;
    let p = pending_login(&stack, "eve").await;
    let before = stack.idp().code_exchanges().await;
    p.browser
        .set_cookie(&p.login_cookie_name, &flip_char(&p.login_cookie_value, 10));
    let hop = p.browser.callback(&p.callback).await;
    assert_callback_refused(
        &stack,
        "tampered_login_cookie_is_refused",
        &hop,
        Some(before),
    )
    .await;
}

/// README (the login cookie's name is bound into its seal): a login cookie copied under
/// another state's name does not open for that state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_cookie_renamed_to_another_state_does_not_open() {
    let stack = Stack::full().await;
    let case = "login_cookie_renamed_to_another_state_does_not_open";
    let attacker = pending_login(&stack, "mallory").await;
    let victim = pending_login(&stack, "eve").await;
    // The victim's browser gets the victim's cookie value under the attacker's name.
    victim
        .browser
        .set_cookie(&attacker.login_cookie_name, &victim.login_cookie_value);
    victim.browser.remove_cookie(&victim.login_cookie_name);
    let before = stack.idp().code_exchanges().await;
    let hop = victim.browser.callback(&attacker.callback).await;
    assert_callback_refused(&stack, case, &hop, Some(before)).await;
}

/// RFC 6749 §4.1.2 (a code is used once) and README (a `state` used before is refused
/// before the IdP is asked): replaying a completed callback with a copied login cookie.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_callback_is_refused_without_a_second_exchange() {
    let stack = Stack::full().await;
    let case = "replayed_callback_is_refused_without_a_second_exchange";
    let p = pending_login(&stack, "eve").await;
    let first = p.browser.callback(&p.callback).await;
    assert_eq!(
        first.status.as_u16(),
        302,
        "{case}: the first callback signs in\n{first}"
    );
    let before = stack.idp().code_exchanges().await;
    let replay = Browser::new();
    replay.set_cookie(&p.login_cookie_name, &p.login_cookie_value);
    let hop = replay.callback(&p.callback).await;
    assert_callback_refused(&stack, case, &hop, Some(before)).await;
}

/// OWASP Session Management (limit the login window) and README `session.login_timeout`:
/// a callback after the login timed out is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callback_after_the_login_timeout_is_refused() {
    let stack = Stack::builder()
        .node_idp()
        .session("login_timeout = \"1s\"")
        .start()
        .await;
    let p = pending_login(&stack, "eve").await;
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let before = stack.idp().code_exchanges().await;
    let hop = p.browser.callback(&p.callback).await;
    assert_callback_refused(
        &stack,
        "callback_after_the_login_timeout_is_refused",
        &hop,
        Some(before),
    )
    .await;
}

// ----- PKCE --------------------------------------------------------------------------

/// RFC 7636 §4.2 and RFC 9700 §2.1.1 (S256, a fresh verifier per login): the
/// authorization request carries one S256 challenge of 43 base64url characters, a
/// 256-bit state and a nonce, all different for the next login.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_requests_use_fresh_s256_pkce_state_and_nonce() {
    let stack = Stack::full().await;
    let case = "authorization_requests_use_fresh_s256_pkce_state_and_nonce";
    let mut seen = Vec::new();
    for _ in 0..2 {
        let started = Browser::new().start_login(&stack.url(), "/").await;
        let url = &started.authorize_url;
        assert_eq!(
            query_param(url, "code_challenge_method").as_deref(),
            Some("S256"),
            "{case}: {url}"
        );
        assert_eq!(
            query_param(url, "response_type").as_deref(),
            Some("code"),
            "{case}: {url}"
        );
        let challenge = query_param(url, "code_challenge").expect("code_challenge");
        assert_eq!(challenge.len(), 43, "{case}: S256 challenge length: {url}");
        assert!(started.state.len() >= 43, "{case}: 256-bit state: {url}");
        let nonce = query_param(url, "nonce").expect("nonce");
        seen.push((challenge, started.state.clone(), nonce));
    }
    assert_ne!(
        seen[0].0, seen[1].0,
        "{case}: the PKCE verifier is fresh per login"
    );
    assert_ne!(seen[0].1, seen[1].1, "{case}: the state is fresh per login");
    assert_ne!(seen[0].2, seen[1].2, "{case}: the nonce is fresh per login");
}

/// RFC 9700 §4.8 (PKCE downgrade): parameters a client adds to `/oauth2/start` never
/// reach the authorization request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_supplied_pkce_parameters_are_ignored() {
    let stack = Stack::full().await;
    let case = "client_supplied_pkce_parameters_are_ignored";
    let reply = stack
        .get("/oauth2/start?rd=/&code_challenge_method=plain&code_challenge=x&response_type=token&redirect_uri=https://evil.test/cb&scope=openid%20admin")
        .await;
    assert_eq!(reply.status, 302, "{case}\n{reply}");
    let url = Url::parse(reply.header("location").unwrap()).expect("authorize URL");
    let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    let values = |k: &str| {
        pairs
            .iter()
            .filter(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(values("code_challenge_method"), ["S256"], "{case}: {url}");
    assert_eq!(values("code_challenge").len(), 1, "{case}: {url}");
    assert_ne!(values("code_challenge")[0], "x", "{case}: {url}");
    assert_eq!(values("response_type"), ["code"], "{case}: {url}");
    assert_eq!(
        values("redirect_uri"),
        [stack.url_for("/oauth2/callback")],
        "{case}: {url}"
    );
    assert!(
        !url.as_str().contains("admin"),
        "{case}: a client-chosen scope reached the IdP: {url}"
    );
}

/// RFC 9700 §4.8 / RFC 7636 §7.2 (`plain` must not be used): an IdP whose discovery
/// offers only `plain` is never used for a login.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issuer_offering_only_plain_pkce_is_never_used() {
    let keys = common::security_issuer::KeyIssuer::start_with_pkce_methods(&["plain"]).await;
    let config = format!(
        "[server]\nlisten = \"@LISTEN@\"\npublic_url = \"@PUBLIC_URL@\"\n\n[oidc]\nissuer = \"{}\"\nclient_id = \"gateway\"\nclient_secret = \"s\"\n\n[session]\nsecret = \"{}\"\ncookie_secure = false\n\n[[route]]\npath = \"/\"\nupstream = \"http://127.0.0.1:9\"\n",
        keys.issuer(),
        random_hex(32)
    );
    let gateway = common::Gateway::start(&config).await;
    let case = "issuer_offering_only_plain_pkce_is_never_used";
    tokio::time::sleep(Duration::from_millis(500)).await;
    let client = common::client();
    let ready = client.get(gateway.url_for("/readyz")).send().await.unwrap();
    assert_eq!(
        ready.status().as_u16(),
        503,
        "{case}: not ready with a plain-only IdP"
    );
    let start = client
        .get(gateway.url_for("/oauth2/start?rd=/"))
        .send()
        .await
        .unwrap();
    let location = start
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap_or("").to_string());
    assert!(
        !start.status().is_redirection()
            && location
                .as_deref()
                .is_none_or(|l| !l.contains("code_challenge")),
        "{case}: a login was started against a plain-only IdP: {location:?}"
    );
}

/// RFC 9700 §4.8: the operator's `extra_authorize_params` cannot switch PKCE to `plain`
/// either (refused by `check-config`, or ignored).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extra_authorize_params_cannot_downgrade_pkce() {
    let stack = Stack::builder()
        .node_idp()
        .oidc("extra_authorize_params = { code_challenge_method = \"plain\", code_challenge = \"x\" }")
        .start_or_refused()
        .await;
    let Some(stack) = stack else {
        return; // Refused at start: the downgrade cannot happen.
    };
    let started = Browser::new().start_login(&stack.url(), "/").await;
    let url = &started.authorize_url;
    let methods: Vec<String> = url
        .query_pairs()
        .filter(|(k, _)| k == "code_challenge_method")
        .map(|(_, v)| v.into_owned())
        .collect();
    assert_eq!(
        methods,
        ["S256"],
        "extra_authorize_params_cannot_downgrade_pkce: {url}"
    );
}

// ----- mix-up (RFC 9207) -------------------------------------------------------------

/// RFC 9207 §2.4 and RFC 9700 §4.4 (mix-up): an `iss` that is not the IdP's is refused
/// before the code is sent anywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_iss_in_callback_is_refused_before_exchange() {
    let stack = Stack::full().await;
    let p = pending_login(&stack, "eve").await;
    let before = stack.idp().code_exchanges().await;
    let url = with_query_param(&p.callback, "iss", Some("http://evil.test"));
    let hop = p.browser.callback(&url).await;
    assert_callback_refused(
        &stack,
        "wrong_iss_in_callback_is_refused_before_exchange",
        &hop,
        Some(before),
    )
    .await;
}

/// RFC 9207 §2.4 ("clients MUST reject authorization responses without the iss parameter"
/// from IdPs that advertise it; the test IdP does).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_iss_in_callback_is_refused() {
    let stack = Stack::full().await;
    let p = pending_login(&stack, "eve").await;
    let before = stack.idp().code_exchanges().await;
    let url = with_query_param(&p.callback, "iss", None);
    let hop = p.browser.callback(&url).await;
    assert_callback_refused(
        &stack,
        "missing_iss_in_callback_is_refused",
        &hop,
        Some(before),
    )
    .await;
}

/// RFC 9207 §2.4 (simple string comparison, RFC 3986 §6.2.1): a trailing slash is
/// another issuer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iss_with_trailing_slash_is_refused() {
    let stack = Stack::full().await;
    let p = pending_login(&stack, "eve").await;
    let before = stack.idp().code_exchanges().await;
    let iss = format!("{}/", stack.idp().issuer());
    let url = with_query_param(&p.callback, "iss", Some(&iss));
    let hop = p.browser.callback(&url).await;
    assert_callback_refused(
        &stack,
        "iss_with_trailing_slash_is_refused",
        &hop,
        Some(before),
    )
    .await;
}

/// RFC 6749 §3.1 + RFC 9207: the right `iss` plus a second one is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_iss_is_refused() {
    let stack = Stack::full().await;
    let p = pending_login(&stack, "eve").await;
    let before = stack.idp().code_exchanges().await;
    let mut url = p.callback.clone();
    url.query_pairs_mut().append_pair("iss", "http://evil.test");
    let hop = p.browser.callback(&url).await;
    assert_callback_refused(&stack, "repeated_iss_is_refused", &hop, Some(before)).await;
}

// ----- code injection and replay -----------------------------------------------------

/// RFC 9700 §4.5 and RFC 7636 §1 (code injection; PKCE binds the code to the login that
/// asked for it): the attacker's code in the victim's callback, with the victim's state,
/// is exchanged with the victim's verifier and refused by the IdP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_injected_into_another_login_is_refused() {
    let stack = Stack::full().await;
    let case = "code_injected_into_another_login_is_refused";
    let attacker = pending_login(&stack, "mallory").await;
    let victim = pending_login(&stack, "eve").await;
    let code = query_param(&attacker.callback, "code").unwrap();
    let url = with_query_param(&victim.callback, "code", Some(&code));
    let errors = stack.idp().token_errors("invalid_grant").await;
    let hop = victim.browser.callback(&url).await;
    assert_callback_refused(&stack, case, &hop, None).await;
    assert_eq!(
        stack.idp().token_errors("invalid_grant").await,
        errors + 1,
        "{case}: the IdP refused the exchange (PKCE mismatch)"
    );
    assert!(
        victim.browser.cookie(SESSION_COOKIE).is_none(),
        "{case}: victim signed in"
    );
}

/// RFC 6749 §4.1.2 (a code MUST NOT be used more than once): a completed login's code
/// in a fresh login's callback gets no session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn used_code_in_a_fresh_login_is_refused() {
    let stack = Stack::full().await;
    let case = "used_code_in_a_fresh_login_is_refused";
    let first = pending_login(&stack, "eve").await;
    let done = first.browser.callback(&first.callback).await;
    assert_eq!(done.status.as_u16(), 302, "{case}: first login\n{done}");
    let code = query_param(&first.callback, "code").unwrap();
    let second = pending_login(&stack, "eve").await;
    let url = with_query_param(&second.callback, "code", Some(&code));
    let hop = second.browser.callback(&url).await;
    assert_callback_refused(&stack, case, &hop, None).await;
}

// ----- error responses ---------------------------------------------------------------

/// An IdP error response with `state` valid for this browser, `params` appended.
async fn error_callback(stack: &Stack, params: &[(&str, &str)]) -> (Hop, Pending) {
    let p = pending_login(stack, "eve").await;
    let mut url = with_query_param(&p.callback, "code", None);
    for (k, v) in params {
        url.query_pairs_mut().append_pair(k, v);
    }
    let hop = p.browser.callback(&url).await;
    (hop, p)
}

/// mod_auth_openidc CVE-2017-6059 (page content spoofed through an error response):
/// `error_description` markup is escaped, never rendered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_description_markup_is_escaped() {
    let stack = Stack::full().await;
    let case = "error_description_markup_is_escaped";
    let before = stack.idp().code_exchanges().await;
    let (hop, _) = error_callback(
        &stack,
        &[
            ("error", "access_denied"),
            (
                "error_description",
                "<script>alert(1)</script><a href=//evil.test>log in again</a>",
            ),
        ],
    )
    .await;
    assert_callback_refused(&stack, case, &hop, Some(before)).await;
    assert!(
        !hop.body.contains("<script>alert(1)"),
        "{case}: script reflected\n{hop}"
    );
    assert!(
        !hop.body.contains("<a href=//evil.test"),
        "{case}: link injected\n{hop}"
    );
    assert!(
        hop.header("content-security-policy").is_some(),
        "{case}: no CSP on the error page\n{hop}"
    );
}

/// mod_auth_openidc CVE-2017-6059: markup in `error` itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_code_markup_is_escaped() {
    let stack = Stack::full().await;
    let case = "error_code_markup_is_escaped";
    let (hop, _) = error_callback(&stack, &[("error", "<img src=x onerror=alert(1)>")]).await;
    assert_callback_refused(&stack, case, &hop, None).await;
    assert!(
        !hop.body.contains("<img"),
        "{case}: markup reflected\n{hop}"
    );
}

/// RFC 6749 §4.1.2.1 (`error_uri` is the IdP's, never trusted for navigation): a
/// `javascript:` error_uri is never rendered as a link.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_uri_is_never_rendered_as_a_link() {
    let stack = Stack::full().await;
    let case = "error_uri_is_never_rendered_as_a_link";
    let (hop, _) = error_callback(
        &stack,
        &[
            ("error", "server_error"),
            ("error_uri", "javascript:alert(document.cookie)"),
        ],
    )
    .await;
    assert_callback_refused(&stack, case, &hop, None).await;
    assert!(!hop.body.contains("javascript:"), "{case}\n{hop}");
}

/// RFC 9110 §5.5 / CWE-113 via the error response (mod_auth_openidc CVE-2017-6059 class):
/// CR LF in the IdP's `error` never becomes a response header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_with_crlf_does_not_split_the_response() {
    let stack = Stack::full().await;
    let case = "error_with_crlf_does_not_split_the_response";
    let (hop, _) = error_callback(
        &stack,
        &[
            ("error", "x\r\nSet-Cookie: pwned=1"),
            ("error_description", "y\r\nX-Injected: 1"),
        ],
    )
    .await;
    assert_callback_refused(&stack, case, &hop, None).await;
    assert!(hop.headers.get("x-injected").is_none(), "{case}\n{hop}");
    assert!(
        !set_cookie_names(&hop).iter().any(|n| n.contains("pwned")),
        "{case}\n{hop}"
    );
}

/// RFC 6749 §4.1.2.1 with the real IdP: "Cancel" at the login page ends the login
/// without a session, and the login cookie is cleared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_login_leaves_no_session_and_clears_the_login_cookie() {
    let stack = Stack::full().await;
    let case = "cancelled_login_leaves_no_session_and_clears_the_login_cookie";
    let browser = Browser::new();
    let started = browser.start_login(&stack.url(), "/").await;
    let callback = browser.idp_cancel(&started.authorize_url).await;
    assert_eq!(
        query_param(&callback, "error").as_deref(),
        Some("access_denied"),
        "{case}"
    );
    let hop = browser.callback(&callback).await;
    assert_callback_refused(&stack, case, &hop, None).await;
    assert!(
        browser.cookie(&started.login_cookie_name).is_none(),
        "{case}: login cookie kept\n{hop}"
    );
}

// ----- sessions and cookies ----------------------------------------------------------

/// OWASP Session Management Cheat Sheet (renew the id at login; session fixation): a
/// session cookie planted before login is replaced, and the planted value opens nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_session_cookie_is_replaced_at_login() {
    let stack = Stack::full().await;
    let case = "planted_session_cookie_is_replaced_at_login";
    let planted = "A".repeat(43);
    let browser = Browser::new();
    browser.set_cookie(SESSION_COOKIE, &planted);
    let done = browser.login(&stack.url(), "/echo/landing", "eve").await;
    assert_ne!(
        done.session_cookie, planted,
        "{case}: the planted id was kept"
    );
    let reply = stack
        .request(
            "GET",
            "/echo/x",
            &[
                ("accept", "application/json"),
                ("cookie", &format!("{SESSION_COOKIE}={planted}")),
            ],
        )
        .await;
    assert_eq!(
        reply.status, 401,
        "{case}: the planted value is no session\n{reply}"
    );
}

/// README (256-bit ids, HMAC-keyed store): a session id seen by the attacker in an old
/// login of theirs is not shared with the next login of another user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_login_gets_its_own_session_id() {
    let stack = Stack::full().await;
    let a = stack.login("eve").await;
    let b = stack.login("boss").await;
    assert_ne!(a.cookie, b.cookie, "every_login_gets_its_own_session_id");
    assert!(
        stack.session_works(&a).await && stack.session_works(&b).await,
        "both sessions work for their own users"
    );
}

/// Envoy CVE-2022-29226 / CVE-2023-35941 (forged OAuth2 filter cookies were accepted)
/// and mesosphere/traefik-forward-auth#35 (every cookie validation error must lead back to
/// login): one changed character is no session (a login redirect, no 500).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_session_cookie_is_no_session() {
    let stack = Stack::full().await;
    let case = "tampered_session_cookie_is_no_session";
    let eve = stack.login("eve").await;
    for tampered in [
        flip_char(&eve.cookie, 0),
        flip_char(&eve.cookie, eve.cookie.len() - 1),
        eve.cookie[..eve.cookie.len() - 2].to_string(),
        format!("{}A", eve.cookie),
    ] {
        let traffic = stack.upstream_traffic();
        let reply = stack
            .request(
                "GET",
                "/secret",
                &[
                    ("accept", HTML),
                    ("cookie", &format!("{SESSION_COOKIE}={tampered}")),
                ],
            )
            .await;
        assert_eq!(
            reply.status, 302,
            "{case}: {tampered:?} must be no session\n{reply}"
        );
        assert_eq!(stack.upstream_traffic(), traffic, "{case}: reached nginx");
    }
    assert!(
        stack.session_works(&eve).await,
        "{case}: the real session still works"
    );
}

/// mod_auth_openidc CVE-2024-24814 (a crafted, huge session cookie crashed the server):
/// an oversized cookie is no session or a 431, never a 5xx.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_session_cookie_is_handled() {
    let stack = Stack::light().await;
    let case = "oversized_session_cookie_is_handled";
    for size in [4096, 12_000, 20_000] {
        let cookie = format!("{SESSION_COOKIE}={}", "A".repeat(size));
        let reply = stack
            .request("GET", "/secret", &[("accept", HTML), ("cookie", &cookie)])
            .await;
        assert!(
            matches!(reply.status, 302 | 400 | 431),
            "{case}: {size} bytes → {}\n{reply}",
            reply.status
        );
        assert!(!reply.is_protected(), "{case}: BYPASS\n{reply}");
    }
    let reply = stack.get("/healthz").await;
    assert_eq!(reply.status, 200, "{case}: the gateway is still up");
}

/// mod_auth_openidc CVE-2023-28625 (a crafted cookie crashed OIDCStripCookies): odd bytes,
/// duplicate and empty cookies, many login cookies — no 5xx, no session, still up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_cookies_are_handled() {
    let stack = Stack::light().await;
    let case = "malformed_cookies_are_handled";
    let many: String = (0..100)
        .map(|i| format!("{LOGIN_COOKIE_PREFIX}{i:016}=x; "))
        .collect();
    for cookie in [
        format!("{SESSION_COOKIE}=\"quoted\""),
        format!("{SESSION_COOKIE}=; {SESSION_COOKIE}=; {SESSION_COOKIE}"),
        format!("{SESSION_COOKIE}=%00%ff%fe; =; ;;"),
        format!("{SESSION_COOKIE}={}", "é".repeat(20)),
        many,
    ] {
        let reply = stack
            .request("GET", "/secret", &[("accept", HTML), ("cookie", &cookie)])
            .await;
        assert!(
            matches!(reply.status, 302 | 400 | 431),
            "{case}: cookie {cookie:.60} → {}\n{reply}",
            reply.status
        );
        let echo_public = stack
            .request("GET", "/echo-public/x", &[("cookie", &cookie)])
            .await;
        assert!(
            echo_public.status < 500,
            "{case}: public route with cookie {cookie:.60}\n{echo_public}"
        );
    }
    assert_eq!(
        stack.get("/healthz").await.status,
        200,
        "{case}: the gateway is still up"
    );
}

/// RFC 6265 §4.1.2.5/6 and OWASP (HttpOnly, SameSite, host-only): the session cookie's
/// attributes leave scripts and other sites no way in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_cookie_has_safe_attributes() {
    let stack = Stack::full().await;
    let case = "session_cookie_has_safe_attributes";
    let eve = stack.login("eve").await;
    let cookie = eve
        .login
        .callback
        .set_cookie(SESSION_COOKIE)
        .expect("session cookie");
    assert_eq!(cookie.http_only(), Some(true), "{case}: HttpOnly");
    assert_eq!(
        cookie.same_site(),
        Some(cookie::SameSite::Lax),
        "{case}: SameSite=Lax"
    );
    assert_eq!(cookie.path(), Some("/"), "{case}: Path=/");
    assert!(cookie.domain().is_none(), "{case}: host-only (no Domain)");
    assert!(
        eve.cookie.len() >= 43,
        "{case}: at least 256 bits: {}",
        eve.cookie.len()
    );
}

/// RFC 6750 §3.1 (`invalid_token`): the session cookie's value is not a bearer token on
/// an `accept_bearer` route.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_cookie_value_is_not_a_bearer_token() {
    let stack = Stack::builder().node_idp().bearer_route().start().await;
    let case = "session_cookie_value_is_not_a_bearer_token";
    let eve = stack.login("eve").await;
    let traffic = stack.upstream_traffic();
    let bearer = format!("Bearer {}", eve.cookie);
    let reply = stack
        .request("GET", "/bearer/x", &[("authorization", &bearer)])
        .await;
    assert_eq!(reply.status, 401, "{case}\n{reply}");
    assert!(
        reply
            .header("www-authenticate")
            .is_some_and(|w| w.contains("invalid_token")),
        "{case}\n{reply}"
    );
    assert_eq!(
        stack.upstream_traffic(),
        traffic,
        "{case}: reached the upstream"
    );
}

/// RFC 9700 §4.1 (the redirect URI is fixed) and the `X-Forwarded-Host` concern raised in
/// mod_auth_openidc#453: request headers never change the `redirect_uri` the IdP sees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_headers_do_not_change_the_redirect_uri() {
    let stack = Stack::full().await;
    let case = "request_headers_do_not_change_the_redirect_uri";
    for headers in [
        vec![
            ("x-forwarded-host", "evil.test"),
            ("x-forwarded-proto", "https"),
        ],
        vec![("forwarded", "host=evil.test;proto=https")],
        vec![("host", "evil.test")],
    ] {
        let mut all = vec![("accept", HTML)];
        all.extend(headers.iter().copied());
        let reply = stack.request("GET", "/oauth2/start?rd=/", &all).await;
        if reply.status == 400 {
            continue; // Refused outright (e.g. a Host the gateway does not serve).
        }
        assert_eq!(reply.status, 302, "{case}: {headers:?}\n{reply}");
        let url = Url::parse(reply.header("location").unwrap()).unwrap();
        assert_eq!(
            query_param(&url, "redirect_uri"),
            Some(stack.url_for("/oauth2/callback")),
            "{case}: {headers:?}"
        );
        assert!(!url.as_str().contains("evil.test"), "{case}: {url}");
    }
}
