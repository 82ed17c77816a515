//! Reading Thrift's compact protocol (`TCompactProtocol`), the encoding of Parquet's page
//! headers ([`super::pages`]) and footers ([`super::footer`]): over a byte slice, every
//! truncation and every unknown type an error, nesting bounded, nothing allocated.

use anyhow::{Context, Result, bail, ensure};
use parquet::basic::Encoding;

use super::decode::{uleb128, zigzag};

/// Thrift compact protocol field types (`TCompactProtocol`).
pub mod kind {
    pub const STOP: u8 = 0;
    pub const TRUE: u8 = 1;
    pub const FALSE: u8 = 2;
    pub const BYTE: u8 = 3;
    pub const I16: u8 = 4;
    pub const I32: u8 = 5;
    pub const I64: u8 = 6;
    pub const DOUBLE: u8 = 7;
    pub const BINARY: u8 = 8;
    pub const LIST: u8 = 9;
    pub const SET: u8 = 10;
    pub const MAP: u8 = 11;
    pub const STRUCT: u8 = 12;
}

/// Structs nested deeper than this are refused (a damaged header could nest forever).
const MAX_DEPTH: usize = 32;

/// The encoding of parquet.thrift's code `code`, if it is one.
pub fn encoding_of(code: i32) -> Option<Encoding> {
    Some(match code {
        0 => Encoding::PLAIN,
        2 => Encoding::PLAIN_DICTIONARY,
        3 => Encoding::RLE,
        #[allow(deprecated)]
        4 => Encoding::BIT_PACKED,
        5 => Encoding::DELTA_BINARY_PACKED,
        6 => Encoding::DELTA_LENGTH_BYTE_ARRAY,
        7 => Encoding::DELTA_BYTE_ARRAY,
        8 => Encoding::RLE_DICTIONARY,
        9 => Encoding::BYTE_STREAM_SPLIT,
        _ => return None,
    })
}

/// A Thrift compact-protocol input over a byte slice.
pub struct Compact<'a> {
    pub data: &'a [u8],
    pub pos: usize,
    /// What is being read, for messages: "a page header", "the footer".
    pub what: &'static str,
}

impl<'a> Compact<'a> {
    /// Reads `data` from its start.
    pub fn new(data: &'a [u8], what: &'static str) -> Compact<'a> {
        Compact { data, pos: 0, what }
    }

    pub fn byte(&mut self) -> Result<u8> {
        let Some(&b) = self.data.get(self.pos) else {
            bail!("{} runs past its end: the file is damaged", self.what);
        };
        self.pos += 1;
        Ok(b)
    }

    pub fn varint(&mut self) -> Result<u64> {
        let what = self.what;
        uleb128(self.data, &mut self.pos).with_context(|| {
            format!("{what} ends inside a number, or holds one above 64 bits: the file is damaged")
        })
    }

    pub fn zigzag(&mut self) -> Result<i64> {
        self.varint().map(zigzag)
    }

    pub fn i32(&mut self) -> Result<i32> {
        i32::try_from(self.zigzag()?)
            .map_err(|_| anyhow::anyhow!("{}'s 32-bit field is out of range", self.what))
    }

    pub fn i64(&mut self) -> Result<i64> {
        self.zigzag()
    }

    /// A binary (or string) value: where its bytes are in `data`.
    pub fn binary(&mut self) -> Result<std::ops::Range<usize>> {
        let len = usize::try_from(self.varint()?).unwrap_or(usize::MAX);
        let start = self.pos;
        self.advance(len)?;
        Ok(start..self.pos)
    }

    /// A list's header: its elements' type and count.
    pub fn list(&mut self) -> Result<(u8, u64)> {
        let head = self.byte()?;
        let mut n = u64::from(head >> 4);
        if n == 15 {
            n = self.varint()?;
        }
        Ok((head & 0x0f, n))
    }

    /// The next field's id and type, `None` at the struct's end.
    pub fn field(&mut self, last: &mut i16) -> Result<Option<u8>> {
        let b = self.byte()?;
        let ty = b & 0x0f;
        if ty == kind::STOP {
            return Ok(None);
        }
        let delta = i16::from(b >> 4);
        *last = if delta == 0 {
            i16::try_from(self.zigzag()?).context("a field id out of range")?
        } else {
            last.wrapping_add(delta)
        };
        Ok(Some(ty))
    }

    /// Passes over a value of type `ty`.
    pub fn skip(&mut self, ty: u8, depth: usize) -> Result<()> {
        ensure!(
            depth < MAX_DEPTH,
            "{} nests too deep: the file is damaged",
            self.what
        );
        match ty {
            kind::TRUE | kind::FALSE => {}
            kind::BYTE => {
                self.byte()?;
            }
            kind::I16 | kind::I32 | kind::I64 => {
                self.varint()?;
            }
            kind::DOUBLE => self.advance(8)?,
            kind::BINARY => {
                let len = self.varint()?;
                self.advance(usize::try_from(len).unwrap_or(usize::MAX))?;
            }
            kind::LIST | kind::SET => {
                let (elem, n) = self.list()?;
                for _ in 0..n {
                    // Booleans in a list are a byte each.
                    if matches!(elem, kind::TRUE | kind::FALSE) {
                        self.byte()?;
                    } else {
                        self.skip(elem, depth + 1)?;
                    }
                }
            }
            kind::MAP => {
                let n = self.varint()?;
                if n > 0 {
                    let types = self.byte()?;
                    for _ in 0..n {
                        self.skip(types >> 4, depth + 1)?;
                        self.skip(types & 0x0f, depth + 1)?;
                    }
                }
            }
            kind::STRUCT => {
                let mut last = 0;
                while let Some(t) = self.field(&mut last)? {
                    self.skip(t, depth + 1)?;
                }
            }
            other => bail!(
                "{} holds Thrift type {other}: the file is damaged",
                self.what
            ),
        }
        Ok(())
    }

    pub fn advance(&mut self, n: usize) -> Result<()> {
        match self.pos.checked_add(n).filter(|&e| e <= self.data.len()) {
            Some(end) => {
                self.pos = end;
                Ok(())
            }
            None => bail!("{} runs past its end: the file is damaged", self.what),
        }
    }

    pub fn encoding(&mut self) -> Result<Encoding> {
        let code = self.i32()?;
        encoding_of(code).with_context(|| format!("a page declares unknown encoding {code}"))
    }

    /// A bool field of type `ty`.
    pub fn boolean(ty: u8) -> Result<bool> {
        match ty {
            kind::TRUE => Ok(true),
            kind::FALSE => Ok(false),
            other => bail!("a flag has Thrift type {other}: the file is damaged"),
        }
    }
}
