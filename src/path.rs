//! The request path in one canonical form, or a refusal: step 0 of the request path,
//! before routing. A path is routed and forwarded as one and the same string, so the path
//! the gateway authorized is the path the upstream serves.
//!
//! What can be normalized unambiguously is (RFC 3986 §6.2.2): percent-encoded unreserved
//! characters are decoded, other escapes upper-cased, `.`/`..` segments (also as `%2E`)
//! resolved (§5.2.4), empty segments collapsed. What different servers read differently is
//! refused, because no single form would mean the same thing to all of them:
//! - an encoded `/` (`%2F`: nginx and Jetty decode it, others do not) unless the route opts
//!   in with `allow_encoded_slashes`, and even then never next to a dot segment;
//! - `\` raw or encoded (`%5C`; IIS and some frameworks read it as `/`);
//! - `;` parameters on a dot segment (`..;/`: Tomcat strips the parameter, then resolves);
//! - an encoded `%` before `2E`, `2F`, `5C` or `25` (double encoding, for upstreams that
//!   decode twice);
//! - NUL and other control characters, raw or encoded;
//! - percent-encoded bytes that are not valid UTF-8 (overlong `%C0%AE` is a `.` to old
//!   decoders);
//! - characters whose NFKC form holds a `.`, `/` or `\` in a dot-segment or separator
//!   position (fullwidth `%EF%BC%8E` is a `.` to an upstream that normalizes Unicode).

use std::borrow::Cow;

use unicode_normalization::UnicodeNormalization;

/// Why a path was refused (a short fixed reason for the 400 and the audit log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ambiguous(pub &'static str);

impl std::fmt::Display for Ambiguous {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// A path every server reads the same way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanonicalPath<'a> {
    pub path: Cow<'a, str>,
    /// It keeps an encoded `/` inside a segment: only routes with
    /// `allow_encoded_slashes` take it.
    pub encoded_slash: bool,
}

/// Canonicalizes a request path (without the query). Idempotent: the canonical form of a
/// canonical path is itself. The common path is returned borrowed, without a copy.
pub fn canonicalize(raw: &str) -> Result<CanonicalPath<'_>, Ambiguous> {
    if !raw.starts_with('/') {
        return Err(Ambiguous("the request path does not start with /"));
    }
    if is_plain(raw) {
        return Ok(CanonicalPath {
            path: Cow::Borrowed(raw),
            encoded_slash: false,
        });
    }
    let mut segments: Vec<Segment> = Vec::new();
    let mut trailing_slash = false;
    for raw_segment in raw.split('/') {
        if raw_segment.is_empty() {
            trailing_slash = true;
            continue;
        }
        let segment = Segment::parse(raw_segment)?;
        match segment.decoded.as_str() {
            "." => trailing_slash = true,
            ".." => {
                segments.pop();
                trailing_slash = true;
            }
            _ => {
                segments.push(segment);
                trailing_slash = false;
            }
        }
    }
    let mut out = String::with_capacity(raw.len());
    for s in &segments {
        out.push('/');
        out.push_str(&s.encoded);
    }
    let encoded_slash = segments.iter().any(|s| s.encoded_slash);
    if trailing_slash || out.is_empty() {
        out.push('/');
    }
    Ok(CanonicalPath {
        path: Cow::Owned(out),
        encoded_slash,
    })
}

/// Only characters that need nothing done, and no empty or dot segment.
fn is_plain(path: &str) -> bool {
    let b = path.as_bytes();
    b.iter().all(|&c| {
        c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'/' | b'-'
                    | b'_'
                    | b'~'
                    | b'.'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b'='
                    | b':'
                    | b'@'
            )
    }) && !path.contains("//")
        && !path.contains("/.")
}

/// One segment (between raw `/`s): its canonical encoding and its fully decoded text.
struct Segment {
    encoded: String,
    decoded: String,
    encoded_slash: bool,
}

