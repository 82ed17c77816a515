//! ticktape: a record-and-replay backtest harness for order-book market data.
//!
//! Data flows one way: sources (feeds, `simulate`, `replay`) publish normalized
//! [`event::Event`]s on a ZeroMQ [`bus`]; sinks (`record`, strategies, the simulated
//! exchange) consume them; the exchange answers orders and publishes fills; reports read
//! Parquet only. See `docs/ARCHITECTURE.md` for the map.

#![deny(missing_docs)]

pub mod book;
pub mod event;
pub mod wire;
pub mod exchange;
pub mod feeds;
pub mod report;
pub mod store;
pub mod bus;
pub mod shutdown;
pub mod record;
