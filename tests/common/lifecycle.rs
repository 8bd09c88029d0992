//! Helpers for `tests/lifecycle.rs` (refresh, timeouts, sign-out, back-channel logout, API
//! bearer tokens, secret rotation):
//!
//! - [`LifecycleStack`]: the node test IdP, an echo upstream and the gateway, with the
//!   gateway's port chosen first so the IdP can be told its redirect, post-logout and
//!   back-channel logout URIs (one `BACKCHANNEL_LOGOUT_URI` only, so on a port clash the
//!   whole stack is started again on another port).
//! - [`RsaKey`], [`RsaPublic`] and [`mint_jwt`]: JWTs with any header, claims and signature
//!   (RS256 with a key the test holds, HS256 with any secret, `alg: none`), for forged
//!   tokens.
//! - [`SigningIdp`]: a tiny in-process OpenID Provider whose RSA signing key the test holds,
//!   so it can mint tokens that are valid except for exactly one fault (wrong `aud`, expired,
//!   a `nonce` in a logout token, ...). Its authorization endpoint shows no page: it
//!   redirects straight back with a code for the user set with [`SigningIdp::set_user`].

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::gateway::try_start_gateway;
use super::idp::{Idp, IdpBuilder, DEFAULT_API_RESOURCE};
use super::login::random_hex;
use super::{free_port, EchoUpstream, Gateway};

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

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
        }
    }
}

/// Path prefix of the route with `accept_bearer = true`; everything else goes to a route
/// without it. Both lead to the same echo upstream.
pub const BEARER_PREFIX: &str = "/api";

/// The gateway's config: `/api` accepts API clients' own bearer JWTs, `/` does not.
pub fn gateway_toml(port: u16, issuer: &str, upstream: &str, s: &GatewaySettings) -> String {
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
"#,
        client_id = s.client_id,
        client_secret = s.client_secret,
        api_audience = s.api_audience,
        secrets = secrets.join(", "),
        idle = s.idle_timeout,
        absolute = s.absolute_timeout,
        refresh_before = s.refresh_before,
        post = s.sign_out_requires_post,
    )
}

// ----- the real stack: node IdP + echo upstream + gateway ---------------------------------

/// Paths the IdP accepts as post-logout redirect targets on the gateway.
pub const POST_LOGOUT_PATHS: &[&str] = &["/", "/x", "/bye"];

/// The node test IdP, an echo upstream and the gateway, wired together.
pub struct LifecycleStack {
    idp: Option<Idp>,
    pub upstream: EchoUpstream,
    pub gateway: Gateway,
    pub port: u16,
    pub settings: GatewaySettings,
}

impl LifecycleStack {
    /// The IdP gets the gateway's client, its callback, post-logout URIs
    /// ([`POST_LOGOUT_PATHS`]) and back-channel logout URI; `customize` adds to its
    /// environment (users, token lifetimes, ...).
    pub async fn start(
        settings: GatewaySettings,
        customize: impl Fn(IdpBuilder) -> IdpBuilder,
    ) -> Self {
        let upstream = EchoUpstream::start().await;
        for _ in 0..3 {
            let port = free_port();
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
            let idp = customize(idp).start().await;
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

// ----- RSA keys and JWTs ------------------------------------------------------------------

/// An RSA public key as its modulus and exponent (big-endian, no leading zeros).
#[derive(Debug, Clone)]
pub struct RsaPublic {
    pub n: Vec<u8>,
    pub e: Vec<u8>,
}

impl RsaPublic {
    /// From a JWK's `n` and `e`.
    pub fn from_jwk(jwk: &Value) -> Self {
        let field = |name: &str| {
            let text = jwk[name]
                .as_str()
                .unwrap_or_else(|| panic!("JWK without {name}: {jwk}"));
            URL_SAFE_NO_PAD
                .decode(text)
                .unwrap_or_else(|e| panic!("JWK {name} is not base64url: {e}"))
        };
        RsaPublic {
            n: field("n"),
            e: field("e"),
        }
    }

    /// PKCS#1 `RSAPublicKey` (RFC 8017), DER.
    pub fn pkcs1_der(&self) -> Vec<u8> {
        der_tlv(0x30, &[der_integer(&self.n), der_integer(&self.e)].concat())
    }

    /// X.509 `SubjectPublicKeyInfo`, DER.
    pub fn spki_der(&self) -> Vec<u8> {
        // rsaEncryption (1.2.840.113549.1.1.1) with NULL parameters.
        let algorithm = der_tlv(
            0x30,
            &[
                der_tlv(
                    0x06,
                    &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01],
                ),
                vec![0x05, 0x00],
            ]
            .concat(),
        );
        let key = der_tlv(0x03, &[&[0u8][..], &self.pkcs1_der()].concat());
        der_tlv(0x30, &[algorithm, key].concat())
    }

    /// `-----BEGIN PUBLIC KEY-----` PEM of [`RsaPublic::spki_der`], 64-column lines.
    pub fn spki_pem(&self) -> String {
        let b64 = STANDARD.encode(self.spki_der());
        let mut pem = String::from("-----BEGIN PUBLIC KEY-----\n");
        for chunk in b64.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(chunk).unwrap());
            pem.push('\n');
        }
        pem.push_str("-----END PUBLIC KEY-----\n");
        pem
    }

