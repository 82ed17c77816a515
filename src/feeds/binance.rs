//! Binance market-data messages and the order-book synchronisation state machine,
//! shared by the raw-capture importer and a live websocket feed.
//!
//! Owns parsing of the combined-stream envelope `{"stream","data"}` (spot, USD-M and
//! COIN-M `depthUpdate`, `trade`, `bookTicker`) and of the REST `GET depth` snapshot, and
//! [`BookSync`]: Binance's documented procedure for turning diffs plus a snapshot into a
//! consistent book. Never does I/O: callers hand it parsed messages with their local
//! receive time and a sink.
//!
//! # Synchronisation (per symbol)
//! 1. Until a snapshot arrives, diffs are buffered (at most [`BookSync::MAX_BUFFERED`]).
//! 2. On a snapshot with `lastUpdateId = L`: its levels are emitted with
//!    [`Flags::SNAPSHOT`], then buffered diffs are bridged as Binance documents it:
//!    - spot: drop diffs with `u <= L`; the first kept one must have `U <= L + 1` (and so
//!      `u >= L + 1`);
//!    - futures (USD-M, COIN-M): drop diffs with `u < L`, so the diff ending exactly at
//!      `L` is applied (Binance: the first processed event has `U <= L` and `u >= L`; its
//!      sizes are absolute, so re-applying what the snapshot holds changes nothing); the
//!      first kept one must have `U <= L + 1` or `pu == L`;
//!
//!    then every buffered diff must continue the previous one.
//! 3. Continuity: spot `U == previous u + 1`, futures `pu == previous u`.
//! 4. Any break emits a [`Body::Gap`] (reason [`GapReason::VenueSeq`]; `missing` is the
//!    number of update ids skipped, spot only, since futures ids are not dense), and the
//!    book waits for a new snapshot: no book events until then. A capture without a later
//!    snapshot stays invalid from the break to its end.
//!
//! # Timestamps
//! `ts_event` is the message's `E` (event time) for diffs, `T` (trade time) for trades,
//! and `E` for futures snapshots; spot snapshots carry no time, so theirs is the local
//! receive time. Buffered diffs that bridge a snapshot are emitted when the snapshot
//! arrives and are stamped `ts_recv` = the snapshot's local time (the moment the book
//! became knowable), which keeps `ts_recv` non-decreasing; their `ts_event` stays theirs.

use std::sync::Arc;

use anyhow::{Context, Result};
use serde::Deserialize;

use crate::event::{
    Body, BookDelta, Event, EventSink, Fixed, Flags, Gap, GapReason, Side, Trade, UnixNanos,
};

/// Which Binance market a message belongs to; decides venue name and continuity rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Market {
    /// Spot (`binance`): diffs chain by `U == previous u + 1`.
    Spot,
    /// USD-M futures (`binance-usdm`): diffs chain by `pu == previous u`.
    UsdM,
    /// COIN-M futures (`binance-coinm`): like USD-M; symbols look like `BTCUSD_PERP`.
    CoinM,
}

impl Market {
    /// The ticktape venue name.
    pub fn venue(self) -> &'static str {
        match self {
            Market::Spot => "binance",
            Market::UsdM => "binance-usdm",
            Market::CoinM => "binance-coinm",
        }
    }

    /// Futures markets (which carry `pu`).
    pub fn is_futures(self) -> bool {
        !matches!(self, Market::Spot)
    }

    fn futures_for(symbol: &str) -> Market {
        if symbol.contains('_') {
            Market::CoinM
        } else {
            Market::UsdM
        }
    }
}

/// A `[price, quantity]` pair as Binance sends it (decimal strings).
pub type RawLevel<'a> = [&'a str; 2];

