//! What a tunnel's HTTP proxy saw: each exchange (request and response), kept in a
//! bounded [`ExchangeLog`] for the local inspector, and summarised as a
//! [`TunnelEvent::Request`](crate::TunnelEvent::Request) for the live request log.
//!
//! The log holds at most [`ExchangeLimits::max_exchanges`] exchanges (the oldest goes
//! first) and at most [`ExchangeLimits::max_body_bytes`] of each body; the rest of a body
//! streams on to its reader and is only counted. Headers are bounded by the proxy's HTTP
//! parser, so the log's memory is bounded by its limits.
//!
//! An [`Inspector`] serves a log as a local web page: the exchanges live, their headers
//! and bodies, and a button to [replay](ExchangeLog::replay) one.
//!
//! ```
//! use mytunnel_client::inspect::{ExchangeLimits, ExchangeLog};
//!
//! let log = ExchangeLog::new(ExchangeLimits::default());
//! assert!(log.recent().is_empty());
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tokio::sync::broadcast;

mod replay;
mod server;

pub use replay::ReplayError;
pub use server::Inspector;

/// The identity of an exchange within its log: 1 for the first, then one more each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ExchangeId(pub u64);

impl fmt::Display for ExchangeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// How much an [`ExchangeLog`] keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExchangeLimits {
    /// Exchanges kept; the oldest is dropped for a new one. At least 1.
    pub max_exchanges: usize,
    /// Bytes kept of each request and each response body; the rest is counted only.
    pub max_body_bytes: usize,
}

impl ExchangeLimits {
    /// 100 exchanges, 64 KiB of each body: at most about 13 MiB of bodies.
    pub const DEFAULT: ExchangeLimits = ExchangeLimits {
        max_exchanges: 100,
        max_body_bytes: 64 * 1024,
    };
}

