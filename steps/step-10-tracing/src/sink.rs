//! A stand-in collector: it receives OTLP/gRPC trace exports, as a real OpenTelemetry
//! Collector does, and keeps the spans so that a test, a benchmark or you can read them back
//! (`GET /spans` on the same port).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::routing::get;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use serde::Serialize;
use tonic::{Request, Response, Status};

/// Spans kept; past it, spans are counted and forgotten.
pub const MAX_KEPT_SPANS: usize = 100_000;

/// One span as received, with its ids in hex.
#[derive(Debug, Clone, Serialize)]
pub struct ReceivedSpan {
    pub service: String,
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a trace's first span.
    pub parent_span_id: String,
    pub name: String,
    /// OTLP's numbers: 2 server, 3 client.
    pub kind: i32,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    /// Every attribute, its value as text.
    pub attributes: BTreeMap<String, String>,
    /// Names of the span's events (step 09's log lines inside it).
    pub events: Vec<String>,
    /// OTLP's numbers: 0 unset, 1 ok, 2 error.
    pub status: i32,
}

/// The spans received so far; clones share them.
#[derive(Clone, Default)]
pub struct Sink {
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
    received: Arc<AtomicU64>,
}

impl Sink {
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.spans.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Spans received, kept or not.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// The OTLP trace service and `GET /spans`, on one port (gRPC and HTTP/1 alike).
    pub fn router(self) -> axum::Router {
        let spans = self.clone();
        tonic::service::Routes::new(TraceServiceServer::new(self))
            .into_axum_router()
            .route("/spans", get(move || async move { Json(spans.spans()) }))
    }
}

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let mut received = Vec::new();
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .map(text_of)
                .unwrap_or_default();
            let spans = resource_spans.scope_spans.into_iter().flat_map(|s| s.spans);
            received.extend(spans.map(|span| {
                ReceivedSpan {
                    service: service.clone(),
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    name: span.name,
                    kind: span.kind,
                    start_unix_nano: span.start_time_unix_nano,
                    end_unix_nano: span.end_time_unix_nano,
                    attributes: span
                        .attributes
                        .iter()
                        .map(|kv| (kv.key.clone(), text_of(kv)))
                        .collect(),
                    events: span.events.into_iter().map(|e| e.name).collect(),
                    status: span.status.map_or(0, |s| s.code),
                }
            }));
        }
        self.received
            .fetch_add(received.len() as u64, Ordering::Relaxed);
        let mut spans = self.spans.lock().unwrap_or_else(|e| e.into_inner());
        let room = MAX_KEPT_SPANS.saturating_sub(spans.len());
        spans.extend(received.into_iter().take(room));
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text_of(kv: &KeyValue) -> String {
    match kv.value.as_ref().and_then(|v: &AnyValue| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(n)) => n.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(x)) => x.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}
