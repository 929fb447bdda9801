//! The tracer: configured by the standard `OTEL_*` variables, exporting over OTLP/gRPC through
//! a bounded queue, and plugged into `tracing` as one more layer beside step 06's logs.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderName, HeaderValue, Uri};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider, SpanData, SpanExporter,
};
use step_06::logging::ExtraLayer;
use step_06::trace_context::TraceContext;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::filter_fn;

// ANCHOR: config
/// `OTEL_TRACES_SAMPLER_ARG` when `OTEL_TRACES_SAMPLER` is not set either: the Go article's
/// 10 % of new traces. (The specification's default is `parentbased_always_on`.)
pub const DEFAULT_RATIO: f64 = 0.1;
/// Spans waiting for the exporter; once it holds this many, new ones are dropped.
pub const MAX_QUEUED_SPANS: usize = 2048;
/// How long one export may take before it counts as failed (a hung collector).
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(3);

/// Which traces are recorded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampling {
    AlwaysOn,
    AlwaysOff,
    /// This fraction of trace ids, the same decision in every service that sees the trace.
    Ratio(f64),
}

/// The `OTEL_*` variables this step reads.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceConfig {
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`: a collector's `http://host:4317`. Without it, nothing is
    /// traced and the service is step 09's.
    pub endpoint: Option<String>,
    /// `OTEL_SDK_DISABLED=true`: no tracing, whatever else is set.
    pub disabled: bool,
    /// `OTEL_SERVICE_NAME`, else Cloud Run's `K_SERVICE`, else `step-10`.
    pub service_name: String,
    /// `OTEL_TRACES_SAMPLER`: `parentbased_*` follows the caller's decision when there is one.
    pub parent_based: bool,
    /// The decision for traces that start here (and for all, when not parent-based).
    pub sampling: Sampling,
    /// Cloud Run's `K_SERVICE`, `K_REVISION` and `K_CONFIGURATION`, as resource attributes.
    pub cloud_run: Vec<KeyValue>,
}

impl TraceConfig {
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<TraceConfig, String> {
        let var = |key: &str| lookup(key).filter(|v| !v.trim().is_empty());
        let disabled = match var("OTEL_SDK_DISABLED").map(|v| v.trim().to_ascii_lowercase()) {
            None => false,
            Some(v) if v == "true" => true,
            Some(v) if v == "false" => false,
            Some(v) => {
                return Err(format!(
                    "OTEL_SDK_DISABLED must be true or false, got {v:?}"
                ));
            }
        };
        if let Some(protocol) = var("OTEL_EXPORTER_OTLP_PROTOCOL")
            && protocol.trim() != "grpc"
        {
            return Err(format!(
                "OTEL_EXPORTER_OTLP_PROTOCOL must be grpc (the only transport built in), got \
                 {protocol:?}"
            ));
        }
        // The traces' own variable wins over the one for every signal, as the specification
        // says; over gRPC both name the collector itself.
        let endpoint = [
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
        ]
        .into_iter()
        .find_map(|key| Some((key, var(key)?)))
        .map(|(key, text)| {
            parse_endpoint(&text).map_err(|why| format!("{key} {why}, got {text:?}"))
        })
        .transpose()?;
        let (parent_based, sampling) = sampler_from(
            var("OTEL_TRACES_SAMPLER").as_deref(),
            var("OTEL_TRACES_SAMPLER_ARG").as_deref(),
        )?;
        let k = |key: &'static str, name: &'static str| var(key).map(|v| KeyValue::new(name, v));
        let mut cloud_run: Vec<KeyValue> = [
            k("K_SERVICE", "faas.name"),
            k("K_REVISION", "faas.version"),
            k("K_CONFIGURATION", "gcp.cloud_run.configuration"),
        ]
        .into_iter()
        .flatten()
        .collect();
        if !cloud_run.is_empty() {
            cloud_run.push(KeyValue::new("cloud.provider", "gcp"));
            cloud_run.push(KeyValue::new("cloud.platform", "gcp_cloud_run"));
        }
        Ok(TraceConfig {
            endpoint,
            disabled,
            service_name: var("OTEL_SERVICE_NAME")
                .or_else(|| var("K_SERVICE"))
                .unwrap_or_else(|| "step-10".into()),
            parent_based,
            sampling,
            cloud_run,
        })
    }

