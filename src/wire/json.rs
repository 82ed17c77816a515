//! The JSON payload: one object per event, prices and sizes as decimal strings so they
//! stay exact. The default encoding, because every language reads it.
//!
//! The encoder is hand-written (no intermediate `serde_json::Value`) and the decoder
//! borrows from the payload: simulate and replay publish millions of events.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};

use super::{PROTOCOL_VERSION, WireError};
use crate::event::{
    Body, BookDelta, EndOfStream, Event, Fixed, Flags, Gap, GapReason, Heartbeat, Interner, Kind,
    Side, Trade,
};

/// Appends `event`'s JSON payload to `out`.
pub(super) fn encode(event: &Event, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"kind\":\"");
    out.extend_from_slice(event.kind().name().as_bytes());
    out.extend_from_slice(b"\",\"venue\":");
    push_json_str(out, &event.venue);
    out.extend_from_slice(b",\"symbol\":");
    push_json_str(out, &event.symbol);
    out.extend_from_slice(b",\"ts_event\":");
    push_int(out, event.ts_event);
    out.extend_from_slice(b",\"ts_recv\":");
    push_int(out, event.ts_recv);
    if let Some(seq) = event.venue_seq {
        out.extend_from_slice(b",\"venue_seq\":");
        push_uint(out, seq);
    }
    if let Some(seq) = event.prev_venue_seq {
        out.extend_from_slice(b",\"prev_venue_seq\":");
        push_uint(out, seq);
    }
    out.extend_from_slice(b",\"pub_seq\":");
    push_uint(out, event.pub_seq);
    match &event.body {
        Body::Book(b) => {
            push_side_price_size(out, b.side, b.price, b.size);
            out.extend_from_slice(b",\"flags\":");
            push_uint(out, b.flags.0 as u64);
        }
        Body::Trade(t) => {
            push_side_price_size(out, t.aggressor, t.price, t.size);
            out.extend_from_slice(b",\"trade_id\":");
            push_json_str(out, &t.trade_id);
        }
        Body::Gap(g) => {
            out.extend_from_slice(b",\"reason\":\"");
            out.extend_from_slice(g.reason.name().as_bytes());
            out.push(b'"');
            if let Some(missing) = g.missing {
                out.extend_from_slice(b",\"missing\":");
                push_uint(out, missing);
            }
            out.extend_from_slice(b",\"publisher\":");
            push_json_str(out, &g.publisher);
        }
        Body::Heartbeat(h) => {
            out.extend_from_slice(b",\"publisher\":");
            push_json_str(out, &h.publisher);
            out.extend_from_slice(b",\"interval_ms\":");
            push_uint(out, h.interval_ms);
            out.extend_from_slice(b",\"replay\":");
            out.extend_from_slice(if h.replay { b"true" } else { b"false" });
            out.extend_from_slice(b",\"protocol\":");
            push_uint(out, PROTOCOL_VERSION as u64);
        }
        Body::EndOfStream(e) => {
            out.extend_from_slice(b",\"publisher\":");
            push_json_str(out, &e.publisher);
            out.extend_from_slice(b",\"replay\":");
            out.extend_from_slice(if e.replay { b"true" } else { b"false" });
            out.extend_from_slice(b",\"events\":");
            push_uint(out, e.events);
        }
    }
    out.push(b'}');
}

fn push_side_price_size(out: &mut Vec<u8>, side: Side, price: Fixed, size: Fixed) {
    out.extend_from_slice(b",\"side\":\"");
    out.extend_from_slice(side.code().as_bytes());
    out.extend_from_slice(b"\",\"price\":\"");
    price.write_to(out);
    out.extend_from_slice(b"\",\"size\":\"");
    size.write_to(out);
    out.push(b'"');
}

fn push_int(out: &mut Vec<u8>, v: i64) {
    if v < 0 {
        out.push(b'-');
    }
    push_uint(out, v.unsigned_abs());
}

