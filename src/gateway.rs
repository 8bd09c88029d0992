//! The request path, top to bottom, as one function (see ARCHITECTURE.md "The request path"):
//! limits → own endpoints → route → session → policy → header rewrite → upstream.
//! Each step uses only what the steps before it returned.

use std::sync::Arc;
use std::time::Instant;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode};

use crate::auth::Auth;
use crate::body::Body;
use crate::config::Config;
use crate::endpoints::{self, Endpoint};
use crate::envoy;
use crate::errors::{Error, Kind};
use crate::http_client::HttpClient;
use crate::metrics::RouteMetrics;
use crate::otel::Spans;
use crate::path;
use crate::policy::{self, Decision, Permit, Principal};
use crate::proxy::headers::{self, ClientHeaderRules};
use crate::proxy::{ForwardContext, Upstream};
use crate::request::{ClientConn, RequestInfo};
use crate::response;
use crate::routes::{Route, RouteTable};
use crate::trace_context::{self, RequestTrace};

pub struct Gateway {
    routes: Arc<RouteTable>,
    /// This serving thread's upstream pool (see `for_worker`).
    upstream: Upstream,
    /// Shared by every serving thread: one session store, one IdP client.
    auth: Option<Arc<Auth>>,
    max_header_bytes: usize,
    max_uri_length: usize,
    trust_forwarded: bool,
    trusted_proxies: Vec<crate::net::Cidr>,
    client_headers: ClientHeaderRules,
    log_user: bool,
    /// Serve `/metrics` here (false when `server.metrics_listen` has its own listener).
    metrics_here: bool,
    /// Counters for requests that are not routed: own endpoints, 404s.
    own_metrics: RouteMetrics,
    unrouted_metrics: RouteMetrics,
    /// Span export (`[telemetry] otlp_endpoint`); `None`: no spans, only `traceparent`.
    spans: Option<&'static Spans>,
}

/// What the access log line and the metrics need to know about the request's fate.
struct AccessLog<'a> {
    route: &'a str,
    metrics: &'a RouteMetrics,
    user: Option<String>,
}

impl Gateway {
    /// Builds the gateway and starts OIDC discovery in the background.
    pub fn new(config: &Config) -> Self {
        let server = &config.server;
        let client = HttpClient::new(
            server.connect_timeout,
            server.upstream_timeout,
            &server.upstream_ca,
        );
        let upstream = Upstream::new(client.clone());
        let auth = Auth::new(config, &client).map(Arc::new);
        Gateway {
            routes: Arc::new(RouteTable::new(&config.routes)),
            upstream,
            auth,
            max_header_bytes: server.max_header_bytes,
            max_uri_length: server.max_uri_length,
            trust_forwarded: server.trust_forwarded_headers,
            trusted_proxies: server.trusted_proxies.clone(),
            client_headers: ClientHeaderRules {
                drop_underscore: server.drop_underscore_headers,
                extra: server.strip_request_headers.clone(),
            },
            log_user: config.log.log_user,
            metrics_here: server.metrics_listen.is_none(),
            own_metrics: crate::metrics::get().route("gateway"),
            unrouted_metrics: crate::metrics::get().route("none"),
            spans: crate::otel::spans(),
        }
    }

    /// The same gateway for another serving thread: everything shared but the upstream
    /// pool, which is the thread's own so a proxied request never hands its connection
    /// to another thread (no cross-thread wake-ups on the hot path).
    pub fn for_worker(&self, server: &crate::config::ServerConfig) -> Gateway {
        let client = HttpClient::new(
            server.connect_timeout,
            server.upstream_timeout,
            &server.upstream_ca,
        );
        Gateway {
            routes: self.routes.clone(),
            upstream: Upstream::new(client),
            auth: self.auth.clone(),
            max_header_bytes: self.max_header_bytes,
            max_uri_length: self.max_uri_length,
            trust_forwarded: self.trust_forwarded,
            trusted_proxies: self.trusted_proxies.clone(),
            client_headers: self.client_headers.clone(),
            log_user: self.log_user,
            metrics_here: self.metrics_here,
            own_metrics: self.own_metrics.clone(),
            unrouted_metrics: self.unrouted_metrics.clone(),
            spans: self.spans,
        }
    }

