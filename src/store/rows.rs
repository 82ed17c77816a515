//! A dataset file's rows as [`Event`]s: a batch of [`Columns`] decoded row by row over
//! events that are reused, each row checked by [`Event::validate`]'s rules.

use std::cell::RefCell;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use parquet::data_type::ByteArray;
use parquet::file::metadata::ParquetMetaDataReader;

use super::footer::{FileMeta, Footer};

use super::columns::{Batch, Columns, Values};
use super::reader::guarded;
use crate::event::{
    Body, BookDelta, Event, Fixed, Flags, Gap, GapReason, Interner, Kind, Side, Trade, TradeId,
};

/// Venue and symbol names while reading rows: a file holds one instrument, so the last
/// name is compared (a few bytes) before the interner is asked (a hash and a probe), and
/// the name rules of [`Event::validate`] run once per instrument, not per row.
#[derive(Debug, Default)]
pub struct RowNames {
    interner: Interner,
    venue: Option<Arc<str>>,
    symbol: Option<Arc<str>>,
    checked: crate::event::NamesChecked,
}

impl RowNames {
    /// The shared copy of venue `name`.
    pub fn venue(&mut self, name: &str) -> Arc<str> {
        Self::shared(&mut self.interner, &mut self.venue, name)
    }

    /// The shared copy of symbol `name`.
    pub fn symbol(&mut self, name: &str) -> Arc<str> {
        Self::shared(&mut self.interner, &mut self.symbol, name)
    }

    /// An event to decode rows over: the last venue and symbol (no allocation once a
    /// row was read), a gap body that any row replaces.
    pub fn blank_event(&mut self) -> Event {
        let mut name = |last: &Option<Arc<str>>| match last {
            Some(n) => n.clone(),
            None => self.interner.intern(""),
        };
        let (venue, symbol) = (name(&self.venue), name(&self.symbol));
        Event::blank_named(venue, symbol)
    }

    fn shared(interner: &mut Interner, last: &mut Option<Arc<str>>, name: &str) -> Arc<str> {
        match last {
            Some(l) if **l == *name => l.clone(),
            _ => {
                let s = interner.intern(name);
                *last = Some(s.clone());
                s
            }
        }
    }
}

/// Values every row of a row group holds, which its statistics prove: the reader leaves
/// these columns out of the row group it reads, and [`BatchView`] answers with the value.
#[derive(Clone, Debug, Default)]
pub struct Constants {
    /// The venue, when constant.
    pub venue: Option<Arc<str>>,
    /// The symbol, when constant.
    pub symbol: Option<Arc<str>>,
    /// The price scale (decimal digits after the point), when constant.
    pub price_scale: Option<u8>,
    /// The size scale (decimal digits after the point), when constant.
    pub size_scale: Option<u8>,
}

/// Columns the reader leaves out of a row group whose statistics show them all null (no
/// gap rows in it): decoding a column of nulls still costs a pass over every row.
pub const SKIPPABLE_WHEN_NULL: &[&str] = &["gap_reason", "gap_missing", "gap_publisher"];

/// Trade ids' heap strings kept for reuse while rows are decoded over events that are
/// reused. An id of up to 24 bytes (every venue's here) is held inline and needs none;
/// for longer ones, a row that replaces a trade gives its id's string here, a trade
/// decoded over an event that held none takes one, and a string is allocated only when
/// none is kept.
///
/// One pool serves all the events in circulation (the read-ahead's batches), so they
/// allocate as many strings as they once held long-id trades at the same time, not one
/// per slot that ever held a trade.
#[derive(Debug, Default)]
pub struct SpareIds(Vec<TradeId>);

impl SpareIds {
    /// A pool for `events` reused events: it holds at most one string per event, so
    /// keeping one never grows it.
    pub fn for_events(events: usize) -> SpareIds {
        SpareIds(Vec::with_capacity(events))
    }

    /// A kept string (empty), or a new one.
    #[inline(always)]
    fn take(&mut self) -> TradeId {
        self.0.pop().unwrap_or_default()
    }

