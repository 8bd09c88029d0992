//! The connection to Redis, from `[session]`: one server (the `redis` crate's
//! `ConnectionManager`, which reconnects by itself), a cluster (its async cluster client:
//! slots, `MOVED` and `ASK` are its business), or the master that the sentinels name
//! (resolved again after any connection failure, so a failover is followed). Nothing here
//! connects at start-up: the first call does, and a failed one is retried by the next, so
//! the gateway starts and recovers while Redis is down. Every call is bounded by
//! `redis_timeout`, on top of the crate's own connect and response timeouts.

use std::sync::Mutex;
use std::time::Duration;

use ::redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use ::redis::cluster::{ClusterClient, ClusterClientBuilder};
use ::redis::cluster_async::ClusterConnection;
use ::redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use ::redis::{
    AsyncConnectionConfig, Client, Cmd, ConnectionInfo, FromRedisValue, IntoConnectionInfo,
    Pipeline, RedisError, RedisFuture, RedisResult, ScriptInvocation, TlsCertificates, TlsMode,
    Value,
};
use rustls_pki_types::CertificateDer;

use crate::config::{RedisConfig, RedisMode};
use crate::session::store::StoreError;

/// A connection to whatever `redis_mode` names.
pub struct Link {
    kind: Kind,
    timeout: Duration,
}

enum Kind {
    Standalone {
        manager: ConnectionManager,
        client: Client,
    },
    Cluster {
        client: ClusterClient,
        /// Seed nodes, for the pub/sub connection (a PUBLISH reaches every node).
        seeds: Vec<Client>,
        conn: Mutex<Option<ClusterConnection>>,
        connecting: tokio::sync::Mutex<()>,
    },
    Sentinel {
        sentinel: tokio::sync::Mutex<SentinelClient>,
        conn: Mutex<Option<MultiplexedConnection>>,
    },
    /// The config could not be turned into a client (e.g. an unreadable CA): every call
    /// fails with this, logged at start.
    Broken(String),
}

