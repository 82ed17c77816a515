//! Live venue connectors over websockets (Kraken, Coinbase, Binance), normalizing onto the bus.
//!
//! Owns the connection to each venue and the translation of its messages into
//! [`crate::event::Event`]s pushed into an [`EventSink`]. Never writes storage and never
//! opens bus sockets: the caller's sink does that.
//!
//! # Layout
//! - [`ws`]: the blocking client loop (connect, subscribe, read, reconnect with backoff,
//!   stop flag) and the [`Protocol`] trait a venue implements;
//! - [`publish`]: [`Publisher`] stamps `pub_seq` and counts into [`FeedCounters`];
//! - [`kraken`], [`coinbase`], [`binance`]: the venue protocols (books, checksums,
//!   sequences, REST snapshots, trades);
//! - [`capture`]: reader for cryptofeed capture files, used by tests and the replay server;
//! - `testserver` (tests only): a local websocket server replaying a capture over real TCP;
//! - `binance_testserver` (tests only): the Binance capture reader and a local REST depth
//!   endpoint.
//!
//! A break (checksum mismatch, crossed or unreadable book, lost connection) is always
//! published as a `Gap` event for the symbol before anything else, and the broken book
//! is dropped until the venue sends a new snapshot, so no subscriber ever rebuilds a
//! book from deltas that do not fit. See `docs/FEEDS.md`.

pub mod binance;
#[cfg(test)]
mod binance_testserver;
pub mod capture;
pub mod coinbase;
pub mod kraken;
pub mod publish;
#[cfg(test)]
mod testserver;
pub mod ws;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use crate::event::EventSink;
use crate::feeds::binance::Market;

pub use publish::{FeedCounters, FeedSink, FeedStats, PlainSink, Publisher, TICK_EVERY};
pub use ws::{Action, Backoff, FeedError, Protocol};

/// A venue with a live connector.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Venue {
    /// Coinbase Exchange (`level2_batch`, `matches`, `heartbeat`).
    Coinbase,
    /// Kraken spot, websocket API v1 (`book`, `trade`).
    Kraken,
    /// Binance spot (`depth@100ms`, `trade`, REST `/api/v3/depth`).
    Binance,
    /// Binance USD-M futures (`depth@0ms`, `trade`, REST `/fapi/v1/depth`).
    BinanceUsdM,
    /// Binance COIN-M futures (`depth@0ms`, `trade`, REST `/dapi/v1/depth`).
    BinanceCoinM,
}

impl Venue {
    /// The venue name used in events and topics.
    pub fn name(self) -> &'static str {
        match self {
            Venue::Coinbase => "coinbase",
            Venue::Kraken => "kraken",
            Venue::Binance => Market::Spot.venue(),
            Venue::BinanceUsdM => Market::UsdM.venue(),
            Venue::BinanceCoinM => Market::CoinM.venue(),
        }
    }

    /// The Binance market of a Binance venue.
    pub fn binance_market(self) -> Option<Market> {
        match self {
            Venue::Binance => Some(Market::Spot),
            Venue::BinanceUsdM => Some(Market::UsdM),
            Venue::BinanceCoinM => Some(Market::CoinM),
            Venue::Coinbase | Venue::Kraken => None,
        }
    }

    /// The venue's public websocket endpoint.
    pub fn default_url(self) -> &'static str {
        match self {
            Venue::Coinbase => coinbase::DEFAULT_URL,
            Venue::Kraken => kraken::DEFAULT_URL,
            Venue::Binance => binance::default_ws_url(Market::Spot),
            Venue::BinanceUsdM => binance::default_ws_url(Market::UsdM),
            Venue::BinanceCoinM => binance::default_ws_url(Market::CoinM),
        }
    }
}

impl fmt::Display for Venue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Venue {
    type Err = FeedError;

    fn from_str(s: &str) -> Result<Venue, FeedError> {
        match s.to_ascii_lowercase().as_str() {
            "coinbase" => Ok(Venue::Coinbase),
            "kraken" => Ok(Venue::Kraken),
            "binance" => Ok(Venue::Binance),
            "binance-usdm" => Ok(Venue::BinanceUsdM),
            "binance-coinm" => Ok(Venue::BinanceCoinM),
            other => Err(FeedError::Options(format!(
                "no live feed for venue {other:?}; use coinbase, kraken, binance, \
                 binance-usdm or binance-coinm"
            ))),
        }
    }
}

