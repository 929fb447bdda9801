//! Step 10: one trace across REST, gRPC, the database and the upstream.
//!
//! Step 09's service, whose requests become OpenTelemetry spans exported over OTLP: a server
//! span per request that continues the caller's trace (W3C `traceparent`, or Google's
//! `X-Cloud-Trace-Context`), a child span per database query and per upstream attempt, the
//! trace sent along to the upstream, and step 06's log lines carrying the ids of the spans.
//!
//! - [`telemetry`]: the `OTEL_*` configuration, the tracer and its bounded exporter, and the
//!   propagation of the trace in headers;
//! - [`server`]: the server span, HTTP and gRPC;
//! - [`store`]: the database spans, around any `ItemStore`;
//! - [`attempts`]: the upstream attempt spans, through step 09's `Observer`;
//! - [`sink`]: a stand-in collector (`src/bin/otlp-sink.rs`) that tests and you can export to.
#![forbid(unsafe_code)]

pub mod attempts;
pub mod server;
pub mod sink;
pub mod store;
pub mod telemetry;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use step_04::store::ItemStore;
use step_06::launch::Extras;
use step_06::{Ops, RunError};
use step_07::store::PgStore;
use step_08::Grpc;
use step_09::stock::Stock;
use tokio::net::TcpListener;

use crate::attempts::TracedAttempts;
use crate::server::ServerSpanLayer;
use crate::store::TracedStore;
use crate::telemetry::{TraceConfig, Tracing};

// ANCHOR: config
/// Step 09's configuration plus the `OTEL_*` variables.
#[derive(Debug, Clone)]
pub struct Config {
    pub base: step_09::Config,
    pub traces: TraceConfig,
}

pub fn config_from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, String> {
    Ok(Config {
        base: step_09::config_from_lookup(&lookup)?,
        traces: TraceConfig::from_lookup(&lookup)?,
    })
}

impl Config {
    /// Step 09's client, built once; with traces on, it tells each attempt to the tracer.
    pub fn stock(&self) -> Stock {
        match self.traces.enabled() {
            true => self
                .base
                .stock_with(|client| client.observed_by(Arc::new(TracedAttempts))),
            false => self.base.stock(),
        }
    }
}
// ANCHOR_END: config

// ANCHOR: app
/// Step 09's service with its store traced and a server span around every request.
/// (Step 07's create with an `Idempotency-Key` uses `store` itself, in one transaction: not
/// traced here, an exercise.)
pub fn app(
    config: &step_07::Config,
    store: Arc<PgStore>,
    ops: &Ops,
    grpc: &Grpc,
    stock: &Stock,
) -> Router {
    let traced: Arc<dyn ItemStore> = Arc::new(TracedStore::new(store.clone(), "postgresql"));
    step_09::app_with(config, store, traced, document, ops, grpc, stock).layer(ServerSpanLayer)
}

/// Step 09's `with_grpc`, in one server span per request. `Router::layer` wraps each route,
/// after routing: the span knows the route that matched.
pub fn with_grpc(
    rest: Router,
    store: Arc<dyn ItemStore>,
    config: &step_06::Config,
    ops: &Ops,
    grpc: &Grpc,
    stock: &Stock,
) -> Router {
    step_09::with_grpc(rest, store, config, ops, grpc, stock).layer(ServerSpanLayer)
}

/// Step 07's document (step 09 only renamed it), renamed.
fn document(openapi: &mut utoipa::openapi::OpenApi) {
    step_07::document(openapi);
    openapi.info.title = "step-10 items".into();
    openapi.info.description = Some(
        "The item service of cloud-run-rust, step 10: step 09's, traced with OpenTelemetry.".into(),
    );
}
// ANCHOR_END: app

// ANCHOR: run
/// Serves step 09's service, traced when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (and
/// `OTEL_SDK_DISABLED` is not `true`), until `signal`, then drains.
pub async fn run(
    listener: TcpListener,
    config: Config,
    ops: Ops,
    grpc: Grpc,
    signal: impl Future<Output = &'static str> + Send + 'static,
) -> Result<(), RunError> {
    let stock = config.stock();
    let traced = config.traces.enabled();
    tracing::info!(
        traced,
        endpoint = config.traces.endpoint.as_deref(),
        sampler = ?config.traces.sampler(),
        "traces"
    );
    let build = move |base: &step_07::Config, store: Arc<PgStore>, ops: &Ops, grpc: &Grpc| {
        match traced {
            true => app(base, store, ops, grpc, &stock),
            // Off, it is step 09's service, layer for layer: tracing costs nothing.
            false => step_09::app(base, store, ops, grpc, &stock),
        }
    };
    step_08::run_with(listener, config.base.base, ops, grpc, signal, build).await
}

/// What `main` adds to step 06's launch: the tracer beside the logs, and its last flush in
/// what is left of the grace period after draining.
pub fn extras(config: &Config) -> Extras {
    let Some(endpoint) = config
        .traces
        .endpoint
        .as_deref()
        .filter(|_| config.traces.enabled())
    else {
        return Extras::default();
    };
    let tracing = match Tracing::otlp(&config.traces, endpoint) {
        Ok(tracing) => tracing,
        // Before anything is served or logged: a configuration the exporter refuses is a
        // bad configuration, one line and exit 2, like every other.
        Err(error) => {
            eprintln!("step-10: OTEL_EXPORTER_OTLP_ENDPOINT {endpoint:?}: {error}");
            std::process::exit(2);
        }
    };
    Extras {
        layer: Some(telemetry::layer(&tracing.provider)),
        // Half a second kept back, for the process to exit before the SIGKILL.
        at_exit: Some(Box::new(move |left: Duration| {
            tracing.flush(left.saturating_sub(Duration::from_millis(500)))
        })),
    }
}
// ANCHOR_END: run
