//! The headers through which the gateway tells an upstream (or the proxy in front, for
//! forward-auth) who the user is. A leaf: the policy sets them, the header rules strip
//! client copies of them.

use http::header::{HeaderName, HeaderValue};

pub const X_FORWARDED_USER: HeaderName = HeaderName::from_static("x-forwarded-user");
pub const X_FORWARDED_EMAIL: HeaderName = HeaderName::from_static("x-forwarded-email");
pub const X_FORWARDED_GROUPS: HeaderName = HeaderName::from_static("x-forwarded-groups");
pub const X_AUTH_REQUEST_USER: HeaderName = HeaderName::from_static("x-auth-request-user");
pub const X_AUTH_REQUEST_EMAIL: HeaderName = HeaderName::from_static("x-auth-request-email");
pub const X_AUTH_REQUEST_GROUPS: HeaderName = HeaderName::from_static("x-auth-request-groups");
pub const X_AUTH_REQUEST_ACCESS_TOKEN: HeaderName =
    HeaderName::from_static("x-auth-request-access-token");

/// The values of those headers for one user, built once per opened session (not per
/// request: the bearer alone is a kilobyte to copy and check).
#[derive(Debug, Clone)]
pub struct UserHeaders {
    /// `Authorization: Bearer <access token>`, marked sensitive.
    pub bearer: HeaderValue,
    pub user: HeaderValue,
    pub email: Option<HeaderValue>,
    pub groups: Option<HeaderValue>,
}

impl UserHeaders {
    /// `None` when the user id cannot be a header value (the user then cannot pass).
    pub fn new(
        bearer: HeaderValue,
        sub: &str,
        email: Option<&str>,
        groups: &[String],
    ) -> Option<Self> {
        Some(UserHeaders {
            bearer,
            user: HeaderValue::from_str(sub).ok()?,
            email: email.and_then(|e| HeaderValue::from_str(e).ok()),
            groups: if groups.is_empty() {
                None
            } else {
                HeaderValue::from_str(&groups.join(",")).ok()
            },
        })
    }

    /// For a session's own access token.
    pub fn for_access_token(
        access_token: &str,
        sub: &str,
        email: Option<&str>,
        groups: &[String],
    ) -> Option<Self> {
        let mut bearer = HeaderValue::from_str(&format!("Bearer {access_token}")).ok()?;
        bearer.set_sensitive(true);
        Self::new(bearer, sub, email, groups)
    }
}
