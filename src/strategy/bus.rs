//! The bus driver: runs a [`Strategy`] against the ZeroMQ bus (market data, fills and
//! order updates) and the order gateway (DEALER), answering lockstep step markers after
//! everything before them was handled and its orders were sent. The same binary trades
//! paper-live and in backtests: only endpoints change.
//!
//! Owns the sockets and the JSON shape of requests on the wire (`docs/EXCHANGE.md`);
//! what the strategy sees is the [`Dispatcher`]'s business. Malformed messages are never
//! guessed at: they are counted in [`RunnerStats`] and skipped, and a step marker that
//! cannot be read ends the run (acking a wrong step would break exactness).

use std::io::Write as _;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use super::{Dispatcher, QueuedRequest, Strategy};
use crate::bus::again_if_interrupted;
use crate::event::{Body, Interner};
use crate::exchange::matching::OrderRequest;
use crate::exchange::protocol::{ExchangeOutput, Reply, Request};
use crate::shutdown::Stop;
use crate::wire;

/// Where the runner connects.
#[derive(Clone, Debug)]
pub struct RunnerConfig {
    /// Strategy name (also the prefix of client order ids).
    pub name: String,
    /// Bus endpoints (market data and fills).
    pub bus: Vec<String>,
    /// Order gateway endpoint.
    pub gateway: String,
    /// Take part in lockstep (ack step markers).
    pub lockstep: bool,
    /// Event-time interval of `on_timer`.
    pub timer: Duration,
    /// Stop when no message arrived for this long (a dead replay), if set.
    pub idle_timeout: Option<Duration>,
    /// The secret the gateway expects in `hello` (`ticktape run` puts it in the child's
    /// `TICKTAPE_TOKEN` environment variable), if it requires one.
    pub token: Option<String>,
}

impl RunnerConfig {
    /// A strategy process's configuration, not in lockstep: `on_timer` every second of
    /// event time, stop after two minutes without a message, and the gateway secret from
    /// [`crate::replay::gateway::TOKEN_ENV`] (where `ticktape run` puts it) if set.
    pub fn new(name: &str, bus: Vec<String>, gateway: String) -> RunnerConfig {
        RunnerConfig {
            name: name.to_string(),
            bus,
            gateway,
            lockstep: false,
            timer: Duration::from_secs(1),
            idle_timeout: Some(Duration::from_secs(120)),
            token: std::env::var(crate::replay::gateway::TOKEN_ENV).ok(),
        }
    }
}

/// What a strategy run did.
#[derive(Clone, Debug, Default)]
pub struct RunnerStats {
    /// Market events handled.
    pub events: u64,
    /// Fills received.
    pub fills: u64,
    /// Orders sent.
    pub orders: u64,
    /// Step markers acknowledged.
    pub acks: u64,
    /// Market-data payloads that could not be decoded (skipped).
    pub bad_events: u64,
    /// `fill.*` / `order.*` payloads that could not be read (skipped, not guessed).
    pub bad_exchange_messages: u64,
    /// Gateway replies that could not be read (skipped).
    pub bad_replies: u64,
}

/// How long the runner waits for a message before it checks the stop flag and idle timeout.
const IDLE_CHECK_MS: i32 = 100;

/// The part of a lockstep step marker the runner needs.
#[derive(serde::Deserialize)]
struct StepMarker {
    step: u64,
}

/// The JSON request for a queued order or cancel, decided at the driver's event time.
pub fn request_json(q: &QueuedRequest) -> Vec<u8> {
    let request = match &q.request {
        OrderRequest::New(o) => Request::New {
            client_order_id: o.client_order_id.clone(),
            venue: o.venue.to_string(),
            symbol: o.symbol.to_string(),
            side: o.side,
            order_type: o.order_type,
            tif: o.tif,
            price: o.price,
            size: o.size,
            decided_at: Some(q.decided_at),
        },
        OrderRequest::Cancel { client_order_id } => Request::Cancel {
            client_order_id: client_order_id.clone(),
            decided_at: Some(q.decided_at),
        },
    };
    // Plain strings and numbers: serializing cannot fail.
    serde_json::to_vec(&request).unwrap_or_default()
}

