//! The one check an event from outside passes before ticktape keeps it or acts on it.
//!
//! Both wire decoders, every importer (through their common sequencer) and the Parquet
//! reader call [`Event::validate`]; what fails is quarantined by the recorder, refused
//! by an import, reported as a bad row by the reader. Each rule states its bound here
//! and in `docs/PROTOCOL.md` ("Validation"):
//!
//! | what | rule |
//! |---|---|
//! | `ts_event`, `ts_recv` | in [`MIN_TS`]`..`[`MAX_TS`]: 1970-01-01T00:00:00Z inclusive to 2100-01-01T00:00:00Z exclusive |
//! | `venue` (book, trade, gap) | 1..=[`MAX_NAME_BYTES`] bytes of `a-z 0-9 - . _`, starting with a letter or digit, no `..` |
//! | `symbol` (book, trade, gap) | 1..=[`MAX_NAME_BYTES`] bytes of printable ASCII, not starting with `_`, no leading or trailing space |
//! | `venue`, `symbol` (hb, eos) | empty |
//! | book `side` | `B` or `A` |
//! | book `price` / `size` | price > 0, size ≥ 0 (0 deletes the level) |
//! | trade `price` / `size` | both > 0 |
//! | trade `trade_id` | at most [`MAX_TRADE_ID_BYTES`] bytes |
//! | `publisher` | at most [`MAX_PUBLISHER_BYTES`] bytes, no control characters; not empty in hb and eos |
//! | hb `interval_ms` | 1..=[`MAX_HEARTBEAT_MS`] |
//!
//! Why these: a venue or symbol becomes a directory of the dataset, and names starting
//! with `_` or `.` are the dataset's own bookkeeping (`_journal`, `_quarantine`), which
//! `inspect` skips while a one-glob read would not; a timestamp near the `i64` extremes
//! is a placeholder or a unit mistake, and overflows as soon as a latency is added; a
//! non-positive price has no meaning in an L2 book (instruments quoted at negative
//! prices, such as some calendar spreads, are not supported). Symbols keep `/` and
//! spaces (`XBT/USD`, OCC option symbols): the dataset layout percent-encodes them.

use std::sync::Arc;

use super::{Body, Event, Fixed, NANOS_PER_SEC, Side, UnixNanos};

/// Earliest accepted timestamp, inclusive: 1970-01-01T00:00:00Z, in ns since the epoch.
pub const MIN_TS: UnixNanos = 0;
/// First rejected timestamp: 2100-01-01T00:00:00Z, in ns since the epoch. Far below
/// `i64::MAX` (2262-04-11) so adding latencies or durations to any accepted time never
/// overflows.
pub const MAX_TS: UnixNanos = 4_102_444_800 * NANOS_PER_SEC;
/// Longest venue or symbol, in bytes.
pub const MAX_NAME_BYTES: usize = 64;
/// Longest trade id, in bytes.
pub const MAX_TRADE_ID_BYTES: usize = 128;
/// Longest publisher id or endpoint (gap, hb, eos), in bytes.
pub const MAX_PUBLISHER_BYTES: usize = 256;
/// Longest heartbeat interval, in milliseconds (one hour).
pub const MAX_HEARTBEAT_MS: u64 = 3_600_000;

/// How much of an offending name an error quotes.
const QUOTE_CHARS: usize = 48;

