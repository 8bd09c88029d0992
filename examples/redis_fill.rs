//! Fills the Redis session store with N real-sized sessions (see `support/fake_session.rs`)
//! through the gateway's own code: the config file a gateway runs with, the Redis store it
//! builds from it, and `Sessions::create`, which seals and writes exactly as a login does.
//! `bench/redis.sh` runs it, then reads Redis's memory figures.
//!
//!     redis_fill --config <gateway.toml> [--count 100000] [--concurrency 64]

#[path = "support/fake_session.rs"]
mod fake_session;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};
use portcullis::clock::now;
use portcullis::config::{CliOverrides, Config, RedisConfig, SessionConfig, StoreConfig};
use portcullis::session::crypto::Keyring;
use portcullis::session::store::SessionStore;
use portcullis::session::Sessions;

struct Args {
    config: PathBuf,
    count: u64,
    concurrency: usize,
}

fn args() -> Result<Args, String> {
    let mut config = None;
    let (mut count, mut concurrency) = (100_000, 64);
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--config" => config = Some(PathBuf::from(value()?)),
            "--count" => count = value()?.parse().map_err(|e| format!("--count: {e}"))?,
            "--concurrency" => {
                concurrency = value()?
                    .parse()
                    .map_err(|e| format!("--concurrency: {e}"))?
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    let config =
        config.ok_or("usage: redis_fill --config <gateway.toml> [--count N] [--concurrency N]")?;
    Ok(Args {
        config,
        count,
        concurrency: concurrency.max(1),
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = args().unwrap_or_else(|e| {
        eprintln!("redis_fill: {e}");
        std::process::exit(2)
    });
    portcullis::install_crypto_provider();
    let config = Config::load(&args.config, &CliOverrides::default()).unwrap_or_else(|e| {
        eprintln!("redis_fill: {}: {e}", args.config.display());
        std::process::exit(2)
    });
    let Some(cfg) = config.session.as_ref() else {
        eprintln!("redis_fill: the config has no [session]");
        std::process::exit(2)
    };
    let StoreConfig::Redis(redis) = &cfg.store else {
        eprintln!("redis_fill: the config's session.store is not \"redis\"");
        std::process::exit(2)
    };
    let store = open_store(cfg, redis, &config.server.upstream_ca).await;
    let sessions = Sessions::new(cfg, Arc::new(Keyring::new(&cfg.secrets)), store);

    let started = Instant::now();
    let t = now();
    let failed = stream::iter(0..args.count)
        .map(|i| {
            let sessions = &sessions;
            async move { sessions.create(&fake_session::session(i, t)).await.is_err() }
        })
        .buffer_unordered(args.concurrency)
        .filter(|failed| std::future::ready(*failed))
        .count()
        .await;
    let took = started.elapsed().as_secs_f64();
    let (access, id, refresh) = fake_session::token_sizes();
    println!(
        "sessions created:      {} of {} in {took:.1} s ({:.0}/s, {} at a time) under {}",
        args.count - failed as u64,
        args.count,
        args.count as f64 / took,
        args.concurrency,
        redis.key_prefix
    );
    println!("token sizes (chars):   access {access} / id {id} / refresh {refresh}");
    if failed > 0 {
        eprintln!("redis_fill: the store refused {failed} sessions");
        std::process::exit(1);
    }
}

/// The Redis store exactly as the gateway opens it (`auth::open_store`), once it answers
/// (it connects in the background).
async fn open_store(
    cfg: &SessionConfig,
    redis: &RedisConfig,
    ca: &[rustls_pki_types::CertificateDer<'static>],
) -> Arc<dyn SessionStore> {
    let store = portcullis::auth::open_store(cfg, ca);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match store.ping().await {
            Ok(()) => return store,
            Err(e) if Instant::now() > deadline => {
                eprintln!("redis_fill: Redis at {} does not answer: {e}", redis.url);
                std::process::exit(1)
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}
