//! Standing adversarial suite, part 5: open redirects (`rd` after login and after
//! sign-out, every encoding trick) and sign-out CSRF.
//!
//! `rd` accepts a same-origin relative path or an absolute URL on
//! `server.allowed_redirect_hosts` (`app.example.com` here); anything else falls back
//! to `/`. Login cases complete a real login at the node IdP and read where the callback
//! sends the browser; sign-out cases read the sign-out redirect (and, with a session, the
//! `post_logout_redirect_uri` sent to the IdP). A GET `/oauth2/sign_out` ends the session
//! only for a same-origin or user-typed navigation (Fetch Metadata, else a same-origin
//! `Referer`); otherwise it shows a confirmation page whose form carries a token bound to
//! the session. A POST with a foreign or `null` `Origin` is refused.

mod common;

use common::login::{query_param, Browser};
use common::security::*;
use scraper::{Html, Selector};
use url::Url;

// ----- helpers -----------------------------------------------------------------------

/// Where the gateway sends the browser after a complete login that began with `rd`.
async fn landing_after_login(stack: &Stack, rd: &str) -> String {
    let browser = Browser::new();
    let started = browser.start_login(&stack.url(), rd).await;
    let idp = browser.idp_sign_in(&started.authorize_url, "eve").await;
    let callback = browser.callback(&idp.redirect).await;
    assert_eq!(
        callback.status.as_u16(),
        302,
        "login with rd={rd:?}\n{callback}"
    );
    callback.location_raw().to_string()
}

/// The `Location` stays on the gateway's origin by every reading: it is a path (not
/// `//` or `/\` even after one percent-decode and with tabs and newlines removed, as
/// browsers do), without control characters, and resolves to the gateway's origin.
fn assert_same_origin(case: &str, stack: &Stack, location: &str) {
    assert!(
        !location.bytes().any(|b| b.is_ascii_control()),
        "{case}: control characters in Location {location:?}"
    );
    let browserish: String = location
        .chars()
        .filter(|c| !matches!(c, '\t' | '\n' | '\r'))
        .collect();
    let decoded = percent_encoding::percent_decode_str(&browserish)
        .decode_utf8_lossy()
        .into_owned();
    for form in [&browserish, &decoded] {
        assert!(form.starts_with('/'), "{case}: not a path: {location:?}");
        assert!(
            !form.starts_with("//") && !form.starts_with("/\\"),
            "{case}: OPEN REDIRECT: {location:?} reads as another host"
        );
    }
    let base = Url::parse(&stack.url()).unwrap();
    let resolved = base.join(location).expect("Location resolves");
    assert_eq!(
        resolved.origin(),
        base.origin(),
        "{case}: OPEN REDIRECT to {resolved}"
    );
}

/// After a login with `rd`, the browser lands on `/`.
async fn login_rd_falls_back(case: &str, rd: &str) {
    let stack = Stack::full().await;
    let location = landing_after_login(&stack, rd).await;
    assert_same_origin(case, &stack, &location);
    assert_eq!(location, "/", "{case}: rd={rd:?} must fall back to /");
}

/// After a session-less sign-out with `rd` (a script's POST), the redirect is `/`.
async fn sign_out_rd_falls_back(case: &str, rd: &str) {
    let stack = Stack::light().await;
    let rd: String = url::form_urlencoded::byte_serialize(rd.as_bytes()).collect();
    let reply = stack
        .request(
            "POST",
            &format!("/oauth2/sign_out?rd={rd}"),
            &[("content-length", "0")],
        )
        .await;
    assert_eq!(reply.status, 302, "{case}\n{reply}");
    let location = reply.header("location").unwrap_or_default();
    assert_same_origin(case, &stack, location);
    assert_eq!(location, "/", "{case}: must fall back to /");
}

// ----- rd after login ----------------------------------------------------------------

/// bitly/oauth2_proxy#478, oauth2-proxy CVE-2020-5233 (GHSA-qqxw-m5fj-f7gv) and
/// thomseddon/traefik-forward-auth#77 (the return URL carried through the login was not
/// validated): a protocol-relative `//evil.test/` is another host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_relative_rd_falls_back() {
    login_rd_falls_back("protocol_relative_rd_falls_back", "//evil.test/").await;
}

/// mod_auth_openidc CVE-2019-20479 (OpenIDC/mod_auth_openidc#453): `/\evil.test`, which
/// browsers read as `//evil.test`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slash_backslash_rd_falls_back() {
    login_rd_falls_back("slash_backslash_rd_falls_back", "/\\evil.test").await;
}

