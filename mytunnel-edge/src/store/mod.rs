//! The [`LeaseStore`] on SQL: a SQLite file (the embedded default, one edge) or a
//! PostgreSQL database (shared by several edges). One store type runs the verbs' SQL,
//! written once with `$N` placeholders, through sqlx's `Any` driver; `Backend` holds
//! the little that differs.
//!
//! - Every write runs in one transaction that first takes the database's write lock, so
//!   writers queue instead of failing half-way through a read-then-write transaction:
//!   SQLite's `BEGIN IMMEDIATE` (in WAL mode, with a busy timeout; plain `BEGIN` gave
//!   "database is locked" despite busy_timeout), PostgreSQL's transaction-level advisory
//!   lock `PG_WRITE_LOCK`. On PostgreSQL this serialises the writes of every `serve`
//!   sharing the database: the owner limit and the lowest free port are read and written
//!   under it, which the schema's unique constraints alone would not make safe.
//! - Migrations are embedded and applied under the same write lock, tracked in
//!   `PRAGMA user_version` (SQLite) or the one-row table `mytunnel_schema` (PostgreSQL),
//!   so many processes opening a fresh database at once agree.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use mytunnel_core::policy::OwnerScope;
use mytunnel_core::protocol::{StateCounts, Takeover};
use mytunnel_core::store::{
    AllocateSpec, Allocation, EdgeRecord, Elsewhere, LeaseStore, NameChoice, StoreError, StoreStats,
};
use mytunnel_core::{
    EdgeId, EdgeUrl, Host, Lease, LeaseId, LeaseRef, LeaseState, Owner, Slug, Timestamp, Ttl,
};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Any, AnyPool, ConnectOptions, Executor, Row, Transaction};

mod database;
mod lease_store;
mod rows;

pub use database::{redact_password, Database, PostgresUrl, PostgresUrlError};
use rows::*;

/// The SQLite schema, in order. Entry `i` moves `user_version` from `i` to `i + 1`.
const SQLITE_MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/0001_leases.sql"),
    include_str!("../../migrations/0002_bind_socket.sql"),
    include_str!("../../migrations/0003_socket_leases_hold_no_port.sql"),
    include_str!("../../migrations/0004_lease_edge.sql"),
    include_str!("../../migrations/0005_edges.sql"),
];

/// The PostgreSQL schema, in order: the same steps as [`SQLITE_MIGRATIONS`], the first
/// one with PostgreSQL's 64-bit integers (SQLite's `INTEGER` is 64-bit, PostgreSQL's 32).
const PG_MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/postgres/0001_leases.sql"),
    include_str!("../../migrations/0002_bind_socket.sql"),
    include_str!("../../migrations/0003_socket_leases_hold_no_port.sql"),
    include_str!("../../migrations/0004_lease_edge.sql"),
    include_str!("../../migrations/0005_edges.sql"),
];

/// The key of the transaction-level advisory lock every PostgreSQL write transaction
/// takes first ("mytunnel" in ASCII). It ends with the transaction, also when the
/// connection to the server is lost.
const PG_WRITE_LOCK: i64 = 0x6d79_7475_6e6e_656c;

/// The database under the store: what differs between the two.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

/// Settings of the store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// How long a writer waits for the write lock before [`StoreError::Db`] (default
    /// 5s): SQLite's busy timeout, PostgreSQL's `lock_timeout`.
    pub busy_timeout: Duration,
    /// Connections in the read pool (default 4; in-memory stores always use 1). Writes
    /// have one connection of their own.
    pub max_connections: u32,
    /// The edge this store serves (default `local`): its allocations record it, and
    /// [`LeaseStore::active_on_this_edge`] returns its leases.
    pub edge_id: EdgeId,
    /// How long past its expiry another edge's lease stays for that edge to expire
    /// (default 2 min): the holder ends its tunnel and route when it expires its own
    /// lease, so this store's [`LeaseStore::expire_stale`] only steps in for an edge
    /// whose serve is down.
    pub other_edges_grace: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            busy_timeout: Duration::from_secs(5),
            max_connections: 4,
            edge_id: EdgeId::local(),
            other_edges_grace: Duration::from_secs(120),
        }
    }
}

