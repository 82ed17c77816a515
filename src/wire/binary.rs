//! The binary payload: a fixed little-endian layout that decodes with a few bounds checks
//! instead of a JSON parse (the recorder's and strategies' hot path). Exact like JSON:
//! a price is its mantissa and scale, so `61671.55000000` keeps its trailing zeros.
//!
//! ```text
//! offset size  field
//!      0    1  magic 0xB7: 0xB6 + major version 1 (never the first byte of a JSON payload)
//!      1    1  kind: 1 book, 2 trade, 3 gap, 4 heartbeat, 5 end_of_stream
//!      2    1  presence bits: 1 venue_seq, 2 prev_venue_seq, 4 gap missing, 8 replay
//!      3    1  side ('B', 'A', 'N') for book and trade; for gap the reason: 1 publisher_seq,
//!              2 venue_seq, 3 silence, 4 resync, 5 recorder_down, 6 cut_message; else 0
//!      4    8  ts_event   i64
//!     12    8  ts_recv    i64
//!     20    8  pub_seq    u64
//!     28    8  venue_seq  u64 (0 when absent)
//!     36    8  prev_venue_seq u64 (0 when absent)
//!     44       body:
//!              book   price i64, size i64, price scale u8, size scale u8, flags u8
//!              trade  price i64, size i64, price scale u8, size scale u8, trade_id str
//!              gap    missing u64 (0 when absent), publisher str
//!              heartbeat  interval_ms u64, protocol u32, publisher str
//!              end_of_stream  events u64, publisher str
//!              then venue str, symbol str       (str = u16 length + UTF-8 bytes)
//! ```
//!
//! Versions: the magic is `0xB6 + major`, so `0xB8..=0xBF` are majors 2 to 9, refused
//! by name. Within major 1 a later minor may set presence bits above 8 and append bytes
//! after the symbol; this decoder skips both and counts each as an unknown field.

use std::sync::Arc;

use super::{PROTOCOL_VERSION, WireError};
use crate::event::{
    Body, BookDelta, EndOfStream, Event, Fixed, Flags, Gap, GapReason, Heartbeat, Interner, Kind,
    MAX_SCALE, Side, Trade,
};

/// First byte of every binary payload of protocol major version 1: `0xB6 + major`.
pub const MAGIC: u8 = 0xB6 + super::PROTOCOL_VERSION as u8;

/// Base of the version-carrying magic bytes.
const MAGIC_BASE: u8 = 0xB6;
/// Highest magic byte a binary payload of any version may start with (major 9).
const MAGIC_LAST: u8 = 0xBF;

/// True when `first` starts a binary payload of another major version (`0xB8..=0xBF`).
/// Such bytes are UTF-8 continuation bytes, so they never start a JSON payload either.
pub(super) fn is_other_version(first: u8) -> bool {
    (MAGIC + 1..=MAGIC_LAST).contains(&first)
}

/// The major version a binary payload's first byte declares.
pub(super) fn version_of(first: u8) -> u8 {
    first - MAGIC_BASE
}

const HEADER: usize = 44;
const HAS_VENUE_SEQ: u8 = 1;
const HAS_PREV_VENUE_SEQ: u8 = 2;
const HAS_MISSING: u8 = 4;
const REPLAY: u8 = 8;
/// Presence bits version 1 defines; others come from a later minor and are ignored.
const KNOWN_BITS: u8 = HAS_VENUE_SEQ | HAS_PREV_VENUE_SEQ | HAS_MISSING | REPLAY;

fn kind_code(kind: Kind) -> u8 {
    match kind {
        Kind::Book => 1,
        Kind::Trade => 2,
        Kind::Gap => 3,
        Kind::Heartbeat => 4,
        Kind::EndOfStream => 5,
    }
}

fn reason_code(reason: GapReason) -> u8 {
    match reason {
        GapReason::PublisherSeq => 1,
        GapReason::VenueSeq => 2,
        GapReason::Silence => 3,
        GapReason::Resync => 4,
        GapReason::RecorderDown => 5,
        GapReason::CutMessage => 6,
    }
}

fn reason_from(code: u8) -> Option<GapReason> {
    Some(match code {
        1 => GapReason::PublisherSeq,
        2 => GapReason::VenueSeq,
        3 => GapReason::Silence,
        4 => GapReason::Resync,
        5 => GapReason::RecorderDown,
        6 => GapReason::CutMessage,
        _ => return None,
    })
}

fn side_code(side: Side) -> u8 {
    side.code().as_bytes()[0]
}

