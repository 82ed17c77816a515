//! The matching engine: one L2 book per (venue, symbol) rebuilt from market events, the
//! strategies' virtual orders matched against it, positions and the fill digest.
//!
//! Owns order state, the pending-order queue (the timing contract), queue positions and
//! per-strategy positions. Never owns sockets or files: the host feeds it and drains
//! [`ExchangeOutput`]s; [`super::outputs`] writes them.
//!
//! Assumptions, each a choice a trader may reject:
//! - Strategies' orders never trade with each other, only with the recorded book.
//! - Liquidity an aggressive order takes is remembered per level ("consumed") and hidden
//!   from later orders until the next book delta at that level: the delta is the market's
//!   own word on the level and replaces our guess.
//! - A resting order the book later crosses (an ask at or below a resting bid) fills at
//!   its own price as *maker*, up to the crossing visible size: it was resting first.
//! - A trade whose aggressor the venue did not give is taken as a buy when it prints at or
//!   above the mid, as a sell otherwise.
//! - Requests of one strategy reach the engine in the order they were sent (one TCP
//!   connection): a later request is never applied before an earlier one.

//!
//! # Layout
//! - this file: [`SimExchange`] — requests, the pending queue, applying orders and
//!   cancels, queries and marks;
//! - `instruments.rs`: (venue, symbol) ↔ the small id indexing the markets;
//! - `market.rs`: one instrument's book, the liquidity our orders consumed, own resting
//!   orders by price and their queue positions, and what deltas and trades fill;
//! - `positions.rs`: average-cost positions per strategy and instrument;
//! - `digest.rs`: the fills digest that proves two runs equal.

mod digest;
mod instruments;
mod market;
mod own_levels;
mod positions;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

// Fx: keys here are small and never attacker-chosen; SipHash showed in replay profiles.
use rustc_hash::FxHashMap as HashMap;

use crate::book::L2Book;
use crate::event::{Body, Event, Fixed, Interner, UnixNanos};

use super::models::{ExchangeSettings, ModelError, Models};
use super::protocol::{
    ClientOrderId, ExchangeOutput, Fill, Liquidity, Mark, NewOrder, OpenOrder, OrderSide,
    OrderStatus, OrderType, OrderUpdate, PositionView, Reason, Reply, Request, TimeInForce,
};
use digest::FillDigest;
use instruments::Instruments;
use market::{Market, add, on_delta, on_trade, sub};
use positions::{Position, book_fill};

/// A request that changes orders, as [`SimExchange::submit`] takes it.
#[derive(Clone, Debug, PartialEq)]
pub enum OrderRequest {
    /// Place an order.
    New(NewOrder),
    /// Cancel the order with this client id.
    Cancel {
        /// The id the order was placed with.
        client_order_id: ClientOrderId,
    },
}

/// The simulated exchange. See the [module docs](super) for the timing contract.
pub struct SimExchange {
    models: Models,
    /// One market per instrument, indexed by the instrument's id.
    markets: Vec<Market>,
    instruments: Instruments,
    orders: HashMap<u64, Order>,
    client_ids: HashMap<(Arc<str>, ClientOrderId), u64>,
    names: Interner,
    /// Requests on their way to the engine, keyed by (apply_at, strategy, submission
    /// number): requests of different strategies due at the same nanosecond apply in
    /// strategy-name order, so the result does not depend on which process's message
    /// reached the gateway first (bus lockstep) or on the driver (in-process).
    pending: BTreeMap<(UnixNanos, Arc<str>, u64), Pending>,
    /// The earliest `apply_at` in `pending` (`UnixNanos::MAX` when empty): every event
    /// asks whether a request is due, and one compare answers it.
    first_due: UnixNanos,
    /// Latest apply time per strategy, so its requests stay in order.
    last_apply: HashMap<Arc<str>, UnixNanos>,
    /// Positions, indexed by the id [`SimExchange::position_ids`] gives them.
    positions: Vec<Position>,
    /// (strategy, venue, symbol) → index in `positions`, in name order (marks, queries).
    position_ids: BTreeMap<PositionKey, usize>,
    outputs: Vec<ExchangeOutput>,
    /// Orders that reached a final state, with when, oldest first: forgotten
    /// [`FORGET_AFTER`] later so memory does not grow with the length of a run.
    finals: VecDeque<(UnixNanos, u64)>,
    /// The oldest final's time plus [`FORGET_AFTER`] (`UnixNanos::MAX` with none): until
    /// the clock passes it there is nothing to forget, which one compare per event tells.
    forget_from: UnixNanos,
    /// Reused buffers: executions decided in a market, and the orders they touched.
    execs: Vec<Exec>,
    touched: Vec<u64>,
    next_order_id: u64,
    next_fill_id: u64,
    next_seq: u64,
    clock: UnixNanos,
    digest: FillDigest,
}

