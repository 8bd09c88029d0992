//! Refresh, step 4 of the request path: when the access token is about to expire, trade the
//! refresh token for new tokens before forwarding. Single-flight: concurrent requests on one
//! session (all holding the same refresh token) share one call to the IdP and its outcome.
//! That matters because IdPs rotate refresh tokens and revoke the whole grant when an old
//! one is replayed (RFC 9700 §4.14.2), so a second call is not waste but a logout.
//!
//! Order of work, so that a refresh the IdP completed is never lost (RFC 6749 §6: the
//! client MUST replace the old refresh token with the new one):
//! 1. the token call; only `invalid_grant` ends the session;
//! 2. the new tokens are written to the store at once (bounded retry); if the store still
//!    refuses, the outcome stays in memory, keyed by the old refresh token, until a later
//!    request manages to write it, so the rotated-out token is never sent again;
//! 3. only then the identity: the new ID token (OIDC Core §12.2) and, with
//!    `oidc.userinfo = "always"`, userinfo. If they fail, the new tokens stay, the claims
//!    stay as they were, and a warning is logged.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lc_rs::digest;
use moka::future::Cache;

use super::refresh_lock::{self, Turn, Waited};
use crate::clock::now;
use crate::oidc::claims::Profile;
use crate::oidc::refresh::IdentityUpdate;
use crate::oidc::token_error::TokenFailure;
use crate::oidc::OidcClient;
use crate::session::crypto::SessionId;
use crate::session::{Session, Sessions};

/// How long a successful outcome serves requests that still carry the old session.
const FRESH_TTL: Duration = Duration::from_secs(60);
/// A refresh whose tokens the store has not accepted yet is kept this long (or until a
/// later write succeeds): losing it would replay a rotated-out refresh token.
const UNSAVED_TTL: Duration = Duration::from_secs(24 * 3600);
/// A failed refresh is retried after this: seconds, not a minute of 503s.
const FAILURE_TTL: Duration = Duration::from_secs(2);
/// Store writes of new tokens: attempts and the pause before each retry.
const SAVE_RETRIES: [Duration; 2] = [Duration::from_millis(50), Duration::from_millis(250)];
/// Outcomes followed in one request when a cached one is itself already expired.
const MAX_HOPS: usize = 3;

/// How a refresh ended.
#[derive(Debug, Clone)]
pub enum Refreshed {
    /// New tokens (in the store, or held until the store takes them).
    Fresh(Box<Session>),
    /// The IdP refused the refresh token (`invalid_grant`): the session is over.
    Ended,
    /// The refresh failed for now; the session may still be good.
    Unavailable(RefreshFailure),
}

/// Why a refresh failed, for the 503 the user sees when the old token has run out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshFailure {
    IdpUnreachable,
    /// The IdP answered with an OAuth error other than `invalid_grant`.
    IdpRefused,
    /// `invalid_client`: the gateway's own credentials.
    ClientRefused,
    /// The session store did not answer, so the refresh could not be coordinated.
    StoreUnavailable,
}

impl RefreshFailure {
    pub fn message(self) -> &'static str {
        match self {
            RefreshFailure::IdpUnreachable => "your session needs renewing but the identity provider cannot be reached; try again shortly",
            RefreshFailure::IdpRefused => "your session needs renewing but the identity provider refused the request; try again shortly or sign in again",
            RefreshFailure::ClientRefused => "your session needs renewing but the identity provider refused this gateway's own client credentials (invalid_client); the gateway's operator must check them",
            RefreshFailure::StoreUnavailable => "your session needs renewing but the session store cannot be reached; try again shortly",
        }
    }
}

/// One refresh's outcome as cached: `unsaved` while its new tokens are only in memory.
struct Outcome {
    refreshed: Refreshed,
    unsaved: AtomicBool,
}

struct OutcomeExpiry;

impl moka::Expiry<[u8; 32], Arc<Outcome>> for OutcomeExpiry {
    fn expire_after_create(
        &self,
        _key: &[u8; 32],
        outcome: &Arc<Outcome>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(match outcome.refreshed {
            Refreshed::Fresh(_) if outcome.unsaved.load(Ordering::Acquire) => UNSAVED_TTL,
            Refreshed::Fresh(_) | Refreshed::Ended => FRESH_TTL,
            Refreshed::Unavailable(_) => FAILURE_TTL,
        })
    }
}

/// Outcomes of recent refreshes, keyed by a hash of the refresh token they used: requests
/// that arrive while one runs wait for it; ones that come shortly after with the same stale
/// session read its result.
pub struct Refresher {
    outcomes: Cache<[u8; 32], Arc<Outcome>>,
}

impl Default for Refresher {
    fn default() -> Self {
        Self::new()
    }
}