    /// Applies what can change without a restart: the session secrets. Returns false when
    /// the new config has no session secrets to apply.
    pub fn reload(&self, config: &Config) -> bool {
        match (&self.auth, &config.session) {
            (Some(auth), Some(session)) => {
                auth.reload_secrets(&session.secrets);
                true
            }
            _ => false,
        }
    }

    /// Whether `peer` is in `server.trusted_proxies`.
    pub fn trusts(&self, peer: std::net::IpAddr) -> bool {
        self.trusted_proxies.iter().any(|c| c.contains(peer))
    }

    /// Ready when OIDC discovery (if configured) has loaded and the store answers.
    pub async fn is_ready(&self) -> bool {
        match &self.auth {
            None => true,
            Some(auth) => auth.is_ready().await,
        }
    }

    /// Serves one request; never fails (errors become responses) and logs one line.
    pub async fn handle(&self, req: Request<Body>, conn: ClientConn) -> Response<Body> {
        let started = Instant::now();
        let request_id = headers::request_id(req.headers());
        let method = req.method().clone();
        let uri = req.uri().clone();
        let wants_html = response::wants_html(req.headers());
        let mut log = AccessLog {
            route: "",
            metrics: &self.unrouted_metrics,
            user: None,
        };
        // The W3C trace: the client's kept, or a new one. With span export, the request's
        // span too, made current for everything the request path does (IdP calls).
        let incoming = trace_context::incoming(req.headers());
        let (trace, span) = match self.spans {
            None => (RequestTrace::begin(incoming), None),
            Some(spans) => {
                let (trace, cx) = spans.request(incoming, &method, uri.path(), conn.peer);
                (trace, Some(cx))
            }
        };
        let info = RequestInfo {
            request_id: request_id.to_str().unwrap_or(""),
            request_id_header: &request_id,
            conn,
            trace,
            span,
        };
        let routed = self.route_request(req, &uri, &info, &mut log);
        let result = match &info.span {
            None => routed.await,
            Some(cx) => opentelemetry::context::FutureExt::with_context(routed, cx.clone()).await,
        };
        let mut resp = match result {
            Ok(resp) => resp,
            Err(e) => response::error(&e, info.request_id, wants_html),
        };
        let status = resp.status().as_u16();
        log.metrics.count(status);
        tracing::info!(
            method = %method,
            path = uri.path(),
            route = log.route,
            status,
            latency_ms = started.elapsed().as_secs_f64() * 1000.0,
            request_id = info.request_id,
            trace_id = %info.trace.trace_id,
            user = log.user.as_deref(),
            "request"
        );
        if let (Some(spans), Some(cx)) = (self.spans, &info.span) {
            spans.end_request(cx, status, log.route);
        }
        resp.headers_mut()
            .insert(headers::X_REQUEST_ID, info.request_id_header.clone());
        resp
    }

