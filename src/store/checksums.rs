//! Content hashes of a dataset's closed data files, kept in `_ticktape/checksums.jsonl`,
//! and their verification (`ticktape inspect DS --verify`).
//!
//! Why: a flipped bit inside a Parquet data page usually still decodes — to different
//! prices or times — and the parquet crate ticktape uses writes no page CRCs. So the
//! writer hashes every part file (xxh3-64 over its bytes, computed while they are written,
//! see [`HashingWriter`]) and appends one line when the file is in place:
//!
//! ```text
//! {"file":"binance/BTCUSDT/2024-08-08/part-00000003-0000.parquet","bytes":81234,"xxh3":"9f1c0e6a2b7d4c13","written":1723161480000000000}
//! ```
//!
//! When ticktape itself deletes a recorded file (recovery rebuilding a generation, a
//! failed import cleaning up) it appends `{"file":…,"removed":<ns>}`. The last line about
//! a path wins, so a rebuilt file's new hash replaces the old one.
//!
//! Durability: lines are appended with one `write` each (`O_APPEND`, so concurrent
//! writers never interleave inside a line) and `fdatasync`ed when the writer closes its
//! generation, before the recorder deletes that generation's journal. A crash before that
//! leaves the journal, and recovery rebuilds the generation and appends fresh lines; a
//! torn last line (power cut mid-append) is skipped and counted when read.
//!
//! This module never reads Parquet: verification is about bytes, not meaning.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::Xxh3;

use super::{files, layout};

/// File name of the checksum log inside the dataset's `_ticktape/` directory.
pub const CHECKSUMS_FILE: &str = "checksums.jsonl";

/// Path of the dataset's checksum log.
pub fn log_path(root: &Path) -> PathBuf {
    root.join(layout::META_DIR).join(CHECKSUMS_FILE)
}

/// Size and xxh3-64 of a file's bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct FileHash {
    /// Length in bytes.
    pub bytes: u64,
    /// xxh3-64 of the bytes (seed 0), shown as 16 lowercase hex digits.
    #[serde(serialize_with = "hex_hash")]
    pub xxh3: u64,
}

fn hex_hash<S: serde::Serializer>(hash: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{hash:016x}"))
}

impl std::fmt::Display for FileHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} bytes, xxh3 {:016x}", self.bytes, self.xxh3)
    }
}

/// A writer that hashes what goes through it, so a just-written file is never read
/// again to be hashed. Parquet writes a file front to back, never seeking.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Xxh3,
    bytes: u64,
}

impl<W: Write> HashingWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> HashingWriter<W> {
        HashingWriter {
            inner,
            hasher: Xxh3::new(),
            bytes: 0,
        }
    }

    /// Hash of everything written so far.
    pub fn hash(&self) -> FileHash {
        FileHash {
            bytes: self.bytes,
            xxh3: self.hasher.digest(),
        }
    }

    /// The wrapped writer.
    pub fn get_ref(&self) -> &W {
        &self.inner
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Hashes the file at `path` by reading it, in 1 MiB chunks.
pub fn hash_file(path: &Path, mut progress: impl FnMut(u64)) -> std::io::Result<FileHash> {
    let mut file = File::open(path)?;
    let mut hasher = Xxh3::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        bytes += n as u64;
        progress(n as u64);
    }
    Ok(FileHash {
        bytes,
        xxh3: hasher.digest(),
    })
}

/// One line of the checksum log, either kind.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Line {
    file: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    xxh3: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    written: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    removed: Option<i64>,
}

