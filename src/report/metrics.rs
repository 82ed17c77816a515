//! The computation behind [`super::compute`]: fills → ledger snapshots → as-of join onto
//! marks → equity, drawdown, ratios and inventory, per (strategy, venue, symbol) and in total.
//!
//! Owns reading the run directory (`fills.parquet` and `marks.parquet` through
//! [`super::input`], `summary.json`) and the assembly of [`Report`]. Never renders
//! anything and never writes files.
//!
//! Scaling: only the needed columns are read. Fills are sorted and walked once in Rust
//! because average-cost PnL is path-dependent; the trade list is an eager polars frame.
//! Marks (10 million rows and more) are sorted by time once and walked once: the as-of join
//! (each key's last ledger state at or before the mark) is a cursor per key, and the same
//! pass accumulates the per-key aggregates, the total curve's steps, the chart buckets and
//! the return grids. Sums and means use polars' kernels ([`super::agg`]) so they are the
//! ones polars' query engine computed before. What is per fill (trade list, markout
//! averages, position steps, fill markers) is done in Rust over the fills.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use polars::prelude::*;
use rustc_hash::FxHashMap;

use super::agg::{self, Extremes, Kahan};
use super::input;
use super::ledger::{Ledger, LedgerFill, LedgerTotals, Liquidity, Snapshot};
use super::ratios::{self, Ratios, ReturnSums};
use super::{
    ChartSeries, KeyFills, KeyMetrics, KeySeries, Metrics, REPORT_SCHEMA_VERSION, Report,
    ReportError, ReportOptions, Result,
};

/// 365 days: crypto venues trade every day, so every interval counts.
const NS_PER_YEAR: f64 = 365.0 * 86_400.0 * 1e9;

/// Columns of `fills.parquet` the report reads, in the trade list's order.
const FILL_COLUMNS: [&str; 13] = [
    "ts",
    "strategy",
    "venue",
    "symbol",
    "order_id",
    "client_order_id",
    "fill_id",
    "side",
    "price",
    "price_exact",
    "size_exact",
    "fee",
    "liquidity",
];

/// Columns of `marks.parquet` the report reads.
const MARK_COLUMNS: [&str; 6] = ["ts", "strategy", "venue", "symbol", "mid", "position"];

type Key = (String, String, String);

pub(super) fn pl<T>(what: &str, r: PolarsResult<T>) -> Result<T> {
    r.map_err(|source| ReportError::Polars {
        context: what.to_string(),
        source,
    })
}

/// The (strategy, venue, symbol) keys of a run, numbered in the order first seen (fills
/// first, then marks). A null name is the empty name.
#[derive(Default)]
struct Keys {
    index: HashMap<Key, usize>,
    list: Vec<Key>,
}

impl Keys {
    fn id(&mut self, strategy: &str, venue: &str, symbol: &str) -> usize {
        let key = (strategy.to_owned(), venue.to_owned(), symbol.to_owned());
        if let Some(&k) = self.index.get(&key) {
            return k;
        }
        self.list.push(key.clone());
        self.index.insert(key, self.list.len() - 1);
        self.list.len() - 1
    }
}

/// Per-fill ledger state ready for the as-of join, the trade list, and each key's totals.
struct FillState {
    /// Per key id: the ledger state after each fill, in time order, keeping only the last
    /// fill of the key at one timestamp (a mark at that instant must not see half of them).
    states: Vec<Vec<(i64, Snapshot)>>,
    /// Every fill in time order with the ledger's view of it: the trade list (see
    /// [`super::trades`] for its columns).
    trades: DataFrame,
    /// Key id and time of each row of `trades`.
    trade_key: Vec<usize>,
    trade_ts: Vec<i64>,
    totals: BTreeMap<Key, LedgerTotals>,
    /// Time of the first fill, ns since the Unix epoch (`None` without fills).
    first_ts: Option<i64>,
    /// Time of the last fill, ns since the Unix epoch (`None` without fills).
    last_ts: Option<i64>,
}

fn take<T: Clone>(v: &[T], rows: &[usize]) -> Vec<T> {
    rows.iter().map(|&r| v[r].clone()).collect()
}

