//! Who may pass, step 5 of the request path. Only this module can build a `Permit`, and
//! `Upstream::forward` requires one, so no request reaches an upstream without a decision.
//!
//! Rules (`allow_emails`, `allow_domains`, `allow_groups`, `allow_claims`, per route with
//! `[policy]` defaults): with none set, any signed-in user passes; otherwise a user passes
//! when ANY listed rule admits them. Emails and domains compare case-insensitively, groups
//! and claim values exactly.

use std::collections::BTreeMap;

use http::header::{self, HeaderMap, HeaderValue};
use http::Method;

use crate::config::{ForwardAuthConfig, PolicyConfig};
use crate::identity_headers::{self as h, UserHeaders};
use crate::oidc::access_token::ApiIdentity;
use crate::routes::Route;
use crate::session::{OpenedSession, Session};

/// Proof that the policy allowed this request, carrying what the upstream may learn.
#[derive(Debug)]
pub struct Permit {
    user: Option<UserHeaders>,
}

/// The policy's answer.
#[derive(Debug)]
pub enum Decision {
    Allow(Permit),
    /// No usable session: the caller sends a browser to log in, an API client a 401.
    Login,
    /// Signed in, but the rules do not admit this user: 403, never a redirect.
    Deny,
}

/// The facts about a user that rules look at.
pub struct Identity<'a> {
    pub sub: &'a str,
    pub email: Option<&'a str>,
    pub groups: &'a [String],
    pub claims: &'a BTreeMap<String, Vec<String>>,
}

impl<'a> Identity<'a> {
    pub fn of_session(s: &'a Session) -> Self {
        Identity {
            sub: &s.sub,
            email: s.email.as_deref(),
            groups: &s.groups,
            claims: &s.claims,
        }
    }

    pub fn of_api(a: &'a ApiIdentity) -> Self {
        Identity {
            sub: &a.sub,
            email: a.email.as_deref(),
            groups: &a.groups,
            claims: &a.claims,
        }
    }
}

/// Whether `policy` admits `id`.
pub fn admits(policy: &PolicyConfig, id: &Identity<'_>) -> bool {
    if policy.is_open() {
        return true;
    }
    let email = id.email.map(str::to_ascii_lowercase);
    let by_email = email
        .as_deref()
        .is_some_and(|e| policy.allow_emails.iter().any(|a| a == e));
    let by_domain = email
        .as_deref()
        .and_then(|e| e.rsplit_once('@'))
        .is_some_and(|(_, domain)| policy.allow_domains.iter().any(|d| d == domain));
    let by_group = id.groups.iter().any(|g| policy.allow_groups.contains(g));
    let by_claim = policy.allow_claims.iter().any(|(claim, accepted)| {
        id.claims
            .get(claim)
            .is_some_and(|values| values.iter().any(|v| accepted.contains(v)))
    });
    by_email || by_domain || by_group || by_claim
}

/// Whether this request needs no login: a public route, or a `skip_auth_paths` /
/// `methods` exception.
/// An unknown method (`None`: a forward-auth check without `X-Forwarded-Method`) gets no
/// method-bound exemption.
pub fn skips_auth(route: &Route, method: Option<&Method>, path: &str) -> bool {
    if route.public {
        return true;
    }
    let method_ok = match method {
        Some(m) => route.methods.is_empty() || route.methods.contains(m),
        None => route.methods.is_empty(),
    };
    if route.skip_auth_paths.is_empty() {
        return !route.methods.is_empty() && method_ok;
    }
    method_ok && route.skip_auth_paths.iter().any(|re| re.is_match(path))
}

/// Who a request speaks for, as the policy sees it.
pub enum Principal<'a> {
    /// A signed-in user; the session's access token goes upstream.
    Session(&'a OpenedSession),
    /// An API client with its own valid bearer token, which goes upstream unchanged.
    Api {
        identity: &'a ApiIdentity,
        authorization: &'a HeaderValue,
    },
}

/// The one decision: may `principal` pass under `policy`? Proxied requests, forward-auth
/// checks and API bearer tokens all come here (route exemptions are `skips_auth`'s).
pub fn decide(policy: &PolicyConfig, principal: Option<Principal<'_>>) -> Decision {
    let Some(principal) = principal else {
        return Decision::Login;
    };
    let (identity, user) = match &principal {
        Principal::Session(s) => (Identity::of_session(s), s.user_headers().cloned()),
        Principal::Api {
            identity,
            authorization,
        } => (
            Identity::of_api(identity),
            api_headers(identity, authorization),
        ),
    };
    if !admits(policy, &identity) {
        return Decision::Deny;
    }
    match user {
        Some(user) => Decision::Allow(Permit { user: Some(user) }),
        None => Decision::Login,
    }
}

