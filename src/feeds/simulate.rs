//! A synthetic venue for demos, tests and benchmarks (`ticktape simulate`).
//!
//! Each symbol keeps an L2 book around a random-walk mid: messages arrive as a Poisson
//! process and are level size changes, one-tick mid moves (the book shifts, never
//! crosses) or trades at the touch (which consume the level). Each venue message gets a
//! contiguous `venue_seq` per symbol and trades contiguous ids, so the same seed gives
//! the same stream in every process: two simulators with one seed are redundant
//! publishers of one venue. Fault injection flags exist for tests.

use std::time::{Duration, Instant};

use anyhow::Result;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Exp};

use crate::bus::{HeartbeatTimer, Outlets, Publisher, PublisherConfig, Sequencer};
use crate::event::{
    Body, BookDelta, Event, Fixed, Flags, NANOS_PER_SEC, Side, Trade, UnixNanos, now_nanos,
};
use crate::shutdown::Stop;

/// Faults to inject, for tests of the recorder.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// After this many data events, silently skip `drop_count` events (their sequence
    /// numbers are consumed, so subscribers see a jump).
    pub drop_after: Option<u64>,
    /// How many events to skip at `drop_after`.
    pub drop_count: u64,
    /// Send every k-th data event twice.
    pub duplicate_every: Option<u64>,
    /// After every k-th data event, send a malformed message.
    pub malformed_every: Option<u64>,
    /// After this many data events, publish nothing (not even heartbeats) for `stall`.
    pub stall_after: Option<u64>,
    /// Length of the stall.
    pub stall: Duration,
}

/// Where simulated timestamps come from.
#[derive(Clone, Copy, Debug)]
pub enum Clock {
    /// Wall clock: `ts_recv` is the send time, `ts_event` slightly earlier.
    Wall,
    /// Deterministic: time starts at the given instant and advances by the sampled
    /// inter-arrival times (two runs give identical timestamps).
    Synthetic(UnixNanos),
}

/// Configuration of the synthetic venue.
#[derive(Clone, Debug)]
pub struct SimulateConfig {
    /// Where to publish on the ZeroMQ bus (no `bind` endpoints: not on ZeroMQ).
    pub publisher: PublisherConfig,
    /// Also (or only) publish into this NATS JetStream stream.
    pub nats: Option<(
        crate::nats::NatsConfig,
        crate::nats::publish::PublishOptions,
    )>,
    /// Id in heartbeats and end-of-stream.
    pub publisher_id: String,
    /// Venue name in events.
    pub venue: String,
    /// Symbols to simulate.
    pub symbols: Vec<String>,
    /// Mean data events per second over all symbols; 0 publishes as fast as possible.
    pub rate: f64,
    /// Stop after this many data events (None: run until stopped or `duration`).
    pub events: Option<u64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// RNG seed: equal seeds give equal streams.
    pub seed: u64,
    /// Levels per side.
    pub depth: usize,
    /// Heartbeat interval.
    pub heartbeat: Duration,
    /// Publish a full snapshot of every book this often (they are always sent at start).
    pub snapshot_every: Option<Duration>,
    /// A REP endpoint: any request makes the venue publish fresh snapshots of every book
    /// (what a consumer does after a gap), answered with `{"snapshots":N}`.
    pub snapshot_endpoint: Option<String>,
    /// Do not publish the first `skip` data events (they are still generated), to make
    /// a redundant publisher that overlaps another only partly.
    pub skip: u64,
    /// Wait for this many subscribers before the first event.
    pub wait_for: usize,
    /// Timestamp source.
    pub clock: Clock,
    /// Events per second of *synthetic* time (default: `rate`, or 10,000 when `rate`
    /// is 0), so a deterministic stream can be generated as fast as possible.
    pub synthetic_rate: Option<f64>,
    /// Faults to inject.
    pub faults: Faults,
}

impl Default for SimulateConfig {
    fn default() -> SimulateConfig {
        SimulateConfig {
            publisher: PublisherConfig::default(),
            nats: None,
            publisher_id: "sim".into(),
            venue: "sim".into(),
            symbols: vec!["BTC-USD".into(), "ETH-USD".into(), "SOL-USD".into()],
            rate: 10_000.0,
            events: None,
            duration: None,
            seed: 1,
            depth: 10,
            heartbeat: Duration::from_secs(1),
            snapshot_every: None,
            snapshot_endpoint: None,
            skip: 0,
            wait_for: 0,
            clock: Clock::Wall,
            synthetic_rate: None,
            faults: Faults::default(),
        }
    }
}

