//! The gateway's own endpoints: `/healthz`, `/readyz`, `/metrics` and, under `/oauth2/`,
//! thin HTTP adapters over the auth service (names as in oauth2-proxy, so existing
//! nginx/Traefik setups port over), plus the query-string helpers they share.

pub mod auth;
pub mod backchannel_logout;
pub mod callback;
pub mod sign_out;
pub mod start;
pub mod userinfo;

use http::{Method, Request, Response};

use crate::auth::Auth;
use crate::body::Body;
use crate::errors::{Error, Kind};
use crate::request::RequestInfo;
use crate::routes::RouteTable;

/// The gateway's own endpoints, resolved once from `(method, path)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Healthz,
    Readyz,
    Metrics,
    Start,
    ForwardAuth,
    Callback,
    SignOut,
    Userinfo,
    BackchannelLogout,
}

impl Endpoint {
    /// The endpoint at the canonical `path`: `None` when the path is not one of the
    /// gateway's (it is routed), `Err` for an unknown `/oauth2/` path or a method the
    /// endpoint does not take.
    pub fn resolve(method: &Method, path: &str) -> Option<Result<Endpoint, Error>> {
        let read = method == Method::GET || method == Method::HEAD;
        let (endpoint, allowed) = match path {
            "/healthz" => (Endpoint::Healthz, true),
            "/readyz" => (Endpoint::Readyz, true),
            "/metrics" => (Endpoint::Metrics, true),
            "/oauth2/start" => (Endpoint::Start, read),
            "/oauth2/auth" => (Endpoint::ForwardAuth, read),
            "/oauth2/callback" => (Endpoint::Callback, read),
            "/oauth2/sign_out" => (Endpoint::SignOut, read || method == Method::POST),
            "/oauth2/userinfo" => (Endpoint::Userinfo, read),
            "/oauth2/backchannel-logout" => (Endpoint::BackchannelLogout, method == Method::POST),
            p if p.starts_with("/oauth2/") => return Some(Err(Error::new(Kind::NotFound))),
            _ => return None,
        };
        Some(if allowed {
            Ok(endpoint)
        } else {
            Err(Error::new(Kind::MethodNotAllowed))
        })
    }
}

/// Serves one of the `/oauth2/*` endpoints (the gateway answers health, readiness and
/// metrics itself).
pub async fn serve(
    endpoint: Endpoint,
    auth: &Auth,
    routes: &RouteTable,
    req: Request<Body>,
    info: &RequestInfo<'_>,
) -> Result<Response<Body>, Error> {
    match endpoint {
        Endpoint::Start => start::handle(auth, &req),
        Endpoint::ForwardAuth => auth::handle(auth, routes, &req, &info.conn).await,
        Endpoint::Callback => Ok(callback::handle(auth, &req, info).await),
        Endpoint::SignOut => sign_out::handle(auth, req).await,
        Endpoint::Userinfo => userinfo::handle(auth, &req).await,
        Endpoint::BackchannelLogout => backchannel_logout::handle(auth, req).await,
        Endpoint::Healthz | Endpoint::Readyz | Endpoint::Metrics => Err(Error::new(Kind::NotFound)),
    }
}

/// The query parameters, decoded.
pub fn query_params(query: Option<&str>) -> Vec<(String, String)> {
    url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

/// The one value of `name`; a repeated parameter is refused (parameter pollution).
pub fn single<'p>(params: &'p [(String, String)], name: &str) -> Result<Option<&'p str>, Error> {
    let mut found = params.iter().filter(|(k, _)| k == name);
    let first = found.next().map(|(_, v)| v.as_str());
    if found.next().is_some() {
        return Err(Error::new(Kind::BadRequest(
            "a query parameter is repeated",
        )));
    }
    Ok(first)
}
