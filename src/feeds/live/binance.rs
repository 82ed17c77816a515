//! Binance live feed (spot, USD-M and COIN-M futures): diff-depth and trade streams over
//! the combined-stream websocket, plus the REST depth snapshot that anchors each book.
//!
//! Owns the connection-side parts of Binance's procedure: what to subscribe to, when to
//! fetch a REST snapshot (whenever [`BookSync::needs_snapshot`] says so and a diff is
//! buffered), the small blocking HTTP GET that fetches it, and the trade-id cursor that
//! keeps a reconnect from publishing a trade twice. Never decides whether a diff fits a
//! book: [`crate::feeds::binance::BookSync`] does (buffer, bridge with `U`/`u`/`pu`, gap
//! on a break), the same code the raw-capture importer uses.
//!
//! A lost connection is a `Gap(Resync)` for every symbol that delivered data, and its
//! book starts over: the first diff of the next connection triggers a new snapshot.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::publish::{FeedCounters, Publisher};
use super::ws::{Action, FeedError, Protocol};
use crate::event::{Body, Event, EventSink, GapReason, UnixNanos, now_nanos};
use crate::feeds::binance::{BookSync, DepthDiff, Market, Message, parse_message, trade_event};

/// Levels per side asked of the REST depth endpoint (the most every market serves).
pub const SNAPSHOT_LIMIT: usize = 1000;

/// Wait after a failed snapshot request before the next diff may trigger another.
pub const SNAPSHOT_RETRY: Duration = Duration::from_secs(1);

/// Wait after Binance said "too many requests" (HTTP 429 or 418) before asking again.
pub const SNAPSHOT_BACKOFF_RATE_LIMITED: Duration = Duration::from_secs(30);

/// The combined-stream websocket endpoint of `market` (streams are added by `SUBSCRIBE`).
pub fn default_ws_url(market: Market) -> &'static str {
    match market {
        Market::Spot => "wss://stream.binance.com:9443/stream",
        Market::UsdM => "wss://fstream.binance.com/stream",
        Market::CoinM => "wss://dstream.binance.com/stream",
    }
}

/// The REST base URL of `market`.
pub fn default_rest_url(market: Market) -> &'static str {
    match market {
        Market::Spot => "https://api.binance.com",
        Market::UsdM => "https://fapi.binance.com",
        Market::CoinM => "https://dapi.binance.com",
    }
}

/// The REST depth path of `market`.
pub fn depth_path(market: Market) -> &'static str {
    match market {
        Market::Spot => "/api/v3/depth",
        Market::UsdM => "/fapi/v1/depth",
        Market::CoinM => "/dapi/v1/depth",
    }
}

/// The stream names for one symbol: spot diffs every 100 ms, futures as fast as offered.
pub fn stream_names(market: Market, symbol: &str, trades: bool) -> Vec<String> {
    let lower = symbol.to_ascii_lowercase();
    let depth = match market {
        Market::Spot => format!("{lower}@depth@100ms"),
        Market::UsdM | Market::CoinM => format!("{lower}@depth@0ms"),
    };
    let mut out = vec![depth];
    if trades {
        out.push(format!("{lower}@trade"));
    }
    out
}

struct SymbolState {
    sync: BookSync,
    /// Highest trade id published; replays after a reconnect are dropped.
    last_trade_id: Option<u64>,
    /// No snapshot request before this instant (after a failed one).
    retry_at: Option<Instant>,
    /// Delivered data since the last gap: a disconnect is a gap for it.
    live: bool,
    /// `(U, pu)` of the oldest diff waiting for a snapshot, to refuse snapshots older
    /// than it (they could never bridge and would only cause a gap).
    first_waiting: Option<(u64, Option<u64>)>,
    /// Snapshots refused as older than the first waiting diff.
    stale_snapshots: u64,
}

/// The Binance protocol state: one [`BookSync`] per symbol.
pub struct Binance {
    market: Market,
    symbols: Vec<String>,
    trades: bool,
    rest_url: String,
    http_timeout: Duration,
    states: HashMap<String, SymbolState>,
    snapshots: u64,
}