impl Default for ExchangeLimits {
    fn default() -> Self {
        ExchangeLimits::DEFAULT
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

/// The headers of a request or response as the log keeps them, in order.
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
    /// The first [`ExchangeLimits::max_body_bytes`] bytes.
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
        // Doubling, but never past the cap: a plain Vec could hold twice the cap for the
        // log's whole life, and the log's bound is counted in kept bytes.
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
    /// The headers the app received, in order.
    pub headers: Vec<Header>,
    /// The body.
    pub body: CapturedBody,
}

/// The response side of an exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedResponse {
    /// The status code.
    pub status: u16,
    /// The headers the visitor received, in order.
    pub headers: Vec<Header>,
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
    /// The app's address the request went to (what a replay sends to).
    pub(crate) upstream: SocketAddr,
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

/// What the request log prints for one exchange, once it has ended; carried by
/// [`TunnelEvent::Request`](crate::TunnelEvent::Request).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RequestSummary {
    /// The exchange, in the tunnel's [`ExchangeLog`] when it has one.
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

/// The recent exchanges of one or more tunnels, bounded by [`ExchangeLimits`]; cheap to
/// clone (the clones share one log). Give the same log to several tunnels to see them
/// all in one place.
#[derive(Debug, Clone)]
pub struct ExchangeLog {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    limits: ExchangeLimits,
    state: Mutex<LogState>,
    changes: broadcast::Sender<ExchangeId>,
}

#[derive(Debug, Default)]
struct LogState {
    last_id: u64,
    /// The exchanges, their bodies' `bytes` left empty: the kept bytes are in `slots`.
    exchanges: VecDeque<Exchange>,
    /// One per exchange kept, made on first use and then reused by each exchange that
    /// takes the place of the one before: the kept bytes live in these few long-lived
    /// blocks, not in a pair of allocations per exchange scattered through the heap
    /// between short-lived buffers (measured: glibc then held about 1.3 to 2 times the
    /// kept bytes).
    slots: Vec<Slot>,
}

/// The kept bytes of one exchange: the request's, then the response's, each at most the
/// cap, in one block of twice the cap.
#[derive(Debug)]
struct Slot {
    block: Box<[u8]>,
    request_len: usize,
    response_len: usize,
}

/// Where exchange `id`'s bytes go: a ring over `max_exchanges`, so an exchange takes the
/// slot of the one it pushed out.
fn slot_index(id: ExchangeId, limits: ExchangeLimits) -> Option<usize> {
    let exchanges = u64::try_from(limits.max_exchanges.max(1)).ok()?;
    usize::try_from(id.0.saturating_sub(1) % exchanges).ok()
}

/// The slot of exchange `id`, made when first needed; none when no bytes are kept.
fn slot(slots: &mut Vec<Slot>, id: ExchangeId, limits: ExchangeLimits) -> Option<&mut Slot> {
    if limits.max_body_bytes == 0 {
        return None;
    }
    let index = slot_index(id, limits)?;
    while slots.len() <= index {
        slots.push(Slot {
            block: vec![0u8; limits.max_body_bytes.saturating_mul(2)].into_boxed_slice(),
            request_len: 0,
            response_len: 0,
        });
    }
    slots.get_mut(index)
}

/// Moves the bytes `exchange` carries into its slot: a body whose bytes are empty keeps
/// what the slot holds unless its size changed (it was replaced by an empty one).
/// `before` is the exchange's (request size, response size) before the change.
fn store(
    slots: &mut Vec<Slot>,
    exchange: &mut Exchange,
    before: (u64, Option<u64>),
    limits: ExchangeLimits,
) {
    let cap = limits.max_body_bytes;
    let request = std::mem::take(&mut exchange.request.body.bytes);
    let request_size = exchange.request.body.size;
    let response = exchange
        .response
        .as_mut()
        .map(|r| (std::mem::take(&mut r.body.bytes), r.body.size));
    let Some(slot) = slot(slots, exchange.id, limits) else {
        return;
    };
    if !request.is_empty() || request_size != before.0 {
        let kept = request.len().min(cap);
        if let (Some(to), Some(from)) = (slot.block.get_mut(..kept), request.get(..kept)) {
            to.copy_from_slice(from);
        }
        slot.request_len = kept;
    }
    match response {
        Some((bytes, size)) if !bytes.is_empty() || Some(size) != before.1 => {
            let kept = bytes.len().min(cap);
            if let (Some(to), Some(from)) = (slot.block.get_mut(cap..cap + kept), bytes.get(..kept))
            {
                to.copy_from_slice(from);
            }
            slot.response_len = kept;
        }
        Some(_) => {}
        None => slot.response_len = 0,
    }
}

impl LogState {
    /// A copy of `exchange` with its kept bytes.
    fn whole(&self, exchange: &Exchange, limits: ExchangeLimits) -> Exchange {
        let mut copy = exchange.clone();
        let cap = limits.max_body_bytes;
        if let Some(slot) = slot_index(exchange.id, limits).and_then(|i| self.slots.get(i)) {
            copy.request.body.bytes = slot
                .block
                .get(..slot.request_len)
                .unwrap_or_default()
                .to_vec();
            if let Some(response) = copy.response.as_mut() {
                response.body.bytes = slot
                    .block
                    .get(cap..cap + slot.response_len)
                    .unwrap_or_default()
                    .to_vec();
            }
        }
        copy
    }
}

/// What a new exchange starts with.
#[derive(Debug)]
pub(crate) struct NewExchange {
    pub host: String,
    pub request: RecordedRequest,
    pub upstream: SocketAddr,
    pub replay_of: Option<ExchangeId>,
}

impl ExchangeLog {
    /// An empty log keeping what `limits` allow (`max_exchanges` 0 counts as 1).
    pub fn new(limits: ExchangeLimits) -> ExchangeLog {
        let limits = ExchangeLimits {
            max_exchanges: limits.max_exchanges.max(1),
            ..limits
        };
        let (changes, _) = broadcast::channel(256);
        ExchangeLog {
            shared: Arc::new(Shared {
                limits,
                state: Mutex::new(LogState::default()),
                changes,
            }),
        }
    }

    /// What it keeps.
    pub fn limits(&self) -> ExchangeLimits {
        self.shared.limits
    }

    /// The exchanges kept, oldest first.
    pub fn recent(&self) -> Vec<Exchange> {
        let limits = self.shared.limits;
        let state = self.state();
        state
            .exchanges
            .iter()
            .map(|e| state.whole(e, limits))
            .collect()
    }

    /// The exchange `id`, while it is kept.
    pub fn get(&self, id: ExchangeId) -> Option<Exchange> {
        let limits = self.shared.limits;
        let state = self.state();
        state
            .exchanges
            .iter()
            .find(|e| e.id == id)
            .map(|e| state.whole(e, limits))
    }

    /// [`recent`](Self::recent) with every body's `bytes` left empty (sizes kept): what a
    /// list of summaries needs, without copying the kept bytes.
    pub(crate) fn recent_heads(&self) -> Vec<Exchange> {
        self.state().exchanges.iter().cloned().collect()
    }

    /// [`get`](Self::get) with every body's `bytes` left empty (sizes kept).
    pub(crate) fn head(&self, id: ExchangeId) -> Option<Exchange> {
        self.state().exchanges.iter().find(|e| e.id == id).cloned()
    }

    /// The id of each exchange as it is added or changes (its response arrives, it ends).
    /// A reader that falls behind gets `Lagged` and should read [`recent`](Self::recent)
    /// again.
    pub fn changes(&self) -> broadcast::Receiver<ExchangeId> {
        self.shared.changes.subscribe()
    }

