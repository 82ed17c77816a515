//! The bus wire format: topic names and payload encoding (see `docs/PROTOCOL.md`).
//!
//! Owns how an [`Event`] becomes a ZeroMQ multipart message `[topic, payload]` and back.
//! Never touches sockets: that is [`crate::bus`].
//!
//! Payloads are one JSON object each, so any language can read them. Prices and sizes
//! travel as decimal strings so they stay exact. The encoder is hand-written (no
//! intermediate `serde_json::Value`) because simulate and replay publish millions of
//! events per second; the decoder borrows from the payload for the same reason.

use std::borrow::Cow;
use std::sync::Arc;

use serde::Deserialize;

use crate::event::{
    Body, BookDelta, EndOfStream, Event, Fixed, Flags, Gap, GapReason, Heartbeat, Interner, Kind,
    Side, Trade,
};

/// Version of the payload format, announced in every heartbeat.
pub const PROTOCOL_VERSION: u32 = 1;

/// Why a message could not be decoded. The recorder quarantines such messages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Not exactly two frames `[topic, payload]`.
    #[error("expected 2 frames [topic, payload], got {0}")]
    FrameCount(usize),
    /// The payload is not the JSON this protocol defines.
    #[error("bad payload: {0}")]
    Payload(String),
    /// The topic disagrees with the payload's kind, venue or symbol.
    #[error("topic {topic:?} does not match payload (expected {expected:?})")]
    TopicMismatch {
        /// The topic frame received.
        topic: String,
        /// The topic the payload implies.
        expected: String,
    },
}

/// Topic for `event`: `<kind>.<venue>.<symbol>` for market data and gaps,
/// `<kind>.<publisher>` for heartbeats and end-of-stream.
pub fn topic(event: &Event) -> String {
    let mut out = String::with_capacity(32);
    write_topic(event, &mut out);
    out
}

/// Appends the topic for `event` to `out` (no allocation when `out` has room).
pub fn write_topic(event: &Event, out: &mut String) {
    out.push_str(event.kind().name());
    out.push('.');
    match &event.body {
        Body::Heartbeat(h) => out.push_str(&h.publisher),
        Body::EndOfStream(e) => out.push_str(&e.publisher),
        _ => {
            out.push_str(&event.venue);
            out.push('.');
            out.push_str(&event.symbol);
        }
    }
}

/// True when `topic` is exactly [`topic`]`(event)`, checked without allocating (the
/// recorder does this for every message).
fn topic_matches(event: &Event, topic: &[u8]) -> bool {
    let (parts, n) = match &event.body {
        Body::Heartbeat(h) => ([h.publisher.as_str(), ""], 1),
        Body::EndOfStream(e) => ([e.publisher.as_str(), ""], 1),
        _ => ([&*event.venue, &*event.symbol], 2),
    };
    let Some(mut rest) = topic.strip_prefix(event.kind().name().as_bytes()) else {
        return false;
    };
    for part in &parts[..n] {
        match rest
            .strip_prefix(b".")
            .and_then(|r| r.strip_prefix(part.as_bytes()))
        {
            Some(r) => rest = r,
            None => return false,
        }
    }
    rest.is_empty()
}

/// Topic for market data of one kind, venue and symbol.
pub fn data_topic(kind: Kind, venue: &str, symbol: &str) -> String {
    format!("{}.{}.{}", kind.name(), venue, symbol)
}

