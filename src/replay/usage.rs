//! What a replay cost the machine, for its summary: the process's CPU time and peak
//! memory, and the CPU time the hypervisor took from this machine meanwhile (its
//! "steal"), which tells a paced replay's lateness caused by the host apart from its own;
//! and what kept the replay thread itself from running: other threads on its CPU (its
//! run delay and preemptions) and, with `own_core`, the hypervisor on its CPU.

use std::time::{Duration, Instant};

/// The counters when a replay started.
#[derive(Clone, Copy, Debug)]
pub struct Usage {
    started: Instant,
    process: Process,
    steal: Option<Duration>,
    /// The replay thread's own CPU (`own_core`) and its steal so far.
    own_cpu: Option<(usize, Option<Duration>)>,
    /// The calling (replay) thread's scheduling counters.
    thread: Option<Thread>,
}

/// The calling thread's scheduling counters (Linux).
#[derive(Clone, Copy, Debug)]
struct Thread {
    /// Time it was ready to run and waited for a CPU (`/proc/thread-self/schedstat`).
    run_delay: Duration,
    /// Times the scheduler took the CPU from it while it could still run (`ru_nivcsw`).
    preempted: u64,
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
    /// The CPU the replay thread had to itself (`own_core`).
    pub own_cpu: Option<usize>,
    /// The same for the replay thread's own CPU alone (`own_core`): time the hypervisor
    /// kept that CPU from running it.
    pub own_cpu_steal_secs: Option<f64>,
    /// Seconds the replay thread was ready to run and waited for a CPU while other
    /// threads ran (its scheduler run delay); None where the kernel does not keep it.
    pub run_delay_secs: Option<f64>,
    /// Times the scheduler took the CPU from the replay thread while it could still run.
    pub preempted: Option<u64>,
    /// Peak resident memory of the process so far, in MiB.
    pub peak_rss_mib: f64,
    /// Page faults of this process that waited for a read from storage (its code or a
    /// mapped file evicted from memory), each stalling the faulting thread meanwhile.
    pub major_faults: u64,
}

impl Usage {
    /// The counters now; `own_cpu` is the CPU the replay thread has to itself, if any.
    /// Called on the replay thread, as [`Usage::finish`] is.
    pub fn start(own_cpu: Option<usize>) -> Usage {
        Usage {
            started: Instant::now(),
            process: Process::now(),
            steal: machine_steal(None),
            own_cpu: own_cpu.map(|cpu| (cpu, machine_steal(Some(cpu)))),
            thread: Thread::now(),
        }
    }

    /// When [`Usage::start`] was called: the replay's clock.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// What was used since [`Usage::start`].
    pub fn finish(&self) -> Used {
        let now = Process::now();
        let thread = self.thread.zip(Thread::now());
        Used {
            run_delay_secs: thread
                .map(|(then, now)| now.run_delay.saturating_sub(then.run_delay).as_secs_f64()),
            preempted: thread.map(|(then, now)| now.preempted.saturating_sub(then.preempted)),
            cpu_secs: now.cpu.saturating_sub(self.process.cpu).as_secs_f64(),
            steal_secs: since(self.steal, None),
            own_cpu: self.own_cpu.map(|(cpu, _)| cpu),
            own_cpu_steal_secs: self.own_cpu.and_then(|(cpu, then)| since(then, Some(cpu))),
            peak_rss_mib: now.peak_rss_bytes as f64 / (1024.0 * 1024.0),
            major_faults: now.major_faults.saturating_sub(self.process.major_faults),
        }
    }
}

impl Thread {
    fn now() -> Option<Thread> {
        #[cfg(target_os = "linux")]
        {
            let schedstat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
            // SAFETY: getrusage fills the zeroed struct it is given.
            let mut u: libc::rusage = unsafe { std::mem::zeroed() };
            if unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut u) } != 0 {
                return None;
            }
            Some(Thread {
                run_delay: run_delay_from_schedstat(&schedstat)?,
                preempted: u.ru_nivcsw.max(0) as u64,
            })
        }
        #[cfg(not(target_os = "linux"))]
        None
    }
}