/// A `depthUpdate` (diff depth stream), borrowed from the JSON text.
#[derive(Debug, Deserialize)]
pub struct DepthUpdate<'a> {
    /// Event time, ms.
    #[serde(rename = "E")]
    pub event_time: i64,
    /// Symbol, upper case.
    #[serde(rename = "s", borrow)]
    pub symbol: &'a str,
    /// First update id in the event.
    #[serde(rename = "U")]
    pub first_id: u64,
    /// Final update id in the event.
    #[serde(rename = "u")]
    pub last_id: u64,
    /// Futures only: final update id of the previous event.
    #[serde(default)]
    pub pu: Option<u64>,
    /// Bid levels to set (quantity 0 deletes).
    #[serde(rename = "b", borrow)]
    pub bids: Vec<RawLevel<'a>>,
    /// Ask levels to set (quantity 0 deletes).
    #[serde(rename = "a", borrow)]
    pub asks: Vec<RawLevel<'a>>,
}

/// A `trade` stream message.
#[derive(Debug, Deserialize)]
pub struct TradeMsg<'a> {
    /// Trade time, ms.
    #[serde(rename = "T")]
    pub trade_time: i64,
    /// Symbol.
    #[serde(rename = "s", borrow)]
    pub symbol: &'a str,
    /// Trade id.
    #[serde(rename = "t")]
    pub id: u64,
    /// Price.
    #[serde(rename = "p", borrow)]
    pub price: &'a str,
    /// Quantity.
    #[serde(rename = "q", borrow)]
    pub qty: &'a str,
    /// Buyer is the maker: the aggressor sold.
    #[serde(rename = "m")]
    pub buyer_is_maker: bool,
    /// Futures only: `MARKET`, `INSURANCE_FUND`, `ADL`, `NA`.
    #[serde(rename = "X", default, borrow)]
    pub exec_type: Option<&'a str>,
}

/// A `bookTicker` message: best bid/ask at update id `u` (not an event in ticktape's
/// model; importers skip it, tests use it as an oracle).
#[derive(Debug, Deserialize)]
pub struct BookTicker<'a> {
    /// Book update id this BBO reflects.
    #[serde(rename = "u")]
    pub update_id: u64,
    /// Symbol.
    #[serde(rename = "s", borrow)]
    pub symbol: &'a str,
    /// Best bid price.
    #[serde(rename = "b", borrow)]
    pub bid_price: &'a str,
    /// Best bid quantity.
    #[serde(rename = "B", borrow)]
    pub bid_qty: &'a str,
    /// Best ask price.
    #[serde(rename = "a", borrow)]
    pub ask_price: &'a str,
    /// Best ask quantity.
    #[serde(rename = "A", borrow)]
    pub ask_qty: &'a str,
    /// Futures only: event type field, present as `"bookTicker"`.
    #[serde(rename = "e", default, borrow)]
    pub event_type: Option<&'a str>,
}

/// The REST `GET /api/v3/depth` (or futures `/fapi/v1/depth`, `/dapi/v1/depth`) response.
#[derive(Debug, Deserialize)]
pub struct DepthSnapshot<'a> {
    /// The book reflects every update up to and including this id.
    #[serde(rename = "lastUpdateId")]
    pub last_update_id: u64,
    /// Futures only: message output time, ms.
    #[serde(rename = "E", default)]
    pub event_time: Option<i64>,
    /// COIN-M only: the symbol.
    #[serde(default, borrow)]
    pub symbol: Option<&'a str>,
    /// Bid levels, best first.
    #[serde(borrow)]
    pub bids: Vec<RawLevel<'a>>,
    /// Ask levels, best first.
    #[serde(borrow)]
    pub asks: Vec<RawLevel<'a>>,
}

