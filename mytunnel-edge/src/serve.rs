//! `mytunneld serve`: the cleanup and reconcile loops, the control socket every
//! `mytunneld ctl` asks (serve alone opens the lease database), in `static` mode the
//! socket where Caddy asks the slug of a Host with capitals, and when configured the
//! loopback addresses where Caddy asks whether a host may get a certificate and where
//! Prometheus scrapes serve's metrics.
//!
//! Both passes run once at start (so routes lost while the service was down come back at
//! once) and then at their intervals. A failed pass is logged and retried at the next
//! tick; nothing a pass meets, Caddy down or the database busy, stops the service. The
//! loops end when `shutdown` resolves.

use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, UnixListener};
use tokio::time::{interval, MissedTickBehavior};

use mytunnel_core::listen::LoopbackAddress;
use mytunnel_core::policy::AdminUsers;
use mytunnel_core::protocol::{ApiError, ErrorCode};
use mytunnel_core::settings::Setting;
use mytunnel_core::BaseDomain;

use crate::config::{EdgeConfig, RouteMode};
use crate::control::{bind_control_socket, serve_control, ControlLimits};
use crate::host_names::{bind_names_socket, serve_host_names};
use crate::loopback_http::{bind_loopback, serve_loopback_http, LoopbackHttpLimits};
use crate::metrics::{Metrics, MetricsEndpoint, Pass};
use crate::service::LeaseService;
use crate::sockets;
use crate::tls_ask::TlsAsk;

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

/// Runs one cleanup pass, logs what it did and records it in the metrics; returns
/// whether it succeeded.
pub async fn cleanup_once(service: &LeaseService) -> bool {
    let started = Instant::now();
    let succeeded = log_cleanup(service.cleanup().await);
    service
        .metrics()
        .pass(Pass::Cleanup, started.elapsed(), succeeded);
    succeeded
}

fn log_cleanup(result: Result<crate::service::CleanupReport, ApiError>) -> bool {
    match result {
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
            for path in &report.strays_ended {
                tracing::warn!(socket = %path.display(), "ended a connection listening on a socket no lease binds");
            }
            for error in &report.stray_errors {
                tracing::warn!(%error, "a socket no lease binds is still listened on");
            }
            if report.strays_stale > 0 {
                tracing::info!(
                    stale = report.strays_stale,
                    "stale sockets no lease binds wait for their owner's next ctl"
                );
            }
            true
        }
        Err(e) => {
            tracing::warn!(code = %e.code, error = %e.message, "cleanup pass failed; retrying next interval");
            false
        }
    }
}

/// Runs one reconcile pass, logs what it did and records it in the metrics; returns
/// whether it succeeded (every change applied).
pub async fn reconcile_once(service: &LeaseService) -> bool {
    let started = Instant::now();
    let succeeded = log_reconcile(service.reconcile().await);
    service
        .metrics()
        .pass(Pass::Reconcile, started.elapsed(), succeeded);
    succeeded
}

