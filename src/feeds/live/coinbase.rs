//! Coinbase Exchange websocket feed (`wss://ws-feed.exchange.coinbase.com`):
//! `level2_batch` (snapshot + l2update), `matches` and `heartbeat`.
//!
//! Owns Coinbase's message shapes and its continuity rules. Never touches sockets:
//! [`super::ws`] drives it, tests feed it captures.
//!
//! Continuity: level2 messages carry no sequence number, so a book can only break with
//! the connection (the loop then reconnects and the venue sends new snapshots). Matches
//! carry the product's `sequence` (shared with the full channel, so not contiguous) and
//! a per-product `trade_id` that is contiguous: a jump in `trade_id`, or a heartbeat
//! whose `last_trade_id` is ahead of the last match seen, is a `Gap(VenueSeq)` with the
//! number of missing trades. A `sequence` that does not increase is a replayed message
//! and is dropped. A book that ends up crossed after an update is treated as broken:
//! gap, then the product's level2 subscription is renewed for a fresh snapshot.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde_json::Value;

use super::publish::{FeedCounters, Publisher};
use super::ws::{Action, FeedError, Protocol};
use crate::book::L2Book;
use crate::event::{
    Body, BookDelta, Fixed, Flags, GapReason, NANOS_PER_SEC, Side, Trade, UnixNanos,
};

/// Coinbase Exchange's public websocket endpoint.
pub const DEFAULT_URL: &str = "wss://ws-feed.exchange.coinbase.com";

/// The unauthenticated level2 channel (updates batched every 50 ms).
pub const BOOK_CHANNEL: &str = "level2_batch";

/// How long a resubscribed product may wait for its new snapshot before the whole
/// connection is renewed instead.
pub const RESYNC_TIMEOUT_NS: UnixNanos = 10 * NANOS_PER_SEC;

#[derive(Default)]
struct Product {
    book: L2Book,
    /// False until a snapshot arrived; updates before it are dropped.
    synced: bool,
    last_trade_id: Option<u64>,
    last_sequence: Option<u64>,
}

/// The Coinbase protocol state: one book and trade cursor per product.
pub struct Coinbase {
    products: Vec<String>,
    trades: bool,
    book_channel: String,
    state: HashMap<String, Product>,
    /// Products that delivered data since the last gap; a disconnect is a gap for them.
    live: HashSet<String>,
    /// Products resubscribed after a break, with the time the resubscribe was sent.
    pending: HashMap<String, UnixNanos>,
}

impl Coinbase {
    /// Subscribes `products` (`BTC-USD`) to `level2_batch`, `heartbeat` and, when
    /// `trades`, `matches`.
    pub fn new(products: &[String], trades: bool) -> Result<Coinbase, FeedError> {
        if products.is_empty() {
            return Err(FeedError::Options(
                "coinbase needs at least one product, e.g. BTC-USD".into(),
            ));
        }
        Ok(Coinbase {
            products: products.to_vec(),
            trades,
            book_channel: BOOK_CHANNEL.to_string(),
            state: HashMap::new(),
            live: HashSet::new(),
            pending: HashMap::new(),
        })
    }

    /// Uses another level2 channel name (`level2` needs an authenticated connection).
    pub fn with_book_channel(mut self, channel: &str) -> Coinbase {
        self.book_channel = channel.to_string();
        self
    }

    /// The current book of `product`, if it is synchronised.
    pub fn book(&self, product: &str) -> Option<&L2Book> {
        self.state
            .get(product)
            .filter(|p| p.synced)
            .map(|p| &p.book)
    }

    fn subscription(&self, kind: &str, products: &[String], channels: &[&str]) -> String {
        serde_json::json!({"type": kind, "product_ids": products, "channels": channels}).to_string()
    }

    fn on_snapshot(
        &mut self,
        msg: &Value,
        ts_recv: UnixNanos,
        out: &mut Publisher<'_>,
    ) -> Result<Result<Action, FeedError>, ()> {
        let product = str_field(msg, "product_id")?;
        let mut deltas = Vec::new();
        for (key, side) in [("bids", Side::Bid), ("asks", Side::Ask)] {
            for level in msg.get(key).and_then(Value::as_array).ok_or(())? {
                let price = decimal_at(level, 0)?;
                let size = decimal_at(level, 1)?;
                deltas.push((side, price, size));
            }
        }
        let ts_event = time_field(msg).unwrap_or(ts_recv);
        let state = self.state.entry(product.to_string()).or_default();
        state.book.clear();
        for (side, price, size) in &deltas {
            state.book.set_level(*side, *price, *size);
        }
        state.synced = true;
        self.live.insert(product.to_string());
        self.pending.remove(product);
        let symbol = out.symbol(product);
        Ok(
            publish_levels(out, &symbol, &deltas, Flags::SNAPSHOT, ts_event, ts_recv)
                .map(|_| Action::Continue)
                .map_err(FeedError::Sink),
        )
    }