/// oauth2-proxy CVE-2020-4037 (GHSA-5m6c-jp6f-2vcv, the stricter redirect regex):
/// `\/evil.test` and `/\/evil.test`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backslash_slash_variants_fall_back() {
    let stack = Stack::full().await;
    for rd in ["\\/evil.test", "/\\/evil.test", "\\\\evil.test"] {
        let location = landing_after_login(&stack, rd).await;
        assert_same_origin("backslash_slash_variants_fall_back", &stack, &location);
        assert_eq!(location, "/", "backslash_slash_variants_fall_back: {rd:?}");
    }
}

/// oauth2-proxy CVE-2020-11053 (GHSA-j7px-6hwj-hpjg, whitespace between slashes):
/// browsers drop the tab in `/<TAB>/evil.test` and go to `//evil.test`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tab_between_slashes_rd_falls_back() {
    login_rd_falls_back("tab_between_slashes_rd_falls_back", "/\t/evil.test").await;
}

/// CVE-2020-11053 class: a newline between the slashes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newline_between_slashes_rd_falls_back() {
    login_rd_falls_back("newline_between_slashes_rd_falls_back", "/\n/evil.test").await;
}

/// RFC 9110 §5.5 / CWE-113 and README (tabs/newlines in `rd` fall back): a CR LF in
/// `rd` never becomes a header line after the callback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crlf_in_rd_does_not_split_the_callback_response() {
    login_rd_falls_back(
        "crlf_in_rd_does_not_split_the_callback_response",
        "/x\r\nSet-Cookie: pwned=1",
    )
    .await;
}

/// RFC 3986 §5.2.2 (`https:evil.test` has a scheme; browsers resolve it to another host).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheme_without_slashes_rd_falls_back() {
    login_rd_falls_back("scheme_without_slashes_rd_falls_back", "https:evil.test").await;
}

/// RFC 9700 §4.11 (open redirection) + XSS: a `javascript:` target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn javascript_rd_falls_back() {
    login_rd_falls_back(
        "javascript_rd_falls_back",
        "javascript:alert(document.domain)",
    )
    .await;
}

/// RFC 9700 §4.11 (open redirection): a `data:` target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_url_rd_falls_back() {
    login_rd_falls_back(
        "data_url_rd_falls_back",
        "data:text/html,<script>alert(1)</script>",
    )
    .await;
}

/// RFC 3986 §3.2.1 (userinfo): `https://app.example.com@evil.test/` goes to evil.test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn userinfo_with_allowed_host_rd_falls_back() {
    login_rd_falls_back(
        "userinfo_with_allowed_host_rd_falls_back",
        "https://app.example.com@evil.test/",
    )
    .await;
}

/// oauth2-proxy CVE-2021-21291 (GHSA-4mf2-f3wh-gvf2, oauth2-proxy#922: the whitelisted-
/// domain check by suffix): `app.example.com.evil.test` is not `app.example.com`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_host_as_prefix_of_another_host_falls_back() {
    login_rd_falls_back(
        "allowed_host_as_prefix_of_another_host_falls_back",
        "https://app.example.com.evil.test/",
    )
    .await;
}

/// Orange Tsai, "A New Era of SSRF" (Black Hat USA 2017): WHATWG parsers read `\` as
/// `/`, so `https://evil.test\@app.example.com/` is evil.test to a browser.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backslash_before_userinfo_rd_falls_back() {
    login_rd_falls_back(
        "backslash_before_userinfo_rd_falls_back",
        "https://evil.test\\@app.example.com/",
    )
    .await;
}

/// Unicode TS #39 (confusables) and README (IDNs compare in punycode): a Cyrillic `а`
/// in `аpp.example.com` is another host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idn_lookalike_of_allowed_host_falls_back() {
    login_rd_falls_back(
        "idn_lookalike_of_allowed_host_falls_back",
        "https://\u{0430}pp.example.com/",
    )
    .await;
}

/// CVE-2020-11053 class: leading whitespace before `//`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leading_whitespace_rd_falls_back() {
    login_rd_falls_back("leading_whitespace_rd_falls_back", " //evil.test/").await;
}

/// oauth2-proxy CVE-2020-5233 / bitly/oauth2_proxy#478 class: three slashes are still a
/// network path to browsers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn triple_slash_rd_falls_back() {
    login_rd_falls_back("triple_slash_rd_falls_back", "///evil.test/").await;
}

