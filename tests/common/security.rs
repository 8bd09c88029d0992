//! The shared stack of the standing adversarial suite (`tests/security*.rs`).
//!
//! One gateway in front of two real upstreams:
//!
//! - **Debian nginx** ([`NGINX_SITE`]) serving a public prefix and protected content on
//!   the same server, with nginx's own decoding and normalization (it decodes `%2F`, merges
//!   `//`, resolves `..` after decoding) deciding which `location` answers. A bypass shows
//!   up as `PROTECTED-CONTENT` returned without login; every request nginx serves is in
//!   its access log (`$request_uri|$uri|$status`, [`Stack::nginx_hits`]).
//! - the **echo upstream**, which reports the path and every header it received, to see
//!   what the gateway forwards.
//!
//! The gateway's routes ([`DEFAULT_ROUTES`], in this order, so `route[i]` names them):
//!
//! | # | host | path | upstream | rule |
//! |---|------|------|----------|------|
//! | 0 | `docs.test` | `/` | echo | public |
//! | 1 | | `/public` | nginx | public |
//! | 2 | | `/echo-public` | echo | public |
//! | 3 | | `/echo` | echo | login |
//! | 4 | | `/corp` | nginx | `allow_domains = ["corp.test"]` |
//! | 5 | | `/app` | nginx | `skip_auth_paths = ["^/app/health$"]`, `methods = ["GET"]` |
//! | … | | | | routes added with [`StackBuilder::route`] |
//! | last | | `/` | nginx | login |
//!
//! The issuer is either the node test IdP in its default settings (claims from userinfo;
//! [`StackBuilder::node_idp`], needed for real sessions) or the in-process
//! [`KeyIssuer`] (discovery and keys only: cheap, for cases that never log in, and for
//! forged JWTs). Users at the node IdP: `boss` (boss@corp.test), `eve`
//! (eve@example.com), `ann` (ann@example.com, group `admins`).

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{json, Value};

use super::gateway::{try_start_gateway, wait_for_readyz};
use super::http::{raw_exchange, RawExchange};
use super::idp::Idp;
use super::login::{query_param, random_hex, Browser, CompletedLogin, SESSION_COOKIE};
use super::nginx::{nginx_available, Nginx};
use super::security_issuer::KeyIssuer;
use super::{free_addr, free_port, EchoUpstream, Gateway};

/// What nginx's protected locations answer with.
pub const PROTECTED: &str = "PROTECTED-CONTENT";
/// What nginx's public location answers with.
pub const PUBLIC: &str = "PUBLIC-CONTENT";
/// `location = /app/health` (the `skip_auth_paths` exemption).
pub const APP_HEALTH: &str = "APP-HEALTH";

/// The nginx server: `/public` and `/public/...` are public content, `/app/health` the
/// exempt health check, everything else protected (`/corp/` marked `corp`). `$uri` is
/// nginx's decoded, normalized path.
pub const NGINX_SITE: &str = r#"
log_format security '$request_uri|$uri|$status';
server {
    listen @LISTEN@;
    access_log security.log security;
    default_type text/plain;
    location = /public { return 200 "PUBLIC-CONTENT $uri\n"; }
    location /public/ { return 200 "PUBLIC-CONTENT $uri\n"; }
    location /corp/ { return 200 "PROTECTED-CONTENT corp $uri\n"; }
    location = /app/health { return 200 "APP-HEALTH $uri\n"; }
    location / { return 200 "PROTECTED-CONTENT $uri\n"; }
}
"#;

/// The routes before the ones a test adds (`@NGINX@`/`@ECHO@` are the upstream URLs).
pub const DEFAULT_ROUTES: &str = r#"
[[route]]
host = "docs.test"
path = "/"
upstream = "@ECHO@"
public = true

[[route]]
path = "/public"
upstream = "@NGINX@"
public = true

[[route]]
path = "/echo-public"
upstream = "@ECHO@"
public = true

[[route]]
path = "/echo"
upstream = "@ECHO@"

