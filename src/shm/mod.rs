//! The shared-memory lockstep transport (`docs/SHM.md`): strategies on the same machine
//! as the replay exchange the bus's and the gateway's messages through two rings per
//! strategy in an anonymous `memfd` mapping, woken by futex words.
//!
//! # Layout
//! - [`ring`]: one single-producer single-consumer byte ring, its record framing and
//!   the futex wait/wake protocol;
//! - [`segment`]: a strategy's segment (header, both rings), memfd creation, mapping,
//!   descriptor hand-off to a child, peer liveness;
//! - [`spin`]: the bounded, adaptive spin before a futex sleep;
//! - [`backup`]: the backup publisher of a paced replay, on another core;
//! - [`hub`]: the replay's side, one segment per strategy (fan-out of bus messages,
//!   gateway replies, requests, dead and stuck strategies).
//!
//! The strategy's side is the driver in `strategy/shm.rs`. Payloads are the bus's and the
//! gateway's own bytes: only framing differs from ZeroMQ. Linux and x86-64/aarch64 only.

pub mod backup;
pub mod hub;
pub mod ring;
pub mod segment;
pub mod spin;

pub use hub::Hub;
pub use segment::{StrategyEnd, attach, inherit_as, open_endpoint, take_fd};
pub use spin::{BUSY_POLL_SPIN_US, SPIN_ENV};

/// The descriptor a strategy child finds its segment on (`shm:fd=3`).
pub const CHILD_FD: i32 = 3;

/// Which transport carries a lockstep run between the replay and its strategies.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    serde::Deserialize,
    serde::Serialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    /// ZeroMQ PUB/SUB and DEALER/ROUTER (any language, any machine; the live interface).
    #[default]
    Zmq,
    /// Shared memory (strategies started by `ticktape run` on this machine).
    Shm,
}

#[cfg(test)]
mod tests;
