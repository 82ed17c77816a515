//! The aggregation kernels of the report, as polars computes them, so that sums and means
//! come out the same to the last bit whether a value is summed over a whole column or per
//! group.
//!
//! polars sums a whole `f64` column chunk by chunk with its own blocked kernel, adding the
//! chunks' sums in order ([`column_sum`], [`column_mean`] take the chunks the query engine
//! held), but a group of rows with Kahan summation in row order ([`Kahan`]); a median is
//! its linear-interpolation quantile ([`median_i64`]). Never reads files.

use polars::prelude::*;

/// Kahan summation exactly as polars sums the `f64` values of one group (in row order).
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Kahan {
    sum: f64,
    err: f64,
    /// Values added (for [`Kahan::mean`] and the one-value shortcut).
    n: u64,
    /// The first value added.
    first: f64,
}

impl Kahan {
    pub(super) fn add(&mut self, v: f64) {
        if self.n == 0 {
            self.first = v;
        }
        self.n += 1;
        let y = v - self.err;
        let new_sum = self.sum + y;
        let new_err = (new_sum - self.sum) - y;
        self.sum = new_sum;
        if new_err.is_finite() {
            self.err = new_err;
        }
    }

    /// The group's sum (`0` without values; a single value as it is).
    pub(super) fn sum(&self) -> f64 {
        if self.n == 1 { self.first } else { self.sum }
    }

    /// The group's mean (`None` without values).
    pub(super) fn mean(&self) -> Option<f64> {
        match self.n {
            0 => None,
            1 => Some(self.first),
            n => Some(self.sum / n as f64),
        }
    }
}

/// The column made of `parts` (each a chunk of its own, as polars holds a column that was
/// sliced or shifted).
fn chunked<'a>(parts: impl IntoIterator<Item = &'a [Option<f64>]>) -> Float64Chunked {
    let mut out = Float64Chunked::full_null(PlSmallStr::EMPTY, 0);
    for part in parts {
        let chunk = Float64Chunked::from_slice_options(PlSmallStr::EMPTY, part);
        // Appending a chunk to a column of the same type cannot fail.
        let _ = out.append_owned(chunk);
    }
    out
}

/// Sum of a whole column held as the chunks `parts` (nulls skipped): polars' kernel per
/// chunk, the chunks' sums added in order; `0` when empty.
pub(super) fn column_sum<'a>(parts: impl IntoIterator<Item = &'a [Option<f64>]>) -> f64 {
    chunked(parts).sum().unwrap_or(0.0)
}

/// Mean of a whole column held as the chunks `parts`, as [`column_sum`] sums it; `None`
/// when empty.
pub(super) fn column_mean<'a>(parts: impl IntoIterator<Item = &'a [Option<f64>]>) -> Option<f64> {
    chunked(parts).mean()
}

/// Median of integers (the mean of the middle two for an even count), `None` when empty.
pub(super) fn median_i64(values: Vec<i64>) -> Option<f64> {
    Int64Chunked::from_vec(PlSmallStr::EMPTY, values).median()
}

/// Largest value, NaN ignored (polars' `max`), folded one value at a time.
pub(super) fn max(acc: Option<f64>, v: f64) -> Option<f64> {
    Some(acc.map_or(v, |a| a.max(v)))
}

/// Min and max of one series in one bucket, with the time of each (the first row holding
/// it).
#[derive(Clone, Copy, Debug)]
pub(super) struct Extremes {
    pub lo: f64,
    pub t_lo: i64,
    pub hi: f64,
    pub t_hi: i64,
}

impl Extremes {
    pub(super) fn new(t: i64, v: f64) -> Extremes {
        Extremes {
            lo: v,
            t_lo: t,
            hi: v,
            t_hi: t,
        }
    }

    pub(super) fn add(&mut self, t: i64, v: f64) {
        if v < self.lo {
            self.lo = v;
            self.t_lo = t;
        }
        if v > self.hi {
            self.hi = v;
            self.t_hi = t;
        }
    }

    /// The bucket as chart points in time order: one when both are at the same time.
    pub(super) fn push_points(&self, out: &mut Vec<(i64, f64)>) {
        if self.t_lo == self.t_hi {
            out.push((self.t_lo, self.hi));
        } else if self.t_lo < self.t_hi {
            out.push((self.t_lo, self.lo));
            out.push((self.t_hi, self.hi));
        } else {
            out.push((self.t_hi, self.hi));
            out.push((self.t_lo, self.lo));
        }
    }
}
