//! The simulated exchange as a whole: orders, fills, queues, latency, fees, positions.

use super::*;
use crate::event::{BookDelta, Flags, Side, Trade};
use crate::exchange::models::{BpsFees, ConstantLatency, FeeSchedule, Proportional, RiskAverse};

fn fx(s: &str) -> Fixed {
    s.parse().unwrap()
}

fn event(ts: UnixNanos, body: Body) -> Event {
    Event {
        venue: Arc::from("sim"),
        symbol: Arc::from("BTCUSD"),
        ts_event: ts,
        ts_recv: ts,
        venue_seq: None,
        prev_venue_seq: None,
        pub_seq: 0,
        body,
    }
}

fn level(ex: &mut SimExchange, ts: UnixNanos, side: Side, price: &str, size: &str) {
    ex.on_market(&event(
        ts,
        Body::Book(BookDelta {
            side,
            price: fx(price),
            size: fx(size),
            flags: Flags::LAST,
        }),
    ));
}

fn trade(ex: &mut SimExchange, ts: UnixNanos, price: &str, size: &str, aggressor: Side) {
    ex.on_market(&event(
        ts,
        Body::Trade(Trade {
            price: fx(price),
            size: fx(size),
            aggressor,
            trade_id: Default::default(),
        }),
    ));
}

#[allow(clippy::too_many_arguments)]
fn order(
    ex: &mut SimExchange,
    ts: UnixNanos,
    cid: &str,
    side: OrderSide,
    order_type: OrderType,
    tif: TimeInForce,
    price: Option<&str>,
    size: &str,
) -> Reply {
    ex.submit(
        "s1",
        OrderRequest::New(NewOrder {
            client_order_id: cid.into(),
            venue: "sim".into(),
            symbol: "BTCUSD".into(),
            side,
            order_type,
            tif,
            price: price.map(fx),
            size: fx(size),
            decided_at: None,
        }),
        ts,
    )
}

fn limit(ex: &mut SimExchange, ts: i64, cid: &str, side: OrderSide, price: &str, size: &str) {
    let r = order(
        ex,
        ts,
        cid,
        side,
        OrderType::Limit,
        TimeInForce::Gtc,
        Some(price),
        size,
    );
    assert!(matches!(r, Reply::Accepted { .. }), "{r:?}");
    ex.advance_to(ts);
}

/// A two-sided book: bids 99 x 5, asks 101 x 1, 102 x 2, 103 x 5.
fn exchange_with(models: Models) -> SimExchange {
    let mut ex = SimExchange::new(models);
    level(&mut ex, 1, Side::Bid, "99", "5");
    level(&mut ex, 1, Side::Ask, "101", "1");
    level(&mut ex, 1, Side::Ask, "102", "2");
    level(&mut ex, 1, Side::Ask, "103", "5");
    ex
}

fn exchange() -> SimExchange {
    exchange_with(Models::default())
}

fn order_updates(out: &[ExchangeOutput]) -> Vec<OrderUpdate> {
    out.iter()
        .filter_map(|o| match o {
            ExchangeOutput::OrderUpdate(u) => Some(u.clone()),
            _ => None,
        })
        .collect()
}

fn fills(out: &[ExchangeOutput]) -> Vec<(String, String, Liquidity)> {
    out.iter()
        .filter_map(|o| match o {
            ExchangeOutput::Fill(f) => Some((f.price.to_string(), f.size.to_string(), f.liquidity)),
            _ => None,
        })
        .collect()
}

fn last_update(out: &[ExchangeOutput]) -> OrderUpdate {
    out.iter()
        .rev()
        .find_map(|o| match o {
            ExchangeOutput::OrderUpdate(u) => Some(u.clone()),
            _ => None,
        })
        .expect("an order update")
}

fn open_orders(ex: &SimExchange) -> Vec<OpenOrder> {
    match ex.query("s1") {
        Reply::QueryResult { open_orders, .. } => open_orders,
        other => panic!("{other:?}"),
    }
}

fn position(ex: &SimExchange) -> PositionView {
    match ex.query("s1") {
        Reply::QueryResult { positions, .. } => positions[0].clone(),
        other => panic!("{other:?}"),
    }
}

