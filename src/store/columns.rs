//! A dataset file's columns, decoded a batch of rows at a time by the parquet crate's
//! column readers into buffers kept from batch to batch.
//!
//! The Arrow reader hands every batch in new arrays: about 148 allocations per batch of
//! 4,096 rows, the largest part of a backtest's allocations once its own hot path made
//! none (0.032 per event on the Binance USD-M capture). Here a row group's column chunks
//! are read from the file in one piece, each column gets a reader over it, and every
//! batch is decoded into the same vectors: what is left is per page (a decompressed page)
//! and per row group (its bytes, a reader per column), never per batch or row.
//!
//! Columns are found by name and checked against the dataset schema
//! ([`super::schema::schema`]) by their Parquet types: files written by other tools may
//! order them differently, and a column of another type (a `UInt64` stored as a signed
//! `INT64`, microsecond timestamps) is refused, as the Arrow reader refused it.

use std::os::unix::fs::FileExt;
use std::sync::Arc;

use anyhow::{Context, Result, bail, ensure};
use bytes::{Buf, Bytes, BytesMut};
use parquet::basic::{ConvertedType, Encoding, LogicalType, TimeUnit, Type as Physical};
use parquet::column::page::Page;
use parquet::column::reader::ColumnReaderImpl;
use parquet::data_type::{ByteArray, ByteArrayType, DataType, Int32Type, Int64Type};
use parquet::errors::ParquetError;
use parquet::file::reader::{ChunkReader, Length};
use parquet::file::serialized_reader::SerializedPageReader;
use parquet::schema::types::{ColumnDescriptor, SchemaDescriptor};

use super::decode::{IntValues, plain_all};
use super::footer::{ChunkInfo, FileMeta, FooterGroup};
use super::hybrid::{Hybrid, scratch, width_of};
use super::pages::{self, Pages};
use crate::event::{Kind, Side};

/// The Parquet types a dataset column may be stored as.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Stored {
    /// `INT64` timestamp in nanoseconds (Arrow's `Timestamp(Nanosecond, _)`).
    Nanos,
    /// `INT64` annotated unsigned (Arrow's `UInt64`), read as its bits.
    U64,
    /// `INT64`, signed (Arrow's `Int64`).
    I64,
    /// `INT32` annotated as an unsigned 8-bit integer (Arrow's `UInt8`).
    U8,
    /// `BYTE_ARRAY` annotated as UTF-8 text (Arrow's `Utf8`).
    Text,
}

impl Stored {
    /// True when column `c` is stored as `self`.
    fn matches(self, c: &ColumnDescriptor) -> bool {
        let logical = c.logical_type_ref();
        let converted = c.converted_type();
        let int = |bits: i8, signed: bool| match logical {
            Some(LogicalType::Integer(t)) => t.bit_width == bits && t.is_signed == signed,
            _ => false,
        };
        match self {
            Stored::Nanos => {
                c.physical_type() == Physical::INT64
                    && matches!(logical, Some(LogicalType::Timestamp(t)) if t.unit == TimeUnit::NANOS)
            }
            Stored::U64 => {
                c.physical_type() == Physical::INT64
                    && (int(64, false) || converted == ConvertedType::UINT_64)
            }
            Stored::I64 => {
                c.physical_type() == Physical::INT64
                    && (int(64, true)
                        || (logical.is_none()
                            && matches!(converted, ConvertedType::NONE | ConvertedType::INT_64)))
            }
            Stored::U8 => {
                c.physical_type() == Physical::INT32
                    && (int(8, false) || converted == ConvertedType::UINT_8)
            }
            Stored::Text => {
                c.physical_type() == Physical::BYTE_ARRAY
                    && (matches!(logical, Some(LogicalType::String))
                        || converted == ConvertedType::UTF8)
            }
        }
    }
}

/// True when leaf column `column` of a file is stored as the dataset's `UInt8` columns
/// are (the scales): a constant read from its statistics then stands for the column.
pub fn stored_as_u8(schema: &SchemaDescriptor, column: usize) -> bool {
    column < schema.num_columns() && Stored::U8.matches(&schema.column(column))
}

/// A row group's column chunks, read from the file in one piece (one read, into a buffer
/// kept from row group to row group), served to the column readers by file offset.
#[derive(Clone)]
struct GroupBytes {
    /// File offset of `bytes`.
    start: u64,
    bytes: Bytes,
}

impl GroupBytes {
    /// Bytes `start..start + len` of the file (to the end of the piece without `len`).
    fn range(&self, start: u64, len: Option<usize>) -> parquet::errors::Result<Bytes> {
        let from = start
            .checked_sub(self.start)
            .and_then(|o| usize::try_from(o).ok())
            .filter(|&o| o <= self.bytes.len());
        let end = from.and_then(|o| match len {
            Some(len) => o.checked_add(len).filter(|&e| e <= self.bytes.len()),
            None => Some(self.bytes.len()),
        });
        match (from, end) {
            (Some(from), Some(end)) => Ok(self.bytes.slice(from..end)),
            _ => Err(ParquetError::EOF(format!(
                "bytes {start}+{len:?} lie outside the row group's column chunks ({}+{})",
                self.start,
                self.bytes.len()
            ))),
        }
    }
}

impl Length for GroupBytes {
    fn len(&self) -> u64 {
        self.start + self.bytes.len() as u64
    }
}

impl ChunkReader for GroupBytes {
    type T = bytes::buf::Reader<Bytes>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        Ok(self.range(start, None)?.reader())
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        self.range(start, Some(length))
    }
}

/// One column's values for the rows of the last batch, in vectors kept from batch to
/// batch. A null row holds `T::default()` (an empty text for [`ByteArray`]), and
/// [`Values::is_null`] tells it apart.
pub struct Values<T> {
    /// A value per row of the batch.
    pub values: Vec<T>,
    /// A definition level per row when the batch holds a null (it is only read then);
    /// may be left empty otherwise.
    levels: Vec<i16>,
    /// The level of a row that holds a value.
    max_def: i16,
    /// Null rows in the batch.
    pub nulls: usize,
    /// False when the column is not read (absent from the file, or left out of the row
    /// group): every row is null.
    pub present: bool,
    /// True when a batch with nulls keeps `values` dense (only the rows that hold one)
    /// and `index` gives each row's place in them: for text, where moving 32-byte values
    /// to their rows and filling the rest costs more than an index.
    dense: bool,
    index: Vec<u32>,
}

impl<T> Default for Values<T> {
    fn default() -> Values<T> {
        Values {
            values: Vec::new(),
            levels: Vec::new(),
            max_def: 0,
            nulls: 0,
            present: false,
            dense: false,
            index: Vec::new(),
        }
    }
}

