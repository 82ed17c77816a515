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
//! Arrival lateness of event i: `(arrival_i − due_i) − min_j (arrival_j − due_j)`, where
//! `due_i = (ts_recv_i − ts_recv_0) / SPEED` after the first arrival: how much later than
//! the fastest delivery of the run each event reached this subscriber (transport, the
//! replay's own lateness, the wake-up, and this subscriber's queue behind its own work).

use std::time::{Duration, Instant};

use anyhow::Result;
use ticktape::book::L2Book;
use ticktape::event::{Event, Interner};
use ticktape::strategy::{self, Context, Fill, OrderUpdate, Reply, Strategy};
use ticktape::wire;

/// Spins `secs` and prints the stalls seen, as the pacer counts them.
fn bare_spin(secs: Duration) -> Result<()> {
    let mut stalls = ticktape::replay::pacing::Stalls::default();
    stalls.spin_until(Instant::now() + secs, || false);
    println!("{}", serde_json::to_string(&stalls)?);
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

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
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
