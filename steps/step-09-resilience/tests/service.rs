//! This step's service in-process (memory store, REST and gRPC on one port) in front of a
//! scripted upstream: the stock when it answers, the degraded item when it cannot, and the
//! incoming request's deadline respected either way.

mod common;

use std::sync::Arc;
use std::time::Duration;

use step_06::Ops;
use step_07::store::PgStore;
use step_08::Grpc;
use step_08::pb;
use step_08::pb::item_service_client::ItemServiceClient;
use testkit::{assert_transcript, get};
use tokio::time::Instant;
use tonic::transport::Endpoint;

use common::{Answer, Scripted, start};

async fn grpc(addr: std::net::SocketAddr) -> ItemServiceClient<tonic::transport::Channel> {
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .expect("a URI")
        .connect()
        .await
        .expect("connects");
    ItemServiceClient::new(channel)
}

/// The transcript with the parts that change from run to run fixed.
fn steady(reply: &testkit::Reply, command: &str) -> String {
    let at = reply.json()["created_at"]
        .as_str()
        .expect("a time")
        .to_owned();
    let id = reply.header("x-request-id").expect("an id").to_owned();
    reply
        .transcript(command)
        .replace(&at, "2026-01-01T12:00:00.000000Z")
        .replace(&id, "4c0e2c4e-95c5-4d1c-9a8e-3f1f0b6f5e21")
}

// ANCHOR: stock_test
#[tokio::test]
async fn an_item_carries_its_stock_when_the_inventory_answers() {
    let upstream = Scripted::start(|_| Answer::Stock(7)).await;
    let addr = start(&[("UPSTREAM_URL", &upstream.url)]).await;

    let reply = get(addr, "/api/items/item-1").await;

    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["stock"], 7);
    assert_eq!(reply.header("x-degraded"), None);
    let budget = upstream.hits()[0].budget_ms.expect("a budget");
    assert!(budget <= 1000, "more than UPSTREAM_TIMEOUT: {budget}");
    let command = "curl -i localhost:8080/api/items/item-1";
    assert_transcript!("step09_stock", steady(&reply, command));
}
// ANCHOR_END: stock_test

// ANCHOR: hang_test
#[tokio::test]
async fn a_hanging_inventory_yields_the_degraded_item_within_the_request_deadline() {
    let upstream = Scripted::start(|_| Answer::Hang).await;
    // The request's deadline (1 s) is shorter than the call's own limit (30 s): it decides.
    let settings = [
        ("UPSTREAM_URL", upstream.url.as_str()),
        ("UPSTREAM_TIMEOUT", "30s"),
        ("REQUEST_TIMEOUT", "1s"),
    ];
    let addr = start(&settings).await;
    let started = Instant::now();

    let reply = get(addr, "/api/items/item-1").await;

    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(reply.header("x-degraded"), Some("stock"));
    assert_eq!(reply.json()["name"], "Test Item");
    assert!(reply.json().get("stock").is_none());
    let command = "curl -i localhost:8080/api/items/item-1   # the inventory hangs";
    assert_transcript!("step09_degraded", steady(&reply, command));
}
// ANCHOR_END: hang_test

#[tokio::test]
async fn without_upstream_url_there_is_no_stock_and_no_header() {
    let addr = start(&[]).await;

    let reply = get(addr, "/api/items/item-1").await;

    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-degraded"), None);
    assert!(reply.json().get("stock").is_none());
    assert_eq!(get(addr, "/api/items/item-9").await.status, 404);
}

#[tokio::test]
async fn a_missing_item_is_404_without_asking_the_inventory() {
    let upstream = Scripted::start(|_| Answer::Stock(7)).await;
    let addr = start(&[("UPSTREAM_URL", &upstream.url)]).await;

    assert_eq!(get(addr, "/api/items/item-9").await.status, 404);
    assert_eq!(get(addr, "/api/items/nope").await.status, 404);
    assert_eq!(upstream.count(), 0);
}

// ANCHOR: grpc_test
#[tokio::test]
async fn grpc_get_item_carries_the_stock_or_says_it_is_degraded_within_grpc_timeout() {
    let upstream = Scripted::start(|_| Answer::Stock(7)).await;
    let addr = start(&[("UPSTREAM_URL", &upstream.url)]).await;
    let mut items = grpc(addr).await;
    let ask = || pb::GetItemRequest {
        id: "item-1".into(),
    };

    let found = items.get_item(ask()).await.expect("an item");
    upstream.script(|_| Answer::Hang);
    let mut request = tonic::Request::new(ask());
    request.set_timeout(Duration::from_millis(500));
    let started = Instant::now();
    let degraded = items.get_item(request).await.expect("an item all the same");

    assert_eq!(found.get_ref().stock, Some(7));
    assert!(found.metadata().get("x-degraded").is_none());
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "past grpc-timeout"
    );
    assert_eq!(degraded.get_ref().stock, None);
    assert_eq!(degraded.get_ref().name, "Test Item");
    assert_eq!(degraded.metadata().get("x-degraded").unwrap(), "stock");
    // The client's 500 ms, not REQUEST_TIMEOUT's 5 s, reached the inventory.
    let budget = upstream.hits()[1].budget_ms.expect("a budget");
    assert!(budget < 500, "{budget}");
}
// ANCHOR_END: grpc_test

#[tokio::test]
async fn the_openapi_document_describes_the_stock_and_the_header() {
    // The binary's app on a PostgreSQL store whose pool connects lazily: the document needs
    // no database.
    let unused = [("DATABASE_URL", "postgres://unused@localhost/unused")];
    let config = step_09::config_from_lookup(testkit::env_from(&unused)).expect("valid");
    let db = &config.base.db;
    let store = Arc::new(PgStore::new(db.pool(), db.idempotency_key_ttl));
    let (ops, grpc) = (Ops::default(), Grpc::default());
    let app = step_09::app(&config.base, store, &ops, &grpc, &config.stock());
    let base = config.base.base.base.clone();
    let addr = testkit::spawn_in_process(move |listener| async move {
        step_04::serve(listener, app, &base, std::future::pending()).await
    })
    .await;

    let doc = get(addr, "/openapi.json").await.json();

    let ok = &doc["paths"]["/api/items/{id}"]["get"]["responses"]["200"];
    assert!(ok["headers"]["X-Degraded"].is_object(), "{ok}");
    let stocked = &doc["components"]["schemas"]["StockedItem"];
    assert!(stocked.to_string().contains("\"stock\""), "{stocked}");
    assert!(
        doc["paths"]["/api/items"]["post"].is_object(),
        "step 07's create is still there"
    );
    assert_eq!(doc["info"]["title"], "step-09 items");
}
