//! `[forward_auth]`: what `/oauth2/auth` (nginx `auth_request`, Traefik `forwardAuth`)
//! answers with besides the identity headers.

use serde::{Deserialize, Serialize};

use super::{parse, ConfigError};

/// Forward-auth (`/oauth2/auth`) options for nginx `auth_request` / Traefik `forwardAuth`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ForwardAuthConfig {
    /// Also answer with `X-Auth-Request-Access-Token`.
    pub pass_access_token: bool,
    /// Also answer with `Authorization: Bearer <access token>`.
    pub set_authorization: bool,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawForwardAuth {
    pass_access_token: Option<bool>,
    set_authorization: Option<bool>,
}

/// `[forward_auth]` from the file (`None`: absent).
pub(super) fn read(value: Option<config::Value>) -> Result<ForwardAuthConfig, ConfigError> {
    let raw: RawForwardAuth = match value {
        Some(v) => parse::section("forward_auth", v)?,
        None => RawForwardAuth::default(),
    };
    Ok(ForwardAuthConfig {
        pass_access_token: raw.pass_access_token.unwrap_or(false),
        set_authorization: raw.set_authorization.unwrap_or(false),
    })
}

#[cfg(test)]
mod tests {
    use crate::config::{CliOverrides, Config};

    #[test]
    fn off_by_default_and_typed() {
        let load = |t: &str| Config::from_toml_with_env(t, &CliOverrides::default());
        let fa = load("").unwrap().forward_auth;
        assert!(!fa.pass_access_token && !fa.set_authorization);
        let fa = load("[forward_auth]\nset_authorization = true\n")
            .unwrap()
            .forward_auth;
        assert!(fa.set_authorization && !fa.pass_access_token);
        let err = load("[forward_auth]\npass_token = true\n").unwrap_err();
        assert_eq!(err.key, "forward_auth.pass_token", "{err}");
    }
}
