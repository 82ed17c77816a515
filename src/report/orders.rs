//! Order statistics from `orders.parquet`, per (strategy, venue, symbol) and in total.
//!
//! `orders.parquet` has one row per order *state change* (new, partially filled, filled,
//! canceled, rejected, and a repeat of the final state when a cancel is refused). This
//! module reduces it to one row per order (its final state) before counting anything.
//! It reads that one file and never looks at fills or marks.
//!
//! An order is identified by (strategy, venue, symbol, `order_id`): the exchange gives every
//! submission its own `order_id`, including a refused one that reused a client order id, so
//! a rejected duplicate never overwrites the state of the order whose id it tried to reuse.
//! The final state is the order's last row by (`ts`, file order).

use std::collections::BTreeMap;
use std::path::Path;

use polars::prelude::*;

use super::metrics::{get_f64, get_str, pl, scan};
use super::{KeyOrderStats, OrderCounts, OrderStats, Result};

const KEYS: [&str; 3] = ["strategy", "venue", "symbol"];

/// The final status of an order the exchange refused; such orders never rested, so their
/// size is left out of the ordered quantity.
pub(super) const REJECTED: &str = "rejected";

/// Reads `orders.parquet` at `path`; `None` when the file does not exist.
pub(super) fn order_stats(path: &Path) -> Result<Option<OrderStats>> {
    if !path.is_file() {
        return Ok(None);
    }
    let what = format!("cannot read {}", path.display());
    let keys = || KEYS.map(col);
    let per_order = scan(path)?
        .select([
            col("ts").cast(DataType::Int64),
            col("strategy"),
            col("venue"),
            col("symbol"),
            col("order_id"),
            col("size"),
            col("filled"),
            col("status"),
        ])
        .with_row_index("row", None)
        .sort_by_exprs(
            [col("ts"), col("row")],
            SortMultipleOptions::default().with_maintain_order(true),
        )
        .group_by([
            col("strategy"),
            col("venue"),
            col("symbol"),
            col("order_id"),
        ])
        .agg([
            len().alias("updates"),
            col("status").last().alias("status"),
            col("size").last().alias("size"),
            col("filled").max().alias("filled"),
        ])
        .cache();
    let by_status = per_order
        .clone()
        .group_by([col("strategy"), col("venue"), col("symbol"), col("status")])
        .agg([len().alias("n")]);
    let live = col("status").neq(lit(REJECTED));
    let sums = per_order.group_by(keys()).agg([
        len().alias("orders"),
        col("updates").sum().alias("updates"),
        col("size").filter(live.clone()).sum().alias("ordered_qty"),
        col("filled").filter(live).sum().alias("filled_qty"),
    ]);
    let opt = sums.get_current_optimizations();
    let mut out = pl(
        &what,
        LazyFrame::collect_all_with_engine(
            vec![by_status.logical_plan, sums.logical_plan],
            Engine::Auto,
            opt,
        ),
    )?;
    let sums = out.pop().unwrap_or_default();
    let by_status = out.pop().unwrap_or_default();

    type Key = (String, String, String);
    let key_at = |df: &DataFrame, row: usize| -> Key {
        (
            get_str(df, "strategy", row),
            get_str(df, "venue", row),
            get_str(df, "symbol", row),
        )
    };
    let mut per_key: BTreeMap<Key, OrderCounts> = BTreeMap::new();
    for row in 0..sums.height() {
        let c = per_key.entry(key_at(&sums, row)).or_default();
        c.orders = get_f64(&sums, "orders", row).unwrap_or(0.0) as u64;
        c.updates = get_f64(&sums, "updates", row).unwrap_or(0.0) as u64;
        c.ordered_qty = get_f64(&sums, "ordered_qty", row).unwrap_or(0.0);
        c.filled_qty = get_f64(&sums, "filled_qty", row).unwrap_or(0.0);
    }
    for row in 0..by_status.height() {
        let n = get_f64(&by_status, "n", row).unwrap_or(0.0) as u64;
        per_key
            .entry(key_at(&by_status, row))
            .or_default()
            .by_status
            .insert(get_str(&by_status, "status", row), n);
    }
    let mut total = OrderCounts::default();
    let mut by_key = Vec::with_capacity(per_key.len());
    for ((strategy, venue, symbol), mut c) in per_key {
        c.fill_ratio = fill_ratio(c.filled_qty, c.ordered_qty);
        total.orders += c.orders;
        total.updates += c.updates;
        total.ordered_qty += c.ordered_qty;
        total.filled_qty += c.filled_qty;
        for (status, n) in &c.by_status {
            *total.by_status.entry(status.clone()).or_default() += n;
        }
        by_key.push(KeyOrderStats {
            strategy,
            venue,
            symbol,
            counts: c,
        });
    }
    total.fill_ratio = fill_ratio(total.filled_qty, total.ordered_qty);
    Ok(Some(OrderStats { total, by_key }))
}

fn fill_ratio(filled: f64, ordered: f64) -> Option<f64> {
    (ordered > 0.0).then(|| filled / ordered)
}
