//! Wire targets: both payload encodings (`wire::decode`, `wire::decode_message`).
//!
//! - `wire_round_trip`: any event, valid or not, encoded in JSON and in binary, decodes
//!   to itself (and re-encodes byte for byte) exactly when it passes `Event::validate`,
//!   and is refused otherwise.
//! - `wire_json`, `wire_binary`: encodings of valid events, mutated, and arbitrary bytes
//!   never panic; what decodes is valid, its topic is accepted with it, and it survives
//!   a second round trip unchanged.

use std::sync::Arc;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use ticktape::event::validate::{MAX_HEARTBEAT_MS, MAX_TS};
use ticktape::event::{
    Body, BookDelta, EndOfStream, Event, Fixed, Flags, Gap, GapReason, Heartbeat, Interner, Side,
    Trade,
};
use ticktape::wire::{self, Encoding};

use super::mutate::{bytes, mutated};
use super::{FuzzInput, fuzz};

/// An event as a fuzz input: shown as its JSON payload.
#[derive(Clone, Debug)]
pub struct AnyEvent(pub Event);

impl FuzzInput for AnyEvent {
    fn bytes(&self) -> Vec<u8> {
        wire::encode_to_vec(&self.0)
    }
}

fn fixed() -> impl Strategy<Value = Fixed> + Clone {
    (
        prop_oneof![4 => 1i64..10_000_000_000, 1 => any::<i64>(), 1 => Just(0i64)],
        0u8..=18,
    )
        .prop_map(|(m, s)| Fixed::new(m, s))
}

fn text(max: usize) -> impl Strategy<Value = String> + Clone {
    prop_oneof![
        6 => proptest::string::string_regex(&format!("[ -~]{{0,{max}}}")).expect("regex"),
        1 => any::<String>(),
        1 => Just(String::new()),
    ]
}

fn side() -> impl Strategy<Value = Side> + Clone {
    prop_oneof![Just(Side::Bid), Just(Side::Ask), Just(Side::None)]
}

fn ts() -> impl Strategy<Value = i64> + Clone {
    prop_oneof![8 => 0..MAX_TS, 1 => any::<i64>()]
}

/// Events of every kind: mostly valid, sometimes breaking one rule or another.
pub fn event() -> impl Strategy<Value = AnyEvent> + Clone {
    let venue = prop_oneof![
        8 => proptest::string::string_regex("[a-z0-9][a-z0-9_-]{0,15}").expect("regex"),
        1 => text(20),
    ];
    let symbol = prop_oneof![
        8 => proptest::string::string_regex("[A-Z0-9][ -~]{0,14}[A-Z0-9]").expect("regex"),
        1 => text(20),
    ];
    let body = prop_oneof![
        (side(), fixed(), fixed(), any::<u8>()).prop_map(|(side, price, size, f)| {
            Body::Book(BookDelta {
                side,
                price,
                size,
                flags: Flags(f),
            })
        }),
        (side(), fixed(), fixed(), text(40)).prop_map(|(aggressor, price, size, trade_id)| {
            Body::Trade(Trade {
                price,
                size,
                aggressor,
                trade_id: trade_id.into(),
            })
        }),
        (0u8..4, any::<Option<u64>>(), text(60)).prop_map(|(r, missing, publisher)| {
            Body::Gap(Gap {
                reason: [
                    GapReason::PublisherSeq,
                    GapReason::VenueSeq,
                    GapReason::Silence,
                    GapReason::Resync,
                ][r as usize],
                missing,
                publisher,
            })
        }),
        (
            text(60),
            prop_oneof![4 => 1..=MAX_HEARTBEAT_MS, 1 => any::<u64>()],
            any::<bool>()
        )
            .prop_map(|(publisher, interval_ms, replay)| {
                Body::Heartbeat(Heartbeat {
                    publisher,
                    interval_ms,
                    replay,
                })
            }),
        (text(60), any::<bool>(), any::<u64>()).prop_map(|(publisher, replay, events)| {
            Body::EndOfStream(EndOfStream {
                publisher,
                replay,
                events,
            })
        }),
    ];
    (
        venue,
        symbol,
        ts(),
        ts(),
        any::<Option<u64>>(),
        any::<Option<u64>>(),
        any::<u64>(),
        body,
        any::<u8>(),
    )
        .prop_map(
            |(venue, symbol, ts_event, ts_recv, venue_seq, prev_venue_seq, pub_seq, body, r)| {
                // Heartbeats and end-of-stream carry no instrument, except now and then.
                let named = !matches!(body, Body::Heartbeat(_) | Body::EndOfStream(_)) || r < 8;
                let name = |s: String| Arc::from(if named { s.as_str() } else { "" });
                AnyEvent(Event {
                    venue: name(venue),
                    symbol: name(symbol),
                    ts_event,
                    ts_recv,
                    venue_seq,
                    prev_venue_seq,
                    pub_seq,
                    body,
                })
            },
        )
}