/// How long (exchange time) a filled, canceled or rejected order is remembered: after
/// that a cancel of it is refused as unknown and its client order id may be used again.
/// Keeps memory flat however long the run (the SDK never reuses an id).
pub const FORGET_AFTER: UnixNanos = 60 * crate::event::NANOS_PER_SEC;

/// (strategy, venue, symbol).
type PositionKey = (Arc<str>, Arc<str>, Arc<str>);

#[derive(Clone, Copy, Debug)]
enum Pending {
    New(u64),
    Cancel(u64),
}

#[derive(Debug)]
struct Order {
    id: u64,
    strategy: Arc<str>,
    venue: Arc<str>,
    symbol: Arc<str>,
    /// Index of the instrument's market.
    market: usize,
    /// Index of the (strategy, instrument) position, once the order reached the book.
    position: Option<usize>,
    client_order_id: ClientOrderId,
    side: OrderSide,
    order_type: OrderType,
    tif: TimeInForce,
    price: Option<Fixed>,
    size: Fixed,
    filled: Fixed,
    status: OrderStatus,
    /// Queue model's estimate of the size ahead while resting.
    ahead: Fixed,
    resting: bool,
}

impl Order {
    fn remaining(&self) -> Fixed {
        sub(self.size, self.filled)
    }
}

/// One execution decided inside a market, applied to positions and outputs afterwards.
struct Exec {
    order_id: u64,
    price: Fixed,
    size: Fixed,
    liquidity: Liquidity,
}

impl SimExchange {
    /// An exchange with explicitly assembled models.
    pub fn new(models: Models) -> SimExchange {
        SimExchange {
            models,
            markets: Vec::new(),
            instruments: Instruments::default(),
            orders: HashMap::default(),
            client_ids: HashMap::default(),
            names: Interner::default(),
            pending: BTreeMap::new(),
            first_due: UnixNanos::MAX,
            last_apply: HashMap::default(),
            positions: Vec::new(),
            position_ids: BTreeMap::new(),
            outputs: Vec::new(),
            finals: VecDeque::new(),
            forget_from: UnixNanos::MAX,
            execs: Vec::new(),
            touched: Vec::new(),
            next_order_id: 1,
            next_fill_id: 1,
            next_seq: 0,
            clock: UnixNanos::MIN,
            digest: FillDigest::default(),
        }
    }

    /// An exchange with the models a scenario's `[exchange]` block names.
    pub fn from_settings(settings: &ExchangeSettings) -> Result<SimExchange, ModelError> {
        Ok(SimExchange::new(Models::from_settings(settings)?))
    }

    /// The exchange clock: the latest `ts_recv` or `advance_to` time seen.
    pub fn now(&self) -> UnixNanos {
        self.clock
    }

    /// When the earliest queued request will be applied, if any (for paper-mode timers).
    pub fn next_apply_at(&self) -> Option<UnixNanos> {
        self.pending.keys().next().map(|(t, _, _)| *t)
    }

