//! `KeyIssuer`: an in-process OpenID Provider *façade* whose signing keys the test holds,
//! for the adversarial suite (`tests/security*.rs`).
//!
//! It serves what the gateway reads at start — discovery and the JWKS — and nothing that
//! logs anyone in (`/authorize` shows a page, `/token` refuses). Two uses:
//!
//! - a cheap issuer for stacks that never log in (path, host, smuggling and header cases
//!   without a session start in milliseconds instead of the node IdP's half second);
//! - forging API bearer JWTs (`accept_bearer` routes) with any header and claims, signed
//!   by the published keys (RS256 and ES256), by keys that are not published, with
//!   `alg: none` or with HMAC keyed by the public key.
//!
//! Every request it receives is recorded ([`KeyIssuer::requests`]), so a test can prove
//! that a `jku`/`x5u` URL in a token header was never fetched. `/attacker-jwks` serves the
//! attacker's key set (the unpublished key), for those headers to point at.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::KeyPair as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::login::random_hex;

/// A key the issuer can sign with.
pub struct SigningKey {
    pub kid: String,
    pub alg: Algorithm,
    encoding: EncodingKey,
    /// The public JWK (with `kid`, `alg`, `use`).
    pub jwk: Value,
    /// The public key as PEM (`BEGIN PUBLIC KEY`): what an HS256 confusion attack keys
    /// the HMAC with.
    pub public_pem: String,
}

impl SigningKey {
    /// A fresh P-256 key (rcgen), ES256.
    pub fn ec(kid: &str) -> Self {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .expect("generate P-256 key");
        let public = pair.public_key_raw().to_vec();
        assert_eq!(public.len(), 65, "uncompressed P-256 point");
        let spki = pair.public_key_der();
        SigningKey {
            kid: kid.to_string(),
            alg: Algorithm::ES256,
            encoding: EncodingKey::from_ec_der(&pair.serialize_der()),
            jwk: json!({
                "kty": "EC", "crv": "P-256",
                "x": URL_SAFE_NO_PAD.encode(&public[1..33]),
                "y": URL_SAFE_NO_PAD.encode(&public[33..65]),
                "kid": kid, "alg": "ES256", "use": "sig",
            }),
            public_pem: pem("PUBLIC KEY", &spki),
        }
    }

    /// A fresh RSA-2048 key (aws-lc-rs), RS256.
    pub fn rsa(kid: &str) -> Self {
        let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
            .expect("generate RSA-2048 key");
        let pkcs8 = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&pair).expect("PKCS#8");
        let public = pair.public_key();
        let spki =
            AsDer::<aws_lc_rs::encoding::PublicKeyX509Der>::as_der(public).expect("SPKI DER");
        let components = aws_lc_rs::rsa::PublicKeyComponents::<Vec<u8>>::from(public);
        let private_pem = pem("PRIVATE KEY", pkcs8.as_ref());
        SigningKey {
            kid: kid.to_string(),
            alg: Algorithm::RS256,
            encoding: EncodingKey::from_rsa_pem(private_pem.as_bytes()).expect("RSA PEM"),
            jwk: json!({
                "kty": "RSA",
                "n": URL_SAFE_NO_PAD.encode(&components.n),
                "e": URL_SAFE_NO_PAD.encode(&components.e),
                "kid": kid, "alg": "RS256", "use": "sig",
            }),
            public_pem: pem("PUBLIC KEY", spki.as_ref()),
        }
    }

    /// `header.payload.signature` with this key's algorithm; `header` gets `alg` (and
    /// `kid` unless it already names one) added.
    pub fn sign(&self, header: Value, claims: &Value) -> String {
        let mut header = header;
        let alg = match self.alg {
            Algorithm::ES256 => "ES256",
            Algorithm::RS256 => "RS256",
            other => panic!("unexpected algorithm {other:?}"),
        };
        header["alg"] = json!(alg);
        if header.get("kid").is_none() {
            header["kid"] = json!(self.kid);
        }
        sign_with(&self.encoding, self.alg, &header, claims)
    }
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// base64url(JSON)
pub fn b64_json(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

/// Signs `header.claims` (header taken as given) with `key` under `alg`.
pub fn sign_with(key: &EncodingKey, alg: Algorithm, header: &Value, claims: &Value) -> String {
    let message = format!("{}.{}", b64_json(header), b64_json(claims));
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), key, alg).expect("sign JWT");
    format!("{message}.{signature}")
}

/// `alg: none`, empty signature (`header.payload.`).
pub fn unsigned(header: &Value, claims: &Value) -> String {
    format!("{}.{}.", b64_json(header), b64_json(claims))
}

/// HS256 with `secret` as the HMAC key (the algorithm-confusion attack keys it with the
/// issuer's public key).
pub fn hs256(secret: &[u8], header: &Value, claims: &Value) -> String {
    let mut header = header.clone();
    header["alg"] = json!("HS256");
    sign_with(
        &EncodingKey::from_secret(secret),
        Algorithm::HS256,
        &header,
        claims,
    )
}

