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
//!
//! A tenant can also cancel the forward before the lease ends (`ssh -O cancel`): nothing
//! listens any more, but the connections sshd accepted stay open, and Caddy keeps using
//! them for the name. So when nothing listens, `serve` looks for connections still open
//! on the lease's socket (`/proc/net/unix` names an accepted socket by the path it was
//! accepted on) and, unless they close within a moment (a client closing its tunnel
//! closes them just before it releases), ends every sshd connection process of the
//! owner: which one holds them the kernel does not say without ptrace. The connection
//! that asked for the end (its ctl process's sshd) is ended last, and only if the others'
//! ending left connections open: its answer then comes after the traffic has stopped,
//! not when its own connection drops while another still carries requests.

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
    /// Ends the traffic of `lease`, which has just ended at the request of process
    /// `asker` (when known); returns what happened (also logged).
    async fn end(&self, lease: &Lease, asker: Option<u32>) -> TunnelEnd {
        let Some(socket) = &lease.bind_socket else {
            return TunnelEnd::NotASocket;
        };
        let owner_uid = match nix::unistd::User::from_name(lease.owner.as_str()) {
            Ok(Some(user)) => user.uid.as_raw(),
            Ok(None) => return TunnelEnd::Refused(format!("no user {}", lease.owner)),
            Err(e) => return TunnelEnd::Refused(format!("user {}: {e}", lease.owner)),
        };
        let outcome = self
            .end_socket(Path::new(socket.as_str()), owner_uid, asker)
            .await;
        match &outcome {
            TunnelEnd::Ended { pid } => {
                tracing::info!(lease = %lease.id, owner = %lease.owner, pid, "ended the ssh connection of an ended lease");
            }
            TunnelEnd::EndedOwnersConnections { pids } => {
                tracing::warn!(lease = %lease.id, owner = %lease.owner, ?pids, "connections to an ended lease's socket outlived its listener: ended every ssh connection of its owner");
            }
            TunnelEnd::Refused(why) => {
                tracing::warn!(lease = %lease.id, owner = %lease.owner, %why, "the ssh connection of an ended lease still runs");
            }
            TunnelEnd::NotASocket | TunnelEnd::NothingListens => {}
        }
        outcome
    }

    /// Ends the connection of `owner_uid` that listens on `socket` (or holds connections
    /// open on it); the SSH connection of process `asker`, if it is one of them, last.
    async fn end_socket(&self, socket: &Path, owner_uid: u32, asker: Option<u32>) -> TunnelEnd;
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
    /// Nothing listened, but connections stayed open on the socket: every sshd connection
    /// of the owner was ended.
    EndedOwnersConnections {
        /// The sshd session processes that were signalled.
        pids: Vec<i32>,
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
            TunnelEnd::EndedOwnersConnections { pids } => write!(
                f,
                "connections outlived its listener: ended the owner's ssh connections \
                 (sshd pids {pids:?})"
            ),
            TunnelEnd::Refused(why) => write!(f, "could not end its ssh connection: {why}"),
        }
    }
}

/// For an edge inside one process (tests, the in-process transport): nothing to end.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoTunnelEnds;