impl Binance {
    /// Subscribes `symbols` (`BTCUSDT`, `BTCUSD_PERP`; case does not matter) on `market`;
    /// snapshots come from `rest_url` (`None`: Binance's) with `http_timeout` per request.
    pub fn new(
        market: Market,
        symbols: &[String],
        trades: bool,
        rest_url: Option<String>,
        http_timeout: Duration,
    ) -> Result<Binance, FeedError> {
        if symbols.is_empty() {
            return Err(FeedError::Options(format!(
                "{} needs at least one symbol, e.g. BTCUSDT",
                market.venue()
            )));
        }
        if let Some(bad) = symbols
            .iter()
            .find(|s| s.is_empty() || !s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
        {
            return Err(FeedError::Options(format!(
                "{bad:?} is not a Binance symbol (letters, digits and `_`, e.g. BTCUSDT)"
            )));
        }
        Ok(Binance {
            market,
            symbols: symbols.iter().map(|s| s.to_ascii_uppercase()).collect(),
            trades,
            rest_url: rest_url
                .unwrap_or_else(|| default_rest_url(market).to_string())
                .trim_end_matches('/')
                .to_string(),
            http_timeout,
            states: HashMap::new(),
            snapshots: 0,
        })
    }

    /// REST snapshots applied so far (over all symbols and connections).
    pub fn snapshots_applied(&self) -> u64 {
        self.snapshots
    }

    /// REST snapshots fetched but refused as older than the first buffered diff.
    pub fn stale_snapshots(&self) -> u64 {
        self.states.values().map(|s| s.stale_snapshots).sum()
    }

    fn state(&mut self, symbol: &str, out: &mut Publisher<'_>) -> Option<&mut SymbolState> {
        if !self.symbols.iter().any(|s| s == symbol) {
            return None;
        }
        let market = self.market;
        let state = self
            .states
            .entry(symbol.to_string())
            .or_insert_with(|| SymbolState {
                sync: BookSync::new(market, Arc::from(market.venue()), out.symbol(symbol)),
                last_trade_id: None,
                retry_at: None,
                live: false,
                first_waiting: None,
                stale_snapshots: 0,
            });
        Some(state)
    }

    /// Fetches and applies `symbol`'s REST snapshot. Only a refusing sink or Binance
    /// rejecting the symbol is fatal; anything else is retried on a later diff.
    fn fetch_snapshot(&mut self, symbol: &str, out: &mut Publisher<'_>) -> Result<(), FeedError> {
        let url = format!(
            "{}{}?symbol={symbol}&limit={SNAPSHOT_LIMIT}",
            self.rest_url,
            depth_path(self.market)
        );
        let venue = self.market.venue();
        let response = http_get(&url, self.http_timeout);
        let Some(state) = self.states.get_mut(symbol) else {
            return Ok(());
        };
        let (status, body) = match response {
            Ok(r) => r,
            Err(why) => {
                out.counters()
                    .set_last_error(format!("depth snapshot {url}: {why}"));
                state.retry_at = Some(Instant::now() + SNAPSHOT_RETRY);
                return Ok(());
            }
        };
        if status != 200 {
            // -1121: invalid symbol. Retrying cannot help; the user must fix --symbols.
            if status == 400 && body.contains("-1121") {
                return Err(FeedError::Rejected {
                    venue: venue.to_string(),
                    message: format!("{symbol}: {}", excerpt(&body)),
                });
            }
            let wait = if status == 429 || status == 418 {
                SNAPSHOT_BACKOFF_RATE_LIMITED
            } else {
                SNAPSHOT_RETRY
            };
            out.counters().set_last_error(format!(
                "depth snapshot {url}: HTTP {status}: {}",
                excerpt(&body)
            ));
            state.retry_at = Some(Instant::now() + wait);
            return Ok(());
        }
        let ts_recv = now_nanos();
        let snapshot = match parse_message(&body) {
            Ok(Message::Snapshot(s)) => s,
            _ => {
                FeedCounters::bump(&out.counters().malformed);
                out.counters().set_last_error(format!(
                    "depth snapshot {url}: not a depth response: {}",
                    excerpt(&body)
                ));
                state.retry_at = Some(Instant::now() + SNAPSHOT_RETRY);
                return Ok(());
            }
        };
        let l = snapshot.last_update_id;
        let bridges = state.first_waiting.is_none_or(|(first, pu)| {
            first <= l + 1 || (self.market.is_futures() && pu == Some(l))
        });
        if !bridges {
            // Binance's procedure: a snapshot older than the first buffered event is
            // fetched again, not applied (the REST cache can lag the stream).
            state.stale_snapshots += 1;
            state.retry_at = Some(Instant::now() + SNAPSHOT_RETRY);
            return Ok(());
        }
        let mut sink = Stamp::new(out);
        match state.sync.on_snapshot(&snapshot, ts_recv, &mut sink) {
            Ok(()) => {
                state.retry_at = None;
                state.first_waiting = None;
                state.live = true;
                self.snapshots += 1;
                Ok(())
            }
            Err(e) if sink.failed => Err(FeedError::Sink(e)),
            Err(e) => {
                FeedCounters::bump(&out.counters().malformed);
                out.counters()
                    .set_last_error(format!("depth snapshot {url}: {e:#}"));
                state.retry_at = Some(Instant::now() + SNAPSHOT_RETRY);
                Ok(())
            }
        }
    }

    fn on_control(&mut self, text: &str, out: &mut Publisher<'_>) -> Result<Action, FeedError> {
        let Ok(value) = serde_json::from_str::<Value>(text) else {
            FeedCounters::bump(&out.counters().malformed);
            return Ok(Action::Continue);
        };
        // `{"result":null,"id":1}` acknowledges the SUBSCRIBE.
        if value.get("result").is_some() && value.get("id").is_some() {
            return Ok(Action::Continue);
        }
        if let Some(error) = value.get("error").or_else(|| value.get("msg")) {
            return Err(FeedError::Rejected {
                venue: self.market.venue().to_string(),
                message: error.to_string(),
            });
        }
        FeedCounters::bump(&out.counters().malformed);
        Ok(Action::Continue)
    }
}

impl Protocol for Binance {
    fn venue(&self) -> &'static str {
        self.market.venue()
    }

