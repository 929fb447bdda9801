//! Any item store, with a client span around each of its queries.

use std::sync::Arc;

use opentelemetry::trace::TraceContextExt;
use step_04::store::{Item, ItemId, ItemStore, NewItem, StoreError, StoreFuture};
use tracing::Instrument;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;

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
        let span = tracing::info_span!("db", otel.kind = "client", otel.status_code = Empty);
        // Described only when recorded, as the server span is (see server.rs).
        let cx = span.context();
        if cx.span().is_recording() {
            cx.span().update_name(format!("{operation} items"));
            span.set_attribute("db.system.name", self.system);
            span.set_attribute("db.operation.name", operation);
            span.set_attribute("db.collection.name", "items");
        }
        span
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
                let kind = match error {
                    StoreError::Full { .. } => "full",
                    StoreError::Unavailable(_) => "unavailable",
                    StoreError::Unstorable(_) => "unstorable",
                };
                recorded.set_attribute("error.type", kind);
            }
            result
        }
        .instrument(span),
    )
}

impl ItemStore for TracedStore {
    fn create(&self, new: NewItem) -> StoreFuture<'_, Arc<Item>> {
        self.traced("INSERT", self.inner.create(new))
    }

    fn get(&self, id: ItemId) -> StoreFuture<'_, Option<Arc<Item>>> {
        self.traced("SELECT", self.inner.get(id))
    }

    fn list(&self) -> StoreFuture<'_, Vec<Arc<Item>>> {
        self.traced("SELECT", self.inner.list())
    }
}

impl TracedStore {
    /// `query` in a span of its own, if the request's is recorded; else just `query`: a span
    /// nobody will see costs as much to make as one that is exported.
    fn traced<'a, T: 'a>(
        &self,
        operation: &'static str,
        query: StoreFuture<'a, T>,
    ) -> StoreFuture<'a, T> {
        match crate::server::recording() {
            true => traced(self.span(operation), query),
            false => query,
        }
    }
}
// ANCHOR_END: store
