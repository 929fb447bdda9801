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
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::ServiceExt;
use tower_http::LatencyUnit;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::error::ApiError;
use crate::store::{ItemStore, MemoryStore};

// ANCHOR: limits
/// Largest request body accepted, in bytes (413 above it). Room for the longest valid item even
/// when a client escapes every character as `\uXXXX` (up to 12 bytes per character).
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Most bytes of request headers accepted, names and values together (431 above it). Like
/// nginx's default (four 8 KiB buffers for long header lines), far below Go's 1 MiB; a header a
/// client really needs (cookies, a token) fits with room to spare.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;
/// The most hyper buffers of one request's head (431 with no body above it).
pub const HYPER_MAX_BUF_BYTES: usize = 256 * 1024;
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
    /// What `serve` speaks: HTTP/1.1 here, always (not read from the environment). Step 08
    /// adds HTTP/2 without TLS for gRPC on the same port.
    pub protocols: Protocols,
}

/// The HTTP versions [`serve`] accepts on its one port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocols {
    /// HTTP/1.1 only: a client that opens with HTTP/2's preface is refused.
    Http1,
    /// HTTP/1.1, and HTTP/2 over cleartext with prior knowledge (h2c), told apart by the first
    /// bytes a client sends. gRPC needs HTTP/2; so does Cloud Run's end-to-end HTTP/2 option.
    Http1AndH2c,
}

impl Config {
    /// Reads the configuration through `lookup` (normally `std::env::var`), so tests can pass a
    /// map instead of changing the process environment. The error is one line for a human.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, String> {
        let vars = Vars(lookup);
        Ok(Config {
            port: vars.port()?,
            request_timeout: vars.duration("REQUEST_TIMEOUT", DEFAULT_REQUEST_TIMEOUT, false)?,
            shutdown_timeout: vars.duration("SHUTDOWN_TIMEOUT", DEFAULT_SHUTDOWN_TIMEOUT, false)?,
            header_read_timeout: vars.duration(
                "HEADER_READ_TIMEOUT",
                DEFAULT_HEADER_READ_TIMEOUT,
                false,
            )?,
            max_items: vars
                .number("MAX_ITEMS", 1_000_000_000)?
                .unwrap_or(DEFAULT_MAX_ITEMS),
            protocols: Protocols::Http1,
        })
    }
}

/// Typed reads of environment variables, each error one line that names the variable, what
/// it accepts and what it got. Later steps read their own variables through it too.
pub struct Vars<L>(pub L);

impl<L: Fn(&str) -> Option<String>> Vars<L> {
    /// The raw value, if set.
    pub fn get(&self, name: &str) -> Option<String> {
        (self.0)(name)
    }

    /// `PORT`, default 8080 (0 asks the system for a free port, as the tests do).
    pub fn port(&self) -> Result<u16, String> {
        match self.get("PORT") {
            None => Ok(8080),
            Some(text) => text
                .trim()
                .parse()
                .map_err(|_| format!("PORT must be a number from 0 to 65535, got {text:?}")),
        }
    }

    /// A duration (see [`parse_duration`]) of at most an hour; zero only where `zero_ok`.
    pub fn duration(
        &self,
        name: &str,
        default: Duration,
        zero_ok: bool,
    ) -> Result<Duration, String> {
        self.duration_up_to(name, default, zero_ok, Duration::from_secs(3600))
    }

    /// A duration of at most `max`; zero only where `zero_ok`.
    pub fn duration_up_to(
        &self,
        name: &str,
        default: Duration,
        zero_ok: bool,
        max: Duration,
    ) -> Result<Duration, String> {
        let Some(text) = self.get(name) else {
            return Ok(default);
        };
        parse_duration(&text)
            .filter(|d| *d <= max && (zero_ok || *d >= Duration::from_millis(1)))
            .ok_or_else(|| {
                let zero = if zero_ok { "0 or " } else { "" };
                format!(
                    "{name} must be {zero}a duration from 1ms to {}, written 250ms, 5s, 2m, 1h \
                     or 2.5 (seconds), got {text:?}",
                    human(max)
                )
            })
    }

    /// A whole number from 1 to `max`, or `None` when unset.
    pub fn number(&self, name: &str, max: usize) -> Result<Option<usize>, String> {
        match self.get(name) {
            None => Ok(None),
            Some(text) => match text.trim().parse::<usize>() {
                Ok(n) if (1..=max).contains(&n) => Ok(Some(n)),
                _ => Err(format!(
                    "{name} must be a whole number from 1 to {max}, got {text:?}"
                )),
            },
        }
    }

