//! Normalized market-data events: the one vocabulary every other module speaks.
//!
//! Owns the event types, the exact fixed-point number type, timestamp units and the
//! boundary check every event from outside passes ([`Event::validate`], rules and bounds
//! in [`validate`]). Never does I/O: encoding lives in [`crate::wire`], storage in
//! [`crate::store`].
//!
//! Units, once and for all:
//! - timestamps are `i64` nanoseconds since the Unix epoch (UTC), see [`UnixNanos`];
//! - prices and sizes are [`Fixed`]: an integer mantissa with a decimal scale, so the
//!   decimal string a venue sent comes back out byte for byte (`"61671.55000000"` stays
//!   `"61671.55000000"`, never `61671.55`).

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;
use std::sync::Arc;

pub mod validate;

pub use validate::{Invalid, NamesChecked};

/// Nanoseconds since the Unix epoch, UTC.
pub type UnixNanos = i64;

/// Nanoseconds in one second.
pub const NANOS_PER_SEC: i64 = 1_000_000_000;

/// Current wall-clock time in [`UnixNanos`].
pub fn now_nanos() -> UnixNanos {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// Largest decimal scale a [`Fixed`] accepts (18 digits after the point).
pub const MAX_SCALE: u8 = 18;

/// An exact decimal: `mantissa × 10^-scale`.
///
/// Equality, ordering and hashing are by *value* (`"1.50"` equals `"1.5"`), while
/// [`fmt::Display`] reproduces the original digits, trailing zeros included.
#[derive(Clone, Copy, Debug, Default)]
pub struct Fixed {
    /// The integer digits, sign included.
    pub mantissa: i64,
    /// How many of those digits are after the decimal point.
    pub scale: u8,
}

/// Why a decimal string could not become a [`Fixed`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FixedError {
    /// The string was empty or held something other than `-?digits(.digits)?`.
    #[error("not a plain decimal number: {0:?} (expected digits with an optional '.' and '-')")]
    Syntax(String),
    /// More than [`MAX_SCALE`] digits after the point, or more than an `i64` can hold.
    #[error("decimal {0:?} does not fit 64-bit fixed point with at most 18 decimals")]
    Overflow(String),
}

const POW10: [i64; 19] = [
    1,
    10,
    100,
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    100_000_000,
    1_000_000_000,
    10_000_000_000,
    100_000_000_000,
    1_000_000_000_000,
    10_000_000_000_000,
    100_000_000_000_000,
    1_000_000_000_000_000,
    10_000_000_000_000_000,
    100_000_000_000_000_000,
    1_000_000_000_000_000_000,
];

impl Fixed {
    /// Zero at scale 0.
    pub const ZERO: Fixed = Fixed {
        mantissa: 0,
        scale: 0,
    };

    /// Builds a value from its parts; `scale` above [`MAX_SCALE`] is clamped.
    pub const fn new(mantissa: i64, scale: u8) -> Fixed {
        let scale = if scale > MAX_SCALE { MAX_SCALE } else { scale };
        Fixed { mantissa, scale }
    }

    /// True when the value is zero (at any scale).
    pub fn is_zero(self) -> bool {
        self.mantissa == 0
    }

    /// The value as `f64`, for analysis only (never for matching or storage).
    pub fn to_f64(self) -> f64 {
        self.mantissa as f64 / POW10[self.scale as usize] as f64
    }

    /// Rounds an `f64` to `scale` decimals; used by synthetic sources and models.
    pub fn from_f64(value: f64, scale: u8) -> Fixed {
        let scale = scale.min(MAX_SCALE);
        Fixed {
            mantissa: (value * POW10[scale as usize] as f64).round() as i64,
            scale,
        }
    }

    /// The same value expressed at `scale`, or `None` if digits would be lost or it overflows.
    pub fn rescale(self, scale: u8) -> Option<Fixed> {
        if scale > MAX_SCALE {
            return None;
        }
        match scale.cmp(&self.scale) {
            Ordering::Equal => Some(self),
            Ordering::Greater => {
                let factor = POW10[(scale - self.scale) as usize];
                self.mantissa
                    .checked_mul(factor)
                    .map(|mantissa| Fixed { mantissa, scale })
            }
            Ordering::Less => {
                let factor = POW10[(self.scale - scale) as usize];
                (self.mantissa % factor == 0).then(|| Fixed {
                    mantissa: self.mantissa / factor,
                    scale,
                })
            }
        }
    }

