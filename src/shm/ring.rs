//! One single-producer single-consumer byte ring inside a shared mapping, with the
//! record framing and the "always wake" futex protocol of `docs/SHM.md`.
//!
//! Owns the ring header's meaning (monotonic byte cursors, the futex words), the record
//! layout (8-byte header, topic, payload, padding; a wrap marker at the end of the data
//! area) and the checks a reader makes before it trusts a record. Never decides what a
//! record means: kinds are numbers for the caller.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};
use std::time::Duration;

use super::segment::Mapping;

/// Bytes of the ring header in front of each data area.
pub const RING_HEADER_BYTES: usize = 256;
/// Bytes of a record's header: `u32 len`, `u16 kind`, `u16 topic_len`.
pub const RECORD_HEADER_BYTES: usize = 8;
/// `len` of a wrap marker: the reader skips to the start of the data area.
const WRAP: u32 = u32::MAX;

/// A record kind: a bus message `[topic, payload]` (`docs/PROTOCOL.md`).
pub const KIND_BUS: u16 = 1;
/// A record kind: one gateway frame (`docs/EXCHANGE.md`).
pub const KIND_GATEWAY: u16 = 2;
/// A record kind: the writer closed in order and will send nothing more.
pub const KIND_CLOSED: u16 = 3;

/// The control block at the start of each ring (`docs/SHM.md`, "Segments and layout").
/// The writer's and the reader's cursors sit on their own cache lines.
#[repr(C, align(64))]
pub struct RingHeader {
    /// Bytes ever written (monotonic): the writer publishes records by storing it.
    pub head: AtomicU64,
    _w: [u8; 56],
    /// Bytes ever read (monotonic): the reader frees space by storing it.
    pub tail: AtomicU64,
    _r: [u8; 56],
    /// The futex word a reader sleeps on; the writer bumps it and wakes.
    pub data_seq: AtomicU32,
    /// The futex word a writer sleeps on while the ring is full.
    pub space_seq: AtomicU32,
    /// 1 while the writer waits for space.
    pub writer_waiting: AtomicU32,
    /// 1 while the reader sleeps (or is about to) on `data_seq`: a hint that lets the
    /// writer wake it at the first new record instead of at the next step marker. Only a
    /// hint: a missed one costs latency, never a lost wake-up (markers always wake).
    pub reader_sleeping: AtomicU32,
    _s: [u8; 112],
}

const _: () = assert!(std::mem::size_of::<RingHeader>() == RING_HEADER_BYTES);

/// What can go wrong with a ring.
#[derive(Debug, thiserror::Error)]
pub enum RingError {
    /// The record cannot ever fit.
    #[error(
        "a record of {bytes} bytes is larger than a quarter of the {capacity}-byte ring; use the binary encoding or a smaller snapshot"
    )]
    TooLarge {
        /// Record size with header and padding.
        bytes: usize,
        /// Ring capacity.
        capacity: u64,
    },
    /// The peer wrote something that is not a record (a bug or a foreign writer).
    #[error("corrupt shared-memory ring at byte {at}: {what}")]
    Corrupt {
        /// Position (bytes ever read) of the bad record.
        at: u64,
        /// What was wrong.
        what: &'static str,
    },
}

/// A futex syscall on a word of a shared mapping (not `FUTEX_PRIVATE`: the peer is
/// another process). Errors (`EAGAIN`, `ETIMEDOUT`, `EINTR`) all mean "look again".
pub fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `word` is a valid, aligned u32 in a live mapping for the whole call; the
    // kernel only reads it and the timespec.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &ts as *const libc::timespec,
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

