//! The SDK's errors, one variant per stage.

use mytunnel_core::transport::TransportError;
use mytunnel_core::ErrorCode;

use crate::probe::ProbeError;
use crate::profile::ProfileError;
use crate::upstream::{HostHeaderError, UpstreamError};

/// Why a tunnel could not open or stopped. New variants may come in later versions:
/// match with a `_` arm.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TunnelError {
    /// The builder's options contradict each other or are malformed (nothing was sent).
    #[error("invalid tunnel options: {0}")]
    InvalidOptions(String),
    /// The app's target is malformed (nothing was sent).
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// The `Host` header to give the app is malformed (nothing was sent).
    #[error(transparent)]
    HostHeader(#[from] HostHeaderError),
    /// No edge could be resolved, or the profile file is broken.
    #[error(transparent)]
    Edge(#[from] ProfileError),
    /// The local app did not answer; no lease was allocated.
    #[error(transparent)]
    Probe(#[from] ProbeError),
    /// The control connection to the edge could not be made.
    #[error("connecting to the edge: {0}")]
    Connect(TransportError),
    /// The edge refused or failed the allocation.
    #[error("allocating the tunnel: {0}")]
    Allocate(TransportError),
    /// The data plane could not be opened (the lease was released again).
    #[error("opening the data plane: {0}")]
    Forward(TransportError),
    /// The data plane ended and reconnecting is off.
    #[error("the data plane ended: {0}")]
    ForwardEnded(String),
    /// Releasing the lease failed (it will expire after its TTL).
    #[error("releasing the lease: {0}")]
    Release(TransportError),
    /// The lease was ended on purpose while the tunnel ran (released by `mytunnel stop`,
    /// deleted by `mytunnel rm`, or taken over by an admin): the tunnel ends and does not
    /// take the name again.
    #[error("the tunnel ended: lease {lease_id} {how}")]
    LeaseEnded {
        /// The lease that ended.
        lease_id: mytunnel_core::LeaseId,
        /// How it ended.
        how: LeaseEnd,
    },
    /// The tunnel was to open on an [`Edge`](crate::Edge) that was closed.
    #[error("the edge was closed (`Edge::close`)")]
    EdgeClosed,
}

/// How a lease was ended on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LeaseEnd {
    /// Released (`mytunnel stop`, `ctl release`).
    Released,
    /// Deleted (`mytunnel rm`), or taken over by an admin's `--force` (which deletes it).
    DeletedOrTakenOver,
}

impl std::fmt::Display for LeaseEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LeaseEnd::Released => "was released (`mytunnel stop`)",
            LeaseEnd::DeletedOrTakenOver => "was deleted (`mytunnel rm`) or taken over by an admin",
        })
    }
}

impl TunnelError {
    /// The edge's error code, when the edge refused.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            TunnelError::Connect(TransportError::Refused(e))
            | TunnelError::Allocate(TransportError::Refused(e))
            | TunnelError::Forward(TransportError::Refused(e))
            | TunnelError::Release(TransportError::Refused(e)) => Some(e.code),
            _ => None,
        }
    }

    /// A stable, machine-readable code for an error of this machine's side: options
    /// that contradict each other (`invalid_options`), a malformed target (`target_*`),
    /// `host_header_invalid`, or a probe that failed (`app_*`). The edge's refusals have
    /// [`TunnelError::code`] instead.
    pub fn local_code(&self) -> Option<&'static str> {
        match self {
            TunnelError::InvalidOptions(_) => Some("invalid_options"),
            TunnelError::Upstream(e) => Some(e.code()),
            TunnelError::HostHeader(e) => Some(e.code()),
            TunnelError::Probe(e) => Some(e.code()),
            _ => None,
        }
    }

    /// What the user can do about it, in the SDK's terms (builder calls, not CLI flags).
    pub fn hint(&self) -> String {
        match self {
            TunnelError::InvalidOptions(_) => {
                "fix the builder call the message names (`cargo doc -p mytunnel-client` documents each)".to_owned()
            }
            TunnelError::Edge(ProfileError::NoEdge { .. }) => {
                "name the edge with `.edge(\"user@your-edge\")`, set MYTUNNEL_EDGE, or add a profile".to_owned()
            }
            TunnelError::Edge(_) => "fix the edge setting or the profile file".to_owned(),
            TunnelError::Probe(e) => e.hint(),
            TunnelError::Upstream(e) => e.hint(),
            TunnelError::HostHeader(_) => {
                "give `HostHeader::Rewrite`, or a host with an optional port".to_owned()
            }
            TunnelError::Connect(TransportError::Unreachable(_))
            | TunnelError::Allocate(TransportError::Unreachable(_)) => {
                "check that `ssh <edge>` works with your tunnel key; `doctor::run_doctor` checks each step".to_owned()
            }
            TunnelError::Forward(TransportError::Unreachable(_)) => {
                "the edge refused the port forward: the key needs `port-forwarding`, and the port may still be held by a previous session (retry in a moment)".to_owned()
            }
            TunnelError::ForwardEnded(_) => {
                "open it again, or keep `.reconnect(Reconnect::Always)` so the tunnel comes back by itself".to_owned()
            }
            TunnelError::Release(_) => {
                "the lease expires by itself after its TTL; `Edge::list` shows it until then".to_owned()
            }
            TunnelError::LeaseEnded { .. } => {
                "someone with access to this edge account ended it; open the tunnel again to publish anew".to_owned()
            }
            TunnelError::EdgeClosed => {
                "open tunnels on a connected edge: `Edge::builder()…connect()`, or `Tunnel::http(port)`".to_owned()
            }
            TunnelError::Connect(e) | TunnelError::Allocate(e) | TunnelError::Forward(e) => match e {
                TransportError::Refused(api) => api.hint.clone(),
                _ => "the edge answered unexpectedly: check that client and edge versions match (`Edge::health` gives the edge's)".to_owned(),
            },
        }
    }
}
