//! `[session]`'s Redis keys: the URLs (redis:// or rediss://), the mode, the password
//! (taken out of the URL, so it is shown only as `[redacted]`), the key prefix, the L1
//! cache time and the timeout of every call.

use std::path::PathBuf;
use std::time::Duration;

use serde::ser::SerializeStruct;
use serde::Deserializer;
use url::Url;

use super::super::parse::{self, choice_serde, Choice};
use super::super::show;
use crate::secret::Secret;

/// `session.redis_*` and `session.cache_ttl`: how to reach Redis.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// `redis_url`, without its password (that is in `password`).
    pub url: Url,
    pub mode: RedisMode,
    /// `redis_urls`: the cluster's seed nodes, or the sentinels.
    pub urls: Vec<Url>,
    pub sentinel_master: Option<String>,
    /// From the URL, `redis_password`, `PORTCULLIS__SESSION__REDIS_PASSWORD` or
    /// `redis_password_file`.
    pub password: Option<Secret>,
    /// Where the password was read from, when a file (shown instead of the password).
    pub password_file: Option<PathBuf>,
    pub key_prefix: String,
    /// How long the in-process copy of a session may serve without asking Redis; zero
    /// disables it. Invalidated at once over pub/sub; this is the bound when pub/sub is down.
    pub cache_ttl: Duration,
    /// Every Redis call gives up after this.
    pub timeout: Duration,
}

/// `session.redis_mode`: one server (or a proxy), a cluster, or a master found by sentinels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisMode {
    Standalone,
    Cluster,
    Sentinel,
}

impl Choice for RedisMode {
    const CHOICES: &'static [(&'static str, Self)] = &[
        ("standalone", RedisMode::Standalone),
        ("cluster", RedisMode::Cluster),
        ("sentinel", RedisMode::Sentinel),
    ];
}

choice_serde!(RedisMode);

impl RedisConfig {
    /// The Redis keys, in file order; the password redacted, or its file named.
    pub(super) fn serialize_fields<S: SerializeStruct>(&self, out: &mut S) -> Result<(), S::Error> {
        let d = |d: Duration| humantime::format_duration(d).to_string();
        out.serialize_field("redis_url", self.url.as_str())?;
        out.serialize_field("redis_mode", &self.mode)?;
        let urls: Vec<&str> = self.urls.iter().map(Url::as_str).collect();
        out.serialize_field("redis_urls", &urls)?;
        match &self.sentinel_master {
            Some(name) => out.serialize_field("redis_sentinel_master", name)?,
            None => out.skip_field("redis_sentinel_master")?,
        }
        match (&self.password_file, &self.password) {
            (Some(path), _) => out.serialize_field("redis_password_file", path)?,
            (None, Some(_)) => out.serialize_field("redis_password", show::REDACTED)?,
            (None, None) => out.skip_field("redis_password")?,
        }
        out.serialize_field("redis_key_prefix", &self.key_prefix)?;
        out.serialize_field("cache_ttl", &d(self.cache_ttl))?;
        out.serialize_field("redis_timeout", &d(self.timeout))
    }
}

/// `session.redis_url`: `redis://` or `rediss://` (TLS) with a host; a password in it is
/// taken out (see `RedisConfig::password`).
pub(super) fn redis_url<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Url>, D::Error> {
    parse::text(d, parse_redis_url)
}

/// `session.redis_urls`: like `redis_url`, without passwords (one password serves all).
pub(super) fn redis_urls<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<Url>>, D::Error> {
    parse::list(d, |text| {
        let url = parse_redis_url(text)?;
        if url.password().is_some() {
            return Err(format!("{:?} carries a password: set session.redis_password (or redis_password_file) instead", without_password(&url)));
        }
        Ok(url)
    })
}