    fn on_l2update(
        &mut self,
        msg: &Value,
        ts_recv: UnixNanos,
        out: &mut Publisher<'_>,
    ) -> Result<Result<Action, FeedError>, ()> {
        let product = str_field(msg, "product_id")?;
        let Some(state) = self.state.get_mut(product).filter(|p| p.synced) else {
            return Ok(Ok(Action::Continue));
        };
        let mut deltas = Vec::new();
        for change in msg.get("changes").and_then(Value::as_array).ok_or(())? {
            let side = match change.get(0).and_then(Value::as_str) {
                Some("buy") => Side::Bid,
                Some("sell") => Side::Ask,
                _ => return Err(()),
            };
            let price = decimal_at(change, 1)?;
            let size = decimal_at(change, 2)?;
            deltas.push((side, price, size));
        }
        if deltas.is_empty() {
            return Ok(Ok(Action::Continue));
        }
        for (side, price, size) in &deltas {
            state.book.set_level(*side, *price, *size);
        }
        let symbol = out.symbol(product);
        if state.book.is_crossed() {
            return Ok(self.resync(product, &symbol, ts_recv, out));
        }
        let ts_event = time_field(msg).unwrap_or(ts_recv);
        Ok(
            publish_levels(out, &symbol, &deltas, Flags::default(), ts_event, ts_recv)
                .map(|_| Action::Continue)
                .map_err(FeedError::Sink),
        )
    }

    /// A broken book: gap, forget it, renew the product's level2 subscription.
    fn resync(
        &mut self,
        product: &str,
        symbol: &Arc<str>,
        ts_recv: UnixNanos,
        out: &mut Publisher<'_>,
    ) -> Result<Action, FeedError> {
        if let Some(state) = self.state.get_mut(product) {
            state.book.clear();
            state.synced = false;
        }
        self.live.remove(product);
        self.pending.insert(product.to_string(), ts_recv);
        out.gap(symbol, ts_recv, GapReason::Resync, None)?;
        let one = [product.to_string()];
        let channel = [self.book_channel.as_str()];
        Ok(Action::Send(vec![
            self.subscription("unsubscribe", &one, &channel),
            self.subscription("subscribe", &one, &channel),
        ]))
    }

    /// `match` (published) or `last_match` (the trade before we subscribed: only sets
    /// the cursor, since it may already have been published before a reconnect).
    fn on_match(
        &mut self,
        msg: &Value,
        publish: bool,
        ts_recv: UnixNanos,
        out: &mut Publisher<'_>,
    ) -> Result<Result<Action, FeedError>, ()> {
        let product = str_field(msg, "product_id")?;
        let trade_id = msg.get("trade_id").and_then(Value::as_u64).ok_or(())?;
        let sequence = msg.get("sequence").and_then(Value::as_u64).ok_or(())?;
        let maker = match str_field(msg, "side")? {
            "buy" => Side::Bid,
            "sell" => Side::Ask,
            _ => return Err(()),
        };
        let price: Fixed = str_field(msg, "price")?.parse().map_err(|_| ())?;
        let size: Fixed = str_field(msg, "size")?.parse().map_err(|_| ())?;
        let ts_event = time_field(msg).unwrap_or(ts_recv);
        let state = self.state.entry(product.to_string()).or_default();
        if state.last_sequence.is_some_and(|last| sequence <= last)
            || state.last_trade_id.is_some_and(|last| trade_id <= last)
        {
            // Already seen: the venue replays matches on reconnects.
            return Ok(Ok(Action::Continue));
        }
        let missing = state
            .last_trade_id
            .filter(|last| trade_id > last + 1)
            .map(|last| trade_id - last - 1);
        state.last_sequence = Some(sequence);
        state.last_trade_id = Some(trade_id);
        if !publish {
            return Ok(Ok(Action::Continue));
        }
        self.live.insert(product.to_string());
        let symbol = out.symbol(product);
        let gap = match missing {
            Some(missing) => out.gap(&symbol, ts_recv, GapReason::VenueSeq, Some(missing)),
            None => Ok(()),
        };
        let body = Body::Trade(Trade {
            price,
            size,
            // Coinbase reports the maker's side; the aggressor took the other one.
            aggressor: maker.opposite(),
            trade_id: compact_str::ToCompactString::to_compact_string(&trade_id),
        });
        let result =
            gap.and_then(|_| out.emit(&symbol, ts_event, ts_recv, Some(sequence), None, body));
        Ok(result.map(|_| Action::Continue).map_err(FeedError::Sink))
    }

