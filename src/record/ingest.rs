//! The recorder's per-message work, apart from sockets: decode → deduplicate → detect
//! gaps → journal → hand over to the Parquet writer.
//!
//! [`Ingest`] owns the dataset while it records (lock, journal, writer thread); the
//! socket loop in [`super::run`] only feeds it messages and ticks. Opening recovers what
//! a previous session left, resumes every stream from the dataset's stream tails (so the
//! downtime gets `recorder_down` rows) and marks the session in progress; closing marks
//! cut venue messages, saves the tails and logs the session. Keeping the two apart
//! lets a benchmark push pre-encoded messages through exactly the recorder's code.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Write;
use std::ops::Deref;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rustc_hash::{FxHashMap, FxHashSet};

use super::writer::{BATCH, ParquetWriter};
use super::{PublisherStatus, RecordConfig, RecordStats, dedup, gaps, log_session};
use crate::event::{Body, Event, GapReason, Interner, Kind, now_nanos};
use crate::store::{self, SessionMarker, StreamTails, files, journal, layout};
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
    /// Where each stream ended before this session (read back at open).
    resumed_from: StreamTails,
    /// Streams whose first event after the restart has not come yet.
    downtime: Option<gaps::Downtime>,
    /// Partitions that got a downtime row at the deadline without any event: no longer
    /// expected, unless they come back.
    dormant: FxHashSet<Partition>,
    /// Journal flushes so far (a durable source acknowledges after each).
    flushes: u64,
}

impl Ingest {
    /// Locks the dataset, recovers what a previous session left in its journal, and
    /// starts a new generation with its writer thread.
    pub fn open(config: &RecordConfig) -> Result<Ingest> {
        let root = config.dataset.clone();
        let lock = store::lock(&root)?;
        let mut dedup = dedup::DedupWindow::new(config.dedup_window);
        if config.durable_source {
            seed_redeliveries(&root, &mut dedup, config.dedup_window)?;
        }
        let recovery = store::recover_locked_marking(&root, &config.writer, !config.durable_source)
            .with_context(|| format!("cannot recover dataset {}", root.display()))?;
        for warning in recovery.warnings() {
            eprintln!("warning: {warning}");
        }
        let generation = layout::max_generation(&root)?.map_or(0, |g| g + 1);
        files::create_dir_all(&root.join(layout::JOURNAL_DIR))?;
        let journal = journal::JournalWriter::open(&layout::journal_path(&root, generation))?;
        let parquet = ParquetWriter::start(root.clone(), generation, config.writer.clone())?;
        let publishers = config
            .connect
            .iter()
            .map(|ep| PublisherStatus::new(ep, config.default_heartbeat))
            .collect();
        let resumed_from = StreamTails::load(&root).unwrap_or_else(|e| {
            eprintln!(
                "warning: {e:#}; recording without the dataset's stream tails (this restart's downtime is marked without counts)"
            );
            StreamTails::default()
        });
        let now = Instant::now();
        let started_ns = now_nanos();
        SessionMarker {
            started: started_ns,
            pid: std::process::id(),
            connect: config.connect.clone(),
            generation,
        }
        .save(&root)?;
        let mut ingest = Ingest {
            _lock: lock,
            started: now,
            started_ns,
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
            dedup,
            positions: config.connect.iter().map(|_| Default::default()).collect(),
            pub_seqs: gaps::PublisherSeqs::default(),
            venue_seqs: gaps::VenueSeqs::new(config.gap_grace)
                .counting_live_input(config.durable_source),
            quarantine: Quarantine {
                dir: root.join(layout::QUARANTINE_DIR),
                file: None,
                warned: false,
            },
            last_partition: vec![None; config.connect.len()],
            storable: FxHashMap::default(),
            own_payload: Vec::with_capacity(256),
            config: config.clone(),
            resumed_from,
            downtime: None,
            dormant: FxHashSet::default(),
            flushes: 0,
        };
        ingest.resume(now);
        Ok(ingest)
    }

