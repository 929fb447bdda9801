//! The PostgreSQL store against a real PostgreSQL (started by testkit; see
//! `tests/src/postgres.rs`): ids across instances, a busy pool, an outage, idempotency,
//! migrations racing, readiness.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::PgPool;
use step_04::store::{Item, ItemId, ItemStore, NewItem, StoreError};
use step_07::db::{self, DbConfig, DbHealth};
use step_07::store::{Fingerprint, IdempotentOutcome, PgStore};
use testkit::postgres::{self, TestDatabase};

fn new_item(name: &str) -> NewItem {
    NewItem {
        name: name.into(),
        description: format!("about {name}"),
    }
}

fn config(url: &str, settings: &[(&str, &str)]) -> DbConfig {
    let mut pairs = vec![("DATABASE_URL", url)];
    pairs.extend_from_slice(settings);
    DbConfig::from_lookup(testkit::env_from(&pairs)).expect("valid configuration")
}

/// A migrated database and a store on it, as one instance of the service would have.
async fn instance(db: &TestDatabase, settings: &[(&str, &str)]) -> PgStore {
    instance_at(&db.url, settings).await
}

async fn instance_at(url: &str, settings: &[(&str, &str)]) -> PgStore {
    let config = config(url, settings);
    db::migrate(&config).await.expect("migrations apply");
    PgStore::new(config.pool(), config.idempotency_key_ttl)
}

async fn count(pool: &PgPool, table: &str) -> i64 {
    let sql = match table {
        "items" => "SELECT count(*) FROM items",
        _ => "SELECT count(*) FROM idempotency_keys",
    };
    sqlx::query_scalar(sql)
        .fetch_one(pool)
        .await
        .expect("count")
}

