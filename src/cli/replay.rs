//! `ticktape replay`: a recorded dataset back on the bus (or JetStream, or shared memory).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;

use super::args::{ExchangeArgs, NatsOptions, SelectionArgs, parse_duration};
use super::progress::{ReplayProgress, print_replay_summary};

#[derive(Args)]
pub struct ReplayArgs {
    /// Dataset directory.
    dataset: PathBuf,
    #[command(flatten)]
    selection: SelectionArgs,
    /// Speed: 1 = recorded pace, 10 = ten times faster, max = as fast as subscribers take it.
    #[arg(long, default_value = "max")]
    speed: ticktape::replay::Speed,
    /// How a paced replay waits for each event: spin (sleep until shortly before it, spin
    /// the rest; about one core at 10x), sleep (never spin: cheapest, less punctual), busy
    /// (never sleep: a whole core for the replay, the most punctual, best with
    /// --own-core), or legacy (the pacing before issue 14, a benchmark baseline).
    #[arg(long, default_value = "spin")]
    pacing: ticktape::replay::Waiting,
    /// Run the replay thread under real-time scheduling (SCHED_FIFO, needs CAP_SYS_NICE):
    /// on a loaded machine a paced replay is otherwise late by the scheduler's turns.
    /// Refused with `--pacing busy` while the kernel's real-time budget
    /// (kernel.sched_rt_runtime_us) would stop a thread that never sleeps.
    #[arg(long)]
    realtime: bool,
    /// Keep the paced replay thread on a CPU of its own (the highest it may use) and its
    /// other threads (read-ahead, libzmq's) on the rest; no privilege needed, at least
    /// two CPUs. Subscribers started elsewhere are not moved: `ticktape run` with
    /// `[replay] own_core = true` also keeps its strategies off that core.
    #[arg(long)]
    own_core: bool,
    /// With --transport shm, a paced speed, no lockstep and --own-core: a second thread on
    /// the other CPUs, at idle priority, publishes each burst at its due time when the
    /// replay thread has not (its core taken by the host); docs/SHM.md.
    #[arg(long)]
    backup_publisher: bool,
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
    /// How strategies talk to the replay: zmq (the bus and --gateway), or shm (shared
    /// memory, docs/SHM.md): one segment per strategy (--lockstep N; without lockstep,
    /// --wait-for N), each printed as an endpoint `shm:/proc/PID/fd/N` to give a strategy
    /// as both --bus and --gateway.
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

pub fn run(a: ReplayArgs) -> Result<()> {
    if a.own_core && a.speed == ticktape::replay::Speed::Max {
        bail!(
            "--own-core gives a paced replay's thread a core of its own: it needs --speed 1, 10 ...; at --speed max nothing waits for a due time"
        );
    }
    let config = ticktape::replay::ReplayConfig {
        dataset: a.dataset.clone(),
        selection: a.selection.build()?,
        speed: a.speed,
        pacing: a.pacing,
        realtime: a.realtime,
        own_core: a.own_core,
        backup_publisher: a.backup_publisher,
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
            // One segment per strategy: the lockstep ones, else the subscribers waited for.
            let segments = if config.lockstep > 0 {
                config.lockstep
            } else {
                config.wait_for
            };
            if segments == 0 {
                bail!(
                    "--transport shm needs to know how many strategies will attach (one shared-memory segment each): give --lockstep N, or --wait-for N without lockstep"
                );
            }
            let names: Vec<String> = (1..=segments).map(|i| format!("slot-{i}")).collect();
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
