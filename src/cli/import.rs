//! `ticktape import`: other formats (Binance raw, Tardis, DBN, LOBSTER) into a dataset.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use ticktape::store::WriterOptions;

use super::progress::live_status;

#[derive(Args)]
pub struct ImportArgs {
    /// Input files, imported in order as one stream.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Dataset directory to write (created, or appended to as a new generation).
    #[arg(long)]
    out: PathBuf,
    /// auto, binance-raw, tardis, lobster or dbn.
    #[arg(long, default_value = "auto")]
    format: String,
    /// Venue name to store under.
    #[arg(long)]
    venue: Option<String>,
    /// Symbol to store under.
    #[arg(long)]
    symbol: Option<String>,
    /// LOBSTER: the matching orderbook file, to seed and check the book.
    #[arg(long)]
    lobster_book: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

pub fn run(a: ImportArgs) -> Result<()> {
    use ticktape::feeds::import::{self, ImportFormat, ImportOptions};
    let format: ImportFormat = a
        .format
        .parse()
        .map_err(|e| anyhow::anyhow!("--format: {e}"))?;
    for f in &a.files {
        if !f.is_file() {
            bail!("cannot import {}: no such file", f.display());
        }
    }
    let total: u64 = a
        .files
        .iter()
        .map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0))
        .sum();
    let bar = if !live_status(a.quiet) {
        ProgressBar::hidden()
    } else {
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template(
                "import {bar:30} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    };
    let options = ImportOptions {
        venue: a.venue,
        symbol: a.symbol,
        lobster_book: a.lobster_book,
    };
    let started = std::time::Instant::now();
    let (stats, written) =
        ticktape::store::write_generation(&a.out, &WriterOptions::default(), |writer| {
            import::import(format, &a.files, &options, writer, &|done| {
                bar.set_position(done)
            })
        })
        .with_context(|| format!("import failed; nothing was added to {}", a.out.display()))?;
    bar.finish_and_clear();
    ticktape::record::log_session(
        &a.out,
        &serde_json::json!({
            "tool": "import",
            "files": a.files,
            "stats": { "rows": written.rows, "gaps": stats.gaps, "duplicates": 0, "malformed": 0 },
        }),
    )?;
    // The summary's Display ends with one `warning:` line per warning.
    eprintln!("{stats}");
    eprintln!(
        "import: {} rows in {} files into {} in {:.2}s",
        written.rows,
        written.files_closed,
        a.out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
