//! What this step's tests share: testkit's scripted upstream on a real socket, a client for
//! it, and this step's service in-process on the memory store.
#![allow(dead_code)] // Each test file uses a different part of it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use step_04::Protocols;
use step_04::store::{ItemStore, MemoryStore, NewItem};
use step_06::Ops;
use step_08::Grpc;
use step_09::breaker::BreakerSettings;
use step_09::stock::Stock;
use step_09::upstream::{Settings, Upstream};
pub use testkit::upstream::{Answer, Scripted};

/// A client for `upstream` with `settings`, as the service builds it once.
pub fn client(upstream: &Scripted, settings: Settings) -> Arc<Upstream> {
    Arc::new(Upstream::new(&upstream.url, settings))
}

/// This step's service in-process: REST and gRPC on a memory store holding one item
/// (`item-1`), configured with `settings`.
pub async fn start(settings: &[(&str, &str)]) -> SocketAddr {
    let mut pairs = vec![("DATABASE_URL", "postgres://unused@localhost/unused")];
    pairs.extend_from_slice(settings);
    let config = step_09::config_from_lookup(testkit::env_from(&pairs)).expect("valid");
    let stock: Stock = config.stock();
    let mut base = config.base.base;
    base.base.protocols = Protocols::Http1AndH2c;
    let store = Arc::new(MemoryStore::new(10));
    let new = NewItem {
        name: "Test Item".into(),
        description: "A test".into(),
    };
    store.create(new).await.expect("room");
    let (ops, grpc) = (Ops::default(), Grpc::default());
    ops.readiness.set_ready();
    let rest = step_04::api::router(step_09::read_routes(), store.clone(), |_| {});
    let app = step_09::with_grpc(rest, store, &base, &ops, &grpc, &stock);
    let listen = base.base.clone();
    testkit::spawn_in_process(move |listener| async move {
        step_04::serve(listener, app, &listen, std::future::pending()).await
    })
    .await
}

/// Settings for client tests: a 5 s limit, the default retries, a breaker that never opens.
pub fn settings() -> Settings {
    let defaults = Settings::default();
    Settings {
        timeout: Duration::from_secs(5),
        breaker: BreakerSettings {
            failures: 1_000_000,
            ..defaults.breaker
        },
        ..defaults
    }
}
