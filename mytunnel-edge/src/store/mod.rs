//! The SQLite [`LeaseStore`]: one database file shared by every ctl process and `serve`.
//!
//! - WAL journal, a busy timeout, and `BEGIN IMMEDIATE` for every write: concurrent
//!   writers queue for the write lock instead of failing half-way through a read-then-write
//!   transaction ("database is locked" despite busy_timeout, measured with plain `BEGIN`).
//! - Migrations are embedded and applied under the same write lock, tracked in
//!   `PRAGMA user_version`, so many processes opening a fresh file at once agree.
//! - SQL uses `$N` placeholders and portable statements, so a Postgres store can follow.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use mytunnel_core::policy::OwnerScope;
use mytunnel_core::protocol::{StateCounts, Takeover};
use mytunnel_core::store::{
    AllocateSpec, Allocation, LeaseStore, NameChoice, StoreError, StoreStats,
};
use mytunnel_core::{Host, Lease, LeaseId, LeaseRef, LeaseState, Owner, Slug, Timestamp, Ttl};
use sqlx::sqlite::{
    SqliteConnectOptions, SqlitePool, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, Sqlite, Transaction};

mod lease_store;
mod rows;

use rows::*;

/// The schema, in order. Entry `i` moves `user_version` from `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/0001_leases.sql"),
    include_str!("../../migrations/0002_bind_socket.sql"),
    include_str!("../../migrations/0003_socket_leases_hold_no_port.sql"),
];

/// Settings of the SQLite store.
#[derive(Debug, Clone)]
pub struct SqliteStoreOptions {
    /// How long a writer waits for the write lock before `db_error` (default 5s).
    pub busy_timeout: Duration,
    /// Connections in the pool (default 4; in-memory stores always use 1).
    pub max_connections: u32,
}

impl Default for SqliteStoreOptions {
    fn default() -> Self {
        SqliteStoreOptions {
            busy_timeout: Duration::from_secs(5),
            max_connections: 4,
        }
    }
}

/// The lease store on SQLite.
#[derive(Debug, Clone)]
pub struct SqliteLeaseStore {
    pool: SqlitePool,
    /// The same database for write transactions only, with a short busy timeout per
    /// attempt: [`SqliteLeaseStore::begin_write`] retries until `busy_timeout`.
    writes: SqlitePool,
    busy_timeout: Duration,
}

/// How long one attempt at the write lock waits inside SQLite.
///
/// SQLite's busy handler sleeps up to 100 ms between looks at a lock, so under many
/// concurrent writers a waiter could keep missing the moments the lock was free and give
/// up after the whole busy timeout ("database is locked": measured with 32 concurrent
/// `ctl` processes, 3 of 160 cycles). Attempts this short look every few milliseconds.
const WRITE_ATTEMPT: Duration = Duration::from_millis(50);

/// A pool on the database file: the configured connections, and an acquire deadline past
/// the busy timeout (a connection waits for SQLite's lock first).
fn file_pool(options: &SqliteStoreOptions) -> SqlitePoolOptions {
    SqlitePoolOptions::new()
        .max_connections(options.max_connections.max(1))
        .acquire_timeout(options.busy_timeout + Duration::from_secs(5))
}

fn db_error(context: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Db(format!("{context}: {e}"))
}

const LEASE_COLUMNS: &str = "lease_id, original_slug, original_host, owner, edge_bind_port, \
     bind_socket, state, ttl_seconds, created_at, updated_at, expires_at";

