//! The lease service: the store, the route backend and the policy composed into the ctl
//! verbs and the two maintenance passes (cleanup and reconcile).
//!
//! The database is the source of truth. Allocation commits the lease, then writes its
//! route; if the route cannot be written the lease is deleted again and the caller gets
//! `caddy_unavailable`, so no active lease is ever left without an attempt at a route.
//! Release and delete commit first and then remove the route; a route that cannot be
//! removed is logged and left to reconcile, because the lease has ended either way.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mytunnel_core::calls::CtlCall;
use mytunnel_core::policy::{Caller, OwnerScope, ReservedSlugs};
use mytunnel_core::protocol::{
    AllocateRequest, ApiError, ComponentHealth, CtlRequest, CtlResponse, DeletedDto, ErrorCode,
    HealthDto, LeaseDto, PortUsage, ReconcileDto, StatsDto, Takeover,
};
use mytunnel_core::route::{plan_reconcile, route_id, Route, RouteBackend, RouteError};
use mytunnel_core::store::{AllocateSpec, EdgeRecord, LeaseStore, NameChoice, OwnerLimit};
use mytunnel_core::{
    BaseDomain, EdgeId, EdgeUrl, Host, Lease, LeaseId, LeaseRef, LeaseState, PortRange, Timestamp,
    Ttl,
};

use crate::config::EdgeConfig;
use crate::metrics::{result_code, Metrics};
use crate::tunnel_ends::{NoTunnelEnds, TunnelEnd, TunnelEnds};
use crate::{ids, sockets};

/// Where the service reads the time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The current time.
    fn now(&self) -> Timestamp;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_system_time(SystemTime::now())
    }
}

/// How many generated names one allocation tries.
const GENERATED_CANDIDATES: usize = 8;

/// Most directory entries one cleanup pass looks at in the owners' socket directories.
const SWEEP_BUDGET: usize = 4096;

/// How long the socket of a lease that ended stays its own end's to finish: the cleanup
/// pass's sweep of sockets no lease binds leaves it alone until then. Ending a lease's
/// traffic takes a few seconds at most (see [`crate::tunnel_ends`]); a sweep that raced it
/// would end the owner's connections without sparing the one that asked for the end.
pub const ENDED_SOCKET_HANDOFF: Duration = Duration::from_secs(30);

/// The settings the service needs (a subset of [`EdgeConfig`]).
#[derive(Debug, Clone)]
pub struct ServiceSettings {
    /// Hosts are `<slug>.<base_domain>`; `None` refuses allocation.
    pub base_domain: Option<BaseDomain>,
    /// Edge ports for leases.
    pub ports: PortRange,
    /// TTL when the client asks for none.
    pub lease_ttl: Ttl,
    /// Cap on active leases per owner.
    pub owner_limit: OwnerLimit,
    /// Names no lease may take.
    pub reserved_slugs: ReservedSlugs,
    /// How long tombstones are kept.
    pub tombstone_retention: Duration,
    /// Bound on each health probe.
    pub health_timeout: Duration,
    /// Where new leases bind their data plane.
    pub bind_plan: BindPlan,
}

/// Where new leases bind their data plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindPlan {
    /// A loopback port of the range: only for an edge inside one process (tests, the
    /// in-process transport), where no other user can listen.
    Ports,
    /// A unix socket in `<owners_dir>/<owner>/`: what every edge configuration uses.
    OwnerSockets {
        /// `<socket_dir>/owners`.
        owners_dir: PathBuf,
    },
}

impl From<&EdgeConfig> for ServiceSettings {
    fn from(config: &EdgeConfig) -> Self {
        ServiceSettings {
            base_domain: config.base_domain.clone(),
            ports: config.ports,
            lease_ttl: config.lease_ttl,
            owner_limit: config.owner_limit,
            reserved_slugs: config.reserved_slugs.clone(),
            tombstone_retention: config.tombstone_retention,
            health_timeout: config.health_timeout,
            // Both route modes: a port would be listened on over TCP, where sshd
            // cannot tell one tenant's port from another's after login.
            bind_plan: BindPlan::OwnerSockets {
                owners_dir: sockets::owners_dir(&config.socket_dir),
            },
        }
    }
}

