//! Helpers for `tests/lifecycle.rs` (refresh, timeouts, sign-out, back-channel logout, API
//! bearer tokens, secret rotation):
//!
//! - [`LifecycleStack`]: the node test IdP, an echo upstream and the gateway, with the
//!   gateway's port chosen first so the IdP can be told its redirect, post-logout and
//!   back-channel logout URIs; the gateway runs in-process, or as a process
//!   ([`LifecycleStack::start_process`]) for the tests that signal it or read its log.
//! - [`start_gateway_for`]: the gateway (same routes) in front of a [`MockIdp`] whose
//!   signing key the test holds, so it can mint tokens that are valid except for exactly
//!   one fault (wrong `aud`, expired, a `nonce` in a logout token, ...).

use std::time::Duration;

use serde_json::Value;

use super::gateway::{
    try_start_gateway, wait_for_readyz, GatewayAddr, GatewayListener, InProcessGateway,
};
use super::idp::{Idp, IdpBuilder, DEFAULT_API_RESOURCE};
use super::login::random_hex;
use super::mock_idp::MockIdp;
use super::{free_port, EchoUpstream, Gateway};

// ----- gateway configuration ------------------------------------------------------------

/// The parts of the gateway's config the lifecycle tests vary.
#[derive(Debug, Clone)]
pub struct GatewaySettings {
    pub client_id: String,
    pub client_secret: String,
    /// `session.secret`: the first seals, all open.
    pub secrets: Vec<String>,
    pub idle_timeout: String,
    pub absolute_timeout: String,
    pub refresh_before: String,
    pub sign_out_requires_post: bool,
    pub api_audience: String,
    /// More TOML appended to the config (e.g. a `[telemetry]` section).
    pub extra_toml: String,
}

impl Default for GatewaySettings {
    fn default() -> Self {
        GatewaySettings {
            client_id: "gateway".to_string(),
            client_secret: format!("client-secret-{}", random_hex(16)),
            secrets: vec![random_hex(32)],
            idle_timeout: "8h".to_string(),
            absolute_timeout: "24h".to_string(),
            refresh_before: "60s".to_string(),
            sign_out_requires_post: false,
            api_audience: DEFAULT_API_RESOURCE.to_string(),
            extra_toml: String::new(),
        }
    }
}

/// Path prefix of the route with `accept_bearer = true`; everything else goes to a route
/// without it. Both lead to the same echo upstream.
pub const BEARER_PREFIX: &str = "/api";

/// The gateway's config: `/api` accepts API clients' own bearer JWTs, `/` does not.
pub fn gateway_toml(
    port: impl std::fmt::Display,
    issuer: &str,
    upstream: &str,
    s: &GatewaySettings,
) -> String {
    let secrets: Vec<String> = s.secrets.iter().map(|x| format!("\"{x}\"")).collect();
    format!(
        r#"[server]
listen = "127.0.0.1:{port}"
public_url = "http://127.0.0.1:{port}"

[log]
format = "json"
filter = "info"

[oidc]
issuer = "{issuer}"
client_id = "{client_id}"
client_secret = "{client_secret}"
scopes = ["openid", "email", "profile", "offline_access"]
groups_claim = "groups"
api_audience = "{api_audience}"

[session]
secret = [{secrets}]
cookie_secure = false
idle_timeout = "{idle}"
absolute_timeout = "{absolute}"
refresh_before = "{refresh_before}"
sign_out_requires_post = {post}

[[route]]
path = "{BEARER_PREFIX}"
upstream = "{upstream}"
accept_bearer = true

[[route]]
path = "/"
upstream = "{upstream}"

{extra}"#,
        client_id = s.client_id,
        client_secret = s.client_secret,
        api_audience = s.api_audience,
        secrets = secrets.join(", "),
        idle = s.idle_timeout,
        absolute = s.absolute_timeout,
        refresh_before = s.refresh_before,
        post = s.sign_out_requires_post,
        extra = s.extra_toml,
    )
}

