//! Exercises for step 02 (book: "Step 02", section "Exercises").
//!
//! Each test is `#[ignore]`d so the step's normal `cargo test` stays green; it fails until you
//! solve the exercise. Run one with:
//!
//! ```text
//! cargo test -p step-02 --test exercises -- --ignored <name>
//! ```
//!
//! The reference solutions are patches in `steps/step-02-greeting/exercises/`.

use std::net::SocketAddr;
use std::sync::Arc;

use step_02::{Config, Stats, app};
use testkit::{get, spawn_in_process};

/// The app with its default configuration (greets "World"), served in-process.
async fn serve_defaults() -> SocketAddr {
    let config = Config::from_lookup(testkit::env_from(&[])).expect("the defaults are valid");
    let router = app(&config, Arc::new(Stats::default()));
    spawn_in_process(|listener| async move { axum::serve(listener, router).await }).await
}

/// Exercise 1: `GET /?name=Ferris` greets Ferris; without `name`, the greeting is unchanged.
#[tokio::test]
#[ignore = "exercise: add a `name` query parameter (see the book, step 02)"]
async fn name_parameter_greets_by_name() {
    let addr = serve_defaults().await;

    let named = get(addr, "/?name=Ferris&work_ms=0").await;
    let unnamed = get(addr, "/?work_ms=0").await;

    assert_eq!(named.status, 200);
    assert_eq!(named.body, "Hello, Ferris!\n");
    assert_eq!(unnamed.body, "Hello, World!\n");
}

/// Exercise 2: a `name` that is empty, longer than 32 characters, or has anything but letters,
/// digits, spaces and hyphens is refused with `400 Bad Request` and a plain-text reason, before
/// any work is done.
#[tokio::test]
#[ignore = "exercise: validate the `name` query parameter (see the book, step 02)"]
async fn bad_names_are_refused_with_400() {
    let addr = serve_defaults().await;
    let too_long = "a".repeat(33);

    for name in ["", too_long.as_str(), "%3Cscript%3E", "Robert%27);"] {
        let reply = get(addr, &format!("/?name={name}")).await;

        assert_eq!(reply.status, 400, "name={name:?}: {}", reply.body);
        assert_eq!(
            reply.header("content-type"),
            Some("text/plain; charset=utf-8")
        );
        assert!(
            reply.body.contains("name"),
            "the reason names the parameter: {:?}",
            reply.body
        );
    }
    let good = get(addr, "/?name=Jean-Luc%20Picard%202&work_ms=0").await;
    assert_eq!(good.body, "Hello, Jean-Luc Picard 2!\n");
}
