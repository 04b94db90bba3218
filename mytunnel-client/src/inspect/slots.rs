//! Where the log keeps the bytes of its exchanges: a slot per place in the log, in blocks
//! of several slots made once and reused, each part of a slot at a fixed place.

use super::{ExchangeId, ExchangeLimits};

/// Blocks hold whole slots, up to this many bytes each (one slot when a slot is larger).
const SLOT_BLOCK_BYTES: usize = 4 << 20;

/// How many slots of `size` bytes one block holds.
pub(super) fn slots_per_block(size: usize) -> usize {
    (SLOT_BLOCK_BYTES / size.max(1)).max(1)
}

/// The kept bytes of the exchanges: one slot per place in the log, made on first use and
/// then reused by each exchange that takes the place of the one before. The bytes live in
/// a few long-lived blocks of several slots each, not in allocations per exchange
/// scattered through the heap between short-lived buffers (measured: glibc then held
/// about 1.3 to 2 times the kept bytes), and not in a mapping per slot (each rounded up
/// to whole pages: 2.5% more for the default limits).
#[derive(Debug, Default)]
pub(super) struct Slots {
    pub(super) blocks: Vec<Box<[u8]>>,
    lens: Vec<SlotLens>,
}

/// How much of each part of one slot is in use. A slot holds the request's head and
/// body, then the response's, each part at most its cap (`max_head_bytes`,
/// `max_body_bytes`) and at a fixed place (see [`SlotLayout`]). A head is framed parts:
/// a request's target, then each header's name and value; each part its length (4 bytes,
/// little-endian), then its bytes.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct SlotLens {
    pub(super) request_head: usize,
    pub(super) request_body: usize,
    pub(super) response_head: usize,
    pub(super) response_body: usize,
}

/// One slot, to change.
pub(super) struct SlotMut<'a> {
    pub(super) bytes: &'a mut [u8],
    pub(super) lens: &'a mut SlotLens,
}

/// One slot, to read.
pub(super) struct SlotRef<'a> {
    bytes: &'a [u8],
    pub(super) lens: &'a SlotLens,
}

impl SlotRef<'_> {
    pub(super) fn part(&self, at: usize, len: usize) -> &[u8] {
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
    pub(super) fn get_mut(
        &mut self,
        id: ExchangeId,
        limits: ExchangeLimits,
    ) -> Option<SlotMut<'_>> {
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
    pub(super) fn get(&self, id: ExchangeId, limits: ExchangeLimits) -> Option<SlotRef<'_>> {
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
pub(super) struct SlotLayout {
    pub(super) head: usize,
    pub(super) body: usize,
}

impl SlotLayout {
    pub(super) fn of(limits: ExchangeLimits) -> SlotLayout {
        SlotLayout {
            head: limits.max_head_bytes,
            body: limits.max_body_bytes,
        }
    }

    pub(super) fn size(self) -> usize {
        self.head.saturating_add(self.body).saturating_mul(2)
    }

    pub(super) fn request_head(self) -> usize {
        0
    }

    pub(super) fn request_body(self) -> usize {
        self.head
    }

    pub(super) fn response_head(self) -> usize {
        self.head + self.body
    }

    pub(super) fn response_body(self) -> usize {
        2 * self.head + self.body
    }
}

/// Where exchange `id`'s bytes go: a ring over `max_exchanges`, so an exchange takes the
/// slot of the one it pushed out.
fn slot_index(id: ExchangeId, limits: ExchangeLimits) -> Option<usize> {
    let exchanges = u64::try_from(limits.max_exchanges.max(1)).ok()?;
    usize::try_from(id.0.saturating_sub(1) % exchanges).ok()
}

/// Copies what fits of `from` into `block` at `at`, at most `room` bytes; how many.
pub(super) fn put(block: &mut [u8], at: usize, room: usize, from: &[u8]) -> usize {
    let kept = from.len().min(room);
    if let (Some(to), Some(from)) = (block.get_mut(at..at + kept), from.get(..kept)) {
        to.copy_from_slice(from);
    }
    kept
}
