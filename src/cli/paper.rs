//! `ticktape paper`: the simulated exchange answering orders against a live feed.

use std::time::Duration;

use anyhow::Result;
use clap::Args;

use super::args::ExchangeArgs;
use super::progress::spinner;

#[derive(Args)]
pub struct PaperArgs {
    /// Live bus endpoint(s) to trade against.
    #[arg(long = "connect", default_value = "tcp://127.0.0.1:5555")]
    connect: Vec<String>,
    /// Where to publish order updates and fills.
    #[arg(long, default_value = "tcp://127.0.0.1:5558")]
    bind: Vec<String>,
    /// Order gateway endpoint.
    #[arg(long, default_value = "tcp://127.0.0.1:5557")]
    gateway: String,
    #[command(flatten)]
    models: ExchangeArgs,
    /// A strategy's gateway secret, NAME=SECRET (repeatable): the strategy's hello must
    /// carry it (`TICKTAPE_TOKEN` in the strategy's environment). Without any, every
    /// local process may claim a name not yet connected.
    #[arg(long = "token", value_name = "NAME=SECRET")]
    tokens: Vec<String>,
    /// No status line.
    #[arg(long)]
    quiet: bool,
}

pub fn run(a: PaperArgs) -> Result<()> {
    let config = ticktape::paper::PaperConfig {
        connect: a.connect,
        bind: a.bind,
        gateway: a.gateway,
        settings: a.models.settings()?,
        run_dir: a.models.run_dir.clone(),
        mark_interval: Duration::from_secs(1),
        tokens: ticktape::replay::Tokens::parse(a.tokens.iter().map(String::as_str))?,
    };
    if config.tokens.is_empty() {
        eprintln!(
            "paper: no --token NAME=SECRET given: any local process may trade under a strategy name that is not connected yet"
        );
    }
    let bar = spinner(a.quiet);
    let stop = ticktape::shutdown::on_signal();
    let stats = ticktape::paper::run(&config, &stop, |s| {
        bar.set_message(format!(
            "paper: {} market events, {} gateway requests",
            s.events, s.requests
        ));
    })?;
    bar.finish_and_clear();
    eprintln!(
        "paper: {} market events, {} requests, fills digest {}",
        stats.events,
        stats.requests,
        stats.digest.unwrap_or_default()
    );
    Ok(())
}