    async fn route_request<'a>(
        &'a self,
        mut req: Request<Body>,
        uri: &http::Uri,
        info: &RequestInfo<'_>,
        log: &mut AccessLog<'a>,
    ) -> Result<Response<Body>, Error> {
        // 0. Limits, before any work. An Envoy check describes another request: it is
        // decided for that request, never routed itself.
        self.check_limits(&req, uri)?;
        if let Some(original) = uri
            .path_and_query()
            .and_then(|target| envoy::original_target(target.as_str()))
        {
            log.route = "ext_authz";
            log.metrics = &self.own_metrics;
            return Box::pin(self.ext_authz(req, original, info, log)).await;
        }
        // One canonical path and one host.
        let canonical = match path::canonicalize(uri.path()) {
            Ok(canonical) => canonical,
            Err(why) => return Ok(ambiguous_path(why, info, &req)),
        };
        let host = request_host(&req)?;
        let path = canonical.path;

        // 1. The gateway's own endpoints (`/metrics` is routed when it has its own listener).
        match Endpoint::resolve(req.method(), &path) {
            Some(Ok(Endpoint::Metrics)) if !self.metrics_here => {}
            Some(endpoint) => {
                log.route = "gateway";
                log.metrics = &self.own_metrics;
                // Boxed: the endpoints' futures are large and rare; keep them out of the
                // state every proxied request carries.
                return Box::pin(self.serve_own(endpoint?, req, info)).await;
            }
            None => {}
        }

        // 2. Route by host and canonical path.
        let route = self
            .routes
            .match_request(host, &path)
            .ok_or_else(|| Error::new(Kind::NotFound))?;
        log.route = &route.name;
        log.metrics = &route.metrics;
        if canonical.encoded_slash && !route.allow_encoded_slashes {
            return Ok(ambiguous_path(
                path::Ambiguous("encoded slash (the route does not allow_encoded_slashes)"),
                info,
                &req,
            ));
        }

        // 3–5. Who is asking, and may they pass?
        let permit = match self.admit(Some(route), &req, &path, log).await? {
            Authorized::Pass(permit) => permit,
            Authorized::Respond(early) => return Ok(early),
        };

        // 6. The upstream never sees the gateway's cookies.
        if let Some(auth) = &self.auth {
            headers::strip_cookies(req.headers_mut(), |name| auth.is_gateway_cookie(name));
        }

        // 7. Forward.
        self.forward(req, &permit, route, &path, info).await
    }

    /// Step 0: the size limits. (Then the one canonical path: what the gateway routes on
    /// must be what every upstream reads; an ambiguous one is a 400 with an audit line.)
    fn check_limits(&self, req: &Request<Body>, uri: &http::Uri) -> Result<(), Error> {
        if uri.path_and_query().map_or(0, |p| p.as_str().len()) > self.max_uri_length {
            return Err(Error::new(Kind::UriTooLong));
        }
        if headers::header_bytes(req.headers()) > self.max_header_bytes {
            return Err(Error::new(Kind::HeadersTooLarge));
        }
        Ok(())
    }

    /// Step 7: to the route's upstream, timed for the metrics (and in a span of its own
    /// when spans are exported: then the upstream's `traceparent` names that span).
    async fn forward(
        &self,
        req: Request<Body>,
        permit: &Permit,
        route: &Route,
        path: &str,
        info: &RequestInfo<'_>,
    ) -> Result<Response<Body>, Error> {
        let span = match (self.spans, &info.span) {
            (Some(spans), Some(cx)) => {
                let target = &route.upstream;
                let url = format!(
                    "{}://{}{}{path}",
                    target.scheme, target.authority, target.base_path
                );
                Some(spans.upstream(cx, req.method(), url))
            }
            _ => None,
        };
        let trace = span.as_ref().map_or(info.trace, |s| s.trace(info.trace));
        let sent = Instant::now();
        let result = self
            .upstream
            .forward(
                req,
                permit,
                ForwardContext {
                    route,
                    canonical_path: path,
                    conn: &info.conn,
                    request_id: info.request_id_header,
                    trace,
                    trust_forwarded: self.trust_forwarded && info.conn.trusted,
                    client_headers: &self.client_headers,
                },
            )
            .await;
        route.metrics.observe_upstream(sent.elapsed());
        if let Some(span) = span {
            span.end(result.as_ref().map(|r| r.status().as_u16()));
        }
        result
    }
}

