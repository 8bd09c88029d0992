//! Login: the OAuth 2.0 Authorization Code flow with PKCE and OpenID Connect against the
//! node test IdP (`tests/idp`, oidc-provider), driven hop by hop by a browser-like client
//! (`tests/common/login.rs`), plus the in-process mock IdP (`tests/common/mock_idp`) for ID
//! tokens a real IdP never sends, and one test in headless Chromium.
//!
//! Every test starts its own IdP, echo upstream and gateway on loopback ports chosen at
//! run time. The gateway runs in-process, on a listener bound before the IdP is told its
//! redirect URI; tests that read the gateway's log or restart it use the `portcullis`
//! process, whose port is picked first (three candidates are registered, in case one is
//! taken before the gateway binds it).

mod common;

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use url::Url;

use common::chromium::{chromium, login_in_chromium};
use common::gateway::{try_start_gateway, wait_for_readyz, GatewayListener};
use common::idp::{Idp, IdpBuilder};
use common::login::{
    flip_char, query_param, random_hex, with_query_param, Browser, CompletedLogin, Hop, IdpPage,
    IdpStep, LOGIN_COOKIE_PREFIX, SESSION_COOKIE,
};
use common::mock_idp::{ClientAuth, IdTokenFault, MockIdp};
use common::{free_port, EchoUpstream, Echoed, Gateway, GatewayAddr, InProcessGateway};

const ALICE: &str = "alice";
const ALICE_EMAIL: &str = "alice@corp.test";
const ALICE_GROUPS: &str = "admins,eng";

/// `USERS_JSON` for the IdP.
fn users() -> Value {
    json!({ "alice": { "email": ALICE_EMAIL, "groups": ["admins", "eng"] } })
}

// ----- gateway configuration ------------------------------------------------------------

#[derive(Debug, Clone)]
struct GatewayOptions {
    client_id: String,
    /// `None`: a public client.
    client_secret: Option<String>,
    /// `session.secret`: the first seals, all open.
    secrets: Vec<String>,
    /// Adds a public route `/public` (before the login-protected `/`).
    public_route: bool,
    log_filter: &'static str,
    /// Extra lines for the `[oidc]` section.
    extra_oidc: String,
}

impl Default for GatewayOptions {
    fn default() -> Self {
        GatewayOptions {
            client_id: "gateway".to_string(),
            client_secret: Some(format!("client-secret-{}", random_hex(16))),
            secrets: vec![session_secret()],
            public_route: false,
            log_filter: "info",
            extra_oidc: String::new(),
        }
    }
}

/// A fresh 64-character session secret.
fn session_secret() -> String {
    random_hex(32)
}

fn gateway_toml(
    listen: &str,
    public_url: &str,
    issuer: &str,
    upstream: &str,
    o: &GatewayOptions,
) -> String {
    let client_secret = o
        .client_secret
        .as_ref()
        .map(|s| format!("client_secret = \"{s}\"\n"))
        .unwrap_or_default();
    let secrets: Vec<String> = o.secrets.iter().map(|s| format!("\"{s}\"")).collect();
    let public_route = if o.public_route {
        format!("[[route]]\npath = \"/public\"\nupstream = \"{upstream}\"\npublic = true\n\n")
    } else {
        String::new()
    };
    format!(
        r#"[server]
listen = "{listen}"
public_url = "{public_url}"

[log]
format = "json"
filter = "{filter}"

[oidc]
issuer = "{issuer}"
client_id = "{client_id}"
{client_secret}scopes = ["openid", "email", "profile", "offline_access"]
groups_claim = "groups"
{extra_oidc}

[session]
secret = [{secrets}]
cookie_secure = false
idle_timeout = "8h"
absolute_timeout = "24h"
login_timeout = "10m"

{public_route}[[route]]
path = "/"
upstream = "{upstream}"
public = false
"#,
        filter = o.log_filter,
        client_id = o.client_id,
        extra_oidc = o.extra_oidc,
        secrets = secrets.join(", "),
    )
}

/// Where tests send the browser after sign-out (registered at the IdP as post-logout
/// redirect URIs).
const SIGN_OUT_RETURN_PATHS: [&str; 2] = ["/", "/bye"];

fn callback_uri(port: u16) -> String {
    format!("http://127.0.0.1:{port}/oauth2/callback")
}

// ----- the stack under test -------------------------------------------------------------

/// The node test IdP, an echo upstream and the gateway (in-process unless a test needs
/// the process), wired together.
struct Stack<G = InProcessGateway> {
    idp: Idp,
    upstream: EchoUpstream,
    gateway: G,
    port: u16,
    /// The gateway's client at the IdP (id, secret; `None`: public), for introspection.
    client_id: String,
    client_secret: Option<String>,
}

impl Stack {
    /// Confidential client `gateway`, user `alice` with her email and groups.
    async fn start() -> Self {
        Self::start_with(GatewayOptions::default(), |idp| idp).await
    }

    async fn with_options(options: GatewayOptions) -> Self {
        Self::start_with(options, |idp| idp).await
    }

    /// The IdP gets `users()` and the gateway's client (id, secret); `customize` can add
    /// to or override its environment.
    async fn start_with(
        options: GatewayOptions,
        customize: impl FnOnce(IdpBuilder) -> IdpBuilder,
    ) -> Self {
        let upstream = EchoUpstream::start().await;
        let listener = GatewayListener::bind().await;
        let port = listener.port();
        let idp = start_idp(&options, &[port], customize).await;
        let gateway = InProcessGateway::builder(&Self::toml(port, &idp, &upstream, &options))
            .listener(listener)
            .start()
            .await;
        wait_for_readyz(&gateway).await;
        Stack {
            idp,
            upstream,
            gateway,
            port,
            client_id: options.client_id.clone(),
            client_secret: options.client_secret.clone(),
        }
    }
}

/// The node test IdP with `users()` and the gateway's client (id, secret), redirecting to
/// the gateway on any of `ports`; `customize` can add to or override its environment.
async fn start_idp(
    options: &GatewayOptions,
    ports: &[u16],
    customize: impl FnOnce(IdpBuilder) -> IdpBuilder,
) -> Idp {
    let mut idp = Idp::builder()
        .users(&users())
        .client(&options.client_id, options.client_secret.as_deref());
    let mut post_logout = Vec::new();
    for port in ports {
        idp = idp.redirect_uri(callback_uri(*port));
        for path in SIGN_OUT_RETURN_PATHS {
            post_logout.push(format!("http://127.0.0.1:{port}{path}"));
        }
    }
    idp = idp.env("POST_LOGOUT_REDIRECT_URIS", post_logout.join(","));
    customize(idp).start().await
}

impl Stack<Gateway> {
    /// The gateway as a `portcullis` process (for its log, or to kill and restart it).
    async fn start_process(options: GatewayOptions) -> Self {
        let upstream = EchoUpstream::start().await;
        let mut ports = vec![free_port()];
        while ports.len() < 3 {
            let port = free_port();
            if !ports.contains(&port) {
                ports.push(port);
            }
        }
        let idp = start_idp(&options, &ports, |idp| idp).await;
        for port in ports.iter().copied() {
            let toml = Self::toml(port, &idp, &upstream, &options);
            if let Some(gateway) = try_start_gateway(&toml).await {
                return Stack {
                    idp,
                    upstream,
                    gateway,
                    port,
                    client_id: options.client_id.clone(),
                    client_secret: options.client_secret.clone(),
                };
            }
        }
        panic!("none of the gateway ports {ports:?} could be bound");
    }

