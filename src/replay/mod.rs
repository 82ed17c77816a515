//! The replayer: recorded events back onto the bus, on the live topics and payloads,
//! paced by recorded time, as fast as subscribers take them, or in lockstep with
//! strategies. Owns pacing, the no-drop publisher, the slow-joiner wait and the
//! lockstep protocol; the simulated exchange plugs in through [`VenueHost`].
//!
//! Lockstep (see `docs/PROTOCOL.md`): strategies connect a DEALER socket to the gateway
//! and say `hello`. After events the replayer publishes a step marker on topic `step`
//! (`{"kind":"step","step":k,"ts_recv":t}`); a strategy answers `{"type":"ack","step":k}`
//! on its DEALER after it has handled everything before the marker, sending any orders
//! first. Simple form: one marker per event and the next event waits for every ack.
//! Lookahead form (`lookahead = L`): an order decided at event time `t` cannot reach the
//! exchange before `t + L`, so events up to `acked_ts + L` are safe to publish before the
//! acks arrive; markers are sent in batches and the run stays exact.

mod bursts;
pub mod cores;
pub mod gateway;
mod lockstep;
mod out;
pub mod pacing;
pub mod usage;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::bus::{Backpressure, HeartbeatTimer, Publisher, PublisherConfig};
use crate::event::{Body, Event, UnixNanos};
use crate::shutdown::Stop;
use crate::store::{EventReader, EventSource, Selection};
use crate::wire::Encoding;

pub(crate) use gateway::Gateway;
pub use gateway::{GatewayStats, Tokens};
use lockstep::{Link, Lockstep};
pub use pacing::{Lateness, Pacer, PacingReport, Speed, Waiting};

/// Messages a venue host wants published: `(topic, payload)`.
pub type Outbox = Vec<(String, Vec<u8>)>;

/// Something the replay loop drives in simulated time besides the bus: the simulated
/// exchange. Calls come in this order for every replayed event at `ts`:
/// `advance_before(ts)`, the event is published, `on_market(event)`.
pub trait VenueHost {
    /// Applies everything due strictly before `ts` (queued orders).
    fn advance_before(&mut self, ts: UnixNanos, out: &mut Outbox) -> Result<()>;
    /// Applies one replayed market event.
    fn on_market(&mut self, event: &Event, out: &mut Outbox) -> Result<()>;
    /// Handles one gateway request from `strategy`; `now` is the replay's event time. An
    /// order or cancel dated (`decided_at`) before `not_before` is treated as decided at
    /// `not_before`: the gateway's bound on what the strategy can have seen.
    fn on_request(
        &mut self,
        strategy: &str,
        request: &[u8],
        now: UnixNanos,
        not_before: UnixNanos,
        out: &mut Outbox,
    ) -> Result<Vec<u8>>;
    /// Called every mark interval of simulated time.
    fn on_mark(&mut self, ts: UnixNanos) -> Result<()>;
    /// End of the replay: apply what is still queued and close outputs; returns a digest.
    fn finish(&mut self, ts: UnixNanos, out: &mut Outbox) -> Result<Option<String>>;
}

