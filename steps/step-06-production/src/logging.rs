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

use std::io::Write;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber, span};
use tracing_appender::non_blocking::NonBlocking;
use tracing_subscriber::Layer;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
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
    let registry = tracing_subscriber::registry().with(filter);
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
        // Outer spans first, so an inner span (or the event) can override a field.
        let mut fields = JsonFields::default();
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(span_fields) = span.extensions().get::<JsonFields>() {
                    fields.0.extend(span_fields.0.clone());
                }
            }
        }
        let mut own = JsonFields::default();
        event.record(&mut own);
        let is_access_log = own.0.keys().any(|k| k.starts_with("http."));
        fields.0.extend(own.0);

        let line = self.entry(*event.metadata().level(), fields.0, is_access_log);
        let mut bytes = serde_json::to_vec(&line).unwrap_or_default();
        bytes.push(b'\n');
        // One `write_all` per line: the non-blocking writer takes it as one message, so lines
        // from concurrent requests never interleave.
        let _ = self.writer.make_writer().write_all(&bytes);
    }
}

impl<W> CloudLogging<W> {
    fn entry(&self, level: Level, mut fields: Map<String, Value>, is_access_log: bool) -> Value {
        let mut entry = Map::new();
        let mut http = Map::new();
        for (key, value) in std::mem::take(&mut fields) {
            match key.strip_prefix("http.") {
                Some(name) => {
                    if let Some((cloud_name, value)) = http_request_field(name, value) {
                        http.insert(cloud_name.to_owned(), value);
                    }
                }
                None => {
                    entry.insert(key, value);
                }
            }
        }
        if is_access_log && !http.is_empty() {
            entry.insert("httpRequest".into(), Value::Object(http));
        }
        if let Some(project) = &self.project
            && let Some(Value::String(trace_id)) = entry.remove("trace_id")
        {
            let trace = format!("projects/{project}/traces/{trace_id}");
            entry.insert("logging.googleapis.com/trace".into(), trace.into());
            if let Some(span_id) = entry.remove("span_id") {
                entry.insert("logging.googleapis.com/spanId".into(), span_id);
            }
            if let Some(sampled) = entry.remove("trace_sampled") {
                entry.insert("logging.googleapis.com/trace_sampled".into(), sampled);
            }
        }
        let message = entry.remove("message").unwrap_or_else(|| "".into());
        entry.insert("message".into(), message);
        entry.insert("severity".into(), severity(level).into());
        entry.insert("time".into(), now_rfc3339().into());
        Value::Object(entry)
    }
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
fn http_request_field(name: &str, value: Value) -> Option<(&'static str, Value)> {
    let as_string = |v: Value| match v {
        Value::String(s) => Value::String(s),
        other => Value::String(other.to_string()),
    };
    Some(match name {
        "method" => ("requestMethod", value),
        "url" => ("requestUrl", value),
        "status" => ("status", value),
        "latency" => ("latency", value),
        "user_agent" => ("userAgent", value),
        "remote_ip" => ("remoteIp", value),
        "protocol" => ("protocol", value),
        "request_size" => ("requestSize", as_string(value)),
        "response_size" => ("responseSize", as_string(value)),
        _ => return None,
    })
}
// ANCHOR_END: layer

/// RFC 3339 in UTC with microseconds, e.g. `2026-01-01T12:00:00.123456Z`.
fn now_rfc3339() -> String {
    let mut text = String::new();
    let _ = SystemTime.format_time(&mut Writer::new(&mut text));
    text
}

/// A latency the way Cloud Logging's `httpRequest.latency` wants it: seconds with an `s`.
pub fn format_latency(latency: std::time::Duration) -> String {
    format!("{:.6}s", latency.as_secs_f64())
}

/// The fields of a span or event as JSON values.
#[derive(Default)]
struct JsonFields(Map<String, Value>);

impl Visit for JsonFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0.insert(field.name().into(), value.to_string().into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        // `message` arrives here as `format_args!`, whose Debug output is the plain text.
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    /// Collects everything written, for the tests to parse.
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Capture {
        type Writer = Capture;
        fn make_writer(&'a self) -> Capture {
            self.clone()
        }
    }

    fn lines_of(project: Option<&str>, emit: impl FnOnce()) -> Vec<Value> {
        let capture = Capture::default();
        let layer = CloudLogging::new(capture.clone(), project.map(str::to_owned));
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, emit);
        let text = String::from_utf8(capture.0.lock().expect("lock").clone()).expect("utf-8");
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
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
    fn latency_is_seconds_with_an_s() {
        assert_eq!(
            format_latency(std::time::Duration::from_micros(12_345)),
            "0.012345s"
        );
    }
}
