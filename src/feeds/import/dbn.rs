//! Importer for Databento DBN files (`.dbn`, or zstd `.dbn.zst`, every frame read),
//! decoded with the official `dbn` crate: MBO, MBP-1, MBP-10 and trades schemas.
//!
//! Owns the mapping of DBN records to ticktape events; never writes anything itself.
//! Venue: `cme` for `GLBX.MDP3`, `nasdaq` for `XNAS.ITCH`, else the dataset name in lower
//! case. Symbol: the file's symbology (raw symbol such as `ESH4`), else the instrument id.
//! `ts_event` and `ts_recv` are DBN's own (ns; `ts_recv` is Databento's capture time);
//! `venue_seq` is the record's `sequence` (no `prev_venue_seq`: CME sequences are per
//! channel, not per instrument).
//!
//! Prices are int64 × 10⁻⁹: each is read at scale 9 and stripped of trailing zeros down to
//! the instrument's scale, which starts at the first price's and only grows (ES ticks of
//! 0.25 give scale 2; if the very first prices are whole numbers the earliest events can
//! carry a smaller scale, equal in value). Sizes are whole contracts/shares (scale 0).
//!
//! - MBO: orders are aggregated to price levels. `A` adds, `C` removes the cancelled size,
//!   `M` moves/resizes the order, `R` deletes every level of the instrument. `T` (trade)
//!   emits a trade; `F` (fill) is the resting side of that same trade and changes
//!   nothing (the book is reduced by the `C` that follows), so trades are never counted
//!   twice. One book delta per order event, carrying the level's new total.
//! - MBP-1 / MBP-10: each record's top-N levels are diffed against the previous ones:
//!   changed levels are emitted, levels that left the window are deleted. Action `T`
//!   records also emit a trade.
//! - Trades: one trade per record (`side` is the aggressor; `N` → none).
//! - `LAST` goes on the last book delta of each DBN event (records up to `F_LAST`); a run
//!   of `F_SNAPSHOT` records becomes one ticktape snapshot with a single `LAST`.
//! - Other schemas (definitions, OHLCV, status, statistics, ...) are skipped and counted.
//!
//! Cannot represent: order ids and queue order (aggregated away); per-level order counts;
//! levels beyond MBP-N's depth (a level leaving the window looks deleted); whether a
//! `T` without `F` hit hidden liquidity.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result, bail};
use dbn::decode::{DbnMetadata, DecodeRecordRef, DynDecoder};
use dbn::symbol_map::SymbolIndex;
use dbn::{
    Compression, FlagSet, MboMsg, Mbp1Msg, Mbp10Msg, Record, RecordRef, RecordRefEnum, TradeMsg,
    VersionUpgradePolicy,
};

use super::{CountingReader, ImportOptions, ImportStats};
use crate::event::{Body, BookDelta, Event, EventSink, Fixed, Flags, Interner, Side, Trade};

/// Venue name for a Databento dataset code.
pub fn venue_for_dataset(dataset: &str) -> String {
    match dataset {
        "GLBX.MDP3" => "cme".to_string(),
        "XNAS.ITCH" => "nasdaq".to_string(),
        other => other.to_ascii_lowercase(),
    }
}

fn side_of(c: std::ffi::c_char) -> Side {
    match c as u8 {
        b'B' => Side::Bid,
        b'A' => Side::Ask,
        _ => Side::None,
    }
}

/// Per-instrument state.
#[derive(Default)]
struct Instrument {
    symbol: Option<Arc<str>>,
    /// Price scale chosen so far (grows only).
    scale: u8,
    scale_set: bool,
    /// MBO: order id → (side, price, size).
    orders: HashMap<u64, (Side, i64, i64)>,
    /// Aggregate size per (side, raw price).
    levels: HashMap<(Side, i64), i64>,
    /// MBP: last seen top-N as (side, raw price, size).
    window: Vec<(Side, i64, i64)>,
    /// Inside a run of `F_SNAPSHOT` records (until one with `F_LAST`, or a live record).
    in_snapshot: bool,
}

impl Instrument {
    fn price(&mut self, raw: i64) -> Fixed {
        let exact = Fixed::new(raw, 9).normalized();
        if !self.scale_set || exact.scale > self.scale {
            self.scale = exact.scale.max(if self.scale_set { self.scale } else { 0 });
            self.scale_set = true;
        }
        exact.rescale(self.scale).unwrap_or(exact)
    }
}

/// Events of the current DBN event (up to a record with `F_LAST`), so `LAST` can go on
/// its final book delta.
#[derive(Default)]
struct Group {
    events: Vec<Event>,
    snapshot: bool,
}