    /// Whether spans are made and exported at all.
    pub fn enabled(&self) -> bool {
        !self.disabled && self.endpoint.is_some()
    }

    /// The SDK's sampler for this configuration.
    pub fn sampler(&self) -> Sampler {
        let root = match self.sampling {
            Sampling::AlwaysOn => Sampler::AlwaysOn,
            Sampling::AlwaysOff => Sampler::AlwaysOff,
            Sampling::Ratio(ratio) => Sampler::TraceIdRatioBased(ratio),
        };
        match self.parent_based {
            true => Sampler::ParentBased(Box::new(root)),
            false => root,
        }
    }

    /// Who is sending: the service's name and version, and where it runs.
    pub fn resource(&self) -> Resource {
        Resource::builder_empty()
            .with_service_name(self.service_name.clone())
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .with_attributes(self.cloud_run.clone())
            .build()
    }
}

/// The specification's six samplers; the ratio only for the two that take one (default 1.0,
/// the specification's, unless neither variable is set: then the article's 10 %).
fn sampler_from(name: Option<&str>, arg: Option<&str>) -> Result<(bool, Sampling), String> {
    let ratio = |default: f64| match arg {
        None => Ok(default),
        Some(text) => match text.trim().parse::<f64>() {
            Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
            _ => Err(format!(
                "OTEL_TRACES_SAMPLER_ARG must be a number from 0 to 1, got {text:?}"
            )),
        },
    };
    Ok(match name.map(str::trim) {
        None => (true, Sampling::Ratio(ratio(DEFAULT_RATIO)?)),
        Some("always_on") => (false, Sampling::AlwaysOn),
        Some("always_off") => (false, Sampling::AlwaysOff),
        Some("traceidratio") => (false, Sampling::Ratio(ratio(1.0)?)),
        Some("parentbased_always_on") => (true, Sampling::AlwaysOn),
        Some("parentbased_always_off") => (true, Sampling::AlwaysOff),
        Some("parentbased_traceidratio") => (true, Sampling::Ratio(ratio(1.0)?)),
        Some(other) => {
            return Err(format!(
                "OTEL_TRACES_SAMPLER must be always_on, always_off, traceidratio, \
                 parentbased_always_on, parentbased_always_off or parentbased_traceidratio, \
                 got {other:?}"
            ));
        }
    })
}

/// `http://host[:port]` with nothing after it but a `/`; else what is wrong with it.
fn parse_endpoint(text: &str) -> Result<String, &'static str> {
    let uri: Uri = text
        .trim()
        .parse()
        .map_err(|_| "must be a URL such as http://localhost:4317")?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(
                "must be http://: TLS is not built in (run a collector beside the \
                        service, as the chapter shows)",
            );
        }
        _ => return Err("must be an http:// URL such as http://localhost:4317"),
    }
    // `http` reads a port that does not fit in 16 bits as no port at all: look at the text.
    let port_text = uri.authority().and_then(|a| a.as_str().rsplit_once(':'));
    let has_port = port_text.is_some_and(|(_, port)| !port.contains(']'));
    let bad_port = has_port && uri.port_u16().is_none_or(|port| port == 0);
    if uri.host().is_none_or(str::is_empty) || bad_port {
        return Err("must name a host and, if any, a port from 1 to 65535");
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(
            "must have no path: over gRPC the collector's address is all there is \
                    (`/v1/traces` belongs to OTLP over HTTP, which is not built in)",
        );
    }
    Ok(text.trim().trim_end_matches('/').to_owned())
}
// ANCHOR_END: config