impl<T: Clone> Values<T> {
    /// True when row `i` is null.
    #[inline(always)]
    pub fn is_null(&self, i: usize) -> bool {
        !self.present || (self.nulls > 0 && self.levels[i] < self.max_def)
    }

    /// Row `i`, `None` when null.
    #[inline(always)]
    pub fn value(&self, i: usize) -> Option<&T> {
        if self.is_null(i) {
            return None;
        }
        Some(if self.dense && self.nulls > 0 {
            &self.values[self.index[i] as usize]
        } else {
            &self.values[i]
        })
    }

    /// Row `i`, `None` when null.
    #[inline(always)]
    pub fn get(&self, i: usize) -> Option<T> {
        self.value(i).cloned()
    }

    /// Of a text column (dense), the values of the rows that hold one, in row order.
    pub fn held(&self) -> &[T] {
        debug_assert!(self.dense || self.nulls == 0);
        &self.values
    }
}

/// An empty text: what null rows of a text column hold (a [`ByteArray`] without bytes
/// panics when read). `Bytes::new()` is static: no allocation.
fn empty_text() -> ByteArray {
    ByteArray::from(Bytes::new())
}

/// A row group being opened: the file's schema and footer, the group's, and its column
/// chunks.
#[derive(Clone, Copy)]
struct Group<'a> {
    file: FileMeta<'a>,
    /// The group's index in the file.
    index: usize,
    rg: FooterGroup<'a>,
    bytes: &'a GroupBytes,
}

/// Where a column's values come from in a row group.
#[derive(Clone, Copy)]
enum Source {
    /// Leaf column `usize` of the file.
    Read(usize),
    /// Left out: the caller knows its value from the row group's statistics.
    Known,
    /// Not in the file.
    Missing,
}

/// A column's reader over the current row group and the values of its last batch.
struct Slot<T: Native> {
    name: &'static str,
    stored: Stored,
    /// True when a file must hold the column (every column but the gap columns, which
    /// the dataset schema added later).
    in_file: bool,
    /// True when the dataset schema declares the column non-nullable: a null is an error.
    required: bool,
    /// The crate's reader, for a chunk [`Direct`] does not decode.
    reader: Option<ColumnReaderImpl<T>>,
    /// This reader's decoding, kept from chunk to chunk (its buffers, the zstd context).
    direct: Direct<T>,
    /// True when `direct` reads the current chunk.
    direct_on: bool,
    out: Values<T::T>,
}

impl<T: Native> Slot<T> {
    fn new(name: &'static str, stored: Stored, in_file: bool, required: bool) -> Slot<T> {
        Slot {
            name,
            stored,
            in_file,
            required,
            reader: None,
            direct: Direct::default(),
            direct_on: false,
            out: Values {
                dense: stored == Stored::Text,
                ..Values::default()
            },
        }
    }

    /// Points the slot at its column in row group `group`, refusing a column of another
    /// type, or a required one the file lacks.
    fn open(&mut self, group: &Group<'_>, source: Source) -> Result<()> {
        self.release();
        let Some(c) = self.check(group, source)? else {
            return Ok(());
        };
        let Group {
            file, rg, bytes, ..
        } = *group;
        let descr = file.schema.column(c);
        self.out.max_def = descr.max_def_level();
        self.out.present = true;
        let chunk = rg.chunk(c)?;
        if Direct::<T>::decodes(chunk) {
            self.direct.open(bytes, chunk)?;
            self.direct_on = true;
            return Ok(());
        }
        let rows = usize::try_from(rg.rows()).context("negative row count")?;
        // The crate's column reader wants the crate's footer (decoded on first need).
        let meta = file.crate_meta()?;
        let chunk = meta
            .row_groups()
            .get(group.index)
            .and_then(|g| g.columns().get(c))
            .context("the file's footer changed while it was read")?;
        let pages = SerializedPageReader::new(Arc::new(bytes.clone()), chunk, rows, None)?;
        self.reader = Some(ColumnReaderImpl::new(descr, Box::new(pages)));
        Ok(())
    }

    /// Lets go of the current row group's bytes (its pages, the last batch's texts); the
    /// column reads as absent until opened again.
    fn release(&mut self) {
        self.out.present = false;
        self.reader = None;
        self.direct_on = false;
        self.direct.close();
        self.out.values.clear();
    }

    /// The leaf column to read in `group`, after checking its type; `None` when the
    /// column is not read (every row null). A required column the file lacks is refused.
    fn check(&self, group: &Group<'_>, source: Source) -> Result<Option<usize>> {
        let c = match source {
            Source::Read(c) => c,
            Source::Known => return Ok(None),
            Source::Missing if self.in_file => bail!(
                "column {:?} missing: not a ticktape dataset file?",
                self.name
            ),
            Source::Missing => return Ok(None),
        };
        let descr = group.file.schema.column(c);
        if !self.stored.matches(&descr) || descr.max_rep_level() != 0 {
            bail!(
                "column {:?} has an unexpected type ({:?} {:?}, expected {:?}): not a ticktape \
                 dataset file?",
                self.name,
                descr.physical_type(),
                descr.logical_type_ref(),
                self.stored
            );
        }
        Ok(Some(c))
    }
}

impl<T: Native> Slot<T>
where
    T::T: Default,
{
    /// Decodes the next `rows` rows (`fill` for a null row's value); refuses fewer.
    fn read(&mut self, rows: usize, fill: impl Fn() -> T::T) -> Result<()> {
        let out = &mut self.out;
        out.values.clear();
        out.levels.clear();
        out.nulls = 0;
        if self.direct_on {
            self.direct
                .read(rows, out)
                .with_context(|| format!("column {:?}", self.name))?;
        } else {
            let Some(reader) = self.reader.as_mut() else {
                return Ok(());
            };
            let levels = (out.max_def > 0).then_some(&mut out.levels);
            let (records, _, _) = reader.read_records(rows, levels, None, &mut out.values)?;
            if records != rows {
                bail!(
                    "column {:?} holds {records} rows where the row group has {rows} left",
                    self.name
                );
            }
        }
        let values = out.values.len();
        if values < rows {
            out.nulls = rows - values;
            if self.required {
                bail!(
                    "{} row(s) with a null {} in one batch; every row needs one (ticktape \
                     never writes it null). Repair or remove the file that wrote them",
                    out.nulls,
                    self.name
                );
            }
            check_levels(&out.levels, out.max_def, rows, values)
                .with_context(|| format!("column {:?}", self.name))?;
            if out.dense {
                out.index.clear();
                let mut next = 0u32;
                for &level in &out.levels {
                    out.index.push(next);
                    next += u32::from(level == out.max_def);
                }
            } else {
                spread(&mut out.values, &out.levels, out.max_def, fill);
            }
        }
        Ok(())
    }
}

