//! Typed configuration: a TOML file, overridden by `PORTCULLIS__SECTION__KEY` environment
//! variables, overridden by CLI flags. Everything is validated once, here, before any socket
//! is bound; an error names the key and the reason (`server.upstream_timeout: ...`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use crate::client_key::ClientKey;
use crate::net::Cidr;
use crate::secret::Secret;

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

#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub log: LogConfig,
    /// Defaults every route inherits; also the policy of forward-auth requests that match
    /// no route.
    pub policy: PolicyConfig,
    pub forward_auth: ForwardAuthConfig,
    pub oidc: Option<OidcConfig>,
    pub session: Option<SessionConfig>,
    pub routes: Vec<RouteConfig>,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub public_url: Url,
    pub tls: Option<TlsFiles>,
    /// Extra CA certificates (PEM) trusted for https upstreams and the IdP.
    pub upstream_ca: Vec<rustls_pki_types::CertificateDer<'static>>,
    pub upstream_ca_file: Option<PathBuf>,
    pub upstream_timeout: Duration,
    pub connect_timeout: Duration,
    pub drain_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_uri_length: usize,
    pub trust_forwarded_headers: bool,
    /// Peers whose forward-auth descriptions and (with `trust_forwarded_headers`)
    /// `X-Forwarded-*`/`Forwarded` headers are believed.
    pub trusted_proxies: Vec<Cidr>,
    /// Client request headers never passed upstream, besides the identity families;
    /// lowercase with `_` read as `-`.
    pub strip_request_headers: Vec<String>,
    /// Drop every client request header with `_` in its name (as nginx does).
    pub drop_underscore_headers: bool,
    /// Hosts that `rd` and post-logout targets may name in absolute URLs.
    pub allowed_redirect_hosts: Vec<String>,
    /// A separate listener for `/metrics` (else it is served on the main listener).
    pub metrics_listen: Option<SocketAddr>,
}

/// The listener's certificate and key files, and the server config parsed from them at
/// validation (the listener serves with it; nothing parses the files again).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub server_config: Arc<rustls::ServerConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("expected \"text\" or \"json\", got {other:?}")),
        }
    }
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub format: LogFormat,
    pub filter: String,
    /// Whether the per-request log line carries the user's subject.
    pub log_user: bool,
}

#[derive(Debug, Clone)]
pub struct OidcConfig {
    pub issuer: Url,
    pub client_id: String,
    /// `None` for a public client (no client authentication at the token endpoint).
    pub client_secret: Option<Secret>,
    pub scopes: Vec<String>,
    pub groups_claim: String,
    /// Audience of API clients' own JWT access tokens (routes with `accept_bearer`).
    pub api_audience: Option<String>,
    /// Extra parameters for the authorization request (e.g. Google's
    /// `access_type = "offline"`); never the ones the login flow itself sets.
    pub extra_authorize_params: BTreeMap<String, String>,
    /// Claims named by any `allow_claims` rule; kept in sessions for the policy.
    pub policy_claims: Vec<String>,
    /// Forces the client authentication method; `None` picks from discovery.
    pub token_endpoint_auth_method: Option<TokenAuthMethod>,
    /// The key for `private_key_jwt`, parsed (and so checked) when the config is read.
    pub client_key: Option<Arc<ClientKey>>,
    /// When to ask the userinfo endpoint for claims the ID token lacks.
    pub userinfo: UserinfoMode,
    pub discovery_retry_max: Duration,
}

/// `oidc.userinfo`: when the gateway calls the IdP's userinfo endpoint (OIDC Core §5.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserinfoMode {
    /// At login, when the ID token lacks a claim the gateway needs.
    #[default]
    Auto,
    /// At login and after every refresh.
    Always,
    Never,
}

#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// First seals, all open (rotation).
    pub secrets: Vec<Secret>,
    pub cookie_secure: bool,
    pub max_sessions: u64,
    pub idle_timeout: Duration,
    pub absolute_timeout: Duration,
    pub login_timeout: Duration,
    /// Refresh the access token when it expires within this.
    pub refresh_before: Duration,
    /// Sign-out only by POST (a GET shows a confirmation form).
    pub sign_out_requires_post: bool,
}

/// Who may pass a protected route. Empty lists everywhere: any signed-in user. Otherwise a
/// user passes when ANY listed rule admits them (email, domain, group or claim).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PolicyConfig {
    /// Exact addresses, compared case-insensitively (stored lowercase).
    pub allow_emails: Vec<String>,
    /// Email domains, exact match, case-insensitive (stored lowercase).
    pub allow_domains: Vec<String>,
    pub allow_groups: Vec<String>,
    /// Claim name → accepted values (a claim that is a list passes if any value matches).
    pub allow_claims: BTreeMap<String, Vec<String>>,
}

impl PolicyConfig {
    pub fn is_open(&self) -> bool {
        self.allow_emails.is_empty()
            && self.allow_domains.is_empty()
            && self.allow_groups.is_empty()
            && self.allow_claims.is_empty()
    }
}

/// How a confidential client authenticates at the token endpoint (RFC 8414 §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenAuthMethod {
    ClientSecretBasic,
    ClientSecretPost,
    /// RFC 7523 client assertion signed with `oidc.client_key_file`.
    PrivateKeyJwt,
    /// A public client: no client authentication.
    None,
}

impl TokenAuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenAuthMethod::ClientSecretBasic => "client_secret_basic",
            TokenAuthMethod::ClientSecretPost => "client_secret_post",
            TokenAuthMethod::PrivateKeyJwt => "private_key_jwt",
            TokenAuthMethod::None => "none",
        }
    }
}

