//! Importer for LOBSTER message files (`<SYMBOL>_<YYYY-MM-DD>_<start>_<end>_message_<N>.csv`),
//! Nasdaq TotalView-ITCH rebuilt by lobsterdata.com. Venue `nasdaq`.
//!
//! Owns the aggregation of LOBSTER's order-level messages into price levels; never
//! writes anything itself.
//!
//! - Columns: time (seconds after midnight, up to ns), type, order id, size, price × 10⁴,
//!   direction (1 buy order, −1 sell order).
//! - Types 1 (add) add `size` at the level; 2 (partial cancel), 3 (delete) and 4 (visible
//!   execution) remove it. Each message is one book delta (the level's new total, `LAST`).
//! - Types 4 and 5 (hidden execution) also produce a trade; the aggressor is the side
//!   opposite the resting order. Type 5 changes no visible level. Type 6 (cross trade,
//!   auctions) is a trade with unknown aggressor; type 7 (halt) is skipped.
//! - Time: the file name's date at midnight America/New_York plus the seconds column,
//!   using the US daylight-saving rule in force since 2007 (EDT = UTC−4 from the second
//!   Sunday of March to the first Sunday of November, else EST = UTC−5); no local receive
//!   time exists, so `ts_recv = ts_event`.
//!
//! Cannot represent: order ids (aggregated away); hidden liquidity (type 5 trades have
//! no visible level); levels that existed before the first message. Give the matching
//! `*_orderbook_N.csv` ([`super::ImportOptions::lobster_book`]) to seed them: its first
//! row is the book *after* message 1, so it is emitted as a snapshot at message 1's time
//! and message 1's own book change is not applied again. Even seeded, only the top N
//! levels are known at the start: a deeper level shows only what later messages added to
//! it, and removals of unknown orders are clamped at zero.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result, bail};

use super::{ImportOptions, ImportStats, next_line, open_text, open_text_counted};
use crate::event::{
    Body, BookDelta, Event, EventSink, Fixed, Flags, Side, Trade, UnixNanos, NANOS_PER_SEC,
};

/// LOBSTER prices are integers in units of 10⁻⁴ dollars.
const PRICE_SCALE: u8 = 4;
/// Prices LOBSTER writes in the orderbook file for empty levels.
const DUMMY_PRICE: i64 = 9_999_999_999;

/// True when `line` has LOBSTER's six numeric message columns.
pub fn looks_like(line: &str) -> bool {
    let cols: Vec<&str> = line.split(',').collect();
    cols.len() == 6 && parse_message(line).is_ok()
}

/// One parsed message row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Msg {
    seconds_ns: i64,
    kind: u8,
    order_id: u64,
    size: i64,
    price: i64,
    side: Side,
}

fn parse_message(line: &str) -> Result<Msg> {
    let cols: Vec<&str> = line.split(',').collect();
    if cols.len() != 6 {
        bail!("expected 6 columns (time,type,order id,size,price,direction), found {}", cols.len());
    }
    let secs: Fixed = cols[0]
        .parse()
        .with_context(|| format!("time {:?} is not seconds after midnight", cols[0]))?;
    let seconds_ns = secs
        .rescale(9)
        .with_context(|| format!("time {:?} has more than 9 decimals", cols[0]))?
        .mantissa;
    let int = |i: usize, what: &str| -> Result<i64> {
        cols[i]
            .trim()
            .parse::<i64>()
            .with_context(|| format!("{what} {:?} is not an integer", cols[i]))
    };
    let kind = int(1, "type")?;
    if !(1..=7).contains(&kind) {
        bail!("type {kind} is not a LOBSTER event type (1..7)");
    }
    let side = match int(5, "direction")? {
        1 => Side::Bid,
        -1 => Side::Ask,
        d => bail!("direction {d} must be 1 (buy) or -1 (sell)"),
    };
    Ok(Msg {
        seconds_ns,
        kind: kind as u8,
        order_id: int(2, "order id")?.max(0) as u64,
        size: int(3, "size")?,
        price: int(4, "price")?,
        side,
    })
}

