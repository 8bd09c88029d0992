//! Session crypto (ARCHITECTURE.md "Sessions"): the store key is HMAC-SHA256(secret, id) and the
//! value is AES-256-GCM sealed under HKDF-SHA256(secret, id). A dump of the store alone
//! reveals no token and holds nothing that works as a cookie. A list of secrets rotates:
//! the first seals, all open.

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use aws_lc_rs::{hkdf, hmac, rand};

use crate::secret::Secret;

/// Length of a session id in bytes (256 bits).
pub const ID_LEN: usize = 32;

/// The random part of the cookie. Never logged; compared only through the store lookup.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionId([u8; ID_LEN]);

impl std::fmt::Debug for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionId([redacted])")
    }
}

impl SessionId {
    pub fn random() -> Result<Self, aws_lc_rs::error::Unspecified> {
        let mut b = [0u8; ID_LEN];
        rand::fill(&mut b)?;
        Ok(SessionId(b))
    }

    /// Parses the cookie value (unpadded base64url of 32 bytes); anything else is `None`.
    pub fn from_cookie(value: &str) -> Option<Self> {
        use base64::Engine;
        if value.len() != 43 {
            return None;
        }
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(value)
            .ok()?;
        bytes.try_into().ok().map(SessionId)
    }

    pub fn to_cookie(&self) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.0)
    }
}

/// The key under which a session is stored; derived, so the store never sees the id.
pub type StoreKey = [u8; 32];

/// Hashes a `StoreKey` for the in-process maps by taking 8 of its bytes: the key is
/// already an HMAC output under the session secret, uniform and unpredictable to anyone
/// without the secret, so hashing it again (SipHash, on every request) buys nothing, and
/// no client can aim keys at one bucket.
#[derive(Clone, Copy, Default)]
pub struct StoreKeyHasher;

impl std::hash::BuildHasher for StoreKeyHasher {
    type Hasher = StoreKeyHash;
    fn build_hasher(&self) -> StoreKeyHash {
        StoreKeyHash(0)
    }
}

/// See `StoreKeyHasher`.
pub struct StoreKeyHash(u64);

impl std::hash::Hasher for StoreKeyHash {
    fn write(&mut self, bytes: &[u8]) {
        // A `[u8; 32]` arrives whole in one write; anything else is folded in.
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(29) ^ u64::from_le_bytes(word);
        }
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

struct SecretKeys {
    hmac: hmac::Key,
    hkdf: hkdf::Prk,
    /// For `tag`: derived, so a tag never equals a store key or a form token.
    tag: hmac::Key,
}

/// Keys derived from `session.secret` (first seals, all open).
pub struct Keyring {
    keys: Vec<SecretKeys>,
}

const HKDF_SALT: &[u8] = b"portcullis session v1";

struct Len32;
impl hkdf::KeyType for Len32 {
    fn len(&self) -> usize {
        32
    }
}

impl Keyring {
    pub fn new(secrets: &[Secret]) -> Self {
        let salt = hkdf::Salt::new(hkdf::HKDF_SHA256, HKDF_SALT);
        let keys = secrets
            .iter()
            .map(|s| {
                let hkdf = salt.extract(s.expose().as_bytes());
                let mut tag_key = [0u8; 32];
                let filled = hkdf
                    .expand(&[b"store tag".as_slice()], Len32)
                    .and_then(|okm| okm.fill(&mut tag_key));
                if filled.is_err() {
                    // HKDF-SHA256 always yields 32 bytes; never reached.
                    tag_key = [0; 32];
                }
                SecretKeys {
                    hmac: hmac::Key::new(hmac::HMAC_SHA256, s.expose().as_bytes()),
                    hkdf,
                    tag: hmac::Key::new(hmac::HMAC_SHA256, &tag_key),
                }
            })
            .collect();
        Keyring { keys }
    }

    /// How many secrets there are; `store_key(i, ..)` and `open(i, ..)` take `i < len()`.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn store_key(&self, secret_index: usize, id: &SessionId) -> Option<StoreKey> {
        let k = self.keys.get(secret_index)?;
        let tag = hmac::sign(&k.hmac, &id.0);
        tag.as_ref().try_into().ok()
    }

    /// A keyed hash of `value` for `purpose` (`state`, `jti`, `sub`, `sid`), hex: how the
    /// store names a consumed login `state` or a logout marker without holding the value.
    pub fn tag(&self, secret_index: usize, purpose: &str, value: &str) -> Option<String> {
        let k = self.keys.get(secret_index)?;
        let mut ctx = hmac::Context::with_key(&k.tag);
        ctx.update(purpose.as_bytes());
        ctx.update(&[0]);
        ctx.update(value.as_bytes());
        Some(hex(ctx.sign().as_ref()))
    }

