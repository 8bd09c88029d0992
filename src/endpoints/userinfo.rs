//! `GET /oauth2/userinfo`: the signed-in user as JSON (never a token), 401 without a session.

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::auth::Auth;
use crate::body::Body;
use crate::errors::{Error, Kind};
use crate::response;
use crate::response::unauthorized;

pub async fn handle(auth: &Auth, req: &Request<Incoming>) -> Result<Response<Body>, Error> {
    let loaded = auth
        .sessions
        .load(req.headers())
        .await
        .map_err(|e| Error::with_source(Kind::Internal, e))?;
    let Some(loaded) = loaded else {
        return Ok(unauthorized());
    };
    let s = &loaded.session;
    let body = serde_json::json!({
        "sub": s.sub,
        "email": s.email,
        "name": s.name,
        "groups": s.groups,
    });
    Ok(response::json_response(StatusCode::OK, body.to_string()))
}
