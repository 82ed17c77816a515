//! The recorder's write-ahead journal: an append-only file of length-prefixed,
//! checksummed wire payloads.
//!
//! Why it exists: a Parquet file is unreadable until its footer is written, so a
//! recorder killed mid-file would lose everything since the file was opened. Every
//! accepted event is appended here first and the journal is flushed to the OS every flush
//! interval; on restart the journal of an unfinished generation is replayed into Parquet.
//!
//! Record framing: `u32 LE payload length`, `u32 LE CRC32 of the payload`, payload bytes
//! (never empty). A torn tail (part of one record, from a kill mid-write, or zeros from a
//! power cut) ends the journal; a bad record with intact records after it is *damage*,
//! which [`read_journal`] reports so recovery keeps the file instead of deleting it.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Appends framed records to a journal file.
pub struct JournalWriter {
    path: PathBuf,
    out: BufWriter<File>,
    bytes: u64,
    records: u64,
}

impl JournalWriter {
    /// Creates (or appends to) the journal at `path`.
    pub fn open(path: &Path) -> Result<JournalWriter> {
        let file = super::files::append(path)
            .with_context(|| format!("cannot open journal {}", path.display()))?;
        let bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(JournalWriter {
            path: path.to_path_buf(),
            out: BufWriter::with_capacity(1 << 20, file),
            bytes,
            records: 0,
        })
    }

    /// Appends one record (buffered; durable after [`JournalWriter::flush`]).
    pub fn append(&mut self, payload: &[u8]) -> Result<()> {
        let len = u32::try_from(payload.len()).context("journal record over 4 GiB")?;
        let crc = crc32fast::hash(payload);
        self.out.write_all(&len.to_le_bytes())?;
        self.out.write_all(&crc.to_le_bytes())?;
        self.out.write_all(payload)?;
        self.bytes += 8 + payload.len() as u64;
        self.records += 1;
        Ok(())
    }

    /// Hands buffered records to the OS: after this they survive `kill -9` of the
    /// process. With `sync` they are also forced to the disk (survive power loss).
    pub fn flush(&mut self, sync: bool) -> Result<()> {
        self.out
            .flush()
            .with_context(|| format!("cannot write journal {}", self.path.display()))?;
        if sync {
            self.out.get_ref().sync_data()?;
        }
        Ok(())
    }

    /// Bytes in the journal so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Records appended by this writer.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// The journal's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// What [`read_journal`] found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct JournalScan {
    /// Intact records delivered.
    pub records: u64,
    /// Bytes after the last intact record when they are a torn tail (a record cut by a
    /// crash mid-write, or zeros left by a power cut), ignored.
    pub torn_bytes: u64,
    /// Set when the scan stopped at a bad record that is *not* the torn tail: records
    /// after it may be intact but the framing cannot be trusted from there on.
    pub damage: Option<JournalDamage>,
}

/// Where and how a journal is damaged before its tail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalDamage {
    /// Byte offset of the first bad record.
    pub offset: u64,
    /// Bytes from there to the end of the file.
    pub bytes_after: u64,
    /// What was wrong with it.
    pub reason: String,
}

/// A torn tail is part of one record: anything longer after the last intact record is
/// damage, whatever it looks like.
const MAX_TORN_TAIL: u64 = 4 << 20;

/// Longest record a resynchronising scan looks for (journal records are wire payloads,
/// a few hundred bytes); see [`intact_record_after`].
const MAX_RESYNC_RECORD: usize = 64 << 10;

/// Reads every intact record of the journal at `path` in order, calling `each`. Stops at
/// the first bad record (short, zero-length, past the end, or CRC mismatch), and tells a
/// torn tail (`torn_bytes`) from damage before it (`damage`): the bad record is the torn
/// tail only when no intact record can be found anywhere after it.
pub fn read_journal(path: &Path, mut each: impl FnMut(&[u8]) -> Result<()>) -> Result<JournalScan> {
    let file =
        File::open(path).with_context(|| format!("cannot open journal {}", path.display()))?;
    let total = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut input = BufReader::with_capacity(1 << 20, file);
    let mut scan = JournalScan::default();
    let mut offset = 0u64;
    let mut header = [0u8; 8];
    let mut payload = Vec::new();
    let stop = loop {
        if read_full(&mut input, &mut header)? < 8 {
            break None;
        }
        let len = u32::from_le_bytes(header[0..4].try_into().unwrap_or_default()) as usize;
        let crc = u32::from_le_bytes(header[4..8].try_into().unwrap_or_default());
        if len == 0 {
            // Never written (payloads are never empty): zeros, or a broken length.
            break Some("zero-length record");
        }
        if offset + 8 + len as u64 > total {
            break Some("record length past the end of the file");
        }
        payload.resize(len, 0);
        if read_full(&mut input, &mut payload)? < len || crc32fast::hash(&payload) != crc {
            if offset + 8 + len as u64 == total {
                // The very last record: a torn write whose length made it to disk.
                break None;
            }
            break Some("CRC mismatch");
        }
        each(&payload)?;
        scan.records += 1;
        offset += 8 + len as u64;
    };
    let after = total - offset;
    let damaged = match stop {
        None => false,
        Some(_) if after > MAX_TORN_TAIL => true,
        Some("CRC mismatch") => true,
        Some(_) => intact_record_after(path, offset, after)?,
    };
    if damaged {
        scan.damage = Some(JournalDamage {
            offset,
            bytes_after: after,
            reason: stop.unwrap_or_default().to_string(),
        });
    } else {
        scan.torn_bytes = after;
    }
    Ok(scan)
}

