//! What this step's test files share: an in-process server on the memory store (or a test
//! double), a gRPC client, and stores that are slow or down on purpose.
#![allow(dead_code)] // Each test file uses a different part of it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use step_04::Protocols;
use step_04::store::{Item, ItemId, ItemStore, MemoryStore, NewItem, StoreError, StoreFuture};
use step_06::Ops;
use step_08::Grpc;
use step_08::pb::item_service_client::ItemServiceClient;
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint};

/// An in-process server: step 04's REST API and this step's gRPC services on `store`, behind
/// step 06's layers, with HTTP/1.1 and h2c on one port. Ready from the start.
pub struct Server {
    pub addr: SocketAddr,
    pub grpc: Grpc,
    pub ops: Ops,
}

pub async fn start(store: Arc<dyn ItemStore>, settings: &[(&str, &str)]) -> Server {
    let mut config = step_06::Config::from_lookup(testkit::env_from(settings)).expect("valid");
    config.base.protocols = Protocols::Http1AndH2c;
    let (ops, grpc) = (Ops::default(), Grpc::default());
    ops.readiness.set_ready();
    let rest = step_04::api::router(step_04::api::documented_routes(), store.clone(), |_| {});
    let app = step_08::with_grpc(rest, store, &config, &ops, &grpc);
    step_08::health::tell(&ops.readiness, &grpc.health).await;
    tokio::spawn(step_08::health::follow_readiness(
        ops.readiness.clone(),
        grpc.health.clone(),
    ));
    let base = config.base.clone();
    let addr = testkit::spawn_in_process(move |listener| async move {
        step_04::serve(listener, app, &base, std::future::pending()).await
    })
    .await;
    Server { addr, grpc, ops }
}

/// A server on a memory store of `max_items`.
pub async fn start_memory(
    max_items: usize,
    settings: &[(&str, &str)],
) -> (Server, Arc<MemoryStore>) {
    let store = Arc::new(MemoryStore::new(max_items));
    (start(store.clone(), settings).await, store)
}

/// A connection (HTTP/2, no TLS) to `addr`. The windows are HTTP/2's defaults, 64 KiB, so a
/// client that stops reading stops the server's sending soon.
pub async fn channel(addr: SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .expect("a valid URI")
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect()
        .await
        .expect("connects")
}

pub async fn client(addr: SocketAddr) -> ItemServiceClient<Channel> {
    ItemServiceClient::new(channel(addr).await)
}

/// A server with 2000 items of about 2 KB each (far more than the connection's buffers hold),
/// and a `ListItems` stream on it whose first item has been read: the server's stream task is
/// still sending. The client is returned too, so its connection lives as long as the test.
pub async fn a_long_stream() -> (
    Server,
    ItemServiceClient<Channel>,
    tonic::Streaming<step_08::pb::Item>,
) {
    let (server, store) = start_memory(2000, &[]).await;
    fill(&store, 2000).await;
    let mut items = client(server.addr).await;
    let mut stream = items
        .list_items(step_08::pb::ListItemsRequest::default())
        .await
        .expect("a stream")
        .into_inner();
    stream
        .message()
        .await
        .expect("no error")
        .expect("a first item");
    (server, items, stream)
}

/// Stores `count` items whose descriptions are as long as allowed, straight into `store`.
pub async fn fill(store: &MemoryStore, count: usize) {
    for n in 0..count {
        let new = NewItem {
            name: format!("item {n}"),
            description: "d".repeat(step_04::MAX_DESCRIPTION_CHARS),
        };
        store.create(new).await.expect("room");
    }
}

/// A store whose `get` takes `work` and counts how its calls end: the deadline tests watch
/// the server's work stop.
pub struct SlowStore {
    pub work: Duration,
    pub started: AtomicU64,
    pub finished: AtomicU64,
    pub cancelled: Arc<AtomicU64>,
}

impl SlowStore {
    pub fn new(work: Duration) -> Arc<SlowStore> {
        Arc::new(SlowStore {
            work,
            started: AtomicU64::new(0),
            finished: AtomicU64::new(0),
            cancelled: Arc::new(AtomicU64::new(0)),
        })
    }

    pub fn count(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Counts a cancellation when dropped before `finish`.
struct Cancelled(Option<Arc<AtomicU64>>);

impl Drop for Cancelled {
    fn drop(&mut self) {
        if let Some(counter) = self.0.take() {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl ItemStore for SlowStore {
    fn create(&self, _new: NewItem) -> StoreFuture<'_, Arc<Item>> {
        Box::pin(async { Err(StoreError::Unavailable("read-only".into())) })
    }

    fn get(&self, _id: ItemId) -> StoreFuture<'_, Option<Arc<Item>>> {
        Box::pin(async move {
            self.started.fetch_add(1, Ordering::Relaxed);
            let mut guard = Cancelled(Some(self.cancelled.clone()));
            // The work: dropped here if the call is given up.
            tokio::time::sleep(self.work).await;
            guard.0 = None;
            self.finished.fetch_add(1, Ordering::Relaxed);
            Ok(None)
        })
    }

    fn list(&self) -> StoreFuture<'_, Vec<Arc<Item>>> {
        Box::pin(async { Ok(Vec::new()) })
    }
}

/// A store whose backend is down: every call fails as step 07's does without its database.
pub struct DownStore;

impl ItemStore for DownStore {
    fn create(&self, _new: NewItem) -> StoreFuture<'_, Arc<Item>> {
        Box::pin(async { Err(StoreError::Unavailable("connection refused".into())) })
    }

    fn get(&self, _id: ItemId) -> StoreFuture<'_, Option<Arc<Item>>> {
        Box::pin(async { Err(StoreError::Unavailable("connection refused".into())) })
    }

    fn list(&self) -> StoreFuture<'_, Vec<Arc<Item>>> {
        Box::pin(async { Err(StoreError::Unavailable("connection refused".into())) })
    }
}

/// One request over HTTP/2 with prior knowledge (h2c), as `curl --http2-prior-knowledge`
/// sends it: no upgrade, the HTTP/2 preface straight away.
pub async fn h2c(
    addr: std::net::SocketAddr,
    request: http::Request<Full<Bytes>>,
) -> http::Response<hyper::body::Incoming> {
    let stream = TcpStream::connect(addr).await.expect("connects");
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("an HTTP/2 handshake");
    // Does the connection's I/O until the exchange is over.
    tokio::spawn(connection);
    let (mut parts, body) = request.into_parts();
    parts.uri = format!("http://{addr}{}", parts.uri)
        .parse()
        .expect("a URI");
    sender
        .send_request(http::Request::from_parts(parts, body))
        .await
        .expect("a response")
}
