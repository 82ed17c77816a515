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
//! Owns the ticket (what is staged and when it is due, a sequence lock) and the thread.
//! What may be published, and how it stays safe beside the writer, is [`Cover`]'s.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering, fence};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::ring::Cover;

/// Due time of no ticket.
const NEVER: u64 = u64::MAX;

/// What the replay thread and the backup share.
struct Shared {
    /// Sequence lock over `due_ns` and `ranges`: odd while the replay writes them.
    seq: AtomicU64,
    /// When the posted records are due, nanoseconds after `base`; [`NEVER`] when none
    /// are.
    due_ns: AtomicU64,
    /// Per ring: the head before the staged records and after them.
    ranges: Vec<(AtomicU64, AtomicU64)>,
    /// The sequence of the last ticket the backup published first, and when
    /// (nanoseconds after `base`).
    covered_seq: AtomicU64,
    covered_ns: AtomicU64,
    /// The instant both threads count from.
    base: Instant,
    /// Rings whose reader the replay thread asks the backup to wake (bit i: ring i).
    wake: AtomicU64,
    stop: AtomicBool,
}

/// Rings a backup can wake for the replay thread ([`Backup::wake`]): one bit each.
pub const WAKES: usize = 64;

/// The backup publisher's thread and the ticket the replay thread posts to it.
pub struct Backup {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    /// The sequences of the first and the last ticket posted since the last
    /// [`Backup::take_back`].
    posted: Option<(u64, u64)>,
}

impl Shared {
    /// Nanoseconds from `base` to `at` (zero before it).
    fn since_base(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.base).as_nanos() as u64
    }
}

impl Backup {
    /// Starts the backup for the rings of `covers` (in the order the tickets list
    /// them), on the CPUs the calling thread may use (start it before the replay thread
    /// takes its own core), at idle priority.
    pub fn start(covers: Vec<Cover>) -> Result<Backup> {
        let shared = Arc::new(Shared {
            seq: AtomicU64::new(0),
            due_ns: AtomicU64::new(NEVER),
            ranges: covers
                .iter()
                .map(|_| (AtomicU64::new(0), AtomicU64::new(0)))
                .collect(),
            covered_seq: AtomicU64::new(u64::MAX),
            covered_ns: AtomicU64::new(0),
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
            posted: None,
        })
    }

    /// Posts the records staged on each ring (`ranges`, as [`Writer::staged_range`]
    /// gives them, in the rings' order) for publication at `due`; returns the ticket's
    /// sequence. Post only what may be published at `due`. Posting again (more written
    /// since) replaces the ticket: once `due` has passed, the backup publishes each
    /// ticket as it comes.
    ///
    /// [`Writer::staged_range`]: super::ring::Writer::staged_range
    pub fn post(&mut self, due: Instant, ranges: impl Iterator<Item = (u64, u64)>) -> u64 {
        let s = &self.shared;
        let seq = s.seq.load(Ordering::Relaxed);
        s.seq.store(seq + 1, Ordering::Relaxed);
        fence(Ordering::Release);
        s.due_ns.store(s.since_base(due), Ordering::Relaxed);
        for ((from, to), (f, t)) in s.ranges.iter().zip(ranges) {
            from.store(f, Ordering::Relaxed);
            to.store(t, Ordering::Relaxed);
        }
        s.seq.store(seq + 2, Ordering::Release);
        let first = self.posted.map_or(seq + 2, |(first, _)| first);
        self.posted = Some((first, seq + 2));
        seq + 2
    }

    /// Asks the backup to wake the readers of the rings in `rings` (bit i: ring i, below
    /// [`WAKES`]): the system call, and on this VM the interrupt that wakes another
    /// vCPU, are then the backup's, on the strategies' cores, not the replay thread's.
    pub fn wake(&self, rings: u64) {
        if rings != 0 {
            self.shared.wake.fetch_or(rings, Ordering::Release);
        }
    }

    /// Takes the posted tickets back once the replay thread has published their records
    /// itself: from now on the backup leaves them alone. When the backup published one
    /// of them first: the last it published, and when (no earlier than when it
    /// published that one).
    pub fn take_back(&mut self) -> Option<(Instant, u64)> {
        let (first, last) = self.posted.take()?;
        let s = &self.shared;
        s.seq.store(last + 1, Ordering::Relaxed);
        fence(Ordering::Release);
        s.due_ns.store(NEVER, Ordering::Relaxed);
        s.seq.store(last + 2, Ordering::Release);
        let covered = s.covered_seq.load(Ordering::Acquire);
        if !(first..=last).contains(&covered) {
            return None;
        }
        let at = s.base + Duration::from_nanos(s.covered_ns.load(Ordering::Relaxed));
        Some((at, covered))
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

/// The backup's loop: wakes the readers it is asked to, reads the ticket, waits for its
/// due time, publishes what the replay thread has not. It spins throughout (never
/// sleeps: a sleeping backup would itself need waking), at idle priority.
fn run(s: &Shared, covers: &[Cover]) {
    let mut ranges = vec![(0u64, 0u64); covers.len()];
    let mut done = 0u64;
    while !s.stop.load(Ordering::Relaxed) {
        let wake = s.wake.swap(0, Ordering::Acquire);
        if wake != 0 {
            for (i, cover) in covers.iter().enumerate().take(WAKES) {
                if wake & (1 << i) != 0 {
                    cover.wake();
                }
            }
        }
        let seq = s.seq.load(Ordering::Acquire);
        let due = s.due_ns.load(Ordering::Relaxed);
        for (r, (from, to)) in ranges.iter_mut().zip(&s.ranges) {
            *r = (from.load(Ordering::Relaxed), to.load(Ordering::Relaxed));
        }
        fence(Ordering::Acquire);
        if seq & 1 == 1 || s.seq.load(Ordering::Relaxed) != seq {
            std::hint::spin_loop();
            continue;
        }
        if seq == done || due == NEVER || s.since_base(Instant::now()) < due {
            std::hint::spin_loop();
            continue;
        }
        let mut published = false;
        for (cover, &(from, to)) in covers.iter().zip(&ranges) {
            published |= cover.publish(from, to);
        }
        if published {
            // Read after the publication, so the figure never flatters the backup.
            s.covered_ns
                .store(s.since_base(Instant::now()), Ordering::Relaxed);
            s.covered_seq.store(seq, Ordering::Release);
            for (cover, &(from, to)) in covers.iter().zip(&ranges) {
                if from < to {
                    cover.wake_if_sleeping();
                }
            }
        }
        done = seq;
    }
}