fn log_reconcile(result: Result<crate::service::ReconcileReport, ApiError>) -> bool {
    match result {
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

/// What `serve` holds: the lease service and the control socket ctl asks it on.
#[derive(Debug)]
pub struct Opened {
    /// The lease service over the database and the routes.
    pub service: LeaseService,
    /// `<socket_dir>/control.sock`, bound.
    pub control: UnixListener,
    /// Who may use privileged verbs, besides root.
    pub admins: AdminUsers,
    /// `static` mode (with a base domain): `<socket_dir>/names.sock`, bound, where Caddy
    /// asks the slug of a Host with capitals ([`crate::host_names`]).
    pub host_names: Option<(UnixListener, BaseDomain)>,
    /// With `MYTUNNEL_TLS_ASK_LISTEN`: the loopback address, bound, where Caddy asks
    /// whether a host may get a certificate ([`crate::tls_ask`]).
    pub tls_ask: Option<TcpListener>,
    /// With `MYTUNNEL_METRICS_LISTEN`: the loopback address, bound, where Prometheus
    /// scrapes the service's metrics ([`crate::metrics`]).
    pub metrics: Option<TcpListener>,
}

fn cannot_listen(path: &Path, e: std::io::Error) -> ApiError {
    ApiError::new(
        ErrorCode::Internal,
        format!("cannot listen on {}: {e}", path.display()),
    )
}

/// Binds `address`, the value of `setting`, or says which setting could not be bound.
async fn bind_setting(
    address: Option<LoopbackAddress>,
    setting: Setting,
) -> Result<Option<TcpListener>, ApiError> {
    let Some(address) = address else {
        return Ok(None);
    };
    bind_loopback(address).await.map(Some).map_err(|e| {
        ApiError::new(
            ErrorCode::Internal,
            format!("cannot listen on {address} ({}): {e}", setting.env_var()),
        )
    })
}

/// Opens the database and binds the control socket named by `config` (and in `static`
/// mode the host names socket, and the loopback addresses configured). The service
/// records metrics only when they are served.
pub async fn open(config: &EdgeConfig) -> Result<Opened, ApiError> {
    let metrics = match config.metrics_listen {
        Some(_) => Metrics::new(),
        None => Metrics::default(),
    };
    let service = crate::ctl::open_serve_service(config, &metrics).await?;
    let path = sockets::control_socket(&config.socket_dir);
    let control = bind_control_socket(&path).map_err(|e| cannot_listen(&path, e))?;
    let host_names = match (config.route_mode, &config.base_domain) {
        (RouteMode::Static, Some(base_domain)) => {
            let path = sockets::names_socket(&config.socket_dir);
            let listener = bind_names_socket(&path).map_err(|e| cannot_listen(&path, e))?;
            Some((listener, base_domain.clone()))
        }
        _ => None,
    };
    let tls_ask = bind_setting(config.tls_ask_listen, Setting::TlsAskListen).await?;
    let metrics = bind_setting(config.metrics_listen, Setting::MetricsListen).await?;
    Ok(Opened {
        service,
        control,
        admins: config.admin_users.clone(),
        host_names,
        tls_ask,
        metrics,
    })
}

/// Runs the loops and answers ctl requests on the control socket until `shutdown`
/// resolves.
pub async fn serve_with_control(
    opened: Opened,
    intervals: ServeIntervals,
    shutdown: impl Future<Output = ()>,
) -> ServeSummary {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut stop: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stop.wait_for(|stop| *stop).await;
    };
    let control = tokio::spawn(serve_control(
        opened.service.clone(),
        opened.admins,
        opened.control,
        ControlLimits::default(),
        stopped(stop_rx.clone()),
    ));
    let host_names = opened.host_names.map(|(listener, base_domain)| {
        tokio::spawn(serve_host_names(
            listener,
            base_domain,
            stopped(stop_rx.clone()),
        ))
    });
    let tls_ask = opened.tls_ask.map(|listener| {
        if let Ok(address) = listener.local_addr() {
            tracing::info!(%address, "answering Caddy's on-demand TLS ask");
        }
        tokio::spawn(serve_loopback_http(
            listener,
            TlsAsk::new(opened.service.clone()),
            LoopbackHttpLimits::default(),
            stopped(stop_rx.clone()),
        ))
    });
    let metrics = opened.metrics.map(|listener| {
        if let Ok(address) = listener.local_addr() {
            tracing::info!(%address, "serving Prometheus metrics at /metrics");
        }
        tokio::spawn(serve_loopback_http(
            listener,
            MetricsEndpoint::new(
                opened.service.store().clone(),
                opened.service.metrics().clone(),
            ),
            LoopbackHttpLimits::default(),
            stopped(stop_rx.clone()),
        ))
    });
    let summary = serve(opened.service, intervals, shutdown).await;
    let _ = stop_tx.send(true);
    let _ = control.await;
    for task in [host_names, tls_ask, metrics].into_iter().flatten() {
        let _ = task.await;
    }
    summary
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