/// Why an event was refused: which field broke which rule (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    /// A timestamp outside [`MIN_TS`]`..`[`MAX_TS`].
    #[error(
        "{field} {value} is outside 1970-01-01T00:00:00Z..2100-01-01T00:00:00Z \
         (nanoseconds since the Unix epoch): is it in another unit, or a placeholder?"
    )]
    Timestamp {
        /// `ts_event` or `ts_recv`.
        field: &'static str,
        /// The value received, ns.
        value: UnixNanos,
    },
    /// A venue, symbol or publisher that breaks a naming rule.
    #[error("{field} {value:?} {rule}")]
    Name {
        /// `venue`, `symbol` or `publisher`.
        field: &'static str,
        /// The name (its first 48 characters when longer).
        value: String,
        /// The rule, as the rest of the sentence.
        rule: &'static str,
    },
    /// A string longer than its bound.
    #[error("{field} is {len} bytes long, at most {max} are allowed")]
    TooLong {
        /// Which field.
        field: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The bound in bytes.
        max: usize,
    },
    /// A book or trade price that is zero or negative.
    #[error("{kind} price {price} must be above zero")]
    Price {
        /// `book` or `trade`.
        kind: &'static str,
        /// The price received.
        price: Fixed,
    },
    /// A negative book size, or a trade size that is not above zero.
    #[error("{kind} size {size} must be {rule}")]
    Size {
        /// `book` or `trade`.
        kind: &'static str,
        /// The size received.
        size: Fixed,
        /// `at least zero (0 deletes the level)` or `above zero`.
        rule: &'static str,
    },
    /// A book delta whose side is neither bid nor ask.
    #[error("book side must be B (bid) or A (ask), not N: only trades may leave the side unknown")]
    BookSide,
    /// A heartbeat interval outside 1 ms ..= 1 h.
    #[error("hb interval_ms {0} must be 1..=3600000 (1 ms to one hour)")]
    HeartbeatInterval(u64),
}

impl Event {
    /// Checks every rule of the module [`validate`](self) on this event: the boundary
    /// check wire decoders, importers and the Parquet reader apply, so nothing
    /// downstream sees a non-positive price, an out-of-range time or an unsafe name.
    /// Allocates only when it refuses.
    pub fn validate(&self) -> Result<(), Invalid> {
        self.validate_with(&mut NamesChecked::default())
    }

    /// [`Event::validate`] for a stream of events: the venue and symbol rules are checked
    /// once per interned name pair (`checked` remembers the last pair that passed, by
    /// pointer), not for every event of a file that holds one instrument.
    pub fn validate_with(&self, checked: &mut NamesChecked) -> Result<(), Invalid> {
        checked.current = checked
            .passed
            .as_ref()
            .is_some_and(|(v, s)| Arc::ptr_eq(v, &self.venue) && Arc::ptr_eq(s, &self.symbol));
        // Nearly every row a reader checks: a book delta of the names that passed last,
        // every rule met. The same rules as `validate_fields` for a book delta, as one
        // condition instead of a result per rule.
        if checked.current
            && let Body::Book(b) = &self.body
            && (MIN_TS..MAX_TS).contains(&self.ts_event)
            && (MIN_TS..MAX_TS).contains(&self.ts_recv)
            && b.side != Side::None
            && b.price.mantissa > 0
            && b.size.mantissa >= 0
        {
            return Ok(());
        }
        self.validate_fields(checked)?;
        if !checked.current && matches!(self.body, Body::Book(_) | Body::Trade(_) | Body::Gap(_)) {
            checked.passed = Some((self.venue.clone(), self.symbol.clone()));
        }
        Ok(())
    }

    fn validate_fields(&self, checked: &NamesChecked) -> Result<(), Invalid> {
        timestamp("ts_event", self.ts_event)?;
        timestamp("ts_recv", self.ts_recv)?;
        match &self.body {
            Body::Book(b) => {
                if !checked.current {
                    self.names()?;
                }
                if b.side == Side::None {
                    return Err(Invalid::BookSide);
                }
                positive_price("book", b.price)?;
                if b.size.mantissa < 0 {
                    return Err(Invalid::Size {
                        kind: "book",
                        size: b.size,
                        rule: "at least zero (0 deletes the level)",
                    });
                }
            }
            Body::Trade(t) => {
                if !checked.current {
                    self.names()?;
                }
                positive_price("trade", t.price)?;
                if t.size.mantissa <= 0 {
                    return Err(Invalid::Size {
                        kind: "trade",
                        size: t.size,
                        rule: "above zero",
                    });
                }
                bounded("trade_id", &t.trade_id, MAX_TRADE_ID_BYTES)?;
            }
            Body::Gap(g) => {
                if !checked.current {
                    self.names()?;
                }
                publisher(&g.publisher, false)?;
            }
            Body::Heartbeat(h) => {
                self.no_names()?;
                publisher(&h.publisher, true)?;
                if !(1..=MAX_HEARTBEAT_MS).contains(&h.interval_ms) {
                    return Err(Invalid::HeartbeatInterval(h.interval_ms));
                }
            }
            Body::EndOfStream(e) => {
                self.no_names()?;
                publisher(&e.publisher, true)?;
            }
        }
        Ok(())
    }

