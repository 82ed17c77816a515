//! The bound PUB/XPUB socket: `[topic, payload]` messages, lossless (`Block`) or not,
//! the wait for subscribers at start and the drain at close.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::peers::Peers;
use super::{BLOCK_LINGER_MS, Backpressure, SlowSubscriber, again_if_interrupted};
use crate::event::Event;
use crate::wire;

/// Publisher configuration.
#[derive(Clone, Debug)]
pub struct PublisherConfig {
    /// Endpoints to bind, e.g. `tcp://127.0.0.1:5555` or `ipc:///tmp/tt.sock`.
    pub bind: Vec<String>,
    /// Drop or block on slow subscribers.
    pub backpressure: Backpressure,
    /// Send high-water mark in messages per subscriber.
    pub send_hwm: i32,
    /// Payload encoding of [`Publisher::send`].
    pub encoding: wire::Encoding,
}

impl Default for PublisherConfig {
    fn default() -> PublisherConfig {
        PublisherConfig {
            bind: vec!["tcp://127.0.0.1:5555".into()],
            backpressure: Backpressure::Drop,
            send_hwm: 1_000_000,
            encoding: wire::Encoding::Json,
        }
    }
}

/// Counters of a publisher.
#[derive(Clone, Debug, Default)]
pub struct PublisherStats {
    /// Messages sent.
    pub sent: u64,
    /// Payload bytes sent.
    pub bytes: u64,
    /// Times a send had to wait for a slow subscriber (only with [`Backpressure::Block`]).
    pub stalls: u64,
    /// Total time spent waiting for slow subscribers.
    pub stalled: Duration,
    /// Subscription messages seen (XPUB only).
    pub subscriptions: u64,
}

/// A bound PUB/XPUB socket sending `[topic, payload]` messages.
pub struct Publisher {
    socket: zmq::Socket,
    monitor: Option<zmq::Socket>,
    endpoints: Vec<String>,
    backpressure: Backpressure,
    /// Once raised, a no-drop send stops waiting for slow subscribers.
    give_up: Option<crate::shutdown::Stop>,
    connected: i64,
    peers: Peers,
    stats: PublisherStats,
    topic_buf: String,
    payload_buf: Vec<u8>,
    encoding: wire::Encoding,
}

fn set_int_option(socket: &mut zmq::Socket, option: u32, value: i32) -> Result<()> {
    // The zmq crate does not wrap ZMQ_XPUB_NODROP; set it through libzmq directly.
    let rc = unsafe {
        zmq_sys::zmq_setsockopt(
            socket.as_mut_ptr(),
            option as std::os::raw::c_int,
            &value as *const i32 as *const std::os::raw::c_void,
            std::mem::size_of::<i32>(),
        )
    };
    if rc != 0 {
        bail!("zmq_setsockopt({option}) failed");
    }
    Ok(())
}

/// A message's payload copied into a libzmq message before its turn (an allocation and
/// a copy), for [`Publisher::send_prepared`]: a paced replay prepares each payload as
/// it reads it ahead, and at the due time the burst's sends only queue the messages.
/// Measured on this project's VM (docs/BENCHMARKS.md, session 29): 190–220 ns a send at
/// the median against 230–261 ns for [`Publisher::send_raw`] of the same messages.
pub struct Prepared(zmq::Message);

impl Prepared {
    /// `payload`, copied.
    pub fn new(payload: &[u8]) -> Prepared {
        Prepared(zmq::Message::from(payload))
    }

    /// The payload.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl Publisher {
    /// Binds a publisher; `tcp://host:0` picks a free port (see [`Publisher::endpoints`]).
    pub fn bind(ctx: &zmq::Context, config: &PublisherConfig) -> Result<Publisher> {
        // Always XPUB: it behaves like PUB but also tells us who subscribed, which the
        // slow-joiner wait needs. Only `Block` turns on NODROP.
        let mut socket = ctx.socket(zmq::XPUB)?;
        socket.set_sndhwm(config.send_hwm)?;
        if config.backpressure == Backpressure::Drop {
            // Live data: absorb bursts in the kernel rather than drop at the HWM.
            socket.set_sndbuf(8 << 20)?;
        }
        socket.set_xpub_verbose(true)?;
        if config.backpressure == Backpressure::Block {
            set_int_option(&mut socket, zmq_sys::ZMQ_XPUB_NODROP, 1)?;
            // What is queued at the end still reaches slow subscribers: closing waits for
            // them (a subscriber that disconnects is not waited for).
            socket.set_linger(BLOCK_LINGER_MS)?;
        } else {
            socket.set_linger(2000)?;
        }
        let addr = format!("inproc://tt-monitor-{}", unique_id());
        socket.monitor(
            &addr,
            (zmq::SocketEvent::ACCEPTED.to_raw() | zmq::SocketEvent::DISCONNECTED.to_raw()) as i32,
        )?;
        let mon = ctx.socket(zmq::PAIR)?;
        mon.connect(&addr)?;
        let monitor = Some(mon);
        let mut endpoints = Vec::new();
        for ep in &config.bind {
            socket.bind(ep).with_context(|| {
                format!("cannot bind publisher to {ep} (in use? try another port or ipc:// path)")
            })?;
            let actual = socket.get_last_endpoint()?.unwrap_or_else(|_| ep.clone());
            endpoints.push(actual);
        }
        Ok(Publisher {
            socket,
            monitor,
            endpoints,
            backpressure: config.backpressure,
            give_up: None,
            connected: 0,
            peers: Peers::default(),
            stats: PublisherStats::default(),
            topic_buf: String::with_capacity(64),
            payload_buf: Vec::with_capacity(256),
            encoding: config.encoding,
        })
    }

