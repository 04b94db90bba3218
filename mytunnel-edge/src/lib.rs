//! The mytunnel edge: the SQLite lease store, and (with the edge issue) the Caddy route
//! backend, the ctl dispatch and the `serve` loops.
#![warn(missing_docs)]

pub mod caddy;
pub mod config;
pub mod ctl;
pub mod gate;
pub mod ids;
pub mod in_process;
pub mod memory_routes;
pub mod serve;
pub mod service;
pub mod store;
#[cfg(feature = "testkit")]
pub mod testkit;

pub use store::{SqliteLeaseStore, SqliteStoreOptions};