/// The lowest positive rate [`check_rate`] accepts: one event per 1,000 s.
pub const MIN_RATE: f64 = 0.001;

/// Checks an events-per-second rate: 0 (as fast as possible) or a finite number of at
/// least [`MIN_RATE`]. NaN, infinities and negative rates used to run unpaced silently.
pub fn check_rate(rate: f64) -> std::result::Result<f64, String> {
    if rate == 0.0 || (rate.is_finite() && rate >= MIN_RATE) {
        Ok(rate)
    } else {
        Err(format!(
            "rate {rate} is not a number of events per second: use a finite number of at \
             least {MIN_RATE} (e.g. 10000), or 0 for as fast as possible"
        ))
    }
}

/// What a simulation did.
#[derive(Clone, Debug, Default)]
pub struct SimulateStats {
    /// Data events generated (published or skipped).
    pub generated: u64,
    /// Data events published.
    pub published: u64,
    /// Events dropped on purpose.
    pub dropped: u64,
    /// Duplicates sent on purpose.
    pub duplicated: u64,
    /// Malformed messages sent on purpose.
    pub malformed: u64,
    /// What the NATS publisher counted (acks, broker duplicates, retries), at the end.
    pub nats: Option<crate::nats::NatsPublisherStats>,
    /// Wall time.
    pub elapsed: Duration,
}

struct SimBook {
    symbol: std::sync::Arc<str>,
    tick_scale: u8,
    /// Best bid in ticks; best ask is `best_bid + spread`.
    best_bid: i64,
    spread: i64,
    bids: Vec<i64>,
    asks: Vec<i64>,
    venue_seq: u64,
    trade_id: u64,
}

/// Size units use 4 decimals.
const SIZE_SCALE: u8 = 4;

impl SimBook {
    fn new(symbol: &str, index: usize, depth: usize, rng: &mut SmallRng) -> SimBook {
        let best_bid = [3_000_000i64, 250_000, 15_000][index % 3] * (index as i64 / 3 + 1);
        SimBook {
            symbol: symbol.into(),
            tick_scale: 2,
            best_bid,
            spread: 1,
            bids: (0..depth).map(|_| rng.gen_range(1..50_000)).collect(),
            asks: (0..depth).map(|_| rng.gen_range(1..50_000)).collect(),
            venue_seq: 1_000,
            trade_id: 0,
        }
    }

    fn price(&self, side: Side, level: usize) -> Fixed {
        let ticks = match side {
            Side::Bid => self.best_bid - level as i64,
            _ => self.best_bid + self.spread + level as i64,
        };
        Fixed::new(ticks, self.tick_scale)
    }

    fn level(&self, side: Side, level: usize) -> (Fixed, Fixed) {
        let size = match side {
            Side::Bid => self.bids[level],
            _ => self.asks[level],
        };
        (self.price(side, level), Fixed::new(size, SIZE_SCALE))
    }
}

/// One venue message: a list of bodies sharing a venue sequence id.
type Message = (Vec<Body>, bool /* is trade message */);

fn snapshot(book: &SimBook) -> Vec<Body> {
    let depth = book.bids.len();
    let mut out = Vec::with_capacity(depth * 2);
    for side in [Side::Bid, Side::Ask] {
        for level in 0..depth {
            let (price, size) = book.level(side, level);
            out.push(Body::Book(BookDelta {
                side,
                price,
                size,
                flags: Flags::SNAPSHOT,
            }));
        }
    }
    if let Some(Body::Book(last)) = out.last_mut() {
        last.flags = Flags::SNAPSHOT.with(Flags::LAST);
    }
    out
}

fn delta(side: Side, price: Fixed, size: Fixed) -> Body {
    Body::Book(BookDelta {
        side,
        price,
        size,
        flags: Flags::default(),
    })
}

