//! ZeroMQ sockets of the bus: the publisher (optionally lossless), subscribers that
//! know which publisher each message came from, per-topic sequencing and heartbeats.
//!
//! Owns socket options and the subscriber handshake. Never interprets events beyond
//! their topic: business logic lives in the sources and sinks.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::event::{Body, Event, Heartbeat, now_nanos};
use crate::wire;

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
const BLOCK_LINGER_MS: i32 = 120_000;
/// The same limit for [`Publisher::drain`].
pub const DRAIN_LIMIT: Duration = Duration::from_millis(BLOCK_LINGER_MS as u64);

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

/// A subscriber a no-drop publisher had to wait for.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct SlowSubscriber {
    /// `tcp 127.0.0.1:53122` or, over ipc, `pid 4242 (python3)`.
    pub peer: String,
    /// Stalls charged to it.
    pub stalls: u64,
    /// Seconds waited for it.
    pub secs: f64,
}

/// The subscriber connections of a publisher, by file descriptor, to name who a stall
/// waits for: the one whose kernel send queue is fullest.
#[derive(Default)]
struct Peers {
    open: HashMap<i32, SlowSubscriber>,
    closed: Vec<SlowSubscriber>,
}

impl Peers {
    fn accepted(&mut self, fd: i32) {
        let peer = peer_name(fd);
        self.open.insert(
            fd,
            SlowSubscriber {
                peer,
                ..SlowSubscriber::default()
            },
        );
    }

    fn disconnected(&mut self, fd: i32) {
        if let Some(p) = self.open.remove(&fd)
            && p.stalls > 0
        {
            self.closed.push(p);
        }
    }

    /// The connection with the most bytes the kernel has not sent yet (with a single
    /// subscriber, that one: its backlog may still sit in libzmq's queue).
    fn fullest(&self) -> Option<i32> {
        if self.open.len() == 1 {
            return self.open.keys().next().copied();
        }
        self.open
            .keys()
            .map(|&fd| (unsent_bytes(fd), fd))
            .filter(|&(bytes, _)| bytes > 0)
            .max()
            .map(|(_, fd)| fd)
    }

    fn charge(&mut self, fd: i32, waited: Duration) {
        if let Some(p) = self.open.get_mut(&fd) {
            p.stalls += 1;
            p.secs += waited.as_secs_f64();
        }
    }

    fn slowest(&self) -> Vec<SlowSubscriber> {
        let mut all: Vec<SlowSubscriber> = self
            .open
            .values()
            .filter(|p| p.stalls > 0)
            .chain(&self.closed)
            .cloned()
            .collect();
        all.sort_by(|a, b| b.secs.total_cmp(&a.secs));
        all
    }
}

/// Bytes queued in the kernel for a socket and not yet sent (`SIOCOUTQ`); 0 if unknown.
/// The descriptor is libzmq's; asking about it changes nothing.
fn unsent_bytes(fd: i32) -> i64 {
    let mut queued: libc::c_int = 0;
    // SAFETY: TIOCOUTQ writes one int through the pointer; a stale descriptor only
    // makes the call fail.
    let rc = unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut queued) };
    if rc == 0 { queued as i64 } else { 0 }
}

