//! Logging in, for `/oauth2/start` and `/oauth2/callback` (the handlers only speak HTTP).
//! The login in progress lives in a cookie sealed to its `state`; completing it checks
//! that `state` (issued form, constant time, once), the IdP's `error`, RFC 9207 `iss`,
//! exchanges the code with the PKCE verifier, and creates a session under a fresh id.

use http::header::{HeaderMap, HeaderValue};

use super::Auth;
use crate::clock::{now, now_ms};
use crate::errors::{Error, Kind};
use crate::oidc::login::{PendingLogin, TokenSet};
use crate::oidc::{printable, OidcClient};
use crate::secret::constant_time_eq;
use crate::session::login_cookie::is_issued_state;
use crate::session::{crypto::SessionId, find_cookie, Session};

/// What the IdP sent back to `/oauth2/callback` (each parameter at most once).
pub struct CallbackParams<'a> {
    pub state: Option<&'a str>,
    pub code: Option<&'a str>,
    pub iss: Option<&'a str>,
    pub error: Option<&'a str>,
    pub error_description: Option<&'a str>,
}

/// How a callback ended, when it was a genuine answer to one of our logins.
pub enum Completion {
    /// Signed in: go back to `return_to` with the new session cookie.
    SignedIn {
        return_to: String,
        set_cookie: HeaderValue,
    },
    /// The IdP said no (`error=`); `code` is its error code, made safe to show.
    Refused { code: String },
}

impl Auth {
    /// A fresh login returning to `rd` (validated): the IdP URL to send the browser to and
    /// the login cookie to set.
    pub fn start_login(&self, rd: Option<&str>) -> Result<(String, HeaderValue), Error> {
        let oidc = self.oidc.get().ok_or_else(|| Error::new(Kind::NotReady))?;
        let return_to = self.redirects.safe_target(rd);
        let (pending, authorize_url) = oidc.begin_login(return_to);
        let payload =
            serde_json::to_string(&pending).map_err(|e| Error::with_source(Kind::Internal, e))?;
        let set_cookie = self
            .login_cookies
            .seal(&pending.state, payload)
            .ok_or_else(|| Error::with_source(Kind::Internal, "sealing the login cookie failed"))?;
        crate::metrics::get().login("started", "ok");
        Ok((authorize_url.to_string(), set_cookie))
    }

    /// The `Set-Cookie` that removes the login cookie of `state` (only for a `state` of
    /// the form the gateway issues).
    pub fn clear_login_cookie(&self, state: &str) -> Option<HeaderValue> {
        self.login_cookies.clear(state)
    }

    /// Completes a login from the callback's parameters and the browser's cookies.
    pub async fn complete_login(
        &self,
        headers: &HeaderMap,
        params: &CallbackParams<'_>,
    ) -> Result<Completion, Error> {
        let oidc = self.oidc.get().ok_or_else(|| Error::new(Kind::NotReady))?;
        let pending = self.pending_login(headers, params.state)?;
        self.claim_state(&pending).await?;
        if let Some(error) = params.error {
            // The IdP's own words, logged whatever happens next (even when the response
            // is refused below): the operator needs them to fix e.g. a scope.
            tracing::warn!(
                event = "authorization_error",
                idp_error = %printable(error, 64),
                idp_error_description = %printable(params.error_description.unwrap_or(""), 300),
                "the identity provider answered the authorization request with an error"
            );
        }
        check_issuer(oidc, params.iss)?;
        if let Some(error) = params.error {
            let code = error
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                .take(64)
                .collect();
            crate::metrics::get().login("failed", "idp_error_response");
            return Ok(Completion::Refused { code });
        }
        let code = params
            .code
            .ok_or_else(|| Error::new(Kind::BadRequest("the login response has no code")))?
            .to_string();
        let return_to = pending.return_to.clone();
        let tokens = pending.complete(code, oidc).await?;
        let set_cookie = self.create_session(headers, tokens).await?;
        Ok(Completion::SignedIn {
            return_to,
            set_cookie,
        })
    }

