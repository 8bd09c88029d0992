//! `MockIdp`: a tiny in-process OpenID Provider (hyper 1, `127.0.0.1:0`) for what a
//! real, correct IdP will never do: hand out an ID token with the wrong audience, nonce,
//! issuer, signature or expiry. Chosen per test with [`MockIdp::set_fault`].
//!
//! - `GET /.well-known/openid-configuration` — discovery (ES256 only, S256 PKCE, RFC 9207
//!   `iss` in authorization responses);
//! - `GET /jwks` — one P-256 key (generated with rcgen at start);
//! - `GET /authorize` — no login page: 302 straight back to `redirect_uri` with
//!   `code`, `state`, `iss`;
//! - `POST /token` — checks the client authentication (with [`MockIdp::start_requiring`]:
//!   exactly the one advertised method), the code, the `redirect_uri` and the PKCE
//!   verifier (S256) — or, for `grant_type=refresh_token`, that the refresh token is one it
//!   issued and has not been used (rotation: a used one is `invalid_grant`, counted in
//!   [`MockIdp::refresh_replays`]) —
//!   then returns an access token (`expires_in` 300 s, or
//!   [`MockIdp::set_access_token_ttl`]), a new refresh token and an ES256 ID token (faulty
//!   as configured, also after a refresh); every response is recorded
//!   ([`MockIdp::issued`]);
//! - `GET|POST /userinfo` — only while [`MockIdp::set_userinfo`] has set an answer (and
//!   only then advertised in discovery, which the gateway reads at start): checks the
//!   `Authorization: Bearer` is an access token the mock issued (else 401), then answers as
//!   set (JSON claims whose `sub` may be someone else's, the claims as a signed
//!   `application/jwt`, possibly signed by a key not in the JWKS, or an error status);
//!   every request is recorded ([`MockIdp::userinfo_requests`]).
//!
//! [`MockIdp::set_minimal_id_tokens`] makes the ID tokens carry only the protocol claims
//! (`iss sub aud iat exp nonce`), as oidc-provider's defaults do, so a gateway that needs
//! email, name or groups has to ask the userinfo endpoint.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::login::random_hex;

/// The subject of every login at the mock.
pub const MOCK_SUB: &str = "mock-user";

/// What the mock's userinfo endpoint answers to a request with a valid access token.
#[derive(Debug, Clone, PartialEq)]
pub enum MockUserinfo {
    /// 200 `application/json` with exactly these claims (`sub` included or not, as given).
    Claims(Value),
    /// 200 `application/jwt`: these claims plus `iss` and `aud` (the client), signed ES256
    /// under the JWKS key's `kid` — with that key, or (`forged`) with a key that is not in
    /// the JWKS.
    SignedJwt { claims: Value, forged: bool },
    /// This status with a JSON error body (`{"error":"server_error"}` for a 5xx).
    Status(u16),
}

impl MockUserinfo {
    /// The mock user's claims as JSON, with `sub` as given (the real one is [`MOCK_SUB`]).
    pub fn claims_with_sub(sub: &str) -> Self {
        MockUserinfo::Claims(mock_user_claims(sub))
    }
}

/// The mock user's userinfo claims (email, name, preferred_username, groups) with `sub`
/// as given.
pub fn mock_user_claims(sub: &str) -> Value {
    json!({
        "sub": sub,
        "email": "mock-user@corp.test",
        "email_verified": true,
        "name": "Mock User",
        "preferred_username": "mock-user",
        "groups": ["mockers"],
    })
}

/// One request to the mock's userinfo endpoint.
#[derive(Debug, Clone)]
pub struct UserinfoRequest {
    pub method: String,
    /// The `Authorization` header, as sent.
    pub authorization: Option<String>,
}

/// What is wrong with the ID tokens the mock issues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdTokenFault {
    /// A correct ID token.
    None,
    /// `aud` is another client.
    WrongAudience,
    /// `nonce` is not the one the gateway sent.
    WrongNonce,
    /// `iss` is another issuer.
    WrongIssuer,
    /// Signed with a key that is not in the JWKS (same `kid`).
    UnknownKey,
    /// `exp` (and `iat`) an hour in the past.
    Expired,
    /// `alg: none`, no signature.
    Unsigned,
}

struct EcKey {
    pkcs8_der: Vec<u8>,
    /// Public point, uncompressed: 0x04 || x || y.
    public: Vec<u8>,
}

impl EcKey {
    fn generate() -> Self {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .expect("generate P-256 key");
        EcKey {
            pkcs8_der: pair.serialize_der(),
            public: pair.public_key_raw().to_vec(),
        }
    }