fn rejection(reply: Reply) -> String {
    match reply {
        Reply::Rejected { reason, .. } => reason,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

const T: Liquidity = Liquidity::Taker;
const M: Liquidity = Liquidity::Maker;

fn s(x: &str) -> String {
    x.to_string()
}

#[test]
fn limit_order_fills_partially_across_levels_then_rests() {
    let mut ex = exchange();
    limit(&mut ex, 10, "c1", OrderSide::Buy, "102", "4");
    let out = ex.drain();
    assert_eq!(
        fills(&out),
        vec![(s("101"), s("1"), T), (s("102"), s("2"), T)]
    );
    let u = last_update(&out);
    assert_eq!(u.status, OrderStatus::PartiallyFilled);
    assert_eq!(u.filled, fx("3"));
    assert_eq!(u.ts, 10);
    let open = open_orders(&ex);
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].price, fx("102"));
}

#[test]
fn market_order_walks_the_book_and_cancels_what_is_left() {
    let mut ex = exchange();
    order(
        &mut ex,
        10,
        "m",
        OrderSide::Buy,
        OrderType::Market,
        TimeInForce::Ioc,
        None,
        "9",
    );
    ex.advance_to(10);
    let out = ex.drain();
    assert_eq!(
        fills(&out),
        vec![
            (s("101"), s("1"), T),
            (s("102"), s("2"), T),
            (s("103"), s("5"), T)
        ]
    );
    let u = last_update(&out);
    assert_eq!(u.status, OrderStatus::Canceled);
    assert!(u.reason.unwrap().to_string().contains("exhausted"));
    assert_eq!(position(&ex).position, fx("8"));
}

#[test]
fn ioc_remainder_is_canceled() {
    let mut ex = exchange();
    let r = order(
        &mut ex,
        10,
        "i",
        OrderSide::Buy,
        OrderType::Limit,
        TimeInForce::Ioc,
        Some("101"),
        "3",
    );
    assert!(matches!(r, Reply::Accepted { .. }));
    ex.advance_to(10);
    let out = ex.drain();
    assert_eq!(fills(&out), vec![(s("101"), s("1"), T)]);
    let u = last_update(&out);
    assert_eq!((u.status, u.filled), (OrderStatus::Canceled, fx("1")));
    assert!(open_orders(&ex).is_empty());
}

#[test]
fn post_only_is_rejected_when_it_would_cross_and_rests_otherwise() {
    let mut ex = exchange();
    order(
        &mut ex,
        10,
        "p1",
        OrderSide::Buy,
        OrderType::Limit,
        TimeInForce::PostOnly,
        Some("101"),
        "1",
    );
    order(
        &mut ex,
        10,
        "p2",
        OrderSide::Buy,
        OrderType::Limit,
        TimeInForce::PostOnly,
        Some("100"),
        "1",
    );
    ex.advance_to(10);
    let out = ex.drain();
    assert!(fills(&out).is_empty());
    let updates = order_updates(&out);
    assert_eq!(updates[0].status, OrderStatus::Rejected);
    assert!(
        updates[0]
            .reason
            .as_ref()
            .map(ToString::to_string)
            .as_deref()
            .unwrap()
            .contains("would cross")
    );
    assert_eq!(updates[1].status, OrderStatus::New);
    assert_eq!(open_orders(&ex).len(), 1);
}

#[test]
fn consumed_liquidity_is_not_taken_twice_until_the_level_updates() {
    let mut ex = exchange();
    for cid in ["a", "b"] {
        order(
            &mut ex,
            10,
            cid,
            OrderSide::Buy,
            OrderType::Market,
            TimeInForce::Ioc,
            None,
            "1",
        );
    }
    ex.advance_to(10);
    assert_eq!(
        fills(&ex.drain()),
        vec![(s("101"), s("1"), T), (s("102"), s("1"), T)]
    );
    // The venue re-states the level: our guess is replaced by its word.
    level(&mut ex, 11, Side::Ask, "101", "1");
    order(
        &mut ex,
        12,
        "c",
        OrderSide::Buy,
        OrderType::Market,
        TimeInForce::Ioc,
        None,
        "1",
    );
    ex.advance_to(12);
    assert_eq!(fills(&ex.drain()), vec![(s("101"), s("1"), T)]);
}

