//! W3C trace context and span export, against the `portcullis` process (its access log, its
//! process-wide span exporter, its flush at shutdown):
//!
//! - every request goes upstream with a valid `traceparent`: a valid incoming one keeps its
//!   trace id (and its `tracestate`) under a new parent id; a missing or malformed one
//!   starts a new trace (and the client's `tracestate` is dropped);
//! - the access log's `"request"` line carries the trace id that went upstream;
//! - with `[telemetry] otlp_endpoint`, an in-process OTLP/HTTP receiver gets the request's
//!   server span, its upstream call's client span and, for a request that refreshes the
//!   session at the node test IdP, the `refresh` token call's span: one trace, parents
//!   right, the upstream's `traceparent` naming the upstream span, no token, code or
//!   cookie in any attribute;
//! - without `[telemetry]`, nothing is exported (even with the standard `OTEL_EXPORTER_*`
//!   variables set) and the `traceparent` still goes upstream.
//!
//! Timings are never asserted: waits are bounded polls for what must happen.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use reqwest::header::{ACCEPT, COOKIE};
use reqwest::StatusCode;
use serde_json::{json, Value};

use common::lifecycle::{GatewaySettings, LifecycleStack};
use common::login::{query_param, Browser, SESSION_COOKIE};
use common::otlp::{OtlpReceiver, ReceivedSpan, CLIENT, SERVER};
use common::{raw_request, EchoUpstream, Echoed, Gateway};

/// The example of the W3C spec (§3.2.2.2... §3.2.3).
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const TRACESTATE: &str = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7";

/// A `traceparent` as the upstream received it: (trace id, parent id, flags). Panics unless
/// it is one valid version-00 value, lowercase hex, non-zero ids.
fn parse_traceparent(value: &str) -> (String, String, String) {
    let parts: Vec<&str> = value.split('-').collect();
    assert_eq!(
        value.len(),
        55,
        "traceparent {value:?} is not 55 characters"
    );
    assert_eq!(parts.len(), 4, "{value:?}");
    assert_eq!(parts[0], "00", "{value:?}");
    let lower_hex = |s: &str| s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    assert!(parts[1..].iter().all(|p| lower_hex(p)), "{value:?}");
    assert_eq!(
        (parts[1].len(), parts[2].len(), parts[3].len()),
        (32, 16, 2)
    );
    assert!(
        parts[1].bytes().any(|b| b != b'0'),
        "zero trace id: {value}"
    );
    assert!(
        parts[2].bytes().any(|b| b != b'0'),
        "zero parent id: {value}"
    );
    (
        parts[1].to_string(),
        parts[2].to_string(),
        parts[3].to_string(),
    )
}

/// The one `traceparent` the upstream received, parsed.
fn upstream_trace(echo: &Echoed) -> (String, String, String) {
    let values = echo.header_all("traceparent");
    assert_eq!(values.len(), 1, "upstream traceparent values: {values:?}");
    parse_traceparent(&values[0])
}

/// A gateway process (JSON log) with one public route `/` to `upstream`, plus `extra` TOML.
fn public_config(upstream: &EchoUpstream, extra: &str) -> String {
    format!(
        r#"[server]
listen = "@LISTEN@"
public_url = "@PUBLIC_URL@"

[log]
format = "json"
filter = "info"

[[route]]
path = "/"
upstream = "{}"
public = true

{extra}"#,
        upstream.url()
    )
}

/// `GET path` through the gateway with `headers`; the upstream's echo.
async fn get_echo(gateway: &Gateway, path: &str, headers: &[(&str, &str)]) -> Echoed {
    let resp = raw_request(gateway.addr(), "GET", path, headers, "").await;
    assert_eq!(resp.status, 200, "GET {path}: {}", resp.text());
    Echoed::parse(&resp.body)
}

/// `GET path` through the gateway with `headers`; the `traceparent` the upstream got.
async fn sent_trace(
    gateway: &Gateway,
    path: &str,
    headers: &[(&str, &str)],
) -> (String, String, String) {
    upstream_trace(&get_echo(gateway, path, headers).await)
}

/// The access log's `"request"` line for `path`, waited for (lines reach the file from
/// the background writer after the response).
async fn access_line(gateway: &Gateway, path: &str) -> Value {
    let find = |log: &str| {
        log.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["message"] == "request" && v["path"] == path)
    };
    let log = gateway
        .wait_for_log(
            &format!("the access line of {path}"),
            Duration::from_secs(10),
            |log| find(log).is_some(),
        )
        .await;
    find(&log).expect("found above")
}

