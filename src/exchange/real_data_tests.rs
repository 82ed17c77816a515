//! The exchange against real Binance spot data (hftbacktest's capture in
//! `/work/shared/data/real`, or `$TICKTAPE_REAL_DATA`): a quoting strategy rests post-only
//! orders at the touch and is filled only by real trades walking through its queue.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::Value;

use crate::event::{Body, BookDelta, Event, Fixed, Flags, Side, Trade, UnixNanos};
use crate::exchange::{
    ConstantLatency, ExchangeOutput, Liquidity, Models, NewOrder, OrderRequest, OrderSide,
    OrderStatus, OrderType, Proportional, Reply, SimExchange, TimeInForce,
};

fn capture() -> Option<PathBuf> {
    crate::feeds::import::testdata::real("hftbacktest/examples/spot/btcusdt_20240808.gz")
}

fn event(ts: UnixNanos, body: Body) -> Event {
    Event {
        venue: Arc::from("binance"),
        symbol: Arc::from("BTCUSDT"),
        ts_event: ts,
        ts_recv: ts,
        venue_seq: None,
        prev_venue_seq: None,
        pub_seq: 0,
        body,
    }
}

fn levels(ts: UnixNanos, data: &Value, bids: &str, asks: &str, snapshot: bool) -> Vec<Event> {
    let mut out = Vec::new();
    for (key, side) in [(bids, Side::Bid), (asks, Side::Ask)] {
        for level in data[key].as_array().into_iter().flatten() {
            let (Some(p), Some(q)) = (level[0].as_str(), level[1].as_str()) else {
                continue;
            };
            let flags = if snapshot {
                Flags::SNAPSHOT
            } else {
                Flags::default()
            };
            out.push(event(
                ts,
                Body::Book(BookDelta {
                    side,
                    price: p.parse().unwrap(),
                    size: q.parse().unwrap(),
                    flags,
                }),
            ));
        }
    }
    if let Some(Body::Book(last)) = out.last_mut().map(|e| &mut e.body) {
        last.flags = last.flags.with(Flags::LAST);
    }
    out
}

/// Events in capture order, starting at the REST snapshot (diffs it does not cover are
/// replayed right after it; earlier trades are dropped).
fn load(path: &PathBuf) -> Vec<Event> {
    let file = std::fs::File::open(path).unwrap();
    let reader = BufReader::new(flate2::read::GzDecoder::new(file));
    let mut buffered: Vec<(UnixNanos, Value)> = Vec::new();
    let mut events = Vec::new();
    let mut synced = false;
    for line in reader.lines() {
        let line = line.unwrap();
        let Some((ts, json)) = line.split_once(' ') else {
            continue;
        };
        let ts: UnixNanos = ts.parse().unwrap();
        let v: Value = serde_json::from_str(json).unwrap();
        if let Some(last_id) = v["lastUpdateId"].as_u64() {
            events.extend(levels(ts, &v, "bids", "asks", true));
            for (_, d) in buffered.drain(..) {
                if d["u"].as_u64().unwrap_or(0) > last_id {
                    events.extend(levels(ts, &d, "b", "a", false));
                }
            }
            synced = true;
            continue;
        }
        let data = &v["data"];
        match data["e"].as_str() {
            Some("depthUpdate") if !synced => buffered.push((ts, data.clone())),
            Some("depthUpdate") => events.extend(levels(ts, data, "b", "a", false)),
            Some("trade") if synced => {
                // `m`: the buyer was the maker, so the seller was the aggressor.
                let aggressor = if data["m"].as_bool().unwrap_or(false) {
                    Side::Ask
                } else {
                    Side::Bid
                };
                events.push(event(
                    ts,
                    Body::Trade(Trade {
                        price: data["p"].as_str().unwrap().parse().unwrap(),
                        size: data["q"].as_str().unwrap().parse().unwrap(),
                        aggressor,
                        trade_id: data["t"].to_string().into(),
                    }),
                ));
            }
            _ => {}
        }
    }
    events
}

