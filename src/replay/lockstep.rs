//! The lockstep state machine: when step markers go out and when the replay stops to wait
//! for the strategies' acknowledgements (`docs/PROTOCOL.md`, "Lockstep").
//!
//! - **Simple form**: one marker after every event; the next event waits until every
//!   strategy acknowledged it (and sent the orders it decided first).
//! - **Lookahead form** (`lookahead = L`): an order decided at event time `t` cannot reach
//!   the exchange before `t + L`, so events up to `acked_ts + L` are safe to publish
//!   before the acks arrive; markers go out every [`MARKER_EVERY_EVENTS`] events and
//!   whenever the replay must wait, and the run stays exact.
//!
//! Owns the step counter, the unacknowledged markers and the waits (with the ack timeout
//! and the per-strategy wait accounting). Never reads data or matches orders: it drives
//! the [`Link`] (bus, gateway, venue host).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use anyhow::Result;

use super::{Gateway, Outbox, ReplayStats, VenueHost};
use crate::event::UnixNanos;
use crate::shutdown::Stop;

/// In the lookahead form, the most events between two step markers.
pub(crate) const MARKER_EVERY_EVENTS: u64 = 64;

/// How long one wait for acks blocks on the gateway before checking the stop flag.
const PUMP_WAIT: Duration = Duration::from_millis(10);

/// What a replay talks to: the bus (ZeroMQ or shared memory), the order gateway and the
/// venue host (the simulated exchange), with the outbox of what the host wants published.
pub(crate) struct Link<'h> {
    pub(crate) bus: super::out::BusOut,
    pub(crate) gateway: Option<Gateway>,
    pub(crate) host: Option<&'h mut dyn VenueHost>,
    pub(crate) out: Outbox,
    pub(crate) stats: ReplayStats,
}

impl Link<'_> {
    /// Handles gateway requests (blocking up to `timeout` for the first) and publishes
    /// what the host produced; `now` is the replay's event time.
    pub(crate) fn pump(&mut self, now: UnixNanos, timeout: Duration) -> Result<()> {
        if let Some(g) = self.gateway.as_mut() {
            g.pump(&mut self.host, now, &mut self.out, timeout)?;
        }
        self.flush()
    }

    /// Publishes the outbox, in order.
    pub(crate) fn flush(&mut self) -> Result<()> {
        for (topic, payload) in self.out.drain(..) {
            self.bus.send_raw(topic.as_bytes(), &payload)?;
        }
        Ok(())
    }

    /// Sends step marker `step` for the events up to `ts`.
    fn marker(&mut self, step: u64, ts: UnixNanos) -> Result<()> {
        if let Some(g) = self.gateway.as_mut() {
            g.marker_sent(step, ts);
        }
        let payload = format!("{{\"kind\":\"step\",\"step\":{step},\"ts_recv\":{ts}}}");
        self.bus.send_raw(b"step", payload.as_bytes())?;
        self.bus.wake();
        self.stats.steps += 1;
        Ok(())
    }

    fn min_acked(&self) -> u64 {
        self.gateway.as_ref().map_or(u64::MAX, Gateway::min_acked)
    }
}

/// Step markers sent in the lookahead form and not yet acknowledged by every strategy,
/// oldest first.
#[derive(Default)]
struct UnackedMarkers(VecDeque<(u64, UnixNanos)>);

impl UnackedMarkers {
    fn push(&mut self, step: u64, ts: UnixNanos) {
        self.0.push_back((step, ts));
    }

    /// Drops markers up to step `acked` and moves `acked_ts` to the last one's time.
    fn release(&mut self, acked: u64, acked_ts: &mut UnixNanos) {
        while let Some(&(step, ts)) = self.0.front() {
            if step > acked {
                break;
            }
            *acked_ts = ts;
            self.0.pop_front();
        }
    }
}

/// The lockstep state of one replay.
pub(crate) struct Lockstep {
    /// Lookahead window in ns; 0 is the simple form.
    lookahead: i64,
    ack_timeout: Duration,
    step: u64,
    unacked: UnackedMarkers,
    /// Event time up to which every strategy has acknowledged (lookahead form).
    acked_ts: Option<UnixNanos>,
    /// Whether a marker followed the last event published.
    marker_sent_for_last: bool,
    last_ts: UnixNanos,
    events: u64,
}

impl Lockstep {
    /// Lockstep with `lookahead` (zero: the simple form).
    pub(crate) fn new(lookahead: Duration, ack_timeout: Duration) -> Lockstep {
        Lockstep {
            lookahead: i64::try_from(lookahead.as_nanos()).unwrap_or(i64::MAX),
            ack_timeout,
            step: 0,
            unacked: UnackedMarkers::default(),
            acked_ts: None,
            marker_sent_for_last: true,
            last_ts: 0,
            events: 0,
        }
    }

    fn simple(&self) -> bool {
        self.lookahead == 0
    }

