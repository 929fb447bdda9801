//! The real binary: configuration from the environment, and SIGTERM draining a request that is
//! still in flight.

mod common;

use std::time::Duration;

use common::PATIENCE;
use testkit::{Binary, get};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BIN: &str = env!("CARGO_BIN_EXE_step-04");

/// Debug logs from tower-http include "started processing request": proof that the server has
/// the request's headers and is running its handler.
const SEE_REQUESTS_START: (&str, &str) = ("RUST_LOG", "info,tower_http=debug");

/// Opens a connection and sends a POST whose body is announced but only half sent, then waits
/// until the server is running the handler: a request that is unmistakably in flight.
async fn start_half_sent_post(server: &mut Binary) -> TcpStream {
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"POST /api/items HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\ncontent-length: 15\r\n\r\n{\"name\":")
        .await
        .unwrap();
    server
        .wait_for_line("started processing request")
        .await
        .expect("the request reached a handler");
    stream
}

// ANCHOR: drain
#[tokio::test]
async fn sigterm_lets_the_request_in_flight_finish_then_exits_0() {
    let mut server = Binary::start(BIN, &[SEE_REQUESTS_START]).await;
    let mut in_flight = start_half_sent_post(&mut server).await;

    server.signal("TERM");
    server
        .wait_for_line("draining connections")
        .await
        .expect("the drain began");
    // New connections are refused from now on...
    assert!(
        TcpStream::connect(server.addr).await.is_err(),
        "still accepting after SIGTERM"
    );
    // ...but the request in flight completes.
    in_flight.write_all(b"\"late\"}").await.unwrap();
    let mut reply = String::new();
    in_flight.read_to_string(&mut reply).await.unwrap();

    assert!(reply.starts_with("HTTP/1.1 201 Created\r\n"), "{reply}");
    assert!(reply.contains(r#""name":"late""#), "{reply}");
    let status = server.wait_exit(PATIENCE).await.expect("exited");
    assert_eq!(status.code(), Some(0), "{:?}", server.output());
}
// ANCHOR_END: drain

#[tokio::test]
async fn a_drain_past_the_deadline_exits_1_and_says_so() {
    let mut server = Binary::start(BIN, &[SEE_REQUESTS_START, ("SHUTDOWN_TIMEOUT", "1s")]).await;
    let _stalled = start_half_sent_post(&mut server).await;

    server.signal("TERM");

    let status = server.wait_exit(PATIENCE).await.expect("exited");
    assert_eq!(status.code(), Some(1));
    let said = server
        .wait_for_line("drain deadline passed")
        .await
        .expect("a log line about it");
    assert!(said.contains("cut_off=1"), "{said}");
}

#[tokio::test]
async fn an_idle_server_exits_0_at_once_on_sigterm() {
    let mut server = Binary::start(BIN, &[]).await;
    assert_eq!(get(server.addr, "/health").await.status, 200);

    server.signal("TERM");

    let status = server.wait_exit(PATIENCE).await.expect("exited");
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn the_binary_listens_on_port_from_the_environment() {
    testkit::assert_honours_port(BIN, "/health").await;
}

#[tokio::test]
async fn the_binary_reads_header_read_timeout_from_the_environment() {
    let server = Binary::start(BIN, &[("HEADER_READ_TIMEOUT", "1s")]).await;
    let mut slow = TcpStream::connect(server.addr).await.unwrap();

    slow.write_all(b"GET /hea").await.unwrap();
    let started = std::time::Instant::now();
    let mut received = Vec::new();
    let closed = tokio::time::timeout(PATIENCE, slow.read_to_end(&mut received)).await;

    assert!(closed.is_ok(), "the stalled connection was not closed");
    assert!(received.is_empty());
    // Well before the 10 s default: the variable was honoured.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "closed after {:?}",
        started.elapsed()
    );
    assert_eq!(get(server.addr, "/health").await.status, 200);
}

#[tokio::test]
async fn the_binary_reads_max_items_from_the_environment() {
    let server = Binary::start(BIN, &[("MAX_ITEMS", "1")]).await;
    let post = |name: &'static str| {
        testkit::request(
            server.addr,
            testkit::Method::POST,
            "/api/items",
            &[common::JSON],
            name,
        )
    };

    assert_eq!(post(r#"{"name":"a"}"#).await.unwrap().status, 201);
    assert_eq!(post(r#"{"name":"b"}"#).await.unwrap().status, 507);
}

#[tokio::test]
async fn bad_configuration_is_one_line_and_exit_code_2() {
    let cases = [
        (
            "PORT",
            "abc",
            "step-04: PORT must be a number from 0 to 65535, got \"abc\"",
        ),
        (
            "MAX_ITEMS",
            "0",
            "step-04: MAX_ITEMS must be a whole number from 1 to 1000000000, got \"0\"",
        ),
        (
            "MAX_ITEMS",
            "lots",
            "step-04: MAX_ITEMS must be a whole number from 1 to 1000000000, got \"lots\"",
        ),
        (
            "HEADER_READ_TIMEOUT",
            "0s",
            "step-04: HEADER_READ_TIMEOUT must be a duration from 1ms to 1h, written 250ms, 5s, 2m, 1h or 2.5 (seconds), got \"0s\"",
        ),
        (
            "REQUEST_TIMEOUT",
            "soon",
            "step-04: REQUEST_TIMEOUT must be a duration from 1ms to 1h, written 250ms, 5s, 2m, 1h or 2.5 (seconds), got \"soon\"",
        ),
        (
            "SHUTDOWN_TIMEOUT",
            "-1s",
            "step-04: SHUTDOWN_TIMEOUT must be a duration from 1ms to 1h, written 250ms, 5s, 2m, 1h or 2.5 (seconds), got \"-1s\"",
        ),
    ];

    for (name, value, message) in cases {
        let line = testkit::assert_config_refused(BIN, &[(name, value)]).await;

        assert_eq!(line, message, "{name}={value}");
    }
}

#[test]
fn defaults_are_the_documented_limits() {
    let config = common::config();
    assert_eq!(config.port, 8080);
    assert_eq!(config.max_items, step_04::DEFAULT_MAX_ITEMS);
    assert_eq!(
        config.header_read_timeout,
        step_04::DEFAULT_HEADER_READ_TIMEOUT
    );
    assert_eq!(config.request_timeout, step_04::DEFAULT_REQUEST_TIMEOUT);
    assert_eq!(config.shutdown_timeout, step_04::DEFAULT_SHUTDOWN_TIMEOUT);
    assert_eq!(
        step_04::DEFAULT_HEADER_READ_TIMEOUT,
        Duration::from_secs(10)
    );
}
