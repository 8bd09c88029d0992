//! `[server]`: listeners, TLS, upstream limits and which peers are trusted.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};
use url::Url;

use super::parse::{self, is_host_pattern};
use super::{show, ConfigError};
use crate::net::Cidr;
use crate::tls::{self, TlsFile};

#[derive(Debug, Clone, Serialize)]
pub struct ServerConfig {
    #[serde(serialize_with = "show::display")]
    pub listen: SocketAddr,
    #[serde(serialize_with = "show::display")]
    pub public_url: Url,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsFiles>,
    /// Extra CA certificates (PEM) trusted for https upstreams and the IdP.
    #[serde(skip)]
    pub upstream_ca: Vec<rustls_pki_types::CertificateDer<'static>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_ca_file: Option<PathBuf>,
    #[serde(serialize_with = "show::duration")]
    pub upstream_timeout: Duration,
    #[serde(serialize_with = "show::duration")]
    pub connect_timeout: Duration,
    #[serde(serialize_with = "show::duration")]
    pub drain_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_uri_length: usize,
    /// Serving threads, each with its own runtime, listener (SO_REUSEPORT) and upstream
    /// pool; default: the CPUs this process may use.
    pub workers: usize,
    pub trust_forwarded_headers: bool,
    /// Peers whose forward-auth descriptions and (with `trust_forwarded_headers`)
    /// `X-Forwarded-*`/`Forwarded` headers are believed.
    #[serde(serialize_with = "show::display_list")]
    pub trusted_proxies: Vec<Cidr>,
    /// Client request headers never passed upstream, besides the identity families;
    /// lowercase with `_` read as `-`.
    pub strip_request_headers: Vec<String>,
    /// Drop every client request header with `_` in its name (as nginx does).
    pub drop_underscore_headers: bool,
    /// Hosts that `rd` and post-logout targets may name in absolute URLs.
    pub allowed_redirect_hosts: Vec<String>,
    /// A separate listener for `/metrics` (else it is served on the main listener).
    #[serde(
        serialize_with = "show::opt_display",
        skip_serializing_if = "Option::is_none"
    )]
    pub metrics_listen: Option<SocketAddr>,
    /// Envoy's gRPC ext_authz (`envoy.service.auth.v3.Authorization/Check`, h2c) here.
    #[serde(
        serialize_with = "show::opt_display",
        skip_serializing_if = "Option::is_none"
    )]
    pub ext_authz_grpc_listen: Option<SocketAddr>,
}

/// The listener's certificate and key files, and the server config parsed from them at
/// validation (the listener serves with it; nothing parses the files again).
#[derive(Debug, Clone, Serialize)]
pub struct TlsFiles {
    #[serde(rename = "tls_cert_file")]
    pub cert_file: PathBuf,
    #[serde(rename = "tls_key_file")]
    pub key_file: PathBuf,
    #[serde(skip)]
    pub server_config: Arc<rustls::ServerConfig>,
}

const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 4180);

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawServer {
    #[serde(default, deserialize_with = "listen")]
    listen: Option<SocketAddr>,
    #[serde(default, deserialize_with = "parse::http_url")]
    public_url: Option<Url>,
    tls_cert_file: Option<PathBuf>,
    tls_key_file: Option<PathBuf>,
    upstream_ca_file: Option<PathBuf>,
    #[serde(default, deserialize_with = "parse::duration")]
    upstream_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "parse::duration")]
    connect_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "parse::duration")]
    drain_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "max_header_bytes")]
    max_header_bytes: Option<usize>,
    #[serde(default, deserialize_with = "max_uri_length")]
    max_uri_length: Option<usize>,
    #[serde(default, deserialize_with = "workers")]
    workers: Option<usize>,
    trust_forwarded_headers: Option<bool>,
    #[serde(default, deserialize_with = "trusted_proxies")]
    trusted_proxies: Option<Vec<Cidr>>,
    #[serde(default, deserialize_with = "header_names")]
    strip_request_headers: Option<Vec<String>>,
    drop_underscore_headers: Option<bool>,
    #[serde(default, deserialize_with = "redirect_hosts")]
    allowed_redirect_hosts: Option<Vec<String>>,
    #[serde(default, deserialize_with = "host_port")]
    metrics_listen: Option<SocketAddr>,
    #[serde(default, deserialize_with = "host_port")]
    ext_authz_grpc_listen: Option<SocketAddr>,
}

fn listen<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    parse::text(d, |text| {
        text.parse()
            .map_err(|_| format!("{text:?} is not host:port (e.g. 127.0.0.1:4180 or [::1]:4180)"))
    })
}