/// The lease store on SQLite or PostgreSQL.
#[derive(Debug, Clone)]
pub struct SqlLeaseStore {
    backend: Backend,
    pool: AnyPool,
    /// The same database for write transactions only, one connection: concurrent writers
    /// of this process queue in the pool, in order. On SQLite its busy timeout is short
    /// per attempt and [`SqlLeaseStore::begin_write`] retries until `busy_timeout`.
    writes: AnyPool,
    busy_timeout: Duration,
    edge_id: EdgeId,
    other_edges_grace: Duration,
}

/// How long one attempt at SQLite's write lock waits inside SQLite.
///
/// SQLite's busy handler sleeps up to 100 ms between looks at a lock, so under many
/// concurrent writers a waiter could keep missing the moments the lock was free and give
/// up after the whole busy timeout ("database is locked": measured with 32 concurrent
/// `ctl` processes, 3 of 160 cycles). Attempts this short look every few milliseconds.
const WRITE_ATTEMPT: Duration = Duration::from_millis(50);

/// A pool: the configured connections, and an acquire deadline past the busy timeout (a
/// connection waits for the write lock first).
fn pool_options(options: &StoreOptions) -> AnyPoolOptions {
    AnyPoolOptions::new()
        .max_connections(options.max_connections.max(1))
        .acquire_timeout(options.busy_timeout + Duration::from_secs(5))
}

/// Runs `settings` on every new connection of the pool: what a URL through `Any` cannot
/// say (SQLite's busy timeout and synchronous mode, PostgreSQL's lock timeout).
fn with_settings(pool: AnyPoolOptions, settings: String) -> AnyPoolOptions {
    pool.after_connect(move |conn, _| {
        let settings = settings.clone();
        Box::pin(async move {
            conn.execute(settings.as_str()).await?;
            Ok(())
        })
    })
}

/// A pool on SQLite with `busy_timeout`.
fn sqlite_pool(options: &StoreOptions, busy_timeout: Duration) -> AnyPoolOptions {
    with_settings(
        pool_options(options),
        format!(
            "PRAGMA busy_timeout = {}; PRAGMA synchronous = NORMAL",
            busy_timeout.as_millis()
        ),
    )
}

/// `Any`'s options for the SQLite file at `path`, `configure`d: a URL built by sqlx from
/// typed options, which percent-encodes the file name.
///
/// sqlx writes `sqlite://<path>` and panics if that does not parse, which a relative path
/// such as `a:b.db` would not (it reads as host `a`, port `b.db`): the path is made
/// absolute first, so the URL has no host part at all.
fn any_sqlite_options(
    path: &Path,
    configure: impl FnOnce(SqliteConnectOptions) -> SqliteConnectOptions,
) -> Result<AnyConnectOptions, StoreError> {
    sqlx::any::install_default_drivers();
    let path = std::path::absolute(path)
        .map_err(|e| db_error(&format!("cannot resolve {}", path.display()), e))?;
    let connect = configure(SqliteConnectOptions::new().filename(path));
    AnyConnectOptions::from_url(&connect.to_url_lossy())
        .map_err(|e| db_error("database options", e))
}

fn db_error(context: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Db(format!("{context}: {e}"))
}

const LEASE_COLUMNS: &str = "lease_id, original_slug, original_host, owner, edge_bind_port, \
     bind_socket, state, ttl_seconds, created_at, updated_at, expires_at";

impl SqlLeaseStore {
    /// Opens the database `database` names and applies migrations: what `serve` runs.
    pub async fn open(database: &Database, options: &StoreOptions) -> Result<Self, StoreError> {
        match database {
            Database::Sqlite(path) => Self::open_sqlite(path, options).await,
            Database::Postgres(url) => Self::open_postgres(url, options).await,
        }
    }

