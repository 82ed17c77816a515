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

use std::collections::BTreeMap;
use std::sync::Arc;

// Fx: keys here are small and never attacker-chosen; SipHash showed in replay profiles.
use rustc_hash::FxHashMap as HashMap;

use xxhash_rust::xxh3::Xxh3;

use crate::book::L2Book;
use crate::event::{Body, BookDelta, Event, Fixed, Flags, Interner, Side, Trade, UnixNanos};

use super::models::{ExchangeSettings, ModelError, Models, QueueModel, narrow, wide};
use super::protocol::{
    ExchangeOutput, Fill, Liquidity, Mark, NewOrder, OpenOrder, OrderSide, OrderStatus, OrderType,
    OrderUpdate, PositionView, Reply, Request, TimeInForce,
};

/// A request that changes orders, as [`SimExchange::submit`] takes it.
#[derive(Clone, Debug, PartialEq)]
pub enum OrderRequest {
    /// Place an order.
    New(NewOrder),
    /// Cancel the order with this client id.
    Cancel {
        /// The id the order was placed with.
        client_order_id: String,
    },
}

/// The simulated exchange. See the [module docs](super) for the timing contract.
pub struct SimExchange {
    models: Models,
    markets: BTreeMap<Arc<str>, BTreeMap<Arc<str>, Market>>,
    orders: HashMap<u64, Order>,
    client_ids: HashMap<(Arc<str>, String), u64>,
    names: Interner,
    /// Requests on their way to the engine, keyed by (apply_at, strategy, submission
    /// number): requests of different strategies due at the same nanosecond apply in
    /// strategy-name order, so the result does not depend on which process's message
    /// reached the gateway first (bus lockstep) or on the driver (in-process).
    pending: BTreeMap<(UnixNanos, Arc<str>, u64), Pending>,
    /// Latest apply time per strategy, so its requests stay in order.
    last_apply: HashMap<Arc<str>, UnixNanos>,
    positions: BTreeMap<PositionKey, Position>,
    outputs: Vec<ExchangeOutput>,
    next_order_id: u64,
    next_fill_id: u64,
    next_seq: u64,
    clock: UnixNanos,
    digest: Xxh3,
    fills: u64,
}

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
    client_order_id: String,
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

#[derive(Debug, Default)]
struct Market {
    book: L2Book,
    in_snapshot: bool,
    /// Size our aggressive orders took from a level since its last delta.
    consumed: HashMap<(Side, Fixed), Fixed>,
    /// Traded size at a level holding own orders since the level's last delta, so a
    /// decrease that trades explain is not taken for cancels.
    traded: HashMap<(Side, Fixed), Fixed>,
    /// Own resting order ids per price, in arrival order.
    own_bids: BTreeMap<Fixed, Vec<u64>>,
    own_asks: BTreeMap<Fixed, Vec<u64>>,
}

impl Market {
    fn own(&mut self, side: Side) -> &mut BTreeMap<Fixed, Vec<u64>> {
        match side {
            Side::Ask => &mut self.own_asks,
            _ => &mut self.own_bids,
        }
    }

    fn available(&self, side: Side, price: Fixed, size: Fixed) -> Fixed {
        let used = self
            .consumed
            .get(&(side, price))
            .copied()
            .unwrap_or(Fixed::ZERO);
        pos(sub(size, used))
    }

    /// Opposite-side levels an order of `side` may take, best first, as
    /// (price, available size), up to `limit` if given.
    fn takeable(&self, side: OrderSide, limit: Option<Fixed>) -> Vec<(Fixed, Fixed)> {
        let opp = side.book_side().opposite();
        self.book
            .levels(opp)
            .take_while(|(p, _)| match (limit, side) {
                (None, _) => true,
                (Some(l), OrderSide::Buy) => *p <= l,
                (Some(l), OrderSide::Sell) => *p >= l,
            })
            .map(|(p, s)| (p, self.available(opp, p, s)))
            .filter(|(_, a)| *a > Fixed::ZERO)
            .collect()
    }

    fn consume(&mut self, side: Side, price: Fixed, size: Fixed) {
        let used = self.consumed.entry((side, price)).or_insert(Fixed::ZERO);
        *used = add(*used, size);
    }

    fn remove_resting(&mut self, side: Side, price: Fixed, id: u64) {
        let own = self.own(side);
        if let Some(ids) = own.get_mut(&price) {
            ids.retain(|&x| x != id);
            if ids.is_empty() {
                own.remove(&price);
            }
        }
    }
}

