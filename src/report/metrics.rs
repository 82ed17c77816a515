//! The polars pipeline behind [`super::compute`]: fills → ledger snapshots → as-of join onto
//! marks → equity, drawdown, ratios and inventory, per (strategy, venue, symbol) and in total.
//!
//! Owns reading the run directory (Parquet via `scan_parquet`, `summary.json`) and the
//! assembly of [`Report`]. Never renders anything and never writes files.
//!
//! Scaling: fills are collected (they are small next to marks) and walked once in Rust
//! because average-cost PnL is path-dependent. Marks stay lazy: the as-of join, the window
//! expressions and the aggregations run inside polars, and the outputs (per-key aggregates,
//! total statistics, return grids, chart buckets, mids after fills) are collected together
//! over one cached scan and join so the 10-million-row marks file is scanned and joined
//! once. What is per fill (trade list, markout averages, position steps, fill markers) is
//! done in Rust over the collected fills.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use polars::prelude::*;

use super::ledger::{Ledger, LedgerFill, LedgerTotals, Liquidity};
use super::ratios::{self, Ratios};
use super::{
    ChartSeries, KeyFills, KeyMetrics, KeySeries, Metrics, REPORT_SCHEMA_VERSION, Report,
    ReportError, ReportOptions, Result,
};

const KEYS: [&str; 3] = ["strategy", "venue", "symbol"];
/// 365 days: crypto venues trade every day, so every interval counts.
const NS_PER_YEAR: f64 = 365.0 * 86_400.0 * 1e9;

type Key = (String, String, String);

pub(super) fn pl<T>(what: &str, r: PolarsResult<T>) -> Result<T> {
    r.map_err(|source| ReportError::Polars {
        context: what.to_string(),
        source,
    })
}

fn key_cols() -> [Expr; 3] {
    KEYS.map(col)
}

pub(super) fn scan(path: &Path) -> Result<LazyFrame> {
    if !path.is_file() {
        return Err(ReportError::MissingInput {
            path: path.to_path_buf(),
        });
    }
    let what = format!("cannot scan {}", path.display());
    let p = pl(&what, PlRefPath::try_from_path(path))?;
    pl(
        &what,
        LazyFrame::scan_parquet(p, ScanArgsParquet::default()),
    )
}

/// Per-fill ledger state in a frame ready for the as-of join, plus each key's final totals.
struct FillState {
    frame: DataFrame,
    /// Every fill in time order with the ledger's view of it: the trade list (see
    /// [`super::trades`] for its columns).
    trades: DataFrame,
    totals: BTreeMap<Key, LedgerTotals>,
    /// Time of the first fill, ns since the Unix epoch (`None` without fills).
    first_ts: Option<i64>,
    /// Time of the last fill, ns since the Unix epoch (`None` without fills).
    last_ts: Option<i64>,
}

