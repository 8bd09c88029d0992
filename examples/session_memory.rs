//! Memory cost of sessions in the in-process store: creates N real-sized sessions (a ~1 KB
//! JWT access token, a refresh token, a ~1 KB ID token) through the production `Sessions`
//! code and prints resident bytes per session. Run with `bench/sessions.sh`.

use std::sync::Arc;
use std::time::Duration;

#[path = "support/rss.rs"]
mod rss;
use rss::rss_bytes;

#[path = "support/fake_session.rs"]
mod fake_session;

use portcullis::clock::now;
use portcullis::config::{SessionConfig, StoreConfig};
use portcullis::secret::Secret;
use portcullis::session::crypto::Keyring;
use portcullis::session::memory::MemoryStore;
use portcullis::session::store::SessionStore;
use portcullis::session::Sessions;

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
        store: StoreConfig::Memory,
    };
    let store = Arc::new(MemoryStore::new(cfg.max_sessions));
    let sessions = Sessions::new(&cfg, Arc::new(Keyring::new(&cfg.secrets)), store.clone());

    let template_sizes = fake_session::token_sizes();
    let before = rss_bytes();
    for i in 0..count as u64 {
        if sessions
            .create(&fake_session::session(i, now()))
            .await
            .is_err()
        {
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