#[derive(Debug, Default, Clone)]
struct Position {
    position: Fixed,
    avg_entry: f64,
    realized: f64,
    fees: f64,
    open_orders: usize,
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
            markets: BTreeMap::new(),
            orders: HashMap::default(),
            client_ids: HashMap::default(),
            names: Interner::default(),
            pending: BTreeMap::new(),
            last_apply: HashMap::default(),
            positions: BTreeMap::new(),
            outputs: Vec::new(),
            next_order_id: 1,
            next_fill_id: 1,
            next_seq: 0,
            clock: UnixNanos::MIN,
            digest: Xxh3::new(),
            fills: 0,
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
        let mut order = Order {
            id,
            strategy: strategy.clone(),
            venue,
            symbol,
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
            self.emit_update(&order, decided_at.max(self.clock), Some(reason.clone()));
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

    fn shape_error(&self, req: &NewOrder, key: &(Arc<str>, String)) -> Option<String> {
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
        let known = self
            .markets
            .get(req.venue.as_str())
            .is_some_and(|m| m.contains_key(req.symbol.as_str()));
        if !known {
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
        self.next_seq += 1;
    }

    /// Feeds one market event (in `ts_recv` order): first applies every queued request
    /// with `apply_at < event.ts_recv`, then the event itself (book update, queue
    /// advancement, fills of resting orders). At equal times market data goes first.
    pub fn on_market(&mut self, event: &Event) {
        self.apply_pending(|t| t < event.ts_recv);
        self.clock = self.clock.max(event.ts_recv);
        let ts = event.ts_recv;
        match &event.body {
            Body::Book(delta) => {
                let known = self
                    .markets
                    .get(&*event.venue)
                    .is_some_and(|m| m.contains_key(&*event.symbol));
                if !known {
                    let venue = self.names.intern(&event.venue);
                    let symbol = self.names.intern(&event.symbol);
                    self.markets
                        .entry(venue)
                        .or_default()
                        .insert(symbol, Market::default());
                }
                let Some(market) = self
                    .markets
                    .get_mut(&*event.venue)
                    .and_then(|m| m.get_mut(&*event.symbol))
                else {
                    return;
                };
                let execs = on_delta(market, &mut self.orders, &*self.models.queue, delta);
                self.apply_execs(execs, ts);
            }
            Body::Trade(trade) => {
                let Some(market) = self
                    .markets
                    .get_mut(&*event.venue)
                    .and_then(|m| m.get_mut(&*event.symbol))
                else {
                    return;
                };
                let execs = on_trade(market, &mut self.orders, trade);
                self.apply_execs(execs, ts);
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
        for ((apply_at, _, _), what) in left {
            if let Pending::New(id) = what {
                let reason = format!(
                    "end of stream: the order would have reached the exchange at {apply_at}, after the last event at {ts}"
                );
                self.finish(id, ts, OrderStatus::Canceled, Some(reason));
            }
        }
    }

    fn apply_pending(&mut self, due: impl Fn(UnixNanos) -> bool) {
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
    }

    fn apply_new(&mut self, id: u64, ts: UnixNanos) {
        let Some(order) = self.orders.get(&id) else {
            return;
        };
        let (venue, symbol, side) = (order.venue.clone(), order.symbol.clone(), order.side);
        let (order_type, tif, price, size) = (order.order_type, order.tif, order.price, order.size);
        let pos_key = (order.strategy.clone(), venue.clone(), symbol.clone());
        self.positions.entry(pos_key.clone()).or_default();
        let Some(market) = self
            .markets
            .get_mut(&venue)
            .and_then(|m| m.get_mut(&symbol))
        else {
            return self.finish(id, ts, OrderStatus::Rejected, Some("unknown symbol".into()));
        };
        let takeable = market.takeable(side, price);
        let opp_name = match side {
            OrderSide::Buy => "ask",
            OrderSide::Sell => "bid",
        };
        if let (TimeInForce::PostOnly, Some((best, _)), Some(p)) = (tif, takeable.first(), price) {
            let reason = format!(
                "post-only order would cross: best {opp_name} {best} vs {} price {p}",
                side.name()
            );
            return self.finish(id, ts, OrderStatus::Rejected, Some(reason));
        }
        if order_type == OrderType::Market && takeable.is_empty() {
            let reason = format!("market order: no visible liquidity on the {opp_name} side");
            return self.finish(id, ts, OrderStatus::Rejected, Some(reason));
        }
        let opp = side.book_side().opposite();
        let mut remaining = size;
        let mut execs = Vec::new();
        for (level, avail) in takeable {
            if remaining <= Fixed::ZERO {
                break;
            }
            let q = avail.min(remaining);
            market.consume(opp, level, q);
            remaining = sub(remaining, q);
            execs.push(Exec {
                order_id: id,
                price: level,
                size: q,
                liquidity: Liquidity::Taker,
            });
        }
        let rests = order_type == OrderType::Limit && tif != TimeInForce::Ioc;
        let mut ahead = Fixed::ZERO;
        if let (true, Some(p)) = (remaining > Fixed::ZERO && rests, price) {
            let own_side = side.book_side();
            let visible = market.available(own_side, p, market.book.size_at(own_side, p));
            ahead = self.models.queue.ahead_at_placement(visible);
            market.own(own_side).entry(p).or_default().push(id);
        }
        self.apply_execs_quiet(execs, ts);
        let filled_any = remaining < size;
        if remaining > Fixed::ZERO && rests {
            if let Some(order) = self.orders.get_mut(&id) {
                order.ahead = ahead;
                order.resting = true;
            }
            if let Some(p) = self.positions.get_mut(&pos_key) {
                p.open_orders += 1;
            }
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
            let reason = format!("cancel refused: order already {}", order.status.name());
            let status = order.status;
            return self.finish(id, ts, status, Some(reason));
        }
        let (venue, symbol) = (order.venue.clone(), order.symbol.clone());
        let (side, price) = (order.side.book_side(), order.price.unwrap_or(Fixed::ZERO));
        if let Some(market) = self
            .markets
            .get_mut(&venue)
            .and_then(|m| m.get_mut(&symbol))
        {
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
        let key = (
            order.strategy.clone(),
            order.venue.clone(),
            order.symbol.clone(),
        );
        if let Some(p) = self.positions.get_mut(&key) {
            p.open_orders = p.open_orders.saturating_sub(1);
        }
    }

    /// Sets the status and emits the order update.
    fn finish(&mut self, id: u64, ts: UnixNanos, status: OrderStatus, reason: Option<String>) {
        let Some(order) = self.orders.get_mut(&id) else {
            return;
        };
        order.status = status;
        let update = make_update(order, ts, reason);
        self.outputs.push(ExchangeOutput::OrderUpdate(update));
    }

    fn emit_update(&mut self, order: &Order, ts: UnixNanos, reason: Option<String>) {
        self.outputs
            .push(ExchangeOutput::OrderUpdate(make_update(order, ts, reason)));
    }

    /// Books executions and emits fills plus one order update per touched order.
    fn apply_execs(&mut self, execs: Vec<Exec>, ts: UnixNanos) {
        let mut touched: Vec<u64> = Vec::new();
        for e in &execs {
            if !touched.contains(&e.order_id) {
                touched.push(e.order_id);
            }
        }
        self.apply_execs_quiet(execs, ts);
        for id in touched {
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
    }

    /// Books executions and emits their fills, without order updates.
    fn apply_execs_quiet(&mut self, execs: Vec<Exec>, ts: UnixNanos) {
        for e in execs {
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
            let key = (
                order.strategy.clone(),
                order.venue.clone(),
                order.symbol.clone(),
            );
            book_fill(self.positions.entry(key).or_default(), &fill);
            self.hash_fill(&fill);
            self.outputs.push(ExchangeOutput::Fill(fill));
        }
    }

    fn hash_fill(&mut self, fill: &Fill) {
        // Unit (0x1f) and record (0x1e) separators keep field boundaries unambiguous.
        let h = &mut self.digest;
        h.update(&fill.ts.to_le_bytes());
        h.update(fill.strategy.as_bytes());
        h.update(&[0x1f]);
        // The strategy's own id, not the exchange's: exchange ids count submissions across
        // strategies, whose interleaving at a bus gateway is not part of the result.
        h.update(fill.client_order_id.as_bytes());
        h.update(&[0x1f]);
        h.update(fill.side.name().as_bytes());
        h.update(&[0x1f]);
        h.update(fill.price.to_string().as_bytes());
        h.update(&[0x1f]);
        h.update(fill.size.to_string().as_bytes());
        h.update(&[0x1e]);
        self.fills += 1;
    }

    /// Everything produced since the last call, in the order it happened.
    pub fn drain(&mut self) -> Vec<ExchangeOutput> {
        std::mem::take(&mut self.outputs)
    }

    /// A stable hash of every fill so far (ts, strategy, client order id, side, price and size
    /// strings, in order), as 16 hex digits: equal runs print equal digests.
    pub fn fills_digest(&self) -> String {
        format!("{:016x}", self.digest.digest())
    }

    /// Number of fills so far.
    pub fn fill_count(&self) -> u64 {
        self.fills
    }

    /// Marks at `ts` for every (strategy, venue, symbol) with a position or open orders
    /// whose book has a mid price (no two-sided book, no mark).
    pub fn marks(&self, ts: UnixNanos) -> Vec<Mark> {
        self.positions
            .iter()
            .filter(|(_, p)| !p.position.is_zero() || p.open_orders > 0)
            .filter_map(|((strategy, venue, symbol), p)| {
                let mid = self.markets.get(venue)?.get(symbol)?.book.mid()?;
                Some(Mark {
                    ts,
                    strategy: strategy.clone(),
                    venue: venue.clone(),
                    symbol: symbol.clone(),
                    mid,
                    position: p.position,
                })
            })
            .collect()
    }

    /// Open orders (by order id) and positions (by venue, symbol) of one strategy.
    pub fn query(&self, strategy: &str) -> Reply {
        // Walk the resting-order index, not every order the run ever saw.
        let mut open: Vec<&Order> = self
            .markets
            .values()
            .flat_map(|m| m.values())
            .flat_map(|m| m.own_bids.values().chain(m.own_asks.values()))
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
            .positions
            .iter()
            .filter(|((s, _, _), _)| &**s == strategy)
            .map(|((_, venue, symbol), p)| PositionView {
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

fn make_update(order: &Order, ts: UnixNanos, reason: Option<String>) -> OrderUpdate {
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

/// Average-cost accounting: adding to a position moves the average, reducing it
/// realizes `(price - avg) × closed` in the position's direction.
fn book_fill(p: &mut Position, fill: &Fill) {
    let qty = fill.size.to_f64();
    let price = fill.price.to_f64();
    let signed = match fill.side {
        OrderSide::Buy => fill.size,
        OrderSide::Sell => Fixed::new(-fill.size.mantissa, fill.size.scale),
    };
    let held = p.position.to_f64();
    let dir = fill.side.sign() as f64;
    if held == 0.0 || held.signum() == dir {
        let total = held.abs() + qty;
        if total > 0.0 {
            p.avg_entry = (p.avg_entry * held.abs() + price * qty) / total;
        }
    } else {
        let closed = qty.min(held.abs());
        p.realized += closed * (price - p.avg_entry) * held.signum();
        if qty > held.abs() {
            p.avg_entry = price;
        }
    }
    p.position = add(p.position, signed);
    if p.position.is_zero() {
        p.avg_entry = 0.0;
    }
    p.fees += fill.fee;
}

/// Applies a book delta and returns the fills of own orders the new book crosses.
fn on_delta(
    market: &mut Market,
    orders: &mut HashMap<u64, Order>,
    queue: &dyn QueueModel,
    delta: &BookDelta,
) -> Vec<Exec> {
    let snapshot = delta.flags.contains(Flags::SNAPSHOT);
    let last = delta.flags.contains(Flags::LAST);
    if snapshot && !market.in_snapshot {
        market.consumed.clear();
        market.traded.clear();
    }
    market.in_snapshot = snapshot && !last;
    let key = (delta.side, delta.price);
    let prev = market.book.apply_with_previous(delta);
    market.consumed.remove(&key);
    let traded = market.traded.remove(&key).unwrap_or(Fixed::ZERO);
    let new = pos(delta.size);
    let ids = market.own(delta.side).get(&delta.price).cloned();
    for id in ids.unwrap_or_default() {
        let Some(order) = orders.get_mut(&id) else {
            continue;
        };
        if !snapshot && prev > new {
            let decrease = sub(prev, new);
            let explained = traded.min(decrease);
            let canceled = sub(decrease, explained);
            if canceled > Fixed::ZERO {
                let level_before = sub(prev, explained);
                order.ahead = pos(queue.after_cancel(order.ahead, canceled, level_before));
            }
        }
        order.ahead = order.ahead.min(new);
    }
    if market.in_snapshot {
        return Vec::new();
    }
    let mut execs = cross(market, orders, OrderSide::Buy);
    execs.extend(cross(market, orders, OrderSide::Sell));
    execs
}

/// Fills own resting orders of `side` that the book now crosses, at their own price as
/// makers, up to the crossing visible size.
fn cross(market: &mut Market, orders: &HashMap<u64, Order>, side: OrderSide) -> Vec<Exec> {
    let own_side = side.book_side();
    let opp = own_side.opposite();
    // Runs after every delta: leave at once unless the best own price touches the book.
    let crossing = |p: Fixed| match side {
        OrderSide::Buy => market.book.best_ask().is_some_and(|(a, _)| a <= p),
        OrderSide::Sell => market.book.best_bid().is_some_and(|(b, _)| b >= p),
    };
    let best_own = match side {
        OrderSide::Buy => market.own_bids.keys().next_back().copied(),
        OrderSide::Sell => market.own_asks.keys().next().copied(),
    };
    if !best_own.is_some_and(crossing) {
        return Vec::new();
    }
    let prices: Vec<Fixed> = match side {
        OrderSide::Buy => market.own_bids.keys().rev().copied().collect(),
        OrderSide::Sell => market.own_asks.keys().copied().collect(),
    };
    let mut execs = Vec::new();
    for price in prices {
        let mut levels = market.takeable(side, Some(price));
        if levels.is_empty() {
            break;
        }
        let ids = market
            .own(own_side)
            .get(&price)
            .cloned()
            .unwrap_or_default();
        for id in ids {
            let Some(order) = orders.get(&id) else {
                continue;
            };
            let mut want = order.remaining();
            for (level, avail) in levels.iter_mut() {
                if want <= Fixed::ZERO {
                    break;
                }
                if *avail <= Fixed::ZERO {
                    continue;
                }
                let q = want.min(*avail);
                *avail = sub(*avail, q);
                want = sub(want, q);
                market.consume(opp, *level, q);
                execs.push(Exec {
                    order_id: id,
                    price,
                    size: q,
                    liquidity: Liquidity::Maker,
                });
            }
            if want <= Fixed::ZERO {
                market.remove_resting(own_side, price, id);
            }
        }
    }
    execs
}

/// Advances queues on a trade and returns the fills it causes.
fn on_trade(market: &mut Market, orders: &mut HashMap<u64, Order>, trade: &Trade) -> Vec<Exec> {
    let aggressor = match trade.aggressor {
        Side::None => match market.book.mid() {
            Some(mid) if trade.price.to_f64() < mid => Side::Ask,
            _ => Side::Bid,
        },
        s => s,
    };
    // A buying aggressor lifts asks, so it reaches our resting sells, and vice versa.
    let (own_side, side) = match aggressor {
        Side::Bid => (Side::Ask, OrderSide::Sell),
        _ => (Side::Bid, OrderSide::Buy),
    };
    let reached: Vec<Fixed> = match side {
        OrderSide::Buy => market
            .own_bids
            .range(trade.price..)
            .rev()
            .map(|(p, _)| *p)
            .collect(),
        OrderSide::Sell => market
            .own_asks
            .range(..=trade.price)
            .map(|(p, _)| *p)
            .collect(),
    };
    if reached.contains(&trade.price) {
        let t = market
            .traded
            .entry((own_side, trade.price))
            .or_insert(Fixed::ZERO);
        *t = add(*t, trade.size);
    }
    let mut taken = Fixed::ZERO;
    let mut execs = Vec::new();
    for price in reached {
        let through = price != trade.price;
        let ids = market
            .own(own_side)
            .get(&price)
            .cloned()
            .unwrap_or_default();
        for id in ids {
            let Some(order) = orders.get_mut(&id) else {
                continue;
            };
            let ahead = if through { Fixed::ZERO } else { order.ahead };
            let past = pos(sub(sub(trade.size, ahead), taken));
            let q = past.min(order.remaining());
            if !through {
                order.ahead = pos(sub(order.ahead, trade.size));
            }
            if q <= Fixed::ZERO {
                continue;
            }
            taken = add(taken, q);
            let done = q >= order.remaining();
            execs.push(Exec {
                order_id: id,
                price,
                size: q,
                liquidity: Liquidity::Maker,
            });
            if done {
                market.remove_resting(own_side, price, id);
            }
        }
    }
    execs
}

fn add(a: Fixed, b: Fixed) -> Fixed {
    a.checked_add(b).unwrap_or_else(|| {
        let s = a.scale.max(b.scale);
        narrow(wide(a, s) + wide(b, s), s)
    })
}

fn sub(a: Fixed, b: Fixed) -> Fixed {
    a.checked_sub(b).unwrap_or_else(|| {
        let s = a.scale.max(b.scale);
        narrow(wide(a, s) - wide(b, s), s)
    })
}

/// `x` floored at zero.
fn pos(x: Fixed) -> Fixed {
    if x < Fixed::ZERO { Fixed::ZERO } else { x }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exchange::models::{
        BpsFees, ConstantLatency, FeeSchedule, Proportional, RiskAverse,
    };

    fn fx(s: &str) -> Fixed {
        s.parse().unwrap()
    }

    fn event(ts: UnixNanos, body: Body) -> Event {
        Event {
            venue: Arc::from("sim"),
            symbol: Arc::from("BTCUSD"),
            ts_event: ts,
            ts_recv: ts,
            venue_seq: None,
            prev_venue_seq: None,
            pub_seq: 0,
            body,
        }
    }

    fn level(ex: &mut SimExchange, ts: UnixNanos, side: Side, price: &str, size: &str) {
        ex.on_market(&event(
            ts,
            Body::Book(BookDelta {
                side,
                price: fx(price),
                size: fx(size),
                flags: Flags::LAST,
            }),
        ));
    }

    fn trade(ex: &mut SimExchange, ts: UnixNanos, price: &str, size: &str, aggressor: Side) {
        ex.on_market(&event(
            ts,
            Body::Trade(Trade {
                price: fx(price),
                size: fx(size),
                aggressor,
                trade_id: String::new(),
            }),
        ));
    }

    #[allow(clippy::too_many_arguments)]
    fn order(
        ex: &mut SimExchange,
        ts: UnixNanos,
        cid: &str,
        side: OrderSide,
        order_type: OrderType,
        tif: TimeInForce,
        price: Option<&str>,
        size: &str,
    ) -> Reply {
        ex.submit(
            "s1",
            OrderRequest::New(NewOrder {
                client_order_id: cid.into(),
                venue: "sim".into(),
                symbol: "BTCUSD".into(),
                side,
                order_type,
                tif,
                price: price.map(fx),
                size: fx(size),
                decided_at: None,
            }),
            ts,
        )
    }

    fn limit(ex: &mut SimExchange, ts: i64, cid: &str, side: OrderSide, price: &str, size: &str) {
        let r = order(
            ex,
            ts,
            cid,
            side,
            OrderType::Limit,
            TimeInForce::Gtc,
            Some(price),
            size,
        );
        assert!(matches!(r, Reply::Accepted { .. }), "{r:?}");
        ex.advance_to(ts);
    }

    /// A two-sided book: bids 99 x 5, asks 101 x 1, 102 x 2, 103 x 5.
    fn exchange_with(models: Models) -> SimExchange {
        let mut ex = SimExchange::new(models);
        level(&mut ex, 1, Side::Bid, "99", "5");
        level(&mut ex, 1, Side::Ask, "101", "1");
        level(&mut ex, 1, Side::Ask, "102", "2");
        level(&mut ex, 1, Side::Ask, "103", "5");
        ex
    }

    fn exchange() -> SimExchange {
        exchange_with(Models::default())
    }

    fn order_updates(out: &[ExchangeOutput]) -> Vec<OrderUpdate> {
        out.iter()
            .filter_map(|o| match o {
                ExchangeOutput::OrderUpdate(u) => Some(u.clone()),
                _ => None,
            })
            .collect()
    }

    fn fills(out: &[ExchangeOutput]) -> Vec<(String, String, Liquidity)> {
        out.iter()
            .filter_map(|o| match o {
                ExchangeOutput::Fill(f) => {
                    Some((f.price.to_string(), f.size.to_string(), f.liquidity))
                }
                _ => None,
            })
            .collect()
    }

    fn last_update(out: &[ExchangeOutput]) -> OrderUpdate {
        out.iter()
            .rev()
            .find_map(|o| match o {
                ExchangeOutput::OrderUpdate(u) => Some(u.clone()),
                _ => None,
            })
            .expect("an order update")
    }

    fn open_orders(ex: &SimExchange) -> Vec<OpenOrder> {
        match ex.query("s1") {
            Reply::QueryResult { open_orders, .. } => open_orders,
            other => panic!("{other:?}"),
        }
    }

    fn position(ex: &SimExchange) -> PositionView {
        match ex.query("s1") {
            Reply::QueryResult { positions, .. } => positions[0].clone(),
            other => panic!("{other:?}"),
        }
    }

    fn rejection(reply: Reply) -> String {
        match reply {
            Reply::Rejected { reason, .. } => reason,
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    const T: Liquidity = Liquidity::Taker;
    const M: Liquidity = Liquidity::Maker;

    fn s(x: &str) -> String {
        x.to_string()
    }

    #[test]
    fn limit_order_fills_partially_across_levels_then_rests() {
        let mut ex = exchange();
        limit(&mut ex, 10, "c1", OrderSide::Buy, "102", "4");
        let out = ex.drain();
        assert_eq!(
            fills(&out),
            vec![(s("101"), s("1"), T), (s("102"), s("2"), T)]
        );
        let u = last_update(&out);
        assert_eq!(u.status, OrderStatus::PartiallyFilled);
        assert_eq!(u.filled, fx("3"));
        assert_eq!(u.ts, 10);
        let open = open_orders(&ex);
        assert_eq!(open.len(), 1);
        assert_eq!(open[0].price, fx("102"));
    }

    #[test]
    fn market_order_walks_the_book_and_cancels_what_is_left() {
        let mut ex = exchange();
        order(
            &mut ex,
            10,
            "m",
            OrderSide::Buy,
            OrderType::Market,
            TimeInForce::Ioc,
            None,
            "9",
        );
        ex.advance_to(10);
        let out = ex.drain();
        assert_eq!(
            fills(&out),
            vec![
                (s("101"), s("1"), T),
                (s("102"), s("2"), T),
                (s("103"), s("5"), T)
            ]
        );
        let u = last_update(&out);
        assert_eq!(u.status, OrderStatus::Canceled);
        assert!(u.reason.unwrap().contains("exhausted"));
        assert_eq!(position(&ex).position, fx("8"));
    }

    #[test]
    fn ioc_remainder_is_canceled() {
        let mut ex = exchange();
        let r = order(
            &mut ex,
            10,
            "i",
            OrderSide::Buy,
            OrderType::Limit,
            TimeInForce::Ioc,
            Some("101"),
            "3",
        );
        assert!(matches!(r, Reply::Accepted { .. }));
        ex.advance_to(10);
        let out = ex.drain();
        assert_eq!(fills(&out), vec![(s("101"), s("1"), T)]);
        let u = last_update(&out);
        assert_eq!((u.status, u.filled), (OrderStatus::Canceled, fx("1")));
        assert!(open_orders(&ex).is_empty());
    }

    #[test]
    fn post_only_is_rejected_when_it_would_cross_and_rests_otherwise() {
        let mut ex = exchange();
        order(
            &mut ex,
            10,
            "p1",
            OrderSide::Buy,
            OrderType::Limit,
            TimeInForce::PostOnly,
            Some("101"),
            "1",
        );
        order(
            &mut ex,
            10,
            "p2",
            OrderSide::Buy,
            OrderType::Limit,
            TimeInForce::PostOnly,
            Some("100"),
            "1",
        );
        ex.advance_to(10);
        let out = ex.drain();
        assert!(fills(&out).is_empty());
        let updates = order_updates(&out);
        assert_eq!(updates[0].status, OrderStatus::Rejected);
        assert!(
            updates[0]
                .reason
                .as_deref()
                .unwrap()
                .contains("would cross")
        );
        assert_eq!(updates[1].status, OrderStatus::New);
        assert_eq!(open_orders(&ex).len(), 1);
    }

    #[test]
    fn consumed_liquidity_is_not_taken_twice_until_the_level_updates() {
        let mut ex = exchange();
        for cid in ["a", "b"] {
            order(
                &mut ex,
                10,
                cid,
                OrderSide::Buy,
                OrderType::Market,
                TimeInForce::Ioc,
                None,
                "1",
            );
        }
        ex.advance_to(10);
        assert_eq!(
            fills(&ex.drain()),
            vec![(s("101"), s("1"), T), (s("102"), s("1"), T)]
        );
        // The venue re-states the level: our guess is replaced by its word.
        level(&mut ex, 11, Side::Ask, "101", "1");
        order(
            &mut ex,
            12,
            "c",
            OrderSide::Buy,
            OrderType::Market,
            TimeInForce::Ioc,
            None,
            "1",
        );
        ex.advance_to(12);
        assert_eq!(fills(&ex.drain()), vec![(s("101"), s("1"), T)]);
    }

    #[test]
    fn queue_position_advances_on_trades_at_price() {
        let mut ex = exchange();
        limit(&mut ex, 10, "q", OrderSide::Buy, "99", "2");
        assert_eq!(open_orders(&ex)[0].queue_ahead, fx("5"));
        ex.drain();
        trade(&mut ex, 11, "99", "4", Side::Ask);
        assert!(fills(&ex.drain()).is_empty());
        assert_eq!(open_orders(&ex)[0].queue_ahead, fx("1"));
        // A trade at another price does not touch the queue.
        trade(&mut ex, 12, "101", "3", Side::Bid);
        assert_eq!(open_orders(&ex)[0].queue_ahead, fx("1"));
        trade(&mut ex, 13, "99", "2", Side::Ask);
        let out = ex.drain();
        assert_eq!(fills(&out), vec![(s("99"), s("1"), M)]);
        assert_eq!(last_update(&out).status, OrderStatus::PartiallyFilled);
        trade(&mut ex, 14, "99", "5", Side::Ask);
        let out = ex.drain();
        assert_eq!(fills(&out), vec![(s("99"), s("1"), M)]);
        assert_eq!(last_update(&out).status, OrderStatus::Filled);
        assert!(open_orders(&ex).is_empty());
    }

    #[test]
    fn trade_through_the_price_fills_with_nothing_ahead() {
        let mut ex = exchange();
        limit(&mut ex, 10, "q", OrderSide::Buy, "99", "2");
        ex.drain();
        trade(&mut ex, 11, "98", "1", Side::Ask);
        assert_eq!(fills(&ex.drain()), vec![(s("99"), s("1"), M)]);
    }

    /// Level 99 holds 4 when the order joins, grows to 10 behind it, then 6 are canceled.
    fn cancel_scenario(models: Models) -> (Fixed, Vec<(String, String, Liquidity)>) {
        let mut ex = exchange_with(models);
        level(&mut ex, 2, Side::Bid, "99", "4");
        limit(&mut ex, 10, "q", OrderSide::Buy, "99", "1");
        level(&mut ex, 11, Side::Bid, "99", "10");
        level(&mut ex, 12, Side::Bid, "99", "4");
        let ahead = open_orders(&ex)[0].queue_ahead;
        ex.drain();
        trade(&mut ex, 13, "99", "3", Side::Ask);
        (ahead, fills(&ex.drain()))
    }

    #[test]
    fn cancels_advance_the_queue_only_under_the_proportional_model() {
        let risk_averse = cancel_scenario(Models {
            queue: Box::new(RiskAverse),
            ..Models::default()
        });
        let proportional = cancel_scenario(Models {
            queue: Box::new(Proportional),
            ..Models::default()
        });
        // Risk averse: the 6 canceled came from behind, 4 still ahead, a trade of 3 misses.
        assert_eq!(risk_averse, (fx("4"), vec![]));
        // Proportional: advance 6 * 4 / 10 = 2.4, rounded down to the book's lot of 1: 2
        // ahead, so a trade of 3 reaches the order.
        assert_eq!(proportional, (fx("2"), vec![(s("99"), s("1"), M)]));
    }

    #[test]
    fn level_decreases_explained_by_trades_are_not_cancels() {
        let mut ex = exchange_with(Models {
            queue: Box::new(Proportional),
            ..Models::default()
        });
        limit(&mut ex, 10, "q", OrderSide::Buy, "99", "1");
        level(&mut ex, 11, Side::Bid, "99", "10");
        trade(&mut ex, 12, "99", "2", Side::Ask);
        level(&mut ex, 13, Side::Bid, "99", "8");
        assert_eq!(open_orders(&ex)[0].queue_ahead, fx("3"));
    }

    #[test]
    fn latency_delays_an_order_past_a_price_move() {
        let run = |latency_ns: i64| {
            let mut ex = exchange_with(Models {
                order_latency: Box::new(ConstantLatency(latency_ns)),
                ..Models::default()
            });
            order(
                &mut ex,
                100,
                "m",
                OrderSide::Buy,
                OrderType::Market,
                TimeInForce::Ioc,
                None,
                "1",
            );
            order(
                &mut ex,
                100,
                "l",
                OrderSide::Buy,
                OrderType::Limit,
                TimeInForce::Ioc,
                Some("101"),
                "1",
            );
            // The ask at 101 disappears 500 ns after the decision.
            level(&mut ex, 600, Side::Ask, "101", "0");
            ex.advance_to(10_000);
            fills(&ex.drain())
        };
        assert_eq!(run(0), vec![(s("101"), s("1"), T)]);
        // Applied after the move: the market order pays 102, the 101 limit gets nothing.
        assert_eq!(run(1_000), vec![(s("102"), s("1"), T)]);
    }

    #[test]
    fn at_equal_timestamps_market_data_goes_first() {
        let mut ex = exchange();
        order(
            &mut ex,
            100,
            "m",
            OrderSide::Buy,
            OrderType::Market,
            TimeInForce::Ioc,
            None,
            "1",
        );
        level(&mut ex, 100, Side::Ask, "101", "0");
        assert!(
            ex.drain().is_empty(),
            "the order must wait for the event at its own time"
        );
        ex.advance_to(100);
        assert_eq!(fills(&ex.drain()), vec![(s("102"), s("1"), T)]);
    }

    #[test]
    fn resting_order_crossed_by_the_book_fills_as_maker_at_its_own_price() {
        let mut ex = exchange();
        limit(&mut ex, 10, "b", OrderSide::Buy, "100", "2");
        ex.drain();
        level(&mut ex, 11, Side::Ask, "99.5", "3");
        let out = ex.drain();
        assert_eq!(fills(&out), vec![(s("100"), s("2"), M)]);
        assert_eq!(last_update(&out).status, OrderStatus::Filled);
        assert!(open_orders(&ex).is_empty());
    }

    #[test]
    fn fees_charge_takers_and_rebate_makers() {
        let mut ex = exchange_with(Models {
            fees: Box::new(BpsFees(FeeSchedule {
                maker_bps: -1.0,
                taker_bps: 5.0,
                fixed_per_fill: 0.0,
            })),
            ..Models::default()
        });
        limit(&mut ex, 10, "t", OrderSide::Buy, "101", "1");
        limit(&mut ex, 11, "m", OrderSide::Sell, "110", "1");
        trade(&mut ex, 12, "110", "1", Side::Bid);
        let fees: Vec<(Liquidity, f64)> = ex
            .drain()
            .iter()
            .filter_map(|o| match o {
                ExchangeOutput::Fill(f) => Some((f.liquidity, f.fee)),
                _ => None,
            })
            .collect();
        assert_eq!(fees.len(), 2);
        assert_eq!(fees[0].0, T);
        assert!((fees[0].1 - 101.0 * 5e-4).abs() < 1e-12);
        assert_eq!(fees[1].0, M);
        assert!((fees[1].1 + 110.0 * 1e-4).abs() < 1e-12);
        let p = position(&ex);
        assert!((p.fees_paid - (0.0505 - 0.011)).abs() < 1e-12);
        assert!((p.realized_pnl - 9.0).abs() < 1e-9);
        assert!(p.position.is_zero());
    }

    #[test]
    fn positions_track_average_entry_and_marks_report_them() {
        let mut ex = exchange();
        limit(&mut ex, 10, "a", OrderSide::Buy, "102", "3");
        let p = position(&ex);
        assert_eq!(p.position, fx("3"));
        assert!((p.avg_entry_price - (101.0 + 2.0 * 102.0) / 3.0).abs() < 1e-9);
        let marks = ex.marks(20);
        assert_eq!(marks.len(), 1);
        assert_eq!(marks[0].position, fx("3"));
        // Marks use the recorded book: our virtual consumption does not move the mid.
        assert!((marks[0].mid - (99.0 + 101.0) / 2.0).abs() < 1e-9);
    }

    fn digest_of(sizes: [&str; 2]) -> String {
        let mut ex = exchange();
        limit(&mut ex, 10, "a", OrderSide::Buy, "101", sizes[0]);
        limit(&mut ex, 11, "b", OrderSide::Buy, "99", sizes[1]);
        trade(&mut ex, 12, "99", "9", Side::Ask);
        ex.fills_digest()
    }

    #[test]
    fn fills_digest_is_deterministic_and_sensitive_to_fills() {
        let a = digest_of(["1", "2"]);
        assert_eq!(a, digest_of(["1", "2"]));
        assert_eq!(a.len(), 16);
        assert_ne!(a, digest_of(["1", "3"]));
        assert_ne!(a, SimExchange::new(Models::default()).fills_digest());
    }

    #[test]
    fn rejections_carry_reasons() {
        let mut ex = exchange();
        let cases: Vec<(Reply, &str)> = vec![
            (
                ex.submit(
                    "s1",
                    OrderRequest::New(NewOrder {
                        client_order_id: "u".into(),
                        venue: "sim".into(),
                        symbol: "ETHUSD".into(),
                        side: OrderSide::Buy,
                        order_type: OrderType::Market,
                        tif: TimeInForce::Ioc,
                        price: None,
                        size: fx("1"),
                        decided_at: None,
                    }),
                    10,
                ),
                "unknown symbol",
            ),
            (
                order(
                    &mut ex,
                    10,
                    "z",
                    OrderSide::Buy,
                    OrderType::Limit,
                    TimeInForce::Gtc,
                    Some("100"),
                    "0",
                ),
                "size must be > 0",
            ),
            (
                order(
                    &mut ex,
                    10,
                    "n",
                    OrderSide::Buy,
                    OrderType::Limit,
                    TimeInForce::Gtc,
                    None,
                    "1",
                ),
                "price is required",
            ),
            (
                order(
                    &mut ex,
                    10,
                    "mp",
                    OrderSide::Buy,
                    OrderType::Market,
                    TimeInForce::Ioc,
                    Some("1"),
                    "1",
                ),
                "take no price",
            ),
            (
                order(
                    &mut ex,
                    10,
                    "",
                    OrderSide::Buy,
                    OrderType::Market,
                    TimeInForce::Ioc,
                    None,
                    "1",
                ),
                "must not be empty",
            ),
        ];
        for (reply, expected) in cases {
            let reason = rejection(reply);
            assert!(reason.contains(expected), "{reason:?} lacks {expected:?}");
        }
        limit(&mut ex, 10, "dup", OrderSide::Buy, "90", "1");
        let r = order(
            &mut ex,
            10,
            "dup",
            OrderSide::Buy,
            OrderType::Limit,
            TimeInForce::Gtc,
            Some("90"),
            "1",
        );
        assert!(rejection(r).contains("duplicate client_order_id"));
        let r = ex.submit(
            "s1",
            OrderRequest::Cancel {
                client_order_id: "nope".into(),
            },
            10,
        );
        assert!(rejection(r).contains("unknown client_order_id"));
        // Shape rejections are also order updates, so they reach the bus and orders.parquet.
        let rejected = ex
            .drain()
            .iter()
            .filter(|o| matches!(o, ExchangeOutput::OrderUpdate(u) if u.status == OrderStatus::Rejected))
            .count();
        assert_eq!(rejected, 6);
    }

    #[test]
    fn market_order_against_an_empty_side_is_rejected() {
        let mut ex = SimExchange::new(Models::default());
        level(&mut ex, 1, Side::Bid, "99", "5");
        order(
            &mut ex,
            10,
            "m",
            OrderSide::Buy,
            OrderType::Market,
            TimeInForce::Ioc,
            None,
            "1",
        );
        ex.advance_to(10);
        let u = last_update(&ex.drain());
        assert_eq!(u.status, OrderStatus::Rejected);
        assert!(
            u.reason
                .unwrap()
                .contains("no visible liquidity on the ask side")
        );
    }

    #[test]
    fn cancel_removes_a_resting_order_and_refuses_a_finished_one() {
        let mut ex = exchange();
        limit(&mut ex, 10, "r", OrderSide::Buy, "98", "1");
        limit(&mut ex, 10, "f", OrderSide::Buy, "101", "1");
        ex.drain();
        for cid in ["r", "f"] {
            let r = ex.submit(
                "s1",
                OrderRequest::Cancel {
                    client_order_id: cid.into(),
                },
                11,
            );
            assert!(matches!(r, Reply::Accepted { .. }));
        }
        ex.advance_to(11);
        let out = ex.drain();
        let updates = order_updates(&out);
        assert_eq!(updates[0].status, OrderStatus::Canceled);
        assert_eq!(updates[1].status, OrderStatus::Filled);
        assert!(
            updates[1]
                .reason
                .as_deref()
                .unwrap()
                .contains("cancel refused")
        );
        assert!(open_orders(&ex).is_empty());
        assert!(ex.marks(12).iter().all(|m| !m.position.is_zero()));
    }

    #[test]
    fn requests_of_one_strategy_are_applied_in_the_order_sent() {
        // Long latency for the first request, none for the second: FIFO keeps them in order.
        struct Decreasing(i64);
        impl crate::exchange::models::OrderLatency for Decreasing {
            fn order_latency(&mut self, _: UnixNanos) -> i64 {
                self.0 -= 1000;
                self.0
            }
        }
        let mut ex = exchange_with(Models {
            order_latency: Box::new(Decreasing(2000)),
            ..Models::default()
        });
        order(
            &mut ex,
            10,
            "o",
            OrderSide::Buy,
            OrderType::Limit,
            TimeInForce::Gtc,
            Some("98"),
            "1",
        );
        ex.submit(
            "s1",
            OrderRequest::Cancel {
                client_order_id: "o".into(),
            },
            10,
        );
        assert_eq!(ex.next_apply_at(), Some(1010));
        ex.advance_to(2000);
        let statuses: Vec<OrderStatus> = ex
            .drain()
            .iter()
            .filter_map(|o| match o {
                ExchangeOutput::OrderUpdate(u) => Some(u.status),
                _ => None,
            })
            .collect();
        assert_eq!(statuses, vec![OrderStatus::New, OrderStatus::Canceled]);
    }

    /// A random but reproducible session: a wandering book with trades, and one strategy
    /// sending random orders and cancels through a sampled latency.
    fn random_session(seed: u64) -> (String, Vec<ExchangeOutput>, SimExchange) {
        use rand::{Rng, SeedableRng, rngs::SmallRng};
        let settings = ExchangeSettings {
            order_latency: crate::exchange::models::LatencySpec::LogNormal {
                mean_ns: 3_000,
                sigma: 0.7,
                min_ns: 0,
            },
            queue: crate::exchange::models::QueueSpec::Proportional,
            fees: FeeSchedule {
                maker_bps: -0.5,
                taker_bps: 3.0,
                fixed_per_fill: 0.0,
            },
            seed,
            ..ExchangeSettings::default()
        };
        let mut ex = SimExchange::from_settings(&settings).unwrap();
        let mut rng = SmallRng::seed_from_u64(seed);
        let tick = |t: i64| Fixed::new(t * 5, 1);
        let size = |rng: &mut SmallRng| Fixed::new(rng.gen_range(1..=40), 1);
        let mut mid = 2_000i64;
        let mut bids: BTreeMap<i64, Fixed> = BTreeMap::new();
        let mut asks: BTreeMap<i64, Fixed> = BTreeMap::new();
        let mut out = Vec::new();
        let mut ts = 1_000i64;
        let mut next_cid = 0u32;
        for _ in 0..3_000 {
            ts += rng.gen_range(1..2_000);
            match rng.gen_range(0..10) {
                0 => mid += rng.gen_range(-2..=2),
                1..=2 => {
                    let (p, side) = if rng.gen_bool(0.5) {
                        (bids.keys().next_back().copied(), Side::Ask)
                    } else {
                        (asks.keys().next().copied(), Side::Bid)
                    };
                    if let Some(p) = p {
                        ex.on_market(&event(
                            ts,
                            Body::Trade(Trade {
                                price: tick(p),
                                size: size(&mut rng),
                                aggressor: side,
                                trade_id: String::new(),
                            }),
                        ));
                    }
                    continue;
                }
                _ => {}
            }
            // Keep the book uncrossed around `mid`, then touch one random level.
            let mut deltas = Vec::new();
            for p in bids.range(mid..).map(|(p, _)| *p).collect::<Vec<_>>() {
                bids.remove(&p);
                deltas.push((Side::Bid, p, Fixed::ZERO));
            }
            for p in asks.range(..=mid).map(|(p, _)| *p).collect::<Vec<_>>() {
                asks.remove(&p);
                deltas.push((Side::Ask, p, Fixed::ZERO));
            }
            let (side, p) = if rng.gen_bool(0.5) {
                (Side::Bid, mid - rng.gen_range(1..=5))
            } else {
                (Side::Ask, mid + rng.gen_range(1..=5))
            };
            let new = if rng.gen_bool(0.2) {
                Fixed::ZERO
            } else {
                size(&mut rng)
            };
            let levels = if side == Side::Bid {
                &mut bids
            } else {
                &mut asks
            };
            if new.is_zero() {
                levels.remove(&p);
            } else {
                levels.insert(p, new);
            }
            deltas.push((side, p, new));
            let n = deltas.len();
            for (i, (side, p, sz)) in deltas.into_iter().enumerate() {
                let flags = if i + 1 == n {
                    Flags::LAST
                } else {
                    Flags::default()
                };
                ex.on_market(&event(
                    ts,
                    Body::Book(BookDelta {
                        side,
                        price: tick(p),
                        size: sz,
                        flags,
                    }),
                ));
            }
            if rng.gen_bool(0.3) {
                next_cid += 1;
                let side = if rng.gen_bool(0.5) {
                    OrderSide::Buy
                } else {
                    OrderSide::Sell
                };
                let (order_type, tif) = match rng.gen_range(0..4) {
                    0 => (OrderType::Market, TimeInForce::Ioc),
                    1 => (OrderType::Limit, TimeInForce::Ioc),
                    2 => (OrderType::Limit, TimeInForce::PostOnly),
                    _ => (OrderType::Limit, TimeInForce::Gtc),
                };
                let price =
                    (order_type == OrderType::Limit).then(|| tick(mid + rng.gen_range(-4..=4)));
                ex.submit(
                    "r",
                    OrderRequest::New(NewOrder {
                        client_order_id: format!("c{next_cid}"),
                        venue: "sim".into(),
                        symbol: "BTCUSD".into(),
                        side,
                        order_type,
                        tif,
                        price,
                        size: size(&mut rng),
                        decided_at: None,
                    }),
                    ts,
                );
            } else if next_cid > 0 && rng.gen_bool(0.1) {
                let cid = format!("c{}", rng.gen_range(1..=next_cid));
                ex.submit(
                    "r",
                    OrderRequest::Cancel {
                        client_order_id: cid,
                    },
                    ts,
                );
            }
            out.extend(ex.drain());
        }
        ex.close(ts);
        out.extend(ex.drain());
        (ex.fills_digest(), out, ex)
    }

    #[test]
    fn random_sessions_keep_books_orders_and_positions_consistent() {
        let (digest, out, ex) = random_session(11);
        let (again, _, _) = random_session(11);
        assert_eq!(digest, again, "same seed, same fills");
        assert_ne!(digest, random_session(12).0);

        let mut filled: HashMap<u64, Fixed> = HashMap::default();
        let mut last: HashMap<u64, OrderUpdate> = HashMap::default();
        let mut net = Fixed::ZERO;
        let mut fills_seen = 0;
        for o in &out {
            match o {
                ExchangeOutput::Fill(f) => {
                    fills_seen += 1;
                    assert!(f.size > Fixed::ZERO);
                    let e = filled.entry(f.order_id).or_insert(Fixed::ZERO);
                    *e = add(*e, f.size);
                    let signed = Fixed::new(f.side.sign() * f.size.mantissa, f.size.scale);
                    net = add(net, signed);
                }
                ExchangeOutput::OrderUpdate(u) => {
                    // A final state never changes; a refused cancel only restates it.
                    if let Some(prev) = last.get(&u.order_id).filter(|p| p.status.is_final()) {
                        assert_eq!(prev.status, u.status, "{u:?}");
                        assert!(u.reason.as_deref().unwrap_or("").contains("cancel refused"));
                    }
                    last.insert(u.order_id, u.clone());
                }
            }
        }
        assert!(
            fills_seen > 20,
            "the session should trade, got {fills_seen} fills"
        );
        // Fills never beat the limit: buys at or below it, sells at or above.
        for o in &out {
            if let ExchangeOutput::Fill(f) = o {
                let u = &last[&f.order_id];
                if let Some(limit) = u.price {
                    match f.side {
                        OrderSide::Buy => assert!(f.price <= limit, "{f:?} vs {limit}"),
                        OrderSide::Sell => assert!(f.price >= limit, "{f:?} vs {limit}"),
                    }
                }
            }
        }
        for (id, u) in &last {
            let f = filled.get(id).copied().unwrap_or(Fixed::ZERO);
            assert_eq!(
                u.filled, f,
                "order {id}: update says {} but fills sum {f}",
                u.filled
            );
            assert!(u.filled <= u.size);
            if u.status == OrderStatus::Filled {
                assert_eq!(u.filled, u.size);
            }
        }
        let Reply::QueryResult {
            positions,
            open_orders,
        } = ex.query("r")
        else {
            panic!("query must answer");
        };
        assert_eq!(positions[0].position, net);
        for o in open_orders {
            assert!(!last[&o.order_id].status.is_final());
        }
    }

    #[test]
    fn late_arriving_requests_still_apply_at_their_decision_time_plus_latency() {
        // Lookahead lockstep: the exchange has seen events up to 150 when an order decided
        // at 100 arrives; with 100 ns latency it belongs before the event at 250.
        let mut ex = exchange_with(Models {
            order_latency: Box::new(ConstantLatency(100)),
            ..Models::default()
        });
        level(&mut ex, 100, Side::Bid, "98", "1");
        level(&mut ex, 150, Side::Bid, "97", "1");
        order(
            &mut ex,
            100,
            "m",
            OrderSide::Buy,
            OrderType::Market,
            TimeInForce::Ioc,
            None,
            "1",
        );
        assert_eq!(ex.next_apply_at(), Some(200));
        level(&mut ex, 250, Side::Ask, "101", "0");
        assert_eq!(fills(&ex.drain()), vec![(s("101"), s("1"), T)]);
        // Already past: applied at once, at the clock.
        order(
            &mut ex,
            10,
            "n",
            OrderSide::Buy,
            OrderType::Market,
            TimeInForce::Ioc,
            None,
            "1",
        );
        assert_eq!(ex.next_apply_at(), Some(250));
    }
}
