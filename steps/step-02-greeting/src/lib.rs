//! Step 02: axum, configuration from the environment, and request cancellation you can see.
//!
//! `GET /` answers "Hello, {TARGET}!" after some simulated work. If the client goes away first,
//! hyper drops the handler's future at the `.await` it is parked on: the work simply stops, and a
//! drop guard records that it happened. If the work outlives `REQUEST_TIMEOUT`, the client gets
//! `503 Service Unavailable` at the deadline.
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use serde::Deserialize;
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
        Ok(Config {
            port,
            target,
            request_timeout,
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
        .with_state(state)
        // The deadline wraps the handler: when it fires, the handler's future is dropped (so its
        // work stops, exactly like a client disconnect) and the client gets a 503 at once.
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            config.request_timeout,
        ))
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