/// Wakes one sleeper on `word`.
pub fn futex_wake(word: &AtomicU32) {
    // SAFETY: as in `futex_wait`; FUTEX_WAKE does not touch user memory.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            1i32,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

/// Waits until any of `words` differs from its expected value, or `timeout`
/// (`futex_waitv`, Linux ≥ 5.16). Returns false when the kernel lacks the call (the
/// caller then polls).
pub fn futex_waitv(words: &[(&AtomicU32, u32)], timeout: Duration) -> bool {
    #[repr(C)]
    struct FutexWaitv {
        val: u64,
        uaddr: u64,
        flags: u32,
        reserved: u32,
    }
    const FUTEX2_SIZE_U32: u32 = 0x02;
    const SYS_FUTEX_WAITV: libc::c_long = 449;
    const MAX: usize = 128;
    if words.is_empty() || words.len() > MAX {
        return false;
    }
    let waiters: Vec<FutexWaitv> = words
        .iter()
        .map(|(w, v)| FutexWaitv {
            val: u64::from(*v),
            uaddr: w.as_ptr() as u64,
            flags: FUTEX2_SIZE_U32,
            reserved: 0,
        })
        .collect();
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    let total = now.tv_nsec as u64 + u64::from(timeout.subsec_nanos());
    let deadline = libc::timespec {
        tv_sec: now.tv_sec
            + timeout.as_secs() as libc::time_t
            + (total / 1_000_000_000) as libc::time_t,
        tv_nsec: (total % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: `waiters` and `deadline` live across the call; every address is a valid
    // aligned u32 of a live mapping.
    let rc = unsafe {
        libc::syscall(
            SYS_FUTEX_WAITV,
            waiters.as_ptr(),
            waiters.len() as u32,
            0u32,
            &deadline as *const libc::timespec,
            libc::CLOCK_MONOTONIC,
        )
    };
    !(rc < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS))
}

/// Where a ring lies in a mapping.
#[derive(Clone)]
struct RingAt {
    map: Arc<Mapping>,
    hdr: *const RingHeader,
    data: *mut u8,
    capacity: u64,
}

// SAFETY: the pointers point into `map`, which the struct keeps alive; all shared state
// is accessed through atomics or under the ring protocol.
unsafe impl Send for RingAt {}

impl RingAt {
    /// The ring at `offset` of `map` with `capacity` data bytes (a power of two, ≥ 64).
    fn new(map: Arc<Mapping>, offset: usize, capacity: u64) -> Result<RingAt, String> {
        if !capacity.is_power_of_two() || capacity < 64 {
            return Err(format!(
                "ring capacity {capacity} is not a power of two ≥ 64"
            ));
        }
        let end = offset
            .checked_add(RING_HEADER_BYTES)
            .and_then(|e| e.checked_add(usize::try_from(capacity).ok()?));
        if !offset.is_multiple_of(64) || end.is_none_or(|e| e > map.len()) {
            return Err(format!(
                "ring at offset {offset} with {capacity} bytes does not fit the {}-byte segment",
                map.len()
            ));
        }
        // SAFETY: offset + header + capacity lies inside the mapping (checked above) and
        // the offset is 64-byte aligned, as RingHeader requires.
        let (hdr, data) = unsafe {
            let base = map.base().add(offset);
            (base as *const RingHeader, base.add(RING_HEADER_BYTES))
        };
        Ok(RingAt {
            map,
            hdr,
            data,
            capacity,
        })
    }

    fn hdr(&self) -> &RingHeader {
        // SAFETY: the header lies in the mapping `self.map` keeps alive; every field is
        // atomic or padding.
        unsafe { &*self.hdr }
    }
}

fn padded(n: usize) -> usize {
    (n + 7) & !7
}

/// The writing end of a ring.
pub struct Writer {
    at: RingAt,
    /// Bytes written, including records not yet published.
    head: u64,
    /// Bytes published (the last value stored to the header's `head`).
    published: u64,
    /// The reader's cursor as last seen.
    tail_seen: u64,
    /// Records from here on are held: [`Writer::publish`] stops short of them (the start
    /// of a burst written ahead of its due time, [`Writer::hold_from`]); `u64::MAX` when
    /// nothing is held.
    limit: u64,
    /// A [`Cover`] was handed out: the head may be moved by another thread, so this
    /// writer's own publication only ever moves it forward.
    covered: bool,
}

impl Writer {
    /// The writer of the ring at `offset` of `map`, continuing from the published head.
    pub fn new(map: Arc<Mapping>, offset: usize, capacity: u64) -> Result<Writer, String> {
        let at = RingAt::new(map, offset, capacity)?;
        let head = at.hdr().head.load(Ordering::Acquire);
        let tail_seen = at.hdr().tail.load(Ordering::Acquire);
        Ok(Writer {
            at,
            head,
            published: head,
            tail_seen,
            limit: u64::MAX,
            covered: false,
        })
    }

    /// Data bytes of the ring.
    pub fn capacity(&self) -> u64 {
        self.at.capacity
    }

    /// The largest record (header, topic, payload, padding) the ring takes.
    pub fn max_record(&self) -> usize {
        (self.at.capacity / 4) as usize
    }

    /// Whether the reader said it sleeps on `data_seq` ([`RingHeader::reader_sleeping`]);
    /// call after publishing. A true answer is taken back (the wake that follows is
    /// the one the reader asked for).
    pub fn reader_sleeps(&self) -> bool {
        take_sleep_hint(self.at.hdr())
    }

    /// Where the staged records that may be published end (short of what is held), for
    /// a [`Cover`] to publish up to.
    pub fn staged_end(&self) -> u64 {
        self.head.min(self.limit)
    }

    /// Bytes written so far (the position the next record starts at, before a wrap).
    pub fn written(&self) -> u64 {
        self.head
    }

    /// Holds what is written from `at` on (a position [`Writer::written`] gave): the
    /// writer's publications stop short of it until [`Writer::publish_to`] passes it
    /// or the hold moves. `None`: nothing held.
    pub fn hold_from(&mut self, at: Option<u64>) {
        self.limit = at.unwrap_or(u64::MAX);
    }

    /// A second way to publish this ring's staged records, for another thread
    /// ([`Cover`]). From now on this writer's publications only move the head forward.
    pub fn cover(&mut self) -> Cover {
        self.covered = true;
        Cover {
            at: self.at.clone(),
        }
    }

    /// Bytes written and not yet read by the peer.
    pub fn unread(&self) -> u64 {
        self.head - self.at.hdr().tail.load(Ordering::Acquire)
    }

    /// Copies one record into the ring and publishes it (with any staged before it);
    /// `Ok(false)` when the ring has no room for it now (nothing written: wait with
    /// [`Writer::wait_for_space`] and retry).
    pub fn try_write(
        &mut self,
        kind: u16,
        topic: &[u8],
        payload: &[u8],
    ) -> Result<bool, RingError> {
        let written = self.try_stage(kind, topic, payload)?;
        if written {
            self.publish();
        }
        Ok(written)
    }

    /// Copies one record into the ring without publishing it: the reader sees it, and
    /// every record staged before it, at the next [`Writer::publish`] (or
    /// [`Writer::try_write`]), all at once. `Ok(false)` as for [`Writer::try_write`];
    /// a full ring with staged records must be published before waiting for space.
    pub fn try_stage(
        &mut self,
        kind: u16,
        topic: &[u8],
        payload: &[u8],
    ) -> Result<bool, RingError> {
        let body = topic.len() + payload.len();
        let size = padded(RECORD_HEADER_BYTES + body);
        if size > self.max_record() || topic.len() > u16::MAX as usize {
            return Err(RingError::TooLarge {
                bytes: size,
                capacity: self.at.capacity,
            });
        }
        let cap = self.at.capacity;
        let pos = (self.head & (cap - 1)) as usize;
        let to_end = cap as usize - pos;
        let skip = if size > to_end { to_end } else { 0 };
        let need = (skip + size) as u64;
        if !self.has_room(need) {
            return Ok(false);
        }
        // SAFETY: the bytes from `head` to `head + need` are free (the reader's tail is
        // at most `capacity` behind, checked above) and inside the data area (a record
        // that would cross its end is moved to the start behind a wrap marker, and every
        // position is 8-byte aligned so a marker header always fits). The reader reads
        // them only after the release store of `head` in `publish`.
        unsafe {
            let mut p = self.at.data.add(pos);
            if skip > 0 {
                (p as *mut u32).write_unaligned(WRAP.to_le());
                p = self.at.data;
            }
            (p as *mut u32).write_unaligned((body as u32).to_le());
            (p.add(4) as *mut u16).write_unaligned(kind.to_le());
            (p.add(6) as *mut u16).write_unaligned((topic.len() as u16).to_le());
            let mut q = p.add(RECORD_HEADER_BYTES);
            std::ptr::copy_nonoverlapping(topic.as_ptr(), q, topic.len());
            q = q.add(topic.len());
            std::ptr::copy_nonoverlapping(payload.as_ptr(), q, payload.len());
        }
        self.head += need;
        Ok(true)
    }

    /// Makes every staged record visible to the reader, short of what is held (one
    /// release store); false when nothing was.
    pub fn publish(&mut self) -> bool {
        self.publish_to(self.head.min(self.limit))
    }

    /// Makes the staged records up to `to` visible (a record boundary at most
    /// [`Writer::written`], such as the end of a held burst); false when they were.
    pub fn publish_to(&mut self, to: u64) -> bool {
        if to <= self.published {
            return false;
        }
        self.published = to;
        let head = &self.at.hdr().head;
        if self.covered {
            // A cover may have published further already: never move the head back.
            head.fetch_max(to, Ordering::Release);
        } else {
            head.store(to, Ordering::Release);
        }
        true
    }

    /// Whether a record of `bytes` (framed and padded, plus a possible wrap) fits in
    /// the ring now, behind what is written.
    pub fn has_room(&mut self, bytes: u64) -> bool {
        let cap = self.at.capacity;
        if self.head + bytes - self.tail_seen <= cap {
            return true;
        }
        self.tail_seen = self.at.hdr().tail.load(Ordering::Acquire);
        self.head + bytes - self.tail_seen <= cap
    }

    /// Bytes staged and not yet published.
    pub fn staged(&self) -> u64 {
        self.head - self.published
    }

    /// Waits up to `timeout` for the reader to free space (it wakes us when it sees
    /// [`RingHeader::writer_waiting`]).
    pub fn wait_for_space(&mut self, timeout: Duration) {
        let hdr = self.at.hdr();
        let seq = hdr.space_seq.load(Ordering::Acquire);
        hdr.writer_waiting.store(1, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        if hdr.tail.load(Ordering::Acquire) == self.tail_seen {
            futex_wait(&hdr.space_seq, seq, timeout);
        }
        hdr.writer_waiting.store(0, Ordering::Relaxed);
        self.tail_seen = hdr.tail.load(Ordering::Acquire);
    }

    /// Bumps the data word and wakes a sleeping reader ("always wake": one system call,
    /// whether or not the reader sleeps).
    pub fn wake(&self) {
        wake_reader(self.at.hdr());
    }
}

/// Whether the reader said it sleeps, taking the hint back (see
/// [`Writer::reader_sleeps`]); call after publishing.
fn take_sleep_hint(hdr: &RingHeader) -> bool {
    // Orders the store of `head` before this load (pairs with the reader's fence).
    fence(Ordering::SeqCst);
    hdr.reader_sleeping.load(Ordering::Relaxed) != 0
        && hdr.reader_sleeping.swap(0, Ordering::Relaxed) != 0
}

/// Bumps the data word and wakes a reader asleep on it.
fn wake_reader(hdr: &RingHeader) {
    hdr.data_seq.fetch_add(1, Ordering::Release);
    futex_wake(&hdr.data_seq);
}

/// Publishes a [`Writer`]'s staged records from another thread (the backup publisher,
/// `shm::backup`), and wakes the reader for them. Safe beside the writer because it
/// only ever moves the head forward, to a value the writer staged up to (a record
/// boundary, of records the caller knows may be shown): once the head has reached that
/// value it does nothing. The writer's own publications, once a cover exists, only move
/// the head forward too.
#[derive(Clone)]
pub struct Cover {
    at: RingAt,
}

impl Cover {
    /// Publishes the records written up to `to` ([`Writer::staged_end`] gave it) if the
    /// head lies short of it; true when this call published something.
    pub fn publish(&self, to: u64) -> bool {
        let head = &self.at.hdr().head;
        let mut at = head.load(Ordering::Relaxed);
        while at < to {
            match head.compare_exchange_weak(at, to, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(now) => at = now,
            }
        }
        false
    }

    /// Wakes the reader if it said it sleeps (taking the hint back, as
    /// [`Writer::reader_sleeps`] does).
    pub fn wake_if_sleeping(&self) {
        let hdr = self.at.hdr();
        if take_sleep_hint(hdr) {
            wake_reader(hdr);
        }
    }

    /// Bumps the data word and wakes a sleeping reader, as [`Writer::wake`] does.
    pub fn wake(&self) {
        wake_reader(self.at.hdr());
    }
}

/// One record borrowed from the ring: valid until the reader's next call.
#[derive(Debug)]
pub struct Record<'a> {
    /// [`KIND_BUS`], [`KIND_GATEWAY`], [`KIND_CLOSED`] or a later kind.
    pub kind: u16,
    /// The topic (bus messages), else empty.
    pub topic: &'a [u8],
    /// The payload.
    pub payload: &'a [u8],
}

/// The reading end of a ring.
pub struct Reader {
    at: RingAt,
    /// Bytes read, including records not yet released to the writer.
    tail: u64,
    /// The writer's cursor as last seen.
    head_seen: u64,
}

impl Reader {
    /// The reader of the ring at `offset` of `map`, continuing from the published tail.
    pub fn new(map: Arc<Mapping>, offset: usize, capacity: u64) -> Result<Reader, String> {
        let at = RingAt::new(map, offset, capacity)?;
        let tail = at.hdr().tail.load(Ordering::Acquire);
        Ok(Reader {
            at,
            tail,
            head_seen: tail,
        })
    }

    /// The futex word and its value to sleep on: load it *before* checking for data, so
    /// a record published after the check changes it and the wait returns at once.
    pub fn data_seq(&self) -> (&AtomicU32, u32) {
        let w = &self.at.hdr().data_seq;
        (w, w.load(Ordering::Acquire))
    }

    /// True when a record is waiting.
    pub fn has_data(&mut self) -> bool {
        if self.head_seen == self.tail {
            self.head_seen = self.at.hdr().head.load(Ordering::Acquire);
        }
        self.head_seen != self.tail
    }

    /// True when a record is waiting (without caching what it saw).
    pub fn peek(&self) -> bool {
        self.head_seen != self.tail || self.at.hdr().head.load(Ordering::Acquire) != self.tail
    }

    /// The next record, if one was published. Its space stays the reader's until
    /// [`Reader::release`].
    pub fn read(&mut self) -> Result<Option<Record<'_>>, RingError> {
        if !self.has_data() {
            return Ok(None);
        }
        let cap = self.at.capacity;
        let bad = |what| RingError::Corrupt {
            at: self.tail,
            what,
        };
        let avail = self.head_seen.wrapping_sub(self.tail);
        if avail > cap || !avail.is_multiple_of(8) {
            return Err(bad(
                "the writer's cursor is not a whole number of records ahead",
            ));
        }
        let mut pos = (self.tail & (cap - 1)) as usize;
        let mut skipped = 0u64;
        // SAFETY: `pos` is 8-aligned and inside the data area, and the 8 header bytes
        // there were published (avail ≥ 8) by the release store the Acquire load in
        // `has_data` paired with.
        let mut len = unsafe { (self.at.data.add(pos) as *const u32).read_unaligned() };
        if u32::from_le(len) == WRAP {
            skipped = cap - pos as u64;
            pos = 0;
            if avail < skipped + RECORD_HEADER_BYTES as u64 {
                return Err(bad("wrap marker without a record after it"));
            }
            // SAFETY: as above, at the start of the data area.
            len = unsafe { (self.at.data as *const u32).read_unaligned() };
        }
        let len = u32::from_le(len) as usize;
        // SAFETY: the record header is published and inside the data area (above).
        let (kind, topic_len) = unsafe {
            let p = self.at.data.add(pos);
            (
                u16::from_le((p.add(4) as *const u16).read_unaligned()),
                u16::from_le((p.add(6) as *const u16).read_unaligned()) as usize,
            )
        };
        let size = padded(RECORD_HEADER_BYTES + len);
        if size as u64 > cap / 4 || pos + size > cap as usize {
            return Err(bad("record length past the end of the ring"));
        }
        if skipped + size as u64 > avail {
            return Err(bad("record longer than what the writer published"));
        }
        if topic_len > len {
            return Err(bad("topic longer than its record"));
        }
        self.tail += skipped + size as u64;
        // SAFETY: the record's bytes are published, inside the data area (checked), and
        // the writer does not touch them until `release` stores a tail past them.
        let (topic, payload) = unsafe {
            let p = self.at.data.add(pos + RECORD_HEADER_BYTES);
            (
                std::slice::from_raw_parts(p, topic_len),
                std::slice::from_raw_parts(p.add(topic_len), len - topic_len),
            )
        };
        Ok(Some(Record {
            kind,
            topic,
            payload,
        }))
    }

    /// Gives the space of every record read so far back to the writer, waking it if it
    /// waits for space.
    pub fn release(&mut self) {
        let hdr = self.at.hdr();
        if hdr.tail.load(Ordering::Relaxed) == self.tail {
            return;
        }
        hdr.tail.store(self.tail, Ordering::Release);
        fence(Ordering::SeqCst);
        if hdr.writer_waiting.load(Ordering::Relaxed) != 0 {
            hdr.space_seq.fetch_add(1, Ordering::Release);
            futex_wake(&hdr.space_seq);
        }
    }

    /// Sleeps on the data word until the writer wakes us or `timeout` passes, unless a
    /// record is already waiting.
    pub fn wait(&mut self, timeout: Duration) {
        let (word, seq) = self.data_seq();
        let hdr = self.at.hdr();
        hdr.reader_sleeping.store(1, Ordering::Relaxed);
        // Pairs with the writer's store of `head` and load of the flag: either it sees
        // the flag, or this check sees its record.
        fence(Ordering::SeqCst);
        if !self.peek() {
            futex_wait(word, seq, timeout);
        }
        hdr.reader_sleeping.store(0, Ordering::Relaxed);
    }

    /// Keeps the mapping alive (for a caller that holds only this end).
    pub fn mapping(&self) -> &Arc<Mapping> {
        &self.at.map
    }
}
