//! The book of one instrument at a point in time, rebuilt from a stored or imported
//! event stream, and its text ladder: what `ticktape book <dataset> --at <time>` prints.
//!
//! Owns the replay rules for inspection (snapshots replace, gaps clear) and the ladder
//! layout. Never reads files: the caller hands it events in `ts_recv` order.

use std::collections::BTreeSet;
use std::fmt::Write;

use crate::book::L2Book;
use crate::event::{Body, Event, Fixed, Side, UnixNanos};

/// Checks that a dataset whose instruments are `known` (venue, symbol pairs, as from
/// [`crate::store::reader::partitions`]) has `venue`/`symbol`; the error names the ones
/// it has. Names are exact (case matters), so `btcusdt` is refused with `BTCUSDT` listed.
pub fn check_instrument(
    known: &BTreeSet<(String, String)>,
    venue: &str,
    symbol: &str,
) -> Result<(), String> {
    let list = |names: Vec<&str>| {
        if names.is_empty() {
            "none (the dataset is empty)".to_string()
        } else {
            names.join(", ")
        }
    };
    let venues: BTreeSet<&str> = known.iter().map(|(v, _)| v.as_str()).collect();
    if !venues.contains(venue) {
        return Err(format!(
            "unknown venue {venue}; known: {}",
            list(venues.into_iter().collect())
        ));
    }
    let symbols: Vec<&str> = known
        .iter()
        .filter(|(v, _)| v == venue)
        .map(|(_, s)| s.as_str())
        .collect();
    if !symbols.contains(&symbol) {
        return Err(format!(
            "unknown symbol {symbol} on {venue}; known: {}",
            list(symbols)
        ));
    }
    Ok(())
}

/// The exact midpoint `(bid + ask) / 2`: at the prices' scale when the half is exact
/// there, else with one more decimal place (always exact). `None` on overflow.
pub fn exact_mid(bid: Fixed, ask: Fixed) -> Option<Fixed> {
    let sum = bid.checked_add(ask)?;
    let (mantissa, scale) = (sum.mantissa, sum.scale);
    if mantissa % 2 == 0 {
        return Some(Fixed::new(mantissa / 2, scale));
    }
    if scale >= crate::event::MAX_SCALE {
        return None;
    }
    // sum * 10 / 2 at one more place: exact, as sum is odd.
    Some(Fixed::new(mantissa.checked_mul(5)?, scale.checked_add(1)?))
}

/// Rebuilds the book of `venue`/`symbol` from `events` (in non-decreasing `ts_recv`
/// order), applying every event with `ts_recv <= at` and stopping at the first later one.
///
/// `ts_recv` is the clock because it says when the data was known locally. Snapshot
/// levels replace the book ([`L2Book::apply`]); a gap event clears it, so after a gap
/// the book stays empty until the next snapshot. Check [`L2Book::is_consistent`]: it is
/// false when nothing was known yet at `at` or the data before `at` ended in a gap.
pub fn book_at(
    events: impl Iterator<Item = Event>,
    venue: &str,
    symbol: &str,
    at: UnixNanos,
) -> L2Book {
    let mut book = L2Book::new();
    for event in events {
        if event.ts_recv > at {
            break;
        }
        if &*event.venue != venue || &*event.symbol != symbol {
            continue;
        }
        match &event.body {
            Body::Book(delta) => book.apply(delta),
            Body::Gap(_) => book.clear(),
            _ => {}
        }
    }
    book
}

