//! Step 03: graceful shutdown.
//!
//! The greeting service of step 02, now able to stop well. On SIGTERM or SIGINT it stops
//! accepting, closes idle keep-alive connections, lets in-flight requests finish, stops its
//! background flush task (which makes a final flush), and exits 0 — unless draining outlives
//! `SHUTDOWN_TIMEOUT`, in which case it logs how many requests it cut off, still makes the
//! final flush, and exits 1.
#![forbid(unsafe_code)]

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use axum::serve::Listener;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_http::timeout::TimeoutLayer;

// ANCHOR: config
/// Everything the server reads from its environment, validated once at start-up.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `PORT`: where to listen (default 8080; Cloud Run always sets it).
    pub port: u16,
    /// `TARGET`: who to greet (default "World").
    pub target: String,
    /// `REQUEST_TIMEOUT`: how long one request may take, e.g. `5s`, `250ms` (default 5 s).
    pub request_timeout: Duration,
    /// `SHUTDOWN_TIMEOUT`: how long draining may take after SIGTERM (default 8 s, inside
    /// Cloud Run's 10 s between SIGTERM and SIGKILL).
    pub shutdown_timeout: Duration,
}

impl Config {
    /// Reads the configuration through `lookup` (normally `std::env::var`), so tests can pass a
    /// map instead of changing the process environment. The error is one line for a human.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, String> {
        let port = match lookup("PORT") {
            None => 8080,
            Some(text) => text
                .trim()
                .parse()
                .map_err(|_| format!("PORT must be a number from 0 to 65535, got {text:?}"))?,
        };
        let target = lookup("TARGET")
            .filter(|t| !t.trim().is_empty())
            .unwrap_or_else(|| "World".to_owned());
        let request_timeout = match lookup("REQUEST_TIMEOUT") {
            None => Duration::from_secs(5),
            Some(text) => parse_duration(&text).ok_or_else(|| {
                format!(
                    "REQUEST_TIMEOUT must be a positive duration such as 5s or 250ms, got {text:?}"
                )
            })?,
        };
        let shutdown_timeout = match lookup("SHUTDOWN_TIMEOUT") {
            None => Duration::from_secs(8),
            Some(text) => parse_duration(&text).ok_or_else(|| {
                format!(
                    "SHUTDOWN_TIMEOUT must be a positive duration such as 8s or 500ms, got {text:?}"
                )
            })?,
        };
        Ok(Config {
            port,
            target,
            request_timeout,
            shutdown_timeout,
        })
    }
}

/// `"5s"`, `"250ms"`, or a bare number of seconds (`"2.5"`); zero, negative or absurd
/// (over an hour) values are refused.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let (number, unit_secs) = if let Some(ms) = text.strip_suffix("ms") {
        (ms, 0.001)
    } else if let Some(s) = text.strip_suffix('s') {
        (s, 1.0)
    } else {
        (text, 1.0)
    };
    let seconds = number.trim().parse::<f64>().ok()? * unit_secs;
    (seconds > 0.0 && seconds <= 3600.0).then(|| Duration::from_secs_f64(seconds))
}
// ANCHOR_END: config

/// `duration` the way a person writes it and [`parse_duration`] reads it back, for logs:
/// `8s`, `250ms`, `1.5s` (`{:?}` would write zero as `0ns` and 100 µs as `100µs`).
pub fn format_duration(duration: Duration) -> String {
    let nanos = duration.subsec_nanos();
    if nanos == 0 {
        format!("{}s", duration.as_secs())
    } else if duration.as_secs() == 0 && nanos.is_multiple_of(1_000_000) {
        format!("{}ms", duration.as_millis())
    } else {
        format!("{}s", duration.as_secs_f64())
    }
}

/// Simulated work per request unless `?work_ms=` says otherwise.
pub const DEFAULT_WORK: Duration = Duration::from_millis(50);
/// The most work a client may ask for: a bounded knob, not a way to tie up the server.
pub const MAX_WORK_MS: u64 = 10_000;

/// Counters the tests (and curious learners) can read.
#[derive(Debug, Default)]
pub struct Stats {
    /// Requests being handled right now: what a drain waits for.
    pub in_flight: AtomicU64,
    /// Requests whose work ran to the end.
    pub completed: AtomicU64,
    /// Requests whose handler was dropped before its work finished.
    pub cancelled: AtomicU64,
}

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub target: Arc<str>,
    pub stats: Arc<Stats>,
}

