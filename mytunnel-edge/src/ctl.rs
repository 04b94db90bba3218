//! `mytunneld ctl <verb>`: one control operation, one JSON document on stdout.
//!
//! This module turns a request into its printed output and exit code; the binary only
//! prints. Exit codes: 0 success, 1 an expected refusal (or an unhealthy `health`),
//! 2 an internal failure.

use std::sync::Arc;

use mytunnel_core::policy::{AdminUsers, Caller};
use mytunnel_core::protocol::{ApiError, CtlRequest, CtlResponse, ErrorCode};
use mytunnel_core::route::RouteBackend;
use mytunnel_core::Owner;

use crate::caddy::CaddyRoutes;
use crate::config::{EdgeConfig, RouteMode};
use crate::links::{HostLinks, ServeLinks, StaticRoutes};
use crate::service::{LeaseService, ServiceSettings, SystemClock};
use crate::sockets;
use crate::store::{SqliteLeaseStore, SqliteStoreOptions};

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

/// The caller: the real uid of this process, named through the password database.
///
/// Never `$USER`, `$LOGNAME` or a flag.
pub fn current_caller(admins: &AdminUsers) -> Result<Caller, ApiError> {
    let uid = nix::unistd::getuid();
    let user = nix::unistd::User::from_uid(uid)
        .map_err(|e| {
            ApiError::new(
                ErrorCode::Internal,
                format!("cannot look up uid {uid}: {e}"),
            )
        })?
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::Internal,
                format!("uid {uid} has no entry in the password database"),
            )
        })?;
    let owner: Owner = user.name.parse().map_err(|e| {
        ApiError::new(
            ErrorCode::Internal,
            format!("user name of uid {uid} cannot own leases: {e}"),
        )
    })?;
    Ok(Caller::from_identity(uid.as_raw(), owner, admins))
}

/// Opens the lease database and the Caddy backend named by `config`.
pub async fn open_service(config: &EdgeConfig) -> Result<LeaseService, ApiError> {
    open_service_as(config, LinkWriter::Serve).await
}

/// Who writes `static` mode's host links.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkWriter {
    /// This process: `mytunneld serve`, the only writer of `hosts/`.
    ThisProcess,
    /// `serve`, asked over its control socket: every `ctl`, which runs as a tunnel user.
    Serve,
}

/// The service for `serve` itself, which writes the host links directly.
pub async fn open_serve_service(config: &EdgeConfig) -> Result<LeaseService, ApiError> {
    open_service_as(config, LinkWriter::ThisProcess).await
}

async fn open_service_as(config: &EdgeConfig, links: LinkWriter) -> Result<LeaseService, ApiError> {
    let store = SqliteLeaseStore::open(&config.db_path, &SqliteStoreOptions::default())
        .await
        .map_err(ApiError::from)?;
    Ok(LeaseService::new(
        Arc::new(store),
        route_backend(config, links)?,
        Arc::new(SystemClock),
        ServiceSettings::from(config),
    ))
}

/// The route backend of the configured mode.
pub fn route_backend(
    config: &EdgeConfig,
    links: LinkWriter,
) -> Result<Arc<dyn RouteBackend>, ApiError> {
    let caddy = CaddyRoutes::new(
        &config.caddy_admin,
        &config.caddy_server,
        config.health_timeout,
    )
    .map_err(|e| ApiError::new(ErrorCode::CaddyUnavailable, e.to_string()))?;
    let (RouteMode::Static, Some(base_domain)) = (config.route_mode, &config.base_domain) else {
        return Ok(Arc::new(caddy));
    };
    let hosts_dir = sockets::hosts_dir(&config.socket_dir);
    let reader = HostLinks::new(hosts_dir.clone(), base_domain.clone());
    let links: Arc<dyn RouteBackend> = match links {
        LinkWriter::ThisProcess => Arc::new(reader),
        LinkWriter::Serve => Arc::new(ServeLinks::new(
            sockets::control_socket(&config.socket_dir),
            reader,
            config.health_timeout,
        )),
    };
    Ok(Arc::new(StaticRoutes::new(
        caddy,
        links,
        base_domain,
        &hosts_dir,
    )))
}

/// Runs one request as the current process's user against the configured edge.
pub async fn run(config: &EdgeConfig, request: CtlRequest) -> CtlOutput {
    let outcome = async {
        let caller = current_caller(&config.admin_users)?;
        let service = open_service(config).await?;
        service.handle(&caller, request).await
    }
    .await;
    CtlOutput::from_result(outcome)
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

    #[test]
    fn caller_comes_from_the_uid_not_the_environment() {
        // Whatever USER says, the owner is the password-database name of the real uid.
        let caller = current_caller(&AdminUsers::default()).unwrap();
        let uid = nix::unistd::getuid();
        let expected = nix::unistd::User::from_uid(uid).unwrap().unwrap().name;
        assert_eq!(caller.owner().as_str(), expected);
    }
}
