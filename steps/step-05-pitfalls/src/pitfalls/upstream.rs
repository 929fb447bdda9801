//! The outbound side: an HTTP client that counts the connections it opens, one call helper,
//! and the lab's built-in upstream routes.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use axum::http::{StatusCode, Uri};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use crate::{Problem, Stats};

/// The most of an upstream's body we are willing to hold in memory.
pub const MAX_UPSTREAM_BODY: usize = 64 * 1024;

/// hyper-util's pooling client over plain TCP, with a connection counter.
pub type HttpClient = Client<CountingConnector, Empty<Bytes>>;

// ANCHOR: connector
/// hyper-util's `HttpConnector`, plus a count of the TCP connections it has opened.
///
/// A connector is a `tower::Service<Uri>` that turns a URL into a connected socket; the client
/// calls it only when its pool has no idle connection to reuse, so the count is exactly
/// "how many connections did we open".
#[derive(Clone)]
pub struct CountingConnector {
    inner: HttpConnector,
    stats: Arc<Stats>,
    counter: fn(&Stats) -> &AtomicU64,
}

impl tower::Service<Uri> for CountingConnector {
    type Response = TokioIo<TcpStream>;
    type Error = <HttpConnector as tower::Service<Uri>>::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.inner.call(uri);
        let (stats, counter) = (self.stats.clone(), self.counter);
        Box::pin(async move {
            // Count only connections that were actually established.
            let stream = connecting.await?;
            counter(&stats).fetch_add(1, Ordering::Relaxed);
            Ok(stream)
        })
    }
}

/// A new client with its own, empty connection pool. Keep-alive is on (hyper's default):
/// after a response, its connection goes back to the pool for the next request.
pub fn client(stats: Arc<Stats>, counter: fn(&Stats) -> &AtomicU64) -> HttpClient {
    let mut inner = HttpConnector::new();
    inner.set_nodelay(true);
    Client::builder(TokioExecutor::new()).build(CountingConnector {
        inner,
        stats,
        counter,
    })
}
// ANCHOR_END: connector

/// `GET uri`; returns the status and the body (at most [`MAX_UPSTREAM_BODY`] bytes), or a
/// 502 naming what went wrong.
pub async fn call(client: &HttpClient, uri: &Uri) -> Result<(StatusCode, String), Problem> {
    let bad_gateway = |what: String| (StatusCode::BAD_GATEWAY, format!("upstream {what}\n"));
    // Waits for a connection (from the pool, or a new one) and the response head.
    let response = client
        .get(uri.clone())
        .await
        .map_err(|e| bad_gateway(format!("request failed: {e}")))?;
    let status = response.status();
    // Reading the body to its end is also what hands the connection back to the pool.
    let body = Limited::new(response.into_body(), MAX_UPSTREAM_BODY)
        .collect()
        .await
        .map_err(|e| bad_gateway(format!("body could not be read: {e}")))?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// The built-in upstream that answers.
pub async fn hello() -> &'static str {
    "hello from upstream\n"
}

/// The built-in upstream that never answers. Its future is dropped when the caller gives up
/// and closes the connection, so it costs nothing after that.
pub async fn hang() -> &'static str {
    std::future::pending::<()>().await;
    "unreachable\n"
}
