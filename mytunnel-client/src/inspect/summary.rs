//! An exchange's line in the request log: [`RequestSummary`] and how it prints.

use std::fmt;
use std::time::{Duration, SystemTime};

use super::ExchangeId;

/// What the request log prints for one exchange, once it has ended; carried by
/// [`TunnelEvent::Request`](crate::TunnelEvent::Request).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RequestSummary {
    /// The exchange, in the tunnel's [`ExchangeLog`](super::ExchangeLog) when it has one.
    pub exchange: ExchangeId,
    /// The public host of the tunnel.
    pub host: String,
    /// When the request arrived.
    pub started_at: SystemTime,
    /// `GET`, `POST`, …
    pub method: String,
    /// Path and query.
    pub target: String,
    /// The response's status; `None` when none came.
    pub status: Option<u16>,
    /// From the request's arrival to the end of the response (or the upgrade).
    pub duration: Duration,
    /// Bytes of the request body.
    pub request_bytes: u64,
    /// Bytes of the response body.
    pub response_bytes: u64,
    /// The connection switched protocols (a WebSocket): one exchange for its whole life.
    pub upgraded: bool,
    /// Why it failed, when it did.
    pub error: Option<String>,
    /// The exchange this one replayed.
    pub replay_of: Option<ExchangeId>,
}

impl fmt::Display for RequestSummary {
    /// `GET /hooks 200 3.1ms 0 B → 1.2 kB`, or `GET /ws 101 upgraded`, or
    /// `POST /x 502 2.0ms: the app closed the connection`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.method, self.target)?;
        match self.status {
            Some(status) => write!(f, " {status}")?,
            None => f.write_str(" ---")?,
        }
        write!(f, " {}", Millis(self.duration))?;
        if self.upgraded {
            f.write_str(" upgraded")?;
        } else {
            write!(
                f,
                " {} → {}",
                Bytes(self.request_bytes),
                Bytes(self.response_bytes)
            )?;
        }
        if let Some(of) = self.replay_of {
            write!(f, " (replay of #{of})")?;
        }
        if let Some(error) = &self.error {
            write!(f, ": {error}")?;
        }
        Ok(())
    }
}

/// A duration in milliseconds, one decimal below 100 ms.
struct Millis(Duration);

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_secs_f64() * 1000.0;
        if ms < 100.0 {
            write!(f, "{ms:.1}ms")
        } else if ms < 10_000.0 {
            write!(f, "{ms:.0}ms")
        } else {
            write!(f, "{:.1}s", ms / 1000.0)
        }
    }
}

/// A byte count for people: `0 B`, `812 B`, `1.2 kB`, `5.2 MB`.
struct Bytes(u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Lossy on purpose: one decimal is all a log line shows.
        #[allow(clippy::cast_precision_loss)]
        let n = self.0 as f64;
        if self.0 < 1000 {
            write!(f, "{} B", self.0)
        } else if n < 1e6 {
            write!(f, "{:.1} kB", n / 1e3)
        } else if n < 1e9 {
            write!(f, "{:.1} MB", n / 1e6)
        } else {
            write!(f, "{:.1} GB", n / 1e9)
        }
    }
}
