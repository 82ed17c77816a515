//! Strategy SDK: the [`Strategy`] trait and a [`Runner`] that connects a strategy to the
//! bus and the order gateway, keeps local books from deltas, uses event time as its
//! clock and answers lockstep step markers transparently. The same binary trades
//! paper-live and in backtests: only endpoints change.
//!
//! Never reaches into exchange internals: it speaks the gateway protocol
//! (`docs/EXCHANGE.md`) and reads fills from the bus.

pub mod examples;

use std::collections::HashMap;
use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use serde_json::json;

use crate::book::L2Book;
use crate::event::{Body, Event, Fixed, Interner, Side, UnixNanos};
use crate::shutdown::Stop;
use crate::wire;

/// A fill as the strategy sees it (from `fill.<venue>.<symbol>`).
#[derive(Clone, Debug)]
pub struct Fill {
    /// Venue.
    pub venue: String,
    /// Symbol.
    pub symbol: String,
    /// The strategy's own order id.
    pub client_order_id: String,
    /// Bid = bought, Ask = sold.
    pub side: Side,
    /// Fill price.
    pub price: Fixed,
    /// Filled quantity.
    pub size: Fixed,
    /// Event time of the fill.
    pub ts: UnixNanos,
}

/// An order status change (from `order.<venue>.<symbol>` or a gateway reply).
#[derive(Clone, Debug)]
pub struct OrderUpdate {
    /// The strategy's own order id.
    pub client_order_id: String,
    /// `accepted`, `rejected`, `new`, `partially_filled`, `filled`, `canceled`, ...
    pub status: String,
    /// Rejection reason, if any.
    pub reason: Option<String>,
}

/// Order time-in-force.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tif {
    /// Good till canceled.
    Gtc,
    /// Immediate or cancel.
    Ioc,
    /// Rejected if it would take liquidity.
    PostOnly,
}

impl Tif {
    fn name(self) -> &'static str {
        match self {
            Tif::Gtc => "gtc",
            Tif::Ioc => "ioc",
            Tif::PostOnly => "post_only",
        }
    }
}

/// What a strategy can see and do from inside a callback.
pub struct Context {
    dealer: zmq::Socket,
    name: String,
    now: UnixNanos,
    /// Local books, few per strategy: a scan beats hashing two strings per event.
    books: Vec<(Arc<str>, Arc<str>, L2Book)>,
    positions: HashMap<(String, String), Fixed>,
    next_id: u64,
    /// Gateway requests sent whose reply has not come back yet. While none is owed,
    /// only the bus can speak, and the runner blocks on it alone.
    replies_owed: u32,
    /// Orders sent so far.
    pub orders_sent: u64,
}

impl Context {
    /// Event time of the event being handled (the strategy's clock; never wall time).
    pub fn now(&self) -> UnixNanos {
        self.now
    }

    /// The local book of a venue/symbol, rebuilt from deltas.
    pub fn book(&self, venue: &str, symbol: &str) -> Option<&L2Book> {
        self.books
            .iter()
            .find(|(v, s, _)| &**v == venue && &**s == symbol)
            .map(|(_, _, book)| book)
    }

    /// Net position from the fills seen so far (positive = long).
    pub fn position(&self, venue: &str, symbol: &str) -> Fixed {
        self.positions
            .get(&(venue.to_string(), symbol.to_string()))
            .copied()
            .unwrap_or(Fixed::ZERO)
    }

    /// Index of the local book of `event`'s venue and symbol, created empty if new.
    fn book_index(&mut self, event: &Event) -> usize {
        let found = self.books.iter().position(|(v, s, _)| {
            (Arc::ptr_eq(v, &event.venue) || *v == event.venue)
                && (Arc::ptr_eq(s, &event.symbol) || *s == event.symbol)
        });
        found.unwrap_or_else(|| {
            let entry = (event.venue.clone(), event.symbol.clone(), L2Book::default());
            self.books.push(entry);
            self.books.len() - 1
        })
    }

    fn send(&mut self, msg: serde_json::Value) -> Result<()> {
        self.dealer
            .send(msg.to_string().as_bytes(), 0)
            .context("cannot send to the order gateway")?;
        self.replies_owed += 1;
        Ok(())
    }

