//! Importer for raw Binance websocket captures: one message per line,
//! `<local_receive_ns> <json>`, usually gzip (hftbacktest's collector format).
//!
//! Owns line splitting, market/venue/symbol inference and the hand-off of each message
//! to [`crate::feeds::binance::BookSync`] (book) or straight to the sink (trades).
//! Never writes anything itself.
//!
//! - `depthUpdate` → one book delta per level (`LAST` on the message's last level),
//!   `venue_seq = u`, `prev_venue_seq = U - 1` (spot) or `pu` (futures).
//! - REST snapshot line (`{"lastUpdateId":...}`) → snapshot levels (`SNAPSHOT`).
//! - `trade` → a trade, aggressor sell when `m` (buyer is maker), `venue_seq = t`.
//! - `bookTicker` and any other stream are skipped (counted in `skipped`).
//!
//! Cannot represent: the book before the first usable snapshot (diffs before it are
//! buffered, and dropped if no snapshot ever bridges them: a capture without a snapshot,
//! such as a `_20240809` file imported alone, yields trades but no book, with a warning);
//! the book after a sequence break until the next snapshot (a gap event marks it).
//! Spot snapshots carry no exchange time, so their `ts_event` is the local time, which
//! on the sample host runs ~1.27 s behind the exchange clock.
//! Several files given in order continue one another (book state and ids carry over).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result, bail};

use super::{ImportOptions, ImportStats, next_line, open_text_counted};
use crate::event::{EventSink, Interner};
use crate::feeds::binance::{
    BookSync, DepthDiff, Market, Message, SyncState, parse_message, trade_event,
};

/// True when `line` looks like `<digits> {` (a raw capture line).
pub fn looks_like(line: &str) -> bool {
    match line.split_once(' ') {
        Some((ts, rest)) => {
            !ts.is_empty() && ts.bytes().all(|b| b.is_ascii_digit()) && rest.starts_with('{')
        }
        None => false,
    }
}

/// The symbol a capture file is named after: `btcusd_perp_20240808.gz` → `BTCUSD_PERP`.
fn symbol_from_file_name(path: &Path) -> Option<String> {
    let stem = super::file_stem(path);
    let base = match stem.rsplit_once('_') {
        Some((head, tail)) if tail.bytes().all(|b| b.is_ascii_digit()) => head,
        _ => stem.as_str(),
    };
    (!base.is_empty()).then(|| base.to_ascii_uppercase())
}

struct State<'o> {
    opts: &'o ImportOptions,
    market: Option<Market>,
    venue: Option<Arc<str>>,
    names: Interner,
    books: HashMap<Arc<str>, BookSync>,
}

impl State<'_> {
    fn venue(&mut self, msg: &Message<'_>) -> Option<Arc<str>> {
        if self.venue.is_none() {
            let market = msg.market()?;
            self.market = Some(market);
            let name = self.opts.venue.as_deref().unwrap_or(market.venue());
            self.venue = Some(self.names.intern(name));
        }
        self.venue.clone()
    }

    fn symbol(&mut self, name: &str) -> Arc<str> {
        let name = self.opts.symbol.as_deref().unwrap_or(name);
        self.names.intern(name)
    }

    fn book(&mut self, venue: &Arc<str>, symbol: &Arc<str>) -> &mut BookSync {
        let market = self.market.unwrap_or(Market::Spot);
        self.books
            .entry(symbol.clone())
            .or_insert_with(|| BookSync::new(market, venue.clone(), symbol.clone()))
    }
}

