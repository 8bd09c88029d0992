//! The OpenID Connect relying party: discovery, JWKS, the PKCE login, token validation.
//! Loaded in the background at start (with retry); until then `/readyz` says 503 and
//! requests that need a login get 503 too.

pub mod access_token;
pub mod claims;
pub mod discovery;
pub mod http;
pub mod id_token;
pub mod jwks;
pub mod login;
pub mod logout;
pub mod refresh;
pub mod token_error;
pub mod userinfo;

use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::Algorithm;
use oauth2::basic::{
    BasicErrorResponse, BasicRevocationErrorResponse, BasicTokenIntrospectionResponse,
    BasicTokenType,
};
use oauth2::{
    AuthType, AuthUrl, ClientId, ClientSecret, EndpointNotSet, EndpointSet, ExtraTokenFields,
    RedirectUrl, Scope, StandardRevocableToken, StandardTokenResponse, TokenUrl,
};
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;
use url::Url;

use crate::client_key::{ClientKey, ASSERTION_TYPE};
use crate::config::{OidcConfig, TokenAuthMethod, UserinfoMode};
use crate::errors::{Error, Kind};
use crate::secret::Secret;
use claims::Wanted;
use discovery::Metadata;
use http::IdpHttp;
use jwks::Jwks;

/// The `id_token` member of the token response (OIDC Core §3.1.3.3).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdTokenField {
    #[serde(default)]
    pub id_token: Option<String>,
}
impl ExtraTokenFields for IdTokenField {}

pub type TokenResponse = StandardTokenResponse<IdTokenField, BasicTokenType>;

type OAuthClient = oauth2::Client<
    BasicErrorResponse,
    TokenResponse,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

/// How the gateway authenticates itself at the token and revocation endpoints.
enum ClientAuth {
    /// A public client: only `client_id` in the body.
    None,
    /// `client_secret_basic` (in the `Authorization` header) or `client_secret_post`.
    Secret { secret: Secret, in_body: bool },
    /// `private_key_jwt`: a fresh signed assertion per call (RFC 7523 §2.2).
    PrivateKeyJwt(Arc<ClientKey>),
}

/// A discovered, ready-to-use OIDC client.
pub struct OidcClient {
    pub metadata: Metadata,
    client_id: String,
    oauth: OAuthClient,
    http: IdpHttp,
    jwks: Jwks,
    algorithms: Vec<Algorithm>,
    scopes: Vec<Scope>,
    groups_claim: String,
    api_audience: Option<String>,
    policy_claims: Vec<String>,
    extra_authorize_params: Vec<(String, String)>,
    userinfo: UserinfoMode,
    auth: ClientAuth,
}

impl OidcClient {
    /// Discovery, JWKS, and the `oauth2` client with the right client authentication.
    pub async fn discover(
        cfg: &OidcConfig,
        http: IdpHttp,
        redirect_uri: &Url,
    ) -> Result<Self, Error> {
        let metadata = discovery::discover(&http, &cfg.issuer).await?;
        let jwks = Jwks::load(http.clone(), metadata.jwks_uri.clone()).await?;
        let bad = |e: url::ParseError| Error::with_source(Kind::Idp("OIDC discovery failed"), e);
        let mut oauth = oauth2::Client::new(ClientId::new(cfg.client_id.clone()))
            .set_auth_uri(AuthUrl::from_url(metadata.authorization_endpoint.clone()))
            .set_token_uri(TokenUrl::from_url(metadata.token_endpoint.clone()))
            .set_redirect_uri(RedirectUrl::new(redirect_uri.to_string()).map_err(bad)?);
        let auth = client_auth(cfg, &metadata);
        // Without a secret the oauth2 crate sends client_id in the body; private_key_jwt
        // adds its assertion per request (see `auth_params`).
        if let ClientAuth::Secret { secret, in_body } = &auth {
            oauth = oauth
                .set_client_secret(ClientSecret::new(secret.expose().to_string()))
                .set_auth_type(if *in_body {
                    AuthType::RequestBody
                } else {
                    AuthType::BasicAuth
                });
        }
        let algorithms =
            id_token::allowed_algorithms(&metadata.id_token_signing_alg_values_supported);
        if algorithms.is_empty() {
            return Err(Error::with_source(
                Kind::Idp("OIDC discovery failed"),
                "the identity provider signs ID tokens with no algorithm the gateway accepts",
            ));
        }
        if cfg.userinfo == UserinfoMode::Always && metadata.userinfo_endpoint.is_none() {
            return Err(Error::with_source(
                Kind::Idp("OIDC discovery failed"),
                "oidc.userinfo = \"always\" but the identity provider advertises no userinfo_endpoint",
            ));
        }
        Ok(OidcClient {
            scopes: requested_scopes(&cfg.scopes, metadata.scopes_supported.as_deref())
                .into_iter()
                .map(Scope::new)
                .collect(),
            metadata,
            client_id: cfg.client_id.clone(),
            oauth,
            http,
            jwks,
            algorithms,
            groups_claim: cfg.groups_claim.clone(),
            api_audience: cfg.api_audience.clone(),
            policy_claims: cfg.policy_claims.clone(),
            extra_authorize_params: cfg
                .extra_authorize_params
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            userinfo: cfg.userinfo,
            auth,
        })
    }