    /// Handles one gateway request: `new` and `cancel` go to [`SimExchange::submit`]
    /// (decided at the request's `decided_at`, else `now`), `query` is answered, `hello`
    /// and `ack` belong to the host and return `None`.
    pub fn handle(&mut self, strategy: &str, request: &Request, now: UnixNanos) -> Option<Reply> {
        match request {
            Request::New { decided_at, .. } => {
                let order = request.as_new_order()?;
                Some(self.submit(
                    strategy,
                    OrderRequest::New(order),
                    decided_at.unwrap_or(now),
                ))
            }
            Request::Cancel {
                client_order_id,
                decided_at,
            } => Some(self.submit(
                strategy,
                OrderRequest::Cancel {
                    client_order_id: client_order_id.clone(),
                },
                decided_at.unwrap_or(now),
            )),
            Request::Query {} => Some(self.query(strategy)),
            Request::Hello { .. } | Request::Ack { .. } => None,
        }
    }

    /// Takes a request decided at `decided_at` (ns, `ts_recv` timeline). Shape errors are
    /// rejected at once; anything else is queued for
    /// `apply_at = decided_at + md_latency + order_latency` and answered `accepted`.
    /// `decided_at` may lie before the exchange clock (lockstep with lookahead publishes
    /// events before the strategy's orders arrive): the order still applies at
    /// `decided_at + latency`, or now if that is already past. Rejections also appear
    /// in [`SimExchange::drain`] as order updates.
    pub fn submit(
        &mut self,
        strategy: &str,
        request: OrderRequest,
        decided_at: UnixNanos,
    ) -> Reply {
        let strategy = self.names.intern(strategy);
        match request {
            OrderRequest::New(order) => self.submit_new(strategy, order, decided_at),
            OrderRequest::Cancel { client_order_id } => {
                let key = (strategy.clone(), client_order_id);
                let Some(&order_id) = self.client_ids.get(&key) else {
                    return Reply::Rejected {
                        reason: format!(
                            "cancel of unknown client_order_id {:?}: no order of strategy {:?} has it",
                            key.1, key.0
                        ),
                        client_order_id: key.1,
                    };
                };
                self.enqueue(&strategy, decided_at, Pending::Cancel(order_id));
                Reply::Accepted {
                    client_order_id: key.1,
                    order_id,
                }
            }
        }
    }

    fn submit_new(&mut self, strategy: Arc<str>, req: NewOrder, decided_at: UnixNanos) -> Reply {
        let id = self.next_order_id;
        self.next_order_id += 1;
        let venue = self.names.intern(&req.venue);
        let symbol = self.names.intern(&req.symbol);
        let market = self.instruments.find(&venue, &symbol);
        let mut order = Order {
            id,
            strategy: strategy.clone(),
            venue,
            symbol,
            market: market.unwrap_or(usize::MAX),
            position: None,
            client_order_id: req.client_order_id.clone(),
            side: req.side,
            order_type: req.order_type,
            tif: req.tif,
            price: req.price,
            size: req.size,
            filled: Fixed::ZERO,
            status: OrderStatus::New,
            ahead: Fixed::ZERO,
            resting: false,
        };
        let key = (strategy.clone(), req.client_order_id.clone());
        if let Some(reason) = self.shape_error(&req, &key) {
            order.status = OrderStatus::Rejected;
            // Refused at the gateway on receipt, which is no earlier than the clock.
            self.emit_update(
                &order,
                decided_at.max(self.clock),
                Some(reason.clone().into()),
            );
            return Reply::Rejected {
                client_order_id: req.client_order_id,
                reason,
            };
        }
        self.client_ids.insert(key, id);
        self.orders.insert(id, order);
        self.enqueue(&strategy, decided_at, Pending::New(id));
        Reply::Accepted {
            client_order_id: req.client_order_id,
            order_id: id,
        }
    }

