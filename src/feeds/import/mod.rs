//! Importers: files in other formats (raw Binance captures, Tardis CSV, LOBSTER,
//! Databento DBN) turned into ticktape events, plus book reconstruction at a time.
//!
//! Owns format detection, the one [`import`] entry point, `pub_seq` assignment and the
//! per-(venue, symbol) `ts_recv` order check ([`Sequencer`]). Every importer streams its
//! input (gzip and zstd are decoded on the fly, CSVs are read line by line) and pushes
//! events into an [`EventSink`]; it never knows where they go and never writes files.
//!
//! What each format cannot represent is stated in its module doc and in `docs/IMPORT.md`.
//!
//! ```no_run
//! use std::path::PathBuf;
//! use ticktape::event::Event;
//! use ticktape::feeds::import::{import, ImportFormat, ImportOptions};
//!
//! let mut events: Vec<Event> = Vec::new();
//! let files = [PathBuf::from("btcusdt_20240808.gz"), PathBuf::from("btcusdt_20240809.gz")];
//! let stats = import(ImportFormat::Auto, &files, &ImportOptions::default(), &mut events, &|_| {})?;
//! println!("{} book levels, {} trades", stats.book_deltas, stats.trades);
//! # anyhow::Ok(())
//! ```

pub mod binance_raw;
pub mod book_at;
pub mod dbn;
pub mod lobster;
pub mod tardis;

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use anyhow::{Context, Result, bail};

use crate::event::{Body, Event, EventSink, Kind, UnixNanos};

pub use book_at::{book_at, check_instrument, exact_mid, render_book};

/// Which importer reads a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImportFormat {
    /// Look at the file name and first line (see [`detect_format`]).
    Auto,
    /// `<local_ns> <json>` lines (gzip or plain) of Binance combined streams plus REST
    /// depth snapshots, as captured by hftbacktest's collector.
    BinanceRaw,
    /// Tardis.dev CSV: `incremental_book_L2`, `trades` or `book_snapshot_N` (told apart
    /// by the header).
    Tardis,
    /// A LOBSTER `*_message_N.csv` file.
    Lobster,
    /// Databento DBN (`.dbn` or `.dbn.zst`): MBO, MBP-1, MBP-10 or trades.
    Dbn,
}

impl ImportFormat {
    /// Names accepted by [`FromStr`], for CLI help.
    pub const NAMES: &'static [&'static str] = &["auto", "binance-raw", "tardis", "lobster", "dbn"];

    /// The stable name (`binance-raw`, `tardis`, ...).
    pub fn name(self) -> &'static str {
        match self {
            ImportFormat::Auto => "auto",
            ImportFormat::BinanceRaw => "binance-raw",
            ImportFormat::Tardis => "tardis",
            ImportFormat::Lobster => "lobster",
            ImportFormat::Dbn => "dbn",
        }
    }
}

impl fmt::Display for ImportFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ImportFormat {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<ImportFormat> {
        Ok(match s {
            "auto" => ImportFormat::Auto,
            "binance-raw" | "binance" => ImportFormat::BinanceRaw,
            "tardis" => ImportFormat::Tardis,
            "lobster" => ImportFormat::Lobster,
            "dbn" | "databento" => ImportFormat::Dbn,
            other => bail!(
                "unknown import format {other:?}; expected one of {}",
                ImportFormat::NAMES.join(", ")
            ),
        })
    }
}

/// Knobs shared by the importers; every field has a sensible default.
#[derive(Clone, Debug, Default)]
pub struct ImportOptions {
    /// Venue name to store under, overriding the importer's choice (`binance`,
    /// `binance-usdm`, `binance-coinm`, `cme`, `nasdaq`, or the Tardis exchange name).
    pub venue: Option<String>,
    /// Symbol to store under, overriding the one found in the file (or its name).
    pub symbol: Option<String>,
    /// LOBSTER only: the matching `*_orderbook_N.csv`; its first row seeds the book so
    /// levels that existed before the first message are known (`--lobster-book`).
    pub lobster_book: Option<PathBuf>,
}

