//! The control-plane wire protocol: every ctl request, every response DTO, the error
//! envelope, and the stable error codes with their hints. This module is the one place
//! where JSON keys and error codes are defined.
//!
//! A ctl command prints exactly one JSON document on stdout: a DTO on success, or
//! `{"error":{"code":"…","message":"…","hint":"…"}}` on failure, with exit code 1 for an
//! expected refusal and 2 for an internal failure.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::names::{InvalidValue, LeaseId, LeaseRef, Owner, Slug};
use crate::settings::{gate_override_flags, GATE_OVERRIDE_COUNT};
use crate::{BindTarget, Lease, LeaseState, Timestamp};

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

// ---------------------------------------------------------------------------------------
// Responses

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

// ---------------------------------------------------------------------------------------
// Requests

/// The eight ctl verbs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verb {
    /// Reserve a slug and bind target and add the route.
    Allocate,
    /// Extend a lease.
    Heartbeat,
    /// Remove the route and tombstone the lease.
    Release,
    /// Remove the route and delete the row.
    Delete,
    /// The caller's leases.
    List,
    /// DB and Caddy reachability.
    Health,
    /// One reconcile pass now (admin only).
    Reconcile,
    /// Counts.
    Stats,
}

impl Verb {
    /// All verbs, the gate's allow-list.
    pub const ALL: [Verb; 8] = [
        Verb::Allocate,
        Verb::Heartbeat,
        Verb::Release,
        Verb::Delete,
        Verb::List,
        Verb::Health,
        Verb::Reconcile,
        Verb::Stats,
    ];

    /// The word on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Allocate => "allocate",
            Verb::Heartbeat => "heartbeat",
            Verb::Release => "release",
            Verb::Delete => "delete",
            Verb::List => "list",
            Verb::Health => "health",
            Verb::Reconcile => "reconcile",
            Verb::Stats => "stats",
        }
    }
}

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Verb {
    type Err = ApiError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Verb::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::ForbiddenCommand,
                    format!("unknown ctl verb {:?}", truncate_for_message(s)),
                )
            })
    }
}

/// What `--force` asks for when the name is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Takeover {
    /// Refuse with `slug_taken` (the default).
    #[default]
    Refuse,
    /// Replace the existing active lease (privileged callers only; requires a name).
    Force,
}

/// `allocate` arguments.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AllocateRequest {
    /// The client's local port, for the record.
    pub local_port: Option<u16>,
    /// The requested name; generated when absent.
    pub name: Option<Slug>,
    /// The requested TTL, clamped to [30s, 24h]; the edge default when absent.
    pub ttl: Option<Duration>,
    /// Whether to take over an active lease of the same name.
    pub takeover: Takeover,
}

/// Which leases `list` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ListScope {
    /// The caller's own (the default).
    #[default]
    Own,
    /// Everyone's (admins only).
    All,
}

/// One control operation, as typed data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CtlRequest {
    /// `allocate [--local-port N] [--name SLUG] [--ttl DUR] [--force] [--owner X]`
    Allocate(AllocateRequest),
    /// `heartbeat --lease ID`
    Heartbeat {
        /// The lease to extend.
        lease: LeaseId,
    },
    /// `release --lease ID|HOST|SLUG`
    Release {
        /// The lease to release.
        lease: LeaseRef,
    },
    /// `delete --lease ID|HOST|SLUG`
    Delete {
        /// The lease to delete.
        lease: LeaseRef,
    },
    /// `list [--all]`
    List(ListScope),
    /// `health`
    Health,
    /// `reconcile`
    Reconcile,
    /// `stats`
    Stats,
}

/// The daemon configuration flags that only the edge's own config may set: the settings
/// marked [`gate_override`](crate::settings::SettingSpec::gate_override) in the settings
/// table. Through the gate each is refused with `override_not_allowed`.
pub const OVERRIDE_FLAGS: [&str; GATE_OVERRIDE_COUNT] = gate_override_flags();

/// Whether a word is a daemon override flag, as `--flag` or `--flag=value`.
pub fn is_override_word(word: &str) -> bool {
    let name = word.split_once('=').map_or(word, |(name, _)| name);
    OVERRIDE_FLAGS.contains(&name)
}