/// Forward-auth (`/oauth2/auth`) options for nginx `auth_request` / Traefik `forwardAuth`.
#[derive(Debug, Clone, Default)]
pub struct ForwardAuthConfig {
    /// Also answer with `X-Auth-Request-Access-Token`.
    pub pass_access_token: bool,
    /// Also answer with `Authorization: Bearer <access token>`.
    pub set_authorization: bool,
}

#[derive(Debug, Clone)]
pub struct RouteConfig {
    pub host: Option<String>,
    pub path: String,
    pub upstream: Url,
    pub public: bool,
    pub preserve_host: bool,
    /// Accept API clients' own JWT bearer tokens (validated against the IdP's keys).
    pub accept_bearer: bool,
    /// The route's rules, each unset key inherited from `[policy]`.
    pub policy: PolicyConfig,
    /// Anchored regexes on the normalized path that need no login.
    pub skip_auth_paths: Vec<regex::Regex>,
    /// Methods for which `skip_auth_paths` apply (all when empty); with no paths, requests
    /// with these methods need no login (e.g. CORS preflight `OPTIONS`).
    pub methods: Vec<http::Method>,
    /// Accept `%2F` inside a path segment (APIs that need it); never around a dot segment.
    pub allow_encoded_slashes: bool,
}

// ---- raw, as written by the operator ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    log: RawLog,
    oidc: Option<RawOidc>,
    session: Option<RawSession>,
    #[serde(default)]
    policy: RawPolicy,
    #[serde(default)]
    forward_auth: RawForwardAuth,
    #[serde(default)]
    route: Vec<RawRoute>,
}

#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    allow_emails: Option<Vec<String>>,
    allow_domains: Option<Vec<String>>,
    allow_groups: Option<Vec<String>>,
    allow_claims: Option<BTreeMap<String, Vec<String>>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawForwardAuth {
    pass_access_token: Option<bool>,
    set_authorization: Option<bool>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<String>,
    public_url: Option<String>,
    tls_cert_file: Option<PathBuf>,
    tls_key_file: Option<PathBuf>,
    upstream_ca_file: Option<PathBuf>,
    upstream_timeout: Option<String>,
    connect_timeout: Option<String>,
    drain_timeout: Option<String>,
    max_header_bytes: Option<usize>,
    max_uri_length: Option<usize>,
    trust_forwarded_headers: Option<bool>,
    trusted_proxies: Option<Vec<String>>,
    strip_request_headers: Option<Vec<String>>,
    drop_underscore_headers: Option<bool>,
    allowed_redirect_hosts: Option<Vec<String>>,
    metrics_listen: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLog {
    format: Option<LogFormat>,
    filter: Option<String>,
    log_user: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOidc {
    issuer: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    client_secret_file: Option<PathBuf>,
    scopes: Option<Vec<String>>,
    groups_claim: Option<String>,
    api_audience: Option<String>,
    token_endpoint_auth_method: Option<TokenAuthMethod>,
    client_key_file: Option<PathBuf>,
    client_key_id: Option<String>,
    userinfo: Option<UserinfoMode>,
    extra_authorize_params: Option<BTreeMap<String, String>>,
    discovery_retry_max: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSession {
    secret: Option<OneOrMany>,
    secret_file: Option<PathBuf>,
    cookie_secure: Option<bool>,
    store: Option<String>,
    max_sessions: Option<u64>,
    idle_timeout: Option<String>,
    absolute_timeout: Option<String>,
    login_timeout: Option<String>,
    refresh_before: Option<String>,
    sign_out_requires_post: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    host: Option<String>,
    path: Option<String>,
    upstream: Option<String>,
    public: Option<bool>,
    preserve_host: Option<bool>,
    accept_bearer: Option<bool>,
    #[serde(flatten)]
    policy: RawPolicy,
    skip_auth_paths: Option<Vec<String>>,
    methods: Option<Vec<String>>,
    allow_encoded_slashes: Option<bool>,
}

/// Authorization request parameters the PKCE login sets itself.
const RESERVED_AUTHORIZE_PARAMS: [&str; 9] = [
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "nonce",
    "code_challenge",
    "code_challenge_method",
    "response_mode",
];

/// Minimum length of a session secret, in bytes (at least 32: 256 bits).
const MIN_SECRET_BYTES: usize = 32;

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
        let built = config::Config::builder()
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
                    .try_parsing(true),
            )
            .build()
            .map_err(|e| ConfigError::new("config", clean_config_error(&e)))?;
        let raw: RawConfig = built
            .try_deserialize()
            .map_err(|e| config_error_from_serde(&e))?;
        raw.validate(cli)
    }
}

/// The `config` crate reports unknown fields as "unknown field `x`, expected ... for key `y`";
/// turn that into `y.x: unknown key`.
fn config_error_from_serde(e: &config::ConfigError) -> ConfigError {
    let text = clean_config_error(e);
    if let Some(rest) = text.strip_prefix("unknown field `") {
        let field = rest.split('`').next().unwrap_or("");
        let section = text
            .rsplit_once("for key `")
            .map(|(_, k)| k.trim_end_matches('`').trim_end_matches("` in the file"))
            .map(|k| k.split('`').next().unwrap_or(k))
            .unwrap_or("");
        let key = if section.is_empty() {
            field.to_string()
        } else {
            format!("{section}.{field}")
        };
        return ConfigError::new(key, "unknown key");
    }
    if let Some((reason, key)) = text.rsplit_once(" for key `") {
        let key = key.split('`').next().unwrap_or(key);
        return ConfigError::new(key, reason);
    }
    ConfigError::new("config", text)
}

fn clean_config_error(e: &config::ConfigError) -> String {
    e.to_string().replace('\n', " ")
}

