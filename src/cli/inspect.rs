//! `ticktape inspect`: summarize a dataset, or verify its files' checksums.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use super::progress::live_status;

#[derive(Args)]
pub struct InspectArgs {
    /// Dataset directory.
    dataset: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Instead of summarizing, re-hash every data file and compare it with the hash
    /// recorded when it was written (`_ticktape/checksums.jsonl`): prints OK, MISMATCH,
    /// NOT RECORDED or MISSING per file and fails on a mismatch or a missing file.
    #[arg(long)]
    verify: bool,
    /// No progress bar (with --verify).
    #[arg(long)]
    quiet: bool,
}

pub fn run(a: InspectArgs) -> Result<()> {
    if a.verify {
        return verify_cmd(&a);
    }
    let summary = ticktape::inspect::inspect(&a.dataset)
        .with_context(|| format!("cannot inspect {}", a.dataset.display()))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print!("{}", ticktape::inspect::render(&a.dataset, &summary));
    }
    Ok(())
}

fn verify_cmd(a: &InspectArgs) -> Result<()> {
    let bar = if live_status(a.quiet) {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(
                "verify {bar:30} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let v = ticktape::inspect::verify(&a.dataset, |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    })
    .with_context(|| format!("cannot verify {}", a.dataset.display()))?;
    bar.finish_and_clear();
    if a.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{}", ticktape::inspect::render_verification(&a.dataset, &v));
    }
    if v.failures() > 0 {
        bail!(
            "{} of {} file(s) in {} failed verification: restore them from a copy, or move them out of the dataset",
            v.failures(),
            v.files.len(),
            a.dataset.display()
        );
    }
    Ok(())
}
