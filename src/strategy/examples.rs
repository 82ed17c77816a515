//! Example strategies that exercise the engine: a quoting market maker (resting orders,
//! so the queue model matters), a trade-flow taker (aggressive orders, so latency
//! matters), and a clock-driven quoter whose rules match the peer engine's market maker
//! in the in-process benchmark (`benches/backtest.rs`). They are examples, not alpha.

use std::collections::{HashMap, VecDeque};

use anyhow::Result;

use super::{
    ClientOrderId, Context, Fill, OrderSide, OrderStatus, OrderUpdate, Params, Reply, Strategy,
    TimeInForce,
};
use crate::book::L2Book;
use crate::event::{Body, Event, Fixed, Side};

/// Quotes one tick-aligned bid and ask at the touch, skewed away from its inventory.
///
/// With inventory `q` (in units of `size`), the side that would grow `|q|` is moved
/// `skew_ticks × |q|` ticks away from the touch; at `max_inventory` it stops quoting
/// that side. Quotes are only replaced when their target price changes, so they keep
/// their queue position.
///
/// Parameters (`params` in a scenario): `skew_ticks` (integer, default 1),
/// `max_inventory` (integer, units of `size`, default 5).
pub struct MarketMaker {
    /// Venue traded.
    pub venue: String,
    /// Symbol traded.
    pub symbol: String,
    /// Quote size.
    pub size: Fixed,
    /// Ticks of skew per unit of inventory.
    pub skew_ticks: i64,
    /// Inventory limit in units of `size`.
    pub max_inventory: i64,
    quotes: HashMap<Side, (ClientOrderId, Fixed)>,
}

impl MarketMaker {
    /// A market maker on one instrument.
    pub fn new(venue: &str, symbol: &str, size: Fixed) -> MarketMaker {
        MarketMaker {
            venue: venue.into(),
            symbol: symbol.into(),
            size,
            skew_ticks: 1,
            max_inventory: 5,
            quotes: HashMap::new(),
        }
    }

    /// A market maker tuned by `params` (`skew_ticks`, `max_inventory`).
    pub fn with_params(venue: &str, symbol: &str, size: Fixed, params: &Params) -> Result<Self> {
        params.only("mm", &["skew_ticks", "max_inventory"])?;
        let mut mm = MarketMaker::new(venue, symbol, size);
        mm.skew_ticks = params.int("skew_ticks", mm.skew_ticks)?;
        mm.max_inventory = params.int("max_inventory", mm.max_inventory)?;
        if mm.skew_ticks < 0 || mm.max_inventory < 1 {
            anyhow::bail!(
                "mm: skew_ticks must be >= 0 and max_inventory >= 1, got {} and {}",
                mm.skew_ticks,
                mm.max_inventory
            );
        }
        Ok(mm)
    }

    fn target(&self, book: &L2Book, side: Side, inventory: i64) -> Option<Fixed> {
        let (touch, _) = match side {
            Side::Bid => book.best_bid()?,
            _ => book.best_ask()?,
        };
        let tick = Fixed::new(1, touch.scale);
        // Long inventory pushes the bid down; short inventory pushes the ask up.
        let away = match side {
            Side::Bid if inventory > 0 => inventory * self.skew_ticks,
            Side::Ask if inventory < 0 => -inventory * self.skew_ticks,
            _ => 0,
        };
        let shift = Fixed::new(tick.mantissa * away, tick.scale);
        match side {
            Side::Bid => touch.checked_sub(shift),
            _ => touch.checked_add(shift),
        }
    }
}