    fn jwk(&self, kid: &str) -> Value {
        assert_eq!(self.public.len(), 65, "uncompressed P-256 point");
        json!({
            "kty": "EC",
            "crv": "P-256",
            "x": URL_SAFE_NO_PAD.encode(&self.public[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&self.public[33..65]),
            "kid": kid,
            "alg": "ES256",
            "use": "sig",
        })
    }
}

/// The one token endpoint client authentication method the mock advertises and accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientAuth {
    /// `client_secret_basic`: credentials only in the `Authorization` header.
    Basic { client_id: String, secret: String },
    /// `client_secret_post`: credentials only in the form body.
    Post { client_id: String, secret: String },
    /// `none` (public client): `client_id` in the body, no secret anywhere.
    None { client_id: String },
}

impl ClientAuth {
    fn method(&self) -> &'static str {
        match self {
            ClientAuth::Basic { .. } => "client_secret_basic",
            ClientAuth::Post { .. } => "client_secret_post",
            ClientAuth::None { .. } => "none",
        }
    }

    /// `Err(reason)` unless the token request authenticates exactly this way.
    fn check(
        &self,
        authorization: Option<&str>,
        p: &HashMap<String, String>,
    ) -> Result<(), String> {
        let body_id = p.get("client_id").map(String::as_str);
        let body_secret = p.get("client_secret").map(String::as_str);
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(&s.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        };
        let basic = authorization
            .and_then(|h| h.strip_prefix("Basic "))
            .map(|b64| {
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .unwrap_or_default();
                let text = String::from_utf8_lossy(&raw).into_owned();
                let (id, secret) = text.split_once(':').unwrap_or((&text, ""));
                (decode(id), decode(secret))
            });
        match self {
            ClientAuth::Basic { client_id, secret } => {
                if body_secret.is_some() {
                    return Err("client_secret in the body".into());
                }
                match basic {
                    Some((id, s)) if id == *client_id && s == *secret => Ok(()),
                    Some(_) => Err("wrong Basic credentials".into()),
                    None => Err("no Basic credentials".into()),
                }
            }
            ClientAuth::Post { client_id, secret } => {
                if authorization.is_some() {
                    return Err("Authorization header sent to a client_secret_post client".into());
                }
                if body_id == Some(client_id.as_str()) && body_secret == Some(secret.as_str()) {
                    Ok(())
                } else {
                    Err("client_id/client_secret missing or wrong in the body".into())
                }
            }
            ClientAuth::None { client_id } => {
                if authorization.is_some() || body_secret.is_some() {
                    return Err("a public client must not send a secret".into());
                }
                if body_id == Some(client_id.as_str()) {
                    Ok(())
                } else {
                    Err("client_id missing or wrong in the body".into())
                }
            }
        }
    }
}

struct Authorization {
    client_id: String,
    redirect_uri: String,
    nonce: Option<String>,
    code_challenge: String,
}

struct State {
    issuer: String,
    kid: String,
    key: EcKey,
    other_key: EcKey,
    fault: Mutex<IdTokenFault>,
    codes: Mutex<HashMap<String, Authorization>>,
    token_requests: AtomicUsize,
    issued: Mutex<Vec<IssuedTokens>>,
    client_auth: Option<ClientAuth>,
    /// Why token requests were refused, in order.
    refusals: Mutex<Vec<String>>,
    /// `None`: no userinfo endpoint (not advertised, 404).
    userinfo: Mutex<Option<MockUserinfo>>,
    userinfo_requests: Mutex<Vec<UserinfoRequest>>,
    /// ID tokens with the protocol claims only (no email, name, groups).
    minimal_id_tokens: AtomicBool,
    /// Refresh tokens issued and not yet used → the grant they continue.
    refresh_grants: Mutex<HashMap<String, Grant>>,
    /// Refresh tokens that were used already.
    used_refresh_tokens: Mutex<Vec<String>>,
    refresh_requests: AtomicUsize,
    refresh_replays: AtomicUsize,
    /// `expires_in` of access tokens, seconds.
    access_ttl: AtomicU64,
}

/// What a refresh token continues: the client and the login's nonce.
#[derive(Clone)]
struct Grant {
    client_id: String,
    nonce: Option<String>,
}

/// One successful token response, as sent.
#[derive(Debug, Clone)]
pub struct IssuedTokens {
    pub access_token: String,
    pub refresh_token: String,
    pub id_token: String,
    /// `authorization_code` or `refresh_token`.
    pub grant_type: String,
    pub client_id: String,
}