fn parse_duration(
    key: &str,
    value: Option<&str>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    match value {
        None => Ok(default),
        Some(text) => humantime::parse_duration(text.trim()).map_err(|e| {
            ConfigError::new(
                key,
                format!("{text:?} is not a duration ({e}); write e.g. \"90s\", \"5m\", \"8h\""),
            )
        }),
    }
}

/// Reads a secret either inline or from a file (trailing newline trimmed); never both.
/// Reads and parses `oidc.client_key_file`, so a key that would fail at the first login
/// fails at start instead, naming the key.
fn read_client_key(path: &Path, kid: Option<String>) -> Result<Arc<ClientKey>, ConfigError> {
    let pem = std::fs::read(path).map_err(|e| {
        ConfigError::new(
            "oidc.client_key_file",
            format!("cannot read {}: {e}", path.display()),
        )
    })?;
    ClientKey::from_pem(&pem, kid).map(Arc::new).map_err(|why| {
        ConfigError::new("oidc.client_key_file", format!("{}: {why}", path.display()))
    })
}

/// The client authentication settings must agree: a secret for the secret methods, a key
/// for `private_key_jwt`, neither for `none`.
fn check_client_auth(
    method: Option<TokenAuthMethod>,
    has_secret: bool,
    has_key: bool,
) -> Result<(), ConfigError> {
    let key = "oidc.token_endpoint_auth_method";
    match method {
        Some(TokenAuthMethod::PrivateKeyJwt) if !has_key => Err(ConfigError::new(
            "oidc.client_key_file",
            "missing: token_endpoint_auth_method = \"private_key_jwt\" needs the client's private key",
        )),
        Some(TokenAuthMethod::PrivateKeyJwt) if has_secret => Err(ConfigError::new(
            "oidc.client_secret",
            "set, but token_endpoint_auth_method = \"private_key_jwt\" signs with client_key_file instead",
        )),
        Some(TokenAuthMethod::ClientSecretBasic | TokenAuthMethod::ClientSecretPost)
            if !has_secret =>
        {
            Err(ConfigError::new(
                "oidc.client_secret",
                format!("missing: {key} = {:?} needs a client secret", method.map_or("", TokenAuthMethod::as_str)),
            ))
        }
        Some(TokenAuthMethod::None) if has_secret => Err(ConfigError::new(
            "oidc.client_secret",
            "set, but token_endpoint_auth_method = \"none\" is a public client",
        )),
        Some(m) if has_key && m != TokenAuthMethod::PrivateKeyJwt => Err(ConfigError::new(
            "oidc.client_key_file",
            format!("set, but {key} = {:?} does not use it", m.as_str()),
        )),
        None if has_key => Err(ConfigError::new(
            key,
            "missing: set it to \"private_key_jwt\" to sign in with client_key_file",
        )),
        _ => Ok(()),
    }
}

fn read_secret(
    key: &str,
    inline: Option<String>,
    file: Option<&Path>,
) -> Result<Option<Secret>, ConfigError> {
    match (inline, file) {
        (Some(_), Some(_)) => Err(ConfigError::new(
            key,
            format!("set either {key} or {key}_file, not both"),
        )),
        (Some(value), None) => Ok(Some(Secret::new(value))),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                ConfigError::new(
                    format!("{key}_file"),
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            Ok(Some(Secret::new(
                text.trim_end_matches(['\r', '\n']).to_string(),
            )))
        }
        (None, None) => Ok(None),
    }
}

