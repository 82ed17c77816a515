//! The in-process loop: recorded events → simulated exchange → strategies, one thread,
//! no sockets, no JSON.
//!
//! For every event at `ts` (the replay loop's order, so results equal the bus lockstep's):
//! 1. marks due at or before `ts` (requests due before each mark applied first);
//! 2. requests due strictly before `ts` are applied; their fills and order updates go to
//!    the run files and to their strategies, whose new requests are submitted at once;
//! 3. a timer due at `ts` runs; the exchange takes the event, then every strategy gets
//!    it (books, trades, gaps), then the event's fills and updates;
//! 4. what the strategies queued is submitted, decided at `ts`.
//!
//! Strategies read the exchange's own books: one book per instrument, updated once per
//! delta, lent to a strategy's context for the length of each callback by swapping
//! pointers. After a gap a strategy's book is cleared and the exchange's is not, so that
//! strategy keeps its own book of the instrument from then on.
//!
//! A strategy reacting to event k queues its orders before event k+1 exists for it, so
//! there is no lookahead by construction, and the decision time is the event time the
//! engine handed over, never a value the strategy supplies.

use anyhow::{Context as _, Result};

use crate::event::{Body, Event, UnixNanos};
use crate::exchange::{ExchangeOutput, Mark, RunCounts, RunWriter, SimExchange};
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

/// Runs `f` on `seat` with the exchange's books lent to its context (two pointer swaps
/// per book the strategy shares), then takes them back.
fn lent<T>(exchange: &mut SimExchange, seat: &mut Seat, f: impl FnOnce(&mut Seat) -> T) -> T {
    seat.dispatch.ctx.swap_shared_books(exchange);
    let result = f(seat);
    seat.dispatch.ctx.swap_shared_books(exchange);
    result
}

/// The exchange, its run files and the strategies, driven event by event.
pub(crate) struct Engine {
    pub(crate) exchange: SimExchange,
    pub(crate) writer: Option<RunWriter>,
    pub(crate) seats: Vec<Seat>,
    mark_every: i64,
    next_mark: Option<UnixNanos>,
    last_ts: UnixNanos,
    /// Reused buffers: requests taken from a strategy, outputs drained from the
    /// exchange, marks taken from it.
    requests: Vec<QueuedRequest>,
    outputs: Vec<ExchangeOutput>,
    marks: Vec<Mark>,
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
            outputs: Vec::new(),
            marks: Vec::new(),
            stats: EngineStats::default(),
        }
    }

    /// Runs one recorded event through the exchange and the strategies.
    pub(crate) fn step(&mut self, event: &Event) -> Result<()> {
        let ts = event.ts_recv;
        if self.next_mark.is_none_or(|at| at <= ts) {
            self.mark_through(ts)?;
        }
        self.settle_before(ts)?;
        // Strategies read the exchange's own books (lent for each callback): a timer due
        // at this event runs before the exchange applies it, as it would on a local book.
        for seat in &mut self.seats {
            if seat.dispatch.timer_due(event) {
                lent(&mut self.exchange, seat, |s| {
                    s.dispatch.clock(s.strategy.as_mut(), event).map(drop)
                })?;
            }
        }
        self.exchange.on_market(event);
        for seat in &mut self.seats {
            // Most deltas end no venue message: nothing to lend, nothing to call.
            if seat.dispatch.pass_partial(event) {
                continue;
            }
            seat.dispatch.ctx.share_books_for(event, &mut self.exchange);
            lent(&mut self.exchange, seat, |s| {
                s.dispatch.market(s.strategy.as_mut(), event)
            })?;
        }
        // Both are no-ops without outputs or queued requests (deliver returns at once;
        // submit would only deliver, and a delivery queues no output): skip the calls.
        if self.exchange.has_outputs() {
            self.deliver()?;
        }
        if self.seats.iter().any(|s| s.dispatch.ctx.has_requests()) {
            self.submit()?;
        }
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

    /// Writes the marks due at or before `ts`, each after the requests due before it.
    fn mark_through(&mut self, ts: UnixNanos) -> Result<()> {
        let first = ts - ts.rem_euclid(self.mark_every) + self.mark_every;
        while *self.next_mark.get_or_insert(first) <= ts {
            let at = self.next_mark.unwrap_or(first);
            self.next_mark = Some(at + self.mark_every);
            self.settle_before(at)?;
            self.exchange.marks_into(at, &mut self.marks);
            self.stats.marks += self.marks.len() as u64;
            match self.writer.as_mut() {
                Some(w) => w.write_marks_owned(&mut self.marks)?,
                None => self.marks.clear(),
            }
        }
        Ok(())
    }

    /// Applies requests due strictly before `ts`, delivering their outputs and
    /// submitting the reactions, until nothing more is due before `ts`.
    fn settle_before(&mut self, ts: UnixNanos) -> Result<()> {
        // Nearly always: nothing due, nothing waiting.
        if !self.exchange.has_outputs() && !self.exchange.has_due_before(ts) {
            return Ok(());
        }
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
        if !self.exchange.has_outputs() {
            return Ok(false);
        }
        self.exchange.drain_into(&mut self.outputs);
        if self.outputs.is_empty() {
            return Ok(false);
        }
        for output in self.outputs.drain(..) {
            for seat in &mut self.seats {
                let theirs = lent(&mut self.exchange, seat, |s| {
                    s.dispatch.exchange(s.strategy.as_mut(), &output)
                })?;
                if theirs {
                    break;
                }
            }
            if let Some(w) = self.writer.as_mut() {
                w.write_owned(output)?;
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
                    lent(&mut self.exchange, seat, |s| {
                        s.dispatch.reply(s.strategy.as_mut(), &reply)
                    })?;
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
