//! The book of one instrument at a point in time, rebuilt from a stored or imported
//! event stream, and its text ladder: what `ticktape book <dataset> --at <time>` prints.
//!
//! Owns the replay rules for inspection (snapshots replace, gaps clear) and the ladder
//! layout. Never reads files: the caller hands it events in `ts_recv` order.

use std::fmt::Write;

use crate::book::L2Book;
use crate::event::{Body, Event, Side, UnixNanos};

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
///   ---- spread 1.00  mid 100.5 ----
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
            let mid = book.mid().map(|m| format!("  mid {m}")).unwrap_or_default();
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
    fn ladder_shows_asks_top_down_then_spread_then_bids() {
        let b = book_at(stream().into_iter(), "v", "S", 2);
        let text = render_book(&b, 10);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[1].starts_with("ask") && lines[1].contains("101.50"),
            "{text}"
        );
        assert!(lines[2].contains("101.00"), "{text}");
        assert!(lines[3].contains("spread 0.50"), "{text}");
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
