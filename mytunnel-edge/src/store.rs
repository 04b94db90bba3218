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
use mytunnel_core::{Lease, LeaseId, LeaseRef, LeaseState, Owner, Slug, Timestamp, Ttl};
use sqlx::sqlite::{
    SqliteConnectOptions, SqlitePool, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, Sqlite, Transaction};

/// The schema, in order. Entry `i` moves `user_version` from `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/0001_leases.sql"),
    include_str!("../migrations/0002_bind_socket.sql"),
    include_str!("../migrations/0003_socket_leases_hold_no_port.sql"),
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

/// Reads one row into a lease, refusing anything that does not parse.
fn lease_from_row(row: &SqliteRow) -> Result<Lease, StoreError> {
    fn col<'r, T: sqlx::Decode<'r, Sqlite> + sqlx::Type<Sqlite>>(
        row: &'r SqliteRow,
        name: &str,
    ) -> Result<T, StoreError> {
        row.try_get(name)
            .map_err(|e| db_error(&format!("read column {name}"), e))
    }
    fn parsed<T: FromStr>(value: &str, what: &str) -> Result<T, StoreError>
    where
        T::Err: std::fmt::Display,
    {
        value
            .parse()
            .map_err(|e| db_error(&format!("corrupt {what} {value:?}"), e))
    }
    fn timestamp(secs: i64) -> Result<Timestamp, StoreError> {
        Timestamp::from_unix_seconds(secs).map_err(|e| db_error("corrupt timestamp", e))
    }
    let port: i64 = col(row, "edge_bind_port")?;
    let ttl: i64 = col(row, "ttl_seconds")?;
    Ok(Lease {
        id: parsed(&col::<String>(row, "lease_id")?, "lease id")?,
        slug: parsed(&col::<String>(row, "original_slug")?, "slug")?,
        host: parsed(&col::<String>(row, "original_host")?, "host")?,
        owner: parsed(&col::<String>(row, "owner")?, "owner")?,
        edge_bind_port: u16::try_from(port).map_err(|e| db_error("corrupt port", e))?,
        bind_socket: col::<Option<String>>(row, "bind_socket")?
            .map(|path| parsed(&path, "socket path"))
            .transpose()?,
        state: parsed(&col::<String>(row, "state")?, "state")?,
        ttl: Ttl::configured(Duration::from_secs(
            u64::try_from(ttl).map_err(|e| db_error("corrupt ttl", e))?,
        )),
        created_at: timestamp(col(row, "created_at")?)?,
        updated_at: timestamp(col(row, "updated_at")?)?,
        expires_at: timestamp(col(row, "expires_at")?)?,
    })
}

/// Finds the lease a reference names, among `owner`'s leases only.
async fn find_for_owner(
    tx: &mut sqlx::SqliteConnection,
    owner: &Owner,
    lease: &LeaseRef,
) -> Result<Lease, StoreError> {
    let (sql, key) = match lease {
        LeaseRef::Id(id) => (
            format!("SELECT {LEASE_COLUMNS} FROM leases WHERE lease_id = $1 AND owner = $2"),
            id.as_str(),
        ),
        LeaseRef::Host(host) => (
            format!("SELECT {LEASE_COLUMNS} FROM leases WHERE host = $1 AND owner = $2 AND state = 'active'"),
            host.as_str(),
        ),
        LeaseRef::Slug(slug) => (
            format!("SELECT {LEASE_COLUMNS} FROM leases WHERE slug = $1 AND owner = $2 AND state = 'active'"),
            slug.as_str(),
        ),
    };
    let row = sqlx::query(&sql)
        .bind(key)
        .bind(owner.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| db_error("find lease", e))?;
    match row {
        Some(row) => lease_from_row(&row),
        None => Err(StoreError::NotFound(lease.to_string())),
    }
}

async fn active_by_slug(
    tx: &mut sqlx::SqliteConnection,
    slug: &Slug,
) -> Result<Option<Lease>, StoreError> {
    let sql = format!("SELECT {LEASE_COLUMNS} FROM leases WHERE slug = $1 AND state = 'active'");
    let row = sqlx::query(&sql)
        .bind(slug.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| db_error("look up slug", e))?;
    row.as_ref().map(lease_from_row).transpose()
}

