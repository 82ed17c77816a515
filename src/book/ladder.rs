//! One side of an [`L2Book`](super::L2Book): price levels keyed by integer price, the
//! best one tracked.
//!
//! Levels near the best price live in a window indexed by tick (slot `i` holds the level
//! `i` ticks above the window's first key), the others in a hash map. Venues update
//! levels thousands deep, at random, on every message: a hash lookup per delta misses
//! the caches once or twice (the map of a few thousand levels is larger than L1), while
//! most deltas land within a few hundred ticks of the touch, where neighbouring levels
//! share cache lines and the window is read without hashing. Ordered access walks the
//! window slot by slot.

use rustc_hash::FxHashMap;

use crate::event::Fixed;

/// Slots in a ladder's window: 4,096 ticks (64 KiB of 16-byte slots), centred on the
/// best price when it is built. BTCUSDT at tick 0.1 keeps ±204.8 USDT around the touch
/// in it.
const WINDOW: usize = 4096;

/// Probes a best-level search makes before it scans every level instead.
const BEST_PROBES: usize = 64;

/// `price_scale` of an empty window slot (no decimal scale reaches it).
const EMPTY: u8 = u8::MAX;

/// One level, 16 bytes: its size, and the scale of its price as first given (the key
/// holds the price's digits).
#[derive(Clone, Copy, Debug)]
pub(super) struct Level {
    /// The size's mantissa (units of 10^-`size_scale`).
    size: i64,
    /// The size's decimal scale.
    size_scale: u8,
    /// The decimal scale the level's price was first given at: the price is the key
    /// divided by 10^(ladder scale − `price_scale`), which is exact (the key is that
    /// price's mantissa multiplied by the same power). [`EMPTY`] in an empty slot.
    price_scale: u8,
}

impl Level {
    const VACANT: Level = Level {
        size: 0,
        size_scale: 0,
        price_scale: EMPTY,
    };

    fn new(price: Fixed, size: Fixed) -> Level {
        Level {
            size: size.mantissa,
            size_scale: size.scale,
            price_scale: price.scale,
        }
    }

    fn size(self) -> Fixed {
        Fixed::new(self.size, self.size_scale)
    }

    fn is_vacant(self) -> bool {
        self.price_scale == EMPTY
    }
}

/// One side of the book. Prices are keyed as integers at the side's scale (the largest
/// decimal scale seen), so `100`, `100.0` and `100.00` are one level.
///
/// Invariant: every level whose key falls in the window's range lives in the window;
/// every key is `anchor` plus a multiple of `step`, so no key falls between two slots.
#[derive(Clone, Debug, Default)]
pub(super) struct Ladder {
    /// Levels at keys `base + i × step`, `i` in `0..WINDOW`; empty until the tick is
    /// known (two distinct prices seen) and a best price exists.
    window: Vec<Level>,
    /// Key of the window's first slot.
    base: i64,
    /// Keys the window spans: `step × WINDOW`.
    span: u64,
    /// ⌈2^64 / `step`⌉ when 1 < `step` ≤ 2^20 (then `span` < 2^32): divides a distance
    /// in the window by the tick with a multiplication (Lemire et al., "Faster
    /// remainder by direct computation", 2019: exact for 32-bit dividends); else 0.
    magic: u64,
    /// Levels held in the window.
    in_window: usize,
    /// Levels outside the window, by key.
    outside: FxHashMap<i64, Level>,
    /// Always empty: a second map whose allocation [`Ladder::recentre`] sorts the levels
    /// into, so following the price allocates nothing once both maps have grown.
    spare: FxHashMap<i64, Level>,
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

impl Ladder {
    /// `price` as a key at the ladder's scale (saturating: prices beyond ±9.2e18 units of
    /// the finest scale seen would share a key).
    pub(super) fn key(&self, price: Fixed) -> i64 {
        if price.scale == self.scale {
            return price.mantissa;
        }
        let up = u32::from(self.scale.saturating_sub(price.scale));
        price.mantissa.saturating_mul(10i64.saturating_pow(up))
    }