    /// Trailing zeros removed: the canonical form used for equality and hashing.
    pub fn normalized(self) -> Fixed {
        let mut f = self;
        while f.scale > 0 && f.mantissa % 10 == 0 {
            f.mantissa /= 10;
            f.scale -= 1;
        }
        if f.mantissa == 0 {
            f.scale = 0;
        }
        f
    }

    /// `self + other` exactly, at the larger scale; `None` on overflow.
    pub fn checked_add(self, other: Fixed) -> Option<Fixed> {
        let scale = self.scale.max(other.scale);
        let a = self.rescale(scale)?;
        let b = other.rescale(scale)?;
        a.mantissa
            .checked_add(b.mantissa)
            .map(|mantissa| Fixed { mantissa, scale })
    }

    /// `self - other` exactly, at the larger scale; `None` on overflow.
    pub fn checked_sub(self, other: Fixed) -> Option<Fixed> {
        self.checked_add(Fixed {
            mantissa: other.mantissa.checked_neg()?,
            scale: other.scale,
        })
    }

    /// The smaller of two values.
    pub fn min(self, other: Fixed) -> Fixed {
        if other < self { other } else { self }
    }

    /// Writes the decimal digits into `out` without allocating a `String`.
    pub fn write_to(self, out: &mut Vec<u8>) {
        let mut buf = [0u8; FIXED_TEXT_MAX];
        out.extend_from_slice(self.format_into(&mut buf).as_bytes());
    }

    /// The decimal text (`-61000.50`) formatted in `buf`, without allocating.
    pub fn format_into(self, buf: &mut [u8; FIXED_TEXT_MAX]) -> &str {
        // Digits from the right: fraction, point, integer part (at least one digit), sign.
        let mut v = self.mantissa.unsigned_abs();
        let scale = self.scale as usize;
        let mut i = buf.len();
        let mut written = 0usize;
        while v > 0 || written <= scale {
            if written == scale && scale > 0 {
                i -= 1;
                buf[i] = b'.';
            }
            i -= 1;
            buf[i] = b'0' + (v % 10) as u8;
            v /= 10;
            written += 1;
        }
        if self.mantissa < 0 {
            i -= 1;
            buf[i] = b'-';
        }
        // Only ASCII digits, '.' and '-' were written.
        std::str::from_utf8(&buf[i..]).unwrap_or("")
    }
}

/// Longest text of a [`Fixed`]: sign, 20 digits of an `i64`, up to [`MAX_SCALE`] leading
/// zeros of a fraction, the point.
pub const FIXED_TEXT_MAX: usize = 48;

impl FromStr for Fixed {
    type Err = FixedError;

    fn from_str(s: &str) -> Result<Fixed, FixedError> {
        let bytes = s.as_bytes();
        let (negative, digits) = match bytes.first() {
            Some(b'-') => (true, &bytes[1..]),
            Some(b'+') => (false, &bytes[1..]),
            _ => (false, bytes),
        };
        if digits.is_empty() {
            return Err(FixedError::Syntax(s.to_string()));
        }
        let mut mantissa: i64 = 0;
        let mut scale: Option<u8> = None;
        let mut saw_digit = false;
        for &b in digits {
            match b {
                b'0'..=b'9' => {
                    saw_digit = true;
                    mantissa = mantissa
                        .checked_mul(10)
                        .and_then(|m| m.checked_add((b - b'0') as i64))
                        .ok_or_else(|| FixedError::Overflow(s.to_string()))?;
                    if let Some(sc) = scale.as_mut() {
                        *sc += 1;
                        if *sc > MAX_SCALE {
                            return Err(FixedError::Overflow(s.to_string()));
                        }
                    }
                }
                b'.' if scale.is_none() => scale = Some(0),
                _ => return Err(FixedError::Syntax(s.to_string())),
            }
        }
        if !saw_digit {
            return Err(FixedError::Syntax(s.to_string()));
        }
        Ok(Fixed {
            mantissa: if negative { -mantissa } else { mantissa },
            scale: scale.unwrap_or(0),
        })
    }
}