/// One parsed Binance message.
#[derive(Debug)]
pub enum Message<'a> {
    /// A diff-depth event.
    Depth(DepthUpdate<'a>),
    /// A trade.
    Trade(TradeMsg<'a>),
    /// A best bid/offer update.
    BookTicker(BookTicker<'a>),
    /// A REST depth snapshot.
    Snapshot(DepthSnapshot<'a>),
    /// A stream this module does not model (aggTrade, kline, ...), by stream name.
    Other(&'a str),
}

/// Parses one message: a combined-stream envelope, or a bare REST depth snapshot.
///
/// The envelope's `stream` must come before `data` (Binance always sends it so); the
/// stream suffix picks the payload type, so no intermediate JSON tree is built.
pub fn parse_message(json: &str) -> Result<Message<'_>, serde_json::Error> {
    if json.trim_start().starts_with("{\"lastUpdateId\"") {
        return serde_json::from_str(json).map(Message::Snapshot);
    }
    let env: Envelope<'_> = serde_json::from_str(json)?;
    Ok(env.0)
}

struct Envelope<'a>(Message<'a>);

impl<'de> Deserialize<'de> for Envelope<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{Error, IgnoredAny, MapAccess, Visitor};
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Envelope<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a Binance combined-stream envelope {\"stream\":...,\"data\":{...}}")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Envelope<'de>, A::Error> {
                let mut stream: Option<&'de str> = None;
                let mut msg: Option<Message<'de>> = None;
                while let Some(key) = map.next_key::<&'de str>()? {
                    match key {
                        "stream" => stream = Some(map.next_value()?),
                        "data" => {
                            let s = stream.ok_or_else(|| {
                                A::Error::custom("\"data\" before \"stream\" in envelope")
                            })?;
                            msg = Some(if s.contains("@depth") {
                                Message::Depth(map.next_value()?)
                            } else if s.ends_with("@trade") {
                                Message::Trade(map.next_value()?)
                            } else if s.ends_with("@bookTicker") {
                                Message::BookTicker(map.next_value()?)
                            } else {
                                map.next_value::<IgnoredAny>()?;
                                Message::Other(s)
                            });
                        }
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                msg.map(Envelope)
                    .ok_or_else(|| A::Error::missing_field("data"))
            }
        }
        d.deserialize_map(V)
    }
}

impl Message<'_> {
    /// The market this message reveals, if it tells: futures payloads carry fields spot
    /// ones lack (`pu`, `X`, `e` on bookTicker, `E` on snapshots).
    pub fn market(&self) -> Option<Market> {
        match self {
            Message::Depth(d) => Some(match d.pu {
                Some(_) => Market::futures_for(d.symbol),
                None => Market::Spot,
            }),
            Message::Trade(t) => Some(match t.exec_type {
                Some(_) => Market::futures_for(t.symbol),
                None => Market::Spot,
            }),
            Message::BookTicker(b) => Some(match b.event_type {
                Some(_) => Market::futures_for(b.symbol),
                None => Market::Spot,
            }),
            Message::Snapshot(s) => match (s.event_time, s.symbol) {
                (None, _) => Some(Market::Spot),
                (Some(_), Some(sym)) => Some(Market::futures_for(sym)),
                (Some(_), None) => Some(Market::UsdM),
            },
            Message::Other(_) => None,
        }
    }

    /// The symbol the message is about, when it names one (spot snapshots do not).
    pub fn symbol(&self) -> Option<&str> {
        match self {
            Message::Depth(d) => Some(d.symbol),
            Message::Trade(t) => Some(t.symbol),
            Message::BookTicker(b) => Some(b.symbol),
            Message::Snapshot(s) => s.symbol,
            Message::Other(_) => None,
        }
    }
}

/// Milliseconds to [`UnixNanos`].
pub fn ms_to_ns(ms: i64) -> UnixNanos {
    ms.saturating_mul(1_000_000)
}

fn parse_fixed(s: &str, what: &str) -> Result<Fixed> {
    s.parse::<Fixed>()
        .with_context(|| format!("bad {what} {s:?}"))
}