    /// Opens (creating if needed) the SQLite file at `path` and applies migrations.
    ///
    /// A new file gets mode 0600 (SQLite gives its WAL and shared-memory files the same):
    /// only `serve`, as the service user, opens it.
    pub async fn open_sqlite(path: &Path, options: &StoreOptions) -> Result<Self, StoreError> {
        create_with_mode(path)?;
        let connect = any_sqlite_options(path, |c| c.create_if_missing(true))?;
        let writes = sqlite_pool(options, options.busy_timeout.min(WRITE_ATTEMPT))
            .max_connections(1)
            .connect_lazy_with(connect.clone());
        let pool = sqlite_pool(options, options.busy_timeout)
            .connect_with(connect)
            .await
            .map_err(|e| db_error(&format!("cannot open {}", path.display()), e))?;
        let store = SqlLeaseStore {
            backend: Backend::Sqlite,
            pool,
            writes,
            busy_timeout: options.busy_timeout,
            edge_id: options.edge_id.clone(),
            other_edges_grace: options.other_edges_grace,
        };
        store.switch_to_wal(options.busy_timeout).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// Connects to the PostgreSQL database at `url` and applies migrations (creating the
    /// tables in a database that has none). `options.busy_timeout` bounds the wait for
    /// the write lock, which every `serve` sharing the database takes.
    pub async fn open_postgres(
        url: &PostgresUrl,
        options: &StoreOptions,
    ) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let connect = AnyConnectOptions::from_str(url.expose())
            .map_err(|e| db_error(&format!("database URL {url}"), e))?;
        let settings = || {
            with_settings(
                pool_options(options),
                format!("SET lock_timeout = {}", options.busy_timeout.as_millis()),
            )
        };
        let writes = settings()
            .max_connections(1)
            .connect_lazy_with(connect.clone());
        let pool = settings()
            .connect_with(connect)
            .await
            .map_err(|e| db_error(&format!("cannot connect to {url}"), e))?;
        let store = SqlLeaseStore {
            backend: Backend::Postgres,
            pool,
            writes,
            busy_timeout: options.busy_timeout,
            edge_id: options.edge_id.clone(),
            other_edges_grace: options.other_edges_grace,
        };
        store.migrate().await?;
        Ok(store)
    }

    /// Switches the file to WAL (a no-op once it is). The switch needs an exclusive lock
    /// and SQLite does not apply the busy timeout to it, so a fresh file opened while
    /// another process writes would fail at once: retry until the busy timeout instead.
    async fn switch_to_wal(&self, busy_timeout: Duration) -> Result<(), StoreError> {
        let started = std::time::Instant::now();
        let mut pause = Duration::from_millis(1);
        loop {
            match sqlx::query_scalar::<_, String>("PRAGMA journal_mode = WAL")
                .fetch_one(&self.pool)
                .await
            {
                Ok(mode) if mode.eq_ignore_ascii_case("wal") => return Ok(()),
                Ok(mode) => {
                    return Err(StoreError::Db(format!(
                        "the database refused WAL journaling (journal mode is {mode})"
                    )))
                }
                Err(e) if started.elapsed() < busy_timeout && is_busy(&e) => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
                Err(e) => return Err(db_error("switch to WAL journaling", e)),
            }
        }
    }

    /// Opens an existing SQLite file for reading only: nothing is created, migrated or
    /// written, and no write lock is taken.
    ///
    /// For a reader beside `serve` (a test, an operator's tool) that must not queue
    /// behind writers. Any write through the returned store fails with
    /// [`StoreError::Db`]. A file whose schema is not this binary's (not migrated yet, or
    /// newer) is refused, since its rows cannot be read with confidence.
    pub async fn open_existing_read_only(
        path: &Path,
        options: &StoreOptions,
    ) -> Result<Self, StoreError> {
        let connect = any_sqlite_options(path, |c| c.read_only(true))?;
        let pool = sqlite_pool(options, options.busy_timeout)
            .connect_with(connect)
            .await
            .map_err(|e| db_error(&format!("cannot open {} to read", path.display()), e))?;
        let store = SqlLeaseStore {
            backend: Backend::Sqlite,
            writes: pool.clone(),
            pool,
            busy_timeout: options.busy_timeout,
            edge_id: options.edge_id.clone(),
            other_edges_grace: options.other_edges_grace,
        };
        let version = store.schema_version().await?;
        let current = store.backend.migrations().len();
        if version != current {
            store.close().await;
            return Err(StoreError::Db(format!(
                "{} has schema version {version} and this mytunneld reads version {current}; \
                 run `mytunneld serve` once to migrate it",
                path.display(),
            )));
        }
        Ok(store)
    }

