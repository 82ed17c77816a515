//! Wall-clock pacing of replayed events and the lateness it achieved.
//!
//! At speed `s`, an event recorded `Δ` after the first one is due `Δ / s` after the
//! replay started. How the pacer waits for that instant is [`Waiting`]: by default it
//! sleeps until a margin before it and spins the rest, with the thread's timer slack at
//! 1 ns (the kernel's default 50 µs is added to every sleep) and a margin that follows
//! the sleep overshoot this thread actually sees.
//!
//! Lateness, per event: the instant its send returned (the message is in the bus's
//! queue) minus its due time. Every event counts, including those whose due times are
//! closer together than a send takes: they go back to back and each is late by the sends
//! before it, which is what a subscriber sees. Over shared memory without lockstep, a
//! burst written ahead is published with one store at its due time
//! ([`Pacer::published_burst`]): its events' instant is that store, when a reader that
//! polls sees them; the wake-up of a reader asleep follows, and *woken* is taken after
//! it. More figures tell the causes apart:
//! - *first*: only the first event of each due time (recorded data comes in bursts that
//!   share one `ts_recv`: a depth update of many levels, a snapshot): when each burst
//!   started going out, the schedule a trader reads off the data;
//! - *waited*: only the events the pacer found still ahead of their due time and waited
//!   for: the precision of the wait itself, plus one send;
//! - *floor*: the lateness a sender that woke exactly on time would have had, given the
//!   data's due times and this run's own time from wake-up to send returned for each
//!   event: what the data and the bare sends force, whatever the waiting technique. Kept
//!   for every event and for the first of each due time;
//! - *stalls*: while it spins, the pacer reads the clock back to back (tens of
//!   nanoseconds apart), so a gap of [`STALL`] or more between two reads is time the
//!   machine took the thread off its CPU (an interrupt, another thread, the hypervisor
//!   running another guest). Counted, and where a stall covered an event's due time the
//!   thread could not have sent before its end: *floor with stalls* is the floor with
//!   such an event's wake-up moved to the end of its stall, what this machine allowed a
//!   sender spinning exactly as this one. Only stalls seen while spinning count: busy
//!   waiting spins throughout, the default only for its last margin, so elsewhere the
//!   figure is a lower bound;
//! - *answers*: the simulated exchange's messages in answer to market events (fills of
//!   resting orders, the order updates a market event causes), from the event's due
//!   time to the instant they became visible: what the market data's punctuality costs
//!   the exchange's, where the exchange works after each burst and behind the bursts
//!   held ahead of it.

use std::time::{Duration, Instant};

use crate::event::UnixNanos;
use crate::shutdown::Stop;

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

/// How a paced replay waits for each event's due time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Waiting {
    /// Sleep until an adaptive margin before the due time, spin the rest; timer slack
    /// 1 ns; the dataset decoded ahead on its own thread. The default.
    #[default]
    Spin,
    /// Sleep until the due time and never spin (timer slack 1 ns, read ahead): the
    /// cheapest in CPU, late by the sleep's overshoot.
    Sleep,
    /// Never sleep: spin to every due time (read ahead). The replay thread holds a core
    /// for the whole replay, and the core never idles: on a virtual machine an idle
    /// core's wake-up goes through the hypervisor, the likeliest source of the
    /// millisecond stalls a sleeping replay showed here (`docs/BENCHMARKS.md`, session
    /// 19). Best with `own_core`, so that nothing else needs that core.
    Busy,
    /// The pacing before issue 14, kept as a benchmark baseline: sleep until 200 µs
    /// before, spin the rest, the default timer slack, decoding on the sending thread.
    Legacy,
}

impl Waiting {
    /// Whether the dataset is decoded on a thread of its own.
    pub fn reads_ahead(self) -> bool {
        self != Waiting::Legacy
    }
}

impl std::str::FromStr for Waiting {
    type Err = String;

    fn from_str(s: &str) -> Result<Waiting, String> {
        match s {
            "spin" => Ok(Waiting::Spin),
            "sleep" => Ok(Waiting::Sleep),
            "busy" => Ok(Waiting::Busy),
            "legacy" => Ok(Waiting::Legacy),
            _ => Err(format!("bad pacing {s:?}: use spin, sleep, busy or legacy")),
        }
    }
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

impl Lateness {
    /// The percentiles (nearest rank) of `ns`, nanoseconds, which it sorts; None when
    /// empty.
    pub fn of_nanos(ns: &mut [u32]) -> Option<Lateness> {
        ns.sort_unstable();
        let &max = ns.last()?;
        let us = |ns: u32| ns as f64 / 1e3;
        let pct = |p: f64| us(nearest_rank(ns, p));
        Some(Lateness {
            p50_us: pct(0.5),
            p99_us: pct(0.99),
            max_us: us(max),
            samples: ns.len(),
        })
    }
}

/// The `p` quantile (0..=1) of `sorted`, nearest rank; `sorted` is not empty.
fn nearest_rank(sorted: &[u32], p: f64) -> u32 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// How long the sends of a paced replay took, one event at a time: each from the
/// wake-up, or the return of the send before it in its burst, to its own return. Over
/// ZeroMQ most take a few hundred nanoseconds (the message handed to libzmq's queue); a
/// few percent take 5 µs or more, nearly all of them the first send of a burst, which
/// wakes libzmq's I/O thread (counted in docs/BENCHMARKS.md, session 27). A burst's last
/// event is late by the sum of its sends, so these are what the lateness of a large
/// burst is made of, and what `pace_probe bare` reports beside it.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct SendTimes {
    /// Median, nanoseconds.
    pub p50_ns: u64,
    /// 90th percentile, nanoseconds.
    pub p90_ns: u64,
    /// 99th percentile, nanoseconds.
    pub p99_ns: u64,
    /// Longest sampled, nanoseconds.
    pub max_ns: u64,
    /// Sends sampled.
    pub samples: usize,
    /// Sampled sends of [`SLOW_SEND`] or more.
    pub slow: usize,
    /// Their time together, microseconds.
    pub slow_us: f64,
}

/// A send this long or longer is slow ([`SendTimes::slow`]): far above the queueing of a
/// message, a system call or a wait.
pub const SLOW_SEND: Duration = Duration::from_micros(5);

impl SendTimes {
    /// The figures (nearest rank) of `ns`, nanoseconds, which it sorts; None when empty.
    pub fn of_nanos(ns: &mut [u32]) -> Option<SendTimes> {
        ns.sort_unstable();
        let &max = ns.last()?;
        let pct = |p: f64| u64::from(nearest_rank(ns, p));
        let slow_from = ns.partition_point(|&n| u64::from(n) < nanos(SLOW_SEND));
        let slow = &ns[slow_from..];
        Some(SendTimes {
            p50_ns: pct(0.5),
            p90_ns: pct(0.9),
            p99_ns: pct(0.99),
            max_ns: u64::from(max),
            samples: ns.len(),
            slow: slow.len(),
            slow_us: slow.iter().map(|&n| f64::from(n)).sum::<f64>() / 1e3,
        })
    }
}

