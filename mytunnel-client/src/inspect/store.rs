//! Moving what an exchange carries into its slot as it is recorded, and copying it out
//! again when the exchange is read.

use super::frame::{
    bytes_of, decode_headers, decode_target, encode_headers, encode_request_head, frames, live,
    recorded,
};
use super::log::LogState;
use super::slots::{put, SlotLayout, SlotLens, SlotMut, Slots};
use super::{Exchange, ExchangeLimits};

/// `size` as a length, saturating.
fn at_most(size: u64) -> usize {
    usize::try_from(size).unwrap_or(usize::MAX)
}

/// Headers of a request or response passing through the proxy, for [`store`] to frame
/// straight from the parser's map: no copy of them is made on the way.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct LiveHeads<'a> {
    pub(super) request: Option<&'a http::HeaderMap>,
    pub(super) response: Option<&'a http::HeaderMap>,
}

/// What happened to an exchange before [`store`] moves its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Change {
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
pub(super) fn store(
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
    pub(super) fn head(&self, exchange: &Exchange, limits: ExchangeLimits) -> Exchange {
        let mut copy = exchange.clone();
        if let Some(slot) = self.slots.get(exchange.id, limits) {
            let layout = SlotLayout::of(limits);
            copy.request.target =
                decode_target(slot.part(layout.request_head(), slot.lens.request_head));
        }
        copy
    }

    /// A copy of `exchange` with everything kept of it.
    pub(super) fn whole(&self, exchange: &Exchange, limits: ExchangeLimits) -> Exchange {
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
