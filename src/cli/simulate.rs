//! `ticktape simulate`: the synthetic venue on the bus.

use std::time::Duration;

use anyhow::{Result, bail};
use clap::Args;

use ticktape::bus::{Backpressure, PublisherConfig};
use ticktape::feeds::simulate::{self, Clock, Faults, SimulateConfig};
use ticktape::store::layout;

use super::args::{NatsOptions, bind_or_default, parse_duration};
use super::progress::spinner;

/// Parses an events-per-second rate: finite and positive, or 0.
fn parse_rate(s: &str) -> Result<f64, String> {
    let rate: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number (e.g. 10000, or 0 for as fast as possible)"))?;
    simulate::check_rate(rate)
}

#[derive(Args)]
pub struct SimulateArgs {
    /// Endpoint(s) to bind (default tcp://127.0.0.1:5555, none when only --nats is given).
    #[arg(long)]
    bind: Vec<String>,
    /// Also publish into NATS JetStream: server URL(s), comma-separated
    /// (nats://127.0.0.1:4222, tls://host:4222).
    #[arg(long = "nats", value_delimiter = ',')]
    nats: Vec<String>,
    #[command(flatten)]
    nats_options: NatsOptions,
    /// Venue name in events.
    #[arg(long, default_value = "sim")]
    venue: String,
    /// Comma-separated symbols.
    #[arg(long, default_value = "BTC-USD,ETH-USD,SOL-USD", value_delimiter = ',')]
    symbols: Vec<String>,
    /// Mean events per second; 0 = as fast as possible.
    #[arg(long, default_value_t = 10_000.0, value_parser = parse_rate)]
    rate: f64,
    /// Stop after this many data events.
    #[arg(long)]
    events: Option<u64>,
    /// Stop after this long (e.g. 30s).
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// RNG seed; equal seeds give equal streams (redundant publishers).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Levels per side.
    #[arg(long, default_value_t = 10)]
    depth: usize,
    /// Publisher id in heartbeats.
    #[arg(long, default_value = "sim")]
    id: String,
    /// Heartbeat interval.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    heartbeat: Duration,
    /// Re-send full snapshots this often.
    #[arg(long, value_parser = parse_duration)]
    snapshot_every: Option<Duration>,
    /// REP endpoint where any request triggers fresh snapshots of every book.
    #[arg(long)]
    snapshot_endpoint: Option<String>,
    /// Wait for this many subscribers before publishing (avoids the slow-joiner loss).
    #[arg(long, default_value_t = 0)]
    wait_for: usize,
    /// Do not publish the first N events (still generated): a partly overlapping redundant publisher.
    #[arg(long, default_value_t = 0)]
    skip: u64,
    /// Deterministic timestamps starting at this time (UTC, e.g. 2024-01-01T00:00:00Z).
    #[arg(long)]
    synthetic_clock: Option<String>,
    /// Events per second of synthetic time (default --rate), to generate a deterministic
    /// stream faster than its timestamps.
    #[arg(long, value_parser = parse_rate)]
    synthetic_rate: Option<f64>,
    /// Payload encoding: json (any language) or binary (fast; `docs/PROTOCOL.md`).
    #[arg(long, value_enum, default_value = "json")]
    encoding: ticktape::wire::Encoding,
    /// Fault: after N events, drop --drop-count events.
    #[arg(long)]
    drop_after: Option<u64>,
    /// Fault: how many events to drop.
    #[arg(long, default_value_t = 0)]
    drop_count: u64,
    /// Fault: send every k-th event twice.
    #[arg(long)]
    duplicate_every: Option<u64>,
    /// Fault: send a malformed message after every k-th event.
    #[arg(long)]
    malformed_every: Option<u64>,
    /// Fault: after N events, go silent (no heartbeats either) for --stall.
    #[arg(long)]
    stall_after: Option<u64>,
    /// Fault: stall length.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    stall: Duration,
    /// No progress line.
    #[arg(long)]
    quiet: bool,
}

pub fn run(a: SimulateArgs) -> Result<()> {
    let clock = match &a.synthetic_clock {
        Some(t) => Clock::Synthetic(layout::parse_ts(t)?),
        None => Clock::Wall,
    };
    if a.symbols.is_empty() {
        bail!("--symbols needs at least one symbol");
    }
    let nats = a.nats_options.publishing(&a.nats, &a.id, a.encoding);
    let config = SimulateConfig {
        publisher: PublisherConfig {
            bind: bind_or_default(a.bind, &a.nats, "tcp://127.0.0.1:5555"),
            backpressure: Backpressure::Drop,
            encoding: a.encoding,
            ..PublisherConfig::default()
        },
        nats,
        publisher_id: a.id,
        venue: a.venue,
        symbols: a.symbols,
        rate: a.rate,
        events: a.events,
        duration: a.duration,
        seed: a.seed,
        depth: a.depth,
        heartbeat: a.heartbeat,
        snapshot_every: a.snapshot_every,
        snapshot_endpoint: a.snapshot_endpoint,
        skip: a.skip,
        wait_for: a.wait_for,
        clock,
        synthetic_rate: a.synthetic_rate,
        faults: Faults {
            drop_after: a.drop_after,
            drop_count: a.drop_count,
            duplicate_every: a.duplicate_every,
            malformed_every: a.malformed_every,
            stall_after: a.stall_after,
            stall: a.stall,
        },
    };
    let bar = spinner(a.quiet);
    let stop = ticktape::shutdown::on_signal();
    let stats = simulate::run(&config, &stop, |s, p| {
        let rate = s.published as f64 / s.elapsed.as_secs_f64().max(1e-9);
        bar.set_message(format!(
            "simulate on {}: {} events ({:.0}/s), {:.1} MB",
            p.describe(),
            s.published,
            rate,
            p.bytes() as f64 / 1e6
        ));
    })?;
    bar.finish_and_clear();
    if let Some(n) = &stats.nats {
        eprintln!(
            "simulate: JetStream stored {} of {} messages ({} were already there: another publisher's or a retry's), {} retries",
            n.acked - n.duplicates,
            n.sent,
            n.duplicates,
            n.retries
        );
    }
    eprintln!(
        "simulate: published {} events in {:.2}s ({:.0}/s); injected: dropped {}, duplicated {}, malformed {}",
        stats.published,
        stats.elapsed.as_secs_f64(),
        stats.published as f64 / stats.elapsed.as_secs_f64().max(1e-9),
        stats.dropped,
        stats.duplicated,
        stats.malformed
    );
    Ok(())
}