/// Strings of the event, which must each fit a u16 length.
fn strings(event: &Event) -> [&str; 3] {
    let extra = match &event.body {
        Body::Trade(t) => t.trade_id.as_str(),
        Body::Gap(g) => g.publisher.as_str(),
        Body::Heartbeat(h) => h.publisher.as_str(),
        Body::EndOfStream(e) => e.publisher.as_str(),
        Body::Book(_) => "",
    };
    [extra, &event.venue, &event.symbol]
}

/// True when every string of `event` fits the layout's u16 lengths.
pub(super) fn fits(event: &Event) -> bool {
    strings(event).iter().all(|s| s.len() <= u16::MAX as usize)
}

fn push_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u16).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn push_fixed_pair(out: &mut Vec<u8>, price: Fixed, size: Fixed) {
    out.extend_from_slice(&price.mantissa.to_le_bytes());
    out.extend_from_slice(&size.mantissa.to_le_bytes());
    out.push(price.scale);
    out.push(size.scale);
}

/// Appends `event`'s binary payload to `out`. Callers check [`fits`] first.
pub(super) fn encode(event: &Event, out: &mut Vec<u8>) {
    let mut bits = 0u8;
    if event.venue_seq.is_some() {
        bits |= HAS_VENUE_SEQ;
    }
    if event.prev_venue_seq.is_some() {
        bits |= HAS_PREV_VENUE_SEQ;
    }
    let detail = match &event.body {
        Body::Book(b) => side_code(b.side),
        Body::Trade(t) => side_code(t.aggressor),
        Body::Gap(g) => {
            if g.missing.is_some() {
                bits |= HAS_MISSING;
            }
            reason_code(g.reason)
        }
        Body::Heartbeat(h) => {
            if h.replay {
                bits |= REPLAY;
            }
            0
        }
        Body::EndOfStream(e) => {
            if e.replay {
                bits |= REPLAY;
            }
            0
        }
    };
    out.reserve(HEADER + 32 + event.venue.len() + event.symbol.len());
    // The fixed header in one copy (the hot path encodes every replayed event).
    let mut h = [0u8; HEADER];
    h[..4].copy_from_slice(&[MAGIC, kind_code(event.kind()), bits, detail]);
    h[4..12].copy_from_slice(&event.ts_event.to_le_bytes());
    h[12..20].copy_from_slice(&event.ts_recv.to_le_bytes());
    h[20..28].copy_from_slice(&event.pub_seq.to_le_bytes());
    h[28..36].copy_from_slice(&event.venue_seq.unwrap_or(0).to_le_bytes());
    h[36..44].copy_from_slice(&event.prev_venue_seq.unwrap_or(0).to_le_bytes());
    out.extend_from_slice(&h);
    match &event.body {
        Body::Book(b) => {
            let mut f = [0u8; 19];
            f[..8].copy_from_slice(&b.price.mantissa.to_le_bytes());
            f[8..16].copy_from_slice(&b.size.mantissa.to_le_bytes());
            f[16] = b.price.scale;
            f[17] = b.size.scale;
            f[18] = b.flags.0;
            out.extend_from_slice(&f);
        }
        Body::Trade(t) => {
            push_fixed_pair(out, t.price, t.size);
            push_str(out, &t.trade_id);
        }
        Body::Gap(g) => {
            out.extend_from_slice(&g.missing.unwrap_or(0).to_le_bytes());
            push_str(out, &g.publisher);
        }
        Body::Heartbeat(h) => {
            out.extend_from_slice(&h.interval_ms.to_le_bytes());
            out.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
            push_str(out, &h.publisher);
        }
        Body::EndOfStream(e) => {
            out.extend_from_slice(&e.events.to_le_bytes());
            push_str(out, &e.publisher);
        }
    }
    push_str(out, &event.venue);
    push_str(out, &event.symbol);
}

/// A bounds-checked reader over a payload.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

fn short() -> WireError {
    WireError::Payload("binary payload is truncated".into())
}

