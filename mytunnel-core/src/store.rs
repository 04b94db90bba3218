//! The lease store: the one source of truth about leases.
//!
//! Every write is one transaction, so that under any number of concurrent ctl processes
//! no two active leases share a slug, host or port. The edge implements this on SQLite,
//! or on PostgreSQL, which several edges may share: each lease then records the edge
//! that holds its tunnel.

use std::collections::BTreeMap;

use async_trait::async_trait;

use crate::names::{EdgeId, EdgeUrl, Host, LeaseId, LeaseRef, Owner, Slug};
use crate::policy::OwnerScope;
use crate::protocol::{ApiError, ErrorCode, StateCounts, Takeover};
use crate::{BaseDomain, Lease, LeaseState, PortRange, SocketPath, Timestamp, Ttl};

/// The other edges sharing a database, as [`LeaseStore::elsewhere`] reads them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Elsewhere {
    /// Each other edge that registered, in id order.
    pub edges: Vec<EdgeRecord>,
    /// Their active leases, each with the edge that holds it.
    pub leases: Vec<(Lease, EdgeId)>,
}

/// One edge as it registered itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeRecord {
    /// Its id.
    pub id: EdgeId,
    /// Where the other edges reach its Caddy; `None`: nowhere (or not a valid URL).
    pub url: Option<EdgeUrl>,
    /// When its serve last registered.
    pub seen_at: Timestamp,
}

/// How many active leases one owner may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnerLimit {
    /// No limit (configured as 0).
    Unlimited,
    /// At most this many.
    AtMost(u32),
}

impl OwnerLimit {
    /// The default, 10.
    pub const DEFAULT: OwnerLimit = OwnerLimit::AtMost(10);

    /// From the configured number: 0 means unlimited.
    pub fn from_config(n: u32) -> Self {
        if n == 0 {
            OwnerLimit::Unlimited
        } else {
            OwnerLimit::AtMost(n)
        }
    }

    /// Whether an owner holding `active` leases may take one more.
    pub fn allows_another(self, active: u64) -> bool {
        match self {
            OwnerLimit::Unlimited => true,
            OwnerLimit::AtMost(n) => active < u64::from(n),
        }
    }
}

/// Which name a new lease takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameChoice {
    /// Exactly this name, or `slug_taken` (unless taken over).
    Exact(Slug),
    /// The first of these generated names that is free (`slug_taken` if none is).
    FirstFreeOf(Vec<Slug>),
}

/// Everything one allocation needs; the caller has already applied policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllocateSpec {
    /// The id of the new lease, from a CSPRNG.
    pub id: LeaseId,
    /// The owner, from the caller's uid.
    pub owner: Owner,
    /// The name.
    pub name: NameChoice,
    /// What to do when an active lease holds the name. `Force` only with `NameChoice::Exact`.
    pub takeover: Takeover,
    /// The owner's own lease this one replaces (a client that moved edges): with
    /// `NameChoice::Exact`, an active holder of the name whose id is this and whose owner
    /// is `owner` is displaced as by a takeover. Anything else ignores it: a name held by
    /// another owner, or by another of the owner's leases, is still `slug_taken`.
    pub replaces: Option<LeaseId>,
    /// The lease's TTL.
    pub ttl: Ttl,
    /// The base domain hosts are made under.
    pub base_domain: BaseDomain,
    /// The ports to choose from.
    pub ports: PortRange,
    /// The unix socket the data plane binds instead of the port (`static` route mode).
    pub bind_socket: Option<SocketPath>,
    /// Ports something on the edge listens on right now, e.g. the `ssh -R` of a lease that
    /// ended while its connection stayed up. Never given to the new lease: its host would
    /// be routed to whoever holds the port.
    pub held_ports: Vec<u16>,
    /// The owner's cap on active leases.
    pub owner_limit: OwnerLimit,
    /// The current time.
    pub now: Timestamp,
}

/// The result of an allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    /// The new active lease.
    pub lease: Lease,
    /// The lease a forced takeover (or the owner's `replaces`) deleted, whose route must go.
    pub displaced: Option<Lease>,
}

/// Counts the store keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Leases by state.
    pub by_state: StateCounts,
    /// Active leases per owner.
    pub active_per_owner: BTreeMap<Owner, u64>,
    /// Active leases that hold an edge port (those binding a socket hold none).
    pub active_ports: u64,
}

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// Another active lease holds the name.
    #[error("the name {0} is taken by an active lease")]
    SlugTaken(Slug),
    /// No port of the range is free.
    #[error("every port of {min}-{max} is held by an active lease", min = .0.min(), max = .0.max())]
    NoFreePort(PortRange),
    /// The owner already holds as many active leases as allowed.
    #[error("{owner} already has {active} active leases (the limit)")]
    OwnerLimit {
        /// The owner.
        owner: Owner,
        /// How many they hold.
        active: u64,
    },
    /// No lease of this owner matches.
    #[error("no lease {0} found")]
    NotFound(String),
    /// The lease is released or expired.
    #[error("lease {0} is not active")]
    NotActive(LeaseId),
    /// The database failed.
    #[error("lease database error: {0}")]
    Db(String),
}

