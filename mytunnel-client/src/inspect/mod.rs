//! What a tunnel's HTTP proxy saw: each exchange (request and response), kept in a
//! bounded [`ExchangeLog`] for the local inspector, and summarised as a
//! [`TunnelEvent::Request`](crate::TunnelEvent::Request) for the live request log.
//!
//! The log holds at most [`ExchangeLimits::max_exchanges`] exchanges (the oldest goes
//! first), at most [`ExchangeLimits::max_body_bytes`] of each body (the rest of a body
//! streams on to its reader and is only counted) and at most
//! [`ExchangeLimits::max_head_bytes`] of each head (the headers past it reach the app or
//! the visitor, and are only counted): its memory is bounded by its limits.
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
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tokio::sync::broadcast;

use crate::app_link::AppLink;

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
    /// Bytes kept of each request's and each response's head: the request's target (cut
    /// when longer), then each header whole, each counted with [`HEADER_BOOKKEEPING`]
    /// bytes more, until the next one does not fit; what does not fit is counted only.
    pub max_head_bytes: usize,
}

impl ExchangeLimits {
    /// 100 exchanges, 64 KiB of each body, 16 KiB of each head: at most 16,000 KiB of
    /// bodies and heads.
    pub const DEFAULT: ExchangeLimits = ExchangeLimits {
        max_exchanges: 100,
        max_body_bytes: 64 * 1024,
        max_head_bytes: 16 * 1024,
    };

    /// The most bytes of bodies and heads the log keeps: each exchange's two bodies and
    /// two heads, for every exchange kept.
    pub fn bound_bytes(&self) -> usize {
        self.max_exchanges
            .max(1)
            .saturating_mul(SlotLayout::of(*self).size())
    }

    /// The most memory the log's kept bytes take from the system: [`bound_bytes`]
    /// in blocks of several exchanges' bytes each (at most 4 MiB, or one exchange's), each
    /// rounded up to whole 4 KiB pages with one page more for the allocator's own header.
    ///
    /// [`bound_bytes`]: ExchangeLimits::bound_bytes
    pub fn footprint_bytes(&self) -> usize {
        let size = SlotLayout::of(*self).size();
        if size == 0 {
            return 0;
        }
        let per_block = slots_per_block(size);
        let exchanges = self.max_exchanges.max(1);
        let pages = |bytes: usize| bytes.div_ceil(PAGE).saturating_add(1).saturating_mul(PAGE);
        let full = exchanges / per_block;
        let rest = exchanges % per_block;
        let mut total = full.saturating_mul(pages(per_block.saturating_mul(size)));
        if rest > 0 {
            total = total.saturating_add(pages(rest.saturating_mul(size)));
        }
        total
    }
}

/// What keeping one header costs beyond its name and value: the two lengths that frame
/// them where the log keeps them. A request's target costs half as much beyond its bytes.
pub const HEADER_BOOKKEEPING: usize = 8;

/// The bytes of one framed part: its length, 4 bytes little-endian.
const FRAME: usize = 4;

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
    /// The exchanges, their header lists and bodies' `bytes` left empty: the kept bytes
    /// are in `slots`.
    exchanges: VecDeque<Exchange>,
    /// What is kept of each exchange.
    slots: Slots,
}

/// Blocks hold whole slots, up to this many bytes each (one slot when a slot is larger).
const SLOT_BLOCK_BYTES: usize = 4 << 20;

/// The page size [`ExchangeLimits::footprint_bytes`] counts in.
const PAGE: usize = 4096;

/// How many slots of `size` bytes one block holds.
fn slots_per_block(size: usize) -> usize {
    (SLOT_BLOCK_BYTES / size.max(1)).max(1)
}

/// The kept bytes of the exchanges: one slot per place in the log, made on first use and
/// then reused by each exchange that takes the place of the one before. The bytes live in
/// a few long-lived blocks of several slots each, not in allocations per exchange
/// scattered through the heap between short-lived buffers (measured: glibc then held
/// about 1.3 to 2 times the kept bytes), and not in a mapping per slot (each rounded up
/// to whole pages: 2.5% more for the default limits).
#[derive(Debug, Default)]
struct Slots {
    blocks: Vec<Box<[u8]>>,
    lens: Vec<SlotLens>,
}

