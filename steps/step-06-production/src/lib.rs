//! Step 06: production-ready on Cloud Run.
//!
//! The item API of step 04 (same contract: `GET /health`, `POST /api/items`, `GET /api/items`,
//! `GET /api/items/{id}`, `GET /openapi.json`), wrapped in what a team really runs: Cloud
//! Logging JSON with the request id and trace on every line, a concurrency limit that sheds
//! load fast, liveness and readiness probes (`/healthz`, `/readyz`), panics turned into 500s
//! that name the request, and (in `main`) a runtime sized to the container's CPU quota.
#![forbid(unsafe_code)]

pub mod api;
pub mod cpus;
pub mod debug_routes;
pub mod error;
pub mod logging;
pub mod probes;
pub mod request_context;
pub mod shedding;
pub mod store;
pub mod trace_context;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use tower::util::MapRequestLayer;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

use crate::api::AppState;
use crate::error::ApiError;
use crate::store::{ItemStore, MemoryStore};

pub use debug_routes::DebugHooks;
pub use probes::{Phase, Readiness};
pub use shedding::Shedder;

// ANCHOR: limits
/// Largest request body accepted, in bytes (413 above it); as in step 04.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Longest `name`, in characters (400 above it).
pub const MAX_NAME_CHARS: usize = 200;
/// Longest `description`, in characters (400 above it).
pub const MAX_DESCRIPTION_CHARS: usize = 2000;
/// `MAX_ITEMS` default: how many items the memory store holds before it answers 507 (the
/// worst case, every field at its limit, stays near 88 MB: see step 04).
pub const DEFAULT_MAX_ITEMS: usize = 10_000;
/// `MAX_CONCURRENCY` default: Cloud Run's default `--concurrency`.
pub const DEFAULT_MAX_CONCURRENCY: usize = 80;
/// `QUEUE_TIMEOUT` default: how long a request beyond the limit waits for a slot.
pub const DEFAULT_QUEUE_TIMEOUT: Duration = Duration::from_millis(100);
// ANCHOR_END: limits

// ANCHOR: config
/// Everything the server reads from its environment, validated once at start-up.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `PORT` (default 8080).
    pub port: u16,
    /// `REQUEST_TIMEOUT` (default 5 s).
    pub request_timeout: Duration,
    /// `SHUTDOWN_TIMEOUT`: how long draining may take once we stop accepting (default 8 s).
    pub shutdown_timeout: Duration,
    /// `HEADER_READ_TIMEOUT`, which is also the keep-alive idle timeout (default 10 s).
    pub header_read_timeout: Duration,
    /// `MAX_ITEMS`: the memory store's capacity, from 1 to 1 000 000 000 (default 100 000).
    pub max_items: usize,
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
    /// Reads the configuration through `lookup` (normally `std::env::var`).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, String> {
        let duration = |name: &str, default: Duration, zero_ok: bool| match lookup(name) {
            None => Ok(default),
            Some(text) => parse_duration(&text, zero_ok).ok_or_else(|| {
                let zero = if zero_ok { "zero or a " } else { "a " };
                format!("{name} must be {zero}positive duration such as 5s or 250ms, got {text:?}")
            }),
        };
        let number = |name: &str, max: usize| -> Result<Option<usize>, String> {
            match lookup(name) {
                None => Ok(None),
                Some(text) => match text.trim().parse::<usize>() {
                    Ok(n) if (1..=max).contains(&n) => Ok(Some(n)),
                    _ => Err(format!(
                        "{name} must be a whole number from 1 to {max}, got {text:?}"
                    )),
                },
            }
        };
        let port = match lookup("PORT") {
            None => 8080,
            Some(text) => text
                .trim()
                .parse()
                .map_err(|_| format!("PORT must be a number from 0 to 65535, got {text:?}"))?,
        };
        let debug_routes = match lookup("ENABLE_DEBUG_ROUTES").as_deref().map(str::trim) {
            None | Some("" | "0" | "false") => false,
            Some("1" | "true") => true,
            Some(other) => {
                return Err(format!("ENABLE_DEBUG_ROUTES must be 1 or 0, got {other:?}"));
            }
        };
        Ok(Config {
            port,
            request_timeout: duration("REQUEST_TIMEOUT", Duration::from_secs(5), false)?,
            shutdown_timeout: duration("SHUTDOWN_TIMEOUT", Duration::from_secs(8), false)?,
            header_read_timeout: duration("HEADER_READ_TIMEOUT", Duration::from_secs(10), false)?,
            max_items: number("MAX_ITEMS", 1_000_000_000)?.unwrap_or(DEFAULT_MAX_ITEMS),
            max_concurrency: number("MAX_CONCURRENCY", 10_000)?.unwrap_or(DEFAULT_MAX_CONCURRENCY),
            queue_timeout: duration("QUEUE_TIMEOUT", DEFAULT_QUEUE_TIMEOUT, true)?,
            drain_delay: duration("DRAIN_DELAY", Duration::ZERO, true)?,
            startup_delay: duration("STARTUP_DELAY", Duration::ZERO, true)?,
            worker_threads: number("WORKER_THREADS", 1024)?,
            log_format: logging::LogFormat::from_lookup(&lookup)?,
            project: lookup("GOOGLE_CLOUD_PROJECT").filter(|p| !p.trim().is_empty()),
            debug_routes,
        })
    }
}