/// README ("encoded variants fall back"): `/%2F%2Fevil.test` and `/%5Cevil.test` must not
/// turn into another host for a server or browser that decodes once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn percent_encoded_slash_variants_stay_on_origin() {
    let stack = Stack::full().await;
    for rd in [
        "/%2F%2Fevil.test",
        "/%5Cevil.test",
        "/%2f%5cevil.test",
        "%2F%2Fevil.test",
    ] {
        let location = landing_after_login(&stack, rd).await;
        assert_same_origin(
            &format!("percent_encoded_slash_variants_stay_on_origin {rd}"),
            &stack,
            &location,
        );
    }
}

/// README (`rd` accepts same-origin paths and `allowed_redirect_hosts`), control: a
/// relative path, with its query, and an allowed absolute host are kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn safe_rd_targets_are_kept() {
    let stack = Stack::full().await;
    assert_eq!(
        landing_after_login(&stack, "/echo/after?x=1").await,
        "/echo/after?x=1",
        "relative rd"
    );
    assert_eq!(
        landing_after_login(&stack, "https://app.example.com/ok").await,
        "https://app.example.com/ok",
        "allowed host"
    );
}

// ----- rd after sign-out -------------------------------------------------------------

/// mod_auth_openidc CVE-2019-14857 (open redirect at logout with `//`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_out_protocol_relative_rd_falls_back() {
    sign_out_rd_falls_back("sign_out_protocol_relative_rd_falls_back", "//evil.test/").await;
}

/// mod_auth_openidc CVE-2019-20479 (logout with `/\`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_out_slash_backslash_rd_falls_back() {
    sign_out_rd_falls_back("sign_out_slash_backslash_rd_falls_back", "/\\evil.test/").await;
}

/// mod_auth_openidc CVE-2021-39191 (open redirect with a tab, `/\t`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_out_tab_rd_falls_back() {
    sign_out_rd_falls_back("sign_out_tab_rd_falls_back", "/\t/evil.test/").await;
}

/// mod_auth_openidc CVE-2021-32786 (logout redirected to any absolute URL) and Vouch
/// Proxy's `post_logout_redirect_uris` allow-list (vouch/vouch-proxy#326).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_out_foreign_absolute_rd_falls_back() {
    sign_out_rd_falls_back(
        "sign_out_foreign_absolute_rd_falls_back",
        "https://evil.test/",
    )
    .await;
}

/// OpenID RP-Initiated Logout 1.0 §3 (`post_logout_redirect_uri` is the RP's): with a
/// session, the URI sent to the IdP stays on the gateway for a foreign `rd`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_logout_redirect_uri_stays_on_the_gateway() {
    let stack = Stack::full().await;
    let case = "post_logout_redirect_uri_stays_on_the_gateway";
    let eve = stack.login("eve").await;
    let cookie = eve.cookie_header();
    let reply = stack
        .request(
            "POST",
            "/oauth2/sign_out?rd=%2F%2Fevil.test%2F",
            &[("cookie", &cookie), ("content-length", "0")],
        )
        .await;
    assert_eq!(reply.status, 302, "{case}\n{reply}");
    let end_session = Url::parse(reply.header("location").unwrap()).expect("end-session URL");
    assert!(
        end_session.as_str().starts_with(stack.idp().issuer()),
        "{case}: {end_session}"
    );
    assert_eq!(
        query_param(&end_session, "post_logout_redirect_uri"),
        Some(stack.url_for("/")),
        "{case}: {end_session}"
    );
}

// ----- sign-out CSRF -----------------------------------------------------------------

fn sign_out_target() -> &'static str {
    "/oauth2/sign_out?rd=%2Fbye"
}

async fn sign_out_get(stack: &Stack, session: &Session, headers: &[(&str, &str)]) -> Reply {
    let cookie = session.cookie_header();
    let mut all = vec![("accept", HTML), ("cookie", cookie.as_str())];
    all.extend_from_slice(headers);
    stack.request("GET", sign_out_target(), &all).await
}

