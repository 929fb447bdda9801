//! Step 05: the pitfalls lab.
//!
//! A server with a broken and a fixed route for each classic mistake of a network service:
//! leaked tasks, lost cancellation, an outbound call without a deadline, a blocked runtime, a
//! new HTTP client per request. `GET /debug/stats` shows the evidence.
//!
//! Run it:   `WORKER_THREADS=2 cargo run -p step-05`, then in another terminal, for example
//!           `curl localhost:8080/pitfalls/leak/broken` a few times and
//!           `curl localhost:8080/debug/stats`: the leaked heartbeats are still running.
//! Settings: `UPSTREAM_URL` (default: the lab's own `/upstream`), `UPSTREAM_TIMEOUT` (2s),
//!           `WORKER_THREADS` (one per CPU), `SHUTDOWN_TIMEOUT` (8s), `PORT` (8080).
#![forbid(unsafe_code)]

use std::io::IsTerminal;
use std::process::ExitCode;

use step_05::{AppState, Config, run, shutdown_signal};
use tokio::net::TcpListener;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::prelude::*;

fn main() -> ExitCode {
    // ANCHOR: main
    let config = match Config::from_lookup(|key| std::env::var(key).ok()) {
        Ok(config) => config,
        Err(message) => {
            eprintln!("step-05: {message}");
            return ExitCode::from(2);
        }
    };
    // The runtime is built by hand rather than by `#[tokio::main]`, so that `WORKER_THREADS` can set
    // its number of worker threads: with one, a single blocked worker stops everything.
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(workers) = config.workers {
        runtime.worker_threads(workers);
    }
    let runtime = match runtime.enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("step-05: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(serve(config))
    // ANCHOR_END: main
}

async fn serve(config: Config) -> ExitCode {
    // `RUST_LOG` picks what is logged, e.g. `debug` or `info,tower_http=debug` (default: info).
    // `Targets` reads that syntax without the regular-expression engine `EnvFilter` brings.
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|directives| directives.parse::<Targets>().ok())
        .unwrap_or_else(|| Targets::new().with_default(tracing::Level::INFO));
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_ansi(std::io::stdout().is_terminal()))
        .with(filter)
        .init();
    // Install the signal handlers before announcing that we listen (see step 03).
    let signal = match shutdown_signal() {
        Ok(signal) => signal,
        Err(error) => {
            eprintln!("step-05: cannot install signal handlers: {error}");
            return ExitCode::FAILURE;
        }
    };
    let listener = match TcpListener::bind(("0.0.0.0", config.port)).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("step-05: cannot listen on port {}: {error}", config.port);
            return ExitCode::FAILURE;
        }
    };
    let state = match listener
        .local_addr()
        .map_err(|e| e.to_string())
        .and_then(|addr| {
            let state = AppState::new(&config, addr)?;
            // The number of workers the runtime really has: `WORKER_THREADS`, or one per CPU.
            let workers = tokio::runtime::Handle::current().metrics().num_workers();
            tracing::info!(upstream = %state.upstream_hello, workers, "listening on {addr}");
            Ok(state)
        }) {
        Ok(state) => state,
        Err(message) => {
            eprintln!("step-05: {message}");
            return ExitCode::FAILURE;
        }
    };
    // Serve until a signal, then drain. Returning ends the runtime, which drops whatever is
    // still running, the leaked heartbeats included.
    match run(listener, state, config.shutdown_timeout, signal).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}