impl Gateway {
    /// Step 1: one of the gateway's own endpoints.
    async fn serve_own(
        &self,
        endpoint: Endpoint,
        req: Request<Body>,
        info: &RequestInfo<'_>,
    ) -> Result<Response<Body>, Error> {
        match endpoint {
            Endpoint::Metrics => Ok(self.metrics_response().await),
            Endpoint::Healthz => Ok(response::text_response(StatusCode::OK, "ok\n")),
            Endpoint::Readyz if self.is_ready().await => {
                Ok(response::text_response(StatusCode::OK, "ready\n"))
            }
            Endpoint::Readyz => Ok(response::text_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready\n",
            )),
            _ => {
                let auth = self
                    .auth
                    .as_ref()
                    .ok_or_else(|| Error::new(Kind::NotFound))?;
                endpoints::serve(endpoint, auth, &self.routes, req, info).await
            }
        }
    }

    /// Steps 3–5: who is asking, and may they pass? `route` is `None` for an Envoy check
    /// of a request no route matches: the `[policy]` defaults apply, as for forward-auth.
    async fn admit(
        &self,
        route: Option<&Route>,
        req: &Request<Body>,
        path: &str,
        log: &mut AccessLog<'_>,
    ) -> Result<Authorized, Error> {
        let exempt = route.is_some_and(|r| policy::skips_auth(r, Some(req.method()), path));
        match &self.auth {
            // Boxed for the same reason as the endpoints: sessions, refresh and JWT checks
            // make a big future that public routes should not carry.
            Some(auth) if !exempt => Box::pin(self.authorize(auth, route, req, path, log)).await,
            _ => Ok(match route {
                Some(route) => self.allow(
                    policy::evaluate(route, req.method(), path, None),
                    req,
                    &route.name,
                    None,
                ),
                // No [oidc]: nobody can sign in.
                None => self.allow(Decision::Login, req, "ext_authz", None),
            }),
        }
    }

    /// Steps 3–5 for a request that needs login: an API client's own bearer token (where
    /// the route accepts one), else the session — refreshed if its access token is about
    /// to expire — then the policy.
    async fn authorize(
        &self,
        auth: &Auth,
        route: Option<&Route>,
        req: &Request<Body>,
        path: &str,
        log: &mut AccessLog<'_>,
    ) -> Result<Authorized, Error> {
        let method = req.method();
        let route_name = route.map_or("ext_authz", |r| r.name.as_str());
        let policy = route.map_or(auth.global_policy(), |r| &r.policy);

        // 3a. API clients with their own JWT.
        if route.is_some_and(|r| r.accept_bearer) {
            if let Some(authorization) = bearer_header(req.headers()) {
                let client = auth.oidc().ok_or_else(|| Error::new(Kind::NotReady))?;
                let token = authorization
                    .to_str()
                    .ok()
                    .and_then(|t| t.get("Bearer ".len()..))
                    .map_or("", str::trim);
                return Ok(match client.validate_access_token(token).await {
                    Ok(api) => {
                        if self.log_user {
                            log.user = Some(api.sub.clone());
                        }
                        let principal = Principal::Api {
                            identity: &api,
                            authorization,
                        };
                        let decision = policy::decide(policy, Some(principal));
                        self.allow(decision, req, route_name, Some(&api.sub))
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "API bearer token refused");
                        Authorized::Respond(response::invalid_token())
                    }
                });
            }
        }

        // 3b–4. The session, its access token refreshed if about to expire.
        let caller = auth.identify(req.headers()).await?;

        // 5. Policy.
        let session = caller.session.as_ref().map(|l| &l.session);
        let principal = session.map(|s| Principal::Session(s));
        let decision = match route {
            Some(route) => policy::evaluate(route, method, path, principal),
            None => policy::decide(policy, principal),
        };
        let sub = session.map(|s| s.sub.as_str());
        let result = match self.allow(decision, req, route_name, sub) {
            Authorized::Respond(resp) => Authorized::Respond(caller.finish(auth, resp)),
            pass => pass,
        };
        if self.log_user {
            log.user = caller.session.map(|l| l.session.sub.clone());
        }
        Ok(result)
    }
}

