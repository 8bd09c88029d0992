//! The node test IdP (`tests/idp/server.mjs`, `oidc-provider`) as a child process.
//!
//! [`Idp::builder`] sets its environment (see `tests/idp/README.md`); [`IdpBuilder::start`]
//! runs `node tests/idp/server.mjs` on a free loopback port (`IDP_PORT=0`) and waits for
//! the stdout line `IDP_READY http://127.0.0.1:<port>` (bounded). The process is killed
//! when the [`Idp`] is dropped; if the test is panicking, its output is printed.
//!
//! The IdP must know the gateway's redirect URI before it starts, so a test picks the
//! gateway's port first (see `tests/login.rs`).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde_json::Value;

use super::process::{try_spawn_and_wait_for_line, ChildProcess};

/// The IdP's default resource indicator: the `aud` of its access tokens.
pub const DEFAULT_API_RESOURCE: &str = "https://api.portcullis.test";

/// Every variable the IdP reads; cleared before start so the test's environment never
/// leaks into it.
const IDP_ENV: &[&str] = &[
    "IDP_PORT",
    "CLIENT_ID",
    "CLIENT_SECRET",
    "CLIENT_AUTH_METHOD",
    "REDIRECT_URIS",
    "POST_LOGOUT_REDIRECT_URIS",
    "BACKCHANNEL_LOGOUT_URI",
    "CLIENT2_ID",
    "CLIENT2_SECRET",
    "ACCESS_TOKEN_TTL",
    "ID_TOKEN_TTL",
    "REFRESH_TOKEN_TTL",
    "SESSION_TTL",
    "API_RESOURCE",
    "USERS_JSON",
];

/// How long node may take to print `IDP_READY` (usually 0.4–0.6 s), per attempt.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Attempts before giving up.
const READY_ATTEMPTS: usize = 3;

/// Environment for one test IdP.
#[derive(Debug, Clone, Default)]
pub struct IdpBuilder {
    redirect_uris: Vec<String>,
    env: Vec<(String, String)>,
}

impl IdpBuilder {
    /// Registers a redirect URI for both clients (at least one is required).
    pub fn redirect_uri(mut self, uri: impl Into<String>) -> Self {
        self.redirect_uris.push(uri.into());
        self
    }

    /// The main client: `CLIENT_ID`, and `CLIENT_SECRET` (`None`: a public client).
    pub fn client(self, id: &str, secret: Option<&str>) -> Self {
        let this = self.env("CLIENT_ID", id);
        match secret {
            Some(secret) => this.env("CLIENT_SECRET", secret),
            None => this,
        }
    }

    /// `USERS_JSON`: per-user claim overrides.
    pub fn users(self, users: &Value) -> Self {
        self.env("USERS_JSON", users.to_string())
    }

    /// Any other variable from the README's table.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Starts `node tests/idp/server.mjs` and waits for `IDP_READY`.
    pub async fn start(self) -> Idp {
        assert!(
            !self.redirect_uris.is_empty(),
            "the test IdP needs at least one redirect URI"
        );
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/idp");
        assert!(
            dir.join("node_modules").is_dir(),
            "{}/node_modules is missing: run `cd tests/idp && npm ci` first",
            dir.display()
        );
        let command = || {
            let mut cmd = Command::new("node");
            cmd.arg(dir.join("server.mjs")).current_dir(&dir);
            for key in IDP_ENV {
                cmd.env_remove(key);
            }
            cmd.env("IDP_PORT", "0")
                .env("REDIRECT_URIS", self.redirect_uris.join(","))
                .envs(self.env.iter().map(|(k, v)| (k, v)));
            cmd
        };
        // Rarely (seen twice, both times on a busy machine) node stalls at start before
        // printing anything; a fresh process starts in half a second, so try again.
        let mut failures = Vec::new();
        let mut started = None;
        for _ in 0..READY_ATTEMPTS {
            match try_spawn_and_wait_for_line(command(), "IDP_READY", READY_TIMEOUT).await {
                Ok(ok) => {
                    started = Some(ok);
                    break;
                }
                Err(why) => {
                    eprintln!("test IdP did not start, trying again: {why}");
                    failures.push(why);
                }
            }
        }
        let (process, issuer) = started
            .unwrap_or_else(|| panic!("the test IdP never started:\n{}", failures.join("\n")));
        assert!(
            issuer.starts_with("http://127.0.0.1:"),
            "unexpected IDP_READY line: {issuer:?}"
        );
        Idp {
            process,
            issuer,
            http: super::http::client(),
        }
    }
}

/// A running test IdP. Killed on drop.
pub struct Idp {
    process: ChildProcess,
    issuer: String,
    http: reqwest::Client,
}

impl Idp {
    pub fn builder() -> IdpBuilder {
        IdpBuilder::default()
    }

    /// `http://127.0.0.1:<port>`, no trailing slash: the issuer and the base URL.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// `issuer() + path`.
    pub fn url_for(&self, path: &str) -> String {
        format!("{}{path}", self.issuer)
    }

    /// Everything the IdP wrote to stdout and stderr so far.
    pub fn output(&self) -> String {
        self.process.output()
    }

    async fn get_json(&self, url: &str) -> Value {
        let resp = self
            .http
            .get(url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        assert!(resp.status().is_success(), "GET {url}: {}", resp.status());
        resp.json()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: not JSON: {e}"))
    }

    /// The discovery document.
    pub async fn discovery(&self) -> Value {
        self.get_json(&self.url_for("/.well-known/openid-configuration"))
            .await
    }

    /// The signing keys, from the `jwks_uri` that discovery names.
    pub async fn jwks(&self) -> JwkSet {
        let discovery = self.discovery().await;
        let uri = discovery["jwks_uri"]
            .as_str()
            .expect("discovery has a jwks_uri");
        serde_json::from_value(self.get_json(uri).await).expect("JWKS parses as a JwkSet")
    }

    /// Verifies a JWT the IdP signed (RS256, a key from its JWKS by `kid`, `iss` = this
    /// issuer, `aud` = `audience`, not expired) and returns its claims. Panics otherwise.
    pub async fn verify_jwt(&self, token: &str, audience: &str) -> Value {
        let header = decode_header(token).unwrap_or_else(|e| panic!("not a JWT ({e}): {token}"));
        assert_eq!(header.alg, Algorithm::RS256, "JWT algorithm");
        let kid = header.kid.as_deref().expect("JWT header has a kid");
        let jwks = self.jwks().await;
        let jwk = jwks
            .find(kid)
            .unwrap_or_else(|| panic!("kid {kid} is not in the IdP's JWKS"));
        let key = DecodingKey::from_jwk(jwk).expect("JWK usable as a decoding key");
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_issuer(&[self.issuer()]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        decode::<Value>(token, &key, &validation)
            .unwrap_or_else(|e| panic!("JWT does not verify against the IdP's JWKS: {e}"))
            .claims
    }

    /// `GET /__test/stats`.
    pub async fn stats(&self) -> Value {
        self.get_json(&self.url_for("/__test/stats")).await
    }

    /// How many `grant_type=authorization_code` requests reached `/token` so far.
    pub async fn code_exchanges(&self) -> u64 {
        self.stats().await["token_requests"]["authorization_code"]
            .as_u64()
            .expect("stats.token_requests.authorization_code")
    }
}
