//! Logs that Cloud Logging understands: one JSON object per line on stdout.
//!
//! Cloud Run collects whatever a container writes to stdout and stderr. A line that is a JSON
//! object becomes a structured entry: a few keys are special (`severity`, `message`, `time`,
//! `httpRequest`, `logging.googleapis.com/trace`, `…/spanId`, `…/trace_sampled`), every other
//! key lands in `jsonPayload`, searchable. A line that is not JSON is one unstructured entry
//! with no severity at all.
//!
//! The layer below turns `tracing` events into such lines. Fields come from the event *and*
//! from every span it happened in, so a field recorded once on the request's span (the request
//! id, the trace) appears on every line logged while handling that request.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::Write;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber, span};
use tracing_appender::non_blocking::NonBlocking;
use tracing_subscriber::Layer;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

/// Human-readable lines for a terminal, or Cloud Logging JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl LogFormat {
    /// `LOG_FORMAT=json|text` decides; without it, JSON on Cloud Run (where `K_SERVICE` is
    /// always set) and text everywhere else.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<LogFormat, String> {
        match lookup("LOG_FORMAT").as_deref().map(str::trim) {
            Some("json") => Ok(LogFormat::Json),
            Some("text") => Ok(LogFormat::Text),
            Some(other) => Err(format!("LOG_FORMAT must be json or text, got {other:?}")),
            None if lookup("K_SERVICE").is_some() => Ok(LogFormat::Json),
            None => Ok(LogFormat::Text),
        }
    }
}

/// How many lines may wait for stdout before new ones are dropped (see [`init`]).
pub const LOG_BUFFER_LINES: usize = 16_384;

// ANCHOR: init
/// Installs the global subscriber. Keep the returned guard alive until the end of `main`:
/// dropping it flushes the lines still queued.
///
/// Writing never blocks a request: lines go into a bounded in-memory queue that one background
/// thread copies to stdout. If stdout cannot keep up and the queue holds
/// [`LOG_BUFFER_LINES`] lines, new lines are *dropped* (lossy mode) rather than making
/// handlers wait; [`LogHandle::dropped_lines`] counts them. Losing a log line under extreme
/// load is the lesser evil compared with latency that depends on the log pipeline.
pub fn init(format: LogFormat, project: Option<String>) -> LogHandle {
    init_with(format, project, None)
}

/// A layer a later step puts beside the log layer (step 10: the one that exports spans).
pub type ExtraLayer = Box<dyn Layer<tracing_subscriber::Registry> + Send + Sync>;

/// [`init`], with `extra` in the same subscriber, first: `RUST_LOG` filters for it too.
pub fn init_with(
    format: LogFormat,
    project: Option<String>,
    extra: Option<ExtraLayer>,
) -> LogHandle {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;

    // Batched: a burst of lines costs one write(2) (the writer thread flushes after each batch).
    let stdout = std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout());
    let (writer, guard) = non_blocking(stdout, LOG_BUFFER_LINES);
    let dropped = writer.error_counter();
    // `RUST_LOG` picks what is logged, e.g. `debug` or `info,tower_http=debug` (default: info).
    // `Targets` reads that syntax without the regular-expression engine `EnvFilter` brings.
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|directives| {
            directives
                .parse::<tracing_subscriber::filter::Targets>()
                .ok()
        })
        .unwrap_or_else(|| {
            tracing_subscriber::filter::Targets::new().with_default(tracing::Level::INFO)
        });
    let registry = tracing_subscriber::registry().with(extra).with(filter);
    match format {
        LogFormat::Json => registry.with(CloudLogging::new(writer, project)).init(),
        LogFormat::Text => {
            use std::io::IsTerminal;
            let text = tracing_subscriber::fmt::layer()
                .with_writer(writer)
                .with_ansi(
                    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
                );
            registry.with(text).init()
        }
    }
    LogHandle {
        _guard: guard,
        dropped,
    }
}

/// A writer that hands each line to a background thread writing to `out`: at most
/// `buffered_lines` wait, and beyond that new lines are dropped, never waited for.
fn non_blocking(
    out: impl Write + Send + 'static,
    buffered_lines: usize,
) -> (NonBlocking, tracing_appender::non_blocking::WorkerGuard) {
    tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(buffered_lines)
        .thread_name("log-writer")
        .finish(out)
}