/// What a paced replay achieved (see the module documentation for the definitions).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct PacingReport {
    /// How the pacer waited.
    pub waiting: Waiting,
    /// Every event: send returned − due.
    pub lateness: Option<Lateness>,
    /// The first event of each due time.
    pub first: Option<Lateness>,
    /// The events the pacer waited for.
    pub waited: Option<Lateness>,
    /// What an exactly-on-time wake-up would have given with this run's sends, every
    /// event.
    pub floor: Option<Lateness>,
    /// The same, the first event of each due time.
    pub floor_first: Option<Lateness>,
    /// How long each event's send took, for events sent one at a time (ZeroMQ, NATS;
    /// not the bursts written into shared memory).
    pub sends: Option<SendTimes>,
    /// Every event, taken when the wake-up of the readers asleep that followed its
    /// publication returned (shared memory, paced without lockstep): the figures above
    /// end at the publication, when a reader that polls sees the event. Not taken with a
    /// backup publisher, which makes the wake-ups.
    pub woken: Option<Lateness>,
    /// The simulated exchange's messages in answer to market events, every message, from
    /// the event's due time to visible (with an exchange host only).
    pub answers: Option<Lateness>,
    /// Sleep margin at the end of the replay, microseconds (spin waiting only).
    pub margin_us: Option<f64>,
    /// Time the machine took the replay thread off its CPU while it spun.
    pub stalls: Stalls,
    /// The floor with the stalls: every event, an event whose due time fell in a stall
    /// woken at the stall's end.
    pub floor_stalled: Option<Lateness>,
    /// What the backup publisher did, when one ran (`[replay] backup_publisher`).
    pub backup: Option<Covered>,
}

/// The bursts (or parts of bursts) a backup publisher ([`crate::shm::backup`]) published
/// before the replay thread did: their events' lateness is taken at the backup's
/// publication.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Covered {
    /// Bursts (publications) it made first, whole or in part.
    pub bursts: u64,
    /// The events it published first.
    pub events: u64,
    /// How much earlier than the replay thread, in all, milliseconds.
    pub earlier_ms: f64,
    /// The most for one burst, microseconds.
    pub most_earlier_us: f64,
    /// Bursts written into the rings well ahead of their due time (up to 1 ms), before
    /// the exchange host's work, and held there until it (whoever published them).
    pub held_bursts: u64,
    /// Their events.
    pub held_events: u64,
    /// Bursts (or parts) whose writing ended less than [`EXPOSED`] before their due time,
    /// or after it: a stall of the replay thread's core while they were written makes
    /// them late, whatever the backup does.
    pub exposed_bursts: u64,
    /// Their events.
    pub exposed_events: u64,
}

/// How far ahead of its due time a burst must be written for a stall of the replay
/// thread's core (once it is written) not to make it late: the lateness that matters.
pub const EXPOSED: Duration = Duration::from_micros(100);

/// The shortest gap between two clock reads of a spinning pacer counted as a stall. A
/// spin's reads are tens of nanoseconds apart; this is far above that and well below
/// the lateness that matters (100 µs).
pub const STALL: Duration = Duration::from_micros(10);

/// Stalls ([`STALL`] or longer) the pacer saw while it spun.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Stalls {
    /// Seconds the pacer spent spinning, over which the stalls were seen.
    pub spun_secs: f64,
    /// Stalls seen.
    pub count: u64,
    /// Their total, milliseconds.
    pub lost_ms: f64,
    /// The longest, microseconds.
    pub longest_us: f64,
    /// Those of 100 µs or more, the lateness that matters (the shorter ones are mostly
    /// the kernel's own work on the CPU, such as its timer tick).
    pub long: u64,
    /// Their total, milliseconds.
    pub long_ms: f64,
    /// Due times that fell in a stall (the event could not be sent before its end).
    pub due_in_stall: u64,
}

impl Stalls {
    /// Counts `gap`, the time between two clock reads of a spin, if it is a stall;
    /// whether it was. The caller adds the time spun.
    pub fn note(&mut self, gap: Duration) -> bool {
        if gap < STALL {
            return false;
        }
        let ms = gap.as_secs_f64() * 1e3;
        self.count += 1;
        self.lost_ms += ms;
        if gap >= Duration::from_micros(100) {
            self.long += 1;
            self.long_ms += ms;
        }
        self.longest_us = self.longest_us.max(ms * 1e3);
        true
    }

    /// Spins until `until` or until `stopped()`, counting the stalls it sees and the time
    /// spun; when `until` fell in a stall, how long after it the stall ended.
    pub fn spin_until(&mut self, until: Instant, stopped: impl Fn() -> bool) -> Option<Duration> {
        let began = Instant::now();
        let mut last = began;
        let mut past = None;
        while last < until && !stopped() {
            std::hint::spin_loop();
            let now = Instant::now();
            if self.note(now - last) && now >= until {
                past = Some(now - until);
            }
            last = now;
        }
        self.spun_secs += (last - began).as_secs_f64();
        past
    }
}

const MAX_SAMPLES: usize = 1 << 20;

/// A bounded, uniformly thinned sample of durations (nanoseconds, saturating at 4.29 s).
struct Samples {
    ns: Vec<u32>,
    every: u64,
    seen: u64,
}

impl Samples {
    fn new() -> Samples {
        Samples {
            ns: Vec::new(),
            every: 1,
            seen: 0,
        }
    }

    fn push(&mut self, ns: u64) {
        self.seen += 1;
        if !self.seen.is_multiple_of(self.every) {
            return;
        }
        self.ns.push(ns.min(u32::MAX as u64) as u32);
        if self.ns.len() >= MAX_SAMPLES {
            // Keep memory flat on long replays: halve the samples, sample half as often.
            let kept: Vec<u32> = self.ns.iter().step_by(2).copied().collect();
            self.ns = kept;
            self.every *= 2;
        }
    }

    fn summary(&self) -> Option<Lateness> {
        Lateness::of_nanos(&mut self.ns.clone())
    }
}

/// The sleep margin of spin waiting: jumps to 1.5 × an overshoot that needed more, then
/// decays slowly towards what recent sleeps needed, between bounds. The upper bound is
/// low on purpose: the margin is there for the timer's wake-up latency. An overshoot of
/// milliseconds is the scheduler giving the core to someone else, which a spinning
/// thread suffers as well; following it made the replay spin for milliseconds per event
/// and, under CFS, be preempted all the more (measured: p99 3.7 ms vs 0.5 ms sleeping).
#[derive(Clone, Copy, Debug)]
struct Margin {
    ns: u64,
}

impl Margin {
    const START: u64 = 200_000;
    const MIN: u64 = 20_000;
    const MAX: u64 = 300_000;
    /// Slack above 1.5 × the overshoot, for the wake-up's own work.
    const GUARD: u64 = 10_000;

    fn new() -> Margin {
        Margin { ns: Self::START }
    }

    fn get(self) -> Duration {
        Duration::from_nanos(self.ns)
    }

