//! Correct against identity providers as they really are: the real `portcullis` binary in
//! front of an echo upstream, against the node test IdP (`tests/idp`, oidc-provider) with
//! its shipped defaults (claims only at userinfo, opaque access tokens) and with each of
//! its opt-in deviations (claims in the ID token, signed userinfo, ES256, client
//! authentication methods, key rotation), plus the in-process mock IdP for what a correct
//! IdP never sends: userinfo for another subject, a userinfo 500, a userinfo JWT under a
//! forged signature, a refreshed ID token that fails validation.
//!
//! Every variant is a whole session: login, a proxied request with identity checks, a
//! refresh (the IdP's access tokens live [`ACCESS_TTL`] s and the gateway refreshes
//! [`REFRESH_BEFORE`] s before expiry, so a refresh is due 3 s after a token was issued),
//! and a proxied request after it with a new bearer that the IdP says is active
//! (introspected by a second, confidential client, so this works whatever the gateway's
//! own client authentication is).

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};
use reqwest::header::{ACCEPT, AUTHORIZATION};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use url::Url;

use common::gateway::{try_start_gateway, wait_for_readyz, GatewayListener};
use common::idp::{write_client_key, ClientKeyKind, Idp, IdpBuilder, DEFAULT_API_RESOURCE};
use common::login::{query_param, random_hex, Browser, Hop, IdpStep, SESSION_COOKIE};
use common::mock_idp::{
    jwt_parts, mint_jwt, mock_user_claims, unix_now, IdTokenFault, MockIdp, MockUserinfo, Signer,
    SigningKey, MOCK_SUB,
};
use common::{bin, free_port, EchoUpstream, Gateway, GatewayAddr, InProcessGateway};

const CLIENT_ID: &str = "gateway";
const ALICE: &str = "alice";
const ALICE_EMAIL: &str = "alice@corp.test";
const ALICE_NAME: &str = "Alice";
const ALICE_GROUPS: &str = "admins,eng";

/// A second, confidential client at the IdP, used only to introspect the gateway's tokens.
const INTROSPECTOR_ID: &str = "introspector";
const INTROSPECTOR_SECRET: &str = "introspector-secret-7f3a9c1e";

/// Seconds an access token from the node IdP lives (`ACCESS_TOKEN_TTL`).
const ACCESS_TTL: u64 = 8;
/// The gateway's `session.refresh_before`, seconds. A token is due for refresh
/// `ACCESS_TTL - REFRESH_BEFORE` = 3 s after it was issued, and (the gateway counts whole
/// seconds) certainly not within 2 s.
const REFRESH_BEFORE: u64 = 5;

/// `USERS_JSON`: alice's email, groups and a claim (`department`) only a policy asks for.
fn users() -> Value {
    json!({ "alice": { "email": ALICE_EMAIL, "groups": ["admins", "eng"], "department": "eng" } })
}

// ----- the stack: node IdP + echo upstream + gateway -----------------------------------------

/// How the gateway authenticates at the IdP's token (and revocation) endpoint.
#[derive(Debug, Clone, Copy)]
enum ClientAuth {
    /// A secret; the gateway picks `client_secret_basic` from discovery by itself.
    SecretBasic,
    /// A secret, `token_endpoint_auth_method = "client_secret_post"`.
    SecretPost,
    /// No secret, no `token_endpoint_auth_method`: a public client (PKCE alone).
    Public,
    /// `token_endpoint_auth_method = "private_key_jwt"` with a key file of this kind (the
    /// IdP registers its public key; kid = RFC 7638 thumbprint on both sides).
    PrivateKeyJwt(ClientKeyKind),
}

#[derive(Debug, Clone)]
struct Options {
    auth: ClientAuth,
    /// `oidc.userinfo` (`None`: not set, the default `"auto"`).
    userinfo: Option<&'static str>,
    /// The gateway is configured with another secret than the one the IdP registered.
    wrong_secret: bool,
    /// private_key_jwt: `oidc.client_key_id`, and the kid the IdP registers the key under
    /// (`None`: both use the RFC 7638 thumbprint).
    client_key_id: Option<&'static str>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            auth: ClientAuth::SecretBasic,
            userinfo: None,
            wrong_secret: false,
            client_key_id: None,
        }
    }
}

impl Options {
    fn userinfo(mode: &'static str) -> Self {
        Options {
            userinfo: Some(mode),
            ..Options::default()
        }
    }

    fn auth(auth: ClientAuth) -> Self {
        Options {
            auth,
            ..Options::default()
        }
    }
}

/// Where sign-out returns to (registered at the IdP as post-logout redirect URI).
const SIGN_OUT_RETURN: &str = "/bye";

/// Routes: `/corp` admits only `@corp.test` addresses, `/eng` only `department = eng`,
/// `/api` takes API clients' own JWTs (`aud` = the IdP's default resource), `/` is open to
/// any signed-in user. All lead to the same echo upstream.
fn routes_toml(upstream: &str) -> String {
    format!(
        r#"[[route]]
path = "/corp"
upstream = "{upstream}"
allow_domains = ["corp.test"]

[[route]]
path = "/eng"
upstream = "{upstream}"
allow_claims = {{ department = ["eng"] }}

[[route]]
path = "/api"
upstream = "{upstream}"
accept_bearer = true

[[route]]
path = "/"
upstream = "{upstream}"
"#
    )
}

/// The `[oidc]` lines for `auth`.
fn client_auth_toml(auth: ClientAuth, secret: &str, key_file: Option<&Path>) -> String {
    match auth {
        ClientAuth::SecretBasic => format!("client_secret = \"{secret}\"\n"),
        ClientAuth::SecretPost => format!(
            "client_secret = \"{secret}\"\ntoken_endpoint_auth_method = \"client_secret_post\"\n"
        ),
        ClientAuth::Public => String::new(),
        ClientAuth::PrivateKeyJwt(_) => format!(
            "token_endpoint_auth_method = \"private_key_jwt\"\nclient_key_file = \"{}\"\n",
            key_file.expect("a key file").display()
        ),
    }
}

/// The node IdP, an echo upstream and the gateway (in-process unless a test needs the
/// process).
struct Stack<G = InProcessGateway> {
    idp: Idp,
    upstream: EchoUpstream,
    gateway: G,
    /// The secret the IdP registered for the gateway's client (SecretBasic / SecretPost).
    client_secret: String,
    /// Holds the client key file.
    _keys: tempfile::TempDir,
}

/// Everything of a [`Stack`] but the gateway, and the gateway's config for a port.
struct StackParts {
    idp: Idp,
    upstream: EchoUpstream,
    client_secret: String,
    keys: tempfile::TempDir,
    config: Box<dyn Fn(u16) -> String>,
}