    /// The tick in key units (zero while unknown).
    pub(super) fn step(&self) -> i64 {
        self.step
    }

    /// Key of the best level, if any.
    pub(super) fn best(&self) -> Option<i64> {
        self.best
    }

    /// Number of levels.
    pub(super) fn len(&self) -> usize {
        self.in_window + self.outside.len()
    }

    /// Every level's key, in no order.
    pub(super) fn keys(&self) -> impl Iterator<Item = i64> + '_ {
        let (base, step) = (self.base, self.step);
        (self.window.iter().enumerate())
            .filter(|(_, l)| !l.is_vacant())
            .map(move |(i, _)| base + i as i64 * step)
            .chain(self.outside.keys().copied())
    }

    /// The window slot of `key`, if the window covers it.
    #[inline]
    fn slot(&self, key: i64) -> Option<usize> {
        if self.window.is_empty() {
            return None;
        }
        let d = key.checked_sub(self.base)?;
        if d < 0 || d as u64 >= self.span {
            return None;
        }
        let d = d as u64;
        // Ticks in key units are often 1 (the tick is the last decimal): no division.
        let i = if self.step == 1 {
            d
        } else if self.magic != 0 {
            // d < 2^32: d is a multiple of the tick iff d × magic (mod 2^64) < magic.
            if self.magic.wrapping_mul(d) > self.magic - 1 {
                return None;
            }
            ((u128::from(self.magic) * u128::from(d)) >> 64) as u64
        } else if d.is_multiple_of(self.step as u64) {
            d / self.step as u64
        } else {
            return None;
        };
        Some(i as usize)
    }

    /// The level at `key`, if any.
    #[inline]
    pub(super) fn get(&self, key: i64) -> Option<Level> {
        match self.slot(key) {
            Some(i) => Some(self.window[i]).filter(|l| !l.is_vacant()),
            None if self.outside.is_empty() => None,
            None => self.outside.get(&key).copied(),
        }
    }

    /// The level at `key` as (price as first given, size). A key that saturated (a
    /// price beyond ±9.2e18 units of the finest scale seen) reads back as the saturated
    /// value at the price's scale.
    pub(super) fn level(&self, key: i64, level: Level) -> (Fixed, Fixed) {
        let price = if level.price_scale == self.scale {
            key
        } else {
            key / 10i64.saturating_pow(u32::from(self.scale - level.price_scale))
        };
        (Fixed::new(price, level.price_scale), level.size())
    }

    /// Moves every level of the window to the map and drops the window.
    fn spill(&mut self) {
        let (base, step) = (self.base, self.step);
        for (i, level) in self.window.drain(..).enumerate() {
            if !level.is_vacant() {
                self.outside.insert(base + i as i64 * step, level);
            }
        }
        self.in_window = 0;
    }

    /// Rebuilds the window around `centre` (a key on the grid), taking from the map
    /// every level it covers.
    fn recentre(&mut self, centre: i64) {
        self.spill();
        if self.step <= 0 {
            return;
        }
        let half = (WINDOW / 2) as i64;
        let Some(base) = self
            .step
            .checked_mul(half)
            .and_then(|h| centre.checked_sub(h))
        else {
            return;
        };
        let Some(span) = self.step.checked_mul(WINDOW as i64) else {
            return;
        };
        if base.checked_add(span).is_none() {
            return;
        }
        self.base = base;
        self.span = span as u64;
        self.magic = if self.step > 1 && self.step <= 1 << 20 {
            u64::MAX / self.step as u64 + 1
        } else {
            0
        };
        self.window.resize(WINDOW, Level::VACANT);
        let mut moved = 0;
        let mut levels = std::mem::take(&mut self.spare);
        std::mem::swap(&mut levels, &mut self.outside);
        for (key, level) in levels.drain() {
            match self.slot(key) {
                Some(i) => {
                    self.window[i] = level;
                    moved += 1;
                }
                None => {
                    self.outside.insert(key, level);
                }
            }
        }
        self.spare = levels;
        self.in_window = moved;
    }

