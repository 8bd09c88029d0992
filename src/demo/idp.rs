//! The demo's embedded development OpenID provider. For `portcullis demo` only: it binds
//! to loopback, signs anyone in by name, and keeps everything in memory. It still speaks
//! the real protocol the gateway uses in production: discovery, JWKS (a fresh P-256 key per
//! run), authorization code with PKCE S256 enforced, refresh with rotation, userinfo,
//! revocation and RP-initiated logout.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::{header, Method, Request, Response, StatusCode};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{json, Value};

use super::{form, read_body};
use crate::body::Body;
use crate::clock::now;
use crate::response::{self, escape};
use crate::secret::constant_time_eq;

const CODE_TTL: u64 = 60;
const ACCESS_TOKEN_TTL: u64 = 300;
const ID_TOKEN_TTL: u64 = 3600;
pub const API_AUDIENCE: &str = "portcullis-demo-api";

struct CodeGrant {
    client_id: String,
    redirect_uri: String,
    challenge: String,
    nonce: Option<String>,
    user: String,
    sid: String,
    expires_at: u64,
}

#[derive(Clone)]
struct RefreshGrant {
    user: String,
    sid: String,
    client_id: String,
}

#[derive(Default)]
struct State {
    codes: HashMap<String, CodeGrant>,
    refresh: HashMap<String, RefreshGrant>,
}

pub struct DevIdp {
    issuer: String,
    client_id: String,
    client_secret: String,
    redirect_uri: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
    jwk: Value,
    state: Mutex<State>,
}

fn random(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    // The system RNG failing is not recoverable; a zeroed token would be worse than a panic
    // in a demo, so fall back to the time only to keep going.
    if aws_lc_rs::rand::fill(&mut b).is_err() {
        b = now().to_le_bytes().to_vec();
    }
    URL_SAFE_NO_PAD.encode(b)
}