impl Group {
    fn finish(&mut self, sink: &mut dyn EventSink) -> Result<()> {
        if let Some(Body::Book(d)) = self
            .events
            .iter_mut()
            .rev()
            .find(|e| matches!(e.body, Body::Book(_)))
            .map(|e| &mut e.body)
        {
            d.flags = d.flags.with(Flags::LAST);
        }
        for e in self.events.drain(..) {
            sink.accept(e)?;
        }
        Ok(())
    }
}

/// State carried from one file to the next of one import: the files given together are
/// one stream, so an MBO order added in the first and cancelled in the second, or a DBN
/// event split across two files, come out exactly as from the whole file.
#[derive(Default)]
pub struct Carry {
    /// Per-instrument books, MBO order maps and MBP windows, by instrument id.
    instruments: HashMap<u32, Instrument>,
    /// The DBN event in progress (a file may end before its `F_LAST` record).
    group: Group,
    names: Interner,
    /// MBO cancels and modifies of orders never added: their size is unknown.
    unknown_orders: u64,
}

impl Carry {
    /// Ends the stream: emits the DBN event still open and warns about what could not be
    /// known.
    pub fn finish(&mut self, sink: &mut dyn EventSink, stats: &mut ImportStats) -> Result<()> {
        self.group.finish(sink)?;
        if self.unknown_orders > 0 {
            stats.warnings.push(format!(
                "{} MBO cancel/modify record(s) named orders never added, so their levels may \
                 be off until the next snapshot; give the earlier files too, in order, or \
                 start from a file with a snapshot",
                self.unknown_orders
            ));
        }
        Ok(())
    }
}

