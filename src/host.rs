//! The host a request addresses, step 0 of the request path. RFC 9112 §3.2: an HTTP/1.1
//! request with no `Host`, more than one, or an invalid one gets 400; an absolute-form
//! target (`GET http://host/path`) or an HTTP/2 `:authority` must name the same host as
//! `Host` when both are present (RFC 9113 §8.3.1). Otherwise the gateway could route by
//! one name while the upstream, or a log, reads another.

use http::header::{self, HeaderMap};
use http::{Uri, Version};

use crate::path::Ambiguous;

/// The one host of the request (`Host`, else the URI authority), validated.
pub fn request_host<'r>(
    headers: &'r HeaderMap,
    uri: &'r Uri,
    version: Version,
) -> Result<Option<&'r str>, Ambiguous> {
    let mut hosts = headers.get_all(header::HOST).iter();
    let host = match (hosts.next(), hosts.next()) {
        (_, Some(_)) => return Err(Ambiguous("more than one Host header")),
        (Some(h), None) => Some(
            h.to_str()
                .ok()
                .filter(|h| is_valid_authority(h))
                .ok_or(Ambiguous("invalid Host header"))?,
        ),
        (None, None) => None,
    };
    let authority = match uri.authority() {
        Some(a) if !is_valid_authority(a.as_str()) => {
            return Err(Ambiguous("invalid authority in the request target"))
        }
        Some(a) => Some(a.as_str()),
        None => None,
    };
    match (host, authority) {
        (Some(h), Some(a)) if !h.eq_ignore_ascii_case(a) => Err(Ambiguous(
            "the request target's authority differs from Host",
        )),
        (None, None) if version == Version::HTTP_11 => Err(Ambiguous("no Host header")),
        (h, a) => Ok(h.or(a)),
    }
}

/// `host[:port]`: a DNS-style name, an IPv4 address or a bracketed IPv6 address, and an
/// optional port of 1–5 digits. No userinfo, no percent-encoding, no other delimiters.
pub fn is_valid_authority(text: &str) -> bool {
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else {
            return false;
        };
        if v6.parse::<std::net::Ipv6Addr>().is_err() {
            return false;
        }
        match after {
            "" => return true,
            p => match p.strip_prefix(':') {
                Some(port) => ("[v6]", Some(port)),
                None => return false,
            },
        }
    } else {
        match text.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (text, None),
        }
    };
    let name_ok = host == "[v6]"
        || (!host.is_empty()
            && host.len() <= 253
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_')));
    let port_ok = port.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 5
            && p.bytes().all(|b| b.is_ascii_digit())
            && p.parse::<u16>().is_ok()
    });
    name_ok && port_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn check(hosts: &[&str], uri: &str, version: Version) -> Result<Option<String>, Ambiguous> {
        let mut h = HeaderMap::new();
        for host in hosts {
            h.append(header::HOST, HeaderValue::from_str(host).unwrap());
        }
        let uri: Uri = uri.parse().unwrap();
        request_host(&h, &uri, version).map(|o| o.map(str::to_owned))
    }

    #[test]
    fn one_valid_host_passes() {
        assert_eq!(
            check(&["app.test:4180"], "/x", Version::HTTP_11),
            Ok(Some("app.test:4180".into()))
        );
        assert_eq!(
            check(&["[::1]:80"], "/", Version::HTTP_11),
            Ok(Some("[::1]:80".into()))
        );
        assert_eq!(
            check(&[], "http://app.test/x", Version::HTTP_2),
            Ok(Some("app.test".into()))
        );
        assert_eq!(
            check(&["App.Test"], "http://app.test/x", Version::HTTP_11),
            Ok(Some("App.Test".into()))
        );
        assert_eq!(check(&[], "/x", Version::HTTP_10), Ok(None));
    }

    #[test]
    fn duplicates_invalid_and_disagreeing_hosts_are_refused() {
        assert!(check(&["a.test", "b.test"], "/", Version::HTTP_11).is_err());
        assert!(check(&["a.test", "a.test"], "/", Version::HTTP_11).is_err());
        for bad in [
            "a.test:",
            "a.test:99999",
            "a test",
            "a.test:80:80",
            "user@a.test",
            "a.test/x",
            "[::1",
            "[zz]:1",
            "a\"b",
            "a;for=x",
            "",
            "a%2e",
        ] {
            assert!(check(&[bad], "/", Version::HTTP_11).is_err(), "{bad:?}");
        }
        assert!(check(&["a.test"], "http://b.test/x", Version::HTTP_11).is_err());
        assert!(check(&[], "/x", Version::HTTP_11).is_err());
    }
}