[[route]]
path = "/corp"
upstream = "@NGINX@"
allow_domains = ["corp.test"]

[[route]]
path = "/app"
upstream = "@NGINX@"
skip_auth_paths = ["^/app/health$"]
methods = ["GET"]
"#;

/// The catch-all, always last.
const CATCH_ALL: &str = "[[route]]\npath = \"/\"\nupstream = \"@NGINX@\"\n";

/// `/api`: protected, `allow_encoded_slashes = true`, to the echo upstream.
pub const API_ROUTE: &str =
    "[[route]]\npath = \"/api\"\nupstream = \"@ECHO@\"\nallow_encoded_slashes = true\n";

/// `/bearer`: `accept_bearer = true`, to the echo upstream (needs `oidc.api_audience`).
pub const BEARER_ROUTE: &str =
    "[[route]]\npath = \"/bearer\"\nupstream = \"@ECHO@\"\naccept_bearer = true\n";

/// The audience API tokens must carry on [`BEARER_ROUTE`].
pub const API_AUDIENCE: &str = "https://api.portcullis.test";

/// The browser `Accept` of a navigation.
pub const HTML: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";

pub fn users() -> Value {
    json!({
        "boss": { "email": "boss@corp.test" },
        "ann": { "groups": ["admins"] },
    })
}

/// Which keys the key issuer publishes (and which algorithms it advertises).
#[derive(Default, Clone, Copy, PartialEq, Eq)]
pub enum Keys {
    /// ES256 only.
    #[default]
    Ec,
    /// RS256 only.
    Rsa,
    /// RS256 and ES256.
    RsaAndEc,
}

/// How to build a [`Stack`].
#[derive(Default)]
pub struct StackBuilder {
    node_idp: bool,
    keys: Keys,
    pkce_methods: Option<Vec<&'static str>>,
    server: Vec<String>,
    oidc: Vec<String>,
    session: Vec<String>,
    sections: Vec<String>,
    routes: Vec<String>,
    log_filter: Option<String>,
}

impl StackBuilder {
    /// The node test IdP (default settings) instead of the in-process key issuer: needed
    /// for logins.
    pub fn node_idp(mut self) -> Self {
        self.node_idp = true;
        self
    }

    /// Which keys the key issuer publishes.
    pub fn keys(mut self, keys: Keys) -> Self {
        self.keys = keys;
        self
    }