/// Keeps the log writer thread alive and tells how many lines it had to drop.
pub struct LogHandle {
    _guard: tracing_appender::non_blocking::WorkerGuard,
    dropped: tracing_appender::non_blocking::ErrorCounter,
}

impl LogHandle {
    pub fn dropped_lines(&self) -> usize {
        self.dropped.dropped_lines()
    }
}
// ANCHOR_END: init

// ANCHOR: layer
/// A `tracing` layer that writes each event as one Cloud Logging JSON line.
///
/// Naming convention for request fields: `http.method`, `http.url`, `http.user_agent`,
/// `http.remote_ip`, `http.protocol`, `http.request_size` (on the request span) and
/// `http.status`, `http.latency`, `http.response_size` (on the access-log event) become the
/// `httpRequest` object — but only on events that carry an `http.*` field themselves, so
/// there is one request entry per request, not one per line. `trace_id`, `span_id` and
/// `trace_sampled` become Cloud Logging's trace fields when the project is known.
pub struct CloudLogging<W> {
    writer: W,
    project: Option<String>,
}

impl<W> CloudLogging<W> {
    pub fn new(writer: W, project: Option<String>) -> Self {
        let project = project.filter(|p| !p.trim().is_empty());
        CloudLogging { writer, project }
    }
}

impl<S, W> Layer<S> for CloudLogging<W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + 'static,
{
    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut fields = JsonFields::default();
        attrs.record(&mut fields);
        span.extensions_mut().insert(fields);
    }

    fn on_record(&self, id: &span::Id, values: &span::Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        if let Some(fields) = span.extensions_mut().get_mut::<JsonFields>() {
            values.record(fields);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut own = JsonFields::default();
        event.record(&mut own);
        // The fields of every span the event happened in, outer spans first, then the event's:
        // a later field of the same name overrides an earlier one. Values are borrowed from the
        // spans, not copied: they were rendered as JSON once, when the span recorded them.
        let spans: Vec<_> = ctx
            .event_scope(event)
            .map(|scope| scope.from_root().collect())
            .unwrap_or_default();
        let extensions: Vec<_> = spans.iter().map(|span| span.extensions()).collect();
        let mut fields: Vec<(&str, &str)> = Vec::with_capacity(24);
        let sources = extensions.iter().filter_map(|e| e.get::<JsonFields>());
        for (name, value) in sources.chain([&own]).flat_map(JsonFields::iter) {
            match fields.iter_mut().find(|(seen, _)| *seen == name) {
                Some(field) => field.1 = value,
                None => fields.push((name, value)),
            }
        }
        let is_access_log = own.iter().any(|(name, _)| name.starts_with("http."));

        let mut line = String::with_capacity(512);
        self.write_entry(&mut line, *event.metadata().level(), &fields, is_access_log);
        line.push('\n');
        // One `write_all` per line: the non-blocking writer takes it as one message, so lines
        // from concurrent requests never interleave.
        let _ = self.writer.make_writer().write_all(line.as_bytes());
    }
}

impl<W> CloudLogging<W> {
    /// Writes one entry as a JSON object straight into `line`. (A `serde_json::Map` per line,
    /// with its `String` keys and copied values, cost more than the request it described.)
    fn write_entry(&self, line: &mut String, level: Level, fields: &[(&str, &str)], access: bool) {
        line.push('{');
        let mut message = "\"\"";
        for &(name, value) in fields {
            match (name, &self.project) {
                ("message", _) => message = value,
                // `httpRequest`, below, and only on the access-log line.
                (name, _) if name.starts_with("http.") => {}
                ("trace_id", Some(project)) => {
                    // `"abc…"` → `"projects/my-project/traces/abc…"`.
                    let id = value.trim_matches('"');
                    key(line, "logging.googleapis.com/trace");
                    line.push_str("\"projects/");
                    escape_into(line, project);
                    line.push_str("/traces/");
                    line.push_str(id);
                    line.push_str("\",");
                }
                ("span_id", Some(_)) => entry(line, "logging.googleapis.com/spanId", value),
                ("trace_sampled", Some(_)) => {
                    entry(line, "logging.googleapis.com/trace_sampled", value)
                }
                (name, _) => field(line, name, value),
            }
        }
        // `httpRequest` gathers the `http.*` fields, on the access-log line only.
        if access {
            let start = line.len();
            key(line, "httpRequest");
            line.push('{');
            let http = fields
                .iter()
                .filter_map(|(name, value)| http_request_field(name.strip_prefix("http.")?, value));
            for (name, value) in http {
                entry(line, name, &value);
            }
            match line.ends_with(',') {
                true => {
                    line.pop();
                    line.push_str("},");
                }
                false => line.truncate(start), // nothing to say
            }
        }
        entry(line, "message", message);
        key(line, "severity");
        line.push('"');
        line.push_str(severity(level));
        line.push_str("\",");
        key(line, "time");
        line.push('"');
        write_time(line, time::OffsetDateTime::now_utc());
        line.push_str("\"}");
    }
}

