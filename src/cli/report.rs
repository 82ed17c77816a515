//! `ticktape report`: the PnL report of a run directory, or two compared.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;

use super::args::parse_duration;

#[derive(Args)]
pub struct ReportArgs {
    /// Run directory (with fills.parquet and marks.parquet).
    run_dir: PathBuf,
    /// Print JSON instead of the table.
    #[arg(long)]
    json: bool,
    /// Also write a CSV here.
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Also write the SVG chart here (equity, drawdown, and per strategy: PnL, price with
    /// fills, position).
    #[arg(long)]
    chart: Option<PathBuf>,
    /// A second run directory to compare with.
    #[arg(long)]
    compare: Option<PathBuf>,
    /// Also write the trade list (every fill, with position, realized PnL and markouts)
    /// as CSV here.
    #[arg(long)]
    trades: Option<PathBuf>,
    /// Starting balance instead of the run's summary.json.
    #[arg(long)]
    starting_balance: Option<f64>,
    /// Return interval for Sharpe/Sortino (shown only with >= 1 day of data and >= 30
    /// intervals; see docs/REPORT.md).
    #[arg(long, default_value = "1m", value_parser = parse_duration)]
    return_interval: Duration,
}

pub fn run(a: ReportArgs) -> Result<()> {
    for (flag, path) in [("--csv", &a.csv), ("--chart", &a.chart)] {
        if let Some(path) = path {
            create_parent(path, flag)?;
        }
    }
    let options = ticktape::report::ReportOptions {
        json: a.json,
        csv: a.csv,
        chart: a.chart,
        trades: a.trades,
        starting_balance: a.starting_balance,
        // parse_duration bounds it to 365 days, far inside i64 nanoseconds.
        return_interval_ns: i64::try_from(a.return_interval.as_nanos())
            .context("--return-interval is too long")?,
        ..Default::default()
    };
    let text = ticktape::report::run(&a.run_dir, a.compare.as_deref(), &options).with_context(
        || match &a.compare {
            Some(b) => format!(
                "cannot compare {} with {}",
                a.run_dir.display(),
                b.display()
            ),
            None => format!("cannot report on {}", a.run_dir.display()),
        },
    )?;
    println!("{text}");
    Ok(())
}

/// Creates the folder an output file goes into: `--chart out/x.svg` makes `out/`.
fn create_parent(path: &std::path::Path, flag: &str) -> Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => {
            std::fs::create_dir_all(dir).with_context(|| {
                format!(
                    "cannot create the folder {} for {flag} {}",
                    dir.display(),
                    path.display()
                )
            })
        }
        _ => Ok(()),
    }
}
