//! `ticktape sweep`: a scenario over a parameter grid, in parallel, tabulated.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use indicatif::ProgressBar;

#[derive(Args)]
pub struct SweepArgs {
    /// The base scenario file.
    scenario: PathBuf,
    /// A parameter and its values, PATH=V1,V2,… (repeatable; the grid is every
    /// combination): strategy.mm.params.skew_ticks=0,1,2 or exchange.order_latency.ns=1e6,5e6.
    #[arg(long = "set", value_name = "PATH=V1,V2", required = true)]
    sets: Vec<String>,
    /// Runs at once (default: the number of cores).
    #[arg(long)]
    jobs: Option<usize>,
    /// Sweep directory (default runs/<scenario name>-sweep); replaced if it holds a sweep.
    #[arg(long)]
    out: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

pub fn run(a: SweepArgs) -> Result<()> {
    use ticktape::sweep::{self, Axis, SweepConfig};
    let axes = a
        .sets
        .iter()
        .map(|s| Axis::parse(s))
        .collect::<Result<Vec<_>>>()?;
    let scenario = ticktape::scenario::Scenario::load(&a.scenario)?;
    let out = a
        .out
        .unwrap_or_else(|| PathBuf::from("runs").join(format!("{}-sweep", scenario.name)));
    if out.exists() {
        if !out.join("sweep.json").exists() && !out.join("scenarios").exists() {
            bail!(
                "{} exists and is not a sweep directory; choose another --out",
                out.display()
            );
        }
        std::fs::remove_dir_all(&out)
            .with_context(|| format!("cannot clear the previous sweep in {}", out.display()))?;
    }
    let jobs = a
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let config = SweepConfig {
        scenario: a.scenario.clone(),
        axes,
        jobs,
        out,
        exe: std::env::current_exe().context("cannot find the ticktape executable")?,
    };
    let points: usize = config.axes.iter().map(|x| x.values.len()).product();
    let bar = if a.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(points as u64)
    };
    let stop = ticktape::shutdown::on_signal();
    let summary = sweep::run(&config, &stop, |p, done, _| {
        bar.set_position(done as u64);
        if let Some(e) = &p.error {
            bar.suspend(|| eprintln!("run {} failed: {e}", p.run));
        }
    });
    bar.finish_and_clear();
    let summary = summary?;
    let width = summary
        .axes
        .iter()
        .map(|a| a.len())
        .max()
        .unwrap_or(0)
        .max(8);
    let mut header = format!("{:>5}", "run");
    for axis in &summary.axes {
        header.push_str(&format!("  {axis:>width$}"));
    }
    println!(
        "{header}  {:>12}  {:>10}  {:>8}  {:>12}",
        "net PnL", "fees", "fills", "max DD"
    );
    for p in &summary.points {
        let mut line = format!("{:>5}", p.run);
        for (_, v) in &p.params {
            line.push_str(&format!("  {v:>width$}"));
        }
        let num = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{x:.2}"));
        line.push_str(&format!(
            "  {:>12}  {:>10}  {:>8}  {:>12}",
            num(p.net_pnl),
            num(p.fees),
            p.fills.map_or("-".into(), |f| f.to_string()),
            num(p.max_drawdown)
        ));
        if let Some(e) = &p.error {
            line.push_str(&format!("  failed: {e}"));
        }
        println!("{line}");
    }
    eprintln!(
        "sweep: {} runs in {} (sweep.parquet, sweep.csv, sweep.json{})",
        summary.points.len(),
        summary.out.display(),
        if summary.axes.len() == 2 {
            ", heatmap.svg"
        } else {
            ""
        }
    );
    let failed = summary.points.iter().filter(|p| p.error.is_some()).count();
    if failed > 0 {
        bail!(
            "{failed} of {} runs failed (logs in {}/logs)",
            summary.points.len(),
            summary.out.display()
        );
    }
    Ok(())
}