/// Refuses a batch of `rows` rows whose definition levels do not account for its
/// `values` values: a level per row, none above `max_def`, one at `max_def` per value.
/// Only a damaged file (or one another tool wrote wrongly) fails this; reading on
/// would give a row a value that is not there.
fn check_levels(levels: &[i16], max_def: i16, rows: usize, values: usize) -> Result<()> {
    ensure!(
        levels.len() == rows,
        "{} definition levels for {rows} rows: the file is damaged",
        levels.len()
    );
    let mut held = 0;
    for &level in levels {
        ensure!(
            (0..=max_def).contains(&level),
            "definition level {level} outside 0..={max_def}: the file is damaged"
        );
        held += usize::from(level == max_def);
    }
    ensure!(
        held == values,
        "{held} rows hold a value by their definition levels but the page gives {values}: \
         the file is damaged"
    );
    Ok(())
}

/// A column type a [`Slot`] reads, and how [`Direct`] decodes its pages.
trait Native: DataType {
    /// A data page's values, being read.
    type Page;
    /// True when [`Direct`] decodes a chunk of this type in `encoding`.
    fn decodes(encoding: Encoding) -> bool;
    /// The values of a data page in `encoding` (what follows its levels).
    fn page(encoding: Encoding, values: Bytes) -> Result<Self::Page>;
    /// A dictionary page's `count` PLAIN values, appended to `out`.
    fn dictionary(buf: Bytes, count: usize, out: &mut Vec<Self::T>) -> Result<()>;
    /// Appends a page's next `n` values to `out`; keys are looked up in `dictionary`
    /// (`keys` is scratch space).
    fn values(
        page: &mut Self::Page,
        n: usize,
        dictionary: &[Self::T],
        keys: &mut Vec<u32>,
        out: &mut Vec<Self::T>,
    ) -> Result<()>;
}

/// The integer types: [`super::decode`].
macro_rules! native_int {
    ($t:ty) => {
        impl Native for $t {
            type Page = IntValues;
            fn decodes(e: Encoding) -> bool {
                matches!(
                    e,
                    Encoding::PLAIN
                        | Encoding::PLAIN_DICTIONARY
                        | Encoding::RLE_DICTIONARY
                        | Encoding::DELTA_BINARY_PACKED
                )
            }
            fn page(encoding: Encoding, values: Bytes) -> Result<IntValues> {
                IntValues::new(encoding, values)
            }
            fn dictionary(buf: Bytes, count: usize, out: &mut Vec<Self::T>) -> Result<()> {
                plain_all(&buf, count, out)
            }
            fn values(
                page: &mut IntValues,
                n: usize,
                dictionary: &[Self::T],
                keys: &mut Vec<u32>,
                out: &mut Vec<Self::T>,
            ) -> Result<()> {
                page.read(n, dictionary, keys, out)
            }
        }
    };
}
native_int!(Int64Type);
native_int!(Int32Type);

/// Text: PLAIN byte arrays or dictionary keys, each value sharing its page's buffer.
impl Native for ByteArrayType {
    type Page = PageValues;
    fn decodes(e: Encoding) -> bool {
        matches!(
            e,
            Encoding::PLAIN | Encoding::PLAIN_DICTIONARY | Encoding::RLE_DICTIONARY
        )
    }
    fn page(encoding: Encoding, values: Bytes) -> Result<PageValues> {
        page_values_of(encoding, values)
    }
    fn dictionary(buf: Bytes, count: usize, out: &mut Vec<ByteArray>) -> Result<()> {
        let mut pos = 0;
        for _ in 0..count {
            out.push(ByteArray::from(plain_text(&buf, &mut pos)?));
        }
        Ok(())
    }
    fn values(
        page: &mut PageValues,
        n: usize,
        dictionary: &[ByteArray],
        keys: &mut Vec<u32>,
        out: &mut Vec<ByteArray>,
    ) -> Result<()> {
        match page {
            PageValues::Plain { data, pos } => {
                for _ in 0..n {
                    out.push(ByteArray::from(plain_text(data, pos)?));
                }
            }
            PageValues::Keys(hybrid) => {
                let keys = scratch(keys, n);
                hybrid.read(keys)?;
                for &k in keys.iter() {
                    let Some(text) = dictionary.get(k as usize) else {
                        bail!(
                            "dictionary key {k} out of range ({} entries)",
                            dictionary.len()
                        );
                    };
                    out.push(text.clone());
                }
            }
        }
        Ok(())
    }
}

/// A column chunk decoded here ([`super::decode`], [`Native`]) rather than by the
/// parquet crate's column reader, which allocates its decoders for every chunk and some
/// for every page, and zeroes every values buffer before decoding into it. Everything is
/// kept from chunk to chunk.
struct Direct<T: Native> {
    pages: Pages,
    /// The chunk's dictionary.
    dictionary: Vec<T::T>,
    page: Option<DataPage<T::Page>>,
    /// Scratch: a page's levels, a page's dictionary keys.
    levels: Vec<u32>,
    keys: Vec<u32>,
}

impl<T: Native> Default for Direct<T> {
    fn default() -> Direct<T> {
        Direct {
            pages: Pages::default(),
            dictionary: Vec::new(),
            page: None,
            levels: Vec::new(),
            keys: Vec::new(),
        }
    }
}

impl<T: Native> Direct<T> {
    /// True when a chunk is stored in a way [`Direct`] decodes: compressed with a codec
    /// [`Pages`] reads, levels in RLE, values in encodings [`Native::decodes`].
    fn decodes(chunk: &ChunkInfo) -> bool {
        pages::handles(chunk.compression())
            && chunk
                .encodings()
                .all(|e| e == Encoding::RLE || T::decodes(e))
    }

    fn open(&mut self, group: &GroupBytes, chunk: &ChunkInfo) -> Result<()> {
        self.close();
        let (start, len) = chunk.byte_range()?;
        let len = usize::try_from(len).context("column chunk too large")?;
        self.pages
            .open(group.range(start, Some(len))?, chunk.compression())
    }

    fn close(&mut self) {
        self.page = None;
        self.dictionary.clear();
        self.pages.close();
    }

