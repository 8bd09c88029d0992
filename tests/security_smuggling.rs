//! Standing adversarial suite, part 8: request smuggling, HTTP/2 pseudo-headers and
//! WebSocket upgrades.
//!
//! HTTP/1.1 cases are written to the socket byte for byte (`raw_exchange`), since every
//! client library would fix them; HTTP/2 cases go through a naive h2c client that sends
//! header fields exactly as given (`tests/common/security_h2.rs`). Each asserts what the
//! echo upstream received: a smuggled request (path `/echo-public/smuggled`) or a smuggled
//! identity header must never arrive, and framing the gateway cannot read unambiguously
//! is a 400 (or a closed connection), never a guess (RFC 9112 §6.3, RFC 9113 §8.1.1).

mod common;

use std::time::Duration;

use common::security::*;
use common::security_h2::{h2_request, H2Outcome};

/// Path of the request a smuggling attempt hides.
const SMUGGLED: &str = "/echo-public/smuggled";

fn smuggled_arrived(stack: &Stack) -> bool {
    stack
        .echo
        .received()
        .iter()
        .any(|r| r.path.contains("smuggled"))
}

/// The gateway refused the message (400/501, or closed without a success) and nothing
/// behind it was smuggled through.
async fn assert_no_smuggling(stack: &Stack, case: &str, raw: &str) {
    let exchange = stack.exchange(raw.as_bytes()).await;
    let responses = exchange.responses();
    let statuses: Vec<u16> = responses.iter().map(|r| r.status).collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !smuggled_arrived(stack),
        "{case}: SMUGGLED request reached the upstream; responses {statuses:?}\n{}",
        exchange.text()
    );
    assert!(
        statuses.first().is_none_or(|s| matches!(s, 400 | 501)),
        "{case}: must be refused (400/501), got {statuses:?}\n{}",
        exchange.text()
    );
    assert!(
        statuses.len() <= 1,
        "{case}: more than one response: {statuses:?}"
    );
}

fn host(stack: &Stack) -> String {
    stack.host()
}

// ----- Content-Length / Transfer-Encoding --------------------------------------------

/// RFC 9112 §6.3 item 3 (both `Content-Length` and `Transfer-Encoding`: smuggling,
/// handle as an error or by TE and then close) — the classic CL.TE desync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_with_transfer_encoding_smuggles_nothing() {
    let stack = Stack::light().await;
    let case = "content_length_with_transfer_encoding_smuggles_nothing";
    let h = host(&stack);
    let raw = format!(
        "POST /echo-public/a HTTP/1.1\r\nHost: {h}\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET {SMUGGLED} HTTP/1.1\r\nHost: {h}\r\n\r\n"
    );
    let exchange = stack.exchange(raw.as_bytes()).await;
    let statuses: Vec<u16> = exchange.responses().iter().map(|r| r.status).collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !smuggled_arrived(&stack),
        "{case}: SMUGGLED: {statuses:?}\n{}",
        exchange.text()
    );
    assert!(
        statuses.len() <= 1,
        "{case}: the connection must close after such a message: {statuses:?}"
    );
}

/// RFC 9112 §6.3 item 3, TE.CL order (`Transfer-Encoding` first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_encoding_with_content_length_smuggles_nothing() {
    let stack = Stack::light().await;
    let case = "transfer_encoding_with_content_length_smuggles_nothing";
    let h = host(&stack);
    let inner = format!("GET {SMUGGLED} HTTP/1.1\r\nHost: {h}\r\n\r\n");
    let raw = format!(
        "POST /echo-public/a HTTP/1.1\r\nHost: {h}\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n{:x}\r\n{inner}\r\n0\r\n\r\n",
        inner.len()
    );
    let exchange = stack.exchange(raw.as_bytes()).await;
    let statuses: Vec<u16> = exchange.responses().iter().map(|r| r.status).collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !smuggled_arrived(&stack),
        "{case}: SMUGGLED: {statuses:?}\n{}",
        exchange.text()
    );
    assert!(statuses.len() <= 1, "{case}: {statuses:?}");
}

