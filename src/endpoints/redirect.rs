//! Validation of return targets (`rd`): only a same-origin relative path is accepted;
//! anything else (other hosts, schemes, `//host`, `/\host`, control characters, and their
//! percent-encoded forms) falls back to `/`. Open redirects are how login flows get phished.

/// Only bytes outside ASCII need encoding: `is_safe_relative_path` already refused
/// controls and whitespace, and the rest of the path is kept as the client wrote it.
const NON_ASCII: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS;

/// The path to return to after login, or `/` when `rd` is missing or unsafe.
pub fn safe_return_path(rd: Option<&str>) -> String {
    match rd {
        // Non-ASCII characters are percent-encoded so the Location header stays ASCII.
        Some(rd) if is_safe_relative_path(rd) => {
            percent_encoding::utf8_percent_encode(rd, NON_ASCII).to_string()
        }
        _ => "/".to_string(),
    }
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
}
