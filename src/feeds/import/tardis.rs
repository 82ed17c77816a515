//! Importer for Tardis.dev CSV files (plain or `.csv.gz`): `incremental_book_L2`,
//! `trades` and `book_snapshot_N`, told apart by their header.
//!
//! Owns CSV row parsing and the mapping to events; never writes anything itself.
//! Timestamps are µs since the epoch: `timestamp` → `ts_event`, `local_timestamp` →
//! `ts_recv`. The venue is the Tardis exchange name (`deribit`, `binance-futures`, ...).
//!
//! - `incremental_book_L2`: each row is one level's new amount (0 deletes). Rows sharing
//!   `local_timestamp` (and symbol) form one message: `LAST` marks its final row.
//!   `is_snapshot=true` rows carry `SNAPSHOT`; a run of snapshot rows sharing a
//!   `local_timestamp` is one snapshot with `LAST` only on its final row, so a snapshot arriving after incremental data
//!   replaces the whole book (Tardis sends one on every reconnection).
//! - `trades`: one trade per row; `side` is the aggressor (`unknown` → none).
//! - `book_snapshot_N`: every row is a *full replacement* of the top N levels per side,
//!   emitted as N×2 snapshot levels (empty cells skipped). Levels beyond N are unknown
//!   and disappear from the rebuilt book: such a file cannot show deeper liquidity, and
//!   a level that leaves the top N looks deleted.
//!
//! Cannot represent: Tardis `quotes`, `derivative_ticker`, `liquidations` (refused with
//! an error); per-level order counts; the book before the file's first snapshot (Tardis
//! files start with one, but a file cut mid-day may not).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result, bail};

use super::{ImportOptions, ImportStats, next_line, open_text_counted};
use crate::event::{
    Body, BookDelta, Event, EventSink, Fixed, Flags, Interner, Side, Trade, UnixNanos,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    IncrementalL2,
    Trades,
    Snapshot,
}

/// A book row waiting for the next one to know whether it ends its message.
struct Pending {
    event: Event,
    snapshot: bool,
}

