//! The order gateway: a ROUTER socket strategies connect a DEALER to, the `hello` / `ack`
//! bookkeeping of lockstep, and the hand-off of order requests to the [`VenueHost`].
//!
//! Owns who is connected, which step each strategy acknowledged (and at what event time),
//! and the rule that decision time belongs to the harness: an order may not be dated
//! before the last step its strategy acknowledged (lockstep) or before the host's current
//! time (no lockstep, paper). Earlier dates are moved up to that bound and counted in
//! [`GatewayStats::backdated`], so a strategy that reads ahead cannot back-date an order
//! into a fill it could not have had. Never publishes market data.
//!
//! # Who may trade as whom
//! A strategy's name is bound to its connection by its `hello`: requests from a
//! connection that has not said hello are refused, a name already connected cannot be
//! claimed by another connection, and a connection cannot change its name. When the
//! gateway has [`Tokens`] (always under `ticktape run`, which hands each strategy process
//! its own secret in [`TOKEN_ENV`]; `paper --token NAME=SECRET`), the hello must carry the
//! name's secret. See `docs/RELIABILITY.md` for the trust model.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::time::Duration;

use anyhow::{Context, Result};

use super::{Outbox, VenueHost};
use crate::bus::again_if_interrupted;
use crate::event::UnixNanos;

/// The environment variable a strategy process finds its gateway secret in.
pub const TOKEN_ENV: &str = "TICKTAPE_TOKEN";

/// Strategy name → secret; a gateway with tokens admits only hellos that carry the
/// name's secret.
#[derive(Clone, Debug, Default)]
pub struct Tokens(HashMap<String, String>);

impl Tokens {
    /// A fresh random secret (128 bits from the OS, hex) for each name.
    pub fn generate<'a>(names: impl IntoIterator<Item = &'a str>) -> Tokens {
        use rand::RngCore;
        Tokens(
            names
                .into_iter()
                .map(|n| {
                    let mut bytes = [0u8; 16];
                    rand::rngs::OsRng.fill_bytes(&mut bytes);
                    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                    (n.to_string(), hex)
                })
                .collect(),
        )
    }

    /// Tokens given as `NAME=SECRET`.
    pub fn parse<'a>(pairs: impl IntoIterator<Item = &'a str>) -> Result<Tokens> {
        let mut map = HashMap::new();
        for pair in pairs {
            let Some((name, secret)) = pair.split_once('=') else {
                anyhow::bail!("bad token {pair:?}: give NAME=SECRET");
            };
            if name.is_empty() || secret.len() < 8 {
                anyhow::bail!(
                    "bad token for {name:?}: the name must not be empty and the secret must have at least 8 characters"
                );
            }
            map.insert(name.to_string(), secret.to_string());
        }
        Ok(Tokens(map))
    }

    /// The secret of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// True when no name has a secret (the gateway then admits any name once).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// True when `secret` is the secret of `name` (compared in constant time).
    fn admits(&self, name: &str, secret: Option<&str>) -> bool {
        let (Some(want), Some(got)) = (self.0.get(name), secret) else {
            return false;
        };
        want.len() == got.len()
            && want
                .bytes()
                .zip(got.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

/// The fields of a gateway request the gateway itself reads; the rest is the exchange's.
#[derive(Default, serde::Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<std::borrow::Cow<'a, str>>,
    step: Option<u64>,
    #[serde(borrow)]
    strategy: Option<std::borrow::Cow<'a, str>>,
    decided_at: Option<UnixNanos>,
    #[serde(borrow)]
    token: Option<std::borrow::Cow<'a, str>>,
}

pub(crate) struct Strategy {
    pub(crate) name: String,
    acked: u64,
    /// Event time of the step `acked`: no order of this strategy may be dated earlier.
    acked_ts: UnixNanos,
    pub(crate) waited: Duration,
}

/// What the gateway handled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct GatewayStats {
    /// Requests received (hellos and acks included).
    pub requests: u64,
    /// Requests refused: no hello first, a name already connected, a missing or wrong
    /// token.
    pub refused: u64,
    /// Orders and cancels dated before the last step their strategy acknowledged (or
    /// before the host's clock without lockstep), moved up to that time.
    pub backdated: u64,
}

