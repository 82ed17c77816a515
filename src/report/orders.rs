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

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use super::agg::Kahan;
use super::input::{self, Id};
use super::{KeyOrderStats, OrderCounts, OrderStats, Result};

/// The final status of an order the exchange refused; such orders never rested, so their
/// size is left out of the ordered quantity.
pub(super) const REJECTED: &str = "rejected";

type Key = (String, String, String);

/// One order: its rows, and its final state.
struct Order {
    key: Key,
    updates: u64,
    status: Option<String>,
    size: Option<f64>,
    /// Its largest `filled`.
    filled: Option<f64>,
}

/// Reads `orders.parquet` at `path`; `None` when the file does not exist.
pub(super) fn order_stats(path: &Path) -> Result<Option<OrderStats>> {
    if !path.is_file() {
        return Ok(None);
    }
    let table = input::read(
        path,
        &[
            "ts", "strategy", "venue", "symbol", "order_id", "size", "filled", "status",
        ],
    )?;
    let ts = table.i64s("ts")?;
    let (strategy, venue, symbol) = (
        table.strs("strategy")?,
        table.strs("venue")?,
        table.strs("symbol")?,
    );
    let order_id = table.ids("order_id")?;
    let (size, filled) = (table.f64s("size")?, table.f64s("filled")?);
    let status = table.strs("status")?;
    drop(table);
    // Each order's rows by (ts, file order); its final state is the last of them.
    let mut rows: Vec<usize> = (0..ts.len()).collect();
    rows.sort_by_key(|&r| ts[r]);
    let mut index: HashMap<(Key, Id), usize> = HashMap::new();
    let mut orders: Vec<Order> = Vec::new();
    for r in rows {
        let key: Key = (
            strategy[r].clone().unwrap_or_default(),
            venue[r].clone().unwrap_or_default(),
            symbol[r].clone().unwrap_or_default(),
        );
        let i = *index
            .entry((key.clone(), order_id.get(r)))
            .or_insert_with(|| {
                orders.push(Order {
                    key,
                    updates: 0,
                    status: None,
                    size: None,
                    filled: None,
                });
                orders.len() - 1
            });
        let o = &mut orders[i];
        o.updates += 1;
        o.status = status[r].clone();
        o.size = size[r];
        if let Some(f) = filled[r] {
            o.filled = Some(o.filled.map_or(f, |m| m.max(f)));
        }
    }

    /// Sums of one key; quantities over orders not rejected, summed in the order of each
    /// order's first row (polars' query engine summed them in its hash table's order, which
    /// could change the last bit from one run to the next).
    #[derive(Default)]
    struct Sums {
        counts: OrderCounts,
        ordered: Kahan,
        filled: Kahan,
    }
    let mut per_key: BTreeMap<Key, Sums> = BTreeMap::new();
    for o in orders {
        let s = per_key.entry(o.key).or_default();
        s.counts.orders += 1;
        s.counts.updates += o.updates;
        if let Some(status) = &o.status
            && status != REJECTED
        {
            if let Some(v) = o.size {
                s.ordered.add(v);
            }
            if let Some(v) = o.filled {
                s.filled.add(v);
            }
        }
        *s.counts
            .by_status
            .entry(o.status.unwrap_or_default())
            .or_default() += 1;
    }
    let mut total = OrderCounts::default();
    let mut by_key = Vec::with_capacity(per_key.len());
    for ((strategy, venue, symbol), s) in per_key {
        let mut c = s.counts;
        c.ordered_qty = s.ordered.sum();
        c.filled_qty = s.filled.sum();
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
