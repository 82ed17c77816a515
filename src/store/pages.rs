//! A column chunk's pages, read without allocating: the page headers parsed here
//! (Thrift compact protocol, parquet-format `parquet.thrift` `PageHeader`), each page's
//! checksum checked when the writer stored one, and a compressed page decompressed into a
//! buffer this reader keeps, with one zstd context for every chunk it reads.
//!
//! The parquet crate's page reader allocates a buffer for every page it decompresses and
//! a zstd context and reader for every column chunk: about 40 allocations a row group on
//! the Binance USD-M capture, when nothing else in the backtest's steady state allocates.
//! A page is handed out as [`Page`] (the crate's type); its bytes share one of the
//! reader's buffers, which is taken back (not allocated again) once the page is dropped.
//! Data pages take turns between two buffers, so a batch of values that still holds the
//! previous page's texts does not keep the next page from reusing a buffer; a dictionary
//! page, held for its whole chunk, has a buffer of its own.

use anyhow::{Context, Result, bail, ensure};
use bytes::{Bytes, BytesMut};
use parquet::basic::{Compression, Encoding};
use parquet::column::page::Page;

use super::decode::put_uleb128;
use super::thrift::{Compact, kind};

/// Reads the pages of one column chunk at a time, keeping its buffers from chunk to chunk.
#[derive(Default)]
pub struct Pages {
    /// The chunk's bytes (page headers and pages) not read yet.
    chunk: Bytes,
    /// True when the chunk's pages are zstd-compressed (otherwise stored as they are).
    zstd: bool,
    /// Kept from chunk to chunk: the decompression context and the page buffers.
    context: Option<zstd::bulk::Decompressor<'static>>,
    data: [BytesMut; 2],
    /// The buffer of `data` the next data page goes to.
    turn: usize,
    dictionary: BytesMut,
}

/// Which of a reader's buffers a page is decompressed into.
#[derive(Clone, Copy)]
enum Buffer {
    Data,
    Dictionary,
}

/// True when [`Pages`] reads chunks compressed with `codec`.
pub fn handles(codec: Compression) -> bool {
    matches!(codec, Compression::UNCOMPRESSED | Compression::ZSTD(_))
}

impl Pages {
    /// Starts on a new column chunk: `bytes` holds its pages (from its first page, the
    /// dictionary page when it has one, to its end).
    pub fn open(&mut self, bytes: Bytes, codec: Compression) -> Result<()> {
        ensure!(
            handles(codec),
            "column chunk compressed with {codec:?}, which this reader does not read"
        );
        self.chunk = bytes;
        self.zstd = matches!(codec, Compression::ZSTD(_));
        if self.zstd && self.context.is_none() {
            self.context =
                Some(zstd::bulk::Decompressor::new().context("cannot start a zstd decoder")?);
        }
        Ok(())
    }

    /// Stops reading the current chunk (its bytes are let go).
    pub fn close(&mut self) {
        self.chunk = Bytes::new();
    }

    /// The chunk's next page; `None` after the last one. Index pages are passed over.
    pub fn next_page(&mut self) -> Result<Option<Page>> {
        loop {
            if self.chunk.is_empty() {
                return Ok(None);
            }
            let (header, used) = PageHeader::parse(&self.chunk)?;
            let size = usize::try_from(header.compressed_size)
                .ok()
                .filter(|&s| used.checked_add(s).is_some_and(|e| e <= self.chunk.len()))
                .with_context(|| {
                    format!(
                        "a page of {} bytes runs past the end of its column chunk ({} bytes \
                         left): the file is truncated or damaged",
                        header.compressed_size,
                        self.chunk.len().saturating_sub(used)
                    )
                })?;
            let stored = self.chunk.slice(used..used + size);
            self.chunk = self.chunk.slice(used + size..);
            if let Some(crc) = header.crc {
                let computed = crc32fast::hash(&stored);
                ensure!(
                    computed == crc as u32,
                    "page CRC checksum mismatch (stored {:08x}, computed {computed:08x}): the file \
                     is damaged",
                    crc as u32
                );
            }
            let uncompressed = usize::try_from(header.uncompressed_size)
                .context("a page declares a negative size")?;
            return Ok(Some(match header.body {
                Body::Index => continue,
                Body::Dictionary {
                    values,
                    encoding,
                    sorted,
                } => Page::DictionaryPage {
                    buf: self.expand(Buffer::Dictionary, stored, 0, uncompressed)?,
                    num_values: values,
                    encoding,
                    is_sorted: sorted,
                },
                Body::V1 {
                    values,
                    encoding,
                    def,
                    rep,
                } => Page::DataPage {
                    buf: self.expand(Buffer::Data, stored, 0, uncompressed)?,
                    num_values: values,
                    encoding,
                    def_level_encoding: def,
                    rep_level_encoding: rep,
                    statistics: None,
                },
                Body::V2 {
                    values,
                    nulls,
                    rows,
                    encoding,
                    def_len,
                    rep_len,
                    compressed,
                } => {
                    let levels = (def_len as usize).saturating_add(rep_len as usize);
                    ensure!(
                        levels <= stored.len() && levels <= uncompressed,
                        "a page's levels ({levels} bytes) run past its end ({} bytes)",
                        stored.len()
                    );
                    let buf = if compressed {
                        self.expand(Buffer::Data, stored, levels, uncompressed)?
                    } else {
                        stored
                    };
                    Page::DataPageV2 {
                        buf,
                        num_values: values,
                        encoding,
                        num_nulls: nulls,
                        num_rows: rows,
                        def_levels_byte_len: def_len,
                        rep_levels_byte_len: rep_len,
                        is_compressed: compressed,
                        statistics: None,
                    }
                }
            }));
        }
    }