    /// Decodes the next `rows` rows into `out`: the values of the rows that hold one, and
    /// every row's level when the column is nullable and a row of the batch is null (the
    /// levels are only read then: [`Values::is_null`]).
    fn read(&mut self, rows: usize, out: &mut Values<T::T>) -> Result<()> {
        let max_def = u32::try_from(out.max_def).unwrap_or(0);
        let mut done = 0;
        // True while every row so far holds a value and `out.levels` is left empty.
        let mut all_held = true;
        while done < rows {
            if self.page.as_ref().is_none_or(|p| p.left == 0) {
                self.next_data_page(out.max_def)?;
            }
            let Some(page) = self.page.as_mut() else {
                bail!(
                    "the column ends {} rows before its row group does",
                    rows - done
                );
            };
            let n = (rows - done).min(page.left);
            let skipped = match page.levels.as_mut() {
                Some(levels) if all_held => levels.skip_repeated(n, max_def)?,
                _ => false,
            };
            let defined = match page.levels.as_mut() {
                Some(levels) if !skipped => {
                    if all_held {
                        out.levels.resize(done, out.max_def);
                        all_held = false;
                    }
                    let read = scratch(&mut self.levels, n);
                    levels.read(read)?;
                    out.levels.extend(read.iter().map(|&l| l as i16));
                    read.iter().filter(|&&l| l == max_def).count()
                }
                _ => n,
            };
            T::values(
                &mut page.values,
                defined,
                &self.dictionary,
                &mut self.keys,
                &mut out.values,
            )?;
            page.left -= n;
            done += n;
        }
        Ok(())
    }

    /// Moves to the next data page, reading a dictionary page on the way.
    fn next_data_page(&mut self, max_def: i16) -> Result<()> {
        self.page = None;
        loop {
            match next_page(&mut self.pages, max_def)? {
                Next::End => return Ok(()),
                Next::Dictionary { buf, count } => {
                    self.dictionary.clear();
                    T::dictionary(buf, count as usize, &mut self.dictionary)?;
                }
                Next::Data(page) => {
                    self.page = Some(page.map(T::page)?);
                    return Ok(());
                }
            }
        }
    }
}

/// A data page being read: rows left, definition levels when the column is nullable,
/// and its values in the form `P` the column decodes them with.
struct DataPage<P> {
    left: usize,
    levels: Option<Hybrid>,
    values: P,
}

/// A data page before its values are decoded: `values` is what follows the levels.
struct RawPage {
    rows: usize,
    encoding: Encoding,
    levels: Option<Hybrid>,
    values: Bytes,
}

impl RawPage {
    fn map<P>(self, values: impl FnOnce(Encoding, Bytes) -> Result<P>) -> Result<DataPage<P>> {
        Ok(DataPage {
            left: self.rows,
            levels: self.levels,
            values: values(self.encoding, self.values)?,
        })
    }
}

/// What [`next_page`] found.
enum Next {
    Dictionary { buf: Bytes, count: u32 },
    Data(RawPage),
    End,
}

/// The next page of a chunk, a data page split into its levels (nullable columns:
/// `max_def` > 0; the dataset has no repeated columns) and values.
fn next_page(pages: &mut Pages, max_def: i16) -> Result<Next> {
    let width = width_of(u32::try_from(max_def).unwrap_or(0));
    Ok(match pages.next_page()? {
        None => Next::End,
        Some(Page::DictionaryPage {
            buf, num_values, ..
        }) => Next::Dictionary {
            buf,
            count: num_values,
        },
        Some(Page::DataPage {
            buf,
            num_values,
            encoding,
            ..
        }) => {
            let mut at = 0;
            let levels = if max_def > 0 {
                let len = buf
                    .get(..4)
                    .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
                let end = len.and_then(|l| 4usize.checked_add(l as usize));
                let Some(end) = end.filter(|&e| e <= buf.len()) else {
                    bail!("a page's levels run past its end");
                };
                at = end;
                Some(Hybrid::new(buf.slice(4..end), width)?)
            } else {
                None
            };
            Next::Data(RawPage {
                rows: num_values as usize,
                encoding,
                levels,
                values: buf.slice(at..),
            })
        }
        Some(Page::DataPageV2 {
            buf,
            num_values,
            encoding,
            def_levels_byte_len,
            rep_levels_byte_len,
            ..
        }) => {
            let start = rep_levels_byte_len as usize;
            let end = start.saturating_add(def_levels_byte_len as usize);
            if end > buf.len() {
                bail!("a page's levels run past its end");
            }
            let levels = (max_def > 0)
                .then(|| Hybrid::new(buf.slice(start..end), width))
                .transpose()?;
            Next::Data(RawPage {
                rows: num_values as usize,
                encoding,
                levels,
                values: buf.slice(end..),
            })
        }
    })
}

/// Moves the values of the rows that hold one (at the front of `values`, in order) to
/// their rows, by `levels`; null rows get `fill()`.
fn spread<T>(values: &mut Vec<T>, levels: &[i16], max_def: i16, fill: impl Fn() -> T) {
    let mut next = values.len();
    values.resize_with(levels.len(), &fill);
    for (i, &level) in levels.iter().enumerate().rev() {
        if level == max_def {
            next -= 1;
            values.swap(i, next);
        } else {
            values[i] = fill();
        }
    }
}

/// A row of a [`Coded`] column that holds no text.
pub const NULL_KEY: u32 = u32::MAX;

/// At most this many distinct texts in a [`Coded`] column of one file: `kind` and `side`
/// are enumerations of a few values.
const MAX_DISTINCT: usize = 1_024;

/// A text column of a few distinct values (`kind`, `side`), decoded to each row's parsed
/// value without making its text: the pages' dictionary keys are read by
/// [`Hybrid`](super::hybrid::Hybrid) and looked up in the parsed dictionary. The parquet
/// crate's column reader would hand a reference-counted [`ByteArray`] per row instead:
/// two atomic operations and a 32-byte value per row and column, a third of the reading
/// time on the Binance USD-M capture. A column chunk in an encoding other than plain or
/// dictionary (delta byte arrays) is read through that reader all the same.
pub struct Coded<T: Copy> {
    name: &'static str,
    required: bool,
    parse: fn(&str) -> Option<T>,
    /// The distinct texts met in the file, and what they parse to.
    table: Vec<(Box<str>, Option<T>)>,
    /// The current column chunk's pages, when read here (`reading`), kept from chunk to
    /// chunk.
    pages: Pages,
    reading: bool,
    /// The current column chunk, when read through the parquet crate's reader.
    fallback: Slot<ByteArrayType>,
    max_def: i16,
    /// The current dictionary page's entries as `table` indexes.
    dictionary: Vec<u32>,
    page: Option<DataPage<PageValues>>,
    levels: Vec<u32>,
    keys_read: Vec<u32>,
    /// A `table` index per row of the batch, [`NULL_KEY`] for a null row.
    pub keys: Vec<u32>,
    /// The parsed value per row of the batch (a null row: the parse of empty text).
    pub values: Vec<Option<T>>,
    /// `table`'s parsed values, for the batch's lookups.
    parsed: Vec<Option<T>>,
    /// Null rows in the batch.
    pub nulls: usize,
}