    fn shape_error(&self, req: &NewOrder, key: &(Arc<str>, ClientOrderId)) -> Option<String> {
        if req.client_order_id.is_empty() {
            return Some("client_order_id must not be empty".into());
        }
        if let Some(existing) = self.client_ids.get(key) {
            return Some(format!(
                "duplicate client_order_id {:?}: already used by order {existing} in this run",
                req.client_order_id
            ));
        }
        if req.size <= Fixed::ZERO {
            return Some(format!("size must be > 0, got {}", req.size));
        }
        match (req.order_type, req.price) {
            (OrderType::Limit, None) => {
                return Some("price is required for limit orders".into());
            }
            (OrderType::Limit, Some(p)) if p <= Fixed::ZERO => {
                return Some(format!("price must be > 0, got {p}"));
            }
            (OrderType::Market, Some(_)) => {
                return Some(
                    "market orders take no price (send a limit ioc to cap the price)".into(),
                );
            }
            (OrderType::Market, None) if req.tif == TimeInForce::PostOnly => {
                return Some("post_only needs a limit order".into());
            }
            _ => {}
        }
        if self.instruments.find(&req.venue, &req.symbol).is_none() {
            return Some(format!(
                "unknown symbol {}/{}: no book data seen for it yet",
                req.venue, req.symbol
            ));
        }
        None
    }

    fn enqueue(&mut self, strategy: &Arc<str>, decided_at: UnixNanos, what: Pending) {
        let md = self.models.md_latency.md_latency(decided_at).max(0);
        let ol = self.models.order_latency.order_latency(decided_at).max(0);
        let mut apply_at = decided_at.saturating_add(md).saturating_add(ol);
        let last = self
            .last_apply
            .entry(strategy.clone())
            .or_insert(UnixNanos::MIN);
        // Never in the past (already processed events stay processed), never ahead of
        // an earlier request of the same strategy.
        apply_at = apply_at.max(*last).max(self.clock);
        *last = apply_at;
        self.pending
            .insert((apply_at, strategy.clone(), self.next_seq), what);
        self.first_due = self.first_due.min(apply_at);
        self.next_seq += 1;
    }

    /// Feeds one market event (in `ts_recv` order): first applies every queued request
    /// with `apply_at < event.ts_recv`, then the event itself (book update, queue
    /// advancement, fills of resting orders). At equal times market data goes first.
    pub fn on_market(&mut self, event: &Event) {
        self.apply_pending(|t| t < event.ts_recv);
        self.clock = self.clock.max(event.ts_recv);
        if self.clock > self.forget_from {
            self.forget_old_finals();
        }
        let ts = event.ts_recv;
        match &event.body {
            Body::Book(delta) => {
                let id = match self.instruments.find_shared(&event.venue, &event.symbol) {
                    Some(id) => id,
                    None => {
                        let venue = self.names.intern(&event.venue);
                        let symbol = self.names.intern(&event.symbol);
                        self.instruments.add(venue, symbol, self.markets.len());
                        self.markets.push(Market::default());
                        self.markets.len() - 1
                    }
                };
                let queue = &*self.models.queue;
                on_delta(
                    &mut self.markets[id],
                    &mut self.orders,
                    queue,
                    delta,
                    &mut self.execs,
                );
                self.apply_execs(ts);
            }
            Body::Trade(trade) => {
                let Some(id) = self.instruments.find_shared(&event.venue, &event.symbol) else {
                    return;
                };
                on_trade(
                    &mut self.markets[id],
                    &mut self.orders,
                    trade,
                    &mut self.execs,
                );
                self.apply_execs(ts);
            }
            // A gap leaves the book as it is: the feed resynchronises it with a snapshot.
            Body::Gap(_) | Body::Heartbeat(_) | Body::EndOfStream(_) => {}
        }
    }

