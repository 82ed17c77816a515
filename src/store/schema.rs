//! The Parquet/Arrow schema of a ticktape dataset (version [`SCHEMA_VERSION`]) and the
//! conversion between [`Event`]s and Arrow record batches.
//!
//! One wide table holds every stored kind (`book`, `trade`, `gap`), so one glob reads a
//! whole dataset and replay merges a single stream. Columns that do not apply to a kind
//! are null. Prices and sizes are exact: integer mantissa plus decimal scale, value =
//! `price / 10^price_scale`. See `docs/STORAGE.md` for the column reference.

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use arrow_array::types::{Int32Type, Int64Type, TimestampNanosecondType, UInt8Type, UInt64Type};
use arrow_array::{
    Array, ArrayRef, ArrowPrimitiveType, DictionaryArray, Int32Array, Int64Array, PrimitiveArray,
    RecordBatch, StringArray, TimestampNanosecondArray, UInt8Array, UInt64Array,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::event::{
    Body, BookDelta, Event, Fixed, Flags, Gap, GapReason, Interner, Kind, Side, Trade,
};

/// Version of the column layout, written to every file's key-value metadata.
pub const SCHEMA_VERSION: u32 = 1;

/// Key-value metadata key holding [`SCHEMA_VERSION`].
pub const META_SCHEMA_VERSION: &str = "ticktape.schema_version";
/// Key-value metadata key: the price scale most rows of the file use.
pub const META_PRICE_SCALE: &str = "ticktape.price_scale";
/// Key-value metadata key: the size scale most rows of the file use.
pub const META_SIZE_SCALE: &str = "ticktape.size_scale";

fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
}

/// Integer columns that mostly grow (timestamps and sequence numbers), stored as deltas.
pub const MONOTONIC_COLUMNS: &[&str] = &[
    "ts_recv",
    "ts_event",
    "venue_seq",
    "prev_venue_seq",
    "pub_seq",
];

/// Of [`MONOTONIC_COLUMNS`], those stored with a dictionary first: every delta of a venue
/// message repeats the message's sequence ids (16.7 rows a message on the Binance USD-M
/// capture), and the ids jump by thousands between messages, so their deltas need ~30
/// bits a row where a dictionary key in runs needs a few. On that capture the two
/// columns take 245 KB instead of 307 KB in the file (the file 2.8 % less), and 0.61 MB
/// instead of 3.83 MB of pages once decompressed; reading a round costs 1.6 % fewer
/// instructions on the reader's thread (fewer delta decodes, about as much zstd work:
/// it follows the compressed bytes). A column chunk whose dictionary outgrows
/// [`SEQUENCE_DICTIONARY_BYTES`] (ids that rarely repeat) goes on with deltas.
pub const DICTIONARY_SEQUENCE_COLUMNS: &[&str] = &["venue_seq", "prev_venue_seq"];

/// Dictionary page limit of [`DICTIONARY_SEQUENCE_COLUMNS`], bytes: 8,192 distinct ids a
/// column chunk (the capture's 65,536-row groups hold 500–5,447), beyond which the
/// chunk's remaining pages fall back to deltas, so ids that never repeat cost at most
/// one small dictionary per row group.
pub const SEQUENCE_DICTIONARY_BYTES: usize = 64 * 1024;

/// Columns written without compression: constant within a file (`venue`, `symbol`, and
/// the scales of an instrument that never changes its tick) or null on every row but a
/// gap's. Dictionary and run-length encoding already shrink them to a few bytes a row
/// group, and zstd's frame makes them larger (on the Binance USD-M capture, 8 row groups:
/// `venue` 1,224 bytes with zstd, 891 without; `price_scale` 1,352 against 1,019). Left
/// uncompressed, a reader also skips creating zstd contexts for those of them it reads
/// (the scales of a row group where they vary): the parquet crate makes a compressor and
/// a decompressor per column chunk, and doing so for the 13 columns the backtest read was
/// 2.2 % of its CPU (perf, on a VM where zstd's `cpuid` traps to the hypervisor).
pub const UNCOMPRESSED_COLUMNS: &[&str] = &[
    "venue",
    "symbol",
    "price_scale",
    "size_scale",
    "gap_reason",
    "gap_missing",
    "gap_publisher",
];

/// The Arrow schema of dataset files (built once; callers share it).
pub fn schema() -> SchemaRef {
    static SCHEMA: std::sync::OnceLock<SchemaRef> = std::sync::OnceLock::new();
    SCHEMA.get_or_init(build_schema).clone()
}

fn build_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("ts_recv", ts_type(), false),
        Field::new("ts_event", ts_type(), false),
        Field::new("venue", DataType::Utf8, false),
        Field::new("symbol", DataType::Utf8, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("venue_seq", DataType::UInt64, true),
        Field::new("prev_venue_seq", DataType::UInt64, true),
        Field::new("pub_seq", DataType::UInt64, false),
        Field::new("side", DataType::Utf8, true),
        Field::new("price", DataType::Int64, true),
        Field::new("price_scale", DataType::UInt8, true),
        Field::new("size", DataType::Int64, true),
        Field::new("size_scale", DataType::UInt8, true),
        Field::new("flags", DataType::UInt8, true),
        Field::new("trade_id", DataType::Utf8, true),
        Field::new("gap_reason", DataType::Utf8, true),
        Field::new("gap_missing", DataType::UInt64, true),
        Field::new("gap_publisher", DataType::Utf8, true),
    ]))
}