/// Replay configuration.
#[derive(Clone, Debug)]
pub struct ReplayConfig {
    /// Dataset to replay.
    pub dataset: PathBuf,
    /// What to replay.
    pub selection: Selection,
    /// Pace.
    pub speed: Speed,
    /// How a paced replay waits for each event's due time.
    pub pacing: Waiting,
    /// Run the replay thread under real-time scheduling ([`pacing::Realtime`]).
    pub realtime: bool,
    /// Keep the paced replay thread on a CPU of its own and the threads it starts on
    /// the others ([`cores::OwnCore`]).
    pub own_core: bool,
    /// Over shared memory, paced, without lockstep: a backup publisher on the other
    /// cores publishes each burst the replay thread has not by its due time
    /// ([`crate::shm::backup`]).
    pub backup_publisher: bool,
    /// Bus endpoints to bind.
    pub bind: Vec<String>,
    /// Subscribers to wait for before the first event.
    pub wait_for: usize,
    /// How long to wait for them.
    pub wait_timeout: Duration,
    /// Gateway endpoint for orders and lockstep acks (ROUTER).
    pub gateway: Option<String>,
    /// Lockstep strategies to wait for (0: no lockstep).
    pub lockstep: usize,
    /// Lookahead window for lockstep (zero: simple form, one ack per event).
    pub lookahead: Duration,
    /// Publisher id in heartbeats and end-of-stream.
    pub publisher_id: String,
    /// Heartbeat interval.
    pub heartbeat: Duration,
    /// Simulated-time interval between marks.
    pub mark_interval: Duration,
    /// Give up on a lockstep strategy that has not acked for this long.
    pub ack_timeout: Duration,
    /// Messages queued per subscriber before the replay waits for it.
    pub send_hwm: i32,
    /// Payload encoding on the bus.
    pub encoding: Encoding,
    /// Secrets the gateway requires in each strategy's hello (empty: none required).
    pub tokens: Tokens,
}

impl Default for ReplayConfig {
    fn default() -> ReplayConfig {
        ReplayConfig {
            dataset: PathBuf::from("data/sample"),
            selection: Selection::default(),
            speed: Speed::Max,
            pacing: Waiting::default(),
            realtime: false,
            own_core: false,
            backup_publisher: false,
            bind: vec!["tcp://127.0.0.1:5556".into()],
            wait_for: 0,
            wait_timeout: Duration::from_secs(60),
            gateway: None,
            lockstep: 0,
            lookahead: Duration::ZERO,
            publisher_id: "replay".into(),
            heartbeat: Duration::from_secs(1),
            mark_interval: Duration::from_secs(1),
            ack_timeout: Duration::from_secs(30),
            send_hwm: 100_000,
            encoding: Encoding::Json,
            tokens: Tokens::default(),
        }
    }
}

/// What a replay did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ReplayStats {
    /// Events published.
    pub events: u64,
    /// Gap events among them.
    pub gaps: u64,
    /// Wall seconds from the first event to the end of the stream sent: the replay's own
    /// time, which its events/s divide by.
    pub stream_secs: f64,
    /// Wall seconds from the first event to the end of the run: `stream_secs`, then the
    /// last requests answered (lockstep) and the subscribers drained.
    pub elapsed_secs: f64,
    /// First and last `ts_recv` replayed.
    pub time_range: Option<(UnixNanos, UnixNanos)>,
    /// Lateness against the pacing schedule, every event from due to send returned
    /// (paced replays only; [`pacing`] defines it).
    pub lateness: Option<Lateness>,
    /// The other pacing figures: events the pacer waited for, and the floor the data and
    /// the sends force (paced replays only).
    pub pacing: Option<Box<PacingReport>>,
    /// CPU seconds (user + system, the whole process) over `elapsed_secs`.
    pub cpu_secs: f64,
    /// Seconds of CPU the hypervisor took from this machine during the replay, all its
    /// CPUs together (Linux's "steal"; None where not reported). Lateness that comes with
    /// a lot of it was the host's doing.
    pub steal_secs: Option<f64>,
    /// Page faults of the process that waited for storage during the replay (code or a
    /// mapped file the kernel had evicted); each stalls the faulting thread.
    pub major_faults: u64,
    /// The CPU the paced replay thread had to itself (`own_core`), the others left to
    /// everything else the replay started.
    pub own_cpu: Option<usize>,
    /// Seconds the hypervisor kept `own_cpu` from running during the replay (its steal).
    pub own_cpu_steal_secs: Option<f64>,
    /// Seconds the replay thread was ready to run and waited for a CPU while other
    /// threads ran (the scheduler's run delay; Linux).
    pub run_delay_secs: Option<f64>,
    /// Times the scheduler took the CPU from the replay thread while it could still run.
    pub preempted: Option<u64>,
    /// The whole process's peak resident memory when the replay ended, in MiB (before
    /// anything that follows it, such as `run`'s report).
    pub peak_rss_mib: f64,
    /// Times the publisher waited for a slow subscriber.
    pub stalls: u64,
    /// Seconds spent waiting for slow subscribers.
    pub stalled_secs: f64,
    /// Who those waits were for, most waited first.
    pub slow_subscribers: Vec<crate::bus::SlowSubscriber>,
    /// Subscribers that had not taken the end of the stream when the replay closed
    /// (interrupted, or not reading for [`crate::bus::DRAIN_LIMIT`]).
    pub dropped_at_close: Vec<String>,
    /// Step markers sent (lockstep).
    pub steps: u64,
    /// Times the replay stopped to wait for lockstep acks.
    pub ack_waits: u64,
    /// Seconds spent waiting for lockstep acks.
    pub ack_wait_secs: f64,
    /// Lockstep strategies and how long each kept the replay waiting, in seconds.
    pub slowest: Vec<(String, f64)>,
    /// Gateway requests handled.
    pub requests: u64,
    /// Gateway requests refused: no hello first, a name already connected, a missing
    /// or wrong token.
    pub refused: u64,
    /// Orders and cancels dated before the last step their strategy acknowledged (or
    /// before the replay's clock without lockstep), moved up to that time.
    pub backdated: u64,
    /// Digest of the simulated exchange's fills, when one ran.
    pub digest: Option<String>,
    /// Rows the selection covered, for progress.
    pub estimate: u64,
    /// Subscriptions the publisher saw (zero: nobody received the replay).
    pub subscriptions: u64,
    /// Replay into JetStream: messages the stream acknowledged (events, heartbeats and
    /// the end of stream).
    pub stored: Option<u64>,
}

