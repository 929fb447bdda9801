//! Step 07: a real database.
//!
//! Step 06's service (same HTTP contract, probes, logs and shedding, reached through
//! `step_06::`) with its items in PostgreSQL behind step 04's `ItemStore` trait: ids unique
//! across instances, items that survive a crash, idempotent creation with `Idempotency-Key`,
//! readiness that follows the database, and fast 503s while it is slow or gone.
#![forbid(unsafe_code)]

pub mod api;
pub mod db;
pub mod store;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::{Extension, Router};
use sqlx::PgPool;
use step_06::{Ops, Readiness, RunError};
use tokio::net::TcpListener;
use utoipa_axum::routes;

use crate::db::{DbConfig, DbHealth};
use crate::store::PgStore;

/// How often each instance pings its database for `/readyz` (never once per probe).
pub const HEALTH_CHECK_EVERY: Duration = Duration::from_secs(2);
/// How long that ping may take before the database counts as unreachable.
pub const PING_TIMEOUT: Duration = Duration::from_secs(1);
/// How often each instance deletes expired idempotency keys.
pub const PURGE_EVERY: Duration = Duration::from_secs(10 * 60);
/// How often start-up retries while the database is down or not migrated yet.
pub const STARTUP_RETRY_EVERY: Duration = Duration::from_secs(1);

// ANCHOR: config
/// Step 06's configuration plus the database's.
#[derive(Debug, Clone)]
pub struct Config {
    /// Everything step 06 reads (`PORT`, timeouts, `MAX_CONCURRENCY`, logging, …). Its
    /// `MAX_ITEMS` no longer applies: the database's disk is sized separately.
    pub base: step_06::Config,
    /// `DATABASE_URL`, the pool and the migrations (see `db.rs`).
    pub db: DbConfig,
}

impl Config {
    /// Reads both through `lookup`; the first bad variable is the one-line error.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, String> {
        Ok(Config {
            base: step_06::Config::from_lookup(&lookup)?,
            db: DbConfig::from_lookup(&lookup)?,
        })
    }
}
// ANCHOR_END: config

// ANCHOR: app
/// Step 04's read routes, this step's idempotent `POST /api/items`, and step 06's production
/// layers around them.
pub fn app(config: &Config, store: Arc<PgStore>, ops: &Ops) -> Router {
    step_06::production(routes(store, document), &config.base, ops)
}

/// The REST API on `store`, before step 06's layers go on (a later step adds beside it),
/// with its OpenAPI document as `edit` leaves it.
pub fn routes(store: Arc<PgStore>, edit: impl FnOnce(&mut utoipa::openapi::OpenApi)) -> Router {
    let routes = step_04::api::read_routes().routes(routes!(api::create_item));
    step_04::api::router(routes, store.clone(), edit)
        // The create handler needs the store's own type, not only the `ItemStore` trait, for
        // its one-transaction idempotent create.
        .layer(Extension(store))
}

/// Step 06's document, renamed; the 503 entries now also cover an unreachable database, and
/// the request schema says that PostgreSQL's `text` cannot hold U+0000.
pub fn document(openapi: &mut utoipa::openapi::OpenApi) {
    step_06::document(openapi);
    forbid_nul(openapi);
    openapi.info.title = "step-07 items".into();
    openapi.info.description = Some(
        "The item service of cloud-run-rust, step 07: items in PostgreSQL. Ids are unique and \
         increasing across instances, with gaps."
            .into(),
    );
}
// ANCHOR_END: app

// ANCHOR: run
/// Serves until `signal`, then drains, as step 06 does. Start-up work is the database's: wait
/// for it and migrate (`DB_MIGRATE`); meanwhile `/healthz` answers and `/readyz` says 503.
/// Afterwards `/readyz` follows the database, pinged in the background.
pub async fn run(
    listener: TcpListener,
    config: Config,
    ops: Ops,
    signal: impl Future<Output = &'static str> + Send + 'static,
) -> Result<(), RunError> {
    run_with(listener, config, ops, signal, app).await
}

