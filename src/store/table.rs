//! A Parquet file of flat columns, written a row group at a time into buffers it keeps
//! for the whole file: once they have grown to a row group's size, writing allocates
//! nothing. The run files' writer (`crate::exchange::outputs`); the mirror of
//! [`super::pages`] and [`super::columns`], which read without allocating.
//!
//! Layout, one choice each, all read by every Parquet reader:
//! - each column chunk is one v1 data page: values PLAIN, a nullable column's
//!   definition levels RLE (bit width 1, runs only), zstd-compressed with one context
//!   for the whole file, with the page's CRC-32;
//! - integer and float columns carry min/max statistics and their null count; text
//!   columns none (nothing prunes run files by name, and a compare per value costs);
//! - the footer (schema, row groups, the Arrow schema under `ARROW:schema` so Arrow
//!   readers see the same types and time zone, the caller's key-values) is built by the
//!   parquet crate when the file is finished: it grows with the file, once.
//!
//! The parquet crate's `ArrowWriter` takes Arrow arrays (a builder per column per batch)
//! and allocates encoders, page buffers and a zstd context per column chunk: once the
//! backtest's own threads allocated nothing, it made all of a run's steady-state
//! allocations (0.0013–0.0028 per event, `benches/backtest.rs`, session 14).

use std::fmt::Display;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Arc;

use arrow_schema::{DataType, SchemaRef, TimeUnit};
use parquet::arrow::{ArrowSchemaConverter, encode_arrow_schema};
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::{
    ColumnChunkMetaData, FileMetaData, KeyValue, ParquetMetaData, ParquetMetaDataWriter,
    RowGroupMetaData,
};
use parquet::file::statistics::Statistics;

use super::decode::put_uleb128;
use super::pages::write_v1_header;

/// zstd level of the pages (the parquet crate's default for ZSTD).
const ZSTD_LEVEL: i32 = 1;

/// Why a table could not be written.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    /// Writing the file failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The values given do not fit the schema, or the footer could not be encoded.
    #[error("{0}")]
    Encode(String),
}

impl From<parquet::errors::ParquetError> for TableError {
    fn from(e: parquet::errors::ParquetError) -> Self {
        TableError::Encode(e.to_string())
    }
}

/// What a column holds, as written (physical type and how its values are given).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// INT64, signed: `Int64` and `Timestamp(Nanosecond, _)` columns.
    Int,
    /// INT64 holding an unsigned 64-bit integer: `UInt64` columns.
    UInt,
    /// DOUBLE: `Float64` columns.
    Float,
    /// BYTE_ARRAY holding UTF-8: `Utf8` columns.
    Text,
}

#[derive(Clone, Copy)]
struct Column {
    kind: Kind,
    nullable: bool,
}

/// Min and max of a chunk's non-null values, for its statistics.
#[derive(Clone, Copy)]
enum Range {
    None,
    Int(i64, i64),
    UInt(u64, u64),
    Float(f64, f64),
}

/// One written column chunk (one page), as the footer describes it.
#[derive(Clone, Copy)]
struct Chunk {
    /// Where its page header starts in the file.
    offset: u64,
    /// Header and page, as stored.
    compressed: u64,
    /// Header and page before compression.
    uncompressed: u64,
    /// Values, nulls included.
    values: u32,
    nulls: u32,
    range: Range,
}

/// The buffers pages are encoded and compressed in, and the zstd context: kept by the
/// caller for every table it writes on one thread (the run writer's three files share
/// one), so a table written for the first time late in a run finds them grown already.
pub struct PageBuffers {
    zstd: zstd::bulk::Compressor<'static>,
    /// A column's encoded values and levels, the page they make (levels then values),
    /// the page compressed, its header.
    values: Vec<u8>,
    levels: Vec<u8>,
    page: Vec<u8>,
    compressed: Vec<u8>,
    header: Vec<u8>,
}

