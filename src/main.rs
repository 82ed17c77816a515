//! The `ticktape` command line: parse arguments, hand each command to its file under
//! [`cli`] (which builds a config, calls the library, shows progress), map errors to exit
//! codes. No logic lives here.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cli;

use cli::{
    book::BookArgs, feed::FeedArgs, import::ImportArgs, inspect::InspectArgs, paper::PaperArgs,
    record::RecordArgs, recover::RecoverArgs, replay::ReplayArgs, report::ReportArgs, run::RunArgs,
    simulate::SimulateArgs, strategy::StrategyArgs, sweep::SweepArgs,
};

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

fn main() -> ExitCode {
    // Nothing ticktape writes is group- or world-writable, whatever the umask says.
    ticktape::store::files::restrict_umask();
    let result = match Cli::parse().command {
        Command::Simulate(a) => cli::simulate::run(a),
        Command::Record(a) => cli::record::run(a),
        Command::Inspect(a) => cli::inspect::run(a),
        Command::Recover(a) => cli::recover::run(a),
        Command::Replay(a) => cli::replay::run(a),
        Command::Strategy(a) => cli::strategy::run(a),
        Command::Run(a) => cli::run::run(a),
        Command::Sweep(a) => cli::sweep::run(a),
        Command::Import(a) => cli::import::run(a),
        Command::Book(a) => cli::book::run(a),
        Command::Feed(a) => cli::feed::run(a),
        Command::Report(a) => cli::report::run(a),
        Command::Paper(a) => cli::paper::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
