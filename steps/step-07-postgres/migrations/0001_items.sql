-- The items the API serves. Run once per database by the migrator (see src/db.rs), inside a
-- transaction, under the migrator's advisory lock: ten instances starting at once apply it once.

-- `item-N` is this id. An identity column draws from a sequence, which is shared by every
-- instance (unique, increasing ids across instances) and is *not* transactional: a number
-- handed to a transaction that then rolls back (a failed insert, a crash, a lost connection)
-- is never handed out again, so ids can have gaps. Making them gapless would mean one lock that
-- every create waits on, across every instance.
CREATE TABLE items (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        TEXT NOT NULL,
    description TEXT NOT NULL,
    -- Microseconds, like the API's timestamps.
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Idempotency-Key: the first answer to a key, kept for a while (IDEMPOTENCY_KEY_TTL) so that a
-- retried POST gets the same item instead of a second one. Written in the same transaction as
-- the item, so a key is never recorded without its item, nor an item without its key.
CREATE TABLE idempotency_keys (
    key         TEXT PRIMARY KEY,
    -- SHA-256 of the request's canonical form: the same key with another body is refused.
    fingerprint BYTEA NOT NULL,
    item_id     BIGINT NOT NULL REFERENCES items (id),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- For deleting expired keys without reading the whole table.
CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);
