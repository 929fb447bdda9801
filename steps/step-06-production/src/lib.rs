//! Step 06: production-ready on Cloud Run.
//!
//! The item API of step 04 (same contract: `GET /health`, `POST /api/items`, `GET /api/items`,
//! `GET /api/items/{id}`, `GET /openapi.json`), used as a library and wrapped in what a team
//! really runs: Cloud Logging JSON with the request id and trace on every line, a concurrency
//! limit that sheds load fast, liveness and readiness probes (`/healthz`, `/readyz`), panics
//! turned into 500s that name the request, and (in `main`) a runtime sized to the container's
//! CPU quota. Everything that is not new here is step 04's code, reached through `step_04::`.
#![forbid(unsafe_code)]

pub mod cpus;
pub mod debug_routes;
pub mod launch;
pub mod logging;
pub mod probes;
pub mod request_context;
pub mod shedding;
pub mod trace_context;

// Step 04's modules, under the names this step's users already know.
pub use step_04::{DrainTimedOut, api, error, shutdown_signal, store};

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio::task::JoinError;
use tokio_util::sync::CancellationToken;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{PropagateRequestIdLayer, SetRequestIdLayer};

use crate::store::{ItemStore, MemoryStore};

pub use debug_routes::DebugHooks;
pub use probes::{Phase, Readiness};
pub use shedding::Shedder;

// ANCHOR: limits
/// `MAX_CONCURRENCY` default: Cloud Run's default `--concurrency` for one vCPU.
pub const DEFAULT_MAX_CONCURRENCY: usize = 80;
/// `QUEUE_TIMEOUT` default: how long a request beyond the limit waits for a slot.
pub const DEFAULT_QUEUE_TIMEOUT: Duration = Duration::from_millis(100);
/// `GRACE_PERIOD` default: Cloud Run's time between SIGTERM and SIGKILL.
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(10);
// ANCHOR_END: limits

// ANCHOR: config
/// Everything the server reads from its environment, validated once at start-up.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Step 04's variables, unchanged: `PORT`, `REQUEST_TIMEOUT`, `SHUTDOWN_TIMEOUT` (how long
    /// draining may take once we stop accepting), `HEADER_READ_TIMEOUT`, `MAX_ITEMS`.
    pub base: step_04::Config,
    /// `MAX_CONCURRENCY`: requests handled at once, like Cloud Run's `--concurrency`
    /// (default 80, 1 to 10 000).
    pub max_concurrency: usize,
    /// `QUEUE_TIMEOUT`: how long a request beyond the limit may wait for a slot before it is
    /// refused with 503 (default 100 ms).
    pub queue_timeout: Duration,
    /// `DRAIN_DELAY`: after SIGTERM, how long to keep accepting while `/readyz` says 503, so
    /// a load balancer that polls readiness stops routing here first (default 0: Cloud Run
    /// stops routing at SIGTERM by itself; Kubernetes wants a few seconds).
    pub drain_delay: Duration,
    /// `GRACE_PERIOD`: the platform's time between SIGTERM and SIGKILL (default 10 s, Cloud
    /// Run's; Kubernetes: `terminationGracePeriodSeconds`). `DRAIN_DELAY + SHUTDOWN_TIMEOUT`
    /// must fit inside it, or the drain would be killed half-way.
    pub grace_period: Duration,
    /// `STARTUP_DELAY`: simulated start-up work (warming a cache, opening a pool) during
    /// which `/readyz` says 503 (default 0).
    pub startup_delay: Duration,
    /// `WORKER_THREADS`: overrides the CPU-quota-based choice (1 to 1024).
    pub worker_threads: Option<usize>,
    /// `LOG_FORMAT` / `K_SERVICE`: JSON for Cloud Logging or text for a terminal.
    pub log_format: logging::LogFormat,
    /// `GOOGLE_CLOUD_PROJECT`: needed to write the trace as Cloud Logging wants it.
    pub project: Option<String>,
    /// `ENABLE_DEBUG_ROUTES=1`: mount `/debug/slow` and `/debug/panic` (tests, benchmarks).
    pub debug_routes: bool,
}

