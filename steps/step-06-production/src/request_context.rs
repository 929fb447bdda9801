//! What every request carries through the server: its id, its trace, its log span, and what
//! happens when its handler panics.

use std::any::Any;
use std::borrow::Cow;
use std::convert::Infallible;
use std::future::Future;
use std::hash::BuildHasher;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::{ConnectInfo, Request};
use axum::http::header::{CONTENT_LENGTH, USER_AGENT};
use axum::http::{HeaderName, HeaderValue, Version};
use axum::response::Response;
use tower::{Layer, Service};
use tower_http::request_id::RequestId;
use tracing::Instrument;

use crate::error::ApiError;
use crate::logging::{format_latency, push_u64};
use crate::trace_context::TraceContext;

tokio::task_local! {
    /// The current request's id, for code that has no access to the request (the panic
    /// handler). Set by [`Observe`] around everything inside it.
    static REQUEST_ID: String;
}

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

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
        .get(X_REQUEST_ID)
        .is_some_and(|v| !valid(v))
    {
        request.headers_mut().remove(X_REQUEST_ID);
    }
    request
}
// ANCHOR_END: sanitize

/// Makes the id of a request that came without a (valid) one: a random-looking UUID v4, like
/// tower-http's `MakeRequestUuid`, made more cheaply. `MakeRequestUuid` asks the kernel for 16
/// random bytes on every request (a `getrandom` system call); an id needs to be unique, not
/// secret, so here the kernel is asked once, for the keys of a SipHash (std's `RandomState`),
/// and each id is the hash of a counter: unique within the process (the counter), unlikely to
/// collide across instances (the keys), and not guessable from the previous id.
#[derive(Clone, Default)]
pub struct MakeRequestId {
    keys: std::hash::RandomState,
    next: Arc<AtomicU64>,
}

impl tower_http::request_id::MakeRequestId for MakeRequestId {
    fn make_request_id<B>(&mut self, _request: &axum::http::Request<B>) -> Option<RequestId> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let high = self.keys.hash_one((n, 0u8));
        let low = self.keys.hash_one((n, 1u8));
        // The version (4) and variant (binary 10) bits of a random UUID, as RFC 9562 has them.
        const VERSION: u128 = 0xf << 76;
        const VARIANT: u128 = 0b11 << 62;
        let random = (u128::from(high) << 64) | u128::from(low);
        let bits = (random & !(VERSION | VARIANT)) | (0x4 << 76) | (0b10 << 62);
        let mut text = [0u8; 36];
        let mut digits = (0..32)
            .rev()
            .map(|i| b"0123456789abcdef"[(bits >> (4 * i)) as usize & 0xf]);
        for (at, byte) in text.iter_mut().enumerate() {
            *byte = if matches!(at, 8 | 13 | 18 | 23) {
                b'-'
            } else {
                digits.next().unwrap_or(b'0')
            };
        }
        HeaderValue::from_bytes(&text).ok().map(RequestId::new)
    }
}

// ANCHOR: observe
/// The layer that opens each request's span (request id, trace, `http.*` fields), runs the
/// request inside it, and logs one access-log line with the status, latency and response
/// size. It sits around everything but the request-id layers, so even a shed or panicked
/// request is logged with its id.
#[derive(Clone, Copy, Default)]
pub struct ObserveLayer;

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Observe<S> {
        Observe { inner }
    }
}

/// [`ObserveLayer`]'s service. Hand-written rather than `axum::middleware::from_fn`, because
/// every request goes through it: `from_fn` clones and boxes the service inside it on each
/// request (about 3 600 instructions, the measuring chapter), this boxes one future.
#[derive(Clone)]
pub struct Observe<S> {
    inner: S,
}

/// The future of a hand-written layer's service (this one, step 06's shedder, step 10's server
/// span): a response, never an error, boxed once per request.
pub type BoxFuture = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

impl<S> Service<Request> for Observe<S>
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

    fn call(&mut self, request: Request) -> BoxFuture {
        let started = Instant::now();
        let request_id = request
            .extensions()
            .get::<RequestId>()
            .and_then(|id| id.header_value().to_str().ok())
            .unwrap_or("-")
            .to_owned();
        let span = request_span(&request, &request_id);
        // The inner service starts inside the span too, in case it logs before its future runs.
        let response = span.in_scope(|| self.inner.call(request));
        let logged = async move {
            let response = response.await?;
            log_response(&response, started);
            Ok(response)
        };
        // Everything runs inside the span (so every line logged while handling the request
        // carries its fields, the access-log line included) and inside the task-local scope
        // (so the panic handler can name the request).
        Box::pin(REQUEST_ID.scope(request_id, logged).instrument(span))
    }
}

/// The access-log line. Server errors are WARNING, so they stand out in the console; the
/// cause (a panic, a store failure) has its own ERROR line. Everything else is INFO.
fn log_response(response: &Response, started: Instant) {
    let status = response.status().as_u16();
    let response_size = axum::body::HttpBody::size_hint(response.body()).exact();
    let latency = format_latency(started.elapsed());
    let latency = latency.as_str();
    if status >= 500 {
        tracing::warn!(
            http.status = status,
            http.latency = latency,
            http.response_size = response_size,
            "request finished"
        );
    } else {
        tracing::info!(
            http.status = status,
            http.latency = latency,
            http.response_size = response_size,
            "request finished"
        );
    }
}