    /// The key issuer advertises exactly these PKCE methods.
    pub fn pkce_methods(mut self, methods: &[&'static str]) -> Self {
        self.pkce_methods = Some(methods.to_vec());
        self
    }

    /// A line for `[server]`.
    pub fn server(mut self, line: &str) -> Self {
        self.server.push(line.to_string());
        self
    }

    /// A line for `[oidc]`.
    pub fn oidc(mut self, line: &str) -> Self {
        self.oidc.push(line.to_string());
        self
    }

    /// A line for `[session]`.
    pub fn session(mut self, line: &str) -> Self {
        self.session.push(line.to_string());
        self
    }

    /// A whole section (`[policy]`, `[forward_auth]`, ...).
    pub fn section(mut self, text: &str) -> Self {
        self.sections.push(text.to_string());
        self
    }

    /// A `[[route]]` before the catch-all (`@NGINX@`, `@ECHO@` placeholders).
    pub fn route(mut self, text: &str) -> Self {
        self.routes.push(text.to_string());
        self
    }

    /// [`API_ROUTE`].
    pub fn api_route(self) -> Self {
        self.route(API_ROUTE)
    }

    /// [`BEARER_ROUTE`] with `oidc.api_audience = API_AUDIENCE`.
    pub fn bearer_route(self) -> Self {
        self.route(BEARER_ROUTE)
            .oidc(&format!("api_audience = \"{API_AUDIENCE}\""))
    }

    /// `log.filter` (default `info`).
    pub fn log_filter(mut self, filter: &str) -> Self {
        self.log_filter = Some(filter.to_string());
        self
    }

    fn toml(
        &self,
        listen: &str,
        public_url: &str,
        issuer: &str,
        secret: &str,
        site: &Site,
    ) -> String {
        let mut routes = String::from(DEFAULT_ROUTES);
        for r in &self.routes {
            routes.push('\n');
            routes.push_str(r);
        }
        routes.push('\n');
        routes.push_str(CATCH_ALL);
        let routes = routes
            .replace("@NGINX@", &site.nginx.url())
            .replace("@ECHO@", &site.echo.url());
        format!(
            r#"[server]
listen = "{listen}"
public_url = "{public_url}"
allowed_redirect_hosts = ["app.example.com"]
{server}

[log]
format = "json"
filter = "{filter}"

[oidc]
issuer = "{issuer}"
client_id = "gateway"
client_secret = "{secret}"
scopes = ["openid", "email", "profile", "offline_access"]
{oidc}

[session]
secret = "{session_secret}"
cookie_secure = false
{session}

{sections}

{routes}"#,
            server = self.server.join("\n"),
            filter = self.log_filter.as_deref().unwrap_or("info"),
            oidc = self.oidc.join("\n"),
            session = self.session.join("\n"),
            sections = self.sections.join("\n\n"),
            session_secret = random_hex(32),
        )
    }

    /// `None` when `portcullis check-config` refuses this configuration (exit status not
    /// 0); otherwise [`StackBuilder::start`].
    pub async fn start_or_refused(self) -> Option<Stack> {
        let dir = tempfile::tempdir().expect("tempdir");
        let site = Site::start().await;
        let config = self.toml(
            "127.0.0.1:1",
            "http://127.0.0.1:1",
            "http://127.0.0.1:2",
            "secret",
            &site,
        );
        drop(site);
        let path = dir.path().join("portcullis.toml");
        std::fs::write(&path, config).expect("write config");
        let out = std::process::Command::new(super::bin())
            .arg("check-config")
            .arg("--config")
            .arg(&path)
            .env_remove("RUST_LOG")
            .output()
            .expect("run portcullis check-config");
        if !out.status.success() {
            eprintln!(
                "check-config refused the configuration: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return None;
        }
        Some(self.start().await)
    }

    /// Starts nginx, the echo upstream, the issuer and the gateway (ready: discovery
    /// loaded).
    pub async fn start(self) -> Stack {
        assert!(
            nginx_available("the adversarial suite"),
            "the adversarial suite needs Debian nginx (apt-get install nginx)"
        );
        let site = Site::start().await;
        let secret = format!("client-secret-{}", random_hex(16));
        if !self.node_idp {
            let keys = match (&self.pkce_methods, self.keys) {
                (Some(methods), _) => KeyIssuer::start_with_pkce_methods(methods).await,
                (None, Keys::Rsa) => KeyIssuer::start_rsa().await,
                (None, Keys::RsaAndEc) => KeyIssuer::start_rsa_and_ec().await,
                (None, Keys::Ec) => KeyIssuer::start().await,
            };
            let config = self.toml("@LISTEN@", "@PUBLIC_URL@", keys.issuer(), &secret, &site);
            let gateway = Gateway::start(&config).await;
            wait_for_readyz(&gateway).await;
            return Stack {
                idp: None,
                keys: Some(keys),
                nginx: site.nginx,
                echo: site.echo,
                gateway,
                client_secret: secret,
            };
        }
        let mut ports = vec![free_port()];
        while ports.len() < 3 {
            let port = free_port();
            if !ports.contains(&port) {
                ports.push(port);
            }
        }
        let mut idp = Idp::builder()
            .users(&users())
            .client("gateway", Some(&secret));
        let mut post_logout = Vec::new();
        for port in &ports {
            idp = idp.redirect_uri(format!("http://127.0.0.1:{port}/oauth2/callback"));
            post_logout.push(format!("http://127.0.0.1:{port}/"));
            post_logout.push(format!("http://127.0.0.1:{port}/bye"));
        }
        let idp = idp
            .env("POST_LOGOUT_REDIRECT_URIS", post_logout.join(","))
            .start()
            .await;
        for port in &ports {
            let listen = format!("127.0.0.1:{port}");
            let config = self.toml(
                &listen,
                &format!("http://{listen}"),
                idp.issuer(),
                &secret,
                &site,
            );
            if let Some(gateway) = try_start_gateway(&config).await {
                return Stack {
                    idp: Some(idp),
                    keys: None,
                    nginx: site.nginx,
                    echo: site.echo,
                    gateway,
                    client_secret: secret,
                };
            }
        }
        panic!("none of the gateway ports {ports:?} could be bound");
    }
}

/// nginx and the echo upstream.
struct Site {
    nginx: Nginx,
    echo: EchoUpstream,
}

impl Site {
    async fn start() -> Site {
        let echo = EchoUpstream::start_named("echo").await;
        let mut last = String::new();
        for _ in 0..3 {
            match Nginx::start(free_addr(), NGINX_SITE).await {
                Ok(nginx) => return Site { nginx, echo },
                Err(e) => last = e,
            }
        }
        panic!("nginx did not start:\n{last}");
    }
}

/// A running stack (see the module docs).
pub struct Stack {
    /// The node test IdP (with [`StackBuilder::node_idp`]).
    pub idp: Option<Idp>,
    /// The key issuer (without it).
    pub keys: Option<KeyIssuer>,
    pub nginx: Nginx,
    pub echo: EchoUpstream,
    pub gateway: Gateway,
    /// The gateway's client secret at the IdP.
    pub client_secret: String,
}

/// A response read off a raw connection.
#[derive(Debug, Clone)]
pub struct Reply {
    /// 0 when the server closed the connection without answering.
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// How many responses came on the connection.
    pub responses: usize,
    /// The server closed the connection.
    pub closed: bool,
    /// Everything received, for messages.
    pub raw: String,
}

impl Reply {
    pub fn from_exchange(exchange: &RawExchange) -> Reply {
        let responses = exchange.responses();
        let first = responses.first();
        Reply {
            status: first.map_or(0, |r| r.status),
            headers: first.map(|r| r.headers.clone()).unwrap_or_default(),
            body: first.map(|r| r.text()).unwrap_or_default(),
            responses: responses.len(),
            closed: exchange.closed,
            raw: exchange.text().chars().take(3000).collect(),
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn header_all(&self, name: &str) -> Vec<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Nginx's protected content (or any text marking it) is in the body.
    pub fn is_protected(&self) -> bool {
        self.body.contains(PROTECTED) || self.raw.contains(PROTECTED)
    }
}

impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "status {} ({} response(s), closed: {})\n{}",
            self.status, self.responses, self.closed, self.raw
        )
    }
}

/// A signed-in user at the node IdP.
pub struct Session {
    pub browser: Browser,
    pub user: String,
    /// The session cookie's value.
    pub cookie: String,
    /// The access token the gateway forwards upstream.
    pub access_token: String,
    /// The authorization code of the login.
    pub code: String,
    /// The login cookie's value (sealed state, verifier, nonce).
    pub login_cookie: String,
    pub login: CompletedLogin,
}

impl Session {
    /// `portcullis=<value>`.
    pub fn cookie_header(&self) -> String {
        format!("{SESSION_COOKIE}={}", self.cookie)
    }