impl Strategy for MarketMaker {
    fn on_book(&mut self, ctx: &mut Context, event: &Event, book: &L2Book) -> Result<()> {
        if *event.venue != *self.venue || *event.symbol != *self.symbol || book.is_crossed() {
            return Ok(());
        }
        let position = ctx.position(&self.venue, &self.symbol);
        let inventory = if self.size.is_zero() {
            0
        } else {
            (position.to_f64() / self.size.to_f64()).round() as i64
        };
        for side in [Side::Bid, Side::Ask] {
            let blocked = match side {
                Side::Bid => inventory >= self.max_inventory,
                _ => inventory <= -self.max_inventory,
            };
            let target = if blocked {
                None
            } else {
                self.target(book, side, inventory)
            };
            // Runs on every book update: look at the quote's price without copying its id.
            let current = self.quotes.get(&side).map(|(_, price)| *price);
            match (current, target) {
                (Some(price), Some(t)) if price == t => {}
                (_, target) => {
                    if let Some((id, _)) = self.quotes.remove(&side) {
                        ctx.cancel(&id)?;
                    }
                    if let Some(price) = target {
                        let id = ctx.limit(
                            &self.venue,
                            &self.symbol,
                            order_side(side),
                            price,
                            self.size,
                            TimeInForce::PostOnly,
                        )?;
                        self.quotes.insert(side, (id, price));
                    }
                }
            }
        }
        Ok(())
    }

    fn on_fill(&mut self, _ctx: &mut Context, fill: &Fill) -> Result<()> {
        // A filled quote is requoted on the next book update.
        self.quotes.retain(|_, (id, _)| *id != fill.client_order_id);
        Ok(())
    }

    fn on_order(&mut self, _ctx: &mut Context, update: &OrderUpdate) -> Result<()> {
        if update.status.is_final() {
            self.quotes
                .retain(|_, (id, _)| *id != update.client_order_id);
        }
        Ok(())
    }

    fn on_gap(&mut self, ctx: &mut Context, _event: &Event) -> Result<()> {
        // The book is unknown: pull quotes until it is rebuilt.
        for (_, (id, _)) in self.quotes.drain() {
            ctx.cancel(&id)?;
        }
        Ok(())
    }
}

/// The order side that quotes on book side `side`.
fn order_side(side: Side) -> OrderSide {
    match side {
        Side::Ask => OrderSide::Sell,
        _ => OrderSide::Buy,
    }
}

/// Follows trade flow: when the signed volume of the last `window` trades leans
/// strongly one way, it takes liquidity that way with a market order, then waits.
///
/// Parameters: `window` (trades, default 50), `threshold` (buy share, 0.5–1, default
/// 0.8), `max_inventory` (units of `size`, default 3), `cooldown_secs` (event time between
/// orders, default 2).
pub struct TradeFlowTaker {
    /// Venue traded.
    pub venue: String,
    /// Symbol traded.
    pub symbol: String,
    /// Order size.
    pub size: Fixed,
    /// Trades in the flow window.
    pub window: usize,
    /// Buy when buy share of volume exceeds this (sell below 1 − this).
    pub threshold: f64,
    /// Position limit in units of `size`.
    pub max_inventory: i64,
    /// Event-time cool-down between orders, ns.
    pub cooldown_ns: i64,
    flow: VecDeque<(Side, f64)>,
    last_order: i64,
}

impl TradeFlowTaker {
    /// A taker on one instrument.
    pub fn new(venue: &str, symbol: &str, size: Fixed) -> TradeFlowTaker {
        TradeFlowTaker {
            venue: venue.into(),
            symbol: symbol.into(),
            size,
            window: 50,
            threshold: 0.8,
            max_inventory: 3,
            cooldown_ns: 2_000_000_000,
            flow: VecDeque::new(),
            last_order: i64::MIN / 2,
        }
    }
}

