//! Gap detection: publisher sequence jumps, venue sequence breaks and silent publishers.
//!
//! Rules (also in `docs/STORAGE.md`):
//! - Every publisher-sequence jump is counted for that publisher. It becomes a gap row
//!   when the recorder has a single publisher, or the event has no venue sequence id.
//!   With redundant publishers and venue ids, the merged venue sequence decides,
//!   because a hole in one publisher's stream that another fills is not a hole in the
//!   dataset.
//! - A venue-sequence break (`prev_venue_seq` ahead of the last `venue_seq`) opens a
//!   *hole*. Late events from slower publishers may fill it during a grace period; what
//!   is still missing afterwards is written as a gap row stamped at the break.

use rustc_hash::FxHashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::event::{Body, Event, Gap, GapReason, Kind, UnixNanos};

/// Builds a gap event for a venue/symbol.
pub fn gap_event(
    venue: Arc<str>,
    symbol: Arc<str>,
    ts_recv: UnixNanos,
    reason: GapReason,
    missing: Option<u64>,
    publisher: &str,
) -> Event {
    Event {
        venue,
        symbol,
        ts_event: ts_recv,
        ts_recv,
        venue_seq: None,
        prev_venue_seq: None,
        pub_seq: 0,
        body: Body::Gap(Gap {
            reason,
            missing,
            publisher: publisher.to_string(),
        }),
    }
}

/// A value per (kind, venue, symbol), looked up by borrowed names: the recorder checks
/// every event, and cloning `Arc` names per lookup would bounce their reference counts
/// between the ingest and writer threads.
struct PerTopic<T> {
    map: FxHashMap<Kind, ByName<ByName<T>>>,
}

/// A map keyed by a venue or symbol name.
type ByName<T> = FxHashMap<Arc<str>, T>;

impl<T> Default for PerTopic<T> {
    fn default() -> PerTopic<T> {
        PerTopic {
            map: FxHashMap::default(),
        }
    }
}

impl<T> PerTopic<T> {
    fn get_mut(&mut self, event: &Event) -> Option<&mut T> {
        self.map
            .get_mut(&event.kind())?
            .get_mut(&*event.venue)?
            .get_mut(&*event.symbol)
    }

    fn insert(&mut self, event: &Event, value: T) {
        self.map
            .entry(event.kind())
            .or_default()
            .entry(event.venue.clone())
            .or_default()
            .insert(event.symbol.clone(), value);
    }

    fn get_or_insert(&mut self, event: &Event, value: T) -> &mut T {
        if self.get_mut(event).is_none() {
            self.insert(event, value);
        }
        self.get_mut(event).expect("just inserted")
    }
}

/// Last publisher sequence per (source, topic).
#[derive(Default)]
pub struct PublisherSeqs {
    by_source: Vec<PerTopic<u64>>,
}

impl PublisherSeqs {
    /// Missing messages before `event` on its source's topic, if the sequence jumped.
    pub fn observe(&mut self, source: usize, event: &Event) -> Option<u64> {
        if self.by_source.len() <= source {
            self.by_source.resize_with(source + 1, PerTopic::default);
        }
        let last = self.by_source[source].get_or_insert(event, 0);
        let jump = (*last > 0 && event.pub_seq > *last + 1).then(|| event.pub_seq - *last - 1);
        // A publisher that restarted begins again at 1: accept it as the new baseline.
        if event.pub_seq > *last || event.pub_seq == 1 {
            *last = event.pub_seq;
        }
        jump
    }
}

struct Hole {
    venue: Arc<str>,
    symbol: Arc<str>,
    kind: Kind,
    /// Ids strictly after `after` and up to `upto` were missing.
    after: u64,
    upto: u64,
    filled: u64,
    ts_recv: UnixNanos,
    deadline: Instant,
    publisher: String,
}

/// Venue-sequence continuity over the merged (deduplicated) stream.
pub struct VenueSeqs {
    last: PerTopic<u64>,
    holes: Vec<Hole>,
    grace: Duration,
}

impl VenueSeqs {
    /// A tracker that waits `grace` for late events before declaring a gap.
    pub fn new(grace: Duration) -> VenueSeqs {
        VenueSeqs {
            last: PerTopic::default(),
            holes: Vec::new(),
            grace,
        }
    }

