//! Step 05: the pitfalls lab.
//!
//! One server, and for each classic mistake of a network service a pair of routes side by side:
//! `/pitfalls/<name>/broken` shows the mistake, `/pitfalls/<name>/fixed` the cure. Each pair
//! lives in its own module under [`pitfalls`], broken code first, fixed code right after it.
//! `GET /debug/stats` reports what the tests (and a curious learner) need to *see* each bug:
//! tasks alive in the runtime, work started and finished, upstream connections opened, the
//! longest stall of the runtime. The lab carries its own upstream (`/upstream/hello` answers,
//! `/upstream/hang` never does), so it runs with nothing else around; tests point
//! `UPSTREAM_URL` at stubs of their own that count connections.
//!
//! The data race and the lock held across `.await` have no broken route: Rust refuses to
//! compile them. See [`pitfalls::shared_state`] for the programs it rejects.
#![forbid(unsafe_code)]

pub mod pitfalls;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::Json;
use axum::routing::get;
use axum::serve::Listener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use pitfalls::{blocking, cancel, leak, reuse, shared_state, timeout, upstream};

// ANCHOR: config
/// Everything the lab reads from its environment, validated once at start-up.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `PORT`: where to listen (default 8080).
    pub port: u16,
    /// `WORKER_THREADS`: runtime worker threads (default: one per CPU). `WORKER_THREADS=1` makes the
    /// blocking pitfall easy to feel.
    pub workers: Option<usize>,
    /// `UPSTREAM_URL`: the base URL of the service the upstream pitfalls call, `http://` only
    /// (default: this server's own `/upstream` routes).
    pub upstream_url: Option<String>,
    /// `UPSTREAM_TIMEOUT`: the deadline of the fixed upstream call (default 2 s).
    pub upstream_timeout: Duration,
    /// `SHUTDOWN_TIMEOUT`: how long draining may take after SIGTERM (default 8 s).
    pub shutdown_timeout: Duration,
}

