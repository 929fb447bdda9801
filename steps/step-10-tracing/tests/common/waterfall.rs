//! The chapter's picture of a trace: one request's spans as a waterfall, drawn from the spans
//! a test recorded, so it shows what the code really does and cannot drift from it.
//!
//! The test that records the spans checks that the committed picture has the same rows;
//! `WATERFALL_WRITE=1` draws it again from this run (times change from run to run, the rows
//! do not).

use std::fmt::Write as _;
use std::time::SystemTime;

use opentelemetry::trace::{SpanId, SpanKind, Status};
use opentelemetry_sdk::trace::SpanData;

const PICTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../book/src/generated/trace-waterfall.svg"
);

/// Rows, parents before children, siblings by start time: (depth, span).
fn rows(spans: &[SpanData]) -> Vec<(usize, &SpanData)> {
    let ids: Vec<SpanId> = spans.iter().map(|s| s.span_context.span_id()).collect();
    let mut roots: Vec<&SpanData> = spans
        .iter()
        .filter(|s| !ids.contains(&s.parent_span_id))
        .collect();
    roots.sort_by_key(|s| s.start_time);
    let mut out = Vec::new();
    fn walk<'a>(
        span: &'a SpanData,
        depth: usize,
        all: &'a [SpanData],
        out: &mut Vec<(usize, &'a SpanData)>,
    ) {
        out.push((depth, span));
        let mut children: Vec<&SpanData> = all
            .iter()
            .filter(|s| s.parent_span_id == span.span_context.span_id())
            .collect();
        children.sort_by_key(|s| s.start_time);
        for child in children {
            walk(child, depth + 1, all, out);
        }
    }
    for root in roots {
        walk(root, 0, spans, &mut out);
    }
    out
}

/// What a row says, without times: `depth name kind status`.
fn label(depth: usize, span: &SpanData) -> String {
    let status = match span.status {
        Status::Error { .. } => ", failed",
        _ => "",
    };
    // An upstream attempt (it has a `url.full`) says which it was.
    let value = |key: &str| {
        let kv = span.attributes.iter().find(|kv| kv.key.as_str() == key)?;
        Some(kv.value.to_string())
    };
    let attempt = match (value("url.full"), value("http.request.resend_count")) {
        (Some(_), resends) => {
            let resends: u32 = resends.and_then(|r| r.parse().ok()).unwrap_or(0);
            format!(", attempt {}", resends + 1)
        }
        (None, _) => String::new(),
    };
    let kind = kind(&span.span_kind);
    format!(
        "{}{} ({kind}{attempt}{status})",
        "  ".repeat(depth),
        span.name
    )
}

fn kind(kind: &SpanKind) -> &'static str {
    match kind {
        SpanKind::Server => "server",
        SpanKind::Client => "client",
        _ => "internal",
    }
}

fn micros(from: SystemTime, to: SystemTime) -> f64 {
    to.duration_since(from)
        .map_or(0.0, |d| d.as_secs_f64() * 1e6)
}

/// The picture, as SVG.
pub fn draw(spans: &[SpanData]) -> String {
    let rows = rows(spans);
    let start = rows.iter().map(|(_, s)| s.start_time).min().expect("spans");
    let end = rows.iter().map(|(_, s)| s.end_time).max().expect("spans");
    let total = micros(start, end).max(1.0);
    let (left, width, row, top) = (250.0, 420.0, 28.0, 40.0);
    let height = top + row * rows.len() as f64 + 30.0;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<!-- Written by `WATERFALL_WRITE=1 cargo test -p step-10` (the traces test, which fails while these rows differ from the spans). -->
<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 720 {height}" width="720" height="{height}" font-family="sans-serif" font-size="12">
<title>One GET /api/items/{{id}} request, traced: the server span, its database query, and two upstream attempts</title>
<rect width="720" height="{height}" fill="white"/>
<text x="10" y="20" font-weight="bold">Span</text><text x="{left}" y="20" font-weight="bold">Time from the request's start (total {:.1} ms)</text>
"#,
        total / 1000.0
    );
    for (i, (depth, span)) in rows.iter().enumerate() {
        let y = top + row * i as f64;
        let x = left + width * micros(start, span.start_time) / total;
        let w = (width * micros(span.start_time, span.end_time) / total).max(2.0);
        let colour = match (&span.status, &span.span_kind) {
            (Status::Error { .. }, _) => "#d9534f",
            (_, SpanKind::Server) => "#4a78c2",
            _ => "#5cb85c",
        };
        let ms = micros(span.start_time, span.end_time) / 1000.0;
        // The duration after the bar; with no room after it, inside a long bar's end, or
        // before a short one.
        let (text_x, ink, anchor) = match (x + w + 4.0 > 660.0, w > 70.0) {
            (false, _) => (x + w + 4.0, "#333", "start"),
            (true, true) => (x + w - 6.0, "white", "end"),
            (true, false) => (x - 4.0, "#333", "end"),
        };
        let _ = writeln!(
            svg,
            r##"<text class="name" x="{}" y="{}">{}</text><rect x="{x:.1}" y="{}" width="{w:.1}" height="16" rx="3" fill="{colour}"/><text x="{text_x:.1}" y="{}" fill="{ink}" text-anchor="{anchor}">{ms:.2} ms</text>"##,
            10 + depth * 16,
            y + 13.0,
            escape(&label(0, span)),
            // (the indent is the x position, not spaces)
            y + 1.0,
            y + 13.0,
        );
    }
    let _ = writeln!(
        svg,
        r##"<text x="10" y="{}" fill="#555">Blue: the server span. Green: client spans (the query, each upstream attempt). Red: failed. The gap: the retry's backoff.</text>
</svg>"##,
        height - 10.0
    );
    svg
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The rows a picture shows (its `class="name"` texts).
fn rows_of(svg: &str) -> Vec<String> {
    svg.split(r#"<text class="name""#)
        .skip(1)
        .filter_map(|part| Some(part.split_once('>')?.1.split_once("</text>")?.0.to_owned()))
        .collect()
}

/// Checks that the committed picture has the rows these spans make, or draws it again when
/// `WATERFALL_WRITE=1`.
pub fn check_or_write(spans: &[SpanData]) {
    let svg = draw(spans);
    if std::env::var_os("WATERFALL_WRITE").is_some_and(|v| v == "1") {
        std::fs::write(PICTURE, &svg).expect("write the picture");
        return;
    }
    let committed = std::fs::read_to_string(PICTURE).unwrap_or_default();
    assert_eq!(
        rows_of(&committed),
        rows_of(&svg),
        "{PICTURE} shows other spans than the code makes now: run this test with \
         WATERFALL_WRITE=1, look at the picture, and commit it"
    );
}
