//! Real-sized sessions for the memory benchmarks (session_memory.rs, redis_fill.rs): a ~1 KB JWT-shaped access token, a
//! refresh token, a ~1 KB ID token, two groups and a `sid`, the shape of a Keycloak or
//! Entra ID login. Pseudo-random but deterministic per index, so no two compress alike.

use portcullis::clock::UnixTime;
use portcullis::secret::Secret;
use portcullis::session::Session;

/// A base64url string of `len` pseudo-random characters (a stand-in for a signed JWT part).
pub fn b64(len: usize, seed: u64) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ALPHABET[(x % 64) as usize] as char
        })
        .collect()
}

/// JWT-shaped: header.payload.signature, about `len` characters in all (RS256 signature).
pub fn jwt(len: usize, seed: u64) -> String {
    let header = b64(100, seed);
    let signature = b64(342, seed + 1);
    let payload = b64(
        len.saturating_sub(header.len() + signature.len() + 2),
        seed + 2,
    );
    format!("{header}.{payload}.{signature}")
}

/// Session number `i`, logged in at `now`.
pub fn session(i: u64, now: UnixTime) -> Session {
    Session {
        sub: format!("user-{i:08}"),
        email: Some(format!("user-{i:08}@example.com")),
        name: Some(format!("User {i}")),
        groups: vec!["engineering".into(), "dashboards".into()],
        sid: Some(b64(22, i)),
        access_token: Secret::new(jwt(1024, i * 3)),
        access_expires_at: Some(now + 300),
        refresh_token: Some(Secret::new(b64(43, i * 3 + 1))),
        id_token: Some(Secret::new(jwt(1024, i * 3 + 2))),
        created_at: now,
        last_seen: now,
        claims: Default::default(),
        created_ms: now * 1000,
    }
}

/// The lengths of the tokens `session` makes: access, ID, refresh.
pub fn token_sizes() -> (usize, usize, usize) {
    (jwt(1024, 1).len(), jwt(1024, 2).len(), b64(43, 3).len())
}