/// The run delay in a `schedstat` text: "on-CPU ns, run-delay ns, time slices".
fn run_delay_from_schedstat(schedstat: &str) -> Option<Duration> {
    let ns = schedstat.split_ascii_whitespace().nth(1)?.parse().ok()?;
    Some(Duration::from_nanos(ns))
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

/// Seconds of steal since `then` (of every CPU, or of `cpu`).
fn since(then: Option<Duration>, cpu: Option<usize>) -> Option<f64> {
    then.zip(machine_steal(cpu))
        .map(|(then, now)| now.saturating_sub(then).as_secs_f64())
}

/// The machine's steal time so far, all CPUs (`cpu` None) or one: the eighth value of the
/// `cpu` (or `cpuN`) line of `/proc/stat`, in clock ticks.
fn machine_steal(cpu: Option<usize>) -> Option<Duration> {
    #[cfg(target_os = "linux")]
    {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        steal_from_stat(&stat, u64::try_from(hz).ok().filter(|&hz| hz > 0)?, cpu)
    }
    #[cfg(not(target_os = "linux"))]
    None
}

/// The steal time in a `/proc/stat` text at `hz` ticks a second, of every CPU (the `cpu`
/// line) or of `cpu` (its `cpuN` line); None if the line is missing, has no steal field
/// (kernels before 2.6.11) or is not numbers.
fn steal_from_stat(stat: &str, hz: u64, cpu: Option<usize>) -> Option<Duration> {
    let name = match cpu {
        Some(n) => format!("cpu{n}"),
        None => "cpu".into(),
    };
    let mut fields = stat
        .lines()
        .map(str::split_ascii_whitespace)
        .find_map(|mut f| (f.next() == Some(name.as_str())).then_some(f))?;
    // user nice system idle iowait irq softirq steal ...
    let ticks: u64 = fields.nth(7)?.parse().ok()?;
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
                    cpu0 90000 0 8000 1772000 300 0 200 2229 0 0\n\
                    cpu1 90685 0 8511 1772539 359 0 281 2229 0 0\n\
                    cpu10 1 0 1 1 1 0 1 7 0 0\n";
        assert_eq!(
            steal_from_stat(stat, 100, None),
            Some(Duration::from_millis(44_580))
        );
        assert_eq!(
            steal_from_stat(stat, 1000, None),
            Some(Duration::from_millis(4_458))
        );
        assert_eq!(
            steal_from_stat(stat, 100, Some(1)),
            Some(Duration::from_millis(22_290))
        );
        // cpu1 is not the start of cpu10's line, nor the reverse.
        assert_eq!(
            steal_from_stat(stat, 100, Some(10)),
            Some(Duration::from_millis(70))
        );
        assert_eq!(steal_from_stat(stat, 100, Some(2)), None);
        // An old kernel's line without it, a line that is not numbers, no cpu line.
        assert_eq!(steal_from_stat("cpu  1 2 3 4 5 6 7\n", 100, None), None);
        assert_eq!(steal_from_stat("cpu  1 2 3 4 5 6 7 x\n", 100, None), None);
        assert_eq!(steal_from_stat("intr 1 2\n", 100, None), None);
    }

    #[test]
    fn run_delay_is_the_second_value_of_schedstat() {
        assert_eq!(
            run_delay_from_schedstat("1088549 2500 1\n"),
            Some(Duration::from_nanos(2500))
        );
        assert_eq!(run_delay_from_schedstat("1088549\n"), None);
        assert_eq!(run_delay_from_schedstat("a b c\n"), None);
    }

    #[test]
    fn a_replay_uses_what_it_spins_and_the_machine_reports_its_steal() {
        let usage = Usage::start(Some(0));
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
        #[cfg(target_os = "linux")]
        assert!(
            used.own_cpu_steal_secs.is_some_and(|s| s >= 0.0),
            "{used:?}"
        );
        assert_eq!(used.own_cpu, Some(0));
        assert!(Usage::start(None).finish().own_cpu_steal_secs.is_none());
        #[cfg(target_os = "linux")]
        assert!(
            used.run_delay_secs.is_some_and(|s| s >= 0.0) && used.preempted.is_some(),
            "{used:?}"
        );
    }
}
