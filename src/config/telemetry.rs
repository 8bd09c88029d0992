//! `[telemetry]`: where spans are exported (OTLP over HTTP), and under which service name.
//! Off unless `otlp_endpoint` is set; the W3C `traceparent` goes upstream either way.

use serde::{Deserialize, Deserializer, Serialize};
use url::Url;

use super::{parse, show, ConfigError};

/// Span export. `otlp_endpoint` is the OTLP/HTTP base URL; spans are posted to
/// `<otlp_endpoint>/v1/traces`, as the OpenTelemetry exporter spec says of a base endpoint.
#[derive(Debug, Clone, Serialize)]
pub struct TelemetryConfig {
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "show::opt_display"
    )]
    pub otlp_endpoint: Option<Url>,
    /// The `service.name` resource attribute of every exported span.
    pub service_name: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            otlp_endpoint: None,
            service_name: DEFAULT_SERVICE_NAME.to_string(),
        }
    }
}

const DEFAULT_SERVICE_NAME: &str = "portcullis";

impl TelemetryConfig {
    /// Where the exporter posts: `<otlp_endpoint>/v1/traces` (a trailing `/` is not doubled).
    pub fn traces_url(&self) -> Option<String> {
        self.otlp_endpoint
            .as_ref()
            .map(|base| format!("{}/v1/traces", base.as_str().trim_end_matches('/')))
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTelemetry {
    #[serde(default, deserialize_with = "endpoint")]
    otlp_endpoint: Option<Url>,
    #[serde(default, deserialize_with = "service_name")]
    service_name: Option<String>,
}

/// An http(s) base URL with a host, no credentials, no query or fragment (the signal's
/// path is appended to it).
fn endpoint<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Url>, D::Error> {
    parse::text(d, |text| {
        let url = parse::parse_http_url(text)?;
        if url.query().is_some() || url.fragment().is_some() {
            return Err(format!(
                "{text:?} must be a base URL without ?query or #fragment (spans go to <endpoint>/v1/traces)"
            ));
        }
        Ok(url)
    })
}

fn service_name<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    parse::text(d, |text| {
        let name = text.trim();
        if name.is_empty() || name.chars().any(char::is_control) {
            return Err("must be a non-empty name without control characters".to_string());
        }
        Ok(name.to_string())
    })
}

/// `[telemetry]` from the file (`None`: absent).
pub(super) fn read(value: Option<config::Value>) -> Result<TelemetryConfig, ConfigError> {
    let raw: RawTelemetry = match value {
        Some(v) => parse::section("telemetry", v)?,
        None => RawTelemetry::default(),
    };
    Ok(TelemetryConfig {
        otlp_endpoint: raw.otlp_endpoint,
        service_name: raw
            .service_name
            .unwrap_or_else(|| DEFAULT_SERVICE_NAME.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use crate::config::{CliOverrides, Config, ConfigError};

    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml_with_env(text, &CliOverrides::default())
    }

    #[test]
    fn off_by_default() {
        let telemetry = load("").unwrap().telemetry;
        assert!(telemetry.otlp_endpoint.is_none());
        assert_eq!(telemetry.traces_url(), None);
        assert_eq!(telemetry.service_name, "portcullis");
    }

    #[test]
    fn spans_go_to_the_base_endpoint_plus_v1_traces() {
        for (endpoint, url) in [
            ("http://127.0.0.1:4318", "http://127.0.0.1:4318/v1/traces"),
            ("http://127.0.0.1:4318/", "http://127.0.0.1:4318/v1/traces"),
            (
                "https://otel.example.com/collector/",
                "https://otel.example.com/collector/v1/traces",
            ),
        ] {
            let cfg = load(&format!(
                "[telemetry]\notlp_endpoint = \"{endpoint}\"\nservice_name = \"gw-eu\"\n"
            ))
            .unwrap();
            assert_eq!(cfg.telemetry.traces_url().as_deref(), Some(url));
            assert_eq!(cfg.telemetry.service_name, "gw-eu");
        }
    }

    #[test]
    fn a_bad_endpoint_names_the_key() {
        for bad in [
            "not a url",
            "ftp://127.0.0.1:4318",
            "http://u:p@127.0.0.1:4318",
            "http://127.0.0.1:4318/?x=1",
        ] {
            let err = load(&format!("[telemetry]\notlp_endpoint = \"{bad}\"\n")).unwrap_err();
            assert_eq!(err.key, "telemetry.otlp_endpoint", "{bad}: {err}");
        }
        let err = load("[telemetry]\nservice_name = \" \"\n").unwrap_err();
        assert_eq!(err.key, "telemetry.service_name", "{err}");
        let err = load("[telemetry]\nendpoint = \"http://127.0.0.1:4318\"\n").unwrap_err();
        assert_eq!(err.key, "telemetry.endpoint", "{err}");
    }
}