    /// What must never leak: name and value.
    pub fn secrets(&self) -> Vec<(&'static str, String)> {
        vec![
            ("access token", self.access_token.clone()),
            ("authorization code", self.code.clone()),
            ("session cookie", self.cookie.clone()),
            ("login cookie", self.login_cookie.clone()),
        ]
    }
}

impl Stack {
    pub fn builder() -> StackBuilder {
        StackBuilder::default()
    }

    /// Default routes, key issuer (no logins).
    pub async fn light() -> Stack {
        Self::builder().start().await
    }

    /// Default routes, node test IdP.
    pub async fn full() -> Stack {
        Self::builder().node_idp().start().await
    }

    pub fn idp(&self) -> &Idp {
        self.idp
            .as_ref()
            .expect("this stack runs the node test IdP")
    }

    pub fn keys(&self) -> &KeyIssuer {
        self.keys.as_ref().expect("this stack runs the key issuer")
    }

    pub fn addr(&self) -> SocketAddr {
        self.gateway.addr()
    }

    pub fn url(&self) -> String {
        self.gateway.url()
    }

    pub fn url_for(&self, path: &str) -> String {
        self.gateway.url_for(path)
    }

    /// `Host` value of the gateway.
    pub fn host(&self) -> String {
        self.addr().to_string()
    }

