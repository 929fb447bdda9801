//! The database: its configuration, the connection pool, the embedded migrations, and a cheap
//! readiness signal (reachable? migrated?) that costs no query per probe.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqlx::SqlSafeStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgSslMode};

// ANCHOR: pool_arithmetic
/// `DB_MAX_CONNECTIONS` default: connections one instance may open.
///
/// The arithmetic, for Cloud Run:
///
/// - **What one instance needs** (Little's law): connections busy = requests per second that
///   reach the database × time each holds a connection. Each call here is one short statement
///   (about 1 ms on the same network), so even 4 000 req/s on one instance keeps about 4
///   connections busy. The other 75 of Cloud Run's 80 concurrent requests wait their turn for a
///   millisecond or so; they do not each need a connection. A pool larger than the CPUs can
///   keep busy only adds contention (the benchmark's pool-size sweep shows the knee).
/// - **What the database allows**: every instance opens up to this many, so
///   `max-instances × DB_MAX_CONNECTIONS` must stay under the server's `max_connections` minus
///   what is reserved (superusers: 3 by default; Cloud SQL's own agents; `psql`; a migration
///   job). Cloud SQL's smallest tiers allow 25 to 100. With `max-instances` 10 and 5
///   connections each: 50 in steady state, which leaves room for a rollout, when the old and new
///   revisions run side by side for a while.
/// - So: 5. Raise it with the database's `max_connections`, or lower `max-instances` instead.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 5;
// ANCHOR_END: pool_arithmetic
/// `DB_ACQUIRE_TIMEOUT` default: how long a request waits for a connection (a free one, or a
/// new one being opened) before it is answered 503. Under `REQUEST_TIMEOUT` (5 s), so the
/// client learns "busy, retry" rather than a timeout; long enough to open a connection to Cloud
/// SQL (TLS and authentication take a few hundred ms) while the database is merely slow.
pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);
/// `DB_IDLE_TIMEOUT` default: an unused connection is closed after this long.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// `DB_MAX_LIFETIME` default: any connection is replaced after this long, so load spreads again
/// after a failover or a scaling change on the database side.
pub const DEFAULT_MAX_LIFETIME: Duration = Duration::from_secs(30 * 60);
/// `DB_STATEMENT_TIMEOUT` default: the server cancels a statement running longer, so a runaway
/// query cannot hold a pooled connection long after its request has been answered 503.
pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);
/// `IDEMPOTENCY_KEY_TTL` default: how long an `Idempotency-Key` is remembered. A day, like the
/// well-known payment APIs: far longer than any client keeps retrying.
pub const DEFAULT_IDEMPOTENCY_KEY_TTL: Duration = Duration::from_secs(24 * 60 * 60);

// ANCHOR: go_mapping
// The Go article's `database/sql` settings, and what they are in sqlx's `PgPoolOptions`:
//
// | Go (`*sql.DB`)                   | sqlx (`PgPoolOptions`)            | here                   |
// |----------------------------------|-----------------------------------|------------------------|
// | `SetMaxOpenConns(25)`            | `max_connections(n)`              | `DB_MAX_CONNECTIONS` 5 |
// | `SetMaxIdleConns(10)`            | none: a returned connection stays | (see below)            |
// |                                  | idle until `idle_timeout`         |                        |
// | `SetConnMaxLifetime(5m)`         | `max_lifetime(d)`                 | `DB_MAX_LIFETIME` 30m  |
// | `SetConnMaxIdleTime(2m)`         | `idle_timeout(d)`                 | `DB_IDLE_TIMEOUT` 5m   |
// | none: waits for a connection as  | `acquire_timeout(d)`              | `DB_ACQUIRE_TIMEOUT` 2s|
// | long as the request's context    |                                   |                        |
// | none (retries on `ErrBadConn`)   | `test_before_acquire(bool)`       | off (see `pool`)       |
//
// `SetMaxIdleConns` caps how many idle connections are *kept*; sqlx keeps every connection it
// opened (up to `max_connections`) until `idle_timeout` closes it, and `min_connections` is a
// floor, the opposite knob. Go's unlimited default for open connections is the dangerous one:
// sqlx's pool always has a limit.
// ANCHOR_END: go_mapping

