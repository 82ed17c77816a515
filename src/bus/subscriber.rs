//! SUB sockets on one or more publishers; each message tagged with the endpoint it came
//! from, received into reused frame buffers.

use std::time::Duration;

use anyhow::{Context, Result};

use super::again_if_interrupted;

/// One message received by a [`Subscriber`], tagged with the endpoint it came from.
///
/// The frames are the subscriber's own reused buffers, valid until its next receive:
/// a recorder takes millions of messages a second and should not allocate for each.
pub struct Received<'a> {
    /// Index of the endpoint in [`SubscriberConfig::connect`].
    pub source: usize,
    /// The frames, normally `[topic, payload]`.
    pub frames: &'a [zmq::Message],
}

/// Topic prefixes of the control messages a consumer needs whatever data it picks:
/// heartbeats (`hb.<publisher>`: liveness, silence detection) and end-of-stream
/// (`eos.<publisher>`), as in `docs/PROTOCOL.md`.
pub const CONTROL_TOPICS: [&str; 2] = ["hb.", "eos."];

/// `prefixes` plus [`CONTROL_TOPICS`]: the subscription of a consumer that filters data by
/// topic but must still hear heartbeats and end-of-stream (the recorder's `--topic`).
/// Empty stays empty, which subscribes to everything.
pub fn with_control_topics(prefixes: &[String]) -> Vec<String> {
    let mut topics = prefixes.to_vec();
    if !topics.is_empty() {
        for control in CONTROL_TOPICS {
            if !topics.iter().any(|t| control.starts_with(t.as_str())) {
                topics.push(control.to_string());
            }
        }
    }
    topics
}

/// Subscriber configuration.
#[derive(Clone, Debug)]
pub struct SubscriberConfig {
    /// Publisher endpoints, each on its own socket so messages keep their origin.
    pub connect: Vec<String>,
    /// Topic prefixes; empty means everything.
    pub topics: Vec<String>,
    /// Receive high-water mark in messages.
    pub recv_hwm: i32,
}

/// SUB sockets on one or more publishers.
pub struct Subscriber {
    sockets: Vec<zmq::Socket>,
    endpoints: Vec<String>,
    next: usize,
    /// Frame buffers of the last message received (and spares).
    frames: Vec<zmq::Message>,
}

impl Subscriber {
    /// Connects to every endpoint (connecting never fails for an absent publisher;
    /// ZeroMQ retries in the background).
    pub fn connect(ctx: &zmq::Context, config: &SubscriberConfig) -> Result<Subscriber> {
        let mut sockets = Vec::new();
        for ep in &config.connect {
            let s = ctx.socket(zmq::SUB)?;
            s.set_rcvhwm(config.recv_hwm)?;
            s.set_rcvbuf(8 << 20)?;
            s.set_linger(0)?;
            if config.topics.is_empty() {
                s.set_subscribe(b"")?;
            }
            for t in &config.topics {
                s.set_subscribe(t.as_bytes())?;
            }
            s.connect(ep).with_context(|| {
                format!("bad endpoint {ep:?} (expected tcp://host:port or ipc://path)")
            })?;
            sockets.push(s);
        }
        Ok(Subscriber {
            sockets,
            endpoints: config.connect.clone(),
            next: 0,
            frames: Vec::new(),
        })
    }

    /// The endpoints, in source-index order.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// Receives one message without blocking, rotating fairly over sources.
    pub fn try_recv(&mut self) -> Result<Option<Received<'_>>> {
        let got = self.receive()?;
        Ok(self.received(got))
    }

    /// Waits up to `timeout` for a message.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Option<Received<'_>>> {
        let mut got = self.receive()?;
        if got.is_none() {
            let mut items: Vec<zmq::PollItem> = self
                .sockets
                .iter()
                .map(|s| s.as_poll_item(zmq::POLLIN))
                .collect();
            match zmq::poll(&mut items, timeout.as_millis() as i64) {
                Ok(_) | Err(zmq::Error::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
            drop(items);
            got = self.receive()?;
        }
        Ok(self.received(got))
    }

    fn received(&self, got: Option<(usize, usize)>) -> Option<Received<'_>> {
        got.map(|(source, frames)| Received {
            source,
            frames: &self.frames[..frames],
        })
    }

    /// Receives one message into `self.frames` without blocking: `(source, frames)`.
    fn receive(&mut self) -> Result<Option<(usize, usize)>> {
        let n = self.sockets.len();
        for k in 0..n {
            let i = (self.next + k) % n;
            match recv_frames(&self.sockets[i], &mut self.frames) {
                Ok(count) => {
                    self.next = (i + 1) % n;
                    return Ok(Some((i, count)));
                }
                Err(zmq::Error::EAGAIN) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(None)
    }
}

/// Receives the frames of one message into reused buffers, growing `frames` as needed;
/// returns how many there are. Only the first frame can be missing (`EAGAIN`): ZeroMQ
/// delivers the frames of a message together.
fn recv_frames(socket: &zmq::Socket, frames: &mut Vec<zmq::Message>) -> zmq::Result<usize> {
    let mut count = 0;
    loop {
        if frames.len() == count {
            frames.push(zmq::Message::new());
        }
        let flags = if count == 0 { zmq::DONTWAIT } else { 0 };
        again_if_interrupted(|| socket.recv(&mut frames[count], flags))?;
        count += 1;
        if !frames[count - 1].get_more() {
            return Ok(count);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_topic_filter_still_subscribes_to_heartbeats_and_end_of_stream() {
        let prefixes = vec!["trade.".to_string()];
        assert_eq!(with_control_topics(&prefixes), ["trade.", "hb.", "eos."]);
        // Empty means everything; a prefix that already covers a control topic is kept once.
        assert!(with_control_topics(&[]).is_empty());
        let prefixes = vec!["book.".to_string(), "h".to_string()];
        assert_eq!(with_control_topics(&prefixes), ["book.", "h", "eos."]);
    }
}
