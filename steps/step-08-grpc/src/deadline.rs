//! Deadlines: the client's `grpc-timeout`, or `REQUEST_TIMEOUT` when it sets none.
//!
//! A gRPC client says how long it will wait in the `grpc-timeout` header (Go's
//! `context.WithTimeout` on the client side sends it). Past that the answer is useless, so the
//! server stops working on it: the handler's future is dropped where it waits. A PostgreSQL
//! statement already sent is the exception: sqlx cannot cancel it, so it runs on in the
//! database until it ends or `DB_STATEMENT_TIMEOUT` (step 07) cancels it. tonic's own `Server`
//! reads `grpc-timeout`; this step serves gRPC with step 04's accept loop instead, so it does
//! it here, in a few lines.

use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use step_04::error::ApiError;
use tokio::time::Instant;

use crate::status::to_status;

// ANCHOR: deadline
/// When the call must be over, for handlers whose work outlives their first answer (a stream).
#[derive(Debug, Clone, Copy)]
pub struct CallDeadline(pub Instant);

/// Middleware on the gRPC routes: the call ends with `DEADLINE_EXCEEDED` at the client's
/// deadline or after `REQUEST_TIMEOUT` (`State`), whichever is sooner.
pub async fn grpc_deadline(
    State(request_timeout): State<Duration>,
    mut request: Request,
    next: Next,
) -> Response {
    let client = request
        .headers()
        .get("grpc-timeout")
        .and_then(|value| value.to_str().ok())
        .and_then(parse_grpc_timeout);
    let limit = client.map_or(request_timeout, |asked| asked.min(request_timeout));
    let deadline = Instant::now() + limit;
    request.extensions_mut().insert(CallDeadline(deadline));
    // Whichever finishes first. If the deadline does, the handler's future is dropped where it
    // is parked (a store call, a query), so the work stops, and the client hears at once.
    match tokio::time::timeout_at(deadline, next.run(request)).await {
        Ok(response) => response,
        Err(_elapsed) => to_status(ApiError::Timeout).into_http(),
    }
}

/// `grpc-timeout`: at most 8 digits and a unit, `H`ours, `M`inutes, `S`econds, `m`illi-,
/// `u` (micro-) or `n`anoseconds (gRPC's PROTOCOL-HTTP2.md). Anything else is ignored, and
/// `REQUEST_TIMEOUT` alone applies.
pub fn parse_grpc_timeout(text: &str) -> Option<Duration> {
    let digits = text.get(..text.len().checked_sub(1)?)?;
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match text.as_bytes()[text.len() - 1] {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}
// ANCHOR_END: deadline

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_is_read_as_the_protocol_writes_it() {
        assert_eq!(parse_grpc_timeout("200m"), Some(Duration::from_millis(200)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(
            parse_grpc_timeout("30000000u"),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_grpc_timeout("99999999n"),
            Some(Duration::from_nanos(99_999_999))
        );
        for bad in ["", "m", "123456789m", "1.5S", "-1S", "10s", "10", "1é"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad}");
        }
    }
}