fn quote(ex: &mut SimExchange, cid: String, side: OrderSide, price: Fixed, ts: UnixNanos) {
    let reply = ex.submit(
        "mm",
        OrderRequest::New(NewOrder {
            client_order_id: cid.into(),
            venue: "binance".into(),
            symbol: "BTCUSDT".into(),
            side,
            order_type: OrderType::Limit,
            tif: TimeInForce::PostOnly,
            price: Some(price),
            size: "0.01000".parse().unwrap(),
            decided_at: Some(ts),
        }),
        ts,
    );
    assert!(matches!(reply, Reply::Accepted { .. }), "{reply:?}");
}

/// Quotes both sides at the touch every 2 s of data, canceling the previous quotes.
fn run(events: &[Event]) -> (String, Vec<ExchangeOutput>, SimExchange) {
    let mut ex = SimExchange::new(Models {
        order_latency: Box::new(ConstantLatency(1_000_000)),
        queue: Box::new(Proportional),
        ..Models::default()
    });
    let mut book = crate::book::L2Book::new();
    let mut out = Vec::new();
    let mut next_quote = 0;
    let mut n = 0;
    for e in events {
        ex.on_market(e);
        if let Body::Book(d) = &e.body {
            book.apply(d);
        }
        out.extend(ex.drain());
        if e.ts_recv < next_quote || !book.is_consistent() {
            continue;
        }
        let (Some((bid, _)), Some((ask, _))) = (book.best_bid(), book.best_ask()) else {
            continue;
        };
        if let Reply::QueryResult { open_orders, .. } = ex.query("mm") {
            for o in open_orders {
                ex.submit(
                    "mm",
                    OrderRequest::Cancel {
                        client_order_id: o.client_order_id,
                    },
                    e.ts_recv,
                );
            }
        }
        n += 1;
        quote(&mut ex, format!("b{n}"), OrderSide::Buy, bid, e.ts_recv);
        quote(&mut ex, format!("a{n}"), OrderSide::Sell, ask, e.ts_recv);
        next_quote = e.ts_recv + 2_000_000_000;
    }
    if let Some(last) = events.last() {
        ex.close(last.ts_recv);
    }
    out.extend(ex.drain());
    (ex.fills_digest(), out, ex)
}

#[test]
fn quoting_on_real_binance_data_fills_as_maker_at_its_own_prices() {
    let Some(path) = capture() else {
        eprintln!("real-data capture not found; set TICKTAPE_REAL_DATA to run this test");
        return;
    };
    let events = load(&path);
    assert!(events.len() > 10_000, "{} events", events.len());
    let (digest, out, ex) = run(&events);
    assert_eq!(digest, run(&events).0, "same data, same fills");

    let fills: Vec<_> = out
        .iter()
        .filter_map(|o| match o {
            ExchangeOutput::Fill(f) => Some(f),
            _ => None,
        })
        .collect();
    // About 180 quote rounds on a busy book: a few hundred (partial) fills.
    assert!(
        fills.len() >= 100,
        "only {} fills in six minutes",
        fills.len()
    );
    assert!(fills.iter().all(|f| f.liquidity == Liquidity::Maker));
    let limits: std::collections::HashMap<u64, Fixed> = out
        .iter()
        .filter_map(|o| match o {
            ExchangeOutput::OrderUpdate(u) => Some((u.order_id, u.price?)),
            _ => None,
        })
        .collect();
    assert!(fills.iter().all(|f| limits[&f.order_id] == f.price));
    // Quotes join the touch 1 ms before they arrive: the only rejection is a book that
    // moved onto them in between.
    for o in &out {
        if let ExchangeOutput::OrderUpdate(u) = o
            && u.status == OrderStatus::Rejected
        {
            let reason = u
                .reason
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default();
            assert!(reason.contains("would cross"), "{u:?}");
        }
    }
    let net: f64 = fills
        .iter()
        .map(|f| f.side.sign() as f64 * f.size.to_f64())
        .sum();
    let Reply::QueryResult { positions, .. } = ex.query("mm") else {
        panic!("query must answer");
    };
    assert!((positions[0].position.to_f64() - net).abs() < 1e-9);
}
