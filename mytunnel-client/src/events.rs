//! What a tunnel reports while it runs, and the stream it reports on.

use std::fmt;
use std::time::Duration;

use mytunnel_core::protocol::LeaseDto;
use mytunnel_core::{BindTarget, LeaseId, Timestamp};

use crate::inspect::RequestSummary;
use tokio::sync::broadcast::{self, error::RecvError, error::TryRecvError};

/// How many events a tunnel keeps for a reader that has not read them yet.
pub(crate) const EVENT_BUFFER: usize = 256;

/// One state change of a tunnel. Every change is an event; the CLI prints them as
/// status lines. New kinds of events may come in later versions: match with a `_` arm.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
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
    /// The edge could not be reached, and the connection moved to the next destination of
    /// the edge's profile (edges that share one lease database), where the tunnel takes
    /// its name again: the URL stays the same. At `open`, a destination passed over.
    EdgeMoved {
        /// The destination left.
        from: String,
        /// The destination the connection moved to.
        to: String,
        /// Why `from` was left.
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
    /// The tunnel's HTTP proxy carried one exchange to its end (the response ended, the
    /// connection switched protocols, or it failed); see [`crate::inspect`]. These come
    /// in batches, in order, at most 20 ms after their exchange ended.
    Request(RequestSummary),
    /// The reader fell more than 256 events behind and `count` events were dropped
    /// before it read them; the events after this one follow on from the oldest kept.
    /// Only [`TunnelEvents`] yields it, never the tunnel itself.
    Missed {
        /// How many events were dropped.
        count: u64,
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
            TunnelEvent::EdgeMoved { from, to, reason } => {
                write!(f, "edge {from} unreachable; moved to {to} ({reason})")
            }
            TunnelEvent::Lost { reason } => write!(f, "lease lost ({reason}); allocating again"),
            TunnelEvent::Ended { reason } => f.write_str(reason),
            TunnelEvent::Released { lease_id } => write!(f, "released {lease_id}"),
            TunnelEvent::Request(summary) => write!(f, "{summary}"),
            TunnelEvent::Missed { count } => {
                write!(f, "missed {count} events (read more often to see them all)")
            }
        }
    }
}

/// The events of one tunnel, in order, from [`TunnelHandle::events`](crate::TunnelHandle::events).
///
/// The tunnel keeps the last 256 events for a reader that has not read them. A reader
/// that falls further behind does not fail: [`next`](TunnelEvents::next) yields one
/// [`TunnelEvent::Missed`] saying how many were dropped, then goes on with the oldest
/// event still kept. The stream ends (`None`) once the tunnel has ended and every event
/// before that was read.
///
/// ```no_run
/// # async fn run(mut tunnel: mytunnel_client::TunnelHandle) {
/// let mut events = tunnel.events();
/// while let Some(event) = events.next().await {
///     println!("{event}");
/// }
/// # }
/// ```
#[derive(Debug)]
pub struct TunnelEvents {
    events: broadcast::Receiver<TunnelEvent>,
}

impl TunnelEvents {
    pub(crate) fn new(events: broadcast::Receiver<TunnelEvent>) -> TunnelEvents {
        TunnelEvents { events }
    }

    /// The next event: waits for it; [`TunnelEvent::Missed`] after falling behind; `None`
    /// once the tunnel has ended.
    pub async fn next(&mut self) -> Option<TunnelEvent> {
        match self.events.recv().await {
            Ok(event) => Some(event),
            Err(RecvError::Lagged(count)) => Some(TunnelEvent::Missed { count }),
            Err(RecvError::Closed) => None,
        }
    }

    /// The next event if one is already there, without waiting (`None` when there is
    /// none yet, and after the end).
    pub fn try_next(&mut self) -> Option<TunnelEvent> {
        match self.events.try_recv() {
            Ok(event) => Some(event),
            Err(TryRecvError::Lagged(count)) => Some(TunnelEvent::Missed { count }),
            Err(TryRecvError::Empty | TryRecvError::Closed) => None,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn renewed(n: i64) -> TunnelEvent {
        TunnelEvent::Renewed {
            expires_at: Timestamp::from_unix_seconds(n).unwrap(),
        }
    }

    #[tokio::test]
    async fn a_reader_behind_is_told_how_many_it_missed_then_goes_on() {
        let (tx, rx) = broadcast::channel(2);
        let mut events = TunnelEvents::new(rx);
        for n in 1..=5 {
            tx.send(renewed(n)).unwrap();
        }
        drop(tx);
        // 1, 2 and 3 were dropped; 4 and 5 are kept.
        assert_eq!(events.next().await, Some(TunnelEvent::Missed { count: 3 }));
        assert_eq!(events.next().await, Some(renewed(4)));
        assert_eq!(events.next().await, Some(renewed(5)));
        assert_eq!(events.next().await, None);
        assert_eq!(events.next().await, None, "the end stays the end");
    }

    #[test]
    fn try_next_takes_only_what_is_there() {
        let (tx, rx) = broadcast::channel(2);
        let mut events = TunnelEvents::new(rx);
        assert_eq!(events.try_next(), None);
        for n in 1..=3 {
            tx.send(renewed(n)).unwrap();
        }
        assert_eq!(events.try_next(), Some(TunnelEvent::Missed { count: 1 }));
        assert_eq!(events.try_next(), Some(renewed(2)));
        assert_eq!(events.try_next(), Some(renewed(3)));
        assert_eq!(events.try_next(), None);
        assert_eq!(
            TunnelEvent::Missed { count: 3 }.to_string(),
            "missed 3 events (read more often to see them all)"
        );
        assert_eq!(
            TunnelEvent::EdgeMoved {
                from: "tunnel@a.example.com".into(),
                to: "tunnel@b.example.com".into(),
                reason: "cannot reach the edge: ssh exited with status 255".into(),
            }
            .to_string(),
            "edge tunnel@a.example.com unreachable; moved to tunnel@b.example.com \
             (cannot reach the edge: ssh exited with status 255)"
        );
    }
}
