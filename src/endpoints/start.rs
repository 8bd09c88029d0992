//! `GET /oauth2/start?rd=<path>`: begins a login. The login in progress is sealed into a
//! cookie bound to its `state`, and the browser is sent to the IdP's authorization endpoint.

use http::header;
use http::{Request, Response};
use hyper::body::Incoming;

use super::{query_params, single};
use crate::auth::Auth;
use crate::body::Body;
use crate::errors::{Error, Kind};
use crate::response;

pub fn handle(auth: &Auth, req: &Request<Incoming>) -> Result<Response<Body>, Error> {
    let oidc = auth.oidc.get().ok_or_else(|| Error::new(Kind::NotReady))?;
    let params = query_params(req.uri().query());
    let return_to = auth.redirects.safe_target(single(&params, "rd")?);
    let (pending, authorize_url) = oidc.begin_login(return_to);
    let payload =
        serde_json::to_string(&pending).map_err(|e| Error::with_source(Kind::Internal, e))?;
    let set_cookie = auth
        .login_cookies
        .seal(&pending.state, payload)
        .ok_or_else(|| Error::with_source(Kind::Internal, "sealing the login cookie failed"))?;
    crate::metrics::get().login("started", "ok");
    let mut resp = response::redirect(authorize_url.as_str());
    resp.headers_mut().append(header::SET_COOKIE, set_cookie);
    Ok(resp)
}