impl PageBuffers {
    /// Empty buffers and a zstd context.
    pub fn new() -> Result<PageBuffers, TableError> {
        Ok(PageBuffers {
            zstd: zstd::bulk::Compressor::new(ZSTD_LEVEL)?,
            values: Vec::new(),
            levels: Vec::new(),
            page: Vec::new(),
            compressed: Vec::new(),
            header: Vec::new(),
        })
    }
}

/// A Parquet file being written; see the module documentation.
pub struct TableWriter {
    out: BufWriter<File>,
    /// Bytes written so far (the next page's offset).
    position: u64,
    schema: SchemaRef,
    columns: Vec<Column>,
    key_value: Vec<KeyValue>,
    /// Every committed chunk, row group after row group (`columns.len()` a group).
    chunks: Vec<Chunk>,
    /// Rows of each committed row group.
    groups: Vec<u32>,
}

/// Row groups reserved for in the footer's lists at creation (they grow past it).
const GROUPS_RESERVED: usize = 256;

impl TableWriter {
    /// Creates `path` for a table of `schema`'s columns (which must be `Int64`, `UInt64`,
    /// `Timestamp(Nanosecond, _)`, `Float64` or `Utf8`, without nesting). `key_value` goes
    /// into the footer beside the Arrow schema.
    pub fn create(
        path: &Path,
        schema: SchemaRef,
        key_value: Vec<KeyValue>,
    ) -> Result<TableWriter, TableError> {
        let columns = schema
            .fields()
            .iter()
            .map(|field| {
                let kind = match field.data_type() {
                    DataType::Int64 | DataType::Timestamp(TimeUnit::Nanosecond, _) => Kind::Int,
                    DataType::UInt64 => Kind::UInt,
                    DataType::Float64 => Kind::Float,
                    DataType::Utf8 => Kind::Text,
                    other => {
                        return Err(TableError::Encode(format!(
                            "column `{}` is of type {other}, which this writer does not write",
                            field.name()
                        )));
                    }
                };
                Ok(Column {
                    kind,
                    nullable: field.is_nullable(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut out = BufWriter::new(File::create(path)?);
        out.write_all(b"PAR1")?;
        let n = columns.len();
        Ok(TableWriter {
            out,
            position: 4,
            schema,
            columns,
            key_value,
            chunks: Vec::with_capacity(GROUPS_RESERVED * n),
            groups: Vec::with_capacity(GROUPS_RESERVED),
        })
    }

    /// Starts a row group of `rows` rows, encoded in `buffers`: give each column's values
    /// in schema order, then [`Group::end`]. A group dropped before its end is left out
    /// of the file.
    pub fn group<'t>(&'t mut self, buffers: &'t mut PageBuffers, rows: usize) -> Group<'t> {
        let first_chunk = self.chunks.len();
        Group {
            table: self,
            buf: buffers,
            rows,
            next: 0,
            first_chunk,
            ended: false,
        }
    }

    /// Rows in the row groups written so far.
    pub fn rows(&self) -> u64 {
        self.groups.iter().map(|&r| u64::from(r)).sum()
    }

    /// Writes the footer and flushes; returns the rows written.
    pub fn finish(mut self) -> Result<u64, TableError> {
        let descr = Arc::new(ArrowSchemaConverter::new().convert(&self.schema)?);
        let n = self.columns.len();
        let mut row_groups = Vec::with_capacity(self.groups.len());
        for (&rows, chunks) in self.groups.iter().zip(self.chunks.chunks(n)) {
            let mut metadata = Vec::with_capacity(n);
            for ((chunk, column), descr) in chunks.iter().zip(&self.columns).zip(descr.columns()) {
                let encodings = if column.nullable {
                    vec![Encoding::PLAIN, Encoding::RLE]
                } else {
                    vec![Encoding::PLAIN]
                };
                let nulls = Some(u64::from(chunk.nulls));
                let statistics = match chunk.range {
                    Range::Int(min, max) => {
                        Some(Statistics::int64(Some(min), Some(max), None, nulls, false))
                    }
                    // Stored as the same 64 bits; the column's logical type (unsigned)
                    // tells readers how to compare them.
                    Range::UInt(min, max) => Some(Statistics::int64(
                        Some(min as i64),
                        Some(max as i64),
                        None,
                        nulls,
                        false,
                    )),
                    // -0.0 and +0.0 compare equal, so a zero bound is written with the
                    // sign that keeps it a bound (parquet-format): min -0.0, max +0.0.
                    Range::Float(min, max) => Some(Statistics::double(
                        Some(if min == 0.0 { -0.0 } else { min }),
                        Some(if max == 0.0 { 0.0 } else { max }),
                        None,
                        nulls,
                        false,
                    )),
                    // No bound (every value null or NaN): the null count alone; none
                    // for text (no statistics of text columns).
                    Range::None => match column.kind {
                        Kind::Text => None,
                        Kind::Float => Some(Statistics::double(None, None, None, nulls, false)),
                        Kind::Int | Kind::UInt => {
                            Some(Statistics::int64(None, None, None, nulls, false))
                        }
                    },
                };
                let mut builder = ColumnChunkMetaData::builder(descr.clone())
                    .set_encodings(encodings)
                    .set_compression(Compression::ZSTD(ZstdLevel::try_new(ZSTD_LEVEL)?))
                    .set_num_values(i64::from(chunk.values))
                    .set_total_compressed_size(chunk.compressed as i64)
                    .set_total_uncompressed_size(chunk.uncompressed as i64)
                    .set_data_page_offset(chunk.offset as i64);
                if let Some(statistics) = statistics {
                    builder = builder.set_statistics(statistics);
                }
                metadata.push(builder.build()?);
            }
            let group = RowGroupMetaData::builder(descr.clone())
                .set_num_rows(i64::from(rows))
                .set_total_byte_size(chunks.iter().map(|c| c.uncompressed as i64).sum())
                .set_file_offset(chunks.first().map_or(0, |c| c.offset as i64))
                .set_column_metadata(metadata)
                .build()?;
            row_groups.push(group);
        }
        let rows = self.rows();
        let mut key_value = std::mem::take(&mut self.key_value);
        key_value.push(KeyValue::new(
            "ARROW:schema".to_string(),
            encode_arrow_schema(&self.schema),
        ));
        let file = FileMetaData::new(
            1,
            i64::try_from(rows).unwrap_or(i64::MAX),
            Some(format!("ticktape version {}", env!("CARGO_PKG_VERSION"))),
            Some(key_value),
            descr,
            None,
        );
        ParquetMetaDataWriter::new(&mut self.out, &ParquetMetaData::new(file, row_groups))
            .finish()?;
        self.out.flush()?;
        Ok(rows)
    }
}

/// A row group being written; see [`TableWriter::group`].
pub struct Group<'t> {
    table: &'t mut TableWriter,
    buf: &'t mut PageBuffers,
    rows: usize,
    /// The column the next values belong to.
    next: usize,
    first_chunk: usize,
    ended: bool,
}

/// A nullable column's definition levels as RLE runs (bit width 1: one byte a value).
struct Levels<'b> {
    out: &'b mut Vec<u8>,
    value: bool,
    run: u64,
}

impl Levels<'_> {
    fn push(&mut self, defined: bool) {
        if defined != self.value && self.run > 0 {
            self.flush();
        }
        self.value = defined;
        self.run += 1;
    }

    fn flush(&mut self) {
        if self.run == 0 {
            return;
        }
        // An RLE run's header is its length shifted left once (low bit 0: not bit-packed).
        put_uleb128(self.out, self.run << 1);
        self.out.push(u8::from(self.value));
        self.run = 0;
    }
}

impl Group<'_> {
    /// A signed 64-bit or nanosecond-timestamp column.
    pub fn ints(&mut self, values: impl IntoIterator<Item = i64>) -> Result<(), TableError> {
        self.numbers(Kind::Int, values.into_iter().map(Some), |v, range| {
            *range = match *range {
                Range::Int(min, max) => Range::Int(min.min(v), max.max(v)),
                _ => Range::Int(v, v),
            };
            v.to_le_bytes()
        })
    }

    /// An unsigned 64-bit column.
    pub fn uints(&mut self, values: impl IntoIterator<Item = u64>) -> Result<(), TableError> {
        self.numbers(Kind::UInt, values.into_iter().map(Some), |v, range| {
            *range = match *range {
                Range::UInt(min, max) => Range::UInt(min.min(v), max.max(v)),
                _ => Range::UInt(v, v),
            };
            v.to_le_bytes()
        })
    }

    /// A float column; `None` is a null (refused in a column that is not nullable).
    pub fn floats(
        &mut self,
        values: impl IntoIterator<Item = Option<f64>>,
    ) -> Result<(), TableError> {
        self.numbers(Kind::Float, values.into_iter(), |v, range| {
            // NaN has no place in min/max (parquet-format).
            if !v.is_nan() {
                *range = match *range {
                    Range::Float(min, max) => Range::Float(min.min(v), max.max(v)),
                    _ => Range::Float(v, v),
                };
            }
            v.to_le_bytes()
        })
    }

    /// A text column.
    pub fn texts<'a>(
        &mut self,
        values: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), TableError> {
        let column = self.begin(Kind::Text)?;
        let table = &mut *self.buf;
        let mut levels = Levels {
            out: &mut table.levels,
            value: true,
            run: 0,
        };
        let mut count = 0usize;
        for v in values {
            let len = u32::try_from(v.len())
                .map_err(|_| TableError::Encode("a text value above 4 GiB".into()))?;
            table.values.extend_from_slice(&len.to_le_bytes());
            table.values.extend_from_slice(v.as_bytes());
            count += 1;
            if column.nullable {
                levels.push(true);
            }
        }
        levels.flush();
        self.commit(column, count, 0, Range::None)
    }