/// The running mock. Dropping it stops accepting connections.
pub struct MockIdp {
    addr: SocketAddr,
    state: Arc<State>,
    accept_task: JoinHandle<()>,
}

impl MockIdp {
    /// Advertises `client_secret_basic` and `none` and accepts any client authentication.
    pub async fn start() -> Self {
        Self::spawn(None).await
    }

    /// Advertises exactly `auth`'s method and refuses token requests that authenticate
    /// any other way (`invalid_client`).
    pub async fn start_requiring(auth: ClientAuth) -> Self {
        Self::spawn(Some(auth)).await
    }

    async fn spawn(client_auth: Option<ClientAuth>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind mock IdP");
        let addr = listener.local_addr().expect("mock IdP local_addr");
        let state = Arc::new(State {
            issuer: format!("http://{addr}"),
            kid: format!("mock-{}", random_hex(4)),
            key: EcKey::generate(),
            other_key: EcKey::generate(),
            fault: Mutex::new(IdTokenFault::None),
            codes: Mutex::new(HashMap::new()),
            token_requests: AtomicUsize::new(0),
            issued: Mutex::new(Vec::new()),
            client_auth,
            refusals: Mutex::new(Vec::new()),
            userinfo: Mutex::new(None),
            userinfo_requests: Mutex::new(Vec::new()),
            minimal_id_tokens: AtomicBool::new(false),
            refresh_grants: Mutex::new(HashMap::new()),
            used_refresh_tokens: Mutex::new(Vec::new()),
            refresh_requests: AtomicUsize::new(0),
            refresh_replays: AtomicUsize::new(0),
            access_ttl: AtomicU64::new(300),
        });
        let accept_state = state.clone();
        let accept_task =
            super::http::serve(listener, move |req| handle(accept_state.clone(), req));
        MockIdp {
            addr,
            state,
            accept_task,
        }
    }

    /// `http://127.0.0.1:<port>`: the issuer.
    pub fn issuer(&self) -> &str {
        &self.state.issuer
    }

    /// What the next ID tokens get wrong.
    pub fn set_fault(&self, fault: IdTokenFault) {
        *self.state.fault.lock().unwrap() = fault;
    }

    /// `POST /token` requests so far (valid or not).
    pub fn token_requests(&self) -> usize {
        self.state.token_requests.load(Ordering::SeqCst)
    }

    /// Why token requests were refused so far.
    pub fn refusals(&self) -> Vec<String> {
        self.state.refusals.lock().unwrap().clone()
    }

