//! An L2 order book rebuilt from [`BookDelta`]s: used by strategies, the simulated
//! exchange, feed handlers and `ticktape book`.
//!
//! Owns level storage and the snapshot/last-level protocol. Never does I/O.

mod ladder;

use crate::event::{BookDelta, Fixed, Flags, Side};

use ladder::Ladder;

/// Price levels of one instrument: price → aggregate size, per side.
///
/// Each side is a hash map from price to level plus the best price, so a delta costs one
/// hash lookup wherever in the book it lands (venues update levels thousands deep: an
/// ordered tree or vector paid for that depth on every delta). Ordered access walks
/// prices outward from the best one tick at a time (the tick is learned from the prices
/// seen), so the best levels are read without sorting anything.
#[derive(Clone, Debug, Default)]
pub struct L2Book {
    bids: Ladder,
    asks: Ladder,
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
        self.apply_with_previous(delta);
    }

    /// [`L2Book::apply`], returning the size the delta's level had just before it (zero
    /// if it did not exist, or if the delta starts a snapshot, which clears the book).
    pub fn apply_with_previous(&mut self, delta: &BookDelta) -> Fixed {
        let snapshot = delta.flags.contains(Flags::SNAPSHOT);
        if snapshot && !self.in_snapshot {
            self.clear();
            self.in_snapshot = true;
        }
        if !snapshot {
            self.in_snapshot = false;
        }
        let prev = self.replace_level(delta.side, delta.price, delta.size);
        self.consistent = delta.flags.contains(Flags::LAST);
        if self.consistent {
            self.in_snapshot = false;
        }
        prev
    }

    /// Sets the aggregate size at a price; zero removes the level. A level keeps the
    /// price digits it was created with (`100.0` updates the level `100`).
    pub fn set_level(&mut self, side: Side, price: Fixed, size: Fixed) {
        self.replace_level(side, price, size);
    }

    /// [`L2Book::set_level`], returning the size the level had (zero if none).
    fn replace_level(&mut self, side: Side, price: Fixed, size: Fixed) -> Fixed {
        match side {
            Side::Bid => self.bids.set(price, size, true),
            Side::Ask => self.asks.set(price, size, false),
            Side::None => Fixed::ZERO,
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
        self.bids.best_level()
    }

    /// Best ask as `(price, size)`.
    pub fn best_ask(&self) -> Option<(Fixed, Fixed)> {
        self.asks.best_level()
    }

    /// Best bid price, without reading its level (the value, at the side's scale).
    pub fn best_bid_price(&self) -> Option<Fixed> {
        self.bids.best_price()
    }

    /// Best ask price, without reading its level (the value, at the side's scale).
    pub fn best_ask_price(&self) -> Option<Fixed> {
        self.asks.best_price()
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
        match side {
            Side::Bid => self.bids.size_at(price),
            Side::Ask => self.asks.size_at(price),
            Side::None => Fixed::ZERO,
        }
    }

    /// Levels of one side, best first. Reading the first levels costs a few lookups;
    /// reading far into a sparse side sorts what is left once (one allocation).
    pub fn levels(&self, side: Side) -> Levels<'_> {
        let (ladder, bids) = match side {
            Side::Bid => (&self.bids, true),
            Side::Ask => (&self.asks, false),
            Side::None => (&self.asks, false),
        };
        let left = if side == Side::None { 0 } else { ladder.len() };
        Levels {
            ladder,
            bids,
            next: ladder.best(),
            left,
            probes: 4 * left + 16,
            rest: None,
        }
    }

    /// Number of levels on each side: `(bids, asks)`.
    pub fn depth(&self) -> (usize, usize) {
        (self.bids.len(), self.asks.len())
    }
}

/// Levels of one side of an [`L2Book`], best first ([`L2Book::levels`]).
pub struct Levels<'a> {
    ladder: &'a Ladder,
    bids: bool,
    /// Next key to probe while walking tick by tick.
    next: Option<i64>,
    /// Levels not yet returned.
    left: usize,
    /// Probes left before the walk gives up and sorts the remaining keys.
    probes: usize,
    /// Remaining keys, worst first (so `pop` gives the best), once sorted.
    rest: Option<Vec<i64>>,
}