// ----- the real stack: node IdP + echo upstream + gateway ---------------------------------

/// Paths the IdP accepts as post-logout redirect targets on the gateway.
pub const POST_LOGOUT_PATHS: &[&str] = &["/", "/x", "/bye"];

/// The node test IdP, an echo upstream and the gateway (in-process unless a test needs the
/// process: [`LifecycleStack::start_process`]), wired together.
pub struct LifecycleStack<G = InProcessGateway> {
    idp: Option<Idp>,
    pub upstream: EchoUpstream,
    pub gateway: G,
    pub port: u16,
    pub settings: GatewaySettings,
}

/// The node test IdP for a gateway on `port`: the gateway's client, its callback,
/// post-logout URIs ([`POST_LOGOUT_PATHS`]) and back-channel logout URI, plus what
/// `customize` adds to its environment (users, token lifetimes, ...).
async fn start_idp(
    port: u16,
    settings: &GatewaySettings,
    customize: &impl Fn(IdpBuilder) -> IdpBuilder,
) -> Idp {
    let gateway_url = format!("http://127.0.0.1:{port}");
    let post_logout: Vec<String> = POST_LOGOUT_PATHS
        .iter()
        .map(|p| format!("{gateway_url}{p}"))
        .collect();
    let idp = Idp::builder()
        .client(&settings.client_id, Some(&settings.client_secret))
        .redirect_uri(format!("{gateway_url}/oauth2/callback"))
        .env("POST_LOGOUT_REDIRECT_URIS", post_logout.join(","))
        .env(
            "BACKCHANNEL_LOGOUT_URI",
            format!("{gateway_url}/oauth2/backchannel-logout"),
        );
    customize(idp).start().await
}

impl LifecycleStack {
    /// The gateway in-process, on a listener bound before the IdP is told its URIs.
    pub async fn start(
        settings: GatewaySettings,
        customize: impl Fn(IdpBuilder) -> IdpBuilder,
    ) -> Self {
        let upstream = EchoUpstream::start().await;
        let listener = GatewayListener::bind().await;
        let port = listener.port();
        let idp = start_idp(port, &settings, &customize).await;
        let toml = gateway_toml(port, idp.issuer(), &upstream.url(), &settings);
        let gateway = InProcessGateway::builder(&toml)
            .listener(listener)
            .start()
            .await;
        wait_for_readyz(&gateway).await;
        LifecycleStack {
            idp: Some(idp),
            upstream,
            gateway,
            port,
            settings,
        }
    }
}

impl LifecycleStack<Gateway> {
    /// The gateway as a `portcullis` process (for signals and its log). Its port is chosen
    /// before the IdP starts; the IdP takes one `BACKCHANNEL_LOGOUT_URI` only, so on a port
    /// clash the whole stack is started again on another port.
    pub async fn start_process(
        settings: GatewaySettings,
        customize: impl Fn(IdpBuilder) -> IdpBuilder,
    ) -> Self {
        let upstream = EchoUpstream::start().await;
        for _ in 0..3 {
            let port = free_port();
            let idp = start_idp(port, &settings, &customize).await;
            let toml = gateway_toml(port, idp.issuer(), &upstream.url(), &settings);
            if let Some(gateway) = try_start_gateway(&toml).await {
                return LifecycleStack {
                    idp: Some(idp),
                    upstream,
                    gateway,
                    port,
                    settings,
                };
            }
        }
        panic!("three gateway ports in a row were taken before the gateway bound them");
    }

    /// Kills the gateway (SIGKILL) and starts it again on the same port with `settings`.
    pub async fn restart_gateway(&mut self, settings: GatewaySettings) {
        super::process::signal(self.gateway.pid(), "KILL");
        self.gateway
            .wait_exit(Duration::from_secs(10))
            .await
            .expect("the killed gateway exits");
        let toml = gateway_toml(
            self.port,
            self.idp().issuer(),
            &self.upstream.url(),
            &settings,
        );
        self.gateway = try_start_gateway(&toml)
            .await
            .unwrap_or_else(|| panic!("port {} was taken during the restart", self.port));
        self.settings = settings;
    }