    /// A page's bytes as decoders read them: `stored` itself when the chunk is not
    /// compressed; otherwise its first `plain` bytes (a v2 page's levels) followed by the
    /// rest decompressed, `size` bytes in all, in one of the reader's buffers.
    fn expand(&mut self, which: Buffer, stored: Bytes, plain: usize, size: usize) -> Result<Bytes> {
        if !self.zstd {
            return Ok(stored);
        }
        let context = self.context.as_mut().context("zstd decoder missing")?;
        let buffer = match which {
            Buffer::Dictionary => &mut self.dictionary,
            Buffer::Data => {
                self.turn ^= 1;
                &mut self.data[self.turn]
            }
        };
        // The page that last used this buffer is dropped by now: its allocation comes
        // back without copying (a new one is made when something still holds it).
        buffer.clear();
        buffer.reserve(size);
        buffer.extend_from_slice(&stored[..plain]);
        let mut spare = Spare(buffer);
        let written = context
            .decompress_to_buffer(&stored[plain..], &mut spare)
            .context("cannot decompress a zstd page: the file is damaged")?;
        ensure!(
            plain + written == size,
            "a page decompressed to {} bytes where its header says {size}: the file is damaged",
            plain + written
        );
        Ok(buffer.split().freeze())
    }
}

/// The unused part of a buffer, written by zstd without being zeroed first.
struct Spare<'a>(&'a mut BytesMut);

// SAFETY: the destination zstd writes is the buffer's spare capacity, from its current
// end; `filled_until` only extends the length over bytes zstd wrote.
unsafe impl zstd::zstd_safe::WriteBuf for Spare<'_> {
    fn as_slice(&self) -> &[u8] {
        &[]
    }

    fn capacity(&self) -> usize {
        self.0.capacity() - self.0.len()
    }

    fn as_mut_ptr(&mut self) -> *mut u8 {
        self.0.spare_capacity_mut().as_mut_ptr().cast()
    }

    unsafe fn filled_until(&mut self, n: usize) {
        let len = self.0.len() + n;
        // SAFETY: zstd initialised the `n` bytes after the current length.
        unsafe { self.0.set_len(len) }
    }
}

/// What follows a page header.
#[derive(Debug, PartialEq)]
enum Body {
    Dictionary {
        values: u32,
        encoding: Encoding,
        sorted: bool,
    },
    V1 {
        values: u32,
        encoding: Encoding,
        def: Encoding,
        rep: Encoding,
    },
    V2 {
        values: u32,
        nulls: u32,
        rows: u32,
        encoding: Encoding,
        def_len: u32,
        rep_len: u32,
        compressed: bool,
    },
    Index,
}

/// The fields of a `PageHeader` a reader needs.
#[derive(Debug, PartialEq)]
struct PageHeader {
    uncompressed_size: i32,
    compressed_size: i32,
    crc: Option<i32>,
    body: Body,
}

/// The page types of `parquet.thrift`.
const DATA_PAGE: i32 = 0;
const INDEX_PAGE: i32 = 1;
const DICTIONARY_PAGE: i32 = 2;
const DATA_PAGE_V2: i32 = 3;