    /// The public JWK (RS256, `use: sig`).
    pub fn jwk(&self, kid: &str) -> Value {
        json!({
            "kty": "RSA",
            "kid": kid,
            "use": "sig",
            "alg": "RS256",
            "n": URL_SAFE_NO_PAD.encode(&self.n),
            "e": URL_SAFE_NO_PAD.encode(&self.e),
        })
    }
}

fn der_len(len: usize) -> Vec<u8> {
    if len < 0x80 {
        return vec![len as u8];
    }
    let bytes: Vec<u8> = len
        .to_be_bytes()
        .into_iter()
        .skip_while(|b| *b == 0)
        .collect();
    [vec![0x80 | bytes.len() as u8], bytes].concat()
}

fn der_tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    [vec![tag], der_len(content.len()), content.to_vec()].concat()
}

fn der_integer(unsigned: &[u8]) -> Vec<u8> {
    let trimmed: Vec<u8> = unsigned.iter().copied().skip_while(|b| *b == 0).collect();
    let content = match trimmed.first() {
        None => vec![0],
        Some(b) if b & 0x80 != 0 => [vec![0], trimmed].concat(),
        Some(_) => trimmed,
    };
    der_tlv(0x02, &content)
}

/// Reads one DER TLV: (tag, content, rest).
fn der_read(input: &[u8]) -> (u8, &[u8], &[u8]) {
    let tag = input[0];
    let (len, header) = if input[1] < 0x80 {
        (input[1] as usize, 2)
    } else {
        let n = (input[1] & 0x7f) as usize;
        let len = input[2..2 + n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | *b as usize);
        (len, 2 + n)
    };
    (tag, &input[header..header + len], &input[header + len..])
}

/// A 2048-bit RSA key pair (aws-lc-rs) that signs RS256.
pub struct RsaKey {
    pair: aws_lc_rs::rsa::KeyPair,
    pub kid: String,
    public: RsaPublic,
}

impl RsaKey {
    pub fn generate(kid: &str) -> Self {
        use aws_lc_rs::signature::KeyPair as _;
        let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
            .expect("generate an RSA key");
        // The public key is a PKCS#1 RSAPublicKey: SEQUENCE { INTEGER n, INTEGER e }.
        let public = {
            let (tag, body, _) = der_read(pair.public_key().as_ref());
            assert_eq!(tag, 0x30, "RSAPublicKey is a SEQUENCE");
            let (_, n, rest) = der_read(body);
            let (_, e, _) = der_read(rest);
            let strip = |b: &[u8]| {
                b.iter()
                    .copied()
                    .skip_while(|x| *x == 0)
                    .collect::<Vec<u8>>()
            };
            RsaPublic {
                n: strip(n),
                e: strip(e),
            }
        };
        RsaKey {
            pair,
            kid: kid.to_string(),
            public,
        }
    }