/// A dataset file's path as the log names it: relative to the dataset root, `/`-separated.
pub fn relative_name(root: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(root).unwrap_or(path);
    rel.iter()
        .map(|c| c.to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// Appends to a dataset's checksum log; opened on first use.
pub struct ChecksumLog {
    root: PathBuf,
    file: Option<File>,
    unsynced: bool,
}

impl ChecksumLog {
    /// The log of the dataset at `root`.
    pub fn new(root: &Path) -> ChecksumLog {
        ChecksumLog {
            root: root.to_path_buf(),
            file: None,
            unsynced: false,
        }
    }

    fn append(&mut self, line: &Line) -> Result<()> {
        let path = log_path(&self.root);
        if self.file.is_none() {
            let dir = self.root.join(layout::META_DIR);
            files::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            self.file = Some(
                files::append(&path).with_context(|| format!("cannot open {}", path.display()))?,
            );
        }
        let mut text = serde_json::to_string(line)?;
        text.push('\n');
        let file = self.file.as_mut().context("checksum log not open")?;
        // One write per line: O_APPEND keeps concurrent appenders' lines whole.
        file.write_all(text.as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))?;
        self.unsynced = true;
        Ok(())
    }

    /// Records that the data file at `path` (under the root) now holds `hash`.
    pub fn written(&mut self, path: &Path, hash: FileHash) -> Result<()> {
        self.append(&Line {
            file: relative_name(&self.root, path),
            bytes: Some(hash.bytes),
            xxh3: Some(format!("{:016x}", hash.xxh3)),
            written: Some(crate::event::now_nanos()),
            ..Line::default()
        })
    }

    /// Records that ticktape deleted the data file at `path` on purpose.
    pub fn removed(&mut self, path: &Path) -> Result<()> {
        self.append(&Line {
            file: relative_name(&self.root, path),
            removed: Some(crate::event::now_nanos()),
            ..Line::default()
        })
    }

    /// Forces the lines appended so far to disk.
    pub fn sync(&mut self) -> Result<()> {
        if let (true, Some(file)) = (self.unsynced, self.file.as_ref()) {
            file.sync_data()
                .with_context(|| format!("cannot sync {}", log_path(&self.root).display()))?;
            self.unsynced = false;
        }
        Ok(())
    }
}

/// What the log says each file should be.
#[derive(Debug, Default)]
pub struct Recorded {
    /// Expected hash per relative file name (the last line about each file).
    pub files: BTreeMap<String, FileHash>,
    /// Lines that could not be read (a torn last line after a power cut, or edits).
    pub unreadable_lines: u64,
}

/// Reads the dataset's checksum log; empty when there is none (an older dataset).
pub fn load(root: &Path) -> Result<Recorded> {
    let path = log_path(root);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Recorded::default()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let mut recorded = Recorded::default();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let parsed = serde_json::from_str::<Line>(line).ok().and_then(|l| {
            if l.removed.is_some() {
                return Some((l.file, None));
            }
            let xxh3 = u64::from_str_radix(l.xxh3.as_deref()?, 16).ok()?;
            Some((
                l.file,
                Some(FileHash {
                    bytes: l.bytes?,
                    xxh3,
                }),
            ))
        });
        match parsed {
            Some((file, Some(hash))) => {
                recorded.files.insert(file, hash);
            }
            Some((file, None)) => {
                recorded.files.remove(&file);
            }
            None => recorded.unreadable_lines += 1,
        }
    }
    Ok(recorded)
}

/// Verdict on one data file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Status {
    /// Same length and hash as when it was written.
    Ok,
    /// The bytes changed since they were written.
    Mismatch {
        /// What the log recorded.
        expected: FileHash,
        /// What the file holds now.
        actual: FileHash,
    },
    /// No line in the log: written by an older ticktape, or copied in by hand.
    NotRecorded,
    /// The log names it but it is gone.
    Missing {
        /// What the log recorded.
        expected: FileHash,
    },
    /// It could not be read at all.
    Unreadable {
        /// The error.
        error: String,
    },
}

impl Status {
    /// The word `inspect --verify` prints.
    pub fn label(&self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::Mismatch { .. } => "MISMATCH",
            Status::NotRecorded => "NOT RECORDED",
            Status::Missing { .. } => "MISSING",
            Status::Unreadable { .. } => "UNREADABLE",
        }
    }

    /// Whether this verdict fails verification (mismatch, missing or unreadable).
    pub fn is_failure(&self) -> bool {
        matches!(
            self,
            Status::Mismatch { .. } | Status::Missing { .. } | Status::Unreadable { .. }
        )
    }
}