    fn subscriptions(&self) -> Vec<String> {
        let params: Vec<String> = self
            .symbols
            .iter()
            .flat_map(|s| stream_names(self.market, s, self.trades))
            .collect();
        vec![serde_json::json!({"method": "SUBSCRIBE", "params": params, "id": 1}).to_string()]
    }

    fn on_message(
        &mut self,
        text: &str,
        ts_recv: UnixNanos,
        out: &mut Publisher<'_>,
    ) -> Result<Action, FeedError> {
        let message = match parse_message(text) {
            Ok(m) => m,
            Err(_) => return self.on_control(text, out),
        };
        match message {
            Message::Depth(update) => {
                let symbol = update.symbol.to_string();
                let diff = DepthDiff::from_update(&update, ts_recv);
                let Some(state) = self.state(&symbol, out) else {
                    return Ok(Action::Continue);
                };
                let Ok(diff) = diff else {
                    // Dropping it breaks the id chain, so the next diff gaps and resyncs.
                    FeedCounters::bump(&out.counters().malformed);
                    return Ok(Action::Continue);
                };
                state.live = true;
                let ids = (diff.first_id, diff.prev_last_id);
                let was_waiting = state.sync.needs_snapshot();
                state
                    .sync
                    .on_diff(diff, &mut Stamp::new(out))
                    .map_err(FeedError::Sink)?;
                if state.sync.needs_snapshot() && (!was_waiting || state.first_waiting.is_none()) {
                    // First diff buffered, or the diff that broke the chain (BookSync
                    // keeps it as the first of the new buffer).
                    state.first_waiting = Some(ids);
                }
                let due = state.retry_at.is_none_or(|at| Instant::now() >= at);
                if state.sync.needs_snapshot() && state.sync.buffered() > 0 && due {
                    self.fetch_snapshot(&symbol, out)?;
                }
            }
            Message::Trade(trade) => {
                let symbol = trade.symbol.to_string();
                let venue: Arc<str> = Arc::from(self.market.venue());
                let Some(state) = self.state(&symbol, out) else {
                    return Ok(Action::Continue);
                };
                if state.last_trade_id.is_some_and(|last| trade.id <= last) {
                    return Ok(Action::Continue);
                }
                let name = out.symbol(&symbol);
                match trade_event(&venue, &name, &trade, ts_recv) {
                    Ok(event) => {
                        state.last_trade_id = Some(trade.id);
                        state.live = true;
                        Stamp::new(out).accept(event).map_err(FeedError::Sink)?;
                    }
                    Err(_) => FeedCounters::bump(&out.counters().malformed),
                }
            }
            // bookTicker and other streams are not subscribed; a stray REST-shaped
            // message on the socket is not a snapshot we asked for.
            Message::BookTicker(_) | Message::Other(_) | Message::Snapshot(_) => {}
        }
        Ok(Action::Continue)
    }

