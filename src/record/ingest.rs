//! The recorder's per-message work, apart from sockets: decode → deduplicate → detect
//! gaps → journal → hand over to the Parquet writer.
//!
//! [`Ingest`] owns the dataset while it records (lock, journal, writer thread); the
//! socket loop in [`super::run`] only feeds it messages and ticks. Keeping the two apart
//! lets a benchmark push pre-encoded messages through exactly the recorder's code.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::ops::Deref;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rustc_hash::FxHashMap;

use super::writer::{BATCH, ParquetWriter};
use super::{PublisherStatus, RecordConfig, RecordStats, dedup, gaps, log_session};
use crate::event::{Body, Event, GapReason, Interner, Kind, now_nanos};
use crate::store::{self, journal, layout};
use crate::wire;

/// A venue and symbol, as interned names.
type Partition = (Arc<str>, Arc<str>);

/// A dataset being recorded into.
pub struct Ingest {
    config: RecordConfig,
    /// Held while recording, so two recorders never write one dataset.
    _lock: File,
    started: Instant,
    started_ns: i64,
    generation: u64,
    generation_started: Instant,
    journal: journal::JournalWriter,
    last_flush: Instant,
    parquet: ParquetWriter,
    /// Accepted events not yet handed to the writer.
    batch: Vec<Event>,
    stats: RecordStats,
    names: Interner,
    dedup: dedup::DedupWindow,
    positions: Vec<dedup::MessagePosition>,
    pub_seqs: gaps::PublisherSeqs,
    venue_seqs: gaps::VenueSeqs,
    quarantine: Quarantine,
    /// Per publisher: the partition of its last event, to touch its set only on a change.
    last_partition: Vec<Option<(Arc<str>, Arc<str>)>>,
    /// Partitions checked against file-system limits: `Some(reason)` when unstorable.
    storable: FxHashMap<Partition, Option<Arc<str>>>,
    /// Scratch for the recorder's own events (gap rows).
    own_payload: Vec<u8>,
}

impl Ingest {
    /// Locks the dataset, recovers what a previous session left in its journal, and
    /// starts a new generation with its writer thread.
    pub fn open(config: &RecordConfig) -> Result<Ingest> {
        let root = config.dataset.clone();
        let lock = store::lock(&root)?;
        let recovery = store::recover_locked(&root, &config.writer)
            .with_context(|| format!("cannot recover dataset {}", root.display()))?;
        for warning in recovery.warnings() {
            eprintln!("warning: {warning}");
        }
        let generation = layout::max_generation(&root)?.map_or(0, |g| g + 1);
        std::fs::create_dir_all(root.join(layout::JOURNAL_DIR))?;
        let journal = journal::JournalWriter::open(&layout::journal_path(&root, generation))?;
        let parquet = ParquetWriter::start(root.clone(), generation, config.writer.clone())?;
        let publishers = config
            .connect
            .iter()
            .map(|ep| PublisherStatus::new(ep, config.default_heartbeat))
            .collect();
        let now = Instant::now();
        Ok(Ingest {
            _lock: lock,
            started: now,
            started_ns: now_nanos(),
            generation,
            generation_started: now,
            journal,
            last_flush: now,
            batch: parquet.empty_batch(),
            parquet,
            stats: RecordStats {
                recovered: recovery.events,
                publishers,
                ..RecordStats::default()
            },
            names: Interner::default(),
            dedup: dedup::DedupWindow::new(config.dedup_window),
            positions: config.connect.iter().map(|_| Default::default()).collect(),
            pub_seqs: gaps::PublisherSeqs::default(),
            venue_seqs: gaps::VenueSeqs::new(config.gap_grace),
            quarantine: Quarantine {
                dir: root.join(layout::QUARANTINE_DIR),
                file: None,
                warned: false,
            },
            last_partition: vec![None; config.connect.len()],
            storable: FxHashMap::default(),
            own_payload: Vec::with_capacity(256),
            config: config.clone(),
        })
    }

    /// True once every publisher has sent its end-of-stream.
    pub fn all_ended(&self) -> bool {
        self.stats.publishers.iter().all(|p| p.ended)
    }

    /// How long until the next flush is due.
    pub fn until_flush(&self, now: Instant) -> Duration {
        self.config
            .flush_interval
            .saturating_sub(now.duration_since(self.last_flush))
    }

