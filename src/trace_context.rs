//! W3C Trace Context (<https://www.w3.org/TR/trace-context/>): the `traceparent` a request
//! came with, read strictly, and the one it goes upstream with. A valid incoming
//! `traceparent` keeps its trace id and the gateway's own span id becomes the parent id the
//! upstream sees; a missing or malformed one starts a new trace. `tracestate` goes on
//! unchanged only with a kept `traceparent` (§3.3.1: a vendor that could not parse
//! `traceparent` must not use `tracestate`). Ids come from a per-thread generator seeded
//! once from the system's random source: they must be unique, not secret.
//!
//! A leaf: it knows headers, nothing of the gateway. Exporting spans is `otel.rs`'s.

use std::cell::Cell;
use std::fmt;

use http::header::{HeaderMap, HeaderName, HeaderValue};

/// `traceparent` (§3.2).
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// `tracestate` (§3.3).
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// The length of a version-00 `traceparent`: `00-<32 hex>-<16 hex>-<2 hex>`.
pub const TRACEPARENT_LEN: usize = 55;

/// The `sampled` trace flag (§3.2.2.5.1).
const SAMPLED: u8 = 0x01;

/// A 16-byte trace id, never all zeros (§3.2.2.3).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceId(pub [u8; 16]);

/// An 8-byte span (parent) id, never all zeros (§3.2.2.4).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpanId(pub [u8; 8]);

impl TraceId {
    /// A fresh random trace id.
    pub fn random() -> TraceId {
        loop {
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&next_u64().to_le_bytes());
            id[8..].copy_from_slice(&next_u64().to_le_bytes());
            if id != [0; 16] {
                return TraceId(id);
            }
        }
    }
}

impl SpanId {
    /// A fresh random span id.
    pub fn random() -> SpanId {
        loop {
            let id = next_u64();
            if id != 0 {
                return SpanId(id.to_le_bytes());
            }
        }
    }
}

impl fmt::Display for TraceId {
    /// 32 lowercase hex digits, as in `traceparent` and the access log's `trace_id`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = [0u8; 32];
        write_hex(&self.0, &mut text);
        f.write_str(std::str::from_utf8(&text).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Display for SpanId {
    /// 16 lowercase hex digits.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = [0u8; 16];
        write_hex(&self.0, &mut text);
        f.write_str(std::str::from_utf8(&text).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceId({self})")
    }
}

impl fmt::Debug for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpanId({self})")
    }
}

/// A parsed `traceparent` (§3.2.2): the fields of version 00, which every later version
/// starts with (§4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: TraceId,
    pub parent_id: SpanId,
    pub flags: u8,
}

impl TraceParent {
    /// Parses a `traceparent` value strictly: lowercase hex only; version `ff` is invalid;
    /// version 00 is exactly 55 characters; a later version is at least 55, and anything
    /// after the flags must begin with `-` (§4.3: parse the version-00 fields and ignore
    /// the rest); neither id may be all zeros.
    pub fn parse(value: &[u8]) -> Option<TraceParent> {
        if value.len() < TRACEPARENT_LEN {
            return None;
        }
        let version = hex_byte(value[0], value[1])?;
        let length_ok = match version {
            0xff => false,
            0x00 => value.len() == TRACEPARENT_LEN,
            _ => value.len() == TRACEPARENT_LEN || value[TRACEPARENT_LEN] == b'-',
        };
        if !length_ok || value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
            return None;
        }
        let mut trace_id = [0u8; 16];
        read_hex(&value[3..35], &mut trace_id)?;
        let mut parent_id = [0u8; 8];
        read_hex(&value[36..52], &mut parent_id)?;
        let flags = hex_byte(value[53], value[54])?;
        if trace_id == [0; 16] || parent_id == [0; 8] {
            return None;
        }
        Some(TraceParent {
            trace_id: TraceId(trace_id),
            parent_id: SpanId(parent_id),
            flags,
        })
    }

    /// Whether the caller may have recorded this trace (§3.2.2.5.1).
    pub fn sampled(&self) -> bool {
        self.flags & SAMPLED != 0
    }

    /// The version-00 header value (55 bytes).
    pub fn to_header(&self) -> HeaderValue {
        let mut text = [0u8; TRACEPARENT_LEN];
        text[..3].copy_from_slice(b"00-");
        write_hex(&self.trace_id.0, &mut text[3..35]);
        text[35] = b'-';
        write_hex(&self.parent_id.0, &mut text[36..52]);
        text[52] = b'-';
        write_hex(&[self.flags], &mut text[53..55]);
        HeaderValue::from_bytes(&text).expect("hex digits and dashes are a valid header value")
    }
}

