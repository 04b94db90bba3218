//! Publish a local HTTP service at `https://<name>.<your-domain>` through an edge you own.
//!
//! Two shapes, after ngrok-rust's session → endpoints. One tunnel in one line, over a
//! connection of its own:
//!
//! ```no_run
//! use mytunnel_client::Tunnel;
//!
//! # async fn run() -> Result<(), mytunnel_client::TunnelError> {
//! let tunnel = Tunnel::http(3000).open().await?;
//! println!("{}", tunnel.url());
//! tunnel.close().await?;
//! # Ok(())
//! # }
//! ```
//!
//! Or one connection to the edge, an [`Edge`], carrying as many tunnels as you open on it:
//!
//! ```no_run
//! use mytunnel_client::Edge;
//!
//! # async fn run() -> Result<(), mytunnel_client::TunnelError> {
//! let edge = Edge::builder().edge("tunnel@edge.example.com").connect().await?;
//! let shop = edge.http(3000).name("shop").open().await?;
//! let blog = edge.http(8080).name("blog").open().await?;
//! println!("{} {}", shop.url(), blog.url());
//! edge.close().await; // closes both tunnels, then the connection
//! # Ok(())
//! # }
//! ```
//!
//! With no code-level configuration the edge comes from `MYTUNNEL_EDGE` or the default
//! profile in `~/.config/mytunnel/config.toml` (see [`profile`]); `.edge("user@host")`
//! names one directly. [`EdgeBuilder`] has the options of the connection (edge, ssh
//! binary, multiplexing, ssh options), [`TunnelBuilder`] those of one tunnel (name, TTL,
//! takeover, reconnect, [`ProxyMode`], [`HostHeader`], [`AppCertificates`], an
//! [`inspect::ExchangeLog`]); the builder of
//! [`Tunnel::http`] takes both. `open()`:
//!
//! 1. probes the app (`GET /` on 127.0.0.1 and ::1 for a port alone; see [`upstream`]
//!    for every form of target) — if nothing answers, nothing is allocated;
//! 2. connects to the edge (the one-line form only: one SSH connection), and allocates a
//!    lease over it (`mytunneld ctl allocate`);
//! 3. requests the lease's forward over the same connection (with
//!    [`Multiplexing::PerCommand`], its own `ssh -N -R`), and returns once it is up. The
//!    forward ends at the tunnel's own HTTP/1.1 proxy, which passes each request to the
//!    app and reports it as [`TunnelEvent::Request`] ([`ProxyMode::Tcp`]: bytes only).
//!
//! A supervisor then heartbeats every max(TTL/3, 10s), requests the forward again with
//! jittered backoff when it ends, allocates the same name again if the edge lost the lease,
//! moves to the next of the profile's destinations (edges sharing one lease database) when
//! its edge cannot be reached, keeping its name and URL, and reports every change as a
//! [`TunnelEvent`] on the tunnel's [`TunnelEvents`].
//! [`TunnelHandle::close`] (or dropping the handle, which never blocks) stops the forward
//! and releases the lease; the edge and its other tunnels keep running.
//!
//! Errors are one enum, [`TunnelError`], with a variant per stage and a
//! [`hint`](TunnelError::hint) for people, in terms of SDK calls.
#![warn(missing_docs)]

mod app_link;
mod backoff;
pub mod doctor;
mod edge;
mod error;
mod events;
pub mod inspect;
pub mod probe;
pub mod profile;
pub mod ssh;
mod tunnel;
pub mod upstream;

pub use backoff::backoff_delay;
pub use edge::{Edge, EdgeBuilder};
pub use error::{LeaseEnd, TunnelError};
pub use events::{TunnelEvent, TunnelEvents};
pub use mytunnel_core as core;
pub use ssh::Multiplexing;
pub use tunnel::{ProxyMode, Reconnect, Tunnel, TunnelBuilder, TunnelHandle};
pub use upstream::{AppCertificates, HostHeader, IntoUpstream, Upstream};