// ANCHOR: config
/// The database settings, read from the environment and validated once at start-up.
#[derive(Clone)]
pub struct DbConfig {
    /// `DATABASE_URL`, parsed. Never printed: see [`DbConfig::redacted_url`].
    pub connect: PgConnectOptions,
    /// `DATABASE_URL` with its password replaced by `***`, for logs and errors.
    pub redacted_url: String,
    /// `DB_MAX_CONNECTIONS`: 1 to 1 000 (default [`DEFAULT_MAX_CONNECTIONS`]).
    pub max_connections: u32,
    /// `DB_ACQUIRE_TIMEOUT`: wait for a connection at most this long (default 2 s).
    pub acquire_timeout: Duration,
    /// `DB_IDLE_TIMEOUT`: close a connection unused for this long (default 5 min).
    pub idle_timeout: Duration,
    /// `DB_MAX_LIFETIME`: replace a connection this old (default 30 min).
    pub max_lifetime: Duration,
    /// `DB_STATEMENT_TIMEOUT`: the server cancels longer statements (default 5 s; 0 = never).
    pub statement_timeout: Duration,
    /// `DB_MIGRATE`: apply the embedded migrations at start-up (default on). Turn it off (`0`)
    /// when a separate job migrates; the instance then waits for the schema to be current
    /// before it says it is ready.
    pub migrate: bool,
    /// `IDEMPOTENCY_KEY_TTL`: how long an `Idempotency-Key` is remembered (default 24 h).
    pub idempotency_key_ttl: Duration,
}

/// By hand, so that printing a configuration can never print the password.
impl fmt::Debug for DbConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DbConfig")
            .field("url", &self.redacted_url)
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("max_lifetime", &self.max_lifetime)
            .field("statement_timeout", &self.statement_timeout)
            .field("migrate", &self.migrate)
            .field("idempotency_key_ttl", &self.idempotency_key_ttl)
            .finish()
    }
}

impl DbConfig {
    /// Reads the settings through `lookup` (normally `std::env::var`). An error is one line,
    /// `NAME must be …, got "…"`, and never contains the database password.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<DbConfig, String> {
        // Step 04's readers: the same duration syntax and error shape as every other variable.
        let vars = step_04::Vars(&lookup);
        const HOUR: Duration = Duration::from_secs(3600);
        let url = lookup("DATABASE_URL")
            .filter(|u| !u.trim().is_empty())
            .ok_or(
                "DATABASE_URL is required, e.g. postgres://USER:PASSWORD@HOST:5432/DB, or on Cloud \
             Run postgres://USER:PASSWORD@/DB?host=/cloudsql/PROJECT:REGION:INSTANCE",
            )?;
        let (connect, redacted_url) = parse_database_url(url.trim())?;
        Ok(DbConfig {
            connect,
            redacted_url,
            max_connections: vars
                .number("DB_MAX_CONNECTIONS", 1000)?
                .map_or(DEFAULT_MAX_CONNECTIONS, |n| n as u32),
            acquire_timeout: vars.duration_up_to(
                "DB_ACQUIRE_TIMEOUT",
                DEFAULT_ACQUIRE_TIMEOUT,
                false,
                Duration::from_secs(60),
            )?,
            idle_timeout: vars.duration_up_to(
                "DB_IDLE_TIMEOUT",
                DEFAULT_IDLE_TIMEOUT,
                false,
                24 * HOUR,
            )?,
            max_lifetime: vars.duration_up_to(
                "DB_MAX_LIFETIME",
                DEFAULT_MAX_LIFETIME,
                false,
                24 * HOUR,
            )?,
            statement_timeout: vars.duration(
                "DB_STATEMENT_TIMEOUT",
                DEFAULT_STATEMENT_TIMEOUT,
                true,
            )?,
            migrate: vars.flag("DB_MIGRATE", true)?,
            idempotency_key_ttl: vars.duration_up_to(
                "IDEMPOTENCY_KEY_TTL",
                DEFAULT_IDEMPOTENCY_KEY_TTL,
                false,
                30 * 24 * HOUR,
            )?,
        })
    }

    // ANCHOR: pool
    /// The connection pool. *Lazy*: no connection is opened here, so the process starts (and
    /// answers liveness) while the database is still down; each request opens what it needs,
    /// within `DB_ACQUIRE_TIMEOUT`.
    pub fn pool(&self) -> PgPool {
        let mut connect = self.connect.clone();
        if !self.statement_timeout.is_zero() {
            // Sent at connection start-up (`-c statement_timeout=…`), so it costs no round trip.
            connect = connect.options([(
                "statement_timeout",
                format!("{}ms", self.statement_timeout.as_millis()),
            )]);
        }
        PgPoolOptions::new()
            .max_connections(self.max_connections)
            .acquire_timeout(self.acquire_timeout)
            .idle_timeout(self.idle_timeout)
            .max_lifetime(self.max_lifetime)
            // sqlx already checks each connection when it comes *back* to the pool (a broken one
            // is closed then); checking it again on the way out would add a round trip to every
            // request. A connection that died in between fails one request with a 503, and is
            // then closed.
            .test_before_acquire(false)
            .connect_lazy_with(connect)
    }
    // ANCHOR_END: pool
}

