//! Parquet's RLE / bit-packing hybrid encoding, decoded: how a page stores definition
//! levels and dictionary keys (parquet-format `Encodings.md`, "Run Length Encoding /
//! Bit-Packing Hybrid"). The parquet crate's decoder is not public API, and the reader
//! decodes the `kind` and `side` keys itself ([`super::columns`]).
//!
//! A run starts with a ULEB128 header. Low bit 1: `header >> 1` groups of 8 values,
//! `width` bits each, packed from the least significant bit of each byte. Low bit 0:
//! `header >> 1` repetitions of one value stored in `ceil(width / 8)` little-endian bytes.

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;

use super::decode::uleb128;

/// Values of one hybrid-encoded stream, read in order.
pub struct Hybrid {
    data: Bytes,
    /// Next byte of `data` to read a run header from.
    pos: usize,
    width: u8,
    /// Values left in the current repeated run, and its value.
    repeat_left: usize,
    repeat_value: u32,
    /// Values left in the current bit-packed run, and the bit offset of the next one.
    packed_left: usize,
    packed_bit: usize,
}

impl Hybrid {
    /// Values of `width` bits (at most 32) encoded in `data`.
    pub fn new(data: Bytes, width: u8) -> Result<Hybrid> {
        ensure!(width <= 32, "bit width {width} is above 32");
        Ok(Hybrid {
            data,
            pos: 0,
            width,
            repeat_left: 0,
            repeat_value: 0,
            packed_left: 0,
            packed_bit: 0,
        })
    }

    /// Fills `out` with the next values; an error when the stream ends first.
    pub fn read(&mut self, out: &mut [u32]) -> Result<()> {
        let mut n = 0;
        while n < out.len() {
            if self.repeat_left > 0 {
                let k = self.repeat_left.min(out.len() - n);
                out[n..n + k].fill(self.repeat_value);
                self.repeat_left -= k;
                n += k;
            } else if self.packed_left > 0 {
                let k = self.packed_left.min(out.len() - n);
                self.unpack(&mut out[n..n + k]);
                self.packed_left -= k;
                n += k;
            } else {
                self.next_run()?;
            }
        }
        Ok(())
    }

    /// True, having passed over them, when the next `n` values are all `value` in one
    /// repeated run (a page's levels when no row in it is null): nothing to decode.
    pub fn skip_repeated(&mut self, n: usize, value: u32) -> Result<bool> {
        if self.repeat_left == 0 && self.packed_left == 0 && self.pos < self.data.len() {
            self.next_run()?;
        }
        if self.repeat_left >= n && self.repeat_value == value {
            self.repeat_left -= n;
            return Ok(true);
        }
        Ok(false)
    }

    /// The next `out.len()` values of the current bit-packed run. The run's bytes were
    /// checked to be in `data` when it started.
    #[inline(always)]
    fn unpack(&mut self, out: &mut [u32]) {
        let data: &[u8] = &self.data;
        let width = usize::from(self.width);
        let mask = (1u64 << self.width) - 1;
        let mut bit = self.packed_bit;
        for slot in out {
            let byte = bit / 8;
            let word = match data.get(byte..byte + 8) {
                // The usual case: eight bytes left to load at once.
                Some(eight) => u64::from_le_bytes(eight.try_into().unwrap_or_default()),
                None => {
                    let mut word = [0u8; 8];
                    let end = (byte + 8).min(data.len());
                    word[..end - byte].copy_from_slice(&data[byte..end]);
                    u64::from_le_bytes(word)
                }
            };
            *slot = ((word >> (bit % 8)) & mask) as u32;
            bit += width;
        }
        self.packed_bit = bit;
    }