    fn observe(&mut self, overshoot: Duration) {
        let over = overshoot.as_nanos().min(u64::MAX as u128) as u64;
        let need = (over + over / 2 + Self::GUARD).clamp(Self::MIN, Self::MAX);
        if need > self.ns {
            self.ns = need;
        } else {
            self.ns -= (self.ns - need).div_ceil(128);
        }
    }
}

/// Nanoseconds after the replay's first event at which the event at `ts` is due.
pub fn due_offset(first: UnixNanos, ts: UnixNanos, speed: f64) -> u64 {
    ((ts - first).max(0) as f64 / speed) as u64
}

/// The floor: when a sender that woke exactly at each due time and spent `work` per
/// event would have finished each send.
#[derive(Clone, Copy, Debug, Default)]
struct Floor {
    done_ns: u64,
}

impl Floor {
    /// The floor lateness of an event due at `due_ns` whose wake-up-to-sent took `work_ns`.
    fn next(&mut self, due_ns: u64, work_ns: u64) -> u64 {
        self.next_from(due_ns, due_ns, work_ns)
    }

    /// The same for a sender that could not start before `start_ns` (≥ `due_ns`).
    fn next_from(&mut self, due_ns: u64, start_ns: u64, work_ns: u64) -> u64 {
        self.done_ns = self.done_ns.max(start_ns) + work_ns;
        self.done_ns - due_ns
    }
}

/// The calling thread's timer slack at 1 ns while this lives (Linux), restored on drop.
struct TimerSlack {
    #[cfg(target_os = "linux")]
    previous: libc::c_ulong,
    /// Restored on the thread that set it: not `Send`.
    _thread: std::marker::PhantomData<*const ()>,
}

impl TimerSlack {
    fn tighten() -> Option<TimerSlack> {
        #[cfg(target_os = "linux")]
        {
            // SAFETY: prctl with PR_GET/SET_TIMERSLACK reads or sets a per-thread value.
            let previous = unsafe { libc::prctl(libc::PR_GET_TIMERSLACK, 0, 0, 0, 0) };
            if previous < 0 {
                return None;
            }
            let one: libc::c_ulong = 1;
            if unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, one, 0, 0, 0) } != 0 {
                return None;
            }
            Some(TimerSlack {
                previous: previous as libc::c_ulong,
                _thread: std::marker::PhantomData,
            })
        }
        #[cfg(not(target_os = "linux"))]
        None
    }
}

impl Drop for TimerSlack {
    fn drop(&mut self) {
        #[cfg(target_os = "linux")]
        // SAFETY: as in `tighten`.
        unsafe {
            libc::prctl(libc::PR_SET_TIMERSLACK, self.previous, 0, 0, 0);
        }
    }
}

/// The calling thread under real-time scheduling (`SCHED_FIFO`) while this lives,
/// restored on drop: on a loaded machine a woken replay thread otherwise waits its turn
/// behind every runnable process (milliseconds). Its waits still sleep, so it leaves the
/// core to others between events; the kernel's real-time throttling bounds it anyway
/// (which is why a replay that never sleeps is refused it: [`busy_realtime_refusal`]).
pub struct Realtime {
    #[cfg(target_os = "linux")]
    previous: (libc::c_int, libc::sched_param),
    /// Restored on the thread that set it: not `Send`.
    _thread: std::marker::PhantomData<*const ()>,
}

impl Realtime {
    /// The `SCHED_FIFO` priority the replay thread takes (1 lowest, 99 highest): above
    /// every ordinary process, below the kernel's own real-time threads.
    pub const PRIORITY: i32 = 10;

    /// Puts the calling thread under `SCHED_FIFO`; an error when the system refuses
    /// (no `CAP_SYS_NICE`, no real-time budget, not Linux).
    pub fn raise() -> anyhow::Result<Realtime> {
        #[cfg(target_os = "linux")]
        {
            // SAFETY: pid 0 is the calling thread; the structs are plain data.
            unsafe {
                let policy = libc::sched_getscheduler(0);
                let mut param: libc::sched_param = std::mem::zeroed();
                if policy < 0 || libc::sched_getparam(0, &mut param) != 0 {
                    anyhow::bail!(
                        "cannot read the scheduling policy: {}",
                        std::io::Error::last_os_error()
                    );
                }
                let fifo = libc::sched_param {
                    sched_priority: Self::PRIORITY,
                };
                if libc::sched_setscheduler(0, libc::SCHED_FIFO, &fifo) != 0 {
                    anyhow::bail!(
                        "real-time scheduling refused ({}): it needs CAP_SYS_NICE or an RLIMIT_RTPRIO of at least {}",
                        std::io::Error::last_os_error(),
                        Self::PRIORITY
                    );
                }
                Ok(Realtime {
                    previous: (policy, param),
                    _thread: std::marker::PhantomData,
                })
            }
        }
        #[cfg(not(target_os = "linux"))]
        anyhow::bail!("real-time scheduling of the replay thread is only implemented on Linux")
    }
}

/// Why real-time scheduling would stall a replay thread that never sleeps
/// ([`Waiting::Busy`]), given the kernel's real-time budget
/// (`/proc/sys/kernel/sched_rt_runtime_us` of `sched_rt_period_us`; a runtime of -1 is
/// no limit): a `SCHED_FIFO` thread that spins through its budget is stopped for the
/// rest of every period (50 ms of every second by default). Measured here: a busy replay
/// under `--realtime` had lateness maxima of 40–44 ms in every run (`docs/BENCHMARKS.md`,
/// session 28). None when there is no such budget.
pub fn busy_realtime_refusal(runtime_us: i64, period_us: i64) -> Option<String> {
    if runtime_us < 0 || runtime_us >= period_us {
        return None;
    }
    let stopped_ms = (period_us - runtime_us) as f64 / 1e3;
    Some(format!(
        "--realtime (realtime = true) with --pacing busy: a real-time thread that never sleeps uses up the kernel's real-time budget (kernel.sched_rt_runtime_us = {runtime_us} of every {period_us} µs here) and is stopped for {stopped_ms} ms of every period, so the replay would be that late once a period; use --own-core --pacing busy without --realtime, or --realtime with the default pacing (spin), or lift the budget (sysctl kernel.sched_rt_runtime_us=-1)"
    ))
}