    /// Kills the gateway and starts a new one on the same port with `options` (sessions in
    /// the memory store are gone; login cookies are in the browser and survive).
    async fn restart_gateway(&mut self, options: &GatewayOptions) {
        common::process::signal(self.gateway.pid(), "KILL");
        self.gateway
            .wait_exit(Duration::from_secs(10))
            .await
            .expect("killed gateway exits");
        let toml = Self::toml(self.port, &self.idp, &self.upstream, options);
        self.gateway = try_start_gateway(&toml)
            .await
            .unwrap_or_else(|| panic!("port {} was taken during the restart", self.port));
    }
}

impl<G: GatewayAddr> Stack<G> {
    fn toml(port: u16, idp: &Idp, upstream: &EchoUpstream, options: &GatewayOptions) -> String {
        let listen = format!("127.0.0.1:{port}");
        gateway_toml(
            &listen,
            &format!("http://{listen}"),
            idp.issuer(),
            &upstream.url(),
            options,
        )
    }

    fn url(&self) -> String {
        self.gateway.url()
    }

    fn url_for(&self, path: &str) -> String {
        self.gateway.url_for(path)
    }

    /// The whole login as alice, starting with a navigation to `path`.
    async fn login(&self, browser: &Browser, path: &str) -> CompletedLogin {
        browser.login(&self.url(), path, ALICE).await
    }

    /// `token` is a live access token of the IdP for `sub`, issued to the gateway's client
    /// (introspection); returns the introspection answer.
    async fn assert_token_active(&self, token: &str, sub: &str) -> Value {
        self.idp
            .assert_token_active(token, &self.client_id, self.client_secret.as_deref(), sub)
            .await
    }
}

/// The mock IdP, an echo upstream and the gateway (in-process unless a test needs the
/// process). The mock accepts any redirect URI, so the harness can pick the port itself.
struct MockStack<G = InProcessGateway> {
    idp: MockIdp,
    upstream: EchoUpstream,
    gateway: G,
}

fn mock_toml(idp: &MockIdp, upstream: &EchoUpstream, options: &GatewayOptions) -> String {
    gateway_toml(
        "@LISTEN@",
        "@PUBLIC_URL@",
        idp.issuer(),
        &upstream.url(),
        options,
    )
}

impl MockStack {
    async fn start(options: GatewayOptions) -> Self {
        Self::start_with(MockIdp::start().await, options).await
    }

    async fn start_with(idp: MockIdp, options: GatewayOptions) -> Self {
        let upstream = EchoUpstream::start().await;
        let gateway = InProcessGateway::start(&mock_toml(&idp, &upstream, &options)).await;
        wait_for_readyz(&gateway).await;
        MockStack {
            idp,
            upstream,
            gateway,
        }
    }
}

impl MockStack<Gateway> {
    /// The gateway as a `portcullis` process, for its log.
    async fn start_process(options: GatewayOptions) -> Self {
        let idp = MockIdp::start().await;
        let upstream = EchoUpstream::start().await;
        let gateway = Gateway::start(&mock_toml(&idp, &upstream, &options)).await;
        wait_for_readyz(&gateway).await;
        MockStack {
            idp,
            upstream,
            gateway,
        }
    }
}

impl<G: GatewayAddr> MockStack<G> {
    /// Navigates to `path`, passes the mock's authorization endpoint (no pages) and loads
    /// the callback; returns the callback's response.
    async fn login_attempt(&self, browser: &Browser, path: &str) -> Hop {
        let started = browser.begin_login(&self.gateway.url(), path).await;
        let IdpStep::Left(callback) = browser.idp_open(&started.authorize_url).await else {
            panic!("the mock IdP showed a page");
        };
        browser.callback(&callback).await
    }
}

// ----- shared assertions ----------------------------------------------------------------

/// The upstream saw alice: a Bearer access token that is live at the IdP (introspection:
/// active, sub = alice, issued to the gateway's client) and her identity headers. Returns
/// the token.
async fn assert_upstream_saw_alice(stack: &Stack<impl GatewayAddr>, echo: &Echoed) -> String {
    let authorization = echo
        .header("authorization")
        .expect("the upstream got no Authorization header");
    let token = authorization
        .strip_prefix("Bearer ")
        .unwrap_or_else(|| panic!("not a Bearer token: {authorization}"));
    stack.assert_token_active(token, ALICE).await;
    assert_eq!(echo.header("x-forwarded-user"), Some(ALICE));
    assert_eq!(echo.header("x-forwarded-email"), Some(ALICE_EMAIL));
    assert_eq!(echo.header("x-forwarded-groups"), Some(ALICE_GROUPS));
    token.to_string()
}

/// A callback the gateway refused: `status`, an HTML page that must not leak the URL
/// through Referer, no session cookie, and the browser has no session afterwards.
async fn assert_login_refused(
    gateway: &impl GatewayAddr,
    browser: &Browser,
    hop: &Hop,
    status: u16,
) {
    assert_eq!(hop.status.as_u16(), status, "callback\n{hop}");
    let content_type = hop.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("text/html"),
        "a refused login shows an HTML page\n{hop}"
    );
    assert_eq!(hop.header("referrer-policy"), Some("no-referrer"), "{hop}");
    assert!(
        hop.set_cookie(SESSION_COOKIE).is_none(),
        "a refused login must not set a session cookie\n{hop}"
    );
    assert_no_session(gateway, browser).await;
}

/// `/oauth2/userinfo` says 401 for this browser.
async fn assert_no_session(gateway: &impl GatewayAddr, browser: &Browser) {
    let me = browser.api_get(&gateway.url_for("/oauth2/userinfo")).await;
    assert_eq!(
        me.status,
        StatusCode::UNAUTHORIZED,
        "expected no session\n{me}"
    );
}

/// No session: an API request gets 401 + `WWW-Authenticate: Bearer` + JSON, a browser
/// navigation is sent to log in; neither reaches the upstream.
async fn assert_not_a_session(
    gateway: &impl GatewayAddr,
    upstream: &EchoUpstream,
    browser: &Browser,
) {
    let before = upstream.received().len();
    let api = browser.api_get(&gateway.url_for("/api/data")).await;
    assert_unauthorized_json(&api);
    let nav = browser.navigate(&gateway.url_for("/page?a=1")).await;
    assert_eq!(nav.status, StatusCode::FOUND, "{nav}");
    assert_eq!(nav.location_raw(), "/oauth2/start?rd=%2Fpage%3Fa%3D1");
    assert_eq!(
        upstream.received().len(),
        before,
        "the upstream was reached"
    );
}

fn assert_unauthorized_json(hop: &Hop) {
    assert_eq!(hop.status, StatusCode::UNAUTHORIZED, "{hop}");
    assert_eq!(hop.header("www-authenticate"), Some("Bearer"), "{hop}");
    assert!(
        hop.header("location").is_none(),
        "a 401 never redirects\n{hop}"
    );
    assert!(
        hop.header("content-type")
            .unwrap_or_default()
            .starts_with("application/json"),
        "{hop}"
    );
    assert_eq!(hop.json()["error"], "unauthorized", "{hop}");
}

/// The callback cleared the login cookie of `started` (empty value, Max-Age=0).
fn assert_login_cookie_cleared(hop: &Hop, name: &str) {
    let cleared = hop
        .set_cookie(name)
        .unwrap_or_else(|| panic!("the callback did not clear {name}\n{hop}"));
    assert_eq!(cleared.value(), "", "{hop}");
    assert_eq!(
        cleared.max_age().map(|a| a.whole_seconds()),
        Some(0),
        "{hop}"
    );
}