/// Column-wise buffer of events for one file, turned into a [`RecordBatch`] on flush.
#[derive(Default)]
pub struct EventColumns {
    ts_recv: Vec<i64>,
    ts_event: Vec<i64>,
    /// Distinct venue and symbol names of the buffered rows, which hold indexes into it:
    /// a file holds one partition, so this stays tiny and rows cost no reference counting.
    names: Vec<Arc<str>>,
    venue: Vec<u32>,
    symbol: Vec<u32>,
    kind: Vec<&'static str>,
    venue_seq: Vec<Option<u64>>,
    prev_venue_seq: Vec<Option<u64>>,
    pub_seq: Vec<u64>,
    side: Vec<Option<&'static str>>,
    price: Vec<Option<i64>>,
    price_scale: Vec<Option<u8>>,
    size: Vec<Option<i64>>,
    size_scale: Vec<Option<u8>>,
    flags: Vec<Option<u8>>,
    trade_id: Vec<Option<String>>,
    gap_reason: Vec<Option<&'static str>>,
    gap_missing: Vec<Option<u64>>,
    gap_publisher: Vec<Option<String>>,
    /// Counts of price scales seen, to record the dominant one in file metadata.
    price_scales: [u64; 19],
    size_scales: [u64; 19],
}

impl EventColumns {
    /// Rows buffered.
    pub fn len(&self) -> usize {
        self.ts_recv.len()
    }