/// Where a runner's gateway requests go: the gateway DEALER, or the shared-memory up ring
/// (`strategy/shm.rs`). The only thing the driver loop and the transport share.
pub(crate) trait Requests {
    /// Sends one gateway frame (a request or a lockstep ack), in order.
    fn send_request(&mut self, body: &[u8]) -> Result<()>;
}

impl Requests for zmq::Socket {
    fn send_request(&mut self, body: &[u8]) -> Result<()> {
        again_if_interrupted(|| self.send(body, 0)).context("cannot send to the order gateway")
    }
}

/// The runner's state, over the transport `S` its requests go to.
pub(crate) struct Runner<'a, S: Requests> {
    pub(crate) dealer: S,
    pub(crate) dispatch: Dispatcher,
    pub(crate) strategy: &'a mut dyn Strategy,
    pub(crate) lockstep: bool,
    pub(crate) names: Interner,
    /// Gateway requests sent whose reply has not come back yet. While none is owed,
    /// only the bus can speak, and the runner blocks on it alone.
    pub(crate) replies_owed: u32,
    /// Reused buffer for lockstep acks.
    pub(crate) ack: Vec<u8>,
    /// Reused buffer for the requests taken after a callback.
    pub(crate) queued: Vec<QueuedRequest>,
    pub(crate) stats: RunnerStats,
}

impl<'a, S: Requests> Runner<'a, S> {
    /// A runner for `config`'s strategy, sending its hello on `dealer`.
    pub(crate) fn start(
        config: &RunnerConfig,
        mut dealer: S,
        strategy: &'a mut dyn Strategy,
    ) -> Result<Runner<'a, S>> {
        let hello = Request::Hello {
            strategy: config.name.clone(),
            lockstep: config.lockstep,
            token: config.token.clone(),
        };
        dealer.send_request(&serde_json::to_vec(&hello)?)?;
        Ok(Runner {
            dealer,
            dispatch: Dispatcher::new(&config.name, config.timer),
            strategy,
            lockstep: config.lockstep,
            names: Interner::default(),
            // The hello's welcome.
            replies_owed: 1,
            ack: Vec::with_capacity(48),
            queued: Vec::new(),
            stats: RunnerStats::default(),
        })
    }

    /// What the run did.
    pub(crate) fn finish(self) -> RunnerStats {
        let mut stats = self.stats;
        stats.events = self.dispatch.stats.events;
        stats.fills = self.dispatch.stats.fills;
        stats
    }

    /// Sends what the strategy queued during the last callback.
    fn send_queued(&mut self) -> Result<()> {
        if !self.dispatch.ctx.has_requests() {
            return Ok(());
        }
        self.queued.extend(self.dispatch.ctx.take_requests());
        for q in self.queued.drain(..) {
            self.dealer.send_request(&request_json(&q))?;
            self.replies_owed += 1;
            if matches!(q.request, OrderRequest::New(_)) {
                self.stats.orders += 1;
            }
        }
        Ok(())
    }

    /// Handles one gateway reply.
    pub(crate) fn on_reply(&mut self, bytes: &[u8]) -> Result<()> {
        self.replies_owed = self.replies_owed.saturating_sub(1);
        match serde_json::from_slice::<Reply>(bytes) {
            Ok(reply) => self.dispatch.reply(self.strategy, &reply)?,
            Err(_) => self.stats.bad_replies += 1,
        }
        self.send_queued()
    }

    /// Handles one bus message; true once the replay's end of stream has arrived.
    fn on_bus(&mut self, frames: &[Vec<u8>]) -> Result<bool> {
        let [topic, payload] = frames else {
            self.stats.bad_events += 1;
            return Ok(false);
        };
        self.on_message(topic, payload)
    }

    /// Handles one bus message `[topic, payload]`; true once the replay's end of stream
    /// has arrived.
    pub(crate) fn on_message(&mut self, topic: &[u8], payload: &[u8]) -> Result<bool> {
        if topic == b"step" {
            if self.lockstep {
                let step = match serde_json::from_slice::<StepMarker>(payload) {
                    Ok(m) => m.step,
                    Err(e) => bail!(
                        "lockstep step marker unreadable ({e}): {:?}; is the replay speaking this protocol version?",
                        String::from_utf8_lossy(payload)
                    ),
                };
                self.ack.clear();
                write!(self.ack, "{{\"type\":\"ack\",\"step\":{step}}}")?;
                self.dealer.send_request(&self.ack)?;
                self.stats.acks += 1;
            }
            return Ok(false);
        }
        if topic.starts_with(b"fill.") || topic.starts_with(b"order.") {
            match serde_json::from_slice::<ExchangeOutput>(payload) {
                Ok(output) => {
                    if self.dispatch.exchange(self.strategy, &output)? {
                        self.send_queued()?;
                    }
                }
                Err(_) => self.stats.bad_exchange_messages += 1,
            }
            return Ok(false);
        }
        let event = match wire::decode(payload, &mut self.names) {
            Ok(event) => event,
            Err(_) => {
                self.stats.bad_events += 1;
                return Ok(false);
            }
        };
        if let Body::EndOfStream(e) = &event.body {
            return Ok(e.replay);
        }
        self.dispatch.market(self.strategy, &event)?;
        self.send_queued()?;
        Ok(false)
    }
}

