//! HTTP to the identity provider over the gateway's one pooled hyper-util client: JSON
//! GETs for discovery and JWKS, and the `oauth2` crate's requests (token endpoint) through
//! `execute`, so there is a single HTTP stack with one TLS configuration.

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use serde::de::DeserializeOwned;
use url::Url;

use crate::body;
use crate::errors::{Error, Kind};
use crate::http_client::HttpClient;

/// IdP answers are small; anything larger is refused rather than buffered.
const MAX_IDP_BODY: usize = 1024 * 1024;

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
        endpoint: &'static str,
        what: &'static str,
    ) -> Result<T, Error> {
        self.get_json_with_headers(url, endpoint, what)
            .await
            .map(|(value, _)| value)
    }

    /// `get_json`, also returning the response headers (e.g. `Cache-Control`).
    pub async fn get_json_with_headers<T: DeserializeOwned>(
        &self,
        url: &Url,
        endpoint: &'static str,
        what: &'static str,
    ) -> Result<(T, http::HeaderMap), Error> {
        let req = http::Request::get(url.as_str())
            .header(http::header::ACCEPT, "application/json")
            .body(body::empty())
            .map_err(|e| Error::with_source(Kind::Idp(what), e))?;
        let resp = self.execute_request(req, endpoint).await?;
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
        endpoint: &'static str,
    ) -> Result<http::Response<Bytes>, Error> {
        self.execute_request(req, endpoint).await
    }

    async fn execute_request(
        &self,
        req: http::Request<body::Body>,
        endpoint: &'static str,
    ) -> Result<http::Response<Bytes>, Error> {
        let started = std::time::Instant::now();
        let result = self.execute_timed(req).await;
        crate::metrics::get().idp_call(endpoint, started.elapsed());
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

    /// Executes a request built by the `oauth2` crate.
    pub async fn execute(&self, req: oauth2::HttpRequest) -> Result<oauth2::HttpResponse, Error> {
        let (parts, body) = req.into_parts();
        // The oauth2 crate only calls the token endpoint (revocation is built in-house).
        let endpoint = "token";
        let req = http::Request::from_parts(parts, body::full(body));
        let resp = self.execute_request(req, endpoint).await?;
        Ok(resp.map(|b| b.to_vec()))
    }
}

/// The `oauth2` crate's async HTTP client. A named type with a boxed `Send` future (rather
/// than a closure) so the login future stays provably `Send` for hyper.
impl<'c> oauth2::AsyncHttpClient<'c> for IdpHttp {
    type Error = Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<oauth2::HttpResponse, Error>> + Send + 'c>,
    >;

    fn call(&'c self, request: oauth2::HttpRequest) -> Self::Future {
        Box::pin(self.execute(request))
    }
}