impl Config {
    /// Reads the configuration through `lookup` (normally `std::env::var`), with step 04's
    /// parsers: one syntax for every duration, one error shape for every variable.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, String> {
        let base = step_04::Config::from_lookup(&lookup)?;
        let vars = step_04::Vars(&lookup);
        let config = Config {
            base,
            max_concurrency: vars
                .number("MAX_CONCURRENCY", 10_000)?
                .unwrap_or(DEFAULT_MAX_CONCURRENCY),
            queue_timeout: vars.duration("QUEUE_TIMEOUT", DEFAULT_QUEUE_TIMEOUT, true)?,
            drain_delay: vars.duration("DRAIN_DELAY", Duration::ZERO, true)?,
            grace_period: vars.duration("GRACE_PERIOD", DEFAULT_GRACE_PERIOD, false)?,
            startup_delay: vars.duration("STARTUP_DELAY", Duration::ZERO, true)?,
            worker_threads: vars.number("WORKER_THREADS", 1024)?,
            log_format: logging::LogFormat::from_lookup(&lookup)?,
            project: lookup("GOOGLE_CLOUD_PROJECT").filter(|p| !p.trim().is_empty()),
            debug_routes: vars.flag("ENABLE_DEBUG_ROUTES", false)?,
        };
        config.check_grace_period()?;
        Ok(config)
    }

    /// After SIGTERM the process needs `DRAIN_DELAY + SHUTDOWN_TIMEOUT` at most; if that is
    /// not shorter than the grace period, SIGKILL can land mid-drain and cut requests off.
    fn check_grace_period(&self) -> Result<(), String> {
        let needed = self.drain_delay + self.base.shutdown_timeout;
        if needed < self.grace_period {
            return Ok(());
        }
        Err(format!(
            "DRAIN_DELAY ({}) + SHUTDOWN_TIMEOUT ({}) must be shorter than GRACE_PERIOD ({}), \
             the platform's time between SIGTERM and SIGKILL; shorten them, or set GRACE_PERIOD \
             to your platform's (Kubernetes: terminationGracePeriodSeconds)",
            seconds(self.drain_delay),
            seconds(self.base.shutdown_timeout),
            seconds(self.grace_period),
        ))
    }
}

/// `8s`, `0.5s`: a duration as a reader writes it.
pub fn seconds(duration: Duration) -> String {
    format!("{}s", duration.as_secs_f64())
}
// ANCHOR_END: config

/// What `run` and the tests share with the app.
#[derive(Clone, Default)]
pub struct Ops {
    pub readiness: Readiness,
    pub debug: Arc<DebugHooks>,
}

// ANCHOR: app
/// The whole application: step 04's item API behind this step's production layers.
pub fn app(config: &Config, store: Arc<dyn ItemStore>, ops: &Ops) -> Router {
    let items = step_04::api::router(step_04::api::documented_routes(), store, document);
    production(items, config, ops)
}

/// What this step's layers add to the API's document: who it is, and what a 503 now means.
pub fn document(openapi: &mut utoipa::openapi::OpenApi) {
    openapi.info.title = "step-06 items".into();
    openapi.info.description = Some("The item service of cloud-run-rust, step 06.".into());
    step_04::api::add_error_response(
        openapi,
        "503",
        "The request took longer than REQUEST_TIMEOUT, was shed (more than MAX_CONCURRENCY \
         requests for longer than QUEUE_TIMEOUT), or the store is unavailable; retry after the \
         Retry-After header's seconds",
    );
}

