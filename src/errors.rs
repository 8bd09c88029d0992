//! One error type for the whole request path: what went wrong (`Kind`, from the client's
//! point of view) and its cause (the `source()` chain, for the log only). It knows causes,
//! not pages: `crate::response::error` is the one place that turns an error into a
//! response.

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
    /// The session store (Redis) did not answer in time: the request needs a session, so
    /// it is retried shortly rather than sent to log in (which would lose the user's place).
    StoreUnavailable,
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

    /// The fixed sentence shown to the client; never includes the cause.
    pub fn public_message(&self) -> &'static str {
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
            Kind::StoreUnavailable => {
                "the session store cannot be reached right now; please try again in a moment"
            }
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