/// A connection for one call.
enum Conn {
    Manager(ConnectionManager),
    Cluster(ClusterConnection),
    Plain(MultiplexedConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Manager(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
            Conn::Plain(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Manager(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Plain(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Manager(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
            Conn::Plain(c) => c.get_db(),
        }
    }
}

impl Link {
    /// The link `cfg` describes, not yet connected. `ca` is `server.upstream_ca_file`'s
    /// certificates, trusted for `rediss://` (the system roots when empty).
    pub fn new(cfg: &RedisConfig, ca: &[CertificateDer<'static>]) -> Link {
        let kind = match build(cfg, ca) {
            Ok(kind) => kind,
            Err(e) => {
                tracing::error!(error = %e, "the Redis session store cannot be set up from the config");
                Kind::Broken(e.to_string())
            }
        };
        Link {
            kind,
            timeout: cfg.timeout,
        }
    }

    /// Runs one command within `redis_timeout`.
    pub async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, StoreError> {
        self.bounded(async {
            let mut conn = self.conn().await?;
            cmd.query_async(&mut conn).await
        })
        .await
    }

    /// Runs a Lua script (EVALSHA, loading it when the server lacks it) within
    /// `redis_timeout`.
    pub async fn invoke<T: FromRedisValue>(
        &self,
        script: &ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        self.bounded(async {
            let mut conn = self.conn().await?;
            script.invoke_async(&mut conn).await
        })
        .await
    }

    /// A client for a plain (non-cluster) connection to a node that sees every PUBLISH:
    /// the server, cluster seed `target`, or the current master (asked anew each time).
    pub async fn pubsub_client(&self, target: usize) -> Result<Client, StoreError> {
        let found = tokio::time::timeout(self.timeout * 4, async {
            match &self.kind {
                Kind::Standalone { client, .. } => Ok(client.clone()),
                Kind::Cluster { seeds, .. } => seeds
                    .get(target % seeds.len().max(1))
                    .cloned()
                    .ok_or_else(|| StoreError("no cluster seed node".into())),
                Kind::Sentinel { sentinel, .. } => sentinel
                    .lock()
                    .await
                    .async_get_client()
                    .await
                    .map_err(store_error),
                Kind::Broken(why) => Err(StoreError(why.clone())),
            }
        })
        .await;
        found.unwrap_or_else(|_| Err(StoreError("resolving the Redis node timed out".into())))
    }

    /// How many pub/sub listeners to run: one per cluster seed node (a script's PUBLISH
    /// reaches its own node's subscribers at once, the others over the cluster bus a
    /// little later, so every master should have one), else one.
    pub fn pubsub_targets(&self) -> usize {
        match &self.kind {
            Kind::Cluster { seeds, .. } => seeds.len().max(1),
            _ => 1,
        }
    }

    /// `work` within `redis_timeout`; a failed or timed-out call drops a sentinel
    /// connection, so the next call asks the sentinels for the master again.
    async fn bounded<T>(
        &self,
        work: impl std::future::Future<Output = RedisResult<T>>,
    ) -> Result<T, StoreError> {
        let (reconnect, e) = match tokio::time::timeout(self.timeout, work).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(e)) => (reconnect_after(&e), store_error(e)),
            Err(_) => (true, StoreError("Redis did not answer in time".into())),
        };
        if reconnect {
            if let Kind::Sentinel { conn, .. } = &self.kind {
                *lock(conn) = None;
            }
        }
        Err(e)
    }

    async fn conn(&self) -> RedisResult<Conn> {
        match &self.kind {
            Kind::Standalone { manager, .. } => Ok(Conn::Manager(manager.clone())),
            Kind::Cluster {
                client,
                conn,
                connecting,
                ..
            } => {
                if let Some(c) = lock(conn).clone() {
                    return Ok(Conn::Cluster(c));
                }
                let _one = connecting.lock().await;
                if let Some(c) = lock(conn).clone() {
                    return Ok(Conn::Cluster(c));
                }
                let fresh = client.get_async_connection().await?;
                *lock(conn) = Some(fresh.clone());
                Ok(Conn::Cluster(fresh))
            }
            Kind::Sentinel { sentinel, conn } => {
                if let Some(c) = lock(conn).clone() {
                    return Ok(Conn::Plain(c));
                }
                let mut sentinel = sentinel.lock().await;
                if let Some(c) = lock(conn).clone() {
                    return Ok(Conn::Plain(c));
                }
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(self.timeout))
                    .set_response_timeout(Some(self.timeout));
                let fresh = sentinel.get_async_connection_with_config(&config).await?;
                *lock(conn) = Some(fresh.clone());
                Ok(Conn::Plain(fresh))
            }
            Kind::Broken(why) => Err(RedisError::from((
                ::redis::ErrorKind::InvalidClientConfig,
                "the Redis store is misconfigured",
                why.clone(),
            ))),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// Whether an error means the connection (or the node's role) is gone.
fn reconnect_after(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.kind() == ::redis::ErrorKind::Server(::redis::ServerErrorKind::ReadOnly)
}

/// A Redis error for the log: the crate's errors carry no password.
pub fn store_error(e: RedisError) -> StoreError {
    StoreError(format!("redis: {e}"))
}

fn build(cfg: &RedisConfig, ca: &[CertificateDer<'static>]) -> RedisResult<Kind> {
    let certs = || TlsCertificates {
        client_tls: None,
        root_cert: (!ca.is_empty()).then(|| pem(ca)),
    };
    let password = cfg.password.as_ref().map(|p| p.expose());
    match cfg.mode {
        RedisMode::Standalone => {
            let client = client_for(cfg.url.as_str(), password, certs)?;
            let manager_config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(cfg.timeout))
                .set_response_timeout(Some(cfg.timeout))
                .set_number_of_retries(2)
                .set_max_delay(Duration::from_secs(1));
            let manager = ConnectionManager::new_lazy_with_config(client.clone(), manager_config)?;
            Ok(Kind::Standalone { manager, client })
        }
        RedisMode::Cluster => {
            let seeds = cfg
                .urls
                .iter()
                .map(|u| client_for(u.as_str(), password, certs))
                .collect::<RedisResult<Vec<Client>>>()?;
            let infos = cfg
                .urls
                .iter()
                .map(|u| u.as_str().into_connection_info())
                .collect::<RedisResult<Vec<ConnectionInfo>>>()?;
            let mut builder = ClusterClientBuilder::new(infos)
                .connection_timeout(cfg.timeout)
                .response_timeout(cfg.timeout)
                .retries(2);
            if let Some(p) = password {
                builder = builder.password(p);
            }
            if cfg.urls.iter().any(|u| u.scheme() == "rediss") {
                builder = builder.tls(TlsMode::Secure).certs(certs());
            }
            Ok(Kind::Cluster {
                client: builder.build()?,
                seeds,
                conn: Mutex::new(None),
                connecting: tokio::sync::Mutex::new(()),
            })
        }
        RedisMode::Sentinel => sentinel_kind(cfg, password, certs),
    }
}

fn sentinel_kind(
    cfg: &RedisConfig,
    password: Option<&str>,
    certs: impl Fn() -> TlsCertificates,
) -> RedisResult<Kind> {
    let sentinels = cfg
        .urls
        .iter()
        .map(|u| u.as_str().into_connection_info().map(|i| i.addr().clone()))
        .collect::<RedisResult<Vec<_>>>()?;
    let master = cfg.sentinel_master.as_deref().unwrap_or("mymaster");
    let node = cfg.url.as_str().into_connection_info()?;
    let mut builder = SentinelClientBuilder::new(sentinels, master, SentinelServerType::Master)?
        .set_client_to_redis_db(node.redis_settings().db());
    if let Some(user) = node.redis_settings().username() {
        builder = builder.set_client_to_redis_username(user);
    }
    if let Some(p) = password {
        builder = builder.set_client_to_redis_password(p);
    }
    if cfg.url.scheme() == "rediss" {
        builder = builder
            .set_client_to_redis_tls_mode(TlsMode::Secure)
            .set_client_to_redis_certificates(certs());
    }
    if cfg.urls.iter().any(|u| u.scheme() == "rediss") {
        builder = builder
            .set_client_to_sentinel_tls_mode(TlsMode::Secure)
            .set_client_to_sentinel_certificates(certs());
    }
    Ok(Kind::Sentinel {
        sentinel: tokio::sync::Mutex::new(builder.build()?),
        conn: Mutex::new(None),
    })
}

/// A client for one URL, with the password and, for `rediss://`, the configured CA.
fn client_for(
    url: &str,
    password: Option<&str>,
    certs: impl Fn() -> TlsCertificates,
) -> RedisResult<Client> {
    let mut info = url.into_connection_info()?;
    if let Some(p) = password {
        let settings = info.redis_settings().clone().set_password(p);
        info = info.set_redis_settings(settings);
    }
    let tls = certs();
    if url.starts_with("rediss://") && tls.root_cert.is_some() {
        Client::build_with_tls(info, tls)
    } else {
        Client::open(info)
    }
}

/// DER certificates as PEM text (what the crate's TLS settings take).
fn pem(certs: &[CertificateDer<'static>]) -> Vec<u8> {
    use base64::Engine;
    let mut out = String::new();
    for cert in certs {
        let b64 = base64::engine::general_purpose::STANDARD.encode(cert.as_ref());
        out.push_str("-----BEGIN CERTIFICATE-----\n");
        for line in b64.as_bytes().chunks(64) {
            out.push_str(&String::from_utf8_lossy(line));
            out.push('\n');
        }
        out.push_str("-----END CERTIFICATE-----\n");
    }
    out.into_bytes()
}