// ----- propagation (no span export) -----------------------------------------------------

#[tokio::test]
async fn an_incoming_traceparent_keeps_its_trace_id_under_a_new_parent_id() {
    let upstream = EchoUpstream::start().await;
    let gateway = Gateway::start(&public_config(&upstream, "")).await;
    let echo = get_echo(
        &gateway,
        "/kept",
        &[("traceparent", TRACEPARENT), ("tracestate", TRACESTATE)],
    )
    .await;
    let (trace_id, parent_id, flags) = upstream_trace(&echo);
    assert_eq!(trace_id, TRACE_ID, "the client's trace goes on");
    assert_ne!(
        parent_id, PARENT_ID,
        "the gateway's own span id is the parent"
    );
    assert_eq!(flags, "01", "the client's sampling decision is kept");
    assert_eq!(
        echo.header_all("tracestate"),
        [TRACESTATE],
        "tracestate goes on unchanged with the kept traceparent"
    );

    // The same client trace twice: two requests, two parent ids, one trace.
    let (trace_again, parent_again, _) =
        sent_trace(&gateway, "/kept-again", &[("traceparent", TRACEPARENT)]).await;
    assert_eq!(trace_again, TRACE_ID);
    assert_ne!(parent_again, parent_id);

    // An unsampled client trace stays unsampled.
    let unsampled = TRACEPARENT.replace("-01", "-00");
    let (_, _, flags) = sent_trace(&gateway, "/unsampled", &[("traceparent", &unsampled)]).await;
    assert_eq!(flags, "00");

    // A later version is read by its first four fields (W3C §4.3) and sent on as 00.
    let future = format!("{}-and-more", TRACEPARENT.replacen("00", "cc", 1));
    let (trace_id, _, _) = sent_trace(&gateway, "/future", &[("traceparent", &future)]).await;
    assert_eq!(trace_id, TRACE_ID);
}

#[tokio::test]
async fn a_missing_or_malformed_traceparent_starts_a_new_trace() {
    let upstream = EchoUpstream::start().await;
    let gateway = Gateway::start(&public_config(&upstream, "")).await;
    let malformed = [
        TRACEPARENT.to_uppercase(),
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01".to_string(),
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01".to_string(),
        TRACEPARENT.replacen("00", "ff", 1),
        format!("{TRACEPARENT}-extra"),
        TRACEPARENT[..54].to_string(),
        "garbage".to_string(),
    ];
    let mut seen = HashSet::new();
    for (i, bad) in malformed.iter().enumerate() {
        let path = format!("/malformed/{i}");
        let echo = get_echo(
            &gateway,
            &path,
            &[("traceparent", bad), ("tracestate", TRACESTATE)],
        )
        .await;
        let (trace_id, _, flags) = upstream_trace(&echo);
        assert_ne!(trace_id, TRACE_ID, "{bad:?} must not be continued");
        assert_eq!(
            flags, "01",
            "a new trace is left for the upstream to record"
        );
        assert!(
            echo.header_all("tracestate").is_empty(),
            "{bad:?}: the tracestate of a replaced traceparent must be dropped"
        );
        assert!(seen.insert(trace_id), "{bad:?}: a trace id was reused");
    }

    // Two traceparent headers could be read two ways: neither is continued.
    let two = [("traceparent", TRACEPARENT), ("traceparent", TRACEPARENT)];
    assert_ne!(sent_trace(&gateway, "/two", &two).await.0, TRACE_ID);

    // No traceparent at all: two requests, two new traces.
    let first = sent_trace(&gateway, "/none/1", &[]).await.0;
    let second = sent_trace(&gateway, "/none/2", &[]).await.0;
    assert_ne!(
        first, second,
        "two requests without a trace got the same trace id"
    );
    assert!(seen.insert(first) && seen.insert(second));
}

#[tokio::test]
async fn the_access_line_carries_the_trace_id_that_went_upstream() {
    let upstream = EchoUpstream::start().await;
    let gateway = Gateway::start(&public_config(&upstream, "")).await;

    let (fresh_trace, _, _) = sent_trace(&gateway, "/logged/fresh", &[]).await;
    let line = access_line(&gateway, "/logged/fresh").await;
    assert_eq!(line["trace_id"], fresh_trace.as_str(), "{line}");

    let kept = sent_trace(&gateway, "/logged/kept", &[("traceparent", TRACEPARENT)]).await;
    assert_eq!(kept.0, TRACE_ID);
    let line = access_line(&gateway, "/logged/kept").await;
    assert_eq!(line["trace_id"], TRACE_ID, "{line}");
}

