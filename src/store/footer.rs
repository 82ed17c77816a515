//! A Parquet file's footer, read into buffers kept from file to file: what reading its
//! row groups needs (row counts; each column chunk's codec, encodings, place and
//! statistics), parsed straight from the Thrift compact protocol.
//!
//! The parquet crate's footer decoder builds a `ParquetMetaData` of its own types: about
//! 50 allocations a row group. The reader decodes every file's footer with the crate once
//! when a dataset is opened (to select row groups by time, and to check the schema); when
//! it comes to a file, it reads the footer again here, so a backtest that opens a file
//! every quarter of an hour (a recorder's rotation) allocates nothing for it. The crate's
//! decoder is still used for a chunk this reader's decoders do not read (another codec or
//! encoding), which needs the crate's column reader.

use std::cell::RefCell;
use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail, ensure};
use parquet::basic::{BrotliLevel, Compression, Encoding, GzipLevel, ZstdLevel};
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use parquet::schema::types::SchemaDescriptor;

use super::thrift::{Compact, encoding_of, kind};

/// Bounds one footer's size (a damaged length must not make the reader allocate GiBs).
const MAX_FOOTER: u64 = 64 << 20;

/// What reading a file's row groups needs: the file, its schema (decoded when the dataset
/// was opened), its footer, and a place for the parquet crate's decoding of the footer,
/// made only if a chunk needs the crate's column reader.
#[derive(Clone, Copy)]
pub struct FileMeta<'a> {
    pub path: &'a Path,
    pub file: &'a File,
    pub schema: &'a SchemaDescriptor,
    pub footer: &'a Footer,
    pub crate_meta: &'a RefCell<Option<Arc<ParquetMetaData>>>,
}

impl FileMeta<'_> {
    /// The parquet crate's decoding of the footer: made on first need, then kept.
    pub fn crate_meta(&self) -> Result<Arc<ParquetMetaData>> {
        if let Some(meta) = self.crate_meta.borrow().as_ref() {
            return Ok(meta.clone());
        }
        let meta = super::reader::guarded(self.path, || {
            ParquetMetaDataReader::new().parse_and_finish(self.file)
        })?
        .with_context(|| format!("{} is not a readable Parquet file", self.path.display()))?;
        let meta = Arc::new(meta);
        *self.crate_meta.borrow_mut() = Some(meta.clone());
        Ok(meta)
    }
}

/// A footer, kept from file to file; see the module documentation.
#[derive(Default)]
pub struct Footer {
    /// The footer's bytes (statistics point into them).
    raw: Vec<u8>,
    rows: i64,
    groups: Vec<GroupInfo>,
    chunks: Vec<ChunkInfo>,
}

#[derive(Clone, Copy, Debug)]
struct GroupInfo {
    rows: i64,
    /// Its chunks: `chunks[first..first + count]`, in schema order.
    first: usize,
    count: usize,
}

/// One column chunk as the footer describes it.
#[derive(Clone, Debug, Default)]
pub struct ChunkInfo {
    codec: i32,
    /// Bit `e` set when the chunk uses encoding code `e` (parquet.thrift `Encoding`).
    encodings: u64,
    compressed: i64,
    data_page_offset: i64,
    dictionary_page_offset: Option<i64>,
    null_count: Option<i64>,
    /// Where the statistics' minimum and maximum are in the footer's bytes.
    min: Option<Range<usize>>,
    max: Option<Range<usize>>,
    min_exact: Option<bool>,
    max_exact: Option<bool>,
}

impl Footer {
    /// Reads the footer of `file` over the last one's buffers.
    pub fn read(&mut self, file: &File) -> Result<()> {
        let len = file
            .metadata()
            .context("cannot read the file's size")?
            .len();
        ensure!(len >= 12, "too short for a Parquet file ({len} bytes)");
        let mut tail = [0u8; 8];
        file.read_exact_at(&mut tail, len - 8)
            .context("cannot read the footer")?;
        let size = footer_size(tail, len)?;
        self.raw.clear();
        self.raw.resize(size as usize, 0);
        file.read_exact_at(&mut self.raw, len - 8 - size)
            .context("cannot read the footer")?;
        self.parse()
    }