    fn on_disconnect(
        &mut self,
        ts_recv: UnixNanos,
        out: &mut Publisher<'_>,
    ) -> Result<(), FeedError> {
        let market = self.market;
        for (symbol, state) in &mut self.states {
            let name = out.symbol(symbol);
            if state.live {
                out.gap(&name, ts_recv, GapReason::Resync, None)
                    .map_err(FeedError::Sink)?;
            }
            // Diffs may have been lost with the link: start over from a new snapshot.
            state.sync = BookSync::new(market, Arc::from(market.venue()), name);
            state.retry_at = None;
            state.live = false;
            state.first_waiting = None;
        }
        Ok(())
    }
}

/// Routes [`BookSync`]'s events through the [`Publisher`] (pub_seq, counters) and
/// remembers whether the sink refused one, which is fatal unlike a malformed snapshot.
struct Stamp<'p, 'a> {
    out: &'p mut Publisher<'a>,
    failed: bool,
}

impl<'p, 'a> Stamp<'p, 'a> {
    fn new(out: &'p mut Publisher<'a>) -> Stamp<'p, 'a> {
        Stamp { out, failed: false }
    }
}

impl EventSink for Stamp<'_, '_> {
    fn accept(&mut self, event: Event) -> anyhow::Result<()> {
        if matches!(event.body, Body::Gap(_)) {
            FeedCounters::bump(&self.out.counters().gaps);
        }
        let result = self.out.emit(
            &event.symbol,
            event.ts_event,
            event.ts_recv,
            event.venue_seq,
            event.prev_venue_seq,
            event.body,
        );
        self.failed |= result.is_err();
        result
    }
}

fn excerpt(body: &str) -> &str {
    let end = body.char_indices().nth(200).map_or(body.len(), |(i, _)| i);
    &body[..end]
}

/// A blocking `GET` of `url` (`http://` or `https://`), returning status and body.
///
/// HTTP/1.1 with `Connection: close`; the body is read by `Content-Length`, chunked, or
/// to the end of the stream. `https` uses rustls with the OS root certificates, like the
/// websocket. Small on purpose: one request per snapshot, no redirects, no keep-alive.
pub fn http_get(url: &str, timeout: Duration) -> Result<(u16, String), String> {
    let uri: tungstenite::http::Uri = url
        .parse()
        .map_err(|e| format!("bad REST url {url:?}: {e}"))?;
    let secure = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => {
            return Err(format!(
                "REST url {url:?} must start with http:// or https://"
            ));
        }
    };
    let host = uri
        .host()
        .ok_or_else(|| format!("REST url {url:?} has no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut last = format!("{host}:{port} resolved to no address");
    let mut tcp = None;
    for addr in (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}:{port}: {e}"))?
    {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(stream) => {
                tcp = Some(stream);
                break;
            }
            Err(e) => last = format!("cannot connect to {addr}: {e}"),
        }
    }
    let tcp = tcp.ok_or(last)?;
    let setup = |e: std::io::Error| format!("cannot configure socket to {host}:{port}: {e}");
    tcp.set_read_timeout(Some(timeout)).map_err(setup)?;
    tcp.set_write_timeout(Some(timeout)).map_err(setup)?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: ticktape\r\n\
         Accept: application/json\r\nConnection: close\r\n\r\n"
    );
    if secure {
        let name = rustls::pki_types::ServerName::try_from(host.clone())
            .map_err(|e| format!("bad TLS server name {host:?}: {e}"))?;
        let conn = rustls::ClientConnection::new(tls_config()?, name)
            .map_err(|e| format!("TLS setup for {host} failed: {e}"))?;
        exchange(rustls::StreamOwned::new(conn, tcp), &request)
    } else {
        exchange(tcp, &request)
    }
}