    /// Takes one message `[topic, payload]` from publisher `source` (an index into
    /// [`RecordConfig::connect`]), received at `now`. A message that does not decode is
    /// quarantined, never an error; errors are the dataset's (disk, writer thread).
    pub fn on_message<F: Deref<Target = [u8]>>(
        &mut self,
        source: usize,
        frames: &[F],
        now: Instant,
    ) -> Result<()> {
        let publisher = &mut self.stats.publishers[source];
        publisher.received += 1;
        publisher.last_seen = Some(now);
        publisher.silent = false;
        self.stats.received += 1;
        self.stats.bytes_received += frames.iter().map(|f| f.len() as u64).sum::<u64>();
        let event = match wire::decode_message(frames, &mut self.names) {
            Ok(event) => event,
            Err(e) => {
                self.quarantine(source, frames, &e.to_string());
                return Ok(());
            }
        };
        match &event.body {
            Body::Heartbeat(h) => {
                self.stats.heartbeats += 1;
                self.stats.publishers[source].heartbeat_ms = h.interval_ms.max(1);
                Ok(())
            }
            Body::EndOfStream(_) => {
                self.stats.publishers[source].ended = true;
                Ok(())
            }
            Body::Book(_) | Body::Trade(_) | Body::Gap(_) => {
                self.on_data(source, event, frames, now)
            }
        }
    }

    /// Keeps a message that cannot be recorded in the quarantine file. A quarantine that
    /// cannot be written is counted and warned about once; it never stops recording.
    fn quarantine<F: Deref<Target = [u8]>>(&mut self, source: usize, frames: &[F], why: &str) {
        self.stats.malformed += 1;
        let endpoint = &self.stats.publishers[source].endpoint;
        if let Err(e) = self.quarantine.keep(self.generation, endpoint, frames, why) {
            self.stats.quarantine_failed += 1;
            if !std::mem::replace(&mut self.quarantine.warned, true) {
                eprintln!(
                    "warning: cannot write the quarantine in {} ({e:#}); rejected messages are counted but their bytes are not kept",
                    self.quarantine.dir.display()
                );
            }
        }
    }

    /// A data event (book, trade or a publisher's gap row) with its message frames.
    fn on_data<F: Deref<Target = [u8]>>(
        &mut self,
        source: usize,
        event: Event,
        frames: &[F],
        now: Instant,
    ) -> Result<()> {
        // Interned names: the same partition as last time is the same pair of pointers.
        let last = &self.last_partition[source];
        if !last
            .as_ref()
            .is_some_and(|(v, s)| Arc::ptr_eq(v, &event.venue) && Arc::ptr_eq(s, &event.symbol))
        {
            let key = (event.venue.clone(), event.symbol.clone());
            let root = &self.config.dataset;
            let unstorable = self
                .storable
                .entry(key.clone())
                .or_insert_with(|| {
                    store::writer::unstorable_partition(root, &key.0, &key.1).map(Arc::from)
                })
                .clone();
            if let Some(reason) = unstorable {
                // Checked before journaling: a journaled event that cannot be written
                // would stop the writer and every recovery after it.
                self.quarantine(source, frames, &reason);
                return Ok(());
            }
            self.stats.publishers[source].partitions.insert(key.clone());
            self.last_partition[source] = Some(key);
        }
        let payload = &frames[1];
        let key = self.positions[source].key(&event);
        self.dedup.prefetch(key);
        let mut reported = false;
        if let Some(missing) = self.pub_seqs.observe(source, &event) {
            self.stats.publishers[source].seq_missing += missing;
            // With redundant publishers a sequenced venue's own gap check decides
            // whether anything is really missing; one publisher's jump is not enough.
            if self.config.connect.len() == 1 || event.venue_seq.is_none() {
                reported = true;
                let gap = gaps::gap_event(
                    event.venue.clone(),
                    event.symbol.clone(),
                    event.ts_recv,
                    GapReason::PublisherSeq,
                    Some(missing),
                    &self.stats.publishers[source].endpoint,
                );
                self.accept_own(gap)?;
            }
        }
        if !self.dedup.first_time(key) {
            self.stats.duplicates += 1;
            return Ok(());
        }
        let endpoint = &self.stats.publishers[source].endpoint;
        self.venue_seqs.observe(&event, endpoint, now, reported);
        self.journal.append(payload)?;
        if event.kind() == Kind::Gap {
            self.stats.gaps += 1;
        }
        self.accept(event)
    }

