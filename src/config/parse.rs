//! What the sections share: reading a section out of the merged file + environment, the
//! `config` crate's errors as `key: reason`, values checked as they are read (so a bad
//! value is reported where it stands in the file), the enums that list what they accept,
//! durations, URLs, host names and files holding secrets.

use std::path::Path;
use std::time::Duration;

use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer};
use url::Url;

use super::ConfigError;

/// Deserializes one top-level table (`[server]`, `[oidc]`, ...) into its raw mirror; an
/// error's key is prefixed with `name`.
pub(super) fn section<R: DeserializeOwned>(
    name: &str,
    value: config::Value,
) -> Result<R, ConfigError> {
    if !matches!(value.kind, config::ValueKind::Table(_)) {
        return Err(ConfigError::new(
            name,
            format!("must be a table ([{name}])"),
        ));
    }
    R::deserialize(value).map_err(|e| from_config_crate(name, e))
}

/// The `config` crate's deserialization error as `key: reason`: its key is relative to
/// `prefix` (`upstream_timeout`, `[0].upstream`, or none), and an unknown field becomes
/// `prefix.key.field: unknown key`.
pub(super) fn from_config_crate(prefix: &str, e: config::ConfigError) -> ConfigError {
    let (key, reason) = match e {
        config::ConfigError::At { error, key, .. } => (key, error.to_string()),
        config::ConfigError::Type {
            unexpected,
            expected,
            key,
            ..
        } => (
            key,
            format!("invalid type: {unexpected}, expected {expected}"),
        ),
        config::ConfigError::NotFound(key) => (Some(key), "missing".to_string()),
        other => (None, clean(&other)),
    };
    let key = join(prefix, key.as_deref().unwrap_or(""));
    if let Some(rest) = reason.strip_prefix("unknown field `") {
        let field = rest.split('`').next().unwrap_or("");
        return ConfigError::new(join(&key, field), "unknown key");
    }
    ConfigError::new(key, reason)
}

/// An error of the `config` crate while merging the sources (TOML syntax, environment).
pub(super) fn merge_error(e: &config::ConfigError) -> ConfigError {
    ConfigError::new("config", clean(e))
}

fn clean(e: &config::ConfigError) -> String {
    e.to_string().replace('\n', " ")
}

/// `a` + `b` as a key path: `server` + `listen` = `server.listen`, `route` + `[0]` =
/// `route[0]`.
fn join(a: &str, b: &str) -> String {
    match (a, b) {
        (a, "") => a.to_string(),
        ("", b) => b.to_string(),
        (a, b) if b.starts_with('[') => format!("{a}{b}"),
        (a, b) => format!("{a}.{b}"),
    }
}

/// For `#[serde(deserialize_with)]` on an `Option` field: the value as text, parsed by
/// `parse`, whose error becomes the reason for the field's key.
pub(super) fn text<'de, D, T>(
    d: D,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
{
    let text = String::deserialize(d)?;
    parse(&text).map(Some).map_err(D::Error::custom)
}

/// Like `text` for a list: every item parsed, the first bad one named in the reason (the
/// key stays the list's).
pub(super) fn list<'de, D, T>(
    d: D,
    parse: impl FnMut(&str) -> Result<T, String>,
) -> Result<Option<Vec<T>>, D::Error>
where
    D: Deserializer<'de>,
{
    let items = Vec::<String>::deserialize(d)?;
    items
        .iter()
        .map(String::as_str)
        .map(parse)
        .collect::<Result<Vec<T>, String>>()
        .map(Some)
        .map_err(D::Error::custom)
}

/// A duration written as humantime text (`"90s"`, `"5m"`, `"8h"`).
pub(super) fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    text(d, |text| {
        humantime::parse_duration(text.trim()).map_err(|e| {
            format!("{text:?} is not a duration ({e}); write e.g. \"90s\", \"5m\", \"8h\"")
        })
    })
}

/// An `http://` or `https://` URL with a host and no credentials.
pub(super) fn http_url<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Url>, D::Error> {
    text(d, parse_http_url)
}

pub(super) fn parse_http_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| format!("{text:?} is not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(format!(
            "{text:?} must be an http:// or https:// URL with a host"
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not contain user:password@".to_string());
    }
    Ok(url)
}

/// A host name, optionally as a `*.` wildcard: ASCII letters, digits, `-` and `.`.
pub(super) fn is_host_pattern(host: &str) -> bool {
    let bare = host.strip_prefix("*.").unwrap_or(host);
    !bare.is_empty()
        && bare
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
}

/// Reads a file named by `key` (e.g. `oidc.client_secret_file`).
pub(super) fn read_file(key: &str, path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new(key, format!("cannot read {}: {e}", path.display())))
}

/// A config value that is one of a fixed set of words: parsed with the accepted words in
/// the error (`expected one of auto, always, never, got "x"`), shown as its word.
pub trait Choice: Copy + PartialEq + Sized + 'static {
    /// Every accepted word and what it means, in the order the error lists them.
    const CHOICES: &'static [(&'static str, Self)];

    /// The word for this value.
    fn word(self) -> &'static str {
        Self::CHOICES
            .iter()
            .find(|(_, v)| *v == self)
            .map_or("", |(word, _)| word)
    }

    /// The value for a word, or an error listing the accepted ones.
    fn from_word(text: &str) -> Result<Self, String> {
        Self::CHOICES
            .iter()
            .find(|(word, _)| *word == text)
            .map(|(_, v)| *v)
            .ok_or_else(|| {
                let words: Vec<&str> = Self::CHOICES.iter().map(|(word, _)| *word).collect();
                format!("expected one of {}, got {text:?}", words.join(", "))
            })
    }
}

/// `Deserialize` and `Serialize` for `Choice` enums, as their words.
macro_rules! choice_serde {
    ($($ty:ty),* $(,)?) => {$(
        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = <String as serde::Deserialize>::deserialize(d)?;
                <$ty as $crate::config::Choice>::from_word(&text)
                    .map_err(<D::Error as serde::de::Error>::custom)
            }
        }

        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str($crate::config::Choice::word(*self))
            }
        }
    )*};
}
pub(super) use choice_serde;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_join_as_paths() {
        assert_eq!(join("server", "listen"), "server.listen");
        assert_eq!(join("route", "[2].upstream"), "route[2].upstream");
        assert_eq!(join("route", ""), "route");
        assert_eq!(join("", "x"), "x");
    }

    #[test]
    fn urls_must_be_http_with_a_host_and_no_credentials() {
        assert!(parse_http_url("https://id.example.com/realm").is_ok());
        for bad in ["not a url", "ftp://127.0.0.1/", "http://u:p@127.0.0.1/"] {
            assert!(parse_http_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn host_patterns() {
        assert!(is_host_pattern("app.example.com") && is_host_pattern("*.example.com"));
        assert!(!is_host_pattern("*.") && !is_host_pattern("ex ample") && !is_host_pattern(""));
    }
}