    /// A text column of each value's `Display` text, written straight into the page;
    /// `None` is a null (refused in a column that is not nullable).
    pub fn displayed<T: Display>(
        &mut self,
        values: impl IntoIterator<Item = Option<T>>,
    ) -> Result<(), TableError> {
        let column = self.begin(Kind::Text)?;
        let table = &mut *self.buf;
        let mut levels = Levels {
            out: &mut table.levels,
            value: true,
            run: 0,
        };
        let (mut count, mut nulls) = (0usize, 0u32);
        for v in values {
            count += 1;
            if column.nullable {
                levels.push(v.is_some());
            }
            let Some(v) = v else {
                nulls += 1;
                continue;
            };
            let start = table.values.len();
            table.values.extend_from_slice(&[0; 4]);
            write!(table.values, "{v}")?;
            let len = u32::try_from(table.values.len() - start - 4)
                .map_err(|_| TableError::Encode("a text value above 4 GiB".into()))?;
            table.values[start..start + 4].copy_from_slice(&len.to_le_bytes());
        }
        levels.flush();
        self.commit(column, count, nulls, Range::None)
    }

    /// Ends the row group: every column must have been given.
    pub fn end(mut self) -> Result<(), TableError> {
        let n = self.table.columns.len();
        if self.next != n {
            return Err(TableError::Encode(format!(
                "a row group was ended after {} of its {n} columns",
                self.next
            )));
        }
        let rows = u32::try_from(self.rows)
            .map_err(|_| TableError::Encode("a row group above 2^32 rows".into()))?;
        self.table.groups.push(rows);
        self.ended = true;
        Ok(())
    }

