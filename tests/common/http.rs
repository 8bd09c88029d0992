//! HTTP clients for tests.
//!
//! [`client`] is a reqwest client that never uses a proxy from the environment, never
//! follows redirects and accepts self-signed certificates. [`raw_request`] sends one
//! HTTP/1.1 request with the request-target exactly as given (reqwest parses URLs with
//! the `url` crate, which resolves `..` and `%2e%2e` before anything is sent), with
//! headers exactly as given (including `Host`).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// reqwest client for talking to the gateway: no env proxy, no redirects, self-signed
/// certificates accepted, 60 s overall timeout per request.
pub fn client() -> reqwest::Client {
    builder().build().expect("reqwest client")
}

/// The builder behind [`client`], for tests that need more (cookies, http1_only, ...).
pub fn builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(60))
}

/// A response read completely.
#[derive(Debug)]
pub struct RawResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl RawResponse {
    /// A response header as a string (first value), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends one HTTP/1.1 request over a fresh TCP connection to `addr`. `target` is sent
/// verbatim as the request-target. A `Host` header of `addr` is added unless `headers`
/// contains one. Bounded by a 30 s timeout.
pub async fn raw_request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> RawResponse {
    let fut = raw_request_inner(addr, method, target, headers, body.into());
    match tokio::time::timeout(Duration::from_secs(30), fut).await {
        Ok(Ok(response)) => response,
        Ok(Err(e)) => panic!("raw request {method} {target} to {addr} failed: {e}"),
        Err(_) => panic!("raw request {method} {target} to {addr} timed out"),
    }
}

/// Like [`raw_request`] but returns the error instead of panicking.
pub async fn try_raw_request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Result<RawResponse, String> {
    let fut = raw_request_inner(addr, method, target, headers, body.into());
    match tokio::time::timeout(Duration::from_secs(30), fut).await {
        Ok(result) => result,
        Err(_) => Err("timed out".to_string()),
    }
}

async fn raw_request_inner(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Result<RawResponse, String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let conn_task = tokio::spawn(conn);

    let mut request = Request::builder()
        .method(Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?)
        .uri(target)
        .body(Full::new(body))
        .map_err(|e| format!("build request: {e}"))?;
    let has_host = headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host"));
    if !has_host {
        request
            .headers_mut()
            .insert(hyper::header::HOST, addr.to_string().parse().unwrap());
    }
    for (name, value) in headers {
        request.headers_mut().append(
            HeaderName::from_bytes(name.as_bytes()).map_err(|e| e.to_string())?,
            HeaderValue::from_str(value).map_err(|e| e.to_string())?,
        );
    }

    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("send: {e}"))?;
    let status = response.status();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    conn_task.abort();
    Ok(RawResponse {
        status,
        headers,
        body,
    })
}

/// Serves `handler` on `listener` (HTTP/1.1 and h2c) until the returned task is aborted:
/// the accept loop of the in-process test servers (mock IdPs).
pub fn serve<F, Fut>(listener: tokio::net::TcpListener, handler: F) -> tokio::task::JoinHandle<()>
where
    F: Fn(hyper::Request<hyper::body::Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<
            Output = Result<
                hyper::Response<http_body_util::Full<bytes::Bytes>>,
                std::convert::Infallible,
            >,
        > + Send
        + 'static,
{
    use hyper_util::rt::{TokioExecutor, TokioIo};
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let handler = handler.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(handler);
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    })
}