impl StackParts {
    /// The node IdP (alice's claims from [`users`], short access tokens, the gateway's
    /// client as `options.auth` says, redirecting to a gateway on any of `ports`, the
    /// introspecting second client; `customize` adds knobs) and an echo upstream.
    async fn start(
        options: Options,
        customize: impl FnOnce(IdpBuilder) -> IdpBuilder,
        ports: &[u16],
    ) -> Self {
        let upstream = EchoUpstream::start().await;
        let keys = tempfile::tempdir().expect("tempdir");
        let key_file = match options.auth {
            ClientAuth::PrivateKeyJwt(kind) => Some(write_client_key(keys.path(), kind)),
            _ => None,
        };
        let client_secret = format!("client-secret-{}", random_hex(16));
        let mut idp = Idp::builder()
            .users(&users())
            .env("ACCESS_TOKEN_TTL", ACCESS_TTL.to_string())
            .env("CLIENT2_ID", INTROSPECTOR_ID)
            .env("CLIENT2_SECRET", INTROSPECTOR_SECRET);
        idp = match options.auth {
            ClientAuth::SecretBasic => idp.client(CLIENT_ID, Some(&client_secret)),
            ClientAuth::SecretPost => idp
                .client(CLIENT_ID, Some(&client_secret))
                .env("CLIENT_AUTH_METHOD", "client_secret_post"),
            ClientAuth::Public => idp.client(CLIENT_ID, None),
            ClientAuth::PrivateKeyJwt(_) => idp
                .client(CLIENT_ID, None)
                .private_key_jwt(key_file.as_deref().unwrap()),
        };
        if let Some(kid) = options.client_key_id {
            idp = idp.env("CLIENT_KEY_ID", kid);
        }
        let mut post_logout = Vec::new();
        for port in ports {
            idp = idp.redirect_uri(format!("http://127.0.0.1:{port}/oauth2/callback"));
            post_logout.push(format!("http://127.0.0.1:{port}{SIGN_OUT_RETURN}"));
        }
        let idp = customize(idp.env("POST_LOGOUT_REDIRECT_URIS", post_logout.join(",")))
            .start()
            .await;
        let gateway_secret = if options.wrong_secret {
            format!("not-the-registered-secret-{}", random_hex(8))
        } else {
            client_secret.clone()
        };
        let userinfo = options
            .userinfo
            .map(|mode| format!("userinfo = \"{mode}\"\n"))
            .unwrap_or_default();
        let mut auth = client_auth_toml(options.auth, &gateway_secret, key_file.as_deref());
        if let Some(kid) = options.client_key_id {
            auth.push_str(&format!("client_key_id = \"{kid}\"\n"));
        }
        let issuer = idp.issuer().to_string();
        let upstream_url = upstream.url();
        let config = move |port: u16| {
            format!(
                r#"[server]
listen = "127.0.0.1:{port}"
public_url = "http://127.0.0.1:{port}"

[log]
format = "json"
filter = "info"

[oidc]
issuer = "{issuer}"
client_id = "{CLIENT_ID}"
{auth}scopes = ["openid", "email", "profile", "offline_access"]
groups_claim = "groups"
api_audience = "{DEFAULT_API_RESOURCE}"
{userinfo}
[session]
secret = ["{session_secret}"]
cookie_secure = false
refresh_before = "{REFRESH_BEFORE}s"

{routes}"#,
                issuer = issuer,
                session_secret = random_hex(32),
                routes = routes_toml(&upstream_url),
            )
        };
        StackParts {
            idp,
            upstream,
            client_secret,
            keys,
            config: Box::new(config),
        }
    }

    fn with<G>(self, gateway: G) -> Stack<G> {
        Stack {
            idp: self.idp,
            upstream: self.upstream,
            gateway,
            client_secret: self.client_secret,
            _keys: self.keys,
        }
    }
}

impl Stack {
    /// The stack of [`StackParts::start`] with the gateway in-process, on a listener bound
    /// before the IdP is told its redirect URI.
    async fn start(options: Options, customize: impl FnOnce(IdpBuilder) -> IdpBuilder) -> Stack {
        let listener = GatewayListener::bind().await;
        let port = listener.port();
        let parts = StackParts::start(options, customize, &[port]).await;
        let gateway = InProcessGateway::builder(&(parts.config)(port))
            .listener(listener)
            .start()
            .await;
        wait_for_readyz(&gateway).await;
        parts.with(gateway)
    }
}

impl Stack<Gateway> {
    /// The stack of [`StackParts::start`] with the gateway as a `portcullis` process, for
    /// tests that read its log. Three gateway ports are registered at the IdP in case one
    /// is taken before the gateway binds it.
    async fn start_process(
        options: Options,
        customize: impl FnOnce(IdpBuilder) -> IdpBuilder,
    ) -> Self {
        let mut ports = vec![free_port()];
        while ports.len() < 3 {
            let port = free_port();
            if !ports.contains(&port) {
                ports.push(port);
            }
        }
        let parts = StackParts::start(options, customize, &ports).await;
        for &port in &ports {
            if let Some(gateway) = try_start_gateway(&(parts.config)(port)).await {
                return parts.with(gateway);
            }
        }
        panic!("none of the gateway ports {ports:?} could be bound");
    }
}

impl<G: GatewayAddr> Stack<G> {
    fn url(&self) -> String {
        self.gateway.url()
    }

    fn url_for(&self, path: &str) -> String {
        self.gateway.url_for(path)
    }

    /// `token_requests.refresh_token` at the IdP.
    async fn refreshes(&self) -> u64 {
        stat(
            &self.idp.stats().await,
            &["token_requests", "refresh_token"],
        )
    }

    async fn userinfo_requests(&self) -> u64 {
        self.idp.userinfo_requests().await
    }

    async fn jwks_requests(&self) -> u64 {
        self.idp.jwks_requests().await
    }

    /// The IdP says `token` is an active access token of the gateway's client for alice.
    async fn assert_active(&self, token: &str, what: &str) {
        let answer = self
            .idp
            .introspect(token, INTROSPECTOR_ID, Some(INTROSPECTOR_SECRET))
            .await;
        assert_eq!(
            answer["active"],
            json!(true),
            "{what}: the bearer the upstream got is not active at the IdP: {answer}"
        );
        assert_eq!(answer["sub"], ALICE, "{what}: {answer}");
        assert_eq!(answer["client_id"], CLIENT_ID, "{what}: {answer}");
        assert_eq!(answer["token_type"], "Bearer", "{what}: {answer}");
    }

    /// The whole login as alice (landing on `/start`); checks the landing request reached
    /// the upstream with alice's full identity and an active bearer. Returns the session.
    async fn login(&self, browser: &Browser) -> Session {
        let login = browser.login(&self.url(), "/start", ALICE).await;
        let issued = Instant::now();
        let bearer = assert_alice_upstream(&login.landing, "the request after login");
        self.assert_active(&bearer, "after login").await;
        Session {
            cookie: login.session_cookie,
            bearer,
            issued,
        }
    }

    /// Waits until the session's access token is due for refresh, then navigates to
    /// `path`: exactly one refresh at the IdP, and the upstream gets alice's identity with
    /// a new bearer that is active at the IdP (the session stays signed in: no redirect to
    /// `/oauth2/start`). Returns the response.
    async fn request_after_refresh(
        &self,
        browser: &Browser,
        session: &mut Session,
        path: &str,
    ) -> Hop {
        sleep_until_due(session.issued).await;
        let before = self.refreshes().await;
        let hop = browser.navigate(&self.url_for(path)).await;
        session.issued = Instant::now();
        assert_eq!(
            hop.status,
            StatusCode::OK,
            "the session must survive the refresh (no login redirect, no error)\n{hop}"
        );
        let bearer = assert_alice_upstream(&hop, "the request after a refresh");
        assert_eq!(
            self.refreshes().await,
            before + 1,
            "the stale access token must have been refreshed once"
        );
        assert_ne!(
            bearer, session.bearer,
            "after a refresh the upstream must get the new access token"
        );
        self.assert_active(&bearer, "after a refresh").await;
        session.bearer = bearer;
        hop
    }

