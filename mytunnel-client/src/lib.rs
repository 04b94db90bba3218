//! The mytunnel client SDK.
//!
//! The `Tunnel` builder, the OpenSSH transport and the heartbeat/reconnect supervisor
//! arrive with the client issue; today this crate re-exports the shared domain types so
//! that embedders can already depend on one name.
#![warn(missing_docs)]

pub use mytunnel_core as core;