    /// Keeps `id`'s allocation for the next trade (nothing to keep for one held inline).
    #[inline(always)]
    fn keep(&mut self, mut id: TradeId) {
        if id.is_heap_allocated() {
            id.clear();
            self.0.push(id);
        }
    }

    /// Strings kept.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when no string is kept.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Moves the trade id out of `body` (a trade) into `spares`.
#[inline(always)]
fn keep_trade_id(body: &mut Body, spares: &mut SpareIds) {
    if let Body::Trade(t) = body {
        spares.keep(std::mem::take(&mut t.trade_id));
    }
}

/// Sets `body` to a book delta; a trade's id `String` it replaces goes to `spares`.
#[inline(always)]
fn put_book(body: &mut Body, spares: &mut SpareIds, delta: BookDelta) {
    match body {
        // The usual case, a delta over a delta: nothing to drop.
        Body::Book(b) => *b = delta,
        other => {
            keep_trade_id(other, spares);
            *other = Body::Book(delta);
        }
    }
}

/// Sets `body` to a trade, its id copied into the `String` of the trade it replaces, or
/// else one of `spares`.
#[inline(always)]
fn put_trade(
    body: &mut Body,
    spares: &mut SpareIds,
    aggressor: Side,
    price: Fixed,
    size: Fixed,
    id: &str,
) {
    let mut trade_id = match body {
        Body::Trade(t) => std::mem::take(&mut t.trade_id),
        _ => spares.take(),
    };
    trade_id.clear();
    trade_id.push_str(id);
    *body = Body::Trade(Trade {
        aggressor,
        price,
        size,
        trade_id,
    });
}

/// Row `i` of a text column as bytes (a null row holds none).
#[inline(always)]
fn bytes(column: &Values<ByteArray>, i: usize) -> &[u8] {
    column.value(i).map_or(&[], |v| v.data())
}

/// A price or size scale of row `i`: the row group's constant, or the column's row.
#[inline(always)]
fn scale(constant: Option<u8>, column: &Values<i32>, i: usize) -> Option<u8> {
    match constant {
        Some(c) => Some(c),
        // Arrow's cast from Parquet's INT32 to `UInt8` keeps the low byte.
        None => column.get(i).map(|s| s as u8),
    }
}

/// The rows of one batch of a dataset file, decoded column by column into buffers that
/// the next batch reuses ([`Columns`]), then row by row into events.
#[derive(Default)]
pub struct BatchView {
    columns: Columns,
    constants: Constants,
    rows: usize,
    /// True when [`BatchView::valid_rows_into`] may decode rows of this batch
    /// ([`BatchView::fast_path_applies`]).
    fast: bool,
}

impl BatchView {
    /// Starts row group `group` of `file` (schema and footer in `meta`), reading every column but
    /// those `skip` names (leaf indexes), whose values `constants` gives (venue, symbol,
    /// scales) or which are null on every row (the gap columns).
    pub fn open_group(
        &mut self,
        meta: FileMeta<'_>,
        group: usize,
        constants: Constants,
        skip: impl Fn(usize) -> bool,
    ) -> Result<()> {
        self.rows = 0;
        self.constants = constants;
        self.columns.open_group(meta, group, skip)
    }

    /// Decodes the next batch of at most `max` rows of the row group; 0 at its end.
    pub fn next_batch(&mut self, max: usize) -> Result<usize> {
        self.rows = 0;
        let rows = self.columns.read(max)?;
        self.rows = rows;
        self.fast = self.fast_path_applies();
        Ok(rows)
    }

    /// True when [`BatchView::valid_rows_into`] may decode this batch: one instrument
    /// for the whole batch (constant venue and symbol columns) whose names pass
    /// [`Event::validate`]'s rules, prices and sizes never null, every trade id within
    /// its bound. The rules that depend on each row (times, side, price, size) are
    /// checked row by row as it decodes.
    fn fast_path_applies(&self) -> bool {
        use crate::event::validate::{MAX_TRADE_ID_BYTES, market_names_valid};
        let (Some(venue), Some(symbol)) = (&self.constants.venue, &self.constants.symbol) else {
            return false;
        };
        let c = self.columns.batch();
        let rows_hold = |v: &Values<i64>| v.present && v.nulls == 0;
        let scale_holds = |constant: Option<u8>, v: &Values<i32>| {
            constant.is_some() || (v.present && v.nulls == 0)
        };
        // Longest trade id of the column (book rows hold none): one bound for every row.
        let longest = (c.trade_id.held().iter())
            .map(|id| id.len())
            .max()
            .unwrap_or(0);
        rows_hold(c.price)
            && rows_hold(c.size)
            && scale_holds(self.constants.price_scale, c.price_scale)
            && scale_holds(self.constants.size_scale, c.size_scale)
            && c.flags.present
            && longest <= MAX_TRADE_ID_BYTES
            && market_names_valid(venue, symbol)
    }

