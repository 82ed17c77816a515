//! Strategy SDK: the [`Strategy`] trait, the [`Context`] a strategy sees, and the
//! [`Dispatcher`] that hands it events, fills and order updates in order. The SDK knows
//! no transport: orders are typed values ([`OrderRequest`]) queued on the context, and a
//! driver takes them after each callback and delivers them:
//!
//! - [`crate::backtest`]: in the same process and thread as the simulated exchange;
//! - [`bus::run`]: over the ZeroMQ bus and order gateway (lockstep backtests, paper and
//!   live), as JSON or binary, the interface any process in any language can use.
//!
//! The same `impl Strategy` runs unchanged under either driver and trades the same fills.
//! Order and fill types are the exchange protocol's own ([`crate::exchange::protocol`]):
//! one definition for the SDK, the gateway and the matching engine.
//!
//! The decision time of an order is the event time the driver handed the strategy
//! ([`Context::now`]), never a value the strategy chooses.

pub mod bus;
pub mod examples;
mod shm;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, bail};

use crate::book::L2Book;
use crate::event::{Body, Event, Fixed, Flags, UnixNanos};
pub use crate::exchange::matching::OrderRequest;
pub use crate::exchange::protocol::{
    ClientOrderId, ExchangeOutput, Fill, Liquidity, NewOrder, OrderSide, OrderStatus, OrderType,
    OrderUpdate, Reason, Reply, TimeInForce,
};

pub use bus::{RunnerConfig, RunnerStats, run};

/// An order or cancel a strategy queued, with the event time it was decided at.
#[derive(Clone, Debug, PartialEq)]
pub struct QueuedRequest {
    /// Event time (ns, `ts_recv` timeline) of the event being handled when the strategy
    /// queued the request: set by the driver, never by the strategy.
    pub decided_at: UnixNanos,
    /// The request.
    pub request: OrderRequest,
}

/// The local book of one instrument.
struct BookSlot {
    venue: Arc<str>,
    symbol: Arc<str>,
    /// Boxed so lending it moves a pointer, not the book.
    book: Box<L2Book>,
    /// The book is the simulated exchange's own (in process): the engine lends it for
    /// each callback and the dispatcher applies no delta to it. Otherwise (over the bus,
    /// or after a gap) the dispatcher keeps the book from the deltas it hands over.
    shared: bool,
    /// The exchange's id of the instrument, when shared.
    instrument: usize,
}

impl BookSlot {
    fn is(&self, venue: &Arc<str>, symbol: &Arc<str>) -> bool {
        (Arc::ptr_eq(&self.venue, venue) || self.venue == *venue)
            && (Arc::ptr_eq(&self.symbol, symbol) || self.symbol == *symbol)
    }
}

/// What a strategy can see and do from inside a callback. Owns no socket: requests are
/// queued here and delivered by the driver after the callback returns.
pub struct Context {
    name: Arc<str>,
    now: UnixNanos,
    /// Local books, few per strategy: a scan beats hashing two strings per event.
    books: Vec<BookSlot>,
    /// Net position per venue and symbol, from the fills seen.
    positions: Vec<(Arc<str>, Arc<str>, Fixed)>,
    /// Index in `books` of the slot the last book event was found in: consecutive
    /// events nearly always belong to one instrument, so [`Dispatcher::pass_partial`]
    /// checks that slot first (by pointer) instead of scanning.
    last_slot: usize,
    next_id: u64,
    queued: Vec<QueuedRequest>,
    orders_sent: u64,
}

impl Context {
    /// A context for the strategy called `name` (the prefix of its client order ids).
    pub fn new(name: &str) -> Context {
        Context {
            name: Arc::from(name),
            now: UnixNanos::MIN,
            books: Vec::new(),
            positions: Vec::new(),
            last_slot: 0,
            next_id: 0,
            queued: Vec::new(),
            orders_sent: 0,
        }
    }

    /// The strategy's name, as in fills and reports.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Event time of the latest market event handed to the strategy, ns since the epoch
    /// on the `ts_recv` timeline: the strategy's clock (never wall time).
    pub fn now(&self) -> UnixNanos {
        self.now
    }

