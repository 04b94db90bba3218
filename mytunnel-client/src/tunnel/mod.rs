//! Tunnels: [`Tunnel`], its builder (`builder.rs`), the opening on an edge
//! (`opening.rs`), the handle it opens, the supervisor that keeps it up, and where the
//! forward ends (the HTTP proxy in `proxy/`, the byte relay in `relay.rs`).

// Also the imports of `handle.rs` and `supervisor.rs` (`use super::*`).
use std::sync::Arc;
use std::time::Duration;

use mytunnel_core::calls;
use mytunnel_core::protocol::{AllocateRequest, LeaseDto};
use mytunnel_core::transport::call;
use mytunnel_core::transport::{Forward, ForwardSpec, Transport, TransportError};
use mytunnel_core::{heartbeat_interval, ErrorCode, LeaseRef};
use tokio::sync::{broadcast, oneshot, watch};
use tokio::task::JoinHandle;

use crate::app_link::AppLink;
use crate::backoff::jittered_backoff;
use crate::edge::Edge;
use crate::error::{LeaseEnd, TunnelError};
use crate::events::{TunnelEvent, TunnelEvents};
use crate::inspect::ExchangeLog;
use crate::upstream::{IntoUpstream, Upstream};

mod builder;
mod handle;
mod opening;
mod proxy;
mod relay;
mod supervisor;

use proxy::{ProxySettings, TunnelProxy};
use relay::LocalRelay;

pub use builder::TunnelBuilder;
pub use handle::TunnelHandle;

/// Whether a tunnel comes back by itself when its data plane ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reconnect {
    /// Reconnect with jittered exponential backoff (the default).
    #[default]
    Always,
    /// End the tunnel (and release its lease) when the data plane ends.
    Never,
}

/// How a tunnel passes its connections to the app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ProxyMode {
    /// Through the client's own HTTP/1.1 proxy, which reports each request as a
    /// [`TunnelEvent::Request`] and, given [`TunnelBuilder::exchange_log`], records it
    /// for an inspector. Bodies stream through, WebSockets and other upgrades pass on;
    /// an app that does not answer gets the visitor a `502` saying why. The default.
    #[default]
    Http,
    /// Bytes passed on untouched: no request events, the fastest path.
    Tcp,
}

/// Where a tunnel's forward ends: each connection passes through it to the app, and
/// closing it closes every connection it carries (see `relay.rs`).
#[derive(Debug)]
enum ForwardEnd {
    /// [`ProxyMode::Tcp`].
    Relay(LocalRelay),
    /// [`ProxyMode::Http`].
    Proxy(TunnelProxy),
}

impl ForwardEnd {
    /// Listens on an ephemeral loopback port for connections to the app.
    async fn start(
        mode: ProxyMode,
        app: Arc<AppLink>,
        host: &str,
        log: Option<ExchangeLog>,
        events: &broadcast::Sender<TunnelEvent>,
    ) -> std::io::Result<ForwardEnd> {
        Ok(match mode {
            ProxyMode::Tcp => ForwardEnd::Relay(LocalRelay::start(app).await?),
            ProxyMode::Http => ForwardEnd::Proxy(
                TunnelProxy::start(ProxySettings {
                    app,
                    host: host.to_owned(),
                    log,
                    events: events.clone(),
                })
                .await?,
            ),
        })
    }

    /// The port the forward connects to.
    fn port(&self) -> u16 {
        match self {
            ForwardEnd::Relay(relay) => relay.port(),
            ForwardEnd::Proxy(proxy) => proxy.port(),
        }
    }

    /// Closes the listener and every connection, and waits until they are closed.
    async fn close(self) {
        match self {
            ForwardEnd::Relay(relay) => relay.close().await,
            ForwardEnd::Proxy(proxy) => proxy.close().await,
        }
    }
}

/// The one-line form: `Tunnel::http(3000).open().await?`.
#[derive(Debug, Clone, Copy)]
pub struct Tunnel;

impl Tunnel {
    /// A tunnel publishing the app at `target` — a port (`3000`: localhost, on
    /// 127.0.0.1 or ::1), `"localhost:5173"`, `"[::1]:18555"`, `"https://localhost:8443"`
    /// or an [`Upstream`] (see [`crate::upstream`]) — over a connection of its own to the
    /// edge: opening it connects, and the connection ends with the tunnel. Same as
    /// `Edge::builder().http(target)`; to open several tunnels on one connection, see
    /// [`Edge`]. A malformed target is refused by [`TunnelBuilder::validate`] and
    /// [`TunnelBuilder::open`] as [`TunnelError::Upstream`].
    pub fn http(target: impl IntoUpstream) -> TunnelBuilder {
        Edge::builder().http(target)
    }
}