/// A readable ladder of the best `depth` levels per side: asks from the highest shown
/// down to the best, a spread line, then bids from the best down.
///
/// ```text
///        price      size
///   ask  101.50     3.0
///   ask  101.00     2.5
///   ---- spread 1.00  mid 100.50 ----
///   bid  100.00     1.0
/// ```
pub fn render_book(book: &L2Book, depth: usize) -> String {
    let asks: Vec<_> = book.levels(Side::Ask).take(depth).collect();
    let bids: Vec<_> = book.levels(Side::Bid).take(depth).collect();
    let mut out = String::new();
    if asks.is_empty() && bids.is_empty() {
        out.push_str("(empty book: no snapshot yet, or cleared by a gap)\n");
        return out;
    }
    let price_w = asks
        .iter()
        .chain(&bids)
        .map(|(p, _)| p.to_string().len())
        .max()
        .unwrap_or(5)
        .max(5);
    let size_w = asks
        .iter()
        .chain(&bids)
        .map(|(_, s)| s.to_string().len())
        .max()
        .unwrap_or(4)
        .max(4);
    let _ = writeln!(out, "     {:>price_w$}  {:>size_w$}", "price", "size");
    for (p, s) in asks.iter().rev() {
        let _ = writeln!(
            out,
            "ask  {:>price_w$}  {:>size_w$}",
            p.to_string(),
            s.to_string()
        );
    }
    match (book.best_bid(), book.best_ask()) {
        (Some((b, _)), Some((a, _))) => {
            let spread = a
                .checked_sub(b)
                .map(|s| s.to_string())
                .unwrap_or_else(|| "?".to_string());
            let crossed = if book.is_crossed() { "  CROSSED" } else { "" };
            let mid = exact_mid(b, a)
                .map(|m| format!("  mid {m}"))
                .unwrap_or_default();
            let _ = writeln!(out, "---- spread {spread}{mid}{crossed} ----");
        }
        _ => out.push_str("---- one-sided book ----\n"),
    }
    for (p, s) in &bids {
        let _ = writeln!(
            out,
            "bid  {:>price_w$}  {:>size_w$}",
            p.to_string(),
            s.to_string()
        );
    }
    if !book.is_consistent() {
        out.push_str(
            "(note: the last message before this time was not complete or followed a gap)\n",
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{BookDelta, Fixed, Flags, Gap, GapReason};
    use std::sync::Arc;

    fn ev(ts: i64, body: Body) -> Event {
        Event {
            venue: Arc::from("v"),
            symbol: Arc::from("S"),
            ts_event: ts,
            ts_recv: ts,
            venue_seq: None,
            prev_venue_seq: None,
            pub_seq: 0,
            body,
        }
    }

    fn lvl(ts: i64, side: Side, p: &str, s: &str, flags: Flags) -> Event {
        ev(
            ts,
            Body::Book(BookDelta {
                side,
                price: p.parse().unwrap(),
                size: s.parse().unwrap(),
                flags,
            }),
        )
    }

    fn stream() -> Vec<Event> {
        vec![
            lvl(1, Side::Bid, "100.00", "1.0", Flags::SNAPSHOT),
            lvl(1, Side::Ask, "101.00", "2.5", Flags::SNAPSHOT),
            lvl(
                1,
                Side::Ask,
                "101.50",
                "3.0",
                Flags::SNAPSHOT.with(Flags::LAST),
            ),
            lvl(2, Side::Bid, "100.50", "4.0", Flags::LAST),
            ev(
                3,
                Body::Gap(Gap {
                    reason: GapReason::VenueSeq,
                    missing: Some(2),
                    publisher: String::new(),
                }),
            ),
            lvl(4, Side::Bid, "99.00", "1", Flags::SNAPSHOT),
            lvl(
                4,
                Side::Ask,
                "99.50",
                "1",
                Flags::SNAPSHOT.with(Flags::LAST),
            ),
        ]
    }

    #[test]
    fn book_at_applies_events_up_to_the_time_only() {
        let b = book_at(stream().into_iter(), "v", "S", 1);
        assert_eq!(b.depth(), (1, 2));
        let b = book_at(stream().into_iter(), "v", "S", 2);
        assert_eq!(b.best_bid().unwrap().0, "100.5".parse::<Fixed>().unwrap());
        assert!(b.is_consistent());
    }

    #[test]
    fn book_at_clears_on_gap_until_next_snapshot() {
        let b = book_at(stream().into_iter(), "v", "S", 3);
        assert_eq!(b.depth(), (0, 0));
        assert!(!b.is_consistent());
        let b = book_at(stream().into_iter(), "v", "S", 10);
        assert_eq!(b.depth(), (1, 1));
        assert_eq!(
            book_at(stream().into_iter(), "v", "OTHER", 10).depth(),
            (0, 0)
        );
    }

    #[test]
    fn mid_is_exact_with_one_more_decimal_only_when_needed() {
        let f = |s: &str| s.parse::<Fixed>().unwrap();
        let mid = |b: &str, a: &str| exact_mid(f(b), f(a)).unwrap().to_string();
        // The case that printed 61661.384999999995 through f64.
        assert_eq!(mid("61661.38000000", "61661.39000000"), "61661.38500000");
        assert_eq!(mid("61661.38", "61661.39"), "61661.385");
        assert_eq!(mid("61661.38000000", "61661.40000000"), "61661.39000000");
        assert_eq!(mid("100.00", "101.00"), "100.50");
        assert_eq!(mid("1", "2"), "1.5");
        assert_eq!(mid("99.5", "100"), "99.75");
        assert_eq!(exact_mid(f("0.000000000000000001"), f("0")), None);
    }

    #[test]
    fn an_unknown_venue_or_symbol_is_named_with_the_known_ones() {
        let known: BTreeSet<(String, String)> = [("binance", "BTCUSDT"), ("binance", "ETHUSDT")]
            .into_iter()
            .map(|(v, s)| (v.to_string(), s.to_string()))
            .collect();
        assert_eq!(check_instrument(&known, "binance", "BTCUSDT"), Ok(()));
        assert_eq!(
            check_instrument(&known, "binance", "btcusdt").unwrap_err(),
            "unknown symbol btcusdt on binance; known: BTCUSDT, ETHUSDT"
        );
        assert_eq!(
            check_instrument(&known, "Binance", "BTCUSDT").unwrap_err(),
            "unknown venue Binance; known: binance"
        );
        assert!(
            check_instrument(&BTreeSet::new(), "binance", "BTCUSDT")
                .unwrap_err()
                .contains("none")
        );
    }

    #[test]
    fn ladder_shows_asks_top_down_then_spread_then_bids() {
        let b = book_at(stream().into_iter(), "v", "S", 2);
        let text = render_book(&b, 10);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[1].starts_with("ask") && lines[1].contains("101.50"),
            "{text}"
        );
        assert!(lines[2].contains("101.00"), "{text}");
        assert!(lines[3].contains("spread 0.50  mid 100.75 "), "{text}");
        assert!(
            lines[4].starts_with("bid") && lines[4].contains("100.50"),
            "{text}"
        );
        assert!(lines[5].contains("100.00"), "{text}");
        let top1 = render_book(&b, 1);
        assert_eq!(top1.lines().count(), 4, "{top1}");
        assert!(render_book(&L2Book::new(), 5).contains("empty book"));
    }
}
