//! Leases and the numbers that govern them: states, port ranges, TTLs.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::names::{InvalidValue, LeaseId, Owner, Slug};
use crate::{BindTarget, Host, SocketPath, Timestamp};

/// Where a lease is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LeaseState {
    /// Route and edge bind target are live; the slug is taken.
    Active,
    /// Released by stop, rm or client shutdown; the slug is free again at once.
    Released,
    /// Removed by cleanup after missed heartbeats; the slug is free again.
    Expired,
}

impl LeaseState {
    /// The lower-case name used in JSON and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            LeaseState::Active => "active",
            LeaseState::Released => "released",
            LeaseState::Expired => "expired",
        }
    }

    /// The tombstone prefix of this state (`released` / `expired`), none for `active`.
    pub fn tombstone_prefix(self) -> Option<&'static str> {
        match self {
            LeaseState::Active => None,
            LeaseState::Released => Some("released"),
            LeaseState::Expired => Some("expired"),
        }
    }
}

impl fmt::Display for LeaseState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LeaseState {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "active" => Ok(LeaseState::Active),
            "released" => Ok(LeaseState::Released),
            "expired" => Ok(LeaseState::Expired),
            other => Err(InvalidValue::new(
                "lease state",
                format!("{other:?} is not active, released or expired"),
            )),
        }
    }
}

/// The inclusive range of edge ports leases bind to: `min ≤ max`, both non-zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortRange {
    min: u16,
    max: u16,
}

impl PortRange {
    /// The default range, 21000–21999.
    pub const DEFAULT: PortRange = PortRange {
        min: 21000,
        max: 21999,
    };

    /// A range `[min, max]`; refused if `min > max` or either is 0.
    pub fn new(min: u16, max: u16) -> Result<Self, InvalidValue> {
        if min == 0 || max == 0 {
            return Err(InvalidValue::new("port range", "ports must be 1-65535"));
        }
        if min > max {
            return Err(InvalidValue::new(
                "port range",
                format!("min port {min} is above max port {max}"),
            ));
        }
        Ok(PortRange { min, max })
    }

    /// The lowest port.
    pub fn min(self) -> u16 {
        self.min
    }

    /// The highest port.
    pub fn max(self) -> u16 {
        self.max
    }

    /// How many ports the range holds.
    pub fn len(self) -> u32 {
        u32::from(self.max) - u32::from(self.min) + 1
    }

    /// Never true: a range holds at least one port. (Here for clippy's `len_without_is_empty`.)
    pub fn is_empty(self) -> bool {
        false
    }

    /// Whether `port` lies in the range.
    pub fn contains(self, port: u16) -> bool {
        (self.min..=self.max).contains(&port)
    }

    /// The lowest port of the range not in `used`, which must be sorted ascending.
    pub fn lowest_free(self, used_sorted: &[u16]) -> Option<u16> {
        let mut candidate = self.min;
        for &port in used_sorted.iter().filter(|p| self.contains(**p)) {
            if port > candidate {
                break;
            }
            if port == candidate {
                if candidate == self.max {
                    return None;
                }
                candidate += 1;
            }
        }
        Some(candidate)
    }
}

/// A lease's time to live, as requested by a client: clamped to [30s, 24h].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ttl(Duration);

impl Ttl {
    /// The shortest TTL a client may ask for.
    pub const MIN: Duration = Duration::from_secs(30);
    /// The longest TTL a client may ask for.
    pub const MAX: Duration = Duration::from_secs(24 * 60 * 60);
    /// The default lease TTL, 2 minutes.
    pub const DEFAULT: Duration = Duration::from_secs(120);

    /// A client-requested TTL, clamped into [`Ttl::MIN`, `Ttl::MAX`] and rounded to seconds.
    pub fn clamped(requested: Duration) -> Self {
        Ttl(Duration::from_secs(requested.as_secs()).clamp(Self::MIN, Self::MAX))
    }

    /// The edge's configured TTL, taken as it is (operators may run short TTLs in tests);
    /// at least one second.
    pub fn configured(ttl: Duration) -> Self {
        Ttl(Duration::from_secs(ttl.as_secs().max(1)))
    }

    /// The duration.
    pub fn get(self) -> Duration {
        self.0
    }

    /// How often a client heartbeats a lease with this TTL.
    pub fn heartbeat_interval(self) -> Duration {
        heartbeat_interval(self.0)
    }
}