/// How much of each part of one slot is in use. A slot holds the request's head and
/// body, then the response's, each part at most its cap (`max_head_bytes`,
/// `max_body_bytes`) and at a fixed place (see [`SlotLayout`]). A head is framed parts:
/// a request's target, then each header's name and value; each part its length (4 bytes,
/// little-endian), then its bytes.
#[derive(Debug, Default, Clone, Copy)]
struct SlotLens {
    request_head: usize,
    request_body: usize,
    response_head: usize,
    response_body: usize,
}

/// One slot, to change.
struct SlotMut<'a> {
    bytes: &'a mut [u8],
    lens: &'a mut SlotLens,
}

/// One slot, to read.
struct SlotRef<'a> {
    bytes: &'a [u8],
    lens: &'a SlotLens,
}

impl SlotRef<'_> {
    fn part(&self, at: usize, len: usize) -> &[u8] {
        self.bytes.get(at..at + len).unwrap_or_default()
    }
}

/// Where one slot is.
#[derive(Debug, Clone, Copy)]
struct SlotPlace {
    /// Its block.
    block: usize,
    /// Its first byte in the block.
    at: usize,
    /// Its bytes.
    size: usize,
    /// Slots in a full block.
    per_block: usize,
}

impl Slots {
    /// Where slot `index` is; none when nothing is kept.
    fn place(index: usize, limits: ExchangeLimits) -> Option<SlotPlace> {
        let size = SlotLayout::of(limits).size();
        if size == 0 {
            return None;
        }
        let per_block = slots_per_block(size);
        Some(SlotPlace {
            block: index / per_block,
            at: (index % per_block) * size,
            size,
            per_block,
        })
    }

    /// The slot of exchange `id`, its block made when first needed; none when nothing
    /// is kept.
    fn get_mut(&mut self, id: ExchangeId, limits: ExchangeLimits) -> Option<SlotMut<'_>> {
        let index = slot_index(id, limits)?;
        let SlotPlace {
            block,
            at,
            size,
            per_block,
        } = Slots::place(index, limits)?;
        while self.blocks.len() <= block {
            let first = self.blocks.len() * per_block;
            let count = per_block.min(limits.max_exchanges.max(1).saturating_sub(first));
            self.blocks
                .push(vec![0u8; count.max(1).saturating_mul(size)].into_boxed_slice());
        }
        if self.lens.len() <= index {
            self.lens.resize(index + 1, SlotLens::default());
        }
        Some(SlotMut {
            bytes: self.blocks.get_mut(block)?.get_mut(at..at + size)?,
            lens: self.lens.get_mut(index)?,
        })
    }

    /// The slot of exchange `id`, if it was ever made.
    fn get(&self, id: ExchangeId, limits: ExchangeLimits) -> Option<SlotRef<'_>> {
        let index = slot_index(id, limits)?;
        let SlotPlace {
            block, at, size, ..
        } = Slots::place(index, limits)?;
        Some(SlotRef {
            bytes: self.blocks.get(block)?.get(at..at + size)?,
            lens: self.lens.get(index)?,
        })
    }
}

/// Where each part of a slot starts: request head, request body, response head, response
/// body.
#[derive(Debug, Clone, Copy)]
struct SlotLayout {
    head: usize,
    body: usize,
}

impl SlotLayout {
    fn of(limits: ExchangeLimits) -> SlotLayout {
        SlotLayout {
            head: limits.max_head_bytes,
            body: limits.max_body_bytes,
        }
    }

    fn size(self) -> usize {
        self.head.saturating_add(self.body).saturating_mul(2)
    }

    fn request_head(self) -> usize {
        0
    }

    fn request_body(self) -> usize {
        self.head
    }

    fn response_head(self) -> usize {
        self.head + self.body
    }

