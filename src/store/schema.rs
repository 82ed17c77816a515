//! The Parquet/Arrow schema of a ticktape dataset (version [`SCHEMA_VERSION`]) and the
//! conversion between [`Event`]s and Arrow record batches.
//!
//! One wide table holds every stored kind (`book`, `trade`, `gap`), so one glob reads a
//! whole dataset and replay merges a single stream. Columns that do not apply to a kind
//! are null. Prices and sizes are exact: integer mantissa plus decimal scale, value =
//! `price / 10^price_scale`. See `docs/STORAGE.md` for the column reference.

use std::sync::Arc;

use anyhow::{Context, Result};
use arrow_array::{
    ArrayRef, Int64Array, RecordBatch, StringArray, TimestampNanosecondArray, UInt8Array,
    UInt64Array,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::event::{Body, Event, Side};

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
    trade_id: Vec<Option<crate::event::TradeId>>,
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
