//! [`PgStore`]: step 04's [`ItemStore`] in PostgreSQL, plus idempotent creation.
//!
//! What changes against the memory store:
//! - ids come from a database sequence, so they are unique across every instance; they still
//!   increase, but can have gaps (see `migrations/0001_items.sql`);
//! - there is no item limit: `StoreError::Full` is never returned (the memory store's
//!   `MAX_ITEMS` protected the process's memory; the database's disk is sized separately);
//! - every failure to reach the database (no free connection within `DB_ACQUIRE_TIMEOUT`, a
//!   connection refused or lost, a statement cancelled by `DB_STATEMENT_TIMEOUT`) is
//!   `StoreError::Unavailable`, which the API answers with 503 and `Retry-After`.

use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use sqlx::PgPool;
use sqlx::postgres::PgConnection;
use step_04::store::{Item, ItemId, ItemStore, NewItem, StoreError, StoreFuture};
use time::OffsetDateTime;

/// The longest `Idempotency-Key` the store accepts; the API should refuse longer ones (400)
/// before calling [`PgStore::create_idempotent`].
pub const MAX_IDEMPOTENCY_KEY_CHARS: usize = 255;

// ANCHOR: store
/// Items in PostgreSQL, shared by every instance that uses the same database.
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    idempotency_key_ttl: Duration,
}

/// A row of `items`, as the queries below select it.
type ItemRow = (i64, String, String, OffsetDateTime);

// Static strings (sqlx 0.9 refuses a `format!`ed one unless told it is safe), prepared once per
// connection and reused: every parameter travels as a bind, never inside the SQL.
const GET_ITEM: &str = "SELECT id, name, description, created_at FROM items WHERE id = $1";
const LIST_ITEMS: &str = "SELECT id, name, description, created_at FROM items ORDER BY id";

impl PgStore {
    /// A store on `pool` (see [`crate::db::DbConfig::pool`]) that remembers idempotency keys
    /// for `idempotency_key_ttl` (`IDEMPOTENCY_KEY_TTL`).
    pub fn new(pool: PgPool, idempotency_key_ttl: Duration) -> Self {
        PgStore {
            pool,
            idempotency_key_ttl,
        }
    }

    /// The pool, for the readiness watcher and the shutdown (`pool.close()`).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    async fn insert(connection: &mut PgConnection, new: NewItem) -> Result<Item, sqlx::Error> {
        // One round trip: the id and the timestamp come back with the insert.
        let (id, created_at): (i64, OffsetDateTime) = sqlx::query_as(
            "INSERT INTO items (name, description) VALUES ($1, $2) RETURNING id, created_at",
        )
        .bind(&new.name)
        .bind(&new.description)
        .fetch_one(connection)
        .await?;
        Ok(Item {
            id: ItemId(id.unsigned_abs()),
            name: new.name,
            description: new.description,
            created_at,
        })
    }

    async fn create_now(&self, new: NewItem) -> Result<Arc<Item>, StoreError> {
        storable(&new)?;
        // Waits for a pooled connection (at most DB_ACQUIRE_TIMEOUT), then for the insert.
        let mut connection = self.pool.acquire().await.map_err(unavailable)?;
        let item = Self::insert(&mut connection, new)
            .await
            .map_err(unavailable)?;
        Ok(Arc::new(item))
    }

    async fn get_now(&self, id: ItemId) -> Result<Option<Arc<Item>>, StoreError> {
        // Ids above i64::MAX cannot be in a BIGINT column: no need to ask.
        let Ok(id) = i64::try_from(id.0) else {
            return Ok(None);
        };
        let row: Option<ItemRow> = sqlx::query_as(GET_ITEM)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(row.map(to_item))
    }

    async fn list_now(&self) -> Result<Vec<Arc<Item>>, StoreError> {
        // Creation order is id order: the sequence hands ids out in the order inserts ask.
        let rows: Vec<ItemRow> = sqlx::query_as(LIST_ITEMS)
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(rows.into_iter().map(to_item).collect())
    }
}