/// A data page's values: dictionary keys, or plain texts from `pos`.
enum PageValues {
    Keys(Hybrid),
    Plain { data: Bytes, pos: usize },
}

impl<T: Copy> Coded<T> {
    fn new(name: &'static str, required: bool, parse: fn(&str) -> Option<T>) -> Coded<T> {
        Coded {
            name,
            required,
            parse,
            table: Vec::new(),
            pages: Pages::default(),
            reading: false,
            fallback: Slot::new(name, Stored::Text, true, required),
            max_def: 0,
            dictionary: Vec::new(),
            page: None,
            levels: Vec::new(),
            keys_read: Vec::new(),
            keys: Vec::new(),
            values: Vec::new(),
            parsed: Vec::new(),
            nulls: 0,
        }
    }

    /// Row `i`'s text (empty for a null row), for messages.
    pub fn text(&self, i: usize) -> &str {
        match self.keys.get(i).and_then(|&k| self.table.get(k as usize)) {
            Some((text, _)) => text,
            None => "",
        }
    }

    /// Lets go of the current row group's bytes.
    fn release(&mut self) {
        self.pages.close();
        self.reading = false;
        self.page = None;
        self.dictionary.clear();
        self.fallback.release();
    }

    /// Points the column at its chunk in row group `group`, as [`Slot::open`] does.
    fn open(&mut self, group: &Group<'_>, source: Source) -> Result<()> {
        let Group {
            file, rg, bytes, ..
        } = *group;
        self.release();
        // The checks (type, presence) are the generic slot's.
        let Some(c) = self.fallback.check(group, source)? else {
            return Ok(());
        };
        let chunk = rg.chunk(c)?;
        if !Direct::<ByteArrayType>::decodes(chunk) {
            return self.fallback.open(group, source);
        }
        let (start, len) = chunk.byte_range()?;
        let len = usize::try_from(len).context("column chunk too large")?;
        self.pages
            .open(bytes.range(start, Some(len))?, chunk.compression())?;
        self.reading = true;
        self.max_def = file.schema.column(c).max_def_level();
        Ok(())
    }

    /// Decodes the next `rows` rows; refuses fewer, or a null in a required column.
    fn read(&mut self, rows: usize) -> Result<()> {
        self.keys.clear();
        self.values.clear();
        self.nulls = 0;
        if self.reading {
            while self.keys.len() < rows {
                self.read_some(rows - self.keys.len())?;
            }
        } else if self.fallback.out.present {
            self.fallback.read(rows, empty_text)?;
            for i in 0..rows {
                let key = match self.fallback.out.value(i) {
                    None => NULL_KEY,
                    Some(text) => intern(&mut self.table, self.parse, text.data())?,
                };
                self.keys.push(key);
            }
            self.nulls = self.fallback.out.nulls;
        } else {
            // Not read: every row null.
            self.keys.resize(rows, NULL_KEY);
            self.nulls = rows;
        }
        if self.nulls > 0 && self.required {
            bail!(
                "{} row(s) with a null {} in one batch; every row needs one (ticktape \
                 never writes it null). Repair or remove the file that wrote them",
                self.nulls,
                self.name
            );
        }
        // What each key parses to, by table index (the null key last).
        let null = (self.parse)("");
        self.parsed.clear();
        self.parsed
            .extend(self.table.iter().map(|(_, value)| *value));
        let parsed = &self.parsed;
        self.values
            .extend(self.keys.iter().map(|&k| match parsed.get(k as usize) {
                Some(&value) => value,
                None => null,
            }));
        Ok(())
    }

    /// Decodes up to `want` rows of the current page (the next page when it is done).
    fn read_some(&mut self, want: usize) -> Result<()> {
        if self.page.as_ref().is_none_or(|p| p.left == 0) {
            self.next_data_page()?;
        }
        let Some(page) = self.page.as_mut() else {
            bail!("column {:?} ends before its row group does", self.name);
        };
        let n = want.min(page.left).min(4096);
        let start = self.keys.len();
        let max_def = u32::try_from(self.max_def).unwrap_or(0);
        // Levels are decoded only when some row of these may be null.
        let nullable = match page.levels.as_mut() {
            None => false,
            Some(levels) => !levels.skip_repeated(n, max_def)?,
        };
        let defined = match page.levels.as_mut() {
            Some(levels) if nullable => {
                let read = scratch(&mut self.levels, n);
                levels.read(read)?;
                read.iter().filter(|&&l| l == max_def).count()
            }
            _ => n,
        };
        // The keys of the rows that hold a value: straight into place when every row does.
        let out = if nullable {
            scratch(&mut self.keys_read, defined)
        } else {
            self.keys.resize(start + n, 0);
            &mut self.keys[start..]
        };
        page_values(
            &mut page.values,
            out,
            &self.dictionary,
            &mut self.table,
            self.parse,
        )
        .with_context(|| format!("column {:?}", self.name))?;
        if nullable {
            self.keys.resize(start + n, NULL_KEY);
            let mut next = 0;
            for (key, &level) in self.keys[start..].iter_mut().zip(&self.levels[..n]) {
                if level == max_def {
                    *key = self.keys_read[next];
                    next += 1;
                }
            }
            self.nulls += n - defined;
        }
        page.left -= n;
        Ok(())
    }

    /// Moves to the next data page, reading a dictionary page on the way.
    fn next_data_page(&mut self) -> Result<()> {
        self.page = None;
        if !self.reading {
            return Ok(());
        }
        loop {
            let next = next_page(&mut self.pages, self.max_def)
                .with_context(|| format!("column {:?}", self.name))?;
            match next {
                Next::End => return Ok(()),
                Next::Dictionary { buf, count } => {
                    self.dictionary.clear();
                    let mut pos = 0;
                    for _ in 0..count {
                        let text = plain_text(&buf, &mut pos)?;
                        let key = intern(&mut self.table, self.parse, &text)?;
                        self.dictionary.push(key);
                    }
                }
                Next::Data(page) => {
                    let page = page
                        .map(page_values_of)
                        .with_context(|| format!("column {:?}", self.name))?;
                    self.page = Some(page);
                    return Ok(());
                }
            }
        }
    }
}

/// A text page's values as [`Coded`] reads them.
fn page_values_of(encoding: Encoding, values: Bytes) -> Result<PageValues> {
    Ok(match encoding {
        Encoding::PLAIN_DICTIONARY | Encoding::RLE_DICTIONARY => {
            let Some(&width) = values.first() else {
                bail!("a dictionary page without keys");
            };
            PageValues::Keys(Hybrid::new(values.slice(1..), width)?)
        }
        Encoding::PLAIN => PageValues::Plain {
            data: values,
            pos: 0,
        },
        other => bail!("unexpected encoding {other:?}"),
    })
}

