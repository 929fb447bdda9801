//! Step 02: axum, configuration from the environment, and request cancellation you can see.
//!
//! Run it:   `cargo run -p step-02`   then   `curl -i localhost:8080/`
//! Cancel:   `curl 'localhost:8080/?work_ms=3000'`, press Ctrl-C before it answers, and watch
//!           the server log `request cancelled`: the work stopped when the client left.
//! Timeout:  `TARGET=Gopher REQUEST_TIMEOUT=1s cargo run -p step-02`, then
//!           `curl -i 'localhost:8080/?work_ms=3000'`: 503 after one second.
#![forbid(unsafe_code)]

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;

use step_02::{Config, Stats, app, format_duration};
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
            // One line, exit code 2: the convention for "you called me wrong".
            eprintln!("step-02: {message}");
            return ExitCode::from(2);
        }
    };
    // Binding is quick, but doing it asynchronously keeps the runtime's threads free.
    let listener = match TcpListener::bind(("0.0.0.0", config.port)).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("step-02: cannot listen on port {}: {error}", config.port);
            return ExitCode::FAILURE;
        }
    };
    if let Ok(addr) = listener.local_addr() {
        let request_timeout = format_duration(config.request_timeout);
        tracing::info!(target = %config.target, %request_timeout, "listening on {addr}");
    }
    // axum::serve runs the accept loop of step 01 for us, one task per connection, and in
    // axum 0.8 it never returns: a failed accept (out of file descriptors, say) is retried
    // after a one-second pause, like step 01's loop. Its type still says `io::Result`, so we
    // handle the error rather than assume; step 03 gives it a way to return: shutdown.
    if let Err(error) = axum::serve(listener, app(&config, Arc::new(Stats::default()))).await {
        eprintln!("step-02: server error: {error}");
        return ExitCode::FAILURE;
    }
    // ANCHOR_END: main
    ExitCode::SUCCESS
}