    /// `/oauth2/userinfo` shows alice's whole identity.
    async fn assert_userinfo_shows_alice(&self, browser: &Browser) {
        let me = browser.api_get(&self.url_for("/oauth2/userinfo")).await;
        assert_eq!(me.status, StatusCode::OK, "{me}");
        let me = me.json();
        assert_eq!(me["sub"], ALICE, "{me}");
        assert_eq!(me["email"], ALICE_EMAIL, "{me}");
        assert_eq!(me["name"], ALICE_NAME, "{me}");
        assert_eq!(me["groups"], json!(["admins", "eng"]), "{me}");
    }

    /// Both policy routes admit alice: `/corp` by her email's domain, `/eng` by her
    /// `department` claim.
    async fn assert_policies_admit_alice(&self, browser: &Browser) {
        for path in ["/corp/report", "/eng/board"] {
            let hop = browser.api_get(&self.url_for(path)).await;
            assert_eq!(hop.status, StatusCode::OK, "{path} must admit alice\n{hop}");
            assert_eq!(hop.echo().path, path);
        }
    }

    /// Signs out: the browser is sent to the IdP's end-session endpoint with the session's
    /// current ID token as `id_token_hint` (returned); the refresh token was revoked at the
    /// IdP (a call to its revocation endpoint that revoked the grant, no client
    /// authentication error anywhere); the old cookie no longer works.
    async fn sign_out(&self, browser: &Browser, session: &Session) -> String {
        let stats_before = self.idp.stats().await;
        let log_before = self.idp.output();
        let out = browser
            .navigate(&self.url_for(&format!("/oauth2/sign_out?rd={SIGN_OUT_RETURN}")))
            .await;
        assert_eq!(out.status, StatusCode::FOUND, "sign-out\n{out}");
        let to_idp = out.location();
        let hint = query_param(&to_idp, "id_token_hint")
            .unwrap_or_else(|| panic!("sign-out sent no id_token_hint: {to_idp}"));

        let revocations = |stats: &Value| stat(stats, &["revocations"]);
        let before = revocations(&stats_before);
        let grants_revoked = |log: &str| log.matches("grant revoked").count();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let stats = self.idp.stats().await;
            let output = self.idp.output();
            if revocations(&stats) > before && grants_revoked(&output) > grants_revoked(&log_before)
            {
                break;
            }
            if Instant::now() >= deadline {
                panic!(
                    "sign-out did not revoke the refresh token at the IdP (revocations {} -> {}, \
                     `grant revoked` in the IdP log {} -> {}); IdP log since:\n{}",
                    before,
                    revocations(&stats),
                    grants_revoked(&log_before),
                    grants_revoked(&output),
                    &output[log_before.len().min(output.len())..]
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let output = self.idp.output();
        let since = &output[log_before.len().min(output.len())..];
        assert!(
            !since.contains("revocation error"),
            "the IdP refused the revocation request:\n{since}"
        );
        assert_eq!(
            self.idp.token_errors("invalid_client").await,
            0,
            "the IdP refused the gateway's client authentication at some point"
        );

        let replay = Browser::new();
        replay.set_cookie(SESSION_COOKIE, &session.cookie);
        let after = replay.api_get(&self.url_for("/whoami")).await;
        assert_eq!(
            after.status,
            StatusCode::UNAUTHORIZED,
            "the signed-out session still works\n{after}"
        );
        hint
    }

    /// Login, proxied request, refresh, proxied request, sign-out; nothing the IdP refused
    /// (no `invalid_grant`, no `invalid_client`). Returns the ID token the gateway held at
    /// the end (from the sign-out's `id_token_hint`).
    async fn whole_session(&self) -> String {
        let browser = Browser::new();
        let mut session = self.login(&browser).await;
        self.assert_userinfo_shows_alice(&browser).await;
        self.assert_policies_admit_alice(&browser).await;
        self.request_after_refresh(&browser, &mut session, "/after-refresh")
            .await;
        self.assert_userinfo_shows_alice(&browser).await;
        self.assert_policies_admit_alice(&browser).await;
        let hint = self.sign_out(&browser, &session).await;
        assert_eq!(self.idp.token_errors("invalid_grant").await, 0);
        assert_eq!(
            stat(
                &self.idp.stats().await,
                &["token_requests", "authorization_code"]
            ),
            1,
            "one code exchange"
        );
        hint
    }
}

/// A signed-in browser session.
struct Session {
    cookie: String,
    /// The access token the upstream got last.
    bearer: String,
    /// When the current access token was issued, at the latest.
    issued: Instant,
}

/// A counter from the IdP's stats (0 if absent).
fn stat(stats: &Value, path: &[&str]) -> u64 {
    let mut value = stats;
    for key in path {
        value = &value[key];
    }
    value.as_u64().unwrap_or(0)
}

/// Sleeps until an access token issued at `issued` is certainly due for refresh.
async fn sleep_until_due(issued: Instant) {
    let due = issued + Duration::from_millis((ACCESS_TTL - REFRESH_BEFORE) * 1000 + 200);
    tokio::time::sleep_until(due.into()).await;
}

/// The upstream got alice's subject, email and groups and a bearer token; returns it.
fn assert_alice_upstream(hop: &Hop, what: &str) -> String {
    let echo = hop.echo();
    assert_eq!(
        echo.header("x-forwarded-user"),
        Some(ALICE),
        "{what}\n{hop}"
    );
    assert_eq!(
        echo.header("x-forwarded-email"),
        Some(ALICE_EMAIL),
        "{what}: the email is missing or wrong\n{hop}"
    );
    assert_eq!(
        echo.header("x-forwarded-groups"),
        Some(ALICE_GROUPS),
        "{what}: the groups are missing or wrong\n{hop}"
    );
    bearer_of(hop)
}

/// The token of the `Authorization: Bearer` the upstream received.
fn bearer_of(hop: &Hop) -> String {
    let echo = hop.echo();
    let authorization = echo
        .header("authorization")
        .unwrap_or_else(|| panic!("the upstream got no Authorization header\n{hop}"));
    authorization
        .strip_prefix("Bearer ")
        .unwrap_or_else(|| panic!("not a Bearer token: {authorization}"))
        .to_string()
}

// ----- 1. claims only at userinfo (oidc-provider's defaults) ----------------------------------

#[tokio::test]
async fn login_gets_claims_from_userinfo_when_id_token_has_none() {
    let stack = Stack::start(Options::default(), |idp| idp).await;
    let id_token = stack.whole_session().await;

    // The ID token really carries no identity claims: email, name, groups and department
    // upstream and in the policies can only have come from the userinfo endpoint.
    let (_, claims) = jwt_parts(&id_token);
    assert_eq!(claims["sub"], ALICE, "{claims}");
    for claim in ["email", "name", "groups", "department"] {
        assert!(
            claims.get(claim).is_none(),
            "the default IdP put {claim} in the ID token: {claims}"
        );
    }
    assert!(
        stack.userinfo_requests().await >= 1,
        "the gateway never asked the userinfo endpoint"
    );
}

// ----- 2. oidc.userinfo: auto, never, always ------------------------------------------------

#[tokio::test]
async fn login_needs_no_userinfo_call_when_the_id_token_has_every_claim() {
    let stack = Stack::start(Options::default(), |idp| idp.claims_in_id_token()).await;
    let id_token = stack.whole_session().await;

    // With CLAIMS_IN_ID_TOKEN the ID token (at login and after the refresh: this is the
    // refreshed one) carries every claim the gateway needs: email, name,
    // preferred_username, `groups` (alice's are not empty, so the claim is present) and
    // `department`, which the `/eng` policy names. So "auto" has nothing to ask userinfo.
    let (_, claims) = jwt_parts(&id_token);
    assert_eq!(claims["email"], ALICE_EMAIL, "{claims}");
    assert_eq!(claims["name"], ALICE_NAME, "{claims}");
    assert_eq!(claims["preferred_username"], ALICE, "{claims}");
    assert_eq!(claims["groups"], json!(["admins", "eng"]), "{claims}");
    assert_eq!(claims["department"], "eng", "{claims}");
    assert_eq!(
        stack.userinfo_requests().await,
        0,
        "userinfo = \"auto\" called userinfo although the ID token had every claim"
    );
}

#[tokio::test]
async fn userinfo_never_leaves_the_identity_without_email() {
    let stack = Stack::start(Options::userinfo("never"), |idp| idp).await;
    let browser = Browser::new();
    let login = browser.login(&stack.url(), "/start", ALICE).await;
    let issued = Instant::now();
    let echo = login.landing.echo();
    assert_eq!(echo.header("x-forwarded-user"), Some(ALICE));
    // The default IdP's ID token has only the subject, and the gateway may not ask
    // userinfo: no email, no groups.
    assert_eq!(echo.header("x-forwarded-email"), None, "{}", login.landing);
    assert!(
        echo.header("x-forwarded-groups")
            .unwrap_or_default()
            .is_empty(),
        "{}",
        login.landing
    );
    let me = browser
        .api_get(&stack.url_for("/oauth2/userinfo"))
        .await
        .json();
    assert_eq!(me["sub"], ALICE, "{me}");
    assert!(me["email"].is_null(), "{me}");

    // So a domain rule cannot admit alice: 403, not the upstream.
    let before = stack.upstream.received().len();
    let corp = browser.api_get(&stack.url_for("/corp/report")).await;
    assert_eq!(
        corp.status,
        StatusCode::FORBIDDEN,
        "without an email the domain rule must deny\n{corp}"
    );
    assert_eq!(stack.upstream.received().len(), before);
    assert_eq!(stack.userinfo_requests().await, 0);

    // After a refresh, still nothing from userinfo.
    sleep_until_due(issued).await;
    let refreshes = stack.refreshes().await;
    let after = browser.navigate(&stack.url_for("/after-refresh")).await;
    assert_eq!(after.echo().header("x-forwarded-user"), Some(ALICE));
    assert_eq!(after.echo().header("x-forwarded-email"), None);
    assert_eq!(stack.refreshes().await, refreshes + 1, "a refresh happened");
    assert_eq!(stack.userinfo_requests().await, 0);
    let corp = browser.api_get(&stack.url_for("/corp/report")).await;
    assert_eq!(corp.status, StatusCode::FORBIDDEN, "{corp}");
}

#[tokio::test]
async fn userinfo_always_is_asked_at_login_and_after_every_refresh() {
    let stack = Stack::start(Options::userinfo("always"), |idp| idp.claims_in_id_token()).await;
    let browser = Browser::new();
    let mut session = stack.login(&browser).await;
    let at_login = stack.userinfo_requests().await;
    assert!(
        at_login >= 1,
        "userinfo = \"always\" must ask userinfo even when the ID token has every claim"
    );
    stack.assert_userinfo_shows_alice(&browser).await;

    for round in 1..=2 {
        let before = stack.userinfo_requests().await;
        stack
            .request_after_refresh(&browser, &mut session, "/after-refresh")
            .await;
        assert!(
            stack.userinfo_requests().await > before,
            "refresh {round}: userinfo = \"always\" must refresh the claims from userinfo"
        );
        stack.assert_userinfo_shows_alice(&browser).await;
        stack.assert_policies_admit_alice(&browser).await;
    }
    assert_eq!(stack.idp.token_errors("invalid_grant").await, 0);
}

// ----- 3. signed userinfo ---------------------------------------------------------------------

#[tokio::test]
async fn signed_userinfo_jwt_is_verified_and_used() {
    let stack = Stack::start(Options::default(), |idp| idp.signed_userinfo()).await;
    let id_token = stack.whole_session().await;
    // The claims came from the (application/jwt) userinfo answer: the ID token has none.
    let (_, claims) = jwt_parts(&id_token);
    assert!(claims.get("email").is_none(), "{claims}");
    assert!(stack.userinfo_requests().await >= 1);
}

// ----- 4. signing algorithms ------------------------------------------------------------------

async fn assert_whole_session_with_signing_alg(alg: &str) {
    let stack = Stack::start(Options::default(), |idp| idp.signing_alg(alg)).await;
    let id_token = stack.whole_session().await;
    let (header, claims) = jwt_parts(&id_token);
    assert_eq!(header["alg"], alg, "the IdP signed with another algorithm");
    assert_eq!(claims["sub"], ALICE);
}

#[tokio::test]
async fn es256_signing_idp_works_for_login_and_refresh() {
    assert_whole_session_with_signing_alg("ES256").await;
}

#[tokio::test]
async fn rs256_signing_idp_works_for_login_and_refresh() {
    assert_whole_session_with_signing_alg("RS256").await;
}

// ----- 5. client authentication -----------------------------------------------------------------

/// The IdP enforces the registered `token_endpoint_auth_method` on every call (code
/// exchange, refresh, revocation), so a whole session with no `invalid_client` means the
/// gateway authenticated that way each time. For private_key_jwt oidc-provider also
/// refuses a replayed assertion (`jti`), so three successful calls need three assertions.
async fn assert_whole_session_with(auth: ClientAuth) {
    let stack = Stack::start(Options::auth(auth), |idp| idp).await;
    stack.whole_session().await;
}

#[tokio::test]
async fn client_secret_basic_session_logs_in_refreshes_and_signs_out() {
    assert_whole_session_with(ClientAuth::SecretBasic).await;
}

#[tokio::test]
async fn client_secret_post_session_logs_in_refreshes_and_signs_out() {
    assert_whole_session_with(ClientAuth::SecretPost).await;
}

#[tokio::test]
async fn public_client_session_logs_in_refreshes_and_signs_out() {
    assert_whole_session_with(ClientAuth::Public).await;
}

#[tokio::test]
async fn private_key_jwt_with_rsa_pkcs8_key_logs_in_refreshes_and_signs_out() {
    assert_whole_session_with(ClientAuth::PrivateKeyJwt(ClientKeyKind::RsaPkcs8)).await;
}

#[tokio::test]
async fn private_key_jwt_with_rsa_pkcs1_key_logs_in_refreshes_and_signs_out() {
    assert_whole_session_with(ClientAuth::PrivateKeyJwt(ClientKeyKind::RsaPkcs1)).await;
}

#[tokio::test]
async fn private_key_jwt_with_ec_pkcs8_key_logs_in_refreshes_and_signs_out() {
    assert_whole_session_with(ClientAuth::PrivateKeyJwt(ClientKeyKind::EcPkcs8)).await;
}

#[tokio::test]
async fn private_key_jwt_with_ec_sec1_key_logs_in_refreshes_and_signs_out() {
    assert_whole_session_with(ClientAuth::PrivateKeyJwt(ClientKeyKind::EcSec1)).await;
}

/// The IdP registered the key under a kid of its own choosing, not the thumbprint: the
/// gateway's assertions name it (`oidc.client_key_id`), or the IdP finds no key.
#[tokio::test]
async fn private_key_jwt_with_a_configured_key_id_logs_in_refreshes_and_signs_out() {
    let options = Options {
        client_key_id: Some("portcullis-client-key-2"),
        ..Options::auth(ClientAuth::PrivateKeyJwt(ClientKeyKind::EcPkcs8))
    };
    let stack = Stack::start(options, |idp| idp).await;
    assert!(
        stack
            .idp
            .output()
            .contains("client key portcullis-client-key-2"),
        "the IdP did not register the key under the configured kid:\n{}",
        stack.idp.output()
    );
    stack.whole_session().await;
}

// ----- 6. an unusable client key file ---------------------------------------------------------

/// What a finished `portcullis` invocation printed.
#[derive(Debug)]
struct Outcome {
    code: Option<i32>,
    output: String,
}

/// Runs `portcullis <args> --config <config>` (stdout and stderr to files, no pipes),
/// killed after 20 s.
fn run_portcullis(dir: &Path, args: &[&str], config: &Path) -> Outcome {
    let out_path = dir.join(format!("out-{}.txt", random_hex(4)));
    let out = std::fs::File::create(&out_path).expect("create output file");
    let mut cmd = Command::new(bin());
    cmd.args(args).arg("--config").arg(config);
    for (key, _) in std::env::vars() {
        if key.starts_with("PORTCULLIS") || key == "RUST_LOG" {
            cmd.env_remove(key);
        }
    }
    let mut child = cmd
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("spawn portcullis");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = std::fs::read_to_string(&out_path).unwrap_or_default();
    assert!(
        status.is_some(),
        "portcullis {args:?} did not exit within 20 s; output:\n{output}"
    );
    Outcome {
        code: status.and_then(|s| s.code()),
        output,
    }
}

fn private_key_jwt_config(key_file: &Path) -> String {
    let port = free_port();
    format!(
        r#"[server]
listen = "127.0.0.1:{port}"
public_url = "http://127.0.0.1:{port}"

[oidc]
issuer = "http://127.0.0.1:{idp}"
client_id = "{CLIENT_ID}"
token_endpoint_auth_method = "private_key_jwt"
client_key_file = "{key}"

[session]
secret = ["{secret}"]
cookie_secure = false

[[route]]
path = "/"
upstream = "http://127.0.0.1:{upstream}"
"#,
        idp = free_port(),
        key = key_file.display(),
        secret = random_hex(32),
        upstream = free_port(),
    )
}

#[test]
fn unparsable_client_key_file_is_a_config_error_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("portcullis.toml");

    // Control: the same config with a real key is valid.
    let good = write_client_key(dir.path(), ClientKeyKind::RsaPkcs8);
    std::fs::write(&config, private_key_jwt_config(&good)).unwrap();
    let ok = run_portcullis(dir.path(), &["check-config"], &config);
    assert_eq!(ok.code, Some(0), "a valid key file: {ok:?}");

    let broken_pem = "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5IGF0IGFsbCwganVzdCBzb21lIHRleHQ=\n-----END PRIVATE KEY-----\n";
    let cases: [(&str, &str); 3] = [
        ("not PEM at all", "this is not a private key\n"),
        ("a PEM block whose DER is no key", broken_pem),
        ("an empty file", ""),
    ];
    for (what, contents) in cases {
        let key = dir.path().join(format!("bad-{}.pem", random_hex(4)));
        std::fs::write(&key, contents).unwrap();
        std::fs::write(&config, private_key_jwt_config(&key)).unwrap();
        for args in [&["check-config"][..], &["run"][..]] {
            let outcome = run_portcullis(dir.path(), args, &config);
            assert!(
                outcome.code.is_some_and(|c| c != 0),
                "{what}: portcullis {args:?} must exit non-zero: {outcome:?}"
            );
            assert!(
                outcome.output.contains("oidc.client_key_file"),
                "{what}: portcullis {args:?} must name oidc.client_key_file: {outcome:?}"
            );
            assert!(!outcome.output.contains("panicked"), "{what}: {outcome:?}");
        }
    }
}

// ----- 7. the IdP refuses the gateway's own credentials ----------------------------------------

#[tokio::test]
async fn wrong_client_secret_shows_that_the_gateways_credentials_were_refused() {
    let stack = Stack::start(
        Options {
            wrong_secret: true,
            ..Options::default()
        },
        |idp| idp,
    )
    .await;
    let browser = Browser::new();
    let started = browser.begin_login(&stack.url(), "/start").await;
    let idp = browser.idp_sign_in(&started.authorize_url, ALICE).await;
    let page = browser.callback(&idp.redirect).await;
    assert!(
        page.status.is_client_error() || page.status.is_server_error(),
        "the login must fail\n{page}"
    );
    assert!(
        page.header("content-type")
            .unwrap_or_default()
            .starts_with("text/html"),
        "{page}"
    );
    assert!(
        page.body
            .to_ascii_lowercase()
            .contains("client credentials"),
        "the error page must say the gateway's client credentials were refused\n{page}"
    );
    assert!(
        page.set_cookie(SESSION_COOKIE).is_none(),
        "no session cookie\n{page}"
    );
    let me = browser.api_get(&stack.url_for("/oauth2/userinfo")).await;
    assert_eq!(me.status, StatusCode::UNAUTHORIZED, "{me}");
    assert!(
        stack.idp.token_errors("invalid_client").await >= 1,
        "the IdP should have answered invalid_client"
    );
    assert!(stack.upstream.received().is_empty());
    // The secret the IdP knows is not the one that was refused.
    assert!(!page.body.contains(&stack.client_secret));
}

// ----- 8. what a correct IdP never sends (mock IdP) -----------------------------------------------

/// The mock IdP, an echo upstream and a gateway with `userinfo = "auto"` (the default).
struct MockStack {
    idp: MockIdp,
    upstream: EchoUpstream,
    gateway: Gateway,
}

impl MockStack {
    /// ID tokens without identity claims, userinfo answering `answer`.
    async fn start(answer: MockUserinfo) -> Self {
        let idp = MockIdp::start().await;
        idp.set_minimal_id_tokens(true);
        idp.set_userinfo(Some(answer));
        Self::launch(idp).await
    }