    /// True when nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.ts_recv.is_empty()
    }

    /// Smallest and largest `ts_recv` buffered.
    pub fn ts_range(&self) -> Option<(i64, i64)> {
        let min = *self.ts_recv.iter().min()?;
        let max = *self.ts_recv.iter().max()?;
        Some((min, max))
    }

    /// Appends one stored event; heartbeats and end-of-stream are not stored and are ignored.
    pub fn push(&mut self, ev: &Event) {
        let kind = ev.kind();
        if !kind.is_stored() {
            return;
        }
        self.ts_recv.push(ev.ts_recv);
        self.ts_event.push(ev.ts_event);
        let venue = self.name_index(&ev.venue);
        let symbol = self.name_index(&ev.symbol);
        self.venue.push(venue);
        self.symbol.push(symbol);
        self.kind.push(kind.name());
        self.venue_seq.push(ev.venue_seq);
        self.prev_venue_seq.push(ev.prev_venue_seq);
        self.pub_seq.push(ev.pub_seq);
        let (side, price, size, flags, trade_id, gap) = match &ev.body {
            Body::Book(b) => (
                Some(b.side),
                Some(b.price),
                Some(b.size),
                Some(b.flags.0),
                None,
                None,
            ),
            Body::Trade(t) => (
                Some(t.aggressor),
                Some(t.price),
                Some(t.size),
                None,
                Some(t.trade_id.clone()),
                None,
            ),
            Body::Gap(g) => (None, None, None, None, None, Some(g)),
            Body::Heartbeat(_) | Body::EndOfStream(_) => unreachable!("filtered by is_stored"),
        };
        self.side.push(side.map(Side::code));
        self.price.push(price.map(|p| p.mantissa));
        self.price_scale.push(price.map(|p| p.scale));
        self.size.push(size.map(|s| s.mantissa));
        self.size_scale.push(size.map(|s| s.scale));
        if let Some(p) = price {
            self.price_scales[p.scale as usize] += 1;
        }
        if let Some(s) = size {
            self.size_scales[s.scale as usize] += 1;
        }
        self.flags.push(flags);
        self.trade_id.push(trade_id);
        self.gap_reason.push(gap.map(|g| g.reason.name()));
        self.gap_missing.push(gap.and_then(|g| g.missing));
        self.gap_publisher.push(gap.map(|g| g.publisher.clone()));
    }

    fn name_index(&mut self, name: &Arc<str>) -> u32 {
        let found = self
            .names
            .iter()
            .rposition(|n| Arc::ptr_eq(n, name) || n == name);
        found.unwrap_or_else(|| {
            self.names.push(name.clone());
            self.names.len() - 1
        }) as u32
    }

    /// Dominant price and size scales, for file metadata.
    pub fn dominant_scales(&self) -> (u8, u8) {
        let argmax = |counts: &[u64; 19]| {
            counts
                .iter()
                .enumerate()
                .max_by_key(|(_, c)| **c)
                .map(|(i, _)| i as u8)
                .unwrap_or(0)
        };
        (argmax(&self.price_scales), argmax(&self.size_scales))
    }

    /// Empties the buffer but keeps every column's memory (and the scale counts, which
    /// cover the whole file): the next row group fills the same buffers instead of
    /// growing new ones, so a recorder's memory does not rise and fall with each group.
    fn clear(&mut self) {
        let EventColumns {
            ts_recv,
            ts_event,
            names,
            venue,
            symbol,
            kind,
            venue_seq,
            prev_venue_seq,
            pub_seq,
            side,
            price,
            price_scale,
            size,
            size_scale,
            flags,
            trade_id,
            gap_reason,
            gap_missing,
            gap_publisher,
            price_scales: _,
            size_scales: _,
        } = self;
        ts_recv.clear();
        ts_event.clear();
        names.clear();
        venue.clear();
        symbol.clear();
        kind.clear();
        venue_seq.clear();
        prev_venue_seq.clear();
        pub_seq.clear();
        side.clear();
        price.clear();
        price_scale.clear();
        size.clear();
        size_scale.clear();
        flags.clear();
        trade_id.clear();
        gap_reason.clear();
        gap_missing.clear();
        gap_publisher.clear();
    }

    /// Sorts buffered rows by `ts_recv` (stable: arrival order breaks ties) and drains
    /// them into a record batch.
    pub fn take_sorted_batch(&mut self) -> Result<RecordBatch> {
        let n = self.len();
        let mut order: Vec<usize> = (0..n).collect();
        if !self.ts_recv.windows(2).all(|w| w[0] <= w[1]) {
            order.sort_by_key(|&i| self.ts_recv[i]);
        }
        let ts_recv: Vec<i64> = pick(&order, &self.ts_recv);
        let ts_event: Vec<i64> = pick(&order, &self.ts_event);
        let columns: Vec<ArrayRef> = vec![
            Arc::new(TimestampNanosecondArray::from(ts_recv).with_timezone("UTC")),
            Arc::new(TimestampNanosecondArray::from(ts_event).with_timezone("UTC")),
            Arc::new(StringArray::from_iter_values(
                order.iter().map(|&i| &*self.names[self.venue[i] as usize]),
            )),
            Arc::new(StringArray::from_iter_values(
                order.iter().map(|&i| &*self.names[self.symbol[i] as usize]),
            )),
            Arc::new(StringArray::from_iter_values(
                order.iter().map(|&i| self.kind[i]),
            )),
            Arc::new(UInt64Array::from(pick(&order, &self.venue_seq))),
            Arc::new(UInt64Array::from(pick(&order, &self.prev_venue_seq))),
            Arc::new(UInt64Array::from(pick(&order, &self.pub_seq))),
            Arc::new(StringArray::from(pick(&order, &self.side))),
            Arc::new(Int64Array::from(pick(&order, &self.price))),
            Arc::new(UInt8Array::from(pick(&order, &self.price_scale))),
            Arc::new(Int64Array::from(pick(&order, &self.size))),
            Arc::new(UInt8Array::from(pick(&order, &self.size_scale))),
            Arc::new(UInt8Array::from(pick(&order, &self.flags))),
            Arc::new(StringArray::from(
                order
                    .iter()
                    .map(|&i| self.trade_id[i].as_deref())
                    .collect::<Vec<_>>(),
            )),
            Arc::new(StringArray::from(pick(&order, &self.gap_reason))),
            Arc::new(UInt64Array::from(pick(&order, &self.gap_missing))),
            Arc::new(StringArray::from(
                order
                    .iter()
                    .map(|&i| self.gap_publisher[i].as_deref())
                    .collect::<Vec<_>>(),
            )),
        ];
        let batch = RecordBatch::try_new(schema(), columns).context("building record batch")?;
        self.clear();
        Ok(batch)
    }
}

fn pick<T: Copy>(order: &[usize], v: &[T]) -> Vec<T> {
    order.iter().map(|&i| v[i]).collect()
}

/// Venue and symbol names while reading rows: a file holds one instrument, so the last
/// name is compared (a few bytes) before the interner is asked (a hash and a probe), and
/// the name rules of [`Event::validate`] run once per instrument, not per row.
#[derive(Debug, Default)]
pub struct RowNames {
    interner: Interner,
    venue: Option<Arc<str>>,
    symbol: Option<Arc<str>>,
    checked: crate::event::NamesChecked,
}

impl RowNames {
    /// The shared copy of venue `name`.
    pub fn venue(&mut self, name: &str) -> Arc<str> {
        Self::shared(&mut self.interner, &mut self.venue, name)
    }

    /// The shared copy of symbol `name`.
    pub fn symbol(&mut self, name: &str) -> Arc<str> {
        Self::shared(&mut self.interner, &mut self.symbol, name)
    }

    /// An event to decode rows over: the last venue and symbol (no allocation once a
    /// row was read), a gap body that any row replaces.
    pub fn blank_event(&mut self) -> Event {
        let mut name = |last: &Option<Arc<str>>| match last {
            Some(n) => n.clone(),
            None => self.interner.intern(""),
        };
        let (venue, symbol) = (name(&self.venue), name(&self.symbol));
        Event::blank_named(venue, symbol)
    }

    fn shared(interner: &mut Interner, last: &mut Option<Arc<str>>, name: &str) -> Arc<str> {
        match last {
            Some(l) if **l == *name => l.clone(),
            _ => {
                let s = interner.intern(name);
                *last = Some(s.clone());
                s
            }
        }
    }
}

