//! When a lease ends, its traffic ends with it.
//!
//! Removing a lease's route or host link stops new connections, but not the ones Caddy
//! already holds: `reverse_proxy` keeps idle upstream connections per dial address (two
//! minutes), and in `static` mode that address (`hosts/<slug>.sock`) is the same for the
//! next lease of the name. A tenant whose lease ended may also keep its SSH connection
//! open on purpose. So `serve` ends the SSH connection that carries the lease's forward:
//!
//! 1. connect to the lease's socket: the kernel names the process that listens on it
//!    (`SO_PEERCRED` of a unix stream socket is the listener's pid and uid at `listen`),
//!    which is the owner's sshd session process — the one that bound the forward;
//! 2. refuse unless that uid is the lease owner's and the process is an `sshd`;
//! 3. `SIGTERM` it (serve holds `CAP_KILL` for this alone: the unit grants it), and wait
//!    until nothing listens on the socket any more (`SIGKILL` if it lingers).
//!
//! Every channel of that connection closes, Caddy's pooled connections with them. With
//! one SSH connection per client that also drops the owner's other tunnels on it for one
//! reconnect. The probe connection itself reaches the owner's app as an empty connection.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use mytunnel_core::Lease;
use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::sockets::{socket_state_at, SocketState};

/// Ends whatever still carries a lease's traffic once the lease has ended.
#[async_trait]
pub trait TunnelEnds: Send + Sync + fmt::Debug {
    /// Ends the traffic of `lease`, which has just ended; returns what happened (also
    /// logged).
    async fn end(&self, lease: &Lease) -> TunnelEnd {
        let Some(socket) = &lease.bind_socket else {
            return TunnelEnd::NotASocket;
        };
        let owner_uid = match nix::unistd::User::from_name(lease.owner.as_str()) {
            Ok(Some(user)) => user.uid.as_raw(),
            Ok(None) => return TunnelEnd::Refused(format!("no user {}", lease.owner)),
            Err(e) => return TunnelEnd::Refused(format!("user {}: {e}", lease.owner)),
        };
        let outcome = self.end_socket(Path::new(socket.as_str()), owner_uid).await;
        match &outcome {
            TunnelEnd::Ended { pid } => {
                tracing::info!(lease = %lease.id, owner = %lease.owner, pid, "ended the ssh connection of an ended lease");
            }
            TunnelEnd::Refused(why) => {
                tracing::warn!(lease = %lease.id, owner = %lease.owner, %why, "the ssh connection of an ended lease still runs");
            }
            TunnelEnd::NotASocket | TunnelEnd::NothingListens => {}
        }
        outcome
    }

    /// Ends the connection of `owner_uid` that listens on `socket`.
    async fn end_socket(&self, socket: &Path, owner_uid: u32) -> TunnelEnd;
}

/// What ending a lease's tunnel did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TunnelEnd {
    /// The lease binds a TCP port (from before sockets): nothing is done.
    NotASocket,
    /// Nothing listens on the lease's socket: no traffic to end.
    NothingListens,
    /// The SSH connection (sshd process `pid`) that listened on it has ended.
    Ended {
        /// The sshd session process that was signalled.
        pid: i32,
    },
    /// Something listens but was not ended; why.
    Refused(String),
}

impl fmt::Display for TunnelEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TunnelEnd::NotASocket => f.write_str("the lease binds a port: nothing to end"),
            TunnelEnd::NothingListens => f.write_str("nothing listens on its socket"),
            TunnelEnd::Ended { pid } => write!(f, "ended its ssh connection (sshd pid {pid})"),
            TunnelEnd::Refused(why) => write!(f, "could not end its ssh connection: {why}"),
        }
    }
}

/// For an edge inside one process (tests, the in-process transport): nothing to end.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoTunnelEnds;

#[async_trait]
impl TunnelEnds for NoTunnelEnds {
    async fn end_socket(&self, _socket: &Path, _owner_uid: u32) -> TunnelEnd {
        TunnelEnd::NothingListens
    }
}

/// Ends the owner's sshd connection that listens on a lease's socket.
#[derive(Debug, Clone)]
pub struct SshListenerEnds {
    /// How long to wait for the listener to go after `SIGTERM`, and again after `SIGKILL`.
    pub grace: Duration,
}

impl Default for SshListenerEnds {
    fn default() -> Self {
        SshListenerEnds {
            grace: Duration::from_millis(500),
        }
    }
}

#[async_trait]
impl TunnelEnds for SshListenerEnds {
    async fn end_socket(&self, socket: &Path, owner_uid: u32) -> TunnelEnd {
        end_listener(socket, owner_uid, self.grace).await
    }
}

