//! The requests: verbs, their typed arguments, and the daemon flags the gate refuses.

use super::*;

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
    /// The caller's own lease this allocation replaces (`--replaces ID`; needs a name): a
    /// client that moved to another edge of the same lease database takes its name back
    /// without waiting for the old lease's TTL. The name's active holder is displaced
    /// only when it is this lease and the caller owns it; in every other case this
    /// changes nothing. Needs no admin rights: a caller can only displace their own lease.
    pub replaces: Option<LeaseId>,
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
    /// `allocate [--local-port N] [--name SLUG] [--ttl DUR] [--force] [--replaces ID]
    /// [--owner X]`
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
