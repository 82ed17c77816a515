//! Instruments inside the simulated exchange: each (venue, symbol) gets a small id, the
//! index of its market in the exchange's `Vec`, so the per-event path indexes a vector
//! instead of comparing or hashing names. Names stay at the edges (outputs, queries).

use std::sync::Arc;

// Fx: keys here are small and never attacker-chosen.
use rustc_hash::FxHashMap as HashMap;

/// (venue, symbol) ↔ id, ids dense from 0 in order of first sight.
#[derive(Debug, Default)]
pub(super) struct Instruments {
    by_name: HashMap<Arc<str>, HashMap<Arc<str>, usize>>,
    /// The pair an event was last looked up by, with its id. Consecutive events nearly
    /// always carry the same shared venue and symbol strings, so the lookup is two
    /// pointer compares. The names are held, so their addresses cannot be reused by
    /// other strings while cached.
    last: Option<(Arc<str>, Arc<str>, usize)>,
}

impl Instruments {
    /// The id of `venue`/`symbol`, if known.
    pub(super) fn find(&self, venue: &str, symbol: &str) -> Option<usize> {
        self.by_name.get(venue)?.get(symbol).copied()
    }

    /// [`Instruments::find`] for an event's shared names: by pointer when they are the
    /// last pair looked up.
    #[inline]
    pub(super) fn find_shared(&mut self, venue: &Arc<str>, symbol: &Arc<str>) -> Option<usize> {
        if let Some((v, s, id)) = &self.last
            && Arc::ptr_eq(v, venue)
            && Arc::ptr_eq(s, symbol)
        {
            return Some(*id);
        }
        self.find_and_remember(venue, symbol)
    }

    /// [`Instruments::find_shared`] by name, remembering the pair.
    #[inline(never)]
    fn find_and_remember(&mut self, venue: &Arc<str>, symbol: &Arc<str>) -> Option<usize> {
        let id = self.find(venue, symbol)?;
        self.last = Some((venue.clone(), symbol.clone(), id));
        Some(id)
    }

    /// Registers a new instrument under the next id (the caller checked it is new).
    pub(super) fn add(&mut self, venue: Arc<str>, symbol: Arc<str>, id: usize) {
        self.by_name.entry(venue).or_default().insert(symbol, id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_found_by_name_and_by_the_last_shared_pair() {
        let mut ids = Instruments::default();
        let (v, s, t): (Arc<str>, Arc<str>, Arc<str>) = ("v".into(), "S".into(), "T".into());
        ids.add(v.clone(), s.clone(), 0);
        ids.add(v.clone(), t.clone(), 1);
        assert_eq!(ids.find("v", "S"), Some(0));
        assert_eq!(ids.find("v", "U"), None);
        assert_eq!(ids.find_shared(&v, &t), Some(1));
        assert_eq!(ids.find_shared(&v, &t), Some(1), "cached");
        assert_eq!(ids.find_shared(&Arc::from("v"), &Arc::from("S")), Some(0));
        assert_eq!(ids.find_shared(&v, &Arc::from("U")), None);
    }
}