/// Fills `out` with the `table` indexes of a page's next values: dictionary keys looked
/// up in `dictionary` (the page's dictionary as `table` indexes), or plain texts interned.
fn page_values<T: Copy>(
    values: &mut PageValues,
    out: &mut [u32],
    dictionary: &[u32],
    table: &mut Vec<(Box<str>, Option<T>)>,
    parse: fn(&str) -> Option<T>,
) -> Result<()> {
    match values {
        PageValues::Keys(keys) => {
            keys.read(out)?;
            let mut bad = None;
            for k in out.iter_mut() {
                match dictionary.get(*k as usize) {
                    Some(&entry) => *k = entry,
                    None => bad = Some(*k),
                }
            }
            if let Some(k) = bad {
                bail!(
                    "dictionary key {k} out of range ({} entries)",
                    dictionary.len()
                );
            }
        }
        PageValues::Plain { data, pos } => {
            for k in out.iter_mut() {
                *k = intern(table, parse, &plain_text(data, pos)?)?;
            }
        }
    }
    Ok(())
}

/// The next PLAIN byte array of `data` at `pos` (a 4-byte little-endian length, then
/// the bytes), moving past it.
fn plain_text(data: &Bytes, pos: &mut usize) -> Result<Bytes> {
    let len = data
        .get(*pos..*pos + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
    let end = len.and_then(|l| (*pos + 4).checked_add(l));
    let Some(end) = end.filter(|&e| e <= data.len()) else {
        bail!("a text runs past the end of its page");
    };
    let text = data.slice(*pos + 4..end);
    *pos = end;
    Ok(text)
}

/// The index of `text` in `table`, added (with what `parse` makes of it) when new.
fn intern<T: Copy>(
    table: &mut Vec<(Box<str>, Option<T>)>,
    parse: fn(&str) -> Option<T>,
    text: &[u8],
) -> Result<u32> {
    // Text that is not UTF-8 is kept as shown (for messages) and parses to nothing.
    let shown = String::from_utf8_lossy(text);
    if let Some(i) = table.iter().position(|(t, _)| **t == *shown) {
        return Ok(i as u32);
    }
    if table.len() >= MAX_DISTINCT {
        bail!("more than {MAX_DISTINCT} distinct values: not a ticktape dataset file?");
    }
    let parsed = std::str::from_utf8(text).ok().and_then(parse);
    table.push((shown.into(), parsed));
    Ok((table.len() - 1) as u32)
}

/// Every column of a dataset file the reader decodes, with its reader over the current
/// row group and the values of the last batch.
pub struct Columns {
    ts_recv: Slot<Int64Type>,
    ts_event: Slot<Int64Type>,
    venue: Slot<ByteArrayType>,
    symbol: Slot<ByteArrayType>,
    kind: Coded<Kind>,
    venue_seq: Slot<Int64Type>,
    prev_venue_seq: Slot<Int64Type>,
    pub_seq: Slot<Int64Type>,
    side: Coded<Side>,
    price: Slot<Int64Type>,
    price_scale: Slot<Int32Type>,
    size: Slot<Int64Type>,
    size_scale: Slot<Int32Type>,
    flags: Slot<Int32Type>,
    trade_id: Slot<ByteArrayType>,
    gap_reason: Slot<ByteArrayType>,
    gap_missing: Slot<Int64Type>,
    gap_publisher: Slot<ByteArrayType>,
    /// Rows of the current row group not decoded yet.
    left: usize,
    /// The buffer the row groups' bytes are read into, taken back for the next one.
    group: BytesMut,
}

impl Default for Columns {
    fn default() -> Columns {
        Columns {
            ts_recv: Slot::new("ts_recv", Stored::Nanos, true, true),
            ts_event: Slot::new("ts_event", Stored::Nanos, true, true),
            venue: Slot::new("venue", Stored::Text, true, true),
            symbol: Slot::new("symbol", Stored::Text, true, true),
            kind: Coded::new("kind", true, Kind::from_name),
            venue_seq: Slot::new("venue_seq", Stored::U64, true, false),
            prev_venue_seq: Slot::new("prev_venue_seq", Stored::U64, true, false),
            pub_seq: Slot::new("pub_seq", Stored::U64, true, true),
            side: Coded::new("side", false, Side::from_code),
            price: Slot::new("price", Stored::I64, true, false),
            price_scale: Slot::new("price_scale", Stored::U8, true, false),
            size: Slot::new("size", Stored::I64, true, false),
            size_scale: Slot::new("size_scale", Stored::U8, true, false),
            flags: Slot::new("flags", Stored::U8, true, false),
            trade_id: Slot::new("trade_id", Stored::Text, true, false),
            gap_reason: Slot::new("gap_reason", Stored::Text, false, false),
            gap_missing: Slot::new("gap_missing", Stored::U64, false, false),
            gap_publisher: Slot::new("gap_publisher", Stored::Text, false, false),
            left: 0,
            group: BytesMut::new(),
        }
    }
}

/// The values of the last batch, column by column (see [`Columns::batch`]).
pub struct Batch<'a> {
    pub ts_recv: &'a Values<i64>,
    pub ts_event: &'a Values<i64>,
    pub venue: &'a Values<ByteArray>,
    pub symbol: &'a Values<ByteArray>,
    pub kind: &'a Coded<Kind>,
    /// `UInt64` values as their bits.
    pub venue_seq: &'a Values<i64>,
    pub prev_venue_seq: &'a Values<i64>,
    pub pub_seq: &'a Values<i64>,
    pub side: &'a Coded<Side>,
    pub price: &'a Values<i64>,
    /// `UInt8` values as Parquet stores them (`INT32`).
    pub price_scale: &'a Values<i32>,
    pub size: &'a Values<i64>,
    pub size_scale: &'a Values<i32>,
    pub flags: &'a Values<i32>,
    pub trade_id: &'a Values<ByteArray>,
    pub gap_reason: &'a Values<ByteArray>,
    pub gap_missing: &'a Values<i64>,
    pub gap_publisher: &'a Values<ByteArray>,
}

