//! The per-owner socket directories, where every lease binds its socket.
//!
//! Each tunnel user has `<socket_dir>/owners/<user>/`, created by root when the user is
//! enrolled: owned by the user, group the proxy's, mode 2750. Only the owner can bind
//! there, so no one else can take over a lease's socket. sshd leaves a socket file behind
//! when a connection ends and (with `StreamLocalBindUnlink no`, which keeps tunnel users
//! from unlinking files elsewhere) refuses to bind over it, so the owner's `ctl` removes
//! sockets that nothing listens on: the lease's own on heartbeat and release, and every
//! other one on allocate. `serve` sweeps the directories for sockets no active lease
//! binds (reading [`owner_sockets`]) and ends the connections that listen on them.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use mytunnel_core::protocol::{ApiError, ErrorCode};
use mytunnel_core::{LeaseId, Owner, PortRange, SocketPath};

/// Binds a listening unix socket at `path` with file mode `mode`, replacing a socket left
/// by a previous run of the same service.
pub fn bind_service_socket(path: &Path, mode: u32) -> std::io::Result<tokio::net::UnixListener> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = tokio::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(listener)
}

/// Accepts connections on `listener` until `shutdown` resolves, each answered on its own
/// task by `answer`, at most `max_connections` at once; a connection past that is handed
/// to `refuse` (which must not wait). `name` says which socket in the log when accepting
/// fails (out of descriptors, say), after which it pauses 10 ms rather than spin.
pub async fn serve_connections<A, F>(
    name: &str,
    listener: tokio::net::UnixListener,
    max_connections: usize,
    shutdown: impl std::future::Future<Output = ()>,
    answer: A,
    refuse: impl Fn(tokio::net::UnixStream),
) where
    A: Fn(tokio::net::UnixStream) -> F,
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let connections = std::sync::Arc::new(tokio::sync::Semaphore::new(max_connections.max(1)));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => match std::sync::Arc::clone(&connections).try_acquire_owned() {
                    Ok(permit) => {
                        let answering = answer(stream);
                        tokio::spawn(async move {
                            answering.await;
                            drop(permit);
                        });
                    }
                    Err(_) => refuse(stream),
                },
                Err(e) => {
                    tracing::warn!(error = %e, socket = name, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            }
        }
    }
}

/// `<socket_dir>/owners`.
pub fn owners_dir(socket_dir: &Path) -> PathBuf {
    socket_dir.join("owners")
}

/// `<socket_dir>/hosts`.
pub fn hosts_dir(socket_dir: &Path) -> PathBuf {
    socket_dir.join("hosts")
}

/// `<socket_dir>/control.sock`, where `serve` takes link requests.
pub fn control_socket(socket_dir: &Path) -> PathBuf {
    socket_dir.join("control.sock")
}

/// `<socket_dir>/names.sock`, where `serve` tells Caddy the slug of a Host with capitals
/// (`static` mode; see [`crate::host_names`]).
pub fn names_socket(socket_dir: &Path) -> PathBuf {
    socket_dir.join("names.sock")
}

fn not_enrolled(owner: &Owner, dir: &Path, why: &str) -> ApiError {
    ApiError::new(
        ErrorCode::Internal,
        format!(
            "{owner} cannot publish on this edge: the socket directory {} {why}; the edge \
             operator enrolls users with scripts/install-edge-ssh-key.sh --socket-dir",
            dir.display()
        ),
    )
}

/// The socket of a new lease, after checking that the owner's directory is theirs alone:
/// a real directory (not a link), owned by the owner's uid, not writable by group or
/// others.
pub fn lease_socket(
    owners_dir: &Path,
    owner: &Owner,
    id: &LeaseId,
) -> Result<SocketPath, ApiError> {
    let dir = owners_dir.join(owner.as_str());
    let meta = match std::fs::symlink_metadata(&dir) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(not_enrolled(owner, &dir, "does not exist"))
        }
        Err(e) => return Err(not_enrolled(owner, &dir, &format!("cannot be read ({e})"))),
    };
    if !meta.file_type().is_dir() {
        return Err(not_enrolled(owner, &dir, "is not a directory"));
    }
    let uid = nix::unistd::User::from_name(owner.as_str())
        .ok()
        .flatten()
        .map(|user| user.uid.as_raw());
    if uid != Some(meta.uid()) {
        return Err(not_enrolled(owner, &dir, "is not owned by that user"));
    }
    if meta.permissions().mode() & 0o022 != 0 {
        return Err(not_enrolled(owner, &dir, "is writable by group or others"));
    }
    let owners = owners_dir
        .to_str()
        .ok_or_else(|| ApiError::new(ErrorCode::Internal, "the socket directory is not UTF-8"))?;
    SocketPath::for_lease(owners, owner, id)
        .map_err(|e| ApiError::new(ErrorCode::Internal, format!("lease socket path: {e}")))
}