fn host_port<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    parse::text(d, |text| {
        text.parse()
            .map_err(|_| format!("{text:?} is not host:port"))
    })
}

fn max_header_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    in_range(d, 1024, 1024 * 1024)
}

fn max_uri_length<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    in_range(d, 256, 1024 * 1024)
}

fn workers<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    in_range(d, 1, 1024)
}

/// One serving thread per CPU the process may use (cgroup quotas and affinity count).
fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn in_range<'de, D: Deserializer<'de>>(
    d: D,
    min: usize,
    max: usize,
) -> Result<Option<usize>, D::Error> {
    let n = usize::deserialize(d)?;
    if (min..=max).contains(&n) {
        Ok(Some(n))
    } else {
        Err(serde::de::Error::custom(format!(
            "must be between {min} and {max}"
        )))
    }
}

fn trusted_proxies<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<Cidr>>, D::Error> {
    parse::list(d, Cidr::parse)
}

fn header_names<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    parse::list(d, |name| {
        http::HeaderName::from_bytes(name.trim().as_bytes())
            .map(|n| n.as_str().replace('_', "-"))
            .map_err(|_| format!("{name:?} is not a header name"))
    })
}

fn redirect_hosts<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    parse::list(d, |host| {
        if is_host_pattern(host) {
            Ok(host.to_string())
        } else {
            Err(format!(
                "{host:?} is not a host name or \"*.example.com\" (write IDNs in punycode)"
            ))
        }
    })
}

/// `[server]` from the file (`None`: the section is absent, all defaults).
pub(super) fn read(value: Option<config::Value>) -> Result<ServerConfig, ConfigError> {
    let raw: RawServer = match value {
        Some(v) => parse::section("server", v)?,
        None => RawServer::default(),
    };
    raw.validate()
}

impl RawServer {
    fn validate(self) -> Result<ServerConfig, ConfigError> {
        let listen = self.listen.unwrap_or(DEFAULT_LISTEN);
        let public_url = match self.public_url {
            Some(url) => url,
            None => parse::parse_http_url(&format!("http://{listen}"))
                .map_err(|why| ConfigError::new("server.public_url", why))?,
        };
        let tls = tls_files(self.tls_cert_file, self.tls_key_file)?;
        let upstream_ca = match &self.upstream_ca_file {
            Some(path) => tls::ca_certificates(path)
                .map_err(|why| ConfigError::new("server.upstream_ca_file", why))?,
            None => Vec::new(),
        };
        let default_proxies = || {
            ["127.0.0.1/32", "::1/128"]
                .map(|c| Cidr::parse(c).expect("a valid default"))
                .to_vec()
        };
        Ok(ServerConfig {
            listen,
            public_url,
            tls,
            upstream_ca,
            upstream_ca_file: self.upstream_ca_file,
            upstream_timeout: self.upstream_timeout.unwrap_or(Duration::from_secs(30)),
            connect_timeout: self.connect_timeout.unwrap_or(Duration::from_secs(5)),
            drain_timeout: self.drain_timeout.unwrap_or(Duration::from_secs(30)),
            max_header_bytes: self.max_header_bytes.unwrap_or(16 * 1024),
            max_uri_length: self.max_uri_length.unwrap_or(8192),
            workers: self.workers.unwrap_or_else(default_workers),
            trust_forwarded_headers: self.trust_forwarded_headers.unwrap_or(false),
            trusted_proxies: self.trusted_proxies.unwrap_or_else(default_proxies),
            strip_request_headers: self.strip_request_headers.unwrap_or_default(),
            drop_underscore_headers: self.drop_underscore_headers.unwrap_or(true),
            allowed_redirect_hosts: self.allowed_redirect_hosts.unwrap_or_default(),
            metrics_listen: self.metrics_listen,
            ext_authz_grpc_listen: self.ext_authz_grpc_listen,
        })
    }
}