/// The confirmation page: 200 HTML with a POST form, the session not cleared.
fn assert_confirmation(case: &str, reply: &Reply) {
    assert_eq!(
        reply.status, 200,
        "{case}: must show the confirmation page\n{reply}"
    );
    assert!(
        reply
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/html")),
        "{case}\n{reply}"
    );
    assert!(
        reply.body.to_ascii_lowercase().contains("method=\"post\""),
        "{case}: no POST form\n{reply}"
    );
    for cookie in reply.header_all("set-cookie") {
        assert!(
            !cookie.starts_with("portcullis="),
            "{case}: the session cookie was cleared: {cookie}"
        );
    }
}

/// A cross-site request must leave the session alone: the confirmation page, session ok.
async fn get_shows_confirmation(case: &str, headers: &[(&str, &str)]) {
    let stack = Stack::full().await;
    let eve = stack.login("eve").await;
    let reply = sign_out_get(&stack, &eve, headers).await;
    assert_confirmation(case, &reply);
    assert!(stack.session_works(&eve).await, "{case}: the session ended");
}

/// The request ends the session: a redirect, the cookie cleared, the session dead.
async fn assert_signed_out(stack: &Stack, case: &str, session: &Session, reply: &Reply) {
    assert_eq!(reply.status, 302, "{case}: must sign out\n{reply}");
    assert!(
        reply
            .header_all("set-cookie")
            .iter()
            .any(|c| c.starts_with("portcullis=")),
        "{case}: the session cookie is not cleared\n{reply}"
    );
    assert!(
        !stack.session_works(session).await,
        "{case}: the session still works"
    );
}

/// OWASP CSRF Cheat Sheet (logout CSRF) + W3C Fetch Metadata (`Sec-Fetch-Site:
/// cross-site`): an image or link on another site does not sign the user out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_get_sign_out_shows_confirmation() {
    get_shows_confirmation(
        "cross_site_get_sign_out_shows_confirmation",
        &[
            ("sec-fetch-site", "cross-site"),
            ("sec-fetch-mode", "no-cors"),
            ("sec-fetch-dest", "image"),
        ],
    )
    .await;
}

/// W3C Fetch Metadata: `same-site` is a sibling origin, not this one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_site_get_sign_out_shows_confirmation() {
    get_shows_confirmation(
        "same_site_get_sign_out_shows_confirmation",
        &[
            ("sec-fetch-site", "same-site"),
            ("sec-fetch-mode", "navigate"),
        ],
    )
    .await;
}

/// The issue: without Fetch Metadata and without a same-origin `Referer` a GET proves
/// nothing about where it came from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_sign_out_without_provenance_shows_confirmation() {
    get_shows_confirmation("get_sign_out_without_provenance_shows_confirmation", &[]).await;
}

/// OWASP CSRF Cheat Sheet (verifying origin with standard headers): a foreign `Referer`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_referer_get_sign_out_shows_confirmation() {
    get_shows_confirmation(
        "foreign_referer_get_sign_out_shows_confirmation",
        &[("referer", "https://evil.test/page")],
    )
    .await;
}

/// OWASP CSRF Cheat Sheet: `Referer` compared by origin, not by prefix (a lookalike host
/// starting with the gateway's address, and a userinfo trick).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookalike_referer_get_sign_out_shows_confirmation() {
    let stack = Stack::full().await;
    let case = "lookalike_referer_get_sign_out_shows_confirmation";
    let eve = stack.login("eve").await;
    for referer in [
        format!("{}.evil.test/", stack.url()),
        format!("{}@evil.test/", stack.url()),
        format!("https://{}/", stack.host()),
    ] {
        let reply = sign_out_get(&stack, &eve, &[("referer", &referer)]).await;
        assert_confirmation(&format!("{case} ({referer})"), &reply);
    }
    assert!(stack.session_works(&eve).await, "{case}: the session ended");
}

/// W3C Fetch Metadata takes precedence: `cross-site` with a same-origin `Referer` (which
/// a page can set with `Referrer-Policy: unsafe-url` tricks) is still cross-site.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_fetch_metadata_wins_over_same_origin_referer() {
    let stack = Stack::full().await;
    let eve = stack.login("eve").await;
    let referer = stack.url_for("/echo/page");
    let reply = sign_out_get(
        &stack,
        &eve,
        &[("sec-fetch-site", "cross-site"), ("referer", &referer)],
    )
    .await;
    assert_confirmation(
        "cross_site_fetch_metadata_wins_over_same_origin_referer",
        &reply,
    );
    assert!(stack.session_works(&eve).await);
}