    /// How many migrations the database has had.
    async fn schema_version(&self) -> Result<usize, StoreError> {
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(|e| db_error("read schema version", e))?;
        self.backend.schema_version(&mut conn).await
    }

    /// A private in-memory database (one connection, kept for the store's life).
    pub async fn open_in_memory() -> Result<Self, StoreError> {
        // The URL itself: sqlx 0.8.6's `SqliteConnectOptions::to_url_lossy` panics on an
        // in-memory database ("generated un-parseable URL: InvalidPort").
        sqlx::any::install_default_drivers();
        let connect = AnyConnectOptions::from_str("sqlite::memory:")
            .map_err(|e| db_error("in-memory options", e))?;
        // One connection for the store's whole life: if it closed, the in-memory database
        // would vanish with it. So no health check before use (a check cut short could
        // drop it), and no acquire deadline that paused test time could reach while a
        // query runs on SQLite's worker thread (time jumps ahead, but nothing fails).
        let pool = AnyPoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(365 * 24 * 3600))
            .connect_with(connect)
            .await
            .map_err(|e| db_error("cannot open in-memory database", e))?;
        let store = SqlLeaseStore {
            backend: Backend::Sqlite,
            writes: pool.clone(),
            pool,
            busy_timeout: StoreOptions::default().busy_timeout,
            edge_id: EdgeId::local(),
            other_edges_grace: StoreOptions::default().other_edges_grace,
        };
        store.migrate().await?;
        Ok(store)
    }

    /// Closes every connection (waits for them to be returned).
    pub async fn close(&self) {
        self.writes.close().await;
        self.pool.close().await;
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        // Every ctl process opens the store: when the schema is current (almost always),
        // a read says so without queueing for the write lock.
        let migrations = self.backend.migrations();
        if self.schema_version().await? == migrations.len() {
            return Ok(());
        }
        let mut tx = self.begin_write().await?;
        if self.backend == Backend::Postgres {
            // Under the write lock: one process creates it.
            sqlx::raw_sql("CREATE TABLE IF NOT EXISTS mytunnel_schema (version BIGINT NOT NULL)")
                .execute(&mut *tx)
                .await
                .map_err(|e| db_error("create schema version table", e))?;
        }
        let applied = self.backend.schema_version(&mut tx).await?;
        if applied > migrations.len() {
            return Err(StoreError::Db(format!(
                "the database has schema version {applied}, newer than this mytunneld knows ({}); upgrade mytunneld",
                migrations.len()
            )));
        }
        for (index, sql) in migrations.iter().enumerate().skip(applied) {
            sqlx::raw_sql(sql)
                .execute(&mut *tx)
                .await
                .map_err(|e| db_error(&format!("apply migration {}", index + 1), e))?;
        }
        if applied < migrations.len() {
            let record = match self.backend {
                Backend::Sqlite => format!("PRAGMA user_version = {}", migrations.len()),
                Backend::Postgres => format!(
                    "DELETE FROM mytunnel_schema; INSERT INTO mytunnel_schema VALUES ({})",
                    migrations.len()
                ),
            };
            sqlx::raw_sql(&record)
                .execute(&mut *tx)
                .await
                .map_err(|e| db_error("record schema version", e))?;
        }
        tx.commit()
            .await
            .map_err(|e| db_error("commit migrations", e))
    }

    /// A write transaction holding the database's write lock.
    async fn begin_write(&self) -> Result<Transaction<'static, Any>, StoreError> {
        match self.backend {
            Backend::Sqlite => self.begin_immediate().await,
            Backend::Postgres => self.begin_with_advisory_lock().await,
        }
    }

    /// `BEGIN`, then the advisory lock, which waits up to `lock_timeout` (the busy
    /// timeout, set per connection).
    async fn begin_with_advisory_lock(&self) -> Result<Transaction<'static, Any>, StoreError> {
        let mut tx = self
            .writes
            .begin()
            .await
            .map_err(|e| db_error("begin write transaction", e))?;
        match sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(PG_WRITE_LOCK)
            .execute(&mut *tx)
            .await
        {
            Ok(_) => Ok(tx),
            Err(e) if is_lock_timeout(&e) => Err(StoreError::Db(format!(
                "the write lock was not free within {:?}: another mytunneld serve on this \
                 database holds it",
                self.busy_timeout
            ))),
            Err(e) => Err(db_error("take the write lock", e)),
        }
    }

    /// `BEGIN IMMEDIATE`, in short attempts until the busy timeout (see [`WRITE_ATTEMPT`]).
    async fn begin_immediate(&self) -> Result<Transaction<'static, Any>, StoreError> {
        let deadline = std::time::Instant::now() + self.busy_timeout;
        loop {
            match self.writes.begin_with("BEGIN IMMEDIATE").await {
                Ok(tx) => return Ok(tx),
                Err(e) if is_busy(&e) && std::time::Instant::now() < deadline => {
                    tokio::task::yield_now().await;
                }
                // A COMMIT that failed (disk full, I/O error) leaves the connection in a
                // transaction as far as sqlx knows, and it went back to the pool that
                // way: close it, and the pool opens a fresh one. serve lives on.
                Err(e) if is_stuck_in_transaction(&e) && std::time::Instant::now() < deadline => {
                    if let Ok(mut stuck) = self.writes.acquire().await {
                        stuck.close_on_drop();
                    }
                }
                Err(e) => return Err(db_error("begin write transaction", e)),
            }
        }
    }
}

