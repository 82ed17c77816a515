//! The simulated exchange: matching against the replayed book, latency / queue / fee
//! models, the order-gateway protocol and run outputs. Never reads Parquet directly and
//! never owns sockets: the replay or paper host feeds it events and orders.
//!
//! # Layout
//! - [`models`]: one small trait per assumption ([`OrderLatency`], [`MarketDataLatency`],
//!   [`QueueModel`], [`FeeModel`]), their implementations and [`ExchangeSettings`], the
//!   serde block a scenario uses to pick them by name.
//! - [`matching`]: [`SimExchange`], the books, orders, positions and fill digest.
//! - [`protocol`]: the JSON messages strategies send ([`Request`]), the replies
//!   ([`Reply`]) and what is published on the bus ([`ExchangeOutput`]).
//! - [`outputs`]: [`RunWriter`], the run directory's `orders`/`fills`/`marks` Parquet files.
//! - [`host`]: [`ExchangeHost`], the exchange plus its run files behind the replay loop's
//!   [`crate::replay::VenueHost`] trait (replay `--exchange` and paper mode).
//!
//! # Timing contract with the host
//! The exchange's clock is the `ts_recv` timeline (wall-clock time in paper mode).
//! 1. [`SimExchange::submit`] takes a request decided at `t` and queues it for
//!    `apply_at = t + md_latency + order_latency`; shape errors are rejected at once.
//! 2. [`SimExchange::on_market`] first applies queued requests with `apply_at <
//!    event.ts_recv` (by `apply_at`, ties by submission order), then the event. At equal
//!    times market data goes first.
//! 3. [`SimExchange::advance_to`] applies requests with `apply_at <= ts` (end of stream,
//!    paper-mode timers).
//! 4. The host publishes [`SimExchange::drain`] after each call, calls
//!    [`SimExchange::marks`] periodically, and hands both to a [`RunWriter`].
//!
//! # Example
//! ```
//! use std::sync::Arc;
//! use ticktape::event::{Body, BookDelta, Event, Flags, Side};
//! use ticktape::exchange::{
//!     ExchangeOutput, NewOrder, OrderRequest, OrderSide, OrderType, Reply, SimExchange,
//!     TimeInForce, Models,
//! };
//!
//! let book = |ts, side, price: &str, size: &str| Event {
//!     venue: Arc::from("sim"), symbol: Arc::from("BTCUSD"), ts_event: ts, ts_recv: ts,
//!     venue_seq: None, prev_venue_seq: None, pub_seq: 0,
//!     body: Body::Book(BookDelta {
//!         side, price: price.parse().unwrap(), size: size.parse().unwrap(), flags: Flags::LAST,
//!     }),
//! };
//! let mut ex = SimExchange::new(Models::default());
//! ex.on_market(&book(10, Side::Bid, "99", "5"));
//! ex.on_market(&book(10, Side::Ask, "101", "2"));
//! let reply = ex.submit("demo", OrderRequest::New(NewOrder {
//!     client_order_id: "c1".into(), venue: "sim".into(), symbol: "BTCUSD".into(),
//!     side: OrderSide::Buy, order_type: OrderType::Market, tif: TimeInForce::Ioc,
//!     price: None, size: "1".parse().unwrap(), decided_at: None,
//! }), 10);
//! assert!(matches!(reply, Reply::Accepted { order_id: 1, .. }));
//! ex.advance_to(10);
//! let fills: Vec<_> = ex.drain().into_iter()
//!     .filter_map(|o| match o { ExchangeOutput::Fill(f) => Some(f), _ => None })
//!     .collect();
//! assert_eq!(fills[0].price.to_string(), "101");
//! assert_eq!(ex.fills_digest().len(), 16);
//! ```

pub mod client_order_id;
pub mod host;
pub mod matching;
pub mod models;
pub mod outputs;
pub mod protocol;
#[cfg(test)]
mod real_data_tests;

pub use host::{ExchangeHost, ExchangeHostConfig};
pub use matching::{OrderRequest, SimExchange};
pub use models::{
    BpsFees, ConstantLatency, ExchangeSettings, FeeModel, FeeSchedule, LatencySpec,
    LogNormalLatency, MarketDataLatency, ModelError, Models, OrderLatency, Proportional,
    QueueModel, QueueSpec, RiskAverse,
};
pub use outputs::{OutputError, RunCounts, RunWriter};
pub use protocol::{
    ClientOrderId, ExchangeOutput, Fill, Liquidity, Mark, NewOrder, OpenOrder, OrderSide,
    OrderStatus, OrderType, OrderUpdate, PositionView, Reply, Request, TimeInForce,
};