#[async_trait]
impl TunnelEnds for NoTunnelEnds {
    async fn end_socket(&self, _socket: &Path, _owner_uid: u32, _asker: Option<u32>) -> TunnelEnd {
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
    async fn end_socket(&self, socket: &Path, owner_uid: u32, asker: Option<u32>) -> TunnelEnd {
        end_listener(socket, owner_uid, asker, self.grace).await
    }
}

/// Ends the sshd connection of `owner_uid` that listens on `socket`, as the module
/// explains: the listener's pid from `SO_PEERCRED`, checked, signalled, and waited for
/// (at most `grace` after `SIGTERM`, then `grace` after `SIGKILL`). When nothing listens
/// but connections stay open, the owner's connections are ended, `asker`'s last.
pub async fn end_listener(
    socket: &Path,
    owner_uid: u32,
    asker: Option<u32>,
    grace: Duration,
) -> TunnelEnd {
    match end_the_listener(socket, owner_uid, grace).await {
        TunnelEnd::NothingListens => end_open_connections(socket, owner_uid, asker, grace).await,
        other => other,
    }
}

async fn end_the_listener(socket: &Path, owner_uid: u32, grace: Duration) -> TunnelEnd {
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

/// How long connections that outlived their listener get to close by themselves, in
/// `grace`s: a client that closes its tunnel closes them just before it releases.
const DRAIN_GRACES: u32 = 4;

/// Nothing listens on `socket`: ends the owner's connections if sshd still holds
/// connections accepted on it (see the module): every one but `asker`'s first, then
/// `asker`'s if connections are still open.
async fn end_open_connections(
    socket: &Path,
    owner_uid: u32,
    asker: Option<u32>,
    grace: Duration,
) -> TunnelEnd {
    if open_connections_at(socket) == 0 || drained(socket, grace * DRAIN_GRACES).await {
        return TunnelEnd::NothingListens;
    }
    let pids = sshd_processes_of(owner_uid);
    if pids.is_empty() {
        return TunnelEnd::Refused(format!(
            "connections to {} stay open, but uid {owner_uid} has no sshd process",
            socket.display()
        ));
    }
    let askers = asker.and_then(|pid| sshd_ancestor(pid, owner_uid));
    let (last, first): (Vec<i32>, Vec<i32>) = pids.iter().partition(|pid| Some(**pid) == askers);
    let mut ended = Vec::new();
    for group in [first, last] {
        if group.is_empty() {
            continue;
        }
        ended.extend(&group);
        for signal in [Signal::SIGTERM, Signal::SIGKILL] {
            for pid in &group {
                if check_is_sshd(*pid, owner_uid).is_err() {
                    continue;
                }
                match nix::sys::signal::kill(Pid::from_raw(*pid), signal) {
                    Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
                    Err(e) => {
                        return TunnelEnd::Refused(format!("cannot signal sshd pid {pid}: {e}"))
                    }
                }
            }
            if drained(socket, grace).await {
                return TunnelEnd::EndedOwnersConnections { pids: ended };
            }
        }
    }
    TunnelEnd::Refused(format!(
        "connections to {} stay open after its owner's sshd processes were ended",
        socket.display()
    ))
}

/// The sshd connection process of `uid` that `pid` runs under: the nearest ancestor of
/// `pid` (itself included) that is an sshd process of `uid`. A ctl request's process is a
/// child of the connection's session process (the forced command, exec'd by the shell).
fn sshd_ancestor(pid: u32, uid: u32) -> Option<i32> {
    let mut pid = i32::try_from(pid).ok()?;
    // A few generations at most: ctl, perhaps a shell, the session process.
    for _ in 0..8 {
        if pid <= 1 {
            return None;
        }
        if check_is_sshd(pid, uid).is_ok() {
            return Some(pid);
        }
        pid = parent_of(pid)?;
    }
    None
}

/// The parent pid of `pid`, from `/proc/<pid>/stat` (the field after the command name,
/// which is in parentheses and may itself hold spaces or parentheses).
fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_parent(&stat)
}

fn parse_parent(stat: &str) -> Option<i32> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(1)?.parse().ok()
}

/// Waits up to `limit` until no connection is open on `socket`.
async fn drained(socket: &Path, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if open_connections_at(socket) == 0 {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// How many connections are open on the unix socket at `socket`: the accepted ends, which
/// `/proc/net/unix` lists under the path they were accepted on (as the listener spelled
/// it at `bind`; compared after resolving both). Zero when the table cannot be read.
pub fn open_connections_at(socket: &Path) -> usize {
    let Ok(table) = std::fs::read_to_string("/proc/net/unix") else {
        return 0;
    };
    let resolved = std::fs::canonicalize(socket).ok();
    connected_paths(&table)
        .filter(|path| {
            let path = Path::new(path);
            path == socket
                || (path.file_name() == socket.file_name()
                    && resolved.is_some()
                    && std::fs::canonicalize(path).ok() == resolved)
        })
        .count()
}

/// The paths of the connected stream sockets in a `/proc/net/unix` table
/// (`Num RefCount Protocol Flags Type St Inode Path`; state `03` is connected).
fn connected_paths(table: &str) -> impl Iterator<Item = &str> {
    table.lines().skip(1).filter_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            [_, _, _, _, kind, "03", _, path, ..] if *kind == "0001" && path.starts_with('/') => {
                Some(*path)
            }
            _ => None,
        }
    })
}

