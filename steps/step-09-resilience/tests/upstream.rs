//! The client's defences against a scripted upstream on a real socket: retries, the budget,
//! the breaker, the bulkhead, and the one pooled client. Real time, with bounds in seconds
//! where a bound is needed (a paused clock would skip ahead while a real socket is waiting).

mod common;

use std::sync::Arc;
use std::time::Duration;

use http::Method;
use step_09::breaker::State;
use step_09::upstream::{CallError, Settings, UpstreamConfig};
use tokio::sync::Notify;
use tokio::time::Instant;

use common::{Answer, Scripted, client, settings};

const ID: step_04::store::ItemId = step_04::store::ItemId(1);

// ANCHOR: retries_test
#[tokio::test]
async fn retries_wait_longer_each_time_with_jitter_and_stop_at_the_deadline() {
    let upstream = Scripted::start(|_| Answer::Status(503)).await;
    let mut settings = settings();
    settings.timeout = Duration::from_millis(1500);
    settings.retry.max_attempts = 50;
    settings.retry.cap = Duration::from_secs(10);
    let stock = client(&upstream, settings);
    let started = Instant::now();

    let outcome = stock.stock(ID, None).await;

    let hits = upstream.hits();
    // It gave up on the upstream's last answer, not on a timeout after sleeping past the end.
    assert_eq!(
        outcome,
        Err(CallError::Status(http::StatusCode::SERVICE_UNAVAILABLE))
    );
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "past the deadline"
    );
    assert!((4..50).contains(&hits.len()), "{} attempts", hits.len());
    assert!(
        hits.iter()
            .all(|hit| hit.at < started + Duration::from_millis(1500))
    );
    let gaps: Vec<Duration> = hits.windows(2).map(|w| w[1].at - w[0].at).collect();
    let steps: Vec<Duration> = (0..gaps.len() as u32)
        .map(|n| Duration::from_millis(100) * 2u32.pow(n))
        .collect();
    for (gap, step) in gaps.iter().zip(&steps) {
        assert!(
            *gap >= *step / 2,
            "a wait shorter than half its step: {gaps:?}"
        );
    }
    for pair in gaps.windows(2) {
        assert!(pair[1] > pair[0], "the waits do not grow: {gaps:?}");
    }
    // Jitter: with a fixed schedule every gap would be at least its whole step.
    assert!(
        gaps.iter().zip(&steps).any(|(gap, step)| gap < step),
        "no wait was jittered below its step: {gaps:?}"
    );
    // The upstream learns how long the caller will wait, less each time.
    let budgets: Vec<u64> = hits
        .iter()
        .map(|h| h.budget_ms.expect("a budget"))
        .collect();
    assert!(budgets[0] <= 1500 && budgets[0] > 1000, "{budgets:?}");
    assert!(budgets.windows(2).all(|b| b[1] < b[0]), "{budgets:?}");
}
// ANCHOR_END: retries_test

#[tokio::test]
async fn a_post_is_never_retried_a_get_is() {
    let upstream = Scripted::start(|_| Answer::Status(503)).await;
    let mut settings = settings();
    settings.retry.base = Duration::from_millis(1);
    let stock = client(&upstream, settings);

    let post = stock.call(Method::POST, "/stock/item-1", None).await;
    let posts = upstream.count();
    let get = stock.call(Method::GET, "/stock/item-1", None).await;

    assert!(post.is_err() && get.is_err());
    assert_eq!(posts, 1, "a POST was sent again");
    assert_eq!(upstream.count() - posts, 3, "a GET is tried three times");
}

#[tokio::test]
async fn only_connect_errors_502_and_503_are_retried() {
    let upstream = Scripted::start(|hit| match hit.path.as_str() {
        "/stock/item-1" => Answer::Status(500),
        "/stock/item-2" => Answer::Status(404),
        _ => Answer::Status(502),
    })
    .await;
    let mut settings = settings();
    settings.retry.base = Duration::from_millis(1);
    let stock = client(&upstream, settings);

    for (id, attempts) in [(1, 1), (2, 1), (3, 3)] {
        let before = upstream.count();
        let _ = stock.stock(step_04::store::ItemId(id), None).await;
        assert_eq!(upstream.count() - before, attempts, "item-{id}");
    }
    // Nobody listens on a port the system just handed out and took back.
    let port = testkit::free_port();
    let nobody = step_09::upstream::Upstream::new(&format!("http://127.0.0.1:{port}"), settings);
    let started = Instant::now();
    assert_eq!(nobody.stock(ID, None).await, Err(CallError::Connect));
    // Three attempts: two waits of at least 0.5 ms and 1 ms.
    assert!(nobody.connections_opened() == 0 && started.elapsed() >= Duration::from_micros(1500));
}

