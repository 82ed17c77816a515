//! Integration tests: one binary (so polars is linked once) with a module per area.

mod backtest;
mod fuzz;
mod inproc;
mod record;
mod replay;
mod util;
