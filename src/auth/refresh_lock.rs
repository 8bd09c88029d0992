//! Refresh single flight across the fleet: the in-process single flight (`refresh.rs`)
//! lets one request per process through; this lets one process through per session. The
//! winner takes the session's lock in the store (`SET NX PX` with a random token on
//! Redis), renews it every third of its time while the IdP call and the store write run,
//! and releases it by compare-and-delete. A replica that does not get the lock waits for
//! the winner's result and reads the new tokens from the store instead of calling the
//! IdP: the IdP rotates refresh tokens and revokes the grant when an old one comes back.
//! With the memory store the lock is always free and this costs one store read.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::session::crypto::SessionId;
use crate::session::{RefreshLock, Session, Sessions};

/// How long a lock lives unless renewed: a winner that dies frees it this soon.
pub const LOCK_TTL: Duration = Duration::from_secs(2);
/// How often a waiting replica looks at the store.
const POLL: Duration = Duration::from_millis(50);
/// How long a replica waits for another one's refresh before giving up for now.
const MAX_WAIT: Duration = Duration::from_secs(30);

/// Whose turn it is to call the IdP.
pub enum Turn {
    /// Ours: the lock is held.
    Ours(RefreshLock),
    /// Someone else's, and this is what came of it.
    Done(Waited),
}

/// What waiting for another replica's refresh found.
pub enum Waited {
    /// The new tokens it stored.
    Fresh(Box<Session>),
    /// The session is gone (the refresh token was refused, or it was signed out).
    Ended,
    /// Its refresh did not finish within `MAX_WAIT`.
    TimedOut,
    /// The store could not be asked.
    StoreUnavailable,
}

/// Takes the session's refresh lock, or waits for whoever holds it and returns what they
/// stored. `session` is the session as this request read it.
pub async fn take_turn(id: &SessionId, session: &Session, sessions: &Sessions) -> Turn {
    let deadline = Instant::now() + MAX_WAIT;
    loop {
        match sessions.lock_refresh(id, LOCK_TTL).await {
            Ok(Some(lock)) => {
                // Another replica may have refreshed and released the lock before we took
                // it (or our read came from a cache): then its tokens are the ones to use.
                return match changed(id, session, sessions).await {
                    Some(done) => {
                        release(lock, sessions).await;
                        Turn::Done(done)
                    }
                    None => Turn::Ours(lock),
                };
            }
            Ok(None) => {}
            Err(e) => return store_failed(&e),
        }
        if let Some(done) = changed(id, session, sessions).await {
            return Turn::Done(done);
        }
        if Instant::now() >= deadline {
            tracing::warn!("another replica's refresh of this session did not finish in time");
            return Turn::Done(Waited::TimedOut);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// What the store shows when it differs from `session`: the winner's new tokens, or the
/// end of the session. `None` while unchanged (or unreadable: the next poll retries).
async fn changed(id: &SessionId, session: &Session, sessions: &Sessions) -> Option<Waited> {
    match sessions.load_uncached(id).await {
        Ok(None) => Some(Waited::Ended),
        Ok(Some(stored)) if stored.access_token != session.access_token => {
            Some(Waited::Fresh(Box::new(stored)))
        }
        Ok(Some(_)) => None,
        Err(e) => {
            tracing::debug!(error = %e, "reading the session while waiting for a refresh failed");
            None
        }
    }
}

fn store_failed(e: &crate::session::store::StoreError) -> Turn {
    tracing::warn!(error = %e, "the refresh lock could not be taken; not refreshing now");
    Turn::Done(Waited::StoreUnavailable)
}

/// Runs `work` while holding `lock`, renewing it, then releases it.
pub async fn holding<T>(
    lock: RefreshLock,
    sessions: &Sessions,
    work: impl Future<Output = T>,
) -> T {
    let renew = async {
        let mut tick = tokio::time::interval(LOCK_TTL / 3);
        tick.tick().await;
        loop {
            tick.tick().await;
            match sessions.renew_refresh(&lock, LOCK_TTL).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!("the refresh lock expired while the refresh ran");
                }
                Err(e) => tracing::warn!(error = %e, "renewing the refresh lock failed"),
            }
        }
    };
    let out = tokio::select! {
        out = work => out,
        never = renew => never,
    };
    release(lock, sessions).await;
    out
}

async fn release(lock: RefreshLock, sessions: &Sessions) {
    if let Err(e) = sessions.unlock_refresh(lock).await {
        // It expires on its own within LOCK_TTL.
        tracing::warn!(error = %e, "releasing the refresh lock failed");
    }
}
