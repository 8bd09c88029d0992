//! The Authorization Code Flow with PKCE (RFC 7636) as the gateway runs it for the user.
//! `begin_login` makes a `PendingLogin` (sealed into a cookie by the caller) and the IdP
//! URL; `PendingLogin::complete` consumes it, so one login can be completed only once.

use oauth2::TokenResponse as _;
use oauth2::{
    AuthorizationCode, CsrfToken, PkceCodeChallenge, PkceCodeVerifier, RequestTokenError,
};
use serde::{Deserialize, Serialize};
use url::Url;

use super::id_token::{self, Expectations, IdClaims};
use super::OidcClient;
use crate::errors::{Error, Kind};
use crate::secret::Secret;
use crate::session::model::{now, UnixTime};

/// A login in progress. Not `Clone`: `complete` takes it by value.
#[derive(Serialize, Deserialize)]
pub struct PendingLogin {
    pub state: String,
    verifier: String,
    nonce: String,
    /// Validated same-origin path to return to.
    pub return_to: String,
    pub started_at: UnixTime,
}

impl std::fmt::Debug for PendingLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingLogin")
            .field("return_to", &self.return_to)
            .finish_non_exhaustive()
    }
}

/// Everything the token endpoint gave us, validated.
pub struct TokenSet {
    pub claims: IdClaims,
    pub access_token: Secret,
    pub access_expires_at: Option<UnixTime>,
    pub refresh_token: Option<Secret>,
    pub id_token: Secret,
}

/// 32 random bytes, base64url: 256 bits, well over RFC 6749 §10.10's 128.
fn random_token() -> String {
    CsrfToken::new_random_len(32).into_secret()
}

impl OidcClient {
    /// A fresh login: PKCE S256 verifier (43 chars from a CSPRNG, RFC 7636 §4.1), `state`
    /// and `nonce`, and the authorization URL to send the browser to.
    pub fn begin_login(&self, return_to: String) -> (PendingLogin, Url) {
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256_len(32);
        let nonce = random_token();
        let mut request = self
            .oauth
            .authorize_url(random_state)
            .add_scopes(self.scopes.iter().cloned())
            .set_pkce_challenge(challenge)
            .add_extra_param("nonce", nonce.clone());
        for (name, value) in &self.extra_authorize_params {
            request = request.add_extra_param(name.as_str(), value.as_str());
        }
        let (url, state) = request.url();
        let pending = PendingLogin {
            state: state.into_secret(),
            verifier: verifier.into_secret(),
            nonce,
            return_to,
            started_at: now(),
        };
        (pending, url)
    }

    /// Whether the IdP promises `iss` in authorization responses (RFC 9207 §3).
    pub fn requires_iss_parameter(&self) -> bool {
        self.metadata.authorization_response_iss_parameter_supported
    }

    pub fn issuer(&self) -> &str {
        &self.metadata.issuer
    }
}

fn random_state() -> CsrfToken {
    CsrfToken::new(random_token())
}

impl PendingLogin {
    /// Exchanges the code with this login's verifier, then validates the ID token against
    /// this login's nonce (OIDC Core §3.1.3.7).
    pub async fn complete(self, code: String, client: &OidcClient) -> Result<TokenSet, Error> {
        let resp = client
            .oauth
            .exchange_code(AuthorizationCode::new(code))
            .set_pkce_verifier(PkceCodeVerifier::new(self.verifier))
            .request_async(&client.http)
            .await
            .map_err(|e| match e {
                RequestTokenError::ServerResponse(r) => Error::with_source(
                    Kind::BadRequest(
                        "the identity provider rejected the login; please sign in again",
                    ),
                    format!("token endpoint error: {}", r.error()),
                ),
                other => Error::with_source(
                    Kind::Idp("the identity provider's token endpoint failed"),
                    other.to_string(),
                ),
            })?;
        let id_token = resp.extra_fields().id_token.clone().ok_or_else(|| {
            Error::with_source(
                Kind::Idp("the identity provider sent no ID token"),
                "token response without id_token (is the openid scope granted?)",
            )
        })?;
        let claims = id_token::validate(
            &id_token,
            &client.jwks,
            &Expectations {
                issuer: client.issuer(),
                client_id: &client.client_id,
                algorithms: &client.algorithms,
                nonce: Some(&self.nonce),
                groups_claim: &client.groups_claim,
                policy_claims: &client.policy_claims,
            },
        )
        .await?;
        Ok(TokenSet {
            claims,
            access_token: Secret::new(resp.access_token().secret().clone()),
            access_expires_at: resp.expires_in().map(|d| now() + d.as_secs()),
            refresh_token: resp
                .refresh_token()
                .map(|t| Secret::new(t.secret().clone())),
            id_token: Secret::new(id_token),
        })
    }
}
