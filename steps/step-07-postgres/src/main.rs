//! Step 07: a real database. Step 06's service with its items in PostgreSQL (sqlx): ids unique
//! across instances, idempotent creation, readiness that follows the database.
//!
//! Run it:   a PostgreSQL you can reach, then
//!           `DATABASE_URL=postgres://USER:PASSWORD@localhost:5432/DB cargo run -p step-07`;
//!           `curl -i localhost:8080/readyz`, then create twice with the same key:
//!           `curl -i -X POST localhost:8080/api/items -H 'content-type: application/json' -H 'Idempotency-Key: k1' -d '{"name":"Test Item"}'`.
//! Settings: step 06's, plus `DATABASE_URL` (required), `DB_MAX_CONNECTIONS`,
//!           `DB_ACQUIRE_TIMEOUT`, `DB_MIGRATE`, `IDEMPOTENCY_KEY_TTL` (see db.rs).
#![forbid(unsafe_code)]

use std::process::ExitCode;

use step_06::Ops;
use step_06::launch::launch;
use step_07::{Config, run};

fn main() -> ExitCode {
    let config = Config::from_lookup(|key| std::env::var(key).ok());
    launch(
        "step-07",
        config,
        |config| &config.base,
        |config, listener, signal| run(listener, config, Ops::default(), signal),
    )
}
