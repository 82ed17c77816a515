//! Reads a dataset back as one stream of events in `ts_recv` order.
//!
//! Files are merged with a streaming k-way merge that opens a file only when the merge
//! reaches its first timestamp and holds one record batch per open file, so memory
//! depends on how many files *overlap in time*, never on how long the dataset is.
//! Row groups entirely outside the time window are skipped using Parquet statistics.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};
use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::file::metadata::ParquetMetaData;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::file::statistics::Statistics;

use super::layout;
use super::schema::BatchView;
use crate::event::{Event, Interner, Kind, UnixNanos};

/// Which events to read. Empty lists mean "all".
#[derive(Clone, Debug, Default)]
pub struct Selection {
    /// Venues to keep.
    pub venues: Vec<String>,
    /// Symbols to keep.
    pub symbols: Vec<String>,
    /// Kinds to keep.
    pub kinds: Vec<Kind>,
    /// Keep `ts_recv >= start`.
    pub start: Option<UnixNanos>,
    /// Keep `ts_recv < end`.
    pub end: Option<UnixNanos>,
}

impl Selection {
    fn keeps_partition(&self, venue: &str, symbol: &str) -> bool {
        (self.venues.is_empty() || self.venues.iter().any(|v| v == venue))
            && (self.symbols.is_empty() || self.symbols.iter().any(|s| s == symbol))
    }

    fn keeps_range(&self, min: UnixNanos, max: UnixNanos) -> bool {
        self.start.is_none_or(|s| max >= s) && self.end.is_none_or(|e| min < e)
    }

    fn keeps_ts(&self, ts: UnixNanos) -> bool {
        self.start.is_none_or(|s| ts >= s) && self.end.is_none_or(|e| ts < e)
    }
}

/// One closed Parquet file of a dataset, described from its footer.
#[derive(Clone, Debug)]
pub struct DataFile {
    /// Path of the file.
    pub path: PathBuf,
    /// Venue (from the partition directory).
    pub venue: String,
    /// Symbol (from the partition directory).
    pub symbol: String,
    /// Rows in the file.
    pub rows: u64,
    /// Smallest `ts_recv`.
    pub min_ts: UnixNanos,
    /// Largest `ts_recv`.
    pub max_ts: UnixNanos,
    /// Size on disk.
    pub bytes: u64,
    /// Row groups whose time range meets the selection.
    row_groups: Vec<usize>,
}

