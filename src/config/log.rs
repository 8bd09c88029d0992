//! `[log]`: the log line format, the filter and whether request lines name the user.

use serde::{Deserialize, Deserializer, Serialize};

use super::parse::{self, choice_serde, Choice};
use super::{CliOverrides, ConfigError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl Choice for LogFormat {
    const CHOICES: &'static [(&'static str, Self)] =
        &[("text", LogFormat::Text), ("json", LogFormat::Json)];
}

choice_serde!(LogFormat);

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        LogFormat::from_word(s)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct LogConfig {
    pub format: LogFormat,
    pub filter: String,
    /// Whether the per-request log line carries the user's subject.
    pub log_user: bool,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLog {
    format: Option<LogFormat>,
    #[serde(default, deserialize_with = "filter")]
    filter: Option<String>,
    log_user: Option<bool>,
}

/// A `tracing` filter directive (`info`, `portcullis=debug,hyper=warn`).
fn filter<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    parse::text(d, |text| {
        tracing_subscriber::EnvFilter::try_new(text)
            .map(|_| text.to_string())
            .map_err(|e| e.to_string())
    })
}

/// `[log]` from the file (`None`: absent), with `--log-format` winning over `format`.
pub(super) fn read(
    value: Option<config::Value>,
    cli: &CliOverrides,
) -> Result<LogConfig, ConfigError> {
    let raw: RawLog = match value {
        Some(v) => parse::section("log", v)?,
        None => RawLog::default(),
    };
    Ok(LogConfig {
        format: cli.log_format.or(raw.format).unwrap_or_default(),
        filter: raw.filter.unwrap_or_else(|| "info".to_string()),
        log_user: raw.log_user.unwrap_or(true),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml_with_env(text, &CliOverrides::default())
    }

    #[test]
    fn defaults_and_overrides() {
        let log = load("").unwrap().log;
        assert_eq!(
            (log.format, log.filter.as_str(), log.log_user),
            (LogFormat::Text, "info", true)
        );
        let cli = CliOverrides {
            listen: None,
            log_format: Some(LogFormat::Json),
        };
        let cfg = Config::from_toml_with_env("[log]\nformat = \"text\"\n", &cli).unwrap();
        assert_eq!(cfg.log.format, LogFormat::Json);
    }

    #[test]
    fn a_bad_format_lists_the_accepted_ones() {
        let err = load("[log]\nformat = \"xml\"\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "log.format: expected one of text, json, got \"xml\""
        );
        assert_eq!("json".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert!("xml".parse::<LogFormat>().is_err());
    }

    #[test]
    fn a_bad_filter_names_the_key() {
        let err = load("[log]\nfilter = \"a=b=c\"\n").unwrap_err();
        assert_eq!(err.key, "log.filter", "{err}");
    }
}