/// Verdict on one file, by its name relative to the dataset root.
#[derive(Clone, Debug, Serialize)]
pub struct FileCheck {
    /// Relative path, as in the log.
    pub file: String,
    /// The verdict.
    #[serde(flatten)]
    pub status: Status,
}

/// Result of [`verify`].
#[derive(Clone, Debug, Default, Serialize)]
pub struct Verification {
    /// Every data file found or recorded, by path.
    pub files: Vec<FileCheck>,
    /// Bytes hashed.
    pub bytes: u64,
    /// Unreadable lines in the log.
    pub unreadable_lines: u64,
    /// `.inprogress` files (being written, or left by a crash until recovery): not checked.
    pub in_progress: u64,
}

impl Verification {
    /// Files with the verdict `label` (see [`Status::label`]).
    pub fn count(&self, label: &str) -> usize {
        self.files
            .iter()
            .filter(|f| f.status.label() == label)
            .count()
    }

    /// Files whose verdict fails verification.
    pub fn failures(&self) -> usize {
        self.files.iter().filter(|f| f.status.is_failure()).count()
    }

    /// The one-line summary printed last.
    pub fn summary(&self) -> String {
        format!(
            "verify: {} file(s), {} byte(s) hashed: {} ok, {} mismatch, {} missing, {} unreadable, {} not recorded",
            self.files.len(),
            self.bytes,
            self.count("OK"),
            self.count("MISMATCH"),
            self.count("MISSING"),
            self.count("UNREADABLE"),
            self.count("NOT RECORDED"),
        )
    }
}

/// Re-hashes every closed data file of the dataset at `root` and compares it with the
/// checksum log. `progress(done, total)` is called in bytes as files are read.
pub fn verify(root: &Path, mut progress: impl FnMut(u64, u64)) -> Result<Verification> {
    if !root.is_dir() {
        anyhow::bail!(
            "dataset {} does not exist or is not a directory",
            root.display()
        );
    }
    let recorded = load(root)?;
    let mut out = Verification {
        unreadable_lines: recorded.unreadable_lines,
        ..Verification::default()
    };
    let mut on_disk = Vec::new();
    for path in layout::partition_files(root)? {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.ends_with(layout::IN_PROGRESS_SUFFIX) {
            out.in_progress += 1;
        } else if name.ends_with(".parquet") {
            let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            on_disk.push((relative_name(root, &path), path, bytes));
        }
    }
    let total: u64 = on_disk.iter().map(|(_, _, b)| b).sum();
    let mut done = 0u64;
    progress(0, total);
    let mut seen = std::collections::BTreeSet::new();
    for (name, path, _) in on_disk {
        let status = match hash_file(&path, |n| {
            done += n;
            progress(done, total);
        }) {
            Err(e) => Status::Unreadable {
                error: e.to_string(),
            },
            Ok(actual) => {
                out.bytes += actual.bytes;
                match recorded.files.get(&name) {
                    None => Status::NotRecorded,
                    Some(expected) if *expected == actual => Status::Ok,
                    Some(expected) => Status::Mismatch {
                        expected: *expected,
                        actual,
                    },
                }
            }
        };
        seen.insert(name.clone());
        out.files.push(FileCheck { file: name, status });
    }
    for (name, expected) in &recorded.files {
        if !seen.contains(name) {
            out.files.push(FileCheck {
                file: name.clone(),
                status: Status::Missing {
                    expected: *expected,
                },
            });
        }
    }
    out.files.sort_by(|a, b| a.file.cmp(&b.file));
    Ok(out)
}