// ANCHOR: provider
/// The tracer provider and what its exporter counted. Keep it until the end of `main`:
/// [`Tracing::flush`] sends what is still queued.
pub struct Tracing {
    pub provider: SdkTracerProvider,
    pub counts: Arc<ExportCounts>,
}

impl Tracing {
    /// Exports over OTLP/gRPC to `endpoint`. Call it inside the runtime: tonic's connection is
    /// a task on it (it connects on first use, so a collector that is down fails no start-up).
    pub fn otlp(config: &TraceConfig, endpoint: &str) -> Result<Tracing, String> {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .with_timeout(EXPORT_TIMEOUT)
            .build()
            .map_err(|error| format!("cannot make the OTLP exporter: {error}"))?;
        Ok(Tracing::with_exporter(config, exporter))
    }

    /// Any exporter behind the bounded queue: spans wait in a queue of [`MAX_QUEUED_SPANS`]
    /// that the SDK's own thread empties in batches. A request only ever puts its spans in the
    /// queue (or drops them when it is full): it never waits for the collector.
    pub fn with_exporter(config: &TraceConfig, exporter: impl SpanExporter + 'static) -> Tracing {
        let counts = Arc::new(ExportCounts::default());
        let exporter = Counting {
            inner: exporter,
            counts: counts.clone(),
        };
        let batches = BatchConfigBuilder::default()
            .with_max_queue_size(MAX_QUEUED_SPANS)
            .with_scheduled_delay(Duration::from_secs(1))
            .build();
        let processor = BatchSpanProcessor::builder(exporter)
            .with_batch_config(batches)
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(config.sampler())
            .with_resource(config.resource())
            .build();
        Tracing { provider, counts }
    }

    /// Sends the spans still queued, for at most `within`, and stops the exporter.
    pub fn flush(&self, within: Duration) {
        let started = Instant::now();
        let result = self.provider.shutdown_with_timeout(within);
        let counts = &self.counts;
        tracing::info!(
            exported = counts.exported(),
            dropped = counts.dropped(),
            took_ms = started.elapsed().as_millis() as u64,
            ok = result.is_ok(),
            "spans flushed"
        );
    }
}

/// The layer that makes OpenTelemetry spans of this step's `tracing` spans (`target`
/// `step_10…`), and span events of the events inside them. Step 06's request span, which
/// only carries log fields, is left out: the server span is this step's.
pub fn layer(provider: &SdkTracerProvider) -> ExtraLayer {
    let tracer = provider.tracer("step-10");
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        // No busy/idle times, thread names or source locations on every span: cost, no use.
        .with_tracked_inactivity(false)
        .with_threads(false)
        .with_location(false)
        // Nor the `tracing` target (`step_10::server`): not a convention's attribute.
        .with_target(false)
        // Nothing here reads OpenTelemetry's "current context": no need to set it on every
        // poll of every future inside a span.
        .with_context_activation(false)
        .with_filter(filter_fn(|meta| match meta.is_event() {
            // Span events: step 09's lines about retries and the breaker, and warnings and
            // errors. Not the access-log line (the span says all it says), and not the SDK's
            // own lines (target `opentelemetry_sdk`): one logged while a span ends would loop.
            true => {
                !meta.target().starts_with("opentelemetry")
                    && (*meta.level() <= tracing::Level::WARN
                        || meta.target().starts_with("step_09"))
            }
            false => meta.target().starts_with("step_10"),
        }));
    Box::new(layer)
}
// ANCHOR_END: provider

// ANCHOR: counts
/// Spans the exporter sent, and those it lost because the collector was down or too slow.
/// (Spans dropped because the queue was full are the SDK's count: it logs them at the end.)
#[derive(Debug, Default)]
pub struct ExportCounts {
    exported: AtomicU64,
    dropped: AtomicU64,
    last_warning: Mutex<Option<Instant>>,
}

