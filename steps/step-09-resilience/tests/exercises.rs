//! Exercises for step 09 (book: "Step 09", section "Exercises").
//!
//! Each test is `#[ignore]`d so the step's normal `cargo test` stays green; it fails until you
//! solve the exercise. Run one with:
//!
//! ```text
//! cargo test -p step-09 --test exercises -- --ignored <name>
//! ```
//!
//! The reference solutions are patches in `steps/step-09-resilience/exercises/`.

mod common;

use std::time::Duration;

use step_04::store::ItemId;

use common::{Answer, Scripted, client, settings};

/// Exercise 1: an upstream that answers 503 with `Retry-After: N` is not asked again before N
/// seconds, and not at all when N seconds would pass the deadline.
#[tokio::test]
#[ignore = "exercise: wait as long as Retry-After says (see the book, step 09)"]
async fn retry_after_is_honoured_within_the_deadline() {
    let upstream = Scripted::start(|hit| match hit.path.as_str() {
        "/stock/item-1" => Answer::RetryAfter(1),
        _ => Answer::RetryAfter(10),
    })
    .await;
    let mut settings = settings();
    settings.timeout = Duration::from_secs(3);
    settings.retry.max_attempts = 2;
    let stock = client(&upstream, settings);

    let soon = stock.stock(ItemId(1), None).await;
    let hits = upstream.hits();
    let later = stock.stock(ItemId(2), None).await;

    assert!(soon.is_err() && later.is_err());
    assert_eq!(hits.len(), 2, "Retry-After: 1 fits in 3 s: one retry");
    let gap = hits[1].at - hits[0].at;
    assert!(gap >= Duration::from_secs(1), "retried after {gap:?}");
    assert_eq!(
        upstream.count(),
        3,
        "Retry-After: 10 is past the deadline: no retry"
    );
}

/// Exercise 2: while the inventory cannot answer, an item it answered for before keeps the
/// last figure it got, marked as stale.
#[tokio::test]
#[ignore = "exercise: serve the last known stock when the inventory fails (see the book, step 09)"]
async fn the_last_known_stock_is_served_stale() {
    let upstream = Scripted::start(|_| Answer::Stock(7)).await;
    let addr = common::start(&[("UPSTREAM_URL", &upstream.url)]).await;

    let fresh = testkit::get(addr, "/api/items/item-1").await;
    upstream.script(|_| Answer::Status(500));
    let stale = testkit::get(addr, "/api/items/item-1").await;

    assert_eq!(fresh.json()["stock"], 7);
    assert_eq!(fresh.header("x-degraded"), None);
    assert_eq!(stale.status, 200);
    assert_eq!(
        stale.json()["stock"],
        7,
        "the last known figure: {}",
        stale.body
    );
    assert_eq!(stale.header("x-degraded"), Some("stock-stale"));
}