    /// Rescales every key to `scale` (a price with more decimals than seen so far).
    fn rescale(&mut self, scale: u8) {
        self.spill();
        let factor = 10i64.saturating_pow(u32::from(scale - self.scale));
        self.scale = scale;
        self.outside = self
            .outside
            .drain()
            .map(|(k, v)| (k.saturating_mul(factor), v))
            .collect();
        self.best = self.best.map(|k| k.saturating_mul(factor));
        self.anchor = self.anchor.map(|k| k.saturating_mul(factor));
        self.step = self.step.saturating_mul(factor);
        self.follow_best();
    }

    /// True when key `a` is a better price than key `b` on this side.
    pub(super) fn better(a: i64, b: i64, bids: bool) -> bool {
        if bids { a > b } else { a < b }
    }

    /// Sets the level at `price` to `size` (zero removes it); returns the size it had
    /// (zero if none).
    pub(super) fn set(&mut self, price: Fixed, size: Fixed, bids: bool) -> Fixed {
        if price.scale > self.scale {
            self.rescale(price.scale);
        }
        let key = self.key(price);
        if let Some(i) = self.slot(key) {
            // Near the touch: no hashing, and neighbouring levels share cache lines.
            let level = &mut self.window[i];
            let vacant = level.is_vacant();
            if size.is_zero() {
                if vacant {
                    return Fixed::ZERO;
                }
                let prev = level.size();
                *level = Level::VACANT;
                self.in_window -= 1;
                if self.best == Some(key) {
                    self.best = self.next_best(key, bids);
                    self.follow_best();
                }
                return prev;
            }
            if !vacant {
                let prev = level.size();
                (level.size, level.size_scale) = (size.mantissa, size.scale);
                return prev;
            }
            // A key in the window is on the grid: the tick stays what it was.
            *level = Level::new(price, size);
            self.in_window += 1;
            if self.best.is_none_or(|b| Ladder::better(key, b, bids)) {
                self.best = Some(key);
            }
            return Fixed::ZERO;
        }
        self.set_outside(key, price, size, bids)
    }

    /// [`Ladder::set`] for a key the window does not cover.
    fn set_outside(&mut self, key: i64, price: Fixed, size: Fixed, bids: bool) -> Fixed {
        if size.is_zero() {
            let Some(prev) = self.outside.remove(&key) else {
                return Fixed::ZERO;
            };
            if self.best == Some(key) {
                self.best = self.next_best(key, bids);
                self.follow_best();
            }
            return prev.size();
        }
        if let Some(level) = self.outside.get_mut(&key) {
            let prev = level.size();
            (level.size, level.size_scale) = (size.mantissa, size.scale);
            return prev;
        }
        self.outside.insert(key, Level::new(price, size));
        match self.anchor {
            None => self.anchor = Some(key),
            Some(anchor) => {
                let distance = key.abs_diff(anchor).min(i64::MAX as u64) as i64;
                if self.step == 0 || distance % self.step != 0 {
                    // A finer tick: the window's slots no longer map to keys one to
                    // one, so its levels go to the map (by the old tick) first.
                    self.spill();
                    self.step = gcd(self.step, distance);
                }
            }
        }
        if self.best.is_none_or(|b| Ladder::better(key, b, bids)) {
            self.best = Some(key);
        }
        self.follow_best();
        Fixed::ZERO
    }

    /// Rebuilds the window around the best level when the window does not hold it (the
    /// tick just became known, the price moved half a window, or a finer tick appeared).
    fn follow_best(&mut self) {
        if let Some(best) = self.best
            && self.step > 0
            && self.slot(best).is_none()
        {
            self.recentre(best);
        }
    }