impl fmt::Display for Fixed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; FIXED_TEXT_MAX];
        f.write_str(self.format_into(&mut buf))
    }
}

impl PartialEq for Fixed {
    fn eq(&self, other: &Fixed) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Fixed {}

impl Hash for Fixed {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let n = self.normalized();
        n.mantissa.hash(state);
        n.scale.hash(state);
    }
}

impl PartialOrd for Fixed {
    fn partial_cmp(&self, other: &Fixed) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Fixed {
    fn cmp(&self, other: &Fixed) -> Ordering {
        if self.scale == other.scale {
            return self.mantissa.cmp(&other.mantissa);
        }
        // Compare in i128 so rescaling can never overflow.
        let scale = self.scale.max(other.scale);
        let a = self.mantissa as i128 * POW10[(scale - self.scale) as usize] as i128;
        let b = other.mantissa as i128 * POW10[(scale - other.scale) as usize] as i128;
        a.cmp(&b)
    }
}

/// Which side of the book a level is on, or which side was the aggressor of a trade.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Side {
    /// A bid level, or a trade whose aggressor bought.
    Bid,
    /// An ask level, or a trade whose aggressor sold.
    Ask,
    /// The venue did not say (some trade feeds).
    None,
}

impl Side {
    /// One-letter code used on the wire and in Parquet (`B`, `A`, `N`, as in Databento DBN).
    pub fn code(self) -> &'static str {
        match self {
            Side::Bid => "B",
            Side::Ask => "A",
            Side::None => "N",
        }
    }

    /// Parses the one-letter code; anything else is `None` (the Rust option).
    pub fn from_code(code: &str) -> Option<Side> {
        match code {
            "B" => Some(Side::Bid),
            "A" => Some(Side::Ask),
            "N" => Some(Side::None),
            _ => None,
        }
    }

    /// The other side (`None` stays `None`).
    pub fn opposite(self) -> Side {
        match self {
            Side::Bid => Side::Ask,
            Side::Ask => Side::Bid,
            Side::None => Side::None,
        }
    }
}

/// Bit flags on a book delta.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
#[repr(transparent)]
pub struct Flags(pub u8);

impl Flags {
    /// This level belongs to a full snapshot: a consumer clears its book on the first
    /// snapshot level after any non-snapshot event, then applies levels until `LAST`.
    pub const SNAPSHOT: Flags = Flags(1);
    /// Last level of one venue message: the book is consistent after applying it.
    pub const LAST: Flags = Flags(2);

    /// True when every bit of `other` is set.
    pub fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }

    /// Union of two flag sets.
    pub fn with(self, other: Flags) -> Flags {
        Flags(self.0 | other.0)
    }
}

impl fmt::Debug for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names = Vec::new();
        if self.contains(Flags::SNAPSHOT) {
            names.push("SNAPSHOT");
        }
        if self.contains(Flags::LAST) {
            names.push("LAST");
        }
        if names.is_empty() {
            write!(f, "0")
        } else {
            write!(f, "{}", names.join(" | "))
        }
    }
}

/// One price level changing: `size` is the new total at `price`; zero deletes the level.
#[derive(Clone, Debug, PartialEq)]
pub struct BookDelta {
    /// Bid or ask.
    pub side: Side,
    /// Level price, exact.
    pub price: Fixed,
    /// New aggregate size at the level, exact; zero removes the level.
    pub size: Fixed,
    /// [`Flags::SNAPSHOT`] and/or [`Flags::LAST`].
    pub flags: Flags,
}

/// One trade print.
#[derive(Clone, Debug, PartialEq)]
pub struct Trade {
    /// Trade price, exact.
    pub price: Fixed,
    /// Traded quantity, exact.
    pub size: Fixed,
    /// Side of the aggressor (taker).
    pub aggressor: Side,
    /// The venue's trade id, verbatim. Held inline up to 24 bytes (every venue's ids
    /// here are shorter), so a trade event is copied and reused without allocating.
    pub trade_id: TradeId,
}

/// A venue's trade id: text, inline up to 24 bytes ([`compact_str::CompactString`]).
pub type TradeId = compact_str::CompactString;

