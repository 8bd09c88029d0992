//! `MockIdp`: the one in-process, fault-injectable OpenID Provider of the suite (hyper 1,
//! `127.0.0.1:0`), for what a real, correct IdP will never do — and for tokens the test
//! signs itself with the IdP's key. (Conformance runs against the node test IdP in
//! `tests/idp`, see [`super::idp`].)
//!
//! Built with [`MockIdp::builder`] (or [`MockIdp::start`] for the defaults):
//!
//! - key: one ES256 P-256 key (default) or, with [`MockIdpBuilder::rs256`], one RS256 RSA
//!   key; [`MockIdp::key`] lets the test sign with it ([`MockIdp::sign`], [`mint_jwt`]);
//! - client authentication: any (default; `client_secret_basic` and `none` advertised) or,
//!   with [`MockIdpBuilder::requiring`], exactly one advertised method;
//! - access tokens: opaque (default) or, with [`MockIdpBuilder::api_audience`], RFC 9068
//!   JWTs for that audience, signed with the IdP's key.
//!
//! Endpoints:
//!
//! - `GET /.well-known/openid-configuration` — discovery (the key's algorithm only, S256
//!   PKCE, RFC 9207 `iss` in authorization responses);
//! - `GET /jwks` — the IdP's key;
//! - `GET /authorize` — no login page: 302 straight back to `redirect_uri` with `code`,
//!   `state`, `iss`, for the user set with [`MockIdp::set_user`] (default [`MOCK_SUB`]) in
//!   a new IdP session (`sid`, see [`MockIdp::sid_of`]);
//! - `POST /token` — checks the client authentication (with `requiring`: exactly the one
//!   advertised method), the code, the `redirect_uri` and the PKCE verifier (S256) — or,
//!   for `grant_type=refresh_token`, that the refresh token is one it issued and has not
//!   been used (rotation: a used one is `invalid_grant`, counted in
//!   [`MockIdp::refresh_replays`]; a refresh waits [`MockIdp::set_refresh_delay`] first) —
//!   then returns an access token (`expires_in` 300 s, or
//!   [`MockIdp::set_access_token_ttl`]), a new refresh token and an ID token (faulty as set
//!   with [`MockIdp::set_fault`], also after a refresh); every response is recorded
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

mod endpoints;
mod jwt;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::login::random_hex;

#[allow(unused_imports)]
pub use jwt::{jwt_parts, mint_jwt, unix_now, RsaPublic, Signer, SigningKey};

/// The subject of every login at the mock unless [`MockIdp::set_user`] says otherwise.
pub const MOCK_SUB: &str = "mock-user";

/// What the mock's userinfo endpoint answers to a request with a valid access token.
#[derive(Debug, Clone, PartialEq)]
pub enum MockUserinfo {
    /// 200 `application/json` with exactly these claims (`sub` included or not, as given).
    Claims(Value),
    /// 200 `application/jwt`: these claims plus `iss` and `aud` (the client), signed with
    /// the IdP's algorithm under the JWKS key's `kid` — with that key, or (`forged`) with a
    /// key that is not in the JWKS.
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

/// A login on its way from `/authorize` to `/token`.
struct Authorization {
    client_id: String,
    redirect_uri: String,
    nonce: Option<String>,
    code_challenge: String,
    sub: String,
    sid: String,
}

/// What a refresh token continues: the client, the login's nonce, user and IdP session.
#[derive(Clone)]
struct Grant {
    client_id: String,
    nonce: Option<String>,
    sub: String,
    sid: String,
}

struct State {
    issuer: String,
    key: SigningKey,
    /// Same kind and `kid` as `key`, not in the JWKS (generated on first use).
    other_key: OnceLock<SigningKey>,
    /// The client the test's own tokens are for (`aud` of logout tokens).
    client_id: String,
    /// `Some`: access tokens are JWTs for this audience.
    api_audience: Option<String>,
    client_auth: Option<ClientAuth>,
    /// Who the next authorization request signs in as.
    user: Mutex<String>,
    fault: Mutex<IdTokenFault>,
    codes: Mutex<HashMap<String, Authorization>>,
    /// (sub, sid) of every completed login, in order.
    logins: Mutex<Vec<(String, String)>>,
    token_requests: AtomicUsize,
    issued: Mutex<Vec<IssuedTokens>>,
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
    /// How long `POST /token` with `grant_type=refresh_token` waits before answering.
    refresh_delay_ms: AtomicU64,
    /// `grant_type=refresh_token` requests that arrived (counted before the delay).
    refresh_arrivals: AtomicUsize,
}

impl State {
    fn other_key(&self) -> &SigningKey {
        self.other_key
            .get_or_init(|| self.key.same_kind(&self.key.kid))
    }
}

/// Options of a [`MockIdp`]; [`MockIdpBuilder::start`] starts it.
pub struct MockIdpBuilder {
    rs256: bool,
    client_auth: Option<ClientAuth>,
    client_id: String,
    api_audience: Option<String>,
}

impl MockIdpBuilder {
    /// Sign with a 2048-bit RSA key (RS256) instead of a P-256 key (ES256).
    pub fn rs256(mut self) -> Self {
        self.rs256 = true;
        self
    }

