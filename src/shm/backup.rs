//! The backup publisher of a paced replay over shared memory (`[replay] backup_publisher`,
//! `docs/SHM.md`, "Paced replays").
//!
//! On a virtual machine the host takes a vCPU away for tens of microseconds to
//! milliseconds at a time, 1–3 % of the time on a busy afternoon here, whatever runs on
//! it (`docs/BENCHMARKS.md`, session 20); the two vCPUs of these machines lose their
//! time mostly at different moments (session 21, `pace_probe pair`: a due time falls in
//! a stall that ends more than 50 µs later on one vCPU 0.65–1.2 % of the time, on both
//! at once 0.04–0.09 %). So a second thread, on the cores `own_core` leaves to the
//! others, holds each burst's publication too: when the burst's due time comes and the
//! replay thread has not published it (its core was taken, or it was still busy with
//! the last burst), the backup publishes it and wakes the strategies that sleep. It also
//! makes the wake-ups the replay thread asks for ([`Backup::wake`]), so that thread
//! never pays for one. It spins, at idle priority (`SCHED_IDLE`): it takes no time that
//! a strategy or anything else there wants, only what would be idle.
//!
//! Owns the tickets (what may be published and when, a small queue of sequence-locked
//! slots) and the thread. What may be published, and how it stays safe beside the
//! writer, is [`Cover`]'s.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering, fence};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::ring::Cover;

/// Due time of a ticket taken back.
const NEVER: u64 = u64::MAX;

/// Tickets that may be open at once: the burst being published and those written ahead
/// of it ([`Backup::post`] refuses more).
pub const TICKETS: u64 = 256;

/// One ticket: records that may be published from a due time on. Written by the replay
/// thread under a sequence lock (odd while it writes), read by the backup.
struct Slot {
    seq: AtomicU64,
    /// The ticket's number ([`Backup::post`] numbers them from 0, in due order).
    id: AtomicU64,
    /// Nanoseconds after `base`; [`NEVER`] once taken back.
    due_ns: AtomicU64,
    /// The replay thread's tag for what the ticket holds now (how many events).
    tag: AtomicU64,
    /// Per ring: where the records that may be published end.
    ends: Vec<AtomicU64>,
    /// Set by the backup when it published this ticket first: its number + 1, the tag
    /// it published, and when (nanoseconds after `base`).
    covered: AtomicU64,
    covered_tag: AtomicU64,
    covered_ns: AtomicU64,
}

/// What the replay thread and the backup share.
struct Shared {
    slots: Vec<Slot>,
    /// Tickets opened so far (the next one's number).
    opened: AtomicU64,
    /// The instant both threads count from.
    base: Instant,
    /// Rings whose reader the replay thread asks the backup to wake (bit i: ring i).
    wake: AtomicU64,
    stop: AtomicBool,
}

/// Rings a backup can wake for the replay thread ([`Backup::wake`]): one bit each.
pub const WAKES: usize = 64;

/// The backup publisher's thread and the tickets the replay thread posts to it.
pub struct Backup {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    /// Tickets opened (the next one's number).
    opened: u64,
    /// Tickets taken back: every one below this number.
    taken: u64,
}

impl Shared {
    /// Nanoseconds from `base` to `at` (zero before it).
    fn since_base(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.base).as_nanos() as u64
    }

    fn slot(&self, id: u64) -> &Slot {
        &self.slots[(id % TICKETS) as usize]
    }
}

impl Slot {
    fn new(rings: usize) -> Slot {
        Slot {
            seq: AtomicU64::new(0),
            id: AtomicU64::new(NEVER),
            due_ns: AtomicU64::new(NEVER),
            tag: AtomicU64::new(0),
            ends: (0..rings).map(|_| AtomicU64::new(0)).collect(),
            covered: AtomicU64::new(0),
            covered_tag: AtomicU64::new(0),
            covered_ns: AtomicU64::new(0),
        }
    }

    /// Writes the slot under its lock (the replay thread only).
    fn write(&self, id: u64, due_ns: u64, tag: u64, ends: impl Iterator<Item = u64>) {
        let seq = self.seq.load(Ordering::Relaxed);
        self.seq.store(seq + 1, Ordering::Relaxed);
        fence(Ordering::Release);
        self.id.store(id, Ordering::Relaxed);
        self.due_ns.store(due_ns, Ordering::Relaxed);
        self.tag.store(tag, Ordering::Relaxed);
        for (end, e) in self.ends.iter().zip(ends) {
            end.store(e, Ordering::Relaxed);
        }
        self.seq.store(seq + 2, Ordering::Release);
    }

    /// A consistent read of the slot into `ends`: its sequence, number, due time and
    /// tag; None while the replay thread writes it.
    fn read(&self, ends: &mut [u64]) -> Option<(u64, u64, u64, u64)> {
        let seq = self.seq.load(Ordering::Acquire);
        let id = self.id.load(Ordering::Relaxed);
        let due = self.due_ns.load(Ordering::Relaxed);
        let tag = self.tag.load(Ordering::Relaxed);
        for (e, end) in ends.iter_mut().zip(&self.ends) {
            *e = end.load(Ordering::Relaxed);
        }
        fence(Ordering::Acquire);
        (seq & 1 == 0 && self.seq.load(Ordering::Relaxed) == seq).then_some((seq, id, due, tag))
    }
}