    /// Sends `bytes` as they are on a fresh connection; reads until close (or 1.5 s idle).
    pub async fn send_bytes(&self, bytes: &[u8]) -> Reply {
        Reply::from_exchange(&raw_exchange(self.addr(), bytes, Duration::from_millis(1500)).await)
    }

    /// Same as [`Stack::send_bytes`], returning the raw exchange.
    pub async fn exchange(&self, bytes: &[u8]) -> RawExchange {
        raw_exchange(self.addr(), bytes, Duration::from_millis(1500)).await
    }

    /// `method target HTTP/1.1` with `Host` (unless given), `headers` as given and
    /// `Connection: close` (unless a `Connection` is given), no body.
    pub async fn request(&self, method: &str, target: &str, headers: &[(&str, &str)]) -> Reply {
        self.send_bytes(&request_bytes(&self.host(), method, target, headers, b""))
            .await
    }

    /// A browser navigation (`Accept: text/html`) without a session.
    pub async fn get(&self, target: &str) -> Reply {
        self.request("GET", target, &[("accept", HTML)]).await
    }

    /// A browser navigation with `session`'s cookie.
    pub async fn get_as(&self, session: &Session, target: &str) -> Reply {
        let cookie = session.cookie_header();
        self.request("GET", target, &[("accept", HTML), ("cookie", &cookie)])
            .await
    }

    /// Every request nginx served so far: `(request_uri, uri, status)`.
    pub fn nginx_hits(&self) -> Vec<(String, String, String)> {
        let text =
            std::fs::read_to_string(self.nginx.dir().join("security.log")).unwrap_or_default();
        text.lines()
            .filter_map(|line| {
                let mut parts = line.splitn(3, '|');
                Some((
                    parts.next()?.to_string(),
                    parts.next()?.to_string(),
                    parts.next()?.to_string(),
                ))
            })
            .collect()
    }

