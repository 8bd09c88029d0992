//! Who may pass, step 4 of the request path. Only this module can build a `Permit`, and
//! `Upstream::forward` requires one, so no request reaches an upstream without a decision.

use http::header::{self, HeaderMap, HeaderValue};

use crate::oidc::access_token::ApiIdentity;
use crate::proxy::headers::{self as h, strip_identity};
use crate::routes::Route;
use crate::session::Session;

/// The identity headers to set on the upstream request, built from the session.
#[derive(Debug)]
struct UserHeaders {
    bearer: HeaderValue,
    user: HeaderValue,
    email: Option<HeaderValue>,
    groups: Option<HeaderValue>,
}

/// Proof that the policy allowed this request, carrying what the upstream may learn.
#[derive(Debug)]
pub struct Permit {
    user: Option<UserHeaders>,
}

/// The policy's answer.
#[derive(Debug)]
pub enum Decision {
    Allow(Permit),
    /// No usable session: the caller sends a browser to log in, an API client a 401.
    Login,
}

/// Decides for a route and the session (if any) that came with the request.
pub fn evaluate(route: &Route, session: Option<&Session>) -> Decision {
    if route.public {
        return Decision::Allow(Permit { user: None });
    }
    match session.and_then(user_headers) {
        Some(user) => Decision::Allow(Permit { user: Some(user) }),
        None => Decision::Login,
    }
}

/// Decides for an API client that presented its own valid bearer token; the token itself
/// is forwarded unchanged.
pub fn evaluate_bearer(api: &ApiIdentity, authorization: &HeaderValue) -> Decision {
    let user = HeaderValue::from_str(&api.sub)
        .ok()
        .map(|user| UserHeaders {
            bearer: authorization.clone(),
            user,
            email: api
                .email
                .as_deref()
                .and_then(|e| HeaderValue::from_str(e).ok()),
            groups: groups_header(&api.groups),
        });
    match user {
        Some(user) => Decision::Allow(Permit { user: Some(user) }),
        None => Decision::Login,
    }
}

fn groups_header(groups: &[String]) -> Option<HeaderValue> {
    if groups.is_empty() {
        return None;
    }
    HeaderValue::from_str(&groups.join(",")).ok()
}

fn user_headers(s: &Session) -> Option<UserHeaders> {
    let bearer = HeaderValue::from_str(&format!("Bearer {}", s.access_token.expose())).ok()?;
    let mut bearer = bearer;
    bearer.set_sensitive(true);
    Some(UserHeaders {
        bearer,
        user: HeaderValue::from_str(&s.sub).ok()?,
        email: s
            .email
            .as_deref()
            .and_then(|e| HeaderValue::from_str(e).ok()),
        groups: groups_header(&s.groups),
    })
}

impl Permit {
    /// Removes what a client could forge, then sets the gateway's own assertions. On a
    /// public route the client's `Authorization` passes through (it is theirs, not ours).
    pub fn apply(&self, headers: &mut HeaderMap) {
        strip_identity(headers);
        let Some(user) = &self.user else { return };
        headers.insert(header::AUTHORIZATION, user.bearer.clone());
        headers.insert(h::X_FORWARDED_USER, user.user.clone());
        if let Some(email) = &user.email {
            headers.insert(h::X_FORWARDED_EMAIL, email.clone());
        }
        if let Some(groups) = &user.groups {
            headers.insert(h::X_FORWARDED_GROUPS, groups.clone());
        }
    }

    pub fn is_authenticated(&self) -> bool {
        self.user.is_some()
    }
}
