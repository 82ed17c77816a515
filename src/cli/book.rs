//! `ticktape book`: the order book reconstructed from a dataset at a moment.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;

use ticktape::store::layout;

#[derive(Args)]
pub struct BookArgs {
    /// Dataset directory.
    dataset: PathBuf,
    /// Venue.
    #[arg(long)]
    venue: String,
    /// Symbol.
    #[arg(long)]
    symbol: String,
    /// Time: RFC 3339 (2024-08-08T23:58:00.5Z; without offset: UTC), a date, or integer ns.
    #[arg(long)]
    at: String,
    /// Levels per side.
    #[arg(long, default_value_t = 10)]
    depth: usize,
}

pub fn run(a: BookArgs) -> Result<()> {
    let at = layout::parse_ts(&a.at)?;
    let selection = ticktape::store::Selection {
        venues: vec![a.venue.clone()],
        symbols: vec![a.symbol.clone()],
        kinds: vec![ticktape::event::Kind::Book, ticktape::event::Kind::Gap],
        start: None,
        end: Some(at.saturating_add(1)),
    };
    let reader = ticktape::store::EventReader::open(&a.dataset, selection)?;
    if reader.files().is_empty() {
        let known = ticktape::store::reader::partitions(&a.dataset)?;
        ticktape::feeds::import::check_instrument(&known, &a.venue, &a.symbol)
            .map_err(|e| anyhow::anyhow!("{e} (in {})", a.dataset.display()))?;
        bail!(
            "no data for {}/{} before {} in {} (`ticktape inspect {}` lists what is there)",
            a.venue,
            a.symbol,
            a.at,
            a.dataset.display(),
            a.dataset.display()
        );
    }
    let mut error = None;
    let events = reader.map_while(|e| match e {
        Ok(e) => Some(e),
        Err(err) => {
            error = Some(err);
            None
        }
    });
    let book = ticktape::feeds::import::book_at(events, &a.venue, &a.symbol, at);
    if let Some(e) = error {
        return Err(e);
    }
    println!("{} {} at {}", a.venue, a.symbol, layout::format_ts(at));
    print!("{}", ticktape::feeds::import::render_book(&book, a.depth));
    Ok(())
}
