//! The tunnel's HTTP proxy: the forward ends here, and each HTTP exchange is passed on to
//! the app, reported as a [`TunnelEvent::Request`] and, when the tunnel has one, recorded
//! in its [`ExchangeLog`].
//!
//! It keeps the relay's contract (see `relay.rs`): closing it closes the listener and
//! every connection it carries — visitors' and the app's, upgraded ones too — and waits
//! until they are closed, so a tunnel's connections are all gone before its lease is
//! released.
//!
//! Each visitor connection (an SSH channel, in practice Caddy's upstream connection) is
//! served by hyper's HTTP/1.1 server, and its requests go to the app on one connection
//! of its own, opened at the first request and kept alive for the next ones. Bodies
//! stream both ways frame by frame; only the log's first bytes of each are copied, and
//! only when there is a log. A `101 Switching Protocols` (a WebSocket) hands both
//! connections over to a byte copy.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};

use crate::app_link::{AppLink, PublicHost};
use crate::events::TunnelEvent;
use crate::inspect::ExchangeLog;

mod body;
mod events;
mod exchange;
mod inbound;

use super::relay::accept;
use events::{send_request_events, RequestEvents};
use inbound::serve_inbound;

/// What a [`TunnelProxy`] proxies to and reports on.
#[derive(Debug, Clone)]
pub(super) struct ProxySettings {
    /// The app, and how to reach it.
    pub(super) app: Arc<AppLink>,
    /// The tunnel's public host, for the reports.
    pub(super) host: String,
    /// Where exchanges are recorded, if anywhere.
    pub(super) log: Option<ExchangeLog>,
    /// The tunnel's events: one [`TunnelEvent::Request`] per exchange.
    pub(super) events: broadcast::Sender<TunnelEvent>,
}

/// An HTTP proxy on `127.0.0.1:<ephemeral>` to the app. Dropping it aborts the listener
/// and every connection; [`TunnelProxy::close`] closes them and waits.
#[derive(Debug)]
pub(super) struct TunnelProxy {
    port: u16,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl TunnelProxy {
    /// Listens on an ephemeral loopback port for connections to `settings.upstream`.
    pub(super) async fn start(settings: ProxySettings) -> io::Result<TunnelProxy> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let port = listener.local_addr()?.port();
        let (spawn_tx, spawn_rx) = mpsc::unbounded_channel();
        let body_cap = settings
            .log
            .as_ref()
            .map_or(0, |log| log.limits().max_body_bytes);
        let request_events = Arc::new(RequestEvents::new(settings.events.clone()));
        let shared = Arc::new(Shared {
            public_host: PublicHost::new(&settings.host),
            settings,
            body_cap,
            last_id: AtomicU64::new(0),
            request_events,
            spawn: spawn_tx,
        });
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(proxy_connections(listener, shared, spawn_rx, stopped));
        Ok(TunnelProxy {
            port,
            stop: Some(stop),
            task,
        })
    }

    /// The port the forward connects to.
    pub(super) fn port(&self) -> u16 {
        self.port
    }

    /// Closes the listener and every connection, and waits until they are closed.
    pub(super) async fn close(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for TunnelProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A task that must end when the proxy closes: the byte copy of an upgraded connection
/// (run by the proxy's accept task), or a connection to the app (run by its visitor
/// connection's task).
type ConnectionTask = Pin<Box<dyn Future<Output = ()> + Send>>;

/// What every connection of one proxy shares.
struct Shared {
    settings: ProxySettings,
    /// `settings.host` as `X-Forwarded-Host` carries it to the app.
    public_host: PublicHost,
    /// Bytes of each body copied into the log: 0 without one.
    body_cap: usize,
    /// The last exchange id given out, without a log (a log numbers its own).
    last_id: AtomicU64,
    /// Where each exchange's summary goes.
    request_events: Arc<RequestEvents>,
    /// To [`proxy_connections`], which runs each task with the connections.
    spawn: mpsc::UnboundedSender<ConnectionTask>,
}

impl Shared {
    /// Runs `task` until it ends or the proxy closes. After the close, it never runs.
    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let _ = self.spawn.send(Box::pin(task));
    }
}

/// Accepts until stopped, then ends every connection and waits for them; aborted (the
/// proxy dropped), it drops the set, which aborts every connection.
async fn proxy_connections(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut spawned: mpsc::UnboundedReceiver<ConnectionTask>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut connections = JoinSet::new();
    let batches = send_request_events(Arc::clone(&shared.request_events));
    tokio::pin!(batches);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            () = &mut batches => {}
            accepted = accept(&listener, "proxy") => {
                if let Some(inbound) = accepted {
                    connections.spawn(serve_inbound(inbound, Arc::clone(&shared)));
                }
            }
            Some(task) = spawned.recv() => {
                connections.spawn(task);
            }
            // Reap finished connections so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    connections.shutdown().await;
    // The last requests' events, without waiting for a batch.
    shared.request_events.send_queued();
}

#[cfg(test)]
mod tests;