    /// Records a new open exchange; drops the oldest when full.
    pub(crate) fn begin(&self, new: NewExchange) -> ExchangeId {
        self.begin_at(new, SystemTime::now())
    }

    /// [`begin`](Self::begin) for an exchange that started at `started_at`, so that what
    /// the log keeps and what the request log says agree.
    pub(crate) fn begin_at(&self, new: NewExchange, started_at: SystemTime) -> ExchangeId {
        let id = {
            let mut state = self.state();
            state.last_id += 1;
            let id = ExchangeId(state.last_id);
            while state.exchanges.len() >= self.shared.limits.max_exchanges {
                state.exchanges.pop_front();
            }
            let mut exchange = Exchange {
                id,
                host: new.host,
                started_at,
                request: new.request,
                response: None,
                duration: None,
                state: ExchangeState::Open,
                replay_of: new.replay_of,
                upstream: new.upstream,
            };
            // The slot's last tenant has gone: nothing of its bytes stays.
            store(
                &mut state.slots,
                &mut exchange,
                (u64::MAX, None),
                self.shared.limits,
            );
            state.exchanges.push_back(exchange);
            id
        };
        let _ = self.shared.changes.send(id);
        id
    }

    /// Changes exchange `id` (nothing when it was dropped) and tells readers; returns
    /// what `change` returned.
    pub(crate) fn update<T>(
        &self,
        id: ExchangeId,
        change: impl FnOnce(&mut Exchange) -> T,
    ) -> Option<T> {
        let limits = self.shared.limits;
        let result = {
            let mut state = self.state();
            let LogState {
                exchanges, slots, ..
            } = &mut *state;
            exchanges.iter_mut().find(|e| e.id == id).map(|exchange| {
                let before = (
                    exchange.request.body.size,
                    exchange.response.as_ref().map(|r| r.body.size),
                );
                let result = change(exchange);
                store(slots, exchange, before, limits);
                result
            })
        };
        if result.is_some() {
            let _ = self.shared.changes.send(id);
        }
        result
    }

    fn state(&self) -> MutexGuard<'_, LogState> {
        // A panic while holding the lock leaves whole values behind: keep going.
        self.shared
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn request(body: &[u8], cap: usize) -> RecordedRequest {
        let mut captured = CapturedBody::default();
        captured.push(body, cap);
        RecordedRequest {
            method: "POST".into(),
            target: "/hooks".into(),
            version: "HTTP/1.1".into(),
            headers: vec![],
            body: captured,
        }
    }

    fn new_exchange(body: &[u8], cap: usize) -> NewExchange {
        NewExchange {
            host: "demo.example.com".into(),
            request: request(body, cap),
            upstream: "127.0.0.1:3000".parse().unwrap(),
            replay_of: None,
        }
    }

    #[test]
    fn a_body_keeps_its_first_bytes_and_counts_the_rest() {
        let mut body = CapturedBody::default();
        body.push(b"hello ", 8);
        body.push(b"world", 8);
        assert_eq!(body.bytes, b"hello wo");
        assert_eq!(body.size, 11);
        assert!(body.truncated());
        body.push(b"!", 8);
        assert_eq!(body.bytes, b"hello wo");
        assert_eq!(body.size, 12);
        // No more room than it keeps, however the chunks fall.
        let mut body = CapturedBody::default();
        for _ in 0..100 {
            body.push(&[b'x'; 1000], 65_536);
        }
        assert_eq!(body.bytes.len(), 65_536);
        assert_eq!(body.bytes.capacity(), 65_536);
    }

    #[test]
    fn the_log_keeps_the_newest_exchanges_and_tells_readers() {
        let log = ExchangeLog::new(ExchangeLimits {
            max_exchanges: 2,
            max_body_bytes: 4,
        });
        let mut changes = log.changes();
        let ids: Vec<ExchangeId> = (0..3)
            .map(|_| log.begin(new_exchange(b"abcdef", 4)))
            .collect();
        assert_eq!(ids, [ExchangeId(1), ExchangeId(2), ExchangeId(3)]);
        let kept: Vec<ExchangeId> = log.recent().iter().map(|e| e.id).collect();
        assert_eq!(kept, [ExchangeId(2), ExchangeId(3)]);
        assert!(log.get(ExchangeId(1)).is_none());
        assert_eq!(log.get(ExchangeId(3)).unwrap().request.body.bytes, b"abcd");
        for id in &ids {
            assert_eq!(changes.try_recv().unwrap(), *id);
        }
        // A dropped exchange changes nothing and tells nobody.
        assert_eq!(log.update(ExchangeId(1), |_| ()), None);
        assert!(changes.try_recv().is_err());
        log.update(ExchangeId(3), |e| e.state = ExchangeState::Complete)
            .unwrap();
        assert_eq!(changes.try_recv().unwrap(), ExchangeId(3));
    }

