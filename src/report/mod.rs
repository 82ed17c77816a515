//! PnL reports over a run directory: Parquet read with arrow-rs, figures computed in one
//! pass over the marks with polars' kernels, the trade list an eager polars frame. Never
//! touches live sockets.
//!
//! # Layout
//! - [`ledger`]: the average-cost state machine, applied fill by fill (path-dependent, so it
//!   is a single pass in Rust over the sorted fill columns).
//! - `input`: reads the run's Parquet files with arrow-rs, only the columns needed.
//! - `metrics`: reads `fills.parquet`, feeds the ledger, and **as-of joins** (backward, by
//!   strategy/venue/symbol) the per-fill snapshots onto `marks.parquet` in one pass over
//!   the marks sorted by time, which also accumulates equity, drawdown, returns and
//!   inventory per key and in total. `agg`: the sums, means and medians as polars computes
//!   them.
//! - [`ratios`]: the return grid of the chosen interval, Sharpe/Sortino, and the rule for
//!   when they are shown. `orders`: order statistics from `orders.parquet` (one row per
//!   order by its final state). `trades`: the trade list and markouts (mids after fills).
//! - `render`: terminal table, JSON, CSV. `chart`: the stacked-panel SVG, one run or two
//!   overlaid. `compare`: two runs side by side.
//!
//! The entry points are [`compute`] (a [`Report`] value), [`render_table`], [`render_json`],
//! [`render_csv`], [`render_trades_csv`], [`write_chart`], [`write_compare_chart`],
//! [`compare`], and [`run`] which does what the `ticktape report` command does. Metric
//! definitions live in `docs/REPORT.md`.
//!
//! ```no_run
//! use std::path::Path;
//! use ticktape::report::{compute, render_table, ReportOptions};
//! let report = compute(Path::new("runs/demo"), &ReportOptions::default())?;
//! println!("{}", render_table(&report));
//! # Ok::<(), ticktape::report::ReportError>(())
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

mod agg;
mod chart;
mod compare;
mod input;
pub mod ledger;
mod metrics;
mod orders;
pub mod ratios;
mod render;
#[cfg(test)]
mod tests;
mod trades;

pub use chart::{write_chart, write_compare_chart};
pub use compare::compare;
pub(crate) use render::csv_document;
pub use render::{CSV_COLUMNS, render_csv, render_json, render_table};
pub use trades::{MARKOUT_HORIZONS_NS, TRADE_COLUMNS, render_trades_csv};

/// Version of the JSON layout produced by [`render_json`]; bumped when a field changes meaning
/// or disappears (adding fields does not bump it).
pub const REPORT_SCHEMA_VERSION: u32 = 2;

/// Default return interval for Sharpe/Sortino: one minute.
pub const DEFAULT_RETURN_INTERVAL_NS: i64 = 60_000_000_000;

/// Default number of points per chart series (min and max of each time bucket are kept).
pub const DEFAULT_CHART_POINTS: usize = 2000;

/// What to compute and where to write side outputs.
#[derive(Clone, Debug)]
pub struct ReportOptions {
    /// Print JSON instead of the terminal table (used by [`run`]).
    pub json: bool,
    /// Also write a CSV (one row per strategy/venue/symbol plus a `TOTAL` row) here.
    pub csv: Option<PathBuf>,
    /// Also write the SVG chart here.
    pub chart: Option<PathBuf>,
    /// Also write the trade list (every fill, [`TRADE_COLUMNS`]) as CSV here.
    pub trades: Option<PathBuf>,
    /// Upper bound on points per chart series (downsampled with min/max per bucket).
    pub chart_max_points: usize,
    /// Overrides `starting_balance` from `summary.json` (quote currency).
    pub starting_balance: Option<f64>,
    /// Return interval for Sharpe/Sortino, ns (> 0); see [`ratios::unavailable_reason`]
    /// for when the ratios are shown at all.
    pub return_interval_ns: i64,
}

