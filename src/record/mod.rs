//! The recorder: subscribe → decode → deduplicate → detect gaps → journal → Parquet.
//!
//! Owns the promise that what went over the bus is on disk exactly once with every hole
//! marked. The ingest loop (this thread) receives, checks and journals; a writer thread
//! builds Parquet so compression never delays receiving. Never does matching or replay.

pub mod dedup;
pub mod gaps;
mod ingest;
mod writer;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use serde::Serialize;

pub use ingest::Ingest;

use crate::bus::{Subscriber, SubscriberConfig};
use crate::shutdown::Stop;
use crate::store::{WriterOptions, WriterStats};

/// Makes the process's allocator give large freed buffers back to the system at once.
///
/// A recorder allocates and frees the same large buffers all day (Parquet row groups,
/// batches, ack lists, on several threads). glibc raises its mmap threshold to the size
/// of the largest block freed so far, after which such blocks come from the heap arenas
/// and their memory stays with the process: RSS then climbs for minutes to a high-water
/// mark (105 → 146 MiB over 3 minutes measured here) though the live heap does not grow.
/// A fixed threshold of 128 KiB keeps every large block in its own mapping, returned
/// when freed, so RSS follows the live heap; it costs an mmap/munmap pair per large
/// block, a few per second. Process-wide, so the `record` command calls it, not the
/// library. A no-op where the C library is not glibc.
pub fn return_freed_buffers_to_the_system() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; called before any recording
    // thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 << 10);
    }
}

/// Recorder configuration.
#[derive(Clone, Debug)]
pub struct RecordConfig {
    /// Dataset directory (created if missing; appended to if it exists).
    pub dataset: PathBuf,
    /// Publisher endpoints; several means redundant publishers of the same streams.
    pub connect: Vec<String>,
    /// Topic prefixes to record; empty records everything. Heartbeats and end-of-stream
    /// are received whatever the prefixes (`bus::with_control_topics`).
    pub topics: Vec<String>,
    /// Events received longer ago than this are durable (survive `kill -9`).
    pub flush_interval: Duration,
    /// Also `fdatasync` the journal at every flush (survive power loss).
    pub fsync: bool,
    /// Close the generation's files and start new ones this often.
    pub rotate_interval: Duration,
    /// ... or when the generation's journal reaches this many bytes.
    pub rotate_bytes: u64,
    /// How many recent events the deduplicator remembers.
    pub dedup_window: usize,
    /// How long a venue-sequence hole may wait for a late redundant copy.
    pub gap_grace: Duration,
    /// Silence threshold before a publisher's first heartbeat tells its interval.
    pub default_heartbeat: Duration,
    /// Stop once every publisher has sent end-of-stream.
    pub until_eos: bool,
    /// Parquet shape.
    pub writer: WriterOptions,
    /// The messages come from a durable broker (NATS JetStream, `crate::nats::record`)
    /// that redelivers what was not acknowledged, instead of from `connect`: sources are
    /// the publishers named in the messages, added as they appear; the deduplicator
    /// starts with what a killed session left in its journal (so a redelivered message
    /// is stored once); a restart marks no `recorder_down` gap (the broker kept
    /// everything); publisher sequence jumps are not gaps (the broker keeps one copy of
    /// each event, from whichever publisher was first).
    pub durable_source: bool,
}

impl Default for RecordConfig {
    fn default() -> RecordConfig {
        RecordConfig {
            dataset: PathBuf::from("data/recording"),
            connect: vec!["tcp://127.0.0.1:5555".into()],
            topics: Vec::new(),
            flush_interval: Duration::from_secs(1),
            fsync: true,
            rotate_interval: Duration::from_secs(900),
            rotate_bytes: 256 << 20,
            dedup_window: 1 << 20,
            gap_grace: Duration::from_secs(2),
            default_heartbeat: Duration::from_secs(1),
            until_eos: false,
            writer: WriterOptions::default(),
            durable_source: false,
        }
    }
}

/// Liveness of one publisher endpoint.
#[derive(Clone, Debug, Serialize)]
pub struct PublisherStatus {
    /// The endpoint.
    pub endpoint: String,
    /// Messages received from it.
    pub received: u64,
    /// Publisher-sequence jumps seen on it (messages missing).
    pub seq_missing: u64,
    /// True while it is silent for 3 heartbeat intervals.
    pub silent: bool,
    /// Times it went silent.
    pub silences: u64,
    /// True after its end-of-stream.
    pub ended: bool,
    /// Heartbeat interval it announced.
    pub heartbeat_ms: u64,
    #[serde(skip)]
    last_seen: Option<Instant>,
    #[serde(skip)]
    partitions: BTreeSet<(Arc<str>, Arc<str>)>,
}

