//! Envoy's gRPC external authorization, `envoy.service.auth.v3.Authorization/Check`, on
//! `server.ext_authz_grpc_listen` (h2c), with the published Envoy API's generated types.
//!
//! A `CheckRequest` is turned into the HTTP check Envoy's HTTP client would send
//! (`/oauth2/ext_authz<path>`, the original method, Host and headers, no body) and answered
//! by the gateway's own request path, so both transports decide alike: same routes,
//! policies, refresh, trust and logging. The answer is read back into a `CheckResponse`:
//! 200 becomes OK with the headers to set and `headers_to_remove`; a denial becomes a
//! `DeniedHttpResponse` Envoy relays to the client (302 to log in, 401, 403, 400); a 5xx
//! becomes a gRPC error, so Envoy's `status_on_error` / `failure_mode_allow` apply as
//! they do for the HTTP check.

use std::net::SocketAddr;
use std::sync::Arc;

use envoy_types::ext_authz::v3::pb::{
    Authorization, AuthorizationServer, CheckRequest, CheckResponse, DeniedHttpResponse,
    HeaderAppendAction, HeaderValue as EnvoyHeader, HeaderValueOption, HttpResponse, HttpStatus,
    OkHttpResponse,
};
use envoy_types::pb::google::protobuf::BoolValue;
use envoy_types::pb::google::rpc;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;

use crate::body::Body;
use crate::envoy;
use crate::gateway::Gateway;
use crate::request::ClientConn;

/// `google.rpc.Code` values Envoy reads.
const RPC_OK: i32 = 0;
const RPC_PERMISSION_DENIED: i32 = 7;
const RPC_UNAUTHENTICATED: i32 = 16;

/// A denial's body is the gateway's own small page; more is never relayed.
const MAX_DENIAL_BODY: usize = 64 * 1024;

/// Serves the Authorization service on `listener` until `stop` completes.
pub async fn serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .serve_with_incoming_shutdown(
            AuthorizationServer::new(ExtAuthz { gateway }),
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            stop,
        )
        .await
}

struct ExtAuthz {
    gateway: Arc<Gateway>,
}

#[tonic::async_trait]
impl Authorization for ExtAuthz {
    async fn check(
        &self,
        request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        let peer = request
            .remote_addr()
            .map(|a: SocketAddr| a.ip())
            .ok_or_else(|| tonic::Status::internal("no peer address"))?;
        let conn = ClientConn::new(peer, false, self.gateway.trusts(peer));
        let described =
            described_request(&request.into_inner()).map_err(tonic::Status::invalid_argument)?;
        let answer = self.gateway.handle(described, conn).await;
        check_response(answer).await.map(tonic::Response::new)
    }
}

/// The HTTP check Envoy's HTTP client would send for this `CheckRequest`.
fn described_request(check: &CheckRequest) -> Result<Request<Body>, &'static str> {
    let http = check
        .attributes
        .as_ref()
        .and_then(|a| a.request.as_ref())
        .and_then(|r| r.http.as_ref())
        .ok_or("CheckRequest without attributes.request.http")?;
    let path = if http.path.is_empty() {
        "/"
    } else {
        http.path.as_str()
    };
    let method = if http.method.is_empty() {
        "GET"
    } else {
        http.method.as_str()
    };
    let mut req = Request::builder()
        .method(method)
        .uri(format!("{}{path}", envoy::PATH_PREFIX))
        .body(crate::body::empty())
        .map_err(|_| "unusable method or path in the CheckRequest")?;
    let headers = req.headers_mut();
    let mut add = |name: &str, value: &[u8]| -> Result<(), &'static str> {
        // Pseudo-headers (`:authority`, `:path`, ...) are in the fields read above.
        if name.starts_with(':') {
            return Ok(());
        }
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| "unusable header name")?;
        let value = HeaderValue::from_bytes(value).map_err(|_| "unusable header value")?;
        headers.append(name, value);
        Ok(())
    };
    match &http.header_map {
        // `encode_raw_headers`: one entry per header line, values as sent.
        Some(map) if http.headers.is_empty() => {
            for h in &map.headers {
                let value = if h.raw_value.is_empty() {
                    h.value.as_bytes()
                } else {
                    &h.raw_value
                };
                add(&h.key, value)?;
            }
        }
        _ => {
            for (name, value) in &http.headers {
                add(name, value.as_bytes())?;
            }
        }
    }
    let host = match http.host.as_str() {
        "" => http.headers.get(":authority").map_or("", String::as_str),
        host => host,
    };
    if !host.is_empty() {
        let host = HeaderValue::from_str(host).map_err(|_| "unusable host")?;
        headers.insert(header::HOST, host);
    }
    Ok(req)
}

/// The gateway's HTTP answer as a `CheckResponse`.
async fn check_response(answer: Response<Body>) -> Result<CheckResponse, tonic::Status> {
    let status = answer.status();
    if status.is_server_error() {
        return Err(tonic::Status::unavailable(format!(
            "authorization unavailable ({})",
            status.as_u16()
        )));
    }
    let (parts, body) = answer.into_parts();
    let removals = parts
        .headers
        .get(envoy::HEADERS_TO_REMOVE)
        .and_then(|v| v.to_str().ok())
        .map(|list| {
            list.split(',')
                .filter(|n| !n.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    if status == StatusCode::OK {
        let headers = envoy::ALLOWED_UPSTREAM
            .iter()
            .filter_map(|name| parts.headers.get(name).map(|value| set(name, value)))
            .collect();
        return Ok(CheckResponse {
            status: Some(rpc_status(RPC_OK, "")),
            http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
                headers,
                headers_to_remove: removals,
                ..Default::default()
            })),
            ..Default::default()
        });
    }
    let body = http_body_util::Limited::new(body, MAX_DENIAL_BODY)
        .collect()
        .await
        .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
        .unwrap_or_default();
    let code = if status == StatusCode::FORBIDDEN {
        RPC_PERMISSION_DENIED
    } else {
        RPC_UNAUTHENTICATED
    };
    Ok(CheckResponse {
        status: Some(rpc_status(code, status.canonical_reason().unwrap_or(""))),
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus {
                code: i32::from(status.as_u16()),
            }),
            headers: client_headers(&parts.headers),
            body,
        })),
        ..Default::default()
    })
}

/// The denial's headers for the client (`Location`, `WWW-Authenticate`, `Set-Cookie`, ...),
/// without the ones Envoy computes itself or that are meant for Envoy.
fn client_headers(headers: &HeaderMap) -> Vec<HeaderValueOption> {
    headers
        .iter()
        .filter(|(name, _)| *name != header::CONTENT_LENGTH && *name != envoy::HEADERS_TO_REMOVE)
        .map(|(name, value)| set(name, value))
        .collect()
}

/// A header Envoy sets, replacing any copy (`append: false` for Envoy before 1.27).
fn set(name: &HeaderName, value: &HeaderValue) -> HeaderValueOption {
    #[allow(deprecated)]
    HeaderValueOption {
        header: Some(EnvoyHeader {
            key: name.as_str().to_string(),
            value: String::from_utf8_lossy(value.as_bytes()).into_owned(),
            ..Default::default()
        }),
        append: Some(BoolValue { value: false }),
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        keep_empty_value: false,
    }
}

fn rpc_status(code: i32, message: &str) -> rpc::Status {
    rpc::Status {
        code,
        message: message.to_string(),
        details: Vec::new(),
    }
}