/// Is `value` a 43-character base64url string (256 bits, no padding)?
fn is_base64url_256(value: &str) -> bool {
    value.len() == 43
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

// ----- 1. the whole flow ------------------------------------------------------------------

#[tokio::test]
async fn full_login_forwards_verified_bearer_and_user_headers() {
    let stack = Stack::start().await;
    let browser = Browser::new();
    let path = "/dash/page?x=1&y=2";

    // Gateway → /oauth2/start → IdP authorization endpoint, with PKCE S256, state, nonce.
    let started = browser.begin_login(&stack.url(), path).await;
    let authorize = &started.authorize_url;
    let discovery = stack.idp.discovery().await;
    let mut endpoint = authorize.clone();
    endpoint.set_query(None);
    assert_eq!(
        endpoint.as_str(),
        discovery["authorization_endpoint"].as_str().unwrap()
    );
    let param = |name: &str| {
        query_param(authorize, name).unwrap_or_else(|| panic!("no {name} in {authorize}"))
    };
    assert_eq!(param("response_type"), "code");
    assert_eq!(param("client_id"), "gateway");
    assert_eq!(param("code_challenge_method"), "S256");
    assert!(is_base64url_256(&param("code_challenge")), "{authorize}");
    assert!(param("state").len() >= 22, "state too short: {authorize}");
    assert!(param("nonce").len() >= 22, "nonce too short: {authorize}");
    assert_ne!(param("nonce"), param("state"));
    assert_eq!(param("redirect_uri"), stack.url_for("/oauth2/callback"));
    let scopes = param("scope");
    for scope in ["openid", "email", "profile", "offline_access"] {
        assert!(scopes.split(' ').any(|s| s == scope), "scope {scopes:?}");
    }
    assert_eq!(started.start.header("cache-control"), Some("no-store"));
    let login_cookie = started
        .start
        .set_cookie(&started.login_cookie_name)
        .unwrap();
    assert_eq!(login_cookie.http_only(), Some(true));
    assert_eq!(login_cookie.same_site(), Some(cookie::SameSite::Lax));
    assert_eq!(login_cookie.path(), Some("/"));
    assert_ne!(login_cookie.secure(), Some(true));
    let max_age = login_cookie.max_age().map(|a| a.whole_seconds());
    assert!(
        max_age.is_some_and(|s| s > 0 && s <= 600),
        "the login cookie lives at most login_timeout: {login_cookie}"
    );
    assert!(
        !login_cookie.value().contains(&started.state) && !login_cookie.value().contains("dash"),
        "the login cookie must be sealed: {login_cookie}"
    );

    // IdP: login form, then consent, then back to the gateway's callback.
    let idp = browser.idp_sign_in(authorize, ALICE).await;
    assert_eq!(idp.pages, vec![IdpPage::Login, IdpPage::Consent]);
    let callback_url = &idp.redirect;
    assert_eq!(
        callback_url.as_str().split('?').next().unwrap(),
        stack.url_for("/oauth2/callback")
    );
    assert_eq!(
        query_param(callback_url, "state"),
        Some(started.state.clone())
    );
    assert_eq!(
        query_param(callback_url, "iss").as_deref(),
        Some(stack.idp.issuer())
    );
    assert!(query_param(callback_url, "code").is_some());

    // Callback: a fresh session cookie, the login cookie cleared, back to rd.
    let callback = browser.callback(callback_url).await;
    assert_eq!(callback.status, StatusCode::FOUND, "{callback}");
    assert_eq!(callback.location_raw(), path);
    assert_eq!(callback.header("referrer-policy"), Some("no-referrer"));
    assert_eq!(callback.header("cache-control"), Some("no-store"));
    let session = callback.set_cookie(SESSION_COOKIE).unwrap();
    assert!(is_base64url_256(session.value()), "session id {session}");
    assert_eq!(session.http_only(), Some(true));
    assert_eq!(session.same_site(), Some(cookie::SameSite::Lax));
    assert_eq!(session.path(), Some("/"));
    assert_ne!(session.secure(), Some(true));
    assert_login_cookie_cleared(&callback, &started.login_cookie_name);
    assert!(browser.cookie(&started.login_cookie_name).is_none());

    // The original request reaches the upstream with the user's identity.
    let landing = browser.follow(&callback).await;
    let echo = landing.echo();
    assert_eq!(echo.path, path, "rd round-trip");
    assert_eq!(echo.method, "GET");
    let token = assert_upstream_saw_alice(&stack, &echo).await;
    let introspected = stack.assert_token_active(&token, ALICE).await;
    let scopes = introspected["scope"].as_str().unwrap_or_default();
    for scope in ["openid", "email", "profile", "offline_access"] {
        assert!(
            scopes.split(' ').any(|s| s == scope),
            "the access token lacks scope {scope}: {introspected}"
        );
    }
    for cookie in echo.header_all("cookie") {
        assert!(
            !cookie.contains("portcullis"),
            "gateway cookie upstream: {cookie}"
        );
    }

    // The session is usable for API calls too, and userinfo shows the user (no token).
    let api = browser.api_get(&stack.url_for("/api/v1/items")).await;
    assert_eq!(api.echo().header("x-forwarded-user"), Some(ALICE));
    let me = browser.api_get(&stack.url_for("/oauth2/userinfo")).await;
    assert_eq!(me.status, StatusCode::OK, "{me}");
    assert_eq!(
        me.json(),
        json!({ "sub": ALICE, "email": ALICE_EMAIL, "name": "Alice", "groups": ["admins", "eng"] })
    );
    assert!(!me.body.contains(&token));
}

#[tokio::test]
async fn rd_outside_the_gateway_falls_back_to_root() {
    let stack = Stack::start().await;
    let browser = Browser::new();
    for (rd, expected) in [
        ("//evil.test/x", "/"),
        ("https://evil.test/x", "/"),
        ("/\\evil.test/x", "/"),
        ("/ok/path?a=1&b=%2F", "/ok/path?a=1&b=%2F"),
    ] {
        let started = browser.start_login(&stack.url(), rd).await;
        let idp = browser.idp_sign_in(&started.authorize_url, ALICE).await;
        let callback = browser.callback(&idp.redirect).await;
        assert_eq!(callback.status, StatusCode::FOUND, "rd {rd:?}\n{callback}");
        assert_eq!(callback.location_raw(), expected, "rd {rd:?}");
    }
}

/// An `rd` with non-ASCII characters (e.g. a link built with `encodeURIComponent`) must
/// come back as a valid `Location`: a URI-reference is ASCII only, so the gateway has to
/// percent-encode the path (or fall back to `/`), not send raw UTF-8 bytes.
#[tokio::test]
async fn rd_with_non_ascii_characters_redirects_with_an_ascii_location() {
    let stack = Stack::start().await;
    let browser = Browser::new();
    let started = browser.start_login(&stack.url(), "/café/ü?q=ä").await;
    let idp = browser.idp_sign_in(&started.authorize_url, ALICE).await;
    let callback = browser.callback(&idp.redirect).await;
    assert_eq!(callback.status, StatusCode::FOUND, "{callback}");
    let location = callback
        .headers
        .get("location")
        .unwrap_or_else(|| panic!("302 without a Location header\n{callback}"))
        .as_bytes();
    assert!(
        location.is_ascii(),
        "Location has raw non-ASCII bytes: {:?}",
        String::from_utf8_lossy(location)
    );
    let location = std::str::from_utf8(location).unwrap();
    assert!(
        ["/caf%C3%A9/%C3%BC?q=%C3%A4", "/"].contains(&location),
        "Location {location:?}"
    );
}

// ----- 2. client types -------------------------------------------------------------------

#[tokio::test]
async fn public_client_logs_in() {
    let options = GatewayOptions {
        client_secret: None,
        ..GatewayOptions::default()
    };
    let stack = Stack::with_options(options).await;
    assert!(
        stack.idp.output().contains("gateway (none)"),
        "the IdP should register a public client:\n{}",
        stack.idp.output()
    );
    let login = stack.login(&Browser::new(), "/public-client").await;
    assert_upstream_saw_alice(&stack, &login.landing.echo()).await;
}

/// oidc-provider accepts `client_secret_basic` and `client_secret_post` alike for a client
/// registered with either, so this proves the login works against such a registration;
/// `client_secret_post_is_used_when_the_idp_supports_only_that` checks the method itself.
#[tokio::test]
async fn client_secret_post_client_logs_in() {
    let stack = Stack::start_with(GatewayOptions::default(), |idp| {
        idp.env("CLIENT_AUTH_METHOD", "client_secret_post")
    })
    .await;
    assert!(
        stack.idp.output().contains("gateway (client_secret_post)"),
        "{}",
        stack.idp.output()
    );
    let login = stack.login(&Browser::new(), "/post-client").await;
    assert_upstream_saw_alice(&stack, &login.landing.echo()).await;
}

/// A token endpoint that accepts exactly `auth` (the mock advertises only that method):
/// the login completes, so the gateway authenticated the way discovery asked.
async fn assert_login_with_client_auth(auth: ClientAuth, client_secret: Option<String>) {
    let idp = MockIdp::start_requiring(auth.clone()).await;
    let options = GatewayOptions {
        client_secret,
        ..GatewayOptions::default()
    };
    let stack = MockStack::start_with(idp, options).await;
    let browser = Browser::new();
    let callback = stack.login_attempt(&browser, "/auth-method").await;
    assert_eq!(
        stack.idp.refusals(),
        Vec::<String>::new(),
        "{auth:?}: the token endpoint refused the client authentication"
    );
    assert_eq!(callback.status, StatusCode::FOUND, "{auth:?}\n{callback}");
    let echo = browser.follow(&callback).await.echo();
    assert_eq!(echo.header("x-forwarded-user"), Some("mock-user"));
}

#[tokio::test]
async fn extra_authorize_params_reach_the_idp_alongside_pkce() {
    let options = GatewayOptions {
        extra_oidc: r#"extra_authorize_params = { access_type = "offline", prompt = "consent" }"#
            .to_string(),
        ..GatewayOptions::default()
    };
    let stack = MockStack::start_with(MockIdp::start().await, options).await;
    let browser = Browser::new();
    let started = browser.begin_login(&stack.gateway.url(), "/x").await;
    let url = &started.authorize_url;
    assert_eq!(query_param(url, "access_type").as_deref(), Some("offline"));
    assert_eq!(query_param(url, "prompt").as_deref(), Some("consent"));
    assert_eq!(
        query_param(url, "code_challenge_method").as_deref(),
        Some("S256")
    );
    // And the login still completes with them.
    let callback = stack.login_attempt(&browser, "/x").await;
    assert_eq!(callback.status, StatusCode::FOUND, "{callback}");
}

#[tokio::test]
async fn client_secret_post_is_used_when_the_idp_supports_only_that() {
    let secret = format!("post-secret-{}", random_hex(8));
    let auth = ClientAuth::Post {
        client_id: "gateway".to_string(),
        secret: secret.clone(),
    };
    assert_login_with_client_auth(auth, Some(secret)).await;
}

#[tokio::test]
async fn client_secret_basic_is_used_when_the_idp_supports_only_that() {
    let secret = format!("basic-secret-{}", random_hex(8));
    let auth = ClientAuth::Basic {
        client_id: "gateway".to_string(),
        secret: secret.clone(),
    };
    assert_login_with_client_auth(auth, Some(secret)).await;
}

#[tokio::test]
async fn public_client_sends_no_secret() {
    let auth = ClientAuth::None {
        client_id: "gateway".to_string(),
    };
    assert_login_with_client_auth(auth, None).await;
}

// ----- 3. state --------------------------------------------------------------------------

/// Begins a login and signs in at the IdP; returns the login and the IdP's redirect to
/// the callback (not loaded).
async fn login_up_to_callback(
    stack: &Stack<impl GatewayAddr>,
    browser: &Browser,
    path: &str,
) -> (common::login::StartedLogin, Url) {
    let started = browser.begin_login(&stack.url(), path).await;
    let idp = browser.idp_sign_in(&started.authorize_url, ALICE).await;
    (started, idp.redirect)
}

#[tokio::test]
async fn callback_rejects_missing_state() {
    let stack = Stack::start().await;
    let browser = Browser::new();
    let (_, callback_url) = login_up_to_callback(&stack, &browser, "/x").await;
    let without_state = with_query_param(&callback_url, "state", None);
    let refused = browser.callback(&without_state).await;
    assert_login_refused(&stack.gateway, &browser, &refused, 400).await;
    assert_eq!(stack.idp.code_exchanges().await, 0, "code exchanged anyway");
}

#[tokio::test]
async fn callback_rejects_unknown_state() {
    let stack = Stack::start().await;
    let browser = Browser::new();
    let (started, callback_url) = login_up_to_callback(&stack, &browser, "/x").await;
    browser.remove_cookie(&started.login_cookie_name);
    let refused = browser.callback(&callback_url).await;
    assert_login_refused(&stack.gateway, &browser, &refused, 400).await;
    assert!(
        refused
            .body
            .contains("unknown, expired or already used login"),
        "{refused}"
    );
    assert_eq!(stack.idp.code_exchanges().await, 0, "code exchanged anyway");
}

/// Login CSRF: the attacker's own callback URL (code + state for the attacker's login)
/// loaded in the victim's browser, which has a login of its own in progress.
#[tokio::test]
async fn callback_rejects_forged_state() {
    let stack = Stack::start().await;
    let victim = Browser::new();
    let victims_login = victim.begin_login(&stack.url(), "/victim").await;

    let attacker = Browser::new();
    let attackers_login = attacker.begin_login(&stack.url(), "/attacker").await;
    let attackers_callback = attacker
        .idp_sign_in(&attackers_login.authorize_url, "mallory")
        .await
        .redirect;

    let refused = victim.callback(&attackers_callback).await;
    assert_login_refused(&stack.gateway, &victim, &refused, 400).await;

    // The victim's login cookie relabelled for the attacker's state does not open either:
    // the cookie is bound to its name.
    victim.set_cookie(
        &attackers_login.login_cookie_name,
        &victims_login.login_cookie_value,
    );
    let refused = victim.callback(&attackers_callback).await;
    assert_login_refused(&stack.gateway, &victim, &refused, 400).await;
    assert_eq!(stack.idp.code_exchanges().await, 0, "code exchanged anyway");
}

#[tokio::test]
async fn callback_rejects_replayed_state() {
    let stack = Stack::start().await;
    let browser = Browser::new();
    let login = stack.login(&browser, "/first").await;
    assert_eq!(stack.idp.code_exchanges().await, 1);

    // Someone with a copy of the callback URL and of the login cookie replays both.
    let replayer = Browser::new();
    replayer.set_cookie(
        &login.started.login_cookie_name,
        &login.started.login_cookie_value,
    );
    let refused = replayer.callback(&login.idp.redirect).await;
    assert_login_refused(&stack.gateway, &replayer, &refused, 400).await;

    // The same browser replaying it gets no new session, and keeps the one it has.
    browser.set_cookie(
        &login.started.login_cookie_name,
        &login.started.login_cookie_value,
    );
    let refused = browser.callback(&login.idp.redirect).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{refused}");
    assert!(refused.set_cookie(SESSION_COOKIE).is_none(), "{refused}");
    let still = browser.api_get(&stack.url_for("/still")).await;
    assert_eq!(still.echo().header("x-forwarded-user"), Some(ALICE));

    assert_eq!(
        stack.idp.code_exchanges().await,
        1,
        "a replayed state must be refused before the IdP is asked"
    );
}

#[tokio::test]
async fn callback_rejects_tampered_login_cookie() {
    let stack = Stack::start().await;
    let browser = Browser::new();
    let (started, callback_url) = login_up_to_callback(&stack, &browser, "/x").await;
    let value = &started.login_cookie_value;
    browser.set_cookie(
        &started.login_cookie_name,
        &flip_char(value, value.len() / 2),
    );
    let refused = browser.callback(&callback_url).await;
    assert_login_refused(&stack.gateway, &browser, &refused, 400).await;
    assert_eq!(stack.idp.code_exchanges().await, 0, "code exchanged anyway");
}

// ----- 4. RFC 9207 iss --------------------------------------------------------------------

#[tokio::test]
async fn callback_rejects_wrong_iss() {
    let stack = Stack::start().await;
    let browser = Browser::new();
    let trailing_slash = format!("{}/", stack.idp.issuer());
    for iss in [
        "http://127.0.0.1:1",
        "https://evil.test",
        trailing_slash.as_str(),
    ] {
        let (_, callback_url) = login_up_to_callback(&stack, &browser, "/x").await;
        let forged = with_query_param(&callback_url, "iss", Some(iss));
        let refused = browser.callback(&forged).await;
        assert_login_refused(&stack.gateway, &browser, &refused, 400).await;
        assert!(
            refused.body.contains("another issuer"),
            "iss {iss:?}\n{refused}"
        );
    }
    assert_eq!(
        stack.idp.code_exchanges().await,
        0,
        "a code from a mixed-up issuer must never be sent to the token endpoint"
    );
}

#[tokio::test]
async fn callback_rejects_missing_iss() {
    let stack = Stack::start().await;
    let browser = Browser::new();
    let (_, callback_url) = login_up_to_callback(&stack, &browser, "/x").await;
    let without_iss = with_query_param(&callback_url, "iss", None);
    let refused = browser.callback(&without_iss).await;
    assert_login_refused(&stack.gateway, &browser, &refused, 400).await;
    assert!(refused.body.contains("names no issuer"), "{refused}");
    assert_eq!(stack.idp.code_exchanges().await, 0, "code exchanged anyway");
}

// ----- 5. IdP error response ---------------------------------------------------------------

#[tokio::test]
async fn idp_error_response_shows_page() {
    let stack = Stack::start().await;
    let browser = Browser::new();
    let started = browser.begin_login(&stack.url(), "/x").await;
    // "[ Cancel ]" on the IdP's login page.
    let callback_url = browser.idp_cancel(&started.authorize_url).await;
    assert_eq!(
        query_param(&callback_url, "error").as_deref(),
        Some("access_denied")
    );
    assert_eq!(
        query_param(&callback_url, "state"),
        Some(started.state.clone())
    );
    assert_eq!(
        query_param(&callback_url, "iss").as_deref(),
        Some(stack.idp.issuer()),
        "the IdP names itself in error responses too"
    );

    let page = browser.callback(&callback_url).await;
    assert_login_refused(&stack.gateway, &browser, &page, 403).await;
    assert!(page.body.contains("Sign-in was not completed"), "{page}");
    assert!(page.body.contains("access_denied"), "{page}");
    assert_login_cookie_cleared(&page, &started.login_cookie_name);

    // An error response for a state this browser never started is a bad request, not
    // the IdP's verdict.
    let bogus = format!(
        "{}?error=access_denied&state={}",
        stack.url_for("/oauth2/callback"),
        random_hex(16)
    );
    let refused = browser.navigate(&bogus).await;
    assert_login_refused(&stack.gateway, &browser, &refused, 400).await;
    assert_eq!(stack.idp.code_exchanges().await, 0);
}

/// RFC 9207 §2.4 applies to error responses too: an error that names another issuer is
/// not this IdP's verdict (mix-up), so it is refused like any other mixed-up response.
#[tokio::test]
async fn idp_error_response_from_another_issuer_is_rejected() {
    let stack = Stack::start().await;
    let browser = Browser::new();
    let started = browser.begin_login(&stack.url(), "/x").await;
    let callback_url = browser.idp_cancel(&started.authorize_url).await;
    let forged = with_query_param(&callback_url, "iss", Some("https://evil.test"));
    let refused = browser.callback(&forged).await;
    assert_login_refused(&stack.gateway, &browser, &refused, 400).await;
    assert!(
        !refused.body.contains("access_denied"),
        "an error from another issuer must not be shown as the IdP's answer\n{refused}"
    );
}

// ----- 6. codes and ID tokens the gateway must not accept --------------------------------

/// The gateway runs as client `other`; the browser's authorization request is rewritten to
/// client `gateway` (same redirect URI, state, PKCE challenge), so the code is issued to
/// `gateway`. The IdP refuses to exchange it for `other`.
#[tokio::test]
async fn code_issued_to_another_client_is_rejected() {
    let other_secret = format!("other-secret-{}", random_hex(8));
    let options = GatewayOptions {
        client_id: "other".to_string(),
        client_secret: Some(other_secret.clone()),
        ..GatewayOptions::default()
    };
    let stack = Stack::start_with(options, |idp| {
        idp.client("gateway", Some("gateway-secret"))
            .env("CLIENT2_ID", "other")
            .env("CLIENT2_SECRET", &other_secret)
    })
    .await;

    // Control: a normal login as client `other` works.
    let login = stack.login(&Browser::new(), "/control").await;
    assert_upstream_saw_alice(&stack, &login.landing.echo()).await;

    let browser = Browser::new();
    let started = browser.begin_login(&stack.url(), "/x").await;
    assert_eq!(
        query_param(&started.authorize_url, "client_id").as_deref(),
        Some("other")
    );
    let swapped = with_query_param(&started.authorize_url, "client_id", Some("gateway"));
    let idp = browser.idp_sign_in(&swapped, ALICE).await;
    let before = stack.idp.code_exchanges().await;
    let refused = browser.callback(&idp.redirect).await;
    assert_login_refused(&stack.gateway, &browser, &refused, 400).await;
    assert!(refused.body.contains("rejected the login"), "{refused}");
    assert_eq!(stack.idp.code_exchanges().await, before + 1);
}

/// The mock IdP issues an ID token with `fault`: the gateway refuses the login without a
/// session, stays up, and the same browser logs in once the IdP behaves.
async fn assert_id_token_rejected(fault: IdTokenFault) {
    let stack = MockStack::start(GatewayOptions::default()).await;
    let browser = Browser::new();
    stack.idp.set_fault(fault);
    let refused = stack.login_attempt(&browser, "/after").await;
    assert_eq!(
        stack.idp.issued().len(),
        1,
        "the mock should have issued the faulty token"
    );
    assert!(
        matches!(refused.status.as_u16(), 400 | 502),
        "{fault:?}: expected 400 or 502\n{refused}"
    );
    assert!(
        refused.body.contains("invalid ID token"),
        "{fault:?}\n{refused}"
    );
    assert_login_refused(&stack.gateway, &browser, &refused, refused.status.as_u16()).await;
    assert!(stack.upstream.received().is_empty());

    stack.idp.set_fault(IdTokenFault::None);
    let ok = stack.login_attempt(&browser, "/after").await;
    assert_eq!(ok.status, StatusCode::FOUND, "control login\n{ok}");
    assert_eq!(ok.location_raw(), "/after");
    let echo = browser.follow(&ok).await.echo();
    assert_eq!(echo.header("x-forwarded-user"), Some("mock-user"));
    assert_eq!(echo.header("x-forwarded-groups"), Some("mockers"));
    let access_token = &stack.idp.issued()[1].access_token;
    assert_eq!(
        echo.header("authorization"),
        Some(format!("Bearer {access_token}").as_str())
    );
}

#[tokio::test]
async fn id_token_with_wrong_audience_is_rejected() {
    assert_id_token_rejected(IdTokenFault::WrongAudience).await;
}

#[tokio::test]
async fn id_token_with_wrong_nonce_is_rejected() {
    assert_id_token_rejected(IdTokenFault::WrongNonce).await;
}

#[tokio::test]
async fn id_token_from_another_issuer_is_rejected() {
    assert_id_token_rejected(IdTokenFault::WrongIssuer).await;
}

#[tokio::test]
async fn id_token_signed_with_unknown_key_is_rejected() {
    assert_id_token_rejected(IdTokenFault::UnknownKey).await;
}

#[tokio::test]
async fn expired_id_token_is_rejected() {
    assert_id_token_rejected(IdTokenFault::Expired).await;
}

#[tokio::test]
async fn unsigned_id_token_is_rejected() {
    assert_id_token_rejected(IdTokenFault::Unsigned).await;
}

// ----- 7. forged session cookies ------------------------------------------------------------

#[tokio::test]
async fn tampered_session_cookie_is_not_a_session() {
    let stack = Stack::start().await;
    let browser = Browser::new();
    let login = stack.login(&browser, "/x").await;
    let genuine = login.session_cookie.clone();

    for index in [0, genuine.len() / 2, genuine.len() - 2] {
        browser.set_cookie(SESSION_COOKIE, &flip_char(&genuine, index));
        assert_not_a_session(&stack.gateway, &stack.upstream, &browser).await;
    }
    browser.set_cookie(SESSION_COOKIE, &genuine[..genuine.len() - 1]);
    assert_not_a_session(&stack.gateway, &stack.upstream, &browser).await;

    // The genuine cookie still works: the failures were the tampering.
    browser.set_cookie(SESSION_COOKIE, &genuine);
    let ok = browser.api_get(&stack.url_for("/api/data")).await;
    assert_eq!(ok.echo().header("x-forwarded-user"), Some(ALICE));
}

/// Note: with the in-memory store, gateway B also lacks A's session entry; this checks
/// the black-box behaviour (no session, no crash), not the cryptography alone.
#[tokio::test]
async fn cookie_from_a_different_secret_is_not_a_session() {
    let stack = Stack::start().await;
    let browser = Browser::new();
    stack.login(&browser, "/x").await;

    let other_options = GatewayOptions {
        secrets: vec![session_secret()],
        ..GatewayOptions::default()
    };
    let toml = gateway_toml(
        "@LISTEN@",
        "@PUBLIC_URL@",
        stack.idp.issuer(),
        &stack.upstream.url(),
        &other_options,
    );
    let gateway_b = InProcessGateway::start(&toml).await;
    wait_for_readyz(&gateway_b).await;
    assert_not_a_session(&gateway_b, &stack.upstream, &browser).await;
    assert_no_session(&gateway_b, &browser).await;
}

/// No session fixation: a session cookie planted in the browser (here: the attacker's own
/// valid session) is replaced by a fresh id at login, and the planted one is ended.
#[tokio::test]
async fn login_replaces_a_planted_session_cookie() {
    let stack = Stack::start().await;
    let attacker = Browser::new();
    let planted = attacker
        .login(&stack.url(), "/x", "mallory")
        .await
        .session_cookie;

    let victim = Browser::new();
    victim.set_cookie(SESSION_COOKIE, &planted);
    let started = victim.start_login(&stack.url(), "/mine").await;
    let idp = victim.idp_sign_in(&started.authorize_url, ALICE).await;
    let callback = victim.callback(&idp.redirect).await;
    assert_eq!(callback.status, StatusCode::FOUND, "{callback}");
    let fresh = callback.set_cookie(SESSION_COOKIE).unwrap();
    assert_ne!(
        fresh.value(),
        planted,
        "the login kept the planted session id"
    );
    let echo = victim.follow(&callback).await.echo();
    assert_upstream_saw_alice(&stack, &echo).await;

    // The planted id is gone server-side.
    attacker.set_cookie(SESSION_COOKIE, &planted);
    assert_not_a_session(&stack.gateway, &stack.upstream, &attacker).await;
}

// ----- 8. no session ---------------------------------------------------------------------

#[tokio::test]
async fn api_request_without_session_gets_401_json() {
    let stack = MockStack::start(GatewayOptions::default()).await;
    let browser = Browser::new();
    assert_not_a_session(&stack.gateway, &stack.upstream, &browser).await;

    let no_accept = browser
        .send(browser.request(Method::GET, &stack.gateway.url_for("/api/data")))
        .await;
    assert_unauthorized_json(&no_accept);
    let xhr = browser
        .send(
            browser
                .request(Method::GET, &stack.gateway.url_for("/api/data"))
                .header("accept", "application/json, text/plain, */*"),
        )
        .await;
    assert_unauthorized_json(&xhr);
    assert_no_session(&stack.gateway, &browser).await;

    // HEAD is a navigation too.
    let head = browser
        .send(
            browser
                .request(Method::HEAD, &stack.gateway.url_for("/page"))
                .header("accept", "text/html"),
        )
        .await;
    assert_eq!(head.status, StatusCode::FOUND, "{head}");
    assert_eq!(head.location_raw(), "/oauth2/start?rd=%2Fpage");
    assert!(stack.upstream.received().is_empty());
}

#[tokio::test]
async fn post_without_session_never_redirects() {
    let stack = MockStack::start(GatewayOptions::default()).await;
    let browser = Browser::new();
    for method in [Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
        let hop = browser
            .send(
                browser
                    .request(method.clone(), &stack.gateway.url_for("/form?x=1"))
                    .header("accept", common::login::NAVIGATION_ACCEPT)
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body("field=value"),
            )
            .await;
        assert_unauthorized_json(&hop);
    }
    assert!(stack.upstream.received().is_empty());
}

// ----- 9, 10. what the upstream sees ---------------------------------------------------------

#[tokio::test]
async fn client_sent_identity_headers_never_reach_upstream() {
    let options = GatewayOptions {
        public_route: true,
        ..GatewayOptions::default()
    };
    let stack = Stack::with_options(options).await;
    let browser = Browser::new();
    let login = stack.login(&browser, "/x").await;
    let real_token = assert_upstream_saw_alice(&stack, &login.landing.echo()).await;

    let spoofed = browser
        .send(
            browser
                .request(Method::GET, &stack.url_for("/api/whoami"))
                .header("accept", "application/json")
                .header("X-Forwarded-User", "mallory")
                .header("x-forwarded-user", "mallory2")
                .header("X-Forwarded-Email", "mallory@evil.test")
                .header("X-Forwarded-Groups", "admins,root")
                .header("Authorization", "Bearer fake"),
        )
        .await;
    let echo = spoofed.echo();
    let token = assert_upstream_saw_alice(&stack, &echo).await;
    assert_eq!(token, real_token);

    // A public route: identity headers from the client are removed, none are added (the
    // session cookie is ignored there).
    let public = browser
        .send(
            browser
                .request(Method::GET, &stack.url_for("/public/page"))
                .header("X-Forwarded-User", "mallory")
                .header("X-Forwarded-Email", "mallory@evil.test")
                .header("X-Forwarded-Groups", "admins"),
        )
        .await;
    let echo = public.echo();
    assert_eq!(echo.path, "/public/page");
    for name in [
        "x-forwarded-user",
        "x-forwarded-email",
        "x-forwarded-groups",
    ] {
        assert!(
            echo.header_all(name).is_empty(),
            "{name} reached the public upstream: {:?}",
            echo.header_all(name)
        );
    }
    assert!(
        echo.header_all("authorization").is_empty(),
        "the gateway added a token on a public route"
    );
}

#[tokio::test]
async fn gateway_cookies_are_not_forwarded() {
    let stack = Stack::start().await;
    let login = stack.login(&Browser::new(), "/x").await;
    let session = &login.session_cookie;
    let client = common::client();

    for (cookie, expected) in [
        (
            format!("other=1; {SESSION_COOKIE}={session}"),
            Some("other=1"),
        ),
        (
            format!(
                "a=1; {SESSION_COOKIE}={session}; {LOGIN_COOKIE_PREFIX}abcdefghijklmnop=x; b=2"
            ),
            Some("a=1; b=2"),
        ),
        (format!("{SESSION_COOKIE}={session}"), None),
    ] {
        let resp = client
            .get(stack.url_for("/cookies"))
            .header("accept", "application/json")
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "Cookie: {cookie}");
        let echo = Echoed::parse(&resp.bytes().await.unwrap());
        assert_eq!(
            echo.header("x-forwarded-user"),
            Some(ALICE),
            "Cookie: {cookie}"
        );
        assert_eq!(echo.header("cookie"), expected, "sent Cookie: {cookie}");
    }
}

