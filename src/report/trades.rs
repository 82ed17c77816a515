//! The trade list and markouts: every fill with the ledger's view of it, the mid price at
//! the fill and after it, and the mid moves averaged by strategy × side × liquidity.
//!
//! Owns the per-fill frame's layout ([`TRADE_COLUMNS`]), the markout rule, and the trade
//! list CSV. Never reads files: `metrics` hands it the fills (already through the ledger)
//! and the mids it found at and after each fill.
//!
//! Mids come from `marks.parquet`, so their resolution is the mark interval: the mid "at"
//! time `t` is the last mark at or before `t` of the fill's own (strategy, venue, symbol),
//! the mid its PnL is marked at (an as-of backward join by those three, done in `metrics`).
//! A horizon shorter than the mark interval would mostly compare a mark with itself, so
//! its markout is not computed (`null`, `n/a`); the others are accurate to about one mark
//! interval. A fill whose horizon reaches past the last mark of its symbol has no markout
//! at that horizon.

use std::collections::{BTreeMap, HashMap};

use polars::prelude::*;

use super::metrics::pl;
use super::render::format_interval;
use super::{MarkoutGroup, Markouts, Report, Result};

/// Markout horizons after each fill, ns: 100 ms, 1 s, 10 s.
pub const MARKOUT_HORIZONS_NS: [i64; 3] = [100_000_000, 1_000_000_000, 10_000_000_000];

/// Columns of the trade list CSV (`--trades`), in order.
pub const TRADE_COLUMNS: [&str; 20] = [
    "ts",
    "ts_ns",
    "strategy",
    "venue",
    "symbol",
    "order_id",
    "client_order_id",
    "fill_id",
    "side",
    "price",
    "size",
    "fee",
    "liquidity",
    "position_after",
    "realized_pnl",
    "mid_at_fill",
    "edge_bps",
    "markout_100ms_bps",
    "markout_1s_bps",
    "markout_10s_bps",
];

/// Signed so that positive is good for the strategy: `+1` for a buy, `−1` for a sell.
fn sign(side: &str) -> f64 {
    if side == "buy" { 1.0 } else { -1.0 }
}