    /// The local book of a venue/symbol, rebuilt from deltas.
    pub fn book(&self, venue: &str, symbol: &str) -> Option<&L2Book> {
        self.books
            .iter()
            .find(|b| &*b.venue == venue && &*b.symbol == symbol)
            .map(|b| &*b.book)
    }

    /// Net position from the fills seen so far (positive = long).
    pub fn position(&self, venue: &str, symbol: &str) -> Fixed {
        self.positions
            .iter()
            .find(|(v, s, _)| &**v == venue && &**s == symbol)
            .map_or(Fixed::ZERO, |(_, _, p)| *p)
    }

    /// Orders placed so far (cancels not counted).
    pub fn orders_sent(&self) -> u64 {
        self.orders_sent
    }

    fn next_client_id(&mut self) -> ClientOrderId {
        self.next_id += 1;
        ClientOrderId::numbered(&self.name, self.next_id)
    }

    /// Shared copies of `venue` and `symbol`: those of the local book when there is one
    /// (no allocation per order).
    fn instrument(&self, venue: &str, symbol: &str) -> (Arc<str>, Arc<str>) {
        match self
            .books
            .iter()
            .find(|b| &*b.venue == venue && &*b.symbol == symbol)
        {
            Some(b) => (b.venue.clone(), b.symbol.clone()),
            None => (Arc::from(venue), Arc::from(symbol)),
        }
    }

    fn queue(&mut self, request: OrderRequest) {
        self.queued.push(QueuedRequest {
            decided_at: self.now,
            request,
        });
    }

    /// Queues a new order (checked by the caller) under a fresh client order id.
    #[allow(clippy::too_many_arguments)]
    fn place(
        &mut self,
        venue: &str,
        symbol: &str,
        side: OrderSide,
        order_type: OrderType,
        tif: TimeInForce,
        price: Option<Fixed>,
        size: Fixed,
    ) -> ClientOrderId {
        let id = self.next_client_id();
        let (venue, symbol) = self.instrument(venue, symbol);
        self.queue(OrderRequest::New(NewOrder {
            client_order_id: id.clone(),
            venue,
            symbol,
            side,
            order_type,
            tif,
            price,
            size,
            decided_at: None,
        }));
        self.orders_sent += 1;
        id
    }

    /// Places a limit order; returns its client order id. The order is queued and sent
    /// when the callback returns, decided at [`Context::now`].
    pub fn limit(
        &mut self,
        venue: &str,
        symbol: &str,
        side: OrderSide,
        price: Fixed,
        size: Fixed,
        tif: TimeInForce,
    ) -> Result<ClientOrderId> {
        if price <= Fixed::ZERO || size <= Fixed::ZERO {
            bail!("limit order needs price > 0 and size > 0, got price {price} size {size}");
        }
        Ok(self.place(
            venue,
            symbol,
            side,
            OrderType::Limit,
            tif,
            Some(price),
            size,
        ))
    }

    /// Places a market order (immediate or cancel); returns its client order id.
    pub fn market(
        &mut self,
        venue: &str,
        symbol: &str,
        side: OrderSide,
        size: Fixed,
    ) -> Result<ClientOrderId> {
        if size <= Fixed::ZERO {
            bail!("market order needs size > 0, got {size}");
        }
        Ok(self.place(
            venue,
            symbol,
            side,
            OrderType::Market,
            TimeInForce::Ioc,
            None,
            size,
        ))
    }

    /// Cancels an order by client order id.
    pub fn cancel(&mut self, client_order_id: impl Into<ClientOrderId>) -> Result<()> {
        self.queue(OrderRequest::Cancel {
            client_order_id: client_order_id.into(),
        });
        Ok(())
    }