    /// Reads the footer of a whole file held in memory.
    #[cfg(test)]
    pub fn read_bytes(&mut self, file: &[u8]) -> Result<()> {
        let n = file.len();
        ensure!(n >= 12, "too short for a Parquet file ({n} bytes)");
        let tail = file[n - 8..].try_into().context("a tail of 8 bytes")?;
        let size = footer_size(tail, n as u64)? as usize;
        self.raw.clear();
        self.raw.extend_from_slice(&file[n - 8 - size..n - 8]);
        self.parse()
    }

    /// Rows in the file.
    pub fn rows(&self) -> i64 {
        self.rows
    }

    /// Row groups in the file.
    pub fn groups(&self) -> usize {
        self.groups.len()
    }

    /// Row group `g`.
    pub fn group(&self, g: usize) -> Result<FooterGroup<'_>> {
        let info = *self
            .groups
            .get(g)
            .with_context(|| format!("no row group {g} in the footer"))?;
        Ok(FooterGroup { footer: self, info })
    }

    fn parse(&mut self) -> Result<()> {
        let Footer {
            raw,
            groups,
            chunks,
            ..
        } = self;
        groups.clear();
        chunks.clear();
        let mut c = Compact::new(raw, "the footer");
        let (mut rows, mut last) = (None, 0);
        while let Some(ty) = c.field(&mut last)? {
            match (last, ty) {
                (3, kind::I64) => rows = Some(c.i64()?),
                (4, kind::LIST) => {
                    let (elem, n) = c.list()?;
                    ensure!(
                        elem == kind::STRUCT,
                        "the footer's row groups are not structs"
                    );
                    for _ in 0..n {
                        let group = row_group(&mut c, chunks)?;
                        groups.push(group);
                    }
                }
                (_, ty) => c.skip(ty, 0)?,
            }
        }
        self.rows = rows.context("the footer lacks the file's row count: the file is damaged")?;
        Ok(())
    }
}

/// The footer's size from a file's last 8 bytes (size, magic), checked against the
/// file's length `len`.
fn footer_size(tail: [u8; 8], len: u64) -> Result<u64> {
    match &tail[4..] {
        b"PAR1" => {}
        b"PARE" => bail!("an encrypted Parquet file, which ticktape does not read"),
        _ => bail!("no Parquet magic at the end: not a Parquet file, or cut short"),
    }
    let size = u64::from(u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]));
    ensure!(
        size + 12 <= len && size <= MAX_FOOTER,
        "a footer of {size} bytes in a file of {len}: the file is damaged"
    );
    Ok(size)
}

fn row_group(c: &mut Compact<'_>, chunks: &mut Vec<ChunkInfo>) -> Result<GroupInfo> {
    let first = chunks.len();
    let (mut rows, mut last) = (None, 0);
    while let Some(ty) = c.field(&mut last)? {
        match (last, ty) {
            (1, kind::LIST) => {
                let (elem, n) = c.list()?;
                ensure!(
                    elem == kind::STRUCT,
                    "a row group's columns are not structs"
                );
                for _ in 0..n {
                    chunks.push(column_chunk(c)?);
                }
            }
            (3, kind::I64) => rows = Some(c.i64()?),
            (_, ty) => c.skip(ty, 0)?,
        }
    }
    Ok(GroupInfo {
        rows: rows.context("a row group lacks its row count: the file is damaged")?,
        first,
        count: chunks.len() - first,
    })
}

fn column_chunk(c: &mut Compact<'_>) -> Result<ChunkInfo> {
    let (mut meta, mut last) = (None, 0);
    while let Some(ty) = c.field(&mut last)? {
        match (last, ty) {
            (3, kind::STRUCT) => meta = Some(column_meta(c)?),
            (_, ty) => c.skip(ty, 0)?,
        }
    }
    meta.context(
        "a column chunk without its metadata (kept in another file?), which ticktape does not read",
    )
}

