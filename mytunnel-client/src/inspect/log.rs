//! The log itself: [`ExchangeLog`], what its clones share, and how the proxy and replay
//! record exchanges in it and readers copy them out.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use tokio::sync::broadcast;

use crate::app_link::AppLink;

use super::slots::{put, SlotLayout, Slots};
use super::store::{store, Change, LiveHeads};
use super::{
    CapturedBody, Exchange, ExchangeId, ExchangeLimits, ExchangeState, RecordedRequest,
    RecordedResponse,
};

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
pub(super) struct LogState {
    last_id: u64,
    /// The exchanges, their header lists and bodies' `bytes` left empty: the kept bytes
    /// are in `slots`.
    exchanges: VecDeque<Exchange>,
    /// What is kept of each exchange.
    pub(super) slots: Slots,
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
mod tests;