// ----- 11. logs ---------------------------------------------------------------------------

/// Every line of the gateway's log, parsed (the log is JSON lines).
fn log_lines(gateway: &Gateway) -> Vec<Value> {
    gateway
        .log_text()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("log line is not JSON ({e}): {l}"))
        })
        .collect()
}

/// Waits until the access log has a line for `path`.
async fn wait_for_request_log(gateway: &Gateway, path: &str) {
    let needle = format!("\"path\":\"{path}\"");
    gateway
        .wait_for_log(
            &format!("a request line for {path}"),
            Duration::from_secs(10),
            |log| log.contains(&needle),
        )
        .await;
}

fn assert_log_free_of(gateway: &Gateway, secrets: &[(&str, &str)]) {
    let log = gateway.log_text();
    for (what, secret) in secrets {
        assert!(
            secret.len() >= 8,
            "{what} is too short to search for: {secret:?}"
        );
        assert!(
            !log.contains(secret),
            "the gateway logged the {what}:\n{log}"
        );
    }
    assert!(
        !log.contains("eyJ"),
        "the gateway logged something that looks like a JWT:\n{log}"
    );
}

#[tokio::test]
async fn secrets_never_logged() {
    let options = GatewayOptions {
        log_filter: "debug",
        ..GatewayOptions::default()
    };
    let client_secret = options.client_secret.clone().unwrap();
    let stack = Stack::start_process(options).await;
    let browser = Browser::new();
    let login = stack.login(&browser, "/logs/check?x=1").await;
    let access_token = assert_upstream_saw_alice(&stack, &login.landing.echo()).await;
    let code = query_param(&login.idp.redirect, "code").unwrap();

    // A refused callback (replay) is logged too.
    let replayer = Browser::new();
    replayer.set_cookie(
        &login.started.login_cookie_name,
        &login.started.login_cookie_value,
    );
    let refused = replayer.callback(&login.idp.redirect).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);

    let me = browser.api_get(&stack.url_for("/oauth2/userinfo")).await;
    assert_eq!(me.status, StatusCode::OK);
    let out = browser
        .navigate(&stack.url_for("/oauth2/sign_out?rd=/bye"))
        .await;
    assert_eq!(out.status, StatusCode::FOUND);
    wait_for_request_log(&stack.gateway, "/oauth2/sign_out").await;

    assert_log_free_of(
        &stack.gateway,
        &[
            ("access token", &access_token),
            ("authorization code", &code),
            ("session cookie", &login.session_cookie),
            ("login cookie", &login.started.login_cookie_value),
            ("client secret", &client_secret),
        ],
    );

    // One access line per request, with the fields operators rely on.
    let lines = log_lines(&stack.gateway);
    let access = lines
        .iter()
        .find(|l| l["path"] == "/logs/check" && l["status"] == 200)
        .unwrap_or_else(|| {
            panic!(
                "no access line for /logs/check:\n{}",
                stack.gateway.log_text()
            )
        });
    assert_eq!(access["method"], "GET", "{access}");
    assert!(access["route"].is_string(), "{access}");
    assert!(access["latency_ms"].is_number(), "{access}");
    assert!(
        access["request_id"]
            .as_str()
            .is_some_and(|id| !id.is_empty()),
        "{access}"
    );
    let callback_lines = lines
        .iter()
        .filter(|l| l["path"] == "/oauth2/callback" && l.get("status").is_some())
        .count();
    assert_eq!(callback_lines, 2, "one access line per callback request");
}

