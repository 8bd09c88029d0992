//! HTTP to the identity provider over the gateway's one pooled hyper-util client: JSON
//! GETs for discovery and JWKS, and the `oauth2` crate's requests (token endpoint) through
//! `execute`, so there is a single HTTP stack with one TLS configuration. Every call, of
//! whichever kind ([`IdpCall`]), goes through `execute_request`: the one place that times
//! it for the metrics and, when spans are exported, wraps it in a span named by its kind.

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use serde::de::DeserializeOwned;
use url::Url;

use crate::body;
use crate::errors::{Error, Kind};
use crate::http_client::HttpClient;

/// IdP answers are small; anything larger is refused rather than buffered.
const MAX_IDP_BODY: usize = 1024 * 1024;

/// The kinds of call to the IdP: a span's name, and (`endpoint`) the metrics' label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdpCall {
    Discovery,
    Jwks,
    /// The authorization code grant at the token endpoint.
    Token,
    /// The refresh-token grant at the token endpoint.
    Refresh,
    Userinfo,
    Revocation,
}

impl IdpCall {
    /// The span name.
    pub fn name(self) -> &'static str {
        match self {
            IdpCall::Discovery => "discovery",
            IdpCall::Jwks => "jwks",
            IdpCall::Token => "token",
            IdpCall::Refresh => "refresh",
            IdpCall::Userinfo => "userinfo",
            IdpCall::Revocation => "revocation",
        }
    }

    /// The endpoint called, as `portcullis_idp_request_duration_seconds` labels it: both
    /// grants are the token endpoint's.
    fn endpoint(self) -> &'static str {
        match self {
            IdpCall::Refresh => IdpCall::Token.name(),
            other => other.name(),
        }
    }
}

#[derive(Clone)]
pub struct IdpHttp {
    client: HttpClient,
}

impl IdpHttp {
    pub fn new(client: HttpClient) -> Self {
        IdpHttp { client }
    }

    /// GET a JSON document; non-2xx and malformed JSON are errors.
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        url: &Url,
        call: IdpCall,
        what: &'static str,
    ) -> Result<T, Error> {
        self.get_json_with_headers(url, call, what)
            .await
            .map(|(value, _)| value)
    }

    /// `get_json`, also returning the response headers (e.g. `Cache-Control`).
    pub async fn get_json_with_headers<T: DeserializeOwned>(
        &self,
        url: &Url,
        call: IdpCall,
        what: &'static str,
    ) -> Result<(T, http::HeaderMap), Error> {
        let req = http::Request::get(url.as_str())
            .header(http::header::ACCEPT, "application/json")
            .body(body::empty())
            .map_err(|e| Error::with_source(Kind::Idp(what), e))?;
        let resp = self.execute_request(req, call).await?;
        if !resp.status().is_success() {
            return Err(Error::with_source(
                Kind::Idp(what),
                format!("{url} answered {}", resp.status()),
            ));
        }
        let (parts, body) = resp.into_parts();
        serde_json::from_slice(&body)
            .map(|value| (value, parts.headers))
            .map_err(|e| Error::with_source(Kind::Idp(what), e))
    }

    /// Sends a request the gateway built itself (e.g. RFC 7009 revocation).
    pub async fn send(
        &self,
        req: http::Request<body::Body>,
        call: IdpCall,
    ) -> Result<http::Response<Bytes>, Error> {
        self.execute_request(req, call).await
    }

    /// Every IdP call: timed for the metrics, and in a span when spans are exported.
    async fn execute_request(
        &self,
        req: http::Request<body::Body>,
        call: IdpCall,
    ) -> Result<http::Response<Bytes>, Error> {
        let span = crate::otel::spans().map(|s| s.idp_call(call.name(), req.method(), req.uri()));
        let started = std::time::Instant::now();
        let result = self.execute_timed(req).await;
        crate::metrics::get().idp_call(call.endpoint(), started.elapsed());
        if let Some(span) = span {
            span.end(result.as_ref().map(|r| r.status().as_u16()));
        }
        result
    }

    async fn execute_timed(
        &self,
        req: http::Request<body::Body>,
    ) -> Result<http::Response<Bytes>, Error> {
        let resp = self.client.send(req).await.map_err(|e| {
            Error::with_source(Kind::Idp("the identity provider could not be reached"), e)
        })?;
        let (parts, body) = resp.into_parts();
        let bytes = Limited::new(body, MAX_IDP_BODY)
            .collect()
            .await
            .map_err(|e| {
                Error::with_source(
                    Kind::Idp("the identity provider's answer could not be read"),
                    e,
                )
            })?
            .to_bytes();
        Ok(http::Response::from_parts(parts, bytes))
    }

    /// The `oauth2` crate's client for one grant at the token endpoint (`Token` or
    /// `Refresh`; revocation is built in-house).
    pub fn token_endpoint(&self, call: IdpCall) -> TokenEndpoint<'_> {
        TokenEndpoint { http: self, call }
    }
}

/// [`IdpHttp`] as the `oauth2` crate's async HTTP client, for one kind of grant.
pub struct TokenEndpoint<'h> {
    http: &'h IdpHttp,
    call: IdpCall,
}

impl TokenEndpoint<'_> {
    /// Executes a request built by the `oauth2` crate.
    async fn execute(&self, req: oauth2::HttpRequest) -> Result<oauth2::HttpResponse, Error> {
        let (parts, body) = req.into_parts();
        let req = http::Request::from_parts(parts, body::full(body));
        let resp = self.http.execute_request(req, self.call).await?;
        Ok(resp.map(|b| b.to_vec()))
    }
}

/// A named type with a boxed `Send` future (rather than a closure) so the login future
/// stays provably `Send` for hyper.
impl<'c> oauth2::AsyncHttpClient<'c> for TokenEndpoint<'_> {
    type Error = Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<oauth2::HttpResponse, Error>> + Send + 'c>,
    >;

    fn call(&'c self, request: oauth2::HttpRequest) -> Self::Future {
        Box::pin(self.execute(request))
    }
}
