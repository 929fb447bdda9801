//! Pitfall 3: an outbound call without a deadline.
//!
//! Both routes call `<UPSTREAM_URL>/hang` with the same client (shared by the two, and apart
//! from the reuse routes' one); the built-in upstream (or the test's stub) accepts the
//! connection and never answers. Broken: the handler waits as long as the upstream does, i.e.
//! forever. Fixed: a deadline, and a 504 when it passes.

use axum::extract::State;
use axum::http::StatusCode;

use crate::pitfalls::upstream::call;
use crate::{AppState, Problem, format_duration};

// ANCHOR: broken
pub async fn broken(State(state): State<AppState>) -> Result<String, Problem> {
    // BUG: no deadline. hyper's client has no default timeout, so this `.await` lasts as long
    // as the upstream keeps the connection open without answering, and holds this request,
    // its memory and its connection for as long.
    let (status, body) = call(&state.timeout_client, &state.upstream_hang).await?;
    Ok(format!("upstream answered {status}: {body}"))
}
// ANCHOR_END: broken

// ANCHOR: fixed
pub async fn fixed(State(state): State<AppState>) -> Result<String, Problem> {
    let deadline = state.upstream_timeout;
    // `timeout` races the call against a timer; when the timer wins, the call's future is
    // dropped, which closes its connection, and we answer at once.
    match tokio::time::timeout(deadline, call(&state.timeout_client, &state.upstream_hang)).await {
        Ok(answer) => {
            let (status, body) = answer?;
            Ok(format!("upstream answered {status}: {body}"))
        }
        Err(_elapsed) => Err((
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "upstream did not answer within {}\n",
                format_duration(deadline)
            ),
        )),
    }
}
// ANCHOR_END: fixed