    /// Before the event at `ts` is published: in the lookahead form, waits until the
    /// acks make `ts` safe (sending a marker for what was published if none went out).
    pub(crate) fn before(&mut self, link: &mut Link<'_>, ts: UnixNanos, stop: &Stop) -> Result<()> {
        if self.simple() {
            return Ok(());
        }
        // Before the first event no order can exist: nothing to wait for.
        let mut acked_ts = *self.acked_ts.get_or_insert(ts);
        // Most events lie within the window the acks already known allow (the markers
        // are released every MARKER_EVERY_EVENTS in `after`, so the queue stays short).
        if acked_ts.saturating_add(self.lookahead) >= ts {
            return Ok(());
        }
        let mut wait_began: Option<Instant> = None;
        loop {
            self.unacked.release(link.min_acked(), &mut acked_ts);
            self.acked_ts = Some(acked_ts);
            if acked_ts.saturating_add(self.lookahead) >= ts {
                return Ok(());
            }
            // Everything published so far is acknowledged: nothing can be in flight.
            if self.marker_sent_for_last && link.min_acked() >= self.step {
                return Ok(());
            }
            let began = *wait_began.get_or_insert_with(|| {
                link.stats.ack_waits += 1;
                Instant::now()
            });
            if !self.marker_sent_for_last {
                self.step += 1;
                self.unacked.push(self.step, self.last_ts);
                link.marker(self.step, self.last_ts)?;
                self.marker_sent_for_last = true;
            }
            self.wait_round(link, self.last_ts)?;
            if stop.is_set() {
                return Ok(());
            }
            if began.elapsed() > self.ack_timeout {
                return Err(self.timeout_error(link));
            }
        }
    }

    /// After the event at `ts` was published and the host saw it: the simple form sends
    /// its marker and waits for every ack; the lookahead form sends a marker now and then
    /// to keep acks flowing while it runs ahead.
    pub(crate) fn after(&mut self, link: &mut Link<'_>, ts: UnixNanos, stop: &Stop) -> Result<()> {
        self.events += 1;
        self.last_ts = ts;
        self.marker_sent_for_last = false;
        if self.simple() {
            self.step += 1;
            link.marker(self.step, ts)?;
            link.stats.ack_waits += 1;
            self.marker_sent_for_last = true;
            let began = Instant::now();
            while link.min_acked() < self.step {
                self.wait_round(link, ts)?;
                if stop.is_set() {
                    break;
                }
                if began.elapsed() > self.ack_timeout {
                    return Err(self.timeout_error(link));
                }
            }
            link.stats.ack_wait_secs += began.elapsed().as_secs_f64();
        } else if self.events.is_multiple_of(MARKER_EVERY_EVENTS) {
            // Orders not yet read answer events past the acked horizon, so they apply
            // after `ts` anyway: reading them every so often is enough (a non-blocking
            // read costs a system call when nothing is queued). One marker per half
            // lookahead of event time as well was tried: more messages, no fewer waits,
            // since most waits are holes in the data longer than the lookahead.
            link.pump(ts, Duration::ZERO)?;
            let mut acked_ts = self.acked_ts.unwrap_or(ts);
            self.unacked.release(link.min_acked(), &mut acked_ts);
            self.acked_ts = Some(acked_ts);
            self.step += 1;
            self.unacked.push(self.step, ts);
            link.marker(self.step, ts)?;
            self.marker_sent_for_last = true;
        }
        Ok(())
    }

    /// One bounded wait on the gateway, charged to the strategies not caught up.
    fn wait_round(&self, link: &mut Link<'_>, now: UnixNanos) -> Result<()> {
        let began = Instant::now();
        link.pump(now, PUMP_WAIT)?;
        let spent = began.elapsed();
        if let Some(g) = link.gateway.as_mut() {
            g.charge_wait(self.step, spent);
        }
        if !self.simple() {
            link.stats.ack_wait_secs += spent.as_secs_f64();
        }
        Ok(())
    }

    fn timeout_error(&self, link: &Link<'_>) -> anyhow::Error {
        match link.gateway.as_ref() {
            Some(g) => g.ack_timeout_error(self.step, self.ack_timeout),
            None => anyhow::anyhow!("lockstep without a gateway"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn released_markers_move_the_acked_time_to_the_last_acknowledged_one() {
        let mut m = UnackedMarkers::default();
        for (step, ts) in [(1, 10), (2, 20), (3, 30)] {
            m.push(step, ts);
        }
        let mut acked = 0;
        m.release(0, &mut acked);
        assert_eq!(acked, 0, "nothing acknowledged yet");
        m.release(2, &mut acked);
        assert_eq!(acked, 20);
        m.release(2, &mut acked);
        assert_eq!(acked, 20, "releasing twice changes nothing");
        m.release(u64::MAX, &mut acked);
        assert_eq!(acked, 30);
        assert!(m.0.is_empty());
    }
}
