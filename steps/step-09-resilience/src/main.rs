//! Step 09: step 08's service, whose items gain a stock figure from an inventory service,
//! asked with a deadline, retries within a budget, a circuit breaker and a bulkhead. When the
//! inventory cannot answer in time, the item comes without it and with `X-Degraded: stock`.
//!
//! Run it:   `cargo run -p step-09 --bin inventory` in one terminal, then
//!           `DATABASE_URL=postgres://postgres@localhost/items UPSTREAM_URL=http://localhost:8081 cargo run -p step-09 --bin step-09`,
//!           create an item and `curl -i localhost:8080/api/items/item-1`; stop the inventory
//!           (Ctrl-C) and watch the breaker open and, once it is back, close in the logs.
//! Settings: step 08's, plus `UPSTREAM_URL`, `UPSTREAM_TIMEOUT`, `UPSTREAM_MAX_CONCURRENCY`,
//!           `BREAKER_FAILURES`, `BREAKER_COOLDOWN`, and, to measure what they save,
//!           `BREAKER_ENABLED` and `RETRY_BUDGET_ENABLED` (see upstream.rs).
#![forbid(unsafe_code)]

use std::process::ExitCode;

use step_06::{Ops, launch};
use step_08::Grpc;
use step_09::{config_from_lookup, run};

// ANCHOR: main
fn main() -> ExitCode {
    let config = config_from_lookup(|key| std::env::var(key).ok());
    launch::launch(
        "step-09",
        config,
        |config| &config.base.base,
        |config, listener, signal| run(listener, config, Ops::default(), Grpc::default(), signal),
    )
}
// ANCHOR_END: main
