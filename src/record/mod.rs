//! The recorder: subscribe → decode → deduplicate → detect gaps → journal → Parquet.
//!
//! Owns the promise that what went over the bus is on disk exactly once with every hole
//! marked. The ingest loop (this thread) receives, checks and journals; a writer thread
//! builds Parquet so compression never delays receiving. Never does matching or replay.

pub mod dedup;
pub mod gaps;

use std::collections::{BTreeSet, HashMap};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};
use serde::Serialize;

use crate::bus::{Subscriber, SubscriberConfig};
use crate::event::{Body, Event, GapReason, Interner, Kind, now_nanos};
use crate::shutdown::Stop;
use crate::store::{self, DatasetWriter, WriterOptions, WriterStats, journal, layout};
use crate::wire;

/// Recorder configuration.
#[derive(Clone, Debug)]
pub struct RecordConfig {
    /// Dataset directory (created if missing; appended to if it exists).
    pub dataset: PathBuf,
    /// Publisher endpoints; several means redundant publishers of the same streams.
    pub connect: Vec<String>,
    /// Topic prefixes to record; empty records everything.
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
    /// Malformed messages quarantined.
    pub malformed: u64,
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

enum ToWriter {
    Events(Vec<Event>),
    /// Close the current generation, delete its journal, start `next`.
    Rotate {
        next: u64,
    },
}

fn writer_thread(
    root: PathBuf,
    mut generation: u64,
    options: WriterOptions,
    inbox: Receiver<ToWriter>,
    stats: Arc<Mutex<WriterStats>>,
) -> Result<()> {
    let mut writer = DatasetWriter::new(&root, generation, options.clone())?;
    let mut done = WriterStats::default();
    let publish = |w: &DatasetWriter, done: &WriterStats| {
        if let Ok(mut s) = stats.lock() {
            s.rows = done.rows + w.stats().rows;
            s.files_closed = done.files_closed + w.stats().files_closed;
            s.bytes_closed = done.bytes_closed + w.stats().bytes_closed;
            s.late_splits = done.late_splits + w.stats().late_splits;
        }
    };
    let finish = |writer: DatasetWriter, generation: u64, done: &mut WriterStats| -> Result<()> {
        let s = writer.close()?;
        std::fs::remove_file(layout::journal_path(&root, generation)).ok();
        layout::sync_dir(&root.join(layout::JOURNAL_DIR));
        done.rows += s.rows;
        done.files_closed += s.files_closed;
        done.bytes_closed += s.bytes_closed;
        done.late_splits += s.late_splits;
        Ok(())
    };
    for msg in inbox.iter() {
        match msg {
            ToWriter::Events(events) => {
                for e in &events {
                    writer.write(e)?;
                }
            }
            ToWriter::Rotate { next } => {
                let old = std::mem::replace(
                    &mut writer,
                    DatasetWriter::new(&root, next, options.clone())?,
                );
                finish(old, generation, &mut done)?;
                generation = next;
            }
        }
        publish(&writer, &done);
    }
    // The channel closed: clean shutdown.
    finish(writer, generation, &mut done)?;
    if let Ok(mut s) = stats.lock() {
        *s = done;
    }
    Ok(())
}

/// Appends undecodable messages to `_quarantine/malformed-<generation>.jsonl`.
struct Quarantine {
    dir: PathBuf,
    file: Option<File>,
}

impl Quarantine {
    fn keep(
        &mut self,
        generation: u64,
        source: &str,
        frames: &[zmq::Message],
        error: &str,
    ) -> Result<()> {
        if self.file.is_none() {
            std::fs::create_dir_all(&self.dir)?;
            let path = self.dir.join(format!("malformed-{generation:08}.jsonl"));
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

/// Takes the dataset's writer lock, so two recorders never write one dataset.
fn lock_dataset(root: &Path) -> Result<File> {
    let dir = root.join(layout::META_DIR);
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create dataset directory {}", root.display()))?;
    let path = dir.join("LOCK");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    file.try_lock().map_err(|_| {
        anyhow::anyhow!(
            "dataset {} is being written by another process (lock {} is held); stop it or record elsewhere",
            root.display(),
            path.display()
        )
    })?;
    Ok(file)
}

/// Appends one JSON line to the dataset's `_ticktape/sessions.jsonl`.
pub fn log_session(root: &Path, line: &serde_json::Value) -> Result<()> {
    let dir = root.join(layout::META_DIR);
    std::fs::create_dir_all(&dir)?;
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("sessions.jsonl"))?;
    writeln!(f, "{line}")?;
    Ok(())
}

/// Records until stopped (or until every publisher ended, with `until_eos`).
/// `on_status` is called about five times a second with the live counters.
pub fn run(
    config: &RecordConfig,
    stop: &Stop,
    mut on_status: impl FnMut(&RecordStats),
) -> Result<RecordStats> {
    let root = config.dataset.clone();
    let _lock = lock_dataset(&root)?;
    let recovery = store::recover(&root, &config.writer)
        .with_context(|| format!("cannot recover dataset {}", root.display()))?;
    let started = Instant::now();
    let started_ns = now_nanos();
    let mut generation = layout::max_generation(&root)?.map_or(0, |g| g + 1);
    std::fs::create_dir_all(root.join(layout::JOURNAL_DIR))?;
    let mut journal = journal::JournalWriter::open(&layout::journal_path(&root, generation))?;
    let mut generation_started = Instant::now();

    let writer_stats = Arc::new(Mutex::new(WriterStats::default()));
    let (to_writer, inbox): (Sender<ToWriter>, Receiver<ToWriter>) = bounded(64);
    let writer_handle = {
        let (root, options, stats) = (root.clone(), config.writer.clone(), writer_stats.clone());
        std::thread::Builder::new()
            .name("parquet-writer".into())
            .spawn(move || writer_thread(root, generation, options, inbox, stats))?
    };

    let ctx = crate::bus::context();
    let mut subscriber = Subscriber::connect(
        &ctx,
        &SubscriberConfig {
            connect: config.connect.clone(),
            topics: config.topics.clone(),
            recv_hwm: 0,
        },
    )?;
    let mut stats = RecordStats {
        recovered: recovery.events,
        publishers: config
            .connect
            .iter()
            .map(|ep| PublisherStatus {
                endpoint: ep.clone(),
                received: 0,
                seq_missing: 0,
                silent: false,
                silences: 0,
                ended: false,
                heartbeat_ms: config.default_heartbeat.as_millis() as u64,
                last_seen: None,
                partitions: BTreeSet::new(),
            })
            .collect(),
        ..RecordStats::default()
    };
    let mut names = Interner::default();
    let mut dedup = dedup::DedupWindow::new(config.dedup_window);
    let mut positions: Vec<dedup::MessagePosition> = config
        .connect
        .iter()
        .map(|_| dedup::MessagePosition::default())
        .collect();
    let mut pub_seqs = gaps::PublisherSeqs::default();
    let mut venue_seqs = gaps::VenueSeqs::new(config.gap_grace);
    let mut quarantine = Quarantine {
        dir: root.join(layout::QUARANTINE_DIR),
        file: None,
    };
    let mut batch: Vec<Event> = Vec::with_capacity(4096);
    let mut last_flush = Instant::now();
    let mut last_status = Instant::now();
    let mut gap_payload = Vec::with_capacity(256);
    let single_publisher = config.connect.len() == 1;
    let endpoints: Vec<String> = stats
        .publishers
        .iter()
        .map(|p| p.endpoint.clone())
        .collect();
    let mut last_partition: Vec<Option<(Arc<str>, Arc<str>)>> = vec![None; endpoints.len()];

    // Journals and hands over one event the recorder itself produced (a gap row).
    let mut accept_own = |event: Event,
                          journal: &mut journal::JournalWriter,
                          batch: &mut Vec<Event>,
                          stats: &mut RecordStats|
     -> Result<()> {
        gap_payload.clear();
        wire::encode(&event, &mut gap_payload);
        journal.append(&gap_payload)?;
        stats.accepted += 1;
        stats.gaps += 1;
        batch.push(event);
        Ok(())
    };

    loop {
        if stop.is_set() {
            break;
        }
        if config.until_eos && stats.publishers.iter().all(|p| p.ended) {
            break;
        }
        let wait = config
            .flush_interval
            .saturating_sub(last_flush.elapsed())
            .min(Duration::from_millis(50));
        // Drain what is there; bound the burst so flushes stay on time under load.
        let mut burst = 0;
        let mut next = subscriber.recv_timeout(wait)?;
        while let Some(msg) = next {
            burst += 1;
            let now = Instant::now();
            let publisher = &mut stats.publishers[msg.source];
            publisher.received += 1;
            publisher.last_seen = Some(now);
            if publisher.silent {
                publisher.silent = false;
            }
            stats.received += 1;
            stats.bytes_received += msg.frames.iter().map(|f| f.len() as u64).sum::<u64>();
            match wire::decode_message(msg.frames, &mut names) {
                Err(e) => {
                    stats.malformed += 1;
                    let endpoint = stats.publishers[msg.source].endpoint.clone();
                    quarantine.keep(generation, &endpoint, msg.frames, &e.to_string())?;
                }
                Ok(event) => match event.kind() {
                    Kind::Heartbeat => {
                        stats.heartbeats += 1;
                        if let Body::Heartbeat(h) = &event.body {
                            stats.publishers[msg.source].heartbeat_ms = h.interval_ms.max(1);
                        }
                    }
                    Kind::EndOfStream => stats.publishers[msg.source].ended = true,
                    Kind::Book | Kind::Trade | Kind::Gap => {
                        let endpoint = &endpoints[msg.source];
                        let mut reported = false;
                        if let Some(missing) = pub_seqs.observe(msg.source, &event) {
                            stats.publishers[msg.source].seq_missing += missing;
                            if single_publisher || event.venue_seq.is_none() {
                                reported = true;
                                accept_own(
                                    gaps::gap_event(
                                        event.venue.clone(),
                                        event.symbol.clone(),
                                        event.ts_recv,
                                        GapReason::PublisherSeq,
                                        Some(missing),
                                        endpoint,
                                    ),
                                    &mut journal,
                                    &mut batch,
                                    &mut stats,
                                )?;
                            }
                        }
                        if !dedup.first_time(positions[msg.source].key(&event)) {
                            stats.duplicates += 1;
                        } else {
                            venue_seqs.observe(&event, endpoint, now, reported);
                            // Interned names: the same partition as last time is the same
                            // pair of pointers, so the set is only touched on a change.
                            let last = &mut last_partition[msg.source];
                            if !last.as_ref().is_some_and(|(v, s)| {
                                Arc::ptr_eq(v, &event.venue) && Arc::ptr_eq(s, &event.symbol)
                            }) {
                                let key = (event.venue.clone(), event.symbol.clone());
                                stats.publishers[msg.source].partitions.insert(key.clone());
                                *last = Some(key);
                            }
                            journal.append(&msg.frames[1])?;
                            stats.accepted += 1;
                            if event.kind() == Kind::Gap {
                                stats.gaps += 1;
                            }
                            batch.push(event);
                            if batch.len() >= 4096 {
                                let full = std::mem::take(&mut batch);
                                match to_writer.try_send(ToWriter::Events(full)) {
                                    Ok(()) => {}
                                    Err(TrySendError::Full(full)) => {
                                        // The writer is behind: make what we hold durable
                                        // before waiting for it, so the flush promise holds.
                                        journal.flush(config.fsync)?;
                                        last_flush = Instant::now();
                                        to_writer.send(full).context("Parquet writer stopped")?;
                                    }
                                    Err(TrySendError::Disconnected(_)) => {
                                        anyhow::bail!("Parquet writer stopped")
                                    }
                                }
                            }
                        }
                    }
                },
            }
            if burst >= 10_000 || last_flush.elapsed() >= config.flush_interval {
                break;
            }
            next = subscriber.try_recv()?;
        }

        let now = Instant::now();
        // Silence: 3 missed heartbeats. Only a gap in the dataset when nobody else is live.
        let mut newly_silent = Vec::new();
        for (i, p) in stats.publishers.iter_mut().enumerate() {
            let limit = Duration::from_millis(p.heartbeat_ms * 3);
            if !p.silent && !p.ended && p.last_seen.is_some_and(|t| now - t > limit) {
                p.silent = true;
                p.silences += 1;
                newly_silent.push(i);
            }
        }
        for i in newly_silent {
            let others_live = stats
                .publishers
                .iter()
                .enumerate()
                .any(|(j, p)| j != i && !p.silent && !p.ended && p.last_seen.is_some());
            if !others_live {
                let endpoint = stats.publishers[i].endpoint.clone();
                let partitions: Vec<_> = stats.publishers[i].partitions.iter().cloned().collect();
                for (venue, symbol) in partitions {
                    accept_own(
                        gaps::gap_event(
                            venue,
                            symbol,
                            now_nanos(),
                            GapReason::Silence,
                            None,
                            &endpoint,
                        ),
                        &mut journal,
                        &mut batch,
                        &mut stats,
                    )?;
                }
            }
        }
        for gap in venue_seqs.expired(now, false) {
            accept_own(gap, &mut journal, &mut batch, &mut stats)?;
        }

        if last_flush.elapsed() >= config.flush_interval {
            last_flush = Instant::now();
            journal.flush(config.fsync)?;
            quarantine.flush();
            if !batch.is_empty() {
                to_writer
                    .send(ToWriter::Events(std::mem::take(&mut batch)))
                    .context("Parquet writer stopped")?;
            }
            if generation_started.elapsed() >= config.rotate_interval
                || journal.bytes() >= config.rotate_bytes
            {
                generation += 1;
                let next = journal::JournalWriter::open(&layout::journal_path(&root, generation))?;
                std::mem::replace(&mut journal, next).flush(config.fsync)?;
                to_writer
                    .send(ToWriter::Rotate { next: generation })
                    .context("Parquet writer stopped")?;
                quarantine.file = None;
                generation_started = Instant::now();
                stats.rotations += 1;
            }
        }
        if last_status.elapsed() >= Duration::from_millis(200) {
            last_status = Instant::now();
            stats.elapsed_secs = started.elapsed().as_secs_f64();
            if let Ok(w) = writer_stats.lock() {
                stats.writer = w.clone();
            }
            on_status(&stats);
        }
    }

    // Clean shutdown: settle open holes, make everything durable, close the files.
    for gap in venue_seqs.expired(Instant::now(), true) {
        accept_own(gap, &mut journal, &mut batch, &mut stats)?;
    }
    journal.flush(config.fsync)?;
    quarantine.flush();
    if !batch.is_empty() {
        to_writer
            .send(ToWriter::Events(std::mem::take(&mut batch)))
            .context("Parquet writer stopped")?;
    }
    drop(to_writer);
    writer_handle
        .join()
        .map_err(|_| anyhow::anyhow!("Parquet writer thread panicked"))??;
    if let Ok(w) = writer_stats.lock() {
        stats.writer = w.clone();
    }
    stats.elapsed_secs = started.elapsed().as_secs_f64();
    log_session(
        &root,
        &serde_json::json!({
            "tool": "record",
            "started": started_ns,
            "ended": now_nanos(),
            "connect": config.connect,
            "stats": stats,
        }),
    )?;
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