impl Segment {
    fn parse(raw: &str) -> Result<Segment, Ambiguous> {
        let bytes = raw.as_bytes();
        let mut encoded = String::with_capacity(raw.len());
        let mut decoded: Vec<u8> = Vec::with_capacity(raw.len());
        let mut encoded_slash = false;
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            if b == b'%' {
                let value = hex_pair(bytes.get(i + 1..i + 3))
                    .ok_or(Ambiguous("malformed percent-encoding"))?;
                match value {
                    0x00..=0x1f | 0x7f => return Err(Ambiguous("encoded control character")),
                    b'\\' => return Err(Ambiguous("encoded backslash")),
                    b'%' => {
                        // `%25` then (after one more decoding) an escape of `.`, `/`, `\`
                        // or `%`: double encoding.
                        if matches!(escape_after(bytes, i + 3), Some(b'.' | b'/' | b'\\' | b'%')) {
                            return Err(Ambiguous("double percent-encoding"));
                        }
                        encoded.push_str("%25");
                    }
                    b'/' => {
                        encoded_slash = true;
                        encoded.push_str("%2F");
                    }
                    v if is_unreserved(v) => encoded.push(v as char),
                    v => {
                        encoded.push('%');
                        encoded.push(HEX[(v >> 4) as usize] as char);
                        encoded.push(HEX[(v & 0xf) as usize] as char);
                    }
                }
                decoded.push(value);
                i += 3;
                continue;
            }
            match b {
                0x00..=0x1f | 0x7f => return Err(Ambiguous("control character")),
                b'\\' => return Err(Ambiguous("backslash")),
                0x80..=0xff => return Err(Ambiguous("raw non-ASCII byte")),
                _ => {}
            }
            encoded.push(b as char);
            decoded.push(b);
            i += 1;
        }
        let decoded = String::from_utf8(decoded)
            .map_err(|_| Ambiguous("percent-encoded bytes that are not valid UTF-8"))?;
        check_dots(&decoded)?;
        if !decoded.is_ascii() {
            // What an upstream that normalizes Unicode (NFKC) would read.
            let folded: String = decoded.nfkc().collect();
            if folded.contains(['/', '\\']) {
                return Err(Ambiguous("a character that normalizes to a separator"));
            }
            if folded != decoded && (check_dots(&folded).is_err() || is_dot_segment(&folded)) {
                return Err(Ambiguous("a character that normalizes to a dot segment"));
            }
        }
        Ok(Segment {
            encoded,
            decoded,
            encoded_slash,
        })
    }
}

fn is_dot_segment(s: &str) -> bool {
    s == "." || s == ".."
}

