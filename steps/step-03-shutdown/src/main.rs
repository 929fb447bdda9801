//! Step 03: graceful shutdown on SIGTERM and SIGINT.
//!
//! Run it:   `cargo run -p step-03`, then in another terminal
//!           `curl 'localhost:8080/?work_ms=3000'` and press Ctrl-C in the server's terminal:
//!           the request still completes, then the server exits 0.
//! Deadline: `SHUTDOWN_TIMEOUT=1s` with `?work_ms=5000` shows the drain giving up (exit 1).
#![forbid(unsafe_code)]

use std::io::IsTerminal;
use std::process::ExitCode;

use step_03::{Config, format_duration, run, shutdown_signal};
use tokio::net::TcpListener;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::prelude::*;

#[tokio::main]
async fn main() -> ExitCode {
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

    // ANCHOR: main
    let config = match Config::from_lookup(|key| std::env::var(key).ok()) {
        Ok(config) => config,
        Err(message) => {
            eprintln!("step-03: {message}");
            return ExitCode::from(2);
        }
    };
    // Install the signal handlers before announcing that we listen (see `shutdown_signal`).
    let signal = match shutdown_signal() {
        Ok(signal) => signal,
        Err(error) => {
            eprintln!("step-03: cannot install signal handlers: {error}");
            return ExitCode::FAILURE;
        }
    };
    let listener = match TcpListener::bind(("0.0.0.0", config.port)).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("step-03: cannot listen on port {}: {error}", config.port);
            return ExitCode::FAILURE;
        }
    };
    if let Ok(addr) = listener.local_addr() {
        let shutdown_timeout = format_duration(config.shutdown_timeout);
        tracing::info!(%shutdown_timeout, "listening on {addr}");
    }
    // Serve until a signal, then drain. Returning from `main` ends the runtime, which drops
    // whatever is still running: after a missed deadline, that is exactly what we want.
    match run(listener, config, signal).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
    // ANCHOR_END: main
}
