//! Publish a local HTTP service at `https://<name>.<your-domain>` through an edge you own.
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
//! With no code-level configuration the edge comes from `MYTUNNEL_EDGE` or the default
//! profile in `~/.config/mytunnel/config.toml` (see [`profile`]); `.edge("user@host")`
//! names one directly. [`Tunnel::http`] returns a builder with typed options (name, TTL,
//! takeover, reconnect, ssh binary, multiplexing). `open()`:
//!
//! 1. probes `http://127.0.0.1:<port>/` — if nothing answers, nothing is allocated;
//! 2. allocates a lease on the edge over a control connection (`mytunneld ctl allocate`);
//! 3. opens the data plane (`ssh -N -R`), and returns once it is up.
//!
//! A supervisor then heartbeats every max(TTL/3, 10s), reconnects with jittered backoff
//! when ssh exits, allocates the same name again if the edge lost the lease, and reports
//! every change as a [`TunnelEvent`]. [`TunnelHandle::close`] (or dropping the handle)
//! stops ssh and releases the lease.
//!
//! Errors are one enum, [`TunnelError`], with a variant per stage and a
//! [`hint`](TunnelError::hint) for people.
#![warn(missing_docs)]

mod backoff;
pub mod doctor;
mod edge;
mod error;
mod events;
pub mod probe;
pub mod profile;
pub mod ssh;
mod tunnel;

pub use backoff::backoff_delay;
pub use edge::{EdgeClient, EdgeSettings};
pub use error::{LeaseEnd, TunnelError};
pub use events::TunnelEvent;
pub use mytunnel_core as core;
pub use ssh::Multiplexing;
pub use tunnel::{Reconnect, Tunnel, TunnelBuilder, TunnelHandle};
