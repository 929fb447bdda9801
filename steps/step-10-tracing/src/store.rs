//! Any item store, with a client span around each of its queries.

use std::sync::Arc;

use step_04::store::{Item, ItemId, ItemStore, NewItem, StoreError, StoreFuture};
use tracing::Instrument;
use tracing::field::Empty;

// ANCHOR: store
/// Wraps a store (step 07's `PgStore` here) so every call is a span under the request's:
/// the operation and the table, never the values (an item's text is the client's data).
pub struct TracedStore {
    inner: Arc<dyn ItemStore>,
    /// `db.system.name`: `postgresql`, or `memory` for step 04's store.
    system: &'static str,
}

impl TracedStore {
    pub fn new(inner: Arc<dyn ItemStore>, system: &'static str) -> TracedStore {
        TracedStore { inner, system }
    }

    fn span(&self, operation: &'static str) -> tracing::Span {
        tracing::info_span!(
            "db",
            otel.name = format!("{operation} items"),
            otel.kind = "client",
            otel.status_code = Empty,
            db.system.name = self.system,
            db.operation.name = operation,
            db.collection.name = "items",
            "error.type" = Empty,
        )
    }
}

/// Runs `query` inside `span`, and marks the span failed when the query fails.
fn traced<'a, T: 'a>(span: tracing::Span, query: StoreFuture<'a, T>) -> StoreFuture<'a, T> {
    let recorded = span.clone();
    Box::pin(
        async move {
            // Waits for the database; the span's time is the query's.
            let result = query.await;
            if let Err(error) = &result {
                recorded.record("otel.status_code", "error");
                recorded.record(
                    "error.type",
                    match error {
                        StoreError::Full { .. } => "full",
                        StoreError::Unavailable(_) => "unavailable",
                        StoreError::Unstorable(_) => "unstorable",
                    },
                );
            }
            result
        }
        .instrument(span),
    )
}

impl ItemStore for TracedStore {
    fn create(&self, new: NewItem) -> StoreFuture<'_, Arc<Item>> {
        traced(self.span("INSERT"), self.inner.create(new))
    }

    fn get(&self, id: ItemId) -> StoreFuture<'_, Option<Arc<Item>>> {
        traced(self.span("SELECT"), self.inner.get(id))
    }

    fn list(&self) -> StoreFuture<'_, Vec<Arc<Item>>> {
        traced(self.span("SELECT"), self.inner.list())
    }
}
// ANCHOR_END: store