/// RFC 9112 §6.3 item 5 (differing `Content-Length` values are unrecoverable: 400).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicting_content_lengths_are_refused() {
    let stack = Stack::light().await;
    let h = host(&stack);
    let raw = format!("POST /echo-public/a HTTP/1.1\r\nHost: {h}\r\nContent-Length: 3\r\nContent-Length: 40\r\n\r\nabcGET {SMUGGLED} HTTP/1.1\r\nHost: {h}\r\n\r\n");
    assert_no_smuggling(&stack, "conflicting_content_lengths_are_refused", &raw).await;
}

/// RFC 9112 §6.3 item 5: a list `Content-Length: 3, 40`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_list_is_refused() {
    let stack = Stack::light().await;
    let h = host(&stack);
    let raw = format!("POST /echo-public/a HTTP/1.1\r\nHost: {h}\r\nContent-Length: 3, 40\r\n\r\nabcGET {SMUGGLED} HTTP/1.1\r\nHost: {h}\r\n\r\n");
    assert_no_smuggling(&stack, "content_length_list_is_refused", &raw).await;
}

/// RFC 9110 §8.6 (`Content-Length = 1*DIGIT`): signs and hex are invalid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_decimal_content_lengths_are_refused() {
    let stack = Stack::light().await;
    let h = host(&stack);
    for value in ["+3", "-1", "0x3", "3a"] {
        let raw = format!("POST /echo-public/a HTTP/1.1\r\nHost: {h}\r\nContent-Length: {value}\r\n\r\nabcGET {SMUGGLED} HTTP/1.1\r\nHost: {h}\r\n\r\n");
        assert_no_smuggling(
            &stack,
            &format!("non_decimal_content_lengths_are_refused ({value})"),
            &raw,
        )
        .await;
    }
}

/// RFC 9112 §6.1 (an unknown transfer coding: 501) — `xchunked` must not be read as
/// chunked by one hop and as raw by another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_transfer_coding_is_refused() {
    let stack = Stack::light().await;
    let h = host(&stack);
    let raw = format!("POST /echo-public/a HTTP/1.1\r\nHost: {h}\r\nTransfer-Encoding: xchunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\nGET {SMUGGLED} HTTP/1.1\r\nHost: {h}\r\n\r\n");
    assert_no_smuggling(&stack, "unknown_transfer_coding_is_refused", &raw).await;
}

/// RFC 9112 §6.3 item 4 (chunked not the final coding of a request: 400, close).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_that_is_not_the_final_coding_is_refused() {
    let stack = Stack::light().await;
    let h = host(&stack);
    let raw = format!("POST /echo-public/a HTTP/1.1\r\nHost: {h}\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\nGET {SMUGGLED} HTTP/1.1\r\nHost: {h}\r\n\r\n");
    assert_no_smuggling(
        &stack,
        "chunked_that_is_not_the_final_coding_is_refused",
        &raw,
    )
    .await;
}

/// RFC 9112 §5.1 ("No whitespace is allowed between the field name and colon ... MUST
/// reject with 400"): `Transfer-Encoding : chunked`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whitespace_before_colon_is_refused() {
    let stack = Stack::light().await;
    let h = host(&stack);
    let raw = format!("POST /echo-public/a HTTP/1.1\r\nHost: {h}\r\nTransfer-Encoding : chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\nGET {SMUGGLED} HTTP/1.1\r\nHost: {h}\r\n\r\n");
    assert_no_smuggling(&stack, "whitespace_before_colon_is_refused", &raw).await;
}

/// RFC 9112 §6.1 (an HTTP/1.0 message with `Transfer-Encoding` has faulty framing: treat
/// as such and close).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_encoding_in_http10_smuggles_nothing() {
    let stack = Stack::light().await;
    let case = "transfer_encoding_in_http10_smuggles_nothing";
    let h = host(&stack);
    let raw = format!("POST /echo-public/a HTTP/1.0\r\nHost: {h}\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\n0\r\n\r\nGET {SMUGGLED} HTTP/1.1\r\nHost: {h}\r\n\r\n");
    let exchange = stack.exchange(raw.as_bytes()).await;
    let statuses: Vec<u16> = exchange.responses().iter().map(|r| r.status).collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !smuggled_arrived(&stack),
        "{case}: SMUGGLED {statuses:?}\n{}",
        exchange.text()
    );
    assert!(statuses.len() <= 1, "{case}: {statuses:?}");
}