    /// The login in progress that this `state` names: issued form, a login cookie that
    /// opens, the same `state` inside (constant time), not expired, not used before.
    fn pending_login(
        &self,
        headers: &HeaderMap,
        state: Option<&str>,
    ) -> Result<PendingLogin, Error> {
        let state =
            state.ok_or_else(|| Error::new(Kind::BadRequest("the login response has no state")))?;
        if !is_issued_state(state) {
            return Err(Error::new(Kind::BadRequest(
                "the login response's state is not one this gateway issues",
            )));
        }
        let unknown = || {
            Error::new(Kind::BadRequest(
                "unknown, expired or already used login; please sign in again",
            ))
        };
        let payload = self
            .login_cookies
            .open(headers, state)
            .ok_or_else(unknown)?;
        let pending: PendingLogin = serde_json::from_str(&payload).map_err(|_| unknown())?;
        if !constant_time_eq(pending.state.as_bytes(), state.as_bytes())
            || now().saturating_sub(pending.started_at) > self.login_timeout.as_secs()
        {
            return Err(unknown());
        }
        Ok(pending)
    }

    /// One completion per state, even with a copy of the cookie, on any replica.
    async fn claim_state(&self, pending: &PendingLogin) -> Result<(), Error> {
        let fresh = self
            .sessions
            .claim_state(&pending.state)
            .await
            .map_err(|e| Error::with_source(Kind::StoreUnavailable, e))?;
        if !fresh {
            return Err(Error::new(Kind::BadRequest(
                "unknown, expired or already used login; please sign in again",
            )));
        }
        Ok(())
    }

    /// Ends whatever session the browser had (no fixation) and stores the new one under a
    /// fresh id; returns its `Set-Cookie`.
    async fn create_session(
        &self,
        headers: &HeaderMap,
        tokens: TokenSet,
    ) -> Result<HeaderValue, Error> {
        let internal = |e| Error::with_source(Kind::StoreUnavailable, e);
        let old =
            find_cookie(headers, self.sessions.cookie_name()).and_then(SessionId::from_cookie);
        if let Some(old) = old {
            self.sessions.delete(&old).await.map_err(internal)?;
        }
        let now = now();
        let session = Session {
            sub: tokens.sub,
            email: tokens.profile.email,
            name: tokens.profile.name,
            groups: tokens.profile.groups,
            claims: tokens.profile.claims,
            sid: tokens.sid,
            access_token: tokens.access_token,
            access_expires_at: tokens.access_expires_at,
            refresh_token: tokens.refresh_token,
            id_token: Some(tokens.id_token),
            created_at: now,
            last_seen: now,
            created_ms: now_ms(),
        };
        let set_cookie = self.sessions.create(&session).await.map_err(internal)?;
        crate::metrics::get().login("completed", "ok");
        tracing::info!(event = "login", sub = %session.sub, "login completed");
        Ok(set_cookie)
    }
}