    /// Advertise exactly `auth`'s method and refuse token requests that authenticate any
    /// other way (`invalid_client`).
    pub fn requiring(mut self, auth: ClientAuth) -> Self {
        self.client_auth = Some(auth);
        self
    }

    /// The gateway's client id, for the tokens the test builds ([`MockIdp::logout_claims`],
    /// [`MockIdp::access_claims`]); default `gateway`. The mock's own tokens go to whichever
    /// client asked.
    pub fn client_id(mut self, client_id: &str) -> Self {
        self.client_id = client_id.to_string();
        self
    }

    /// Issue RFC 9068 JWT access tokens for this audience (signed with the IdP's key)
    /// instead of opaque ones; also the `aud` of [`MockIdp::access_claims`].
    pub fn api_audience(mut self, audience: &str) -> Self {
        self.api_audience = Some(audience.to_string());
        self
    }

    pub async fn start(self) -> MockIdp {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind mock IdP");
        let addr = listener.local_addr().expect("mock IdP local_addr");
        let kid = format!("mock-{}", random_hex(4));
        let key = if self.rs256 {
            SigningKey::rsa(&kid)
        } else {
            SigningKey::p256(&kid)
        };
        let state = Arc::new(State {
            issuer: format!("http://{addr}"),
            key,
            other_key: OnceLock::new(),
            client_id: self.client_id,
            api_audience: self.api_audience,
            client_auth: self.client_auth,
            user: Mutex::new(MOCK_SUB.to_string()),
            fault: Mutex::new(IdTokenFault::None),
            codes: Mutex::new(HashMap::new()),
            logins: Mutex::new(Vec::new()),
            token_requests: AtomicUsize::new(0),
            issued: Mutex::new(Vec::new()),
            refusals: Mutex::new(Vec::new()),
            userinfo: Mutex::new(None),
            userinfo_requests: Mutex::new(Vec::new()),
            minimal_id_tokens: AtomicBool::new(false),
            refresh_grants: Mutex::new(HashMap::new()),
            used_refresh_tokens: Mutex::new(Vec::new()),
            refresh_requests: AtomicUsize::new(0),
            refresh_replays: AtomicUsize::new(0),
            access_ttl: AtomicU64::new(300),
            refresh_delay_ms: AtomicU64::new(0),
            refresh_arrivals: AtomicUsize::new(0),
        });
        let accept_state = state.clone();
        let accept_task = super::http::serve(listener, move |req| {
            endpoints::handle(accept_state.clone(), req)
        });
        MockIdp {
            addr,
            state,
            accept_task,
        }
    }
}

/// The running mock. Dropping it stops accepting connections.
pub struct MockIdp {
    addr: SocketAddr,
    state: Arc<State>,
    accept_task: JoinHandle<()>,
}

impl MockIdp {
    pub fn builder() -> MockIdpBuilder {
        MockIdpBuilder {
            rs256: false,
            client_auth: None,
            client_id: "gateway".to_string(),
            api_audience: None,
        }
    }

