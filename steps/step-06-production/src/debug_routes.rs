//! Routes for tests, benchmarks and demos, mounted only with `ENABLE_DEBUG_ROUTES=1`:
//! `GET /debug/slow?ms=N` holds a concurrency slot for N milliseconds (at most
//! [`MAX_SLOW_MS`]) of waiting, as for a slow dependency, and `&cpu_ms=M` first computes for M
//! milliseconds (at most [`MAX_CPU_MS`]), keeping its worker thread busy as real work would;
//! `GET /debug/panic` panics. Never enable them in production: the first
//! lets anyone occupy slots on purpose.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

/// The longest `/debug/slow` may take.
pub const MAX_SLOW_MS: u64 = 30_000;
/// The most CPU time `/debug/slow` may burn: long enough to saturate a core under load, short
/// enough not to starve the other tasks of its worker thread for long.
pub const MAX_CPU_MS: u64 = 100;

/// What the debug routes let a test observe and control.
#[derive(Debug, Default)]
pub struct DebugHooks {
    /// `/debug/slow` handlers running right now.
    pub busy: AtomicUsize,
    /// The most that ever ran at once: what the concurrency limit must bound.
    pub peak: AtomicUsize,
    /// Cancelling it ends every `/debug/slow` at once (tests use it instead of timing).
    pub release: CancellationToken,
}

pub fn routes(hooks: Arc<DebugHooks>) -> Router {
    Router::new()
        .route("/debug/slow", get(slow))
        .route("/debug/panic", get(panics))
        .with_state(hooks)
}

#[derive(Deserialize)]
struct SlowParams {
    ms: Option<u64>,
    cpu_ms: Option<u64>,
}

// ANCHOR: slow
async fn slow(
    State(hooks): State<Arc<DebugHooks>>,
    Query(params): Query<SlowParams>,
) -> Result<&'static str, (StatusCode, String)> {
    let ms = params.ms.unwrap_or(1000);
    if ms > MAX_SLOW_MS {
        return Err((
            StatusCode::BAD_REQUEST,
            format!("ms must be at most {MAX_SLOW_MS}\n"),
        ));
    }
    let cpu = Duration::from_millis(params.cpu_ms.unwrap_or(0));
    if cpu > Duration::from_millis(MAX_CPU_MS) {
        return Err((
            StatusCode::BAD_REQUEST,
            format!("cpu_ms must be at most {MAX_CPU_MS}\n"),
        ));
    }
    let now = hooks.busy.fetch_add(1, Ordering::SeqCst) + 1;
    hooks.peak.fetch_max(now, Ordering::SeqCst);
    let _busy = Busy(&hooks);
    tracing::info!(ms, "slow request started");
    // Simulated computation: the thread is busy, nothing else runs on it meanwhile (a real
    // handler that computes does the same between two `.await`s).
    let computing = std::time::Instant::now();
    while computing.elapsed() < cpu {
        std::hint::spin_loop();
    }
    // Simulated work: hold the slot until the time is up or the test says so.
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_millis(ms)) => {}
        _ = hooks.release.cancelled() => {}
    }
    Ok("done\n")
}

/// Decrements `busy` however the handler ends, even when its future is dropped.
struct Busy<'a>(&'a DebugHooks);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn panics() -> &'static str {
    tracing::info!("about to panic");
    panic!("the database password is hunter2");
}
// ANCHOR_END: slow
