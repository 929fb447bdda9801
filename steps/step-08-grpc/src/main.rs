//! Step 08: step 07's service with gRPC beside REST on one port: `items.v1.ItemService`, the
//! `grpc.health.v1` health service and server reflection, over HTTP/2 without TLS (h2c), and
//! the REST API over HTTP/1.1 or h2c, all on `$PORT`.
//!
//! Run it:   `DATABASE_URL=postgres://postgres@localhost/items cargo run -p step-08`, then
//!           `grpcurl -plaintext -d '{"name":"Test Item"}' localhost:8080 items.v1.ItemService/CreateItem`,
//!           `curl -i localhost:8080/api/items` and
//!           `curl -i --http2-prior-knowledge localhost:8080/api/items`.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use step_06::{Ops, launch};
use step_08::{Grpc, config_from_lookup, run};

// ANCHOR: main
fn main() -> ExitCode {
    let config = config_from_lookup(|key| std::env::var(key).ok());
    launch::launch(
        "step-08",
        config,
        |config| &config.base,
        |config, listener, signal| run(listener, config, Ops::default(), Grpc::default(), signal),
    )
}
// ANCHOR_END: main
