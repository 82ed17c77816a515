//! In-process backtests: the recorded data, the simulated exchange and Rust strategies in
//! one process, the exchange and the strategies on one thread (the Parquet decoding runs
//! ahead on a second, [`crate::store::ReadAhead`]), with the same fills as a bus lockstep
//! run of the same strategies (see [`engine`] for the order of calls that makes it so).
//!
//! Owns the builder a user's own crate calls ([`Backtest::builder`]), the loop, and the
//! run directory it writes (`orders`/`fills`/`marks.parquet`, `summary.json`), which
//! `ticktape report` reads like any other run. Never opens a socket.
//!
//! ```no_run
//! use ticktape::backtest::Backtest;
//! use ticktape::exchange::ExchangeSettings;
//! use ticktape::strategy::examples::MarketMaker;
//!
//! let summary = Backtest::builder()
//!     .dataset("data/binance-spot")
//!     .exchange(ExchangeSettings::default())
//!     .strategy("mm", MarketMaker::new("binance", "BTCUSDT", "0.01".parse()?))
//!     .run_dir("runs/my-mm")
//!     .build()?
//!     .run(&ticktape::shutdown::Stop::new())?;
//! println!("{} fills, digest {}", summary.fills, summary.digest);
//! # anyhow::Ok(())
//! ```

pub mod engine;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use serde::Serialize;

use crate::exchange::{ExchangeSettings, RunCounts, RunWriter, SimExchange};
use crate::shutdown::Stop;
use crate::store::{EventReader, EventSource, Selection};
use crate::strategy::{Dispatcher, Strategy};

pub use engine::EngineStats;
use engine::{Engine, Seat};

/// A setup the builder refuses, naming the missing or wrong part.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A required part was not given.
    #[error("backtest setup incomplete: no {0} given (call .{0}(…) on the builder)")]
    Missing(&'static str),
    /// Two strategies share a name (names key fills and reports).
    #[error("two strategies are named {0:?}: strategy names must be unique")]
    DuplicateStrategy(String),
    /// The dataset does not exist.
    #[error(
        "dataset {0} does not exist (import or record one first: `ticktape import`, `ticktape record`)"
    )]
    NoDataset(PathBuf),
}

/// Builds a [`Backtest`]; [`BacktestBuilder::build`] refuses an incomplete setup.
#[derive(Default)]
pub struct BacktestBuilder {
    dataset: Option<PathBuf>,
    selection: Selection,
    exchange: Option<ExchangeSettings>,
    strategies: Vec<(String, Box<dyn Strategy>)>,
    run_dir: Option<PathBuf>,
    mark_interval: Option<Duration>,
    timer: Option<Duration>,
    starting_balance: f64,
    name: Option<String>,
    single_thread: bool,
}

impl BacktestBuilder {
    /// Decode the Parquet data on the engine's own thread instead of a second one (for a
    /// machine with one core, or a sweep that already keeps every core busy). The fills
    /// are the same either way.
    pub fn single_thread(mut self, yes: bool) -> Self {
        self.single_thread = yes;
        self
    }

    /// The dataset directory to replay (required).
    pub fn dataset(mut self, path: impl Into<PathBuf>) -> Self {
        self.dataset = Some(path.into());
        self
    }

    /// Which venues, symbols, kinds and time window to replay (default: everything).
    pub fn selection(mut self, selection: Selection) -> Self {
        self.selection = selection;
        self
    }

    /// The exchange models (required; `ExchangeSettings::default()` is a valid choice).
    pub fn exchange(mut self, settings: ExchangeSettings) -> Self {
        self.exchange = Some(settings);
        self
    }

    /// Adds a strategy under `name` (the prefix of its client order ids; at least one).
    pub fn strategy(mut self, name: &str, strategy: impl Strategy + 'static) -> Self {
        self.strategies.push((name.to_string(), Box::new(strategy)));
        self
    }

    /// Adds an already boxed strategy under `name`.
    pub fn boxed_strategy(mut self, name: &str, strategy: Box<dyn Strategy>) -> Self {
        self.strategies.push((name.to_string(), strategy));
        self
    }

