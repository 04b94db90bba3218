//! Routes: how a public host reaches a lease's edge bind target.
//!
//! A route is derived from its lease, so backends never invent state. The Caddy backend
//! writes one route per lease; a reload-free backend can implement the same trait.

use std::collections::BTreeMap;

use async_trait::async_trait;

use crate::names::{EdgeId, EdgeUrl, Host, LeaseId};
use crate::{BindTarget, Lease, SocketPath};

/// The request header that marks a request one edge forwarded to another, naming the
/// edge that forwarded it: a request that carries it is never forwarded again, so no
/// request goes round between edges.
pub const VIA_HEADER: &str = "X-Mytunnel-Via";

/// Every route mytunnel owns has an `@id` starting with this.
pub const ROUTE_ID_PREFIX: &str = "mytunnel-";

/// Where a route sends requests.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Upstream {
    /// A loopback TCP port on the edge, bound by the lease's `ssh -R`.
    LoopbackPort(u16),
    /// A unix socket on the edge, bound by the lease's `ssh -R`.
    UnixSocket(SocketPath),
    /// Another edge sharing the lease database, which holds the lease's tunnel.
    Edge(EdgeUrl),
}

impl From<BindTarget> for Upstream {
    fn from(target: BindTarget) -> Self {
        match target {
            BindTarget::LoopbackPort(port) => Upstream::LoopbackPort(port),
            BindTarget::UnixSocket(path) => Upstream::UnixSocket(path),
        }
    }
}

/// The route of one lease.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Route {
    /// The lease it belongs to.
    pub lease_id: LeaseId,
    /// The public host it matches.
    pub host: Host,
    /// Where it proxies to.
    pub upstream: Upstream,
    /// How it forwards to other edges; `None` on an edge that shares its database with
    /// no other (and then a route is exactly what it was before edges were shared).
    pub forwarding: Option<Forwarding>,
}

/// A route's part in forwarding between the edges that share one lease database.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Forwarding {
    /// This edge, named in [`VIA_HEADER`] on what it forwards.
    pub via: EdgeId,
    /// For this edge's own lease, the other edges, in order, to forward to when its
    /// upstream cannot be dialled (its tunnel moved away while this edge's `serve` could
    /// not update the route). Empty for a route to another edge.
    pub fallback: Vec<EdgeUrl>,
}

impl Route {
    /// The route an active lease of this edge must have, on an edge alone.
    pub fn for_lease(lease: &Lease) -> Route {
        Route {
            lease_id: lease.id.clone(),
            host: lease.host.clone(),
            upstream: lease.bind_target().into(),
            forwarding: None,
        }
    }

    /// The route of this edge's own lease when other edges share the database: its
    /// tunnel, and when that cannot be dialled, the other edges in order.
    /// Without other edges to fall back to, it is [`Route::for_lease`].
    pub fn for_own_lease(lease: &Lease, via: &EdgeId, fallback: Vec<EdgeUrl>) -> Route {
        Route {
            forwarding: (!fallback.is_empty()).then(|| Forwarding {
                via: via.clone(),
                fallback,
            }),
            ..Route::for_lease(lease)
        }
    }

    /// The route of another edge's lease: requests for its host go to the edge that holds
    /// its tunnel, unless another edge forwarded them here already.
    pub fn to_edge(lease: &Lease, holder: EdgeUrl, via: &EdgeId) -> Route {
        Route {
            lease_id: lease.id.clone(),
            host: lease.host.clone(),
            upstream: Upstream::Edge(holder),
            forwarding: Some(Forwarding {
                via: via.clone(),
                fallback: Vec::new(),
            }),
        }
    }

    /// The backend id: `mytunnel-<lease_id>`.
    pub fn id(&self) -> String {
        route_id(&self.lease_id)
    }
}

/// The backend id of a lease's route.
pub fn route_id(lease_id: &LeaseId) -> String {
    format!("{ROUTE_ID_PREFIX}{lease_id}")
}

/// The lease id in a route id, if it is one of ours.
pub fn lease_id_of_route(route_id: &str) -> Option<LeaseId> {
    route_id.strip_prefix(ROUTE_ID_PREFIX)?.parse().ok()
}

/// A route backend failed (maps to `caddy_unavailable`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("route backend: {0}")]
pub struct RouteError(pub String);

/// A route found in a backend under a `mytunnel-` id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstalledRoute {
    /// Its full id, e.g. `mytunnel-lease_…`.
    pub id: String,
    /// The route, when it has the shape mytunnel writes; `None` for anything else
    /// (hand-edited, truncated, an id that names no lease id).
    pub route: Option<Route>,
}

/// Where routes live.
#[async_trait]
pub trait RouteBackend: Send + Sync + std::fmt::Debug {
    /// Makes the lease's route exist exactly as given (idempotent).
    async fn upsert(&self, route: &Route) -> Result<(), RouteError>;

    /// Removes every route with this id; `Ok(false)` when there was none.
    async fn remove(&self, route_id: &str) -> Result<bool, RouteError>;

    /// Removes the route a lease had, when the caller still knows it (release, expiry):
    /// a backend keyed by host can go straight to it. By default, [`Self::remove`] by id.
    async fn remove_route(&self, route: &Route) -> Result<bool, RouteError> {
        self.remove(&route.id()).await
    }

    /// Every route this backend holds under a `mytunnel-` id.
    async fn list(&self) -> Result<Vec<InstalledRoute>, RouteError>;

