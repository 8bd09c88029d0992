//! Header rewriting between client and upstream, step 6 of the request path: strip
//! hop-by-hop headers (RFC 9110 §7.6.1), strip identity headers a client could forge, set
//! `X-Forwarded-*` / `Forwarded` (RFC 7239), and drop the gateway's own cookies.

use std::sync::atomic::{AtomicU64, Ordering};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::request::ClientConn;

/// Hop-by-hop headers that are never forwarded (RFC 9110 §7.6.1, plus the non-standard
/// `Keep-Alive` and `Proxy-Connection`).
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Removes hop-by-hop headers, including every header named in `Connection`.
/// Returns the `Upgrade` value when the message asked for a protocol upgrade
/// (`Connection: upgrade`), so the caller can carry it across on purpose.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) -> Option<HeaderValue> {
    // One pass over the (few) headers present beats nine removals of absent names.
    if !headers.keys().any(|k| HOP_BY_HOP.contains(k)) {
        return None;
    }
    let mut upgrade = None;
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
            .collect();
        for name in named {
            if name == header::UPGRADE {
                upgrade = headers.get(header::UPGRADE).cloned();
            }
            headers.remove(name);
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    upgrade
}

/// Puts an upgrade back after `strip_hop_by_hop` (WebSocket, RFC 6455 §4.1).
pub fn restore_upgrade(headers: &mut HeaderMap, upgrade: HeaderValue) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, upgrade);
}

/// The gateway's own identity headers (and oauth2-proxy's, which upstreams migrated
/// from it may trust), by canonical name.
const IDENTITY_HEADERS: [&str; 5] = [
    "x-forwarded-user",
    "x-forwarded-email",
    "x-forwarded-groups",
    "x-forwarded-preferred-username",
    "x-forwarded-access-token",
];
/// Other names upstreams commonly take as "the user" (Apache `REMOTE_USER` via
/// `Remote-User`, oauth2-proxy's `Gap-Auth`).
const IDENTITY_ALIASES: [&str; 3] = ["remote-user", "x-remote-user", "gap-auth"];
/// The forward-auth answer's names (`x-auth-request-*`, stripped as a family), as
/// oauth2-proxy sets them: what a proxy in front may copy upstream.
const AUTH_REQUEST_HEADERS: [&str; 5] = [
    "x-auth-request-user",
    "x-auth-request-email",
    "x-auth-request-groups",
    "x-auth-request-preferred-username",
    "x-auth-request-access-token",
];

/// Which client request headers never reach an upstream.
#[derive(Debug, Clone, Default)]
pub struct ClientHeaderRules {
    /// `server.drop_underscore_headers`.
    pub drop_underscore: bool,
    /// `server.strip_request_headers`, canonical (lowercase, `-` for `_`).
    pub extra: Vec<String>,
}

impl ClientHeaderRules {
    /// Whether a client header called `name` (lowercase, as `HeaderMap` keeps it) is
    /// removed. Identity families are matched with `_` and `.` read as `-`, since WSGI,
    /// CGI, PHP and Rack map them to the same variable (the class of oauth2-proxy
    /// CVE-2025-64484).
    pub fn strips(&self, name: &str) -> bool {
        let has_underscore = name.contains('_');
        if has_underscore && self.drop_underscore {
            return true;
        }
        // PHP also maps `.` to `_`, so `X.Forwarded.User` is `X-Forwarded-User` there.
        let canonical: std::borrow::Cow<'_, str> = if has_underscore || name.contains('.') {
            name.replace(['_', '.'], "-").into()
        } else {
            name.into()
        };
        let n = canonical.as_ref();
        IDENTITY_HEADERS.contains(&n)
            || IDENTITY_ALIASES.contains(&n)
            || n.starts_with("x-auth-request-")
            || self.extra.iter().any(|e| e == n)
    }

    /// Every name `strips` matches exactly, for a proxy that must be told what to remove
    /// (Envoy's ext_authz): the identity families and the operator's extra names.
    pub fn known_names(&self) -> impl Iterator<Item = &str> {
        IDENTITY_HEADERS
            .into_iter()
            .chain(IDENTITY_ALIASES)
            .chain(AUTH_REQUEST_HEADERS)
            .chain(self.extra.iter().map(String::as_str))
    }

    /// Removes every client header `strips` names. One pass over the (few) names present;
    /// nothing is allocated unless one is found.
    pub fn apply(&self, headers: &mut HeaderMap) {
        let doomed: Vec<HeaderName> = headers
            .keys()
            .filter(|k| self.strips(k.as_str()))
            .cloned()
            .collect();
        for name in doomed {
            headers.remove(name);
        }
    }
}

/// Whether `host` may go into `Forwarded: host="..."` as is: a client's `Host` with a quote
/// or `;` could otherwise add parameters of its own (e.g. a forged `for=`).
fn plain_host(host: &[u8]) -> bool {
    !host.is_empty()
        && host.iter().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']' | b'_')
        })
}

