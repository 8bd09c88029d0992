//! The one body type of every request and response the gateway handles: either streamed
//! from a peer or a small buffer the gateway made itself. An enum, not a box: no
//! allocation per request. A leaf: anything may use it.

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::Incoming;

pub type Body = Either<Incoming, Full<Bytes>>;

/// A body the gateway wrote itself.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Either::Right(Full::new(bytes.into()))
}

pub fn empty() -> Body {
    Either::Right(Full::new(Bytes::new()))
}