/// Why a gap was declared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GapReason {
    /// A publisher's per-topic sequence number jumped.
    PublisherSeq,
    /// The venue's own sequence broke (`prev_venue_seq` did not match the last `venue_seq`).
    VenueSeq,
    /// A publisher was silent for three heartbeat intervals.
    Silence,
    /// A feed handler lost its connection or resynchronised its book.
    Resync,
    /// The recorder was not running: written by a restarted recorder for each stream it
    /// was recording, `ts_event` = the last `ts_recv` stored before the downtime and
    /// `ts_recv` = when recording resumed; `missing` counted by sequence where it can be.
    RecorderDown,
    /// The venue message just before was cut (its `LAST` row never stored) because the
    /// recorder stopped in the middle of it.
    CutMessage,
}

impl GapReason {
    /// Stable lowercase name used on the wire and in Parquet.
    pub fn name(self) -> &'static str {
        match self {
            GapReason::PublisherSeq => "publisher_seq",
            GapReason::VenueSeq => "venue_seq",
            GapReason::Silence => "silence",
            GapReason::Resync => "resync",
            GapReason::RecorderDown => "recorder_down",
            GapReason::CutMessage => "cut_message",
        }
    }

    /// Inverse of [`GapReason::name`].
    pub fn from_name(name: &str) -> Option<GapReason> {
        Some(match name {
            "publisher_seq" => GapReason::PublisherSeq,
            "venue_seq" => GapReason::VenueSeq,
            "silence" => GapReason::Silence,
            "resync" => GapReason::Resync,
            "recorder_down" => GapReason::RecorderDown,
            "cut_message" => GapReason::CutMessage,
            _ => return None,
        })
    }
}

/// Data may be missing for this venue/symbol just before this event's `ts_recv`.
#[derive(Clone, Debug, PartialEq)]
pub struct Gap {
    /// What broke.
    pub reason: GapReason,
    /// How many messages are missing, when it is known.
    pub missing: Option<u64>,
    /// Which publisher the gap was observed on (endpoint or id), empty if not applicable.
    pub publisher: String,
}

/// A publisher is alive; sent on `hb.<publisher>` every `interval_ms`.
#[derive(Clone, Debug, PartialEq)]
pub struct Heartbeat {
    /// The publisher's self-chosen id.
    pub publisher: String,
    /// Promised interval between heartbeats; silence after 3 intervals means dead.
    pub interval_ms: u64,
    /// True when the publisher is a replay, not a live source.
    pub replay: bool,
}

/// The publisher will send nothing more; sent on `eos.<publisher>`.
#[derive(Clone, Debug, PartialEq)]
pub struct EndOfStream {
    /// The publisher's id.
    pub publisher: String,
    /// True when the publisher is a replay.
    pub replay: bool,
    /// Data events the publisher sent in total.
    pub events: u64,
}

/// What happened, by kind.
#[derive(Clone, Debug, PartialEq)]
pub enum Body {
    /// An L2 level change.
    Book(BookDelta),
    /// A trade print.
    Trade(Trade),
    /// A gap marker.
    Gap(Gap),
    /// A liveness beat.
    Heartbeat(Heartbeat),
    /// The end of a stream.
    EndOfStream(EndOfStream),
}

/// The kinds of event, which are also the first component of a bus topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// [`Body::Book`], topic `book.<venue>.<symbol>`.
    Book,
    /// [`Body::Trade`], topic `trade.<venue>.<symbol>`.
    Trade,
    /// [`Body::Gap`], topic `gap.<venue>.<symbol>`.
    Gap,
    /// [`Body::Heartbeat`], topic `hb.<publisher>`.
    Heartbeat,
    /// [`Body::EndOfStream`], topic `eos.<publisher>`.
    EndOfStream,
}

