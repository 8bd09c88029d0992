//! OpenID Provider metadata (OpenID Connect Discovery 1.0 §3), fetched from
//! `{issuer}/.well-known/openid-configuration` at start and checked against the
//! configured issuer (§4.3: they must be identical).

use serde::Deserialize;
use url::Url;

use super::http::{IdpCall, IdpHttp};
use crate::errors::{Error, Kind};

#[derive(Debug, Clone, Deserialize)]
pub struct Metadata {
    pub issuer: String,
    pub authorization_endpoint: Url,
    pub token_endpoint: Url,
    pub jwks_uri: Url,
    #[serde(default)]
    pub userinfo_endpoint: Option<Url>,
    #[serde(default)]
    pub end_session_endpoint: Option<Url>,
    #[serde(default)]
    pub revocation_endpoint: Option<Url>,
    #[serde(default)]
    pub introspection_endpoint: Option<Url>,
    #[serde(default)]
    pub token_endpoint_auth_methods_supported: Option<Vec<String>>,
    #[serde(default)]
    pub id_token_signing_alg_values_supported: Vec<String>,
    #[serde(default)]
    pub code_challenge_methods_supported: Option<Vec<String>>,
    #[serde(default)]
    pub userinfo_signing_alg_values_supported: Vec<String>,
    /// OIDC Discovery §3: RECOMMENDED; when present, the gateway requests nothing else
    /// that it knows the IdP refuses (`offline_access`).
    #[serde(default)]
    pub scopes_supported: Option<Vec<String>>,
    /// RFC 9207 §3: the IdP puts `iss` in every authorization response.
    #[serde(default)]
    pub authorization_response_iss_parameter_supported: bool,
}

pub async fn discover(http: &IdpHttp, issuer: &Url) -> Result<Metadata, Error> {
    let issuer_text = issuer.as_str().trim_end_matches('/');
    let url = Url::parse(&format!("{issuer_text}/.well-known/openid-configuration"))
        .map_err(|e| Error::with_source(Kind::Idp("bad issuer URL"), e))?;
    let meta: Metadata = http
        .get_json(&url, IdpCall::Discovery, "OIDC discovery failed")
        .await?;
    if meta.issuer.trim_end_matches('/') != issuer_text {
        return Err(Error::with_source(
            Kind::Idp("OIDC discovery failed"),
            format!(
                "discovery document names issuer {:?}, configured oidc.issuer is {:?}",
                meta.issuer, issuer_text
            ),
        ));
    }
    if let Some(methods) = &meta.code_challenge_methods_supported {
        if !methods.iter().any(|m| m == "S256") {
            return Err(Error::with_source(
                Kind::Idp("OIDC discovery failed"),
                "the identity provider does not support PKCE S256",
            ));
        }
    }
    Ok(meta)
}
