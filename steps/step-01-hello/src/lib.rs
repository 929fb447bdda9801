//! Step 01: the smallest honest HTTP server, written with hyper and tokio and no framework.
//!
//! Go's `http.ListenAndServe` hides three decisions that every server makes. Here they are in
//! plain sight: accept connections in a loop, give each connection its own task, and run the
//! HTTP/1.1 protocol on it with a function that turns a request into a response.
#![forbid(unsafe_code)]

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// What every request gets back.
pub const GREETING: &str = "Hello from Rust";

// ANCHOR: handler
/// Turns any request into `200 OK`, `text/plain`, "Hello from Rust".
///
/// The request type is generic over its body because we never read it: this handler works for
/// a request straight off a socket and for one built by hand in a test.
pub async fn hello<B>(_request: Request<B>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut response = Response::new(Full::new(Bytes::from_static(GREETING.as_bytes())));
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Ok(response)
}
// ANCHOR_END: handler

// ANCHOR: serve
/// Accepts connections forever and serves each one on its own task.
pub async fn serve(listener: TcpListener) {
    loop {
        // Wait until the kernel hands us a new TCP connection. While we wait, this task uses
        // no CPU: the runtime parks it until the socket is readable.
        let (stream, _peer) = match listener.accept().await {
            Ok(connection) => connection,
            Err(error) => {
                // Running out of file descriptors is the usual cause. It is temporary, so the
                // server must not die; a short pause avoids spinning while nothing can change.
                // (Go's `Serve` does the same: it logs the error and retries after a pause.)
                eprintln!("accept failed: {error}; retrying");
                // Sleep without blocking the thread, so the connections we already have go on.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // One task per connection, so a slow client only ever delays itself. Tasks are cheap
        // (a few hundred bytes), like goroutines, and the runtime spreads them over its threads.
        tokio::spawn(async move {
            // Speak HTTP/1.1 on this connection, with keep-alive, until the client closes it.
            // `service_fn` wraps our plain async function as the service hyper calls per request.
            let connection =
                http1::Builder::new().serve_connection(TokioIo::new(stream), service_fn(hello));
            if let Err(error) = connection.await {
                // A client that vanishes mid-request ends up here; it harms no one else.
                eprintln!("connection ended with an error: {error}");
            }
        });
    }
}
// ANCHOR_END: serve

/// Reads the port from the value of `PORT` (unset means 8080).
pub fn port_from(value: Option<&str>) -> Result<u16, String> {
    match value {
        None => Ok(8080),
        Some(text) => text
            .trim()
            .parse()
            .map_err(|_| format!("PORT must be a number from 0 to 65535, got {text:?}")),
    }
}
