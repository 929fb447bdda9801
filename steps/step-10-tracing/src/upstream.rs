//! Step 09's calls to the inventory, each attempt a client span that the inventory continues.

use bytes::Bytes;
use http::{HeaderMap, Method};
use step_09::breaker::State;
use step_09::upstream::{CallError, Observer};
use tracing::Span;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::telemetry;

// ANCHOR: attempts
/// Tells step 09's client to make a span of each attempt and send its `traceparent`: a
/// retried call is two spans side by side under the request's, each with its outcome.
pub struct TracedAttempts;

impl Observer for TracedAttempts {
    fn attempt_span(&self, method: &Method, url: &str, attempt: u32, breaker: State) -> Span {
        tracing::info_span!(
            "upstream",
            otel.name = method.as_str(),
            otel.kind = "client",
            otel.status_code = Empty,
            http.request.method = method.as_str(),
            url.full = url,
            // The conventions count resends, and set it on resends only.
            http.request.resend_count = (attempt > 1).then_some(attempt - 1),
            http.response.status_code = Empty,
            breaker.state = match breaker {
                State::Closed { .. } => "closed",
                State::Open { .. } => "open",
                State::HalfOpen => "half-open",
            },
            "error.type" = Empty,
        )
    }

    fn headers(&self, headers: &mut HeaderMap) {
        // Inside the attempt's span: the upstream's spans become its children.
        telemetry::inject(&Span::current().context(), headers);
    }

    fn outcome(&self, span: &Span, outcome: &Result<Bytes, CallError>) {
        let error = match outcome {
            Ok(_) => {
                span.record("http.response.status_code", 200);
                return;
            }
            Err(CallError::Status(status)) => {
                span.record("http.response.status_code", status.as_u16());
                status.as_str().to_owned()
            }
            // Fixed names, never data: what an attempt can end with. (The other errors stop a
            // call before any attempt starts.)
            Err(CallError::Connect) => "connect".to_owned(),
            Err(CallError::TimedOut) => "timeout".to_owned(),
            Err(CallError::Broken) => "broken".to_owned(),
            Err(_) => "other".to_owned(),
        };
        span.record("otel.status_code", "error");
        span.record("error.type", error);
    }
}
// ANCHOR_END: attempts