fn next_message(book: &mut SimBook, rng: &mut SmallRng) -> Message {
    let depth = book.bids.len();
    let roll: f64 = rng.r#gen();
    let mut bodies = Vec::with_capacity(4);
    let is_trade;
    if roll < 0.15 {
        // A trade at the touch consumes part of the best level.
        is_trade = true;
        let side = if rng.r#gen::<bool>() {
            Side::Bid
        } else {
            Side::Ask
        };
        let sizes = match side {
            Side::Bid => &mut book.bids,
            _ => &mut book.asks,
        };
        let take = rng.gen_range(1..=sizes[0].clamp(1, 5_000));
        sizes[0] = (sizes[0] - take).max(1);
        let remaining = sizes[0];
        book.trade_id += 1;
        bodies.push(Body::Trade(Trade {
            price: book.price(side, 0),
            size: Fixed::new(take, SIZE_SCALE),
            // Taking the bid means the aggressor sold.
            aggressor: side.opposite(),
            trade_id: compact_str::ToCompactString::to_compact_string(&book.trade_id),
        }));
        bodies.push(delta(
            side,
            book.price(side, 0),
            Fixed::new(remaining, SIZE_SCALE),
        ));
    } else if roll < 0.25 {
        // Mid moves one tick: the book shifts by one level; it never crosses.
        is_trade = false;
        let up = rng.r#gen::<bool>();
        let (old_top_side, grow_side) = if up {
            (Side::Ask, Side::Bid)
        } else {
            (Side::Bid, Side::Ask)
        };
        // The touch on one side disappears, the other side gains a new best level.
        let (gone_price, _) = book.level(old_top_side, 0);
        let (far_grow_price, _) = book.level(grow_side, depth - 1);
        bodies.push(delta(old_top_side, gone_price, Fixed::ZERO));
        bodies.push(delta(grow_side, far_grow_price, Fixed::ZERO));
        let new_size = rng.gen_range(1..50_000);
        let new_far = rng.gen_range(1..50_000);
        if up {
            book.best_bid += 1;
            book.asks.remove(0);
            book.asks.push(new_far);
            book.bids.pop();
            book.bids.insert(0, new_size);
        } else {
            book.best_bid -= 1;
            book.bids.remove(0);
            book.bids.push(new_far);
            book.asks.pop();
            book.asks.insert(0, new_size);
        }
        let (p, s) = book.level(grow_side, 0);
        bodies.push(delta(grow_side, p, s));
        let (p, s) = book.level(old_top_side, depth - 1);
        bodies.push(delta(old_top_side, p, s));
    } else {
        // One to three levels change size.
        is_trade = false;
        let n = rng.gen_range(1..=3);
        for _ in 0..n {
            let side = if rng.r#gen::<bool>() {
                Side::Bid
            } else {
                Side::Ask
            };
            let level = rng.gen_range(0..depth);
            let size = rng.gen_range(1..50_000);
            match side {
                Side::Bid => book.bids[level] = size,
                _ => book.asks[level] = size,
            }
            let (p, s) = book.level(side, level);
            bodies.push(delta(side, p, s));
        }
    }
    (bodies, is_trade)
}