impl RawConfig {
    fn validate(self, cli: &CliOverrides) -> Result<Config, ConfigError> {
        let server = self.server.validate(cli)?;
        let log = LogConfig {
            format: cli.log_format.or(self.log.format).unwrap_or_default(),
            filter: self.log.filter.unwrap_or_else(|| "info".to_string()),
            log_user: self.log.log_user.unwrap_or(true),
        };
        tracing_subscriber::EnvFilter::try_new(&log.filter)
            .map_err(|e| ConfigError::new("log.filter", e.to_string()))?;
        let mut oidc = self.oidc.map(RawOidc::validate).transpose()?;
        let session = self.session.map(RawSession::validate).transpose()?;
        let global = RawPolicy::default()
            .inherit(&self.policy)
            .resolve("policy")?;
        let routes = self
            .route
            .into_iter()
            .enumerate()
            .map(|(i, r)| r.validate(i, &self.policy))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(o) = oidc.as_mut() {
            let mut names: Vec<String> = routes
                .iter()
                .map(|r| &r.policy)
                .chain([&global])
                .flat_map(|p| p.allow_claims.keys().cloned())
                .collect();
            names.sort();
            names.dedup();
            o.policy_claims = names;
        }
        if let Some(i) = routes.iter().position(|r| !r.public) {
            if oidc.is_none() {
                return Err(ConfigError::new(
                    format!("route[{i}].public"),
                    "the route needs login but [oidc] is not configured (set public = true or add [oidc])",
                ));
            }
        }
        if let Some(o) = &oidc {
            if o.api_audience.as_deref() == Some(o.client_id.as_str()) {
                return Err(ConfigError::new(
                    "oidc.api_audience",
                    "must differ from oidc.client_id (else ID tokens would pass as API tokens)",
                ));
            }
        }
        if let Some(i) = routes.iter().position(|r| r.accept_bearer) {
            if oidc.as_ref().is_none_or(|o| o.api_audience.is_none()) {
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
        if let Some(session) = &session {
            if session.cookie_secure && server.public_url.scheme() != "https" {
                return Err(ConfigError::new(
                    "session.cookie_secure",
                    "true requires an https server.public_url (browsers drop Secure cookies on http); set cookie_secure = false for plain-http local development",
                ));
            }
        }
        Ok(Config {
            server,
            log,
            policy: global,
            forward_auth: ForwardAuthConfig {
                pass_access_token: self.forward_auth.pass_access_token.unwrap_or(false),
                set_authorization: self.forward_auth.set_authorization.unwrap_or(false),
            },
            oidc,
            session,
            routes,
        })
    }
}

impl RawServer {
    fn validate(self, cli: &CliOverrides) -> Result<ServerConfig, ConfigError> {
        let listen_text = cli
            .listen
            .clone()
            .or(self.listen)
            .unwrap_or_else(|| "127.0.0.1:4180".to_string());
        let listen: SocketAddr = listen_text.parse().map_err(|_| {
            ConfigError::new(
                "server.listen",
                format!("{listen_text:?} is not host:port (e.g. 127.0.0.1:4180 or [::1]:4180)"),
            )
        })?;
        let public_url_text = self
            .public_url
            .unwrap_or_else(|| format!("http://{listen}"));
        let public_url = parse_http_url("server.public_url", &public_url_text)?;
        let tls = match (self.tls_cert_file, self.tls_key_file) {
            (Some(cert_file), Some(key_file)) => {
                let server_config =
                    crate::tls::server_config(&cert_file, &key_file).map_err(|e| {
                        let key = match e.file {
                            crate::tls::TlsFile::Cert => "server.tls_cert_file",
                            crate::tls::TlsFile::Key => "server.tls_key_file",
                        };
                        ConfigError::new(key, e.reason)
                    })?;
                Some(TlsFiles {
                    cert_file,
                    key_file,
                    server_config: Arc::new(server_config),
                })
            }
            (None, None) => None,
            (Some(_), None) => {
                return Err(ConfigError::new(
                    "server.tls_key_file",
                    "missing: tls_cert_file is set",
                ))
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    "server.tls_cert_file",
                    "missing: tls_key_file is set",
                ))
            }
        };
        let upstream_ca = match &self.upstream_ca_file {
            Some(path) => crate::tls::ca_certificates(path)
                .map_err(|why| ConfigError::new("server.upstream_ca_file", why))?,
            None => Vec::new(),
        };
        let max_header_bytes = self.max_header_bytes.unwrap_or(16 * 1024);
        if !(1024..=1024 * 1024).contains(&max_header_bytes) {
            return Err(ConfigError::new(
                "server.max_header_bytes",
                "must be between 1024 and 1048576",
            ));
        }
        let max_uri_length = self.max_uri_length.unwrap_or(8192);
        if !(256..=1024 * 1024).contains(&max_uri_length) {
            return Err(ConfigError::new(
                "server.max_uri_length",
                "must be between 256 and 1048576",
            ));
        }
        Ok(ServerConfig {
            listen,
            public_url,
            tls,
            upstream_ca,
            upstream_ca_file: self.upstream_ca_file,
            upstream_timeout: parse_duration(
                "server.upstream_timeout",
                self.upstream_timeout.as_deref(),
                Duration::from_secs(30),
            )?,
            connect_timeout: parse_duration(
                "server.connect_timeout",
                self.connect_timeout.as_deref(),
                Duration::from_secs(5),
            )?,
            drain_timeout: parse_duration(
                "server.drain_timeout",
                self.drain_timeout.as_deref(),
                Duration::from_secs(30),
            )?,
            max_header_bytes,
            max_uri_length,
            trust_forwarded_headers: self.trust_forwarded_headers.unwrap_or(false),
            trusted_proxies: self
                .trusted_proxies
                .unwrap_or_else(|| vec!["127.0.0.1/32".into(), "::1/128".into()])
                .iter()
                .map(|c| Cidr::parse(c).map_err(|e| ConfigError::new("server.trusted_proxies", e)))
                .collect::<Result<_, _>>()?,
            strip_request_headers: self
                .strip_request_headers
                .unwrap_or_default()
                .iter()
                .map(|name| {
                    http::HeaderName::from_bytes(name.trim().as_bytes())
                        .map(|n| n.as_str().replace('_', "-"))
                        .map_err(|_| {
                            ConfigError::new(
                                "server.strip_request_headers",
                                format!("{name:?} is not a header name"),
                            )
                        })
                })
                .collect::<Result<_, _>>()?,
            drop_underscore_headers: self.drop_underscore_headers.unwrap_or(true),
            allowed_redirect_hosts: validate_redirect_hosts(self.allowed_redirect_hosts)?,
            metrics_listen: self
                .metrics_listen
                .map(|m| {
                    m.parse().map_err(|_| {
                        ConfigError::new("server.metrics_listen", format!("{m:?} is not host:port"))
                    })
                })
                .transpose()?,
        })
    }
}

impl RawOidc {
    fn validate(self) -> Result<OidcConfig, ConfigError> {
        let issuer_text = self
            .issuer
            .ok_or_else(|| ConfigError::new("oidc.issuer", "missing"))?;
        let issuer = parse_http_url("oidc.issuer", &issuer_text)?;
        let client_id = self
            .client_id
            .filter(|c| !c.is_empty())
            .ok_or_else(|| ConfigError::new("oidc.client_id", "missing"))?;
        let client_secret = read_secret(
            "oidc.client_secret",
            self.client_secret,
            self.client_secret_file.as_deref(),
        )?;
        let scopes = self.scopes.unwrap_or_else(|| {
            ["openid", "email", "profile", "offline_access"]
                .map(String::from)
                .to_vec()
        });
        let extra_authorize_params = self.extra_authorize_params.unwrap_or_default();
        if let Some(reserved) = extra_authorize_params
            .keys()
            .find(|k| RESERVED_AUTHORIZE_PARAMS.contains(&k.as_str()))
        {
            return Err(ConfigError::new(
                "oidc.extra_authorize_params",
                format!("{reserved:?} is set by the login flow itself and cannot be overridden"),
            ));
        }
        if !scopes.iter().any(|s| s == "openid") {
            return Err(ConfigError::new("oidc.scopes", "must include \"openid\""));
        }
        let client_key = self
            .client_key_file
            .as_deref()
            .map(|path| read_client_key(path, self.client_key_id.clone()))
            .transpose()?;
        check_client_auth(
            self.token_endpoint_auth_method,
            client_secret.is_some(),
            client_key.is_some(),
        )?;
        Ok(OidcConfig {
            issuer,
            client_id,
            client_secret,
            scopes,
            groups_claim: self.groups_claim.unwrap_or_else(|| "groups".to_string()),
            api_audience: self.api_audience.filter(|a| !a.is_empty()),
            token_endpoint_auth_method: self.token_endpoint_auth_method,
            client_key,
            userinfo: self.userinfo.unwrap_or_default(),
            extra_authorize_params,
            policy_claims: Vec::new(),
            discovery_retry_max: parse_duration(
                "oidc.discovery_retry_max",
                self.discovery_retry_max.as_deref(),
                Duration::from_secs(30),
            )?,
        })
    }
}