impl ExportCounts {
    pub fn exported(&self) -> u64 {
        self.exported.load(Ordering::Relaxed)
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// An exporter that counts what the one inside it sent or lost, and says so in the log at
/// most every 10 s: a collector that is down must not flood the log either.
#[derive(Debug)]
struct Counting<E> {
    inner: E,
    counts: Arc<ExportCounts>,
}

impl<E: SpanExporter> SpanExporter for Counting<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len() as u64;
        // Runs on the SDK's export thread, never on a request's.
        let result = self.inner.export(batch).await;
        let counts = &self.counts;
        match &result {
            Ok(()) => counts.exported.fetch_add(spans, Ordering::Relaxed),
            Err(error) => {
                let dropped = counts.dropped.fetch_add(spans, Ordering::Relaxed) + spans;
                let mut last = counts
                    .last_warning
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                if last.is_none_or(|at| at.elapsed() >= Duration::from_secs(10)) {
                    *last = Some(Instant::now());
                    tracing::warn!(%error, dropped, "spans not exported: is the collector up?");
                }
                dropped
            }
        };
        // Said and counted above: the SDK would log an ERROR line for every failed batch,
        // every second while the collector is down. (It does nothing else with the error.)
        Ok(())
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource)
    }
}
// ANCHOR_END: counts

// ANCHOR: propagation
/// The caller's trace, from W3C `traceparent`/`tracestate` or else Google's older
/// `X-Cloud-Trace-Context` (step 06's rule: `traceparent` wins when both are valid).
/// An empty context when neither is there: the request starts a trace.
pub fn remote_parent(headers: &HeaderMap) -> Context {
    let cx = TraceContextPropagator::new().extract(&Headers(headers));
    if cx.span().span_context().is_valid() {
        return cx;
    }
    // A header without the caller's span (`TRACE;o=1`) names no parent to continue from: the
    // request starts a trace of its own (OpenTelemetry has no parent without a span id).
    let remote = TraceContext::from_headers(headers).and_then(|trace| {
        let trace_id = TraceId::from_hex(&trace.trace_id).ok()?;
        let span_id = SpanId::from_hex(trace.span_id.as_deref()?).ok()?;
        let flags = match trace.sampled {
            true => TraceFlags::SAMPLED,
            false => TraceFlags::default(),
        };
        Some(SpanContext::new(
            trace_id,
            span_id,
            flags,
            true,
            TraceState::default(),
        ))
    });
    match remote {
        Some(remote) => Context::new().with_remote_span_context(remote),
        None => Context::new(),
    }
}

/// Writes `cx`'s span as `traceparent` (and `tracestate`) into `headers`.
pub fn inject(cx: &Context, headers: &mut HeaderMap) {
    TraceContextPropagator::new().inject_context(cx, &mut HeadersMut(headers));
}

/// `00-<trace id>-<span id>-<flags>` for `span`, digit by digit: the server span writes one on
/// every request, and the propagator's `format!`s cost as much as the span itself.
pub fn traceparent(span: &SpanContext) -> Option<HeaderValue> {
    fn hex(out: &mut [u8], bytes: &[u8]) {
        for (pair, byte) in out.chunks_exact_mut(2).zip(bytes) {
            pair[0] = b"0123456789abcdef"[usize::from(byte >> 4)];
            pair[1] = b"0123456789abcdef"[usize::from(byte & 0xf)];
        }
    }
    let mut text = *b"00-00000000000000000000000000000000-0000000000000000-00";
    hex(&mut text[3..35], &span.trace_id().to_bytes());
    hex(&mut text[36..52], &span.span_id().to_bytes());
    hex(&mut text[53..55], &[span.trace_flags().to_u8()]);
    HeaderValue::from_bytes(&text).ok()
}

/// `http`'s headers as OpenTelemetry's carrier (what `opentelemetry-http` has, in 20 lines).
struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

struct HeadersMut<'a>(&'a mut HeaderMap);

