//! The real binary on a real PostgreSQL (started by testkit): REST and gRPC on one port over
//! one store, health on SIGTERM, and a drain that open streams cannot hold up.

mod common;

use std::time::{Duration, Instant};

use step_08::pb;
use testkit::postgres;
use testkit::{Binary, Method, PATIENCE, eventually, get, request};
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use common::{channel, client};

const BIN: &str = env!("CARGO_BIN_EXE_step-08");

async fn ready(server: &Binary) {
    let addr = server.addr;
    eventually(
        "/readyz says 200",
        async || get(addr, "/readyz").await.status,
        |s| *s == 200,
    )
    .await;
}

async fn check(health: &mut HealthClient<tonic::transport::Channel>) -> ServingStatus {
    let request = HealthCheckRequest {
        service: String::new(),
    };
    let reply = health.check(request).await.expect("answered").into_inner();
    ServingStatus::try_from(reply.status).expect("a known status")
}

// ANCHOR: same_items
#[tokio::test]
async fn rest_and_grpc_see_the_same_items_in_postgres() {
    let Some(db) = postgres::database() else {
        return;
    };
    let server = Binary::start(BIN, &[("DATABASE_URL", &db.url)]).await;
    ready(&server).await;
    let mut items = client(server.addr).await;

    let over_grpc = items
        .create_item(pb::CreateItemRequest {
            name: "over gRPC".into(),
            description: "d".into(),
        })
        .await
        .expect("created")
        .into_inner();
    let body = r#"{"name":"over REST"}"#;
    let json = [("content-type", "application/json")];
    let over_rest = request(server.addr, Method::POST, "/api/items", &json, body)
        .await
        .expect("POST")
        .json();
    let rest_view = get(server.addr, &format!("/api/items/{}", over_grpc.id))
        .await
        .json();
    let id = over_rest["id"].as_str().expect("an id").to_owned();
    let grpc_view = items
        .get_item(pb::GetItemRequest { id: id.clone() })
        .await
        .expect("found")
        .into_inner();
    let mut stream = items
        .list_items(pb::ListItemsRequest::default())
        .await
        .expect("a stream")
        .into_inner();
    let mut listed = Vec::new();
    while let Some(item) = stream.message().await.expect("no error") {
        listed.push(item.id);
    }

    assert_eq!(rest_view["name"], "over gRPC");
    assert_eq!(rest_view["description"], "d");
    assert_eq!(grpc_view.name, "over REST");
    assert_eq!(listed, [over_grpc.id, id], "both, in creation order");
}
// ANCHOR_END: same_items

// ANCHOR: sigterm
#[tokio::test]
async fn health_says_not_serving_from_sigterm_on() {
    let Some(db) = postgres::database() else {
        return;
    };
    // Two seconds of draining while still accepting, as for a Kubernetes load balancer.
    let settings = [
        ("DATABASE_URL", db.url.as_str()),
        ("DRAIN_DELAY", "2s"),
        ("SHUTDOWN_TIMEOUT", "3s"),
    ];
    let mut server = Binary::start(BIN, &settings).await;
    let mut health = HealthClient::new(channel(server.addr).await);
    let before = check(&mut health).await;
    ready(&server).await;
    let serving = eventually(
        "SERVING",
        async || check(&mut health).await,
        |s| *s == ServingStatus::Serving,
    )
    .await;

    server.signal("TERM");
    let after = eventually(
        "NOT_SERVING",
        async || check(&mut health).await,
        |s| *s == ServingStatus::NotServing,
    )
    .await;
    let exit = server.wait_exit(PATIENCE).await.expect("exits");

    assert_eq!(
        before,
        ServingStatus::NotServing,
        "not before start-up is done"
    );
    assert_eq!(serving, ServingStatus::Serving);
    assert_eq!(after, ServingStatus::NotServing);
    assert!(exit.success(), "{exit:?}");
}
// ANCHOR_END: sigterm

// ANCHOR: open_streams
#[tokio::test]
async fn open_streams_end_when_draining_starts_and_the_process_exits_in_time() {
    let Some(db) = postgres::database() else {
        return;
    };
    let settings = [
        ("DATABASE_URL", db.url.as_str()),
        ("SHUTDOWN_TIMEOUT", "5s"),
    ];
    let mut server = Binary::start(BIN, &settings).await;
    ready(&server).await;
    // A health `Watch`: a stream that never ends by itself.
    let mut health = HealthClient::new(channel(server.addr).await);
    eventually(
        "SERVING",
        async || check(&mut health).await,
        |s| *s == ServingStatus::Serving,
    )
    .await;
    let request = HealthCheckRequest {
        service: String::new(),
    };
    let mut watch = health.watch(request).await.expect("a stream").into_inner();
    let first = watch.message().await.expect("no error").expect("a status");
    // A `ListItems` stream its client has stopped reading: more items than the connection's
    // buffers hold.
    let mut items = client(server.addr).await;
    let description = "d".repeat(step_04::MAX_DESCRIPTION_CHARS);
    for n in 0..400 {
        let new = pb::CreateItemRequest {
            name: format!("item {n}"),
            description: description.clone(),
        };
        items.create_item(new).await.expect("created");
    }
    let mut list = items
        .list_items(pb::ListItemsRequest::default())
        .await
        .expect("a stream")
        .into_inner();
    list.message().await.expect("no error").expect("an item");

    let started = Instant::now();
    server.signal("TERM");
    let watch_end = loop {
        match watch.message().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the watch ended without a status"),
            Err(status) => break status,
        }
    };
    let mut read = 1;
    let list_end = loop {
        match list.message().await {
            Ok(Some(_)) => read += 1,
            Ok(None) => panic!("all {read} items, as if no drain had begun"),
            Err(status) => break status,
        }
    };
    let exit = server.wait_exit(PATIENCE).await.expect("exits");
    let took = started.elapsed();

    assert_eq!(first.status, ServingStatus::Serving as i32);
    assert_eq!(
        (watch_end.code(), watch_end.message()),
        (Code::Unavailable, "server is shutting down")
    );
    assert_eq!(list_end.code(), Code::Unavailable, "{list_end:?}");
    assert!(read < 400, "{read}");
    assert!(exit.success(), "drained, nothing cut off: {exit:?}");
    assert!(
        took < Duration::from_secs(5),
        "within SHUTDOWN_TIMEOUT: {took:?}"
    );
}
// ANCHOR_END: open_streams

#[tokio::test]
async fn bad_configuration_is_one_line_and_exit_2() {
    let line = testkit::assert_config_refused(BIN, &[("PORT", "grpc")]).await;

    assert!(line.starts_with("step-08: PORT"), "{line}");
}