    /// The endpoints actually bound (with real ports).
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// Counters so far.
    pub fn stats(&self) -> &PublisherStats {
        &self.stats
    }

    /// Who the stalls waited for (only with [`Backpressure::Block`]), most waited first.
    pub fn slow_subscribers(&self) -> Vec<SlowSubscriber> {
        self.peers.slowest()
    }

    /// Connected subscribers.
    pub fn connected(&mut self) -> i64 {
        self.drain_control();
        self.connected
    }

    fn drain_control(&mut self) {
        if let Some(mon) = &self.monitor {
            while let Ok(frames) = mon.recv_multipart(zmq::DONTWAIT) {
                // First frame: the event (u16) and its value (u32, here the descriptor).
                if let Some(first) = frames.first().filter(|f| f.len() >= 6) {
                    let event = u16::from_le_bytes([first[0], first[1]]);
                    let fd = i32::from_le_bytes([first[2], first[3], first[4], first[5]]);
                    if event == zmq::SocketEvent::ACCEPTED.to_raw() {
                        self.connected += 1;
                        if self.backpressure == Backpressure::Block {
                            self.peers.accepted(fd);
                        }
                    } else if event == zmq::SocketEvent::DISCONNECTED.to_raw() {
                        self.connected -= 1;
                        self.peers.disconnected(fd);
                    }
                }
            }
        }
        while let Ok(msg) = self.socket.recv_bytes(zmq::DONTWAIT) {
            if msg.first() == Some(&1) {
                self.stats.subscriptions += 1;
            }
        }
    }