impl Refresher {
    pub fn new() -> Self {
        Refresher {
            outcomes: Cache::builder()
                .max_capacity(100_000)
                .expire_after(OutcomeExpiry)
                .build(),
        }
    }

    /// Whether the session's access token expires within `before` (and can be refreshed).
    pub fn is_stale(session: &Session, before: Duration) -> bool {
        session
            .access_expires_at
            .is_some_and(|at| at <= now() + before.as_secs())
    }

    /// Refreshes the session once, however many requests ask at the same time. A cached
    /// outcome whose access token has itself expired meanwhile is refreshed in turn.
    pub async fn refresh(
        &self,
        id: &SessionId,
        session: &Session,
        client: &OidcClient,
        sessions: &Sessions,
    ) -> Refreshed {
        let mut current = self.refresh_once(id, session, client, sessions).await;
        for _ in 1..MAX_HOPS {
            let next = match &current {
                Refreshed::Fresh(s)
                    if s.access_expires_at.is_some_and(|at| at <= now())
                        && s.refresh_token.is_some() =>
                {
                    self.refresh_once(id, s, client, sessions).await
                }
                _ => break,
            };
            current = next;
        }
        current
    }

    async fn refresh_once(
        &self,
        id: &SessionId,
        session: &Session,
        client: &OidcClient,
        sessions: &Sessions,
    ) -> Refreshed {
        let Some(refresh_token) = session.refresh_token.as_ref() else {
            return Refreshed::Ended;
        };
        let key: [u8; 32] = digest::digest(&digest::SHA256, refresh_token.expose().as_bytes())
            .as_ref()
            .try_into()
            .unwrap_or([0; 32]);
        let outcome = self
            .outcomes
            .get_with(key, run(id, session, client, sessions))
            .await;
        if let Refreshed::Fresh(fresh) = &outcome.refreshed {
            // A later request retries the write the refresh itself could not make.
            if outcome.unsaved.load(Ordering::Acquire) && sessions.save(id, fresh).await.is_ok() {
                outcome.unsaved.store(false, Ordering::Release);
                tracing::info!(
                    "refreshed tokens saved to the session store after an earlier failure"
                );
            }
        }
        outcome.refreshed.clone()
    }
}

/// One refresh: this replica's turn at the IdP (fleet-wide single flight), or what the
/// replica whose turn it was stored.
async fn run(
    id: &SessionId,
    session: &Session,
    client: &OidcClient,
    sessions: &Sessions,
) -> Arc<Outcome> {
    match refresh_lock::take_turn(id, session, sessions).await {
        Turn::Ours(lock) => {
            let work = refresh_at_idp(id, session, client, sessions);
            refresh_lock::holding(lock, sessions, work).await
        }
        Turn::Done(waited) => Arc::new(Outcome {
            refreshed: match waited {
                Waited::Fresh(session) => Refreshed::Fresh(session),
                Waited::Ended => Refreshed::Ended,
                Waited::TimedOut => Refreshed::Unavailable(RefreshFailure::IdpUnreachable),
                Waited::StoreUnavailable => {
                    Refreshed::Unavailable(RefreshFailure::StoreUnavailable)
                }
            },
            unsaved: AtomicBool::new(false),
        }),
    }
}

/// One refresh at the IdP, start to end (see the module comment for the order).
async fn refresh_at_idp(
    id: &SessionId,
    session: &Session,
    client: &OidcClient,
    sessions: &Sessions,
) -> Arc<Outcome> {
    let settled = |refreshed| {
        Arc::new(Outcome {
            refreshed,
            unsaved: AtomicBool::new(false),
        })
    };
    let Some(refresh_token) = &session.refresh_token else {
        return settled(Refreshed::Ended);
    };
    let grant = match client.redeem_refresh_token(refresh_token).await {
        Ok(grant) => grant,
        Err(failure) => {
            crate::metrics::get().refresh(false);
            return settled(failed(failure, id, session, sessions).await);
        }
    };
    crate::metrics::get().refresh(true);

    // 2. The tokens first.
    let mut next = session.clone();
    next.access_token = grant.access_token;
    next.access_expires_at = grant.access_expires_at;
    if let Some(rotated) = grant.refresh_token {
        next.refresh_token = Some(rotated);
    }
    let saved = save_with_retry(sessions, id, &next).await;

    // 3. Then who the user is.
    let current = Profile {
        email: next.email.clone(),
        name: next.name.clone(),
        groups: next.groups.clone(),
        claims: next.claims.clone(),
    };
    match client
        .refreshed_identity(&next.sub, &current, &next.access_token, grant.id_token)
        .await
    {
        IdentityUpdate::Unchanged => {}
        IdentityUpdate::OtherSubject => {
            tracing::warn!(event = "refresh_failed", sub = %session.sub, "the refreshed ID token is for another subject; session ended");
            if let Err(e) = sessions.delete(id).await {
                tracing::warn!(error = %e, "deleting the ended session failed");
            }
            return settled(Refreshed::Ended);
        }
        IdentityUpdate::Updated { profile, id_token } => {
            next.email = profile.email;
            next.name = profile.name;
            next.groups = profile.groups;
            next.claims = profile.claims;
            if let Some(id_token) = id_token {
                next.id_token = Some(id_token);
            }
            // The tokens are stored already; a failure here only leaves older claims there.
            if saved && !save_with_retry(sessions, id, &next).await {
                tracing::warn!("saving the refreshed identity failed; the store keeps the new tokens with the previous claims");
            }
        }
    }
    if !saved {
        tracing::error!(event = "refresh_unsaved", sub = %session.sub, "the session store refused the refreshed tokens; holding them in memory until it accepts them");
    }
    Arc::new(Outcome {
        refreshed: Refreshed::Fresh(Box::new(next)),
        unsaved: AtomicBool::new(!saved),
    })
}

