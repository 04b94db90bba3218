//! The stable error codes, their hints and exit codes, and the error envelope.

use super::*;

/// Every error code the edge can answer with. The strings are stable: clients match on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// A flag or value is malformed or missing.
    InvalidArgument,
    /// The requested name is not a valid or allowed slug.
    InvalidSlug,
    /// Another active lease holds the name.
    SlugTaken,
    /// `--force` was used by a caller that is not privileged.
    ForceNotAllowed,
    /// No lease of the caller matches (a lease of another owner answers the same).
    LeaseNotFound,
    /// The lease exists but is no longer active.
    LeaseNotActive,
    /// Every port of the range is held by an active lease.
    NoFreePort,
    /// The caller has as many active leases as allowed.
    OwnerLimit,
    /// The edge has no base domain configured.
    BaseDomainMissing,
    /// Caddy's admin API could not be reached or refused the change.
    CaddyUnavailable,
    /// The lease database failed.
    DbError,
    /// The SSH gate refused the command.
    ForbiddenCommand,
    /// The SSH gate refused a daemon configuration flag.
    OverrideNotAllowed,
    /// Anything else that went wrong inside the edge.
    Internal,
    /// `mytunneld serve`, which alone opens the lease database, does not answer.
    ServiceUnavailable,
}

impl ErrorCode {
    /// All codes, in documentation order.
    pub const ALL: [ErrorCode; 15] = [
        ErrorCode::InvalidArgument,
        ErrorCode::InvalidSlug,
        ErrorCode::SlugTaken,
        ErrorCode::ForceNotAllowed,
        ErrorCode::LeaseNotFound,
        ErrorCode::LeaseNotActive,
        ErrorCode::NoFreePort,
        ErrorCode::OwnerLimit,
        ErrorCode::BaseDomainMissing,
        ErrorCode::CaddyUnavailable,
        ErrorCode::DbError,
        ErrorCode::ForbiddenCommand,
        ErrorCode::OverrideNotAllowed,
        ErrorCode::Internal,
        ErrorCode::ServiceUnavailable,
    ];

    /// The stable wire string, e.g. `"slug_taken"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidArgument => "invalid_argument",
            ErrorCode::InvalidSlug => "invalid_slug",
            ErrorCode::SlugTaken => "slug_taken",
            ErrorCode::ForceNotAllowed => "force_not_allowed",
            ErrorCode::LeaseNotFound => "lease_not_found",
            ErrorCode::LeaseNotActive => "lease_not_active",
            ErrorCode::NoFreePort => "no_free_port",
            ErrorCode::OwnerLimit => "owner_limit",
            ErrorCode::BaseDomainMissing => "base_domain_missing",
            ErrorCode::CaddyUnavailable => "caddy_unavailable",
            ErrorCode::DbError => "db_error",
            ErrorCode::ForbiddenCommand => "forbidden_command",
            ErrorCode::OverrideNotAllowed => "override_not_allowed",
            ErrorCode::Internal => "internal",
            ErrorCode::ServiceUnavailable => "service_unavailable",
        }
    }

    /// What the user can do about it.
    pub fn hint(self) -> &'static str {
        match self {
            ErrorCode::InvalidArgument => "check the command's flags and values (see --help)",
            ErrorCode::InvalidSlug => {
                "use 1-63 characters of a-z, 0-9 and '-', not starting or ending with '-', and not a reserved name"
            }
            ErrorCode::SlugTaken => {
                "pick another --name, stop the tunnel that holds it, or ask an admin to use --force"
            }
            ErrorCode::ForceNotAllowed => {
                "only root and users listed in MYTUNNEL_ADMIN_USERS may use --force"
            }
            ErrorCode::LeaseNotFound => "run `mytunnel ls` to see your leases",
            ErrorCode::LeaseNotActive => {
                "the lease was released or expired; start the tunnel again with `mytunnel http`"
            }
            ErrorCode::NoFreePort => {
                "every edge port is in use; stop unused tunnels or widen MYTUNNEL_MIN_PORT..MYTUNNEL_MAX_PORT on the edge"
            }
            ErrorCode::OwnerLimit => {
                "stop one of your tunnels (`mytunnel ls`, `mytunnel stop`) or ask the operator to raise MYTUNNEL_MAX_LEASES_PER_OWNER"
            }
            ErrorCode::BaseDomainMissing => {
                "set MYTUNNEL_BASE_DOMAIN in /etc/mytunneld/mytunneld.env on the edge"
            }
            ErrorCode::CaddyUnavailable => {
                "check that Caddy runs on the edge and its admin API answers at MYTUNNEL_CADDY_ADMIN_URL (`mytunnel doctor`)"
            }
            ErrorCode::DbError => {
                "check the lease database on the edge: path, permissions and free disk space (`mytunneld ctl health`)"
            }
            ErrorCode::ForbiddenCommand => {
                "this key may only run `mytunneld ctl <allocate|heartbeat|release|delete|list|health|reconcile|stats>`"
            }
            ErrorCode::OverrideNotAllowed => {
                "daemon settings come from the edge's env file; remove the override flag"
            }
            ErrorCode::Internal => "this is a bug or an edge misconfiguration; see the edge's logs",
            ErrorCode::ServiceUnavailable => {
                "start the edge service (`systemctl start mytunneld`, then `journalctl -u mytunneld`); nothing was changed"
            }
        }
    }

    /// The process exit code: 1 for an expected refusal, 2 for an internal failure.
    pub fn exit_code(self) -> i32 {
        match self {
            ErrorCode::CaddyUnavailable
            | ErrorCode::DbError
            | ErrorCode::Internal
            | ErrorCode::ServiceUnavailable => 2,
            _ => 1,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error as it travels on the wire: code, message, hint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    /// The stable code.
    pub code: ErrorCode,
    /// What happened, for a person.
    pub message: String,
    /// What to do about it.
    pub hint: String,
}

impl ApiError {
    /// An error with the code's standard hint.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            hint: code.hint().to_owned(),
        }
    }

    /// The JSON envelope `{"error":{…}}`.
    pub fn to_envelope_json(&self) -> String {
        serde_json::to_string(&ErrorEnvelope {
            error: self.clone(),
        })
        .unwrap_or_else(|_| {
            r#"{"error":{"code":"internal","message":"unserialisable error","hint":""}}"#.into()
        })
    }
}

impl From<InvalidValue> for ApiError {
    fn from(e: InvalidValue) -> Self {
        ApiError::new(e.code(), e.to_string())
    }
}

/// The failure document: `{"error": {"code", "message", "hint"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorEnvelope {
    /// The error.
    pub error: ApiError,
}