    fn response_body(self) -> usize {
        2 * self.head + self.body
    }
}

/// Writes `part` framed (its length, then its bytes) into `to` at `at`, which has room for
/// it; returns where the next part goes.
fn put_frame(to: &mut [u8], at: usize, part: &[u8]) -> usize {
    let len = u32::try_from(part.len()).unwrap_or(u32::MAX).to_le_bytes();
    let mut at = at;
    for piece in [&len[..], part] {
        if let Some(place) = to.get_mut(at..at + piece.len()) {
            place.copy_from_slice(piece);
        }
        at += piece.len();
    }
    at
}

/// `headers` framed into `to` from `at` (name, then value), as many whole headers as fit,
/// in order; where they end, and how many bytes of names and values did not fit.
fn encode_headers<'h>(
    headers: impl IntoIterator<Item = HeaderBytes<'h>>,
    to: &mut [u8],
    at: usize,
) -> (usize, u64) {
    let mut at = at;
    let mut left_out = 0u64;
    for (name, value) in headers {
        let need = name.len() + value.len() + HEADER_BOOKKEEPING;
        if left_out == 0 && at + need <= to.len() {
            at = put_frame(to, at, name);
            at = put_frame(to, at, value);
        } else {
            left_out += (name.len() + value.len()) as u64;
        }
    }
    (at, left_out)
}

/// A header's name and value, as bytes.
type HeaderBytes<'h> = (&'h [u8], &'h [u8]);

/// The headers of a recorded request or response, as bytes.
fn recorded<'h>(headers: &'h [Header]) -> impl Iterator<Item = HeaderBytes<'h>> {
    headers
        .iter()
        .map(|h| (h.name.as_bytes(), h.value.as_bytes()))
}

/// The headers of a request or response passing through, as bytes; none for `None`.
fn live(headers: Option<&http::HeaderMap>) -> impl Iterator<Item = HeaderBytes<'_>> {
    headers
        .into_iter()
        .flat_map(|map| map.iter())
        .map(|(name, value)| (name.as_str().as_bytes(), value.as_bytes()))
}

/// Bytes of names and values in `headers`.
fn bytes_of<'h>(headers: impl IntoIterator<Item = HeaderBytes<'h>>) -> u64 {
    headers
        .into_iter()
        .map(|(name, value)| (name.len() + value.len()) as u64)
        .sum()
}

/// A request's head framed into `to`: its target, cut at a character boundary to what
/// fits, then its headers; where it ends, and how many bytes did not fit.
fn encode_request_head<'h>(
    target: &str,
    headers: impl IntoIterator<Item = HeaderBytes<'h>>,
    to: &mut [u8],
) -> (usize, u64) {
    if to.len() < FRAME {
        return (0, target.len() as u64 + bytes_of(headers));
    }
    let mut end = target.len().min(to.len() - FRAME);
    while !target.is_char_boundary(end) {
        end -= 1;
    }
    let at = put_frame(to, 0, target.as_bytes().get(..end).unwrap_or_default());
    let (at, left_out) = encode_headers(headers, to, at);
    (at, (target.len() - end) as u64 + left_out)
}

/// The parts framed in `from`, in order.
fn frames(mut from: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        let (len, rest) = from.split_first_chunk::<FRAME>()?;
        let len = usize::try_from(u32::from_le_bytes(*len)).ok()?;
        let (part, rest) = rest.split_at_checked(len)?;
        from = rest;
        Some(part)
    })
}

/// The headers framed by [`encode_headers`] in `parts`.
fn decode_headers<'a>(mut parts: impl Iterator<Item = &'a [u8]>) -> Vec<Header> {
    let mut headers = Vec::new();
    while let (Some(name), Some(value)) = (parts.next(), parts.next()) {
        headers.push(Header {
            name: String::from_utf8_lossy(name).into_owned(),
            value: String::from_utf8_lossy(value).into_owned(),
        });
    }
    headers
}

