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
//! The tests talk to Redis with [`Resp`] ([`resp`]: a few lines of RESP2 over a
//! `TcpStream`, no client library: the gateway's own `redis` crate is what is under
//! test).
//!
//! The gateway's `[session]` lines for each setup: [`RedisServer::store_toml`],
//! [`RedisCluster::store_toml`], [`RedisSentinel::store_toml`]. [`fleet`] runs gateway
//! replicas on one store.

pub mod fleet;
pub mod resp;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

#[allow(unused_imports)]
pub use fleet::*;
#[allow(unused_imports)]
pub use resp::{command, info, info_field, Dump, Entry, Reply, Resp};

use super::{free_port, wait_until};

/// How long a Redis process may take to answer `PING` after it was spawned.
const START_TIMEOUT: Duration = Duration::from_secs(15);

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
        let child = spawn_until_pong("redis-server", &conf, self.port, &self.log_path()).await?;
        self.child = Some(child);
        Ok(())
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
        let log = dir.join("sentinel.log");
        let child = spawn_until_pong("redis-sentinel", &conf, self.sentinel_port, &log).await?;
        self.sentinel = Some(child);
        Ok(())
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
    /// promote yet), then waits until the sentinel names the former replica as master,
    /// that server says `role:master` and the old master replicates from it. Returns the
    /// new master's port.
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
        // The switch is over when the sentinel has turned the old master into a replica of
        // the new one (Redis then drops the clients still connected to it).
        wait_until(
            "the old master to follow the new one",
            Duration::from_secs(30),
            || async move {
                let role = info_field(old, "replication", "role").await;
                let master = info_field(old, "replication", "master_port").await;
                (role.as_deref() == Some("slave") && master == Some(new.to_string())).then_some(())
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

/// Starts `program` (redis-server or redis-sentinel) on `conf` and waits until it answers
/// PING on `port`; on failure it is killed and the error carries its `log`.
async fn spawn_until_pong(
    program: &str,
    conf: &Path,
    port: u16,
    log: &Path,
) -> Result<Child, String> {
    let read_log = || std::fs::read_to_string(log).unwrap_or_default();
    let mut child = Command::new(program)
        .arg(conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("spawn {program}: {e} (is its Debian package installed?)"))?;
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Err(format!(
                "{program} exited with {status}; log:\n{}",
                read_log()
            ));
        }
        if let Ok(mut conn) = Resp::connect(port).await {
            if let Ok(Reply::Simple(pong)) = conn.cmd(&["PING"]).await {
                if pong == "PONG" {
                    return Ok(child);
                }
            }
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "{program}: no PONG within {START_TIMEOUT:?}; log:\n{}",
                read_log()
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