impl ReplayStats {
    /// Takes what the replay cost the machine.
    fn used(&mut self, used: usage::Used) {
        self.cpu_secs = used.cpu_secs;
        self.steal_secs = used.steal_secs;
        self.own_cpu = used.own_cpu;
        self.own_cpu_steal_secs = used.own_cpu_steal_secs;
        self.run_delay_secs = used.run_delay_secs;
        self.preempted = used.preempted;
        self.peak_rss_mib = used.peak_rss_mib;
        self.major_faults = used.major_faults;
    }
}

/// Live progress for the caller's progress bar.
pub struct Progress<'a> {
    /// Counters so far.
    pub stats: &'a ReplayStats,
    /// Current event time.
    pub ts: UnixNanos,
    /// After the last event: subscribers the replay is waiting for to take the end of
    /// the stream, with what they still have to take.
    pub waiting_for: &'a [String],
}

pub(crate) fn publish_outbox(publisher: &mut Publisher, out: &mut Outbox) -> Result<()> {
    for (topic, payload) in out.drain(..) {
        publisher.send_raw(topic.as_bytes(), &payload)?;
    }
    Ok(())
}

/// Replays until the selection is exhausted or `stop` is raised.
pub fn run(
    config: &ReplayConfig,
    host: Option<&mut dyn VenueHost>,
    stop: &Stop,
    on_progress: impl FnMut(Progress<'_>),
) -> Result<ReplayStats> {
    run_over(config, None, host, stop, on_progress)
}

/// Like [`run`], with the strategies on `shm`'s shared-memory segments instead of the
/// ZeroMQ bus and gateway when given (`docs/SHM.md`): bus messages go into their rings,
/// requests come from them, and every one of them must say hello before the first event.
pub fn run_over(
    config: &ReplayConfig,
    shm: Option<crate::shm::Hub>,
    host: Option<&mut dyn VenueHost>,
    stop: &Stop,
    mut on_progress: impl FnMut(Progress<'_>),
) -> Result<ReplayStats> {
    let reader = EventReader::open(&config.dataset, config.selection.clone())
        .with_context(|| format!("cannot open dataset {}", config.dataset.display()))?;
    if reader.files().is_empty() {
        bail!(
            "nothing to replay in {}: no files match the selection (check --venue/--symbol/--start/--end; `ticktape inspect {}` lists what is there)",
            config.dataset.display(),
            config.dataset.display()
        );
    }
    if config.backup_publisher
        && (shm.is_none()
            || !config.own_core
            || matches!(config.speed, Speed::Max)
            || config.lockstep > 0)
    {
        bail!(
            "a backup publisher (--backup-publisher, [replay] backup_publisher) publishes a paced replay's bursts from the CPUs own_core leaves to the others, into shared-memory rings: it needs --transport shm, --own-core, a paced --speed (1, 10 ...) and no lockstep"
        );
    }
    refuse_busy_realtime(config)?;
    let own_core = own_core(config)?;
    let mut link = open_link(config, shm, host, stop)?;
    link.stats.estimate = reader.row_estimate();
    let mut heartbeat = HeartbeatTimer::new(&config.publisher_id, config.heartbeat, true);
    // Stopped before the peers came: no event goes out, but the host still closes its
    // outputs (an interrupted run keeps valid, empty run files) through `finish`.
    let peers_ready = wait_for_peers(config, &mut link, &mut heartbeat, stop)?;
    // Started before the replay thread takes its own core (`Start::new`), so it runs on
    // the others, as the read-ahead does.
    if peers_ready && config.backup_publisher {
        link.bus.start_backup()?;
    }

    let Start {
        paced,
        mut events,
        mut pacer,
        realtime,
        own_core,
        usage,
    } = Start::new(config, reader, own_core, stop)?;
    let started = usage.started();
    let mut lockstep =
        (config.lockstep > 0).then(|| Lockstep::new(config.lookahead, config.ack_timeout));
    let mut marks = Marks::new(config.mark_interval);
    let mut last_ts: UnixNanos = 0;
    let mut last_progress = Instant::now();
    // Paced without lockstep: each burst is read and encoded ahead, and published at its
    // due time (over shared memory written ahead into the rings, over ZeroMQ sent back
    // to back). The legacy pacing, a baseline, sends one event at a time as it decodes.
    let in_bursts =
        paced && lockstep.is_none() && (link.bus.shm().is_some() || config.pacing.reads_ahead());
    if peers_ready && in_bursts {
        link.bus.batch(true);
        if config.backup_publisher {
            pacer.backed_up();
        }
        let mut loop_state = bursts::Loop {
            pacer: &mut pacer,
            heartbeat: &mut heartbeat,
            marks: &mut marks,
            started,
        };
        let streamed = bursts::stream(
            &mut link,
            &mut events,
            &mut loop_state,
            stop,
            &mut on_progress,
        );
        link.bus.stop_backup();
        last_ts = streamed?;
        link.bus.batch(false);
    }

    while peers_ready
        && !in_bursts
        && let Some(event) = events.next_event()?
    {
        if stop.is_set() {
            break;
        }
        let ts = event.ts_recv;
        if let Some(l) = lockstep.as_mut() {
            l.before(&mut link, ts, stop)?;
            if stop.is_set() {
                break;
            }
        }
        pacer.wait_for(ts);
        if stop.is_set() {
            break;
        }
        // Flat out, reading the clock for heartbeats and progress every event would cost
        // more than the checks are worth; paced, events are far enough apart.
        let clock_due = paced || link.stats.events.is_multiple_of(64);
        if clock_due {
            heartbeat.tick(&mut link.bus.zmq)?;
        }
        deliver(&mut link, &mut marks, event, &mut pacer)?;
        last_ts = ts;
        match lockstep.as_mut() {
            // Without lockstep, orders are read at once.
            None => link.pump(ts, Duration::ZERO)?,
            Some(l) => {
                l.after(&mut link, ts, stop)?;
                pacer.rebase(ts);
            }
        }
        if clock_due && last_progress.elapsed() >= Duration::from_millis(100) {
            last_progress = Instant::now();
            link.stats.elapsed_secs = started.elapsed().as_secs_f64();
            on_progress(Progress {
                stats: &link.stats,
                ts,
                waiting_for: &[],
            });
        }
    }
    drop(events);
    drop(realtime);
    drop(own_core);
    let mut stats = finish(config, link, last_ts, started, &pacer, stop, on_progress)?;
    stats.used(usage.finish());
    Ok(stats)
}

/// Sends one event with what the exchange host does around it (the marks and requests
/// due before it, then its reaction to it) and counts it; the pacer takes it as sent.
fn deliver(link: &mut Link<'_>, marks: &mut Marks, event: &Event, pacer: &mut Pacer) -> Result<()> {
    let ts = event.ts_recv;
    if let Some(h) = link.host.as_deref_mut() {
        marks.before(h, ts, &mut link.out)?;
        h.advance_before(ts, &mut link.out)?;
        link.flush()?;
    }
    link.bus.send(event)?;
    pacer.sent();
    count(&mut link.stats, ts, matches!(event.body, Body::Gap(_)));
    if let Some(h) = link.host.as_deref_mut() {
        h.on_market(event, &mut link.out)?;
        let answers = link.out.len();
        link.flush()?;
        pacer.answered(ts, answers);
    }
    Ok(())
}

/// Counts one replayed event at `ts` (a gap or not) in the summary.
fn count(stats: &mut ReplayStats, ts: UnixNanos, gap: bool) {
    if gap {
        stats.gaps += 1;
    }
    stats.events += 1;
    stats.time_range = Some(stats.time_range.map_or((ts, ts), |(a, _)| (a, ts)));
}

/// What both replay loops (bus and NATS) start with.
struct Start {
    /// Not `--speed max`.
    paced: bool,
    /// The events; read ahead when paced, since a record batch decoded between two due
    /// events would make the second late.
    events: EventSource,
    pacer: Pacer,
    /// Real-time scheduling while pacing, when asked for; dropped when the loop ends.
    realtime: Option<pacing::Realtime>,
    /// The replay thread's own core while pacing, when asked for; dropped when the loop
    /// ends.
    own_core: Option<cores::OwnCore>,
    /// For the summary's rate, CPU seconds and steal.
    usage: usage::Usage,
}

impl Start {
    /// `own_core` is [`own_core`]'s, made before the loop's other threads were started.
    fn new(
        config: &ReplayConfig,
        reader: EventReader,
        own_core: Option<cores::OwnCore>,
        stop: &Stop,
    ) -> Result<Start> {
        let paced = !matches!(config.speed, Speed::Max);
        // Started before the replay thread takes its own core, so it runs on the others.
        let events = EventSource::new(reader, paced && config.pacing.reads_ahead())?;
        if let Some(own) = &own_core {
            own.take()?;
        }
        let own_cpu = own_core.as_ref().map(|o| o.split().replay);
        Ok(Start {
            paced,
            events,
            pacer: Pacer::new(config.speed)
                .waiting(config.pacing)
                .interrupted_by(stop.clone()),
            realtime: (paced && config.realtime)
                .then(pacing::Realtime::raise)
                .transpose()?,
            own_core,
            usage: usage::Usage::start(own_cpu),
        })
    }
}

/// Refuses `realtime` with `busy` pacing while the kernel's real-time budget would stop
/// the replay thread for part of every period ([`pacing::busy_realtime_refusal`]).
fn refuse_busy_realtime(config: &ReplayConfig) -> Result<()> {
    if config.realtime
        && config.pacing == Waiting::Busy
        && !matches!(config.speed, Speed::Max)
        && let Some(why) = pacing::busy_realtime_refusal_here()
    {
        bail!(why);
    }
    Ok(())
}

/// The first half of `own_core`, for a paced replay that asked for it: the calling
/// thread moves onto the other CPUs before the loop starts its threads (libzmq's,
/// the read-ahead), which inherit them; [`Start::new`] then moves it onto its own.
fn own_core(config: &ReplayConfig) -> Result<Option<cores::OwnCore>> {
    if config.own_core && !matches!(config.speed, Speed::Max) {
        cores::OwnCore::prepare().map(Some)
    } else {
        Ok(None)
    }
}

/// Binds the publisher and the gateway (over shared memory when `shm` is given).
fn open_link<'h>(
    config: &ReplayConfig,
    shm: Option<crate::shm::Hub>,
    host: Option<&'h mut dyn VenueHost>,
    stop: &Stop,
) -> Result<Link<'h>> {
    let ctx = crate::bus::context();
    let mut publisher = Publisher::bind(
        &ctx,
        &PublisherConfig {
            bind: config.bind.clone(),
            backpressure: Backpressure::Block,
            send_hwm: config.send_hwm,
            encoding: config.encoding,
        },
    )?;
    publisher.give_up_waiting_on(stop.clone());
    let shm = shm.map(|mut hub| {
        hub.give_up_waiting_on(stop.clone());
        std::rc::Rc::new(std::cell::RefCell::new(hub))
    });
    let gateway = match (&shm, &config.gateway) {
        (Some(hub), _) => {
            let mut g = Gateway::over_shm(hub.clone(), config.lockstep);
            g.require(config.tokens.clone());
            Some(g)
        }
        (None, Some(ep)) => {
            let mut g = Gateway::bind(&ctx, ep, config.lockstep)?;
            g.require(config.tokens.clone());
            Some(g)
        }
        (None, None) => None,
    };
    if config.lockstep > 0 && gateway.is_none() {
        bail!("lockstep needs a gateway endpoint (--gateway) for the strategies' acks");
    }
    Ok(Link {
        bus: out::BusOut::new(publisher, shm, config.encoding),
        gateway,
        host,
        out: Outbox::new(),
        stats: ReplayStats::default(),
    })
}

