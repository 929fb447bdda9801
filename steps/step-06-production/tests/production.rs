//! Step 06's behaviour under the conditions production brings: overload, shutdown, panics,
//! and logs read by Cloud Logging rather than a person.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use step_06::store::MemoryStore;
use step_06::{Config, Ops};
use testkit::{Binary, Method, PATIENCE, get, request, spawn_in_process};

const BIN: &str = env!("CARGO_BIN_EXE_step-06");

fn config(env: &[(&str, &str)]) -> Config {
    Config::from_lookup(testkit::env_from(env)).expect("valid test configuration")
}

/// Serves the app in-process (no signal, no start-up work) and returns its address.
async fn start(config: Config, ops: Ops) -> SocketAddr {
    let store = Arc::new(MemoryStore::new(config.base.max_items));
    let app = step_06::app(&config, store, &ops);
    spawn_in_process(move |listener| async move { axum::serve(listener, app).await }).await
}

/// Polls `condition` until it holds (testkit's `eventually`, for a plain condition).
async fn eventually(what: &str, condition: impl Fn() -> bool) {
    testkit::eventually(what, async || condition(), |done| *done).await;
}

// ---------------------------------------------------------------------------------------------
// Load shedding

#[tokio::test]
async fn at_twice_the_limit_the_excess_is_shed_fast_and_probes_keep_answering() {
    let limit = 4;
    let ops = Ops::default();
    let addr = start(
        config(&[
            ("MAX_CONCURRENCY", "4"),
            ("QUEUE_TIMEOUT", "50ms"),
            ("ENABLE_DEBUG_ROUTES", "1"),
        ]),
        ops.clone(),
    )
    .await;

    // 2 × limit slow requests at once; each would hold its slot for 30 s unless released.
    let slow: Vec<_> = (0..2 * limit)
        .map(|_| {
            tokio::spawn(async move {
                let started = Instant::now();
                let reply = get(addr, "/debug/slow?ms=30000").await;
                (reply, started.elapsed())
            })
        })
        .collect();
    eventually("the limit's worth of handlers running", || {
        ops.debug.busy.load(Ordering::SeqCst) == limit
    })
    .await;
    // While saturated, the probes still answer.
    assert_eq!(get(addr, "/healthz").await.status, 200);
    assert_eq!(
        get(addr, "/readyz").await.status,
        503,
        "no start-up work ran in this test: starting"
    );
    assert_eq!(get(addr, "/health").await.status, 200);
    // The excess is answered while the first `limit` still hold their slots (for 30 s).
    eventually("the excess answered", || {
        slow.iter().filter(|t| t.is_finished()).count() == limit
    })
    .await;
    let mut shed = 0;
    ops.debug.release.cancel();
    for task in slow {
        let (reply, elapsed) = task.await.expect("join");
        if reply.status == 503 {
            shed += 1;
            assert_eq!(reply.header("retry-after"), Some("1"));
            assert_eq!(
                reply.json(),
                serde_json::json!({"error": "server overloaded, retry later"})
            );
            assert!(
                elapsed < Duration::from_secs(5),
                "a shed request took {elapsed:?}"
            );
        } else {
            assert_eq!(reply.status, 200, "{reply:?}");
        }
    }

    assert_eq!(shed, limit, "exactly the excess is shed");
    assert_eq!(
        ops.debug.peak.load(Ordering::SeqCst),
        limit,
        "in flight never exceeded the limit"
    );
}

#[tokio::test]
async fn a_shed_reply_is_a_json_503_with_retry_after() {
    let ops = Ops::default();
    let addr = start(
        config(&[
            ("MAX_CONCURRENCY", "1"),
            ("QUEUE_TIMEOUT", "0"),
            ("ENABLE_DEBUG_ROUTES", "1"),
        ]),
        ops.clone(),
    )
    .await;
    let busy = tokio::spawn(async move { get(addr, "/debug/slow?ms=30000").await });
    eventually("the only slot is taken", || {
        ops.debug.busy.load(Ordering::SeqCst) == 1
    })
    .await;

    let reply = request(
        addr,
        Method::GET,
        "/api/items",
        &[("x-request-id", "shed-example-1")],
        "",
    )
    .await
    .expect("GET");

    ops.debug.release.cancel();
    assert_eq!(busy.await.expect("join").status, 200);
    testkit::assert_transcript!(
        "step06_shed",
        reply,
        "curl -i localhost:8080/api/items -H 'x-request-id: shed-example-1'"
    );
}

