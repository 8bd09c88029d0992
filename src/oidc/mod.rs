//! The OpenID Connect relying party: discovery, JWKS, the PKCE login, token validation.
//! Loaded in the background at start (with retry); until then `/readyz` says 503 and
//! requests that need a login get 503 too.

pub mod access_token;
pub mod discovery;
pub mod http;
pub mod id_token;
pub mod jwks;
pub mod login;
pub mod logout;
pub mod refresh;

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

use crate::config::{OidcConfig, TokenAuthMethod};
use crate::errors::{Error, Kind};
use crate::secret::Secret;
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
    /// For requests built without the `oauth2` crate (revocation).
    client_secret: Option<Secret>,
    auth_in_body: bool,
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
        let mut auth_in_body = false;
        if let Some(secret) = &cfg.client_secret {
            oauth = oauth.set_client_secret(ClientSecret::new(secret.expose().to_string()));
            // RFC 8414 §2: the default is client_secret_basic; use post only if basic is
            // absent, unless the operator chose.
            let methods = metadata.token_endpoint_auth_methods_supported.as_deref();
            let basic = methods.is_none_or(|m| m.iter().any(|x| x == "client_secret_basic"));
            let post = methods.is_some_and(|m| m.iter().any(|x| x == "client_secret_post"));
            let use_post = match cfg.token_endpoint_auth_method {
                Some(TokenAuthMethod::ClientSecretPost) => true,
                Some(TokenAuthMethod::ClientSecretBasic) => false,
                None => !basic && post,
            };
            auth_in_body = use_post;
            oauth = oauth.set_auth_type(if use_post {
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
        Ok(OidcClient {
            metadata,
            client_id: cfg.client_id.clone(),
            oauth,
            http,
            jwks,
            algorithms,
            scopes: cfg.scopes.iter().cloned().map(Scope::new).collect(),
            groups_claim: cfg.groups_claim.clone(),
            api_audience: cfg.api_audience.clone(),
            policy_claims: cfg.policy_claims.clone(),
            extra_authorize_params: cfg
                .extra_authorize_params
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            client_secret: cfg.client_secret.clone(),
            auth_in_body,
        })
    }
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