impl PageHeader {
    /// The header at the start of `data`, and its length in bytes.
    fn parse(data: &[u8]) -> Result<(PageHeader, usize)> {
        let mut c = Compact::new(data, "a page header");
        let (mut page_type, mut uncompressed, mut compressed, mut crc) = (None, None, None, None);
        let (mut v1, mut dictionary, mut v2) = (None, None, None);
        let mut last = 0;
        while let Some(ty) = c.field(&mut last)? {
            match (last, ty) {
                (1, kind::I32) => page_type = Some(c.i32()?),
                (2, kind::I32) => uncompressed = Some(c.i32()?),
                (3, kind::I32) => compressed = Some(c.i32()?),
                (4, kind::I32) => crc = Some(c.i32()?),
                (5, kind::STRUCT) => v1 = Some(Self::v1(&mut c)?),
                (7, kind::STRUCT) => dictionary = Some(Self::dictionary(&mut c)?),
                (8, kind::STRUCT) => v2 = Some(Self::v2(&mut c)?),
                (_, ty) => c.skip(ty, 0)?,
            }
        }
        let (Some(page_type), Some(uncompressed_size), Some(compressed_size)) =
            (page_type, uncompressed, compressed)
        else {
            bail!("a page header lacks its type or sizes: the file is damaged");
        };
        let body = match (page_type, v1, dictionary, v2) {
            (DATA_PAGE, Some(b), _, _) | (DICTIONARY_PAGE, _, Some(b), _) => b,
            (DATA_PAGE_V2, _, _, Some(b)) => b,
            (INDEX_PAGE, ..) => Body::Index,
            (other, ..) => bail!(
                "a page of type {other} without the header that type needs: the file is damaged"
            ),
        };
        let header = PageHeader {
            uncompressed_size,
            compressed_size,
            crc,
            body,
        };
        Ok((header, c.pos))
    }

    fn v1(c: &mut Compact<'_>) -> Result<Body> {
        let (mut values, mut encoding, mut def, mut rep) = (None, None, None, None);
        let mut last = 0;
        while let Some(ty) = c.field(&mut last)? {
            match (last, ty) {
                (1, kind::I32) => values = Some(c.i32()?),
                (2, kind::I32) => encoding = Some(c.encoding()?),
                (3, kind::I32) => def = Some(c.encoding()?),
                (4, kind::I32) => rep = Some(c.encoding()?),
                (_, ty) => c.skip(ty, 1)?,
            }
        }
        match (values, encoding, def, rep) {
            (Some(values), Some(encoding), Some(def), Some(rep)) => Ok(Body::V1 {
                values: count(values)?,
                encoding,
                def,
                rep,
            }),
            _ => bail!("a data page header lacks a required field: the file is damaged"),
        }
    }

    fn dictionary(c: &mut Compact<'_>) -> Result<Body> {
        let (mut values, mut encoding, mut sorted) = (None, None, false);
        let mut last = 0;
        while let Some(ty) = c.field(&mut last)? {
            match (last, ty) {
                (1, kind::I32) => values = Some(c.i32()?),
                (2, kind::I32) => encoding = Some(c.encoding()?),
                (3, kind::TRUE | kind::FALSE) => sorted = Compact::boolean(ty)?,
                (_, ty) => c.skip(ty, 1)?,
            }
        }
        match (values, encoding) {
            (Some(values), Some(encoding)) => Ok(Body::Dictionary {
                values: count(values)?,
                encoding,
                sorted,
            }),
            _ => bail!("a dictionary page header lacks a required field: the file is damaged"),
        }
    }

    fn v2(c: &mut Compact<'_>) -> Result<Body> {
        let mut f: [Option<i32>; 6] = [None; 6];
        let mut encoding = None;
        let mut compressed = true;
        let mut last = 0;
        while let Some(ty) = c.field(&mut last)? {
            match (last, ty) {
                (4, kind::I32) => encoding = Some(c.encoding()?),
                (1..=6, kind::I32) => f[(last - 1) as usize] = Some(c.i32()?),
                (7, kind::TRUE | kind::FALSE) => compressed = Compact::boolean(ty)?,
                (_, ty) => c.skip(ty, 1)?,
            }
        }
        match (f, encoding) {
            (
                [
                    Some(values),
                    Some(nulls),
                    Some(rows),
                    _,
                    Some(def),
                    Some(rep),
                ],
                Some(encoding),
            ) => Ok(Body::V2 {
                values: count(values)?,
                nulls: count(nulls)?,
                rows: count(rows)?,
                encoding,
                def_len: count(def)?,
                rep_len: count(rep)?,
                compressed,
            }),
            _ => bail!("a v2 data page header lacks a required field: the file is damaged"),
        }
    }
}

/// Appends the header of a v1 data page holding `values` plain-encoded values (nulls
/// included) whose definition and repetition levels, if any, are RLE: the header
/// [`PageHeader::parse`] reads back, for the run files' writer (`super::table`).
pub fn write_v1_header(
    out: &mut Vec<u8>,
    uncompressed: i32,
    compressed: i32,
    crc: u32,
    values: i32,
) {
    fn i32_field(out: &mut Vec<u8>, v: i32) {
        // Each field follows the previous one (id delta 1), type i32, zigzag varint.
        out.push((1 << 4) | kind::I32);
        put_uleb128(out, u64::from(((v << 1) ^ (v >> 31)) as u32));
    }
    i32_field(out, DATA_PAGE);
    i32_field(out, uncompressed);
    i32_field(out, compressed);
    // The checksum is the CRC-32's 32 bits stored as Thrift's signed i32.
    i32_field(out, crc as i32);
    out.push((1 << 4) | kind::STRUCT);
    i32_field(out, values);
    // Values PLAIN (0), definition and repetition levels RLE (3): parquet.thrift codes.
    for encoding in [0, 3, 3] {
        i32_field(out, encoding);
    }
    out.push(kind::STOP);
    out.push(kind::STOP);
}

