//! Pitfall 6: the data race and the lock held across `.await`, which Rust refuses to compile.
//!
//! In Go, a map written from several goroutines compiles and then fails at run time (with
//! luck, `fatal error: concurrent map writes`; without, silently wrong data), and only the race
//! detector, on the paths your tests happen to run, can catch it earlier. Rust decides at
//! compile time: the three programs below are rejected. `cargo test -p step-05 --doc` proves
//! they still are, and `tests/compile_errors.rs` records what the compiler says about each.
//!
//! A map shared by many threads, mutated through an `Arc` (which only ever hands out shared
//! references):
//!
//! ```compile_fail,E0596
#![doc = include_str!("../../compile_fail/race_map.rs")]
//! ```
//!
//! The same map in a `RefCell`, which allows mutation through a shared reference but is not
//! `Sync`, so it may not be shared between threads:
//!
//! ```compile_fail,E0277
#![doc = include_str!("../../compile_fail/race_refcell.rs")]
//! ```
//!
//! A `std::sync::Mutex` guard held across an `.await`. The guard is not `Send` (a std lock must
//! be released by the thread that took it), and at an `.await` a task may move to another
//! worker thread, so the task as a whole is not `Send` and `tokio::spawn` refuses it:
//!
//! ```compile_fail
#![doc = include_str!("../../compile_fail/lock_across_await.rs")]
//! ```
//!
//! The correct versions follow, compiled, served and tested: [`race_fixed`] (a
//! `RwLock` whose guard never meets an `.await`) and [`lock_await_fixed`] (a tokio `Mutex`,
//! whose guard may cross one).

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use serde::Deserialize;

use crate::{AppState, Problem};

// ANCHOR: race_fixed
/// Hits per key, shared by every request. `Arc` shares it, `RwLock` makes writes exclusive.
pub type HitCounts = Arc<RwLock<HashMap<String, u64>>>;

/// Bounds on what clients can make the map hold.
pub const MAX_KEYS: usize = 100;
pub const MAX_KEY_LEN: usize = 32;

#[derive(Debug, Deserialize)]
pub struct HitParams {
    key: String,
}

pub async fn race_fixed(
    State(state): State<AppState>,
    Query(HitParams { key }): Query<HitParams>,
) -> Result<String, Problem> {
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        let message = format!("key must be 1 to {MAX_KEY_LEN} bytes long\n");
        return Err((StatusCode::BAD_REQUEST, message));
    }
    let count = {
        // A std lock is right here: the guard lives for this block only, and the block has no
        // `.await`. A panic while holding it poisons it; the map is still consistent (one
        // increment either happened or not), so we carry on with it.
        let mut hits = state.hits.write().unwrap_or_else(PoisonError::into_inner);
        if !hits.contains_key(&key) && hits.len() >= MAX_KEYS {
            let message = format!("at most {MAX_KEYS} distinct keys\n");
            return Err((StatusCode::BAD_REQUEST, message));
        }
        let count = hits.entry(key.clone()).or_insert(0);
        *count += 1;
        *count
    };
    Ok(format!("{key}: {count}\n"))
}
// ANCHOR_END: race_fixed

// ANCHOR: lock_await_fixed
/// A journal whose entries must be numbered without gaps or duplicates, and written in order.
#[derive(Debug, Default)]
pub struct Journal {
    /// The number of the last entry written.
    pub written: u64,
}

/// A tokio `Mutex`: its guard is `Send`, and waiting for it is an `.await`, not a blocked
/// thread, so a task may hold it across an `.await`.
pub type SharedJournal = Arc<tokio::sync::Mutex<Journal>>;

/// Stands in for an asynchronous write (a file, a remote log).
async fn write_entry(_entry: u64) {
    tokio::time::sleep(Duration::from_millis(5)).await;
}

pub async fn lock_await_fixed(State(state): State<AppState>) -> String {
    // Waiting for the lock is an `.await`: the worker runs other tasks meanwhile.
    let mut journal = state.journal.lock().await;
    let entry = journal.written + 1;
    // The guard is held across this `.await` on purpose: taking the number and writing the
    // entry must be one step, or two requests could write the same number.
    write_entry(entry).await;
    journal.written = entry;
    format!("journal entry {entry} written\n")
}
// ANCHOR_END: lock_await_fixed
