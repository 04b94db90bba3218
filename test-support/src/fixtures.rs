//! Values tests build again and again.

use std::time::Duration;

use mytunnel_core::policy::ReservedSlugs;
use mytunnel_core::store::OwnerLimit;
use mytunnel_core::{BaseDomain, PortRange, Ttl};
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