    /// A gateway (refreshing [`REFRESH_BEFORE`] s before expiry) in front of `idp`.
    async fn launch(idp: MockIdp) -> Self {
        let upstream = EchoUpstream::start().await;
        let toml = format!(
            r#"[server]
listen = "@LISTEN@"
public_url = "@PUBLIC_URL@"

[log]
format = "json"
filter = "info"

[oidc]
issuer = "{issuer}"
client_id = "{CLIENT_ID}"
client_secret = "mock-secret-{secret}"
scopes = ["openid", "email", "profile", "offline_access"]
groups_claim = "groups"

[session]
secret = ["{session_secret}"]
cookie_secure = false
refresh_before = "{REFRESH_BEFORE}s"

[[route]]
path = "/"
upstream = "{upstream}"
"#,
            issuer = idp.issuer(),
            secret = random_hex(8),
            session_secret = random_hex(32),
            upstream = upstream.url(),
        );
        let gateway = Gateway::start(&toml).await;
        wait_for_readyz(&gateway).await;
        MockStack {
            idp,
            upstream,
            gateway,
        }
    }

    /// Begins a login at `/x`, passes the mock's authorization endpoint, loads the
    /// callback; returns the callback's response.
    async fn login_attempt(&self, browser: &Browser) -> Hop {
        let started = browser.begin_login(&self.gateway.url(), "/x").await;
        let IdpStep::Left(callback) = browser.idp_open(&started.authorize_url).await else {
            panic!("the mock IdP showed a page");
        };
        browser.callback(&callback).await
    }