    /// The best key after `removed` (the old best) left: within the window, the nearest
    /// level behind it (no level outside the window is better than one inside, as the
    /// window covers every key of its range); otherwise a few tick-sized probes outward,
    /// then a scan of every level.
    fn next_best(&self, removed: i64, bids: bool) -> Option<i64> {
        if self.len() == 0 {
            return None;
        }
        if let Some(i) = self.slot(removed) {
            let found = if bids {
                self.window[..i].iter().rposition(|l| !l.is_vacant())
            } else {
                self.window[i + 1..]
                    .iter()
                    .position(|l| !l.is_vacant())
                    .map(|j| i + 1 + j)
            };
            if let Some(j) = found {
                return Some(self.base + j as i64 * self.step);
            }
            // Nothing behind it in the window: the best is in the map (all of it lies
            // behind the window on this side, the better side being empty).
            let keys = self.outside.keys().copied();
            return if bids { keys.max() } else { keys.min() };
        }
        let mut key = Some(removed);
        for _ in 0..if self.step > 0 { BEST_PROBES } else { 0 } {
            key = match key {
                Some(k) if bids => k.checked_sub(self.step),
                Some(k) => k.checked_add(self.step),
                None => break,
            };
            if let Some(k) = key
                && self.get(k).is_some()
            {
                return key;
            }
        }
        let keys = self.keys();
        if bids { keys.max() } else { keys.min() }
    }

    /// Best key as a price at the ladder's scale.
    pub(super) fn best_price(&self) -> Option<Fixed> {
        self.best.map(|k| Fixed::new(k, self.scale))
    }

    /// Best level as (price as first given, size).
    pub(super) fn best_level(&self) -> Option<(Fixed, Fixed)> {
        let key = self.best?;
        Some(self.level(key, self.get(key)?))
    }

    /// Size at exactly `price` (zero if none).
    pub(super) fn size_at(&self, price: Fixed) -> Fixed {
        let key = if price.scale > self.scale {
            // More decimals than any level: only a value with trailing zeros can match.
            match price.rescale(self.scale) {
                Some(p) => p.mantissa,
                None => return Fixed::ZERO,
            }
        } else {
            self.key(price)
        };
        self.get(key).map_or(Fixed::ZERO, Level::size)
    }

    /// Removes every level (the scale, tick and window placement stay).
    pub(super) fn clear(&mut self) {
        if self.in_window > 0 {
            self.window.fill(Level::VACANT);
        }
        self.in_window = 0;
        self.outside.clear();
        self.best = None;
    }
}

fn gcd(mut a: i64, mut b: i64) -> i64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a.abs()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The window's slot arithmetic (the multiplication standing in for a division)
    /// against plain division, for ticks that take each path.
    #[test]
    fn slots_match_plain_division() {
        for step in [
            1i64,
            2,
            3,
            7,
            10,
            25,
            1_000,
            (1 << 20) - 1,
            1 << 20,
            (1 << 20) + 1,
        ] {
            let mut ladder = Ladder::default();
            ladder.set(Fixed::new(1_000_000_000, 0), Fixed::new(1, 0), true);
            ladder.set(Fixed::new(1_000_000_000 - step, 0), Fixed::new(1, 0), true);
            assert_eq!(ladder.step, step);
            assert_eq!(ladder.window.len(), WINDOW, "step {step}");
            let (base, span) = (ladder.base, ladder.span as i64);
            let probes = (-3..=3)
                .chain([
                    span / 2 - 1,
                    span / 2,
                    span / 2 + 1,
                    span - step,
                    span - 1,
                    span,
                ])
                .chain((0..2_000).map(|k| k * (span / 2_000 + 1)));
            for d in probes {
                let want = (d >= 0 && d < span && d % step == 0).then_some((d / step) as usize);
                assert_eq!(ladder.slot(base + d), want, "step {step}, distance {d}");
            }
        }
    }
}
