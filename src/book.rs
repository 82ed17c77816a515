//! An L2 order book rebuilt from [`BookDelta`]s: used by strategies, the simulated
//! exchange, feed handlers and `ticktape book`.
//!
//! Owns level storage and the snapshot/last-level protocol. Never does I/O.

use std::collections::BTreeMap;

use crate::event::{BookDelta, Fixed, Flags, Side};

/// Price levels of one instrument: price → aggregate size, per side.
#[derive(Clone, Debug, Default)]
pub struct L2Book {
    bids: BTreeMap<Fixed, Fixed>,
    asks: BTreeMap<Fixed, Fixed>,
    /// True while inside a snapshot (after its first level, before its `LAST`).
    in_snapshot: bool,
    /// True after the last delta of a venue message: the book is consistent.
    consistent: bool,
}

impl L2Book {
    /// An empty book.
    pub fn new() -> L2Book {
        L2Book::default()
    }

    /// Applies one delta, honouring the snapshot protocol: the first snapshot level
    /// after non-snapshot data clears the book.
    pub fn apply(&mut self, delta: &BookDelta) {
        let snapshot = delta.flags.contains(Flags::SNAPSHOT);
        if snapshot && !self.in_snapshot {
            self.clear();
            self.in_snapshot = true;
        }
        if !snapshot {
            self.in_snapshot = false;
        }
        self.set_level(delta.side, delta.price, delta.size);
        self.consistent = delta.flags.contains(Flags::LAST);
        if self.consistent {
            self.in_snapshot = false;
        }
    }

    /// Sets the aggregate size at a price; zero removes the level.
    pub fn set_level(&mut self, side: Side, price: Fixed, size: Fixed) {
        let levels = match side {
            Side::Bid => &mut self.bids,
            Side::Ask => &mut self.asks,
            Side::None => return,
        };
        if size.is_zero() {
            levels.remove(&price);
        } else {
            levels.insert(price, size);
        }
    }

    /// Removes every level (after a gap, or before a snapshot).
    pub fn clear(&mut self) {
        self.bids.clear();
        self.asks.clear();
        self.consistent = false;
        self.in_snapshot = false;
    }

    /// True after the last level of a venue message was applied.
    pub fn is_consistent(&self) -> bool {
        self.consistent
    }

    /// Best bid as `(price, size)`.
    pub fn best_bid(&self) -> Option<(Fixed, Fixed)> {
        self.bids.iter().next_back().map(|(p, s)| (*p, *s))
    }

    /// Best ask as `(price, size)`.
    pub fn best_ask(&self) -> Option<(Fixed, Fixed)> {
        self.asks.iter().next().map(|(p, s)| (*p, *s))
    }

    /// Mid price as `f64`, when both sides exist.
    pub fn mid(&self) -> Option<f64> {
        Some((self.best_bid()?.0.to_f64() + self.best_ask()?.0.to_f64()) / 2.0)
    }

    /// True when best bid >= best ask.
    pub fn is_crossed(&self) -> bool {
        matches!((self.best_bid(), self.best_ask()), (Some(b), Some(a)) if b.0 >= a.0)
    }

    /// Size resting at exactly `price` on `side` (zero if none).
    pub fn size_at(&self, side: Side, price: Fixed) -> Fixed {
        let levels = match side {
            Side::Bid => &self.bids,
            Side::Ask => &self.asks,
            Side::None => return Fixed::ZERO,
        };
        levels.get(&price).copied().unwrap_or(Fixed::ZERO)
    }

    /// Levels of one side, best first.
    pub fn levels(&self, side: Side) -> Box<dyn Iterator<Item = (Fixed, Fixed)> + '_> {
        match side {
            Side::Bid => Box::new(self.bids.iter().rev().map(|(p, s)| (*p, *s))),
            Side::Ask => Box::new(self.asks.iter().map(|(p, s)| (*p, *s))),
            Side::None => Box::new(std::iter::empty()),
        }
    }

    /// Number of levels on each side: `(bids, asks)`.
    pub fn depth(&self) -> (usize, usize) {
        (self.bids.len(), self.asks.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(side: Side, p: &str, s: &str, flags: Flags) -> BookDelta {
        BookDelta {
            side,
            price: p.parse().unwrap(),
            size: s.parse().unwrap(),
            flags,
        }
    }

    #[test]
    fn snapshot_replaces_book_and_deltas_update_it() {
        let mut book = L2Book::new();
        book.apply(&d(Side::Bid, "99", "1", Flags::default()));
        book.apply(&d(Side::Bid, "100", "2", Flags::SNAPSHOT));
        book.apply(&d(Side::Ask, "101", "3", Flags::SNAPSHOT.with(Flags::LAST)));
        assert_eq!(book.depth(), (1, 1));
        assert!(book.is_consistent());
        book.apply(&d(Side::Bid, "100.0", "0", Flags::LAST));
        assert_eq!(book.best_bid(), None);
        assert_eq!(book.best_ask().unwrap().1.to_string(), "3");
    }
}