impl Injector for HeadersMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        let name = HeaderName::from_bytes(key.as_bytes());
        if let (Ok(name), Ok(value)) = (name, HeaderValue::from_str(&value)) {
            self.0.insert(name, value);
        }
    }
}
// ANCHOR_END: propagation

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Result<TraceConfig, String> {
        TraceConfig::from_lookup(|key| {
            pairs
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn without_an_endpoint_nothing_is_traced() {
        let config = config(&[]).expect("valid");

        assert!(!config.enabled());
        assert_eq!(config.service_name, "step-10");
        assert_eq!(
            (config.parent_based, config.sampling),
            (true, Sampling::Ratio(0.1))
        );
    }

    #[test]
    fn the_standard_variables_are_read() {
        let config = config(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317/"),
            ("OTEL_SERVICE_NAME", "items"),
            ("OTEL_TRACES_SAMPLER", "traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
            ("K_SERVICE", "items-svc"),
            ("K_REVISION", "items-svc-00042"),
        ])
        .expect("valid");

        assert!(config.enabled());
        assert_eq!(config.endpoint.as_deref(), Some("http://collector:4317"));
        let traces_own = TraceConfig::from_lookup(|key| match key {
            "OTEL_EXPORTER_OTLP_ENDPOINT" => Some("http://everything:4317".into()),
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT" => Some("http://traces:4317".into()),
            _ => None,
        });
        assert_eq!(
            traces_own.expect("valid").endpoint.as_deref(),
            Some("http://traces:4317")
        );
        assert_eq!(config.service_name, "items");
        assert_eq!(
            (config.parent_based, config.sampling),
            (false, Sampling::Ratio(0.25))
        );
        assert!(
            config
                .cloud_run
                .contains(&KeyValue::new("faas.version", "items-svc-00042"))
        );
    }

    #[test]
    fn disabled_wins_over_an_endpoint() {
        let config = config(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
            ("OTEL_SDK_DISABLED", "TRUE"),
        ])
        .expect("valid");

        assert!(!config.enabled());
    }

    #[test]
    fn bad_values_are_refused_with_the_variable_named() {
        for (key, value) in [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4317"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317"),
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "http://collector:4317/v1/traces",
            ),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:99999"),
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "https://collector:4317",
            ),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_TRACES_SAMPLER", "sometimes"),
            ("OTEL_TRACES_SAMPLER_ARG", "1.5"),
            ("OTEL_TRACES_SAMPLER_ARG", "ten percent"),
            ("OTEL_SDK_DISABLED", "yes"),
        ] {
            let error = config(&[(key, value)]).expect_err(value);
            assert!(error.starts_with(key), "{error}");
        }
    }

    #[test]
    fn traceparent_wins_over_x_cloud_trace_context() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-cloud-trace-context",
            HeaderValue::from_static("105445aa7843bc8bf206b12000100000/1;o=1"),
        );
        let cloud = remote_parent(&headers);
        headers.insert(
            "traceparent",
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"),
        );
        let w3c = remote_parent(&headers);

        let cloud = cloud.span().span_context().clone();
        assert_eq!(
            cloud.trace_id().to_string(),
            "105445aa7843bc8bf206b12000100000"
        );
        assert_eq!(cloud.span_id(), SpanId::from(1u64));
        assert!(cloud.is_sampled() && cloud.is_remote());
        let w3c = w3c.span().span_context().clone();
        assert_eq!(
            w3c.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert!(!w3c.is_sampled());
    }

    #[test]
    fn injecting_writes_a_traceparent() {
        let remote = SpanContext::new(
            TraceId::from(0x4bf92f3577b34da6a3ce929d0e0e4736u128),
            SpanId::from(0x00f067aa0ba902b7u64),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        );
        let mut headers = HeaderMap::new();

        inject(
            &Context::new().with_remote_span_context(remote.clone()),
            &mut headers,
        );

        assert_eq!(
            headers["traceparent"],
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        assert_eq!(traceparent(&remote), Some(headers["traceparent"].clone()));
    }
}