/// Sets `X-Forwarded-For/Proto/Host` and `Forwarded`. Unless the operator trusts a proxy
/// in front, a client's own values are replaced (they are spoofable); when trusted, the
/// peer is appended to the chain and the client's proto and host are kept.
pub fn set_forwarded(
    headers: &mut HeaderMap,
    conn: &ClientConn,
    host: Option<&HeaderValue>,
    trust: bool,
) {
    let prior = |headers: &HeaderMap, name: &HeaderName| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.trim().is_empty())
            .map(str::to_owned)
    };
    let xff = match trust.then(|| prior(headers, &X_FORWARDED_FOR)).flatten() {
        Some(chain) => HeaderValue::from_str(&format!("{chain}, {}", conn.peer))
            .unwrap_or_else(|_| conn.peer_header.clone()),
        None => conn.peer_header.clone(),
    };
    headers.insert(X_FORWARDED_FOR, xff);
    if !trust || !headers.contains_key(&X_FORWARDED_PROTO) {
        headers.insert(
            X_FORWARDED_PROTO,
            HeaderValue::from_static(ClientConn::proto(conn.tls)),
        );
    }
    if !trust || !headers.contains_key(&X_FORWARDED_HOST) {
        match host {
            Some(h) => {
                headers.insert(X_FORWARDED_HOST, h.clone());
            }
            None => {
                headers.remove(&X_FORWARDED_HOST);
            }
        }
    }
    let earlier = if trust {
        prior(headers, &header::FORWARDED)
    } else {
        None
    };
    let mut value = Vec::with_capacity(
        earlier.as_ref().map_or(0, |e| e.len() + 2)
            + conn.forwarded_base.len()
            + host.map_or(0, |h| h.len() + 8),
    );
    if let Some(e) = &earlier {
        value.extend_from_slice(e.as_bytes());
        value.extend_from_slice(b", ");
    }
    value.extend_from_slice(conn.forwarded_base.as_bytes());
    if let Some(h) = host.filter(|h| plain_host(h.as_bytes())) {
        value.extend_from_slice(b";host=\"");
        value.extend_from_slice(h.as_bytes());
        value.push(b'"');
    }
    if let Ok(v) = HeaderValue::from_maybe_shared(bytes::Bytes::from(value)) {
        headers.insert(header::FORWARDED, v);
    }
}

/// The request id: the client's, when it is a short token of letters, digits and
/// `-._:` (so what is echoed back and logged can carry no markup or injection), else a
/// fresh one.
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
    if let Some(v) = headers.get(&X_REQUEST_ID) {
        let b = v.as_bytes();
        let token = |c: &u8| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b':');
        if !b.is_empty() && b.len() <= 128 && b.iter().all(token) {
            return v.clone();
        }
    }
    new_request_id()
}

