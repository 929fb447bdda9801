//! Where items live: the [`ItemStore`] trait the handlers talk to, and [`MemoryStore`], the
//! in-memory implementation this step ships. A later step puts a database behind the same trait.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::{Arc, PoisonError, RwLock};

use serde::{Serialize, Serializer};
use time::OffsetDateTime;
use utoipa::ToSchema;

// ANCHOR: item
/// A stored item, as the API returns it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Item {
    /// `item-1`, `item-2`, … in creation order.
    #[schema(value_type = String, pattern = "^item-[1-9][0-9]*$", example = "item-1")]
    pub id: ItemId,
    #[schema(example = "Test Item")]
    pub name: String,
    #[schema(example = "A test")]
    pub description: String,
    /// When the item was created: RFC 3339, UTC, microsecond precision.
    #[schema(value_type = String, format = DateTime, example = "2026-01-01T12:00:00.000000Z")]
    #[serde(serialize_with = "rfc3339_utc")]
    pub created_at: OffsetDateTime,
}

/// The id is a number; `item-` is how it is spelled on the wire. Keeping the number means the
/// in-memory store can find an item by position, and no id string is allocated per item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ItemId(pub u64);

impl fmt::Display for ItemId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "item-{}", self.0)
    }
}

impl FromStr for ItemId {
    type Err = ();

    /// Only the canonical spelling: `item-` then digits, no sign, no leading zero. `item-01` or
    /// `item-+1` name no item, even though `u64::from_str` would accept `01` and `+1`.
    fn from_str(text: &str) -> Result<Self, ()> {
        let digits = text.strip_prefix("item-").ok_or(())?;
        let canonical = !digits.is_empty()
            && !digits.starts_with('0')
            && digits.bytes().all(|b| b.is_ascii_digit());
        if !canonical {
            return Err(());
        }
        digits.parse().map(ItemId).map_err(|_| ())
    }
}

impl Serialize for ItemId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // Written straight into the output through `Display`: no temporary `String`.
        serializer.collect_str(self)
    }
}
// ANCHOR_END: item

/// `2026-01-01T12:00:00.123456Z`: always UTC, always six fractional digits, so every timestamp
/// has the same length (and every response for the same item the same `content-length`).
fn rfc3339_utc<S: Serializer>(at: &OffsetDateTime, serializer: S) -> Result<S::Ok, S::Error> {
    struct Rfc3339(OffsetDateTime);
    impl fmt::Display for Rfc3339 {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            let t = self.0.to_offset(time::UtcOffset::UTC);
            write!(
                f,
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second(),
                t.microsecond()
            )
        }
    }
    serializer.collect_str(&Rfc3339(*at))
}

/// What a client supplies to create an item, already validated by the handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewItem {
    pub name: String,
    pub description: String,
}

// ANCHOR: trait
/// Why a store could not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The store holds its maximum number of items; nothing was added, nothing was evicted.
    Full { limit: usize },
    /// The backing service failed (a database step's concern; the memory store never says it).
    Unavailable(String),
    /// The backend cannot hold this value (a database that cannot store some character, say);
    /// nothing was stored. The message is for the client.
    Unstorable(&'static str),
}

/// A boxed future, so the trait can be used as `dyn ItemStore` (an `async fn` in a trait cannot
/// yet). One small allocation per call, next to the several hyper and axum already make.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Everything the handlers need from storage. Async, because a database answers later.
pub trait ItemStore: Send + Sync + 'static {
    /// Stores `new` under the next id and returns the stored item.
    fn create(&self, new: NewItem) -> StoreFuture<'_, Arc<Item>>;
    /// The item with this id, if there is one.
    fn get(&self, id: ItemId) -> StoreFuture<'_, Option<Arc<Item>>>;
    /// Every item, in creation order.
    fn list(&self) -> StoreFuture<'_, Vec<Arc<Item>>>;
}
// ANCHOR_END: trait

// ANCHOR: memory
/// The embedded default: every item in one `Vec`, in creation order, behind one lock.
///
/// Ids are handed out in the same critical section that pushes the item, so they can have no
/// gaps and no duplicates however many requests create at once. And because nothing is ever
/// removed, `item-N` lives at position `N - 1`: the `Vec` is its own index.
pub struct MemoryStore {
    items: RwLock<Vec<Arc<Item>>>,
    max_items: usize,
}

