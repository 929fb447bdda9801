//! Liveness and readiness probes.
//!
//! Two questions, two routes, because the platform acts differently on each answer:
//! - `/healthz`, liveness: "can this process serve at all?" A failing liveness probe gets the
//!   container *restarted*, so it must not depend on anything outside the process (a slow
//!   database would otherwise restart every instance at once) and must answer while the
//!   server is saturated: it is never shed.
//! - `/readyz`, readiness (and Cloud Run's startup probe): "should traffic come here now?"
//!   Not before start-up work is done, and not once draining has begun, so the load balancer
//!   stops sending new requests while the ones in flight finish.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

// ANCHOR: readiness
/// Where the instance is in its life, shared by `run` (which moves it forward) and `/readyz`.
#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicU8>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Start-up work is still running: alive, not ready.
    Starting,
    /// Serving traffic.
    Ready,
    /// Ready before, but something it needs is gone for now (a later step's database): alive,
    /// not ready, and back to `Ready` when it returns.
    Unavailable,
    /// Shutdown has begun: finishing what is in flight, not taking more.
    Draining,
}

const STARTING: u8 = 0;
const READY: u8 = 1;
const DRAINING: u8 = 2;
const UNAVAILABLE: u8 = 3;

impl Readiness {
    pub fn phase(&self) -> Phase {
        match self.0.load(Ordering::Acquire) {
            STARTING => Phase::Starting,
            READY => Phase::Ready,
            UNAVAILABLE => Phase::Unavailable,
            _ => Phase::Draining,
        }
    }

    /// Start-up is done, or what was missing is back. Does nothing once draining: a late
    /// start-up must not undo a drain.
    pub fn set_ready(&self) {
        let _ = self
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| {
                (now != DRAINING).then_some(READY)
            });
    }

    /// Something the instance needs is gone for now. Only a ready instance becomes
    /// unavailable: one still starting stays starting, one draining stays draining.
    pub fn set_unavailable(&self) {
        let _ = self
            .0
            .compare_exchange(READY, UNAVAILABLE, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Shutdown has begun; there is no way back.
    pub fn set_draining(&self) {
        self.0.store(DRAINING, Ordering::Release);
    }
}
// ANCHOR_END: readiness

// ANCHOR: routes
/// `/healthz` and `/readyz`. The caller mounts them *outside* the concurrency limit.
pub fn routes(readiness: Readiness) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(readiness)
}

async fn healthz() -> Response {
    probe_reply(StatusCode::OK, r#"{"status":"ok"}"#)
}

async fn readyz(State(readiness): State<Readiness>) -> Response {
    match readiness.phase() {
        Phase::Ready => probe_reply(StatusCode::OK, r#"{"status":"ready"}"#),
        Phase::Starting => probe_reply(StatusCode::SERVICE_UNAVAILABLE, r#"{"status":"starting"}"#),
        Phase::Unavailable => probe_reply(
            StatusCode::SERVICE_UNAVAILABLE,
            r#"{"status":"unavailable"}"#,
        ),
        Phase::Draining => probe_reply(StatusCode::SERVICE_UNAVAILABLE, r#"{"status":"draining"}"#),
    }
}

/// A probe's answer: a constant JSON body, as step 04's `/health` (nothing to serialise on a
/// route the platform calls every few seconds), that must never come from a cache between the
/// prober and the process.
fn probe_reply(status: StatusCode, body: &'static str) -> Response {
    let headers = [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        ),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
    ];
    (status, headers, body).into_response()
}
// ANCHOR_END: routes

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_probe_answers_json_that_no_cache_may_keep() {
        let response = readyz(State(Readiness::default())).await;

        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .expect("body");
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        assert_eq!(headers[header::CACHE_CONTROL], "no-store");
        assert_eq!(&body[..], br#"{"status":"starting"}"#);
    }

    #[test]
    fn readiness_moves_starting_ready_draining_and_never_back() {
        let readiness = Readiness::default();
        assert_eq!(readiness.phase(), Phase::Starting);

        readiness.set_ready();
        assert_eq!(readiness.phase(), Phase::Ready);

        readiness.set_draining();
        readiness.set_ready();
        assert_eq!(readiness.phase(), Phase::Draining);
    }

    #[test]
    fn draining_before_start_up_finished_stays_draining() {
        let readiness = Readiness::default();

        readiness.set_draining();
        readiness.set_ready();

        assert_eq!(readiness.phase(), Phase::Draining);
    }

    #[test]
    fn unavailable_comes_and_goes_but_never_undoes_starting_or_draining() {
        let readiness = Readiness::default();
        readiness.set_unavailable();
        assert_eq!(readiness.phase(), Phase::Starting);

        readiness.set_ready();
        readiness.set_unavailable();
        assert_eq!(readiness.phase(), Phase::Unavailable);
        readiness.set_ready();
        assert_eq!(readiness.phase(), Phase::Ready);

        readiness.set_unavailable();
        readiness.set_draining();
        readiness.set_ready();
        assert_eq!(readiness.phase(), Phase::Draining);
    }
}
