//! Exercises for step 07 (book: "Step 07", section "Exercises").
//!
//! Each test is `#[ignore]`d so the step's normal `cargo test` stays green; it fails until you
//! solve the exercise. Run one with:
//!
//! ```text
//! cargo test -p step-07 --test exercises -- --ignored <name>
//! ```
//!
//! The reference solutions are patches in `steps/step-07-postgres/exercises/`. Like every
//! database test here, these start their own PostgreSQL (see testkit's `postgres` module).

use std::net::SocketAddr;
use std::sync::Arc;

use step_06::Ops;
use step_07::db;
use step_07::store::PgStore;
use testkit::{Method, Reply, get, postgres, request};

/// One instance of the service in this process, on a fresh, migrated database.
async fn start(url: &str) -> SocketAddr {
    let config = step_07::Config::from_lookup(testkit::env_from(&[("DATABASE_URL", url)]))
        .expect("valid configuration");
    db::migrate(&config.db).await.expect("migrations apply");
    let store = Arc::new(PgStore::new(
        config.db.pool(),
        config.db.idempotency_key_ttl,
    ));
    let app = step_07::app(&config, store, &Ops::default());
    let base = config.base.base.clone();
    testkit::spawn_in_process(move |listener| async move {
        step_04::serve(listener, app, &base, std::future::pending()).await
    })
    .await
}

async fn create(addr: SocketAddr, name: &str, key: Option<&str>) -> Reply {
    let mut headers = vec![("content-type", "application/json")];
    if let Some(key) = key {
        headers.push(("idempotency-key", key));
    }
    request(
        addr,
        Method::POST,
        "/api/items",
        &headers,
        format!(r#"{{"name":"{name}"}}"#),
    )
    .await
    .expect("POST")
}

async fn delete(addr: SocketAddr, path: &str) -> Reply {
    request(addr, Method::DELETE, path, &[], "")
        .await
        .expect("DELETE")
}

/// Exercise 1: `GET /api/items/count` answers `{"count": N}`, counted by the database (not by
/// fetching every item), as JSON.
#[tokio::test]
#[ignore = "exercise: count the items in the database (see the book, step 07)"]
async fn the_count_comes_from_the_database() {
    let Some(db) = postgres::database() else {
        return;
    };
    let addr = start(&db.url).await;

    let empty = get(addr, "/api/items/count").await;
    for name in ["a", "b", "c"] {
        assert_eq!(create(addr, name, None).await.status, 201);
    }
    let three = get(addr, "/api/items/count").await;

    assert_eq!(empty.status, 200, "GET /api/items/count: {}", empty.body);
    assert_eq!(empty.header("content-type"), Some("application/json"));
    assert_eq!(empty.json(), serde_json::json!({ "count": 0 }));
    assert_eq!(three.json(), serde_json::json!({ "count": 3 }));
    assert_eq!(
        get(addr, "/api/items/item-1").await.status,
        200,
        "ids still work"
    );
}

/// Exercise 2: `DELETE /api/items/{id}` removes an item for good (204, then 404), and with it
/// any `Idempotency-Key` that pointed at it: replaying that key creates a new item.
#[tokio::test]
#[ignore = "exercise: delete an item and the keys that point at it (see the book, step 07)"]
async fn deleting_an_item_forgets_its_idempotency_key() {
    let Some(db) = postgres::database() else {
        return;
    };
    let addr = start(&db.url).await;
    let first = create(addr, "Test Item", Some("order-1")).await;
    let location = first.header("location").expect("location").to_owned();

    let deleted = delete(addr, &location).await;
    let again = delete(addr, &location).await;
    let gone = get(addr, &location).await;
    let replay = create(addr, "Test Item", Some("order-1")).await;

    assert_eq!(deleted.status, 204, "DELETE {location}: {}", deleted.body);
    assert_eq!(deleted.body, "");
    assert_eq!(again.status, 404, "a second DELETE finds nothing");
    assert_eq!(
        again.json(),
        serde_json::json!({ "error": "item not found" })
    );
    assert_eq!(gone.status, 404);
    assert_eq!(replay.status, 201, "{}", replay.body);
    assert_eq!(
        replay.header("idempotent-replayed"),
        None,
        "the key was forgotten"
    );
    assert_ne!(replay.json()["id"], first.json()["id"], "a new item");
    let missing = delete(addr, "/api/items/item-999").await;
    assert_eq!(missing.status, 404);
}