    fn next_client_id(&mut self) -> String {
        self.next_id += 1;
        format!("{}-{}", self.name, self.next_id)
    }

    /// Sends a limit order; returns its client order id.
    pub fn limit(
        &mut self,
        venue: &str,
        symbol: &str,
        side: Side,
        price: Fixed,
        size: Fixed,
        tif: Tif,
    ) -> Result<String> {
        let id = self.next_client_id();
        let msg = json!({
            "type": "new", "client_order_id": id, "venue": venue, "symbol": symbol,
            "side": if side == Side::Bid { "buy" } else { "sell" },
            "order_type": "limit", "tif": tif.name(),
            "price": price.to_string(), "size": size.to_string(), "decided_at": self.now,
        });
        self.send(msg)?;
        self.orders_sent += 1;
        Ok(id)
    }

    /// Sends a market order; returns its client order id.
    pub fn market(&mut self, venue: &str, symbol: &str, side: Side, size: Fixed) -> Result<String> {
        let id = self.next_client_id();
        let msg = json!({
            "type": "new", "client_order_id": id, "venue": venue, "symbol": symbol,
            "side": if side == Side::Bid { "buy" } else { "sell" },
            "order_type": "market", "tif": "ioc",
            "size": size.to_string(), "decided_at": self.now,
        });
        self.send(msg)?;
        self.orders_sent += 1;
        Ok(id)
    }

    /// Cancels an order by client order id.
    pub fn cancel(&mut self, client_order_id: &str) -> Result<()> {
        let msg = json!({"type": "cancel", "client_order_id": client_order_id,
            "decided_at": self.now});
        self.send(msg)
    }
}

/// A trading strategy. Every callback gets the [`Context`]; all are optional.
pub trait Strategy {
    /// A book delta was applied to the local book (`book` is after the change).
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
    /// One of the strategy's orders changed status or was answered by the gateway.
    fn on_order(&mut self, _ctx: &mut Context, _update: &OrderUpdate) -> Result<()> {
        Ok(())
    }
    /// Data may be missing; the local book was cleared.
    fn on_gap(&mut self, _ctx: &mut Context, _event: &Event) -> Result<()> {
        Ok(())
    }
    /// Called every timer interval of event time.
    fn on_timer(&mut self, _ctx: &mut Context) -> Result<()> {
        Ok(())
    }
}

/// Where the runner connects.
#[derive(Clone, Debug)]
pub struct RunnerConfig {
    /// Strategy name (also the prefix of client order ids).
    pub name: String,
    /// Bus endpoints (market data and fills).
    pub bus: Vec<String>,
    /// Order gateway endpoint.
    pub gateway: String,
    /// Take part in lockstep (ack step markers).
    pub lockstep: bool,
    /// Event-time interval of `on_timer`.
    pub timer: Duration,
    /// Stop when no message arrived for this long (a dead replay), if set.
    pub idle_timeout: Option<Duration>,
}

/// What a strategy run did.
#[derive(Clone, Debug, Default)]
pub struct RunnerStats {
    /// Market events handled.
    pub events: u64,
    /// Fills received.
    pub fills: u64,
    /// Orders sent.
    pub orders: u64,
    /// Step markers acknowledged.
    pub acks: u64,
}

/// How long the runner waits for a message before it checks the stop flag and idle timeout.
const IDLE_CHECK_MS: i32 = 100;

/// The part of a lockstep step marker the runner needs.
#[derive(serde::Deserialize)]
struct StepMarker {
    step: u64,
}

fn side_from(s: &str) -> Side {
    match s {
        "buy" | "B" | "bid" => Side::Bid,
        "sell" | "A" | "ask" => Side::Ask,
        _ => Side::None,
    }
}

