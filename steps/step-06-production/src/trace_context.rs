//! The trace a request belongs to, read from the headers Google's front end (and any
//! OpenTelemetry client) sends, so log lines can be correlated with Cloud Trace.
//!
//! Two formats exist: W3C `traceparent` (`00-<32 hex trace>-<16 hex span>-<2 hex flags>`) and
//! Google's older `X-Cloud-Trace-Context` (`<32 hex trace>/<decimal span>;o=<0|1>`). Both are
//! client input: anything that does not parse exactly is ignored, never trusted into the logs.

use axum::http::{HeaderMap, HeaderName};

// ANCHOR: trace_context
/// A trace id and, when the header had one, the id of the caller's span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// 32 lowercase hex digits, never all zero.
    pub trace_id: String,
    /// 16 lowercase hex digits (Cloud Logging's `spanId` format), if known.
    pub span_id: Option<String>,
    /// Whether the caller sampled this trace (so Cloud Trace has it).
    pub sampled: bool,
}

impl TraceContext {
    /// `traceparent` wins when both headers are present and valid: it is the standard one.
    pub fn from_headers(headers: &HeaderMap) -> Option<TraceContext> {
        // Names made at compile time: a `&str` name is parsed again on every lookup.
        const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
        const CLOUD_TRACE: HeaderName = HeaderName::from_static("x-cloud-trace-context");
        let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
        header(TRACEPARENT)
            .and_then(parse_traceparent)
            .or_else(|| header(CLOUD_TRACE).and_then(parse_cloud_trace_context))
    }
}

/// `00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01`
pub fn parse_traceparent(value: &str) -> Option<TraceContext> {
    let mut parts = value.trim().split('-');
    let (version, trace_id, span_id, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    // Version 00 has exactly four parts; `ff` is forbidden by the spec.
    if version != "00" || parts.next().is_some() {
        return None;
    }
    if !is_hex_id(trace_id, 32) || !is_hex_id(span_id, 16) || !is_hex(flags, 2) {
        return None;
    }
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some(TraceContext {
        trace_id: trace_id.to_owned(),
        span_id: Some(span_id.to_owned()),
        sampled: flags & 1 == 1,
    })
}

/// `105445aa7843bc8bf206b12000100000/1;o=1` (the span and the options are optional).
pub fn parse_cloud_trace_context(value: &str) -> Option<TraceContext> {
    let (ids, options) = match value.trim().split_once(';') {
        Some((ids, options)) => (ids, Some(options)),
        None => (value.trim(), None),
    };
    let (trace_id, span_id) = match ids.split_once('/') {
        Some((trace, span)) => (trace, Some(span)),
        None => (ids, None),
    };
    let trace_id = trace_id.to_ascii_lowercase();
    if !is_hex_id(&trace_id, 32) {
        return None;
    }
    // The span id is a decimal u64 here; Cloud Logging wants it as 16 hex digits.
    let span_id = match span_id {
        None | Some("") => None,
        Some(decimal) => match decimal.parse::<u64>() {
            Ok(0) | Err(_) => return None,
            // 16 hex digits, most significant first (a hand-written `{n:016x}`, on every request).
            Ok(n) => Some((0..16).rev().map(|i| hex_digit(n >> (4 * i))).collect()),
        },
    };
    let sampled = options.is_some_and(|o| o.trim() == "o=1");
    Some(TraceContext {
        trace_id,
        span_id,
        sampled,
    })
}
// ANCHOR_END: trace_context

/// The lowest four bits of `n` as a lowercase hex digit.
fn hex_digit(n: u64) -> char {
    char::from(b"0123456789abcdef"[(n & 0xf) as usize])
}

fn is_hex(text: &str, len: usize) -> bool {
    text.len() == len && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Lowercase hex of the right length and not all zeros (the spec's "invalid" id).
fn is_hex_id(text: &str, len: usize) -> bool {
    is_hex(text, len) && text.bytes().any(|b| b != b'0')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_w3c_traceparent() {
        let ctx = parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");

        assert_eq!(
            ctx,
            Some(TraceContext {
                trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
                span_id: Some("00f067aa0ba902b7".into()),
                sampled: true,
            })
        );
    }

    #[test]
    fn reads_a_cloud_trace_context_and_converts_the_span_to_hex() {
        let ctx = parse_cloud_trace_context("105445AA7843BC8BF206B12000100000/255;o=1");

        assert_eq!(
            ctx,
            Some(TraceContext {
                trace_id: "105445aa7843bc8bf206b12000100000".into(),
                span_id: Some("00000000000000ff".into()),
                sampled: true,
            })
        );
    }

    #[test]
    fn a_cloud_trace_context_may_omit_span_and_options() {
        let ctx = parse_cloud_trace_context("105445aa7843bc8bf206b12000100000").expect("valid");

        assert_eq!(ctx.span_id, None);
        assert!(!ctx.sampled);
    }

    #[test]
    fn malformed_headers_are_ignored() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-\"}{-00f067aa0ba902b7-01",
        ] {
            assert_eq!(parse_traceparent(bad), None, "{bad:?}");
        }
        for bad in [
            "",
            "not-a-trace/1;o=1",
            "105445aa7843bc8bf206b12000100000/-1",
            "105445aa/1",
        ] {
            assert_eq!(parse_cloud_trace_context(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn traceparent_wins_over_the_google_header() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-cloud-trace-context",
            "105445aa7843bc8bf206b12000100000/1;o=1"
                .parse()
                .expect("header"),
        );
        headers.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
                .parse()
                .expect("header"),
        );

        let ctx = TraceContext::from_headers(&headers).expect("a trace");

        assert_eq!(ctx.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(!ctx.sampled);
    }
}
