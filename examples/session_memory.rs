//! Memory cost of sessions in the in-process store: creates N real-sized sessions (a ~1 KB
//! JWT access token, a refresh token, a ~1 KB ID token) through the production `Sessions`
//! code and prints resident bytes per session. Run with `bench/sessions.sh`.

use std::sync::Arc;
use std::time::Duration;

use portcullis::clock::now;
use portcullis::config::SessionConfig;
use portcullis::secret::Secret;
use portcullis::session::crypto::Keyring;
use portcullis::session::memory::MemoryStore;
use portcullis::session::store::SessionStore;
use portcullis::session::{Session, Sessions};

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// A base64url string of `len` pseudo-random characters (a stand-in for a signed JWT part).
fn b64(len: usize, seed: u64) -> String {
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
fn jwt(len: usize, seed: u64) -> String {
    let header = b64(100, seed);
    let signature = b64(342, seed + 1);
    let payload = b64(
        len.saturating_sub(header.len() + signature.len() + 2),
        seed + 2,
    );
    format!("{header}.{payload}.{signature}")
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let count: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000);
    let cfg = SessionConfig {
        secrets: vec![Secret::new("0123456789abcdef0123456789abcdef-bench")],
        cookie_secure: true,
        max_sessions: count as u64 * 2,
        idle_timeout: Duration::from_secs(8 * 3600),
        absolute_timeout: Duration::from_secs(24 * 3600),
        login_timeout: Duration::from_secs(600),
        refresh_before: Duration::from_secs(60),
        sign_out_requires_post: false,
    };
    let store = Arc::new(MemoryStore::new(cfg.max_sessions));
    let sessions = Sessions::new(&cfg, Arc::new(Keyring::new(&cfg.secrets)), store.clone());

    let template_sizes = (jwt(1024, 1).len(), jwt(1024, 2).len(), b64(43, 3).len());
    let before = rss_bytes();
    for i in 0..count as u64 {
        let t = now();
        let session = Session {
            sub: format!("user-{i:08}"),
            email: Some(format!("user-{i:08}@example.com")),
            name: Some(format!("User {i}")),
            groups: vec!["engineering".into(), "dashboards".into()],
            sid: Some(b64(22, i)),
            access_token: Secret::new(jwt(1024, i * 3)),
            access_expires_at: Some(t + 300),
            refresh_token: Some(Secret::new(b64(43, i * 3 + 1))),
            id_token: Some(Secret::new(jwt(1024, i * 3 + 2))),
            created_at: t,
            last_seen: t,
            claims: Default::default(),
            created_ms: t * 1000,
        };
        if sessions.create(&session).await.is_err() {
            eprintln!("session store refused session {i}");
            std::process::exit(1);
        }
    }
    // Let moka apply its pending writes so the count and memory are settled.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let held = store.entry_count().await.unwrap_or(0);
    let after = rss_bytes();
    let per_session = after.saturating_sub(before) as f64 / count as f64;
    println!("sessions created:        {count}");
    println!("sessions held by store:  {held}");
    println!(
        "token sizes (chars):     access {} / id {} / refresh {}",
        template_sizes.0, template_sizes.1, template_sizes.2
    );
    println!(
        "resident before / after: {:.1} MiB / {:.1} MiB",
        before as f64 / 1048576.0,
        after as f64 / 1048576.0
    );
    println!("resident bytes/session:  {per_session:.0} (goal <= 3072)");
}
