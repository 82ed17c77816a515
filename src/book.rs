//! An L2 order book rebuilt from [`BookDelta`]s: used by strategies, the simulated
//! exchange, feed handlers and `ticktape book`.
//!
//! Owns level storage and the snapshot/last-level protocol. Never does I/O.

use rustc_hash::FxHashMap;

use crate::event::{BookDelta, Fixed, Flags, Side};

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
        let left = if side == Side::None {
            0
        } else {
            ladder.levels.len()
        };
        Levels {
            ladder,
            bids,
            next: ladder.best,
            left,
            probes: 4 * left + 16,
            rest: None,
        }
    }

    /// Number of levels on each side: `(bids, asks)`.
    pub fn depth(&self) -> (usize, usize) {
        (self.bids.levels.len(), self.asks.levels.len())
    }
}

/// One side of the book. Prices are keyed as integers at the side's scale (the largest
/// decimal scale seen), so `100`, `100.0` and `100.00` are one level.
#[derive(Clone, Debug, Default)]
struct Ladder {
    /// Key → (price as first given, size).
    levels: FxHashMap<i64, (Fixed, Fixed)>,
    /// Decimal scale of the keys.
    scale: u8,
    /// Key of the best level, if any.
    best: Option<i64>,
    /// A key every key is congruent to modulo `step`.
    anchor: Option<i64>,
    /// Greatest common divisor of the distances between keys seen (the tick, in key
    /// units); zero until two distinct prices were seen.
    step: i64,
}

/// Probes a best-level search makes before it scans every level instead.
const BEST_PROBES: usize = 64;

impl Ladder {
    /// `price` as a key at the ladder's scale (saturating: prices beyond ±9.2e18 units of
    /// the finest scale seen would share a key).
    fn key(&self, price: Fixed) -> i64 {
        let up = u32::from(self.scale.saturating_sub(price.scale));
        price.mantissa.saturating_mul(10i64.saturating_pow(up))
    }

    /// Rescales every key to `scale` (a price with more decimals than seen so far).
    fn rescale(&mut self, scale: u8) {
        let factor = 10i64.saturating_pow(u32::from(scale - self.scale));
        self.scale = scale;
        self.levels = self
            .levels
            .drain()
            .map(|(k, v)| (k.saturating_mul(factor), v))
            .collect();
        self.best = self.best.map(|k| k.saturating_mul(factor));
        self.anchor = self.anchor.map(|k| k.saturating_mul(factor));
        self.step = self.step.saturating_mul(factor);
    }

    /// True when key `a` is a better price than key `b` on this side.
    fn better(a: i64, b: i64, bids: bool) -> bool {
        if bids { a > b } else { a < b }
    }

    fn set(&mut self, price: Fixed, size: Fixed, bids: bool) -> Fixed {
        if price.scale > self.scale {
            self.rescale(price.scale);
        }
        let key = self.key(price);
        if size.is_zero() {
            let Some((_, prev)) = self.levels.remove(&key) else {
                return Fixed::ZERO;
            };
            if self.best == Some(key) {
                self.best = self.next_best(key, bids);
            }
            return prev;
        }
        if let Some(level) = self.levels.get_mut(&key) {
            return std::mem::replace(&mut level.1, size);
        }
        self.levels.insert(key, (price, size));
        match self.anchor {
            None => self.anchor = Some(key),
            Some(anchor) => {
                let distance = key.abs_diff(anchor).min(i64::MAX as u64) as i64;
                if self.step == 0 || distance % self.step != 0 {
                    self.step = gcd(self.step, distance);
                }
            }
        }
        if self.best.is_none_or(|b| Ladder::better(key, b, bids)) {
            self.best = Some(key);
        }
        Fixed::ZERO
    }

    /// The best key after `removed` (the old best) left: a few tick-sized probes
    /// outward, then a scan of every level.
    fn next_best(&self, removed: i64, bids: bool) -> Option<i64> {
        if self.levels.is_empty() {
            return None;
        }
        let mut key = Some(removed);
        for _ in 0..if self.step > 0 { BEST_PROBES } else { 0 } {
            key = match key {
                Some(k) if bids => k.checked_sub(self.step),
                Some(k) => k.checked_add(self.step),
                None => break,
            };
            if key.is_some_and(|k| self.levels.contains_key(&k)) {
                return key;
            }
        }
        let keys = self.levels.keys().copied();
        if bids { keys.max() } else { keys.min() }
    }

    fn best_price(&self) -> Option<Fixed> {
        self.best.map(|k| Fixed::new(k, self.scale))
    }

    fn best_level(&self) -> Option<(Fixed, Fixed)> {
        self.best.and_then(|k| self.levels.get(&k).copied())
    }

    fn size_at(&self, price: Fixed) -> Fixed {
        let key = if price.scale > self.scale {
            // More decimals than any level: only a value with trailing zeros can match.
            match price.rescale(self.scale) {
                Some(p) => p.mantissa,
                None => return Fixed::ZERO,
            }
        } else {
            self.key(price)
        };
        self.levels.get(&key).map_or(Fixed::ZERO, |l| l.1)
    }

    fn clear(&mut self) {
        self.levels.clear();
        self.best = None;
    }
}

fn gcd(mut a: i64, mut b: i64) -> i64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a.abs()
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
        if self.rest.is_none() && self.ladder.step > 0 {
            while self.probes > 0 {
                let key = self.next?;
                self.probes -= 1;
                self.next = if self.bids {
                    key.checked_sub(self.ladder.step)
                } else {
                    key.checked_add(self.ladder.step)
                };
                if let Some(level) = self.ladder.levels.get(&key) {
                    self.left -= 1;
                    return Some(*level);
                }
            }
        }
        if self.rest.is_none() {
            // From `next` on (inclusive), worst first.
            let bids = self.bids;
            let from = self.next;
            let mut rest: Vec<i64> = self
                .ladder
                .levels
                .keys()
                .copied()
                .filter(|&k| from.is_some_and(|f| k == f || Ladder::better(f, k, bids)))
                .collect();
            rest.sort_unstable_by(|a, b| if bids { a.cmp(b) } else { b.cmp(a) });
            self.rest = Some(rest);
        }
        let key = self.rest.as_mut()?.pop()?;
        self.left -= 1;
        self.ladder.levels.get(&key).copied()
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
        let mut rng = SmallRng::seed_from_u64(12);
        let mut book = L2Book::new();
        let mut bids: BTreeMap<Fixed, Fixed> = BTreeMap::new();
        let mut asks: BTreeMap<Fixed, Fixed> = BTreeMap::new();
        let mut mid: i64 = 600_000;
        for step in 0..40_000 {
            mid += rng.gen_range(-3..=3);
            let side = if rng.gen_bool(0.5) {
                Side::Bid
            } else {
                Side::Ask
            };
            let distance = if rng.gen_bool(0.01) {
                rng.gen_range(1..500_000)
            } else {
                rng.gen_range(1..60)
            };
            let tick = match side {
                Side::Bid => mid - distance,
                _ => mid + distance,
            };
            // Tick 0.1 written at scale 1, sometimes at scale 2.
            let price = if rng.gen_bool(0.1) {
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
