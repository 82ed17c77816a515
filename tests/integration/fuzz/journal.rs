//! Journal targets: `store::journal::read_journal`, the reader `recover` runs on
//! whatever a crash left on disk, with each record decoded as recovery decodes it.
//!
//! - `journal`: journals of valid payloads, mutated, and arbitrary bytes never panic;
//!   the records delivered, framed, plus the torn bytes account for the whole file.
//! - `journal_torn_tail`: a journal cut anywhere delivers exactly the records that
//!   were whole before the cut.

use std::path::Path;
use std::sync::Arc;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use ticktape::event::Interner;
use ticktape::store::journal::{JournalWriter, read_journal};
use ticktape::wire::{self, Encoding};

use super::mutate::{bytes, mutated, one_of};
use super::wire::event;
use super::{FuzzInput, fuzz};

/// Journals as the recorder writes them: up to 12 valid events in either encoding;
/// 300 of them, made once (generating events is slower than reading journals).
fn journals(dir: &Path) -> Vec<Vec<u8>> {
    let mut runner = TestRunner::deterministic();
    let records = prop::collection::vec(
        (event(), any::<bool>()).prop_map(|(e, binary)| {
            let mut out = Vec::new();
            let encoding = if binary {
                Encoding::Binary
            } else {
                Encoding::Json
            };
            wire::encode_as(encoding, &e.0, &mut out);
            out
        }),
        0..12,
    );
    (0..300)
        .map(|_| {
            let r = records.new_tree(&mut runner).expect("records").current();
            journal_bytes(dir, &r)
        })
        .collect()
}

/// The journal file `JournalWriter` makes of `records`.
fn journal_bytes(dir: &Path, records: &[Vec<u8>]) -> Vec<u8> {
    let path = dir.join("seed.journal");
    let _ = std::fs::remove_file(&path);
    let mut w = JournalWriter::open(&path).expect("open journal");
    for r in records {
        w.append(r).expect("append");
    }
    w.flush(false).expect("flush");
    drop(w);
    std::fs::read(&path).expect("read journal")
}

/// Reads `bytes` as a journal; returns the payload lengths delivered, the torn-tail
/// bytes and the bytes from a damaged record (not the tail) to the end.
fn scan(dir: &Path, bytes: &[u8]) -> Result<(Vec<usize>, u64, u64), String> {
    let path = dir.join("fuzz.journal");
    std::fs::write(&path, bytes).map_err(|e| e.to_string())?;
    let mut names = Interner::default();
    let mut lengths = Vec::new();
    let scan = read_journal(&path, |payload| {
        lengths.push(payload.len());
        // As recovery does: decode, and count what does not decode.
        let _ = wire::decode(payload, &mut names);
        Ok(())
    })
    .map_err(|e| format!("read_journal failed on a readable file: {e:#}"))?;
    if scan.records != lengths.len() as u64 {
        return Err(format!(
            "scan says {} records, {} were delivered",
            scan.records,
            lengths.len()
        ));
    }
    let damaged = scan.damage.as_ref().map_or(0, |d| d.bytes_after);
    if scan.torn_bytes > 0 && damaged > 0 {
        return Err(format!("both a torn tail and damage: {scan:?}"));
    }
    Ok((lengths, scan.torn_bytes, damaged))
}

#[test]
fn journal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let seeds = one_of(Arc::new(journals(dir.path())));
    let input = prop_oneof![9 => mutated(seeds), 1 => bytes(512)];
    fuzz("journal", input, |bytes| {
        let (lengths, torn, damaged) = scan(dir.path(), bytes)?;
        let framed: u64 = lengths.iter().map(|&l| 8 + l as u64).sum();
        if framed + torn + damaged != bytes.len() as u64 {
            return Err(format!(
                "{} records ({framed} bytes framed) + {torn} torn + {damaged} damaged bytes != {} bytes",
                lengths.len(),
                bytes.len()
            ));
        }
        Ok(())
    });
}

/// Records and where the file is cut.
#[derive(Clone, Debug)]
pub struct Cut {
    records: Vec<Vec<u8>>,
    at: prop::sample::Index,
}

impl FuzzInput for Cut {
    fn bytes(&self) -> Vec<u8> {
        self.records.concat()
    }
}

#[test]
fn journal_torn_tail() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The recorder never journals an empty payload; a zero-length record reads as the
    // zeros a power cut leaves, i.e. the torn tail.
    let records = prop::collection::vec(
        bytes(300).prop_filter("non-empty", |r| !r.is_empty()),
        0..20,
    );
    let input =
        (records, any::<prop::sample::Index>()).prop_map(|(records, at)| Cut { records, at });
    fuzz("journal_torn_tail", input, |cut| {
        let whole = journal_bytes(dir.path(), &cut.records);
        let at = cut.at.index(whole.len() + 1);
        let (lengths, torn, damaged) = scan(dir.path(), &whole[..at])?;
        let mut end = 0;
        let mut expect = Vec::new();
        for r in &cut.records {
            if end + 8 + r.len() > at {
                break;
            }
            end += 8 + r.len();
            expect.push(r.len());
        }
        if lengths != expect || torn != (at - end) as u64 || damaged != 0 {
            return Err(format!(
                "cut at {at} of {}: delivered {lengths:?} with {torn} torn and {damaged} \
                 damaged bytes, expected {expect:?} with {} torn",
                whole.len(),
                at - end
            ));
        }
        Ok(())
    });
}