#[tokio::test]
async fn without_telemetry_nothing_is_exported_and_traceparent_still_goes_upstream() {
    let receiver = OtlpReceiver::start().await;
    let upstream = EchoUpstream::start().await;
    // The SDK's own variables point at the receiver: only [telemetry] turns export on.
    let mut gateway = Gateway::builder(&public_config(&upstream, ""))
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url())
        .env(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            format!("{}/v1/traces", receiver.url()),
        )
        .start()
        .await;
    for i in 0..3 {
        let path = format!("/off/{i}");
        let kept = sent_trace(&gateway, &path, &[("traceparent", TRACEPARENT)]).await;
        assert_eq!(kept.0, TRACE_ID);
    }
    sent_trace(&gateway, "/off/fresh", &[]).await;
    // Shutting down flushes whatever span export holds: with it off, nothing.
    let status = gateway.stop().await;
    assert!(status.success(), "{status:?}\n{}", gateway.log_text());
    assert!(
        receiver.posts().is_empty(),
        "spans were exported without [telemetry]: {:?}",
        receiver.posts()
    );
    assert!(
        !gateway.log_text().contains("exporting spans"),
        "{}",
        gateway.log_text()
    );
}

// ----- span export ----------------------------------------------------------------------

/// The spans of one trace id.
fn in_trace<'a>(spans: &'a [ReceivedSpan], trace_id: &str) -> Vec<&'a ReceivedSpan> {
    spans.iter().filter(|s| s.trace_id == trace_id).collect()
}

fn one<'a>(
    spans: &[&'a ReceivedSpan],
    what: &str,
    pred: impl Fn(&ReceivedSpan) -> bool,
) -> &'a ReceivedSpan {
    let found: Vec<&&ReceivedSpan> = spans.iter().filter(|s| pred(s)).collect();
    assert_eq!(
        found.len(),
        1,
        "expected one {what} span, got {found:#?}\nall: {spans:#?}"
    );
    found[0]
}

