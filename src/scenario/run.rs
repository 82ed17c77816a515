//! `ticktape run`: one backtest from a scenario. The replay and the simulated exchange
//! run in this process; strategies run as child processes (any language); the run
//! directory collects orders, fills, marks, the resolved scenario and `summary.json`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use super::{EngineMode, Scenario, run_dir};
use crate::backtest::{Backtest, BacktestSummary};
use crate::exchange::host::{ExchangeHost, ExchangeHostConfig};
use crate::replay::{self, ReplayConfig, ReplayStats, Speed};
use crate::shm::Transport;
use crate::shutdown::Stop;
use crate::store::{Selection, layout};
use crate::strategy;

/// Options from the command line.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Run directory instead of the scenario's.
    pub out: Option<PathBuf>,
    /// Replay speed instead of the scenario's (`max`, `1`, `10`).
    pub speed: Option<String>,
    /// Transport between replay and strategies instead of the scenario's.
    pub transport: Option<Transport>,
}

/// How one strategy process ended.
#[derive(Clone, Debug, Serialize)]
pub struct StrategyExit {
    /// Strategy name.
    pub name: String,
    /// Exit code (None: killed by a signal or by ticktape).
    pub code: Option<i32>,
    /// Its log file, in the run directory.
    pub log: PathBuf,
}

/// `summary.json` of a run.
#[derive(Clone, Debug, Serialize)]
pub struct RunSummary {
    /// Scenario name.
    pub scenario: String,
    /// Starting balance (quote currency), for the report.
    pub starting_balance: f64,
    /// Digest of all fills: equal inputs give equal digests.
    pub digest: Option<String>,
    /// Replay counters.
    pub replay: ReplayStats,
    /// Strategy exits.
    pub strategies: Vec<StrategyExit>,
    /// True when Ctrl-C stopped the run early.
    pub interrupted: bool,
    /// How the strategies talked to the replay.
    pub transport: Transport,
    /// The run directory.
    pub run_dir: PathBuf,
}

/// A strategy that exited badly: name, exit code, log file.
type Crash = (String, Option<i32>, PathBuf);

struct Children {
    procs: Vec<(String, Child, PathBuf)>,
}

impl Children {
    /// First child that exited with failure, if any.
    fn failed(&mut self) -> Option<Crash> {
        for (name, child, log) in &mut self.procs {
            if let Ok(Some(status)) = child.try_wait()
                && !status.success()
            {
                return Some((name.clone(), status.code(), log.clone()));
            }
        }
        None
    }

    fn kill_all(&mut self) {
        for (_, child, _) in &mut self.procs {
            let _ = child.kill();
        }
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        self.kill_all();
        for (_, child, _) in &mut self.procs {
            let _ = child.wait();
        }
    }
}

