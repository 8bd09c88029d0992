//! `check-config` output: the typed config serialized back into the file's own sections and
//! keys, as TOML, by one redacting serializer (every typed section derives or implements
//! `Serialize` with the helpers here). Secrets print as `"[redacted]"`, durations as
//! humantime text, URLs, addresses and ranges as text, regexes as the patterns written.
//! The output is itself a config file that parses back into the same config.

use std::fmt::Display;
use std::time::Duration;

use serde::Serializer;

use super::Config;

/// What a secret prints as.
pub const REDACTED: &str = "[redacted]";

impl std::fmt::Display for Config {
    /// The effective configuration as TOML, every secret redacted (what
    /// `portcullis check-config` prints). Facts that have no key of their own (the
    /// client key's algorithm, a public client) come first, as comments.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(oidc) = &self.oidc {
            if let Some(key) = &oidc.client_key {
                writeln!(
                    f,
                    "# oidc.client_key_file: {} key, kid {:?}",
                    key.alg(),
                    key.kid()
                )?;
            } else if oidc.client_secret.is_none() {
                writeln!(f, "# oidc.client_secret: none (public client)")?;
            }
        }
        match toml::to_string(self) {
            Ok(text) => f.write_str(&text),
            // A value TOML cannot hold (an integer past i64, a non-UTF-8 path).
            Err(e) => writeln!(f, "# the effective config cannot be shown as TOML: {e}"),
        }
    }
}

pub(super) fn duration<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_duration(*d))
}

pub(super) fn display<T: Display, S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(value)
}

pub(super) fn opt_display<T: Display, S: Serializer>(
    value: &Option<T>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(v) => s.collect_str(v),
        None => s.serialize_none(),
    }
}

pub(super) fn display_list<T: Display, S: Serializer>(
    values: &[T],
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_seq(values.iter().map(ToString::to_string))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{CliOverrides, ConfigError};

    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml_with_env(text, &CliOverrides::default())
    }

    /// The output with each `"[redacted]"` replaced by a usable secret, read back.
    fn reread(config: &Config) -> Config {
        let shown = config.to_string();
        let usable = shown.replace(REDACTED, "a-long-enough-placeholder-secret-for-the-test");
        load(&usable).unwrap_or_else(|e| panic!("check-config output does not parse: {e}\n{shown}"))
    }

    const FULL: &str = r#"
[server]
listen = "127.0.0.1:4999"
public_url = "https://gw.example.com/base"
upstream_timeout = "1m 30s"
connect_timeout = "2s"
drain_timeout = "45s"
max_header_bytes = 20000
max_uri_length = 4096
workers = 3
trust_forwarded_headers = true
trusted_proxies = ["10.0.0.0/8", "::1"]
strip_request_headers = ["X_Debug", "x-internal"]
drop_underscore_headers = false
allowed_redirect_hosts = ["*.example.com"]
metrics_listen = "127.0.0.1:9100"
ext_authz_grpc_listen = "127.0.0.1:9191"

[log]
format = "json"
filter = "portcullis=debug,info"
log_user = false

[policy]
allow_domains = ["@Example.com"]
allow_claims = { department = ["eng", "ops"] }

[forward_auth]
pass_access_token = true

[telemetry]
otlp_endpoint = "http://127.0.0.1:4318/"
service_name = "gw-test"

[oidc]
issuer = "https://id.example.com/realms/x"
client_id = "gw"
client_secret = "topsecretvalue"
scopes = ["openid", "email"]
groups_claim = "roles"
api_audience = "api"
token_endpoint_auth_method = "client_secret_post"
userinfo = "always"
extra_authorize_params = { access_type = "offline", prompt = "consent" }
discovery_retry_max = "10s"

[session]
secret = ["0123456789abcdef0123456789abcdef", "fedcba9876543210fedcba9876543210"]
max_sessions = 500
idle_timeout = "1h"
absolute_timeout = "1day"
login_timeout = "5m"
refresh_before = "30s"
sign_out_requires_post = true