/// A run of 32 or more base64url characters: the shape of an opaque token.
fn looks_like_a_token(value: &str) -> bool {
    let mut run = 0;
    for c in value.chars() {
        if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
            run += 1;
            if run >= 32 {
                return true;
            }
        } else {
            run = 0;
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_of_a_request_its_upstream_call_and_its_refresh_share_one_trace() {
    let receiver = OtlpReceiver::start().await;
    // Access tokens live 5 s; the gateway refreshes when one expires within 2 s.
    let settings = GatewaySettings {
        refresh_before: "2s".into(),
        extra_toml: format!("[telemetry]\notlp_endpoint = \"{}\"\n", receiver.url()),
        ..Default::default()
    };
    let client_secret = settings.client_secret.clone();
    let mut stack = LifecycleStack::start_process(settings, |idp| {
        idp.users(&json!({ "alice": { "email": "alice@corp.test" } }))
            .env("ACCESS_TOKEN_TTL", "5")
    })
    .await;
    assert!(stack.gateway.log_text().contains("exporting spans"));

    let browser = Browser::new();
    let login = browser.login(&stack.url(), "/start", "alice").await;
    let logged_in = Instant::now();
    let code = query_param(&login.idp.redirect, "code").expect("the callback carries a code");
    let old_token = login
        .landing
        .echo()
        .header("authorization")
        .expect("a bearer token upstream")
        .trim_start_matches("Bearer ")
        .to_string();

    // Stale from 3 s after the callback: the next request refreshes before forwarding. It
    // comes with the client's own trace.
    tokio::time::sleep_until((logged_in + Duration::from_millis(3200)).into()).await;
    let resp = common::client()
        .get(stack.url_for("/refreshing"))
        .header(COOKIE, format!("{SESSION_COOKIE}={}", login.session_cookie))
        .header(ACCEPT, "application/json")
        .header("traceparent", TRACEPARENT)
        .send()
        .await
        .expect("the stale request");
    assert_eq!(resp.status(), StatusCode::OK);
    let echo = Echoed::parse(&resp.bytes().await.unwrap());
    let new_token = echo
        .header("authorization")
        .expect("a bearer token upstream")
        .trim_start_matches("Bearer ")
        .to_string();
    assert_ne!(new_token, old_token, "the request was not refreshed");
    assert_eq!(stack.refresh_grants().await, 1);
    let (upstream_trace_id, upstream_parent, _) = upstream_trace(&echo);
    assert_eq!(upstream_trace_id, TRACE_ID);

    // Shutdown flushes what the batch processor still holds.
    let status = stack.gateway.stop().await;
    assert!(status.success(), "{status:?}\n{}", stack.gateway.log_text());
    let spans = receiver
        .wait_for_spans(
            "the refresh request's spans",
            Duration::from_secs(20),
            |spans| in_trace(spans, TRACE_ID).len() >= 3,
        )
        .await;
    let posts = receiver.posts();
    assert!(
        posts.iter().all(|p| p.method == "POST"
            && p.path == "/v1/traces"
            && p.content_type == "application/x-protobuf"),
        "{posts:?}"
    );
    assert!(
        spans.iter().all(|s| s.service_name == "portcullis"),
        "{spans:#?}"
    );

    // The stale request: server span under the client's span, upstream and refresh spans
    // under it, and the upstream's traceparent naming the upstream span.
    let trace = in_trace(&spans, TRACE_ID);
    let request = one(&trace, "request", |s| s.kind == SERVER);
    assert_eq!(request.parent_span_id, PARENT_ID, "{request:#?}");
    assert_eq!(request.attribute("url.path"), Some("/refreshing"));
    assert_eq!(request.attribute("http.response.status_code"), Some("200"));
    let upstream = one(&trace, "upstream", |s| s.kind == CLIENT && s.name == "GET");
    assert_eq!(upstream.parent_span_id, request.span_id, "{upstream:#?}");
    assert_eq!(
        upstream_parent, upstream.span_id,
        "the upstream's parent id is the upstream span"
    );
    assert_eq!(
        upstream.attribute("url.full"),
        Some(format!("{}/refreshing", stack.upstream.url()).as_str())
    );
    let refresh = one(&trace, "refresh", |s| s.name == "refresh");
    assert_eq!(refresh.kind, CLIENT);
    assert_eq!(refresh.parent_span_id, request.span_id, "{refresh:#?}");
    assert!(
        refresh
            .attribute("url.full")
            .is_some_and(|u| u.starts_with(stack.idp().issuer())),
        "{refresh:#?}"
    );
    assert_eq!(refresh.attribute("http.response.status_code"), Some("200"));

    // The callback's code exchange is a `token` span under the callback's request span.
    let token = one(&spans.iter().collect::<Vec<_>>(), "token", |s| {
        s.name == "token"
    });
    let callback = spans
        .iter()
        .find(|s| s.span_id == token.parent_span_id)
        .unwrap_or_else(|| panic!("the token call has no parent among {spans:#?}"));
    assert_eq!(callback.kind, SERVER);
    assert_eq!(callback.attribute("url.path"), Some("/oauth2/callback"));
    assert_eq!(callback.trace_id, token.trace_id);

    // Discovery at start is a trace of its own.
    let discovery = spans
        .iter()
        .find(|s| s.name == "discovery")
        .unwrap_or_else(|| panic!("no discovery span in {spans:#?}"));
    assert_eq!(discovery.parent_span_id, "", "{discovery:#?}");
    assert!(spans
        .iter()
        .filter(|s| s.trace_id == discovery.trace_id)
        .all(|s| s.kind == CLIENT));

    // Nothing secret in any attribute.
    let secrets = [
        old_token.as_str(),
        new_token.as_str(),
        login.session_cookie.as_str(),
        code.as_str(),
        client_secret.as_str(),
    ];
    for span in &spans {
        for (key, value) in &span.attributes {
            for secret in secrets {
                assert!(
                    !value.contains(secret),
                    "{key} = {value:?} holds a secret ({span:#?})"
                );
            }
            assert!(
                !value.contains('?'),
                "{key} = {value:?} carries a query ({span:#?})"
            );
            assert!(
                !looks_like_a_token(value),
                "{key} = {value:?} looks like a token ({span:#?})"
            );
        }
    }
}

#[tokio::test]
async fn a_bad_otlp_endpoint_is_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("portcullis.toml");
    std::fs::write(
        &config,
        "[telemetry]\notlp_endpoint = \"grpc://127.0.0.1:4317\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(common::bin())
        .arg("check-config")
        .arg("--config")
        .arg(&config)
        .env_remove("PORTCULLIS__TELEMETRY__OTLP_ENDPOINT")
        .output()
        .expect("run portcullis");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("telemetry.otlp_endpoint"), "{stderr}");
}