/// Imports one Tardis CSV file.
pub fn import(
    path: &Path,
    opts: &ImportOptions,
    sink: &mut dyn EventSink,
    stats: &mut ImportStats,
    progress: &dyn Fn(u64),
) -> Result<()> {
    let bytes = Arc::new(AtomicU64::new(0));
    let mut reader = open_text_counted(path, bytes.clone())?;
    let mut line = String::new();
    if !next_line(&mut *reader, &mut line, path, 1)? {
        bail!(
            "{}: empty file, expected a Tardis CSV header",
            path.display()
        );
    }
    let header: Vec<String> = line.split(',').map(str::to_string).collect();
    let kind = match header.get(4..).map(|h| h.join(",")) {
        Some(rest) if rest == "is_snapshot,side,price,amount" => Kind::IncrementalL2,
        Some(rest) if rest == "id,side,price,amount" => Kind::Trades,
        Some(rest) if rest.starts_with("asks[0].price,") => Kind::Snapshot,
        _ => bail!(
            "{}:1: unsupported Tardis CSV header {:?}; this importer reads \
             incremental_book_L2, trades and book_snapshot_N files",
            path.display(),
            line.chars().take(120).collect::<String>()
        ),
    };
    if header.get(..4).map(|h| h.join(",")).as_deref()
        != Some("exchange,symbol,timestamp,local_timestamp")
    {
        bail!("{}:1: not a Tardis CSV header: {line:?}", path.display());
    }
    let snapshot_cols = if kind == Kind::Snapshot {
        snapshot_columns(&header[4..]).with_context(|| format!("{}:1", path.display()))?
    } else {
        Vec::new()
    };
    let mut names = Interner::default();
    let mut pending: Option<Pending> = None;
    let mut line_no = 1u64;
    while next_line(&mut *reader, &mut line, path, line_no + 1)? {
        line_no += 1;
        stats.records += 1;
        if line_no.is_multiple_of(8192) {
            progress(bytes.load(Ordering::Relaxed));
        }
        if line.is_empty() {
            continue;
        }
        let at = || format!("{}:{line_no}", path.display());
        let cols: Vec<&str> = line.split(',').collect();
        if cols.len() != header.len() {
            bail!(
                "{}: {} columns where the header has {}: {:?}",
                at(),
                cols.len(),
                header.len(),
                line.chars().take(120).collect::<String>()
            );
        }
        let venue = names.intern(opts.venue.as_deref().unwrap_or(cols[0]));
        let symbol = names.intern(opts.symbol.as_deref().unwrap_or(cols[1]));
        let ts_event = micros(cols[2]).with_context(|| format!("{}: timestamp", at()))?;
        let ts_recv = micros(cols[3]).with_context(|| format!("{}: local_timestamp", at()))?;
        let base = Event {
            venue,
            symbol,
            ts_event,
            ts_recv,
            venue_seq: None,
            prev_venue_seq: None,
            pub_seq: 0,
            body: Body::Gap(crate::event::Gap {
                reason: crate::event::GapReason::Resync,
                missing: None,
                publisher: String::new(),
            }),
        };
        match kind {
            Kind::Trades => {
                let aggressor = match cols[5] {
                    "buy" => Side::Bid,
                    "sell" => Side::Ask,
                    _ => Side::None,
                };
                let mut e = base;
                e.venue_seq = cols[4].parse().ok();
                e.body = Body::Trade(Trade {
                    price: fixed(cols[6], "price").with_context(at)?,
                    size: fixed(cols[7], "amount").with_context(at)?,
                    aggressor,
                    trade_id: cols[4].into(),
                });
                sink.accept(e)?;
            }
            Kind::IncrementalL2 => {
                let snapshot = match cols[4] {
                    "true" => true,
                    "false" => false,
                    other => bail!("{}: is_snapshot must be true or false, not {other:?}", at()),
                };
                let side = side(cols[5]).with_context(at)?;
                let mut e = base;
                e.body = Body::Book(BookDelta {
                    side,
                    price: fixed(cols[6], "price").with_context(at)?,
                    size: fixed(cols[7], "amount").with_context(at)?,
                    flags: if snapshot {
                        Flags::SNAPSHOT
                    } else {
                        Flags::default()
                    },
                });
                if let Some(prev) = pending.take() {
                    let same_message = prev.event.symbol == e.symbol
                        && prev.snapshot == snapshot
                        && prev.event.ts_recv == e.ts_recv;
                    flush(prev, !same_message, sink)?;
                }
                pending = Some(Pending { event: e, snapshot });
            }
            Kind::Snapshot => {
                let mut levels = Vec::with_capacity(snapshot_cols.len());
                for &(side, price_col, amount_col) in &snapshot_cols {
                    let (p, a) = (cols[price_col], cols[amount_col]);
                    if p.is_empty() || a.is_empty() {
                        continue;
                    }
                    levels.push((
                        side,
                        fixed(p, "price").with_context(at)?,
                        fixed(a, "amount").with_context(at)?,
                    ));
                }
                let n = levels.len();
                for (i, (side, price, size)) in levels.into_iter().enumerate() {
                    let mut e = base.clone();
                    let mut flags = Flags::SNAPSHOT;
                    if i + 1 == n {
                        flags = flags.with(Flags::LAST);
                    }
                    e.body = Body::Book(BookDelta {
                        side,
                        price,
                        size,
                        flags,
                    });
                    sink.accept(e)?;
                }
            }
        }
    }
    if let Some(prev) = pending.take() {
        flush(prev, true, sink)?;
    }
    progress(bytes.load(Ordering::Relaxed));
    Ok(())
}

fn flush(mut p: Pending, last: bool, sink: &mut dyn EventSink) -> Result<()> {
    if last && let Body::Book(d) = &mut p.event.body {
        d.flags = d.flags.with(Flags::LAST);
    }
    sink.accept(p.event)
}

