//! Pitfall 2: missing cancellation, Go's context that is not propagated.
//!
//! Broken: the handler runs its slow work on a detached task and waits for it; when the client
//! disconnects, hyper drops the handler's future, but the task keeps going and finishes for
//! nobody. Fixed: the work is part of the handler's own future, so it is dropped with it.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use serde::Deserialize;

use crate::{AppState, Problem, Stats, WorkCounters, millis};

/// Default length of the simulated work.
pub const DEFAULT_WORK: Duration = Duration::from_millis(1000);

#[derive(Debug, Deserialize)]
pub struct WorkParams {
    /// How long the simulated work takes, in milliseconds (at most [`crate::MAX_MS`]).
    ms: Option<u64>,
}

// ANCHOR: work
/// Simulated slow work (think: a heavy query), counted in `/debug/stats`.
async fn slow_work(stats: Arc<Stats>, counters: fn(&Stats) -> &WorkCounters, length: Duration) {
    let counters = counters(&stats);
    counters.started.fetch_add(1, Ordering::Relaxed);
    let mut guard = CancelGuard {
        counters,
        finished: false,
    };
    // If this future is dropped, it is dropped here, and `guard` records it.
    tokio::time::sleep(length).await;
    guard.finished = true;
    counters.finished.fetch_add(1, Ordering::Relaxed);
}

/// Counts the work as cancelled if it is dropped before it finished.
struct CancelGuard<'a> {
    counters: &'a WorkCounters,
    finished: bool,
}

impl Drop for CancelGuard<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.counters.cancelled.fetch_add(1, Ordering::Relaxed);
        }
    }
}
// ANCHOR_END: work

// ANCHOR: broken
pub async fn broken(
    State(state): State<AppState>,
    Query(params): Query<WorkParams>,
) -> Result<String, Problem> {
    let length = millis(params.ms, DEFAULT_WORK)?;
    // BUG: the work runs on a task of its own. If the client goes away, hyper drops this
    // handler's future, and with it the `JoinHandle`, but dropping a `JoinHandle` detaches the
    // task rather than stopping it: the work runs to the end, for nobody.
    let work = tokio::spawn(slow_work(state.stats, |s| &s.cancel_broken, length));
    work.await.map_err(|e| {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("work failed: {e}\n"),
        )
    })?;
    Ok(format!("worked for {} ms\n", length.as_millis()))
}
// ANCHOR_END: broken

// ANCHOR: fixed
pub async fn fixed(
    State(state): State<AppState>,
    Query(params): Query<WorkParams>,
) -> Result<String, Problem> {
    let length = millis(params.ms, DEFAULT_WORK)?;
    // The work is awaited *inside* this future: when hyper drops the future because the client
    // left, the work is dropped at its current `.await` and never finishes.
    slow_work(state.stats, |s| &s.cancel_fixed, length).await;
    Ok(format!("worked for {} ms\n", length.as_millis()))
}
// ANCHOR_END: fixed
