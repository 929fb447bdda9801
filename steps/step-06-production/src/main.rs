//! Step 06: production-ready on Cloud Run. Step 04's item API with Cloud Logging JSON, request
//! ids, a concurrency limit that sheds load, liveness and readiness probes, a runtime sized to
//! the container's CPU quota, and panics turned into 500s.
//!
//! Run it:   `cargo run -p step-06` (readable logs), or
//!           `LOG_FORMAT=json GOOGLE_CLOUD_PROJECT=my-project cargo run -p step-06` for the JSON
//!           Cloud Logging receives; then `curl -i localhost:8080/readyz` and
//!           `curl -i -H 'traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01' localhost:8080/api/items`.
//! Shedding: `MAX_CONCURRENCY=2 ENABLE_DEBUG_ROUTES=1 cargo run -p step-06`, then three
//!           `curl -i 'localhost:8080/debug/slow?ms=3000' &` at once: the third gets a 503.
#![forbid(unsafe_code)]

use std::path::Path;
use std::process::ExitCode;

use step_06::{Config, Ops, cpus, logging, request_context, run, shutdown_signal};
use tokio::net::TcpListener;

// ANCHOR: main
fn main() -> ExitCode {
    let config = match Config::from_lookup(|key| std::env::var(key).ok()) {
        Ok(config) => config,
        Err(message) => {
            eprintln!("step-06: {message}");
            return ExitCode::from(2);
        }
    };
    // Logging first, so everything after — the runtime's size included — is logged. The handle
    // keeps the log thread alive; dropping it at the end of `main` flushes what is queued.
    let logs = logging::init(config.log_format, config.project.clone());
    request_context::install_panic_hook();

    // No `#[tokio::main]`: the runtime is built by hand so its size follows the container's
    // CPU quota rather than the number of cores the machine shows.
    let workers = cpus::worker_threads(config.worker_threads, Path::new("/sys/fs/cgroup"));
    tracing::info!(
        worker_threads = workers.threads,
        source = workers.source,
        quota_cpus = workers.quota_cpus,
        available_parallelism = workers.available_parallelism,
        max_concurrency = config.max_concurrency,
        "runtime sized"
    );
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers.threads)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "cannot start the runtime");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(serve(config));
    let dropped = logs.dropped_lines();
    if dropped > 0 {
        eprintln!("step-06: {dropped} log lines were dropped because stdout was too slow");
    }
    code
}
// ANCHOR_END: main

async fn serve(config: Config) -> ExitCode {
    // Install the signal handlers before announcing that we listen (see step 03).
    let signal = match shutdown_signal() {
        Ok(signal) => signal,
        Err(error) => {
            tracing::error!(%error, "cannot install signal handlers");
            return ExitCode::FAILURE;
        }
    };
    let listener = match TcpListener::bind(("0.0.0.0", config.base.port)).await {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!(%error, port = config.base.port, "cannot listen");
            return ExitCode::FAILURE;
        }
    };
    if let Ok(addr) = listener.local_addr() {
        tracing::info!("listening on {addr}");
    }
    // The start-up work a real service does before taking traffic; here, a configurable wait.
    let startup_delay = config.startup_delay;
    let startup = async move { tokio::time::sleep(startup_delay).await };
    match run(listener, config, Ops::default(), startup, signal).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}