fn push_uint(out: &mut Vec<u8>, mut v: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&tmp[i..]);
}

fn push_json_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    for &b in s.as_bytes() {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0..=0x1f => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[(b >> 4) as usize]);
                out.push(HEX[(b & 0xf) as usize]);
            }
            _ => out.push(b),
        }
    }
    out.push(b'"');
}

/// Every field name this protocol version defines, in the order of the bits of
/// [`RawEvent::seen`]. Which kind uses which is [`allowed`]; which it requires is in
/// [`decode`]; both follow the tables of `docs/PROTOCOL.md`.
const FIELDS: [&str; 20] = [
    "kind",
    "venue",
    "symbol",
    "ts_event",
    "ts_recv",
    "venue_seq",
    "prev_venue_seq",
    "pub_seq",
    "protocol",
    "side",
    "price",
    "size",
    "flags",
    "trade_id",
    "reason",
    "missing",
    "publisher",
    "interval_ms",
    "replay",
    "events",
];

/// Index in [`FIELDS`] of a field name (one `match`, compiled to a few compares).
fn field_index(name: &str) -> Option<usize> {
    Some(match name {
        "kind" => 0,
        "venue" => 1,
        "symbol" => 2,
        "ts_event" => 3,
        "ts_recv" => 4,
        "venue_seq" => 5,
        "prev_venue_seq" => 6,
        "pub_seq" => 7,
        "protocol" => 8,
        "side" => 9,
        "price" => 10,
        "size" => 11,
        "flags" => 12,
        "trade_id" => 13,
        "reason" => 14,
        "missing" => 15,
        "publisher" => 16,
        "interval_ms" => 17,
        "replay" => 18,
        "events" => 19,
        _ => return None,
    })
}

/// Bit of a field name in [`RawEvent::seen`] (evaluated at compile time).
const fn bit(name: &str) -> u32 {
    let mut i = 0;
    while i < FIELDS.len() {
        if same(FIELDS[i].as_bytes(), name.as_bytes()) {
            return 1 << i;
        }
        i += 1;
    }
    panic!("not a field name");
}

const fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Fields of every kind: the header, and `protocol` (the major version, optional).
const COMMON: u32 = bit("kind")
    | bit("venue")
    | bit("symbol")
    | bit("ts_event")
    | bit("ts_recv")
    | bit("venue_seq")
    | bit("prev_venue_seq")
    | bit("pub_seq")
    | bit("protocol");

/// The fields `kind` defines; any other field of the message is counted as unknown.
fn allowed(kind: Kind) -> u32 {
    COMMON
        | match kind {
            Kind::Book => bit("side") | bit("price") | bit("size") | bit("flags"),
            Kind::Trade => bit("side") | bit("price") | bit("size") | bit("trade_id"),
            Kind::Gap => bit("reason") | bit("missing") | bit("publisher"),
            Kind::Heartbeat => bit("publisher") | bit("interval_ms") | bit("replay"),
            Kind::EndOfStream => bit("publisher") | bit("replay") | bit("events"),
        }
}

/// A JSON string, borrowed from the payload unless it holds escapes.
struct Str<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Str<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Str<'de>, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// The JSON object as received, borrowing strings from the payload where it can. Every
/// field is optional here; [`decode`] says which the kind requires. Fields this
/// version does not define are skipped and counted (`docs/PROTOCOL.md`,
/// "Compatibility").
#[derive(Default)]
struct RawEvent<'a> {
    kind: Option<Str<'a>>,
    venue: Option<Str<'a>>,
    symbol: Option<Str<'a>>,
    ts_event: Option<i64>,
    ts_recv: Option<i64>,
    venue_seq: Option<u64>,
    prev_venue_seq: Option<u64>,
    pub_seq: Option<u64>,
    protocol: Option<u64>,
    side: Option<Str<'a>>,
    price: Option<Str<'a>>,
    size: Option<Str<'a>>,
    flags: Option<u8>,
    trade_id: Option<Str<'a>>,
    reason: Option<Str<'a>>,
    missing: Option<u64>,
    publisher: Option<Str<'a>>,
    interval_ms: Option<u64>,
    replay: Option<bool>,
    events: Option<u64>,
    /// Bits (see [`FIELDS`]) of the known fields present.
    seen: u32,
    /// Keys this version does not define.
    unknown: u32,
    /// The first of them.
    first_unknown: Option<Str<'a>>,
}