/// Most payload bytes a resynchronising scan hashes. Each candidate position may cost up
/// to [`MAX_RESYNC_RECORD`] bytes of CRC, so a crafted 4 MiB tail (a plausible length at
/// every fourth byte) would hash 16 GiB: past this budget the tail is taken for damage,
/// which keeps the journal rather than discarding it.
const MAX_RESYNC_HASHED: usize = 64 << 20;

/// True when an intact record (length 1..=[`MAX_RESYNC_RECORD`], matching CRC) starts
/// anywhere in the `len` bytes after `offset`: then the bad record there is not the tail.
/// Also true when finding out would hash more than [`MAX_RESYNC_HASHED`] bytes.
fn intact_record_after(path: &Path, offset: u64, len: u64) -> Result<bool> {
    let mut file =
        File::open(path).with_context(|| format!("cannot open journal {}", path.display()))?;
    std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(offset))?;
    let mut rest = vec![0u8; len as usize];
    let got = read_full(&mut file, &mut rest)?;
    rest.truncate(got);
    let mut hashed = 0usize;
    for p in 1..rest.len().saturating_sub(8) {
        let n = u32::from_le_bytes([rest[p], rest[p + 1], rest[p + 2], rest[p + 3]]) as usize;
        if n == 0 || n > MAX_RESYNC_RECORD || p + 8 + n > rest.len() {
            continue;
        }
        hashed += n;
        if hashed > MAX_RESYNC_HASHED {
            return Ok(true);
        }
        let crc = u32::from_le_bytes([rest[p + 4], rest[p + 5], rest[p + 6], rest[p + 7]]);
        if crc32fast::hash(&rest[p + 8..p + 8 + n]) == crc {
            return Ok(true);
        }
    }
    Ok(false)
}

fn read_full(input: &mut impl Read, buf: &mut [u8]) -> Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torn_tail_is_ignored_and_intact_records_survive() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.log");
        let mut w = JournalWriter::open(&path).unwrap();
        for i in 0..100u32 {
            w.append(format!("record-{i}").as_bytes()).unwrap();
        }
        w.flush(true).unwrap();
        drop(w);
        // Simulate a kill mid-write: a header promising more bytes than exist.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(&[50, 0, 0, 0, 1, 2, 3, 4, b'x']).unwrap();
        let mut seen = Vec::new();
        let scan = read_journal(&path, |p| {
            seen.push(String::from_utf8(p.to_vec()).unwrap());
            Ok(())
        })
        .unwrap();
        assert_eq!(scan.records, 100);
        assert_eq!(scan.torn_bytes, 9);
        assert_eq!(seen[99], "record-99");
    }

    #[test]
    fn corrupted_record_stops_the_scan() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.log");
        let mut w = JournalWriter::open(&path).unwrap();
        w.append(b"aaaa").unwrap();
        w.append(b"bbbb").unwrap();
        w.flush(false).unwrap();
        drop(w);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
        let scan = read_journal(&path, |_| Ok(())).unwrap();
        assert_eq!(scan.records, 1);
    }

    fn journal_of(records: u32) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.log");
        let mut w = JournalWriter::open(&path).unwrap();
        for i in 0..records {
            w.append(format!("record-{i:03}").as_bytes()).unwrap();
        }
        w.flush(false).unwrap();
        (dir, path)
    }

    #[test]
    fn damage_before_the_tail_is_told_apart_from_a_torn_tail() {
        let (_dir, path) = journal_of(100);
        let mut bytes = std::fs::read(&path).unwrap();
        // Record 50 starts at 50 * (8 + 10); flip a byte of its payload.
        bytes[50 * 18 + 8 + 3] ^= 0x20;
        std::fs::write(&path, &bytes).unwrap();
        let scan = read_journal(&path, |_| Ok(())).unwrap();
        assert_eq!(scan.records, 50, "the records before the damage");
        let damage = scan
            .damage
            .expect("damage in the middle is not a torn tail");
        assert_eq!(damage.offset, 50 * 18);
        assert_eq!(scan.torn_bytes, 0);

        // A length field turned huge is damage too when intact records follow it.
        let (_dir, path) = journal_of(100);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[20 * 18 + 3] = 0x7f;
        std::fs::write(&path, &bytes).unwrap();
        let scan = read_journal(&path, |_| Ok(())).unwrap();
        assert_eq!(scan.records, 20);
        assert!(scan.damage.is_some());

        // Zeros after the last record (a power cut after the file grew) are a tail.
        let (_dir, path) = journal_of(10);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(&[0u8; 4096]).unwrap();
        let scan = read_journal(&path, |_| Ok(())).unwrap();
        assert_eq!((scan.records, scan.torn_bytes), (10, 4096));
        assert!(scan.damage.is_none());
    }

    /// Found while fuzzing the journal reader: the resynchronising scan hashed up to
    /// 64 KiB at every candidate offset, so a tail with a plausible length at every
    /// fourth byte took 14 s at 256 KiB in a debug build (quadratic: about 16 GiB of CRC
    /// at the 4 MiB a tail may have). The hashing is bounded; such a tail is kept as
    /// damage.
    #[test]
    fn a_tail_too_costly_to_resynchronise_is_kept_as_damage_quickly() {
        let (_dir, path) = journal_of(10);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        // A record whose length runs past the end, then `ff ff 00 00` (65,535) repeated,
        // short of the 4 MiB past which a tail is damage without a scan.
        f.write_all(&[0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0]).unwrap();
        f.write_all(&[0xff, 0xff, 0, 0].repeat((1 << 20) - 16))
            .unwrap();
        let started = std::time::Instant::now();
        let scan = read_journal(&path, |_| Ok(())).unwrap();
        let took = started.elapsed();
        assert_eq!(scan.records, 10);
        assert!(scan.damage.is_some(), "{scan:?}");
        assert!(took < std::time::Duration::from_secs(10), "took {took:?}");
    }
}