impl Kind {
    /// The topic prefix / kind name.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Book => "book",
            Kind::Trade => "trade",
            Kind::Gap => "gap",
            Kind::Heartbeat => "hb",
            Kind::EndOfStream => "eos",
        }
    }

    /// Inverse of [`Kind::name`].
    pub fn from_name(name: &str) -> Option<Kind> {
        Some(match name {
            "book" => Kind::Book,
            "trade" => Kind::Trade,
            "gap" => Kind::Gap,
            "hb" => Kind::Heartbeat,
            "eos" => Kind::EndOfStream,
            _ => return None,
        })
    }

    /// Kinds that are market data or dataset facts, stored by the recorder.
    pub fn is_stored(self) -> bool {
        matches!(self, Kind::Book | Kind::Trade | Kind::Gap)
    }
}

/// One normalized event with its routing and timing header.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// Venue name, lowercase (`binance`, `coinbase`, `sim`).
    pub venue: Arc<str>,
    /// The venue's symbol, verbatim (`BTCUSDT`, `BTC-USD`).
    pub symbol: Arc<str>,
    /// Exchange timestamp, ns since epoch; equals `ts_recv` when the venue gives none.
    pub ts_event: UnixNanos,
    /// When the publishing process received it from the venue, ns since epoch.
    pub ts_recv: UnixNanos,
    /// The venue's own sequence id (update id, trade id) where it has one.
    pub venue_seq: Option<u64>,
    /// The venue sequence id this message follows, where the venue states it
    /// (Binance `U-1` or `pu`); a mismatch with the last `venue_seq` is a gap.
    pub prev_venue_seq: Option<u64>,
    /// The publisher's sequence number on this event's topic, starting at 1.
    pub pub_seq: u64,
    /// The payload.
    pub body: Body,
}

impl Event {
    /// A placeholder with empty names, zero times and an empty gap body: the event a
    /// reading loop hands to `EventReader::read_into` to be overwritten row after row.
    pub fn blank() -> Event {
        Event::blank_named(Arc::from(""), Arc::from(""))
    }

    /// [`Event::blank`] with the names given (a reader passes the ones it shares, so the
    /// placeholder allocates nothing).
    pub fn blank_named(venue: Arc<str>, symbol: Arc<str>) -> Event {
        Event {
            venue,
            symbol,
            ts_event: 0,
            ts_recv: 0,
            venue_seq: None,
            prev_venue_seq: None,
            pub_seq: 0,
            body: Body::Gap(Gap {
                reason: GapReason::Resync,
                missing: None,
                publisher: String::new(),
            }),
        }
    }

    /// A publisher's closing event (`eos.<publisher>`): sent now (`ts_event`), dated
    /// `ts_recv`, counting the `events` it published; `pub_seq` 1 (its topic's first).
    pub fn end_of_stream(publisher: &str, replay: bool, ts_recv: UnixNanos, events: u64) -> Event {
        Event {
            venue: "".into(),
            symbol: "".into(),
            ts_event: now_nanos(),
            ts_recv,
            venue_seq: None,
            prev_venue_seq: None,
            pub_seq: 1,
            body: Body::EndOfStream(EndOfStream {
                publisher: publisher.to_string(),
                replay,
                events,
            }),
        }
    }

    /// The event's kind.
    pub fn kind(&self) -> Kind {
        match self.body {
            Body::Book(_) => Kind::Book,
            Body::Trade(_) => Kind::Trade,
            Body::Gap(_) => Kind::Gap,
            Body::Heartbeat(_) => Kind::Heartbeat,
            Body::EndOfStream(_) => Kind::EndOfStream,
        }
    }
}

/// Names an [`Interner`] finds without hashing: a stream's venue and symbol, and a
/// strategy's name beside them.
const RECENT: usize = 4;

/// The state one stream of payloads is decoded with (every [`crate::wire::decode`] takes
/// it): shared venue and symbol strings, so millions of events cost one allocation per
/// name, and the count of fields the decoder did not know and ignored.
///
/// Unknown fields come from a publisher of a later minor version of the same protocol
/// major (`docs/PROTOCOL.md`, "Compatibility"): they are skipped, never an error, and
/// counted here so a recorder or strategy can say that its publisher speaks a newer
/// protocol than it does.
#[derive(Default, Debug)]
pub struct Interner {
    names: rustc_hash::FxHashMap<Box<str>, Arc<str>>,
    /// The last [`RECENT`] names handed out (a stream of one instrument asks for its venue
    /// and its symbol in turn; the simulated exchange asks for a strategy's name, venue
    /// and symbol with every order): found by a few short compares, without hashing.
    recent: [Option<Arc<str>>; RECENT],
    /// Which `recent` slot the next miss replaces.
    next_recent: usize,
    /// The name pair that last passed the name rules (see [`Interner::validate`]).
    checked: NamesChecked,
    unknown_fields: u64,
    first_unknown_field: Option<Box<str>>,
}