// ----- header syntax -----------------------------------------------------------------

/// RFC 9112 §5.2 (obs-fold: reject with 400, or replace with SP): a folded line must not
/// become a header of its own upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn obs_fold_does_not_smuggle_a_header() {
    let stack = Stack::light().await;
    let case = "obs_fold_does_not_smuggle_a_header";
    let h = host(&stack);
    let raw = format!("GET /echo-public/fold HTTP/1.1\r\nHost: {h}\r\nX-Note: a\r\n X-Forwarded-User: admin\r\nConnection: close\r\n\r\n");
    let reply = stack.send_bytes(raw.as_bytes()).await;
    for r in stack.echo.received() {
        assert!(
            r.header_all("x-forwarded-user").is_empty(),
            "{case}: SMUGGLED identity: {:?}",
            r.headers
        );
        assert!(
            r.header_all("x-note")
                .iter()
                .all(|v| !v.contains('\n') && !v.contains('\r')),
            "{case}: {:?}",
            r.headers
        );
    }
    assert_eq!(reply.status, 400, "{case}: obs-fold is refused\n{reply}");
}

/// RFC 9112 §2.2 (a bare CR MUST be treated as invalid or replaced) and Envoy
/// CVE-2019-18802 (whitespace tricks in values): a bare CR inside a value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_cr_in_a_header_value_is_refused() {
    let stack = Stack::light().await;
    let case = "bare_cr_in_a_header_value_is_refused";
    let h = host(&stack);
    let raw = format!("GET /echo-public/cr HTTP/1.1\r\nHost: {h}\r\nX-Note: a\rX-Forwarded-User: admin\r\nConnection: close\r\n\r\n");
    let reply = stack.send_bytes(raw.as_bytes()).await;
    assert!(
        stack
            .echo
            .received()
            .iter()
            .all(|r| r.header_all("x-forwarded-user").is_empty()),
        "{case}: SMUGGLED"
    );
    assert_eq!(reply.status, 400, "{case}\n{reply}");
}

/// Envoy CVE-2019-9900 (NUL in header values bypassed matchers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_in_a_header_value_is_refused() {
    let stack = Stack::light().await;
    let h = host(&stack);
    let raw = format!(
        "GET /echo-public/nul HTTP/1.1\r\nHost: {h}\r\nX-Note: a\0b\r\nConnection: close\r\n\r\n"
    );
    let traffic = stack.upstream_traffic();
    let reply = stack.send_bytes(raw.as_bytes()).await;
    assert_eq!(
        reply.status, 400,
        "nul_in_a_header_value_is_refused\n{reply}"
    );
    assert_eq!(
        stack.upstream_traffic(),
        traffic,
        "nul_in_a_header_value_is_refused: forwarded"
    );
}

/// RFC 9112 §2.3 (the HTTP-version is case-sensitive) and §3 (one SP between parts):
/// malformed request lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_request_lines_are_refused() {
    let stack = Stack::light().await;
    let h = host(&stack);
    let traffic = stack.upstream_traffic();
    for line in [
        "GET /echo-public/a http/1.1",
        "GET /echo-public/a HTTP/1.1 extra",
        "GET  /echo-public/a HTTP/1.1",
        "GET /echo-public/a HTTP/9.9",
    ] {
        let raw = format!("{line}\r\nHost: {h}\r\nConnection: close\r\n\r\n");
        let reply = stack.send_bytes(raw.as_bytes()).await;
        assert!(
            matches!(reply.status, 0 | 400 | 505),
            "malformed_request_lines_are_refused: {line:?}\n{reply}"
        );
    }
    assert_eq!(
        stack.upstream_traffic(),
        traffic,
        "malformed_request_lines_are_refused: forwarded"
    );
}

// ----- chunked bodies ----------------------------------------------------------------