/// The target of a request head framed by [`encode_request_head`].
fn decode_target(from: &[u8]) -> String {
    frames(from)
        .next()
        .map(|t| String::from_utf8_lossy(t).into_owned())
        .unwrap_or_default()
}

/// `size` as a length, saturating.
fn at_most(size: u64) -> usize {
    usize::try_from(size).unwrap_or(usize::MAX)
}

/// Headers of a request or response passing through the proxy, for [`store`] to frame
/// straight from the parser's map: no copy of them is made on the way.
#[derive(Debug, Clone, Copy, Default)]
struct LiveHeads<'a> {
    request: Option<&'a http::HeaderMap>,
    response: Option<&'a http::HeaderMap>,
}

/// Where exchange `id`'s bytes go: a ring over `max_exchanges`, so an exchange takes the
/// slot of the one it pushed out.
fn slot_index(id: ExchangeId, limits: ExchangeLimits) -> Option<usize> {
    let exchanges = u64::try_from(limits.max_exchanges.max(1)).ok()?;
    usize::try_from(id.0.saturating_sub(1) % exchanges).ok()
}

/// Copies what fits of `from` into `block` at `at`, at most `room` bytes; how many.
fn put(block: &mut [u8], at: usize, room: usize, from: &[u8]) -> usize {
    let kept = from.len().min(room);
    if let (Some(to), Some(from)) = (block.get_mut(at..at + kept), from.get(..kept)) {
        to.copy_from_slice(from);
    }
    kept
}

/// What happened to an exchange before [`store`] moves its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    /// It has just begun: its slot's last tenant's bytes go.
    Begun,
    /// It changed; whether it had a response before.
    Updated {
        /// A response was there before the change.
        had_response: bool,
    },
}

/// Moves what `exchange` carries into its slot, leaving its header lists and body bytes
/// empty (and, once begun, its target): the request's head is kept as it began; a body's
/// bytes, a response's headers replace what the slot holds when there are any, and a
/// body keeps no more bytes than its `size`; a new response starts empty. What does not
/// fit is counted in `head_bytes_left_out` (heads; a body's `size` counts its bytes
/// already).
fn store(
    slots: &mut Slots,
    exchange: &mut Exchange,
    change: Change,
    heads: LiveHeads<'_>,
    limits: ExchangeLimits,
) {
    let layout = SlotLayout::of(limits);
    let target = (change == Change::Begun).then(|| std::mem::take(&mut exchange.request.target));
    let request_headers = std::mem::take(&mut exchange.request.headers);
    let request_body = std::mem::take(&mut exchange.request.body.bytes);
    let response = exchange.response.as_mut().map(|r| {
        (
            std::mem::take(&mut r.headers),
            std::mem::take(&mut r.body.bytes),
        )
    });
    let Some(SlotMut { bytes: block, lens }) = slots.get_mut(exchange.id, limits) else {
        let target_bytes = target.map_or(0, |t| t.len() as u64);
        exchange.request.head_bytes_left_out +=
            target_bytes + bytes_of(recorded(&request_headers).chain(live(heads.request)));
        if let (Some(r), Some((headers, _))) = (exchange.response.as_mut(), &response) {
            r.head_bytes_left_out += bytes_of(recorded(headers).chain(live(heads.response)));
        }
        return;
    };
    let SlotLens {
        request_head: request_head_len,
        request_body: request_len,
        response_head: response_head_len,
        response_body: response_len,
    } = lens;
    if let Some(target) = target {
        let area = layout.request_head()..layout.request_head() + layout.head;
        let (len, left_out) = encode_request_head(
            &target,
            recorded(&request_headers).chain(live(heads.request)),
            block.get_mut(area).unwrap_or_default(),
        );
        *request_head_len = len;
        exchange.request.head_bytes_left_out += left_out;
        *request_len = 0;
    }
    if !request_body.is_empty() {
        *request_len = put(block, layout.request_body(), layout.body, &request_body);
    }
    // Never more kept than passed: a body replaced by a shorter one keeps no more.
    *request_len = (*request_len).min(at_most(exchange.request.body.size));
    match response {
        Some((headers, bytes)) => {
            if change != (Change::Updated { had_response: true }) {
                *response_head_len = 0;
                *response_len = 0;
            }
            if !headers.is_empty() || heads.response.is_some() {
                let area = layout.response_head()..layout.response_head() + layout.head;
                let (len, left_out) = encode_headers(
                    recorded(&headers).chain(live(heads.response)),
                    block.get_mut(area).unwrap_or_default(),
                    0,
                );
                *response_head_len = len;
                if let Some(r) = exchange.response.as_mut() {
                    r.head_bytes_left_out += left_out;
                }
            }
            if !bytes.is_empty() {
                *response_len = put(block, layout.response_body(), layout.body, &bytes);
            }
            if let Some(r) = &exchange.response {
                *response_len = (*response_len).min(at_most(r.body.size));
            }
        }
        None => {
            *response_head_len = 0;
            *response_len = 0;
        }
    }
}