fn to_item((id, name, description, created_at): ItemRow) -> Arc<Item> {
    Arc::new(Item {
        // Identity columns start at 1: never negative.
        id: ItemId(id.unsigned_abs()),
        name,
        description,
        created_at,
    })
}

/// Any failure to talk to the database. The reason goes to the log (step 04's `ApiError`
/// conversion logs it), never to the client; it never contains the URL or password.
/// PostgreSQL's `text` cannot hold the NUL character (U+0000), which JSON and protobuf strings
/// can carry: such an item is refused before it reaches the database (as a client error, not
/// as the "database unavailable" the insert's failure would otherwise look like).
pub const NO_NUL: &str = "name and description must not contain the NUL character (U+0000)";

fn storable(new: &NewItem) -> Result<(), StoreError> {
    if new.name.contains('\0') || new.description.contains('\0') {
        return Err(StoreError::Unstorable(NO_NUL));
    }
    Ok(())
}

fn unavailable(error: sqlx::Error) -> StoreError {
    StoreError::Unavailable(match error {
        sqlx::Error::PoolTimedOut => {
            "no database connection within DB_ACQUIRE_TIMEOUT (every connection busy, or the \
             database unreachable)"
                .to_owned()
        }
        other => other.to_string(),
    })
}

impl ItemStore for PgStore {
    fn create(&self, new: NewItem) -> StoreFuture<'_, Arc<Item>> {
        Box::pin(self.create_now(new))
    }

    fn get(&self, id: ItemId) -> StoreFuture<'_, Option<Arc<Item>>> {
        Box::pin(self.get_now(id))
    }

    fn list(&self) -> StoreFuture<'_, Vec<Arc<Item>>> {
        Box::pin(self.list_now())
    }
}
// ANCHOR_END: store

// ANCHOR: idempotency
/// What became of a create with an `Idempotency-Key` (IETF httpapi Idempotency-Key draft).
#[derive(Debug, Clone, PartialEq)]
pub enum IdempotentOutcome {
    /// A new key: the item was created and the key now points at it (201).
    Created(Arc<Item>),
    /// The key was used before with the same request: that request's item, nothing created
    /// (the first response again: 201 with the same item).
    Replayed(Arc<Item>),
    /// The key was used before with a *different* request (422).
    Mismatch,
    /// A request with this key is being processed right now (409).
    InFlight,
}

/// What identifies "the same request" for a key: SHA-256 of the validated request, in a
/// canonical form (each field's length, then its bytes), so two bodies that differ only in
/// whitespace, key order or escapes are the same request, and no choice of field values can
/// make two different requests encode alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    pub fn of(new: &NewItem) -> Fingerprint {
        let mut hash = Sha256::new();
        for field in [&new.name, &new.description] {
            hash.update((field.len() as u64).to_be_bytes());
            hash.update(field.as_bytes());
        }
        Fingerprint(hash.finalize().into())
    }
}