    pub fn public(&self) -> &RsaPublic {
        &self.public
    }

    pub fn jwk(&self) -> Value {
        self.public.jwk(&self.kid)
    }

    fn sign_rs256(&self, message: &[u8]) -> Vec<u8> {
        let mut signature = vec![0u8; self.pair.public_modulus_len()];
        self.pair
            .sign(
                &aws_lc_rs::signature::RSA_PKCS1_SHA256,
                &aws_lc_rs::rand::SystemRandom::new(),
                message,
                &mut signature,
            )
            .expect("RSA signature");
        signature
    }
}

/// How [`mint_jwt`] signs (whatever the header's `alg` claims).
pub enum Signer<'a> {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    Rs256(&'a RsaKey),
    /// HMAC-SHA256 with these bytes as the secret.
    Hs256(&'a [u8]),
    /// No signature at all (empty third part), as for `alg: none`.
    Unsigned,
}

/// `base64url(header).base64url(claims).base64url(signature)`; header and claims exactly
/// as given.
pub fn mint_jwt(header: &Value, claims: &Value, signer: Signer<'_>) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = match signer {
        Signer::Rs256(key) => key.sign_rs256(input.as_bytes()),
        Signer::Hs256(secret) => {
            let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
            aws_lc_rs::hmac::sign(&key, input.as_bytes())
                .as_ref()
                .to_vec()
        }
        Signer::Unsigned => Vec::new(),
    };
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

/// The header and claims of a JWT, unverified.
pub fn jwt_parts(token: &str) -> (Value, Value) {
    let mut parts = token.split('.');
    let mut decode = |what: &str| -> Value {
        let part = parts
            .next()
            .unwrap_or_else(|| panic!("JWT without {what}: {token}"));
        let bytes = URL_SAFE_NO_PAD
            .decode(part)
            .unwrap_or_else(|e| panic!("JWT {what} is not base64url ({e}): {token}"));
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("JWT {what} is not JSON ({e}): {token}"))
    };
    let header = decode("header");
    let claims = decode("claims");
    (header, claims)
}

// ----- SigningIdp: an OpenID Provider whose key the test holds ----------------------------

struct PendingCode {
    sub: String,
    sid: String,
    nonce: Option<String>,
    challenge: String,
    redirect_uri: String,
}

struct SigningState {
    issuer: String,
    client_id: String,
    api_audience: String,
    key: RsaKey,
    next_user: Mutex<String>,
    codes: Mutex<HashMap<String, PendingCode>>,
    /// (sub, sid) of every completed login, in order.
    logins: Mutex<Vec<(String, String)>>,
    token_requests: AtomicUsize,
}

/// An in-process OpenID Provider (discovery, JWKS, authorization without pages, token
/// endpoint for the authorization code) signing RS256 with a key the test can use too.
pub struct SigningIdp {
    addr: SocketAddr,
    state: Arc<SigningState>,
    accept_task: JoinHandle<()>,
}

impl SigningIdp {
    /// `client_id` is the `aud` of its ID tokens; `api_audience` the `aud` of its access
    /// tokens.
    pub async fn start(client_id: &str, api_audience: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the signing IdP");
        let addr = listener.local_addr().expect("local_addr");
        let state = Arc::new(SigningState {
            issuer: format!("http://{addr}"),
            client_id: client_id.to_string(),
            api_audience: api_audience.to_string(),
            key: RsaKey::generate(&format!("signing-idp-{}", random_hex(4))),
            next_user: Mutex::new("alice".to_string()),
            codes: Mutex::new(HashMap::new()),
            logins: Mutex::new(Vec::new()),
            token_requests: AtomicUsize::new(0),
        });
        let accept_state = state.clone();
        let accept_task = super::http::serve(listener, move |req| {
            signing_idp_handle(accept_state.clone(), req)
        });
        SigningIdp {
            addr,
            state,
            accept_task,
        }
    }