/// Runs the synthetic venue until done or stopped; `progress` sees counters now and then.
pub fn run(
    config: &SimulateConfig,
    stop: &Stop,
    mut progress: impl FnMut(&SimulateStats, &Outlets),
) -> Result<SimulateStats> {
    check_rate(config.rate).map_err(|m| anyhow::anyhow!("simulate: {m}"))?;
    if let Some(r) = config.synthetic_rate {
        check_rate(r).map_err(|m| anyhow::anyhow!("simulate: synthetic {m}"))?;
    }
    let ctx = crate::bus::context();
    let mut publisher = Outlets::default();
    if !config.publisher.bind.is_empty() {
        publisher.zmq = Some(Publisher::bind(&ctx, &config.publisher)?);
    }
    if let Some((nats, options)) = &config.nats {
        publisher.nats = Some(crate::nats::NatsPublisher::connect(nats, options)?);
    }
    if publisher.zmq.is_none() && publisher.nats.is_none() {
        anyhow::bail!("simulate: nowhere to publish: give a --bind endpoint or a --nats URL");
    }
    let mut heartbeat = HeartbeatTimer::new(&config.publisher_id, config.heartbeat, false);
    if config.wait_for > 0
        && let Some(zmq) = publisher.zmq.as_mut()
    {
        zmq.wait_for_subscribers(config.wait_for, Duration::from_secs(3600), &|| {
            stop.is_set()
        })?;
    }
    let snapshot_requests = match &config.snapshot_endpoint {
        Some(ep) => {
            let rep = ctx.socket(zmq::REP)?;
            rep.bind(ep)
                .map_err(|e| anyhow::anyhow!("cannot bind snapshot endpoint {ep}: {e}"))?;
            Some(rep)
        }
        None => None,
    };
    let mut rng = SmallRng::seed_from_u64(config.seed);
    let venue: std::sync::Arc<str> = config.venue.as_str().into();
    let mut books: Vec<SimBook> = config
        .symbols
        .iter()
        .enumerate()
        .map(|(i, s)| SimBook::new(s, i, config.depth.max(2), &mut rng))
        .collect();
    let model_rate = match config.synthetic_rate {
        Some(r) if r > 0.0 => r,
        _ if config.rate > 0.0 => config.rate,
        _ => 10_000.0,
    };
    let inter_arrival = Exp::new(model_rate).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut seq = Sequencer::default();
    let mut stats = SimulateStats::default();
    let started = Instant::now();
    let mut synthetic_ts = match config.clock {
        Clock::Synthetic(t) => t,
        Clock::Wall => 0,
    };
    // Wall-clock pacing target, in seconds since start.
    let mut due = 0.0f64;
    let mut last_snapshot = Instant::now();
    let mut pending_snapshots: Vec<usize> = (0..books.len()).collect();
    let mut malformed_kind = 0u64;
    let mut last_progress = Instant::now();
    let mut messages = 0u64;

    loop {
        if stop.is_set() {
            break;
        }
        if config.events.is_some_and(|n| stats.generated >= n) {
            break;
        }
        if config.duration.is_some_and(|d| started.elapsed() >= d) {
            break;
        }
        // Unpaced, a message takes about a microsecond: read the clock for heartbeats
        // and progress every few dozen, not every one.
        messages += 1;
        let clock_due = config.rate > 0.0 || messages % 32 == 1;
        if clock_due {
            heartbeat.tick_outlets(&mut publisher)?;
        }
        if config
            .snapshot_every
            .is_some_and(|every| last_snapshot.elapsed() >= every)
        {
            last_snapshot = Instant::now();
            pending_snapshots = (0..books.len()).collect();
        }
        if let Some(rep) = &snapshot_requests
            && rep.recv_bytes(zmq::DONTWAIT).is_ok()
        {
            pending_snapshots = (0..books.len()).collect();
            rep.send(format!("{{\"snapshots\":{}}}", books.len()).as_bytes(), 0)?;
        }
        // Choose the next message: pending snapshots first, then random activity.
        let (index, bodies, is_trade) = if let Some(i) = pending_snapshots.pop() {
            (i, snapshot(&books[i]), false)
        } else {
            let i = rng.gen_range(0..books.len());
            let (bodies, is_trade) = next_message(&mut books[i], &mut rng);
            (i, bodies, is_trade)
        };
        let gap: f64 = inter_arrival.sample(&mut rng) * bodies.len() as f64;
        if config.rate > 0.0 {
            due += gap;
            let ahead = due - started.elapsed().as_secs_f64();
            if ahead > 0.0005 {
                std::thread::sleep(Duration::from_secs_f64(ahead.min(0.1)));
            }
        }
        let ts_recv = match config.clock {
            Clock::Wall => now_nanos(),
            Clock::Synthetic(_) => {
                // `as` saturates; the sum must too (a start near the end of i64 time).
                synthetic_ts = synthetic_ts
                    .saturating_add((gap * NANOS_PER_SEC as f64) as i64)
                    .saturating_add(1);
                synthetic_ts
            }
        };
        let book = &mut books[index];
        let (venue_seq, prev) = if is_trade {
            (book.trade_id, book.trade_id - 1)
        } else {
            book.venue_seq += 1;
            (book.venue_seq, book.venue_seq - 1)
        };
        // Stop exactly at `events`, closing the truncated venue message with LAST.
        let n = match config.events {
            Some(limit) => bodies.len().min((limit - stats.generated) as usize),
            None => bodies.len(),
        };
        for (k, mut body) in bodies.into_iter().take(n).enumerate() {
            if let Body::Book(d) = &mut body
                && k + 1 == n
            {
                d.flags = d.flags.with(Flags::LAST);
            }
            // A trade message carries its book update too; the trade keeps the trade-id
            // sequence and the level update the book sequence.
            let (vs, pvs) = match (&body, is_trade) {
                (Body::Book(_), true) => {
                    book.venue_seq += 1;
                    (book.venue_seq, book.venue_seq - 1)
                }
                _ => (venue_seq, prev),
            };
            let mut event = Event {
                venue: venue.clone(),
                symbol: book.symbol.clone(),
                ts_event: ts_recv - 150_000,
                ts_recv,
                venue_seq: Some(vs),
                prev_venue_seq: Some(pvs),
                pub_seq: 0,
                body,
            };
            let topic = seq.stamp(&mut event);
            stats.generated += 1;
            let nth = stats.generated;
            if nth <= config.skip {
                continue;
            }
            let f = &config.faults;
            if let Some(after) = f.drop_after
                && nth > after
                && nth <= after + f.drop_count
            {
                stats.dropped += 1;
                continue;
            }
            publisher.send_on(topic, &event)?;
            stats.published += 1;
            if f.duplicate_every.is_some_and(|k| nth % k == 0) {
                publisher.send_on(topic, &event)?;
                stats.duplicated += 1;
            }
            if f.malformed_every.is_some_and(|k| nth % k == 0) {
                send_malformed(&mut publisher, &event, malformed_kind)?;
                malformed_kind += 1;
                stats.malformed += 1;
            }
            if f.stall_after == Some(nth) {
                std::thread::sleep(f.stall);
                due = started.elapsed().as_secs_f64();
            }
        }
        if clock_due && last_progress.elapsed() >= Duration::from_millis(200) {
            last_progress = Instant::now();
            stats.elapsed = started.elapsed();
            progress(&stats, &publisher);
        }
    }
    let eos = Event::end_of_stream(&config.publisher_id, false, now_nanos(), stats.published);
    publisher.send(&eos)?;
    stats.elapsed = started.elapsed();
    progress(&stats, &publisher);
    stats.nats = publisher.close()?;
    stats.elapsed = started.elapsed();
    Ok(stats)
}