    /// A heartbeat's `last_trade_id` ahead of our cursor means matches were lost.
    fn on_heartbeat(
        &mut self,
        msg: &Value,
        ts_recv: UnixNanos,
        out: &mut Publisher<'_>,
    ) -> Result<Result<Action, FeedError>, ()> {
        if !self.trades {
            return Ok(Ok(Action::Continue));
        }
        let product = str_field(msg, "product_id")?;
        let Some(last_trade_id) = msg.get("last_trade_id").and_then(Value::as_u64) else {
            return Ok(Ok(Action::Continue));
        };
        let state = self.state.entry(product.to_string()).or_default();
        let Some(ours) = state.last_trade_id else {
            // First contact: the heartbeat tells where the trade stream stands.
            state.last_trade_id = Some(last_trade_id);
            return Ok(Ok(Action::Continue));
        };
        if last_trade_id <= ours {
            return Ok(Ok(Action::Continue));
        }
        state.last_trade_id = Some(last_trade_id);
        let symbol = out.symbol(product);
        Ok(out
            .gap(
                &symbol,
                ts_recv,
                GapReason::VenueSeq,
                Some(last_trade_id - ours),
            )
            .map(|_| Action::Continue)
            .map_err(FeedError::Sink))
    }
}

impl Protocol for Coinbase {
    fn venue(&self) -> &'static str {
        "coinbase"
    }

    fn subscriptions(&self) -> Vec<String> {
        let mut channels = vec![self.book_channel.as_str(), "heartbeat"];
        if self.trades {
            channels.push("matches");
        }
        vec![self.subscription("subscribe", &self.products, &channels)]
    }

    fn on_message(
        &mut self,
        text: &str,
        ts_recv: UnixNanos,
        out: &mut Publisher<'_>,
    ) -> Result<Action, FeedError> {
        if let Some(product) =
            super::publish::overdue_resubscribe(&self.pending, ts_recv, RESYNC_TIMEOUT_NS)
        {
            self.pending.clear();
            return Ok(Action::Reconnect(format!(
                "coinbase sent no new snapshot for {product} after a resubscribe"
            )));
        }
        let Ok(msg) = serde_json::from_str::<Value>(text) else {
            return Ok(malformed(out, text));
        };
        let handled = match msg.get("type").and_then(Value::as_str) {
            Some("snapshot") => self.on_snapshot(&msg, ts_recv, out),
            Some("l2update") => self.on_l2update(&msg, ts_recv, out),
            Some("match") if self.trades => self.on_match(&msg, true, ts_recv, out),
            Some("last_match") => self.on_match(&msg, false, ts_recv, out),
            Some("heartbeat") => self.on_heartbeat(&msg, ts_recv, out),
            Some("error") => {
                let field = |k: &str| msg.get(k).and_then(Value::as_str).unwrap_or("");
                return Err(FeedError::Rejected {
                    venue: "coinbase".into(),
                    message: format!("{} {}", field("message"), field("reason"))
                        .trim()
                        .to_string(),
                });
            }
            // subscriptions, ticker, status and anything new: nothing to publish.
            _ => Ok(Ok(Action::Continue)),
        };
        match handled {
            Ok(result) => result,
            Err(()) => Ok(malformed(out, text)),
        }
    }

    fn on_disconnect(
        &mut self,
        ts_recv: UnixNanos,
        out: &mut Publisher<'_>,
    ) -> Result<(), FeedError> {
        self.pending.clear();
        for state in self.state.values_mut() {
            state.book.clear();
            state.synced = false;
        }
        let mut live: Vec<String> = self.live.drain().collect();
        live.sort();
        for product in live {
            let symbol = out.symbol(&product);
            out.gap(&symbol, ts_recv, GapReason::Resync, None)?;
        }
        Ok(())
    }
}

