//! Step 08: gRPC beside REST, on one port.
//!
//! Step 07's service (REST API, PostgreSQL store, probes, logs, shedding, drain) plus
//! `items.v1.ItemService` over gRPC, served by the same accept loop on the same `$PORT`:
//! HTTP/1.1 for REST, HTTP/2 without TLS (h2c) for gRPC, and REST over h2c too, as Cloud Run's
//! end-to-end HTTP/2 sends it. Same store, same validation, same limits and the same refusals
//! in gRPC's words; `grpc-timeout` deadlines; `grpc.health.v1` following `/readyz`; server
//! reflection; streams that end when the server drains.
//!
//! - [`service`] answers the three calls, and feeds `ListItems` streams from a task;
//! - [`status`] turns step 04's errors into gRPC statuses, for the handlers and every layer;
//! - [`deadline`] reads `grpc-timeout`;
//! - [`drain`] ends the streams that would otherwise outlive the drain;
//! - [`health`] answers `grpc.health.v1` from step 06's readiness.
#![forbid(unsafe_code)]

pub mod deadline;
pub mod drain;
pub mod health;
pub mod service;
pub mod status;

/// The code `build.rs` generated from `proto/items/v1/items.proto`.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("items.v1");

    /// The compiled `.proto` file, which server reflection hands to tools such as `grpcurl`.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("items_descriptor");
}

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::response::IntoResponse;
use axum::{Router, middleware};
use step_04::Protocols;
use step_04::store::ItemStore;
use step_06::{Ops, RunError};
use step_07::store::PgStore;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::{HealthReporter, HealthService};
use tower::{Service, ServiceExt};

use crate::pb::item_service_server::{ItemService, ItemServiceServer};
use crate::service::{Items, StreamStats};

// ANCHOR: limits
/// The largest gRPC message accepted or sent, in bytes: REST's body limit. A message is never
/// longer than the same item in JSON (field numbers for names, no escapes), so no request REST
/// accepts is refused here; the longest valid item (2 200 characters of up to 4 bytes each)
/// fits seven times over.
pub const MAX_MESSAGE_BYTES: usize = step_04::MAX_BODY_BYTES;
// ANCHOR_END: limits

