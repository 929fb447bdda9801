//! One server span per request, REST and gRPC alike, continuing the caller's trace.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::extract::{MatchedPath, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, Version};
use axum::response::Response;
use opentelemetry::trace::TraceContextExt;
use tower::{Layer, Service};
use tracing::Instrument;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::telemetry;

// ANCHOR: layer
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

type BoxFuture = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

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
        let grpc = is_grpc(&request);
        let span = server_span(&request, grpc);
        let path = grpc.then(|| request.uri().path().to_owned());
        // The caller's trace, if it sent one; before the span starts (after, it cannot change).
        let _ = span.set_parent(telemetry::remote_parent(request.headers()));
        // Starts the span (the sampler decides now) and tells this request's `traceparent`
        // the new span's id: step 06's log span reads that header, so every log line of the
        // request carries the trace id and the span id this span is exported with.
        let ours = span.context();
        if ours.span().span_context().is_valid() {
            telemetry::inject(&ours, request.headers_mut());
        }
        let response = span.in_scope(|| self.inner.call(request));
        let recorded = span.clone();
        Box::pin(
            async move {
                // Waits for everything inside: the span ends when the response head is ready.
                let response = response.await?;
                record_response(&recorded, &response, grpc, path.as_deref().unwrap_or(""));
                Ok(response)
            }
            .instrument(span),
        )
    }
}
// ANCHOR_END: layer

// ANCHOR: span
/// The span, named and described as OpenTelemetry's semantic conventions have it: HTTP
/// `GET /api/items/{id}` (the route, never the path: one name per route, not per item),
/// gRPC `items.v1.ItemService/GetItem`.
fn server_span(request: &Request, grpc: bool) -> tracing::Span {
    let method = request.method().as_str();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str);
    let span = tracing::info_span!(
        "server",
        otel.name = Empty,
        otel.kind = "server",
        otel.status_code = Empty,
        http.request.method = method,
        http.route = Empty,
        http.response.status_code = Empty,
        url.path = request.uri().path(),
        network.protocol.version = protocol(request.version()),
        rpc.system = Empty,
        rpc.service = Empty,
        rpc.method = Empty,
        rpc.grpc.status_code = Empty,
        "error.type" = Empty,
    );
    match (grpc, rpc_parts(request.uri().path())) {
        (true, Some((service, rpc))) => {
            span.record("otel.name", format!("{service}/{rpc}"));
            span.record("rpc.system", "grpc");
            span.record("rpc.service", service);
            span.record("rpc.method", rpc);
        }
        _ => {
            match route {
                Some(route) => span.record("otel.name", format!("{method} {route}")),
                // No route matched (a 404): the method alone, as the conventions say.
                None => span.record("otel.name", method),
            };
            span.record("http.route", route);
        }
    }
    span
}

/// The status, and whether the span failed: a 5xx for HTTP (a 4xx is the client's error, not
/// the server's), the server-side failure codes for gRPC.
fn record_response(span: &tracing::Span, response: &Response, grpc: bool, path: &str) {
    let status = response.status().as_u16();
    span.record("http.response.status_code", status);
    if grpc {
        // A call that failed before any message has its status in the headers ("trailers
        // only"); one that answered has it in the trailers, after the body: 0, OK, for unary
        // calls, which answer or fail.
        let code = response
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u8>().ok())
            .unwrap_or(0);
        span.record("rpc.grpc.status_code", code);
        if let (12, Some((service, _))) = (code, rpc_parts(path)) {
            // UNIMPLEMENTED: the method is whatever the client wrote; keep it out of the name.
            span.record("otel.name", format!("{service}/_OTHER"));
            span.record("rpc.method", "_OTHER");
        }
        if matches!(code, 2 | 4 | 12 | 13 | 14 | 15) {
            span.record("otel.status_code", "error");
            span.record("error.type", code);
        }
    } else if status >= 500 {
        span.record("otel.status_code", "error");
        span.record("error.type", status);
    }
}
// ANCHOR_END: span

fn is_probe(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz") || path.starts_with("/grpc.health.v1.Health/")
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