impl MemoryStore {
    /// An empty store that refuses to grow past `max_items`.
    pub fn new(max_items: usize) -> Self {
        MemoryStore {
            items: RwLock::new(Vec::new()),
            max_items,
        }
    }

    fn create_now(&self, new: NewItem) -> Result<Arc<Item>, StoreError> {
        // Everything that can be done before taking the lock is: the allocation of the item
        // itself happens out here, with a placeholder id and time filled in below.
        let mut item = Arc::new(Item {
            id: ItemId(0),
            name: new.name,
            description: new.description,
            created_at: OffsetDateTime::UNIX_EPOCH,
        });
        // A panic can never happen while this lock is held (pushing and reading a clock do not
        // panic), so a poisoned lock still holds consistent data: carry on with it.
        let mut items = self.items.write().unwrap_or_else(PoisonError::into_inner);
        if items.len() >= self.max_items {
            return Err(StoreError::Full {
                limit: self.max_items,
            });
        }
        let fresh = Arc::get_mut(&mut item).expect("not shared yet");
        fresh.id = ItemId(items.len() as u64 + 1);
        // Read the clock inside the lock too, so creation order and time order agree.
        fresh.created_at = OffsetDateTime::now_utc();
        items.push(item.clone());
        Ok(item)
    }

    fn get_now(&self, id: ItemId) -> Option<Arc<Item>> {
        let position = usize::try_from(id.0.checked_sub(1)?).ok()?;
        let items = self.items.read().unwrap_or_else(PoisonError::into_inner);
        items.get(position).cloned()
    }

    fn list_now(&self) -> Vec<Arc<Item>> {
        // Copies pointers, not items, under the lock; serialising happens after it is released.
        self.items
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl ItemStore for MemoryStore {
    fn create(&self, new: NewItem) -> StoreFuture<'_, Arc<Item>> {
        let result = self.create_now(new);
        Box::pin(std::future::ready(result))
    }

    fn get(&self, id: ItemId) -> StoreFuture<'_, Option<Arc<Item>>> {
        Box::pin(std::future::ready(Ok(self.get_now(id))))
    }

    fn list(&self) -> StoreFuture<'_, Vec<Arc<Item>>> {
        Box::pin(std::future::ready(Ok(self.list_now())))
    }
}
// ANCHOR_END: memory

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_canonical_ids_parse() {
        assert_eq!("item-1".parse(), Ok(ItemId(1)));
        assert_eq!("item-18446744073709551615".parse(), Ok(ItemId(u64::MAX)));
        for bad in [
            "item-0",
            "item-01",
            "item-+1",
            "item-",
            "item-1a",
            "item--1",
            "1",
            "Item-1",
            "item-18446744073709551616",
        ] {
            assert_eq!(bad.parse::<ItemId>(), Err(()), "{bad}");
        }
    }

    #[test]
    fn timestamps_are_fixed_width_utc() {
        let at = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        let json = serde_json::to_value(Item {
            id: ItemId(7),
            name: "n".into(),
            description: String::new(),
            created_at: at,
        })
        .unwrap();
        assert_eq!(json["created_at"], "2023-11-14T22:13:20.000000Z");
        assert_eq!(json["id"], "item-7");
    }

    #[test]
    fn a_full_store_refuses_and_keeps_what_it_has() {
        let store = MemoryStore::new(2);
        let new = || NewItem {
            name: "a".into(),
            description: String::new(),
        };
        store.create_now(new()).unwrap();
        store.create_now(new()).unwrap();

        assert_eq!(store.create_now(new()), Err(StoreError::Full { limit: 2 }));
        let ids: Vec<_> = store.list_now().iter().map(|i| i.id).collect();
        assert_eq!(ids, [ItemId(1), ItemId(2)]);
    }

    #[test]
    fn id_zero_and_huge_ids_are_simply_absent() {
        let store = MemoryStore::new(10);
        assert_eq!(store.get_now(ItemId(0)), None);
        assert_eq!(store.get_now(ItemId(u64::MAX)), None);
    }
}