    /// Whether a route to `upstream` can hold a [`Forwarding::fallback`] (all of
    /// Caddy's can; `static` mode's host links cannot).
    fn falls_back(&self, upstream: &Upstream) -> bool {
        let _ = upstream;
        true
    }

    /// Whether the backend answers (for `health`).
    async fn ping(&self) -> Result<(), RouteError>;

    /// Makes the backend's fixed parts exist, such as `static` mode's one wildcard route;
    /// called at the start of every reconcile pass. Nothing by default.
    async fn prepare(&self) -> Result<(), RouteError> {
        Ok(())
    }
}

/// What one reconcile pass must change so that routes match the active leases.
///
/// Apply `remove` first, then `add` and `fix` (both are upserts).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconcilePlan {
    /// Routes of active leases that are missing.
    pub add: Vec<Route>,
    /// Routes of active leases that exist but are wrong, malformed or duplicated.
    pub fix: Vec<Route>,
    /// Route ids to remove: routes of no active lease, and duplicated ids (re-added by
    /// `fix`).
    pub remove: Vec<String>,
}

impl ReconcilePlan {
    /// Whether nothing needs to change.
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.fix.is_empty() && self.remove.is_empty()
    }
}

/// Compares the routes the leases call for (the truth: [`Route::for_lease`] of each
/// active lease, on an edge alone) with the routes a backend holds.
pub fn plan_reconcile(wanted: &[Route], installed: &[InstalledRoute]) -> ReconcilePlan {
    let mut by_id: BTreeMap<&str, Vec<&InstalledRoute>> = BTreeMap::new();
    for route in installed {
        by_id.entry(route.id.as_str()).or_default().push(route);
    }
    let mut plan = ReconcilePlan::default();
    let mut wanted_ids = std::collections::BTreeSet::new();
    for wanted in wanted {
        let wanted = wanted.clone();
        let id = wanted.id();
        match by_id.get(id.as_str()).map(Vec::as_slice) {
            None | Some([]) => plan.add.push(wanted),
            Some([one]) if one.route.as_ref() == Some(&wanted) => {}
            Some([_]) => plan.fix.push(wanted),
            Some(_) => {
                plan.remove.push(id.clone());
                plan.fix.push(wanted);
            }
        }
        wanted_ids.insert(id);
    }
    for id in by_id.keys() {
        if !wanted_ids.contains(*id) {
            plan.remove.push((*id).to_owned());
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{LeaseState, Timestamp, Ttl};
    use std::time::Duration;

    fn lease(id: &str, slug: &str, port: u16) -> Lease {
        Lease {
            id: id.parse().unwrap(),
            slug: slug.parse().unwrap(),
            host: format!("{slug}.t.example").parse().unwrap(),
            owner: "alice".parse().unwrap(),
            edge_bind_port: port,
            bind_socket: None,
            ttl: Ttl::configured(Duration::from_secs(120)),
            created_at: Timestamp::EPOCH,
            updated_at: Timestamp::EPOCH,
            expires_at: Timestamp::EPOCH,
            state: LeaseState::Active,
        }
    }

    #[test]
    fn route_ids() {
        let l = lease("lease_aaaaaaaaaaaaaaaa", "a", 21000);
        let r = Route::for_lease(&l);
        assert_eq!(r.id(), "mytunnel-lease_aaaaaaaaaaaaaaaa");
        assert_eq!(lease_id_of_route(&r.id()), Some(l.id));
        assert_eq!(lease_id_of_route("mytunnel-junk"), None);
        assert_eq!(lease_id_of_route("other"), None);
    }

    fn installed(route: &Route) -> InstalledRoute {
        InstalledRoute {
            id: route.id(),
            route: Some(route.clone()),
        }
    }

    #[test]
    fn plan_adds_fixes_and_removes() {
        let a = lease("lease_aaaaaaaaaaaaaaaa", "a", 21000);
        let b = lease("lease_bbbbbbbbbbbbbbbb", "b", 21001);
        let c = lease("lease_cccccccccccccccc", "c", 21002);
        let e = lease("lease_eeeeeeeeeeeeeeee", "e", 21004);
        let f = lease("lease_ffffffffffffffff", "f", 21005);
        let mut wrong_b = Route::for_lease(&b);
        wrong_b.upstream = Upstream::LoopbackPort(9);
        let orphan = Route::for_lease(&lease("lease_dddddddddddddddd", "d", 21003));
        let malformed_e = InstalledRoute {
            id: Route::for_lease(&e).id(),
            route: None,
        };
        let junk = InstalledRoute {
            id: "mytunnel-junk".into(),
            route: None,
        };
        let plan = plan_reconcile(
            &[&a, &b, &c, &e, &f].map(Route::for_lease),
            &[
                installed(&Route::for_lease(&a)),
                installed(&wrong_b),
                installed(&orphan),
                malformed_e,
                junk,
                installed(&Route::for_lease(&f)),
                installed(&Route::for_lease(&f)),
            ],
        );
        assert_eq!(plan.add, vec![Route::for_lease(&c)]);
        assert_eq!(
            plan.fix,
            vec![
                Route::for_lease(&b),
                Route::for_lease(&e),
                Route::for_lease(&f)
            ]
        );
        let mut removed = plan.remove.clone();
        removed.sort();
        let mut expected = vec![
            Route::for_lease(&f).id(),
            orphan.id(),
            "mytunnel-junk".to_owned(),
        ];
        expected.sort();
        assert_eq!(removed, expected);
        let settled = plan_reconcile(&[Route::for_lease(&a)], &[installed(&Route::for_lease(&a))]);
        assert!(settled.is_empty());
    }
}