/// `(side, price column, amount column)` for each level, bids first then asks, best first.
fn snapshot_columns(names: &[String]) -> Result<Vec<(Side, usize, usize)>> {
    let mut bids = Vec::new();
    let mut asks = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let Some(rest) = name.strip_suffix(".price") else {
            continue;
        };
        let (side, list, prefix) = if rest.starts_with("bids[") {
            (Side::Bid, &mut bids, "bids[")
        } else if rest.starts_with("asks[") {
            (Side::Ask, &mut asks, "asks[")
        } else {
            bail!("unexpected book_snapshot column {name:?}");
        };
        let level: usize = rest
            .strip_prefix(prefix)
            .and_then(|r| r.strip_suffix(']'))
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("unexpected book_snapshot column {name:?}"))?;
        let amount = format!("{rest}.amount");
        let j = names
            .iter()
            .position(|n| *n == amount)
            .with_context(|| format!("column {name:?} has no {amount:?} beside it"))?;
        list.push((level, (side, i + 4, j + 4)));
    }
    bids.sort_by_key(|l| l.0);
    asks.sort_by_key(|l| l.0);
    Ok(bids.into_iter().chain(asks).map(|l| l.1).collect())
}

fn micros(s: &str) -> Result<UnixNanos> {
    let us: i64 = s
        .parse()
        .with_context(|| format!("{s:?} is not an integer count of microseconds"))?;
    us.checked_mul(1_000)
        .with_context(|| format!("{s:?} µs is out of range"))
}

fn fixed(s: &str, what: &str) -> Result<Fixed> {
    s.parse::<Fixed>()
        .with_context(|| format!("bad {what} {s:?}"))
}