/// Sends one of several kinds of broken message.
fn send_malformed(publisher: &mut Outlets, event: &Event, which: u64) -> Result<()> {
    let topic = crate::wire::topic(event);
    match which % 4 {
        0 => publisher.send_raw(topic.as_bytes(), b"{not json"),
        1 => {
            let payload = crate::wire::encode_to_vec(event);
            let bad = String::from_utf8_lossy(&payload).replace("\"price\":\"", "\"price\":\"x");
            publisher.send_raw(topic.as_bytes(), bad.as_bytes())
        }
        2 => publisher.send_raw(b"book.elsewhere.NOPE", &crate::wire::encode_to_vec(event)),
        _ => publisher.send_raw(topic.as_bytes(), &[0xff, 0xfe, 0x00, 0x01]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::book::L2Book;

    #[test]
    fn generated_books_never_cross_and_sequences_are_contiguous() {
        let mut rng = SmallRng::seed_from_u64(7);
        let mut sim = SimBook::new("X", 0, 10, &mut rng);
        let mut book = L2Book::new();
        for body in snapshot(&sim) {
            if let Body::Book(d) = body {
                book.apply(&d);
            }
        }
        for _ in 0..20_000 {
            let (bodies, _) = next_message(&mut sim, &mut rng);
            let n = bodies.len();
            for (k, body) in bodies.into_iter().enumerate() {
                if let Body::Book(mut d) = body {
                    if k + 1 == n {
                        d.flags = Flags::LAST;
                    }
                    book.apply(&d);
                }
            }
            assert!(
                !book.is_crossed(),
                "crossed: {:?} {:?}",
                book.best_bid(),
                book.best_ask()
            );
            assert_eq!(book.depth(), (10, 10));
        }
    }

    #[test]
    fn rates_that_are_not_finite_or_negative_are_refused() {
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -1.0, 1e-9] {
            let e = check_rate(bad).unwrap_err();
            assert!(e.contains("or 0 for as fast as possible"), "{bad}: {e}");
        }
        for good in [0.0, MIN_RATE, 2_000.0, 1e9] {
            assert_eq!(check_rate(good), Ok(good));
        }
        let config = SimulateConfig {
            rate: f64::NAN,
            ..SimulateConfig::default()
        };
        let e = run(&config, &Stop::new(), |_, _| {}).unwrap_err();
        assert!(format!("{e:#}").contains("rate NaN"), "{e:#}");
    }
}
