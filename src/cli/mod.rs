//! The command line's layer over the library, one file per command: its clap arguments
//! (whose doc comments are the help text) and its body, which builds a config, calls the
//! library, and prints progress and a summary. [`args`] holds flag groups several
//! commands share, [`progress`] the status lines and summaries they draw.

pub mod args;
pub mod book;
pub mod feed;
pub mod import;
pub mod inspect;
pub mod paper;
pub mod progress;
pub mod record;
pub mod recover;
pub mod replay;
pub mod report;
pub mod run;
pub mod simulate;
pub mod strategy;
pub mod sweep;