/// The ports of `range` that a TCP socket listens on, on loopback or every address, from
/// `/proc/net/tcp` and `/proc/net/tcp6` (state `0A`). Reading them opens no connection.
pub fn listening_loopback_ports(range: PortRange) -> Vec<u16> {
    let mut ports: Vec<u16> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .flat_map(|table| parse_listening_tcp(&table))
        .filter(|port| range.contains(*port))
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// The listening ports on loopback or the wildcard address in the text of
/// `/proc/net/tcp` or `/proc/net/tcp6`.
pub fn parse_listening_tcp(table: &str) -> Vec<u16> {
    const LISTEN: &str = "0A";
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            // sl local_address rem_address st …
            let mut fields = line.split_whitespace();
            let local = fields.nth(1)?;
            let state = fields.nth(1)?;
            let (address, port) = local.split_once(':')?;
            let reachable = matches!(
                address,
                "0100007F"
                    | "00000000"
                    | "00000000000000000000000001000000"
                    | "00000000000000000000000000000000"
            );
            (state == LISTEN && reachable)
                .then(|| u16::from_str_radix(port, 16).ok())
                .flatten()
        })
        .collect()
}

/// What is at a lease's socket path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketState {
    /// A socket is bound there (sshd's listener: the tunnel is up).
    Bound,
    /// A socket file that no socket holds any more: what a dead connection leaves behind.
    Stale,
    /// Nothing, or something that is not a socket file.
    Absent,
    /// It could not be told (e.g. no permission): treat it as bound, never remove it.
    Unknown,
}

/// Tells a bound socket from a stale file without connecting to it: a datagram socket's
/// `connect` to a path finds the socket bound to that file and, since sshd's listener is
/// a stream socket, fails with `EPROTOTYPE` (no connection is made, nothing reaches the
/// tunnel); a file no socket holds fails with `ECONNREFUSED` (unix(7)). One system call,
/// however many sockets the edge has; reading `/proc/net/unix` instead took 15 ms with
/// 6,000 listening sockets.
pub fn socket_state(path: &SocketPath) -> SocketState {
    socket_state_at(Path::new(path.as_str()))
}

/// [`socket_state`] of any path.
pub fn socket_state_at(path: &Path) -> SocketState {
    let is_socket = match std::fs::symlink_metadata(path) {
        Ok(meta) => std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return SocketState::Absent,
        Err(_) => return SocketState::Unknown,
    };
    if !is_socket {
        return SocketState::Absent;
    }
    let Ok(probe) = std::os::unix::net::UnixDatagram::unbound() else {
        return SocketState::Unknown;
    };
    match probe.connect(path) {
        // A datagram socket is bound there: not sshd's, but bound all the same.
        Ok(()) => SocketState::Bound,
        Err(e) => match e.raw_os_error() {
            Some(nix::libc::EPROTOTYPE) => SocketState::Bound,
            Some(nix::libc::ECONNREFUSED) => SocketState::Stale,
            Some(nix::libc::ENOENT) => SocketState::Absent,
            _ => SocketState::Unknown,
        },
    }
}

/// Removes the socket file at `path` if no socket holds it any more; answers whether it
/// did.
pub fn clear_if_stale(path: &Path) -> bool {
    socket_state_at(path) == SocketState::Stale && std::fs::remove_file(path).is_ok()
}

/// The socket files in `dir` (whatever their names), at most `limit` of them.
pub fn socket_files_in(dir: &Path, limit: usize) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .take(limit)
        .filter(|entry| {
            entry
                .file_type()
                .is_ok_and(|t| std::os::unix::fs::FileTypeExt::is_socket(&t))
        })
        .map(|entry| entry.path())
        .collect()
}

/// A socket file in an owner's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedSocket {
    /// Its path.
    pub path: PathBuf,
    /// The uid that owns the directory it is in (the only one who can have bound it).
    pub owner_uid: u32,
    /// Whether something listens on it.
    pub state: SocketState,
}

