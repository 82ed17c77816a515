//! The `ticktape` command line: parse arguments, build a config, call the library,
//! show progress, map errors to exit codes. No logic lives here.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use ticktape::bus::{Backpressure, PublisherConfig};
use ticktape::feeds::simulate::{self, Clock, Faults, SimulateConfig};
use ticktape::record::{self, RecordConfig};
use ticktape::store::{WriterOptions, layout};

#[derive(Parser)]
#[command(
    name = "ticktape",
    version,
    about = "Record-and-replay backtest harness for order-book market data over a ZeroMQ bus"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Publish a synthetic venue (random-walk L2 books and trades) on the bus.
    Simulate(SimulateArgs),
    /// Subscribe to one or more publishers and write a crash-safe Parquet dataset.
    Record(RecordArgs),
    /// Summarize a dataset: venues, symbols, kinds, time range, rows, gaps.
    Inspect(InspectArgs),
    /// Turn journals left by a crashed recorder into Parquet (record does this on start).
    Recover(RecoverArgs),
    /// Publish a recorded dataset on the bus, paced, as fast as possible, or in lockstep.
    Replay(ReplayArgs),
    /// Run a built-in example strategy against a bus and order gateway.
    Strategy(StrategyArgs),
    /// Run a whole backtest from a scenario file and print its report.
    Run(RunArgs),
    /// Run a scenario over a grid of parameter values, in parallel, and tabulate the results.
    Sweep(SweepArgs),
    /// Import files in other formats (Binance raw captures, Tardis, DBN, LOBSTER) into a dataset.
    Import(ImportArgs),
    /// Print the order book reconstructed from a dataset at a moment.
    Book(BookArgs),
    /// Connect to a live venue (binance, kraken, coinbase) and publish its feed on the bus.
    Feed(FeedArgs),
    /// PnL report of a run directory (table, JSON, CSV, SVG chart), or two side by side.
    Report(ReportArgs),
    /// Paper trading: the simulated exchange answering orders against a live feed.
    Paper(PaperArgs),
}