/// The mock IdP's tokens are known exactly, refresh and ID token included.
#[tokio::test]
async fn tokens_from_the_token_endpoint_never_logged() {
    let options = GatewayOptions {
        log_filter: "debug",
        ..GatewayOptions::default()
    };
    let client_secret = options.client_secret.clone().unwrap();
    let stack = MockStack::start_process(options).await;
    let browser = Browser::new();
    let callback = stack.login_attempt(&browser, "/logs").await;
    assert_eq!(callback.status, StatusCode::FOUND, "{callback}");
    let code = query_param(&callback.url, "code").unwrap();
    let session = callback.set_cookie(SESSION_COOKIE).unwrap();
    browser.follow(&callback).await.echo();
    let out = browser
        .send(browser.request(Method::POST, &stack.gateway.url_for("/oauth2/sign_out")))
        .await;
    assert_eq!(out.status, StatusCode::FOUND);
    wait_for_request_log(&stack.gateway, "/oauth2/sign_out").await;

    let issued = stack.idp.issued().pop().expect("the mock issued tokens");
    assert_log_free_of(
        &stack.gateway,
        &[
            ("access token", &issued.access_token),
            ("refresh token", &issued.refresh_token),
            ("ID token", &issued.id_token),
            ("authorization code", &code),
            ("session cookie", session.value()),
            ("client secret", &client_secret),
        ],
    );
}

