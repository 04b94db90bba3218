//! How a head is kept in a slot: framed parts (a request's target, then each header's
//! name and value), each its length then its bytes; and how it is read back.

use super::{Header, HEADER_BOOKKEEPING};

/// The bytes of one framed part: its length, 4 bytes little-endian.
const FRAME: usize = 4;

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
pub(super) fn encode_headers<'h>(
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
pub(super) type HeaderBytes<'h> = (&'h [u8], &'h [u8]);

/// The headers of a recorded request or response, as bytes.
pub(super) fn recorded<'h>(headers: &'h [Header]) -> impl Iterator<Item = HeaderBytes<'h>> {
    headers
        .iter()
        .map(|h| (h.name.as_bytes(), h.value.as_bytes()))
}

/// The headers of a request or response passing through, as bytes; none for `None`.
pub(super) fn live(headers: Option<&http::HeaderMap>) -> impl Iterator<Item = HeaderBytes<'_>> {
    headers
        .into_iter()
        .flat_map(|map| map.iter())
        .map(|(name, value)| (name.as_str().as_bytes(), value.as_bytes()))
}

/// Bytes of names and values in `headers`.
pub(super) fn bytes_of<'h>(headers: impl IntoIterator<Item = HeaderBytes<'h>>) -> u64 {
    headers
        .into_iter()
        .map(|(name, value)| (name.len() + value.len()) as u64)
        .sum()
}

/// A request's head framed into `to`: its target, cut at a character boundary to what
/// fits, then its headers; where it ends, and how many bytes did not fit.
pub(super) fn encode_request_head<'h>(
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
pub(super) fn frames(mut from: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        let (len, rest) = from.split_first_chunk::<FRAME>()?;
        let len = usize::try_from(u32::from_le_bytes(*len)).ok()?;
        let (part, rest) = rest.split_at_checked(len)?;
        from = rest;
        Some(part)
    })
}

/// The headers framed by [`encode_headers`] in `parts`.
pub(super) fn decode_headers<'a>(mut parts: impl Iterator<Item = &'a [u8]>) -> Vec<Header> {
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
pub(super) fn decode_target(from: &[u8]) -> String {
    frames(from)
        .next()
        .map(|t| String::from_utf8_lossy(t).into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