/// Seconds since the epoch.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

struct State {
    issuer: String,
    published: Vec<SigningKey>,
    /// Not in `/jwks`: what an attacker signs with (served at `/attacker-jwks`).
    attacker: SigningKey,
    /// Discovery's `code_challenge_methods_supported`.
    pkce_methods: Vec<String>,
    requests: Mutex<Vec<String>>,
}

/// The running issuer. Dropping it stops accepting connections.
pub struct KeyIssuer {
    addr: SocketAddr,
    state: Arc<State>,
    accept_task: JoinHandle<()>,
}

impl KeyIssuer {
    /// An ES256-only issuer (cheap: no RSA key generation).
    pub async fn start() -> Self {
        Self::spawn(false, true, &["S256"]).await
    }

    /// An RS256-only issuer.
    pub async fn start_rsa() -> Self {
        Self::spawn(true, false, &["S256"]).await
    }

    /// Publishes an RS256 key (first) and an ES256 key, and advertises both algorithms.
    pub async fn start_rsa_and_ec() -> Self {
        Self::spawn(true, true, &["S256"]).await
    }

    /// Discovery advertises exactly these PKCE methods (e.g. `["plain"]`).
    pub async fn start_with_pkce_methods(methods: &[&str]) -> Self {
        Self::spawn(false, true, methods).await
    }

    async fn spawn(rsa: bool, ec: bool, pkce: &[&str]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind key issuer");
        let addr = listener.local_addr().expect("key issuer addr");
        let mut published = Vec::new();
        if rsa {
            published.push(SigningKey::rsa(&format!("rsa-{}", random_hex(4))));
        }
        if ec {
            published.push(SigningKey::ec(&format!("ec-{}", random_hex(4))));
        }
        let state = Arc::new(State {
            issuer: format!("http://{addr}"),
            published,
            attacker: SigningKey::ec(&format!("attacker-{}", random_hex(4))),
            pkce_methods: pkce.iter().map(|m| m.to_string()).collect(),
            requests: Mutex::new(Vec::new()),
        });
        let accept_state = state.clone();
        let accept_task =
            super::http::serve(listener, move |req| handle(accept_state.clone(), req));
        KeyIssuer {
            addr,
            state,
            accept_task,
        }
    }

    /// `http://127.0.0.1:<port>`, the issuer identifier.
    pub fn issuer(&self) -> &str {
        &self.state.issuer
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The published keys, in JWKS order.
    pub fn keys(&self) -> &[SigningKey] {
        &self.state.published
    }

    /// The published key for `alg`.
    pub fn key(&self, alg: Algorithm) -> &SigningKey {
        self.state
            .published
            .iter()
            .find(|k| k.alg == alg)
            .unwrap_or_else(|| panic!("the key issuer publishes no {alg:?} key"))
    }

    /// A key that is not published (the attacker's), ES256.
    pub fn attacker_key(&self) -> &SigningKey {
        &self.state.attacker
    }

    /// Paths (with query) of every request received so far.
    pub fn requests(&self) -> Vec<String> {
        self.state.requests.lock().unwrap().clone()
    }
}

impl Drop for KeyIssuer {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

fn json_response(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("cache-control", "no-store")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    state.requests.lock().unwrap().push(path);
    let issuer = state.issuer.as_str();
    let resp = match req.uri().path() {
        "/.well-known/openid-configuration" => {
            let algs: Vec<&str> = state
                .published
                .iter()
                .map(|k| match k.alg {
                    Algorithm::RS256 => "RS256",
                    _ => "ES256",
                })
                .collect();
            json_response(
                StatusCode::OK,
                &json!({
                    "issuer": issuer,
                    "authorization_endpoint": format!("{issuer}/authorize"),
                    "token_endpoint": format!("{issuer}/token"),
                    "jwks_uri": format!("{issuer}/jwks"),
                    "response_types_supported": ["code"],
                    "subject_types_supported": ["public"],
                    "id_token_signing_alg_values_supported": algs,
                    "code_challenge_methods_supported": state.pkce_methods,
                    "token_endpoint_auth_methods_supported": ["client_secret_basic"],
                    "authorization_response_iss_parameter_supported": true,
                }),
            )
        }
        "/jwks" => {
            let keys: Vec<&Value> = state.published.iter().map(|k| &k.jwk).collect();
            json_response(StatusCode::OK, &json!({ "keys": keys }))
        }
        "/attacker-jwks" => json_response(StatusCode::OK, &json!({ "keys": [state.attacker.jwk] })),
        "/authorize" => Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "text/html")
            .body(Full::new(Bytes::from_static(
                b"<p>key issuer: no logins here</p>",
            )))
            .unwrap(),
        "/token" => json_response(
            StatusCode::BAD_REQUEST,
            &json!({ "error": "invalid_grant", "error_description": "no logins here" }),
        ),
        _ => json_response(StatusCode::NOT_FOUND, &json!({ "error": "not found" })),
    };
    Ok(resp)
}