    /// `ts_recv` of row `i`.
    pub fn ts_recv(&self, i: usize) -> i64 {
        self.columns.batch().ts_recv.values[i]
    }

    /// Kind of row `i`.
    pub fn kind(&self, i: usize) -> Option<Kind> {
        self.columns.batch().kind.values[i]
    }

    /// Decodes row `i` over `out`, reusing its allocations: venue and symbol are only
    /// replaced when they differ, a trade id is copied into the `String` of the previous
    /// trade, or else one of `spares` (where a trade's id goes when another kind replaces
    /// it). The event [`BatchView::event`] returns (validated the same way), without
    /// allocating per row.
    pub fn event_into(
        &self,
        i: usize,
        names: &mut RowNames,
        out: &mut Event,
        spares: &mut SpareIds,
    ) -> Result<()> {
        let c = self.columns.batch();
        match c.kind.values[i] {
            Some(Kind::Book) => {
                let delta = BookDelta {
                    side: self.side_at(i)?,
                    price: self.price(&c, i)?,
                    size: self.size(&c, i)?,
                    flags: Flags(c.flags.get(i).unwrap_or(0) as u8),
                };
                put_book(&mut out.body, spares, delta);
            }
            Some(Kind::Trade) => {
                let (aggressor, price, size) =
                    (self.side_at(i)?, self.price(&c, i)?, self.size(&c, i)?);
                let id = std::str::from_utf8(bytes(c.trade_id, i))
                    .with_context(|| format!("row {i}: trade id is not UTF-8"))?;
                put_trade(&mut out.body, spares, aggressor, price, size, id);
            }
            Some(Kind::Gap) => {
                let reason = std::str::from_utf8(bytes(c.gap_reason, i)).ok();
                let publisher = std::str::from_utf8(bytes(c.gap_publisher, i))
                    .with_context(|| format!("row {i}: gap publisher is not UTF-8"))?;
                let gap = Body::Gap(Gap {
                    // A null reason reads as empty text, which names no reason.
                    reason: reason
                        .and_then(GapReason::from_name)
                        .with_context(|| format!("row {i}: unknown gap reason"))?,
                    missing: c.gap_missing.get(i).map(|m| m as u64),
                    publisher: publisher.to_string(),
                });
                keep_trade_id(&mut out.body, spares);
                out.body = gap;
            }
            _ => bail!(
                "row {i}: kind {:?} is not stored in datasets",
                c.kind.text(i)
            ),
        }
        // Consecutive rows nearly always share venue and symbol (a file holds one of
        // each): comparing a few bytes is cheaper than hashing them.
        name_into(
            &self.constants.venue,
            c.venue,
            i,
            &mut out.venue,
            "venue",
            |v| names.venue(v),
        )?;
        name_into(
            &self.constants.symbol,
            c.symbol,
            i,
            &mut out.symbol,
            "symbol",
            |s| names.symbol(s),
        )?;
        out.ts_event = c.ts_event.values[i];
        out.ts_recv = c.ts_recv.values[i];
        out.venue_seq = c.venue_seq.get(i).map(|s| s as u64);
        out.prev_venue_seq = c.prev_venue_seq.get(i).map(|s| s as u64);
        out.pub_seq = c.pub_seq.values[i] as u64;
        out.validate_with(&mut names.checked)
            .with_context(|| format!("row {i} holds an event ticktape refuses"))
    }