#[derive(Args)]
struct PaperArgs {
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

/// The simulated exchange's models from the command line (a scenario's `[exchange]`).
#[derive(Args)]
struct ExchangeArgs {
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
    run_dir: Option<PathBuf>,
}

impl ExchangeArgs {
    fn settings(&self) -> Result<ticktape::exchange::models::ExchangeSettings> {
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
struct ReportArgs {
    /// Run directory (with fills.parquet and marks.parquet).
    run_dir: PathBuf,
    /// Print JSON instead of the table.
    #[arg(long)]
    json: bool,
    /// Also write a CSV here.
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Also write the SVG chart here (equity, drawdown, and per strategy: PnL, price with
    /// fills, position).
    #[arg(long)]
    chart: Option<PathBuf>,
    /// A second run directory to compare with.
    #[arg(long)]
    compare: Option<PathBuf>,
    /// Also write the trade list (every fill, with position, realized PnL and markouts)
    /// as CSV here.
    #[arg(long)]
    trades: Option<PathBuf>,
    /// Starting balance instead of the run's summary.json.
    #[arg(long)]
    starting_balance: Option<f64>,
    /// Return interval for Sharpe/Sortino (shown only with >= 1 day of data and >= 30
    /// intervals; see docs/REPORT.md).
    #[arg(long, default_value = "1m", value_parser = parse_duration)]
    return_interval: Duration,
}

#[derive(Args)]
struct ImportArgs {
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

#[derive(Args)]
struct BookArgs {
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

#[derive(Args)]
struct FeedArgs {
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

#[derive(Args)]
struct RunArgs {
    /// Scenario file (see docs/SCENARIOS.md).
    scenario: PathBuf,
    /// Run directory (default: the scenario's output.dir, or runs/<name>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Override the scenario's replay speed (max, 1, 10, ...).
    #[arg(long)]
    speed: Option<String>,
    /// Override the scenario's transport between replay and strategies: zmq, or shm
    /// (shared memory, docs/SHM.md).
    #[arg(long, value_enum)]
    transport: Option<ticktape::shm::Transport>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

#[derive(Args)]
struct SweepArgs {
    /// The base scenario file.
    scenario: PathBuf,
    /// A parameter and its values, PATH=V1,V2,… (repeatable; the grid is every
    /// combination): strategy.mm.params.skew_ticks=0,1,2 or exchange.order_latency.ns=1e6,5e6.
    #[arg(long = "set", value_name = "PATH=V1,V2", required = true)]
    sets: Vec<String>,
    /// Runs at once (default: the number of cores).
    #[arg(long)]
    jobs: Option<usize>,
    /// Sweep directory (default runs/<scenario name>-sweep); replaced if it holds a sweep.
    #[arg(long)]
    out: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

#[derive(Args)]
struct RecoverArgs {
    /// Dataset directory.
    dataset: PathBuf,
}

#[derive(Args)]
struct SelectionArgs {
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
    fn build(&self) -> Result<ticktape::store::Selection> {
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

#[derive(Args)]
struct ReplayArgs {
    /// Dataset directory.
    dataset: PathBuf,
    #[command(flatten)]
    selection: SelectionArgs,
    /// Speed: 1 = recorded pace, 10 = ten times faster, max = as fast as subscribers take it.
    #[arg(long, default_value = "max")]
    speed: ticktape::replay::Speed,
    /// How a paced replay waits for each event: spin (sleep until shortly before it, spin
    /// the rest; about one core at 10x), sleep (never spin: cheapest, less punctual), or
    /// legacy (the pacing before issue 14, a benchmark baseline).
    #[arg(long, default_value = "spin")]
    pacing: ticktape::replay::Waiting,
    /// Run the replay thread under real-time scheduling (SCHED_FIFO, needs CAP_SYS_NICE):
    /// on a loaded machine a paced replay is otherwise late by the scheduler's turns.
    #[arg(long)]
    realtime: bool,
    /// Endpoint(s) to bind the bus on.
    #[arg(long, default_value = "tcp://127.0.0.1:5556")]
    bind: Vec<String>,
    /// Replay into NATS JetStream instead of the ZeroMQ bus: server URL(s),
    /// comma-separated (paced or max speed; lockstep and --exchange stay local).
    #[arg(long = "nats", value_delimiter = ',')]
    nats: Vec<String>,
    #[command(flatten)]
    nats_options: NatsOptions,
    /// Wait for this many subscribers before the first event. The default, 1, lets a
    /// subscriber started first receive the whole stream; 0 publishes at once, and what is
    /// sent before a subscriber's subscription arrives is lost (ZeroMQ's slow joiner).
    #[arg(long, default_value_t = 1)]
    wait_for: usize,
    /// Give up waiting for subscribers/strategies after this long.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    wait_timeout: Duration,
    /// Order gateway / lockstep ack endpoint (ROUTER).
    #[arg(long)]
    gateway: Option<String>,
    /// A strategy's gateway secret, NAME=SECRET (repeatable): its hello must carry it.
    #[arg(long = "token", value_name = "NAME=SECRET")]
    tokens: Vec<String>,
    /// Lockstep with this many strategies.
    #[arg(long, default_value_t = 0)]
    lockstep: usize,
    /// Lockstep lookahead (run ahead by up to this much event time; use the order latency).
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    lookahead: Duration,
    /// Publisher id in heartbeats.
    #[arg(long, default_value = "replay")]
    id: String,
    /// Messages queued per subscriber before the replay waits for it.
    #[arg(long, default_value_t = 100_000)]
    send_hwm: i32,
    /// Payload encoding: json (any language) or binary (fast; `docs/PROTOCOL.md`).
    #[arg(long, value_enum, default_value = "json")]
    encoding: ticktape::wire::Encoding,
    /// Run the simulated exchange on the gateway (needs --gateway, or --transport shm).
    #[arg(long)]
    exchange: bool,
    /// How lockstep strategies talk to the replay: zmq (the bus and --gateway), or shm
    /// (shared memory, docs/SHM.md): one segment per --lockstep strategy, each printed as
    /// an endpoint `shm:/proc/PID/fd/N` to give a strategy as both --bus and --gateway.
    #[arg(long, value_enum, default_value = "zmq")]
    transport: ticktape::shm::Transport,
    #[command(flatten)]
    models: ExchangeArgs,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct StrategyArgs {
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

/// Parses durations like `500us`, `2s`, `15m` (shared with scenario files).
fn parse_duration(s: &str) -> Result<Duration, String> {
    ticktape::scenario::parse_duration(s)
}

/// Parses an events-per-second rate: finite and positive, or 0.
fn parse_rate(s: &str) -> Result<f64, String> {
    let rate: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number (e.g. 10000, or 0 for as fast as possible)"))?;
    simulate::check_rate(rate)
}

/// The JetStream side of any NATS link (`docs/SCALE-OUT.md`).
#[derive(Args, Clone)]
struct NatsOptions {
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
    fn config(&self, servers: Vec<String>, name: &str) -> ticktape::nats::NatsConfig {
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
    fn publishing(
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
fn bind_or_default(bind: Vec<String>, nats: &[String], default: &str) -> Vec<String> {
    if bind.is_empty() && nats.is_empty() {
        vec![default.to_string()]
    } else {
        bind
    }
}

#[derive(Args)]
struct SimulateArgs {
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

#[derive(Args)]
struct RecordArgs {
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

#[derive(Args)]
struct InspectArgs {
    /// Dataset directory.
    dataset: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Instead of summarizing, re-hash every data file and compare it with the hash
    /// recorded when it was written (`_ticktape/checksums.jsonl`): prints OK, MISMATCH,
    /// NOT RECORDED or MISSING per file and fails on a mismatch or a missing file.
    #[arg(long)]
    verify: bool,
    /// No progress bar (with --verify).
    #[arg(long)]
    quiet: bool,
}

/// Whether to draw a live status line: not with `--quiet`, and not when this process is a
/// background job of the terminal its stderr goes to (`ticktape simulate … &` and then
/// `ticktape record` in one terminal would overwrite each other's lines). The final
/// summary is printed either way.
fn live_status(quiet: bool) -> bool {
    !quiet && stderr_is_foreground()
}

/// True when stderr is a terminal whose foreground process group is this process's.
fn stderr_is_foreground() -> bool {
    // SAFETY: two syscalls that take no pointers; tcgetpgrp returns -1 when fd 2 is not
    // this process's controlling terminal (a file, a pipe), never equal to a group id.
    let (foreground, own) = unsafe { (libc::tcgetpgrp(2), libc::getpgrp()) };
    foreground == own
}

fn spinner(quiet: bool) -> ProgressBar {
    if !live_status(quiet) {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

fn simulate_cmd(a: SimulateArgs) -> Result<()> {
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

fn record_cmd(a: RecordArgs) -> Result<()> {
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

fn inspect_cmd(a: InspectArgs) -> Result<()> {
    if a.verify {
        return verify_cmd(&a);
    }
    let summary = ticktape::inspect::inspect(&a.dataset)
        .with_context(|| format!("cannot inspect {}", a.dataset.display()))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print!("{}", ticktape::inspect::render(&a.dataset, &summary));
    }
    Ok(())
}

fn verify_cmd(a: &InspectArgs) -> Result<()> {
    let bar = if live_status(a.quiet) {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(
                "verify {bar:30} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let v = ticktape::inspect::verify(&a.dataset, |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    })
    .with_context(|| format!("cannot verify {}", a.dataset.display()))?;
    bar.finish_and_clear();
    if a.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{}", ticktape::inspect::render_verification(&a.dataset, &v));
    }
    if v.failures() > 0 {
        bail!(
            "{} of {} file(s) in {} failed verification: restore them from a copy, or move them out of the dataset",
            v.failures(),
            v.files.len(),
            a.dataset.display()
        );
    }
    Ok(())
}

fn recover_cmd(a: RecoverArgs) -> Result<()> {
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

fn replay_cmd(a: ReplayArgs) -> Result<()> {
    let config = ticktape::replay::ReplayConfig {
        dataset: a.dataset.clone(),
        selection: a.selection.build()?,
        speed: a.speed,
        pacing: a.pacing,
        realtime: a.realtime,
        bind: a.bind,
        wait_for: a.wait_for,
        wait_timeout: a.wait_timeout,
        gateway: a.gateway,
        lockstep: a.lockstep,
        lookahead: a.lookahead,
        publisher_id: a.id,
        send_hwm: a.send_hwm,
        encoding: a.encoding,
        tokens: ticktape::replay::Tokens::parse(a.tokens.iter().map(String::as_str))?,
        ..Default::default()
    };
    let stop = ticktape::shutdown::on_signal();
    if !a.nats.is_empty() {
        if a.transport == ticktape::shm::Transport::Shm {
            bail!(
                "--transport shm carries lockstep to local strategies; replay into JetStream with --nats alone"
            );
        }
        if a.exchange {
            bail!(
                "--exchange stays local: the simulated exchange answers strategies over the ZeroMQ gateway; replay into JetStream without it, or drop --nats"
            );
        }
        let nats = a.nats_options.config(a.nats.clone(), &config.publisher_id);
        let mut progress = ReplayProgress::new(a.quiet);
        let stats = ticktape::replay::run_nats(&config, &nats, &stop, |p| progress.show(&p))?;
        progress.bar.finish_and_clear();
        print_replay_summary(&stats, a.json)?;
        if let Some(stored) = stats.stored {
            eprintln!(
                "  JetStream {} acknowledged {stored} messages (events, heartbeats, end of stream)",
                nats.stream
            );
        }
        if stop.is_set() {
            bail!(
                "interrupted after {} of about {} events",
                stats.events,
                stats.estimate
            );
        }
        return Ok(());
    }
    let mut config = config;
    let shm = match a.transport {
        ticktape::shm::Transport::Zmq => {
            announce_replay_wait(&config, a.quiet);
            None
        }
        ticktape::shm::Transport::Shm => {
            if config.lockstep == 0 {
                bail!(
                    "--transport shm serves lockstep strategies: give --lockstep N (one shared-memory segment each)"
                );
            }
            let names: Vec<String> = (1..=config.lockstep).map(|i| format!("slot-{i}")).collect();
            let hub = ticktape::shm::Hub::create(&names, config.ack_timeout)?;
            // Said even when quiet: without these nobody can connect.
            for i in 0..hub.len() {
                eprintln!(
                    "replay: shared-memory segment {} of {}: --bus {ep} --gateway {ep}",
                    i + 1,
                    hub.len(),
                    ep = hub.endpoint(i).unwrap_or_default()
                );
            }
            eprintln!(
                "replay: waiting up to {:?} for {} strategy hello(s) over shared memory",
                config.wait_timeout,
                hub.len()
            );
            config.wait_for = 0;
            Some(hub)
        }
    };
    let mut progress = ReplayProgress::new(a.quiet);
    let mut host = if a.exchange {
        if config.gateway.is_none() && shm.is_none() {
            bail!("--exchange needs --gateway ENDPOINT for the strategies' orders");
        }
        let settings = a.models.settings()?;
        if config.lockstep > 0 {
            settings
                .check_lookahead(config.lookahead)
                .context("--lookahead does not fit the exchange's latency models")?;
        }
        Some(ticktape::exchange::host::ExchangeHost::new(
            &ticktape::exchange::host::ExchangeHostConfig {
                settings,
                run_dir: a.models.run_dir.clone(),
            },
        )?)
    } else {
        None
    };
    let venue_host = host
        .as_mut()
        .map(|h| h as &mut dyn ticktape::replay::VenueHost);
    let stats = ticktape::replay::run_over(&config, shm, venue_host, &stop, |p| progress.show(&p))?;
    progress.bar.finish_and_clear();
    print_replay_summary(&stats, a.json)?;
    if stop.is_set() {
        // A replay that did not reach the end of its data is not a success.
        bail!(
            "interrupted after {} of about {} events",
            stats.events,
            stats.estimate
        );
    }
    Ok(())
}

/// Says on stderr who the replay waits for before its first event, or, with `--wait-for 0`,
/// that nobody is waited for: a replay must not lose its whole stream without a word.
fn announce_replay_wait(config: &ticktape::replay::ReplayConfig, quiet: bool) {
    let subscribers = config.wait_for.max(config.lockstep);
    if subscribers == 0 {
        // Said even when quiet: this is how a whole stream goes to nobody.
        eprintln!(
            "replay: --wait-for 0: publishing without waiting for a subscriber; whatever is \
             sent before one subscribes is lost (drop the flag to wait for one)"
        );
    } else if !quiet {
        eprintln!(
            "replay: waiting up to {:?} for {subscribers} subscriber(s) on {} before the first \
             event (--wait-for 0 publishes at once)",
            config.wait_timeout,
            config.bind.join(", ")
        );
    }
}

/// The progress line of a replay or a scenario run: events, position in recorded time,
/// and, after the last event, who the replay is still waiting for.
struct ReplayProgress {
    bar: ProgressBar,
    announced: bool,
}

impl ReplayProgress {
    fn new(quiet: bool) -> ReplayProgress {
        let bar = if !live_status(quiet) {
            ProgressBar::hidden()
        } else {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template(
                    "{bar:30} {pos}/{len} events {rate} eta {eta} | {msg}",
                )
                .map(|style| style.with_key("rate", write_rate))
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar
        };
        ReplayProgress {
            bar,
            announced: false,
        }
    }

    fn show(&mut self, p: &ticktape::replay::Progress<'_>) {
        if !p.waiting_for.is_empty() {
            // Said once, even when quiet: a hung subscriber would otherwise look like a
            // hung replay.
            if !self.announced {
                self.announced = true;
                self.bar.suspend(|| {
                    eprintln!(
                        "replay: every event sent; waiting for subscribers to take the end of the stream: {} (Ctrl-C drops it)",
                        p.waiting_for.join(", ")
                    )
                });
            }
            return;
        }
        self.bar.set_length(p.stats.estimate);
        self.bar.set_position(p.stats.events);
        self.bar
            .set_message(format!("at {}", layout::format_ts(p.ts)));
    }
}

/// The `{rate}` of a progress bar: whole events per second, thousands grouped
/// (`30,372/s`; indicatif's `{per_sec}` shows four decimals).
fn write_rate(state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write) {
    let _ = write!(w, "{}/s", group_thousands(state.per_sec().round() as u64));
}

fn print_replay_summary(stats: &ticktape::replay::ReplayStats, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(stats)?);
    }
    eprintln!(
        "replay: {} events ({} gaps) in {:.2}s = {:.0} events/s ({:.2}s with the close); subscriber stalls {} ({:.2}s)",
        stats.events,
        stats.gaps,
        stats.stream_secs,
        stats.events as f64 / stats.stream_secs.max(1e-9),
        stats.elapsed_secs,
        stats.stalls,
        stats.stalled_secs
    );
    if !stats.dropped_at_close.is_empty() {
        eprintln!(
            "  end of stream not taken by: {}",
            stats.dropped_at_close.join(", ")
        );
    }
    if !stats.slow_subscribers.is_empty() {
        eprintln!(
            "  slow subscribers: {}",
            stats
                .slow_subscribers
                .iter()
                .map(|p| format!("{} {} stalls ({:.2}s)", p.peer, p.stalls, p.secs))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if let Some((a, b)) = stats.time_range {
        eprintln!(
            "  window {} .. {} ({:.2}s of recorded time)",
            layout::format_ts(a),
            layout::format_ts(b),
            (b - a) as f64 / 1e9
        );
    }
    if stats.backdated > 0 {
        eprintln!(
            "  {} orders dated before their strategy's last acknowledged step were moved up to it (decision time belongs to the harness)",
            stats.backdated
        );
    }
    if let Some(l) = &stats.lateness {
        eprintln!(
            "  pacing lateness p50 {} us, p99 {} us, max {} us ({} samples; due to send returned, every event)",
            us(l.p50_us),
            us(l.p99_us),
            us(l.max_us),
            l.samples
        );
    }
    if let Some(p) = &stats.pacing {
        let figure = |l: &Option<ticktape::replay::Lateness>| match l {
            Some(l) => format!(
                "p50 {} us, p99 {} us, max {} us ({} samples)",
                us(l.p50_us),
                us(l.p99_us),
                us(l.max_us),
                l.samples
            ),
            None => "none".into(),
        };
        eprintln!("    first event of each due time: {}", figure(&p.first));
        eprintln!("    events the pacer waited for: {}", figure(&p.waited));
        eprintln!(
            "    floor (woken on time, these sends), every event: {}",
            figure(&p.floor)
        );
        eprintln!(
            "    floor, first event of each due time: {}",
            figure(&p.floor_first)
        );
    }
    if stats.elapsed_secs > 0.0 {
        eprintln!(
            "  cpu {:.2}s user+sys = {:.2} cores over the replay{}",
            stats.cpu_secs,
            stats.cpu_secs / stats.elapsed_secs,
            match stats.pacing.as_ref().and_then(|p| p.margin_us) {
                Some(m) => format!(" (sleep margin at the end {m:.0} us)"),
                None => String::new(),
            }
        );
    }
    if stats.steps > 0 {
        eprintln!(
            "  lockstep: {} steps, waited {} times for acks ({:.2}s); slowest: {}",
            stats.steps,
            stats.ack_waits,
            stats.ack_wait_secs,
            stats
                .slowest
                .iter()
                .map(|(n, s)| format!("{n} {s:.2}s"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if let Some(d) = &stats.digest {
        eprintln!("  fills digest {d}");
    }
    Ok(())
}

/// Microseconds for a summary line: one decimal below 10 us.
fn us(v: f64) -> String {
    if v < 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

fn strategy_cmd(a: StrategyArgs) -> Result<()> {
    use ticktape::strategy::{self, RunnerConfig};
    let size: ticktape::event::Fixed = a
        .size
        .parse()
        .with_context(|| format!("bad --size {:?}", a.size))?;
    let params =
        strategy::Params::from_env().with_context(|| format!("bad ${}", strategy::PARAMS_ENV))?;
    let mut boxed = strategy::builtin(&a.name, &a.venue, &a.symbol, size, &params)?;
    let config = RunnerConfig {
        name: a.id.unwrap_or_else(|| a.name.clone()),
        bus: a.bus,
        gateway: a.gateway,
        lockstep: a.lockstep,
        timer: Duration::from_secs(1),
        idle_timeout: Some(Duration::from_secs(120)),
        token: std::env::var(ticktape::replay::gateway::TOKEN_ENV).ok(),
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

fn run_cmd(a: RunArgs) -> Result<()> {
    let stop = ticktape::shutdown::on_signal();
    let mut progress = ReplayProgress::new(a.quiet);
    let options = ticktape::scenario::run::RunOptions {
        out: a.out,
        speed: a.speed,
        transport: a.transport,
    };
    use ticktape::scenario::run::{RunOutcome, RunProgress};
    let outcome = ticktape::scenario::run::run(&a.scenario, &options, &stop, |p| match p {
        RunProgress::Replay(p) => progress.show(&p),
        RunProgress::Inproc(p) => {
            progress.bar.set_length(p.estimate);
            progress.bar.set_position(p.events);
        }
    });
    progress.bar.finish_and_clear();
    let outcome = outcome?;
    match &outcome {
        RunOutcome::Bus(summary) => print_replay_summary(&summary.replay, false)?,
        RunOutcome::Inproc(s) => {
            let rate = s.replay.events as f64 / s.elapsed_secs.max(1e-9);
            eprintln!(
                "in-process backtest: {} events in {:.3} s ({}/s), {} requests, {} fills",
                s.replay.events,
                s.elapsed_secs,
                group_thousands(rate as u64),
                s.replay.requests,
                s.fills
            );
            eprintln!("  fills digest {}", s.digest);
        }
    }
    eprintln!("run directory: {}", outcome.run_dir().display());
    if outcome.interrupted() {
        // Partial results get a report when there is enough to report on.
        if let Err(e) = report_after_run(outcome.run_dir()) {
            eprintln!("no report of the partial run: {e:#}");
        }
    } else {
        report_after_run(outcome.run_dir())?;
    }
    if outcome.interrupted() {
        bail!(
            "interrupted: partial results are in {}",
            outcome.run_dir().display()
        );
    }
    Ok(())
}

/// Writes report.json, report.csv and report.svg into the run directory and prints the table.
fn report_after_run(run_dir: &std::path::Path) -> Result<()> {
    use ticktape::report::{self, ReportOptions};
    let r = report::compute(run_dir, &ReportOptions::default())
        .with_context(|| format!("cannot build the report of {}", run_dir.display()))?;
    std::fs::write(run_dir.join("report.json"), report::render_json(&r))?;
    std::fs::write(run_dir.join("report.csv"), report::render_csv(&r))?;
    report::write_chart(&r, &run_dir.join("report.svg"))?;
    println!("{}", report::render_table(&r));
    eprintln!(
        "report: {} (chart report.svg, report.json, report.csv in that directory)",
        run_dir.display()
    );
    Ok(())
}

fn report_cmd(a: ReportArgs) -> Result<()> {
    for (flag, path) in [("--csv", &a.csv), ("--chart", &a.chart)] {
        if let Some(path) = path {
            create_parent(path, flag)?;
        }
    }
    let options = ticktape::report::ReportOptions {
        json: a.json,
        csv: a.csv,
        chart: a.chart,
        trades: a.trades,
        starting_balance: a.starting_balance,
        // parse_duration bounds it to 365 days, far inside i64 nanoseconds.
        return_interval_ns: i64::try_from(a.return_interval.as_nanos())
            .context("--return-interval is too long")?,
        ..Default::default()
    };
    let text = ticktape::report::run(&a.run_dir, a.compare.as_deref(), &options).with_context(
        || match &a.compare {
            Some(b) => format!(
                "cannot compare {} with {}",
                a.run_dir.display(),
                b.display()
            ),
            None => format!("cannot report on {}", a.run_dir.display()),
        },
    )?;
    println!("{text}");
    Ok(())
}

/// Creates the folder an output file goes into: `--chart out/x.svg` makes `out/`.
fn create_parent(path: &std::path::Path, flag: &str) -> Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => {
            std::fs::create_dir_all(dir).with_context(|| {
                format!(
                    "cannot create the folder {} for {flag} {}",
                    dir.display(),
                    path.display()
                )
            })
        }
        _ => Ok(()),
    }
}

fn import_cmd(a: ImportArgs) -> Result<()> {
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

fn book_cmd(a: BookArgs) -> Result<()> {
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

fn feed_cmd(a: FeedArgs) -> Result<()> {
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

fn paper_cmd(a: PaperArgs) -> Result<()> {
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

fn main() -> ExitCode {
    // Nothing ticktape writes is group- or world-writable, whatever the umask says.
    ticktape::store::files::restrict_umask();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Simulate(a) => simulate_cmd(a),
        Command::Record(a) => record_cmd(a),
        Command::Inspect(a) => inspect_cmd(a),
        Command::Recover(a) => recover_cmd(a),
        Command::Replay(a) => replay_cmd(a),
        Command::Strategy(a) => strategy_cmd(a),
        Command::Run(a) => run_cmd(a),
        Command::Sweep(a) => sweep_cmd(a),
        Command::Import(a) => import_cmd(a),
        Command::Book(a) => book_cmd(a),
        Command::Feed(a) => feed_cmd(a),
        Command::Report(a) => report_cmd(a),
        Command::Paper(a) => paper_cmd(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `1234567` as `1,234,567`.
fn group_thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn sweep_cmd(a: SweepArgs) -> Result<()> {
    use ticktape::sweep::{self, Axis, SweepConfig};
    let axes = a
        .sets
        .iter()
        .map(|s| Axis::parse(s))
        .collect::<Result<Vec<_>>>()?;
    let scenario = ticktape::scenario::Scenario::load(&a.scenario)?;
    let out = a
        .out
        .unwrap_or_else(|| PathBuf::from("runs").join(format!("{}-sweep", scenario.name)));
    if out.exists() {
        if !out.join("sweep.json").exists() && !out.join("scenarios").exists() {
            bail!(
                "{} exists and is not a sweep directory; choose another --out",
                out.display()
            );
        }
        std::fs::remove_dir_all(&out)
            .with_context(|| format!("cannot clear the previous sweep in {}", out.display()))?;
    }
    let jobs = a
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let config = SweepConfig {
        scenario: a.scenario.clone(),
        axes,
        jobs,
        out,
        exe: std::env::current_exe().context("cannot find the ticktape executable")?,
    };
    let points: usize = config.axes.iter().map(|x| x.values.len()).product();
    let bar = if a.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(points as u64)
    };
    let stop = ticktape::shutdown::on_signal();
    let summary = sweep::run(&config, &stop, |p, done, _| {
        bar.set_position(done as u64);
        if let Some(e) = &p.error {
            bar.suspend(|| eprintln!("run {} failed: {e}", p.run));
        }
    });
    bar.finish_and_clear();
    let summary = summary?;
    let width = summary
        .axes
        .iter()
        .map(|a| a.len())
        .max()
        .unwrap_or(0)
        .max(8);
    let mut header = format!("{:>5}", "run");
    for axis in &summary.axes {
        header.push_str(&format!("  {axis:>width$}"));
    }
    println!(
        "{header}  {:>12}  {:>10}  {:>8}  {:>12}",
        "net PnL", "fees", "fills", "max DD"
    );
    for p in &summary.points {
        let mut line = format!("{:>5}", p.run);
        for (_, v) in &p.params {
            line.push_str(&format!("  {v:>width$}"));
        }
        let num = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{x:.2}"));
        line.push_str(&format!(
            "  {:>12}  {:>10}  {:>8}  {:>12}",
            num(p.net_pnl),
            num(p.fees),
            p.fills.map_or("-".into(), |f| f.to_string()),
            num(p.max_drawdown)
        ));
        if let Some(e) = &p.error {
            line.push_str(&format!("  failed: {e}"));
        }
        println!("{line}");
    }
    eprintln!(
        "sweep: {} runs in {} (sweep.parquet, sweep.csv, sweep.json{})",
        summary.points.len(),
        summary.out.display(),
        if summary.axes.len() == 2 {
            ", heatmap.svg"
        } else {
            ""
        }
    );
    let failed = summary.points.iter().filter(|p| p.error.is_some()).count();
    if failed > 0 {
        bail!(
            "{failed} of {} runs failed (logs in {}/logs)",
            summary.points.len(),
            summary.out.display()
        );
    }
    Ok(())
}
