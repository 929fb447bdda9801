//! Over the wire: the real binary exports OTLP/gRPC to a receiver that decodes it with the
//! published OTLP definitions (`opentelemetry-proto`); SIGTERM still delivers the last spans;
//! a receiver that is down costs the requests nothing and the spans are counted as dropped.

use std::net::SocketAddr;

use step_10::sink::Sink;
use testkit::{Binary, Method, PATIENCE, eventually, get, postgres, request};

const BIN: &str = env!("CARGO_BIN_EXE_step-10");

async fn receiver() -> (Sink, SocketAddr) {
    let sink = Sink::default();
    let router = sink.clone().router();
    let addr =
        testkit::spawn_in_process(
            move |listener| async move { axum::serve(listener, router).await },
        )
        .await;
    (sink, addr)
}

async fn ready(server: &Binary) {
    eventually(
        "the service is ready",
        async || get(server.addr, "/readyz").await.status,
        |status| status.is_success(),
    )
    .await;
}

/// How many of `n` `GET /api/items`, one after the other, answered 200.
async fn answered(server: &Binary, n: usize) -> usize {
    let mut ok = 0;
    for _ in 0..n {
        let reply = request(server.addr, Method::GET, "/api/items", &[], "").await;
        ok += usize::from(reply.expect("an answer").status == 200);
    }
    ok
}

/// The line the service logs once it flushed its spans at exit.
fn flush_line(output: &[String]) -> &str {
    let line = output.iter().find(|l| l.contains("spans flushed"));
    line.unwrap_or_else(|| panic!("no flush line: {output:?}"))
}

// ANCHOR: sigterm
#[tokio::test]
async fn sigterm_right_after_a_request_still_delivers_its_spans() {
    let Some(db) = postgres::database() else {
        return;
    };
    let (sink, collector) = receiver().await;
    let endpoint = format!("http://{collector}");
    let server = Binary::start(
        BIN,
        &[
            ("DATABASE_URL", &db.url),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_TRACES_SAMPLER", "always_on"),
            ("OTEL_SERVICE_NAME", "items-under-test"),
        ],
    )
    .await;
    ready(&server).await;

    let reply = get(server.addr, "/api/items").await;
    server.signal("TERM");
    let mut server = server;
    let status = server.wait_exit(PATIENCE).await;

    assert_eq!(reply.status, 200);
    assert!(status.is_some_and(|s| s.success()), "{:?}", server.output());
    let spans = sink.spans();
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"GET /api/items"), "{names:?}");
    assert!(names.contains(&"SELECT items"), "{names:?}");
    let server_span = spans
        .iter()
        .find(|s| s.name == "GET /api/items")
        .expect("there");
    assert_eq!(server_span.service, "items-under-test");
    assert_eq!(server_span.kind, 2, "SPAN_KIND_SERVER");
    let db_span = spans
        .iter()
        .find(|s| s.name == "SELECT items")
        .expect("there");
    assert_eq!(db_span.parent_span_id, server_span.span_id);
    assert_eq!(db_span.trace_id, server_span.trace_id);
}
// ANCHOR_END: sigterm

// ANCHOR: down
#[tokio::test]
async fn with_the_receiver_down_requests_succeed_and_their_spans_are_counted_as_dropped() {
    let Some(db) = postgres::database() else {
        return;
    };
    // A port nothing listens on: every export is refused.
    let endpoint = format!("http://127.0.0.1:{}", testkit::free_port());
    let mut server = Binary::start(
        BIN,
        &[
            ("DATABASE_URL", &db.url),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_TRACES_SAMPLER", "always_on"),
        ],
    )
    .await;
    ready(&server).await;
    let requests = 50;

    let ok = answered(&server, requests).await;
    server.signal("TERM");
    let status = server.wait_exit(PATIENCE).await;
    let output = server.output();

    assert_eq!(ok, requests, "every request answered");
    assert!(status.is_some_and(|s| s.success()), "{output:?}");
    let flushed = flush_line(&output);
    // Two spans a request (the server's and the query's), none exported, none lost silently.
    assert!(flushed.contains("exported=0"), "{flushed}");
    assert!(
        flushed.contains(&format!("dropped={}", 2 * requests)),
        "{flushed}"
    );
    // Said at most every 10 s by the step, never once per failed batch by the SDK.
    let errors = output.iter().filter(|l| l.contains("ExportError")).count();
    assert_eq!(errors, 0, "{output:#?}");
}
// ANCHOR_END: down

// ANCHOR: hung
#[tokio::test]
async fn a_collector_that_never_answers_neither_slows_requests_nor_holds_up_the_exit() {
    let Some(db) = postgres::database() else {
        return;
    };
    // Accepts connections and reads nothing, answers nothing: a collector that hangs.
    let hung = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let endpoint = format!("http://{}", hung.local_addr().expect("address"));
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = hung.accept().await {
            open.push(stream);
        }
    });
    let mut server = Binary::start(
        BIN,
        &[
            ("DATABASE_URL", &db.url),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_TRACES_SAMPLER", "always_on"),
            // SIGKILL would come 3 s after SIGTERM: the flush gets what the drain leaves.
            ("GRACE_PERIOD", "3s"),
            ("SHUTDOWN_TIMEOUT", "1s"),
        ],
    )
    .await;
    ready(&server).await;
    let requests = 50;

    let ok = answered(&server, requests).await;
    server.signal("TERM");
    let status = server.wait_exit(PATIENCE).await;
    let output = server.output();
    held.abort();

    assert_eq!(ok, requests, "every request answered");
    assert!(status.is_some_and(|s| s.success()), "{output:?}");
    let flushed = flush_line(&output);
    // Given up within what was left of the 3 s, not waited for.
    let took: u64 = flushed
        .split("took_ms=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no took_ms: {flushed}"));
    assert!(took < 3_000, "{flushed}");
    assert!(flushed.contains("exported=0"), "{flushed}");
}
// ANCHOR_END: hung

#[tokio::test]
async fn without_an_endpoint_nothing_is_exported_and_the_service_is_step_09s() {
    let Some(db) = postgres::database() else {
        return;
    };
    let mut server = Binary::start(BIN, &[("DATABASE_URL", &db.url)]).await;
    ready(&server).await;

    let reply = get(server.addr, "/api/items").await;
    server.signal("TERM");
    let status = server.wait_exit(PATIENCE).await;
    let output = server.output();

    assert_eq!(reply.status, 200);
    assert!(status.is_some_and(|s| s.success()), "{output:?}");
    assert!(
        output.iter().any(|l| l.contains("traced=false")),
        "{output:?}"
    );
    assert!(
        !output.iter().any(|l| l.contains("spans flushed")),
        "{output:?}"
    );
}

#[tokio::test]
async fn bad_otel_settings_are_one_line_and_exit_2() {
    let db = ("DATABASE_URL", "postgres://user@localhost/items");
    for (name, value) in [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4317"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ("OTEL_TRACES_SAMPLER", "sometimes"),
        ("OTEL_TRACES_SAMPLER_ARG", "2"),
        ("OTEL_SDK_DISABLED", "maybe"),
    ] {
        let line = testkit::assert_config_refused(BIN, &[db, (name, value)]).await;
        assert!(
            line.starts_with(&format!("step-10: {name} must be")),
            "{line}"
        );
    }
}
