//! Shared integration-test harness: real processes and real servers on loopback ports
//! chosen at run time (never fixed ports), every wait bounded.
//!
//! - [`gateway::Gateway`] spawns the `portcullis` binary with a config written to a
//!   tempdir and waits for `/healthz`; [`gateway::InProcessGateway`] serves the same config
//!   through the library on the test's runtime (no process, no log of its own).
//! - [`mock_idp::MockIdp`] is an in-process, fault-injectable OpenID Provider whose signing
//!   key the test holds; [`idp::Idp`] is the node test IdP (oidc-provider).
//! - [`upstream::EchoUpstream`] is an in-process hyper 1 server that reports what it
//!   received (JSON), serves slow and large responses, and echoes WebSocket messages.
//! - [`process`] spawns other child processes (the node test IdP) and waits for a
//!   readiness line on stdout.
//! - [`http`] has a reqwest client factory and a raw HTTP/1.1 client that sends the
//!   request-target byte for byte (reqwest/url would normalize `/a/../b` before sending).
//! - [`otlp::OtlpReceiver`] is an in-process OTLP/HTTP collector that decodes the spans
//!   the gateway exports.
//! - [`tls`] generates self-signed certificates with rcgen.
//! - [`redis`] starts real `redis-server` / `redis-sentinel` processes (standalone, a
//!   3-master cluster, a sentinel setup), kills and restarts them, dumps every key.
//!
//! Each test binary includes this module with `mod common;` and uses only part of it.
#![allow(dead_code)]

pub mod caddy;
pub mod chromium;
pub mod direct;
pub mod gateway;
pub mod http;
pub mod idp;
pub mod lifecycle;
pub mod login;
pub mod mock_idp;
pub mod nginx;
pub mod otlp;
pub mod process;
pub mod redis;
pub mod security;
pub mod security_h2;
pub mod security_issuer;
pub mod tls;
pub mod upstream;

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

#[allow(unused_imports)]
pub use gateway::{Gateway, GatewayAddr, GatewayBuilder, InProcessGateway};
#[allow(unused_imports)]
pub use http::{client, raw_request, RawResponse};
#[allow(unused_imports)]
pub use process::{spawn_and_wait_for_line, ChildProcess};
#[allow(unused_imports)]
pub use tls::SelfSignedCert;
#[allow(unused_imports)]
pub use upstream::{EchoUpstream, Echoed};

/// Path of the binary under test, built by cargo for integration tests.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_portcullis")
}

/// A loopback port that was free a moment ago (bind to port 0, read it, release it).
/// Prefer binding port 0 directly where the code under test allows it; the gateway
/// reads its port from a config file, so it needs this.
pub fn free_port() -> u16 {
    free_addr().port()
}

/// `127.0.0.1:<free port>`.
pub fn free_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr")
}

/// Polls `check` every 25 ms until it returns `Some`, or panics after `timeout` with a
/// message naming what was awaited.
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The deterministic byte pattern used for large bodies: byte `i` is `i % 251`.
/// (251 is prime, so chunk boundaries never line up with the pattern.)
pub fn pattern_bytes(offset: u64, len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|i| ((offset + i) % 251) as u8)
        .collect()
}

/// A stream of `total` pattern bytes in `chunk`-sized pieces, generated on the fly
/// (never held in memory as a whole).
pub fn pattern_stream(
    total: u64,
    chunk: usize,
) -> impl futures_util::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send + 'static {
    futures_util::stream::unfold(0u64, move |offset| async move {
        if offset >= total {
            return None;
        }
        let len = chunk.min((total - offset) as usize);
        let data = bytes::Bytes::from(pattern_bytes(offset, len));
        Some((Ok(data), offset + len as u64))
    })
}

/// Hex SHA-256 of `total` pattern bytes.
pub fn pattern_sha256(total: u64) -> String {
    let mut hasher = Sha256::new();
    let mut offset = 0u64;
    while offset < total {
        let len = (1 << 16).min((total - offset) as usize);
        hasher.update(&pattern_bytes(offset, len));
        offset += len as u64;
    }
    hasher.finish_hex()
}

/// Incremental SHA-256 (aws-lc-rs, already a dependency of the crate).
pub struct Sha256(aws_lc_rs::digest::Context);

impl Sha256 {
    pub fn new() -> Self {
        Sha256(aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256))
    }

    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    pub fn finish_hex(self) -> String {
        self.0
            .finish()
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

impl Default for Sha256 {
    fn default() -> Self {
        Self::new()
    }
}

/// Hex SHA-256 of a byte slice.
pub fn sha256_hex(data: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(data);
    hasher.finish_hex()
}

/// Resident-memory figures of a process, from `/proc/<pid>/status`, in KiB.
#[derive(Debug, Clone, Copy)]
pub struct Memory {
    /// Peak resident set size ("high water mark").
    pub hwm_kib: u64,
    /// Current resident set size.
    pub rss_kib: u64,
}

/// Reads `VmHWM` and `VmRSS` of `pid` (Linux only).
pub fn process_memory(pid: u32) -> Memory {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/status: {e}"));
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
    };
    Memory {
        hwm_kib: field("VmHWM:"),
        rss_kib: field("VmRSS:"),
    }
}