fn run_ledger(fills_path: &Path, keys: &mut Keys) -> Result<FillState> {
    let table = input::read(fills_path, &FILL_COLUMNS)?;
    let n = table.rows();
    // Time order; fills at one time by `fill_id` (nulls first, as polars sorts).
    let ts = table.i64s("ts")?;
    let fill_id = table.ids("fill_id")?;
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| {
        ts[a]
            .cmp(&ts[b])
            .then_with(|| fill_id.get(a).cmp(&fill_id.get(b)))
    });
    let strs = |name: &str| -> Result<Vec<Option<String>>> { Ok(take(&table.strs(name)?, &order)) };
    let f64s = |name: &str| -> Result<Vec<Option<f64>>> { Ok(take(&table.f64s(name)?, &order)) };
    let ts = take(&ts, &order);
    let (strategy, venue, symbol) = (strs("strategy")?, strs("venue")?, strs("symbol")?);
    let (side, size_exact, liquidity) = (strs("side")?, strs("size_exact")?, strs("liquidity")?);
    let (price, fee) = (f64s("price")?, f64s("fee")?);

    let mut ledgers: Vec<Ledger> = Vec::new();
    let mut states: Vec<Vec<(i64, Snapshot)>> = Vec::new();
    let mut trade_key = Vec::with_capacity(n);
    let mut trade_ts = Vec::with_capacity(n);
    let mut position_after: Vec<String> = Vec::with_capacity(n);
    let mut position: Vec<f64> = Vec::with_capacity(n);
    let mut realized_by_fill: Vec<f64> = Vec::with_capacity(n);
    for row in 0..n {
        let bad = |reason: String| ReportError::BadFill { row, reason };
        let t = ts[row].ok_or_else(|| bad("ts is null".into()))?;
        let k = keys.id(
            strategy[row].as_deref().unwrap_or_default(),
            venue[row].as_deref().unwrap_or_default(),
            symbol[row].as_deref().unwrap_or_default(),
        );
        let buy = match side[row].as_deref() {
            Some("buy") => true,
            Some("sell") => false,
            other => {
                return Err(bad(format!(
                    "side must be \"buy\" or \"sell\", got {other:?}"
                )));
            }
        };
        let size_text = size_exact[row]
            .as_deref()
            .ok_or_else(|| bad("size_exact is null".into()))?;
        let size = size_text
            .parse()
            .map_err(|e| bad(format!("size_exact: {e}")))?;
        let fill = LedgerFill {
            ts: t,
            buy,
            price: price[row].ok_or_else(|| bad("price is null".into()))?,
            size,
            fee: fee[row].unwrap_or(0.0),
            liquidity: match liquidity[row].as_deref() {
                Some("maker") => Liquidity::Maker,
                Some("taker") => Liquidity::Taker,
                _ => Liquidity::Unknown,
            },
        };
        if k == ledgers.len() {
            ledgers.push(Ledger::new());
            states.push(Vec::new());
        }
        let realized_before = ledgers[k].totals().realized;
        let snap = ledgers[k].apply(&fill).map_err(|e| bad(format!("{e}")))?;
        position_after.push(ledgers[k].position().to_string());
        realized_by_fill.push(snap.cum_realized - realized_before);
        position.push(snap.position);
        // Several fills of one key at one timestamp: only the state after the last one
        // may be visible to the as-of join.
        match states[k].last_mut() {
            Some(last) if last.0 == t => *last = (t, snap),
            _ => states[k].push((t, snap)),
        }
        trade_key.push(k);
        trade_ts.push(t);
    }

    let totals = keys
        .list
        .iter()
        .zip(&ledgers)
        .map(|(k, l)| (k.clone(), l.totals().clone()))
        .collect();
    let first_ts = trade_ts.first().copied();
    let last_ts = trade_ts.last().copied();
    let id_column =
        |name: &str| -> Result<Column> { Ok(table.ids(name)?.take(&order).into_column(name)) };
    let columns = vec![
        Column::new("ts".into(), ts),
        Column::new("strategy".into(), strategy),
        Column::new("venue".into(), venue),
        Column::new("symbol".into(), symbol),
        id_column("order_id")?,
        id_column("client_order_id")?,
        fill_id.take(&order).into_column("fill_id"),
        Column::new("side".into(), side),
        Column::new("price".into(), price),
        Column::new("price_exact".into(), strs("price_exact")?),
        Column::new("size_exact".into(), size_exact),
        Column::new("fee".into(), fee),
        Column::new("liquidity".into(), liquidity),
        Column::new("position_after".into(), position_after),
        Column::new("position".into(), position),
        Column::new("realized_pnl".into(), realized_by_fill),
    ];
    let trades = pl("cannot build the trade list", DataFrame::new(n, columns))?;
    Ok(FillState {
        states,
        trades,
        trade_key,
        trade_ts,
        totals,
        first_ts,
        last_ts,
    })
}

/// The marks with a mid, sorted by time (stable: rows at one time keep their file order).
struct Marks {
    ts: Vec<i64>,
    key: Vec<u32>,
    mid: Vec<f64>,
    /// The `position` column as written (compared with the rebuilt position).
    position: Vec<Option<f64>>,
}

fn read_marks(path: &Path, keys: &mut Keys) -> Result<Marks> {
    let table = input::read(path, &MARK_COLUMNS)?;
    let ts = table.i64s("ts")?;
    let mid = table.f64s("mid")?;
    let position = table.f64s("position")?;
    let mut key: Vec<u32> = Vec::with_capacity(table.rows());
    {
        let mut seen: FxHashMap<[&str; 3], u32> = FxHashMap::default();
        table.for_each_row_strs(["strategy", "venue", "symbol"], |names| {
            let names = names.map(Option::unwrap_or_default);
            let id = *seen
                .entry(names)
                .or_insert_with(|| keys.id(names[0], names[1], names[2]) as u32);
            key.push(id);
        })?;
    }
    drop(table);
    if let Some(row) = ts.iter().position(Option::is_none) {
        return Err(ReportError::BadInput {
            path: path.to_path_buf(),
            reason: format!("row {row}: ts is null"),
        });
    }
    let mut rows: Vec<usize> = (0..ts.len()).filter(|&r| mid[r].is_some()).collect();
    if !rows.windows(2).all(|w| ts[w[0]] <= ts[w[1]]) {
        rows.sort_by_key(|&r| ts[r]);
    }
    Ok(Marks {
        ts: rows.iter().map(|&r| ts[r].unwrap_or_default()).collect(),
        key: take(&key, &rows),
        mid: rows.iter().map(|&r| mid[r].unwrap_or_default()).collect(),
        position: take(&position, &rows),
    })
}

