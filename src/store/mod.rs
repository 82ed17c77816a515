//! Datasets on disk: layout, Arrow schema, the crash-safe writer (journal + Parquet
//! generations), recovery, and the time-ordered reader. Never does networking.
//!
//! Crash safety in one paragraph: the recorder appends every accepted event to the
//! journal of the current *generation* and flushes it every flush interval; the same
//! events go into `.inprogress` Parquet files of that generation. Rotation closes the
//! generation's files (footer, fsync, rename) and only then deletes its journal. On
//! start, [`recover`] finds any journal left behind, deletes that generation's files
//! (complete or not) and rebuilds them from the journal, so every event that reached the
//! journal ends up in exactly one readable file and earlier generations are never touched.
//! A journal damaged before its torn tail is kept aside and the generation's closed files
//! are kept: recovery never deletes what it cannot rebuild. [`streams`] keeps where each
//! stream ends, so a restarted recorder can mark its downtime. [`checksums`] keeps the
//! hash of every closed file for `inspect --verify`.

pub mod checksums;
mod columns;
mod decode;
pub mod files;
mod footer;
mod hybrid;
pub mod journal;
pub mod layout;
mod pages;
pub mod read_ahead;
pub mod reader;
pub mod rows;
pub mod schema;
pub mod streams;
pub mod table;
mod thrift;
pub mod writer;

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use rustc_hash::FxHashMap;

pub use read_ahead::{EventSource, ReadAhead};
pub use reader::{DataFile, EventReader, Selection};
pub use rows::SpareIds;
pub use streams::{SessionMarker, StreamTail, StreamTails};
pub use writer::{DatasetWriter, WriterOptions, WriterStats};

use crate::event::{Interner, Kind};

/// What [`recover`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Recovery {
    /// Journals replayed into Parquet.
    pub journals: u64,
    /// Events rebuilt from journals.
    pub events: u64,
    /// Bytes of torn journal tails discarded (a record cut by the crash).
    pub torn_bytes: u64,
    /// Leftover `.inprogress` or stale part files removed.
    pub removed_files: u64,
    /// Journals damaged before their tail: moved aside, what precedes the damage rebuilt.
    pub damaged: Vec<DamagedJournal>,
    /// Journaled events whose venue/symbol the file system cannot hold (written by an
    /// older recorder): quarantined instead of failing every recovery.
    pub quarantined: u64,
    /// Venue messages the crash cut short (last book row without `LAST`), each marked
    /// with a `cut_message` gap row.
    pub cut_messages: u64,
    /// A recorder session was running when the dataset was left (its marker was there):
    /// logged in `sessions.jsonl` with `"end": "abnormal"`.
    pub abnormal_session: bool,
}

/// A journal with a bad record before its tail, kept for inspection instead of deleted.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DamagedJournal {
    /// The generation it belonged to.
    pub generation: u64,
    /// Where it was moved: `_journal/gen-<g>.log.damaged-<unix seconds>`.
    pub kept_as: PathBuf,
    /// Byte offset of the first bad record.
    pub offset: u64,
    /// Bytes from there to the end: their events are not in Parquet unless a part file
    /// the generation had already closed holds them (those files are kept).
    pub bytes_after: u64,
    /// What was wrong at `offset`.
    pub reason: String,
    /// Intact records before the damage, rebuilt into Parquet.
    pub records_rebuilt: u64,
    /// Part files of the generation closed before the crash, kept as they were.
    pub kept_files: u64,
}

impl Recovery {
    /// One line per damaged journal, for stderr.
    pub fn warnings(&self) -> Vec<String> {
        self.damaged
            .iter()
            .map(|d| {
                format!(
                    "journal of generation {} is damaged at byte {} ({}; {} bytes after it): rebuilt the {} intact records before it, kept {} part file(s) the generation had closed, and moved the journal to {} (the events after the damage are only there)",
                    d.generation,
                    d.offset,
                    d.reason,
                    d.bytes_after,
                    d.records_rebuilt,
                    d.kept_files,
                    d.kept_as.display()
                )
            })
            .collect()
    }
}