    /// ES256, opaque access tokens, advertises `client_secret_basic` and `none` and
    /// accepts any client authentication.
    pub async fn start() -> Self {
        Self::builder().start().await
    }

    /// Like [`MockIdp::start`], but advertises exactly `auth`'s method and refuses token
    /// requests that authenticate any other way (`invalid_client`).
    pub async fn start_requiring(auth: ClientAuth) -> Self {
        Self::builder().requiring(auth).start().await
    }

    /// `http://127.0.0.1:<port>`: the issuer, no trailing slash.
    pub fn issuer(&self) -> &str {
        &self.state.issuer
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    // ----- faults and answers -----

    /// What the next ID tokens get wrong.
    pub fn set_fault(&self, fault: IdTokenFault) {
        *self.state.fault.lock().unwrap() = fault;
    }

    /// Who the next authorization requests sign in as (default [`MOCK_SUB`]); the ID
    /// token's email is `<sub>@corp.test`.
    pub fn set_user(&self, sub: &str) {
        *self.state.user.lock().unwrap() = sub.to_string();
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

    /// `expires_in` (seconds) of the access tokens issued from now on (default 300).
    pub fn set_access_token_ttl(&self, seconds: u64) {
        self.state.access_ttl.store(seconds, Ordering::SeqCst);
    }

    /// From now on, `grant_type=refresh_token` requests wait this long at the token
    /// endpoint before they are answered (default none; logins are never delayed).
    pub fn set_refresh_delay(&self, delay: std::time::Duration) {
        self.state
            .refresh_delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    // ----- what happened -----

    /// `grant_type=refresh_token` requests that reached the token endpoint so far,
    /// counted on arrival (before [`MockIdp::set_refresh_delay`]'s wait), valid or not.
    pub fn refresh_arrivals(&self) -> usize {
        self.state.refresh_arrivals.load(Ordering::SeqCst)
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

    /// Every request to the userinfo endpoint so far.
    pub fn userinfo_requests(&self) -> Vec<UserinfoRequest> {
        self.state.userinfo_requests.lock().unwrap().clone()
    }

    /// `grant_type=refresh_token` requests so far (valid or not).
    pub fn refresh_requests(&self) -> usize {
        self.state.refresh_requests.load(Ordering::SeqCst)
    }

    /// Refresh requests that presented an already used refresh token.
    pub fn refresh_replays(&self) -> usize {
        self.state.refresh_replays.load(Ordering::SeqCst)
    }

    /// The IdP session id (`sid`) of `sub`'s latest completed login.
    pub fn sid_of(&self, sub: &str) -> Option<String> {
        let logins = self.state.logins.lock().unwrap();
        logins
            .iter()
            .rev()
            .find(|(s, _)| s == sub)
            .map(|(_, sid)| sid.clone())
    }

    // ----- tokens the test builds -----

    /// The key in its JWKS, which signs everything it issues.
    pub fn key(&self) -> &SigningKey {
        &self.state.key
    }

    /// `claims` signed with its key, header `{"alg": <the key's>, "kid": .., "typ": typ}`.
    pub fn sign(&self, typ: &str, claims: &Value) -> String {
        let key = &self.state.key;
        let header = json!({"alg": key.alg(), "kid": key.kid, "typ": typ});
        mint_jwt(&header, claims, Signer::Key(key))
    }

    /// Claims of a correct access token (RFC 9068) for `sub`, valid for an hour (needs
    /// [`MockIdpBuilder::api_audience`]).
    pub fn access_claims(&self, sub: &str) -> Value {
        let audience = self
            .state
            .api_audience
            .as_deref()
            .expect("MockIdp::access_claims needs MockIdpBuilder::api_audience");
        let now = unix_now();
        json!({
            "iss": self.state.issuer,
            "sub": sub,
            "aud": audience,
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

impl Drop for MockIdp {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}
