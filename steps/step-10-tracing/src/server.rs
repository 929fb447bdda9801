//! One server span per request, REST and gRPC alike, continuing the caller's trace.

use std::convert::Infallible;
use std::task::{Context, Poll};

use axum::extract::{MatchedPath, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderName, HeaderValue, Version};
use axum::response::Response;
use opentelemetry::trace::TraceContextExt;
use step_06::request_context::BoxFuture;
use tower::{Layer, Service};
use tracing::Instrument;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::telemetry;

// ANCHOR: layer
tokio::task_local! {
    /// The request's server span, as OpenTelemetry sees it: the spans below it look here to
    /// skip all their work when it is not recorded (their sampler would say no too: the same
    /// parent, the same trace id).
    static SERVER: opentelemetry::Context;
}

/// Whether the current request's server span is recorded (outside a request, yes).
pub fn recording() -> bool {
    SERVER
        .try_with(|cx| cx.span().is_recording())
        .unwrap_or(true)
}

/// The current request's server span, for what goes out of a request that is not recorded.
pub fn server_context() -> opentelemetry::Context {
    SERVER.try_with(Clone::clone).unwrap_or_default()
}

/// The layer that opens each request's server span. It goes around everything, step 06's
/// request span included, so that span (and every log line) is inside this one.
#[derive(Clone, Copy, Default)]
pub struct ServerSpanLayer;

impl<S> Layer<S> for ServerSpanLayer {
    type Service = ServerSpan<S>;

    fn layer(&self, inner: S) -> ServerSpan<S> {
        ServerSpan { inner }
    }
}

/// [`ServerSpanLayer`]'s service, hand-written like step 06's `Observe` (every request goes
/// through it).
#[derive(Clone)]
pub struct ServerSpan<S> {
    inner: S,
}

impl<S> Service<Request> for ServerSpan<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> BoxFuture {
        // Probes are asked every few seconds by the platform: traces of them are noise.
        if is_probe(request.uri().path()) {
            return Box::pin(self.inner.call(request));
        }
        // Only what OpenTelemetry reads as it builds the span is a field: fields are also
        // every log layer's to format, and most requests' spans are not even recorded.
        let span = tracing::info_span!("server", otel.kind = "server", otel.status_code = Empty);
        // The caller's trace, if it sent one; before the span starts (after, it cannot change).
        let _ = span.set_parent(telemetry::remote_parent(request.headers()));
        // Starts the span (the sampler decides now) and tells this request's `traceparent`
        // the new span's id: step 06's log span reads that header, so every log line of the
        // request carries the trace id and the span id this span is exported with.
        let ours = span.context();
        if let Some(value) = telemetry::traceparent(ours.span().span_context())
            && ours.span().span_context().is_valid()
        {
            request.headers_mut().insert(TRACEPARENT, value);
        }
        // Names and attributes only for a span that is recorded (10 % of them, by default).
        let recording = ours.span().is_recording();
        let grpc = recording && is_grpc(&request);
        if recording {
            describe(&span, &ours, &request, grpc);
        }
        let path = grpc.then(|| request.uri().path().to_owned());
        let response = span.in_scope(|| self.inner.call(request));
        let recorded = span.clone();
        let inside = async move {
            // Waits for everything inside: the span ends when the response head is ready.
            let response = response.await?;
            if recording {
                record_response(&recorded, &response, path.as_deref());
            }
            Ok(response)
        };
        Box::pin(SERVER.scope(ours, inside).instrument(span))
    }
}
// ANCHOR_END: layer

// ANCHOR: span
/// Names and describes the span as OpenTelemetry's semantic conventions have it: HTTP
/// `GET /api/items/{id}` (the route, never the path: one name per route, not per item),
/// gRPC `items.v1.ItemService/GetItem`.
/// (The span is started: its name is changed on the OpenTelemetry span, `ours`; a recorded
/// `otel.name` field would only count before the start.)
fn describe(span: &tracing::Span, ours: &opentelemetry::Context, request: &Request, grpc: bool) {
    let method = request.method().as_str();
    let path = request.uri().path();
    span.set_attribute("url.path", path.to_owned());
    span.set_attribute("network.protocol.version", protocol(request.version()));
    span.set_attribute("http.request.method", method.to_owned());
    match (grpc, rpc_parts(path)) {
        (true, Some((service, rpc))) => {
            ours.span().update_name(format!("{service}/{rpc}"));
            span.set_attribute("rpc.system", "grpc");
            span.set_attribute("rpc.service", service.to_owned());
            span.set_attribute("rpc.method", rpc.to_owned());
        }
        _ => match request.extensions().get::<MatchedPath>() {
            Some(route) => {
                ours.span()
                    .update_name(format!("{method} {}", route.as_str()));
                span.set_attribute("http.route", route.as_str().to_owned());
            }
            // No route matched (a 404): the method alone, as the conventions say.
            None => ours.span().update_name(method.to_owned()),
        },
    }
}

/// The status, and whether the span failed: a 5xx for HTTP (a 4xx is the client's error, not
/// the server's), the server-side failure codes for gRPC (`grpc_path`: the call's path).
fn record_response(span: &tracing::Span, response: &Response, grpc_path: Option<&str>) {
    let status = response.status().as_u16();
    span.set_attribute("http.response.status_code", i64::from(status));
    let failed = match grpc_path {
        Some(path) => {
            // A call that failed before any message has its status in the headers ("trailers
            // only"); one that answered has it in the trailers, after the body: 0, OK, for
            // unary calls, which answer or fail. (A stream that fails half-way is not seen.)
            let code = response
                .headers()
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u8>().ok())
                .unwrap_or(0);
            span.set_attribute("rpc.grpc.status_code", i64::from(code));
            if let (12, Some((service, _))) = (code, rpc_parts(path)) {
                // UNIMPLEMENTED: the method is whatever the client wrote; not in the name.
                span.context()
                    .span()
                    .update_name(format!("{service}/_OTHER"));
                span.set_attribute("rpc.method", "_OTHER");
            }
            matches!(code, 2 | 4 | 12 | 13 | 14 | 15).then_some(i64::from(code))
        }
        None => (status >= 500).then_some(i64::from(status)),
    };
    if let Some(code) = failed {
        span.record("otel.status_code", "error");
        span.set_attribute("error.type", code.to_string());
    }
}
// ANCHOR_END: span

const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// Step 06's probes (the paths it never sheds), and step 08's gRPC health service.
fn is_probe(path: &str) -> bool {
    step_06::shedding::never_shed(path) || path.starts_with("/grpc.health.v1.Health/")
}

fn is_grpc(request: &Request) -> bool {
    request
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|v: &HeaderValue| v.as_bytes().starts_with(b"application/grpc"))
}

/// `/items.v1.ItemService/GetItem` → (`items.v1.ItemService`, `GetItem`).
fn rpc_parts(path: &str) -> Option<(&str, &str)> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    (!service.is_empty() && !method.is_empty() && !method.contains('/'))
        .then_some((service, method))
}

fn protocol(version: Version) -> &'static str {
    match version {
        Version::HTTP_2 => "2",
        Version::HTTP_10 => "1.0",
        _ => "1.1",
    }
}
