//! `mytunneld serve`: the cleanup and reconcile loops.
//!
//! Both passes run once at start (so routes lost while the service was down come back at
//! once) and then at their intervals. A failed pass is logged and retried at the next
//! tick; nothing a pass meets, Caddy down or the database busy, stops the service. The
//! loops end when `shutdown` resolves.

use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::time::{interval, MissedTickBehavior};

use mytunnel_core::protocol::{ApiError, ErrorCode};

use crate::config::{EdgeConfig, RouteMode};
use crate::links::answer_link_request;
use crate::service::LeaseService;
use crate::sockets;

/// The longest request line on the control socket.
const MAX_REQUEST_LINE: u64 = 256;

/// How long one control connection may take to send its line.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Binds `static` mode's control socket at `path`, mode 0660 (the service group, which
/// tunnel users share, so their `ctl` can ask for links), replacing a socket left by a
/// previous run.
pub fn bind_control_socket(path: &Path) -> std::io::Result<UnixListener> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    Ok(listener)
}

/// Answers link requests on `listener` until `shutdown` resolves, one task per connection.
pub async fn serve_link_requests(
    service: LeaseService,
    listener: UnixListener,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(answer_connection(service.clone(), stream));
                }
                Err(e) => tracing::warn!(error = %e, "control socket accept failed"),
            }
        }
    }
}

async fn answer_connection(service: LeaseService, stream: UnixStream) {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let read_line = async {
        tokio::io::AsyncReadExt::take(BufReader::new(read), MAX_REQUEST_LINE)
            .read_line(&mut line)
            .await
    };
    let answer = match tokio::time::timeout(REQUEST_TIMEOUT, read_line).await {
        Ok(Ok(_)) if line.ends_with('\n') => answer_link_request(&service, &line).await,
        _ => "error incomplete request\n".to_owned(),
    };
    let _ = write.write_all(answer.as_bytes()).await;
}

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

/// The service `serve` runs and, in `static` mode, its bound control socket.
pub async fn open(config: &EdgeConfig) -> Result<(LeaseService, Option<UnixListener>), ApiError> {
    let service = crate::ctl::open_serve_service(config).await?;
    let control = match config.route_mode {
        RouteMode::Routes => None,
        RouteMode::Static => {
            let path = sockets::control_socket(&config.socket_dir);
            Some(bind_control_socket(&path).map_err(|e| {
                ApiError::new(
                    ErrorCode::Internal,
                    format!("cannot listen on {}: {e}", path.display()),
                )
            })?)
        }
    };
    Ok((service, control))
}

/// Runs the loops, and answers link requests on `control` when given, until `shutdown`
/// resolves.
pub async fn serve_with_links(
    service: LeaseService,
    intervals: ServeIntervals,
    control: Option<UnixListener>,
    shutdown: impl Future<Output = ()>,
) -> ServeSummary {
    let Some(listener) = control else {
        return serve(service, intervals, shutdown).await;
    };
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let links = tokio::spawn(serve_link_requests(service.clone(), listener, async move {
        let _ = stop_rx.wait_for(|stop| *stop).await;
    }));
    let summary = serve(service, intervals, shutdown).await;
    let _ = stop_tx.send(true);
    let _ = links.await;
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