fn parse_redis_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text.trim())
        .map_err(|e| format!("{:?} is not a URL ({e})", redact_text(text)))?;
    if !matches!(url.scheme(), "redis" | "rediss") || url.host().is_none() {
        return Err(format!(
            "{:?} must be a redis:// or rediss:// URL with a host",
            without_password(&url)
        ));
    }
    let db = url.path().trim_start_matches('/');
    if !db.is_empty() && db.parse::<u16>().is_err() {
        return Err(format!(
            "{:?}: the path must be a database number (e.g. /0)",
            without_password(&url)
        ));
    }
    Ok(url)
}

/// The URL as text with any password replaced, for error messages.
fn without_password(url: &Url) -> String {
    let mut shown = url.clone();
    if shown.password().is_some() {
        let _ = shown.set_password(Some("redacted"));
    }
    shown.to_string()
}

/// Text that did not parse as a URL: everything between `://` and `@` hidden.
fn redact_text(text: &str) -> String {
    match (text.find("://"), text.rfind('@')) {
        (Some(start), Some(at)) if at > start => {
            format!("{}://[redacted]{}", &text[..start], &text[at..])
        }
        _ => text.to_string(),
    }
}

pub(super) fn key_prefix<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    parse::text(d, |text| {
        if text.is_empty() || text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("must be non-empty, without spaces (e.g. \"portcullis:\")".into());
        }
        Ok(text.to_string())
    })
}