// ANCHOR: budget_test
#[tokio::test]
async fn the_retry_budget_caps_upstream_attempts_under_steady_failure() {
    let upstream = Scripted::start(|_| Answer::Status(503)).await;
    let mut settings = settings();
    settings.retry.base = Duration::from_micros(100);
    let stock = client(&upstream, settings);

    for _ in 0..300 {
        let _ = stock.stock(ID, None).await;
    }

    // Three attempts each would be 900. The budget allows 10 retries to start with, then one
    // per ten calls: 300 + 10 + 30.
    let attempts = upstream.count();
    assert!(
        (310..=341).contains(&attempts),
        "{attempts} attempts for 300 calls"
    );
}
// ANCHOR_END: budget_test

/// The settings `pairs` of environment give, with quick retries.
fn from_env(pairs: &[(&str, &str)]) -> Settings {
    let config = UpstreamConfig::from_lookup(testkit::env_from(pairs)).expect("valid");
    let mut settings = config.settings;
    settings.retry.base = Duration::from_micros(100);
    settings
}

#[tokio::test]
async fn retry_budget_enabled_0_retries_every_failed_call() {
    let upstream = Scripted::start(|_| Answer::Status(503)).await;
    let mut settings = from_env(&[("RETRY_BUDGET_ENABLED", "0")]);
    settings.breaker.failures = 1_000_000;
    let stock = client(&upstream, settings);

    for _ in 0..300 {
        let _ = stock.stock(ID, None).await;
    }

    // Three attempts for each call, where the budget allows 310 to 341 (the test above).
    assert_eq!(upstream.count(), 900);
}

#[tokio::test]
async fn breaker_enabled_0_never_stops_the_traffic() {
    let upstream = Scripted::start(|_| Answer::Status(503)).await;
    let mut settings = from_env(&[("BREAKER_ENABLED", "0"), ("BREAKER_FAILURES", "5")]);
    settings.retry.max_attempts = 1;
    let stock = client(&upstream, settings);

    for _ in 0..100 {
        assert_eq!(
            stock.stock(ID, None).await,
            Err(CallError::Status(503.try_into().unwrap()))
        );
    }

    // With the breaker on, the five failures would have opened it (the test below).
    assert_eq!(upstream.count(), 100);
    assert_eq!(stock.breaker().state(), State::Closed { failures: 0 });
}

