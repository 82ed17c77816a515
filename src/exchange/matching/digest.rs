//! The fills digest: xxh3 over every fill's time, strategy, client order id, side, price
//! and size strings, in order, with unit (0x1f) and record (0x1e) separators. Equal runs
//! print equal digests, whichever driver (in-process, bus simple or lookahead lockstep)
//! delivered the orders; the exchange's own order id is left out because it counts
//! submissions across strategies, whose interleaving at a bus gateway is not a result.

use xxhash_rust::xxh3::Xxh3;

use crate::event::FIXED_TEXT_MAX;
use crate::exchange::protocol::Fill;

/// Running digest of fills.
#[derive(Default)]
pub(super) struct FillDigest {
    hasher: Xxh3,
    fills: u64,
}

impl FillDigest {
    pub(super) fn add(&mut self, fill: &Fill) {
        // Unit (0x1f) and record (0x1e) separators keep field boundaries unambiguous.
        let h = &mut self.hasher;
        h.update(&fill.ts.to_le_bytes());
        h.update(fill.strategy.as_bytes());
        h.update(&[0x1f]);
        // The strategy's own id, not the exchange's: exchange ids count submissions across
        // strategies, whose interleaving at a bus gateway is not part of the result.
        h.update(fill.client_order_id.as_bytes());
        h.update(&[0x1f]);
        h.update(fill.side.name().as_bytes());
        h.update(&[0x1f]);
        let mut buf = [0u8; FIXED_TEXT_MAX];
        h.update(fill.price.format_into(&mut buf).as_bytes());
        h.update(&[0x1f]);
        h.update(fill.size.format_into(&mut buf).as_bytes());
        h.update(&[0x1e]);
        self.fills += 1;
    }

    /// The digest as 16 hex digits.
    pub(super) fn hex(&self) -> String {
        format!("{:016x}", self.hasher.digest())
    }

    /// Fills hashed so far.
    pub(super) fn count(&self) -> u64 {
        self.fills
    }
}