/// A directory removed when dropped.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Prepares an empty run directory, refusing to delete anything that is not a run.
fn prepare_run_dir(dir: &Path) -> Result<()> {
    if dir.exists() {
        let is_run = dir.join("summary.json").exists()
            || dir.join("scenario.toml").exists()
            || std::fs::read_dir(dir)
                .map(|mut d| d.next().is_none())
                .unwrap_or(false);
        if !is_run {
            bail!(
                "run directory {} exists and does not look like a ticktape run (no summary.json or scenario.toml); choose another --out",
                dir.display()
            );
        }
        std::fs::remove_dir_all(dir)
            .with_context(|| format!("cannot clear previous run in {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))
}

/// The scenario's `[data]` block as a reader selection.
fn selection(scenario: &Scenario) -> Result<Selection> {
    let data = &scenario.data;
    Ok(Selection {
        venues: data.venues.clone(),
        symbols: data.symbols.clone(),
        kinds: data
            .kinds
            .iter()
            .filter_map(|k| crate::event::Kind::from_name(k.get_ref()))
            .collect(),
        start: data
            .start
            .as_ref()
            .map(|t| layout::parse_ts(t.get_ref()))
            .transpose()?,
        end: data
            .end
            .as_ref()
            .map(|t| layout::parse_ts(t.get_ref()))
            .transpose()?,
    })
}

/// What `ticktape run` produced, by engine.
#[derive(Clone, Debug)]
pub enum RunOutcome {
    /// Strategies ran as processes on the bus.
    Bus(Box<RunSummary>),
    /// Built-in strategies ran in this process.
    Inproc(Box<BacktestSummary>),
}

impl RunOutcome {
    /// The run directory.
    pub fn run_dir(&self) -> &Path {
        match self {
            RunOutcome::Bus(s) => &s.run_dir,
            RunOutcome::Inproc(s) => &s.run_dir,
        }
    }

    /// True when Ctrl-C stopped the run early.
    pub fn interrupted(&self) -> bool {
        match self {
            RunOutcome::Bus(s) => s.interrupted,
            RunOutcome::Inproc(s) => s.interrupted,
        }
    }

    /// The fills digest.
    pub fn digest(&self) -> Option<&str> {
        match self {
            RunOutcome::Bus(s) => s.digest.as_deref(),
            RunOutcome::Inproc(s) => Some(&s.digest),
        }
    }
}

/// Progress of a run, by engine.
pub enum RunProgress<'a> {
    /// The bus replay's progress.
    Replay(replay::Progress<'a>),
    /// The in-process engine's progress.
    Inproc(crate::backtest::Progress),
}

/// Runs a scenario to completion with the engine it names (`[engine] mode`).
pub fn run(
    scenario_path: &Path,
    options: &RunOptions,
    stop: &Stop,
    mut on_progress: impl FnMut(RunProgress<'_>),
) -> Result<RunOutcome> {
    let scenario = Scenario::load(scenario_path)?;
    if options.transport == Some(Transport::Shm) && scenario.engine.mode == EngineMode::Inproc {
        bail!(
            "--transport shm: scenario {} runs its strategies in-process ([engine] mode = \"inproc\"), where no transport is used; drop the flag or use mode = \"bus\"",
            scenario_path.display()
        );
    }
    let transport = options.transport.unwrap_or(scenario.replay.transport);
    let speed: Speed = options
        .speed
        .as_deref()
        .unwrap_or(scenario.replay.speed.get_ref())
        .parse()
        .map_err(|e: String| anyhow::anyhow!(e))?;
    if scenario.replay.busy_poll
        && (transport != Transport::Shm || scenario.engine.mode == EngineMode::Inproc)
    {
        bail!(
            "scenario {}: replay.busy_poll = true makes strategy processes poll their shared-memory ring, so it needs transport = \"shm\" (in [replay] or `run --transport shm`) and [engine] mode = \"bus\"; over ZeroMQ a strategy waits inside libzmq",
            scenario_path.display()
        );
    }
    if scenario.replay.own_core {
        if scenario.engine.mode == EngineMode::Inproc || speed == Speed::Max {
            bail!(
                "scenario {}: replay.own_core = true keeps a paced replay's thread on a core of its own, away from the strategy processes; it needs a paced replay (speed = \"1\", \"10\" ...) and [engine] mode = \"bus\"",
                scenario_path.display()
            );
        }
        crate::replay::cores::Split::of_this_thread()
            .with_context(|| format!("scenario {}", scenario_path.display()))?;
    }
    if scenario.replay.backup_publisher
        && (transport != Transport::Shm || !scenario.replay.own_core || scenario.replay.lockstep)
    {
        bail!(
            "scenario {}: replay.backup_publisher = true publishes a paced replay's bursts from the cores own_core leaves to the strategies, into their shared-memory rings: it needs transport = \"shm\" (in [replay] or `run --transport shm`), own_core = true and lockstep = false",
            scenario_path.display()
        );
    }
    let dir = run_dir(&scenario, options.out.as_deref());
    prepare_run_dir(&dir)?;
    std::fs::write(
        dir.join("scenario.toml"),
        toml::to_string_pretty(&scenario).context("cannot serialize the resolved scenario")?,
    )?;
    match scenario.engine.mode {
        EngineMode::Inproc => run_inproc(&scenario, &dir, stop, |p| {
            on_progress(RunProgress::Inproc(p))
        })
        .map(|s| RunOutcome::Inproc(Box::new(s))),
        EngineMode::Bus => run_bus(&scenario, dir, transport, speed, stop, |p| {
            on_progress(RunProgress::Replay(p))
        })
        .map(|s| RunOutcome::Bus(Box::new(s))),
    }
}

/// The scenario's built-in strategies in this process (`[engine] mode = "inproc"`).
fn run_inproc(
    scenario: &Scenario,
    dir: &Path,
    stop: &Stop,
    on_progress: impl FnMut(crate::backtest::Progress),
) -> Result<BacktestSummary> {
    let mut builder = Backtest::builder()
        .name(&scenario.name)
        .dataset(scenario.data.dataset.get_ref())
        .selection(selection(scenario)?)
        .exchange(scenario.exchange.clone())
        .run_dir(dir)
        .mark_interval(scenario.replay.mark_interval()?)
        .starting_balance(scenario.account.starting_balance);
    for s in &scenario.strategies {
        let Some(name) = &s.builtin else {
            bail!(
                "strategy {:?} is a command; [engine] mode = \"inproc\" runs built-in strategies only",
                s.name
            );
        };
        let size = s
            .size
            .get_ref()
            .parse()
            .with_context(|| format!("strategy {:?}: bad size", s.name))?;
        builder = builder.boxed_strategy(
            &s.name,
            strategy::builtin(name.get_ref(), &s.venue, &s.symbol, size, &s.params())?,
        );
    }
    let summary = builder
        .build()?
        .run_with_progress(stop, on_progress)
        .with_context(|| format!("run {:?} failed", scenario.name))?;
    Ok(summary)
}

/// The bus form: replay + exchange here, strategies as child processes in lockstep.
fn run_bus(
    scenario: &Scenario,
    dir: PathBuf,
    transport: Transport,
    speed: Speed,
    stop: &Stop,
    mut on_progress: impl FnMut(replay::Progress<'_>),
) -> Result<RunSummary> {
    // Short ipc paths: a Unix socket path must stay under ~100 bytes.
    let tag = format!(
        "{}-{}",
        std::process::id(),
        layout::format_ts(crate::event::now_nanos()).replace([':', '.'], "")
    );
    let sock_dir = std::env::temp_dir().join(format!("tt-{tag}"));
    {
        use std::os::unix::fs::DirBuilderExt;
        // Only this user may connect to the run's sockets.
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&sock_dir)
            .with_context(|| format!("cannot create socket directory {}", sock_dir.display()))?;
    }
    // Removed however this function ends (error, panic), not only on success.
    let _sock_dir_guard = RemoveOnDrop(sock_dir.clone());
    let bus = format!("ipc://{}", sock_dir.join("bus").display());
    let gateway = format!("ipc://{}", sock_dir.join("gw").display());
    // Over shared memory each strategy gets its own segment as descriptor 3, and both
    // its endpoints name it; the ZeroMQ bus stays bound for observers (heartbeats).
    let shm = match transport {
        Transport::Zmq => None,
        Transport::Shm => {
            let names: Vec<String> = scenario.strategies.iter().map(|s| s.name.clone()).collect();
            Some(crate::shm::Hub::create(
                &names,
                scenario.replay.ack_timeout()?,
            )?)
        }
    };
    let child_fds: Vec<Option<i32>> = match &shm {
        Some(hub) => hub.fds().into_iter().map(|(_, fd)| Some(fd)).collect(),
        None => vec![None; scenario.strategies.len()],
    };
    let shm_endpoint = format!("shm:fd={}", crate::shm::CHILD_FD);
    let (child_bus, child_gateway) = match transport {
        Transport::Zmq => (bus.clone(), gateway.clone()),
        Transport::Shm => (shm_endpoint.clone(), shm_endpoint),
    };

    let lookahead = scenario.replay.lookahead()?;
    let mark_interval = scenario.replay.mark_interval()?;
    let ack_timeout = scenario.replay.ack_timeout()?;
    let data = &scenario.data;
    let selection = selection(scenario)?;

    // With `own_core`, this thread moves onto the other CPUs before it starts the
    // exchange host's writer thread, and the replay takes the last one alone.
    let own_core = scenario
        .replay
        .own_core
        .then(crate::replay::cores::OwnCore::prepare)
        .transpose()?;
    let mut host = ExchangeHost::new(&ExchangeHostConfig {
        settings: scenario.exchange.clone(),
        run_dir: Some(dir.clone()),
    })?;

    // Strategy processes, each with its own gateway secret (in its environment, not on
    // its command line, which every local user can read).
    let tokens =
        crate::replay::Tokens::generate(scenario.strategies.iter().map(|s| s.name.as_str()));
    let exe = std::env::current_exe().context("cannot find the ticktape executable")?;
    // With `own_core`, the strategies keep off the replay thread's core.
    let others = own_core.as_ref().map(|o| o.split().others);
    let mut children = Children { procs: Vec::new() };
    for (s, segment_fd) in scenario.strategies.iter().zip(child_fds) {
        let lockstep_flag = if scenario.replay.lockstep {
            "--lockstep"
        } else {
            ""
        };
        let argv: Vec<String> = match (&s.builtin, &s.command) {
            (Some(b), _) => {
                let mut v = vec![
                    exe.display().to_string(),
                    "strategy".into(),
                    b.get_ref().clone(),
                    "--bus".into(),
                    child_bus.clone(),
                    "--gateway".into(),
                    child_gateway.clone(),
                    "--venue".into(),
                    s.venue.clone(),
                    "--symbol".into(),
                    s.symbol.clone(),
                    "--size".into(),
                    s.size.get_ref().clone(),
                    "--id".into(),
                    s.name.clone(),
                ];
                if scenario.replay.lockstep {
                    v.push("--lockstep".into());
                }
                v
            }
            (None, Some(cmd)) => cmd
                .get_ref()
                .iter()
                .map(|a| {
                    a.replace("{bus}", &child_bus)
                        .replace("{gateway}", &child_gateway)
                        .replace("{venue}", &s.venue)
                        .replace("{symbol}", &s.symbol)
                        .replace("{size}", s.size.get_ref())
                        .replace("{name}", &s.name)
                        .replace("{lockstep}", lockstep_flag)
                })
                .filter(|a| !a.is_empty())
                .collect(),
            (None, None) => bail!("strategy {:?} has neither builtin nor command", s.name),
        };
        let log = dir.join(format!("strategy-{}.log", s.name));
        let log_file = std::fs::File::create(&log)?;
        let token = tokens.get(&s.name).unwrap_or_default();
        let mut command = Command::new(&argv[0]);
        if let Some(fd) = segment_fd {
            use std::os::unix::process::CommandExt;
            // SAFETY: `inherit_as` calls only dup2/fcntl, async-signal-safe between fork
            // and exec, on a descriptor this process holds open until the child started.
            unsafe {
                command.pre_exec(move || crate::shm::inherit_as(fd, crate::shm::CHILD_FD));
            }
        }
        if let Some(others) = others {
            use std::os::unix::process::CommandExt;
            // SAFETY: `apply` is one system call, async-signal-safe between fork and exec.
            unsafe {
                command.pre_exec(move || others.apply());
            }
        }
        if scenario.replay.busy_poll {
            command.env(
                crate::shm::SPIN_ENV,
                crate::shm::BUSY_POLL_SPIN_US.to_string(),
            );
        }
        let child = command
            .args(&argv[1..])
            .env(crate::replay::gateway::TOKEN_ENV, token)
            .env(strategy::PARAMS_ENV, s.params().to_json())
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("cannot start strategy {:?}: {}", s.name, argv.join(" ")))?;
        children.procs.push((s.name.clone(), child, log));
    }
    if scenario.replay.busy_poll {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        match others {
            Some(o) if scenario.strategies.len() > o.count => eprintln!(
                "warning: replay.busy_poll: {} polling strategies on the {} cores own_core leaves them: they share cores and run late (fewer strategies, or busy_poll = false)",
                scenario.strategies.len(),
                o.count
            ),
            None if scenario.strategies.len() >= cores => eprintln!(
                "warning: replay.busy_poll: {} polling strategies and the replay on {cores} cores: a strategy will share its core with the replay, and both run late (fewer strategies, or busy_poll = false)",
                scenario.strategies.len()
            ),
            _ => {}
        }
    }

    // A watchdog stops the replay as soon as a strategy dies, or on Ctrl-C.
    let run_stop = Stop::new();
    let failure: Arc<Mutex<Option<Crash>>> = Arc::default();
    let children = Arc::new(Mutex::new(children));
    let finished = Stop::new();
    let watchdog = {
        // The watchdog only borrows the children (a weak reference): if this thread
        // unwinds, the last strong reference goes and `Children::drop` ends them.
        let (run_stop, failure, children, finished, stop) = (
            run_stop.clone(),
            failure.clone(),
            Arc::downgrade(&children),
            finished.clone(),
            stop.clone(),
        );
        std::thread::spawn(move || {
            while !finished.is_set() {
                if stop.is_set() {
                    run_stop.set();
                }
                let Some(children) = children.upgrade() else {
                    return;
                };
                if let Ok(mut c) = children.lock()
                    && let Some(f) = c.failed()
                {
                    *failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(f);
                    run_stop.set();
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };

    let lockstep = if scenario.replay.lockstep {
        scenario.strategies.len()
    } else {
        0
    };
    let config = ReplayConfig {
        dataset: data.dataset.get_ref().clone(),
        selection,
        speed,
        bind: vec![bus],
        // Over shared memory the replay waits for every strategy's hello instead.
        wait_for: if shm.is_some() {
            0
        } else {
            scenario.strategies.len()
        },
        wait_timeout: Duration::from_secs(60),
        gateway: Some(gateway),
        lockstep,
        lookahead,
        publisher_id: format!("run-{}", scenario.name),
        mark_interval,
        ack_timeout,
        encoding: scenario.replay.encoding,
        realtime: scenario.replay.realtime,
        own_core: scenario.replay.own_core,
        backup_publisher: scenario.replay.backup_publisher,
        pacing: scenario.replay.pacing,
        tokens,
        ..ReplayConfig::default()
    };
    let replay_result =
        replay::run_over(&config, shm, Some(&mut host), &run_stop, &mut on_progress);
    // A replay that failed because a strategy died (shared memory notices at once): give
    // the watchdog's check a moment, so the crash is reported as a crash.
    if replay_result.is_err() {
        for _ in 0..10 {
            if failure.lock().unwrap_or_else(|e| e.into_inner()).is_some() {
                break;
            }
            if let Ok(mut c) = children.lock()
                && let Some(f) = c.failed()
            {
                *failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(f);
                break;
            }
            std::thread::sleep(Duration::from_millis(30));
        }
    }

    // Stop watching before ending the children, so their end is not taken for a crash.
    finished.set();
    let _ = watchdog.join();
    // Let strategies see end-of-stream and exit on their own, then make sure they are gone.
    let mut exits = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut hung = Vec::new();
    if let Ok(mut c) = children.lock() {
        for (name, child, log) in &mut c.procs {
            let code = loop {
                match child.try_wait() {
                    Ok(Some(status)) => break status.code(),
                    Ok(None) if Instant::now() < deadline && replay_result.is_ok() => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    _ => {
                        let _ = child.kill();
                        let _ = child.wait();
                        hung.push(name.clone());
                        break None;
                    }
                }
            };
            exits.push(StrategyExit {
                name: name.clone(),
                code,
                log: log.clone(),
            });
        }
    }

    let interrupted = stop.is_set();
    let crashed = failure.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let replay_stats = match replay_result {
        Ok(stats) => stats,
        Err(e) => {
            if let Some((name, code, log)) = &crashed {
                bail!(
                    "strategy {name:?} exited with {} during the replay; last lines of {}:\n{}",
                    code.map_or("a signal".to_string(), |c| format!("code {c}")),
                    log.display(),
                    tail(log, 15)
                );
            }
            return Err(e.context(format!("run {:?} failed", scenario.name)));
        }
    };
    if let Some((name, code, log)) = crashed {
        bail!(
            "strategy {name:?} exited with {}; last lines of {}:\n{}",
            code.map_or("a signal".to_string(), |c| format!("code {c}")),
            log.display(),
            tail(&log, 15)
        );
    }
    let summary = RunSummary {
        scenario: scenario.name.clone(),
        starting_balance: scenario.account.starting_balance,
        digest: replay_stats.digest.clone(),
        replay: replay_stats,
        strategies: exits,
        interrupted,
        transport,
        run_dir: dir.clone(),
    };
    std::fs::write(
        dir.join("summary.json"),
        serde_json::to_string_pretty(&summary)?,
    )?;
    if !interrupted && !hung.is_empty() {
        bail!(
            "strategy {} did not exit after end-of-stream (hung?); results are in {}",
            hung.join(", "),
            dir.display()
        );
    }
    if let Some(bad) = summary
        .strategies
        .iter()
        .find(|s| s.code.is_some_and(|c| c != 0))
    {
        bail!(
            "strategy {:?} exited with code {:?}; see {}:\n{}",
            bad.name,
            bad.code,
            bad.log.display(),
            tail(&bad.log, 15)
        );
    }
    Ok(summary)
}
