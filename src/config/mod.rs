//! Typed configuration: a TOML file, overridden by `PORTCULLIS__SECTION__KEY` environment
//! variables, overridden by CLI flags. Everything is validated once, here, before any socket
//! is bound; an error names the key and the reason (`server.upstream_timeout: ...`).
//!
//! One file per section holds its typed struct, its raw serde mirror and its checks; this
//! file reads the sections and checks what spans them. Sections are read in file order
//! and each value is checked as it is read, so the error reported is the first problem in
//! the file, the same one every run. `show` prints the effective config back as TOML.
//! `config` depends on no runtime module: the listener's TLS config is parsed here (by the
//! `tls` leaf) and kept.

mod forward_auth;
mod log;
mod oidc;
mod parse;
mod policy;
mod route;
mod server;
mod session;
mod show;
mod telemetry;

use std::path::Path;

use serde::Serialize;

pub use forward_auth::ForwardAuthConfig;
pub use log::{LogConfig, LogFormat};
pub use oidc::{OidcConfig, TokenAuthMethod, UserinfoMode};
pub use parse::Choice;
pub use policy::PolicyConfig;
pub use route::RouteConfig;
pub use server::{ServerConfig, TlsFiles};
pub use session::{RedisConfig, RedisMode, SessionConfig, StoreConfig};
pub use telemetry::TelemetryConfig;

/// A configuration problem: which key, and why. Printed as `key: reason`.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct ConfigError {
    pub key: String,
    pub reason: String,
}

impl ConfigError {
    fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// Overrides taken from the command line; they win over file and environment.
#[derive(Debug, Default, Clone)]
pub struct CliOverrides {
    pub listen: Option<String>,
    pub log_format: Option<LogFormat>,
}

/// The effective configuration. Serializes (as `check-config` prints it) under the file's
/// own section and key names, secrets redacted.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    pub server: ServerConfig,
    pub log: LogConfig,
    /// Defaults every route inherits; also the policy of forward-auth requests that match
    /// no route.
    pub policy: PolicyConfig,
    pub forward_auth: ForwardAuthConfig,
    /// Span export (OTLP/HTTP); off unless `otlp_endpoint` is set.
    pub telemetry: TelemetryConfig,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oidc: Option<OidcConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<SessionConfig>,
    #[serde(rename = "route", skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteConfig>,
}

impl Config {
    /// Loads the file, applies environment and CLI overrides, and validates everything.
    pub fn load(path: &Path, cli: &CliOverrides) -> Result<Config, ConfigError> {
        let file_text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new("--config", format!("cannot read {}: {e}", path.display()))
        })?;
        Self::from_toml_with_env(&file_text, cli)
    }

    /// Parses TOML text plus the process environment (used by `load` and by `demo`).
    pub fn from_toml_with_env(text: &str, cli: &CliOverrides) -> Result<Config, ConfigError> {
        let mut builder = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .add_source(
                config::Environment::with_prefix("PORTCULLIS")
                    .prefix_separator("__")
                    .separator("__")
                    .list_separator(",")
                    .with_list_parse_key("oidc.scopes")
                    .with_list_parse_key("server.allowed_redirect_hosts")
                    .with_list_parse_key("server.trusted_proxies")
                    .with_list_parse_key("server.strip_request_headers")
                    // PORTCULLIS__SESSION__SECRET=new,old rotates like a TOML list.
                    .with_list_parse_key("session.secret")
                    .with_list_parse_key("session.redis_urls")
                    .try_parsing(true),
            );
        if let Some(listen) = &cli.listen {
            // In place of the file's value, so a value the flag replaces is never read.
            builder = builder
                .set_override("server.listen", listen.as_str())
                .map_err(|e| parse::merge_error(&e))?;
        }
        let merged = builder.build().map_err(|e| parse::merge_error(&e))?;
        // `preserve_order`: the tables iterate in file order, then keys only the
        // environment sets.
        let table = merged
            .cache
            .into_table()
            .map_err(|e| parse::from_config_crate("", e))?;
        Sections::read(table, cli)?.finish(cli)
    }
}

/// The top-level tables, each read and checked on its own, in file order.
#[derive(Default)]
struct Sections {
    server: Option<ServerConfig>,
    log: Option<LogConfig>,
    policy: Option<policy::RawPolicy>,
    forward_auth: Option<ForwardAuthConfig>,
    telemetry: Option<TelemetryConfig>,
    oidc: Option<OidcConfig>,
    session: Option<SessionConfig>,
    routes: Vec<route::CheckedRoute>,
}