/// Longest text a message quotes from input.
fn truncate_for_message(s: &str) -> String {
    s.chars().take(64).collect()
}

impl CtlRequest {
    /// The verb.
    pub fn verb(&self) -> Verb {
        match self {
            CtlRequest::Allocate(_) => Verb::Allocate,
            CtlRequest::Heartbeat { .. } => Verb::Heartbeat,
            CtlRequest::Release { .. } => Verb::Release,
            CtlRequest::Delete { .. } => Verb::Delete,
            CtlRequest::List(_) => Verb::List,
            CtlRequest::Health => Verb::Health,
            CtlRequest::Reconcile => Verb::Reconcile,
            CtlRequest::Stats => Verb::Stats,
        }
    }

    /// The words after `mytunneld`: `ctl <verb> [flags]`. [`CtlRequest::parse_args`] reads
    /// them back.
    pub fn to_args(&self) -> Vec<String> {
        let mut args = vec!["ctl".to_owned(), self.verb().as_str().to_owned()];
        let mut flag = |name: &str, value: String| {
            args.push(name.to_owned());
            args.push(value);
        };
        match self {
            CtlRequest::Allocate(req) => {
                if let Some(port) = req.local_port {
                    flag("--local-port", port.to_string());
                }
                if let Some(name) = &req.name {
                    flag("--name", name.to_string());
                }
                if let Some(ttl) = req.ttl {
                    flag("--ttl", crate::duration::format_duration(ttl));
                }
                if req.takeover == Takeover::Force {
                    args.push("--force".to_owned());
                }
            }
            CtlRequest::Heartbeat { lease } => flag("--lease", lease.to_string()),
            CtlRequest::Release { lease } | CtlRequest::Delete { lease } => {
                flag("--lease", lease.to_string())
            }
            CtlRequest::List(ListScope::All) => args.push("--all".to_owned()),
            CtlRequest::List(ListScope::Own)
            | CtlRequest::Health
            | CtlRequest::Reconcile
            | CtlRequest::Stats => {}
        }
        args
    }

    /// Parses `<verb> [flags]` (the words after `ctl`) with an allow-list: each verb takes
    /// only the flags it documents. A daemon override flag is `override_not_allowed`, any
    /// other unknown word `forbidden_command`, a bad value `invalid_argument` or
    /// `invalid_slug`.
    pub fn parse_args<S: AsRef<str>>(words: &[S]) -> Result<CtlRequest, ApiError> {
        let Some((verb_word, rest)) = words.split_first() else {
            return Err(ApiError::new(
                ErrorCode::ForbiddenCommand,
                "`ctl` needs a verb",
            ));
        };
        let verb: Verb = verb_word.as_ref().parse()?;
        let flags = FlagWords::parse(verb, rest)?;
        flags.into_request(verb)
    }
}

/// The flags each verb documents: (name, takes a value).
fn allowed_flags(verb: Verb) -> &'static [(&'static str, bool)] {
    match verb {
        Verb::Allocate => &[
            ("--local-port", true),
            ("--name", true),
            ("--ttl", true),
            ("--force", false),
            ("--owner", true),
        ],
        Verb::Heartbeat | Verb::Release | Verb::Delete => &[("--lease", true)],
        Verb::List => &[("--all", false)],
        Verb::Health | Verb::Reconcile | Verb::Stats => &[],
    }
}

/// Flags read off the words, each at most once.
#[derive(Debug, Default)]
struct FlagWords {
    values: BTreeMap<&'static str, Option<String>>,
}