impl Default for ReportOptions {
    fn default() -> Self {
        ReportOptions {
            json: false,
            csv: None,
            chart: None,
            trades: None,
            chart_max_points: DEFAULT_CHART_POINTS,
            starting_balance: None,
            return_interval_ns: DEFAULT_RETURN_INTERVAL_NS,
        }
    }
}

/// Why a report could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The run directory does not exist.
    #[error(
        "{path} is not a directory: a run directory is what `ticktape run` writes (runs/<scenario name>, or --out DIR)"
    )]
    NoRunDir {
        /// The path given.
        path: PathBuf,
    },
    /// One of two compared runs failed; says which (the cause is the error's source).
    #[error("run {which} ({path})")]
    InRun {
        /// `A` (the first run directory) or `B` (the `--compare` one).
        which: &'static str,
        /// Its run directory.
        path: PathBuf,
        /// What went wrong with it.
        #[source]
        source: Box<ReportError>,
    },
    /// An output file's folder does not exist (checked before anything is computed).
    #[error("cannot write {path}: folder {dir} does not exist (create it first: mkdir -p {dir})")]
    NoOutputDir {
        /// The output file.
        path: PathBuf,
        /// Its missing folder.
        dir: PathBuf,
    },
    /// A required input file is missing from the run directory.
    #[error(
        "{path} not found: a run directory needs fills.parquet and marks.parquet (is this the directory the exchange wrote?)"
    )]
    MissingInput {
        /// The path that was looked for.
        path: PathBuf,
    },
    /// An input file could not be read: not Parquet, a column missing or of the wrong type.
    #[error("cannot read {path}: {reason}")]
    BadInput {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// polars failed while building a frame (the polars error is the source).
    #[error("{context}")]
    Polars {
        /// What was being done.
        context: String,
        /// The polars error.
        #[source]
        source: polars::error::PolarsError,
    },
    /// A file could not be read or written (the I/O error is the source).
    #[error("{path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// `summary.json` is not a JSON object.
    #[error("{path} is not a JSON object: {reason} (fix or delete it; it is optional)")]
    BadSummary {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// A fill row could not be interpreted.
    #[error("fills.parquet row {row}: {reason}")]
    BadFill {
        /// Row number after sorting by time (0-based).
        row: usize,
        /// What was wrong.
        reason: String,
    },
    /// An option is out of range.
    #[error("{0}")]
    InvalidOption(String),
    /// The chart could not be drawn or written.
    #[error("cannot draw chart {path}: {reason}")]
    Chart {
        /// Output path.
        path: PathBuf,
        /// The plotting error.
        reason: String,
    },
}

/// Result alias for this module.
pub type Result<T> = std::result::Result<T, ReportError>;

/// Metrics for one (strategy, venue, symbol) or for the whole run. All money is quote
/// currency; sizes are base units. `None` means "not defined for this input" (for example
/// a Sharpe ratio with fewer than two returns) and is `null` in JSON.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Realized PnL, average-cost method, gross of fees.
    pub realized_pnl: f64,
    /// `position × (last mid − average cost)` at the last mark.
    pub unrealized_pnl: f64,
    /// Fees paid (negative = net rebate).
    pub fees: f64,
    /// `realized_pnl + unrealized_pnl − fees`.
    pub net_pnl: f64,
    /// `starting_balance + net_pnl` (total only).
    pub final_equity: Option<f64>,
    /// Largest peak-to-trough fall of the equity curve, as a positive amount.
    pub max_drawdown: f64,
    /// Largest fall relative to its peak equity, percent (total only; needs a positive peak).
    pub max_drawdown_pct: Option<f64>,
    /// Annualised Sharpe ratio of equity returns over the return interval (risk-free rate
    /// 0); `None` when the run is too short for it (see `Report::ratios_unavailable`).
    pub sharpe: Option<f64>,
    /// Standard error of `sharpe` under i.i.d. returns (Lo 2002), same units.
    pub sharpe_stderr: Option<f64>,
    /// Annualised Sortino ratio (downside deviation with target 0).
    pub sortino: Option<f64>,
    /// Notional traded, `Σ price × size`.
    pub turnover: f64,
    /// Number of fills.
    pub trades: u64,
    /// Fills that reduced the absolute position.
    pub closing_trades: u64,
    /// Closing fills with strictly positive realized PnL (gross of fees).
    pub winning_trades: u64,
    /// `winning_trades / closing_trades`.
    pub win_rate: Option<f64>,
    /// Positions opened from flat that were closed or flipped.
    pub round_trips: u64,
    /// Mean round-trip duration, seconds.
    pub avg_holding_secs: Option<f64>,
    /// Signed position after the last fill (per key only).
    pub final_position: Option<f64>,
    /// Mean `|position|` over marks (per key only).
    pub mean_abs_position: Option<f64>,
    /// Max `|position|` over marks (per key only).
    pub max_abs_position: Option<f64>,
    /// Time-weighted mean `|position|` between the first and last mark (per key only).
    pub time_weighted_abs_position: Option<f64>,
    /// Mean gross inventory notional `Σ |position| × mid` over marks.
    pub mean_gross_notional: Option<f64>,
    /// Max gross inventory notional.
    pub max_gross_notional: Option<f64>,
    /// Maker fill count.
    pub maker_trades: u64,
    /// Taker fill count.
    pub taker_trades: u64,
    /// Maker notional.
    pub maker_notional: f64,
    /// Taker notional.
    pub taker_notional: f64,
    /// Fees on maker fills.
    pub maker_fees: f64,
    /// Fees on taker fills.
    pub taker_fees: f64,
    /// `maker_notional / (maker_notional + taker_notional)`.
    pub maker_share: Option<f64>,
    /// Number of marks (rows of `marks.parquet`) used.
    pub marks: u64,
    /// Marks whose `position` column disagrees with the position rebuilt from fills.
    pub position_mismatches: u64,
}