fn column_meta(c: &mut Compact<'_>) -> Result<ChunkInfo> {
    let mut chunk = ChunkInfo::default();
    let (mut codec, mut compressed, mut data_page, mut last) = (None, None, None, 0);
    while let Some(ty) = c.field(&mut last)? {
        match (last, ty) {
            (2, kind::LIST) => {
                let (elem, n) = c.list()?;
                ensure!(
                    elem == kind::I32,
                    "a column chunk's encodings are not numbers"
                );
                for _ in 0..n {
                    // A code this reader does not know (negative ones too) is kept as
                    // bit 63: an encoding no decoder here reads.
                    let code = u32::try_from(c.i32()?).map_or(63, |c| c.min(63));
                    chunk.encodings |= 1u64 << code;
                }
            }
            (4, kind::I32) => codec = Some(c.i32()?),
            (7, kind::I64) => compressed = Some(c.i64()?),
            (9, kind::I64) => data_page = Some(c.i64()?),
            (11, kind::I64) => chunk.dictionary_page_offset = Some(c.i64()?),
            (12, kind::STRUCT) => statistics(c, &mut chunk)?,
            (_, ty) => c.skip(ty, 0)?,
        }
    }
    let (Some(codec), Some(compressed), Some(data_page)) = (codec, compressed, data_page) else {
        bail!("a column chunk lacks its codec, size or first page: the file is damaged");
    };
    chunk.codec = codec;
    chunk.compressed = compressed;
    chunk.data_page_offset = data_page;
    Ok(chunk)
}

/// A chunk's statistics, as the parquet crate reads them: `min_value`/`max_value` when
/// either is written, else the deprecated `min`/`max`.
fn statistics(c: &mut Compact<'_>, chunk: &mut ChunkInfo) -> Result<()> {
    let (mut min, mut max, mut min_value, mut max_value, mut last) = (None, None, None, None, 0);
    while let Some(ty) = c.field(&mut last)? {
        match (last, ty) {
            (1, kind::BINARY) => max = Some(c.binary()?),
            (2, kind::BINARY) => min = Some(c.binary()?),
            (3, kind::I64) => chunk.null_count = Some(c.i64()?),
            (5, kind::BINARY) => max_value = Some(c.binary()?),
            (6, kind::BINARY) => min_value = Some(c.binary()?),
            (7, kind::TRUE | kind::FALSE) => chunk.max_exact = Some(Compact::boolean(ty)?),
            (8, kind::TRUE | kind::FALSE) => chunk.min_exact = Some(Compact::boolean(ty)?),
            (_, ty) => c.skip(ty, 0)?,
        }
    }
    if min_value.is_none() && max_value.is_none() {
        (chunk.min, chunk.max) = (min, max);
    } else {
        (chunk.min, chunk.max) = (min_value, max_value);
    }
    Ok(())
}

/// A row group of a [`Footer`].
#[derive(Clone, Copy)]
pub struct FooterGroup<'a> {
    footer: &'a Footer,
    info: GroupInfo,
}

impl<'a> FooterGroup<'a> {
    /// Rows in the group.
    pub fn rows(&self) -> i64 {
        self.info.rows
    }

    /// Column chunks in the group.
    pub fn columns(&self) -> usize {
        self.info.count
    }

    /// The chunk of leaf column `c`.
    pub fn chunk(&self, c: usize) -> Result<&'a ChunkInfo> {
        ensure!(
            c < self.info.count,
            "a row group without column {c}: the file is damaged"
        );
        Ok(&self.footer.chunks[self.info.first + c])
    }

    /// The statistics of column `c`: minimum and maximum as stored (PLAIN, without a
    /// length for text), and the null count.
    pub fn statistics(&self, c: usize) -> Option<Statistics<'a>> {
        let chunk = self.chunk(c).ok()?;
        let raw = &self.footer.raw;
        Some(Statistics {
            min: chunk.min.clone().and_then(|r| raw.get(r)),
            max: chunk.max.clone().and_then(|r| raw.get(r)),
            null_count: chunk.null_count.and_then(|n| u64::try_from(n).ok()),
            min_exact: chunk.min_exact,
            max_exact: chunk.max_exact,
        })
    }
}