#[test]
fn queue_position_advances_on_trades_at_price() {
    let mut ex = exchange();
    limit(&mut ex, 10, "q", OrderSide::Buy, "99", "2");
    assert_eq!(open_orders(&ex)[0].queue_ahead, fx("5"));
    ex.drain();
    trade(&mut ex, 11, "99", "4", Side::Ask);
    assert!(fills(&ex.drain()).is_empty());
    assert_eq!(open_orders(&ex)[0].queue_ahead, fx("1"));
    // A trade at another price does not touch the queue.
    trade(&mut ex, 12, "101", "3", Side::Bid);
    assert_eq!(open_orders(&ex)[0].queue_ahead, fx("1"));
    trade(&mut ex, 13, "99", "2", Side::Ask);
    let out = ex.drain();
    assert_eq!(fills(&out), vec![(s("99"), s("1"), M)]);
    assert_eq!(last_update(&out).status, OrderStatus::PartiallyFilled);
    trade(&mut ex, 14, "99", "5", Side::Ask);
    let out = ex.drain();
    assert_eq!(fills(&out), vec![(s("99"), s("1"), M)]);
    assert_eq!(last_update(&out).status, OrderStatus::Filled);
    assert!(open_orders(&ex).is_empty());
}

#[test]
fn trade_through_the_price_fills_with_nothing_ahead() {
    let mut ex = exchange();
    limit(&mut ex, 10, "q", OrderSide::Buy, "99", "2");
    ex.drain();
    trade(&mut ex, 11, "98", "1", Side::Ask);
    assert_eq!(fills(&ex.drain()), vec![(s("99"), s("1"), M)]);
}

/// Level 99 holds 4 when the order joins, grows to 10 behind it, then 6 are canceled.
fn cancel_scenario(models: Models) -> (Fixed, Vec<(String, String, Liquidity)>) {
    let mut ex = exchange_with(models);
    level(&mut ex, 2, Side::Bid, "99", "4");
    limit(&mut ex, 10, "q", OrderSide::Buy, "99", "1");
    level(&mut ex, 11, Side::Bid, "99", "10");
    level(&mut ex, 12, Side::Bid, "99", "4");
    let ahead = open_orders(&ex)[0].queue_ahead;
    ex.drain();
    trade(&mut ex, 13, "99", "3", Side::Ask);
    (ahead, fills(&ex.drain()))
}

#[test]
fn cancels_advance_the_queue_only_under_the_proportional_model() {
    let risk_averse = cancel_scenario(Models {
        queue: Box::new(RiskAverse),
        ..Models::default()
    });
    let proportional = cancel_scenario(Models {
        queue: Box::new(Proportional),
        ..Models::default()
    });
    // Risk averse: the 6 canceled came from behind, 4 still ahead, a trade of 3 misses.
    assert_eq!(risk_averse, (fx("4"), vec![]));
    // Proportional: advance 6 * 4 / 10 = 2.4, rounded down to the book's lot of 1: 2
    // ahead, so a trade of 3 reaches the order.
    assert_eq!(proportional, (fx("2"), vec![(s("99"), s("1"), M)]));
}

#[test]
fn level_decreases_explained_by_trades_are_not_cancels() {
    let mut ex = exchange_with(Models {
        queue: Box::new(Proportional),
        ..Models::default()
    });
    limit(&mut ex, 10, "q", OrderSide::Buy, "99", "1");
    level(&mut ex, 11, Side::Bid, "99", "10");
    trade(&mut ex, 12, "99", "2", Side::Ask);
    level(&mut ex, 13, Side::Bid, "99", "8");
    assert_eq!(open_orders(&ex)[0].queue_ahead, fx("3"));
}