/// Runs `strategy` until end-of-stream of a replay, or `stop`. The transport follows the
/// endpoints: `shm:fd=N` (set by `ticktape run` with `transport = "shm"`) or
/// `shm:/proc/PID/fd/N` (printed by `ticktape replay --transport shm`) is the
/// shared-memory driver, anything else ZeroMQ.
pub fn run(config: &RunnerConfig, strategy: &mut dyn Strategy, stop: &Stop) -> Result<RunnerStats> {
    let shm = config
        .bus
        .iter()
        .chain(std::iter::once(&config.gateway))
        .find(|e| e.starts_with("shm:"));
    if let Some(endpoint) = shm {
        if config.bus.len() != 1 || config.bus[0] != config.gateway {
            bail!(
                "over shared memory the bus and the gateway are one segment: give the same shm:fd=N to --bus and --gateway (got {:?} and {:?})",
                config.bus,
                config.gateway
            );
        }
        return super::shm::run(config, strategy, stop, endpoint);
    }
    let zctx = crate::bus::context();
    let sub = zctx.socket(zmq::SUB)?;
    sub.set_rcvhwm(0)?;
    sub.set_linger(0)?;
    sub.set_rcvtimeo(IDLE_CHECK_MS)?;
    for prefix in ["book.", "trade.", "gap.", "fill.", "order.", "step", "eos."] {
        sub.set_subscribe(prefix.as_bytes())?;
    }
    for ep in &config.bus {
        sub.connect(ep)
            .with_context(|| format!("bad bus endpoint {ep}"))?;
    }
    let dealer = zctx.socket(zmq::DEALER)?;
    dealer.set_linger(1000)?;
    dealer
        .connect(&config.gateway)
        .with_context(|| format!("bad gateway endpoint {}", config.gateway))?;
    let mut r = Runner::start(config, dealer, strategy)?;
    let mut last_msg = Instant::now();
    let idle_check = |last_msg: Instant| -> Result<()> {
        if config.idle_timeout.is_some_and(|t| last_msg.elapsed() > t) {
            bail!(
                "no market data for {:?}: is the replay running?",
                config.idle_timeout
            );
        }
        Ok(())
    };
    loop {
        if stop.is_set() {
            break;
        }
        if r.replies_owed == 0 {
            // Only the bus can speak: a blocking receive costs no system call while
            // messages are queued, where polling and draining cost two per wake-up.
            match sub.recv_multipart(0) {
                Ok(frames) => {
                    last_msg = Instant::now();
                    if r.on_bus(&frames)? {
                        break;
                    }
                }
                // Timeout or a signal: loop round and let the stop flag decide.
                Err(zmq::Error::EAGAIN | zmq::Error::EINTR) => idle_check(last_msg)?,
                Err(e) => return Err(e.into()),
            }
            continue;
        }
        let mut items = [
            sub.as_poll_item(zmq::POLLIN),
            r.dealer.as_poll_item(zmq::POLLIN),
        ];
        match zmq::poll(&mut items, IDLE_CHECK_MS as i64) {
            Ok(_) => {}
            // A signal: loop round and let the stop flag decide.
            Err(zmq::Error::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
        let (sub_ready, dealer_ready) = (items[0].is_readable(), items[1].is_readable());
        if !sub_ready && !dealer_ready {
            idle_check(last_msg)?;
            continue;
        }
        last_msg = Instant::now();
        if dealer_ready {
            while let Ok(reply) = r.dealer.recv_bytes(zmq::DONTWAIT) {
                r.on_reply(&reply)?;
            }
        }
        if !sub_ready {
            continue;
        }
        // Drain the bus in order; step markers are acked after what precedes them.
        let mut ended = false;
        while let Ok(frames) = sub.recv_multipart(zmq::DONTWAIT) {
            ended = r.on_bus(&frames)?;
            if ended {
                break;
            }
        }
        if ended {
            break;
        }
    }
    Ok(r.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::{Context, Fill, OrderUpdate};

    /// Records what it was handed.
    #[derive(Default)]
    struct Seen {
        fills: Vec<String>,
        updates: usize,
    }

    impl Strategy for Seen {
        fn on_fill(&mut self, _ctx: &mut Context, fill: &Fill) -> Result<()> {
            self.fills
                .push(format!("{} {} {}", fill.side.name(), fill.price, fill.size));
            Ok(())
        }
        fn on_order(&mut self, _ctx: &mut Context, _u: &OrderUpdate) -> Result<()> {
            self.updates += 1;
            Ok(())
        }
    }

    fn fill(fields: &str) -> Vec<Vec<u8>> {
        let payload = format!(
            r#"{{"type":"fill","ts":5,"venue":"v","symbol":"s","order_id":1,"client_order_id":"me-1","fill_id":1,"fee":0.1,"liquidity":"maker"{fields}}}"#
        );
        vec![b"fill.v.s".to_vec(), payload.into_bytes()]
    }

    #[test]
    fn malformed_exchange_messages_and_markers_are_counted_or_refused_never_guessed() {
        let zctx = zmq::Context::new();
        let dealer = zctx.socket(zmq::DEALER).unwrap();
        let mut strategy = Seen::default();
        let mut r = Runner {
            dealer,
            dispatch: Dispatcher::new("me", Duration::from_secs(1)),
            strategy: &mut strategy,
            lockstep: true,
            names: Interner::default(),
            replies_owed: 0,
            ack: Vec::new(),
            queued: Vec::new(),
            stats: RunnerStats::default(),
        };
        let good = r#","strategy":"me","side":"buy","price":"100.5","size":"0.01""#;
        r.on_bus(&fill(good)).unwrap();
        // Before: a fill without a strategy went to every strategy, an unknown side was
        // a sell, an unreadable size was 0; now each is skipped and counted.
        for bad in [
            r#","side":"buy","price":"100.5","size":"0.01""#,
            r#","strategy":"me","side":"sideways","price":"100.5","size":"0.01""#,
            r#","strategy":"me","side":"buy","price":"100.5","size":"lots""#,
        ] {
            r.on_bus(&fill(bad)).unwrap();
        }
        let other = r#","strategy":"someone-else","side":"sell","price":"1","size":"1""#;
        r.on_bus(&fill(other)).unwrap();
        r.on_bus(&[b"book.v.s".to_vec(), b"{not json".to_vec()])
            .unwrap();
        r.on_bus(&[b"only one frame".to_vec()]).unwrap();
        assert_eq!(r.stats.bad_exchange_messages, 3);
        assert_eq!(r.stats.bad_events, 2);
        assert_eq!(r.dispatch.ctx.position("v", "s").to_string(), "0.01");
        // An unreadable step marker is an error, not an ack of step 0.
        let err = r
            .on_bus(&[b"step".to_vec(), br#"{"kind":"step","step":"x"}"#.to_vec()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("step marker unreadable"), "{err}");
        assert_eq!(r.stats.acks, 0);
        drop(r);
        assert_eq!(strategy.fills, vec!["buy 100.5 0.01".to_string()]);
        assert_eq!(strategy.updates, 0);
    }
}
