//! `EchoUpstream`: an in-process hyper 1 server on `127.0.0.1:0` standing in for the
//! application behind the gateway. It runs on the test's tokio runtime.
//!
//! Every HTTP request is answered with JSON describing what arrived:
//! `{"upstream", "method", "path" (path+query as received), "headers" {lowercase name:
//! [values]}, "body_len", "body_sha256"}`. The request body is hashed while it streams
//! in, never buffered whole. Special paths:
//!
//! - `/slow?ms=N` waits N ms before answering (the request is recorded on arrival);
//! - `/download?bytes=N` streams N pattern bytes (see [`super::pattern_bytes`]),
//!   chunked, in 64 KiB pieces;
//! - `/status?code=N` answers the echo JSON with status N;
//! - `/hop-response` answers the echo JSON with hop-by-hop response headers
//!   (`Connection: X-Upstream-Hop`, `X-Upstream-Hop`, `Keep-Alive`, `Proxy-Authenticate`,
//!   `Proxy-Connection`, `Trailer`, `Upgrade`) plus `X-Normal: kept`;
//! - any request with `Upgrade: websocket` is upgraded and echoes text and binary
//!   messages back.
//!
//! The server can also speak HTTPS with a self-signed certificate ([`EchoUpstream::start_tls`]).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::tls::SelfSignedCert;
use super::{pattern_bytes, Sha256};

type Body = BoxBody<Bytes, Infallible>;

/// One request as the upstream saw it on arrival.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    /// Path and query exactly as received.
    pub path: String,
    /// Lowercase names, in arrival order.
    pub headers: Vec<(String, String)>,
}

impl Received {
    /// All values of a header (case-insensitive name).
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

struct State {
    name: String,
    received: Mutex<Vec<Received>>,
    arrived: Notify,
}

/// The in-process upstream. Dropping it stops accepting connections.
pub struct EchoUpstream {
    addr: SocketAddr,
    scheme: &'static str,
    state: Arc<State>,
    accept_task: JoinHandle<()>,
}

impl EchoUpstream {
    /// Plain HTTP upstream named "echo".
    pub async fn start() -> Self {
        Self::start_named("echo").await
    }

    /// Plain HTTP upstream whose responses carry `"upstream": name`, to tell several
    /// upstreams apart in routing tests.
    pub async fn start_named(name: &str) -> Self {
        Self::spawn(name, None).await
    }

    /// HTTPS upstream (self-signed `cert`, ALPN h2 + http/1.1).
    pub async fn start_tls(name: &str, cert: &SelfSignedCert) -> Self {
        let acceptor = tokio_rustls::TlsAcceptor::from(cert.server_config());
        Self::spawn(name, Some(acceptor)).await
    }

    async fn spawn(name: &str, tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("upstream local_addr");
        let state = Arc::new(State {
            name: name.to_string(),
            received: Mutex::new(Vec::new()),
            arrived: Notify::new(),
        });
        let scheme = if tls.is_some() { "https" } else { "http" };
        let accept_state = state.clone();
        let accept_task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _peer)) = listener.accept().await else {
                    continue;
                };
                let state = accept_state.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| handle(state.clone(), req));
                    let builder = auto::Builder::new(TokioExecutor::new());
                    // Connection errors (client went away, TLS rejected by the gateway)
                    // are expected in some tests; they end only this connection.
                    match tls {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(tcp).await {
                                let _ = builder
                                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                                    .await;
                            }
                        }
                        None => {
                            let _ = builder
                                .serve_connection_with_upgrades(TokioIo::new(tcp), service)
                                .await;
                        }
                    }
                });
            }
        });
        EchoUpstream {
            addr,
            scheme,
            state,
            accept_task,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>` (or `https://...`), no trailing slash.
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    pub fn name(&self) -> &str {
        &self.state.name
    }

    /// Every request received so far, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    /// Waits (bounded) until at least `n` requests have arrived; returns them all.
    pub async fn wait_for_requests(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.state.arrived.notified();
            let received = self.received();
            if received.len() >= n {
                return received;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!(
                    "upstream {} saw {} request(s), expected {n} within {timeout:?}",
                    self.state.name,
                    self.received().len()
                );
            }
        }
    }
}

impl Drop for EchoUpstream {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

/// The JSON an [`EchoUpstream`] answers with, parsed.
#[derive(Debug, Clone, Deserialize)]
pub struct Echoed {
    pub upstream: String,
    pub method: String,
    pub path: String,
    pub headers: BTreeMap<String, Vec<String>>,
    pub body_len: u64,
    pub body_sha256: String,
}

impl Echoed {
    /// Parses the upstream's JSON; panics with the raw text if it is not echo JSON
    /// (e.g. the gateway answered itself).
    pub fn parse(body: &[u8]) -> Self {
        serde_json::from_slice(body).unwrap_or_else(|e| {
            panic!(
                "response is not echo JSON ({e}): {}",
                String::from_utf8_lossy(body)
            )
        })
    }