/// Who is at the other end of a subscriber connection: the address for TCP, the process
/// for a Unix socket (whose client address is anonymous).
fn peer_name(fd: i32) -> String {
    // SAFETY: both calls only write into the buffers given with their sizes.
    unsafe {
        let mut cred: libc::ucred = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
        let mut addr: libc::sockaddr_storage = std::mem::zeroed();
        let mut addr_len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        if libc::getpeername(
            fd,
            &mut addr as *mut _ as *mut libc::sockaddr,
            &mut addr_len,
        ) == 0
        {
            match addr.ss_family as i32 {
                libc::AF_INET => {
                    let a = &*(&addr as *const _ as *const libc::sockaddr_in);
                    let ip = std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
                    return format!("tcp {ip}:{}", u16::from_be(a.sin_port));
                }
                libc::AF_INET6 => {
                    let a = &*(&addr as *const _ as *const libc::sockaddr_in6);
                    let ip = std::net::Ipv6Addr::from(a.sin6_addr.s6_addr);
                    return format!("tcp [{ip}]:{}", u16::from_be(a.sin6_port));
                }
                _ => {}
            }
        }
        if libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            &mut cred as *mut _ as *mut libc::c_void,
            &mut len,
        ) == 0
            && cred.pid > 0
        {
            let comm = std::fs::read_to_string(format!("/proc/{}/comm", cred.pid))
                .map(|c| format!(" ({})", c.trim()))
                .unwrap_or_default();
            return format!("pid {}{comm}", cred.pid);
        }
    }
    format!("connection fd {fd}")
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
            let behind: Vec<String> = self
                .peers
                .open
                .iter()
                .map(|(&fd, p)| (unsent_bytes(fd), &p.peer))
                .filter(|&(bytes, _)| bytes > 0)
                .map(|(bytes, peer)| format!("{peer} ({bytes} bytes unsent)"))
                .collect();
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

    /// Sends one frame; false when it was dropped because of [`Self::give_up_waiting_on`].
    fn send_frame(&mut self, data: &[u8], flags: i32) -> Result<bool> {
        match self.socket.send(data, flags | zmq::DONTWAIT) {
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
                    match self.socket.send(data, flags | zmq::DONTWAIT) {
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

    /// Like [`Self::send`] with the event's topic already built (by a [`Sequencer`]).
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

/// Numbers events per topic: the publisher's `pub_seq`, starting at 1 on each topic.
#[derive(Default)]
pub struct Sequencer {
    next: rustc_hash::FxHashMap<String, u64>,
    topic: String,
}

impl Sequencer {
    /// Stamps `event.pub_seq` with the next number of its topic, and returns the topic
    /// (for [`Publisher::send_on`], so it is built once per event).
    pub fn stamp(&mut self, event: &mut Event) -> &str {
        self.topic.clear();
        wire::write_topic(event, &mut self.topic);
        let seq = match self.next.get_mut(self.topic.as_str()) {
            Some(seq) => seq,
            None => self.next.entry(self.topic.clone()).or_insert(0),
        };
        *seq += 1;
        event.pub_seq = *seq;
        &self.topic
    }
}

/// Emits a heartbeat on `hb.<publisher>` every interval.
pub struct HeartbeatTimer {
    publisher: String,
    interval: Duration,
    replay: bool,
    last: Option<Instant>,
    seq: u64,
}

impl HeartbeatTimer {
    /// A timer for `publisher` beating every `interval`.
    pub fn new(publisher: &str, interval: Duration, replay: bool) -> HeartbeatTimer {
        HeartbeatTimer {
            publisher: publisher.to_string(),
            interval,
            replay,
            last: None,
            seq: 0,
        }
    }

    /// Sends a heartbeat if one is due.
    pub fn tick(&mut self, publisher: &mut Publisher) -> Result<()> {
        match self.due() {
            Some(beat) => publisher.send(&beat),
            None => Ok(()),
        }
    }

    /// Sends a heartbeat to every outlet if one is due.
    pub fn tick_outlets(&mut self, outlets: &mut Outlets) -> Result<()> {
        match self.due() {
            Some(beat) => outlets.send(&beat),
            None => Ok(()),
        }
    }

    /// The heartbeat to send now, if one is due.
    pub fn due(&mut self) -> Option<Event> {
        if self.last.is_some_and(|t| t.elapsed() < self.interval) {
            return None;
        }
        self.last = Some(Instant::now());
        self.seq += 1;
        let now = now_nanos();
        let beat = Event {
            venue: "".into(),
            symbol: "".into(),
            ts_event: now,
            ts_recv: now,
            venue_seq: None,
            prev_venue_seq: None,
            pub_seq: self.seq,
            body: Body::Heartbeat(Heartbeat {
                publisher: self.publisher.clone(),
                interval_ms: self.interval.as_millis() as u64,
                replay: self.replay,
            }),
        };
        Some(beat)
    }
}

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
    /// Sends `event` on `topic` (built by a [`Sequencer`]) to every outlet.
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
        socket.recv(&mut frames[count], flags)?;
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