/// The sshd processes running as `uid` (an sshd connection's unprivileged process runs as
/// the user who logged in).
fn sshd_processes_of(uid: u32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| check_is_sshd(*pid, uid).is_ok())
        .collect()
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
            end_listener(&socket, 0, None, grace).await,
            TunnelEnd::NothingListens
        );
        // A stale file: still nothing.
        drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
        assert_eq!(
            end_listener(&socket, 0, None, grace).await,
            TunnelEnd::NothingListens
        );
    }

    #[test]
    fn connected_stream_sockets_are_read_from_the_table() {
        let table = "Num       RefCount Protocol Flags    Type St Inode Path
0000000000000000: 00000002 00000000 00010000 0001 01 100 /run/m/owners/alice/lease_a.sock
0000000000000000: 00000003 00000000 00000000 0001 03 101 /run/m/owners/alice/lease_a.sock
0000000000000000: 00000003 00000000 00000000 0001 03 102
0000000000000000: 00000003 00000000 00000000 0002 03 103 /run/m/dgram.sock
0000000000000000: 00000003 00000000 00000000 0001 03 104 @abstract
0000000000000000: 00000003 00000000 00000000 0001 03 105 /run/m/owners/alice//lease_a.sock
";
        let paths: Vec<&str> = connected_paths(table).collect();
        assert_eq!(
            paths,
            [
                "/run/m/owners/alice/lease_a.sock",
                "/run/m/owners/alice//lease_a.sock"
            ]
        );
    }

    #[test]
    fn the_parent_is_read_past_a_command_name_with_spaces_and_parentheses() {
        assert_eq!(
            parse_parent("4242 (sshd) S 4200 4242 4242 0 -1"),
            Some(4200)
        );
        assert_eq!(parse_parent("17 (a) b) (c) R 9 17 17"), Some(9));
        assert_eq!(parse_parent("17 (no close"), None);
        assert_eq!(parse_parent(""), None);
        let me = std::process::id();
        let parent = parent_of(i32::try_from(me).unwrap()).unwrap();
        assert_eq!(
            u32::try_from(parent).unwrap(),
            std::os::unix::process::parent_id()
        );
        // No sshd above this test process runs as a uid nobody has.
        assert_eq!(sshd_ancestor(me, u32::MAX - 1), None);
    }

    #[tokio::test]
    async fn connections_that_outlive_their_listener_are_counted_until_they_close() {
        let dir = tempfile::tempdir().unwrap();
        let socket = socket_in(dir.path());
        let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        assert_eq!(open_connections_at(&socket), 0);
        let client = std::os::unix::net::UnixStream::connect(&socket).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        drop(listener);
        assert_eq!(socket_state_at(&socket), SocketState::Stale);
        assert_eq!(open_connections_at(&socket), 1, "the accepted end");
        // Spelled another way, the same file.
        let other = dir.path().join(".").join(socket.file_name().unwrap());
        assert_eq!(open_connections_at(&other), 1);
        drop(accepted);
        drop(client);
        assert_eq!(open_connections_at(&socket), 0);
        // Nothing listens and nothing is open: nothing to end, at once.
        assert_eq!(
            end_listener(&socket, 0, None, Duration::from_millis(100)).await,
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
        match end_listener(&socket, me.wrapping_add(1), None, grace).await {
            TunnelEnd::Refused(why) => assert!(why.contains("not its owner's"), "{why}"),
            other => panic!("{other:?}"),
        }
        // This test process listens: it is not sshd, and is still alive to say so.
        match end_listener(&socket, me, None, grace).await {
            TunnelEnd::Refused(why) => assert!(why.contains("not sshd"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(socket_state_at(&socket), SocketState::Bound);
    }
}