impl Sections {
    fn read(
        table: config::Map<String, config::Value>,
        cli: &CliOverrides,
    ) -> Result<Sections, ConfigError> {
        let mut s = Sections::default();
        for (name, value) in table {
            match name.as_str() {
                "server" => s.server = Some(server::read(Some(value))?),
                "log" => s.log = Some(log::read(Some(value), cli)?),
                "policy" => s.policy = Some(policy::read(value)?),
                "forward_auth" => s.forward_auth = Some(forward_auth::read(Some(value))?),
                "telemetry" => s.telemetry = Some(telemetry::read(Some(value))?),
                "oidc" => s.oidc = Some(oidc::read(value)?),
                "session" => s.session = Some(session::read(value)?),
                "route" => s.routes = route::read_all(value)?,
                _ => return Err(ConfigError::new(name, "unknown key")),
            }
        }
        Ok(s)
    }

    /// Fills in absent sections, lets routes inherit `[policy]`, and checks what spans
    /// sections.
    fn finish(self, cli: &CliOverrides) -> Result<Config, ConfigError> {
        let server = match self.server {
            Some(server) => server,
            None => server::read(None)?,
        };
        let log = match self.log {
            Some(log) => log,
            None => log::read(None, cli)?,
        };
        let global = self.policy.unwrap_or_default();
        let routes: Vec<RouteConfig> = self.routes.into_iter().map(|r| r.finish(&global)).collect();
        let policy = global.into_config();
        let mut oidc = self.oidc;
        if let Some(o) = oidc.as_mut() {
            o.policy_claims = claim_names(&policy, &routes);
        }
        check_across(&server, oidc.as_ref(), self.session.as_ref(), &routes)?;
        Ok(Config {
            server,
            log,
            policy,
            forward_auth: self.forward_auth.unwrap_or_default(),
            telemetry: match self.telemetry {
                Some(telemetry) => telemetry,
                None => telemetry::read(None)?,
            },
            oidc,
            session: self.session,
            routes,
        })
    }
}

/// Every claim an `allow_claims` rule names, sorted, each once.
fn claim_names(global: &PolicyConfig, routes: &[RouteConfig]) -> Vec<String> {
    let mut names: Vec<String> = routes
        .iter()
        .map(|r| &r.policy)
        .chain([global])
        .flat_map(|p| p.allow_claims.keys().cloned())
        .collect();
    names.sort();
    names.dedup();
    names
}

