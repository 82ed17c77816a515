//! What a replay cost the machine, for its summary: the process's CPU time and peak
//! memory, and the CPU time the hypervisor took from this machine meanwhile (its
//! "steal"), which tells a paced replay's lateness caused by the host apart from its own.

use std::time::{Duration, Instant};

/// The counters when a replay started.
#[derive(Clone, Copy, Debug)]
pub struct Usage {
    started: Instant,
    process: Process,
    steal: Option<Duration>,
}

/// The process's own counters, from one `getrusage` (zero where it fails).
#[derive(Clone, Copy, Debug, Default)]
struct Process {
    /// User + system CPU time so far.
    cpu: Duration,
    /// Major page faults so far (`ru_majflt`).
    major_faults: u64,
    /// Peak resident set so far, in bytes (`ru_maxrss`).
    peak_rss_bytes: u64,
}

/// What the replay used from [`Usage::start`] to [`Usage::finish`].
#[derive(Clone, Copy, Debug)]
pub struct Used {
    /// CPU seconds, user + system, every thread of this process.
    pub cpu_secs: f64,
    /// Steal seconds summed over every CPU of the machine (the whole machine, not this
    /// process): time its virtual CPUs had work and the hypervisor ran something else.
    /// None where the kernel does not report it (not Linux, `/proc` unreadable).
    pub steal_secs: Option<f64>,
    /// Peak resident memory of the process so far, in MiB.
    pub peak_rss_mib: f64,
    /// Page faults of this process that waited for a read from storage (its code or a
    /// mapped file evicted from memory), each stalling the faulting thread meanwhile.
    pub major_faults: u64,
}

impl Usage {
    pub fn start() -> Usage {
        Usage {
            started: Instant::now(),
            process: Process::now(),
            steal: machine_steal(),
        }
    }

    /// When [`Usage::start`] was called: the replay's clock.
    pub fn started(&self) -> Instant {
        self.started
    }

    pub fn finish(&self) -> Used {
        let now = Process::now();
        Used {
            cpu_secs: now.cpu.saturating_sub(self.process.cpu).as_secs_f64(),
            steal_secs: self
                .steal
                .zip(machine_steal())
                .map(|(then, now)| now.saturating_sub(then).as_secs_f64()),
            peak_rss_mib: now.peak_rss_bytes as f64 / (1024.0 * 1024.0),
            major_faults: now.major_faults.saturating_sub(self.process.major_faults),
        }
    }
}

impl Process {
    fn now() -> Process {
        // SAFETY: getrusage fills the zeroed struct it is given.
        let mut u: libc::rusage = unsafe { std::mem::zeroed() };
        if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
            return Process::default();
        }
        let tv = |t: libc::timeval| {
            Duration::from_secs(t.tv_sec.max(0) as u64)
                + Duration::from_micros(t.tv_usec.max(0) as u64)
        };
        Process {
            cpu: tv(u.ru_utime) + tv(u.ru_stime),
            major_faults: u.ru_majflt.max(0) as u64,
            // Linux reports kibibytes.
            peak_rss_bytes: u.ru_maxrss.max(0) as u64 * 1024,
        }
    }
}

/// The machine's steal time so far, all CPUs: the eighth value of the `cpu` line of
/// `/proc/stat`, in clock ticks.
fn machine_steal() -> Option<Duration> {
    #[cfg(target_os = "linux")]
    {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        steal_from_stat(&stat, u64::try_from(hz).ok().filter(|&hz| hz > 0)?)
    }
    #[cfg(not(target_os = "linux"))]
    None
}

/// The steal time in a `/proc/stat` text at `hz` ticks a second; None if its `cpu` line
/// has no steal field (kernels before 2.6.11) or is not numbers.
fn steal_from_stat(stat: &str, hz: u64) -> Option<Duration> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    // user nice system idle iowait irq softirq steal ...
    let ticks: u64 = line.split_ascii_whitespace().nth(8)?.parse().ok()?;
    Some(Duration::from_nanos(
        ticks.saturating_mul(1_000_000_000 / hz),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steal_is_the_eighth_value_of_the_cpu_line() {
        let stat = "cpu  180685 0 16511 3544539 659 0 481 4458 0 0\n\
                    cpu0 90000 0 8000 1772000 300 0 200 2229 0 0\n";
        assert_eq!(
            steal_from_stat(stat, 100),
            Some(Duration::from_millis(44_580))
        );
        assert_eq!(
            steal_from_stat(stat, 1000),
            Some(Duration::from_millis(4_458))
        );
        // An old kernel's line without it, a line that is not numbers, no cpu line.
        assert_eq!(steal_from_stat("cpu  1 2 3 4 5 6 7\n", 100), None);
        assert_eq!(steal_from_stat("cpu  1 2 3 4 5 6 7 x\n", 100), None);
        assert_eq!(steal_from_stat("intr 1 2\n", 100), None);
    }

    #[test]
    fn a_replay_uses_what_it_spins_and_the_machine_reports_its_steal() {
        let usage = Usage::start();
        // Spin until the process has used 20 ms more (other tests' threads count too),
        // however busy the machine; a minute at most.
        let before = Process::now().cpu;
        let spin = Instant::now();
        while Process::now().cpu < before + Duration::from_millis(20)
            && spin.elapsed() < Duration::from_secs(60)
        {
            std::hint::black_box(spin.elapsed());
        }
        let used = usage.finish();
        assert!(used.cpu_secs >= 0.02, "{used:?}");
        assert!(used.peak_rss_mib > 0.0, "{used:?}");
        #[cfg(target_os = "linux")]
        assert!(used.steal_secs.is_some_and(|s| s >= 0.0), "{used:?}");
    }
}
