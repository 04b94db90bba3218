//! What the log records of an exchange: its identity, its request and response (heads and
//! the first bytes of their bodies), where it is, and the app it went to.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::app_link::AppLink;

use super::RequestSummary;

/// The identity of an exchange within its log: 1 for the first, then one more each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ExchangeId(pub u64);

impl fmt::Display for ExchangeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// One header, its value as text (bytes that are not UTF-8 are replaced).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Lower-case name.
    pub name: String,
    /// The value.
    pub value: String,
}

/// The headers of a request or response, in order, for the log to keep what fits.
pub(crate) fn headers_of(headers: &http::HeaderMap) -> Vec<Header> {
    headers
        .iter()
        .map(|(name, value)| Header {
            name: name.as_str().to_owned(),
            value: String::from_utf8_lossy(value.as_bytes()).into_owned(),
        })
        .collect()
}

/// A body as the log keeps it: the first bytes and how many there were.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CapturedBody {
    /// The first [`ExchangeLimits::max_body_bytes`](super::ExchangeLimits::max_body_bytes)
    /// bytes.
    pub bytes: Vec<u8>,
    /// Every byte that passed, kept or not.
    pub size: u64,
}

impl CapturedBody {
    /// True when bytes passed that were not kept.
    pub fn truncated(&self) -> bool {
        self.size > self.bytes.len() as u64
    }

    /// Counts `chunk` and keeps what fits under `cap`.
    pub(crate) fn push(&mut self, chunk: &[u8], cap: usize) {
        self.size = self.size.saturating_add(chunk.len() as u64);
        let room = cap.saturating_sub(self.bytes.len());
        let kept = room.min(chunk.len());
        // Doubling, but never past the cap: a plain Vec could reserve twice the cap for
        // bytes that are never kept.
        let len = self.bytes.len();
        if len + kept > self.bytes.capacity() {
            let target = (len + kept).max(self.bytes.capacity() * 2).min(cap);
            self.bytes.reserve_exact(target - len);
        }
        self.bytes.extend(chunk.iter().take(kept));
    }
}

/// The request side of an exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// `GET`, `POST`, …
    pub method: String,
    /// Path and query, as the visitor sent them (`/hooks?x=1`).
    pub target: String,
    /// `HTTP/1.1`, …
    pub version: String,
    /// The headers the app received, in order, as many as the log keeps.
    pub headers: Vec<Header>,
    /// Bytes of the target and headers the log did not keep (0: the head is whole).
    pub head_bytes_left_out: u64,
    /// The body.
    pub body: CapturedBody,
}

/// The response side of an exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedResponse {
    /// The status code.
    pub status: u16,
    /// The headers the visitor received, in order, as many as the log keeps.
    pub headers: Vec<Header>,
    /// Bytes of headers the log did not keep (0: the head is whole).
    pub head_bytes_left_out: u64,
    /// The body.
    pub body: CapturedBody,
}

/// Where an exchange is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExchangeState {
    /// The request or the response is still passing.
    Open,
    /// The response ended.
    Complete,
    /// The app switched protocols (101, e.g. a WebSocket); the connection's bytes passed
    /// on untouched and are not recorded.
    Upgraded,
    /// It ended early: the app did not answer, a body broke off, the visitor went away.
    Failed {
        /// Why, in words.
        reason: String,
    },
}

/// One request and its response, as the tunnel's proxy carried them.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Exchange {
    /// Its identity in the log.
    pub id: ExchangeId,
    /// The public host of the tunnel that carried it (`demo.example.com`).
    pub host: String,
    /// When the request arrived.
    pub started_at: SystemTime,
    /// The request.
    pub request: RecordedRequest,
    /// The response, once its head arrived.
    pub response: Option<RecordedResponse>,
    /// From the request's arrival to the end of the response (or the upgrade, or the
    /// failure); `None` while open.
    pub duration: Option<Duration>,
    /// Where it is.
    pub state: ExchangeState,
    /// The exchange this one replayed, for a replay.
    pub replay_of: Option<ExchangeId>,
    /// The app the request went to, and how it is reached (what a replay sends to).
    pub(crate) upstream: Arc<AppLink>,
}

impl Exchange {
    /// A one-line summary, for the request log.
    pub fn summary(&self) -> RequestSummary {
        RequestSummary {
            exchange: self.id,
            host: self.host.clone(),
            started_at: self.started_at,
            method: self.request.method.clone(),
            target: self.request.target.clone(),
            status: self.response.as_ref().map(|r| r.status),
            duration: self.duration.unwrap_or_default(),
            request_bytes: self.request.body.size,
            response_bytes: self.response.as_ref().map_or(0, |r| r.body.size),
            upgraded: self.state == ExchangeState::Upgraded,
            error: match &self.state {
                ExchangeState::Failed { reason } => Some(reason.clone()),
                _ => None,
            },
            replay_of: self.replay_of,
        }
    }
}