impl Gateway {
    /// An Envoy HTTP ext_authz check: the decision the reverse-proxy path would make for
    /// the request it describes (`<prefix><original target>`, with the original method,
    /// Host and the headers Envoy allows), as Envoy reads it: 200 with the headers to set
    /// upstream, or the denial Envoy relays to the client (302 to log in, 401, 403, 400).
    /// Every answer lists the identity headers Envoy must remove. Only trusted proxies are
    /// answered: an allowed answer carries the user's access token.
    async fn ext_authz<'a>(
        &'a self,
        req: Request<Body>,
        original: &str,
        info: &RequestInfo<'_>,
        log: &mut AccessLog<'a>,
    ) -> Result<Response<Body>, Error> {
        if !info.conn.trusted {
            tracing::info!(event = "ext_authz_untrusted", request_id = info.request_id, peer = %info.conn.peer, "ext_authz check from a peer outside server.trusted_proxies refused");
            return Ok(response::untrusted_peer());
        }
        let (mut parts, body) = req.into_parts();
        parts.uri = described_uri(&parts.uri, original)?;
        let described = Request::from_parts(parts, body);
        let mut set = HeaderMap::new();
        let resp = match self.check(&described, info, log).await {
            Ok(Authorized::Pass(permit)) => {
                permit.apply(&mut set);
                None
            }
            Ok(Authorized::Respond(denial)) => Some(denial),
            Err(e) => Some(response::error(
                &e,
                info.request_id,
                response::wants_html(described.headers()),
            )),
        };
        let removals = envoy::headers_to_remove(&self.client_headers, described.headers(), &set);
        let resp = resp.unwrap_or_else(|| envoy::allowed(set));
        Ok(envoy::list_removals(resp, &removals))
    }

    /// Steps 0–5 for a described request: its canonical path and Host, the route (none is
    /// fine: the `[policy]` defaults apply), the caller and the policy.
    async fn check<'a>(
        &'a self,
        req: &Request<Body>,
        info: &RequestInfo<'_>,
        log: &mut AccessLog<'a>,
    ) -> Result<Authorized, Error> {
        let canonical = match path::canonicalize(req.uri().path()) {
            Ok(canonical) => canonical,
            Err(why) => return Ok(Authorized::Respond(ambiguous_path(why, info, req))),
        };
        let route = self
            .routes
            .match_request(request_host(req)?, &canonical.path);
        if canonical.encoded_slash && !route.is_some_and(|r| r.allow_encoded_slashes) {
            let why = path::Ambiguous("encoded slash (the route does not allow_encoded_slashes)");
            return Ok(Authorized::Respond(ambiguous_path(why, info, req)));
        }
        if let Some(route) = route {
            log.route = &route.name;
        }
        self.admit(route, req, &canonical.path, log).await
    }
}

/// The outcome of steps 3–5: go on with a permit, or answer now (login redirect, 401).
enum Authorized {
    Pass(Permit),
    Respond(Response<Body>),
}

impl Gateway {
    /// `GET /metrics` in the Prometheus text format.
    pub async fn metrics_response(&self) -> Response<Body> {
        let sessions = match &self.auth {
            Some(a) => a.session_count().await,
            None => None,
        };
        response::metrics_response(crate::metrics::get().render(sessions))
    }

    /// Turns a decision into a permit or the answer for the client; a denial is logged
    /// as an audit event.
    fn allow<B>(
        &self,
        decision: Decision,
        req: &Request<B>,
        route: &str,
        sub: Option<&str>,
    ) -> Authorized {
        match decision {
            Decision::Allow(permit) => Authorized::Pass(permit),
            Decision::Login => Authorized::Respond(response::login_or_unauthorized(req)),
            Decision::Deny => {
                tracing::info!(
                    event = "policy_deny",
                    route,
                    sub = sub.unwrap_or(""),
                    "access denied by policy"
                );
                Authorized::Respond(response::forbidden(response::wants_html(req.headers())))
            }
        }
    }
}