/// Parses `DATABASE_URL`. Errors name what is wrong and show the URL with its password
/// replaced by `***`.
fn parse_database_url(url: &str) -> Result<(PgConnectOptions, String), String> {
    let redacted = redact_url(url);
    let fail = |reason: &str| {
        Err(format!(
            "DATABASE_URL must be a PostgreSQL URL (postgres://USER:PASSWORD@HOST:PORT/DB): \
             {reason}, got {redacted:?}"
        ))
    };
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return fail("it must start with postgres:// or postgresql://");
    }
    let options = match PgConnectOptions::from_str(&with_placeholder_host(url)) {
        Ok(options) => options,
        // The parser's own words, unless they quote the password.
        Err(error) => return fail(&scrub(&error.to_string(), url)),
    };
    if matches!(
        options.get_ssl_mode(),
        PgSslMode::Require | PgSslMode::VerifyCa | PgSslMode::VerifyFull
    ) {
        return fail(
            "this build has no TLS support, so sslmode=require cannot work; on Cloud Run use \
             the Cloud SQL unix socket (?host=/cloudsql/PROJECT:REGION:INSTANCE), which needs \
             none",
        );
    }
    Ok((options, redacted))
}

/// libpq (and Cloud SQL's documentation) accept `postgres://user:pass@/db?host=/cloudsql/…`,
/// with an empty host before the path; the URL parser sqlx uses refuses a password without a
/// host. Put `localhost` there: the `host=` parameter, read after it, replaces it with the
/// socket directory.
fn with_placeholder_host(url: &str) -> Cow<'_, str> {
    let Some(scheme_end) = url.find("://") else {
        return Cow::Borrowed(url);
    };
    let authority_start = scheme_end + 3;
    let authority_end = url[authority_start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| authority_start + i);
    match url[authority_start..authority_end].rfind('@') {
        Some(at) if authority_start + at + 1 == authority_end => Cow::Owned(format!(
            "{}localhost{}",
            &url[..authority_end],
            &url[authority_end..]
        )),
        _ => Cow::Borrowed(url),
    }
}

/// `postgres://app:secret@db/items` → `postgres://app:***@db/items`; a `password=` query
/// parameter is hidden too. Works on malformed URLs as well: it only looks for the separators.
pub fn redact_url(url: &str) -> String {
    let mut out = url.to_owned();
    // Without a scheme (a common mistake), the credentials start the string.
    let authority_start = url.find("://").map_or(0, |i| i + 3);
    {
        let authority_end = url[authority_start..]
            .find(['/', '?', '#'])
            .map_or(url.len(), |i| authority_start + i);
        let authority = &url[authority_start..authority_end];
        if let Some(at) = authority.rfind('@')
            && let Some(colon) = authority[..at].find(':')
        {
            out = format!(
                "{}***{}",
                &url[..authority_start + colon + 1],
                &url[authority_start + at..]
            );
        }
    }
    if let Some(query_start) = out.find('?') {
        let (base, query) = out.split_at(query_start + 1);
        let query: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
                _ => pair.to_owned(),
            })
            .collect();
        out = format!("{base}{}", query.join("&"));
    }
    out
}

