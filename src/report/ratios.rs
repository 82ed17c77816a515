//! Sharpe and Sortino ratios: returns on a regular grid of the chosen return interval, and
//! the rule for when an annualised ratio means something at all.
//!
//! Owns the grid, the return sums and the rule; `metrics` walks the curves onto the grid
//! and calls `ratios` on the sums. Never reads files.
//!
//! The grid: `g_k = start + k · interval` for `k = 0 ..= K`, `K = ⌊(end − start) / interval⌋`,
//! where start and end are the first and last mark of the run. The equity at `g_k` is the
//! last point of the curve at or before `g_k` (points in `(g_{k−1}, g_k]` belong to `k`), so
//! a grid point without a new mark repeats the previous equity and its return is zero.

use super::agg::{self, Kahan};

use super::render::{format_interval, format_secs};

/// Least span of data (first to last mark) for which ratios are shown: one day.
pub const MIN_RATIO_SPAN_NS: i64 = 86_400 * 1_000_000_000;

/// Least number of return intervals for which ratios are shown.
pub const MIN_RATIO_RETURNS: i64 = 30;

/// Grid point of a curve point `since_start` ns after the first mark: `⌈since_start /
/// interval⌉` (points in `(g_{k−1}, g_k]` belong to `k`).
pub(super) fn grid_point(since_start: i64, interval_ns: i64) -> i64 {
    (since_start + interval_ns - 1).div_euclid(interval_ns)
}

/// The sums the ratios need over the returns of one curve's grid points.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(super) struct ReturnSums {
    /// `Σ r`.
    pub sum: f64,
    /// `Σ r²`.
    pub sum2: f64,
    /// `Σ min(r, 0)²`.
    pub down2: f64,
    /// Number of returns: the last grid point inside the run (grid points without a curve
    /// point are zero returns).
    pub n: f64,
}

impl ReturnSums {
    /// The annualised ratios of these sums.
    pub(super) fn ratios(&self, periods_per_year: f64) -> Ratios {
        ratios(self.sum, self.sum2, self.down2, self.n, periods_per_year)
    }
}

/// The return from `prev` to `equity`: with `base > 0` a simple return `E_k / E_prev − 1`;
/// without capital the PnL change `E_k − E_prev` (the ratios are scale-free).
fn ret(equity: f64, prev: f64, base: f64) -> f64 {
    if base > 0.0 {
        equity / prev - 1.0
    } else {
        equity - prev
    }
}

/// Return sums of the whole run's curve: `equity` at its grid points (those with a curve
/// point, in grid order; the first has no return), the last grid point `kmax`. Summed with
/// polars' column kernel, as its query engine summed them.
pub(super) fn column_return_sums(equity: &[f64], base: f64, kmax: i64) -> ReturnSums {
    let rets: Vec<Option<f64>> = std::iter::once(None)
        .chain(equity.windows(2).map(|w| Some(ret(w[1], w[0], base))))
        .take(equity.len())
        .collect();
    let down2: Vec<Option<f64>> = rets
        .iter()
        .map(|r| Some(r.filter(|r| *r < 0.0).map_or(0.0, |r| r * r)))
        .collect();
    let sum2: Vec<Option<f64>> = rets.iter().map(|r| r.map(|r| r * r)).collect();
    // The engine held the returns as two chunks: the first (no return) and the rest.
    let sum =
        |v: &[Option<f64>]| agg::column_sum(v.chunks(1).take(1).chain([v.get(1..).unwrap_or(&[])]));
    ReturnSums {
        sum: sum(&rets),
        sum2: sum(&sum2),
        down2: sum(&down2),
        n: if equity.is_empty() { 0.0 } else { kmax as f64 },
    }
}

/// Return sums of one key's curve: `(grid point, PnL)` at its grid points (in grid order).
/// The key's first grid point after the start compares with `base` (its PnL was 0 before
/// its first mark); a first point at the start has no return. Summed per group, as polars
/// sums a group.
pub(super) fn key_return_sums(grid: &[(i64, f64)], base: f64, kmax: i64) -> ReturnSums {
    let (mut sum, mut sum2, mut down2) = (Kahan::default(), Kahan::default(), Kahan::default());
    let mut prev: Option<f64> = None;
    for (i, &(k, pnl)) in grid.iter().enumerate() {
        let equity = base + pnl;
        let before = if i == 0 {
            (k > 0).then_some(base)
        } else {
            prev
        };
        prev = Some(equity);
        match before.map(|p| ret(equity, p, base)) {
            Some(r) => {
                sum.add(r);
                sum2.add(r * r);
                down2.add(if r < 0.0 { r * r } else { 0.0 });
            }
            None => down2.add(0.0),
        }
    }
    ReturnSums {
        sum: sum.sum(),
        sum2: sum2.sum(),
        down2: down2.sum(),
        n: if grid.is_empty() { 0.0 } else { kmax as f64 },
    }
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