    /// The kept bytes live in a slot per place in the log: a new exchange in a place
    /// sees nothing of the one before, an exchange pushed out cannot write into its old
    /// place, and a change that does not touch a body keeps its bytes.
    #[test]
    fn each_place_in_the_log_keeps_its_own_bytes() {
        let log = ExchangeLog::new(ExchangeLimits {
            max_exchanges: 2,
            max_body_bytes: 4,
        });
        let first = log.begin(new_exchange(b"aaaaaa", 4));
        let response = |bytes: &[u8]| RecordedResponse {
            status: 200,
            headers: vec![],
            body: CapturedBody {
                bytes: bytes.to_vec(),
                size: bytes.len() as u64,
            },
        };
        log.update(first, |e| e.response = Some(response(b"AAAA")));
        log.update(first, |e| e.state = ExchangeState::Complete);
        let kept = log.get(first).unwrap();
        assert_eq!(kept.request.body.bytes, b"aaaa");
        assert_eq!(kept.response.unwrap().body.bytes, b"AAAA");

        let second = log.begin(new_exchange(b"bb", 4));
        // Takes the first one's place.
        let third = log.begin(new_exchange(b"", 4));
        assert!(log.get(first).is_none());
        let fresh = log.get(third).unwrap();
        assert_eq!(fresh.request.body.bytes, b"");
        assert_eq!(fresh.response, None);
        // The first one, still streaming somewhere, writes nothing any more.
        assert_eq!(
            log.update(first, |e| e.response = Some(response(b"XXXX"))),
            None
        );
        log.update(third, |e| e.response = Some(response(b"")));
        assert_eq!(log.get(third).unwrap().response.unwrap().body.bytes, b"");
        assert_eq!(log.get(second).unwrap().request.body.bytes, b"bb");
        // A body replaced by an empty one is empty.
        log.update(second, |e| e.request.body = CapturedBody::default());
        assert_eq!(log.get(second).unwrap().request.body.bytes, b"");
        assert_eq!(log.recent().len(), 2);
        // Heads, for lists: sizes without the bytes.
        let third_head = log.head(third).unwrap();
        assert_eq!(third_head.response.unwrap().body.size, 0);
        let heads = log.recent_heads();
        assert_eq!(heads.len(), 2);
        log.update(second, |e| {
            e.request.body = CapturedBody {
                bytes: b"cc".to_vec(),
                size: 2,
            };
        });
        let head = log.head(second).unwrap();
        assert_eq!(
            (head.request.body.bytes.len(), head.request.body.size),
            (0, 2)
        );
        assert_eq!(log.get(second).unwrap().request.body.bytes, b"cc");
    }

    #[test]
    fn zero_exchanges_means_one() {
        let log = ExchangeLog::new(ExchangeLimits {
            max_exchanges: 0,
            max_body_bytes: 0,
        });
        log.begin(new_exchange(b"x", 0));
        assert_eq!(log.recent().len(), 1);
        assert_eq!(log.limits().max_exchanges, 1);
    }

    #[test]
    fn a_summary_reads_as_a_log_line() {
        let log = ExchangeLog::new(ExchangeLimits::default());
        let id = log.begin(new_exchange(&[b'x'; 1500], 64));
        log.update(id, |e| {
            e.response = Some(RecordedResponse {
                status: 200,
                headers: vec![],
                body: CapturedBody {
                    bytes: vec![],
                    size: 5_200_000,
                },
            });
            e.duration = Some(Duration::from_micros(3_140));
            e.state = ExchangeState::Complete;
        });
        let summary = log.get(id).unwrap().summary();
        assert_eq!(summary.to_string(), "POST /hooks 200 3.1ms 1.5 kB → 5.2 MB");
        log.update(id, |e| {
            e.state = ExchangeState::Upgraded;
            e.response.as_mut().unwrap().status = 101;
            e.duration = Some(Duration::from_millis(250));
        });
        assert_eq!(
            log.get(id).unwrap().summary().to_string(),
            "POST /hooks 101 250ms upgraded"
        );
        log.update(id, |e| {
            e.state = ExchangeState::Failed {
                reason: "the app closed the connection".into(),
            };
            e.response = None;
            e.replay_of = Some(ExchangeId(7));
        });
        assert_eq!(
            log.get(id).unwrap().summary().to_string(),
            "POST /hooks --- 250ms 1.5 kB → 0 B (replay of #7): the app closed the connection"
        );
    }
}