/// RFC 9112 §7.1 (`chunk-size = 1*HEXDIG`): a non-hex size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_chunk_size_smuggles_nothing() {
    let stack = Stack::light().await;
    let h = host(&stack);
    let raw = format!("POST /echo-public/a HTTP/1.1\r\nHost: {h}\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\nGET {SMUGGLED} HTTP/1.1\r\nHost: {h}\r\n\r\n");
    assert_no_smuggling(&stack, "invalid_chunk_size_smuggles_nothing", &raw).await;
}

/// RFC 9112 §7.1 ("recipients MUST anticipate potentially large hexadecimal numerals and
/// prevent parsing errors due to integer conversion overflows").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overflowing_chunk_size_smuggles_nothing() {
    let stack = Stack::light().await;
    let h = host(&stack);
    let raw = format!("POST /echo-public/a HTTP/1.1\r\nHost: {h}\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000005\r\nhello\r\n0\r\n\r\nGET {SMUGGLED} HTTP/1.1\r\nHost: {h}\r\n\r\n");
    assert_no_smuggling(&stack, "overflowing_chunk_size_smuggles_nothing", &raw).await;
}

/// RFC 9112 §7.1 (chunk data is followed by CRLF): a chunk longer than its size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunk_overrunning_its_size_smuggles_nothing() {
    let stack = Stack::light().await;
    let h = host(&stack);
    let raw = format!("POST /echo-public/a HTTP/1.1\r\nHost: {h}\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhelloGET {SMUGGLED} HTTP/1.1\r\nHost: {h}\r\n\r\n0\r\n\r\n");
    let exchange = stack.exchange(raw.as_bytes()).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !smuggled_arrived(&stack),
        "chunk_overrunning_its_size_smuggles_nothing: SMUGGLED\n{}",
        exchange.text()
    );
    let statuses: Vec<u16> = exchange.responses().iter().map(|r| r.status).collect();
    assert!(
        !statuses.contains(&200),
        "chunk_overrunning_its_size_smuggles_nothing: accepted: {statuses:?}"
    );
}

/// RFC 9112 §6.3 (the body is exactly `Content-Length` bytes): a body that looks like a
/// request stays a body — the upstream gets one request with those bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_that_looks_like_a_request_stays_a_body() {
    let stack = Stack::light().await;
    let case = "body_that_looks_like_a_request_stays_a_body";
    let h = host(&stack);
    let body = format!("GET {SMUGGLED} HTTP/1.1\r\nHost: {h}\r\n\r\n");
    let raw = format!("POST /echo-public/upload HTTP/1.1\r\nHost: {h}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
    let reply = stack.send_bytes(raw.as_bytes()).await;
    let echo = echoed(case, &reply);
    assert_eq!(echo.body_len, body.len() as u64, "{case}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        stack.echo.received().len(),
        1,
        "{case}: the upstream got more than one request"
    );
    assert!(!smuggled_arrived(&stack), "{case}: SMUGGLED");
}

// ----- connection state --------------------------------------------------------------

/// James Kettle, "Browser-Powered Desync Attacks" (2022; connection-state attacks): on a
/// kept-alive connection, the second request is judged on its own — a session on the
/// first does not sign in the second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_request_does_not_inherit_the_previous_session() {
    let stack = Stack::full().await;
    let case = "pipelined_request_does_not_inherit_the_previous_session";
    let eve = stack.login("eve").await;
    let h = host(&stack);
    let cookie = eve.cookie_header();
    let before = stack.echo.received().len();
    let raw = format!(
        "GET /echo/first HTTP/1.1\r\nHost: {h}\r\nCookie: {cookie}\r\n\r\nGET /echo/second HTTP/1.1\r\nHost: {h}\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
    );
    let exchange = stack.exchange(raw.as_bytes()).await;
    let statuses: Vec<u16> = exchange.responses().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 401], "{case}\n{}", exchange.text());
    let paths: Vec<String> = stack.echo.received()[before..]
        .iter()
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(
        paths,
        ["/echo/first"],
        "{case}: only the signed-in request reaches the upstream"
    );
}