/// `"5s"`, `"250ms"`, or a bare number of seconds; negative or absurd (over an hour) values
/// are refused, and zero unless `zero_ok`.
pub fn parse_duration(text: &str, zero_ok: bool) -> Option<Duration> {
    let text = text.trim();
    let (number, unit_secs) = if let Some(ms) = text.strip_suffix("ms") {
        (ms, 0.001)
    } else if let Some(s) = text.strip_suffix('s') {
        (s, 1.0)
    } else {
        (text, 1.0)
    };
    let seconds = number.trim().parse::<f64>().ok()? * unit_secs;
    let positive = seconds > 0.0 || (zero_ok && seconds == 0.0);
    (positive && seconds <= 3600.0).then(|| Duration::from_secs_f64(seconds))
}
// ANCHOR_END: config

/// What `run` and the tests share with the app.
#[derive(Clone, Default)]
pub struct Ops {
    pub readiness: Readiness,
    pub debug: Arc<DebugHooks>,
}

// ANCHOR: app
/// The whole application: step 04's item API, the probes, and the layers every request goes
/// through. Listed innermost first: each `.layer` wraps everything above it.
pub fn app(config: &Config, store: Arc<dyn ItemStore>, ops: &Ops) -> Router {
    let (items, mut openapi) = api::documented_routes().split_for_parts();
    api::add_common_responses(&mut openapi);
    let openapi = openapi
        .to_json()
        .expect("the OpenAPI document serialises")
        .into();
    let mut router = items
        .method_not_allowed_fallback(api::method_not_allowed)
        .fallback(api::route_not_found)
        .with_state(AppState { store, openapi })
        .merge(probes::routes(ops.readiness.clone()));
    if config.debug_routes {
        router = router.merge(debug_routes::routes(ops.debug.clone()));
    }
    let shedder = Shedder::new(config.max_concurrency, config.queue_timeout);
    router
        // As in step 04: the most a body extractor reads (413 above), and the request deadline.
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(
            config.request_timeout,
            deadline,
        ))
        // A panic in anything above becomes a 500 JSON naming the request; the connection and
        // the server carry on.
        .layer(CatchPanicLayer::custom(request_context::panic_response))
        // At most MAX_CONCURRENCY requests inside, a short wait, then 503 — probes excepted.
        // Outside the deadline, so time spent queueing is not charged to the handler.
        .layer(middleware::from_fn_with_state(
            shedder,
            shedding::limit_concurrency,
        ))
        // The request's span and its access-log line, around everything else, so even a shed
        // or panicked request is logged with its id.
        .layer(middleware::from_fn(request_context::observe))
        // Copies `X-Request-Id` from the request to the response.
        .layer(PropagateRequestIdLayer::x_request_id())
        // Keeps the client's `X-Request-Id` or makes a UUID v4.
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        // Drops a client id that is too long or has odd characters, so one is made instead.
        .layer(MapRequestLayer::new(request_context::sanitize_request_id))
}
// ANCHOR_END: app

/// The request timeout, with the JSON error body that tower-http's `TimeoutLayer` cannot give
/// (as in step 04).
async fn deadline(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    // Whichever finishes first. If the deadline does, the handler's future is dropped right
    // where it is parked, so its work stops, and the client gets its 503 at once.
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_elapsed) => ApiError::Timeout.into_response(),
    }
}

/// Draining took longer than `SHUTDOWN_TIMEOUT`.
#[derive(Debug, PartialEq, Eq)]
pub struct DrainTimedOut {
    /// Connections still open when the deadline passed.
    pub cut_off: u64,
}