/// The curve aggregations of one key: running peak of `base + pnl` (never below `base`),
/// and the largest fall from it.
#[derive(Default)]
struct Curve {
    running: Option<f64>,
    max_dd: Option<f64>,
    peak: Option<f64>,
}

impl Curve {
    fn add(&mut self, base: f64, equity: f64) {
        let running = agg::max(self.running, equity).unwrap_or(equity);
        self.running = Some(running);
        let peak = if running > base { running } else { base };
        self.max_dd = agg::max(self.max_dd, peak - equity);
        self.peak = agg::max(self.peak, peak);
    }
}

/// What the pass over the marks accumulates for one key.
#[derive(Default)]
struct KeyAcc {
    marks: u64,
    last_mid: f64,
    abs_position: Kahan,
    max_abs_position: Option<f64>,
    /// `|position| × time to the key's next mark`, per mark (the last has none).
    twa_terms: Vec<Option<f64>>,
    first_ts: i64,
    last_ts: i64,
    last_position: f64,
    gross: Kahan,
    max_gross: Option<f64>,
    mismatches: u64,
    /// Time since the key's previous mark, per mark but the first.
    gaps: Vec<i64>,
    curve: Curve,
    /// Last (pnl, gross, net): the total curve adds each key's changes.
    last: Option<(f64, f64, f64)>,
    /// Chart buckets (in time order) of net PnL and mid.
    buckets: Vec<(i64, Extremes, Extremes)>,
    /// Per grid point of the return interval (in order, up to the last one inside the run):
    /// the key's last PnL.
    grid: Vec<(i64, f64)>,
    /// Rows of the key in the sorted marks.
    rows: Vec<u32>,
}

/// The total curve: one point per mark time, after every key's mark at that time.
#[derive(Default)]
struct Total {
    ts: Vec<i64>,
    equity: Vec<f64>,
    gross: Vec<f64>,
    net: Vec<f64>,
}

/// Bucket of time `t` among `buckets` equal slices of `[t0, t1]`.
fn bucket(t: i64, t0: i64, t1: i64, buckets: f64) -> i64 {
    let span = (t1 - t0) as f64 + 1.0;
    ((t - t0) as f64 * buckets / span).floor() as i64
}

/// Joins the ledger states onto the marks (the last state of the mark's key at or before
/// it) and accumulates everything per key and the total curve, in one pass.
fn walk_marks(
    marks: &Marks,
    fills: &FillState,
    n_keys: usize,
    base: f64,
    buckets: f64,
    interval: i64,
) -> (Vec<KeyAcc>, Total) {
    let mut acc: Vec<KeyAcc> = (0..n_keys).map(|_| KeyAcc::default()).collect();
    let mut cursor = vec![0usize; n_keys];
    let mut total = Total::default();
    let (t0, t1) = match (marks.ts.first(), marks.ts.last()) {
        (Some(&a), Some(&b)) => (a, b),
        _ => return (acc, total),
    };
    let kmax = (t1 - t0).div_euclid(interval);
    let (mut cum_pnl, mut cum_gross, mut cum_net) = (0.0, 0.0, 0.0);
    let none: Vec<(i64, Snapshot)> = Vec::new();
    let zero = Snapshot {
        position: 0.0,
        avg_cost: 0.0,
        cum_realized: 0.0,
        cum_fees: 0.0,
    };
    let n = marks.ts.len();
    for i in 0..n {
        let t = marks.ts[i];
        let k = marks.key[i] as usize;
        let mid = marks.mid[i];
        let states = fills.states.get(k).unwrap_or(&none);
        while cursor[k] < states.len() && states[cursor[k]].0 <= t {
            cursor[k] += 1;
        }
        let s = if cursor[k] > 0 {
            states[cursor[k] - 1].1
        } else {
            zero
        };
        let pnl = s.cum_realized + s.position * (mid - s.avg_cost) - s.cum_fees;
        let gross = s.position.abs() * mid;
        let net = s.position * mid;
        let a = &mut acc[k];
        if a.marks == 0 {
            a.first_ts = t;
        } else {
            a.twa_terms
                .push(Some(a.last_position.abs() * (t - a.last_ts) as f64));
            a.gaps.push(t - a.last_ts);
        }
        a.marks += 1;
        a.last_mid = mid;
        a.last_ts = t;
        a.last_position = s.position;
        a.abs_position.add(s.position.abs());
        a.max_abs_position = agg::max(a.max_abs_position, s.position.abs());
        a.gross.add(gross);
        a.max_gross = agg::max(a.max_gross, gross);
        if let Some(p) = marks.position[i]
            && (p - s.position).abs() > 1e-9 * (s.position.abs() + 1.0)
        {
            a.mismatches += 1;
        }
        a.curve.add(base, base + pnl);
        a.rows.push(i as u32);

        let b = bucket(t, t0, t1, buckets);
        match a.buckets.last_mut() {
            Some((lb, p, m)) if *lb == b => {
                p.add(t, pnl);
                m.add(t, mid);
            }
            _ => a
                .buckets
                .push((b, Extremes::new(t, pnl), Extremes::new(t, mid))),
        }
        let g = ratios::grid_point(t - t0, interval);
        if g <= kmax {
            match a.grid.last_mut() {
                Some((lg, v)) if *lg == g => *v = pnl,
                _ => a.grid.push((g, pnl)),
            }
        }

        // The total carries each key's last value between its marks: the running sum of
        // per-key changes in time order.
        let (dp, dg, dn) = match a.last {
            Some((p, g, q)) => (pnl - p, gross - g, net - q),
            None => (pnl, gross, net),
        };
        a.last = Some((pnl, gross, net));
        cum_pnl += dp;
        cum_gross += dg;
        cum_net += dn;
        if i + 1 == n || marks.ts[i + 1] != t {
            total.ts.push(t);
            total.equity.push(base + cum_pnl);
            total.gross.push(cum_gross);
            total.net.push(cum_net);
        }
    }
    for a in &mut acc {
        if a.marks > 0 {
            a.twa_terms.push(None);
        }
    }
    (acc, total)
}