/// Decides for a proxied request on `route`: its exemptions, else `decide` under the
/// route's rules.
pub fn evaluate(
    route: &Route,
    method: &Method,
    path: &str,
    principal: Option<Principal<'_>>,
) -> Decision {
    if skips_auth(route, Some(method), path) {
        return Decision::Allow(Permit { user: None });
    }
    decide(&route.policy, principal)
}

fn api_headers(api: &ApiIdentity, authorization: &HeaderValue) -> Option<UserHeaders> {
    UserHeaders::new(
        authorization.clone(),
        &api.sub,
        api.email.as_deref(),
        &api.groups,
    )
}

impl Permit {
    /// Sets the gateway's own assertions (the client's copies are already gone: see
    /// `ClientHeaderRules`). On a public route the client's `Authorization` passes through
    /// (it is theirs, not ours); where the gateway sets it, it replaces the client's.
    pub fn apply(&self, headers: &mut HeaderMap) {
        let Some(user) = &self.user else { return };
        headers.insert(header::AUTHORIZATION, user.bearer.clone());
        headers.insert(h::X_FORWARDED_USER, user.user.clone());
        if let Some(email) = &user.email {
            headers.insert(h::X_FORWARDED_EMAIL, email.clone());
        }
        if let Some(groups) = &user.groups {
            headers.insert(h::X_FORWARDED_GROUPS, groups.clone());
        }
    }

    /// The forward-auth answer's headers (oauth2-proxy compatible): `X-Auth-Request-User`,
    /// `-Email`, `-Groups`, and per config the access token and `Authorization`.
    pub fn forward_auth_headers(&self, cfg: &ForwardAuthConfig, out: &mut HeaderMap) {
        let Some(user) = &self.user else { return };
        out.insert(h::X_AUTH_REQUEST_USER, user.user.clone());
        if let Some(email) = &user.email {
            out.insert(h::X_AUTH_REQUEST_EMAIL, email.clone());
        }
        if let Some(groups) = &user.groups {
            out.insert(h::X_AUTH_REQUEST_GROUPS, groups.clone());
        }
        if cfg.pass_access_token {
            if let Some(Ok(mut token)) = user
                .bearer
                .as_bytes()
                .get("Bearer ".len()..)
                .map(HeaderValue::from_bytes)
            {
                token.set_sensitive(true);
                out.insert(h::X_AUTH_REQUEST_ACCESS_TOKEN, token);
            }
        }
        if cfg.set_authorization {
            out.insert(header::AUTHORIZATION, user.bearer.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(
        emails: &[&str],
        domains: &[&str],
        groups: &[&str],
        claims: &[(&str, &[&str])],
    ) -> PolicyConfig {
        let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        PolicyConfig {
            allow_emails: v(emails),
            allow_domains: v(domains),
            allow_groups: v(groups),
            allow_claims: claims
                .iter()
                .map(|(k, vals)| (k.to_string(), v(vals)))
                .collect(),
        }
    }

    fn check(
        p: &PolicyConfig,
        email: Option<&str>,
        groups: &[&str],
        claims: &[(&str, &[&str])],
    ) -> bool {
        let groups: Vec<String> = groups.iter().map(|s| s.to_string()).collect();
        let claims: BTreeMap<String, Vec<String>> = claims
            .iter()
            .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
            .collect();
        admits(
            p,
            &Identity {
                sub: "u",
                email,
                groups: &groups,
                claims: &claims,
            },
        )
    }

    #[test]
    fn open_policy_admits_anyone_signed_in() {
        assert!(check(&PolicyConfig::default(), None, &[], &[]));
    }

    #[test]
    fn each_rule_kind_admits_on_its_own() {
        let p = policy(
            &["boss@corp.test"],
            &["eng.test"],
            &["admins"],
            &[("department", &["eng"])],
        );
        assert!(check(&p, Some("Boss@Corp.Test"), &[], &[]));
        assert!(check(&p, Some("x@ENG.test"), &[], &[]));
        assert!(check(&p, Some("x@other.test"), &["admins"], &[]));
        assert!(check(&p, None, &[], &[("department", &["sales", "eng"])]));
        assert!(!check(
            &p,
            Some("x@other.test"),
            &["users"],
            &[("department", &["sales"])]
        ));
        assert!(!check(&p, None, &[], &[]));
    }

    #[test]
    fn domains_match_exactly_not_as_suffix() {
        let p = policy(&[], &["corp.test"], &[], &[]);
        assert!(!check(&p, Some("x@evilcorp.test"), &[], &[]));
        assert!(!check(&p, Some("x@sub.corp.test"), &[], &[]));
        assert!(!check(&p, Some("corp.test@evil.test"), &[], &[]));
    }
}