fn parse_levels(raw: &[RawLevel<'_>], what: &str) -> Result<Vec<(Fixed, Fixed)>> {
    raw.iter()
        .map(|[p, q]| Ok((parse_fixed(p, what)?, parse_fixed(q, what)?)))
        .collect()
}

/// A diff with its numbers parsed, owned so it can wait in the sync buffer.
#[derive(Clone, Debug)]
pub struct DepthDiff {
    /// First update id (`U`).
    pub first_id: u64,
    /// Final update id (`u`).
    pub last_id: u64,
    /// Futures: previous event's final id (`pu`).
    pub prev_last_id: Option<u64>,
    /// Exchange event time.
    pub ts_event: UnixNanos,
    /// Local receive time.
    pub ts_recv: UnixNanos,
    /// Bid `(price, new size)` pairs.
    pub bids: Vec<(Fixed, Fixed)>,
    /// Ask `(price, new size)` pairs.
    pub asks: Vec<(Fixed, Fixed)>,
}

impl DepthDiff {
    /// Parses prices and sizes of `update` received at `ts_recv`.
    pub fn from_update(update: &DepthUpdate<'_>, ts_recv: UnixNanos) -> Result<DepthDiff> {
        Ok(DepthDiff {
            first_id: update.first_id,
            last_id: update.last_id,
            prev_last_id: update.pu,
            ts_event: ms_to_ns(update.event_time),
            ts_recv,
            bids: parse_levels(&update.bids, "bid level")?,
            asks: parse_levels(&update.asks, "ask level")?,
        })
    }

    /// The venue id this diff says precedes it: `pu` on futures, `U - 1` on spot.
    pub fn prev_venue_seq(&self) -> u64 {
        self.prev_last_id
            .unwrap_or_else(|| self.first_id.saturating_sub(1))
    }
}

/// Turns a trade message into an event (pub_seq left 0 for the caller's sequencer).
pub fn trade_event(
    venue: &Arc<str>,
    symbol: &Arc<str>,
    t: &TradeMsg<'_>,
    ts_recv: UnixNanos,
) -> Result<Event> {
    Ok(Event {
        venue: venue.clone(),
        symbol: symbol.clone(),
        ts_event: ms_to_ns(t.trade_time),
        ts_recv,
        venue_seq: Some(t.id),
        prev_venue_seq: t.id.checked_sub(1),
        pub_seq: 0,
        body: Body::Trade(Trade {
            price: parse_fixed(t.price, "trade price")?,
            size: parse_fixed(t.qty, "trade quantity")?,
            aggressor: if t.buyer_is_maker {
                Side::Ask
            } else {
                Side::Bid
            },
            trade_id: compact_str::ToCompactString::to_compact_string(&t.id),
        }),
    })
}

/// Where the book of one symbol stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyncState {
    /// No usable snapshot yet (start, or after a break): diffs are buffered.
    AwaitingSnapshot,
    /// Snapshot `L` applied; the next diff must straddle `L + 1`.
    FirstDiff {
        /// The snapshot's `lastUpdateId`.
        snapshot_id: u64,
    },
    /// In sync; the next diff must continue `last_id`.
    Live {
        /// Final update id of the last applied diff.
        last_id: u64,
    },
}

/// Counters of one symbol's synchronisation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncStats {
    /// Snapshots applied.
    pub snapshots: u64,
    /// Snapshots ignored because the book was already past them.
    pub stale_snapshots: u64,
    /// Diffs applied to the book.
    pub diffs_applied: u64,
    /// Buffered diffs dropped because a snapshot already covered them (spot `u <= L`,
    /// futures `u < L`).
    pub diffs_covered: u64,
    /// Diffs dropped while no snapshot could be used (buffer overflow or end of input).
    pub diffs_unsynced: u64,
    /// Sequence breaks (each emitted one gap).
    pub breaks: u64,
}

/// Binance's book synchronisation for one symbol: feed it diffs and snapshots with their
/// local receive time; it emits book-delta and gap events into a sink.
#[derive(Debug)]
pub struct BookSync {
    market: Market,
    venue: Arc<str>,
    symbol: Arc<str>,
    state: SyncState,
    buffer: std::collections::VecDeque<DepthDiff>,
    stats: SyncStats,
}

impl BookSync {
    /// Most diffs kept while waiting for a snapshot; older ones are dropped (they could
    /// only bridge a snapshot taken long after them, which Binance's procedure forbids).
    pub const MAX_BUFFERED: usize = 10_000;

    /// A book waiting for its first snapshot.
    pub fn new(market: Market, venue: Arc<str>, symbol: Arc<str>) -> BookSync {
        BookSync {
            market,
            venue,
            symbol,
            state: SyncState::AwaitingSnapshot,
            buffer: Default::default(),
            stats: SyncStats::default(),
        }
    }

