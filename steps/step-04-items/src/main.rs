//! Step 04: the item API, done properly.
//!
//! Run it:   `cargo run -p step-04`, then in another terminal
//!           `curl -i -X POST localhost:8080/api/items -H 'content-type: application/json' -d '{"name":"Test Item"}'`
//!           and `curl -i localhost:8080/api/items`. The API is described at `/openapi.json`.
//! Limits:   `MAX_ITEMS`, `HEADER_READ_TIMEOUT`, `REQUEST_TIMEOUT`, `SHUTDOWN_TIMEOUT` (see lib.rs).
#![forbid(unsafe_code)]

use std::io::IsTerminal;
use std::process::ExitCode;

use step_04::{Config, run, shutdown_signal};
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
    // Log lines go to a background thread that writes them in batches: a request never waits
    // for the terminal or the log collector, and a burst of lines costs one write(2), not one
    // per line. If that thread ever falls 8 192 lines behind, new lines are dropped rather
    // than slowing requests down. (The queue is allocated up front: the crate's default of
    // 128 000 lines would cost megabytes of memory and milliseconds of start-up.)
    // `_flush_on_exit` writes what is left when `main` returns.
    let stdout = std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout());
    let (writer, _flush_on_exit) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(8_192)
        .finish(stdout);
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(writer)
                .with_ansi(std::io::stdout().is_terminal()),
        )
        .with(filter)
        .init();

    // ANCHOR: main
    let config = match Config::from_lookup(|key| std::env::var(key).ok()) {
        Ok(config) => config,
        Err(message) => {
            eprintln!("step-04: {message}");
            return ExitCode::from(2);
        }
    };
    // Install the signal handlers before announcing that we listen (see step 03).
    let signal = match shutdown_signal() {
        Ok(signal) => signal,
        Err(error) => {
            eprintln!("step-04: cannot install signal handlers: {error}");
            return ExitCode::FAILURE;
        }
    };
    let listener = match TcpListener::bind(("0.0.0.0", config.port)).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("step-04: cannot listen on port {}: {error}", config.port);
            return ExitCode::FAILURE;
        }
    };
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(max_items = config.max_items, "listening on {addr}");
    }
    // Serve until a signal, then drain; a missed deadline is exit code 1.
    match run(listener, config, signal).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
    // ANCHOR_END: main
}