/// `text` with every password-looking part of `url` (as written, and percent-decoded) removed.
fn scrub(text: &str, url: &str) -> String {
    let mut secrets = Vec::new();
    {
        let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        if let Some((userinfo, _)) = authority.rsplit_once('@')
            && let Some((_, password)) = userinfo.split_once(':')
        {
            secrets.push(password.to_owned());
        }
    }
    for pair in url.split(['?', '&']).skip(1) {
        if let Some((key, value)) = pair.split_once('=')
            && key.eq_ignore_ascii_case("password")
        {
            secrets.push(value.to_owned());
        }
    }
    let mut text = text.to_owned();
    for secret in secrets.into_iter().filter(|s| !s.is_empty()) {
        let decoded = percent_decode(&secret);
        for form in [secret, decoded] {
            text = text.replace(&form, "***");
        }
    }
    text
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ANCHOR_END: config

// ANCHOR: migrations
/// The schema, embedded in the binary: a container ships no `migrations/` folder.
///
/// Built with `Migrator::with_migrations` over `include_str!`, not `sqlx::migrate!()`: that
/// macro lives behind sqlx's `macros` feature, which would compile sqlx's proc-macro crate (and
/// its own copy of the driver) just to read a folder at build time. Adding a migration means
/// adding a line here; the test `migrations_are_numbered_in_order` checks the list.
pub fn migrator() -> Migrator {
    let migration = |version: i64, description: &'static str, sql: &'static str| {
        Migration::new(
            version,
            Cow::Borrowed(description),
            MigrationType::Simple,
            sql.into_sql_str(),
            false,
        )
    };
    Migrator::with_migrations(vec![migration(
        1,
        "items",
        include_str!("../migrations/0001_items.sql"),
    )])
}

/// Applies the migrations not yet applied; safe to run from many instances at once.
///
/// sqlx's migrator takes a PostgreSQL advisory lock (`pg_advisory_lock`, keyed on the database
/// name) before it even creates its `_sqlx_migrations` table, and holds it until it is done:
/// the first instance migrates while the others wait on the lock, then find nothing to do.
/// It runs on a connection of its own (a one-connection pool, closed afterwards), not one from
/// the service's pool: that lock belongs to the *session*, and if a migration failed half-way
/// sqlx would return without unlocking, leaving a pooled connection holding it. Closing this
/// connection always releases it. No statement timeout either: a migration, or the wait for
/// another instance's, may take longer than a request.
pub async fn migrate(config: &DbConfig) -> Result<(), String> {
    // Opens the connection: while the database is down this fails within DB_ACQUIRE_TIMEOUT.
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(config.acquire_timeout)
        .connect_with(config.connect.clone())
        .await
        .map_err(|e| e.to_string())?;
    // Waits for the lock, then applies what is missing, each migration in its own transaction.
    let result = migrator().run(&pool).await;
    // Ends the session (releasing the lock even after a failure).
    pool.close().await;
    result.map_err(|e| e.to_string())
}

/// Whether every embedded migration has been applied (successfully) to the database: what an
/// instance started with `DB_MIGRATE=0` waits for while a separate job migrates.
pub async fn schema_is_current(pool: &PgPool) -> Result<bool, sqlx::Error> {
    // A missing table means nothing has been migrated yet, not an error.
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(pool)
        .await?;
    if !exists {
        return Ok(false);
    }
    let applied: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
            .fetch_all(pool)
            .await?;
    Ok(migrator().iter().all(|m| applied.contains(&m.version)))
}
// ANCHOR_END: migrations

// ANCHOR: health
/// What the database looks like from this instance, kept up to date in the background so a
/// readiness probe reads two atomics instead of sending a query.
#[derive(Clone, Default)]
pub struct DbHealth(Arc<HealthFlags>);

#[derive(Default)]
struct HealthFlags {
    /// The schema is current (migrated by us, or found current when `DB_MIGRATE=0`).
    migrated: AtomicBool,
    /// The last ping succeeded.
    reachable: AtomicBool,
}

impl DbHealth {
    /// Migrated and reachable: the instance can serve items.
    pub fn is_ready(&self) -> bool {
        self.is_migrated() && self.is_reachable()
    }

    pub fn is_migrated(&self) -> bool {
        self.0.migrated.load(Ordering::Acquire)
    }

    pub fn is_reachable(&self) -> bool {
        self.0.reachable.load(Ordering::Acquire)
    }

    /// Why not ready, in a word for `/readyz`'s body; `None` when ready.
    pub fn problem(&self) -> Option<&'static str> {
        if !self.is_reachable() {
            Some("database unreachable")
        } else if !self.is_migrated() {
            Some("database not migrated")
        } else {
            None
        }
    }

    fn set_migrated(&self) {
        self.0.migrated.store(true, Ordering::Release);
    }

    fn set_reachable(&self, reachable: bool) {
        let was = self.0.reachable.swap(reachable, Ordering::AcqRel);
        if was != reachable {
            if reachable {
                tracing::info!("database reachable");
            } else {
                tracing::warn!("database unreachable");
            }
        }
    }
}

