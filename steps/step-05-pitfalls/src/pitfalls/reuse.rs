//! Pitfall 5: a new HTTP client per request, so no connection is ever reused.
//!
//! Both routes call `<UPSTREAM_URL>/hello`. Broken: a fresh client per request, hence a fresh
//! (empty) pool, hence a new TCP connection (in production: and a TLS handshake) every time.
//! Fixed: the one client in the state, whose pool keeps the connection alive between requests.

use std::sync::atomic::Ordering;

use axum::extract::State;

use crate::pitfalls::upstream::{self, call};
use crate::{AppState, Problem};

// ANCHOR: broken
pub async fn broken(State(state): State<AppState>) -> Result<String, Problem> {
    // BUG: a client per request. Its pool starts empty and is dropped when the handler
    // returns, with the connection in it: every call pays for a new connection.
    let client = upstream::client(state.stats.clone(), |s| &s.upstream_per_request_clients);
    let (status, body) = call(&client, &state.upstream_hello).await?;
    let opened = state
        .stats
        .upstream_per_request_clients
        .load(Ordering::Relaxed);
    Ok(format!(
        "upstream answered {status}: {body}connections opened by this route so far: {opened}\n"
    ))
}
// ANCHOR_END: broken

// ANCHOR: fixed
pub async fn fixed(State(state): State<AppState>) -> Result<String, Problem> {
    // One client for the whole server (it is an `Arc` inside: cloning it shares the pool).
    let (status, body) = call(&state.client, &state.upstream_hello).await?;
    let opened = state.stats.upstream_shared_client.load(Ordering::Relaxed);
    Ok(format!(
        "upstream answered {status}: {body}connections opened by the shared client so far: {opened}\n"
    ))
}
// ANCHOR_END: fixed