    /// Takes the requests queued since the last call, oldest first (for drivers).
    pub fn take_requests(&mut self) -> std::vec::Drain<'_, QueuedRequest> {
        self.queued.drain(..)
    }

    /// True when requests are waiting for the driver.
    pub fn has_requests(&self) -> bool {
        !self.queued.is_empty()
    }

    /// Index of the local book of `event`'s venue and symbol, created empty if new.
    fn book_index(&mut self, event: &Event) -> usize {
        let found = self
            .books
            .iter()
            .position(|b| b.is(&event.venue, &event.symbol));
        let i = found.unwrap_or_else(|| self.add_book(event));
        self.last_slot = i;
        i
    }

    /// True when `event` carries exactly the shared names of the slot a book event was
    /// last found in, and that slot holds the exchange's book (pointer compares only; a
    /// miss is no answer, the caller takes the full path).
    fn in_last_shared_slot(&self, event: &Event) -> bool {
        self.books.get(self.last_slot).is_some_and(|b| {
            b.shared && Arc::ptr_eq(&b.venue, &event.venue) && Arc::ptr_eq(&b.symbol, &event.symbol)
        })
    }

    fn add_book(&mut self, event: &Event) -> usize {
        self.books.push(BookSlot {
            venue: event.venue.clone(),
            symbol: event.symbol.clone(),
            book: Box::default(),
            shared: false,
            instrument: 0,
        });
        self.books.len() - 1
    }

    /// In process, before `event` reaches the dispatcher (after the exchange took it): a
    /// book delta of an instrument new to the strategy makes a slot sharing the
    /// exchange's book; a gap ends sharing for its instrument, because the strategy's
    /// book is cleared and the exchange's is not (the dispatcher keeps it from then on).
    pub(crate) fn share_books_for(
        &mut self,
        event: &Event,
        exchange: &mut crate::exchange::SimExchange,
    ) {
        if matches!(event.body, Body::Trade(_)) {
            return;
        }
        let found = self
            .books
            .iter()
            .position(|b| b.is(&event.venue, &event.symbol));
        match (&event.body, found) {
            (Body::Book(_), None) => {
                if let Some(instrument) = exchange.instrument(&event.venue, &event.symbol) {
                    let i = self.add_book(event);
                    self.books[i].shared = true;
                    self.books[i].instrument = instrument;
                    self.last_slot = i;
                }
            }
            // Not lent now: its box is the empty stand-in, which the gap clears anyway.
            (Body::Gap(_), Some(i)) => self.books[i].shared = false,
            _ => {}
        }
    }

    /// Swaps every shared slot's box with the exchange's book: lends the books for a
    /// callback, and takes them back when called again.
    pub(crate) fn swap_shared_books(&mut self, exchange: &mut crate::exchange::SimExchange) {
        for slot in self.books.iter_mut().filter(|b| b.shared) {
            if !exchange.swap_book(slot.instrument, &mut slot.book) {
                // Cannot happen (slots share only books the exchange has); keep it safe.
                slot.shared = false;
            }
        }
    }

    fn add_fill(&mut self, fill: &Fill) {
        let signed = match fill.side {
            OrderSide::Buy => fill.size,
            OrderSide::Sell => Fixed::new(-fill.size.mantissa, fill.size.scale),
        };
        let found = self
            .positions
            .iter_mut()
            .find(|(v, s, _)| **v == *fill.venue && **s == *fill.symbol);
        match found {
            Some((_, _, p)) => *p = p.checked_add(signed).unwrap_or(*p),
            None => self
                .positions
                .push((fill.venue.clone(), fill.symbol.clone(), signed)),
        }
    }
}

/// A trading strategy. Every callback gets the [`Context`]; all are optional.
pub trait Strategy {
    /// A book delta was applied to the local book (`book` is after the change; only
    /// called once the venue message's last level has been applied).
    fn on_book(&mut self, _ctx: &mut Context, _event: &Event, _book: &L2Book) -> Result<()> {
        Ok(())
    }
    /// A trade print.
    fn on_trade(&mut self, _ctx: &mut Context, _event: &Event) -> Result<()> {
        Ok(())
    }
    /// One of the strategy's orders filled (partly).
    fn on_fill(&mut self, _ctx: &mut Context, _fill: &Fill) -> Result<()> {
        Ok(())
    }
    /// One of the strategy's orders changed status at the exchange.
    fn on_order(&mut self, _ctx: &mut Context, _update: &OrderUpdate) -> Result<()> {
        Ok(())
    }
    /// The gateway's immediate answer to a request (`accepted`, `rejected`, ...).
    fn on_reply(&mut self, _ctx: &mut Context, _reply: &Reply) -> Result<()> {
        Ok(())
    }
    /// Data may be missing; the local book was cleared.
    fn on_gap(&mut self, _ctx: &mut Context, _event: &Event) -> Result<()> {
        Ok(())
    }
    /// Called on a grid of event time (the first event's time + k × the timer interval),
    /// before the first event at or past each tick; ticks with no event between them
    /// make one call.
    fn on_timer(&mut self, _ctx: &mut Context) -> Result<()> {
        Ok(())
    }
}