    /// Reads the next run's header (and a repeated run's value).
    fn next_run(&mut self) -> Result<()> {
        let header = uleb128(&self.data, &mut self.pos)
            .context("the values end before the rows do, or a run header is above 64 bits")?;
        let count = usize::try_from(header >> 1)?;
        ensure!(count > 0, "an empty run at byte {}", self.pos);
        if header & 1 == 1 {
            let bytes = count
                .checked_mul(usize::from(self.width))
                .filter(|&b| b <= self.data.len() - self.pos);
            let Some(bytes) = bytes else {
                bail!(
                    "a run of {count} groups of 8 values runs past the end of its {} bytes",
                    self.data.len()
                );
            };
            self.packed_bit = self.pos * 8;
            self.packed_left = count * 8;
            self.pos += bytes;
        } else {
            let bytes = usize::from(self.width).div_ceil(8);
            ensure!(
                self.pos + bytes <= self.data.len(),
                "a repeated run's value runs past the end of its {} bytes",
                self.data.len()
            );
            let mut value = [0u8; 4];
            value[..bytes].copy_from_slice(&self.data[self.pos..self.pos + bytes]);
            self.pos += bytes;
            self.repeat_value = u32::from_le_bytes(value);
            self.repeat_left = count;
        }
        Ok(())
    }
}

/// The first `n` entries of `scratch`, grown (never shrunk, never zeroed again) to hold
/// them: space for a decoder to write into without clearing it first.
pub fn scratch(scratch: &mut Vec<u32>, n: usize) -> &mut [u32] {
    if scratch.len() < n {
        scratch.resize(n, 0);
    }
    &mut scratch[..n]
}

/// Bits needed for values up to `max` (0 for 0).
pub fn width_of(max: u32) -> u8 {
    (32 - max.leading_zeros()) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(data: &[u8], width: u8, n: usize) -> Result<Vec<u32>> {
        let mut h = Hybrid::new(Bytes::copy_from_slice(data), width)?;
        let mut out = vec![0; n];
        h.read(&mut out)?;
        Ok(out)
    }

    #[test]
    fn repeated_and_bit_packed_runs_decode_in_order() {
        // 3 x 5 (width 3: one byte of value), then one group of 8 values 0..=7 packed in
        // 3 bytes: 0b10001000, 0b11000110, 0b11111010 (LSB first).
        let data = [
            3 << 1,
            5,
            (1 << 1) | 1,
            0b1000_1000,
            0b1100_0110,
            0b1111_1010,
        ];
        assert_eq!(
            decode(&data, 3, 11).unwrap(),
            [5, 5, 5, 0, 1, 2, 3, 4, 5, 6, 7]
        );
        // Read in pieces, the values are the same.
        let mut h = Hybrid::new(Bytes::copy_from_slice(&data), 3).unwrap();
        let (mut a, mut b) = ([0; 4], [0; 7]);
        h.read(&mut a).unwrap();
        h.read(&mut b).unwrap();
        assert_eq!([&a[..], &b[..]].concat(), [5, 5, 5, 0, 1, 2, 3, 4, 5, 6, 7]);
    }

    #[test]
    fn width_zero_and_wide_values() {
        assert_eq!(decode(&[4 << 1], 0, 4).unwrap(), [0; 4]);
        let v: u32 = 0x00AB_CDEF;
        let mut data = vec![2 << 1];
        data.extend_from_slice(&v.to_le_bytes()[..3]);
        assert_eq!(decode(&data, 24, 2).unwrap(), [v, v]);
        assert_eq!(width_of(0), 0);
        assert_eq!(width_of(1), 1);
        assert_eq!(width_of(2), 2);
        assert_eq!(width_of(255), 8);
    }

    #[test]
    fn a_truncated_stream_is_an_error_not_a_panic() {
        // More values than the stream holds, a packed run past the end, a value cut off.
        assert!(decode(&[2 << 1, 1], 1, 3).is_err());
        assert!(decode(&[(4 << 1) | 1, 0xff], 2, 8).is_err());
        assert!(decode(&[2 << 1, 1], 9, 2).is_err());
        assert!(decode(&[0x80, 0x80], 1, 1).is_err());
        assert!(decode(&[0], 1, 1).is_err());
    }
}