/// What to subscribe to and how to connect.
#[derive(Clone, Debug)]
pub struct FeedOptions {
    /// Endpoint override (tests point it at a local replay server); `None` is the
    /// venue's public endpoint.
    pub url: Option<String>,
    /// Binance only: REST base URL for depth snapshots (tests point it at a
    /// local depth endpoint); `None` is the market's public one.
    pub rest_url: Option<String>,
    /// Symbols verbatim as the venue spells them (`XBT/USD`, `BTC-USD`, `BTCUSDT`).
    pub symbols: Vec<String>,
    /// Kraken book depth per side (10, 25, 100, 500 or 1000); Coinbase's
    /// `level2_batch` is always full depth and ignores it.
    pub depth: usize,
    /// Also subscribe to trades.
    pub trades: bool,
    /// Reconnect delays.
    pub backoff: Backoff,
    /// Limit for TCP connect and the TLS/websocket handshakes.
    pub connect_timeout: Duration,
    /// Reconnect when nothing arrived for this long (both venues send heartbeats every
    /// second, so silence means a dead link).
    pub idle_timeout: Duration,
    /// Live counters, shared with whoever shows a status line.
    pub counters: Arc<FeedCounters>,
}

impl FeedOptions {
    /// Defaults for `symbols`: public endpoint, depth 100, trades on, 0.5 s → 30 s
    /// backoff, 10 s connect timeout, 15 s idle timeout, fresh counters.
    pub fn new(symbols: &[&str]) -> FeedOptions {
        FeedOptions {
            url: None,
            rest_url: None,
            symbols: symbols.iter().map(|s| s.to_string()).collect(),
            depth: 100,
            trades: true,
            backoff: Backoff::default(),
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(15),
            counters: FeedCounters::shared(),
        }
    }
}

/// The venue protocol for `venue` with `opts`, validated.
pub fn protocol(venue: Venue, opts: &FeedOptions) -> Result<Box<dyn Protocol>, FeedError> {
    Ok(match venue {
        Venue::Kraken => Box::new(kraken::Kraken::new(&opts.symbols, opts.depth, opts.trades)?),
        Venue::Coinbase => Box::new(coinbase::Coinbase::new(&opts.symbols, opts.trades)?),
        Venue::Binance | Venue::BinanceUsdM | Venue::BinanceCoinM => {
            let market = venue
                .binance_market()
                .ok_or_else(|| FeedError::Options(format!("{venue} has no Binance market")))?;
            Box::new(binance::Binance::new(
                market,
                &opts.symbols,
                opts.trades,
                opts.rest_url.clone(),
                opts.connect_timeout,
            )?)
        }
    })
}

/// Connects to `venue` and pushes normalized events into `sink` until `stop` is raised
/// (seen within 100 ms) or a fatal error: the sink refusing an event, or the venue
/// rejecting the subscription. Connection problems are retried forever with backoff.
/// Returns the final counters.
pub fn run_feed(
    venue: Venue,
    opts: &FeedOptions,
    sink: &mut dyn EventSink,
    stop: Arc<AtomicBool>,
) -> Result<FeedStats, FeedError> {
    run_feed_ticking(venue, opts, &mut PlainSink(sink), stop)
}

/// [`run_feed`] for a sink that also gets [`FeedSink::tick`] about every 100 ms in the
/// feed's thread, e.g. to send bus heartbeats while the venue is quiet or unreachable.
pub fn run_feed_ticking(
    venue: Venue,
    opts: &FeedOptions,
    sink: &mut dyn FeedSink,
    stop: Arc<AtomicBool>,
) -> Result<FeedStats, FeedError> {
    let mut protocol = protocol(venue, opts)?;
    let url = opts
        .url
        .clone()
        .unwrap_or_else(|| venue.default_url().to_string());
    let config = ws::WsConfig {
        url: url.clone(),
        connect_timeout: opts.connect_timeout,
        idle_timeout: opts.idle_timeout,
        backoff: opts.backoff.clone(),
    };
    let mut out = Publisher::new(venue.name(), &url, sink, opts.counters.clone());
    ws::run(&config, protocol.as_mut(), &mut out, &opts.counters, &stop)?;
    Ok(opts.counters.snapshot())
}

