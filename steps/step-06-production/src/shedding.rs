//! Concurrency limit with load shedding.
//!
//! Cloud Run sends an instance at most `--concurrency` requests at once (80 by default). The
//! server enforces the same number itself: the platform's limit is not the only way requests
//! arrive (Kubernetes, a local load test, a retry storm behind one ingress), and a limit the
//! process knows about is one it can *answer* for. Beyond the limit a request waits a short,
//! bounded time for a slot; if none frees up it gets `503` with `Retry-After` at once, instead
//! of joining a queue whose length — and so whose latency — has no bound.
//!
//! Why a semaphore and `tokio::time::timeout` rather than tower's `ConcurrencyLimitLayer` +
//! `LoadShedLayer`: that pair sheds the instant every slot is taken, with no grace at all, so
//! a burst that would have found a slot a millisecond later is refused; and it reports
//! "overloaded" as an error the app must map to a response. A semaphore and a timeout in a small
//! tower service say exactly what happens, with a wait we choose.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;
use tower::{Layer, Service, ServiceExt};

use crate::error::ApiError;
use crate::request_context::BoxFuture;

// ANCHOR: shed
/// The slots requests compete for, and how long one may wait for a slot. It is also the
/// layer (`.layer(shedder)`) that puts the limit in front of a service.
#[derive(Clone)]
pub struct Shedder {
    slots: Arc<Semaphore>,
    queue_timeout: Duration,
}

impl Shedder {
    pub fn new(max_concurrency: usize, queue_timeout: Duration) -> Shedder {
        Shedder {
            slots: Arc::new(Semaphore::new(max_concurrency)),
            queue_timeout,
        }
    }
}

/// Probes are never shed: a liveness probe refused because the instance is busy would get
/// the container restarted exactly when it is working hardest.
pub fn never_shed(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/health")
}

/// What every request goes through: run it if a slot is free within `queue_timeout`, refuse
/// it otherwise. A hand-written tower service rather than `axum::middleware::from_fn`: this
/// runs on every request, and `from_fn` clones and boxes the service inside it each time,
/// about 3 600 instructions (the measuring chapter); here it is one box for the future.
#[derive(Clone)]
pub struct Shed<S> {
    shedder: Shedder,
    inner: S,
}

impl<S> Layer<S> for Shedder {
    type Service = Shed<S>;

    fn layer(&self, inner: S) -> Shed<S> {
        Shed {
            shedder: self.clone(),
            inner,
        }
    }
}

impl<S> Service<Request> for Shed<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> BoxFuture {
        if never_shed(request.uri().path()) {
            return Box::pin(self.inner.call(request));
        }
        // The usual case, a free slot: take it now, no timer needed. `try_acquire` cannot jump
        // the queue: a freed slot goes to the oldest waiter, never back to the pool, while
        // anyone waits.
        if let Ok(permit) = self.shedder.slots.clone().try_acquire_owned() {
            let response = self.inner.call(request);
            return Box::pin(async move {
                // The permit lives until the response is ready, then frees the slot (also
                // when this future is dropped half-way: the permit's `Drop` gives it back).
                let _permit = permit;
                response.await
            });
        }
        // Every slot is taken: wait in line, in the returned future. The inner service is
        // called later, so the future takes its own copy (tower's rule: `call` must not be
        // made on a clone that was not polled ready, so `oneshot` does both).
        let inner = self.inner.clone();
        let Shedder {
            slots,
            queue_timeout,
        } = self.shedder.clone();
        Box::pin(async move {
            // Wait for a slot, but never longer than the queue timeout. `acquire_owned` is
            // fair (first come, first served), so a waiting request cannot be overtaken.
            match tokio::time::timeout(queue_timeout, slots.acquire_owned()).await {
                Ok(Ok(_permit)) => inner.oneshot(request).await,
                // Timed out (or the semaphore was closed, which this program never does).
                _ => Ok(overloaded()),
            }
        })
    }
}

/// Step 04's error type answers: 503, the usual JSON body, `Retry-After`, the same as every
/// other 503 of the API (and as the OpenAPI document says).
fn overloaded() -> Response {
    ApiError::Overloaded.into_response()
}
// ANCHOR_END: shed

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::body::Body;
    use axum::http::{StatusCode, header};
    use axum::routing::get;
    use tokio_util::sync::CancellationToken;
    use tower::ServiceExt;

    use super::*;

    /// One route that holds its slot until `release` is cancelled.
    fn gated(shedder: Shedder, release: CancellationToken) -> Router {
        Router::new()
            .route("/", get(move || async move { release.cancelled().await }))
            .layer(shedder)
    }

    #[tokio::test(start_paused = true)]
    async fn past_the_limit_a_request_waits_the_queue_timeout_then_gets_503() {
        let release = CancellationToken::new();
        let app = gated(Shedder::new(1, Duration::from_millis(50)), release.clone());
        let first = tokio::spawn(app.clone().oneshot(Request::new(Body::empty())));
        tokio::task::yield_now().await;

        let started = tokio::time::Instant::now();
        let second = app
            .clone()
            .oneshot(Request::new(Body::empty()))
            .await
            .expect("infallible");

        assert_eq!(second.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(second.headers()[header::RETRY_AFTER], "1");
        assert_eq!(started.elapsed(), Duration::from_millis(50));
        release.cancel();
        assert_eq!(
            first.await.expect("join").expect("infallible").status(),
            StatusCode::OK
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_slot_freed_within_the_queue_timeout_is_taken() {
        let release = CancellationToken::new();
        let app = gated(Shedder::new(1, Duration::from_millis(100)), release.clone());
        let first = tokio::spawn(app.clone().oneshot(Request::new(Body::empty())));
        tokio::task::yield_now().await;
        let second = tokio::spawn(app.clone().oneshot(Request::new(Body::empty())));

        tokio::time::sleep(Duration::from_millis(30)).await;
        release.cancel();

        assert_eq!(
            first.await.expect("join").expect("infallible").status(),
            StatusCode::OK
        );
        assert_eq!(
            second.await.expect("join").expect("infallible").status(),
            StatusCode::OK
        );
    }
}