/// Typed columns of one dataset record batch, resolved once per batch (by name, so column
/// order does not matter) and then decoded row by row. Arrow arrays are reference-counted,
/// so holding them is cheap.
pub struct BatchView {
    ts_recv: Col<TimestampNanosecondType>,
    ts_event: Col<TimestampNanosecondType>,
    venue: NameColumn,
    symbol: NameColumn,
    kind: TextColumn,
    /// `kind` and `side` of each row, decoded once per batch.
    kinds: Vec<Option<Kind>>,
    sides: Vec<Option<Side>>,
    venue_seq: Col<UInt64Type>,
    prev_venue_seq: Col<UInt64Type>,
    pub_seq: Col<UInt64Type>,
    side: TextColumn,
    price: Col<Int64Type>,
    price_scale: ScaleColumn,
    size: Col<Int64Type>,
    size_scale: ScaleColumn,
    flags: Col<UInt8Type>,
    trade_id: StringArray,
    /// The gap columns; `None` when the reader skipped them (all null in the row group:
    /// no gap rows), read as nulls.
    gap_reason: Option<StringArray>,
    gap_missing: Option<UInt64Array>,
    gap_publisher: Option<StringArray>,
    /// True when [`BatchView::valid_rows_into`] may decode rows of this batch
    /// ([`BatchView::fast_path_applies`]).
    fast: bool,
}

/// A primitive column, read row by row: the values as a slice (one bounds check a row),
/// and its null bitmap only when the batch holds a null (the reader hands bitmaps of
/// columns without nulls too: skipping them saves a bit test per row).
struct Col<A: ArrowPrimitiveType> {
    array: PrimitiveArray<A>,
    has_nulls: bool,
}

impl<A: ArrowPrimitiveType> Col<A> {
    fn new(array: PrimitiveArray<A>) -> Col<A> {
        let has_nulls = array.null_count() > 0;
        Col { array, has_nulls }
    }

    /// Row `i`, `None` when null.
    #[inline]
    fn get(&self, i: usize) -> Option<A::Native> {
        if self.has_nulls && self.array.is_null(i) {
            return None;
        }
        Some(self.array.values()[i])
    }

    /// Row `i`'s value slot (whatever a null row holds, as Arrow's `value`).
    #[inline]
    fn value(&self, i: usize) -> A::Native {
        self.array.values()[i]
    }
}

/// A price or size scale (decimal digits after the point) of each row: read from the
/// batch, or one value for all rows (the reader skips a column whose statistics show it
/// constant).
enum ScaleColumn {
    Rows(Col<UInt8Type>),
    Constant(u8),
}

impl ScaleColumn {
    fn new(batch: &RecordBatch, name: &str, constant: Option<u8>) -> Result<ScaleColumn> {
        Ok(match constant {
            Some(c) => ScaleColumn::Constant(c),
            None => ScaleColumn::Rows(Col::new(column(batch, name)?)),
        })
    }

    /// Row `i`, `None` when null.
    #[inline]
    fn get(&self, i: usize) -> Option<u8> {
        match self {
            ScaleColumn::Rows(c) => c.get(i),
            ScaleColumn::Constant(c) => Some(*c),
        }
    }

    fn has_nulls(&self) -> bool {
        matches!(self, ScaleColumn::Rows(c) if c.has_nulls)
    }

    /// Rows `r` (whatever a null row holds, as Arrow's `value`).
    fn rows(&self, r: std::ops::Range<usize>) -> ScaleRows<'_> {
        match self {
            ScaleColumn::Rows(c) => ScaleRows::Slice(&c.array.values()[r]),
            ScaleColumn::Constant(c) => ScaleRows::Constant(*c),
        }
    }
}

/// Rows of a [`ScaleColumn`], indexed from the first of them.
enum ScaleRows<'a> {
    Slice(&'a [u8]),
    Constant(u8),
}

impl ScaleRows<'_> {
    #[inline(always)]
    fn at(&self, j: usize) -> u8 {
        match self {
            ScaleRows::Slice(s) => s[j],
            ScaleRows::Constant(c) => *c,
        }
    }
}

/// Values every row of a row group holds, which its statistics prove: the reader leaves
/// these columns out of the row group it reads, and [`BatchView`] answers with the value.
#[derive(Clone, Debug, Default)]
pub struct Constants {
    /// The venue, when constant.
    pub venue: Option<Arc<str>>,
    /// The symbol, when constant.
    pub symbol: Option<Arc<str>>,
    /// The price scale (decimal digits after the point), when constant.
    pub price_scale: Option<u8>,
    /// The size scale (decimal digits after the point), when constant.
    pub size_scale: Option<u8>,
}

/// A string column as read: plain, or as a dictionary (the reader asks for `kind` and
/// `side` that way, so decoding a row costs a key, not a copy of its text).
enum TextColumn {
    Plain(StringArray),
    Dictionary {
        keys: Int32Array,
        values: StringArray,
    },
}