[[route]]
host = "App.Example.com"
path = "/api/"
upstream = "http://127.0.0.1:8080/v1"
preserve_host = true
accept_bearer = true
allow_groups = ["admins"]
allow_claims = {}
skip_auth_paths = ["/api/health", "/api/docs/.*"]
methods = ["get", "OPTIONS"]
allow_encoded_slashes = true

[[route]]
upstream = "http://127.0.0.1:8081"
public = true
"#;

    #[test]
    fn output_parses_back_into_the_same_config() {
        let config = load(FULL).unwrap();
        let again = reread(&config);
        assert_eq!(again.to_string(), config.to_string());
        // Spot checks that the values survived, not just the text.
        assert_eq!(again.server.upstream_timeout, Duration::from_secs(90));
        assert_eq!(again.routes[0].policy.allow_claims.len(), 0);
        assert_eq!(
            again.routes[1].policy.allow_claims["department"],
            ["eng", "ops"]
        );
        assert_eq!(
            again.routes[0].skip_auth_paths[1].as_str(),
            "^(?:/api/docs/.*)$"
        );
        assert_eq!(again.oidc.unwrap().policy_claims, ["department"]);
        assert_eq!(again.session.unwrap().secrets.len(), 2);

        let minimal = load("").unwrap();
        assert_eq!(reread(&minimal).to_string(), minimal.to_string());
    }

    #[test]
    fn output_uses_the_file_keys_and_redacts_every_secret() {
        let shown = load(FULL).unwrap().to_string();
        for secret in ["topsecretvalue", "0123456789abcdef", "fedcba9876543210"] {
            assert!(!shown.contains(secret), "{secret} in\n{shown}");
        }
        for line in [
            "client_secret = \"[redacted]\"",
            "secret = [\"[redacted]\", \"[redacted]\"]",
            "upstream_timeout = \"1m 30s\"",
            "trusted_proxies = [\"10.0.0.0/8\", \"::1/128\"]",
            "strip_request_headers = [\"x-debug\", \"x-internal\"]",
            "store = \"memory\"",
            "host = \"app.example.com\"",
            "host = \"*\"",
            "methods = [\"GET\", \"OPTIONS\"]",
            "token_endpoint_auth_method = \"client_secret_post\"",
            "format = \"json\"",
            "[telemetry]",
            "otlp_endpoint = \"http://127.0.0.1:4318/\"",
            "service_name = \"gw-test\"",
            "[[route]]",
        ] {
            assert!(shown.lines().any(|l| l == line), "no `{line}` in\n{shown}");
        }
    }

    #[test]
    fn a_public_client_and_a_client_key_are_noted() {
        let base = "[session]\nsecret = \"0123456789abcdef0123456789abcdef\"\ncookie_secure = false\n[oidc]\nissuer = \"http://127.0.0.1:1\"\nclient_id = \"c\"\n";
        let shown = load(base).unwrap().to_string();
        assert!(
            shown.starts_with("# oidc.client_secret: none (public client)\n"),
            "{shown}"
        );
        assert!(!shown.contains("client_secret ="), "{shown}");

        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("client.pem");
        std::fs::write(&key, crate::config::oidc::tests::p256_pem()).unwrap();
        let config = load(&format!(
            "{base}token_endpoint_auth_method = \"private_key_jwt\"\nclient_key_file = {key:?}\nclient_key_id = \"k1\"\n"
        ))
        .unwrap();
        let shown = config.to_string();
        assert!(
            shown.starts_with("# oidc.client_key_file: ES256 key, kid \"k1\"\n"),
            "{shown}"
        );
        assert!(shown.contains("client_key_id = \"k1\""), "{shown}");
        let again = reread(&config);
        let (a, b) = (config.oidc.unwrap(), again.oidc.unwrap());
        let (a, b) = (a.client_key.unwrap(), b.client_key.unwrap());
        assert_eq!(
            (a.alg(), a.kid(), a.public_jwk()),
            (b.alg(), b.kid(), b.public_jwk())
        );
    }
}
