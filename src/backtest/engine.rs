//! The in-process loop: recorded events → simulated exchange → strategies, one thread,
//! no sockets, no JSON.
//!
//! For every event at `ts` (the replay loop's order, so results equal the bus lockstep's):
//! 1. marks due at or before `ts` (requests due before each mark applied first);
//! 2. requests due strictly before `ts` are applied; their fills and order updates go to
//!    the run files and to their strategies, whose new requests are submitted at once;
//! 3. the exchange takes the event, then every strategy gets it (books, trades, gaps,
//!    timers), then the event's fills and updates;
//! 4. what the strategies queued is submitted, decided at `ts`.
//!
//! A strategy reacting to event k queues its orders before event k+1 exists for it, so
//! there is no lookahead by construction, and the decision time is the event time the
//! engine handed over, never a value the strategy supplies.

use anyhow::{Context as _, Result};

use crate::event::{Body, Event, UnixNanos};
use crate::exchange::{RunCounts, RunWriter, SimExchange};
use crate::strategy::{Dispatcher, QueuedRequest, Strategy};

/// One strategy in the engine.
pub(crate) struct Seat {
    pub(crate) strategy: Box<dyn Strategy>,
    pub(crate) dispatch: Dispatcher,
}

/// Counters of one in-process run.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct EngineStats {
    /// Market events replayed.
    pub events: u64,
    /// Gap events among them.
    pub gaps: u64,
    /// First and last `ts_recv`.
    pub time_range: Option<(UnixNanos, UnixNanos)>,
    /// Requests (orders and cancels) submitted to the exchange.
    pub requests: u64,
    /// Requests queued after the end of the data (not submitted: nothing could fill them).
    pub requests_after_end: u64,
    /// Marks written.
    pub marks: u64,
}

/// The exchange, its run files and the strategies, driven event by event.
pub(crate) struct Engine {
    pub(crate) exchange: SimExchange,
    pub(crate) writer: Option<RunWriter>,
    pub(crate) seats: Vec<Seat>,
    mark_every: i64,
    next_mark: Option<UnixNanos>,
    last_ts: UnixNanos,
    /// Reused buffer for requests taken from a strategy.
    requests: Vec<QueuedRequest>,
    pub(crate) stats: EngineStats,
}

impl Engine {
    pub(crate) fn new(
        exchange: SimExchange,
        writer: Option<RunWriter>,
        seats: Vec<Seat>,
        mark_every: i64,
    ) -> Engine {
        Engine {
            exchange,
            writer,
            seats,
            mark_every: mark_every.max(1),
            next_mark: None,
            last_ts: 0,
            requests: Vec::new(),
            stats: EngineStats::default(),
        }
    }

    /// Runs one recorded event through the exchange and the strategies.
    pub(crate) fn step(&mut self, event: &Event) -> Result<()> {
        let ts = event.ts_recv;
        let first = ts - ts.rem_euclid(self.mark_every) + self.mark_every;
        while *self.next_mark.get_or_insert(first) <= ts {
            let at = self.next_mark.unwrap_or(first);
            self.next_mark = Some(at + self.mark_every);
            self.settle_before(at)?;
            let marks = self.exchange.marks(at);
            self.stats.marks += marks.len() as u64;
            if let Some(w) = self.writer.as_mut() {
                w.write_marks(&marks)?;
            }
        }
        self.settle_before(ts)?;
        self.exchange.on_market(event);
        for seat in &mut self.seats {
            seat.dispatch.market(seat.strategy.as_mut(), event)?;
        }
        self.deliver()?;
        self.submit()?;
        // Requests submitted just now may be due at once (zero latency) and produce
        // outputs before the next event; those are delivered when it comes.
        if matches!(event.body, Body::Gap(_)) {
            self.stats.gaps += 1;
        }
        self.stats.events += 1;
        self.stats.time_range = Some(match self.stats.time_range {
            Some((a, _)) => (a, ts),
            None => (ts, ts),
        });
        self.last_ts = ts;
        Ok(())
    }

    /// Applies requests due strictly before `ts`, delivering their outputs and
    /// submitting the reactions, until nothing more is due before `ts`.
    fn settle_before(&mut self, ts: UnixNanos) -> Result<()> {
        loop {
            self.exchange.advance_before(ts);
            if !self.deliver()? {
                return Ok(());
            }
            if !self.submit()? {
                return Ok(());
            }
        }
    }

    /// Drains the exchange's outputs to the run files and their strategies; true if any.
    fn deliver(&mut self) -> Result<bool> {
        let outputs = self.exchange.drain();
        if outputs.is_empty() {
            return Ok(false);
        }
        for output in &outputs {
            if let Some(w) = self.writer.as_mut() {
                w.write(output)?;
            }
            for seat in &mut self.seats {
                if seat.dispatch.exchange(seat.strategy.as_mut(), output)? {
                    break;
                }
            }
        }
        Ok(true)
    }

    /// Submits every queued request, strategy by strategy in order, handing each its
    /// reply; repeats while replies or rejections queue more. True if any was submitted.
    fn submit(&mut self) -> Result<bool> {
        let mut any = false;
        loop {
            let mut submitted = false;
            for seat in &mut self.seats {
                if !seat.dispatch.ctx.has_requests() {
                    continue;
                }
                self.requests.extend(seat.dispatch.ctx.take_requests());
                for q in self.requests.drain(..) {
                    let reply =
                        self.exchange
                            .submit(seat.dispatch.ctx.name(), q.request, q.decided_at);
                    self.stats.requests += 1;
                    seat.dispatch.reply(seat.strategy.as_mut(), &reply)?;
                }
                submitted = true;
            }
            // Shape rejections are outputs too: they reach the strategy before it moves on.
            let delivered = self.deliver()?;
            any |= submitted;
            if !submitted && !delivered {
                return Ok(any);
            }
        }
    }

    /// End of the data: applies what is due, cancels what would arrive later, closes the
    /// run files; returns the fills digest and the rows written.
    pub(crate) fn finish(&mut self) -> Result<(String, Option<RunCounts>)> {
        self.exchange.close(self.last_ts);
        self.deliver()?;
        for seat in &mut self.seats {
            self.stats.requests_after_end += seat.dispatch.ctx.take_requests().count() as u64;
        }
        let counts = match self.writer.take() {
            Some(w) => Some(w.finish().context("cannot close the run files")?),
            None => None,
        };
        Ok((self.exchange.fills_digest(), counts))
    }
}
