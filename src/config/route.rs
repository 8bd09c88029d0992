//! `[[route]]`: which requests go to which upstream, and who may pass. Routes keep their
//! file order (`route[0]` is the first).

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use url::Url;

use super::policy::{self, PolicyConfig, RawPolicy};
use super::{parse, show, ConfigError};

#[derive(Debug, Clone, Serialize)]
pub struct RouteConfig {
    /// `None` matches any host (written `"*"`).
    #[serde(serialize_with = "host")]
    pub host: Option<String>,
    pub path: String,
    #[serde(serialize_with = "show::display")]
    pub upstream: Url,
    pub public: bool,
    pub preserve_host: bool,
    /// Accept API clients' own JWT bearer tokens (validated against the IdP's keys).
    pub accept_bearer: bool,
    /// The route's rules, each unset key inherited from `[policy]`.
    #[serde(flatten)]
    pub policy: PolicyConfig,
    /// Anchored regexes on the normalized path that need no login.
    #[serde(serialize_with = "patterns")]
    pub skip_auth_paths: Vec<regex::Regex>,
    /// Methods for which `skip_auth_paths` apply (all when empty); with no paths, requests
    /// with these methods need no login (e.g. CORS preflight `OPTIONS`).
    #[serde(serialize_with = "show::display_list")]
    pub methods: Vec<http::Method>,
    /// Accept `%2F` inside a path segment (APIs that need it); never around a dot segment.
    pub allow_encoded_slashes: bool,
}

fn host<S: Serializer>(host: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(host.as_deref().unwrap_or("*"))
}

/// A `skip_auth_paths` regex is kept anchored; shown as written.
fn anchor(pattern: &str) -> String {
    format!("^(?:{pattern})$")
}

fn patterns<S: Serializer>(paths: &[regex::Regex], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(paths.iter().map(|re| {
        re.as_str()
            .strip_prefix("^(?:")
            .and_then(|p| p.strip_suffix(")$"))
            .unwrap_or(re.as_str())
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    #[serde(default, deserialize_with = "host_pattern")]
    host: Option<String>,
    #[serde(default, deserialize_with = "path")]
    path: Option<String>,
    #[serde(default, deserialize_with = "upstream")]
    upstream: Option<Url>,
    public: Option<bool>,
    preserve_host: Option<bool>,
    accept_bearer: Option<bool>,
    #[serde(default, deserialize_with = "policy::emails")]
    allow_emails: Option<Vec<String>>,
    #[serde(default, deserialize_with = "policy::domains")]
    allow_domains: Option<Vec<String>>,
    allow_groups: Option<Vec<String>>,
    allow_claims: Option<BTreeMap<String, Vec<String>>>,
    #[serde(default, deserialize_with = "skip_auth_paths")]
    skip_auth_paths: Option<Vec<regex::Regex>>,
    #[serde(default, deserialize_with = "methods")]
    methods: Option<Vec<http::Method>>,
    allow_encoded_slashes: Option<bool>,
}

/// A host name, `"*"` (any: stored as `None`) or `"*.example.com"`, stored lowercase.
fn host_pattern<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let host = parse::text(d, |text| {
        let host = text.to_ascii_lowercase();
        if host == "*" || parse::is_host_pattern(&host) {
            Ok(host)
        } else {
            Err(format!(
                "{host:?} is not a host name, \"*\" or \"*.example.com\""
            ))
        }
    })?;
    Ok(host.filter(|h| h != "*"))
}

/// An absolute path, stored canonical (as requests are matched).
fn path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    parse::text(d, |text| {
        if !text.starts_with('/') {
            return Err("must start with /".to_string());
        }
        crate::path::canonicalize(text)
            .map(|c| c.path.into_owned())
            .map_err(|why| format!("{text:?}: {why}"))
    })
}

fn upstream<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Url>, D::Error> {
    parse::text(d, |text| {
        let url = parse::parse_http_url(text)?;
        if url.query().is_some() || url.fragment().is_some() {
            return Err("must not have a query or fragment".to_string());
        }
        Ok(url)
    })
}

fn skip_auth_paths<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<regex::Regex>>, D::Error> {
    parse::list(d, |p| {
        regex::Regex::new(&anchor(p)).map_err(|e| format!("{p:?} is not a regex: {e}"))
    })
}

fn methods<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<http::Method>>, D::Error> {
    parse::list(d, |m| {
        http::Method::from_bytes(m.trim().to_ascii_uppercase().as_bytes())
            .map_err(|_| format!("{m:?} is not an HTTP method"))
    })
}

/// A route with its own keys checked, waiting for `[policy]` (which may come later in the
/// file) to fill in the policy keys it leaves unset.
pub(super) struct CheckedRoute {
    route: RouteConfig,
    policy: RawPolicy,
}

impl CheckedRoute {
    pub(super) fn finish(self, global: &RawPolicy) -> RouteConfig {
        RouteConfig {
            policy: self.policy.inherit(global).into_config(),
            ..self.route
        }
    }
}

/// Every `[[route]]`, in order, each read and checked before the next.
pub(super) fn read_all(value: config::Value) -> Result<Vec<CheckedRoute>, ConfigError> {
    let items = value
        .into_array()
        .map_err(|_| ConfigError::new("route", "must be an array of tables ([[route]])"))?;
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let name = format!("route[{i}]");
            let raw: RawRoute = parse::section(&name, item)?;
            raw.validate(&name)
        })
        .collect()
}