/// The request's `traceparent`, if it has exactly one and it is valid (two could be read
/// two ways, so neither is trusted).
pub fn incoming(headers: &HeaderMap) -> Option<TraceParent> {
    let mut values = headers.get_all(TRACEPARENT).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    TraceParent::parse(value.as_bytes())
}

/// The trace a request belongs to, as far as the gateway carries it: what goes upstream
/// and into the access log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestTrace {
    pub trace_id: TraceId,
    /// The gateway's own id in the trace: the parent id the upstream sees.
    pub span_id: SpanId,
    /// The client's `traceparent` was valid and kept (so is its `tracestate`).
    pub continued: bool,
    pub sampled: bool,
}

impl RequestTrace {
    /// The trace of a request when no spans are exported: the incoming trace id or a fresh
    /// one, and one new span id. A new trace is marked sampled, so that an upstream that
    /// records traces itself (parent-based sampling) still does.
    pub fn begin(incoming: Option<TraceParent>) -> RequestTrace {
        match incoming {
            Some(parent) => RequestTrace {
                trace_id: parent.trace_id,
                span_id: SpanId::random(),
                continued: true,
                sampled: parent.sampled(),
            },
            None => RequestTrace {
                trace_id: TraceId::random(),
                span_id: SpanId::random(),
                continued: false,
                sampled: true,
            },
        }
    }

    /// The same trace seen from another of the gateway's spans (the upstream call's, when
    /// spans are exported).
    pub fn with_span(self, span_id: SpanId, sampled: bool) -> RequestTrace {
        RequestTrace {
            span_id,
            sampled,
            ..self
        }
    }

    /// The `traceparent` the upstream gets.
    pub fn traceparent(&self) -> HeaderValue {
        TraceParent {
            trace_id: self.trace_id,
            parent_id: self.span_id,
            flags: if self.sampled { SAMPLED } else { 0 },
        }
        .to_header()
    }