/// What one cleanup pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CleanupReport {
    /// Leases expired (tombstoned) this pass.
    pub expired: Vec<LeaseId>,
    /// Tombstones purged.
    pub purged: u64,
    /// Routes of expired leases that could not be removed (reconcile will).
    pub route_errors: Vec<String>,
    /// Connections ended because they listened on a socket of an owner's directory that
    /// no active lease binds.
    pub strays_ended: Vec<PathBuf>,
    /// Stray sockets nothing listens on (the owner's next `ctl` removes them).
    pub strays_stale: usize,
    /// Stray sockets whose listener could not be ended, and why.
    pub stray_errors: Vec<String>,
}

/// What one reconcile pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Counts of changes applied.
    pub counts: ReconcileDto,
    /// Changes that failed.
    pub errors: Vec<String>,
}

/// This edge among the edges that share one lease database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeIdentity {
    /// Its id (`MYTUNNEL_EDGE_ID`): the leases allocated through it record it.
    pub id: EdgeId,
    /// Where the other edges' Caddy reaches its Caddy (`MYTUNNEL_EDGE_URL`); `None`: the
    /// other edges do not forward to it.
    pub url: Option<EdgeUrl>,
}

impl Default for EdgeIdentity {
    fn default() -> Self {
        EdgeIdentity {
            id: EdgeId::local(),
            url: None,
        }
    }
}

/// How recently another edge must have registered to be forwarded to when a tunnel of
/// this edge cannot be dialled (an edge taken away stops being tried).
pub const FALLBACK_EDGE_SEEN_WITHIN: Duration = Duration::from_secs(600);

/// The edges an own route falls back to: those that registered within
/// [`FALLBACK_EDGE_SEEN_WITHIN`] with a URL of one scheme (one Caddy handler has one
/// transport): this edge's own scheme, else the first one's. In id order.
pub fn fallback_edges(
    edges: &[EdgeRecord],
    own_url: Option<&EdgeUrl>,
    now: Timestamp,
) -> Vec<EdgeUrl> {
    let recent = now.saturating_sub(FALLBACK_EDGE_SEEN_WITHIN);
    let urls: Vec<&EdgeUrl> = edges
        .iter()
        .filter(|e| e.seen_at >= recent)
        .filter_map(|e| e.url.as_ref())
        .collect();
    let Some(https) = own_url.or(urls.first().copied()).map(EdgeUrl::is_https) else {
        return Vec::new();
    };
    urls.into_iter()
        .filter(|u| u.is_https() == https)
        .cloned()
        .collect()
}

/// The edge's lease service.
#[derive(Debug, Clone)]
pub struct LeaseService {
    store: Arc<dyn LeaseStore>,
    routes: Arc<dyn RouteBackend>,
    clock: Arc<dyn Clock>,
    settings: ServiceSettings,
    /// Shared while routes change after lease changes (which the route backend may
    /// coalesce), exclusive for a whole reconcile pass: a pass plans from the leases it
    /// read, so a release committed meanwhile removes its route after the pass, never
    /// before a stale add of the pass (which would leave a route to a port or socket the
    /// next lease gets).
    route_turn: Arc<tokio::sync::RwLock<()>>,
    /// Ends the traffic of leases that end (their owner's ssh connection).
    tunnel_ends: Arc<dyn TunnelEnds>,
    /// Shared by each lease end from its commit until its traffic has ended; an
    /// allocation takes it exclusively, for a moment, before it writes its route. So a
    /// name taken by a new lease is never routed while the previous lease's tunnel may
    /// still answer for it (Caddy's pooled connections to a host link).
    handover: Arc<tokio::sync::RwLock<()>>,
    /// Where the next sweep of the owners' directories starts (see
    /// [`sockets::owner_sockets`]).
    sweep_start: Arc<std::sync::atomic::AtomicUsize>,
    /// What serve's metrics count (nothing unless serve answers scrapes).
    metrics: Metrics,
    /// This edge among those sharing the database.
    edge: EdgeIdentity,
    /// The other edges this edge's own routes fall back to, as the last reconcile pass
    /// found them (new leases' routes use it until the next).
    fallback: Arc<std::sync::RwLock<Vec<EdgeUrl>>>,
}