impl TextColumn {
    fn new(batch: &RecordBatch, name: &str) -> Result<TextColumn> {
        let array = batch
            .column_by_name(name)
            .with_context(|| format!("column {name:?} missing: not a ticktape dataset file?"))?;
        if let Some(plain) = array.as_any().downcast_ref::<StringArray>() {
            return Ok(TextColumn::Plain(plain.clone()));
        }
        let dictionary = array
            .as_any()
            .downcast_ref::<DictionaryArray<Int32Type>>()
            .with_context(|| format!("column {name:?} has an unexpected type"))?;
        let values = dictionary
            .values()
            .as_any()
            .downcast_ref::<StringArray>()
            .with_context(|| format!("column {name:?} has an unexpected type"))?;
        Ok(TextColumn::Dictionary {
            keys: dictionary.keys().clone(),
            values: values.clone(),
        })
    }

    /// Every row's text parsed by `parse` (a null is parsed as empty): for a
    /// dictionary, each distinct value once.
    fn decode<T: Copy>(&self, rows: usize, parse: impl Fn(&str) -> Option<T>) -> Vec<Option<T>> {
        match self {
            TextColumn::Plain(_) => (0..rows).map(|i| parse(self.value(i))).collect(),
            TextColumn::Dictionary { keys, values } => {
                let table: Vec<Option<T>> =
                    (0..values.len()).map(|k| parse(values.value(k))).collect();
                let none = parse("");
                let key = |k: i32| {
                    usize::try_from(k)
                        .ok()
                        .and_then(|k| table.get(k).copied())
                        .unwrap_or(none)
                };
                if keys.null_count() == 0 && keys.len() == rows {
                    // The usual case: a key per row, no nulls.
                    return keys.values().iter().map(|&k| key(k)).collect();
                }
                (0..rows)
                    .map(|i| {
                        if keys.is_null(i) {
                            return none;
                        }
                        usize::try_from(keys.value(i))
                            .ok()
                            .and_then(|k| table.get(k).copied())
                            .unwrap_or(none)
                    })
                    .collect()
            }
        }
    }

    /// Row `i`'s text (empty when null).
    fn value(&self, i: usize) -> &str {
        match self {
            TextColumn::Plain(rows) => rows.value(i),
            TextColumn::Dictionary { keys, values } => {
                if keys.is_null(i) {
                    return "";
                }
                usize::try_from(keys.value(i))
                    .ok()
                    .filter(|&k| k < values.len())
                    .map_or("", |k| values.value(k))
            }
        }
    }
}

/// The venue or symbol of each row: read from the batch, or one name for all rows (the
/// reader skips a column whose statistics show it constant).
enum NameColumn {
    Rows(StringArray),
    Constant(Arc<str>),
}

impl NameColumn {
    fn new(batch: &RecordBatch, name: &str, constant: Option<Arc<str>>) -> Result<NameColumn> {
        Ok(match constant {
            Some(c) => NameColumn::Constant(c),
            None => NameColumn::Rows(column(batch, name)?),
        })
    }

    /// Sets `out` to row `i`'s name, replacing it only when it differs.
    fn read_into(&self, i: usize, out: &mut Arc<str>, shared: impl FnOnce(&str) -> Arc<str>) {
        match self {
            NameColumn::Constant(c) => {
                if !Arc::ptr_eq(out, c) {
                    *out = c.clone();
                }
            }
            NameColumn::Rows(rows) => {
                let name = rows.value(i);
                if **out != *name {
                    *out = shared(name);
                }
            }
        }
    }
}

/// Trade-id `String`s kept for reuse while rows are decoded over events that are
/// reused: a row that replaces a trade gives its id's string here, a trade decoded over an
/// event that held none takes one, and a string is allocated only when none is kept.
///
/// One pool serves a whole batch of events, so a batch allocates as many strings as it
/// ever holds trades at once (a few dozen in 1,024 events of a liquid book), not one per
/// slot that ever held a trade: with a string per slot, 16,384 slots of read-ahead kept
/// allocating through a 466,836-event capture (12,069 allocations, 0.026 per event).
#[derive(Debug, Default)]
pub struct SpareIds(Vec<String>);

impl SpareIds {
    /// A pool for `events` reused events: it holds at most one string per event, so
    /// keeping one never grows it.
    pub fn for_events(events: usize) -> SpareIds {
        SpareIds(Vec::with_capacity(events))
    }

    /// A kept string (empty), or a new one.
    #[inline(always)]
    fn take(&mut self) -> String {
        self.0.pop().unwrap_or_default()
    }

    /// Keeps `id`'s allocation for the next trade (nothing to keep for an empty one).
    #[inline(always)]
    fn keep(&mut self, mut id: String) {
        if id.capacity() > 0 {
            id.clear();
            self.0.push(id);
        }
    }

