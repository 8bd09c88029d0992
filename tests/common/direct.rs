//! A gateway reachable directly (its own public URL) in front of the node test IdP, with
//! the users the forward-auth and ext_authz suites share: the stack for checks that a proxy
//! in front (nginx, Traefik, Caddy, Envoy) asks the gateway.

use reqwest::StatusCode;
use serde_json::{json, Value};

use super::gateway::try_start_gateway;
use super::idp::{Idp, IdpBuilder};
use super::login::{random_hex, Browser, SESSION_COOKIE};
use super::{free_port, Gateway};

pub fn users() -> Value {
    json!({
        "boss": { "email": "boss@corp.test", "groups": ["admins", "eng"] },
        "cara": { "email": "cara@corp.test" },
        "ann":  { "email": "ann@other.test", "groups": ["admins"] },
        "eve":  { "email": "eve@eng.test" },
    })
}

// ----- gateway and IdP -----------------------------------------------------------------

/// Three distinct free loopback ports.
pub fn port_candidates() -> Vec<u16> {
    let mut ports = vec![free_port()];
    while ports.len() < 3 {
        let port = free_port();
        if !ports.contains(&port) {
            ports.push(port);
        }
    }
    ports
}

/// The IdP with [`users`] and a confidential client whose redirect URIs are
/// `http://127.0.0.1:<port>/oauth2/callback` for each candidate.
pub async fn start_idp(secret: &str, ports: &[u16]) -> Idp {
    start_idp_with(secret, ports, |idp| idp).await
}

/// As `start_idp`, customized.
pub async fn start_idp_with(
    secret: &str,
    ports: &[u16],
    customize: impl Fn(IdpBuilder) -> IdpBuilder,
) -> Idp {
    let mut idp = Idp::builder()
        .users(&users())
        .client("gateway", Some(secret));
    for port in ports {
        idp = idp.redirect_uri(format!("http://127.0.0.1:{port}/oauth2/callback"));
    }
    customize(idp).start().await
}

/// A gateway config: `listen`/`public_url` as given, then `rest` (policy, forward_auth,
/// routes).
pub fn gateway_toml(
    listen: &str,
    public_url: &str,
    issuer: &str,
    secret: &str,
    rest: &str,
) -> String {
    gateway_toml_with(listen, public_url, issuer, secret, "", rest)
}

/// As `gateway_toml`, with `server` lines added to `[server]`.
pub fn gateway_toml_with(
    listen: &str,
    public_url: &str,
    issuer: &str,
    secret: &str,
    server: &str,
    rest: &str,
) -> String {
    format!(
        r#"[server]
listen = "{listen}"
public_url = "{public_url}"
{server}

[log]
format = "json"
filter = "info"

[oidc]
issuer = "{issuer}"
client_id = "gateway"
client_secret = "{secret}"
scopes = ["openid", "email", "profile", "offline_access"]

[session]
secret = "{session_secret}"
cookie_secure = false

{rest}
"#,
        session_secret = random_hex(32),
    )
}

/// IdP + a gateway reachable directly (its own public URL), configured with `rest`.
pub struct Direct {
    pub idp: Idp,
    pub gateway: Gateway,
    /// The gateway's client secret at the IdP (client `gateway`), for introspection.
    pub client_secret: String,
}

impl Direct {
    pub async fn start(rest: &str) -> Direct {
        Direct::start_with(rest, |idp| idp).await
    }

    /// As `start`, with the IdP customized (e.g. `ACCESS_TOKEN_TTL`).
    pub async fn start_with(rest: &str, customize: impl Fn(IdpBuilder) -> IdpBuilder) -> Direct {
        Direct::start_full("", rest, customize).await
    }

    /// As `start_with`, with `server` lines added to `[server]`.
    pub async fn start_full(
        server: &str,
        rest: &str,
        customize: impl Fn(IdpBuilder) -> IdpBuilder,
    ) -> Direct {
        let secret = format!("client-secret-{}", random_hex(16));
        let ports = port_candidates();
        let idp = start_idp_with(&secret, &ports, customize).await;
        for port in &ports {
            let listen = format!("127.0.0.1:{port}");
            let public_url = format!("http://{listen}");
            let toml = gateway_toml_with(&listen, &public_url, idp.issuer(), &secret, server, rest);
            if let Some(gateway) = try_start_gateway(&toml).await {
                return Direct {
                    idp,
                    gateway,
                    client_secret: secret,
                };
            }
        }
        panic!("none of the gateway ports {ports:?} could be bound");
    }

    /// Signs `user` in through `/oauth2/start?rd=/` (no route needed) and returns the
    /// browser holding the session.
    pub async fn login(&self, user: &str) -> Browser {
        let browser = Browser::new();
        login_via_start(&browser, &self.gateway.url(), user).await;
        browser
    }
}

/// `/oauth2/start?rd=/` → IdP → callback; asserts the session cookie and the return to `/`.
pub async fn login_via_start(browser: &Browser, gateway_url: &str, user: &str) {
    let started = browser.start_login(gateway_url, "/").await;
    let idp = browser.idp_sign_in(&started.authorize_url, user).await;
    let callback = browser.callback(&idp.redirect).await;
    assert_eq!(callback.status, StatusCode::FOUND, "{callback}");
    assert_eq!(callback.location_raw(), "/", "{callback}");
    assert!(
        callback.set_cookie(SESSION_COOKIE).is_some(),
        "no session cookie\n{callback}"
    );
}
