//! The paced loop over shared memory without lockstep: bursts written ahead, published
//! on time (`docs/SHM.md`, "Paced replays").
//!
//! Owns when a burst is staged, published and followed by a wake-up; what is sent
//! around each event is [`super::deliver`]'s, how long to wait the [`Pacer`]'s.

use std::time::{Duration, Instant};

use anyhow::Result;

use super::lockstep::Link;
use super::{Marks, Progress, Sent, deliver};
use crate::bus::HeartbeatTimer;
use crate::event::UnixNanos;
use crate::replay::Pacer;
use crate::shutdown::Stop;
use crate::store::EventSource;

/// What the burst loop carries from one event to the next.
pub(super) struct Loop<'a> {
    pub(super) pacer: &'a mut Pacer,
    pub(super) heartbeat: &'a mut HeartbeatTimer,
    pub(super) marks: &'a mut Marks,
    pub(super) started: Instant,
}

/// Room kept in every ring before an event is written ahead: the event and whatever the
/// exchange host publishes around it.
const BURST_ROOM: u64 = 64 << 10;

/// The events of one due time written so far, not yet published.
#[derive(Clone, Copy)]
struct Burst {
    ts: UnixNanos,
    events: usize,
    began: Instant,
}

/// The paced loop over shared memory without lockstep. Recorded data comes in bursts
/// that share one `ts_recv` (a depth update of many levels, a snapshot): up to
/// thousands of events due at the same instant. While the replay is ahead of the data,
/// the next burst (its events, and what the exchange host publishes around them, in the
/// usual order) is written into the rings unpublished, then published at its due time
/// with one store per ring: a strategy sees the whole burst at that instant instead of
/// event after event, and the writing is done while the replay would otherwise wait.
/// Once an event's due time has passed (behind, or a burst longer than the time ahead),
/// what is written goes out at once and the events follow one by one, as in the other
/// loop. Nothing is visible before its due time. Requests are read after each
/// publication.
pub(super) fn stream(
    link: &mut Link<'_>,
    events: &mut EventSource,
    state: &mut Loop<'_>,
    stop: &Stop,
    on_progress: &mut impl FnMut(Progress<'_>),
) -> Result<UnixNanos> {
    let mut burst: Option<Burst> = None;
    let mut last_ts = 0;
    let mut last_progress = Instant::now();
    while let Some(event) = events.next_event()? {
        if stop.is_set() {
            break;
        }
        let ts = event.ts_recv;
        if burst.is_some_and(|b| b.ts != ts) || !link.bus.can_stage(BURST_ROOM) {
            publish_burst(link, state.pacer, burst.take())?;
            if stop.is_set() {
                break;
            }
        }
        if burst.is_none() {
            state.heartbeat.tick(&mut link.bus.zmq)?;
        }
        if state.pacer.is_ahead(ts) {
            let b = burst.get_or_insert(Burst {
                ts,
                events: 0,
                began: Instant::now(),
            });
            b.events += 1;
            deliver(link, state.marks, event, Sent::Staged)?;
        } else {
            // Due already: what is written of its burst goes out, then the event.
            publish_burst(link, state.pacer, burst.take())?;
            state.pacer.wait_for(ts);
            deliver(link, state.marks, event, Sent::Publish(state.pacer))?;
            link.pump(ts, Duration::ZERO)?;
        }
        last_ts = ts;
        if last_progress.elapsed() >= Duration::from_millis(100) {
            last_progress = Instant::now();
            link.stats.elapsed_secs = state.started.elapsed().as_secs_f64();
            on_progress(Progress {
                stats: &link.stats,
                ts,
                waiting_for: &[],
            });
        }
    }
    publish_burst(link, state.pacer, burst.take())?;
    Ok(last_ts)
}

/// Waits for `burst`'s due time, publishes it, and reads the requests that came.
fn publish_burst(link: &mut Link<'_>, pacer: &mut Pacer, burst: Option<Burst>) -> Result<()> {
    let Some(b) = burst else {
        return Ok(());
    };
    pacer.wait_for(b.ts);
    link.bus.commit();
    pacer.published_burst(b.events, b.began);
    link.bus.wake_sleepers();
    pacer.woken();
    link.pump(b.ts, Duration::ZERO)
}