/// [`run`], serving what `build` makes of the store instead of [`app`] (a later step adds
/// routes beside the REST API).
pub async fn run_with(
    listener: TcpListener,
    config: Config,
    ops: Ops,
    signal: impl Future<Output = &'static str> + Send + 'static,
    build: impl FnOnce(&Config, Arc<PgStore>, &Ops) -> Router,
) -> Result<(), RunError> {
    // Lazy: opening no connection here is what lets the process start while the database is
    // down (liveness keeps answering; readiness waits).
    let pool = config.db.pool();
    let store = Arc::new(PgStore::new(pool.clone(), config.db.idempotency_key_ttl));
    let store_for_purge = store.clone();
    let app = build(&config, store, &ops);

    let health = DbHealth::default();
    let startup = {
        let (db, pool, health) = (config.db.clone(), pool.clone(), health.clone());
        // Retries until the schema is current; `run_app` marks the instance ready after it.
        async move { db::prepare(&db, &pool, &health, STARTUP_RETRY_EVERY).await }
    };
    // Runs for the life of the process: readiness goes to 503 when the database goes, and
    // back when it returns, without a restart.
    let follower = tokio::spawn(follow_database(pool.clone(), health, ops.readiness.clone()));
    // Forgets expired `Idempotency-Key`s now and then, so the table stays the size of a day.
    let purger = tokio::spawn(purge_expired_keys(store_for_purge));

    let outcome = step_06::run_app(listener, app, config.base, ops, startup, signal).await;
    follower.abort();
    purger.abort();
    // Every request is done: close the connections politely, so the database does not keep
    // their server processes around until it notices the instance is gone.
    pool.close().await;
    outcome
}

/// Deletes expired idempotency keys every [`PURGE_EVERY`] (one indexed `DELETE` per instance;
/// a key past its time is already ignored, so this only keeps the table small).
async fn purge_expired_keys(store: Arc<PgStore>) {
    // The first purge one period after start: by then the schema is surely there.
    let first = tokio::time::Instant::now() + PURGE_EVERY;
    let mut ticks = tokio::time::interval_at(first, PURGE_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // Sleeps until the next tick.
        ticks.tick().await;
        match store.purge_expired_keys().await {
            Ok(0) => {}
            Ok(purged) => tracing::info!(purged, "expired idempotency keys deleted"),
            Err(error) => tracing::warn!(?error, "could not delete expired idempotency keys"),
        }
    }
}

/// Pings the database every [`HEALTH_CHECK_EVERY`] and moves readiness with the answer.
async fn follow_database(pool: PgPool, health: DbHealth, readiness: Readiness) {
    let mut ticks = tokio::time::interval(HEALTH_CHECK_EVERY);
    // After a stall (CPU throttled between requests on Cloud Run), one ping, not a burst.
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // Sleeps until the next tick (the first is immediate).
        ticks.tick().await;
        // Bounded by `PING_TIMEOUT`: a database that accepts but never answers reads as down.
        match db::check(&pool, PING_TIMEOUT).await {
            // Not before the schema is current: start-up work decides that.
            Some(true) if health.is_migrated() => readiness.set_ready(),
            Some(true) => {}
            Some(false) => readiness.set_unavailable(),
            // Every connection busy serving requests: a busy database is not a gone one, and
            // turning every instance away at peak load would make it one.
            None => {}
        }
    }
}
// ANCHOR_END: run

/// `name` and `description` of `CreateItem` may not contain U+0000 (see `store::NO_NUL`).
fn forbid_nul(openapi: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{RefOr, Schema};
    // Step 04's rule for `name` (at least one character that is not whitespace), and no NUL.
    const NAME: &str = r"^[^\u0000]*[^\u0000\t\n\v\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\u0000]*$";
    const DESCRIPTION: &str = r"^[^\u0000]*$";
    let Some(components) = openapi.components.as_mut() else {
        return;
    };
    let Some(RefOr::T(Schema::Object(create))) = components.schemas.get_mut("CreateItem") else {
        return;
    };
    for (field, pattern) in [("name", NAME), ("description", DESCRIPTION)] {
        if let Some(RefOr::T(Schema::Object(property))) = create.properties.get_mut(field) {
            property.pattern = Some(pattern.into());
        }
    }
}