/// Imports one DBN file, continuing the stream in `carry` (call [`Carry::finish`] after
/// the last file).
pub fn import(
    path: &Path,
    opts: &ImportOptions,
    carry: &mut Carry,
    sink: &mut dyn EventSink,
    stats: &mut ImportStats,
    progress: &dyn Fn(u64),
) -> Result<()> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let file_len = file.metadata().map_or(u64::MAX, |m| m.len());
    let bytes = Arc::new(AtomicU64::new(0));
    let mut raw = BufReader::new(CountingReader {
        inner: file,
        count: bytes.clone(),
    });
    let zstd_magic = raw
        .fill_buf()
        .with_context(|| format!("cannot read {}", path.display()))?
        .starts_with(&[0x28, 0xb5, 0x2f, 0xfd]);
    let inner: Box<dyn Read> = if zstd_magic {
        // The zstd decoder reads every frame (files written in parts have several).
        Box::new(
            zstd::stream::read::Decoder::with_buffer(raw)
                .with_context(|| format!("{}: cannot start zstd decoding", path.display()))?,
        )
    } else {
        Box::new(raw)
    };
    let tally = Tally {
        inner,
        delivered: Arc::new(AtomicU64::new(0)),
        head: Arc::new(std::sync::Mutex::new(Vec::with_capacity(8))),
        next_record: None,
        // The decoder allocates the whole metadata up front: a plain file cannot hold
        // more than its size, a compressed one is held to a bound.
        max_metadata: if zstd_magic {
            MAX_COMPRESSED_METADATA
        } else {
            file_len.saturating_sub(8)
        },
    };
    let (delivered, head) = (tally.delivered.clone(), tally.head.clone());
    // `AsIs`: MBO/MBP/trade layouts are identical in every DBN version, and record
    // sizes must stay the on-disk ones for the completeness check below.
    let mut decoder = DynDecoder::new(tally, Compression::None, VersionUpgradePolicy::AsIs)
        .with_context(|| {
            format!(
                "{}: not a readable DBN file (expected DBN metadata, optionally zstd-compressed)",
                path.display()
            )
        })?;
    let mut record_bytes = 0u64;
    let metadata = decoder.metadata().clone();
    let symbols = metadata.symbol_map().ok();
    let Carry {
        instruments,
        group,
        names,
        unknown_orders,
    } = carry;
    let venue = names.intern(
        opts.venue
            .as_deref()
            .unwrap_or(&venue_for_dataset(&metadata.dataset)),
    );
    let mut record_no = 0u64;
    loop {
        let rec = decoder.decode_record_ref().with_context(|| {
            format!(
                "{}: record {}: cannot decode (truncated or corrupt file?)",
                path.display(),
                record_no + 1
            )
        })?;
        let Some(rec) = rec else { break };
        record_no += 1;
        stats.records += 1;
        record_bytes += rec.record_size() as u64;
        if record_no.is_multiple_of(65_536) {
            progress(bytes.load(Ordering::Relaxed));
        }
        let rec_enum = match readable(rec) {
            Ok(Some(r)) => r,
            // Another record type (or one this crate version does not know): nothing
            // we model.
            Ok(None) => {
                stats.skipped += 1;
                continue;
            }
            Err(e) => bail!(
                "{}: record {record_no}: corrupt DBN record: {e}",
                path.display()
            ),
        };
        let (hd, flags, ts_recv, sequence) = match rec_enum {
            RecordRefEnum::Mbo(m) => (&m.hd, m.flags, m.ts_recv, m.sequence),
            RecordRefEnum::Mbp1(m) => (&m.hd, m.flags, m.ts_recv, m.sequence),
            RecordRefEnum::Mbp10(m) => (&m.hd, m.flags, m.ts_recv, m.sequence),
            RecordRefEnum::Trade(m) => (&m.hd, m.flags, m.ts_recv, m.sequence),
            _ => {
                stats.skipped += 1;
                continue;
            }
        };
        let inst = instruments.entry(hd.instrument_id).or_default();
        let symbol = match &inst.symbol {
            Some(s) => s.clone(),
            None => {
                let name = match (
                    &opts.symbol,
                    symbols.as_ref().and_then(|m| m.get_for_rec(&rec_enum)),
                ) {
                    (Some(s), _) => s.clone(),
                    (None, Some(s)) => s.clone(),
                    (None, None) => hd.instrument_id.to_string(),
                };
                let s = names.intern(&name);
                inst.symbol = Some(s.clone());
                s
            }
        };
        let snapshot = flags.is_snapshot();
        let starts_snapshot = snapshot && !inst.in_snapshot;
        inst.in_snapshot = snapshot && !is_last(flags);
        if starts_snapshot && matches!(rec_enum, RecordRefEnum::Mbo(_)) {
            // An MBO snapshot is the whole book: it replaces the orders carried so far
            // (Databento's daily files each open with one, without an `R`), and the
            // snapshot before it ends here so a reader clears its book too.
            inst.orders.clear();
            inst.levels.clear();
            if !group.events.is_empty() {
                group.finish(sink)?;
            }
        }
        if snapshot != group.snapshot && !group.events.is_empty() {
            group.finish(sink)?;
        }
        group.snapshot = snapshot;
        // DBN times are u64 ns; UNDEF_TIMESTAMP (u64::MAX) or anything past 2262 does not
        // fit the i64 ns every ticktape time is, and must not wrap to a negative time.
        let time = |ns: u64, what: &str| {
            i64::try_from(ns).with_context(|| {
                format!(
                    "{}: record {record_no}: {what} {ns} is not a time ticktape can store \
                     (undefined, or past 2262); this record cannot be imported",
                    path.display()
                )
            })
        };
        let base = Event {
            venue: venue.clone(),
            symbol,
            ts_event: time(hd.ts_event, "ts_event")?,
            ts_recv: time(ts_recv, "ts_recv")?,
            venue_seq: Some(sequence as u64),
            prev_venue_seq: None,
            pub_seq: 0,
            body: Body::Book(BookDelta {
                side: Side::None,
                price: Fixed::ZERO,
                size: Fixed::ZERO,
                flags: if snapshot {
                    Flags::SNAPSHOT
                } else {
                    Flags::default()
                },
            }),
        };
        let level = |inst: &mut Instrument, side: Side, raw: i64| -> Event {
            let size = inst.levels.get(&(side, raw)).copied().unwrap_or(0);
            let mut e = base.clone();
            if let Body::Book(d) = &mut e.body {
                d.side = side;
                d.price = inst.price(raw);
                d.size = Fixed::new(size.max(0), 0);
            }
            e
        };
        let trade = |inst: &mut Instrument, raw: i64, size: u32, side| -> Event {
            let mut e = base.clone();
            e.body = Body::Trade(Trade {
                price: inst.price(raw),
                size: Fixed::new(size as i64, 0),
                aggressor: side,
                trade_id: compact_str::ToCompactString::to_compact_string(&sequence),
            });
            e
        };
        match rec_enum {
            RecordRefEnum::Mbo(m) => {
                let side = side_of(m.side);
                match m.action as u8 {
                    b'A' => {
                        inst.orders
                            .insert(m.order_id, (side, m.price, m.size as i64));
                        *inst.levels.entry((side, m.price)).or_insert(0) += m.size as i64;
                        group.events.push(level(inst, side, m.price));
                    }
                    b'C' => {
                        let (side, price) = match inst.orders.get_mut(&m.order_id) {
                            Some(o) => {
                                o.2 -= m.size as i64;
                                let key = (o.0, o.1);
                                if o.2 <= 0 {
                                    inst.orders.remove(&m.order_id);
                                }
                                key
                            }
                            None => {
                                *unknown_orders += 1;
                                (side, m.price)
                            }
                        };
                        reduce(inst, side, price, m.size as i64);
                        group.events.push(level(inst, side, price));
                    }
                    b'M' => {
                        if let Some((old_side, old_price, old_size)) =
                            inst.orders.remove(&m.order_id)
                        {
                            reduce(inst, old_side, old_price, old_size);
                            if (old_side, old_price) != (side, m.price) {
                                group.events.push(level(inst, old_side, old_price));
                            }
                        } else {
                            *unknown_orders += 1;
                        }
                        inst.orders
                            .insert(m.order_id, (side, m.price, m.size as i64));
                        *inst.levels.entry((side, m.price)).or_insert(0) += m.size as i64;
                        group.events.push(level(inst, side, m.price));
                    }
                    b'R' => {
                        inst.orders.clear();
                        let mut old: Vec<(Side, i64)> =
                            inst.levels.drain().map(|(k, _)| k).collect();
                        old.sort();
                        for (side, price) in old {
                            group.events.push(level(inst, side, price));
                        }
                    }
                    b'T' => group.events.push(trade(inst, m.price, m.size, side)),
                    _ => {}
                }
            }
            RecordRefEnum::Mbp1(m) => {
                if m.action as u8 == b'T' {
                    group
                        .events
                        .push(trade(inst, m.price, m.size, side_of(m.side)));
                }
                let top = window(&m.levels);
                diff_window(inst, top, &mut group.events, &level);
            }
            RecordRefEnum::Mbp10(m) => {
                if m.action as u8 == b'T' {
                    group
                        .events
                        .push(trade(inst, m.price, m.size, side_of(m.side)));
                }
                let top = window(&m.levels);
                diff_window(inst, top, &mut group.events, &level);
            }
            RecordRefEnum::Trade(m) => {
                group
                    .events
                    .push(trade(inst, m.price, m.size, side_of(m.side)))
            }
            _ => {}
        }
        if !snapshot && is_last(flags) {
            group.finish(sink)?;
        } else if group.events.len() > 1_000_000 {
            // A source that never sets F_LAST: do not hold the whole file.
            group.finish(sink)?;
        }
    }
    // A DBN event still open (no F_LAST yet) continues in the next file, or is emitted by
    // `Carry::finish`.
    // The decoder treats a cut-off record as the end of the stream: compare what was
    // decompressed with the metadata and the records decoded.
    let meta_len = {
        let head = head.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        match head.get(4..8) {
            Some(b) => 8 + u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as u64,
            None => 0,
        }
    };
    let total = delivered.load(Ordering::Relaxed);
    if total != meta_len + record_bytes {
        bail!(
            "{}: truncated or corrupt DBN file: {} bytes after record {record_no} do not form \
             a whole record (was the download or copy cut short?)",
            path.display(),
            total.saturating_sub(meta_len + record_bytes)
        );
    }
    progress(bytes.load(Ordering::Relaxed));
    Ok(())
}

