//! Listeners: accept TCP, terminate TLS (rustls, h2 + http/1.1 via ALPN), serve HTTP/1.1
//! and HTTP/2 with hyper-util's auto builder, hand each request to `Gateway::handle`, and
//! shut down gracefully on SIGTERM/SIGINT (stop accepting, drain in-flight requests up to
//! `server.drain_timeout`).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::body::Body;
use crate::config::{ConfigError, ServerConfig};
use crate::gateway::Gateway;
use crate::request::ClientConn;

/// A TLS handshake that takes longer than this is dropped (slowloris protection).
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a client gets to send a complete request head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Binds the listener. Separate from `serve` so a bind error is reported before start-up
/// work and so tests can bind port 0.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Binds `count` listening sockets on one address with `SO_REUSEPORT`, one per serving
/// thread: the kernel spreads new connections over them, and each thread accepts on its
/// own socket. Port 0 is resolved by the first bind, so all share the port it got.
pub async fn bind_workers(
    addr: SocketAddr,
    count: usize,
) -> std::io::Result<Vec<std::net::TcpListener>> {
    let mut listeners: Vec<std::net::TcpListener> = Vec::with_capacity(count);
    let mut at = addr;
    for _ in 0..count.max(1) {
        let socket = match at {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        socket.set_reuseaddr(true)?;
        socket.set_reuseport(true)?;
        socket.bind(at)?;
        let listener = socket.listen(1024)?;
        at = listener.local_addr()?;
        // Registered with the serving thread's own runtime there (`from_std`).
        listeners.push(listener.into_std()?);
    }
    Ok(listeners)
}

/// The hyper connection settings every listener serves with.
fn connection_builder(server: &ServerConfig) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        // hyper answers 431 itself when the head outgrows its buffer; leave room for the
        // URI so `max_uri_length` gets its 414 from the gateway first.
        .max_buf_size((server.max_header_bytes + server.max_uri_length + 1024).max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(server.max_header_bytes * 2).unwrap_or(u32::MAX));
    builder
}

/// Serves on this runtime until SIGTERM/SIGINT, then drains (the library's `serve_on`:
/// tests and the demo).
pub async fn serve(
    listener: TcpListener,
    server: &ServerConfig,
    gateway: Arc<Gateway>,
) -> Result<(), ConfigError> {
    let drained = serve_until(listener, server, gateway, shutdown_signal(), || {
        tracing::info!("shutting down: no longer accepting, draining");
    })
    .await;
    log_drained(drained);
    Ok(())
}

/// The production model: `listeners.len()` serving threads, each with a current-thread
/// runtime, its own listener and its own upstream pool (`Gateway::for_worker`), so a
/// request is read, authorized, forwarded and answered on one thread. The caller's runtime
/// keeps the background work (discovery, JWKS, Redis, signals). Returns after SIGTERM/SIGINT
/// once every thread has drained or hit `drain_timeout`.
pub async fn serve_workers(
    listeners: Vec<std::net::TcpListener>,
    server: &ServerConfig,
    gateway: &Gateway,
) -> std::io::Result<()> {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut threads = Vec::with_capacity(listeners.len());
    for (index, listener) in listeners.into_iter().enumerate() {
        let gateway = Arc::new(gateway.for_worker(server));
        let server = server.clone();
        let mut stopped = stopped.clone();
        let thread = std::thread::Builder::new()
            .name(format!("portcullis-worker-{index}"))
            .spawn(move || -> std::io::Result<bool> {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                runtime.block_on(async move {
                    let listener = TcpListener::from_std(listener)?;
                    let stop = async move {
                        let _ = stopped.wait_for(|stop| *stop).await;
                    };
                    Ok(serve_until(listener, &server, gateway, stop, || {}).await)
                })
            })?;
        threads.push(thread);
    }
    shutdown_signal().await;
    tracing::info!("shutting down: no longer accepting, draining");
    let _ = stop.send(true);
    let all_drained = tokio::task::spawn_blocking(move || {
        threads.into_iter().all(|t| match t.join() {
            Ok(Ok(drained)) => drained,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "a serving thread failed");
                false
            }
            Err(_) => false,
        })
    })
    .await
    .unwrap_or(false);
    log_drained(all_drained);
    Ok(())
}

fn log_drained(drained: bool) {
    if drained {
        tracing::info!("drained, exiting");
    } else {
        tracing::warn!("drain timeout reached, closing remaining connections");
    }
}

/// Accepts and serves until `stop` completes, then stops accepting and waits up to
/// `server.drain_timeout` for the connections in flight. True when all finished in time.
async fn serve_until(
    listener: TcpListener,
    server: &ServerConfig,
    gateway: Arc<Gateway>,
    stop: impl Future<Output = ()>,
    on_stop: impl FnOnce(),
) -> bool {
    // Parsed (and so checked) when the config was read.
    let tls = server
        .tls
        .as_ref()
        .map(|files| TlsAcceptor::from(files.server_config.clone()));
    let builder = Arc::new(connection_builder(server));
    let graceful = GracefulShutdown::new();
    let mut stop = std::pin::pin!(stop);

    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                tokio::spawn(serve_connection(
                    stream,
                    peer,
                    tls.clone(),
                    builder.clone(),
                    gateway.clone(),
                    graceful.watcher(),
                ));
            }
            _ = &mut stop => break,
        }
    }
    drop(listener);
    on_stop();
    tokio::select! {
        _ = graceful.shutdown() => true,
        _ = tokio::time::sleep(server.drain_timeout) => false,
    }
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    gateway: Arc<Gateway>,
    watcher: hyper_util::server::graceful::Watcher,
) {
    let conn = ClientConn::new(peer.ip(), tls.is_some(), gateway.trusts(peer.ip()));
    let service = service_fn(move |req| serve_one(gateway.clone(), req, conn.clone()));
    let result = match tls {
        None => {
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            watcher.watch(conn.into_owned()).await
        }
        Some(acceptor) => {
            let tls_stream =
                match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                };
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls_stream), service);
            watcher.watch(conn.into_owned()).await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// A plain HTTP/1.1 + h2c server for side jobs (the metrics listener, the demo's
/// provider and dashboard); the gateway itself is served by `serve`.
pub fn spawn_plain<F, Fut>(listener: TcpListener, handler: F)
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let handler = handler.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let fut = handler(req);
                    async move { Ok::<_, Infallible>(fut.await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}

async fn serve_one(
    gateway: Arc<Gateway>,
    req: hyper::Request<hyper::body::Incoming>,
    conn: ClientConn,
) -> Result<hyper::Response<crate::body::Body>, Infallible> {
    // The request path takes the gateway's one body type, so tests can drive it with a
    // body they made; a peer's body is its `Incoming` side (no allocation).
    Ok(gateway
        .handle(req.map(http_body_util::Either::Left), conn)
        .await)
}

pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
