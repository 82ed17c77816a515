//! The ZeroMQ bus: the publisher (optionally lossless), subscribers that know which
//! publisher each message came from, per-topic sequencing, heartbeats, and the outlets
//! a source publishes through (ZeroMQ, NATS JetStream, or both).
//!
//! Owns socket options and the subscriber handshake. Never interprets events beyond
//! their topic: business logic lives in the sources and sinks.
//!
//! # Layout
//! - `publisher.rs`: the bound PUB/XPUB socket, its back-pressure, its drain at close;
//! - `peers.rs`: who a lossless publisher waits for (Linux socket and process lookups);
//! - `subscriber.rs`: SUB sockets on one or more publishers, messages tagged by source;
//! - `sequencer.rs`: `pub_seq` per topic;
//! - `heartbeat.rs`: `hb.<publisher>` every interval;
//! - `outlets.rs`: a source's events to ZeroMQ, JetStream, or both.

use std::time::Duration;

mod heartbeat;
mod outlets;
mod peers;
mod publisher;
mod sequencer;
mod subscriber;

pub use heartbeat::HeartbeatTimer;
pub use outlets::Outlets;
pub use peers::SlowSubscriber;
pub use publisher::{Prepared, Publisher, PublisherConfig, PublisherStats};
pub use sequencer::Sequencer;
pub use subscriber::{CONTROL_TOPICS, Received, Subscriber, SubscriberConfig, with_control_topics};

/// Runs a ZeroMQ call again when a signal interrupted it (`EINTR`): nothing was sent or
/// received, and the caller's own stop flag (set by the signal handler) is what decides
/// whether to go on. Even a `DONTWAIT` call can be interrupted, while libzmq reads its
/// mailbox, so a Ctrl-C must not surface as "Interrupted system call".
pub(crate) fn again_if_interrupted<T>(mut call: impl FnMut() -> zmq::Result<T>) -> zmq::Result<T> {
    loop {
        match call() {
            Err(zmq::Error::EINTR) => continue,
            result => return result,
        }
    }
}

/// A process-wide ZeroMQ context (cheap to clone).
pub fn context() -> zmq::Context {
    zmq::Context::new()
}

/// How a publisher behaves when a subscriber cannot keep up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backpressure {
    /// Plain PUB semantics: messages beyond the high-water mark are dropped (live data
    /// must never wait for a slow consumer).
    Drop,
    /// XPUB with `ZMQ_XPUB_NODROP`: the publisher waits instead (replay never loses).
    Block,
}

/// How long a no-drop publisher's close waits for subscribers to take what is queued.
pub(crate) const BLOCK_LINGER_MS: i32 = 120_000;
/// The same limit for [`Publisher::drain`].
pub const DRAIN_LIMIT: Duration = Duration::from_millis(BLOCK_LINGER_MS as u64);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interrupted_call_is_made_again_and_other_errors_pass_through() {
        let mut calls = 0;
        let result = again_if_interrupted(|| {
            calls += 1;
            if calls < 3 {
                Err(zmq::Error::EINTR)
            } else {
                Ok(calls)
            }
        });
        assert_eq!(result, Ok(3));
        let mut calls = 0;
        let result: zmq::Result<()> = again_if_interrupted(|| {
            calls += 1;
            Err(zmq::Error::EAGAIN)
        });
        assert_eq!((result, calls), (Err(zmq::Error::EAGAIN), 1));
    }
}
