//! The loaded subscriber of the pacing benchmark (`scripts/bench.sh pacing`): takes a
//! paced replay off the bus, spins `WORK_US` microseconds of work per event (a strategy
//! that does something with each message), and prints as one JSON line the lateness of
//! arrival it saw, until the replay's end of stream.
//!
//! `pace_probe ENDPOINT SPEED WORK_US`
//!
//! `pace_probe strategy BUS GATEWAY VENUE SYMBOL SIZE NAME SPEED` is the other form: a
//! strategy process for `ticktape run` (a scenario's `command`, over ZeroMQ or shared
//! memory) that runs the built-in `mm` and measures, on entry to each market callback
//! (`on_book` once a venue message is applied, `on_trade`), when the strategy saw that
//! event; it prints the same JSON line to its log when the replay ends.
//!
//! `pace_probe spin SECS` is the bare baseline of the pacer's stall figures: it spins
//! SECS seconds reading the clock back to back, nothing else, and prints as one JSON line
//! the stalls it saw (gaps of `STALL` or more between two reads, counted as the pacer
//! counts them): what the machine takes from a thread that never sleeps, on whichever
//! CPU it is pinned to (`taskset`).
//!
//! `pace_probe pair SECS` measures whether two CPUs lose their time at the same moments
//! (the case for `[replay] backup_publisher`): one thread spins on each of the first and
//! the last CPU this process may use, noting every stall as `spin` does, and for due
//! times every 37 µs over the run it prints which share fell in a stall that ended more
//! than 50 µs (and 100 µs) later on the first CPU, on the last, and on both at once (a
//! due time two publishers on those CPUs would both have missed).
//!
//! `pace_probe bare ENDPOINT SUBSCRIBERS DATASET SPEED [START END]` is the bare-transport
//! baseline of paced replay over ZeroMQ: it reads and encodes the dataset as the replay
//! does (JSON, the same topics, the recorded `pub_seq`: byte for byte the replay's
//! messages) into memory first, binds the bus's [`Publisher`](ticktape::bus::Publisher)
//! set as the replay's (no drop, the same send queue), waits for SUBSCRIBERS, then for
//! each event spins until its due time and sends it (`send_raw`: two libzmq sends and a
//! counter): nothing between the wake-up and the send but the transport. It prints as
//! one JSON line, in the shape of the replay's `--json` summary (so the bench reads both
//! alike), the lateness of every event and of the first event of each due time (send
//! returned minus due time, as the replay defines them), each send's time (from the
//! wake-up or the send before, as the replay's `pacing.sends`) and the CPU it used, and
//! ends the stream with an end-of-stream event so a recorder stops. `PACE_BARE_CPU=N`
//! pins its sending thread to CPU N, as `own_core` pins the replay's.
//! `PACE_BARE_PREPARED=1` copies every payload into a libzmq message before the first
//! due time and sends those (`send_prepared`), as the replay sends what it has read
//! ahead: the floor of the same sends without an allocation and a copy in each.
//!
//! Arrival lateness of event i: `(arrival_i − due_i) − min_j (arrival_j − due_j)`, where
//! `due_i = (ts_recv_i − ts_recv_0) / SPEED` after the first arrival: how much later than
//! the fastest delivery of the run each event reached this subscriber (transport, the
//! replay's own lateness, the wake-up, and this subscriber's queue behind its own work).

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use ticktape::book::L2Book;
use ticktape::bus::Prepared;
use ticktape::event::{Event, Interner};
use ticktape::replay::pacing::{Lateness, SendTimes};
use ticktape::strategy::{self, Context, Fill, OrderUpdate, Reply, Strategy};
use ticktape::wire;

/// Spins `secs` and prints the stalls seen, as the pacer counts them.
fn bare_spin(secs: Duration) -> Result<()> {
    let mut stalls = ticktape::replay::pacing::Stalls::default();
    stalls.spin_until(Instant::now() + secs, || false);
    println!("{}", serde_json::to_string(&stalls)?);
    Ok(())
}

