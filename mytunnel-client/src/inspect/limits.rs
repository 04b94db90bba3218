//! How much an exchange log keeps: [`ExchangeLimits`], and the bytes and memory that
//! comes to.

use super::slots::{slots_per_block, SlotLayout};

/// How much an [`ExchangeLog`](super::ExchangeLog) keeps.
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

impl Default for ExchangeLimits {
    fn default() -> Self {
        ExchangeLimits::DEFAULT
    }
}

/// What keeping one header costs beyond its name and value: the two lengths that frame
/// them where the log keeps them. A request's target costs half as much beyond its bytes.
pub const HEADER_BOOKKEEPING: usize = 8;

/// The page size [`ExchangeLimits::footprint_bytes`] counts in.
const PAGE: usize = 4096;