    /// Rewrites the gateway's config with `settings` and sends SIGHUP, which re-reads it and
    /// applies the session secrets without a restart; waits for the reload's log line.
    pub async fn reload_gateway(&mut self, settings: GatewaySettings) {
        let toml = gateway_toml(
            self.port,
            self.idp().issuer(),
            &self.upstream.url(),
            &settings,
        );
        std::fs::write(self.gateway.config_path(), toml).expect("rewrite the config");
        let before = self
            .gateway
            .log_text()
            .matches("session secrets reloaded")
            .count();
        super::process::signal(self.gateway.pid(), "HUP");
        super::wait_until("the gateway to reload", Duration::from_secs(10), || async {
            let now = self
                .gateway
                .log_text()
                .matches("session secrets reloaded")
                .count();
            (now > before).then_some(())
        })
        .await;
        self.settings = settings;
    }
}

impl<G: GatewayAddr> LifecycleStack<G> {
    pub fn idp(&self) -> &Idp {
        self.idp.as_ref().expect("the IdP was stopped")
    }

    /// Kills the IdP: from now on the gateway cannot reach it.
    pub fn stop_idp(&mut self) {
        self.idp = None;
    }

    pub fn url(&self) -> String {
        self.gateway.url()
    }

    pub fn url_for(&self, path: &str) -> String {
        self.gateway.url_for(path)
    }

    /// `GET /__test/stats` → `token_requests.refresh_token`.
    pub async fn refresh_grants(&self) -> u64 {
        self.idp().stats().await["token_requests"]["refresh_token"]
            .as_u64()
            .unwrap_or(0)
    }

    /// Asserts that `token` is a live access token of the IdP for `sub`, issued to the
    /// gateway's client (introspection with the gateway's credentials); returns the
    /// introspection answer (`exp`, `scope`, ...).
    pub async fn assert_token_active(&self, token: &str, sub: &str) -> Value {
        self.idp()
            .assert_token_active(
                token,
                &self.settings.client_id,
                Some(&self.settings.client_secret),
                sub,
            )
            .await
    }

    /// Asserts that the IdP reports `token` as inactive (revoked, expired or unknown).
    pub async fn assert_token_inactive(&self, token: &str) {
        self.idp()
            .assert_token_inactive(
                token,
                &self.settings.client_id,
                Some(&self.settings.client_secret),
            )
            .await;
    }

    /// `POST <issuer>/__test/<hook>?<query>` → JSON.
    pub async fn idp_hook(&self, hook: &str, query: &[(&str, &str)]) -> Value {
        let url = self.idp().url_for(&format!("/__test/{hook}"));
        let resp = super::client()
            .post(&url)
            .query(query)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {url}: {e}"));
        assert!(resp.status().is_success(), "POST {url}: {}", resp.status());
        resp.json().await.expect("test hook answers JSON")
    }
}

// ----- the gateway in front of a MockIdp ------------------------------------------------

/// A [`MockIdp`] for the gateway of `settings`: RS256, JWT access tokens for the gateway's
/// API audience, logout tokens for its client.
pub async fn signing_idp(settings: &GatewaySettings) -> MockIdp {
    MockIdp::builder()
        .rs256()
        .client_id(&settings.client_id)
        .api_audience(&settings.api_audience)
        .start()
        .await
}

/// Starts a gateway (routes as in [`gateway_toml`]) in-process in front of `idp` and
/// `upstream` (the mock IdP accepts any redirect URI).
pub async fn start_gateway_for(
    idp: &MockIdp,
    upstream: &EchoUpstream,
    settings: &GatewaySettings,
) -> InProcessGateway {
    let gateway = InProcessGateway::start(&gateway_toml(
        "@PORT@",
        idp.issuer(),
        &upstream.url(),
        settings,
    ))
    .await;
    wait_for_readyz(&gateway).await;
    gateway
}
