//! ticktape: a record-and-replay backtest harness for order-book market data.
//!
//! Data flows one way: sources publish normalized [`event::Event`]s on a ZeroMQ
//! [`bus`]; sinks consume them; the simulated exchange answers orders and publishes
//! fills; reports read Parquet only.
//!
//! # Layout (in the order data flows)
//! - [`event`]: the event vocabulary, exact fixed-point numbers, nanosecond time.
//! - [`wire`]: topics and JSON payloads on the bus.
//! - [`bus`]: ZeroMQ publisher/subscriber, lossless mode, heartbeats.
//! - [`nats`]: NATS JetStream between machines: durable, replicated, authenticated.
//! - [`feeds`]: sources — the synthetic venue, live venues, importers.
//! - [`record`]: the recorder (dedup, gaps, quarantine) writing through [`store`].
//! - [`store`]: dataset layout, journal, crash-safe Parquet writer, time-ordered reader.
//! - [`inspect`]: what a dataset holds.
//! - [`book`]: the L2 book every consumer rebuilds from deltas.
//! - [`replay`]: recorded events back on the bus: pacing, no-drop, lockstep.
//! - [`exchange`]: the simulated exchange and its models; [`paper`] runs it live.
//! - [`strategy`]: the transport-free strategy SDK, its bus driver, example strategies.
//! - [`backtest`]: the in-process engine: data → exchange → strategies in one thread.
//! - [`scenario`]: scenario files and `ticktape run`.
//! - [`report`]: PnL analytics with polars.
//! - [`sweep`]: one scenario over a parameter grid, run in parallel, one results table.
//! - [`shutdown`]: the one stop flag signals raise.

#![deny(missing_docs)]

pub mod backtest;
pub mod book;
pub mod bus;
pub mod event;
pub mod exchange;
pub mod feeds;
pub mod inspect;
pub mod nats;
pub mod paper;
pub mod record;
pub mod replay;
pub mod report;
pub mod scenario;
pub mod shm;
pub mod shutdown;
pub mod store;
pub mod strategy;
pub mod sweep;
pub mod wire;