/// Encodes `event` as its JSON payload, appending to `out`.
pub fn encode(event: &Event, out: &mut Vec<u8>) {
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

/// Encodes `event` into a fresh buffer.
pub fn encode_to_vec(event: &Event) -> Vec<u8> {
    let mut out = Vec::with_capacity(192);
    encode(event, &mut out);
    out
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

/// The JSON object as received, borrowing strings from the payload where it can.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEvent<'a> {
    #[serde(borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    venue: Cow<'a, str>,
    #[serde(borrow)]
    symbol: Cow<'a, str>,
    ts_event: i64,
    ts_recv: i64,
    venue_seq: Option<u64>,
    prev_venue_seq: Option<u64>,
    pub_seq: u64,
    #[serde(borrow)]
    side: Option<Cow<'a, str>>,
    #[serde(borrow)]
    price: Option<Cow<'a, str>>,
    #[serde(borrow)]
    size: Option<Cow<'a, str>>,
    flags: Option<u8>,
    #[serde(borrow)]
    trade_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    reason: Option<Cow<'a, str>>,
    missing: Option<u64>,
    #[serde(borrow)]
    publisher: Option<Cow<'a, str>>,
    interval_ms: Option<u64>,
    replay: Option<bool>,
    events: Option<u64>,
    #[allow(dead_code)]
    protocol: Option<u32>,
}

fn need<T>(field: Option<T>, name: &str, kind: &str) -> Result<T, WireError> {
    field.ok_or_else(|| WireError::Payload(format!("{kind} event without \"{name}\"")))
}

fn fixed(field: Option<Cow<'_, str>>, name: &str, kind: &str) -> Result<Fixed, WireError> {
    need(field, name, kind)?
        .parse()
        .map_err(|e| WireError::Payload(format!("\"{name}\": {e}")))
}

fn side(field: Option<Cow<'_, str>>, kind: &str) -> Result<Side, WireError> {
    let code = need(field, "side", kind)?;
    Side::from_code(&code)
        .ok_or_else(|| WireError::Payload(format!("\"side\" must be B, A or N, got {code:?}")))
}

/// Decodes a payload into an [`Event`], sharing venue/symbol names through `names`.
pub fn decode(payload: &[u8], names: &mut Interner) -> Result<Event, WireError> {
    let raw: RawEvent<'_> =
        serde_json::from_slice(payload).map_err(|e| WireError::Payload(e.to_string()))?;
    let kind = Kind::from_name(&raw.kind)
        .ok_or_else(|| WireError::Payload(format!("unknown kind {:?}", raw.kind)))?;
    let k = kind.name();
    let body = match kind {
        Kind::Book => {
            let delta = BookDelta {
                side: side(raw.side, k)?,
                price: fixed(raw.price, "price", k)?,
                size: fixed(raw.size, "size", k)?,
                flags: Flags(raw.flags.unwrap_or(0)),
            };
            if delta.side == Side::None {
                return Err(WireError::Payload("book delta needs side B or A".into()));
            }
            if delta.size.mantissa < 0 {
                return Err(WireError::Payload("book delta with negative size".into()));
            }
            Body::Book(delta)
        }
        Kind::Trade => Body::Trade(Trade {
            aggressor: side(raw.side, k)?,
            price: fixed(raw.price, "price", k)?,
            size: fixed(raw.size, "size", k)?,
            trade_id: raw.trade_id.map(Cow::into_owned).unwrap_or_default(),
        }),
        Kind::Gap => {
            let reason = need(raw.reason, "reason", k)?;
            Body::Gap(Gap {
                reason: GapReason::from_name(&reason)
                    .ok_or_else(|| WireError::Payload(format!("unknown gap reason {reason:?}")))?,
                missing: raw.missing,
                publisher: raw.publisher.map(Cow::into_owned).unwrap_or_default(),
            })
        }
        Kind::Heartbeat => Body::Heartbeat(Heartbeat {
            publisher: need(raw.publisher, "publisher", k)?.into_owned(),
            interval_ms: need(raw.interval_ms, "interval_ms", k)?,
            replay: raw.replay.unwrap_or(false),
        }),
        Kind::EndOfStream => Body::EndOfStream(EndOfStream {
            publisher: need(raw.publisher, "publisher", k)?.into_owned(),
            replay: raw.replay.unwrap_or(false),
            events: raw.events.unwrap_or(0),
        }),
    };
    Ok(Event {
        venue: names.intern(&raw.venue),
        symbol: names.intern(&raw.symbol),
        ts_event: raw.ts_event,
        ts_recv: raw.ts_recv,
        venue_seq: raw.venue_seq,
        prev_venue_seq: raw.prev_venue_seq,
        pub_seq: raw.pub_seq,
        body,
    })
}

/// Decodes a whole multipart message and checks its topic against the payload.
pub fn decode_message(frames: &[Vec<u8>], names: &mut Interner) -> Result<Event, WireError> {
    if frames.len() != 2 {
        return Err(WireError::FrameCount(frames.len()));
    }
    let event = decode(&frames[1], names)?;
    if !topic_matches(&event, &frames[0]) {
        return Err(WireError::TopicMismatch {
            topic: String::from_utf8_lossy(&frames[0]).into_owned(),
            expected: topic(&event),
        });
    }
    Ok(event)
}

/// Convenience for tests and tools: an event with the common header filled in.
pub fn event(venue: &str, symbol: &str, ts: i64, pub_seq: u64, body: Body) -> Event {
    Event {
        venue: Arc::from(venue),
        symbol: Arc::from(symbol),
        ts_event: ts,
        ts_recv: ts,
        venue_seq: None,
        prev_venue_seq: None,
        pub_seq,
        body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Event> {
        let mut book = event(
            "binance",
            "BTCUSDT",
            1_723_161_253_940_000_000,
            7,
            Body::Book(BookDelta {
                side: Side::Ask,
                price: "61671.55000000".parse().unwrap(),
                size: "0.00100000".parse().unwrap(),
                flags: Flags::LAST,
            }),
        );
        book.venue_seq = Some(42);
        book.prev_venue_seq = Some(41);
        book.ts_recv += 1_000;
        vec![
            book,
            event(
                "sim",
                "X\"Y",
                5,
                1,
                Body::Trade(Trade {
                    price: "1.0".parse().unwrap(),
                    size: "2".parse().unwrap(),
                    aggressor: Side::None,
                    trade_id: "t-9".into(),
                }),
            ),
            event(
                "sim",
                "A",
                5,
                2,
                Body::Gap(Gap {
                    reason: GapReason::Silence,
                    missing: None,
                    publisher: "tcp://x".into(),
                }),
            ),
            event(
                "",
                "",
                5,
                3,
                Body::Heartbeat(Heartbeat {
                    publisher: "sim-1".into(),
                    interval_ms: 1000,
                    replay: true,
                }),
            ),
            event(
                "",
                "",
                5,
                4,
                Body::EndOfStream(EndOfStream {
                    publisher: "sim-1".into(),
                    replay: false,
                    events: 10,
                }),
            ),
        ]
    }

    #[test]
    fn every_kind_round_trips_through_json() {
        let mut names = Interner::default();
        for ev in samples() {
            let payload = encode_to_vec(&ev);
            let back = decode(&payload, &mut names).unwrap();
            assert_eq!(back, ev, "{}", String::from_utf8_lossy(&payload));
            // Exact decimal strings survive, trailing zeros included.
            assert_eq!(encode_to_vec(&back), payload);
            let frames = vec![topic(&ev).into_bytes(), payload];
            assert_eq!(decode_message(&frames, &mut names).unwrap(), ev);
        }
    }

    #[test]
    fn payload_is_plain_json_with_string_prices() {
        let ev = &samples()[0];
        let v: serde_json::Value = serde_json::from_slice(&encode_to_vec(ev)).unwrap();
        assert_eq!(v["price"], "61671.55000000");
        assert_eq!(v["kind"], "book");
        assert_eq!(topic(ev), "book.binance.BTCUSDT");
    }

    #[test]
    fn malformed_messages_are_errors_not_panics() {
        let mut names = Interner::default();
        for bad in [
            &b"not json"[..],
            b"{}",
            b"{\"kind\":\"book\",\"venue\":\"a\",\"symbol\":\"b\",\"ts_event\":1,\"ts_recv\":1,\"pub_seq\":1}",
            b"{\"kind\":\"nope\",\"venue\":\"a\",\"symbol\":\"b\",\"ts_event\":1,\"ts_recv\":1,\"pub_seq\":1}",
        ] {
            assert!(decode(bad, &mut names).is_err());
        }
        let ev = &samples()[0];
        let frames = vec![b"book.other.X".to_vec(), encode_to_vec(ev)];
        assert!(matches!(
            decode_message(&frames, &mut names),
            Err(WireError::TopicMismatch { .. })
        ));
        assert_eq!(
            decode_message(&[b"x".to_vec()], &mut names),
            Err(WireError::FrameCount(1))
        );
    }
}