    /// Sets the upstream request's `traceparent` (replacing the client's) and drops the
    /// client's `tracestate` unless its `traceparent` was kept.
    pub fn set_headers(&self, headers: &mut HeaderMap) {
        headers.insert(TRACEPARENT, self.traceparent());
        if !self.continued {
            headers.remove(TRACESTATE);
        }
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn write_hex(bytes: &[u8], out: &mut [u8]) {
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = HEX[usize::from(b >> 4)];
        out[2 * i + 1] = HEX[usize::from(b & 0x0f)];
    }
}

/// Lowercase hex only (`HEXDIGLC`, §3.2.2.1).
fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

fn hex_byte(high: u8, low: u8) -> Option<u8> {
    Some(hex_digit(high)? << 4 | hex_digit(low)?)
}

fn read_hex(text: &[u8], out: &mut [u8]) -> Option<()> {
    for (i, pair) in text.chunks_exact(2).enumerate() {
        out[i] = hex_byte(pair[0], pair[1])?;
    }
    Some(())
}

thread_local! {
    /// wyrand state, seeded once per thread.
    static RNG: Cell<u64> = Cell::new(seed());
}

/// A seed from the system's random source; should it fail, the clock and the thread.
fn seed() -> u64 {
    let mut bytes = [0u8; 8];
    if aws_lc_rs::rand::fill(&mut bytes).is_ok() {
        return u64::from_le_bytes(bytes);
    }
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.finish()
}

/// wyrand: one multiply per 64 bits, unique enough for ids (not for secrets).
fn next_u64() -> u64 {
    RNG.with(|state| {
        let s = state.get().wrapping_add(0xa076_1d64_78bd_642f);
        state.set(s);
        let t = u128::from(s) * u128::from(s ^ 0xe703_7ed1_a0b4_28db);
        ((t >> 64) as u64) ^ (t as u64)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SPEC_EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn parse(text: &str) -> Option<TraceParent> {
        TraceParent::parse(text.as_bytes())
    }

    #[test]
    fn the_spec_example_parses_and_formats_back() {
        let parent = parse(SPEC_EXAMPLE).expect("valid");
        assert_eq!(
            parent.trace_id.to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(parent.parent_id.to_string(), "00f067aa0ba902b7");
        assert!(parent.sampled());
        assert_eq!(parent.to_header(), SPEC_EXAMPLE);
    }

    #[test]
    fn malformed_values_are_refused() {
        let bad = [
            "",
            // Uppercase hex (HEXDIGLC only).
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0A",
            // All-zero ids.
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            // Version ff is invalid whatever follows.
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            // Version 00 is exactly 55 characters.
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-010",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            // Wrong separators, non-hex, whitespace.
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7_01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            " 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            // A later version still needs a dash after the flags.
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
        ];
        for text in bad {
            assert_eq!(parse(text), None, "{text:?}");
        }
    }

    #[test]
    fn later_versions_are_read_by_their_first_four_fields() {
        let future =
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-holds";
        let parent = parse(future).expect("a later version parses");
        assert_eq!(parent.trace_id, parse(SPEC_EXAMPLE).unwrap().trace_id);
        // Exactly 55 characters is also fine for a later version.
        assert!(parse(&SPEC_EXAMPLE.replacen("00", "01", 1)).is_some());
        // What goes on is always version 00.
        assert_eq!(parent.to_header(), SPEC_EXAMPLE);
    }

    #[test]
    fn one_traceparent_is_read_two_are_refused() {
        let mut headers = HeaderMap::new();
        assert_eq!(incoming(&headers), None);
        headers.append(TRACEPARENT, HeaderValue::from_static(SPEC_EXAMPLE));
        assert!(incoming(&headers).is_some());
        headers.append(TRACEPARENT, HeaderValue::from_static(SPEC_EXAMPLE));
        assert_eq!(incoming(&headers), None);
    }

    #[test]
    fn a_kept_trace_gets_a_new_parent_id_and_keeps_its_tracestate() {
        let parent = parse(SPEC_EXAMPLE).unwrap();
        let trace = RequestTrace::begin(Some(parent));
        let mut headers = HeaderMap::new();
        headers.insert(TRACEPARENT, HeaderValue::from_static(SPEC_EXAMPLE));
        headers.insert(TRACESTATE, HeaderValue::from_static("vendor=value"));
        trace.set_headers(&mut headers);
        let sent = incoming(&headers).expect("a valid traceparent goes upstream");
        assert_eq!(sent.trace_id, parent.trace_id);
        assert_ne!(sent.parent_id, parent.parent_id);
        assert_eq!(sent.parent_id, trace.span_id);
        assert_eq!(headers.get(TRACESTATE).unwrap(), "vendor=value");
    }

    #[test]
    fn a_new_trace_drops_the_clients_tracestate() {
        let trace = RequestTrace::begin(None);
        assert!(!trace.continued && trace.sampled);
        let mut headers = HeaderMap::new();
        headers.insert(TRACEPARENT, HeaderValue::from_static("garbage"));
        headers.insert(TRACESTATE, HeaderValue::from_static("vendor=value"));
        trace.set_headers(&mut headers);
        assert_eq!(headers.get(TRACESTATE), None);
        let sent = incoming(&headers).expect("a valid traceparent goes upstream");
        assert_eq!(sent.trace_id, trace.trace_id);
        assert_eq!(headers.get(TRACEPARENT).unwrap().len(), TRACEPARENT_LEN);
    }

    #[test]
    fn an_unsampled_trace_stays_unsampled() {
        let unsampled = parse(&SPEC_EXAMPLE.replace("-01", "-00")).unwrap();
        let trace = RequestTrace::begin(Some(unsampled));
        assert!(trace.traceparent().as_bytes().ends_with(b"-00"));
        let other = trace.with_span(SpanId([1; 8]), true);
        assert_eq!(
            other.traceparent(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0101010101010101-01"
        );
    }

    #[test]
    fn ids_are_distinct_and_never_zero() {
        let ids: std::collections::HashSet<TraceId> =
            (0..10_000).map(|_| TraceId::random()).collect();
        assert_eq!(ids.len(), 10_000);
        let spans: std::collections::HashSet<SpanId> =
            (0..10_000).map(|_| SpanId::random()).collect();
        assert_eq!(spans.len(), 10_000);
        assert!(!ids.contains(&TraceId([0; 16])) && !spans.contains(&SpanId([0; 8])));
    }

    fn any_trace_parent() -> impl Strategy<Value = TraceParent> {
        (
            any::<[u8; 16]>().prop_filter("non-zero", |id| *id != [0; 16]),
            any::<[u8; 8]>().prop_filter("non-zero", |id| *id != [0; 8]),
            any::<u8>(),
        )
            .prop_map(|(trace_id, parent_id, flags)| TraceParent {
                trace_id: TraceId(trace_id),
                parent_id: SpanId(parent_id),
                flags,
            })
    }

    proptest! {
        #[test]
        fn format_then_parse_is_the_identity(parent in any_trace_parent()) {
            let header = parent.to_header();
            prop_assert_eq!(header.len(), TRACEPARENT_LEN);
            prop_assert_eq!(TraceParent::parse(header.as_bytes()), Some(parent));
        }

        #[test]
        fn any_changed_character_that_breaks_the_grammar_is_refused(
            parent in any_trace_parent(),
            at in 0..TRACEPARENT_LEN,
            with in any::<u8>(),
        ) {
            let mut text = parent.to_header().as_bytes().to_vec();
            text[at] = with;
            let grammar_ok = match at {
                2 | 35 | 52 => with == b'-',
                _ => matches!(with, b'0'..=b'9' | b'a'..=b'f'),
            };
            let parsed = TraceParent::parse(&text);
            if !grammar_ok {
                prop_assert_eq!(parsed, None, "{:?}", String::from_utf8_lossy(&text));
            } else if let Some(p) = parsed {
                // Still well-formed: it reads back as what it says.
                let back = p.to_header();
                prop_assert_eq!(&back.as_bytes()[3..], &text[3..]);
            }
        }

        #[test]
        fn wrong_lengths_of_version_00_are_refused(
            parent in any_trace_parent(),
            cut in 0..TRACEPARENT_LEN,
            extra in "[-0-9a-z]{1,20}",
        ) {
            let text = parent.to_header().as_bytes().to_vec();
            prop_assert_eq!(TraceParent::parse(&text[..cut]), None);
            let mut longer = text.clone();
            longer.extend_from_slice(extra.as_bytes());
            prop_assert_eq!(TraceParent::parse(&longer), None);
        }

        #[test]
        fn arbitrary_bytes_never_panic_and_only_valid_ones_parse(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            if let Some(p) = TraceParent::parse(&bytes) {
                prop_assert!(bytes.len() >= TRACEPARENT_LEN);
                let back = p.to_header();
                prop_assert_eq!(&back.as_bytes()[3..], &bytes[3..TRACEPARENT_LEN]);
            }
        }
    }
}
