//! `ticktape recover`: turn a crashed recorder's journals into Parquet.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;

use ticktape::store::WriterOptions;

#[derive(Args)]
pub struct RecoverArgs {
    /// Dataset directory.
    dataset: PathBuf,
}

pub fn run(a: RecoverArgs) -> Result<()> {
    if !a.dataset.is_dir() {
        bail!(
            "cannot recover {}: no such dataset directory (give the directory a recorder wrote to; `ticktape inspect DIR` shows what a directory holds)",
            a.dataset.display()
        );
    }
    let r = ticktape::store::recover(&a.dataset, &WriterOptions::default())
        .with_context(|| format!("cannot recover {}", a.dataset.display()))?;
    eprintln!(
        "recover: {} journal(s) replayed, {} events rebuilt, {} torn bytes discarded, {} stale files removed",
        r.journals, r.events, r.torn_bytes, r.removed_files
    );
    for warning in r.warnings() {
        eprintln!("warning: {warning}");
    }
    Ok(())
}