    /// Continues every stream the dataset was recording (not ended): sequence numbers
    /// resume from its tail, and its first event marks the downtime (see
    /// [`gaps::Downtime`]).
    fn resume(&mut self, now: Instant) {
        let mut downtime = gaps::Downtime::new(now + self.config.gap_grace);
        for tail in self.resumed_from.topics.values().filter(|t| !t.ended) {
            let Some(kind) = Kind::from_name(&tail.kind) else {
                continue;
            };
            let venue = self.names.intern(&tail.venue);
            let symbol = self.names.intern(&tail.symbol);
            for (endpoint, &seq) in &tail.pub_seqs {
                if let Some(i) = self.config.connect.iter().position(|c| c == endpoint) {
                    self.pub_seqs
                        .restore(i, kind, venue.clone(), symbol.clone(), seq);
                }
            }
            let restored = gaps::Tail {
                venue_seq: tail.venue_seq,
                ts_recv: tail.ts_recv,
                open_message: false,
                seen: false,
            };
            self.venue_seqs
                .restore(kind, venue.clone(), symbol.clone(), restored);
            if !self.config.durable_source {
                downtime.add(kind, venue, symbol, tail.ts_recv);
            }
        }
        self.downtime = (!downtime.is_empty()).then_some(downtime);
    }

    /// For the first event of a stream after a restart: writes the `recorder_down` row
    /// from the stream's partition's last stored event to this one, counting what is
    /// missing by sequence (publisher sequence with one publisher or no venue ids, else
    /// the venue's). True when a row was written (the event's own sequence jump is then
    /// not reported again).
    fn resume_stream(&mut self, source: usize, event: &Event) -> Result<bool> {
        let Some(since) = self.downtime.as_mut().and_then(|d| d.resume(event)) else {
            return Ok(false);
        };
        let last_pub = self.pub_seqs.last(source, event);
        let by_pub =
            (last_pub > 0 && event.pub_seq > last_pub).then(|| event.pub_seq - last_pub - 1);
        let last_venue = self.venue_seqs.tail(event).and_then(|t| t.venue_seq);
        let by_venue = match (last_venue, event.prev_venue_seq) {
            (Some(last), Some(prev)) if prev >= last => Some(prev - last),
            _ => None,
        };
        let missing = if self.config.connect.len() == 1 || event.venue_seq.is_none() {
            by_pub.or(by_venue)
        } else {
            by_venue.or(by_pub)
        };
        let mut gap = gaps::gap_event(
            event.venue.clone(),
            event.symbol.clone(),
            event.ts_recv.max(since),
            GapReason::RecorderDown,
            missing,
            &self.stats.publishers[source].endpoint,
        );
        gap.ts_event = since;
        self.accept_own(gap)?;
        Ok(true)
    }

    /// Past the downtime deadline: one `recorder_down` row for each partition no event
    /// resumed, from its last stored event to this session's start.
    fn expire_downtime(&mut self, now: Instant) -> Result<()> {
        let Some(silent) = self.downtime.as_mut().and_then(|d| d.expire(now)) else {
            return Ok(());
        };
        self.downtime = None;
        for (venue, symbol, since) in silent {
            let mut gap = gaps::gap_event(
                venue.clone(),
                symbol.clone(),
                self.started_ns.max(since),
                GapReason::RecorderDown,
                None,
                "",
            );
            gap.ts_event = since;
            self.accept_own(gap)?;
            self.dormant.insert((venue, symbol));
        }
        Ok(())
    }

    /// Where every stream ends now: the tails read at open, overlaid with this session's
    /// streams. Saved before a generation's journal can be deleted (rotation, close).
    fn stream_tails(&self) -> StreamTails {
        let mut tails = self.resumed_from.clone();
        let mut every_source_ended: FxHashMap<(Kind, &str, &str), bool> = FxHashMap::default();
        for (i, p) in self.stats.publishers.iter().enumerate() {
            for (kind, venue, symbol, seq) in self.pub_seqs.of_source(i) {
                let key = (kind, &**venue, &**symbol);
                *every_source_ended.entry(key).or_insert(true) &= p.ended;
                let entry = tails.entry(kind, venue, symbol);
                entry.pub_seqs.insert(p.endpoint.clone(), seq);
            }
        }
        for (kind, venue, symbol, t) in self.venue_seqs.tails() {
            let entry = tails.entry(kind, venue, symbol);
            if t.seen {
                entry.ts_recv = entry.ts_recv.max(t.ts_recv);
                entry.venue_seq = t.venue_seq.or(entry.venue_seq);
                entry.open_message = t.open_message;
                entry.ended = every_source_ended
                    .get(&(kind, &**venue, &**symbol))
                    .copied()
                    .unwrap_or(false);
            } else if self.dormant.contains(&(venue.clone(), symbol.clone())) {
                entry.ended = true;
            }
        }
        // Streams only a publisher's counter knows of (all their events quarantined or
        // duplicates) have no stored end: leave them out.
        tails.topics.retain(|_, t| t.ts_recv > 0);
        tails
    }