/// The issue: a same-origin navigation (`Sec-Fetch-Site: same-origin`) still signs out
/// with a GET.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_origin_get_sign_out_ends_the_session() {
    let stack = Stack::full().await;
    let eve = stack.login("eve").await;
    let reply = sign_out_get(
        &stack,
        &eve,
        &[
            ("sec-fetch-site", "same-origin"),
            ("sec-fetch-mode", "navigate"),
        ],
    )
    .await;
    assert_signed_out(
        &stack,
        "same_origin_get_sign_out_ends_the_session",
        &eve,
        &reply,
    )
    .await;
}

/// W3C Fetch Metadata (`none`: typed into the address bar or a bookmark).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_typed_get_sign_out_ends_the_session() {
    let stack = Stack::full().await;
    let eve = stack.login("eve").await;
    let reply = sign_out_get(
        &stack,
        &eve,
        &[("sec-fetch-site", "none"), ("sec-fetch-user", "?1")],
    )
    .await;
    assert_signed_out(
        &stack,
        "user_typed_get_sign_out_ends_the_session",
        &eve,
        &reply,
    )
    .await;
}

/// The issue (without Fetch Metadata, a same-origin `Referer` counts).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_origin_referer_get_sign_out_ends_the_session() {
    let stack = Stack::full().await;
    let eve = stack.login("eve").await;
    let referer = stack.url_for("/echo/page");
    let reply = sign_out_get(&stack, &eve, &[("referer", &referer)]).await;
    assert_signed_out(
        &stack,
        "same_origin_referer_get_sign_out_ends_the_session",
        &eve,
        &reply,
    )
    .await;
}

/// RFC 6454 §7.3 (`Origin`) + OWASP CSRF Cheat Sheet: a cross-origin POST is refused
/// with 403 and the session stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_origin_post_sign_out_is_refused() {
    let stack = Stack::full().await;
    let case = "cross_origin_post_sign_out_is_refused";
    let eve = stack.login("eve").await;
    let cookie = eve.cookie_header();
    let reply = stack
        .request(
            "POST",
            sign_out_target(),
            &[
                ("cookie", &cookie),
                ("origin", "https://evil.test"),
                ("content-type", "application/x-www-form-urlencoded"),
                ("content-length", "0"),
            ],
        )
        .await;
    assert_eq!(reply.status, 403, "{case}\n{reply}");
    assert!(stack.session_works(&eve).await, "{case}: the session ended");
}

/// RFC 6454 §7.3 (`Origin: null` from sandboxed frames, `data:` pages, redirects): refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn null_origin_post_sign_out_is_refused() {
    let stack = Stack::full().await;
    let case = "null_origin_post_sign_out_is_refused";
    let eve = stack.login("eve").await;
    let cookie = eve.cookie_header();
    let reply = stack
        .request(
            "POST",
            sign_out_target(),
            &[
                ("cookie", &cookie),
                ("origin", "null"),
                ("content-length", "0"),
            ],
        )
        .await;
    assert_eq!(reply.status, 403, "{case}\n{reply}");
    assert!(stack.session_works(&eve).await, "{case}: the session ended");
}

/// The issue ("scripts that POST without Origin keep working").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script_post_sign_out_without_origin_still_works() {
    let stack = Stack::full().await;
    let eve = stack.login("eve").await;
    let cookie = eve.cookie_header();
    let reply = stack
        .request(
            "POST",
            sign_out_target(),
            &[("cookie", &cookie), ("content-length", "0")],
        )
        .await;
    assert_signed_out(
        &stack,
        "script_post_sign_out_without_origin_still_works",
        &eve,
        &reply,
    )
    .await;
}

