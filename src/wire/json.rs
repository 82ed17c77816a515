//! The JSON payload: one object per event, prices and sizes as decimal strings so they
//! stay exact. The default encoding, because every language reads it.
//!
//! The encoder is hand-written (no intermediate `serde_json::Value`) and the decoder
//! borrows from the payload: simulate and replay publish millions of events.

use std::borrow::Cow;

use serde::Deserialize;

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

/// Decodes a JSON payload, sharing venue/symbol names through `names`.
pub(super) fn decode(payload: &[u8], names: &mut Interner) -> Result<Event, WireError> {
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
