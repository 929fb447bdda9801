//! What this step's test files share.
#![allow(dead_code)] // Each test file uses a different part of it.

use std::net::SocketAddr;
use std::time::Duration;

use step_04::Config;
use testkit::{Method, Reply, request, spawn_in_process};

/// The default configuration, as an empty environment gives it.
pub fn config() -> Config {
    Config::from_lookup(|_| None).expect("defaults are valid")
}

/// Serves the whole app (memory store included) in-process; it never receives a signal.
pub async fn start(config: Config) -> SocketAddr {
    spawn_in_process(move |listener| step_04::run(listener, config, std::future::pending())).await
}

pub const JSON: (&str, &str) = ("content-type", "application/json");

/// `POST /api/items` with a JSON body.
pub async fn create(addr: SocketAddr, body: &str) -> Reply {
    request(addr, Method::POST, "/api/items", &[JSON], body.to_owned())
        .await
        .expect("POST /api/items")
}

/// The same reply with every `created_at` replaced by one fixed time of the same length, so
/// snapshots stay stable and `content-length` stays true.
pub fn redact(reply: Reply) -> Reply {
    const KEY: &str = "\"created_at\":\"";
    const FIXED: &str = "2026-01-01T12:00:00.000000Z";
    let mut body = reply.body.clone();
    let mut from = 0;
    while let Some(found) = body[from..].find(KEY) {
        let start = from + found + KEY.len();
        let end = start + FIXED.len();
        assert_eq!(
            body.as_bytes().get(end),
            Some(&b'"'),
            "timestamp of unexpected length in {body}"
        );
        body.replace_range(start..end, FIXED);
        from = end;
    }
    Reply { body, ..reply }
}

/// Asserts the error contract: this status, `application/json`, `{"error": message}`.
#[track_caller]
pub fn assert_error(reply: &Reply, status: u16, message: &str, what: &str) {
    assert_eq!(reply.status.as_u16(), status, "{what}: {}", reply.body);
    assert_eq!(
        reply.header("content-type"),
        Some("application/json"),
        "{what}"
    );
    assert_eq!(
        reply.json(),
        serde_json::json!({ "error": message }),
        "{what}"
    );
}

/// Long enough for anything that should be quick; never what a passing test waits for.
pub const PATIENCE: Duration = testkit::PATIENCE;