fn tls_config() -> Result<Arc<rustls::ClientConfig>, String> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            // rustls needs one process-wide crypto provider; a second install is a no-op error.
            let _ = rustls::crypto::ring::default_provider().install_default();
            let mut roots = rustls::RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err("no usable root certificates found on this system \
                            (install ca-certificates)"
                    .to_string());
            }
            Ok(Arc::new(
                rustls::ClientConfig::builder()
                    .with_root_certificates(roots)
                    .with_no_client_auth(),
            ))
        })
        .clone()
}

fn exchange<S: Read + Write>(mut stream: S, request: &str) -> Result<(u16, String), String> {
    let io = |e: std::io::Error| format!("HTTP exchange failed: {e}");
    stream.write_all(request.as_bytes()).map_err(io)?;
    stream.flush().map_err(io)?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).map_err(io)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("not an HTTP status line: {:?}", line.trim_end()))?;
    let mut length: Option<usize> = None;
    let mut chunked = false;
    loop {
        line.clear();
        if reader.read_line(&mut line).map_err(io)? == 0 {
            return Err("connection closed inside the HTTP headers".to_string());
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = Some(
                    value
                        .parse()
                        .map_err(|_| format!("bad Content-Length {value:?}"))?,
                );
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.to_ascii_lowercase().contains("chunked");
            }
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            line.clear();
            reader.read_line(&mut line).map_err(io)?;
            let size = line.trim_end().split(';').next().unwrap_or("");
            let size = usize::from_str_radix(size.trim(), 16)
                .map_err(|_| format!("bad chunk size line {:?}", line.trim_end()))?;
            if size == 0 {
                break;
            }
            let start = body.len();
            body.resize(start + size, 0);
            reader.read_exact(&mut body[start..]).map_err(io)?;
            line.clear();
            reader.read_line(&mut line).map_err(io)?;
        }
    } else if let Some(length) = length {
        body.resize(length, 0);
        reader.read_exact(&mut body).map_err(io)?;
    } else {
        match reader.read_to_end(&mut body) {
            Ok(_) => {}
            // Servers often skip TLS close_notify after `Connection: close`.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
            Err(e) => return Err(io(e)),
        }
    }
    let body = String::from_utf8(body).map_err(|_| "HTTP body is not UTF-8".to_string())?;
    Ok((status, body))
}

