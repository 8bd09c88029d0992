//! The user's profile as the gateway keeps it (email, name, groups, policy claims), read
//! the same way from every JSON claim set the IdP hands out: ID tokens, userinfo
//! responses (OIDC Core §5.3.2) and API clients' JWT access tokens.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// Which claims the gateway needs: the standard profile ones plus the configured groups
/// claim and every claim a policy names.
#[derive(Debug, Clone, Copy)]
pub struct Wanted<'a> {
    pub groups_claim: &'a str,
    pub policy_claims: &'a [String],
}

const STANDARD: [&str; 3] = ["email", "name", "preferred_username"];

impl Wanted<'_> {
    /// Whether `claims` lacks any claim the gateway needs (`oidc.userinfo = "auto"`).
    pub fn missing_from(&self, claims: &Map<String, Value>) -> bool {
        STANDARD
            .into_iter()
            .chain([self.groups_claim])
            .chain(self.policy_claims.iter().map(String::as_str))
            .any(|name| !claims.contains_key(name))
    }
}

/// What the gateway keeps about a user besides `sub`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Profile {
    pub email: Option<String>,
    /// `name`, else `preferred_username`.
    pub name: Option<String>,
    pub groups: Vec<String>,
    /// The claims named in `allow_claims` rules, as strings.
    pub claims: BTreeMap<String, Vec<String>>,
}

impl Profile {
    pub fn from_claims(claims: &Map<String, Value>, wanted: Wanted<'_>) -> Self {
        let text = |name: &str| claims.get(name).and_then(Value::as_str).map(str::to_owned);
        Profile {
            email: text("email"),
            name: text("name").or_else(|| text("preferred_username")),
            groups: groups_from(claims, wanted.groups_claim),
            claims: claims_from(claims, wanted.policy_claims),
        }
    }

    /// Lays a second claim set (userinfo) over this one: every claim it carries wins,
    /// claims it lacks keep their value.
    pub fn overlay(&mut self, claims: &Map<String, Value>, wanted: Wanted<'_>) {
        let newer = Profile::from_claims(claims, wanted);
        if newer.email.is_some() {
            self.email = newer.email;
        }
        if newer.name.is_some() {
            self.name = newer.name;
        }
        if claims.contains_key(wanted.groups_claim) {
            self.groups = newer.groups;
        }
        self.claims.extend(newer.claims);
    }
}

/// The named claims as lists of strings (a string, number or bool is a one-item list).
pub fn claims_from(claims: &Map<String, Value>, names: &[String]) -> BTreeMap<String, Vec<String>> {
    let text = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(_) | Value::Number(_) => Some(v.to_string()),
        _ => None,
    };
    names
        .iter()
        .filter_map(|name| {
            let values: Vec<String> = match claims.get(name)? {
                Value::Array(items) => items.iter().filter_map(text).collect(),
                other => text(other).into_iter().collect(),
            };
            Some((name.clone(), values))
        })
        .collect()
}

/// The groups claim: a list of strings, or a single string.
pub fn groups_from(claims: &Map<String, Value>, claim: &str) -> Vec<String> {
    match claims.get(claim) {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        Some(Value::String(s)) => vec![s.clone()],
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn userinfo_fills_what_the_id_token_lacks_and_wins_where_both_have_it() {
        let policy = vec!["department".to_string()];
        let wanted = Wanted {
            groups_claim: "groups",
            policy_claims: &policy,
        };
        let id_token = map(serde_json::json!({ "sub": "a", "name": "Old Name" }));
        assert!(wanted.missing_from(&id_token));
        let mut profile = Profile::from_claims(&id_token, wanted);
        profile.overlay(
            &map(serde_json::json!({
                "sub": "a", "email": "a@corp.test", "name": "New Name",
                "groups": ["eng"], "department": "eng"
            })),
            wanted,
        );
        assert_eq!(profile.email.as_deref(), Some("a@corp.test"));
        assert_eq!(profile.name.as_deref(), Some("New Name"));
        assert_eq!(profile.groups, vec!["eng"]);
        assert_eq!(profile.claims["department"], vec!["eng"]);
        // A userinfo without groups leaves the groups alone.
        profile.overlay(&map(serde_json::json!({ "sub": "a" })), wanted);
        assert_eq!(profile.groups, vec!["eng"]);
    }

    #[test]
    fn a_complete_claim_set_needs_no_userinfo() {
        let wanted = Wanted {
            groups_claim: "roles",
            policy_claims: &[],
        };
        let full = map(serde_json::json!({
            "email": "a@b.c", "name": "A", "preferred_username": "a", "roles": []
        }));
        assert!(!wanted.missing_from(&full));
        let mut no_roles = full.clone();
        no_roles.remove("roles");
        assert!(wanted.missing_from(&no_roles));
    }
}
