//! Standing adversarial suite, part 7: JWT attacks on API bearer routes
//! (`accept_bearer = true`, `oidc.api_audience`) and on back-channel logout tokens.
//!
//! The issuer is the in-process key issuer (`tests/common/security_issuer.rs`), which
//! publishes an RS256 and an ES256 key the test can sign with, so every claim and header
//! can be forged while the signature stays valid. A refused token gets 401 with
//! `WWW-Authenticate: Bearer error="invalid_token"` and never reaches the upstream; an
//! accepted one is forwarded unchanged.

mod common;

use jsonwebtoken::Algorithm;
use serde_json::{json, Value};

use common::security::*;
use common::security_issuer::{hs256, now_secs, unsigned, KeyIssuer, SigningKey};

/// The key issuer publishes one RS256 key (and advertises RS256 only).
async fn jwt_stack() -> Stack {
    Stack::builder()
        .keys(Keys::Rsa)
        .bearer_route()
        .start()
        .await
}

/// The key issuer publishes an RS256 and an ES256 key and advertises both.
async fn mixed_stack() -> Stack {
    Stack::builder()
        .keys(Keys::RsaAndEc)
        .bearer_route()
        .start()
        .await
}

fn claims(keys: &KeyIssuer) -> Value {
    let now = now_secs();
    json!({
        "iss": keys.issuer(),
        "sub": "api-client",
        "aud": API_AUDIENCE,
        "iat": now,
        "nbf": now - 10,
        "exp": now + 300,
        "client_id": "api-client",
        "scope": "read",
    })
}

fn rs256(keys: &KeyIssuer, claims: &Value) -> String {
    keys.key(Algorithm::RS256)
        .sign(json!({ "typ": "at+jwt" }), claims)
}

async fn call(stack: &Stack, token: &str) -> Reply {
    let authorization = format!("Bearer {token}");
    stack
        .request(
            "GET",
            "/bearer/data",
            &[
                ("accept", "application/json"),
                ("authorization", &authorization),
            ],
        )
        .await
}

async fn assert_accepted(stack: &Stack, case: &str, token: &str) {
    let reply = call(stack, token).await;
    let echo = echoed(case, &reply);
    assert_eq!(
        echo.header("authorization"),
        Some(format!("Bearer {token}").as_str()),
        "{case}: forwarded unchanged"
    );
    assert_eq!(
        echo.header("x-forwarded-user"),
        Some("api-client"),
        "{case}"
    );
}

async fn assert_invalid_token(stack: &Stack, case: &str, token: &str) {
    let before = stack.echo.received().len();
    let reply = call(stack, token).await;
    assert_eq!(reply.status, 401, "{case}: must be refused\n{reply}");
    assert!(
        reply
            .header("www-authenticate")
            .is_some_and(|w| w.contains("invalid_token")),
        "{case}: WWW-Authenticate error=\"invalid_token\"\n{reply}"
    );
    assert_eq!(
        stack.echo.received().len(),
        before,
        "{case}: the token reached the upstream"
    );
}

// ----- controls ----------------------------------------------------------------------

/// RFC 9068 §4 (validating JWT access tokens): a correct RS256 token passes, forwarded
/// unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_rs256_api_token_is_accepted_and_forwarded_unchanged() {
    let stack = jwt_stack().await;
    let token = rs256(stack.keys(), &claims(stack.keys()));
    assert_accepted(
        &stack,
        "valid_rs256_api_token_is_accepted_and_forwarded_unchanged",
        &token,
    )
    .await;
}

/// RFC 9068 §4 and OIDC Discovery §3 (`id_token_signing_alg_values_supported` may list
/// several algorithms, e.g. Keycloak's RS256 and ES256 keys): with an IdP that publishes
/// keys of two families, tokens of either still validate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_validate_when_the_idp_publishes_two_key_families() {
    let stack = mixed_stack().await;
    let token = rs256(stack.keys(), &claims(stack.keys()));
    assert_accepted(
        &stack,
        "tokens_validate_when_the_idp_publishes_two_key_families (RS256)",
        &token,
    )
    .await;
    let token = stack
        .keys()
        .key(Algorithm::ES256)
        .sign(json!({}), &claims(stack.keys()));
    assert_accepted(
        &stack,
        "tokens_validate_when_the_idp_publishes_two_key_families (ES256)",
        &token,
    )
    .await;
}