/// Counters shown in the status line, the exit summary and `sessions.jsonl`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RecordStats {
    /// Messages received from all publishers.
    pub received: u64,
    /// Payload bytes received.
    pub bytes_received: u64,
    /// Events accepted (journaled, going to Parquet), gap rows included.
    pub accepted: u64,
    /// Duplicate copies dropped.
    pub duplicates: u64,
    /// Messages quarantined: undecodable, or naming a partition the file system cannot
    /// hold (see `docs/STORAGE.md`).
    pub malformed: u64,
    /// Quarantine writes that failed (the message is counted in `malformed` but its bytes
    /// are lost); recording goes on, with one warning on stderr.
    pub quarantine_failed: u64,
    /// Fields ignored because this protocol version does not define them (a publisher
    /// of a later minor version; see [`crate::event::Interner::unknown_fields`]).
    pub unknown_fields: u64,
    /// The first such field's name.
    pub first_unknown_field: Option<String>,
    /// Gap rows written.
    pub gaps: u64,
    /// Heartbeats seen.
    pub heartbeats: u64,
    /// Generations completed by rotation.
    pub rotations: u64,
    /// Events rebuilt from a previous session's journal at start.
    pub recovered: u64,
    /// Parquet writer counters.
    pub writer: WriterStats,
    /// Per publisher.
    pub publishers: Vec<PublisherStatus>,
    /// Seconds since start.
    pub elapsed_secs: f64,
}

impl RecordStats {
    /// Copies what the wire decoder ignored (its unknown-field counter) into the stats.
    fn note_decoder(&mut self, names: &crate::event::Interner) {
        self.unknown_fields = names.unknown_fields();
        if self.first_unknown_field.is_none() {
            self.first_unknown_field = names.first_unknown_field().map(str::to_string);
        }
    }
}

/// Appends one JSON line to the dataset's `_ticktape/sessions.jsonl`.
pub fn log_session(root: &Path, line: &serde_json::Value) -> Result<()> {
    crate::store::log_session(root, line)
}

/// Records until stopped (or until every publisher ended, with `until_eos`).
/// `on_status` is called about five times a second with the live counters.
pub fn run(
    config: &RecordConfig,
    stop: &Stop,
    mut on_status: impl FnMut(&RecordStats),
) -> Result<RecordStats> {
    let mut ingest = Ingest::open(config)?;
    let ctx = crate::bus::context();
    let mut subscriber = Subscriber::connect(
        &ctx,
        &SubscriberConfig {
            connect: config.connect.clone(),
            topics: crate::bus::with_control_topics(&config.topics),
            recv_hwm: 0,
        },
    )?;
    let mut last_status = Instant::now();
    let done = |ingest: &Ingest| stop.is_set() || (config.until_eos && ingest.all_ended());
    while !done(&ingest) {
        let wait = ingest
            .until_flush(Instant::now())
            .min(Duration::from_millis(50));
        // Drain what is there, reading the clock once per few dozen messages (liveness
        // and grace periods are seconds) and bounding the burst so flushes stay on time.
        let mut next = subscriber.recv_timeout(wait)?;
        let mut now = Instant::now();
        let mut burst = 0u32;
        while let Some(msg) = next {
            ingest.on_message(msg.source, msg.frames, now)?;
            burst += 1;
            if burst.is_multiple_of(64) {
                now = Instant::now();
                if burst >= 10_000 || ingest.until_flush(now).is_zero() {
                    break;
                }
            }
            next = subscriber.try_recv()?;
        }
        let now = Instant::now();
        ingest.on_tick(now)?;
        if now.duration_since(last_status) >= Duration::from_millis(200) {
            last_status = now;
            on_status(ingest.stats());
        }
    }
    let stats = ingest.close()?;
    on_status(&stats);
    Ok(stats)
}

/// Per-publisher liveness as a short string for status lines.
pub fn publishers_line(stats: &RecordStats) -> String {
    let mut by_state: HashMap<&str, usize> = HashMap::new();
    for p in &stats.publishers {
        let state = if p.ended {
            "ended"
        } else if p.silent {
            "SILENT"
        } else if p.received == 0 {
            "waiting"
        } else {
            "live"
        };
        *by_state.entry(state).or_default() += 1;
    }
    let mut parts: Vec<String> = by_state.iter().map(|(k, v)| format!("{v} {k}")).collect();
    parts.sort();
    parts.join(", ")
}