/// Data files whose size differs from the size the log recorded for them: a cheap check
/// (one `stat` per file, already done by the caller) that readers run before using a
/// dataset. Returns `(relative name, recorded bytes, bytes now)`.
pub fn size_mismatches<'a>(
    root: &Path,
    files: impl IntoIterator<Item = (&'a Path, u64)>,
) -> Result<Vec<(String, u64, u64)>> {
    let recorded = load(root)?;
    if recorded.files.is_empty() {
        return Ok(Vec::new());
    }
    Ok(files
        .into_iter()
        .filter_map(|(path, bytes)| {
            let name = relative_name(root, path);
            let expected = recorded.files.get(&name)?.bytes;
            (expected != bytes).then_some((name, expected, bytes))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Body, Event, Side, Trade};
    use crate::store::{self, DatasetWriter, WriterOptions, journal};

    fn trade(symbol: &str, ts: i64) -> Event {
        crate::wire::event(
            "v",
            symbol,
            1_700_000_000_000_000_000 + ts,
            ts as u64 + 1,
            Body::Trade(Trade {
                price: "1.5".parse().unwrap(),
                size: "2".parse().unwrap(),
                aggressor: Side::Bid,
                trade_id: ts.to_string().into(),
            }),
        )
    }

    fn verdicts(root: &Path) -> Vec<(String, &'static str)> {
        verify(root, |_, _| {})
            .unwrap()
            .files
            .into_iter()
            .map(|f| (f.file, f.status.label()))
            .collect()
    }

    fn parts(root: &Path) -> Vec<PathBuf> {
        layout::partition_files(root).unwrap()
    }

    #[test]
    fn every_closed_file_has_a_line_matching_its_bytes_including_early_closes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let options = WriterOptions {
            max_open_partitions: 2,
            row_group_rows: 4,
            ..WriterOptions::default()
        };
        let mut w = DatasetWriter::new(root, 0, options).unwrap();
        // Three partitions with a bound of two (evictions), and a late event after a
        // written row group (a late split).
        for i in 0..24 {
            w.write(&trade(["A", "B", "C"][i / 8], i as i64)).unwrap();
        }
        for i in 0..4 {
            w.write(&trade("C", i)).unwrap();
        }
        let stats = w.close().unwrap();
        assert!(stats.evictions > 0 && stats.late_splits > 0, "{stats:?}");

        let recorded = load(root).unwrap();
        let files = parts(root);
        assert_eq!(files.len() as u64, stats.files_closed);
        assert_eq!(recorded.files.len(), files.len());
        for file in &files {
            let on_disk = hash_file(file, |_| {}).unwrap();
            assert_eq!(
                recorded.files.get(&relative_name(root, file)),
                Some(&on_disk),
                "{}",
                file.display()
            );
        }
        let v = verify(root, |_, _| {}).unwrap();
        assert_eq!(v.count("OK"), files.len(), "{v:?}");
        assert_eq!(v.failures(), 0);
        let text = std::fs::read_to_string(log_path(root)).unwrap();
        let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert!(first["file"].as_str().unwrap().starts_with("v/"), "{first}");
        assert_eq!(first["xxh3"].as_str().unwrap().len(), 16, "{first}");
        assert!(first["bytes"].as_u64().unwrap() > 0 && first["written"].is_i64());
    }

    #[test]
    fn files_recovery_or_a_failed_import_delete_are_not_reported_missing() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        // Generation 0 closed three partitions, but its journal (a crash before it was
        // deleted) holds only A's events: recovery deletes B and C and rebuilds A.
        let mut w = DatasetWriter::new(root, 0, WriterOptions::default()).unwrap();
        for (i, s) in ["A", "B", "C"].iter().enumerate() {
            w.write(&trade(s, i as i64)).unwrap();
        }
        w.close().unwrap();
        assert_eq!(verdicts(root).len(), 3);
        let path = layout::journal_path(root, 0);
        files::create_dir_all(path.parent().unwrap()).unwrap();
        let mut journal = journal::JournalWriter::open(&path).unwrap();
        for i in 0..5 {
            journal
                .append(&crate::wire::encode_to_vec(&trade("A", i)))
                .unwrap();
        }
        journal.flush(false).unwrap();
        drop(journal);
        store::recover(root, &WriterOptions::default()).unwrap();
        let after = verdicts(root);
        assert_eq!(after.len(), 1, "{after:?}");
        assert_eq!(
            after[0].1, "OK",
            "the rebuilt file's new line wins: {after:?}"
        );

        // A failed import into the dataset: its files go, and so do their lines.
        let options = WriterOptions {
            max_open_partitions: 1,
            ..WriterOptions::default()
        };
        let failed = store::write_generation(root, &options, |w| -> Result<()> {
            w.write(&trade("X", 10))?;
            w.write(&trade("Y", 11))?; // closes X's file: a line is written
            anyhow::bail!("the import's input ends mid-record")
        });
        assert!(failed.is_err());
        assert_eq!(verdicts(root), after, "nothing missing, nothing new");
    }

    #[test]
    fn verify_reports_mismatch_missing_and_not_recorded_and_skips_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let mut w = DatasetWriter::new(root, 0, WriterOptions::default()).unwrap();
        for (i, s) in ["A", "B", "C"].iter().enumerate() {
            w.write(&trade(s, i as i64)).unwrap();
        }
        w.close().unwrap();
        let files = parts(root);
        // A: two bytes flipped in the middle; B: gone; C: copied under a new name.
        let mut bytes = std::fs::read(&files[0]).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x10;
        bytes[mid + 1] ^= 0x01;
        std::fs::write(&files[0], &bytes).unwrap();
        std::fs::remove_file(&files[1]).unwrap();
        let copy = files[2].with_file_name("part-00000009-0000.parquet");
        std::fs::copy(&files[2], &copy).unwrap();
        // A power cut in the middle of appending a line.
        let mut log = files::append(&log_path(root)).unwrap();
        log.write_all(b"{\"file\":\"v/D/2023-11-14/part-0").unwrap();

        let v = verify(root, |_, _| {}).unwrap();
        let got: Vec<(String, &str)> = v
            .files
            .iter()
            .map(|f| (f.file.clone(), f.status.label()))
            .collect();
        let name = |p: &Path| relative_name(root, p);
        assert_eq!(
            got,
            vec![
                (name(&files[0]), "MISMATCH"),
                (name(&files[1]), "MISSING"),
                (name(&files[2]), "OK"),
                (name(&copy), "NOT RECORDED"),
            ]
        );
        match &v.files[0].status {
            Status::Mismatch { expected, actual } => {
                assert_eq!(expected.bytes, actual.bytes);
                assert_ne!(expected.xxh3, actual.xxh3);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(v.failures(), 2);
        assert_eq!(v.unreadable_lines, 1);
        assert!(
            v.summary()
                .contains("1 ok, 1 mismatch, 1 missing, 0 unreadable, 1 not recorded"),
            "{}",
            v.summary()
        );
    }

    /// What hashing costs the writer: `cargo test --lib hashing_cost -- --ignored
    /// --nocapture` (a debug build measures debug code; see docs/STORAGE.md for figures).
    #[test]
    #[ignore]
    fn hashing_cost_per_byte_against_writing_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let n = 200_000;
        let events: Vec<Event> = (0..n).map(|i| trade("A", i)).collect();
        let started = std::time::Instant::now();
        let mut w = DatasetWriter::new(dir.path(), 0, WriterOptions::default()).unwrap();
        for e in &events {
            w.write(e).unwrap();
        }
        let stats = w.close().unwrap();
        let write = started.elapsed();
        let file = &parts(dir.path())[0];
        let bytes = std::fs::read(file).unwrap();
        let rounds = 20;
        let started = std::time::Instant::now();
        for _ in 0..rounds {
            let mut h = Xxh3::new();
            for chunk in bytes.chunks(8192) {
                h.update(chunk);
            }
            std::hint::black_box(h.digest());
        }
        let hash = started.elapsed() / rounds;
        println!(
            "{n} events, {} bytes: writing {:.0} ns/event ({:.1} ns/byte), xxh3 {:.3} ns/byte = {:.4} % of writing",
            stats.bytes_closed,
            write.as_nanos() as f64 / n as f64,
            write.as_nanos() as f64 / bytes.len() as f64,
            hash.as_nanos() as f64 / bytes.len() as f64,
            100.0 * hash.as_secs_f64() / write.as_secs_f64()
        );
    }
}
