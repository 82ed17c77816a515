//! `ticktape inspect`: what a dataset holds — venues, symbols, kinds, time range, row
//! counts, gaps, and the recorder's duplicate/malformed counters.
//!
//! Reads only Parquet footers and the few columns it counts. Never writes.
//!
//! With `--verify` ([`verify`]) it reads every data file's bytes instead and compares
//! their hash with `_ticktape/checksums.jsonl` (see [`crate::store::checksums`]).

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;

use anyhow::{Context, Result};
use arrow_array::{Array, StringArray, TimestampNanosecondArray, UInt64Array};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::Serialize;

use crate::store::checksums::{self, Status, Verification};
use crate::store::{Selection, layout, reader};

/// One gap row.
#[derive(Clone, Debug, Serialize)]
pub struct GapRow {
    /// When (ts_recv): data may be missing just before this.
    pub ts: i64,
    /// Where the span of missing data starts (`ts_event`): the last stored event before
    /// a `recorder_down` downtime; equal to `ts` for the other reasons.
    pub since: i64,
    /// Venue.
    pub venue: String,
    /// Symbol.
    pub symbol: String,
    /// Reason name.
    pub reason: String,
    /// Missing messages, if known.
    pub missing: Option<u64>,
    /// Publisher the gap was seen on.
    pub publisher: String,
}

/// Summary of one venue/symbol.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PartitionSummary {
    /// Venue.
    pub venue: String,
    /// Symbol.
    pub symbol: String,
    /// Closed Parquet files.
    pub files: u64,
    /// Rows.
    pub rows: u64,
    /// Bytes on disk.
    pub bytes: u64,
    /// First `ts_recv`.
    pub first_ts: i64,
    /// Last `ts_recv`.
    pub last_ts: i64,
    /// Rows per kind.
    pub kinds: BTreeMap<String, u64>,
}

/// Summary of a dataset.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DatasetSummary {
    /// Per venue/symbol.
    pub partitions: Vec<PartitionSummary>,
    /// Every gap row, in time order.
    pub gaps: Vec<GapRow>,
    /// Duplicates dropped by recorder sessions (from `_ticktape/sessions.jsonl`).
    pub duplicates: u64,
    /// Malformed messages quarantined by recorder sessions.
    pub malformed: u64,
    /// Fields recorder sessions ignored because their decoder did not know them (a
    /// publisher of a later minor protocol version, `docs/PROTOCOL.md` "Compatibility").
    pub unknown_fields: u64,
    /// Recorder and importer sessions logged.
    pub sessions: u64,
    /// Of those, recorder sessions that ended abnormally (kill, crash, error exit),
    /// logged by the recovery after them.
    pub abnormal_sessions: u64,
    /// Journals not yet turned into Parquet (a recorder is running, or crashed and has
    /// not been restarted: `ticktape record` on the dataset recovers them).
    pub pending_journals: u64,
    /// Journals recovery found damaged before their tail and kept aside
    /// (`_journal/gen-<g>.log.damaged-<t>`): events after the damage are only there.
    pub damaged_journals: Vec<String>,
    /// Data files without a line in `_ticktape/checksums.jsonl` (written by an older
    /// ticktape, or copied in): `--verify` cannot check them.
    pub files_without_checksum: u64,
    /// Data files whose size is not the one recorded when they were written (relative
    /// paths): changed since; `replay`, `run` and `book` refuse them.
    pub size_changed: Vec<String>,
}

