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
//! - A level-N file (`_message_N`) only carries messages that touch the top N levels, so
//!   the book is kept to N levels per side: a level pushed beyond N is deleted (a second
//!   delta in the same message), because the file says nothing more about it.
//! - `venue_seq` is the message's line number (LOBSTER has no sequence of its own).
//! - Types 4 and 5 (hidden execution) also produce a trade; the aggressor is the side
//!   opposite the resting order. Type 5 changes no visible level. Type 6 (cross trade,
//!   auctions) is a trade with unknown aggressor; type 7 (halt) is skipped.
//! - Time: the file name's date at midnight America/New_York plus the seconds column,
//!   using the US daylight-saving rule in force since 2007 (EDT = UTC−4 from the second
//!   Sunday of March to the first Sunday of November, else EST = UTC−5); no local receive
//!   time exists, so `ts_recv = ts_event`.
//!
//! Cannot represent: order ids (aggregated away); hidden liquidity (type 5 trades have
//! no visible level); levels that existed before the first message; and, since a
//! level-N message file only carries changes inside the top N levels, anything that
//! happens deeper (a level coming back into the top N from there has an unknown size).
//!
//! Give the matching `*_orderbook_N.csv` ([`super::ImportOptions::lobster_book`],
//! `--lobster-book`) and the book is exact: its row *i* is the top N after message *i*,
//! so row 1 is emitted as a snapshot at message 1's time and each later message emits
//! how its row differs from the previous one (which includes levels returning from
//! depth). Each message is still checked against its row (the row must extend the book
//! the message alone predicts); disagreements are counted in a warning. Without it,
//! messages are aggregated best effort: the book starts empty, levels beyond N are
//! dropped, and removals of orders the book never saw are clamped at zero (warned).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result, bail};