/// Counts decompressed bytes and keeps the first 8 (DBN's prefix with the metadata
/// length); turns an unexpected end inside a zstd frame into an error the decoder
/// reports instead of taking it for the end of the file.
///
/// Also checks each record's length byte before the decoder sees it: a length that is
/// not a whole multiple of 8 bytes (at least the 16-byte header) is an error, because
/// the `dbn` crate would read the next record through a misaligned pointer (a panic in
/// debug builds, undefined behaviour in release ones). Every real record is such a
/// multiple.
struct Tally {
    inner: Box<dyn Read>,
    delivered: Arc<AtomicU64>,
    head: Arc<std::sync::Mutex<Vec<u8>>>,
    /// Stream offset of the next record's length byte, once the metadata length is known.
    next_record: Option<u64>,
    /// Longest metadata accepted, in bytes: the `dbn` decoder allocates what the prefix
    /// announces before reading it, so a corrupt length must not reach it.
    max_metadata: u64,
}

/// Longest DBN metadata accepted in a zstd-compressed file (symbol mappings of a whole
/// market stay well below it); an uncompressed file's bound is its own size.
const MAX_COMPRESSED_METADATA: u64 = 64 << 20;

impl Read for Tally {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("compressed stream cut short: {e}"),
                )
            } else {
                e
            }
        })?;
        let before = self.delivered.fetch_add(n as u64, Ordering::Relaxed);
        if before < 8
            && let Ok(mut head) = self.head.lock()
        {
            let take = (8 - before as usize).min(n);
            head.extend_from_slice(&buf[..take]);
            if let Some(b) = head.get(4..8) {
                let metadata = u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
                if metadata > self.max_metadata {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "the DBN prefix announces {metadata} bytes of metadata, more than \
                             the {} bytes the file can hold",
                            self.max_metadata
                        ),
                    ));
                }
                self.next_record = Some(8 + metadata);
            }
        }
        let end = before + n as u64;
        while let Some(at) = self.next_record.filter(|&at| at < end) {
            // The header's first byte is the record length in 4-byte words.
            let len = u64::from(buf[(at - before) as usize]) * 4;
            if len < 16 || !len.is_multiple_of(8) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "the record at byte {at} says it is {len} bytes long; DBN records are \
                         whole multiples of 8 bytes, at least 16"
                    ),
                ));
            }
            self.next_record = Some(at + len);
        }
        Ok(n)
    }
}

