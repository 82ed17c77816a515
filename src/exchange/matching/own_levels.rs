//! Own resting orders of one side of one instrument, by price: the ids at each price in
//! arrival order.
//!
//! A vector of (price, ids) sorted by price, not a tree: every book delta asks whether
//! own orders rest at its price, and a strategy keeps few price levels (a market maker
//! one or two per side), so a binary search over a short contiguous vector answers in a
//! few compares where a `BTreeMap` walked its nodes. Prices compare by value (`100.0` is
//! the level `100`, which keeps the digits it was created with), as the map did.
//! Emptied id lists are kept for the next new level, so quoting does not allocate.

use crate::event::Fixed;

#[derive(Debug, Default)]
pub(super) struct OwnLevels {
    /// Ascending by price, prices distinct by value, every id list non-empty.
    levels: Vec<(Fixed, Vec<u64>)>,
    /// Empty id lists of removed levels, reused.
    spare: Vec<Vec<u64>>,
}

impl OwnLevels {
    #[inline]
    fn find(&self, price: Fixed) -> Result<usize, usize> {
        self.levels.binary_search_by(|(p, _)| p.cmp(&price))
    }

    pub(super) fn is_empty(&self) -> bool {
        self.levels.is_empty()
    }

    /// The ids resting at `price`, oldest first (empty if none).
    #[inline]
    pub(super) fn at(&self, price: Fixed) -> &[u64] {
        if self.is_empty() {
            return &[];
        }
        match self.find(price) {
            Ok(i) => &self.levels[i].1,
            Err(_) => &[],
        }
    }

    /// Adds `id` behind the orders already resting at `price`.
    pub(super) fn push(&mut self, price: Fixed, id: u64) {
        match self.find(price) {
            Ok(i) => self.levels[i].1.push(id),
            Err(i) => {
                let mut ids = self.spare.pop().unwrap_or_default();
                ids.push(id);
                self.levels.insert(i, (price, ids));
            }
        }
    }

    /// Removes `id` from `price`, and the level once it holds no id.
    pub(super) fn remove(&mut self, price: Fixed, id: u64) {
        let Ok(i) = self.find(price) else {
            return;
        };
        let ids = &mut self.levels[i].1;
        ids.retain(|&x| x != id);
        if ids.is_empty() {
            let (_, ids) = self.levels.remove(i);
            self.spare.push(ids);
        }
    }

    /// The lowest price.
    pub(super) fn lowest(&self) -> Option<Fixed> {
        self.levels.first().map(|l| l.0)
    }

    /// The highest price.
    pub(super) fn highest(&self) -> Option<Fixed> {
        self.levels.last().map(|l| l.0)
    }

    /// Prices, ascending.
    pub(super) fn prices(&self) -> impl DoubleEndedIterator<Item = Fixed> + '_ {
        self.levels.iter().map(|l| l.0)
    }

    /// Prices at or above `price`, ascending.
    pub(super) fn prices_from(&self, price: Fixed) -> impl DoubleEndedIterator<Item = Fixed> + '_ {
        let start = self.find(price).unwrap_or_else(|i| i);
        self.levels[start..].iter().map(|l| l.0)
    }

    /// Prices at or below `price`, ascending.
    pub(super) fn prices_through(
        &self,
        price: Fixed,
    ) -> impl DoubleEndedIterator<Item = Fixed> + '_ {
        let end = match self.find(price) {
            Ok(i) => i + 1,
            Err(i) => i,
        };
        self.levels[..end].iter().map(|l| l.0)
    }

    /// Every id list, by ascending price.
    pub(super) fn ids(&self) -> impl Iterator<Item = &Vec<u64>> + '_ {
        self.levels.iter().map(|l| &l.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(s: &str) -> Fixed {
        s.parse().unwrap()
    }

    #[test]
    fn levels_stay_sorted_by_value_and_keep_arrival_order() {
        let mut own = OwnLevels::default();
        assert!(own.is_empty() && own.at(f("1")).is_empty());
        own.push(f("101"), 1);
        own.push(f("99.5"), 2);
        own.push(f("100"), 3);
        own.push(f("100.0"), 4); // the same level by value
        assert_eq!(
            own.prices().collect::<Vec<_>>(),
            [f("99.5"), f("100"), f("101")]
        );
        assert_eq!(
            own.prices().nth(1).unwrap().to_string(),
            "100",
            "first digits kept"
        );
        assert_eq!(own.at(f("100.00")), [3, 4]);
        assert_eq!(own.lowest(), Some(f("99.5")));
        assert_eq!(own.highest(), Some(f("101")));
        assert_eq!(
            own.prices_from(f("99.7")).collect::<Vec<_>>(),
            [f("100"), f("101")]
        );
        assert_eq!(own.prices_from(f("100")).count(), 2);
        assert_eq!(
            own.prices_through(f("100")).collect::<Vec<_>>(),
            [f("99.5"), f("100")]
        );
        assert_eq!(own.prices_through(f("99")).count(), 0);
        own.remove(f("100"), 3);
        assert_eq!(own.at(f("100")), [4]);
        own.remove(f("100"), 4);
        own.remove(f("100"), 4); // already gone: nothing happens
        assert_eq!(own.prices().collect::<Vec<_>>(), [f("99.5"), f("101")]);
        own.push(f("102"), 5); // reuses the emptied list
        assert_eq!(own.spare.len(), 0);
        assert_eq!(own.ids().map(Vec::len).sum::<usize>(), 3);
    }
}