impl<S: Strategy + ?Sized> Strategy for Box<S> {
    fn on_book(&mut self, ctx: &mut Context, event: &Event, book: &L2Book) -> Result<()> {
        (**self).on_book(ctx, event, book)
    }
    fn on_trade(&mut self, ctx: &mut Context, event: &Event) -> Result<()> {
        (**self).on_trade(ctx, event)
    }
    fn on_fill(&mut self, ctx: &mut Context, fill: &Fill) -> Result<()> {
        (**self).on_fill(ctx, fill)
    }
    fn on_order(&mut self, ctx: &mut Context, update: &OrderUpdate) -> Result<()> {
        (**self).on_order(ctx, update)
    }
    fn on_reply(&mut self, ctx: &mut Context, reply: &Reply) -> Result<()> {
        (**self).on_reply(ctx, reply)
    }
    fn on_gap(&mut self, ctx: &mut Context, event: &Event) -> Result<()> {
        (**self).on_gap(ctx, event)
    }
    fn on_timer(&mut self, ctx: &mut Context) -> Result<()> {
        (**self).on_timer(ctx)
    }
}

/// Counters of what a strategy was handed.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct DispatchStats {
    /// Market events handled.
    pub events: u64,
    /// Fills of this strategy's orders.
    pub fills: u64,
    /// Order updates of this strategy's orders.
    pub order_updates: u64,
}

/// Hands one strategy its events, fills and order updates in order, keeping its
/// [`Context`] (clock, local books, positions, timer) current. Every driver uses it, so
/// what a strategy sees does not depend on the transport.
pub struct Dispatcher {
    /// The strategy's context (queued requests are taken from here).
    pub ctx: Context,
    timer_every: i64,
    next_timer: Option<UnixNanos>,
    /// An empty book that stands in the context while its book is lent to `on_book`.
    stand_in: Box<L2Book>,
    /// Counters.
    pub stats: DispatchStats,
}

impl Dispatcher {
    /// A dispatcher for strategy `name` with `on_timer` every `timer` of event time.
    pub fn new(name: &str, timer: Duration) -> Dispatcher {
        Dispatcher {
            ctx: Context::new(name),
            timer_every: i64::try_from(timer.as_nanos()).unwrap_or(i64::MAX).max(1),
            next_timer: None,
            stand_in: Box::default(),
            stats: DispatchStats::default(),
        }
    }

    /// True when `event` is one the strategy is handed and a timer tick is due at its
    /// time (so [`Dispatcher::clock`] would call `on_timer`).
    pub fn timer_due(&self, event: &Event) -> bool {
        matches!(event.body, Body::Book(_) | Body::Trade(_) | Body::Gap(_))
            && self
                .next_timer
                .is_some_and(|due| self.ctx.now.max(event.ts_recv) >= due)
    }

    /// Moves the clock to a market event's `ts_recv` and runs a due timer, before the
    /// event changes anything; false for kinds the strategy is not handed. Part of
    /// [`Dispatcher::market`]; calling it first (the in-process engine does, before the
    /// exchange applies the event to the book it shares) changes nothing.
    pub fn clock(&mut self, strategy: &mut dyn Strategy, event: &Event) -> Result<bool> {
        let ctx = &mut self.ctx;
        if !matches!(event.body, Body::Book(_) | Body::Trade(_) | Body::Gap(_)) {
            return Ok(false);
        }
        ctx.now = ctx.now.max(event.ts_recv);
        let every = self.timer_every;
        let due = self.next_timer.get_or_insert(ctx.now.saturating_add(every));
        if ctx.now >= *due {
            // Ticks stay on the grid first event + k × interval (no drift by the time
            // between a tick and the event that reaches it); ticks that no event
            // separates are one call.
            let passed = (ctx.now - *due) / every;
            *due = due.saturating_add(every.saturating_mul(passed.saturating_add(1)));
            strategy.on_timer(ctx)?;
        }
        Ok(true)
    }