impl Columns {
    /// Starts row group `group` of the file `meta` describes, reading every column but
    /// those `skip` names (leaf indexes: columns whose values the caller knows from
    /// the row group's statistics), which then read as null.
    pub fn open_group(
        &mut self,
        meta: FileMeta<'_>,
        group: usize,
        skip: impl Fn(usize) -> bool,
    ) -> Result<()> {
        let rg = meta.footer.group(group)?;
        let schema = meta.schema;
        ensure!(
            rg.columns() == schema.num_columns(),
            "row group {group} holds {} columns where the file's schema has {}: the file is \
             damaged, or changed since the dataset was opened",
            rg.columns(),
            schema.num_columns()
        );
        let find = |name: &str| match schema
            .columns()
            .iter()
            .position(|c| c.path().parts() == [name])
        {
            Some(i) if skip(i) => Source::Known,
            Some(i) => Source::Read(i),
            None => Source::Missing,
        };
        let sources: [Source; 18] = self.names().map(find);
        let read = sources.iter().filter_map(|s| match s {
            Source::Read(c) => Some(*c),
            _ => None,
        });
        // One read for the chunks of every column read.
        let (mut start, mut end) = (u64::MAX, 0u64);
        for c in read {
            let (s, l) = rg.chunk(c)?.byte_range()?;
            start = start.min(s);
            end = end.max(s.saturating_add(l));
        }
        let start = if start == u64::MAX { 0 } else { start };
        let len = usize::try_from(end.saturating_sub(start)).context("row group too large")?;
        // Nothing holds the last group's bytes once every column lets go: its buffer
        // comes back without allocating.
        self.release();
        self.group.clear();
        self.group.resize(len, 0);
        meta.file
            .read_exact_at(&mut self.group, start)
            .context("cannot read a row group")?;
        let bytes = GroupBytes {
            start,
            bytes: self.group.split().freeze(),
        };
        let mut at = sources.into_iter();
        let mut next = || at.next().unwrap_or(Source::Missing);
        let g = Group {
            file: meta,
            index: group,
            rg,
            bytes: &bytes,
        };
        self.ts_recv.open(&g, next())?;
        self.ts_event.open(&g, next())?;
        self.venue.open(&g, next())?;
        self.symbol.open(&g, next())?;
        self.kind.open(&g, next())?;
        self.venue_seq.open(&g, next())?;
        self.prev_venue_seq.open(&g, next())?;
        self.pub_seq.open(&g, next())?;
        self.side.open(&g, next())?;
        self.price.open(&g, next())?;
        self.price_scale.open(&g, next())?;
        self.size.open(&g, next())?;
        self.size_scale.open(&g, next())?;
        self.flags.open(&g, next())?;
        self.trade_id.open(&g, next())?;
        self.gap_reason.open(&g, next())?;
        self.gap_missing.open(&g, next())?;
        self.gap_publisher.open(&g, next())?;
        self.left = usize::try_from(rg.rows()).context("negative row count")?;
        Ok(())
    }

    /// Every column lets go of the current row group's bytes.
    fn release(&mut self) {
        for slot in [
            &mut self.venue,
            &mut self.symbol,
            &mut self.trade_id,
            &mut self.gap_reason,
            &mut self.gap_publisher,
        ] {
            slot.release();
        }
        for slot in [
            &mut self.ts_recv,
            &mut self.ts_event,
            &mut self.venue_seq,
            &mut self.prev_venue_seq,
            &mut self.pub_seq,
            &mut self.price,
            &mut self.size,
            &mut self.gap_missing,
        ] {
            slot.release();
        }
        for slot in [&mut self.price_scale, &mut self.size_scale, &mut self.flags] {
            slot.release();
        }
        self.kind.release();
        self.side.release();
    }

    /// Column names in the order of the fields (and of [`Columns::open_group`]).
    fn names(&self) -> [&'static str; 18] {
        [
            self.ts_recv.name,
            self.ts_event.name,
            self.venue.name,
            self.symbol.name,
            self.kind.name,
            self.venue_seq.name,
            self.prev_venue_seq.name,
            self.pub_seq.name,
            self.side.name,
            self.price.name,
            self.price_scale.name,
            self.size.name,
            self.size_scale.name,
            self.flags.name,
            self.trade_id.name,
            self.gap_reason.name,
            self.gap_missing.name,
            self.gap_publisher.name,
        ]
    }

    /// Decodes the next batch of at most `max` rows of the row group; 0 when it is done.
    pub fn read(&mut self, max: usize) -> Result<usize> {
        let rows = self.left.min(max);
        if rows == 0 {
            return Ok(0);
        }
        self.ts_recv.read(rows, i64::default)?;
        self.ts_event.read(rows, i64::default)?;
        self.venue.read(rows, empty_text)?;
        self.symbol.read(rows, empty_text)?;
        self.kind.read(rows)?;
        self.venue_seq.read(rows, i64::default)?;
        self.prev_venue_seq.read(rows, i64::default)?;
        self.pub_seq.read(rows, i64::default)?;
        self.side.read(rows)?;
        self.price.read(rows, i64::default)?;
        self.price_scale.read(rows, i32::default)?;
        self.size.read(rows, i64::default)?;
        self.size_scale.read(rows, i32::default)?;
        self.flags.read(rows, i32::default)?;
        self.trade_id.read(rows, empty_text)?;
        self.gap_reason.read(rows, empty_text)?;
        self.gap_missing.read(rows, i64::default)?;
        self.gap_publisher.read(rows, empty_text)?;
        self.left -= rows;
        Ok(rows)
    }