    /// Waits (bounded, 3 s) until nginx has logged at least `n` requests; returns them
    /// (nginx writes its access log line after sending the response).
    pub async fn wait_nginx_hits(&self, n: usize) -> Vec<(String, String, String)> {
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        loop {
            let hits = self.nginx_hits();
            if hits.len() >= n || std::time::Instant::now() >= deadline {
                return hits;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Requests that reached either upstream so far.
    pub fn upstream_traffic(&self) -> usize {
        self.nginx_hits().len() + self.echo.received().len()
    }

    /// The gateway's JSON log lines.
    pub fn log_events(&self) -> Vec<Value> {
        self.gateway
            .log_text()
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .collect()
    }

    /// How many audit events named `event` the log has.
    pub fn events(&self, event: &str) -> usize {
        self.log_events()
            .iter()
            .filter(|e| e["event"] == event || e["fields"]["event"] == event)
            .count()
    }

    /// Waits (bounded, 5 s) until the log has more than `before` events named `event`.
    pub async fn wait_event(&self, case: &str, event: &str, before: usize) {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while self.events(event) <= before {
            if std::time::Instant::now() >= deadline {
                panic!(
                    "{case}: no audit log line event=\"{event}\" for this request; log tail:\n{}",
                    tail(&self.gateway.log_text(), 15)
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Signs `user` in at the node IdP through the browser flow (landing on `/echo/landing`)
    /// and returns the session with the tokens it carried.
    pub async fn login(&self, user: &str) -> Session {
        let browser = Browser::new();
        let done = browser.login(&self.url(), "/echo/landing", user).await;
        let echo = done.landing.echo();
        assert_eq!(
            echo.header("x-forwarded-user"),
            Some(user),
            "the landing page is served for {user}"
        );
        let access_token = echo
            .header("authorization")
            .and_then(|v| v.strip_prefix("Bearer "))
            .expect("the upstream receives the access token")
            .to_string();
        let code = query_param(&done.idp.redirect, "code").expect("callback carries a code");
        Session {
            user: user.to_string(),
            cookie: done.session_cookie.clone(),
            access_token,
            code,
            login_cookie: done.started.login_cookie_value.clone(),
            browser,
            login: done,
        }
    }

    /// Signs `user` in through `/oauth2/start?rd=/` without loading any route (for stacks
    /// whose policy may deny the user everywhere). `access_token` stays empty.
    pub async fn login_via_start(&self, user: &str) -> Session {
        let browser = Browser::new();
        let started = browser.start_login(&self.url(), "/").await;
        let idp = browser.idp_sign_in(&started.authorize_url, user).await;
        let callback = browser.callback(&idp.redirect).await;
        assert_eq!(callback.status.as_u16(), 302, "login of {user}\n{callback}");
        let cookie = callback
            .set_cookie(SESSION_COOKIE)
            .unwrap_or_else(|| panic!("no session cookie for {user}\n{callback}"))
            .value()
            .to_string();
        let code = query_param(&idp.redirect, "code").expect("callback carries a code");
        let landing = callback.clone();
        Session {
            user: user.to_string(),
            cookie: cookie.clone(),
            access_token: String::new(),
            code,
            login_cookie: started.login_cookie_value.clone(),
            login: CompletedLogin {
                started,
                idp,
                callback,
                session_cookie: cookie,
                landing,
            },
            browser,
        }
    }

    /// Whether `session` still works: `/echo/alive` is served for its user.
    pub async fn session_works(&self, session: &Session) -> bool {
        let reply = self
            .request(
                "GET",
                "/echo/alive",
                &[
                    ("accept", "application/json"),
                    ("cookie", &session.cookie_header()),
                ],
            )
            .await;
        reply.status == 200
            && serde_json::from_str::<Value>(&reply.body)
                .is_ok_and(|v| v["headers"]["x-forwarded-user"][0] == session.user.as_str())
    }
}

/// The bytes of one HTTP/1.1 request (see [`Stack::request`]).
pub fn request_bytes(
    host: &str,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Vec<u8> {
    let mut out = format!("{method} {target} HTTP/1.1\r\n").into_bytes();
    let has = |name: &str| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
    if !has("host") {
        out.extend_from_slice(format!("Host: {host}\r\n").as_bytes());
    }
    for (name, value) in headers {
        out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    if !has("connection") {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    if !body.is_empty() && !has("content-length") && !has("transfer-encoding") {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

// ----- assertions ------------------------------------------------------------------------

/// The target is refused before routing: 400 with a short reason, nothing reaches either
/// upstream, no content of either in the body, and (with `audit`) an
/// `event="ambiguous_path"` audit line. `session`: sent with that cookie.
pub async fn assert_ambiguous(
    stack: &Stack,
    case: &str,
    target: &str,
    session: Option<&Session>,
) -> Reply {
    assert_refused(stack, case, "GET", target, &[], session, true).await
}

/// Like [`assert_ambiguous`] with any method and extra headers; `audit = false` for
/// requests that may be refused by the HTTP parser before the gateway sees them.
pub async fn assert_refused(
    stack: &Stack,
    case: &str,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    session: Option<&Session>,
    audit: bool,
) -> Reply {
    let traffic = stack.upstream_traffic();
    let events = stack.events("ambiguous_path");
    let cookie = session.map(Session::cookie_header);
    let mut all: Vec<(&str, &str)> = vec![("accept", HTML)];
    all.extend_from_slice(headers);
    if let Some(cookie) = &cookie {
        all.push(("cookie", cookie));
    }
    let reply = stack.request(method, target, &all).await;
    assert!(
        !reply.is_protected(),
        "{case}: BYPASS: {method} {target} returned protected content\n{reply}"
    );
    assert_eq!(
        reply.status, 400,
        "{case}: {method} {target} must be refused with 400 before routing\n{reply}"
    );
    assert!(
        !reply.body.contains(PUBLIC) && reply.header("x-upstream-name").is_none(),
        "{case}: the 400 came from an upstream\n{reply}"
    );
    assert_eq!(
        stack.upstream_traffic(),
        traffic,
        "{case}: {method} {target} reached an upstream (nginx log: {:?})",
        stack.nginx_hits().last()
    );
    if audit {
        assert!(
            !reply.body.is_empty() && reply.body.len() < 4096,
            "{case}: the 400 should carry a short reason, got {} bytes\n{reply}",
            reply.body.len()
        );
        stack.wait_event(case, "ambiguous_path", events).await;
    }
    reply
}

/// Without a session the target needs a login: a browser is sent to `/oauth2/start`, an
/// API client gets 401; nothing reaches an upstream and no protected content shows.
pub async fn assert_login_required(stack: &Stack, case: &str, target: &str) {
    let traffic = stack.upstream_traffic();
    let browser = stack.get(target).await;
    assert!(
        !browser.is_protected(),
        "{case}: BYPASS: GET {target} returned protected content without login\n{browser}"
    );
    assert_eq!(
        browser.status, 302,
        "{case}: a browser without a session must be sent to log in\n{browser}"
    );
    let location = browser.header("location").unwrap_or_default();
    assert!(
        location.starts_with("/oauth2/start?rd="),
        "{case}: the redirect must go to /oauth2/start, got {location:?}\n{browser}"
    );
    let api = stack
        .request("GET", target, &[("accept", "application/json")])
        .await;
    assert_eq!(
        api.status, 401,
        "{case}: an API client without a session must get 401\n{api}"
    );
    assert!(!api.is_protected(), "{case}: BYPASS (API)\n{api}");
    assert_eq!(
        stack.upstream_traffic(),
        traffic,
        "{case}: GET {target} reached an upstream without a session"
    );
}

/// nginx served `target` from the location with `marker`, seeing path `uri` (its
/// normalized `$uri`).
pub async fn assert_nginx_served(
    stack: &Stack,
    case: &str,
    target: &str,
    session: Option<&Session>,
    marker: &str,
    uri: &str,
) -> Reply {
    let reply = match session {
        Some(s) => stack.get_as(s, target).await,
        None => stack.get(target).await,
    };
    assert_eq!(
        reply.status, 200,
        "{case}: GET {target} must be served\n{reply}"
    );
    assert_eq!(
        reply.body,
        format!("{marker} {uri}\n"),
        "{case}: GET {target} must be served by nginx's {marker} location as {uri}\n{reply}"
    );
    reply
}

/// The echo upstream's JSON in a reply (panics if it is not).
pub fn echoed(case: &str, reply: &Reply) -> super::Echoed {
    assert_eq!(
        reply.status, 200,
        "{case}: expected the echo upstream\n{reply}"
    );
    super::Echoed::parse(reply.body.as_bytes())
}

/// None of `secrets` occurs in `haystack`.
pub fn assert_no_secrets(case: &str, what: &str, haystack: &str, secrets: &[(&str, String)]) {
    for (name, value) in secrets {
        assert!(
            value.len() >= 8,
            "{case}: the {name} is too short to search for: {value:?}"
        );
        assert!(
            !haystack.contains(value.as_str()),
            "{case}: LEAK: the {name} appears in {what}:\n{}",
            haystack
                .lines()
                .filter(|l| l.contains(value.as_str()))
                .take(3)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}