fn run_ledger(fills_path: &Path) -> Result<FillState> {
    let what = format!("cannot read {}", fills_path.display());
    let df = pl(
        &what,
        scan(fills_path)?
            .select([
                col("ts").cast(DataType::Int64),
                col("strategy"),
                col("venue"),
                col("symbol"),
                col("order_id"),
                col("client_order_id"),
                col("fill_id"),
                col("side"),
                col("price"),
                col("price_exact"),
                col("size_exact"),
                col("fee"),
                col("liquidity"),
            ])
            .sort_by_exprs(
                [col("ts"), col("fill_id")],
                SortMultipleOptions::default().with_maintain_order(true),
            )
            .collect(),
    )?;
    let n = df.height();
    let str_col = |name: &str| -> Result<Vec<Option<String>>> {
        let c = pl(&what, df.column(name))?;
        let s = pl(&format!("{what}: column {name} must be Utf8"), c.str())?;
        Ok(s.iter().map(|v| v.map(str::to_owned)).collect())
    };
    let f64_col = |name: &str| -> Result<Vec<Option<f64>>> {
        let c = pl(&what, df.column(name))?;
        let c = pl(&what, c.cast(&DataType::Float64))?;
        let s = pl(&format!("{what}: column {name} must be numeric"), c.f64())?;
        Ok(s.iter().collect())
    };
    let ts: Vec<Option<i64>> = {
        let c = pl(&what, df.column("ts"))?;
        pl(&what, c.i64())?.iter().collect()
    };
    let (strategy, venue, symbol) = (str_col("strategy")?, str_col("venue")?, str_col("symbol")?);
    let (side, size_exact, liquidity) = (
        str_col("side")?,
        str_col("size_exact")?,
        str_col("liquidity")?,
    );
    let (price, fee) = (f64_col("price")?, f64_col("fee")?);

    let mut key_index: HashMap<Key, usize> = HashMap::new();
    let mut keys: Vec<Key> = Vec::new();
    let mut ledgers: Vec<Ledger> = Vec::new();
    let mut last_row_of_key: Vec<Option<(usize, i64)>> = Vec::new();
    let mut keep = vec![true; n];
    let mut out_key = Vec::with_capacity(n);
    let mut position_after: Vec<String> = Vec::with_capacity(n);
    let mut realized_by_fill: Vec<f64> = Vec::with_capacity(n);
    let (mut o_pos, mut o_avg, mut o_real, mut o_fee) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for row in 0..n {
        let bad = |reason: String| ReportError::BadFill { row, reason };
        let t = ts[row].ok_or_else(|| bad("ts is null".into()))?;
        let key: Key = (
            strategy[row].clone().unwrap_or_default(),
            venue[row].clone().unwrap_or_default(),
            symbol[row].clone().unwrap_or_default(),
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
        let k = *key_index.entry(key.clone()).or_insert_with(|| {
            keys.push(key);
            ledgers.push(Ledger::new());
            last_row_of_key.push(None);
            keys.len() - 1
        });
        let realized_before = ledgers[k].totals().realized;
        let snap = ledgers[k].apply(&fill).map_err(|e| bad(format!("{e}")))?;
        position_after.push(ledgers[k].position().to_string());
        realized_by_fill.push(snap.cum_realized - realized_before);
        // Several fills of one key at one timestamp: only the state after the last one
        // may be visible to the as-of join, or a mark at that instant could see half of it.
        if let Some((prev_row, prev_ts)) = last_row_of_key[k]
            && prev_ts == t
        {
            keep[prev_row] = false;
        }
        last_row_of_key[k] = Some((row, t));
        out_key.push(k);
        o_pos.push(snap.position);
        o_avg.push(snap.avg_cost);
        o_real.push(snap.cum_realized);
        o_fee.push(snap.cum_fees);
    }

    let rows: Vec<usize> = (0..n).filter(|&r| keep[r]).collect();
    let pick_f = |v: &[f64]| rows.iter().map(|&r| v[r]).collect::<Vec<f64>>();
    let pick_k = |part: fn(&Key) -> &str| {
        rows.iter()
            .map(|&r| part(&keys[out_key[r]]))
            .collect::<Vec<&str>>()
    };
    let fill_ts: Vec<i64> = rows.iter().map(|&r| ts[r].unwrap_or_default()).collect();
    let frame = pl(
        "cannot build the fill-state frame",
        df!(
            "fill_ts" => fill_ts,
            "strategy" => pick_k(|k| k.0.as_str()),
            "venue" => pick_k(|k| k.1.as_str()),
            "symbol" => pick_k(|k| k.2.as_str()),
            "position" => pick_f(&o_pos),
            "avg_cost" => pick_f(&o_avg),
            "cum_realized" => pick_f(&o_real),
            "cum_fees" => pick_f(&o_fee),
        ),
    )?;
    let totals = keys
        .into_iter()
        .zip(ledgers)
        .map(|(k, l)| (k, l.totals().clone()))
        .collect();
    let first_ts = ts.iter().flatten().copied().min();
    let last_ts = ts.iter().flatten().copied().max();
    let mut trades = df;
    pl(
        "cannot build the trade list",
        trades.hstack_mut(&[
            Column::new("position_after".into(), position_after),
            Column::new("position".into(), o_pos),
            Column::new("realized_pnl".into(), realized_by_fill),
        ]),
    )?;
    Ok(FillState {
        frame,
        trades,
        totals,
        first_ts,
        last_ts,
    })
}

/// Aggregations of an equity-like curve `base + value` (rows in time order): max drawdown
/// (absolute, and percent when `with_pct`) and the running peak's maximum.
fn curve_stats(value: Expr, base: f64, with_pct: bool) -> Vec<Expr> {
    let equity = lit(base) + value;
    let running = equity.clone().cum_max(false);
    // The starting balance is the first peak: a run that only loses has a drawdown too.
    let peak = when(running.clone().gt(lit(base)))
        .then(running)
        .otherwise(lit(base));
    let dd = peak.clone() - equity.clone();
    let mut out = vec![
        dd.clone().max().alias("max_dd"),
        peak.clone().max().alias("peak"),
    ];
    if with_pct {
        out.push(
            (when(peak.clone().gt(lit(0.0)))
                .then(dd / peak)
                .otherwise(lit(NULL))
                .max()
                * lit(100.0))
            .alias("max_dd_pct"),
        );
    }
    out
}

/// Reads `name` at `row` as `f64` (any numeric column), `None` for null/NaN/missing.
pub(super) fn get_f64(df: &DataFrame, name: &str, row: usize) -> Option<f64> {
    let c = df.column(name).ok()?.cast(&DataType::Float64).ok()?;
    c.f64().ok()?.get(row).filter(|v| v.is_finite())
}

/// Reads `name` at `row` as `i64` (timestamps must not go through `f64`).
fn get_i64(df: &DataFrame, name: &str, row: usize) -> Option<i64> {
    let c = df.column(name).ok()?.cast(&DataType::Int64).ok()?;
    c.i64().ok()?.get(row)
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

pub(super) fn get_str(df: &DataFrame, name: &str, row: usize) -> String {
    df.column(name)
        .ok()
        .and_then(|c| c.str().ok().and_then(|s| s.get(row).map(str::to_owned)))
        .unwrap_or_default()
}

/// Ratios from the `ret_*` sums at `row` of `df` (see [`ratios::return_sums`]).
fn ratios_at(df: &DataFrame, row: usize, periods_per_year: f64) -> Ratios {
    ratios::ratios(
        get_f64(df, "ret_sum", row).unwrap_or(0.0),
        get_f64(df, "ret_sum2", row).unwrap_or(0.0),
        get_f64(df, "ret_down2", row).unwrap_or(0.0),
        get_f64(df, "ret_n", row).unwrap_or(0.0),
        periods_per_year,
    )
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

    let fills = run_ledger(&run_dir.join("fills.parquet"))?;
    let marks_path = run_dir.join("marks.parquet");
    let marks = scan(&marks_path)?
        .select([
            col("ts").cast(DataType::Int64),
            col("strategy"),
            col("venue"),
            col("symbol"),
            col("mid"),
            col("position").alias("mark_position"),
        ])
        .filter(col("mid").is_not_null())
        .sort(
            ["ts"],
            SortMultipleOptions::default().with_maintain_order(true),
        )
        .cache();

    let asof = AsOfOptions {
        strategy: AsofStrategy::Backward,
        left_by: Some(KEYS.iter().map(|k| PlSmallStr::from(*k)).collect()),
        right_by: Some(KEYS.iter().map(|k| PlSmallStr::from(*k)).collect()),
        allow_eq: true,
        check_sortedness: false,
        ..Default::default()
    };
    let joined = marks
        .clone()
        .join_builder()
        .with(fills.frame.clone().lazy())
        .left_on([col("ts")])
        .right_on([col("fill_ts")])
        .how(JoinType::AsOf(Box::new(asof)))
        .finish()
        .with_columns([
            col("position").fill_null(lit(0.0)),
            col("avg_cost").fill_null(lit(0.0)),
            col("cum_realized").fill_null(lit(0.0)),
            col("cum_fees").fill_null(lit(0.0)),
        ])
        .with_columns([
            (col("cum_realized") + col("position") * (col("mid") - col("avg_cost"))
                - col("cum_fees"))
            .alias("pnl"),
            (col("position").abs() * col("mid")).alias("gross"),
            (col("position") * col("mid")).alias("net"),
            ((col("mark_position") - col("position"))
                .abs()
                .gt(lit(1e-9) * (col("position").abs() + lit(1.0))))
            .alias("mismatch"),
        ])
        .cache();

    let mut per_key_aggs = vec![
        len().alias("marks"),
        col("mid").last().alias("last_mid"),
        col("position").abs().mean().alias("mean_abs_position"),
        col("position").abs().max().alias("max_abs_position"),
        ((col("position").abs() * (col("ts").shift(lit(-1)) - col("ts")).cast(DataType::Float64))
            .sum()
            / (col("ts").last() - col("ts").first()).cast(DataType::Float64))
        .alias("twa_abs_position"),
        col("gross").mean().alias("mean_gross"),
        col("gross").max().alias("max_gross"),
        col("mismatch")
            .cast(DataType::Float64)
            .sum()
            .alias("mismatches"),
        (col("ts") - col("ts").shift(lit(1)))
            .median()
            .alias("mark_interval"),
    ];
    per_key_aggs.extend(curve_stats(col("pnl"), starting_balance, false));
    let per_key = joined.clone().group_by(key_cols()).agg(per_key_aggs);

    // The total curve must carry each key's last value forward between that key's marks, so
    // it is the running sum of per-key PnL *changes* in time order, not a sum per timestamp.
    let step = |name: &str| -> Result<Expr> {
        Ok(pl(
            "cannot build the total curve",
            (col(name) - col(name).shift(lit(1))).over(key_cols()),
        )?
        .fill_null(col(name))
        .alias(name))
    };
    let total = joined
        .clone()
        .select([col("ts"), step("pnl")?, step("gross")?, step("net")?])
        .select([
            col("ts"),
            (lit(starting_balance) + col("pnl").cum_sum(false)).alias("equity"),
            col("gross").cum_sum(false),
            col("net").cum_sum(false),
        ])
        .filter(
            col("ts")
                .neq(col("ts").shift(lit(-1)))
                .or(col("ts").shift(lit(-1)).is_null()),
        )
        .cache();

    let mut total_aggs = vec![
        len().alias("points"),
        col("ts").first().alias("start"),
        col("ts").last().alias("end"),
        (col("ts") - col("ts").shift(lit(1)))
            .median()
            .alias("interval"),
        col("gross").mean().alias("mean_gross"),
        col("gross").max().alias("max_gross"),
    ];
    total_aggs.extend(curve_stats(
        col("equity") - lit(starting_balance),
        starting_balance,
        true,
    ));
    let total_stats = total.clone().select(total_aggs);

    let buckets = (opts.chart_max_points / 2).max(1) as f64;
    let running = col("equity").cum_max(false);
    let peak = when(running.clone().gt(lit(starting_balance)))
        .then(running)
        .otherwise(lit(starting_balance));
    let mut chart_aggs = Vec::new();
    for name in ["equity", "drawdown", "net", "gross"] {
        chart_aggs.extend(min_max_aggs(name));
    }
    let chart = total
        .clone()
        .with_columns([
            (col("equity") - peak).alias("drawdown"),
            bucket_col(buckets),
        ])
        .group_by_stable([col("bucket")])
        .agg(chart_aggs);
    // Per key net PnL and mid, per time bucket (the mid per venue/symbol is taken from one
    // of its keys in Rust: every key's marks carry the same mids).
    let mut key_bucket = key_cols().to_vec();
    key_bucket.push(col("bucket"));
    let mut key_chart_aggs = min_max_aggs("pnl").to_vec();
    key_chart_aggs.extend(min_max_aggs("mid"));
    let key_chart = joined
        .clone()
        .select([
            col("ts"),
            col("strategy"),
            col("venue"),
            col("symbol"),
            col("pnl"),
            col("mid"),
        ])
        .with_column(bucket_col(buckets))
        .group_by_stable(key_bucket)
        .agg(key_chart_aggs);
    let fill_mids = super::trades::mids_after_fills(&fills.trades, marks)?;

    // Returns on the grid of the return interval (see `ratios`): the last equity of each
    // grid point, then the sums the ratios need; per key, the key's first grid point after
    // the start compares with the starting balance (its PnL was 0 before its first mark).
    let interval = opts.return_interval_ns;
    let total_returns = total
        .clone()
        .select([col("ts"), col("equity")])
        .with_columns(ratios::grid_columns(interval))
        .group_by_stable([col("k")])
        .agg([col("equity").last(), col("kmax").first()])
        .filter(col("k").lt_eq(col("kmax")))
        .sort(["k"], SortMultipleOptions::default())
        .select(ratios::return_sums(
            col("equity"),
            col("equity").shift(lit(1)),
            starting_balance,
        ));
    let mut key_k = key_cols().to_vec();
    key_k.push(col("k"));
    let key_prev = pl(
        "cannot build the per-key returns",
        col("equity").shift(lit(1)).over(key_cols()),
    )?
    .fill_null(
        when(col("k").gt(lit(0)))
            .then(lit(starting_balance))
            .otherwise(lit(NULL)),
    );
    let key_returns = joined
        .clone()
        .select([
            col("ts"),
            col("strategy"),
            col("venue"),
            col("symbol"),
            col("pnl"),
        ])
        .with_columns(ratios::grid_columns(interval))
        .group_by_stable(key_k.clone())
        .agg([col("pnl").last(), col("kmax").first()])
        .filter(col("k").lt_eq(col("kmax")))
        .sort_by_exprs(key_k, SortMultipleOptions::default())
        .with_column((lit(starting_balance) + col("pnl")).alias("equity"))
        .with_column(key_prev.alias("prev"))
        .group_by(key_cols())
        .agg(ratios::return_sums(
            col("equity"),
            col("prev"),
            starting_balance,
        ));

    let opt = per_key.get_current_optimizations();
    let mut out = pl(
        &format!("cannot compute metrics over {}", marks_path.display()),
        LazyFrame::collect_all_with_engine(
            vec![
                per_key.logical_plan,
                total_stats.logical_plan,
                chart.logical_plan,
                total_returns.logical_plan,
                key_returns.logical_plan,
                key_chart.logical_plan,
                fill_mids.logical_plan,
            ],
            Engine::Auto,
            opt,
        ),
    )?;
    let fill_mids_df = out.pop().unwrap_or_default();
    let key_chart_df = out.pop().unwrap_or_default();
    let key_returns_df = out.pop().unwrap_or_default();
    let total_returns_df = out.pop().unwrap_or_default();
    let chart_df = out.pop().unwrap_or_default();
    let total_df = out.pop().unwrap_or_default();
    let per_key_df = out.pop().unwrap_or_default();

    let start_ns = get_i64(&total_df, "start", 0);
    let end_ns = get_i64(&total_df, "end", 0);
    let mark_interval_ns = get_f64(&total_df, "interval", 0)
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
    let mut key_return_rows: HashMap<Key, usize> = HashMap::new();
    for row in 0..key_returns_df.height() {
        let key = (
            get_str(&key_returns_df, "strategy", row),
            get_str(&key_returns_df, "venue", row),
            get_str(&key_returns_df, "symbol", row),
        );
        key_return_rows.insert(key, row);
    }

    let mut key_rows: HashMap<Key, usize> = HashMap::new();
    for row in 0..per_key_df.height() {
        let key = (
            get_str(&per_key_df, "strategy", row),
            get_str(&per_key_df, "venue", row),
            get_str(&per_key_df, "symbol", row),
        );
        key_rows.insert(key, row);
    }
    let all_keys: BTreeSet<Key> = key_rows
        .keys()
        .cloned()
        .chain(fills.totals.keys().cloned())
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
        let row = key_rows.get(&key).copied();
        let last_mid = row
            .and_then(|r| get_f64(&per_key_df, "last_mid", r))
            .unwrap_or(t.last_price);
        m.unrealized_pnl = if t.position == 0.0 {
            0.0
        } else {
            t.position * (last_mid - t.avg_cost)
        };
        m.net_pnl = m.realized_pnl + m.unrealized_pnl - m.fees;
        m.final_position = Some(t.position);
        let mut key_peak = None;
        if let Some(r) = row {
            let df = &per_key_df;
            m.marks = get_f64(df, "marks", r).unwrap_or(0.0) as u64;
            m.position_mismatches = get_f64(df, "mismatches", r).unwrap_or(0.0) as u64;
            m.max_drawdown = get_f64(df, "max_dd", r).unwrap_or(0.0);
            key_peak = get_f64(df, "peak", r);
            m.mean_abs_position = get_f64(df, "mean_abs_position", r);
            m.max_abs_position = get_f64(df, "max_abs_position", r);
            m.time_weighted_abs_position = get_f64(df, "twa_abs_position", r);
            m.mean_gross_notional = get_f64(df, "mean_gross", r);
            m.max_gross_notional = get_f64(df, "max_gross", r);
        }
        if let Some(&r) = key_return_rows.get(&key) {
            let rt = shown(ratios_at(&key_returns_df, r, periods_per_year));
            m.sharpe = rt.sharpe;
            m.sortino = rt.sortino;
            m.sharpe_stderr = rt.sharpe_stderr;
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
        get_f64(&total_df, "max_dd", 0).unwrap_or(0.0),
        get_f64(&total_df, "peak", 0),
        starting_balance,
        final_equity,
    );
    total.max_drawdown = closed.max_drawdown;
    total.max_drawdown_pct = match (get_f64(&total_df, "max_dd_pct", 0), closed.final_pct) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    let rt = shown(ratios_at(&total_returns_df, 0, periods_per_year));
    total.sharpe = rt.sharpe;
    total.sortino = rt.sortino;
    total.sharpe_stderr = rt.sharpe_stderr;
    total.mean_gross_notional = get_f64(&total_df, "mean_gross", 0);
    total.max_gross_notional = get_f64(&total_df, "max_gross", 0);
    derive_ratios(&mut total, total_holding);

    let mut series = chart_series(&chart_df);
    series.key_pnl = grouped_series(&key_chart_df, "pnl");
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
    series.mids = market_series(&key_chart_df);
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
    for (key, &row) in &key_rows {
        if let Some(m) = get_i64(&per_key_df, "mark_interval", row).filter(|m| *m > 0) {
            mark_interval.insert(key.clone(), m);
        }
    }
    let mut trades = fills.trades;
    let markouts = super::trades::markouts(&mut trades, &fill_mids_df, &mark_interval)?;
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

/// `{name}_min`, `{name}_max` and the timestamps where they occur, per bucket.
fn min_max_aggs(name: &str) -> [Expr; 4] {
    [
        col(name).min().alias(format!("{name}_min")),
        col(name).max().alias(format!("{name}_max")),
        col("ts")
            .get(col(name).arg_min(), true)
            .alias(format!("{name}_tmin")),
        col("ts")
            .get(col(name).arg_max(), true)
            .alias(format!("{name}_tmax")),
    ]
}

/// Time bucket of each row: `buckets` equal slices of the frame's whole time span.
fn bucket_col(buckets: f64) -> Expr {
    let span = (col("ts").max() - col("ts").min()).cast(DataType::Float64) + lit(1.0);
    ((col("ts") - col("ts").min()).cast(DataType::Float64) * lit(buckets) / span)
        .floor()
        .cast(DataType::Int64)
        .alias("bucket")
}

/// Turns rows `rows` of a per-bucket min/max frame into time-ordered points (two per
/// bucket at most).
fn bucket_points(df: &DataFrame, name: &str, rows: &[usize]) -> Vec<(i64, f64)> {
    let lo = f64_values(df, &format!("{name}_min"));
    let hi = f64_values(df, &format!("{name}_max"));
    let tlo = i64_values(df, &format!("{name}_tmin"));
    let thi = i64_values(df, &format!("{name}_tmax"));
    let mut out = Vec::with_capacity(rows.len() * 2);
    for &row in rows {
        let (Some(lo), Some(hi), Some(tlo), Some(thi)) = (lo[row], hi[row], tlo[row], thi[row])
        else {
            continue;
        };
        if tlo == thi {
            out.push((tlo, hi));
        } else if tlo < thi {
            out.push((tlo, lo));
            out.push((thi, hi));
        } else {
            out.push((thi, hi));
            out.push((tlo, lo));
        }
    }
    out
}

/// The whole-run series from the total chart frame.
fn chart_series(df: &DataFrame) -> ChartSeries {
    let rows: Vec<usize> = (0..df.height()).collect();
    ChartSeries {
        equity: bucket_points(df, "equity", &rows),
        drawdown: bucket_points(df, "drawdown", &rows),
        net_notional: bucket_points(df, "net", &rows),
        gross_notional: bucket_points(df, "gross", &rows),
        ..ChartSeries::default()
    }
}

/// One series per (strategy, venue, symbol) — or per (venue, symbol) when the frame has no
/// `strategy` column — from a per-key-and-bucket min/max frame, sorted by key.
fn grouped_series(df: &DataFrame, name: &str) -> Vec<KeySeries> {
    let mut rows: BTreeMap<Key, Vec<usize>> = BTreeMap::new();
    for row in 0..df.height() {
        let key = (
            get_str(df, "strategy", row),
            get_str(df, "venue", row),
            get_str(df, "symbol", row),
        );
        rows.entry(key).or_default().push(row);
    }
    rows.into_iter()
        .map(|((strategy, venue, symbol), rows)| {
            let mut points = bucket_points(df, name, &rows);
            points.sort_by_key(|p| p.0);
            KeySeries {
                strategy,
                venue,
                symbol,
                points,
            }
        })
        .collect()
}

/// The mid price per (venue, symbol), from the per-key buckets of `df`: the mids of the
/// market's key with the most buckets (every strategy on a market is marked at the same
/// mids in a ticktape run, so any key would do; the longest covers the most time).
fn market_series(df: &DataFrame) -> Vec<KeySeries> {
    let mut rows: BTreeMap<Key, Vec<usize>> = BTreeMap::new();
    for row in 0..df.height() {
        let key = (
            get_str(df, "strategy", row),
            get_str(df, "venue", row),
            get_str(df, "symbol", row),
        );
        rows.entry(key).or_default().push(row);
    }
    let mut best: BTreeMap<(String, String), Vec<usize>> = BTreeMap::new();
    for ((_, venue, symbol), rows) in rows {
        let slot = best.entry((venue, symbol)).or_default();
        if rows.len() > slot.len() {
            *slot = rows;
        }
    }
    best.into_iter()
        .map(|((venue, symbol), rows)| {
            let mut points = bucket_points(df, "mid", &rows);
            points.sort_by_key(|p| p.0);
            KeySeries {
                strategy: String::new(),
                venue,
                symbol,
                points,
            }
        })
        .collect()
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
