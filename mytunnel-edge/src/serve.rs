//! `mytunneld serve`: the cleanup and reconcile loops.
//!
//! Both passes run once at start (so routes lost while the service was down come back at
//! once) and then at their intervals. A failed pass is logged and retried at the next
//! tick; nothing a pass meets, Caddy down or the database busy, stops the service. The
//! loops end when `shutdown` resolves.

use std::future::Future;
use std::time::Duration;

use tokio::time::{interval, MissedTickBehavior};

use crate::service::LeaseService;

/// How often the passes run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeIntervals {
    /// Expire stale leases, purge old tombstones.
    pub cleanup: Duration,
    /// Make routes match the active leases.
    pub reconcile: Duration,
}

/// Counts of what the loops did, returned when they stop.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServeSummary {
    /// Cleanup passes run.
    pub cleanup_passes: u64,
    /// Reconcile passes run.
    pub reconcile_passes: u64,
    /// Passes that failed (logged).
    pub failed_passes: u64,
}

/// Runs one cleanup pass and logs what it did; returns whether it succeeded.
pub async fn cleanup_once(service: &LeaseService) -> bool {
    match service.cleanup().await {
        Ok(report) => {
            for id in &report.expired {
                tracing::info!(lease = %id, "lease expired: no heartbeat within its TTL");
            }
            if report.purged > 0 {
                tracing::info!(purged = report.purged, "old tombstones purged");
            }
            for error in &report.route_errors {
                tracing::warn!(%error, "route of an expired lease not removed; reconcile will retry");
            }
            true
        }
        Err(e) => {
            tracing::warn!(code = %e.code, error = %e.message, "cleanup pass failed; retrying next interval");
            false
        }
    }
}

/// Runs one reconcile pass and logs what it did; returns whether it succeeded.
pub async fn reconcile_once(service: &LeaseService) -> bool {
    match service.reconcile().await {
        Ok(report) => {
            let c = report.counts;
            if c.added + c.removed + c.fixed > 0 {
                tracing::info!(
                    added = c.added,
                    removed = c.removed,
                    fixed = c.fixed,
                    "routes reconciled"
                );
            }
            for error in &report.errors {
                tracing::warn!(%error, "reconcile change failed; retrying next interval");
            }
            report.errors.is_empty()
        }
        Err(e) => {
            tracing::warn!(code = %e.code, error = %e.message, "reconcile pass failed; retrying next interval");
            false
        }
    }
}

/// Runs the loops until `shutdown` resolves.
pub async fn serve(
    service: LeaseService,
    intervals: ServeIntervals,
    shutdown: impl Future<Output = ()>,
) -> ServeSummary {
    let mut summary = ServeSummary::default();
    let mut cleanup = interval(intervals.cleanup);
    let mut reconcile = interval(intervals.reconcile);
    cleanup.set_missed_tick_behavior(MissedTickBehavior::Delay);
    reconcile.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    tracing::info!(
        cleanup_interval = ?intervals.cleanup,
        reconcile_interval = ?intervals.reconcile,
        "mytunneld serving"
    );
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            _ = cleanup.tick() => {
                summary.cleanup_passes += 1;
                if !cleanup_once(&service).await {
                    summary.failed_passes += 1;
                }
            }
            _ = reconcile.tick() => {
                summary.reconcile_passes += 1;
                if !reconcile_once(&service).await {
                    summary.failed_passes += 1;
                }
            }
        }
    }
    tracing::info!(?summary, "mytunneld stopped");
    summary
}