    /// Journals and accepts an event the recorder itself produced (a gap row).
    fn accept_own(&mut self, event: Event) -> Result<()> {
        self.own_payload.clear();
        wire::encode(&event, &mut self.own_payload);
        self.journal.append(&self.own_payload)?;
        self.stats.gaps += 1;
        self.accept(event)
    }

    /// Queues a journaled event for Parquet.
    fn accept(&mut self, event: Event) -> Result<()> {
        self.stats.accepted += 1;
        self.batch.push(event);
        if self.batch.len() >= BATCH {
            let full = std::mem::replace(&mut self.batch, self.parquet.empty_batch());
            if let Some(full) = self.parquet.try_hand_over(full)? {
                // The writer is behind: make what we hold durable before waiting for it,
                // so the flush promise holds however long the wait.
                self.flush()?;
                self.parquet.hand_over(full)?;
            }
        }
        Ok(())
    }

    /// Makes every accepted event durable in the journal (and the quarantine readable).
    fn flush(&mut self) -> Result<()> {
        self.last_flush = Instant::now();
        self.journal.flush(self.config.fsync)?;
        self.quarantine.flush();
        Ok(())
    }

    /// Time-driven work, called between bursts of messages: silent publishers, venue
    /// holes whose grace ran out, the flush interval and rotation.
    pub fn on_tick(&mut self, now: Instant) -> Result<()> {
        self.check_silence(now)?;
        for gap in self.venue_seqs.expired(now, false) {
            self.accept_own(gap)?;
        }
        if now.duration_since(self.last_flush) < self.config.flush_interval {
            return Ok(());
        }
        self.flush()?;
        if !self.batch.is_empty() {
            let batch = std::mem::replace(&mut self.batch, self.parquet.empty_batch());
            self.parquet.hand_over(batch)?;
        }
        if self.generation_started.elapsed() >= self.config.rotate_interval
            || self.journal.bytes() >= self.config.rotate_bytes
        {
            self.rotate()?;
        }
        Ok(())
    }

    /// Silence is 3 missed heartbeats; it is a gap in the dataset only when no other
    /// publisher is live to cover it.
    fn check_silence(&mut self, now: Instant) -> Result<()> {
        let mut newly_silent = Vec::new();
        for (i, p) in self.stats.publishers.iter_mut().enumerate() {
            let limit = Duration::from_millis(p.heartbeat_ms * 3);
            if !p.silent && !p.ended && p.last_seen.is_some_and(|t| now - t > limit) {
                p.silent = true;
                p.silences += 1;
                newly_silent.push(i);
            }
        }
        for i in newly_silent {
            let publishers = &self.stats.publishers;
            let others_live = publishers
                .iter()
                .enumerate()
                .any(|(j, p)| j != i && !p.silent && !p.ended && p.last_seen.is_some());
            if others_live {
                continue;
            }
            let endpoint = publishers[i].endpoint.clone();
            let partitions: Vec<_> = publishers[i].partitions.iter().cloned().collect();
            for (venue, symbol) in partitions {
                let gap = gaps::gap_event(
                    venue,
                    symbol,
                    now_nanos(),
                    GapReason::Silence,
                    None,
                    &endpoint,
                );
                self.accept_own(gap)?;
            }
        }
        Ok(())
    }

    /// Closes this generation (its journal is deleted once its Parquet is closed) and
    /// opens the next.
    fn rotate(&mut self) -> Result<()> {
        let root = &self.config.dataset;
        self.generation += 1;
        let next = journal::JournalWriter::open(&layout::journal_path(root, self.generation))?;
        std::mem::replace(&mut self.journal, next).flush(self.config.fsync)?;
        self.parquet.rotate(self.generation)?;
        self.quarantine.file = None;
        self.generation_started = Instant::now();
        self.stats.rotations += 1;
        Ok(())
    }

    /// The counters so far.
    pub fn stats(&mut self) -> &RecordStats {
        self.stats.elapsed_secs = self.started.elapsed().as_secs_f64();
        self.stats.writer = self.parquet.stats();
        &self.stats
    }