/// James Kettle, "Browser-Powered Desync Attacks" (2022), without a session: a public
/// request first does not open the protected
/// one after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_public_request_does_not_open_the_next() {
    let stack = Stack::light().await;
    let h = host(&stack);
    let raw = format!("GET /public/x HTTP/1.1\r\nHost: {h}\r\n\r\nGET /secret HTTP/1.1\r\nHost: {h}\r\nAccept: text/html\r\nConnection: close\r\n\r\n");
    let exchange = stack.exchange(raw.as_bytes()).await;
    let responses = exchange.responses();
    let statuses: Vec<u16> = responses.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        [200, 302],
        "keep_alive_public_request_does_not_open_the_next\n{}",
        exchange.text()
    );
    assert!(
        !responses[1].text().contains(PROTECTED),
        "keep_alive_public_request_does_not_open_the_next: BYPASS"
    );
}

/// RFC 9110 §10.1.1 (a server may answer `Expect: 100-continue` with the final status):
/// a protected POST without a session is refused before any body reaches the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_continue_without_session_reaches_nothing() {
    let stack = Stack::light().await;
    let case = "expect_continue_without_session_reaches_nothing";
    let h = host(&stack);
    let raw = format!("POST /echo/upload HTTP/1.1\r\nHost: {h}\r\nContent-Length: 5\r\nExpect: 100-continue\r\nAccept: application/json\r\n\r\n");
    let exchange = stack.exchange(raw.as_bytes()).await;
    let statuses: Vec<u16> = exchange.responses().iter().map(|r| r.status).collect();
    assert!(
        statuses.contains(&401),
        "{case}: {statuses:?}\n{}",
        exchange.text()
    );
    assert!(
        stack.echo.received().is_empty(),
        "{case}: reached the upstream"
    );
}

// ----- HTTP/2 pseudo-headers and fields ----------------------------------------------

async fn h2_refused(
    case: &str,
    fields: &[(&str, &str)],
    body: Option<&[u8]>,
) -> (Stack, H2Outcome) {
    let stack = Stack::light().await;
    let traffic = stack.upstream_traffic();
    let authority = stack.host();
    let fields: Vec<(&str, &str)> = fields
        .iter()
        .map(|(n, v)| {
            (
                *n,
                if *v == "@AUTHORITY@" {
                    authority.as_str()
                } else {
                    *v
                },
            )
        })
        .collect();
    let out = h2_request(stack.addr(), &fields, body).await;
    assert!(
        !out.body_text().contains(PROTECTED),
        "{case}: BYPASS: {out:?}"
    );
    assert!(
        out.refused(),
        "{case}: a malformed h2 request must be refused: {out:?} ({})",
        out.body_text()
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        stack.upstream_traffic(),
        traffic,
        "{case}: reached an upstream"
    );
    (stack, out)
}

/// RFC 9113 §8.3.1 (exactly one `:path`): two of them, public then protected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_duplicate_path_pseudo_header_is_refused() {
    h2_refused(
        "h2_duplicate_path_pseudo_header_is_refused",
        &[
            (":method", "GET"),
            (":scheme", "http"),
            (":authority", "@AUTHORITY@"),
            (":path", "/public/x"),
            (":path", "/secret"),
        ],
        None,
    )
    .await;
}

/// RFC 9113 §8.3.1: no `:path` at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_missing_path_pseudo_header_is_refused() {
    h2_refused(
        "h2_missing_path_pseudo_header_is_refused",
        &[
            (":method", "GET"),
            (":scheme", "http"),
            (":authority", "@AUTHORITY@"),
        ],
        None,
    )
    .await;
}

/// RFC 9113 §8.3 (pseudo-headers come first): `:path` after a regular field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_pseudo_header_after_a_regular_field_is_refused() {
    h2_refused(
        "h2_pseudo_header_after_a_regular_field_is_refused",
        &[
            (":method", "GET"),
            (":scheme", "http"),
            (":authority", "@AUTHORITY@"),
            ("accept", "*/*"),
            (":path", "/public/x"),
        ],
        None,
    )
    .await;
}

/// RFC 9113 §8.3 (unknown pseudo-headers make the request malformed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_unknown_pseudo_header_is_refused() {
    h2_refused(
        "h2_unknown_pseudo_header_is_refused",
        &[
            (":method", "GET"),
            (":scheme", "http"),
            (":authority", "@AUTHORITY@"),
            (":path", "/public/x"),
            (":original-path", "/secret"),
        ],
        None,
    )
    .await;
}