impl TradeFlowTaker {
    /// A taker tuned by `params` (`window`, `threshold`, `max_inventory`, `cooldown_secs`).
    pub fn with_params(venue: &str, symbol: &str, size: Fixed, params: &Params) -> Result<Self> {
        params.only(
            "taker",
            &["window", "threshold", "max_inventory", "cooldown_secs"],
        )?;
        let mut t = TradeFlowTaker::new(venue, symbol, size);
        let window = params.int("window", t.window as i64)?;
        t.threshold = params.float("threshold", t.threshold)?;
        t.max_inventory = params.int("max_inventory", t.max_inventory)?;
        let cooldown = params.float("cooldown_secs", t.cooldown_ns as f64 / 1e9)?;
        if !(1..=1_000_000).contains(&window)
            || !(0.5..=1.0).contains(&t.threshold)
            || t.max_inventory < 1
            || !(0.0..=86_400.0).contains(&cooldown)
        {
            anyhow::bail!(
                "taker: window must be 1..=1000000, threshold 0.5..=1, max_inventory >= 1, cooldown_secs 0..=86400"
            );
        }
        t.window = window as usize;
        t.cooldown_ns = (cooldown * 1e9) as i64;
        Ok(t)
    }
}

impl Strategy for TradeFlowTaker {
    fn on_trade(&mut self, ctx: &mut Context, event: &Event) -> Result<()> {
        let Body::Trade(trade) = &event.body else {
            return Ok(());
        };
        if *event.venue != *self.venue || *event.symbol != *self.symbol {
            return Ok(());
        }
        self.flow.push_back((trade.aggressor, trade.size.to_f64()));
        if self.flow.len() > self.window {
            self.flow.pop_front();
        }
        if self.flow.len() < self.window || ctx.now() - self.last_order < self.cooldown_ns {
            return Ok(());
        }
        let total: f64 = self.flow.iter().map(|(_, s)| s).sum();
        let bought: f64 = self
            .flow
            .iter()
            .filter(|(side, _)| *side == Side::Bid)
            .map(|(_, s)| s)
            .sum();
        if total <= 0.0 {
            return Ok(());
        }
        let share = bought / total;
        let inventory =
            (ctx.position(&self.venue, &self.symbol).to_f64() / self.size.to_f64()).round() as i64;
        let side = if share > self.threshold && inventory < self.max_inventory {
            OrderSide::Buy
        } else if share < 1.0 - self.threshold && inventory > -self.max_inventory {
            OrderSide::Sell
        } else {
            return Ok(());
        };
        ctx.market(&self.venue, &self.symbol, side, self.size)?;
        self.last_order = ctx.now();
        Ok(())
    }
}

/// Quotes one lot at the best bid and the best ask on a clock: the market maker of the
/// in-process benchmark, whose rules are those of the hftbacktest strategy it is compared
/// with (`benches/peer_hftbacktest.py`), so both engines trade the same decisions.
///
/// On every timer tick (`on_timer`; the benchmark ticks every 100 ms of event time):
/// 1. If the book lacks a side, or is crossed or locked (best bid ≥ best ask), nothing
///    happens this tick. (No book exists before the venue's snapshot, so nothing is
///    quoted before it.)
/// 2. `moved`: the best bid or best ask differs from the pair recorded at the last tick
///    that posted an order (true before the first post). `risk`: |position| ≥
///    `max_position`.
/// 3. If `moved` or `risk`: every *live* order (acknowledged by the exchange, no request
///    of ours in flight for it) is canceled.
/// 4. A side is *covered* by an order that was not canceled in this tick and is live or
///    still on its way to the exchange; an order whose cancel is in flight covers
///    nothing.
/// 5. If no buy covers, post `size` at the best bid; if no sell covers, post `size` at
///    the best ask; both post-only limit orders. If anything was posted, the current
///    (best bid, best ask) becomes the recorded pair of rule 2.
///
/// The risk rule only cancels: it does not stop reposting, so inventory is not capped.
/// A post-only order that would cross when it arrives is rejected by the exchange and
/// forgotten, like every order once it is filled or canceled.
pub struct Quoter {
    /// Venue traded.
    pub venue: String,
    /// Symbol traded.
    pub symbol: String,
    /// Quote size.
    pub size: Fixed,
    /// |position| at or above which every live quote is canceled.
    pub max_position: Fixed,
    /// Orders not yet final, oldest first (at most a handful).
    orders: Vec<QuoterOrder>,
    /// (best bid, best ask) when an order was last posted.
    posted: Option<(Fixed, Fixed)>,
    /// Timer ticks seen.
    pub ticks: u64,
    /// Ticks with a two-sided, uncrossed book (the ones that may act).
    pub quoting_ticks: u64,
    /// Cancels sent.
    pub cancels: u64,
}