impl Interner {
    /// The shared copy of `bytes` as a name; None when they are not UTF-8. A name seen in
    /// one of the last [`RECENT`] misses costs a compare or few (no UTF-8 check, no
    /// hashing).
    pub fn intern_utf8(&mut self, bytes: &[u8]) -> Option<Arc<str>> {
        if let Some(hit) = self.recent_hit(bytes) {
            return Some(hit);
        }
        Some(self.intern_missed(std::str::from_utf8(bytes).ok()?))
    }

    fn recent_hit(&self, bytes: &[u8]) -> Option<Arc<str>> {
        self.recent
            .iter()
            .flatten()
            .find(|r| r.as_bytes() == bytes)
            .cloned()
    }

    fn intern_missed(&mut self, name: &str) -> Arc<str> {
        let shared = match self.names.get(name) {
            Some(shared) => shared.clone(),
            None => {
                let shared: Arc<str> = Arc::from(name);
                if name.len() <= validate::MAX_NAME_BYTES {
                    self.names.insert(Box::from(name), shared.clone());
                }
                shared
            }
        };
        self.recent[self.next_recent] = Some(shared.clone());
        self.next_recent = (self.next_recent + 1) % RECENT;
        shared
    }

    /// [`Event::validate`] of an event decoded with these names: the name rules run once
    /// per pair of interned names in a row, not once per event.
    pub fn validate(&mut self, event: &Event) -> Result<(), Invalid> {
        event.validate_with(&mut self.checked)
    }

    /// The shared copy of `name`, created on first use. A name longer than any valid
    /// venue or symbol ([`validate::MAX_NAME_BYTES`]) is copied but not kept: decoders
    /// intern before they validate, and a publisher sending ever new long names (a JSON
    /// symbol has no length limit) must not grow a recorder's memory with each one.
    pub fn intern(&mut self, name: &str) -> Arc<str> {
        match self.recent_hit(name.as_bytes()) {
            Some(hit) => hit,
            None => self.intern_missed(name),
        }
    }

    /// Fields ignored so far because this decoder does not know them, over all payloads
    /// decoded with this interner (each unknown JSON key counts once per message; a
    /// binary payload's extension counts once per message).
    pub fn unknown_fields(&self) -> u64 {
        self.unknown_fields
    }

    /// The name of the first unknown field seen, to tell the user what was ignored.
    pub fn first_unknown_field(&self) -> Option<&str> {
        self.first_unknown_field.as_deref()
    }

    /// Counts `count` ignored fields of one message, the first of them named `name`;
    /// allocates only for the first one ever seen.
    pub(crate) fn note_unknown_fields(&mut self, count: u64, name: &str) {
        self.unknown_fields += count;
        if self.first_unknown_field.is_none() {
            let shown: String = name.chars().take(64).collect();
            self.first_unknown_field = Some(shown.into_boxed_str());
        }
    }
}

/// Anything that takes events in order: a dataset writer, a book checker, a test vector.
///
/// Sources (importers, feeds) push into a sink so they never know where events go.
pub trait EventSink {
    /// Takes one event; an error stops the source.
    fn accept(&mut self, event: Event) -> anyhow::Result<()>;
}

