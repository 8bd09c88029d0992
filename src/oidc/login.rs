//! The Authorization Code Flow with PKCE (RFC 7636) as the gateway runs it for the user.
//! `begin_login` makes a `PendingLogin` (sealed into a cookie by the caller) and the IdP
//! URL; `PendingLogin::complete` consumes it, so one login can be completed only once.

use oauth2::TokenResponse as _;
use oauth2::{AuthorizationCode, CsrfToken, PkceCodeChallenge, PkceCodeVerifier};
use serde::{Deserialize, Serialize};
use url::Url;

use super::claims::Profile;
use super::http::IdpCall;
use super::id_token::{self, Expectations};
use super::token_error::{classify, TokenFailure};
use super::OidcClient;
use crate::clock::{now, UnixTime};
use crate::errors::{Error, Kind};
use crate::secret::Secret;

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

/// Everything the token endpoint (and userinfo) gave us, validated.
pub struct TokenSet {
    pub sub: String,
    pub sid: Option<String>,
    pub profile: Profile,
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
    /// Exchanges the code with this login's verifier, validates the ID token against this
    /// login's nonce (OIDC Core §3.1.3.7), then completes the identity from userinfo when
    /// `oidc.userinfo` asks for it. Any failure fails the login: never a session with a
    /// partial identity.
    pub async fn complete(self, code: String, client: &OidcClient) -> Result<TokenSet, Error> {
        let mut request = client
            .oauth
            .exchange_code(AuthorizationCode::new(code))
            .set_pkce_verifier(PkceCodeVerifier::new(self.verifier));
        for (name, value) in client.auth_params()? {
            request = request.add_extra_param(name, value);
        }
        let resp = request
            .request_async(&client.http.token_endpoint(IdpCall::Token))
            .await
            .map_err(|e| match classify(e) {
                TokenFailure::ClientRefused(why) => {
                    Error::with_source(Kind::Idp(CLIENT_REFUSED), why)
                }
                TokenFailure::Unreachable(why) => Error::with_source(
                    Kind::Idp("the identity provider's token endpoint failed"),
                    why,
                ),
                TokenFailure::InvalidGrant(why) | TokenFailure::Refused(why) => Error::with_source(
                    Kind::BadRequest(
                        "the identity provider rejected the login; please sign in again",
                    ),
                    why,
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
            },
        )
        .await?;
        let access_token = Secret::new(resp.access_token().secret().clone());
        let mut profile = Profile::from_claims(&claims.other, client.wanted());
        if client.wants_userinfo(client.wanted().missing_from(&claims.other), false) {
            let userinfo = client.userinfo(&access_token, &claims.sub).await?;
            profile.overlay(&userinfo, client.wanted());
        }
        Ok(TokenSet {
            sub: claims.sub,
            sid: claims.sid,
            profile,
            access_token,
            access_expires_at: resp.expires_in().map(|d| now() + d.as_secs()),
            refresh_token: resp
                .refresh_token()
                .map(|t| Secret::new(t.secret().clone())),
            id_token: Secret::new(id_token),
        })
    }
}

/// The page text when the IdP refuses the gateway's own client authentication: the user
/// can do nothing about it, the operator needs to know where to look.
pub const CLIENT_REFUSED: &str = "the identity provider refused this gateway's own client credentials (invalid_client): the gateway's operator must check oidc.client_id and the client secret or key";