    /// Fixed-width values: `put` encodes one and keeps the chunk's range.
    fn numbers<T: Copy>(
        &mut self,
        kind: Kind,
        values: impl Iterator<Item = Option<T>>,
        mut put: impl FnMut(T, &mut Range) -> [u8; 8],
    ) -> Result<(), TableError> {
        let column = self.begin(kind)?;
        let table = &mut *self.buf;
        let mut levels = Levels {
            out: &mut table.levels,
            value: true,
            run: 0,
        };
        let (mut count, mut nulls, mut range) = (0usize, 0u32, Range::None);
        for v in values {
            count += 1;
            if column.nullable {
                levels.push(v.is_some());
            }
            match v {
                Some(v) => table.values.extend_from_slice(&put(v, &mut range)),
                None => nulls += 1,
            }
        }
        levels.flush();
        self.commit(column, count, nulls, range)
    }

    fn name(&self) -> &str {
        self.table
            .schema
            .fields()
            .get(self.next)
            .map_or("?", |f| f.name().as_str())
    }

    fn null_in_required(&self) -> TableError {
        TableError::Encode(format!(
            "a null in column `{}`, which is not nullable",
            self.name()
        ))
    }

    /// The next column, checked to be of `kind`; its buffers emptied.
    fn begin(&mut self, kind: Kind) -> Result<Column, TableError> {
        let n = self.table.columns.len();
        let Some(&column) = self.table.columns.get(self.next) else {
            return Err(TableError::Encode(format!(
                "a row group was given more than its {n} columns"
            )));
        };
        if column.kind != kind {
            return Err(TableError::Encode(format!(
                "column `{}` holds {:?} values, given {:?}",
                self.name(),
                column.kind,
                kind
            )));
        }
        self.buf.values.clear();
        self.buf.levels.clear();
        Ok(column)
    }