    /// Clean shutdown: settles open holes, makes everything durable, closes the files
    /// and logs the session in the dataset.
    pub fn close(mut self) -> Result<RecordStats> {
        for gap in self.venue_seqs.expired(Instant::now(), true) {
            self.accept_own(gap)?;
        }
        self.flush()?;
        if !self.batch.is_empty() {
            self.parquet.hand_over(std::mem::take(&mut self.batch))?;
        }
        self.stats.writer = self.parquet.close()?;
        self.stats.elapsed_secs = self.started.elapsed().as_secs_f64();
        log_session(
            &self.config.dataset,
            &serde_json::json!({
                "tool": "record",
                "started": self.started_ns,
                "ended": now_nanos(),
                "connect": self.config.connect,
                "stats": self.stats,
            }),
        )?;
        Ok(self.stats)
    }
}

impl PublisherStatus {
    fn new(endpoint: &str, default_heartbeat: Duration) -> PublisherStatus {
        PublisherStatus {
            endpoint: endpoint.to_string(),
            received: 0,
            seq_missing: 0,
            silent: false,
            silences: 0,
            ended: false,
            heartbeat_ms: default_heartbeat.as_millis() as u64,
            last_seen: None,
            partitions: BTreeSet::new(),
        }
    }
}

/// Appends undecodable messages to `_quarantine/malformed-<generation>.jsonl`.
struct Quarantine {
    dir: PathBuf,
    file: Option<File>,
    /// A failed write was reported on stderr already.
    warned: bool,
}

impl Quarantine {
    fn keep<F: Deref<Target = [u8]>>(
        &mut self,
        generation: u64,
        source: &str,
        frames: &[F],
        error: &str,
    ) -> Result<()> {
        if self.file.is_none() {
            let path = self.dir.join(format!("malformed-{generation:08}.jsonl"));
            std::fs::create_dir_all(&self.dir)
                .with_context(|| format!("cannot create {}", self.dir.display()))?;
            self.file = Some(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .with_context(|| format!("cannot open quarantine {}", path.display()))?,
            );
        }
        let frames_json: Vec<serde_json::Value> = frames
            .iter()
            .map(|f| match std::str::from_utf8(f) {
                Ok(s) => serde_json::json!({ "utf8": s }),
                Err(_) => serde_json::json!({ "hex": hex(f) }),
            })
            .collect();
        let line = serde_json::json!({
            "ts_recv": now_nanos(),
            "publisher": source,
            "error": error,
            "frames": frames_json,
        });
        if let Some(f) = self.file.as_mut() {
            writeln!(f, "{line}")?;
        }
        Ok(())
    }

