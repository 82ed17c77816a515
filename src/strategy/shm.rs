//! The shared-memory driver: runs a [`Strategy`] over the segment `ticktape run` hands
//! the process as an inherited descriptor (`shm:fd=3`, `docs/SHM.md`). The down ring
//! carries the bus messages and the gateway replies in one order; the up ring carries
//! the hello, the orders and the lockstep acks. What the strategy sees is the same
//! [`Runner`] and [`super::Dispatcher`] as over ZeroMQ.
//!
//! Owns the read loop, the waits and the checks on the replay's life. Never parses a
//! payload itself.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use super::Strategy;
use super::bus::{Requests, Runner, RunnerConfig, RunnerStats};
use crate::shm::ring::{KIND_BUS, KIND_CLOSED, KIND_GATEWAY, Writer};
use crate::shm::segment::{Mapping, Side};
use crate::shm::spin::Spinner;
use crate::shutdown::Stop;

/// Longest sleep before the driver checks the stop flag, the replay and the idle timeout.
const IDLE_CHECK: Duration = Duration::from_millis(100);
/// Records read between two releases of their space to the replay.
const RELEASE_EVERY: u32 = 64;
/// How long the up ring may stay full before the strategy gives up.
const UP_FULL_LIMIT: Duration = Duration::from_secs(30);

/// The up ring as the runner's request sink: each request is framed, published and the
/// replay woken (it sleeps on this ring while it waits for acks).
struct UpRing {
    up: Writer,
    map: Arc<Mapping>,
    stop: Stop,
}

impl UpRing {
    fn replay_gone(&self) -> Option<u32> {
        let (pid, alive) = self.map.peer(Side::Replay);
        (!alive).then_some(pid)
    }
}

impl Requests for UpRing {
    fn send_request(&mut self, body: &[u8]) -> Result<()> {
        let started = Instant::now();
        loop {
            if self.up.try_write(KIND_GATEWAY, b"", body)? {
                self.up.wake();
                return Ok(());
            }
            self.up.wake();
            self.up.wait_for_space(Duration::from_millis(1));
            if self.stop.is_set() {
                return Ok(());
            }
            if let Some(pid) = self.replay_gone() {
                bail!("replay gone (pid {pid}): the shared-memory peer died");
            }
            if started.elapsed() > UP_FULL_LIMIT {
                bail!(
                    "the replay has not read this strategy's requests for {UP_FULL_LIMIT:?} (hung?)"
                );
            }
        }
    }
}

/// Runs `strategy` over the segment `endpoint` names until the replay's end of stream,
/// its orderly close, or `stop`.
pub(crate) fn run(
    config: &RunnerConfig,
    strategy: &mut dyn Strategy,
    stop: &Stop,
    endpoint: &str,
) -> Result<RunnerStats> {
    let fd = crate::shm::open_endpoint(endpoint).unwrap_or_else(|| {
        Err(anyhow::anyhow!(
            "{endpoint:?} is not a shared-memory endpoint"
        ))
    })?;
    let end = crate::shm::attach(fd)?;
    let (pid, alive) = end.map.peer(Side::Replay);
    if !alive {
        bail!("replay gone (pid {pid}) before the strategy attached");
    }
    let crate::shm::StrategyEnd { map, mut down, up } = end;
    let sink = UpRing {
        up,
        map: map.clone(),
        stop: stop.clone(),
    };
    let mut r = Runner::start(config, sink, strategy)?;
    let mut last_msg = Instant::now();
    let mut ended = false;
    let mut spinner = Spinner::from_env();
    while !ended && !stop.is_set() {
        let mut n = 0u32;
        while let Some(rec) = down.read()? {
            n += 1;
            match rec.kind {
                KIND_BUS => ended = r.on_message(rec.topic, rec.payload)?,
                KIND_GATEWAY => r.on_reply(rec.payload)?,
                KIND_CLOSED => ended = true,
                // A later kind this build does not know: skipped.
                _ => {}
            }
            if ended {
                break;
            }
            if n.is_multiple_of(RELEASE_EVERY) {
                down.release();
            }
        }
        down.release();
        if n > 0 {
            last_msg = Instant::now();
            continue;
        }
        // A stop (Ctrl-C) ends a spin too: a busy-polling strategy spins up to a second.
        if spinner.spin(|| down.peek() || stop.is_set()) {
            continue;
        }
        map.beat(Side::Strategy);
        down.wait(IDLE_CHECK);
        if down.peek() {
            continue;
        }
        if let Some(pid) = r.dealer.replay_gone() {
            bail!("replay gone (pid {pid}): the shared-memory peer died");
        }
        if config.idle_timeout.is_some_and(|t| last_msg.elapsed() > t) {
            bail!(
                "no market data for {:?}: is the replay running?",
                config.idle_timeout
            );
        }
    }
    map.close(Side::Strategy);
    Ok(r.finish())
}