/// Metrics of one (strategy, venue, symbol).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KeyMetrics {
    /// Strategy name.
    pub strategy: String,
    /// Venue name.
    pub venue: String,
    /// Symbol.
    pub symbol: String,
    /// The metrics.
    #[serde(flatten)]
    pub metrics: Metrics,
}

/// Order counts of one (strategy, venue, symbol) or of the whole run. `orders.parquet` has
/// one row per state change; these count **orders** (each by its final state).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OrderCounts {
    /// Distinct orders: (strategy, venue, symbol, `order_id`).
    pub orders: u64,
    /// Rows of `orders.parquet` behind them (one per state change).
    pub updates: u64,
    /// Orders by their final `status` (`filled`, `canceled`, `rejected`, and the open
    /// states `new` and `partially_filled`).
    pub by_status: BTreeMap<String, u64>,
    /// `Σ size` over orders not rejected (base units; in the total, summed over symbols).
    pub ordered_qty: f64,
    /// `Σ filled` (the order's largest `filled`) over orders not rejected.
    pub filled_qty: f64,
    /// `filled_qty / ordered_qty`.
    pub fill_ratio: Option<f64>,
}

/// Order counts of one (strategy, venue, symbol).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KeyOrderStats {
    /// Strategy name.
    pub strategy: String,
    /// Venue name.
    pub venue: String,
    /// Symbol.
    pub symbol: String,
    /// The counts.
    #[serde(flatten)]
    pub counts: OrderCounts,
}

/// Order statistics, present when `orders.parquet` exists.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OrderStats {
    /// Whole run.
    #[serde(flatten)]
    pub total: OrderCounts,
    /// One entry per (strategy, venue, symbol) with orders, sorted by those names.
    pub by_key: Vec<KeyOrderStats>,
}

