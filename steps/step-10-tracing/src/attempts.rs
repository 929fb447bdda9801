//! Step 09's calls to the inventory, each attempt a client span that the inventory continues.

use bytes::Bytes;
use http::{HeaderMap, Method};
use opentelemetry::trace::TraceContextExt;
use step_09::breaker::State;
use step_09::upstream::{CallError, Observer};
use tracing::Span;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::{server, telemetry};

// ANCHOR: attempts
/// Tells step 09's client to make a span of each attempt and send its `traceparent`: a
/// retried call is two spans side by side under the request's, each with its outcome.
pub struct TracedAttempts;

impl Observer for TracedAttempts {
    fn attempt_span(&self, method: &Method, url: &str, attempt: u32, breaker: State) -> Span {
        if !server::recording() {
            // No span below one that is not recorded (see server.rs).
            return Span::none();
        }
        let span = tracing::info_span!("upstream", otel.kind = "client", otel.status_code = Empty);
        // Described only when recorded, as the server span is (see server.rs).
        let cx = span.context();
        if cx.span().is_recording() {
            cx.span().update_name(method.as_str().to_owned());
            span.set_attribute("http.request.method", method.as_str().to_owned());
            span.set_attribute("url.full", url.to_owned());
            if attempt > 1 {
                // The conventions count resends, and set it on resends only.
                span.set_attribute("http.request.resend_count", i64::from(attempt - 1));
            }
            let breaker = match breaker {
                State::Closed { .. } => "closed",
                State::Open { .. } => "open",
                State::HalfOpen => "half-open",
            };
            span.set_attribute("breaker.state", breaker);
        }
        span
    }

    fn headers(&self, headers: &mut HeaderMap) {
        // Inside the attempt's span: the upstream's spans become its children. A request
        // that is not recorded sends its server span, flag off: the upstream records nothing
        // of it either.
        let cx = match server::recording() {
            true => Span::current().context(),
            false => server::server_context(),
        };
        telemetry::inject(&cx, headers);
    }

    fn outcome(&self, span: &Span, outcome: &Result<Bytes, CallError>) {
        let error = match outcome {
            Ok(_) => {
                span.set_attribute("http.response.status_code", 200);
                return;
            }
            Err(CallError::Status(status)) => {
                span.set_attribute("http.response.status_code", i64::from(status.as_u16()));
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
        span.set_attribute("error.type", error);
    }
}
// ANCHOR_END: attempts
