//! Real Redis for the session-store tests (issue 13): Debian's `redis-server` and
//! `redis-sentinel` started by the test on loopback ports picked at run time, each in a
//! tempdir of its own, killed (SIGKILL) on drop.
//!
//! - [`RedisServer`]: one standalone server (`appendonly yes`, `appendfsync always`, so a
//!   SIGKILL loses no acknowledged write), which a test can [`RedisServer::kill`] and
//!   [`RedisServer::restart`] on the same port with the same data;
//!   [`RedisServer::dump`] reads every key with its type, value and TTL.
//! - [`RedisCluster`]: three masters with `cluster-enabled yes`, joined with
//!   `redis-cli --cluster create ... --cluster-replicas 0 --cluster-yes`, ready once every
//!   node reports `cluster_state:ok`.
//! - [`RedisSentinel`]: a master, a replica and one `redis-sentinel` watching them
//!   (quorum 1); [`RedisSentinel::failover`] runs `SENTINEL FAILOVER` and waits until the
//!   replica is the master.
//!
//! The tests talk to Redis with [`Resp`], a few lines of RESP2 over a `TcpStream` (no
//! client library: the gateway's own `redis` crate is what is under test).
//!
//! The gateway's `[session]` lines for each setup: [`RedisServer::store_toml`],
//! [`RedisCluster::store_toml`], [`RedisSentinel::store_toml`]. [`Fleet`] runs the node
//! test IdP and several gateway replicas on one store (in-process, or as processes for
//! restarts and SIGHUP), each replica in front of its own echo upstream so the echo says
//! which replica forwarded; [`mock_fleet`] does the same in front of a [`MockIdp`].

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::gateway::{try_start_gateway, wait_for_readyz, GatewayAddr, GatewayListener};
use super::idp::{Idp, IdpBuilder};
use super::login::{random_hex, Browser, Hop, IdpStep, StartedLogin, SESSION_COOKIE};
use super::mock_idp::MockIdp;
use super::{free_port, wait_until, EchoUpstream, Gateway, InProcessGateway};

/// How long a Redis process may take to answer `PING` after it was spawned.
const START_TIMEOUT: Duration = Duration::from_secs(15);

// ----- RESP ---------------------------------------------------------------------------------

/// A RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// A bulk or simple string as text (lossy); panics on anything else.
    pub fn text(&self) -> String {
        match self {
            Reply::Simple(s) => s.clone(),
            Reply::Bulk(Some(b)) => String::from_utf8_lossy(b).into_owned(),
            other => panic!("expected a string reply, got {other:?}"),
        }
    }

    pub fn bytes(&self) -> Vec<u8> {
        match self {
            Reply::Simple(s) => s.as_bytes().to_vec(),
            Reply::Bulk(Some(b)) => b.clone(),
            Reply::Bulk(None) => Vec::new(),
            other => panic!("expected a string reply, got {other:?}"),
        }
    }

    pub fn int(&self) -> i64 {
        match self {
            Reply::Int(n) => *n,
            other => panic!("expected an integer reply, got {other:?}"),
        }
    }

    pub fn array(&self) -> Vec<Reply> {
        match self {
            Reply::Array(Some(items)) => items.clone(),
            Reply::Array(None) => Vec::new(),
            other => panic!("expected an array reply, got {other:?}"),
        }
    }

    pub fn is_error(&self) -> bool {
        matches!(self, Reply::Error(_))
    }
}

/// One RESP2 connection to `127.0.0.1:<port>`.
pub struct Resp {
    stream: BufReader<TcpStream>,
}

impl Resp {
    pub async fn connect(port: u16) -> std::io::Result<Resp> {
        let tcp = tokio::time::timeout(
            Duration::from_secs(2),
            TcpStream::connect(("127.0.0.1", port)),
        )
        .await
        .map_err(|_| std::io::Error::other("connect timed out"))??;
        Ok(Resp {
            stream: BufReader::new(tcp),
        })
    }

    /// Sends one command and reads its reply (bounded: 10 s).
    pub async fn cmd<A: AsRef<[u8]>>(&mut self, args: &[A]) -> std::io::Result<Reply> {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            let arg = arg.as_ref();
            out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            out.extend_from_slice(arg);
            out.extend_from_slice(b"\r\n");
        }
        self.stream.get_mut().write_all(&out).await?;
        tokio::time::timeout(Duration::from_secs(10), read_reply(&mut self.stream))
            .await
            .map_err(|_| std::io::Error::other("no reply within 10 s"))?
    }
}