/// A count or length from a header, refused when negative.
fn count(v: i32) -> Result<u32> {
    u32::try_from(v).map_err(|_| anyhow::anyhow!("a page header holds a negative count ({v})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A compact-protocol field header for a field `delta` after the previous one.
    fn field(delta: u8, ty: u8) -> u8 {
        (delta << 4) | ty
    }

    fn zigzag(v: i64) -> Vec<u8> {
        let mut z = ((v << 1) ^ (v >> 63)) as u64;
        let mut out = Vec::new();
        loop {
            let b = (z & 0x7f) as u8;
            z >>= 7;
            if z == 0 {
                out.push(b);
                return out;
            }
            out.push(b | 0x80);
        }
    }

    #[test]
    fn a_v1_header_with_statistics_and_an_unknown_field_parses() {
        let mut h = vec![field(1, kind::I32)];
        h.extend(zigzag(DATA_PAGE as i64));
        h.push(field(1, kind::I32));
        h.extend(zigzag(1_000));
        h.push(field(1, kind::I32));
        h.extend(zigzag(400));
        h.push(field(1, kind::I32));
        h.extend(zigzag(-5));
        h.push(field(1, kind::STRUCT));
        for (v, delta) in [(20_000i64, 1u8), (8, 1), (3, 1), (3, 1)] {
            h.push(field(delta, kind::I32));
            h.extend(zigzag(v));
        }
        // Statistics: a struct holding a binary and a list of i64.
        h.push(field(1, kind::STRUCT));
        h.push(field(1, kind::BINARY));
        h.extend([3, b'a', b'b', b'c']);
        h.push(field(1, kind::LIST));
        h.push((2 << 4) | kind::I64);
        h.extend(zigzag(7));
        h.extend(zigzag(-7));
        h.push(kind::STOP);
        h.push(kind::STOP);
        // An unknown field with a long id (delta 0, then its id).
        h.push(kind::DOUBLE);
        h.extend(zigzag(40));
        h.extend([0; 8]);
        h.push(kind::STOP);
        h.extend([0xAA; 3]); // the page itself
        let (header, used) = PageHeader::parse(&h).unwrap();
        assert_eq!(used, h.len() - 3);
        assert_eq!(
            header,
            PageHeader {
                uncompressed_size: 1_000,
                compressed_size: 400,
                crc: Some(-5),
                body: Body::V1 {
                    values: 20_000,
                    encoding: Encoding::RLE_DICTIONARY,
                    def: Encoding::RLE,
                    rep: Encoding::RLE,
                },
            }
        );
    }

    #[test]
    fn a_written_v1_header_reads_back() {
        for (uncompressed, compressed, crc, values) in [
            (0, 0, 0u32, 0),
            (1 << 20, 77, u32::MAX, 4096),
            (63, 64, 0x8000_0000, 1),
        ] {
            let mut h = vec![];
            write_v1_header(&mut h, uncompressed, compressed, crc, values);
            h.push(0xAA); // the page itself
            let (header, used) = PageHeader::parse(&h).unwrap();
            assert_eq!(used, h.len() - 1);
            assert_eq!(
                header,
                PageHeader {
                    uncompressed_size: uncompressed,
                    compressed_size: compressed,
                    crc: Some(crc as i32),
                    body: Body::V1 {
                        values: values as u32,
                        encoding: Encoding::PLAIN,
                        def: Encoding::RLE,
                        rep: Encoding::RLE,
                    },
                }
            );
        }
    }

    #[test]
    fn a_damaged_header_is_an_error_not_a_panic() {
        let mut h = vec![field(1, kind::I32)];
        h.extend(zigzag(DATA_PAGE as i64));
        h.push(field(1, kind::I32));
        h.extend(zigzag(10));
        // Every prefix ends too early; a header without its sizes or body is refused.
        for end in 0..h.len() {
            assert!(PageHeader::parse(&h[..end]).is_err());
        }
        h.push(kind::STOP);
        assert!(PageHeader::parse(&h).is_err());
        // Structs nested without end, and an unknown type, are refused.
        let deep = vec![field(9, kind::STRUCT); 100];
        assert!(PageHeader::parse(&deep).is_err());
        assert!(PageHeader::parse(&[field(1, 13)]).is_err());
    }
}
