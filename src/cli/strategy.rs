//! `ticktape strategy`: run a built-in example strategy against a bus and gateway.

use anyhow::{Context, Result};
use clap::Args;

#[derive(Args)]
pub struct StrategyArgs {
    /// Which example: mm (market maker) or taker (trade-flow taker).
    name: String,
    /// Bus endpoint(s).
    #[arg(long, default_value = "tcp://127.0.0.1:5556")]
    bus: Vec<String>,
    /// Order gateway endpoint.
    #[arg(long)]
    gateway: String,
    /// Venue to trade.
    #[arg(long)]
    venue: String,
    /// Symbol to trade.
    #[arg(long)]
    symbol: String,
    /// Order size (decimal).
    #[arg(long, default_value = "1")]
    size: String,
    /// Ack lockstep step markers.
    #[arg(long)]
    lockstep: bool,
    /// Strategy id (prefix of client order ids).
    #[arg(long)]
    id: Option<String>,
}

pub fn run(a: StrategyArgs) -> Result<()> {
    use ticktape::strategy::{self, RunnerConfig};
    let size: ticktape::event::Fixed = a
        .size
        .parse()
        .with_context(|| format!("bad --size {:?}", a.size))?;
    let params =
        strategy::Params::from_env().with_context(|| format!("bad ${}", strategy::PARAMS_ENV))?;
    let mut boxed = strategy::builtin(&a.name, &a.venue, &a.symbol, size, &params)?;
    let config = RunnerConfig {
        lockstep: a.lockstep,
        ..RunnerConfig::new(a.id.as_deref().unwrap_or(&a.name), a.bus, a.gateway)
    };
    let stop = ticktape::shutdown::on_signal();
    let stats = strategy::run(&config, boxed.as_mut(), &stop)?;
    eprintln!(
        "strategy {}: {} events, {} orders, {} fills, {} lockstep acks",
        config.name, stats.events, stats.orders, stats.fills, stats.acks
    );
    let bad = stats.bad_events + stats.bad_exchange_messages + stats.bad_replies;
    if bad > 0 {
        eprintln!(
            "strategy {}: skipped unreadable messages: {} market events, {} fills/order updates, {} gateway replies",
            config.name, stats.bad_events, stats.bad_exchange_messages, stats.bad_replies
        );
    }
    Ok(())
}