/// Summarizes the dataset at `root`.
pub fn inspect(root: &Path) -> Result<DatasetSummary> {
    let files = reader::list_files(root, &Selection::default())?;
    let mut parts: BTreeMap<(String, String), PartitionSummary> = BTreeMap::new();
    let mut summary = DatasetSummary::default();
    for f in &files {
        let p = parts
            .entry((f.venue.clone(), f.symbol.clone()))
            .or_insert_with(|| PartitionSummary {
                venue: f.venue.clone(),
                symbol: f.symbol.clone(),
                first_ts: i64::MAX,
                last_ts: i64::MIN,
                ..Default::default()
            });
        p.files += 1;
        p.rows += f.rows;
        p.bytes += f.bytes;
        p.first_ts = p.first_ts.min(f.min_ts);
        p.last_ts = p.last_ts.max(f.max_ts);
        count_file(&f.path, p, &mut summary.gaps)?;
    }
    summary.partitions = parts.into_values().collect();
    let recorded = checksums::load(root)?;
    summary.files_without_checksum = files
        .iter()
        .filter(|f| {
            !recorded
                .files
                .contains_key(&checksums::relative_name(root, &f.path))
        })
        .count() as u64;
    summary.size_changed =
        checksums::size_mismatches(root, files.iter().map(|f| (&*f.path, f.bytes)))?
            .into_iter()
            .map(|(name, _, _)| name)
            .collect();
    summary.gaps.sort_by_key(|g| g.ts);
    if let Ok(text) = std::fs::read_to_string(root.join(layout::META_DIR).join("sessions.jsonl")) {
        for line in text.lines() {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
                if v["tool"] == "recover" {
                    continue;
                }
                summary.sessions += 1;
                if v["end"] == "abnormal" {
                    summary.abnormal_sessions += 1;
                }
                summary.duplicates += v["stats"]["duplicates"].as_u64().unwrap_or(0);
                summary.malformed += v["stats"]["malformed"].as_u64().unwrap_or(0);
                summary.unknown_fields += v["stats"]["unknown_fields"].as_u64().unwrap_or(0);
            }
        }
    }
    if let Ok(dir) = std::fs::read_dir(root.join(layout::JOURNAL_DIR)) {
        for entry in dir.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if layout::generation_of_journal(&name).is_some() {
                summary.pending_journals += 1;
            } else if name.contains(".damaged-") {
                summary.damaged_journals.push(name);
            }
        }
        summary.damaged_journals.sort();
    }
    Ok(summary)
}

fn count_file(path: &Path, p: &mut PartitionSummary, gaps: &mut Vec<GapRow>) -> Result<()> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .with_context(|| format!("{} is not a readable Parquet file", path.display()))?;
    let wanted = [
        "ts_recv",
        "ts_event",
        "venue",
        "symbol",
        "kind",
        "gap_reason",
        "gap_missing",
        "gap_publisher",
    ];
    let mask = ProjectionMask::columns(builder.parquet_schema(), wanted);
    for batch in builder.with_projection(mask).build()? {
        let batch = batch?;
        let col = |name: &str| batch.column_by_name(name).cloned();
        let kind = col("kind").context("no kind column")?;
        let kind = kind
            .as_any()
            .downcast_ref::<StringArray>()
            .context("kind type")?;
        for i in 0..kind.len() {
            *p.kinds.entry(kind.value(i).to_string()).or_default() += 1;
            if kind.value(i) == "gap" {
                let s = |name: &str| {
                    col(name)
                        .and_then(|c| {
                            c.as_any()
                                .downcast_ref::<StringArray>()
                                .map(|a| a.value(i).to_string())
                        })
                        .unwrap_or_default()
                };
                let time = |name: &str| {
                    col(name)
                        .and_then(|c| {
                            c.as_any()
                                .downcast_ref::<TimestampNanosecondArray>()
                                .map(|a| a.value(i))
                        })
                        .unwrap_or_default()
                };
                let ts = time("ts_recv");
                let missing = col("gap_missing").and_then(|c| {
                    c.as_any()
                        .downcast_ref::<UInt64Array>()
                        .and_then(|a| a.is_valid(i).then(|| a.value(i)))
                });
                gaps.push(GapRow {
                    ts,
                    since: time("ts_event"),
                    venue: s("venue"),
                    symbol: s("symbol"),
                    reason: s("gap_reason"),
                    missing,
                    publisher: s("gap_publisher"),
                });
            }
        }
    }
    Ok(())
}

