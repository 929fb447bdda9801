//! `grpc.health.v1`: the gRPC face of `/readyz`.
//!
//! Kubernetes' native gRPC probe, Cloud Run's gRPC health check and load balancers ask
//! `grpc.health.v1.Health/Check`; `grpcurl` and client-side health checking `Watch` it. The
//! answer must be the same fact `/readyz` gives: step 06's `Readiness`, which step 07 moves
//! with the database and `run_app` moves to draining on SIGTERM.

use std::time::Duration;

use step_06::{Phase, Readiness};
use tonic::server::NamedService;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::pb::item_service_server::ItemServiceServer;
use crate::service::Items;

/// How often the health service looks at readiness: one atomic load each time.
pub const FOLLOW_EVERY: Duration = Duration::from_millis(100);

// ANCHOR: follow
/// The service name clients ask about besides `""` (the whole server).
pub const ITEM_SERVICE: &str = <ItemServiceServer<Items> as NamedService>::NAME;

/// `SERVING` exactly when `/readyz` says 200; `NOT_SERVING` while starting, while the database
/// is unreachable, and from SIGTERM on.
pub fn serving_status(phase: Phase) -> ServingStatus {
    match phase {
        Phase::Ready => ServingStatus::Serving,
        Phase::Starting | Phase::Unavailable | Phase::Draining => ServingStatus::NotServing,
    }
}

/// Copies readiness into the health service for the life of the process. Readiness is an
/// atomic nobody is told about when it changes, so this looks every [`FOLLOW_EVERY`] and
/// tells `Watch`ers only about changes.
pub async fn follow_readiness(readiness: Readiness, reporter: HealthReporter) {
    let mut told = tell(&readiness, &reporter).await;
    loop {
        // Sleeps; a change is seen at most this late.
        tokio::time::sleep(FOLLOW_EVERY).await;
        let status = serving_status(readiness.phase());
        if status != told {
            told = tell(&readiness, &reporter).await;
        }
    }
}

/// Sets both names to what readiness says now. `run` calls it once before the first
/// connection: tonic's reporter starts at `SERVING`, which is not true while starting.
pub async fn tell(readiness: &Readiness, reporter: &HealthReporter) -> ServingStatus {
    let status = serving_status(readiness.phase());
    for service in ["", ITEM_SERVICE] {
        // Takes the reporter's lock for a moment; wakes the `Watch` streams of that name.
        reporter.set_service_status(service, status).await;
    }
    status
}
// ANCHOR_END: follow