/// Runs one health probe within `timeout`.
async fn component_health<E: std::fmt::Display>(
    timeout: Duration,
    probe: impl std::future::Future<Output = Result<(), E>>,
) -> ComponentHealth {
    let (ok, detail) = match tokio::time::timeout(timeout, probe).await {
        Ok(Ok(())) => (true, "ok".to_owned()),
        Ok(Err(e)) => (false, e.to_string()),
        Err(_) => (false, format!("no answer within {timeout:?}")),
    };
    ComponentHealth { ok, detail }
}

fn caddy_unavailable(what: &str, e: impl std::fmt::Display) -> ApiError {
    ApiError::new(ErrorCode::CaddyUnavailable, format!("{what}: {e}"))
}

impl LeaseService {
    /// A service over a store and a route backend.
    pub fn new(
        store: Arc<dyn LeaseStore>,
        routes: Arc<dyn RouteBackend>,
        clock: Arc<dyn Clock>,
        settings: ServiceSettings,
    ) -> Self {
        LeaseService {
            store,
            routes,
            clock,
            settings,
            route_turn: Arc::default(),
            tunnel_ends: Arc::new(NoTunnelEnds),
            handover: Arc::default(),
            sweep_start: Arc::default(),
            metrics: Metrics::default(),
            edge: EdgeIdentity::default(),
            fallback: Arc::default(),
        }
    }

    /// The same service as edge `edge` among several sharing the database: its routes
    /// then forward to the others (see [`Route::to_edge`] and [`Route::for_own_lease`]).
    #[must_use]
    pub fn with_edge(mut self, edge: EdgeIdentity) -> Self {
        self.edge = edge;
        self
    }