fn ids(items: &[Arc<Item>]) -> Vec<u64> {
    items.iter().map(|i| i.id.0).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_get_unique_ids_and_list_the_same_items() {
    let Some(db) = postgres::database() else {
        return;
    };
    // Two pools: two instances of the service on one database.
    let a = instance(&db, &[]).await;
    let b = instance(&db, &[]).await;

    let mut creating = Vec::new();
    for n in 0..60 {
        let store = if n % 2 == 0 { a.clone() } else { b.clone() };
        creating.push(tokio::spawn(async move {
            store.create(new_item(&format!("item {n}"))).await
        }));
    }
    let mut created = Vec::new();
    for task in creating {
        created.push(task.await.expect("no panic").expect("created"));
    }

    let unique: HashSet<u64> = ids(&created).into_iter().collect();
    assert_eq!(unique.len(), 60, "duplicate ids: {:?}", ids(&created));
    let (seen_by_a, seen_by_b) = (a.list().await.unwrap(), b.list().await.unwrap());
    assert_eq!(seen_by_a, seen_by_b);
    assert_eq!(seen_by_a.len(), 60);
    let listed = ids(&seen_by_a);
    assert!(listed.is_sorted(), "not in creation order: {listed:?}");
}

#[tokio::test]
async fn items_round_trip_with_microsecond_timestamps() {
    let Some(db) = postgres::database() else {
        return;
    };
    let store = instance(&db, &[]).await;

    let created = store.create(new_item("Test Item")).await.unwrap();
    let fetched = store.get(created.id).await.unwrap();

    assert_eq!(fetched.as_deref(), Some(&*created));
    assert_eq!(created.created_at.nanosecond() % 1000, 0);
    let age = time::OffsetDateTime::now_utc() - created.created_at;
    assert!(
        age.abs() < time::Duration::minutes(1),
        "created_at {}",
        created.created_at
    );
    assert_eq!(store.get(ItemId(created.id.0 + 1)).await, Ok(None));
    assert_eq!(store.get(ItemId(u64::MAX)).await, Ok(None));
}

#[tokio::test]
async fn the_cloud_sql_style_unix_socket_url_works() {
    let Some(db) = postgres::database() else {
        return;
    };
    // `postgres://user:pass@/db?host=/dir`: no host, the socket directory as a parameter, and
    // a password (ignored by this test server) as Cloud Run's secret would carry.
    let Some(socket_url) = db.socket_url.as_deref() else {
        return; // a DATABASE_URL server: no socket of ours to use
    };
    let with_password = socket_url.replacen("postgres@/", "postgres:secret@/", 1);
    let store = instance_at(&with_password, &[]).await;

    let created = store.create(new_item("over the socket")).await.unwrap();

    assert_eq!(store.list().await.unwrap(), vec![created]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_held_by_a_slow_query_answers_unavailable_within_the_acquire_timeout() {
    let Some(db) = postgres::database() else {
        return;
    };
    let store = instance(
        &db,
        &[("DB_MAX_CONNECTIONS", "1"), ("DB_ACQUIRE_TIMEOUT", "500ms")],
    )
    .await;
    // The pool's only connection, busy for longer than the test lasts.
    let mut held = store.pool().acquire().await.expect("the one connection");
    let slow =
        tokio::spawn(async move { sqlx::query("SELECT pg_sleep(4)").execute(&mut *held).await });
    tokio::time::sleep(Duration::from_millis(100)).await;

    for attempt in ["get", "create"] {
        let started = Instant::now();
        let result = match attempt {
            "get" => store.get(ItemId(1)).await.map(|_| ()),
            _ => store.create(new_item("waits")).await.map(|_| ()),
        };
        let waited = started.elapsed();

        assert!(
            matches!(&result, Err(StoreError::Unavailable(reason)) if reason.contains("DB_ACQUIRE_TIMEOUT")),
            "{attempt}: {result:?}"
        );
        assert!(
            waited >= Duration::from_millis(400) && waited < Duration::from_millis(2500),
            "{attempt} answered after {waited:?}, not about the 500 ms acquire timeout"
        );
    }
    slow.abort();
}

#[tokio::test]
async fn a_stopped_database_is_unavailable_fast_then_the_same_pool_recovers() {
    let Some(server) = postgres::Server::start() else {
        return;
    };
    let db = server.database();
    let store = instance(&db, &[("DB_ACQUIRE_TIMEOUT", "500ms")]).await;
    let item = store.create(new_item("survives")).await.unwrap();

    server.stop();
    // The first call may find a pooled connection the server just closed; the next ones must
    // open a new one and are refused. Each gives up within the acquire timeout.
    for _ in 0..3 {
        let started = Instant::now();
        let result = store.get(item.id).await;
        assert!(
            matches!(result, Err(StoreError::Unavailable(_))),
            "{result:?}"
        );
        assert!(
            started.elapsed() < Duration::from_millis(2500),
            "took {:?}",
            started.elapsed()
        );
    }

    server.restart();
    let back = testkit::eventually(
        "the store answers again once the database is back",
        async || store.get(item.id).await,
        |result| result.is_ok(),
    )
    .await;
    assert_eq!(back, Ok(Some(item)));
    let created = store.create(new_item("after the outage")).await;
    assert!(created.is_ok(), "{created:?}");
}

#[tokio::test]
async fn the_watcher_follows_the_database_down_and_up() {
    let Some(server) = postgres::Server::start() else {
        return;
    };
    let db = server.database();
    let config = config(&db.url, &[("DB_ACQUIRE_TIMEOUT", "500ms")]);
    let pool = config.pool();
    let health = DbHealth::default();
    let watcher = tokio::spawn(db::watch_database(
        pool.clone(),
        health.clone(),
        Duration::from_millis(100),
        Duration::from_millis(500),
    ));

    testkit::eventually("reachable", async || health.is_reachable(), |r| *r).await;
    server.stop();
    testkit::eventually("unreachable", async || health.is_reachable(), |r| !*r).await;
    assert_eq!(health.problem(), Some("database unreachable"));
    server.restart();
    testkit::eventually("reachable again", async || health.is_reachable(), |r| *r).await;
    watcher.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_pool_does_not_read_as_a_database_down() {
    let Some(db) = postgres::database() else {
        return;
    };
    let config = config(
        &db.url,
        &[("DB_MAX_CONNECTIONS", "1"), ("DB_ACQUIRE_TIMEOUT", "200ms")],
    );
    let pool = config.pool();
    let health = DbHealth::default();
    let watcher = tokio::spawn(db::watch_database(
        pool.clone(),
        health.clone(),
        Duration::from_millis(50),
        Duration::from_millis(200),
    ));
    testkit::eventually("reachable", async || health.is_reachable(), |r| *r).await;

    // Every connection busy (one, here) for longer than several checks.
    let mut held = pool.acquire().await.expect("the one connection");
    let slow =
        tokio::spawn(async move { sqlx::query("SELECT pg_sleep(2)").execute(&mut *held).await });
    let started = Instant::now();
    while !slow.is_finished() && started.elapsed() < Duration::from_millis(1500) {
        assert!(health.is_reachable(), "a busy pool read as a database down");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    watcher.abort();
}

#[tokio::test]
async fn prepare_waits_for_a_database_that_starts_later_then_migrates() {
    let Some(server) = postgres::Server::start() else {
        return;
    };
    let db = server.database();
    let config = config(&db.url, &[("DB_ACQUIRE_TIMEOUT", "500ms")]);
    let pool = config.pool();
    let health = DbHealth::default();
    server.stop();

    let preparing = tokio::spawn({
        let (config, pool, health) = (config.clone(), pool.clone(), health.clone());
        async move { db::prepare(&config, &pool, &health, Duration::from_millis(100)).await }
    });
    // Long enough for a few attempts, each of which gives up after the 500 ms acquire timeout.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!health.is_ready(), "ready while the database is down");
    assert!(!health.is_migrated(), "migrated while the database is down");
    assert!(!preparing.is_finished());

    server.restart();
    tokio::time::timeout(testkit::PATIENCE, preparing)
        .await
        .expect("prepare finishes once the database is up")
        .expect("no panic");
    assert!(health.is_migrated());
    assert!(db::schema_is_current(&pool).await.unwrap());
}

#[tokio::test]
async fn with_db_migrate_off_prepare_waits_for_the_migration_job() {
    let Some(db) = postgres::database() else {
        return;
    };
    let config = config(&db.url, &[("DB_MIGRATE", "0")]);
    let pool = config.pool();
    let health = DbHealth::default();
    let preparing = tokio::spawn({
        let (config, pool, health) = (config.clone(), pool.clone(), health.clone());
        async move { db::prepare(&config, &pool, &health, Duration::from_millis(100)).await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!health.is_migrated(), "migrated without a migration");
    assert_eq!(health.problem(), Some("database not migrated"));
    assert!(!db::schema_is_current(&pool).await.unwrap());

    // The separate job.
    db::migrate(&config).await.expect("the job migrates");

    tokio::time::timeout(testkit::PATIENCE, preparing)
        .await
        .expect("prepare sees the schema")
        .expect("no panic");
    assert!(health.is_ready());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_instances_migrating_at_once_all_succeed() {
    let Some(db) = postgres::database() else {
        return;
    };
    let config = config(&db.url, &[]);

    let mut migrating = Vec::new();
    for _ in 0..10 {
        let config = config.clone();
        migrating.push(tokio::spawn(async move { db::migrate(&config).await }));
    }
    for task in migrating {
        assert_eq!(task.await.expect("no panic"), Ok(()));
    }

    let pool = config.pool();
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(applied, db::migrator().iter().count() as i64);
    assert!(db::schema_is_current(&pool).await.unwrap());
}

#[tokio::test]
async fn a_repeated_key_with_the_same_body_replays_the_first_item() {
    let Some(db) = postgres::database() else {
        return;
    };
    let store = instance(&db, &[]).await;
    let new = new_item("once");
    let fingerprint = Fingerprint::of(&new);

    let first = store
        .create_idempotent("key-1", &fingerprint, new.clone())
        .await
        .unwrap();
    let again = store
        .create_idempotent("key-1", &fingerprint, new.clone())
        .await
        .unwrap();

    let IdempotentOutcome::Created(item) = first else {
        panic!("first use: {first:?}")
    };
    assert_eq!(again, IdempotentOutcome::Replayed(item));
    assert_eq!(count(store.pool(), "items").await, 1);
}

#[tokio::test]
async fn a_repeated_key_with_another_body_is_a_mismatch() {
    let Some(db) = postgres::database() else {
        return;
    };
    let store = instance(&db, &[]).await;
    let (one, other) = (new_item("one"), new_item("other"));
    store
        .create_idempotent("key-1", &Fingerprint::of(&one), one)
        .await
        .unwrap();

    let outcome = store
        .create_idempotent("key-1", &Fingerprint::of(&other), other)
        .await
        .unwrap();

    assert_eq!(outcome, IdempotentOutcome::Mismatch);
    assert_eq!(count(store.pool(), "items").await, 1);
}

#[tokio::test]
async fn a_key_still_in_flight_is_refused_at_once() {
    let Some(db) = postgres::database() else {
        return;
    };
    let store = instance(&db, &[]).await;
    let new = new_item("busy");
    // Another request with the same key, on another instance, mid-transaction: it holds the
    // key's lock, as `create_idempotent` does until it commits.
    let other_instance = instance(&db, &[]).await;
    let mut in_flight = other_instance.pool().begin().await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(step_07::store::key_lock_id("key-1"))
        .execute(&mut *in_flight)
        .await
        .unwrap();

    let started = Instant::now();
    let outcome = store
        .create_idempotent("key-1", &Fingerprint::of(&new), new.clone())
        .await
        .unwrap();

    assert_eq!(outcome, IdempotentOutcome::InFlight);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "waited for the lock"
    );
    assert_eq!(count(store.pool(), "items").await, 0);
    in_flight.rollback().await.unwrap();
    let after = store
        .create_idempotent("key-1", &Fingerprint::of(&new), new)
        .await
        .unwrap();
    assert!(matches!(after, IdempotentOutcome::Created(_)), "{after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_with_one_key_create_one_item() {
    let Some(db) = postgres::database() else {
        return;
    };
    let stores = [instance(&db, &[]).await, instance(&db, &[]).await];
    let new = new_item("raced");
    let fingerprint = Fingerprint::of(&new);

    let mut racing = Vec::new();
    for n in 0..20 {
        let (store, new) = (stores[n % 2].clone(), new.clone());
        racing.push(tokio::spawn(async move {
            store
                .create_idempotent("raced-key", &fingerprint, new)
                .await
        }));
    }
    let mut outcomes = Vec::new();
    for task in racing {
        outcomes.push(task.await.expect("no panic").expect("no store error"));
    }

    let created: Vec<_> = outcomes
        .iter()
        .filter_map(|o| match o {
            IdempotentOutcome::Created(item) => Some(item.id),
            _ => None,
        })
        .collect();
    assert_eq!(created.len(), 1, "{outcomes:?}");
    for outcome in &outcomes {
        match outcome {
            IdempotentOutcome::Created(_) | IdempotentOutcome::InFlight => {}
            IdempotentOutcome::Replayed(item) => assert_eq!(item.id, created[0]),
            IdempotentOutcome::Mismatch => panic!("same body, mismatch: {outcomes:?}"),
        }
    }
    assert_eq!(count(stores[0].pool(), "items").await, 1);
    assert_eq!(count(stores[0].pool(), "keys").await, 1);
}

#[tokio::test]
async fn an_expired_key_is_new_again() {
    let Some(db) = postgres::database() else {
        return;
    };
    let store = instance(&db, &[("IDEMPOTENCY_KEY_TTL", "50ms")]).await;
    let (one, other) = (new_item("one"), new_item("other"));
    store
        .create_idempotent("key-1", &Fingerprint::of(&one), one)
        .await
        .unwrap();
    // Comfortably past the 50 ms the key is remembered for.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let outcome = store
        .create_idempotent("key-1", &Fingerprint::of(&other), other)
        .await
        .unwrap();

    assert!(
        matches!(&outcome, IdempotentOutcome::Created(item) if item.name == "other"),
        "{outcome:?}"
    );
    assert_eq!(count(store.pool(), "items").await, 2);
    assert_eq!(count(store.pool(), "keys").await, 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(store.purge_expired_keys().await, Ok(1));
    assert_eq!(count(store.pool(), "keys").await, 0);
}