    /// The claims the gateway needs from the IdP.
    fn wanted(&self) -> Wanted<'_> {
        Wanted {
            groups_claim: &self.groups_claim,
            policy_claims: &self.policy_claims,
        }
    }

    /// The body parameters that authenticate the client beyond what the `oauth2` crate
    /// sends (`private_key_jwt`: a fresh assertion whose `aud` is the token endpoint, on
    /// token, refresh and revocation calls alike).
    fn auth_params(&self) -> Result<Vec<(&'static str, String)>, Error> {
        match &self.auth {
            ClientAuth::PrivateKeyJwt(key) => {
                let assertion = key
                    .assertion(
                        &self.client_id,
                        self.metadata.token_endpoint.as_str(),
                        crate::clock::now(),
                    )
                    .map_err(|e| Error::with_source(Kind::Internal, e))?;
                Ok(vec![
                    ("client_assertion_type", ASSERTION_TYPE.to_string()),
                    ("client_assertion", assertion),
                ])
            }
            ClientAuth::None | ClientAuth::Secret { .. } => Ok(Vec::new()),
        }
    }
}

/// The client authentication to use: the operator's choice, else (RFC 8414 §2) the
/// default `client_secret_basic`, or post when the IdP lists post but not basic.
fn client_auth(cfg: &OidcConfig, metadata: &Metadata) -> ClientAuth {
    if let Some(key) = &cfg.client_key {
        return ClientAuth::PrivateKeyJwt(key.clone());
    }
    let Some(secret) = cfg.client_secret.clone() else {
        return ClientAuth::None;
    };
    let methods = metadata.token_endpoint_auth_methods_supported.as_deref();
    let basic = methods.is_none_or(|m| m.iter().any(|x| x == "client_secret_basic"));
    let post = methods.is_some_and(|m| m.iter().any(|x| x == "client_secret_post"));
    let in_body = match cfg.token_endpoint_auth_method {
        Some(TokenAuthMethod::ClientSecretPost) => true,
        Some(TokenAuthMethod::ClientSecretBasic) => false,
        _ => !basic && post,
    };
    ClientAuth::Secret { secret, in_body }
}

/// The configured scopes, less `offline_access` when the IdP lists the scopes it
/// supports without it: requesting it there is an `invalid_scope` error, and without
/// it the session simply ends when the access token does.
fn requested_scopes(configured: &[String], supported: Option<&[String]>) -> Vec<String> {
    let offered = |s: &str| supported.is_none_or(|list| list.iter().any(|x| x == s));
    if configured.iter().any(|s| s == "offline_access") && !offered("offline_access") {
        tracing::warn!(
            "the identity provider does not list offline_access in scopes_supported: not requesting it (no refresh tokens; sessions end with the first access token)"
        );
    }
    configured
        .iter()
        .filter(|s| s.as_str() != "offline_access" || offered("offline_access"))
        .cloned()
        .collect()
}

/// `text` cut to `max` characters with control characters dropped, for logging what an
/// IdP (or a URL claiming to come from one) said.
pub fn printable(text: &str, max: usize) -> String {
    text.chars().filter(|c| !c.is_control()).take(max).collect()
}

/// The OIDC client once discovery has succeeded; empty until then.
pub struct Oidc {
    cell: OnceCell<Arc<OidcClient>>,
}

impl Oidc {
    pub fn new() -> Arc<Self> {
        Arc::new(Oidc {
            cell: OnceCell::new(),
        })
    }

    pub fn get(&self) -> Option<&Arc<OidcClient>> {
        self.cell.get()
    }

    /// Retries discovery with exponential backoff (0.5 s doubling up to
    /// `oidc.discovery_retry_max`) until it succeeds.
    pub fn spawn_discovery(self: &Arc<Self>, cfg: OidcConfig, http: IdpHttp, redirect_uri: Url) {
        let me = self.clone();
        tokio::spawn(async move {
            let mut delay = Duration::from_millis(500);
            loop {
                match OidcClient::discover(&cfg, http.clone(), &redirect_uri).await {
                    Ok(client) => {
                        tracing::info!(issuer = %cfg.issuer, "OIDC discovery loaded");
                        let _ = me.cell.set(Arc::new(client));
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(issuer = %cfg.issuer, error = %e, retry_in = ?delay, "OIDC discovery failed");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(cfg.discovery_retry_max);
                    }
                }
            }
        });
    }
}