/// What an import produced, for the summary line and for tests.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ImportStats {
    /// Files read.
    pub files: u64,
    /// Input records read (lines, CSV rows or DBN records).
    pub records: u64,
    /// Book-delta events emitted (one per price level).
    pub book_deltas: u64,
    /// Trade events emitted.
    pub trades: u64,
    /// Gap events emitted.
    pub gaps: u64,
    /// Input records deliberately not turned into events (e.g. Binance `bookTicker`,
    /// DBN definitions), by what they were.
    pub skipped: u64,
    /// Things the user should know about the result (book never synchronised, ...).
    pub warnings: Vec<String>,
}

impl fmt::Display for ImportStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} file(s), {} records -> {} book levels, {} trades, {} gaps ({} records skipped)",
            self.files, self.records, self.book_deltas, self.trades, self.gaps, self.skipped
        )?;
        for w in &self.warnings {
            write!(f, "\nwarning: {w}")?;
        }
        Ok(())
    }
}

/// Imports `paths` in the order given, as one continuous stream (a day's file followed
/// by the next day's continues its book and sequence ids).
///
/// `progress` is called now and then with the input bytes read so far, summed over the
/// files (compressed bytes for `.gz`/`.zst`), so a bar sized by the files' total fits.
/// Events reach `sink` with `pub_seq` assigned per (kind, venue, symbol) and in
/// non-decreasing `ts_recv` per (venue, symbol); a file that would break that order is
/// refused. With [`ImportFormat::Auto`] every file must be of the same detected format.
pub fn import(
    format: ImportFormat,
    paths: &[PathBuf],
    opts: &ImportOptions,
    sink: &mut dyn EventSink,
    progress: &dyn Fn(u64),
) -> Result<ImportStats> {
    let Some(first) = paths.first() else {
        bail!("nothing to import: no input file given");
    };
    let format = match format {
        ImportFormat::Auto => {
            let detected = detect_format(first)?;
            for other in &paths[1..] {
                let f = detect_format(other)?;
                if f != detected {
                    bail!(
                        "{} looks like {f} but {} looks like {detected}; import one format at a time",
                        other.display(),
                        first.display()
                    );
                }
            }
            detected
        }
        f => f,
    };
    let mut stats = ImportStats::default();
    let mut seq = Sequencer::new(sink);
    match format {
        ImportFormat::BinanceRaw => {
            binance_raw::import(paths, opts, &mut seq, &mut stats, progress)?
        }
        ImportFormat::Tardis | ImportFormat::Lobster | ImportFormat::Dbn => {
            // Per-file importers count their own bytes; report a running total.
            let mut done = 0u64;
            // DBN files continue one another: MBO order maps and open events carry over.
            let mut dbn_carry = dbn::Carry::default();
            for path in paths {
                let file_progress = |n: u64| progress(done + n);
                match format {
                    ImportFormat::Tardis => {
                        tardis::import(path, opts, &mut seq, &mut stats, &file_progress)?
                    }
                    ImportFormat::Lobster => {
                        lobster::import(path, opts, &mut seq, &mut stats, &file_progress)?
                    }
                    _ => dbn::import(
                        path,
                        opts,
                        &mut dbn_carry,
                        &mut seq,
                        &mut stats,
                        &file_progress,
                    )?,
                }
                done += std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
            }
            if format == ImportFormat::Dbn {
                dbn_carry.finish(&mut seq, &mut stats)?;
            }
        }
        ImportFormat::Auto => unreachable!("resolved above"),
    }
    stats.files = paths.len() as u64;
    (stats.book_deltas, stats.trades, stats.gaps) = seq.counts;
    Ok(stats)
}

