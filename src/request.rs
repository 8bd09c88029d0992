//! What the gateway knows about a request besides the request itself: the connection it
//! came on, its id and its trace. A leaf, so the request path, the endpoints and the proxy
//! can share it without pointing at each other.

use std::net::IpAddr;

use http::HeaderValue;

use crate::trace_context::RequestTrace;

/// Per-request facts shared with the endpoints.
pub struct RequestInfo<'a> {
    pub request_id: &'a str,
    /// The same id as a header value, for the upstream request.
    pub request_id_header: &'a HeaderValue,
    pub conn: ClientConn,
    /// The W3C trace the request belongs to: what goes upstream and into the access log.
    pub trace: RequestTrace,
    /// The request's span, when spans are exported (`[telemetry] otlp_endpoint`); `None`
    /// otherwise, and then no OpenTelemetry context exists for the request at all.
    pub span: Option<opentelemetry::Context>,
}

/// What the gateway knows about the client connection, with the header values derived
/// from it computed once per connection rather than once per request.
#[derive(Debug, Clone)]
pub struct ClientConn {
    pub peer: IpAddr,
    pub tls: bool,
    /// The peer is in `server.trusted_proxies`: it may describe requests it relays.
    pub trusted: bool,
    /// The peer address as an `X-Forwarded-For` value.
    pub(crate) peer_header: HeaderValue,
    /// `for=<peer>;proto=<scheme>` (RFC 7239 §4, IPv6 bracketed and quoted per §6).
    pub(crate) forwarded_base: String,
}

impl ClientConn {
    pub fn new(peer: IpAddr, tls: bool, trusted: bool) -> Self {
        let text = peer.to_string();
        let for_value = match peer {
            IpAddr::V4(_) => text.clone(),
            IpAddr::V6(_) => format!("\"[{text}]\""),
        };
        ClientConn {
            peer,
            tls,
            trusted,
            peer_header: HeaderValue::from_str(&text)
                .unwrap_or_else(|_| HeaderValue::from_static("unknown")),
            forwarded_base: format!("for={for_value};proto={}", Self::proto(tls)),
        }
    }

    pub(crate) fn proto(tls: bool) -> &'static str {
        if tls {
            "https"
        } else {
            "http"
        }
    }
}