/// Imports `paths` in order as one continuous capture.
pub fn import(
    paths: &[PathBuf],
    opts: &ImportOptions,
    sink: &mut dyn EventSink,
    stats: &mut ImportStats,
    progress: &dyn Fn(u64),
) -> Result<()> {
    let mut state = State {
        opts,
        market: None,
        venue: None,
        names: Interner::default(),
        books: HashMap::new(),
    };
    let bytes = Arc::new(AtomicU64::new(0));
    for path in paths {
        import_file(path, &mut state, sink, stats, &bytes, progress)?;
    }
    let mut symbols: Vec<_> = state.books.keys().cloned().collect();
    symbols.sort();
    for symbol in symbols {
        let Some(sync) = state.books.get_mut(&symbol) else {
            continue;
        };
        sync.finish();
        let s = sync.stats().clone();
        if s.snapshots == 0 {
            stats.warnings.push(format!(
                "{symbol}: no depth snapshot in the input, so no book could be built \
                 ({} diffs dropped); import the file holding the snapshot first",
                s.diffs_unsynced
            ));
        } else if *sync.state() == SyncState::AwaitingSnapshot {
            stats.warnings.push(format!(
                "{symbol}: the book broke sequence and no later snapshot repaired it; it is \
                 invalid from the last gap to the end ({} diffs dropped)",
                s.diffs_unsynced
            ));
        }
    }
    Ok(())
}

fn import_file(
    path: &Path,
    state: &mut State<'_>,
    sink: &mut dyn EventSink,
    stats: &mut ImportStats,
    bytes: &Arc<AtomicU64>,
    progress: &dyn Fn(u64),
) -> Result<()> {
    let mut reader = open_text_counted(path, bytes.clone())?;
    let file_symbol = symbol_from_file_name(path);
    let mut line = String::with_capacity(1 << 16);
    let mut line_no = 0u64;
    while next_line(&mut *reader, &mut line, path, line_no + 1)? {
        line_no += 1;
        stats.records += 1;
        if line_no.is_multiple_of(8192) {
            progress(bytes.load(Ordering::Relaxed));
        }
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("{}:{line_no}", path.display());
        let Some((ts, json)) = line.split_once(' ') else {
            bail!(
                "{}: expected `<local_ns> <json>`, found no space in {:?}",
                at(),
                snippet(&line)
            );
        };
        let local: i64 = ts.parse().with_context(|| {
            format!(
                "{}: the local timestamp {:?} is not an integer (ns)",
                at(),
                snippet(ts)
            )
        })?;
        let msg = parse_message(json).with_context(|| {
            format!(
                "{}: not a Binance stream message: {:?}",
                at(),
                snippet(json)
            )
        })?;
        let Some(venue) = state.venue(&msg) else {
            stats.skipped += 1;
            continue;
        };
        let result = match &msg {
            Message::Depth(d) => {
                let symbol = state.symbol(d.symbol);
                let diff = DepthDiff::from_update(d, local)?;
                state.book(&venue, &symbol).on_diff(diff, sink)
            }
            Message::Snapshot(s) => {
                // Spot snapshots name no symbol: the one book seen so far, else the
                // file name, tells which it is.
                let only_book = (state.books.len() == 1)
                    .then(|| state.books.keys().next().map(|k| k.to_string()))
                    .flatten();
                let name = match (
                    s.symbol,
                    state.opts.symbol.as_deref(),
                    only_book,
                    &file_symbol,
                ) {
                    (Some(sym), _, _, _) | (None, Some(sym), _, _) => sym.to_string(),
                    (None, None, Some(sym), _) => sym,
                    (None, None, None, Some(sym)) => sym.clone(),
                    _ => bail!(
                        "{}: a depth snapshot without a symbol, and the file name does not \
                         say which symbol it is; pass --symbol",
                        at()
                    ),
                };
                let symbol = state.symbol(&name);
                state.book(&venue, &symbol).on_snapshot(s, local, sink)
            }
            Message::Trade(t) => {
                let symbol = state.symbol(t.symbol);
                trade_event(&venue, &symbol, t, local).and_then(|e| sink.accept(e))
            }
            Message::BookTicker(_) | Message::Other(_) => {
                stats.skipped += 1;
                Ok(())
            }
        };
        result.with_context(at)?;
    }
    progress(bytes.load(Ordering::Relaxed));
    Ok(())
}