    /// Current state.
    pub fn state(&self) -> &SyncState {
        &self.state
    }

    /// True when a live feed should fetch a REST snapshot now.
    pub fn needs_snapshot(&self) -> bool {
        self.state == SyncState::AwaitingSnapshot
    }

    /// Counters so far.
    pub fn stats(&self) -> &SyncStats {
        &self.stats
    }

    /// Diffs currently buffered awaiting a snapshot.
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    /// Declares the end of input: buffered diffs are counted as unsynced and dropped.
    pub fn finish(&mut self) {
        self.stats.diffs_unsynced += self.buffer.len() as u64;
        self.buffer.clear();
    }

    /// Handles one diff received at `diff.ts_recv`.
    pub fn on_diff(&mut self, diff: DepthDiff, sink: &mut dyn EventSink) -> Result<()> {
        match self.state {
            SyncState::AwaitingSnapshot => {
                if self.buffer.len() >= Self::MAX_BUFFERED {
                    self.buffer.pop_front();
                    self.stats.diffs_unsynced += 1;
                }
                self.buffer.push_back(diff);
                Ok(())
            }
            SyncState::FirstDiff { snapshot_id } => {
                if self.covered_by_snapshot(&diff, snapshot_id) {
                    self.stats.diffs_covered += 1;
                    return Ok(());
                }
                if self.straddles(&diff, snapshot_id) {
                    let ts = diff.ts_recv;
                    self.apply(&diff, ts, sink)
                } else {
                    self.break_sequence(snapshot_id, diff, sink)
                }
            }
            SyncState::Live { last_id } => {
                let continues = match diff.prev_last_id {
                    Some(pu) if self.market.is_futures() => pu == last_id,
                    _ => diff.first_id == last_id + 1,
                };
                if continues {
                    let ts = diff.ts_recv;
                    self.apply(&diff, ts, sink)
                } else if diff.last_id <= last_id {
                    // A replayed old diff (reconnect overlap): already in the book.
                    self.stats.diffs_covered += 1;
                    Ok(())
                } else {
                    self.break_sequence(last_id, diff, sink)
                }
            }
        }
    }

    /// Handles one REST snapshot received at `ts_recv`.
    pub fn on_snapshot(
        &mut self,
        snap: &DepthSnapshot<'_>,
        ts_recv: UnixNanos,
        sink: &mut dyn EventSink,
    ) -> Result<()> {
        let l = snap.last_update_id;
        if let SyncState::Live { last_id } = self.state
            && l <= last_id
        {
            self.stats.stale_snapshots += 1;
            return Ok(());
        }
        let bids = parse_levels(&snap.bids, "snapshot bid")?;
        let asks = parse_levels(&snap.asks, "snapshot ask")?;
        let ts_event = snap.event_time.map(ms_to_ns).unwrap_or(ts_recv);
        let total = bids.len() + asks.len();
        let levels = bids
            .iter()
            .map(|l| (Side::Bid, l))
            .chain(asks.iter().map(|l| (Side::Ask, l)));
        for (i, (side, &(price, size))) in levels.enumerate() {
            let mut flags = Flags::SNAPSHOT;
            if i + 1 == total {
                flags = flags.with(Flags::LAST);
            }
            sink.accept(self.event(ts_event, ts_recv, Some(l), None, side, price, size, flags))?;
        }
        self.stats.snapshots += 1;
        self.state = SyncState::FirstDiff { snapshot_id: l };
        // Bridge with what was buffered, stamped with the snapshot's receive time.
        let buffered: Vec<DepthDiff> = self.buffer.drain(..).collect();
        for mut diff in buffered {
            diff.ts_recv = ts_recv;
            self.on_diff(diff, sink)?;
        }
        Ok(())
    }