    /// In process, after the exchange applied `event`: takes a book delta that is not the
    /// last of its venue message, of an instrument whose book this strategy shares with
    /// the exchange, when no timer is due; true if it did. Such a delta calls nothing in
    /// the strategy ([`Dispatcher::market`] would find the shared book inconsistent, as
    /// the exchange just applied a delta without `LAST`, and return), so only the clock
    /// and the counter move, without lending the books or scanning the slots. Most
    /// events of a depth feed are such deltas. False leaves everything to
    /// [`Dispatcher::market`].
    pub(crate) fn pass_partial(&mut self, event: &Event) -> bool {
        let Body::Book(delta) = &event.body else {
            return false;
        };
        let now = self.ctx.now.max(event.ts_recv);
        // A due timer (or none started yet) needs the full path.
        if delta.flags.contains(Flags::LAST)
            || self.next_timer.is_none_or(|due| now >= due)
            || !self.ctx.in_last_shared_slot(event)
        {
            return false;
        }
        self.ctx.now = now;
        self.stats.events += 1;
        true
    }

    /// Hands a market event (book, trade, gap) to the strategy; other kinds are ignored.
    /// Moves the clock to the event's `ts_recv` and runs a due timer first.
    pub fn market(&mut self, strategy: &mut dyn Strategy, event: &Event) -> Result<()> {
        if !self.clock(strategy, event)? {
            return Ok(());
        }
        let ctx = &mut self.ctx;
        self.stats.events += 1;
        match &event.body {
            Body::Book(delta) => {
                let i = ctx.book_index(event);
                let slot = &mut ctx.books[i];
                // A shared book already holds the delta: the exchange applied it.
                if !slot.shared {
                    slot.book.apply(delta);
                }
                if !slot.book.is_consistent() {
                    return Ok(());
                }
                // Lend the book to the callback without cloning it (books can hold
                // thousands of levels): an empty stand-in takes its slot meanwhile.
                std::mem::swap(&mut ctx.books[i].book, &mut self.stand_in);
                let result = strategy.on_book(ctx, event, &self.stand_in);
                std::mem::swap(&mut ctx.books[i].book, &mut self.stand_in);
                result
            }
            Body::Trade(_) => strategy.on_trade(ctx, event),
            Body::Gap(_) => {
                let i = ctx.book_index(event);
                // The engine ends sharing before a gap arrives (`share_books_for`): the
                // exchange's book must never be cleared here.
                debug_assert!(!ctx.books[i].shared, "gap on a shared book");
                ctx.books[i].book.clear();
                strategy.on_gap(ctx, event)
            }
            _ => Ok(()),
        }
    }

    /// Hands an exchange output to the strategy if it is one of its own; returns whether
    /// it was. Fills update the position before `on_fill` runs.
    pub fn exchange(
        &mut self,
        strategy: &mut dyn Strategy,
        output: &ExchangeOutput,
    ) -> Result<bool> {
        if output.strategy() != &*self.ctx.name {
            return Ok(false);
        }
        match output {
            ExchangeOutput::Fill(fill) => {
                self.ctx.add_fill(fill);
                self.stats.fills += 1;
                strategy.on_fill(&mut self.ctx, fill)?;
            }
            ExchangeOutput::OrderUpdate(update) => {
                self.stats.order_updates += 1;
                strategy.on_order(&mut self.ctx, update)?;
            }
        }
        Ok(true)
    }

    /// Hands the gateway's answer to one of the strategy's requests.
    pub fn reply(&mut self, strategy: &mut dyn Strategy, reply: &Reply) -> Result<()> {
        strategy.on_reply(&mut self.ctx, reply)
    }
}

/// The environment variable a strategy process finds its parameters in (a JSON object,
/// the scenario's `[[strategy]] params` table).
pub const PARAMS_ENV: &str = "TICKTAPE_PARAMS";

/// A strategy's parameters: the scenario's `params = { … }` table of that strategy, as
/// JSON values. Strategies read them with typed getters that fall back to a default;
/// [`Params::only`] refuses keys a strategy does not know, so a typo is an error.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Params(serde_json::Map<String, serde_json::Value>);

impl Params {
    /// Parameters from a JSON object.
    pub fn from_json(text: &str) -> Result<Params> {
        match serde_json::from_str(text) {
            Ok(serde_json::Value::Object(map)) => Ok(Params(map)),
            Ok(_) => bail!("strategy parameters must be a JSON object, got {text:?}"),
            Err(e) => bail!("strategy parameters are not valid JSON ({e}): {text:?}"),
        }
    }