/// Both files or neither; when both, parsed now and kept for the listener.
fn tls_files(
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
) -> Result<Option<TlsFiles>, ConfigError> {
    match (cert_file, key_file) {
        (Some(cert_file), Some(key_file)) => {
            let server_config = tls::server_config(&cert_file, &key_file).map_err(|e| {
                let key = match e.file {
                    TlsFile::Cert => "server.tls_cert_file",
                    TlsFile::Key => "server.tls_key_file",
                };
                ConfigError::new(key, e.reason)
            })?;
            Ok(Some(TlsFiles {
                cert_file,
                key_file,
                server_config: Arc::new(server_config),
            }))
        }
        (None, None) => Ok(None),
        (Some(_), None) => Err(ConfigError::new(
            "server.tls_key_file",
            "missing: tls_cert_file is set",
        )),
        (None, Some(_)) => Err(ConfigError::new(
            "server.tls_cert_file",
            "missing: tls_key_file is set",
        )),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{CliOverrides, Config, ConfigError};

    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml_with_env(text, &CliOverrides::default())
    }

    fn server_error(line: &str) -> ConfigError {
        load(&format!("[server]\n{line}\n")).unwrap_err()
    }

    #[test]
    fn defaults() {
        let s = load("").unwrap().server;
        assert_eq!(s.listen.to_string(), "127.0.0.1:4180");
        assert_eq!(s.public_url.as_str(), "http://127.0.0.1:4180/");
        assert_eq!(s.trusted_proxies.len(), 2);
        assert!(s.tls.is_none() && s.drop_underscore_headers && !s.trust_forwarded_headers);
        assert_eq!((s.max_header_bytes, s.max_uri_length), (16 * 1024, 8192));
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(s.workers, cpus);
        assert_eq!(load("[server]\nworkers = 3\n").unwrap().server.workers, 3);
    }

    #[test]
    fn unknown_key_is_named() {
        assert_eq!(server_error("lisen = \"127.0.0.1:1\"").key, "server.lisen");
    }

    #[test]
    fn bad_values_name_their_key() {
        for (line, key) in [
            ("upstream_timeout = \"ten\"", "server.upstream_timeout"),
            ("listen = \"localhost\"", "server.listen"),
            ("public_url = \"ftp://x/\"", "server.public_url"),
            ("max_header_bytes = 10", "server.max_header_bytes"),
            ("max_uri_length = 100", "server.max_uri_length"),
            ("workers = 0", "server.workers"),
            (
                "trusted_proxies = [\"10.0.0.0/8\", \"nope\"]",
                "server.trusted_proxies",
            ),
            (
                "strip_request_headers = [\"a b\"]",
                "server.strip_request_headers",
            ),
            (
                "allowed_redirect_hosts = [\"a/b\"]",
                "server.allowed_redirect_hosts",
            ),
            ("metrics_listen = \"9100\"", "server.metrics_listen"),
            (
                "ext_authz_grpc_listen = \"grpc\"",
                "server.ext_authz_grpc_listen",
            ),
            (
                "trust_forwarded_headers = \"maybe\"",
                "server.trust_forwarded_headers",
            ),
            ("tls_cert_file = \"/c.pem\"", "server.tls_key_file"),
            ("tls_key_file = \"/k.pem\"", "server.tls_cert_file"),
            (
                "upstream_ca_file = \"/nonexistent.pem\"",
                "server.upstream_ca_file",
            ),
        ] {
            assert_eq!(server_error(line).key, key, "{line}");
        }
        let err = server_error("upstream_timeout = \"ten\"");
        assert!(err.reason.contains("is not a duration"), "{err}");
        let err = server_error("trusted_proxies = [\"10.0.0.0/8\", \"nope\"]");
        assert!(err.reason.contains("\"nope\""), "{err}");
    }

    #[test]
    fn cli_listen_wins_over_the_file_even_over_a_bad_value() {
        let cli = CliOverrides {
            listen: Some("127.0.0.1:5000".into()),
            log_format: None,
        };
        let cfg = Config::from_toml_with_env("[server]\nlisten = \"bad\"\n", &cli).unwrap();
        assert_eq!(cfg.server.listen.to_string(), "127.0.0.1:5000");
        assert_eq!(cfg.server.public_url.as_str(), "http://127.0.0.1:5000/");
        let cli = CliOverrides {
            listen: Some("bad".into()),
            log_format: None,
        };
        let err = Config::from_toml_with_env("", &cli).unwrap_err();
        assert_eq!(err.key, "server.listen", "{err}");
    }

    #[test]
    fn tls_files_are_parsed_once_and_kept() {
        crate::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let (c, k) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        std::fs::write(&c, cert.cert.pem()).unwrap();
        std::fs::write(&k, cert.key_pair.serialize_pem()).unwrap();
        let cfg = load(&format!(
            "[server]\ntls_cert_file = {c:?}\ntls_key_file = {k:?}\n"
        ))
        .unwrap();
        let tls = cfg.server.tls.unwrap();
        assert_eq!(tls.cert_file, c);
        assert_eq!(tls.server_config.alpn_protocols[1], b"http/1.1");

        std::fs::write(&c, "not a certificate\n").unwrap();
        let err = load(&format!(
            "[server]\ntls_cert_file = {c:?}\ntls_key_file = {k:?}\n"
        ))
        .unwrap_err();
        assert_eq!(err.key, "server.tls_cert_file", "{err}");
    }
}