    /// Holes still open.
    pub fn open_holes(&self) -> usize {
        self.holes.len()
    }

    /// Observes an accepted event; `publisher` names where it came from. With
    /// `already_reported`, a break at this event was written as a gap row by the
    /// publisher-sequence check and must not be reported twice.
    pub fn observe(
        &mut self,
        event: &Event,
        publisher: &str,
        now: Instant,
        already_reported: bool,
    ) {
        let (Some(seq), Some(prev)) = (event.venue_seq, event.prev_venue_seq) else {
            return;
        };
        let kind = event.kind();
        match self.last.get_mut(event) {
            None => self.last.insert(event, seq),
            Some(last) if prev > *last && already_reported => *last = seq,
            Some(last) if prev > *last => {
                self.holes.push(Hole {
                    venue: event.venue.clone(),
                    symbol: event.symbol.clone(),
                    kind,
                    after: *last,
                    upto: prev,
                    filled: 0,
                    ts_recv: event.ts_recv,
                    deadline: now + self.grace,
                    publisher: publisher.to_string(),
                });
                *last = seq;
            }
            Some(last) if seq > *last => *last = seq,
            Some(_) => {
                // A late event: it may fill an open hole.
                for hole in self.holes.iter_mut().filter(|h| {
                    h.kind == kind
                        && h.venue == event.venue
                        && h.symbol == event.symbol
                        && seq > h.after
                        && seq <= h.upto
                }) {
                    hole.filled += seq - prev.max(hole.after).min(seq);
                }
            }
        }
    }

    /// Gap events for holes whose grace period is over (or all, with `force`).
    pub fn expired(&mut self, now: Instant, force: bool) -> Vec<Event> {
        let mut out = Vec::new();
        self.holes.retain(|h| {
            if !force && h.deadline > now {
                return true;
            }
            let missing = (h.upto - h.after).saturating_sub(h.filled);
            if missing > 0 {
                out.push(gap_event(
                    h.venue.clone(),
                    h.symbol.clone(),
                    h.ts_recv,
                    GapReason::VenueSeq,
                    Some(missing),
                    &h.publisher,
                ));
            }
            false
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{BookDelta, Flags, Side};

    fn ev(seq: u64, pub_seq: u64) -> Event {
        let mut e = crate::wire::event(
            "v",
            "S",
            seq as i64,
            pub_seq,
            Body::Book(BookDelta {
                side: Side::Bid,
                price: "1".parse().unwrap(),
                size: "1".parse().unwrap(),
                flags: Flags::LAST,
            }),
        );
        e.venue_seq = Some(seq);
        e.prev_venue_seq = Some(seq - 1);
        e
    }

    #[test]
    fn publisher_jump_is_counted_per_source() {
        let mut p = PublisherSeqs::default();
        assert_eq!(p.observe(0, &ev(1, 1)), None);
        assert_eq!(p.observe(0, &ev(2, 2)), None);
        assert_eq!(p.observe(0, &ev(6, 6)), Some(3));
        assert_eq!(p.observe(1, &ev(6, 6)), None);
    }

    #[test]
    fn hole_filled_by_a_late_publisher_is_not_a_gap() {
        let now = Instant::now();
        let mut v = VenueSeqs::new(Duration::from_secs(1));
        for s in [10, 11, 14] {
            v.observe(&ev(s, s), "a", now, false);
        }
        assert_eq!(v.open_holes(), 1);
        v.observe(&ev(12, 12), "b", now, false);
        v.observe(&ev(13, 13), "b", now, false);
        assert!(v.expired(now + Duration::from_secs(2), false).is_empty());
    }

    #[test]
    fn unfilled_hole_becomes_a_gap_after_grace() {
        let now = Instant::now();
        let mut v = VenueSeqs::new(Duration::from_secs(1));
        for s in [10, 11, 15] {
            v.observe(&ev(s, s), "a", now, false);
        }
        v.observe(&ev(13, 13), "b", now, false);
        assert!(v.expired(now, false).is_empty());
        let gaps = v.expired(now + Duration::from_secs(2), false);
        assert_eq!(gaps.len(), 1);
        match &gaps[0].body {
            Body::Gap(g) => assert_eq!(g.missing, Some(2)),
            other => panic!("{other:?}"),
        }
    }
}
