//! Step 09: calling another service without falling over.
//!
//! Step 08's service (REST and gRPC on one port, PostgreSQL, probes, logs, shedding, drain)
//! whose items gain an optional stock figure from an inventory service at `UPSTREAM_URL`.
//! The item is always answered; the stock only when the inventory answers in time.
//!
//! - [`upstream`] holds the one pooled client and the defences around each call: a deadline
//!   from what the request has left, a bulkhead, the breaker, retries within a budget;
//! - [`breaker`] is the circuit breaker, by hand;
//! - [`retry`] says which calls and failures are retried, how long to wait, and how many;
//! - [`stock`] puts the figure on `GET /api/items/{id}` and gRPC `GetItem`, or says
//!   `X-Degraded: stock`.
//!
//! `src/bin/inventory.rs` is an inventory to call, which can be told to fail, hang or be slow.
#![forbid(unsafe_code)]

pub mod breaker;
pub mod retry;
pub mod stock;
pub mod upstream;

use std::future::Future;
use std::sync::Arc;

use axum::{Extension, Router};
use step_04::store::ItemStore;
use step_06::{Ops, RunError};
use step_07::store::PgStore;
use step_08::Grpc;
use step_08::service::Items;
use tokio::net::TcpListener;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::stock::{Stock, StockedItems};
use crate::upstream::{Upstream, UpstreamConfig};

// ANCHOR: config
/// Step 08's configuration plus the upstream's.
#[derive(Debug, Clone)]
pub struct Config {
    /// Everything step 08 reads (step 07's, with HTTP/2 on).
    pub base: step_07::Config,
    /// `UPSTREAM_URL`, `UPSTREAM_TIMEOUT`, `UPSTREAM_MAX_CONCURRENCY`, `BREAKER_FAILURES`,
    /// `BREAKER_COOLDOWN`, `BREAKER_ENABLED`, `RETRY_BUDGET_ENABLED`.
    pub upstream: UpstreamConfig,
}

pub fn config_from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, String> {
    Ok(Config {
        base: step_08::config_from_lookup(&lookup)?,
        upstream: UpstreamConfig::from_lookup(&lookup)?,
    })
}

impl Config {
    /// The client, built once for the life of the process (none without `UPSTREAM_URL`).
    pub fn stock(&self) -> Stock {
        self.stock_with(|client| client)
    }

    /// [`Config::stock`], with `finish` applied to the client first (step 10 adds an observer).
    pub fn stock_with(&self, finish: impl FnOnce(Upstream) -> Upstream) -> Stock {
        let url = self.upstream.url.as_deref();
        Stock(url.map(|url| Arc::new(finish(Upstream::new(url, self.upstream.settings)))))
    }
}
// ANCHOR_END: config

// ANCHOR: app
/// Step 08's service, with `GET /api/items/{id}` and gRPC `GetItem` answered by this step.
pub fn app(
    config: &step_07::Config,
    store: Arc<PgStore>,
    ops: &Ops,
    grpc: &Grpc,
    stock: &Stock,
) -> Router {
    app_with(config, store.clone(), store, document, ops, grpc, stock)
}

/// [`app`], with the handlers reaching `store` through `items` (a later step's wrapper around
/// it) and the API described by `document`.
pub fn app_with(
    config: &step_07::Config,
    store: Arc<PgStore>,
    items: Arc<dyn ItemStore>,
    document: fn(&mut utoipa::openapi::OpenApi),
    ops: &Ops,
    grpc: &Grpc,
    stock: &Stock,
) -> Router {
    let routes = read_routes().routes(routes!(step_07::api::create_item));
    let rest = step_04::api::router(routes, items.clone(), document)
        // As in step 07: its create handler needs the store's own type.
        .layer(Extension(store));
    with_grpc(rest, items, &config.base, ops, grpc, stock)
}

/// Step 04's read routes with this step's `GET /api/items/{id}`.
pub fn read_routes() -> OpenApiRouter<step_04::api::AppState> {
    step_04::api::read_routes_but_get_item().routes(routes!(stock::get_item))
}

/// Any REST router and step 08's gRPC services on `store`, with `stock` for both.
pub fn with_grpc(
    rest: Router,
    store: Arc<dyn ItemStore>,
    config: &step_06::Config,
    ops: &Ops,
    grpc: &Grpc,
    stock: &Stock,
) -> Router {
    let items = Items::new(
        store,
        config.base.request_timeout,
        grpc.draining.clone(),
        grpc.streams.clone(),
    );
    let items = StockedItems::new(items, stock.clone());
    step_08::with_item_service(
        rest.layer(Extension(stock.clone())),
        items,
        config,
        ops,
        grpc,
    )
}

/// Step 06's document, renamed.
fn document(openapi: &mut utoipa::openapi::OpenApi) {
    step_07::document(openapi);
    openapi.info.title = "step-09 items".into();
    openapi.info.description = Some(
        "The item service of cloud-run-rust, step 09: step 08's, with each item's stock from \
         an inventory service when it answers in time."
            .into(),
    );
}
// ANCHOR_END: app

// ANCHOR: run
/// Serves step 08's service with this step's answers until `signal`, then drains.
pub async fn run(
    listener: TcpListener,
    config: Config,
    ops: Ops,
    grpc: Grpc,
    signal: impl Future<Output = &'static str> + Send + 'static,
) -> Result<(), RunError> {
    // One client for the process, whatever the number of requests (the Go article's leaked
    // connections come from a client made per request).
    let stock = config.stock();
    match &config.upstream.url {
        Some(url) => tracing::info!(url, settings = ?config.upstream.settings, "inventory"),
        None => tracing::info!("no UPSTREAM_URL: items carry no stock"),
    }
    let build = move |base: &step_07::Config, store: Arc<PgStore>, ops: &Ops, grpc: &Grpc| {
        app(base, store, ops, grpc, &stock)
    };
    step_08::run_with(listener, config.base, ops, grpc, signal, build).await
}
// ANCHOR_END: run