/// The request's one valid Host (host.rs), or 400.
fn request_host<B>(req: &Request<B>) -> Result<Option<&str>, Error> {
    crate::host::request_host(req.headers(), req.uri(), req.version())
        .map_err(|why| Error::new(Kind::BadRequest(why.0)))
}

/// The request an Envoy check describes: the check's own scheme and authority (h2 carries
/// the original `:authority` there) with the original path and query.
fn described_uri(check: &http::Uri, original: &str) -> Result<http::Uri, Error> {
    let bad = || Error::new(Kind::BadRequest("unusable ext_authz target"));
    let mut parts = http::uri::Parts::default();
    parts.scheme = check.scheme().cloned();
    parts.authority = check.authority().cloned();
    parts.path_and_query = Some(original.parse().map_err(|_| bad())?);
    http::Uri::from_parts(parts).map_err(|_| bad())
}

/// The `Authorization` header when it carries a bearer token (RFC 6750 §2.1).
fn bearer_header(headers: &HeaderMap) -> Option<&HeaderValue> {
    headers
        .get(header::AUTHORIZATION)
        .filter(|v| v.as_bytes().len() > 7 && v.as_bytes()[..7].eq_ignore_ascii_case(b"bearer "))
}

/// 400 for a path that servers could read differently, with an audit line: someone may
/// be probing for a way past a public prefix.
fn ambiguous_path<B>(
    why: path::Ambiguous,
    info: &RequestInfo<'_>,
    req: &Request<B>,
) -> Response<Body> {
    tracing::info!(event = "ambiguous_path", request_id = info.request_id, peer = %info.conn.peer, reason = why.0, "request path refused");
    response::ambiguous_path(why.0, info.request_id, response::wants_html(req.headers()))
}

