//! The server around the API: slow clients are cut off, idle connections closed, slow requests
//! answered with a 503 and panics with a 500, all without stopping the server.

mod common;

use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::routing::get as route_get;
use common::{PATIENCE, assert_error, config, start};
use step_04::Config;
use testkit::{assert_transcript, get, spawn_in_process};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tower::ServiceExt;

const HEADER_TIMEOUT: Duration = Duration::from_secs(1);

/// Reads until the server closes the connection; returns what it sent and how long it took.
async fn read_until_closed(stream: &mut TcpStream) -> (String, Duration) {
    let started = Instant::now();
    let mut received = Vec::new();
    // A reset counts as closed too, hence `unwrap_or_default`.
    let read = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut received)).await;
    assert!(
        read.is_ok(),
        "the server kept the connection open for {PATIENCE:?}"
    );
    (
        String::from_utf8_lossy(&received).into_owned(),
        started.elapsed(),
    )
}

/// The server, with a header-read (and keep-alive idle) timeout short enough to wait for.
async fn start_with_short_header_timeout() -> std::net::SocketAddr {
    start(Config {
        header_read_timeout: HEADER_TIMEOUT,
        ..config()
    })
    .await
}

// ANCHOR: slowloris
#[tokio::test]
async fn a_client_that_stalls_mid_request_line_is_cut_off_while_others_are_served() {
    let addr = start_with_short_header_timeout().await;
    let mut slow = TcpStream::connect(addr).await.unwrap();

    // Half a request line, then nothing.
    slow.write_all(b"GET /hea").await.unwrap();
    let (sent, waited) = tokio::join!(read_until_closed(&mut slow), async {
        // Meanwhile everybody else is served as usual.
        for _ in 0..5 {
            assert_eq!(get(addr, "/health").await.status, 200);
        }
    })
    .0;

    assert_eq!(
        sent, "",
        "nothing is sent to a client that never finished its request"
    );
    // Closed by the timer, not by anything else (timers never fire early; the margin covers
    // the time between the server's accept and our first read).
    assert!(waited >= HEADER_TIMEOUT / 2, "closed after only {waited:?}");
    assert_eq!(get(addr, "/health").await.status, 200);
}
// ANCHOR_END: slowloris

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_same_timeout() {
    let addr = start_with_short_header_timeout().await;
    let mut client = TcpStream::connect(addr).await.unwrap();

    client
        .write_all(b"GET /health HTTP/1.1\r\nhost: test\r\n\r\n")
        .await
        .unwrap();
    let (sent, waited) = read_until_closed(&mut client).await;

    assert!(sent.starts_with("HTTP/1.1 200 OK\r\n"), "{sent}");
    assert!(sent.ends_with(r#"{"status":"ok"}"#), "{sent}");
    assert!(waited >= HEADER_TIMEOUT / 2, "closed after only {waited:?}");
}

#[tokio::test]
async fn a_client_that_keeps_sending_gets_its_answer_on_the_same_connection() {
    let addr = start_with_short_header_timeout().await;
    let mut client = TcpStream::connect(addr).await.unwrap();

    // Two requests in one write: keep-alive works, and the timeout only bites on silence.
    client
        .write_all(b"GET /health HTTP/1.1\r\nhost: t\r\n\r\nGET /health HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let (sent, _) = read_until_closed(&mut client).await;

    assert_eq!(sent.matches("HTTP/1.1 200 OK").count(), 2, "{sent}");
}

// ANCHOR: timeout_test
#[tokio::test(start_paused = true)]
async fn a_request_over_the_deadline_gets_a_json_503() {
    // A handler that would take a minute; with the clock paused, tokio skips the waiting.
    let slow = Router::new().route(
        "/slow",
        route_get(|| async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            "too late"
        }),
    );
    let app = step_04::harden(slow, Duration::from_secs(1));

    let response = app
        .oneshot(
            axum::http::Request::get("/slow")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();

    let reply = to_reply(response).await;
    assert_error(&reply, 503, "request timed out", "slow handler");
    assert_transcript!(
        "step04_error_timeout",
        reply,
        "curl -i localhost:8080/slow   # a test-only route slower than REQUEST_TIMEOUT"
    );
}
// ANCHOR_END: timeout_test

#[tokio::test]
async fn a_panic_becomes_a_json_500_and_the_server_keeps_serving() {
    let router = Router::new()
        .route("/boom", route_get(boom))
        .route("/fine", route_get(|| async { "still here" }));
    let app = step_04::harden(router, Duration::from_secs(5));
    let config = config();
    let addr = spawn_in_process(move |listener| async move {
        step_04::serve(listener, app, &config, std::future::pending()).await
    })
    .await;

    let boom = get(addr, "/boom").await;
    let fine = get(addr, "/fine").await;

    assert_error(&boom, 500, "internal server error", "panicking handler");
    assert_transcript!(
        "step04_error_panic",
        boom,
        "curl -i localhost:8080/boom   # a test-only route that panics"
    );
    assert_eq!(fine.status, 200);
    assert_eq!(fine.body, "still here");
}

async fn boom() -> &'static str {
    panic!("a bug in a handler")
}

/// A response from `oneshot` in the shape of a testkit reply.
async fn to_reply(response: axum::response::Response) -> testkit::Reply {
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    testkit::Reply {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

/// Collects what a tracing subscriber writes, for tests that read the log.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn the_hand_written_logger_logs_method_path_status_and_latency() {
    let log = Captured::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    // For this thread only; a current-thread test runs everything on it.
    let _guard = tracing::subscriber::set_default(subscriber);
    let app = Router::new()
        .route(
            "/teapot",
            route_get(|| async { (axum::http::StatusCode::IM_A_TEAPOT, "short and stout") }),
        )
        .layer(axum::middleware::from_fn(step_04::log_by_hand));

    let response = app
        .oneshot(
            axum::http::Request::get("/teapot?sugar=2")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();

    assert_eq!(response.status(), 418);
    let line = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
    for field in [
        "method=GET",
        r#"path="/teapot""#,
        "status=418",
        "latency_us=",
    ] {
        assert!(line.contains(field), "{field} missing from {line:?}");
    }
    assert!(
        !line.contains("sugar"),
        "the query string is not logged: {line:?}"
    );
}

#[tokio::test]
async fn oversized_headers_get_a_json_431_and_the_server_keeps_serving() {
    let addr = start(config()).await;
    let header = |bytes: usize| "a".repeat(bytes);
    let send = |value: String| async move {
        testkit::request(
            addr,
            testkit::Method::GET,
            "/health",
            &[("x-big", &value)],
            "",
        )
        .await
        .expect("a reply, not a reset")
    };

    let fits = send(header(16 * 1024)).await;
    let over_ours = send(header(200 * 1024)).await;
    let over_hypers = send(header(step_04::HYPER_MAX_BUF_BYTES + 1024)).await;

    assert_eq!(fits.status, 200, "16 KiB of headers are fine");
    let message = format!(
        "request headers must be at most {} bytes in all",
        step_04::MAX_HEADER_BYTES
    );
    assert_error(&over_ours, 431, &message, "200 KB header");
    assert_eq!(over_hypers.status, 431, "hyper's own limit, past ours");
    assert_eq!(get(addr, "/health").await.status, 200);
}