impl EventSink for Vec<Event> {
    fn accept(&mut self, event: Event) -> anyhow::Result<()> {
        self.push(event);
        Ok(())
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn interned_names_are_shared_whether_recent_or_not_and_bytes_must_be_utf8() {
        let mut names = Interner::default();
        let venue = names.intern("binance");
        let symbol = names.intern_utf8(b"BTCUSDT").unwrap();
        assert!(Arc::ptr_eq(&venue, &names.intern_utf8(b"binance").unwrap()));
        assert!(Arc::ptr_eq(&symbol, &names.intern("BTCUSDT")));
        // Other names push both out of the recent ones: the table still shares them.
        let (a, b) = (names.intern("okx"), names.intern("ETHUSDT"));
        let _ = (names.intern("kraken"), names.intern("XBT/USD"));
        assert!(Arc::ptr_eq(&venue, &names.intern("binance")));
        assert!(Arc::ptr_eq(
            &symbol,
            &names.intern_utf8(b"BTCUSDT").unwrap()
        ));
        assert!(Arc::ptr_eq(&a, &names.intern("okx")));
        assert!(Arc::ptr_eq(&b, &names.intern_utf8(b"ETHUSDT").unwrap()));
        assert_eq!(names.intern_utf8(b"bad\xff"), None);
        assert_eq!(names.intern_utf8(b"").as_deref(), Some(""));
    }
    use super::*;

    #[test]
    fn fixed_text_is_exact_and_built_without_allocating() {
        for (m, sc, text) in [
            (0, 0, "0"),
            (5, 3, "0.005"),
            (-5, 3, "-0.005"),
            (6100050, 2, "61000.50"),
            (-7, 0, "-7"),
            (i64::MIN + 1, 0, "-9223372036854775807"),
            (i64::MAX, 18, "9.223372036854775807"),
            (1, 18, "0.000000000000000001"),
        ] {
            let f = Fixed::new(m, sc);
            assert_eq!(f.to_string(), text);
            let mut buf = [0u8; FIXED_TEXT_MAX];
            assert_eq!(f.format_into(&mut buf), text);
            assert_eq!(text.parse::<Fixed>().map(|p| p == f), Ok(true), "{text}");
        }
    }

    #[test]
    fn fixed_round_trips_venue_strings_exactly() {
        for s in [
            "61671.55000000",
            "0.00100000",
            "0",
            "0.0",
            "-12.5",
            "100",
            "0.000000001",
            "5602.25",
            "1e",
        ]
        .iter()
        .filter(|s| !s.contains('e'))
        {
            let f: Fixed = s.parse().unwrap();
            assert_eq!(f.to_string(), *s);
        }
    }

    #[test]
    fn fixed_compares_by_value_across_scales() {
        let a: Fixed = "1.50".parse().unwrap();
        let b: Fixed = "1.5".parse().unwrap();
        assert_eq!(a, b);
        assert!("1.49999".parse::<Fixed>().unwrap() < b);
        let mut set = std::collections::HashSet::new();
        set.insert(a);
        assert!(set.contains(&b));
    }

    #[test]
    fn fixed_rejects_garbage_and_overflow() {
        assert!("".parse::<Fixed>().is_err());
        assert!("1.2.3".parse::<Fixed>().is_err());
        assert!("abc".parse::<Fixed>().is_err());
        assert!("1e5".parse::<Fixed>().is_err());
        assert!("99999999999999999999".parse::<Fixed>().is_err());
        assert!("0.0000000000000000001".parse::<Fixed>().is_err());
    }

    /// Found while writing the wire fuzz targets: both decoders intern venue and symbol
    /// before validating them, so every refused payload with a new long symbol stayed in
    /// the recorder's interner for good, twice (map key and shared copy).
    #[test]
    fn an_interner_keeps_no_name_longer_than_a_valid_one() {
        let mut names = Interner::default();
        for i in 0..1_000 {
            let long = format!("{i:0>1000}");
            assert_eq!(&*names.intern(&long), long.as_str());
        }
        assert!(
            names.names.is_empty(),
            "{} long names kept",
            names.names.len()
        );
        let a = names.intern("BTCUSDT");
        assert!(
            Arc::ptr_eq(&a, &names.intern("BTCUSDT")),
            "valid names are shared"
        );
    }

    #[test]
    fn fixed_arithmetic_is_exact() {
        let a: Fixed = "0.1".parse().unwrap();
        let b: Fixed = "0.20".parse().unwrap();
        assert_eq!(a.checked_add(b).unwrap().to_string(), "0.30");
        assert_eq!(b.checked_sub(a).unwrap().to_string(), "0.10");
        assert_eq!(b.rescale(1).unwrap().to_string(), "0.2");
        assert!("0.25".parse::<Fixed>().unwrap().rescale(1).is_none());
    }
}