    /// Applies every queued request with `apply_at <= ts` and moves the clock to `ts`
    /// (end of stream, paper-mode timers).
    pub fn advance_to(&mut self, ts: UnixNanos) {
        self.apply_pending(|t| t <= ts);
        self.clock = self.clock.max(ts);
    }

    /// Applies every queued request with `apply_at < ts`, leaving the clock alone: what
    /// [`SimExchange::on_market`] does first, for hosts that publish the event in between.
    pub fn advance_before(&mut self, ts: UnixNanos) {
        self.apply_pending(|t| t < ts);
    }

    /// End of the stream at `ts`: applies what is due by `ts`, then cancels every order
    /// still on its way (it would reach the exchange after the data ends) with a reason,
    /// so every accepted order gets an answer. Resting orders stay open.
    pub fn close(&mut self, ts: UnixNanos) {
        self.advance_to(ts);
        let left = std::mem::take(&mut self.pending);
        self.first_due = UnixNanos::MAX;
        for ((apply_at, _, _), what) in left {
            if let Pending::New(id) = what {
                let reason = format!(
                    "end of stream: the order would have reached the exchange at {apply_at}, after the last event at {ts}"
                );
                self.finish(id, ts, OrderStatus::Canceled, Some(reason.into()));
            }
        }
    }

    /// True when a queued request has `apply_at < ts` ([`SimExchange::advance_before`]
    /// would apply it).
    pub fn has_due_before(&self, ts: UnixNanos) -> bool {
        self.first_due < ts
    }

    fn apply_pending(&mut self, due: impl Fn(UnixNanos) -> bool) {
        if self.pending.is_empty() || !due(self.first_due) {
            return;
        }
        while let Some(entry) = self.pending.first_entry() {
            let apply_at = entry.key().0;
            if !due(apply_at) {
                break;
            }
            let what = entry.remove();
            self.clock = self.clock.max(apply_at);
            match what {
                Pending::New(id) => self.apply_new(id, apply_at),
                Pending::Cancel(id) => self.apply_cancel(id, apply_at),
            }
        }
        self.first_due = self.pending.keys().next().map_or(UnixNanos::MAX, |k| k.0);
    }

    /// The index of the position of `order`'s strategy in its instrument, created flat
    /// on first use (when an order of the pair first reaches the book).
    fn position_of(&mut self, id: u64) -> Option<usize> {
        let order = self.orders.get(&id)?;
        if order.position.is_some() {
            return order.position;
        }
        let key = (
            order.strategy.clone(),
            order.venue.clone(),
            order.symbol.clone(),
        );
        let next = self.positions.len();
        let index = *self.position_ids.entry(key).or_insert(next);
        if index == next {
            self.positions.push(Position::default());
        }
        if let Some(order) = self.orders.get_mut(&id) {
            order.position = Some(index);
        }
        Some(index)
    }