/// [`busy_realtime_refusal`] for this machine's budget (None when it cannot be read:
/// not Linux, or no such files).
pub fn busy_realtime_refusal_here() -> Option<String> {
    let read = |name: &str| -> Option<i64> {
        std::fs::read_to_string(format!("/proc/sys/kernel/{name}"))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    busy_realtime_refusal(read("sched_rt_runtime_us")?, read("sched_rt_period_us")?)
}

impl Drop for Realtime {
    fn drop(&mut self) {
        #[cfg(target_os = "linux")]
        // SAFETY: as in `raise`.
        unsafe {
            libc::sched_setscheduler(0, self.previous.0, &self.previous.1);
        }
    }
}

/// The event being sent: when it was due and when the wait for it ended.
#[derive(Clone, Copy, Debug)]
struct Current {
    due: Instant,
    due_ns: u64,
    woke: Instant,
    waited: bool,
    /// How long after its due time the stall it fell in ended (0: none seen).
    stalled_ns: u64,
}

/// Paces sends and keeps lateness samples.
pub struct Pacer {
    speed: Speed,
    waiting: Waiting,
    stop: Option<Stop>,
    origin: Option<(Instant, UnixNanos)>,
    margin: Margin,
    current: Option<Current>,
    /// Due time of the last event sent (None before the first and after a rebase).
    last_due_ns: Option<u64>,
    floor: Floor,
    /// The floor with the stalls seen.
    floor_stalled: Floor,
    stalls: Stalls,
    /// Set by the last spin: how long after its due time the stall it ended in ended.
    stalled_ns: u64,
    all: Samples,
    first: Samples,
    waited: Samples,
    floors: Samples,
    floors_first: Samples,
    /// Each event's send time, for those sent one at a time ([`SendTimes`]).
    sends: Samples,
    floors_stalled: Samples,
    /// After the wake-up that followed each publication (shared memory).
    woken: Samples,
    /// The exchange host's answers to market events.
    answers: Samples,
    /// Due time and events of the last publication, for [`Pacer::woken`].
    last_published: Option<(Instant, usize)>,
    /// The instants the events of the burst being sent were sent at, until
    /// [`Pacer::burst_sent`] (kept allocated: as long as the largest burst).
    burst: Vec<Instant>,
    /// Bursts a backup publisher made first, once [`Pacer::backed_up`].
    covered: Option<Covered>,
    slack: Option<TimerSlack>,
}

/// Longest single sleep, so a raised stop flag ends a long wait promptly.
const SLEEP_SLICE: Duration = Duration::from_millis(20);

impl Pacer {
    /// A pacer at `speed`, waiting the default way.
    pub fn new(speed: Speed) -> Pacer {
        Pacer {
            speed,
            waiting: Waiting::default(),
            stop: None,
            origin: None,
            margin: Margin::new(),
            current: None,
            last_due_ns: None,
            floor: Floor::default(),
            floor_stalled: Floor::default(),
            stalls: Stalls::default(),
            stalled_ns: 0,
            all: Samples::new(),
            first: Samples::new(),
            waited: Samples::new(),
            floors: Samples::new(),
            floors_first: Samples::new(),
            sends: Samples::new(),
            floors_stalled: Samples::new(),
            woken: Samples::new(),
            answers: Samples::new(),
            last_published: None,
            burst: Vec::new(),
            covered: None,
            slack: None,
        }
    }

    /// Waits `waiting`'s way.
    pub fn waiting(mut self, waiting: Waiting) -> Pacer {
        self.waiting = waiting;
        self
    }

    /// Ends any wait early once `stop` is raised (the caller checks `stop` after
    /// [`Pacer::wait_for`]).
    pub fn interrupted_by(mut self, stop: Stop) -> Pacer {
        self.stop = Some(stop);
        self
    }

    fn stopped(&self) -> bool {
        self.stop.as_ref().is_some_and(Stop::is_set)
    }

    /// Waits until the event at `ts` is due. Call [`Pacer::sent`] once it is sent.
    pub fn wait_for(&mut self, ts: UnixNanos) {
        let Speed::Factor(speed) = self.speed else {
            return;
        };
        let now = Instant::now();
        if self.origin.is_none() && self.waiting != Waiting::Legacy {
            self.slack = TimerSlack::tighten();
        }
        let (start, first) = *self.origin.get_or_insert((now, ts));
        let due_ns = due_offset(first, ts, speed);
        let due = start + Duration::from_nanos(due_ns);
        let waited = due > now;
        self.stalled_ns = 0;
        if waited {
            match self.waiting {
                Waiting::Spin => self.sleep_then_spin(due, now),
                Waiting::Sleep => self.sleep_until(due),
                Waiting::Busy => self.spin_until(due),
                Waiting::Legacy => {
                    let ahead = due - now;
                    if ahead > Duration::from_micros(300) {
                        std::thread::sleep(ahead - Duration::from_micros(200));
                    }
                    self.spin_until(due);
                }
            }
        }
        self.current = Some(Current {
            due,
            due_ns,
            woke: Instant::now(),
            waited,
            stalled_ns: self.stalled_ns,
        });
    }

    /// Waits until `at` the way it waits for a due time (spinning, its stalls counted,
    /// when it never sleeps; sleeping otherwise), for work to do then rather than for a
    /// publication: nothing is recorded. Returns early once a stop is raised.
    pub fn wait_until(&mut self, at: Instant) {
        match self.waiting {
            Waiting::Busy => {
                let stop = &self.stop;
                self.stalls
                    .spin_until(at, || stop.as_ref().is_some_and(Stop::is_set));
            }
            _ => self.sleep_until(at),
        }
    }

    fn sleep_then_spin(&mut self, due: Instant, now: Instant) {
        let margin = self.margin.get();
        if due - now > margin {
            let wake = due - margin;
            self.sleep_until(wake);
            if self.stopped() {
                return;
            }
            self.margin
                .observe(Instant::now().saturating_duration_since(wake));
        }
        self.spin_until(due);
    }

    fn sleep_until(&self, until: Instant) {
        loop {
            let now = Instant::now();
            if now >= until || self.stopped() {
                return;
            }
            std::thread::sleep((until - now).min(SLEEP_SLICE));
        }
    }

    /// Spins until `due`, counting the stalls it sees; when `due` fell in one, notes how
    /// long after it the stall ended.
    fn spin_until(&mut self, due: Instant) {
        let stop = &self.stop;
        if let Some(past) = self
            .stalls
            .spin_until(due, || stop.as_ref().is_some_and(Stop::is_set))
        {
            self.stalled_ns = nanos(past);
            self.stalls.due_in_stall += 1;
        }
    }

    /// Notes that the event [`Pacer::wait_for`] waited for is now sent (visible to
    /// subscribers).
    pub fn sent(&mut self) {
        self.sent_at(Instant::now());
    }

    /// Notes that the next event of the burst [`Pacer::wait_for`] waited for is sent
    /// (visible to subscribers): the clock is read and kept, nothing else. What each
    /// send means (its lateness, its floor, its send time) is worked out once the
    /// burst is out ([`Pacer::burst_sent`]), so the events behind it in the burst do not
    /// wait for that bookkeeping: it was a fifth of each send's time in the large
    /// bursts (`docs/BENCHMARKS.md`, session 28).
    pub fn sent_in_burst(&mut self) {
        self.burst.push(Instant::now());
    }

    /// The burst is out: records each send noted by [`Pacer::sent_in_burst`] as
    /// [`Pacer::sent`] would have at its instant, the first timed from the wake-up and
    /// each other from the send before it, as if [`Pacer::wait_for`] had been called
    /// for it then.
    pub fn burst_sent(&mut self) {
        let mut burst = std::mem::take(&mut self.burst);
        let last = burst.len().saturating_sub(1);
        for (i, &at) in burst.iter().enumerate() {
            let Some(c) = self.sent_at(at) else {
                break;
            };
            if i < last {
                self.current = Some(Current {
                    woke: at,
                    waited: false,
                    stalled_ns: 0,
                    ..c
                });
            }
        }
        burst.clear();
        self.burst = burst;
    }

    /// Records the current event as sent at `now`; returns it.
    fn sent_at(&mut self, now: Instant) -> Option<Current> {
        let c = self.current.take()?;
        let work = nanos(now.saturating_duration_since(c.woke));
        self.sends.push(work);
        let floor = self.floors_of(c, work);
        self.record(c, now, floor);
        self.last_published = Some((c.due, 1));
        Some(c)
    }

    /// How long until the event at `ts` is due: zero when it is, when not pacing, and
    /// before the first wait (which sets the clock).
    pub fn until_due(&self, ts: UnixNanos) -> Duration {
        let (Speed::Factor(speed), Some((start, first))) = (self.speed, self.origin) else {
            return Duration::ZERO;
        };
        (start + Duration::from_nanos(due_offset(first, ts, speed)))
            .saturating_duration_since(Instant::now())
    }

    /// The instant the event at `ts` is due; None when not pacing and before the first
    /// wait (which sets the clock).
    pub fn due_at(&self, ts: UnixNanos) -> Option<Instant> {
        let (Speed::Factor(speed), Some((start, first))) = (self.speed, self.origin) else {
            return None;
        };
        Some(start + Duration::from_nanos(due_offset(first, ts, speed)))
    }

    /// From now on a backup publisher may publish bursts first ([`Pacer::published_burst`]):
    /// the report says how often it did.
    pub fn backed_up(&mut self) {
        self.covered.get_or_insert_with(Covered::default);
    }

    /// Notes that the burst [`Pacer::published_burst`] is about to report, of `events`,
    /// was written ahead and held: the report says how many were.
    pub fn held_burst(&mut self, events: usize) {
        let figures = self.covered.get_or_insert_with(Covered::default);
        figures.held_bursts += 1;
        figures.held_events += events as u64;
    }

    /// Notes that the writing of a burst (or part) of `events` at `ts` ended at `written`:
    /// the report says how many were written less than [`EXPOSED`] ahead of their due
    /// time (with a backup publisher only: without one, every burst depends on this
    /// thread anyway).
    pub fn written_ahead(&mut self, ts: UnixNanos, events: usize, written: Instant) {
        let (Some(due), Some(figures)) = (self.due_at(ts), self.covered.as_mut()) else {
            return;
        };
        if events > 0 && written + EXPOSED > due {
            figures.exposed_bursts += 1;
            figures.exposed_events += events as u64;
        }
    }

    /// Notes that a burst of `events` sharing the due time [`Pacer::wait_for`] waited
    /// for became visible now, all at once, its writing having begun at `began` (before
    /// the due time when it was written ahead and only published on time) — the first
    /// `n` of them at `at` instead when a backup publisher published those before this
    /// thread did (`covered`). The floor is a sender woken exactly at the due time with
    /// the part of this burst's work that was left then: the publication alone when
    /// written ahead, all of it when late.
    pub fn published_burst(
        &mut self,
        events: usize,
        began: Instant,
        covered: Option<(Instant, usize)>,
    ) {
        let Some(c) = self.current.take() else {
            return;
        };
        let now = Instant::now();
        let (mut first, mut early) = (now, 0);
        if let Some((at, n)) = covered.filter(|&(at, n)| at < now && n > 0) {
            let figures = self.covered.get_or_insert_with(Covered::default);
            let earlier = now - at;
            figures.bursts += 1;
            figures.events += n.min(events) as u64;
            figures.earlier_ms += earlier.as_secs_f64() * 1e3;
            figures.most_earlier_us = figures.most_earlier_us.max(earlier.as_secs_f64() * 1e6);
            (first, early) = (at, n.min(events));
        }
        let from = if began >= c.due { began } else { c.woke };
        let work = nanos(first.saturating_duration_since(from));
        let floor = self.floors_of(c, work);
        for i in 0..events {
            self.record(c, if i < early { first } else { now }, floor);
        }
        self.last_published = Some((c.due, events));
    }

    /// Notes that the wake-up of sleeping readers that followed the last publication
    /// ([`Pacer::sent`] or [`Pacer::published_burst`]) returned now: the `woken` figure.
    pub fn woken(&mut self) {
        let last = self.last_published.take();
        // With a backup publisher the wake-ups are its own, not this thread's.
        if self.covered.is_some() {
            return;
        }
        if let Some((due, events)) = last {
            let late = nanos(Instant::now().saturating_duration_since(due));
            for _ in 0..events {
                self.woken.push(late);
            }
        }
    }

    /// Notes that `messages` of the exchange host's answers to the market events at `ts`
    /// became visible now (nothing when not pacing).
    pub fn answered(&mut self, ts: UnixNanos, messages: usize) {
        let Some(due) = self.due_at(ts) else {
            return;
        };
        let late = nanos(Instant::now().saturating_duration_since(due));
        for _ in 0..messages {
            self.answers.push(late);
        }
    }

    /// The floor lateness of the event `c` whose sending took `work`, without and with the
    /// stall its due time fell in.
    fn floors_of(&mut self, c: Current, work: u64) -> (u64, u64) {
        (
            self.floor.next(c.due_ns, work),
            self.floor_stalled
                .next_from(c.due_ns, c.due_ns + c.stalled_ns, work),
        )
    }

    /// Keeps the samples of one event, visible at `now`, whose floor lateness is `floor`
    /// (without and with stalls).
    fn record(&mut self, c: Current, now: Instant, (floor, floor_stalled): (u64, u64)) {
        let late = nanos(now.saturating_duration_since(c.due));
        let first = self.last_due_ns != Some(c.due_ns);
        self.last_due_ns = Some(c.due_ns);
        self.all.push(late);
        if first {
            self.first.push(late);
        }
        if c.waited {
            self.waited.push(late);
        }
        self.floors.push(floor);
        self.floors_stalled.push(floor_stalled);
        if first {
            self.floors_first.push(floor);
        }
    }

    /// Restarts the clock so a pause (e.g. waiting for a lockstep ack) is not lateness.
    pub fn rebase(&mut self, ts: UnixNanos) {
        if self.origin.is_some() {
            self.origin = Some((Instant::now(), ts));
            self.floor = Floor::default();
            self.floor_stalled = Floor::default();
            self.last_due_ns = None;
        }
    }

    /// Lateness percentiles of every event (None when not pacing).
    pub fn lateness(&self) -> Option<Lateness> {
        self.all.summary()
    }

    /// All the figures (None when not pacing).
    pub fn report(&self) -> Option<PacingReport> {
        self.all.summary()?;
        Some(PacingReport {
            waiting: self.waiting,
            lateness: self.all.summary(),
            first: self.first.summary(),
            waited: self.waited.summary(),
            floor: self.floors.summary(),
            floor_first: self.floors_first.summary(),
            sends: SendTimes::of_nanos(&mut self.sends.ns.clone()),
            woken: self.woken.summary(),
            answers: self.answers.summary(),
            margin_us: (self.waiting == Waiting::Spin).then(|| self.margin.ns as f64 / 1e3),
            stalls: self.stalls.clone(),
            floor_stalled: self.floors_stalled.summary(),
            backup: self.covered.clone(),
        })
    }
}

fn nanos(d: Duration) -> u64 {
    d.as_nanos().min(u64::MAX as u128) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lateness_is_the_nearest_rank_of_the_samples_and_none_without_any() {
        assert!(Lateness::of_nanos(&mut []).is_none());
        let mut ns: Vec<u32> = (1..=101).rev().map(|i| i * 1_000).collect();
        let l = Lateness::of_nanos(&mut ns).unwrap();
        assert_eq!(
            (l.p50_us, l.p99_us, l.max_us, l.samples),
            (51.0, 100.0, 101.0, 101)
        );
    }

    /// A burst a backup publisher published before this thread did is late by the
    /// backup's publication, and counted as covered; without one, nothing is reported.
    #[test]
    fn a_burst_the_backup_published_first_is_late_by_the_backups_publication() {
        let mut p = Pacer::new(Speed::Factor(1.0));
        p.wait_for(0);
        p.sent();
        assert!(p.report().unwrap().backup.is_none(), "no backup ran");
        p.backed_up();
        let due = p.due_at(30_000_000).unwrap();
        let began = Instant::now();
        p.wait_for(30_000_000);
        // As if this thread had been held up 20 ms past the due time and the backup had
        // published 1 ms after it.
        std::thread::sleep(Duration::from_millis(20));
        p.published_burst(4, began, Some((due + Duration::from_millis(1), 4)));
        let r = p.report().unwrap();
        let b = r.backup.unwrap();
        assert_eq!((b.bursts, b.events), (1, 4));
        assert!(b.most_earlier_us >= 18_000.0, "{b:?}");
        let late = r.lateness.unwrap();
        assert!(
            late.max_us >= 1_000.0 && late.max_us < 15_000.0,
            "late by the backup's publication, not this thread's: {late:?}"
        );
    }

    /// A wait for work (not for a publication) waits its way, busy or not, and records
    /// nothing; a burst written less than [`EXPOSED`] before its due time is counted as
    /// exposed, one written well ahead is not, and neither without a backup.
    #[test]
    fn waits_for_work_record_nothing_and_bursts_written_late_are_exposed() {
        for waiting in [Waiting::Busy, Waiting::Spin, Waiting::Sleep] {
            let mut p = Pacer::new(Speed::Factor(1.0)).waiting(waiting);
            p.wait_for(0);
            p.sent();
            let at = Instant::now() + Duration::from_millis(5);
            p.wait_until(at);
            assert!(Instant::now() >= at, "{waiting:?} waited");
            let r = p.report().unwrap();
            assert_eq!(
                r.lateness.unwrap().samples,
                1,
                "{waiting:?}: nothing recorded"
            );
            assert_eq!(r.stalls.due_in_stall, 0, "{waiting:?}");
            // Without a backup nothing is counted.
            p.written_ahead(1_000_000_000, 7, Instant::now());
            assert!(p.report().unwrap().backup.is_none());
            p.backed_up();
            // Due 1 s after the first event (10 ms margins at least, whatever the load):
            // written long before it, then at it and after it.
            let due = p.due_at(1_000_000_000).unwrap();
            p.written_ahead(1_000_000_000, 7, due - Duration::from_millis(10));
            p.written_ahead(1_000_000_000, 5, due - EXPOSED / 2);
            p.written_ahead(1_000_000_000, 3, due + Duration::from_millis(10));
            p.written_ahead(1_000_000_000, 0, due + Duration::from_millis(10));
            let b = p.report().unwrap().backup.unwrap();
            assert_eq!((b.exposed_bursts, b.exposed_events), (2, 8), "{waiting:?}");
        }
    }

    #[test]
    fn answers_count_every_message_late_from_their_events_due_time() {
        let mut p = Pacer::new(Speed::Factor(1.0));
        p.answered(0, 5);
        assert!(
            p.report().is_none_or(|r| r.answers.is_none()),
            "before the first event"
        );
        p.wait_for(0);
        p.sent();
        // Two answers to the first event, made visible 20 ms after it was due.
        std::thread::sleep(Duration::from_millis(20));
        p.answered(0, 2);
        p.answered(0, 0);
        let a = p.report().unwrap().answers.unwrap();
        assert_eq!(a.samples, 2);
        assert!(a.p50_us >= 19_000.0, "{a:?}");
        // Not pacing: nothing counted.
        let mut max = Pacer::new(Speed::Max);
        max.answered(0, 3);
        assert!(max.report().is_none_or(|r| r.answers.is_none()));
    }

    #[test]
    fn a_burst_published_at_once_counts_each_event_late_by_the_publication() {
        let mut p = Pacer::new(Speed::Factor(1.0));
        p.wait_for(0);
        p.sent();
        // A burst of 3 events due 20 ms after the first, written ahead, published on time.
        // (Margins of 10 ms and more, so a loaded machine's preemption cannot decide it.)
        let began = Instant::now();
        p.wait_for(20_000_000);
        assert!(began.elapsed() >= Duration::from_millis(19), "it waited");
        p.published_burst(3, began, None);
        p.woken();
        let r = p.report().unwrap();
        assert_eq!(r.lateness.as_ref().unwrap().samples, 4);
        assert_eq!(
            r.waited.as_ref().unwrap().samples,
            3,
            "the burst was waited for"
        );
        assert_eq!(r.first.as_ref().unwrap().samples, 2, "two due times");
        assert_eq!(
            r.woken.as_ref().unwrap().samples,
            3,
            "only the burst was followed by a wake-up"
        );
        // Written ahead: the floor is the publication alone, not the 20 ms of writing and
        // waiting before it.
        let floor = r.floor.unwrap();
        assert!(floor.max_us < 10_000.0, "{floor:?}");
        // Late: the writing that began after the due time is in the floor.
        let began = Instant::now();
        std::thread::sleep(Duration::from_millis(30));
        p.wait_for(20_000_001);
        p.published_burst(2, began, None);
        let floor = p.report().unwrap().floor.unwrap();
        assert!(floor.max_us >= 30_000.0, "{floor:?}");
    }

    #[test]
    fn speed_parses_factors_and_max() {
        assert_eq!("max".parse::<Speed>(), Ok(Speed::Max));
        assert_eq!("10".parse::<Speed>(), Ok(Speed::Factor(10.0)));
        assert_eq!("2x".parse::<Speed>(), Ok(Speed::Factor(2.0)));
        assert!("0".parse::<Speed>().is_err());
        assert!("fast".parse::<Speed>().is_err());
    }

    #[test]
    fn waiting_parses_its_four_names_the_same_on_the_command_line_and_in_a_scenario() {
        for (name, waiting) in [
            ("spin", Waiting::Spin),
            ("sleep", Waiting::Sleep),
            ("busy", Waiting::Busy),
            ("legacy", Waiting::Legacy),
        ] {
            assert_eq!(name.parse::<Waiting>(), Ok(waiting));
            assert_eq!(
                serde_json::to_string(&waiting).unwrap(),
                format!("{name:?}")
            );
            assert_eq!(
                serde_json::from_str::<Waiting>(&format!("{name:?}")).unwrap(),
                waiting
            );
        }
        assert!("fast".parse::<Waiting>().is_err());
        assert!(serde_json::from_str::<Waiting>("\"fast\"").is_err());
        assert!(!Waiting::Legacy.reads_ahead() && Waiting::Spin.reads_ahead());
        assert!(Waiting::Busy.reads_ahead());
    }

    #[test]
    fn due_times_are_recorded_offsets_over_speed() {
        let t0 = 1_723_161_254_087_896_568;
        assert_eq!(due_offset(t0, t0, 10.0), 0);
        assert_eq!(due_offset(t0, t0 + 1_000_000_000, 10.0), 100_000_000);
        assert_eq!(due_offset(t0, t0 + 1_000_000_000, 1.0), 1_000_000_000);
        assert_eq!(due_offset(t0, t0 + 3_000, 0.5), 6_000);
        // Out of order (the merge never does this): due at once, never before the start.
        assert_eq!(due_offset(t0, t0 - 5, 1.0), 0);
    }

    #[test]
    fn floor_queues_events_due_closer_than_a_send_behind_each_other() {
        let mut f = Floor::default();
        // Three events due together, 5 µs of work each: 5, 10, 15 µs late.
        assert_eq!(f.next(1_000_000, 5_000), 5_000);
        assert_eq!(f.next(1_000_000, 5_000), 10_000);
        assert_eq!(f.next(1_000_000, 5_000), 15_000);
        // Due 2 µs after the burst's last send returned: only its own send counts.
        assert_eq!(f.next(1_017_000, 5_000), 5_000);
        // Due while the previous send is still going: 3 µs behind it.
        assert_eq!(f.next(1_019_000, 5_000), 8_000);
        // Far later: its own work only.
        assert_eq!(f.next(9_000_000, 4_000), 4_000);
        // Due in a stall that ended 30 µs after it: the stall, then its own work; the
        // next, due before that send ended, queues behind it.
        assert_eq!(f.next_from(20_000_000, 20_030_000, 4_000), 34_000);
        assert_eq!(f.next_from(20_010_000, 20_010_000, 4_000), 28_000);
    }

    #[test]
    fn margin_jumps_above_an_overshoot_and_decays_to_its_bounds() {
        let mut m = Margin::new();
        m.observe(Duration::from_micros(180));
        assert_eq!(m.get(), Duration::from_micros(280), "1.5 x 180 + 10");
        for _ in 0..10_000 {
            m.observe(Duration::from_micros(1));
        }
        assert_eq!(m.get(), Duration::from_nanos(Margin::MIN));
        m.observe(Duration::from_secs(1));
        assert_eq!(m.get(), Duration::from_nanos(Margin::MAX));
        m.observe(Duration::from_micros(50));
        assert!(m.get() < Duration::from_nanos(Margin::MAX), "decays");
        assert!(m.get() > Duration::from_micros(290), "slowly");
    }

    #[test]
    fn samples_thin_out_uniformly_and_report_percentiles() {
        let mut s = Samples::new();
        assert!(s.summary().is_none());
        for ns in 1..=(MAX_SAMPLES as u64 + 10) {
            s.push(ns * 1_000);
        }
        let l = s.summary().unwrap();
        assert!(l.samples < MAX_SAMPLES && l.samples > MAX_SAMPLES / 2 - 10);
        let p50 = l.p50_us / (MAX_SAMPLES as f64 / 2.0);
        assert!((0.99..1.01).contains(&p50), "p50 {} us", l.p50_us);
    }

    #[test]
    fn pacer_spaces_events_by_recorded_time_over_speed() {
        for waiting in [
            Waiting::Spin,
            Waiting::Sleep,
            Waiting::Busy,
            Waiting::Legacy,
        ] {
            let mut p = Pacer::new(Speed::Factor(10.0)).waiting(waiting);
            let t0 = Instant::now();
            p.wait_for(0);
            p.sent();
            p.wait_for(200_000_000); // 200 ms recorded = 20 ms at 10x
            p.sent();
            let took = t0.elapsed();
            assert!(took >= Duration::from_millis(20), "{waiting:?}: {took:?}");
            let r = p.report().unwrap();
            assert_eq!(r.lateness.unwrap().samples, 2);
            assert_eq!(r.first.unwrap().samples, 2);
            assert_eq!(
                r.waited.unwrap().samples,
                1,
                "the first event is due at once"
            );
            assert_eq!(r.floor.unwrap().samples, 2);
        }
    }

    #[test]
    fn stalls_are_gaps_of_ten_microseconds_or_more_and_long_ones_from_a_hundred() {
        let mut s = Stalls::default();
        assert!(!s.note(Duration::from_nanos(40)));
        assert!(!s.note(Duration::from_micros(9)));
        assert!(s.note(STALL));
        assert!(s.note(Duration::from_micros(250)));
        assert_eq!((s.count, s.long), (2, 1));
        assert!((s.lost_ms - 0.26).abs() < 1e-9 && (s.long_ms - 0.25).abs() < 1e-9);
        assert!((s.longest_us - 250.0).abs() < 1e-9);
    }

    /// A busy pacer pinned to one CPU with a thread that never yields it: the scheduler
    /// takes turns, and every turn of the other thread is a stall the pacer must see.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_busy_pacer_sharing_its_cpu_sees_the_stalls_and_moves_the_floor_past_them() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        // SAFETY: sched_getcpu has no preconditions; the sets are plain data of the
        // size given, pid 0 the calling thread.
        let size = std::mem::size_of::<libc::cpu_set_t>();
        let mut before: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::sched_getaffinity(0, size, &mut before) }, 0);
        let mut one: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        unsafe { libc::CPU_SET(libc::sched_getcpu().max(0) as usize, &mut one) };
        assert_eq!(unsafe { libc::sched_setaffinity(0, size, &one) }, 0);
        let stop = Arc::new(AtomicBool::new(false));
        let hog = std::thread::spawn({
            let stop = stop.clone();
            move || {
                // Inherited from the pinned thread that spawned it.
                while !stop.load(Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            }
        });
        let mut p = Pacer::new(Speed::Factor(1.0)).waiting(Waiting::Busy);
        for ms in 0..200 {
            p.wait_for(ms * 1_000_000);
            p.sent();
        }
        stop.store(true, Ordering::Relaxed);
        hog.join().unwrap();
        assert_eq!(unsafe { libc::sched_setaffinity(0, size, &before) }, 0);

        let r = p.report().unwrap();
        let s = &r.stalls;
        assert!(s.spun_secs > 0.05, "{s:?}");
        // The other thread had about half of the 200 ms, in turns of milliseconds.
        assert!(s.count >= 2 && s.lost_ms >= 20.0, "{s:?}");
        assert!(s.longest_us >= 500.0, "{s:?}");
        assert!(
            s.long >= 1 && s.long <= s.count && s.long_ms <= s.lost_ms,
            "{s:?}"
        );
        assert!(s.due_in_stall >= 1, "{s:?}");
        let (floor, stalled, all) = (
            r.floor.unwrap(),
            r.floor_stalled.unwrap(),
            r.lateness.unwrap(),
        );
        assert_eq!(stalled.samples, 200);
        // The stalls explain the lateness (the floor with them is never above it), and
        // the floor without them is never above the floor with them.
        assert!(stalled.max_us >= 500.0, "{stalled:?}");
        assert!(floor.max_us <= stalled.max_us, "{floor:?} vs {stalled:?}");
        assert!(stalled.max_us <= all.max_us, "{stalled:?} vs {all:?}");
    }

    #[test]
    fn a_burst_sharing_one_due_time_counts_once_as_first() {
        let mut p = Pacer::new(Speed::Factor(1000.0));
        for ts in [0, 0, 0, 1_000_000, 1_000_000, 2_000_000] {
            p.wait_for(ts);
            p.sent();
        }
        let r = p.report().unwrap();
        assert_eq!(r.lateness.unwrap().samples, 6);
        assert_eq!(r.first.unwrap().samples, 3, "three due times");
        assert_eq!(r.floor.unwrap().samples, 6);
        assert_eq!(r.floor_first.unwrap().samples, 3);
    }

    /// A burst sent with one look at the clock per send counts as the same burst sent
    /// with a wait before each: every event late, one first of its due time; each send
    /// is timed from the one before, so a slow one is seen as slow.
    #[test]
    fn a_burst_sent_back_to_back_times_each_send_from_the_one_before() {
        let mut p = Pacer::new(Speed::Factor(1000.0));
        p.wait_for(0);
        p.sent();
        p.wait_for(1_000_000);
        p.sent_in_burst();
        // As if the second send of the burst had taken 6 ms.
        std::thread::sleep(Duration::from_millis(6));
        p.sent_in_burst();
        p.sent_in_burst();
        assert_eq!(
            p.report().unwrap().lateness.unwrap().samples,
            1,
            "nothing of the burst is recorded while it is sent"
        );
        p.burst_sent();
        let r = p.report().unwrap();
        assert_eq!(r.lateness.as_ref().unwrap().samples, 4);
        assert_eq!(r.first.unwrap().samples, 2, "two due times");
        assert!(
            r.lateness.unwrap().max_us >= 6_000.0,
            "the last two are late by the slow send"
        );
        let sends = r.sends.unwrap();
        assert_eq!((sends.samples, sends.slow), (4, 1));
        assert!(sends.max_ns >= 6_000_000 && sends.slow_us >= 6_000.0);
        // The same instants read back as the pacer saw them: the floor of the burst's
        // last send is the whole burst's work, its lateness at least that.
        let floor = r.floor.unwrap();
        assert!(floor.max_us >= 6_000.0, "{floor:?}");
        // Nothing left current or pending after the burst.
        p.burst_sent();
        p.sent();
        assert_eq!(p.report().unwrap().sends.unwrap().samples, 4);
        assert!(
            p.burst.is_empty() && p.burst.capacity() >= 3,
            "kept allocated"
        );
    }

    /// A busy real-time replay is refused while the kernel's real-time budget would stop
    /// it for part of every period, with the figures and what to do; allowed without a
    /// budget.
    #[test]
    fn a_busy_realtime_replay_is_refused_under_a_real_time_budget() {
        let why = busy_realtime_refusal(950_000, 1_000_000).expect("the default budget");
        assert!(
            why.contains("950000 of every 1000000") && why.contains("stopped for 50 ms"),
            "{why}"
        );
        assert!(why.contains("sched_rt_runtime_us=-1") && why.contains("--own-core --pacing busy"));
        assert_eq!(busy_realtime_refusal(-1, 1_000_000), None, "no budget");
        assert_eq!(
            busy_realtime_refusal(1_000_000, 1_000_000),
            None,
            "the whole period"
        );
    }

    #[test]
    fn send_times_are_the_nearest_rank_and_count_the_slow_sends() {
        assert!(SendTimes::of_nanos(&mut []).is_none());
        // 100 sends of 100..=10,000 ns, shuffled: 51 of them 5 µs or more.
        let mut ns: Vec<u32> = (1..=100).map(|i| (i * 37 % 101) * 100).collect();
        let t = SendTimes::of_nanos(&mut ns).unwrap();
        assert_eq!(
            (t.p50_ns, t.p90_ns, t.p99_ns, t.max_ns, t.samples, t.slow),
            (5_100, 9_000, 9_900, 10_000, 100, 51)
        );
        assert_eq!(t.slow_us, 382.5, "5.0 + 5.1 + ... + 10.0 µs");
    }

    #[test]
    fn events_due_in_the_past_are_not_waited_for_but_count() {
        let mut p = Pacer::new(Speed::Factor(1.0));
        p.wait_for(0);
        std::thread::sleep(Duration::from_millis(5));
        p.wait_for(1_000); // due 1 µs after the start, 5 ms ago
        p.sent();
        let r = p.report().unwrap();
        assert!(r.lateness.unwrap().max_us >= 5_000.0);
        assert!(r.waited.is_none());
    }

    #[test]
    fn not_pacing_at_max_speed() {
        let mut p = Pacer::new(Speed::Max);
        p.wait_for(0);
        p.wait_for(1_000_000_000_000);
        p.sent();
        assert!(p.report().is_none() && p.lateness().is_none());
    }

    #[test]
    fn a_raised_stop_ends_a_long_wait() {
        let stop = Stop::new();
        let raiser = stop.clone();
        let (done, ended) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut p = Pacer::new(Speed::Factor(1.0)).interrupted_by(stop);
            p.wait_for(0);
            p.wait_for(3_600_000_000_000); // an hour later
            done.send(()).unwrap();
        });
        std::thread::sleep(Duration::from_millis(50));
        raiser.set();
        // Liveness, not timing: an hour-long wait would fail this.
        ended
            .recv_timeout(Duration::from_secs(60))
            .expect("the wait ended once stop was raised");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn realtime_scheduling_is_restored_or_refused_with_the_reason() {
        std::thread::spawn(|| {
            let before = unsafe { libc::sched_getscheduler(0) };
            match Realtime::raise() {
                Ok(rt) => {
                    assert_eq!(unsafe { libc::sched_getscheduler(0) }, libc::SCHED_FIFO);
                    drop(rt);
                    assert_eq!(unsafe { libc::sched_getscheduler(0) }, before);
                }
                Err(e) => assert!(e.to_string().contains("CAP_SYS_NICE"), "{e}"),
            }
        })
        .join()
        .unwrap();
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn timer_slack_is_tightened_while_pacing_and_restored_after() {
        let before = unsafe { libc::prctl(libc::PR_GET_TIMERSLACK, 0, 0, 0, 0) };
        {
            let mut p = Pacer::new(Speed::Factor(1.0));
            p.wait_for(0);
            assert_eq!(
                unsafe { libc::prctl(libc::PR_GET_TIMERSLACK, 0, 0, 0, 0) },
                1
            );
        }
        assert_eq!(
            unsafe { libc::prctl(libc::PR_GET_TIMERSLACK, 0, 0, 0, 0) },
            before
        );
    }
}