    /// Strings kept.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when no string is kept.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Moves the trade id out of `body` (a trade) into `spares`.
#[inline(always)]
fn keep_trade_id(body: &mut Body, spares: &mut SpareIds) {
    if let Body::Trade(t) = body {
        spares.keep(std::mem::take(&mut t.trade_id));
    }
}

/// Sets `body` to a book delta; a trade's id `String` it replaces goes to `spares`.
#[inline(always)]
fn put_book(body: &mut Body, spares: &mut SpareIds, delta: BookDelta) {
    match body {
        // The usual case, a delta over a delta: nothing to drop.
        Body::Book(b) => *b = delta,
        other => {
            keep_trade_id(other, spares);
            *other = Body::Book(delta);
        }
    }
}

/// Sets `body` to a trade, its id copied into the `String` of the trade it replaces, or
/// else one of `spares`.
#[inline(always)]
fn put_trade(
    body: &mut Body,
    spares: &mut SpareIds,
    aggressor: Side,
    price: Fixed,
    size: Fixed,
    id: &str,
) {
    let mut trade_id = match body {
        Body::Trade(t) => std::mem::take(&mut t.trade_id),
        _ => spares.take(),
    };
    trade_id.clear();
    trade_id.push_str(id);
    *body = Body::Trade(Trade {
        aggressor,
        price,
        size,
        trade_id,
    });
}

fn column<T: Clone + 'static>(batch: &RecordBatch, name: &str) -> Result<T> {
    batch
        .column_by_name(name)
        .with_context(|| format!("column {name:?} missing: not a ticktape dataset file?"))?
        .as_any()
        .downcast_ref::<T>()
        .cloned()
        .with_context(|| format!("column {name:?} has an unexpected type"))
}

/// A column the reader may skip (see [`SKIPPABLE_WHEN_NULL`]): `None` when absent.
fn optional_column<T: Clone + 'static>(batch: &RecordBatch, name: &str) -> Result<Option<T>> {
    match batch.column_by_name(name) {
        None => Ok(None),
        Some(_) => column(batch, name).map(Some),
    }
}

/// Columns the reader leaves out of a row group whose statistics show them all null (no
/// gap rows in it): decoding a column of nulls still costs a pass over every row.
pub const SKIPPABLE_WHEN_NULL: &[&str] = &["gap_reason", "gap_missing", "gap_publisher"];

fn opt<T: Copy>(v: bool, x: T) -> Option<T> {
    v.then_some(x)
}

impl BatchView {
    /// Checks the batch's columns and borrows them.
    pub fn new(batch: &RecordBatch) -> Result<BatchView> {
        BatchView::with_constants(batch, &Constants::default())
    }

    /// [`BatchView::new`] for a batch read without the columns `constants` gives a value
    /// for (venue, symbol, scales), whose every row has that value.
    pub fn with_constants(batch: &RecordBatch, constants: &Constants) -> Result<BatchView> {
        let kind = TextColumn::new(batch, "kind")?;
        let side = TextColumn::new(batch, "side")?;
        let rows = batch.num_rows();
        let mut view = BatchView {
            kinds: kind.decode(rows, Kind::from_name),
            sides: side.decode(rows, Side::from_code),
            kind,
            side,
            ts_recv: Col::new(column::<TimestampNanosecondArray>(batch, "ts_recv")?),
            ts_event: Col::new(column::<TimestampNanosecondArray>(batch, "ts_event")?),
            venue: NameColumn::new(batch, "venue", constants.venue.clone())?,
            symbol: NameColumn::new(batch, "symbol", constants.symbol.clone())?,

            venue_seq: Col::new(column::<UInt64Array>(batch, "venue_seq")?),
            prev_venue_seq: Col::new(column::<UInt64Array>(batch, "prev_venue_seq")?),
            pub_seq: Col::new(column::<UInt64Array>(batch, "pub_seq")?),

            price: Col::new(column::<Int64Array>(batch, "price")?),
            price_scale: ScaleColumn::new(batch, "price_scale", constants.price_scale)?,
            size: Col::new(column::<Int64Array>(batch, "size")?),
            size_scale: ScaleColumn::new(batch, "size_scale", constants.size_scale)?,
            flags: Col::new(column::<UInt8Array>(batch, "flags")?),
            trade_id: column(batch, "trade_id")?,
            gap_reason: optional_column(batch, "gap_reason")?,
            gap_missing: optional_column(batch, "gap_missing")?,
            gap_publisher: optional_column(batch, "gap_publisher")?,
            fast: false,
        };
        view.fast = view.fast_path_applies();
        Ok(view)
    }

    /// True when [`BatchView::valid_rows_into`] may decode this batch: one instrument
    /// for the whole batch (constant venue and symbol columns) whose names pass
    /// [`Event::validate`]'s rules, prices and sizes never null, every trade id within
    /// its bound. The rules that depend on each row (times, side, price, size) are
    /// checked row by row as it decodes.
    fn fast_path_applies(&self) -> bool {
        use crate::event::validate::{MAX_TRADE_ID_BYTES, market_names_valid};
        let (NameColumn::Constant(venue), NameColumn::Constant(symbol)) =
            (&self.venue, &self.symbol)
        else {
            return false;
        };
        let nulls = [
            self.price.has_nulls,
            self.price_scale.has_nulls(),
            self.size.has_nulls,
            self.size_scale.has_nulls(),
        ];
        // Longest trade id of the column (book rows hold none): one bound for every row.
        let offsets = self.trade_id.value_offsets();
        let longest = offsets.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
        !nulls.contains(&true)
            && longest as usize <= MAX_TRADE_ID_BYTES
            && market_names_valid(venue, symbol)
    }

