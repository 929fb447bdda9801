//! The spans, read from the SDK's in-memory exporter: one trace from the caller through the
//! server, the database and each upstream attempt to the upstream; and the sampler's rules.

mod common;

use common::{CALLER, TRACE, Traces, attribute, named, span_id, trace_id, traceparent};
use opentelemetry::trace::{SpanKind, Status};
use step_08::pb;
use step_08::pb::item_service_client::ItemServiceClient;
use testkit::upstream::{Answer, Scripted};
use testkit::{Method, postgres, request};

/// The upstream fails once with 503, then answers: a call in two attempts.
async fn flaky_once() -> Scripted {
    Scripted::start(|hit| match hit.path.as_str() {
        _ if hit.budget_ms.is_some() && FIRST.swap(false, std::sync::atomic::Ordering::SeqCst) => {
            Answer::Status(503)
        }
        _ => Answer::Stock(7),
    })
    .await
}

static FIRST: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// The `traceparent` the upstream received, as (trace id, parent span id, flags).
fn received(upstream: &Scripted) -> Vec<(String, String, String)> {
    let hits = upstream.hits();
    hits.iter()
        .map(|hit| {
            let value = hit.headers["traceparent"]
                .to_str()
                .expect("text")
                .to_owned();
            let parts: Vec<&str> = value.split('-').collect();
            (parts[1].into(), parts[2].into(), parts[3].into())
        })
        .collect()
}

// ANCHOR: rest
#[tokio::test]
async fn a_rest_request_is_one_trace_through_the_database_and_each_upstream_attempt() {
    let Some(db) = postgres::database() else {
        return;
    };
    let traces = Traces::install(&[("OTEL_TRACES_SAMPLER", "parentbased_always_on")]);
    let upstream = flaky_once().await;
    let addr = common::start_on_postgres(&db.url, &[("UPSTREAM_URL", &upstream.url)]).await;
    let json = [("content-type", "application/json")];
    let created = request(
        addr,
        Method::POST,
        "/api/items",
        &json,
        r#"{"name":"traced"}"#,
    )
    .await
    .expect("POST");
    assert_eq!(created.status, 201);

    let reply = common::get_in_trace(addr, "/api/items/item-1", "01").await;
    let spans = traces.trace(trace_id(TRACE), 4).await;

    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["stock"], 7, "the second attempt answered");
    let server = named(&spans, "GET /api/items/{id}");
    assert_eq!(server.span_kind, SpanKind::Server);
    assert_eq!(
        server.parent_span_id,
        span_id(CALLER),
        "the caller's span is the parent"
    );
    assert!(server.parent_span_is_remote);
    assert_eq!(
        attribute(server, "http.route").as_deref(),
        Some("/api/items/{id}")
    );
    assert_eq!(
        attribute(server, "http.response.status_code").as_deref(),
        Some("200")
    );
    let ours = server.span_context.span_id();
    let db_span = named(&spans, "SELECT items");
    assert_eq!(db_span.parent_span_id, ours);
    assert_eq!(db_span.span_kind, SpanKind::Client);
    assert_eq!(
        attribute(db_span, "db.system.name").as_deref(),
        Some("postgresql")
    );
    let mut attempts: Vec<_> = spans.iter().filter(|s| s.name == "GET").collect();
    attempts.sort_by_key(|s| s.start_time);
    assert_eq!(attempts.len(), 2, "one span per attempt: {spans:#?}");
    assert!(attempts.iter().all(|a| a.parent_span_id == ours));
    assert_eq!(
        attribute(attempts[0], "http.response.status_code").as_deref(),
        Some("503")
    );
    assert!(matches!(attempts[0].status, Status::Error { .. }));
    assert_eq!(
        attribute(attempts[1], "http.request.resend_count").as_deref(),
        Some("1")
    );
    assert_eq!(
        attribute(attempts[1], "breaker.state").as_deref(),
        Some("closed")
    );
    let sent: Vec<_> = received(&upstream);
    let expected: Vec<_> = attempts
        .iter()
        .map(|a| {
            (
                TRACE.to_owned(),
                a.span_context.span_id().to_string(),
                "01".to_owned(),
            )
        })
        .collect();
    assert_eq!(
        sent, expected,
        "each attempt sent its own span as the upstream's parent"
    );
    common::waterfall::check_or_write(&spans);
}
// ANCHOR_END: rest

// ANCHOR: logs
#[tokio::test]
async fn every_log_line_of_a_request_carries_its_trace_and_server_span() {
    let traces = Traces::install(&[("OTEL_TRACES_SAMPLER", "always_on")]);
    let addr = common::start_on_memory(&[]).await;

    let reply = request(addr, Method::GET, "/api/items/item-1", &[], "")
        .await
        .expect("GET");
    let spans = traces.spans();

    assert_eq!(reply.status, 200);
    let server = named(&spans, "GET /api/items/{id}");
    let lines = traces.log_lines();
    let access = lines
        .iter()
        .find(|l| l["message"] == "request finished")
        .expect("an access-log line");
    assert_eq!(
        access["trace_id"],
        server.span_context.trace_id().to_string()
    );
    assert_eq!(access["span_id"], server.span_context.span_id().to_string());
    assert_eq!(access["trace_sampled"], true);
}
// ANCHOR_END: logs

