//! Writes events into a dataset's Parquet files, one open file per partition
//! (venue, symbol, UTC date), in bounded memory.
//!
//! A file is written under a `.inprogress` name and renamed only after its footer is on
//! disk, so a reader never sees a half-written file. Rows of a file are sorted by
//! `ts_recv`: each row group is sorted before it is written, and a row group that would
//! go back in time (a late event from a slower redundant publisher) closes the file and
//! starts the next part instead.

use rustc_hash::FxHashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::{KeyValue, SortingColumn};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use super::layout::{self, IN_PROGRESS_SUFFIX};
use super::schema::{self, EventColumns};
use crate::event::{Event, EventSink};

/// How the writer shapes files.
#[derive(Clone, Debug)]
pub struct WriterOptions {
    /// Rows per row group (and per partition held in memory before writing).
    pub row_group_rows: usize,
    /// zstd level (1 is fast and already much smaller than gzip'd JSON).
    pub zstd_level: i32,
}

impl Default for WriterOptions {
    fn default() -> WriterOptions {
        WriterOptions {
            row_group_rows: 65_536,
            zstd_level: 1,
        }
    }
}

/// Counters of a writer's life so far.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct WriterStats {
    /// Rows handed to Parquet.
    pub rows: u64,
    /// Files closed and renamed into place.
    pub files_closed: u64,
    /// Bytes of closed files.
    pub bytes_closed: u64,
    /// Files closed early because a late event would have broken `ts_recv` order.
    pub late_splits: u64,
}

impl WriterStats {
    /// Adds `other`'s counters (of a later generation's writer) to these.
    pub fn add(&mut self, other: &WriterStats) {
        self.rows += other.rows;
        self.files_closed += other.files_closed;
        self.bytes_closed += other.bytes_closed;
        self.late_splits += other.late_splits;
    }
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct PartitionKey {
    venue: Arc<str>,
    symbol: Arc<str>,
    day: i64,
}

struct OpenFile {
    tmp_path: PathBuf,
    final_path: PathBuf,
    writer: ArrowWriter<File>,
    buffer: EventColumns,
    last_ts_written: i64,
}

/// Writes one generation of a dataset. Call [`DatasetWriter::close`] to finish it:
/// dropping the writer without closing leaves `.inprogress` files that the next
/// recovery deletes and rebuilds from the journal.
pub struct DatasetWriter {
    root: PathBuf,
    generation: u64,
    next_part: u64,
    options: WriterOptions,
    open: FxHashMap<PartitionKey, OpenFile>,
    /// The previous event's partition: consecutive events mostly share it, and reusing
    /// the key spares two `Arc` clones per event.
    last_key: Option<PartitionKey>,
    stats: WriterStats,
}

impl DatasetWriter {
    /// A writer for generation `generation` of the dataset at `root` (created if missing).
    pub fn new(root: &Path, generation: u64, options: WriterOptions) -> Result<DatasetWriter> {
        std::fs::create_dir_all(root)
            .with_context(|| format!("cannot create dataset directory {}", root.display()))?;
        Ok(DatasetWriter {
            root: root.to_path_buf(),
            generation,
            next_part: 0,
            options,
            open: FxHashMap::default(),
            last_key: None,
            stats: WriterStats::default(),
        })
    }

    /// The generation being written.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Counters so far.
    pub fn stats(&self) -> &WriterStats {
        &self.stats
    }

    /// Rows buffered in memory, not yet in a row group.
    pub fn buffered_rows(&self) -> usize {
        self.open.values().map(|f| f.buffer.len()).sum()
    }

    /// Adds one event; heartbeats and end-of-stream are not stored.
    pub fn write(&mut self, event: &Event) -> Result<()> {
        if !event.kind().is_stored() {
            return Ok(());
        }
        let day = layout::day_of(event.ts_recv);
        let same = self.last_key.as_ref().is_some_and(|k| {
            k.day == day
                && Arc::ptr_eq(&k.venue, &event.venue)
                && Arc::ptr_eq(&k.symbol, &event.symbol)
        });
        if !same {
            self.last_key = Some(PartitionKey {
                venue: event.venue.clone(),
                symbol: event.symbol.clone(),
                day,
            });
        }
        let key = self.last_key.as_ref().expect("set above");
        let full = match self.open.get_mut(key) {
            Some(file) => {
                file.buffer.push(event);
                file.buffer.len() >= self.options.row_group_rows
            }
            None => {
                let key = key.clone();
                let mut file = self.open_file(&key)?;
                file.buffer.push(event);
                let full = file.buffer.len() >= self.options.row_group_rows;
                self.open.insert(key, file);
                full
            }
        };
        if full {
            let key = self.last_key.clone().expect("set above");
            self.write_row_group(&key)?;
        }
        Ok(())
    }