/// Real sockets, no internet: the feed against [`super::testserver::ReplayServer`] (the
/// capture's websocket lines) and [`super::binance_testserver::SnapshotServer`] (its
/// REST snapshot), checked against the capture's own bookTicker oracle.
#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::PathBuf;
    use std::sync::atomic::AtomicBool;
    use std::thread;

    use super::super::binance_testserver::{Framing, SnapshotServer, read_binance_capture};
    use super::super::testserver::{ReplayOptions, ReplayServer};
    use super::super::{Backoff, FeedOptions, FeedStats, Venue, run_feed};
    use super::*;
    use crate::book::L2Book;
    use crate::event::{Fixed, Flags};

    /// bookTickers of spot BTCUSDT 2024-08-08 whose `u` is the final `u` of a diff the
    /// book applies after the REST snapshot (3449 diffs; the 0808+0809 pair has 1072;
    /// cross-checked with an independent Python pass over the capture).
    const SPOT_0808_BBO_CHECKS: usize = 564;
    const SPOT_0808_TRADES: usize = 9757;

    fn capture_path() -> PathBuf {
        // Same data root as the other live-feed tests (env, beside the repo, /work).
        super::super::capture::sample_path("../../hftbacktest/examples/spot/btcusdt_20240808.gz")
    }

    type Bbo = (Fixed, Fixed, Fixed, Fixed);

    /// bookTicker `u` → best bid price/qty, best ask price/qty.
    fn book_tickers(stream: &[(UnixNanos, String)]) -> HashMap<u64, Bbo> {
        let fixed = |s: &str| s.parse::<Fixed>().unwrap();
        stream
            .iter()
            .filter_map(|(_, text)| match parse_message(text).ok()? {
                Message::BookTicker(b) => Some((
                    b.update_id,
                    (
                        fixed(b.bid_price),
                        fixed(b.bid_qty),
                        fixed(b.ask_price),
                        fixed(b.ask_qty),
                    ),
                )),
                _ => None,
            })
            .collect()
    }

    /// Rebuilds the book as a subscriber would (a gap clears it) and compares the BBO
    /// after every diff whose final id has a bookTicker. Returns (equal, different),
    /// counted per event index range `from..`.
    fn bbo_checks(events: &[Event], oracle: &HashMap<u64, Bbo>, from: usize) -> (usize, usize) {
        let mut book = L2Book::new();
        let (mut equal, mut different) = (0, 0);
        for (i, event) in events.iter().enumerate() {
            match &event.body {
                Body::Gap(_) => book.clear(),
                Body::Book(delta) => {
                    book.apply(delta);
                    let at_diff_end =
                        delta.flags.contains(Flags::LAST) && !delta.flags.contains(Flags::SNAPSHOT);
                    if !at_diff_end || i < from {
                        continue;
                    }
                    let Some(expected) = event.venue_seq.and_then(|u| oracle.get(&u)) else {
                        continue;
                    };
                    let (bid, ask) = (book.best_bid().unwrap(), book.best_ask().unwrap());
                    if (bid.0, bid.1, ask.0, ask.1) == *expected {
                        equal += 1;
                    } else {
                        different += 1;
                    }
                }
                _ => {}
            }
        }
        (equal, different)
    }

    fn test_options(ws: String, rest: String) -> FeedOptions {
        FeedOptions {
            url: Some(ws),
            rest_url: Some(rest),
            backoff: Backoff {
                initial: Duration::from_millis(10),
                max: Duration::from_millis(100),
            },
            connect_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(20),
            ..FeedOptions::new(&["BTCUSDT"])
        }
    }

    /// Runs the spot feed in a thread until `done` holds (or 90 s pass), then stops it.
    fn run_until(opts: &FeedOptions, done: impl Fn(&FeedStats) -> bool) -> (FeedStats, Vec<Event>) {
        let stop = Arc::new(AtomicBool::new(false));
        let handle = {
            let (opts, stop) = (opts.clone(), stop.clone());
            thread::spawn(move || {
                let mut sink: Vec<Event> = Vec::new();
                let stats = run_feed(Venue::Binance, &opts, &mut sink, stop);
                (stats, sink)
            })
        };
        let deadline = Instant::now() + Duration::from_secs(90);
        while !done(&opts.counters.snapshot()) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let (stats, sink) = handle.join().unwrap();
        (stats.unwrap(), sink)
    }

    fn trades(events: &[Event]) -> usize {
        events
            .iter()
            .filter(|e| matches!(e.body, Body::Trade(_)))
            .count()
    }

    #[test]
    fn spot_feed_over_real_sockets_matches_every_book_ticker_at_its_update_id() {
        let capture = read_binance_capture(&capture_path()).unwrap();
        let total = capture.stream.len() as u64;
        let oracle = book_tickers(&capture.stream);
        let ws = ReplayServer::start(capture.stream, ReplayOptions::default()).unwrap();
        let rest = SnapshotServer::start(capture.snapshot.unwrap(), Framing::Chunked).unwrap();
        let opts = test_options(ws.url(), rest.url());
        let (stats, events) = run_until(&opts, |s| s.messages >= total);
        assert_eq!(stats.messages, total, "{:?}", opts.counters.last_error());
        assert_eq!((stats.reconnects, stats.gaps, stats.malformed), (0, 0, 0));
        assert_eq!(
            rest.requests(),
            vec!["/api/v3/depth?symbol=BTCUSDT&limit=1000"]
        );
        let subscribe = &ws.client_messages()[0];
        assert!(
            subscribe.contains("\"SUBSCRIBE\"")
                && subscribe.contains("btcusdt@depth@100ms")
                && subscribe.contains("btcusdt@trade"),
            "{subscribe}"
        );
        assert!(
            events
                .iter()
                .all(|e| &*e.venue == "binance" && &*e.symbol == "BTCUSDT")
        );
        let (equal, different) = bbo_checks(&events, &oracle, 0);
        assert_eq!((equal, different), (SPOT_0808_BBO_CHECKS, 0));
        assert_eq!(trades(&events), SPOT_0808_TRADES);
    }

    #[test]
    fn dropped_connection_gaps_refetches_the_snapshot_and_rebuilds_a_correct_book() {
        let capture = read_binance_capture(&capture_path()).unwrap();
        let total = capture.stream.len();
        let cut = 20_000;
        let oracle = book_tickers(&capture.stream);
        let ws = ReplayServer::start(
            capture.stream,
            ReplayOptions {
                speed: None,
                drop_after: vec![cut],
            },
        )
        .unwrap();
        let rest = SnapshotServer::start(capture.snapshot.unwrap(), Framing::Length).unwrap();
        let opts = test_options(ws.url(), rest.url());
        let (stats, events) = run_until(&opts, |s| s.messages >= (cut + total) as u64);
        assert_eq!(ws.connections(), 2, "{:?}", opts.counters.last_error());
        assert_eq!(stats.reconnects, 1);
        assert_eq!(rest.requests().len(), 2, "one snapshot per connection");
        let gaps: Vec<usize> = events
            .iter()
            .enumerate()
            .filter(|(_, e)| matches!(e.body, Body::Gap(_)))
            .map(|(i, _)| i)
            .collect();
        assert_eq!(gaps.len(), 1);
        assert_eq!(stats.gaps, 1);
        let Body::Gap(gap) = &events[gaps[0]].body else {
            unreachable!()
        };
        assert_eq!(gap.reason, GapReason::Resync);
        let next_book = events[gaps[0]..]
            .iter()
            .find_map(|e| match &e.body {
                Body::Book(d) => Some(d),
                _ => None,
            })
            .unwrap();
        assert!(next_book.flags.contains(Flags::SNAPSHOT), "{next_book:?}");
        // Every BBO check on either side of the break holds; after it, all of them.
        let (before, wrong_before) = bbo_checks(&events[..gaps[0]], &oracle, 0);
        assert!(before > 0 && wrong_before == 0, "{before} {wrong_before}");
        assert_eq!(
            bbo_checks(&events, &oracle, gaps[0]),
            (SPOT_0808_BBO_CHECKS, 0)
        );
        // The replayed trades are recognised by id and not published again.
        assert_eq!(trades(&events), SPOT_0808_TRADES);
        // pub_seq stays contiguous per (kind, symbol) across the reconnect.
        let mut last: HashMap<&'static str, u64> = HashMap::new();
        for e in &events {
            let seq = last.entry(e.kind().name()).or_insert(0);
            assert_eq!(e.pub_seq, *seq + 1);
            *seq = e.pub_seq;
        }
    }

    #[test]
    fn http_get_reads_length_and_chunked_bodies_and_reports_status() {
        let body = format!("{{\"lastUpdateId\":1,\"pad\":\"{}\"}}", "x".repeat(10_000));
        for framing in [Framing::Length, Framing::Chunked] {
            let server = SnapshotServer::start(body.clone(), framing).unwrap();
            let url = format!("{}/fapi/v1/depth?symbol=X&limit=5", server.url());
            assert_eq!(
                http_get(&url, Duration::from_secs(2)).unwrap(),
                (200, body.clone())
            );
            let (status, _) =
                http_get(&format!("{}/nope", server.url()), Duration::from_secs(2)).unwrap();
            assert_eq!(status, 404);
        }
        let err = http_get("ftp://x/depth", Duration::from_secs(1)).unwrap_err();
        assert!(err.contains("http://"), "{err}");
    }

    #[test]
    fn subscriptions_name_each_market_streams_and_errors_are_rejections() {
        let symbols = vec!["btcusd_perp".to_string()];
        let coinm =
            Binance::new(Market::CoinM, &symbols, true, None, Duration::from_secs(1)).unwrap();
        let sub = &coinm.subscriptions()[0];
        assert!(
            sub.contains("btcusd_perp@depth@0ms") && sub.contains("btcusd_perp@trade"),
            "{sub}"
        );
        assert_eq!(coinm.rest_url, "https://dapi.binance.com");
        assert!(Binance::new(Market::Spot, &[], true, None, Duration::ZERO).is_err());
        let bad = vec!["BTC/USDT".to_string()];
        assert!(matches!(
            Binance::new(Market::Spot, &bad, true, None, Duration::ZERO),
            Err(FeedError::Options(_))
        ));
        let mut spot = Binance::new(
            Market::Spot,
            &["BTCUSDT".into()],
            false,
            None,
            Duration::ZERO,
        )
        .unwrap();
        let mut sink: Vec<Event> = Vec::new();
        let counters = FeedCounters::shared();
        let mut out = Publisher::new("binance", "test", &mut sink, counters.clone());
        let ack = spot.on_message(r#"{"result":null,"id":1}"#, 1, &mut out);
        assert_eq!(ack.unwrap(), Action::Continue);
        let err = spot
            .on_message(
                r#"{"error":{"code":2,"msg":"Invalid request"},"id":1}"#,
                2,
                &mut out,
            )
            .unwrap_err();
        assert!(err.to_string().contains("Invalid request"), "{err}");
        assert_eq!(counters.snapshot().malformed, 0);
    }

    fn depth(first: u64, last: u64, bid: &str) -> String {
        format!(
            r#"{{"stream":"btcusdt@depth@100ms","data":{{"e":"depthUpdate","E":1723161255208,"s":"BTCUSDT","U":{first},"u":{last},"b":[["{bid}","1.0"]],"a":[["70000.0","2.0"]]}}}}"#
        )
    }

    #[test]
    fn snapshot_older_than_the_first_buffered_diff_is_fetched_again_not_gapped() {
        let old = SnapshotServer::start(
            r#"{"lastUpdateId":50,"bids":[["60000.0","1.0"]],"asks":[["70000.0","1.0"]]}"#.into(),
            Framing::Length,
        )
        .unwrap();
        let fresh = SnapshotServer::start(
            r#"{"lastUpdateId":102,"bids":[["60000.0","1.0"]],"asks":[["70000.0","1.0"]]}"#.into(),
            Framing::Length,
        )
        .unwrap();
        let mut feed = Binance::new(
            Market::Spot,
            &["BTCUSDT".into()],
            true,
            Some(old.url()),
            Duration::from_secs(2),
        )
        .unwrap();
        let mut sink: Vec<Event> = Vec::new();
        let counters = FeedCounters::shared();
        let mut out = Publisher::new("binance", "test", &mut sink, counters.clone());
        feed.on_message(&depth(100, 105, "60001.0"), 1, &mut out)
            .unwrap();
        assert_eq!((feed.stale_snapshots(), feed.snapshots_applied()), (1, 0));
        assert_eq!(old.requests().len(), 1);
        // Within the retry delay no new request is made; the diff just waits.
        feed.on_message(&depth(106, 110, "60002.0"), 2, &mut out)
            .unwrap();
        assert_eq!(old.requests().len(), 1);
        feed.rest_url = fresh.url();
        feed.states.get_mut("BTCUSDT").unwrap().retry_at = None;
        feed.on_message(&depth(111, 112, "60003.0"), 3, &mut out)
            .unwrap();
        assert_eq!(feed.snapshots_applied(), 1);
        drop(out);
        assert!(sink.iter().all(|e| !matches!(e.body, Body::Gap(_))));
        let mut book = L2Book::new();
        for e in &sink {
            if let Body::Book(d) = &e.body {
                book.apply(d);
            }
        }
        // Snapshot 102, then diffs 100..105 (straddles 103), 106..110 and 111..112.
        assert_eq!(book.best_bid().unwrap().0.to_string(), "60003.0");
        assert_eq!(book.depth(), (4, 1));
        assert_eq!(counters.snapshot().gaps, 0);
    }
}