/// Statistics of the total curve.
#[derive(Default)]
struct TotalStats {
    start: Option<i64>,
    end: Option<i64>,
    interval: Option<f64>,
    mean_gross: Option<f64>,
    max_gross: Option<f64>,
    max_dd: Option<f64>,
    peak: Option<f64>,
    max_dd_pct: Option<f64>,
}

fn total_stats(total: &Total, base: f64) -> TotalStats {
    let mut out = TotalStats {
        start: total.ts.first().copied(),
        end: total.ts.last().copied(),
        interval: agg::median_i64(total.ts.windows(2).map(|w| w[1] - w[0]).collect()),
        // The engine held the total curve as two chunks: every point but the last, and the
        // last (it filtered the curve with a shifted column).
        mean_gross: {
            let gross: Vec<Option<f64>> = total.gross.iter().copied().map(Some).collect();
            let (head, last) = gross.split_at(gross.len().saturating_sub(1));
            agg::column_mean([head, last])
        },
        max_gross: total.gross.iter().fold(None, |m, &v| agg::max(m, v)),
        ..TotalStats::default()
    };
    let mut running: Option<f64> = None;
    let mut pct: Option<f64> = None;
    for &e in &total.equity {
        let equity = base + (e - base);
        let r = agg::max(running, equity).unwrap_or(equity);
        running = Some(r);
        let peak = if r > base { r } else { base };
        let dd = peak - equity;
        out.max_dd = agg::max(out.max_dd, dd);
        out.peak = agg::max(out.peak, peak);
        if peak > 0.0 {
            pct = agg::max(pct, dd / peak);
        }
    }
    out.max_dd_pct = pct.map(|p| p * 100.0);
    out
}

/// The whole-run chart series: min and max of equity, drawdown, net and gross notional per
/// time bucket.
fn chart_series(total: &Total, base: f64, buckets: f64) -> ChartSeries {
    let mut series = ChartSeries::default();
    let (Some(&t0), Some(&t1)) = (total.ts.first(), total.ts.last()) else {
        return series;
    };
    let mut current: Option<(i64, [Extremes; 4])> = None;
    let mut running: Option<f64> = None;
    let flush = |b: &[Extremes; 4], s: &mut ChartSeries| {
        b[0].push_points(&mut s.equity);
        b[1].push_points(&mut s.drawdown);
        b[2].push_points(&mut s.net_notional);
        b[3].push_points(&mut s.gross_notional);
    };
    for i in 0..total.ts.len() {
        let t = total.ts[i];
        let equity = total.equity[i];
        let r = agg::max(running, equity).unwrap_or(equity);
        running = Some(r);
        let peak = if r > base { r } else { base };
        let values = [equity, equity - peak, total.net[i], total.gross[i]];
        let b = bucket(t, t0, t1, buckets);
        match &mut current {
            Some((cb, ex)) if *cb == b => {
                for (e, v) in ex.iter_mut().zip(values) {
                    e.add(t, v);
                }
            }
            _ => {
                if let Some((_, ex)) = &current {
                    flush(ex, &mut series);
                }
                current = Some((b, values.map(|v| Extremes::new(t, v))));
            }
        }
    }
    if let Some((_, ex)) = &current {
        flush(ex, &mut series);
    }
    series
}