    /// The run directory for `orders`/`fills`/`marks.parquet` and `summary.json`
    /// (required; created if missing, its previous run files replaced).
    pub fn run_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.run_dir = Some(dir.into());
        self
    }

    /// Simulated time between marks (default 1 s).
    pub fn mark_interval(mut self, every: Duration) -> Self {
        self.mark_interval = Some(every);
        self
    }

    /// Event time between `on_timer` calls (default 1 s).
    pub fn timer(mut self, every: Duration) -> Self {
        self.timer = Some(every);
        self
    }

    /// Starting balance in quote currency, for the report (default 0).
    pub fn starting_balance(mut self, balance: f64) -> Self {
        self.starting_balance = balance;
        self
    }

    /// The run's name in `summary.json` (default: the run directory's name).
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.to_string());
        self
    }

    /// Checks the setup: dataset, exchange, at least one strategy with unique names, run
    /// directory.
    pub fn build(self) -> Result<Backtest, BuildError> {
        let dataset = self.dataset.ok_or(BuildError::Missing("dataset"))?;
        if !dataset.exists() {
            return Err(BuildError::NoDataset(dataset));
        }
        let exchange = self.exchange.ok_or(BuildError::Missing("exchange"))?;
        if self.strategies.is_empty() {
            return Err(BuildError::Missing("strategy"));
        }
        for (i, (name, _)) in self.strategies.iter().enumerate() {
            if self.strategies[..i].iter().any(|(n, _)| n == name) {
                return Err(BuildError::DuplicateStrategy(name.clone()));
            }
        }
        let run_dir = self.run_dir.ok_or(BuildError::Missing("run_dir"))?;
        let name = self.name.unwrap_or_else(|| {
            run_dir
                .file_name()
                .map_or("backtest".into(), |n| n.to_string_lossy().into_owned())
        });
        Ok(Backtest {
            dataset,
            selection: self.selection,
            exchange,
            strategies: self.strategies,
            run_dir,
            mark_interval: self.mark_interval.unwrap_or(Duration::from_secs(1)),
            timer: self.timer.unwrap_or(Duration::from_secs(1)),
            starting_balance: self.starting_balance,
            name,
            single_thread: self.single_thread,
        })
    }
}

/// A checked in-process backtest, ready to [`Backtest::run`].
pub struct Backtest {
    dataset: PathBuf,
    selection: Selection,
    exchange: ExchangeSettings,
    strategies: Vec<(String, Box<dyn Strategy>)>,
    run_dir: PathBuf,
    mark_interval: Duration,
    timer: Duration,
    starting_balance: f64,
    name: String,
    single_thread: bool,
}

/// What an in-process backtest did; also written as the run's `summary.json`.
#[derive(Clone, Debug, Serialize)]
pub struct BacktestSummary {
    /// Run name.
    pub scenario: String,
    /// Always `inproc`.
    pub engine: &'static str,
    /// Starting balance (quote currency), for the report.
    pub starting_balance: f64,
    /// Digest of all fills: equal inputs give equal digests, in-process or over the bus.
    pub digest: String,
    /// Fills.
    pub fills: u64,
    /// Rows written to the run files.
    pub rows: Option<RunCounts>,
    /// Engine counters (the bus form's `replay` block holds the same events/gaps/range).
    pub replay: EngineStats,
    /// Wall seconds of the loop (reading included).
    pub elapsed_secs: f64,
    /// True when stopped early.
    pub interrupted: bool,
    /// The run directory.
    pub run_dir: PathBuf,
}

/// Live progress for a progress bar: events so far, out of about how many.
pub struct Progress {
    /// Events so far.
    pub events: u64,
    /// Rows the selection covers (estimate from file metadata).
    pub estimate: u64,
    /// Current event time.
    pub ts: crate::event::UnixNanos,
}

impl Backtest {
    /// A builder.
    pub fn builder() -> BacktestBuilder {
        BacktestBuilder::default()
    }

    /// Runs to the end of the data (or `stop`) and writes the run directory.
    pub fn run(self, stop: &Stop) -> Result<BacktestSummary> {
        self.run_with_progress(stop, |_| {})
    }