    /// `ts_recv` of row `i`.
    pub fn ts_recv(&self, i: usize) -> i64 {
        self.ts_recv.value(i)
    }

    /// Kind of row `i`.
    pub fn kind(&self, i: usize) -> Option<Kind> {
        self.kinds[i]
    }

    /// Decodes row `i` over `out`, reusing its allocations: venue and symbol are only
    /// replaced when they differ, a trade id is copied into the `String` of the previous
    /// trade, or else one of `spares` (where a trade's id goes when another kind replaces
    /// it). The event [`BatchView::event`]
    /// returns (validated the same way), without allocating per row.
    pub fn event_into(
        &self,
        i: usize,
        names: &mut RowNames,
        out: &mut Event,
        spares: &mut SpareIds,
    ) -> Result<()> {
        match self.kinds[i] {
            Some(Kind::Book) => {
                let delta = BookDelta {
                    side: self.side_at(i)?,
                    price: self.fixed(i, &self.price, &self.price_scale)?,
                    size: self.fixed(i, &self.size, &self.size_scale)?,
                    flags: Flags(self.flags.value(i)),
                };
                put_book(&mut out.body, spares, delta);
            }
            Some(Kind::Trade) => {
                let (aggressor, price, size) = (
                    self.side_at(i)?,
                    self.fixed(i, &self.price, &self.price_scale)?,
                    self.fixed(i, &self.size, &self.size_scale)?,
                );
                let id = self.trade_id.value(i);
                put_trade(&mut out.body, spares, aggressor, price, size, id);
            }
            Some(Kind::Gap) => {
                let gap = Body::Gap(Gap {
                    reason: (self.gap_reason.as_ref())
                        .and_then(|c| GapReason::from_name(c.value(i)))
                        .with_context(|| format!("row {i}: unknown gap reason"))?,
                    missing: (self.gap_missing.as_ref())
                        .and_then(|c| opt(c.is_valid(i), c.value(i))),
                    publisher: (self.gap_publisher.as_ref())
                        .map_or(String::new(), |c| c.value(i).to_string()),
                });
                keep_trade_id(&mut out.body, spares);
                out.body = gap;
            }
            _ => bail!(
                "row {i}: kind {:?} is not stored in datasets",
                self.kind.value(i)
            ),
        }
        // Consecutive rows nearly always share venue and symbol (a file holds one of
        // each): comparing a few bytes is cheaper than hashing them.
        self.venue.read_into(i, &mut out.venue, |v| names.venue(v));
        self.symbol
            .read_into(i, &mut out.symbol, |s| names.symbol(s));
        out.ts_event = self.ts_event.value(i);
        out.ts_recv = self.ts_recv.value(i);
        out.venue_seq = self.venue_seq.get(i);
        out.prev_venue_seq = self.prev_venue_seq.get(i);
        out.pub_seq = self.pub_seq.value(i);
        out.validate_with(&mut names.checked)
            .with_context(|| format!("row {i} holds an event ticktape refuses"))
    }

