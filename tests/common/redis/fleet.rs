//! Gateway replicas on one store: [`Fleet`] runs the node test IdP and several replicas
//! (in-process, or as processes for restarts and SIGHUP), each in front of its own echo
//! upstream named `a`, `b`, ... so the echo says which replica forwarded; [`mock_fleet`]
//! does the same in front of a [`MockIdp`]. Plus the checks the Redis tests share.

use std::time::Duration;

use reqwest::StatusCode;

use crate::common::gateway::{try_start_gateway, wait_for_readyz, GatewayAddr, GatewayListener};
use crate::common::idp::{Idp, IdpBuilder};
use crate::common::login::{random_hex, Browser, Hop, IdpStep, StartedLogin, SESSION_COOKIE};
use crate::common::mock_idp::MockIdp;
use crate::common::{free_port, EchoUpstream, Gateway, InProcessGateway};

// ----- gateway replicas on one store -------------------------------------------------------

/// The parts of a replica's config the Redis tests vary. Replicas of one fleet share all
/// of it (the same client, secrets and store); each has its own port and upstream.
#[derive(Debug, Clone)]
pub struct ReplicaSettings {
    pub client_id: String,
    pub client_secret: String,
    /// `session.secret`: the first seals, all open.
    pub secrets: Vec<String>,
    pub refresh_before: String,
    pub absolute_timeout: String,
    /// Extra lines under `[session]`: the store (e.g. [`RedisServer::store_toml`]); empty
    /// for the default store.
    pub store: String,
}

impl ReplicaSettings {
    /// A fresh client secret and session secret; `store` as given.
    pub fn new(store: impl Into<String>) -> Self {
        ReplicaSettings {
            client_id: "gateway".to_string(),
            client_secret: format!("client-secret-{}", random_hex(16)),
            secrets: vec![random_hex(32)],
            refresh_before: "60s".to_string(),
            absolute_timeout: "24h".to_string(),
            store: store.into(),
        }
    }
}

/// Path prefix of the public route (no login, proxied without identity).
pub const PUBLIC_PREFIX: &str = "/public";

/// A replica's config: `/public` is a public route, everything else needs a session;
/// both go to `upstream`.
pub fn replica_toml(
    port: impl std::fmt::Display,
    issuer: &str,
    upstream: &str,
    s: &ReplicaSettings,
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

[session]
secret = [{secrets}]
cookie_secure = false
absolute_timeout = "{absolute}"
refresh_before = "{refresh_before}"
{store}

[[route]]
path = "{PUBLIC_PREFIX}"
upstream = "{upstream}"
public = true

[[route]]
path = "/"
upstream = "{upstream}"
"#,
        client_id = s.client_id,
        client_secret = s.client_secret,
        secrets = secrets.join(", "),
        absolute = s.absolute_timeout,
        refresh_before = s.refresh_before,
        store = s.store,
    )
}

/// Replica names, in order: the upstream of replica `i` is named `REPLICA_NAMES[i]`, so
/// the echo says which replica forwarded a request.
pub const REPLICA_NAMES: &[&str] = &["a", "b", "c"];

/// The node test IdP and `n` gateway replicas sharing one store, each in front of its
/// own echo upstream (named `a`, `b`, ...). The IdP knows every replica's callback; its
/// back-channel logout URI is the LAST replica's, so a logout token always reaches a
/// replica other than the first (where logins go in the tests).
pub struct Fleet<G = InProcessGateway> {
    pub idp: Idp,
    pub upstreams: Vec<EchoUpstream>,
    pub gateways: Vec<G>,
    pub ports: Vec<u16>,
    pub settings: ReplicaSettings,
}

async fn fleet_idp(
    ports: &[u16],
    settings: &ReplicaSettings,
    customize: &impl Fn(IdpBuilder) -> IdpBuilder,
) -> Idp {
    let mut idp = Idp::builder().client(&settings.client_id, Some(&settings.client_secret));
    let mut post_logout = Vec::new();
    for port in ports {
        idp = idp.redirect_uri(format!("http://127.0.0.1:{port}/oauth2/callback"));
        post_logout.push(format!("http://127.0.0.1:{port}/x"));
    }
    let last = ports.last().expect("at least one replica");
    let idp = idp
        .env("POST_LOGOUT_REDIRECT_URIS", post_logout.join(","))
        .env(
            "BACKCHANNEL_LOGOUT_URI",
            format!("http://127.0.0.1:{last}/oauth2/backchannel-logout"),
        );
    customize(idp).start().await
}

async fn upstreams(n: usize) -> Vec<EchoUpstream> {
    let mut out = Vec::new();
    for name in &REPLICA_NAMES[..n] {
        out.push(EchoUpstream::start_named(name).await);
    }
    out
}

