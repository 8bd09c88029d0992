//! Span export over OTLP/HTTP (`[telemetry] otlp_endpoint`), with the OpenTelemetry SDK:
//! a server span per request, a client span for its upstream call, and a client span for
//! every call to the IdP, named by its kind (discovery, jwks, token, refresh, userinfo,
//! revocation). An IdP call a request causes (a refresh, the callback's code exchange) is
//! a child of that request's span, through the OpenTelemetry context the request path
//! attaches to its future (`gateway.rs`); one without a request (discovery, the JWKS at
//! start) begins a trace of its own.
//!
//! Off by default, and then free: [`spans`] is `None`, no span or context is made, and a
//! request only carries its W3C ids (`trace_context.rs`). On, finished spans queue for the
//! SDK's batch processor (its own thread; a full queue drops spans rather than slow a
//! request), which posts them through the gateway's own pooled HTTP client (rustls, the
//! operator's CA) on a small runtime of their own, so export never waits on a serving
//! thread. [`SpanExport`] (held by `main`, like the log guard) flushes them at shutdown.
//!
//! No attribute carries a token, a code or a cookie: URLs go without their query.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Uri};
use http_body_util::{BodyExt, Limited};
use opentelemetry::trace::{
    Span as _, SpanContext, SpanKind, Status, TraceContextExt, TraceFlags, TraceState, Tracer,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::{BatchSpanProcessor, SdkTracer, SdkTracerProvider, Span};
use opentelemetry_sdk::Resource;

use crate::config::{ServerConfig, TelemetryConfig};
use crate::errors::BoxError;
use crate::http_client::HttpClient;
use crate::trace_context::{RequestTrace, SpanId, TraceId, TraceParent};

/// How long one export (a batch posted to the collector) may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for the last spans to be posted.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);
/// A collector's answer is small; more is not read.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

static SPANS: OnceLock<Spans> = OnceLock::new();

/// The process's span source, when `[telemetry] otlp_endpoint` is set and [`init`] ran.
pub fn spans() -> Option<&'static Spans> {
    SPANS.get()
}

/// Makes the gateway's spans.
#[derive(Debug)]
pub struct Spans {
    tracer: SdkTracer,
}