    /// Decodes rows from `start` over `out` (`spares` as in [`BatchView::event_into`]),
    /// at most `out.len()`, stopping before the first row that is not a
    /// book delta or a trade [`Event::validate`] accepts; returns how many it decoded.
    /// The events [`BatchView::event_into`] gives, for the rows it would accept, in one
    /// loop without a result per row: the rules are checked on the columns before a row
    /// is decoded (the per-batch ones by [`BatchView::fast_path_applies`], without which
    /// it decodes nothing). The row it stops at, and the rows of any other batch, go
    /// through [`BatchView::event_into`], which refuses a bad row with its reason.
    pub fn valid_rows_into(&self, start: usize, out: &mut [Event], spares: &mut SpareIds) -> usize {
        use crate::event::validate::{MAX_TS, MIN_TS};
        if !self.fast {
            return 0;
        }
        let n = out.len();
        // Sliced once, so the loop indexes without bounds checks.
        let r = start..start + n;
        let (kinds, sides) = (&self.kinds[r.clone()], &self.sides[r.clone()]);
        let prices = &self.price.array.values()[r.clone()];
        let price_scales = self.price_scale.rows(r.clone());
        let sizes = &self.size.array.values()[r.clone()];
        let size_scales = self.size_scale.rows(r.clone());
        let flags = &self.flags.array.values()[r.clone()];
        let ts_event = &self.ts_event.array.values()[r.clone()];
        let ts_recv = &self.ts_recv.array.values()[r.clone()];
        let venue_seqs = &self.venue_seq.array.values()[r.clone()];
        let prev_venue_seqs = &self.prev_venue_seq.array.values()[r.clone()];
        let pub_seq = &self.pub_seq.array.values()[r];
        // A batch on the fast path has one venue and one symbol.
        let (NameColumn::Constant(venue), NameColumn::Constant(symbol)) =
            (&self.venue, &self.symbol)
        else {
            return 0;
        };
        for (j, event) in out.iter_mut().enumerate() {
            // The rules of `Event::validate` that depend on the row.
            let (kind, side, size) = (kinds[j], sides[j], sizes[j]);
            let book = kind == Some(Kind::Book)
                && matches!(side, Some(Side::Bid | Side::Ask))
                && size >= 0;
            let trade = kind == Some(Kind::Trade) && side.is_some() && size > 0;
            let timely =
                (MIN_TS..MAX_TS).contains(&ts_event[j]) & (MIN_TS..MAX_TS).contains(&ts_recv[j]);
            if !((book | trade) & timely & (prices[j] > 0)) {
                return j;
            }
            let side = side.unwrap_or(Side::None);
            let price = Fixed::new(prices[j], price_scales.at(j));
            let size = Fixed::new(size, size_scales.at(j));
            if trade {
                let id = self.trade_id.value(start + j);
                put_trade(&mut event.body, spares, side, price, size, id);
            } else {
                let flags = Flags(flags[j]);
                let delta = BookDelta {
                    side,
                    price,
                    size,
                    flags,
                };
                put_book(&mut event.body, spares, delta);
            }
            if !Arc::ptr_eq(&event.venue, venue) {
                event.venue = venue.clone();
            }
            if !Arc::ptr_eq(&event.symbol, symbol) {
                event.symbol = symbol.clone();
            }
            event.ts_event = ts_event[j];
            event.ts_recv = ts_recv[j];
            // Sliced above: no bounds check, and no null test in a column without nulls.
            event.venue_seq = if self.venue_seq.has_nulls {
                self.venue_seq.get(start + j)
            } else {
                Some(venue_seqs[j])
            };
            event.prev_venue_seq = if self.prev_venue_seq.has_nulls {
                self.prev_venue_seq.get(start + j)
            } else {
                Some(prev_venue_seqs[j])
            };
            event.pub_seq = pub_seq[j];
        }
        n
    }

    /// Row `i`'s side (book side or trade aggressor).
    #[inline(always)]
    fn side_at(&self, i: usize) -> Result<Side> {
        match self.sides[i] {
            Some(side) => Ok(side),
            None => Err(self.bad_side(i)),
        }
    }

    #[cold]
    fn bad_side(&self, i: usize) -> anyhow::Error {
        anyhow::anyhow!("row {i}: bad side {:?}", self.side.value(i))
    }

    /// Row `i`'s price or size from its mantissa and scale columns.
    #[inline(always)]
    fn fixed(&self, i: usize, m: &Col<Int64Type>, s: &ScaleColumn) -> Result<Fixed> {
        match (m.get(i), s.get(i)) {
            (Some(m), Some(s)) => Ok(Fixed::new(m, s)),
            _ => Err(self.without_price(i)),
        }
    }

    #[cold]
    fn without_price(&self, i: usize) -> anyhow::Error {
        anyhow::anyhow!("{} row {i} without price/size", self.kind.value(i))
    }

    /// Decodes row `i` into an event, refusing one that fails [`Event::validate`] (a
    /// file written by another tool, or damaged): [`BatchView::event_into`] over a blank
    /// event.
    pub fn event(&self, i: usize, names: &mut RowNames) -> Result<Event> {
        let mut event = names.blank_event();
        self.event_into(i, names, &mut event, &mut SpareIds::default())?;
        Ok(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(venue: &str, price: Fixed, ts_recv: i64) -> Event {
        let mut e = crate::wire::event(
            venue,
            "S",
            1_704_164_645_000_000_000,
            1,
            Body::Book(BookDelta {
                side: Side::Bid,
                price,
                size: Fixed::new(1, 0),
                flags: Flags::LAST,
            }),
        );
        e.ts_recv = ts_recv;
        e
    }

    #[test]
    fn rows_that_fail_validation_are_refused_when_read_back() {
        let t = 1_704_164_645_000_000_000;
        let mut cols = EventColumns::default();
        // Files written by another tool (or damaged) may hold what ticktape never writes.
        for e in [
            row("v", Fixed::new(15, 1), t),
            row("v", Fixed::ZERO, t + 1),
            row("_journal", Fixed::new(1, 0), t + 2),
            row("v", Fixed::new(1, 0), i64::MAX),
        ] {
            cols.push(&e);
        }
        let batch = cols.take_sorted_batch().unwrap();
        let view = BatchView::new(&batch).unwrap();
        let mut names = RowNames::default();
        assert_eq!(
            view.event(0, &mut names).unwrap(),
            row("v", Fixed::new(15, 1), t)
        );
        for (i, reason) in [
            (1, "book price 0 must be above zero"),
            (2, "venue \"_journal\""),
            (3, "ts_recv 9223372036854775807 is outside"),
        ] {
            let err = format!("{:#}", view.event(i, &mut names).unwrap_err());
            assert!(
                err.contains(&format!("row {i}")) && err.contains(reason),
                "{err}"
            );
        }
    }
}