// ANCHOR: breaker_test
#[tokio::test]
async fn the_breaker_opens_after_five_failures_and_then_sends_nothing() {
    let upstream = Scripted::start(|_| Answer::Status(503)).await;
    let mut settings = settings();
    settings.breaker.failures = 5;
    settings.breaker.cooldown = Duration::from_secs(60);
    settings.retry.max_attempts = 1;
    let stock = client(&upstream, settings);

    for _ in 0..5 {
        assert_eq!(
            stock.stock(ID, None).await,
            Err(CallError::Status(503.try_into().unwrap()))
        );
    }
    let started = Instant::now();
    for _ in 0..1000 {
        assert_eq!(stock.stock(ID, None).await, Err(CallError::BreakerOpen));
    }

    assert!(matches!(stock.breaker().state(), State::Open { .. }));
    assert_eq!(upstream.count(), 5, "calls reached the upstream while open");
    // A thousand refusals, each without a byte on the network: well under a second in all.
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn half_open_sends_one_probe_closes_on_success_and_reopens_on_failure() {
    let gate = Arc::new(Notify::new());
    let upstream = Scripted::start(|_| Answer::Status(503)).await;
    let mut settings = settings();
    settings.breaker.failures = 2;
    settings.breaker.cooldown = Duration::from_millis(500);
    settings.retry.max_attempts = 1;
    let stock = client(&upstream, settings);
    for _ in 0..2 {
        let _ = stock.stock(ID, None).await;
    }
    // After the cooldown, the next call is the probe; it waits at the upstream for the gate.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let opened = gate.clone();
    upstream.script(move |_| Answer::After(opened.clone(), 7));
    let probe = tokio::spawn({
        let stock = stock.clone();
        async move { stock.stock(ID, None).await }
    });
    upstream.wait_for(3).await;

    for _ in 0..20 {
        assert_eq!(stock.stock(ID, None).await, Err(CallError::BreakerOpen));
    }
    assert_eq!(upstream.count(), 3, "more than one probe");
    gate.notify_one();
    assert_eq!(probe.await.unwrap(), Ok(7));
    assert_eq!(stock.breaker().state(), State::Closed { failures: 0 });

    // Open again, and a failed probe opens it for another cooldown.
    upstream.script(|_| Answer::Status(503));
    for _ in 0..2 {
        let _ = stock.stock(ID, None).await;
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(stock.stock(ID, None).await.is_err());
    assert_eq!(upstream.count(), 6);
    assert!(matches!(stock.breaker().state(), State::Open { .. }));
    assert_eq!(stock.stock(ID, None).await, Err(CallError::BreakerOpen));
}
// ANCHOR_END: breaker_test

// ANCHOR: late_test
#[tokio::test]
async fn a_late_success_from_before_the_breaker_opened_does_not_close_it() {
    let (slow, probe_gate) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let (late, held) = (slow.clone(), probe_gate.clone());
    let upstream = Scripted::start(move |hit| match hit.path.as_str() {
        "/stock/item-1" => Answer::After(late.clone(), 1),
        "/stock/item-3" => Answer::After(held.clone(), 3),
        _ => Answer::Status(503),
    })
    .await;
    let mut settings = settings();
    settings.breaker.failures = 2;
    settings.breaker.cooldown = Duration::from_millis(500);
    settings.retry.max_attempts = 1;
    let stock = client(&upstream, settings);
    let call = |id| {
        let stock = stock.clone();
        tokio::spawn(async move { stock.stock(step_04::store::ItemId(id), None).await })
    };
    // A slow call starts while the breaker is closed...
    let before = call(1);
    upstream.wait_for(1).await;
    // ...two failures open it, and after the cooldown a probe is out (half-open).
    for _ in 0..2 {
        let _ = stock.stock(step_04::store::ItemId(2), None).await;
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    let probe = call(3);
    upstream.wait_for(4).await;

    slow.notify_one();
    assert_eq!(before.await.unwrap(), Ok(1));

    assert_eq!(
        stock.breaker().state(),
        State::HalfOpen,
        "the late success decided"
    );
    probe_gate.notify_one();
    assert_eq!(probe.await.unwrap(), Ok(3));
    assert_eq!(stock.breaker().state(), State::Closed { failures: 0 });
}
// ANCHOR_END: late_test

// ANCHOR: bulkhead_test
#[tokio::test]
async fn the_bulkhead_degrades_the_excess_at_once() {
    let upstream = Scripted::start(|_| Answer::Hang).await;
    let mut settings = settings();
    settings.max_concurrency = 3;
    let stock = client(&upstream, settings);
    let waiting: Vec<_> = (0..3)
        .map(|_| {
            let stock = stock.clone();
            tokio::spawn(async move { stock.stock(ID, None).await })
        })
        .collect();
    upstream.wait_for(3).await;
    let started = Instant::now();

    for _ in 0..100 {
        assert_eq!(stock.stock(ID, None).await, Err(CallError::Busy));
    }

    assert!(
        started.elapsed() < Duration::from_secs(1),
        "the excess waited"
    );
    assert_eq!(upstream.count(), 3);
    for call in waiting {
        call.abort();
    }
}
// ANCHOR_END: bulkhead_test

// ANCHOR: pool_test
#[tokio::test]
async fn one_client_reuses_its_connections() {
    let upstream = Scripted::start(|_| Answer::Stock(7)).await;
    let mut settings = settings();
    settings.max_concurrency = 4;
    let stock = client(&upstream, settings);

    for _ in 0..50 {
        assert_eq!(stock.stock(ID, None).await, Ok(7));
    }
    assert_eq!(stock.connections_opened(), 1);
    let together: Vec<_> = (0..40)
        .map(|_| {
            let stock = stock.clone();
            tokio::spawn(async move { stock.stock(ID, None).await })
        })
        .collect();
    for call in together {
        let _ = call.await.unwrap();
    }

    // At most one per call in flight at once (the bulkhead's 4), whatever the number of calls.
    assert!(
        stock.connections_opened() <= 4,
        "{}",
        stock.connections_opened()
    );
    assert_eq!(upstream.connections(), stock.connections_opened());
}
// ANCHOR_END: pool_test
