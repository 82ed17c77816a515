//! Reads a dataset back as one stream of events in `ts_recv` order.
//!
//! Files are merged with a streaming k-way merge that opens a file only when the merge
//! reaches its first timestamp and holds one row group's column chunks and one batch of
//! decoded rows per open file ([`super::rows::BatchView`]), so memory depends on how
//! many files *overlap in time*, never on how long the dataset is.
//! Row groups entirely outside the time window are skipped using the Parquet statistics
//! of the `ts_recv` column, found by name (files written by other tools may order
//! columns differently).
//!
//! A row with a null in a column the schema declares non-nullable (`ts_recv`,
//! `ts_event`, `venue`, `symbol`, `kind`, `pub_seq`) is an error naming the file and
//! column, never read as 0 or an empty name: such a row cannot be placed in time or
//! attributed, and skipping it would silently change a backtest.
//!
//! A file whose size differs from the one `_ticktape/checksums.jsonl` recorded when it
//! was written is refused before anything is read (one `stat` per file, done anyway).
//! Contents are not re-hashed here: `ticktape inspect DS --verify` does that. Page CRCs
//! that other writers put in their files (pyarrow's `page_checksum_enabled`) are checked
//! on every read.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use std::cell::RefCell;

use anyhow::{Context, Result, bail, ensure};
use parquet::basic::Type as Physical;
use parquet::file::metadata::ParquetMetaData;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::file::statistics::Statistics;
use parquet::schema::types::{SchemaDescPtr, SchemaDescriptor};

use super::footer::{FileMeta, Footer, FooterGroup};
use super::layout;
use super::rows::{BatchView, Constants, RowNames, SpareIds};
use crate::event::{Event, Kind, UnixNanos};

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

    /// True when no row filter applies (every row of a selected file is kept).
    fn keeps_every_row(&self) -> bool {
        self.kinds.is_empty() && self.start.is_none() && self.end.is_none()
    }

    fn keeps_ts(&self, ts: UnixNanos) -> bool {
        self.start.is_none_or(|s| ts >= s) && self.end.is_none_or(|e| ts < e)
    }
}

/// One closed Parquet file of a dataset, described from its footer.
#[derive(Clone, Debug)]
pub struct DataFile {
    /// Path of the file (shared: starting on a file allocates nothing).
    pub path: Arc<Path>,
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
    row_groups: Arc<[usize]>,
    /// Its schema, decoded when the dataset was opened (one for every file of the same
    /// schema).
    schema: SchemaDescPtr,
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

/// Index of the leaf column `ts_recv` in a file's Parquet schema, by name.
fn ts_recv_column(meta: &ParquetMetaData) -> Option<usize> {
    leaf_of(meta.file_metadata().schema_descr(), "ts_recv")
}

/// `ts_recv` range of row group `rg` from its statistics (column `column`), if written.
fn ts_stats(meta: &ParquetMetaData, rg: usize, column: Option<usize>) -> Option<(i64, i64)> {
    match meta.row_group(rg).column(column?).statistics()? {
        Statistics::Int64(s) => Some((*s.min_opt()?, *s.max_opt()?)),
        _ => None,
    }
}

/// Index of the top-level leaf column `name` in `schema`.
fn leaf_of(schema: &SchemaDescriptor, name: &str) -> Option<usize> {
    schema
        .columns()
        .iter()
        .position(|c| c.path().parts() == [name])
}

/// The one value of text column `column` in a row group, when its statistics prove
/// every row holds it: a minimum equal to the maximum, both exact by the writer's word,
/// and no nulls (the parquet crate's reading of the same statistics).
fn constant_text<'a>(
    schema: &SchemaDescriptor,
    group: &FooterGroup<'a>,
    column: Option<usize>,
) -> Option<&'a str> {
    let c = column?;
    if schema.column(c).physical_type() != Physical::BYTE_ARRAY {
        return None;
    }
    let s = group.statistics(c)?;
    let exact = s.min_exact == Some(true) && s.max_exact == Some(true);
    let (min, max) = (s.min?, s.max?);
    if !exact || s.null_count != Some(0) || min != max {
        return None;
    }
    std::str::from_utf8(min).ok()
}

/// The one value of a row group's price or size scale column (`column`), when its
/// statistics prove every row holds it: minimum equal to maximum, no nulls, stored as
/// Parquet's INT32 (how Arrow's `UInt8` is written) and within a `u8`.
fn constant_scale(
    schema: &SchemaDescriptor,
    group: &FooterGroup<'_>,
    column: Option<usize>,
) -> Option<u8> {
    let c = column?;
    if schema.column(c).physical_type() != Physical::INT32 {
        return None;
    }
    let s = group.statistics(c)?;
    // An INT32 bound is the first four bytes stored, exact when present (as the crate
    // reads it).
    let int = |b: &[u8]| {
        b.get(..4)
            .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let (min, max) = (int(s.min?)?, int(s.max?)?);
    if s.null_count != Some(0) || min != max {
        return None;
    }
    u8::try_from(min).ok()
}

/// Runs one step of the parquet crate's decoding, turning a panic into an error naming
/// the file. The crate asserts on some malformed input (found by fuzzing: a page whose
/// bit width shifts past 64 bits), and a damaged file must be refused, not take the
/// process down. The panic message still goes to stderr through the panic hook.
pub(super) fn guarded<T>(path: &Path, step: impl FnOnce() -> T) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(step)).map_err(|panic| {
        let why = match panic.downcast_ref::<&str>() {
            Some(s) => s.to_string(),
            None => panic.downcast_ref::<String>().cloned().unwrap_or_default(),
        };
        anyhow::anyhow!(
            "{}: corrupt Parquet data (the decoder failed: {why})",
            path.display()
        )
    })
}