// ----- 12. sign-out ------------------------------------------------------------------------

/// Sign-out: the session ends server-side, the cookie is cleared, and the browser goes
/// through the IdP's end-session endpoint (RP-initiated logout, with the ID token as
/// hint) back to `rd` on the gateway.
#[tokio::test]
async fn sign_out_ends_session_server_side() {
    let stack = Stack::start().await;
    let browser = Browser::new();
    let end_session = stack.idp.discovery().await["end_session_endpoint"]
        .as_str()
        .expect("the test IdP advertises an end_session_endpoint")
        .to_string();

    // GET sign-out.
    let login = stack.login(&browser, "/x").await;
    let out = browser
        .navigate(&stack.url_for("/oauth2/sign_out?rd=/bye"))
        .await;
    assert_eq!(out.status, StatusCode::FOUND, "{out}");
    let cleared = out
        .set_cookie(SESSION_COOKIE)
        .unwrap_or_else(|| panic!("sign-out did not clear the cookie\n{out}"));
    assert_eq!(cleared.value(), "");
    assert_eq!(cleared.max_age().map(|a| a.whole_seconds()), Some(0));
    assert!(browser.cookie(SESSION_COOKIE).is_none());

    let to_idp = out.location();
    assert_eq!(to_idp.as_str().split('?').next().unwrap(), end_session);
    assert_eq!(
        query_param(&to_idp, "post_logout_redirect_uri"),
        Some(stack.url_for("/bye"))
    );
    let hint = query_param(&to_idp, "id_token_hint").expect("id_token_hint");
    let id_claims = stack.idp.verify_jwt(&hint, "gateway").await;
    assert_eq!(id_claims["sub"], ALICE, "the hint is alice's ID token");
    let back = browser.idp_end_session(&to_idp).await;
    assert_eq!(
        back.as_str(),
        stack.url_for("/bye"),
        "back to rd on the gateway"
    );

    assert_not_a_session(&stack.gateway, &stack.upstream, &browser).await;
    // The old cookie, replayed, is no session any more.
    browser.set_cookie(SESSION_COOKIE, &login.session_cookie);
    assert_not_a_session(&stack.gateway, &stack.upstream, &browser).await;
    assert_no_session(&stack.gateway, &browser).await;

    // POST sign-out, with an rd that would leave the site: back to the gateway's root.
    browser.remove_cookie(SESSION_COOKIE);
    let login = stack.login(&browser, "/y").await;
    let out = browser
        .send(browser.request(
            Method::POST,
            &stack.url_for("/oauth2/sign_out?rd=//evil.test/"),
        ))
        .await;
    assert_eq!(out.status, StatusCode::FOUND, "{out}");
    assert_eq!(
        query_param(&out.location(), "post_logout_redirect_uri"),
        Some(stack.url_for("/"))
    );
    browser.set_cookie(SESSION_COOKIE, &login.session_cookie);
    assert_not_a_session(&stack.gateway, &stack.upstream, &browser).await;
}