#[test]
fn latency_delays_an_order_past_a_price_move() {
    let run = |latency_ns: i64| {
        let mut ex = exchange_with(Models {
            order_latency: Box::new(ConstantLatency(latency_ns)),
            ..Models::default()
        });
        order(
            &mut ex,
            100,
            "m",
            OrderSide::Buy,
            OrderType::Market,
            TimeInForce::Ioc,
            None,
            "1",
        );
        order(
            &mut ex,
            100,
            "l",
            OrderSide::Buy,
            OrderType::Limit,
            TimeInForce::Ioc,
            Some("101"),
            "1",
        );
        // The ask at 101 disappears 500 ns after the decision.
        level(&mut ex, 600, Side::Ask, "101", "0");
        ex.advance_to(10_000);
        fills(&ex.drain())
    };
    assert_eq!(run(0), vec![(s("101"), s("1"), T)]);
    // Applied after the move: the market order pays 102, the 101 limit gets nothing.
    assert_eq!(run(1_000), vec![(s("102"), s("1"), T)]);
}

#[test]
fn at_equal_timestamps_market_data_goes_first() {
    let mut ex = exchange();
    order(
        &mut ex,
        100,
        "m",
        OrderSide::Buy,
        OrderType::Market,
        TimeInForce::Ioc,
        None,
        "1",
    );
    level(&mut ex, 100, Side::Ask, "101", "0");
    assert!(
        ex.drain().is_empty(),
        "the order must wait for the event at its own time"
    );
    ex.advance_to(100);
    assert_eq!(fills(&ex.drain()), vec![(s("102"), s("1"), T)]);
}

#[test]
fn resting_order_crossed_by_the_book_fills_as_maker_at_its_own_price() {
    let mut ex = exchange();
    limit(&mut ex, 10, "b", OrderSide::Buy, "100", "2");
    ex.drain();
    level(&mut ex, 11, Side::Ask, "99.5", "3");
    let out = ex.drain();
    assert_eq!(fills(&out), vec![(s("100"), s("2"), M)]);
    assert_eq!(last_update(&out).status, OrderStatus::Filled);
    assert!(open_orders(&ex).is_empty());
}

#[test]
fn fees_charge_takers_and_rebate_makers() {
    let mut ex = exchange_with(Models {
        fees: Box::new(BpsFees(FeeSchedule {
            maker_bps: -1.0,
            taker_bps: 5.0,
            fixed_per_fill: 0.0,
        })),
        ..Models::default()
    });
    limit(&mut ex, 10, "t", OrderSide::Buy, "101", "1");
    limit(&mut ex, 11, "m", OrderSide::Sell, "110", "1");
    trade(&mut ex, 12, "110", "1", Side::Bid);
    let fees: Vec<(Liquidity, f64)> = ex
        .drain()
        .iter()
        .filter_map(|o| match o {
            ExchangeOutput::Fill(f) => Some((f.liquidity, f.fee)),
            _ => None,
        })
        .collect();
    assert_eq!(fees.len(), 2);
    assert_eq!(fees[0].0, T);
    assert!((fees[0].1 - 101.0 * 5e-4).abs() < 1e-12);
    assert_eq!(fees[1].0, M);
    assert!((fees[1].1 + 110.0 * 1e-4).abs() < 1e-12);
    let p = position(&ex);
    assert!((p.fees_paid - (0.0505 - 0.011)).abs() < 1e-12);
    assert!((p.realized_pnl - 9.0).abs() < 1e-9);
    assert!(p.position.is_zero());
}

#[test]
fn positions_track_average_entry_and_marks_report_them() {
    let mut ex = exchange();
    limit(&mut ex, 10, "a", OrderSide::Buy, "102", "3");
    let p = position(&ex);
    assert_eq!(p.position, fx("3"));
    assert!((p.avg_entry_price - (101.0 + 2.0 * 102.0) / 3.0).abs() < 1e-9);
    let marks = ex.marks(20);
    assert_eq!(marks.len(), 1);
    assert_eq!(marks[0].position, fx("3"));
    // Marks use the recorded book: our virtual consumption does not move the mid.
    assert!((marks[0].mid - (99.0 + 101.0) / 2.0).abs() < 1e-9);
}

fn digest_of(sizes: [&str; 2]) -> String {
    let mut ex = exchange();
    limit(&mut ex, 10, "a", OrderSide::Buy, "101", sizes[0]);
    limit(&mut ex, 11, "b", OrderSide::Buy, "99", sizes[1]);
    trade(&mut ex, 12, "99", "9", Side::Ask);
    ex.fills_digest()
}