impl RawRoute {
    fn validate(self, name: &str) -> Result<CheckedRoute, ConfigError> {
        let upstream = self
            .upstream
            .ok_or_else(|| ConfigError::new(format!("{name}.upstream"), "missing"))?;
        let route = RouteConfig {
            host: self.host,
            path: self.path.unwrap_or_else(|| "/".to_string()),
            upstream,
            public: self.public.unwrap_or(false),
            preserve_host: self.preserve_host.unwrap_or(false),
            accept_bearer: self.accept_bearer.unwrap_or(false),
            policy: PolicyConfig::default(),
            skip_auth_paths: self.skip_auth_paths.unwrap_or_default(),
            methods: self.methods.unwrap_or_default(),
            allow_encoded_slashes: self.allow_encoded_slashes.unwrap_or(false),
        };
        let policy = RawPolicy {
            allow_emails: self.allow_emails,
            allow_domains: self.allow_domains,
            allow_groups: self.allow_groups,
            allow_claims: self.allow_claims,
        };
        Ok(CheckedRoute { route, policy })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{CliOverrides, Config, ConfigError};

    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml_with_env(text, &CliOverrides::default())
    }

    fn route_error(lines: &str) -> ConfigError {
        load(&format!(
            "[[route]]\nupstream = \"http://127.0.0.1:1\"\npublic = true\n{lines}\n"
        ))
        .unwrap_err()
    }

    #[test]
    fn route_without_upstream_is_rejected() {
        let err = load("[[route]]\npath = \"/\"\npublic = true\n").unwrap_err();
        assert_eq!(err.key, "route[0].upstream");
    }

    #[test]
    fn bad_values_name_the_route_and_key() {
        for (line, key) in [
            ("upstreem = \"x\"", "route[0].upstreem"),
            ("path = \"api\"", "route[0].path"),
            ("host = \"a b\"", "route[0].host"),
            ("skip_auth_paths = [\"(\"]", "route[0].skip_auth_paths"),
            ("methods = [\"GE T\"]", "route[0].methods"),
            ("allow_emails = [\"bob\"]", "route[0].allow_emails"),
            ("preserve_host = \"maybe\"", "route[0].preserve_host"),
        ] {
            assert_eq!(route_error(line).key, key, "{line}");
        }
        let err = load("[[route]]\nupstream = \"http://127.0.0.1:1/?a=b\"\n").unwrap_err();
        assert_eq!(err.key, "route[0].upstream", "{err}");
        let err = load("[[route]]\nupstream = \"not a url\"\n").unwrap_err();
        assert_eq!(err.key, "route[0].upstream", "{err}");
        let err = load("route = 5\n").unwrap_err();
        assert_eq!(err.key, "route", "{err}");
    }

    #[test]
    fn routes_inherit_global_policy_per_key() {
        let cfg = load(
            "[[route]]\nupstream = \"http://127.0.0.1:1\"\npublic = true\nallow_groups = [\"admins\"]\nskip_auth_paths = [\"/health\"]\nmethods = [\"options\"]\n[policy]\nallow_domains = [\"Example.com\"]\nallow_groups = [\"staff\"]\n",
        )
        .unwrap();
        let r = &cfg.routes[0];
        assert_eq!(r.policy.allow_domains, vec!["example.com"]);
        assert_eq!(r.policy.allow_groups, vec!["admins"]);
        assert!(r.skip_auth_paths[0].is_match("/health"));
        assert!(!r.skip_auth_paths[0].is_match("/healthz"));
        assert_eq!(r.methods, vec![http::Method::OPTIONS]);
    }

    #[test]
    fn hosts_and_paths_are_normalized() {
        let cfg = load(
            "[[route]]\nhost = \"*\"\nupstream = \"http://127.0.0.1:1\"\npublic = true\n[[route]]\nhost = \"*.Example.com\"\npath = \"/a/./b/\"\nupstream = \"http://127.0.0.1:2\"\npublic = true\n",
        )
        .unwrap();
        assert_eq!(cfg.routes[0].host, None);
        assert_eq!(cfg.routes[0].path, "/");
        assert_eq!(cfg.routes[1].host.as_deref(), Some("*.example.com"));
        assert_eq!(cfg.routes[1].path, "/a/b/");
    }
}