/// Any router (step 04's items here, a later step's too) with the probes and the layers every
/// request goes through: step 04's limits innermost, this step's layers around them.
pub fn production(routes: Router, config: &Config, ops: &Ops) -> Router {
    let mut router = routes.merge(probes::routes(ops.readiness.clone()));
    if config.debug_routes {
        router = router.merge(debug_routes::routes(ops.debug.clone()));
    }
    let shedder = Shedder::new(config.max_concurrency, config.queue_timeout);
    // This step's layers as one stack, listed outermost first (a `ServiceBuilder` reads
    // top-down, unlike `.layer` calls on a `Router`). One `Router::layer` for all of them,
    // because each one boxes and clones the whole stack below it again on every request: six
    // layers in one stack pay that once (the measuring chapter has the numbers).
    let layers = ServiceBuilder::new()
        // Drops a client id that is too long or has odd characters, so one is made.
        .map_request(request_context::sanitize_request_id)
        // Keeps the client's `X-Request-Id` or makes a UUID v4.
        .layer(SetRequestIdLayer::x_request_id(
            request_context::MakeRequestId::default(),
        ))
        // Copies `X-Request-Id` from the request to the response.
        .layer(PropagateRequestIdLayer::x_request_id())
        // The request's span and its access-log line, around everything below, so even a shed
        // or panicked request is logged with its id.
        .layer(request_context::ObserveLayer)
        // At most MAX_CONCURRENCY requests inside, a short wait, then 503 — probes excepted.
        // Outside the deadline, so time spent queueing is not charged to the handler.
        .layer(shedder)
        // tower-http's `CatchPanic` answers with a body type of its own; the layers above take
        // axum's.
        .map_response(request_context::into_axum_response)
        // A panic in anything below becomes a 500 JSON naming the request; the connection and
        // the server carry on.
        .layer(CatchPanicLayer::custom(request_context::panic_response));
    // Around step 04's limits: body size (413), request deadline (503), header size (431).
    step_04::limits(router, config.base.request_timeout).layer(layers)
}
// ANCHOR_END: app

/// Why serving ended badly.
#[derive(Debug, PartialEq, Eq)]
pub enum RunError {
    /// Draining took longer than `SHUTDOWN_TIMEOUT`; this many connections were cut off.
    DrainTimedOut { cut_off: u64 },
    /// The accept loop's task panicked or was cancelled: a bug, with what it said.
    ServerFailed(String),
}

// ANCHOR: run
/// Serves the memory-backed app until `signal`, then drains (see [`run_app`]).
pub async fn run(
    listener: TcpListener,
    config: Config,
    ops: Ops,
    startup: impl Future<Output = ()> + Send + 'static,
    signal: impl Future<Output = &'static str> + Send + 'static,
) -> Result<(), RunError> {
    let store = Arc::new(MemoryStore::new(config.base.max_items));
    let app = app(&config, store.clone(), &ops);
    let outcome = run_app(listener, app, config, ops, startup, signal).await;
    // As in step 04: the process is about to exit, so the store is not freed item by item.
    step_04::exit_without_freeing(store);
    outcome
}

/// Serves `app` until `signal`, then drains: `/readyz` answers 503 at once, connections are
/// still accepted for `DRAIN_DELAY`, then accepting stops and in-flight requests get up to
/// `SHUTDOWN_TIMEOUT` to finish. `startup` is the work to do before the instance is ready; it
/// runs while the server already answers `/healthz`.
pub async fn run_app(
    listener: TcpListener,
    app: Router,
    config: Config,
    ops: Ops,
    startup: impl Future<Output = ()> + Send + 'static,
    signal: impl Future<Output = &'static str> + Send + 'static,
) -> Result<(), RunError> {
    let stop_accepting = CancellationToken::new();
    // The accept loop (step 04's `serve`) runs on its own task from the start, so `/healthz`
    // answers (and the startup probe sees a live process) while start-up work is going on.
    let stop = stop_accepting.clone().cancelled_owned();
    let base = config.base.clone();
    let server = tokio::spawn(async move { step_04::serve(listener, app, &base, stop).await });

    let readiness = ops.readiness.clone();
    // Start-up work runs beside the server; only when it is done does `/readyz` say 200.
    let startup = tokio::spawn(async move {
        startup.await;
        readiness.set_ready();
        tracing::info!("start-up work done; ready");
    });

    // Sleep until the platform says stop.
    let name = signal.await;
    // Not ready any more, right now: whoever polls `/readyz` stops sending work here.
    ops.readiness.set_draining();
    startup.abort();
    let drain_delay = seconds(config.drain_delay);
    tracing::info!(
        signal = name,
        drain_delay,
        "shutdown signal received; /readyz now answers 503"
    );
    // Keep accepting for a moment: requests a load balancer routed here before it saw the 503
    // still get served instead of a refused connection.
    tokio::time::sleep(config.drain_delay).await;

    stop_accepting.cancel();
    // Resolves when the accept loop has stopped and every connection has been drained (or the
    // drain deadline inside `serve` passed).
    outcome(server.await)
}