/// Symbol and date from `AAPL_2012-06-21_34200000_57600000_message_10.csv`.
fn name_parts(path: &Path) -> Result<(String, (i64, u32, u32))> {
    let stem = super::file_stem(path);
    let mut parts = stem.split('_');
    let symbol = parts.next().unwrap_or_default().to_string();
    let date = parts.next().unwrap_or_default();
    let ymd: Vec<&str> = date.split('-').collect();
    let parsed = (ymd.len() == 3)
        .then(|| Some((ymd[0].parse().ok()?, ymd[1].parse().ok()?, ymd[2].parse().ok()?)))
        .flatten();
    match parsed {
        Some(d) if !symbol.is_empty() => Ok((symbol, d)),
        _ => bail!(
            "{}: a LOBSTER file name must look like SYMBOL_YYYY-MM-DD_start_end_message_N.csv \
             (the date and symbol come from it)",
            path.display()
        ),
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Day of month of the `n`th Sunday (1-based) of a month.
fn nth_sunday(y: i64, m: u32, n: u32) -> u32 {
    // 1970-01-01 was a Thursday: weekday 0 = Sunday.
    let first_weekday = (days_from_civil(y, m, 1) + 4).rem_euclid(7) as u32;
    1 + (7 - first_weekday) % 7 + 7 * (n - 1)
}

/// UTC offset of New York on that date, in hours (daytime rule since 2007).
fn new_york_offset_hours(y: i64, m: u32, d: u32) -> i64 {
    let after_start = (m, d) >= (3, nth_sunday(y, 3, 2));
    let before_end = (m, d) < (11, nth_sunday(y, 11, 1));
    if after_start && before_end { -4 } else { -5 }
}

/// Midnight of the date in New York, as UTC ns.
fn midnight_ns((y, m, d): (i64, u32, u32)) -> UnixNanos {
    (days_from_civil(y, m, d) * 86_400 - new_york_offset_hours(y, m, d) * 3_600) * NANOS_PER_SEC
}

/// Imports one LOBSTER message file.
pub fn import(
    path: &Path,
    opts: &ImportOptions,
    sink: &mut dyn EventSink,
    stats: &mut ImportStats,
    progress: &dyn Fn(u64),
) -> Result<()> {
    let (file_symbol, date) = name_parts(path)?;
    let midnight = midnight_ns(date);
    let venue: Arc<str> = Arc::from(opts.venue.as_deref().unwrap_or("nasdaq"));
    let symbol: Arc<str> = Arc::from(opts.symbol.as_deref().unwrap_or(&file_symbol));
    let seed = match &opts.lobster_book {
        Some(book) => Some(read_seed(book)?),
        None => None,
    };
    let bytes = Arc::new(AtomicU64::new(0));
    let mut reader = open_text_counted(path, bytes.clone())?;
    let mut levels: HashMap<(Side, i64), i64> = HashMap::new();
    let mut clamped = 0u64;
    let mut line = String::new();
    let mut line_no = 0u64;
    let price = |p: i64| Fixed::new(p, PRICE_SCALE);
    let size = |s: i64| Fixed::new(s, 0);
    while next_line(&mut *reader, &mut line, path, line_no + 1)? {
        line_no += 1;
        stats.records += 1;
        if line_no % 8192 == 0 {
            progress(bytes.load(Ordering::Relaxed));
        }
        if line.is_empty() {
            continue;
        }
        let msg = parse_message(&line)
            .with_context(|| format!("{}:{line_no}: bad LOBSTER message row", path.display()))?;
        let ts = midnight + msg.seconds_ns;
        let event = |body: Body| Event {
            venue: venue.clone(),
            symbol: symbol.clone(),
            ts_event: ts,
            ts_recv: ts,
            venue_seq: None,
            prev_venue_seq: None,
            pub_seq: 0,
            body,
        };
        if matches!(msg.kind, 4..=6) {
            let aggressor = if msg.kind == 6 { Side::None } else { msg.side.opposite() };
            sink.accept(event(Body::Trade(Trade {
                price: price(msg.price),
                size: size(msg.size),
                aggressor,
                trade_id: msg.order_id.to_string(),
            })))?;
        }
        if line_no == 1
            && let Some(seed) = &seed
        {
            let n = seed.len();
            for (i, &(side, p, s)) in seed.iter().enumerate() {
                levels.insert((side, p), s);
                let flags = if i + 1 == n { Flags::SNAPSHOT.with(Flags::LAST) } else { Flags::SNAPSHOT };
                sink.accept(event(Body::Book(BookDelta {
                    side,
                    price: price(p),
                    size: size(s),
                    flags,
                })))?;
            }
            continue;
        }
        let change = match msg.kind {
            1 => msg.size,
            2..=4 => -msg.size,
            _ => {
                if msg.kind == 7 {
                    stats.skipped += 1;
                }
                continue;
            }
        };
        let level = levels.entry((msg.side, msg.price)).or_insert(0);
        *level += change;
        if *level < 0 {
            clamped += 1;
            *level = 0;
        }
        let new_size = *level;
        if new_size == 0 {
            levels.remove(&(msg.side, msg.price));
        }
        sink.accept(event(Body::Book(BookDelta {
            side: msg.side,
            price: price(msg.price),
            size: size(new_size),
            flags: Flags::LAST,
        })))?;
    }
    if clamped > 0 {
        stats.warnings.push(format!(
            "{}: {clamped} cancels/executions removed more than the book knew at their level \
             (orders older than the file{}); those levels were clamped at zero",
            path.display(),
            if seed.is_some() { " beyond the seeded depth" } else { "; pass the orderbook file to seed" }
        ));
    }
    progress(bytes.load(Ordering::Relaxed));
    Ok(())
}

/// One LOBSTER orderbook row as `(side, price, size)` levels, bids then asks, dummy
/// (empty) levels left out.
fn parse_book_row(line: &str) -> Result<Vec<(Side, i64, i64)>> {
    let nums: Vec<i64> = line
        .split(',')
        .map(|c| c.trim().parse::<i64>().with_context(|| format!("{c:?} is not an integer")))
        .collect::<Result<_>>()?;
    if nums.is_empty() || nums.len() % 4 != 0 {
        bail!("expected 4 columns per level (ask px, ask size, bid px, bid size), found {}", nums.len());
    }
    let mut bids = Vec::new();
    let mut asks = Vec::new();
    for lvl in nums.chunks(4) {
        if lvl[0].abs() != DUMMY_PRICE && lvl[1] > 0 {
            asks.push((Side::Ask, lvl[0], lvl[1]));
        }
        if lvl[2].abs() != DUMMY_PRICE && lvl[3] > 0 {
            bids.push((Side::Bid, lvl[2], lvl[3]));
        }
    }
    bids.extend(asks);
    Ok(bids)
}

fn read_seed(path: &Path) -> Result<Vec<(Side, i64, i64)>> {
    let mut r = open_text(path)?;
    let mut line = String::new();
    if !next_line(&mut *r, &mut line, path, 1)? {
        bail!("{}: the LOBSTER orderbook file is empty", path.display());
    }
    parse_book_row(&line).with_context(|| format!("{}:1: bad LOBSTER orderbook row", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::book::L2Book;
    use crate::feeds::import::testdata::{fixture, real};
    use crate::feeds::import::{ImportFormat, import as import_any};

    #[test]
    fn new_york_midnight_follows_daylight_saving() {
        // 2012-06-21 00:00 EDT = 04:00 UTC.
        assert_eq!(midnight_ns((2012, 6, 21)) / NANOS_PER_SEC, 1_340_251_200);
        // 2012-01-10 00:00 EST = 05:00 UTC.
        assert_eq!(midnight_ns((2012, 1, 10)) / NANOS_PER_SEC, 1_326_171_600);
        assert_eq!(nth_sunday(2012, 3, 2), 11);
        assert_eq!(nth_sunday(2012, 11, 1), 4);
    }

    /// Imports messages seeded from the book file, then checks that after every message
    /// the rebuilt book equals the published row on every level the seed made knowable
    /// (prices inside the seed's 10 levels); returns `(rows equal, rows)`.
    fn check_against_orderbook(messages: &Path, book: &Path) -> (usize, usize) {
        let opts = ImportOptions {
            lobster_book: Some(book.to_path_buf()),
            ..Default::default()
        };
        let mut events: Vec<Event> = Vec::new();
        import_any(ImportFormat::Auto, &[messages.to_path_buf()], &opts, &mut events, &|_| {})
            .unwrap();
        let rows: Vec<Vec<(Side, i64, i64)>> = std::fs::read_to_string(book)
            .unwrap()
            .lines()
            .map(|l| parse_book_row(l).unwrap())
            .collect();
        let kinds: Vec<u8> = std::fs::read_to_string(messages)
            .unwrap()
            .lines()
            .map(|l| parse_message(l).unwrap().kind)
            .collect();
        let worst = |side| rows[0].iter().filter(|l| l.0 == side).map(|l| l.1).last().unwrap();
        let (worst_bid, worst_ask) = (worst(Side::Bid), worst(Side::Ask));
        let knowable = |l: &(Side, i64, i64)| match l.0 {
            Side::Bid => l.1 >= worst_bid,
            _ => l.1 <= worst_ask,
        };
        let mut l2 = L2Book::new();
        let mut events = events.into_iter();
        let mut equal = 0;
        for (i, kind) in kinds.iter().enumerate() {
            if matches!(kind, 4..=6) {
                assert!(matches!(events.next().unwrap().body, Body::Trade(_)));
            }
            if matches!(kind, 1..=4) || i == 0 {
                for e in events.by_ref() {
                    let Body::Book(d) = &e.body else { panic!("{e:?}") };
                    l2.apply(d);
                    if d.flags.contains(Flags::LAST) {
                        break;
                    }
                }
            }
            let mine: Vec<(Side, i64, i64)> = [Side::Bid, Side::Ask]
                .into_iter()
                .flat_map(|s| {
                    l2.levels(s)
                        .map(move |(p, q)| (s, p.rescale(4).unwrap().mantissa, q.mantissa))
                        .collect::<Vec<_>>()
                })
                .filter(knowable)
                .collect();
            let theirs: Vec<_> = rows[i].iter().copied().filter(knowable).collect();
            if mine == theirs {
                equal += 1;
            } else {
                eprintln!("row {}: mine {mine:?}\ntheirs {theirs:?}", i + 1);
            }
        }
        assert!(events.next().is_none());
        (equal, rows.len())
    }

    #[test]
    fn fixture_rebuilt_top_levels_equal_published_rows() {
        let msgs = fixture("lobster/AAPL_2012-06-21_34200000_57600000_message_10.csv");
        let book = fixture("lobster/AAPL_2012-06-21_34200000_57600000_orderbook_10.csv");
        let (equal, rows) = check_against_orderbook(&msgs, &book);
        assert_eq!((equal, rows), (400, 400));
    }

    #[test]
    fn full_sample_matches_every_visible_transition() {
        let (Some(msgs), Some(book)) = (
            real("OrderBook_HLS_lobster/data/AAPL_2012-06-21_34200000_57600000_message_10.csv"),
            real("OrderBook_HLS_lobster/data/AAPL_2012-06-21_34200000_57600000_orderbook_10.csv"),
        ) else {
            return;
        };
        let (equal, rows) = check_against_orderbook(&msgs, &book);
        assert_eq!((equal, rows), (999, 999));
    }

    #[test]
    fn executions_are_trades_and_times_are_new_york() {
        let msgs = fixture("lobster/AAPL_2012-06-21_34200000_57600000_message_10.csv");
        let mut events: Vec<Event> = Vec::new();
        let stats = import_any(ImportFormat::Lobster, &[msgs], &ImportOptions::default(), &mut events, &|_| {})
            .unwrap();
        assert!(stats.trades > 0);
        assert_eq!(&*events[0].venue, "nasdaq");
        assert_eq!(&*events[0].symbol, "AAPL");
        // 34200.004241176 s after midnight EDT = 13:30:00.004241176 UTC.
        assert_eq!(events[0].ts_event, 1_340_285_400_004_241_176);
    }

    #[test]
    fn bad_lobster_row_names_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("AAPL_2012-06-21_0_0_message_10.csv");
        std::fs::write(&p, "34200.1,1,1,10,5853300,1\n34200.2,9,1,10,5853300,1\n").unwrap();
        let mut events: Vec<Event> = Vec::new();
        let err = import_any(ImportFormat::Lobster, &[p], &ImportOptions::default(), &mut events, &|_| {})
            .unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("message_10.csv:2") && msg.contains("type 9"), "{msg}");
    }
}