// ---------------------------------------------------------------------------------------------
// Panics

#[tokio::test]
async fn a_panicking_route_gives_a_json_500_with_the_request_id_and_the_server_carries_on() {
    let addr = start(config(&[("ENABLE_DEBUG_ROUTES", "1")]), Ops::default()).await;

    let reply = request(
        addr,
        Method::GET,
        "/debug/panic",
        &[("x-request-id", "panic-example-1")],
        "",
    )
    .await
    .expect("GET");
    let next = get(addr, "/api/items").await;

    assert_eq!(reply.status, 500);
    assert!(
        !reply.body.contains("hunter2"),
        "internal details leaked: {}",
        reply.body
    );
    testkit::assert_transcript!(
        "step06_panic",
        reply,
        "curl -i localhost:8080/debug/panic -H 'x-request-id: panic-example-1'"
    );
    assert_eq!(next.status, 200);
    assert_eq!(next.body, "[]");
}

#[tokio::test]
async fn a_generated_request_id_is_returned_and_named_in_the_500() {
    let addr = start(config(&[("ENABLE_DEBUG_ROUTES", "1")]), Ops::default()).await;

    let reply = get(addr, "/debug/panic").await;

    let id = reply
        .header("x-request-id")
        .expect("an id is always returned")
        .to_owned();
    assert_eq!(id.len(), 36, "a UUID: {id}");
    assert_eq!(reply.json()["request_id"], id.as_str());
}

#[tokio::test]
async fn debug_slow_can_compute_as_well_as_wait_within_its_limits() {
    let addr = start(config(&[("ENABLE_DEBUG_ROUTES", "1")]), Ops::default()).await;

    let started = std::time::Instant::now();
    let computed = get(addr, "/debug/slow?ms=0&cpu_ms=30").await;
    let took = started.elapsed();
    let too_much = get(addr, "/debug/slow?ms=0&cpu_ms=101").await;

    assert_eq!(computed.status, 200);
    // A lower bound only: it can never be faster, whatever the machine.
    assert!(took >= std::time::Duration::from_millis(30), "{took:?}");
    assert_eq!(too_much.status, 400);
    assert_eq!(too_much.body, "cpu_ms must be at most 100\n");
}

#[tokio::test]
async fn debug_routes_are_absent_unless_enabled() {
    let addr = start(config(&[]), Ops::default()).await;

    assert_eq!(get(addr, "/debug/panic").await.status, 404);
    assert_eq!(get(addr, "/debug/slow?ms=1").await.status, 404);
}

// ---------------------------------------------------------------------------------------------
// Probes

#[tokio::test]
async fn readyz_says_starting_until_ready_and_draining_after() {
    let ops = Ops::default();
    let addr = start(config(&[]), ops.clone()).await;

    let starting = get(addr, "/readyz").await;
    ops.readiness.set_ready();
    let ready = get(addr, "/readyz").await;
    ops.readiness.set_draining();
    let draining = get(addr, "/readyz").await;

    assert_eq!(
        (starting.status.as_u16(), starting.json()),
        (503, serde_json::json!({"status": "starting"}))
    );
    assert_eq!(
        (ready.status.as_u16(), ready.json()),
        (200, serde_json::json!({"status": "ready"}))
    );
    assert_eq!(
        (draining.status.as_u16(), draining.json()),
        (503, serde_json::json!({"status": "draining"}))
    );
    assert_eq!(
        get(addr, "/healthz").await.status,
        200,
        "liveness does not depend on readiness"
    );
}

