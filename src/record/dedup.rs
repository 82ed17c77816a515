//! Drops the second copy of an event that arrives from two redundant publishers.
//!
//! The key is a 64-bit xxh3 hash of what the *venue* said, never of what a publisher
//! added: venue, symbol, kind, venue sequence ids and the body. `ts_recv` and `pub_seq`
//! differ between publishers and are left out. When the venue gives no sequence id the
//! exchange timestamp joins the key, so identical prints at different times stay apart.
//! Memory is bounded: the window remembers the last `capacity` keys.

use std::sync::Arc;

use xxhash_rust::xxh3::xxh3_64;

use crate::event::{Body, Event};

/// The content key of an event; [`MessagePosition::key`] makes it the dedup key.
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

/// Tells apart copies of one delta that a venue repeats within one message, counted on
/// one publisher's stream.
///
/// A venue message may set the same level to the same size twice: the copies share every
/// field, so content alone would take the second for a duplicate of the first. The n-th
/// copy within its message gets its content key mixed with n (a copy the publisher sends
/// twice, under one publisher sequence number, counts once). Redundant publishers relay
/// a venue message's events in order, so the n-th copy is the n-th copy on each of them,
/// also for a publisher that joins in the middle of a message, unless it joins between
/// two copies (then one copy may be written twice: never a drop).
#[derive(Default)]
pub struct MessagePosition {
    /// The venue message of the last event.
    last: Option<MessageId>,
    /// Content keys seen in the current message: copies so far and the publisher
    /// sequence number of the last one.
    seen: rustc_hash::FxHashMap<u64, (u32, u64)>,
}

/// What events of one venue message share.
struct MessageId {
    venue: Arc<str>,
    symbol: Arc<str>,
    kind: u8,
    venue_seq: Option<u64>,
    /// Tells messages apart only where the venue has no sequence id.
    ts_event: Option<i64>,
}

impl MessageId {
    fn of(event: &Event) -> MessageId {
        MessageId {
            venue: event.venue.clone(),
            symbol: event.symbol.clone(),
            kind: event.kind() as u8,
            venue_seq: event.venue_seq,
            ts_event: event.venue_seq.is_none().then_some(event.ts_event),
        }
    }

    /// True when `event` belongs to this message (compared in place: this runs for
    /// every event, and building its id would clone two names).
    fn holds(&self, event: &Event) -> bool {
        self.kind == event.kind() as u8
            && self.venue_seq == event.venue_seq
            && self.ts_event == event.venue_seq.is_none().then_some(event.ts_event)
            && *self.venue == *event.venue
            && *self.symbol == *event.symbol
    }
}

