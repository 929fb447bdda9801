//! The service over HTTP against a real PostgreSQL (started by testkit): what a database buys
//! that the memory store could not, and how the service behaves when the database misbehaves.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use step_06::Ops;
use step_07::db::{self, DbConfig};
use step_07::store::{PgStore, key_lock_id};
use testkit::postgres::{self, TestDatabase};
use testkit::{Binary, Method, PATIENCE, Reply, eventually, get, request};

const BIN: &str = env!("CARGO_BIN_EXE_step-07");
const JSON: (&str, &str) = ("content-type", "application/json");
const CURL: &str =
    "curl -i -X POST -H 'content-type: application/json' -H 'x-request-id: example-1'";

async fn create(addr: SocketAddr, name: &str, key: Option<&str>) -> Reply {
    // A fixed request id, so that transcripts do not change from run to run.
    let mut headers = vec![JSON, ("x-request-id", "example-1")];
    if let Some(key) = key {
        headers.push(("idempotency-key", key));
    }
    let body = format!(r#"{{"name":"{name}"}}"#);
    request(addr, Method::POST, "/api/items", &headers, body)
        .await
        .expect("POST /api/items")
}

/// The ids of `GET /api/items`, in order.
async fn listed_ids(addr: SocketAddr) -> Vec<String> {
    let list = get(addr, "/api/items").await;
    assert_eq!(list.status, 200, "{}", list.body);
    let items = list.json();
    let items = items.as_array().expect("an array").clone();
    items
        .iter()
        .map(|item| item["id"].as_str().expect("id").to_owned())
        .collect()
}

/// The same reply with `created_at` fixed, for snapshots (same length, so `content-length`
/// stays true).
fn fixed_time(reply: Reply) -> Reply {
    let at = regex_free_replace(
        &reply.body,
        "\"created_at\":\"",
        27,
        "2026-01-01T12:00:00.000000Z",
    );
    Reply { body: at, ..reply }
}

fn regex_free_replace(text: &str, key: &str, len: usize, with: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(key) {
        let start = at + key.len();
        out.push_str(&rest[..start]);
        out.push_str(with);
        rest = &rest[start + len..];
    }
    out.push_str(rest);
    out
}

fn db_env(db: &TestDatabase) -> Vec<(&str, &str)> {
    vec![("DATABASE_URL", db.url.as_str())]
}

/// One instance of the service in this process, on `db`, ready when it returns.
async fn in_process(url: &str, settings: &[(&str, &str)]) -> (SocketAddr, PgStore) {
    let mut pairs = vec![("DATABASE_URL", url)];
    pairs.extend_from_slice(settings);
    let config = step_07::Config::from_lookup(testkit::env_from(&pairs)).expect("valid");
    db::migrate(&config.db).await.expect("migrations apply");
    let store = PgStore::new(config.db.pool(), config.db.idempotency_key_ttl);
    let app = step_07::app(&config, Arc::new(store.clone()), &Ops::default());
    let base = config.base.base.clone();
    let addr = testkit::spawn_in_process(move |listener| async move {
        step_04::serve(listener, app, &base, std::future::pending()).await
    })
    .await;
    (addr, store)
}

async fn ready(server: &Binary) {
    let addr = server.addr;
    eventually(
        "/readyz says 200",
        async || get(addr, "/readyz").await.status,
        |s| *s == 200,
    )
    .await;
}

// ANCHOR: two_instances
#[tokio::test]
async fn two_instances_hand_out_unique_ids_and_list_the_same_items() {
    let Some(db) = postgres::database() else {
        return;
    };
    let one = Binary::start(BIN, &db_env(&db)).await;
    let two = Binary::start(BIN, &db_env(&db)).await;
    ready(&one).await;
    ready(&two).await;

    // 40 creates at once, alternating between the two instances.
    let creates = (0..40).map(|n| {
        let addr = if n % 2 == 0 { one.addr } else { two.addr };
        tokio::spawn(async move { create(addr, &format!("item {n}"), None).await })
    });
    let mut ids = HashSet::new();
    for created in creates {
        let created = created.await.expect("join");
        assert_eq!(created.status, 201, "{}", created.body);
        ids.insert(created.json()["id"].as_str().expect("id").to_owned());
    }

    assert_eq!(ids.len(), 40, "every id unique across both instances");
    let (listed_one, listed_two) = (listed_ids(one.addr).await, listed_ids(two.addr).await);
    assert_eq!(listed_one, listed_two, "both instances see the same items");
    assert_eq!(listed_one.iter().cloned().collect::<HashSet<_>>(), ids);
}
// ANCHOR_END: two_instances

/// What step 06 does in the same situation: each instance has its own memory, so each hands
/// out `item-1`. The chapter shows this transcript.
#[tokio::test]
async fn two_step_06_instances_both_hand_out_item_1() {
    let start = || {
        testkit::spawn_in_process(|listener| async move {
            let config = step_06::Config::from_lookup(|_| None).expect("defaults");
            step_06::run(
                listener,
                config,
                Ops::default(),
                async {},
                std::future::pending(),
            )
            .await
        })
    };
    let (one, two) = (start().await, start().await);

    let first = create(one, "on instance one", None).await;
    let second = create(two, "on instance two", None).await;

    assert_eq!(first.json()["id"], "item-1");
    assert_eq!(
        second.json()["id"],
        "item-1",
        "the memory store cannot know about the other"
    );
    let transcript = format!(
        "{}\n\n{}",
        fixed_time(first).transcript(
            "curl -i -X POST instance-one/api/items -d '{\"name\":\"on instance one\"}'"
        ),
        fixed_time(second).transcript(
            "curl -i -X POST instance-two/api/items -d '{\"name\":\"on instance two\"}'"
        )
    );
    testkit::assert_transcript!("step07_step06_duplicate_ids", transcript);
}

// ANCHOR: sigkill
#[tokio::test]
async fn every_item_answered_201_survives_a_sigkill() {
    let Some(db) = postgres::database() else {
        return;
    };
    let mut server = Binary::start(BIN, &db_env(&db)).await;
    ready(&server).await;
    let addr = server.addr;

    // Eight clients create as fast as they can; each remembers the ids it was given.
    let clients: Vec<_> = (0..8)
        .map(|client| {
            tokio::spawn(async move {
                let mut answered = Vec::new();
                for n in 0..10_000 {
                    let body = format!(r#"{{"name":"c{client} n{n}"}}"#);
                    match request(addr, Method::POST, "/api/items", &[JSON], body).await {
                        Ok(reply) if reply.status == 201 => {
                            answered.push(reply.json()["id"].as_str().expect("id").to_owned())
                        }
                        // Killed mid-request: no answer, so no promise was made.
                        _ => break,
                    }
                }
                answered
            })
        })
        .collect();
    // Kill it while the creates are in full flow.
    eventually(
        "some items created",
        async || listed_ids(addr).await.len(),
        |n| *n >= 100,
    )
    .await;
    server.signal("KILL");
    server.wait_exit(PATIENCE).await.expect("killed");
    let mut answered = Vec::new();
    for client in clients {
        answered.extend(client.await.expect("join"));
    }

    let restarted = Binary::start(BIN, &db_env(&db)).await;
    ready(&restarted).await;
    let stored: HashSet<String> = listed_ids(restarted.addr).await.into_iter().collect();
    let lost: Vec<_> = answered.iter().filter(|id| !stored.contains(*id)).collect();
    assert!(
        answered.len() >= 100,
        "the load ran: {} answered",
        answered.len()
    );
    assert!(
        lost.is_empty(),
        "answered 201 but gone after the crash: {lost:?}"
    );
}
// ANCHOR_END: sigkill

// ANCHOR: busy_pool
#[tokio::test]
async fn a_busy_pool_answers_503_with_retry_after_within_the_acquire_timeout() {
    let Some(db) = postgres::database() else {
        return;
    };
    let settings = [("DB_MAX_CONNECTIONS", "1"), ("DB_ACQUIRE_TIMEOUT", "500ms")];
    let (addr, store) = in_process(&db.url, &settings).await;
    // The pool's only connection, busy with a slow query for the next few seconds.
    let pool = store.pool().clone();
    let slow = tokio::spawn(async move { sqlx::query("SELECT pg_sleep(3)").execute(&pool).await });
    eventually(
        "the slow query holds the connection",
        async || store.pool().num_idle(),
        |n| *n == 0,
    )
    .await;

    let started = Instant::now();
    let reply = get(addr, "/api/items").await;
    let waited = started.elapsed();

    assert_eq!(reply.status, 503, "{}", reply.body);
    assert_eq!(reply.header("retry-after"), Some("1"));
    assert_eq!(
        reply.json(),
        serde_json::json!({"error": "item store unavailable"})
    );
    assert!(
        waited >= Duration::from_millis(450),
        "gave up after only {waited:?}"
    );
    assert!(
        waited < Duration::from_millis(2500),
        "not before the slow query ended: {waited:?}"
    );
    slow.abort();
}
// ANCHOR_END: busy_pool

// ANCHOR: outage
#[tokio::test]
async fn a_database_outage_gives_503s_and_the_same_process_recovers() {
    let Some(server) = postgres::Server::start() else {
        return;
    };
    let db = server.database();
    let app = Binary::start(
        BIN,
        &[("DATABASE_URL", &db.url), ("DB_ACQUIRE_TIMEOUT", "1s")],
    )
    .await;
    ready(&app).await;
    let addr = app.addr;
    assert_eq!(create(addr, "before", None).await.status, 201);

    server.stop();
    let started = Instant::now();
    let during = get(addr, "/api/items").await;
    let waited = started.elapsed();
    let not_ready = eventually(
        "/readyz follows",
        async || get(addr, "/readyz").await,
        |r| r.status == 503,
    )
    .await;
    let alive = get(addr, "/healthz").await;

    server.restart();
    eventually(
        "items again",
        async || get(addr, "/api/items").await.status,
        |s| *s == 200,
    )
    .await;
    ready(&app).await;

    assert_eq!(during.status, 503, "{}", during.body);
    assert_eq!(during.header("retry-after"), Some("1"));
    assert!(
        waited < Duration::from_secs(3),
        "a fast answer, not a hang: {waited:?}"
    );
    assert_eq!(not_ready.json()["status"], "unavailable");
    assert_eq!(alive.status, 200, "liveness never depends on the database");
    assert_eq!(
        listed_ids(addr).await.len(),
        1,
        "what was stored before is still there"
    );
}
// ANCHOR_END: outage

// ANCHOR: idempotency
#[tokio::test]
async fn a_repeated_idempotency_key_returns_the_first_item_and_creates_nothing() {
    let Some(db) = postgres::database() else {
        return;
    };
    let (addr, _store) = in_process(&db.url, &[]).await;

    let first = create(addr, "Test Item", Some("order-17")).await;
    let again = create(addr, "Test Item", Some("order-17")).await;
    let other_body = create(addr, "Another Item", Some("order-17")).await;
    let no_key = create(addr, "Test Item", None).await;

    assert_eq!(first.status, 201);
    assert_eq!(again.status, 201);
    assert_eq!(
        again.json(),
        first.json(),
        "the same item, created_at included"
    );
    assert_eq!(again.header("location"), first.header("location"));
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(first.header("idempotent-replayed"), None);
    assert_eq!(other_body.status, 422, "{}", other_body.body);
    assert_eq!(
        other_body.json()["error"],
        "this Idempotency-Key was used with a different request body"
    );
    assert_eq!(no_key.status, 201, "without a key, POST creates as before");
    assert_eq!(
        listed_ids(addr).await.len(),
        2,
        "one item per key, one without"
    );
    testkit::assert_transcript!(
        "step07_idempotent_replay",
        fixed_time(again),
        &format!(
            "{CURL} -H 'Idempotency-Key: order-17' localhost:8080/api/items -d '{{\"name\":\"Test Item\"}}'   # again"
        )
    );
}
// ANCHOR_END: idempotency

#[tokio::test]
async fn a_key_still_in_flight_gets_409_and_bad_keys_get_400() {
    let Some(db) = postgres::database() else {
        return;
    };
    let (addr, store) = in_process(&db.url, &[]).await;
    // Another request with the same key, on some instance, is half-way through its
    // transaction: it holds the key's lock.
    let mut other = store.pool().acquire().await.expect("a connection");
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(key_lock_id("order-18"))
        .execute(&mut *other)
        .await
        .expect("lock");

    let busy = create(addr, "Test Item", Some("order-18")).await;
    let empty = create(addr, "Test Item", Some("\"\"")).await;
    let long = create(addr, "Test Item", Some(&"k".repeat(256))).await;

    assert_eq!(busy.status, 409, "{}", busy.body);
    assert_eq!(empty.status, 400, "{}", empty.body);
    assert_eq!(long.status, 400, "{}", long.body);
    assert_eq!(
        listed_ids(addr).await.len(),
        0,
        "none of them created anything"
    );
    drop(other);
}

// ANCHOR: readiness
#[tokio::test]
async fn readiness_waits_for_the_schema_while_liveness_answers_throughout() {
    let Some(db) = postgres::database() else {
        return;
    };
    // A separate job migrates (DB_MIGRATE=0), and has not run yet.
    let server = Binary::start(BIN, &[("DATABASE_URL", &db.url), ("DB_MIGRATE", "0")]).await;
    let addr = server.addr;

    let before = get(addr, "/readyz").await;
    let alive = get(addr, "/healthz").await;
    let config =
        DbConfig::from_lookup(testkit::env_from(&[("DATABASE_URL", &db.url)])).expect("valid");
    db::migrate(&config).await.expect("the job migrates");

    assert_eq!(
        (before.status.as_u16(), before.json()["status"].clone()),
        (503, "starting".into())
    );
    assert_eq!(alive.status, 200);
    ready(&server).await;
    assert_eq!(create(addr, "after", None).await.status, 201);
}
// ANCHOR_END: readiness

#[tokio::test]
async fn a_bad_database_url_exits_2_without_printing_the_password() {
    let url = "postgres://app:s3cret@db:notaport/items";
    let line = testkit::assert_config_refused(BIN, &[("DATABASE_URL", url)]).await;

    assert!(line.starts_with("step-07: DATABASE_URL"), "{line}");
    assert!(!line.contains("s3cret"), "{line}");
}

#[tokio::test]
async fn a_nul_character_is_a_400_not_a_database_outage() {
    let Some(db) = postgres::database() else {
        return;
    };
    let (addr, _store) = in_process(&db.url, &[]).await;
    let body = r#"{"name":"a\u0000b"}"#;

    let plain = request(addr, Method::POST, "/api/items", &[JSON], body)
        .await
        .expect("POST");
    let keyed = request(
        addr,
        Method::POST,
        "/api/items",
        &[JSON, ("idempotency-key", "k")],
        body,
    )
    .await
    .expect("POST");

    for reply in [plain, keyed] {
        assert_eq!(reply.status, 400, "{}", reply.body);
        assert_eq!(reply.json()["error"], step_07::store::NO_NUL);
    }
    assert_eq!(
        get(addr, "/readyz").await.status,
        503,
        "in-process: no start-up ran"
    );
    assert_eq!(listed_ids(addr).await.len(), 0);
}
