//! `GET /oauth2/start?rd=<path>`: begins a login (see `Auth::start_login`): sets the login
//! cookie and sends the browser to the IdP's authorization endpoint.

use http::header;
use http::{Request, Response};

use super::{query_params, single};
use crate::auth::Auth;
use crate::body::Body;
use crate::errors::Error;
use crate::response;

pub fn handle<B>(auth: &Auth, req: &Request<B>) -> Result<Response<Body>, Error> {
    let params = query_params(req.uri().query());
    let (authorize_url, set_cookie) = auth.start_login(single(&params, "rd")?)?;
    let mut resp = response::redirect(&authorize_url);
    resp.headers_mut().append(header::SET_COOKIE, set_cookie);
    Ok(resp)
}
