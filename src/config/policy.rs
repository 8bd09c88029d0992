//! `[policy]`: who may pass a protected route. Every `[[route]]` takes the same keys, each
//! one it leaves unset inherited from here.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

use super::{parse, ConfigError};

/// Who may pass a protected route. Empty lists everywhere: any signed-in user. Otherwise a
/// user passes when ANY listed rule admits them (email, domain, group or claim).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
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

/// The policy keys as written (already normalized), so a route can tell "unset" (inherit)
/// from "set to nothing".
#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPolicy {
    #[serde(default, deserialize_with = "emails")]
    pub(super) allow_emails: Option<Vec<String>>,
    #[serde(default, deserialize_with = "domains")]
    pub(super) allow_domains: Option<Vec<String>>,
    pub(super) allow_groups: Option<Vec<String>>,
    pub(super) allow_claims: Option<BTreeMap<String, Vec<String>>>,
}

/// `allow_emails`: addresses, stored lowercase.
pub(super) fn emails<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    parse::list(d, |text| {
        let email = text.trim().to_ascii_lowercase();
        if email.contains('@') {
            Ok(email)
        } else {
            Err(format!("{email:?} is not an email address"))
        }
    })
}

/// `allow_domains`: domains (a leading `@` is dropped), stored lowercase.
pub(super) fn domains<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    parse::list(d, |text| {
        let lower = text.trim().to_ascii_lowercase();
        let domain = lower.trim_start_matches('@');
        if domain.is_empty() || domain.contains('@') {
            Err(format!("{domain:?} is not a domain"))
        } else {
            Ok(domain.to_string())
        }
    })
}

impl RawPolicy {
    /// These keys, each unset one taken from `global` (the `[policy]` section).
    pub(super) fn inherit(self, global: &RawPolicy) -> RawPolicy {
        RawPolicy {
            allow_emails: self.allow_emails.or_else(|| global.allow_emails.clone()),
            allow_domains: self.allow_domains.or_else(|| global.allow_domains.clone()),
            allow_groups: self.allow_groups.or_else(|| global.allow_groups.clone()),
            allow_claims: self.allow_claims.or_else(|| global.allow_claims.clone()),
        }
    }

    pub(super) fn into_config(self) -> PolicyConfig {
        PolicyConfig {
            allow_emails: self.allow_emails.unwrap_or_default(),
            allow_domains: self.allow_domains.unwrap_or_default(),
            allow_groups: self.allow_groups.unwrap_or_default(),
            allow_claims: self.allow_claims.unwrap_or_default(),
        }
    }
}

/// `[policy]` from the file.
pub(super) fn read(value: config::Value) -> Result<RawPolicy, ConfigError> {
    parse::section("policy", value)
}

#[cfg(test)]
mod tests {
    use crate::config::{CliOverrides, Config, ConfigError};

    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml_with_env(text, &CliOverrides::default())
    }

    #[test]
    fn addresses_and_domains_are_normalized_and_checked() {
        let p = load("[policy]\nallow_emails = [\" Alice@Example.COM\"]\nallow_domains = [\"@Corp.example\"]\n")
            .unwrap()
            .policy;
        assert_eq!(p.allow_emails, ["alice@example.com"]);
        assert_eq!(p.allow_domains, ["corp.example"]);
        assert!(!p.is_open());
        assert!(load("").unwrap().policy.is_open());

        let err = load("[policy]\nallow_emails = [\"alice\"]\n").unwrap_err();
        assert_eq!(err.key, "policy.allow_emails", "{err}");
        let err = load("[policy]\nallow_domains = [\"a@b\"]\n").unwrap_err();
        assert_eq!(err.key, "policy.allow_domains", "{err}");
        let err = load("[policy]\nallow_users = []\n").unwrap_err();
        assert_eq!(err.key, "policy.allow_users", "{err}");
    }
}
