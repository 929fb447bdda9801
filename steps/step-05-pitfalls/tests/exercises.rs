//! Exercises for step 05 (book: "Step 05", section "Exercises").
//!
//! Each test is `#[ignore]`d so the step's normal `cargo test` stays green; it fails until you
//! solve the exercise. Run one with:
//!
//! ```text
//! cargo test -p step-05 --test exercises -- --ignored <name>
//! ```
//!
//! The reference solutions are patches in `steps/step-05-pitfalls/exercises/`. Each exercise
//! adds a new pitfall pair to the lab, so, like `tests/pitfalls.rs`, each test asserts both
//! halves: the broken route misbehaves and the fixed one does not.

use std::net::SocketAddr;
use std::time::Duration;

use testkit::{Binary, Method, Reply, get, request};
use tokio::time::Instant;

const BIN: &str = env!("CARGO_BIN_EXE_step-05");

/// Requests sent at once to each route of the lock exercise.
const AT_ONCE: u32 = 4;
/// The slow work each of them asks for.
const WORK: Duration = Duration::from_millis(1000);

/// Sends [`AT_ONCE`] requests to `path` at the same time; returns how long until the last
/// reply arrived.
async fn all_at_once(addr: SocketAddr, path: &str) -> Duration {
    let started = Instant::now();
    let requests: Vec<_> = (0..AT_ONCE)
        .map(|_| {
            let path = path.to_owned();
            tokio::spawn(async move { get(addr, &path).await })
        })
        .collect();
    for reply in requests {
        let reply = reply.await.expect("request task");
        assert_eq!(reply.status, 200, "GET {path}: {}", reply.body);
    }
    started.elapsed()
}

/// Exercise 1: `/pitfalls/hold-lock/broken?ms=N` holds a tokio `Mutex` guard across N ms of
/// slow work, so concurrent requests run one after the other; `/pitfalls/hold-lock/fixed`
/// copies what it needs out of the lock first, so they overlap.
#[tokio::test]
#[ignore = "exercise: add the hold-lock pitfall pair (see the book, step 05)"]
async fn a_lock_held_across_slow_work_serialises_requests() {
    let server = Binary::start(BIN, &[]).await;
    let ms = WORK.as_millis();

    let broken = all_at_once(server.addr, &format!("/pitfalls/hold-lock/broken?ms={ms}")).await;
    let fixed = all_at_once(server.addr, &format!("/pitfalls/hold-lock/fixed?ms={ms}")).await;

    // One after the other, four requests of 1 s cannot take less than 4 s: a sure bound.
    assert!(
        broken >= WORK * AT_ONCE,
        "the BROKEN route let requests overlap: {broken:?} for {AT_ONCE} requests of {WORK:?}"
    );
    // Overlapping, they take about 1 s; 3 s leaves two seconds for a slow, busy machine.
    assert!(
        fixed < WORK * (AT_ONCE - 1),
        "the FIXED route still runs requests one at a time: {fixed:?} for {AT_ONCE} requests"
    );
}

async fn post(addr: SocketAddr, path: &str, bytes: usize) -> Reply {
    request(addr, Method::POST, path, &[], vec![b'x'; bytes])
        .await
        .unwrap_or_else(|e| panic!("POST {path} with {bytes} bytes: {e}"))
}

/// Exercise 2: `POST /pitfalls/body/broken` reads a body of any size into memory;
/// `POST /pitfalls/body/fixed` reads at most 64 KiB and answers `413` beyond that. Both
/// answer `read <n> bytes` when they read the whole body.
#[tokio::test]
#[ignore = "exercise: add the unbounded-body pitfall pair (see the book, step 05)"]
async fn a_body_is_read_with_a_limit() {
    let server = Binary::start(BIN, &[]).await;
    let limit = 64 * 1024;
    // Beyond axum's own 2 MB default, which guards its extractors, not a body read by hand.
    let three_megabytes = 3 * 1024 * 1024;
    // A small body first: a route that does not exist answers 404 without reading the body,
    // and a large one then fails as a transport error that says much less.
    let small = post(server.addr, "/pitfalls/body/broken", 10).await;
    assert_eq!(
        (small.status.as_u16(), small.body.as_str()),
        (200, "read 10 bytes\n"),
        "POST /pitfalls/body/broken with 10 bytes"
    );

    let broken = post(server.addr, "/pitfalls/body/broken", three_megabytes).await;
    let at_limit = post(server.addr, "/pitfalls/body/fixed", limit).await;
    let over = post(server.addr, "/pitfalls/body/fixed", limit + 1).await;

    assert_eq!(
        (broken.status.as_u16(), broken.body.as_str()),
        (200, "read 3145728 bytes\n"),
        "the BROKEN route refused a 3 MB body"
    );
    assert_eq!(
        (at_limit.status.as_u16(), at_limit.body.as_str()),
        (200, "read 65536 bytes\n"),
        "the FIXED route refused a body of exactly the limit"
    );
    assert_eq!(
        over.status, 413,
        "the FIXED route read a body over the limit: {}",
        over.body
    );
}