impl RawSession {
    fn validate(self) -> Result<SessionConfig, ConfigError> {
        let inline = match self.secret {
            None => None,
            Some(OneOrMany::One(s)) => Some(vec![s]),
            Some(OneOrMany::Many(list)) => Some(list),
        };
        let secrets: Vec<Secret> = match (inline, self.secret_file) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::new(
                    "session.secret",
                    "set either session.secret or session.secret_file, not both",
                ))
            }
            (Some(list), None) => list.into_iter().map(Secret::new).collect(),
            (None, Some(path)) => {
                // One secret per line; the first seals.
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    ConfigError::new(
                        "session.secret_file",
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?;
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(|l| Secret::new(l.to_string()))
                    .collect()
            }
            (None, None) => Vec::new(),
        };
        if secrets.is_empty() {
            return Err(ConfigError::new(
                "session.secret",
                "missing: set session.secret or session.secret_file (at least 32 bytes, e.g. `openssl rand -base64 48`)",
            ));
        }
        if let Some(i) = secrets
            .iter()
            .position(|s| s.expose().len() < MIN_SECRET_BYTES)
        {
            return Err(ConfigError::new(
                "session.secret",
                format!("secret #{i} is shorter than {MIN_SECRET_BYTES} bytes"),
            ));
        }
        match self.store.as_deref() {
            None | Some("memory") => {}
            Some(other) => {
                return Err(ConfigError::new(
                    "session.store",
                    format!("{other:?} is not supported (supported: \"memory\")"),
                ))
            }
        }
        let max_sessions = self.max_sessions.unwrap_or(1_000_000);
        if max_sessions == 0 {
            return Err(ConfigError::new(
                "session.max_sessions",
                "must be at least 1",
            ));
        }
        Ok(SessionConfig {
            secrets,
            cookie_secure: self.cookie_secure.unwrap_or(true),
            max_sessions,
            idle_timeout: parse_duration(
                "session.idle_timeout",
                self.idle_timeout.as_deref(),
                Duration::from_secs(8 * 3600),
            )?,
            absolute_timeout: parse_duration(
                "session.absolute_timeout",
                self.absolute_timeout.as_deref(),
                Duration::from_secs(24 * 3600),
            )?,
            login_timeout: parse_duration(
                "session.login_timeout",
                self.login_timeout.as_deref(),
                Duration::from_secs(600),
            )?,
            refresh_before: parse_duration(
                "session.refresh_before",
                self.refresh_before.as_deref(),
                Duration::from_secs(60),
            )?,
            sign_out_requires_post: self.sign_out_requires_post.unwrap_or(false),
        })
    }
}

impl RawPolicy {
    /// This route's keys, each unset one taken from the global `[policy]`.
    fn inherit(self, global: &RawPolicy) -> RawPolicy {
        RawPolicy {
            allow_emails: self.allow_emails.or_else(|| global.allow_emails.clone()),
            allow_domains: self.allow_domains.or_else(|| global.allow_domains.clone()),
            allow_groups: self.allow_groups.or_else(|| global.allow_groups.clone()),
            allow_claims: self.allow_claims.or_else(|| global.allow_claims.clone()),
        }
    }

    fn resolve(self, prefix: &str) -> Result<PolicyConfig, ConfigError> {
        let lower = |v: Option<Vec<String>>| -> Vec<String> {
            v.unwrap_or_default()
                .into_iter()
                .map(|s| s.trim().to_ascii_lowercase())
                .collect()
        };
        let domains: Vec<String> = lower(self.allow_domains)
            .into_iter()
            .map(|d| d.trim_start_matches('@').to_string())
            .collect();
        if let Some(bad) = domains.iter().find(|d| d.is_empty() || d.contains('@')) {
            return Err(ConfigError::new(
                format!("{prefix}.allow_domains"),
                format!("{bad:?} is not a domain"),
            ));
        }
        let emails = lower(self.allow_emails);
        if let Some(bad) = emails.iter().find(|e| !e.contains('@')) {
            return Err(ConfigError::new(
                format!("{prefix}.allow_emails"),
                format!("{bad:?} is not an email address"),
            ));
        }
        Ok(PolicyConfig {
            allow_emails: emails,
            allow_domains: domains,
            allow_groups: self.allow_groups.unwrap_or_default(),
            allow_claims: self.allow_claims.unwrap_or_default(),
        })
    }
}