/// Slow joiners: waits for subscribers, and in lockstep for every strategy's hello.
/// False when stopped before they came.
fn wait_for_peers(
    config: &ReplayConfig,
    link: &mut Link<'_>,
    heartbeat: &mut HeartbeatTimer,
    stop: &Stop,
) -> Result<bool> {
    let wait_started = Instant::now();
    // Over shared memory the strategies are no ZeroMQ subscribers, and each says hello.
    let shm_peers = link.bus.shm().map(|h| h.borrow().len());
    let want_subs = match shm_peers {
        Some(_) => config.wait_for,
        None => config.wait_for.max(config.lockstep),
    };
    let want_strategies = config.lockstep.max(shm_peers.unwrap_or(0));
    loop {
        heartbeat.tick(&mut link.bus.zmq)?;
        let subs_ready =
            link.bus
                .zmq
                .wait_for_subscribers(want_subs, Duration::from_millis(20), &|| stop.is_set())?;
        link.pump(0, Duration::from_millis(5))?;
        let strategies_ready = link
            .gateway
            .as_ref()
            .is_none_or(|g| g.strategies.len() >= want_strategies);
        if subs_ready && strategies_ready {
            return Ok(true);
        }
        if stop.is_set() {
            return Ok(false);
        }
        if wait_started.elapsed() > config.wait_timeout {
            bail!(
                "waited {:?} for {} subscriber(s) and {} lockstep strategies; saw {} subscription(s) and {} strateg(ies). Are they connected to {} / {}?",
                config.wait_timeout,
                want_subs,
                config.lockstep,
                link.bus.zmq.stats().subscriptions,
                link.gateway.as_ref().map_or(0, |g| g.strategies.len()),
                link.bus.zmq.endpoints().join(","),
                match shm_peers {
                    Some(_) => "shared memory",
                    None => config.gateway.as_deref().unwrap_or("-"),
                }
            );
        }
    }
}