/// The issue (leeway 60 s): an `iat` 20 s ahead (clock skew) is still fine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iat_within_the_leeway_is_accepted() {
    let stack = jwt_stack().await;
    let mut c = claims(stack.keys());
    c["iat"] = json!(now_secs() + 20);
    assert_accepted(
        &stack,
        "iat_within_the_leeway_is_accepted",
        &rs256(stack.keys(), &c),
    )
    .await;
}

// ----- algorithms --------------------------------------------------------------------

/// RFC 8725 §2.1 / §3.1 and CVE-2015-9235 (node-jsonwebtoken accepted `alg: none`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alg_none_is_refused() {
    let stack = jwt_stack().await;
    let kid = stack.keys().key(Algorithm::RS256).kid.clone();
    let c = claims(stack.keys());
    for alg in ["none", "None", "NONE", "nOnE"] {
        let token = unsigned(&json!({ "alg": alg, "kid": kid, "typ": "JWT" }), &c);
        assert_invalid_token(&stack, &format!("alg_none_is_refused ({alg})"), &token).await;
    }
}

/// CVE-2016-10555 (jwt-simple) and RFC 8725 §3.1 (algorithm confusion): HS256 keyed with
/// the issuer's published RSA public key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hs256_keyed_with_the_rsa_public_key_is_refused() {
    let stack = jwt_stack().await;
    let key = stack.keys().key(Algorithm::RS256);
    let c = claims(stack.keys());
    for secret in [
        key.public_pem.clone(),
        key.public_pem.trim_end().to_string(),
    ] {
        let token = hs256(
            secret.as_bytes(),
            &json!({ "kid": key.kid, "typ": "JWT" }),
            &c,
        );
        assert_invalid_token(
            &stack,
            "hs256_keyed_with_the_rsa_public_key_is_refused",
            &token,
        )
        .await;
    }
}

/// RFC 8725 §3.1: the same confusion with a published EC key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hs256_keyed_with_the_ec_public_key_is_refused() {
    let stack = mixed_stack().await;
    let key = stack.keys().key(Algorithm::ES256);
    let token = hs256(
        key.public_pem.as_bytes(),
        &json!({ "kid": key.kid }),
        &claims(stack.keys()),
    );
    assert_invalid_token(
        &stack,
        "hs256_keyed_with_the_ec_public_key_is_refused",
        &token,
    )
    .await;
}

/// RFC 8725 §3.1 (the algorithm must match the key): `alg: ES256` naming the RSA key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn algorithm_that_does_not_match_the_key_is_refused() {
    let stack = mixed_stack().await;
    let rsa_kid = stack.keys().key(Algorithm::RS256).kid.clone();
    let token = stack
        .keys()
        .key(Algorithm::ES256)
        .sign(json!({ "kid": rsa_kid }), &claims(stack.keys()));
    assert_invalid_token(
        &stack,
        "algorithm_that_does_not_match_the_key_is_refused",
        &token,
    )
    .await;
}

// ----- keys and kid ------------------------------------------------------------------

/// README (a `kid` a fresh key set did not contain is refused without another fetch
/// for 30 s) and RFC 8725 §3.10: an unknown `kid` is refused, and asking twice causes
/// at most one JWKS refetch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_kid_is_refused_without_hammering_the_jwks() {
    let stack = jwt_stack().await;
    let case = "unknown_kid_is_refused_without_hammering_the_jwks";
    let jwks_fetches = || {
        stack
            .keys()
            .requests()
            .iter()
            .filter(|p| p.starts_with("/jwks"))
            .count()
    };
    let before = jwks_fetches();
    let token = stack
        .keys()
        .attacker_key()
        .sign(json!({}), &claims(stack.keys()));
    for _ in 0..3 {
        assert_invalid_token(&stack, case, &token).await;
    }
    assert!(
        jwks_fetches() <= before + 1,
        "{case}: {} JWKS fetches for one unknown kid",
        jwks_fetches() - before
    );
}