impl<'de> Deserialize<'de> for RawEvent<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<RawEvent<'de>, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawEvent<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object with a \"kind\" field")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawEvent<'de>, A::Error> {
                let mut raw = RawEvent::default();
                while let Some(Str(key)) = map.next_key::<Str<'de>>()? {
                    let Some(i) = field_index(&key) else {
                        map.next_value::<IgnoredAny>()?;
                        raw.unknown += 1;
                        raw.first_unknown.get_or_insert(Str(key));
                        continue;
                    };
                    if raw.seen & (1 << i) != 0 {
                        return Err(de::Error::custom(format_args!(
                            "field \"{}\" appears twice",
                            FIELDS[i]
                        )));
                    }
                    raw.seen |= 1 << i;
                    match i {
                        0 => raw.kind = map.next_value()?,
                        1 => raw.venue = map.next_value()?,
                        2 => raw.symbol = map.next_value()?,
                        3 => raw.ts_event = map.next_value()?,
                        4 => raw.ts_recv = map.next_value()?,
                        5 => raw.venue_seq = map.next_value()?,
                        6 => raw.prev_venue_seq = map.next_value()?,
                        7 => raw.pub_seq = map.next_value()?,
                        8 => raw.protocol = map.next_value()?,
                        9 => raw.side = map.next_value()?,
                        10 => raw.price = map.next_value()?,
                        11 => raw.size = map.next_value()?,
                        12 => raw.flags = map.next_value()?,
                        13 => raw.trade_id = map.next_value()?,
                        14 => raw.reason = map.next_value()?,
                        15 => raw.missing = map.next_value()?,
                        16 => raw.publisher = map.next_value()?,
                        17 => raw.interval_ms = map.next_value()?,
                        18 => raw.replay = map.next_value()?,
                        _ => raw.events = map.next_value()?,
                    }
                }
                Ok(raw)
            }
        }
        d.deserialize_map(V)
    }
}

fn missing(name: &str, kind: &str) -> WireError {
    WireError::Payload(format!(
        "{kind} message without \"{name}\", which docs/PROTOCOL.md requires for {kind}"
    ))
}

fn need<T>(field: Option<T>, name: &str, kind: &str) -> Result<T, WireError> {
    field.ok_or_else(|| missing(name, kind))
}

fn fixed(field: Option<Str<'_>>, name: &str, kind: &str) -> Result<Fixed, WireError> {
    need(field, name, kind)?
        .0
        .parse()
        .map_err(|e| WireError::Payload(format!("\"{name}\": {e}")))
}

fn side(field: Option<Str<'_>>, kind: &str) -> Result<Side, WireError> {
    let code = need(field, "side", kind)?.0;
    Side::from_code(&code)
        .ok_or_else(|| WireError::Payload(format!("\"side\" must be B, A or N, got {code:?}")))
}