/// Refuses a footer whose row counts are negative or whose column chunks lie outside the
/// file: the parquet crate asserts on negative offsets and sizes when it reads them (a
/// panic), so a damaged footer must stop here with an error.
fn check_footer(meta: &ParquetMetaData, file_len: u64) -> Result<()> {
    if meta.file_metadata().num_rows() < 0 {
        bail!("negative row count {}", meta.file_metadata().num_rows());
    }
    for (i, rg) in meta.row_groups().iter().enumerate() {
        if rg.num_rows() < 0 {
            bail!("row group {i}: negative row count {}", rg.num_rows());
        }
        for column in rg.columns() {
            let start = column
                .dictionary_page_offset()
                .unwrap_or(column.data_page_offset());
            let end = u64::try_from(start)
                .ok()
                .zip(u64::try_from(column.compressed_size()).ok())
                .and_then(|(start, len)| start.checked_add(len));
            if end.is_none_or(|end| end > file_len) {
                bail!(
                    "row group {i}: column {} claims bytes {start}+{} of a {file_len}-byte file",
                    column.column_path(),
                    column.compressed_size()
                );
            }
        }
    }
    Ok(())
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
    let mut last_schema: Option<SchemaDescPtr> = None;
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
        let reader = guarded(&path, || SerializedFileReader::new(file))?
            .with_context(|| format!("{} is not a readable Parquet file", path.display()))?;
        let meta = reader.metadata();
        check_footer(meta, bytes)
            .with_context(|| format!("{} has a corrupt Parquet footer", path.display()))?;
        let mut row_groups = Vec::new();
        let (mut min_ts, mut max_ts) = (i64::MAX, i64::MIN);
        let ts_column = ts_recv_column(meta);
        for rg in 0..meta.num_row_groups() {
            let (lo, hi) = ts_stats(meta, rg, ts_column).unwrap_or((i64::MIN, i64::MAX));
            if selection.keeps_range(lo, hi) && meta.row_group(rg).num_rows() > 0 {
                row_groups.push(rg);
                min_ts = min_ts.min(lo);
                max_ts = max_ts.max(hi);
            }
        }
        if row_groups.is_empty() {
            continue;
        }
        // Files of one schema share it.
        let schema = match &last_schema {
            Some(last)
                if last.root_schema() == meta.file_metadata().schema_descr().root_schema() =>
            {
                last.clone()
            }
            _ => meta.file_metadata().schema_descr_ptr(),
        };
        last_schema = Some(schema.clone());
        files.push(DataFile {
            rows: meta.file_metadata().num_rows() as u64,
            path: Arc::from(path),
            venue,
            symbol,
            min_ts,
            max_ts,
            bytes,
            row_groups: row_groups.into(),
            schema,
        });
    }
    // Deterministic merge order: by first timestamp, then by partition and name.
    files.sort_by(|a, b| (a.min_ts, &a.path).cmp(&(b.min_ts, &b.path)));
    Ok(files)
}

/// Refuses files whose size is not what the checksum log recorded when they were written.
fn check_recorded_sizes(root: &Path, files: &[DataFile]) -> Result<()> {
    let changed =
        super::checksums::size_mismatches(root, files.iter().map(|f| (&*f.path, f.bytes)))?;
    let Some((name, expected, now)) = changed.first() else {
        return Ok(());
    };
    let others = match changed.len() - 1 {
        0 => String::new(),
        n => format!(" ({n} other file(s) too)"),
    };
    bail!(
        "{} is {now} bytes but was written as {expected} bytes (_ticktape/checksums.jsonl){others}: \
         it changed after it was written. Run `ticktape inspect {} --verify` to check every \
         file, then restore the file or move it out of the dataset",
        root.join(name).display(),
        root.display()
    )
}

/// The distinct venues and symbols of a dataset, from its directory names.
pub fn partitions(root: &Path) -> Result<BTreeSet<(String, String)>> {
    Ok(list_files(root, &Selection::default())?
        .into_iter()
        .map(|f| (f.venue, f.symbol))
        .collect())
}

/// One open file in the merge: its row groups read one at a time, each without the
/// venue and symbol columns when its statistics show them constant (a file holds one
/// instrument: decoding two string columns per row to learn one name is the largest
/// avoidable cost of reading), likewise without the price and size scales (an
/// instrument's tick rarely changes: two columns of one value each, decoded and checked
/// for nulls on every row), and without the gap columns when they are all null.
struct Cursor {
    order: usize,
    file: File,
    /// The file's footer (buffers kept from file to file), its schema, and the crate's
    /// decoding of the footer when a chunk needs the crate's column reader.
    footer: Footer,
    schema: SchemaDescPtr,
    crate_meta: RefCell<Option<Arc<ParquetMetaData>>>,
    /// The selected row groups, and how many of them have been started.
    groups: Arc<[usize]>,
    started: usize,
    batch_rows: usize,
    /// The current row group's columns and the rows of its last batch, in buffers reused
    /// from batch to batch.
    view: BatchView,
    /// Rows of the last batch (0 before the first).
    rows: usize,
    row: usize,
    path: Arc<Path>,
}

/// The cursors of the files open at once, found by merge order. A cursor holds a file's
/// column buffers (about 20 KiB): kept in as many slots as files are open together, not
/// one per file of the dataset, so memory does not grow with the number of files.
struct OpenCursors {
    slots: Vec<Option<Cursor>>,
    /// The slot of each file (merge order), `NO_SLOT` when not open.
    slot_of: Vec<u32>,
}

const NO_SLOT: u32 = u32::MAX;

impl OpenCursors {
    fn new(files: usize) -> OpenCursors {
        OpenCursors {
            slots: Vec::new(),
            slot_of: vec![NO_SLOT; files],
        }
    }

    fn get(&self, order: usize) -> Option<&Cursor> {
        let slot = *self.slot_of.get(order)?;
        self.slots.get(slot as usize)?.as_ref()
    }

    fn get_mut(&mut self, order: usize) -> Option<&mut Cursor> {
        let slot = *self.slot_of.get(order)?;
        self.slots.get_mut(slot as usize)?.as_mut()
    }

