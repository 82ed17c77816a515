//! A data page's integer values, decoded into a caller's vector without allocating:
//! plain, dictionary keys (parquet-format `Encodings.md` `RLE_DICTIONARY`) and
//! `DELTA_BINARY_PACKED`, the encodings the dataset writer chooses
//! ([`super::writer`]: deltas for timestamps and counters, a dictionary for prices,
//! sizes and venue sequence ids). [`super::columns`] reads other encodings through the
//! parquet crate.

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;
use parquet::basic::Encoding;

use super::hybrid::{Hybrid, scratch};

/// An integer column's value type (`INT64` as `i64`, `INT32` as `i32`).
pub trait Int: Copy + Default {
    /// Bytes a PLAIN value takes.
    const BYTES: usize;
    /// A PLAIN value from its `BYTES` little-endian bytes.
    fn from_le(bytes: &[u8]) -> Self;
    /// A delta-decoded value, whose arithmetic wraps at the type's width (the
    /// encoding's rule), computed in 64 bits and truncated.
    fn from_wrapped(v: i64) -> Self;
}

impl Int for i64 {
    const BYTES: usize = 8;
    fn from_le(b: &[u8]) -> i64 {
        let mut a = [0; 8];
        a.copy_from_slice(b);
        i64::from_le_bytes(a)
    }
    fn from_wrapped(v: i64) -> i64 {
        v
    }
}

impl Int for i32 {
    const BYTES: usize = 4;
    fn from_le(b: &[u8]) -> i32 {
        let mut a = [0; 4];
        a.copy_from_slice(b);
        i32::from_le_bytes(a)
    }
    fn from_wrapped(v: i64) -> i32 {
        v as i32
    }
}

/// The values of the PLAIN-encoded `data`, appended to `out` (a dictionary page).
pub fn plain_all<V: Int>(data: &[u8], count: usize, out: &mut Vec<V>) -> Result<()> {
    ensure!(
        count.checked_mul(V::BYTES).is_some_and(|n| n <= data.len()),
        "a page of {count} values holds only {} bytes",
        data.len()
    );
    out.extend(data.chunks_exact(V::BYTES).take(count).map(V::from_le));
    Ok(())
}

/// A data page's values, read in order.
pub enum IntValues {
    /// PLAIN: `BYTES` little-endian bytes a value, from `pos`.
    Plain {
        data: Bytes,
        pos: usize,
    },
    /// Dictionary keys.
    Keys(Hybrid),
    Delta(Delta),
}

impl IntValues {
    /// The values of a page whose values (after its levels) are `data`.
    pub fn new(encoding: Encoding, data: Bytes) -> Result<IntValues> {
        Ok(match encoding {
            Encoding::PLAIN => IntValues::Plain { data, pos: 0 },
            Encoding::PLAIN_DICTIONARY | Encoding::RLE_DICTIONARY => {
                let Some(&width) = data.first() else {
                    bail!("a dictionary-encoded page without keys");
                };
                IntValues::Keys(Hybrid::new(data.slice(1..), width)?)
            }
            Encoding::DELTA_BINARY_PACKED => IntValues::Delta(Delta::new(data)?),
            other => bail!("unexpected encoding {other:?} for integers"),
        })
    }

    /// Appends the next `n` values to `out`; keys are looked up in `dictionary`
    /// (`keys` is scratch space).
    pub fn read<V: Int>(
        &mut self,
        n: usize,
        dictionary: &[V],
        keys: &mut Vec<u32>,
        out: &mut Vec<V>,
    ) -> Result<()> {
        match self {
            IntValues::Plain { data, pos } => {
                let end = n
                    .checked_mul(V::BYTES)
                    .and_then(|len| pos.checked_add(len))
                    .filter(|&e| e <= data.len());
                let Some(end) = end else {
                    bail!("a page's values end before its rows do");
                };
                out.extend(data[*pos..end].chunks_exact(V::BYTES).map(V::from_le));
                *pos = end;
            }
            IntValues::Keys(hybrid) => {
                let keys = scratch(keys, n);
                hybrid.read(keys)?;
                let start = out.len();
                out.extend(
                    keys.iter()
                        .map(|&k| dictionary.get(k as usize).copied().unwrap_or_default()),
                );
                if let Some(&k) = keys.iter().find(|&&k| k as usize >= dictionary.len()) {
                    out.truncate(start);
                    bail!(
                        "dictionary key {k} out of range ({} entries)",
                        dictionary.len()
                    );
                }
            }
            IntValues::Delta(delta) => delta.read(n, out)?,
        }
        Ok(())
    }
}