/// RFC 9113 §8.2.1 (field names are lowercase): an upper-case `X-Forwarded-User`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_uppercase_field_name_is_refused() {
    h2_refused(
        "h2_uppercase_field_name_is_refused",
        &[
            (":method", "GET"),
            (":scheme", "http"),
            (":authority", "@AUTHORITY@"),
            (":path", "/echo-public/x"),
            ("X-Forwarded-User", "admin"),
        ],
        None,
    )
    .await;
}

/// RFC 9113 §8.2.1 (CR, LF, NUL in a value make the request malformed): a value that
/// would become a second header line on an HTTP/1.1 upstream connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_crlf_in_a_field_value_is_refused() {
    let (stack, _) = h2_refused(
        "h2_crlf_in_a_field_value_is_refused",
        &[
            (":method", "GET"),
            (":scheme", "http"),
            (":authority", "@AUTHORITY@"),
            (":path", "/echo-public/x"),
            ("x-note", "a\r\nx-forwarded-user: admin"),
        ],
        None,
    )
    .await;
    assert!(
        stack
            .echo
            .received()
            .iter()
            .all(|r| r.header_all("x-forwarded-user").is_empty()),
        "h2_crlf_in_a_field_value_is_refused: SMUGGLED"
    );
}

/// RFC 9113 §8.2.2 (connection-specific fields are malformed in HTTP/2):
/// `transfer-encoding: chunked`, the h2-to-h1 desync of James Kettle's "HTTP/2: The
/// Sequel is Always Worse" (2021).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_transfer_encoding_is_refused() {
    h2_refused(
        "h2_transfer_encoding_is_refused",
        &[
            (":method", "POST"),
            (":scheme", "http"),
            (":authority", "@AUTHORITY@"),
            (":path", "/echo-public/x"),
            ("transfer-encoding", "chunked"),
        ],
        Some(b"0\r\n\r\nGET /echo-public/smuggled HTTP/1.1\r\nHost: x\r\n\r\n"),
    )
    .await;
}

/// RFC 9113 §8.2.2: `connection` and `te` other than `trailers`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_connection_specific_fields_are_refused() {
    h2_refused(
        "h2_connection_specific_fields_are_refused (connection)",
        &[
            (":method", "GET"),
            (":scheme", "http"),
            (":authority", "@AUTHORITY@"),
            (":path", "/echo-public/x"),
            ("connection", "keep-alive"),
        ],
        None,
    )
    .await;
    h2_refused(
        "h2_connection_specific_fields_are_refused (te)",
        &[
            (":method", "GET"),
            (":scheme", "http"),
            (":authority", "@AUTHORITY@"),
            (":path", "/echo-public/x"),
            ("te", "gzip"),
        ],
        None,
    )
    .await;
}

/// RFC 9113 §8.1.1 (`content-length` that does not match the DATA is malformed) — the
/// H2.CL desync of "HTTP/2: The Sequel is Always Worse".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_content_length_mismatch_smuggles_nothing() {
    let stack = Stack::light().await;
    let case = "h2_content_length_mismatch_smuggles_nothing";
    let authority = stack.host();
    let body = format!("GET {SMUGGLED} HTTP/1.1\r\nHost: {authority}\r\n\r\n");
    let out = h2_request(
        stack.addr(),
        &[
            (":method", "POST"),
            (":scheme", "http"),
            (":authority", &authority),
            (":path", "/echo-public/x"),
            ("content-length", "0"),
        ],
        Some(body.as_bytes()),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!smuggled_arrived(&stack), "{case}: SMUGGLED: {out:?}");
    assert!(
        out.status != Some(200)
            || stack
                .echo
                .received()
                .iter()
                .all(|r| r.path == "/echo-public/x"),
        "{case}: {out:?}"
    );
}

/// RFC 9113 §8.3.1 (`:path` must be origin-form, starting with `/`, except `*` for
/// OPTIONS).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_path_without_leading_slash_is_refused() {
    h2_refused(
        "h2_path_without_leading_slash_is_refused",
        &[
            (":method", "GET"),
            (":scheme", "http"),
            (":authority", "@AUTHORITY@"),
            (":path", "public/../secret"),
        ],
        None,
    )
    .await;
}

