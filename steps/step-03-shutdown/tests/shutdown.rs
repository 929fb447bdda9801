//! Step 03's behaviour, on the real binary: what happens between SIGTERM and exit.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use step_03::{Config, ShutdownError, format_duration, parse_duration};
use testkit::{Binary, PATIENCE, StatusCode, env_from, get};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BIN: &str = env!("CARGO_BIN_EXE_step-03");

/// Starts a request on its own task; the handle yields its reply.
fn start_request(server: &Binary, path: &'static str) -> tokio::task::JoinHandle<testkit::Reply> {
    let addr = server.addr;
    tokio::spawn(async move { get(addr, path).await })
}

#[tokio::test]
async fn sigterm_lets_the_request_in_flight_finish_then_exits_0() {
    let mut server = Binary::start(BIN, &[]).await;
    let in_flight = start_request(&server, "/?work_ms=1000");
    tokio::time::sleep(Duration::from_millis(200)).await;

    server.signal("TERM");

    // New connections are refused while the old request is still being served.
    let refused_while_draining = async {
        loop {
            if TcpStream::connect(server.addr).await.is_err() {
                return !in_flight.is_finished();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let refused = tokio::time::timeout(Duration::from_millis(700), refused_while_draining).await;
    assert_eq!(
        refused,
        Ok(true),
        "new connections were still accepted after SIGTERM"
    );
    let reply = in_flight.await.expect("request task");
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, "Hello, World!\n");
    let status = server
        .wait_exit(PATIENCE)
        .await
        .expect("exits after draining");
    assert_eq!(status.code(), Some(0), "{:?}", server.output());
}

#[tokio::test]
async fn an_idle_keep_alive_connection_does_not_hold_shutdown_open() {
    let mut server = Binary::start(BIN, &[]).await;
    // One request on a keep-alive connection, then the client just sits there.
    let mut idle = TcpStream::connect(server.addr).await.expect("connect");
    idle.write_all(b"GET /?work_ms=0 HTTP/1.1\r\nhost: test\r\n\r\n")
        .await
        .expect("send");
    let mut buffer = [0u8; 1024];
    let read = idle.read(&mut buffer).await.expect("reply");
    assert!(String::from_utf8_lossy(&buffer[..read]).starts_with("HTTP/1.1 200"));

    let signalled = Instant::now();
    server.signal("TERM");

    // The default drain deadline is 8 s: an idle connection that held shutdown open would
    // make the exit take that long and fail.
    let status = server.wait_exit(PATIENCE).await.expect("exits");
    assert_eq!(status.code(), Some(0));
    assert!(
        signalled.elapsed() < Duration::from_secs(4),
        "exit took {:?}",
        signalled.elapsed()
    );
    // And the server closed the idle connection rather than leaving it dangling.
    assert_eq!(idle.read(&mut buffer).await.map_err(|_| ()), Ok(0));
}

#[tokio::test]
async fn a_request_longer_than_the_drain_deadline_is_cut_off_at_the_deadline() {
    let mut server = Binary::start(
        BIN,
        &[("SHUTDOWN_TIMEOUT", "1s"), ("REQUEST_TIMEOUT", "60s")],
    )
    .await;
    let too_long = start_request(&server, "/?work_ms=10000");
    tokio::time::sleep(Duration::from_millis(200)).await;

    let signalled = Instant::now();
    server.signal("TERM");
    let status = server.wait_exit(PATIENCE).await.expect("exits");

    let elapsed = signalled.elapsed();
    assert_eq!(status.code(), Some(1));
    assert!(
        elapsed >= Duration::from_millis(900),
        "gave up before the deadline: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_secs(4),
        "gave up long after the deadline: {elapsed:?}"
    );
    let log = server.output();
    assert!(
        log.iter()
            .any(|l| l.contains("drain deadline passed") && l.contains("cut_off=1")),
        "{log:?}"
    );
    // The client sees its connection die rather than a reply.
    assert!(too_long.await.is_err(), "the cut-off request got a reply");
}

#[tokio::test]
async fn the_final_flush_happens_even_when_the_drain_deadline_passes() {
    let mut server = Binary::start(BIN, &[("SHUTDOWN_TIMEOUT", "1s")]).await;
    let _cut_off = start_request(&server, "/?work_ms=5000");
    tokio::time::sleep(Duration::from_millis(200)).await;

    server.signal("TERM");
    let status = server.wait_exit(PATIENCE).await.expect("exits");

    let log = server.output();
    assert_eq!(status.code(), Some(1), "{log:#?}");
    let deadline = log
        .iter()
        .position(|l| l.contains("drain deadline passed"))
        .unwrap_or_else(|| panic!("no missed deadline in {log:#?}"));
    assert!(
        log[deadline..]
            .iter()
            .any(|l| l.contains("flushed stats") && l.contains("kind=\"final\"")),
        "the final flush was lost with the cut-off request: {log:#?}"
    );
}

#[tokio::test]
async fn sigint_drains_like_sigterm_and_the_log_tells_each_phase() {
    let mut server = Binary::start(BIN, &[]).await;
    let reply = get(server.addr, "/?work_ms=0").await;
    assert_eq!(reply.status, StatusCode::OK);
    let started = server.output().len();

    server.signal("INT");
    let status = server.wait_exit(PATIENCE).await.expect("exits");

    assert_eq!(status.code(), Some(0));
    // Logged lines after the signal, without their timestamps (the first word).
    let phases: Vec<String> = server.output()[started..]
        .iter()
        .map(|line| {
            line.split_once(' ')
                .map_or(line.as_str(), |(_, rest)| rest)
                .trim()
                .to_owned()
        })
        .collect();
    testkit::assert_transcript!("step03_shutdown_log", phases.join("\n"));
}

#[tokio::test]
async fn the_binary_listens_on_port_from_the_environment() {
    testkit::assert_honours_port(BIN, "/?work_ms=0").await;
}

#[tokio::test]
async fn a_bad_shutdown_timeout_is_one_line_and_exit_code_2() {
    let line = testkit::assert_config_refused(BIN, &[("SHUTDOWN_TIMEOUT", "soon")]).await;

    assert_eq!(
        line,
        "step-03: SHUTDOWN_TIMEOUT must be a positive duration such as 8s or 500ms, got \"soon\""
    );
}

/// A listener whose `accept` panics: the server task ends before any signal arrives.
struct BrokenListener;

impl axum::serve::Listener for BrokenListener {
    type Io = tokio::net::TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        panic!("the listener broke")
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(SocketAddr::from(([127, 0, 0, 1], 0)))
    }
}

#[tokio::test]
async fn a_server_that_stops_on_its_own_is_reported_as_failed() {
    let config = Config::from_lookup(env_from(&[])).expect("the defaults are valid");

    // No signal ever comes: only the server's own end can finish the first phase.
    let outcome = tokio::time::timeout(
        PATIENCE,
        step_03::run(BrokenListener, config, std::future::pending()),
    )
    .await
    .expect("run returns once the server has stopped");

    match outcome {
        Err(ShutdownError::ServerFailed(why)) => {
            assert!(why.contains("panicked"), "{why}");
        }
        other => panic!("expected a server failure, got {other:?}"),
    }
}

#[test]
fn durations_are_logged_the_way_they_are_configured() {
    for (duration, text) in [
        (Duration::from_secs(8), "8s"),
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
