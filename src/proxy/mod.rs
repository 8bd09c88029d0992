//! The upstream side, step 7 of the request path: an authorized request goes to its
//! route's upstream over the shared pooled client (`crate::http_client`), bodies streamed
//! both ways, WebSocket upgrades spliced end to end.

pub mod headers;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode, Uri, Version};
use http_body_util::{Either, Full};
use hyper_util::rt::TokioIo;

use crate::body::Body;
use crate::errors::{Error, Kind};
use crate::http_client::HttpClient;
use crate::policy::Permit;
use crate::request::ClientConn;
use crate::routes::Route;
use crate::trace_context::RequestTrace;
use headers::ClientHeaderRules;

/// The proxy: forwards authorized requests over the shared pooled client.
#[derive(Clone)]
pub struct Upstream {
    client: HttpClient,
}

/// What the request path hands to `forward` besides the request itself.
pub struct ForwardContext<'a> {
    pub route: &'a Route,
    /// The canonical path the route matched: exactly what the upstream receives.
    pub canonical_path: &'a str,
    pub conn: &'a ClientConn,
    pub request_id: &'a HeaderValue,
    /// The trace the upstream continues: its `traceparent` (and the client's `tracestate`
    /// when the client's `traceparent` was kept).
    pub trace: RequestTrace,
    /// Keep the client's `X-Forwarded-*`/`Forwarded` (configured, and the peer is a
    /// trusted proxy).
    pub trust_forwarded: bool,
    pub client_headers: &'a ClientHeaderRules,
}

impl Upstream {
    /// The proxy over the shared pooled client.
    pub fn new(client: HttpClient) -> Self {
        Upstream { client }
    }

    /// Forwards an authorized request to the route's upstream and returns its response,
    /// streaming both bodies. The `Permit` proves the policy ran (only `policy` makes one).
    pub async fn forward(
        &self,
        mut req: Request<Body>,
        permit: &Permit,
        ctx: ForwardContext<'_>,
    ) -> Result<Response<Body>, Error> {
        let target = &ctx.route.upstream;
        let client_host = client_host(&req);
        let query = req.uri().query();
        let mut path_and_query = Vec::with_capacity(
            target.base_path.len() + ctx.canonical_path.len() + query.map_or(0, |q| q.len() + 1),
        );
        path_and_query.extend_from_slice(target.base_path.as_bytes());
        path_and_query.extend_from_slice(ctx.canonical_path.as_bytes());
        if let Some(q) = query {
            path_and_query.push(b'?');
            path_and_query.extend_from_slice(q.as_bytes());
        }
        let bad_target =
            |e: http::Error| Error::with_source(Kind::BadRequest("malformed request target"), e);
        let path_and_query =
            http::uri::PathAndQuery::from_maybe_shared(bytes::Bytes::from(path_and_query))
                .map_err(|e| bad_target(e.into()))?;
        let uri = Uri::builder()
            .scheme(target.scheme.clone())
            .authority(target.authority.clone())
            .path_and_query(path_and_query)
            .build()
            .map_err(bad_target)?;

        let client_upgrade = req
            .headers()
            .contains_key(header::UPGRADE)
            .then(|| hyper::upgrade::on(&mut req));
        let h = req.headers_mut();
        let upgrade = headers::strip_hop_by_hop(h);
        // What a client could forge goes before any header of ours is set.
        ctx.client_headers.apply(h);
        permit.apply(h);
        headers::set_forwarded(h, ctx.conn, client_host.as_ref(), ctx.trust_forwarded);
        h.insert(headers::X_REQUEST_ID, ctx.request_id.clone());
        ctx.trace.set_headers(h);
        let host = match (ctx.route.preserve_host, client_host) {
            (true, Some(original)) => original,
            _ => target.host_header.clone(),
        };
        h.insert(header::HOST, host);
        // Only WebSocket crosses (RFC 6455): an `h2c` or other upgrade would open a tunnel
        // in which the gateway sees no more requests.
        let upgrade = upgrade
            .filter(|u| u.as_bytes().eq_ignore_ascii_case(b"websocket"))
            .filter(|_| client_upgrade.is_some());
        if let Some(u) = &upgrade {
            headers::restore_upgrade(h, u.clone());
        }
        *req.uri_mut() = uri;
        *req.version_mut() = Version::HTTP_11;

        let mut resp = self.client.send(req).await.map_err(blame_client_body)?;

        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            return match (upgrade, client_upgrade) {
                (Some(_), Some(client_side)) => Ok(splice_upgrade(resp, client_side)),
                // A 101 nobody asked for cannot be relayed.
                _ => Err(Error::new(Kind::UpstreamUnavailable)),
            };
        }
        headers::strip_hop_by_hop(resp.headers_mut());
        Ok(resp.map(Either::Left))
    }
}

/// A failure that came from reading the client's request body (bad chunking, a body cut
/// short) is the client's: 400, not a 502 that blames the upstream.
fn blame_client_body(e: Error) -> Error {
    let mut next: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(&e);
    while let Some(cause) = next {
        if cause
            .downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_user)
        {
            return Error::with_source(Kind::BadRequest("the request body is malformed"), e);
        }
        next = cause.source();
    }
    e
}

/// The host the client addressed: `Host` for HTTP/1.1, the URI authority for HTTP/2.
/// A header value clone shares its bytes: no copy on the hot path.
pub fn client_host<B>(req: &Request<B>) -> Option<HeaderValue> {
    req.headers().get(header::HOST).cloned().or_else(|| {
        req.uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    })
}

/// Completes a WebSocket (or other) upgrade: answers the client with the upstream's 101
/// and copies bytes both ways once both sides have switched protocols.
fn splice_upgrade(
    mut upstream_resp: Response<hyper::body::Incoming>,
    client_side: hyper::upgrade::OnUpgrade,
) -> Response<Body> {
    let upstream_side = hyper::upgrade::on(&mut upstream_resp);
    tokio::spawn(async move {
        match tokio::try_join!(client_side, upstream_side) {
            Ok((client_io, upstream_io)) => {
                let mut client_io = TokioIo::new(client_io);
                let mut upstream_io = TokioIo::new(upstream_io);
                if let Err(e) =
                    tokio::io::copy_bidirectional(&mut client_io, &mut upstream_io).await
                {
                    tracing::debug!(error = %e, "upgraded connection ended with an error");
                }
            }
            Err(e) => tracing::debug!(error = %e, "protocol upgrade failed"),
        }
    });
    let (parts, _) = upstream_resp.into_parts();
    Response::from_parts(parts, Either::Right(Full::new(Bytes::new())))
}