impl SqliteLeaseStore {
    /// Opens (creating if needed) the database file at `path` and applies migrations.
    ///
    /// A new file gets mode 0600 (SQLite gives its WAL and shared-memory files the same):
    /// only `serve`, as the service user, opens it.
    pub async fn open(path: &Path, options: &SqliteStoreOptions) -> Result<Self, StoreError> {
        create_with_mode(path)?;
        let connect = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(options.busy_timeout);
        // One write connection: in `serve`, the only process that writes, concurrent
        // writers then queue in the pool (in order) instead of sleeping in SQLite's busy
        // handler; another process's writer is still waited for by `begin_write`.
        let writes = file_pool(options).max_connections(1).connect_lazy_with(
            connect
                .clone()
                .busy_timeout(options.busy_timeout.min(WRITE_ATTEMPT)),
        );
        let pool = file_pool(options)
            .connect_with(connect)
            .await
            .map_err(|e| db_error(&format!("cannot open {}", path.display()), e))?;
        let store = SqliteLeaseStore {
            pool,
            writes,
            busy_timeout: options.busy_timeout,
        };
        store.switch_to_wal(options.busy_timeout).await?;
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

    /// Opens an existing database for reading only: nothing is created, migrated or
    /// written, and no write lock is taken.
    ///
    /// For `mytunneld authorized-keys`, which sshd runs at every login of a tunnel user:
    /// its one read must not queue behind `ctl` writers for the write lock. Any write
    /// through the returned store fails with [`StoreError::Db`]. A file whose schema is
    /// not this binary's (not migrated yet, or newer) is refused, since its rows cannot be
    /// read with confidence.
    pub async fn open_existing_read_only(
        path: &Path,
        options: &SqliteStoreOptions,
    ) -> Result<Self, StoreError> {
        let connect = SqliteConnectOptions::new()
            .filename(path)
            .read_only(true)
            .busy_timeout(options.busy_timeout);
        let pool = file_pool(options)
            .connect_with(connect)
            .await
            .map_err(|e| db_error(&format!("cannot open {} to read", path.display()), e))?;
        let store = SqliteLeaseStore {
            writes: pool.clone(),
            pool,
            busy_timeout: options.busy_timeout,
        };
        let version = store.schema_version().await?;
        if version != MIGRATIONS.len() {
            store.close().await;
            return Err(StoreError::Db(format!(
                "{} has schema version {version} and this mytunneld reads version {}; \
                 run `mytunneld serve` (or any `mytunneld ctl`) once to migrate it",
                path.display(),
                MIGRATIONS.len()
            )));
        }
        Ok(store)
    }

    /// `PRAGMA user_version`: how many [`MIGRATIONS`] the file has had.
    async fn schema_version(&self) -> Result<usize, StoreError> {
        let version: i64 = sqlx::query_scalar("PRAGMA user_version")
            .fetch_one(&self.pool)
            .await
            .map_err(|e| db_error("read schema version", e))?;
        Ok(usize::try_from(version).unwrap_or(usize::MAX))
    }

    /// A private in-memory database (one connection, kept for the store's life).
    pub async fn open_in_memory() -> Result<Self, StoreError> {
        let connect = SqliteConnectOptions::from_str("sqlite::memory:")
            .map_err(|e| db_error("in-memory options", e))?;
        // One connection for the store's whole life: if it closed, the in-memory database
        // would vanish with it. So no health check before use (a check cut short could
        // drop it), and no acquire deadline that paused test time could reach while a
        // query runs on SQLite's worker thread (time jumps ahead, but nothing fails).
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(365 * 24 * 3600))
            .connect_with(connect)
            .await
            .map_err(|e| db_error("cannot open in-memory database", e))?;
        let store = SqliteLeaseStore {
            writes: pool.clone(),
            pool,
            busy_timeout: SqliteStoreOptions::default().busy_timeout,
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
        if self.schema_version().await? == MIGRATIONS.len() {
            return Ok(());
        }
        let mut tx = self.begin_write().await?;
        let version: i64 = sqlx::query_scalar("PRAGMA user_version")
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| db_error("read schema version", e))?;
        let applied = usize::try_from(version).unwrap_or(usize::MAX);
        if applied > MIGRATIONS.len() {
            return Err(StoreError::Db(format!(
                "the database has schema version {version}, newer than this mytunneld knows ({}); upgrade mytunneld",
                MIGRATIONS.len()
            )));
        }
        for (index, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
            sqlx::raw_sql(sql)
                .execute(&mut *tx)
                .await
                .map_err(|e| db_error(&format!("apply migration {}", index + 1), e))?;
        }
        if applied < MIGRATIONS.len() {
            sqlx::raw_sql(&format!("PRAGMA user_version = {}", MIGRATIONS.len()))
                .execute(&mut *tx)
                .await
                .map_err(|e| db_error("record schema version", e))?;
        }
        tx.commit()
            .await
            .map_err(|e| db_error("commit migrations", e))
    }

    /// `BEGIN IMMEDIATE`, in short attempts until the busy timeout (see [`WRITE_ATTEMPT`]).
    async fn begin_write(&self) -> Result<Transaction<'static, Sqlite>, StoreError> {
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

/// sqlx's refusal to begin on a connection whose last transaction did not end.
fn is_stuck_in_transaction(e: &sqlx::Error) -> bool {
    e.to_string().contains("non-zero transaction depth")
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