/// An unreadable message may have been a book update we cannot place: since level2
/// has no sequence numbers, the only safe answer is a fresh connection and snapshots.
fn malformed(out: &mut Publisher<'_>, text: &str) -> Action {
    FeedCounters::bump(&out.counters().malformed);
    Action::Reconnect(format!(
        "unreadable coinbase message: {}",
        text.chars().take(120).collect::<String>()
    ))
}

/// The decimal string at `index` of a JSON array, e.g. a level's price or size.
fn decimal_at(array: &Value, index: usize) -> Result<Fixed, ()> {
    array
        .get(index)
        .and_then(Value::as_str)
        .ok_or(())?
        .parse()
        .map_err(|_| ())
}

fn str_field<'v>(msg: &'v Value, key: &str) -> Result<&'v str, ()> {
    msg.get(key).and_then(Value::as_str).ok_or(())
}

fn time_field(msg: &Value) -> Option<UnixNanos> {
    parse_rfc3339_utc(msg.get("time")?.as_str()?)
}

fn publish_levels(
    out: &mut Publisher<'_>,
    symbol: &Arc<str>,
    deltas: &[(Side, Fixed, Fixed)],
    flags: Flags,
    ts_event: UnixNanos,
    ts_recv: UnixNanos,
) -> anyhow::Result<()> {
    for (i, (side, price, size)) in deltas.iter().enumerate() {
        let flags = if i + 1 == deltas.len() {
            flags.with(Flags::LAST)
        } else {
            flags
        };
        let body = Body::Book(BookDelta {
            side: *side,
            price: *price,
            size: *size,
            flags,
        });
        out.emit(symbol, ts_event, ts_recv, None, None, body)?;
    }
    Ok(())
}