/// Tombstones an active lease in place: the public slug and host take the state's prefix.
async fn tombstone(
    tx: &mut sqlx::SqliteConnection,
    lease: &Lease,
    state: LeaseState,
    now: Timestamp,
) -> Result<Lease, StoreError> {
    let tombstoned = Lease {
        state,
        updated_at: now,
        ..lease.clone()
    };
    sqlx::query(
        "UPDATE leases SET state = $1, slug = $2, host = $3, updated_at = $4 \
         WHERE lease_id = $5 AND state = 'active'",
    )
    .bind(state.as_str())
    .bind(tombstoned.public_slug())
    .bind(tombstoned.public_host())
    .bind(now.unix_seconds())
    .bind(lease.id.as_str())
    .execute(&mut *tx)
    .await
    .map_err(|e| db_error("tombstone lease", e))?;
    Ok(tombstoned)
}

async fn commit(tx: Transaction<'static, Sqlite>) -> Result<(), StoreError> {
    tx.commit().await.map_err(|e| db_error("commit", e))
}

#[async_trait]
impl LeaseStore for SqliteLeaseStore {
    async fn allocate(&self, spec: AllocateSpec) -> Result<Allocation, StoreError> {
        let mut tx = self.begin_write().await?;

        // 1. The name, and the lease a forced takeover displaces.
        let (slug, displaced) = match &spec.name {
            NameChoice::Exact(slug) => match active_by_slug(&mut tx, slug).await? {
                None => (slug.clone(), None),
                Some(holder) if spec.takeover == Takeover::Force => (slug.clone(), Some(holder)),
                Some(_) => return Err(StoreError::SlugTaken(slug.clone())),
            },
            NameChoice::FirstFreeOf(candidates) => {
                let mut chosen = None;
                for candidate in candidates {
                    if active_by_slug(&mut tx, candidate).await?.is_none() {
                        chosen = Some(candidate.clone());
                        break;
                    }
                }
                match (chosen, candidates.first()) {
                    (Some(slug), _) => (slug, None),
                    (None, Some(first)) => return Err(StoreError::SlugTaken(first.clone())),
                    (None, None) => {
                        return Err(StoreError::Db("no candidate names were given".into()))
                    }
                }
            }
        };

        // 2. The owner's limit (a lease the owner displaces from themself does not count).
        let active: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM leases WHERE owner = $1 AND state = 'active'")
                .bind(spec.owner.as_str())
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| db_error("count owner's leases", e))?;
        let mut active = u64::try_from(active).unwrap_or(0);
        if displaced.as_ref().is_some_and(|d| d.owner == spec.owner) {
            active = active.saturating_sub(1);
        }
        if !spec.owner_limit.allows_another(active) {
            return Err(StoreError::OwnerLimit {
                owner: spec.owner.clone(),
                active,
            });
        }