    /// The callback refused the login: an HTML error page, no session cookie, no session;
    /// the gateway asked userinfo with the access token it had just received.
    async fn assert_refused(&self, browser: &Browser, page: &Hop, what: &str) {
        assert!(
            page.status.is_client_error() || page.status.is_server_error(),
            "{what}: the login must be refused\n{page}"
        );
        assert!(
            page.header("content-type")
                .unwrap_or_default()
                .starts_with("text/html"),
            "{what}: an HTML error page\n{page}"
        );
        assert!(
            page.set_cookie(SESSION_COOKIE).is_none(),
            "{what}: no session cookie\n{page}"
        );
        let me = browser
            .api_get(&self.gateway.url_for("/oauth2/userinfo"))
            .await;
        assert_eq!(me.status, StatusCode::UNAUTHORIZED, "{what}: {me}");
        assert!(self.upstream.received().is_empty(), "{what}");
        self.assert_asked_userinfo_with_the_new_token(what);
    }

    fn assert_asked_userinfo_with_the_new_token(&self, what: &str) {
        let issued = self.idp.issued();
        let access_token = &issued.last().expect("the mock issued tokens").access_token;
        let requests = self.idp.userinfo_requests();
        assert!(
            requests
                .iter()
                .any(|r| r.authorization.as_deref() == Some(&format!("Bearer {access_token}"))),
            "{what}: the gateway did not call userinfo with the new access token: {requests:?}"
        );
    }

