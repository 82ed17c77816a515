//! Drops the second copy of an event that arrives from two redundant publishers.
//!
//! The key is a 64-bit xxh3 hash of what the *venue* said, never of what a publisher
//! added: venue, symbol, kind, venue sequence ids and the body. `ts_recv` and `pub_seq`
//! differ between publishers and are left out. When the venue gives no sequence id the
//! exchange timestamp joins the key, so identical prints at different times stay apart.
//! Memory is bounded: the window remembers the last `capacity` keys.

use std::collections::{HashSet, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

use xxhash_rust::xxh3::Xxh3;

use crate::event::{Body, Event};

/// The key is already a good hash; hashing it again would only cost time.
#[derive(Default)]
struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ b as u64;
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

/// The dedup key of an event.
pub fn key(event: &Event) -> u64 {
    let mut h = Xxh3::new();
    h.update(&[event.kind() as u8]);
    h.update(event.venue.as_bytes());
    h.update(&[0]);
    h.update(event.symbol.as_bytes());
    h.update(&[0]);
    h.update(&event.venue_seq.map_or(u64::MAX, |s| s).to_le_bytes());
    h.update(&event.prev_venue_seq.map_or(u64::MAX, |s| s).to_le_bytes());
    if event.venue_seq.is_none() {
        h.update(&event.ts_event.to_le_bytes());
    }
    match &event.body {
        Body::Book(b) => {
            h.update(&[b.side as u8, b.flags.0, b.price.scale, b.size.scale]);
            h.update(&b.price.mantissa.to_le_bytes());
            h.update(&b.size.mantissa.to_le_bytes());
        }
        Body::Trade(t) => {
            h.update(&[t.aggressor as u8, t.price.scale, t.size.scale]);
            h.update(&t.price.mantissa.to_le_bytes());
            h.update(&t.size.mantissa.to_le_bytes());
            h.update(t.trade_id.as_bytes());
        }
        Body::Gap(g) => {
            h.update(g.reason.name().as_bytes());
            h.update(&g.missing.unwrap_or(u64::MAX).to_le_bytes());
            h.update(&event.ts_event.to_le_bytes());
        }
        Body::Heartbeat(_) | Body::EndOfStream(_) => {}
    }
    h.digest()
}

/// Remembers recent keys.
pub struct DedupWindow {
    seen: HashSet<u64, BuildHasherDefault<IdentityHasher>>,
    order: VecDeque<u64>,
    capacity: usize,
}

impl DedupWindow {
    /// A window remembering the last `capacity` events (about 24 bytes each).
    pub fn new(capacity: usize) -> DedupWindow {
        let capacity = capacity.max(1);
        DedupWindow {
            seen: HashSet::with_capacity_and_hasher(capacity.min(1 << 22), Default::default()),
            order: VecDeque::with_capacity(capacity.min(1 << 22)),
            capacity,
        }
    }

    /// True the first time a key is offered, false for every repeat inside the window.
    pub fn first_time(&mut self, key: u64) -> bool {
        if !self.seen.insert(key) {
            return false;
        }
        self.order.push_back(key);
        if self.order.len() > self.capacity
            && let Some(old) = self.order.pop_front()
        {
            self.seen.remove(&old);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{BookDelta, Flags, Side};

    #[test]
    fn same_venue_content_from_two_publishers_is_one_key() {
        let body = Body::Book(BookDelta {
            side: Side::Bid,
            price: "100.5".parse().unwrap(),
            size: "2".parse().unwrap(),
            flags: Flags::LAST,
        });
        let mut a = crate::wire::event("v", "S", 10, 1, body.clone());
        a.venue_seq = Some(5);
        let mut b = a.clone();
        b.ts_recv += 999;
        b.pub_seq = 77;
        assert_eq!(key(&a), key(&b));
        let mut c = a.clone();
        c.venue_seq = Some(6);
        assert_ne!(key(&a), key(&c));
        let mut w = DedupWindow::new(2);
        assert!(w.first_time(key(&a)));
        assert!(!w.first_time(key(&b)));
        assert!(w.first_time(key(&c)));
        assert!(w.first_time(3));
        // The window forgot the oldest key.
        assert!(w.first_time(key(&a)));
    }
}