    /// [`Backtest::run`], calling `on_progress` about every 65,536 events.
    pub fn run_with_progress(
        self,
        stop: &Stop,
        mut on_progress: impl FnMut(Progress),
    ) -> Result<BacktestSummary> {
        let reader = EventReader::open(&self.dataset, self.selection.clone())
            .with_context(|| format!("cannot open dataset {}", self.dataset.display()))?;
        if reader.files().is_empty() {
            bail!(
                "nothing to replay in {}: no files match the selection (check venues/symbols/start/end; `ticktape inspect {}` lists what is there)",
                self.dataset.display(),
                self.dataset.display()
            );
        }
        let estimate = reader.row_estimate();
        let exchange = SimExchange::from_settings(&self.exchange)
            .context("cannot build the simulated exchange from the [exchange] settings")?;
        std::fs::create_dir_all(&self.run_dir)
            .with_context(|| format!("cannot create run directory {}", self.run_dir.display()))?;
        let writer = RunWriter::create(&self.run_dir)?;
        let seats = self
            .strategies
            .into_iter()
            .map(|(name, strategy)| Seat {
                strategy,
                dispatch: Dispatcher::new(&name, self.timer),
            })
            .collect();
        let mark_every = i64::try_from(self.mark_interval.as_nanos()).unwrap_or(i64::MAX);
        let mut engine = Engine::new(exchange, Some(writer), seats, mark_every);
        let started = Instant::now();
        let mut interrupted = false;
        // Parquet is decoded on a second thread while this one runs the exchange and the
        // strategies (or, single-threaded, a batch at a time on this one); the batches of
        // events are recycled, so neither allocates per event.
        let mut events = EventSource::batched(reader, !self.single_thread)?;
        'read: while let Some(batch) = events.next_events()? {
            for event in batch {
                engine.step(event)?;
                if engine.stats.events.is_multiple_of(65_536) {
                    if stop.is_set() {
                        interrupted = true;
                        break 'read;
                    }
                    on_progress(Progress {
                        events: engine.stats.events,
                        estimate,
                        ts: event.ts_recv,
                    });
                }
            }
        }
        let (digest, rows) = engine.finish()?;
        let summary = BacktestSummary {
            scenario: self.name,
            engine: "inproc",
            starting_balance: self.starting_balance,
            digest,
            fills: engine.exchange.fill_count(),
            rows,
            replay: engine.stats.clone(),
            elapsed_secs: started.elapsed().as_secs_f64(),
            interrupted,
            run_dir: self.run_dir.clone(),
        };
        write_summary(&self.run_dir, &summary)?;
        Ok(summary)
    }
}

fn write_summary(dir: &Path, summary: &BacktestSummary) -> Result<()> {
    let path = dir.join("summary.json");
    std::fs::write(&path, serde_json::to_string_pretty(summary)?)
        .with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_refuses_an_incomplete_setup_naming_the_missing_part() {
        let dir = tempfile::tempdir().unwrap();
        let mm = || {
            let params = crate::strategy::Params::default();
            crate::strategy::builtin("mm", "v", "s", "1".parse().unwrap(), &params).unwrap()
        };
        let err = |b: BacktestBuilder| b.build().err().unwrap().to_string();
        assert!(err(Backtest::builder()).contains("no dataset"));
        let with_data = || Backtest::builder().dataset(dir.path());
        assert!(err(with_data()).contains("no exchange"));
        let with_ex = || with_data().exchange(ExchangeSettings::default());
        assert!(err(with_ex()).contains("no strategy"));
        assert!(err(with_ex().boxed_strategy("a", mm())).contains("no run_dir"));
        let twice = with_ex()
            .boxed_strategy("a", mm())
            .boxed_strategy("a", mm());
        assert!(err(twice).contains("named \"a\""));
        let missing = Backtest::builder().dataset(dir.path().join("nope"));
        assert!(err(missing).contains("does not exist"));
        assert!(
            with_ex()
                .boxed_strategy("a", mm())
                .run_dir(dir.path().join("run"))
                .build()
                .is_ok()
        );
    }
}
