//! What `main` does around serving, written once so that every later step's `main` is three
//! lines: read the configuration (exit 2 on a bad value), start logging, size the runtime from
//! the CPU quota, install the signal handlers, bind `PORT`, announce it, serve, and turn the
//! outcome into an exit code.

use std::future::Future;
use std::path::Path;
use std::process::ExitCode;

use tokio::net::TcpListener;

use crate::{Config, RunError, cpus, logging, request_context, shutdown_signal};

/// The shutdown signal `serve` is handed: resolves with `"SIGTERM"` or `"SIGINT"`.
pub type Signal = std::pin::Pin<Box<dyn Future<Output = &'static str> + Send>>;

// ANCHOR: main
/// Runs a step: `config` is what the step read from the environment, `base` finds step 06's
/// part of it, and `serve` serves on the bound listener until the signal, then drains.
pub fn launch<C, Fut>(
    step: &str,
    config: Result<C, String>,
    base: impl Fn(&C) -> &Config,
    serve: impl FnOnce(C, TcpListener, Signal) -> Fut,
) -> ExitCode
where
    Fut: Future<Output = Result<(), RunError>>,
{
    let config = match config {
        Ok(config) => config,
        Err(message) => {
            eprintln!("{step}: {message}");
            return ExitCode::from(2);
        }
    };
    let settings = base(&config).clone();
    // Logging first, so everything after — the runtime's size included — is logged. The handle
    // keeps the log thread alive; dropping it at the end of `launch` flushes what is queued.
    let logs = logging::init(settings.log_format, settings.project.clone());
    request_context::install_panic_hook();

    // No `#[tokio::main]`: the runtime is built by hand so its size follows the container's
    // CPU quota rather than the number of cores the machine shows.
    let workers = cpus::worker_threads(settings.worker_threads, Path::new("/sys/fs/cgroup"));
    tracing::info!(
        worker_threads = workers.threads,
        source = workers.source,
        quota_cpus = workers.quota_cpus,
        available_parallelism = workers.available_parallelism,
        max_concurrency = settings.max_concurrency,
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
    let code = runtime.block_on(async move {
        // Install the signal handlers before announcing that we listen (see step 03).
        let signal = match shutdown_signal() {
            Ok(signal) => Box::pin(signal) as Signal,
            Err(error) => {
                tracing::error!(%error, "cannot install signal handlers");
                return ExitCode::FAILURE;
            }
        };
        let port = settings.base.port;
        let listener = match TcpListener::bind(("0.0.0.0", port)).await {
            Ok(listener) => listener,
            Err(error) => {
                tracing::error!(%error, port, "cannot listen");
                return ExitCode::FAILURE;
            }
        };
        if let Ok(addr) = listener.local_addr() {
            tracing::info!("listening on {addr}");
        }
        // Serves until the signal, then drains; a missed deadline or a crash is exit code 1.
        match serve(config, listener, signal).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(_) => ExitCode::FAILURE,
        }
    });
    let dropped = logs.dropped_lines();
    if dropped > 0 {
        eprintln!("{step}: {dropped} log lines were dropped because stdout was too slow");
    }
    code
}
// ANCHOR_END: main