/// What a failed token call means: `invalid_grant` ends the session (and deletes it);
/// anything else leaves it for a retry in a few seconds.
async fn failed(
    failure: TokenFailure,
    id: &SessionId,
    session: &Session,
    sessions: &Sessions,
) -> Refreshed {
    match failure {
        TokenFailure::InvalidGrant(why) => {
            tracing::info!(event = "refresh_failed", sub = %session.sub, reason = %why, "refresh token rejected; session ended");
            if let Err(e) = sessions.delete(id).await {
                tracing::warn!(error = %e, "deleting the ended session failed");
            }
            Refreshed::Ended
        }
        TokenFailure::ClientRefused(why) => {
            tracing::error!(event = "refresh_failed", reason = %why, "the identity provider refused the gateway's client credentials on refresh");
            Refreshed::Unavailable(RefreshFailure::ClientRefused)
        }
        TokenFailure::Refused(why) => {
            tracing::warn!(event = "refresh_failed", reason = %why, "the identity provider refused the refresh");
            Refreshed::Unavailable(RefreshFailure::IdpRefused)
        }
        TokenFailure::Unreachable(why) => {
            tracing::warn!(event = "refresh_failed", reason = %why, "identity provider unavailable for refresh");
            Refreshed::Unavailable(RefreshFailure::IdpUnreachable)
        }
    }
}