// ANCHOR: run
/// Serves the memory-backed app until `signal`, then drains: `/readyz` answers 503 at once,
/// connections are still accepted for `DRAIN_DELAY`, then accepting stops and in-flight
/// requests get up to `SHUTDOWN_TIMEOUT` to finish. `startup` is the work to do before the
/// instance is ready; it runs while the server already answers `/healthz`.
pub async fn run(
    listener: TcpListener,
    config: Config,
    ops: Ops,
    startup: impl Future<Output = ()> + Send + 'static,
    signal: impl Future<Output = &'static str> + Send + 'static,
) -> Result<(), DrainTimedOut> {
    let store = Arc::new(MemoryStore::new(config.max_items));
    let app = app(&config, store, &ops);
    let stop_accepting = CancellationToken::new();
    // The accept loop runs on its own task from the start, so `/healthz` answers (and the
    // startup probe sees a live process) while start-up work is still going on.
    let server = tokio::spawn(serve(listener, app, config.clone(), stop_accepting.clone()));

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
    tracing::info!(signal = name, drain_delay = ?config.drain_delay, "shutdown signal received; /readyz now answers 503");
    // Keep accepting for a moment: requests a load balancer routed here before it saw the 503
    // still get served instead of a refused connection.
    tokio::time::sleep(config.drain_delay).await;

    stop_accepting.cancel();
    // Resolves when the accept loop has stopped and every connection has been drained (or the
    // drain deadline inside `serve` passed).
    match server.await {
        Ok(result) => result,
        Err(_) => Err(DrainTimedOut { cut_off: 0 }),
    }
}
// ANCHOR_END: run

// ANCHOR: serve
/// Step 04's accept loop (hyper's connection builder, for the header-read timeout), stopped
/// by a token instead of the signal itself, and telling each request its peer's address.
async fn serve(
    listener: TcpListener,
    app: Router,
    config: Config,
    stop_accepting: CancellationToken,
) -> Result<(), DrainTimedOut> {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        // Slowloris protection; between requests on a kept-alive connection the same timer
        // runs, so it doubles as the idle timeout.
        .header_read_timeout(config.header_read_timeout)
        .keep_alive(true);
    let graceful = GracefulShutdown::new();
    let open = Arc::new(AtomicU64::new(0));

    loop {
        // Sleep until a client connects or it is time to stop accepting.
        let (stream, peer) = tokio::select! {
            _ = stop_accepting.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Typically "too many open files": pause rather than spin on the error.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        // The peer's address, for the access log's `remoteIp` when no proxy header names one.
        let app = app
            .clone()
            .map_request(move |mut request: Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                request
            });
        let connection = http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app));
        // `watch` lets `graceful.shutdown()` below reach this connection.
        let connection = graceful.watch(connection);
        let guard = OpenConnection::new(&open);
        // One task per connection: a slow client only ever holds up its own task.
        tokio::spawn(async move {
            let _guard = guard;
            // Resolves when the client closes, a timeout fires, or the drain closes it.
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection ended with an error");
            }
        });
    }

    // Stop accepting: from here on, connection attempts are refused.
    drop(listener);
    tracing::info!(connections = open.load(Ordering::Relaxed), "draining");
    // Resolves when every watched connection has finished its request and closed.
    match tokio::time::timeout(config.shutdown_timeout, graceful.shutdown()).await {
        Ok(()) => {
            tracing::info!("drained; exiting");
            Ok(())
        }
        Err(_) => {
            let cut_off = open.load(Ordering::Relaxed);
            tracing::error!(cut_off, deadline = ?config.shutdown_timeout, "drain deadline passed; cutting off open connections");
            Err(DrainTimedOut { cut_off })
        }
    }
}

/// Counts a connection as open from accept until its task ends, however it ends.
struct OpenConnection(Arc<AtomicU64>);

impl OpenConnection {
    fn new(open: &Arc<AtomicU64>) -> Self {
        open.fetch_add(1, Ordering::Relaxed);
        OpenConnection(open.clone())
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
// ANCHOR_END: serve

/// Installs the SIGTERM and SIGINT handlers *now* (see step 03) and returns a future that
/// resolves with the name of the first one to arrive.
pub fn shutdown_signal() -> std::io::Result<impl Future<Output = &'static str> + Send> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        // Whichever arrives first: the platform sends SIGTERM, a terminal's Ctrl-C SIGINT.
        tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |key| pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
    }

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
        ] {
            let error = Config::from_lookup(env(&[(name, value)])).expect_err(name);

            assert!(error.starts_with(name) && error.contains(value), "{error}");
        }
    }
}