    fn flush(&mut self) {
        if let Some(f) = self.file.as_mut() {
            let _ = f.flush();
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{BookDelta, Fixed, Flags, Side};
    use std::path::Path;

    /// `[topic, binary payload]` of a one-level book message with venue sequence `seq`.
    fn message(seq: u64, pub_seq: u64) -> [Vec<u8>; 2] {
        message_for("S", seq, pub_seq)
    }

    /// [`message`] for another symbol of venue `v`.
    fn message_for(symbol: &str, seq: u64, pub_seq: u64) -> [Vec<u8>; 2] {
        let mut e = wire::event(
            "v",
            symbol,
            1_700_000_000_000_000_000 + seq as i64,
            pub_seq,
            Body::Book(BookDelta {
                side: Side::Bid,
                price: Fixed::new(100 + seq as i64, 2),
                size: Fixed::new(7, 0),
                flags: Flags::LAST,
            }),
        );
        e.venue_seq = Some(seq);
        e.prev_venue_seq = Some(seq - 1);
        let mut payload = Vec::new();
        wire::encode_as(wire::Encoding::Binary, &e, &mut payload);
        [wire::topic(&e).into_bytes(), payload]
    }

    #[test]
    fn two_sources_one_copy_each_holes_and_bad_input_without_sockets() {
        let dir = tempfile::tempdir().unwrap();
        let config = RecordConfig {
            dataset: dir.path().join("ds"),
            connect: vec!["a".into(), "b".into()],
            fsync: false,
            ..RecordConfig::default()
        };
        let mut ingest = Ingest::open(&config).unwrap();
        let now = Instant::now();
        for seq in 1..=100 {
            ingest.on_message(0, &message(seq, seq), now).unwrap();
        }
        // The second publisher joins late and relays the same venue messages.
        for (i, seq) in (51..=100).enumerate() {
            ingest
                .on_message(1, &message(seq, i as u64 + 1), now)
                .unwrap();
        }
        ingest
            .on_message(0, &[b"book.v.S".to_vec(), b"{not json".to_vec()], now)
            .unwrap();
        // Venue messages 101..=104 never arrive from anyone.
        ingest.on_message(0, &message(105, 101), now).unwrap();
        let stats = ingest.close().unwrap();
        assert_eq!(stats.duplicates, 50);
        assert_eq!(stats.malformed, 1);
        assert_eq!(stats.gaps, 1, "one venue_seq gap row for 101..=104");
        assert_eq!(stats.accepted, 101 + 1);
        assert_eq!(stats.writer.rows, 102);
        let quarantine = dir.path().join("ds").join(layout::QUARANTINE_DIR);
        let kept = std::fs::read_dir(&quarantine).unwrap().count();
        assert_eq!(
            kept,
            1,
            "the malformed message is kept in {}",
            quarantine.display()
        );
    }

    fn config(dir: &Path) -> RecordConfig {
        RecordConfig {
            dataset: dir.join("ds"),
            connect: vec!["a".into()],
            fsync: false,
            ..RecordConfig::default()
        }
    }

    #[test]
    fn symbol_too_long_for_a_file_name_is_quarantined_and_recording_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        let poison = "S".repeat(300);
        let now = Instant::now();
        let mut ingest = Ingest::open(&config).unwrap();
        for seq in 1..=10 {
            ingest.on_message(0, &message(seq, seq), now).unwrap();
        }
        ingest
            .on_message(0, &message_for(&poison, 1, 1), now)
            .unwrap();
        for seq in 11..=20 {
            ingest.on_message(0, &message(seq, seq), now).unwrap();
        }
        let stats = ingest.close().unwrap();
        assert_eq!(stats.malformed, 1, "the poison message is quarantined");
        assert_eq!(stats.writer.rows, 20);
        let kept = std::fs::read_to_string(
            config
                .dataset
                .join(layout::QUARANTINE_DIR)
                .join("malformed-00000000.jsonl"),
        )
        .unwrap();
        assert!(kept.contains("255"), "the reason names the limit: {kept}");
        // The dataset opens again: nothing unwritable was journaled.
        Ingest::open(&config).unwrap().close().unwrap();
    }

    #[test]
    fn failed_quarantine_write_is_counted_and_recording_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        let mut ingest = Ingest::open(&config).unwrap();
        // A file where the quarantine directory should be: every quarantine write fails.
        std::fs::write(config.dataset.join(layout::QUARANTINE_DIR), b"in the way").unwrap();
        let now = Instant::now();
        ingest
            .on_message(0, &[b"book.v.S".to_vec(), b"{not json".to_vec()], now)
            .unwrap();
        ingest
            .on_message(0, &[b"book.v.S".to_vec(), b"{nor this".to_vec()], now)
            .unwrap();
        for seq in 1..=10 {
            ingest.on_message(0, &message(seq, seq), now).unwrap();
        }
        let stats = ingest.close().unwrap();
        assert_eq!(stats.malformed, 2);
        assert_eq!(stats.quarantine_failed, 2);
        assert_eq!(stats.writer.rows, 10);
    }

    #[test]
    fn writer_thread_failure_is_reported_with_its_cause() {
        let dir = tempfile::tempdir().unwrap();
        let config = RecordConfig {
            flush_interval: Duration::ZERO,
            ..config(dir.path())
        };
        let mut ingest = Ingest::open(&config).unwrap();
        // A file where venue v's directory should be: the writer thread cannot go on.
        std::fs::write(config.dataset.join("v"), b"in the way").unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut seq = 0;
        let error = loop {
            seq += 1;
            let now = Instant::now();
            let step = ingest
                .on_message(0, &message(seq, seq), now)
                .and_then(|()| ingest.on_tick(now));
            if let Err(e) = step {
                break e;
            }
            assert!(Instant::now() < deadline, "the writer never failed");
            std::thread::sleep(Duration::from_millis(5));
        };
        let text = format!("{error:#}");
        assert!(text.contains("cannot create partition"), "{text}");
    }
}