/// The request's span: its id, its trace (when the headers carry one) and the `http.*`
/// fields the access-log line turns into Cloud Logging's `httpRequest`.
fn request_span(request: &Request, request_id: &str) -> tracing::Span {
    let header = |name: HeaderName| request.headers().get(name).and_then(|v| v.to_str().ok());
    // Each value is passed as text or a number, which the log layer copies into the span's
    // JSON once. (A `Display` value, `%value`, would be formatted through `core::fmt`: the
    // client address alone cost about 1 000 instructions that way.)
    let uri = request.uri();
    // An origin-form target (`/api/items?limit=5`, nearly every request) is already the text
    // to log; only an absolute one (`http://host/…`) is put together.
    let url: Cow<str> = match (uri.scheme(), uri.path_and_query()) {
        (None, Some(target)) => target.as_str().into(),
        _ => uri.to_string().into(),
    };
    let remote_ip = remote_ip(request).map(ip_text);
    let span = tracing::info_span!(
        "request",
        request_id,
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
        trace_sampled = tracing::field::Empty,
        http.method = request.method().as_str(),
        http.url = url.as_ref(),
        http.protocol = protocol(request.version()),
        http.user_agent = header(USER_AGENT),
        http.remote_ip = remote_ip.as_deref(),
        http.request_size = header(CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok()),
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

/// `HTTP/1.1`, as Cloud Logging's `protocol` wants it (what `Debug` prints, without `fmt`).
fn protocol(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

/// The client's address: the first `X-Forwarded-For` entry when a proxy (Cloud Run's front
/// end) put one there, else the peer of the TCP connection. Only used for logs: a client that
/// reaches the process directly can write any `X-Forwarded-For` it likes.
fn remote_ip(request: &Request) -> Option<IpAddr> {
    let forwarded = request
        .headers()
        .get(X_FORWARDED_FOR)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .and_then(|ip| ip.trim().parse::<IpAddr>().ok());
    forwarded.or_else(|| {
        let ConnectInfo(peer) = request.extensions().get::<ConnectInfo<SocketAddr>>()?;
        Some(peer.ip())
    })
}

/// `192.0.2.7` written digit by digit; IPv6, rarer and longer, through `Display`.
fn ip_text(ip: IpAddr) -> String {
    let IpAddr::V4(v4) = ip else {
        return ip.to_string();
    };
    let mut text = String::with_capacity(15);
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            text.push('.');
        }
        push_u64(&mut text, octet.into());
    }
    text
}

/// A header name made once, at compile time: looking a header up by `&str` parses the name
/// on every request.
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
// ANCHOR_END: observe

/// A response with any body (`CatchPanic`'s) as one with axum's body type.
pub fn into_axum_response<B>(response: axum::http::Response<B>) -> Response
where
    B: axum::body::HttpBody<Data = axum::body::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    response.map(axum::body::Body::new)
}

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

    /// The `httpRequest` of an access-log line logged inside `request`'s span.
    fn http_request_of(request: Request) -> serde_json::Value {
        use tracing_subscriber::layer::SubscriberExt;
        let capture = testkit::logs::Capture::default();
        let layer = crate::logging::CloudLogging::new(capture.clone(), None);
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
            let _entered = request_span(&request, "req-1").entered();
            tracing::info!(http.status = 200_u16, "request finished");
        });
        capture.json_lines()[0]["httpRequest"].clone()
    }

    #[test]
    fn the_span_logs_the_target_and_the_client_address_as_text() {
        let mut origin = Request::builder()
            .uri("/api/items?limit=5")
            .body(Body::empty())
            .expect("request");
        let peer: SocketAddr = "192.0.2.10:4711".parse().expect("address");
        origin.extensions_mut().insert(ConnectInfo(peer));
        let absolute = Request::builder()
            .uri("http://example.com/api/items?limit=5")
            .header("x-forwarded-for", " 2001:db8::1 , 10.0.0.1")
            .body(Body::empty())
            .expect("request");

        let (origin, absolute) = (http_request_of(origin), http_request_of(absolute));

        assert_eq!(origin["requestUrl"], "/api/items?limit=5");
        assert_eq!(origin["remoteIp"], "192.0.2.10");
        assert_eq!(
            absolute["requestUrl"],
            "http://example.com/api/items?limit=5"
        );
        assert_eq!(absolute["remoteIp"], "2001:db8::1");
    }

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

    #[test]
    fn a_made_request_id_is_a_fresh_uuid_v4_every_time() {
        use tower_http::request_id::MakeRequestId as _;
        let mut make = MakeRequestId::default();
        let request = Request::new(Body::empty());

        let ids: Vec<String> = (0..1000)
            .map(|_| {
                let id = make.make_request_id(&request).expect("an id");
                id.header_value().to_str().expect("ascii").to_owned()
            })
            .collect();

        for id in &ids {
            let groups: Vec<&str> = id.split('-').collect();
            let lengths: Vec<usize> = groups.iter().map(|g| g.len()).collect();
            assert_eq!(lengths, [8, 4, 4, 4, 12], "{id}");
            assert!(
                id.bytes()
                    .all(|b| b == b'-' || b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
                "{id}"
            );
            assert!(groups[2].starts_with('4'), "version 4: {id}");
            assert!(
                matches!(groups[3].as_bytes()[0], b'8' | b'9' | b'a' | b'b'),
                "variant: {id}"
            );
        }
        let distinct: std::collections::HashSet<&String> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len());
        let other = MakeRequestId::default()
            .make_request_id(&request)
            .expect("an id");
        assert_ne!(
            other.header_value(),
            ids[0].as_str(),
            "each process has its own keys"
        );
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
