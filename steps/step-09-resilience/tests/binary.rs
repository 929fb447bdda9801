//! The real binaries: the inventory stand-in, and the service in front of it on a real
//! PostgreSQL, with the inventory killed and started again as a learner would.

use std::time::Duration;

use testkit::{Binary, Method, eventually, get, postgres, request};

const BIN: &str = env!("CARGO_BIN_EXE_step-09");
const INVENTORY: &str = env!("CARGO_BIN_EXE_inventory");

#[tokio::test]
async fn bad_upstream_settings_are_one_line_and_exit_2() {
    let db = ("DATABASE_URL", "postgres://user@localhost/items");
    for (name, value, says) in [
        (
            "UPSTREAM_URL",
            "https://inventory.run.app",
            "UPSTREAM_URL must be an http:// URL",
        ),
        (
            "UPSTREAM_URL",
            "inventory:8080",
            "UPSTREAM_URL must be an http:// URL",
        ),
        (
            "UPSTREAM_TIMEOUT",
            "2m",
            "UPSTREAM_TIMEOUT must be a duration from 1ms to 1m",
        ),
        (
            "UPSTREAM_MAX_CONCURRENCY",
            "0",
            "UPSTREAM_MAX_CONCURRENCY must be a whole number",
        ),
        (
            "BREAKER_FAILURES",
            "lots",
            "BREAKER_FAILURES must be a whole number from 1 to 1000",
        ),
        (
            "BREAKER_COOLDOWN",
            "0",
            "BREAKER_COOLDOWN must be a duration",
        ),
        ("BREAKER_ENABLED", "off", "BREAKER_ENABLED must be 1 or 0"),
        (
            "RETRY_BUDGET_ENABLED",
            "no",
            "RETRY_BUDGET_ENABLED must be 1 or 0",
        ),
    ] {
        let line = testkit::assert_config_refused(BIN, &[db, (name, value)]).await;
        assert!(line.starts_with(&format!("step-09: {says}")), "{line}");
    }
    let line = testkit::assert_config_refused(INVENTORY, &[("INVENTORY_MODE", "slowly")]).await;
    assert!(
        line.starts_with("inventory: INVENTORY_MODE must be one of ok, fail"),
        "{line}"
    );
}

#[tokio::test]
async fn the_inventory_honours_port_and_can_be_told_to_fail() {
    testkit::assert_honours_port(INVENTORY, "/stock/item-1").await;
    let inventory = Binary::start(INVENTORY, &[]).await;

    let told = request(inventory.addr, Method::PUT, "/mode/fail", &[], "").await;
    let stock = get(inventory.addr, "/stock/item-1").await;

    assert_eq!(told.expect("answered").status, 200);
    assert_eq!(stock.status, 503);
    // What it received, failed or not: what `.ci/bench` reads.
    assert_eq!(get(inventory.addr, "/stats").await.json()["served"], 1);
}

// ANCHOR: learner_test
#[tokio::test]
async fn killing_the_inventory_opens_the_breaker_and_its_return_closes_it() {
    let Some(db) = postgres::database() else {
        return;
    };
    let inventory = Binary::start(INVENTORY, &[]).await;
    let port = inventory.addr.port().to_string();
    let url = format!("http://127.0.0.1:{port}");
    let settings = [
        ("DATABASE_URL", db.url.as_str()),
        ("UPSTREAM_URL", url.as_str()),
        ("BREAKER_FAILURES", "3"),
        ("BREAKER_COOLDOWN", "1s"),
    ];
    let mut server = Binary::start(BIN, &settings).await;
    let addr = server.addr;
    eventually(
        "ready",
        async || get(addr, "/readyz").await.status,
        |s| *s == 200,
    )
    .await;
    let json = [("content-type", "application/json")];
    let created = request(
        addr,
        Method::POST,
        "/api/items",
        &json,
        r#"{"name":"Test Item"}"#,
    );
    let item = created.await.expect("created").json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/api/items/{item}");
    assert!(get(addr, &path).await.json()["stock"].is_u64());

    inventory.signal("KILL");
    for _ in 0..5 {
        let reply = get(addr, &path).await;
        assert_eq!(reply.status, 200);
        let degraded = reply.header("x-degraded");
        assert!(
            degraded.is_some_and(|d| d.starts_with("stock")),
            "{degraded:?}"
        );
    }
    let opened = server.wait_for_line("\"open\"").await;
    let _inventory = Binary::start(INVENTORY, &[("PORT", &port)]).await;

    // After the cooldown, one probe finds it back.
    let back = eventually(
        "the stock comes back",
        async || {
            tokio::time::sleep(Duration::from_millis(200)).await;
            get(addr, &path).await
        },
        |reply| reply.header("x-degraded").is_none(),
    )
    .await;

    assert!(opened.expect("a line").contains("circuit breaker"));
    assert!(back.json()["stock"].is_u64());
    let closed = server.wait_for_line("to=\"closed\"").await;
    assert!(closed.is_some(), "{:?}", server.output());
}
// ANCHOR_END: learner_test
