//! Values tests build again and again.

use std::time::Duration;

use mytunnel_core::policy::ReservedSlugs;
use mytunnel_core::store::OwnerLimit;
use mytunnel_core::{BaseDomain, Lease, LeaseState, PortRange, Timestamp, Ttl};
use mytunnel_edge::service::{BindPlan, ServiceSettings};

/// The lease service's settings most tests use: hosts under `base_domain`, edge ports
/// `ports`, a TTL of 60 s, the default per-owner limit, no reserved names, tombstones kept
/// for an hour, health probes bounded at 2 s, leases on loopback ports
/// ([`BindPlan::Ports`]). A test that needs another value sets it with struct update
/// syntax: `ServiceSettings { lease_ttl, ..service_settings(domain, ports) }`.
pub fn service_settings(base_domain: BaseDomain, ports: PortRange) -> ServiceSettings {
    ServiceSettings {
        base_domain: Some(base_domain),
        ports,
        lease_ttl: Ttl::configured(Duration::from_secs(60)),
        owner_limit: OwnerLimit::DEFAULT,
        reserved_slugs: ReservedSlugs::default(),
        tombstone_retention: Duration::from_secs(3600),
        health_timeout: Duration::from_secs(2),
        bind_plan: BindPlan::Ports,
    }
}

/// An active lease `id` of `alice` for `host` (its slug the first label), bound to the
/// loopback port `port`, with a TTL of 2 min: a lease to give a route backend.
pub fn active_lease(id: &str, host: &str, port: u16) -> Result<Lease, String> {
    let slug = host.split('.').next().unwrap_or_default();
    Ok(Lease {
        id: id.parse().map_err(|e| format!("{e}"))?,
        slug: slug.parse().map_err(|e| format!("{e}"))?,
        host: host.parse().map_err(|e| format!("{e}"))?,
        owner: "alice".parse().map_err(|e| format!("{e}"))?,
        edge_bind_port: port,
        bind_socket: None,
        ttl: Ttl::configured(Duration::from_secs(120)),
        created_at: Timestamp::EPOCH,
        updated_at: Timestamp::EPOCH,
        expires_at: Timestamp::EPOCH,
        state: LeaseState::Active,
    })
}
