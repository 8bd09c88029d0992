//! `[session]`: the secrets that seal session cookies, the store (memory, or Redis for
//! several replicas) and the timeouts.

use std::path::PathBuf;
use std::time::Duration;

use serde::ser::SerializeStruct;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use url::Url;

mod redis;

use super::parse::{self, choice_serde, Choice};
use super::{show, ConfigError};
use crate::secret::Secret;
use redis::{key_prefix, redis_timeout, redis_url, redis_urls};
pub use redis::{RedisConfig, RedisMode};

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
    /// Where sessions live (`session.store`).
    pub store: StoreConfig,
}

/// `session.store` and, for Redis, its connection.
#[derive(Debug, Clone)]
pub enum StoreConfig {
    /// In this process (`max_sessions` bounds it).
    Memory,
    /// Shared by every replica through Redis.
    Redis(Box<RedisConfig>),
}

/// Shown under the file's keys, one `"[redacted]"` per secret.
impl Serialize for SessionConfig {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let d = |d: Duration| humantime::format_duration(d).to_string();
        let mut out = s.serialize_struct("session", 20)?;
        out.serialize_field("secret", &vec![show::REDACTED; self.secrets.len()])?;
        out.serialize_field("cookie_secure", &self.cookie_secure)?;
        match &self.store {
            StoreConfig::Memory => out.serialize_field("store", &SessionStore::Memory)?,
            StoreConfig::Redis(redis) => {
                out.serialize_field("store", &SessionStore::Redis)?;
                redis.serialize_fields(&mut out)?;
            }
        }
        out.serialize_field("max_sessions", &self.max_sessions)?;
        out.serialize_field("idle_timeout", &d(self.idle_timeout))?;
        out.serialize_field("absolute_timeout", &d(self.absolute_timeout))?;
        out.serialize_field("login_timeout", &d(self.login_timeout))?;
        out.serialize_field("refresh_before", &d(self.refresh_before))?;
        out.serialize_field("sign_out_requires_post", &self.sign_out_requires_post)?;
        out.end()
    }
}

/// `session.store`: where sessions live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SessionStore {
    Memory,
    Redis,
}

impl Choice for SessionStore {
    const CHOICES: &'static [(&'static str, Self)] = &[
        ("memory", SessionStore::Memory),
        ("redis", SessionStore::Redis),
    ];
}

choice_serde!(SessionStore);

/// Minimum length of a session secret, in bytes (at least 32: 256 bits).
const MIN_SECRET_BYTES: usize = 32;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSession {
    #[serde(default, deserialize_with = "inline_secrets")]
    secret: Option<Vec<Secret>>,
    secret_file: Option<PathBuf>,
    cookie_secure: Option<bool>,
    store: Option<SessionStore>,
    #[serde(default, deserialize_with = "redis_url")]
    redis_url: Option<Url>,
    redis_mode: Option<RedisMode>,
    #[serde(default, deserialize_with = "redis_urls")]
    redis_urls: Option<Vec<Url>>,
    redis_sentinel_master: Option<String>,
    redis_password: Option<String>,
    redis_password_file: Option<PathBuf>,
    #[serde(default, deserialize_with = "key_prefix")]
    redis_key_prefix: Option<String>,
    #[serde(default, deserialize_with = "parse::duration")]
    cache_ttl: Option<Duration>,
    #[serde(default, deserialize_with = "redis_timeout")]
    redis_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "max_sessions")]
    max_sessions: Option<u64>,
    #[serde(default, deserialize_with = "parse::duration")]
    idle_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "parse::duration")]
    absolute_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "parse::duration")]
    login_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "parse::duration")]
    refresh_before: Option<Duration>,
    sign_out_requires_post: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// `session.secret`: one secret or a list (the first seals), each long enough.
fn inline_secrets<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<Secret>>, D::Error> {
    let one_or_many = OneOrMany::deserialize(d)
        .map_err(|_| serde::de::Error::custom("expected a secret or a list of secrets"))?;
    let list = match one_or_many {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(list) => list,
    };
    let secrets: Vec<Secret> = list.into_iter().map(Secret::new).collect();
    check_lengths(&secrets).map_err(serde::de::Error::custom)?;
    Ok(Some(secrets))
}

