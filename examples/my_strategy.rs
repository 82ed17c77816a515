//! Your own Rust strategy, backtested in-process in one command:
//!
//! ```text
//! cargo run --release --example my_strategy -- data/binance-spot runs/my-strategy
//! ticktape report runs/my-strategy --chart runs/my-strategy/equity.svg
//! ```
//!
//! Copy this file, change `Imbalance` (the callbacks are the `ticktape::strategy::Strategy`
//! trait's; all are optional), run it. The same `impl Strategy` also runs as its own
//! process over the bus (`ticktape::strategy::run`), paper-live or in a lockstep backtest,
//! with the same fills.

use std::time::Duration;

use anyhow::Result;
use ticktape::backtest::Backtest;
use ticktape::book::L2Book;
use ticktape::event::{Event, Fixed};
use ticktape::exchange::{ExchangeSettings, LatencySpec};
use ticktape::store::Selection;
use ticktape::strategy::{Context, Fill, OrderSide, Strategy};

/// Buys when the best bid holds much more size than the best ask (and sells in the mirror
/// case), flat again after `hold` of event time. An example, not alpha.
struct Imbalance {
    venue: String,
    symbol: String,
    size: Fixed,
    /// Bid share of top-of-book size above which it buys (below 1 − this it sells).
    threshold: f64,
    /// How long a position is held, ns of event time.
    hold: i64,
    /// When the current position was opened.
    opened_at: Option<i64>,
    fills: u64,
}

impl Strategy for Imbalance {
    fn on_book(&mut self, ctx: &mut Context, event: &Event, book: &L2Book) -> Result<()> {
        if *event.symbol != *self.symbol || book.is_crossed() {
            return Ok(());
        }
        let (Some((_, bid)), Some((_, ask))) = (book.best_bid(), book.best_ask()) else {
            return Ok(());
        };
        let position = ctx.position(&self.venue, &self.symbol);
        if !position.is_zero() || self.opened_at.is_some() {
            return Ok(());
        }
        let share = bid.to_f64() / (bid.to_f64() + ask.to_f64());
        let side = if share > self.threshold {
            OrderSide::Buy
        } else if share < 1.0 - self.threshold {
            OrderSide::Sell
        } else {
            return Ok(());
        };
        ctx.market(&self.venue, &self.symbol, side, self.size)?;
        self.opened_at = Some(ctx.now());
        Ok(())
    }

    fn on_timer(&mut self, ctx: &mut Context) -> Result<()> {
        let Some(opened) = self.opened_at else {
            return Ok(());
        };
        if ctx.now() - opened < self.hold {
            return Ok(());
        }
        let position = ctx.position(&self.venue, &self.symbol);
        if position > Fixed::ZERO {
            ctx.market(&self.venue, &self.symbol, OrderSide::Sell, position)?;
        } else if position < Fixed::ZERO {
            let size = Fixed::new(-position.mantissa, position.scale);
            ctx.market(&self.venue, &self.symbol, OrderSide::Buy, size)?;
        }
        self.opened_at = None;
        Ok(())
    }

    fn on_fill(&mut self, _ctx: &mut Context, _fill: &Fill) -> Result<()> {
        self.fills += 1;
        Ok(())
    }
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let dataset = args.next().unwrap_or_else(|| "data/binance-spot".into());
    let run_dir = args.next().unwrap_or_else(|| "runs/my-strategy".into());
    let strategy = Imbalance {
        venue: "binance".into(),
        symbol: "BTCUSDT".into(),
        size: "0.01".parse()?,
        threshold: 0.9,
        hold: 5_000_000_000,
        opened_at: None,
        fills: 0,
    };
    let exchange = ExchangeSettings {
        order_latency: LatencySpec::Constant { ns: 1_000_000 },
        ..ExchangeSettings::default()
    };
    let summary = Backtest::builder()
        .dataset(&dataset)
        .selection(Selection {
            symbols: vec!["BTCUSDT".into()],
            ..Selection::default()
        })
        .exchange(exchange)
        .strategy("imbalance", strategy)
        .timer(Duration::from_millis(100))
        .starting_balance(10_000.0)
        .run_dir(&run_dir)
        .build()?
        .run(&ticktape::shutdown::on_signal())?;
    println!(
        "{} events in {:.2} s, {} fills, digest {}",
        summary.replay.events, summary.elapsed_secs, summary.fills, summary.digest
    );
    let report = ticktape::report::compute(
        summary.run_dir.as_path(),
        &ticktape::report::ReportOptions::default(),
    )?;
    println!("{}", ticktape::report::render_table(&report));
    Ok(())
}