struct QuoterOrder {
    client_order_id: ClientOrderId,
    side: OrderSide,
    state: QuoteState,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum QuoteState {
    /// Sent, not yet acknowledged by the exchange.
    Placing,
    /// Resting at the exchange, nothing of ours in flight.
    Live,
    /// Cancel sent, not yet answered.
    Canceling,
}

impl Quoter {
    /// A quoter of `size` on one instrument, canceling at |position| ≥ `max_position`.
    pub fn new(venue: &str, symbol: &str, size: Fixed, max_position: Fixed) -> Quoter {
        Quoter {
            venue: venue.into(),
            symbol: symbol.into(),
            size,
            max_position,
            orders: Vec::new(),
            posted: None,
            ticks: 0,
            quoting_ticks: 0,
            cancels: 0,
        }
    }

    fn forget(&mut self, client_order_id: &ClientOrderId) {
        self.orders
            .retain(|o| o.client_order_id != *client_order_id);
    }
}

impl Strategy for Quoter {
    fn on_timer(&mut self, ctx: &mut Context) -> Result<()> {
        self.ticks += 1;
        let Some(book) = ctx.book(&self.venue, &self.symbol) else {
            return Ok(());
        };
        let (Some((bid, _)), Some((ask, _))) = (book.best_bid(), book.best_ask()) else {
            return Ok(());
        };
        if bid >= ask {
            return Ok(());
        }
        self.quoting_ticks += 1;
        let position = ctx.position(&self.venue, &self.symbol);
        let moved = self.posted != Some((bid, ask));
        let risk = position >= self.max_position
            || position <= Fixed::new(-self.max_position.mantissa, self.max_position.scale);
        let (mut buy_covered, mut sell_covered) = (false, false);
        for order in &mut self.orders {
            if order.state == QuoteState::Live && (moved || risk) {
                ctx.cancel(&order.client_order_id)?;
                order.state = QuoteState::Canceling;
                self.cancels += 1;
                continue;
            }
            if order.state != QuoteState::Canceling {
                match order.side {
                    OrderSide::Buy => buy_covered = true,
                    OrderSide::Sell => sell_covered = true,
                }
            }
        }
        let mut post = |side: OrderSide, price: Fixed, orders: &mut Vec<QuoterOrder>| {
            let id = ctx.limit(
                &self.venue,
                &self.symbol,
                side,
                price,
                self.size,
                TimeInForce::PostOnly,
            )?;
            orders.push(QuoterOrder {
                client_order_id: id,
                side,
                state: QuoteState::Placing,
            });
            anyhow::Ok(())
        };
        if !buy_covered {
            post(OrderSide::Buy, bid, &mut self.orders)?;
        }
        if !sell_covered {
            post(OrderSide::Sell, ask, &mut self.orders)?;
        }
        if !(buy_covered && sell_covered) {
            self.posted = Some((bid, ask));
        }
        Ok(())
    }

    fn on_order(&mut self, _ctx: &mut Context, update: &OrderUpdate) -> Result<()> {
        if update.status.is_final() {
            self.forget(&update.client_order_id);
        } else if matches!(
            update.status,
            OrderStatus::New | OrderStatus::PartiallyFilled
        ) && let Some(order) = self
            .orders
            .iter_mut()
            .find(|o| o.client_order_id == update.client_order_id)
            && order.state == QuoteState::Placing
        {
            order.state = QuoteState::Live;
        }
        Ok(())
    }

    fn on_reply(&mut self, _ctx: &mut Context, reply: &Reply) -> Result<()> {
        // Refused at the gateway: the order never existed.
        if let Reply::Rejected {
            client_order_id, ..
        } = reply
        {
            self.forget(client_order_id);
        }
        Ok(())
    }
}
