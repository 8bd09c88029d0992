//! The authentication service: who is asking (a session, refreshed when its access token
//! is about to expire), logging in, signing out, and the IdP's back-channel logouts. The
//! gateway and the `/oauth2/*` handlers use it through its methods; a second identity
//! provider later is a second instance of it, chosen per route.

pub mod login;
pub mod logout;
pub mod refresh;
pub mod refresh_lock;

use std::sync::Arc;
use std::time::Duration;

use http::header::HeaderMap;

use crate::clock::now;
use crate::config::{Config, ForwardAuthConfig, PolicyConfig, SessionConfig, StoreConfig};
use crate::errors::{Error, Kind};
use crate::http_client::HttpClient;
use crate::oidc::{http::IdpHttp, Oidc};
use crate::redirect::RedirectPolicy;
use crate::session::crypto::Keyring;
use crate::session::login_cookie::LoginCookies;
use crate::session::memory::MemoryStore;
use crate::session::redis::RedisStore;
use crate::session::store::SessionStore;
use crate::session::{LoadedSession, OpenedSession, Sessions};
use refresh::{Refreshed, Refresher};

/// Everything login needs; absent when no `[oidc]` is configured (public routes only).
pub struct Auth {
    oidc: Arc<Oidc>,
    sessions: Sessions,
    login_cookies: LoginCookies,
    login_timeout: Duration,
    refresh_before: Duration,
    refresher: Refresher,
    sign_out_requires_post: bool,
    /// `server.public_url` without a trailing slash, for absolute return URLs.
    public_origin: String,
    /// Where `rd` may point.
    redirects: RedirectPolicy,
    /// `[policy]`: the rules for forward-auth requests that match no route.
    global_policy: PolicyConfig,
    forward_auth: ForwardAuthConfig,
}

impl Auth {
    /// The service for `config`, or `None` without `[oidc]` and `[session]` (public routes
    /// only). Starts OIDC discovery in the background.
    pub fn new(config: &Config, client: &HttpClient) -> Option<Auth> {
        let server = &config.server;
        match (&config.oidc, &config.session) {
            (Some(oidc_cfg), Some(session_cfg)) => {
                let keyring = Arc::new(Keyring::new(&session_cfg.secrets));
                let store = open_store(session_cfg, &server.upstream_ca);
                let oidc = Oidc::new();
                let redirect_uri = server
                    .public_url
                    .join("/oauth2/callback")
                    .unwrap_or_else(|_| server.public_url.clone());
                oidc.spawn_discovery(oidc_cfg.clone(), IdpHttp::new(client.clone()), redirect_uri);
                Some(Auth {
                    oidc,
                    login_cookies: LoginCookies::new(
                        &keyring,
                        session_cfg.cookie_secure,
                        session_cfg.login_timeout,
                    ),
                    sessions: Sessions::new(session_cfg, keyring, store),
                    login_timeout: session_cfg.login_timeout,
                    refresh_before: session_cfg.refresh_before,
                    refresher: Refresher::new(),
                    sign_out_requires_post: session_cfg.sign_out_requires_post,
                    public_origin: server.public_url.as_str().trim_end_matches('/').to_string(),
                    redirects: RedirectPolicy::new(&server.allowed_redirect_hosts),
                    global_policy: config.policy.clone(),
                    forward_auth: config.forward_auth.clone(),
                })
            }
            _ => None,
        }
    }

    /// Replaces the session secrets (SIGHUP): the first seals, all open.
    pub fn reload_secrets(&self, secrets: &[crate::secret::Secret]) {
        let keyring = Arc::new(Keyring::new(secrets));
        self.login_cookies.set_keyring(&keyring);
        self.sessions.set_keyring(keyring);
    }

    /// Who is asking: the request's session, refreshed if its access token is about to
    /// expire (single-flight per session). The one identity step of every request that
    /// needs one: proxied requests, forward-auth, userinfo and sign-out.
    pub async fn identify(&self, headers: &HeaderMap) -> Result<Caller, Error> {
        let store_error = |e| Error::with_source(Kind::StoreUnavailable, e);
        let lookup = self.sessions.load(headers).await.map_err(store_error)?;
        let loaded = self.sessions.settle(lookup).await.map_err(store_error)?;
        Ok(match loaded {
            Some(mut l) if Refresher::is_stale(&l.session, self.refresh_before) => {
                match self.refresh(&l).await? {
                    Some(fresh) => {
                        l.session = fresh;
                        Caller::signed_in(l)
                    }
                    None => Caller {
                        session: None,
                        ended: true,
                    },
                }
            }
            Some(l) => Caller::signed_in(l),
            None => Caller {
                session: None,
                ended: false,
            },
        })
    }