// A seam for the session-scale benchmark (examples/session_scale.rs), kept apart.
impl Gateway {
    /// The gateway's sessions (`None` without `[oidc]` and `[session]`): a benchmark fills
    /// the store the gateway serves from, through `Sessions::create`, before serving it.
    pub fn sessions(&self) -> Option<&crate::session::Sessions> {
        self.auth.as_deref().map(Auth::sessions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;
    use http_body_util::BodyExt;

    /// An upstream that answers with the path and headers it received.
    async fn echo_upstream() -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        crate::server::spawn_plain(listener, |req| async move {
            let mut text = format!("path={}\n", req.uri().path());
            for (name, value) in req.headers() {
                text.push_str(&format!("{name}: {}\n", value.to_str().unwrap_or("?")));
            }
            response::text_response(StatusCode::OK, text)
        });
        addr
    }

    async fn gateway() -> Gateway {
        crate::install_crypto_provider();
        let upstream = echo_upstream().await;
        let toml = format!(
            "[server]\npublic_url = \"http://127.0.0.1:1\"\n\
             [[route]]\npath = \"/public\"\nupstream = \"http://{upstream}\"\npublic = true\n"
        );
        let config = Config::from_toml_with_env(&toml, &Default::default()).unwrap();
        Gateway::new(&config)
    }

    fn request(path: &str, headers: &[(&str, &str)]) -> Request<Body> {
        let mut req = Request::get(path).body(crate::body::empty()).unwrap();
        req.headers_mut()
            .insert(header::HOST, HeaderValue::from_static("app.test"));
        for (name, value) in headers {
            req.headers_mut().append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        req
    }

    async fn send(gw: &Gateway, req: Request<Body>) -> (StatusCode, String) {
        let conn = ClientConn::new("127.0.0.1".parse().unwrap(), false, true);
        let resp = gw.handle(req, conn).await;
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn a_public_route_gets_the_canonical_path_without_forged_identity() {
        let gw = gateway().await;
        let (status, body) = send(
            &gw,
            request(
                "/public/a/../b//c?q=1",
                &[
                    ("x-forwarded-user", "boss"),
                    ("x_auth_request_user", "boss"),
                ],
            ),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body.starts_with("path=/public/b/c\n"), "{body}");
        assert!(!body.contains("boss"), "{body}");
    }

    #[tokio::test]
    async fn ambiguous_paths_and_hosts_are_refused_before_routing() {
        let gw = gateway().await;
        let (status, body) = send(&gw, request("/public/..%2fsecret", &[])).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body.contains("ambiguous_path"), "{body}");
        let mut two_hosts = request("/public/x", &[]);
        two_hosts
            .headers_mut()
            .append(header::HOST, HeaderValue::from_static("evil.test"));
        assert_eq!(send(&gw, two_hosts).await.0, StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn own_endpoints_answer_and_unknown_paths_are_404() {
        let gw = gateway().await;
        assert_eq!(
            send(&gw, request("/healthz", &[])).await,
            (StatusCode::OK, "ok\n".into())
        );
        // No [oidc]: nothing under /oauth2/, and no route for other paths.
        assert_eq!(
            send(&gw, request("/oauth2/start", &[])).await.0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            send(&gw, request("/elsewhere", &[])).await.0,
            StatusCode::NOT_FOUND
        );
        let post = Request::post("/oauth2/backchannel-logout")
            .header(header::HOST, "app.test")
            .body(crate::body::empty())
            .unwrap();
        assert_eq!(send(&gw, post).await.0, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn an_envoy_check_is_decided_for_the_described_request_never_proxied() {
        let gw = gateway().await;
        let check = |path: &str| {
            request(
                path,
                &[("x-forwarded-user", "boss"), ("x_forwarded_email", "b@x")],
            )
        };
        // A public route: 200 without identity and not the upstream's answer; forged
        // identity listed for removal.
        let conn = ClientConn::new("127.0.0.1".parse().unwrap(), false, true);
        let resp = gw
            .handle(check("/oauth2/ext_authz/public/a?q=1"), conn)
            .await;
        assert_eq!(resp.status(), StatusCode::OK);
        let removals = resp.headers()[envoy::HEADERS_TO_REMOVE]
            .to_str()
            .unwrap()
            .to_string();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert!(body.is_empty(), "{body:?}");
        for name in [
            "x-forwarded-user",
            "x-forwarded-groups",
            "x_forwarded_email",
        ] {
            assert!(
                removals.split(',').any(|n| n == name),
                "{name} in {removals}"
            );
        }
        // Dot segments after the prefix belong to the described path: never a request
        // for the path they resolve to.
        let (status, body) = send(&gw, check("/oauth2/ext_authz/../public/x")).await;
        assert!(!body.contains("path="), "proxied: {status} {body}");
        // No route and no [oidc]: nobody can sign in.
        assert_eq!(
            send(&gw, check("/oauth2/ext_authz/elsewhere")).await.0,
            StatusCode::UNAUTHORIZED
        );
        // Only trusted proxies are answered.
        let untrusted = ClientConn::new("192.0.2.1".parse().unwrap(), false, false);
        let resp = gw
            .handle(check("/oauth2/ext_authz/public/a"), untrusted)
            .await;
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    }

    #[test]
    fn own_endpoints_resolve_once_by_method_and_path() {
        use crate::endpoints::Endpoint;
        assert_eq!(
            Endpoint::resolve(&Method::GET, "/oauth2/callback").map(|r| r.ok()),
            Some(Some(Endpoint::Callback))
        );
        assert!(matches!(
            Endpoint::resolve(&Method::POST, "/oauth2/callback"),
            Some(Err(e)) if e.kind == Kind::MethodNotAllowed
        ));
        assert!(matches!(
            Endpoint::resolve(&Method::GET, "/oauth2/nope"),
            Some(Err(e)) if e.kind == Kind::NotFound
        ));
        assert!(Endpoint::resolve(&Method::GET, "/app").is_none());
    }
}