/// Start-up work for the database, to run beside the server (which already answers liveness):
/// retries every `retry_every` until the schema is current, by migrating it (`DB_MIGRATE`, the
/// default) or by waiting for a separate job to, then marks `health` migrated and returns.
/// While the database is down it keeps trying: an instance started before its database
/// becomes ready by itself when the database comes.
pub async fn prepare(config: &DbConfig, pool: &PgPool, health: &DbHealth, retry_every: Duration) {
    loop {
        let outcome = if config.migrate {
            migrate(config).await.map(|()| true)
        } else {
            schema_is_current(pool).await.map_err(|e| e.to_string())
        };
        match outcome {
            Ok(true) => {
                health.set_reachable(true);
                health.set_migrated();
                tracing::info!(migrated_here = config.migrate, "database schema is current");
                return;
            }
            Ok(false) => {
                health.set_reachable(true);
                tracing::info!("waiting for the schema to be migrated (DB_MIGRATE=0)");
            }
            Err(error) => {
                health.set_reachable(false);
                tracing::warn!(%error, url = %config.redacted_url, "database not ready yet");
            }
        }
        // Not a busy loop: give the database (or the migration job) time.
        tokio::time::sleep(retry_every).await;
    }
}

/// Checks the database every `every` and records the answer in `health`, forever: spawn it and
/// abort it at shutdown. One cheap statement per instance every few seconds, however often the
/// probe is polled.
pub async fn watch_database(pool: PgPool, health: DbHealth, every: Duration, timeout: Duration) {
    let mut ticks = tokio::time::interval(every);
    // After a stall (CPU throttled between requests on Cloud Run), one ping, not a burst.
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // The first tick is immediate, so the state is known right after start-up.
        ticks.tick().await;
        if let Some(reachable) = check(&pool, timeout).await {
            health.set_reachable(reachable);
        }
    }
}

/// Whether the database answers; `None` when the question cannot be asked because every
/// connection is busy serving requests.
///
/// A busy pool is not a down database, and must not look like one: readiness would turn every
/// instance away at the moment of peak load, all at once (the load balancer then has nowhere
/// to send traffic). Saturation is answered request by request, with a 503 after
/// `DB_ACQUIRE_TIMEOUT`. And if the database did die under load, the requests holding those
/// connections fail at once, the broken connections are closed, and the next check can ask.
pub async fn check(pool: &PgPool, timeout: Duration) -> Option<bool> {
    let saturated = pool.size() >= pool.options().get_max_connections() && pool.num_idle() == 0;
    if saturated {
        return None;
    }
    Some(ping(pool, timeout).await)
}

/// One round trip on a pooled connection, bounded by `timeout` overall (a new connection is
/// opened if none is idle).
pub async fn ping(pool: &PgPool, timeout: Duration) -> bool {
    // Bounded: a database that accepts connections but never answers must read as down.
    let ping = sqlx::query("SELECT 1").execute(pool);
    matches!(tokio::time::timeout(timeout, ping).await, Ok(Ok(_)))
}
// ANCHOR_END: health

#[cfg(test)]
mod tests {
    use super::*;

    use testkit::env_from as env;

    const URL: (&str, &str) = (
        "DATABASE_URL",
        "postgres://app:s3cret@db.internal:5432/items",
    );

    #[test]
    fn defaults_are_chosen_for_cloud_run() {
        let config = DbConfig::from_lookup(env(&[URL])).expect("valid");

        assert_eq!(config.max_connections, 5);
        assert_eq!(config.acquire_timeout, Duration::from_secs(2));
        assert_eq!(config.statement_timeout, Duration::from_secs(5));
        assert_eq!(config.idempotency_key_ttl, Duration::from_secs(86_400));
        assert!(config.migrate);
        assert_eq!(config.connect.get_host(), "db.internal");
        assert_eq!(config.connect.get_database(), Some("items"));
    }