#[test]
fn fills_digest_is_deterministic_and_sensitive_to_fills() {
    let a = digest_of(["1", "2"]);
    assert_eq!(a, digest_of(["1", "2"]));
    assert_eq!(a.len(), 16);
    assert_ne!(a, digest_of(["1", "3"]));
    assert_ne!(a, SimExchange::new(Models::default()).fills_digest());
}

#[test]
fn rejections_carry_reasons() {
    let mut ex = exchange();
    let cases: Vec<(Reply, &str)> = vec![
        (
            ex.submit(
                "s1",
                OrderRequest::New(NewOrder {
                    client_order_id: "u".into(),
                    venue: "sim".into(),
                    symbol: "ETHUSD".into(),
                    side: OrderSide::Buy,
                    order_type: OrderType::Market,
                    tif: TimeInForce::Ioc,
                    price: None,
                    size: fx("1"),
                    decided_at: None,
                }),
                10,
            ),
            "unknown symbol",
        ),
        (
            order(
                &mut ex,
                10,
                "z",
                OrderSide::Buy,
                OrderType::Limit,
                TimeInForce::Gtc,
                Some("100"),
                "0",
            ),
            "size must be > 0",
        ),
        (
            order(
                &mut ex,
                10,
                "n",
                OrderSide::Buy,
                OrderType::Limit,
                TimeInForce::Gtc,
                None,
                "1",
            ),
            "price is required",
        ),
        (
            order(
                &mut ex,
                10,
                "mp",
                OrderSide::Buy,
                OrderType::Market,
                TimeInForce::Ioc,
                Some("1"),
                "1",
            ),
            "take no price",
        ),
        (
            order(
                &mut ex,
                10,
                "",
                OrderSide::Buy,
                OrderType::Market,
                TimeInForce::Ioc,
                None,
                "1",
            ),
            "must not be empty",
        ),
    ];
    for (reply, expected) in cases {
        let reason = rejection(reply);
        assert!(reason.contains(expected), "{reason:?} lacks {expected:?}");
    }
    limit(&mut ex, 10, "dup", OrderSide::Buy, "90", "1");
    let r = order(
        &mut ex,
        10,
        "dup",
        OrderSide::Buy,
        OrderType::Limit,
        TimeInForce::Gtc,
        Some("90"),
        "1",
    );
    assert!(rejection(r).contains("duplicate client_order_id"));
    let r = ex.submit(
        "s1",
        OrderRequest::Cancel {
            client_order_id: "nope".into(),
        },
        10,
    );
    assert!(rejection(r).contains("unknown client_order_id"));
    // Shape rejections are also order updates, so they reach the bus and orders.parquet.
    let rejected = ex
        .drain()
        .iter()
        .filter(
            |o| matches!(o, ExchangeOutput::OrderUpdate(u) if u.status == OrderStatus::Rejected),
        )
        .count();
    assert_eq!(rejected, 6);
}

#[test]
fn market_order_against_an_empty_side_is_rejected() {
    let mut ex = SimExchange::new(Models::default());
    level(&mut ex, 1, Side::Bid, "99", "5");
    order(
        &mut ex,
        10,
        "m",
        OrderSide::Buy,
        OrderType::Market,
        TimeInForce::Ioc,
        None,
        "1",
    );
    ex.advance_to(10);
    let u = last_update(&ex.drain());
    assert_eq!(u.status, OrderStatus::Rejected);
    assert!(
        u.reason
            .unwrap()
            .to_string()
            .contains("no visible liquidity on the ask side")
    );
}