    /// The route of this edge's own lease: with the other edges to fall back to, when
    /// there are any and the backend can hold them.
    fn own_route(&self, lease: &Lease) -> Route {
        let route = Route::for_lease(lease);
        if !self.routes.falls_back(&route.upstream) {
            return route;
        }
        let fallback = match self.fallback.read() {
            Ok(list) => list.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        Route::for_own_lease(lease, &self.edge.id, fallback)
    }

    /// The same service, counting allocations, releases and expiries in `metrics` (serve
    /// with `MYTUNNEL_METRICS_LISTEN`; the default counts nothing).
    #[must_use]
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// The metrics it records into.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The same service, ending the traffic of ended leases with `tunnel_ends` (serve
    /// uses [`SshListenerEnds`](crate::tunnel_ends::SshListenerEnds); the default does
    /// nothing, for edges inside one process).
    #[must_use]
    pub fn with_tunnel_ends(mut self, tunnel_ends: Arc<dyn TunnelEnds>) -> Self {
        self.tunnel_ends = tunnel_ends;
        self
    }

    /// The store (for tests and tools).
    pub fn store(&self) -> &Arc<dyn LeaseStore> {
        &self.store
    }

    /// The route backend.
    pub fn routes(&self) -> &Arc<dyn RouteBackend> {
        &self.routes
    }

    /// Runs one ctl request for `caller`.
    pub async fn handle(
        &self,
        caller: &Caller,
        request: CtlRequest,
    ) -> Result<CtlResponse, ApiError> {
        caller.authorize_verb(request.verb())?;
        match request {
            CtlRequest::Allocate(req) => self
                .allocate(caller, req)
                .await
                .map(|l| CtlResponse::Lease(LeaseDto::from(&l))),
            CtlRequest::Heartbeat { lease } => {
                let lease = self
                    .store
                    .heartbeat(caller.owner(), &lease, self.clock.now())
                    .await?;
                Ok(CtlResponse::Lease(LeaseDto::from(&lease)))
            }
            CtlRequest::Release { lease } => self
                .release(caller, &lease)
                .await
                .map(|l| CtlResponse::Lease(LeaseDto::from(&l))),
            CtlRequest::Delete { lease } => {
                let deleted = self.delete(caller, &lease).await?;
                Ok(CtlResponse::Deleted(DeletedDto {
                    deleted: deleted.id,
                }))
            }
            CtlRequest::List(scope) => {
                let scope = caller.list_scope(scope)?;
                let leases = self.store.list(&scope).await?;
                Ok(CtlResponse::Leases(
                    leases.iter().map(LeaseDto::from).collect(),
                ))
            }
            CtlRequest::Health => Ok(CtlResponse::Health(self.health().await)),
            CtlRequest::Reconcile => {
                let report = self.reconcile().await?;
                match report.errors.first() {
                    None => Ok(CtlResponse::Reconciled(report.counts)),
                    Some(first) => Err(ApiError::new(
                        ErrorCode::CaddyUnavailable,
                        format!(
                            "reconcile applied {} change(s) but {} failed; first: {first}",
                            report.counts.added + report.counts.removed + report.counts.fixed,
                            report.errors.len()
                        ),
                    )),
                }
            }
            CtlRequest::Stats => self.stats(caller).await.map(CtlResponse::Stats),
        }
    }

    /// Runs one typed call for `caller`: its reply, or the edge's refusal ([`handle`]
    /// with the reply decoded, for tools and tests).
    ///
    /// [`handle`]: LeaseService::handle
    pub async fn call<C: CtlCall>(&self, caller: &Caller, call: C) -> Result<C::Reply, ApiError> {
        let response = self.handle(caller, call.into_request()).await?;
        C::take_reply(response).map_err(|other| ApiError::new(ErrorCode::Internal, other))
    }

    /// `allocate`: policy, one store transaction, then the route (undone on failure).
    /// Counted in the metrics by its result.
    pub async fn allocate(
        &self,
        caller: &Caller,
        request: AllocateRequest,
    ) -> Result<Lease, ApiError> {
        let result = self.allocate_uncounted(caller, request).await;
        self.metrics.allocation(result_code(&result));
        result
    }

    async fn allocate_uncounted(
        &self,
        caller: &Caller,
        request: AllocateRequest,
    ) -> Result<Lease, ApiError> {
        let Some(base_domain) = self.settings.base_domain.clone() else {
            return Err(ApiError::new(
                ErrorCode::BaseDomainMissing,
                "the edge has no base domain configured",
            ));
        };
        caller.authorize_allocate(&request)?;
        let name = match request.name {
            Some(slug) => {
                self.settings.reserved_slugs.check(&slug)?;
                NameChoice::Exact(slug)
            }
            None => NameChoice::FirstFreeOf(
                ids::generated_slug_candidates(GENERATED_CANDIDATES)
                    .into_iter()
                    .filter(|s| !self.settings.reserved_slugs.contains(s))
                    .collect(),
            ),
        };
        if request.takeover == Takeover::Force || request.replaces.is_some() {
            // A takeover (or the owner's own replacement) deletes the holder's lease in
            // the store transaction; refuse before touching it if the routes cannot follow.
            self.routes
                .ping()
                .await
                .map_err(|e| caddy_unavailable("cannot take the name over", e))?;
        }
        let ttl = request.ttl.map_or(self.settings.lease_ttl, Ttl::clamped);
        let id = ids::new_lease_id();
        let (bind_socket, held_ports) = match &self.settings.bind_plan {
            BindPlan::Ports => (None, sockets::listening_loopback_ports(self.settings.ports)),
            BindPlan::OwnerSockets { owners_dir } => {
                let socket = sockets::lease_socket(owners_dir, caller.owner(), &id)?;
                (Some(socket), Vec::new())
            }
        };
        let allocation = self
            .store
            .allocate(AllocateSpec {
                id,
                bind_socket,
                held_ports,
                owner: caller.owner().clone(),
                name,
                takeover: request.takeover,
                replaces: request.replaces.clone(),
                ttl,
                base_domain,
                ports: self.settings.ports,
                owner_limit: self.settings.owner_limit,
                now: self.clock.now(),
            })
            .await?;
        let lease = allocation.lease;
        let route_result = match &allocation.displaced {
            Some(old) => {
                // By id, wherever it is: the displaced lease may be another edge's, which
                // this edge routes to that edge with a Caddy route that would come before
                // a `static` mode host link (a takeover is rare: the look costs little).
                let removed = {
                    let _turn = self.route_turn.read().await;
                    self.routes.remove(&route_id(&old.id)).await
                };
                // The displaced tenant's traffic ends before the name routes anew.
                self.tunnel_ends.end(old, caller.process()).await;
                match removed {
                    Ok(_) => self.upsert_after_handover(&lease).await,
                    Err(e) => Err(e),
                }
            }
            None => self.upsert_after_handover(&lease).await,
        };
        if let Err(route_error) = route_result {
            if let Err(undo_error) = self
                .store
                .delete(&lease.owner, &LeaseRef::Id(lease.id.clone()))
                .await
            {
                tracing::error!(lease = %lease.id, %undo_error, "could not undo a lease whose route failed");
            }
            // A half-written route of the undone lease would be an orphan: try to remove it.
            let _ = self.routes.remove(&route_id(&lease.id)).await;
            return Err(caddy_unavailable(
                "could not add the route; no lease was kept",
                route_error,
            ));
        }
        if let Some(old) = &allocation.displaced {
            if request.replaces.as_ref() == Some(&old.id) && old.owner == lease.owner {
                tracing::info!(new = %lease.id, replaced = %old.id, owner = %old.owner, "the owner's lease replaced");
            } else {
                tracing::info!(new = %lease.id, displaced = %old.id, owner = %old.owner, "forced takeover");
            }
        }
        Ok(lease)
    }

    /// Writes the route of a new lease once every lease end in progress has ended its
    /// traffic (see `handover`).
    async fn upsert_after_handover(&self, lease: &Lease) -> Result<(), RouteError> {
        drop(self.handover.write().await);
        let _turn = self.route_turn.read().await;
        self.routes.upsert(&self.own_route(lease)).await
    }

    /// `release`: tombstone, remove the route, end the tunnel's traffic. Counted in the
    /// metrics by its result (a route left to reconcile is still `ok`: the lease ended).
    pub async fn release(&self, caller: &Caller, lease: &LeaseRef) -> Result<Lease, ApiError> {
        let result = async {
            let _handover = self.handover.read().await;
            let released = self
                .store
                .release(caller.owner(), lease, self.clock.now())
                .await?;
            self.end_routes_and_traffic(&released, caller).await;
            Ok(released)
        }
        .await;
        self.metrics.release(result_code(&result));
        result
    }

    /// `delete`: delete the row, then remove the route and end the tunnel's traffic if
    /// the lease was active. Counted in the metrics as a release.
    pub async fn delete(&self, caller: &Caller, lease: &LeaseRef) -> Result<Lease, ApiError> {
        let result = async {
            let _handover = self.handover.read().await;
            let deleted = self.store.delete(caller.owner(), lease).await?;
            if deleted.state == LeaseState::Active {
                self.end_routes_and_traffic(&deleted, caller).await;
            }
            Ok(deleted)
        }
        .await;
        self.metrics.release(result_code(&result));
        result
    }

    /// After `caller` ended a lease: its route goes (or is left to reconcile, logged),
    /// then whatever still carries its traffic.
    async fn end_routes_and_traffic(&self, lease: &Lease, caller: &Caller) {
        {
            let _turn = self.route_turn.read().await;
            if let Err(e) = self.routes.remove_route(&Route::for_lease(lease)).await {
                tracing::warn!(lease = %lease.id, error = %e, "route not removed; reconcile will remove it");
            }
        }
        self.tunnel_ends.end(lease, caller.process()).await;
    }

    /// The active lease published at `host`, if any, whoever owns it: whether Caddy may
    /// get a certificate for it ([`crate::tls_ask`]).
    pub async fn active_lease_for_host(&self, host: &Host) -> Result<Option<Lease>, ApiError> {
        Ok(self.store.active_for_host(host, self.clock.now()).await?)
    }

    /// `health`: the database and the route backend, each within the health timeout.
    pub async fn health(&self) -> HealthDto {
        let timeout = self.settings.health_timeout;
        let db = component_health(timeout, self.store.ping()).await;
        let caddy = component_health(timeout, self.routes.ping()).await;
        HealthDto {
            healthy: db.ok && caddy.ok && self.settings.base_domain.is_some(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            base_domain: self
                .settings
                .base_domain
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            db,
            caddy,
        }
    }

    /// `stats`: counts by state, ports used, per-owner counts for admins.
    pub async fn stats(&self, caller: &Caller) -> Result<StatsDto, ApiError> {
        let stats = self.store.stats().await?;
        let ports = self.settings.ports;
        Ok(StatsDto {
            leases: stats.by_state,
            ports: PortUsage {
                used: stats.active_ports,
                total: u64::from(ports.len()),
                min_port: ports.min(),
                max_port: ports.max(),
            },
            per_owner: caller.sees_per_owner_stats().then(|| {
                stats
                    .active_per_owner
                    .into_iter()
                    .map(|(owner, n)| (owner.to_string(), n))
                    .collect::<BTreeMap<_, _>>()
            }),
        })
    }

    /// One cleanup pass: expire stale leases and remove their routes, purge old tombstones.
    /// The expired leases are counted in the metrics (or the failed expiry, by its code).
    pub async fn cleanup(&self) -> Result<CleanupReport, ApiError> {
        let now = self.clock.now();
        let handover = self.handover.read().await;
        let expired = match self.store.expire_stale(now).await {
            Ok(expired) => expired,
            Err(error) => {
                let error = ApiError::from(error);
                self.metrics.expiry_failed(error.code);
                return Err(error);
            }
        };
        self.metrics
            .expired(u64::try_from(expired.len()).unwrap_or(u64::MAX));
        let mut report = CleanupReport::default();
        let turn = self.route_turn.read().await;
        for lease in &expired {
            if let Err(e) = self.routes.remove_route(&Route::for_lease(lease)).await {
                report.route_errors.push(format!("{}: {e}", lease.id));
            }
            report.expired.push(lease.id.clone());
        }
        drop(turn);
        for lease in &expired {
            self.tunnel_ends.end(lease, None).await;
        }
        drop(handover);
        self.sweep_stray_sockets(&mut report).await?;
        report.purged = self
            .store
            .purge_tombstones(now.saturating_sub(self.settings.tombstone_retention))
            .await?;
        Ok(report)
    }

    /// Ends the connections that listen on sockets of the owners' directories that no
    /// active lease binds (a tenant binding sockets of its own choosing), looking at a
    /// bounded number of entries per pass. A lease that ended within
    /// [`ENDED_SOCKET_HANDOFF`] still counts: its own end finishes its socket.
    async fn sweep_stray_sockets(&self, report: &mut CleanupReport) -> Result<(), ApiError> {
        let BindPlan::OwnerSockets { owners_dir } = &self.settings.bind_plan else {
            return Ok(());
        };
        let start = self
            .sweep_start
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = owners_dir.clone();
        // Sockets before leases: a socket bound for a lease allocated meanwhile belongs
        // to a lease in the list read next.
        let candidates =
            tokio::task::spawn_blocking(move || sockets::owner_sockets(&dir, start, SWEEP_BUDGET))
                .await
                .unwrap_or_default();
        if candidates.is_empty() {
            return Ok(());
        }
        let recently = self.clock.now().saturating_sub(ENDED_SOCKET_HANDOFF);
        let leased: std::collections::HashSet<String> = self
            .store
            .list(&OwnerScope::All)
            .await?
            .into_iter()
            .filter(|l| l.state == LeaseState::Active || l.updated_at >= recently)
            .filter_map(|l| l.bind_socket.map(|s| s.as_str().to_owned()))
            .collect();
        for stray in candidates {
            if stray.path.to_str().is_some_and(|p| leased.contains(p)) {
                continue;
            }
            match stray.state {
                // A stale socket may still have connections open on it (a forward
                // cancelled while they stayed): ending them is the same call.
                sockets::SocketState::Bound | sockets::SocketState::Stale => {
                    if stray.state == sockets::SocketState::Stale {
                        report.strays_stale += 1;
                    }
                    match self
                        .tunnel_ends
                        .end_socket(&stray.path, stray.owner_uid, None)
                        .await
                    {
                        TunnelEnd::Ended { .. } | TunnelEnd::EndedOwnersConnections { .. } => {
                            report.strays_ended.push(stray.path)
                        }
                        TunnelEnd::Refused(why) => report.stray_errors.push(why),
                        TunnelEnd::NotASocket | TunnelEnd::NothingListens => {}
                    }
                }
                sockets::SocketState::Absent | sockets::SocketState::Unknown => {}
            }
        }
        Ok(())
    }

    /// The routes this edge's Caddy must hold: its own leases' (falling back to the other
    /// edges), and a route to the holding edge for each lease of another edge that the
    /// others can reach. Registers this edge first, so the others know where it is.
    async fn wanted_routes(&self) -> Result<Vec<Route>, ApiError> {
        let now = self.clock.now();
        self.store
            .register_edge(self.edge.url.as_ref(), now)
            .await?;
        let own = self.store.active_on_this_edge().await?;
        let elsewhere = self.store.elsewhere().await?;
        let fallback = fallback_edges(&elsewhere.edges, self.edge.url.as_ref(), now);
        match self.fallback.write() {
            Ok(mut list) => *list = fallback,
            Err(poisoned) => *poisoned.into_inner() = fallback,
        }
        let mut wanted: Vec<Route> = own.iter().map(|lease| self.own_route(lease)).collect();
        for (lease, holder) in &elsewhere.leases {
            let url = elsewhere
                .edges
                .iter()
                .find(|edge| &edge.id == holder)
                .and_then(|edge| edge.url.clone());
            if let Some(url) = url {
                wanted.push(Route::to_edge(lease, url, &self.edge.id));
            }
        }
        Ok(wanted)
    }

    /// One reconcile pass: make the routes match the active leases.
    ///
    /// Routes are listed before leases, so a lease allocated during the pass is never
    /// mistaken for an orphan (its route is either not listed yet, or its lease is).
    pub async fn reconcile(&self) -> Result<ReconcileReport, ApiError> {
        let _turn = self.route_turn.write().await;
        self.routes
            .prepare()
            .await
            .map_err(|e| caddy_unavailable("could not prepare the routes", e))?;
        let installed = self
            .routes
            .list()
            .await
            .map_err(|e| caddy_unavailable("could not list routes", e))?;
        let wanted = self.wanted_routes().await?;
        let plan = plan_reconcile(&wanted, &installed);
        let mut report = ReconcileReport::default();
        for id in &plan.remove {
            match self.routes.remove(id).await {
                Ok(_) => report.counts.removed += 1,
                Err(e) => report.errors.push(format!("remove {id}: {e}")),
            }
        }
        for route in &plan.add {
            match self.routes.upsert(route).await {
                Ok(()) => report.counts.added += 1,
                Err(e) => report.errors.push(format!("add {}: {e}", route.id())),
            }
        }
        for route in &plan.fix {
            match self.routes.upsert(route).await {
                Ok(()) => report.counts.fixed += 1,
                Err(e) => report.errors.push(format!("fix {}: {e}", route.id())),
            }
        }
        Ok(report)
    }
}
