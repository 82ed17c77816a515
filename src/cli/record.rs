//! `ticktape record`: subscribe to publishers (or a JetStream consumer) and write a dataset.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;

use ticktape::record::{self, RecordConfig};
use ticktape::store::WriterOptions;

use super::args::{NatsOptions, parse_duration};
use super::progress::spinner;

#[derive(Args)]
pub struct RecordArgs {
    /// Dataset directory (created, or appended to).
    dataset: PathBuf,
    /// Publisher endpoint(s); repeat for redundant publishers (default
    /// tcp://127.0.0.1:5555 unless --from is given).
    #[arg(long = "connect")]
    connect: Vec<String>,
    /// Record from NATS JetStream instead: server URL(s) of the cluster, comma-separated
    /// (nats://127.0.0.1:4222, tls://host:4222), with --stream.
    #[arg(long = "from", value_delimiter = ',', conflicts_with = "connect")]
    from: Vec<String>,
    #[command(flatten)]
    nats_options: NatsOptions,
    /// JetStream durable consumer: a restart with the same name resumes after the last
    /// acknowledged message (recorders sharing one name split every instrument between
    /// their datasets: see docs/SCALE-OUT.md).
    #[arg(long, default_value = "ticktape-record")]
    consumer: String,
    /// How long the broker waits for an ack before delivering again (and how long a
    /// restart after kill -9 waits for what was not acked).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    ack_wait: Duration,
    /// Unacknowledged messages at most (the recorder flushes and acks at half).
    #[arg(long, default_value_t = 20_000)]
    max_ack_pending: usize,
    /// Topic prefixes to record (default: everything); heartbeats and end-of-stream always.
    #[arg(long = "topic")]
    topics: Vec<String>,
    /// Durability bound: events older than this survive kill -9.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    flush_interval: Duration,
    /// Skip fdatasync of the journal (still survives kill -9, not power loss).
    #[arg(long)]
    no_fsync: bool,
    /// Start new files this often.
    #[arg(long, default_value = "15m", value_parser = parse_duration)]
    rotate_every: Duration,
    /// ... or when a generation's journal reaches this many MiB.
    #[arg(long, default_value_t = 256)]
    rotate_mib: u64,
    /// Recent events remembered for deduplication.
    #[arg(long, default_value_t = 1 << 20)]
    dedup_window: usize,
    /// How long a sequence hole waits for a redundant publisher's late copy (default 2s;
    /// 10s with --from, where a publisher's retry after a broker failover arrives late).
    #[arg(long, value_parser = parse_duration)]
    gap_grace: Option<Duration>,
    /// Rows per Parquet row group.
    #[arg(long, default_value_t = 65_536)]
    row_group_rows: usize,
    /// Exit once every publisher has sent end-of-stream.
    #[arg(long)]
    until_eos: bool,
    /// No status line.
    #[arg(long)]
    quiet: bool,
}