    /// True when snapshot `snapshot_id` already holds everything `diff` says: spot
    /// "drop any event where `u <= lastUpdateId`", futures "drop any event where
    /// `u < lastUpdateId`" (Binance's "How to manage a local order book correctly").
    fn covered_by_snapshot(&self, diff: &DepthDiff, snapshot_id: u64) -> bool {
        if self.market.is_futures() {
            diff.last_id < snapshot_id
        } else {
            diff.last_id <= snapshot_id
        }
    }

    /// True when `diff`, not covered by the snapshot, can be the first to apply after it:
    /// `U <= L + 1` (nothing between the snapshot and the diff is missing), or on futures
    /// `pu == L`.
    fn straddles(&self, diff: &DepthDiff, snapshot_id: u64) -> bool {
        diff.first_id <= snapshot_id + 1
            || (self.market.is_futures() && diff.prev_last_id == Some(snapshot_id))
    }

    fn break_sequence(
        &mut self,
        expected_after: u64,
        diff: DepthDiff,
        sink: &mut dyn EventSink,
    ) -> Result<()> {
        let missing = if self.market.is_futures() {
            None
        } else {
            diff.first_id.checked_sub(expected_after + 1)
        };
        self.stats.breaks += 1;
        sink.accept(Event {
            venue: self.venue.clone(),
            symbol: self.symbol.clone(),
            ts_event: diff.ts_event,
            ts_recv: diff.ts_recv,
            venue_seq: Some(diff.last_id),
            prev_venue_seq: Some(diff.prev_venue_seq()),
            pub_seq: 0,
            body: Body::Gap(Gap {
                reason: GapReason::VenueSeq,
                missing,
                publisher: String::new(),
            }),
        })?;
        self.state = SyncState::AwaitingSnapshot;
        // The breaking diff may still bridge the next snapshot.
        self.buffer.push_back(diff);
        Ok(())
    }