    /// A token bound to one session for forms that act on it (the sign-out
    /// confirmation): HMAC under a key derived for that purpose, base64url. Only the
    /// session's holder sees it, on a page served to them.
    pub fn form_token(&self, secret_index: usize, id: &SessionId) -> Option<String> {
        let mut key = [0u8; 32];
        self.derive(secret_index, b"form token", &mut key)?;
        let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &key), &id.0);
        Some(base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            tag.as_ref(),
        ))
    }

    /// Derives key material for another purpose (e.g. the login cookie) from secret `i`.
    pub fn derive(&self, secret_index: usize, info: &[u8], out: &mut [u8]) -> Option<()> {
        let k = self.keys.get(secret_index)?;
        struct Len(usize);
        impl hkdf::KeyType for Len {
            fn len(&self) -> usize {
                self.0
            }
        }
        let infos = [info];
        let okm = k.hkdf.expand(&infos, Len(out.len())).ok()?;
        okm.fill(out).ok()
    }

    fn aead_key(&self, secret_index: usize, id: &SessionId) -> Option<LessSafeKey> {
        let mut key = [0u8; 32];
        let k = self.keys.get(secret_index)?;
        let infos: [&[u8]; 2] = [b"seal:", &id.0];
        k.hkdf.expand(&infos, Len32).ok()?.fill(&mut key).ok()?;
        UnboundKey::new(&AES_256_GCM, &key)
            .ok()
            .map(LessSafeKey::new)
    }

    /// Seals with the first secret: random nonce || ciphertext || tag. The key is unique per
    /// session id, so random nonces never repeat under one key in practice.
    pub fn seal(&self, id: &SessionId, plaintext: &[u8]) -> Option<Vec<u8>> {
        let key = self.aead_key(0, id)?;
        let mut nonce = [0u8; NONCE_LEN];
        rand::fill(&mut nonce).ok()?;
        let mut out = Vec::with_capacity(NONCE_LEN + plaintext.len() + AES_256_GCM.tag_len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let tag = key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(b"session"),
                &mut out[NONCE_LEN..],
            )
            .ok()?;
        out.extend_from_slice(tag.as_ref());
        Some(out)
    }

    /// Opens a value sealed under secret `secret_index`; `None` if it was tampered with.
    pub fn open(&self, secret_index: usize, id: &SessionId, sealed: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return None;
        }
        let key = self.aead_key(secret_index, id)?;
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buf = rest.to_vec();
        let plain = key
            .open_in_place(nonce, Aad::from(b"session"), &mut buf)
            .ok()?;
        let len = plain.len();
        buf.truncate(len);
        Some(buf)
    }
}

/// Lower-case hex of `bytes` (store keys and tags in Redis key names).
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 15) as usize] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(secrets: &[&str]) -> Keyring {
        Keyring::new(&secrets.iter().map(|s| Secret::new(*s)).collect::<Vec<_>>())
    }

    const A: &str = "0123456789abcdef0123456789abcdef";
    const B: &str = "fedcba9876543210fedcba9876543210";

    #[test]
    fn seal_open_round_trip() {
        let k = ring(&[A]);
        let id = SessionId::random().unwrap();
        let sealed = k.seal(&id, b"hello").unwrap();
        assert!(!sealed.windows(5).any(|w| w == b"hello"));
        assert_eq!(k.open(0, &id, &sealed).unwrap(), b"hello");
    }

    #[test]
    fn tampering_or_wrong_id_fails() {
        let k = ring(&[A]);
        let id = SessionId::random().unwrap();
        let mut sealed = k.seal(&id, b"hello").unwrap();
        let other = SessionId::random().unwrap();
        assert!(k.open(0, &other, &sealed).is_none());
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        assert!(k.open(0, &id, &sealed).is_none());
    }

    #[test]
    fn rotated_secret_still_opens() {
        let old = ring(&[A]);
        let id = SessionId::random().unwrap();
        let sealed = old.seal(&id, b"x").unwrap();
        let rotated = ring(&[B, A]);
        assert!(rotated.open(0, &id, &sealed).is_none());
        assert_eq!(rotated.open(1, &id, &sealed).unwrap(), b"x");
        assert_eq!(rotated.store_key(1, &id), old.store_key(0, &id));
        assert_ne!(rotated.store_key(0, &id), old.store_key(0, &id));
    }

    #[test]
    fn tags_are_keyed_per_secret_and_purpose() {
        let k = ring(&[A, B]);
        let t = k.tag(0, "sub", "alice").unwrap();
        assert_eq!(t.len(), 64);
        assert!(!t.contains("alice"));
        assert_eq!(Some(t.clone()), k.tag(0, "sub", "alice"));
        assert_ne!(Some(t.clone()), k.tag(1, "sub", "alice"));
        assert_ne!(Some(t), k.tag(0, "sid", "alice"));
        assert_eq!(hex(&[0, 0xab, 0x7f]), "00ab7f");
    }

    #[test]
    fn cookie_encoding_round_trips_and_rejects_junk() {
        let id = SessionId::random().unwrap();
        assert_eq!(SessionId::from_cookie(&id.to_cookie()), Some(id));
        assert_eq!(SessionId::from_cookie("short"), None);
        assert_eq!(SessionId::from_cookie(&"!".repeat(43)), None);
    }

    #[test]
    fn store_key_hash_spreads_real_keys() {
        use std::hash::BuildHasher;
        let keyring = Keyring::new(&[Secret::new("k".repeat(32))]);
        let mut hashes = std::collections::HashSet::new();
        for _ in 0..1000 {
            let id = SessionId::random().unwrap();
            let key = keyring.store_key(0, &id).unwrap();
            hashes.insert(StoreKeyHasher.hash_one(key));
        }
        // 1000 HMAC outputs: 64-bit hashes taken from them do not collide.
        assert_eq!(hashes.len(), 1000);
        assert_ne!(
            StoreKeyHasher.hash_one([0u8; 32]),
            StoreKeyHasher.hash_one([1u8; 32])
        );
    }
}
