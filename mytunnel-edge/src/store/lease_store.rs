//! The [`LeaseStore`] verbs on SQLite: one `BEGIN IMMEDIATE` transaction per write.

use super::*;

#[async_trait]
impl LeaseStore for SqlLeaseStore {
    async fn allocate(&self, spec: AllocateSpec) -> Result<Allocation, StoreError> {
        let mut tx = self.begin_write().await?;

        // 1. The name, and the lease a forced takeover displaces.
        let (slug, displaced) = match &spec.name {
            NameChoice::Exact(slug) => match active_by_slug(&mut tx, slug).await? {
                None => (slug.clone(), None),
                Some(holder) if spec.takeover == Takeover::Force => (slug.clone(), Some(holder)),
                // The owner's own lease, which this one replaces (it moved edges).
                Some(holder)
                    if spec.replaces.as_ref() == Some(&holder.id) && holder.owner == spec.owner =>
                {
                    (slug.clone(), Some(holder))
                }
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
             expires_at, edge_id) \
             VALUES ($1, $2, $3, $2, $3, $4, $5, $9, 'active', $6, $7, $7, $8, $10)",
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
        .bind(self.edge_id.as_str())
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

    async fn active_for_host(
        &self,
        host: &Host,
        now: Timestamp,
    ) -> Result<Option<Lease>, StoreError> {
        // `host` is unique (an index), and tombstones carry their state's prefix: one
        // index lookup on the read pool, which a writer never blocks (WAL).
        let row = sqlx::query(&format!(
            "SELECT {LEASE_COLUMNS} FROM leases \
             WHERE host = $1 AND state = 'active' AND expires_at > $2"
        ))
        .bind(host.as_str())
        .bind(now.unix_seconds())
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| db_error("look up host", e))?;
        row.as_ref().map(lease_from_row).transpose()
    }

    async fn register_edge(&self, url: Option<&EdgeUrl>, now: Timestamp) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO edges (edge_id, url, seen_at) VALUES ($1, $2, $3) \
             ON CONFLICT (edge_id) DO UPDATE SET url = excluded.url, seen_at = excluded.seen_at",
        )
        .bind(self.edge_id.as_str())
        .bind(url.map(ToString::to_string))
        .bind(now.unix_seconds())
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error("register this edge", e))?;
        commit(tx).await
    }

    async fn elsewhere(&self) -> Result<Elsewhere, StoreError> {
        let edges = sqlx::query(
            "SELECT edge_id, url, seen_at FROM edges WHERE edge_id <> $1 ORDER BY edge_id",
        )
        .bind(self.edge_id.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(|e| db_error("list the other edges", e))?
        .iter()
        .map(edge_from_row)
        .collect::<Result<Vec<_>, _>>()?;
        let rows = sqlx::query(&format!(
            "SELECT {LEASE_COLUMNS}, edge_id FROM leases WHERE state = 'active' AND edge_id <> $1 \
             ORDER BY created_at DESC, lease_id"
        ))
        .bind(self.edge_id.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(|e| db_error("list the other edges' leases", e))?;
        let leases = rows
            .iter()
            .map(|row| Ok((lease_from_row(row)?, edge_of_row(row)?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(Elsewhere { edges, leases })
    }

    async fn active_on_this_edge(&self) -> Result<Vec<Lease>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {LEASE_COLUMNS} FROM leases WHERE state = 'active' AND edge_id = $1 \
             ORDER BY created_at DESC, lease_id"
        ))
        .bind(self.edge_id.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(|e| db_error("list this edge's active leases", e))?;
        rows.iter().map(lease_from_row).collect()
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
        // Another edge's leases only past the grace: that edge expires its own first, and
        // ends their routes and tunnels; this one steps in when that edge's serve is down.
        let others_cutoff = now.saturating_sub(self.other_edges_grace);
        let rows = sqlx::query(&format!(
            "SELECT {LEASE_COLUMNS} FROM leases WHERE state = 'active' \
             AND expires_at <= CASE WHEN edge_id = $2 THEN $1 ELSE $3 END \
             ORDER BY expires_at, lease_id"
        ))
        .bind(now.unix_seconds())
        .bind(self.edge_id.as_str())
        .bind(others_cutoff.unix_seconds())
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
