//! What the real binary writes with `LOG_FORMAT=json`: the lines Cloud Logging receives.

use std::time::{Duration, Instant};

use serde_json::Value;
use testkit::{Binary, Method, PATIENCE, request};

const BIN: &str = env!("CARGO_BIN_EXE_step-06");
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const CLOUD_TRACE: &str = "105445aa7843bc8bf206b12000100000/255;o=1";

async fn json_server(extra: &[(&str, &str)]) -> Binary {
    let mut env = vec![
        ("LOG_FORMAT", "json"),
        ("GOOGLE_CLOUD_PROJECT", "my-project"),
    ];
    env.extend_from_slice(extra);
    Binary::start(BIN, &env).await
}

/// Every line the binary has printed, parsed; fails the test on a line that is not JSON.
fn json_lines(server: &Binary) -> Vec<Value> {
    server
        .output()
        .iter()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect()
}

/// The lines of one request, waiting (log writing is asynchronous) until its access-log line
/// has arrived.
async fn lines_of_request(server: &Binary, request_id: &str) -> Vec<Value> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let lines: Vec<Value> = json_lines(server)
            .into_iter()
            .filter(|l| l["request_id"] == request_id)
            .collect();
        if lines.iter().any(|l| l["message"] == "request finished") {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "no access-log line for {request_id}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn every_line_is_json_with_severity_message_and_time() {
    let server = json_server(&[]).await;

    let lines = json_lines(&server);

    assert!(lines.len() >= 2, "{lines:?}");
    for line in lines {
        assert!(line["severity"].is_string(), "{line}");
        assert!(line["message"].is_string(), "{line}");
        assert!(
            line["time"].as_str().is_some_and(|t| t.ends_with('Z')),
            "{line}"
        );
    }
}

#[tokio::test]
async fn the_access_log_line_is_a_cloud_logging_request_entry() {
    let server = json_server(&[]).await;
    let headers = [
        ("content-type", "application/json"),
        ("x-request-id", "log-example-1"),
        ("traceparent", TRACEPARENT),
        ("user-agent", "curl/8.5.0"),
        ("x-forwarded-for", "203.0.113.7, 10.0.0.1"),
    ];

    let reply = request(
        server.addr,
        Method::POST,
        "/api/items",
        &headers,
        r#"{"name":"Test Item"}"#,
    )
    .await
    .expect("POST");
    let lines = lines_of_request(&server, "log-example-1").await;

    assert_eq!(reply.status, 201);
    let mut line = lines
        .into_iter()
        .find(|l| l["message"] == "request finished")
        .expect("access log");
    let latency = line["httpRequest"]["latency"]
        .as_str()
        .expect("latency")
        .to_owned();
    assert!(
        latency.ends_with('s') && latency[..latency.len() - 1].parse::<f64>().is_ok(),
        "{latency}"
    );
    // What varies from run to run is replaced; everything else is exactly what Cloud Logging gets.
    line["time"] = "<time>".into();
    line["httpRequest"]["latency"] = "<latency>".into();
    testkit::assert_transcript!(
        "step06_access_log_line",
        serde_json::to_string_pretty(&line).expect("JSON")
    );
}

#[tokio::test]
async fn the_trace_comes_from_either_header_format() {
    let server = json_server(&[]).await;

    for (id, header, value) in [
        ("t-w3c", "traceparent", TRACEPARENT),
        ("t-google", "x-cloud-trace-context", CLOUD_TRACE),
    ] {
        request(
            server.addr,
            Method::GET,
            "/api/items",
            &[("x-request-id", id), (header, value)],
            "",
        )
        .await
        .expect("GET");
    }
    let w3c = lines_of_request(&server, "t-w3c").await;
    let google = lines_of_request(&server, "t-google").await;

    assert_eq!(
        w3c[0]["logging.googleapis.com/trace"],
        "projects/my-project/traces/4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(w3c[0]["logging.googleapis.com/spanId"], "00f067aa0ba902b7");
    assert_eq!(
        google[0]["logging.googleapis.com/trace"],
        "projects/my-project/traces/105445aa7843bc8bf206b12000100000"
    );
    assert_eq!(
        google[0]["logging.googleapis.com/spanId"],
        "00000000000000ff"
    );
    assert_eq!(google[0]["logging.googleapis.com/trace_sampled"], true);
}

#[tokio::test]
async fn the_request_id_is_on_every_line_of_a_request() {
    let server = json_server(&[("ENABLE_DEBUG_ROUTES", "1")]).await;

    let reply = request(
        server.addr,
        Method::GET,
        "/debug/panic",
        &[("traceparent", TRACEPARENT)],
        "",
    )
    .await
    .expect("GET");
    let id = reply.header("x-request-id").expect("an id").to_owned();
    let lines = lines_of_request(&server, &id).await;

    // The handler's own line, the panic (logged by the hook, with the details the client never
    // sees) and the access-log line: all three carry the id and the trace.
    let messages: Vec<&str> = lines.iter().filter_map(|l| l["message"].as_str()).collect();
    assert_eq!(
        messages,
        ["about to panic", "handler panicked", "request finished"]
    );
    assert!(
        lines
            .iter()
            .all(|l| l["logging.googleapis.com/trace"].is_string()),
        "{lines:?}"
    );
    assert_eq!(lines[1]["severity"], "ERROR");
    assert!(
        lines[1]["panic.message"]
            .as_str()
            .is_some_and(|m| m.contains("hunter2"))
    );
    assert_eq!(lines[2]["httpRequest"]["status"], 500);
    assert_eq!(lines[2]["severity"], "WARNING");
    assert!(!reply.body.contains("hunter2"));
}

#[tokio::test]
async fn without_log_format_output_is_readable_text() {
    let server = Binary::start(BIN, &[]).await;

    let output = server.output();

    let line = output
        .iter()
        .find(|l| l.contains("listening on"))
        .expect("listening line");
    assert!(serde_json::from_str::<Value>(line).is_err(), "{line}");
    assert!(line.contains("INFO"), "{line}");
}

#[tokio::test]
async fn on_cloud_run_k_service_alone_selects_json() {
    let server = Binary::start(BIN, &[("K_SERVICE", "items")]).await;

    assert!(!json_lines(&server).is_empty());
}