/// Envoy CVE-2022-29226 class (unverified tokens accepted) / RFC 7515 §5.2: a valid
/// signature by a key that is not published, under the published `kid`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attacker_key_under_the_published_kid_is_refused() {
    let stack = jwt_stack().await;
    let kid = stack.keys().key(Algorithm::RS256).kid.clone();
    // An RSA key of the attacker's, presented under the published kid and algorithm.
    let attacker = SigningKey::rsa(&kid);
    let token = attacker.sign(json!({}), &claims(stack.keys()));
    assert_invalid_token(
        &stack,
        "attacker_key_under_the_published_kid_is_refused",
        &token,
    )
    .await;
}

/// RFC 8725 §3.10 (do not trust received claims: `kid` used for file paths and SQL):
/// path traversal, SQL and URL `kid`s, signed by the attacker or HMAC'd with an empty key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_kid_values_are_refused() {
    let stack = jwt_stack().await;
    let c = claims(stack.keys());
    for kid in [
        "../../../../../../dev/null",
        "' OR '1'='1",
        "http://127.0.0.1:9/jwks",
        "\u{0000}",
        &"k".repeat(5000),
    ] {
        let token = stack.keys().attacker_key().sign(json!({ "kid": kid }), &c);
        assert_invalid_token(
            &stack,
            "injected_kid_values_are_refused (attacker key)",
            &token,
        )
        .await;
        let token = hs256(b"", &json!({ "kid": kid }), &c);
        assert_invalid_token(
            &stack,
            "injected_kid_values_are_refused (empty HMAC key)",
            &token,
        )
        .await;
    }
}

/// RFC 7515 §4.1.2 + RFC 8725 §3.10 (`jku` is an SSRF and key-injection vector): a token
/// naming the attacker's key set is refused, and that URL is never fetched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jku_header_is_never_followed() {
    let stack = jwt_stack().await;
    let case = "jku_header_is_never_followed";
    let jku = format!("{}/attacker-jwks", stack.keys().issuer());
    let token = stack
        .keys()
        .attacker_key()
        .sign(json!({ "jku": jku }), &claims(stack.keys()));
    assert_invalid_token(&stack, case, &token).await;
    assert!(
        !stack
            .keys()
            .requests()
            .iter()
            .any(|p| p.contains("attacker")),
        "{case}: the jku URL was fetched"
    );
}

/// RFC 7515 §4.1.5 + RFC 8725 §3.10: the same for `x5u`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x5u_header_is_never_followed() {
    let stack = jwt_stack().await;
    let case = "x5u_header_is_never_followed";
    let x5u = format!("{}/attacker-jwks?x5u", stack.keys().issuer());
    let token = stack
        .keys()
        .attacker_key()
        .sign(json!({ "x5u": x5u }), &claims(stack.keys()));
    assert_invalid_token(&stack, case, &token).await;
    assert!(
        !stack
            .keys()
            .requests()
            .iter()
            .any(|p| p.contains("attacker")),
        "{case}: the x5u URL was fetched"
    );
}

/// CVE-2018-0114 (node-jose trusted a key embedded in the `jwk` header): the attacker's
/// own public key in the header verifies nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_jwk_header_is_not_trusted() {
    let stack = jwt_stack().await;
    let attacker = stack.keys().attacker_key();
    let token = attacker.sign(json!({ "jwk": attacker.jwk }), &claims(stack.keys()));
    assert_invalid_token(&stack, "embedded_jwk_header_is_not_trusted", &token).await;
}

/// RFC 7515 §4.1.11 (a `crit` extension the recipient does not understand MUST make the
/// JWS invalid).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_critical_header_is_refused() {
    let stack = jwt_stack().await;
    let token = stack.keys().key(Algorithm::RS256).sign(
        json!({ "crit": ["exp-override"], "exp-override": true }),
        &claims(stack.keys()),
    );
    assert_invalid_token(&stack, "unknown_critical_header_is_refused", &token).await;
}

