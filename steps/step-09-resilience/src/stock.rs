//! The stock figure on an item, over REST and gRPC: asked of the upstream within what the
//! request has left, and left out (with `X-Degraded: stock`) when it cannot be had in time.

use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Serialize;
use step_04::RequestDeadline;
use step_04::api::AppState;
use step_04::error::ApiError;
use step_04::store::{Item, ItemId};
use step_08::deadline::CallDeadline;
use step_08::pb;
use step_08::pb::item_service_server::ItemService;
use step_08::service::{ItemStream, Items};
use tokio::time::Instant;
use tonic::{Request, Status};
use utoipa::ToSchema;

use crate::upstream::{CallError, Upstream};

// ANCHOR: lookup
/// The response header (and gRPC metadata) that says which optional part is missing.
pub const DEGRADED: &str = "x-degraded";

/// The inventory, if `UPSTREAM_URL` names one: built once, shared by every request.
#[derive(Clone, Default)]
pub struct Stock(pub Option<Arc<Upstream>>);

/// What the item gets: a figure, nothing to ask (no upstream), or a gap to own up to.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    Found(u64),
    NotConfigured,
    Degraded,
}

impl Stock {
    /// Never an error: whatever goes wrong upstream, the item is answered without its stock.
    pub async fn lookup(&self, id: ItemId, deadline: Option<Instant>) -> Lookup {
        let Some(upstream) = &self.0 else {
            return Lookup::NotConfigured;
        };
        // Waits for the upstream, within the request's deadline less a reserve.
        match upstream.stock(id, deadline).await {
            Ok(stock) => Lookup::Found(stock),
            // Refused without asking (breaker open, bulkhead full, no time): quiet, or an
            // outage would log a line per request; the breaker logs its own changes.
            Err(error @ (CallError::BreakerOpen | CallError::Busy | CallError::NoTime)) => {
                tracing::debug!(?error, item = %id, "stock left out");
                Lookup::Degraded
            }
            Err(error) => {
                tracing::warn!(?error, item = %id, "stock left out");
                Lookup::Degraded
            }
        }
    }
}
// ANCHOR_END: lookup

// ANCHOR: rest
/// An item with its stock, when the inventory said it in time.
#[derive(Serialize, ToSchema)]
pub struct StockedItem {
    #[serde(flatten)]
    item: Item,
    /// How many are in stock; absent when the inventory did not answer in time.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = 7)]
    stock: Option<u64>,
}

#[utoipa::path(get, path = "/api/items/{id}", tag = "items",
    params(("id" = String, Path, description = "An item id such as item-1", example = "item-1")),
    responses(
        (status = 200, description = "The item, with its stock when the inventory answered in \
            time; without it, and with `X-Degraded: stock`, when it did not", body = StockedItem,
            headers(("X-Degraded" = String, description = "`stock` when the stock is left out"))),
        (status = 404, description = "No item with that id", body = step_04::error::ErrorBody),
    ))]
pub async fn get_item(
    State(state): State<AppState>,
    Extension(stock): Extension<Stock>,
    deadline: Option<Extension<RequestDeadline>>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    // As in step 04: anything but an id's canonical spelling names no item.
    let id: ItemId = match id {
        Ok(Path(text)) => text.parse().map_err(|()| ApiError::ItemNotFound)?,
        Err(_) => return Err(ApiError::ItemNotFound),
    };
    // The core read first: it alone decides between 200, 404 and 503.
    let item = state.store.get(id).await?.ok_or(ApiError::ItemNotFound)?;
    let deadline = deadline.map(|Extension(RequestDeadline(at))| at);
    let lookup = stock.lookup(id, deadline).await;
    let stock = match lookup {
        Lookup::Found(n) => Some(n),
        _ => None,
    };
    let mut response = Json(StockedItem {
        item: Item::clone(&item),
        stock,
    })
    .into_response();
    if lookup == Lookup::Degraded {
        let value = HeaderValue::from_static("stock");
        response.headers_mut().insert(DEGRADED, value);
    }
    Ok(response)
}
// ANCHOR_END: rest

// ANCHOR: grpc
/// Step 08's `ItemService`, with the stock added to `GetItem`'s answer.
pub struct StockedItems {
    items: Items,
    stock: Stock,
}

impl StockedItems {
    pub fn new(items: Items, stock: Stock) -> StockedItems {
        StockedItems { items, stock }
    }
}

#[tonic::async_trait]
impl ItemService for StockedItems {
    async fn create_item(
        &self,
        request: Request<pb::CreateItemRequest>,
    ) -> Result<tonic::Response<pb::Item>, Status> {
        self.items.create_item(request).await
    }

    async fn get_item(
        &self,
        request: Request<pb::GetItemRequest>,
    ) -> Result<tonic::Response<pb::Item>, Status> {
        // The client's `grpc-timeout` within `REQUEST_TIMEOUT`, as step 08's layer set it.
        let deadline = request.extensions().get::<CallDeadline>().map(|d| d.0);
        // Step 08's answer first; only an item that exists gets a stock figure.
        let mut response = self.items.get_item(request).await?;
        let Ok(id) = response.get_ref().id.parse::<ItemId>() else {
            return Ok(response);
        };
        match self.stock.lookup(id, deadline).await {
            Lookup::Found(n) => response.get_mut().stock = Some(n),
            Lookup::NotConfigured => {}
            Lookup::Degraded => {
                let value = "stock".parse().expect("ASCII");
                response.metadata_mut().insert(DEGRADED, value);
            }
        }
        Ok(response)
    }

    type ListItemsStream = ItemStream;

    async fn list_items(
        &self,
        request: Request<pb::ListItemsRequest>,
    ) -> Result<tonic::Response<ItemStream>, Status> {
        self.items.list_items(request).await
    }
}
// ANCHOR_END: grpc