/// Marks every mark interval of simulated time, with what is due before each applied.
struct Marks {
    every: i64,
    next: Option<UnixNanos>,
}

impl Marks {
    fn new(interval: Duration) -> Marks {
        Marks {
            every: i64::try_from(interval.as_nanos())
                .unwrap_or(i64::MAX)
                .max(1),
            next: None,
        }
    }

    /// Takes the marks due at or before `ts`.
    fn before(&mut self, host: &mut dyn VenueHost, ts: UnixNanos, out: &mut Outbox) -> Result<()> {
        let due = self
            .next
            .get_or_insert(ts - ts.rem_euclid(self.every) + self.every);
        while *due <= ts {
            host.advance_before(*due, out)?;
            host.on_mark(*due)?;
            *due += self.every;
        }
        Ok(())
    }
}

/// End of stream: flush the exchange, tell everyone, let lockstep strategies finish,
/// wait for subscribers to take the end.
fn finish(
    config: &ReplayConfig,
    mut link: Link<'_>,
    last_ts: UnixNanos,
    started: Instant,
    pacer: &Pacer,
    stop: &Stop,
    mut on_progress: impl FnMut(Progress<'_>),
) -> Result<ReplayStats> {
    if let Some(h) = link.host.as_deref_mut() {
        link.stats.digest = h.finish(last_ts, &mut link.out)?;
        link.flush()?;
    }
    let eos = Event::end_of_stream(&config.publisher_id, true, last_ts, link.stats.events);
    link.bus.send(&eos)?;
    link.bus.wake();
    link.bus.ending();
    link.stats.stream_secs = started.elapsed().as_secs_f64();
    if link.gateway.is_some() {
        // Answer last requests (e.g. a final position query) for a moment, or until
        // every shared-memory strategy has closed its side (over ZeroMQ nobody says so).
        let until = Instant::now() + Duration::from_millis(200);
        while Instant::now() < until && !link.bus.shm().is_some_and(|h| h.borrow().all_closed()) {
            link.pump(last_ts, Duration::from_millis(20))?;
        }
        link.pump(last_ts, Duration::ZERO)?;
    }
    let Link {
        bus,
        gateway,
        mut stats,
        ..
    } = link;
    if let Some(hub) = bus.shm() {
        let mut hub = hub.borrow_mut();
        hub.close();
        stats.dropped_at_close = hub.drain(crate::bus::DRAIN_LIMIT, stop, |behind| {
            on_progress(Progress {
                stats: &stats,
                ts: last_ts,
                waiting_for: behind,
            })
        });
    }
    let mut publisher = bus.zmq;
    if let Some(g) = gateway {
        let counts = g.stats();
        stats.requests = counts.requests;
        stats.refused = counts.refused;
        stats.backdated = counts.backdated;
        let mut slowest: Vec<(String, f64)> = g
            .strategies
            .values()
            .map(|s| (s.name.clone(), s.waited.as_secs_f64()))
            .collect();
        slowest.sort_by(|a, b| b.1.total_cmp(&a.1));
        stats.slowest = slowest;
    }
    // The end of the stream reaches every subscriber before we close; one that stopped
    // reading is named while we wait. Interrupted, the user wants out now: drop its tail.
    let zmq_behind = publisher.drain(crate::bus::DRAIN_LIMIT, stop, |behind| {
        on_progress(Progress {
            stats: &stats,
            ts: last_ts,
            waiting_for: behind,
        })
    })?;
    stats.dropped_at_close.extend(zmq_behind);
    stats.elapsed_secs = started.elapsed().as_secs_f64();
    stats.lateness = pacer.lateness();
    stats.pacing = pacer.report().map(Box::new);
    stats.stalls = publisher.stats().stalls;
    stats.stalled_secs = publisher.stats().stalled.as_secs_f64();
    stats.slow_subscribers = publisher.slow_subscribers();
    stats.subscriptions = publisher.stats().subscriptions;
    on_progress(Progress {
        stats: &stats,
        ts: last_ts,
        waiting_for: &[],
    });
    Ok(stats)
}

/// Replays into NATS JetStream instead of onto the ZeroMQ bus, for strategies on other
/// machines: paced (`speed` 1, N) or as fast as the stream acknowledges (`max`). Every
/// event keeps its venue identity as message id, heartbeats and the end of stream carry
/// `replay: true`. Lockstep, the order gateway and the simulated exchange stay local
/// (they need the gateway's ZeroMQ round trips): a configuration asking for them is
/// refused. `wait_for` is not used: the stream keeps what is published until consumers
/// take it, so there is no slow joiner.
pub fn run_nats(
    config: &ReplayConfig,
    nats: &crate::nats::NatsConfig,
    stop: &Stop,
    mut on_progress: impl FnMut(Progress<'_>),
) -> Result<ReplayStats> {
    if config.lockstep > 0 || config.gateway.is_some() {
        bail!(
            "lockstep and the order gateway stay local: replay into JetStream is paced or at max speed only; drop --lockstep/--gateway, or replay on the ZeroMQ bus (--bind) for lockstep"
        );
    }
    let reader = EventReader::open(&config.dataset, config.selection.clone())
        .with_context(|| format!("cannot open dataset {}", config.dataset.display()))?;
    if reader.files().is_empty() {
        bail!(
            "nothing to replay in {}: no files match the selection (check --venue/--symbol/--start/--end; `ticktape inspect {}` lists what is there)",
            config.dataset.display(),
            config.dataset.display()
        );
    }
    refuse_busy_realtime(config)?;
    let own_core = own_core(config)?;
    let mut publisher = crate::nats::NatsPublisher::connect(
        nats,
        &crate::nats::publish::PublishOptions {
            publisher_id: config.publisher_id.clone(),
            encoding: config.encoding,
            ..Default::default()
        },
    )?;
    let mut stats = ReplayStats {
        estimate: reader.row_estimate(),
        ..ReplayStats::default()
    };
    let mut heartbeat = HeartbeatTimer::new(&config.publisher_id, config.heartbeat, true);
    let Start {
        paced,
        mut events,
        mut pacer,
        realtime,
        own_core,
        usage,
    } = Start::new(config, reader, own_core, stop)?;
    let started = usage.started();
    let mut last_ts: UnixNanos = 0;
    let mut last_progress = Instant::now();
    while let Some(event) = events.next_event()? {
        if stop.is_set() {
            break;
        }
        let ts = event.ts_recv;
        pacer.wait_for(ts);
        if stop.is_set() {
            break;
        }
        let clock_due = paced || stats.events.is_multiple_of(64);
        if clock_due && let Some(beat) = heartbeat.due() {
            publisher.send(&beat)?;
        }
        publisher.send(event)?;
        pacer.sent();
        if matches!(event.body, Body::Gap(_)) {
            stats.gaps += 1;
        }
        stats.events += 1;
        stats.time_range = Some(stats.time_range.map_or((ts, ts), |(a, _)| (a, ts)));
        last_ts = ts;
        if clock_due && last_progress.elapsed() >= Duration::from_millis(100) {
            last_progress = Instant::now();
            stats.elapsed_secs = started.elapsed().as_secs_f64();
            on_progress(Progress {
                stats: &stats,
                ts,
                waiting_for: &[],
            });
        }
    }
    drop(realtime);
    drop(own_core);
    let eos = Event::end_of_stream(&config.publisher_id, true, last_ts, stats.events);
    publisher.send(&eos)?;
    // Every event acknowledged by the stream before the replay says it is done.
    let published = publisher.close()?;
    stats.elapsed_secs = started.elapsed().as_secs_f64();
    // Into JetStream, the stream ends when the broker has acknowledged all of it.
    stats.stream_secs = stats.elapsed_secs;
    stats.lateness = pacer.lateness();
    stats.pacing = pacer.report().map(Box::new);
    stats.used(usage.finish());
    stats.stored = Some(published.acked);
    on_progress(Progress {
        stats: &stats,
        ts: last_ts,
        waiting_for: &[],
    });
    Ok(stats)
}
