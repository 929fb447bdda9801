//! Step 10: step 09's service, traced with OpenTelemetry: one server span per REST or gRPC
//! request, a child span per database query and per upstream attempt, the trace continued
//! from the caller and sent on to the upstream, exported over OTLP/gRPC.
//!
//! Run it:   `cargo run -p step-10 --bin otlp-sink` in one terminal (a stand-in collector on
//!           port 4317), then
//!           `DATABASE_URL=postgres://postgres@localhost/items OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4317 OTEL_TRACES_SAMPLER=always_on cargo run -p step-10 --bin step-10`,
//!           create an item, `curl localhost:8080/api/items/item-1`, then
//!           `curl localhost:4317/spans` to see its spans.
//! Settings: step 09's, plus `OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_SERVICE_NAME`,
//!           `OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG`, `OTEL_SDK_DISABLED` and
//!           `OTEL_EXPORTER_OTLP_PROTOCOL` (grpc only), see telemetry.rs.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use step_06::{Ops, launch};
use step_08::Grpc;
use step_10::{config_from_lookup, extras, run};

// ANCHOR: main
fn main() -> ExitCode {
    let config = config_from_lookup(|key| std::env::var(key).ok());
    launch::launch_with(
        "step-10",
        config,
        |config| &config.base.base.base,
        extras,
        |config, listener, signal| run(listener, config, Ops::default(), Grpc::default(), signal),
    )
}
// ANCHOR_END: main