// ANCHOR: config
/// Step 07's configuration, unchanged (no new variable), with step 04's accept loop told to
/// speak HTTP/2 as well as HTTP/1.1.
pub fn config_from_lookup(
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<step_07::Config, String> {
    let mut config = step_07::Config::from_lookup(lookup)?;
    config.base.base.protocols = Protocols::Http1AndH2c;
    Ok(config)
}
// ANCHOR_END: config

/// What the gRPC side shares with `run` and the tests.
#[derive(Clone, Default)]
pub struct Grpc {
    /// The statuses `grpc.health.v1` answers with ([`health::follow_readiness`] moves them).
    pub health: HealthReporter,
    /// Cancelled when draining starts: open streams end with `UNAVAILABLE`.
    pub draining: CancellationToken,
    /// How the `ListItems` stream tasks are doing.
    pub streams: Arc<StreamStats>,
}

// ANCHOR: app
/// Step 07's REST API and this step's gRPC services on the same PostgreSQL store.
pub fn app(config: &step_07::Config, store: Arc<PgStore>, ops: &Ops, grpc: &Grpc) -> Router {
    // Step 07's routes, before the production layers go on.
    let rest = step_07::routes(store.clone(), document);
    with_grpc(rest, store, &config.base, ops, grpc)
}

/// Any REST router, and the gRPC services on `store`, behind step 06's production layers:
/// request ids, logs, shedding, deadline and limits apply to both.
pub fn with_grpc(
    rest: Router,
    store: Arc<dyn ItemStore>,
    config: &step_06::Config,
    ops: &Ops,
    grpc: &Grpc,
) -> Router {
    let request_timeout = config.base.request_timeout;
    let items = Items::new(
        store,
        request_timeout,
        grpc.draining.clone(),
        grpc.streams.clone(),
    );
    with_item_service(rest, items, config, ops, grpc)
}

/// [`with_grpc`] with any implementation of `items.v1.ItemService` (a later step wraps
/// [`Items`] to add to its answers).
pub fn with_item_service(
    rest: Router,
    items: impl ItemService,
    config: &step_06::Config,
    ops: &Ops,
    grpc: &Grpc,
) -> Router {
    let request_timeout = config.base.request_timeout;
    let items = ItemServiceServer::new(items)
        // REST's body limit, for messages in and out (tonic's default is 4 MiB in, none out).
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    // Both versions of reflection: `v1` is current, and some tools still ask `v1alpha`. They
    // fail only on descriptor sets that do not decode, and ours are compiled in.
    let v1 = reflection().build_v1().expect("descriptors decode");
    let v1alpha = reflection().build_v1alpha().expect("descriptors decode");
    let services = add(add(add(Router::new(), items), v1), v1alpha);
    let services = grpc_layers(services, request_timeout, grpc);
    // The health service, like `/healthz` and `/readyz`, outside the production layers: never
    // shed (a probe refused by a busy instance gets it restarted when it is working hardest).
    let health = HealthServer::new(HealthService::from_health_reporter(grpc.health.clone()));
    let health = grpc_layers(add(Router::new(), health), request_timeout, grpc);
    step_06::production(rest.merge(services), config, ops)
        .merge(health)
        // Outermost: whatever refused a gRPC call in REST's words, a gRPC status instead.
        .layer(middleware::from_fn(status::grpc_errors))
}

/// The layers only gRPC routes get, innermost first.
fn grpc_layers(routes: Router, request_timeout: Duration, grpc: &Grpc) -> Router {
    routes
        // The client's `grpc-timeout`, within `REQUEST_TIMEOUT`.
        .layer(middleware::from_fn_with_state(
            request_timeout,
            deadline::grpc_deadline,
        ))
        // Streams that would outlive the drain end when it starts.
        .layer(middleware::from_fn_with_state(
            grpc.draining.clone(),
            drain::end_streams_on_drain,
        ))
}

/// `router` plus a gRPC service at `/{package.Service}/{method}`: what tonic's `Routes` does,
/// without the catch-all that would clash with the REST API's JSON 404.
fn add<S>(router: Router, service: S) -> Router
where
    S: Service<http::Request<tonic::body::Body>, Error = Infallible>
        + NamedService
        + Clone
        + Send
        + Sync
        + 'static,
    S::Response: IntoResponse,
    S::Future: Send + 'static,
{
    let path = format!("/{}/{{*method}}", S::NAME);
    // axum hands over its body type; tonic's services take their own, which wraps any body.
    let service =
        service.map_request(|request: axum::extract::Request| request.map(tonic::body::Body::new));
    router.route_service(&path, service)
}
// ANCHOR_END: app

// ANCHOR: reflection
/// Server reflection: what `grpcurl list` and `grpcurl describe` read, for this step's service
/// and the health service.
fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
}
// ANCHOR_END: reflection

/// Step 06's document, renamed.
fn document(openapi: &mut utoipa::openapi::OpenApi) {
    step_06::document(openapi);
    openapi.info.title = "step-08 items".into();
    openapi.info.description = Some(
        "The item service of cloud-run-rust, step 08: items in PostgreSQL, served over REST \
         and, on the same port, over gRPC (items.v1.ItemService)."
            .into(),
    );
}

// ANCHOR: run
/// Serves step 07's service and the gRPC services until `signal`, then drains as step 06
/// does, with open streams ended as draining starts.
pub async fn run(
    listener: TcpListener,
    config: step_07::Config,
    ops: Ops,
    grpc: Grpc,
    signal: impl Future<Output = &'static str> + Send + 'static,
) -> Result<(), RunError> {
    run_with(listener, config, ops, grpc, signal, app).await
}

/// [`run`], serving what `build` makes of the store instead of [`app`] (a later step answers
/// some calls its own way).
pub async fn run_with(
    listener: TcpListener,
    config: step_07::Config,
    ops: Ops,
    grpc: Grpc,
    signal: impl Future<Output = &'static str> + Send + 'static,
    build: impl FnOnce(&step_07::Config, Arc<PgStore>, &Ops, &Grpc) -> Router,
) -> Result<(), RunError> {
    // For the life of the process: the health service says what `/readyz` says, from before
    // the first connection on.
    health::tell(&ops.readiness, &grpc.health).await;
    let follower = tokio::spawn(health::follow_readiness(
        ops.readiness.clone(),
        grpc.health.clone(),
    ));
    let draining = grpc.draining.clone();
    let signal = async move {
        // Sleeps until the platform says stop; then streams are told at once, so none holds
        // its connection (and the process) open past the drain.
        let name = signal.await;
        draining.cancel();
        name
    };
    let build = move |config: &step_07::Config, store: Arc<PgStore>, ops: &Ops| {
        build(config, store, ops, &grpc)
    };
    let outcome = step_07::run_with(listener, config, ops, signal, build).await;
    follower.abort();
    outcome
}
// ANCHOR_END: run
