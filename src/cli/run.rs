//! `ticktape run`: a whole backtest from a scenario file, then its report.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;

use super::progress::{ReplayProgress, group_thousands, print_replay_summary};

#[derive(Args)]
pub struct RunArgs {
    /// Scenario file (see docs/SCENARIOS.md).
    scenario: PathBuf,
    /// Run directory (default: the scenario's output.dir, or runs/<name>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Override the scenario's replay speed (max, 1, 10, ...).
    #[arg(long)]
    speed: Option<String>,
    /// Override the scenario's transport between replay and strategies: zmq, or shm
    /// (shared memory, docs/SHM.md).
    #[arg(long, value_enum)]
    transport: Option<ticktape::shm::Transport>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

pub fn run(a: RunArgs) -> Result<()> {
    let stop = ticktape::shutdown::on_signal();
    let mut progress = ReplayProgress::new(a.quiet);
    let options = ticktape::scenario::run::RunOptions {
        out: a.out,
        speed: a.speed,
        transport: a.transport,
    };
    use ticktape::scenario::run::{RunOutcome, RunProgress};
    let outcome = ticktape::scenario::run::run(&a.scenario, &options, &stop, |p| match p {
        RunProgress::Replay(p) => progress.show(&p),
        RunProgress::Inproc(p) => {
            progress.bar.set_length(p.estimate);
            progress.bar.set_position(p.events);
        }
    });
    progress.bar.finish_and_clear();
    let outcome = outcome?;
    match &outcome {
        RunOutcome::Bus(summary) => print_replay_summary(&summary.replay, false)?,
        RunOutcome::Inproc(s) => {
            let rate = s.replay.events as f64 / s.elapsed_secs.max(1e-9);
            eprintln!(
                "in-process backtest: {} events in {:.3} s ({}/s), {} requests, {} fills",
                s.replay.events,
                s.elapsed_secs,
                group_thousands(rate as u64),
                s.replay.requests,
                s.fills
            );
            eprintln!("  fills digest {}", s.digest);
        }
    }
    eprintln!("run directory: {}", outcome.run_dir().display());
    if outcome.interrupted() {
        // Partial results get a report when there is enough to report on.
        if let Err(e) = report_after_run(outcome.run_dir()) {
            eprintln!("no report of the partial run: {e:#}");
        }
    } else {
        report_after_run(outcome.run_dir())?;
    }
    if outcome.interrupted() {
        bail!(
            "interrupted: partial results are in {}",
            outcome.run_dir().display()
        );
    }
    Ok(())
}

/// Writes report.json, report.csv and report.svg into the run directory and prints the table.
fn report_after_run(run_dir: &std::path::Path) -> Result<()> {
    use ticktape::report::{self, ReportOptions};
    let r = report::compute(run_dir, &ReportOptions::default())
        .with_context(|| format!("cannot build the report of {}", run_dir.display()))?;
    std::fs::write(run_dir.join("report.json"), report::render_json(&r))?;
    std::fs::write(run_dir.join("report.csv"), report::render_csv(&r))?;
    report::write_chart(&r, &run_dir.join("report.svg"))?;
    println!("{}", report::render_table(&r));
    eprintln!(
        "report: {} (chart report.svg, report.json, report.csv in that directory)",
        run_dir.display()
    );
    Ok(())
}