/// A column chunk's statistics; see [`FooterGroup::statistics`].
#[derive(Clone, Copy, Debug)]
pub struct Statistics<'a> {
    pub min: Option<&'a [u8]>,
    pub max: Option<&'a [u8]>,
    pub null_count: Option<u64>,
    /// The writer's word that the bounds are the exact minimum and maximum (absent from
    /// older files).
    pub min_exact: Option<bool>,
    pub max_exact: Option<bool>,
}

impl ChunkInfo {
    /// The chunk's codec (levels at their defaults: they do not matter to a reader; an
    /// unknown code reads as LZ4_RAW, which this reader leaves to the crate's, which
    /// refuses it).
    pub fn compression(&self) -> Compression {
        match self.codec {
            0 => Compression::UNCOMPRESSED,
            1 => Compression::SNAPPY,
            2 => Compression::GZIP(GzipLevel::default()),
            3 => Compression::LZO,
            4 => Compression::BROTLI(BrotliLevel::default()),
            5 => Compression::LZ4,
            6 => Compression::ZSTD(ZstdLevel::default()),
            _ => Compression::LZ4_RAW,
        }
    }

    /// The encodings the chunk uses.
    pub fn encodings(&self) -> impl Iterator<Item = Encoding> + '_ {
        (0..64)
            .filter(|e| self.encodings & (1 << e) != 0)
            // An unknown code stands as an encoding no decoder here reads.
            .map(|e| encoding_of(e).unwrap_or(Encoding::BYTE_STREAM_SPLIT))
    }

    /// Where the chunk's pages are in the file (its dictionary page first, if any):
    /// start and length.
    pub fn byte_range(&self) -> Result<(u64, u64)> {
        let start = self.dictionary_page_offset.unwrap_or(self.data_page_offset);
        match (u64::try_from(start), u64::try_from(self.compressed)) {
            (Ok(start), Ok(len)) => Ok((start, len)),
            _ => bail!(
                "a column chunk at a negative offset or of negative size: the file is damaged"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::table::{PageBuffers, TableWriter};
    use arrow_schema::{DataType, Field, Schema};
    use parquet::arrow::ArrowWriter;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use parquet::file::properties::{EnabledStatistics, WriterProperties};
    use std::sync::Arc;

    /// Every field the reader uses agrees with the parquet crate's decoding of the same
    /// footer, for files of several writers and settings.
    fn agrees_with_the_crate(path: &std::path::Path) {
        let file = File::open(path).unwrap();
        let meta = ParquetRecordBatchReaderBuilder::try_new(file.try_clone().unwrap())
            .unwrap()
            .metadata()
            .clone();
        let mut footer = Footer::default();
        // Twice over the same buffers: the second read starts from the first's.
        for _ in 0..2 {
            footer.read(&file).unwrap();
            assert_eq!(footer.rows(), meta.file_metadata().num_rows());
            assert_eq!(footer.groups(), meta.num_row_groups());
            for (g, rg) in meta.row_groups().iter().enumerate() {
                let group = footer.group(g).unwrap();
                assert_eq!(group.rows(), rg.num_rows());
                assert_eq!(group.columns(), rg.num_columns());
                for (c, col) in rg.columns().iter().enumerate() {
                    let chunk = group.chunk(c).unwrap();
                    assert_eq!(chunk.byte_range().unwrap(), col.byte_range());
                    assert_eq!(
                        std::mem::discriminant(&chunk.compression()),
                        std::mem::discriminant(&col.compression())
                    );
                    let mut ours: Vec<_> = chunk.encodings().collect();
                    let mut theirs: Vec<_> = col.encodings().collect();
                    ours.sort_by_key(|e| *e as i32);
                    theirs.sort_by_key(|e| *e as i32);
                    assert_eq!(ours, theirs, "column {c}");
                    let stats = group.statistics(c).unwrap();
                    match col.statistics() {
                        None => assert!(stats.min.is_none() && stats.null_count.is_none()),
                        Some(s) => {
                            assert_eq!(stats.null_count, s.null_count_opt(), "column {c}");
                            assert_eq!(stats.min, s.min_bytes_opt(), "column {c}");
                            assert_eq!(stats.max, s.max_bytes_opt(), "column {c}");
                        }
                    }
                }
            }
        }
    }

    fn batch(rows: usize) -> arrow_array::RecordBatch {
        use arrow_array::{Int64Array, StringArray};
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int64, false),
            Field::new("b", DataType::Utf8, true),
        ]));
        let a = Int64Array::from_iter_values((0..rows as i64).map(|i| i * 7 - 100));
        let b =
            StringArray::from_iter((0..rows).map(|i| (i % 3 != 0).then(|| format!("v{}", i % 5))));
        arrow_array::RecordBatch::try_new(schema, vec![Arc::new(a), Arc::new(b)]).unwrap()
    }

    #[test]
    fn footers_read_here_agree_with_the_parquet_crate() {
        let dir = tempfile::tempdir().unwrap();
        for (i, (stats, dictionary, group_rows)) in [
            (EnabledStatistics::Chunk, true, 1000),
            (EnabledStatistics::Page, false, 333),
            (EnabledStatistics::None, true, 5000),
        ]
        .into_iter()
        .enumerate()
        {
            let path = dir.path().join(format!("{i}.parquet"));
            let b = batch(2500);
            let props = WriterProperties::builder()
                .set_statistics_enabled(stats)
                .set_dictionary_enabled(dictionary)
                .set_max_row_group_row_count(Some(group_rows))
                .build();
            let mut w = ArrowWriter::try_new(File::create(&path).unwrap(), b.schema(), Some(props))
                .unwrap();
            w.write(&b).unwrap();
            w.close().unwrap();
            agrees_with_the_crate(&path);
        }
        // ticktape's own run-file writer too.
        let path = dir.path().join("table.parquet");
        let b = batch(10);
        let mut t = TableWriter::create(&path, b.schema(), vec![]).unwrap();
        let mut buffers = PageBuffers::new().unwrap();
        let mut g = t.group(&mut buffers, 10);
        g.ints((0..10).map(|i| i * 3)).unwrap();
        g.displayed((0..10).map(|i| (i % 2 == 0).then_some(i)))
            .unwrap();
        g.end().unwrap();
        t.finish().unwrap();
        agrees_with_the_crate(&path);
    }

    #[test]
    fn a_damaged_footer_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.parquet");
        let b = batch(100);
        let mut w = ArrowWriter::try_new(File::create(&path).unwrap(), b.schema(), None).unwrap();
        w.write(&b).unwrap();
        w.close().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let size = u32::from_le_bytes(bytes[bytes.len() - 8..bytes.len() - 4].try_into().unwrap());
        let start = bytes.len() - 8 - size as usize;
        let mut footer = Footer::default();
        // Every footer cut short, and every byte of it flipped, is refused or read; never
        // a panic.
        for cut in 0..size as usize {
            let mut damaged = bytes[..start + cut].to_vec();
            damaged.extend_from_slice(&(cut as u32).to_le_bytes());
            damaged.extend_from_slice(b"PAR1");
            std::fs::write(&path, &damaged).unwrap();
            let _ = footer.read(&File::open(&path).unwrap());
        }
        for i in start..start + size as usize {
            let mut damaged = bytes.clone();
            damaged[i] ^= 0xff;
            std::fs::write(&path, &damaged).unwrap();
            let _ = footer.read(&File::open(&path).unwrap());
        }
        let mut wrong = bytes.clone();
        let n = wrong.len();
        wrong[n - 8..n - 4].copy_from_slice(&u32::MAX.to_le_bytes());
        std::fs::write(&path, &wrong).unwrap();
        let e = footer.read(&File::open(&path).unwrap()).unwrap_err();
        assert!(e.to_string().contains("damaged"), "{e}");
        wrong[n - 4..].copy_from_slice(b"PARE");
        std::fs::write(&path, &wrong).unwrap();
        let e = footer.read(&File::open(&path).unwrap()).unwrap_err();
        assert!(e.to_string().contains("encrypted"), "{e}");
    }
}
