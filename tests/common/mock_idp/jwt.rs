//! Signing keys and JWTs built by hand, for the mock IdP and for forged tokens.
//!
//! - [`SigningKey`]: an RS256 (RSA 2048) or ES256 (P-256) key pair generated with
//!   aws-lc-rs, signing through `jsonwebtoken`, with its public JWK from `jsonwebtoken`.
//! - [`RsaPublic`]: an RSA public key (from a JWK) in the encodings a key-confusion
//!   attacker would use as an HMAC secret (SPKI PEM and DER, PKCS#1 DER), encoded by
//!   aws-lc-rs.
//! - [`mint_jwt`]: any header, any claims, any signature (a [`SigningKey`], HS256 with any
//!   secret, none) — whatever the header's `alg` says.

use aws_lc_rs::encoding::AsDer;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use jsonwebtoken::jwk::{Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::Value;

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// `-----BEGIN {label}-----`, base64 in 64-column lines, `-----END {label}-----`.
fn pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut text = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        text.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        text.push('\n');
    }
    text.push_str(&format!("-----END {label}-----\n"));
    text
}

/// A private signing key with its `kid` and algorithm (RS256 or ES256).
pub struct SigningKey {
    pub kid: String,
    alg: Algorithm,
    encoding: EncodingKey,
    /// The public half, with `kid`, `use: sig` and `alg`.
    jwk: Jwk,
}

impl SigningKey {
    /// A fresh 2048-bit RSA key that signs RS256.
    pub fn rsa(kid: &str) -> Self {
        let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
            .expect("generate an RSA key");
        let pkcs8 = pair.as_der().expect("RSA key as PKCS#8");
        // jsonwebtoken takes RSA private keys as PKCS#1 DER or as PEM (PKCS#1 or PKCS#8).
        let encoding = EncodingKey::from_rsa_pem(pem("PRIVATE KEY", pkcs8.as_ref()).as_bytes())
            .expect("PKCS#8 RSA key usable by jsonwebtoken");
        Self::new(kid, Algorithm::RS256, encoding)
    }

    /// A fresh P-256 key that signs ES256.
    pub fn p256(kid: &str) -> Self {
        let pkcs8 = aws_lc_rs::signature::EcdsaKeyPair::generate_pkcs8(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &aws_lc_rs::rand::SystemRandom::new(),
        )
        .expect("generate a P-256 key");
        Self::new(
            kid,
            Algorithm::ES256,
            EncodingKey::from_ec_der(pkcs8.as_ref()),
        )
    }

    /// A fresh key of the same kind (RSA or P-256) as `self`, under `kid`.
    pub fn same_kind(&self, kid: &str) -> Self {
        match self.alg {
            Algorithm::RS256 => Self::rsa(kid),
            _ => Self::p256(kid),
        }
    }

    fn new(kid: &str, alg: Algorithm, encoding: EncodingKey) -> Self {
        let mut jwk = Jwk::from_encoding_key(&encoding, alg).expect("public JWK of the key");
        jwk.common.key_id = Some(kid.to_string());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        jwk.common.key_algorithm = Some(match alg {
            Algorithm::RS256 => KeyAlgorithm::RS256,
            _ => KeyAlgorithm::ES256,
        });
        SigningKey {
            kid: kid.to_string(),
            alg,
            encoding,
            jwk,
        }
    }

    /// `RS256` or `ES256`.
    pub fn alg(&self) -> &'static str {
        match self.alg {
            Algorithm::RS256 => "RS256",
            _ => "ES256",
        }
    }

    /// The public JWK (`kid`, `use: sig`, `alg`).
    pub fn jwk(&self) -> Value {
        serde_json::to_value(&self.jwk).expect("JWK as JSON")
    }

    /// The public key in other encodings (RSA keys only).
    pub fn rsa_public(&self) -> RsaPublic {
        assert_eq!(self.alg, Algorithm::RS256, "not an RSA key");
        RsaPublic::from_jwk(&self.jwk())
    }

    /// base64url of the signature of `message` with this key's algorithm.
    fn sign(&self, message: &[u8]) -> String {
        jsonwebtoken::crypto::sign(message, &self.encoding, self.alg).expect("sign")
    }
}

/// An RSA public key in the encodings an attacker might try as an HMAC secret.
#[derive(Debug, Clone)]
pub struct RsaPublic {
    spki_der: Vec<u8>,
    pkcs1_der: Vec<u8>,
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
        let (n, e) = (field("n"), field("e"));
        let components = aws_lc_rs::rsa::PublicKeyComponents {
            n: n.as_slice(),
            e: e.as_slice(),
        };
        let spki = components.as_der().expect("RSA public key as SPKI DER");
        let public = aws_lc_rs::rsa::PublicKey::from_der(spki.as_ref())
            .expect("SPKI DER is an RSA public key");
        RsaPublic {
            spki_der: spki.as_ref().to_vec(),
            pkcs1_der: public.as_ref().to_vec(),
        }
    }

    /// PKCS#1 `RSAPublicKey` (RFC 8017), DER.
    pub fn pkcs1_der(&self) -> Vec<u8> {
        self.pkcs1_der.clone()
    }

    /// X.509 `SubjectPublicKeyInfo`, DER.
    pub fn spki_der(&self) -> Vec<u8> {
        self.spki_der.clone()
    }

    /// `-----BEGIN PUBLIC KEY-----` PEM of [`RsaPublic::spki_der`], 64-column lines.
    pub fn spki_pem(&self) -> String {
        pem("PUBLIC KEY", &self.spki_der)
    }
}

/// How [`mint_jwt`] signs (whatever the header's `alg` claims).
pub enum Signer<'a> {
    /// With this key's own algorithm (RS256 or ES256).
    Key(&'a SigningKey),
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
        Signer::Key(key) => key.sign(input.as_bytes()),
        Signer::Hs256(secret) => jsonwebtoken::crypto::sign(
            input.as_bytes(),
            &EncodingKey::from_secret(secret),
            Algorithm::HS256,
        )
        .expect("HMAC signature"),
        Signer::Unsigned => String::new(),
    };
    format!("{input}.{signature}")
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