    fn insert(&mut self, order: usize, cursor: Cursor) {
        let slot = match self.slots.iter().position(Option::is_none) {
            Some(free) => free,
            None => {
                self.slots.push(None);
                self.slots.len() - 1
            }
        };
        self.slots[slot] = Some(cursor);
        if let Some(at) = self.slot_of.get_mut(order) {
            *at = u32::try_from(slot).unwrap_or(NO_SLOT);
        }
    }

    fn take(&mut self, order: usize) -> Option<Cursor> {
        let at = self.slot_of.get_mut(order)?;
        let slot = std::mem::replace(at, NO_SLOT);
        self.slots.get_mut(slot as usize)?.take()
    }
}

impl Cursor {
    /// Starts the next row group; false when none is left.
    fn open_group(&mut self, names: &mut RowNames) -> Result<bool> {
        let Some(&group) = self.groups.get(self.started) else {
            return Ok(false);
        };
        self.started += 1;
        let schema = &*self.schema;
        let rg = self.footer.group(group)?;
        let (venue_col, symbol_col) = (leaf_of(schema, "venue"), leaf_of(schema, "symbol"));
        let venue = constant_text(schema, &rg, venue_col);
        let symbol = constant_text(schema, &rg, symbol_col);
        // Only where the file declares the scales as the dataset schema does (`UInt8`): a
        // column of another type stays read, and refused with the error it always got.
        let declared_u8 =
            |c: Option<usize>| c.is_some_and(|c| super::columns::stored_as_u8(schema, c));
        let scale_cols = (
            leaf_of(schema, "price_scale"),
            leaf_of(schema, "size_scale"),
        );
        let price_scale =
            constant_scale(schema, &rg, scale_cols.0).filter(|_| declared_u8(scale_cols.0));
        let size_scale =
            constant_scale(schema, &rg, scale_cols.1).filter(|_| declared_u8(scale_cols.1));
        // At most a few columns (no list kept: nothing allocates per row group).
        let mut all_null = [None; super::rows::SKIPPABLE_WHEN_NULL.len()];
        for (slot, name) in all_null.iter_mut().zip(super::rows::SKIPPABLE_WHEN_NULL) {
            *slot = leaf_of(schema, name).filter(|&c| {
                let rows = u64::try_from(rg.rows()).ok();
                rg.statistics(c).and_then(|s| s.null_count) == rows
            });
        }
        let skip = |i: usize| {
            (venue.is_some() && Some(i) == venue_col)
                || (symbol.is_some() && Some(i) == symbol_col)
                || (price_scale.is_some() && Some(i) == scale_cols.0)
                || (size_scale.is_some() && Some(i) == scale_cols.1)
                || all_null.contains(&Some(i))
        };
        let constants = Constants {
            venue: venue.map(|v| names.venue(v)),
            symbol: symbol.map(|s| names.symbol(s)),
            price_scale,
            size_scale,
        };
        let meta = FileMeta {
            path: &self.path,
            file: &self.file,
            schema,
            footer: &self.footer,
            crate_meta: &self.crate_meta,
        };
        let view = &mut self.view;
        guarded(&self.path, || view.open_group(meta, group, constants, skip))?
            .with_context(|| format!("cannot read {}", self.path.display()))?;
        Ok(true)
    }

    /// Moves to the next row the selection keeps; false at end of file.
    fn advance_to_kept(&mut self, selection: &Selection, names: &mut RowNames) -> Result<bool> {
        loop {
            while self.row < self.rows {
                let ts = self.view.ts_recv(self.row);
                let kind_ok = selection.kinds.is_empty()
                    || (self.view)
                        .kind(self.row)
                        .is_some_and(|k| selection.kinds.contains(&k));
                if kind_ok && selection.keeps_ts(ts) {
                    return Ok(true);
                }
                self.row += 1;
            }
            let (view, batch_rows) = (&mut self.view, self.batch_rows);
            let rows = guarded(&self.path, || view.next_batch(batch_rows))?
                .with_context(|| format!("cannot read {}", self.path.display()))?;
            self.rows = rows;
            self.row = 0;
            if rows == 0 && !self.open_group(names)? {
                return Ok(false);
            }
        }
    }

    fn ts(&self) -> Result<UnixNanos> {
        if self.row >= self.rows {
            bail!("cursor without batch");
        }
        Ok(self.view.ts_recv(self.row))
    }
}

/// Streams selected events of a dataset in `ts_recv` order.
pub struct EventReader {
    files: Vec<DataFile>,
    next_file: usize,
    /// The file the last event came from, with its next time: it goes on while it is the
    /// earliest, without a round through the heap (one file at a time is the common case).
    current: Option<(UnixNanos, usize)>,
    /// The other open files by (next time, merge order).
    heap: BinaryHeap<Reverse<(UnixNanos, usize)>>,
    cursors: OpenCursors,
    selection: Selection,
    names: RowNames,
    /// Trade id `String`s kept while non-trade events pass through [`EventReader::read_into`].
    spare_ids: SpareIds,
    /// The column buffers (and zstd contexts) of files read to their end, for the next
    /// files: a dataset of many files reads each without allocating them again.
    spare_views: Vec<BatchView>,
    /// Likewise the footers' buffers.
    spare_footers: Vec<Footer>,
    batch_rows: usize,
    /// [`Selection::keeps_every_row`] of `selection`.
    keeps_every_row: bool,
    /// An error [`EventReader::read_many_into`] met after reading some events: returned
    /// by the next read, so the events before it are delivered first.
    deferred: Option<anyhow::Error>,
    /// Rows delivered so far.
    pub delivered: u64,
}

