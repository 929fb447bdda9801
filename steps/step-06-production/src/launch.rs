//! What `main` does around serving, written once so that every later step's `main` is three
//! lines: read the configuration (exit 2 on a bad value), start logging, size the runtime from
//! the CPU quota, install the signal handlers, bind `PORT`, announce it, serve, and turn the
//! outcome into an exit code.

use std::future::Future;
use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

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
    launch_with(step, config, base, |_| Extras::default(), serve)
}

// ANCHOR: extras
/// What a later step adds around serving (step 10: its traces).
#[derive(Default)]
pub struct Extras {
    /// A layer beside the log layer, in the same subscriber. It is made inside the runtime,
    /// so it may start tasks (an exporter's connection does).
    pub layer: Option<logging::ExtraLayer>,
    /// Runs once serving has ended, with the time left before the platform's SIGKILL
    /// (`GRACE_PERIOD` after the signal), while the runtime still runs.
    pub at_exit: Option<Box<dyn FnOnce(Duration) + Send>>,
}
// ANCHOR_END: extras

/// [`launch`], with `extras` made from the configuration once the runtime exists.
pub fn launch_with<C, Fut>(
    step: &str,
    config: Result<C, String>,
    base: impl Fn(&C) -> &Config,
    extras: impl FnOnce(&C) -> Extras,
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

    // No `#[tokio::main]`: the runtime is built by hand so its size follows the container's
    // CPU quota rather than the number of cores the machine shows.
    let workers = cpus::worker_threads(settings.worker_threads, Path::new("/sys/fs/cgroup"));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers.threads)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("{step}: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    // Logging next, inside the runtime (for the extras' tasks), so everything after is logged.
    // The handle keeps the log thread alive; dropping it at the end flushes what is queued.
    let entered = runtime.enter();
    let extras = extras(&config);
    let logs = logging::init_with(settings.log_format, settings.project.clone(), extras.layer);
    drop(entered);
    request_context::install_panic_hook();
    tracing::info!(
        worker_threads = workers.threads,
        source = workers.source,
        quota_cpus = workers.quota_cpus,
        available_parallelism = workers.available_parallelism,
        max_concurrency = settings.max_concurrency,
        "runtime sized"
    );
    // When the signal came: what is left of the grace period afterwards is `at_exit`'s.
    let signalled = Arc::new(OnceLock::new());
    let signal_seen = signalled.clone();
    let code = runtime.block_on(async move {
        // Install the signal handlers before announcing that we listen (see step 03).
        let signal = match shutdown_signal() {
            Ok(signal) => Box::pin(async move {
                let name = signal.await;
                let _ = signal_seen.set(Instant::now());
                name
            }) as Signal,
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
    if let Some(at_exit) = extras.at_exit {
        let left = match signalled.get() {
            Some(at) => settings.grace_period.saturating_sub(at.elapsed()),
            None => settings.grace_period,
        };
        at_exit(left);
    }
    drop(runtime);
    let dropped = logs.dropped_lines();
    if dropped > 0 {
        eprintln!("{step}: {dropped} log lines were dropped because stdout was too slow");
    }
    code
}
// ANCHOR_END: main