/// Mid moves after fills of one (strategy, venue, symbol, side, liquidity), in basis points
/// of the mid at the fill, signed so that positive is favourable to the strategy.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MarkoutGroup {
    /// Strategy name.
    pub strategy: String,
    /// Venue name.
    pub venue: String,
    /// Symbol.
    pub symbol: String,
    /// `buy` or `sell`.
    pub side: String,
    /// `maker` or `taker`.
    pub liquidity: String,
    /// Number of fills.
    pub fills: u64,
    /// Mean `side × (mid at fill − price) / mid × 10⁴`: what the fill gained against the mid
    /// (half the spread for a maker at the touch, minus it for a taker).
    pub edge_bps: Option<f64>,
    /// Mean `side × (mid(t + h) − mid(t)) / mid(t) × 10⁴` per horizon of
    /// [`Markouts::horizons`]; `null` when the marks are too sparse for the horizon.
    pub markout_bps: Vec<Option<f64>>,
    /// Fills behind each `markout_bps` (fills too close to the end have none).
    pub markout_fills: Vec<u64>,
    /// Median spacing of the marks of this venue/symbol, ns: the resolution of the mids.
    pub mark_interval_ns: Option<i64>,
}

/// Markouts: what the mid did after the fills (adverse selection), see `docs/REPORT.md`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Markouts {
    /// Horizon labels (`100ms`, `1s`, `10s`).
    pub horizons: Vec<String>,
    /// The same horizons, ns.
    pub horizons_ns: Vec<i64>,
    /// Horizons that could not be computed for some symbol, and why: `+100ms: binance/BTCUSDT
    /// marks every 1s`.
    pub unresolved: Vec<String>,
    /// One entry per (strategy, venue, symbol, side, liquidity), sorted by those.
    pub groups: Vec<MarkoutGroup>,
}

/// Points `(ts ns since the Unix epoch, value)` of one (strategy, venue, symbol); for a
/// price series `strategy` is empty.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KeySeries {
    /// Strategy name (empty for a mid price series).
    pub strategy: String,
    /// Venue name.
    pub venue: String,
    /// Symbol.
    pub symbol: String,
    /// The points, in time order.
    pub points: Vec<(i64, f64)>,
}

/// Fills of one (strategy, venue, symbol) to mark on the price panel: `(ts, price)`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KeyFills {
    /// Strategy name.
    pub strategy: String,
    /// Venue name.
    pub venue: String,
    /// Symbol.
    pub symbol: String,
    /// Buys.
    pub buys: Vec<(i64, f64)>,
    /// Sells.
    pub sells: Vec<(i64, f64)>,
    /// Whether fills were thinned (lowest and highest price per side and time bucket).
    pub thinned: bool,
}

/// Downsampled series for the chart: `(ts ns since the Unix epoch, value)` in time order,
/// at most two points (the bucket's min and max) per time bucket.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChartSeries {
    /// Total equity (quote currency).
    pub equity: Vec<(i64, f64)>,
    /// Drawdown from the running peak (≤ 0, quote currency).
    pub drawdown: Vec<(i64, f64)>,
    /// Net inventory notional `Σ position × mid` (signed).
    pub net_notional: Vec<(i64, f64)>,
    /// Gross inventory notional `Σ |position| × mid`.
    pub gross_notional: Vec<(i64, f64)>,
    /// Net PnL per (strategy, venue, symbol), ending at the key's final net PnL.
    pub key_pnl: Vec<KeySeries>,
    /// Signed position per (strategy, venue, symbol) (base units), a step per fill.
    pub key_position: Vec<KeySeries>,
    /// Mid price per (venue, symbol).
    pub mids: Vec<KeySeries>,
    /// Fills per (strategy, venue, symbol).
    pub fills: Vec<KeyFills>,
}

