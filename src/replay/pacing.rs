//! Wall-clock pacing of replayed events and the lateness it achieved.
//!
//! At speed `s`, an event recorded `Δ` after the first one is due `Δ / s` after the
//! replay started. The pacer sleeps until shortly before that instant and spins the
//! rest, then records how late the send actually was.

use std::time::{Duration, Instant};

use crate::event::UnixNanos;

/// How fast to replay.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Speed {
    /// As fast as the subscribers take it.
    Max,
    /// Recorded inter-arrival times divided by this factor (1.0 = recorded pace).
    Factor(f64),
}

impl std::str::FromStr for Speed {
    type Err = String;

    fn from_str(s: &str) -> Result<Speed, String> {
        if s.eq_ignore_ascii_case("max") {
            return Ok(Speed::Max);
        }
        let f: f64 = s
            .trim_end_matches(['x', 'X'])
            .parse()
            .map_err(|_| format!("bad speed {s:?}: use a factor like 1, 10, 0.5 or 'max'"))?;
        if !(f > 0.0 && f.is_finite()) {
            return Err(format!("speed must be positive, got {s:?}"));
        }
        Ok(Speed::Factor(f))
    }
}

/// Paces sends and keeps lateness samples.
pub struct Pacer {
    speed: Speed,
    origin: Option<(Instant, UnixNanos)>,
    samples: Vec<u32>,
    sample_every: u64,
    seen: u64,
}

/// Lateness percentiles of a paced replay.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Lateness {
    /// Median lateness in microseconds.
    pub p50_us: f64,
    /// 99th percentile in microseconds.
    pub p99_us: f64,
    /// Worst sampled lateness in microseconds.
    pub max_us: f64,
    /// Samples behind the figures.
    pub samples: usize,
}

const MAX_SAMPLES: usize = 1 << 20;

impl Pacer {
    /// A pacer at `speed`.
    pub fn new(speed: Speed) -> Pacer {
        Pacer {
            speed,
            origin: None,
            samples: Vec::new(),
            sample_every: 1,
            seen: 0,
        }
    }

    /// Waits until the event at `ts` is due, then notes how late we are.
    pub fn wait_for(&mut self, ts: UnixNanos) {
        let Speed::Factor(speed) = self.speed else {
            return;
        };
        let (start, first) = *self.origin.get_or_insert((Instant::now(), ts));
        let offset = ((ts - first).max(0) as f64 / speed) as u64;
        let due = start + Duration::from_nanos(offset);
        let now = Instant::now();
        if due > now {
            let ahead = due - now;
            if ahead > Duration::from_micros(300) {
                std::thread::sleep(ahead - Duration::from_micros(200));
            }
            while Instant::now() < due {
                std::hint::spin_loop();
            }
        }
        self.seen += 1;
        if self.seen % self.sample_every == 0 {
            let late = Instant::now().saturating_duration_since(due);
            self.samples
                .push(late.as_micros().min(u32::MAX as u128) as u32);
            if self.samples.len() >= MAX_SAMPLES {
                // Keep memory flat on long replays: halve the samples, sample half as often.
                let kept: Vec<u32> = self.samples.iter().step_by(2).copied().collect();
                self.samples = kept;
                self.sample_every *= 2;
            }
        }
    }

    /// Restarts the clock so a pause (e.g. waiting for a lockstep ack) is not lateness.
    pub fn rebase(&mut self, ts: UnixNanos) {
        if self.origin.is_some() {
            self.origin = Some((Instant::now(), ts));
        }
    }

    /// Lateness percentiles (None when not pacing).
    pub fn lateness(&self) -> Option<Lateness> {
        if self.samples.is_empty() {
            return None;
        }
        let mut s = self.samples.clone();
        s.sort_unstable();
        let pct = |p: f64| s[((s.len() - 1) as f64 * p).round() as usize] as f64;
        Some(Lateness {
            p50_us: pct(0.5),
            p99_us: pct(0.99),
            max_us: *s.last().unwrap_or(&0) as f64,
            samples: s.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speed_parses_factors_and_max() {
        assert_eq!("max".parse::<Speed>(), Ok(Speed::Max));
        assert_eq!("10".parse::<Speed>(), Ok(Speed::Factor(10.0)));
        assert_eq!("2x".parse::<Speed>(), Ok(Speed::Factor(2.0)));
        assert!("0".parse::<Speed>().is_err());
        assert!("fast".parse::<Speed>().is_err());
    }

    #[test]
    fn pacer_spaces_events_by_recorded_time_over_speed() {
        let mut p = Pacer::new(Speed::Factor(10.0));
        let t0 = Instant::now();
        p.wait_for(0);
        p.wait_for(200_000_000); // 200 ms recorded = 20 ms at 10x
        let took = t0.elapsed();
        assert!(took >= Duration::from_millis(20), "{took:?}");
        assert!(p.lateness().is_some());
    }
}