/// RFC 7515 §5.2 (the signature must validate): signature stripped, or taken from another
/// token whose claims differ.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stripped_or_transplanted_signatures_are_refused() {
    let stack = jwt_stack().await;
    let case = "stripped_or_transplanted_signatures_are_refused";
    let good = rs256(stack.keys(), &claims(stack.keys()));
    let (message, _) = good.rsplit_once('.').unwrap();
    assert_invalid_token(&stack, case, &format!("{message}.")).await;
    assert_invalid_token(&stack, case, message).await;
    let mut admin = claims(stack.keys());
    admin["sub"] = json!("admin");
    admin["scope"] = json!("admin");
    let other = rs256(stack.keys(), &admin);
    let (other_message, _) = other.rsplit_once('.').unwrap();
    let signature = good.rsplit('.').next().unwrap();
    assert_invalid_token(&stack, case, &format!("{other_message}.{signature}")).await;
}

// ----- time claims -------------------------------------------------------------------

/// RFC 7519 §4.1.4: an expired token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_token_is_refused() {
    let stack = jwt_stack().await;
    let mut c = claims(stack.keys());
    c["exp"] = json!(now_secs() - 3600);
    c["iat"] = json!(now_secs() - 7200);
    assert_invalid_token(&stack, "expired_token_is_refused", &rs256(stack.keys(), &c)).await;
}

/// The issue (tokens without `exp` are refused) and RFC 9068 §2.2 (`exp` REQUIRED).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_without_exp_is_refused() {
    let stack = jwt_stack().await;
    let mut c = claims(stack.keys());
    c.as_object_mut().unwrap().remove("exp");
    assert_invalid_token(
        &stack,
        "token_without_exp_is_refused",
        &rs256(stack.keys(), &c),
    )
    .await;
}

/// RFC 7519 §4.1.5: `nbf` five minutes ahead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn future_nbf_is_refused() {
    let stack = jwt_stack().await;
    let mut c = claims(stack.keys());
    c["nbf"] = json!(now_secs() + 300);
    assert_invalid_token(&stack, "future_nbf_is_refused", &rs256(stack.keys(), &c)).await;
}

/// The issue (API JWTs with `iat` a day in the future were accepted); RFC 7519 §4.1.6.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iat_a_day_in_the_future_is_refused() {
    let stack = jwt_stack().await;
    let mut c = claims(stack.keys());
    c["iat"] = json!(now_secs() + 86_400);
    c["exp"] = json!(now_secs() + 86_400 + 300);
    assert_invalid_token(
        &stack,
        "iat_a_day_in_the_future_is_refused",
        &rs256(stack.keys(), &c),
    )
    .await;
}

/// The issue (ten years ahead: a token minted now for use in a decade).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iat_ten_years_in_the_future_is_refused() {
    let stack = jwt_stack().await;
    let mut c = claims(stack.keys());
    c["iat"] = json!(now_secs() + 10 * 365 * 86_400);
    c["exp"] = json!(now_secs() + 10 * 365 * 86_400 + 300);
    assert_invalid_token(
        &stack,
        "iat_ten_years_in_the_future_is_refused",
        &rs256(stack.keys(), &c),
    )
    .await;
}

/// The issue: more than the 60 s leeway ahead (two minutes) is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iat_just_beyond_the_leeway_is_refused() {
    let stack = jwt_stack().await;
    let mut c = claims(stack.keys());
    c["iat"] = json!(now_secs() + 120);
    assert_invalid_token(
        &stack,
        "iat_just_beyond_the_leeway_is_refused",
        &rs256(stack.keys(), &c),
    )
    .await;
}

/// RFC 7519 §2 (NumericDate is a number): string, negative and non-integer time claims.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_time_claims_are_refused() {
    let stack = jwt_stack().await;
    for (claim, value) in [
        ("exp", json!("9999999999")),
        ("exp", json!(-1)),
        ("exp", json!(null)),
        ("iat", json!("now")),
    ] {
        let mut c = claims(stack.keys());
        c[claim] = value.clone();
        assert_invalid_token(
            &stack,
            &format!("malformed_time_claims_are_refused ({claim}={value})"),
            &rs256(stack.keys(), &c),
        )
        .await;
    }
}

// ----- audience, issuer, subject -----------------------------------------------------