/// What the accept loop's task came to, told as it happened: a drain that timed out is not a
/// crash, and a crash is not a drain that timed out.
pub fn outcome(joined: Result<Result<(), DrainTimedOut>, JoinError>) -> Result<(), RunError> {
    match joined {
        Ok(Ok(())) => Ok(()),
        Ok(Err(DrainTimedOut { cut_off })) => Err(RunError::DrainTimedOut { cut_off }),
        Err(error) => {
            let what = if error.is_panic() {
                let payload = error.into_panic();
                payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic with no message".into())
            } else {
                "the task was cancelled".into()
            };
            tracing::error!(error = %what, "the accept loop failed");
            Err(RunError::ServerFailed(what))
        }
    }
}
// ANCHOR_END: run

#[cfg(test)]
mod tests {
    use super::*;

    use testkit::env_from as env;

    #[test]
    fn defaults_match_cloud_run() {
        let config = Config::from_lookup(env(&[])).expect("defaults are valid");

        assert_eq!(config.max_concurrency, 80);
        assert_eq!(config.queue_timeout, Duration::from_millis(100));
        assert_eq!(config.drain_delay, Duration::ZERO);
        assert_eq!(config.worker_threads, None);
        assert!(!config.debug_routes);
    }

    #[test]
    fn bad_values_are_one_clear_line() {
        for (name, value) in [
            ("MAX_CONCURRENCY", "0"),
            ("MAX_CONCURRENCY", "lots"),
            ("WORKER_THREADS", "0"),
            ("QUEUE_TIMEOUT", "-1s"),
            ("REQUEST_TIMEOUT", "0"),
            ("ENABLE_DEBUG_ROUTES", "yes please"),
            ("GRACE_PERIOD", "0"),
        ] {
            let error = Config::from_lookup(env(&[(name, value)])).expect_err(name);

            assert!(error.starts_with(name) && error.contains(value), "{error}");
        }
    }

    #[test]
    fn a_drain_that_cannot_fit_the_grace_period_is_refused() {
        let error = Config::from_lookup(env(&[("DRAIN_DELAY", "20s")])).expect_err("20s + 8s");

        assert!(
            error.starts_with("DRAIN_DELAY (20s) + SHUTDOWN_TIMEOUT (8s)"),
            "{error}"
        );
        assert!(!error.contains('\n'), "{error}");
        let longer = env(&[("DRAIN_DELAY", "20s"), ("GRACE_PERIOD", "30s")]);
        assert!(
            Config::from_lookup(longer).is_ok(),
            "fits a 30 s grace period"
        );
        let exact = env(&[("DRAIN_DELAY", "2s")]);
        assert!(
            Config::from_lookup(exact).is_err(),
            "2 s + 8 s leaves no time to exit"
        );
    }

    #[tokio::test]
    async fn a_crashed_accept_loop_is_reported_as_a_crash_not_a_drain() {
        let crashed = tokio::spawn(async {
            if true {
                panic!("accept loop bug");
            }
            Ok(())
        })
        .await;

        assert_eq!(
            outcome(crashed),
            Err(RunError::ServerFailed("accept loop bug".into()))
        );
        assert_eq!(
            outcome(Ok(Err(DrainTimedOut { cut_off: 3 }))),
            Err(RunError::DrainTimedOut { cut_off: 3 })
        );
    }
}
