//! `static` mode's per-owner socket directories, as the owner's own `ctl` sees them.
//!
//! Each tunnel user has `<socket_dir>/owners/<user>/`, created by root when the user is
//! enrolled: owned by the user, group the proxy's, mode 2750. Only the owner can bind
//! there, so no one else can take over a lease's socket. sshd leaves a socket file behind
//! when a connection ends and (with `StreamLocalBindUnlink no`, which keeps tunnel users
//! from unlinking files elsewhere) refuses to bind over it, so the owner's `ctl` removes
//! sockets that nothing listens on: the lease's own on heartbeat and release, and those of
//! ended leases on allocate.

use std::collections::BTreeSet;
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

/// The paths of every listening unix socket of this network namespace, from
/// `/proc/net/unix` (flag `00010000` is a listening socket). Reading it opens no
/// connection, so a check never disturbs a live tunnel.
pub fn listening_paths() -> BTreeSet<String> {
    let Ok(table) = std::fs::read_to_string("/proc/net/unix") else {
        return BTreeSet::new();
    };
    parse_listening(&table)
}

/// The listening paths in the text of `/proc/net/unix`.
pub fn parse_listening(table: &str) -> BTreeSet<String> {
    const LISTENING: u32 = 0x0001_0000;
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            // Num RefCount Protocol Flags Type St Inode [Path]
            let mut fields = line.split_whitespace();
            let flags = u32::from_str_radix(fields.nth(3)?, 16).ok()?;
            let path = fields.nth(3)?;
            (flags & LISTENING != 0 && path.starts_with('/')).then(|| path.to_owned())
        })
        .collect()
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

/// Removes the socket file at `path` if nothing listens on it; answers whether it did.
pub fn clear_if_stale(path: &SocketPath, listening: &BTreeSet<String>) -> bool {
    if listening.contains(path.as_str()) {
        return false;
    }
    let is_socket = std::fs::symlink_metadata(path.as_str())
        .map(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
        .unwrap_or(false);
    is_socket && std::fs::remove_file(path.as_str()).is_ok()
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
    fn listening_sockets_are_read_from_proc_net_unix() {
        let table = "\
Num       RefCount Protocol Flags    Type St Inode Path
0000000000000000: 00000002 00000000 00010000 0001 01 2915 /run/a.sock
0000000000000000: 00000003 00000000 00000000 0001 03 2916 /run/a.sock
0000000000000000: 00000002 00000000 00000000 0001 01 2917 /run/b.sock
0000000000000000: 00000002 00000000 00010000 0001 01 2918 @abstract
0000000000000000: 00000002 00000000 00010000 0001 01 2919
garbage
";
        let listening = parse_listening(table);
        assert_eq!(
            listening.into_iter().collect::<Vec<_>>(),
            vec!["/run/a.sock"]
        );
    }

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
        assert!(listening_paths().contains(path.as_str()));
        assert!(!clear_if_stale(&path, &listening_paths()));
        assert!(Path::new(path.as_str()).exists());
        drop(listener);
        assert_eq!(lease_sockets_in(dir.path()), vec![path.clone()]);
        assert!(clear_if_stale(&path, &listening_paths()));
        assert!(!Path::new(path.as_str()).exists());
    }
}