fn check_lengths(secrets: &[Secret]) -> Result<(), String> {
    match secrets
        .iter()
        .position(|s| s.expose().len() < MIN_SECRET_BYTES)
    {
        Some(i) => Err(format!(
            "secret #{i} is shorter than {MIN_SECRET_BYTES} bytes"
        )),
        None => Ok(()),
    }
}

fn max_sessions<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match u64::deserialize(d)? {
        0 => Err(serde::de::Error::custom("must be at least 1")),
        n => Ok(Some(n)),
    }
}

/// `[session]` from the file.
pub(super) fn read(value: config::Value) -> Result<SessionConfig, ConfigError> {
    parse::section::<RawSession>("session", value)?.validate()
}

impl RawSession {
    fn validate(mut self) -> Result<SessionConfig, ConfigError> {
        let secrets = match (self.secret.take(), self.secret_file.take()) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::new(
                    "session.secret",
                    "set either session.secret or session.secret_file, not both",
                ))
            }
            (Some(list), None) => list,
            (None, Some(path)) => {
                // One secret per line; the first seals.
                let text = parse::read_file("session.secret_file", &path)?;
                let secrets: Vec<Secret> = text
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(Secret::new)
                    .collect();
                check_lengths(&secrets).map_err(|why| ConfigError::new("session.secret", why))?;
                secrets
            }
            (None, None) => Vec::new(),
        };
        if secrets.is_empty() {
            return Err(ConfigError::new(
                "session.secret",
                "missing: set session.secret or session.secret_file (at least 32 bytes, e.g. `openssl rand -base64 48`)",
            ));
        }
        let store = self.store_config()?;
        Ok(SessionConfig {
            store,
            secrets,
            cookie_secure: self.cookie_secure.unwrap_or(true),
            max_sessions: self.max_sessions.unwrap_or(1_000_000),
            idle_timeout: self.idle_timeout.unwrap_or(Duration::from_secs(8 * 3600)),
            absolute_timeout: self
                .absolute_timeout
                .unwrap_or(Duration::from_secs(24 * 3600)),
            login_timeout: self.login_timeout.unwrap_or(Duration::from_secs(600)),
            refresh_before: self.refresh_before.unwrap_or(Duration::from_secs(60)),
            sign_out_requires_post: self.sign_out_requires_post.unwrap_or(false),
        })
    }

    /// `store` and, for Redis, the keys it needs together.
    fn store_config(&mut self) -> Result<StoreConfig, ConfigError> {
        if self.store != Some(SessionStore::Redis) {
            return Ok(StoreConfig::Memory);
        }
        let mode = self.redis_mode.unwrap_or(RedisMode::Standalone);
        let urls = self.redis_urls.take().unwrap_or_default();
        if mode != RedisMode::Standalone && urls.is_empty() {
            let what = if mode == RedisMode::Cluster {
                "the cluster's seed nodes"
            } else {
                "the sentinels"
            };
            return Err(ConfigError::new(
                "session.redis_urls",
                format!("redis_mode = \"{}\" needs redis_urls: {what}", mode.word()),
            ));
        }
        let sentinel_master = self.redis_sentinel_master.take().filter(|m| !m.is_empty());
        if mode == RedisMode::Sentinel && sentinel_master.is_none() {
            return Err(ConfigError::new(
                "session.redis_sentinel_master",
                "redis_mode = \"sentinel\" needs the name of the master the sentinels watch",
            ));
        }
        let mut url = match self.redis_url.take() {
            Some(url) => url,
            None => Url::parse(DEFAULT_REDIS_URL)
                .map_err(|e| ConfigError::new("session.redis_url", e.to_string()))?,
        };
        let (password, password_file) = self.redis_password(&mut url)?;
        Ok(StoreConfig::Redis(Box::new(RedisConfig {
            url,
            mode,
            urls,
            sentinel_master,
            password,
            password_file,
            key_prefix: self
                .redis_key_prefix
                .take()
                .unwrap_or_else(|| "portcullis:".into()),
            cache_ttl: self.cache_ttl.unwrap_or(Duration::from_secs(5)),
            timeout: self.redis_timeout.unwrap_or(Duration::from_millis(500)),
        })))
    }

    /// The one Redis password: in `redis_url` (taken out of it), `redis_password` (or its
    /// environment variable), or `redis_password_file` (read now); never two of them.
    fn redis_password(
        &mut self,
        url: &mut Url,
    ) -> Result<(Option<Secret>, Option<PathBuf>), ConfigError> {
        let in_url = url.password().map(|p| {
            percent_encoding::percent_decode_str(p)
                .decode_utf8_lossy()
                .into_owned()
        });
        if in_url.is_some() {
            let _ = url.set_password(None);
        }
        let inline = self.redis_password.take();
        let file = self.redis_password_file.take();
        let given = [in_url.is_some(), inline.is_some(), file.is_some()];
        if given.iter().filter(|g| **g).count() > 1 {
            return Err(ConfigError::new(
                "session.redis_password",
                "set the Redis password once: in redis_url, redis_password (or PORTCULLIS__SESSION__REDIS_PASSWORD), or redis_password_file",
            ));
        }
        if let Some(path) = file {
            let text = parse::read_file("session.redis_password_file", &path)?;
            let password = text.trim_end_matches(['\r', '\n']).to_string();
            return Ok((Some(Secret::new(password)), Some(path)));
        }
        Ok((
            in_url.or(inline).filter(|p| !p.is_empty()).map(Secret::new),
            None,
        ))
    }
}