// ANCHOR: app
/// Builds the whole application: routes, state and the request timeout.
pub fn app(config: &Config, stats: Arc<Stats>) -> Router {
    let state = AppState {
        target: config.target.as_str().into(),
        stats,
    };
    Router::new()
        .route("/", get(greet))
        .with_state(state.clone())
        // The deadline wraps the handler: when it fires, the handler's future is dropped (so its
        // work stops, exactly like a client disconnect) and the client gets a 503 at once.
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            config.request_timeout,
        ))
        // Outermost, so it counts every request, even one the timeout answers.
        .layer(middleware::from_fn_with_state(state, count_in_flight))
}

/// Counts requests in flight, so a drain that runs out of time can say how many it cut off.
async fn count_in_flight(State(state): State<AppState>, request: Request, next: Next) -> Response {
    state.stats.in_flight.fetch_add(1, Ordering::Relaxed);
    // A guard, not a decrement after the `.await`: if this future is dropped mid-request, the
    // code after the `.await` never runs, but `Drop` always does.
    let _in_flight = InFlight(&state.stats);
    next.run(request).await
}

struct InFlight<'a>(&'a Stats);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}
// ANCHOR_END: app

#[derive(Debug, Deserialize)]
pub struct GreetParams {
    /// How long the simulated work takes, in milliseconds.
    work_ms: Option<u64>,
}

// ANCHOR: greet
async fn greet(
    State(state): State<AppState>,
    Query(params): Query<GreetParams>,
) -> Result<String, (StatusCode, String)> {
    let work = match params.work_ms {
        None => DEFAULT_WORK,
        Some(ms) if ms <= MAX_WORK_MS => Duration::from_millis(ms),
        Some(_) => {
            let message = format!("work_ms must be at most {MAX_WORK_MS}\n");
            return Err((StatusCode::BAD_REQUEST, message));
        }
    };
    let guard = CancelGuard::new(&state.stats);
    // The simulated work. This `.await` is where the future waits; if hyper drops the future
    // (client gone, or the timeout fired) it is dropped *here*, and `guard` notices.
    tokio::time::sleep(work).await;
    guard.finish();
    Ok(format!("Hello, {}!\n", state.target))
}
// ANCHOR_END: greet

// ANCHOR: guard
/// Records a request whose future was dropped before it finished.
///
/// Rust has no `ctx.Done()` to poll: cancelling a future *is* dropping it, and dropping runs
/// `Drop` for everything the future owns. So the way to observe cancellation is to own
/// something whose `drop` looks at whether the work completed.
struct CancelGuard<'a> {
    stats: &'a Stats,
    started: Instant,
    finished: bool,
}

impl<'a> CancelGuard<'a> {
    fn new(stats: &'a Stats) -> Self {
        CancelGuard {
            stats,
            started: Instant::now(),
            finished: false,
        }
    }

    fn finish(mut self) {
        self.finished = true;
        self.stats.completed.fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for CancelGuard<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.stats.cancelled.fetch_add(1, Ordering::Relaxed);
            let elapsed_ms = self.started.elapsed().as_millis() as u64;
            tracing::warn!(elapsed_ms, "request cancelled");
        }
    }
}
// ANCHOR_END: guard

// ANCHOR: signal
/// Installs the SIGTERM and SIGINT handlers *now* and returns a future that resolves with the
/// name of the first one to arrive.
///
/// Installing eagerly matters: until a handler is installed, SIGTERM kills the process on the
/// spot. An `async fn` would install nothing until first polled, leaving a window after start-up
/// in which the platform's SIGTERM skips the whole drain.
pub fn shutdown_signal() -> std::io::Result<impl Future<Output = &'static str> + Send> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        // Whichever arrives first: Cloud Run and Kubernetes send SIGTERM, a terminal Ctrl-C
        // sends SIGINT.
        tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
        }
    })
}
// ANCHOR_END: signal

/// How often the background task flushes its summary.
pub const FLUSH_EVERY: Duration = Duration::from_secs(5);

// ANCHOR: flush
/// A background task that must not be lost at shutdown: every [`FLUSH_EVERY`] it reports the
/// counters (think: a batch of metrics sent to a collector), and once more when told to stop.
async fn flush_periodically(stats: Arc<Stats>, stop: CancellationToken) {
    // The first flush is one period after start-up: there is nothing to report before that.
    let mut ticker =
        tokio::time::interval_at(tokio::time::Instant::now() + FLUSH_EVERY, FLUSH_EVERY);
    loop {
        // Sleep until the next tick *or* until told to stop, whichever comes first.
        tokio::select! {
            _ = ticker.tick() => flush(&stats, "periodic"),
            _ = stop.cancelled() => break,
        }
    }
    flush(&stats, "final");
    tracing::info!("background flush stopped");
}

