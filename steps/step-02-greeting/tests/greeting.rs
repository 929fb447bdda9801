//! Step 02's behaviour: the greeting, its configuration, cancellation on disconnect, and the
//! request timeout.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::body::Body;
use http::Request;
use step_02::{Config, Stats, app, format_duration, parse_duration};
use testkit::{Binary, Reply, StatusCode, env_from, eventually, get, spawn_in_process};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tower::ServiceExt;

const BIN: &str = env!("CARGO_BIN_EXE_step-02");

/// The configuration a test asks for, on top of the defaults.
fn config(vars: &[(&str, &str)]) -> Config {
    Config::from_lookup(env_from(vars)).expect("valid test configuration")
}

/// Serves `app` in-process and returns its address and counters.
async fn start(config: Config) -> (std::net::SocketAddr, Arc<Stats>) {
    let stats = Arc::new(Stats::default());
    let router = app(&config, stats.clone());
    let addr =
        spawn_in_process(|listener| async move { axum::serve(listener, router).await }).await;
    (addr, stats)
}

/// `GET path` handed straight to the app, no socket: for tests of routing and handlers only.
async fn oneshot(config: Config, path: &str) -> (Reply, Arc<Stats>) {
    let stats = Arc::new(Stats::default());
    let request = Request::get(path)
        .body(Body::empty())
        .expect("a valid request");
    let response = app(&config, stats.clone())
        .oneshot(request)
        .await
        .unwrap_or_else(|never| match never {});
    (Reply::from_response(response).await, stats)
}

#[tokio::test]
async fn greets_the_default_target() {
    let (addr, stats) = start(config(&[])).await;

    let reply = get(addr, "/").await;

    testkit::assert_transcript!("step02_curl_root", reply, "curl -i localhost:8080/");
    assert_eq!(stats.completed.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn greets_the_configured_target() {
    let (reply, _) = oneshot(config(&[("TARGET", "Gopher")]), "/?work_ms=0").await;

    assert_eq!(reply.body, "Hello, Gopher!\n");
}

#[tokio::test]
async fn a_client_that_disconnects_cancels_the_work() {
    let (addr, stats) = start(config(&[])).await;
    let started = Instant::now();

    // Ask for 2 s of work, then hang up after 100 ms.
    let mut client = TcpStream::connect(addr).await.expect("connect");
    client
        .write_all(b"GET /?work_ms=2000 HTTP/1.1\r\nhost: test\r\n\r\n")
        .await
        .expect("send request");
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(client);

    eventually(
        "the server records the cancellation",
        async || stats.cancelled.load(Ordering::Relaxed),
        |cancelled| *cancelled == 1,
    )
    .await;
    // Wait until the work would have finished, and check that it never did.
    tokio::time::sleep(Duration::from_millis(2_200).saturating_sub(started.elapsed())).await;
    assert_eq!(
        stats.completed.load(Ordering::Relaxed),
        0,
        "the work ran to completion anyway"
    );
}

#[tokio::test]
async fn a_request_past_the_timeout_gets_503_at_the_deadline() {
    let (addr, stats) = start(config(&[("REQUEST_TIMEOUT", "300ms")])).await;
    let started = Instant::now();

    let reply = get(addr, "/?work_ms=5000").await;

    let elapsed = started.elapsed();
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        elapsed >= Duration::from_millis(300),
        "answered before the deadline: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_secs(3),
        "answered long after the deadline: {elapsed:?}"
    );
    // The timeout dropped the handler, exactly like a disconnect would.
    eventually(
        "the timeout cancels the handler",
        async || stats.cancelled.load(Ordering::Relaxed),
        |cancelled| *cancelled == 1,
    )
    .await;
    testkit::assert_transcript!(
        "step02_timeout",
        reply,
        "curl -i 'localhost:8080/?work_ms=5000'   # with REQUEST_TIMEOUT=300ms"
    );
}

#[tokio::test]
async fn too_much_work_is_refused() {
    let (reply, stats) = oneshot(config(&[]), "/?work_ms=10001").await;

    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.body, "work_ms must be at most 10000\n");
    assert_eq!(
        stats.completed.load(Ordering::Relaxed) + stats.cancelled.load(Ordering::Relaxed),
        0
    );
}

#[test]
fn configuration_defaults_and_overrides() {
    assert_eq!(
        config(&[]),
        Config {
            port: 8080,
            target: "World".into(),
            request_timeout: Duration::from_secs(5)
        }
    );
    let custom = config(&[
        ("PORT", "3000"),
        ("TARGET", "Rust"),
        ("REQUEST_TIMEOUT", "250ms"),
    ]);
    assert_eq!((custom.port, custom.target.as_str()), (3000, "Rust"));
    assert_eq!(custom.request_timeout, Duration::from_millis(250));
    assert_eq!(
        config(&[("REQUEST_TIMEOUT", "1.5")]).request_timeout,
        Duration::from_millis(1500)
    );
}

#[test]
fn bad_durations_are_refused() {
    for text in ["-1", "0", "0ms", "abc", "", "5m", "7200s", "NaN"] {
        assert_eq!(parse_duration(text), None, "{text:?} was accepted");
    }
}

#[test]
fn durations_are_logged_the_way_they_are_configured() {
    for (duration, text) in [
        (Duration::from_secs(5), "5s"),
        (Duration::from_millis(250), "250ms"),
        (Duration::from_millis(1500), "1.5s"),
        (Duration::ZERO, "0s"),
    ] {
        assert_eq!(format_duration(duration), text);
        if !duration.is_zero() {
            assert_eq!(parse_duration(text), Some(duration), "{text} reads back");
        }
    }
}

#[tokio::test]
async fn the_binary_logs_cancellations() {
    let mut server = Binary::start(BIN, &[]).await;

    let mut client = TcpStream::connect(server.addr).await.expect("connect");
    client
        .write_all(b"GET /?work_ms=5000 HTTP/1.1\r\nhost: test\r\n\r\n")
        .await
        .expect("send");
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(client);

    let line = server.wait_for_line("request cancelled").await;
    assert!(
        line.is_some_and(|l| l.contains("elapsed_ms=")),
        "{:?}",
        server.output()
    );
}

#[tokio::test]
async fn the_binary_listens_on_port_from_the_environment() {
    testkit::assert_honours_port(BIN, "/?work_ms=0").await;
}

#[tokio::test]
async fn bad_configuration_is_one_line_and_exit_code_2() {
    for (var, value) in [("PORT", "abc"), ("PORT", "70000")] {
        let line = testkit::assert_config_refused(BIN, &[(var, value)]).await;

        assert!(
            line.starts_with(&format!("step-02: {var} must be")),
            "{line}"
        );
    }
    let line = testkit::assert_config_refused(BIN, &[("REQUEST_TIMEOUT", "-1")]).await;
    testkit::assert_transcript!(
        "step02_bad_config",
        format!("$ REQUEST_TIMEOUT=-1 cargo run -q -p step-02\n{line}\n$ echo $?\n2")
    );
}