    /// The values of the last batch.
    pub fn batch(&self) -> Batch<'_> {
        Batch {
            ts_recv: &self.ts_recv.out,
            ts_event: &self.ts_event.out,
            venue: &self.venue.out,
            symbol: &self.symbol.out,
            kind: &self.kind,
            venue_seq: &self.venue_seq.out,
            prev_venue_seq: &self.prev_venue_seq.out,
            pub_seq: &self.pub_seq.out,
            side: &self.side,
            price: &self.price.out,
            price_scale: &self.price_scale.out,
            size: &self.size.out,
            size_scale: &self.size_scale.out,
            flags: &self.flags.out,
            trade_id: &self.trade_id.out,
            gap_reason: &self.gap_reason.out,
            gap_missing: &self.gap_missing.out,
            gap_publisher: &self.gap_publisher.out,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{ArrayRef, Int32Array, Int64Array, RecordBatch};
    use arrow_schema::{Field, Schema};
    use parquet::arrow::ArrowWriter;
    use parquet::basic::Compression;
    use parquet::file::metadata::ParquetMetaDataReader;
    use parquet::file::properties::{WriterProperties, WriterVersion};

    #[test]
    fn levels_that_do_not_account_for_the_values_are_refused() {
        assert!(check_levels(&[1, 0, 1], 1, 3, 2).is_ok());
        assert!(check_levels(&[], 0, 0, 0).is_ok());
        let err = |levels: &[i16], rows, values| {
            check_levels(levels, 1, rows, values)
                .unwrap_err()
                .to_string()
        };
        assert!(err(&[1, 2, 0], 3, 1).contains("level 2 outside 0..=1"));
        assert!(err(&[1, -1, 0], 3, 1).contains("level -1"));
        assert!(err(&[1, 0], 3, 1).contains("2 definition levels for 3 rows"));
        assert!(err(&[1, 1, 0], 3, 1).contains("2 rows hold a value"));
        assert!(err(&[1, 0, 0], 3, 2).contains("the page gives 2"));
    }

    /// `column` written by the crate's writer with `props`, read back by [`Direct`] in
    /// batches of `batch` rows: each row's value, `None` for a null.
    fn direct_round_trip<T: Native>(
        column: ArrayRef,
        props: WriterProperties,
        batch: usize,
    ) -> Vec<Option<T::T>>
    where
        T::T: Clone,
    {
        let schema = Arc::new(Schema::new(vec![Field::new(
            "v",
            column.data_type().clone(),
            true,
        )]));
        let mut file = Vec::new();
        let mut writer = ArrowWriter::try_new(&mut file, schema.clone(), Some(props)).unwrap();
        writer
            .write(&RecordBatch::try_new(schema, vec![column]).unwrap())
            .unwrap();
        writer.close().unwrap();
        let bytes = Bytes::from(file);
        let meta = ParquetMetaDataReader::new()
            .parse_and_finish(&bytes)
            .unwrap();
        let mut footer = super::super::footer::Footer::default();
        footer.read_bytes(&bytes).unwrap();
        let group = GroupBytes { start: 0, bytes };
        let mut direct = Direct::<T>::default();
        let mut out = Values::<T::T> {
            max_def: 1,
            ..Values::default()
        };
        let mut rows = Vec::new();
        for (g, rg) in meta.row_groups().iter().enumerate() {
            let chunk = footer.group(g).unwrap().chunk(0).unwrap();
            assert!(
                Direct::<T>::decodes(chunk),
                "{:?}",
                chunk.encodings().collect::<Vec<_>>()
            );
            direct.open(&group, chunk).unwrap();
            let mut left = rg.num_rows() as usize;
            while left > 0 {
                let n = left.min(batch);
                out.values.clear();
                out.levels.clear();
                direct.read(n, &mut out).unwrap();
                let mut values = out.values.iter();
                if out.levels.is_empty() {
                    // Levels are left out when every row holds a value.
                    assert_eq!(out.values.len(), n);
                    rows.extend(values.by_ref().map(|v| Some(v.clone())));
                } else {
                    assert_eq!(out.levels.len(), n);
                    rows.extend(
                        out.levels
                            .iter()
                            .map(|&l| (l == 1).then(|| values.next().unwrap().clone())),
                    );
                }
                assert!(values.next().is_none());
                left -= n;
            }
            assert!(
                direct.read(1, &mut out).is_err(),
                "a row past the chunk's end"
            );
        }
        rows
    }

    #[test]
    fn integer_pages_the_crate_writes_are_decoded_here_in_every_layout() {
        let wide: Vec<Option<i64>> = (0..30_000i64)
            .map(|i| match i % 11 {
                0 => None,
                1 => Some(i64::MIN + i),
                2 => Some(i64::MAX - i),
                _ => Some(1_700_000_000_000_000_000 + i * 1_000_003 - (i % 7) * 91),
            })
            .collect();
        let repeating: Vec<Option<i64>> = (0..30_000i64)
            .map(|i| (i % 5 != 0).then_some((i / 3) % 700 - 350))
            .collect();
        let sparse: Vec<Option<i64>> = (0..30_000i64)
            .map(|i| (i % 2_500 != 1_234).then_some(i * 3))
            .collect();
        let narrow: Vec<Option<i32>> = (0..20_000i32)
            .map(|i| match i % 9 {
                0 => None,
                1 => Some(i32::MIN),
                2 => Some(i32::MAX),
                _ => Some(i.wrapping_mul(2_654_435)),
            })
            .collect();
        let zstd = Compression::ZSTD(Default::default());
        let layouts = [
            (
                WriterVersion::PARQUET_1_0,
                zstd,
                false,
                Encoding::DELTA_BINARY_PACKED,
            ),
            (
                WriterVersion::PARQUET_2_0,
                zstd,
                false,
                Encoding::DELTA_BINARY_PACKED,
            ),
            (
                WriterVersion::PARQUET_2_0,
                Compression::UNCOMPRESSED,
                false,
                Encoding::DELTA_BINARY_PACKED,
            ),
            (
                WriterVersion::PARQUET_1_0,
                Compression::UNCOMPRESSED,
                false,
                Encoding::PLAIN,
            ),
            (WriterVersion::PARQUET_1_0, zstd, true, Encoding::PLAIN),
            (WriterVersion::PARQUET_2_0, zstd, true, Encoding::PLAIN),
        ];
        for (version, codec, dictionary, encoding) in layouts {
            let props = || {
                let mut b = WriterProperties::builder()
                    .set_writer_version(version)
                    .set_compression(codec)
                    .set_dictionary_enabled(dictionary)
                    // Many pages, row groups, and a dictionary that overflows to plain.
                    .set_data_page_row_count_limit(1_000)
                    .set_write_batch_size(1_000)
                    .set_max_row_group_row_count(Some(12_000))
                    .set_dictionary_page_size_limit(2_000);
                if !dictionary {
                    b = b.set_encoding(encoding);
                }
                b.build()
            };
            let layout = format!("{version:?} {codec:?} dictionary {dictionary} {encoding:?}");
            for batch in [1, 333, 4_096] {
                let got = direct_round_trip::<Int64Type>(
                    Arc::new(Int64Array::from(wide.clone())),
                    props(),
                    batch,
                );
                assert!(got == wide, "{layout}, batches of {batch}");
            }
            let got = direct_round_trip::<Int64Type>(
                Arc::new(Int64Array::from(repeating.clone())),
                props(),
                4_096,
            );
            assert!(got == repeating, "{layout}, repeating values");
            // Rare nulls: pages without one (levels passed over) before pages with one.
            let got = direct_round_trip::<Int64Type>(
                Arc::new(Int64Array::from(sparse.clone())),
                props(),
                4_096,
            );
            assert!(got == sparse, "{layout}, rare nulls");
            let got = direct_round_trip::<Int32Type>(
                Arc::new(Int32Array::from(narrow.clone())),
                props(),
                777,
            );
            assert!(got == narrow, "{layout}, 32-bit values");
        }
    }

    #[test]
    fn values_of_a_nullable_column_move_to_their_rows() {
        let mut values = vec![1, 2, 3];
        spread(&mut values, &[0, 1, 1, 0, 1, 0], 1, || -1);
        assert_eq!(values, [-1, 1, 2, -1, 3, -1]);
        let mut none: Vec<i32> = Vec::new();
        spread(&mut none, &[0, 0], 1, || 7);
        assert_eq!(none, [7, 7]);
    }
}