impl EventReader {
    /// Opens the dataset at `root` for reading `selection`.
    pub fn open(root: &Path, selection: Selection) -> Result<EventReader> {
        let files = list_files(root, &selection)?;
        check_recorded_sizes(root, &files)?;
        let n = files.len();
        Ok(EventReader {
            files,
            next_file: 0,
            current: None,
            heap: BinaryHeap::new(),
            cursors: OpenCursors::new(n),
            keeps_every_row: selection.keeps_every_row(),
            deferred: None,
            selection,
            names: RowNames::default(),
            spare_ids: SpareIds::default(),
            spare_views: Vec::new(),
            spare_footers: Vec::new(),
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
        let mut footer = self.spare_footers.pop().unwrap_or_default();
        footer
            .read(&handle)
            .with_context(|| format!("{} is not a readable Parquet file", file.path.display()))?;
        let last = file.row_groups.iter().max().copied().unwrap_or(0);
        ensure!(
            u64::try_from(footer.rows()).ok() == Some(file.rows) && last < footer.groups(),
            "{} changed since the dataset was opened (its footer no longer holds {} rows in \
             at least {} row groups): open the dataset again",
            file.path.display(),
            file.rows,
            last + 1
        );
        let mut cursor = Cursor {
            order,
            file: handle,
            footer,
            schema: file.schema.clone(),
            crate_meta: RefCell::new(None),
            groups: file.row_groups.clone(),
            started: 0,
            batch_rows: self.batch_rows,
            view: self.spare_views.pop().unwrap_or_default(),
            rows: 0,
            row: 0,
            path: file.path.clone(),
        };
        if cursor.advance_to_kept(&self.selection, &mut self.names)? {
            self.heap.push(Reverse((cursor.ts()?, order)));
            self.cursors.insert(order, cursor);
        } else {
            self.keep_view(cursor);
        }
        Ok(())
    }

    /// Keeps the buffers of a file read to its end (a few: as many as files end while
    /// others are open) for the next file.
    fn keep_view(&mut self, cursor: Cursor) {
        if self.spare_views.len() < 4 {
            self.spare_views.push(cursor.view);
        }
        if self.spare_footers.len() < 4 {
            self.spare_footers.push(cursor.footer);
        }
    }

    /// Reads the next selected event over `event` (any event to start with), reusing
    /// its allocations; false at the end. The allocation-free form of the iterator, for
    /// loops that handle one event at a time.
    pub fn read_into(&mut self, event: &mut Event) -> Result<bool> {
        let mut spares = std::mem::take(&mut self.spare_ids);
        let read = self.read_into_with(event, &mut spares);
        self.spare_ids = spares;
        read
    }

    /// [`Self::read_into`] with the caller's pool of trade id `String`s: a trade read over
    /// a non-trade event takes one, a non-trade read over a trade leaves its id's there.
    /// For callers that keep many events (a batch of them), with one pool for them all.
    pub fn read_into_with(&mut self, event: &mut Event, spares: &mut SpareIds) -> Result<bool> {
        let Some((order, row)) = self.next_row()? else {
            return Ok(false);
        };
        let cursor = self.cursors.get_mut(order).context("cursor vanished")?;
        (cursor.view)
            .event_into(row, &mut self.names, event, spares)
            .with_context(|| format!("bad row in {}", cursor.path.display()))?;
        self.advance(order)?;
        Ok(true)
    }

    /// Reads up to `events.len()` events over `events` (`spares` the pool of their trade
    /// id `String`s), as many calls of [`Self::read_into_with`] would;
    /// returns how many, 0 only at the end. Rows of the one open file that no other file
    /// can precede are decoded in a loop over its batch without the merge's per-row
    /// bookkeeping. An error after some events is returned by the next call.
    pub fn read_many_into(&mut self, events: &mut [Event], spares: &mut SpareIds) -> Result<usize> {
        if let Some(e) = self.deferred.take() {
            return Err(e);
        }
        let want = events.len();
        let mut n = 0;
        while n < want {
            let read = match self.run_in_batch(&mut events[n..want], spares) {
                Ok(0) => self.read_into_with(&mut events[n], spares).map(usize::from),
                other => other,
            };
            match read {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if n == 0 => return Err(e),
                Err(e) => {
                    self.deferred = Some(e);
                    break;
                }
            }
        }
        Ok(n)
    }

    /// The fast part of [`Self::read_many_into`]: rows of the current file's batch while
    /// it is the only open file, no filter applies, and no file still to open could hold
    /// an earlier row (its first time is later), decoded in runs by
    /// [`BatchView::valid_rows_into`] where it can. Stops before the batch's last row, which
    /// the merge reads (it moves to the next batch or file), and before a row it cannot
    /// decode (an error only when it is the first). The cursor stays on a kept row, the
    /// merge's invariant.
    fn run_in_batch(&mut self, events: &mut [Event], spares: &mut SpareIds) -> Result<usize> {
        if !self.keeps_every_row || !self.heap.is_empty() {
            return Ok(0);
        }
        let Some((_, order)) = self.current else {
            return Ok(0);
        };
        // A file still to open is admitted once the merge reaches its first time.
        let bound = self
            .files
            .get(self.next_file)
            .map_or(UnixNanos::MAX, |f| f.min_ts);
        let Some(Cursor {
            view,
            row,
            rows,
            path,
            ..
        }) = self.cursors.get_mut(order)
        else {
            return Ok(0);
        };
        let want = events.len();
        let mut k = 0;
        while k < want && *row + 1 < *rows {
            // The rows the batch's fast path vouches for, in one loop ...
            let window = (want - k).min(*rows - 1 - *row);
            let window = if bound == UnixNanos::MAX {
                window
            } else {
                (0..window)
                    .position(|j| view.ts_recv(*row + j) >= bound)
                    .unwrap_or(window)
            };
            let fast = view.valid_rows_into(*row, &mut events[k..k + window], spares);
            *row += fast;
            k += fast;
            if k == want || *row + 1 == *rows || view.ts_recv(*row) >= bound {
                break;
            }
            // ... then the row it stopped at (every row of a batch without one), checked
            // on its own: a bad row is an error when it is the first.
            if let Err(e) = view.event_into(*row, &mut self.names, &mut events[k], spares) {
                if k == 0 {
                    return Err(e.context(format!("bad row in {}", path.display())));
                }
                break;
            }
            *row += 1;
            k += 1;
        }
        if k > 0 {
            self.current = Some((view.ts_recv(*row), order));
            self.delivered += k as u64;
        }
        Ok(k)
    }

    /// The earliest (next time, merge order) among the open files.
    fn earliest(&self) -> Option<(UnixNanos, usize)> {
        let top = self.heap.peek().map(|Reverse(t)| *t);
        match (self.current, top) {
            (Some(c), Some(t)) => Some(c.min(t)),
            (c, t) => c.or(t),
        }
    }

    /// The file and row of the next event in `ts_recv` order (ties by merge order),
    /// opening files as the merge reaches them.
    fn next_row(&mut self) -> Result<Option<(usize, usize)>> {
        // Open every file that could hold the next event before choosing it.
        while self.next_file < self.files.len() {
            let due = match self.earliest() {
                Some((ts, _)) => self.files[self.next_file].min_ts <= ts,
                None => true,
            };
            if !due {
                break;
            }
            self.next_file += 1;
            self.admit(self.next_file - 1)?;
        }
        if let Some(&Reverse(top)) = self.heap.peek()
            && self.current.is_none_or(|c| top < c)
        {
            self.heap.pop();
            if let Some(c) = self.current.replace(top) {
                self.heap.push(Reverse(c));
            }
        }
        let Some((_, order)) = self.current else {
            return Ok(None);
        };
        let cursor = self.cursors.get(order).context("cursor vanished")?;
        Ok(Some((order, cursor.row)))
    }

    /// Moves file `order` (the current one) past the row just read.
    fn advance(&mut self, order: usize) -> Result<()> {
        let cursor = self.cursors.get_mut(order).context("cursor vanished")?;
        cursor.row += 1;
        // The usual case: the next row is in the same batch and no filter applies.
        if self.keeps_every_row && cursor.row < cursor.rows {
            self.current = Some((cursor.view.ts_recv(cursor.row), cursor.order));
            self.delivered += 1;
            return Ok(());
        }
        if cursor.advance_to_kept(&self.selection, &mut self.names)? {
            self.current = Some((cursor.ts()?, cursor.order));
        } else {
            self.current = None;
            if let Some(cursor) = self.cursors.take(order) {
                self.keep_view(cursor);
            }
        }
        self.delivered += 1;
        Ok(())
    }

    fn next_event(&mut self) -> Result<Option<Event>> {
        let Some((order, row)) = self.next_row()? else {
            return Ok(None);
        };
        let cursor = self.cursors.get(order).context("cursor vanished")?;
        let event = (cursor.view)
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{Array, ArrayRef, RecordBatch, StringArray, TimestampNanosecondArray};
    use arrow_schema::{Field, Schema};
    use parquet::arrow::ArrowWriter;
    use parquet::file::properties::WriterProperties;

    use super::*;
    use crate::event::{Body, Fixed, Side, Trade};
    use crate::store::schema::EventColumns;

    const T0: i64 = 1_704_164_645_000_000_000; // 2024-01-02T03:04:05Z

    /// A sorted batch of `n` trades, `ts_recv` = T0 + i seconds, `pub_seq` = i + 1.
    fn trades(n: u64) -> RecordBatch {
        let mut columns = EventColumns::default();
        for i in 0..n {
            columns.push(&Event {
                venue: "v".into(),
                symbol: "S".into(),
                ts_event: T0 + i as i64 * 1_000_000_000,
                ts_recv: T0 + i as i64 * 1_000_000_000,
                venue_seq: Some(i + 1),
                prev_venue_seq: Some(i),
                pub_seq: i + 1,
                body: Body::Trade(Trade {
                    aggressor: Side::Bid,
                    price: Fixed::new(100, 0),
                    size: Fixed::new(1, 0),
                    trade_id: (i + 1).to_string().into(),
                }),
            });
        }
        columns.take_sorted_batch().unwrap()
    }

    /// Writes `batch` as the one file of partition v/S, `rows_per_group` rows a group.
    fn write(root: &Path, batch: &RecordBatch, rows_per_group: usize) {
        let dir = layout::partition_dir(root, "v", "S", layout::day_of(T0));
        std::fs::create_dir_all(&dir).unwrap();
        let file = File::create(dir.join(layout::part_name(0, 0))).unwrap();
        let props = WriterProperties::builder()
            .set_max_row_group_row_count(Some(rows_per_group))
            .build();
        let mut writer = ArrowWriter::try_new(file, batch.schema(), Some(props)).unwrap();
        writer.write(batch).unwrap();
        writer.close().unwrap();
    }

    fn window(start_secs: i64, end_secs: i64) -> Selection {
        Selection {
            start: Some(T0 + start_secs * 1_000_000_000),
            end: Some(T0 + end_secs * 1_000_000_000),
            ..Selection::default()
        }
    }

    /// Found by the `parquet_reader` fuzz target: a footer whose column chunk starts at a
    /// negative offset made the parquet crate assert ("column start and length should
    /// not be negative") when the reader opened the file.
    #[test]
    fn a_footer_with_a_negative_column_offset_is_refused_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &trades(10), 100);
        let path = layout::partition_files(dir.path()).unwrap().remove(0);
        let len = std::fs::metadata(&path).unwrap().len();
        let meta = SerializedFileReader::new(File::open(&path).unwrap())
            .unwrap()
            .metadata()
            .clone();
        check_footer(&meta, len).unwrap();
        let mut builder = meta.into_builder();
        let mut groups = builder.take_row_groups();
        let mut group = groups.remove(0).into_builder();
        let mut columns = group.take_columns();
        columns[1] = columns[1]
            .clone()
            .into_builder()
            .set_data_page_offset(-5)
            .set_dictionary_page_offset(None)
            .build()
            .unwrap();
        groups.insert(0, group.set_column_metadata(columns).build().unwrap());
        let broken = builder.set_row_groups(groups).build();
        let err = check_footer(&broken, len).unwrap_err().to_string();
        assert!(err.contains("row group 0") && err.contains("-5"), "{err}");
    }

    /// The error of reading a dataset whose only file is `fixture` (a file of
    /// tests/fixtures/fuzz), all of it, and that file's path in the dataset.
    fn read_fixture_error(fixture: &str) -> (String, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let part = layout::partition_dir(dir.path(), "fuzz", "BTCUSDT", layout::day_of(T0));
        std::fs::create_dir_all(&part).unwrap();
        let path = part.join(layout::part_name(0, 1));
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/fuzz")
            .join(fixture);
        std::fs::copy(&fixture, &path).unwrap();
        let result: Result<Vec<Event>> =
            EventReader::open(dir.path(), Selection::default()).and_then(|reader| reader.collect());
        let err = format!("{:#}", result.unwrap_err());
        assert!(
            err.contains(&path.display().to_string()),
            "names the file: {err}"
        );
        (err, path)
    }

    /// Found by the `parquet_reader` fuzz target (the input is the shrunk case, kept in
    /// tests/fixtures/fuzz): a mutated page made the parquet crate's bit reader shift
    /// past 64 bits, a panic in debug builds, when the reader decoded it.
    #[test]
    fn a_page_that_panics_the_parquet_decoder_is_an_error_naming_the_file() {
        let (_, path) = read_fixture_error("parquet-decoder-shift-overflow.parquet");
        assert!(
            guarded(&path, || panic!("boom"))
                .unwrap_err()
                .to_string()
                .contains("corrupt Parquet data (the decoder failed: boom)")
        );
    }

    /// Found by the `parquet_reader` fuzz target in CI (the shrunk case, kept in
    /// tests/fixtures/fuzz): a run of definition level 80 in a text column whose levels
    /// go to 1 read as a row holding a value the page did not have, an index out of
    /// bounds when the row was decoded. Now the batch is refused, naming the column.
    #[test]
    fn a_definition_level_above_the_columns_maximum_is_an_error_naming_the_column() {
        let (err, _) = read_fixture_error("parquet-definition-level-out-of-range.parquet");
        assert!(
            err.contains("\"gap_reason\"") && err.contains("definition level 80"),
            "{err}"
        );
    }

    /// `read_many_into` in chunks of `chunk` events, as `pub_seq`s.
    fn read_many(root: &Path, selection: Selection, chunk: usize) -> Vec<u64> {
        let (events, error) = read_many_events(root, selection, chunk);
        assert!(error.is_none(), "{error:?}");
        events.iter().map(|e| e.pub_seq).collect()
    }

    /// `read_many_into` in chunks of `chunk` events: the events, and the error that
    /// ended them if one did.
    fn read_many_events(
        root: &Path,
        selection: Selection,
        chunk: usize,
    ) -> (Vec<Event>, Option<String>) {
        let mut reader = EventReader::open(root, selection).unwrap();
        let mut events: Vec<Event> = (0..chunk).map(|_| Event::blank()).collect();
        let mut spares = SpareIds::for_events(chunk);
        let mut got = Vec::new();
        loop {
            match reader.read_many_into(&mut events, &mut spares) {
                Ok(0) => break,
                Ok(n) => got.extend(events[..n].iter().cloned()),
                Err(e) => return (got, Some(format!("{e:#}"))),
            }
        }
        assert_eq!(reader.delivered, got.len() as u64);
        (got, None)
    }

    /// `n` rows of one instrument, one second apart: book deltas (some deleting their
    /// level), a trade every seventh row, a gap at row 1,000, and at row `bad` a book
    /// delta at price 0, which no reader may accept.
    fn mixed(n: u64, bad: Option<u64>) -> RecordBatch {
        let mut columns = EventColumns::default();
        for i in 0..n {
            let side = if i % 2 == 0 { Side::Bid } else { Side::Ask };
            let body = if i == 1_000 {
                Body::Gap(crate::event::Gap {
                    reason: crate::event::GapReason::Resync,
                    missing: Some(3),
                    publisher: "p".into(),
                })
            } else if i % 7 == 3 {
                Body::Trade(Trade {
                    aggressor: side,
                    price: Fixed::new(1_000 + i as i64 % 5, 1),
                    size: Fixed::new(1 + i as i64 % 3, 3),
                    trade_id: format!("t{i}").into(),
                })
            } else {
                let price = if Some(i) == bad {
                    0
                } else {
                    1_000 + i as i64 % 9
                };
                Body::Book(crate::event::BookDelta {
                    side,
                    price: Fixed::new(price, 1),
                    size: Fixed::new(i as i64 % 3, 3),
                    flags: crate::event::Flags(u8::from(i % 4 == 0)),
                })
            };
            let ts = T0 + i as i64 * 1_000_000_000;
            columns.push(&Event {
                venue: "v".into(),
                symbol: "S".into(),
                ts_event: ts - 5,
                ts_recv: ts,
                venue_seq: (i % 5 != 0).then_some(i + 10),
                prev_venue_seq: (i % 5 != 1).then_some(i + 9),
                pub_seq: i + 1,
                body,
            });
        }
        columns.take_sorted_batch().unwrap()
    }

    #[test]
    fn reading_many_decodes_and_refuses_exactly_what_reading_one_at_a_time_does() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &mixed(6_000, None), 2_500);
        let one_at_a_time: Vec<Event> = EventReader::open(dir.path(), Selection::default())
            .unwrap()
            .map(|e| e.unwrap())
            .collect();
        assert_eq!(one_at_a_time.len(), 6_000);
        assert!(matches!(one_at_a_time[1_000].body, Body::Gap(_)));
        for chunk in [1, 7, 1024, 10_000] {
            let (events, error) = read_many_events(dir.path(), Selection::default(), chunk);
            assert!(error.is_none(), "{error:?}");
            assert!(events == one_at_a_time, "chunks of {chunk}");
        }

