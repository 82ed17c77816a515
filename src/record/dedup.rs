//! Drops the second copy of an event that arrives from two redundant publishers.
//!
//! The key is a 64-bit xxh3 hash of what the *venue* said, never of what a publisher
//! added: venue, symbol, kind, venue sequence ids and the body. `ts_recv` and `pub_seq`
//! differ between publishers and are left out. When the venue gives no sequence id the
//! exchange timestamp joins the key, so identical prints at different times stay apart.
//! Memory is bounded: the window remembers the last `capacity` keys.

use std::collections::VecDeque;

use xxhash_rust::xxh3::xxh3_64;

use crate::event::{Body, Event};

/// The dedup key of an event.
pub fn key(event: &Event) -> u64 {
    // One-shot hashing of a stack buffer: streaming xxh3 costs more per call than the
    // few bytes it hashes here.
    let mut buf = KeyBytes::default();
    buf.push(&[event.kind() as u8]);
    buf.push(event.venue.as_bytes());
    buf.push(&[0]);
    buf.push(event.symbol.as_bytes());
    buf.push(&[0]);
    buf.push(&event.venue_seq.map_or(u64::MAX, |s| s).to_le_bytes());
    buf.push(&event.prev_venue_seq.map_or(u64::MAX, |s| s).to_le_bytes());
    if event.venue_seq.is_none() {
        buf.push(&event.ts_event.to_le_bytes());
    }
    match &event.body {
        Body::Book(b) => {
            buf.push(&[b.side as u8, b.flags.0, b.price.scale, b.size.scale]);
            buf.push(&b.price.mantissa.to_le_bytes());
            buf.push(&b.size.mantissa.to_le_bytes());
        }
        Body::Trade(t) => {
            buf.push(&[t.aggressor as u8, t.price.scale, t.size.scale]);
            buf.push(&t.price.mantissa.to_le_bytes());
            buf.push(&t.size.mantissa.to_le_bytes());
            buf.push(t.trade_id.as_bytes());
        }
        Body::Gap(g) => {
            buf.push(g.reason.name().as_bytes());
            buf.push(&g.missing.unwrap_or(u64::MAX).to_le_bytes());
            buf.push(&event.ts_event.to_le_bytes());
        }
        Body::Heartbeat(_) | Body::EndOfStream(_) => {}
    }
    xxh3_64(buf.bytes())
}

/// The bytes a key hashes: on the stack unless names or trade ids are unusually long.
struct KeyBytes {
    stack: [u8; 160],
    len: usize,
    heap: Vec<u8>,
}

impl Default for KeyBytes {
    fn default() -> KeyBytes {
        KeyBytes {
            stack: [0; 160],
            len: 0,
            heap: Vec::new(),
        }
    }
}

impl KeyBytes {
    fn push(&mut self, bytes: &[u8]) {
        if self.heap.is_empty() && self.len + bytes.len() <= self.stack.len() {
            self.stack[self.len..self.len + bytes.len()].copy_from_slice(bytes);
            self.len += bytes.len();
        } else {
            if self.heap.is_empty() {
                self.heap.extend_from_slice(&self.stack[..self.len]);
            }
            self.heap.extend_from_slice(bytes);
        }
    }

    fn bytes(&self) -> &[u8] {
        if self.heap.is_empty() {
            &self.stack[..self.len]
        } else {
            &self.heap
        }
    }
}

/// Remembers the last `capacity` keys exactly.
///
/// An open-addressing table of bare keys with linear probing, twice as large as the
/// window, and the keys in arrival order to know which one leaves. A general hash set
/// touches a control byte and a bucket in different places on every insert and every
/// removal; this touches one slot (and its neighbours, on the same cache line mostly)
/// for each, which is what a window far larger than the CPU caches pays for.
pub struct DedupWindow {
    /// `EMPTY` or a key; a key equal to `EMPTY` is stored as `EMPTY_STANDIN`.
    slots: Vec<u64>,
    mask: usize,
    order: VecDeque<u64>,
    capacity: usize,
}

const EMPTY: u64 = 0;
/// Keys are hashes, so mapping the one that would mean "empty" onto another value costs
/// no more than any other 64-bit collision.
const EMPTY_STANDIN: u64 = 0x9e37_79b9_7f4a_7c15;

impl DedupWindow {
    /// A window remembering the last `capacity` events (about 24 bytes each).
    pub fn new(capacity: usize) -> DedupWindow {
        let capacity = capacity.max(1);
        // Inserting happens before the oldest key leaves, so `capacity + 1` keys must
        // fit with an empty slot to spare, or probing would never end.
        let size = (capacity * 2 + 2).next_power_of_two();
        DedupWindow {
            slots: vec![EMPTY; size],
            mask: size - 1,
            order: VecDeque::with_capacity(capacity.min(1 << 22)),
            capacity,
        }
    }

    /// True the first time a key is offered, false for every repeat inside the window.
    pub fn first_time(&mut self, key: u64) -> bool {
        let key = if key == EMPTY { EMPTY_STANDIN } else { key };
        let mut i = self.home(key);
        loop {
            match self.slots[i] {
                EMPTY => break,
                k if k == key => return false,
                _ => i = (i + 1) & self.mask,
            }
        }
        self.slots[i] = key;
        self.order.push_back(key);
        if self.order.len() > self.capacity
            && let Some(old) = self.order.pop_front()
        {
            self.remove(old);
        }
        true
    }

    fn home(&self, key: u64) -> usize {
        // The high bits: the low ones of an xxh3 value are as good, but a key made of a
        // plain number (tests) is better spread this way.
        (key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as usize & self.mask
    }

    /// Removes `key` and shifts later members of its probe run back, so no run is cut.
    fn remove(&mut self, key: u64) {
        let mut i = self.home(key);
        while self.slots[i] != key {
            if self.slots[i] == EMPTY {
                return;
            }
            i = (i + 1) & self.mask;
        }
        let mut hole = i;
        let mut j = i;
        loop {
            j = (j + 1) & self.mask;
            let k = self.slots[j];
            if k == EMPTY {
                break;
            }
            // `k` may fill the hole unless its home lies cyclically in (hole, j].
            let home = self.home(k);
            let stays = if hole <= j {
                hole < home && home <= j
            } else {
                hole < home || home <= j
            };
            if !stays {
                self.slots[hole] = k;
                hole = j;
            }
        }
        self.slots[hole] = EMPTY;
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

    #[test]
    fn window_matches_a_plain_fifo_set_on_random_keys() {
        use rand::{Rng, SeedableRng};
        // Few distinct keys and a small table: long probe runs, wrap-around and many
        // removals from the middle of runs.
        for (capacity, distinct) in [(1, 3), (5, 12), (64, 200), (1000, 1500)] {
            let mut rng = rand::rngs::StdRng::seed_from_u64(capacity as u64);
            let mut window = DedupWindow::new(capacity);
            let mut fifo: VecDeque<u64> = VecDeque::new();
            for _ in 0..20_000 {
                let k = rng.gen_range(0..distinct as u64);
                let expected = !fifo.contains(&k);
                assert_eq!(
                    window.first_time(k),
                    expected,
                    "key {k}, capacity {capacity}"
                );
                if expected {
                    fifo.push_back(k);
                    if fifo.len() > capacity {
                        fifo.pop_front();
                    }
                }
            }
        }
    }
}
