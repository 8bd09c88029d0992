//! The refresh lock on Redis: `SET <p>lock:<key> <random> NX PX <ttl>` takes it; renewal
//! and release compare the random token first (Lua), so a holder whose lock expired and
//! was taken by another replica can neither extend nor delete the new holder's lock.

use std::time::Duration;

use aws_lc_rs::rand;

use super::connect::Link;
use super::scripts;
use crate::session::crypto::hex;
use crate::session::store::{LockToken, StoreError};

pub async fn lock(link: &Link, name: &str, ttl: Duration) -> Result<Option<LockToken>, StoreError> {
    let mut random = [0u8; 16];
    rand::fill(&mut random).map_err(|_| StoreError("random generator failed".into()))?;
    let token = LockToken(hex(&random));
    let set: Option<String> = link
        .query(
            ::redis::cmd("SET")
                .arg(name)
                .arg(&token.0)
                .arg("NX")
                .arg("PX")
                .arg(millis(ttl)),
        )
        .await?;
    Ok(set.map(|_| token))
}

pub async fn renew(
    link: &Link,
    name: &str,
    token: &LockToken,
    ttl: Duration,
) -> Result<bool, StoreError> {
    let extended: i64 = link
        .invoke(scripts::RENEW.key(name).arg(&token.0).arg(millis(ttl)))
        .await?;
    Ok(extended == 1)
}

pub async fn unlock(link: &Link, name: &str, token: &LockToken) -> Result<(), StoreError> {
    let _released: i64 = link.invoke(scripts::UNLOCK.key(name).arg(&token.0)).await?;
    Ok(())
}

/// A time-to-live in whole milliseconds, at least 1 (Redis refuses 0).
pub fn millis(ttl: Duration) -> u64 {
    (ttl.as_millis() as u64).max(1)
}
