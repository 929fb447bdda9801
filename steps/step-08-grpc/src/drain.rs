//! Streams that would outlive the drain.
//!
//! hyper's graceful shutdown lets every request in flight finish, which is right for a REST
//! request and for a unary call: they end on their own. A stream that waits for news (the
//! health service's `Watch`, a reflection session) never does, and would keep its connection,
//! and so the process, open until `SHUTDOWN_TIMEOUT` cuts it off. `ListItems` ends itself
//! (see `service.rs`); this layer ends the others.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use hyper::body::{Bytes, Frame, SizeHint};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::status::shutting_down;

// ANCHOR: drain
/// Middleware on the gRPC routes: once `draining` is cancelled, a response body that is
/// waiting for its next message ends instead, with `UNAVAILABLE` in its trailers.
pub async fn end_streams_on_drain(
    State(draining): State<CancellationToken>,
    request: Request,
    next: Next,
) -> Response {
    let response = next.run(request).await;
    response.map(|body| {
        Body::new(UntilDrained {
            body,
            drained: Box::pin(draining.cancelled_owned()),
            ended: false,
        })
    })
}

struct UntilDrained {
    body: Body,
    drained: Pin<Box<WaitForCancellationFutureOwned>>,
    ended: bool,
}

impl hyper::body::Body for UntilDrained {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        // What the body has ready goes first: a unary answer is always ready, so it is never
        // cut short, and news a stream has already produced still reaches the client.
        let waiting = match Pin::new(&mut self.body).poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            ready => return ready,
        };
        if self.drained.as_mut().poll(cx).is_pending() {
            return waiting;
        }
        self.ended = true;
        let mut trailers = HeaderMap::new();
        // Writing a status with a fixed ASCII message into a map cannot fail.
        let _ = shutting_down().add_header(&mut trailers);
        Poll::Ready(Some(Ok(Frame::trailers(trailers))))
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
// ANCHOR_END: drain