/// The return sums of the total curve on the grid of the return interval.
fn total_return_sums(total: &Total, base: f64, interval: i64) -> ReturnSums {
    let Some(&t0) = total.ts.first() else {
        return ReturnSums::default();
    };
    let kmax = (total.ts[total.ts.len() - 1] - t0).div_euclid(interval);
    let mut grid: Vec<(i64, f64)> = Vec::new();
    for (&t, &e) in total.ts.iter().zip(&total.equity) {
        let g = ratios::grid_point(t - t0, interval);
        if g > kmax {
            continue;
        }
        match grid.last_mut() {
            Some((lg, v)) if *lg == g => *v = e,
            _ => grid.push((g, e)),
        }
    }
    let equity: Vec<f64> = grid.iter().map(|g| g.1).collect();
    ratios::column_return_sums(&equity, base, kmax)
}

/// Per fill and horizon (0 for the fill itself, then [`super::MARKOUT_HORIZONS_NS`]): the
/// mid of the last mark of the fill's key at or before `ts + horizon` (for a horizon,
/// `None` past the key's last mark).
fn mids_after_fills(fills: &FillState, marks: &Marks, acc: &[KeyAcc]) -> Vec<Vec<Option<f64>>> {
    let horizons: Vec<i64> = std::iter::once(0)
        .chain(super::MARKOUT_HORIZONS_NS)
        .collect();
    let mut out = vec![Vec::with_capacity(fills.trade_ts.len()); horizons.len()];
    for (&t, &k) in fills.trade_ts.iter().zip(&fills.trade_key) {
        let rows: &[u32] = acc.get(k).map_or(&[], |a| a.rows.as_slice());
        let last_mark = rows.last().map(|&r| marks.ts[r as usize]);
        for (h, &dt) in horizons.iter().enumerate() {
            let at = t + dt;
            let n = rows.partition_point(|&r| marks.ts[r as usize] <= at);
            let mid = (n > 0).then(|| marks.mid[rows[n - 1] as usize]);
            // The mid at the fill is the last mark at or before it, however late the fill;
            // after the last mark nothing is known: no markout rather than a stale one.
            let known = h == 0 || last_mark.is_some_and(|l| at <= l);
            out[h].push(mid.filter(|_| known));
        }
    }
    out
}

/// A finite value, else `None` (polars' null, NaN and infinities are "not defined").
fn finite(v: Option<f64>) -> Option<f64> {
    v.filter(|v| v.is_finite())
}

/// A drawdown curve closed by its final point.
struct ClosedCurve {
    /// Largest drawdown over the curve and the final point.
    max_drawdown: f64,
    /// Drawdown at the final point (≤ 0, as drawn).
    final_drawdown: f64,
    /// Drawdown at the final point in percent of its peak, when the peak is positive.
    final_pct: Option<f64>,
}

/// Adds the final equity (after the last fill, marked at the last mid) as the last point of
/// a curve whose drawdown over the marks was `curve_dd` with running peak `curve_peak`
/// (`None` without marks; the peak never falls below `base`). Fills after the last mark
/// move the final equity without moving any mark, so without this point a run that loses
/// to the end could report a drawdown smaller than its loss.
fn close_curve(
    curve_dd: f64,
    curve_peak: Option<f64>,
    base: f64,
    final_equity: f64,
) -> ClosedCurve {
    let peak = curve_peak.unwrap_or(base).max(base).max(final_equity);
    let dd = peak - final_equity;
    ClosedCurve {
        max_drawdown: curve_dd.max(dd),
        final_drawdown: -dd,
        final_pct: (peak > 0.0).then(|| dd / peak * 100.0),
    }
}

fn ratio(num: f64, den: f64) -> Option<f64> {
    (den != 0.0).then(|| num / den)
}

fn fill_metrics(m: &mut Metrics, t: &LedgerTotals) {
    m.realized_pnl = t.realized;
    m.fees = t.fees;
    m.turnover = t.turnover;
    m.trades = t.trades;
    m.closing_trades = t.closing_trades;
    m.winning_trades = t.winning_trades;
    m.round_trips = t.round_trips;
    m.maker_trades = t.maker_trades;
    m.taker_trades = t.taker_trades;
    m.maker_notional = t.maker_notional;
    m.taker_notional = t.taker_notional;
    m.maker_fees = t.maker_fees;
    m.taker_fees = t.taker_fees;
}

fn derive_ratios(m: &mut Metrics, holding_ns: i128) {
    m.win_rate = ratio(m.winning_trades as f64, m.closing_trades as f64);
    m.avg_holding_secs = ratio(holding_ns as f64 / 1e9, m.round_trips as f64);
    m.maker_share = ratio(m.maker_notional, m.maker_notional + m.taker_notional);
}

fn read_summary(run_dir: &Path) -> Result<Option<serde_json::Value>> {
    let path = run_dir.join("summary.json");
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path).map_err(|source| ReportError::Io {
        path: path.clone(),
        source,
    })?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| ReportError::BadSummary {
            path: path.clone(),
            reason: e.to_string(),
        })?;
    if !value.is_object() {
        return Err(ReportError::BadSummary {
            path,
            reason: "top level is not an object".into(),
        });
    }
    Ok(Some(value))
}