        // A bad row ends both after the rows before it, with the same reason.
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &mixed(6_000, Some(3_001)), 2_500);
        let mut reader = EventReader::open(dir.path(), Selection::default()).unwrap();
        let before: Vec<Event> = reader.by_ref().map_while(Result::ok).collect();
        assert_eq!(before.len(), 3_001);
        for chunk in [1, 1024] {
            let (events, error) = read_many_events(dir.path(), Selection::default(), chunk);
            assert!(events == before, "chunks of {chunk}");
            let error = error.expect("the bad row is refused");
            assert!(
                error.contains("row 501") && error.contains("book price 0.0 must be above zero"),
                "{error}"
            );
        }
    }

    /// The reader decodes `kind` and `side` pages itself (dictionary keys, plain texts,
    /// levels of both page versions) and every other column through the parquet crate's
    /// column readers: every page layout another writer may choose reads back the same.
    #[test]
    fn every_page_layout_another_writer_may_choose_reads_back_the_same_events() {
        use parquet::basic::Encoding;
        use parquet::file::properties::WriterVersion;
        let batch = mixed(3_000, None);
        let read = |props: WriterProperties| {
            let dir = tempfile::tempdir().unwrap();
            let part = layout::partition_dir(dir.path(), "v", "S", layout::day_of(T0));
            std::fs::create_dir_all(&part).unwrap();
            let file = File::create(part.join(layout::part_name(0, 0))).unwrap();
            let mut writer = ArrowWriter::try_new(file, batch.schema(), Some(props)).unwrap();
            writer.write(&batch).unwrap();
            writer.close().unwrap();
            let events: Vec<Event> = EventReader::open(dir.path(), Selection::default())
                .unwrap()
                .map(|e| e.unwrap())
                .collect();
            let (many, error) = read_many_events(dir.path(), Selection::default(), 333);
            assert!(error.is_none(), "{error:?}");
            assert_eq!(many, events);
            events
        };
        let plain = || WriterProperties::builder().set_max_row_group_row_count(Some(1_200));
        let expected = read(plain().build());
        assert_eq!(expected.len(), 3_000);
        assert!(matches!(expected[1_000].body, Body::Gap(_)));
        assert!(matches!(expected[3].body, Body::Trade(_)));
        let layouts = [
            (
                "pages of version 2",
                plain().set_writer_version(WriterVersion::PARQUET_2_0),
            ),
            ("no dictionary", plain().set_dictionary_enabled(false)),
            (
                "no dictionary, pages of version 2",
                plain()
                    .set_dictionary_enabled(false)
                    .set_writer_version(WriterVersion::PARQUET_2_0),
            ),
            (
                "delta byte arrays (read through the parquet crate)",
                ["kind", "side", "trade_id"].iter().fold(
                    plain().set_dictionary_enabled(false),
                    |props, &column| {
                        props.set_column_encoding(column.into(), Encoding::DELTA_BYTE_ARRAY)
                    },
                ),
            ),
            (
                "pages of 100 rows",
                plain()
                    .set_data_page_row_count_limit(100)
                    .set_write_batch_size(50),
            ),
        ];
        for (what, props) in layouts {
            assert!(read(props.build()) == expected, "{what}");
        }
    }

    #[test]
    fn one_pool_of_trade_id_strings_serves_a_batch_of_events() {
        let dir = tempfile::tempdir().unwrap();
        // Ids longer than a `TradeId` holds inline (24 bytes), so each needs a heap string.
        let batch = mixed(3_000, None);
        let ids = batch.column_by_name("trade_id").unwrap();
        let ids = ids.as_any().downcast_ref::<StringArray>().unwrap();
        let long: StringArray = ids
            .iter()
            .map(|id| id.map(|id| format!("{id}-{:0>30}", 7)))
            .collect();
        let at = batch.schema().index_of("trade_id").unwrap();
        let mut columns = batch.columns().to_vec();
        columns[at] = Arc::new(long);
        write(
            dir.path(),
            &RecordBatch::try_new(batch.schema(), columns).unwrap(),
            1_000,
        );
        let mut reader = EventReader::open(dir.path(), Selection::default()).unwrap();
        let mut events = vec![Event::blank(); 50];
        let mut spares = SpareIds::for_events(events.len());
        let mut pooled_once = false;
        loop {
            let n = reader.read_many_into(&mut events, &mut spares).unwrap();
            if n == 0 {
                break;
            }
            // A string is in the pool or in one event's trade, never both, so the pool
            // (sized for the batch) never grows: a trade every seventh row needs about 8.
            let held = (events.iter())
                .filter(|e| matches!(&e.body, Body::Trade(t) if t.trade_id.is_heap_allocated()))
                .count();
            assert!(
                held + spares.len() <= events.len(),
                "{held} + {}",
                spares.len()
            );
            pooled_once |= !spares.is_empty();
        }
        assert!(
            pooled_once,
            "a trade replaced by a book delta gives its string back"
        );
        assert_eq!(reader.delivered, 3_000);
    }

    #[test]
    fn reading_many_at_once_gives_the_rows_one_at_a_time_gives() {
        let dir = tempfile::tempdir().unwrap();
        // Row groups (3,000 rows) and reader batches (4,096) end at different rows, and a
        // second file a day later is opened once the merge reaches it.
        write(dir.path(), &trades(10_000), 3_000);
        let day = 86_400 * 1_000_000_000;
        let later = trades(5_000);
        let shifted = |name: &str| {
            let c = later.column_by_name(name).unwrap();
            let c = c
                .as_any()
                .downcast_ref::<TimestampNanosecondArray>()
                .unwrap();
            let c: TimestampNanosecondArray = c.unary(|t| t + day);
            Arc::new(c.with_timezone("UTC")) as ArrayRef
        };
        let columns: Vec<ArrayRef> = later
            .schema()
            .fields()
            .iter()
            .map(|f| match f.name().as_str() {
                "ts_recv" | "ts_event" => shifted(f.name()),
                name => later.column_by_name(name).unwrap().clone(),
            })
            .collect();
        let later = RecordBatch::try_new(later.schema(), columns).unwrap();
        let part = layout::partition_dir(dir.path(), "v", "S", layout::day_of(T0 + day));
        std::fs::create_dir_all(&part).unwrap();
        let file = File::create(part.join(layout::part_name(0, 1))).unwrap();
        let mut writer = ArrowWriter::try_new(file, later.schema(), None).unwrap();
        writer.write(&later).unwrap();
        writer.close().unwrap();

        let one_at_a_time: Vec<u64> = EventReader::open(dir.path(), Selection::default())
            .unwrap()
            .map(|e| e.unwrap().pub_seq)
            .collect();
        assert_eq!(one_at_a_time.len(), 15_000);
        for chunk in [1, 7, 1024, 20_000] {
            assert_eq!(
                read_many(dir.path(), Selection::default(), chunk),
                one_at_a_time,
                "chunks of {chunk}"
            );
        }
        // A row filter takes the merge's path: the same rows as one at a time.
        let filtered: Vec<u64> = EventReader::open(dir.path(), window(100, 9_000))
            .unwrap()
            .map(|e| e.unwrap().pub_seq)
            .collect();
        assert_eq!(read_many(dir.path(), window(100, 9_000), 1024), filtered);
    }

    /// Scales constant in a row group are taken from its statistics (the columns are not
    /// read); where they vary, each row's own: either way every row reads back as written.
    #[test]
    fn scales_read_back_exactly_whether_a_row_group_holds_one_or_several() {
        let dir = tempfile::tempdir().unwrap();
        let mut columns = EventColumns::default();
        let mut written = Vec::new();
        for i in 0..3_000u64 {
            // Rows 0..1,000 (the first group) at scales 1 and 3; later ones vary.
            let (ps, ss) = if i < 1_000 {
                (1, 3)
            } else {
                ((i % 4) as u8, (i % 7) as u8)
            };
            let event = Event {
                venue: "v".into(),
                symbol: "S".into(),
                ts_event: T0 + i as i64,
                ts_recv: T0 + i as i64,
                venue_seq: Some(i + 1),
                prev_venue_seq: Some(i),
                pub_seq: i + 1,
                body: Body::Trade(Trade {
                    aggressor: Side::Ask,
                    price: Fixed::new(1_000 + i as i64, ps),
                    size: Fixed::new(1 + i as i64, ss),
                    trade_id: (i + 1).to_string().into(),
                }),
            };
            columns.push(&event);
            written.push(event);
        }
        write(dir.path(), &columns.take_sorted_batch().unwrap(), 1_000);
        let read: Vec<Event> = EventReader::open(dir.path(), Selection::default())
            .unwrap()
            .map(|e| e.unwrap())
            .collect();
        let digits = |e: &Event| match &e.body {
            Body::Trade(t) => (
                t.price.mantissa,
                t.price.scale,
                t.size.mantissa,
                t.size.scale,
            ),
            other => panic!("not a trade: {other:?}"),
        };
        assert_eq!(read.len(), written.len());
        for (r, w) in read.iter().zip(&written) {
            assert_eq!(digits(r), digits(w), "row {}", w.pub_seq - 1);
        }
        let mut events = vec![Event::blank(); 700];
        let mut spares = SpareIds::for_events(700);
        let mut reader = EventReader::open(dir.path(), Selection::default()).unwrap();
        let mut many = Vec::new();
        loop {
            let n = reader.read_many_into(&mut events, &mut spares).unwrap();
            if n == 0 {
                break;
            }
            many.extend(events[..n].iter().map(digits));
        }
        assert_eq!(many, written.iter().map(digits).collect::<Vec<_>>());
    }

    #[test]
    fn row_groups_are_pruned_by_the_ts_recv_column_whatever_the_column_order() {
        let dir = tempfile::tempdir().unwrap();
        let batch = trades(400);
        // Another tool's column order: pub_seq (an integer too) first, ts_recv last.
        let n = batch.num_columns();
        let mut order: Vec<usize> = (0..n).collect();
        let pub_seq = batch.schema().index_of("pub_seq").unwrap();
        order.retain(|&i| i != pub_seq && i != 0);
        order.insert(0, pub_seq);
        order.push(0);
        write(dir.path(), &batch.project(&order).unwrap(), 100);
        let reader = EventReader::open(dir.path(), window(250, 260)).unwrap();
        // Only the row group holding seconds 200..=299 is kept.
        assert_eq!(reader.files().len(), 1);
        assert_eq!(&*reader.files()[0].row_groups, &[2]);
        assert_eq!(reader.files()[0].min_ts, T0 + 200 * 1_000_000_000);
        let got: Vec<u64> = reader.map(|e| e.unwrap().pub_seq).collect();
        assert_eq!(got, (251..=260).collect::<Vec<u64>>());
    }

    #[test]
    fn a_null_ts_recv_is_an_error_naming_file_and_column_not_time_zero() {
        let dir = tempfile::tempdir().unwrap();
        let batch = trades(10);
        let mut ts: Vec<Option<i64>> = (0..10).map(|i| Some(T0 + i * 1_000_000_000)).collect();
        ts[3] = None;
        let ts: ArrayRef = Arc::new(TimestampNanosecondArray::from(ts).with_timezone("UTC"));
        let schema = batch.schema();
        let mut fields: Vec<Field> = schema.fields().iter().map(|f| (**f).clone()).collect();
        fields[0] = fields[0].clone().with_nullable(true);
        let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
        columns[0] = ts;
        let nulls = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap();
        assert_eq!(nulls.column(0).null_count(), 1);
        write(dir.path(), &nulls, 100);
        let result: Result<Vec<Event>> = EventReader::open(dir.path(), Selection::default())
            .unwrap()
            .collect();
        let e = format!("{:#}", result.unwrap_err());
        assert!(e.contains("1 row(s) with a null ts_recv"), "{e}");
        assert!(e.contains("part-00000000-0000.parquet"), "{e}");
    }
}