    /// Decodes rows from `start` over `out` (`spares` as in [`BatchView::event_into`]),
    /// at most `out.len()`, stopping before the first row that is not a book delta or a
    /// trade [`Event::validate`] accepts; returns how many it decoded. The events
    /// [`BatchView::event_into`] gives, for the rows it would accept, in one loop without
    /// a result per row: the rules are checked on the columns before a row is decoded
    /// (the per-batch ones by [`BatchView::fast_path_applies`], without which it decodes
    /// nothing). The row it stops at, and the rows of any other batch, go through
    /// [`BatchView::event_into`], which refuses a bad row with its reason.
    pub fn valid_rows_into(&self, start: usize, out: &mut [Event], spares: &mut SpareIds) -> usize {
        use crate::event::validate::{MAX_TS, MIN_TS};
        if !self.fast {
            return 0;
        }
        // A batch on the fast path has one venue and one symbol.
        let (Some(venue), Some(symbol)) = (&self.constants.venue, &self.constants.symbol) else {
            return 0;
        };
        let c = self.columns.batch();
        let n = out.len();
        // Sliced once, so the loop indexes without bounds checks.
        let r = start..start + n;
        let (kinds, sides) = (&c.kind.values[r.clone()], &c.side.values[r.clone()]);
        let prices = &c.price.values[r.clone()];
        let sizes = &c.size.values[r.clone()];
        let price_scales = ScaleRows::new(self.constants.price_scale, c.price_scale, r.clone());
        let size_scales = ScaleRows::new(self.constants.size_scale, c.size_scale, r.clone());
        let flags = &c.flags.values[r.clone()];
        let ts_event = &c.ts_event.values[r.clone()];
        let ts_recv = &c.ts_recv.values[r.clone()];
        let venue_seqs = &c.venue_seq.values[r.clone()];
        let prev_venue_seqs = &c.prev_venue_seq.values[r.clone()];
        let pub_seq = &c.pub_seq.values[r];
        for (j, event) in out.iter_mut().enumerate() {
            // The rules of `Event::validate` that depend on the row.
            let (kind, side, size) = (kinds[j], sides[j], sizes[j]);
            let book = kind == Some(Kind::Book)
                && matches!(side, Some(Side::Bid | Side::Ask))
                && size >= 0;
            let trade = kind == Some(Kind::Trade) && side.is_some() && size > 0;
            let timely =
                (MIN_TS..MAX_TS).contains(&ts_event[j]) & (MIN_TS..MAX_TS).contains(&ts_recv[j]);
            if !((book | trade) & timely & (prices[j] > 0)) {
                return j;
            }
            let side = side.unwrap_or(Side::None);
            let price = Fixed::new(prices[j], price_scales.at(j));
            let size = Fixed::new(size, size_scales.at(j));
            if trade {
                // A trade id that is not UTF-8 stops the run; `event_into` says why.
                let Ok(id) = std::str::from_utf8(bytes(c.trade_id, start + j)) else {
                    return j;
                };
                put_trade(&mut event.body, spares, side, price, size, id);
            } else {
                let delta = BookDelta {
                    side,
                    price,
                    size,
                    flags: Flags(flags[j] as u8),
                };
                put_book(&mut event.body, spares, delta);
            }
            if !Arc::ptr_eq(&event.venue, venue) {
                event.venue = venue.clone();
            }
            if !Arc::ptr_eq(&event.symbol, symbol) {
                event.symbol = symbol.clone();
            }
            event.ts_event = ts_event[j];
            event.ts_recv = ts_recv[j];
            // Sliced above: no bounds check, and no null test in a column without nulls.
            event.venue_seq = if c.venue_seq.nulls > 0 || !c.venue_seq.present {
                c.venue_seq.get(start + j).map(|s| s as u64)
            } else {
                Some(venue_seqs[j] as u64)
            };
            event.prev_venue_seq = if c.prev_venue_seq.nulls > 0 || !c.prev_venue_seq.present {
                c.prev_venue_seq.get(start + j).map(|s| s as u64)
            } else {
                Some(prev_venue_seqs[j] as u64)
            };
            event.pub_seq = pub_seq[j] as u64;
        }
        n
    }

