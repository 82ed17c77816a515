//! The bus wire format: topic names and payload encoding (see `docs/PROTOCOL.md`).
//!
//! Owns how an [`Event`] becomes a ZeroMQ multipart message `[topic, payload]` and back.
//! Never touches sockets: that is [`crate::bus`].
//!
//! Two payload encodings share the topics: [`Encoding::Json`] (the default: one JSON
//! object, any language reads it) and [`Encoding::Binary`] (a fixed little-endian layout
//! for throughput, first byte [`binary::MAGIC`]). Decoders tell them apart by the first
//! byte, so one subscriber reads publishers of either kind.
//!
//! Compatibility (`docs/PROTOCOL.md`, "Compatibility"): a payload of the same major
//! version ([`PROTOCOL_VERSION`]) decodes even when it carries fields this version does
//! not define (they are skipped and counted in the [`Interner`]); a payload of another
//! major version is refused with [`WireError::Version`]. Every decoded event has passed
//! [`Event::validate`].

mod binary;
mod json;

use std::sync::Arc;

use crate::event::{Body, Event, Interner, Invalid, Kind};

pub use binary::MAGIC as BINARY_MAGIC;

/// Major version of the payload format: announced in every heartbeat (`protocol`),
/// optional in other JSON payloads, and in a binary payload's first byte
/// ([`BINARY_MAGIC`] is version 1's). Additive changes (new optional fields) keep it;
/// anything an older decoder would misread raises it.
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
    /// The payload is of another major version of the protocol.
    #[error(
        "payload of protocol version {got}, but this ticktape speaks version {speaks}: \
         run a ticktape that speaks version {got}, or have the publisher send version {speaks}"
    )]
    Version {
        /// The major version the payload declares.
        got: u64,
        /// The major version this decoder speaks ([`PROTOCOL_VERSION`]).
        speaks: u32,
    },
    /// The payload decoded but breaks a rule of [`Event::validate`].
    #[error("invalid event: {0}")]
    Invalid(#[from] Invalid),
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

/// Decodes a payload of either encoding into a valid [`Event`], sharing venue/symbol
/// names through `names` and counting there the fields it did not know (see
/// [`Interner::unknown_fields`]). Refuses another major version
/// ([`WireError::Version`]) and events that fail [`Event::validate`]
/// ([`WireError::Invalid`]). Allocates nothing for a known name and no unknown field.
pub fn decode(payload: &[u8], names: &mut Interner) -> Result<Event, WireError> {
    let event = match payload.first() {
        Some(&binary::MAGIC) => binary::decode(payload, names)?,
        Some(&first) if binary::is_other_version(first) => {
            return Err(WireError::Version {
                got: binary::version_of(first).into(),
                speaks: PROTOCOL_VERSION,
            });
        }
        _ => json::decode(payload, names)?,
    };
    names.validate(&event)?;
    Ok(event)
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
        // A string over the u16 length goes out as JSON instead: still decodable, and
        // refused by the validator with the reason (no valid event has such a string).
        let mut long = samples()[1].clone();
        if let Body::Trade(t) = &mut long.body {
            t.trade_id = "x".repeat(70_000).into();
        }
        let mut payload = Vec::new();
        encode_as(Encoding::Binary, &long, &mut payload);
        assert_eq!(payload[0], b'{');
        assert!(matches!(
            decode(&payload, &mut names),
            Err(WireError::Invalid(Invalid::TooLong { len: 70_000, .. }))
        ));
    }

    /// The JSON `protocol` 1 publisher of docs/PROTOCOL.md: exactly the fields its tables
    /// list for each kind (required and optional), plus `extra` fields.
    fn documented_json(extra: &str) -> Vec<(&'static str, String)> {
        let header = r#""venue":"binance","symbol":"BTCUSDT","ts_event":1723161253940000000,"ts_recv":1723161253940001000,"pub_seq":3"#;
        vec![
            (
                "book",
                format!(
                    r#"{{"kind":"book",{header},"venue_seq":11,"prev_venue_seq":10,"side":"B","price":"61671.55000000","size":"0.5","flags":2,"protocol":1{extra}}}"#
                ),
            ),
            (
                "trade",
                format!(
                    r#"{{"kind":"trade",{header},"venue_seq":12,"side":"N","price":"61671.55","size":"0.001","trade_id":"t-1"{extra}}}"#
                ),
            ),
            (
                "gap",
                format!(
                    r#"{{"kind":"gap",{header},"reason":"resync","missing":4,"publisher":"feed-1"{extra}}}"#
                ),
            ),
            (
                "hb",
                format!(
                    r#"{{"kind":"hb","publisher":"feed-1","interval_ms":1000,"replay":false,"protocol":1{extra}}}"#
                ),
            ),
            (
                "eos",
                format!(
                    r#"{{"kind":"eos","publisher":"feed-1","replay":false,"events":3{extra}}}"#
                ),
            ),
        ]
    }

    #[test]
    fn hb_and_eos_with_only_their_documented_fields_decode() {
        let mut names = Interner::default();
        for (kind, payload) in documented_json("") {
            let ev = decode(payload.as_bytes(), &mut names)
                .unwrap_or_else(|e| panic!("{kind}: {e}\n{payload}"));
            assert_eq!(ev.kind().name(), kind);
        }
        let frames = [
            b"eos.feed-1".to_vec(),
            documented_json("")[4].1.clone().into_bytes(),
        ];
        match decode_message(&frames, &mut names).unwrap().body {
            Body::EndOfStream(e) => assert_eq!((e.publisher.as_str(), e.events), ("feed-1", 3)),
            other => panic!("{other:?}"),
        }
        assert_eq!(names.unknown_fields(), 0);
    }

    #[test]
    fn unknown_fields_of_the_same_major_version_are_ignored_and_counted() {
        let mut names = Interner::default();
        let extra = r#","next_minor":{"nested":[1,"x"]}"#;
        for (kind, payload) in documented_json(extra) {
            let plain = documented_json("")
                .into_iter()
                .find(|(k, _)| *k == kind)
                .unwrap()
                .1;
            assert_eq!(
                decode(payload.as_bytes(), &mut names).unwrap(),
                decode(plain.as_bytes(), &mut Interner::default()).unwrap(),
                "{kind}: the unknown field changes nothing"
            );
        }
        assert_eq!(names.unknown_fields(), 5, "one per message");
        assert_eq!(names.first_unknown_field(), Some("next_minor"));

        // A field another kind defines is unknown to this one.
        let mut names = Interner::default();
        let book = &documented_json(r#","trade_id":"x","interval_ms":5"#)[0].1;
        decode(book.as_bytes(), &mut names).unwrap();
        assert_eq!(names.unknown_fields(), 2);
        assert_eq!(names.first_unknown_field(), Some("trade_id"));

        // Binary: presence bits above 8 and bytes after the symbol, once each.
        let mut names = Interner::default();
        let mut payload = Vec::new();
        encode_as(Encoding::Binary, &samples()[0], &mut payload);
        payload[2] |= 0x40;
        payload.extend_from_slice(&[1, 2, 3]);
        assert_eq!(decode(&payload, &mut names).unwrap(), samples()[0]);
        assert_eq!(names.unknown_fields(), 2);
    }

    #[test]
    fn another_major_version_is_refused_naming_both_versions() {
        let mut names = Interner::default();
        let v2 = |payload: &str| payload.replace(r#""protocol":1"#, r#""protocol":2"#);
        let docs = documented_json("");
        let binary_hb = {
            let mut p = Vec::new();
            encode_as(Encoding::Binary, &samples()[3], &mut p);
            p[52] = 2; // the heartbeat's protocol u32
            p
        };
        let binary_v2 = {
            let mut p = Vec::new();
            encode_as(Encoding::Binary, &samples()[0], &mut p);
            p[0] = BINARY_MAGIC + 1;
            p
        };
        for payload in [
            v2(&docs[3].1).into_bytes(), // hb announces its version
            v2(&docs[0].1).into_bytes(), // any payload may
            binary_hb,
            binary_v2,
        ] {
            let err = decode(&payload, &mut names).unwrap_err();
            assert_eq!(err, WireError::Version { got: 2, speaks: 1 });
            let text = err.to_string();
            assert!(
                text.contains("protocol version 2") && text.contains("speaks version 1"),
                "{text}"
            );
        }
        // The highest magic a binary payload may have is major 9.
        assert!(matches!(
            decode(&[0xBF, 0, 0], &mut names),
            Err(WireError::Version { got: 9, .. })
        ));
        // The heartbeat is the version handshake: it must say which version it speaks.
        let unversioned = docs[3].1.replace(r#","protocol":1"#, "");
        let err = decode(unversioned.as_bytes(), &mut names).unwrap_err();
        assert!(err.to_string().contains("without \"protocol\""), "{err}");
    }

    #[test]
    fn both_decoders_refuse_invalid_events_with_the_reason() {
        let mut names = Interner::default();
        let mut bad_price = samples()[0].clone();
        if let Body::Book(b) = &mut bad_price.body {
            b.price = "-1.5".parse().unwrap();
        }
        let mut bad_venue = samples()[1].clone();
        bad_venue.venue = "_journal".into();
        let mut bad_ts = samples()[1].clone();
        bad_ts.ts_recv = i64::MAX;
        for (ev, reason) in [
            (bad_price, "book price -1.5 must be above zero"),
            (bad_venue, "venue \"_journal\" must start with a-z or 0-9"),
            (bad_ts, "ts_recv 9223372036854775807 is outside"),
        ] {
            let mut binary = Vec::new();
            encode_as(Encoding::Binary, &ev, &mut binary);
            for payload in [encode_to_vec(&ev), binary] {
                let err = decode(&payload, &mut names).unwrap_err();
                assert!(matches!(err, WireError::Invalid(_)), "{err:?}");
                assert!(err.to_string().contains(reason), "{err}");
            }
        }
    }

    #[test]
    fn a_field_given_twice_is_refused() {
        let payload = documented_json(r#","price":"1""#)[0].1.clone();
        let err = decode(payload.as_bytes(), &mut Interner::default()).unwrap_err();
        assert!(err.to_string().contains("\"price\" appears twice"), "{err}");
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