    /// Venue and symbol of market data and gaps.
    fn names(&self) -> Result<(), Invalid> {
        venue(&self.venue)?;
        symbol(&self.symbol)
    }
}

/// True when `venue` and `symbol` meet the name rules of a book, trade or gap event:
/// what [`Event::validate`] checks of the names, for a reader that checks a whole batch
/// of rows sharing one instrument at once.
pub fn market_names_valid(venue: &str, symbol: &str) -> bool {
    self::venue(venue).is_ok() && self::symbol(symbol).is_ok()
}

/// The last venue and symbol (interned) that passed the name rules; see
/// [`Event::validate_with`].
#[derive(Debug, Default)]
pub struct NamesChecked {
    passed: Option<(Arc<str>, Arc<str>)>,
    /// True while validating an event whose names are the remembered pair.
    current: bool,
}

impl Event {
    /// Heartbeats and end-of-stream belong to a publisher, not an instrument.
    fn no_names(&self) -> Result<(), Invalid> {
        for (field, value) in [("venue", &self.venue), ("symbol", &self.symbol)] {
            if !value.is_empty() {
                return Err(name_error(
                    field,
                    value,
                    "must be empty in hb and eos (they belong to a publisher, not an instrument)",
                ));
            }
        }
        Ok(())
    }
}

fn timestamp(field: &'static str, value: UnixNanos) -> Result<(), Invalid> {
    if (MIN_TS..MAX_TS).contains(&value) {
        Ok(())
    } else {
        Err(Invalid::Timestamp { field, value })
    }
}

fn positive_price(kind: &'static str, price: Fixed) -> Result<(), Invalid> {
    if price.mantissa > 0 {
        Ok(())
    } else {
        Err(Invalid::Price { kind, price })
    }
}

fn bounded(field: &'static str, value: &str, max: usize) -> Result<(), Invalid> {
    if value.len() <= max {
        Ok(())
    } else {
        Err(Invalid::TooLong {
            field,
            len: value.len(),
            max,
        })
    }
}

fn name_error(field: &'static str, value: &str, rule: &'static str) -> Invalid {
    let mut quoted: String = value.chars().take(QUOTE_CHARS).collect();
    if quoted.len() < value.len() {
        quoted.push('…');
    }
    Invalid::Name {
        field,
        value: quoted,
        rule,
    }
}

fn venue(value: &str) -> Result<(), Invalid> {
    bounded("venue", value, MAX_NAME_BYTES)?;
    let rule = match value.as_bytes().first() {
        None => "must not be empty: book, trade and gap events name their venue",
        Some(b) if !b.is_ascii_lowercase() && !b.is_ascii_digit() => {
            "must start with a-z or 0-9 (names starting with '_' or '.' are the dataset's bookkeeping)"
        }
        _ if !value.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'.' | b'_')
        }) =>
        {
            "may hold only a-z, 0-9, '-', '.' and '_' (venue names are lowercase)"
        }
        _ if value.contains("..") => "must not contain \"..\"",
        _ => return Ok(()),
    };
    Err(name_error("venue", value, rule))
}

