//! The gateway's own signing key for `private_key_jwt` client authentication (RFC 7523
//! §2.2, OIDC Core §9): parsed once from PEM at config time, so a bad file is a config
//! error, and used to sign a fresh client assertion for every call to the IdP's token and
//! revocation endpoints. A leaf: it knows PEM, JWK thumbprints and JWS signing, nothing of
//! the request path.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeyPair as RsaKeyPair;
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair as _};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivateKeyDer;

/// `client_assertion_type` for a JWT assertion (RFC 7523 §2.2).
pub const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// How long an assertion is valid: long enough for one request, short enough that a
/// captured one is useless (the IdP also refuses a replayed `jti`).
const ASSERTION_LIFETIME_SECS: u64 = 60;

enum Signer {
    /// RS256: RSASSA-PKCS1-v1_5 with SHA-256.
    Rsa(RsaKeyPair),
    /// ES256: ECDSA P-256 with SHA-256, fixed-length `r || s` as JWS wants (RFC 7518 §3.4).
    Ec(EcdsaKeyPair),
}

/// A private key for client assertions, with its `kid`.
pub struct ClientKey {
    signer: Signer,
    kid: String,
    /// The file it was read from, if any (shown by `check-config`).
    file: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ClientKey({}, kid {:?}, [redacted])",
            self.alg(),
            self.kid
        )
    }
}

impl ClientKey {
    /// Parses a PEM private key: RSA (PKCS#8 or PKCS#1) → RS256, P-256 (PKCS#8 or SEC1) →
    /// ES256. `kid` defaults to the key's RFC 7638 thumbprint, which IdPs that take a
    /// JWKS registration compute the same way.
    pub fn from_pem(pem: &[u8], kid: Option<String>) -> Result<Self, String> {
        let der = PrivateKeyDer::from_pem_slice(pem)
            .map_err(|e| format!("not a PEM private key ({e})"))?;
        let signer = match &der {
            PrivateKeyDer::Pkcs1(k) => RsaKeyPair::from_der(k.secret_pkcs1_der())
                .map(Signer::Rsa)
                .map_err(|e| format!("unusable RSA key: {e}"))?,
            PrivateKeyDer::Sec1(k) => EcdsaKeyPair::from_private_key_der(
                &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                k.secret_sec1_der(),
            )
            .map(Signer::Ec)
            .map_err(|e| format!("unusable EC key (only P-256 is supported): {e}"))?,
            PrivateKeyDer::Pkcs8(k) => {
                let bytes = k.secret_pkcs8_der();
                match RsaKeyPair::from_pkcs8(bytes) {
                    Ok(rsa) => Signer::Rsa(rsa),
                    Err(_) => EcdsaKeyPair::from_pkcs8(
                        &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                        bytes,
                    )
                    .map(Signer::Ec)
                    .map_err(|_| {
                        "the PKCS#8 key is neither RSA nor EC P-256 (only RS256 and ES256 are supported)"
                            .to_string()
                    })?,
                }
            }
            _ => return Err("unsupported private key format".into()),
        };
        let mut key = ClientKey {
            signer,
            kid: String::new(),
            file: None,
        };
        key.kid = match kid.filter(|k| !k.is_empty()) {
            Some(kid) => kid,
            None => key.thumbprint(),
        };
        Ok(key)
    }

    pub fn alg(&self) -> &'static str {
        match self.signer {
            Signer::Rsa(_) => "RS256",
            Signer::Ec(_) => "ES256",
        }
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// Records the file the key was read from.
    pub fn with_file(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.file = Some(path.into());
        self
    }

    /// The file the key was read from, if recorded.
    pub fn file(&self) -> Option<&std::path::Path> {
        self.file.as_deref()
    }

    /// The public half as a JWK (for registering the client at the IdP).
    pub fn public_jwk(&self) -> serde_json::Value {
        let mut jwk = self.required_members();
        jwk["kid"] = self.kid.clone().into();
        jwk["alg"] = self.alg().into();
        jwk["use"] = "sig".into();
        jwk
    }

    /// The required members only, in the lexicographic order RFC 7638 §3.2 hashes.
    fn required_members(&self) -> serde_json::Value {
        match &self.signer {
            Signer::Rsa(k) => {
                let public = k.public_key();
                serde_json::json!({
                    "e": B64.encode(public.exponent().big_endian_without_leading_zero()),
                    "kty": "RSA",
                    "n": B64.encode(public.modulus().big_endian_without_leading_zero()),
                })
            }
            Signer::Ec(k) => {
                // Uncompressed point: 0x04 || X (32 bytes) || Y (32 bytes).
                let point = k.public_key().as_ref();
                let (x, y) = point
                    .get(1..)
                    .unwrap_or_default()
                    .split_at(32.min(point.len().saturating_sub(1)));
                serde_json::json!({ "crv": "P-256", "kty": "EC", "x": B64.encode(x), "y": B64.encode(y) })
            }
        }
    }