/// RFC 9068 §4 and RFC 8725 §3.9 (validate the audience).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_audience_is_refused() {
    let stack = jwt_stack().await;
    let mut c = claims(stack.keys());
    c["aud"] = json!("https://other-api.portcullis.test");
    assert_invalid_token(
        &stack,
        "wrong_audience_is_refused",
        &rs256(stack.keys(), &c),
    )
    .await;
    c["aud"] = json!(["https://other-api.portcullis.test", "gateway"]);
    assert_invalid_token(
        &stack,
        "wrong_audience_is_refused (array)",
        &rs256(stack.keys(), &c),
    )
    .await;
    c.as_object_mut().unwrap().remove("aud");
    assert_invalid_token(
        &stack,
        "wrong_audience_is_refused (missing)",
        &rs256(stack.keys(), &c),
    )
    .await;
}

/// RFC 8725 §2.8 (cross-JWT confusion): an ID token for the gateway's client (`aud` =
/// client id, with `nonce`) is not an API access token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn id_token_is_not_an_api_access_token() {
    let stack = jwt_stack().await;
    let mut c = claims(stack.keys());
    c["aud"] = json!("gateway");
    c["nonce"] = json!("n-0S6_WzA2Mj");
    c["azp"] = json!("gateway");
    let token = stack
        .keys()
        .key(Algorithm::RS256)
        .sign(json!({ "typ": "JWT" }), &c);
    assert_invalid_token(&stack, "id_token_is_not_an_api_access_token", &token).await;
}

/// RFC 9068 §4 (`iss` must be the expected issuer, exact).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_issuer_is_refused() {
    let stack = jwt_stack().await;
    let issuer = stack.keys().issuer().to_string();
    for iss in [
        "http://evil.test".to_string(),
        format!("{issuer}/"),
        issuer.to_uppercase(),
    ] {
        let mut c = claims(stack.keys());
        c["iss"] = json!(iss);
        assert_invalid_token(
            &stack,
            &format!("wrong_issuer_is_refused ({iss})"),
            &rs256(stack.keys(), &c),
        )
        .await;
    }
}

/// RFC 9068 §2.2 (`sub` REQUIRED): a token naming nobody.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_without_subject_is_refused() {
    let stack = jwt_stack().await;
    let mut c = claims(stack.keys());
    c.as_object_mut().unwrap().remove("sub");
    assert_invalid_token(
        &stack,
        "token_without_subject_is_refused",
        &rs256(stack.keys(), &c),
    )
    .await;
}

// ----- shape and size ----------------------------------------------------------------

/// RFC 7515 §7.1 (compact serialization): garbage in every part, extra parts, nothing at
/// all — 401, never a 5xx.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_tokens_are_refused() {
    let stack = jwt_stack().await;
    for token in [
        "!!!.@@@.###",
        "a.b.c.d.e",
        "eyJhbGciOiJSUzI1NiJ9",
        "....",
        "eyJ9.eyJ9.eyJ9",
        "%00",
    ] {
        assert_invalid_token(
            &stack,
            &format!("malformed_tokens_are_refused ({token})"),
            token,
        )
        .await;
    }
}

/// The issue ("huge tokens") and RFC 6585 §5 (431): a 40 KB token (over
/// `max_header_bytes`) is 431, a 12 KB one with a valid signature and 2,000 nested
/// arrays is 401 or accepted, never a crash; no 5xx, the gateway stays up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_tokens_do_not_hurt_the_gateway() {
    let stack = jwt_stack().await;
    let case = "huge_tokens_do_not_hurt_the_gateway";
    let before = stack.echo.received().len();
    let mut c = claims(stack.keys());
    c["pad"] = json!("x".repeat(40_000));
    let reply = call(&stack, &rs256(stack.keys(), &c)).await;
    assert_eq!(reply.status, 431, "{case}: a 40 KB header section\n{reply}");
    assert_eq!(
        stack.echo.received().len(),
        before,
        "{case}: reached the upstream"
    );
    let nested = format!("{}{}", "[".repeat(2000), "]".repeat(2000));
    let message = format!(
        "{}.{}",
        common::security_issuer::b64_json(&json!({ "alg": "RS256" })),
        base64_url(&format!("{{\"a\":{nested}}}"))
    );
    let reply = call(&stack, &format!("{message}.AAAA")).await;
    assert_eq!(reply.status, 401, "{case}: deeply nested claims\n{reply}");
    assert_eq!(stack.get("/healthz").await.status, 200, "{case}: still up");
}

