//! Heartbeats: `hb.<publisher>` every interval (`docs/PROTOCOL.md`).

use std::time::{Duration, Instant};

use anyhow::Result;

use super::{Outlets, Publisher};
use crate::event::{Body, Event, Heartbeat, now_nanos};

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
