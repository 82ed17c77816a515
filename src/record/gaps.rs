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

use crate::event::{Body, Event, Flags, Gap, GapReason, Kind, UnixNanos};

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

    fn get(&self, event: &Event) -> Option<&T> {
        self.map
            .get(&event.kind())?
            .get(&*event.venue)?
            .get(&*event.symbol)
    }

    fn insert_names(&mut self, kind: Kind, venue: Arc<str>, symbol: Arc<str>, value: T) {
        self.map
            .entry(kind)
            .or_default()
            .entry(venue)
            .or_default()
            .insert(symbol, value);
    }

    fn iter(&self) -> impl Iterator<Item = (Kind, &Arc<str>, &Arc<str>, &T)> {
        self.map.iter().flat_map(|(kind, venues)| {
            venues.iter().flat_map(move |(venue, symbols)| {
                symbols
                    .iter()
                    .map(move |(symbol, v)| (*kind, venue, symbol, v))
            })
        })
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

    /// The last sequence number seen from `source` on `event`'s topic (0: none yet).
    pub fn last(&self, source: usize, event: &Event) -> u64 {
        self.by_source
            .get(source)
            .and_then(|t| t.get(event))
            .copied()
            .unwrap_or(0)
    }

    /// Resumes `source`'s sequence on a topic at `seq` (read back from the dataset).
    pub fn restore(
        &mut self,
        source: usize,
        kind: Kind,
        venue: Arc<str>,
        symbol: Arc<str>,
        seq: u64,
    ) {
        if self.by_source.len() <= source {
            self.by_source.resize_with(source + 1, PerTopic::default);
        }
        self.by_source[source].insert_names(kind, venue, symbol, seq);
    }

    /// Every (kind, venue, symbol, last sequence) of `source`.
    pub fn of_source(
        &self,
        source: usize,
    ) -> impl Iterator<Item = (Kind, &Arc<str>, &Arc<str>, u64)> {
        self.by_source
            .get(source)
            .into_iter()
            .flat_map(|t| t.iter().map(|(k, v, s, seq)| (k, v, s, *seq)))
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

/// The end of one stream as recorded so far (what a restart resumes from).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tail {
    /// `venue_seq` of the last event, when the venue numbers them.
    pub venue_seq: Option<u64>,
    /// Largest `ts_recv` accepted.
    pub ts_recv: UnixNanos,
    /// The last book row lacked `LAST`: a venue message is in progress.
    pub open_message: bool,
    /// An event was accepted on it in this session (false: only restored).
    pub seen: bool,
}

/// Venue-sequence continuity over the merged (deduplicated) stream, and each stream's
/// [`Tail`].
pub struct VenueSeqs {
    last: PerTopic<Tail>,
    holes: Vec<Hole>,
    grace: Duration,
    /// True when the grace runs only while messages arrive ([`VenueSeqs::counting_live_input`]).
    live_input_only: bool,
    /// When the last message of any kind arrived ([`VenueSeqs::input`]).
    last_input: Option<Instant>,
}

/// A pause in the input longer than this stops a hole's grace (durable sources only).
pub const INPUT_STALL: Duration = Duration::from_secs(1);

impl VenueSeqs {
    /// A tracker that waits `grace` for late events before declaring a gap.
    pub fn new(grace: Duration) -> VenueSeqs {
        VenueSeqs {
            last: PerTopic::default(),
            holes: Vec::new(),
            grace,
            live_input_only: false,
            last_input: None,
        }
    }

    /// With `durable`, a hole's grace counts only time during which messages arrive: a
    /// pause longer than [`INPUT_STALL`] (a broker failing over, the connection being
    /// re-established) is added to every open hole's wait. Over a durable broker the
    /// missing events are not lost while nothing arrives: a publisher whose ack was lost
    /// sends them again once it reconnects, however long that took. Over ZeroMQ a
    /// publisher that stops is gone, and its holes are gaps after `grace` as they are.
    pub fn counting_live_input(mut self, durable: bool) -> VenueSeqs {
        self.live_input_only = durable;
        self
    }

    /// A message (of any kind, from any source) arrived at `now`.
    pub fn input(&mut self, now: Instant) {
        if self.live_input_only
            && let Some(last) = self.last_input
        {
            let pause = now.saturating_duration_since(last);
            if pause > INPUT_STALL {
                for hole in &mut self.holes {
                    hole.deadline += pause;
                }
            }
        }
        self.last_input = Some(now);
    }

    /// True while the input has paused (durable sources): no hole's grace runs.
    fn stalled(&self, now: Instant) -> bool {
        self.live_input_only
            && self
                .last_input
                .is_some_and(|last| now.saturating_duration_since(last) > INPUT_STALL)
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
        let kind = event.kind();
        if !matches!(kind, Kind::Book | Kind::Trade) {
            return;
        }
        let tail = self.last.get_or_insert(event, Tail::default());
        tail.seen = true;
        tail.ts_recv = tail.ts_recv.max(event.ts_recv);
        if let Body::Book(d) = &event.body {
            tail.open_message = !d.flags.contains(Flags::LAST);
        }
        let (Some(seq), Some(prev)) = (event.venue_seq, event.prev_venue_seq) else {
            return;
        };
        match tail.venue_seq {
            None => tail.venue_seq = Some(seq),
            Some(last) if prev > last && already_reported => tail.venue_seq = Some(seq),
            Some(last) if prev > last => {
                self.holes.push(Hole {
                    venue: event.venue.clone(),
                    symbol: event.symbol.clone(),
                    kind,
                    after: last,
                    upto: prev,
                    filled: 0,
                    ts_recv: event.ts_recv,
                    deadline: now + self.grace,
                    publisher: publisher.to_string(),
                });
                tail.venue_seq = Some(seq);
            }
            Some(last) if seq > last => tail.venue_seq = Some(seq),
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

    /// The tail of `event`'s stream, if it has one.
    pub fn tail(&self, event: &Event) -> Option<&Tail> {
        self.last.get(event)
    }

    /// Resumes a stream from the dataset: its venue sequence continues from `tail`.
    pub fn restore(&mut self, kind: Kind, venue: Arc<str>, symbol: Arc<str>, tail: Tail) {
        self.last.insert_names(kind, venue, symbol, tail);
    }

    /// Every stream's tail.
    pub fn tails(&self) -> impl Iterator<Item = (Kind, &Arc<str>, &Arc<str>, &Tail)> {
        self.last.iter()
    }

    /// Marks the message in progress on `event`'s stream as settled (a `cut_message`
    /// row was written for it).
    pub fn close_message(&mut self, kind: Kind, venue: &str, symbol: &str) {
        if let Some(t) = self
            .last
            .map
            .get_mut(&kind)
            .and_then(|v| v.get_mut(venue))
            .and_then(|s| s.get_mut(symbol))
        {
            t.open_message = false;
        }
    }

    /// Gap events for holes whose grace period is over (or all, with `force`).
    pub fn expired(&mut self, now: Instant, force: bool) -> Vec<Event> {
        let mut out = Vec::new();
        if !force && self.stalled(now) {
            return out;
        }
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

/// The recorder's own downtime, marked after a restart. Every stream the dataset was
/// recording (its tail, not ended) is *pending*: its first event after the restart gets
/// a `recorder_down` row spanning from its partition's last stored `ts_recv` to that
/// event, with what is missing by sequence. Partitions that stay silent until the
/// deadline get one row each, missing unknown, ending when the recorder started.
pub struct Downtime {
    /// venue → symbol → partition state.
    partitions: ByName<ByName<DownPartition>>,
    pending: PerTopic<()>,
    deadline: Instant,
}

/// A partition no event resumed before the deadline: venue, symbol, downtime start.
pub type SilentPartition = (Arc<str>, Arc<str>, UnixNanos);

struct DownPartition {
    /// The last `ts_recv` the dataset holds for the partition: the downtime's start.
    since: UnixNanos,
    /// A row was written for it.
    marked: bool,
}

impl Downtime {
    /// Nothing pending yet; unresolved partitions are marked at `deadline`.
    pub fn new(deadline: Instant) -> Downtime {
        Downtime {
            partitions: FxHashMap::default(),
            pending: PerTopic::default(),
            deadline,
        }
    }

    /// A stream that was being recorded, last stored at `since`.
    pub fn add(&mut self, kind: Kind, venue: Arc<str>, symbol: Arc<str>, since: UnixNanos) {
        let p = self
            .partitions
            .entry(venue.clone())
            .or_default()
            .entry(symbol.clone())
            .or_insert(DownPartition {
                since,
                marked: false,
            });
        p.since = p.since.max(since);
        self.pending.insert_names(kind, venue, symbol, ());
    }

    /// Nothing pending.
    pub fn is_empty(&self) -> bool {
        self.partitions.is_empty()
    }

    /// For the first event of a pending stream: the downtime's start (its partition's
    /// last stored `ts_recv`), and the stream is no longer pending.
    pub fn resume(&mut self, event: &Event) -> Option<UnixNanos> {
        let kinds = self.pending.map.get_mut(&event.kind())?;
        let symbols = kinds.get_mut(&*event.venue)?;
        symbols.remove(&*event.symbol)?;
        let p = self
            .partitions
            .get_mut(&*event.venue)?
            .get_mut(&*event.symbol)?;
        p.marked = true;
        Some(p.since)
    }

    /// Past the deadline: the partitions no event resumed, with their downtime start;
    /// everything still pending is dropped (later events are checked by sequence as
    /// usual). `None` before the deadline.
    pub fn expire(&mut self, now: Instant) -> Option<Vec<SilentPartition>> {
        if now < self.deadline {
            return None;
        }
        let mut out = Vec::new();
        for (venue, symbols) in self.partitions.drain() {
            for (symbol, p) in symbols {
                if !p.marked {
                    out.push((venue.clone(), symbol, p.since));
                }
            }
        }
        self.pending = PerTopic::default();
        Some(out)
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
    fn over_a_durable_source_a_hole_waits_out_a_pause_in_the_input() {
        let t0 = Instant::now();
        let secs = Duration::from_secs;
        let mut v = VenueSeqs::new(secs(10)).counting_live_input(true);
        for s in [10, 11, 14] {
            v.input(t0);
            v.observe(&ev(s, s), "a", t0, false);
        }
        assert_eq!(v.open_holes(), 1);
        // The broker fails over: nothing arrives for 30 s, three times the grace.
        assert!(v.expired(t0 + secs(30), false).is_empty(), "a pause");
        // Messages flow again (heartbeats, other streams); 8 s of them is within the grace.
        for t in 30..=38 {
            v.input(t0 + secs(t));
        }
        assert!(v.expired(t0 + secs(38), false).is_empty());
        // The publisher sends the two it had no ack for: no gap.
        v.observe(&ev(12, 12), "a", t0 + secs(38), false);
        v.observe(&ev(13, 13), "a", t0 + secs(38), false);
        assert!(v.expired(t0 + secs(60), false).is_empty());

        // A hole nothing fills is a gap after 10 s of live input, pauses not counted.
        let mut v = VenueSeqs::new(secs(10)).counting_live_input(true);
        for s in [10, 11, 14] {
            v.input(t0);
            v.observe(&ev(s, s), "a", t0, false);
        }
        for t in (20..=28).chain([40]) {
            v.input(t0 + secs(t));
        }
        // 20 s and 12 s pauses: the deadline moved from t0+10 to t0+42.
        assert!(v.expired(t0 + secs(40), false).is_empty());
        v.input(t0 + secs(41));
        v.input(t0 + secs(42));
        assert_eq!(v.expired(t0 + secs(42), false).len(), 1);

        // Over ZeroMQ (not durable) the same pause ends the grace.
        let mut v = VenueSeqs::new(secs(10));
        for s in [10, 11, 14] {
            v.input(t0);
            v.observe(&ev(s, s), "a", t0, false);
        }
        assert_eq!(v.expired(t0 + secs(30), false).len(), 1);
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
