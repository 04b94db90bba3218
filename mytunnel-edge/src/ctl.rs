//! `mytunneld ctl <verb>`: one control operation, one JSON document on stdout.
//!
//! ctl is a client of `mytunneld serve`, which alone opens the lease database: this module
//! sends the request over serve's control socket ([`crate::control`]) and turns the answer
//! into its printed output and exit code; the binary only prints. Exit codes: 0 success, 1 an expected refusal (or an unhealthy `health`),
//! 2 an internal failure.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use mytunnel_core::protocol::{ApiError, CtlRequest, CtlResponse, ErrorCode};
use mytunnel_core::route::RouteBackend;
use mytunnel_core::BindTarget;

use crate::caddy::CaddyRoutes;
use crate::config::{EdgeConfig, RouteMode};
use crate::control;
use crate::links::{HostLinks, StaticRoutes};
use crate::metrics::Metrics;
use crate::service::{EdgeIdentity, LeaseService, ServiceSettings, SystemClock};
use crate::sockets;
use crate::store::{SqlLeaseStore, StoreOptions};
use crate::tunnel_ends::SshListenerEnds;

/// What a ctl command prints and how it exits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CtlOutput {
    /// One JSON document (no trailing newline).
    pub stdout: String,
    /// 0, 1 or 2.
    pub exit_code: i32,
}

impl CtlOutput {
    /// The output of a refusal or failure.
    pub fn error(error: &ApiError) -> Self {
        CtlOutput {
            stdout: error.to_envelope_json(),
            exit_code: error.code.exit_code(),
        }
    }

    /// The output of a result.
    pub fn from_result(result: Result<CtlResponse, ApiError>) -> Self {
        match result {
            Ok(response) => {
                let exit_code = match &response {
                    CtlResponse::Health(h) if !h.healthy => 1,
                    _ => 0,
                };
                match response.to_json() {
                    Ok(stdout) => CtlOutput { stdout, exit_code },
                    Err(e) => CtlOutput::error(&ApiError::new(
                        ErrorCode::Internal,
                        format!("could not serialise the answer: {e}"),
                    )),
                }
            }
            Err(e) => CtlOutput::error(&e),
        }
    }
}

/// Opens the lease database and the routes named by `config`: what `mytunneld serve`
/// runs, the only process that opens the database. The service and its Caddy backend
/// record into `metrics`.
pub async fn open_serve_service(
    config: &EdgeConfig,
    metrics: &Metrics,
) -> Result<LeaseService, ApiError> {
    let options = StoreOptions {
        edge_id: config.edge_id.clone(),
        ..StoreOptions::default()
    };
    let store = SqlLeaseStore::open(&config.database, &options)
        .await
        .map_err(ApiError::from)?;
    Ok(LeaseService::new(
        Arc::new(store),
        route_backend(config, metrics)?,
        Arc::new(SystemClock),
        ServiceSettings::from(config),
    )
    .with_tunnel_ends(Arc::new(SshListenerEnds::default()))
    .with_metrics(metrics.clone())
    .with_edge(EdgeIdentity {
        id: config.edge_id.clone(),
        url: config.edge_url.clone(),
    }))
}

/// The route backend of the configured mode, counting failed Caddy admin requests in
/// `metrics`.
pub fn route_backend(
    config: &EdgeConfig,
    metrics: &Metrics,
) -> Result<Arc<dyn RouteBackend>, ApiError> {
    let caddy = CaddyRoutes::new(
        &config.caddy_admin,
        &config.caddy_server,
        config.health_timeout,
    )
    .map_err(|e| ApiError::new(ErrorCode::CaddyUnavailable, e.to_string()))?
    .with_metrics(metrics.clone());
    let (RouteMode::Static, Some(base_domain)) = (config.route_mode, &config.base_domain) else {
        return Ok(Arc::new(caddy));
    };
    let hosts_dir = sockets::hosts_dir(&config.socket_dir);
    let links = Arc::new(HostLinks::new(hosts_dir, base_domain.clone()));
    Ok(Arc::new(StaticRoutes::new(
        caddy,
        links,
        base_domain,
        &config.socket_dir,
    )))
}