pub(super) fn compute(run_dir: &Path, opts: &ReportOptions) -> Result<Report> {
    let summary = read_summary(run_dir)?;
    let from_summary = |k: &str| summary.as_ref().and_then(|s| s.get(k));
    let starting_balance = opts
        .starting_balance
        .or_else(|| from_summary("starting_balance").and_then(|v| v.as_f64()))
        .unwrap_or(0.0);
    let scenario = from_summary("scenario")
        .and_then(|v| v.as_str())
        .map(str::to_owned);

    let mut keys = Keys::default();
    let fills = run_ledger(&run_dir.join("fills.parquet"), &mut keys)?;
    let marks = read_marks(&run_dir.join("marks.parquet"), &mut keys)?;
    let interval = opts.return_interval_ns;
    let buckets = (opts.chart_max_points / 2).max(1) as f64;
    let (acc, total_curve) = walk_marks(
        &marks,
        &fills,
        keys.list.len(),
        starting_balance,
        buckets,
        interval,
    );
    let total_stats = total_stats(&total_curve, starting_balance);

    let start_ns = total_stats.start;
    let end_ns = total_stats.end;
    let mark_interval_ns = finite(total_stats.interval)
        .filter(|v| *v > 0.0)
        .map(|v| v.round() as i64);
    let periods_per_year = NS_PER_YEAR / interval as f64;
    let ratios_unavailable = ratios::unavailable_reason(
        start_ns.zip(end_ns).map(|(a, b)| b - a),
        interval,
        mark_interval_ns,
    );
    let shown = |r: Ratios| {
        if ratios_unavailable.is_some() {
            Ratios::default()
        } else {
            r
        }
    };
    let kmax = start_ns
        .zip(end_ns)
        .map(|(a, b)| (b - a).div_euclid(interval))
        .unwrap_or(0);

    let key_ids: BTreeMap<&Key, usize> =
        keys.list.iter().enumerate().map(|(i, k)| (k, i)).collect();
    let all_keys: BTreeSet<Key> = key_ids
        .iter()
        .filter(|&(k, &i)| acc[i].marks > 0 || fills.totals.contains_key(*k))
        .map(|(k, _)| (*k).clone())
        .collect();

    let mut total = Metrics::default();
    let mut total_holding: i128 = 0;
    let mut by_key = Vec::with_capacity(all_keys.len());
    let empty = LedgerTotals::default();
    for key in all_keys {
        let t = fills.totals.get(&key).unwrap_or(&empty);
        let mut m = Metrics::default();
        fill_metrics(&mut m, t);
        total_holding += t.holding_ns;
        let a = &acc[key_ids[&key]];
        let marked = a.marks > 0;
        let last_mid = finite(marked.then_some(a.last_mid)).unwrap_or(t.last_price);
        m.unrealized_pnl = if t.position == 0.0 {
            0.0
        } else {
            t.position * (last_mid - t.avg_cost)
        };
        m.net_pnl = m.realized_pnl + m.unrealized_pnl - m.fees;
        m.final_position = Some(t.position);
        let mut key_peak = None;
        if marked {
            m.marks = a.marks;
            m.position_mismatches = a.mismatches;
            m.max_drawdown = finite(a.curve.max_dd).unwrap_or(0.0);
            key_peak = finite(a.curve.peak);
            m.mean_abs_position = finite(a.abs_position.mean());
            m.max_abs_position = finite(a.max_abs_position);
            let span = (a.last_ts - a.first_ts) as f64;
            m.time_weighted_abs_position =
                finite(Some(agg::column_sum([a.twa_terms.as_slice()]) / span));
            m.mean_gross_notional = finite(a.gross.mean());
            m.max_gross_notional = finite(a.max_gross);
            if !a.grid.is_empty() {
                let rt = shown(
                    ratios::key_return_sums(&a.grid, starting_balance, kmax)
                        .ratios(periods_per_year),
                );
                m.sharpe = rt.sharpe;
                m.sortino = rt.sortino;
                m.sharpe_stderr = rt.sharpe_stderr;
            }
        }
        let closed = close_curve(
            m.max_drawdown,
            key_peak,
            starting_balance,
            starting_balance + m.net_pnl,
        );
        m.max_drawdown = closed.max_drawdown;
        derive_ratios(&mut m, t.holding_ns);

        total.realized_pnl += m.realized_pnl;
        total.unrealized_pnl += m.unrealized_pnl;
        total.fees += m.fees;
        total.turnover += m.turnover;
        total.trades += m.trades;
        total.closing_trades += m.closing_trades;
        total.winning_trades += m.winning_trades;
        total.round_trips += m.round_trips;
        total.maker_trades += m.maker_trades;
        total.taker_trades += m.taker_trades;
        total.maker_notional += m.maker_notional;
        total.taker_notional += m.taker_notional;
        total.maker_fees += m.maker_fees;
        total.taker_fees += m.taker_fees;
        total.marks += m.marks;
        total.position_mismatches += m.position_mismatches;
        by_key.push(KeyMetrics {
            strategy: key.0,
            venue: key.1,
            symbol: key.2,
            metrics: m,
        });
    }
    total.net_pnl = total.realized_pnl + total.unrealized_pnl - total.fees;
    total.final_equity = Some(starting_balance + total.net_pnl);
    let final_equity = starting_balance + total.net_pnl;
    let closed = close_curve(
        finite(total_stats.max_dd).unwrap_or(0.0),
        finite(total_stats.peak),
        starting_balance,
        final_equity,
    );
    total.max_drawdown = closed.max_drawdown;
    total.max_drawdown_pct = match (finite(total_stats.max_dd_pct), closed.final_pct) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    let rt =
        shown(total_return_sums(&total_curve, starting_balance, interval).ratios(periods_per_year));
    total.sharpe = rt.sharpe;
    total.sortino = rt.sortino;
    total.sharpe_stderr = rt.sharpe_stderr;
    total.mean_gross_notional = finite(total_stats.mean_gross);
    total.max_gross_notional = finite(total_stats.max_gross);
    derive_ratios(&mut total, total_holding);

    let mut series = chart_series(&total_curve, starting_balance, buckets);
    series.key_pnl = key_pnl_series(&keys, &acc);
    for ks in &mut series.key_pnl {
        // Each key's curve ends at its final net PnL, like the total curve.
        let key = (ks.strategy.clone(), ks.venue.clone(), ks.symbol.clone());
        if let (Some(m), Some(t)) = (
            by_key
                .iter()
                .find(|k| (&k.strategy, &k.venue, &k.symbol) == (&key.0, &key.1, &key.2)),
            end_ns.max(fills.last_ts),
        ) && ks.points.last() != Some(&(t, m.metrics.net_pnl))
        {
            ks.points.push((t, m.metrics.net_pnl));
        }
    }
    series.mids = market_series(&keys, &acc);
    let chart_t0 = start_ns
        .into_iter()
        .chain(fills.first_ts)
        .min()
        .unwrap_or(0);
    let chart_t1 = end_ns.max(fills.last_ts).unwrap_or(chart_t0);
    (series.key_position, series.fills) = fill_series(
        &fills.trades,
        chart_t0,
        chart_t1,
        (opts.chart_max_points / 2).max(1),
    );

    let mut mark_interval: HashMap<Key, i64> = HashMap::new();
    for (key, &k) in &key_ids {
        // The median spacing, truncated to whole ns as polars casts it.
        if let Some(m) = agg::median_i64(acc[k].gaps.clone())
            .filter(|m| m.is_finite())
            .map(|m| m as i64)
            .filter(|m| *m > 0)
        {
            mark_interval.insert((*key).clone(), m);
        }
    }
    let mids = mids_after_fills(&fills, &marks, &acc);
    drop(marks);
    let mut trades = fills.trades;
    let markouts = super::trades::markouts(&mut trades, mids, &mark_interval)?;
    // The final equity closes the drawn curves too, at the last fill or the last mark.
    if let Some(t) = end_ns.max(fills.last_ts) {
        let last = series.equity.last().copied();
        if last != Some((t, final_equity)) {
            series.equity.push((t, final_equity));
            series.drawdown.push((t, closed.final_drawdown));
        }
    }

    Ok(Report {
        schema_version: REPORT_SCHEMA_VERSION,
        run_dir: run_dir.display().to_string(),
        scenario,
        starting_balance,
        start_ns,
        end_ns,
        interval_ns: interval,
        mark_interval_ns,
        periods_per_year,
        ratios_unavailable,
        total,
        by_key,
        orders: super::orders::order_stats(&run_dir.join("orders.parquet"))?,
        markouts,
        summary,
        series,
        trades,
    })
}

