//! Wall-clock time as the protocols count it (Unix seconds for tokens and sessions,
//! milliseconds to order a login against a back-channel logout). A leaf.

/// Seconds since the Unix epoch.
pub type UnixTime = u64;

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub fn now() -> UnixTime {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