impl Fleet {
    /// `n` in-process replicas (listeners bound before the IdP is told their URIs), each
    /// ready (`/readyz` 200).
    pub async fn start(
        n: usize,
        settings: ReplicaSettings,
        customize: impl Fn(IdpBuilder) -> IdpBuilder,
    ) -> Self {
        Self::start_inner(n, settings, customize, true).await
    }

    /// Like [`Fleet::start`], but returns once every replica is alive (`/healthz` 200),
    /// ready or not (e.g. with its store down).
    pub async fn start_unready(
        n: usize,
        settings: ReplicaSettings,
        customize: impl Fn(IdpBuilder) -> IdpBuilder,
    ) -> Self {
        Self::start_inner(n, settings, customize, false).await
    }

    async fn start_inner(
        n: usize,
        settings: ReplicaSettings,
        customize: impl Fn(IdpBuilder) -> IdpBuilder,
        ready: bool,
    ) -> Self {
        let upstreams = upstreams(n).await;
        let mut listeners = Vec::new();
        for _ in 0..n {
            listeners.push(GatewayListener::bind().await);
        }
        let ports: Vec<u16> = listeners.iter().map(GatewayListener::port).collect();
        let idp = fleet_idp(&ports, &settings, &customize).await;
        let mut gateways = Vec::new();
        for (i, listener) in listeners.into_iter().enumerate() {
            let toml = replica_toml(ports[i], idp.issuer(), &upstreams[i].url(), &settings);
            let gateway = InProcessGateway::builder(&toml)
                .listener(listener)
                .start()
                .await;
            gateways.push(gateway);
        }
        if ready {
            for gateway in &gateways {
                wait_for_readyz(gateway).await;
            }
        }
        Fleet {
            idp,
            upstreams,
            gateways,
            ports,
            settings,
        }
    }
}

impl Fleet<Gateway> {
    /// `n` replicas as `portcullis` processes (for restarts, signals and logs); on a port
    /// clash the whole fleet is started again on other ports.
    pub async fn start_process(
        n: usize,
        settings: ReplicaSettings,
        customize: impl Fn(IdpBuilder) -> IdpBuilder,
    ) -> Self {
        let upstreams = upstreams(n).await;
        'attempt: for _ in 0..3 {
            let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
            let idp = fleet_idp(&ports, &settings, &customize).await;
            let mut gateways = Vec::new();
            for (i, port) in ports.iter().enumerate() {
                let toml = replica_toml(port, idp.issuer(), &upstreams[i].url(), &settings);
                match try_start_gateway(&toml).await {
                    Some(gateway) => gateways.push(gateway),
                    None => continue 'attempt,
                }
            }
            return Fleet {
                idp,
                upstreams,
                gateways,
                ports,
                settings,
            };
        }
        panic!("three sets of gateway ports in a row were taken before the gateways bound them");
    }

    /// Stops replica `i` — SIGTERM and a clean exit, or SIGKILL (`kill`) — and starts it
    /// again on the same port with the fleet's settings; waits until it is ready.
    pub async fn restart(&mut self, i: usize, kill: bool) {
        let gateway = &mut self.gateways[i];
        if kill {
            crate::common::process::signal(gateway.pid(), "KILL");
            gateway
                .wait_exit(Duration::from_secs(10))
                .await
                .expect("the killed gateway exits");
        } else {
            let status = gateway.stop().await;
            assert!(status.success(), "replica {i} exited with {status}");
        }
        let toml = replica_toml(
            self.ports[i],
            self.idp.issuer(),
            &self.upstreams[i].url(),
            &self.settings,
        );
        self.gateways[i] = try_start_gateway(&toml)
            .await
            .unwrap_or_else(|| panic!("port {} was taken during the restart", self.ports[i]));
    }

    /// Rewrites replica `i`'s config with `settings` and sends SIGHUP; waits for the log
    /// line of the reload (session secrets apply without a restart).
    pub async fn reload(&mut self, i: usize, settings: ReplicaSettings) {
        let gateway = &self.gateways[i];
        let toml = replica_toml(
            self.ports[i],
            self.idp.issuer(),
            &self.upstreams[i].url(),
            &settings,
        );
        std::fs::write(gateway.config_path(), toml).expect("rewrite the config");
        let reloads = |log: &str| log.matches("session secrets reloaded").count();
        let before = reloads(&gateway.log_text());
        crate::common::process::signal(gateway.pid(), "HUP");
        gateway
            .wait_for_log("the reload", Duration::from_secs(10), |log| {
                reloads(log) > before
            })
            .await;
        self.settings = settings;
    }
}

impl<G: GatewayAddr> Fleet<G> {
    /// `url_for(path)` of replica `i`.
    pub fn url_for(&self, i: usize, path: &str) -> String {
        self.gateways[i].url_for(path)
    }

    pub fn url(&self, i: usize) -> String {
        self.gateways[i].url()
    }

    /// `refresh_token` grants the IdP has answered so far.
    pub async fn refresh_grants(&self) -> u64 {
        self.idp.stats().await["token_requests"]["refresh_token"]
            .as_u64()
            .unwrap_or(0)
    }