/// `"name":` for a name of this layer's own (`severity`, `httpRequest`), plain ASCII that
/// needs no escaping.
fn key(line: &mut String, name: &str) {
    line.push('"');
    line.push_str(name);
    line.push_str("\":");
}

/// `"name":value,` with a name of this layer's own and `value` already JSON.
fn entry(line: &mut String, name: &str, value: &str) {
    key(line, name);
    line.push_str(value);
    line.push(',');
}

/// `"name":value,` for a field of the caller's: its name may be any string, so it is escaped.
fn field(line: &mut String, name: &str, value: &str) {
    line.push('"');
    escape_into(line, name);
    line.push_str("\":");
    line.push_str(value);
    line.push(',');
}

/// Cloud Logging's severities are a superset of `tracing`'s levels, with other names.
fn severity(level: Level) -> &'static str {
    match level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARNING",
        Level::INFO => "INFO",
        Level::DEBUG | Level::TRACE => "DEBUG",
    }
}

/// Our field names → the `HttpRequest` names Cloud Logging expects. The sizes are int64
/// fields, which protobuf's JSON mapping writes as strings.
fn http_request_field<'v>(name: &str, value: &'v str) -> Option<(&'static str, Cow<'v, str>)> {
    let as_string = |v: &'v str| match v.starts_with('"') {
        true => Cow::Borrowed(v),
        false => Cow::Owned(format!("\"{v}\"")),
    };
    Some(match name {
        "method" => ("requestMethod", value.into()),
        "url" => ("requestUrl", value.into()),
        "status" => ("status", value.into()),
        "latency" => ("latency", value.into()),
        "user_agent" => ("userAgent", value.into()),
        "remote_ip" => ("remoteIp", value.into()),
        "protocol" => ("protocol", value.into()),
        "request_size" => ("requestSize", as_string(value)),
        "response_size" => ("responseSize", as_string(value)),
        _ => return None,
    })
}
// ANCHOR_END: layer

