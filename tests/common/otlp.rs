//! `OtlpReceiver`: an in-process OTLP/HTTP collector on `127.0.0.1:0` standing in for the
//! OpenTelemetry Collector. It takes `POST /v1/traces` with an `ExportTraceServiceRequest`
//! in protobuf (what the gateway's exporter sends), answers an empty
//! `ExportTraceServiceResponse`, and keeps every span it decoded with its resource's
//! `service.name`. It records every request, whatever its path, so a test can also show
//! that nothing arrived.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use portcullis::body::Body;
use prost::Message;
use tokio::net::TcpListener;

use super::wait_until;

/// One span as the receiver decoded it; ids in lowercase hex (empty when absent).
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    pub service_name: String,
    pub name: String,
    /// `SpanKind` as OTLP numbers it: 2 server, 3 client.
    pub kind: i32,
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    /// Every attribute, its value as text.
    pub attributes: Vec<(String, String)>,
}

/// OTLP's `SPAN_KIND_SERVER`.
pub const SERVER: i32 = 2;
/// OTLP's `SPAN_KIND_CLIENT`.
pub const CLIENT: i32 = 3;

impl ReceivedSpan {
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// One request that reached the receiver.
#[derive(Debug, Clone)]
pub struct Post {
    pub method: String,
    pub path: String,
    pub content_type: String,
}

#[derive(Default)]
struct State {
    posts: Mutex<Vec<Post>>,
    spans: Mutex<Vec<ReceivedSpan>>,
}

/// The in-process collector, serving until the test's runtime ends.
pub struct OtlpReceiver {
    addr: SocketAddr,
    state: Arc<State>,
}

impl OtlpReceiver {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the OTLP receiver");
        let addr = listener.local_addr().expect("receiver local_addr");
        let state = Arc::new(State::default());
        let served = state.clone();
        portcullis::server::spawn_plain(listener, move |req| {
            let state = served.clone();
            async move { receive(&state, req).await }
        });
        OtlpReceiver { addr, state }
    }

    /// The base endpoint, as `[telemetry] otlp_endpoint` takes it.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn posts(&self) -> Vec<Post> {
        self.state.posts.lock().unwrap().clone()
    }

    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.state.spans.lock().unwrap().clone()
    }

    /// Waits (bounded) until the spans received so far satisfy `done`; returns them.
    pub async fn wait_for_spans(
        &self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> Vec<ReceivedSpan> {
        wait_until(what, timeout, || {
            let spans = self.spans();
            let ready = done(&spans);
            async move { ready.then_some(spans) }
        })
        .await
    }
}

async fn receive(state: &State, req: Request<Incoming>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    state.posts.lock().unwrap().push(Post {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        content_type: parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string(),
    });
    let Ok(body) = body.collect().await.map(|b| b.to_bytes()) else {
        return answer(StatusCode::BAD_REQUEST, Bytes::new());
    };
    if parts.uri.path() != "/v1/traces" {
        return answer(StatusCode::NOT_FOUND, Bytes::new());
    }
    let Ok(export) = ExportTraceServiceRequest::decode(body) else {
        return answer(StatusCode::BAD_REQUEST, Bytes::new());
    };
    let mut spans = state.spans.lock().unwrap();
    for resource_spans in export.resource_spans {
        let service_name = resource_spans
            .resource
            .as_ref()
            .and_then(|r| {
                r.attributes
                    .iter()
                    .find(|kv| kv.key == "service.name")
                    .map(text)
            })
            .unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                spans.push(ReceivedSpan {
                    service_name: service_name.clone(),
                    name: span.name,
                    kind: span.kind,
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    attributes: span
                        .attributes
                        .iter()
                        .map(|kv| (kv.key.clone(), text(kv)))
                        .collect(),
                });
            }
        }
    }
    answer(
        StatusCode::OK,
        ExportTraceServiceResponse::default().encode_to_vec().into(),
    )
}

fn answer(status: StatusCode, body: Bytes) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/x-protobuf")
        .body(portcullis::body::full(body))
        .unwrap()
}

/// An attribute's value as text (strings as they are, numbers and booleans printed).
fn text(kv: &KeyValue) -> String {
    match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