    /// The session after a refresh: `Some` with new tokens, or the old ones while the IdP
    /// is unreachable but the access token still works; `None` when the session has ended.
    async fn refresh(&self, loaded: &LoadedSession) -> Result<Option<Arc<OpenedSession>>, Error> {
        let expired = loaded
            .session
            .access_expires_at
            .is_some_and(|at| at <= now());
        let Some(client) = self.oidc.get() else {
            return if expired {
                Err(Error::new(Kind::NotReady))
            } else {
                Ok(Some(loaded.session.clone()))
            };
        };
        match self
            .refresher
            .refresh(&loaded.id, &loaded.session, client, &self.sessions)
            .await
        {
            Refreshed::Fresh(session) => Ok(Some(Arc::new(OpenedSession::new(*session)))),
            Refreshed::Ended => Ok(None),
            Refreshed::Unavailable(_) if !expired => Ok(Some(loaded.session.clone())),
            Refreshed::Unavailable(why) => Err(Error::new(Kind::RefreshUnavailable(why.message()))),
        }
    }

    /// `[policy]`: the rules for forward-auth requests that match no route.
    pub fn global_policy(&self) -> &PolicyConfig {
        &self.global_policy
    }

    /// `[forward_auth]`: which token headers the forward-auth answer carries.
    pub fn forward_auth(&self) -> &ForwardAuthConfig {
        &self.forward_auth
    }

    /// Ready when OIDC discovery has loaded and the session store answers.
    pub async fn is_ready(&self) -> bool {
        self.oidc.get().is_some() && self.sessions.store().ping().await.is_ok()
    }

    /// Sessions held, where the store knows, for the metrics.
    pub async fn session_count(&self) -> Option<u64> {
        self.sessions.store().entry_count().await
    }

    /// The OIDC client once discovery has loaded (API bearer tokens are checked with it).
    pub fn oidc(&self) -> Option<&Arc<crate::oidc::OidcClient>> {
        self.oidc.get()
    }

    /// Whether a request cookie is one of the gateway's own (never sent upstream).
    pub fn is_gateway_cookie(&self, name: &str) -> bool {
        name == self.sessions.cookie_name() || self.login_cookies.is_login_cookie(name)
    }
}

// A seam for the session-scale benchmark (examples/session_scale.rs), kept apart.
impl Auth {
    /// The sessions this service reads and writes: lets a benchmark fill the gateway's own
    /// store through `Sessions::create` (sealed exactly as a login does) before serving.
    pub fn sessions(&self) -> &Sessions {
        &self.sessions
    }
}

/// Sessions the Redis store's in-process L1 holds at most.
const L1_MAX: u64 = 100_000;

/// The store `session.store` names: in this process, or Redis shared by the replicas
/// (connected in the background: start-up never waits for it). Public for the Redis
/// benchmark's fill (`examples/redis_fill.rs`), which must store exactly as the gateway does.
pub fn open_store(
    cfg: &SessionConfig,
    ca: &[rustls_pki_types::CertificateDer<'static>],
) -> Arc<dyn SessionStore> {
    match &cfg.store {
        StoreConfig::Memory => Arc::new(MemoryStore::new(cfg.max_sessions)),
        StoreConfig::Redis(redis) => Arc::new(RedisStore::open(
            redis,
            cfg.max_sessions.min(L1_MAX),
            cfg.absolute_timeout,
            ca,
        )),
    }
}

/// The session behind a request, after any refresh, and what that means for the
/// response: a refresh that found the session over clears its cookie.
pub struct Caller {
    pub session: Option<LoadedSession>,
    /// A refresh found the session over.
    ended: bool,
}

impl Caller {
    fn signed_in(session: LoadedSession) -> Self {
        Caller {
            session: Some(session),
            ended: false,
        }
    }

    /// `resp`, with the session cookie cleared when the session ended on this request.
    pub fn finish<B>(&self, auth: &Auth, mut resp: http::Response<B>) -> http::Response<B> {
        if self.ended {
            resp.headers_mut()
                .append(http::header::SET_COOKIE, auth.sessions.clear_cookie());
        }
        resp
    }
}