#[test]
fn cancel_removes_a_resting_order_and_refuses_a_finished_one() {
    let mut ex = exchange();
    limit(&mut ex, 10, "r", OrderSide::Buy, "98", "1");
    limit(&mut ex, 10, "f", OrderSide::Buy, "101", "1");
    ex.drain();
    for cid in ["r", "f"] {
        let r = ex.submit(
            "s1",
            OrderRequest::Cancel {
                client_order_id: cid.into(),
            },
            11,
        );
        assert!(matches!(r, Reply::Accepted { .. }));
    }
    ex.advance_to(11);
    let out = ex.drain();
    let updates = order_updates(&out);
    assert_eq!(updates[0].status, OrderStatus::Canceled);
    assert_eq!(updates[1].status, OrderStatus::Filled);
    assert!(
        updates[1]
            .reason
            .as_ref()
            .map(ToString::to_string)
            .as_deref()
            .unwrap()
            .contains("cancel refused")
    );
    assert!(open_orders(&ex).is_empty());
    assert!(ex.marks(12).iter().all(|m| !m.position.is_zero()));
}

#[test]
fn requests_of_one_strategy_are_applied_in_the_order_sent() {
    // Long latency for the first request, none for the second: FIFO keeps them in order.
    struct Decreasing(i64);
    impl crate::exchange::models::OrderLatency for Decreasing {
        fn order_latency(&mut self, _: UnixNanos) -> i64 {
            self.0 -= 1000;
            self.0
        }
    }
    let mut ex = exchange_with(Models {
        order_latency: Box::new(Decreasing(2000)),
        ..Models::default()
    });
    order(
        &mut ex,
        10,
        "o",
        OrderSide::Buy,
        OrderType::Limit,
        TimeInForce::Gtc,
        Some("98"),
        "1",
    );
    ex.submit(
        "s1",
        OrderRequest::Cancel {
            client_order_id: "o".into(),
        },
        10,
    );
    assert_eq!(ex.next_apply_at(), Some(1010));
    ex.advance_to(2000);
    let statuses: Vec<OrderStatus> = ex
        .drain()
        .iter()
        .filter_map(|o| match o {
            ExchangeOutput::OrderUpdate(u) => Some(u.status),
            _ => None,
        })
        .collect();
    assert_eq!(statuses, vec![OrderStatus::New, OrderStatus::Canceled]);
}