/// Decodes a JSON payload, sharing venue/symbol names through `names` and counting
/// there the fields it ignored. Checks the protocol version and which fields the kind
/// requires; [`super::decode`] then validates the event.
pub(super) fn decode(payload: &[u8], names: &mut Interner) -> Result<Event, WireError> {
    let raw: RawEvent<'_> =
        serde_json::from_slice(payload).map_err(|e| WireError::Payload(e.to_string()))?;
    if let Some(got) = raw.protocol
        && got != u64::from(PROTOCOL_VERSION)
    {
        return Err(WireError::Version {
            got,
            speaks: PROTOCOL_VERSION,
        });
    }
    let kind_name = raw
        .kind
        .ok_or_else(|| WireError::Payload("message without \"kind\"".into()))?
        .0;
    let kind = Kind::from_name(&kind_name).ok_or_else(|| {
        WireError::Payload(format!(
            "unknown kind {kind_name:?}: protocol version {PROTOCOL_VERSION} has book, trade, gap, hb and eos"
        ))
    })?;
    let k = kind.name();
    let data = kind.is_stored();
    // Market data and gaps need the full header; hb and eos belong to a publisher and
    // may leave it out.
    let header = |field: Option<i64>, name: &str| -> Result<i64, WireError> {
        if data {
            need(field, name, k)
        } else {
            Ok(field.unwrap_or(0))
        }
    };
    let ts_event = header(raw.ts_event, "ts_event")?;
    let ts_recv = header(raw.ts_recv, "ts_recv")?;
    let pub_seq = if data {
        need(raw.pub_seq, "pub_seq", k)?
    } else {
        raw.pub_seq.unwrap_or(0)
    };
    let name = |field: Option<Str<'_>>, what: &str, names: &mut Interner| match field {
        Some(Str(v)) => Ok(names.intern(&v)),
        None if !data => Ok(names.intern("")),
        None => Err(missing(what, k)),
    };
    let venue = name(raw.venue, "venue", names)?;
    let symbol = name(raw.symbol, "symbol", names)?;
    let body = match kind {
        Kind::Book => Body::Book(BookDelta {
            side: side(raw.side, k)?,
            price: fixed(raw.price, "price", k)?,
            size: fixed(raw.size, "size", k)?,
            flags: Flags(raw.flags.unwrap_or(0)),
        }),
        Kind::Trade => Body::Trade(Trade {
            aggressor: side(raw.side, k)?,
            price: fixed(raw.price, "price", k)?,
            size: fixed(raw.size, "size", k)?,
            trade_id: raw
                .trade_id
                .map(|s| s.0.as_ref().into())
                .unwrap_or_default(),
        }),
        Kind::Gap => {
            let reason = need(raw.reason, "reason", k)?.0;
            Body::Gap(Gap {
                reason: GapReason::from_name(&reason).ok_or_else(|| {
                    WireError::Payload(format!(
                        "unknown gap reason {reason:?}: expected publisher_seq, venue_seq, silence or resync"
                    ))
                })?,
                missing: raw.missing,
                publisher: raw.publisher.map(|s| s.0.into_owned()).unwrap_or_default(),
            })
        }
        Kind::Heartbeat => {
            need(raw.protocol, "protocol", k)?;
            Body::Heartbeat(Heartbeat {
                publisher: need(raw.publisher, "publisher", k)?.0.into_owned(),
                interval_ms: need(raw.interval_ms, "interval_ms", k)?,
                replay: raw.replay.unwrap_or(false),
            })
        }
        Kind::EndOfStream => Body::EndOfStream(EndOfStream {
            publisher: need(raw.publisher, "publisher", k)?.0.into_owned(),
            replay: raw.replay.unwrap_or(false),
            events: raw.events.unwrap_or(0),
        }),
    };
    // Known fields of another kind count as unknown to this one, like new fields.
    let foreign = raw.seen & !allowed(kind);
    let unknown = raw.unknown + foreign.count_ones();
    if unknown > 0 {
        let first = match &raw.first_unknown {
            Some(Str(key)) => key,
            None => FIELDS[foreign.trailing_zeros() as usize],
        };
        names.note_unknown_fields(unknown.into(), first);
    }
    Ok(Event {
        venue,
        symbol,
        ts_event,
        ts_recv,
        venue_seq: raw.venue_seq,
        prev_venue_seq: raw.prev_venue_seq,
        pub_seq,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_table_and_field_match_agree() {
        for (i, name) in FIELDS.iter().enumerate() {
            assert_eq!(field_index(name), Some(i), "{name}");
            assert_eq!(bit(name), 1 << i, "{name}");
        }
        assert_eq!(field_index("unknown"), None);
    }
}