/// Pins the calling thread to `cpu` (threads it starts afterwards inherit it).
fn pin_to(cpu: usize) {
    // SAFETY: an all-zero cpu_set_t is the empty set; `cpu` < CPU_SETSIZE; the call
    // only reads the set.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// The stalls (start, end) one thread pinned to `cpu` sees while it spins for `secs`.
fn stalls_on(cpu: usize, until: Instant) -> Vec<(Instant, Instant)> {
    pin_to(cpu);
    let mut seen = Vec::new();
    let mut last = Instant::now();
    while last < until {
        std::hint::spin_loop();
        let now = Instant::now();
        if now - last >= ticktape::replay::pacing::STALL {
            seen.push((last, now));
        }
        last = now;
    }
    seen
}

/// How late a due time is on a CPU that saw `stalls` (sorted): the end of the stall it
/// fell in, or zero. `at` is the index to start looking from, moved forward.
fn late_at(stalls: &[(Instant, Instant)], at: &mut usize, due: Instant) -> Duration {
    while *at < stalls.len() && stalls[*at].1 < due {
        *at += 1;
    }
    match stalls.get(*at) {
        Some(&(from, to)) if from <= due => to - due,
        _ => Duration::ZERO,
    }
}

/// `pace_probe pair SECS`: see the module documentation.
fn pair(secs: Duration) -> Result<()> {
    // SAFETY: an all-zero cpu_set_t is a valid buffer for the call to fill.
    let mut mine: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `mine` is a valid cpu_set_t of the size given.
    unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut mine) };
    let cpus: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `c` < CPU_SETSIZE.
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &mine) })
        .collect();
    let (Some(&a), Some(&b)) = (cpus.first(), cpus.last()) else {
        anyhow::bail!("no CPU to spin on");
    };
    anyhow::ensure!(
        a != b,
        "pair needs two CPUs; this process may use only CPU {a}"
    );
    let began = Instant::now();
    let until = began + secs;
    let other = std::thread::spawn(move || stalls_on(b, until));
    let on_a = stalls_on(a, until);
    let on_b = other.join().expect("the second spinner");
    let (mut ia, mut ib) = (0, 0);
    let mut late = [[0u64; 3]; 2];
    let mut dues = 0u64;
    let mut due = began + Duration::from_millis(1);
    while due + Duration::from_millis(1) < until {
        let la = late_at(&on_a, &mut ia, due);
        let lb = late_at(&on_b, &mut ib, due);
        for (k, bound) in [50, 100].into_iter().enumerate() {
            let bound = Duration::from_micros(bound);
            late[k][0] += u64::from(la > bound);
            late[k][1] += u64::from(lb > bound);
            late[k][2] += u64::from(la > bound && lb > bound);
        }
        dues += 1;
        due += Duration::from_micros(37);
    }
    let pct = |n: u64| 100.0 * n as f64 / dues.max(1) as f64;
    let lost = |s: &[(Instant, Instant)]| {
        s.iter().map(|(f, t)| (*t - *f).as_secs_f64()).sum::<f64>() * 1e3
    };
    println!(
        "{}",
        serde_json::json!({
            "cpus": [a, b],
            "secs": secs.as_secs_f64(),
            "stalls": [on_a.len(), on_b.len()],
            "lost_ms": [lost(&on_a), lost(&on_b)],
            "due_times": dues,
            "late_50us_pct": {"first": pct(late[0][0]), "last": pct(late[0][1]), "both": pct(late[0][2])},
            "late_100us_pct": {"first": pct(late[1][0]), "last": pct(late[1][1]), "both": pct(late[1][2])},
        })
    );
    Ok(())
}

/// Arrival offsets of one run: each event's arrival after the first, minus its due time.
struct Arrivals {
    speed: f64,
    first: Option<(Instant, i64)>,
    offsets: Vec<i64>,
}

impl Arrivals {
    fn new(speed: f64) -> Arrivals {
        Arrivals {
            speed,
            first: None,
            offsets: Vec::new(),
        }
    }

    fn arrived(&mut self, arrived: Instant, ts_recv: i64) {
        let (t0, ts0) = *self.first.get_or_insert((arrived, ts_recv));
        let due = ((ts_recv - ts0).max(0) as f64 / self.speed) as i64;
        self.offsets
            .push(arrived.duration_since(t0).as_nanos() as i64 - due);
    }

    /// The JSON line: lateness relative to the run's fastest delivery, in µs.
    fn json(&self, work: Duration) -> String {
        let best = self.offsets.iter().copied().min().unwrap_or(0);
        let mut late: Vec<i64> = self.offsets.iter().map(|o| o - best).collect();
        late.sort_unstable();
        let pct = |p: f64| {
            late.get(((late.len().max(1) - 1) as f64 * p).round() as usize)
                .map_or(0.0, |&ns| ns as f64 / 1e3)
        };
        format!(
            "{{\"events\":{},\"work_us\":{},\"arrival_p50_us\":{:.1},\"arrival_p99_us\":{:.1},\"arrival_max_us\":{:.1}}}",
            late.len(),
            work.as_micros(),
            pct(0.5),
            pct(0.99),
            pct(1.0)
        )
    }
}

