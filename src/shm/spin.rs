//! Spinning briefly before sleeping on a futex, with a budget that adapts to whether
//! spinning pays (`docs/SHM.md`, "Writing, reading, waking").
//!
//! A sleeping peer costs a kernel wake-up on each side of a lockstep round trip (5–50 µs
//! on these machines), where a peer that is running answers in well under a microsecond.
//! Spinning pays only while the other side is running on another core: on a machine
//! whose cores are taken, a spinner holds the core its peer waits for. So the budget
//! doubles after a spin that saw its condition come true and halves after one that did
//! not, between a floor (so a budget can grow back) and the ceiling the user set.
//!
//! Owns the budget and the spin loop. Never sleeps: the caller sleeps on its futex after
//! a spin that returned false.

use std::time::{Duration, Instant};

/// The default ceiling of a spin, in microseconds (`TICKTAPE_SHM_SPIN_US` overrides it;
/// 0 never spins).
pub const DEFAULT_SPIN_US: u64 = 50;
/// The smallest budget an adaptive spinner keeps, so that it can grow back.
const FLOOR_NS: u64 = 1_000;

/// The ceiling in effect: `TICKTAPE_SHM_SPIN_US`, else [`DEFAULT_SPIN_US`].
pub fn ceiling() -> Duration {
    static CEILING: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *CEILING.get_or_init(|| {
        let us = std::env::var("TICKTAPE_SHM_SPIN_US")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(DEFAULT_SPIN_US);
        Duration::from_micros(us)
    })
}

/// A spin-then-sleep budget for one waiting side.
#[derive(Debug, Clone)]
pub struct Spinner {
    budget_ns: u64,
    ceiling_ns: u64,
}

impl Spinner {
    /// A spinner that spins at most `ceiling` per wait (zero: never).
    pub fn new(ceiling: Duration) -> Spinner {
        let ceiling_ns = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Spinner {
            budget_ns: ceiling_ns,
            ceiling_ns,
        }
    }

    /// A spinner with the ceiling from the environment ([`ceiling`]).
    pub fn from_env() -> Spinner {
        Spinner::new(ceiling())
    }

    /// The current budget of one spin.
    pub fn budget(&self) -> Duration {
        Duration::from_nanos(self.budget_ns)
    }

    /// Spins until `ready` returns true (true) or the budget is spent (false), and
    /// adapts the budget to the outcome.
    pub fn spin(&mut self, mut ready: impl FnMut() -> bool) -> bool {
        if self.ceiling_ns == 0 {
            return false;
        }
        let began = Instant::now();
        let budget = Duration::from_nanos(self.budget_ns);
        let mut k = 0u32;
        loop {
            if ready() {
                self.budget_ns = (self.budget_ns * 2).clamp(FLOOR_NS, self.ceiling_ns);
                return true;
            }
            std::hint::spin_loop();
            k += 1;
            // The clock costs ~20 ns: read it every 16 polls.
            if k.is_multiple_of(16) && began.elapsed() >= budget {
                self.budget_ns = (self.budget_ns / 2).max(FLOOR_NS.min(self.ceiling_ns));
                return false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spin_that_pays_keeps_its_budget_and_one_that_does_not_halves_it() {
        let mut s = Spinner::new(Duration::from_micros(8));
        assert!(s.spin(|| true));
        assert_eq!(
            s.budget(),
            Duration::from_micros(8),
            "capped at the ceiling"
        );
        assert!(!s.spin(|| false));
        assert_eq!(s.budget(), Duration::from_micros(4));
        for _ in 0..10 {
            assert!(!s.spin(|| false));
        }
        assert_eq!(
            s.budget(),
            Duration::from_micros(1),
            "never below the floor"
        );
        assert!(s.spin(|| true));
        assert_eq!(s.budget(), Duration::from_micros(2), "grows back");
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
