//! The tunnel's local relay: the forward ends here, and each connection is passed on to the
//! app. It exists so that closing a tunnel closes every connection it carries.
//!
//! On a shared SSH connection a tunnel is stopped by cancelling its forward, which stops
//! new connections but leaves open ones (SSH channels) alone — and Caddy keeps idle
//! upstream connections to a host for reuse. Had they stayed open, a request for the
//! released name could still reach this app through them, even after another user took
//! the name. Closing the relay closes each channel's local end, so ssh closes the
//! channel and sshd the edge's end before the lease is released.

use std::io;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use crate::app_link::AppLink;

/// A listener on `127.0.0.1:<ephemeral>` that passes each connection to the app.
/// Dropping it (or [`LocalRelay::close`]) closes the listener and every connection.
#[derive(Debug)]
pub(super) struct LocalRelay {
    port: u16,
    task: JoinHandle<()>,
}

impl LocalRelay {
    /// Listens on an ephemeral loopback port for connections to the app.
    pub(super) async fn start(app: Arc<AppLink>) -> io::Result<LocalRelay> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let port = listener.local_addr()?.port();
        let task = tokio::spawn(relay_connections(listener, app));
        Ok(LocalRelay { port, task })
    }

    /// The port the forward connects to.
    pub(super) fn port(&self) -> u16 {
        self.port
    }

    /// Closes the listener and every connection, and waits until they are closed.
    pub(super) async fn close(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

impl Drop for LocalRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The next connection to a forward's end (`who`: the relay or the proxy); `None` when
/// accepting failed — out of file descriptors, say: the next accept may work.
pub(super) async fn accept(listener: &TcpListener, who: &str) -> Option<TcpStream> {
    match listener.accept().await {
        Ok((inbound, _)) => Some(inbound),
        Err(e) => {
            tracing::debug!(error = %e, "the {who} cannot accept");
            tokio::task::yield_now().await;
            None
        }
    }
}

/// Accepts until aborted; aborting drops the set, which aborts every connection.
async fn relay_connections(listener: TcpListener, app: Arc<AppLink>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = accept(&listener, "relay") => {
                if let Some(inbound) = accepted {
                    connections.spawn(relay_one(inbound, Arc::clone(&app)));
                }
            }
            // Reap finished connections so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Passes one connection to the app and back, both ways, without delay (TCP_NODELAY).
/// An app that does not answer closes the connection: Caddy then answers 502, as it does
/// when ssh cannot reach the app.
/// An `https://` app gets TLS from the relay, as it does from the proxy.
async fn relay_one(mut inbound: TcpStream, app: Arc<AppLink>) {
    let mut outbound = match app.connect().await {
        Ok((outbound, _)) => outbound,
        Err(tried) => {
            tracing::debug!(app = %app.describe(&tried), "the app does not answer");
            return;
        }
    };
    let _ = inbound.set_nodelay(true);
    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// An echo server; a link to it.
    async fn echo() -> Arc<AppLink> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let link = AppLink::plain(listener.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = stream.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        link
    }

    #[tokio::test]
    async fn bytes_pass_both_ways_and_closing_ends_open_connections() {
        let relay = LocalRelay::start(echo().await).await.unwrap();
        let mut held = TcpStream::connect(("127.0.0.1", relay.port()))
            .await
            .unwrap();
        held.write_all(b"ping").await.unwrap();
        let mut reply = [0u8; 4];
        held.read_exact(&mut reply).await.unwrap();
        assert_eq!(&reply, b"ping");

        let port = relay.port();
        relay.close().await;
        // The open connection is closed by the relay: end of file, not a hang.
        let mut rest = Vec::new();
        let read = held.read_to_end(&mut rest).await;
        assert!(
            matches!(read, Ok(0)) || read.is_err(),
            "the connection stayed open: {read:?}"
        );
        // And nothing listens any more.
        assert!(TcpStream::connect(("127.0.0.1", port)).await.is_err());
    }

    #[tokio::test]
    async fn an_app_that_does_not_answer_closes_the_connection() {
        let closed = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let app = AppLink::plain(closed.local_addr().unwrap());
        drop(closed);
        let relay = LocalRelay::start(app).await.unwrap();
        let mut stream = TcpStream::connect(("127.0.0.1", relay.port()))
            .await
            .unwrap();
        let mut rest = Vec::new();
        let read = stream.read_to_end(&mut rest).await;
        assert!(matches!(read, Ok(0)) || read.is_err(), "{read:?}");
    }
}