    /// Every successful token response so far.
    pub fn issued(&self) -> Vec<IssuedTokens> {
        self.state.issued.lock().unwrap().clone()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What the userinfo endpoint answers from now on; `None` removes it. Discovery names
    /// `{issuer}/userinfo` only while an answer is set, and the gateway reads discovery at
    /// start: set this before starting the gateway.
    pub fn set_userinfo(&self, answer: Option<MockUserinfo>) {
        *self.state.userinfo.lock().unwrap() = answer;
    }

    /// `true`: the next ID tokens carry only `iss sub aud iat exp nonce`.
    pub fn set_minimal_id_tokens(&self, minimal: bool) {
        self.state
            .minimal_id_tokens
            .store(minimal, Ordering::SeqCst);
    }

    /// Every request to the userinfo endpoint so far.
    pub fn userinfo_requests(&self) -> Vec<UserinfoRequest> {
        self.state.userinfo_requests.lock().unwrap().clone()
    }

    /// `expires_in` (seconds) of the access tokens issued from now on (default 300).
    pub fn set_access_token_ttl(&self, seconds: u64) {
        self.state.access_ttl.store(seconds, Ordering::SeqCst);
    }

    /// `grant_type=refresh_token` requests so far (valid or not).
    pub fn refresh_requests(&self) -> usize {
        self.state.refresh_requests.load(Ordering::SeqCst)
    }

    /// Refresh requests that presented an already used refresh token.
    pub fn refresh_replays(&self) -> usize {
        self.state.refresh_replays.load(Ordering::SeqCst)
    }
}

impl Drop for MockIdp {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

type Body = Full<Bytes>;

fn json_response(status: StatusCode, body: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("cache-control", "no-store")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

fn oauth_error(error: &str, description: &str) -> Response<Body> {
    json_response(
        StatusCode::BAD_REQUEST,
        &json!({ "error": error, "error_description": description }),
    )
}

fn params(text: &str) -> HashMap<String, String> {
    url::form_urlencoded::parse(text.as_bytes())
        .into_owned()
        .collect()
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let resp = match (req.method().clone(), req.uri().path()) {
        (Method::GET, "/.well-known/openid-configuration") => {
            json_response(StatusCode::OK, &discovery(&state))
        }
        (Method::GET, "/jwks") => json_response(
            StatusCode::OK,
            &json!({ "keys": [state.key.jwk(&state.kid)] }),
        ),
        (Method::GET, "/authorize") => authorize(&state, req.uri().query().unwrap_or("")),
        (Method::GET | Method::POST, "/userinfo") => userinfo(&state, &req),
        (Method::POST, "/token") => {
            state.token_requests.fetch_add(1, Ordering::SeqCst);
            let authorization = req
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let body = req
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            token(
                &state,
                authorization.as_deref(),
                &String::from_utf8_lossy(&body),
            )
        }
        _ => json_response(StatusCode::NOT_FOUND, &json!({ "error": "not found" })),
    };
    Ok(resp)
}

fn discovery(state: &State) -> Value {
    let issuer = state.issuer.as_str();
    let mut doc = json!({
                "issuer": issuer,
                "authorization_endpoint": format!("{issuer}/authorize"),
                "token_endpoint": format!("{issuer}/token"),
                "jwks_uri": format!("{issuer}/jwks"),
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["ES256"],
                "code_challenge_methods_supported": ["S256"],
                "token_endpoint_auth_methods_supported": match &state.client_auth {
                    Some(auth) => vec![auth.method()],
                    None => vec!["client_secret_basic", "none"],
                },
                "authorization_response_iss_parameter_supported": true,
    });
    if state.userinfo.lock().unwrap().is_some() {
        doc["userinfo_endpoint"] = json!(format!("{issuer}/userinfo"));
    }
    doc
}

fn userinfo(state: &State, req: &Request<Incoming>) -> Response<Body> {
    let authorization = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    state
        .userinfo_requests
        .lock()
        .unwrap()
        .push(UserinfoRequest {
            method: req.method().to_string(),
            authorization: authorization.clone(),
        });
    let Some(answer) = state.userinfo.lock().unwrap().clone() else {
        return json_response(StatusCode::NOT_FOUND, &json!({ "error": "not found" }));
    };
    let token = authorization
        .as_deref()
        .and_then(|h| h.strip_prefix("Bearer "))
        .unwrap_or_default();
    let known = state
        .issued
        .lock()
        .unwrap()
        .iter()
        .any(|t| t.access_token == token);
    if !known {
        return Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .header("www-authenticate", "Bearer error=\"invalid_token\"")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(r#"{"error":"invalid_token"}"#)))
            .unwrap();
    }
    match answer {
        MockUserinfo::Claims(claims) => json_response(StatusCode::OK, &claims),
        MockUserinfo::SignedJwt { claims, forged } => {
            let client_id = state
                .issued
                .lock()
                .unwrap()
                .iter()
                .find(|t| t.access_token == token)
                .map(|t| t.client_id.clone())
                .unwrap_or_default();
            let mut claims = claims;
            claims["iss"] = json!(state.issuer);
            claims["aud"] = json!(client_id);
            let key = if forged { &state.other_key } else { &state.key };
            let mut header = Header::new(Algorithm::ES256);
            header.kid = Some(state.kid.clone());
            let jwt = encode(&header, &claims, &EncodingKey::from_ec_der(&key.pkcs8_der))
                .expect("sign userinfo");
            Response::builder()
                .status(StatusCode::OK)
                .header("content-type", "application/jwt")
                .header("cache-control", "no-store")
                .body(Full::new(Bytes::from(jwt)))
                .unwrap()
        }
        MockUserinfo::Status(code) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let error = if status.is_server_error() {
                "server_error"
            } else {
                "invalid_request"
            };
            json_response(status, &json!({ "error": error }))
        }
    }
}

fn authorize(state: &State, query: &str) -> Response<Body> {
    let p = params(query);
    let get = |k: &str| p.get(k).cloned().unwrap_or_default();
    if get("response_type") != "code" || get("code_challenge_method") != "S256" {
        return oauth_error("invalid_request", "response_type=code with S256 PKCE only");
    }
    let redirect_uri = get("redirect_uri");
    let Ok(mut target) = url::Url::parse(&redirect_uri) else {
        return oauth_error("invalid_request", "bad redirect_uri");
    };
    let code = random_hex(16);
    state.codes.lock().unwrap().insert(
        code.clone(),
        Authorization {
            client_id: get("client_id"),
            redirect_uri,
            nonce: p.get("nonce").cloned(),
            code_challenge: get("code_challenge"),
        },
    );
    target
        .query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", &get("state"))
        .append_pair("iss", &state.issuer);
    Response::builder()
        .status(StatusCode::FOUND)
        .header("location", target.as_str())
        .body(Full::new(Bytes::new()))
        .unwrap()
}

fn token(state: &State, authorization: Option<&str>, body: &str) -> Response<Body> {
    let p = params(body);
    let get = |k: &str| p.get(k).cloned().unwrap_or_default();
    if let Some(auth) = &state.client_auth {
        if let Err(reason) = auth.check(authorization, &p) {
            state.refusals.lock().unwrap().push(reason.clone());
            return json_response(
                StatusCode::UNAUTHORIZED,
                &json!({ "error": "invalid_client", "error_description": reason }),
            );
        }
    }
    let grant_type = get("grant_type");
    let grant = match grant_type.as_str() {
        "authorization_code" => {
            let Some(auth) = state.codes.lock().unwrap().remove(&get("code")) else {
                return oauth_error("invalid_grant", "unknown or used code");
            };
            if get("redirect_uri") != auth.redirect_uri {
                return oauth_error("invalid_grant", "redirect_uri mismatch");
            }
            let digest = aws_lc_rs::digest::digest(
                &aws_lc_rs::digest::SHA256,
                get("code_verifier").as_bytes(),
            );
            if URL_SAFE_NO_PAD.encode(digest.as_ref()) != auth.code_challenge {
                return oauth_error("invalid_grant", "PKCE verification failed");
            }
            Grant {
                client_id: auth.client_id,
                nonce: auth.nonce,
            }
        }
        "refresh_token" => {
            state.refresh_requests.fetch_add(1, Ordering::SeqCst);
            let presented = get("refresh_token");
            let Some(grant) = state.refresh_grants.lock().unwrap().remove(&presented) else {
                let reason = if state
                    .used_refresh_tokens
                    .lock()
                    .unwrap()
                    .contains(&presented)
                {
                    state.refresh_replays.fetch_add(1, Ordering::SeqCst);
                    "refresh token already used"
                } else {
                    "unknown refresh token"
                };
                state.refusals.lock().unwrap().push(reason.to_string());
                return oauth_error("invalid_grant", reason);
            };
            state.used_refresh_tokens.lock().unwrap().push(presented);
            grant
        }
        _ => {
            return oauth_error(
                "unsupported_grant_type",
                "authorization_code and refresh_token only",
            )
        }
    };

    let fault = *state.fault.lock().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let (iat, exp) = if fault == IdTokenFault::Expired {
        (now - 7200, now - 3600)
    } else {
        (now, now + 300)
    };
    let mut claims = json!({
        "iss": if fault == IdTokenFault::WrongIssuer { "http://127.0.0.1:1" } else { state.issuer.as_str() },
        "sub": MOCK_SUB,
        "aud": if fault == IdTokenFault::WrongAudience { "another-client" } else { grant.client_id.as_str() },
        "iat": iat,
        "exp": exp,
        "nonce": if fault == IdTokenFault::WrongNonce { "not-the-nonce".to_string() } else { grant.nonce.clone().unwrap_or_default() },
        "email": "mock-user@corp.test",
        "name": "Mock User",
        "groups": ["mockers"],
    });
    if state.minimal_id_tokens.load(Ordering::SeqCst) {
        let object = claims.as_object_mut().expect("claims are an object");
        object.retain(|k, _| ["iss", "sub", "aud", "iat", "exp", "nonce"].contains(&k.as_str()));
    }
    let id_token = match fault {
        IdTokenFault::Unsigned => {
            let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
            let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
            format!("{header}.{payload}.")
        }
        _ => {
            let key = if fault == IdTokenFault::UnknownKey {
                &state.other_key
            } else {
                &state.key
            };
            let mut header = Header::new(Algorithm::ES256);
            header.kid = Some(state.kid.clone());
            encode(&header, &claims, &EncodingKey::from_ec_der(&key.pkcs8_der))
                .expect("sign ID token")
        }
    };
    let issued = IssuedTokens {
        access_token: format!("mock-access-{}", random_hex(16)),
        refresh_token: format!("mock-refresh-{}", random_hex(16)),
        id_token,
        grant_type,
        client_id: grant.client_id.clone(),
    };
    state
        .refresh_grants
        .lock()
        .unwrap()
        .insert(issued.refresh_token.clone(), grant);
    let body = json!({
        "access_token": issued.access_token,
        "token_type": "Bearer",
        "expires_in": state.access_ttl.load(Ordering::SeqCst),
        "refresh_token": issued.refresh_token,
        "id_token": issued.id_token,
    });
    state.issued.lock().unwrap().push(issued);
    json_response(StatusCode::OK, &body)
}