fn read_reply(
    stream: &mut BufReader<TcpStream>,
) -> futures_util::future::BoxFuture<'_, std::io::Result<Reply>> {
    Box::pin(async move {
        let mut line = Vec::new();
        stream.read_until(b'\n', &mut line).await?;
        if line.len() < 3 || !line.ends_with(b"\r\n") {
            return Err(std::io::Error::other(format!(
                "bad RESP line {:?}",
                String::from_utf8_lossy(&line)
            )));
        }
        let text = String::from_utf8_lossy(&line[1..line.len() - 2]).into_owned();
        let number = || {
            text.parse::<i64>()
                .map_err(|_| std::io::Error::other(format!("bad RESP length {text:?}")))
        };
        Ok(match line[0] {
            b'+' => Reply::Simple(text),
            b'-' => Reply::Error(text),
            b':' => Reply::Int(number()?),
            b'$' => {
                let n = number()?;
                if n < 0 {
                    Reply::Bulk(None)
                } else {
                    let mut data = vec![0u8; n as usize + 2];
                    stream.read_exact(&mut data).await?;
                    data.truncate(n as usize);
                    Reply::Bulk(Some(data))
                }
            }
            b'*' => {
                let n = number()?;
                if n < 0 {
                    Reply::Array(None)
                } else {
                    let mut items = Vec::with_capacity(n as usize);
                    for _ in 0..n {
                        items.push(read_reply(stream).await?);
                    }
                    Reply::Array(Some(items))
                }
            }
            other => {
                return Err(std::io::Error::other(format!(
                    "unknown RESP type byte {other:#x}"
                )))
            }
        })
    })
}

/// One command on a fresh connection to `port`; panics if Redis does not answer.
pub async fn command<A: AsRef<[u8]>>(port: u16, args: &[A]) -> Reply {
    let mut conn = Resp::connect(port)
        .await
        .unwrap_or_else(|e| panic!("connect to Redis on {port}: {e}"));
    conn.cmd(args)
        .await
        .unwrap_or_else(|e| panic!("Redis on {port}: {e}"))
}

/// `INFO <section>` as `field → value`.
pub async fn info(port: u16, section: &str) -> Vec<(String, String)> {
    let text = command(port, &["INFO", section]).await.text();
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// One field of `INFO <section>`.
pub async fn info_field(port: u16, section: &str, field: &str) -> Option<String> {
    info(port, section)
        .await
        .into_iter()
        .find(|(k, _)| k == field)
        .map(|(_, v)| v)
}

// ----- a dump of every key ---------------------------------------------------------------

/// One key as stored.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The node it was read from.
    pub port: u16,
    pub key: Vec<u8>,
    /// `TYPE`: string, hash, set, list, zset, stream.
    pub kind: String,
    /// The value's bytes; for aggregates, every field and member joined by `\n`.
    pub value: Vec<u8>,
    /// `PTTL`: milliseconds left, `-1` without expiry.
    pub pttl_ms: i64,
}

impl Entry {
    pub fn key_text(&self) -> String {
        String::from_utf8_lossy(&self.key).into_owned()
    }
}

/// Every key of one or more nodes.
#[derive(Debug, Clone, Default)]
pub struct Dump {
    pub entries: Vec<Entry>,
}

impl Dump {
    /// Reads every key of the node on `port` (`SCAN` to the end, then `TYPE`, the value
    /// and `PTTL` of each).
    pub async fn read(port: u16) -> Dump {
        let mut conn = Resp::connect(port)
            .await
            .unwrap_or_else(|e| panic!("connect to Redis on {port}: {e}"));
        let mut keys: Vec<Vec<u8>> = Vec::new();
        let mut cursor = "0".to_string();
        loop {
            let reply = conn
                .cmd(&["SCAN", &cursor, "COUNT", "1000"])
                .await
                .expect("SCAN");
            let parts = reply.array();
            cursor = parts[0].text();
            keys.extend(parts[1].array().iter().map(Reply::bytes));
            if cursor == "0" {
                break;
            }
        }
        keys.sort();
        keys.dedup();
        let mut entries = Vec::new();
        for key in keys {
            let kind = conn
                .cmd(&[b"TYPE".as_slice(), &key])
                .await
                .expect("TYPE")
                .text();
            let fetch: Vec<&[u8]> = match kind.as_str() {
                "string" => vec![b"GET", &key],
                "hash" => vec![b"HGETALL", &key],
                "set" => vec![b"SMEMBERS", &key],
                "list" => vec![b"LRANGE", &key, b"0", b"-1"],
                "zset" => vec![b"ZRANGE", &key, b"0", b"-1", b"WITHSCORES"],
                "stream" => vec![b"XRANGE", &key, b"-", b"+"],
                // Expired between SCAN and TYPE.
                "none" => continue,
                other => panic!("unexpected Redis type {other}"),
            };
            let reply = conn.cmd(&fetch).await.expect("read value");
            let value = flatten(&reply);
            let pttl_ms = conn
                .cmd(&[b"PTTL".as_slice(), &key])
                .await
                .expect("PTTL")
                .int();
            entries.push(Entry {
                port,
                key,
                kind,
                value,
                pttl_ms,
            });
        }
        Dump { entries }
    }

