//! What a failed token-endpoint call means (RFC 6749 §5.2), shared by the code exchange
//! and the refresh: the caller decides the consequence, this only names the cause, with
//! the IdP's own `error` and `error_description` kept for the log.

use oauth2::basic::{BasicErrorResponse, BasicErrorResponseType};
use oauth2::RequestTokenError;

use super::printable;
use crate::errors::Error;

#[derive(Debug)]
pub enum TokenFailure {
    /// `invalid_grant`: the code or refresh token is dead (used, expired, revoked).
    InvalidGrant(String),
    /// `invalid_client`: the IdP refused the gateway's own client authentication, a
    /// configuration problem on the operator's side, not the user's.
    ClientRefused(String),
    /// Another OAuth error (`invalid_scope`, `unauthorized_client`, ...).
    Refused(String),
    /// The IdP could not be reached or answered something unreadable.
    Unreachable(String),
}

impl TokenFailure {
    pub fn detail(&self) -> &str {
        match self {
            TokenFailure::InvalidGrant(d)
            | TokenFailure::ClientRefused(d)
            | TokenFailure::Refused(d)
            | TokenFailure::Unreachable(d) => d,
        }
    }
}

/// The IdP's error as one log-safe line: `error: description`.
fn describe(r: &BasicErrorResponse) -> String {
    let mut text = format!("token endpoint error: {}", r.error());
    if let Some(d) = r.error_description() {
        text.push_str(": ");
        text.push_str(&printable(d, 200));
    }
    text
}

pub fn classify(e: RequestTokenError<Error, BasicErrorResponse>) -> TokenFailure {
    match e {
        RequestTokenError::ServerResponse(r) => match r.error() {
            BasicErrorResponseType::InvalidGrant => TokenFailure::InvalidGrant(describe(&r)),
            BasicErrorResponseType::InvalidClient => TokenFailure::ClientRefused(describe(&r)),
            _ => TokenFailure::Refused(describe(&r)),
        },
        other => TokenFailure::Unreachable(printable(&other.to_string(), 300)),
    }
}
