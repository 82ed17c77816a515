//! Integration tests: one binary (so polars is linked once) with a module per area.

mod record;
mod replay;
mod util;