    /// Writes the column's page (levels, if any, then values) and records its chunk.
    fn commit(
        &mut self,
        column: Column,
        count: usize,
        nulls: u32,
        range: Range,
    ) -> Result<(), TableError> {
        if nulls > 0 && !column.nullable {
            return Err(self.null_in_required());
        }
        if count != self.rows {
            return Err(TableError::Encode(format!(
                "column `{}` was given {count} values for a row group of {} rows",
                self.name(),
                self.rows
            )));
        }
        let (b, t) = (&mut *self.buf, &mut *self.table);
        let page: &[u8] = if column.nullable {
            let len = u32::try_from(b.levels.len())
                .map_err(|_| TableError::Encode("levels above 4 GiB".into()))?;
            b.page.clear();
            b.page.extend_from_slice(&len.to_le_bytes());
            b.page.extend_from_slice(&b.levels);
            b.page.extend_from_slice(&b.values);
            &b.page
        } else {
            &b.values
        };
        b.compressed.clear();
        b.compressed
            .reserve(zstd::zstd_safe::compress_bound(page.len()));
        b.zstd.compress_to_buffer(page, &mut b.compressed)?;
        let too_big = |_| TableError::Encode("a page above 2 GiB".into());
        let uncompressed = i32::try_from(page.len()).map_err(too_big)?;
        let compressed = i32::try_from(b.compressed.len()).map_err(too_big)?;
        let values = i32::try_from(count).map_err(too_big)?;
        b.header.clear();
        write_v1_header(
            &mut b.header,
            uncompressed,
            compressed,
            crc32fast::hash(&b.compressed),
            values,
        );
        t.out.write_all(&b.header)?;
        t.out.write_all(&b.compressed)?;
        let header = b.header.len() as u64;
        t.chunks.push(Chunk {
            offset: t.position,
            compressed: header + b.compressed.len() as u64,
            uncompressed: header + page.len() as u64,
            values: count as u32,
            nulls,
            range,
        });
        t.position += header + b.compressed.len() as u64;
        self.next += 1;
        Ok(())
    }
}