/// A unique id without a syscall: a per-process random prefix and a counter.
fn new_request_id() -> HeaderValue {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static PREFIX: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let prefix = *PREFIX.get_or_init(|| {
        let mut b = [0u8; 8];
        // A failing RNG only makes ids less unique across restarts; fall back to the time.
        if aws_lc_rs::rand::fill(&mut b).is_err() {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            b = now.to_le_bytes();
        }
        u64::from_le_bytes(b)
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut text = Vec::with_capacity(32);
    for word in [prefix, n] {
        for shift in (0..16).rev() {
            text.push(b"0123456789abcdef"[((word >> (shift * 4)) & 0xf) as usize]);
        }
    }
    HeaderValue::from_maybe_shared(bytes::Bytes::from(text))
        .unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// Removes cookies for which `is_ours(name)` holds from every `Cookie` header, so the
/// upstream never sees the gateway's session or login cookies.
pub fn strip_cookies(headers: &mut HeaderMap, is_ours: impl Fn(&str) -> bool) {
    if !headers.contains_key(header::COOKIE) {
        return;
    }
    let mut kept = String::new();
    let mut changed = false;
    for value in headers.get_all(header::COOKIE) {
        let Ok(text) = value.to_str() else {
            changed = true;
            continue;
        };
        for pair in text.split(';') {
            let pair = pair.trim();
            if pair.is_empty() {
                continue;
            }
            let name = pair.split('=').next().unwrap_or("").trim();
            if is_ours(name) {
                changed = true;
                continue;
            }
            if !kept.is_empty() {
                kept.push_str("; ");
            }
            kept.push_str(pair);
        }
    }
    if !changed {
        return;
    }
    headers.remove(header::COOKIE);
    if let Ok(v) = HeaderValue::from_str(&kept) {
        if !kept.is_empty() {
            headers.insert(header::COOKIE, v);
        }
    }
}

/// Total size of the header section as the client sent it (names, values, `: ` and CRLF),
/// checked against `server.max_header_bytes`.
pub fn header_bytes(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn connection_listed_and_hop_headers_are_removed() {
        let mut h = map(&[
            ("connection", "close, x-secret-hop"),
            ("x-secret-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "gzip"),
            ("proxy-authorization", "Basic x"),
            ("x-kept", "yes"),
        ]);
        assert!(strip_hop_by_hop(&mut h).is_none());
        assert_eq!(h.len(), 1);
        assert_eq!(h["x-kept"], "yes");
    }

    #[test]
    fn upgrade_is_reported() {
        let mut h = map(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        assert_eq!(strip_hop_by_hop(&mut h).unwrap(), "websocket");
        assert!(h.is_empty());
    }

    #[test]
    fn forwarded_headers_are_replaced_unless_trusted() {
        let conn = ClientConn::new("127.0.0.1".parse().unwrap(), false, true);
        let host = HeaderValue::from_static("a.test");
        let mut h = map(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-proto", "https"),
            ("forwarded", "for=6.6.6.6"),
        ]);
        set_forwarded(&mut h, &conn, Some(&host), false);
        assert_eq!(h["x-forwarded-for"], "127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "a.test");
        assert_eq!(h["forwarded"], "for=127.0.0.1;proto=http;host=\"a.test\"");

        let mut h = map(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-proto", "https"),
        ]);
        set_forwarded(&mut h, &conn, Some(&host), true);
        assert_eq!(h["x-forwarded-for"], "6.6.6.6, 127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "https");
    }

    #[test]
    fn ipv6_peer_is_quoted_in_forwarded() {
        let conn = ClientConn::new("::1".parse().unwrap(), true, true);
        let mut h = HeaderMap::new();
        set_forwarded(&mut h, &conn, None, false);
        assert_eq!(h["forwarded"], "for=\"[::1]\";proto=https");
        // A Host that would add parameters of its own is left out of Forwarded.
        let evil = HeaderValue::from_static("a\";for=6.6.6.6");
        set_forwarded(&mut h, &conn, Some(&evil), false);
        assert_eq!(h["forwarded"], "for=\"[::1]\";proto=https");
    }

    #[test]
    fn gateway_cookies_are_dropped() {
        let mut h = map(&[
            ("cookie", "a=1; portcullis=SECRET; b=2"),
            ("cookie", "portcullis_login_x=y"),
        ]);
        strip_cookies(&mut h, |n| n.starts_with("portcullis"));
        assert_eq!(h.get_all("cookie").iter().count(), 1);
        assert_eq!(h["cookie"], "a=1; b=2");
        let mut h = map(&[("cookie", "portcullis=x")]);
        strip_cookies(&mut h, |n| n == "portcullis");
        assert!(!h.contains_key("cookie"));
    }

    #[test]
    fn request_id_is_kept_or_generated() {
        let h = map(&[("x-request-id", "abc-123")]);
        assert_eq!(request_id(&h), "abc-123");
        let h = map(&[("x-request-id", "has space")]);
        let generated = request_id(&h);
        assert_eq!(generated.len(), 32);
        assert_ne!(request_id(&HeaderMap::new()), generated);
    }

    use proptest::prelude::*;

    /// Every spelling of an identity header name: case, `_` for `-`.
    fn spelling() -> impl Strategy<Value = String> {
        let base = prop_oneof![
            Just("x-forwarded-user"),
            Just("x-forwarded-email"),
            Just("x-forwarded-groups"),
            Just("x-forwarded-preferred-username"),
            Just("x-forwarded-access-token"),
            Just("x-auth-request-user"),
            Just("x-auth-request-anything"),
            Just("remote-user"),
            Just("x-remote-user"),
            Just("gap-auth"),
        ];
        (
            base,
            prop::collection::vec(prop::bool::ANY, 40),
            prop::collection::vec(prop::bool::ANY, 40),
        )
            .prop_map(|(name, upper, underscore)| {
                name.chars()
                    .enumerate()
                    .map(|(i, c)| match c {
                        '-' if underscore[i] => '_',
                        c if upper[i] => c.to_ascii_uppercase(),
                        c => c,
                    })
                    .collect()
            })
    }

    proptest! {
        #[test]
        fn stripping_removes_every_spelling_of_an_identity_header(name in spelling(), drop_underscore in prop::bool::ANY) {
            let rules = ClientHeaderRules { drop_underscore, extra: vec![] };
            let mut h = HeaderMap::new();
            h.insert(HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_static("admin"));
            h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
            rules.apply(&mut h);
            prop_assert_eq!(h.len(), 1, "{} survived", name);
            prop_assert!(h.contains_key(header::ACCEPT));
        }
    }

    #[test]
    fn underscore_headers_are_dropped_only_when_configured() {
        let mut h = map(&[("x_custom", "1"), ("x-custom", "2"), ("x-strip-me", "3")]);
        let keep = ClientHeaderRules {
            drop_underscore: false,
            extra: vec!["x-strip-me".into()],
        };
        keep.apply(&mut h);
        assert!(
            h.contains_key("x_custom")
                && h.contains_key("x-custom")
                && !h.contains_key("x-strip-me")
        );
        ClientHeaderRules {
            drop_underscore: true,
            extra: vec![],
        }
        .apply(&mut h);
        assert!(!h.contains_key("x_custom") && h.contains_key("x-custom"));
    }
}
