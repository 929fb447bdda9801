//! Step 01: the smallest honest HTTP server (hyper + tokio, no framework).
//!
//! Run it:   `cargo run -p step-01`   then   `curl -i localhost:8080/`
//! Port:     `PORT=3000 cargo run -p step-01` (Cloud Run sets `PORT` for you)
#![forbid(unsafe_code)]

use std::process::ExitCode;

use tokio::net::TcpListener;

// ANCHOR: main
// `#[tokio::main]` starts the multi-threaded runtime (one worker thread per core) and runs
// this async `main` on it: the runtime that Go starts for you before your `main` runs.
#[tokio::main]
async fn main() -> ExitCode {
    let port = match step_01::port_from(std::env::var("PORT").ok().as_deref()) {
        Ok(port) => port,
        Err(message) => {
            // Bad configuration is the operator's mistake, not a bug: one clear line, exit 2.
            eprintln!("step-01: {message}");
            return ExitCode::from(2);
        }
    };
    // Bind all interfaces: inside a container, 127.0.0.1 is unreachable from outside.
    // Binding waits for nothing in practice, but the async version never blocks a worker.
    let listener = match TcpListener::bind(("0.0.0.0", port)).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("step-01: cannot listen on port {port}: {error}");
            return ExitCode::FAILURE;
        }
    };
    match listener.local_addr() {
        Ok(addr) => println!("listening on {addr}"),
        Err(error) => eprintln!("step-01: listening, address unknown: {error}"),
    }
    // Serve forever; this step stops only when killed (step 03 adds graceful shutdown).
    step_01::serve(listener).await;
    ExitCode::SUCCESS
}
// ANCHOR_END: main
