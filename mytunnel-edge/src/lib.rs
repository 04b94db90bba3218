//! The mytunnel edge: the SQLite lease store, the route backends (Caddy routes per lease,
//! or `static` mode's host links), the ctl dispatch, the `serve` loops and their metrics.
#![warn(missing_docs)]

pub mod authorized_keys;
pub mod caddy;
pub mod config;
pub mod control;
pub mod ctl;
pub mod gate;
pub mod host_names;
pub mod ids;
pub mod in_process;
pub mod links;
pub mod loopback_http;
pub mod memory_routes;
pub mod metrics;
pub mod serve;
pub mod service;
pub mod sockets;
pub mod store;
pub mod tls_ask;
pub mod tunnel_ends;

pub use store::{Database, PostgresUrl, PostgresUrlError, SqlLeaseStore, StoreOptions};
