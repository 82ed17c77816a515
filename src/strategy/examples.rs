//! Two example strategies that exercise the engine: a quoting market maker (resting
//! orders, so the queue model matters) and a trade-flow taker (aggressive orders, so
//! latency matters). They are examples, not alpha.

use std::collections::{HashMap, VecDeque};

use anyhow::Result;

use super::{Context, Fill, OrderSide, OrderUpdate, Params, Strategy, TimeInForce};
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
    quotes: HashMap<Side, (String, Fixed)>,
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
