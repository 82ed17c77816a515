//! Integration tests: one binary (so polars is linked once) with a module per area.

mod alloc;
mod backtest;
mod chaos;
mod cli;
mod fuzz;
mod inproc;
mod modes;
mod nats;
mod python_client;
mod record;
mod replay;
mod shm;
mod util;
mod verify;