impl StoreError {
    /// The protocol error code.
    pub fn code(&self) -> ErrorCode {
        match self {
            StoreError::SlugTaken(_) => ErrorCode::SlugTaken,
            StoreError::NoFreePort(_) => ErrorCode::NoFreePort,
            StoreError::OwnerLimit { .. } => ErrorCode::OwnerLimit,
            StoreError::NotFound(_) => ErrorCode::LeaseNotFound,
            StoreError::NotActive(_) => ErrorCode::LeaseNotActive,
            StoreError::Db(_) => ErrorCode::DbError,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::new(e.code(), e.to_string())
    }
}

/// Where leases live.
///
/// Owner-scoped operations never reveal another owner's lease: it answers
/// [`StoreError::NotFound`] exactly as a lease that does not exist.
#[async_trait]
pub trait LeaseStore: Send + Sync + std::fmt::Debug {
    /// Reserves a name and the lowest free port in one transaction. Checks, in this
    /// order: the name (taking over an active holder if `takeover` is `Force`, or if it
    /// is the owner's own lease `replaces` names), the owner's limit (not counting a
    /// lease the owner displaces), the port range.
    async fn allocate(&self, spec: AllocateSpec) -> Result<Allocation, StoreError>;

    /// Records this edge as present at `now`, and where the other edges reach its Caddy
    /// (`None`: they do not forward to it). Nothing for a store only one edge uses.
    async fn register_edge(&self, url: Option<&EdgeUrl>, now: Timestamp) -> Result<(), StoreError> {
        let _ = (url, now);
        Ok(())
    }

    /// The other edges sharing the database, and the active leases they hold. Empty for
    /// a store only one edge uses.
    async fn elsewhere(&self) -> Result<Elsewhere, StoreError> {
        Ok(Elsewhere::default())
    }

    /// The active leases whose tunnels this edge holds (the ones allocated through it),
    /// which its routes serve. Several edges may share one store's database; a store only
    /// one edge uses holds nothing else, so by default this is every active lease.
    async fn active_on_this_edge(&self) -> Result<Vec<Lease>, StoreError> {
        Ok(self
            .list(&OwnerScope::All)
            .await?
            .into_iter()
            .filter(|l| l.state == LeaseState::Active)
            .collect())
    }

    /// Extends an active lease of `owner` to `now + ttl`.
    async fn heartbeat(
        &self,
        owner: &Owner,
        id: &LeaseId,
        now: Timestamp,
    ) -> Result<Lease, StoreError>;

    /// Tombstones an active lease of `owner` as `released`.
    async fn release(
        &self,
        owner: &Owner,
        lease: &LeaseRef,
        now: Timestamp,
    ) -> Result<Lease, StoreError>;

    /// Deletes a lease of `owner` (a host or slug names an active lease; an id any lease)
    /// and returns it as it was.
    async fn delete(&self, owner: &Owner, lease: &LeaseRef) -> Result<Lease, StoreError>;

    /// One lease of `owner`.
    async fn get(&self, owner: &Owner, lease: &LeaseRef) -> Result<Lease, StoreError>;

    /// One lease by id, whoever owns it; `None` when there is none. For the edge's own
    /// passes (serve linking a lease's host), never for a caller's request.
    async fn find(&self, id: &LeaseId) -> Result<Option<Lease>, StoreError>;

    /// The active lease published at `host` whose TTL has not run out at `now`, whoever
    /// owns it; `None` when there is none. For the edge's own checks (may Caddy get a
    /// certificate for this host?), never for a caller's request.
    async fn active_for_host(
        &self,
        host: &Host,
        now: Timestamp,
    ) -> Result<Option<Lease>, StoreError>;

    /// Leases in scope, active first, then newest first.
    async fn list(&self, scope: &OwnerScope) -> Result<Vec<Lease>, StoreError>;

    /// Tombstones every active lease whose `expires_at` is at or before `now` as `expired`
    /// and returns them (their routes must go).
    async fn expire_stale(&self, now: Timestamp) -> Result<Vec<Lease>, StoreError>;

    /// Deletes tombstones last updated before `cutoff`; returns how many.
    async fn purge_tombstones(&self, cutoff: Timestamp) -> Result<u64, StoreError>;

    /// Counts by state and per owner.
    async fn stats(&self) -> Result<StoreStats, StoreError>;

    /// Whether the store answers at all (for `health`).
    async fn ping(&self) -> Result<(), StoreError>;
}
