//! Routes: how a public host reaches a lease's edge bind target.
//!
//! A route is derived from its lease, so backends never invent state. The Caddy backend
//! writes one route per lease; a reload-free backend can implement the same trait.

use std::collections::BTreeMap;

use async_trait::async_trait;

use crate::names::{Host, LeaseId};
use crate::Lease;

/// Every route mytunnel owns has an `@id` starting with this.
pub const ROUTE_ID_PREFIX: &str = "mytunnel-";

/// Where a route sends requests.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Upstream {
    /// A loopback TCP port on the edge, bound by the lease's `ssh -R`.
    LoopbackPort(u16),
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
}

impl Route {
    /// The route an active lease must have.
    pub fn for_lease(lease: &Lease) -> Route {
        Route {
            lease_id: lease.id.clone(),
            host: lease.host.clone(),
            upstream: Upstream::LoopbackPort(lease.edge_bind_port),
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

/// Where routes live.
#[async_trait]
pub trait RouteBackend: Send + Sync {
    /// Makes the lease's route exist exactly as given (idempotent).
    async fn upsert(&self, route: &Route) -> Result<(), RouteError>;

    /// Removes the route of a lease; `Ok(false)` when there was none.
    async fn remove(&self, lease_id: &LeaseId) -> Result<bool, RouteError>;

    /// Every route this backend holds for mytunnel (id prefix `mytunnel-`).
    async fn list(&self) -> Result<Vec<Route>, RouteError>;

    /// Whether the backend answers (for `health`).
    async fn ping(&self) -> Result<(), RouteError>;
}

/// What one reconcile pass must change so that routes match the active leases.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconcilePlan {
    /// Routes of active leases that are missing.
    pub add: Vec<Route>,
    /// Routes that exist but are wrong.
    pub fix: Vec<Route>,
    /// Routes that belong to no active lease.
    pub remove: Vec<LeaseId>,
}

/// Compares the active leases (the truth) with the routes a backend holds.
pub fn plan_reconcile(active: &[Lease], existing: &[Route]) -> ReconcilePlan {
    let existing: BTreeMap<&LeaseId, &Route> = existing.iter().map(|r| (&r.lease_id, r)).collect();
    let wanted: BTreeMap<&LeaseId, Route> = active
        .iter()
        .map(|lease| (&lease.id, Route::for_lease(lease)))
        .collect();
    let mut plan = ReconcilePlan::default();
    for (id, route) in &wanted {
        match existing.get(id) {
            None => plan.add.push(route.clone()),
            Some(current) if *current != route => plan.fix.push(route.clone()),
            Some(_) => {}
        }
    }
    for id in existing.keys() {
        if !wanted.contains_key(id) {
            plan.remove.push((*id).clone());
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

    #[test]
    fn plan_adds_fixes_and_removes() {
        let a = lease("lease_aaaaaaaaaaaaaaaa", "a", 21000);
        let b = lease("lease_bbbbbbbbbbbbbbbb", "b", 21001);
        let c = lease("lease_cccccccccccccccc", "c", 21002);
        let mut wrong_b = Route::for_lease(&b);
        wrong_b.upstream = Upstream::LoopbackPort(9);
        let orphan = Route::for_lease(&lease("lease_dddddddddddddddd", "d", 21003));
        let plan = plan_reconcile(
            &[a.clone(), b.clone(), c.clone()],
            &[Route::for_lease(&a), wrong_b, orphan.clone()],
        );
        assert_eq!(plan.add, vec![Route::for_lease(&c)]);
        assert_eq!(plan.fix, vec![Route::for_lease(&b)]);
        assert_eq!(plan.remove, vec![orphan.lease_id]);
        assert_eq!(
            plan_reconcile(std::slice::from_ref(&a), &[Route::for_lease(&a)]),
            ReconcilePlan::default()
        );
    }
}