/// Parses `2021-04-17T16:43:37.075687Z` (UTC, `Z` or `+00:00`) into ns since epoch.
pub fn parse_rfc3339_utc(text: &str) -> Option<UnixNanos> {
    let text = text
        .strip_suffix('Z')
        .or_else(|| text.strip_suffix("+00:00"))?;
    let (date, time) = text.split_once('T')?;
    let mut date_parts = date.splitn(3, '-');
    let year: i64 = date_parts.next()?.parse().ok()?;
    let month: i64 = date_parts.next()?.parse().ok()?;
    let day: i64 = date_parts.next()?.parse().ok()?;
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut time_parts = hms.splitn(3, ':');
    let hour: i64 = time_parts.next()?.parse().ok()?;
    let minute: i64 = time_parts.next()?.parse().ok()?;
    let second: i64 = time_parts.next()?.parse().ok()?;
    // Four-digit years and real calendar dates only: a venue's time is never outside
    // them, and days_from_civil's arithmetic must not overflow on a corrupt one.
    let real_date = match (i16::try_from(year), i8::try_from(month), i8::try_from(day)) {
        (Ok(y), Ok(m), Ok(d)) => jiff::civil::Date::new(y, m, d).is_ok(),
        _ => false,
    };
    if !real_date
        || !(0..=9999).contains(&year)
        || !(0..=23).contains(&hour)
        || !(0..=59).contains(&minute)
        || !(0..=60).contains(&second)
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let mut nanos = 0i64;
    for i in 0..9 {
        nanos = nanos * 10 + frac.as_bytes().get(i).map_or(0, |b| (b - b'0') as i64);
    }
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3_600 + minute * 60 + second;
    secs.checked_mul(NANOS_PER_SEC)?.checked_add(nanos)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Event;
    use crate::feeds::live::capture::{read_capture, received, sample_path};

    const CAPTURE_PRODUCTS: [&str; 10] = [
        "SKL-USD", "SKL-BTC", "BAND-GBP", "NMR-EUR", "BAND-BTC", "YFI-BTC", "DASH-BTC", "NU-GBP",
        "CRV-EUR", "SKL-GBP",
    ];

    fn capture_feed() -> Coinbase {
        let products: Vec<String> = CAPTURE_PRODUCTS.iter().map(|s| s.to_string()).collect();
        Coinbase::new(&products, true).unwrap()
    }

    /// Found by the `live_coinbase` fuzz target: a message time with a huge year
    /// overflowed the days-to-seconds arithmetic (a panic in debug builds, a wrapped
    /// time in release ones); negative hours and February 31 were accepted.
    #[test]
    fn impossible_times_are_none_not_overflowed() {
        for text in [
            "99999999999999-01-01T00:00:00Z",
            "-9223372036854775808-03-01T00:00:00Z",
            "2021-04-17T-5:43:37Z",
            "2021-04-17T16:-1:37Z",
            "2021-02-31T00:00:00Z",
        ] {
            assert_eq!(parse_rfc3339_utc(text), None, "{text}");
        }
        assert_eq!(
            parse_rfc3339_utc("2021-04-17T23:59:60Z"),
            Some(1_618_704_000_000_000_000),
            "a leap second is the next second"
        );
    }

    #[test]
    fn rfc3339_times_parse_to_exact_nanoseconds() {
        assert_eq!(
            parse_rfc3339_utc("2021-04-17T16:43:37.075687Z"),
            Some(1_618_677_817_075_687_000)
        );
        assert_eq!(parse_rfc3339_utc("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_utc("2000-03-01T00:00:00.5+00:00"),
            Some(951_868_800_500_000_000)
        );
        assert_eq!(parse_rfc3339_utc("2021-04-17 16:43:37Z"), None);
        assert_eq!(parse_rfc3339_utc("2021-13-17T16:43:37Z"), None);
    }

    /// Rebuilds books from the published deltas and compares every ticker's
    /// best_bid/best_ask with them, as MANIFEST section C describes.
    #[test]
    fn rebuilt_bbo_matches_ticker_100_of_107() {
        let lines = received(&read_capture(&sample_path("COINBASE.ws.28.0")).unwrap());
        let mut feed = capture_feed();
        let counters = FeedCounters::shared();
        let mut books: HashMap<String, L2Book> = HashMap::new();
        let (mut tickers, mut matched) = (0, 0);
        let mut first_ticker_misses = 0;
        let mut seen_ticker: HashSet<String> = HashSet::new();
        for (ts, text) in &lines {
            let mut sink: Vec<Event> = Vec::new();
            {
                let mut out = Publisher::new("coinbase", "capture", &mut sink, counters.clone());
                assert_eq!(
                    feed.on_message(text, *ts, &mut out).unwrap(),
                    Action::Continue
                );
            }
            for event in &sink {
                if let Body::Book(delta) = &event.body {
                    books
                        .entry(event.symbol.to_string())
                        .or_default()
                        .apply(delta);
                }
            }
            let msg: Value = serde_json::from_str(text).unwrap();
            if msg["type"] != "ticker" {
                continue;
            }
            tickers += 1;
            let product = msg["product_id"].as_str().unwrap();
            let bid: Fixed = msg["best_bid"].as_str().unwrap().parse().unwrap();
            let ask: Fixed = msg["best_ask"].as_str().unwrap().parse().unwrap();
            let first = seen_ticker.insert(product.to_string());
            let book = books.get(product);
            let best_bid = book.and_then(|b| b.best_bid()).map(|b| b.0);
            let best_ask = book.and_then(|b| b.best_ask()).map(|a| a.0);
            if best_bid == Some(bid) && best_ask == Some(ask) {
                matched += 1;
            } else if first {
                first_ticker_misses += 1;
            }
        }
        let stats = counters.snapshot();
        assert_eq!(stats.malformed, 0);
        assert_eq!(stats.gaps, 0, "trade ids in the capture are contiguous");
        assert_eq!(tickers, 107);
        assert_eq!(matched, 100);
        assert_eq!(
            first_ticker_misses, 7,
            "every miss is a product's stale first ticker"
        );
    }

    #[test]
    fn matches_become_trades_with_the_taker_side_and_sequence() {
        let lines = received(&read_capture(&sample_path("COINBASE.ws.28.0")).unwrap());
        let mut feed = capture_feed();
        let mut sink: Vec<Event> = Vec::new();
        {
            let mut out = Publisher::new("coinbase", "capture", &mut sink, FeedCounters::shared());
            for (ts, text) in &lines {
                feed.on_message(text, *ts, &mut out).unwrap();
            }
        }
        let trades: Vec<&Event> = sink
            .iter()
            .filter(|e| matches!(e.body, Body::Trade(_)))
            .collect();
        assert_eq!(trades.len(), 97);
        let first = trades[0];
        assert_eq!(&*first.symbol, "SKL-BTC");
        assert_eq!(first.venue_seq, Some(177_100_030));
        assert_eq!(
            first.ts_event,
            parse_rfc3339_utc("2021-04-17T16:43:37.089723Z").unwrap()
        );
        let Body::Trade(t) = &first.body else {
            panic!()
        };
        assert_eq!(t.aggressor, Side::Bid, "maker sold, so the taker bought");
        assert_eq!(t.trade_id, "280232");
        assert_eq!(t.size.to_string(), "985");
        let snapshots = sink
            .iter()
            .filter(|e| matches!(&e.body, Body::Book(b) if b.flags == Flags::SNAPSHOT.with(Flags::LAST)))
            .count();
        assert_eq!(snapshots, 10);
    }

    #[test]
    fn trade_id_jump_is_a_venue_seq_gap_with_the_missing_count() {
        let mut feed = capture_feed();
        let mut sink: Vec<Event> = Vec::new();
        let m = |tid: u64, seq: u64| {
            format!(
                r#"{{"type":"match","trade_id":{tid},"side":"buy","size":"1","price":"2","product_id":"SKL-USD","sequence":{seq},"time":"2021-04-17T16:43:37Z"}}"#
            )
        };
        {
            let mut out = Publisher::new("coinbase", "x", &mut sink, FeedCounters::shared());
            for text in [m(10, 100), m(11, 105), m(11, 105), m(15, 120), m(14, 110)] {
                feed.on_message(&text, 1, &mut out).unwrap();
            }
        }
        let kinds: Vec<String> = sink
            .iter()
            .map(|e| match &e.body {
                Body::Trade(t) => format!("trade {}", t.trade_id),
                Body::Gap(g) => format!("gap {:?} {:?}", g.reason, g.missing),
                _ => "other".into(),
            })
            .collect();
        assert_eq!(
            kinds,
            vec!["trade 10", "trade 11", "gap VenueSeq Some(3)", "trade 15"]
        );
    }

    #[test]
    fn crossed_book_after_update_resyncs_instead_of_publishing() {
        let mut feed = capture_feed();
        let mut sink: Vec<Event> = Vec::new();
        let action = {
            let mut out = Publisher::new("coinbase", "x", &mut sink, FeedCounters::shared());
            let snap = r#"{"type":"snapshot","product_id":"SKL-USD","bids":[["1.0","5"]],"asks":[["1.1","5"]]}"#;
            feed.on_message(snap, 1, &mut out).unwrap();
            let bad = r#"{"type":"l2update","product_id":"SKL-USD","changes":[["buy","1.2","1"]],"time":"2021-04-17T16:43:37Z"}"#;
            feed.on_message(bad, 2, &mut out).unwrap()
        };
        assert!(
            matches!(&action, Action::Send(m) if m[0].contains("unsubscribe") && m[1].contains("level2_batch"))
        );
        assert!(matches!(sink.last().unwrap().body, Body::Gap(_)));
        assert!(feed.book("SKL-USD").is_none());
    }

    #[test]
    fn garbage_asks_for_a_reconnect_and_errors_are_fatal() {
        let mut feed = capture_feed();
        let mut sink: Vec<Event> = Vec::new();
        let mut out = Publisher::new("coinbase", "x", &mut sink, FeedCounters::shared());
        let action = feed.on_message("{not json", 1, &mut out).unwrap();
        assert!(matches!(action, Action::Reconnect(_)));
        let err = feed
            .on_message(r#"{"type":"error","message":"Failed to subscribe","reason":"ABC-USD is not a valid product"}"#, 1, &mut out)
            .unwrap_err();
        assert!(err.to_string().contains("ABC-USD"), "{err}");
    }

    #[test]
    fn subscription_uses_level2_batch_heartbeat_and_matches() {
        let feed = capture_feed();
        let subs = feed.subscriptions();
        assert_eq!(subs.len(), 1);
        let v: Value = serde_json::from_str(&subs[0]).unwrap();
        assert_eq!(v["type"], "subscribe");
        assert_eq!(
            v["channels"],
            serde_json::json!(["level2_batch", "heartbeat", "matches"])
        );
        assert_eq!(v["product_ids"][0], "SKL-USD");
    }
}
