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

/// What a server sent back on one raw TCP connection (see [`raw_exchange`]).
#[derive(Debug, Clone)]
pub struct RawExchange {
    /// Every byte received, in order.
    pub bytes: Vec<u8>,
    /// Whether the server closed the connection (rather than the read going idle).
    pub closed: bool,
}

/// One HTTP/1.1 response parsed out of a [`RawExchange`].
#[derive(Debug, Clone)]
pub struct ParsedResponse {
    pub status: u16,
    /// Lowercase names, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl ParsedResponse {
    /// The first value of a header (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl RawExchange {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    /// The responses in the received bytes, in order (framed by `Content-Length`,
    /// chunked encoding, or the end of the connection). Stops at the first thing that
    /// does not parse as a response.
    pub fn responses(&self) -> Vec<ParsedResponse> {
        let mut out = Vec::new();
        let mut rest: &[u8] = &self.bytes;
        while let Some((response, used)) = parse_response(rest) {
            out.push(response);
            rest = &rest[used..];
        }
        out
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn parse_response(bytes: &[u8]) -> Option<(ParsedResponse, usize)> {
    if !bytes.starts_with(b"HTTP/") {
        return None;
    }
    let head_end = find(bytes, b"\r\n\r\n")?;
    let head = std::str::from_utf8(&bytes[..head_end]).ok()?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let get = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let mut at = head_end + 4;
    let body = if (100..200).contains(&status) || status == 204 || status == 304 {
        Vec::new()
    } else if let Some(len) = get("content-length").and_then(|v| v.parse::<usize>().ok()) {
        let end = (at + len).min(bytes.len());
        let body = bytes[at..end].to_vec();
        at = end;
        body
    } else if get("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        let mut body = Vec::new();
        loop {
            let line_end = at + find(&bytes[at..], b"\r\n")?;
            let size_text = std::str::from_utf8(&bytes[at..line_end]).ok()?;
            let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
            at = line_end + 2;
            if size == 0 {
                // Trailers end with an empty line.
                let end = find(&bytes[at..], b"\r\n").map_or(bytes.len(), |i| at + i + 2);
                at = end;
                break;
            }
            let end = (at + size).min(bytes.len());
            body.extend_from_slice(&bytes[at..end]);
            at = (end + 2).min(bytes.len());
        }
        body
    } else {
        let body = bytes[at..].to_vec();
        at = bytes.len();
        body
    };
    Some((
        ParsedResponse {
            status,
            headers,
            body,
        },
        at,
    ))
}

/// Writes `bytes` to a fresh TCP connection to `addr` exactly as given (request smuggling,
/// malformed request lines, raw `\` in targets: nothing is parsed or fixed on the way
/// out), then reads until the server closes the connection or, once it has sent
/// something, sends nothing more for `idle` (the first byte may take up to 10 s on a busy
/// machine; overall at most 20 s).
pub async fn raw_exchange(addr: SocketAddr, bytes: &[u8], idle: Duration) -> RawExchange {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    // A server may answer and close before reading everything; a failed write is then
    // part of the outcome, not a test error.
    let _ = stream.write_all(bytes).await;
    let mut received = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let closed = loop {
        let quiet = if received.is_empty() {
            idle.max(Duration::from_secs(10))
        } else {
            idle
        };
        let wait = quiet.min(deadline.saturating_duration_since(tokio::time::Instant::now()));
        match tokio::time::timeout(wait, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
            Err(_) => break false,
        }
    };
    RawExchange {
        bytes: received,
        closed,
    }
}