impl DevIdp {
    pub fn new(
        issuer: String,
        client_id: String,
        client_secret: String,
        redirect_uri: String,
    ) -> Result<Arc<Self>, String> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| "cannot generate the demo signing key")?;
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref())
            .map_err(|_| "cannot load the demo signing key")?;
        // Uncompressed point: 0x04 || x || y.
        let point = pair.public_key().as_ref();
        let (x, y) = (&point[1..33], &point[33..65]);
        let jwk = json!({
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": "demo-1",
            "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y),
        });
        let decoding =
            DecodingKey::from_ec_components(&URL_SAFE_NO_PAD.encode(x), &URL_SAFE_NO_PAD.encode(y))
                .map_err(|e| format!("demo key: {e}"))?;
        Ok(Arc::new(DevIdp {
            issuer,
            client_id,
            client_secret,
            redirect_uri,
            encoding: EncodingKey::from_ec_der(pkcs8.as_ref()),
            decoding,
            jwk,
            state: Mutex::new(State::default()),
        }))
    }

    /// Tests: a live refresh token for `user`, as a completed login would have left.
    #[cfg(test)]
    pub(crate) fn refresh_token_for(&self, user: &str) -> String {
        let token = random(32);
        self.state().refresh.insert(
            token.clone(),
            RefreshGrant {
                user: user.into(),
                sid: random(8),
                client_id: self.client_id.clone(),
            },
        );
        token
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    pub async fn handle(self: Arc<Self>, req: Request<hyper::body::Incoming>) -> Response<Body> {
        let path = req.uri().path().to_string();
        let query = req.uri().query().unwrap_or("").to_string();
        match (req.method().clone(), path.as_str()) {
            (Method::GET, "/.well-known/openid-configuration") => self.discovery(),
            (Method::GET, "/jwks") => json_ok(json!({ "keys": [self.jwk] })),
            (Method::GET, "/authorize") => self.authorize_form(&form(&query)),
            (Method::POST, "/authorize") => match read_body(req).await {
                Some(body) => self.authorize_submit(&form(&body)),
                None => bad_request("invalid_request", "unreadable body"),
            },
            (Method::POST, "/token") => {
                let auth = req.headers().get(header::AUTHORIZATION).cloned();
                match read_body(req).await {
                    Some(body) => self.token(auth.as_ref(), &form(&body)),
                    None => bad_request("invalid_request", "unreadable body"),
                }
            }
            (Method::GET, "/userinfo") => self.userinfo(&req),
            (Method::POST, "/revoke") => match read_body(req).await {
                Some(body) => self.revoke(&form(&body)),
                None => bad_request("invalid_request", "unreadable body"),
            },
            (Method::GET, "/end_session") => self.end_session(&form(&query)),
            _ => response::text_response(StatusCode::NOT_FOUND, "not found\n"),
        }
    }

    fn discovery(&self) -> Response<Body> {
        let i = &self.issuer;
        json_ok(json!({
            "issuer": i,
            "authorization_endpoint": format!("{i}/authorize"),
            "token_endpoint": format!("{i}/token"),
            "jwks_uri": format!("{i}/jwks"),
            "userinfo_endpoint": format!("{i}/userinfo"),
            "revocation_endpoint": format!("{i}/revoke"),
            "end_session_endpoint": format!("{i}/end_session"),
            "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "scopes_supported": ["openid", "email", "profile", "offline_access"],
            "authorization_response_iss_parameter_supported": true,
        }))
    }

    /// Checks the request parameters shared by the form and its submission.
    fn check_authorize(&self, p: &HashMap<String, String>) -> Result<(), &'static str> {
        if p.get("client_id") != Some(&self.client_id) {
            return Err("unknown client_id");
        }
        if p.get("redirect_uri") != Some(&self.redirect_uri) {
            return Err("redirect_uri is not registered");
        }
        if p.get("response_type").map(String::as_str) != Some("code") {
            return Err("response_type must be code");
        }
        if p.get("code_challenge_method").map(String::as_str) != Some("S256")
            || p.get("code_challenge").is_none_or(|c| c.len() < 43)
        {
            return Err("PKCE with S256 is required");
        }
        Ok(())
    }

    fn authorize_form(&self, p: &HashMap<String, String>) -> Response<Body> {
        if let Err(why) = self.check_authorize(p) {
            return response::html_response(
                StatusCode::BAD_REQUEST,
                response::render("Bad request", why, ""),
            );
        }
        let hidden: String = [
            "client_id",
            "redirect_uri",
            "response_type",
            "code_challenge",
            "code_challenge_method",
            "state",
            "nonce",
            "scope",
        ]
        .iter()
        .filter_map(|k| p.get(*k).map(|v| (k, v)))
        .map(|(k, v)| {
            format!(
                "<input type=\"hidden\" name=\"{k}\" value=\"{}\">",
                escape(v)
            )
        })
        .collect();
        let body = format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>portcullis demo sign-in</title>\
<style>body{{font-family:system-ui,sans-serif;max-width:28rem;margin:4rem auto;color:#222}}input[type=text]{{font-size:1.1rem;padding:.4rem;width:100%}}button{{margin-top:1rem;font-size:1.1rem;padding:.4rem 1.2rem}}</style></head>\
<body><h1>Demo identity provider</h1><p>This is portcullis's built-in development provider. Any name signs in; add <code>@domain</code> to choose the email.</p>\
<form method=\"post\" action=\"/authorize\">{hidden}<label>Name<br><input type=\"text\" name=\"login\" value=\"alice\" autofocus required maxlength=\"64\"></label><br>\
<label>Password (anything, it is not checked)<br><input type=\"password\" name=\"password\"></label><br>\
<button type=\"submit\">Sign in</button></form></body></html>"
        );
        let mut resp = response::html_response(StatusCode::OK, body);
        // The form posts here and is then redirected to the gateway: CSP `form-action`
        // covers redirects too, so leave it open.
        resp.headers_mut().insert(
            header::CONTENT_SECURITY_POLICY,
            header::HeaderValue::from_static(
                "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
            ),
        );
        resp
    }

    fn authorize_submit(&self, p: &HashMap<String, String>) -> Response<Body> {
        if let Err(why) = self.check_authorize(p) {
            return response::html_response(
                StatusCode::BAD_REQUEST,
                response::render("Bad request", why, ""),
            );
        }
        let user: String = p
            .get("login")
            .map(|u| u.trim())
            .unwrap_or("")
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '@'))
            .take(64)
            .collect();
        if user.is_empty() {
            return self.authorize_form(p);
        }
        let code = random(32);
        self.state().codes.insert(
            code.clone(),
            CodeGrant {
                client_id: self.client_id.clone(),
                redirect_uri: self.redirect_uri.clone(),
                challenge: p.get("code_challenge").cloned().unwrap_or_default(),
                nonce: p.get("nonce").cloned(),
                user,
                sid: random(16),
                expires_at: now() + CODE_TTL,
            },
        );
        let mut location = url::Url::parse(&self.redirect_uri)
            .unwrap_or_else(|_| url::Url::parse("http://127.0.0.1/").expect("static URL"));
        {
            let mut q = location.query_pairs_mut();
            q.append_pair("code", &code);
            if let Some(state) = p.get("state") {
                q.append_pair("state", state);
            }
            q.append_pair("iss", &self.issuer);
        }
        response::redirect(location.as_str())
    }

    fn client_authenticated(
        &self,
        auth: Option<&header::HeaderValue>,
        p: &HashMap<String, String>,
    ) -> bool {
        let (id, secret) = match auth
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "))
        {
            Some(b64) => {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(b64.trim())
                    .ok()
                    .and_then(|d| String::from_utf8(d).ok())
                    .unwrap_or_default();
                let (id, secret) = decoded.split_once(':').unwrap_or(("", ""));
                let dec = |s: &str| {
                    url::form_urlencoded::parse(format!("x={s}").as_bytes())
                        .next()
                        .map(|(_, v)| v.into_owned())
                        .unwrap_or_default()
                };
                (dec(id), dec(secret))
            }
            None => (
                p.get("client_id").cloned().unwrap_or_default(),
                p.get("client_secret").cloned().unwrap_or_default(),
            ),
        };
        id == self.client_id && constant_time_eq(secret.as_bytes(), self.client_secret.as_bytes())
    }

    fn token(
        &self,
        auth: Option<&header::HeaderValue>,
        p: &HashMap<String, String>,
    ) -> Response<Body> {
        if !self.client_authenticated(auth, p) {
            return json_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "client authentication failed",
            );
        }
        match p.get("grant_type").map(String::as_str) {
            Some("authorization_code") => {
                let grant = match p.get("code").and_then(|c| self.state().codes.remove(c)) {
                    Some(g) => g,
                    None => return bad_request("invalid_grant", "unknown or used code"),
                };
                if grant.expires_at < now()
                    || grant.client_id != self.client_id
                    || p.get("redirect_uri") != Some(&grant.redirect_uri)
                {
                    return bad_request("invalid_grant", "code expired or redirect_uri mismatch");
                }
                // RFC 7636 §4.6: BASE64URL(SHA256(code_verifier)) == code_challenge.
                let verifier = p.get("code_verifier").map(String::as_str).unwrap_or("");
                let digest =
                    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes());
                let computed = URL_SAFE_NO_PAD.encode(digest.as_ref());
                if verifier.len() < 43
                    || !constant_time_eq(computed.as_bytes(), grant.challenge.as_bytes())
                {
                    return bad_request("invalid_grant", "PKCE verification failed");
                }
                let refresh = RefreshGrant {
                    user: grant.user.clone(),
                    sid: grant.sid.clone(),
                    client_id: grant.client_id.clone(),
                };
                self.issue(&refresh, grant.nonce.as_deref())
            }
            Some("refresh_token") => {
                // Rotation: the presented token is consumed either way.
                let grant = match p
                    .get("refresh_token")
                    .and_then(|t| self.state().refresh.remove(t))
                {
                    Some(g) => g,
                    None => return bad_request("invalid_grant", "unknown or used refresh token"),
                };
                self.issue(&grant, None)
            }
            _ => bad_request(
                "unsupported_grant_type",
                "use authorization_code or refresh_token",
            ),
        }
    }

    fn claims_for(&self, user: &str) -> Value {
        let (name, email) = match user.split_once('@') {
            Some((n, _)) => (n.to_string(), user.to_string()),
            None => (user.to_string(), format!("{user}@example.com")),
        };
        let mut display = name.clone();
        if let Some(first) = display.get_mut(0..1) {
            first.make_ascii_uppercase();
        }
        json!({
            "sub": name, "email": email, "email_verified": true, "name": display,
            "preferred_username": name, "groups": ["demo-users"],
        })
    }

    fn sign(&self, claims: &Value) -> Option<String> {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some("demo-1".into());
        jsonwebtoken::encode(&header, claims, &self.encoding).ok()
    }

    fn issue(&self, grant: &RefreshGrant, nonce: Option<&str>) -> Response<Body> {
        let now = now();
        let profile = self.claims_for(&grant.user);
        let mut id = profile.clone();
        id["iss"] = json!(self.issuer);
        id["aud"] = json!(grant.client_id);
        id["iat"] = json!(now);
        id["exp"] = json!(now + ID_TOKEN_TTL);
        id["sid"] = json!(grant.sid);
        if let Some(n) = nonce {
            id["nonce"] = json!(n);
        }
        let access = json!({
            "iss": self.issuer, "aud": API_AUDIENCE, "sub": profile["sub"], "client_id": grant.client_id,
            "scope": "openid email profile offline_access", "iat": now, "exp": now + ACCESS_TOKEN_TTL,
            "jti": random(12),
        });
        let (Some(id_token), Some(access_token)) = (self.sign(&id), self.sign(&access)) else {
            return json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "signing failed",
            );
        };
        let refresh_token = random(32);
        self.state()
            .refresh
            .insert(refresh_token.clone(), grant.clone());
        json_ok(json!({
            "access_token": access_token, "token_type": "Bearer", "expires_in": ACCESS_TOKEN_TTL,
            "refresh_token": refresh_token, "id_token": id_token, "scope": "openid email profile offline_access",
        }))
    }

    fn userinfo<B>(&self, req: &Request<B>) -> Response<Body> {
        let token = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let mut v = Validation::new(Algorithm::ES256);
        v.set_issuer(&[&self.issuer]);
        v.set_audience(&[API_AUDIENCE]);
        match token.and_then(|t| jsonwebtoken::decode::<Value>(t, &self.decoding, &v).ok()) {
            Some(data) => {
                let sub = data.claims["sub"].as_str().unwrap_or("").to_string();
                json_ok(self.claims_for(&sub))
            }
            None => json_error(
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                "bad access token",
            ),
        }
    }

    fn revoke(&self, p: &HashMap<String, String>) -> Response<Body> {
        // RFC 7009 §2.2: 200 whether or not the token was known.
        if let Some(t) = p.get("token") {
            self.state().refresh.remove(t);
        }
        response::text_response(StatusCode::OK, "")
    }

    fn end_session(&self, p: &HashMap<String, String>) -> Response<Body> {
        match p.get("post_logout_redirect_uri") {
            Some(uri)
                if uri.starts_with(self.redirect_uri.trim_end_matches("/oauth2/callback")) =>
            {
                response::redirect(uri)
            }
            _ => response::html_response(
                StatusCode::OK,
                response::render(
                    "Signed out",
                    "You are signed out of the demo identity provider.",
                    "",
                ),
            ),
        }
    }
}

fn json_ok(v: Value) -> Response<Body> {
    response::json_response(StatusCode::OK, v.to_string())
}

fn json_error(status: StatusCode, error: &str, description: &str) -> Response<Body> {
    response::json_response(
        status,
        json!({ "error": error, "error_description": description }).to_string(),
    )
}

fn bad_request(error: &str, description: &str) -> Response<Body> {
    json_error(StatusCode::BAD_REQUEST, error, description)
}