    /// The dumps of several nodes together.
    pub async fn read_all(ports: &[u16]) -> Dump {
        let mut all = Dump::default();
        for &port in ports {
            all.entries.extend(Dump::read(port).await.entries);
        }
        all
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Keys (as text) that start with `prefix`.
    pub fn keys_with_prefix(&self, prefix: &str) -> Vec<String> {
        self.entries
            .iter()
            .map(Entry::key_text)
            .filter(|k| k.starts_with(prefix))
            .collect()
    }

    /// Entries whose key or value contains `needle` (case-sensitive bytes): one line per
    /// hit, naming the key and where.
    pub fn containing(&self, needle: &[u8]) -> Vec<String> {
        assert!(!needle.is_empty(), "searching a dump for the empty string");
        let mut hits = Vec::new();
        for entry in &self.entries {
            if contains(&entry.key, needle) {
                hits.push(format!("key {}", entry.key_text()));
            }
            if contains(&entry.value, needle) {
                hits.push(format!("value of {}", entry.key_text()));
            }
        }
        hits
    }

    /// A readable listing (keys, types, TTLs, value sizes) for assertion messages.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        for e in &self.entries {
            out.push_str(&format!(
                "  [{}] {} ({}, {} bytes, pttl {} ms)\n",
                e.port,
                e.key_text(),
                e.kind,
                e.value.len(),
                e.pttl_ms
            ));
        }
        if out.is_empty() {
            out.push_str("  (no keys)\n");
        }
        out
    }
}

