//! Loopback ports for children to bind.

use std::net::{SocketAddr, TcpListener};

/// A free loopback TCP port: bound to `127.0.0.1:0`, then released for a child to bind.
/// Prefer [`ReservedPort`] for children that bind with `SO_REUSEPORT` (Caddy does).
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A loopback port held for a child that binds with `SO_REUSEPORT`, as Caddy (2.6.2) does
/// for every listener.
///
/// Because of `SO_REUSEPORT`, a second Caddy binding a port the first one listens on does
/// not fail: both run and the kernel splits connections between them (measured). Two
/// tests that probed the same "free" port would then talk to each other's Caddy, with no
/// bind error to retry on. This socket is bound with `SO_REUSEPORT` but never listens:
/// the child can still bind the port (same user, same option), no probe or listener of
/// another test is given it while this lives, and it receives no connection itself.
#[derive(Debug)]
pub struct ReservedPort {
    _socket: tokio::net::TcpSocket,
    port: u16,
}

impl ReservedPort {
    /// Reserves a port the kernel picks on `127.0.0.1`.
    pub fn new() -> std::io::Result<ReservedPort> {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.set_reuseport(true)?;
        socket.bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
        let port = socket.local_addr()?.port();
        Ok(ReservedPort {
            _socket: socket,
            port,
        })
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}