    fn apply_new(&mut self, id: u64, ts: UnixNanos) {
        let Some(position) = self.position_of(id) else {
            return;
        };
        let Some(order) = self.orders.get(&id) else {
            return;
        };
        let side = order.side;
        let (order_type, tif, price, size) = (order.order_type, order.tif, order.price, order.size);
        let Some(market) = self.markets.get_mut(order.market) else {
            return self.finish(id, ts, OrderStatus::Rejected, Some("unknown symbol".into()));
        };
        // Only the levels this order can take: a market order does not read the whole side.
        let mut takeable = std::mem::take(&mut market.scratch_levels);
        market.takeable_into(side, price, size, &mut takeable);
        if let (TimeInForce::PostOnly, Some(&(best, _)), Some(p)) = (tif, takeable.first(), price) {
            market.scratch_levels = takeable;
            let reason = Reason::PostOnlyCross {
                side,
                best,
                price: p,
            };
            return self.finish(id, ts, OrderStatus::Rejected, Some(reason));
        }
        if order_type == OrderType::Market && takeable.is_empty() {
            market.scratch_levels = takeable;
            let reason = match side {
                OrderSide::Buy => "market order: no visible liquidity on the ask side",
                OrderSide::Sell => "market order: no visible liquidity on the bid side",
            };
            return self.finish(id, ts, OrderStatus::Rejected, Some(reason.into()));
        }
        let opp = side.book_side().opposite();
        let mut remaining = size;
        for &(level, avail) in &takeable {
            if remaining <= Fixed::ZERO {
                break;
            }
            let q = avail.min(remaining);
            market.consume(opp, level, q);
            remaining = sub(remaining, q);
            self.execs.push(Exec {
                order_id: id,
                price: level,
                size: q,
                liquidity: Liquidity::Taker,
            });
        }
        takeable.clear();
        market.scratch_levels = takeable;
        let rests = order_type == OrderType::Limit && tif != TimeInForce::Ioc;
        let mut ahead = Fixed::ZERO;
        if let (true, Some(p)) = (remaining > Fixed::ZERO && rests, price) {
            let own_side = side.book_side();
            let visible = market.available(own_side, p, market.book.size_at(own_side, p));
            ahead = self.models.queue.ahead_at_placement(visible);
            market.own(own_side).push(p, id);
        }
        self.apply_execs_quiet(ts);
        let filled_any = remaining < size;
        if remaining > Fixed::ZERO && rests {
            if let Some(order) = self.orders.get_mut(&id) {
                order.ahead = ahead;
                order.resting = true;
            }
            self.positions[position].open_orders += 1;
            let status = if filled_any {
                OrderStatus::PartiallyFilled
            } else {
                OrderStatus::New
            };
            self.finish(id, ts, status, None);
        } else if remaining > Fixed::ZERO {
            let reason = match order_type {
                OrderType::Market => "market order: visible liquidity exhausted, rest canceled",
                OrderType::Limit => "ioc: unfilled rest canceled",
            };
            self.finish(id, ts, OrderStatus::Canceled, Some(reason.into()));
        } else {
            self.finish(id, ts, OrderStatus::Filled, None);
        }
    }

    fn apply_cancel(&mut self, id: u64, ts: UnixNanos) {
        let Some(order) = self.orders.get(&id) else {
            return;
        };
        if !order.resting {
            let status = order.status;
            return self.finish(id, ts, status, Some(Reason::CancelRefused(status)));
        }
        let (side, price) = (order.side.book_side(), order.price.unwrap_or(Fixed::ZERO));
        if let Some(market) = self.markets.get_mut(order.market) {
            market.remove_resting(side, price, id);
        }
        self.unrest(id);
        self.finish(
            id,
            ts,
            OrderStatus::Canceled,
            Some("canceled by strategy".into()),
        );
    }

    fn unrest(&mut self, id: u64) {
        let Some(order) = self.orders.get_mut(&id) else {
            return;
        };
        if !order.resting {
            return;
        }
        order.resting = false;
        if let Some(p) = order.position.and_then(|i| self.positions.get_mut(i)) {
            p.open_orders = p.open_orders.saturating_sub(1);
        }
    }

    /// Forgets orders final for longer than [`FORGET_AFTER`].
    fn forget_old_finals(&mut self) {
        while let Some(&(at, id)) = self.finals.front() {
            if at.saturating_add(FORGET_AFTER) >= self.clock {
                break;
            }
            self.finals.pop_front();
            // An order answered again once final (a refused cancel) is queued twice and
            // already gone the second time.
            if self
                .orders
                .get(&id)
                .is_none_or(|o| o.resting || !o.status.is_final())
            {
                continue;
            }
            if let Some(order) = self.orders.remove(&id) {
                let key = (order.strategy, order.client_order_id);
                if self.client_ids.get(&key) == Some(&id) {
                    self.client_ids.remove(&key);
                }
            }
        }
        self.forget_from = (self.finals.front())
            .map_or(UnixNanos::MAX, |&(at, _)| at.saturating_add(FORGET_AFTER));
    }