/// Where requests come from and replies go.
enum Source {
    /// A ROUTER socket (frames `[identity, body]`).
    Router(zmq::Socket),
    /// The strategies' shared-memory up rings; replies go into their down rings
    /// (identities are [`crate::shm::Hub::identity`]).
    Shm {
        hub: Rc<RefCell<crate::shm::Hub>>,
        /// Reused copy of the request being handled.
        buf: Vec<u8>,
    },
}

/// The gateway (a ROUTER, or shared memory) and the lockstep bookkeeping (shared with
/// paper trading).
pub(crate) struct Gateway {
    source: Source,
    pub(crate) strategies: HashMap<Vec<u8>, Strategy>,
    lockstep: usize,
    /// Step markers sent and their event times, oldest first, while a strategy may
    /// still acknowledge them.
    markers: VecDeque<(u64, UnixNanos)>,
    /// Secrets hellos must carry (empty: any name, once).
    tokens: Tokens,
    stats: GatewayStats,
}

impl Gateway {
    /// Binds a gateway ROUTER at `endpoint`.
    pub(crate) fn bind(ctx: &zmq::Context, endpoint: &str, lockstep: usize) -> Result<Gateway> {
        let socket = ctx.socket(zmq::ROUTER)?;
        socket.set_linger(1000)?;
        socket
            .bind(endpoint)
            .with_context(|| format!("cannot bind gateway to {endpoint}"))?;
        Ok(Gateway::new(Source::Router(socket), lockstep))
    }

    /// A gateway reading requests from `hub`'s up rings and answering into its down rings.
    pub(crate) fn over_shm(hub: Rc<RefCell<crate::shm::Hub>>, lockstep: usize) -> Gateway {
        Gateway::new(
            Source::Shm {
                hub,
                buf: Vec::with_capacity(256),
            },
            lockstep,
        )
    }

    fn new(source: Source, lockstep: usize) -> Gateway {
        Gateway {
            source,
            strategies: HashMap::new(),
            lockstep,
            markers: VecDeque::new(),
            tokens: Tokens::default(),
            stats: GatewayStats::default(),
        }
    }

    /// Counters so far.
    pub(crate) fn stats(&self) -> GatewayStats {
        self.stats
    }

    /// Requires every hello to carry its name's secret from `tokens`.
    pub(crate) fn require(&mut self, tokens: Tokens) {
        self.tokens = tokens;
    }

    /// Why a hello for `name` from `identity` is refused, if it is.
    fn refuse_hello(&self, identity: &[u8], name: &str, token: Option<&str>) -> Option<String> {
        if name.is_empty() {
            return Some("hello needs a strategy name".into());
        }
        if let Some(s) = self.strategies.get(identity) {
            if s.name != name {
                return Some(format!(
                    "this connection already said hello as {:?}; one connection is one strategy",
                    s.name
                ));
            }
            return None;
        }
        if self.strategies.values().any(|s| s.name == name) {
            return Some(format!(
                "strategy {name:?} is already connected from another connection"
            ));
        }
        if !self.tokens.is_empty() && !self.tokens.admits(name, token) {
            return Some(format!(
                "strategy {name:?}: missing or wrong token (a strategy started by ticktape finds it in ${TOKEN_ENV})"
            ));
        }
        None
    }

    /// Notes that step marker `step` went out for the events up to `ts`.
    pub(crate) fn marker_sent(&mut self, step: u64, ts: UnixNanos) {
        self.markers.push_back((step, ts));
        // Markers every strategy has acknowledged are no longer needed.
        let oldest = self.min_acked();
        while self.markers.len() > 1 && self.markers.front().is_some_and(|&(s, _)| s < oldest) {
            self.markers.pop_front();
        }
    }

    /// The event time of step `step`, if it is still known.
    fn marker_ts(&self, step: u64) -> Option<UnixNanos> {
        let (first, _) = *self.markers.front()?;
        let i = usize::try_from(step.checked_sub(first)?).ok()?;
        self.markers.get(i).map(|&(_, ts)| ts)
    }