pub(super) fn redis_timeout<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    match parse::duration(d)? {
        Some(t) if t.is_zero() => Err(serde::de::Error::custom("must be more than 0s")),
        t => Ok(t),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{CliOverrides, Config, ConfigError, StoreConfig};

    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml_with_env(text, &CliOverrides::default())
    }

    fn session(lines: &str) -> Result<Config, ConfigError> {
        load(&format!("[session]\ncookie_secure = false\n{lines}\n"))
    }

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn redis(lines: &str) -> Result<RedisConfig, ConfigError> {
        let cfg = session(&format!(
            "secret = \"{SECRET}\"\nstore = \"redis\"\n{lines}"
        ))?;
        match cfg.session.map(|s| s.store) {
            Some(StoreConfig::Redis(r)) => Ok(*r),
            other => panic!("not a Redis store: {other:?}"),
        }
    }

    #[test]
    fn redis_store_defaults() {
        let r = redis("").unwrap();
        assert_eq!(r.url.as_str(), "redis://127.0.0.1:6379/0");
        assert_eq!(r.mode, RedisMode::Standalone);
        assert_eq!(r.key_prefix, "portcullis:");
        assert_eq!(r.cache_ttl, Duration::from_secs(5));
        assert_eq!(r.timeout, Duration::from_millis(500));
        assert!(r.password.is_none() && r.urls.is_empty());
        let r = redis("cache_ttl = \"0s\"\nredis_timeout = \"2s\"\nredis_key_prefix = \"gw1:\"")
            .unwrap();
        assert!(r.cache_ttl.is_zero());
        assert_eq!((r.timeout.as_secs(), r.key_prefix.as_str()), (2, "gw1:"));
    }

    #[test]
    fn redis_urls_schemes_and_modes_are_checked() {
        for (lines, key) in [
            ("redis_url = \"http://127.0.0.1:6379\"", "session.redis_url"),
            (
                "redis_url = \"redis://127.0.0.1:6379/x\"",
                "session.redis_url",
            ),
            ("redis_mode = \"ring\"", "session.redis_mode"),
            ("redis_mode = \"cluster\"", "session.redis_urls"),
            (
                "redis_mode = \"sentinel\"\nredis_urls = [\"redis://127.0.0.1:26379\"]",
                "session.redis_sentinel_master",
            ),
            (
                "redis_urls = [\"redis://:pw@127.0.0.1:7000\"]",
                "session.redis_urls",
            ),
            (
                "redis_urls = [\"tcp://127.0.0.1:7000\"]",
                "session.redis_urls",
            ),
            ("cache_ttl = \"soon\"", "session.cache_ttl"),
            ("redis_timeout = \"0s\"", "session.redis_timeout"),
            ("redis_key_prefix = \"\"", "session.redis_key_prefix"),
            (
                "redis_password_file = \"/nonexistent\"",
                "session.redis_password_file",
            ),
        ] {
            let err = redis(lines).unwrap_err();
            assert_eq!(err.key, key, "{lines}: {err}");
        }
        let err = redis("redis_mode = \"ring\"").unwrap_err();
        assert!(
            err.reason.contains("standalone, cluster, sentinel"),
            "{err}"
        );
        let err = redis("redis_urls = [\"redis://:hunter2@127.0.0.1:7000\"]").unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");

        let r = redis("redis_mode = \"cluster\"\nredis_urls = [\"redis://127.0.0.1:7000\", \"rediss://127.0.0.1:7001\"]").unwrap();
        assert_eq!((r.mode, r.urls.len()), (RedisMode::Cluster, 2));
        let r = redis("redis_mode = \"sentinel\"\nredis_urls = [\"redis://127.0.0.1:26379\"]\nredis_sentinel_master = \"mymaster\"").unwrap();
        assert_eq!(r.sentinel_master.as_deref(), Some("mymaster"));
        // With store = "memory" the Redis keys are checked but unused.
        let cfg = session(&format!("secret = \"{SECRET}\"\nredis_mode = \"cluster\"")).unwrap();
        assert!(matches!(cfg.session.unwrap().store, StoreConfig::Memory));
    }

    #[test]
    fn redis_password_from_the_url_a_key_or_a_file_and_always_redacted() {
        let r = redis("redis_url = \"rediss://app:s%40cret@redis.internal:6380/2\"").unwrap();
        assert_eq!(r.password.as_ref().unwrap().expose(), "s@cret");
        assert_eq!(r.url.as_str(), "rediss://app@redis.internal:6380/2");
        let r = redis("redis_password = \"pw1\"").unwrap();
        assert_eq!(r.password.unwrap().expose(), "pw1");

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("redis-password");
        std::fs::write(&file, "from-file\n").unwrap();
        let r = redis(&format!("redis_password_file = {file:?}")).unwrap();
        assert_eq!(r.password.unwrap().expose(), "from-file");
        let err = redis(&format!(
            "redis_password = \"a\"\nredis_password_file = {file:?}"
        ))
        .unwrap_err();
        assert_eq!(err.key, "session.redis_password", "{err}");
        let err =
            redis("redis_url = \"redis://:a@127.0.0.1\"\nredis_password = \"b\"").unwrap_err();
        assert_eq!(err.key, "session.redis_password", "{err}");

        let text = format!("[session]\nsecret = \"{SECRET}\"\ncookie_secure = false\nstore = \"redis\"\nredis_url = \"redis://app:topsecretpw@127.0.0.1:6379/0\"\n");
        let shown = load(&text).unwrap().to_string();
        assert!(!shown.contains("topsecretpw"), "{shown}");
        for line in [
            "store = \"redis\"",
            "redis_url = \"redis://app@127.0.0.1:6379/0\"",
            "redis_password = \"[redacted]\"",
            "cache_ttl = \"5s\"",
            "redis_timeout = \"500ms\"",
        ] {
            assert!(shown.lines().any(|l| l == line), "no `{line}` in\n{shown}");
        }
        // The output reads back (with a usable password in place of the redaction).
        let again = load(&shown.replace(crate::config::show::REDACTED, SECRET)).unwrap();
        assert_eq!(again.to_string(), shown);
        let shown = load(
            &format!("{text}redis_mode = \"standalone\"\n")
                .replace("app:topsecretpw@", "")
                .replace(
                    "[session]\n",
                    &format!("[session]\nredis_password_file = {file:?}\n"),
                ),
        )
        .unwrap()
        .to_string();
        assert!(
            shown.contains("redis_password_file = ") && !shown.contains("from-file"),
            "{shown}"
        );
    }
}