/// Guesses a file's format from its name and first line, or refuses with an error that
/// names the file, what was found and what was expected.
pub fn detect_format(path: &Path) -> Result<ImportFormat> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    if name.ends_with(".dbn") || name.ends_with(".dbn.zst") {
        return Ok(ImportFormat::Dbn);
    }
    let mut reader = open_text(path)?;
    let mut first = String::new();
    reader
        .read_line(&mut first)
        .with_context(|| format!("cannot read the first line of {}", path.display()))?;
    let line = first.trim_end();
    if binance_raw::looks_like(line) {
        return Ok(ImportFormat::BinanceRaw);
    }
    if line.starts_with("exchange,symbol,timestamp,local_timestamp,") {
        return Ok(ImportFormat::Tardis);
    }
    if name.contains("_message_") && lobster::looks_like(line) {
        return Ok(ImportFormat::Lobster);
    }
    let shown: String = line.chars().take(80).collect();
    bail!(
        "cannot tell the format of {}: expected a Binance raw capture (`<local_ns> {{json}}` lines, \
         .gz), a Tardis CSV (header `exchange,symbol,timestamp,local_timestamp,...`), a LOBSTER \
         `*_message_N.csv` or a Databento `.dbn`/`.dbn.zst` file; its first line is {shown:?}. \
         Pass --format to force one.",
        path.display()
    )
}

/// Stamps `pub_seq` per (kind, venue, symbol) and refuses events that fail
/// [`Event::validate`] or whose `ts_recv` goes back in time for their (venue, symbol):
/// every importer sends its events through one.
///
/// A live feed can wrap its sink in one too.
pub struct Sequencer<'a> {
    inner: &'a mut dyn EventSink,
    next: HashMap<(Kind, Arc<str>, Arc<str>), u64>,
    last_recv: HashMap<(Arc<str>, Arc<str>), UnixNanos>,
    /// Book deltas, trades and gaps passed on.
    counts: (u64, u64, u64),
}

impl<'a> Sequencer<'a> {
    /// Wraps `inner`; counters start at 1 for each topic.
    pub fn new(inner: &'a mut dyn EventSink) -> Sequencer<'a> {
        Sequencer {
            inner,
            next: HashMap::new(),
            last_recv: HashMap::new(),
            counts: (0, 0, 0),
        }
    }
}

impl EventSink for Sequencer<'_> {
    fn accept(&mut self, mut event: Event) -> Result<()> {
        event.validate().map_err(|e| {
            anyhow::anyhow!(
                "refused a {} event at ts_recv {}: {e}",
                event.kind().name(),
                event.ts_recv
            )
        })?;
        let place = (event.venue.clone(), event.symbol.clone());
        match self.last_recv.get_mut(&place) {
            Some(last) if event.ts_recv < *last => bail!(
                "{}/{}: ts_recv {} goes back in time (previous event at {}); the input is not in \
                 receive-time order (are the files given in chronological order?)",
                event.venue,
                event.symbol,
                event.ts_recv,
                last
            ),
            Some(last) => *last = event.ts_recv,
            None => {
                self.last_recv.insert(place, event.ts_recv);
            }
        }
        let counter = self
            .next
            .entry((event.kind(), event.venue.clone(), event.symbol.clone()))
            .or_insert(1);
        event.pub_seq = *counter;
        match event.body {
            Body::Book(_) => self.counts.0 += 1,
            Body::Trade(_) => self.counts.1 += 1,
            Body::Gap(_) => self.counts.2 += 1,
            _ => {}
        }
        *counter += 1;
        self.inner.accept(event)
    }
}

/// Counts bytes read from the underlying file, so progress reports compressed input.
pub(crate) struct CountingReader<R> {
    inner: R,
    /// Bytes read so far.
    pub(crate) count: Arc<std::sync::atomic::AtomicU64>,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }
}

/// Opens a text file for line reading, transparently gunzipping `.gz` (by magic bytes).
pub(crate) fn open_text(path: &Path) -> Result<Box<dyn BufRead>> {
    open_text_counted(path, Arc::default())
}

/// [`open_text`] that adds the compressed bytes read to `count`.
pub(crate) fn open_text_counted(
    path: &Path,
    count: Arc<std::sync::atomic::AtomicU64>,
) -> Result<Box<dyn BufRead>> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut raw = BufReader::with_capacity(1 << 16, CountingReader { inner: file, count });
    let magic = raw
        .fill_buf()
        .with_context(|| format!("cannot read {}", path.display()))?;
    if magic.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(BufReader::with_capacity(
            1 << 16,
            flate2::bufread::MultiGzDecoder::new(raw),
        )))
    } else {
        Ok(Box::new(raw))
    }
}