impl MessagePosition {
    /// The dedup key of `event`, the next event of this publisher.
    pub fn key(&mut self, event: &Event) -> u64 {
        if !self.last.as_ref().is_some_and(|m| m.holds(event)) {
            self.last = Some(MessageId::of(event));
            // A snapshot message can be thousands of events; keep the next clears cheap.
            if self.seen.capacity() > 1024 {
                self.seen = Default::default();
            } else {
                self.seen.clear();
            }
        }
        let content = key(event);
        let (copies, last_pub_seq) = self.seen.entry(content).or_insert((0, u64::MAX));
        // The same publisher sequence number again is the publisher sending one copy
        // twice, not the venue repeating it.
        if *last_pub_seq != event.pub_seq {
            *copies += 1;
            *last_pub_seq = event.pub_seq;
        }
        match *copies {
            1 => content,
            n => {
                let mut mixed = [0u8; 12];
                mixed[..8].copy_from_slice(&content.to_le_bytes());
                mixed[8..].copy_from_slice(&n.to_le_bytes());
                xxh3_64(&mixed)
            }
        }
    }
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
///
/// Both parts are allocated and written once, at creation: the window's memory is all
/// resident from the start and never grows, and no page fault lands on the hot path.
pub struct DedupWindow {
    /// `EMPTY` or a key; a key equal to `EMPTY` is stored as `EMPTY_STANDIN`.
    slots: Slots,
    mask: usize,
    /// The keys in the window in arrival order, a ring: `order[next]` is the next to be
    /// written, and once the ring is full also the oldest key, the next to leave.
    order: Box<[u64]>,
    next: usize,
    /// Keys in the window, up to `order.len()`.
    held: usize,
}

const EMPTY: u64 = 0;
/// Keys are hashes, so mapping the one that would mean "empty" onto another value costs
/// no more than any other 64-bit collision.
const EMPTY_STANDIN: u64 = 0x9e37_79b9_7f4a_7c15;

/// How `key` is stored in the table.
fn stored(key: u64) -> u64 {
    if key == EMPTY { EMPTY_STANDIN } else { key }
}

impl DedupWindow {
    /// A window remembering the last `capacity` events (about 24 bytes each).
    pub fn new(capacity: usize) -> DedupWindow {
        let capacity = capacity.max(1);
        // Inserting happens before the oldest key leaves, so `capacity + 1` keys must
        // fit with an empty slot to spare, or probing would never end.
        let size = (capacity * 2 + 2).next_power_of_two();
        // Written element by element (not `vec![EMPTY; n]`, whose zeroed allocation the
        // kernel maps lazily): the ring is resident now rather than growing as it fills.
        let mut order = Vec::with_capacity(capacity);
        order.resize(capacity, EMPTY);
        DedupWindow {
            slots: Slots::zeroed(size),
            mask: size - 1,
            order: order.into_boxed_slice(),
            next: 0,
            held: 0,
        }
    }

    /// Starts loading `key`'s slot, for a [`Self::first_time`] a little later: the
    /// table is far larger than the CPU caches, so the wait can overlap other work.
    pub fn prefetch(&self, key: u64) {
        self.slots.prefetch(self.home(stored(key)));
    }

