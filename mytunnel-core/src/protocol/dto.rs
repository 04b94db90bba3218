//! The answers: every response DTO, and decoding a ctl command's stdout into one.

use super::*;

/// The lease DTO. Keys are fixed by the spec; keys may be added, never renamed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseDto {
    /// `lease_…`
    pub lease_id: LeaseId,
    /// The slug, or its tombstone `released-<id>` / `expired-<id>`.
    pub slug: String,
    /// The host, or its tombstone `released-<id>.invalid` / `expired-<id>.invalid`.
    pub host: String,
    /// The OS user owning the lease.
    pub owner: Owner,
    /// The edge port the data plane binds in `routes` mode; 0 for a lease that binds a
    /// unix socket (`static` mode), which holds no port.
    pub edge_bind_port: u16,
    /// Where the data plane binds (added key): `127.0.0.1:<port>` or a unix socket path.
    /// Absent from older edges, which always mean the port; read it with
    /// [`LeaseDto::bind_target`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edge_bind_target: Option<BindTarget>,
    /// RFC 3339 UTC.
    pub created_at: Timestamp,
    /// RFC 3339 UTC.
    pub updated_at: Timestamp,
    /// RFC 3339 UTC.
    pub expires_at: Timestamp,
    /// `active`, `released` or `expired`.
    pub state: LeaseState,
    /// The lease's TTL in seconds (added key): the client heartbeats every max(ttl/3, 10s).
    pub ttl_seconds: u64,
}

impl LeaseDto {
    /// Where the data plane must bind: the edge's `edge_bind_target`, or the port for an
    /// edge that does not send one.
    pub fn bind_target(&self) -> BindTarget {
        self.edge_bind_target
            .clone()
            .unwrap_or(BindTarget::LoopbackPort(self.edge_bind_port))
    }
}

impl From<&Lease> for LeaseDto {
    fn from(lease: &Lease) -> Self {
        LeaseDto {
            lease_id: lease.id.clone(),
            slug: lease.public_slug(),
            host: lease.public_host(),
            owner: lease.owner.clone(),
            edge_bind_port: lease.edge_bind_port,
            edge_bind_target: Some(lease.bind_target()),
            created_at: lease.created_at,
            updated_at: lease.updated_at,
            expires_at: lease.expires_at,
            state: lease.state,
            ttl_seconds: lease.ttl.get().as_secs(),
        }
    }
}

/// The answer to `delete`: `{"deleted": "lease_…"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletedDto {
    /// The id of the deleted lease.
    pub deleted: LeaseId,
}

/// One component's health.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentHealth {
    /// Whether it answered in time.
    pub ok: bool,
    /// What was seen.
    pub detail: String,
}

/// The answer to `health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthDto {
    /// True when every component is healthy.
    pub healthy: bool,
    /// The `mytunneld` version.
    pub version: String,
    /// The configured base domain.
    pub base_domain: String,
    /// The lease database.
    pub db: ComponentHealth,
    /// Caddy's admin API.
    pub caddy: ComponentHealth,
}

/// The answer to `reconcile`: how many routes one pass changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconcileDto {
    /// Routes of active leases that were missing.
    pub added: u64,
    /// `mytunnel-` routes that belonged to no active lease.
    pub removed: u64,
    /// Routes that pointed at the wrong place.
    pub fixed: u64,
}

/// Counts of leases by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateCounts {
    /// Active leases.
    pub active: u64,
    /// Released tombstones.
    pub released: u64,
    /// Expired tombstones.
    pub expired: u64,
}

/// Port usage of the range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortUsage {
    /// Ports held by active leases.
    pub used: u64,
    /// Ports in the range.
    pub total: u64,
    /// Lowest port of the range.
    pub min_port: u16,
    /// Highest port of the range.
    pub max_port: u16,
}

/// The answer to `stats`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsDto {
    /// Leases by state.
    pub leases: StateCounts,
    /// Ports used of the range.
    pub ports: PortUsage,
    /// Active leases per owner (admins only; absent for other callers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_owner: Option<BTreeMap<String, u64>>,
}

/// A successful ctl answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CtlResponse {
    /// allocate, heartbeat, release.
    Lease(LeaseDto),
    /// list.
    Leases(Vec<LeaseDto>),
    /// delete.
    Deleted(DeletedDto),
    /// health.
    Health(HealthDto),
    /// reconcile.
    Reconciled(ReconcileDto),
    /// stats.
    Stats(StatsDto),
}

impl CtlResponse {
    /// The JSON document printed on stdout.
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        match self {
            CtlResponse::Lease(v) => serde_json::to_string(v),
            CtlResponse::Leases(v) => serde_json::to_string(v),
            CtlResponse::Deleted(v) => serde_json::to_string(v),
            CtlResponse::Health(v) => serde_json::to_string(v),
            CtlResponse::Reconciled(v) => serde_json::to_string(v),
            CtlResponse::Stats(v) => serde_json::to_string(v),
        }
    }
}

/// Why a ctl reply could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// The edge refused with an error envelope.
    #[error(transparent)]
    Refused(ApiError),
    /// The output was not the JSON document the verb answers with.
    #[error("malformed reply to `{verb}`: {detail}")]
    Malformed {
        /// The verb whose reply it was.
        verb: Verb,
        /// What was wrong.
        detail: String,
    },
}

/// Decodes the stdout of `mytunneld ctl <verb>` into the verb's DTO or its error.
pub fn decode_reply(verb: Verb, stdout: &str) -> Result<CtlResponse, ReplyError> {
    let value: serde_json::Value =
        serde_json::from_str(stdout.trim()).map_err(|e| ReplyError::Malformed {
            verb,
            detail: e.to_string(),
        })?;
    if value.get("error").is_some() {
        let envelope: ErrorEnvelope =
            serde_json::from_value(value).map_err(|e| ReplyError::Malformed {
                verb,
                detail: format!("error envelope: {e}"),
            })?;
        return Err(ReplyError::Refused(envelope.error));
    }
    let malformed = |e: serde_json::Error| ReplyError::Malformed {
        verb,
        detail: e.to_string(),
    };
    Ok(match verb {
        Verb::Allocate | Verb::Heartbeat | Verb::Release => {
            CtlResponse::Lease(serde_json::from_value(value).map_err(malformed)?)
        }
        Verb::List => CtlResponse::Leases(serde_json::from_value(value).map_err(malformed)?),
        Verb::Delete => CtlResponse::Deleted(serde_json::from_value(value).map_err(malformed)?),
        Verb::Health => CtlResponse::Health(serde_json::from_value(value).map_err(malformed)?),
        Verb::Reconcile => {
            CtlResponse::Reconciled(serde_json::from_value(value).map_err(malformed)?)
        }
        Verb::Stats => CtlResponse::Stats(serde_json::from_value(value).map_err(malformed)?),
    })
}
