//! Points in time, at one-second resolution, shown as RFC 3339 UTC.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::names::InvalidValue;

/// A point in time: whole seconds since the Unix epoch, UTC.
///
/// Core never reads the clock; the edge passes `Timestamp::from_system_time(SystemTime::now())`.
/// Serialises as RFC 3339 UTC, e.g. `2026-11-29T14:54:01Z`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

/// The latest instant we represent: 9999-12-31T23:59:59Z (RFC 3339 has four-digit years).
const MAX_UNIX_SECONDS: i64 = 253_402_300_799;

impl Timestamp {
    /// The epoch, 1970-01-01T00:00:00Z.
    pub const EPOCH: Timestamp = Timestamp(0);

    /// From seconds since the epoch; refused outside 1970..=9999.
    pub fn from_unix_seconds(seconds: i64) -> Result<Self, InvalidValue> {
        if (0..=MAX_UNIX_SECONDS).contains(&seconds) {
            Ok(Timestamp(seconds))
        } else {
            Err(InvalidValue::new(
                "timestamp",
                format!("{seconds} is outside 1970..9999"),
            ))
        }
    }

    /// From a `SystemTime`, truncated to whole seconds (times before 1970 become the epoch).
    pub fn from_system_time(time: SystemTime) -> Self {
        let secs = time
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Timestamp(
            i64::try_from(secs)
                .unwrap_or(MAX_UNIX_SECONDS)
                .min(MAX_UNIX_SECONDS),
        )
    }

    /// Seconds since the epoch.
    pub fn unix_seconds(self) -> i64 {
        self.0
    }

    /// This instant plus `duration`, saturating at the largest representable instant.
    pub fn saturating_add(self, duration: Duration) -> Self {
        let add = i64::try_from(duration.as_secs()).unwrap_or(i64::MAX);
        Timestamp(self.0.saturating_add(add).min(MAX_UNIX_SECONDS))
    }

    /// This instant minus `duration`, saturating at the epoch.
    pub fn saturating_sub(self, duration: Duration) -> Self {
        let sub = i64::try_from(duration.as_secs()).unwrap_or(i64::MAX);
        Timestamp(self.0.saturating_sub(sub).max(0))
    }

    fn to_system_time(self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.0.unsigned_abs())
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}",
            humantime::format_rfc3339_seconds(self.to_system_time())
        )
    }
}

impl FromStr for Timestamp {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let time = humantime::parse_rfc3339(s)
            .map_err(|e| InvalidValue::new("timestamp", format!("{s:?}: {e}")))?;
        Ok(Timestamp::from_system_time(time))
    }
}

serde_as_text!(Timestamp);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn formats_rfc3339_utc() {
        let t = Timestamp::from_unix_seconds(1_780_000_000).unwrap();
        assert_eq!(t.to_string(), "2026-05-28T20:26:40Z");
        assert_eq!("2026-05-28T20:26:40Z".parse::<Timestamp>().unwrap(), t);
    }

    #[test]
    fn refuses_out_of_range() {
        assert!(Timestamp::from_unix_seconds(-1).is_err());
        assert!(Timestamp::from_unix_seconds(MAX_UNIX_SECONDS + 1).is_err());
        assert!("yesterday".parse::<Timestamp>().is_err());
    }

    proptest! {
        #[test]
        fn round_trips_through_text(secs in 0..=MAX_UNIX_SECONDS) {
            let t = Timestamp::from_unix_seconds(secs).unwrap();
            prop_assert_eq!(t.to_string().parse::<Timestamp>().unwrap(), t);
        }
    }
}