    /// RFC 7638 JWK thumbprint: base64url(SHA-256(the required members, no whitespace)).
    pub fn thumbprint(&self) -> String {
        // serde_json keeps object keys sorted (no preserve_order feature), and the
        // required members are written in that order already.
        let canonical = self.required_members().to_string();
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes());
        B64.encode(digest.as_ref())
    }

    /// A fresh client assertion: `iss` = `sub` = client_id, `aud` = the token endpoint,
    /// a random `jti`, `iat` now, `exp` a minute on (RFC 7523 §3).
    pub fn assertion(&self, client_id: &str, audience: &str, now: u64) -> Result<String, String> {
        let mut jti = [0u8; 16];
        aws_lc_rs::rand::fill(&mut jti).map_err(|_| "random generator failed".to_string())?;
        let header = serde_json::json!({ "alg": self.alg(), "typ": "JWT", "kid": self.kid });
        let claims = serde_json::json!({
            "iss": client_id,
            "sub": client_id,
            "aud": audience,
            "jti": B64.encode(jti),
            "iat": now,
            "exp": now + ASSERTION_LIFETIME_SECS,
        });
        let signing_input = format!(
            "{}.{}",
            B64.encode(header.to_string()),
            B64.encode(claims.to_string())
        );
        let signature = self.sign(signing_input.as_bytes())?;
        Ok(format!("{signing_input}.{}", B64.encode(signature)))
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, String> {
        let rng = SystemRandom::new();
        match &self.signer {
            Signer::Rsa(k) => {
                let mut out = vec![0u8; k.public_modulus_len()];
                k.sign(&signature::RSA_PKCS1_SHA256, &rng, message, &mut out)
                    .map_err(|_| "RSA signing failed".to_string())?;
                Ok(out)
            }
            Signer::Ec(k) => k
                .sign(&rng, message)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| "ECDSA signing failed".to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::encoding::AsDer;
    use jsonwebtoken::{Algorithm, DecodingKey, Validation};

    fn pem(label: &str, der: &[u8]) -> String {
        let body = base64::engine::general_purpose::STANDARD.encode(der);
        let lines: Vec<&str> = body
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap_or(""))
            .collect();
        format!(
            "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
            lines.join("\n")
        )
    }

    fn verify(key: &ClientKey, token: &str) -> serde_json::Value {
        let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(key.public_jwk()).unwrap();
        let alg = if key.alg() == "RS256" {
            Algorithm::RS256
        } else {
            Algorithm::ES256
        };
        let mut v = Validation::new(alg);
        v.set_audience(&["https://idp.test/token"]);
        v.set_issuer(&["gw"]);
        let header = jsonwebtoken::decode_header(token).unwrap();
        assert_eq!(header.kid.as_deref(), Some(key.kid()));
        jsonwebtoken::decode::<serde_json::Value>(token, &DecodingKey::from_jwk(&jwk).unwrap(), &v)
            .unwrap()
            .claims
    }

    #[test]
    fn rsa_pkcs8_and_pkcs1_sign_verifiable_assertions() {
        let rsa = RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let pkcs8 = rsa.as_der().unwrap();
        let from_pkcs8 =
            ClientKey::from_pem(pem("PRIVATE KEY", pkcs8.as_ref()).as_bytes(), None).unwrap();
        assert_eq!(from_pkcs8.alg(), "RS256");
        let now = crate::clock::now();
        let claims = verify(
            &from_pkcs8,
            &from_pkcs8
                .assertion("gw", "https://idp.test/token", now)
                .unwrap(),
        );
        assert_eq!(claims["sub"], "gw");
        assert_eq!(claims["exp"].as_u64(), Some(now + ASSERTION_LIFETIME_SECS));
        assert!(claims["jti"].as_str().is_some_and(|j| j.len() >= 20));
        // The same key as PKCS#1 has the same thumbprint.
        let pkcs1 = pkcs1_of(pkcs8.as_ref());
        let from_pkcs1 =
            ClientKey::from_pem(pem("RSA PRIVATE KEY", &pkcs1).as_bytes(), None).unwrap();
        assert_eq!(from_pkcs1.kid(), from_pkcs8.kid());
        verify(
            &from_pkcs1,
            &from_pkcs1
                .assertion("gw", "https://idp.test/token", now)
                .unwrap(),
        );
    }

    /// PKCS#8 wraps the PKCS#1 `RSAPrivateKey` in an OCTET STRING at its end.
    fn pkcs1_of(pkcs8: &[u8]) -> Vec<u8> {
        // SEQUENCE { INTEGER 0, AlgorithmIdentifier, OCTET STRING { RSAPrivateKey } }
        let find = pkcs8.windows(2).rposition(|w| w == [0x04, 0x82]).unwrap();
        let len = u16::from_be_bytes([pkcs8[find + 2], pkcs8[find + 3]]) as usize;
        pkcs8[find + 4..find + 4 + len].to_vec()
    }

    #[test]
    fn ec_p256_signs_es256_and_ids_are_distinct() {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .unwrap();
        let key = ClientKey::from_pem(pem("PRIVATE KEY", pkcs8.as_ref()).as_bytes(), None).unwrap();
        assert_eq!(key.alg(), "ES256");
        let now = crate::clock::now();
        let a = key.assertion("gw", "https://idp.test/token", now).unwrap();
        let b = key.assertion("gw", "https://idp.test/token", now).unwrap();
        assert_ne!(verify(&key, &a)["jti"], verify(&key, &b)["jti"]);
        let named = ClientKey::from_pem(
            pem("PRIVATE KEY", pkcs8.as_ref()).as_bytes(),
            Some("k1".into()),
        )
        .unwrap();
        assert_eq!(named.kid(), "k1");
    }

    #[test]
    fn thumbprint_matches_rfc_7638_example() {
        // RFC 7638 §3.1: the example RSA key's thumbprint.
        let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
        let members = serde_json::json!({ "e": "AQAB", "kty": "RSA", "n": n }).to_string();
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, members.as_bytes());
        assert_eq!(
            B64.encode(digest.as_ref()),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn garbage_and_unsupported_keys_are_refused() {
        assert!(ClientKey::from_pem(b"not a key", None).is_err());
        let rng = SystemRandom::new();
        let p384 = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P384_SHA384_FIXED_SIGNING, &rng)
            .unwrap();
        let err =
            ClientKey::from_pem(pem("PRIVATE KEY", p384.as_ref()).as_bytes(), None).unwrap_err();
        assert!(err.contains("RS256 and ES256"), "{err}");
    }
}