async fn save_with_retry(sessions: &Sessions, id: &SessionId, session: &Session) -> bool {
    let mut result = sessions.save(id, session).await;
    for pause in SAVE_RETRIES {
        let Err(e) = &result else {
            return true;
        };
        tracing::warn!(error = %e, "saving the refreshed session failed; retrying");
        tokio::time::sleep(pause).await;
        result = sessions.save(id, session).await;
    }
    result.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{OidcConfig, SessionConfig, UserinfoMode};
    use crate::secret::Secret;
    use crate::session::crypto::Keyring;
    use crate::session::flaky::FlakyStore;
    use std::ops::Deref;

    struct Setup {
        idp: Arc<crate::demo::idp::DevIdp>,
        client: OidcClient,
        store: Arc<FlakyStore>,
        sessions: Sessions,
    }

    async fn setup() -> Setup {
        crate::install_crypto_provider();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        let idp = crate::demo::idp::DevIdp::new(
            issuer.clone(),
            "gw".into(),
            "gw-secret".into(),
            "http://127.0.0.1:1/oauth2/callback".into(),
        )
        .unwrap();
        let served = idp.clone();
        crate::server::spawn_plain(listener, move |req| served.clone().handle(req));
        let cfg = OidcConfig {
            issuer: url::Url::parse(&issuer).unwrap(),
            client_id: "gw".into(),
            client_secret: Some(Secret::new("gw-secret")),
            scopes: vec!["openid".into()],
            groups_claim: "groups".into(),
            api_audience: None,
            extra_authorize_params: Default::default(),
            policy_claims: vec![],
            token_endpoint_auth_method: None,
            client_key: None,
            userinfo: UserinfoMode::Auto,
            discovery_retry_max: Duration::from_secs(1),
        };
        let upstream = crate::http_client::HttpClient::new(
            Duration::from_secs(2),
            Duration::from_secs(5),
            &[],
        );
        let redirect = url::Url::parse("http://127.0.0.1:1/oauth2/callback").unwrap();
        let client =
            OidcClient::discover(&cfg, crate::oidc::http::IdpHttp::new(upstream), &redirect)
                .await
                .unwrap();
        let session_cfg = SessionConfig {
            secrets: vec![Secret::new("0123456789abcdef0123456789abcdef")],
            cookie_secure: true,
            max_sessions: 100,
            idle_timeout: Duration::from_secs(3600),
            absolute_timeout: Duration::from_secs(3600),
            login_timeout: Duration::from_secs(600),
            refresh_before: Duration::from_secs(60),
            sign_out_requires_post: false,
            store: crate::config::StoreConfig::Memory,
        };
        let store = Arc::new(FlakyStore::new());
        let sessions = Sessions::new(
            &session_cfg,
            Arc::new(Keyring::new(&session_cfg.secrets)),
            store.clone(),
        );
        Setup {
            idp,
            client,
            store,
            sessions,
        }
    }

    fn expired_session(refresh_token: String) -> Session {
        Session {
            sub: "alice".into(),
            email: Some("alice@example.com".into()),
            name: None,
            groups: vec![],
            sid: None,
            access_token: Secret::new("old-access"),
            access_expires_at: Some(now() - 1),
            refresh_token: Some(Secret::new(refresh_token)),
            id_token: None,
            created_at: now(),
            last_seen: now(),
            claims: Default::default(),
            created_ms: crate::clock::now_ms(),
        }
    }

    async fn stored(s: &Setup, set_cookie: &http::HeaderValue) -> Session {
        s.sessions
            .load_for(set_cookie)
            .await
            .expect("session in the store")
            .session
            .as_ref()
            .deref()
            .clone()
    }

    #[tokio::test]
    async fn a_failed_store_write_after_refresh_never_replays_the_rotated_token() {
        let s = setup().await;
        let rt0 = s.idp.refresh_token_for("alice");
        let cookie = s
            .sessions
            .create(&expired_session(rt0.clone()))
            .await
            .unwrap();
        let loaded = s.sessions.load_for(&cookie).await.unwrap();
        let refresher = Refresher::new();

        // The IdP rotates rt0 -> rt1, then every write fails (1 + the retries).
        s.store.failing.store(true, Ordering::SeqCst);
        let Refreshed::Fresh(first) = refresher
            .refresh(&loaded.id, &loaded.session, &s.client, &s.sessions)
            .await
        else {
            panic!("the refresh itself succeeded at the IdP");
        };
        let rt1 = first.refresh_token.as_ref().unwrap().expose().to_string();
        assert_ne!(rt1, rt0);
        assert_ne!(first.access_token.expose(), "old-access");
        assert!(s.store.refused_writes.load(Ordering::SeqCst) > SAVE_RETRIES.len());

        // The store still holds rt0. A request with it gets rt1's tokens from memory: rt0
        // (revoked by the rotation) is not sent again, so the session is not ended.
        assert_eq!(
            stored(&s, &cookie).await.refresh_token.unwrap().expose(),
            rt0
        );
        let Refreshed::Fresh(again) = refresher
            .refresh(&loaded.id, &loaded.session, &s.client, &s.sessions)
            .await
        else {
            panic!("replayed the rotated-out refresh token");
        };
        assert_eq!(again.refresh_token.as_ref().unwrap().expose(), rt1);

        // The unsaved outcome is kept long, not for the usual minute.
        let held = Arc::new(Outcome {
            refreshed: Refreshed::Fresh(again.clone()),
            unsaved: AtomicBool::new(true),
        });
        assert_eq!(
            moka::Expiry::expire_after_create(&OutcomeExpiry, &[0; 32], &held, Instant::now()),
            Some(UNSAVED_TTL)
        );

        // The store recovers: the next request writes rt1 through.
        s.store.failing.store(false, Ordering::SeqCst);
        refresher
            .refresh(&loaded.id, &loaded.session, &s.client, &s.sessions)
            .await;
        let now_stored = stored(&s, &cookie).await;
        assert_eq!(now_stored.refresh_token.unwrap().expose(), rt1);
        assert_eq!(
            now_stored.access_token.expose(),
            first.access_token.expose()
        );
    }

    #[tokio::test]
    async fn a_dead_refresh_token_ends_the_session_and_failures_are_cached_briefly() {
        let s = setup().await;
        let cookie = s
            .sessions
            .create(&expired_session("never-issued".into()))
            .await
            .unwrap();
        let loaded = s.sessions.load_for(&cookie).await.unwrap();
        let refresher = Refresher::new();
        assert!(matches!(
            refresher
                .refresh(&loaded.id, &loaded.session, &s.client, &s.sessions)
                .await,
            Refreshed::Ended
        ));
        assert!(s.sessions.load_for(&cookie).await.is_none());
        let failed = Arc::new(Outcome {
            refreshed: Refreshed::Unavailable(RefreshFailure::IdpUnreachable),
            unsaved: AtomicBool::new(false),
        });
        assert_eq!(
            moka::Expiry::expire_after_create(&OutcomeExpiry, &[0; 32], &failed, Instant::now()),
            Some(FAILURE_TTL)
        );
    }
}