fn encoded(encoding: Encoding, event: &Event) -> Vec<u8> {
    let mut out = Vec::new();
    wire::encode_as(encoding, event, &mut out);
    out
}

/// 2,000 valid events in `encoding`, made once (generating events is slower than
/// decoding them).
fn valid_payloads(encoding: Encoding) -> impl Strategy<Value = Vec<u8>> + Clone {
    let mut runner = TestRunner::deterministic();
    let strategy = event().prop_filter("valid events only", |e| e.0.validate().is_ok());
    let pool: Vec<Vec<u8>> = (0..2_000)
        .map(|_| {
            let e = strategy.new_tree(&mut runner).expect("event").current();
            encoded(encoding, &e.0)
        })
        .collect();
    super::mutate::one_of(Arc::new(pool))
}

/// What every decodable payload must satisfy.
fn check_payload(payload: &[u8], topic_seed: u8) -> Result<(), String> {
    let mut names = Interner::default();
    let Ok(event) = wire::decode(payload, &mut names) else {
        return Ok(());
    };
    event
        .validate()
        .map_err(|e| format!("decode returned an invalid event ({e}): {event:?}"))?;
    let topic = wire::topic(&event).into_bytes();
    wire::decode_message(&[topic.clone(), payload.to_vec()], &mut names)
        .map_err(|e| format!("its own topic is refused: {e}"))?;
    let mut wrong = topic;
    wrong.push(b'.' ^ topic_seed);
    if wire::decode_message(&[wrong, payload.to_vec()], &mut names).is_ok() {
        return Err("a longer topic was accepted".into());
    }
    for encoding in [Encoding::Json, Encoding::Binary] {
        let again = encoded(encoding, &event);
        match wire::decode(&again, &mut names) {
            Ok(back) if back == event => {}
            other => {
                return Err(format!(
                    "decoded {event:?}, re-encoded as {encoding:?}, got back {other:?}"
                ));
            }
        }
    }
    Ok(())
}

#[test]
fn wire_round_trip() {
    fuzz("wire_round_trip", event(), |AnyEvent(event)| {
        let valid = event.validate();
        for encoding in [Encoding::Json, Encoding::Binary] {
            let payload = encoded(encoding, event);
            let mut names = Interner::default();
            match (wire::decode(&payload, &mut names), &valid) {
                (Ok(back), Ok(())) => {
                    if &back != event {
                        return Err(format!("{encoding:?}: {back:?} came back"));
                    }
                    // Exact decimals and strings: the same bytes again.
                    if encoded(encoding, &back) != payload {
                        return Err(format!("{encoding:?}: re-encoding differs"));
                    }
                    let frames = [wire::topic(event).into_bytes(), payload];
                    wire::decode_message(&frames, &mut names)
                        .map_err(|e| format!("{encoding:?}: message refused: {e}"))?;
                }
                (Err(_), Err(_)) => {}
                (Ok(back), Err(why)) => {
                    return Err(format!(
                        "{encoding:?}: invalid event ({why}) decoded: {back:?}"
                    ));
                }
                (Err(e), Ok(())) => {
                    return Err(format!("{encoding:?}: valid event refused: {e}"));
                }
            }
        }
        Ok(())
    });
}

#[test]
fn wire_json() {
    let documented: Vec<Vec<u8>> = [
        r#"{"kind":"book","venue":"binance","symbol":"BTCUSDT","ts_event":1723161253940000000,"ts_recv":1723161253940001000,"pub_seq":3,"venue_seq":11,"prev_venue_seq":10,"side":"B","price":"61671.55000000","size":"0.5","flags":2,"protocol":1}"#,
        r#"{"kind":"trade","venue":"binance","symbol":"BTCUSDT","ts_event":1,"ts_recv":2,"pub_seq":3,"side":"N","price":"61671.55","size":"0.001","trade_id":"t-1","next_minor":{"nested":[1,"x"]}}"#,
        r#"{"kind":"gap","venue":"binance","symbol":"BTCUSDT","ts_event":1,"ts_recv":2,"pub_seq":3,"reason":"resync","missing":4,"publisher":"feed-1"}"#,
        r#"{"kind":"hb","publisher":"feed-1","interval_ms":1000,"replay":false,"protocol":1}"#,
        r#"{"kind":"eos","publisher":"feed-1","replay":false,"events":3}"#,
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    let seeds = prop_oneof![
        3 => valid_payloads(Encoding::Json),
        1 => super::mutate::one_of(Arc::new(documented)),
    ];
    let input = prop_oneof![9 => mutated(seeds), 1 => bytes(512)];
    fuzz("wire_json", (input, any::<u8>()), |(payload, t)| {
        check_payload(payload, *t)
    });
}

#[test]
fn wire_binary() {
    let input = prop_oneof![
        9 => mutated(valid_payloads(Encoding::Binary)),
        1 => bytes(256).prop_map(|mut b| {
            b.insert(0, wire::BINARY_MAGIC);
            b
        }),
    ];
    fuzz("wire_binary", (input, any::<u8>()), |(payload, t)| {
        check_payload(payload, *t)
    });
}
