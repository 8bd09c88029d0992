//! `GET /oauth2/userinfo`: the signed-in user as JSON (never a token), 401 without a session.
//! The user is resolved as for every other request (`Auth::identify`, refreshed if due).

use http::{Request, Response, StatusCode};

use crate::auth::Auth;
use crate::body::Body;
use crate::errors::Error;
use crate::response;
use crate::response::unauthorized;

pub async fn handle(auth: &Auth, req: &Request<Body>) -> Result<Response<Body>, Error> {
    let caller = auth.identify(req.headers()).await?;
    let Some(loaded) = &caller.session else {
        return Ok(caller.finish(auth, unauthorized()));
    };
    let s = &loaded.session;
    let body = serde_json::json!({
        "sub": s.sub,
        "email": s.email,
        "name": s.name,
        "groups": s.groups,
    });
    Ok(caller.finish(
        auth,
        response::json_response(StatusCode::OK, body.to_string()),
    ))
}