#[tokio::test]
async fn the_binary_is_live_during_start_up_work_and_ready_after_it() {
    let server = Binary::start(BIN, &[("STARTUP_DELAY", "3s")]).await;

    let during = get(server.addr, "/readyz").await;
    let live = get(server.addr, "/healthz").await;
    let deadline = Instant::now() + PATIENCE;
    while get(server.addr, "/readyz").await.status != 200 {
        assert!(Instant::now() < deadline, "never became ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    assert_eq!(during.status, 503);
    assert_eq!(live.status, 200);
}

#[tokio::test]
async fn on_sigterm_readyz_flips_at_once_while_in_flight_requests_complete() {
    let mut server =
        Binary::start(BIN, &[("ENABLE_DEBUG_ROUTES", "1"), ("DRAIN_DELAY", "1s")]).await;
    let addr = server.addr;
    let slow = tokio::spawn(async move { get(addr, "/debug/slow?ms=3000").await });
    server
        .wait_for_line("slow request started")
        .await
        .expect("the slow request is in flight");
    assert_eq!(get(addr, "/readyz").await.status, 200);

    server.signal("TERM");
    let mut flipped = None;
    let deadline = Instant::now() + PATIENCE;
    while flipped.is_none() && Instant::now() < deadline {
        let reply = get(addr, "/readyz").await;
        if reply.status == 503 {
            flipped = Some(reply);
        }
    }
    let still_running = !slow.is_finished();
    let live = get(addr, "/healthz").await;

    let flipped = flipped.expect("/readyz never answered 503 after SIGTERM");
    assert_eq!(flipped.json(), serde_json::json!({"status": "draining"}));
    assert!(
        still_running,
        "readiness flipped only after the in-flight request ended"
    );
    assert_eq!(live.status, 200, "still live while draining");
    let finished = slow.await.expect("join");
    assert_eq!(
        (finished.status.as_u16(), finished.body.as_str()),
        (200, "done\n")
    );
    let status = server
        .wait_exit(PATIENCE)
        .await
        .expect("exits after draining");
    assert!(status.success(), "{status:?}: {:?}", server.output());
}

// ---------------------------------------------------------------------------------------------
// Configuration and start-up

#[tokio::test]
async fn a_bad_max_concurrency_is_one_line_and_exit_code_2() {
    let line = testkit::assert_config_refused(BIN, &[("MAX_CONCURRENCY", "0")]).await;

    assert_eq!(
        line,
        "step-06: MAX_CONCURRENCY must be a whole number from 1 to 10000, got \"0\""
    );
}

#[tokio::test]
async fn a_drain_longer_than_the_grace_period_is_refused_at_start() {
    let line = testkit::assert_config_refused(BIN, &[("DRAIN_DELAY", "20s")]).await;

    assert!(
        line.starts_with("step-06: DRAIN_DELAY (20s) + SHUTDOWN_TIMEOUT (8s) must be shorter than GRACE_PERIOD (10s)"),
        "{line}"
    );
}

#[tokio::test]
async fn the_runtime_size_is_logged_at_start_up() {
    let server = Binary::start(BIN, &[("LOG_FORMAT", "json"), ("WORKER_THREADS", "3")]).await;

    let line = server
        .output()
        .into_iter()
        .find(|l| l.contains("runtime sized"))
        .expect("logged");
    let line: serde_json::Value = serde_json::from_str(&line).expect("JSON");

    assert_eq!(line["worker_threads"], 3);
    assert_eq!(line["source"], "WORKER_THREADS");
    assert!(
        line["available_parallelism"]
            .as_u64()
            .is_some_and(|n| n >= 1),
        "{line}"
    );
}

// ---------------------------------------------------------------------------------------------
// The item API is step 04's, unchanged

#[tokio::test]
async fn the_item_api_keeps_step_04s_contract() {
    let addr = start(config(&[]), Ops::default()).await;
    let json = ("content-type", "application/json");

    let created = request(
        addr,
        Method::POST,
        "/api/items",
        &[json],
        r#"{"name":"Test Item","description":"A test"}"#,
    )
    .await
    .expect("POST");
    let list = get(addr, "/api/items").await;
    let one = get(addr, "/api/items/item-1").await;
    let missing = get(addr, "/api/items/item-2").await;
    let bad = request(addr, Method::POST, "/api/items", &[json], "{")
        .await
        .expect("POST");
    let health = get(addr, "/health").await;
    let big = "a".repeat(200 * 1024);
    let big_headers = request(addr, Method::GET, "/health", &[("x-big", &big)], "")
        .await
        .expect("GET");

    assert_eq!(created.status, 201);
    assert_eq!(created.header("location"), Some("/api/items/item-1"));
    assert_eq!(created.json()["id"], "item-1");
    assert_eq!(list.json().as_array().map(Vec::len), Some(1));
    assert_eq!(one.json()["name"], "Test Item");
    assert_eq!(
        (missing.status.as_u16(), missing.json()),
        (404, serde_json::json!({"error": "item not found"}))
    );
    assert_eq!(
        (bad.status.as_u16(), bad.json()),
        (400, serde_json::json!({"error": "invalid request body"}))
    );
    assert_eq!(
        (health.status.as_u16(), health.body.as_str()),
        (200, r#"{"status":"ok"}"#)
    );
    assert_eq!(big_headers.status, 431, "step 04's header limit");
    assert_eq!(big_headers.header("content-type"), Some("application/json"));
}