/// The built-in `mm`, timed on entry to each market callback.
struct Probe {
    inner: Box<dyn Strategy>,
    arrivals: Arrivals,
}

impl Strategy for Probe {
    fn on_book(&mut self, ctx: &mut Context, event: &Event, book: &L2Book) -> Result<()> {
        self.arrivals.arrived(Instant::now(), event.ts_recv);
        self.inner.on_book(ctx, event, book)
    }
    fn on_trade(&mut self, ctx: &mut Context, event: &Event) -> Result<()> {
        self.arrivals.arrived(Instant::now(), event.ts_recv);
        self.inner.on_trade(ctx, event)
    }
    fn on_fill(&mut self, ctx: &mut Context, fill: &Fill) -> Result<()> {
        self.inner.on_fill(ctx, fill)
    }
    fn on_order(&mut self, ctx: &mut Context, update: &OrderUpdate) -> Result<()> {
        self.inner.on_order(ctx, update)
    }
    fn on_reply(&mut self, ctx: &mut Context, reply: &Reply) -> Result<()> {
        self.inner.on_reply(ctx, reply)
    }
    fn on_gap(&mut self, ctx: &mut Context, event: &Event) -> Result<()> {
        self.inner.on_gap(ctx, event)
    }
    fn on_timer(&mut self, ctx: &mut Context) -> Result<()> {
        self.inner.on_timer(ctx)
    }
}

fn run_strategy(args: &[String]) -> Result<()> {
    let [bus, gateway, venue, symbol, size, name, speed] = args else {
        anyhow::bail!("usage: pace_probe strategy BUS GATEWAY VENUE SYMBOL SIZE NAME SPEED");
    };
    let params = strategy::Params::from_env()?;
    let mut probe = Probe {
        inner: strategy::builtin("mm", venue, symbol, size.parse()?, &params)?,
        arrivals: Arrivals::new(speed.parse()?),
    };
    let config = strategy::RunnerConfig::new(name, vec![bus.clone()], gateway.clone());
    strategy::run(&config, &mut probe, &ticktape::shutdown::on_signal())?;
    println!("{}", probe.arrivals.json(Duration::ZERO));
    Ok(())
}