/// The socket files in the owner directories under `owners_dir`, looking at no more than
/// `limit` directory entries in all: a pass's work is bounded however many files a tenant
/// made. Owners are visited in name order starting at `start % owners`, so successive
/// passes with growing `start` reach every owner. The caller tells leases from strays.
pub fn owner_sockets(owners_dir: &Path, start: usize, limit: usize) -> Vec<OwnedSocket> {
    let Ok(entries) = std::fs::read_dir(owners_dir) else {
        return Vec::new();
    };
    let mut owners: Vec<(PathBuf, u32)> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let meta = std::fs::symlink_metadata(entry.path()).ok()?;
            meta.file_type()
                .is_dir()
                .then(|| (entry.path(), meta.uid()))
        })
        .collect();
    owners.sort();
    if owners.is_empty() {
        return Vec::new();
    }
    let first = start % owners.len();
    owners.rotate_left(first);
    let mut budget = limit;
    let mut found = Vec::new();
    for (dir, owner_uid) in owners {
        if budget == 0 {
            break;
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.filter_map(Result::ok) {
            if budget == 0 {
                break;
            }
            budget -= 1;
            let is_socket = entry
                .file_type()
                .is_ok_and(|t| std::os::unix::fs::FileTypeExt::is_socket(&t));
            let path = entry.path();
            if is_socket {
                let state = socket_state_at(&path);
                found.push(OwnedSocket {
                    path,
                    owner_uid,
                    state,
                });
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_tcp_ports_are_read_from_proc_net_tcp() {
        let table = "\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:5208 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1
   1: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2
   2: 0100007F:5209 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 3
   3: 0A00000A:520A 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4
";
        assert_eq!(parse_listening_tcp(table), vec![0x5208, 0x16]);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let range = PortRange::new(port, port).unwrap();
        assert_eq!(listening_loopback_ports(range), vec![port]);
        drop(listener);
        assert!(listening_loopback_ports(range).is_empty());
    }

    #[test]
    fn a_real_listener_is_seen_and_kept_a_dead_one_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path: SocketPath = dir
            .path()
            .join("lease_abcdefghij234567.sock")
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let listener = std::os::unix::net::UnixListener::bind(path.as_str()).unwrap();
        assert_eq!(socket_state(&path), SocketState::Bound);
        assert!(!clear_if_stale(Path::new(path.as_str())));
        assert!(Path::new(path.as_str()).exists());
        // The probe made no connection: the listener has nothing to accept.
        listener.set_nonblocking(true).unwrap();
        assert_eq!(
            listener.accept().map(|_| ()).unwrap_err().kind(),
            std::io::ErrorKind::WouldBlock
        );
        drop(listener);
        assert_eq!(socket_state(&path), SocketState::Stale);
        assert_eq!(
            socket_files_in(dir.path(), 10),
            vec![PathBuf::from(path.as_str())]
        );
        assert!(clear_if_stale(Path::new(path.as_str())));
        assert_eq!(socket_state(&path), SocketState::Absent);
        assert!(!Path::new(path.as_str()).exists());
    }

    #[test]
    fn owner_sockets_are_read_within_the_budget_owners_in_turn() {
        let owners = tempfile::tempdir().unwrap();
        let mut listeners = Vec::new();
        for owner in ["alice", "bob"] {
            let dir = owners.path().join(owner);
            std::fs::create_dir(&dir).unwrap();
            for name in ["lease_aaaaaaaaaaaaaaaa.sock", "junk.sock"] {
                listeners.push(std::os::unix::net::UnixListener::bind(dir.join(name)).unwrap());
            }
            std::fs::write(dir.join("notes.txt"), "not a socket").unwrap();
        }
        drop(listeners.pop()); // bob's junk.sock is now a stale file
        let leased = |p: &Path| {
            p.file_name()
                .is_some_and(|n| n.to_str().unwrap().starts_with("lease_"))
        };
        let mut strays: Vec<OwnedSocket> = owner_sockets(owners.path(), 0, 100)
            .into_iter()
            .filter(|s| !leased(&s.path))
            .collect();
        strays.sort_by(|a, b| a.path.cmp(&b.path));
        let me = nix::unistd::getuid().as_raw();
        assert_eq!(
            strays,
            vec![
                OwnedSocket {
                    path: owners.path().join("alice/junk.sock"),
                    owner_uid: me,
                    state: SocketState::Bound
                },
                OwnedSocket {
                    path: owners.path().join("bob/junk.sock"),
                    owner_uid: me,
                    state: SocketState::Stale
                },
            ]
        );
        // A budget of 3 entries reads only the first owner's directory; the next pass
        // starts at the next owner.
        let first = owner_sockets(owners.path(), 0, 3);
        let second = owner_sockets(owners.path(), 1, 3);
        let dir_of = |s: &[OwnedSocket]| -> Vec<PathBuf> {
            s.iter()
                .map(|s| s.path.parent().unwrap().to_owned())
                .collect()
        };
        assert_eq!(dir_of(&first), vec![owners.path().join("alice"); 2]);
        assert_eq!(dir_of(&second), vec![owners.path().join("bob"); 2]);
    }
}
