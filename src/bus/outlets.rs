//! Where a source's events go: ZeroMQ, NATS JetStream, or both, in the same order.

use anyhow::Result;

use super::Publisher;
use crate::event::Event;
use crate::wire;

/// Where a source's events go: the ZeroMQ publisher, a NATS JetStream publisher
/// (`crate::nats`), or both. Each event goes to each, in the same order.
#[derive(Default)]
pub struct Outlets {
    /// The ZeroMQ publisher, if bound.
    pub zmq: Option<Publisher>,
    /// The JetStream publisher, if connected.
    pub nats: Option<crate::nats::NatsPublisher>,
}

impl Outlets {
    /// Sends `event` on `topic` (built by a [`Sequencer`](super::Sequencer)) to every outlet.
    pub fn send_on(&mut self, topic: &str, event: &Event) -> Result<()> {
        if let Some(p) = self.zmq.as_mut() {
            p.send_on(topic, event)?;
        }
        if let Some(p) = self.nats.as_mut() {
            p.send_on(topic, event)?;
        }
        Ok(())
    }

    /// Encodes and sends one event to every outlet.
    pub fn send(&mut self, event: &Event) -> Result<()> {
        let topic = wire::topic(event);
        self.send_on(&topic, event)
    }

    /// Sends raw bytes to every outlet (fault injection).
    pub fn send_raw(&mut self, topic: &[u8], payload: &[u8]) -> Result<()> {
        if let Some(p) = self.zmq.as_mut() {
            p.send_raw(topic, payload)?;
        }
        if let Some(p) = self.nats.as_mut() {
            p.send_raw(topic, payload)?;
        }
        Ok(())
    }

    /// Where events go, for status lines: endpoints, then NATS servers.
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        if let Some(p) = &self.zmq {
            parts.extend(p.endpoints().iter().cloned());
        }
        if let Some(p) = &self.nats {
            parts.push(format!("JetStream {}", p.describe()));
        }
        parts.join(",")
    }

    /// Payload bytes sent (the ZeroMQ publisher's, else the NATS publisher's).
    pub fn bytes(&self) -> u64 {
        match (&self.zmq, &self.nats) {
            (Some(p), _) => p.stats().bytes,
            (None, Some(n)) => n.stats().bytes,
            (None, None) => 0,
        }
    }

    /// Waits for the broker to acknowledge everything sent (a no-op without NATS);
    /// returns the NATS publisher's counters.
    pub fn close(self) -> Result<Option<crate::nats::NatsPublisherStats>> {
        drop(self.zmq);
        self.nats.map(|n| n.close()).transpose()
    }
}