    /// True the first time a key is offered, false for every repeat inside the window.
    pub fn first_time(&mut self, key: u64) -> bool {
        let key = stored(key);
        let mut i = self.home(key);
        loop {
            match self.slots[i] {
                EMPTY => break,
                k if k == key => return false,
                _ => i = (i + 1) & self.mask,
            }
        }
        self.slots[i] = key;
        let full = self.held == self.order.len();
        let old = std::mem::replace(&mut self.order[self.next], key);
        self.next = (self.next + 1) % self.order.len();
        if full {
            self.remove(old);
            // The next key to leave is known now: start loading its slot, so the next
            // call waits for one random memory access (its own lookup), not two.
            self.slots.prefetch(self.home(self.order[self.next]));
        } else {
            self.held += 1;
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

/// The slot table: zeroed (all `EMPTY`), 2 MiB-aligned and marked for transparent huge
/// pages. A window of a million keys is tens of MiB touched at random; with 4 KiB pages
/// nearly every access also misses the TLB.
struct Slots {
    ptr: std::ptr::NonNull<u64>,
    len: usize,
}

// SAFETY: `Slots` owns its allocation exclusively, like a `Box<[u64]>`.
unsafe impl Send for Slots {}

const HUGE_PAGE: usize = 2 << 20;

impl Slots {
    /// Huge-page aligned when the table spans at least one; cache-line aligned below
    /// (small windows, as in tests, would otherwise each reserve 2 MiB).
    fn layout(len: usize) -> std::alloc::Layout {
        let bytes = len * std::mem::size_of::<u64>();
        let align = if bytes >= HUGE_PAGE { HUGE_PAGE } else { 64 };
        std::alloc::Layout::from_size_align(bytes, align).expect("dedup window size overflows")
    }

    fn zeroed(len: usize) -> Slots {
        let layout = Slots::layout(len);
        // SAFETY: the layout has a non-zero size (len >= 4).
        let raw = unsafe { std::alloc::alloc(layout) };
        let Some(ptr) = std::ptr::NonNull::new(raw.cast::<u64>()) else {
            std::alloc::handle_alloc_error(layout)
        };
        // Advise before the first touch, which is when pages are chosen. Advice only:
        // without THP the table works the same, with more TLB misses.
        // SAFETY: the range is exactly the allocation made above; zeroing it makes every
        // slot an initialised `EMPTY`.
        unsafe {
            if layout.align() == HUGE_PAGE {
                libc::madvise(raw.cast(), layout.size(), libc::MADV_HUGEPAGE);
            }
            std::ptr::write_bytes(raw, 0, layout.size());
        }
        Slots { ptr, len }
    }

    fn prefetch(&self, index: usize) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a prefetch of an in-bounds address; it never faults or changes memory.
        unsafe {
            use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
            _mm_prefetch::<_MM_HINT_T0>(self[..].as_ptr().add(index).cast());
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = index;
    }
}

impl std::ops::Deref for Slots {
    type Target = [u64];
    fn deref(&self) -> &[u64] {
        // SAFETY: `ptr` points at `len` initialised u64s owned by `self`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl std::ops::DerefMut for Slots {
    fn deref_mut(&mut self) -> &mut [u64] {
        // SAFETY: as in `deref`, and `&mut self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for Slots {
    fn drop(&mut self) {
        // SAFETY: allocated in `zeroed` with this very layout.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr().cast(), Slots::layout(self.len)) }
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
    fn a_delta_repeated_within_one_venue_message_is_kept_yet_deduped_across_publishers() {
        let delta = |size: &str, seq: u64| {
            let mut e = crate::wire::event(
                "v",
                "S",
                10,
                1,
                Body::Book(BookDelta {
                    side: Side::Bid,
                    price: "100.5".parse().unwrap(),
                    size: size.parse().unwrap(),
                    flags: Flags::default(),
                }),
            );
            e.venue_seq = Some(seq);
            e
        };
        // One venue message (seq 7) sets the level to 2, to 2 again, then to 3; the
        // next message (seq 8) sets it to 2. Names are shared, as the recorder interns.
        let first = delta("2", 7);
        let mut message = [first.clone(), first.clone(), delta("3", 7), delta("2", 8)];
        for (i, e) in message.iter_mut().enumerate() {
            e.venue = first.venue.clone();
            e.symbol = first.symbol.clone();
            e.pub_seq = i as u64 + 1;
        }
        let mut window = DedupWindow::new(100);
        for publisher in 0..2 {
            let mut position = MessagePosition::default();
            let kept: Vec<bool> = message
                .iter()
                .map(|e| window.first_time(position.key(e)))
                .collect();
            let expected = publisher == 0;
            assert_eq!(kept, vec![expected; 4], "publisher {publisher}");
        }
        // A publisher sending one event twice (same publisher sequence number) is
        // deduplicated even inside a venue message.
        let mut position = MessagePosition::default();
        let mut resend = DedupWindow::new(100);
        assert!(resend.first_time(position.key(&message[0])));
        assert!(!resend.first_time(position.key(&message[0])));
        let mut next_copy = message[1].clone();
        next_copy.pub_seq += 1;
        assert!(resend.first_time(position.key(&next_copy)));
        // A publisher joining mid-message (after the first copy) still lines up on the
        // events after the repeated pair.
        let mut late = MessagePosition::default();
        let kept: Vec<bool> = message[2..]
            .iter()
            .map(|e| window.first_time(late.key(e)))
            .collect();
        assert_eq!(kept, vec![false; 2]);
    }

    #[test]
    fn window_matches_a_plain_fifo_set_on_random_keys() {
        use rand::{Rng, SeedableRng};
        // Few distinct keys and a small table: long probe runs, wrap-around and many
        // removals from the middle of runs.
        for (capacity, distinct) in [(1, 3), (5, 12), (64, 200), (1000, 1500)] {
            let mut rng = rand::rngs::StdRng::seed_from_u64(capacity as u64);
            let mut window = DedupWindow::new(capacity);
            let mut fifo: std::collections::VecDeque<u64> = Default::default();
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
