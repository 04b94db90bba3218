//! Where a lease's data plane listens on the edge: a loopback port (`routes` mode) or a
//! unix socket in the owner's own directory (`static` mode).
//!
//! On the wire a target is one string, exactly what `ssh -R <target>:127.0.0.1:<local>`
//! takes: `127.0.0.1:21000` or `/var/lib/mytunnel-sockets/owners/alice/lease_….sock`.

use std::fmt;
use std::str::FromStr;

use crate::names::{InvalidValue, LeaseId, Owner};

/// The longest unix socket path (`sun_path` holds 108 bytes with its NUL).
pub const MAX_SOCKET_PATH_LEN: usize = 107;

/// An absolute unix socket path on the edge: at most 107 bytes of `[A-Za-z0-9/._-]`, no
/// `.` or `..` component and no empty one, so it can be spliced into an `ssh -R`
/// argument and a Caddy dial address as it is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SocketPath(String);

impl SocketPath {
    /// The socket of a lease: `<owners_dir>/<owner>/<lease_id>.sock`.
    pub fn for_lease(owners_dir: &str, owner: &Owner, id: &LeaseId) -> Result<Self, InvalidValue> {
        format!("{}/{owner}/{id}.sock", owners_dir.trim_end_matches('/')).parse()
    }

    /// The path as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The lease id in the file name, when it is `<lease_id>.sock`.
    pub fn lease_id(&self) -> Option<LeaseId> {
        let name = self.0.rsplit('/').next()?;
        name.strip_suffix(".sock")?.parse().ok()
    }
}

impl fmt::Display for SocketPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for SocketPath {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason: String| InvalidValue::new("socket path", reason);
        if !s.starts_with('/') {
            return Err(bad(format!("{s:?} is not absolute")));
        }
        if s.len() > MAX_SOCKET_PATH_LEN {
            return Err(bad(format!(
                "is {} bytes long (at most {MAX_SOCKET_PATH_LEN})",
                s.len()
            )));
        }
        if let Some(c) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '_' | '-')))
        {
            return Err(bad(format!("contains {c:?}")));
        }
        if s.split('/')
            .skip(1)
            .any(|part| part.is_empty() || part == "." || part == "..")
        {
            return Err(bad(format!("{s:?} has an empty, . or .. component")));
        }
        Ok(SocketPath(s.to_owned()))
    }
}

/// Where a lease's data plane listens on the edge.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BindTarget {
    /// `127.0.0.1:<port>`.
    LoopbackPort(u16),
    /// A unix socket in the owner's directory.
    UnixSocket(SocketPath),
}

impl fmt::Display for BindTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BindTarget::LoopbackPort(port) => write!(f, "127.0.0.1:{port}"),
            BindTarget::UnixSocket(path) => f.write_str(path.as_str()),
        }
    }
}

impl FromStr for BindTarget {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.starts_with('/') {
            return s.parse().map(BindTarget::UnixSocket);
        }
        let port = s
            .strip_prefix("127.0.0.1:")
            .and_then(|p| p.parse::<u16>().ok())
            .filter(|p| *p != 0)
            .ok_or_else(|| {
                InvalidValue::new(
                    "bind target",
                    format!("{s:?} is neither 127.0.0.1:<port> nor an absolute socket path"),
                )
            })?;
        Ok(BindTarget::LoopbackPort(port))
    }
}

serde_as_text!(BindTarget);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn targets_parse_and_print_as_ssh_takes_them() {
        let port: BindTarget = "127.0.0.1:21000".parse().unwrap();
        assert_eq!(port, BindTarget::LoopbackPort(21000));
        assert_eq!(port.to_string(), "127.0.0.1:21000");
        let path = "/var/lib/mytunnel-sockets/owners/alice/lease_abcdefghij234567.sock";
        let socket: BindTarget = path.parse().unwrap();
        assert_eq!(socket.to_string(), path);
        let BindTarget::UnixSocket(socket) = socket else {
            panic!("not a socket")
        };
        assert_eq!(
            socket.lease_id().map(|id| id.to_string()).as_deref(),
            Some("lease_abcdefghij234567")
        );
        assert_eq!(
            serde_json::to_string(&BindTarget::LoopbackPort(7)).unwrap(),
            "\"127.0.0.1:7\""
        );
    }

    #[test]
    fn hostile_targets_are_refused() {
        for bad in [
            "",
            "21000",
            "0.0.0.0:21000",
            "127.0.0.1:0",
            "127.0.0.1:70000",
            "localhost:21000",
            "relative/x.sock",
            "/a/../etc/passwd",
            "/a/./b",
            "/a//b",
            "/a/b/",
            "/a b",
            "/a:b",
            "/a\nb",
            "/a\0b",
            &format!("/{}", "x".repeat(107)),
        ] {
            assert!(bad.parse::<BindTarget>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn lease_sockets_are_built_from_validated_parts() {
        let owner: Owner = "alice".parse().unwrap();
        let id: LeaseId = "lease_abcdefghij234567".parse().unwrap();
        let path = SocketPath::for_lease("/s/owners/", &owner, &id).unwrap();
        assert_eq!(path.as_str(), "/s/owners/alice/lease_abcdefghij234567.sock");
        assert_eq!(path.lease_id(), Some(id));
    }

    proptest! {
        #[test]
        fn any_text_parses_or_is_refused_and_round_trips(s in "\\PC{0,120}") {
            if let Ok(target) = s.parse::<BindTarget>() {
                prop_assert_eq!(target.to_string().parse::<BindTarget>().unwrap(), target.clone());
                let json = serde_json::to_string(&target).unwrap();
                prop_assert_eq!(serde_json::from_str::<BindTarget>(&json).unwrap(), target);
            }
        }
    }
}
