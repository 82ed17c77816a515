//! The recorder's write-ahead journal: an append-only file of length-prefixed,
//! checksummed wire payloads.
//!
//! Why it exists: a Parquet file is unreadable until its footer is written, so a
//! recorder killed mid-file would lose everything since the file was opened. Every
//! accepted event is appended here first and the journal is flushed to the OS every flush
//! interval; on restart the journal of an unfinished generation is replayed into Parquet.
//!
//! Record framing: `u32 LE payload length`, `u32 LE CRC32 of the payload`, payload bytes.
//! A torn tail (short record or bad CRC, from a kill mid-write) ends the journal.

use std::fs::{File, OpenOptions};
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
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
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
    /// Bytes after the last intact record (a torn write), ignored.
    pub torn_bytes: u64,
}

/// Reads every intact record of the journal at `path` in order, calling `each`.
pub fn read_journal(path: &Path, mut each: impl FnMut(&[u8]) -> Result<()>) -> Result<JournalScan> {
    let file =
        File::open(path).with_context(|| format!("cannot open journal {}", path.display()))?;
    let total = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut input = BufReader::with_capacity(1 << 20, file);
    let mut scan = JournalScan::default();
    let mut offset = 0u64;
    let mut header = [0u8; 8];
    let mut payload = Vec::new();
    loop {
        if read_full(&mut input, &mut header)? < 8 {
            break;
        }
        let len = u32::from_le_bytes(header[0..4].try_into().unwrap_or_default()) as usize;
        let crc = u32::from_le_bytes(header[4..8].try_into().unwrap_or_default());
        if offset + 8 + len as u64 > total {
            break;
        }
        payload.resize(len, 0);
        if read_full(&mut input, &mut payload)? < len || crc32fast::hash(&payload) != crc {
            break;
        }
        each(&payload)?;
        scan.records += 1;
        offset += 8 + len as u64;
    }
    scan.torn_bytes = total - offset;
    Ok(scan)
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
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
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
}