impl Iterator for Levels<'_> {
    type Item = (Fixed, Fixed);

    fn next(&mut self) -> Option<(Fixed, Fixed)> {
        if self.left == 0 {
            return None;
        }
        let step = self.ladder.step();
        if self.rest.is_none() && step > 0 {
            while self.probes > 0 {
                let key = self.next?;
                self.probes -= 1;
                self.next = if self.bids {
                    key.checked_sub(step)
                } else {
                    key.checked_add(step)
                };
                if let Some(level) = self.ladder.get(key) {
                    self.left -= 1;
                    return Some(self.ladder.level(key, level));
                }
            }
        }
        if self.rest.is_none() {
            // From `next` on (inclusive), worst first.
            let bids = self.bids;
            let from = self.next;
            let mut rest: Vec<i64> = self
                .ladder
                .keys()
                .filter(|&k| from.is_some_and(|f| k == f || Ladder::better(f, k, bids)))
                .collect();
            rest.sort_unstable_by(|a, b| if bids { a.cmp(b) } else { b.cmp(a) });
            self.rest = Some(rest);
        }
        let key = self.rest.as_mut()?.pop()?;
        self.left -= 1;
        let level = self.ladder.get(key)?;
        Some(self.ladder.level(key, level))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

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

    #[test]
    fn levels_keep_their_first_digits_and_scales_mix() {
        let mut book = L2Book::new();
        book.set_level(Side::Bid, "100".parse().unwrap(), "1".parse().unwrap());
        book.set_level(Side::Bid, "99.95".parse().unwrap(), "2".parse().unwrap());
        book.set_level(Side::Bid, "100.00".parse().unwrap(), "3".parse().unwrap());
        let bids: Vec<String> = book
            .levels(Side::Bid)
            .map(|(p, s)| format!("{p}x{s}"))
            .collect();
        assert_eq!(bids, ["100x3", "99.95x2"]);
        assert_eq!(
            book.size_at(Side::Bid, "99.950".parse().unwrap()).mantissa,
            2
        );
        assert!(book.size_at(Side::Bid, "99.951".parse().unwrap()).is_zero());
    }

    /// The ladder against an ordered map, on random deltas clustered near a moving touch
    /// with outliers far away, mixed scales, and clears.
    #[test]
    fn ladder_matches_an_ordered_map() {
        matches_an_ordered_map(12, 3, 60, false);
    }

    /// The same where the touch moves by thousands of ticks (the window follows it),
    /// levels spread wider than the window (many live in the map), and a finer tick
    /// appears part-way (every key moves to another slot).
    #[test]
    fn ladder_matches_an_ordered_map_when_the_touch_travels() {
        matches_an_ordered_map(13, 60, 3_000, true);
    }

    fn matches_an_ordered_map(seed: u64, drift: i64, spread: i64, finer_tick: bool) {
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut book = L2Book::new();
        let mut bids: BTreeMap<Fixed, Fixed> = BTreeMap::new();
        let mut asks: BTreeMap<Fixed, Fixed> = BTreeMap::new();
        let mut mid: i64 = 600_000;
        for step in 0..40_000 {
            mid += rng.gen_range(-drift..=drift);
            let side = if rng.gen_bool(0.5) {
                Side::Bid
            } else {
                Side::Ask
            };
            let distance = if rng.gen_bool(0.01) {
                rng.gen_range(1..500_000)
            } else {
                rng.gen_range(1..spread)
            };
            let tick = match side {
                Side::Bid => mid - distance,
                _ => mid + distance,
            };
            // Tick 0.1 written at scale 1, sometimes at scale 2; past step 20,000 of
            // the finer-tick case, sometimes at 0.05.
            let price = if finer_tick && step > 20_000 && rng.gen_bool(0.05) {
                Fixed::new(tick * 10 + 5, 2)
            } else if rng.gen_bool(0.1) {
                Fixed::new(tick * 10, 2)
            } else {
                Fixed::new(tick, 1)
            };
            let size = if rng.gen_bool(0.4) {
                Fixed::ZERO
            } else {
                Fixed::new(rng.gen_range(1..1000), 3)
            };
            let map = if side == Side::Bid {
                &mut bids
            } else {
                &mut asks
            };
            // An ordered map keyed by value keeps the first key's digits, like the book.
            let expected_prev = map.get(&price).copied().unwrap_or(Fixed::ZERO);
            if size.is_zero() {
                map.remove(&price);
            } else if let Some(s) = map.get_mut(&price) {
                *s = size;
            } else {
                map.insert(price, size);
            }
            let delta = BookDelta {
                side,
                price,
                size,
                flags: Flags::LAST,
            };
            let prev = book.apply_with_previous(&delta);
            assert_eq!(prev.to_string(), expected_prev.to_string(), "step {step}");
            let best_bid = bids.iter().next_back().map(|(p, s)| (*p, *s));
            let best_ask = asks.iter().next().map(|(p, s)| (*p, *s));
            assert_eq!(
                format!("{:?}", book.best_bid()),
                format!("{best_bid:?}"),
                "step {step}"
            );
            assert_eq!(format!("{:?}", book.best_ask()), format!("{best_ask:?}"));
            if step % 997 == 0 {
                let want: Vec<(Fixed, Fixed)> = bids.iter().rev().map(|(p, s)| (*p, *s)).collect();
                let got: Vec<(Fixed, Fixed)> = book.levels(Side::Bid).collect();
                assert_eq!(format!("{got:?}"), format!("{want:?}"));
                let want: Vec<(Fixed, Fixed)> =
                    asks.iter().take(7).map(|(p, s)| (*p, *s)).collect();
                let got: Vec<(Fixed, Fixed)> = book.levels(Side::Ask).take(7).collect();
                assert_eq!(format!("{got:?}"), format!("{want:?}"));
                assert_eq!(book.depth(), (bids.len(), asks.len()));
            }
            if step % 9_001 == 0 {
                book.clear();
                bids.clear();
                asks.clear();
            }
        }
    }
}