        // 3. The lowest free port. A displaced lease's port is taken last: its owner's
        //    ssh may still hold it until sshd notices the tunnel is gone.
        // A lease that binds a socket holds no port (0), and needs no look at the others.
        let port = if spec.bind_socket.is_some() {
            0
        } else {
            let used: Vec<i64> = sqlx::query_scalar(
                "SELECT edge_bind_port FROM leases WHERE state = 'active' \
                 AND edge_bind_port BETWEEN $1 AND $2 ORDER BY edge_bind_port",
            )
            .bind(i64::from(spec.ports.min()))
            .bind(i64::from(spec.ports.max()))
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| db_error("list used ports", e))?;
            let mut used: Vec<u16> = used
                .into_iter()
                .filter_map(|p| u16::try_from(p).ok())
                .chain(spec.held_ports.iter().copied())
                .collect();
            used.sort_unstable();
            used.dedup();
            spec.ports
                .lowest_free(&used)
                .or_else(|| {
                    displaced
                        .as_ref()
                        .map(|d| d.edge_bind_port)
                        .filter(|p| spec.ports.contains(*p) && !spec.held_ports.contains(p))
                })
                .ok_or(StoreError::NoFreePort(spec.ports))?
        };

        // 4. Write: the displaced lease goes, the new one comes.
        if let Some(old) = &displaced {
            sqlx::query("DELETE FROM leases WHERE lease_id = $1")
                .bind(old.id.as_str())
                .execute(&mut *tx)
                .await
                .map_err(|e| db_error("delete displaced lease", e))?;
        }
        let lease = Lease {
            id: spec.id.clone(),
            host: spec.base_domain.host_for(&slug),
            slug,
            owner: spec.owner.clone(),
            edge_bind_port: port,
            bind_socket: spec.bind_socket.clone(),
            ttl: spec.ttl,
            created_at: spec.now,
            updated_at: spec.now,
            expires_at: spec.now.saturating_add(spec.ttl.get()),
            state: LeaseState::Active,
        };
        sqlx::query(
            "INSERT INTO leases (lease_id, slug, host, original_slug, original_host, owner, \
             edge_bind_port, bind_socket, state, ttl_seconds, created_at, updated_at, \
             expires_at) \
             VALUES ($1, $2, $3, $2, $3, $4, $5, $9, 'active', $6, $7, $7, $8)",
        )
        .bind(lease.id.as_str())
        .bind(lease.slug.as_str())
        .bind(lease.host.as_str())
        .bind(lease.owner.as_str())
        .bind(i64::from(port))
        .bind(i64::try_from(lease.ttl.get().as_secs()).unwrap_or(i64::MAX))
        .bind(spec.now.unix_seconds())
        .bind(lease.expires_at.unix_seconds())
        .bind(lease.bind_socket.as_ref().map(|p| p.as_str().to_owned()))
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error("insert lease", e))?;
        commit(tx).await?;
        Ok(Allocation { lease, displaced })
    }

    async fn heartbeat(
        &self,
        owner: &Owner,
        id: &LeaseId,
        now: Timestamp,
    ) -> Result<Lease, StoreError> {
        let mut tx = self.begin_write().await?;
        let lease = find_for_owner(&mut tx, owner, &LeaseRef::Id(id.clone())).await?;
        if lease.state != LeaseState::Active {
            return Err(StoreError::NotActive(lease.id));
        }
        let renewed = Lease {
            updated_at: now,
            expires_at: now.saturating_add(lease.ttl.get()),
            ..lease
        };
        sqlx::query("UPDATE leases SET updated_at = $1, expires_at = $2 WHERE lease_id = $3")
            .bind(now.unix_seconds())
            .bind(renewed.expires_at.unix_seconds())
            .bind(renewed.id.as_str())
            .execute(&mut *tx)
            .await
            .map_err(|e| db_error("renew lease", e))?;
        commit(tx).await?;
        Ok(renewed)
    }

    async fn release(
        &self,
        owner: &Owner,
        lease: &LeaseRef,
        now: Timestamp,
    ) -> Result<Lease, StoreError> {
        let mut tx = self.begin_write().await?;
        let found = find_for_owner(&mut tx, owner, lease).await?;
        if found.state != LeaseState::Active {
            return Err(StoreError::NotActive(found.id));
        }
        let released = tombstone(&mut tx, &found, LeaseState::Released, now).await?;
        commit(tx).await?;
        Ok(released)
    }

    async fn delete(&self, owner: &Owner, lease: &LeaseRef) -> Result<Lease, StoreError> {
        let mut tx = self.begin_write().await?;
        let found = find_for_owner(&mut tx, owner, lease).await?;
        sqlx::query("DELETE FROM leases WHERE lease_id = $1")
            .bind(found.id.as_str())
            .execute(&mut *tx)
            .await
            .map_err(|e| db_error("delete lease", e))?;
        commit(tx).await?;
        Ok(found)
    }

    async fn get(&self, owner: &Owner, lease: &LeaseRef) -> Result<Lease, StoreError> {
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(|e| db_error("acquire connection", e))?;
        find_for_owner(&mut conn, owner, lease).await
    }

    async fn find(&self, id: &LeaseId) -> Result<Option<Lease>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {LEASE_COLUMNS} FROM leases WHERE lease_id = $1"
        ))
        .bind(id.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| db_error("find lease", e))?;
        row.as_ref().map(lease_from_row).transpose()
    }

    async fn list(&self, scope: &OwnerScope) -> Result<Vec<Lease>, StoreError> {
        const ORDER: &str = "ORDER BY CASE state WHEN 'active' THEN 0 ELSE 1 END, \
                             created_at DESC, lease_id";
        let rows = match scope {
            OwnerScope::Owner(owner) => {
                sqlx::query(&format!(
                    "SELECT {LEASE_COLUMNS} FROM leases WHERE owner = $1 {ORDER}"
                ))
                .bind(owner.as_str())
                .fetch_all(&self.pool)
                .await
            }
            OwnerScope::All => {
                sqlx::query(&format!("SELECT {LEASE_COLUMNS} FROM leases {ORDER}"))
                    .fetch_all(&self.pool)
                    .await
            }
        }
        .map_err(|e| db_error("list leases", e))?;
        rows.iter().map(lease_from_row).collect()
    }

    async fn expire_stale(&self, now: Timestamp) -> Result<Vec<Lease>, StoreError> {
        let mut tx = self.begin_write().await?;
        let rows = sqlx::query(&format!(
            "SELECT {LEASE_COLUMNS} FROM leases WHERE state = 'active' AND expires_at <= $1 \
             ORDER BY expires_at, lease_id"
        ))
        .bind(now.unix_seconds())
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| db_error("find stale leases", e))?;
        let mut expired = Vec::with_capacity(rows.len());
        for row in &rows {
            let lease = lease_from_row(row)?;
            expired.push(tombstone(&mut tx, &lease, LeaseState::Expired, now).await?);
        }
        commit(tx).await?;
        Ok(expired)
    }

    async fn purge_tombstones(&self, cutoff: Timestamp) -> Result<u64, StoreError> {
        let mut tx = self.begin_write().await?;
        let result = sqlx::query("DELETE FROM leases WHERE state <> 'active' AND updated_at < $1")
            .bind(cutoff.unix_seconds())
            .execute(&mut *tx)
            .await
            .map_err(|e| db_error("purge tombstones", e))?;
        commit(tx).await?;
        Ok(result.rows_affected())
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        let by_state: Vec<(String, i64)> =
            sqlx::query_as("SELECT state, COUNT(*) FROM leases GROUP BY state")
                .fetch_all(&self.pool)
                .await
                .map_err(|e| db_error("count leases", e))?;
        let mut stats = StoreStats {
            by_state: StateCounts::default(),
            ..StoreStats::default()
        };
        for (state, count) in by_state {
            let count = u64::try_from(count).unwrap_or(0);
            match state.parse::<LeaseState>() {
                Ok(LeaseState::Active) => stats.by_state.active = count,
                Ok(LeaseState::Released) => stats.by_state.released = count,
                Ok(LeaseState::Expired) => stats.by_state.expired = count,
                Err(e) => return Err(db_error("corrupt state", e)),
            }
        }
        let ports: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM leases WHERE state = 'active' AND bind_socket IS NULL",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(|e| db_error("count used ports", e))?;
        stats.active_ports = u64::try_from(ports).unwrap_or(0);
        let per_owner: Vec<(String, i64)> = sqlx::query_as(
            "SELECT owner, COUNT(*) FROM leases WHERE state = 'active' GROUP BY owner",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(|e| db_error("count leases per owner", e))?;
        for (owner, count) in per_owner {
            let owner: Owner = owner.parse().map_err(|e| db_error("corrupt owner", e))?;
            stats
                .active_per_owner
                .insert(owner, u64::try_from(count).unwrap_or(0));
        }
        Ok(stats)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM leases")
            .fetch_one(&self.pool)
            .await
            .map(|_| ())
            .map_err(|e| db_error("query leases", e))
    }
}