    /// Parameters from [`PARAMS_ENV`] (empty when unset): what `ticktape run` hands each
    /// strategy process.
    pub fn from_env() -> Result<Params> {
        match std::env::var(PARAMS_ENV) {
            Ok(text) if !text.trim().is_empty() => Params::from_json(&text),
            _ => Ok(Params::default()),
        }
    }

    /// Parameters from a map of JSON values.
    pub fn from_map(map: serde_json::Map<String, serde_json::Value>) -> Params {
        Params(map)
    }

    /// The parameters as one JSON object (for [`PARAMS_ENV`]).
    pub fn to_json(&self) -> String {
        serde_json::Value::Object(self.0.clone()).to_string()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Refuses keys outside `known`, naming them and the known ones.
    pub fn only(&self, strategy: &str, known: &[&str]) -> Result<()> {
        let unknown: Vec<&str> = self
            .0
            .keys()
            .map(String::as_str)
            .filter(|k| !known.contains(k))
            .collect();
        if !unknown.is_empty() {
            bail!(
                "{strategy}: unknown parameter(s) {}; known: {}",
                unknown.join(", "),
                known.join(", ")
            );
        }
        Ok(())
    }

    /// An integer parameter, or `default` when absent.
    pub fn int(&self, key: &str, default: i64) -> Result<i64> {
        match self.0.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_i64()
                .or_else(|| {
                    v.as_f64()
                        .filter(|f| f.fract() == 0.0 && f.abs() < 9e15)
                        .map(|f| f as i64)
                })
                .ok_or_else(|| anyhow::anyhow!("parameter {key} must be an integer, got {v}")),
        }
    }

    /// A number parameter, or `default` when absent.
    pub fn float(&self, key: &str, default: f64) -> Result<f64> {
        match self.0.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_f64()
                .filter(|f| f.is_finite())
                .ok_or_else(|| anyhow::anyhow!("parameter {key} must be a finite number, got {v}")),
        }
    }
}

