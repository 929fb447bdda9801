//! What this step's tests share: the tracer with the SDK's in-memory exporter, the service
//! in-process (on PostgreSQL or on the memory store), and the log lines it wrote.
#![allow(dead_code)] // Each test file uses a different part of it.

pub mod waterfall;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use opentelemetry::trace::{SpanId, TraceId};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use step_04::Protocols;
use step_04::store::{ItemStore, MemoryStore, NewItem};
use step_06::Ops;
use step_06::logging::CloudLogging;
use step_08::Grpc;
use step_10::store::TracedStore;
use step_10::telemetry::{self, TraceConfig};
use testkit::logs::Capture;
use tracing::subscriber::DefaultGuard;
use tracing_subscriber::layer::SubscriberExt;

/// The caller's trace and span in the tests' `traceparent`s.
pub const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
pub const CALLER: &str = "00f067aa0ba902b7";

pub fn traceparent(flags: &str) -> String {
    format!("00-{TRACE}-{CALLER}-{flags}")
}

/// `GET path` from the caller's span: `flags` "01" if the caller sampled it, "00" if not.
pub async fn get_in_trace(addr: SocketAddr, path: &str, flags: &str) -> testkit::Reply {
    let parent = traceparent(flags);
    let headers = [("traceparent", parent.as_str())];
    let reply = testkit::request(addr, testkit::Method::GET, path, &headers, "").await;
    reply.unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// The tracer for this test's thread: spans go to an in-memory exporter, log lines (step 06's
/// Cloud Logging JSON) to memory too. `#[tokio::test]`'s runtime runs on this one thread, so
/// the service started in it uses this tracer.
pub struct Traces {
    pub exporter: InMemorySpanExporter,
    pub provider: SdkTracerProvider,
    logs: Capture,
    _installed: DefaultGuard,
    // Last, so it is let go after the subscriber: see `install`.
    _alone: MutexGuard<'static, ()>,
}

/// One test's tracer at a time in this binary: `tracing` caches, per call site, whether any
/// subscriber wants it, and subscribers made at the same time on other threads can race with
/// that cache and leave one test's spans unrecorded.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

impl Traces {
    /// With the sampler the `OTEL_TRACES_SAMPLER*` pairs describe.
    pub fn install(sampler: &[(&str, &str)]) -> Traces {
        let alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let config = TraceConfig::from_lookup(testkit::env_from(sampler)).expect("valid");
        let exporter = InMemorySpanExporter::default();
        // The simple processor exports each span as it ends: nothing to wait for.
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .with_sampler(config.sampler())
            .with_resource(config.resource())
            .build();
        let logs = Capture::default();
        let subscriber = tracing_subscriber::registry()
            .with(telemetry::layer(&provider))
            .with(CloudLogging::new(logs.clone(), None));
        let installed = tracing::subscriber::set_default(subscriber);
        Traces {
            exporter,
            provider,
            logs,
            _installed: installed,
            _alone: alone,
        }
    }

    pub fn spans(&self) -> Vec<SpanData> {
        self.exporter.get_finished_spans().expect("spans")
    }

    /// The spans of `trace`, once `n` of them have ended.
    pub async fn trace(&self, trace: TraceId, n: usize) -> Vec<SpanData> {
        testkit::eventually(
            "the trace's spans end",
            async || self.of(trace),
            |spans| spans.len() >= n,
        )
        .await
    }

    pub fn of(&self, trace: TraceId) -> Vec<SpanData> {
        let spans = self.spans().into_iter();
        spans
            .filter(|s| s.span_context.trace_id() == trace)
            .collect()
    }

    /// Every log line written so far, parsed.
    pub fn log_lines(&self) -> Vec<serde_json::Value> {
        self.logs.json_lines()
    }
}

pub fn trace_id(hex: &str) -> TraceId {
    TraceId::from_hex(hex).expect("hex")
}

pub fn span_id(hex: &str) -> SpanId {
    SpanId::from_hex(hex).expect("hex")
}

/// The one span named `name`.
pub fn named<'a>(spans: &'a [SpanData], name: &str) -> &'a SpanData {
    let mut found = spans.iter().filter(|s| s.name == name);
    let span = found
        .next()
        .unwrap_or_else(|| panic!("no span {name}: {spans:#?}"));
    assert!(found.next().is_none(), "two spans {name}");
    span
}

/// The value of attribute `key`, as text.
pub fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

/// Step 10's configuration from `pairs`, tracing on (the endpoint is never used: the
/// exporter is the test's).
pub fn config(pairs: &[(&str, &str)]) -> step_10::Config {
    let mut all = vec![
        ("DATABASE_URL", "postgres://unused@localhost/unused"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9"),
    ];
    all.extend_from_slice(pairs);
    let mut config = step_10::config_from_lookup(testkit::env_from(&all)).expect("valid");
    config.base.base.base.base.protocols = Protocols::Http1AndH2c;
    config
}

/// The whole service (`step_10::run`) on `database_url`, ready.
pub async fn start_on_postgres(database_url: &str, pairs: &[(&str, &str)]) -> SocketAddr {
    let mut all = vec![("DATABASE_URL", database_url)];
    all.extend_from_slice(pairs);
    let config = config(&all);
    let addr = testkit::spawn_in_process(move |listener| {
        step_10::run(
            listener,
            config,
            Ops::default(),
            Grpc::default(),
            std::future::pending(),
        )
    })
    .await;
    testkit::eventually(
        "the service is ready",
        async || testkit::get(addr, "/readyz").await.status,
        |status| status.is_success(),
    )
    .await;
    addr
}

/// This step's app on the memory store holding `item-1`: for tests that need no database.
pub async fn start_on_memory(pairs: &[(&str, &str)]) -> SocketAddr {
    let config = config(pairs);
    let memory = Arc::new(MemoryStore::new(10));
    let new = NewItem {
        name: "Test Item".into(),
        description: "A test".into(),
    };
    memory.create(new).await.expect("room");
    let store: Arc<dyn ItemStore> = Arc::new(TracedStore::new(memory, "memory"));
    let (ops, grpc) = (Ops::default(), Grpc::default());
    ops.readiness.set_ready();
    let rest = step_04::api::router(step_09::read_routes(), store.clone(), |_| {});
    let stock = config.stock();
    let base = config.base.base.base.clone();
    let app = step_10::with_grpc(rest, store, &base, &ops, &grpc, &stock);
    testkit::spawn_in_process(move |listener| async move {
        step_04::serve(listener, app, &base.base, std::future::pending()).await
    })
    .await
}