/// The issue: the confirmation form's POST carries a token bound to the session, the
/// token differs between sessions, and submitting the form signs out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirmation_form_carries_a_session_bound_token() {
    let stack = Stack::full().await;
    let case = "confirmation_form_carries_a_session_bound_token";
    let eve = stack.login("eve").await;
    let boss = stack.login("boss").await;
    let form_of = |reply: &Reply| -> (String, Vec<(String, String)>) {
        let doc = Html::parse_document(&reply.body);
        let form = doc
            .select(&Selector::parse("form").unwrap())
            .next()
            .unwrap_or_else(|| panic!("{case}: no form\n{reply}"));
        let action = form.value().attr("action").unwrap_or("").to_string();
        let fields = form
            .select(&Selector::parse("input[name]").unwrap())
            .map(|i| {
                (
                    i.value().attr("name").unwrap().to_string(),
                    i.value().attr("value").unwrap_or("").to_string(),
                )
            })
            .collect();
        (action, fields)
    };
    let eve_page = sign_out_get(&stack, &eve, &[("sec-fetch-site", "cross-site")]).await;
    let boss_page = sign_out_get(&stack, &boss, &[("sec-fetch-site", "cross-site")]).await;
    assert_confirmation(case, &eve_page);
    let (action, eve_fields) = form_of(&eve_page);
    let (_, boss_fields) = form_of(&boss_page);
    let token = |fields: &[(String, String)]| fields.iter().find(|(_, v)| v.len() >= 16).cloned();
    let eve_token = token(&eve_fields)
        .unwrap_or_else(|| panic!("{case}: no token in the form: {eve_fields:?}"));
    let boss_token = token(&boss_fields)
        .unwrap_or_else(|| panic!("{case}: no token in the form: {boss_fields:?}"));
    assert_ne!(
        eve_token.1, boss_token.1,
        "{case}: the token is not bound to the session"
    );
    assert!(
        !eve_page.body.contains(&eve.cookie),
        "{case}: the session id itself is in the page"
    );
    // Submit the form the way the browser would (same origin).
    let body: String = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(eve_fields.iter())
        .finish();
    let cookie = eve.cookie_header();
    let origin = stack.url();
    let action = if action.is_empty() {
        sign_out_target().to_string()
    } else {
        action.replace("&amp;", "&")
    };
    let len = body.len().to_string();
    let mut bytes = request_bytes(
        &stack.host(),
        "POST",
        &action,
        &[
            ("cookie", &cookie),
            ("origin", &origin),
            ("content-type", "application/x-www-form-urlencoded"),
            ("content-length", &len),
        ],
        b"",
    );
    bytes.extend_from_slice(body.as_bytes());
    let reply = stack.send_bytes(&bytes).await;
    assert_signed_out(&stack, case, &eve, &reply).await;
    assert!(
        stack.session_works(&boss).await,
        "{case}: the other session is untouched"
    );
}

/// RFC 9700 §4.16 (clickjacking): the confirmation page cannot be framed by another site
/// to trick the click.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirmation_page_cannot_be_framed() {
    let stack = Stack::full().await;
    let case = "confirmation_page_cannot_be_framed";
    let eve = stack.login("eve").await;
    let reply = sign_out_get(&stack, &eve, &[("sec-fetch-site", "cross-site")]).await;
    assert_confirmation(case, &reply);
    let csp = reply.header("content-security-policy").unwrap_or_default();
    let xfo = reply.header("x-frame-options").unwrap_or_default();
    assert!(
        csp.contains("frame-ancestors 'none'") || xfo.eq_ignore_ascii_case("deny"),
        "{case}: frame-ancestors/X-Frame-Options missing\n{reply}"
    );
}

/// README (the session is deleted server-side, a replayed cookie stops working at once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_out_cookie_is_dead_everywhere() {
    let stack = Stack::full().await;
    let case = "signed_out_cookie_is_dead_everywhere";
    let eve = stack.login("eve").await;
    let cookie = eve.cookie_header();
    let out = stack
        .request(
            "POST",
            sign_out_target(),
            &[("cookie", &cookie), ("content-length", "0")],
        )
        .await;
    assert_eq!(out.status, 302, "{case}\n{out}");
    let traffic = stack.upstream_traffic();
    let reply = stack.get_as(&eve, "/secret").await;
    assert_eq!(
        reply.status, 302,
        "{case}: the replayed cookie must need a login\n{reply}"
    );
    let userinfo = stack
        .request("GET", "/oauth2/userinfo", &[("cookie", &cookie)])
        .await;
    assert_eq!(userinfo.status, 401, "{case}\n{userinfo}");
    assert_eq!(stack.upstream_traffic(), traffic, "{case}: reached nginx");
}

/// README `session.sign_out_requires_post = true`: a same-origin GET still only shows the
/// confirmation page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_out_requires_post_keeps_same_origin_get_harmless() {
    let stack = Stack::builder()
        .node_idp()
        .session("sign_out_requires_post = true")
        .start()
        .await;
    let eve = stack.login("eve").await;
    let reply = sign_out_get(&stack, &eve, &[("sec-fetch-site", "same-origin")]).await;
    assert_confirmation(
        "sign_out_requires_post_keeps_same_origin_get_harmless",
        &reply,
    );
    assert!(stack.session_works(&eve).await);
}
