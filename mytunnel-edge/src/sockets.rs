//! `static` mode's per-owner socket directories, as the owner's own `ctl` sees them.
//!
//! Each tunnel user has `<socket_dir>/owners/<user>/`, created by root when the user is
//! enrolled: owned by the user, group the proxy's, mode 2750. Only the owner can bind
//! there, so no one else can take over a lease's socket. sshd leaves a socket file behind
//! when a connection ends and (with `StreamLocalBindUnlink no`, which keeps tunnel users
//! from unlinking files elsewhere) refuses to bind over it, so the owner's `ctl` removes
//! sockets that nothing listens on: the lease's own on heartbeat and release, and those of
//! ended leases on allocate.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use mytunnel_core::protocol::{ApiError, ErrorCode};
use mytunnel_core::{LeaseId, Owner, PortRange, SocketPath};

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
    let is_socket = match std::fs::symlink_metadata(path.as_str()) {
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
    match probe.connect(path.as_str()) {
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
pub fn clear_if_stale(path: &SocketPath) -> bool {
    socket_state(path) == SocketState::Stale && std::fs::remove_file(path.as_str()).is_ok()
}

/// The lease sockets (`<lease_id>.sock`) in `dir`.
pub fn lease_sockets_in(dir: &Path) -> Vec<SocketPath> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.path().to_str()?.parse::<SocketPath>().ok())
        .filter(|path| path.lease_id().is_some())
        .collect()
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
        assert!(!clear_if_stale(&path));
        assert!(Path::new(path.as_str()).exists());
        // The probe made no connection: the listener has nothing to accept.
        listener.set_nonblocking(true).unwrap();
        assert_eq!(
            listener.accept().map(|_| ()).unwrap_err().kind(),
            std::io::ErrorKind::WouldBlock
        );
        drop(listener);
        assert_eq!(socket_state(&path), SocketState::Stale);
        assert_eq!(lease_sockets_in(dir.path()), vec![path.clone()]);
        assert!(clear_if_stale(&path));
        assert_eq!(socket_state(&path), SocketState::Absent);
        assert!(!Path::new(path.as_str()).exists());
    }
}