/// RFC 9207 §2.4: when the IdP promises `iss`, it must be there and be this issuer, on
/// error responses too (a mix-up attack answers from another IdP).
fn check_issuer(oidc: &OidcClient, iss: Option<&str>) -> Result<(), Error> {
    match iss {
        Some(iss) if iss == oidc.issuer() => Ok(()),
        Some(_) => Err(Error::new(Kind::BadRequest(
            "the login response came from another issuer",
        ))),
        None if oidc.requires_iss_parameter() => Err(Error::new(Kind::BadRequest(
            "the login response names no issuer",
        ))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// An `Auth` over the demo's in-process provider, discovery loaded.
    async fn auth_with_idp() -> (Auth, String) {
        crate::install_crypto_provider();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        let public_url = "http://127.0.0.1:1";
        let idp = crate::demo::idp::DevIdp::new(
            issuer.clone(),
            "gw".into(),
            "gw-secret".into(),
            format!("{public_url}/oauth2/callback"),
        )
        .unwrap();
        crate::server::spawn_plain(listener, move |req| idp.clone().handle(req));
        let toml = format!(
            "[server]\npublic_url = \"{public_url}\"\n\
             [oidc]\nissuer = \"{issuer}\"\nclient_id = \"gw\"\nclient_secret = \"gw-secret\"\n\
             [session]\nsecret = \"0123456789abcdef0123456789abcdef\"\ncookie_secure = false\n"
        );
        let config = crate::config::Config::from_toml_with_env(&toml, &Default::default()).unwrap();
        let client = crate::http_client::HttpClient::new(
            Duration::from_secs(2),
            Duration::from_secs(5),
            &[],
        );
        let auth = Auth::new(&config, &client).unwrap();
        for _ in 0..100 {
            if auth.oidc().is_some() {
                return (auth, issuer);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("discovery did not load");
    }

    /// Signs `user` in at the provider for this authorization URL; the callback's query.
    async fn sign_in_at_idp(authorize_url: &str, user: &str) -> Vec<(String, String)> {
        let url = url::Url::parse(authorize_url).unwrap();
        let mut form: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        form.push(("login".into(), user.into()));
        let submit = format!("{}://{}/authorize", url.scheme(), url.authority());
        let resp = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
            .post(submit)
            .form(&form)
            .send()
            .await
            .unwrap();
        let location = resp.headers()["location"].to_str().unwrap();
        url::Url::parse(location)
            .unwrap()
            .query_pairs()
            .into_owned()
            .collect()
    }

    fn cookie_header(set_cookie: &HeaderValue) -> HeaderMap {
        crate::session::test_cookie_request(set_cookie)
    }

    fn get<'p>(params: &'p [(String, String)], name: &str) -> Option<&'p str> {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn callback<'p>(params: &'p [(String, String)]) -> CallbackParams<'p> {
        CallbackParams {
            state: get(params, "state"),
            code: get(params, "code"),
            iss: get(params, "iss"),
            error: get(params, "error"),
            error_description: get(params, "error_description"),
        }
    }

    #[tokio::test]
    async fn a_login_completes_once_and_returns_where_it_started() {
        let (auth, issuer) = auth_with_idp().await;
        let (authorize_url, login_cookie) = auth.start_login(Some("/after?x=1")).unwrap();
        assert!(authorize_url.starts_with(&issuer));
        assert!(authorize_url.contains("code_challenge_method=S256"));
        let params = sign_in_at_idp(&authorize_url, "alice").await;
        let headers = cookie_header(&login_cookie);

        let Completion::SignedIn {
            return_to,
            set_cookie,
        } = auth
            .complete_login(&headers, &callback(&params))
            .await
            .unwrap()
        else {
            panic!("not signed in");
        };
        assert_eq!(return_to, "/after?x=1");
        let session = auth
            .identify(&cookie_header(&set_cookie))
            .await
            .unwrap()
            .session
            .unwrap();
        assert_eq!(session.session.sub, "alice");
        assert_eq!(session.session.email.as_deref(), Some("alice@example.com"));

        // The same state again, even with the cookie: refused before the IdP is asked.
        let again = auth.complete_login(&headers, &callback(&params)).await;
        assert!(matches!(again, Err(e) if matches!(e.kind, Kind::BadRequest(_))));
    }

    #[tokio::test]
    async fn a_callback_from_another_issuer_or_with_a_crafted_state_is_refused() {
        let (auth, _) = auth_with_idp().await;
        let (authorize_url, login_cookie) = auth.start_login(None).unwrap();
        let mut params = sign_in_at_idp(&authorize_url, "alice").await;
        let headers = cookie_header(&login_cookie);
        for (k, v) in params.iter_mut() {
            if k == "iss" {
                *v = "http://127.0.0.1:9/evil".into();
            }
        }
        let mixed_up = auth.complete_login(&headers, &callback(&params)).await;
        assert!(
            matches!(mixed_up, Err(e) if e.kind == Kind::BadRequest("the login response came from another issuer"))
        );

        let crafted = [("state".to_string(), "a;Domain=evil".to_string())];
        let refused = auth.complete_login(&headers, &callback(&crafted)).await;
        assert!(matches!(refused, Err(e) if matches!(e.kind, Kind::BadRequest(_))));
        assert!(auth.clear_login_cookie("a;Domain=evil").is_none());
    }
}
