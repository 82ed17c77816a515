//! Spinning briefly before sleeping on a futex, backing off while spinning does not pay
//! (`docs/SHM.md`, "Writing, reading, waking").
//!
//! A sleeping peer costs a kernel wake-up on each side of a lockstep round trip (5–50 µs
//! on these machines), where a peer that is running answers in well under a microsecond.
//! Spinning pays only while the other side is running on another core and answers within
//! the spin: on a machine whose cores are taken, a spinner holds the core its peer waits
//! for. So every spin that is made lasts up to the ceiling the user set; after a spin that
//! did not see its condition come true, the next 1, 2, 4 … 64 waits (doubling with each
//! further miss) sleep at once, and a spin that paid starts over. (A budget that halved
//! after each miss, the first rule, fell below a slow peer's turnaround, a Python strategy's
//! tens of µs, and then never saw it again: it stopped spinning for good where a full spin
//! would have paid. The Python client uses the same rule.)
//!
//! Owns the back-off and the spin loop. Never sleeps: the caller sleeps on its futex after
//! a spin that returned false.

use std::time::{Duration, Instant};

/// The environment variable that sets the ceiling of a spin, in microseconds (both the
/// Rust SDK and the Python client read it).
pub const SPIN_ENV: &str = "TICKTAPE_SHM_SPIN_US";
/// The default ceiling of a spin, in microseconds ([`SPIN_ENV`] overrides it; 0 never
/// spins).
pub const DEFAULT_SPIN_US: u64 = 50;
/// The ceiling a busy-polling strategy gets (`[replay] busy_poll`), in microseconds: one
/// second, so it sleeps only after a second without a message (and polls again from the
/// next one on).
pub const BUSY_POLL_SPIN_US: u64 = 1_000_000;
/// The most waits that sleep at once after misses: `1 << MAX_SKIP_SHIFT`.
const MAX_SKIP_SHIFT: u32 = 6;

/// The ceiling in effect: [`SPIN_ENV`], else [`DEFAULT_SPIN_US`].
pub fn ceiling() -> Duration {
    static CEILING: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *CEILING.get_or_init(|| {
        let us = std::env::var(SPIN_ENV)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(DEFAULT_SPIN_US);
        Duration::from_micros(us)
    })
}

/// A spin-then-sleep policy for one waiting side.
#[derive(Debug, Clone)]
pub struct Spinner {
    ceiling: Duration,
    /// Waits left that sleep at once without spinning.
    skip: u32,
    /// Spins in a row that saw nothing.
    misses: u32,
}

impl Spinner {
    /// A spinner that spins at most `ceiling` per wait (zero: never).
    pub fn new(ceiling: Duration) -> Spinner {
        Spinner {
            ceiling,
            skip: 0,
            misses: 0,
        }
    }

    /// A spinner with the ceiling from the environment ([`ceiling`]).
    pub fn from_env() -> Spinner {
        Spinner::new(ceiling())
    }

    /// How many of the coming waits sleep without spinning.
    pub fn skipping(&self) -> u32 {
        self.skip
    }

    /// Spins until `ready` returns true (true) or the ceiling is spent (false); returns
    /// false at once while backing off after misses.
    pub fn spin(&mut self, mut ready: impl FnMut() -> bool) -> bool {
        if self.ceiling.is_zero() {
            return false;
        }
        if self.skip > 0 {
            self.skip -= 1;
            return false;
        }
        let began = Instant::now();
        let mut k = 0u32;
        loop {
            if ready() {
                self.misses = 0;
                return true;
            }
            std::hint::spin_loop();
            k += 1;
            // The clock costs ~20 ns: read it every 16 polls.
            if k.is_multiple_of(16) && began.elapsed() >= self.ceiling {
                self.skip = 1 << self.misses.min(MAX_SKIP_SHIFT);
                self.misses += 1;
                return false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_a_miss_the_next_waits_sleep_at_once_doubling_and_a_spin_that_pays_starts_over() {
        let mut s = Spinner::new(Duration::from_micros(5));
        assert!(s.spin(|| true));
        assert_eq!(s.skipping(), 0);
        // A miss: the next wait skips its spin, and the one after spins again.
        assert!(!s.spin(|| false));
        assert_eq!(s.skipping(), 1);
        let mut polled = false;
        assert!(!s.spin(|| {
            polled = true;
            true
        }));
        assert!(!polled, "a skipped wait polls nothing");
        // Misses in a row: 2, 4, ... then capped at 64 skipped waits.
        let mut skips = Vec::new();
        for _ in 0..9 {
            assert!(!s.spin(|| false));
            skips.push(s.skipping());
            while s.skipping() > 0 {
                assert!(!s.spin(|| true));
            }
        }
        assert_eq!(skips, [2, 4, 8, 16, 32, 64, 64, 64, 64]);
        // A spin that pays starts over: the next miss skips one wait.
        assert!(s.spin(|| true));
        assert!(!s.spin(|| false));
        assert_eq!(s.skipping(), 1);
    }

    #[test]
    fn a_zero_ceiling_never_spins() {
        let mut s = Spinner::new(Duration::ZERO);
        let mut polled = false;
        assert!(!s.spin(|| {
            polled = true;
            true
        }));
        assert!(!polled);
    }

    #[test]
    fn a_spin_sees_a_condition_that_comes_true_while_it_spins() {
        let mut s = Spinner::new(Duration::from_millis(50));
        let mut n = 0;
        assert!(s.spin(|| {
            n += 1;
            n == 1000
        }));
    }
}
