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

use std::process::ExitCode;

use step_06::{Config, Ops, launch, run};

fn main() -> ExitCode {
    let config = Config::from_lookup(|key| std::env::var(key).ok());
    launch::launch(
        "step-06",
        config,
        |config| config,
        |config, listener, signal| {
            // The start-up work a real service does before taking traffic; here, a configurable
            // wait (`STARTUP_DELAY`), during which `/readyz` says 503.
            let startup = tokio::time::sleep(config.startup_delay);
            run(listener, config, Ops::default(), startup, signal)
        },
    )
}