/// Everything `ticktape report` knows about one run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// [`REPORT_SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The run directory as given.
    pub run_dir: String,
    /// `scenario` from `summary.json`.
    pub scenario: Option<String>,
    /// Starting balance (quote currency).
    pub starting_balance: f64,
    /// First mark time, ns since the Unix epoch.
    pub start_ns: Option<i64>,
    /// Last mark time, ns since the Unix epoch.
    pub end_ns: Option<i64>,
    /// The return interval for Sharpe/Sortino, ns (`--return-interval`).
    pub interval_ns: i64,
    /// Median spacing of the total equity curve (the mark interval), ns.
    pub mark_interval_ns: Option<i64>,
    /// Return intervals per 365-day year: the annualisation factor is its square root.
    pub periods_per_year: f64,
    /// Why Sharpe/Sortino are `null` for this run (too short for the return interval, or
    /// the interval is finer than the marks); `None` when they are computed.
    pub ratios_unavailable: Option<String>,
    /// Whole-run metrics.
    pub total: Metrics,
    /// One entry per (strategy, venue, symbol), sorted by those names.
    pub by_key: Vec<KeyMetrics>,
    /// Order statistics, if `orders.parquet` exists.
    pub orders: Option<OrderStats>,
    /// Mid moves after fills by strategy × side × liquidity.
    pub markouts: Markouts,
    /// `summary.json` as found (untouched), if present.
    pub summary: Option<serde_json::Value>,
    /// Downsampled series for [`write_chart`]; not serialized.
    #[serde(skip)]
    pub series: ChartSeries,
    /// Every fill with the ledger's view of it and its markouts (the source of
    /// [`render_trades_csv`]); not serialized.
    #[serde(skip)]
    pub trades: polars::prelude::DataFrame,
}

/// Computes the report for `run_dir` (see the module docs for the pipeline).
pub fn compute(run_dir: &Path, opts: &ReportOptions) -> Result<Report> {
    if !run_dir.is_dir() {
        return Err(ReportError::NoRunDir {
            path: run_dir.to_path_buf(),
        });
    }
    if opts.return_interval_ns <= 0 {
        return Err(ReportError::InvalidOption(format!(
            "the return interval must be positive, got {} ns",
            opts.return_interval_ns
        )));
    }
    metrics::compute(run_dir, opts)
}

/// Refuses output paths whose folder does not exist, before anything is computed.
fn check_output_dirs(opts: &ReportOptions) -> Result<()> {
    for path in [&opts.csv, &opts.chart, &opts.trades].into_iter().flatten() {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
            && !dir.is_dir()
        {
            return Err(ReportError::NoOutputDir {
                path: path.clone(),
                dir: dir.to_path_buf(),
            });
        }
    }
    Ok(())
}

fn write_file(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|source| ReportError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// What `ticktape report` does: compute, write the CSV/chart if asked, and return the text
/// for stdout (JSON when `opts.json`, else the table).
///
/// With `compare_with`, both runs are computed before anything is written, an error names
/// the run it comes from (`run A (…)` or `run B (…)`), the chart overlays both runs, and
/// the text is the comparison (JSON: `{"a": …, "b": …}`). The CSV and the trade list are
/// run A's.
pub fn run(run_dir: &Path, compare_with: Option<&Path>, opts: &ReportOptions) -> Result<String> {
    check_output_dirs(opts)?;
    fn in_run(which: &'static str, path: &Path) -> impl FnOnce(ReportError) -> ReportError {
        let path = path.to_path_buf();
        move |e| ReportError::InRun {
            which,
            path,
            source: Box::new(e),
        }
    }
    let (report, other) = match compare_with {
        None => (compute(run_dir, opts)?, None),
        Some(other_dir) => (
            compute(run_dir, opts).map_err(in_run("A", run_dir))?,
            Some(compute(other_dir, opts).map_err(in_run("B", other_dir))?),
        ),
    };
    if let Some(path) = &opts.csv {
        write_file(path, &render_csv(&report))?;
    }
    if let Some(path) = &opts.trades {
        write_file(path, &render_trades_csv(&report))?;
    }
    if let Some(path) = &opts.chart {
        match &other {
            Some(other) => write_compare_chart(&report, other, path)?,
            None => write_chart(&report, path)?,
        }
    }
    Ok(match (&other, opts.json) {
        (None, true) => render_json(&report),
        (None, false) => render_table(&report),
        (Some(other), true) => {
            let both = serde_json::json!({ "a": report, "b": other });
            serde_json::to_string_pretty(&both).unwrap_or_default()
        }
        (Some(other), false) => compare(&report, other),
    })
}