fn base64_url(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}

/// README (only routes with `accept_bearer` take API tokens): a valid token on a plain
/// protected route signs nobody in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_token_on_a_route_without_accept_bearer_is_not_a_login() {
    let stack = jwt_stack().await;
    let case = "api_token_on_a_route_without_accept_bearer_is_not_a_login";
    let token = rs256(stack.keys(), &claims(stack.keys()));
    let authorization = format!("Bearer {token}");
    let traffic = stack.upstream_traffic();
    let reply = stack
        .request(
            "GET",
            "/echo/data",
            &[
                ("accept", "application/json"),
                ("authorization", &authorization),
            ],
        )
        .await;
    assert_eq!(reply.status, 401, "{case}\n{reply}");
    assert_eq!(
        stack.upstream_traffic(),
        traffic,
        "{case}: reached the upstream"
    );
}

// ----- back-channel logout tokens ----------------------------------------------------

fn logout_claims(keys: &KeyIssuer) -> Value {
    json!({
        "iss": keys.issuer(),
        "aud": "gateway",
        "iat": now_secs(),
        "exp": now_secs() + 120,
        "jti": common::login::random_hex(16),
        "sub": "api-client",
        "events": { "http://schemas.openid.net/event/backchannel-logout": {} },
    })
}

async fn post_logout_token(stack: &Stack, token: &str) -> Reply {
    let body = format!("logout_token={token}");
    let len = body.len().to_string();
    let mut bytes = request_bytes(
        &stack.host(),
        "POST",
        "/oauth2/backchannel-logout",
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("content-length", &len),
        ],
        b"",
    );
    bytes.extend_from_slice(body.as_bytes());
    stack.send_bytes(&bytes).await
}

async fn assert_logout_token_rejected(stack: &Stack, case: &str, token: &str) {
    let before = stack.events("backchannel_logout_rejected");
    let reply = post_logout_token(stack, token).await;
    assert_eq!(reply.status, 400, "{case}: must be refused\n{reply}");
    stack
        .wait_event(case, "backchannel_logout_rejected", before)
        .await;
    assert_eq!(
        stack.events("backchannel_logout"),
        0,
        "{case}: a logout was carried out"
    );
}

/// OpenID Back-Channel Logout 1.0 §2.6 (validate `iat`) and the issue: a logout token
/// issued a day in the future.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_token_from_the_future_is_rejected() {
    let stack = jwt_stack().await;
    let mut c = logout_claims(stack.keys());
    c["iat"] = json!(now_secs() + 86_400);
    c["exp"] = json!(now_secs() + 86_400 + 120);
    let token = stack
        .keys()
        .key(Algorithm::RS256)
        .sign(json!({ "typ": "logout+jwt" }), &c);
    assert_logout_token_rejected(&stack, "logout_token_from_the_future_is_rejected", &token).await;
}

/// OpenID Back-Channel Logout 1.0 §2.4 (a logout token MUST NOT contain `nonce`): it
/// could be an ID token replayed as a logout token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_token_with_nonce_is_rejected() {
    let stack = jwt_stack().await;
    let mut c = logout_claims(stack.keys());
    c["nonce"] = json!("abc");
    let token = stack.keys().key(Algorithm::RS256).sign(json!({}), &c);
    assert_logout_token_rejected(&stack, "logout_token_with_nonce_is_rejected", &token).await;
}

/// RFC 8725 §2.1 on the logout endpoint: unsigned and attacker-signed logout tokens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_logout_tokens_are_rejected() {
    let stack = jwt_stack().await;
    let c = logout_claims(stack.keys());
    let kid = stack.keys().key(Algorithm::RS256).kid.clone();
    assert_logout_token_rejected(
        &stack,
        "forged_logout_tokens_are_rejected (none)",
        &unsigned(&json!({ "alg": "none", "kid": kid }), &c),
    )
    .await;
    let c = logout_claims(stack.keys());
    let token = stack.keys().attacker_key().sign(json!({}), &c);
    assert_logout_token_rejected(
        &stack,
        "forged_logout_tokens_are_rejected (attacker key)",
        &token,
    )
    .await;
}