/// A random but reproducible session: a wandering book with trades, and one strategy
/// sending random orders and cancels through a sampled latency.
fn random_session(seed: u64) -> (String, Vec<ExchangeOutput>, SimExchange) {
    use rand::{Rng, SeedableRng, rngs::SmallRng};
    let settings = ExchangeSettings {
        order_latency: crate::exchange::models::LatencySpec::LogNormal {
            mean_ns: 3_000,
            sigma: 0.7,
            min_ns: 0,
        },
        queue: crate::exchange::models::QueueSpec::Proportional,
        fees: FeeSchedule {
            maker_bps: -0.5,
            taker_bps: 3.0,
            fixed_per_fill: 0.0,
        },
        seed,
        ..ExchangeSettings::default()
    };
    let mut ex = SimExchange::from_settings(&settings).unwrap();
    let mut rng = SmallRng::seed_from_u64(seed);
    let tick = |t: i64| Fixed::new(t * 5, 1);
    let size = |rng: &mut SmallRng| Fixed::new(rng.gen_range(1..=40), 1);
    let mut mid = 2_000i64;
    let mut bids: BTreeMap<i64, Fixed> = BTreeMap::new();
    let mut asks: BTreeMap<i64, Fixed> = BTreeMap::new();
    let mut out = Vec::new();
    let mut ts = 1_000i64;
    let mut next_cid = 0u32;
    for _ in 0..3_000 {
        ts += rng.gen_range(1..2_000);
        match rng.gen_range(0..10) {
            0 => mid += rng.gen_range(-2..=2),
            1..=2 => {
                let (p, side) = if rng.gen_bool(0.5) {
                    (bids.keys().next_back().copied(), Side::Ask)
                } else {
                    (asks.keys().next().copied(), Side::Bid)
                };
                if let Some(p) = p {
                    ex.on_market(&event(
                        ts,
                        Body::Trade(Trade {
                            price: tick(p),
                            size: size(&mut rng),
                            aggressor: side,
                            trade_id: Default::default(),
                        }),
                    ));
                }
                continue;
            }
            _ => {}
        }
        // Keep the book uncrossed around `mid`, then touch one random level.
        let mut deltas = Vec::new();
        for p in bids.range(mid..).map(|(p, _)| *p).collect::<Vec<_>>() {
            bids.remove(&p);
            deltas.push((Side::Bid, p, Fixed::ZERO));
        }
        for p in asks.range(..=mid).map(|(p, _)| *p).collect::<Vec<_>>() {
            asks.remove(&p);
            deltas.push((Side::Ask, p, Fixed::ZERO));
        }
        let (side, p) = if rng.gen_bool(0.5) {
            (Side::Bid, mid - rng.gen_range(1..=5))
        } else {
            (Side::Ask, mid + rng.gen_range(1..=5))
        };
        let new = if rng.gen_bool(0.2) {
            Fixed::ZERO
        } else {
            size(&mut rng)
        };
        let levels = if side == Side::Bid {
            &mut bids
        } else {
            &mut asks
        };
        if new.is_zero() {
            levels.remove(&p);
        } else {
            levels.insert(p, new);
        }
        deltas.push((side, p, new));
        let n = deltas.len();
        for (i, (side, p, sz)) in deltas.into_iter().enumerate() {
            let flags = if i + 1 == n {
                Flags::LAST
            } else {
                Flags::default()
            };
            ex.on_market(&event(
                ts,
                Body::Book(BookDelta {
                    side,
                    price: tick(p),
                    size: sz,
                    flags,
                }),
            ));
        }
        if rng.gen_bool(0.3) {
            next_cid += 1;
            let side = if rng.gen_bool(0.5) {
                OrderSide::Buy
            } else {
                OrderSide::Sell
            };
            let (order_type, tif) = match rng.gen_range(0..4) {
                0 => (OrderType::Market, TimeInForce::Ioc),
                1 => (OrderType::Limit, TimeInForce::Ioc),
                2 => (OrderType::Limit, TimeInForce::PostOnly),
                _ => (OrderType::Limit, TimeInForce::Gtc),
            };
            let price = (order_type == OrderType::Limit).then(|| tick(mid + rng.gen_range(-4..=4)));
            ex.submit(
                "r",
                OrderRequest::New(NewOrder {
                    client_order_id: format!("c{next_cid}").into(),
                    venue: "sim".into(),
                    symbol: "BTCUSD".into(),
                    side,
                    order_type,
                    tif,
                    price,
                    size: size(&mut rng),
                    decided_at: None,
                }),
                ts,
            );
        } else if next_cid > 0 && rng.gen_bool(0.1) {
            let cid = format!("c{}", rng.gen_range(1..=next_cid));
            ex.submit(
                "r",
                OrderRequest::Cancel {
                    client_order_id: cid.into(),
                },
                ts,
            );
        }
        out.extend(ex.drain());
    }
    ex.close(ts);
    out.extend(ex.drain());
    (ex.fills_digest(), out, ex)
}

#[test]
fn random_sessions_keep_books_orders_and_positions_consistent() {
    let (digest, out, ex) = random_session(11);
    let (again, _, _) = random_session(11);
    assert_eq!(digest, again, "same seed, same fills");
    assert_ne!(digest, random_session(12).0);

    let mut filled: HashMap<u64, Fixed> = HashMap::default();
    let mut last: HashMap<u64, OrderUpdate> = HashMap::default();
    let mut net = Fixed::ZERO;
    let mut fills_seen = 0;
    for o in &out {
        match o {
            ExchangeOutput::Fill(f) => {
                fills_seen += 1;
                assert!(f.size > Fixed::ZERO);
                let e = filled.entry(f.order_id).or_insert(Fixed::ZERO);
                *e = add(*e, f.size);
                let signed = Fixed::new(f.side.sign() * f.size.mantissa, f.size.scale);
                net = add(net, signed);
            }
            ExchangeOutput::OrderUpdate(u) => {
                // A final state never changes; a refused cancel only restates it.
                if let Some(prev) = last.get(&u.order_id).filter(|p| p.status.is_final()) {
                    assert_eq!(prev.status, u.status, "{u:?}");
                    assert!(
                        u.reason
                            .as_ref()
                            .map(ToString::to_string)
                            .as_deref()
                            .unwrap_or("")
                            .contains("cancel refused")
                    );
                }
                last.insert(u.order_id, u.clone());
            }
        }
    }
    assert!(
        fills_seen > 20,
        "the session should trade, got {fills_seen} fills"
    );
    // Fills never beat the limit: buys at or below it, sells at or above.
    for o in &out {
        if let ExchangeOutput::Fill(f) = o {
            let u = &last[&f.order_id];
            if let Some(limit) = u.price {
                match f.side {
                    OrderSide::Buy => assert!(f.price <= limit, "{f:?} vs {limit}"),
                    OrderSide::Sell => assert!(f.price >= limit, "{f:?} vs {limit}"),
                }
            }
        }
    }
    for (id, u) in &last {
        let f = filled.get(id).copied().unwrap_or(Fixed::ZERO);
        assert_eq!(
            u.filled, f,
            "order {id}: update says {} but fills sum {f}",
            u.filled
        );
        assert!(u.filled <= u.size);
        if u.status == OrderStatus::Filled {
            assert_eq!(u.filled, u.size);
        }
    }
    let Reply::QueryResult {
        positions,
        open_orders,
    } = ex.query("r")
    else {
        panic!("query must answer");
    };
    assert_eq!(positions[0].position, net);
    for o in open_orders {
        assert!(!last[&o.order_id].status.is_final());
    }
}