    fn open_file(&mut self, key: &PartitionKey) -> Result<OpenFile> {
        let dir = layout::partition_dir(&self.root, &key.venue, &key.symbol, key.day);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create partition {}", dir.display()))?;
        let name = layout::part_name(self.generation, self.next_part);
        self.next_part += 1;
        let final_path = dir.join(&name);
        let tmp_path = dir.join(format!("{name}{IN_PROGRESS_SUFFIX}"));
        let file = File::create(&tmp_path)
            .with_context(|| format!("cannot create {}", tmp_path.display()))?;
        let mut props = WriterProperties::builder().set_compression(Compression::ZSTD(
            ZstdLevel::try_new(self.options.zstd_level).unwrap_or_default(),
        ));
        // Timestamps and sequence numbers almost never repeat: a dictionary only costs
        // time there, while deltas of a sorted or counting column pack into a few bits.
        for column in schema::MONOTONIC_COLUMNS {
            let path = ColumnPath::from(*column);
            props = props
                .set_column_dictionary_enabled(path.clone(), false)
                .set_column_encoding(path, Encoding::DELTA_BINARY_PACKED);
        }
        let props = props
            .set_max_row_group_row_count(Some(self.options.row_group_rows))
            .set_statistics_enabled(EnabledStatistics::Chunk)
            .set_sorting_columns(Some(vec![SortingColumn {
                column_idx: 0,
                descending: false,
                nulls_first: false,
            }]))
            .set_key_value_metadata(Some(vec![KeyValue::new(
                schema::META_SCHEMA_VERSION.to_string(),
                schema::SCHEMA_VERSION.to_string(),
            )]))
            .build();
        let writer = ArrowWriter::try_new(file, schema::schema(), Some(props))
            .context("cannot start Parquet writer")?;
        Ok(OpenFile {
            tmp_path,
            final_path,
            writer,
            buffer: EventColumns::default(),
            last_ts_written: i64::MIN,
        })
    }

    fn write_row_group(&mut self, key: &PartitionKey) -> Result<()> {
        let late = {
            let file = self.open.get(key).context("partition vanished")?;
            match file.buffer.ts_range() {
                Some((min, _)) => min < file.last_ts_written,
                None => return Ok(()),
            }
        };
        if late {
            // Keep every file sorted by ts_recv: finish this one and continue in a new part.
            let mut file = self.open.remove(key).context("partition vanished")?;
            let mut fresh = self.open_file(key)?;
            std::mem::swap(&mut fresh.buffer, &mut file.buffer);
            self.finish_file(file)?;
            self.stats.late_splits += 1;
            self.open.insert(key.clone(), fresh);
        }
        let file = self.open.get_mut(key).context("partition vanished")?;
        let rows = file.buffer.len() as u64;
        let batch = file.buffer.take_sorted_batch()?;
        if let Some(max) = batch
            .column(0)
            .as_any()
            .downcast_ref::<arrow_array::TimestampNanosecondArray>()
            .and_then(|a| a.values().last().copied())
        {
            file.last_ts_written = max;
        }
        file.writer
            .write(&batch)
            .with_context(|| format!("cannot write {}", file.tmp_path.display()))?;
        file.writer.flush()?;
        self.stats.rows += rows;
        Ok(())
    }

    fn finish_file(&mut self, mut file: OpenFile) -> Result<()> {
        let (price_scale, size_scale) = file.buffer.dominant_scales();
        if !file.buffer.is_empty() {
            let rows = file.buffer.len() as u64;
            let batch = file.buffer.take_sorted_batch()?;
            file.writer.write(&batch)?;
            self.stats.rows += rows;
        }
        file.writer.append_key_value_metadata(KeyValue::new(
            schema::META_PRICE_SCALE.to_string(),
            price_scale.to_string(),
        ));
        file.writer.append_key_value_metadata(KeyValue::new(
            schema::META_SIZE_SCALE.to_string(),
            size_scale.to_string(),
        ));
        let inner = file
            .writer
            .into_inner()
            .with_context(|| format!("cannot finish {}", file.tmp_path.display()))?;
        inner.sync_all()?;
        let bytes = inner.metadata().map(|m| m.len()).unwrap_or(0);
        drop(inner);
        std::fs::rename(&file.tmp_path, &file.final_path).with_context(|| {
            format!(
                "cannot rename {} to {}",
                file.tmp_path.display(),
                file.final_path.display()
            )
        })?;
        if let Some(dir) = file.final_path.parent() {
            layout::sync_dir(dir);
        }
        self.stats.files_closed += 1;
        self.stats.bytes_closed += bytes;
        Ok(())
    }

    /// Writes every buffered row and closes every file of this generation.
    pub fn close(mut self) -> Result<WriterStats> {
        let keys: Vec<PartitionKey> = self.open.keys().cloned().collect();
        for key in keys {
            self.write_row_group(&key)?;
            let file = self.open.remove(&key).context("partition vanished")?;
            self.finish_file(file)?;
        }
        Ok(self.stats)
    }
}

impl EventSink for DatasetWriter {
    fn accept(&mut self, event: Event) -> Result<()> {
        self.write(&event)
    }
}