impl FlagWords {
    fn parse<S: AsRef<str>>(verb: Verb, words: &[S]) -> Result<FlagWords, ApiError> {
        // An override flag is refused wherever it stands, even as another flag's value,
        // so that no accepted command line ever contains one.
        if let Some(word) = words
            .iter()
            .map(AsRef::as_ref)
            .find(|w| is_override_word(w))
        {
            let name = word.split_once('=').map_or(word, |(name, _)| name);
            return Err(ApiError::new(
                ErrorCode::OverrideNotAllowed,
                format!("{name} is daemon configuration and cannot be set by a client"),
            ));
        }
        let allowed = allowed_flags(verb);
        let mut out = FlagWords::default();
        let mut iter = words.iter().map(AsRef::as_ref);
        while let Some(word) = iter.next() {
            let (name, inline_value) = match word.split_once('=') {
                Some((name, value)) if name.starts_with("--") => (name, Some(value)),
                _ => (word, None),
            };
            let Some(&(known, takes_value)) = allowed.iter().find(|(n, _)| *n == name) else {
                return Err(ApiError::new(
                    ErrorCode::ForbiddenCommand,
                    format!("`{verb}` does not take {:?}", truncate_for_message(name)),
                ));
            };
            let value = match (takes_value, inline_value) {
                (true, Some(v)) => Some(v.to_owned()),
                (true, None) => Some(
                    iter.next()
                        .ok_or_else(|| {
                            ApiError::new(
                                ErrorCode::InvalidArgument,
                                format!("{known} needs a value"),
                            )
                        })?
                        .to_owned(),
                ),
                (false, None) => None,
                (false, Some(_)) => {
                    return Err(ApiError::new(
                        ErrorCode::InvalidArgument,
                        format!("{known} takes no value"),
                    ))
                }
            };
            if out.values.insert(known, value).is_some() {
                return Err(ApiError::new(
                    ErrorCode::InvalidArgument,
                    format!("{known} is given twice"),
                ));
            }
        }
        Ok(out)
    }

    fn has(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }

    fn value(&self, name: &str) -> Option<&str> {
        self.values.get(name).and_then(|v| v.as_deref())
    }

    fn required(&self, verb: Verb, name: &str) -> Result<&str, ApiError> {
        self.value(name).ok_or_else(|| {
            ApiError::new(ErrorCode::InvalidArgument, format!("`{verb}` needs {name}"))
        })
    }