    /// `1`/`true` or `0`/`false`/empty; unset is `default`.
    pub fn flag(&self, name: &str, default: bool) -> Result<bool, String> {
        match self.get(name).as_deref().map(str::trim) {
            None => Ok(default),
            Some("1" | "true") => Ok(true),
            Some("" | "0" | "false") => Ok(false),
            Some(other) => Err(format!("{name} must be 1 or 0, got {other:?}")),
        }
    }
}

/// The one duration syntax every step from here on accepts: `250ms`, `5s`, `2m`, `1h`, or a
/// bare number of seconds (`2.5`). Negative, infinite and unreadable values are `None`; the
/// caller ([`Vars::duration`]) decides what range it accepts.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let (number, unit_secs) = if let Some(ms) = text.strip_suffix("ms") {
        (ms, 0.001)
    } else if let Some(s) = text.strip_suffix('s') {
        (s, 1.0)
    } else if let Some(m) = text.strip_suffix('m') {
        (m, 60.0)
    } else if let Some(h) = text.strip_suffix('h') {
        (h, 3600.0)
    } else {
        (text, 1.0)
    };
    let seconds = number.trim().parse::<f64>().ok()? * unit_secs;
    Duration::try_from_secs_f64(seconds).ok()
}

/// `1h`, `24h`, `90s`: a whole duration as a reader writes it.
fn human(d: Duration) -> String {
    match d.as_secs() {
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}
// ANCHOR_END: config

// ANCHOR: app
/// Builds the whole application: documented routes, JSON fallbacks, state and middleware.
pub fn app(config: &Config, store: Arc<dyn ItemStore>) -> Router {
    let items = api::router(api::documented_routes(), store, |_| {});
    harden(items, config.request_timeout)
}

/// The middleware every route gets. Listed innermost first: each `.layer` wraps all above it.
pub fn harden(router: Router, request_timeout: Duration) -> Router {
    limits(router, request_timeout)
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

/// The limits every request meets, whatever else a later step wraps around them: the body
/// limit, the request deadline and the header limit, innermost first.
pub fn limits(router: Router, request_timeout: Duration) -> Router {
    router
        // The most a body extractor (our `JsonBody`) will read; more is a 413.
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        // A deadline for the handler, including reading the body.
        .layer(middleware::from_fn_with_state(request_timeout, deadline))
        // Oversized headers are refused before anything else looks at them.
        .layer(middleware::from_fn(limit_headers))
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

// ANCHOR: deadline
/// When the request's deadline passes, as a request extension: a handler that calls another
/// service gives that call only what remains (step 09).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestDeadline(pub tokio::time::Instant);

/// The request timeout, with the JSON error body that tower-http's `TimeoutLayer` cannot give.
async fn deadline(State(limit): State<Duration>, mut request: Request, next: Next) -> Response {
    let at = tokio::time::Instant::now() + limit;
    request.extensions_mut().insert(RequestDeadline(at));
    // Whichever finishes first. If the deadline does, the handler's future is dropped right
    // where it is parked, so its work stops, and the client gets its 503 at once.
    match tokio::time::timeout_at(at, next.run(request)).await {
        Ok(response) => response,
        Err(_elapsed) => ApiError::Timeout.into_response(),
    }
}
// ANCHOR_END: deadline
// ANCHOR_END: app

// ANCHOR: header_limit
/// Refuses a request whose headers add up to more than [`MAX_HEADER_BYTES`] with a JSON 431.
/// hyper's own limit ([`HYPER_MAX_BUF_BYTES`], set in `serve`) sits above this one as a
/// backstop: past it, hyper answers 431 itself, with no body, before any of our code runs.
async fn limit_headers(request: Request, next: Next) -> Response {
    let bytes: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if bytes > MAX_HEADER_BYTES {
        return ApiError::HeadersTooLarge.into_response();
    }
    next.run(request).await
}
// ANCHOR_END: header_limit

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
    let stop = async {
        // Sleeps until the platform (or Ctrl-C) says stop.
        let name = signal.await;
        tracing::info!(signal = name, "shutdown signal received; draining");
    };
    let outcome = serve(listener, app(&config, store.clone()), &config, stop).await;
    exit_without_freeing(store);
    outcome
}

/// The process exits right after the drain, and the kernel takes back all of its memory at
/// once. Freeing the store item by item first spends the shutdown window on nothing, more the
/// fuller the store: measured here after an 8 s POST load (about 360 000 items, release
/// build), SIGTERM to exit took 41 ms with the store freed and 9 ms without. Safe because the
/// store holds nothing but memory: no file to flush, no connection to close. This keeps one
/// reference that is never dropped, so the store's last `Drop` never runs.
pub fn exit_without_freeing<T>(store: Arc<T>) {
    std::mem::forget(store);
}

// ANCHOR: serve
/// Accepts connections and serves `app` on each with hyper's connection builder, which
/// (unlike `axum::serve`) can time out a client that is slow to send its headers. When `stop`
/// resolves: stop accepting, let each connection finish its current request, close idle ones,
/// and give up after `SHUTDOWN_TIMEOUT`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    config: &Config,
    stop: impl Future<Output = ()>,
) -> Result<(), DrainTimedOut> {
    // hyper_util's "auto" builder holds an HTTP/1 and an HTTP/2 builder; `Protocols::Http1`
    // (this step) keeps it to HTTP/1, so each connection goes straight to the HTTP/1 one.
    let mut http = auto::Builder::new(TokioExecutor::new());
    http.http1()
        .timer(TokioTimer::new())
        // Slowloris protection: the whole header must arrive within this time. Between requests
        // on a kept-alive connection the same timer runs, so it doubles as the idle timeout.
        .header_read_timeout(config.header_read_timeout)
        // The most hyper buffers while it reads a request's head: the backstop behind
        // `MAX_HEADER_BYTES` (past it hyper answers 431 itself, with no body). Its default is
        // about 400 KB; 256 KiB still lets a 200 KB header reach `limit_headers` and its JSON.
        .max_buf_size(HYPER_MAX_BUF_BYTES)
        .keep_alive(true);
    // HTTP/2 (step 08): the same bound on a request's headers.
    http.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(HYPER_MAX_BUF_BYTES as u32);
    let sniffs = config.protocols == Protocols::Http1AndH2c;
    let http = if sniffs { http } else { http.http1_only() };
    let graceful = GracefulShutdown::new();
    let open = Arc::new(AtomicU64::new(0));
    let mut stop = pin!(stop);

    loop {
        // Sleep until a client connects or it is time to stop, whichever comes first.
        let (stream, peer) = tokio::select! {
            () = &mut stop => break,
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
        // Small JSON responses should leave at once, not wait for Nagle's algorithm.
        let _ = stream.set_nodelay(true);
        // Every request learns its peer's address (`ConnectInfo`, as axum's own `serve`
        // provides it), for a later step's access log.
        let greeted = Arc::new(tokio::sync::Notify::new());
        let first_request = greeted.clone();
        let app = app
            .clone()
            .map_request(move |mut request: Request<Incoming>| {
                first_request.notify_one();
                request.extensions_mut().insert(ConnectInfo(peer));
                request
            });
        let connection = http
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(app))
            .into_owned();
        // `watch` lets `graceful.shutdown()` below reach this connection.
        let connection = graceful.watch(connection);
        let guard = OpenConnection::new(&open);
        let header_read_timeout = config.header_read_timeout;
        // One task per connection: a slow client only ever holds up its own task.
        tokio::spawn(async move {
            let _guard = guard;
            let mut connection = pin!(connection);
            if sniffs {
                // With h2c, hyper_util reads the first bytes to choose HTTP/1 or HTTP/2 and has
                // no timeout of its own there: the first request gets the header-read timeout.
                let first = tokio::time::timeout(header_read_timeout, greeted.notified());
                tokio::select! {
                    ended = connection.as_mut() => return log_end(ended),
                    // Too slow: returning drops the connection, which closes it.
                    waited = first => if waited.is_err() { return },
                }
            }
            // Resolves when the client closes, a timeout fires, or the drain closes it.
            log_end(connection.await);
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

fn log_end(ended: Result<(), Box<dyn std::error::Error + Send + Sync>>) {
    if let Err(error) = ended {
        tracing::debug!(%error, "connection ended with an error");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_duration_syntax_with_its_range_in_the_error() {
        let vars = Vars(|name: &str| match name {
            "A" => Some("250ms".to_string()),
            "B" => Some("2m".to_string()),
            "C" => Some("0".to_string()),
            "D" => Some("2h".to_string()),
            "E" => Some("soon".to_string()),
            _ => None,
        });
        let second = Duration::from_secs(1);

        assert_eq!(
            vars.duration("A", second, false),
            Ok(Duration::from_millis(250))
        );
        assert_eq!(
            vars.duration("B", second, false),
            Ok(Duration::from_secs(120))
        );
        assert_eq!(vars.duration("C", second, true), Ok(Duration::ZERO));
        assert_eq!(vars.duration("unset", second, false), Ok(second));
        let day = Duration::from_secs(86_400);
        assert_eq!(
            vars.duration_up_to("D", second, false, day),
            Ok(7200 * second)
        );
        for (name, zero_ok) in [("C", false), ("D", false), ("E", true)] {
            let error = vars.duration(name, second, zero_ok).expect_err(name);
            assert!(error.starts_with(name), "{error}");
            assert!(
                error.contains("to 1h, written 250ms, 5s, 2m, 1h or 2.5"),
                "{error}"
            );
        }
        for bad in ["-1s", "inf", "NaN", "1d", ""] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }
}