/// Runs one request as this process's user: asks `serve` over its control socket, which
/// names the caller by this process's uid.
///
/// ctl also tidies the caller's own socket directory, which only its
/// owner may write: before an allocation it removes the socket files nothing listens on
/// (sshd leaves them behind and will not bind over them), and after a heartbeat or a
/// release the lease's own, so the client can bind again.
pub async fn run(config: &EdgeConfig, request: CtlRequest) -> CtlOutput {
    // Only these verbs touch the owner's sockets: the others skip the user lookup.
    let own_sockets = match request {
        CtlRequest::Allocate(_) | CtlRequest::Heartbeat { .. } | CtlRequest::Release { .. } => {
            OwnSockets::of_this_process(config)
        }
        _ => None,
    };
    if let (Some(own), CtlRequest::Allocate(_)) = (&own_sockets, &request) {
        own.clear_stale();
    }
    let socket = sockets::control_socket(&config.socket_dir);
    let result = control::call(&socket, &request, control::REPLY_WITHIN).await;
    // After a heartbeat or a release (allocate answers a new socket, nothing to clear).
    if let (Some(own), Ok(CtlResponse::Lease(lease))) = (&own_sockets, &result) {
        if !matches!(request, CtlRequest::Allocate(_)) {
            own.clear_if_stale(&lease.bind_target());
        }
    }
    CtlOutput::from_result(result)
}

/// The socket directory of this process's user, `<socket_dir>/owners/<user>`.
#[derive(Debug)]
struct OwnSockets {
    dir: PathBuf,
}

impl OwnSockets {
    /// Most socket files one call looks at.
    const SWEEP_LIMIT: usize = 1024;

    fn of_this_process(config: &EdgeConfig) -> Option<OwnSockets> {
        let user = nix::unistd::User::from_uid(nix::unistd::getuid()).ok()??;
        let dir = sockets::owners_dir(&config.socket_dir).join(user.name);
        dir.is_dir().then_some(OwnSockets { dir })
    }

    fn clear_stale(&self) {
        for socket in sockets::socket_files_in(&self.dir, Self::SWEEP_LIMIT).iter() {
            sockets::clear_if_stale(socket);
        }
    }

    fn clear_if_stale(&self, target: &BindTarget) {
        if let BindTarget::UnixSocket(socket) = target {
            let socket = Path::new(socket.as_str());
            if socket.parent() == Some(self.dir.as_path()) {
                sockets::clear_if_stale(socket);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mytunnel_core::protocol::{ComponentHealth, HealthDto};

    #[test]
    fn exit_codes() {
        let refused = CtlOutput::from_result(Err(ApiError::new(ErrorCode::SlugTaken, "x")));
        assert_eq!(refused.exit_code, 1);
        assert!(refused
            .stdout
            .starts_with(r#"{"error":{"code":"slug_taken""#));
        let failed = CtlOutput::from_result(Err(ApiError::new(ErrorCode::DbError, "x")));
        assert_eq!(failed.exit_code, 2);
        let ok = CtlOutput::from_result(Ok(CtlResponse::Leases(vec![])));
        assert_eq!(
            ok,
            CtlOutput {
                stdout: "[]".into(),
                exit_code: 0
            }
        );
        let c = |ok| ComponentHealth {
            ok,
            detail: String::new(),
        };
        let unhealthy = CtlOutput::from_result(Ok(CtlResponse::Health(HealthDto {
            healthy: false,
            version: "0".into(),
            base_domain: String::new(),
            db: c(true),
            caddy: c(false),
        })));
        assert_eq!(unhealthy.exit_code, 1);
    }
}