    /// Control: with a correct userinfo answer the same login works, and the identity is
    /// the one from userinfo (the ID tokens have no email).
    async fn assert_correct_userinfo_logs_in(&self) {
        self.assert_logs_in_with(MockUserinfo::claims_with_sub(MOCK_SUB))
            .await;
    }

    /// With userinfo answering `answer`, a login works and the identity is the one from
    /// userinfo.
    async fn assert_logs_in_with(&self, answer: MockUserinfo) {
        self.idp.set_userinfo(Some(answer));
        let browser = Browser::new();
        let ok = self.login_attempt(&browser).await;
        assert_eq!(ok.status, StatusCode::FOUND, "control login\n{ok}");
        assert!(ok.set_cookie(SESSION_COOKIE).is_some(), "{ok}");
        let echo = browser.follow(&ok).await.echo();
        assert_eq!(echo.header("x-forwarded-user"), Some(MOCK_SUB));
        assert_eq!(
            echo.header("x-forwarded-email"),
            Some("mock-user@corp.test")
        );
        assert_eq!(echo.header("x-forwarded-groups"), Some("mockers"));
        self.assert_asked_userinfo_with_the_new_token("control");
    }
}

/// The gateway's JSON log lines other than the per-request ones, lowercased.
fn event_lines(log: &str) -> impl Iterator<Item = String> + '_ {
    log.lines()
        .filter(|line| {
            serde_json::from_str::<Value>(line).map_or(true, |v| v["message"] != "request")
        })
        .map(str::to_ascii_lowercase)
}

#[tokio::test]
async fn userinfo_for_another_subject_refuses_the_login() {
    let stack = MockStack::start(MockUserinfo::claims_with_sub("mallory")).await;
    let browser = Browser::new();
    let page = stack.login_attempt(&browser).await;
    stack
        .assert_refused(&browser, &page, "userinfo sub = mallory")
        .await;
    let log = stack
        .gateway
        .wait_for_log(
            "a line about the userinfo sub mismatch",
            Duration::from_secs(5),
            |log| event_lines(log).any(|l| l.contains("userinfo") && l.contains("sub")),
        )
        .await;
    assert!(!log.contains("panicked"), "{log}");

    // A userinfo answer without any `sub` is no better.
    let mut claims = mock_user_claims(MOCK_SUB);
    claims.as_object_mut().unwrap().remove("sub");
    stack.idp.set_userinfo(Some(MockUserinfo::Claims(claims)));
    let browser = Browser::new();
    let page = stack.login_attempt(&browser).await;
    stack
        .assert_refused(&browser, &page, "userinfo without sub")
        .await;

    stack.assert_correct_userinfo_logs_in().await;
}

#[tokio::test]
async fn userinfo_error_refuses_the_login_instead_of_a_session_without_email() {
    let stack = MockStack::start(MockUserinfo::Status(500)).await;
    let browser = Browser::new();
    let page = stack.login_attempt(&browser).await;
    stack
        .assert_refused(&browser, &page, "userinfo answers 500")
        .await;
    stack
        .gateway
        .wait_for_log(
            "a line about the failed userinfo request",
            Duration::from_secs(5),
            |log| event_lines(log).any(|l| l.contains("userinfo")),
        )
        .await;

    stack.assert_correct_userinfo_logs_in().await;
}

#[tokio::test]
async fn signed_userinfo_with_a_forged_signature_refuses_the_login() {
    let stack = MockStack::start(MockUserinfo::SignedJwt {
        claims: mock_user_claims(MOCK_SUB),
        forged: true,
    })
    .await;
    let browser = Browser::new();
    let page = stack.login_attempt(&browser).await;
    stack
        .assert_refused(
            &browser,
            &page,
            "userinfo JWT signed by a key not in the JWKS",
        )
        .await;
    stack
        .gateway
        .wait_for_log(
            "a line about the rejected userinfo",
            Duration::from_secs(5),
            |log| event_lines(log).any(|l| l.contains("userinfo")),
        )
        .await;

    // Control: the same JWT signed with the IdP's key is accepted and its claims are used.
    stack
        .assert_logs_in_with(MockUserinfo::SignedJwt {
            claims: mock_user_claims(MOCK_SUB),
            forged: false,
        })
        .await;
}

/// Warn-level gateway log lines (other than per-request lines).
fn warnings(gateway: &Gateway) -> Vec<String> {
    event_lines(&gateway.log_text())
        .filter(|l| l.contains("\"level\":\"warn\""))
        .collect()
}