    /// Row `i`'s side (book side or trade aggressor).
    #[inline(always)]
    fn side_at(&self, i: usize) -> Result<Side> {
        match self.columns.batch().side.values[i] {
            Some(side) => Ok(side),
            None => Err(self.bad_side(i)),
        }
    }

    #[cold]
    fn bad_side(&self, i: usize) -> anyhow::Error {
        let side = self.columns.batch().side.text(i);
        anyhow::anyhow!("row {i}: bad side {side:?}")
    }

    /// Row `i`'s price from its mantissa and scale.
    #[inline(always)]
    fn price(&self, c: &Batch<'_>, i: usize) -> Result<Fixed> {
        let scale = scale(self.constants.price_scale, c.price_scale, i);
        self.fixed(c, i, c.price.get(i), scale)
    }

    /// Row `i`'s size from its mantissa and scale.
    #[inline(always)]
    fn size(&self, c: &Batch<'_>, i: usize) -> Result<Fixed> {
        let scale = scale(self.constants.size_scale, c.size_scale, i);
        self.fixed(c, i, c.size.get(i), scale)
    }

    /// A price or size of row `i`, refused when its mantissa or scale is null.
    #[inline(always)]
    fn fixed(&self, c: &Batch<'_>, i: usize, m: Option<i64>, s: Option<u8>) -> Result<Fixed> {
        match (m, s) {
            (Some(m), Some(s)) => Ok(Fixed::new(m, s)),
            _ => Err(self.without_price(c, i)),
        }
    }

    #[cold]
    fn without_price(&self, c: &Batch<'_>, i: usize) -> anyhow::Error {
        anyhow::anyhow!("{} row {i} without price/size", c.kind.text(i))
    }

    /// Decodes row `i` into an event, refusing one that fails [`Event::validate`] (a
    /// file written by another tool, or damaged): [`BatchView::event_into`] over a blank
    /// event.
    pub fn event(&self, i: usize, names: &mut RowNames) -> Result<Event> {
        let mut event = names.blank_event();
        self.event_into(i, names, &mut event, &mut SpareIds::default())?;
        Ok(event)
    }
}

/// Sets `out` to row `i`'s venue or symbol (`what`): the row group's constant, or the
/// column's row, replacing `out` only when it differs.
#[inline(always)]
fn name_into(
    constant: &Option<Arc<str>>,
    column: &Values<ByteArray>,
    i: usize,
    out: &mut Arc<str>,
    what: &str,
    shared: impl FnOnce(&str) -> Arc<str>,
) -> Result<()> {
    match constant {
        Some(c) => {
            if !Arc::ptr_eq(out, c) {
                *out = c.clone();
            }
        }
        None => {
            let name = std::str::from_utf8(bytes(column, i))
                .with_context(|| format!("row {i}: {what} is not UTF-8"))?;
            if **out != *name {
                *out = shared(name);
            }
        }
    }
    Ok(())
}

/// Scales of rows `start..`, indexed from the first of them.
enum ScaleRows<'a> {
    Slice(&'a [i32]),
    Constant(u8),
}

impl<'a> ScaleRows<'a> {
    fn new(constant: Option<u8>, column: &'a Values<i32>, r: std::ops::Range<usize>) -> Self {
        match constant {
            Some(c) => ScaleRows::Constant(c),
            None => ScaleRows::Slice(&column.values[r]),
        }
    }