/// Reads one line into `buf` (cleared first, trailing newline removed); `Ok(false)` at end
/// of file. I/O and decompression errors name the file and line.
pub(crate) fn next_line(
    reader: &mut dyn BufRead,
    buf: &mut String,
    path: &Path,
    line_no: u64,
) -> Result<bool> {
    buf.clear();
    let n = reader.read_line(buf).with_context(|| {
        format!(
            "{}:{line_no}: cannot read (truncated or corrupt file?)",
            path.display()
        )
    })?;
    if n == 0 {
        return Ok(false);
    }
    while buf.ends_with('\n') || buf.ends_with('\r') {
        buf.pop();
    }
    Ok(true)
}

/// The file's name without directories and without `.gz`/`.csv`/`.zst` suffixes.
pub(crate) fn file_stem(path: &Path) -> String {
    let mut name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    for suffix in [".gz", ".zst", ".csv", ".dbn"] {
        if let Some(s) = name.strip_suffix(suffix) {
            name = s.to_string();
        }
    }
    name
}

#[cfg(test)]
pub(crate) mod testdata {
    //! Paths to the real market data the tests use.
    use std::path::PathBuf;

    /// `<rel>` under the shared real data (`$TICKTAPE_REAL_DATA`, else
    /// `shared/data/real` beside the repository, else `/work/shared/data/real`), or `None`
    /// with a line saying the test skipped it. Under CI (`CI` set) a missing file fails
    /// the test instead: a test that cannot run must not pass.
    pub fn real(rel: &str) -> Option<PathBuf> {
        let beside = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/real");
        let root = match std::env::var_os("TICKTAPE_REAL_DATA") {
            Some(dir) => PathBuf::from(dir),
            None if beside.is_dir() => beside,
            None => PathBuf::from("/work/shared/data/real"),
        };
        let p = root.join(rel);
        if p.exists() {
            return Some(p);
        }
        if std::env::var_os("CI").is_some() {
            panic!(
                "CI is set but the real data file {} is missing",
                p.display()
            );
        }
        eprintln!("skipped: {} not present", p.display());
        None
    }

    /// The error importing `path` as `format` with default options (panics if the import
    /// succeeded); what was accepted before the error is left in `events`.
    pub fn import_error(
        format: super::ImportFormat,
        path: PathBuf,
        events: &mut Vec<crate::event::Event>,
    ) -> anyhow::Error {
        super::import(
            format,
            &[path],
            &super::ImportOptions::default(),
            events,
            &|_| {},
        )
        .expect_err("the import should have failed")
    }

    /// `tests/fixtures/<rel>` in this repository.
    pub fn fixture(rel: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(rel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detect_refuses_unknown_files_naming_them() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("notes.txt");
        std::fs::write(&p, "hello world\n").unwrap();
        let err = detect_format(&p).unwrap_err().to_string();
        assert!(err.contains("notes.txt"), "{err}");
        assert!(err.contains("hello world"), "{err}");
        assert!(err.contains("Tardis"), "{err}");
    }

    #[test]
    fn sequencer_numbers_topics_and_refuses_time_travel() {
        let mut out: Vec<Event> = Vec::new();
        let mut seq = Sequencer::new(&mut out);
        let ev = |ts: i64, kind_trade: bool| Event {
            venue: Arc::from("v"),
            symbol: Arc::from("S"),
            ts_event: ts,
            ts_recv: ts,
            venue_seq: None,
            prev_venue_seq: None,
            pub_seq: 0,
            body: if kind_trade {
                Body::Trade(crate::event::Trade {
                    price: crate::event::Fixed::new(1, 0),
                    size: crate::event::Fixed::new(1, 0),
                    aggressor: crate::event::Side::Bid,
                    trade_id: Default::default(),
                })
            } else {
                Body::Gap(crate::event::Gap {
                    reason: crate::event::GapReason::VenueSeq,
                    missing: None,
                    publisher: String::new(),
                })
            },
        };
        seq.accept(ev(1, true)).unwrap();
        seq.accept(ev(2, false)).unwrap();
        seq.accept(ev(2, true)).unwrap();
        assert!(seq.accept(ev(1, true)).is_err());
        let seqs: Vec<u64> = out.iter().map(|e| e.pub_seq).collect();
        assert_eq!(seqs, vec![1, 1, 2]);
    }
}
