//! Flag groups shared by several commands: the simulated exchange's models, the dataset
//! selection, the JetStream link, and the duration parser they use.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;

use ticktape::store::layout;

/// The simulated exchange's models from the command line (a scenario's `[exchange]`).
#[derive(Args)]
pub struct ExchangeArgs {
    /// Order latency of the simulated exchange.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    order_latency: Duration,
    /// Queue model: risk_averse or proportional.
    #[arg(long, default_value = "risk_averse")]
    queue: String,
    /// Maker fee in basis points (negative = rebate).
    #[arg(long, default_value_t = 0.0, allow_hyphen_values = true)]
    maker_bps: f64,
    /// Taker fee in basis points.
    #[arg(long, default_value_t = 0.0, allow_hyphen_values = true)]
    taker_bps: f64,
    /// Write orders/fills/marks Parquet here.
    #[arg(long)]
    pub run_dir: Option<PathBuf>,
}

impl ExchangeArgs {
    pub fn settings(&self) -> Result<ticktape::exchange::models::ExchangeSettings> {
        use ticktape::exchange::models::{ExchangeSettings, FeeSchedule, LatencySpec, QueueSpec};
        let queue = match self.queue.as_str() {
            "risk_averse" => QueueSpec::RiskAverse,
            "proportional" => QueueSpec::Proportional,
            other => bail!("unknown --queue {other:?}: use risk_averse or proportional"),
        };
        Ok(ExchangeSettings {
            order_latency: LatencySpec::Constant {
                // parse_duration bounds it to 365 days, far inside i64 nanoseconds.
                ns: i64::try_from(self.order_latency.as_nanos())
                    .context("--order-latency is too long")?,
            },
            queue,
            fees: FeeSchedule {
                maker_bps: self.maker_bps,
                taker_bps: self.taker_bps,
                ..FeeSchedule::default()
            },
            ..ExchangeSettings::default()
        })
    }
}

#[derive(Args)]
pub struct SelectionArgs {
    /// Venues to keep (default all).
    #[arg(long = "venue", value_delimiter = ',')]
    venues: Vec<String>,
    /// Symbols to keep (default all).
    #[arg(long = "symbol", value_delimiter = ',')]
    symbols: Vec<String>,
    /// Kinds to keep: book, trade, gap (default all).
    #[arg(long = "kind", value_delimiter = ',')]
    kinds: Vec<String>,
    /// Start of the window: RFC 3339 (2024-08-08T23:58:00Z; without offset: UTC), a date, or integer ns.
    #[arg(long)]
    start: Option<String>,
    /// End of the window, exclusive.
    #[arg(long)]
    end: Option<String>,
}

impl SelectionArgs {
    pub fn build(&self) -> Result<ticktape::store::Selection> {
        let kinds = self
            .kinds
            .iter()
            .map(|k| match ticktape::event::Kind::from_name(k) {
                Some(kind) if kind.is_stored() => Ok(kind),
                _ => bail!("unknown kind {k:?}: use book, trade or gap"),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(ticktape::store::Selection {
            venues: self.venues.clone(),
            symbols: self.symbols.clone(),
            kinds,
            start: self.start.as_deref().map(layout::parse_ts).transpose()?,
            end: self.end.as_deref().map(layout::parse_ts).transpose()?,
        })
    }
}

/// Parses durations like `500us`, `2s`, `15m` (shared with scenario files).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    ticktape::scenario::parse_duration(s)
}

/// The JetStream side of any NATS link (`docs/SCALE-OUT.md`).
#[derive(Args, Clone)]
pub struct NatsOptions {
    /// JetStream stream (created when missing, with subjects PREFIX.>).
    #[arg(long, default_value = "TICKTAPE")]
    stream: String,
    /// First token of every subject (ticktape.book.sim.BTC-USD).
    #[arg(long, default_value = "ticktape")]
    subject_prefix: String,
    /// Replicas when this process creates the stream (3 on a 3-node cluster).
    #[arg(long, default_value_t = 1)]
    replicas: usize,
    /// How long the broker remembers message ids to drop duplicates.
    #[arg(long, default_value = "2m", value_parser = parse_duration)]
    dupe_window: Duration,
    /// User for user/password authentication; the password comes from the environment
    /// variable TICKTAPE_NATS_PASSWORD (never the command line).
    #[arg(long)]
    nats_user: Option<String>,
    /// PEM file of the CA that signed the servers' certificates: every link is TLS.
    #[arg(long)]
    nats_ca: Option<PathBuf>,
    /// Allow plain-text NATS to a host that is not loopback (refused otherwise).
    #[arg(long)]
    insecure: bool,
}

impl NatsOptions {
    pub fn config(&self, servers: Vec<String>, name: &str) -> ticktape::nats::NatsConfig {
        ticktape::nats::NatsConfig {
            servers,
            stream: self.stream.clone(),
            subject_prefix: self.subject_prefix.clone(),
            replicas: self.replicas,
            duplicate_window: self.dupe_window,
            user: self.nats_user.clone(),
            password: std::env::var(ticktape::nats::PASSWORD_ENV).ok(),
            ca: self.nats_ca.clone(),
            insecure: self.insecure,
            name: name.to_string(),
        }
    }

    /// The NATS side of a publisher, or None without `--nats`.
    pub fn publishing(
        &self,
        servers: &[String],
        id: &str,
        encoding: ticktape::wire::Encoding,
    ) -> Option<(
        ticktape::nats::NatsConfig,
        ticktape::nats::publish::PublishOptions,
    )> {
        (!servers.is_empty()).then(|| {
            (
                self.config(servers.to_vec(), id),
                ticktape::nats::publish::PublishOptions {
                    publisher_id: id.to_string(),
                    encoding,
                    ..Default::default()
                },
            )
        })
    }
}

/// ZeroMQ endpoints to bind: those given, else `default` unless NATS is the only outlet.
pub fn bind_or_default(bind: Vec<String>, nats: &[String], default: &str) -> Vec<String> {
    if bind.is_empty() && nats.is_empty() {
        vec![default.to_string()]
    } else {
        bind
    }
}