// ----- 13. secret rotation -------------------------------------------------------------------

/// Sessions live in the gateway's memory, so they do not survive a restart whatever the
/// secrets; what does survive is a login in progress (its state is a cookie sealed under
/// `session.secret`). Logins begun under `[A]` complete under `[B, A]` (all secrets open),
/// not under `[B]`; logins begun under `[B, A]` are sealed with `B` (the first seals).
#[tokio::test]
async fn session_secret_rotation_keeps_logins_in_flight() {
    let (a, b) = (session_secret(), session_secret());
    let only_a = GatewayOptions {
        secrets: vec![a.clone()],
        ..GatewayOptions::default()
    };
    let b_then_a = GatewayOptions {
        secrets: vec![b.clone(), a],
        ..only_a.clone()
    };
    let only_b = GatewayOptions {
        secrets: vec![b],
        ..only_a.clone()
    };
    let mut stack = Stack::start_process(only_a).await;
    let browser = Browser::new();

    // Two logins begun under [A], both signed in at the IdP.
    let (first, first_callback) = login_up_to_callback(&stack, &browser, "/one").await;
    let (second, second_callback) = login_up_to_callback(&stack, &browser, "/two").await;
    assert_ne!(first.state, second.state);

    stack.restart_gateway(&b_then_a).await;
    let done = browser.callback(&first_callback).await;
    assert_eq!(
        done.status,
        StatusCode::FOUND,
        "login sealed under A, [B, A]\n{done}"
    );
    assert_eq!(done.location_raw(), "/one");
    let echo = browser.follow(&done).await.echo();
    assert_upstream_saw_alice(&stack, &echo).await;

    // A login begun under [B, A] ...
    browser.remove_cookie(SESSION_COOKIE);
    let (_, third_callback) = login_up_to_callback(&stack, &browser, "/three").await;

    // ... completes under [B] alone, while one sealed under A no longer opens.
    stack.restart_gateway(&only_b).await;
    let refused = browser.callback(&second_callback).await;
    assert_login_refused(&stack.gateway, &browser, &refused, 400).await;
    let done = browser.callback(&third_callback).await;
    assert_eq!(
        done.status,
        StatusCode::FOUND,
        "login sealed under B, [B]\n{done}"
    );
    assert_eq!(done.location_raw(), "/three");
    assert_upstream_saw_alice(&stack, &browser.follow(&done).await.echo()).await;
}

