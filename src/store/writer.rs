//! Writes events into a dataset's Parquet files, one open file per partition
//! (venue, symbol, UTC date), in bounded memory.
//!
//! A file is written under a `.inprogress` name and renamed only after its footer is on
//! disk, so a reader never sees a half-written file. Rows of a file are sorted by
//! `ts_recv`: each row group is sorted before it is written, and a row group that would
//! go back in time (a late event from a slower redundant publisher) closes the file and
//! starts the next part instead.
//!
//! Every file is hashed as it is written and gets a line in `_ticktape/checksums.jsonl`
//! once renamed (see [`super::checksums`]); files and directories are created with modes
//! 0644 and 0755 whatever the umask (see [`super::files`]).

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

use super::checksums::{ChecksumLog, HashingWriter};
use super::files;
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
    /// Partition files open at once; opening one more first closes the least recently
    /// written (its rows go out as a row group and it gets its footer), so memory and
    /// file descriptors stay bounded however many venue/symbol/day partitions arrive.
    /// Memory is at most this many times `row_group_rows` buffered rows.
    pub max_open_partitions: usize,
}

impl Default for WriterOptions {
    fn default() -> WriterOptions {
        WriterOptions {
            row_group_rows: 65_536,
            zstd_level: 1,
            max_open_partitions: 256,
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
    /// Files closed early to stay within [`WriterOptions::max_open_partitions`].
    pub evictions: u64,
}

impl WriterStats {
    /// Adds `other`'s counters (of a later generation's writer) to these.
    pub fn add(&mut self, other: &WriterStats) {
        self.rows += other.rows;
        self.files_closed += other.files_closed;
        self.bytes_closed += other.bytes_closed;
        self.late_splits += other.late_splits;
        self.evictions += other.evictions;
    }
}

/// Longest file or directory name most file systems accept (ext4, xfs, btrfs, tmpfs).
pub const NAME_MAX: usize = 255;

/// Longest path Linux accepts in one system call, terminating NUL included.
pub const PATH_MAX: usize = 4096;

/// Why events of `venue`/`symbol` cannot be stored under `root`, if they cannot: an
/// encoded name over [`NAME_MAX`] bytes, or a part file path over [`PATH_MAX`]. The
/// recorder checks this before journaling, so such a message is quarantined instead of
/// stopping the writer (and every recovery after it).
pub fn unstorable_partition(root: &Path, venue: &str, symbol: &str) -> Option<String> {
    let (v, s) = (
        layout::encode_component(venue),
        layout::encode_component(symbol),
    );
    for (what, name, encoded) in [("venue", venue, &v), ("symbol", symbol, &s)] {
        if encoded.len() > NAME_MAX {
            let shown: String = name.chars().take(40).collect();
            return Some(format!(
                "{what} {shown:?}... ({} bytes) is {} bytes as a directory name, over the file system's {NAME_MAX}-byte limit: shorten it at the publisher",
                name.len(),
                encoded.len()
            ));
        }
    }
    // root / venue / symbol / YYYY-MM-DD / part-GGGGGGGG-NNNN.parquet.inprogress
    let longest = root.as_os_str().len() + v.len() + s.len() + 10 + 40 + 4;
    (longest >= PATH_MAX).then(|| {
        format!(
            "venue/symbol {venue:?}/{symbol:?} makes a {longest}-byte path under {}, over Linux's {PATH_MAX}-byte limit: shorten them or the dataset path",
            root.display()
        )
    })
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
    writer: ArrowWriter<HashingWriter<File>>,
    buffer: EventColumns,
    last_ts_written: i64,
    /// Value of the writer's write counter when this partition was last written.
    last_write: u64,
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
    /// Events written so far: the clock of least-recently-written eviction.
    writes: u64,
    stats: WriterStats,
    /// `_ticktape/checksums.jsonl`: one line per file closed, synced at [`Self::close`].
    checksums: ChecksumLog,
}

impl DatasetWriter {
    /// A writer for generation `generation` of the dataset at `root` (created if missing).
    pub fn new(root: &Path, generation: u64, options: WriterOptions) -> Result<DatasetWriter> {
        files::create_dir_all(root)
            .with_context(|| format!("cannot create dataset directory {}", root.display()))?;
        Ok(DatasetWriter {
            checksums: ChecksumLog::new(root),
            root: root.to_path_buf(),
            generation,
            next_part: 0,
            options,
            open: FxHashMap::default(),
            last_key: None,
            writes: 0,
            stats: WriterStats::default(),
        })
    }

    /// Continues part numbering after the generation's existing part files, so they are
    /// never overwritten (recovery of a generation whose closed files are kept).
    pub fn after_existing_parts(mut self) -> Result<DatasetWriter> {
        for file in layout::partition_files(&self.root)? {
            let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if layout::generation_of_part(name) != Some(self.generation) {
                continue;
            }
            // part-GGGGGGGG-NNNN.parquet
            if let Some(n) = name.get(14..18).and_then(|n| n.parse::<u64>().ok()) {
                self.next_part = self.next_part.max(n + 1);
            }
        }
        Ok(self)
    }

    /// The generation being written.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Counters so far.
    pub fn stats(&self) -> &WriterStats {
        &self.stats
    }

    /// Partition files open right now.
    pub fn open_partitions(&self) -> usize {
        self.open.len()
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
        self.writes += 1;
        let key = self.last_key.as_ref().expect("set above");
        let full = match self.open.get_mut(key) {
            Some(file) => {
                file.last_write = self.writes;
                file.buffer.push(event);
                file.buffer.len() >= self.options.row_group_rows
            }
            None => {
                let key = key.clone();
                if self.open.len() >= self.options.max_open_partitions.max(1) {
                    self.close_least_recent()?;
                }
                let mut file = self.open_file(&key)?;
                file.last_write = self.writes;
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

    /// Closes the partition file written least recently, to make room for another.
    fn close_least_recent(&mut self) -> Result<()> {
        let Some(key) = self
            .open
            .iter()
            .min_by_key(|(_, f)| f.last_write)
            .map(|(k, _)| k.clone())
        else {
            return Ok(());
        };
        self.write_row_group(&key)?;
        let file = self.open.remove(&key).context("partition vanished")?;
        self.finish_file(file)?;
        self.stats.evictions += 1;
        Ok(())
    }

    fn open_file(&mut self, key: &PartitionKey) -> Result<OpenFile> {
        if let Some(reason) = unstorable_partition(&self.root, &key.venue, &key.symbol) {
            anyhow::bail!("cannot store an event: {reason}");
        }
        let dir = layout::partition_dir(&self.root, &key.venue, &key.symbol, key.day);
        files::create_dir_all(&dir)
            .with_context(|| format!("cannot create partition {}", dir.display()))?;
        let name = layout::part_name(self.generation, self.next_part);
        self.next_part += 1;
        let final_path = dir.join(&name);
        let tmp_path = dir.join(format!("{name}{IN_PROGRESS_SUFFIX}"));
        let file = HashingWriter::new(
            files::create(&tmp_path)
                .with_context(|| format!("cannot create {}", tmp_path.display()))?,
        );
        let mut props = WriterProperties::builder().set_compression(Compression::ZSTD(
            ZstdLevel::try_new(self.options.zstd_level).unwrap_or_default(),
        ));
        // Timestamps and counters rarely repeat: a dictionary only costs time there, while
        // deltas of a sorted or counting column pack into a few bits. Venue sequence ids
        // repeat for every delta of a message: a dictionary first, deltas as its fallback.
        for column in schema::MONOTONIC_COLUMNS {
            let path = ColumnPath::from(*column);
            let dictionary = schema::DICTIONARY_SEQUENCE_COLUMNS.contains(column);
            props = props
                .set_column_dictionary_enabled(path.clone(), dictionary)
                .set_column_encoding(path.clone(), Encoding::DELTA_BINARY_PACKED);
            if dictionary {
                props = props
                    .set_column_dictionary_page_size_limit(path, schema::SEQUENCE_DICTIONARY_BYTES);
            }
        }
        for column in schema::UNCOMPRESSED_COLUMNS {
            props =
                props.set_column_compression(ColumnPath::from(*column), Compression::UNCOMPRESSED);
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
            last_write: 0,
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
        inner.get_ref().sync_all()?;
        let hash = inner.hash();
        let on_disk = inner.get_ref().metadata().map(|m| m.len()).ok();
        drop(inner);
        if let Some(bytes) = on_disk.filter(|b| *b != hash.bytes) {
            anyhow::bail!(
                "{} is {bytes} bytes on disk but {} were written to it: another process wrote to the dataset",
                file.tmp_path.display(),
                hash.bytes
            );
        }
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
        // After the rename: a crash in between leaves a file without a line (`inspect
        // --verify` says NOT RECORDED), never a line without its file.
        self.checksums.written(&file.final_path, hash)?;
        self.stats.files_closed += 1;
        self.stats.bytes_closed += hash.bytes;
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
        // Before the caller deletes the generation's journal.
        self.checksums.sync()?;
        Ok(self.stats)
    }
}

impl EventSink for DatasetWriter {
    fn accept(&mut self, event: Event) -> Result<()> {
        self.write(&event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Body, Trade};
    use crate::store::{EventReader, Selection};

    fn trade(symbol: &str, ts: i64) -> Event {
        crate::wire::event(
            "v",
            symbol,
            ts,
            1,
            Body::Trade(Trade {
                price: "1.5".parse().unwrap(),
                size: "2".parse().unwrap(),
                aggressor: crate::event::Side::Bid,
                trade_id: ts.to_string().into(),
            }),
        )
    }

    #[test]
    fn open_partitions_are_bounded_and_the_least_recently_written_is_closed_first() {
        let dir = tempfile::tempdir().unwrap();
        let options = WriterOptions {
            max_open_partitions: 4,
            ..WriterOptions::default()
        };
        let mut w = DatasetWriter::new(dir.path(), 0, options).unwrap();
        let base = 1_700_000_000_000_000_000i64;
        let mut ts = base;
        for round in 0..3 {
            for s in 0..10 {
                ts += 1;
                w.write(&trade(&format!("S{s}"), ts)).unwrap();
                assert!(
                    w.open_partitions() <= 4,
                    "round {round}, symbol {s}: {} files open",
                    w.open_partitions()
                );
            }
        }
        // S9 was written last and S0 first: S9 is still open, S0 was closed.
        w.write(&trade("S9", ts + 1)).unwrap();
        assert_eq!(
            w.open_partitions(),
            4,
            "writing an open partition opens nothing"
        );
        let stats = w.close().unwrap();
        assert_eq!(stats.rows, 31);
        let rows: Vec<Event> = EventReader::open(dir.path(), Selection::default())
            .unwrap()
            .collect::<Result<_>>()
            .unwrap();
        assert_eq!(rows.len(), 31, "every row readable after evictions");
        assert!(rows.windows(2).all(|w| w[0].ts_recv <= w[1].ts_recv));
    }
}