fn human_bytes(b: u64) -> String {
    match b {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

/// Renders the summary as a readable report.
pub fn render(root: &Path, s: &DatasetSummary) -> String {
    let mut out = String::new();
    let rows: u64 = s.partitions.iter().map(|p| p.rows).sum();
    let bytes: u64 = s.partitions.iter().map(|p| p.bytes).sum();
    let files: u64 = s.partitions.iter().map(|p| p.files).sum();
    out.push_str(&format!(
        "dataset {}: {} rows in {} files, {} on disk\n\n",
        root.display(),
        rows,
        files,
        human_bytes(bytes)
    ));
    out.push_str(&format!(
        "{:<12} {:<12} {:>10} {:>10} {:>8} {:>6}  {:<30} {:<30}\n",
        "venue",
        "symbol",
        "book",
        "trade",
        "gap",
        "files",
        "first ts_recv (UTC)",
        "last ts_recv (UTC)"
    ));
    for p in &s.partitions {
        let k = |name: &str| p.kinds.get(name).copied().unwrap_or(0);
        out.push_str(&format!(
            "{:<12} {:<12} {:>10} {:>10} {:>8} {:>6}  {:<30} {:<30}\n",
            p.venue,
            p.symbol,
            k("book"),
            k("trade"),
            k("gap"),
            p.files,
            layout::format_ts(p.first_ts),
            layout::format_ts(p.last_ts)
        ));
    }
    out.push_str(&format!(
        "\nsessions {} ({} ended abnormally)   duplicates dropped {}   malformed quarantined {}   gaps {}\n",
        s.sessions,
        s.abnormal_sessions,
        s.duplicates,
        s.malformed,
        s.gaps.len()
    ));
    if s.unknown_fields > 0 {
        out.push_str(&format!(
            "note: {} unknown field(s) ignored while recording (a publisher speaks a newer minor protocol version; see sessions.jsonl)\n",
            s.unknown_fields
        ));
    }
    if s.pending_journals > 0 {
        out.push_str(&format!(
            "note: {} journal(s) not yet in Parquet (recorder running, or run `ticktape record` on this dataset to recover)\n",
            s.pending_journals
        ));
    }
    for name in &s.size_changed {
        out.push_str(&format!(
            "warning: {name} changed size since it was written (replay, run and book refuse it); run `ticktape inspect {} --verify`\n",
            root.display()
        ));
    }
    if s.files_without_checksum > 0 {
        out.push_str(&format!(
            "note: {} of {files} file(s) have no recorded checksum (older recorder, or copied in): `inspect --verify` cannot check them\n",
            s.files_without_checksum
        ));
    }
    for name in &s.damaged_journals {
        out.push_str(&format!(
            "warning: damaged journal kept as _journal/{name}: the events after its damage are not in Parquet\n"
        ));
    }
    for g in s.gaps.iter().take(20) {
        let span = if g.since < g.ts {
            format!("{} .. ", layout::format_ts(g.since))
        } else {
            String::new()
        };
        out.push_str(&format!(
            "  gap {span}{} {}/{} {} missing={} publisher={}\n",
            layout::format_ts(g.ts),
            g.venue,
            g.symbol,
            g.reason,
            g.missing.map_or("?".to_string(), |m| m.to_string()),
            g.publisher
        ));
    }
    if s.gaps.len() > 20 {
        out.push_str(&format!("  ... {} more (use --json)\n", s.gaps.len() - 20));
    }
    out
}

/// Re-hashes every data file of the dataset at `root` against its checksum log;
/// `progress(done, total)` in bytes. See [`checksums::verify`].
pub fn verify(root: &Path, progress: impl FnMut(u64, u64)) -> Result<Verification> {
    checksums::verify(root, progress)
}

/// Renders a verification: one line per file (`OK`, `MISMATCH` with expected and actual,
/// `NOT RECORDED`, `MISSING`, `UNREADABLE`), notes, and the summary line last.
pub fn render_verification(root: &Path, v: &Verification) -> String {
    let mut out = String::new();
    for f in &v.files {
        let detail = match &f.status {
            Status::Ok | Status::NotRecorded => String::new(),
            Status::Mismatch { expected, actual } => {
                format!("  expected {expected}, found {actual}")
            }
            Status::Missing { expected } => format!("  expected {expected}, no such file"),
            Status::Unreadable { error } => format!("  {error}"),
        };
        out.push_str(&format!("{:<12} {}{detail}\n", f.status.label(), f.file));
    }
    if v.unreadable_lines > 0 {
        out.push_str(&format!(
            "note: {} unreadable line(s) in {} skipped (a torn last line after a power cut is one)\n",
            v.unreadable_lines,
            checksums::log_path(root).display()
        ));
    }
    if v.in_progress > 0 {
        out.push_str(&format!(
            "note: {} .inprogress file(s) not checked (being written, or left by a crash until `ticktape recover`)\n",
            v.in_progress
        ));
    }
    if v.count("NOT RECORDED") > 0 {
        out.push_str(
            "note: NOT RECORDED files were written by an older ticktape or copied in; their content cannot be checked\n",
        );
    }
    out.push_str(&v.summary());
    out.push('\n');
    out
}