impl Config {
    /// Reads the configuration through `lookup` (normally `std::env::var`). The error is one
    /// line for a human.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, String> {
        let port = match lookup("PORT") {
            None => 8080,
            Some(text) => text
                .trim()
                .parse()
                .map_err(|_| format!("PORT must be a number from 0 to 65535, got {text:?}"))?,
        };
        let workers = match lookup("WORKER_THREADS") {
            None => None,
            Some(text) => match text.trim().parse::<usize>() {
                Ok(n) if (1..=MAX_WORKERS).contains(&n) => Some(n),
                _ => {
                    return Err(format!(
                        "WORKER_THREADS must be a number from 1 to {MAX_WORKERS}, got {text:?}"
                    ));
                }
            },
        };
        let upstream_url = match lookup("UPSTREAM_URL") {
            None => None,
            Some(text) => Some(parse_upstream(&text).ok_or_else(|| {
                format!("UPSTREAM_URL must be an http:// URL such as http://127.0.0.1:9000, got {text:?}")
            })?),
        };
        let upstream_timeout = match lookup("UPSTREAM_TIMEOUT") {
            None => Duration::from_secs(2),
            Some(text) => parse_duration(&text).ok_or_else(|| {
                format!(
                    "UPSTREAM_TIMEOUT must be a positive duration such as 2s or 500ms, got {text:?}"
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
            workers,
            upstream_url,
            upstream_timeout,
            shutdown_timeout,
        })
    }
}

/// More worker threads than this is a typo, not a configuration.
pub const MAX_WORKERS: usize = 256;

/// `http://host:port/some/base` with any trailing `/` removed; `None` for anything else.
fn parse_upstream(text: &str) -> Option<String> {
    let base = text.trim().trim_end_matches('/');
    let uri: Uri = base.parse().ok()?;
    (uri.scheme_str() == Some("http") && uri.authority().is_some() && uri.query().is_none())
        .then(|| base.to_owned())
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

/// A handler's error: a status and a one-line, plain-text explanation.
pub type Problem = (StatusCode, String);

/// The most simulated work (or blocking) a client may ask for with `?ms=`.
pub const MAX_MS: u64 = 10_000;

/// `?ms=` turned into a bounded duration: a knob for the lab, not a way to tie up the server.
pub fn millis(ms: Option<u64>, default: Duration) -> Result<Duration, Problem> {
    match ms {
        None => Ok(default),
        Some(ms) if ms <= MAX_MS => Ok(Duration::from_millis(ms)),
        Some(_) => Err((
            StatusCode::BAD_REQUEST,
            format!("ms must be at most {MAX_MS}\n"),
        )),
    }
}

// ANCHOR: stats
/// Started / finished / cancelled counts of one kind of simulated work.
#[derive(Debug, Default)]
pub struct WorkCounters {
    pub started: AtomicU64,
    pub finished: AtomicU64,
    /// Dropped before finishing: the request's future was cancelled with the work inside it.
    pub cancelled: AtomicU64,
}

/// What `/debug/stats` reports: the evidence for each pitfall.
#[derive(Debug, Default)]
pub struct Stats {
    /// Heartbeat tasks running right now, started by `/pitfalls/leak/broken`.
    pub leak_broken_running: AtomicU64,
    /// Heartbeat tasks running right now, started by `/pitfalls/leak/fixed`.
    pub leak_fixed_running: AtomicU64,
    pub cancel_broken: WorkCounters,
    pub cancel_fixed: WorkCounters,
    /// TCP connections opened by the throw-away clients of `/pitfalls/reuse/broken`.
    pub upstream_per_request_clients: AtomicU64,
    /// TCP connections opened by the one shared client of `/pitfalls/reuse/fixed`.
    pub upstream_shared_client: AtomicU64,
    /// TCP connections opened by the client of the two timeout routes, counted apart so that
    /// calls to an upstream that never answers do not show in the reuse routes' count.
    pub upstream_timeout_client: AtomicU64,
    /// The longest time the runtime was too busy to run a 10 ms ticker, in milliseconds.
    pub longest_stall_ms: AtomicU64,
}
// ANCHOR_END: stats

/// Counts one running thing: +1 when created, -1 when dropped, however the drop happens
/// (finished, aborted, cancelled, runtime shut down).
pub struct Running {
    stats: Arc<Stats>,
    gauge: fn(&Stats) -> &AtomicU64,
}

impl Running {
    pub fn start(stats: Arc<Stats>, gauge: fn(&Stats) -> &AtomicU64) -> Running {
        gauge(&stats).fetch_add(1, Ordering::Relaxed);
        Running { stats, gauge }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        (self.gauge)(&self.stats).fetch_sub(1, Ordering::Relaxed);
    }
}

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub stats: Arc<Stats>,
    /// Cancelled when shutdown begins; per-request tokens are its children.
    pub shutdown: CancellationToken,
    /// Background tasks that shutdown waits for.
    pub tasks: TaskTracker,
    /// The one HTTP client every request to `/pitfalls/reuse/fixed` shares: one pool of
    /// keep-alive connections.
    pub client: upstream::HttpClient,
    /// The client both timeout routes share, with a connection count of its own.
    pub timeout_client: upstream::HttpClient,
    /// `<UPSTREAM_URL>/hello`, which answers.
    pub upstream_hello: Uri,
    /// `<UPSTREAM_URL>/hang`, which (on the built-in upstream) never answers.
    pub upstream_hang: Uri,
    pub upstream_timeout: Duration,
    pub hits: shared_state::HitCounts,
    pub journal: shared_state::SharedJournal,
}

impl AppState {
    /// Builds the state; `local` is where this server listens (the default upstream).
    pub fn new(config: &Config, local: SocketAddr) -> Result<AppState, String> {
        let base = config
            .upstream_url
            .clone()
            .unwrap_or_else(|| format!("http://127.0.0.1:{}/upstream", local.port()));
        let endpoint = |path: &str| {
            format!("{base}{path}")
                .parse::<Uri>()
                .map_err(|e| format!("UPSTREAM_URL {base:?} does not make a URL: {e}"))
        };
        let stats = Arc::new(Stats::default());
        Ok(AppState {
            client: upstream::client(stats.clone(), |s| &s.upstream_shared_client),
            timeout_client: upstream::client(stats.clone(), |s| &s.upstream_timeout_client),
            stats,
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            upstream_hello: endpoint("/hello")?,
            upstream_hang: endpoint("/hang")?,
            upstream_timeout: config.upstream_timeout,
            hits: Default::default(),
            journal: Default::default(),
        })
    }
}

// ANCHOR: app
/// Every route of the lab. No server-wide request timeout here, unlike step 03: it would
/// hide the very pitfalls the lab exists to show.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/debug/stats", get(debug_stats))
        .route("/pitfalls/leak/broken", get(leak::broken))
        .route("/pitfalls/leak/fixed", get(leak::fixed))
        .route("/pitfalls/cancel/broken", get(cancel::broken))
        .route("/pitfalls/cancel/fixed", get(cancel::fixed))
        .route("/pitfalls/timeout/broken", get(timeout::broken))
        .route("/pitfalls/timeout/fixed", get(timeout::fixed))
        .route("/pitfalls/blocking/broken", get(blocking::broken))
        .route("/pitfalls/blocking/fixed", get(blocking::fixed))
        .route("/pitfalls/reuse/broken", get(reuse::broken))
        .route("/pitfalls/reuse/fixed", get(reuse::fixed))
        .route("/pitfalls/race/fixed", get(shared_state::race_fixed))
        .route(
            "/pitfalls/lock-await/fixed",
            get(shared_state::lock_await_fixed),
        )
        .route("/upstream/hello", get(upstream::hello))
        .route("/upstream/hang", get(upstream::hang))
        .with_state(state)
}
// ANCHOR_END: app

