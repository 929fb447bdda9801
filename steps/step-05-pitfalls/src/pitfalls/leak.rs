//! Pitfall 1: a leaked task, Go's leaked goroutine.
//!
//! Each request starts a heartbeat task that reports progress while the request is handled.
//! Broken: nothing ever tells the task to stop, so every request leaves one more task behind,
//! forever. Fixed: the task listens to a cancellation token that the request cancels when it
//! ends (and the server cancels when it shuts down).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;

use crate::{AppState, Running, Stats};

/// How long the request's own (simulated) work takes.
pub const WORK: Duration = Duration::from_millis(50);
/// How often the heartbeat beats.
pub const BEAT_EVERY: Duration = Duration::from_millis(100);

/// Reports progress every [`BEAT_EVERY`], for as long as it is allowed to run: it has no
/// reason of its own to stop. `running` counts it in `/debug/stats` until it is dropped.
async fn heartbeat(running: Running) {
    let _running = running;
    let mut ticker = tokio::time::interval(BEAT_EVERY);
    loop {
        ticker.tick().await;
        tracing::trace!("still working");
    }
}

// ANCHOR: broken
pub async fn broken(State(state): State<AppState>) -> &'static str {
    let running = Running::start(state.stats.clone(), |s: &Stats| &s.leak_broken_running);
    // BUG: a detached task with no way to stop. The `JoinHandle` is dropped at once, and
    // dropping it does not stop the task; nothing else can reach it. It outlives the request,
    // and the next request adds another.
    tokio::spawn(heartbeat(running));
    tokio::time::sleep(WORK).await;
    "done; the heartbeat task started for this request is still running\n"
}
// ANCHOR_END: broken

// ANCHOR: fixed
pub async fn fixed(State(state): State<AppState>) -> &'static str {
    let running = Running::start(Arc::clone(&state.stats), |s: &Stats| &s.leak_fixed_running);
    // A child of the server's shutdown token: cancelled by the guard below when this handler
    // returns *or is dropped* (client gone), and by the server when it shuts down.
    let stop = state.shutdown.child_token();
    let _stop_when_done = stop.clone().drop_guard();
    // On the tracker, so shutdown can wait for it; the select! ends it when `stop` fires.
    state.tasks.spawn(async move {
        tokio::select! {
            () = heartbeat(running) => {}
            () = stop.cancelled() => {}
        }
    });
    tokio::time::sleep(WORK).await;
    "done; the heartbeat task started for this request has been told to stop\n"
}
// ANCHOR_END: fixed