/// Ends the sshd connection of `owner_uid` that listens on `socket`, as the module
/// explains: the listener's pid from `SO_PEERCRED`, checked, signalled, and waited for
/// (at most `grace` after `SIGTERM`, then `grace` after `SIGKILL`).
pub async fn end_listener(socket: &Path, owner_uid: u32, grace: Duration) -> TunnelEnd {
    if socket_state_at(socket) != SocketState::Bound {
        return TunnelEnd::NothingListens;
    }
    let shown = socket.display();
    let connect = tokio::net::UnixStream::connect(socket);
    let stream = match tokio::time::timeout(grace, connect).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            return match e.raw_os_error() {
                Some(nix::libc::ECONNREFUSED | nix::libc::ENOENT) => TunnelEnd::NothingListens,
                _ => TunnelEnd::Refused(format!("cannot connect to {shown}: {e}")),
            }
        }
        Err(_) => return TunnelEnd::Refused(format!("{shown} accepts no connection")),
    };
    let credentials = stream.peer_cred();
    drop(stream);
    let credentials = match credentials {
        Ok(credentials) => credentials,
        Err(e) => return TunnelEnd::Refused(format!("no peer credentials on {shown}: {e}")),
    };
    let Some(pid) = credentials.pid() else {
        return TunnelEnd::Refused(format!("the kernel named no process for {shown}"));
    };
    if credentials.uid() != owner_uid {
        return TunnelEnd::Refused(format!(
            "{shown} is held by uid {}, not its owner's ({owner_uid})",
            credentials.uid()
        ));
    }
    if let Err(why) = check_is_sshd(pid, owner_uid) {
        return TunnelEnd::Refused(why);
    }
    for signal in [Signal::SIGTERM, Signal::SIGKILL] {
        match nix::sys::signal::kill(Pid::from_raw(pid), signal) {
            Ok(()) => {}
            Err(nix::errno::Errno::ESRCH) => {}
            Err(nix::errno::Errno::EPERM) => {
                return TunnelEnd::Refused(format!(
                    "not permitted to signal sshd pid {pid}: serve needs CAP_KILL \
                     (AmbientCapabilities=CAP_KILL in its unit, as install-edge.sh writes it)"
                ))
            }
            Err(e) => return TunnelEnd::Refused(format!("cannot signal sshd pid {pid}: {e}")),
        }
        if listener_gone(socket, grace).await {
            return TunnelEnd::Ended { pid };
        }
    }
    TunnelEnd::Refused(format!("sshd pid {pid} still listens on {shown}"))
}

/// Refuses to signal anything but an sshd process of `uid`: `/proc/<pid>/comm` and the
/// real uid in `/proc/<pid>/status`, read just before the signal.
fn check_is_sshd(pid: i32, uid: u32) -> Result<(), String> {
    let proc_dir = Path::new("/proc").join(pid.to_string());
    let comm =
        std::fs::read_to_string(proc_dir.join("comm")).map_err(|e| format!("pid {pid}: {e}"))?;
    // `sshd`, or `sshd-session` from OpenSSH 9.8 on.
    if !comm.trim_end().starts_with("sshd") {
        return Err(format!(
            "pid {pid} listening on the lease's socket is {:?}, not sshd",
            comm.trim_end()
        ));
    }
    let status =
        std::fs::read_to_string(proc_dir.join("status")).map_err(|e| format!("pid {pid}: {e}"))?;
    let real_uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().next())
        .and_then(|id| id.parse::<u32>().ok());
    if real_uid != Some(uid) {
        return Err(format!("pid {pid} no longer runs as uid {uid}"));
    }
    Ok(())
}

/// Waits up to `grace` until nothing listens on `socket`.
async fn listener_gone(socket: &Path, grace: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + grace;
    loop {
        if socket_state_at(socket) != SocketState::Bound {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn socket_in(dir: &Path) -> std::path::PathBuf {
        dir.join("lease_abcdefghij234567.sock")
    }

    #[tokio::test]
    async fn nothing_listening_is_nothing_to_end() {
        let dir = tempfile::tempdir().unwrap();
        let socket = socket_in(dir.path());
        let grace = Duration::from_millis(100);
        assert_eq!(
            end_listener(&socket, 0, grace).await,
            TunnelEnd::NothingListens
        );
        // A stale file: still nothing.
        drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
        assert_eq!(
            end_listener(&socket, 0, grace).await,
            TunnelEnd::NothingListens
        );
    }

    #[tokio::test]
    async fn a_listener_of_another_uid_or_not_sshd_is_never_signalled() {
        let dir = tempfile::tempdir().unwrap();
        let socket = socket_in(dir.path());
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let grace = Duration::from_millis(100);
        let me = nix::unistd::getuid().as_raw();
        match end_listener(&socket, me.wrapping_add(1), grace).await {
            TunnelEnd::Refused(why) => assert!(why.contains("not its owner's"), "{why}"),
            other => panic!("{other:?}"),
        }
        // This test process listens: it is not sshd, and is still alive to say so.
        match end_listener(&socket, me, grace).await {
            TunnelEnd::Refused(why) => assert!(why.contains("not sshd"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(socket_state_at(&socket), SocketState::Bound);
    }
}