    #[inline(always)]
    fn at(&self, j: usize) -> u8 {
        match self {
            ScaleRows::Slice(s) => s[j] as u8,
            ScaleRows::Constant(c) => *c,
        }
    }
}

/// Calls `each` with every event of the Parquet file at `path` in file order, each
/// checked as the dataset reader checks it: for tools that read one file of a dataset
/// (recovery counting what a part file holds).
pub fn for_each_event(path: &Path, mut each: impl FnMut(Event) -> Result<()>) -> Result<()> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    // The parquet crate asserts on some damaged input: a panic becomes an error here too.
    let meta = guarded(path, || {
        ParquetMetaDataReader::new().parse_and_finish(&file)
    })?
    .with_context(|| format!("{} is not a readable Parquet file", path.display()))?;
    let mut footer = Footer::default();
    footer
        .read(&file)
        .with_context(|| format!("{} is not a readable Parquet file", path.display()))?;
    let meta = Arc::new(meta);
    let crate_meta = RefCell::new(Some(meta.clone()));
    let file_meta = FileMeta {
        path,
        file: &file,
        schema: meta.file_metadata().schema_descr(),
        footer: &footer,
        crate_meta: &crate_meta,
    };
    let mut names = RowNames::default();
    let mut view = BatchView::default();
    for group in 0..meta.num_row_groups() {
        guarded(path, || {
            view.open_group(file_meta, group, Constants::default(), |_| false)
        })?
        .with_context(|| format!("cannot read {}", path.display()))?;
        loop {
            let rows = guarded(path, || view.next_batch(4096))?
                .with_context(|| format!("cannot read {}", path.display()))?;
            if rows == 0 {
                break;
            }
            for i in 0..rows {
                each(
                    view.event(i, &mut names)
                        .with_context(|| format!("bad row in {}", path.display()))?,
                )?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::schema::EventColumns;

    fn row(venue: &str, price: Fixed, ts_recv: i64) -> Event {
        let mut e = crate::wire::event(
            venue,
            "S",
            1_704_164_645_000_000_000,
            1,
            Body::Book(BookDelta {
                side: Side::Bid,
                price,
                size: Fixed::new(1, 0),
                flags: Flags::LAST,
            }),
        );
        e.ts_recv = ts_recv;
        e
    }

    /// Recovery reads one part file through [`for_each_event`]: a page that makes the
    /// parquet crate's decoder panic is an error naming the file there too.
    #[test]
    fn a_page_that_panics_the_decoder_is_an_error_when_one_file_is_read() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/fuzz/parquet-decoder-shift-overflow.parquet");
        let err = for_each_event(&path, |_| Ok(())).unwrap_err();
        assert!(
            format!("{err:#}").contains("parquet-decoder-shift-overflow"),
            "{err:#}"
        );
    }

    #[test]
    fn rows_that_fail_validation_are_refused_when_read_back() {
        let t = 1_704_164_645_000_000_000;
        let mut cols = EventColumns::default();
        // Files written by another tool (or damaged) may hold what ticktape never writes.
        for e in [
            row("v", Fixed::new(15, 1), t),
            row("v", Fixed::ZERO, t + 1),
            row("_journal", Fixed::new(1, 0), t + 2),
            row("v", Fixed::new(1, 0), i64::MAX),
        ] {
            cols.push(&e);
        }
        let batch = cols.take_sorted_batch().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rows.parquet");
        let mut writer = parquet::arrow::ArrowWriter::try_new(
            File::create(&path).unwrap(),
            batch.schema(),
            None,
        )
        .unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        let file = File::open(&path).unwrap();
        let meta = ParquetMetaDataReader::new()
            .parse_and_finish(&file)
            .unwrap();
        let mut footer = Footer::default();
        footer.read(&file).unwrap();
        let crate_meta = RefCell::new(None);
        let file_meta = FileMeta {
            path: &path,
            file: &file,
            schema: meta.file_metadata().schema_descr(),
            footer: &footer,
            crate_meta: &crate_meta,
        };
        let mut view = BatchView::default();
        view.open_group(file_meta, 0, Constants::default(), |_| false)
            .unwrap();
        assert_eq!(view.next_batch(100).unwrap(), 4);
        let mut names = RowNames::default();
        assert_eq!(
            view.event(0, &mut names).unwrap(),
            row("v", Fixed::new(15, 1), t)
        );
        for (i, reason) in [
            (1, "book price 0 must be above zero"),
            (2, "venue \"_journal\""),
            (3, "ts_recv 9223372036854775807 is outside"),
        ] {
            let err = format!("{:#}", view.event(i, &mut names).unwrap_err());
            assert!(
                err.contains(&format!("row {i}")) && err.contains(reason),
                "{err}"
            );
        }
        let mut all = Vec::new();
        let err = for_each_event(&path, |e| {
            all.push(e);
            Ok(())
        })
        .unwrap_err();
        assert_eq!(all.len(), 1);
        assert!(format!("{err:#}").contains("row 1"), "{err:#}");
    }
}