    /// True once every publisher has sent its end-of-stream (and there was one).
    pub fn all_ended(&self) -> bool {
        !self.stats.publishers.is_empty() && self.stats.publishers.iter().all(|p| p.ended)
    }

    /// The source index of the publisher `name` of a durable source, added on first
    /// sight (see [`RecordConfig::durable_source`]).
    pub fn source(&mut self, name: &str) -> usize {
        if let Some(i) = self
            .stats
            .publishers
            .iter()
            .position(|p| p.endpoint == name)
        {
            return i;
        }
        self.stats
            .publishers
            .push(PublisherStatus::new(name, self.config.default_heartbeat));
        self.positions.push(Default::default());
        self.last_partition.push(None);
        self.stats.publishers.len() - 1
    }

    /// Journal flushes so far: everything taken before a flush is durable after it.
    pub fn flushes(&self) -> u64 {
        self.flushes
    }

    /// Flushes the journal now (a durable source does when many messages await their
    /// acknowledgement), instead of at the next flush interval.
    pub fn flush_now(&mut self) -> Result<()> {
        self.flush()
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
        self.venue_seqs.input(now);
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
        // Behind a broker, one venue message may arrive partly from each publisher: the
        // position within it is the stream's, not a publisher's.
        let position = if self.config.durable_source {
            0
        } else {
            source
        };
        let key = self.positions[position].key(&event);
        self.dedup.prefetch(key);
        let mut reported = self.downtime.is_some() && self.resume_stream(source, &event)?;
        let jump = if self.config.durable_source {
            None
        } else {
            self.pub_seqs.observe(source, &event)
        };
        if let Some(missing) = jump {
            self.stats.publishers[source].seq_missing += missing;
            // With redundant publishers a sequenced venue's own gap check decides
            // whether anything is really missing; one publisher's jump is not enough.
            if !reported && (self.config.connect.len() == 1 || event.venue_seq.is_none()) {
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
        self.flushes += 1;
        Ok(())
    }

    /// Time-driven work, called between bursts of messages: silent publishers, venue
    /// holes whose grace ran out, the flush interval and rotation.
    pub fn on_tick(&mut self, now: Instant) -> Result<()> {
        self.check_silence(now)?;
        if self.downtime.is_some() {
            self.expire_downtime(now)?;
        }
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
    /// publisher is live to cover it. From a durable source it is never a gap: a pause
    /// in deliveries (a broker fail-over, a slow consumer) loses nothing, the broker
    /// delivers what was published meanwhile, and real holes show in venue sequences.
    fn check_silence(&mut self, now: Instant) -> Result<()> {
        if self.config.durable_source {
            return Ok(());
        }
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
        // The closed generation's journal goes once its Parquet is closed: its streams'
        // ends must be in the tails file first.
        self.stream_tails().save(root)?;
        self.parquet.rotate(self.generation)?;
        self.quarantine.file = None;
        self.generation_started = Instant::now();
        self.stats.rotations += 1;
        Ok(())
    }

    /// The counters so far.
    pub fn stats(&mut self) -> &RecordStats {
        self.stats.note_decoder(&self.names);
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
        if !self.config.durable_source {
            // A durable broker delivers the rest of an unfinished message next time.
            self.mark_cut_messages()?;
        }
        self.flush()?;
        if !self.batch.is_empty() {
            let batch = std::mem::take(&mut self.batch);
            self.parquet.hand_over(batch)?;
        }
        // Before the writer deletes the journal: a crash in between replays the journal
        // over these tails, which changes nothing.
        self.stream_tails().save(&self.config.dataset)?;
        self.stats.writer = self.parquet.close()?;
        self.stats.note_decoder(&self.names);
        self.stats.elapsed_secs = self.started.elapsed().as_secs_f64();
        log_session(
            &self.config.dataset,
            &serde_json::json!({
                "tool": "record",
                "started": self.started_ns,
                "ended": now_nanos(),
                "end": "clean",
                "connect": self.config.connect,
                "stats": self.stats,
            }),
        )?;
        SessionMarker::remove(&self.config.dataset)?;
        Ok(self.stats)
    }

    /// Stopping now cuts the venue messages in progress: a `cut_message` row after the
    /// last stored row of each.
    fn mark_cut_messages(&mut self) -> Result<()> {
        let open: Vec<(Kind, Arc<str>, Arc<str>, i64)> = self
            .venue_seqs
            .tails()
            .filter(|(_, _, _, t)| t.seen && t.open_message)
            .map(|(k, v, s, t)| (k, v.clone(), s.clone(), t.ts_recv))
            .collect();
        for (kind, venue, symbol, ts_recv) in open {
            let mut gap = gaps::gap_event(
                venue.clone(),
                symbol.clone(),
                ts_recv,
                GapReason::CutMessage,
                None,
                "",
            );
            gap.ts_event = ts_recv;
            self.accept_own(gap)?;
            self.venue_seqs.close_message(kind, &venue, &symbol);
        }
        Ok(())
    }

    /// Test helper: stops like `kill -9` after a flush (journal kept, no footers, no
    /// session line, marker left behind).
    #[cfg(test)]
    pub(crate) fn crash(mut self) {
        self.flush().unwrap();
        self.parquet.abandon();
    }
}

/// The dedup keys a durable source may still deliver again (`_ticktape/redelivery-keys`,
/// u64 little-endian): what killed sessions had journaled without the broker's ack.
const REDELIVERY_KEYS: &str = "redelivery-keys";

/// Starts the deduplicator with every event a killed session journaled: the journals of
/// unfinished generations (before recovery turns them into Parquet), and the keys kept
/// from earlier kills (a session killed before the broker delivered again what its
/// predecessor had not acknowledged leaves them to the next). A durable source redelivers
/// what was not acknowledged, and some of it is in the dataset already. The newest
/// `capacity` keys are kept for the next session, written before recovery runs.
fn seed_redeliveries(
    root: &std::path::Path,
    window: &mut dedup::DedupWindow,
    capacity: usize,
) -> Result<()> {
    let keys_path = root.join(layout::META_DIR).join(REDELIVERY_KEYS);
    let mut keys: Vec<u64> = match std::fs::read(&keys_path) {
        Ok(bytes) => bytes
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            return Err(e).with_context(|| format!("cannot read {}", keys_path.display()));
        }
    };
    let dir = root.join(layout::JOURNAL_DIR);
    let mut journals: Vec<(u64, PathBuf)> = Vec::new();
    if dir.is_dir() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))?
        {
            let entry = entry?;
            if let Some(g) = entry
                .file_name()
                .to_str()
                .and_then(layout::generation_of_journal)
            {
                journals.push((g, entry.path()));
            }
        }
    }
    journals.sort();
    let before = keys.len();
    let mut names = Interner::default();
    let mut position = dedup::MessagePosition::default();
    for (_, path) in journals {
        journal::read_journal(&path, |payload| {
            if let Ok(event) = wire::decode(payload, &mut names)
                && matches!(event.kind(), Kind::Book | Kind::Trade | Kind::Gap)
            {
                keys.push(position.key(&event));
            }
            Ok(())
        })?;
    }
    let keep = keys.len().saturating_sub(capacity);
    keys.drain(..keep);
    for &key in &keys {
        let _ = window.first_time(key);
    }
    if keys.len() != before || keep > 0 {
        let bytes: Vec<u8> = keys.iter().flat_map(|k| k.to_le_bytes()).collect();
        store::streams::write_atomically(&keys_path, &bytes)?;
    }
    Ok(())
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
            files::create_dir_all(&self.dir)
                .with_context(|| format!("cannot create {}", self.dir.display()))?;
            self.file = Some(
                files::append(&path)
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
        level(symbol, seq, pub_seq, true)
    }

    /// One level of book message `seq` on `v/<symbol>`; `last` sets its LAST flag.
    fn level(symbol: &str, seq: u64, pub_seq: u64, last: bool) -> [Vec<u8>; 2] {
        let mut e = wire::event(
            "v",
            symbol,
            1_700_000_000_000_000_000 + seq as i64,
            pub_seq,
            Body::Book(BookDelta {
                side: Side::Bid,
                price: Fixed::new(100 + seq as i64, 2),
                size: Fixed::new(7, 0),
                flags: if last { Flags::LAST } else { Flags::default() },
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
        // The boundary validator (64-byte names) refuses it before the file-system check
        // (255-byte names) would; either way the reason names the limit.
        assert!(
            kept.contains("at most 64") || kept.contains("255"),
            "the reason names the limit: {kept}"
        );
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

    /// Gap rows of the dataset: (symbol, reason, ts_event, ts_recv, missing).
    fn gap_rows(config: &RecordConfig) -> Vec<(String, GapReason, i64, i64, Option<u64>)> {
        crate::store::EventReader::open(&config.dataset, Default::default())
            .unwrap()
            .map(|e| e.unwrap())
            .filter_map(|e| match &e.body {
                Body::Gap(g) => Some((
                    e.symbol.to_string(),
                    g.reason,
                    e.ts_event,
                    e.ts_recv,
                    g.missing,
                )),
                _ => None,
            })
            .collect()
    }

    const T0: i64 = 1_700_000_000_000_000_000;

    #[test]
    fn restart_after_a_kill_marks_the_downtime_with_what_is_missing_by_sequence() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        let now = Instant::now();
        let mut first = Ingest::open(&config).unwrap();
        for seq in 1..=100 {
            first.on_message(0, &message(seq, seq), now).unwrap();
        }
        first.crash();
        // Venue messages 101..=200 went by while no recorder ran.
        let mut second = Ingest::open(&config).unwrap();
        for seq in 201..=250 {
            second.on_message(0, &message(seq, seq), now).unwrap();
        }
        let stats = second.close().unwrap();
        assert_eq!(stats.recovered, 100);
        assert_eq!(
            stats.gaps, 1,
            "one row for the downtime, not a second for the jump"
        );
        assert_eq!(
            gap_rows(&config),
            vec![(
                "S".to_string(),
                GapReason::RecorderDown,
                T0 + 100,
                T0 + 201,
                Some(100)
            )],
            "from the last stored event to the first after the restart, 100 missing"
        );
        let log = std::fs::read_to_string(config.dataset.join("_ticktape/sessions.jsonl")).unwrap();
        let lines: Vec<serde_json::Value> = log
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{log}");
        assert_eq!(lines[0]["end"], "abnormal");
        assert_eq!(lines[0]["recovered"]["events"], 100);
        assert_eq!(lines[1]["end"], "clean");
    }

    #[test]
    fn restart_after_a_clean_stop_marks_the_downtime_and_silent_partitions_at_the_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let config = RecordConfig {
            gap_grace: Duration::from_millis(100),
            ..config(dir.path())
        };
        let now = Instant::now();
        let mut first = Ingest::open(&config).unwrap();
        for seq in 1..=10 {
            first
                .on_message(0, &message_for("A", seq, seq), now)
                .unwrap();
            first
                .on_message(0, &message_for("B", seq, seq), now)
                .unwrap();
        }
        first.close().unwrap();
        let mut second = Ingest::open(&config).unwrap();
        // A continues without a hole; B never comes back.
        second
            .on_message(0, &message_for("A", 11, 11), now)
            .unwrap();
        second
            .on_tick(Instant::now() + Duration::from_millis(200))
            .unwrap();
        second.close().unwrap();
        let rows = gap_rows(&config);
        assert_eq!(rows.len(), 2, "{rows:?}");
        let a = rows.iter().find(|r| r.0 == "A").unwrap();
        assert_eq!(
            (a.1, a.2, a.3, a.4),
            (GapReason::RecorderDown, T0 + 10, T0 + 11, Some(0)),
            "nothing missing by sequence, but the recorder was down"
        );
        let b = rows.iter().find(|r| r.0 == "B").unwrap();
        assert_eq!((b.1, b.2, b.4), (GapReason::RecorderDown, T0 + 10, None));
        assert!(b.3 > T0 + 10, "ends when the recorder started again");
        // B stayed away a whole session: a third start no longer marks it.
        Ingest::open(&config).unwrap().close().unwrap();
        assert_eq!(gap_rows(&config).len(), 2);
    }

    #[test]
    fn venue_message_cut_by_a_kill_is_marked_after_its_last_stored_row() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        let now = Instant::now();
        let mut first = Ingest::open(&config).unwrap();
        first.on_message(0, &message(1, 1), now).unwrap();
        // Venue message 2 has three levels; the kill comes after the second.
        first.on_message(0, &level("S", 2, 2, false), now).unwrap();
        first.on_message(0, &level("S", 2, 3, false), now).unwrap();
        first.crash();
        let report = crate::store::recover(&config.dataset, &config.writer).unwrap();
        assert_eq!(report.cut_messages, 1);
        assert!(report.abnormal_session);
        assert_eq!(
            gap_rows(&config),
            vec![("S".to_string(), GapReason::CutMessage, T0 + 2, T0 + 2, None)]
        );
    }

    #[test]
    fn venue_message_cut_by_a_clean_stop_is_marked_too() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        let now = Instant::now();
        let mut ingest = Ingest::open(&config).unwrap();
        ingest.on_message(0, &level("S", 1, 1, false), now).unwrap();
        ingest.close().unwrap();
        assert_eq!(
            gap_rows(&config),
            vec![("S".to_string(), GapReason::CutMessage, T0 + 1, T0 + 1, None)]
        );
    }

    #[test]
    fn durable_source_restart_drops_redelivered_copies_the_journal_already_had() {
        let dir = tempfile::tempdir().unwrap();
        let config = RecordConfig {
            durable_source: true,
            connect: Vec::new(),
            ..config(dir.path())
        };
        let now = Instant::now();
        let mut first = Ingest::open(&config).unwrap();
        let a = first.source("region-a");
        for seq in 1..=100 {
            first.on_message(a, &message(seq, seq), now).unwrap();
        }
        // Acknowledged up to 60; 61..=100 reached the journal but not the broker's ack.
        first.crash();
        // A session killed before the broker delivered those again leaves them to the
        // next (its journal no longer holds them: its recovery turned them into Parquet).
        let between = Ingest::open(&config).unwrap();
        between.crash();
        let mut second = Ingest::open(&config).unwrap();
        let b = second.source("region-b");
        for seq in 61..=150 {
            second.on_message(b, &message(seq, seq + 7), now).unwrap();
        }
        let stats = second.close().unwrap();
        assert_eq!(
            stats.recovered, 0,
            "the session between recovered the journal"
        );
        assert_eq!(stats.duplicates, 40, "61..=100 redelivered, already stored");
        assert_eq!(
            stats.gaps, 0,
            "no recorder_down row: the broker kept everything"
        );
        let rows = crate::store::EventReader::open(&config.dataset, Default::default())
            .unwrap()
            .count();
        assert_eq!(rows, 150, "every event once");
    }

    #[test]
    fn durable_source_silence_is_not_a_gap() {
        let dir = tempfile::tempdir().unwrap();
        let config = RecordConfig {
            durable_source: true,
            connect: Vec::new(),
            ..config(dir.path())
        };
        let now = Instant::now();
        let mut ingest = Ingest::open(&config).unwrap();
        let a = ingest.source("region-a");
        for seq in 1..=10 {
            ingest.on_message(a, &message(seq, seq), now).unwrap();
        }
        // Long past three heartbeats of silence: a broker fail-over, not a loss.
        ingest.on_tick(now + Duration::from_secs(60)).unwrap();
        for seq in 11..=20 {
            ingest
                .on_message(a, &message(seq, seq), now + Duration::from_secs(61))
                .unwrap();
        }
        let stats = ingest.close().unwrap();
        assert_eq!(stats.gaps, 0, "no silence row from a durable source");
        // The same pause from a ZeroMQ publisher is a gap: the check is live there.
        let dir = tempfile::tempdir().unwrap();
        let mut ingest = Ingest::open(&super::tests::config(dir.path())).unwrap();
        ingest.on_message(0, &message(1, 1), now).unwrap();
        ingest.on_tick(now + Duration::from_secs(60)).unwrap();
        assert!(
            ingest.close().unwrap().gaps > 0,
            "silence marked over the bus"
        );
    }

    #[test]
    fn streams_whose_publisher_ended_are_not_marked_after_restart() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        let now = Instant::now();
        let mut first = Ingest::open(&config).unwrap();
        first.on_message(0, &message(1, 1), now).unwrap();
        let mut eos = Vec::new();
        wire::encode(
            &wire::event(
                "",
                "",
                T0,
                1,
                Body::EndOfStream(crate::event::EndOfStream {
                    publisher: "a".into(),
                    replay: false,
                    events: 1,
                }),
            ),
            &mut eos,
        );
        first.on_message(0, &[b"eos.a".to_vec(), eos], now).unwrap();
        first.close().unwrap();
        let mut second = Ingest::open(&config).unwrap();
        second.on_message(0, &message(5, 1), now).unwrap();
        second.close().unwrap();
        assert!(gap_rows(&config).is_empty(), "{:?}", gap_rows(&config));
    }
}