fn flatten(reply: &Reply) -> Vec<u8> {
    match reply {
        Reply::Simple(s) | Reply::Error(s) => s.as_bytes().to_vec(),
        Reply::Int(n) => n.to_string().into_bytes(),
        Reply::Bulk(b) => b.clone().unwrap_or_default(),
        Reply::Array(items) => {
            let parts: Vec<Vec<u8>> = items.iter().flatten().map(flatten).collect();
            parts.join(&b'\n')
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

// ----- one server --------------------------------------------------------------------------

/// A `redis-server` on `127.0.0.1:<port>` in a tempdir of its own. Killed on drop (its log
/// is printed if the test is panicking).
pub struct RedisServer {
    port: u16,
    dir: TempDir,
    /// Config lines after the harness's own.
    extra: Vec<String>,
    child: Option<Child>,
}

impl RedisServer {
    /// A standalone server with `appendonly yes`.
    pub async fn start() -> RedisServer {
        Self::start_with(&[]).await
    }

    /// With extra `redis.conf` lines (`{dir}` in them is replaced by the data dir).
    pub async fn start_with(extra: &[&str]) -> RedisServer {
        let mut last = String::new();
        for _ in 0..3 {
            let dir = tempfile::tempdir().expect("tempdir for Redis");
            let extra = extra
                .iter()
                .map(|l| l.replace("{dir}", &dir.path().display().to_string()))
                .collect();
            let mut server = RedisServer {
                port: free_port(),
                dir,
                extra,
                child: None,
            };
            match server.spawn().await {
                Ok(()) => return server,
                Err(why) => last = why,
            }
        }
        panic!("redis-server did not start (three ports tried): {last}");
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// The data dir (AOF, `redis.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The `[session]` lines of a gateway on this server (`store = "redis"`,
    /// `redis_url`), plus `extra` (e.g. `redis_key_prefix = "..."`).
    pub fn store_toml(&self, extra: &str) -> String {
        format!("store = \"redis\"\nredis_url = \"{}\"\n{extra}", self.url())
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    /// Everything the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn config(&self) -> String {
        let mut lines = vec![
            format!("port {}", self.port),
            "bind 127.0.0.1".to_string(),
            "protected-mode yes".to_string(),
            "daemonize no".to_string(),
            format!("dir {}", self.dir.path().display()),
            format!("logfile {}", self.log_path().display()),
            "appendonly yes".to_string(),
            // Every acknowledged write is on disk before a SIGKILL can take it away.
            "appendfsync always".to_string(),
            "save \"\"".to_string(),
        ];
        lines.extend(self.extra.iter().cloned());
        lines.join("\n") + "\n"
    }

    async fn spawn(&mut self) -> Result<(), String> {
        let conf = self.dir.path().join("redis.conf");
        std::fs::write(&conf, self.config()).expect("write redis.conf");
        let child = Command::new("redis-server")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                format!("spawn redis-server: {e} (is the redis-server package installed?)")
            })?;
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().expect("try_wait") {
                self.child = None;
                return Err(format!(
                    "redis-server exited with {status}; log:\n{}",
                    self.log()
                ));
            }
            if let Ok(mut conn) = Resp::connect(self.port).await {
                if let Ok(Reply::Simple(pong)) = conn.cmd(&["PING"]).await {
                    if pong == "PONG" {
                        return Ok(());
                    }
                }
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(format!(
                    "no PONG within {START_TIMEOUT:?}; log:\n{}",
                    self.log()
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL (no shutdown, no final save) and waits for the process to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port with the same data dir (the AOF brings
    /// every key back). Retries a few times if the port is briefly still taken.
    pub async fn restart(&mut self) {
        self.kill();
        let mut last = String::new();
        for _ in 0..10 {
            match self.spawn().await {
                Ok(()) => return,
                Err(why) => last = why,
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("redis-server did not restart on port {}: {last}", self.port);
    }

    /// Every key, its type, value and TTL.
    pub async fn dump(&self) -> Dump {
        Dump::read(self.port).await
    }

    /// One command; panics if the server does not answer.
    pub async fn cmd<A: AsRef<[u8]>>(&self, args: &[A]) -> Reply {
        command(self.port, args).await
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "----- redis-server log (port {}) -----\n{}\n-----",
                self.port,
                self.log()
            );
        }
    }
}

// ----- cluster ---------------------------------------------------------------------------

/// Three masters (`cluster-enabled yes`, no replicas) joined into one cluster.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub async fn start() -> RedisCluster {
        let mut nodes = Vec::new();
        for _ in 0..3 {
            let bus = free_port();
            nodes.push(
                RedisServer::start_with(&[
                    "cluster-enabled yes",
                    "cluster-config-file {dir}/nodes.conf",
                    "cluster-node-timeout 5000",
                    // The bus port is port+10000 by default, which nobody checked is free.
                    &format!("cluster-port {bus}"),
                ])
                .await,
            );
        }
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        let output = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed: {}\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let cluster = RedisCluster { nodes };
        for node in &cluster.nodes {
            let port = node.port();
            wait_until(
                &format!("cluster_state:ok on node {port}"),
                Duration::from_secs(30),
                || async move {
                    let text = command(port, &["CLUSTER", "INFO"]).await.text();
                    text.contains("cluster_state:ok").then_some(())
                },
            )
            .await;
        }
        cluster
    }

    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(RedisServer::port).collect()
    }

    /// `store = "redis"`, `redis_mode = "cluster"` and every node as a seed in
    /// `redis_urls`, plus `extra`.
    pub fn store_toml(&self, extra: &str) -> String {
        let urls: Vec<String> = self
            .ports()
            .iter()
            .map(|p| format!("\"redis://127.0.0.1:{p}\""))
            .collect();
        format!(
            "store = \"redis\"\nredis_mode = \"cluster\"\nredis_urls = [{}]\n{extra}",
            urls.join(", ")
        )
    }

    /// Every key of every master.
    pub async fn dump(&self) -> Dump {
        Dump::read_all(&self.ports()).await
    }
}

// ----- sentinel --------------------------------------------------------------------------

/// The master name the sentinel monitors.
pub const SENTINEL_MASTER: &str = "portcullis-test";

/// A master, its replica and one sentinel watching them (quorum 1).
pub struct RedisSentinel {
    /// `[0]` starts as the master, `[1]` as its replica.
    pub servers: Vec<RedisServer>,
    sentinel_port: u16,
    sentinel_dir: TempDir,
    sentinel: Option<Child>,
}

impl RedisSentinel {
    pub async fn start() -> RedisSentinel {
        let master = RedisServer::start().await;
        let replica =
            RedisServer::start_with(&[&format!("replicaof 127.0.0.1 {}", master.port())]).await;
        let replica_port = replica.port();
        wait_until(
            "the replica to sync with the master",
            Duration::from_secs(20),
            || async move {
                (info_field(replica_port, "replication", "master_link_status")
                    .await
                    .as_deref()
                    == Some("up"))
                .then_some(())
            },
        )
        .await;

        let sentinel_dir = tempfile::tempdir().expect("tempdir for redis-sentinel");
        let mut this = RedisSentinel {
            servers: vec![master, replica],
            sentinel_port: 0,
            sentinel_dir,
            sentinel: None,
        };
        let mut last = String::new();
        for _ in 0..3 {
            this.sentinel_port = free_port();
            match this.spawn_sentinel().await {
                Ok(()) => break,
                Err(why) => last = why,
            }
        }
        assert!(
            this.sentinel.is_some(),
            "redis-sentinel did not start: {last}"
        );
        // The sentinel learns of the replica from the master's INFO.
        let port = this.sentinel_port;
        wait_until(
            "the sentinel to discover the replica",
            Duration::from_secs(30),
            || async move {
                let reply = command(port, &["SENTINEL", "REPLICAS", SENTINEL_MASTER]).await;
                (!reply.is_error() && !reply.array().is_empty()).then_some(())
            },
        )
        .await;
        this
    }

    fn sentinel_log(&self) -> String {
        std::fs::read_to_string(self.sentinel_dir.path().join("sentinel.log")).unwrap_or_default()
    }

    async fn spawn_sentinel(&mut self) -> Result<(), String> {
        let dir = self.sentinel_dir.path();
        let conf = dir.join("sentinel.conf");
        let text = format!(
            "port {port}\nbind 127.0.0.1\ndaemonize no\ndir {dir}\nlogfile {dir}/sentinel.log\n\
             sentinel monitor {name} 127.0.0.1 {master} 1\n\
             sentinel down-after-milliseconds {name} 2000\n\
             sentinel failover-timeout {name} 10000\n\
             sentinel parallel-syncs {name} 1\n",
            port = self.sentinel_port,
            dir = dir.display(),
            name = SENTINEL_MASTER,
            master = self.servers[0].port(),
        );
        std::fs::write(&conf, text).expect("write sentinel.conf");
        let child = Command::new("redis-sentinel")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                format!("spawn redis-sentinel: {e} (is the redis-sentinel package installed?)")
            })?;
        self.sentinel = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self
                .sentinel
                .as_mut()
                .unwrap()
                .try_wait()
                .expect("try_wait")
            {
                self.sentinel = None;
                return Err(format!(
                    "redis-sentinel exited with {status}; log:\n{}",
                    self.sentinel_log()
                ));
            }
            if let Ok(mut conn) = Resp::connect(self.sentinel_port).await {
                if let Ok(Reply::Simple(pong)) = conn.cmd(&["PING"]).await {
                    if pong == "PONG" {
                        return Ok(());
                    }
                }
            }
            if Instant::now() >= deadline {
                if let Some(mut child) = self.sentinel.take() {
                    let _ = child.kill();
                    let _ = child.wait();
                }
                return Err(format!(
                    "no PONG from the sentinel; log:\n{}",
                    self.sentinel_log()
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn sentinel_port(&self) -> u16 {
        self.sentinel_port
    }

    /// `store = "redis"`, `redis_mode = "sentinel"`, the sentinel in `redis_urls` and
    /// `redis_sentinel_master`, plus `extra`.
    pub fn store_toml(&self, extra: &str) -> String {
        format!(
            "store = \"redis\"\nredis_mode = \"sentinel\"\nredis_urls = [\"redis://127.0.0.1:{}\"]\nredis_sentinel_master = \"{SENTINEL_MASTER}\"\n{extra}",
            self.sentinel_port
        )
    }

    /// The port the sentinel names as the master now.
    pub async fn master_port(&self) -> u16 {
        let reply = command(
            self.sentinel_port,
            &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", SENTINEL_MASTER],
        )
        .await;
        reply.array()[1].text().parse().expect("master port")
    }

    /// `SENTINEL FAILOVER <master>` (retried while the sentinel has no replica it can
    /// promote yet), then waits until the sentinel names the former replica as master and
    /// that server says `role:master`. Returns the new master's port.
    pub async fn failover(&self) -> u16 {
        let old = self.master_port().await;
        let new = self
            .servers
            .iter()
            .map(RedisServer::port)
            .find(|&p| p != old)
            .expect("a replica");
        let port = self.sentinel_port;
        wait_until(
            "the sentinel to accept SENTINEL FAILOVER",
            Duration::from_secs(30),
            || async move {
                let reply = command(port, &["SENTINEL", "FAILOVER", SENTINEL_MASTER]).await;
                match reply {
                    Reply::Simple(ok) if ok == "OK" => Some(()),
                    _ => None,
                }
            },
        )
        .await;
        wait_until(
            "the replica to become the master",
            Duration::from_secs(30),
            || async move {
                let named = command(
                    port,
                    &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", SENTINEL_MASTER],
                )
                .await
                .array()[1]
                    .text();
                let role = info_field(new, "replication", "role").await;
                (named == new.to_string() && role.as_deref() == Some("master")).then_some(())
            },
        )
        .await;
        new
    }

    /// The dump of the server on `port`.
    pub async fn dump(&self, port: u16) -> Dump {
        Dump::read(port).await
    }
}

impl Drop for RedisSentinel {
    fn drop(&mut self) {
        if let Some(mut child) = self.sentinel.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "----- redis-sentinel log -----\n{}\n-----",
                self.sentinel_log()
            );
        }
    }
}

// ----- gateway replicas on one store -------------------------------------------------------

/// The parts of a replica's config the Redis tests vary. Replicas of one fleet share all
/// of it (the same client, secrets and store); each has its own port and upstream.
#[derive(Debug, Clone)]
pub struct ReplicaSettings {
    pub client_id: String,
    pub client_secret: String,
    /// `session.secret`: the first seals, all open.
    pub secrets: Vec<String>,
    pub refresh_before: String,
    pub absolute_timeout: String,
    /// Extra lines under `[session]`: the store (e.g. [`RedisServer::store_toml`]); empty
    /// for the default store.
    pub store: String,
}

impl ReplicaSettings {
    /// A fresh client secret and session secret; `store` as given.
    pub fn new(store: impl Into<String>) -> Self {
        ReplicaSettings {
            client_id: "gateway".to_string(),
            client_secret: format!("client-secret-{}", random_hex(16)),
            secrets: vec![random_hex(32)],
            refresh_before: "60s".to_string(),
            absolute_timeout: "24h".to_string(),
            store: store.into(),
        }
    }
}

/// Path prefix of the public route (no login, proxied without identity).
pub const PUBLIC_PREFIX: &str = "/public";

/// A replica's config: `/public` is a public route, everything else needs a session;
/// both go to `upstream`.
pub fn replica_toml(
    port: impl std::fmt::Display,
    issuer: &str,
    upstream: &str,
    s: &ReplicaSettings,
) -> String {
    let secrets: Vec<String> = s.secrets.iter().map(|x| format!("\"{x}\"")).collect();
    format!(
        r#"[server]
listen = "127.0.0.1:{port}"
public_url = "http://127.0.0.1:{port}"

[log]
format = "json"
filter = "info"

[oidc]
issuer = "{issuer}"
client_id = "{client_id}"
client_secret = "{client_secret}"
scopes = ["openid", "email", "profile", "offline_access"]

[session]
secret = [{secrets}]
cookie_secure = false
absolute_timeout = "{absolute}"
refresh_before = "{refresh_before}"
{store}

[[route]]
path = "{PUBLIC_PREFIX}"
upstream = "{upstream}"
public = true

[[route]]
path = "/"
upstream = "{upstream}"
"#,
        client_id = s.client_id,
        client_secret = s.client_secret,
        secrets = secrets.join(", "),
        absolute = s.absolute_timeout,
        refresh_before = s.refresh_before,
        store = s.store,
    )
}

/// Replica names, in order: the upstream of replica `i` is named `REPLICA_NAMES[i]`, so
/// the echo says which replica forwarded a request.
pub const REPLICA_NAMES: &[&str] = &["a", "b", "c"];

/// The node test IdP and `n` gateway replicas sharing one store, each in front of its
/// own echo upstream (named `a`, `b`, ...). The IdP knows every replica's callback; its
/// back-channel logout URI is the LAST replica's, so a logout token always reaches a
/// replica other than the first (where logins go in the tests).
pub struct Fleet<G = InProcessGateway> {
    pub idp: Idp,
    pub upstreams: Vec<EchoUpstream>,
    pub gateways: Vec<G>,
    pub ports: Vec<u16>,
    pub settings: ReplicaSettings,
}

async fn fleet_idp(
    ports: &[u16],
    settings: &ReplicaSettings,
    customize: &impl Fn(IdpBuilder) -> IdpBuilder,
) -> Idp {
    let mut idp = Idp::builder().client(&settings.client_id, Some(&settings.client_secret));
    let mut post_logout = Vec::new();
    for port in ports {
        idp = idp.redirect_uri(format!("http://127.0.0.1:{port}/oauth2/callback"));
        post_logout.push(format!("http://127.0.0.1:{port}/x"));
    }
    let last = ports.last().expect("at least one replica");
    let idp = idp
        .env("POST_LOGOUT_REDIRECT_URIS", post_logout.join(","))
        .env(
            "BACKCHANNEL_LOGOUT_URI",
            format!("http://127.0.0.1:{last}/oauth2/backchannel-logout"),
        );
    customize(idp).start().await
}

async fn upstreams(n: usize) -> Vec<EchoUpstream> {
    let mut out = Vec::new();
    for name in &REPLICA_NAMES[..n] {
        out.push(EchoUpstream::start_named(name).await);
    }
    out
}

impl Fleet {
    /// `n` in-process replicas (listeners bound before the IdP is told their URIs), each
    /// ready (`/readyz` 200).
    pub async fn start(
        n: usize,
        settings: ReplicaSettings,
        customize: impl Fn(IdpBuilder) -> IdpBuilder,
    ) -> Self {
        Self::start_inner(n, settings, customize, true).await
    }

    /// Like [`Fleet::start`], but returns once every replica is alive (`/healthz` 200),
    /// ready or not (e.g. with its store down).
    pub async fn start_unready(
        n: usize,
        settings: ReplicaSettings,
        customize: impl Fn(IdpBuilder) -> IdpBuilder,
    ) -> Self {
        Self::start_inner(n, settings, customize, false).await
    }

    async fn start_inner(
        n: usize,
        settings: ReplicaSettings,
        customize: impl Fn(IdpBuilder) -> IdpBuilder,
        ready: bool,
    ) -> Self {
        let upstreams = upstreams(n).await;
        let mut listeners = Vec::new();
        for _ in 0..n {
            listeners.push(GatewayListener::bind().await);
        }
        let ports: Vec<u16> = listeners.iter().map(GatewayListener::port).collect();
        let idp = fleet_idp(&ports, &settings, &customize).await;
        let mut gateways = Vec::new();
        for (i, listener) in listeners.into_iter().enumerate() {
            let toml = replica_toml(ports[i], idp.issuer(), &upstreams[i].url(), &settings);
            let gateway = InProcessGateway::builder(&toml)
                .listener(listener)
                .start()
                .await;
            gateways.push(gateway);
        }
        if ready {
            for gateway in &gateways {
                wait_for_readyz(gateway).await;
            }
        }
        Fleet {
            idp,
            upstreams,
            gateways,
            ports,
            settings,
        }
    }
}

impl Fleet<Gateway> {
    /// `n` replicas as `portcullis` processes (for restarts, signals and logs); on a port
    /// clash the whole fleet is started again on other ports.
    pub async fn start_process(
        n: usize,
        settings: ReplicaSettings,
        customize: impl Fn(IdpBuilder) -> IdpBuilder,
    ) -> Self {
        let upstreams = upstreams(n).await;
        'attempt: for _ in 0..3 {
            let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
            let idp = fleet_idp(&ports, &settings, &customize).await;
            let mut gateways = Vec::new();
            for (i, port) in ports.iter().enumerate() {
                let toml = replica_toml(port, idp.issuer(), &upstreams[i].url(), &settings);
                match try_start_gateway(&toml).await {
                    Some(gateway) => gateways.push(gateway),
                    None => continue 'attempt,
                }
            }
            return Fleet {
                idp,
                upstreams,
                gateways,
                ports,
                settings,
            };
        }
        panic!("three sets of gateway ports in a row were taken before the gateways bound them");
    }

    /// Stops replica `i` — SIGTERM and a clean exit, or SIGKILL (`kill`) — and starts it
    /// again on the same port with the fleet's settings; waits until it is ready.
    pub async fn restart(&mut self, i: usize, kill: bool) {
        let gateway = &mut self.gateways[i];
        if kill {
            super::process::signal(gateway.pid(), "KILL");
            gateway
                .wait_exit(Duration::from_secs(10))
                .await
                .expect("the killed gateway exits");
        } else {
            let status = gateway.stop().await;
            assert!(status.success(), "replica {i} exited with {status}");
        }
        let toml = replica_toml(
            self.ports[i],
            self.idp.issuer(),
            &self.upstreams[i].url(),
            &self.settings,
        );
        self.gateways[i] = try_start_gateway(&toml)
            .await
            .unwrap_or_else(|| panic!("port {} was taken during the restart", self.ports[i]));
    }

    /// Rewrites replica `i`'s config with `settings` and sends SIGHUP; waits for the log
    /// line of the reload (session secrets apply without a restart).
    pub async fn reload(&mut self, i: usize, settings: ReplicaSettings) {
        let gateway = &self.gateways[i];
        let toml = replica_toml(
            self.ports[i],
            self.idp.issuer(),
            &self.upstreams[i].url(),
            &settings,
        );
        std::fs::write(gateway.config_path(), toml).expect("rewrite the config");
        let reloads = |log: &str| log.matches("session secrets reloaded").count();
        let before = reloads(&gateway.log_text());
        super::process::signal(gateway.pid(), "HUP");
        gateway
            .wait_for_log("the reload", Duration::from_secs(10), |log| {
                reloads(log) > before
            })
            .await;
        self.settings = settings;
    }
}

impl<G: GatewayAddr> Fleet<G> {
    /// `url_for(path)` of replica `i`.
    pub fn url_for(&self, i: usize, path: &str) -> String {
        self.gateways[i].url_for(path)
    }

    pub fn url(&self, i: usize) -> String {
        self.gateways[i].url()
    }

    /// `refresh_token` grants the IdP has answered so far.
    pub async fn refresh_grants(&self) -> u64 {
        self.idp.stats().await["token_requests"]["refresh_token"]
            .as_u64()
            .unwrap_or(0)
    }

    /// Asserts that `token` is a live access token of the IdP for `sub`, issued to the
    /// fleet's client.
    pub async fn assert_token_active(&self, token: &str, sub: &str) -> serde_json::Value {
        self.idp
            .assert_token_active(
                token,
                &self.settings.client_id,
                Some(&self.settings.client_secret),
                sub,
            )
            .await
    }

    /// `POST <issuer>/__test/<hook>?<query>` → JSON.
    pub async fn idp_hook(&self, hook: &str, query: &[(&str, &str)]) -> serde_json::Value {
        let url = self.idp.url_for(&format!("/__test/{hook}"));
        let resp = super::client()
            .post(&url)
            .query(query)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {url}: {e}"));
        assert!(resp.status().is_success(), "POST {url}: {}", resp.status());
        resp.json().await.expect("test hook answers JSON")
    }
}

/// `n` in-process replicas in front of a [`MockIdp`] (which accepts any redirect URI),
/// each with its own echo upstream (named `a`, `b`, ...).
pub async fn mock_fleet(
    idp: &MockIdp,
    n: usize,
    settings: &ReplicaSettings,
) -> (Vec<EchoUpstream>, Vec<InProcessGateway>) {
    let upstreams = upstreams(n).await;
    let mut gateways = Vec::new();
    for upstream in &upstreams {
        let toml = replica_toml("@PORT@", idp.issuer(), &upstream.url(), settings);
        let gateway = InProcessGateway::start(&toml).await;
        wait_for_readyz(&gateway).await;
        gateways.push(gateway);
    }
    (upstreams, gateways)
}

// ----- what the tests check --------------------------------------------------------------

/// The token in the `Authorization: Bearer ...` the upstream received.
pub fn upstream_bearer(hop: &Hop) -> String {
    let echo = hop.echo();
    let authorization = echo
        .header("authorization")
        .unwrap_or_else(|| panic!("the upstream got no Authorization header\n{hop}"));
    authorization
        .strip_prefix("Bearer ")
        .unwrap_or_else(|| panic!("not a Bearer token: {authorization}"))
        .to_string()
}

/// A browser holding only the session cookie `value` (a copied or replayed cookie).
pub fn browser_with_cookie(value: &str) -> Browser {
    let browser = Browser::new();
    browser.set_cookie(SESSION_COOKIE, value);
    browser
}

/// 401 for an API request without a usable session (`WWW-Authenticate: Bearer`), never a
/// redirect.
pub fn assert_login_required(hop: &Hop) {
    assert_eq!(
        hop.status,
        StatusCode::UNAUTHORIZED,
        "expected the session to be gone\n{hop}"
    );
    assert_eq!(hop.header("www-authenticate"), Some("Bearer"), "{hop}");
    assert!(hop.header("location").is_none(), "{hop}");
}

/// `browser`'s session works on the replica at `url`: an API request reaches that
/// replica's upstream (`upstream` names it) as `user`. Returns the bearer token forwarded.
pub async fn assert_session_alive(
    url: &str,
    browser: &Browser,
    user: &str,
    upstream: &str,
) -> String {
    let hop = browser.api_get(&format!("{url}/whoami")).await;
    assert_eq!(
        hop.status,
        StatusCode::OK,
        "expected {user}'s session to work at {url}\n{hop}"
    );
    let echo = hop.echo();
    assert_eq!(
        echo.upstream, upstream,
        "forwarded by another replica\n{hop}"
    );
    assert_eq!(echo.header("x-forwarded-user"), Some(user), "{hop}");
    upstream_bearer(&hop)
}

/// A login at the gateway `url` through a [`MockIdp`] (no pages: straight back with a
/// code) as `user`. Returns the login that began (its `state`) and the session cookie.
pub async fn mock_login(
    url: &str,
    idp: &MockIdp,
    browser: &Browser,
    user: &str,
) -> (StartedLogin, String) {
    idp.set_user(user);
    let started = browser.begin_login(url, "/start").await;
    let callback = match browser.idp_open(&started.authorize_url).await {
        IdpStep::Left(url) => url,
        IdpStep::Page(page) => panic!("the mock IdP showed a page\n{page}"),
    };
    let hop = browser.callback(&callback).await;
    assert_eq!(hop.status, StatusCode::FOUND, "callback\n{hop}");
    let cookie = hop
        .set_cookie(SESSION_COOKIE)
        .unwrap_or_else(|| panic!("no session cookie\n{hop}"))
        .value()
        .to_string();
    (started, cookie)
}

/// The session cookie's 32 random bytes (base64url) as lowercase hex: what a store that
/// used the session id itself as its key would show.
pub fn cookie_id_hex(cookie: &str) -> String {
    use base64::Engine;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cookie.split('.').next().unwrap_or(cookie))
        .unwrap_or_default();
    raw.iter().map(|b| format!("{b:02x}")).collect()
}
