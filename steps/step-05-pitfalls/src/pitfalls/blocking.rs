//! Pitfall 4: blocking the runtime.
//!
//! Both routes do the same blocking work (a `std::thread::sleep`, standing in for CPU-heavy
//! hashing, compression or a synchronous library call). Broken: it runs on a runtime worker,
//! which can then run nothing else: every other request queued on it waits. Fixed: it runs on
//! tokio's blocking pool, and the worker stays free.

use std::time::Duration;

use axum::extract::Query;
use axum::http::StatusCode;
use serde::Deserialize;

use crate::{Problem, millis};

/// Default length of the blocking work.
pub const DEFAULT_BLOCK: Duration = Duration::from_millis(1000);

#[derive(Debug, Deserialize)]
pub struct BlockParams {
    /// How long to block, in milliseconds (at most [`crate::MAX_MS`]).
    ms: Option<u64>,
}

// ANCHOR: broken
pub async fn broken(Query(params): Query<BlockParams>) -> Result<String, Problem> {
    let length = millis(params.ms, DEFAULT_BLOCK)?;
    tracing::info!(ms = length.as_millis() as u64, "blocking a runtime worker");
    // BUG: a blocking call in async code. There is no `.await` in it, so the runtime cannot
    // switch away: this worker thread does nothing else until it returns.
    std::thread::sleep(length);
    Ok(format!(
        "blocked a runtime worker for {} ms\n",
        length.as_millis()
    ))
}
// ANCHOR_END: broken

// ANCHOR: fixed
pub async fn fixed(Query(params): Query<BlockParams>) -> Result<String, Problem> {
    let length = millis(params.ms, DEFAULT_BLOCK)?;
    tracing::info!(
        ms = length.as_millis() as u64,
        "blocking work sent to the blocking pool"
    );
    // The blocking pool has threads of its own (up to 512 by default); this worker only awaits
    // the result, and runs other tasks meanwhile. Unlike async work, blocking work cannot be
    // interrupted: if the client leaves, the sleep still runs to its end.
    tokio::task::spawn_blocking(move || std::thread::sleep(length))
        .await
        .map_err(|e| {
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("blocking work failed: {e}\n"),
            )
        })?;
    Ok(format!(
        "ran {} ms of blocking work on the blocking pool\n",
        length.as_millis()
    ))
}
// ANCHOR_END: fixed