/// Adds `mid_at_fill`, `edge_bps` and one `markout_<h>_bps` column per horizon to
/// `trades` and averages them by (strategy, venue, symbol, side, liquidity).
///
/// `mid_at[0][row]` is the mid at fill `row` of `trades`, `mid_at[i][row]` the mid
/// [`MARKOUT_HORIZONS_NS`]`[i − 1]` after it (see `metrics`); `mark_interval` is the median
/// mark spacing per (strategy, venue, symbol): horizons shorter than it get no markout.
pub(super) fn markouts(
    trades: &mut DataFrame,
    mut mid_at: Vec<Vec<Option<f64>>>,
    mark_interval: &HashMap<(String, String, String), i64>,
) -> Result<Markouts> {
    let what = "cannot compute markouts";
    let n = trades.height();
    let strs = |df: &DataFrame, name: &str| -> Result<Vec<String>> {
        let c = pl(what, df.column(name))?;
        let s = pl(what, c.str())?;
        Ok(s.iter().map(|v| v.unwrap_or_default().to_owned()).collect())
    };
    let f64s = |df: &DataFrame, name: &str| -> Result<Vec<Option<f64>>> {
        let c = pl(what, df.column(name))?;
        let c = pl(what, c.cast(&DataType::Float64))?;
        Ok(pl(what, c.f64())?.iter().collect())
    };
    let (strategy, venue, symbol) = (
        strs(trades, "strategy")?,
        strs(trades, "venue")?,
        strs(trades, "symbol")?,
    );
    let (side, liquidity) = (strs(trades, "side")?, strs(trades, "liquidity")?);
    let price = f64s(trades, "price")?;
    /// Sums and counts of one (strategy, venue, symbol, side, liquidity).
    #[derive(Default)]
    struct Acc {
        fills: u64,
        edge: (f64, u64),
        moves: [(f64, u64); MARKOUT_HORIZONS_NS.len()],
    }
    type GroupKey = (String, String, String, String, String);
    let mut groups: BTreeMap<GroupKey, Acc> = BTreeMap::new();
    let mut edge = Vec::with_capacity(n);
    let mut moves: Vec<Vec<Option<f64>>> = vec![Vec::with_capacity(n); MARKOUT_HORIZONS_NS.len()];
    for row in 0..n {
        let s = sign(&side[row]);
        let mid0 = mid_at[0][row].filter(|m| *m > 0.0);
        let e = mid0.zip(price[row]).map(|(m, p)| s * (m - p) / m * 1e4);
        let key = (
            strategy[row].clone(),
            venue[row].clone(),
            symbol[row].clone(),
            side[row].clone(),
            liquidity[row].clone(),
        );
        let interval = mark_interval
            .get(&(key.0.clone(), key.1.clone(), key.2.clone()))
            .copied();
        let g = groups.entry(key).or_default();
        g.fills += 1;
        if let Some(e) = e {
            g.edge.0 += e;
            g.edge.1 += 1;
        }
        edge.push(e);
        for (i, h) in MARKOUT_HORIZONS_NS.iter().enumerate() {
            // A horizon shorter than the mark interval would mostly compare a mark with itself.
            let resolved = interval.is_some_and(|m| *h >= m);
            let mv = match (resolved, mid0, mid_at[i + 1][row]) {
                (true, Some(m0), Some(m1)) => Some(s * (m1 - m0) / m0 * 1e4),
                _ => None,
            };
            if let Some(v) = mv {
                g.moves[i].0 += v;
                g.moves[i].1 += 1;
            }
            moves[i].push(mv);
        }
    }
    let mean = |(sum, k): (f64, u64)| (k > 0).then(|| sum / k as f64);
    let out_groups: Vec<MarkoutGroup> = groups
        .into_iter()
        .map(
            |((strategy, venue, symbol, side, liquidity), g)| MarkoutGroup {
                mark_interval_ns: mark_interval
                    .get(&(strategy.clone(), venue.clone(), symbol.clone()))
                    .copied(),
                strategy,
                venue,
                symbol,
                side,
                liquidity,
                fills: g.fills,
                edge_bps: mean(g.edge),
                markout_bps: g.moves.iter().map(|m| mean(*m)).collect(),
                markout_fills: g.moves.iter().map(|m| m.1).collect(),
            },
        )
        .collect();

    // Horizons finer than some key's marks, said once per horizon and market.
    let mut unresolved = Vec::new();
    for h in MARKOUT_HORIZONS_NS {
        let mut coarse: Vec<String> = out_groups
            .iter()
            .filter_map(|g| {
                let market = format!("{}/{}", g.venue, g.symbol);
                match g.mark_interval_ns {
                    Some(m) if m > h => {
                        Some(format!("{market} marks every {}", format_interval(m)))
                    }
                    None => Some(format!("{market} has no marks")),
                    Some(_) => None,
                }
            })
            .collect();
        coarse.sort();
        coarse.dedup();
        if !coarse.is_empty() {
            unresolved.push(format!("+{}: {}", format_interval(h), coarse.join(", ")));
        }
    }

    let mut cols = vec![
        Column::new("mid_at_fill".into(), std::mem::take(&mut mid_at[0])),
        Column::new("edge_bps".into(), edge),
    ];
    for (i, h) in MARKOUT_HORIZONS_NS.iter().enumerate() {
        cols.push(Column::new(
            format!("markout_{}_bps", format_interval(*h)).into(),
            std::mem::take(&mut moves[i]),
        ));
    }
    pl(what, trades.hstack_mut(&cols))?;

    let horizons = MARKOUT_HORIZONS_NS
        .iter()
        .map(|h| format_interval(*h))
        .collect();
    Ok(Markouts {
        horizons,
        horizons_ns: MARKOUT_HORIZONS_NS.to_vec(),
        unresolved,
        groups: out_groups,
    })
}

/// The trade list as CSV: header [`TRADE_COLUMNS`], one row per fill in time order.
/// `ts` is ISO 8601 UTC with nanoseconds; `price`, `size` and `position_after` are the
/// exact decimals; undefined values are empty cells.
pub fn render_trades_csv(r: &Report) -> String {
    let df = &r.trades;
    let cell = |name: &str, row: usize| -> String {
        let Ok(c) = df.column(name) else {
            return String::new();
        };
        match c.get(row) {
            Ok(AnyValue::Null) | Err(_) => String::new(),
            Ok(AnyValue::String(s)) => s.to_string(),
            Ok(AnyValue::StringOwned(s)) => s.to_string(),
            // Shortest text that reads back as the same f64 (polars' Display rounds).
            Ok(AnyValue::Float64(v)) => v.to_string(),
            Ok(v) => v.to_string(),
        }
    };
    let ts = df
        .column("ts")
        .ok()
        .and_then(|c| c.i64().ok().map(|s| s.iter().collect::<Vec<_>>()))
        .unwrap_or_default();
    let rows = ts.iter().enumerate().map(|(row, t)| {
        let iso = t
            .and_then(|t| jiff::Timestamp::from_nanosecond(i128::from(t)).ok())
            .map(|t| t.to_string())
            .unwrap_or_default();
        let mut cells = vec![iso, t.map(|t| t.to_string()).unwrap_or_default()];
        for name in &TRADE_COLUMNS[2..] {
            let source = match *name {
                "price" => "price_exact",
                "size" => "size_exact",
                other => other,
            };
            cells.push(cell(source, row));
        }
        cells
    });
    super::render::csv_document(&TRADE_COLUMNS, rows)
}