#[test]
fn late_arriving_requests_still_apply_at_their_decision_time_plus_latency() {
    // Lookahead lockstep: the exchange has seen events up to 150 when an order decided
    // at 100 arrives; with 100 ns latency it belongs before the event at 250.
    let mut ex = exchange_with(Models {
        order_latency: Box::new(ConstantLatency(100)),
        ..Models::default()
    });
    level(&mut ex, 100, Side::Bid, "98", "1");
    level(&mut ex, 150, Side::Bid, "97", "1");
    order(
        &mut ex,
        100,
        "m",
        OrderSide::Buy,
        OrderType::Market,
        TimeInForce::Ioc,
        None,
        "1",
    );
    assert_eq!(ex.next_apply_at(), Some(200));
    level(&mut ex, 250, Side::Ask, "101", "0");
    assert_eq!(fills(&ex.drain()), vec![(s("101"), s("1"), T)]);
    // Already past: applied at once, at the clock.
    order(
        &mut ex,
        10,
        "n",
        OrderSide::Buy,
        OrderType::Market,
        TimeInForce::Ioc,
        None,
        "1",
    );
    assert_eq!(ex.next_apply_at(), Some(250));
}

/// Memory stays flat over a long run: a final order is forgotten `FORGET_AFTER` later,
/// after which a cancel of it is refused at the gateway as unknown, as for any unknown
/// id; until then it is refused at the exchange as already final.
#[test]
fn final_orders_are_forgotten_after_a_while() {
    let mut ex = exchange();
    let r = order(
        &mut ex,
        2,
        "m1",
        OrderSide::Buy,
        OrderType::Market,
        TimeInForce::Ioc,
        None,
        "1",
    );
    assert!(matches!(r, Reply::Accepted { .. }), "{r:?}");
    ex.advance_to(2);
    assert_eq!(last_update(&ex.drain()).status, OrderStatus::Filled);
    let cancel = |ex: &mut SimExchange, ts| {
        ex.submit(
            "s1",
            OrderRequest::Cancel {
                client_order_id: "m1".into(),
            },
            ts,
        )
    };
    assert!(matches!(cancel(&mut ex, 3), Reply::Accepted { .. }));
    ex.advance_to(3);
    let refused = last_update(&ex.drain());
    assert_eq!(
        refused.reason.as_ref().map(ToString::to_string).as_deref(),
        Some("cancel refused: order already filled")
    );
    level(&mut ex, 2 + FORGET_AFTER, Side::Bid, "99", "6");
    assert!(
        matches!(cancel(&mut ex, 4), Reply::Accepted { .. }),
        "not yet"
    );
    level(&mut ex, 3 + FORGET_AFTER, Side::Bid, "99", "7");
    assert!(
        matches!(cancel(&mut ex, 5), Reply::Rejected { .. }),
        "forgotten"
    );
    assert!(ex.orders.is_empty() && ex.client_ids.is_empty());
}