/// A decoded segment may be a plain dot segment (resolved by the caller) but must not hide
/// one behind an encoded slash (`..%2F`, `%2F..`, `.%2F`) or a parameter (`..;`, `.;x`).
fn check_dots(decoded: &str) -> Result<(), Ambiguous> {
    if is_dot_segment(decoded) {
        return Ok(());
    }
    let hides_dot = decoded
        .split('/')
        .any(|piece| is_dot_segment(piece.split(';').next().unwrap_or(piece)));
    if hides_dot {
        return Err(Ambiguous(
            "a dot segment with an encoded slash or a ; parameter",
        ));
    }
    Ok(())
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// The byte that the two characters at `at` (each raw or itself `%XX`) encode as hex,
/// as a second decoding would see them: `2e` and `%32%65` both give `.`.
fn escape_after(bytes: &[u8], at: usize) -> Option<u8> {
    let mut pos = at;
    let mut digits = [0u8; 2];
    for digit in &mut digits {
        let c = *bytes.get(pos)?;
        if c == b'%' {
            *digit = hex_pair(bytes.get(pos + 1..pos + 3))?;
            pos += 3;
        } else {
            *digit = c;
            pos += 1;
        }
    }
    hex_pair(Some(&digits))
}

fn hex_pair(pair: Option<&[u8]>) -> Option<u8> {
    let pair = pair?;
    let digit = |c: u8| (c as char).to_digit(16);
    Some((digit(pair[0])? * 16 + digit(pair[1])?) as u8)
}

/// RFC 3986 §2.3.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ok(input: &str) -> String {
        canonicalize(input)
            .unwrap_or_else(|e| panic!("{input:?} refused: {e}"))
            .path
            .into_owned()
    }

    #[test]
    fn resolves_what_is_unambiguous() {
        for (input, want) in [
            ("/", "/"),
            ("/a/b", "/a/b"),
            ("/a/../b", "/b"),
            ("//b", "/b"),
            ("/%2e%2e/b", "/b"),
            ("/%2E%2e/%2e/b/", "/b/"),
            ("/../../b", "/b"),
            ("/a/./b/.", "/a/b/"),
            ("/a/b/..", "/a/"),
            ("/%62", "/b"),
            ("/a//b//", "/a/b/"),
            ("/caf%c3%a9", "/caf%C3%A9"),
            ("/a%20b", "/a%20b"),
            ("/a;v=1/b", "/a;v=1/b"),
            ("/file.tar.gz", "/file.tar.gz"),
            ("/a/...", "/a/..."),
            ("/100%25", "/100%25"),
            ("/%2541", "/%2541"),
        ] {
            assert_eq!(ok(input), want, "input {input:?}");
        }
    }

    #[test]
    fn refuses_what_servers_read_differently() {
        for input in [
            "/public/..%2fsecret",
            "/public/..%2Fsecret",
            "/public/%2e%2e%2fsecret",
            "/a%2f..%2fb",
            "/public/.%2fx",
            "/public/..%5csecret",
            "/public\\..\\secret",
            "/public/..;/secret",
            "/public/.;x/secret",
            "/public/..%3b/secret",
            "/public/%252e%252e/secret",
            "/public/%252F",
            "/public/%255c",
            "/public/%25%32%65",
            "/a%00b",
            "/a%0d%0ab",
            "/a%7f",
            "/public/%c0%ae%c0%ae/secret",
            "/public/%e0%80%ae",
            "/public/%ff",
            "/public/%ef%bc%8e%ef%bc%8e/secret",
            "/public/%ef%bc%8f",
            "/public/%ef%bc%bc",
            "/public/%e2%80%a5/secret",
            "/a%zz",
            "/a%2",
            "*",
        ] {
            assert!(canonicalize(input).is_err(), "{input:?} was accepted");
        }
    }

    #[test]
    fn encoded_slashes_are_flagged_not_split() {
        let c = canonicalize("/api/a%2fb").unwrap();
        assert_eq!(c.path, "/api/a%2Fb");
        assert!(c.encoded_slash);
        assert!(!canonicalize("/api/a").unwrap().encoded_slash);
    }

    #[test]
    fn common_paths_are_not_copied() {
        assert!(matches!(
            canonicalize("/api/v1/items").unwrap().path,
            Cow::Borrowed(_)
        ));
    }

    /// Paths made of the pieces attackers combine.
    fn tricky_path() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            Just("a".to_string()),
            Just(".".to_string()),
            Just("..".to_string()),
            Just("%2e".to_string()),
            Just("%2E%2e".to_string()),
            Just("%2f".to_string()),
            Just("%5c".to_string()),
            Just("\\".to_string()),
            Just(";".to_string()),
            Just("%3b".to_string()),
            Just("%25".to_string()),
            Just("%252e".to_string()),
            Just("%00".to_string()),
            Just("%c0%ae".to_string()),
            Just("%ef%bc%8e".to_string()),
            Just("%c3%a9".to_string()),
            Just("%zz".to_string()),
            Just("~".to_string()),
            Just("b".to_string()),
        ];
        prop::collection::vec((piece, prop::bool::ANY), 0..8).prop_map(|parts| {
            let mut s = String::from("/");
            for (p, slash) in parts {
                s.push_str(&p);
                if slash {
                    s.push('/');
                }
            }
            s
        })
    }

    proptest! {
        #[test]
        fn canonicalization_is_idempotent(path in tricky_path()) {
            if let Ok(once) = canonicalize(&path) {
                let twice = canonicalize(&once.path).expect("a canonical path is accepted");
                prop_assert_eq!(&twice.path, &once.path);
                prop_assert_eq!(twice.encoded_slash, once.encoded_slash);
            }
        }

        #[test]
        fn accepted_paths_hold_no_dot_segment_separator_or_control(path in tricky_path()) {
            if let Ok(c) = canonicalize(&path) {
                let p = c.path.as_ref();
                for segment in p.split('/') {
                    prop_assert!(segment != "." && segment != "..", "{} -> {}", path, p);
                }
                let lower = p.to_ascii_lowercase();
                for bad in ["%5c", "\\", "%25", "%00", "%2e"] {
                    // %25 stays only where it cannot start a double encoding.
                    if bad == "%25" {
                        for at in lower.match_indices("%25").map(|(i, _)| i) {
                            let next = &lower[at + 3..];
                            prop_assert!(!next.starts_with("2e") && !next.starts_with("2f") && !next.starts_with("5c"), "{} -> {}", path, p);
                        }
                        continue;
                    }
                    prop_assert!(!lower.contains(bad), "{} -> {} contains {}", path, p, bad);
                }
                prop_assert!(!p.bytes().any(|b| b < 0x20 || b == 0x7f));
                prop_assert_eq!(c.encoded_slash, lower.contains("%2f"));
            }
        }

        #[test]
        fn arbitrary_input_never_panics(path in "/[ -~]{0,40}") {
            let _ = canonicalize(&path);
        }
    }
}