    /// Asserts that `token` is a live access token of the IdP for `sub`, issued to the
    /// fleet's client.
    pub async fn assert_token_active(&self, token: &str, sub: &str) -> serde_json::Value {
        self.idp
            .assert_token_active(
                token,
                &self.settings.client_id,
                Some(&self.settings.client_secret),
                sub,
            )
            .await
    }

    /// `POST <issuer>/__test/<hook>?<query>` → JSON.
    pub async fn idp_hook(&self, hook: &str, query: &[(&str, &str)]) -> serde_json::Value {
        let url = self.idp.url_for(&format!("/__test/{hook}"));
        let resp = crate::common::client()
            .post(&url)
            .query(query)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {url}: {e}"));
        assert!(resp.status().is_success(), "POST {url}: {}", resp.status());
        resp.json().await.expect("test hook answers JSON")
    }
}

/// `n` in-process replicas in front of a [`MockIdp`] (which accepts any redirect URI),
/// each with its own echo upstream (named `a`, `b`, ...).
pub async fn mock_fleet(
    idp: &MockIdp,
    n: usize,
    settings: &ReplicaSettings,
) -> (Vec<EchoUpstream>, Vec<InProcessGateway>) {
    let upstreams = upstreams(n).await;
    let mut gateways = Vec::new();
    for upstream in &upstreams {
        let toml = replica_toml("@PORT@", idp.issuer(), &upstream.url(), settings);
        let gateway = InProcessGateway::start(&toml).await;
        wait_for_readyz(&gateway).await;
        gateways.push(gateway);
    }
    (upstreams, gateways)
}

// ----- what the tests check --------------------------------------------------------------

/// The token in the `Authorization: Bearer ...` the upstream received.
pub fn upstream_bearer(hop: &Hop) -> String {
    let echo = hop.echo();
    let authorization = echo
        .header("authorization")
        .unwrap_or_else(|| panic!("the upstream got no Authorization header\n{hop}"));
    authorization
        .strip_prefix("Bearer ")
        .unwrap_or_else(|| panic!("not a Bearer token: {authorization}"))
        .to_string()
}

/// A browser holding only the session cookie `value` (a copied or replayed cookie).
pub fn browser_with_cookie(value: &str) -> Browser {
    let browser = Browser::new();
    browser.set_cookie(SESSION_COOKIE, value);
    browser
}

/// 401 for an API request without a usable session (`WWW-Authenticate: Bearer`), never a
/// redirect.
pub fn assert_login_required(hop: &Hop) {
    assert_eq!(
        hop.status,
        StatusCode::UNAUTHORIZED,
        "expected the session to be gone\n{hop}"
    );
    assert_eq!(hop.header("www-authenticate"), Some("Bearer"), "{hop}");
    assert!(hop.header("location").is_none(), "{hop}");
}

/// `browser`'s session works on the replica at `url`: an API request reaches that
/// replica's upstream (`upstream` names it) as `user`. Returns the bearer token forwarded.
pub async fn assert_session_alive(
    url: &str,
    browser: &Browser,
    user: &str,
    upstream: &str,
) -> String {
    let hop = browser.api_get(&format!("{url}/whoami")).await;
    assert_eq!(
        hop.status,
        StatusCode::OK,
        "expected {user}'s session to work at {url}\n{hop}"
    );
    let echo = hop.echo();
    assert_eq!(
        echo.upstream, upstream,
        "forwarded by another replica\n{hop}"
    );
    assert_eq!(echo.header("x-forwarded-user"), Some(user), "{hop}");
    upstream_bearer(&hop)
}

/// A login at the gateway `url` through a [`MockIdp`] (no pages: straight back with a
/// code) as `user`. Returns the login that began (its `state`) and the session cookie.
pub async fn mock_login(
    url: &str,
    idp: &MockIdp,
    browser: &Browser,
    user: &str,
) -> (StartedLogin, String) {
    idp.set_user(user);
    let started = browser.begin_login(url, "/start").await;
    let callback = match browser.idp_open(&started.authorize_url).await {
        IdpStep::Left(url) => url,
        IdpStep::Page(page) => panic!("the mock IdP showed a page\n{page}"),
    };
    let hop = browser.callback(&callback).await;
    assert_eq!(hop.status, StatusCode::FOUND, "callback\n{hop}");
    let cookie = hop
        .set_cookie(SESSION_COOKIE)
        .unwrap_or_else(|| panic!("no session cookie\n{hop}"))
        .value()
        .to_string();
    (started, cookie)
}

/// The session cookie's 32 random bytes (base64url) as lowercase hex: what a store that
/// used the session id itself as its key would show.
pub fn cookie_id_hex(cookie: &str) -> String {
    use base64::Engine;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cookie.split('.').next().unwrap_or(cookie))
        .unwrap_or_default();
    raw.iter().map(|b| format!("{b:02x}")).collect()
}