/// Keeps the exporter running; dropping it posts the spans still queued (bounded by
/// `FLUSH_TIMEOUT`) and stops it. Hold it until serving has ended.
#[must_use = "dropping the guard stops span export: hold it until the process exits"]
pub struct SpanExport {
    provider: SdkTracerProvider,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for SpanExport {
    fn drop(&mut self) {
        if let Err(e) = self.provider.shutdown_with_timeout(FLUSH_TIMEOUT) {
            tracing::warn!(error = %e, "flushing spans at shutdown failed");
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

/// Starts span export when `[telemetry] otlp_endpoint` is set (`None` otherwise: nothing
/// is started and [`spans`] stays `None`). Call once, before the gateway is built.
pub fn init(
    telemetry: &TelemetryConfig,
    server: &ServerConfig,
) -> Result<Option<SpanExport>, BoxError> {
    let Some(url) = telemetry.traces_url() else {
        return Ok(None);
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("portcullis-otlp")
        .enable_all()
        .build()
        .map_err(|e| format!("telemetry: cannot start the span exporter's runtime: {e}"))?;
    let client = ExportClient {
        client: HttpClient::new(server.connect_timeout, EXPORT_TIMEOUT, &server.upstream_ca),
        runtime: runtime.handle().clone(),
        failing: std::sync::Arc::new(AtomicBool::new(false)),
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(url.as_str())
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|e| format!("telemetry.otlp_endpoint: {e}"))?;
    let provider = SdkTracerProvider::builder()
        .with_span_processor(BatchSpanProcessor::builder(exporter).build())
        .with_resource(
            Resource::builder()
                .with_service_name(telemetry.service_name.clone())
                .build(),
        )
        .build();
    let spans = Spans {
        tracer: opentelemetry::trace::TracerProvider::tracer(&provider, "portcullis"),
    };
    if SPANS.set(spans).is_err() {
        return Err("telemetry: span export was already started".into());
    }
    tracing::info!(otlp_endpoint = %url, service_name = %telemetry.service_name, "exporting spans");
    Ok(Some(SpanExport {
        provider,
        runtime: Some(runtime),
    }))
}

impl Spans {
    /// The request's server span: a child of the client's span when its `traceparent`
    /// was valid, else the root of a new trace. Returns the request's trace (the span's
    /// ids) and the context holding the span, to attach to the request's future.
    pub fn request(
        &self,
        incoming: Option<TraceParent>,
        method: &Method,
        path: &str,
        peer: std::net::IpAddr,
    ) -> (RequestTrace, Context) {
        let parent = match incoming {
            Some(p) => Context::new().with_remote_span_context(SpanContext::new(
                opentelemetry::trace::TraceId::from_bytes(p.trace_id.0),
                opentelemetry::trace::SpanId::from_bytes(p.parent_id.0),
                TraceFlags::new(p.flags),
                true,
                TraceState::default(),
            )),
            None => Context::new(),
        };
        let span = self.start(
            method.to_string(),
            SpanKind::Server,
            method,
            KeyValue::new("url.path", path.to_string()),
            Some(KeyValue::new("client.address", peer.to_string())),
            &parent,
        );
        let trace = RequestTrace {
            trace_id: TraceId(span.span_context().trace_id().to_bytes()),
            span_id: SpanId(span.span_context().span_id().to_bytes()),
            continued: incoming.is_some(),
            sampled: span.span_context().is_sampled(),
        };
        (trace, parent.with_span(span))
    }

    /// Ends the request's span with its status and route.
    pub fn end_request(&self, cx: &Context, status: u16, route: &str) {
        let span = cx.span();
        span.set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(status),
        ));
        if !route.is_empty() {
            span.set_attribute(KeyValue::new("portcullis.route", route.to_string()));
        }
        if status >= 500 {
            span.set_status(Status::error(""));
        }
        span.end();
    }

    /// The upstream call's client span, a child of the request's span. Its id is the
    /// parent id the upstream's `traceparent` names.
    pub fn upstream(&self, request: &Context, method: &Method, url: String) -> CallSpan {
        let url = KeyValue::new("url.full", url);
        let span = self.start(
            method.to_string(),
            SpanKind::Client,
            method,
            url,
            None,
            request,
        );
        CallSpan { span }
    }

    /// A call to the IdP, named by its kind: a child of the current request's span when a
    /// request made it, else the root of a trace of its own. The URL goes without its query.
    pub fn idp_call(&self, kind: &'static str, method: &Method, uri: &Uri) -> CallSpan {
        let url = KeyValue::new("url.full", without_query(uri));
        let span = self.start(
            kind,
            SpanKind::Client,
            method,
            url,
            None,
            &Context::current(),
        );
        CallSpan { span }
    }

    /// A span under `parent`: the method, where it went (`url.path` or `url.full`), and
    /// one more attribute if given.
    fn start(
        &self,
        name: impl Into<std::borrow::Cow<'static, str>>,
        kind: SpanKind,
        method: &Method,
        target: KeyValue,
        more: Option<KeyValue>,
        parent: &Context,
    ) -> Span {
        let method = KeyValue::new("http.request.method", method.to_string());
        self.tracer
            .span_builder(name)
            .with_kind(kind)
            .with_attributes([method, target].into_iter().chain(more))
            .start_with_context(&self.tracer, parent)
    }
}

/// A client span (upstream or IdP call), ended with the call's outcome.
pub struct CallSpan {
    span: Span,
}

impl CallSpan {
    /// The request trace as seen from this span: what the upstream's `traceparent` carries.
    pub fn trace(&self, trace: RequestTrace) -> RequestTrace {
        let cx = self.span.span_context();
        trace.with_span(SpanId(cx.span_id().to_bytes()), cx.is_sampled())
    }

    /// Ends the span: the response status, or the error's kind.
    pub fn end(mut self, outcome: Result<u16, &crate::errors::Error>) {
        match outcome {
            Ok(status) => {
                self.span.set_attribute(KeyValue::new(
                    "http.response.status_code",
                    i64::from(status),
                ));
                if status >= 500 {
                    self.span.set_status(Status::error(""));
                }
            }
            Err(e) => {
                self.span
                    .set_attribute(KeyValue::new("error.type", format!("{:?}", e.kind)));
                self.span.set_status(Status::error(""));
            }
        }
        self.span.end();
    }
}

/// `scheme://authority/path`: a query can carry a code or a token.
fn without_query(uri: &Uri) -> String {
    match (uri.scheme_str(), uri.authority()) {
        (Some(scheme), Some(authority)) => format!("{scheme}://{authority}{}", uri.path()),
        _ => uri.path().to_string(),
    }
}

/// The exporter's HTTP client: the gateway's pooled client (one HTTP stack, one TLS
/// setup), run on the exporter's own runtime, since the SDK's batch thread is not a
/// tokio thread. A collector that stops answering is logged once, and again once it is
/// back.
#[derive(Clone)]
struct ExportClient {
    client: HttpClient,
    runtime: tokio::runtime::Handle,
    failing: std::sync::Arc<AtomicBool>,
}

impl std::fmt::Debug for ExportClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ExportClient")
    }
}

impl ExportClient {
    async fn post(self, request: http::Request<Bytes>) -> Result<http::Response<Bytes>, BoxError> {
        let client = self.client.clone();
        let sent = self.runtime.spawn(async move {
            let resp = client.send(request.map(crate::body::full)).await?;
            let (parts, body) = resp.into_parts();
            let body = tokio::time::timeout(
                EXPORT_TIMEOUT,
                Limited::new(body, MAX_ANSWER_BYTES).collect(),
            )
            .await
            .map_err(|_| "the collector's answer timed out")??
            .to_bytes();
            Ok::<_, BoxError>(http::Response::from_parts(parts, body))
        });
        let result = sent.await.map_err(BoxError::from).and_then(|r| r);
        let failed = !result.as_ref().is_ok_and(|r| r.status().is_success());
        if self.failing.swap(failed, Ordering::AcqRel) != failed {
            match &result {
                Ok(resp) if failed => tracing::warn!(
                    status = resp.status().as_u16(),
                    "the OTLP collector refused spans; spans are dropped until it takes them"
                ),
                Err(e) => {
                    tracing::warn!(error = %e, "the OTLP collector cannot be reached; spans are dropped until it can")
                }
                Ok(_) => tracing::info!("the OTLP collector takes spans again"),
            }
        }
        result
    }
}

impl opentelemetry_http::HttpClient for ExportClient {
    fn send_bytes<'a, 'b>(
        &'a self,
        request: http::Request<Bytes>,
    ) -> Pin<
        Box<
            dyn Future<Output = Result<http::Response<Bytes>, opentelemetry_http::HttpError>>
                + Send
                + 'b,
        >,
    >
    where
        'a: 'b,
        Self: 'b,
    {
        Box::pin(self.clone().post(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idp_urls_lose_their_query() {
        let uri: Uri = "https://idp.test:8443/token?code=secret&x=1"
            .parse()
            .unwrap();
        assert_eq!(without_query(&uri), "https://idp.test:8443/token");
        let relative: Uri = "/jwks?x".parse().unwrap();
        assert_eq!(without_query(&relative), "/jwks");
    }
}