    fn apply(
        &mut self,
        diff: &DepthDiff,
        ts_recv: UnixNanos,
        sink: &mut dyn EventSink,
    ) -> Result<()> {
        let total = diff.bids.len() + diff.asks.len();
        let prev = Some(diff.prev_venue_seq());
        let levels = diff
            .bids
            .iter()
            .map(|l| (Side::Bid, l))
            .chain(diff.asks.iter().map(|l| (Side::Ask, l)));
        for (i, (side, &(price, size))) in levels.enumerate() {
            let flags = if i + 1 == total {
                Flags::LAST
            } else {
                Flags::default()
            };
            sink.accept(self.event(
                diff.ts_event,
                ts_recv,
                Some(diff.last_id),
                prev,
                side,
                price,
                size,
                flags,
            ))?;
        }
        self.stats.diffs_applied += 1;
        self.state = SyncState::Live {
            last_id: diff.last_id,
        };
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn event(
        &self,
        ts_event: UnixNanos,
        ts_recv: UnixNanos,
        venue_seq: Option<u64>,
        prev_venue_seq: Option<u64>,
        side: Side,
        price: Fixed,
        size: Fixed,
        flags: Flags,
    ) -> Event {
        Event {
            venue: self.venue.clone(),
            symbol: self.symbol.clone(),
            ts_event,
            ts_recv,
            venue_seq,
            prev_venue_seq,
            pub_seq: 0,
            body: Body::Book(BookDelta {
                side,
                price,
                size,
                flags,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::book::L2Book;

    fn diff(first: u64, last: u64, ts: i64, bid: (&str, &str)) -> DepthDiff {
        DepthDiff {
            first_id: first,
            last_id: last,
            prev_last_id: None,
            ts_event: ts,
            ts_recv: ts,
            bids: vec![(bid.0.parse().unwrap(), bid.1.parse().unwrap())],
            asks: vec![],
        }
    }

    fn snapshot_json(l: u64) -> String {
        format!(r#"{{"lastUpdateId":{l},"bids":[["100.0","1.0"]],"asks":[["101.0","2.0"]]}}"#)
    }

    fn book_of(events: &[Event]) -> L2Book {
        let mut book = L2Book::new();
        for e in events {
            if let Body::Book(d) = &e.body {
                book.apply(d);
            }
        }
        book
    }

    #[test]
    fn parses_envelopes_by_stream_without_a_json_tree() {
        let depth = r#"{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","E":1723161255208,"s":"BTCUSDT","U":5,"u":7,"b":[["1.0","0"]],"a":[]}}"#;
        match parse_message(depth).unwrap() {
            Message::Depth(d) => {
                assert_eq!((d.first_id, d.last_id, d.symbol), (5, 7, "BTCUSDT"));
                assert_eq!(d.bids, vec![["1.0", "0"]]);
            }
            other => panic!("{other:?}"),
        }
        let bt = r#"{"stream":"btcusdt@bookTicker","data":{"u":9,"s":"BTCUSDT","b":"1","B":"2","a":"3","A":"4"}}"#;
        let m = parse_message(bt).unwrap();
        assert_eq!(m.market(), Some(Market::Spot));
        let kline = r#"{"stream":"btcusdt@kline_1m","data":{"k":{"x":1}}}"#;
        assert!(matches!(
            parse_message(kline).unwrap(),
            Message::Other("btcusdt@kline_1m")
        ));
        assert!(parse_message(r#"{"data":{},"stream":"x@trade"}"#).is_err());
        assert!(parse_message("not json").is_err());
    }

    #[test]
    fn buffered_diffs_bridge_a_late_snapshot_stamped_at_its_receive_time() {
        let mut out: Vec<Event> = Vec::new();
        let mut sync = BookSync::new(Market::Spot, Arc::from("binance"), Arc::from("X"));
        sync.on_diff(diff(1, 4, 10, ("99.0", "1")), &mut out)
            .unwrap();
        sync.on_diff(diff(5, 8, 20, ("98.0", "3")), &mut out)
            .unwrap();
        sync.on_diff(diff(9, 9, 30, ("100.0", "0")), &mut out)
            .unwrap();
        assert!(out.is_empty(), "nothing before the snapshot");
        let json = snapshot_json(6);
        let Message::Snapshot(snap) = parse_message(&json).unwrap() else {
            panic!()
        };
        sync.on_snapshot(&snap, 40, &mut out).unwrap();
        assert_eq!(sync.stats().diffs_covered, 1);
        assert_eq!(sync.stats().diffs_applied, 2);
        assert!(out.iter().all(|e| e.ts_recv == 40));
        let book = book_of(&out);
        assert_eq!(book.best_bid().unwrap().0.to_string(), "98.0");
        assert_eq!(sync.state(), &SyncState::Live { last_id: 9 });
    }

    #[test]
    fn sequence_break_emits_gap_and_waits_for_next_snapshot() {
        let mut out: Vec<Event> = Vec::new();
        let mut sync = BookSync::new(Market::Spot, Arc::from("binance"), Arc::from("X"));
        let json = snapshot_json(10);
        let Message::Snapshot(snap) = parse_message(&json).unwrap() else {
            panic!()
        };
        sync.on_snapshot(&snap, 1, &mut out).unwrap();
        sync.on_diff(diff(11, 12, 2, ("99", "1")), &mut out)
            .unwrap();
        sync.on_diff(diff(16, 17, 3, ("98", "1")), &mut out)
            .unwrap();
        let gap = out.last().unwrap();
        match &gap.body {
            Body::Gap(g) => {
                assert_eq!(g.reason, GapReason::VenueSeq);
                assert_eq!(g.missing, Some(3));
            }
            other => panic!("{other:?}"),
        }
        let before = out.len();
        sync.on_diff(diff(18, 19, 4, ("97", "1")), &mut out)
            .unwrap();
        assert_eq!(out.len(), before, "no book events while out of sync");
        assert!(sync.needs_snapshot());
    }

    #[test]
    fn first_diff_not_straddling_snapshot_is_a_gap() {
        let mut out: Vec<Event> = Vec::new();
        let mut sync = BookSync::new(Market::Spot, Arc::from("binance"), Arc::from("X"));
        sync.on_diff(diff(20, 25, 1, ("99", "1")), &mut out)
            .unwrap();
        let json = snapshot_json(10);
        let Message::Snapshot(snap) = parse_message(&json).unwrap() else {
            panic!()
        };
        sync.on_snapshot(&snap, 2, &mut out).unwrap();
        assert_eq!(sync.stats().breaks, 1);
        assert!(matches!(out.last().unwrap().body, Body::Gap(_)));
    }

    fn futures_diff(first: u64, last: u64, pu: u64, bid: (&str, &str)) -> DepthDiff {
        DepthDiff {
            prev_last_id: Some(pu),
            ..diff(first, last, 10, bid)
        }
    }

    fn snapshot(sync: &mut BookSync, l: u64, out: &mut Vec<Event>) {
        let json = snapshot_json(l);
        let Message::Snapshot(snap) = parse_message(&json).unwrap() else {
            panic!()
        };
        sync.on_snapshot(&snap, 40, out).unwrap();
    }

    #[test]
    fn futures_apply_the_diff_whose_u_equals_the_snapshot_id() {
        // USD-M: "drop any event where u < lastUpdateId; the first processed event has
        // U <= lastUpdateId AND u >= lastUpdateId". Its sizes are applied.
        let mut out: Vec<Event> = Vec::new();
        let mut sync = BookSync::new(Market::UsdM, Arc::from("binance-usdm"), Arc::from("X"));
        sync.on_diff(futures_diff(90, 95, 89, ("99.0", "7")), &mut out)
            .unwrap();
        sync.on_diff(futures_diff(96, 100, 95, ("100.0", "3")), &mut out)
            .unwrap();
        sync.on_diff(futures_diff(104, 110, 100, ("98.0", "1")), &mut out)
            .unwrap();
        snapshot(&mut sync, 100, &mut out);
        assert_eq!(
            sync.stats().diffs_covered,
            1,
            "only u = 95 < 100 is dropped"
        );
        assert_eq!(sync.stats().diffs_applied, 2);
        assert_eq!(sync.stats().breaks, 0);
        assert_eq!(sync.state(), &SyncState::Live { last_id: 110 });
        let book = book_of(&out);
        let (price, size) = book.best_bid().unwrap();
        assert_eq!(
            (price.to_string(), size.to_string()),
            ("100.0".into(), "3".into())
        );
        // Arriving after the snapshot, the u = L diff is applied as well.
        let mut out: Vec<Event> = Vec::new();
        let mut sync = BookSync::new(Market::UsdM, Arc::from("binance-usdm"), Arc::from("X"));
        snapshot(&mut sync, 100, &mut out);
        sync.on_diff(futures_diff(96, 100, 95, ("100.0", "3")), &mut out)
            .unwrap();
        assert_eq!(sync.stats().diffs_applied, 1);
        assert_eq!(sync.state(), &SyncState::Live { last_id: 100 });
    }

    #[test]
    fn spot_drops_the_diff_whose_u_equals_the_snapshot_id_and_needs_l_plus_1() {
        let mut out: Vec<Event> = Vec::new();
        let mut sync = BookSync::new(Market::Spot, Arc::from("binance"), Arc::from("X"));
        sync.on_diff(diff(96, 100, 10, ("100.0", "3")), &mut out)
            .unwrap();
        sync.on_diff(diff(101, 104, 10, ("98.0", "1")), &mut out)
            .unwrap();
        snapshot(&mut sync, 100, &mut out);
        assert_eq!(sync.stats().diffs_covered, 1);
        assert_eq!(sync.stats().diffs_applied, 1);
        assert_eq!(sync.state(), &SyncState::Live { last_id: 104 });
        // A futures-style first diff (U <= L, u = L) is not enough on spot: it is covered,
        // and a first diff starting past L + 1 is a break.
        let mut out: Vec<Event> = Vec::new();
        let mut sync = BookSync::new(Market::Spot, Arc::from("binance"), Arc::from("X"));
        snapshot(&mut sync, 100, &mut out);
        sync.on_diff(diff(103, 104, 10, ("98.0", "1")), &mut out)
            .unwrap();
        assert_eq!(sync.stats().breaks, 1);
    }
}