    fn into_request(self, verb: Verb) -> Result<CtlRequest, ApiError> {
        Ok(match verb {
            Verb::Allocate => {
                let local_port = self
                    .value("--local-port")
                    .map(|v| match v.parse::<u16>() {
                        Ok(port) if port != 0 => Ok(port),
                        _ => Err(ApiError::new(
                            ErrorCode::InvalidArgument,
                            format!(
                                "--local-port {:?} is not a port 1-65535",
                                truncate_for_message(v)
                            ),
                        )),
                    })
                    .transpose()?;
                let name = self.value("--name").map(str::parse::<Slug>).transpose()?;
                let ttl = self
                    .value("--ttl")
                    .map(crate::duration::parse_duration)
                    .transpose()?;
                let takeover = if self.has("--force") {
                    Takeover::Force
                } else {
                    Takeover::Refuse
                };
                if takeover == Takeover::Force && name.is_none() {
                    return Err(ApiError::new(
                        ErrorCode::InvalidArgument,
                        "--force requires --name",
                    ));
                }
                // `--owner` is accepted for compatibility and ignored: the owner is the uid.
                CtlRequest::Allocate(AllocateRequest {
                    local_port,
                    name,
                    ttl,
                    takeover,
                })
            }
            Verb::Heartbeat => CtlRequest::Heartbeat {
                lease: self.required(verb, "--lease")?.parse()?,
            },
            Verb::Release => CtlRequest::Release {
                lease: self.required(verb, "--lease")?.parse()?,
            },
            Verb::Delete => CtlRequest::Delete {
                lease: self.required(verb, "--lease")?.parse()?,
            },
            Verb::List => CtlRequest::List(if self.has("--all") {
                ListScope::All
            } else {
                ListScope::Own
            }),
            Verb::Health => CtlRequest::Health,
            Verb::Reconcile => CtlRequest::Reconcile,
            Verb::Stats => CtlRequest::Stats,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease() -> Lease {
        Lease {
            id: "lease_abcdefghijklmnop".parse().unwrap(),
            slug: "portal".parse().unwrap(),
            host: "portal.tunnel.example.com".parse().unwrap(),
            owner: "alice".parse().unwrap(),
            edge_bind_port: 21000,
            bind_socket: None,
            ttl: crate::Ttl::configured(Duration::from_secs(120)),
            created_at: Timestamp::from_unix_seconds(1_780_000_000).unwrap(),
            updated_at: Timestamp::from_unix_seconds(1_780_000_000).unwrap(),
            expires_at: Timestamp::from_unix_seconds(1_780_000_120).unwrap(),
            state: LeaseState::Active,
        }
    }

    #[test]
    fn lease_dto_has_exact_keys() {
        let json = serde_json::to_value(LeaseDto::from(&lease())).unwrap();
        let keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        for key in [
            "lease_id",
            "slug",
            "host",
            "owner",
            "edge_bind_port",
            "created_at",
            "updated_at",
            "expires_at",
            "state",
        ] {
            assert!(keys.contains(&key), "missing {key}");
        }
        assert_eq!(json["created_at"], "2026-05-28T20:26:40Z");
        assert_eq!(json["state"], "active");
    }

    #[test]
    fn tombstones_are_exact() {
        let mut l = lease();
        l.state = LeaseState::Released;
        let dto = LeaseDto::from(&l);
        assert_eq!(dto.slug, "released-lease_abcdefghijklmnop");
        assert_eq!(dto.host, "released-lease_abcdefghijklmnop.invalid");
        l.state = LeaseState::Expired;
        assert_eq!(
            LeaseDto::from(&l).host,
            "expired-lease_abcdefghijklmnop.invalid"
        );
    }

    #[test]
    fn envelope_shape() {
        let e = ApiError::new(ErrorCode::SlugTaken, "portal is taken");
        let v: serde_json::Value = serde_json::from_str(&e.to_envelope_json()).unwrap();
        assert_eq!(v["error"]["code"], "slug_taken");
        assert_eq!(v["error"]["message"], "portal is taken");
        assert!(!v["error"]["hint"].as_str().unwrap().is_empty());
        let back = decode_reply(Verb::Allocate, &e.to_envelope_json()).unwrap_err();
        assert_eq!(back, ReplyError::Refused(e));
    }

    #[test]
    fn codes_are_stable_strings() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            assert!(!code.hint().is_empty());
        }
    }

    #[test]
    fn decode_reply_checks_shape() {
        let dto = LeaseDto::from(&lease());
        let json = serde_json::to_string(&dto).unwrap();
        assert_eq!(
            decode_reply(Verb::Heartbeat, &json).unwrap(),
            CtlResponse::Lease(dto)
        );
        assert!(matches!(
            decode_reply(Verb::List, &json),
            Err(ReplyError::Malformed { .. })
        ));
        assert_eq!(
            decode_reply(Verb::List, "[]").unwrap(),
            CtlResponse::Leases(vec![])
        );
        assert!(matches!(
            decode_reply(Verb::List, "nope"),
            Err(ReplyError::Malformed { .. })
        ));
    }

    #[test]
    fn force_requires_name() {
        let err = CtlRequest::parse_args(&["allocate", "--force"]).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidArgument);
    }

    #[test]
    fn args_round_trip() {
        let requests = [
            CtlRequest::Allocate(AllocateRequest {
                local_port: Some(3000),
                name: Some("portal".parse().unwrap()),
                ttl: Some(Duration::from_secs(90)),
                takeover: Takeover::Force,
            }),
            CtlRequest::Allocate(AllocateRequest {
                ttl: Some(Duration::from_millis(1500)),
                ..AllocateRequest::default()
            }),
            CtlRequest::Allocate(AllocateRequest::default()),
            CtlRequest::Heartbeat {
                lease: "lease_abcdefghijklmnop".parse().unwrap(),
            },
            CtlRequest::Release {
                lease: "portal.t.example".parse().unwrap(),
            },
            CtlRequest::Delete {
                lease: "portal".parse().unwrap(),
            },
            CtlRequest::List(ListScope::All),
            CtlRequest::List(ListScope::Own),
            CtlRequest::Health,
            CtlRequest::Reconcile,
            CtlRequest::Stats,
        ];
        for request in requests {
            let args = request.to_args();
            assert_eq!(args[0], "ctl");
            assert_eq!(CtlRequest::parse_args(&args[1..]).unwrap(), request);
        }
    }
}
