//! Step 04: the item API, done properly.
//!
//! `GET /health`, `POST /api/items`, `GET /api/items`, `GET /api/items/{id}` and
//! `GET /openapi.json`. Every error is `{"error": "..."}` as `application/json`; bodies, fields
//! and the store are bounded; slow clients are cut off by a header-read timeout; every request
//! has a deadline; a panic becomes a 500; SIGTERM drains as in step 03.
#![forbid(unsafe_code)]

pub mod api;
pub mod error;
pub mod store;

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower_http::LatencyUnit;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::api::AppState;
use crate::error::ApiError;
use crate::store::{ItemStore, MemoryStore};

// ANCHOR: limits
/// Largest request body accepted, in bytes (413 above it). Room for the longest valid item even
/// when a client escapes every character as `\uXXXX` (up to 12 bytes per character).
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Longest `name`, in characters (400 above it).
pub const MAX_NAME_CHARS: usize = 200;
/// Longest `description`, in characters (400 above it).
pub const MAX_DESCRIPTION_CHARS: usize = 2000;
/// `MAX_ITEMS` default: how many items the memory store holds before it answers 507.
/// Chosen so that even the worst case (every field at its limit, 4-byte characters, ~8.8 KB an
/// item) stays near 88 MB, well inside Cloud Run's default 512 MiB: a full store must answer
/// 507, never get the instance killed for memory. Typical items take ~150 bytes.
pub const DEFAULT_MAX_ITEMS: usize = 10_000;
/// `HEADER_READ_TIMEOUT` default: how long a client may take to send a request's headers.
/// hyper runs the same timer while a kept-alive connection waits for its next request, so this
/// is also the keep-alive idle timeout (Go's `ReadHeaderTimeout` and `IdleTimeout` in one).
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// `REQUEST_TIMEOUT` default: how long one request may take, body reading included (503 after).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// `SHUTDOWN_TIMEOUT` default: how long draining may take after SIGTERM.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(8);
// ANCHOR_END: limits

// ANCHOR: config
/// Everything the server reads from its environment, validated once at start-up.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `PORT`: where to listen (default 8080; Cloud Run always sets it).
    pub port: u16,
    /// `REQUEST_TIMEOUT`, e.g. `5s`, `250ms`.
    pub request_timeout: Duration,
    /// `SHUTDOWN_TIMEOUT` (inside Cloud Run's 10 s between SIGTERM and SIGKILL by default).
    pub shutdown_timeout: Duration,
    /// `HEADER_READ_TIMEOUT`, which is also the keep-alive idle timeout.
    pub header_read_timeout: Duration,
    /// `MAX_ITEMS`: the memory store's capacity, from 1 to 1 000 000 000.
    pub max_items: usize,
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
        let duration = |name: &str, default: Duration| match lookup(name) {
            None => Ok(default),
            Some(text) => parse_duration(&text).ok_or_else(|| {
                format!("{name} must be a positive duration such as 5s or 250ms, got {text:?}")
            }),
        };
        let request_timeout = duration("REQUEST_TIMEOUT", DEFAULT_REQUEST_TIMEOUT)?;
        let shutdown_timeout = duration("SHUTDOWN_TIMEOUT", DEFAULT_SHUTDOWN_TIMEOUT)?;
        let header_read_timeout = duration("HEADER_READ_TIMEOUT", DEFAULT_HEADER_READ_TIMEOUT)?;
        let max_items = match lookup("MAX_ITEMS") {
            None => DEFAULT_MAX_ITEMS,
            Some(text) => text
                .trim()
                .parse()
                .ok()
                .filter(|n| (1..=1_000_000_000).contains(n))
                .ok_or_else(|| {
                    format!("MAX_ITEMS must be a whole number from 1 to 1000000000, got {text:?}")
                })?,
        };
        Ok(Config {
            port,
            request_timeout,
            shutdown_timeout,
            header_read_timeout,
            max_items,
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

// ANCHOR: app
/// Builds the whole application: documented routes, JSON fallbacks, state and middleware.
pub fn app(config: &Config, store: Arc<dyn ItemStore>) -> Router {
    let (router, mut openapi) = api::documented_routes().split_for_parts();
    api::add_common_responses(&mut openapi);
    // Serialised once; `/openapi.json` hands out the same bytes every time.
    let openapi = openapi
        .to_json()
        .expect("the OpenAPI document serialises")
        .into();
    let router = router
        // Must come after the routes: it is attached to each route registered so far.
        .method_not_allowed_fallback(api::method_not_allowed)
        .fallback(api::route_not_found)
        .with_state(AppState { store, openapi });
    harden(router, config.request_timeout)
}

/// The middleware every route gets. Listed innermost first: each `.layer` wraps all above it.
pub fn harden(router: Router, request_timeout: Duration) -> Router {
    router
        // The most a body extractor (our `JsonBody`) will read; more is a 413.
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        // A deadline for the handler, including reading the body.
        .layer(middleware::from_fn_with_state(request_timeout, deadline))
        // A panic in anything above becomes a 500 with the usual error body; the connection
        // and the server carry on.
        .layer(CatchPanicLayer::custom(panic_to_500))
        // Outermost, so it logs every response, even the 500 and 503 made just above. The span
        // carries method and URI; the response event adds status and latency.
        .layer(
            TraceLayer::new_for_http()
                // A lean span: method and path, formatted once. (tower-http's default span
                // also records the HTTP version and the whole URI, query string included.)
                .make_span_with(|request: &Request| {
                    tracing::info_span!("request", method = %request.method(), path = request.uri().path())
                })
                .on_response(
                    DefaultOnResponse::new()
                        .level(Level::INFO)
                        .latency_unit(LatencyUnit::Micros),
                ),
        )
}

/// A caught panic: log what it said (the client only learns that it was our fault).
fn panic_to_500(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(not a string)");
    tracing::error!(panic = message, "handler panicked");
    ApiError::Internal.into_response()
}

/// The request timeout, with the JSON error body that tower-http's `TimeoutLayer` cannot give.
async fn deadline(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    // Whichever finishes first. If the deadline does, the handler's future is dropped right
    // where it is parked, so its work stops, and the client gets its 503 at once.
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_elapsed) => ApiError::Timeout.into_response(),
    }
}
// ANCHOR_END: app