    #[test]
    fn cloud_sql_unix_socket_comes_from_the_url() {
        let url = "postgres://app:s3cret@/items?host=/cloudsql/my-project:europe-west1:db";

        let config = DbConfig::from_lookup(env(&[("DATABASE_URL", url)])).expect("valid");

        assert_eq!(
            config.connect.get_socket().map(|p| p.display().to_string()),
            Some("/cloudsql/my-project:europe-west1:db".into())
        );
        assert_eq!(config.connect.get_username(), "app");
        assert_eq!(config.connect.get_database(), Some("items"));
        assert_eq!(
            config.redacted_url,
            "postgres://app:***@/items?host=/cloudsql/my-project:europe-west1:db"
        );
    }

    #[test]
    fn bad_urls_are_one_line_without_the_password() {
        for url in [
            "postgres://app:s3cret@db:notaport/items",
            "postgres://app:s3cret@db:99999/items",
            "mysql://app:s3cret@db/items",
            "postgres://app:s3cret@db/items?sslmode=require",
            "postgres://app:s3cret@db/items?sslmode=sometimes",
            "postgres://app:s3cret@[::1/items",
            "postgres://app@db/items?password=s3cret&sslmode=bogus",
            "postgres://app:s3%63ret@db:x/items",
            "app:s3cret@db/items",
        ] {
            let error = DbConfig::from_lookup(env(&[("DATABASE_URL", url)])).expect_err(url);

            assert!(error.starts_with("DATABASE_URL"), "{error}");
            assert!(!error.contains('\n'), "{error}");
            assert!(
                !error.contains("s3cret") && !error.contains("s3%63ret"),
                "{error}"
            );
        }
    }

    #[test]
    fn a_missing_url_says_what_one_looks_like() {
        let error = DbConfig::from_lookup(env(&[])).expect_err("required");

        assert!(error.starts_with("DATABASE_URL is required"), "{error}");
    }

    #[test]
    fn debug_output_hides_the_password() {
        let config = DbConfig::from_lookup(env(&[URL])).expect("valid");

        let printed = format!("{config:?}");

        assert!(!printed.contains("s3cret"), "{printed}");
        assert!(printed.contains("app:***@db.internal"), "{printed}");
    }

    #[test]
    fn bad_values_are_one_clear_line() {
        for (name, value) in [
            ("DB_MAX_CONNECTIONS", "0"),
            ("DB_MAX_CONNECTIONS", "many"),
            ("DB_ACQUIRE_TIMEOUT", "0"),
            ("DB_ACQUIRE_TIMEOUT", "2 fortnights"),
            ("DB_ACQUIRE_TIMEOUT", "10m"),
            ("DB_STATEMENT_TIMEOUT", "-1s"),
            ("DB_MIGRATE", "maybe"),
            ("IDEMPOTENCY_KEY_TTL", "0"),
            ("IDEMPOTENCY_KEY_TTL", "1000h"),
        ] {
            let error = DbConfig::from_lookup(env(&[URL, (name, value)])).expect_err(name);

            assert!(error.starts_with(name) && error.contains(value), "{error}");
        }
    }

    #[test]
    fn settings_are_read() {
        let config = DbConfig::from_lookup(env(&[
            URL,
            ("DB_MAX_CONNECTIONS", "25"),
            ("DB_ACQUIRE_TIMEOUT", "500ms"),
            ("DB_IDLE_TIMEOUT", "2m"),
            ("DB_MAX_LIFETIME", "1h"),
            ("DB_STATEMENT_TIMEOUT", "0"),
            ("DB_MIGRATE", "0"),
            ("IDEMPOTENCY_KEY_TTL", "48h"),
        ]))
        .expect("valid");

        assert_eq!(config.max_connections, 25);
        assert_eq!(config.acquire_timeout, Duration::from_millis(500));
        assert_eq!(config.idle_timeout, Duration::from_secs(120));
        assert_eq!(config.max_lifetime, Duration::from_secs(3600));
        assert_eq!(config.statement_timeout, Duration::ZERO);
        assert!(!config.migrate);
        assert_eq!(config.idempotency_key_ttl, Duration::from_secs(48 * 3600));
    }

    #[test]
    fn migrations_are_numbered_in_order() {
        let versions: Vec<i64> = migrator().iter().map(|m| m.version).collect();

        assert_eq!(versions, (1..=versions.len() as i64).collect::<Vec<_>>());
    }
}