pub fn run(a: RecordArgs) -> Result<()> {
    ticktape::record::return_freed_buffers_to_the_system();
    let connect = if a.connect.is_empty() && a.from.is_empty() {
        vec!["tcp://127.0.0.1:5555".to_string()]
    } else {
        a.connect.clone()
    };
    let config = RecordConfig {
        dataset: a.dataset,
        connect,
        topics: a.topics,
        flush_interval: a.flush_interval,
        fsync: !a.no_fsync,
        rotate_interval: a.rotate_every,
        rotate_bytes: a
            .rotate_mib
            .checked_mul(1 << 20)
            .context("--rotate-mib is too large: give MiB, e.g. 256")?,
        dedup_window: a.dedup_window,
        gap_grace: a.gap_grace.unwrap_or(if a.from.is_empty() {
            Duration::from_secs(2)
        } else {
            ticktape::nats::record::GAP_GRACE
        }),
        until_eos: a.until_eos,
        writer: WriterOptions {
            row_group_rows: a.row_group_rows.max(1),
            ..WriterOptions::default()
        },
        ..RecordConfig::default()
    };
    if !a.from.is_empty() {
        let nats = a.nats_options.config(a.from.clone(), "ticktape-record");
        let consumer = ticktape::nats::record::ConsumerConfig {
            durable: a.consumer.clone(),
            ack_wait: a.ack_wait,
            max_ack_pending: a.max_ack_pending.max(1),
        };
        return record_nats_cmd(&config, &nats, &consumer, a.quiet);
    }
    let bar = spinner(a.quiet);
    let stop = ticktape::shutdown::on_signal();
    let mut last = (0u64, 0.0f64);
    let stats = record::run(&config, &stop, |s| {
        let rate = rate_since(&mut last, s.received, s.elapsed_secs);
        bar.set_message(format!(
            "record {}: {} ev ({:.0}/s) {:.1} MB | rows {} files {} | gaps {} dup {} bad {} | publishers: {}",
            config.dataset.display(),
            s.accepted,
            rate,
            s.bytes_received as f64 / 1e6,
            s.writer.rows,
            s.writer.files_closed,
            s.gaps,
            s.duplicates,
            s.malformed,
            record::publishers_line(s)
        ));
    })?;
    bar.finish_and_clear();
    print_record_summary(&stats);
    Ok(())
}

/// Messages per second since the previous status line, whose (count, seconds) `last` holds.
fn rate_since(last: &mut (u64, f64), received: u64, elapsed_secs: f64) -> f64 {
    let rate = received.saturating_sub(last.0) as f64 / (elapsed_secs - last.1).max(1e-9);
    *last = (received, elapsed_secs);
    rate
}

/// `record --from nats://…`: the durable JetStream consumer.
fn record_nats_cmd(
    config: &RecordConfig,
    nats: &ticktape::nats::NatsConfig,
    consumer: &ticktape::nats::record::ConsumerConfig,
    quiet: bool,
) -> Result<()> {
    let bar = spinner(quiet);
    let stop = ticktape::shutdown::on_signal();
    let mut last = (0u64, 0.0f64);
    let (stats, consumed) = ticktape::nats::record::run(config, nats, consumer, &stop, |s, c| {
        let rate = rate_since(&mut last, s.received, s.elapsed_secs);
        bar.set_message(format!(
            "record {} from JetStream {}/{}: {} ev ({:.0}/s) | acked {} redelivered {} | rows {} | gaps {} dup {} bad {} | publishers: {}",
            config.dataset.display(),
            nats.stream,
            consumer.durable,
            s.accepted,
            rate,
            c.acked,
            c.redelivered,
            s.writer.rows,
            s.gaps,
            s.duplicates,
            s.malformed,
            record::publishers_line(s)
        ));
    })?;
    bar.finish_and_clear();
    print_record_summary(&stats);
    eprintln!(
        "  JetStream {} consumer {}: {} acked, {} redelivered, {} stream errors recovered",
        nats.stream, consumer.durable, consumed.acked, consumed.redelivered, consumed.stream_errors
    );
    Ok(())
}

fn print_record_summary(stats: &ticktape::record::RecordStats) {
    eprintln!(
        "record: {} received, {} written ({} rows in {} files, {:.1} MB), {} duplicates dropped, {} gaps, {} malformed quarantined, {} recovered from a previous journal, {:.1}s",
        stats.received,
        stats.accepted,
        stats.writer.rows,
        stats.writer.files_closed,
        stats.writer.bytes_closed as f64 / 1e6,
        stats.duplicates,
        stats.gaps,
        stats.malformed,
        stats.recovered,
        stats.elapsed_secs
    );
    for p in &stats.publishers {
        eprintln!(
            "  publisher {}: {} msgs, {} missing by sequence, {} silences{}",
            p.endpoint,
            p.received,
            p.seq_missing,
            p.silences,
            if p.ended { ", ended" } else { "" }
        );
    }
}