impl LogState {
    /// A copy of `exchange` with its target, but no headers or body bytes.
    fn head(&self, exchange: &Exchange, limits: ExchangeLimits) -> Exchange {
        let mut copy = exchange.clone();
        if let Some(slot) = self.slots.get(exchange.id, limits) {
            let layout = SlotLayout::of(limits);
            copy.request.target =
                decode_target(slot.part(layout.request_head(), slot.lens.request_head));
        }
        copy
    }

    /// A copy of `exchange` with everything kept of it.
    fn whole(&self, exchange: &Exchange, limits: ExchangeLimits) -> Exchange {
        let mut copy = exchange.clone();
        let layout = SlotLayout::of(limits);
        if let Some(slot) = self.slots.get(exchange.id, limits) {
            let part = |at: usize, len: usize| slot.part(at, len);
            let mut request_head = frames(part(layout.request_head(), slot.lens.request_head));
            copy.request.target = request_head
                .next()
                .map(|t| String::from_utf8_lossy(t).into_owned())
                .unwrap_or_default();
            copy.request.headers = decode_headers(request_head);
            copy.request.body.bytes = part(layout.request_body(), slot.lens.request_body).to_vec();
            if let Some(response) = copy.response.as_mut() {
                response.headers = decode_headers(frames(part(
                    layout.response_head(),
                    slot.lens.response_head,
                )));
                response.body.bytes =
                    part(layout.response_body(), slot.lens.response_body).to_vec();
            }
        }
        copy
    }
}

/// Which body of an exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodySide {
    /// The request's.
    Request,
    /// The response's (once its head is recorded).
    Response,
}

