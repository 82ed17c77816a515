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

pub mod journal;
pub mod layout;
pub mod reader;
pub mod schema;
pub mod writer;

use std::path::Path;

use anyhow::{Context, Result};

pub use reader::{DataFile, EventReader, Selection};
pub use writer::{DatasetWriter, WriterOptions, WriterStats};

use crate::event::Interner;

/// What [`recover`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Journals replayed into Parquet.
    pub journals: u64,
    /// Events rebuilt from journals.
    pub events: u64,
    /// Bytes of torn journal tails discarded (a record cut by the crash).
    pub torn_bytes: u64,
    /// Leftover `.inprogress` or stale part files removed.
    pub removed_files: u64,
}

/// Rebuilds every generation whose journal is still present, then removes stray
/// `.inprogress` files. Safe to run on a clean dataset (does nothing).
pub fn recover(root: &Path, options: &WriterOptions) -> Result<Recovery> {
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
    for (generation, path) in journals {
        for file in layout::partition_files(root)? {
            let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if layout::generation_of_part(name) == Some(generation) {
                std::fs::remove_file(&file)
                    .with_context(|| format!("cannot remove {}", file.display()))?;
                report.removed_files += 1;
            }
        }
        let mut writer = DatasetWriter::new(root, generation, options.clone())?;
        let mut names = Interner::default();
        let mut bad = 0u64;
        let scan = journal::read_journal(&path, |payload| {
            match crate::wire::decode(payload, &mut names) {
                Ok(event) => writer.write(&event)?,
                // The journal only holds payloads that decoded once; count, never abort.
                Err(_) => bad += 1,
            }
            Ok(())
        })?;
        writer.close()?;
        std::fs::remove_file(&path)
            .with_context(|| format!("cannot remove replayed journal {}", path.display()))?;
        layout::sync_dir(&journal_dir);
        report.journals += 1;
        report.events += scan.records - bad;
        report.torn_bytes += scan.torn_bytes;
    }
    for file in layout::partition_files(root)? {
        if file.to_string_lossy().ends_with(layout::IN_PROGRESS_SUFFIX) {
            std::fs::remove_file(&file)?;
            report.removed_files += 1;
        }
    }
    Ok(report)
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
        for file in layout::partition_files(root).unwrap_or_default() {
            let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if layout::generation_of_part(name) == Some(generation) {
                let _ = std::fs::remove_file(&file);
            }
        }
    };
    match fill(&mut writer).and_then(|value| Ok((value, writer.close()?))) {
        Ok(done) => Ok(done),
        Err(e) => {
            cleanup(root);
            Err(e)
        }
    }
}