// ----- WebSocket and upgrades --------------------------------------------------------

fn websocket_headers<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut headers = vec![
        ("connection", "Upgrade"),
        ("upgrade", "websocket"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];
    headers.extend_from_slice(extra);
    headers
}

/// RFC 6455 §10.5 (the server authenticates the handshake) and Cross-Site WebSocket
/// Hijacking: an upgrade to a protected route without a session gets 401, no 101, and
/// never reaches the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_without_session_is_refused() {
    let stack = Stack::light().await;
    let case = "websocket_upgrade_without_session_is_refused";
    let reply = stack
        .request(
            "GET",
            "/echo/ws",
            &websocket_headers(&[("origin", "https://evil.test")]),
        )
        .await;
    assert_eq!(reply.status, 401, "{case}\n{reply}");
    assert!(
        stack.echo.received().is_empty(),
        "{case}: the handshake reached the upstream"
    );
}

/// Envoy CVE-2021-29492 on the upgrade path: an ambiguous target is refused before any
/// upgrade.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_with_ambiguous_path_is_refused() {
    let stack = Stack::light().await;
    let headers = websocket_headers(&[]);
    assert_refused(
        &stack,
        "websocket_upgrade_with_ambiguous_path_is_refused",
        "GET",
        "/echo-public/..%2fecho/ws",
        &headers,
        None,
        true,
    )
    .await;
}

/// RFC 6455 §4 (README: upgrades are proxied end to end), control: a WebSocket on a
/// public route is upgraded end to end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_on_a_public_route_still_works() {
    let stack = Stack::light().await;
    let headers = websocket_headers(&[]);
    let reply = stack.request("GET", "/echo-public/ws", &headers).await;
    assert_eq!(
        reply.status, 101,
        "websocket_on_a_public_route_still_works\n{reply}"
    );
}

/// RFC 6455 §4.1 + RFC 9700 §4.13: with a session the handshake reaches the upstream
/// with the gateway's identity, and a forged identity in the handshake is replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_with_session_carries_only_the_gateways_identity() {
    let stack = Stack::full().await;
    let case = "websocket_with_session_carries_only_the_gateways_identity";
    let eve = stack.login("eve").await;
    let cookie = eve.cookie_header();
    let before = stack.echo.received().len();
    let headers = websocket_headers(&[
        ("cookie", &cookie),
        ("x-forwarded-user", "admin"),
        ("x_forwarded_user", "admin"),
    ]);
    let reply = stack.request("GET", "/echo/ws", &headers).await;
    assert_eq!(reply.status, 101, "{case}\n{reply}");
    let handshake = &stack.echo.received()[before];
    assert_eq!(
        handshake.header_all("x-forwarded-user"),
        ["eve"],
        "{case}: {:?}",
        handshake.headers
    );
    assert!(
        handshake.header_all("x_forwarded_user").is_empty(),
        "{case}: SMUGGLED alias"
    );
    assert_eq!(
        handshake.header_all("authorization"),
        [format!("Bearer {}", eve.access_token).as_str()],
        "{case}"
    );
}

/// Bishop Fox, "h2c Smuggling: Request Smuggling Via HTTP/2 Cleartext" (2020): a client's
/// `Upgrade: h2c` must not be forwarded, or the upstream connection becomes a tunnel
/// past the gateway's checks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_upgrade_is_not_forwarded() {
    let stack = Stack::light().await;
    let case = "h2c_upgrade_is_not_forwarded";
    let reply = stack
        .request(
            "GET",
            "/echo-public/x",
            &[
                ("connection", "Upgrade, HTTP2-Settings"),
                ("upgrade", "h2c"),
                ("http2-settings", "AAMAAABkAARAAAAAAAIAAAAA"),
            ],
        )
        .await;
    assert_ne!(
        reply.status, 101,
        "{case}: the upgrade was accepted\n{reply}"
    );
    for r in stack.echo.received() {
        assert!(
            r.header_all("upgrade").is_empty() && r.header_all("http2-settings").is_empty(),
            "{case}: forwarded: {:?}",
            r.headers
        );
    }
}