/// `DELTA_BINARY_PACKED` values: a header (block size, miniblocks a block, value count,
/// first value), then blocks of a minimum delta, a bit width per miniblock, and the
/// miniblocks' deltas above that minimum, bit-packed.
pub struct Delta {
    data: Bytes,
    /// Next byte to read a block header or miniblock from.
    pos: usize,
    miniblocks: usize,
    per_miniblock: usize,
    /// Values not read yet (the first value included until it is read).
    left: usize,
    first_pending: bool,
    last: i64,
    min_delta: i64,
    /// Where the current block's bit widths start, and the next miniblock's index.
    widths_at: usize,
    next_miniblock: usize,
    /// The current miniblock: values left, their width, the next one's bit offset.
    mini_left: usize,
    width: u32,
    bit: usize,
}

impl Delta {
    fn new(data: Bytes) -> Result<Delta> {
        let mut pos = 0;
        let block = uleb(&data, &mut pos)?;
        let miniblocks = uleb(&data, &mut pos)?;
        let total = uleb(&data, &mut pos)?;
        let first = zigzag(uleb(&data, &mut pos)?);
        ensure!(
            miniblocks > 0 && block > 0 && block.is_multiple_of(miniblocks) && block <= 1 << 16,
            "a delta-encoded page declares blocks of {block} values in {miniblocks} miniblocks"
        );
        let per_miniblock = (block / miniblocks) as usize;
        ensure!(
            per_miniblock.is_multiple_of(8),
            "a delta-encoded page's miniblocks hold {per_miniblock} values, not a multiple of 8"
        );
        Ok(Delta {
            data,
            pos,
            miniblocks: miniblocks as usize,
            per_miniblock,
            left: usize::try_from(total).unwrap_or(usize::MAX),
            first_pending: total > 0,
            last: first,
            min_delta: 0,
            widths_at: 0,
            next_miniblock: miniblocks as usize,
            mini_left: 0,
            width: 0,
            bit: 0,
        })
    }

    /// Appends the next `n` values to `out`.
    fn read<V: Int>(&mut self, n: usize, out: &mut Vec<V>) -> Result<()> {
        ensure!(
            n <= self.left,
            "a delta-encoded page holds {} more values, {n} wanted",
            self.left
        );
        self.left -= n;
        let mut n = n;
        if n > 0 && self.first_pending {
            self.first_pending = false;
            out.push(V::from_wrapped(self.last));
            n -= 1;
        }
        while n > 0 {
            if self.mini_left == 0 {
                self.start_miniblock()?;
            }
            let k = n.min(self.mini_left);
            let end_bit = self.bit + k * self.width as usize;
            ensure!(
                end_bit.div_ceil(8) <= self.data.len(),
                "a delta-encoded page's values run past its end"
            );
            let (mut last, min_delta, width) = (self.last, self.min_delta, self.width);
            let mask = if width == 64 {
                u64::MAX
            } else {
                (1u64 << width) - 1
            };
            let data = &self.data[..];
            let bit = self.bit;
            // Widths up to 56 bits whose last value has eight bytes after its first: one
            // 8-byte load a value, no check per value.
            let fast = width <= 56 && (end_bit / 8) + 8 <= data.len();
            let w = width as usize;
            if fast {
                out.extend((0..k).map(|j| {
                    let b = bit + j * w;
                    let eight: [u8; 8] = data[b / 8..b / 8 + 8].try_into().unwrap_or_default();
                    let packed = (u64::from_le_bytes(eight) >> (b % 8)) & mask;
                    last = last.wrapping_add(min_delta).wrapping_add(packed as i64);
                    V::from_wrapped(last)
                }));
            } else {
                out.extend((0..k).map(|j| {
                    let packed = bits(data, bit + j * w) & mask;
                    last = last.wrapping_add(min_delta).wrapping_add(packed as i64);
                    V::from_wrapped(last)
                }));
            }
            self.last = last;
            self.bit = end_bit;
            self.mini_left -= k;
            n -= k;
        }
        Ok(())
    }