/// A refresh whose new ID token fails validation (signed by another key; from another
/// issuer) still keeps what the token endpoint returned: the new access token goes
/// upstream, the rotated refresh token is the one used next (never the spent one), the
/// identity stays, and a warning is logged.
#[tokio::test]
async fn refreshed_id_token_that_fails_validation_keeps_the_new_tokens() {
    let idp = MockIdp::start().await;
    idp.set_access_token_ttl(ACCESS_TTL);
    let stack = MockStack::launch(idp).await;
    let browser = Browser::new();
    let callback = stack.login_attempt(&browser).await;
    assert_eq!(callback.status, StatusCode::FOUND, "{callback}");
    let landing = browser.follow(&callback).await;
    let mut issued_at = Instant::now();
    assert_eq!(
        bearer_of(&landing),
        stack.idp.issued()[0].access_token,
        "the login's access token"
    );

    for (round, fault) in [
        IdTokenFault::UnknownKey,
        IdTokenFault::WrongIssuer,
        IdTokenFault::None,
    ]
    .into_iter()
    .enumerate()
    {
        stack.idp.set_fault(fault);
        let warnings_before = warnings(&stack.gateway).len();
        sleep_until_due(issued_at).await;
        let hop = browser.navigate(&stack.gateway.url_for("/after")).await;
        issued_at = Instant::now();
        assert_eq!(
            hop.status,
            StatusCode::OK,
            "{fault:?}: the session must survive a refresh\n{hop}"
        );
        assert_eq!(
            stack.idp.refresh_requests(),
            round + 1,
            "{fault:?}: one refresh per round"
        );
        assert_eq!(
            stack.idp.refresh_replays(),
            0,
            "{fault:?}: a spent refresh token was sent again: {:?}",
            stack.idp.refusals()
        );
        let issued = stack.idp.issued();
        let newest = issued.last().unwrap();
        assert_eq!(newest.grant_type, "refresh_token");
        assert_eq!(
            bearer_of(&hop),
            newest.access_token,
            "{fault:?}: the upstream must get the access token the refresh returned"
        );
        let echo = hop.echo();
        assert_eq!(echo.header("x-forwarded-user"), Some(MOCK_SUB), "{fault:?}");
        assert_eq!(
            echo.header("x-forwarded-email"),
            Some("mock-user@corp.test"),
            "{fault:?}: the identity must stay"
        );
        assert_eq!(
            echo.header("x-forwarded-groups"),
            Some("mockers"),
            "{fault:?}"
        );
        // The log is written by a background thread: wait for this round's access line,
        // which the gateway logs after any warning of the refresh (one queue, in order).
        stack
            .gateway
            .wait_for_log(
                "this round's request line",
                Duration::from_secs(10),
                |log| log.matches("\"path\":\"/after\"").count() > round,
            )
            .await;
        let warned = warnings(&stack.gateway).len() > warnings_before;
        if fault == IdTokenFault::None {
            assert!(
                !warned,
                "a valid refreshed ID token: {:?}",
                warnings(&stack.gateway)
            );
        } else {
            assert!(
                warned,
                "{fault:?}: no warning about the rejected ID token; log:\n{}",
                stack.gateway.log_text()
            );
        }
    }
    let me = browser
        .api_get(&stack.gateway.url_for("/oauth2/userinfo"))
        .await
        .json();
    assert_eq!(me["email"], "mock-user@corp.test", "{me}");
    assert_eq!(me["groups"], json!(["mockers"]), "{me}");
}

// ----- 9. key rotation during a session ------------------------------------------------------

/// Logs in, rotates the IdP's signing key just before the access token is due, and lets
/// the gateway refresh three times: the first refresh gets an ID token under a kid the
/// gateway has never seen (so it must refetch the JWKS at once), and the session goes on
/// as if nothing happened.
async fn assert_session_survives_key_rotation(keep_old: bool) {
    let stack = Stack::start_process(Options::default(), |idp| idp).await;
    let browser = Browser::new();
    let mut session = stack.login(&browser).await;
    let again = browser.navigate(&stack.url_for("/before-rotation")).await;
    assert_eq!(bearer_of(&again), session.bearer);
    let old_kids: Vec<String> = stack
        .idp
        .jwks()
        .await
        .keys
        .iter()
        .filter_map(|k| k.common.key_id.clone())
        .collect();

    // Rotate half a second before the token is due.
    let due = session.issued + Duration::from_millis((ACCESS_TTL - REFRESH_BEFORE) * 1000 + 200);
    tokio::time::sleep_until((due - Duration::from_millis(500)).into()).await;
    let jwks_before = stack.jwks_requests().await;
    let rotated = stack.idp.rotate_keys(keep_old).await;
    let new_kid = rotated["kid"]
        .as_str()
        .expect("rotate_keys names the new kid")
        .to_string();
    assert!(!old_kids.contains(&new_kid), "{rotated}");
    let published: Vec<&str> = rotated["kids"]
        .as_array()
        .expect("kids")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        published.iter().any(|k| old_kids.iter().any(|o| o == k)),
        keep_old,
        "old keys published after the rotation: {rotated}"
    );

    let rotated_at = Instant::now();
    stack
        .request_after_refresh(&browser, &mut session, "/after-rotation")
        .await;
    println!(
        "first refresh after the rotation completed {:?} after the rotate_keys call returned",
        rotated_at.elapsed()
    );
    assert!(
        stack.jwks_requests().await > jwks_before,
        "the gateway did not refetch the JWKS for the new kid"
    );
    for round in 2..=3 {
        stack
            .request_after_refresh(&browser, &mut session, &format!("/refresh-{round}"))
            .await;
    }
    assert_eq!(
        stack.idp.token_errors("invalid_grant").await,
        0,
        "a refresh token was refused (replayed or lost)"
    );

    // The ID token the session holds now came from a refresh after the rotation, signed
    // with the new key, and the gateway accepted it (a refreshed ID token that fails
    // validation is not stored).
    let hint = stack.sign_out(&browser, &session).await;
    let (header, claims) = jwt_parts(&hint);
    assert_eq!(header["kid"], new_kid.as_str(), "{header}");
    assert_eq!(claims["sub"], ALICE);
    let log = stack.gateway.log_text();
    let trouble: Vec<String> = event_lines(&log)
        .filter(|l| {
            l.contains("refresh_failed")
                || (l.contains("\"warn\"") && (l.contains("id token") || l.contains("id_token")))
        })
        .collect();
    assert!(
        trouble.is_empty(),
        "the gateway failed a refresh or warned about an ID token:\n{}",
        trouble.join("\n")
    );
}

#[tokio::test]
async fn session_survives_signing_key_rotation() {
    assert_session_survives_key_rotation(true).await;
}

#[tokio::test]
async fn session_survives_signing_key_rotation_that_drops_the_old_key() {
    assert_session_survives_key_rotation(false).await;
}

// ----- 10. JWKS refetch cannot be starved by forged kids -------------------------------------

/// An authorization code of the gateway's client for alice, obtained by the test itself
/// (PKCE, `resource` at /auth): exchange it with [`AuthorizationCode::exchange`]. The
/// access token is signed when the code is exchanged, so with the IdP's key at that
/// moment.
struct AuthorizationCode {
    code: String,
    verifier: String,
    redirect_uri: String,
    resource: String,
}

