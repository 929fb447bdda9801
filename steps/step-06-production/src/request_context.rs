//! What every request carries through the server: its id, its trace, its log span, and what
//! happens when its handler panics.

use std::any::Any;
use std::net::SocketAddr;
use std::time::Instant;

use axum::extract::{ConnectInfo, Request};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tower_http::request_id::RequestId;
use tracing::Instrument;

use crate::error::ApiError;
use crate::logging::format_latency;
use crate::trace_context::TraceContext;

tokio::task_local! {
    /// The current request's id, for code that has no access to the request (the panic
    /// handler). Set by [`observe`] around everything inside it.
    static REQUEST_ID: String;
}

/// The longest `X-Request-Id` accepted from a client.
pub const MAX_REQUEST_ID_LEN: usize = 128;

// ANCHOR: sanitize
/// Drops a client's `X-Request-Id` that is too long or has characters that do not belong in
/// an id, so tower-http's `SetRequestId` generates a fresh one instead. The id goes into every
/// log line and back to the client: it is client input like any other.
pub fn sanitize_request_id(mut request: Request) -> Request {
    let valid = |v: &HeaderValue| {
        let bytes = v.as_bytes();
        !bytes.is_empty()
            && bytes.len() <= MAX_REQUEST_ID_LEN
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(b))
    };
    if request
        .headers()
        .get("x-request-id")
        .is_some_and(|v| !valid(v))
    {
        request.headers_mut().remove("x-request-id");
    }
    request
}
// ANCHOR_END: sanitize

// ANCHOR: observe
/// Middleware: opens the request's span (request id, trace, `http.*` fields), runs the request
/// inside it, and logs one access-log line with the status, latency and response size.
pub async fn observe(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let request_id = request
        .extensions()
        .get::<RequestId>()
        .and_then(|id| id.header_value().to_str().ok())
        .unwrap_or("-")
        .to_owned();
    let span = request_span(&request, &request_id);

    // Everything below runs inside the span (so every line logged while handling the request
    // carries its fields) and inside the task-local scope (so the panic handler can name it).
    let response = REQUEST_ID
        .scope(request_id, next.run(request))
        .instrument(span.clone())
        .await;

    let status = response.status().as_u16();
    let response_size = axum::body::HttpBody::size_hint(response.body()).exact();
    let latency = format_latency(started.elapsed());
    // Server errors are WARNING, so they stand out in the console; the cause (a panic, a
    // store failure) has its own ERROR line. Everything else is INFO.
    span.in_scope(|| {
        if status >= 500 {
            tracing::warn!(http.status = status, http.latency = %latency, http.response_size = response_size, "request finished");
        } else {
            tracing::info!(http.status = status, http.latency = %latency, http.response_size = response_size, "request finished");
        }
    });
    response
}

/// The request's span: its id, its trace (when the headers carry one) and the `http.*`
/// fields the access-log line turns into Cloud Logging's `httpRequest`.
fn request_span(request: &Request, request_id: &str) -> tracing::Span {
    let header = |name| request.headers().get(name).and_then(|v| v.to_str().ok());
    let span = tracing::info_span!(
        "request",
        request_id,
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
        trace_sampled = tracing::field::Empty,
        http.method = %request.method(),
        http.url = %request.uri(),
        http.protocol = ?request.version(),
        http.user_agent = header("user-agent"),
        http.remote_ip = remote_ip(request).as_deref(),
        http.request_size = header("content-length").and_then(|v| v.parse::<u64>().ok()),
    );
    if let Some(trace) = TraceContext::from_headers(request.headers()) {
        span.record("trace_id", trace.trace_id.as_str());
        if let Some(span_id) = &trace.span_id {
            span.record("span_id", span_id.as_str());
        }
        span.record("trace_sampled", trace.sampled);
    }
    span
}

/// The client's address: the first `X-Forwarded-For` entry when a proxy (Cloud Run's front
/// end) put one there, else the peer of the TCP connection. Only used for logs: a client that
/// reaches the process directly can write any `X-Forwarded-For` it likes.
fn remote_ip(request: &Request) -> Option<String> {
    let forwarded = request
        .headers()
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(|ip| ip.trim())
        .filter(|ip| ip.parse::<std::net::IpAddr>().is_ok());
    match forwarded {
        Some(ip) => Some(ip.to_owned()),
        None => request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(peer)| peer.ip().to_string()),
    }
}
// ANCHOR_END: observe

// ANCHOR: panic
/// tower-http's `CatchPanicLayer` calls this with the panic's payload. The client gets a 500
/// with the request id to quote in a bug report; what went wrong stays in the log (written
/// by the panic hook, inside the request's span).
pub fn panic_response(_payload: Box<dyn Any + Send + 'static>) -> Response {
    let request_id = REQUEST_ID.try_with(|id| id.to_string()).ok();
    // Step 04's error type, as every other error: the same body, plus the request's id.
    ApiError::Internal.response(request_id)
}

/// Replaces the default panic hook (a plain-text line on stderr) with a log event, so a panic
/// is one JSON line with severity ERROR, the request id and the trace, where the rest of the
/// request's logs are.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(non-string panic payload)");
        let location = info.location().map(|l| l.to_string());
        tracing::error!(
            panic.message = message,
            panic.location = location,
            "handler panicked"
        );
    }));
}
// ANCHOR_END: panic

#[cfg(test)]
mod tests {
    use axum::body::Body;

    use axum::http::StatusCode;

    use super::*;

    fn with_id(id: &str) -> Request {
        Request::builder()
            .header("x-request-id", id)
            .body(Body::empty())
            .expect("request")
    }

    #[test]
    fn a_reasonable_client_request_id_is_kept() {
        let request = sanitize_request_id(with_id("3f2a-abc_1.2:x"));

        assert_eq!(request.headers()["x-request-id"], "3f2a-abc_1.2:x");
    }

    #[test]
    fn an_oversized_or_odd_request_id_is_dropped() {
        for bad in [
            "a".repeat(MAX_REQUEST_ID_LEN + 1).as_str(),
            "",
            "with space",
            "quote\"",
            "é",
        ] {
            let request = Request::builder()
                .header(
                    "x-request-id",
                    HeaderValue::from_bytes(bad.as_bytes()).expect("value"),
                )
                .body(Body::empty())
                .expect("request");

            let request = sanitize_request_id(request);

            assert_eq!(request.headers().get("x-request-id"), None, "{bad:?}");
        }
    }

    #[tokio::test]
    async fn the_panic_response_names_the_request_and_nothing_else() {
        let response = REQUEST_ID
            .scope("req-7".to_owned(), async {
                panic_response(Box::new("secret detail"))
            })
            .await;

        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let bytes = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .expect("body");
        let body: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
        assert_eq!(
            body,
            serde_json::json!({"error": "internal server error", "request_id": "req-7"})
        );
    }
}