fn flush(stats: &Stats, kind: &str) {
    let completed = stats.completed.load(Ordering::Relaxed);
    let cancelled = stats.cancelled.load(Ordering::Relaxed);
    tracing::info!(kind, completed, cancelled, "flushed stats");
}
// ANCHOR_END: flush

/// Why `run` ended in something other than a clean drain.
#[derive(Debug, PartialEq, Eq)]
pub enum ShutdownError {
    /// Draining took longer than `SHUTDOWN_TIMEOUT`; `cut_off` requests were still in flight.
    DrainTimedOut { cut_off: u64 },
    /// The server stopped on its own, before any signal, or failed while draining.
    ServerFailed(String),
}

/// Logs and returns what the server task's result says, when it is not "stopped as asked".
fn server_failed(ended: Result<std::io::Result<()>, tokio::task::JoinError>) -> ShutdownError {
    let why = match ended {
        Ok(Ok(())) => "it stopped before it was asked to".to_owned(),
        Ok(Err(error)) => error.to_string(),
        Err(error) => error.to_string(),
    };
    tracing::error!(why, "server stopped unexpectedly");
    ShutdownError::ServerFailed(why)
}

// ANCHOR: run
/// Serves until `signal` resolves, then drains: decide when, tell everyone, wait for them.
///
/// Any listener axum can serve will do: `main` passes a `TcpListener`, a test one that fails.
pub async fn run<L>(
    listener: L,
    config: Config,
    signal: impl Future<Output = &'static str> + Send + 'static,
) -> Result<(), ShutdownError>
where
    L: Listener,
    L::Addr: std::fmt::Debug,
{
    let stats = Arc::new(Stats::default());
    // Two tokens, because the order matters: first the server stops taking work, and only
    // once every request has finished (or the deadline has passed) does the background task
    // make its final flush, so that flush counts every request that finished.
    let stop_serving = CancellationToken::new();
    let stop_background = CancellationToken::new();
    // The tracker knows every background task, so we can wait for all of them.
    let background = TaskTracker::new();
    background.spawn(flush_periodically(stats.clone(), stop_background.clone()));

    let server = axum::serve(listener, app(&config, stats.clone()))
        // When the token is cancelled, axum stops accepting (the listening socket is closed,
        // so new connections are refused), tells every connection to finish its current
        // request, and closes idle keep-alive connections at once.
        .with_graceful_shutdown(stop_serving.clone().cancelled_owned());
    // The server runs on its own task so this one is free to wait for the signal.
    let mut server = tokio::spawn(server.into_future());

    // Phase 1, decide when: the first signal, or the server ending on its own (axum's serve
    // loop only ends when told to, so that would be a panic). `&mut server` lends the handle
    // to `select!`, so it is still ours if the signal wins; if the server wins, its result is
    // kept here, because a `JoinHandle` that has given its result must not be awaited again.
    let ended_early = tokio::select! {
        name = signal => {
            tracing::info!(signal = name, "shutdown signal received; draining");
            None
        }
        ended = &mut server => Some(ended),
    };

    // Phases 2 and 3 for the server: tell it, then wait for it, but never past the deadline.
    stop_serving.cancel();
    let outcome = match ended_early {
        Some(ended) => Err(server_failed(ended)),
        // Resolves when every connection is closed: every in-flight request has finished.
        None => match tokio::time::timeout(config.shutdown_timeout, server).await {
            Ok(Ok(Ok(()))) => {
                tracing::info!("all connections closed");
                Ok(())
            }
            Ok(ended) => Err(server_failed(ended)),
            Err(_deadline) => {
                let cut_off = stats.in_flight.load(Ordering::Relaxed);
                tracing::error!(
                    cut_off,
                    "drain deadline passed; exiting with requests still in flight"
                );
                Err(ShutdownError::DrainTimedOut { cut_off })
            }
        },
    };

    // Phases 2 and 3 for the background task, whatever happened above: its counts matter most
    // when requests were cut off. It only has to make one last flush, so it needs no deadline
    // of its own (a flush sent over the network would carry its own timeout).
    stop_background.cancel();
    background.close();
    // Resolves when the background task has made its final flush and returned.
    background.wait().await;
    if outcome.is_ok() {
        tracing::info!("drained; exiting");
    }
    outcome
}
// ANCHOR_END: run