impl Backup {
    /// Starts the backup for the rings of `covers` (in the order the tickets list
    /// them), on the CPUs the calling thread may use (start it before the replay thread
    /// takes its own core), at idle priority.
    pub fn start(covers: Vec<Cover>) -> Result<Backup> {
        let shared = Arc::new(Shared {
            slots: (0..TICKETS).map(|_| Slot::new(covers.len())).collect(),
            opened: AtomicU64::new(0),
            base: Instant::now(),
            wake: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        });
        let theirs = shared.clone();
        let thread = std::thread::Builder::new()
            .name("backup-publish".into())
            .spawn(move || {
                lower_priority();
                run(&theirs, &covers);
            })
            .context("cannot start the backup publisher's thread")?;
        Ok(Backup {
            shared,
            thread: Some(thread),
            opened: 0,
            taken: 0,
        })
    }

    /// Posts records for publication at `due`: on each ring (in the rings' order), those
    /// written up to `ends` (record boundaries, as [`Writer::staged_end`] gives them),
    /// with `tag` (what the caller wants back from [`Backup::take_back`]). `ticket`: the
    /// ticket to update (the last one opened: more written since), or None to open a
    /// new one; tickets are opened in the order of their due times. Returns the
    /// ticket's number; None when [`TICKETS`] are open (nothing posted).
    ///
    /// Once `due` has passed, the backup publishes each update as it comes.
    ///
    /// [`Writer::staged_end`]: super::ring::Writer::staged_end
    pub fn post(
        &mut self,
        due: Instant,
        tag: u64,
        ticket: Option<u64>,
        ends: impl Iterator<Item = u64>,
    ) -> Option<u64> {
        let id = match ticket {
            Some(id) if id + 1 == self.opened && id >= self.taken => id,
            Some(_) => return None,
            None if self.opened - self.taken < TICKETS => self.opened,
            None => return None,
        };
        let s = &self.shared;
        s.slot(id).write(id, s.since_base(due), tag, ends);
        if id == self.opened {
            self.opened += 1;
            s.opened.store(self.opened, Ordering::Release);
        }
        Some(id)
    }

    /// Asks the backup to wake the readers of the rings in `rings` (bit i: ring i, below
    /// [`WAKES`]): the system call, and on this VM the interrupt that wakes another
    /// vCPU, are then the backup's, on the strategies' cores, not the replay thread's.
    pub fn wake(&self, rings: u64) {
        if rings != 0 {
            self.shared.wake.fetch_or(rings, Ordering::Release);
        }
    }

    /// Takes back every ticket up to number `last` once the replay thread has published
    /// their records itself: from now on the backup leaves them alone. When the backup
    /// published any of them first: for the last of those, when (no earlier than when it
    /// published) and the tag it published.
    pub fn take_back(&mut self, last: u64) -> Option<(Instant, u64)> {
        let s = &self.shared;
        let mut covered = None;
        while self.taken <= last && self.taken < self.opened {
            let id = self.taken;
            let slot = s.slot(id);
            // The ends stay as they were: nobody reads them once taken back.
            slot.write(id, NEVER, 0, std::iter::empty());
            if slot.covered.load(Ordering::Acquire) == id + 1 {
                let at = s.base + Duration::from_nanos(slot.covered_ns.load(Ordering::Relaxed));
                covered = Some((at, slot.covered_tag.load(Ordering::Relaxed)));
            }
            self.taken += 1;
        }
        covered
    }
}

impl Drop for Backup {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `SCHED_IDLE`: it runs only where nothing else wants the CPU.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: a plain system call on the calling thread with a valid argument.
    unsafe {
        let param = libc::sched_param { sched_priority: 0 };
        libc::sched_setscheduler(0, libc::SCHED_IDLE, &param);
    }
}

/// The backup's loop: wakes the readers it is asked to, then takes the tickets in
/// order: waits for each one's due time and publishes what the replay thread has not
/// (again for each update that comes past the due time). It spins throughout (never
/// sleeps: a sleeping backup would itself need waking), at idle priority.
fn run(s: &Shared, covers: &[Cover]) {
    let mut ends = vec![0u64; covers.len()];
    let mut published = vec![false; covers.len()];
    // The ticket looked at, and the sequence of its last version published.
    let (mut next, mut done) = (0u64, None);
    while !s.stop.load(Ordering::Relaxed) {
        let wake = s.wake.swap(0, Ordering::Acquire);
        if wake != 0 {
            for (i, cover) in covers.iter().enumerate().take(WAKES) {
                if wake & (1 << i) != 0 {
                    cover.wake();
                }
            }
        }
        // Read before the slot: with a later ticket open, what the slot holds is final.
        let opened = s.opened.load(Ordering::Acquire);
        if next >= opened {
            std::hint::spin_loop();
            continue;
        }
        let slot = s.slot(next);
        let Some((seq, id, due, tag)) = slot.read(&mut ends) else {
            continue;
        };
        let last = next + 1 == opened;
        if id != next || due == NEVER {
            // Taken back (or long gone, its slot reused): the replay thread published it.
            if id != next || !last {
                (next, done) = (next + 1, None);
            }
            std::hint::spin_loop();
            continue;
        }
        if s.since_base(Instant::now()) < due {
            std::hint::spin_loop();
            continue;
        }
        if done != Some(seq) {
            for ((p, cover), &end) in published.iter_mut().zip(covers).zip(&ends) {
                *p = cover.publish(end);
            }
            if published.contains(&true) {
                // Read after the publication, so the figure never flatters the backup.
                slot.covered_ns
                    .store(s.since_base(Instant::now()), Ordering::Relaxed);
                slot.covered_tag.store(tag, Ordering::Relaxed);
                slot.covered.store(id + 1, Ordering::Release);
                for (&p, cover) in published.iter().zip(covers) {
                    if p {
                        cover.wake_if_sleeping();
                    }
                }
            }
            done = Some(seq);
        }
        if !last {
            (next, done) = (next + 1, None);
        }
    }
}