/// Net PnL per (strategy, venue, symbol) with marks, sorted by key: min and max per time
/// bucket.
fn key_pnl_series(keys: &Keys, acc: &[KeyAcc]) -> Vec<KeySeries> {
    let mut out: BTreeMap<&Key, Vec<(i64, f64)>> = BTreeMap::new();
    for (key, a) in keys.list.iter().zip(acc) {
        if a.buckets.is_empty() {
            continue;
        }
        let mut points = Vec::with_capacity(2 * a.buckets.len());
        for (_, pnl, _) in &a.buckets {
            pnl.push_points(&mut points);
        }
        points.sort_by_key(|p| p.0);
        out.insert(key, points);
    }
    out.into_iter()
        .map(|((strategy, venue, symbol), points)| KeySeries {
            strategy: strategy.clone(),
            venue: venue.clone(),
            symbol: symbol.clone(),
            points,
        })
        .collect()
}

/// The mid price per (venue, symbol): the mids of the market's key with the most buckets
/// (every strategy on a market is marked at the same mids in a ticktape run, so any key
/// would do; the longest covers the most time).
fn market_series(keys: &Keys, acc: &[KeyAcc]) -> Vec<KeySeries> {
    let mut sorted: BTreeMap<&Key, &KeyAcc> = BTreeMap::new();
    for (key, a) in keys.list.iter().zip(acc) {
        if !a.buckets.is_empty() {
            sorted.insert(key, a);
        }
    }
    let mut best: BTreeMap<(&str, &str), &KeyAcc> = BTreeMap::new();
    for ((_, venue, symbol), a) in sorted {
        let slot = best.entry((venue, symbol)).or_insert(a);
        if a.buckets.len() > slot.buckets.len() {
            *slot = a;
        }
    }
    best.into_iter()
        .map(|((venue, symbol), a)| {
            let mut points = Vec::with_capacity(2 * a.buckets.len());
            for (_, _, mid) in &a.buckets {
                mid.push_points(&mut points);
            }
            points.sort_by_key(|p| p.0);
            KeySeries {
                strategy: String::new(),
                venue: venue.to_owned(),
                symbol: symbol.to_owned(),
                points,
            }
        })
        .collect()
}