impl AuthorizationCode {
    async fn obtain(stack: &Stack<impl GatewayAddr>, resource: &str) -> Self {
        let discovery = stack.idp.discovery().await;
        let verifier = random_hex(32);
        let challenge = base64_url(
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes()).as_ref(),
        );
        let redirect_uri = stack.url_for("/oauth2/callback");
        let mut authorize =
            Url::parse(discovery["authorization_endpoint"].as_str().unwrap()).unwrap();
        authorize
            .query_pairs_mut()
            .append_pair("client_id", CLIENT_ID)
            .append_pair("response_type", "code")
            .append_pair("scope", "openid")
            .append_pair("redirect_uri", &redirect_uri)
            .append_pair("state", &random_hex(8))
            .append_pair("nonce", &random_hex(8))
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256")
            .append_pair("resource", resource);
        let outcome = Browser::new().idp_sign_in(&authorize, ALICE).await;
        let code = query_param(&outcome.redirect, "code")
            .unwrap_or_else(|| panic!("no code in {}", outcome.redirect));
        AuthorizationCode {
            code,
            verifier,
            redirect_uri,
            resource: resource.to_string(),
        }
    }

    /// The real access token (a JWT for the resource) from the IdP's token endpoint.
    async fn exchange(self, stack: &Stack<impl GatewayAddr>) -> String {
        let discovery = stack.idp.discovery().await;
        let resp = common::client()
            .post(discovery["token_endpoint"].as_str().unwrap())
            .basic_auth(CLIENT_ID, Some(&stack.client_secret))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", self.code.as_str()),
                ("redirect_uri", self.redirect_uri.as_str()),
                ("code_verifier", self.verifier.as_str()),
                ("resource", self.resource.as_str()),
            ])
            .send()
            .await
            .expect("token request");
        let status = resp.status();
        let body: Value = resp.json().await.expect("token response JSON");
        assert_eq!(status, StatusCode::OK, "token response {body}");
        body["access_token"].as_str().unwrap().to_string()
    }
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// `GET url` with `Authorization: Bearer <token>`, no cookies.
async fn bearer_get(client: &reqwest::Client, url: &str, token: &str) -> (StatusCode, String) {
    let resp = client
        .request(Method::GET, url)
        .header(ACCEPT, "application/json")
        .header(AUTHORIZATION, format!("Bearer {token}"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = resp.status();
    (status, resp.text().await.unwrap_or_default())
}

/// Sends `count` JWTs that look like the IdP's access tokens but carry random `kid`s (and
/// a signature by a key the IdP never had), `concurrency` at a time; each must get 401.
async fn flood_with_random_kids(stack: &Stack<impl GatewayAddr>, count: usize, concurrency: usize) {
    let key = SigningKey::rsa("forger");
    let client = common::client();
    let url = stack.url_for("/api/orders");
    let issuer = stack.idp.issuer().to_string();
    let tokens: Vec<String> = (0..count)
        .map(|_| {
            let now = unix_now();
            let header = json!({"alg": "RS256", "typ": "at+jwt", "kid": random_hex(8)});
            let claims = json!({
                "iss": issuer, "sub": ALICE, "aud": DEFAULT_API_RESOURCE,
                "client_id": CLIENT_ID, "scope": "openid", "jti": random_hex(8),
                "iat": now, "exp": now + 600,
            });
            mint_jwt(&header, &claims, Signer::Key(&key))
        })
        .collect();
    let statuses: Vec<StatusCode> = stream::iter(tokens)
        .map(|token| {
            let client = client.clone();
            let url = url.clone();
            async move { bearer_get(&client, &url, &token).await.0 }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::UNAUTHORIZED)
        .count();
    assert_eq!(
        refused,
        count,
        "every forged token must get 401; got {:?}",
        statuses
            .iter()
            .filter(|s| **s != StatusCode::UNAUTHORIZED)
            .collect::<Vec<_>>()
    );
}

/// Forged tokens with random kids make the gateway fetch the JWKS at a bounded rate, and
/// right after such a flood (the forgers' last fetch a moment ago, before the rotation), a
/// real token under a key the IdP has just rotated to is accepted at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forged_kids_cannot_delay_the_jwks_refetch_after_a_rotation() {
    let stack = Stack::start(Options::default(), |idp| idp).await;
    let client = common::client();
    let url = stack.url_for("/api/orders");

    // Control: a real token under the current key is accepted.
    let token = AuthorizationCode::obtain(&stack, DEFAULT_API_RESOURCE)
        .await
        .exchange(&stack)
        .await;
    let (status, body) = bearer_get(&client, &url, &token).await;
    assert_eq!(status, StatusCode::OK, "a real IdP token: {body}");
    // The code for the real token after the rotation, ready before the flood, so that only
    // the code exchange (which signs the token) lies between the flood and the request.
    let code = AuthorizationCode::obtain(&stack, DEFAULT_API_RESOURCE).await;

    let jwks_before = stack.jwks_requests().await;
    let flood_started = Instant::now();
    flood_with_random_kids(&stack, 1000, 50).await;
    let flood_ended = Instant::now();
    let flood_took = flood_ended - flood_started;
    let flood_jwks = stack.jwks_requests().await - jwks_before;
    println!(
        "1000 forged kids in {flood_took:?}: {flood_jwks} JWKS request(s) at the IdP ({:.1}/s)",
        flood_jwks as f64 / flood_took.as_secs_f64()
    );
    // The bound is on the gateway's refetch rate, not on the number of forged tokens:
    // unknown kids may cause a fetch per spacing interval while the flood lasts (and the
    // flood lasts longer when each forged request waits for the next fetch), never one
    // per token.
    assert!(
        flood_jwks <= 50,
        "1000 tokens with random kids made the gateway fetch the JWKS {flood_jwks} times"
    );

    let rotated = stack.idp.rotate_keys(true).await;
    let rotated_at = Instant::now();
    let new_kid = rotated["kid"].as_str().expect("new kid").to_string();
    let fresh = code.exchange(&stack).await;
    let (header, _) = jwt_parts(&fresh);
    assert_eq!(header["kid"], new_kid.as_str(), "signed with the new key");

    let sent = Instant::now();
    let (status, body) = bearer_get(&client, &url, &fresh).await;
    let took = sent.elapsed();
    let total_jwks = stack.jwks_requests().await - jwks_before;
    println!(
        "token under the new kid: {status} in {took:?} (sent {:?} after the flood ended, \
         {:?} after the rotation); {total_jwks} JWKS request(s) since the flood began",
        sent - flood_ended,
        sent - rotated_at,
    );
    assert_eq!(
        status,
        StatusCode::OK,
        "a real token under the new key must be accepted at once: {body}"
    );
    let echo = common::Echoed::parse(body.as_bytes());
    assert_eq!(
        echo.header("authorization"),
        Some(format!("Bearer {fresh}").as_str())
    );
    assert_eq!(echo.header("x-forwarded-user"), Some(ALICE));
    assert!(
        took < Duration::from_millis(1500),
        "the request under the new kid took {took:?}: the refetch was held back"
    );
    assert!(
        total_jwks > flood_jwks,
        "the new kid was accepted without a JWKS fetch after the rotation?"
    );
}
