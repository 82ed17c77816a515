//! The bus wire format: topic names and payload encoding (see `docs/PROTOCOL.md`).
//!
//! Owns how an [`Event`] becomes a ZeroMQ multipart message `[topic, payload]` and back.
//! Never touches sockets: that is [`crate::bus`].
//!
//! Two payload encodings share the topics: [`Encoding::Json`] (the default: one JSON
//! object, any language reads it) and [`Encoding::Binary`] (a fixed little-endian layout
//! for throughput, first byte [`binary::MAGIC`]). Decoders tell them apart by the first
//! byte, so one subscriber reads publishers of either kind.

mod binary;
mod json;

use std::sync::Arc;

use crate::event::{Body, Event, Interner, Kind};

pub use binary::MAGIC as BINARY_MAGIC;

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

/// How payloads are encoded on the bus. Subscribers need not be told: see [`decode`].
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    clap::ValueEnum,
    serde::Deserialize,
    serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// One JSON object per event (readable from any language; the default).
    #[default]
    Json,
    /// Fixed little-endian layout, about 40x cheaper to decode (`docs/PROTOCOL.md`).
    Binary,
}

/// Encodes `event` as its JSON payload, appending to `out`.
pub fn encode(event: &Event, out: &mut Vec<u8>) {
    json::encode(event, out);
}

/// Encodes `event` in `encoding`, appending to `out`. An event the binary layout cannot
/// hold (a string over 65,535 bytes) goes out as JSON: decoders accept both.
pub fn encode_as(encoding: Encoding, event: &Event, out: &mut Vec<u8>) {
    match encoding {
        Encoding::Binary if binary::fits(event) => binary::encode(event, out),
        _ => json::encode(event, out),
    }
}

/// Encodes `event` as JSON into a fresh buffer.
pub fn encode_to_vec(event: &Event) -> Vec<u8> {
    let mut out = Vec::with_capacity(192);
    json::encode(event, &mut out);
    out
}

/// Decodes a payload of either encoding into an [`Event`], sharing venue/symbol names
/// through `names`.
pub fn decode(payload: &[u8], names: &mut Interner) -> Result<Event, WireError> {
    match payload.first() {
        Some(&binary::MAGIC) => binary::decode(payload, names),
        _ => json::decode(payload, names),
    }
}

/// Decodes a whole multipart message and checks its topic against the payload.
pub fn decode_message<F: std::ops::Deref<Target = [u8]>>(
    frames: &[F],
    names: &mut Interner,
) -> Result<Event, WireError> {
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
    use crate::event::{BookDelta, EndOfStream, Flags, Gap, GapReason, Heartbeat, Side, Trade};

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
    fn every_kind_round_trips_through_binary_and_decoders_tell_encodings_apart() {
        let mut names = Interner::default();
        let mut with_missing = samples();
        if let Body::Gap(g) = &mut with_missing[2].body {
            g.missing = Some(17);
        }
        for ev in samples().into_iter().chain(with_missing) {
            let mut payload = Vec::new();
            encode_as(Encoding::Binary, &ev, &mut payload);
            assert_eq!(payload[0], BINARY_MAGIC);
            let back = decode(&payload, &mut names).unwrap();
            assert_eq!(back, ev);
            // Exact decimals survive the binary form too: same JSON after the round trip.
            assert_eq!(encode_to_vec(&back), encode_to_vec(&ev));
            let frames = vec![topic(&ev).into_bytes(), payload.clone()];
            assert_eq!(decode_message(&frames, &mut names).unwrap(), ev);
            // Every truncation is an error, never a panic or a wrong event.
            for cut in 0..payload.len() {
                assert!(decode(&payload[..cut], &mut names).is_err(), "cut at {cut}");
            }
            payload.push(0);
            assert!(
                decode(&payload, &mut names).is_err(),
                "trailing byte accepted"
            );
        }
    }

    #[test]
    fn corrupt_binary_fields_are_rejected() {
        let mut names = Interner::default();
        let mut good = Vec::new();
        encode_as(Encoding::Binary, &samples()[0], &mut good);
        let corrupt = |at: usize, byte: u8| {
            let mut p = good.clone();
            p[at] = byte;
            p
        };
        for (at, byte) in [(1, 9), (3, b'N'), (3, b'x'), (60, 19)] {
            assert!(
                decode(&corrupt(at, byte), &mut names).is_err(),
                "byte {at} = {byte}"
            );
        }
        // A string over the u16 length goes out as JSON instead, still decodable.
        let mut long = samples()[1].clone();
        if let Body::Trade(t) = &mut long.body {
            t.trade_id = "x".repeat(70_000);
        }
        let mut payload = Vec::new();
        encode_as(Encoding::Binary, &long, &mut payload);
        assert_eq!(payload[0], b'{');
        assert_eq!(decode(&payload, &mut names).unwrap(), long);
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
