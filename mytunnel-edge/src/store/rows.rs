//! Rows to leases, and the queries the writes share (each inside the caller's transaction).

use super::*;

/// Reads one row into a lease, refusing anything that does not parse.
pub(super) fn lease_from_row(row: &AnyRow) -> Result<Lease, StoreError> {
    fn col<'r, T: sqlx::Decode<'r, Any> + sqlx::Type<Any>>(
        row: &'r AnyRow,
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

/// Reads the `edge_id` column, refusing one that does not parse.
pub(super) fn edge_of_row(row: &AnyRow) -> Result<EdgeId, StoreError> {
    let text: String = row
        .try_get("edge_id")
        .map_err(|e| db_error("read column edge_id", e))?;
    text.parse()
        .map_err(|e: mytunnel_core::InvalidValue| db_error("corrupt edge_id", e))
}

/// Reads one row of `edges`. A URL that does not parse is no URL: the edge is not
/// forwarded to, and nothing panics on a hand-edited table.
pub(super) fn edge_from_row(row: &AnyRow) -> Result<EdgeRecord, StoreError> {
    let url: Option<String> = row
        .try_get("url")
        .map_err(|e| db_error("read column url", e))?;
    let seen_at: i64 = row
        .try_get("seen_at")
        .map_err(|e| db_error("read column seen_at", e))?;
    Ok(EdgeRecord {
        id: edge_of_row(row)?,
        url: url.and_then(|u| u.parse().ok()),
        seen_at: Timestamp::from_unix_seconds(seen_at)
            .map_err(|e| db_error("corrupt seen_at", e))?,
    })
}

/// Finds the lease a reference names, among `owner`'s leases only.
pub(super) async fn find_for_owner(
    tx: &mut sqlx::AnyConnection,
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

pub(super) async fn active_by_slug(
    tx: &mut sqlx::AnyConnection,
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
pub(super) async fn tombstone(
    tx: &mut sqlx::AnyConnection,
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

pub(super) async fn commit(tx: Transaction<'static, Any>) -> Result<(), StoreError> {
    tx.commit().await.map_err(|e| db_error("commit", e))
}