/// Integration-style tests: real feeds against [`testserver::ReplayServer`] over TCP.
#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::atomic::Ordering;
    use std::thread;
    use std::time::Instant;

    use super::capture::{read_capture, received, sample_path};
    use super::testserver::{ReplayOptions, ReplayServer};
    use super::*;
    use crate::book::L2Book;
    use crate::event::{Body, Event, Flags, GapReason, Side, UnixNanos};

    const KRAKEN_PAIRS: [&str; 10] = [
        "WAVES/EUR",
        "XMR/USD",
        "KSM/XBT",
        "GRT/ETH",
        "SC/EUR",
        "ETH/CHF",
        "OCEAN/XBT",
        "OMG/USD",
        "XBT/CHF",
        "ADA/XBT",
    ];

    fn messages(file: &str) -> Vec<(UnixNanos, String)> {
        received(&read_capture(&sample_path(file)).unwrap())
    }

    fn test_options(url: String, symbols: &[&str]) -> FeedOptions {
        FeedOptions {
            url: Some(url),
            depth: 1000,
            backoff: Backoff {
                initial: Duration::from_millis(10),
                max: Duration::from_millis(100),
            },
            connect_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(20),
            ..FeedOptions::new(symbols)
        }
    }

    /// Runs the feed in a thread until `done` holds (or 60 s pass), then stops it.
    fn run_until(
        venue: Venue,
        opts: &FeedOptions,
        done: impl Fn(&FeedStats) -> bool,
    ) -> (FeedStats, Vec<Event>) {
        let stop = Arc::new(AtomicBool::new(false));
        let handle = {
            let (opts, stop) = (opts.clone(), stop.clone());
            thread::spawn(move || {
                let mut sink: Vec<Event> = Vec::new();
                let stats = run_feed(venue, &opts, &mut sink, stop);
                (stats, sink)
            })
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !done(&opts.counters.snapshot()) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        let stopped_at = Instant::now();
        stop.store(true, Ordering::SeqCst);
        let (stats, sink) = handle.join().unwrap();
        assert!(
            stopped_at.elapsed() < Duration::from_secs(2),
            "stop flag took {:?}",
            stopped_at.elapsed()
        );
        (stats.unwrap(), sink)
    }

    /// Books as a subscriber rebuilds them: deltas applied, a gap clears the symbol.
    fn downstream_books(events: &[Event]) -> HashMap<String, L2Book> {
        let mut books: HashMap<String, L2Book> = HashMap::new();
        for event in events {
            let book = books.entry(event.symbol.to_string()).or_default();
            match &event.body {
                Body::Book(delta) => book.apply(delta),
                Body::Gap(_) => book.clear(),
                _ => {}
            }
        }
        books
    }

    /// `(price, size)` strings of one side, best first.
    type Side2 = Vec<(String, String)>;

    fn levels(book: &L2Book) -> (Side2, Side2) {
        let side = |s| {
            book.levels(s)
                .map(|(p, q)| (p.to_string(), q.to_string()))
                .collect()
        };
        (side(Side::Bid), side(Side::Ask))
    }

    /// The books a clean offline pass over the capture ends with.
    fn offline_kraken_books() -> HashMap<String, L2Book> {
        let mut sink: Vec<Event> = Vec::new();
        let pairs: Vec<String> = KRAKEN_PAIRS.iter().map(|s| s.to_string()).collect();
        let mut feed = kraken::Kraken::new(&pairs, 1000, true).unwrap();
        let mut out = Publisher::new("kraken", "capture", &mut sink, FeedCounters::shared());
        for (ts, text) in messages("KRAKEN.ws.50.0") {
            feed.on_message(&text, ts, &mut out).unwrap();
        }
        KRAKEN_PAIRS
            .iter()
            .map(|p| (p.to_string(), feed.book(p).unwrap().clone()))
            .collect()
    }

    #[test]
    fn kraken_feed_over_a_real_socket_verifies_every_checksum() {
        let capture = messages("KRAKEN.ws.50.0");
        let total = capture.len() as u64;
        let server = ReplayServer::start(capture, ReplayOptions::default()).unwrap();
        let opts = test_options(server.url(), &KRAKEN_PAIRS);
        let (stats, events) = run_until(Venue::Kraken, &opts, |s| s.messages >= total);
        assert_eq!(stats.messages, total);
        assert_eq!(stats.checksum_ok, 4269);
        assert_eq!(stats.checksum_failures, 0);
        assert_eq!((stats.reconnects, stats.gaps, stats.malformed), (0, 0, 0));
        assert_eq!(stats.events, events.len() as u64);
        let sent = server.client_messages();
        assert!(
            sent[0].contains("\"depth\":1000") && sent[0].contains("XBT/CHF"),
            "{sent:?}"
        );
        let books = downstream_books(&events);
        let offline = offline_kraken_books();
        for pair in KRAKEN_PAIRS {
            assert_eq!(levels(&books[pair]), levels(&offline[pair]), "{pair}");
            assert_eq!(
                kraken::book_checksum(&books[pair]),
                kraken::book_checksum(&offline[pair])
            );
        }
    }

    #[test]
    fn kraken_drop_mid_stream_reconnects_gaps_and_rebuilds_from_new_snapshots() {
        let capture = messages("KRAKEN.ws.50.0");
        let total = capture.len() as u64;
        let cut = 2000usize;
        // How many checksums the first connection can verify before the cut.
        let before_cut = {
            let pairs: Vec<String> = KRAKEN_PAIRS.iter().map(|s| s.to_string()).collect();
            let mut feed = kraken::Kraken::new(&pairs, 1000, true).unwrap();
            let counters = FeedCounters::shared();
            let mut sink: Vec<Event> = Vec::new();
            let mut out = Publisher::new("kraken", "capture", &mut sink, counters.clone());
            for (ts, text) in &capture[..cut] {
                feed.on_message(text, *ts, &mut out).unwrap();
            }
            counters.snapshot().checksum_ok
        };
        let server = ReplayServer::start(
            capture,
            ReplayOptions {
                speed: None,
                drop_after: vec![cut],
            },
        )
        .unwrap();
        let opts = test_options(server.url(), &KRAKEN_PAIRS);
        let (stats, events) = run_until(Venue::Kraken, &opts, |s| s.messages >= cut as u64 + total);
        assert_eq!(server.connections(), 2, "{:?}", opts.counters.last_error());
        assert_eq!(stats.reconnects, 1);
        assert_eq!(stats.messages, cut as u64 + total);
        assert_eq!(stats.checksum_ok, before_cut + 4269);
        assert_eq!(stats.checksum_failures, 0);
        // The client subscribed twice, once per connection.
        assert_eq!(
            server
                .client_messages()
                .iter()
                .filter(|m| m.contains("\"book\""))
                .count(),
            2
        );
        // One resync gap per pair, and after it the pair's next book event is a snapshot.
        let gaps: Vec<usize> = events
            .iter()
            .enumerate()
            .filter(|(_, e)| matches!(&e.body, Body::Gap(g) if g.reason == GapReason::Resync))
            .map(|(i, _)| i)
            .collect();
        assert_eq!(gaps.len(), KRAKEN_PAIRS.len());
        assert_eq!(stats.gaps, gaps.len() as u64);
        for &i in &gaps {
            let symbol = &events[i].symbol;
            let next = events[i + 1..]
                .iter()
                .find(|e| &e.symbol == symbol && matches!(e.body, Body::Book(_)))
                .unwrap();
            let Body::Book(delta) = &next.body else {
                unreachable!()
            };
            assert!(delta.flags.contains(Flags::SNAPSHOT), "{symbol}: {delta:?}");
        }
        // pub_seq stays contiguous per topic across the reconnect.
        let mut last: HashMap<(String, &'static str), u64> = HashMap::new();
        for e in &events {
            let seq = last
                .entry((e.symbol.to_string(), e.kind().name()))
                .or_insert(0);
            assert_eq!(e.pub_seq, *seq + 1);
            *seq = e.pub_seq;
        }
        let books = downstream_books(&events);
        let offline = offline_kraken_books();
        for pair in KRAKEN_PAIRS {
            assert!(books[pair].is_consistent());
            assert_eq!(levels(&books[pair]), levels(&offline[pair]), "{pair}");
        }
    }

    #[test]
    fn coinbase_feed_over_a_real_socket_publishes_books_and_trades() {
        let capture = messages("COINBASE.ws.28.0");
        let total = capture.len() as u64;
        let server = ReplayServer::start(capture, ReplayOptions::default()).unwrap();
        let products = [
            "SKL-USD", "SKL-BTC", "BAND-GBP", "NMR-EUR", "BAND-BTC", "YFI-BTC", "DASH-BTC",
            "NU-GBP", "CRV-EUR", "SKL-GBP",
        ];
        let opts = test_options(server.url(), &products);
        let (stats, events) = run_until(Venue::Coinbase, &opts, |s| s.messages >= total);
        assert_eq!(stats.messages, total);
        assert_eq!((stats.reconnects, stats.gaps, stats.malformed), (0, 0, 0));
        let trades = events
            .iter()
            .filter(|e| matches!(e.body, Body::Trade(_)))
            .count();
        assert_eq!(trades, 97);
        let books = downstream_books(&events);
        for product in products {
            assert!(books[product].is_consistent() && !books[product].is_crossed());
        }
        assert!(server.client_messages()[0].contains("level2_batch"));
    }

    #[test]
    fn coinbase_silence_reconnects_and_replayed_matches_are_not_published_twice() {
        let capture = messages("COINBASE.ws.28.0");
        let total = capture.len() as u64;
        let server = ReplayServer::start(capture, ReplayOptions::default()).unwrap();
        let products = [
            "SKL-USD", "SKL-BTC", "BAND-GBP", "NMR-EUR", "BAND-BTC", "YFI-BTC", "DASH-BTC",
            "NU-GBP", "CRV-EUR", "SKL-GBP",
        ];
        let mut opts = test_options(server.url(), &products);
        // The server goes quiet after the capture; a live venue would be heartbeating.
        opts.idle_timeout = Duration::from_millis(500);
        let (stats, events) = run_until(Venue::Coinbase, &opts, |s| s.messages >= 2 * total);
        assert!(stats.reconnects >= 1);
        assert!(server.connections() >= 2);
        // Every product that delivered data gets one resync gap per lost connection.
        let gaps = events
            .iter()
            .filter(|e| matches!(&e.body, Body::Gap(g) if g.reason == GapReason::Resync))
            .count() as u64;
        assert_eq!(gaps, products.len() as u64 * stats.reconnects);
        // The second replay repeats the same 97 matches: the trade-id cursor drops them.
        let trades = events
            .iter()
            .filter(|e| matches!(e.body, Body::Trade(_)))
            .count();
        assert_eq!(trades, 97);
        let books = downstream_books(&events);
        for product in products {
            assert!(books[product].is_consistent(), "{product} not rebuilt");
        }
    }

    #[test]
    fn paced_replay_spreads_receive_times_like_the_capture() {
        let capture = messages("KRAKEN.ws.50.0");
        let total = capture.len() as u64;
        let span = capture.last().unwrap().0 - capture[0].0;
        // The same capture unpaced first: how long this machine, now, takes to take it in.
        let busy = {
            let server = ReplayServer::start(capture.clone(), ReplayOptions::default()).unwrap();
            let opts = test_options(server.url(), &KRAKEN_PAIRS);
            let (_, events) = run_until(Venue::Kraken, &opts, |s| s.messages >= total);
            events.last().unwrap().ts_recv - events.first().unwrap().ts_recv
        };
        let speed = 25.0;
        let server = ReplayServer::start(
            capture,
            ReplayOptions {
                speed: Some(speed),
                drop_after: Vec::new(),
            },
        )
        .unwrap();
        let opts = test_options(server.url(), &KRAKEN_PAIRS);
        let (stats, events) = run_until(Venue::Kraken, &opts, |s| s.messages >= total);
        assert_eq!(stats.checksum_ok, 4269);
        let first = events.first().unwrap().ts_recv;
        let last = events.last().unwrap().ts_recv;
        let expected = (span as f64 / speed) as i64;
        // Never faster than the capture allows; slower only by scheduling noise and by the
        // time the consumer needs anyway (`busy`, large when other work shares the cores).
        // Pacing at 1x instead of 25x would take 25 times `expected`.
        assert!(
            last - first >= expected * 9 / 10,
            "{} < {expected}",
            last - first
        );
        assert!(
            last - first < expected * 4 + busy * 3,
            "{} vs {expected} paced, {busy} unpaced",
            last - first
        );
        // Venue time is the capture's own, untouched by pacing.
        assert!(
            events
                .iter()
                .all(|e| e.ts_event < 1_700_000_000_000_000_000)
        );
    }

    #[test]
    fn a_refusing_sink_stops_the_feed_with_its_error() {
        struct Refuse(usize);
        impl EventSink for Refuse {
            fn accept(&mut self, _event: Event) -> anyhow::Result<()> {
                self.0 += 1;
                anyhow::ensure!(self.0 < 5, "bus is gone");
                Ok(())
            }
        }
        let server =
            ReplayServer::start(messages("KRAKEN.ws.50.0"), ReplayOptions::default()).unwrap();
        let opts = test_options(server.url(), &KRAKEN_PAIRS);
        let err = run_feed(
            Venue::Kraken,
            &opts,
            &mut Refuse(0),
            Arc::new(AtomicBool::new(false)),
        )
        .unwrap_err();
        assert!(matches!(err, FeedError::Sink(_)));
        assert!(err.to_string().contains("bus is gone"), "{err}");
    }

    #[test]
    fn stop_flag_ends_a_feed_that_cannot_connect() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let opts = test_options(format!("ws://127.0.0.1:{port}"), &["XBT/USD"]);
        let (stats, events) = run_until(Venue::Kraken, &opts, |s| s.reconnects >= 3);
        assert!(stats.reconnects >= 3);
        assert!(events.is_empty(), "no data, so no gap either");
        assert!(
            opts.counters
                .last_error()
                .unwrap()
                .contains("cannot connect")
        );
    }

    #[test]
    fn ticks_keep_coming_while_the_venue_is_unreachable() {
        #[derive(Default)]
        struct Ticks(u32);
        impl EventSink for Ticks {
            fn accept(&mut self, _event: Event) -> anyhow::Result<()> {
                Ok(())
            }
        }
        impl FeedSink for Ticks {
            fn tick(&mut self, _stats: &FeedStats) -> anyhow::Result<()> {
                self.0 += 1;
                Ok(())
            }
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let opts = test_options(format!("ws://127.0.0.1:{port}"), &["XBT/USD"]);
        let stop = Arc::new(AtomicBool::new(false));
        let stopper = {
            let stop = stop.clone();
            thread::spawn(move || {
                thread::sleep(Duration::from_millis(1500));
                stop.store(true, Ordering::SeqCst);
            })
        };
        let mut ticks = Ticks::default();
        run_feed_ticking(Venue::Kraken, &opts, &mut ticks, stop).unwrap();
        stopper.join().unwrap();
        // A tick every 100 ms would be 15; a reconnect loop that did not tick would give
        // none. At least 4 tells them apart even when the cores are shared.
        assert!(ticks.0 >= 4, "only {} ticks in 1500 ms", ticks.0);
    }

    #[test]
    fn venue_names_parse_and_bad_options_are_refused() {
        assert_eq!("Kraken".parse::<Venue>().unwrap(), Venue::Kraken);
        assert_eq!("binance".parse::<Venue>().unwrap(), Venue::Binance);
        assert_eq!(
            "Binance-USDM".parse::<Venue>().unwrap().name(),
            "binance-usdm"
        );
        assert!("bitstamp".parse::<Venue>().is_err());
        let mut opts = FeedOptions::new(&["XBT/USD"]);
        opts.depth = 7;
        let mut sink: Vec<Event> = Vec::new();
        let err = run_feed(
            Venue::Kraken,
            &opts,
            &mut sink,
            Arc::new(AtomicBool::new(false)),
        )
        .unwrap_err();
        assert!(matches!(err, FeedError::Options(_)), "{err}");
    }
}