const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379/0";

#[cfg(test)]
mod tests {
    use crate::config::{CliOverrides, Config, ConfigError};

    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml_with_env(text, &CliOverrides::default())
    }

    fn session(lines: &str) -> Result<Config, ConfigError> {
        load(&format!("[session]\ncookie_secure = false\n{lines}\n"))
    }

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn short_session_secret_is_rejected() {
        let err = load(
            "[oidc]\nissuer = \"http://127.0.0.1:1\"\nclient_id = \"c\"\n[session]\nsecret = \"short\"\ncookie_secure = false\n",
        )
        .unwrap_err();
        assert_eq!(err.key, "session.secret");
        let err = session(&format!("secret = [\"{SECRET}\", \"short\"]")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "session.secret: secret #1 is shorter than 32 bytes"
        );
    }

    #[test]
    fn secrets_inline_as_a_list_or_from_a_file() {
        let cfg = session(&format!(
            "secret = [\"{SECRET}\", \"fedcba9876543210fedcba9876543210\"]"
        ))
        .unwrap();
        assert_eq!(cfg.session.unwrap().secrets.len(), 2);

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secrets");
        std::fs::write(
            &file,
            format!("{SECRET}\n\n  fedcba9876543210fedcba9876543210  \n"),
        )
        .unwrap();
        let cfg = session(&format!("secret_file = {file:?}")).unwrap();
        let secrets = cfg.session.unwrap().secrets;
        assert_eq!(secrets[1].expose(), "fedcba9876543210fedcba9876543210");

        std::fs::write(&file, "short\n").unwrap();
        let err = session(&format!("secret_file = {file:?}")).unwrap_err();
        assert_eq!(err.key, "session.secret", "{err}");
        let err = session(&format!("secret = \"{SECRET}\"\nsecret_file = {file:?}")).unwrap_err();
        assert_eq!(err.key, "session.secret", "{err}");
        let err = session("secret_file = \"/nonexistent\"").unwrap_err();
        assert_eq!(err.key, "session.secret_file", "{err}");
        let err = session("").unwrap_err();
        assert!(
            err.to_string().starts_with("session.secret: missing"),
            "{err}"
        );
    }

    #[test]
    fn store_max_sessions_and_timeouts() {
        let err = session(&format!("secret = \"{SECRET}\"\nstore = \"disk\"")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "session.store: expected one of memory, redis, got \"disk\""
        );
        let err = session(&format!("secret = \"{SECRET}\"\nmax_sessions = 0")).unwrap_err();
        assert_eq!(err.key, "session.max_sessions", "{err}");
        let err = session(&format!("secret = \"{SECRET}\"\nidle_timeout = \"8\"")).unwrap_err();
        assert_eq!(err.key, "session.idle_timeout", "{err}");
        let s = session(&format!(
            "secret = \"{SECRET}\"\nstore = \"memory\"\nlogin_timeout = \"2m\""
        ))
        .unwrap()
        .session
        .unwrap();
        assert_eq!(s.login_timeout.as_secs(), 120);
        assert_eq!(
            (s.max_sessions, s.idle_timeout.as_secs()),
            (1_000_000, 8 * 3600)
        );
    }
}