// ANCHOR: grpc
#[tokio::test]
async fn a_grpc_call_is_traced_the_same_way() {
    let traces = Traces::install(&[("OTEL_TRACES_SAMPLER", "parentbased_always_on")]);
    let upstream = Scripted::start(|_| Answer::Stock(3)).await;
    let addr = common::start_on_memory(&[("UPSTREAM_URL", &upstream.url)]).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("a URI")
        .connect()
        .await
        .expect("connects");
    let mut client = ItemServiceClient::new(channel);
    let mut call = tonic::Request::new(pb::GetItemRequest {
        id: "item-1".into(),
    });
    let parent = traceparent("01").parse().expect("metadata");
    call.metadata_mut().insert("traceparent", parent);

    let item = client.get_item(call).await.expect("an item").into_inner();
    let spans = traces.trace(trace_id(TRACE), 3).await;

    assert_eq!(item.name, "Test Item");
    let server = named(&spans, "items.v1.ItemService/GetItem");
    assert_eq!(server.span_kind, SpanKind::Server);
    assert_eq!(server.parent_span_id, span_id(CALLER));
    assert_eq!(attribute(server, "rpc.system").as_deref(), Some("grpc"));
    assert_eq!(attribute(server, "rpc.method").as_deref(), Some("GetItem"));
    assert_eq!(
        attribute(server, "rpc.grpc.status_code").as_deref(),
        Some("0")
    );
    let ours = server.span_context.span_id();
    assert_eq!(named(&spans, "SELECT items").parent_span_id, ours);
    let attempt = named(&spans, "GET");
    assert_eq!(attempt.parent_span_id, ours);
    let sent = received(&upstream);
    assert_eq!(
        sent,
        [(
            TRACE.to_owned(),
            attempt.span_context.span_id().to_string(),
            "01".to_owned()
        )]
    );
}
// ANCHOR_END: grpc

// ANCHOR: sampler
#[tokio::test]
async fn parent_based_sampling_follows_the_callers_flag_whatever_the_ratio() {
    let traces = Traces::install(&[
        ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
        ("OTEL_TRACES_SAMPLER_ARG", "0"),
    ]);
    let upstream = Scripted::start(|_| Answer::Stock(3)).await;
    let addr = common::start_on_memory(&[("UPSTREAM_URL", &upstream.url)]).await;
    let get = async |flags: &str| {
        let reply = common::get_in_trace(addr, "/api/items/item-1", flags).await;
        assert_eq!(reply.status, 200);
    };

    get("00").await;
    let unsampled = traces.spans().len();
    get("01").await;
    let sampled = traces.trace(trace_id(TRACE), 3).await;

    assert_eq!(unsampled, 0, "the caller did not sample: neither do we");
    assert_eq!(
        sampled.len(),
        3,
        "the caller sampled: so do we, at a ratio of 0"
    );
    let flags: Vec<String> = received(&upstream).into_iter().map(|(_, _, f)| f).collect();
    assert_eq!(
        flags,
        ["00", "01"],
        "the decision travels on to the upstream"
    );
}

#[tokio::test]
async fn new_traces_are_sampled_at_the_ratio() {
    let traces = Traces::install(&[
        ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
        ("OTEL_TRACES_SAMPLER_ARG", "0.5"),
    ]);
    let addr = common::start_on_memory(&[]).await;
    let requests = 200;

    for _ in 0..requests {
        let reply = request(addr, Method::GET, "/api/items", &[], "").await;
        assert_eq!(reply.expect("GET").status, 200);
    }
    let servers = traces
        .spans()
        .iter()
        .filter(|s| s.name == "GET /api/items")
        .count();

    // Binomial(200, 0.5): 100 ± 7; outside 60..=140 has odds of about one in 10^8.
    assert!(
        (60..=140).contains(&servers),
        "{servers} of {requests} sampled"
    );
}

#[tokio::test]
async fn a_ratio_sampler_that_is_not_parent_based_ignores_the_callers_flag() {
    // Cloud Run's front end sends `traceparent` with the flag off for most requests: with a
    // parent-based sampler, nothing would ever be recorded. `traceidratio` decides by the
    // trace id alone, the same way in every service, whatever the flag says.
    let traces = Traces::install(&[
        ("OTEL_TRACES_SAMPLER", "traceidratio"),
        ("OTEL_TRACES_SAMPLER_ARG", "1"),
    ]);
    let addr = common::start_on_memory(&[]).await;

    let reply = common::get_in_trace(addr, "/api/items", "00").await;
    let spans = traces.trace(trace_id(TRACE), 2).await;

    assert_eq!(reply.status, 200);
    let server = named(&spans, "GET /api/items");
    assert_eq!(
        server.parent_span_id,
        span_id(CALLER),
        "still the caller's trace"
    );
}
// ANCHOR_END: sampler

#[tokio::test]
async fn probes_are_not_traced_and_an_unknown_path_has_no_route_in_its_name() {
    let traces = Traces::install(&[("OTEL_TRACES_SAMPLER", "always_on")]);
    let addr = common::start_on_memory(&[]).await;

    for path in ["/healthz", "/readyz", "/no/such/thing/42"] {
        testkit::get(addr, path).await;
    }
    let names: Vec<String> = traces.spans().iter().map(|s| s.name.to_string()).collect();

    assert_eq!(names, ["GET"], "only the 404, named by its method alone");
}
