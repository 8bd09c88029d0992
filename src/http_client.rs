//! The one pooled HTTP client (hyper-util, keep-alive, http and https with rustls) that
//! the proxy uses for upstreams and the OIDC client for the IdP, so there is a single HTTP
//! stack with one TLS configuration. A leaf below both.

use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::body::Body;
use crate::errors::{Error, Kind};

/// The pooled client and its timeouts.
#[derive(Clone)]
pub struct HttpClient {
    client: Client<HttpsConnector<HttpConnector>, Body>,
    timeout: Duration,
}

impl HttpClient {
    pub fn new(
        connect_timeout: Duration,
        timeout: Duration,
        extra_roots: &[rustls_pki_types::CertificateDer<'static>],
    ) -> Self {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(connect_timeout));
        http.set_keepalive(Some(Duration::from_secs(60)));
        let tls = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(client_tls_config(extra_roots))
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(1024)
            .build(tls);
        HttpClient { client, timeout }
    }

    /// Sends a request and waits for the response head, bounded by the upstream timeout.
    /// Used by the proxy and by the OIDC client (discovery, JWKS, token endpoint).
    pub async fn send(&self, req: Request<Body>) -> Result<Response<Incoming>, Error> {
        match tokio::time::timeout(self.timeout, self.client.request(req)).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(Error::with_source(Kind::UpstreamUnavailable, e)),
            Err(_) => Err(Error::new(Kind::UpstreamTimeout)),
        }
    }
}

/// Trust store for https upstreams and the IdP: the platform's roots, Mozilla's, and the
/// operator's `server.upstream_ca_file`.
fn client_tls_config(
    extra_roots: &[rustls_pki_types::CertificateDer<'static>],
) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for cert in extra_roots {
        let _ = roots.add(cert.clone());
    }
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        // A malformed system certificate is skipped, as browsers do.
        let _ = roots.add(cert);
    }
    rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth()
}