fn f64_values(df: &DataFrame, name: &str) -> Vec<Option<f64>> {
    df.column(name)
        .ok()
        .and_then(|c| c.cast(&DataType::Float64).ok())
        .and_then(|c| c.f64().ok().map(|s| s.iter().collect()))
        .unwrap_or_else(|| vec![None; df.height()])
}

fn i64_values(df: &DataFrame, name: &str) -> Vec<Option<i64>> {
    df.column(name)
        .ok()
        .and_then(|c| c.cast(&DataType::Int64).ok())
        .and_then(|c| c.i64().ok().map(|s| s.iter().collect()))
        .unwrap_or_else(|| vec![None; df.height()])
}

/// Min and max per time bucket of `points` (in time order), in time order; all of them
/// when there are no more than two per bucket on average.
fn thin(points: &[(i64, f64)], t0: i64, span: i64, buckets: usize) -> Vec<(i64, f64)> {
    if points.len() <= 2 * buckets {
        return points.to_vec();
    }
    let mut out = Vec::with_capacity(2 * buckets);
    let bucket =
        |t: i64| ((i128::from(t - t0).max(0) * buckets as i128) / (i128::from(span) + 1)) as i64;
    let mut i = 0;
    while i < points.len() {
        let b = bucket(points[i].0);
        let mut j = i;
        let (mut lo, mut hi) = (points[i], points[i]);
        while j < points.len() && bucket(points[j].0) == b {
            if points[j].1 < lo.1 {
                lo = points[j];
            }
            if points[j].1 > hi.1 {
                hi = points[j];
            }
            j += 1;
        }
        if lo.0 == hi.0 {
            out.push(hi);
        } else if lo.0 < hi.0 {
            out.extend([lo, hi]);
        } else {
            out.extend([hi, lo]);
        }
        i = j;
    }
    out
}

/// Position steps and fill markers per key, from the trade list (fills are small next to
/// marks: this is done in Rust). Positions start at 0 at `t0` and hold until `t1`; with
/// more than two fills per time bucket on average, each bucket keeps its lowest and highest
/// position (and each side its lowest and highest fill price).
fn fill_series(
    trades: &DataFrame,
    t0: i64,
    t1: i64,
    buckets: usize,
) -> (Vec<KeySeries>, Vec<KeyFills>) {
    let ts = i64_values(trades, "ts");
    let position = f64_values(trades, "position");
    let price = f64_values(trades, "price");
    let strs = |name: &str| -> Vec<&str> {
        trades
            .column(name)
            .ok()
            .and_then(|c| c.str().ok())
            .map(|s| s.iter().map(|v| v.unwrap_or_default()).collect())
            .unwrap_or_else(|| vec![""; trades.height()])
    };
    let (strategy, venue, symbol, side) = (
        strs("strategy"),
        strs("venue"),
        strs("symbol"),
        strs("side"),
    );
    type Points = Vec<(i64, f64)>;
    let mut per_key: BTreeMap<(&str, &str, &str), (Points, Points, Points)> = BTreeMap::new();
    for row in 0..trades.height() {
        let (Some(t), Some(p), Some(x)) = (ts[row], position[row], price[row]) else {
            continue;
        };
        let key = (strategy[row], venue[row], symbol[row]);
        let (after_fill, buys, sells) = per_key.entry(key).or_default();
        after_fill.push((t, p));
        if side[row] == "buy" {
            buys.push((t, x));
        } else {
            sells.push((t, x));
        }
    }
    let span = (t1 - t0).max(0);
    let mut positions = Vec::with_capacity(per_key.len());
    let mut fills = Vec::with_capacity(per_key.len());
    for ((strategy, venue, symbol), (after_fill, buys, sells)) in per_key {
        // Thin first, then draw steps: each kept position holds until the next one.
        let kept = thin(&after_fill, t0, span, buckets);
        let mut steps = Vec::with_capacity(2 * kept.len() + 2);
        let mut before = 0.0;
        if kept.first().is_some_and(|p| p.0 > t0) {
            steps.push((t0, 0.0));
        }
        for &(t, p) in &kept {
            steps.push((t, before));
            steps.push((t, p));
            before = p;
        }
        if kept.last().is_some_and(|p| p.0 < t1) {
            steps.push((t1, before));
        }
        let thinned = buys.len() + sells.len() > 2 * buckets;
        positions.push(KeySeries {
            strategy: strategy.to_owned(),
            venue: venue.to_owned(),
            symbol: symbol.to_owned(),
            points: steps,
        });
        fills.push(KeyFills {
            strategy: strategy.to_owned(),
            venue: venue.to_owned(),
            symbol: symbol.to_owned(),
            buys: thin(&buys, t0, span, buckets / 2),
            sells: thin(&sells, t0, span, buckets / 2),
            thinned,
        });
    }
    (positions, fills)
}