/// The bare ZeroMQ sender (see the module documentation).
fn bare(args: &[String]) -> Result<()> {
    let (endpoint, subscribers, dataset, speed, window) = match args {
        [e, n, d, s] => (e, n, d, s, None),
        [e, n, d, s, start, end] => (e, n, d, s, Some((start, end))),
        _ => anyhow::bail!("usage: pace_probe bare ENDPOINT SUBSCRIBERS DATASET SPEED [START END]"),
    };
    let speed: f64 = speed.parse().context("SPEED: a number")?;
    let mut selection = ticktape::store::Selection::default();
    if let Some((start, end)) = window {
        selection.start = Some(ticktape::store::layout::parse_ts(start)?);
        selection.end = Some(ticktape::store::layout::parse_ts(end)?);
    }
    let mut messages = Vec::new();
    let mut last_ts = 0;
    for event in ticktape::store::EventReader::open(std::path::Path::new(dataset), selection)? {
        let event = event?;
        // The replay's topic and payload: the recorded `pub_seq` as it is.
        let mut topic = String::new();
        wire::write_topic(&event, &mut topic);
        let topic = topic.into_bytes();
        let mut payload = Vec::new();
        wire::encode_as(wire::Encoding::Json, &event, &mut payload);
        last_ts = event.ts_recv;
        messages.push((event.ts_recv, topic, payload));
    }
    anyhow::ensure!(!messages.is_empty(), "no events in {dataset}");
    let ctx = zmq::Context::new();
    let mut publisher = ticktape::bus::Publisher::bind(
        &ctx,
        &ticktape::bus::PublisherConfig {
            bind: vec![endpoint.clone()],
            // As the replay's: never drop, the same send queue.
            backpressure: ticktape::bus::Backpressure::Block,
            send_hwm: 100_000,
            encoding: wire::Encoding::Json,
        },
    )?;
    let subscribers: usize = subscribers.parse().context("SUBSCRIBERS: a whole number")?;
    anyhow::ensure!(
        publisher.wait_for_subscribers(subscribers, Duration::from_secs(30), &|| false)?,
        "no {subscribers} subscribers on {endpoint} within 30 s"
    );
    // PACE_BARE_CPU=N pins this thread (not libzmq's I/O thread, started with the
    // socket) to CPU N, as `own_core` pins the replay thread.
    if let Some(cpu) = std::env::var("PACE_BARE_CPU")
        .ok()
        .and_then(|c| c.parse::<usize>().ok())
    {
        pin_to(cpu);
    }
    let (mut every, mut first) = (Vec::with_capacity(messages.len()), Vec::new());
    // Each send's time, from the wake-up or the send before (as the replay's).
    let mut sends = Vec::with_capacity(messages.len());
    let ts0 = messages[0].0;
    // The payloads copied into libzmq's messages, all of them before the first due time.
    let mut prepared: Option<std::vec::IntoIter<Prepared>> = std::env::var_os("PACE_BARE_PREPARED")
        .is_some_and(|v| v == "1")
        .then(|| {
            messages
                .iter()
                .map(|(_, _, p)| Prepared::new(p))
                .collect::<Vec<_>>()
                .into_iter()
        });
    let usage = ticktape::replay::usage::Usage::start(None);
    let t0 = usage.started();
    let mut previous_ts = None;
    let mut woke = t0;
    // Nanoseconds, saturating at 4.29 s as the replay's samples do.
    let ns = |d: Duration| d.as_nanos().min(u32::MAX as u128) as u32;
    for (ts, topic, payload) in &messages {
        let due = t0 + Duration::from_nanos(((ts - ts0) as f64 / speed) as u64);
        let first_of_burst = previous_ts != Some(*ts);
        previous_ts = Some(*ts);
        // The clock is read once per send, as the replay reads it inside a burst.
        if first_of_burst {
            woke = Instant::now();
            while woke < due {
                std::hint::spin_loop();
                woke = Instant::now();
            }
        }
        match prepared.as_mut().and_then(Iterator::next) {
            Some(p) => publisher.send_prepared(topic, payload, p)?,
            None => publisher.send_raw(topic, payload)?,
        }
        let now = Instant::now();
        let late = ns(now.saturating_duration_since(due));
        sends.push(ns(now - woke));
        woke = now;
        every.push(late);
        if first_of_burst {
            first.push(late);
        }
    }
    let events = messages.len() as u64;
    publisher.send(&Event::end_of_stream("pace-bare", true, last_ts, events))?;
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu = usage.finish().cpu_secs;
    println!(
        "{}",
        serde_json::json!({
            "events": messages.len(), "elapsed_secs": elapsed, "cpu_secs": cpu,
            "lateness": Lateness::of_nanos(&mut every),
            "pacing": {"first": Lateness::of_nanos(&mut first), "waited": null, "floor": null,
                       "floor_first": null, "margin_us": null,
                       "sends": SendTimes::of_nanos(&mut sends)},
        })
    );
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("bare") {
        return bare(&args[2..]);
    }
    if args.get(1).map(String::as_str) == Some("strategy") {
        return run_strategy(&args[2..]);
    }
    if let [_, spin, secs] = &args[..]
        && spin == "spin"
    {
        return bare_spin(Duration::from_secs_f64(
            secs.parse().expect("SECS: a number"),
        ));
    }
    if let [_, mode, secs] = &args[..]
        && mode == "pair"
    {
        return pair(Duration::from_secs_f64(
            secs.parse().expect("SECS: a number"),
        ));
    }
    let [_, endpoint, speed, work_us] = &args[..] else {
        eprintln!("usage: pace_probe ENDPOINT SPEED WORK_US");
        std::process::exit(2);
    };
    let speed: f64 = speed.parse().expect("SPEED: a number");
    let work = Duration::from_micros(work_us.parse().expect("WORK_US: a whole number"));
    let ctx = zmq::Context::new();
    let sub = ctx.socket(zmq::SUB).unwrap();
    sub.set_rcvhwm(0).unwrap();
    sub.set_subscribe(b"").unwrap();
    sub.connect(endpoint).unwrap();
    let mut names = Interner::default();
    let mut arrivals = Arrivals::new(speed);
    loop {
        let frames = sub.recv_multipart(0).unwrap();
        let arrived = Instant::now();
        if frames[0].starts_with(b"eos.") {
            break;
        }
        if !(frames[0].starts_with(b"book.") || frames[0].starts_with(b"trade.")) {
            continue;
        }
        let event = wire::decode_message(&frames, &mut names).expect("a ticktape event");
        arrivals.arrived(arrived, event.ts_recv);
        let until = Instant::now() + work;
        while Instant::now() < until {
            std::hint::spin_loop();
        }
    }
    println!("{}", arrivals.json(work));
    Ok(())
}