fn side(s: &str) -> Result<Side> {
    match s {
        "bid" => Ok(Side::Bid),
        "ask" => Ok(Side::Ask),
        other => bail!("side must be bid or ask, not {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::book::L2Book;
    use crate::feeds::import::testdata::fixture;
    use crate::feeds::import::{ImportFormat, import as import_any};

    fn run(path: &Path) -> Result<(Vec<Event>, ImportStats)> {
        let mut events: Vec<Event> = Vec::new();
        let stats = import_any(
            ImportFormat::Auto,
            &[path.to_path_buf()],
            &ImportOptions::default(),
            &mut events,
            &|_| {},
        )?;
        Ok((events, stats))
    }

    fn book(events: &[Event]) -> L2Book {
        let mut b = L2Book::new();
        for e in events {
            if let Body::Book(d) = &e.body {
                b.apply(d);
            }
        }
        b
    }

    #[test]
    fn incremental_l2_snapshot_rows_form_one_snapshot() {
        let (events, stats) = run(&fixture(
            "tardis/deribit_incremental_book_L2_BTC-PERPETUAL.csv",
        ))
        .unwrap();
        assert_eq!(stats.book_deltas, 15);
        let lasts = events
            .iter()
            .filter(|e| matches!(&e.body, Body::Book(d) if d.flags.contains(Flags::LAST)))
            .count();
        assert_eq!(lasts, 1, "one snapshot, one LAST");
        assert_eq!(&*events[0].venue, "deribit");
        assert_eq!(events[0].ts_recv, 1585699200355684000);
        assert!(book(&events).is_consistent());
    }

    #[test]
    fn snapshot_after_incremental_data_replaces_the_book() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x_incremental_book_L2.csv");
        std::fs::write(
            &p,
            "exchange,symbol,timestamp,local_timestamp,is_snapshot,side,price,amount\n\
             ex,S,1,1,true,bid,10,1\n\
             ex,S,1,1,true,ask,11,1\n\
             ex,S,2,2,false,bid,9,5\n\
             ex,S,2,2,false,bid,10,0\n\
             ex,S,3,3,true,bid,8,2\n\
             ex,S,3,3,true,ask,12,2\n",
        )
        .unwrap();
        let (events, _) = run(&p).unwrap();
        let b = book(&events);
        assert_eq!(
            b.depth(),
            (1, 1),
            "level 9 from before the snapshot is gone"
        );
        assert_eq!(b.best_bid().unwrap().0.to_string(), "8");
        let flags: Vec<Flags> = events
            .iter()
            .filter_map(|e| match &e.body {
                Body::Book(d) => Some(d.flags),
                _ => None,
            })
            .collect();
        assert_eq!(
            flags,
            vec![
                Flags::SNAPSHOT,
                Flags::SNAPSHOT.with(Flags::LAST),
                Flags::default(),
                Flags::LAST,
                Flags::SNAPSHOT,
                Flags::SNAPSHOT.with(Flags::LAST)
            ]
        );
    }

    #[test]
    fn book_snapshot_rows_are_full_replacements() {
        let (events, stats) = run(&fixture(
            "tardis/binance-futures_book_snapshot_5_BTCUSDT.csv",
        ))
        .unwrap();
        assert_eq!(stats.book_deltas, 10 * 10);
        let b = book(&events);
        assert_eq!(b.depth(), (5, 5));
        assert_eq!(&*events[0].venue, "binance-futures");
        let (events25, _) = run(&fixture(
            "tardis/binance-futures_book_snapshot_25_BTCUSDT.csv",
        ))
        .unwrap();
        assert_eq!(book(&events25).depth(), (25, 25));
        assert_eq!(
            book(&events25).best_ask().unwrap().0.to_string(),
            b.best_ask().unwrap().0.to_string()
        );
    }

    #[test]
    fn trades_keep_ids_and_aggressor() {
        let (events, stats) = run(&fixture("tardis/bitmex_trades_XBTUSD.csv")).unwrap();
        assert_eq!(stats.trades, 10);
        match &events[0].body {
            Body::Trade(t) => {
                assert_eq!(t.aggressor, Side::Ask);
                assert_eq!(t.trade_id, "ccc3c1fa-212c-e8b0-1706-9b9c4f3d5ecf");
                assert_eq!(t.size.to_string(), "2152");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn events_that_fail_validation_stop_the_import_naming_the_rule() {
        let dir = tempfile::tempdir().unwrap();
        let header = "exchange,symbol,timestamp,local_timestamp,id,side,price,amount\n";
        for (row, reason) in [
            ("ex,S,1,1,a,buy,0,2", "trade price 0 must be above zero"),
            (
                "ex,S,1,1,a,buy,-1.5,2",
                "trade price -1.5 must be above zero",
            ),
            ("ex,S,1,1,a,buy,1.5,0", "trade size 0 must be above zero"),
            (
                "_journal,S,1,1,a,buy,1.5,2",
                "venue \"_journal\" must start with",
            ),
            ("ex,,1,1,a,buy,1.5,2", "symbol \"\" must not be empty"),
            ("ex,S,1,-1,a,buy,1.5,2", "ts_recv -1000 is outside"),
        ] {
            let p = dir.path().join("t.csv");
            std::fs::write(&p, format!("{header}ex,S,1,1,a,buy,1.5,2\n{row}\n")).unwrap();
            let err = format!("{:#}", run(&p).unwrap_err());
            assert!(err.contains(reason), "{row}: {err}");
        }
    }

    #[test]
    fn unsupported_tardis_kind_and_bad_rows_are_clear_errors() {
        let err = run(&fixture("tardis/huobi-dm-swap_quotes_BTC-USD.csv")).unwrap_err();
        assert!(
            format!("{err:#}").contains("unsupported Tardis CSV header"),
            "{err:#}"
        );
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.csv");
        std::fs::write(
            &p,
            "exchange,symbol,timestamp,local_timestamp,id,side,price,amount\nex,S,1,1,a,buy,1.5,2\nex,S,1,x,a,buy,1.5,2\n",
        )
        .unwrap();
        let err = format!("{:#}", run(&p).unwrap_err());
        assert!(
            err.contains("t.csv:3") && err.contains("local_timestamp"),
            "{err}"
        );
    }
}