/// Writes `now` as RFC 3339 in UTC with microseconds, e.g. `2026-01-01T12:00:00.123456Z`.
/// Digit by digit into a fixed buffer: `tracing_subscriber`'s timer formats each part with
/// `core::fmt`, which cost about 2 000 instructions a line, more than this whole function.
fn write_time(line: &mut String, now: time::OffsetDateTime) {
    let mut text = *b"0000-00-00T00:00:00.000000Z";
    let mut put = |at: usize, width: usize, mut value: u32| {
        for digit in text[at..at + width].iter_mut().rev() {
            *digit = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    put(0, 4, now.year().unsigned_abs());
    put(5, 2, u8::from(now.month()).into());
    put(8, 2, now.day().into());
    put(11, 2, now.hour().into());
    put(14, 2, now.minute().into());
    put(17, 2, now.second().into());
    put(20, 6, now.microsecond());
    line.push_str(std::str::from_utf8(&text).unwrap_or("1970-01-01T00:00:00.000000Z"));
}

/// A latency the way Cloud Logging's `httpRequest.latency` wants it: seconds with an `s`,
/// `1.000250s`. Two integers written digit by digit: `{:.6}` of an `f64` is many times the
/// work, and even `write!` of two integers goes through `core::fmt`'s machinery.
pub fn format_latency(latency: std::time::Duration) -> String {
    let mut text = String::with_capacity(24);
    push_u64(&mut text, latency.as_secs());
    text.push('.');
    let micros = latency.subsec_micros();
    for place in [100_000, 10_000, 1_000, 100, 10, 1] {
        text.push(char::from(b'0' + (micros / place % 10) as u8));
    }
    text.push('s');
    text
}

/// Appends `n` in decimal. `write!(out, "{n}")` goes through `core::fmt` (a `Formatter`, then
/// `pad_integral`): a few hundred instructions for what is a loop of divisions.
pub fn push_u64(out: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    digits[start..]
        .iter()
        .for_each(|&d| out.push(char::from(d)));
}

/// The fields of a span or event, each value rendered as JSON text (`"GET"`, `201`, `true`)
/// once, when it is recorded, into one string: a span's fields are copied into every line
/// logged inside it, and copying text is cheaper than turning values into JSON again.
#[derive(Default)]
struct JsonFields {
    text: String,
    /// Each field's name and where its value is in `text`.
    fields: Vec<(&'static str, std::ops::Range<usize>)>,
}

impl JsonFields {
    fn iter(&self) -> impl Iterator<Item = (&'static str, &str)> {
        self.fields
            .iter()
            .map(|(name, range)| (*name, &self.text[range.clone()]))
    }

    /// Renders one value with `render`, which appends its JSON to the text.
    fn push(&mut self, field: &Field, render: impl FnOnce(&mut String)) {
        if self.text.capacity() == 0 {
            // Room for a request span's fields at once, rather than growing 8, 16, 32… bytes.
            self.text.reserve(256);
            self.fields.reserve(12);
        }
        let start = self.text.len();
        render(&mut self.text);
        self.fields.push((field.name(), start..self.text.len()));
    }

    /// A JSON string holding whatever `Display` or `Debug` writes, escaped as it is written.
    fn push_text(&mut self, field: &Field, text: std::fmt::Arguments<'_>) {
        self.push(field, |out| {
            out.push('"');
            let _ = std::fmt::Write::write_fmt(&mut Escaped(out), text);
            out.push('"');
        });
    }
}

impl Visit for JsonFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.push(field, |out| {
            out.push('"');
            escape_into(out, value);
            out.push('"');
        });
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.push(field, |out| {
            out.push_str(if value { "true" } else { "false" })
        });
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.push(field, |out| push_u64(out, value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.push(field, |out| {
            if value < 0 {
                out.push('-');
            }
            push_u64(out, value.unsigned_abs());
        });
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        // JSON has no NaN or infinity.
        self.push(field, |out| match value.is_finite() {
            true => {
                let _ = write!(out, "{value}");
            }
            false => out.push_str("null"),
        });
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.push_text(field, format_args!("{value}"));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        // `message` arrives here as `format_args!`, and `%value` fields as `DisplayValue`:
        // their Debug output is the plain text.
        self.push_text(field, format_args!("{value:?}"));
    }
}

/// Appends `text` to `line` as the inside of a JSON string.
fn escape_into(line: &mut String, text: &str) {
    let _ = std::fmt::Write::write_str(&mut Escaped(line), text);
}

/// A `fmt::Write` that escapes what it is given for the inside of a JSON string: quotes,
/// backslashes and control characters (everything else, UTF-8 included, is valid as is).
struct Escaped<'a>(&'a mut String);

impl std::fmt::Write for Escaped<'_> {
    fn write_str(&mut self, text: &str) -> std::fmt::Result {
        let special = |b: u8| b < b' ' || b == b'"' || b == b'\\';
        // Nearly every text has nothing to escape. A check that looks at every byte, without
        // stopping at the first special one, is a loop the compiler turns into vector
        // instructions (many bytes per instruction), and then the text is copied whole.
        if !text.bytes().fold(false, |found, b| found | special(b)) {
            self.0.push_str(text);
            return Ok(());
        }
        // Byte by byte: every character that needs escaping is ASCII, and a UTF-8 multi-byte
        // character never contains an ASCII byte, so the slices below are always whole.
        let mut rest = text;
        while let Some(at) = rest.bytes().position(special) {
            self.0.push_str(&rest[..at]);
            match rest.as_bytes()[at] {
                b'"' => self.0.push_str("\\\""),
                b'\\' => self.0.push_str("\\\\"),
                b'\n' => self.0.push_str("\\n"),
                b'\r' => self.0.push_str("\\r"),
                b'\t' => self.0.push_str("\\t"),
                other => {
                    let _ = write!(self.0, "\\u{other:04x}");
                }
            }
            rest = &rest[at + 1..];
        }
        self.0.push_str(rest);
        Ok(())
    }
}

#[cfg(test)]
mod tests {

    use serde_json::Value;
    use testkit::logs::Capture;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    fn lines_of(project: Option<&str>, emit: impl FnOnce()) -> Vec<Value> {
        let capture = Capture::default();
        let layer = CloudLogging::new(capture.clone(), project.map(str::to_owned));
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, emit);
        capture.json_lines()
    }

    #[test]
    fn an_event_is_one_json_line_with_severity_message_and_time() {
        let lines = lines_of(None, || tracing::warn!(items = 3, "store nearly full"));

        assert_eq!(lines.len(), 1);
        let line = &lines[0];
        assert_eq!(line["severity"], "WARNING");
        assert_eq!(line["message"], "store nearly full");
        assert_eq!(line["items"], 3);
        let time = line["time"].as_str().expect("time is a string");
        assert!(time.ends_with('Z') && time.contains('T'), "{time}");
    }

    #[test]
    fn text_is_escaped_so_every_line_stays_one_json_object() {
        let nasty = "a \"quote\", a \\ backslash,\na new line, a \u{1} control, and é";

        // A long text with its one special character last (past any block the check reads whole).
        let late = format!("{}\"", "x".repeat(100));

        let lines = lines_of(None, || {
            tracing::info!(field = nasty, late, "odd \"name\"" = 1, "{nasty}");
        });

        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0]["message"], nasty);
        assert_eq!(lines[0]["field"], nasty);
        assert_eq!(lines[0]["late"], late.as_str());
        assert_eq!(lines[0]["odd \"name\""], 1);
    }

    #[test]
    fn an_inner_field_overrides_an_outer_one_of_the_same_name() {
        let lines = lines_of(None, || {
            let outer = tracing::info_span!("outer", who = "outer", kept = 1u64);
            let _outer = outer.enter();
            let inner = tracing::info_span!("inner", who = "inner");
            let _inner = inner.enter();
            tracing::info!(n = 2.5, nan = f64::NAN, "x");
        });

        assert_eq!(lines[0]["who"], "inner");
        assert_eq!(lines[0]["kept"], 1);
        assert_eq!(lines[0]["n"], 2.5);
        assert_eq!(lines[0]["nan"], Value::Null);
    }

    #[test]
    fn span_fields_appear_on_every_line_inside_the_span() {
        let lines = lines_of(None, || {
            let span = tracing::info_span!("request", request_id = "abc-1");
            let _entered = span.enter();
            tracing::info!("first");
            tracing::error!("second");
        });

        assert_eq!(lines.len(), 2);
        assert!(
            lines.iter().all(|l| l["request_id"] == "abc-1"),
            "{lines:?}"
        );
        assert_eq!(lines[1]["severity"], "ERROR");
    }

    #[test]
    fn only_the_access_log_event_carries_http_request() {
        let lines = lines_of(None, || {
            let span = tracing::info_span!(
                "request",
                http.method = "POST",
                http.url = "/api/items",
                http.user_agent = "curl/8.5.0",
                http.remote_ip = "203.0.113.7",
                http.request_size = 42u64,
            );
            let _entered = span.enter();
            tracing::info!("inside the handler");
            tracing::info!(
                http.status = 201u16,
                http.latency = "0.012000s",
                http.response_size = 99u64,
                "request finished"
            );
        });

        assert_eq!(lines[0].get("httpRequest"), None);
        let http = &lines[1]["httpRequest"];
        assert_eq!(http["requestMethod"], "POST");
        assert_eq!(http["requestUrl"], "/api/items");
        assert_eq!(http["status"], 201);
        assert_eq!(http["latency"], "0.012000s");
        assert_eq!(http["userAgent"], "curl/8.5.0");
        assert_eq!(http["remoteIp"], "203.0.113.7");
        assert_eq!(http["requestSize"], "42");
        assert_eq!(http["responseSize"], "99");
    }

    #[test]
    fn the_trace_becomes_cloud_loggings_trace_field_when_the_project_is_known() {
        let emit = || {
            let span = tracing::info_span!(
                "request",
                trace_id = "4bf92f3577b34da6a3ce929d0e0e4736",
                span_id = "00f067aa0ba902b7",
                trace_sampled = true,
            );
            let _entered = span.enter();
            tracing::info!("hello");
        };

        let with_project = lines_of(Some("my-project"), emit);
        let without = lines_of(None, emit);

        let line = &with_project[0];
        assert_eq!(
            line["logging.googleapis.com/trace"],
            "projects/my-project/traces/4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(line["logging.googleapis.com/spanId"], "00f067aa0ba902b7");
        assert_eq!(line["logging.googleapis.com/trace_sampled"], true);
        assert_eq!(line.get("trace_id"), None);
        assert_eq!(without[0].get("logging.googleapis.com/trace"), None);
        assert_eq!(without[0]["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    }

    #[test]
    fn the_format_follows_log_format_then_k_service() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |key: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == key)
                    .map(|(_, v)| v.to_string())
            }
        };

        assert_eq!(LogFormat::from_lookup(env(&[])), Ok(LogFormat::Text));
        assert_eq!(
            LogFormat::from_lookup(env(&[("K_SERVICE", "items")])),
            Ok(LogFormat::Json)
        );
        assert_eq!(
            LogFormat::from_lookup(env(&[("LOG_FORMAT", "json")])),
            Ok(LogFormat::Json)
        );
        assert_eq!(
            LogFormat::from_lookup(env(&[("K_SERVICE", "items"), ("LOG_FORMAT", "text")])),
            Ok(LogFormat::Text)
        );
        assert!(LogFormat::from_lookup(env(&[("LOG_FORMAT", "xml")])).is_err());
    }

    /// A stdout that never accepts a byte: a log pipeline that has stopped reading.
    struct Stuck(std::sync::mpsc::Receiver<()>);

    impl Write for Stuck {
        fn write(&mut self, _buf: &[u8]) -> std::io::Result<usize> {
            let _ = self.0.recv(); // blocks until the test ends
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stuck_stdout_drops_lines_instead_of_blocking_the_logger() {
        let (unstick, stuck) = std::sync::mpsc::channel();
        let (writer, guard) = non_blocking(Stuck(stuck), 4);
        let dropped = writer.error_counter();
        let (done, finished) = std::sync::mpsc::channel();

        // On its own thread, so a blocking writer fails the test instead of hanging it.
        std::thread::spawn(move || {
            let mut writer = writer;
            for _ in 0..100 {
                let _ = writer.write_all(b"{\"message\":\"x\"}\n");
            }
            let _ = done.send(());
        });
        let result = finished.recv_timeout(std::time::Duration::from_secs(10));

        assert!(
            result.is_ok(),
            "writing 100 lines blocked on a stuck stdout"
        );
        assert!(
            dropped.dropped_lines() >= 90,
            "dropped {}",
            dropped.dropped_lines()
        );
        drop(unstick);
        drop(guard);
    }

    #[test]
    fn time_is_rfc_3339_in_utc_with_microseconds() {
        let noon = time::OffsetDateTime::from_unix_timestamp_nanos(1_767_268_800_123_456_789)
            .expect("a time");
        let mut text = String::new();

        write_time(&mut text, noon);

        assert_eq!(text, "2026-01-01T12:00:00.123456Z");
    }

    #[test]
    fn latency_is_seconds_with_an_s() {
        let latency = |micros| format_latency(std::time::Duration::from_micros(micros));

        assert_eq!(latency(12_345), "0.012345s");
        assert_eq!(latency(0), "0.000000s");
        assert_eq!(latency(61_000_007), "61.000007s");
    }

    #[test]
    fn integers_are_written_as_core_fmt_writes_them() {
        for n in [0, 7, 10, 4_096, u64::MAX] {
            let mut text = String::new();
            push_u64(&mut text, n);
            assert_eq!(text, n.to_string());
        }
        let lines = lines_of(None, || {
            tracing::info!(low = i64::MIN, below = -42, above = 42, "x")
        });
        let field = |name: &str| lines[0][name].as_i64();
        assert_eq!(field("low"), Some(i64::MIN));
        assert_eq!((field("below"), field("above")), (Some(-42), Some(42)));
    }
}
