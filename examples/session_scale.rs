//! Session scale: the real gateway, built from a config file exactly as `portcullis run
//! --config` builds it (`Config::load`, `server::bind_workers`, `Gateway::new`,
//! `server::serve_workers`: `server.workers` serving threads), with its memory
//! store filled with N real-sized sessions (see `support/fake_session.rs`: a ~1 KB JWT
//! access token, a refresh token, a ~1 KB ID token) through the production
//! `Sessions::create`, which seals and stores exactly as a login does. Measures the
//! resident memory the fill added, writes each session's `Cookie` header value to a file
//! (one a line), then serves until killed. `bench/scale.sh` runs it and measures.
//!
//!     session_scale --config <gateway.toml> --cookies <file> [--count 1000000]
//!                   [--last-seen-ago SECONDS] [--fill-threads N]
//!
//! The sessions' access tokens expire an hour after the fill (never within
//! `session.refresh_before` during a run), so no request refreshes and no IdP is needed:
//! OIDC discovery runs in the background as always and may fail without effect on
//! logged-in requests. `--last-seen-ago S` backdates each session's login and last-seen
//! time by S seconds: with S >= 60 every session's first request in a run writes its
//! last-seen time back (the once-a-minute touch), as for users who were idle a minute.
//! The fill runs on `--fill-threads` OS threads at once (default: the CPUs this process may
//! run on), each creating a contiguous range of sessions, before the gateway serves.
//!
//! Standard output, one `key=value ...` line each, in this order:
//!
//!     sessions=N held=N fill_seconds=F fill_per_second=R fill_threads=T workers=W logged_in=U
//!     tokens access_chars=A id_chars=I refresh_chars=R
//!     sealed_bytes=S plain_bytes=P
//!     rss_before=B rss_after=B bytes_per_session=B
//!     cookies=<file> cookie_name=<name>
//!     listening=127.0.0.1:PORT
//!
//! (`logged_in`: the Unix time every session was logged in and last seen at; `rss_*` in
//! bytes, VmRSS of this process before and after the fill; `sealed_bytes` is the store's
//! value for the first session, `plain_bytes` what it opens to.)

#[path = "support/rss.rs"]
mod rss;
use rss::rss_bytes;

#[path = "support/fake_session.rs"]
mod fake_session;