    /// Handles every pending request; blocks up to `timeout` for the first. `now` is the
    /// host's current event time.
    pub(crate) fn pump(
        &mut self,
        host: &mut Option<&mut dyn VenueHost>,
        now: UnixNanos,
        out: &mut Outbox,
        timeout: Duration,
    ) -> Result<()> {
        if let Source::Shm { hub, buf } = &mut self.source {
            let hub = hub.clone();
            let mut buf = std::mem::take(buf);
            if timeout > Duration::ZERO {
                hub.borrow_mut().wait_requests(timeout)?;
            }
            let mut result = Ok(());
            loop {
                let identity = match hub.borrow_mut().next_request(&mut buf) {
                    Ok(Some(identity)) => identity,
                    Ok(None) => break,
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                };
                if let Err(e) = self.handle(host, now, out, &identity, &buf) {
                    result = Err(e);
                    break;
                }
            }
            if let Source::Shm { buf: b, .. } = &mut self.source {
                *b = buf;
            }
            return result;
        }
        let Source::Router(socket) = &self.source else {
            return Ok(());
        };
        if timeout > Duration::ZERO {
            match socket.poll(zmq::POLLIN, timeout.as_millis().max(1) as i64) {
                // A signal (Ctrl-C): the caller's loop checks its stop flag.
                Ok(_) | Err(zmq::Error::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        loop {
            let Source::Router(socket) = &self.source else {
                return Ok(());
            };
            let frames = match socket.recv_multipart(zmq::DONTWAIT) {
                Ok(f) => f,
                Err(zmq::Error::EAGAIN | zmq::Error::EINTR) => return Ok(()),
                Err(e) => return Err(e.into()),
            };
            let (Some(identity), Some(body)) = (frames.first(), frames.last()) else {
                continue;
            };
            self.handle(host, now, out, identity, body)?;
        }
    }

    /// Handles one request `body` from `identity`: hello, ack, or a request for the host.
    fn handle(
        &mut self,
        host: &mut Option<&mut dyn VenueHost>,
        now: UnixNanos,
        out: &mut Outbox,
        identity: &[u8],
        body: &[u8],
    ) -> Result<()> {
        {
            self.stats.requests += 1;
            let envelope: Envelope<'_> = serde_json::from_slice(body).unwrap_or_default();
            match envelope.kind.as_deref() {
                Some("hello") => {
                    let name = envelope.strategy.as_deref().unwrap_or("").to_string();
                    if let Some(reason) =
                        self.refuse_hello(identity, &name, envelope.token.as_deref())
                    {
                        self.stats.refused += 1;
                        let reply = serde_json::json!({"type": "error", "reason": reason});
                        self.reply(identity, reply.to_string().as_bytes())?;
                        return Ok(());
                    }
                    if self.strategies.contains_key(identity) {
                        // A repeated hello: answered, nothing changes.
                        let reply = serde_json::json!({"type": "welcome", "strategy": name,
                            "lockstep": self.lockstep > 0});
                        self.reply(identity, reply.to_string().as_bytes())?;
                        return Ok(());
                    }
                    self.strategies.insert(
                        identity.to_vec(),
                        Strategy {
                            name: name.clone(),
                            acked: 0,
                            acked_ts: UnixNanos::MIN,
                            waited: Duration::ZERO,
                        },
                    );
                    let reply = serde_json::json!({"type": "welcome", "strategy": name,
                        "lockstep": self.lockstep > 0});
                    self.reply(identity, reply.to_string().as_bytes())?;
                }
                Some("ack") => {
                    let step = envelope.step.unwrap_or(0);
                    let ts = self.marker_ts(step);
                    if let Some(s) = self.strategies.get_mut(identity)
                        && step > s.acked
                    {
                        s.acked = step;
                        if let Some(ts) = ts {
                            s.acked_ts = s.acked_ts.max(ts);
                        }
                    }
                }
                _ => {
                    let Some((name, acked_ts)) = self
                        .strategies
                        .get(identity)
                        .map(|s| (s.name.clone(), s.acked_ts))
                    else {
                        self.stats.refused += 1;
                        let reply = serde_json::json!({"type": "error",
                            "reason": "say hello first: requests are accepted only from a connection that said hello as a strategy"});
                        self.reply(identity, reply.to_string().as_bytes())?;
                        return Ok(());
                    };
                    // Decision time belongs to the harness: never before the last step the
                    // strategy acknowledged (lockstep), never before now otherwise.
                    let not_before = if self.lockstep > 0 { acked_ts } else { now };
                    if envelope.decided_at.is_some_and(|t| t < not_before) {
                        self.stats.backdated += 1;
                    }
                    let reply = match host.as_deref_mut() {
                        Some(h) => h.on_request(&name, body, now, not_before, out)?,
                        None => serde_json::json!({"type": "error",
                            "reason": "this replay runs no exchange (start it with --exchange)"})
                        .to_string()
                        .into_bytes(),
                    };
                    self.reply(identity, &reply)?;
                }
            }
        }
        Ok(())
    }

    fn reply(&self, identity: &[u8], body: &[u8]) -> Result<()> {
        match &self.source {
            Source::Router(socket) => {
                again_if_interrupted(|| socket.send(identity, zmq::SNDMORE))?;
                again_if_interrupted(|| socket.send(body, 0))?;
            }
            Source::Shm { hub, .. } => hub.borrow_mut().reply(identity, body)?,
        }
        Ok(())
    }

    /// The error for strategies that did not acknowledge `step` in time, naming them.
    pub(crate) fn ack_timeout_error(&self, step: u64, timeout: Duration) -> anyhow::Error {
        let late: Vec<&str> = self
            .strategies
            .values()
            .filter(|s| s.acked < step)
            .map(|s| s.name.as_str())
            .collect();
        anyhow::anyhow!(
            "lockstep: {} did not ack step {step} within {timeout:?} (crashed or hung?)",
            late.join(", ")
        )
    }

    pub(crate) fn min_acked(&self) -> u64 {
        self.strategies
            .values()
            .map(|s| s.acked)
            .min()
            .unwrap_or(u64::MAX)
    }

    /// Charges `spent` waiting to every strategy that has not acknowledged `step` yet:
    /// the summary's "slowest" list.
    pub(crate) fn charge_wait(&mut self, step: u64, spent: Duration) {
        for s in self.strategies.values_mut().filter(|s| s.acked < step) {
            s.waited += spent;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Side;
    use crate::exchange::host::tests::level;
    use crate::exchange::host::{ExchangeHost, ExchangeHostConfig};
    use crate::exchange::{ExchangeSettings, LatencySpec};

    fn buy(id: &str, decided_at: UnixNanos) -> String {
        format!(
            r#"{{"type":"new","client_order_id":"{id}","venue":"sim","symbol":"X","side":"buy","order_type":"market","size":"1","decided_at":{decided_at}}}"#
        )
    }

    /// Pumps until `want` more requests were handled.
    fn pump_until(
        g: &mut Gateway,
        host: &mut ExchangeHost,
        now: UnixNanos,
        out: &mut Outbox,
        want: u64,
    ) {
        let target = g.stats().requests + want;
        let mut host: Option<&mut dyn VenueHost> = Some(host);
        for _ in 0..200 {
            g.pump(&mut host, now, out, Duration::from_millis(10))
                .unwrap();
            if g.stats().requests >= target {
                return;
            }
        }
        panic!("gateway saw {} of {target} requests", g.stats().requests);
    }

    #[test]
    fn a_back_dated_order_gets_no_earlier_fill_than_an_honest_one() {
        const MS: i64 = 1_000_000;
        let settings = ExchangeSettings {
            order_latency: LatencySpec::Constant { ns: MS },
            ..ExchangeSettings::default()
        };
        let mut host = ExchangeHost::new(&ExchangeHostConfig {
            settings,
            run_dir: None,
        })
        .unwrap();
        let mut out = Outbox::new();
        // The exchange is at t = 0; the strategy has acknowledged the step at 1.5 ms
        // (it read ahead in the lookahead form) and knows the ask leaves 101 at 2 ms.
        host.on_market(&level(0, Side::Ask, "101", "10"), &mut out)
            .unwrap();
        host.on_market(&level(0, Side::Bid, "99", "10"), &mut out)
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let endpoint = format!("ipc://{}", dir.path().join("gw").display());
        let ctx = zmq::Context::new();
        let mut g = Gateway::bind(&ctx, &endpoint, 1).unwrap();
        let dealer = ctx.socket(zmq::DEALER).unwrap();
        dealer.connect(&endpoint).unwrap();
        dealer
            .send(r#"{"type":"hello","strategy":"s","lockstep":true}"#, 0)
            .unwrap();
        pump_until(&mut g, &mut host, 0, &mut out, 1);
        g.marker_sent(1, MS + MS / 2);
        dealer.send(r#"{"type":"ack","step":1}"#, 0).unwrap();
        pump_until(&mut g, &mut host, 0, &mut out, 1);
        dealer.send(buy("cheat", 0).as_bytes(), 0).unwrap();
        dealer
            .send(buy("honest", MS + MS / 2).as_bytes(), 0)
            .unwrap();
        pump_until(&mut g, &mut host, 0, &mut out, 2);
        assert_eq!(g.stats().backdated, 1, "the back-dated order is counted");
        host.advance_before(2 * MS, &mut out).unwrap();
        host.on_market(&level(2 * MS, Side::Ask, "101", "0"), &mut out)
            .unwrap();
        host.on_market(&level(2 * MS, Side::Ask, "105", "10"), &mut out)
            .unwrap();
        host.finish(4 * MS, &mut out).unwrap();
        let fills: Vec<(String, String, i64)> = out
            .iter()
            .filter(|(topic, _)| topic.starts_with("fill."))
            .map(|(_, payload)| {
                let v: serde_json::Value = serde_json::from_slice(payload).unwrap();
                let id = v["client_order_id"].as_str().unwrap().to_string();
                (
                    id,
                    v["price"].as_str().unwrap().to_string(),
                    v["ts"].as_i64().unwrap(),
                )
            })
            .collect();
        let at = 2 * MS + MS / 2;
        assert_eq!(
            fills,
            vec![
                ("cheat".to_string(), "105".to_string(), at),
                ("honest".to_string(), "105".to_string(), at)
            ],
            "dated at 0 the cheat would have bought at 101 before the ask moved"
        );
    }

    /// Sends `msg` on `dealer`, pumps the gateway, returns the reply's type and reason.
    fn ask(
        g: &mut Gateway,
        host: &mut ExchangeHost,
        dealer: &zmq::Socket,
        msg: &str,
    ) -> (String, String) {
        dealer.send(msg.as_bytes(), 0).unwrap();
        let mut out = Outbox::new();
        pump_until(g, host, 0, &mut out, 1);
        let reply = dealer.recv_bytes(0).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&reply).unwrap();
        let field = |k: &str| v[k].as_str().unwrap_or_default().to_string();
        (field("type"), field("reason"))
    }

    #[test]
    fn identity_is_bound_to_the_connection_and_its_token() {
        let mut host = ExchangeHost::new(&ExchangeHostConfig::default()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let endpoint = format!("ipc://{}", dir.path().join("gw").display());
        let ctx = zmq::Context::new();
        let mut g = Gateway::bind(&ctx, &endpoint, 0).unwrap();
        g.require(Tokens::parse(["mm=secret-of-mm"]).unwrap());
        let owner = ctx.socket(zmq::DEALER).unwrap();
        let intruder = ctx.socket(zmq::DEALER).unwrap();
        owner.connect(&endpoint).unwrap();
        intruder.connect(&endpoint).unwrap();
        let mut ask = |d: &zmq::Socket, msg: &str| ask(&mut g, &mut host, d, msg);
        let (t, why) = ask(&owner, r#"{"type":"hello","strategy":"mm"}"#);
        assert_eq!(t, "error", "no token: refused");
        assert!(why.contains("token"), "{why}");
        let (t, _) = ask(
            &owner,
            r#"{"type":"hello","strategy":"mm","token":"secret-of-mm"}"#,
        );
        assert_eq!(t, "welcome");
        let (t, why) = ask(&intruder, r#"{"type":"query"}"#);
        assert_eq!(
            t, "error",
            "no hello, no trading (was: accepted as anonymous)"
        );
        assert!(why.contains("hello first"), "{why}");
        let (t, why) = ask(
            &intruder,
            r#"{"type":"hello","strategy":"mm","token":"secret-of-mm"}"#,
        );
        assert_eq!(t, "error", "a connected name cannot be claimed twice");
        assert!(why.contains("already connected"), "{why}");
        let (t, why) = ask(&owner, r#"{"type":"hello","strategy":"taker"}"#);
        assert_eq!(t, "error", "a connection cannot change its name");
        assert!(why.contains("one connection is one strategy"), "{why}");
        let (t, _) = ask(&owner, r#"{"type":"query"}"#);
        assert_eq!(t, "query_result", "the owner still trades");
        assert_eq!(g.stats().refused, 4);
    }
}