/// What a new exchange starts with.
#[derive(Debug)]
pub(crate) struct NewExchange {
    pub host: String,
    pub request: RecordedRequest,
    pub upstream: Arc<AppLink>,
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
        self.copies(None, LogState::whole)
    }

    /// The exchange `id`, while it is kept.
    pub fn get(&self, id: ExchangeId) -> Option<Exchange> {
        self.copies(Some(id), LogState::whole).pop()
    }

    /// [`recent`](Self::recent) with every header list and body's `bytes` left empty
    /// (sizes kept): what a list of summaries needs, without copying the kept bytes.
    pub(crate) fn recent_heads(&self) -> Vec<Exchange> {
        self.copies(None, LogState::head)
    }

    /// [`get`](Self::get) with its header lists and bodies' `bytes` left empty (sizes
    /// kept).
    pub(crate) fn head(&self, id: ExchangeId) -> Option<Exchange> {
        self.copies(Some(id), LogState::head).pop()
    }

    /// Copies of the exchanges kept (only `id`, when given), oldest first, made by `copy`.
    fn copies(
        &self,
        id: Option<ExchangeId>,
        copy: fn(&LogState, &Exchange, ExchangeLimits) -> Exchange,
    ) -> Vec<Exchange> {
        let limits = self.shared.limits;
        let state = self.state();
        state
            .exchanges
            .iter()
            .filter(|e| id.is_none_or(|id| e.id == id))
            .map(|e| copy(&state, e, limits))
            .collect()
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
        self.begin_live(new, started_at, None)
    }

    /// [`begin_at`](Self::begin_at) for a request passing through, its headers (after
    /// those `new` carries, usually none) framed straight from `headers`.
    pub(crate) fn begin_live(
        &self,
        new: NewExchange,
        started_at: SystemTime,
        headers: Option<&http::HeaderMap>,
    ) -> ExchangeId {
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
                Change::Begun,
                LiveHeads {
                    request: headers,
                    response: None,
                },
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
        self.update_with(id, LiveHeads::default(), change)
    }

    /// Records the head of exchange `id`'s response as it passes: `status` and `headers`,
    /// framed straight from the parser's map; tells readers.
    pub(crate) fn respond(&self, id: ExchangeId, status: u16, headers: &http::HeaderMap) {
        let heads = LiveHeads {
            request: None,
            response: Some(headers),
        };
        self.update_with(id, heads, |exchange| {
            exchange.response = Some(RecordedResponse {
                status,
                headers: Vec::new(),
                head_bytes_left_out: 0,
                body: CapturedBody::default(),
            });
        });
    }

    /// [`update`](Self::update), with the headers in `heads` kept after those the
    /// exchange carries.
    fn update_with<T>(
        &self,
        id: ExchangeId,
        heads: LiveHeads<'_>,
        change: impl FnOnce(&mut Exchange) -> T,
    ) -> Option<T> {
        let limits = self.shared.limits;
        let result = {
            let mut state = self.state();
            let LogState {
                exchanges, slots, ..
            } = &mut *state;
            exchanges.iter_mut().find(|e| e.id == id).map(|exchange| {
                let had_response = exchange.response.is_some();
                let result = change(exchange);
                store(
                    slots,
                    exchange,
                    Change::Updated { had_response },
                    heads,
                    limits,
                );
                result
            })
        };
        if result.is_some() {
            let _ = self.shared.changes.send(id);
        }
        result
    }

    /// Counts `chunk` into a body of exchange `id` and copies what fits of it straight
    /// into the exchange's slot, so a body passing through leaves no buffer of its own
    /// behind. Readers are not told: the body's end is a change.
    pub(crate) fn append_body(&self, id: ExchangeId, side: BodySide, chunk: &[u8]) {
        let limits = self.shared.limits;
        let layout = SlotLayout::of(limits);
        let mut state = self.state();
        let LogState {
            exchanges, slots, ..
        } = &mut *state;
        let Some(exchange) = exchanges.iter_mut().find(|e| e.id == id) else {
            return;
        };
        let body = match side {
            BodySide::Request => &mut exchange.request.body,
            BodySide::Response => match exchange.response.as_mut() {
                Some(response) => &mut response.body,
                None => return,
            },
        };
        body.size = body.size.saturating_add(chunk.len() as u64);
        let Some(slot) = slots.get_mut(id, limits) else {
            return;
        };
        let (at, kept) = match side {
            BodySide::Request => (layout.request_body(), &mut slot.lens.request_body),
            BodySide::Response => (layout.response_body(), &mut slot.lens.response_body),
        };
        let room = layout.body.saturating_sub(*kept);
        if room > 0 {
            *kept += put(slot.bytes, at + *kept, room, chunk);
        }
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

    fn header_bytes(headers: &[Header]) -> u64 {
        bytes_of(recorded(headers))
    }

    fn cost(headers: &[Header]) -> usize {
        headers
            .iter()
            .map(|h| h.name.len() + h.value.len() + HEADER_BOOKKEEPING)
            .sum()
    }

    proptest::proptest! {
        /// Framed headers read back as they were: the first ones, whole and in order,
        /// within the room; every byte of a name or value is kept or counted.
        #[test]
        fn framed_headers_read_back_whole(
            headers in proptest::collection::vec(("[a-z-]{0,12}", "\\PC{0,40}"), 0..12),
            room in 0usize..400,
        ) {
            let headers: Vec<Header> = headers
                .into_iter()
                .map(|(name, value)| Header { name, value })
                .collect();
            let mut block = vec![0u8; room];
            let (len, left_out) = encode_headers(recorded(&headers), &mut block, 0);
            proptest::prop_assert!(len <= room);
            let read = decode_headers(frames(&block[..len]));
            proptest::prop_assert_eq!(&read[..], &headers[..read.len()]);
            proptest::prop_assert_eq!(cost(&read), len);
            proptest::prop_assert_eq!(header_bytes(&read) + left_out, header_bytes(&headers));
        }

        /// A target is kept up to what fits, cut at a character boundary; the headers
        /// get the room it leaves; what does not fit is counted.
        #[test]
        fn a_long_target_is_cut_at_a_character_and_counted(
            target in "/[a-zé€]{0,400}",
            room in 0usize..500,
        ) {
            let headers = [Header { name: "x-a".into(), value: "b".repeat(10) }];
            let mut block = vec![0u8; room];
            let (len, left_out) = encode_request_head(&target, recorded(&headers), &mut block);
            proptest::prop_assert!(len <= room);
            let mut parts = frames(&block[..len]);
            let kept = parts
                .next()
                .map(|t| String::from_utf8(t.to_vec()).unwrap())
                .unwrap_or_default();
            let kept_headers = decode_headers(parts);
            proptest::prop_assert!(target.starts_with(&kept));
            proptest::prop_assert_eq!(decode_target(&block[..len]), kept.clone());
            proptest::prop_assert_eq!(
                left_out,
                (target.len() - kept.len()) as u64 + header_bytes(&headers)
                    - header_bytes(&kept_headers)
            );
        }
    }

    fn header(name: &str, value: &str) -> Header {
        Header {
            name: name.into(),
            value: value.into(),
        }
    }

    #[test]
    fn each_place_keeps_its_own_headers_and_counts_what_does_not_fit() {
        let log = ExchangeLog::new(ExchangeLimits {
            max_exchanges: 2,
            max_body_bytes: 4,
            max_head_bytes: 42,
        });
        let with_headers = |headers: Vec<Header>| NewExchange {
            request: RecordedRequest {
                headers,
                ..request(b"", 4)
            },
            ..new_exchange(b"", 4)
        };
        // The target `/hooks` takes 4 + 6 bytes, each header 8 + 1 + 1: three fit in 42,
        // the fourth is counted.
        let first = log.begin(with_headers(vec![
            header("a", "1"),
            header("b", "2"),
            header("c", "3"),
            header("d", "4"),
        ]));
        let kept = log.get(first).unwrap();
        assert_eq!(
            kept.request.headers,
            [header("a", "1"), header("b", "2"), header("c", "3")]
        );
        assert_eq!(kept.request.target, "/hooks");
        assert_eq!(kept.request.head_bytes_left_out, 2);
        let head = log.head(first).unwrap();
        assert!(head.request.headers.is_empty());
        assert_eq!(head.request.target, "/hooks", "lists show the target");

        log.update(first, |e| {
            e.response = Some(RecordedResponse {
                status: 200,
                headers: vec![header("x-app", "made")],
                head_bytes_left_out: 0,
                body: CapturedBody::default(),
            });
        });
        // A change that carries no headers keeps those kept.
        log.update(first, |e| e.state = ExchangeState::Complete);
        let kept = log.get(first).unwrap();
        assert_eq!(kept.request.headers.len(), 3);
        assert_eq!(kept.response.unwrap().headers, [header("x-app", "made")]);

        // The third takes the first's place: nothing of the first's headers stays.
        log.begin(with_headers(vec![]));
        let third = log.begin(with_headers(vec![header("z", "9")]));
        let kept = log.get(third).unwrap();
        assert_eq!(kept.request.headers, [header("z", "9")]);
        assert_eq!(kept.request.head_bytes_left_out, 0);
        assert!(kept.response.is_none());
        assert!(log.get(first).is_none());
    }

    #[test]
    fn slots_in_blocks_of_several_keep_their_own_bytes() {
        // 2 MiB slots: two to a block, five places: blocks of two, two and one.
        let limits = ExchangeLimits {
            max_exchanges: 5,
            max_body_bytes: 1 << 20,
            max_head_bytes: 0,
        };
        let log = ExchangeLog::new(limits);
        let mut ids = Vec::new();
        for round in 0..8u8 {
            let id = log.begin(new_exchange(b"", 0));
            log.update(id, |e| {
                e.response = Some(RecordedResponse {
                    status: 200,
                    headers: vec![],
                    head_bytes_left_out: 0,
                    body: CapturedBody::default(),
                });
            });
            // The last byte of each body reaches the end of its slot.
            let request = vec![round; 1 << 20];
            let response = vec![round + 100; (1 << 20) + 10];
            log.append_body(id, BodySide::Request, &request);
            log.append_body(id, BodySide::Response, &response);
            ids.push((id, round));
        }
        assert_eq!(log.state().slots.blocks.len(), 3);
        for (id, round) in ids.iter().skip(3) {
            let kept = log.get(*id).unwrap();
            assert_eq!(kept.request.body.bytes, vec![*round; 1 << 20]);
            assert_eq!(kept.request.body.size, 1 << 20);
            let response = kept.response.unwrap();
            assert_eq!(response.body.bytes, vec![*round + 100; 1 << 20]);
            assert_eq!(response.body.size, (1 << 20) + 10);
            assert!(response.body.truncated());
        }
        assert_eq!(log.recent().len(), 5);
    }

    #[test]
    fn the_bound_is_two_bodies_and_two_heads_per_exchange() {
        assert_eq!(
            ExchangeLimits::DEFAULT.bound_bytes(),
            100 * 2 * (64 + 16) * 1024
        );
        // Four blocks of 25 exchanges, each one page more.
        assert_eq!(
            ExchangeLimits::DEFAULT.footprint_bytes(),
            100 * 2 * (64 + 16) * 1024 + 4 * 4096
        );
        // Larger than a block: one per exchange; 3 bytes: one block.
        let big = ExchangeLimits {
            max_exchanges: 3,
            max_body_bytes: 3 << 20,
            max_head_bytes: 0,
        };
        assert_eq!(big.footprint_bytes(), 3 * ((6 << 20) + 4096));
        let tiny = ExchangeLimits {
            max_exchanges: 3,
            max_body_bytes: 1,
            max_head_bytes: 0,
        };
        assert_eq!(tiny.footprint_bytes(), 2 * 4096);
        let none = ExchangeLimits {
            max_exchanges: 0,
            max_body_bytes: 1,
            max_head_bytes: 2,
        };
        assert_eq!(none.bound_bytes(), 6, "0 exchanges keeps 1");
    }

    fn request(body: &[u8], cap: usize) -> RecordedRequest {
        let mut captured = CapturedBody::default();
        captured.push(body, cap);
        RecordedRequest {
            method: "POST".into(),
            target: "/hooks".into(),
            version: "HTTP/1.1".into(),
            headers: vec![],
            head_bytes_left_out: 0,
            body: captured,
        }
    }

    fn new_exchange(body: &[u8], cap: usize) -> NewExchange {
        NewExchange {
            host: "demo.example.com".into(),
            request: request(body, cap),
            upstream: AppLink::plain("127.0.0.1:3000".parse().unwrap()),
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
            max_head_bytes: ExchangeLimits::DEFAULT.max_head_bytes,
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
            max_head_bytes: ExchangeLimits::DEFAULT.max_head_bytes,
        });
        let first = log.begin(new_exchange(b"aaaaaa", 4));
        let response = |bytes: &[u8]| RecordedResponse {
            status: 200,
            headers: vec![],
            head_bytes_left_out: 0,
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
            max_head_bytes: ExchangeLimits::DEFAULT.max_head_bytes,
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
                head_bytes_left_out: 0,
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