    /// Moves to the next miniblock, reading a block header first when a block is done.
    fn start_miniblock(&mut self) -> Result<()> {
        if self.next_miniblock == self.miniblocks {
            self.min_delta = zigzag(uleb(&self.data, &mut self.pos)?);
            self.widths_at = self.pos;
            self.pos = self
                .pos
                .checked_add(self.miniblocks)
                .filter(|&e| e <= self.data.len())
                .ok_or_else(|| anyhow::anyhow!("a delta-encoded block runs past its page"))?;
            self.next_miniblock = 0;
        }
        let width = u32::from(self.data[self.widths_at + self.next_miniblock]);
        ensure!(
            width <= 64,
            "a delta-encoded miniblock of {width}-bit values"
        );
        self.next_miniblock += 1;
        self.width = width;
        self.bit = self.pos * 8;
        // Miniblocks are padded to full size (the last one's trailing bytes may be cut
        // short at the page's end: `read` checks the bits it uses).
        self.pos += self.per_miniblock * width as usize / 8;
        self.mini_left = self.per_miniblock;
        Ok(())
    }
}

/// The 64 bits of `data` from bit `bit` (zero past its end; `bit` lies inside it).
#[inline(always)]
fn bits(data: &[u8], bit: usize) -> u64 {
    let (byte, shift) = (bit / 8, bit % 8);
    let word = match data.get(byte..byte + 16) {
        Some(b) => {
            let mut a = [0u8; 16];
            a.copy_from_slice(b);
            u128::from_le_bytes(a)
        }
        None => {
            let mut a = [0u8; 16];
            let tail = &data[byte.min(data.len())..];
            a[..tail.len()].copy_from_slice(tail);
            u128::from_le_bytes(a)
        }
    };
    (word >> shift) as u64
}

/// The ULEB128 value of `data` at `pos`, moving past it: how Parquet's delta and hybrid
/// encodings and Thrift's compact protocol store integers. `None` when `data` ends
/// inside it or it runs past 64 bits.
pub fn uleb128(data: &[u8], pos: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let &b = data.get(*pos)?;
        *pos += 1;
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// Appends `v` as an unsigned LEB128 varint: the writing side of [`uleb128`].
pub fn put_uleb128(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A zigzag-encoded signed value (0, -1, 1, -2, … stored as 0, 1, 2, 3, …).
pub fn zigzag(v: u64) -> i64 {
    (v >> 1) as i64 ^ -((v & 1) as i64)
}

/// [`uleb128`] in a delta-encoded page.
fn uleb(data: &[u8], pos: &mut usize) -> Result<u64> {
    uleb128(data, pos)
        .context("a delta-encoded page ends inside a number, or holds one above 64 bits")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delta(data: Vec<u8>, n: usize) -> Result<Vec<i64>> {
        let mut d = Delta::new(Bytes::from(data))?;
        let mut out = Vec::new();
        d.read(n, &mut out)?;
        Ok(out)
    }

    #[test]
    fn the_specification_examples_decode() {
        // parquet-format Encodings.md, example 1: 1 2 3 4 5 (block 8, 1 miniblock).
        let bytes = vec![8, 1, 5, 2, 2, 0, 0];
        assert_eq!(delta(bytes, 5).unwrap(), [1, 2, 3, 4, 5]);
        // Example 2: 7 5 3 1 2 3 4 5: min delta -2, deltas above it 0 0 0 3 3 3 3 (2 bits).
        let packed = [0b1100_0000u8, 0b1111_1111, 0, 0];
        let mut bytes = vec![8, 1, 8, 14, 3, 2];
        bytes.extend(packed);
        assert_eq!(delta(bytes, 8).unwrap(), [7, 5, 3, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn a_truncated_stream_is_an_error_not_a_panic() {
        let mut bytes = vec![128, 1, 4, 100, 2, 3, 5, 1, 2, 3];
        bytes.extend([0xFF; 80]);
        for end in 0..bytes.len() {
            let _ = delta(bytes[..end].to_vec(), 100);
        }
        assert_eq!(delta(bytes.clone(), 100).unwrap().len(), 100);
        assert!(
            delta(bytes, 101).is_err(),
            "more values asked than the page holds"
        );
    }
}
