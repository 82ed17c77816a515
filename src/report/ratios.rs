//! Sharpe and Sortino ratios: returns on a regular grid of the chosen return interval, and
//! the rule for when an annualised ratio means something at all.
//!
//! Owns the grid expressions, the return aggregations and the rule; `metrics` puts
//! the expressions into its lazy plan and calls `ratios` on what comes back. Never reads
//! files.
//!
//! The grid: `g_k = start + k · interval` for `k = 0 ..= K`, `K = ⌊(end − start) / interval⌋`,
//! where start and end are the first and last mark of the run. The equity at `g_k` is the
//! last point of the curve at or before `g_k` (points in `(g_{k−1}, g_k]` belong to `k`), so
//! a grid point without a new mark repeats the previous equity and its return is zero.

use polars::prelude::*;

use super::render::{format_interval, format_secs};

/// Least span of data (first to last mark) for which ratios are shown: one day.
pub const MIN_RATIO_SPAN_NS: i64 = 86_400 * 1_000_000_000;

/// Least number of return intervals for which ratios are shown.
pub const MIN_RATIO_RETURNS: i64 = 30;

/// Columns `k` (grid point of the row) and `kmax` (last grid point inside the run), for a
/// frame whose `ts` spans the whole run.
pub(super) fn grid_columns(interval_ns: i64) -> [Expr; 2] {
    let since_start = col("ts") - col("ts").min();
    [
        (since_start.clone() + lit(interval_ns - 1))
            .floor_div(lit(interval_ns))
            .alias("k"),
        since_start.max().floor_div(lit(interval_ns)).alias("kmax"),
    ]
}

/// Aggregations over grid points `equity` (one row per grid point that has a curve point,
/// in grid order) with `prev` the equity at the previous such point: the sums the ratios
/// need. With `base > 0` returns are simple returns `E_k / E_prev − 1`; without capital
/// they are PnL changes `E_k − E_prev` (the ratios are scale-free). Grid points without a
/// row are zero returns: they are counted through `kmax`, not summed.
pub(super) fn return_sums(equity: Expr, prev: Expr, base: f64) -> Vec<Expr> {
    let ret = if base > 0.0 {
        equity / prev - lit(1.0)
    } else {
        equity - prev
    };
    vec![
        ret.clone().sum().alias("ret_sum"),
        ret.clone().pow(2).sum().alias("ret_sum2"),
        when(ret.clone().lt(lit(0.0)))
            .then(ret.pow(2))
            .otherwise(lit(0.0))
            .sum()
            .alias("ret_down2"),
        col("kmax").first().alias("ret_n"),
    ]
}

/// Why ratios are not shown for a run whose marks span `span_ns` with a median spacing of
/// `mark_interval_ns`, at returns every `interval_ns`; `None` when they are shown.
///
/// The rule: the return interval is no shorter than the mark interval (finer returns are
/// made of repeated marks), the data spans at least [`MIN_RATIO_SPAN_NS`] and holds at
/// least [`MIN_RATIO_RETURNS`] intervals. docs/REPORT.md says why.
pub fn unavailable_reason(
    span_ns: Option<i64>,
    interval_ns: i64,
    mark_interval_ns: Option<i64>,
) -> Option<String> {
    let Some(span) = span_ns else {
        return Some("no marks".into());
    };
    if let Some(m) = mark_interval_ns
        && m > interval_ns
    {
        return Some(format!(
            "returns every {} but marks only every {}; pick --return-interval {} or more",
            format_interval(interval_ns),
            format_interval(m),
            format_interval(m)
        ));
    }
    let n = span / interval_ns;
    if span < MIN_RATIO_SPAN_NS || n < MIN_RATIO_RETURNS {
        return Some(format!(
            "{} of {} returns ({n} intervals); needs >= {} of data and >= {MIN_RATIO_RETURNS} return intervals",
            format_secs(span as f64 / 1e9),
            format_interval(interval_ns),
            format_interval(MIN_RATIO_SPAN_NS),
        ));
    }
    None
}

/// Annualised ratios of one curve.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(super) struct Ratios {
    pub sharpe: Option<f64>,
    pub sortino: Option<f64>,
    pub sharpe_stderr: Option<f64>,
}

/// Sharpe (`mean / std(ddof 1) · √N`), Sortino (`mean / √mean(min(r, 0)²) · √N`) and the
/// Sharpe ratio's standard error under i.i.d. returns (Lo 2002:
/// `√((1 + SR²/2) / n) · √N`, `SR` per interval) from `n` returns with the given sums.
pub(super) fn ratios(sum: f64, sum2: f64, down2: f64, n: f64, periods_per_year: f64) -> Ratios {
    if n < 2.0 {
        return Ratios::default();
    }
    let ann = periods_per_year.sqrt();
    let mean = sum / n;
    let var = ((sum2 - n * mean * mean) / (n - 1.0)).max(0.0);
    let sd = var.sqrt();
    let (sharpe, sharpe_stderr) = if sd > 0.0 {
        let per = mean / sd;
        (
            Some(per * ann),
            Some(((1.0 + per * per / 2.0) / n).sqrt() * ann),
        )
    } else {
        (None, None)
    };
    let sortino = (down2 > 0.0).then(|| mean / (down2 / n).sqrt() * ann);
    Ratios {
        sharpe,
        sortino,
        sharpe_stderr,
    }
}
