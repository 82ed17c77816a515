//! The feed side of the bus contract: stamps normalized events (interned names,
//! per-topic `pub_seq`) and counts what happened, in one place.
//!
//! Owns [`Publisher`], the shareable [`FeedCounters`] and their [`FeedStats`] snapshot.
//! Never parses venue messages (the venue modules do) and never touches sockets.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::event::{Body, Event, EventSink, Gap, GapReason, Interner, Kind, UnixNanos};

/// Live counters of one feed, updated by the feed thread and readable from any other
/// thread (status line, tests) through an `Arc`.
#[derive(Debug, Default)]
pub struct FeedCounters {
    /// Websocket text messages received.
    pub messages: AtomicU64,
    /// Normalized events pushed into the sink (gaps included).
    pub events: AtomicU64,
    /// Connection attempts after the first (failed connects and lost connections alike).
    pub reconnects: AtomicU64,
    /// Gap events emitted.
    pub gaps: AtomicU64,
    /// Book checksums that matched (Kraken).
    pub checksum_ok: AtomicU64,
    /// Book checksums that did not match; each one resynchronises that book.
    pub checksum_failures: AtomicU64,
    /// Messages that could not be parsed.
    pub malformed: AtomicU64,
    /// True while a websocket connection is open.
    pub connected: AtomicBool,
    /// The most recent connection problem, for a status line.
    pub last_error: Mutex<Option<String>>,
}

impl FeedCounters {
    /// A fresh set of counters behind an `Arc`, ready to share.
    pub fn shared() -> Arc<FeedCounters> {
        Arc::new(FeedCounters::default())
    }

    /// A consistent-enough copy of every counter (each is read atomically).
    pub fn snapshot(&self) -> FeedStats {
        FeedStats {
            messages: self.messages.load(Ordering::Relaxed),
            events: self.events.load(Ordering::Relaxed),
            reconnects: self.reconnects.load(Ordering::Relaxed),
            gaps: self.gaps.load(Ordering::Relaxed),
            checksum_ok: self.checksum_ok.load(Ordering::Relaxed),
            checksum_failures: self.checksum_failures.load(Ordering::Relaxed),
            malformed: self.malformed.load(Ordering::Relaxed),
            connected: self.connected.load(Ordering::Relaxed),
        }
    }

    /// The last connection problem, if any.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }

    pub(crate) fn set_last_error(&self, error: String) {
        if let Ok(mut slot) = self.last_error.lock() {
            *slot = Some(error);
        }
    }

    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// A copy of [`FeedCounters`] at one moment; `Display` is a one-line status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FeedStats {
    /// Websocket text messages received.
    pub messages: u64,
    /// Normalized events pushed into the sink.
    pub events: u64,
    /// Connection attempts after the first.
    pub reconnects: u64,
    /// Gap events emitted.
    pub gaps: u64,
    /// Book checksums that matched.
    pub checksum_ok: u64,
    /// Book checksums that did not match.
    pub checksum_failures: u64,
    /// Messages that could not be parsed.
    pub malformed: u64,
    /// Whether a connection was open.
    pub connected: bool,
}

impl fmt::Display for FeedStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} msgs {} events {} reconnects {} gaps crc {}/{} malformed {}{}",
            self.messages,
            self.events,
            self.reconnects,
            self.gaps,
            self.checksum_ok,
            self.checksum_ok + self.checksum_failures,
            self.malformed,
            if self.connected {
                ""
            } else {
                " (disconnected)"
            }
        )
    }
}

/// A sink that also wants to run something periodically in the feed's thread
/// (bus heartbeats, a status line), since the feed blocks while the venue is quiet.
pub trait FeedSink: EventSink {
    /// Called about every [`TICK_EVERY`] while the feed runs: between messages, on read
    /// timeouts and during reconnect backoff (not during a connect attempt, which is
    /// bounded by `connect_timeout`). An error stops the feed like a refused event.
    fn tick(&mut self, stats: &FeedStats) -> anyhow::Result<()> {
        let _ = stats;
        Ok(())
    }
}

impl FeedSink for Vec<Event> {}

/// How often [`FeedSink::tick`] is called.
pub const TICK_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// Adapts a plain [`EventSink`] (no ticks).
pub struct PlainSink<'s>(pub &'s mut dyn EventSink);

impl EventSink for PlainSink<'_> {
    fn accept(&mut self, event: Event) -> anyhow::Result<()> {
        self.0.accept(event)
    }
}

impl FeedSink for PlainSink<'_> {}