// ----- 14. a real browser -------------------------------------------------------------------

#[tokio::test]
async fn browser_login_in_chromium() {
    let Some(chromium) = chromium("browser_login_in_chromium") else {
        return;
    };
    let stack = Stack::start().await;
    let login = login_in_chromium(&chromium, &stack.url(), ALICE, "login-chromium.png").await;
    assert_eq!(
        login.final_url.origin(),
        Url::parse(&stack.url()).unwrap().origin(),
        "the browser should end on the gateway"
    );
    assert_eq!(login.final_url.path(), "/");
    assert_upstream_saw_alice(&stack, &login.echo).await;
}

// ----- 15. tabs --------------------------------------------------------------------------

#[tokio::test]
async fn several_tabs_can_log_in_at_once() {
    let stack = Stack::start().await;
    let browser = Browser::new();
    let tab1 = browser.begin_login(&stack.url(), "/tab/one").await;
    let tab2 = browser.begin_login(&stack.url(), "/tab/two?b=2").await;
    assert_ne!(tab1.state, tab2.state);
    assert_ne!(tab1.login_cookie_name, tab2.login_cookie_name);

    // Both tabs show the IdP's login page.
    let page1 = browser.idp_open(&tab1.authorize_url).await;
    let page2 = browser.idp_open(&tab2.authorize_url).await;
    assert!(matches!(page1, IdpStep::Page(_)), "{page1:?}");
    assert!(matches!(page2, IdpStep::Page(_)), "{page2:?}");

    // The second tab finishes first.
    let idp2 = browser.idp_finish(page2, ALICE).await;
    let callback2 = browser.callback(&idp2.redirect).await;
    assert_eq!(callback2.status, StatusCode::FOUND, "{callback2}");
    assert_eq!(callback2.location_raw(), "/tab/two?b=2");
    let session2 = callback2.set_cookie(SESSION_COOKIE).unwrap();
    let echo2 = browser.follow(&callback2).await.echo();
    assert_eq!(echo2.path, "/tab/two?b=2");
    assert_eq!(echo2.header("x-forwarded-user"), Some(ALICE));

    // Then the first: its login cookie is still there and it completes too.
    assert!(browser.cookie(&tab1.login_cookie_name).is_some());
    let idp1 = browser.idp_finish(page1, ALICE).await;
    let callback1 = browser.callback(&idp1.redirect).await;
    assert_eq!(callback1.status, StatusCode::FOUND, "{callback1}");
    assert_eq!(callback1.location_raw(), "/tab/one");
    let session1 = callback1.set_cookie(SESSION_COOKIE).unwrap();
    assert_ne!(
        session1.value(),
        session2.value(),
        "each login gets a fresh session id"
    );
    let echo1 = browser.follow(&callback1).await.echo();
    assert_eq!(echo1.path, "/tab/one");
    assert_upstream_saw_alice(&stack, &echo1).await;
    assert!(browser
        .cookies_starting_with(LOGIN_COOKIE_PREFIX)
        .is_empty());
}
