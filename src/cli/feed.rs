//! `ticktape feed`: a live venue's feed on the bus and/or JetStream.

use std::time::Duration;

use anyhow::Result;
use clap::Args;
use indicatif::ProgressBar;

use ticktape::bus::PublisherConfig;

use super::args::{NatsOptions, bind_or_default};
use super::progress::spinner;

#[derive(Args)]
pub struct FeedArgs {
    /// kraken, coinbase, binance, binance-usdm or binance-coinm.
    venue: String,
    /// Comma-separated venue symbols (XBT/USD, BTC-USD).
    #[arg(long, value_delimiter = ',', required = true)]
    symbols: Vec<String>,
    /// Endpoint(s) to bind the bus on (default tcp://127.0.0.1:5555, none when only
    /// --nats is given).
    #[arg(long)]
    bind: Vec<String>,
    /// Also publish into NATS JetStream: server URL(s), comma-separated.
    #[arg(long = "nats", value_delimiter = ',')]
    nats: Vec<String>,
    #[command(flatten)]
    nats_options: NatsOptions,
    /// Payload encoding: json (any language) or binary (fast; `docs/PROTOCOL.md`).
    #[arg(long, value_enum, default_value = "json")]
    encoding: ticktape::wire::Encoding,
    /// Book depth to subscribe.
    #[arg(long, default_value_t = 100)]
    depth: usize,
    /// Websocket URL instead of the venue's public one.
    #[arg(long)]
    url: Option<String>,
    /// Binance: REST base URL for depth snapshots instead of the public one.
    #[arg(long)]
    rest_url: Option<String>,
    /// Publisher id in heartbeats.
    #[arg(long)]
    id: Option<String>,
    /// No status line.
    #[arg(long)]
    quiet: bool,
}

/// Publishes a live feed's events on the bus and/or JetStream, beats, and draws the
/// status line.
struct BusFeedSink {
    publisher: ticktape::bus::Outlets,
    heartbeat: ticktape::bus::HeartbeatTimer,
    bar: ProgressBar,
}

impl ticktape::event::EventSink for BusFeedSink {
    fn accept(&mut self, event: ticktape::event::Event) -> Result<()> {
        self.publisher.send(&event)
    }
}

impl ticktape::feeds::live::FeedSink for BusFeedSink {
    fn tick(&mut self, stats: &ticktape::feeds::live::FeedStats) -> Result<()> {
        self.heartbeat.tick_outlets(&mut self.publisher)?;
        self.bar.set_message(stats.to_string());
        Ok(())
    }
}

pub fn run(a: FeedArgs) -> Result<()> {
    use ticktape::feeds::live::{self, FeedOptions, Venue};
    let venue: Venue = a.venue.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
    let symbols: Vec<&str> = a.symbols.iter().map(String::as_str).collect();
    let mut options = FeedOptions::new(&symbols);
    options.depth = a.depth;
    options.url = a.url;
    options.rest_url = a.rest_url;
    let ctx = ticktape::bus::context();
    let id = a.id.unwrap_or_else(|| venue.name().to_string());
    let mut publisher = ticktape::bus::Outlets::default();
    let bind = bind_or_default(a.bind, &a.nats, "tcp://127.0.0.1:5555");
    if !bind.is_empty() {
        publisher.zmq = Some(ticktape::bus::Publisher::bind(
            &ctx,
            &PublisherConfig {
                bind,
                encoding: a.encoding,
                ..PublisherConfig::default()
            },
        )?);
    }
    if let Some((nats, options)) = a.nats_options.publishing(&a.nats, &id, a.encoding) {
        publisher.nats = Some(ticktape::nats::NatsPublisher::connect(&nats, &options)?);
    }
    let mut sink = BusFeedSink {
        publisher,
        heartbeat: ticktape::bus::HeartbeatTimer::new(&id, Duration::from_secs(1), false),
        bar: spinner(a.quiet),
    };
    let stop = ticktape::shutdown::on_signal();
    let stats = live::run_feed_ticking(venue, &options, &mut sink, stop.flag())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    sink.bar.finish_and_clear();
    eprintln!("feed {}: {stats}", venue.name());
    if let Some(n) = sink.publisher.close()? {
        eprintln!(
            "feed {}: JetStream acknowledged {} of {} messages ({} duplicates), {} retries",
            venue.name(),
            n.acked,
            n.sent,
            n.duplicates,
            n.retries
        );
    }
    Ok(())
}
