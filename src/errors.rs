//! One error type for the whole request path, and the single place that turns an error
//! into a response. Clients get a status, a short fixed sentence and the request id; the
//! detailed cause (`source()` chain) goes to the log only.

use http::{Response, StatusCode};

use crate::body::Body;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What went wrong, from the client's point of view. Decides the status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// No route for this host and path.
    NotFound,
    MethodNotAllowed,
    /// The client sent something we refuse (bad query, replayed state, ...).
    BadRequest(&'static str),
    UriTooLong,
    HeadersTooLarge,
    /// The upstream refused the connection, reset it, or sent garbage.
    UpstreamUnavailable,
    /// The upstream did not answer within `server.upstream_timeout`.
    UpstreamTimeout,
    /// The identity provider failed or answered something invalid during a login.
    Idp(&'static str),
    /// The gateway is not ready (OIDC discovery not loaded yet).
    NotReady,
    /// The access token expired and refreshing it failed; says what failed.
    RefreshUnavailable(&'static str),
    /// A bug or a broken invariant on our side.
    Internal,
}

/// An error with its cause kept for the log.
#[derive(Debug)]
pub struct Error {
    pub kind: Kind,
    source: Option<BoxError>,
}

impl Error {
    pub fn new(kind: Kind) -> Self {
        Error { kind, source: None }
    }

    pub fn with_source(kind: Kind, source: impl Into<BoxError>) -> Self {
        Error {
            kind,
            source: Some(source.into()),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self.kind {
            Kind::NotFound => StatusCode::NOT_FOUND,
            Kind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Kind::BadRequest(_) => StatusCode::BAD_REQUEST,
            Kind::UriTooLong => StatusCode::URI_TOO_LONG,
            Kind::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Kind::UpstreamUnavailable | Kind::Idp(_) => StatusCode::BAD_GATEWAY,
            Kind::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Kind::NotReady | Kind::RefreshUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Kind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The fixed sentence shown to the client; never includes the cause.
    fn public_message(&self) -> &'static str {
        match self.kind {
            Kind::NotFound => "no route for this host and path",
            Kind::MethodNotAllowed => "method not allowed here",
            Kind::BadRequest(why) => why,
            Kind::UriTooLong => "request URI too long",
            Kind::HeadersTooLarge => "request headers too large",
            Kind::UpstreamUnavailable => "the upstream could not be reached",
            Kind::UpstreamTimeout => "the upstream did not answer in time",
            Kind::Idp(why) => why,
            Kind::NotReady => "the gateway is starting: identity provider not loaded yet",
            Kind::RefreshUnavailable(why) => why,
            Kind::Internal => "internal error",
        }
    }

    /// The whole cause chain, for the log line.
    pub fn cause_chain(&self) -> String {
        let mut out = String::new();
        let mut next: Option<&(dyn std::error::Error + 'static)> = self
            .source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static));
        while let Some(e) = next {
            let text = e.to_string();
            // Many errors already print their source; don't repeat it.
            if !out.contains(&text) {
                if !out.is_empty() {
                    out.push_str(": ");
                }
                out.push_str(&text);
            }
            next = e.source();
        }
        out
    }

    /// Logs the cause and renders the response: a small HTML page for browsers, plain text
    /// otherwise.
    pub fn to_response(&self, request_id: &str, wants_html: bool) -> Response<Body> {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(request_id, status = status.as_u16(), cause = %self.cause_chain(), "{}", self.public_message());
        } else {
            tracing::debug!(request_id, status = status.as_u16(), cause = %self.cause_chain(), "{}", self.public_message());
        }
        let reason = status.canonical_reason().unwrap_or("Error");
        if wants_html {
            let body = crate::response::render(
                &format!("{} {reason}", status.as_u16()),
                self.public_message(),
                request_id,
            );
            return crate::response::html_response(status, body);
        }
        let body = format!(
            "{} {reason}: {}\nrequest id: {request_id}\n",
            status.as_u16(),
            self.public_message()
        );
        crate::response::text_response(status, body)
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.public_message())?;
        let chain = self.cause_chain();
        if !chain.is_empty() {
            write!(f, ": {chain}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}