    /// Waits until `n` subscribers are connected and have subscribed (ZeroMQ's
    /// slow-joiner problem: messages sent before a subscription arrives are lost).
    /// Returns false on timeout or when `stop` says so.
    pub fn wait_for_subscribers(
        &mut self,
        n: usize,
        timeout: Duration,
        stop: &dyn Fn() -> bool,
    ) -> Result<bool> {
        if n == 0 {
            return Ok(true);
        }
        let deadline = Instant::now() + timeout;
        loop {
            self.drain_control();
            if self.connected >= n as i64 && self.stats.subscriptions >= n as u64 {
                // Subscriptions are processed by libzmq's I/O thread; let them settle.
                std::thread::sleep(Duration::from_millis(50));
                self.drain_control();
                return Ok(true);
            }
            if Instant::now() >= deadline || stop() {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Makes closing return at once, dropping what subscribers have not taken yet
    /// (normally a no-drop publisher's close waits for them, up to two minutes).
    fn discard_queued_on_close(&mut self) -> Result<()> {
        self.socket.set_linger(0)?;
        Ok(())
    }

    /// Once `stop` is raised, a no-drop send stops waiting for a slow subscriber: the
    /// message is dropped and closing no longer waits (whoever raised it wants out).
    pub fn give_up_waiting_on(&mut self, stop: crate::shutdown::Stop) {
        self.give_up = Some(stop);
    }

    /// Waits until every subscriber has taken what the kernel still holds for it, so a
    /// hung subscriber is named instead of silently holding the close. After a short
    /// grace, calls `waiting` with who is behind (about every 100 ms). Gives up after
    /// `limit` or once `stop` is raised, dropping the rest; returns who was still behind
    /// then. Only meaningful for [`Backpressure::Block`].
    pub fn drain(
        &mut self,
        limit: Duration,
        stop: &crate::shutdown::Stop,
        mut waiting: impl FnMut(&[String]),
    ) -> Result<Vec<String>> {
        let started = Instant::now();
        loop {
            self.drain_control();
            let behind = self.peers.behind();
            if behind.is_empty() {
                return Ok(behind);
            }
            if started.elapsed() >= limit || stop.is_set() {
                self.discard_queued_on_close()?;
                return Ok(behind);
            }
            if started.elapsed() >= Duration::from_millis(500) {
                waiting(&behind);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sends an already encoded message.
    pub fn send_raw(&mut self, topic: &[u8], payload: &[u8]) -> Result<()> {
        // Only a message's first frame can meet a full queue; the rest go with it.
        if !self.send_frame(topic, zmq::SNDMORE)? {
            return Ok(());
        }
        self.send_frame(payload, 0)?;
        self.stats.sent += 1;
        self.stats.bytes += payload.len() as u64;
        Ok(())
    }

    /// Sends a message whose payload was copied into a libzmq message ahead
    /// ([`Prepared`]): the send then only queues it, with no allocation or copy. The
    /// topic frame goes as in [`Self::send_raw`] (it is small enough for libzmq to keep
    /// inline, and only it can meet a full queue). `payload` is the same bytes, sent as
    /// [`Self::send_raw`] sends them should the prepared message be refused (the zmq
    /// crate drops a message whose send fails).
    pub fn send_prepared(
        &mut self,
        topic: &[u8],
        payload: &[u8],
        prepared: Prepared,
    ) -> Result<()> {
        if !self.send_frame(topic, zmq::SNDMORE)? {
            return Ok(());
        }
        debug_assert_eq!(prepared.as_bytes(), payload);
        match self.socket.send(prepared.0, zmq::DONTWAIT) {
            Err(zmq::Error::EINTR | zmq::Error::EAGAIN) => {
                self.send_frame(payload, 0)?;
            }
            sent => sent.context("publish failed")?,
        }
        self.stats.sent += 1;
        self.stats.bytes += payload.len() as u64;
        Ok(())
    }

    /// Sends one frame; false when it was dropped because of [`Self::give_up_waiting_on`].
    fn send_frame(&mut self, data: &[u8], flags: i32) -> Result<bool> {
        match again_if_interrupted(|| self.socket.send(data, flags | zmq::DONTWAIT)) {
            Ok(()) => Ok(true),
            Err(zmq::Error::EAGAIN) if self.backpressure == Backpressure::Block => {
                // A subscriber's queue is full: wait for it (never drop in replay).
                let started = Instant::now();
                self.stats.stalls += 1;
                self.drain_control();
                let culprit = self.peers.fullest();
                // XPUB reports POLLOUT even when NODROP refuses a send, so polling would
                // spin a core the slow subscriber needs: back off from yields to sleeps.
                let mut attempts = 0u32;
                let sent = loop {
                    self.drain_control();
                    if self.give_up.as_ref().is_some_and(|s| s.is_set()) {
                        self.discard_queued_on_close()?;
                        break false;
                    }
                    match again_if_interrupted(|| self.socket.send(data, flags | zmq::DONTWAIT)) {
                        Ok(()) => break true,
                        Err(zmq::Error::EAGAIN) => {
                            attempts += 1;
                            if attempts < 64 {
                                std::thread::yield_now();
                            } else {
                                let pause = 50u64 << (attempts - 64).min(4);
                                std::thread::sleep(Duration::from_micros(pause));
                            }
                        }
                        Err(e) => return Err(e.into()),
                    }
                };
                let waited = started.elapsed();
                self.stats.stalled += waited;
                if let Some(fd) = culprit {
                    self.peers.charge(fd, waited);
                }
                Ok(sent)
            }
            // PUB never returns EAGAIN (it drops), so this is a real error.
            Err(e) => Err(e).context("publish failed"),
        }
    }

    /// Encodes and sends one event.
    pub fn send(&mut self, event: &Event) -> Result<()> {
        let mut topic = std::mem::take(&mut self.topic_buf);
        topic.clear();
        wire::write_topic(event, &mut topic);
        let result = self.send_on(&topic, event);
        self.topic_buf = topic;
        result
    }

    /// Like [`Self::send`] with the event's topic already built (by a [`Sequencer`](super::Sequencer)).
    pub fn send_on(&mut self, topic: &str, event: &Event) -> Result<()> {
        let mut payload = std::mem::take(&mut self.payload_buf);
        payload.clear();
        wire::encode_as(self.encoding, event, &mut payload);
        let result = self.send_raw(topic.as_bytes(), &payload);
        self.payload_buf = payload;
        result
    }
}

fn unique_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}