/// The heartbeat interval for a TTL: TTL/3 with a 10 s floor.
pub fn heartbeat_interval(ttl: Duration) -> Duration {
    (ttl / 3).max(Duration::from_secs(10))
}

/// A lease as the edge holds it.
///
/// The name the client asked for is kept in `slug` whatever the state; the public
/// (possibly tombstoned) slug and host come from [`Lease::public_slug`] and
/// [`Lease::public_host`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Unique id.
    pub id: LeaseId,
    /// The name the lease was allocated under.
    pub slug: Slug,
    /// The live public host, `<slug>.<base_domain>`.
    pub host: Host,
    /// The OS user that owns it.
    pub owner: Owner,
    /// The edge port its data plane binds; 0 when it binds `bind_socket` instead.
    pub edge_bind_port: u16,
    /// The unix socket its data plane binds instead of the port (`static` route mode).
    pub bind_socket: Option<SocketPath>,
    /// Its TTL: each heartbeat extends `expires_at` to now + ttl.
    pub ttl: Ttl,
    /// When it was allocated.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
    /// When cleanup will expire it unless heartbeated.
    pub expires_at: Timestamp,
    /// Where it is in its life.
    pub state: LeaseState,
}

impl Lease {
    /// Where the data plane listens on the edge: the socket when the lease has one, else
    /// the loopback port.
    pub fn bind_target(&self) -> BindTarget {
        match &self.bind_socket {
            Some(path) => BindTarget::UnixSocket(path.clone()),
            None => BindTarget::LoopbackPort(self.edge_bind_port),
        }
    }

    /// The slug as shown and stored: the name while active, `released-<id>` or
    /// `expired-<id>` once tombstoned.
    pub fn public_slug(&self) -> String {
        match self.state.tombstone_prefix() {
            None => self.slug.to_string(),
            Some(prefix) => format!("{prefix}-{}", self.id),
        }
    }

    /// The host as shown and stored: the live host while active, `released-<id>.invalid`
    /// or `expired-<id>.invalid` once tombstoned.
    pub fn public_host(&self) -> String {
        match self.state.tombstone_prefix() {
            None => self.host.to_string(),
            Some(prefix) => format!("{prefix}-{}.invalid", self.id),
        }
    }

    /// Whether the lease is active and past its expiry at `now`.
    pub fn is_stale(&self, now: Timestamp) -> bool {
        self.state == LeaseState::Active && self.expires_at <= now
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn heartbeat_rule() {
        assert_eq!(
            heartbeat_interval(Duration::from_secs(120)),
            Duration::from_secs(40)
        );
        assert_eq!(
            heartbeat_interval(Duration::from_secs(30)),
            Duration::from_secs(10)
        );
        assert_eq!(
            heartbeat_interval(Duration::from_secs(3)),
            Duration::from_secs(10)
        );
        assert_eq!(
            heartbeat_interval(Duration::from_secs(3600)),
            Duration::from_secs(1200)
        );
    }

    #[test]
    fn ttl_clamp() {
        assert_eq!(Ttl::clamped(Duration::from_secs(1)).get(), Ttl::MIN);
        assert_eq!(
            Ttl::clamped(Duration::from_secs(90)).get(),
            Duration::from_secs(90)
        );
        assert_eq!(Ttl::clamped(Duration::from_secs(999_999)).get(), Ttl::MAX);
        assert_eq!(
            Ttl::configured(Duration::from_millis(10)).get(),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn port_range_rules() {
        assert!(PortRange::new(10, 9).is_err());
        assert!(PortRange::new(0, 9).is_err());
        let r = PortRange::new(100, 102).unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!(r.lowest_free(&[]), Some(100));
        assert_eq!(r.lowest_free(&[100, 101]), Some(102));
        assert_eq!(r.lowest_free(&[101]), Some(100));
        assert_eq!(r.lowest_free(&[100, 102]), Some(101));
        assert_eq!(r.lowest_free(&[5, 100, 101, 102]), None);
        let top = PortRange::new(65535, 65535).unwrap();
        assert_eq!(top.lowest_free(&[65535]), None);
    }

    proptest! {
        #[test]
        fn lowest_free_is_lowest(min in 1u16..200, span in 0u16..20, used in proptest::collection::btree_set(1u16..250, 0..40)) {
            let range = PortRange::new(min, min + span).unwrap();
            let used: Vec<u16> = used.into_iter().collect();
            let expected = (range.min()..=range.max()).find(|p| !used.contains(p));
            prop_assert_eq!(range.lowest_free(&used), expected);
        }
    }
}