    /// Sets the status and emits the order update.
    fn finish(&mut self, id: u64, ts: UnixNanos, status: OrderStatus, reason: Option<Reason>) {
        let Some(order) = self.orders.get_mut(&id) else {
            return;
        };
        order.status = status;
        if status.is_final() {
            self.finals.push_back((ts, id));
            if self.finals.len() == 1 {
                self.forget_from = ts.saturating_add(FORGET_AFTER);
            }
        }
        let update = make_update(order, ts, reason);
        self.outputs.push(ExchangeOutput::OrderUpdate(update));
    }

    fn emit_update(&mut self, order: &Order, ts: UnixNanos, reason: Option<Reason>) {
        self.outputs
            .push(ExchangeOutput::OrderUpdate(make_update(order, ts, reason)));
    }

    /// Books the executions in `self.execs` and emits fills plus one order update per
    /// touched order.
    fn apply_execs(&mut self, ts: UnixNanos) {
        if self.execs.is_empty() {
            return;
        }
        let mut touched = std::mem::take(&mut self.touched);
        for e in &self.execs {
            if !touched.contains(&e.order_id) {
                touched.push(e.order_id);
            }
        }
        self.apply_execs_quiet(ts);
        for &id in &touched {
            let Some(order) = self.orders.get(&id) else {
                continue;
            };
            let done = order.remaining() <= Fixed::ZERO;
            if done {
                self.unrest(id);
            }
            let status = if done {
                OrderStatus::Filled
            } else {
                OrderStatus::PartiallyFilled
            };
            self.finish(id, ts, status, None);
        }
        touched.clear();
        self.touched = touched;
    }

    /// Books the executions in `self.execs` (emptying it) and emits their fills, without
    /// order updates.
    fn apply_execs_quiet(&mut self, ts: UnixNanos) {
        let mut execs = std::mem::take(&mut self.execs);
        for e in execs.drain(..) {
            let Some(position) = self.position_of(e.order_id) else {
                continue;
            };
            let Some(order) = self.orders.get_mut(&e.order_id) else {
                continue;
            };
            order.filled = add(order.filled, e.size);
            let fee = self.models.fees.fee(e.liquidity, e.price, e.size);
            let fill = Fill {
                ts,
                strategy: order.strategy.clone(),
                venue: order.venue.clone(),
                symbol: order.symbol.clone(),
                order_id: order.id,
                client_order_id: order.client_order_id.clone(),
                fill_id: self.next_fill_id,
                side: order.side,
                price: e.price,
                size: e.size,
                fee,
                liquidity: e.liquidity,
            };
            self.next_fill_id += 1;
            book_fill(&mut self.positions[position], &fill);
            self.digest.add(&fill);
            self.outputs.push(ExchangeOutput::Fill(fill));
        }
        self.execs = execs;
    }

    /// Swaps the book of instrument `instrument` ([`SimExchange::instrument`]) with
    /// `book`; false (nothing swapped) when there is no such instrument. The in-process engine lends strategies the exchange's
    /// own book this way for the length of their callbacks, during which the exchange is
    /// not called, and takes it back with the same call: one book per instrument, kept
    /// once.
    pub fn swap_book(&mut self, instrument: usize, book: &mut Box<L2Book>) -> bool {
        let Some(market) = self.markets.get_mut(instrument) else {
            return false;
        };
        std::mem::swap(&mut market.book, book);
        true
    }

    /// The exchange's id of `venue`/`symbol` (once it has seen book data for it), for
    /// [`SimExchange::swap_book`].
    pub fn instrument(&mut self, venue: &Arc<str>, symbol: &Arc<str>) -> Option<usize> {
        self.instruments.find_shared(venue, symbol)
    }

    /// True when outputs wait to be drained.
    pub fn has_outputs(&self) -> bool {
        !self.outputs.is_empty()
    }

