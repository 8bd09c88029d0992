//! Validation of return targets (`rd`, `post_logout_redirect_uri`), in one place: a
//! same-origin relative path, or an absolute http(s) URL whose host is listed in
//! `server.allowed_redirect_hosts` (exact, or `*.example.com` for subdomains). Anything
//! else — other hosts, other schemes, `//host`, `/\host`, userinfo `@` tricks, control
//! characters, their percent-encoded forms, IDN lookalikes (compared in punycode) — falls
//! back to `/`. Open redirects are how login flows get phished.

/// Only bytes outside ASCII need encoding: `is_safe_relative_path` already refused
/// controls and whitespace, and the rest of the path is kept as the client wrote it.
const NON_ASCII: &percent_encoding::AsciiSet = percent_encoding::CONTROLS;

/// Where a login or logout may return to.
#[derive(Debug, Clone, Default)]
pub struct RedirectPolicy {
    /// Lowercase hosts; entries starting with `.` match any subdomain.
    hosts: Vec<String>,
}

impl RedirectPolicy {
    pub fn new(allowed_hosts: &[String]) -> Self {
        let hosts = allowed_hosts
            .iter()
            .map(|h| {
                let h = h.trim().to_ascii_lowercase();
                h.strip_prefix('*').map(str::to_string).unwrap_or(h)
            })
            .collect();
        RedirectPolicy { hosts }
    }

    /// The target to return to, or `/` when `rd` is missing or unsafe.
    pub fn safe_target(&self, rd: Option<&str>) -> String {
        match rd {
            // Non-ASCII characters are percent-encoded so the Location header stays ASCII.
            Some(rd) if is_safe_relative_path(rd) => {
                percent_encoding::utf8_percent_encode(rd, NON_ASCII).to_string()
            }
            Some(rd) => self.allowed_absolute(rd).unwrap_or_else(|| "/".to_string()),
            None => "/".to_string(),
        }
    }

    fn allowed_absolute(&self, rd: &str) -> Option<String> {
        if self.hosts.is_empty()
            || rd.len() > 2048
            || rd
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '\\')
        {
            return None;
        }
        let lower = rd.to_ascii_lowercase();
        if !(lower.starts_with("https://") || lower.starts_with("http://")) {
            return None;
        }
        let url = url::Url::parse(rd).ok()?;
        if !url.username().is_empty() || url.password().is_some() {
            return None;
        }
        // `Url` gives IDNs in punycode, so a lookalike never equals an allowed ASCII host.
        let host = url.host_str()?.to_ascii_lowercase();
        let allowed = self.hosts.iter().any(|h| match h.strip_prefix('.') {
            Some(_) => host.len() > h.len() && host.ends_with(h.as_str()),
            None => *h == host,
        });
        allowed.then(|| url.to_string())
    }
}

/// The path to return to, relative targets only (no hosts allowed).
#[cfg(test)]
fn safe_return_path(rd: Option<&str>) -> String {
    RedirectPolicy::default().safe_target(rd)
}

fn is_safe_relative_path(rd: &str) -> bool {
    if rd.len() > 2048 || rd.chars().any(char::is_whitespace) || !is_plain_path(rd) {
        return false;
    }
    // Browsers and upstreams may decode before interpreting; check the decoded form too.
    let decoded = percent_encoding::percent_decode_str(rd).decode_utf8_lossy();
    is_plain_path(&decoded)
}

fn is_plain_path(p: &str) -> bool {
    let bytes = p.as_bytes();
    bytes.first() == Some(&b'/')
        && !matches!(bytes.get(1), Some(b'/' | b'\\'))
        && !p.contains('\\')
        && !p.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_are_kept() {
        for rd in ["/", "/a/b?x=1&y=2", "/dash#frag", "/a%20b"] {
            assert_eq!(safe_return_path(Some(rd)), rd, "{rd}");
        }
    }

    #[test]
    fn allowed_hosts_admit_absolute_urls() {
        let p = RedirectPolicy::new(&["app.example.com".into(), "*.corp.test".into()]);
        for ok in [
            "https://app.example.com/x?y=1",
            "http://a.corp.test/",
            "https://a.b.corp.test/p",
        ] {
            assert_ne!(p.safe_target(Some(ok)), "/", "{ok}");
        }
        for bad in [
            "https://corp.test/",
            "https://evilcorp.test/",
            "https://app.example.com.evil.test/",
            "https://app.example.com@evil.test/",
            "https://evil.test/@app.example.com",
            "https://evil.test\\@app.example.com/",
            "javascript://app.example.com/%0aalert(1)",
            "ftp://app.example.com/",
            "https://аpp.example.com/",
            "https://app.example.com\t/",
            "//app.example.com/",
            "https:app.example.com",
        ] {
            assert_eq!(p.safe_target(Some(bad)), "/", "{bad:?}");
        }
    }

    #[test]
    fn non_ascii_is_percent_encoded() {
        assert_eq!(safe_return_path(Some("/café?q=ä")), "/caf%C3%A9?q=%C3%A4");
    }

    #[test]
    fn hostile_targets_fall_back_to_root() {
        for rd in [
            "//evil.com",
            "/\\evil.com",
            "\\\\evil.com",
            "https://evil.com",
            "http:evil.com",
            "javascript:alert(1)",
            "evil.com",
            "/%2Fevil.com",
            "/%5Cevil.com",
            "%2F%2Fevil.com",
            "/\tevil",
            "/\nevil",
            "/%0d%0aSet-Cookie:x",
            "/a\\b",
            "",
            " /x",
        ] {
            assert_eq!(safe_return_path(Some(rd)), "/", "{rd:?}");
        }
        assert_eq!(safe_return_path(None), "/");
    }

    use proptest::prelude::*;

    /// Targets built from the pieces open-redirect payloads combine.
    fn tricky_target() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            Just("/"),
            Just("//"),
            Just("\\"),
            Just("%2f"),
            Just("%5c"),
            Just("evil.test"),
            Just("app.test"),
            Just("@"),
            Just(":"),
            Just("https:"),
            Just("http://"),
            Just("javascript:"),
            Just("%09"),
            Just("\t"),
            Just("."),
            Just("?"),
            Just("#"),
            Just("%40"),
            Just("sub.app.test"),
            Just("ﬀ"),
            Just("%e3%80%82"),
            Just("a"),
        ];
        prop::collection::vec(piece, 0..8).prop_map(|p| p.concat())
    }

    proptest! {
        #[test]
        fn the_validator_never_returns_an_off_site_url(rd in tricky_target()) {
            let policy = RedirectPolicy::new(&["app.test".to_string()]);
            let target = policy.safe_target(Some(&rd));
            if target.starts_with('/') {
                // Relative: must stay on this origin however a browser reads it.
                prop_assert!(!target.starts_with("//") && !target.starts_with("/\\"), "{} -> {}", rd, target);
                let joined = url::Url::parse("https://gateway.test/x").unwrap().join(&target).unwrap();
                prop_assert_eq!(joined.host_str(), Some("gateway.test"), "{} -> {}", rd, target);
            } else {
                let url = url::Url::parse(&target).unwrap();
                prop_assert_eq!(url.host_str(), Some("app.test"), "{} -> {}", rd, target);
                prop_assert!(matches!(url.scheme(), "http" | "https"));
            }
        }
    }
}
