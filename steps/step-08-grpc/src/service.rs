//! `items.v1.ItemService`: the three calls, on step 04's store and validation.
//!
//! Nothing here knows which store it talks to: the memory store in the tests, step 07's
//! PostgreSQL in the binary. Every refusal is a step 04 [`ApiError`], turned into a gRPC
//! status by [`crate::status::to_status`], so REST and gRPC refuse the same requests with the
//! same words.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use step_04::error::{ApiError, validate};
use step_04::store::{Item, ItemId, ItemStore, NewItem};
use tokio::sync::mpsc;
use tokio::time::{Instant, Sleep};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::{Request, Response, Status};

use crate::deadline::CallDeadline;
use crate::pb;
use crate::pb::item_service_server::ItemService;
use crate::status::{shutting_down, to_status};

/// Items a `ListItems` task may send ahead of the client: enough to keep the connection busy,
/// few enough that a client that stops reading holds up only a little memory.
pub const STREAM_BUFFER: usize = 16;

// ANCHOR: service
/// The gRPC face of the item service.
pub struct Items {
    store: Arc<dyn ItemStore>,
    /// `REQUEST_TIMEOUT`: how long a call may take when the client sets no deadline.
    request_timeout: Duration,
    /// Cancelled when draining starts: open `ListItems` streams end with `UNAVAILABLE`.
    draining: CancellationToken,
    streams: Arc<StreamStats>,
}

impl Items {
    pub fn new(
        store: Arc<dyn ItemStore>,
        request_timeout: Duration,
        draining: CancellationToken,
        streams: Arc<StreamStats>,
    ) -> Items {
        Items {
            store,
            request_timeout,
            draining,
            streams,
        }
    }
}

#[tonic::async_trait]
impl ItemService for Items {
    async fn create_item(
        &self,
        request: Request<pb::CreateItemRequest>,
    ) -> Result<Response<pb::Item>, Status> {
        let pb::CreateItemRequest { name, description } = request.into_inner();
        // The REST handler's checks, word for word.
        validate(&name, &description).map_err(to_status)?;
        // Waits for the store (a database round trip in step 07). If the deadline passes
        // first, the layer around this call drops this future here: nothing after it runs.
        let item = self
            .store
            .create(NewItem { name, description })
            .await
            .map_err(|error| to_status(error.into()))?;
        Ok(Response::new(message(&item)))
    }

    async fn get_item(
        &self,
        request: Request<pb::GetItemRequest>,
    ) -> Result<Response<pb::Item>, Status> {
        // As over REST: a malformed id names no item.
        let not_found = || to_status(ApiError::ItemNotFound);
        let id: ItemId = request.get_ref().id.parse().map_err(|()| not_found())?;
        // Waits for the store; dropped with the call if the deadline passes first.
        match self.store.get(id).await {
            Ok(Some(item)) => Ok(Response::new(message(&item))),
            Ok(None) => Err(not_found()),
            Err(error) => Err(to_status(error.into())),
        }
    }

    type ListItemsStream = ItemStream;

    async fn list_items(
        &self,
        request: Request<pb::ListItemsRequest>,
    ) -> Result<Response<ItemStream>, Status> {
        // The whole stream, not only this first part, must end by the call's deadline.
        let deadline = match request.extensions().get::<CallDeadline>() {
            Some(CallDeadline(at)) => *at,
            None => Instant::now() + self.request_timeout,
        };
        // One query, answered before the stream starts: a store that is down is a plain
        // `UNAVAILABLE`, not a stream that breaks after its first item.
        let items = self
            .store
            .list()
            .await
            .map_err(|error| to_status(error.into()))?;
        let (sender, receiver) = mpsc::channel(STREAM_BUFFER);
        let (draining, stats) = (self.draining.clone(), self.streams.clone());
        // Its own task, so the handler can return the stream at once; the task feeds it, as
        // fast as the client reads, until it is done, the client goes, or time is up.
        tokio::spawn(send_items(items, sender, deadline, draining.clone(), stats));
        Ok(Response::new(ItemStream {
            items: ReceiverStream::new(receiver),
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
            draining: Box::pin(draining.cancelled_owned()),
            ended: false,
        }))
    }
}

/// A stored item as a protobuf message.
pub fn message(item: &Item) -> pb::Item {
    pb::Item {
        id: item.id.to_string(),
        name: item.name.clone(),
        description: item.description.clone(),
        created_at: Some(prost_types::Timestamp {
            seconds: item.created_at.unix_timestamp(),
            nanos: item.created_at.nanosecond() as i32,
        }),
        stock: None,
    }
}
// ANCHOR_END: service

// ANCHOR: stream
/// How `ListItems` stream tasks ended, for the tests and for anyone curious.
#[derive(Debug, Default)]
pub struct StreamStats {
    /// Tasks running now.
    pub running: AtomicU64,
    /// Every item sent.
    pub completed: AtomicU64,
    /// The client went away (or the stream was dropped) before the end.
    pub client_gone: AtomicU64,
    /// The call's deadline passed first.
    pub timed_out: AtomicU64,
    /// Draining began first.
    pub drained: AtomicU64,
}

/// Sends `items` one by one, each waiting until the client has room for it.
async fn send_items(
    items: Vec<Arc<Item>>,
    sender: mpsc::Sender<pb::Item>,
    deadline: Instant,
    draining: CancellationToken,
    stats: Arc<StreamStats>,
) {
    stats.running.fetch_add(1, Ordering::Relaxed);
    let send_all = async {
        for item in &items {
            // Waits while the channel is full, that is while the client is not reading (HTTP/2
            // flow control holds back the rest). Fails once the receiving stream is dropped:
            // the client cancelled or disconnected, and hyper dropped the response.
            if sender.send(message(item)).await.is_err() {
                return &stats.client_gone;
            }
        }
        &stats.completed
    };
    // Whichever comes first. The losers are dropped where they wait: nothing runs on.
    let ended = tokio::select! {
        ended = send_all => ended,
        () = tokio::time::sleep_until(deadline) => &stats.timed_out,
        () = draining.cancelled() => &stats.drained,
    };
    ended.fetch_add(1, Ordering::Relaxed);
    stats.running.fetch_sub(1, Ordering::Relaxed);
}

/// What the client reads: the task's items, or the reason the stream stops early. The
/// reason comes first: after the deadline or once draining, items still queued are not sent.
pub struct ItemStream {
    items: ReceiverStream<pb::Item>,
    deadline: Pin<Box<Sleep>>,
    draining: Pin<Box<WaitForCancellationFutureOwned>>,
    ended: bool,
}

impl Stream for ItemStream {
    type Item = Result<pb::Item, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.ended {
            return Poll::Ready(None);
        }
        let early = if self.draining.as_mut().poll(cx).is_ready() {
            Some(shutting_down())
        } else if self.deadline.as_mut().poll(cx).is_ready() {
            Some(to_status(ApiError::Timeout))
        } else {
            None
        };
        if let Some(status) = early {
            self.ended = true;
            return Poll::Ready(Some(Err(status)));
        }
        // `None` when the task has sent everything and dropped its sender: the end.
        Pin::new(&mut self.items)
            .poll_next(cx)
            .map(|item| item.map(Ok))
    }
}
// ANCHOR_END: stream