use super::{ImportOptions, ImportStats, next_line, open_text, open_text_counted};
use crate::event::{
    Body, BookDelta, Event, EventSink, Fixed, Flags, NANOS_PER_SEC, Side, Trade, UnixNanos,
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
        bail!(
            "expected 6 columns (time,type,order id,size,price,direction), found {}",
            cols.len()
        );
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
    let size = int(3, "size")?;
    if size < 0 {
        bail!("size {size} is negative (LOBSTER sizes are share counts)");
    }
    Ok(Msg {
        seconds_ns,
        kind: kind as u8,
        order_id: int(2, "order id")?.max(0) as u64,
        size,
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
        .then(|| {
            Some((
                ymd[0].parse().ok()?,
                ymd[1].parse().ok()?,
                ymd[2].parse().ok()?,
            ))
        })
        .flatten();
    let valid = |&(y, m, d): &(i64, u32, u32)| {
        // A real calendar date (no month 13, no June 31) within i64 nanoseconds.
        let (Ok(y16), Ok(m8), Ok(d8)) = (i16::try_from(y), i8::try_from(m), i8::try_from(d)) else {
            return false;
        };
        jiff::civil::Date::new(y16, m8, d8).is_ok() && (1678..=2261).contains(&y)
    };
    match parsed {
        Some(d) if !symbol.is_empty() && valid(&d) => Ok((symbol, d)),
        _ => bail!(
            "{}: a LOBSTER file name must look like SYMBOL_YYYY-MM-DD_start_end_message_N.csv \
             with a real date between 1678 and 2261 (the date and symbol come from it)",
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
    let mut rows = match &opts.lobster_book {
        Some(book) => Some((book.as_path(), open_text(book)?)),
        None => None,
    };
    let bytes = Arc::new(AtomicU64::new(0));
    let mut reader = open_text_counted(path, bytes.clone())?;
    let depth = depth_from_name(path);
    let mut book = Levels::default();
    let (mut clamped, mut disagree) = (0u64, 0u64);
    let (mut line, mut row_line) = (String::new(), String::new());
    let mut line_no = 0u64;
    let price = |p: i64| Fixed::new(p, PRICE_SCALE);
    let size = |s: i64| Fixed::new(s, 0);
    while next_line(&mut *reader, &mut line, path, line_no + 1)? {
        line_no += 1;
        stats.records += 1;
        if line_no.is_multiple_of(8192) {
            progress(bytes.load(Ordering::Relaxed));
        }
        if line.is_empty() {
            continue;
        }
        let msg = parse_message(&line)
            .with_context(|| format!("{}:{line_no}: bad LOBSTER message row", path.display()))?;
        let ts = midnight.checked_add(msg.seconds_ns).with_context(|| {
            format!(
                "{}:{line_no}: time {} s after midnight is out of range",
                path.display(),
                msg.seconds_ns / NANOS_PER_SEC
            )
        })?;
        let event = |body: Body| Event {
            venue: venue.clone(),
            symbol: symbol.clone(),
            ts_event: ts,
            ts_recv: ts,
            // LOBSTER has no venue sequence; the line number identifies the message.
            venue_seq: Some(line_no),
            prev_venue_seq: None,
            pub_seq: 0,
            body,
        };
        if matches!(msg.kind, 4..=6) {
            let aggressor = if msg.kind == 6 {
                Side::None
            } else {
                msg.side.opposite()
            };
            sink.accept(event(Body::Trade(Trade {
                price: price(msg.price),
                size: size(msg.size),
                aggressor,
                trade_id: compact_str::ToCompactString::to_compact_string(&msg.order_id),
            })))?;
        }
        if msg.kind == 7 {
            stats.skipped += 1;
        }
        let mut deltas: Vec<BookDelta> = Vec::new();
        if let Some((book_path, row_reader)) = rows.as_mut() {
            // The orderbook row is the truth after this message: emit how it differs
            // from the previous one, and check the message explains it.
            if !next_line(&mut **row_reader, &mut row_line, book_path, line_no)? {
                bail!(
                    "{}: has fewer rows than {} has messages (row {line_no} missing); give \
                     the orderbook file that matches the message file",
                    book_path.display(),
                    path.display()
                );
            }
            let row = parse_book_row(&row_line).with_context(|| {
                format!(
                    "{}:{line_no}: bad LOBSTER orderbook row",
                    book_path.display()
                )
            })?;
            let next = Levels::from_row(&row);
            let snapshot = line_no == 1;
            if !snapshot {
                let mut predicted = book.clone();
                predicted.apply(&msg, depth);
                disagree += !next.extends(&predicted) as u64;
            }
            let flags = if snapshot {
                Flags::SNAPSHOT
            } else {
                Flags::default()
            };
            for (side, p, s) in book.diff_to(&next, snapshot) {
                deltas.push(BookDelta {
                    side,
                    price: price(p),
                    size: size(s),
                    flags,
                });
            }
            book = next;
        } else {
            let (changed, dropped, was_clamped) = book.apply(&msg, depth);
            clamped += was_clamped as u64;
            for (side, p, s) in changed.into_iter().chain(dropped) {
                deltas.push(BookDelta {
                    side,
                    price: price(p),
                    size: size(s),
                    flags: Flags::default(),
                });
            }
        }
        if let Some(last) = deltas.last_mut() {
            last.flags = last.flags.with(Flags::LAST);
        }
        for d in deltas {
            sink.accept(event(Body::Book(d)))?;
        }
    }
    if disagree > 0 {
        stats.warnings.push(format!(
            "{}: {disagree} messages do not explain the orderbook row that follows them \
             (is it the matching orderbook file?); the rows were trusted",
            path.display()
        ));
    }
    if clamped > 0 {
        stats.warnings.push(format!(
            "{}: {clamped} cancels/executions removed more than the book knew at their level \
             (orders older than the file; pass the orderbook file to seed); those levels \
             were clamped at zero",
            path.display()
        ));
    }
    progress(bytes.load(Ordering::Relaxed));
    Ok(())
}

/// Aggregate size per raw price, per side.
#[derive(Clone, Default, PartialEq, Eq, Debug)]
struct Levels {
    bids: BTreeMap<i64, i64>,
    asks: BTreeMap<i64, i64>,
}

impl Levels {
    fn side(&mut self, side: Side) -> &mut BTreeMap<i64, i64> {
        match side {
            Side::Ask => &mut self.asks,
            _ => &mut self.bids,
        }
    }

    fn from_row(row: &[(Side, i64, i64)]) -> Levels {
        let mut l = Levels::default();
        for &(side, p, s) in row {
            l.side(side).insert(p, s);
        }
        l
    }

    /// Applies one message: returns the changed level `(side, price, new size)`, a level
    /// pushed beyond `depth` (deleted), and whether a removal was clamped at zero.
    #[allow(clippy::type_complexity)]
    fn apply(
        &mut self,
        msg: &Msg,
        depth: Option<usize>,
    ) -> (Option<(Side, i64, i64)>, Option<(Side, i64, i64)>, bool) {
        let change = match msg.kind {
            1 => msg.size,
            2..=4 => -msg.size,
            _ => return (None, None, false),
        };
        let levels = self.side(msg.side);
        let level = levels.entry(msg.price).or_insert(0);
        // Sizes are non-negative (parse_message), so only absurd totals saturate.
        *level = level.saturating_add(change);
        let clamped = *level < 0;
        let new_size = (*level).max(0);
        if new_size == 0 {
            levels.remove(&msg.price);
        }
        // A level-N file only carries changes inside the top N levels: a level pushed
        // out is no longer tracked by the file, so it leaves the book.
        let dropped = depth
            .and_then(|n| self.drop_beyond(msg.side, n))
            .map(|p| (msg.side, p, 0));
        (Some((msg.side, msg.price, new_size)), dropped, clamped)
    }

    /// True when `self` (a published row) holds every level of `known` at the same
    /// rank, best first; levels beyond may have come back from unseen depth.
    fn extends(&self, known: &Levels) -> bool {
        let prefix = |a: &BTreeMap<i64, i64>, b: &BTreeMap<i64, i64>, rev: bool| {
            let (a, b): (Vec<_>, Vec<_>) = if rev {
                (a.iter().rev().collect(), b.iter().rev().collect())
            } else {
                (a.iter().collect(), b.iter().collect())
            };
            a.starts_with(&b)
        };
        prefix(&self.bids, &known.bids, true) && prefix(&self.asks, &known.asks, false)
    }

    /// The `(side, price, size)` changes turning `self` into `next` (size 0 deletes);
    /// with `full`, every level of `next` (a snapshot), bids first.
    fn diff_to(&self, next: &Levels, full: bool) -> Vec<(Side, i64, i64)> {
        let mut out = Vec::new();
        for (side, old, new) in [
            (Side::Bid, &self.bids, &next.bids),
            (Side::Ask, &self.asks, &next.asks),
        ] {
            for (&p, _) in old.iter().filter(|(p, _)| !new.contains_key(p)) {
                if !full {
                    out.push((side, p, 0));
                }
            }
            for (&p, &s) in new {
                if full || old.get(&p) != Some(&s) {
                    out.push((side, p, s));
                }
            }
        }
        out
    }

    /// Removes the worst level of `side` when it holds more than `n`; returns its price.
    fn drop_beyond(&mut self, side: Side, n: usize) -> Option<i64> {
        let levels = self.side(side);
        if levels.len() <= n {
            return None;
        }
        let worst = match side {
            Side::Ask => levels.keys().next_back().copied(),
            _ => levels.keys().next().copied(),
        }?;
        levels.remove(&worst);
        Some(worst)
    }
}

/// N of a `..._message_N.csv` file: how many levels per side the file tracks.
fn depth_from_name(path: &Path) -> Option<usize> {
    super::file_stem(path)
        .rsplit_once("_message_")
        .and_then(|(_, n)| n.parse().ok())
        .filter(|&n| n > 0)
}

/// One LOBSTER orderbook row as `(side, price, size)` levels, bids then asks, dummy
/// (empty) levels left out.
fn parse_book_row(line: &str) -> Result<Vec<(Side, i64, i64)>> {
    let nums: Vec<i64> = line
        .split(',')
        .map(|c| {
            c.trim()
                .parse::<i64>()
                .with_context(|| format!("{c:?} is not an integer"))
        })
        .collect::<Result<_>>()?;
    if nums.is_empty() || !nums.len().is_multiple_of(4) {
        bail!(
            "expected 4 columns per level (ask px, ask size, bid px, bid size), found {}",
            nums.len()
        );
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::book::L2Book;
    use crate::feeds::import::testdata::{fixture, import_error, real};
    use crate::feeds::import::{ImportFormat, import as import_any};

    #[test]
    fn impossible_dates_and_times_are_refused_not_overflowed() {
        for name in [
            "AAPL_2012-13-21_34200000_57600000_message_10.csv",
            "AAPL_2012-06-31_34200000_57600000_message_10.csv",
            "AAPL_99999999999-06-21_34200000_57600000_message_10.csv",
            "AAPL_9999-06-21_34200000_57600000_message_10.csv",
        ] {
            let e = name_parts(Path::new(name)).unwrap_err().to_string();
            assert!(e.contains("real date between 1678 and 2261"), "{name}: {e}");
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir
            .path()
            .join("AAPL_2012-06-21_34200000_57600000_message_10.csv");
        std::fs::write(&path, "9223372036.0,1,1,100,5850000,1\n").unwrap();
        let mut events: Vec<Event> = Vec::new();
        let e = import_error(ImportFormat::Lobster, path, &mut events);
        assert!(format!("{e:#}").contains("out of range"), "{e:#}");
    }

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
    /// the rebuilt book equals the published row on every level it knows, best first;
    /// returns `(rows equal, rows)`.
    fn check_against_orderbook(messages: &Path, book: &Path) -> (usize, usize) {
        let opts = ImportOptions {
            lobster_book: Some(book.to_path_buf()),
            ..Default::default()
        };
        let mut events: Vec<Event> = Vec::new();
        let stats = import_any(
            ImportFormat::Auto,
            &[messages.to_path_buf()],
            &opts,
            &mut events,
            &|_| {},
        )
        .unwrap();
        assert!(
            stats.warnings.is_empty(),
            "every message explains its row: {:?}",
            stats.warnings
        );
        let rows: Vec<Vec<(Side, i64, i64)>> = std::fs::read_to_string(book)
            .unwrap()
            .lines()
            .map(|l| parse_book_row(l).unwrap())
            .collect();
        let mut l2 = L2Book::new();
        let mut events = events.into_iter().peekable();
        let mut equal = 0;
        let mut known = 0;
        for (i, row) in rows.iter().enumerate() {
            while let Some(e) = events.next_if(|e| e.venue_seq == Some(i as u64 + 1)) {
                if let Body::Book(d) = &e.body {
                    l2.apply(d);
                }
            }
            let mut same = true;
            for side in [Side::Bid, Side::Ask] {
                let mine: Vec<(i64, i64)> = l2
                    .levels(side)
                    .map(|(p, q)| (p.rescale(4).unwrap().mantissa, q.mantissa))
                    .collect();
                let theirs: Vec<(i64, i64)> = row
                    .iter()
                    .filter(|l| l.0 == side)
                    .map(|l| (l.1, l.2))
                    .collect();
                assert!(mine.len() <= 10, "the book keeps the file's 10 levels");
                known += mine.len();
                let ok = mine == theirs;
                if !ok {
                    eprintln!("{side:?} mine {mine:?}\ntheirs {theirs:?}");
                }
                same &= ok;
            }
            if same {
                equal += 1;
            } else {
                eprintln!("row {} differs", i + 1);
            }
        }
        assert!(events.next().is_none());
        assert!(
            known >= rows.len() * 19,
            "known levels {known} over {} rows",
            rows.len()
        );
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
    fn each_message_turns_the_previous_row_into_the_next() {
        let Some(dir) = real("OrderBook_HLS_lobster/data") else {
            return;
        };
        let base = "AAPL_2012-06-21_34200000_57600000";
        let text =
            |k: &str| std::fs::read_to_string(dir.join(format!("{base}_{k}_10.csv"))).unwrap();
        let msgs: Vec<Msg> = text("message")
            .lines()
            .map(|l| parse_message(l).unwrap())
            .collect();
        let rows: Vec<Levels> = text("orderbook")
            .lines()
            .map(|l| Levels::from_row(&parse_book_row(l).unwrap()))
            .collect();
        let mut explained = 0;
        for i in 1..rows.len() {
            let mut book = rows[i - 1].clone();
            book.apply(&msgs[i], Some(10));
            explained += rows[i].extends(&book) as usize;
        }
        assert_eq!(explained, 998, "998 transitions, as the MANIFEST counts");
    }

    #[test]
    fn without_orderbook_messages_aggregate_to_at_most_n_levels() {
        let msgs = fixture("lobster/AAPL_2012-06-21_34200000_57600000_message_10.csv");
        let mut events: Vec<Event> = Vec::new();
        import_any(
            ImportFormat::Lobster,
            &[msgs],
            &ImportOptions::default(),
            &mut events,
            &|_| {},
        )
        .unwrap();
        let mut l2 = L2Book::new();
        for e in &events {
            if let Body::Book(d) = &e.body {
                l2.apply(d);
                let (b, a) = l2.depth();
                assert!(!d.flags.contains(Flags::LAST) || (b <= 10 && a <= 10));
            }
        }
        assert!(l2.is_consistent());
        assert!(!l2.is_crossed());
    }

    #[test]
    fn executions_are_trades_and_times_are_new_york() {
        let msgs = fixture("lobster/AAPL_2012-06-21_34200000_57600000_message_10.csv");
        let mut events: Vec<Event> = Vec::new();
        let stats = import_any(
            ImportFormat::Lobster,
            &[msgs],
            &ImportOptions::default(),
            &mut events,
            &|_| {},
        )
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
        let err = import_error(ImportFormat::Lobster, p, &mut events);
        let msg = format!("{err:#}");
        assert!(
            msg.contains("message_10.csv:2") && msg.contains("type 9"),
            "{msg}"
        );
    }

    /// Found by the `import_lobster` fuzz target: a cancel of size i64::MIN was negated
    /// (overflow), and two adds near i64::MAX overflowed the level's total.
    #[test]
    fn negative_and_huge_sizes_are_refused_or_saturate_not_overflow() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("AAPL_2012-06-21_0_0_message_10.csv");
        let import = |rows: &str| {
            std::fs::write(&p, rows).unwrap();
            let mut events: Vec<Event> = Vec::new();
            import_any(
                ImportFormat::Lobster,
                std::slice::from_ref(&p),
                &ImportOptions::default(),
                &mut events,
                &|_| {},
            )
            .map(|_| events)
        };
        let err = import("34200.1,3,1,-9223372036854775808,5853300,1\n").unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("message_10.csv:1") && msg.contains("is negative"),
            "{msg}"
        );
        let events = import(
            "34200.1,1,1,9223372036854775807,5853300,1\n34200.2,1,2,9223372036854775807,5853300,1\n",
        )
        .unwrap();
        match &events.last().unwrap().body {
            Body::Book(d) => assert_eq!(d.size, Fixed::new(i64::MAX, 0)),
            other => panic!("{other:?}"),
        }
    }
}