/// Takes the dataset's writer lock (`_ticktape/LOCK`), so two processes never write one
/// dataset and `recover` never runs under a live recorder. Held until the file is dropped.
pub fn lock(root: &Path) -> Result<File> {
    let dir = root.join(layout::META_DIR);
    files::create_dir_all(&dir)
        .with_context(|| format!("cannot create dataset directory {}", root.display()))?;
    let path = dir.join("LOCK");
    let file = files::options()
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

/// Rebuilds every generation whose journal is still present, then removes stray
/// `.inprogress` files. Safe to run on a clean dataset (does nothing). Takes the
/// dataset lock, so it refuses to run while a recorder writes the dataset.
pub fn recover(root: &Path, options: &WriterOptions) -> Result<Recovery> {
    if !root.exists() {
        return Ok(Recovery::default());
    }
    let _lock = lock(root)?;
    recover_locked(root, options)
}

/// [`recover`] for a caller that holds the dataset lock already (the recorder).
///
/// Per journal, oldest generation first:
/// 1. Scan it once to find out whether it is intact up to a torn tail.
/// 2. Intact: delete the generation's part files (complete or not) and rebuild them
///    from the journal, then delete the journal.
/// 3. Damaged before its tail: keep the part files the generation had already closed,
///    rebuild the intact records before the damage (those already in a kept file are
///    skipped), and move the journal aside as `gen-<g>.log.damaged-<unix seconds>`:
///    recovery never deletes what it cannot rebuild. Reported in [`Recovery::damaged`]
///    and in `_ticktape/sessions.jsonl`.
pub fn recover_locked(root: &Path, options: &WriterOptions) -> Result<Recovery> {
    recover_locked_marking(root, options, true)
}

/// [`recover_locked`], choosing whether a venue message the crash cut gets its
/// `cut_message` row. A recorder on a durable broker (NATS JetStream) passes false: the
/// broker delivers the rest of that message again, so nothing is cut.
pub fn recover_locked_marking(
    root: &Path,
    options: &WriterOptions,
    mark_cut_messages: bool,
) -> Result<Recovery> {
    let mut report = Recovery::default();
    let journal_dir = root.join(layout::JOURNAL_DIR);
    let mut journals = Vec::new();
    if journal_dir.is_dir() {
        for entry in std::fs::read_dir(&journal_dir)? {
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
    let killed = SessionMarker::load(root);
    let publisher = killed
        .as_ref()
        .and_then(|m| m.sole_publisher())
        .map(str::to_string);
    let mut tails = StreamTails::load(root).unwrap_or_else(|e| {
        eprintln!("warning: {e:#}; starting without stream tails (the next downtime is not counted by sequence)");
        StreamTails::default()
    });
    // Streams whose end this recovery read from a journal.
    let mut replayed = BTreeSet::new();
    let mut quarantine = RecoveryQuarantine::new(root);
    let mut checksums = checksums::ChecksumLog::new(root);
    let last = journals.len().saturating_sub(1);
    for (i, (generation, path)) in journals.into_iter().enumerate() {
        let check = journal::read_journal(&path, |_| Ok(()))?;
        let of_generation = |file: &PathBuf| {
            let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("");
            layout::generation_of_part(name) == Some(generation)
        };
        // Closed files of a damaged generation stay; their events are not rebuilt twice.
        let mut already = FxHashMap::<u64, u32>::default();
        let mut kept_files = 0;
        for file in layout::partition_files(root)?
            .into_iter()
            .filter(of_generation)
        {
            let closed = !file.to_string_lossy().ends_with(layout::IN_PROGRESS_SUFFIX);
            if check.damage.is_some() && closed {
                count_events(&file, &mut already)?;
                kept_files += 1;
                continue;
            }
            std::fs::remove_file(&file)
                .with_context(|| format!("cannot remove {}", file.display()))?;
            if closed {
                checksums.removed(&file)?;
            }
            report.removed_files += 1;
        }
        // Before the rebuilt files' lines, which may name the same paths.
        checksums.sync()?;
        let mut writer =
            DatasetWriter::new(root, generation, options.clone())?.after_existing_parts()?;
        let mut names = Interner::default();
        let mut storable = FxHashMap::<(Arc<str>, Arc<str>), bool>::default();
        let (mut bad, mut skipped) = (0u64, 0u64);
        let scan = journal::read_journal(&path, |payload| {
            let event = match crate::wire::decode(payload, &mut names) {
                Ok(event) => event,
                // The journal only holds payloads that decoded once, but perhaps under an
                // older, more lenient ticktape: keep the bytes with the reason, never abort.
                Err(e) => {
                    quarantine.keep(generation, payload, &e.to_string());
                    bad += 1;
                    return Ok(());
                }
            };
            let ok = *storable
                .entry((event.venue.clone(), event.symbol.clone()))
                .or_insert_with(|| {
                    writer::unstorable_partition(root, &event.venue, &event.symbol).is_none()
                });
            if !ok {
                let why = writer::unstorable_partition(root, &event.venue, &event.symbol);
                quarantine.keep(generation, payload, why.as_deref().unwrap_or(""));
                skipped += 1;
                return Ok(());
            }
            tails.observe(&event, publisher.as_deref());
            if matches!(event.kind(), Kind::Book | Kind::Trade) {
                replayed.insert(tail_key(&event));
            }
            if let Some(n) = already.get_mut(&event_hash(&event))
                && *n > 0
            {
                *n -= 1;
                skipped += 1;
                return Ok(());
            }
            writer.write(&event)
        })?;
        if i == last {
            // The crash cut whatever venue message was arriving: mark each one whose
            // LAST row is missing, right after its last stored row. (A stream whose end
            // is only in the tails file, saved at a rotation mid-message, is cut too:
            // its message did not go on in any later journal.)
            for tail in tails.topics.values_mut() {
                if tail.open_message {
                    tail.open_message = false;
                    if mark_cut_messages {
                        writer.write(&cut_message_row(tail))?;
                        report.cut_messages += 1;
                    }
                }
            }
        }
        writer.close()?;
        report.journals += 1;
        report.events += scan.records - bad - skipped;
        report.torn_bytes += scan.torn_bytes;
        report.quarantined += quarantine.kept;
        quarantine.kept = 0;
        // The tails must hold this journal's streams before the journal goes.
        tails.save(root)?;
        match scan.damage {
            None => std::fs::remove_file(&path)
                .with_context(|| format!("cannot remove replayed journal {}", path.display()))?,
            Some(damage) => {
                let secs = crate::event::now_nanos() / crate::event::NANOS_PER_SEC;
                let name = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or("journal");
                let kept_as = journal_dir.join(format!("{name}.damaged-{secs}"));
                std::fs::rename(&path, &kept_as).with_context(|| {
                    format!("cannot move damaged journal {} aside", path.display())
                })?;
                report.damaged.push(DamagedJournal {
                    generation,
                    kept_as,
                    offset: damage.offset,
                    bytes_after: damage.bytes_after,
                    reason: damage.reason,
                    records_rebuilt: scan.records,
                    kept_files,
                });
            }
        }
        layout::sync_dir(&journal_dir);
    }
    for file in layout::partition_files(root)? {
        if file.to_string_lossy().ends_with(layout::IN_PROGRESS_SUFFIX) {
            std::fs::remove_file(&file)?;
            report.removed_files += 1;
        }
    }
    let last_ts_recv = replayed
        .iter()
        .filter_map(|k| tails.topics.get(k))
        .map(|t| t.ts_recv)
        .max();
    if let Some(marker) = killed {
        // The previous recorder never logged its end: log it now, with what was saved.
        report.abnormal_session = true;
        log_session(
            root,
            &serde_json::json!({
                "tool": "record",
                "started": marker.started,
                "pid": marker.pid,
                "connect": marker.connect,
                "end": "abnormal",
                "last_ts_recv": last_ts_recv,
                "recovered": report,
            }),
        )?;
        SessionMarker::remove(root)?;
    } else if report.journals > 0 || !report.damaged.is_empty() {
        log_session(
            root,
            &serde_json::json!({
                "tool": "recover",
                "ended": crate::event::now_nanos(),
                "last_ts_recv": last_ts_recv,
                "recovered": report,
            }),
        )?;
    }
    Ok(report)
}

/// Key of an event's stream in [`StreamTails`].
fn tail_key(event: &crate::event::Event) -> (String, String, String) {
    (
        event.kind().name().to_string(),
        event.venue.to_string(),
        event.symbol.to_string(),
    )
}

/// The gap row that marks a venue message cut short at the end of `tail`'s stream.
pub fn cut_message_row(tail: &StreamTail) -> crate::event::Event {
    crate::event::Event {
        venue: Arc::from(tail.venue.as_str()),
        symbol: Arc::from(tail.symbol.as_str()),
        ts_event: tail.ts_recv,
        ts_recv: tail.ts_recv,
        venue_seq: None,
        prev_venue_seq: None,
        pub_seq: 0,
        body: crate::event::Body::Gap(crate::event::Gap {
            reason: crate::event::GapReason::CutMessage,
            missing: None,
            publisher: String::new(),
        }),
    }
}

/// Appends one JSON line to the dataset's `_ticktape/sessions.jsonl`.
pub fn log_session(root: &Path, line: &serde_json::Value) -> Result<()> {
    let dir = root.join(layout::META_DIR);
    files::create_dir_all(&dir)?;
    let path = dir.join("sessions.jsonl");
    let mut f = files::append(&path).with_context(|| format!("cannot open {}", path.display()))?;
    writeln!(f, "{line}").with_context(|| format!("cannot write {}", path.display()))?;
    f.sync_data()?;
    Ok(())
}

/// Identity of an event's content for recovery's "already in a kept file" check.
fn event_hash(event: &crate::event::Event) -> u64 {
    xxhash_rust::xxh3::xxh3_64(&crate::wire::encode_to_vec(event))
}

/// Counts the events of a closed part file by content, into `out`.
fn count_events(path: &Path, out: &mut FxHashMap<u64, u32>) -> Result<()> {
    rows::for_each_event(path, |event| {
        *out.entry(event_hash(&event)).or_default() += 1;
        Ok(())
    })
    .with_context(|| {
        format!(
            "cannot read {}, a closed part of a generation whose journal is damaged; nothing was changed: move the file aside and run `ticktape recover` again",
            path.display()
        )
    })
}

/// Where recovery puts journaled events it cannot store.
struct RecoveryQuarantine {
    dir: PathBuf,
    kept: u64,
}

impl RecoveryQuarantine {
    fn new(root: &Path) -> RecoveryQuarantine {
        RecoveryQuarantine {
            dir: root.join(layout::QUARANTINE_DIR),
            kept: 0,
        }
    }

    /// Appends the payload with the reason, in the recorder's quarantine format.
    fn keep(&mut self, generation: u64, payload: &[u8], why: &str) {
        self.kept += 1;
        let frame = match std::str::from_utf8(payload) {
            Ok(s) => serde_json::json!({ "utf8": s }),
            Err(_) => serde_json::json!({
                "hex": payload.iter().map(|b| format!("{b:02x}")).collect::<String>()
            }),
        };
        let line = serde_json::json!({
            "ts_recv": crate::event::now_nanos(),
            "publisher": "recover",
            "error": why,
            "frames": [frame],
        });
        let path = self.dir.join(format!("malformed-{generation:08}.jsonl"));
        let written = files::create_dir_all(&self.dir).and_then(|()| {
            let mut f = files::append(&path)?;
            writeln!(f, "{line}")
        });
        if let Err(e) = written {
            eprintln!(
                "warning: cannot write {} ({e}); an unstorable event was dropped",
                path.display()
            );
        }
    }
}

/// Writes one new generation into the dataset at `root` through `fill`, all or nothing:
/// if `fill` fails, every file of that generation is removed again (and the dataset
/// directory too, when this call created it), so a failed import leaves no half-written
/// dataset behind.
pub fn write_generation<T>(
    root: &Path,
    options: &WriterOptions,
    fill: impl FnOnce(&mut DatasetWriter) -> Result<T>,
) -> Result<(T, WriterStats)> {
    let existed = root.exists();
    let generation = layout::max_generation(root)?.map_or(0, |g| g + 1);
    let mut writer = DatasetWriter::new(root, generation, options.clone())?;
    let cleanup = |root: &Path| {
        if !existed {
            let _ = std::fs::remove_dir_all(root);
            return;
        }
        let mut checksums = checksums::ChecksumLog::new(root);
        for file in layout::partition_files(root).unwrap_or_default() {
            let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if layout::generation_of_part(name) == Some(generation)
                && std::fs::remove_file(&file).is_ok()
                && !name.ends_with(layout::IN_PROGRESS_SUFFIX)
            {
                let _ = checksums.removed(&file);
            }
        }
        let _ = checksums.sync();
    };
    match fill(&mut writer).and_then(|value| Ok((value, writer.close()?))) {
        Ok(done) => Ok(done),
        Err(e) => {
            cleanup(root);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Body, Event, Side, Trade};

    fn trade(i: u64) -> Event {
        crate::wire::event(
            "v",
            "S",
            1_700_000_000_000_000_000 + i as i64,
            i + 1,
            Body::Trade(Trade {
                price: "1.5".parse().unwrap(),
                size: "2".parse().unwrap(),
                aggressor: Side::Bid,
                trade_id: i.to_string().into(),
            }),
        )
    }

    fn pub_seqs(root: &Path) -> Vec<u64> {
        let mut seqs: Vec<u64> = EventReader::open(root, Selection::default())
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.kind() == crate::event::Kind::Trade)
            .map(|e| e.pub_seq)
            .collect();
        seqs.sort();
        seqs
    }

    #[test]
    fn mid_journal_damage_keeps_the_journal_and_closed_files_and_rebuilds_what_precedes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        // A part file the generation closed before the crash (an early close), holding
        // events 40..=70, and the generation's journal of events 0..100.
        let mut early = DatasetWriter::new(root, 0, WriterOptions::default()).unwrap();
        for i in 40..=70 {
            early.write(&trade(i)).unwrap();
        }
        early.close().unwrap();
        std::fs::create_dir_all(root.join(layout::JOURNAL_DIR)).unwrap();
        let path = layout::journal_path(root, 0);
        let mut journal = journal::JournalWriter::open(&path).unwrap();
        let mut offsets = Vec::new();
        for i in 0..100 {
            offsets.push(journal.bytes());
            journal
                .append(&crate::wire::encode_to_vec(&trade(i)))
                .unwrap();
        }
        journal.flush(false).unwrap();
        drop(journal);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[offsets[50] as usize + 20] ^= 0x01;
        std::fs::write(&path, &bytes).unwrap();

        let report = recover(root, &WriterOptions::default()).unwrap();

        assert_eq!(report.damaged.len(), 1, "{report:?}");
        assert_eq!(report.damaged[0].offset, offsets[50]);
        let kept = &report.damaged[0].kept_as;
        assert_eq!(
            std::fs::read(kept).unwrap(),
            bytes,
            "journal kept byte for byte"
        );
        assert!(!path.exists(), "the damaged journal is no longer replayed");
        let expected: Vec<u64> = (1..=71).collect();
        assert_eq!(
            pub_seqs(root),
            expected,
            "0..50 rebuilt from the journal, 40..=70 kept from the closed file, each once"
        );
        let log =
            std::fs::read_to_string(root.join(layout::META_DIR).join("sessions.jsonl")).unwrap();
        assert!(log.contains("damaged"), "{log}");

        // Nothing left to recover: a second run changes nothing.
        let again = recover(root, &WriterOptions::default()).unwrap();
        assert_eq!(again.journals, 0);
        assert_eq!(pub_seqs(root), expected);
    }

    #[test]
    fn journaled_event_the_file_system_cannot_hold_is_quarantined_by_recovery() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join(layout::JOURNAL_DIR)).unwrap();
        let path = layout::journal_path(root, 0);
        let mut journal = journal::JournalWriter::open(&path).unwrap();
        let mut poison = trade(7);
        poison.symbol = "S".repeat(300).into();
        for e in [trade(0), poison, trade(1)] {
            journal.append(&crate::wire::encode_to_vec(&e)).unwrap();
        }
        journal.flush(false).unwrap();
        drop(journal);
        let report = recover(root, &WriterOptions::default()).unwrap();
        assert_eq!((report.events, report.quarantined), (2, 1));
        assert_eq!(pub_seqs(root), vec![1, 2]);
        let kept = std::fs::read_to_string(
            root.join(layout::QUARANTINE_DIR)
                .join("malformed-00000000.jsonl"),
        )
        .unwrap();
        // The boundary validator (64-byte names) refuses it as it is decoded, before the
        // file-system check (255 bytes) would; either way its bytes are kept with why.
        assert!(
            kept.contains("255-byte limit") || kept.contains("at most 64"),
            "{kept}"
        );
    }

    #[test]
    fn recover_refuses_to_run_under_a_live_writer() {
        let dir = tempfile::tempdir().unwrap();
        let held = lock(dir.path()).unwrap();
        let err = recover(dir.path(), &WriterOptions::default()).unwrap_err();
        assert!(format!("{err:#}").contains("being written by another process"));
        drop(held);
        recover(dir.path(), &WriterOptions::default()).unwrap();
    }

    #[test]
    fn torn_tail_only_replays_the_journal_and_removes_it() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join(layout::JOURNAL_DIR)).unwrap();
        let path = layout::journal_path(root, 3);
        let mut journal = journal::JournalWriter::open(&path).unwrap();
        for i in 0..10 {
            journal
                .append(&crate::wire::encode_to_vec(&trade(i)))
                .unwrap();
        }
        journal.flush(false).unwrap();
        drop(journal);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        std::io::Write::write_all(&mut f, &[200, 0, 0, 0, 1, 2]).unwrap();
        let report = recover(root, &WriterOptions::default()).unwrap();
        assert_eq!(
            (report.journals, report.events, report.torn_bytes),
            (1, 10, 6)
        );
        assert!(report.damaged.is_empty());
        assert!(!path.exists());
        assert_eq!(pub_seqs(root), (1..=10).collect::<Vec<_>>());
    }
}