    /// `http://127.0.0.1:<port>`, no trailing slash.
    pub fn issuer(&self) -> &str {
        &self.state.issuer
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The key in its JWKS (and that signs everything it issues).
    pub fn key(&self) -> &RsaKey {
        &self.state.key
    }

    /// Who the next authorization request signs in as.
    pub fn set_user(&self, sub: &str) {
        *self.state.next_user.lock().unwrap() = sub.to_string();
    }

    /// The IdP session id (`sid`) of `sub`'s latest login.
    pub fn sid_of(&self, sub: &str) -> Option<String> {
        let logins = self.state.logins.lock().unwrap();
        logins
            .iter()
            .rev()
            .find(|(s, _)| s == sub)
            .map(|(_, sid)| sid.clone())
    }

    /// Requests to its token endpoint so far.
    pub fn token_requests(&self) -> usize {
        self.state.token_requests.load(Ordering::SeqCst)
    }

    /// `claims` signed RS256 with its key, header `{"alg":"RS256","kid":..,"typ":typ}`.
    pub fn sign(&self, typ: &str, claims: &Value) -> String {
        let header = json!({"alg": "RS256", "kid": self.state.key.kid, "typ": typ});
        mint_jwt(&header, claims, Signer::Rs256(&self.state.key))
    }

    /// Claims of a correct access token (RFC 9068) for `sub`, valid for an hour.
    pub fn access_claims(&self, sub: &str) -> Value {
        let now = unix_now();
        json!({
            "iss": self.state.issuer,
            "sub": sub,
            "aud": self.state.api_audience,
            "client_id": self.state.client_id,
            "scope": "openid email profile",
            "jti": random_hex(12),
            "iat": now,
            "exp": now + 3600,
        })
    }

    /// Claims of a correct back-channel logout token for `sub` (and `sid`, if given).
    pub fn logout_claims(&self, sub: Option<&str>, sid: Option<&str>) -> Value {
        let now = unix_now();
        let mut claims = json!({
            "iss": self.state.issuer,
            "aud": self.state.client_id,
            "iat": now,
            "exp": now + 120,
            "jti": random_hex(12),
            "events": { "http://schemas.openid.net/event/backchannel-logout": {} },
        });
        if let Some(sub) = sub {
            claims["sub"] = json!(sub);
        }
        if let Some(sid) = sid {
            claims["sid"] = json!(sid);
        }
        claims
    }
}

impl Drop for SigningIdp {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

fn respond(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("cache-control", "no-store")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

fn json_response(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    respond(status, "application/json", body.to_string())
}

fn form_params(text: &str) -> HashMap<String, String> {
    url::form_urlencoded::parse(text.as_bytes())
        .into_owned()
        .collect()
}

async fn signing_idp_handle(
    state: Arc<SigningState>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let issuer = state.issuer.clone();
    let path = req.uri().path().to_string();
    let query = form_params(req.uri().query().unwrap_or(""));
    let method = req.method().clone();
    let resp = match (method, path.as_str()) {
        (Method::GET, "/.well-known/openid-configuration") => json_response(
            StatusCode::OK,
            json!({
                "issuer": issuer,
                "authorization_endpoint": format!("{issuer}/authorize"),
                "token_endpoint": format!("{issuer}/token"),
                "jwks_uri": format!("{issuer}/jwks"),
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "code_challenge_methods_supported": ["S256"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
                "grant_types_supported": ["authorization_code", "refresh_token"],
                "authorization_response_iss_parameter_supported": true,
            }),
        ),
        (Method::GET, "/jwks") => {
            json_response(StatusCode::OK, json!({ "keys": [state.key.jwk()] }))
        }
        (Method::GET, "/authorize") => authorize(&state, &query),
        (Method::POST, "/token") => {
            state.token_requests.fetch_add(1, Ordering::SeqCst);
            let body = req
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            token(&state, &form_params(&String::from_utf8_lossy(&body)))
        }
        _ => json_response(StatusCode::NOT_FOUND, json!({"error": "not_found"})),
    };
    Ok(resp)
}

fn authorize(state: &SigningState, q: &HashMap<String, String>) -> Response<Full<Bytes>> {
    let (Some(redirect_uri), Some(state_param), Some(challenge)) = (
        q.get("redirect_uri"),
        q.get("state"),
        q.get("code_challenge"),
    ) else {
        return json_response(StatusCode::BAD_REQUEST, json!({"error": "invalid_request"}));
    };
    let code = random_hex(16);
    let sub = state.next_user.lock().unwrap().clone();
    let sid = format!("sid-{}", random_hex(8));
    state.codes.lock().unwrap().insert(
        code.clone(),
        PendingCode {
            sub,
            sid,
            nonce: q.get("nonce").cloned(),
            challenge: challenge.clone(),
            redirect_uri: redirect_uri.clone(),
        },
    );
    let mut location = url::Url::parse(redirect_uri).expect("redirect_uri is a URL");
    location
        .query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", state_param)
        .append_pair("iss", &state.issuer);
    Response::builder()
        .status(StatusCode::FOUND)
        .header("location", location.as_str())
        .body(Full::new(Bytes::new()))
        .unwrap()
}

fn token(state: &SigningState, form: &HashMap<String, String>) -> Response<Full<Bytes>> {
    let invalid_grant = || {
        json_response(
            StatusCode::BAD_REQUEST,
            json!({"error": "invalid_grant", "error_description": "grant request is invalid"}),
        )
    };
    if form.get("grant_type").map(String::as_str) != Some("authorization_code") {
        return invalid_grant();
    }
    let Some(pending) = form
        .get("code")
        .and_then(|c| state.codes.lock().unwrap().remove(c))
    else {
        return invalid_grant();
    };
    let verifier = form.get("code_verifier").cloned().unwrap_or_default();
    let computed = URL_SAFE_NO_PAD.encode(
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes()).as_ref(),
    );
    if computed != pending.challenge || form.get("redirect_uri") != Some(&pending.redirect_uri) {
        return invalid_grant();
    }
    state
        .logins
        .lock()
        .unwrap()
        .push((pending.sub.clone(), pending.sid.clone()));
    let now = unix_now();
    let sign = |typ: &str, claims: Value| {
        let header = json!({"alg": "RS256", "kid": state.key.kid, "typ": typ});
        mint_jwt(&header, &claims, Signer::Rs256(&state.key))
    };
    let mut id_claims = json!({
        "iss": state.issuer,
        "sub": pending.sub,
        "aud": state.client_id,
        "iat": now,
        "exp": now + 3600,
        "sid": pending.sid,
        "email": format!("{}@example.com", pending.sub),
        "name": pending.sub,
    });
    if let Some(nonce) = pending.nonce {
        id_claims["nonce"] = json!(nonce);
    }
    let access_claims = json!({
        "iss": state.issuer,
        "sub": pending.sub,
        "aud": state.api_audience,
        "client_id": state.client_id,
        "scope": "openid email profile offline_access",
        "jti": random_hex(12),
        "iat": now,
        "exp": now + 3600,
    });
    json_response(
        StatusCode::OK,
        json!({
            "access_token": sign("at+jwt", access_claims),
            "token_type": "Bearer",
            "expires_in": 3600,
            "refresh_token": format!("rt-{}", random_hex(16)),
            "id_token": sign("JWT", id_claims),
            "scope": "openid email profile offline_access",
        }),
    )
}

/// Starts a gateway (routes as in [`gateway_toml`]) in front of `idp` and `upstream` on a
/// port the harness picks (the signing IdP accepts any redirect URI).
pub async fn start_gateway_for(
    idp: &SigningIdp,
    upstream: &EchoUpstream,
    settings: &GatewaySettings,
) -> Gateway {
    for _ in 0..3 {
        let toml = gateway_toml(free_port(), idp.issuer(), &upstream.url(), settings);
        if let Some(gateway) = try_start_gateway(&toml).await {
            return gateway;
        }
    }
    panic!("three gateway ports in a row were taken before the gateway bound them");
}