/// What no single section can check: routes that need `[oidc]`, `[oidc]` that needs a
/// `[session]`, and Secure cookies that need https.
fn check_across(
    server: &ServerConfig,
    oidc: Option<&OidcConfig>,
    session: Option<&SessionConfig>,
    routes: &[RouteConfig],
) -> Result<(), ConfigError> {
    if let Some(i) = routes.iter().position(|r| !r.public) {
        if oidc.is_none() {
            return Err(ConfigError::new(
                format!("route[{i}].public"),
                "the route needs login but [oidc] is not configured (set public = true or add [oidc])",
            ));
        }
    }
    if let Some(i) = routes.iter().position(|r| r.accept_bearer) {
        if oidc.is_none_or(|o| o.api_audience.is_none()) {
            return Err(ConfigError::new(
                format!("route[{i}].accept_bearer"),
                "needs oidc.api_audience (the audience API tokens must carry)",
            ));
        }
    }
    if oidc.is_some() && session.is_none() {
        return Err(ConfigError::new(
            "session",
            "[oidc] is configured but [session] (with a secret) is missing",
        ));
    }
    if session.is_some_and(|s| s.cookie_secure) && server.public_url.scheme() != "https" {
        return Err(ConfigError::new(
            "session.cookie_secure",
            "true requires an https server.public_url (browsers drop Secure cookies on http); set cookie_secure = false for plain-http local development",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml_with_env(text, &CliOverrides::default())
    }

    const SESSION: &str =
        "[session]\nsecret = \"0123456789abcdef0123456789abcdef\"\ncookie_secure = false\n";

    #[test]
    fn protected_route_needs_oidc() {
        let err = load("[[route]]\nupstream = \"http://127.0.0.1:1\"\n").unwrap_err();
        assert_eq!(err.key, "route[0].public");
    }

    #[test]
    fn checks_across_sections() {
        let oidc = "[oidc]\nissuer = \"http://127.0.0.1:1\"\nclient_id = \"c\"\n";
        let err = load(oidc).unwrap_err();
        assert_eq!(err.key, "session", "{err}");
        let err = load(&format!(
            "{oidc}{SESSION}[[route]]\nupstream = \"http://127.0.0.1:2\"\naccept_bearer = true\n"
        ))
        .unwrap_err();
        assert_eq!(err.key, "route[0].accept_bearer", "{err}");
        let secure = SESSION.replace("false", "true");
        let err = load(&format!("{oidc}{secure}")).unwrap_err();
        assert_eq!(err.key, "session.cookie_secure", "{err}");
        let ok = load(&format!(
            "[server]\npublic_url = \"https://gw.example.com\"\n{oidc}{secure}"
        ));
        assert!(ok.is_ok(), "{ok:?}");
    }

    #[test]
    fn policy_claims_collect_every_route_and_the_global_policy() {
        let cfg = load(&format!(
            "[oidc]\nissuer = \"http://127.0.0.1:1\"\nclient_id = \"c\"\n{SESSION}[policy]\nallow_claims = {{ b = [\"1\"] }}\n[[route]]\nupstream = \"http://127.0.0.1:2\"\nallow_claims = {{ a = [\"x\"], b = [\"2\"] }}\n"
        ))
        .unwrap();
        assert_eq!(cfg.oidc.unwrap().policy_claims, ["a", "b"]);
    }

    #[test]
    fn unknown_sections_and_non_tables_are_named() {
        assert_eq!(load("[sever]\nlisten = \"x\"\n").unwrap_err().key, "sever");
        let err = load("server = 5\n").unwrap_err();
        assert_eq!(err.key, "server", "{err}");
        let err = load("[server\nlisten = ").unwrap_err();
        assert_eq!(err.key, "config", "{err}");
    }

    /// The same bad file names the same key every run (the `config` crate's tables were
    /// hash maps: which of several problems came first changed from run to run).
    #[test]
    fn the_same_bad_file_names_the_same_key_every_time() {
        let text = "[server]\nlisen = 1\nupstream_timeout = \"ten\"\nconnect_timeout = \"x\"\n[log]\nformat = \"xml\"\nlevel = 1\n[oidc]\nissuer = \"nope\"\nuserinfo = \"x\"\n";
        let first = load(text).unwrap_err().to_string();
        assert!(first.starts_with("server.lisen: "), "{first}");
        for _ in 0..20 {
            // A fresh parse each time; a hash map would be seeded anew.
            assert_eq!(load(text).unwrap_err().to_string(), first);
        }
    }

    #[test]
    fn of_two_problems_the_first_in_the_file_is_named() {
        let pairs = [
            (
                "drain_timeout = \"x\"",
                "listen = \"nope\"",
                "drain_timeout",
                "listen",
            ),
            (
                "upstreem = 1",
                "allow_emails = [\"bob\"]",
                "upstreem",
                "allow_emails",
            ),
            (
                "max_header_bytes = 1",
                "lisen = 1",
                "max_header_bytes",
                "lisen",
            ),
        ];
        for (a, b, key_a, key_b) in pairs {
            let section = if a.starts_with("upstreem") {
                "[[route]]"
            } else {
                "[server]"
            };
            for (first, second, expected) in [(a, b, key_a), (b, a, key_b)] {
                let text = format!("{section}\n{first}\n{second}\n");
                let err = load(&text).unwrap_err();
                assert!(err.key.ends_with(expected), "{text}: {err}");
            }
        }
        // Across sections, too, whichever order they come in.
        let session = "[session]\nsecret = \"short\"\n";
        let server = "[server]\nconnect_timeout = \"x\"\n";
        assert_eq!(
            load(&format!("{session}{server}")).unwrap_err().key,
            "session.secret"
        );
        assert_eq!(
            load(&format!("{server}{session}")).unwrap_err().key,
            "server.connect_timeout"
        );
        let route = "[[route]]\nupstream = \"http://127.0.0.1:1\"\npublic = true\n";
        let bad_route = "[[route]]\npublic = true\n";
        let text = format!("{route}{bad_route}{route}upstreem = 1\n");
        assert_eq!(load(&text).unwrap_err().key, "route[1].upstream");
    }
}
