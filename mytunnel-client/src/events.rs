//! What a tunnel reports while it runs.

use std::fmt;
use std::time::Duration;

use mytunnel_core::protocol::LeaseDto;
use mytunnel_core::{BindTarget, LeaseId, Timestamp};

/// One state change of a tunnel. Every change is an event; the CLI prints them as
/// status lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TunnelEvent {
    /// The local probe answered oddly (empty body or status ≥ 400); the tunnel opens anyway.
    ProbeWarning {
        /// What was odd.
        message: String,
    },
    /// The edge allocated a lease.
    Allocated {
        /// The lease.
        lease: LeaseDto,
        /// `https://<host>`
        url: String,
    },
    /// The data plane is up.
    Forwarding {
        /// Where it binds on the edge.
        edge_bind: BindTarget,
    },
    /// A heartbeat extended the lease.
    Renewed {
        /// The new expiry.
        expires_at: Timestamp,
    },
    /// A heartbeat could not reach the edge; the next one retries.
    HeartbeatFailed {
        /// Why.
        error: String,
    },
    /// The data plane ended; trying again after `delay`.
    Reconnecting {
        /// 1 for the first retry.
        attempt: u32,
        /// The wait before this attempt.
        delay: Duration,
        /// Why the previous forward ended.
        reason: String,
    },
    /// The edge no longer knows the lease (expired or removed); allocating the name again.
    Lost {
        /// What the edge said.
        reason: String,
    },
    /// The lease was ended on purpose (released by `mytunnel stop`, deleted, or taken
    /// over by an admin): the tunnel ends without taking the name again.
    Ended {
        /// What ended it.
        reason: String,
    },
    /// The lease was released.
    Released {
        /// Its id.
        lease_id: LeaseId,
    },
}

impl fmt::Display for TunnelEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TunnelEvent::ProbeWarning { message } => write!(f, "warning: {message}"),
            TunnelEvent::Allocated { lease, url } => {
                write!(
                    f,
                    "allocated {} for {url} ({})",
                    lease.lease_id,
                    EdgeBind(&lease.bind_target())
                )
            }
            TunnelEvent::Forwarding { edge_bind } => {
                write!(f, "forwarding: {} is connected", EdgeBind(edge_bind))
            }
            TunnelEvent::Renewed { expires_at } => write!(f, "renewed until {expires_at}"),
            TunnelEvent::HeartbeatFailed { error } => {
                write!(f, "heartbeat failed ({error}); retrying")
            }
            TunnelEvent::Reconnecting {
                attempt,
                delay,
                reason,
            } => write!(
                f,
                "reconnecting (attempt {attempt}, in {:.1}s): {reason}",
                delay.as_secs_f64()
            ),
            TunnelEvent::Lost { reason } => write!(f, "lease lost ({reason}); allocating again"),
            TunnelEvent::Ended { reason } => f.write_str(reason),
            TunnelEvent::Released { lease_id } => write!(f, "released {lease_id}"),
        }
    }
}

/// `edge port 21000` or `edge socket /…/lease_….sock`.
struct EdgeBind<'a>(&'a BindTarget);

impl fmt::Display for EdgeBind<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            BindTarget::LoopbackPort(port) => write!(f, "edge port {port}"),
            BindTarget::UnixSocket(path) => write!(f, "edge socket {path}"),
        }
    }
}