use std::io::{Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use portcullis::clock::{now, UnixTime};
use portcullis::config::{CliOverrides, Config, StoreConfig};
use portcullis::gateway::Gateway;
use portcullis::session::crypto::{Keyring, SessionId};
use portcullis::session::Sessions;

/// Access tokens are valid this long after the fill: far beyond any run.
const ACCESS_TOKEN_LIFETIME: u64 = 3600;

struct Args {
    config: PathBuf,
    cookies: PathBuf,
    count: u64,
    last_seen_ago: u64,
    /// 0: as many as the CPUs this process may run on.
    fill_threads: usize,
}

fn args() -> Result<Args, String> {
    let (mut config, mut cookies) = (None, None);
    let (mut count, mut last_seen_ago, mut fill_threads) = (1_000_000, 0, 0);
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--config" => config = Some(PathBuf::from(value()?)),
            "--cookies" => cookies = Some(PathBuf::from(value()?)),
            "--count" => count = value()?.parse().map_err(|e| format!("--count: {e}"))?,
            "--last-seen-ago" => {
                last_seen_ago = value()?
                    .parse()
                    .map_err(|e| format!("--last-seen-ago: {e}"))?
            }
            "--fill-threads" => {
                fill_threads = value()?
                    .parse()
                    .map_err(|e| format!("--fill-threads: {e}"))?
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    let usage = "usage: session_scale --config <gateway.toml> --cookies <file> [--count N] [--last-seen-ago S] [--fill-threads N]";
    Ok(Args {
        config: config.ok_or(usage)?,
        cookies: cookies.ok_or(usage)?,
        count,
        last_seen_ago,
        fill_threads,
    })
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("session_scale: {message}");
    ExitCode::FAILURE
}

fn main() -> ExitCode {
    let args = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("session_scale: {e}");
            return ExitCode::from(2);
        }
    };
    // As `portcullis run` does: crypto provider, config, logging, and a current-thread
    // runtime for the background work (discovery, signals); the serving threads are
    // `server::serve_workers`'s, `server.workers` of them.
    portcullis::install_crypto_provider();
    let config = match Config::load(&args.config, &CliOverrides::default()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("session_scale: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    // Held to the end: the log writer is a background thread.
    let log = portcullis::telemetry::init(&config.log);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(format!("cannot start the runtime: {e}")),
    };
    let code = runtime.block_on(run(args, config));
    drop(runtime);
    drop(log);
    code
}

async fn run(args: Args, config: Config) -> ExitCode {
    match config.session.as_ref().map(|s| &s.store) {
        Some(StoreConfig::Memory) => {}
        Some(_) => return fail("the config's session.store is not \"memory\""),
        None => return fail("the config has no [session] (and [oidc]): nothing to fill"),
    }
    // Bound first (as `portcullis::run` binds), so a taken port fails before the fill.
    let server = &config.server;
    let listeners = match portcullis::server::bind_workers(server.listen, server.workers).await {
        Ok(l) => l,
        Err(e) => return fail(format!("cannot listen on {}: {e}", server.listen)),
    };
    let addr = listeners
        .first()
        .and_then(|l| l.local_addr().ok())
        .unwrap_or(server.listen);
    let gateway = Gateway::new(&config);
    let Some(sessions) = gateway.sessions() else {
        return fail("the gateway has no sessions (the config needs [oidc] and [session])");
    };

    let rss_before = rss_bytes();
    let started = Instant::now();
    let logged_in = now().saturating_sub(args.last_seen_ago);
    let threads = match args.fill_threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    if let Err(e) = fill(sessions, &args, threads, logged_in) {
        return fail(e);
    }
    let fill_seconds = started.elapsed().as_secs_f64();
    // Settles moka's pending inserts (and any evictions) before counting and measuring.
    let held = sessions.store().entry_count().await.unwrap_or(0);
    let rss_after = rss_bytes();
    let workers = server.workers;

    let first_cookie = std::fs::File::open(&args.cookies).ok().and_then(|f| {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(f), &mut line).ok()?;
        Some(line.trim_end().to_string())
    });
    let (sealed_bytes, plain_bytes) = match first_cookie.as_deref() {
        Some(cookie) => sealed_size(sessions, &config, cookie).await,
        None => (0, 0),
    };
    let (access, id, refresh) = fake_session::token_sizes();
    let per_session = rss_after.saturating_sub(rss_before) as f64 / args.count.max(1) as f64;
    println!(
        "sessions={} held={held} fill_seconds={fill_seconds:.1} fill_per_second={:.0} fill_threads={threads} workers={workers} logged_in={logged_in}",
        args.count,
        args.count as f64 / fill_seconds.max(1e-9)
    );
    println!("tokens access_chars={access} id_chars={id} refresh_chars={refresh}");
    println!("sealed_bytes={sealed_bytes} plain_bytes={plain_bytes}");
    println!("rss_before={rss_before} rss_after={rss_after} bytes_per_session={per_session:.0}");
    println!(
        "cookies={} cookie_name={}",
        args.cookies.display(),
        sessions.cookie_name()
    );
    if held < args.count {
        eprintln!(
            "session_scale: warning: the store holds {held} of {} sessions (raise session.max_sessions)",
            args.count
        );
    }
    println!("listening={addr}");
    let _ = std::io::stdout().flush();

    match portcullis::server::serve_workers(listeners, server, &gateway).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

/// Creates `args.count` sessions through `Sessions::create`, in `threads` contiguous
/// ranges at once (one OS thread each, driving the store's futures; nothing is serving
/// yet), and writes each one's `Cookie` header value to `args.cookies`,
/// session `i` on line `i`: the lines have one length, so each thread writes its own range
/// of the file.
fn fill(
    sessions: &Sessions,
    args: &Args,
    threads: usize,
    logged_in: UnixTime,
) -> Result<(), String> {
    let name = sessions.cookie_name();
    let line_len = (name.len() + 1 + 43 + 1) as u64; // name=<256-bit id, base64url>\n
    let file = |e: std::io::Error| format!("{}: {e}", args.cookies.display());
    std::fs::File::create(&args.cookies)
        .and_then(|f| f.set_len(args.count * line_len))
        .map_err(file)?;
    let t = now();
    let done = AtomicU64::new(0);
    let started = Instant::now();
    let handle = tokio::runtime::Handle::current();
    let per_thread = args.count.div_ceil(threads.max(1) as u64);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..args.count)
            .step_by(per_thread.max(1) as usize)
            .map(|from| {
                let to = (from + per_thread).min(args.count);
                let (handle, done) = (&handle, &done);
                scope.spawn(move || -> Result<(), String> {
                    let mut out = std::fs::OpenOptions::new()
                        .write(true)
                        .open(&args.cookies)
                        .map_err(file)?;
                    out.seek(SeekFrom::Start(from * line_len)).map_err(file)?;
                    let mut out = std::io::BufWriter::with_capacity(1 << 16, out);
                    for i in from..to {
                        let mut session = fake_session::session(i, logged_in);
                        session.access_expires_at = Some(t + ACCESS_TOKEN_LIFETIME);
                        let set_cookie = handle
                            .block_on(sessions.create(&session))
                            .map_err(|e| format!("the store refused session {i}: {e}"))?;
                        // A Set-Cookie value starts with the name=value pair a browser sends.
                        let pair = set_cookie
                            .to_str()
                            .ok()
                            .and_then(|v| v.split(';').next())
                            .unwrap_or("");
                        if pair.len() as u64 + 1 != line_len {
                            return Err(format!("unexpected session cookie {pair:?}"));
                        }
                        writeln!(out, "{pair}").map_err(file)?;
                        let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                        if n % 100_000 == 0 {
                            eprintln!(
                                "session_scale: {n} sessions in {:.1} s",
                                started.elapsed().as_secs_f64()
                            );
                        }
                    }
                    out.flush().map_err(file)
                })
            })
            .collect();
        workers.into_iter().try_for_each(|w| {
            w.join()
                .unwrap_or_else(|_| Err("a fill thread panicked".into()))
        })
    })
}

/// The size of one session as the store holds it (sealed) and as it opens (plain), read
/// back through the keys the gateway derives from `session.secret`.
async fn sealed_size(sessions: &Sessions, config: &Config, cookie: &str) -> (usize, usize) {
    let Some(cfg) = config.session.as_ref() else {
        return (0, 0);
    };
    let Some(id) = cookie
        .split_once('=')
        .and_then(|(_, v)| SessionId::from_cookie(v))
    else {
        return (0, 0);
    };
    let keyring = Keyring::new(&cfg.secrets);
    let Some(key) = keyring.store_key(0, &id) else {
        return (0, 0);
    };
    match sessions.store().get(&key).await.ok().flatten() {
        Some(sealed) => {
            let plain = keyring.open(0, &id, &sealed).map_or(0, |p| p.len());
            (sealed.len(), plain)
        }
        None => (0, 0),
    }
}
