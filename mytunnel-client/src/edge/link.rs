//! The edge's connection: which of its destinations it reaches, over which transport, and
//! the move to another destination when the current one cannot be reached.
//!
//! An edge resolved from a profile with several `destinations` connects the first that
//! answers. Later, whoever finds the connection unreachable (a tunnel's supervisor, a
//! control call) asks to move on from the connection it saw, by its generation: the first
//! to ask connects the next destination that answers (in order, wrapping, never the one
//! that failed) and the others find it done. The connection it leaves is ended.

use std::fmt;
use std::sync::Arc;

use mytunnel_core::transport::{Transport, TransportError};

use super::EdgeBuilder;
use crate::profile::ResolvedEdge;
use crate::ssh::SshTransport;

/// The type of [`Connector`]'s function.
pub(crate) type ConnectFn =
    dyn Fn(&str) -> Result<Arc<dyn Transport>, TransportError> + Send + Sync;

/// Makes the transport of one destination instead of ssh (tests of failover): the
/// destination's transport, or why it cannot be reached.
#[derive(Clone)]
pub(crate) struct Connector(pub(crate) Arc<ConnectFn>);

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Connector(..)")
    }
}

/// A move of the connection from one destination to another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Move {
    /// The destination left.
    pub(crate) from: String,
    /// The destination reached.
    pub(crate) to: String,
    /// Why `from` was left (and any destination passed over on the way).
    pub(crate) reason: String,
}

/// The connection as it is now, for one step of a caller.
#[derive(Debug, Clone)]
pub(crate) struct Current {
    /// How many moves came before this connection: a caller that saw it fail moves on
    /// from this one, so that a move is made once however many saw the failure.
    pub(crate) generation: u64,
    /// Which destination (0 for an edge without a list of them).
    pub(crate) index: usize,
    /// Its transport.
    pub(crate) transport: Arc<dyn Transport>,
    /// How the connection came to this destination, unless it is where it started.
    pub(crate) moved: Option<Move>,
}

/// The connection an edge holds.
#[derive(Debug)]
pub(super) struct Link {
    pub(super) current: Current,
    /// The same transport when it is ssh, to end it gracefully.
    pub(super) ssh: Option<Arc<SshTransport>>,
}

/// A destination connected: its index, transport and ssh (to end it gracefully).
pub(super) struct Connected {
    pub(super) index: usize,
    pub(super) transport: Arc<dyn Transport>,
    pub(super) ssh: Option<Arc<SshTransport>>,
    /// The destinations tried before it, each with why it could not be reached.
    pub(super) passed_over: Vec<(String, TransportError)>,
}

/// How an edge resolved from its settings reaches each of its destinations.
#[derive(Debug)]
pub(super) struct Reach {
    pub(super) builder: EdgeBuilder,
    pub(super) resolved: ResolvedEdge,
}

impl Reach {
    /// How many destinations there are.
    pub(super) fn count(&self) -> usize {
        self.resolved.destinations.count()
    }

    /// The destination at `index`.
    pub(super) fn destination(&self, index: usize) -> Option<&str> {
        self.resolved.destinations.get(index)
    }

    /// Connects destination `index`: ssh (which, sharing one connection, logs in now),
    /// or the connector's transport.
    async fn connect_one(
        &self,
        index: usize,
    ) -> Result<(Arc<dyn Transport>, Option<Arc<SshTransport>>), TransportError> {
        let destination = self.destination(index).ok_or_else(|| {
            TransportError::Unreachable(format!("the edge has no destination {index}"))
        })?;
        match &self.builder.settings.connector {
            Some(connector) => (connector.0)(destination).map(|transport| (transport, None)),
            None => {
                let config = self.builder.ssh_config(&self.resolved, destination);
                let ssh = Arc::new(SshTransport::connect(config).await?);
                Ok((ssh.clone() as Arc<dyn Transport>, Some(ssh)))
            }
        }
    }

    /// Connects the first destination that answers among `tries` of them from `start`,
    /// in order, wrapping after the last. When none answers: an error naming each.
    pub(super) async fn connect_first(
        &self,
        start: usize,
        tries: usize,
    ) -> Result<Connected, TransportError> {
        let count = self.count();
        let mut passed_over = Vec::new();
        for step in 0..tries.min(count) {
            let index = start.saturating_add(step) % count;
            match self.connect_one(index).await {
                Ok((transport, ssh)) => {
                    return Ok(Connected {
                        index,
                        transport,
                        ssh,
                        passed_over,
                    })
                }
                Err(e) => {
                    let destination = self.destination(index).unwrap_or_default().to_owned();
                    tracing::debug!(%destination, error = %e, "destination not reached");
                    passed_over.push((destination, e));
                }
            }
        }
        Err(none_reached(passed_over))
    }
}

/// The error of a connection that reached none of its destinations: the one error as it
/// was for a single destination, else each destination with its own.
fn none_reached(mut failures: Vec<(String, TransportError)>) -> TransportError {
    if failures.len() == 1 {
        if let Some((_, only)) = failures.pop() {
            return only;
        }
    }
    let each: Vec<String> = failures
        .iter()
        .map(|(destination, e)| format!("{destination}: {}", why(e)))
        .collect();
    TransportError::Unreachable(format!(
        "none of the edge's {} destinations could be reached ({})",
        failures.len(),
        each.join("; ")
    ))
}

/// What an error says without the "cannot reach the edge" that every one of a move's
/// says.
pub(super) fn why(e: &TransportError) -> String {
    match e {
        TransportError::Unreachable(why) => why.clone(),
        other => other.to_string(),
    }
}

/// Why the connection left a destination: its own failure, then those passed over.
pub(super) fn move_reason(reason: &str, passed_over: &[(String, TransportError)]) -> String {
    let mut said = reason.to_owned();
    for (destination, e) in passed_over {
        said.push_str(&format!("; {destination} was unreachable too: {}", why(e)));
    }
    said
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn none_reached_names_each_destination_or_keeps_the_one_error() {
        let one = TransportError::Unreachable("ssh to a failed".into());
        assert_eq!(none_reached(vec![("a".into(), one.clone())]), one);
        let two = none_reached(vec![
            ("a".into(), one),
            (
                "b".into(),
                TransportError::Unreachable("ssh to b failed".into()),
            ),
        ]);
        assert_eq!(
            two.to_string(),
            "cannot reach the edge: none of the edge's 2 destinations could be reached \
             (a: ssh to a failed; b: ssh to b failed)"
        );
        assert_eq!(
            move_reason(
                "timed out",
                &[("b".into(), TransportError::Unreachable("refused".into()))]
            ),
            "timed out; b was unreachable too: refused"
        );
    }
}