impl RawRoute {
    fn validate(self, index: usize, global: &RawPolicy) -> Result<RouteConfig, ConfigError> {
        let key = |k: &str| format!("route[{index}].{k}");
        let upstream_text = self
            .upstream
            .ok_or_else(|| ConfigError::new(key("upstream"), "missing"))?;
        let upstream = parse_http_url(&key("upstream"), &upstream_text)?;
        if upstream.query().is_some() || upstream.fragment().is_some() {
            return Err(ConfigError::new(
                key("upstream"),
                "must not have a query or fragment",
            ));
        }
        let path = self.path.unwrap_or_else(|| "/".to_string());
        if !path.starts_with('/') {
            return Err(ConfigError::new(key("path"), "must start with /"));
        }
        let host = match self.host {
            None => None,
            Some(h) if h == "*" => None,
            Some(h) => {
                let h = h.to_ascii_lowercase();
                let bare = h.strip_prefix("*.").unwrap_or(&h);
                if bare.is_empty()
                    || !bare
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
                {
                    return Err(ConfigError::new(
                        key("host"),
                        format!("{h:?} is not a host name, \"*\" or \"*.example.com\""),
                    ));
                }
                Some(h)
            }
        };
        let policy = self
            .policy
            .inherit(global)
            .resolve(&format!("route[{index}]"))?;
        let skip_auth_paths = self
            .skip_auth_paths
            .unwrap_or_default()
            .iter()
            .map(|p| {
                regex::Regex::new(&format!("^(?:{p})$")).map_err(|e| {
                    ConfigError::new(key("skip_auth_paths"), format!("{p:?} is not a regex: {e}"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let methods = self
            .methods
            .unwrap_or_default()
            .iter()
            .map(|m| {
                http::Method::from_bytes(m.trim().to_ascii_uppercase().as_bytes()).map_err(|_| {
                    ConfigError::new(key("methods"), format!("{m:?} is not an HTTP method"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RouteConfig {
            host,
            path: crate::path::canonicalize(&path)
                .map_err(|why| ConfigError::new(key("path"), format!("{path:?}: {why}")))?
                .path
                .into_owned(),
            upstream,
            public: self.public.unwrap_or(false),
            preserve_host: self.preserve_host.unwrap_or(false),
            accept_bearer: self.accept_bearer.unwrap_or(false),
            policy,
            skip_auth_paths,
            methods,
            allow_encoded_slashes: self.allow_encoded_slashes.unwrap_or(false),
        })
    }
}

fn validate_redirect_hosts(hosts: Option<Vec<String>>) -> Result<Vec<String>, ConfigError> {
    let hosts = hosts.unwrap_or_default();
    for h in &hosts {
        let bare = h.strip_prefix("*.").unwrap_or(h);
        if bare.is_empty()
            || !bare
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        {
            return Err(ConfigError::new(
                "server.allowed_redirect_hosts",
                format!("{h:?} is not a host name or \"*.example.com\" (write IDNs in punycode)"),
            ));
        }
    }
    Ok(hosts)
}

fn parse_http_url(key: &str, text: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(text)
        .map_err(|e| ConfigError::new(key, format!("{text:?} is not a URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(ConfigError::new(
            key,
            format!("{text:?} must be an http:// or https:// URL with a host"),
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ConfigError::new(key, "must not contain user:password@"));
    }
    Ok(url)
}

impl std::fmt::Display for Config {
    /// The effective configuration as TOML-like text, with every secret redacted
    /// (what `portcullis check-config` prints).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = &self.server;
        let d = |d: Duration| humantime::format_duration(d).to_string();
        writeln!(f, "[server]")?;
        writeln!(f, "listen = \"{}\"", s.listen)?;
        writeln!(f, "public_url = \"{}\"", s.public_url)?;
        if let Some(tls) = &s.tls {
            writeln!(f, "tls_cert_file = {:?}", tls.cert_file)?;
            writeln!(f, "tls_key_file = {:?}", tls.key_file)?;
        }
        if let Some(ca) = &s.upstream_ca_file {
            writeln!(f, "upstream_ca_file = {ca:?}")?;
        }
        writeln!(f, "upstream_timeout = \"{}\"", d(s.upstream_timeout))?;
        writeln!(f, "connect_timeout = \"{}\"", d(s.connect_timeout))?;
        writeln!(f, "drain_timeout = \"{}\"", d(s.drain_timeout))?;
        writeln!(f, "max_header_bytes = {}", s.max_header_bytes)?;
        writeln!(f, "max_uri_length = {}", s.max_uri_length)?;
        writeln!(f, "trust_forwarded_headers = {}", s.trust_forwarded_headers)?;
        let proxies: Vec<String> = s.trusted_proxies.iter().map(|c| c.to_string()).collect();
        writeln!(f, "trusted_proxies = {proxies:?}")?;
        writeln!(f, "strip_request_headers = {:?}", s.strip_request_headers)?;
        writeln!(f, "drop_underscore_headers = {}", s.drop_underscore_headers)?;
        writeln!(f, "allowed_redirect_hosts = {:?}", s.allowed_redirect_hosts)?;
        if let Some(m) = s.metrics_listen {
            writeln!(f, "metrics_listen = \"{m}\"")?;
        }
        writeln!(f, "\n[log]")?;
        let format = match self.log.format {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        };
        writeln!(f, "format = \"{format}\"")?;
        writeln!(f, "filter = {:?}", self.log.filter)?;
        writeln!(f, "log_user = {}", self.log.log_user)?;
        writeln!(f, "\n[policy]")?;
        write_policy(f, &self.policy)?;
        writeln!(f, "\n[forward_auth]")?;
        writeln!(
            f,
            "pass_access_token = {}",
            self.forward_auth.pass_access_token
        )?;
        writeln!(
            f,
            "set_authorization = {}",
            self.forward_auth.set_authorization
        )?;
        if let Some(o) = &self.oidc {
            writeln!(f, "\n[oidc]")?;
            writeln!(f, "issuer = \"{}\"", o.issuer)?;
            writeln!(f, "client_id = {:?}", o.client_id)?;
            match &o.client_secret {
                Some(_) => writeln!(f, "client_secret = \"[redacted]\"")?,
                None => writeln!(f, "# client_secret: none (public client)")?,
            }
            writeln!(f, "scopes = {:?}", o.scopes)?;
            writeln!(f, "groups_claim = {:?}", o.groups_claim)?;
            if !o.extra_authorize_params.is_empty() {
                let params: Vec<String> = o
                    .extra_authorize_params
                    .iter()
                    .map(|(k, v)| format!("{k} = {v:?}"))
                    .collect();
                writeln!(f, "extra_authorize_params = {{ {} }}", params.join(", "))?;
            }
            if let Some(m) = o.token_endpoint_auth_method {
                writeln!(f, "token_endpoint_auth_method = {:?}", m.as_str())?;
            }
            if let Some(key) = &o.client_key {
                writeln!(
                    f,
                    "# client_key_file: {} key, kid {:?}",
                    key.alg(),
                    key.kid()
                )?;
            }
            let userinfo = match o.userinfo {
                UserinfoMode::Auto => "auto",
                UserinfoMode::Always => "always",
                UserinfoMode::Never => "never",
            };
            writeln!(f, "userinfo = {userinfo:?}")?;
            if let Some(aud) = &o.api_audience {
                writeln!(f, "api_audience = {aud:?}")?;
            }
            writeln!(f, "discovery_retry_max = \"{}\"", d(o.discovery_retry_max))?;
        }
        if let Some(se) = &self.session {
            writeln!(f, "\n[session]")?;
            writeln!(
                f,
                "secret = [{}]",
                vec!["\"[redacted]\""; se.secrets.len()].join(", ")
            )?;
            writeln!(f, "cookie_secure = {}", se.cookie_secure)?;
            writeln!(f, "store = \"memory\"")?;
            writeln!(f, "max_sessions = {}", se.max_sessions)?;
            writeln!(f, "idle_timeout = \"{}\"", d(se.idle_timeout))?;
            writeln!(f, "absolute_timeout = \"{}\"", d(se.absolute_timeout))?;
            writeln!(f, "login_timeout = \"{}\"", d(se.login_timeout))?;
            writeln!(f, "refresh_before = \"{}\"", d(se.refresh_before))?;
            writeln!(f, "sign_out_requires_post = {}", se.sign_out_requires_post)?;
        }
        for r in &self.routes {
            writeln!(f, "\n[[route]]")?;
            writeln!(f, "host = {:?}", r.host.as_deref().unwrap_or("*"))?;
            writeln!(f, "path = {:?}", r.path)?;
            writeln!(f, "upstream = \"{}\"", r.upstream)?;
            writeln!(f, "public = {}", r.public)?;
            writeln!(f, "preserve_host = {}", r.preserve_host)?;
            writeln!(f, "accept_bearer = {}", r.accept_bearer)?;
            write_policy(f, &r.policy)?;
            let paths: Vec<String> = r
                .skip_auth_paths
                .iter()
                .map(|re| {
                    re.as_str()
                        .trim_start_matches("^(?:")
                        .trim_end_matches(")$")
                        .to_string()
                })
                .collect();
            writeln!(f, "skip_auth_paths = {paths:?}")?;
            let methods: Vec<&str> = r.methods.iter().map(|m| m.as_str()).collect();
            writeln!(f, "methods = {methods:?}")?;
            writeln!(f, "allow_encoded_slashes = {}", r.allow_encoded_slashes)?;
        }
        Ok(())
    }
}

fn write_policy(f: &mut std::fmt::Formatter<'_>, p: &PolicyConfig) -> std::fmt::Result {
    writeln!(f, "allow_emails = {:?}", p.allow_emails)?;
    writeln!(f, "allow_domains = {:?}", p.allow_domains)?;
    writeln!(f, "allow_groups = {:?}", p.allow_groups)?;
    let claims: Vec<String> = p
        .allow_claims
        .iter()
        .map(|(k, v)| format!("{k:?} = {v:?}"))
        .collect();
    writeln!(f, "allow_claims = {{ {} }}", claims.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml_with_env(text, &CliOverrides::default())
    }

    /// A config with `[oidc]` plus `extra` keys in it, and a `[session]`.
    fn with_oidc(extra: &str) -> Result<Config, ConfigError> {
        load(&format!(
            "[oidc]\nissuer = \"http://127.0.0.1:1\"\nclient_id = \"c\"\n{extra}\n[session]\nsecret = \"0123456789abcdef0123456789abcdef\"\ncookie_secure = false\n"
        ))
    }

    #[test]
    fn userinfo_defaults_to_auto_and_takes_the_three_modes() {
        assert_eq!(
            with_oidc("").unwrap().oidc.unwrap().userinfo,
            UserinfoMode::Auto
        );
        for (text, mode) in [
            ("always", UserinfoMode::Always),
            ("never", UserinfoMode::Never),
        ] {
            let cfg = with_oidc(&format!("userinfo = \"{text}\"\n")).unwrap();
            assert_eq!(cfg.oidc.unwrap().userinfo, mode);
        }
        let err = with_oidc("userinfo = \"sometimes\"\n").unwrap_err();
        assert_eq!(err.key, "oidc.userinfo", "{err}");
    }

    #[test]
    fn private_key_jwt_needs_a_key_that_parses() {
        let method = "token_endpoint_auth_method = \"private_key_jwt\"\n";
        let err = with_oidc(method).unwrap_err();
        assert_eq!(err.key, "oidc.client_key_file", "{err}");

        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(
            &junk,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let err = with_oidc(&format!("{method}client_key_file = {:?}\n", junk)).unwrap_err();
        assert_eq!(err.key, "oidc.client_key_file", "{err}");
        assert!(err.to_string().contains("junk.pem"), "{err}");

        let missing = dir.path().join("absent.pem");
        let err = with_oidc(&format!("{method}client_key_file = {:?}\n", missing)).unwrap_err();
        assert_eq!(err.key, "oidc.client_key_file", "{err}");

        let rng = aws_lc_rs::rand::SystemRandom::new();
        let der = aws_lc_rs::signature::EcdsaKeyPair::generate_pkcs8(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &rng,
        )
        .unwrap();
        let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, der.as_ref());
        let good = dir.path().join("client.pem");
        std::fs::write(
            &good,
            format!("-----BEGIN PRIVATE KEY-----\n{b64}\n-----END PRIVATE KEY-----\n"),
        )
        .unwrap();
        let cfg = with_oidc(&format!(
            "{method}client_key_file = {:?}\nclient_key_id = \"k1\"\n",
            good
        ))
        .unwrap();
        let key = cfg.oidc.unwrap().client_key.unwrap();
        assert_eq!((key.alg(), key.kid()), ("ES256", "k1"));

        // A key without the method, or a secret with it, is a contradiction.
        let err = with_oidc(&format!("client_key_file = {:?}\n", good)).unwrap_err();
        assert_eq!(err.key, "oidc.token_endpoint_auth_method", "{err}");
        let err = with_oidc(&format!(
            "{method}client_key_file = {:?}\nclient_secret = \"s\"\n",
            good
        ))
        .unwrap_err();
        assert_eq!(err.key, "oidc.client_secret", "{err}");
    }

    #[test]
    fn secret_methods_need_a_secret_and_none_refuses_one() {
        let err = with_oidc("token_endpoint_auth_method = \"client_secret_post\"\n").unwrap_err();
        assert_eq!(err.key, "oidc.client_secret", "{err}");
        let err = with_oidc("token_endpoint_auth_method = \"none\"\nclient_secret = \"s\"\n")
            .unwrap_err();
        assert_eq!(err.key, "oidc.client_secret", "{err}");
        assert!(with_oidc("token_endpoint_auth_method = \"none\"\n").is_ok());
    }

    #[test]
    fn unknown_key_is_named() {
        let err = load("[server]\nlisen = \"127.0.0.1:1\"\n").unwrap_err();
        assert_eq!(err.key, "server.lisen", "{err}");
    }

    #[test]
    fn bad_duration_names_the_key() {
        let err = load("[server]\nupstream_timeout = \"ten\"\n").unwrap_err();
        assert_eq!(err.key, "server.upstream_timeout");
    }

    #[test]
    fn route_without_upstream_is_rejected() {
        let err = load("[[route]]\npath = \"/\"\npublic = true\n").unwrap_err();
        assert_eq!(err.key, "route[0].upstream");
    }

    #[test]
    fn protected_route_needs_oidc() {
        let err = load("[[route]]\nupstream = \"http://127.0.0.1:1\"\n").unwrap_err();
        assert_eq!(err.key, "route[0].public");
    }

    #[test]
    fn short_session_secret_is_rejected() {
        let err = load(
            "[oidc]\nissuer = \"http://127.0.0.1:1\"\nclient_id = \"c\"\n[session]\nsecret = \"short\"\ncookie_secure = false\n",
        )
        .unwrap_err();
        assert_eq!(err.key, "session.secret");
    }

    #[test]
    fn routes_inherit_global_policy_per_key() {
        let cfg = load(
            "[policy]\nallow_domains = [\"Example.com\"]\nallow_groups = [\"staff\"]\n[[route]]\nupstream = \"http://127.0.0.1:1\"\npublic = true\nallow_groups = [\"admins\"]\nskip_auth_paths = [\"/health\"]\nmethods = [\"options\"]\n",
        )
        .unwrap();
        let r = &cfg.routes[0];
        assert_eq!(r.policy.allow_domains, vec!["example.com"]);
        assert_eq!(r.policy.allow_groups, vec!["admins"]);
        assert!(r.skip_auth_paths[0].is_match("/health"));
        assert!(!r.skip_auth_paths[0].is_match("/healthz"));
        assert_eq!(r.methods, vec![http::Method::OPTIONS]);
        let err = load("[[route]]\nupstream = \"http://127.0.0.1:1\"\npublic = true\nskip_auth_paths = [\"(\"]\n").unwrap_err();
        assert_eq!(err.key, "route[0].skip_auth_paths");
    }

    #[test]
    fn extra_authorize_params_cannot_override_the_flow() {
        let base = "[session]\nsecret = \"0123456789abcdef0123456789abcdef\"\ncookie_secure = false\n[oidc]\nissuer = \"http://127.0.0.1:1\"\nclient_id = \"c\"\n";
        let ok = load(&format!(
            "{base}extra_authorize_params = {{ access_type = \"offline\" }}\n"
        ))
        .unwrap();
        assert_eq!(
            ok.oidc.unwrap().extra_authorize_params["access_type"],
            "offline"
        );
        let err = load(&format!(
            "{base}extra_authorize_params = {{ code_challenge_method = \"plain\" }}\n"
        ))
        .unwrap_err();
        assert_eq!(err.key, "oidc.extra_authorize_params");
    }

    #[test]
    fn secret_list_and_redaction() {
        let cfg = load(
            "[oidc]\nissuer = \"http://127.0.0.1:1\"\nclient_id = \"c\"\nclient_secret = \"topsecretvalue\"\n[session]\nsecret = [\"0123456789abcdef0123456789abcdef\", \"fedcba9876543210fedcba9876543210\"]\ncookie_secure = false\n",
        )
        .unwrap();
        assert_eq!(cfg.session.as_ref().unwrap().secrets.len(), 2);
        let shown = cfg.to_string();
        assert!(!shown.contains("topsecretvalue"));
        assert!(!shown.contains("0123456789abcdef"));
    }
}
