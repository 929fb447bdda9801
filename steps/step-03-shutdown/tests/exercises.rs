//! Exercises for step 03 (book: "Step 03", section "Exercises").
//!
//! Each test is `#[ignore]`d so the step's normal `cargo test` stays green; it fails until you
//! solve the exercise. Run one with:
//!
//! ```text
//! cargo test -p step-03 --test exercises -- --ignored <name>
//! ```
//!
//! The reference solutions are patches in `steps/step-03-shutdown/exercises/`.

use std::time::Duration;

use step_03::Config;
use testkit::{Binary, PATIENCE};

const BIN: &str = env!("CARGO_BIN_EXE_step-03");

/// Exercise 1: a second background task (a cache refresher) that shutdown drains too. On
/// SIGTERM it must finish its last round and log `cache refresher stopped` (at debug level, so
/// the default log stays as it is) before the process exits 0.
#[tokio::test]
#[ignore = "exercise: add a second background task that drains (see the book, step 03)"]
async fn second_background_task_drains() {
    let mut server = Binary::start(BIN, &[("RUST_LOG", "info,step_03=debug")]).await;

    server.signal("TERM");
    let status = server
        .wait_exit(PATIENCE)
        .await
        .expect("exits after SIGTERM");

    let output = server.output();
    assert_eq!(status.code(), Some(0), "{output:#?}");
    assert!(
        output
            .iter()
            .any(|line| line.contains("cache refresher stopped")),
        "the refresher must report that it stopped before exit: {output:#?}"
    );
}

/// Exercise 2: Cloud Run kills the container 10 s after SIGTERM, so a `SHUTDOWN_TIMEOUT` of
/// 10 s or more can never be honoured: refuse it at start-up (at most 9 s).
#[test]
#[ignore = "exercise: refuse a SHUTDOWN_TIMEOUT the platform cannot honour (see the book, step 03)"]
fn shutdown_timeout_must_fit_the_platform_grace_period() {
    let with = |value: &'static str| {
        Config::from_lookup(move |key| (key == "SHUTDOWN_TIMEOUT").then(|| value.to_owned()))
    };

    let thirty = with("30s");
    let ten = with("10s");
    let nine = with("9s");

    let message = thirty.expect_err("30s is longer than the platform waits");
    assert!(
        message.contains("SHUTDOWN_TIMEOUT"),
        "the error names the variable: {message}"
    );
    assert!(ten.is_err(), "10s leaves no time to exit");
    assert_eq!(nine.map(|c| c.shutdown_timeout), Ok(Duration::from_secs(9)));
}
