//! Exercises for step 01 (book: "Step 01", section "Exercises").
//!
//! Each test is `#[ignore]`d so the step's normal `cargo test` stays green; it fails until you
//! solve the exercise. Run one with:
//!
//! ```text
//! cargo test -p step-01 --test exercises -- --ignored <name>
//! ```
//!
//! The reference solutions are patches in `steps/step-01-hello/exercises/`.

use testkit::{get, spawn_in_process};

/// Exercise 1: `GET /healthz` answers `ok` (for a load balancer's probe); every other path
/// still gets the greeting.
#[tokio::test]
#[ignore = "exercise: add a /healthz route (see the book, step 01)"]
async fn healthz_answers_ok() {
    let addr = spawn_in_process(step_01::serve).await;

    let health = get(addr, "/healthz").await;
    let root = get(addr, "/").await;

    assert_eq!(health.status, 200);
    assert_eq!(health.body, "ok", "GET /healthz should answer `ok`");
    assert_eq!(
        health.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(
        root.body,
        step_01::GREETING,
        "other paths still get the greeting"
    );
}

/// Exercise 2: every reply names the server in a `server: step-01` header.
#[tokio::test]
#[ignore = "exercise: add a `server` header to every reply (see the book, step 01)"]
async fn every_reply_names_the_server() {
    let addr = spawn_in_process(step_01::serve).await;

    for path in ["/", "/some/where?else"] {
        let reply = get(addr, path).await;

        assert_eq!(reply.header("server"), Some("step-01"), "GET {path}");
    }
}