/// Stamps events of one venue and pushes them into a sink.
///
/// `pub_seq` counts per (kind, symbol) from 1 and survives reconnects, so a subscriber
/// sees a jump only when events were really not published.
pub struct Publisher<'a> {
    sink: &'a mut dyn FeedSink,
    last_tick: std::time::Instant,
    venue: Arc<str>,
    names: Interner,
    seqs: HashMap<(Kind, Arc<str>), u64>,
    counters: Arc<FeedCounters>,
    origin: String,
}

impl<'a> Publisher<'a> {
    /// A publisher for `venue` into `sink`; `origin` (the endpoint) is written into gaps.
    pub fn new(
        venue: &str,
        origin: &str,
        sink: &'a mut dyn FeedSink,
        counters: Arc<FeedCounters>,
    ) -> Publisher<'a> {
        let mut names = Interner::default();
        Publisher {
            sink,
            last_tick: std::time::Instant::now(),
            venue: names.intern(venue),
            names,
            seqs: HashMap::new(),
            counters,
            origin: origin.to_string(),
        }
    }

    /// The shared copy of a symbol name.
    pub fn symbol(&mut self, symbol: &str) -> Arc<str> {
        self.names.intern(symbol)
    }

    /// The counters this publisher updates.
    pub fn counters(&self) -> &FeedCounters {
        &self.counters
    }

    /// Calls the sink's [`FeedSink::tick`] if [`TICK_EVERY`] has passed since the last one.
    pub fn tick(&mut self) -> anyhow::Result<()> {
        if self.last_tick.elapsed() < TICK_EVERY {
            return Ok(());
        }
        self.last_tick = std::time::Instant::now();
        self.sink.tick(&self.counters.snapshot())
    }

    /// Stamps `pub_seq` and pushes one event; an error from the sink stops the feed.
    pub fn emit(
        &mut self,
        symbol: &Arc<str>,
        ts_event: UnixNanos,
        ts_recv: UnixNanos,
        venue_seq: Option<u64>,
        prev_venue_seq: Option<u64>,
        body: Body,
    ) -> anyhow::Result<()> {
        let event = Event {
            venue: self.venue.clone(),
            symbol: symbol.clone(),
            ts_event,
            ts_recv,
            venue_seq,
            prev_venue_seq,
            pub_seq: 0,
            body,
        };
        let seq = self.seqs.entry((event.kind(), symbol.clone())).or_insert(0);
        *seq += 1;
        let event = Event {
            pub_seq: *seq,
            ..event
        };
        FeedCounters::bump(&self.counters.events);
        self.sink.accept(event)
    }

    /// Emits a gap for `symbol`: data may be missing before `ts_recv`.
    pub fn gap(
        &mut self,
        symbol: &Arc<str>,
        ts_recv: UnixNanos,
        reason: GapReason,
        missing: Option<u64>,
    ) -> anyhow::Result<()> {
        FeedCounters::bump(&self.counters.gaps);
        let body = Body::Gap(Gap {
            reason,
            missing,
            publisher: self.origin.clone(),
        });
        self.emit(symbol, ts_recv, ts_recv, None, None, body)
    }
}

/// The first instrument whose resubscribe (at the time stored in `pending`) has waited
/// longer than `timeout_ns` for its new snapshot: the feed should reconnect.
pub(crate) fn overdue_resubscribe(
    pending: &std::collections::HashMap<String, crate::event::UnixNanos>,
    now: crate::event::UnixNanos,
    timeout_ns: i64,
) -> Option<String> {
    pending
        .iter()
        .find(|(_, since)| now - **since > timeout_ns)
        .map(|(name, _)| name.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Fixed, Side, Trade};

    fn trade() -> Body {
        Body::Trade(Trade {
            price: Fixed::new(1, 0),
            size: Fixed::new(1, 0),
            aggressor: Side::Bid,
            trade_id: Default::default(),
        })
    }

    #[test]
    fn pub_seq_counts_per_kind_and_symbol_from_one() {
        let mut sink: Vec<Event> = Vec::new();
        let counters = FeedCounters::shared();
        let mut p = Publisher::new("kraken", "ws://x", &mut sink, counters.clone());
        let a = p.symbol("XBT/USD");
        let b = p.symbol("ETH/USD");
        p.emit(&a, 1, 1, None, None, trade()).unwrap();
        p.emit(&a, 2, 2, None, None, trade()).unwrap();
        p.emit(&b, 3, 3, None, None, trade()).unwrap();
        p.gap(&a, 4, GapReason::Resync, None).unwrap();
        let seqs: Vec<u64> = sink.iter().map(|e| e.pub_seq).collect();
        assert_eq!(seqs, vec![1, 2, 1, 1]);
        assert_eq!(&*sink[0].venue, "kraken");
        let stats = counters.snapshot();
        assert_eq!((stats.events, stats.gaps), (4, 1));
    }
}