    /// The single value of a header the upstream received; panics if it was sent
    /// more than once. `None` if absent.
    pub fn header(&self, name: &str) -> Option<&str> {
        let values = self.headers.get(&name.to_ascii_lowercase())?;
        assert_eq!(
            values.len(),
            1,
            "upstream received header {name} {} times: {values:?}",
            values.len()
        );
        Some(values[0].as_str())
    }

    /// All values of a header the upstream received (empty if absent).
    pub fn header_all(&self, name: &str) -> &[String] {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }
}

fn query_param(query: Option<&str>, key: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == key).then(|| v.to_string())
    })
}

fn full(body: impl Into<Bytes>) -> Body {
    Full::new(body.into()).boxed()
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let method = req.method().to_string();
    let path = req
        .uri()
        .path_and_query()
        .map(|pq| pq.as_str().to_string())
        .unwrap_or_else(|| req.uri().path().to_string());
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    state.received.lock().unwrap().push(Received {
        method: method.clone(),
        path: path.clone(),
        headers: headers.clone(),
    });
    state.arrived.notify_waiters();

    let is_websocket = req
        .headers()
        .get(hyper::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if is_websocket {
        return Ok(upgrade_websocket(req));
    }

    let query = req.uri().query().map(str::to_string);
    let route = req.uri().path().to_string();
    let mut status = StatusCode::OK;
    let mut hop_response = false;
    match route.as_str() {
        "/slow" => {
            let ms: u64 = query_param(query.as_deref(), "ms")
                .and_then(|v| v.parse().ok())
                .unwrap_or(1000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        "/download" => {
            let total: u64 = query_param(query.as_deref(), "bytes")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            return Ok(download(total));
        }
        "/status" => {
            status = query_param(query.as_deref(), "code")
                .and_then(|v| v.parse::<u16>().ok())
                .and_then(|c| StatusCode::from_u16(c).ok())
                .unwrap_or(StatusCode::OK);
        }
        "/hop-response" => hop_response = true,
        _ => {}
    }

    // Hash the request body as it streams in.
    let mut body = req.into_body();
    let mut hasher = Sha256::new();
    let mut body_len = 0u64;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    body_len += data.len() as u64;
                    hasher.update(&data);
                }
            }
            Err(e) => {
                return Ok(Response::builder()
                    .status(StatusCode::BAD_REQUEST)
                    .body(full(format!("upstream: request body error: {e}")))
                    .unwrap());
            }
        }
    }

    let mut header_map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in headers {
        header_map.entry(name).or_default().push(value);
    }
    let json = serde_json::json!({
        "upstream": state.name,
        "method": method,
        "path": path,
        "headers": header_map,
        "body_len": body_len,
        "body_sha256": hasher.finish_hex(),
    });
    let mut builder = Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("x-upstream-name", state.name.as_str());
    if hop_response {
        builder = builder
            .header("connection", "X-Upstream-Hop")
            .header("x-upstream-hop", "must-not-reach-client")
            .header("keep-alive", "timeout=5, max=100")
            .header("proxy-authenticate", "Basic realm=\"upstream\"")
            .header("proxy-connection", "keep-alive")
            .header("trailer", "X-Checksum")
            .header("upgrade", "foo/1")
            .header("x-normal", "kept");
    }
    Ok(builder.body(full(json.to_string())).unwrap())
}

fn download(total: u64) -> Response<Body> {
    const CHUNK: usize = 64 * 1024;
    let stream = futures_util::stream::unfold(0u64, move |offset| async move {
        if offset >= total {
            return None;
        }
        let len = CHUNK.min((total - offset) as usize);
        let frame = Frame::data(Bytes::from(pattern_bytes(offset, len)));
        Some((Ok::<_, Infallible>(frame), offset + len as u64))
    });
    Response::builder()
        .header("content-type", "application/octet-stream")
        .body(BodyExt::boxed(StreamBody::new(stream)))
        .unwrap()
}

fn upgrade_websocket(req: Request<Incoming>) -> Response<Body> {
    let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
        return Response::builder()
            .status(StatusCode::BAD_REQUEST)
            .body(full("upstream: missing Sec-WebSocket-Key"))
            .unwrap();
    };
    let accept = derive_accept_key(key.as_bytes());
    tokio::spawn(async move {
        let Ok(upgraded) = hyper::upgrade::on(req).await else {
            return;
        };
        let mut ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        while let Some(Ok(message)) = ws.next().await {
            if message.is_close() {
                break;
            }
            let is_data = matches!(message, Message::Text(_) | Message::Binary(_));
            if is_data && ws.send(message).await.is_err() {
                break;
            }
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(hyper::header::CONNECTION, "Upgrade")
        .header(hyper::header::UPGRADE, "websocket")
        .header("sec-websocket-accept", accept)
        .body(full(Bytes::new()))
        .unwrap()
}