    /// Everything produced since the last call, in the order it happened.
    pub fn drain(&mut self) -> Vec<ExchangeOutput> {
        std::mem::take(&mut self.outputs)
    }

    /// [`SimExchange::drain`] into the caller's buffer (appended), keeping both buffers'
    /// capacity: the allocation-free form for loops that drain after every event.
    pub fn drain_into(&mut self, out: &mut Vec<ExchangeOutput>) {
        if self.outputs.is_empty() {
            return;
        }
        out.append(&mut self.outputs);
    }

    /// A stable hash of every fill so far (ts, strategy, client order id, side, price and size
    /// strings, in order), as 16 hex digits: equal runs print equal digests.
    pub fn fills_digest(&self) -> String {
        self.digest.hex()
    }

    /// Number of fills so far.
    pub fn fill_count(&self) -> u64 {
        self.digest.count()
    }

    /// Marks at `ts` for every (strategy, venue, symbol) with a position or open orders
    /// whose book has a mid price (no two-sided book, no mark).
    pub fn marks(&self, ts: UnixNanos) -> Vec<Mark> {
        let mut marks = Vec::new();
        self.marks_into(ts, &mut marks);
        marks
    }

    /// [`SimExchange::marks`] appended to the caller's buffer.
    pub fn marks_into(&self, ts: UnixNanos, out: &mut Vec<Mark>) {
        for ((strategy, venue, symbol), &i) in &self.position_ids {
            let p = &self.positions[i];
            if p.position.is_zero() && p.open_orders == 0 {
                continue;
            }
            let Some(mid) = self
                .instruments
                .find(venue, symbol)
                .and_then(|m| self.markets[m].book.mid())
            else {
                continue;
            };
            out.push(Mark {
                ts,
                strategy: strategy.clone(),
                venue: venue.clone(),
                symbol: symbol.clone(),
                mid,
                position: p.position,
            });
        }
    }

    /// Open orders (by order id) and positions (by venue, symbol) of one strategy.
    pub fn query(&self, strategy: &str) -> Reply {
        // Walk the resting-order index, not every order the run ever saw.
        let mut open: Vec<&Order> = self
            .markets
            .iter()
            .flat_map(|m| m.own_bids.ids().chain(m.own_asks.ids()))
            .flatten()
            .filter_map(|id| self.orders.get(id))
            .filter(|o| o.resting && &*o.strategy == strategy)
            .collect();
        open.sort_by_key(|o| o.id);
        let open_orders = open
            .into_iter()
            .map(|o| OpenOrder {
                order_id: o.id,
                client_order_id: o.client_order_id.clone(),
                venue: o.venue.to_string(),
                symbol: o.symbol.to_string(),
                side: o.side,
                price: o.price.unwrap_or(Fixed::ZERO),
                size: o.size,
                filled: o.filled,
                queue_ahead: o.ahead,
            })
            .collect();
        let positions = self
            .position_ids
            .iter()
            .filter(|((s, _, _), _)| &**s == strategy)
            .map(|((_, venue, symbol), &i)| (venue, symbol, &self.positions[i]))
            .map(|(venue, symbol, p)| PositionView {
                venue: venue.to_string(),
                symbol: symbol.to_string(),
                position: p.position,
                avg_entry_price: p.avg_entry,
                realized_pnl: p.realized,
                fees_paid: p.fees,
            })
            .collect();
        Reply::QueryResult {
            open_orders,
            positions,
        }
    }
}

fn make_update(order: &Order, ts: UnixNanos, reason: Option<Reason>) -> OrderUpdate {
    OrderUpdate {
        ts,
        strategy: order.strategy.clone(),
        venue: order.venue.clone(),
        symbol: order.symbol.clone(),
        order_id: order.id,
        client_order_id: order.client_order_id.clone(),
        side: order.side,
        order_type: order.order_type,
        tif: order.tif,
        price: order.price,
        size: order.size,
        filled: order.filled,
        status: order.status,
        reason,
    }
}