async fn health() -> &'static str {
    "ok\n"
}

// ANCHOR: debug_stats
/// The evidence, as JSON. `alive_tasks` is tokio's own count of tasks not yet finished,
/// including the server's tasks and one per open connection (this request's among them).
async fn debug_stats(State(state): State<AppState>) -> Json<serde_json::Value> {
    let metrics = tokio::runtime::Handle::current().metrics();
    let s = &state.stats;
    let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
    let work = |w: &WorkCounters| {
        serde_json::json!({
            "started": load(&w.started),
            "finished": load(&w.finished),
            "cancelled": load(&w.cancelled),
        })
    };
    Json(serde_json::json!({
        "alive_tasks": metrics.num_alive_tasks(),
        "workers": metrics.num_workers(),
        "longest_stall_ms": load(&s.longest_stall_ms),
        "leak": {
            "broken_heartbeats_running": load(&s.leak_broken_running),
            "fixed_heartbeats_running": load(&s.leak_fixed_running),
        },
        "cancel": { "broken": work(&s.cancel_broken), "fixed": work(&s.cancel_fixed) },
        "upstream_connections_opened": {
            "per_request_clients": load(&s.upstream_per_request_clients),
            "shared_client": load(&s.upstream_shared_client),
            "timeout_client": load(&s.upstream_timeout_client),
        },
    }))
}
// ANCHOR_END: debug_stats

// ANCHOR: stall_probe
/// How often the stall probe wakes up.
pub const PROBE_EVERY: Duration = Duration::from_millis(10);

/// Wakes every [`PROBE_EVERY`] and records how late it woke: if a worker is blocked, the probe
/// (like every other task queued behind it) cannot run, and the lateness is the stall.
async fn stall_probe(stats: Arc<Stats>, stop: CancellationToken) {
    let mut last = Instant::now();
    loop {
        tokio::select! {
            () = tokio::time::sleep(PROBE_EVERY) => {}
            () = stop.cancelled() => return,
        }
        let late = last.elapsed().saturating_sub(PROBE_EVERY);
        stats
            .longest_stall_ms
            .fetch_max(late.as_millis() as u64, Ordering::Relaxed);
        last = Instant::now();
    }
}
// ANCHOR_END: stall_probe

/// Installs the SIGTERM and SIGINT handlers *now* (see step 03 for why eagerly) and returns a
/// future that resolves with the name of the first one to arrive.
pub fn shutdown_signal() -> std::io::Result<impl Future<Output = &'static str> + Send> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
        }
    })
}

/// Why `run` ended in something other than a clean drain.
#[derive(Debug, PartialEq, Eq)]
pub enum ShutdownError {
    /// Draining took longer than `SHUTDOWN_TIMEOUT`.
    DrainTimedOut,
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
/// Serves until `signal` resolves, then drains within `SHUTDOWN_TIMEOUT`, in the same shape as
/// step 03 (any listener axum can serve: `main` passes a `TcpListener`, a test one that fails).
pub async fn run<L>(
    listener: L,
    state: AppState,
    shutdown_timeout: Duration,
    signal: impl Future<Output = &'static str> + Send + 'static,
) -> Result<(), ShutdownError>
where
    L: Listener,
    L::Addr: std::fmt::Debug,
{
    let shutdown = state.shutdown.clone();
    let tasks = state.tasks.clone();
    tasks.spawn(stall_probe(state.stats.clone(), shutdown.clone()));

    let server = axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown.clone().cancelled_owned());
    // The server runs on its own task so this one is free to wait for the signal.
    let mut server = tokio::spawn(server.into_future());
    // `&mut server` keeps the handle ours if the signal wins; if the server wins (it can only
    // have panicked), its result is kept, because a spent `JoinHandle` must not be awaited.
    let ended_early = tokio::select! {
        name = signal => {
            tracing::info!(signal = name, "shutdown signal received; draining");
            None
        }
        ended = &mut server => Some(ended),
    };
    // Tell everyone: the server, and the fixed heartbeats (children of this token). The broken
    // heartbeats hear nothing: they are not on the tracker, so they are simply dropped with the
    // runtime when `main` returns.
    shutdown.cancel();
    // Wait for the requests in flight, but never past the deadline.
    let outcome = match ended_early {
        Some(ended) => Err(server_failed(ended)),
        None => match tokio::time::timeout(shutdown_timeout, server).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(ended) => Err(server_failed(ended)),
            Err(_deadline) => {
                let deadline = format_duration(shutdown_timeout);
                tracing::error!(%deadline, "drain deadline passed; exiting anyway");
                Err(ShutdownError::DrainTimedOut)
            }
        },
    };
    // Then the tracked tasks, whatever happened above: told to stop, they end at once.
    tasks.close();
    tasks.wait().await;
    if outcome.is_ok() {
        tracing::info!("drained; exiting");
    }
    outcome
}
// ANCHOR_END: run
