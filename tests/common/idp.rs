//! The node test IdP (`tests/idp/server.mjs`, `oidc-provider`) as a child process.
//!
//! [`Idp::builder`] sets its environment (see `tests/idp/README.md`); [`IdpBuilder::start`]
//! runs `node tests/idp/server.mjs` on a free loopback port (`IDP_PORT=0`) and waits for
//! the stdout line `IDP_READY http://127.0.0.1:<port>` (bounded). The process is killed
//! when the [`Idp`] is dropped; if the test is panicking, its output is printed.
//!
//! The IdP must know the gateway's redirect URI before it starts, so a test picks the
//! gateway's port first (see `tests/login.rs`).
//!
//! By default the IdP runs with oidc-provider's shipped defaults: opaque access tokens
//! (check them with [`Idp::introspect`] / [`Idp::assert_token_active`]) and the scope
//! claims (email, name, groups, ...) only at userinfo, not in the ID token. The builder's
//! opt-ins ([`IdpBuilder::claims_in_id_token`], [`IdpBuilder::jwt_access_tokens`], ...)
//! switch single behaviours back.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde_json::Value;

use super::process::{try_spawn_and_wait_for_line, ChildProcess};

/// The IdP's `API_RESOURCE`: the `aud` of its JWT access tokens (with
/// [`IdpBuilder::jwt_access_tokens`], or when this `resource` is requested).
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
    "STORE_MAX_ENTRIES",
    "API_RESOURCE",
    "USERS_JSON",
    "CLAIMS_IN_ID_TOKEN",
    "ACCESS_TOKEN_FORMAT",
    "SIGNING_ALG",
    "USERINFO_SIGNED",
    "CLIENT_KEY_FILE",
    "CLIENT_KEY_ID",
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

    /// `CLAIMS_IN_ID_TOKEN=1`: the ID token carries every claim of the granted scopes
    /// (email, name, groups, ...), not only `sub` and the protocol claims.
    pub fn claims_in_id_token(self) -> Self {
        self.env("CLAIMS_IN_ID_TOKEN", "1")
    }

    /// `ACCESS_TOKEN_FORMAT=jwt`: every access token is a JWT for [`DEFAULT_API_RESOURCE`]
    /// (so userinfo refuses it, and the ID token carries the claims).
    pub fn jwt_access_tokens(self) -> Self {
        self.env("ACCESS_TOKEN_FORMAT", "jwt")
    }

    /// `SIGNING_ALG`: `RS256` (the default, an RSA-2048 key) or `ES256` (EC P-256).
    pub fn signing_alg(self, alg: &str) -> Self {
        assert!(
            matches!(alg, "RS256" | "ES256"),
            "the test IdP signs with RS256 or ES256, not {alg:?}"
        );
        self.env("SIGNING_ALG", alg)
    }

    /// `USERINFO_SIGNED=1`: userinfo answers `application/jwt` (signed with the signing
    /// alg) for the main client.
    pub fn signed_userinfo(self) -> Self {
        self.env("USERINFO_SIGNED", "1")
    }

    /// The main client authenticates with `private_key_jwt`; `key_file` is its PEM private
    /// key (see [`write_client_key`]). No secret is needed; the IdP registers the public
    /// key with `kid` = its RFC 7638 thumbprint (`CLIENT_KEY_ID` overrides).
    pub fn private_key_jwt(self, key_file: &Path) -> Self {
        assert!(
            key_file.is_file(),
            "client key file {} does not exist",
            key_file.display()
        );
        self.env("CLIENT_AUTH_METHOD", "private_key_jwt").env(
            "CLIENT_KEY_FILE",
            key_file.to_str().expect("UTF-8 key path"),
        )
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

    async fn post_json(&self, url: &str) -> Value {
        let resp = self
            .http
            .post(url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {url}: {e}"));
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        assert!(status.is_success(), "POST {url}: {status} {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("POST {url}: not JSON ({e}): {body}"))
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

    /// Verifies a JWT the IdP signed (RS256 or ES256 as its header says, a key from its
    /// JWKS by `kid`, `iss` = this issuer, `aud` = `audience`, not expired) and returns
    /// its claims. Panics otherwise.
    pub async fn verify_jwt(&self, token: &str, audience: &str) -> Value {
        let header = decode_header(token).unwrap_or_else(|e| panic!("not a JWT ({e}): {token}"));
        assert!(
            matches!(header.alg, Algorithm::RS256 | Algorithm::ES256),
            "JWT algorithm {:?}: the test IdP signs with RS256 or ES256 only",
            header.alg
        );
        let kid = header.kid.as_deref().expect("JWT header has a kid");
        let jwks = self.jwks().await;
        let jwk = jwks
            .find(kid)
            .unwrap_or_else(|| panic!("kid {kid} is not in the IdP's JWKS"));
        let key = DecodingKey::from_jwk(jwk).expect("JWK usable as a decoding key");
        let mut validation = Validation::new(header.alg);
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

    /// How many `/token` requests failed with error `code` (e.g. `invalid_grant`,
    /// `invalid_client`) so far.
    pub async fn token_errors(&self, code: &str) -> u64 {
        let stats = self.stats().await;
        let errors = stats["token_errors"]
            .as_object()
            .unwrap_or_else(|| panic!("stats.token_errors is not an object: {stats}"));
        errors.get(code).map_or(0, |n| {
            n.as_u64()
                .unwrap_or_else(|| panic!("stats.token_errors.{code} is not a count: {n}"))
        })
    }

    /// How many requests reached the userinfo endpoint (`/me`) so far.
    pub async fn userinfo_requests(&self) -> u64 {
        self.stats().await["userinfo_requests"]
            .as_u64()
            .expect("stats.userinfo_requests")
    }

    /// How many requests reached the JWKS endpoint so far.
    pub async fn jwks_requests(&self) -> u64 {
        self.stats().await["jwks_requests"]
            .as_u64()
            .expect("stats.jwks_requests")
    }

    /// `POST /__test/rotate_keys`: a new signing key signs everything from now on and is
    /// published first; the old ones stay published (and accepted by the IdP) only with
    /// `keep_old`. Returns `{"kid": "<new>", "kids": [<published kids>]}`.
    pub async fn rotate_keys(&self, keep_old: bool) -> Value {
        let url = self.url_for(&format!(
            "/__test/rotate_keys?keep_old={}",
            u8::from(keep_old)
        ));
        let out = self.post_json(&url).await;
        let kid = out["kid"]
            .as_str()
            .unwrap_or_else(|| panic!("rotate_keys: no kid in {out}"));
        let kids = out["kids"]
            .as_array()
            .unwrap_or_else(|| panic!("rotate_keys: no kids in {out}"));
        assert_eq!(
            kids.first().and_then(Value::as_str),
            Some(kid),
            "rotate_keys: the new key is published first: {out}"
        );
        if !keep_old {
            assert_eq!(
                kids.len(),
                1,
                "rotate_keys?keep_old=0 publishes only the new key: {out}"
            );
        }
        out
    }

    /// RFC 7662 introspection of `token` at the IdP's introspection endpoint, as
    /// `client_id` (`client_secret_basic` with `client_secret`, or `client_id` in the body
    /// for a public client, which may only introspect its own tokens). Returns the JSON,
    /// e.g. `{"active":true,"sub":"alice","client_id":"gateway","scope":"...",...}` or
    /// `{"active":false}`.
    pub async fn introspect(
        &self,
        token: &str,
        client_id: &str,
        client_secret: Option<&str>,
    ) -> Value {
        let discovery = self.discovery().await;
        let url = discovery["introspection_endpoint"]
            .as_str()
            .unwrap_or_else(|| panic!("discovery has no introspection_endpoint: {discovery}"))
            .to_string();
        let request = self.http.post(&url);
        let request = match client_secret {
            Some(secret) => request
                .basic_auth(client_id, Some(secret))
                .form(&[("token", token)]),
            None => request.form(&[("token", token), ("client_id", client_id)]),
        };
        let resp = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {url}: {e}"));
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        assert!(
            status.is_success(),
            "introspection as {client_id} refused: {status} {body}"
        );
        let out: Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("introspection answer is not JSON ({e}): {body}"));
        assert!(
            out["active"].is_boolean(),
            "introspection answer without a boolean `active`: {out}"
        );
        out
    }

    /// Asserts that `token` is a live access token of the IdP, issued to `client_id` for
    /// user `sub` (introspection: `active`, `sub`, `client_id`, `token_type` Bearer), and
    /// returns the introspection answer.
    pub async fn assert_token_active(
        &self,
        token: &str,
        client_id: &str,
        client_secret: Option<&str>,
        sub: &str,
    ) -> Value {
        let out = self.introspect(token, client_id, client_secret).await;
        assert_eq!(
            out["active"], true,
            "access token {token:?} is not active at the IdP: {out}"
        );
        assert_eq!(out["sub"], sub, "access token's subject: {out}");
        assert_eq!(out["client_id"], client_id, "access token's client: {out}");
        assert_eq!(
            out["token_type"], "Bearer",
            "token_type (an access token): {out}"
        );
        out
    }

    /// Asserts that the IdP reports `token` as inactive (expired, revoked or unknown).
    pub async fn assert_token_inactive(
        &self,
        token: &str,
        client_id: &str,
        client_secret: Option<&str>,
    ) {
        let out = self.introspect(token, client_id, client_secret).await;
        assert_eq!(
            out,
            serde_json::json!({ "active": false }),
            "token {token:?} is still active at the IdP"
        );
    }
}

/// Key formats [`write_client_key`] can write (a private_key_jwt client's key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientKeyKind {
    /// RSA-2048, PKCS#8 (`BEGIN PRIVATE KEY`).
    RsaPkcs8,
    /// RSA-2048, PKCS#1 (`BEGIN RSA PRIVATE KEY`).
    RsaPkcs1,
    /// EC P-256, PKCS#8 (`BEGIN PRIVATE KEY`).
    EcPkcs8,
    /// EC P-256, SEC1 (`BEGIN EC PRIVATE KEY`).
    EcSec1,
}

impl ClientKeyKind {
    /// The JWS algorithm the key signs with: RS256 or ES256.
    pub fn alg(self) -> &'static str {
        match self {
            Self::RsaPkcs8 | Self::RsaPkcs1 => "RS256",
            Self::EcPkcs8 | Self::EcSec1 => "ES256",
        }
    }

    fn file_name(self) -> &'static str {
        match self {
            Self::RsaPkcs8 => "client-rsa-pkcs8.pem",
            Self::RsaPkcs1 => "client-rsa-pkcs1.pem",
            Self::EcPkcs8 => "client-ec-pkcs8.pem",
            Self::EcSec1 => "client-ec-sec1.pem",
        }
    }

    fn pem_label(self) -> &'static str {
        match self {
            Self::RsaPkcs8 | Self::EcPkcs8 => "-----BEGIN PRIVATE KEY-----",
            Self::RsaPkcs1 => "-----BEGIN RSA PRIVATE KEY-----",
            Self::EcSec1 => "-----BEGIN EC PRIVATE KEY-----",
        }
    }
}

/// Generates a fresh private key of `kind` with the `openssl` CLI and writes it as PEM to
/// `dir/client-<kind>.pem`; returns the path.
pub fn write_client_key(dir: &Path, kind: ClientKeyKind) -> PathBuf {
    let path = dir.join(kind.file_name());
    let mut cmd = Command::new("openssl");
    match kind {
        ClientKeyKind::RsaPkcs8 => cmd.args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ]),
        ClientKeyKind::RsaPkcs1 => cmd.args(["genrsa", "-traditional"]),
        ClientKeyKind::EcPkcs8 => cmd.args([
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ]),
        ClientKeyKind::EcSec1 => cmd.args(["ecparam", "-name", "prime256v1", "-genkey", "-noout"]),
    };
    cmd.arg("-out").arg(&path);
    if kind == ClientKeyKind::RsaPkcs1 {
        cmd.arg("2048"); // genrsa: the bit count comes last
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running openssl to write a {kind:?} key: {e}"));
    assert!(
        out.status.success(),
        "openssl failed to write a {kind:?} key ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let pem = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    assert!(
        pem.starts_with(kind.pem_label()),
        "{} should start with {:?}, got {:?}",
        path.display(),
        kind.pem_label(),
        pem.lines().next()
    );
    path
}
