//! The mock IdP's HTTP endpoints (see the module docs of [`super`]).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};

use super::jwt::{mint_jwt, unix_now, Signer, SigningKey};
use super::{
    Authorization, ClientAuth, Grant, IdTokenFault, IssuedTokens, MockUserinfo, State,
    UserinfoRequest, MOCK_SUB,
};
use crate::common::login::random_hex;

type Body = Full<Bytes>;

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

/// `claims` signed by `key` under the IdP's `kid` (whichever key signs).
fn sign(state: &State, key: &SigningKey, typ: &str, claims: &Value) -> String {
    let header = json!({"alg": key.alg(), "kid": state.key.kid, "typ": typ});
    mint_jwt(&header, claims, Signer::Key(key))
}

pub(super) async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let resp = match (req.method().clone(), req.uri().path()) {
        (Method::GET, "/.well-known/openid-configuration") => {
            json_response(StatusCode::OK, &discovery(&state))
        }
        (Method::GET, "/jwks") => {
            json_response(StatusCode::OK, &json!({ "keys": [state.key.jwk()] }))
        }
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
            let text = String::from_utf8_lossy(&body).into_owned();
            if params(&text).get("grant_type").map(String::as_str) == Some("refresh_token") {
                state.refresh_arrivals.fetch_add(1, Ordering::SeqCst);
                let delay = state.refresh_delay_ms.load(Ordering::SeqCst);
                if delay > 0 {
                    tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
                }
            }
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
        "id_token_signing_alg_values_supported": [state.key.alg()],
        "code_challenge_methods_supported": ["S256"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
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
    let client_id = state
        .issued
        .lock()
        .unwrap()
        .iter()
        .find(|t| t.access_token == token)
        .map(|t| t.client_id.clone());
    let Some(client_id) = client_id else {
        return Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .header("www-authenticate", "Bearer error=\"invalid_token\"")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(r#"{"error":"invalid_token"}"#)))
            .unwrap();
    };
    match answer {
        MockUserinfo::Claims(claims) => json_response(StatusCode::OK, &claims),
        MockUserinfo::SignedJwt { claims, forged } => {
            let mut claims = claims;
            claims["iss"] = json!(state.issuer);
            claims["aud"] = json!(client_id);
            let key = if forged {
                state.other_key()
            } else {
                &state.key
            };
            let jwt = sign(state, key, "JWT", &claims);
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
    let (Some(state_param), Some(code_challenge)) = (p.get("state"), p.get("code_challenge"))
    else {
        return oauth_error("invalid_request", "state and code_challenge are required");
    };
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
            code_challenge: code_challenge.clone(),
            sub: state.user.lock().unwrap().clone(),
            sid: format!("sid-{}", random_hex(8)),
        },
    );
    target
        .query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", state_param)
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
            state
                .logins
                .lock()
                .unwrap()
                .push((auth.sub.clone(), auth.sid.clone()));
            Grant {
                client_id: auth.client_id,
                nonce: auth.nonce,
                sub: auth.sub,
                sid: auth.sid,
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

    let access_ttl = state.access_ttl.load(Ordering::SeqCst);
    let access_token = match &state.api_audience {
        Some(audience) => {
            let now = unix_now();
            let claims = json!({
                "iss": state.issuer,
                "sub": grant.sub,
                "aud": audience,
                "client_id": grant.client_id,
                "scope": "openid email profile offline_access",
                "jti": random_hex(12),
                "iat": now,
                "exp": now + access_ttl,
            });
            sign(state, &state.key, "at+jwt", &claims)
        }
        None => format!("mock-access-{}", random_hex(16)),
    };
    let issued = IssuedTokens {
        access_token,
        refresh_token: format!("mock-refresh-{}", random_hex(16)),
        id_token: id_token(state, &grant),
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
        "expires_in": access_ttl,
        "refresh_token": issued.refresh_token,
        "id_token": issued.id_token,
    });
    state.issued.lock().unwrap().push(issued);
    json_response(StatusCode::OK, &body)
}

/// The ID token for `grant`, faulty as set.
fn id_token(state: &State, grant: &Grant) -> String {
    let fault = *state.fault.lock().unwrap();
    let now = unix_now();
    let (iat, exp) = if fault == IdTokenFault::Expired {
        (now - 7200, now - 3600)
    } else {
        (now, now + 300)
    };
    let nonce = match fault {
        IdTokenFault::WrongNonce => Some("not-the-nonce".to_string()),
        _ => grant.nonce.clone(),
    };
    let mut claims = json!({
        "iss": if fault == IdTokenFault::WrongIssuer { "http://127.0.0.1:1" } else { state.issuer.as_str() },
        "sub": grant.sub,
        "aud": if fault == IdTokenFault::WrongAudience { "another-client" } else { grant.client_id.as_str() },
        "iat": iat,
        "exp": exp,
        "sid": grant.sid,
        "email": format!("{}@corp.test", grant.sub),
        "name": if grant.sub == MOCK_SUB { "Mock User" } else { grant.sub.as_str() },
        "groups": ["mockers"],
    });
    if let Some(nonce) = nonce {
        claims["nonce"] = json!(nonce);
    }
    if state.minimal_id_tokens.load(Ordering::SeqCst) {
        let object = claims.as_object_mut().expect("claims are an object");
        object.retain(|k, _| ["iss", "sub", "aud", "iat", "exp", "nonce"].contains(&k.as_str()));
    }
    match fault {
        IdTokenFault::Unsigned => mint_jwt(
            &json!({"alg": "none", "typ": "JWT"}),
            &claims,
            Signer::Unsigned,
        ),
        IdTokenFault::UnknownKey => sign(state, state.other_key(), "JWT", &claims),
        _ => sign(state, &state.key, "JWT", &claims),
    }
}
