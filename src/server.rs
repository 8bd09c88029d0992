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

/// Serves until SIGTERM/SIGINT, then drains.
pub async fn serve(
    listener: TcpListener,
    server: &ServerConfig,
    gateway: Arc<Gateway>,
) -> Result<(), ConfigError> {
    // Parsed (and so checked) when the config was read.
    let tls = server
        .tls
        .as_ref()
        .map(|files| TlsAcceptor::from(files.server_config.clone()));
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
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown_signal());

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
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    tracing::info!(
        in_flight_connections = graceful.count(),
        "shutting down: no longer accepting, draining"
    );
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("drained, exiting"),
        _ = tokio::time::sleep(server.drain_timeout) => {
            tracing::warn!("drain timeout reached, closing remaining connections");
        }
    }
    Ok(())
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

async fn shutdown_signal() {
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
