//! `POST /oauth2/backchannel-logout`: the IdP tells us a user's session ended (OpenID
//! Connect Back-Channel Logout 1.0). A valid logout token ends every gateway session of
//! that `sid` or `sub`; a forged, stale or replayed one is refused with 400 (§2.8).

use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};

use crate::auth::Auth;
use crate::body::Body;
use crate::errors::{Error, Kind};
use crate::response;

/// A logout token is a JWT in a small form; anything bigger is not one.
const MAX_BODY: usize = 16 * 1024;

pub async fn handle(auth: &Auth, req: Request<Body>) -> Result<Response<Body>, Error> {
    let body = Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| Error::with_source(Kind::BadRequest("unreadable request body"), e))?
        .to_bytes();
    let token = url::form_urlencoded::parse(&body)
        .find(|(k, _)| k == "logout_token")
        .map(|(_, v)| v.into_owned())
        .ok_or_else(|| Error::new(Kind::BadRequest("missing logout_token")))?;
    match auth.backchannel_logout(&token).await {
        Ok(()) => Ok(response::text_response(StatusCode::OK, "")),
        Err(e) if e.kind == Kind::NotReady => Err(e),
        Err(e) => {
            tracing::info!(event = "backchannel_logout_rejected", reason = %e, "logout token refused");
            Ok(refused())
        }
    }
}

fn refused() -> Response<Body> {
    response::json_response(
        StatusCode::BAD_REQUEST,
        r#"{"error":"invalid_request","error_description":"invalid logout token"}"#.to_string(),
    )
}