/// The built-in example strategies by name (`mm`, `taker`), as `ticktape strategy` and
/// scenarios' `builtin = "…"` name them, tuned by `params` (see each strategy's docs for
/// its keys; unknown keys are refused).
pub fn builtin(
    name: &str,
    venue: &str,
    symbol: &str,
    size: Fixed,
    params: &Params,
) -> Result<Box<dyn Strategy>> {
    Ok(match name {
        "mm" => Box::new(examples::MarketMaker::with_params(
            venue, symbol, size, params,
        )?),
        "taker" => Box::new(examples::TradeFlowTaker::with_params(
            venue, symbol, size, params,
        )?),
        other => {
            bail!("unknown built-in strategy {other:?}: the built-in examples are mm and taker")
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{BookDelta, Flags, Side, Trade};

    #[test]
    fn params_are_typed_defaulted_and_typos_refused() {
        let p = Params::from_json(r#"{"skew_ticks": 3, "threshold": 0.7, "n": 1e6}"#).unwrap();
        assert_eq!(p.int("skew_ticks", 1).unwrap(), 3);
        assert_eq!(p.int("absent", 7).unwrap(), 7);
        assert_eq!(p.int("n", 0).unwrap(), 1_000_000, "1e6 is an integer");
        assert_eq!(p.float("threshold", 0.8).unwrap(), 0.7);
        assert!(p.int("threshold", 0).is_err(), "0.7 is not an integer");
        let typo = p
            .only("mm", &["skew_ticks", "threshold"])
            .unwrap_err()
            .to_string();
        assert!(
            typo.contains("unknown parameter(s) n") && typo.contains("known: skew_ticks"),
            "{typo}"
        );
        let skew = Params::from_json(r#"{"skew":1}"#).unwrap();
        let mm = builtin("mm", "v", "s", "1".parse().unwrap(), &skew);
        assert!(mm.is_err(), "a typo in a built-in's parameters is refused");
        assert!(Params::from_json("[1]").is_err());
    }

    fn event(ts: UnixNanos, body: Body) -> Event {
        Event {
            venue: Arc::from("sim"),
            symbol: Arc::from("X"),
            ts_event: ts,
            ts_recv: ts,
            venue_seq: None,
            prev_venue_seq: None,
            pub_seq: 0,
            body,
        }
    }

    /// Quotes once per book update and records what it saw.
    #[derive(Default)]
    struct Probe {
        seen: Vec<String>,
    }

    impl Strategy for Probe {
        fn on_book(&mut self, ctx: &mut Context, _e: &Event, book: &L2Book) -> Result<()> {
            self.seen.push(format!(
                "book {:?}",
                book.best_bid().map(|b| b.0.to_string())
            ));
            ctx.limit(
                "sim",
                "X",
                OrderSide::Buy,
                "99".parse()?,
                "1".parse()?,
                TimeInForce::Gtc,
            )?;
            Ok(())
        }
        fn on_trade(&mut self, _ctx: &mut Context, _e: &Event) -> Result<()> {
            self.seen.push("trade".into());
            Ok(())
        }
        fn on_fill(&mut self, ctx: &mut Context, fill: &Fill) -> Result<()> {
            self.seen.push(format!(
                "fill {} pos {}",
                fill.size,
                ctx.position("sim", "X")
            ));
            Ok(())
        }
        fn on_timer(&mut self, ctx: &mut Context) -> Result<()> {
            self.seen.push(format!("timer {}", ctx.now()));
            Ok(())
        }
    }

    #[test]
    fn dispatcher_keeps_books_clock_positions_and_stamps_requests_with_event_time() {
        let mut d = Dispatcher::new("p", Duration::from_nanos(100));
        let mut s = Probe::default();
        let delta = |price: &str, flags| {
            Body::Book(BookDelta {
                side: Side::Bid,
                price: price.parse().unwrap(),
                size: "1".parse().unwrap(),
                flags,
            })
        };
        d.market(&mut s, &event(10, delta("99", Flags::default())))
            .unwrap();
        d.market(&mut s, &event(20, delta("100", Flags::LAST)))
            .unwrap();
        let trade = Body::Trade(Trade {
            price: "100".parse().unwrap(),
            size: "1".parse().unwrap(),
            aggressor: Side::Ask,
            trade_id: Default::default(),
        });
        d.market(&mut s, &event(150, trade)).unwrap();
        let q: Vec<QueuedRequest> = d.ctx.take_requests().collect();
        assert_eq!(q.len(), 1, "one consistent book update, one order");
        assert_eq!(q[0].decided_at, 20, "decided at the event time handed over");
        let fill = ExchangeOutput::Fill(Fill {
            ts: 160,
            strategy: "p".into(),
            venue: "sim".into(),
            symbol: "X".into(),
            order_id: 1,
            client_order_id: "p-1".into(),
            fill_id: 1,
            side: OrderSide::Buy,
            price: "99".parse().unwrap(),
            size: "1".parse().unwrap(),
            fee: 0.0,
            liquidity: Liquidity::Maker,
        });
        assert!(d.exchange(&mut s, &fill).unwrap());
        let mut other = fill.clone();
        if let ExchangeOutput::Fill(f) = &mut other {
            f.strategy = "someone-else".into();
        }
        assert!(!d.exchange(&mut s, &other).unwrap(), "not ours: not handed");
        assert_eq!(d.ctx.position("sim", "X").to_string(), "1");
        assert_eq!(
            s.seen,
            vec![
                "book Some(\"100\")".to_string(),
                "timer 150".into(),
                "trade".into(),
                "fill 1 pos 1".into()
            ]
        );
    }

    #[test]
    fn orders_with_nonpositive_size_or_price_are_refused_in_the_callback() {
        let mut ctx = Context::new("s");
        let zero = Fixed::ZERO;
        assert!(ctx.market("v", "s", OrderSide::Buy, zero).is_err());
        assert!(
            ctx.limit(
                "v",
                "s",
                OrderSide::Sell,
                zero,
                "1".parse().unwrap(),
                TimeInForce::Gtc
            )
            .is_err()
        );
        assert!(!ctx.has_requests());
        let unknown = builtin("nope", "v", "s", zero, &Params::default())
            .err()
            .unwrap()
            .to_string();
        assert!(unknown.contains("mm and taker"), "{unknown}");
    }
}