// ANCHOR: log_by_hand
/// Request logging written by hand, the way the Go article does it: note the time, run the
/// rest of the stack, log method, path, status and latency. `app` uses tower-http's
/// `TraceLayer` instead (same fields, plus a span every log line inside the request carries);
/// this one is here to show there is no magic in it. Use it with
/// `router.layer(axum::middleware::from_fn(log_by_hand))`.
pub async fn log_by_hand(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    // The handler (and every inner layer) runs here.
    let response = next.run(request).await;
    let latency_us = started.elapsed().as_micros() as u64;
    tracing::info!(%method, path, status = response.status().as_u16(), latency_us, "request");
    response
}
// ANCHOR_END: log_by_hand

// ANCHOR: signal
/// Installs the SIGTERM and SIGINT handlers *now* and returns a future that resolves with the
/// name of the first one to arrive (see step 03 for why installing eagerly matters).
pub fn shutdown_signal() -> std::io::Result<impl Future<Output = &'static str> + Send> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        // Whichever arrives first: the platform sends SIGTERM, a terminal Ctrl-C sends SIGINT.
        tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
        }
    })
}
// ANCHOR_END: signal

/// Draining took longer than `SHUTDOWN_TIMEOUT`.
#[derive(Debug, PartialEq, Eq)]
pub struct DrainTimedOut {
    /// Connections still open when the deadline passed.
    pub cut_off: u64,
}

/// Serves the memory-backed app until `signal`, then drains.
pub async fn run(
    listener: TcpListener,
    config: Config,
    signal: impl Future<Output = &'static str> + Send + 'static,
) -> Result<(), DrainTimedOut> {
    let store = Arc::new(MemoryStore::new(config.max_items));
    serve(listener, app(&config, store), &config, signal).await
}

// ANCHOR: serve
/// Accepts connections and serves `app` on each with hyper's HTTP/1 connection builder, which
/// (unlike `axum::serve`) can time out a client that is slow to send its headers. On `signal`:
/// stop accepting, let each connection finish its current request, close idle ones, and give
/// up after `SHUTDOWN_TIMEOUT`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    config: &Config,
    signal: impl Future<Output = &'static str> + Send + 'static,
) -> Result<(), DrainTimedOut> {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        // Slowloris protection: the whole header must arrive within this time. Between requests
        // on a kept-alive connection the same timer runs, so it doubles as the idle timeout.
        .header_read_timeout(config.header_read_timeout)
        .keep_alive(true);
    let graceful = GracefulShutdown::new();
    let open = Arc::new(AtomicU64::new(0));
    let mut signal = pin!(signal);

    loop {
        // Sleep until a client connects or the signal arrives, whichever comes first.
        let stream = tokio::select! {
            name = &mut signal => {
                tracing::info!(signal = name, "shutdown signal received; draining");
                break;
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(error) => {
                    // Typically "too many open files": pause rather than spin on the error.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Small JSON responses should leave at once, not wait for Nagle's algorithm.
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let connection = http.serve_connection(TokioIo::new(stream), service);
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
