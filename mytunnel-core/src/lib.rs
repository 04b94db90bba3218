//! Core of mytunnel: the domain types, the wire protocol, the SSH gate parser, the
//! policy rules and the three traits the edge and the client are built on.
//!
//! This crate does no IO at all: it never spawns a process, opens a file or a socket,
//! or reads the clock (callers pass [`Timestamp`]s in). Everything here can be tested
//! with plain values.
//!
//! ```
//! use mytunnel_core::{BaseDomain, Slug};
//!
//! let domain: BaseDomain = "tunnel.example.com".parse()?;
//! let slug: Slug = "Portal".parse()?;
//! assert_eq!(domain.host_for(&slug).as_str(), "portal.tunnel.example.com");
//! # Ok::<(), mytunnel_core::InvalidValue>(())
//! ```
#![warn(missing_docs)]

/// `Serialize` as its `Display` text and `Deserialize` through its `FromStr` (refusing
/// what does not parse), for types whose wire form is that text.
macro_rules! serde_as_text {
    ($ty:ty) => {
        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }
        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let s = <String as serde::Deserialize>::deserialize(deserializer)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

pub mod admin;
mod bind;
pub mod calls;
pub mod control;
pub mod duration;
pub mod envfile;
pub mod flags;
pub mod gate;
mod lease;
pub mod listen;
mod names;
pub mod policy;
pub mod printable;
pub mod protocol;
pub mod route;
pub mod settings;
pub mod store;
mod time;
pub mod transport;

pub use bind::{BindTarget, SocketPath, MAX_SOCKET_PATH_LEN};
pub use lease::{heartbeat_interval, Lease, LeaseState, PortRange, Ttl};
pub use names::{BaseDomain, EdgeId, EdgeUrl, Host, InvalidValue, LeaseId, LeaseRef, Owner, Slug};
pub use protocol::{ApiError, ErrorCode};
pub use time::Timestamp;