/// Decodes a percent-encoded path component (inverse of [`layout::encode_component`]).
pub fn decode_component(name: &str) -> String {
    let bytes = name.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&name[i + 1..i + 3], 16)
        {
            if b != 0 {
                out.push(b);
            }
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn ts_stats(meta: &ParquetMetaData, rg: usize) -> Option<(i64, i64)> {
    match meta.row_group(rg).column(0).statistics()? {
        Statistics::Int64(s) => Some((*s.min_opt()?, *s.max_opt()?)),
        _ => None,
    }
}

/// Lists the dataset's closed files that may hold selected events, oldest first.
pub fn list_files(root: &Path, selection: &Selection) -> Result<Vec<DataFile>> {
    if !root.is_dir() {
        bail!(
            "dataset {} does not exist or is not a directory (record one with `ticktape record`, or import with `ticktape import`)",
            root.display()
        );
    }
    let mut files = Vec::new();
    for path in layout::partition_files(root)? {
        if path.extension().and_then(|e| e.to_str()) != Some("parquet") {
            continue;
        }
        let components: Vec<String> = path
            .iter()
            .rev()
            .skip(2)
            .take(2)
            .map(|c| decode_component(&c.to_string_lossy()))
            .collect();
        let (symbol, venue) = match components.as_slice() {
            [s, v] => (s.clone(), v.clone()),
            _ => continue,
        };
        if !selection.keeps_partition(&venue, &symbol) {
            continue;
        }
        let file = File::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
        let bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
        let reader = SerializedFileReader::new(file)
            .with_context(|| format!("{} is not a readable Parquet file", path.display()))?;
        let meta = reader.metadata();
        let mut row_groups = Vec::new();
        let (mut min_ts, mut max_ts) = (i64::MAX, i64::MIN);
        for rg in 0..meta.num_row_groups() {
            let (lo, hi) = ts_stats(meta, rg).unwrap_or((i64::MIN, i64::MAX));
            if selection.keeps_range(lo, hi) && meta.row_group(rg).num_rows() > 0 {
                row_groups.push(rg);
                min_ts = min_ts.min(lo);
                max_ts = max_ts.max(hi);
            }
        }
        if row_groups.is_empty() {
            continue;
        }
        files.push(DataFile {
            rows: meta.file_metadata().num_rows() as u64,
            path,
            venue,
            symbol,
            min_ts,
            max_ts,
            bytes,
            row_groups,
        });
    }
    // Deterministic merge order: by first timestamp, then by partition and name.
    files.sort_by(|a, b| (a.min_ts, &a.path).cmp(&(b.min_ts, &b.path)));
    Ok(files)
}

/// The distinct venues and symbols of a dataset, from its directory names.
pub fn partitions(root: &Path) -> Result<BTreeSet<(String, String)>> {
    Ok(list_files(root, &Selection::default())?
        .into_iter()
        .map(|f| (f.venue, f.symbol))
        .collect())
}

struct Cursor {
    order: usize,
    reader: ParquetRecordBatchReader,
    batch: Option<BatchView>,
    rows: usize,
    row: usize,
    path: PathBuf,
}

impl Cursor {
    /// Moves to the next row the selection keeps; false at end of file.
    fn advance_to_kept(&mut self, selection: &Selection) -> Result<bool> {
        loop {
            if let Some(view) = &self.batch {
                while self.row < self.rows {
                    let ts = view.ts_recv(self.row);
                    let kind_ok = selection.kinds.is_empty()
                        || view
                            .kind(self.row)
                            .is_some_and(|k| selection.kinds.contains(&k));
                    if kind_ok && selection.keeps_ts(ts) {
                        return Ok(true);
                    }
                    self.row += 1;
                }
            }
            match self.reader.next() {
                Some(batch) => {
                    let batch =
                        batch.with_context(|| format!("cannot read {}", self.path.display()))?;
                    self.rows = batch.num_rows();
                    self.batch = Some(
                        BatchView::new(&batch)
                            .with_context(|| format!("in {}", self.path.display()))?,
                    );
                    self.row = 0;
                }
                None => return Ok(false),
            }
        }
    }

    fn ts(&self) -> Result<UnixNanos> {
        let view = self.batch.as_ref().context("cursor without batch")?;
        Ok(view.ts_recv(self.row))
    }
}

/// Streams selected events of a dataset in `ts_recv` order.
pub struct EventReader {
    files: Vec<DataFile>,
    next_file: usize,
    heap: BinaryHeap<Reverse<(UnixNanos, usize)>>,
    cursors: Vec<Option<Cursor>>,
    selection: Selection,
    names: Interner,
    /// A trade id `String` kept while non-trade events pass through [`EventReader::read_into`].
    spare_trade_id: String,
    batch_rows: usize,
    /// Rows delivered so far.
    pub delivered: u64,
}

impl EventReader {
    /// Opens the dataset at `root` for reading `selection`.
    pub fn open(root: &Path, selection: Selection) -> Result<EventReader> {
        let files = list_files(root, &selection)?;
        let n = files.len();
        Ok(EventReader {
            files,
            next_file: 0,
            heap: BinaryHeap::new(),
            cursors: (0..n).map(|_| None).collect(),
            selection,
            names: Interner::default(),
            spare_trade_id: String::new(),
            batch_rows: 4096,
            delivered: 0,
        })
    }

    /// The files the reader will merge.
    pub fn files(&self) -> &[DataFile] {
        &self.files
    }

    /// Time range covered by the selected files (`None` when there are none).
    pub fn time_range(&self) -> Option<(UnixNanos, UnixNanos)> {
        let min = self.files.iter().map(|f| f.min_ts).min()?;
        let max = self.files.iter().map(|f| f.max_ts).max()?;
        let min = self.selection.start.map_or(min, |s| min.max(s));
        let max = self.selection.end.map_or(max, |e| max.min(e));
        Some((min, max))
    }

    /// Upper bound on rows to deliver (rows of selected row groups, before row filters).
    pub fn row_estimate(&self) -> u64 {
        self.files.iter().map(|f| f.rows).sum()
    }

    fn admit(&mut self, order: usize) -> Result<()> {
        let file = &self.files[order];
        let handle = File::open(&file.path)
            .with_context(|| format!("cannot open {}", file.path.display()))?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(handle)
            .with_context(|| format!("{} is not a readable Parquet file", file.path.display()))?
            .with_batch_size(self.batch_rows)
            .with_row_groups(file.row_groups.clone())
            .build()?;
        let mut cursor = Cursor {
            order,
            reader,
            batch: None,
            rows: 0,
            row: 0,
            path: file.path.clone(),
        };
        if cursor.advance_to_kept(&self.selection)? {
            self.heap.push(Reverse((cursor.ts()?, order)));
            self.cursors[order] = Some(cursor);
        }
        Ok(())
    }

    /// Reads the next selected event over `event` (any event to start with), reusing
    /// its allocations; false at the end. The allocation-free form of the iterator, for
    /// loops that handle one event at a time.
    pub fn read_into(&mut self, event: &mut Event) -> Result<bool> {
        let Some((order, row)) = self.next_row()? else {
            return Ok(false);
        };
        let cursor = self.cursors[order].as_mut().context("cursor vanished")?;
        let view = cursor.batch.as_ref().context("cursor without batch")?;
        view.event_into(row, &mut self.names, event, &mut self.spare_trade_id)
            .with_context(|| format!("bad row in {}", cursor.path.display()))?;
        self.advance(order)?;
        Ok(true)
    }

    /// The file and row of the next event in `ts_recv` order, opening files as the merge
    /// reaches them.
    fn next_row(&mut self) -> Result<Option<(usize, usize)>> {
        // Open every file that could hold the next event before choosing it.
        while self.next_file < self.files.len() {
            let due = match self.heap.peek() {
                Some(Reverse((ts, _))) => self.files[self.next_file].min_ts <= *ts,
                None => true,
            };
            if !due {
                break;
            }
            self.next_file += 1;
            self.admit(self.next_file - 1)?;
        }
        let Some(Reverse((_, order))) = self.heap.pop() else {
            return Ok(None);
        };
        let cursor = self.cursors[order].as_ref().context("cursor vanished")?;
        Ok(Some((order, cursor.row)))
    }

    /// Moves file `order` past the row just read and puts it back in the merge.
    fn advance(&mut self, order: usize) -> Result<()> {
        let cursor = self.cursors[order].as_mut().context("cursor vanished")?;
        cursor.row += 1;
        if cursor.advance_to_kept(&self.selection)? {
            let ts = cursor.ts()?;
            self.heap.push(Reverse((ts, cursor.order)));
        } else {
            self.cursors[order] = None;
        }
        self.delivered += 1;
        Ok(())
    }

    fn next_event(&mut self) -> Result<Option<Event>> {
        let Some((order, row)) = self.next_row()? else {
            return Ok(None);
        };
        let cursor = self.cursors[order].as_ref().context("cursor vanished")?;
        let view = cursor.batch.as_ref().context("cursor without batch")?;
        let event = view
            .event(row, &mut self.names)
            .with_context(|| format!("bad row in {}", cursor.path.display()))?;
        self.advance(order)?;
        Ok(Some(event))
    }
}

impl Iterator for EventReader {
    type Item = Result<Event>;

    fn next(&mut self) -> Option<Result<Event>> {
        self.next_event().transpose()
    }
}