impl Backend {
    /// The migrations of this database.
    fn migrations(self) -> &'static [&'static str] {
        match self {
            Backend::Sqlite => SQLITE_MIGRATIONS,
            Backend::Postgres => PG_MIGRATIONS,
        }
    }

    /// How many migrations the database has had: SQLite's `PRAGMA user_version`, or
    /// PostgreSQL's `mytunnel_schema` (none before the table exists).
    async fn schema_version(self, conn: &mut sqlx::AnyConnection) -> Result<usize, StoreError> {
        let sql = match self {
            Backend::Sqlite => "PRAGMA user_version",
            Backend::Postgres => {
                let exists: bool =
                    sqlx::query_scalar("SELECT to_regclass('mytunnel_schema') IS NOT NULL")
                        .fetch_one(&mut *conn)
                        .await
                        .map_err(|e| db_error("look for the schema version table", e))?;
                if !exists {
                    return Ok(0);
                }
                "SELECT COALESCE(MAX(version), 0) FROM mytunnel_schema"
            }
        };
        let version: i64 = sqlx::query_scalar(sql)
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| db_error("read schema version", e))?;
        Ok(usize::try_from(version).unwrap_or(usize::MAX))
    }
}

/// sqlx's refusal to begin on a connection whose last transaction did not end.
fn is_stuck_in_transaction(e: &sqlx::Error) -> bool {
    e.to_string().contains("non-zero transaction depth")
}

/// PostgreSQL's `lock_not_available` (55P03): `lock_timeout` ran out.
fn is_lock_timeout(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|c| c == "55P03")
}

/// SQLITE_BUSY (5) or SQLITE_LOCKED (6).
fn is_busy(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|c| c == "5" || c == "6")
}

/// Creates the database file if it does not exist, 0600: it is the service user's
/// alone. An existing file is left alone.
#[cfg(unix)]
fn create_with_mode(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(db_error(&format!("cannot create {}", path.display()), e)),
    }
}

#[cfg(not(unix))]
fn create_with_mode(_path: &Path) -> Result<(), StoreError> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// sqlx's URL for a relative `a:b.db` would read as host `a`, port `b.db`, and sqlx
    /// panics on it: the path is made absolute first.
    #[test]
    fn a_relative_path_that_looks_like_a_host_and_port_builds_a_url() {
        for path in ["a:b.db", "[x.db", "leases.db"] {
            assert!(
                any_sqlite_options(Path::new(path), |c| c.create_if_missing(true)).is_ok(),
                "{path}"
            );
        }
    }
}
