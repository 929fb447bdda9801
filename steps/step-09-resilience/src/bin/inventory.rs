//! A stand-in inventory service for step 09: `GET /stock/{id}` answers `{"stock": N}`, and it
//! can be told to misbehave, so you can watch step 09's defences at work.
//!
//! Run it:   `cargo run -p step-09 --bin inventory` (port 8081), then point step 09 at it with
//!           `UPSTREAM_URL=http://localhost:8081`. Kill it (Ctrl-C) to see the breaker open.
//! Modes:    `INVENTORY_MODE=ok|fail|flaky|slow|hang` at start, or at any time
//!           `curl -X PUT localhost:8081/mode/fail`: `fail` answers 503, `flaky` every other
//!           request, `slow` waits `INVENTORY_DELAY` (default 2s) first, `hang` never answers.
//!           A slow answer stops waiting once the caller's `x-request-timeout-ms` is spent.
//! Count:    `curl localhost:8081/stats` says how many stock requests it has received,
//!           `{"served": N}` (`.ci/bench` compares them with and without the defences).
#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use step_09::upstream::BUDGET_HEADER;

const MODES: [&str; 5] = ["ok", "fail", "flaky", "slow", "hang"];

struct Inventory {
    mode: AtomicUsize,
    delay: Duration,
    served: AtomicU64,
}

// ANCHOR: stock
async fn stock(
    State(inventory): State<Arc<Inventory>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let n = inventory.served.fetch_add(1, Ordering::Relaxed);
    let mode = MODES[inventory.mode.load(Ordering::Relaxed)];
    // What the caller will wait: past it, nobody reads the answer.
    let budget = headers
        .get(BUDGET_HEADER)
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .map(Duration::from_millis);
    println!("inventory: GET /stock/{id} mode={mode} budget={budget:?}");
    let unavailable = (StatusCode::SERVICE_UNAVAILABLE, "unavailable\n").into_response();
    match mode {
        "fail" => return unavailable,
        "flaky" if n % 2 == 0 => return unavailable,
        // Never answers: the caller's deadline is all that ends it.
        "hang" => std::future::pending::<()>().await,
        "slow" => {
            let wait = tokio::time::sleep(inventory.delay);
            let gone = tokio::time::sleep(budget.unwrap_or(Duration::MAX / 4));
            // The slow work, or the moment the caller gives up, whichever comes first.
            tokio::select! {
                () = wait => {}
                () = gone => return StatusCode::GATEWAY_TIMEOUT.into_response(),
            }
        }
        _ => {}
    }
    // A made-up figure that stays the same for an id.
    let stock = id.bytes().map(u64::from).sum::<u64>() % 50;
    axum::Json(serde_json::json!({ "stock": stock })).into_response()
}
// ANCHOR_END: stock

async fn stats(State(inventory): State<Arc<Inventory>>) -> Response {
    let served = inventory.served.load(Ordering::Relaxed);
    axum::Json(serde_json::json!({ "served": served })).into_response()
}

async fn set_mode(State(inventory): State<Arc<Inventory>>, Path(mode): Path<String>) -> Response {
    match MODES.iter().position(|m| *m == mode) {
        Some(index) => {
            inventory.mode.store(index, Ordering::Relaxed);
            println!("inventory: mode={mode}");
            format!("mode={mode}\n").into_response()
        }
        None => (StatusCode::BAD_REQUEST, format!("modes: {MODES:?}\n")).into_response(),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let lookup = |key: &str| std::env::var(key).ok();
    let vars = step_04::Vars(lookup);
    let settings = (|| {
        let port = vars.get("PORT").map_or(Ok(8081), |_| vars.port())?;
        let mode = vars.get("INVENTORY_MODE").unwrap_or_else(|| "ok".into());
        let mode = MODES
            .iter()
            .position(|m| *m == mode.trim())
            .ok_or_else(|| {
                format!(
                    "INVENTORY_MODE must be one of {}, got {mode:?}",
                    MODES.join(", ")
                )
            })?;
        let delay = vars.duration("INVENTORY_DELAY", Duration::from_secs(2), true)?;
        Ok::<_, String>((port, mode, delay))
    })();
    let (port, mode, delay) = match settings {
        Ok(settings) => settings,
        Err(message) => {
            eprintln!("inventory: {message}");
            return ExitCode::from(2);
        }
    };
    let inventory = Arc::new(Inventory {
        mode: AtomicUsize::new(mode),
        delay,
        served: AtomicU64::new(0),
    });
    let app = Router::new()
        .route("/stock/{id}", get(stock))
        .route("/mode/{mode}", put(set_mode))
        .route("/stats", get(stats))
        .with_state(inventory);
    let listener = match tokio::net::TcpListener::bind(("0.0.0.0", port)).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("inventory: cannot listen on port {port}: {error}");
            return ExitCode::FAILURE;
        }
    };
    match listener.local_addr() {
        Ok(addr) => println!("inventory: listening on {addr} mode={}", MODES[mode]),
        Err(error) => eprintln!("inventory: {error}"),
    }
    // Serves until killed: a stand-in needs no graceful shutdown.
    match axum::serve(listener, app).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("inventory: {error}");
            ExitCode::FAILURE
        }
    }
}
