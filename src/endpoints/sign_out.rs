//! `GET|POST /oauth2/sign_out?rd=<path>`: ends the session server-side (a replayed cookie
//! stops working at once), clears the cookie, and returns to a validated `rd`.

use http::header;
use http::{Request, Response};
use hyper::body::Incoming;

use super::{page, query_params, redirect::safe_return_path, single};
use crate::errors::{Error, Kind};
use crate::gateway::Auth;
use crate::proxy::Body;
use crate::session::{crypto::SessionId, find_cookie};

pub async fn handle(auth: &Auth, req: &Request<Incoming>) -> Result<Response<Body>, Error> {
    let params = query_params(req.uri().query());
    let return_to = safe_return_path(single(&params, "rd")?);
    let id =
        find_cookie(req.headers(), auth.sessions.cookie_name()).and_then(SessionId::from_cookie);
    if let Some(id) = id {
        auth.sessions
            .delete(&id)
            .await
            .map_err(|e| Error::with_source(Kind::Internal, e))?;
        tracing::info!(event = "logout", "session ended by sign-out");
    }
    let mut resp = page::redirect(&return_to);
    resp.headers_mut()
        .append(header::SET_COOKIE, auth.sessions.clear_cookie());
    Ok(resp)
}