impl<'a> Reader<'a> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let end = self.at + N;
        let bytes = self.bytes.get(self.at..end).ok_or_else(short)?;
        self.at = end;
        Ok(bytes.try_into().expect("slice of length N"))
    }

    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take::<1>()?[0])
    }

    fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_le_bytes(self.take()?))
    }

    fn i64(&mut self) -> Result<i64, WireError> {
        Ok(i64::from_le_bytes(self.take()?))
    }

    fn str(&mut self, what: &str) -> Result<&'a str, WireError> {
        let len = u16::from_le_bytes(self.take()?) as usize;
        let bytes = self.bytes.get(self.at..self.at + len).ok_or_else(short)?;
        self.at += len;
        std::str::from_utf8(bytes)
            .map_err(|_| WireError::Payload(format!("binary payload: {what} is not UTF-8")))
    }

    /// A length-prefixed name, shared through `names` (a repeated name is neither
    /// UTF-8-checked nor hashed again).
    fn name(&mut self, what: &str, names: &mut Interner) -> Result<Arc<str>, WireError> {
        let len = u16::from_le_bytes(self.take()?) as usize;
        let bytes = self.bytes.get(self.at..self.at + len).ok_or_else(short)?;
        self.at += len;
        names
            .intern_utf8(bytes)
            .ok_or_else(|| WireError::Payload(format!("binary payload: {what} is not UTF-8")))
    }

    fn fixed_pair(&mut self) -> Result<(Fixed, Fixed), WireError> {
        let (price, size) = (self.i64()?, self.i64()?);
        let (price_scale, size_scale) = (self.u8()?, self.u8()?);
        if price_scale > MAX_SCALE || size_scale > MAX_SCALE {
            return Err(WireError::Payload(format!(
                "binary payload: scale above {MAX_SCALE}"
            )));
        }
        Ok((Fixed::new(price, price_scale), Fixed::new(size, size_scale)))
    }
}

fn side_from(code: u8) -> Result<Side, WireError> {
    match code {
        b'B' => Ok(Side::Bid),
        b'A' => Ok(Side::Ask),
        b'N' => Ok(Side::None),
        other => Err(WireError::Payload(format!(
            "binary payload: side byte {other:#04x} is not B, A or N"
        ))),
    }
}

/// Decodes a binary payload (first byte [`MAGIC`]).
pub(super) fn decode(payload: &[u8], names: &mut Interner) -> Result<Event, WireError> {
    let mut r = Reader {
        bytes: payload,
        at: 0,
    };
    let [magic, kind, bits, detail] = r.take::<4>()?;
    debug_assert_eq!(magic, MAGIC);
    let (ts_event, ts_recv, pub_seq) = (r.i64()?, r.i64()?, r.u64()?);
    let (venue_seq, prev_venue_seq) = (r.u64()?, r.u64()?);
    let body = match kind {
        1 => {
            let (price, size) = r.fixed_pair()?;
            Body::Book(BookDelta {
                side: side_from(detail)?,
                price,
                size,
                flags: Flags(r.u8()?),
            })
        }
        2 => {
            let (price, size) = r.fixed_pair()?;
            Body::Trade(Trade {
                aggressor: side_from(detail)?,
                price,
                size,
                trade_id: r.str("trade_id")?.into(),
            })
        }
        3 => {
            let reason = reason_from(detail)
                .ok_or_else(|| WireError::Payload(format!("unknown gap reason code {detail}")))?;
            let missing = r.u64()?;
            Body::Gap(Gap {
                reason,
                missing: (bits & HAS_MISSING != 0).then_some(missing),
                publisher: r.str("publisher")?.to_string(),
            })
        }
        4 => {
            let interval_ms = r.u64()?;
            let protocol = u32::from_le_bytes(r.take()?);
            if protocol != PROTOCOL_VERSION {
                return Err(WireError::Version {
                    got: protocol.into(),
                    speaks: PROTOCOL_VERSION,
                });
            }
            Body::Heartbeat(Heartbeat {
                publisher: r.str("publisher")?.to_string(),
                interval_ms,
                replay: bits & REPLAY != 0,
            })
        }
        5 => {
            let events = r.u64()?;
            Body::EndOfStream(EndOfStream {
                publisher: r.str("publisher")?.to_string(),
                replay: bits & REPLAY != 0,
                events,
            })
        }
        other => return Err(WireError::Payload(format!("unknown kind code {other}"))),
    };
    let venue = r.name("venue", names)?;
    let symbol = r.name("symbol", names)?;
    // A later minor version's additions: skipped, counted.
    if bits & !KNOWN_BITS != 0 {
        names.note_unknown_fields(1, "binary presence bits above 8");
    }
    if r.at != payload.len() {
        names.note_unknown_fields(1, "binary bytes after the symbol");
    }
    Ok(Event {
        venue,
        symbol,
        ts_event,
        ts_recv,
        venue_seq: (bits & HAS_VENUE_SEQ != 0).then_some(venue_seq),
        prev_venue_seq: (bits & HAS_PREV_VENUE_SEQ != 0).then_some(prev_venue_seq),
        pub_seq,
        body,
    })
}