fn snippet(s: &str) -> String {
    s.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::book::L2Book;
    use crate::event::{Body, Event, Fixed};
    use crate::feeds::import::testdata::{fixture, import_error, real};
    use crate::feeds::import::{ImportFormat, import as import_any};

    /// `(u, bid px, bid qty, ask px, ask qty)` of every bookTicker in the files.
    fn book_tickers(paths: &[PathBuf]) -> Vec<(u64, [Fixed; 4])> {
        let mut out = Vec::new();
        for path in paths {
            let mut r = super::super::open_text(path).unwrap();
            let mut line = String::new();
            while next_line(&mut *r, &mut line, path, 0).unwrap() {
                let (_, json) = line.split_once(' ').unwrap();
                if let Message::BookTicker(b) = parse_message(json).unwrap() {
                    let f = |s: &str| s.parse::<Fixed>().unwrap();
                    out.push((
                        b.update_id,
                        [f(b.bid_price), f(b.bid_qty), f(b.ask_price), f(b.ask_qty)],
                    ));
                }
            }
        }
        out
    }

    /// Rebuilds the book from the events; returns the BBO after each diff's last level,
    /// keyed by the diff's final `u`, and the number of crossed consistent books.
    fn bbo_after_each_diff(events: &[Event]) -> (HashMap<u64, [Fixed; 4]>, usize) {
        let mut book = L2Book::new();
        let mut by_u = HashMap::new();
        let mut crossed = 0;
        for e in events {
            match &e.body {
                Body::Book(d) => {
                    book.apply(d);
                    if d.flags.contains(crate::event::Flags::LAST) {
                        crossed += book.is_crossed() as usize;
                        if !d.flags.contains(crate::event::Flags::SNAPSHOT) {
                            let (b, a) = (book.best_bid().unwrap(), book.best_ask().unwrap());
                            by_u.insert(e.venue_seq.unwrap(), [b.0, b.1, a.0, a.1]);
                        }
                    }
                }
                Body::Gap(_) => book.clear(),
                _ => {}
            }
        }
        (by_u, crossed)
    }

    fn check_oracle(paths: &[PathBuf], expect_checks: usize) -> Vec<Event> {
        let mut events: Vec<Event> = Vec::new();
        let stats = import_any(
            ImportFormat::Auto,
            paths,
            &ImportOptions::default(),
            &mut events,
            &|_| {},
        )
        .unwrap();
        assert_eq!(stats.gaps, 0, "{stats:?}");
        assert!(stats.warnings.is_empty(), "{:?}", stats.warnings);
        let (by_u, crossed) = bbo_after_each_diff(&events);
        assert_eq!(crossed, 0);
        let mut checked = 0;
        for (u, bbo) in book_tickers(paths) {
            if let Some(rebuilt) = by_u.get(&u) {
                assert_eq!(&bbo, rebuilt, "bookTicker u={u}");
                checked += 1;
            }
        }
        assert_eq!(checked, expect_checks);
        events
    }

    #[test]
    fn spot_btc_rebuilt_bbo_matches_every_book_ticker_and_trades_are_complete() {
        let (Some(a), Some(b)) = (
            real("hftbacktest/examples/spot/btcusdt_20240808.gz"),
            real("hftbacktest/examples/spot/btcusdt_20240809.gz"),
        ) else {
            return;
        };
        let events = check_oracle(&[a, b], 1072);
        let trades: Vec<&Event> = events
            .iter()
            .filter(|e| matches!(e.body, Body::Trade(_)))
            .collect();
        assert_eq!(trades.len(), 19904);
        let mut sum = Fixed::ZERO;
        for pair in trades.windows(2) {
            assert_eq!(pair[1].venue_seq.unwrap(), pair[0].venue_seq.unwrap() + 1);
        }
        for t in &trades {
            if let Body::Trade(tr) = &t.body {
                sum = sum.checked_add(tr.size).unwrap();
            }
        }
        assert_eq!(sum, "437.91552".parse::<Fixed>().unwrap());
        assert_eq!(trades[0].venue_seq, Some(3735683259));
        assert_eq!(&*events[0].venue, "binance");
        assert_eq!(&*events[0].symbol, "BTCUSDT");
        // pub_seq counts per topic from 1 and ts_recv never goes back.
        assert_eq!(trades.last().unwrap().pub_seq, 19904);
        assert!(events.windows(2).all(|w| w[0].ts_recv <= w[1].ts_recv));
    }

    #[test]
    fn usdm_btc_rebuilt_bbo_matches_every_book_ticker() {
        let Some(a) = real("hftbacktest/examples/usdm/btcusdt_20240808.gz") else {
            return;
        };
        let events = check_oracle(&[a], 629);
        assert_eq!(&*events[0].venue, "binance-usdm");
    }

    #[test]
    fn coinm_btc_two_days_stay_in_sync_across_files() {
        let (Some(a), Some(b)) = (
            real("hftbacktest/examples/cm/btcusd_perp_20240808.gz"),
            real("hftbacktest/examples/cm/btcusd_perp_20240809.gz"),
        ) else {
            return;
        };
        let events = check_oracle(&[a, b], 1885);
        assert_eq!(&*events[0].venue, "binance-coinm");
        assert_eq!(&*events[0].symbol, "BTCUSD_PERP");
    }

    #[test]
    fn capture_without_snapshot_gives_trades_and_a_warning() {
        let Some(b) = real("hftbacktest/examples/spot/btcusdt_20240809.gz") else {
            return;
        };
        let mut events: Vec<Event> = Vec::new();
        let stats = import_any(
            ImportFormat::BinanceRaw,
            &[b],
            &ImportOptions::default(),
            &mut events,
            &|_| {},
        )
        .unwrap();
        assert_eq!(stats.book_deltas, 0);
        assert_eq!(stats.trades, 10147);
        assert!(
            stats.warnings[0].contains("no depth snapshot"),
            "{:?}",
            stats.warnings
        );
    }

    #[test]
    fn fixture_slice_imports_and_skips_book_tickers() {
        let path = fixture("binance/spot_btcusdt_head.gz");
        let size = std::fs::metadata(&path).unwrap().len();
        let mut events: Vec<Event> = Vec::new();
        let seen = std::cell::Cell::new(0u64);
        let stats = import_any(
            ImportFormat::Auto,
            &[path],
            &ImportOptions::default(),
            &mut events,
            &|n| seen.set(n),
        )
        .unwrap();
        assert_eq!(
            seen.get(),
            size,
            "progress ends at the compressed file size"
        );
        assert!(stats.skipped > 0);
        assert!(stats.book_deltas > 2000, "{stats:?}");
        assert!(stats.trades > 0);
    }

    #[test]
    fn truncated_gzip_is_an_error_naming_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let full = std::fs::read(fixture("binance/spot_btcusdt_head.gz")).unwrap();
        let cut = dir.path().join("btcusdt_cut.gz");
        std::fs::write(&cut, &full[..full.len() / 2]).unwrap();
        let mut events: Vec<Event> = Vec::new();
        let err = import_error(ImportFormat::BinanceRaw, cut, &mut events);
        let msg = format!("{err:#}");
        assert!(msg.contains("btcusdt_cut.gz:"), "{msg}");
        assert!(msg.contains("truncated or corrupt"), "{msg}");
    }

    #[test]
    fn garbage_line_is_an_error_naming_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("btcusdt_x.txt");
        std::fs::write(
            &p,
            "1 {\"stream\":\"btcusdt@trade\",\"data\":{\"e\":\"trade\",\"E\":1,\"s\":\"BTCUSDT\",\"t\":1,\"p\":\"1\",\"q\":\"1\",\"T\":1,\"m\":true,\"M\":true}}\n\
             2 {\"stream\":\"btcusdt@trade\",\"data\":{\"oops\n",
        )
        .unwrap();
        let mut events: Vec<Event> = Vec::new();
        let err = import_error(ImportFormat::Auto, p, &mut events);
        let msg = format!("{err:#}");
        assert!(msg.contains("btcusdt_x.txt:2"), "{msg}");
        assert_eq!(events.len(), 1);
    }

    #[test]
    fn symbol_comes_from_capture_file_names() {
        assert_eq!(
            symbol_from_file_name(Path::new("a/btcusd_perp_20240808.gz")).as_deref(),
            Some("BTCUSD_PERP")
        );
        assert_eq!(
            symbol_from_file_name(Path::new("btcusdt_20240809.gz")).as_deref(),
            Some("BTCUSDT")
        );
    }
}
