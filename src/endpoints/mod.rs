//! The gateway's own endpoints under `/oauth2/` (names as in oauth2-proxy, so existing
//! nginx/Traefik setups port over), plus the query-string helpers they share.

pub mod auth;
pub mod backchannel_logout;
pub mod callback;
pub mod sign_out;
pub mod start;
pub mod userinfo;

use http::{Method, Request, Response};
use hyper::body::Incoming;

use crate::auth::Auth;
use crate::body::Body;
use crate::errors::{Error, Kind};
use crate::request::RequestInfo;
use crate::routes::RouteTable;

/// Dispatches `/oauth2/*` by normalized path.
pub async fn handle(
    auth: &Auth,
    routes: &RouteTable,
    req: Request<Incoming>,
    path: &str,
    info: &RequestInfo<'_>,
) -> Result<Response<Body>, Error> {
    let method = req.method();
    let is_get = method == Method::GET || method == Method::HEAD;
    match path {
        "/oauth2/start" if is_get => start::handle(auth, &req),
        "/oauth2/auth" if is_get => auth::handle(auth, routes, &req, &info.conn).await,
        "/oauth2/callback" if is_get => Ok(callback::handle(auth, &req, info).await),
        "/oauth2/sign_out" if is_get || method == Method::POST => sign_out::handle(auth, req).await,
        "/oauth2/userinfo" if is_get => userinfo::handle(auth, &req).await,
        "/oauth2/backchannel-logout" if method == Method::POST => {
            backchannel_logout::handle(auth, req).await
        }
        "/oauth2/start"
        | "/oauth2/auth"
        | "/oauth2/callback"
        | "/oauth2/sign_out"
        | "/oauth2/userinfo"
        | "/oauth2/backchannel-logout" => Err(Error::new(Kind::MethodNotAllowed)),
        _ => Err(Error::new(Kind::NotFound)),
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