/// The record as one of the four types the importer reads, checked to be as long as
/// that type (`RecordRef::as_enum` takes any record for its rtype's struct without
/// looking at its length: an out-of-bounds read when a corrupt file says MBO in a
/// 16-byte record); `None` for any other record type.
fn readable(rec: RecordRef<'_>) -> dbn::Result<Option<RecordRefEnum<'_>>> {
    Ok(Some(if rec.has::<MboMsg>() {
        RecordRefEnum::Mbo(rec.try_get()?)
    } else if rec.has::<Mbp1Msg>() {
        RecordRefEnum::Mbp1(rec.try_get()?)
    } else if rec.has::<Mbp10Msg>() {
        RecordRefEnum::Mbp10(rec.try_get()?)
    } else if rec.has::<TradeMsg>() {
        RecordRefEnum::Trade(rec.try_get()?)
    } else {
        return Ok(None);
    }))
}

fn is_last(flags: FlagSet) -> bool {
    flags.is_last()
}

fn reduce(inst: &mut Instrument, side: Side, price: i64, by: i64) {
    if let Some(size) = inst.levels.get_mut(&(side, price)) {
        *size -= by;
        if *size <= 0 {
            inst.levels.remove(&(side, price));
        }
    }
}

/// The levels of an MBP record as `(side, raw price, size)`, undefined prices left out.
fn window(levels: &[dbn::BidAskPair]) -> Vec<(Side, i64, i64)> {
    let mut out = Vec::with_capacity(levels.len() * 2);
    for l in levels {
        if l.bid_px != dbn::UNDEF_PRICE && l.bid_sz > 0 {
            out.push((Side::Bid, l.bid_px, l.bid_sz as i64));
        }
        if l.ask_px != dbn::UNDEF_PRICE && l.ask_sz > 0 {
            out.push((Side::Ask, l.ask_px, l.ask_sz as i64));
        }
    }
    out
}

/// Emits the difference between the instrument's previous MBP window and `top`.
fn diff_window(
    inst: &mut Instrument,
    top: Vec<(Side, i64, i64)>,
    out: &mut Vec<Event>,
    level: &dyn Fn(&mut Instrument, Side, i64) -> Event,
) {
    let old = std::mem::take(&mut inst.window);
    for &(side, price, _) in &old {
        if !top.iter().any(|t| t.0 == side && t.1 == price) {
            inst.levels.remove(&(side, price));
            out.push(level(inst, side, price));
        }
    }
    for &(side, price, size) in &top {
        if !old.contains(&(side, price, size)) {
            inst.levels.insert((side, price), size);
            out.push(level(inst, side, price));
        }
    }
    inst.window = top;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::book::L2Book;
    use crate::feeds::import::testdata::{fixture, import_error, real};
    use crate::feeds::import::{ImportFormat, import as import_any};

    fn run(path: &Path) -> (Vec<Event>, ImportStats) {
        let mut events: Vec<Event> = Vec::new();
        let stats = import_any(
            ImportFormat::Auto,
            &[path.to_path_buf()],
            &ImportOptions::default(),
            &mut events,
            &|_| {},
        )
        .unwrap();
        (events, stats)
    }

    /// Applies events; returns (consistent points checked, crossed among them).
    fn crossed_at_last(events: &[Event]) -> (usize, usize) {
        let mut book = L2Book::new();
        let (mut checked, mut crossed) = (0, 0);
        for e in events {
            if let Body::Book(d) = &e.body {
                book.apply(d);
                if d.flags.contains(Flags::LAST) {
                    checked += 1;
                    crossed += book.is_crossed() as usize;
                }
            }
        }
        (checked, crossed)
    }

    #[test]
    fn futures_trades_count_and_size_match_databento() {
        let (events, stats) = run(&fixture(
            "dbn/futures_trades_2024-07-01T23-58_2024-07-02T00-02.dbn.zst",
        ));
        assert_eq!(stats.trades, 120);
        let mut sum = Fixed::ZERO;
        for e in &events {
            if let Body::Trade(t) = &e.body {
                sum = sum.checked_add(t.size).unwrap();
                assert_eq!(
                    t.price.scale, 2,
                    "ES prices strip to 2 decimals: {}",
                    t.price
                );
            }
        }
        assert_eq!(sum, Fixed::new(253, 0));
        assert_eq!(&*events[0].venue, "cme");
        assert_eq!(&*events[0].symbol, "ESU4");
    }

    #[test]
    fn mbo_snapshot_then_live_events_never_cross_at_event_boundaries() {
        let (events, stats) = run(&fixture(
            "dbn/orderbooks_mbo_2024-05-08T00-00-00_2024-05-08T00-00-02.dbn.zst",
        ));
        assert_eq!(stats.records, 13796);
        let (checked, crossed) = crossed_at_last(&events);
        assert!(checked > 50, "{checked}");
        assert_eq!(crossed, 0);
        assert_eq!(&*events[0].symbol, "ESM4");
        let first_live = events
            .iter()
            .position(|e| matches!(&e.body, Body::Book(d) if !d.flags.contains(Flags::SNAPSHOT)))
            .unwrap();
        let snapshot_lasts = events[..first_live]
            .iter()
            .filter(|e| matches!(&e.body, Body::Book(d) if d.flags.contains(Flags::LAST)))
            .count();
        assert_eq!(snapshot_lasts, 1, "the snapshot is one ticktape snapshot");
    }

    #[test]
    fn christmas_session_mbo_crosses_only_in_pre_open() {
        let Some(p) =
            real("nautilus_trader/tests/test_data/databento/esh4-glbx-mdp3-20231225.mbo.dbn.zst")
        else {
            return;
        };
        let (events, stats) = run(&p);
        assert_eq!(stats.records, 68792);
        let mut book = L2Book::new();
        let mut crossed_ts = Vec::new();
        for e in &events {
            if let Body::Book(d) = &e.body {
                book.apply(d);
                if d.flags.contains(Flags::LAST) && book.is_crossed() {
                    crossed_ts.push(e.ts_event);
                }
            }
        }
        assert!(stats.trades > 0);
        // CME's pre-open lets orders lock and cross until the opening match at 17:00 CT
        // (23:00 UTC); from the open on, the book never crosses at an event boundary.
        let open = 1_703_545_200_000_000_000;
        assert!(
            !crossed_ts.is_empty(),
            "the pre-open crosses in this sample"
        );
        assert!(
            crossed_ts.iter().all(|&t| t < open),
            "crossed after the open"
        );
    }

    #[test]
    fn mbp1_records_become_level_updates_and_trades() {
        let (events, stats) = run(&fixture(
            "dbn/futures_mbp-1_2024-07-01T23-58_2024-07-02T00-02.dbn.zst",
        ));
        assert_eq!(stats.records, 2288);
        assert_eq!(stats.trades, 120);
        let mut book = L2Book::new();
        for e in &events {
            if let Body::Book(d) = &e.body {
                book.apply(d);
            }
        }
        assert_eq!(book.depth(), (1, 1), "MBP-1 is a one-level window");
        assert!(!book.is_crossed());
    }

    #[test]
    fn small_v3_files_of_each_schema_decode() {
        for (name, book, trades) in [
            ("test_data.mbp-10.v3.dbn.zst", true, false),
            ("test_data.mbp-1.v3.dbn.zst", true, false),
            ("test_data.trades.v3.dbn.zst", false, true),
            ("test_data.mbo.v3.dbn.zst", true, false),
        ] {
            let (_, stats) = run(&fixture(&format!("dbn/{name}")));
            assert_eq!(stats.records, 2, "{name}");
            assert_eq!(stats.book_deltas > 0, book, "{name}: {stats:?}");
            assert_eq!(stats.trades > 0, trades, "{name}: {stats:?}");
        }
    }

    /// Found by the `import_dbn` fuzz target: a record whose length byte is not a whole
    /// multiple of 8 bytes made the `dbn` crate read the next record through a misaligned
    /// pointer (a panic here, undefined behaviour in a release build).
    #[test]
    fn a_record_length_not_a_multiple_of_8_is_an_error_not_a_misaligned_read() {
        let dir = tempfile::tempdir().unwrap();
        let plain = std::fs::read(fixture("dbn/test_data.mbo.v3.dbn")).unwrap();
        let records = 8 + u32::from_le_bytes(plain[4..8].try_into().unwrap()) as usize;
        let mut odd = plain[..records].to_vec();
        // The first record grows by one 4-byte word (56 -> 60 bytes), then the rest.
        odd.extend_from_slice(&plain[records..records + 56]);
        odd[records] = 15;
        odd.extend_from_slice(&[0; 4]);
        odd.extend_from_slice(&plain[records + 56..]);
        let path = dir.path().join("odd.mbo.dbn");
        std::fs::write(&path, &odd).unwrap();
        let mut events: Vec<Event> = Vec::new();
        let err = import_error(ImportFormat::Dbn, path, &mut events);
        let msg = format!("{err:#}");
        assert!(
            msg.contains("odd.mbo.dbn") && msg.contains("60 bytes long"),
            "{msg}"
        );
    }

    /// Found by the `import_dbn` fuzz target: a corrupt metadata length in the 8-byte
    /// prefix (here 808,740,145) made the `dbn` decoder allocate that much before it
    /// read a byte of metadata.
    #[test]
    fn a_metadata_length_beyond_the_file_is_refused_before_any_allocation() {
        let dir = tempfile::tempdir().unwrap();
        let mut plain = std::fs::read(fixture("dbn/test_data.mbo.v3.dbn")).unwrap();
        plain[4..8].copy_from_slice(b"1e40");
        let path = dir.path().join("huge-metadata.dbn");
        std::fs::write(&path, &plain).unwrap();
        let mut events: Vec<Event> = Vec::new();
        let err = import_error(ImportFormat::Dbn, path, &mut events);
        let msg = format!("{err:#}");
        assert!(
            msg.contains("huge-metadata.dbn") && msg.contains("808740145 bytes of metadata"),
            "{msg}"
        );
    }

    /// Found by the `import_dbn` fuzz target: a record whose rtype says MBO (56 bytes)
    /// but whose length byte says 16 bytes was read as a whole `MboMsg` (a panic here, an
    /// out-of-bounds read in a release build).
    #[test]
    fn a_record_shorter_than_its_type_is_an_error_not_an_overread() {
        let dir = tempfile::tempdir().unwrap();
        let plain = std::fs::read(fixture("dbn/test_data.mbo.v3.dbn")).unwrap();
        let records = 8 + u32::from_le_bytes(plain[4..8].try_into().unwrap()) as usize;
        // The second of the two MBO records says it is 16 bytes: its header alone.
        let mut short = plain[..records + 56 + 16].to_vec();
        short[records + 56] = 4;
        let path = dir.path().join("short.mbo.dbn");
        std::fs::write(&path, &short).unwrap();
        let mut events: Vec<Event> = Vec::new();
        let err = import_error(ImportFormat::Dbn, path, &mut events);
        let msg = format!("{err:#}");
        assert!(
            msg.contains("short.mbo.dbn") && msg.contains("record 2: corrupt DBN record"),
            "{msg}"
        );
    }

    #[test]
    fn truncated_dbn_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let full = std::fs::read(fixture(
            "dbn/orderbooks_mbo_2024-05-08T00-00-00_2024-05-08T00-00-02.dbn.zst",
        ))
        .unwrap();
        let cut = dir.path().join("cut.mbo.dbn.zst");
        std::fs::write(&cut, &full[..full.len() / 3]).unwrap();
        let mut events: Vec<Event> = Vec::new();
        let err = import_error(ImportFormat::Dbn, cut, &mut events);
        let msg = format!("{err:#}");
        assert!(
            msg.contains("cut.mbo.dbn.zst") && msg.contains("record"),
            "{msg}"
        );
        // An uncompressed file cut mid-record is caught too.
        let plain = std::fs::read(fixture("dbn/test_data.mbo.v3.dbn")).unwrap();
        let cut = dir.path().join("cut.mbo.dbn");
        std::fs::write(&cut, &plain[..plain.len() - 10]).unwrap();
        let err = import_error(ImportFormat::Auto, cut, &mut events);
        assert!(
            format!("{err:#}").contains("truncated or corrupt DBN"),
            "{err:#}"
        );
    }

    /// Writes the records of DBN file `src` to `first` until, from record `from` (0-based)
    /// on, one without `F_LAST` has been written (so the cut falls inside a DBN event), and
    /// the rest to `second`, both with `src`'s metadata: one stream cut in two files.
    /// Returns how many records went to `first`.
    fn split_dbn_inside_an_event(src: &Path, from: usize, first: &Path, second: &Path) -> usize {
        use dbn::encode::{DbnEncoder, EncodeRecordRef};
        let mut decoder =
            DynDecoder::from_file(src, VersionUpgradePolicy::AsIs).expect("readable DBN");
        let metadata = decoder.metadata().clone();
        let mut a = DbnEncoder::new(File::create(first).unwrap(), &metadata).unwrap();
        let mut b = DbnEncoder::new(File::create(second).unwrap(), &metadata).unwrap();
        let (mut n, mut cut) = (0, None);
        while let Some(rec) = decoder.decode_record_ref().unwrap() {
            if cut.is_none() {
                a.encode_record_ref(rec).unwrap();
                n += 1;
                let open = matches!(rec.as_enum(), Ok(RecordRefEnum::Mbo(m)) if !m.flags.is_last());
                if n > from && open {
                    cut = Some(n);
                }
            } else {
                b.encode_record_ref(rec).unwrap();
            }
        }
        cut.expect("a record without F_LAST after `from`")
    }

    fn final_depth(events: &[Event]) -> (usize, usize) {
        let mut book = L2Book::new();
        for e in events {
            if let Body::Book(d) = &e.body {
                book.apply(d);
            }
        }
        book.depth()
    }

    #[test]
    fn mbo_book_carries_over_between_files_split_at_a_record_boundary() {
        let Some(p) =
            real("nautilus_trader/tests/test_data/databento/esh4-glbx-mdp3-20231225.mbo.dbn.zst")
        else {
            return;
        };
        let (whole, whole_stats) = run(&p);
        assert!(
            whole_stats.warnings.is_empty(),
            "{:?}",
            whole_stats.warnings
        );
        // Cut inside a DBN event, after record 40,000 of 68,792: orders added in the first
        // part are cancelled in the second, and one event spans both files.
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("part1.dbn"), dir.path().join("part2.dbn"));
        let cut = split_dbn_inside_an_event(&p, 40_000, &a, &b);
        assert!((40_001..68_792).contains(&cut), "{cut}");
        let mut events: Vec<Event> = Vec::new();
        let stats = import_any(
            ImportFormat::Dbn,
            &[a.clone(), b.clone()],
            &ImportOptions::default(),
            &mut events,
            &|_| {},
        )
        .unwrap();
        assert_eq!(stats.records, whole_stats.records);
        assert!(stats.warnings.is_empty(), "{:?}", stats.warnings);
        assert_eq!(final_depth(&events), final_depth(&whole));
        assert_eq!(final_depth(&whole), (922, 565));
        assert_eq!(events.len(), whole.len());
        assert!(
            events == whole,
            "the split import equals the whole, event for event"
        );
        // Consecutive daily files each open with a full snapshot: the second replaces the
        // book the first left, it does not add to it.
        let day_before =
            real("nautilus_trader/tests/test_data/databento/esh4-glbx-mdp3-20231224.mbo.dbn.zst")
                .unwrap();
        let mut two_days: Vec<Event> = Vec::new();
        let stats = import_any(
            ImportFormat::Dbn,
            &[day_before, p.clone()],
            &ImportOptions::default(),
            &mut two_days,
            &|_| {},
        )
        .unwrap();
        assert!(stats.warnings.is_empty(), "{:?}", stats.warnings);
        assert_eq!(final_depth(&two_days), (922, 565));
        // The second part alone cannot know the orders of the first: it says so.
        let mut alone: Vec<Event> = Vec::new();
        let stats = import_any(
            ImportFormat::Dbn,
            &[b],
            &ImportOptions::default(),
            &mut alone,
            &|_| {},
        )
        .unwrap();
        assert!(
            stats
                .warnings
                .iter()
                .any(|w| w.contains("named orders never added")),
            "{:?}",
            stats.warnings
        );
    }

    #[test]
    fn an_undefined_dbn_time_is_an_error_not_a_negative_time() {
        use dbn::encode::{DbnEncoder, EncodeRecord};
        let src = fixture("dbn/test_data.mbo.v3.dbn");
        let mut decoder = DynDecoder::from_file(&src, VersionUpgradePolicy::AsIs).unwrap();
        let metadata = decoder.metadata().clone();
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("undefined_ts.dbn");
        let mut encoder = DbnEncoder::new(File::create(&out).unwrap(), &metadata).unwrap();
        while let Some(rec) = decoder.decode_record_ref().unwrap() {
            let mut m = rec.get::<dbn::MboMsg>().unwrap().clone();
            m.ts_recv = dbn::UNDEF_TIMESTAMP;
            encoder.encode_record(&m).unwrap();
        }
        drop(encoder);
        let mut events: Vec<Event> = Vec::new();
        let e = import_error(ImportFormat::Dbn, out, &mut events);
        let e = format!("{e:#}");
        assert!(e.contains("record 1: ts_recv 18446744073709551615"), "{e}");
        assert!(events.is_empty());
    }
}