impl PgStore {
    /// Creates `new` once per `key`, atomically, across every instance.
    ///
    /// One transaction does it all, so a crash or a lost connection at any point leaves either
    /// nothing (the client's retry creates) or the item *and* its key (the retry replays):
    /// 1. `pg_try_advisory_xact_lock` on the key: held by a concurrent request with the same
    ///    key (on any instance) → [`IdempotentOutcome::InFlight`] at once, no waiting. The lock
    ///    ends with the transaction, commit or rollback, crash included.
    /// 2. Look the key up. Remembered (younger than `IDEMPOTENCY_KEY_TTL`): same fingerprint →
    ///    `Replayed` with the stored item; another fingerprint → `Mismatch`. Expired: deleted,
    ///    and the key is new again.
    /// 3. Insert the item and the key row, commit → `Created`.
    ///
    /// The lock is taken on a 64-bit hash of the key: two *different* keys in flight at the
    /// same moment could collide and one would see a spurious 409, with odds of 1 in 2^64.
    pub async fn create_idempotent(
        &self,
        key: &str,
        fingerprint: &Fingerprint,
        new: NewItem,
    ) -> Result<IdempotentOutcome, StoreError> {
        storable(&new)?;
        // Waits for a pooled connection and sends BEGIN.
        let mut tx = self.pool.begin().await.map_err(unavailable)?;

        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
            .bind(key_lock_id(key))
            .fetch_one(&mut *tx)
            .await
            .map_err(unavailable)?;
        if !locked {
            // Ends the transaction now rather than when the connection is next used.
            let _ = tx.rollback().await;
            return Ok(IdempotentOutcome::InFlight);
        }

        // Under the lock, nobody else can be inserting or deleting this key: what we read here
        // stays true until we commit.
        let remembered: Option<(Vec<u8>, i64, bool)> = sqlx::query_as(
            "SELECT fingerprint, item_id, created_at > now() - make_interval(secs => $2) \
             FROM idempotency_keys WHERE key = $1",
        )
        .bind(key)
        .bind(self.idempotency_key_ttl.as_secs_f64())
        .fetch_optional(&mut *tx)
        .await
        .map_err(unavailable)?;

        match remembered {
            Some((stored, item_id, true)) => {
                let outcome = if stored == fingerprint.0 {
                    let row: ItemRow = sqlx::query_as(GET_ITEM)
                        .bind(item_id)
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(unavailable)?;
                    IdempotentOutcome::Replayed(to_item(row))
                } else {
                    IdempotentOutcome::Mismatch
                };
                // Nothing was written; ending the transaction releases the lock.
                tx.commit().await.map_err(unavailable)?;
                return Ok(outcome);
            }
            Some((_, _, false)) => {
                // Expired: forget it, in this same transaction, and treat the key as new.
                sqlx::query("DELETE FROM idempotency_keys WHERE key = $1")
                    .bind(key)
                    .execute(&mut *tx)
                    .await
                    .map_err(unavailable)?;
            }
            None => {}
        }

        let item = Self::insert(&mut tx, new).await.map_err(unavailable)?;
        sqlx::query("INSERT INTO idempotency_keys (key, fingerprint, item_id) VALUES ($1, $2, $3)")
            .bind(key)
            .bind(&fingerprint.0[..])
            .bind(item.id.0 as i64)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        // Both rows become visible together, or (on any failure before this) neither does.
        tx.commit().await.map_err(unavailable)?;
        Ok(IdempotentOutcome::Created(Arc::new(item)))
    }

    /// Deletes the keys older than `IDEMPOTENCY_KEY_TTL` and returns how many. Expired keys are
    /// already ignored (and replaced) on use; this only keeps the table small. Call it now and
    /// then (every few minutes) from a background task.
    pub async fn purge_expired_keys(&self) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM idempotency_keys WHERE created_at <= now() - make_interval(secs => $1)",
        )
        .bind(self.idempotency_key_ttl.as_secs_f64())
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(done.rows_affected())
    }
}

/// The advisory lock's id for a key: the first 8 bytes of its SHA-256. Public so that tools
/// (and tests) can see or take the lock of a key in flight.
pub fn key_lock_id(key: &str) -> i64 {
    let digest = Sha256::digest(key.as_bytes());
    let mut first = [0; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(first)
}
// ANCHOR_END: idempotency

#[cfg(test)]
mod tests {
    use super::*;

    fn new(name: &str, description: &str) -> NewItem {
        NewItem {
            name: name.into(),
            description: description.into(),
        }
    }

    #[test]
    fn fingerprints_tell_fields_apart() {
        assert_eq!(
            Fingerprint::of(&new("a", "b")),
            Fingerprint::of(&new("a", "b"))
        );
        assert_ne!(
            Fingerprint::of(&new("a", "b")),
            Fingerprint::of(&new("a", "c"))
        );
        // Moving a character from one field to the other is a different request.
        assert_ne!(
            Fingerprint::of(&new("ab", "")),
            Fingerprint::of(&new("a", "b"))
        );
    }

    #[test]
    fn lock_ids_differ_per_key() {
        assert_eq!(key_lock_id("k1"), key_lock_id("k1"));
        assert_ne!(key_lock_id("k1"), key_lock_id("k2"));
    }
}