fn symbol(value: &str) -> Result<(), Invalid> {
    bounded("symbol", value, MAX_NAME_BYTES)?;
    let rule = if value.is_empty() {
        "must not be empty: book, trade and gap events name their symbol"
    } else if !value.bytes().all(|b| (b' '..=b'~').contains(&b)) {
        "may hold only printable ASCII (no control characters, no non-ASCII)"
    } else if value.starts_with('_') {
        "must not start with '_' (such names are the dataset's bookkeeping)"
    } else if value.starts_with(' ') || value.ends_with(' ') {
        "must not start or end with a space"
    } else {
        return Ok(());
    };
    Err(name_error("symbol", value, rule))
}

fn publisher(value: &str, required: bool) -> Result<(), Invalid> {
    bounded("publisher", value, MAX_PUBLISHER_BYTES)?;
    let rule = if required && value.is_empty() {
        "must not be empty: hb and eos say which publisher they come from"
    } else if value.chars().any(char::is_control) {
        "must not hold control characters"
    } else {
        return Ok(());
    };
    Err(name_error("publisher", value, rule))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::event::{BookDelta, EndOfStream, Flags, Gap, GapReason, Heartbeat, Trade};

    const T: UnixNanos = 1_723_161_253_940_000_000;

    fn base(body: Body) -> Event {
        let data = !matches!(body, Body::Heartbeat(_) | Body::EndOfStream(_));
        Event {
            venue: Arc::from(if data { "binance" } else { "" }),
            symbol: Arc::from(if data { "BTCUSDT" } else { "" }),
            ts_event: T,
            ts_recv: T,
            venue_seq: None,
            prev_venue_seq: None,
            pub_seq: 1,
            body,
        }
    }

    fn book() -> Event {
        base(Body::Book(BookDelta {
            side: Side::Bid,
            price: Fixed::new(6_167_155, 2),
            size: Fixed::new(1, 3),
            flags: Flags::LAST,
        }))
    }

    fn trade() -> Event {
        base(Body::Trade(Trade {
            price: Fixed::new(6_167_155, 2),
            size: Fixed::new(1, 3),
            aggressor: Side::None,
            trade_id: "t-1".into(),
        }))
    }

    fn gap() -> Event {
        base(Body::Gap(Gap {
            reason: GapReason::Resync,
            missing: None,
            publisher: String::new(),
        }))
    }

    fn hb() -> Event {
        base(Body::Heartbeat(Heartbeat {
            publisher: "pub-1".into(),
            interval_ms: 1000,
            replay: false,
        }))
    }

    fn eos() -> Event {
        base(Body::EndOfStream(EndOfStream {
            publisher: "pub-1".into(),
            replay: false,
            events: 0,
        }))
    }

    fn with(mut e: Event, change: impl FnOnce(&mut Event)) -> Event {
        change(&mut e);
        e
    }

    fn book_with(change: impl FnOnce(&mut BookDelta)) -> Event {
        with(book(), |e| match &mut e.body {
            Body::Book(b) => change(b),
            _ => unreachable!(),
        })
    }

    fn trade_with(change: impl FnOnce(&mut Trade)) -> Event {
        with(trade(), |e| match &mut e.body {
            Body::Trade(t) => change(t),
            _ => unreachable!(),
        })
    }

    fn venue(e: Event, v: &str) -> Event {
        with(e, |e| e.venue = Arc::from(v))
    }

    fn symbol(e: Event, s: &str) -> Event {
        with(e, |e| e.symbol = Arc::from(s))
    }

    #[test]
    fn each_rule_accepts_its_bound_and_refuses_just_past_it() {
        let long = |n: usize| "a".repeat(n);
        let hb_with = |publisher: &str, interval_ms: u64| {
            base(Body::Heartbeat(Heartbeat {
                publisher: publisher.into(),
                interval_ms,
                replay: false,
            }))
        };
        // (what, event, the error's text must contain this; "" = accepted)
        let table: Vec<(&str, Event, &str)> = vec![
            ("every kind as sent by a venue", book(), ""),
            ("trade", trade(), ""),
            ("gap without publisher", gap(), ""),
            ("hb", hb(), ""),
            ("eos", eos(), ""),
            // Timestamps: 1970-01-01 inclusive .. 2100-01-01 exclusive.
            ("ts at the epoch", with(book(), |e| e.ts_recv = 0), ""),
            (
                "ts_recv -5",
                with(book(), |e| e.ts_recv = -5),
                "ts_recv -5 is outside",
            ),
            (
                "ts_recv i64::MAX",
                with(book(), |e| e.ts_recv = i64::MAX),
                "ts_recv",
            ),
            (
                "ts_event i64::MIN",
                with(trade(), |e| e.ts_event = i64::MIN),
                "ts_event",
            ),
            (
                "last ns before 2100",
                with(book(), |e| e.ts_recv = MAX_TS - 1),
                "",
            ),
            (
                "2100-01-01",
                with(book(), |e| e.ts_event = MAX_TS),
                "ts_event",
            ),
            ("hb ts too", with(hb(), |e| e.ts_recv = -1), "ts_recv"),
            // Book: price > 0, size >= 0, side B or A.
            (
                "book price 0",
                book_with(|b| b.price = Fixed::ZERO),
                "book price 0 must be above zero",
            ),
            (
                "book price -1.5",
                book_with(|b| b.price = Fixed::new(-15, 1)),
                "book price -1.5",
            ),
            (
                "book size 0 deletes",
                book_with(|b| b.size = Fixed::new(0, 8)),
                "",
            ),
            (
                "book size -1",
                book_with(|b| b.size = Fixed::new(-1, 0)),
                "book size -1 must be at least zero",
            ),
            (
                "book side N",
                book_with(|b| b.side = Side::None),
                "book side must be B",
            ),
            // Trade: price > 0, size > 0, id <= 128 bytes.
            (
                "trade price 0",
                trade_with(|t| t.price = Fixed::new(0, 2)),
                "trade price 0.00",
            ),
            (
                "trade price -2",
                trade_with(|t| t.price = Fixed::new(-2, 0)),
                "trade price -2",
            ),
            (
                "trade size 0",
                trade_with(|t| t.size = Fixed::ZERO),
                "trade size 0 must be above zero",
            ),
            (
                "trade size -3",
                trade_with(|t| t.size = Fixed::new(-3, 0)),
                "trade size -3",
            ),
            (
                "trade id 128 bytes",
                trade_with(|t| t.trade_id = long(128).into()),
                "",
            ),
            (
                "trade id 129 bytes",
                trade_with(|t| t.trade_id = long(129).into()),
                "trade_id is 129 bytes long, at most 128",
            ),
            (
                "trade id 50 MB",
                trade_with(|t| t.trade_id = long(50 << 20).into()),
                "trade_id is 52428800 bytes",
            ),
            ("empty trade id", trade_with(|t| t.trade_id.clear()), ""),
            // Venue: 1..=64 bytes of a-z 0-9 - . _, starting with a-z or 0-9, no "..".
            ("venue 64 bytes", venue(book(), &long(64)), ""),
            (
                "venue 65 bytes",
                venue(book(), &long(65)),
                "venue is 65 bytes long, at most 64",
            ),
            (
                "venue empty",
                venue(trade(), ""),
                "venue \"\" must not be empty",
            ),
            (
                "venue _journal",
                venue(book(), "_journal"),
                "venue \"_journal\" must start with a-z or 0-9",
            ),
            (
                "venue _anything",
                venue(gap(), "_x"),
                "must start with a-z or 0-9",
            ),
            (
                "venue .hidden",
                venue(book(), ".x"),
                "must start with a-z or 0-9",
            ),
            ("venue with /", venue(book(), "a/b"), "may hold only a-z"),
            ("venue with \\", venue(book(), "a\\b"), "may hold only a-z"),
            ("venue ..", venue(book(), "a..b"), "must not contain \"..\""),
            (
                "venue upper case",
                venue(book(), "Binance"),
                "must start with a-z",
            ),
            (
                "venue with dots and dashes",
                venue(book(), "glbx.mdp3-x_1"),
                "",
            ),
            // Symbol: 1..=64 bytes of printable ASCII, not starting with _, no edge space.
            ("symbol 64 bytes", symbol(book(), &long(64)), ""),
            (
                "symbol 65 bytes",
                symbol(book(), &long(65)),
                "symbol is 65 bytes long, at most 64",
            ),
            (
                "symbol empty",
                symbol(book(), ""),
                "symbol \"\" must not be empty",
            ),
            (
                "symbol _journal",
                symbol(trade(), "_journal"),
                "must not start with '_'",
            ),
            ("symbol with /", symbol(book(), "XBT/USD"), ""),
            (
                "OCC option symbol",
                symbol(book(), "AAPL  240816C00150000"),
                "",
            ),
            (
                "symbol with newline",
                symbol(book(), "BTC\nUSD"),
                "printable ASCII",
            ),
            (
                "symbol non-ASCII",
                symbol(book(), "BTC€"),
                "printable ASCII",
            ),
            (
                "symbol leading space",
                symbol(book(), " BTC"),
                "start or end with a space",
            ),
            // Publisher: <= 256 bytes, no control characters, required in hb and eos.
            (
                "hb without publisher",
                hb_with("", 1000),
                "publisher \"\" must not be empty",
            ),
            (
                "eos without publisher",
                with(eos(), |e| {
                    if let Body::EndOfStream(x) = &mut e.body {
                        x.publisher.clear()
                    }
                }),
                "must not be empty",
            ),
            ("publisher 256 bytes", hb_with(&long(256), 1000), ""),
            (
                "publisher 257 bytes",
                hb_with(&long(257), 1000),
                "publisher is 257 bytes long, at most 256",
            ),
            (
                "publisher with control",
                hb_with("a\u{1b}b", 1000),
                "control characters",
            ),
            // hb/eos carry no venue or symbol; interval 1 ms ..= 1 h.
            (
                "hb with venue",
                venue(hb(), "binance"),
                "venue \"binance\" must be empty in hb and eos",
            ),
            (
                "eos with symbol",
                symbol(eos(), "X"),
                "symbol \"X\" must be empty",
            ),
            ("hb interval 1 ms", hb_with("p", 1), ""),
            ("hb interval 1 h", hb_with("p", MAX_HEARTBEAT_MS), ""),
            ("hb interval 0", hb_with("p", 0), "interval_ms 0 must be"),
            (
                "hb interval u64::MAX",
                hb_with("p", u64::MAX),
                "interval_ms 18446744073709551615",
            ),
        ];
        let mut wrong = Vec::new();
        for (what, event, expect) in &table {
            match (event.validate(), expect.is_empty()) {
                (Ok(()), true) => {}
                (Err(e), false) if e.to_string().contains(expect) => {}
                (got, _) => wrong.push(format!("{what}: expected {expect:?}, got {got:?}")),
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    #[test]
    fn names_are_checked_once_per_interned_pair_and_again_for_a_new_one() {
        let mut checked = NamesChecked::default();
        let good = book();
        good.validate_with(&mut checked).unwrap();
        assert!(checked.passed.is_some());
        // The same interned pair: the names are not looked at again, the rest is.
        let mut zero_price = good.clone();
        if let Body::Book(b) = &mut zero_price.body {
            b.price = Fixed::ZERO;
        }
        assert!(zero_price.validate_with(&mut checked).is_err());
        good.validate_with(&mut checked).unwrap();
        // Another name, even right after a passing pair, is checked.
        let mut bad = good.clone();
        bad.venue = Arc::from("_journal");
        assert!(bad.validate_with(&mut checked).is_err());
    }

    #[test]
    fn a_huge_name_is_quoted_short() {
        let e = symbol(book(), &format!("{}\n", "x".repeat(70)));
        let Err(Invalid::TooLong { len: 71, .. }) = e.validate() else {
            panic!("length is checked before content");
        };
        let e = symbol(book(), &format!("\n{}", "x".repeat(60)));
        let msg = e.validate().unwrap_err().to_string();
        assert!(msg.len() < 200 && msg.contains('…'), "{msg}");
    }
}