impl Drop for Group<'_> {
    fn drop(&mut self) {
        // A group not ended leaves its pages in the file unreferenced: readers never
        // see them.
        if !self.ended {
            self.table.chunks.truncate(self.first_chunk);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{
        Array, Float64Array, RecordBatch, StringArray, TimestampNanosecondArray, UInt64Array,
    };
    use arrow_schema::{Field, Schema};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use parquet::file::reader::{FileReader, SerializedFileReader};

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
                false,
            ),
            Field::new("id", DataType::UInt64, false),
            Field::new("price", DataType::Float64, true),
            Field::new("name", DataType::Utf8, false),
            Field::new("note", DataType::Utf8, true),
        ]))
    }

    /// Row `i` of the test table: nulls in runs and alternating, NaN, zeros of both
    /// signs, ids above `i64::MAX`, empty and non-ASCII text.
    fn row(i: u64) -> (i64, u64, Option<f64>, String, Option<String>) {
        let price = match i % 7 {
            0 => None,
            1 => Some(f64::NAN),
            2 => Some(-0.0),
            _ if (100..160).contains(&i) => None,
            _ => Some(i as f64 * 0.25 - 10.0),
        };
        let note = (i.is_multiple_of(3) || (200..300).contains(&i)).then(|| format!("n°{i}"));
        let name = if i.is_multiple_of(5) {
            String::new()
        } else {
            format!("s{i}")
        };
        (
            1_700_000_000_000_000_000 - i as i64,
            u64::MAX - i,
            price,
            name,
            note,
        )
    }

    fn write_group(t: &mut TableWriter, rows: std::ops::Range<u64>) -> Result<(), TableError> {
        let rows: Vec<_> = rows.map(row).collect();
        let mut buffers = PageBuffers::new()?;
        let mut g = t.group(&mut buffers, rows.len());
        g.ints(rows.iter().map(|r| r.0))?;
        g.uints(rows.iter().map(|r| r.1))?;
        g.floats(rows.iter().map(|r| r.2))?;
        g.texts(rows.iter().map(|r| r.3.as_str()))?;
        g.displayed(rows.iter().map(|r| r.4.as_ref()))?;
        g.end()
    }

    fn read(path: &Path) -> Vec<RecordBatch> {
        let file = File::open(path).unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
        assert_eq!(reader.schema().fields(), schema().fields());
        reader.build().unwrap().map(Result::unwrap).collect()
    }

    #[test]
    fn a_table_reads_back_value_for_value_with_statistics() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.parquet");
        let mut t = TableWriter::create(
            &path,
            schema(),
            vec![KeyValue::new("k".to_string(), "v".to_string())],
        )
        .unwrap();
        let groups = [0..1, 1..4096, 4096..4097, 4097..5000];
        for g in groups.clone() {
            write_group(&mut t, g).unwrap();
        }
        assert_eq!(t.finish().unwrap(), 5000);

        let batches = read(&path);
        let mut i = 0u64;
        for b in &batches {
            let ts = b
                .column(0)
                .as_any()
                .downcast_ref::<TimestampNanosecondArray>();
            let id = b.column(1).as_any().downcast_ref::<UInt64Array>().unwrap();
            let price = b.column(2).as_any().downcast_ref::<Float64Array>().unwrap();
            let name = b.column(3).as_any().downcast_ref::<StringArray>().unwrap();
            let note = b.column(4).as_any().downcast_ref::<StringArray>().unwrap();
            for k in 0..b.num_rows() {
                let want = row(i);
                assert_eq!(ts.unwrap().value(k), want.0);
                assert_eq!(id.value(k), want.1);
                match want.2 {
                    None => assert!(price.is_null(k), "row {i}"),
                    Some(p) => assert_eq!(price.value(k).to_bits(), p.to_bits(), "row {i}"),
                }
                assert_eq!(name.value(k), want.3);
                assert_eq!(note.is_valid(k).then(|| note.value(k)), want.4.as_deref());
                i += 1;
            }
        }
        assert_eq!(i, 5000);

        let reader = SerializedFileReader::new(File::open(&path).unwrap()).unwrap();
        let meta = reader.metadata();
        assert_eq!(meta.num_row_groups(), groups.len());
        let kv = meta.file_metadata().key_value_metadata().unwrap();
        assert!(
            kv.iter()
                .any(|k| k.key == "k" && k.value.as_deref() == Some("v"))
        );
        let group = meta.row_group(1); // rows 1..4096
        assert_eq!(group.num_rows(), 4095);
        let stats = |c: usize| group.column(c).statistics().unwrap().clone();
        let (ts, id, price) = (stats(0), stats(1), stats(2));
        assert_eq!(ts.min_bytes_opt().unwrap(), row(4095).0.to_le_bytes());
        assert_eq!(ts.max_bytes_opt().unwrap(), row(1).0.to_le_bytes());
        // Unsigned: compared as unsigned (every id is above i64::MAX).
        assert_eq!(id.min_bytes_opt().unwrap(), row(4095).1.to_le_bytes());
        assert_eq!(id.max_bytes_opt().unwrap(), row(1).1.to_le_bytes());
        // NaN left out; nulls counted.
        let nulls = (1..4096).filter(|&i| row(i).2.is_none()).count() as u64;
        assert_eq!(price.null_count_opt(), Some(nulls));
        let floats: Vec<f64> = (1..4096)
            .filter_map(|i| row(i).2)
            .filter(|p| !p.is_nan())
            .collect();
        let min = floats.iter().copied().fold(f64::INFINITY, f64::min);
        let max = floats.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        assert_eq!(price.min_bytes_opt().unwrap(), min.to_le_bytes());
        assert_eq!(price.max_bytes_opt().unwrap(), max.to_le_bytes());
        assert!(
            group.column(3).statistics().is_none(),
            "no statistics of text"
        );
    }

    #[test]
    fn a_damaged_page_is_caught_by_its_checksum() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.parquet");
        let mut t = TableWriter::create(&path, schema(), vec![]).unwrap();
        write_group(&mut t, 0..1000).unwrap();
        t.finish().unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        // Inside the first page (after its header): the first column's values.
        bytes[40] ^= 0x01;
        std::fs::write(&path, bytes).unwrap();
        let file = File::open(&path).unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
        let read: Result<Vec<_>, _> = reader.build().unwrap().collect();
        let message = read.unwrap_err().to_string();
        assert!(message.contains("CRC checksum"), "{message}");
    }

    #[test]
    fn values_that_do_not_fit_the_schema_are_errors_and_leave_a_readable_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.parquet");
        let mut t = TableWriter::create(&path, schema(), vec![]).unwrap();
        write_group(&mut t, 0..10).unwrap();
        let mut b = PageBuffers::new().unwrap();
        let ints = || (0..3).map(|i| i as i64);
        // A column of the wrong kind.
        let mut g = t.group(&mut b, 3);
        let e = g.floats(ints().map(|v| Some(v as f64))).unwrap_err();
        assert!(e.to_string().contains("column `ts`"), "{e}");
        drop(g);
        // Too few values, a null where none may be, too few columns, too many.
        let mut g = t.group(&mut b, 3);
        assert!(
            g.ints(ints().take(2))
                .unwrap_err()
                .to_string()
                .contains("2 values")
        );
        drop(g);
        let mut g = t.group(&mut b, 3);
        g.ints(ints()).unwrap();
        g.uints([1, 2, 3]).unwrap();
        g.floats([None, None, None]).unwrap();
        g.texts(["a", "b", "c"]).unwrap();
        let e = g.end().unwrap_err();
        assert!(e.to_string().contains("4 of its 5"), "{e}");
        let mut g = t.group(&mut b, 1);
        let e = g.displayed([None::<&str>]).unwrap_err();
        assert!(e.to_string().contains("column `ts`"), "{e}");
        drop(g);
        let mut g = t.group(&mut b, 1);
        g.ints([1]).unwrap();
        g.uints([1]).unwrap();
        g.floats([None]).unwrap();
        assert!(g.displayed([None::<&str>]).is_err(), "a null name");
        drop(g);
        // A type this writer does not write.
        let bad = Arc::new(Schema::new(vec![Field::new("b", DataType::Boolean, false)]));
        let e = TableWriter::create(&dir.path().join("b.parquet"), bad, vec![]);
        assert!(
            e.err()
                .unwrap()
                .to_string()
                .contains("column `b` is of type")
        );
        // The groups that failed are not in the file; the one before is.
        write_group(&mut t, 10..20).unwrap();
        assert_eq!(t.finish().unwrap(), 20);
        let rows: usize = read(&path).iter().map(RecordBatch::num_rows).sum();
        assert_eq!(rows, 20);
    }
}