/// Runs `strategy` until end-of-stream of a replay, or `stop`.
pub fn run(config: &RunnerConfig, strategy: &mut dyn Strategy, stop: &Stop) -> Result<RunnerStats> {
    let zctx = crate::bus::context();
    let sub = zctx.socket(zmq::SUB)?;
    sub.set_rcvhwm(0)?;
    sub.set_linger(0)?;
    sub.set_rcvtimeo(IDLE_CHECK_MS)?;
    for prefix in ["book.", "trade.", "gap.", "fill.", "order.", "step", "eos."] {
        sub.set_subscribe(prefix.as_bytes())?;
    }
    for ep in &config.bus {
        sub.connect(ep)
            .with_context(|| format!("bad bus endpoint {ep}"))?;
    }
    let dealer = zctx.socket(zmq::DEALER)?;
    dealer.set_linger(1000)?;
    dealer
        .connect(&config.gateway)
        .with_context(|| format!("bad gateway endpoint {}", config.gateway))?;
    dealer.send(
        json!({"type": "hello", "strategy": config.name, "lockstep": config.lockstep})
            .to_string()
            .as_bytes(),
        0,
    )?;
    let mut ctx = Context {
        dealer,
        name: config.name.clone(),
        now: 0,
        books: Vec::new(),
        positions: HashMap::new(),
        next_id: 0,
        // The hello's welcome.
        replies_owed: 1,
        orders_sent: 0,
    };
    let mut bus = BusState {
        lockstep: config.lockstep,
        names: Interner::default(),
        next_timer: None,
        timer_every: config.timer.as_nanos().max(1) as i64,
        ack: Vec::with_capacity(48),
        stats: RunnerStats::default(),
    };
    let mut last_msg = Instant::now();
    let idle_check = |last_msg: Instant| -> Result<()> {
        if config.idle_timeout.is_some_and(|t| last_msg.elapsed() > t) {
            bail!(
                "no market data for {:?}: is the replay running?",
                config.idle_timeout
            );
        }
        Ok(())
    };
    loop {
        if stop.is_set() {
            break;
        }
        if ctx.replies_owed == 0 {
            // Only the bus can speak: a blocking receive costs no system call while
            // messages are queued, where polling and draining cost two per wake-up.
            match sub.recv_multipart(0) {
                Ok(frames) => {
                    last_msg = Instant::now();
                    if bus.handle(&frames, strategy, &mut ctx)? {
                        break;
                    }
                }
                // Timeout or a signal: loop round and let the stop flag decide.
                Err(zmq::Error::EAGAIN | zmq::Error::EINTR) => idle_check(last_msg)?,
                Err(e) => return Err(e.into()),
            }
            continue;
        }
        let mut items = [
            sub.as_poll_item(zmq::POLLIN),
            ctx.dealer.as_poll_item(zmq::POLLIN),
        ];
        match zmq::poll(&mut items, IDLE_CHECK_MS as i64) {
            Ok(_) => {}
            // A signal: loop round and let the stop flag decide.
            Err(zmq::Error::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
        let (sub_ready, dealer_ready) = (items[0].is_readable(), items[1].is_readable());
        if !sub_ready && !dealer_ready {
            idle_check(last_msg)?;
            continue;
        }
        last_msg = Instant::now();
        if dealer_ready {
            while let Ok(reply) = ctx.dealer.recv_bytes(zmq::DONTWAIT) {
                ctx.replies_owed = ctx.replies_owed.saturating_sub(1);
                let v: serde_json::Value = serde_json::from_slice(&reply).unwrap_or_default();
                if let (Some(t), Some(id)) = (v["type"].as_str(), v["client_order_id"].as_str()) {
                    let update = OrderUpdate {
                        client_order_id: id.to_string(),
                        status: t.to_string(),
                        reason: v["reason"].as_str().map(str::to_string),
                    };
                    strategy.on_order(&mut ctx, &update)?;
                }
            }
        }
        if !sub_ready {
            continue;
        }
        // Drain the bus in order; step markers are acked after what precedes them.
        let mut ended = false;
        while let Ok(frames) = sub.recv_multipart(zmq::DONTWAIT) {
            ended = bus.handle(&frames, strategy, &mut ctx)?;
            if ended {
                break;
            }
        }
        if ended {
            break;
        }
    }
    let mut stats = bus.stats;
    stats.orders = ctx.orders_sent;
    Ok(stats)
}

/// Runner state for what arrives on the bus.
struct BusState {
    lockstep: bool,
    names: Interner,
    next_timer: Option<UnixNanos>,
    timer_every: i64,
    /// Reused buffer for lockstep acks.
    ack: Vec<u8>,
    stats: RunnerStats,
}

impl BusState {
    /// Handles one bus message; true once the replay's end of stream has arrived.
    fn handle(
        &mut self,
        frames: &[Vec<u8>],
        strategy: &mut dyn Strategy,
        ctx: &mut Context,
    ) -> Result<bool> {
        let [topic, payload] = frames else {
            return Ok(false);
        };
        if topic.as_slice() == b"step" {
            if self.lockstep {
                let step = serde_json::from_slice::<StepMarker>(payload)
                    .map(|m| m.step)
                    .unwrap_or(0);
                self.ack.clear();
                write!(self.ack, "{{\"type\":\"ack\",\"step\":{step}}}")?;
                ctx.dealer.send(&self.ack[..], 0)?;
                self.stats.acks += 1;
            }
            return Ok(false);
        }
        if topic.starts_with(b"fill.") || topic.starts_with(b"order.") {
            handle_exchange_message(topic, payload, strategy, ctx, &mut self.stats)?;
            return Ok(false);
        }
        let Ok(event) = wire::decode(payload, &mut self.names) else {
            return Ok(false);
        };
        if let Body::EndOfStream(e) = &event.body {
            return Ok(e.replay);
        }
        ctx.now = ctx.now.max(event.ts_recv);
        let due = self.next_timer.get_or_insert(ctx.now + self.timer_every);
        if ctx.now >= *due {
            *due = ctx.now + self.timer_every;
            strategy.on_timer(ctx)?;
        }
        self.stats.events += 1;
        match &event.body {
            Body::Book(delta) => {
                // Lend the book to the callback without cloning it (books can hold
                // thousands of levels); it goes back in its slot right after.
                let i = ctx.book_index(&event);
                let mut book = std::mem::take(&mut ctx.books[i].2);
                book.apply(delta);
                let result = if book.is_consistent() {
                    strategy.on_book(ctx, &event, &book)
                } else {
                    Ok(())
                };
                ctx.books[i].2 = book;
                result?;
            }
            Body::Trade(_) => strategy.on_trade(ctx, &event)?,
            Body::Gap(_) => {
                let i = ctx.book_index(&event);
                ctx.books[i].2.clear();
                strategy.on_gap(ctx, &event)?;
            }
            _ => {}
        }
        Ok(false)
    }
}

fn handle_exchange_message(
    topic: &[u8],
    payload: &[u8],
    strategy: &mut dyn Strategy,
    ctx: &mut Context,
    stats: &mut RunnerStats,
) -> Result<()> {
    let v: serde_json::Value = serde_json::from_slice(payload).unwrap_or_default();
    if v["strategy"].as_str().is_some_and(|s| s != ctx.name) {
        return Ok(());
    }
    let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
    if topic.starts_with(b"fill.") {
        let fill = Fill {
            venue: s("venue"),
            symbol: s("symbol"),
            client_order_id: s("client_order_id"),
            side: side_from(&s("side")),
            price: s("price").parse().unwrap_or_default(),
            size: s("size").parse().unwrap_or_default(),
            ts: v["ts"].as_i64().unwrap_or(ctx.now),
        };
        let pos = ctx
            .positions
            .entry((fill.venue.clone(), fill.symbol.clone()))
            .or_insert(Fixed::ZERO);
        let signed = if fill.side == Side::Bid {
            fill.size
        } else {
            Fixed::new(-fill.size.mantissa, fill.size.scale)
        };
        *pos = pos.checked_add(signed).unwrap_or(*pos);
        stats.fills += 1;
        strategy.on_fill(ctx, &fill)?;
    } else {
        let update = OrderUpdate {
            client_order_id: s("client_order_id"),
            status: s("status"),
            reason: v["reason"].as_str().map(str::to_string),
        };
        strategy.on_order(ctx, &update)?;
    }
    Ok(())
}
