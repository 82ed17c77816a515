//! Paper trading: the simulated exchange on a *live* feed. It subscribes to the live bus,
//! feeds every market event to the exchange, answers strategies on the same gateway
//! protocol as a backtest and publishes order updates and fills on its own publisher, so
//! one strategy binary runs paper-live and in replay with no change (it connects to the
//! live bus and to this publisher).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::bus::{
    Backpressure, HeartbeatTimer, Publisher, PublisherConfig, Subscriber, SubscriberConfig,
};
use crate::event::{Interner, Kind, UnixNanos, now_nanos};
use crate::exchange::host::{ExchangeHost, ExchangeHostConfig};
use crate::exchange::models::ExchangeSettings;
use crate::replay::{Outbox, VenueHost};
use crate::shutdown::Stop;

/// Paper-trading configuration.
#[derive(Clone, Debug)]
pub struct PaperConfig {
    /// Live bus endpoints (simulate, a feed).
    pub connect: Vec<String>,
    /// Where to publish order updates and fills.
    pub bind: Vec<String>,
    /// Gateway endpoint for orders.
    pub gateway: String,
    /// Exchange models.
    pub settings: ExchangeSettings,
    /// Run directory for orders/fills/marks Parquet.
    pub run_dir: Option<PathBuf>,
    /// Interval between marks.
    pub mark_interval: Duration,
    /// Secrets strategies must give in their hello (empty: any name, once per name).
    pub tokens: crate::replay::Tokens,
}

/// What a paper session did.
#[derive(Clone, Debug, Default)]
pub struct PaperStats {
    /// Market events seen.
    pub events: u64,
    /// Gateway requests handled.
    pub requests: u64,
    /// Fills digest at the end.
    pub digest: Option<String>,
}

/// Runs until `stop`; `on_status` is called about five times a second.
pub fn run(
    config: &PaperConfig,
    stop: &Stop,
    mut on_status: impl FnMut(&PaperStats),
) -> Result<PaperStats> {
    let ctx = crate::bus::context();
    let mut host = ExchangeHost::new(&ExchangeHostConfig {
        settings: config.settings.clone(),
        run_dir: config.run_dir.clone(),
    })?;
    let mut subscriber = Subscriber::connect(
        &ctx,
        &SubscriberConfig {
            connect: config.connect.clone(),
            topics: vec!["book.".into(), "trade.".into(), "gap.".into()],
            recv_hwm: 0,
        },
    )?;
    let mut publisher = Publisher::bind(
        &ctx,
        &PublisherConfig {
            bind: config.bind.clone(),
            backpressure: Backpressure::Drop,
            ..PublisherConfig::default()
        },
    )?;
    let mut gateway = crate::replay::Gateway::bind(&ctx, &config.gateway, 0)?;
    gateway.require(config.tokens.clone());
    let mut heartbeat = HeartbeatTimer::new("paper", Duration::from_secs(1), false);
    let mut names = Interner::default();
    let mut out: Outbox = Vec::new();
    let mut stats = PaperStats::default();
    let mut now: UnixNanos = now_nanos();
    let mark_every = config.mark_interval.as_nanos().max(1) as i64;
    let mut next_mark = now + mark_every;
    let mut last_status = Instant::now();
    while !stop.is_set() {
        heartbeat.tick(&mut publisher)?;
        if let Some(msg) = subscriber.recv_timeout(Duration::from_millis(5))?
            && let Ok(event) = crate::wire::decode_message(msg.frames, &mut names)
            && matches!(event.kind(), Kind::Book | Kind::Trade | Kind::Gap)
        {
            now = now.max(event.ts_recv);
            host.advance_before(event.ts_recv, &mut out)?;
            host.on_market(&event, &mut out)?;
            stats.events += 1;
        }
        if now >= next_mark {
            host.on_mark(next_mark)?;
            next_mark += mark_every;
        }
        let mut host_ref: Option<&mut dyn VenueHost> = Some(&mut host);
        gateway.pump(&mut host_ref, now, &mut out, Duration::ZERO)?;
        crate::replay::publish_outbox(&mut publisher, &mut out)?;
        stats.requests = gateway.stats().requests;
        if last_status.elapsed() >= Duration::from_millis(200) {
            last_status = Instant::now();
            on_status(&stats);
        }
    }
    stats.digest = host.finish(now, &mut out)?;
    crate::replay::publish_outbox(&mut publisher, &mut out)?;
    Ok(stats)
}
