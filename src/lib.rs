//! portcullis: a reverse-proxy authentication gateway. This file only wires modules; the
//! request path lives in `gateway`, the listeners in `server`.
#![forbid(unsafe_code)]

pub mod auth;
pub mod body;
pub mod client_key;
pub mod clock;
pub mod config;
pub mod demo;
pub mod endpoints;
pub mod envoy;
pub mod errors;
pub mod ext_authz_grpc;
pub mod gateway;
pub mod host;
pub mod http_client;
pub mod identity_headers;
pub mod metrics;
pub mod net;
pub mod oidc;
pub mod otel;
pub mod path;
pub mod policy;
pub mod proxy;
pub mod redirect;
pub mod request;
pub mod response;
pub mod routes;
pub mod secret;
pub mod server;
pub mod session;
pub mod telemetry;
pub mod tls;
pub mod trace_context;

use std::sync::Arc;

use config::Config;

/// Installs the process-wide rustls crypto provider (aws-lc-rs). rustls 0.23 requires an
/// explicit choice; call before any TLS config is built. A second call is harmless.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// Binds, serves until SIGTERM/SIGINT, drains. The config is already validated.
pub async fn run(config: Config, reload: Option<Reloader>) -> Result<(), errors::BoxError> {
    let server = &config.server;
    let listeners = server::bind_workers(server.listen, server.workers)
        .await
        .map_err(|e| format!("server.listen: cannot listen on {}: {e}", server.listen))?;
    let gateway = Arc::new(gateway::Gateway::new(&config));
    start_side_jobs(&gateway, &config, reload).await?;
    let listen = listeners
        .first()
        .and_then(|l| l.local_addr().ok())
        .unwrap_or(server.listen);
    log_listening(listen, &config, Some(server.workers));
    server::serve_workers(listeners, server, &gateway).await?;
    Ok(())
}

#[cfg(unix)]
fn spawn_reload_on_sighup(gateway: Arc<gateway::Gateway>, reload: Reloader) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; secret reload disabled");
        return;
    };
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            match reload() {
                Ok(config) if gateway.reload(&config) => {
                    tracing::info!(
                        event = "reload",
                        "session secrets reloaded (other changes need a restart)"
                    );
                }
                Ok(_) => tracing::warn!(
                    event = "reload",
                    "reloaded config has no [session]; nothing applied"
                ),
                Err(e) => {
                    tracing::error!(event = "reload", error = %e, "invalid configuration; keeping the running one")
                }
            }
        }
    });
}

#[cfg(not(unix))]
fn spawn_reload_on_sighup(_gateway: Arc<gateway::Gateway>, _reload: Reloader) {}

/// Re-reads the configuration (on SIGHUP).
pub type Reloader = Arc<dyn Fn() -> Result<Config, config::ConfigError> + Send + Sync>;

/// Serves on an already bound listener, on the caller's runtime (the demo and the
/// in-process tests; `run` serves on its own threads). With a `reload`,
/// SIGHUP re-reads the config and applies the session secrets (for rotation without
/// losing the in-memory sessions); other changes need a restart.
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    config: Config,
    reload: Option<Reloader>,
) -> Result<(), errors::BoxError> {
    let gateway = Arc::new(gateway::Gateway::new(&config));
    start_side_jobs(&gateway, &config, reload).await?;
    log_listening(listener.local_addr()?, &config, None);
    server::serve(listener, &config.server, gateway).await?;
    Ok(())
}

/// What runs beside the serving threads (on the main runtime): SIGHUP reloads, the
/// `/metrics` listener and Envoy's gRPC ext_authz listener.
async fn start_side_jobs(
    gateway: &Arc<gateway::Gateway>,
    config: &Config,
    reload: Option<Reloader>,
) -> Result<(), errors::BoxError> {
    if let Some(reload) = reload {
        spawn_reload_on_sighup(gateway.clone(), reload);
    }
    if let Some(addr) = config.server.metrics_listen {
        let metrics_listener = server::bind(addr)
            .await
            .map_err(|e| format!("server.metrics_listen: cannot listen on {addr}: {e}"))?;
        let gw = gateway.clone();
        server::spawn_plain(metrics_listener, move |req| {
            let gw = gw.clone();
            async move {
                if req.uri().path() == "/metrics" {
                    gw.metrics_response().await
                } else {
                    response::text_response(http::StatusCode::NOT_FOUND, "not found\n")
                }
            }
        });
        tracing::info!(metrics_listen = %addr, "serving /metrics");
    }
    if let Some(addr) = config.server.ext_authz_grpc_listen {
        let listener = server::bind(addr)
            .await
            .map_err(|e| format!("server.ext_authz_grpc_listen: cannot listen on {addr}: {e}"))?;
        let addr = listener.local_addr()?;
        let gw = gateway.clone();
        tokio::spawn(async move {
            if let Err(e) = ext_authz_grpc::serve(listener, gw, server::shutdown_signal()).await {
                tracing::error!(error = %e, "the gRPC ext_authz listener failed");
            }
        });
        tracing::info!(ext_authz_grpc_listen = %addr, "serving Envoy gRPC ext_authz");
    }
    Ok(())
}

fn log_listening(listen: std::net::SocketAddr, config: &Config, workers: Option<usize>) {
    tracing::info!(
        listen = %listen,
        public_url = %config.server.public_url,
        tls = config.server.tls.is_some(),
        routes = config.routes.len(),
        workers = workers.map(|n| n as u64),
        "listening on {listen}"
    );
}
