//! End-to-end tests: hand-built run directories written as real Parquet files, then
//! [`compute`] and the renderers, with every expected number worked out by hand below.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow_array::{
    ArrayRef, Float64Array, RecordBatch, StringArray, TimestampNanosecondArray, UInt64Array,
};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use super::*;

const S: i64 = 1_000_000_000;
/// 2024-01-01 00:00:00 UTC.
const T0: i64 = 1_704_067_200 * S;

/// A named column of a test file.
type Column = (String, ArrayRef);

fn ts_col(name: &str, secs: &[i64]) -> Column {
    let ns: Vec<i64> = secs.iter().map(|s| T0 + s * S).collect();
    (
        name.into(),
        Arc::new(TimestampNanosecondArray::from(ns).with_timezone("UTC")),
    )
}

fn str_col(name: &str, v: &[&str]) -> Column {
    (name.into(), Arc::new(StringArray::from(v.to_vec())))
}

fn null_str_col(name: &str, n: usize) -> Column {
    (
        name.into(),
        Arc::new(StringArray::from(vec![None::<&str>; n])),
    )
}

fn f64_col(name: &str, v: &[f64]) -> Column {
    (name.into(), Arc::new(Float64Array::from(v.to_vec())))
}

fn u64_col(name: &str, v: &[u64]) -> Column {
    (name.into(), Arc::new(UInt64Array::from(v.to_vec())))
}

fn write_parquet(path: &Path, columns: Vec<Column>) {
    let batch = RecordBatch::try_from_iter(columns).expect("batch");
    let file = File::create(path).expect("create parquet");
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .build();
    let mut writer = ArrowWriter::try_new(file, batch.schema(), Some(props)).expect("writer");
    writer.write(&batch).expect("write parquet");
    writer.close().expect("close parquet");
}

struct HandFill {
    secs: i64,
    strategy: &'static str,
    symbol: &'static str,
    side: &'static str,
    price: f64,
    size: &'static str,
    fee: f64,
    liquidity: &'static str,
}

fn write_fills(dir: &Path, fills: &[HandFill]) {
    let n = fills.len();
    let secs: Vec<i64> = fills.iter().map(|f| f.secs).collect();
    let ids: Vec<u64> = (1..=n as u64).collect();
    let sizes: Vec<f64> = fills
        .iter()
        .map(|f| f.size.parse().expect("size"))
        .collect();
    let prices: Vec<f64> = fills.iter().map(|f| f.price).collect();
    let price_exact: Vec<String> = prices.iter().map(|p| p.to_string()).collect();
    let coids: Vec<String> = ids.iter().map(|i| format!("c{i}")).collect();
    write_parquet(
        &dir.join("fills.parquet"),
        vec![
            ts_col("ts", &secs),
            str_col(
                "strategy",
                &fills.iter().map(|f| f.strategy).collect::<Vec<_>>(),
            ),
            str_col("venue", &vec!["sim"; n]),
            str_col(
                "symbol",
                &fills.iter().map(|f| f.symbol).collect::<Vec<_>>(),
            ),
            u64_col("order_id", &ids),
            str_col(
                "client_order_id",
                &coids.iter().map(String::as_str).collect::<Vec<_>>(),
            ),
            u64_col("fill_id", &ids),
            str_col("side", &fills.iter().map(|f| f.side).collect::<Vec<_>>()),
            f64_col("price", &prices),
            f64_col("size", &sizes),
            str_col(
                "price_exact",
                &price_exact.iter().map(String::as_str).collect::<Vec<_>>(),
            ),
            str_col(
                "size_exact",
                &fills.iter().map(|f| f.size).collect::<Vec<_>>(),
            ),
            f64_col("fee", &fills.iter().map(|f| f.fee).collect::<Vec<_>>()),
            str_col(
                "liquidity",
                &fills.iter().map(|f| f.liquidity).collect::<Vec<_>>(),
            ),
        ],
    );
}

fn write_marks(dir: &Path, rows: &[(i64, &str, &str, f64, f64)]) {
    write_parquet(
        &dir.join("marks.parquet"),
        vec![
            ts_col("ts", &rows.iter().map(|r| r.0).collect::<Vec<_>>()),
            str_col("strategy", &rows.iter().map(|r| r.1).collect::<Vec<_>>()),
            str_col("venue", &vec!["sim"; rows.len()]),
            str_col("symbol", &rows.iter().map(|r| r.2).collect::<Vec<_>>()),
            f64_col("mid", &rows.iter().map(|r| r.3).collect::<Vec<_>>()),
            f64_col("position", &rows.iter().map(|r| r.4).collect::<Vec<_>>()),
        ],
    );
}

fn fill(
    secs: i64,
    (strategy, symbol): (&'static str, &'static str),
    side: &'static str,
    price: f64,
    size: &'static str,
    fee: f64,
    liquidity: &'static str,
) -> HandFill {
    HandFill {
        secs,
        strategy,
        symbol,
        side,
        price,
        size,
        fee,
        liquidity,
    }
}

/// Two books:
///
/// `a/sim/BTC` (long, partial close, flip through zero, back to flat):
/// - t1 buy 1@100 fee .1 and buy 1@100 fee .1 (same instant) → long 2 @ 100
/// - t3 sell 1@110 rebate .05 (maker) → realized +10, long 1 @ 100
/// - t5 sell 3@105 fee .3 → closes 1 (+5, realized 15), flips to short 2 @ 105
/// - t7 buy 2@108 fee .2 → closes short (−6, realized 9), flat
///
/// `b/sim/ETH` (short, partial cover, add, open at the end):
/// - t2 sell 4@50 rebate .02 (maker) → short 4 @ 50
/// - t4 buy 1@45 fee .05 → realized +5, short 3 @ 50
/// - t6 sell 1@48 fee .05 → short 4 @ (3·50 + 48)/4 = 49.5
fn hand_fills() -> Vec<HandFill> {
    vec![
        fill(1, ("a", "BTC"), "buy", 100.0, "1", 0.1, "taker"),
        fill(1, ("a", "BTC"), "buy", 100.0, "1", 0.1, "taker"),
        fill(2, ("b", "ETH"), "sell", 50.0, "4", -0.02, "maker"),
        fill(3, ("a", "BTC"), "sell", 110.0, "1", -0.05, "maker"),
        fill(4, ("b", "ETH"), "buy", 45.0, "1", 0.05, "taker"),
        fill(5, ("a", "BTC"), "sell", 105.0, "3", 0.3, "taker"),
        fill(6, ("b", "ETH"), "sell", 48.0, "1", 0.05, "taker"),
        fill(7, ("a", "BTC"), "buy", 108.0, "2", 0.2, "taker"),
    ]
}

const BTC_MID: [f64; 9] = [
    100.0, 100.0, 104.0, 110.0, 106.0, 105.0, 110.0, 108.0, 108.0,
];
const BTC_POS: [f64; 9] = [0.0, 2.0, 2.0, 1.0, 1.0, -2.0, -2.0, 0.0, 0.0];
const ETH_MID: [f64; 9] = [50.0, 50.0, 50.0, 48.0, 45.0, 46.0, 48.0, 49.0, 47.0];
const ETH_POS: [f64; 9] = [0.0, 0.0, -4.0, -4.0, -3.0, -3.0, -4.0, -4.0, -4.0];

/// Net PnL per mark, worked out by hand from the fills above:
/// BTC: 0, −.2, 7.8, 19.85, 15.85, 14.55, 4.55, 8.35, 8.35
/// ETH: 0, 0, .02, 8.02, 19.97, 16.97, 10.92, 6.92, 14.92
const TOTAL_PNL: [f64; 9] = [0.0, -0.2, 7.82, 27.87, 35.82, 31.52, 15.47, 15.27, 23.27];

fn hand_run(dir: &Path, with_extras: bool) {
    write_fills(dir, &hand_fills());
    let mut marks = Vec::new();
    for t in 0..9 {
        marks.push((t as i64, "a", "BTC", BTC_MID[t], BTC_POS[t]));
        marks.push((t as i64, "b", "ETH", ETH_MID[t], ETH_POS[t]));
    }
    write_marks(dir, &marks);
    if with_extras {
        std::fs::write(
            dir.join("summary.json"),
            r#"{"starting_balance": 1000, "scenario": "hand", "kept": [1, 2]}"#,
        )
        .expect("summary");
        write_orders(dir);
    }
}

/// One row per order state change, as the exchange writes them (`order_id`, strategy,
/// symbol, client order id, size, filled, status), at second `ts`:
///
/// - order 1 (a/BTC): new → partially filled → filled 2 of 2
/// - order 2 (b/ETH): new → filled 4 of 4
/// - order 3 (a/BTC): new → partially filled 1 → canceled; the cancel row comes first in
///   the file but later in time, and a refused cancel repeats the final state at t7
/// - order 4 (a/BTC): rejected (it reused client order id c3)
/// - order 5 (b/ETH): new, still open (3 ordered, none filled)
/// - order 6 (b/ETH): new → partially filled 0.5 of 2, still open
///
/// Six orders from 13 rows: filled 2, canceled 1, rejected 1, new 1, partially filled 1.
/// Ordered quantity without the rejected order: a 2 + 2 = 4, b 4 + 3 + 2 = 9; filled:
/// a 2 + 1 = 3, b 4 + 0 + 0.5 = 4.5; fill ratio a 3/4, b 4.5/9, total 7.5/13.
type OrderRow = (i64, &'static str, u64, &'static str, f64, f64, &'static str);
const ORDER_ROWS: [OrderRow; 13] = [
    (1, "a", 1, "c1", 2.0, 0.0, "new"),
    (1, "a", 1, "c1", 2.0, 1.0, "partially_filled"),
    (1, "a", 1, "c1", 2.0, 2.0, "filled"),
    (2, "b", 2, "c2", 4.0, 0.0, "new"),
    (2, "b", 2, "c2", 4.0, 4.0, "filled"),
    (3, "a", 3, "c3", 2.0, 0.0, "new"),
    (4, "a", 3, "c3", 2.0, 1.0, "canceled"),
    (3, "a", 3, "c3", 2.0, 1.0, "partially_filled"),
    (4, "a", 4, "c3", 1.0, 0.0, "rejected"),
    (5, "b", 5, "c5", 3.0, 0.0, "new"),
    (6, "b", 6, "c6", 2.0, 0.0, "new"),
    (6, "b", 6, "c6", 2.0, 0.5, "partially_filled"),
    (7, "a", 3, "c3", 2.0, 1.0, "canceled"),
];

fn write_orders(dir: &Path) {
    let rows = &ORDER_ROWS;
    let n = rows.len();
    let symbol = |s: &str| if s == "a" { "BTC" } else { "ETH" };
    write_parquet(
        &dir.join("orders.parquet"),
        vec![
            ts_col("ts", &rows.iter().map(|r| r.0).collect::<Vec<_>>()),
            str_col("strategy", &rows.iter().map(|r| r.1).collect::<Vec<_>>()),
            str_col("venue", &vec!["sim"; n]),
            str_col(
                "symbol",
                &rows.iter().map(|r| symbol(r.1)).collect::<Vec<_>>(),
            ),
            u64_col("order_id", &rows.iter().map(|r| r.2).collect::<Vec<_>>()),
            str_col(
                "client_order_id",
                &rows.iter().map(|r| r.3).collect::<Vec<_>>(),
            ),
            str_col("side", &vec!["buy"; n]),
            str_col("order_type", &vec!["limit"; n]),
            str_col("tif", &vec!["gtc"; n]),
            f64_col("price", &vec![100.0; n]),
            f64_col("size", &rows.iter().map(|r| r.4).collect::<Vec<_>>()),
            f64_col("filled", &rows.iter().map(|r| r.5).collect::<Vec<_>>()),
            str_col("status", &rows.iter().map(|r| r.6).collect::<Vec<_>>()),
            null_str_col("reason", n),
        ],
    );
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * (1.0 + a.abs().max(b.abs()))
}

macro_rules! assert_close {
    ($a:expr, $b:expr) => {{
        let (a, b): (f64, f64) = ($a, $b);
        assert!(close(a, b), "{} = {a}, expected {b}", stringify!($a));
    }};
}

fn key<'a>(r: &'a Report, strategy: &str) -> &'a Metrics {
    &r.by_key
        .iter()
        .find(|k| k.strategy == strategy)
        .expect("key present")
        .metrics
}

#[test]
fn hand_built_run_matches_hand_computed_pnl() {
    let dir = tempfile::tempdir().expect("tempdir");
    hand_run(dir.path(), true);
    let r = compute(dir.path(), &ReportOptions::default()).expect("report");

    assert_eq!(r.scenario.as_deref(), Some("hand"));
    assert_eq!(r.starting_balance, 1000.0);
    assert_eq!(r.start_ns, Some(T0));
    assert_eq!(r.end_ns, Some(T0 + 8 * S));
    assert_eq!(r.interval_ns, 60 * S);
    assert_eq!(r.mark_interval_ns, Some(S));
    assert_close!(r.periods_per_year, 525_600.0);
    assert_eq!(r.by_key.len(), 2);

    let a = key(&r, "a");
    assert_close!(a.realized_pnl, 9.0);
    assert_close!(a.fees, 0.65);
    assert_close!(a.unrealized_pnl, 0.0);
    assert_close!(a.net_pnl, 8.35);
    assert_close!(a.turnover, 100.0 + 100.0 + 110.0 + 315.0 + 216.0);
    assert_eq!((a.trades, a.closing_trades, a.winning_trades), (5, 3, 2));
    assert_eq!(a.round_trips, 2);
    assert_close!(a.avg_holding_secs.expect("hold"), 3.0); // (5−1 + 7−5) / 2
    assert_eq!((a.maker_trades, a.taker_trades), (1, 4));
    assert_close!(a.maker_notional, 110.0);
    assert_close!(a.maker_fees, -0.05);
    assert_close!(a.taker_fees, 0.7);
    assert_close!(a.final_position.expect("pos"), 0.0);
    assert_close!(a.max_drawdown, 19.85 - 4.55);
    assert_close!(a.mean_abs_position.expect("mean"), 10.0 / 9.0);
    assert_close!(a.max_abs_position.expect("max"), 2.0);
    assert_close!(a.time_weighted_abs_position.expect("twa"), 10.0 / 8.0);
    assert_eq!(a.marks, 9);
    assert_eq!(a.position_mismatches, 0);

    let b = key(&r, "b");
    assert_close!(b.realized_pnl, 5.0);
    assert_close!(b.fees, 0.08);
    assert_close!(b.unrealized_pnl, 10.0); // −4 × (47 − 49.5)
    assert_close!(b.net_pnl, 14.92);
    assert_close!(b.final_position.expect("pos"), -4.0);
    assert_eq!((b.trades, b.closing_trades, b.winning_trades), (3, 1, 1));
    assert_eq!(b.round_trips, 0);
    assert_eq!(b.avg_holding_secs, None);
    assert_close!(b.max_drawdown, 19.97 - 6.92);
    assert_close!(b.time_weighted_abs_position.expect("twa"), 22.0 / 8.0);

    let t = &r.total;
    assert_close!(t.realized_pnl, 14.0);
    assert_close!(t.fees, 0.73);
    assert_close!(t.unrealized_pnl, 10.0);
    assert_close!(t.net_pnl, 23.27);
    assert_close!(t.final_equity.expect("equity"), 1023.27);
    assert_eq!((t.trades, t.closing_trades, t.winning_trades), (8, 4, 3));
    assert_close!(t.win_rate.expect("win rate"), 0.75);
    assert_close!(t.avg_holding_secs.expect("hold"), 3.0);
    assert_close!(t.turnover, 1134.0);
    assert_close!(t.maker_share.expect("maker share"), 310.0 / 1134.0);
    // Peak 1035.82 at t4, trough 1015.27 at t7.
    assert_close!(t.max_drawdown, 20.55);
    assert_close!(t.max_drawdown_pct.expect("pct"), 20.55 / 1035.82 * 100.0);
    assert_close!(t.max_gross_notional.expect("gross"), 412.0);
    assert_close!(t.mean_gross_notional.expect("gross"), 2295.0 / 9.0);

    // Eight seconds of data: annualised ratios would be noise, so they are not shown.
    assert_eq!((t.sharpe, t.sortino, t.sharpe_stderr), (None, None, None));
    assert_eq!(
        r.ratios_unavailable.as_deref(),
        Some("8.0s of 1m returns (0 intervals); needs >= 1d of data and >= 30 return intervals")
    );

    assert_eq!(
        r.summary.as_ref().and_then(|s| s.get("kept")),
        Some(&serde_json::json!([1, 2]))
    );
}

#[test]
fn orders_are_counted_once_by_final_state_and_fill_ratio_is_by_quantity() {
    let dir = tempfile::tempdir().expect("tempdir");
    hand_run(dir.path(), true);
    let r = compute(dir.path(), &ReportOptions::default()).expect("report");
    let o = r.orders.as_ref().expect("orders");
    let t = &o.total;
    assert_eq!((t.orders, t.updates), (6, 13));
    let want: BTreeMap<String, u64> = [
        ("filled", 2),
        ("canceled", 1),
        ("rejected", 1),
        ("new", 1),
        ("partially_filled", 1),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(t.by_status, want);
    assert_close!(t.ordered_qty, 13.0);
    assert_close!(t.filled_qty, 7.5);
    assert_close!(t.fill_ratio.expect("ratio"), 7.5 / 13.0);

    assert_eq!(o.by_key.len(), 2);
    let a = &o.by_key[0];
    assert_eq!((a.strategy.as_str(), a.symbol.as_str()), ("a", "BTC"));
    assert_eq!((a.counts.orders, a.counts.updates), (3, 8));
    assert_eq!(a.counts.by_status.get("canceled"), Some(&1));
    assert_eq!(a.counts.by_status.get("rejected"), Some(&1));
    assert_close!(a.counts.fill_ratio.expect("ratio"), 0.75);
    let b = &o.by_key[1];
    assert_eq!((b.strategy.as_str(), b.counts.orders), ("b", 3));
    assert_eq!(b.counts.by_status.get("new"), Some(&1));
    assert_eq!(b.counts.by_status.get("partially_filled"), Some(&1));
    assert_close!(b.counts.fill_ratio.expect("ratio"), 0.5);

    let table = render_table(&r);
    let total = table
        .lines()
        .rev()
        .find(|l| l.starts_with("TOTAL"))
        .expect("orders TOTAL row");
    let cells: Vec<&str> = total.split_whitespace().collect();
    // orders, filled, open part-filled, open unfilled, canceled, rejected, other, ratio, rows
    assert_eq!(
        cells[1..],
        ["6", "2", "1", "1", "1", "1", "0", "57.7%", "13"],
        "{table}"
    );
    let json: serde_json::Value = serde_json::from_str(&render_json(&r)).expect("json");
    assert_eq!(json["orders"]["orders"], 6);
    assert_eq!(json["orders"]["by_key"][1]["orders"], 3);
}

#[test]
fn equity_curve_follows_hand_computed_points() {
    let dir = tempfile::tempdir().expect("tempdir");
    hand_run(dir.path(), true);
    // Enough chart points that no bucket merges two marks: the series is the curve itself.
    let opts = ReportOptions {
        chart_max_points: 100,
        ..ReportOptions::default()
    };
    let r = compute(dir.path(), &opts).expect("report");
    let got: Vec<f64> = r.series.equity.iter().map(|p| p.1).collect();
    let want: Vec<f64> = TOTAL_PNL.iter().map(|p| 1000.0 + p).collect();
    assert_eq!(got.len(), want.len(), "{got:?}");
    for (g, w) in got.iter().zip(&want) {
        assert_close!(*g, *w);
    }
    let dd_min = r.series.drawdown.iter().map(|p| p.1).fold(0.0, f64::min);
    assert_close!(dd_min, -20.55);
}

/// A fill after the last mark (t8): at t9 `a` sells 1 BTC at 90 (fee .1) from flat, so it is
/// short 1 @ 90, marked at the last BTC mid 108: unrealized −18. `a` ends at
/// 8.35 − 18 − .1 = −9.75 and the run at 1023.27 − 18.1 = 1005.17; the equity peak is still
/// 1035.82 (t4), so the drawdown is 1035.82 − 1005.17 = 30.65, not the 20.55 of the marks.
/// For `a` alone: peak 1000 + 19.85 (t3), final 990.25, drawdown 29.6 (15.3 over the marks).
#[test]
fn final_equity_after_the_last_mark_is_a_point_of_the_drawdown_curve() {
    let dir = tempfile::tempdir().expect("tempdir");
    hand_run(dir.path(), true);
    let mut fills = hand_fills();
    fills.push(fill(9, ("a", "BTC"), "sell", 90.0, "1", 0.1, "taker"));
    write_fills(dir.path(), &fills);
    let opts = ReportOptions {
        chart_max_points: 100,
        ..ReportOptions::default()
    };
    let r = compute(dir.path(), &opts).expect("report");
    let t = &r.total;
    assert_close!(t.net_pnl, 5.17);
    assert_close!(t.final_equity.expect("equity"), 1005.17);
    assert_close!(t.max_drawdown, 30.65);
    assert_close!(t.max_drawdown_pct.expect("pct"), 30.65 / 1035.82 * 100.0);
    let a = key(&r, "a");
    assert_close!(a.net_pnl, -9.75);
    assert_close!(a.max_drawdown, 29.6);
    // The drawn curves end at the final equity, at the time of the last fill.
    assert_eq!(r.series.equity.last().map(|p| p.0), Some(T0 + 9 * S));
    assert_close!(r.series.equity.last().expect("point").1, 1005.17);
    assert_close!(r.series.drawdown.last().expect("point").1, -30.65);
}

#[test]
fn missing_summary_and_orders_mean_zero_balance_and_no_order_stats() {
    let dir = tempfile::tempdir().expect("tempdir");
    hand_run(dir.path(), false);
    let r = compute(dir.path(), &ReportOptions::default()).expect("report");
    assert_eq!(r.starting_balance, 0.0);
    assert_eq!(r.orders, None);
    assert_eq!(r.scenario, None);
    assert_close!(r.total.final_equity.expect("equity"), 23.27);
    // No capital: the percent drawdown is relative to the PnL peak (35.82 at t4).
    assert_close!(r.total.max_drawdown, 20.55);
    assert_close!(
        r.total.max_drawdown_pct.expect("pct"),
        20.55 / 35.82 * 100.0
    );
}

/// Three days of hourly marks with holes (every hour `h` with `h % 7 == 3` is missing) of
/// one long position: bought 1 @ 100 at t0, fee 0, so the key's PnL is `mid − 100`.
fn long_run(dir: &Path, with_balance: bool) -> Vec<(i64, f64)> {
    const H: i64 = 3600;
    write_fills(
        dir,
        &[fill(0, ("a", "BTC"), "buy", 100.0, "1", 0.0, "taker")],
    );
    let marks: Vec<(i64, f64)> = (0..=72)
        .filter(|h| h % 7 != 3)
        .map(|h| (h * H, 100.0 + 5.0 * (h as f64 * 0.7).sin() + 0.1 * h as f64))
        .collect();
    let rows: Vec<(i64, &str, &str, f64, f64)> = marks
        .iter()
        .map(|&(t, mid)| (t, "a", "BTC", mid, 1.0))
        .collect();
    write_marks(dir, &rows);
    if with_balance {
        std::fs::write(dir.join("summary.json"), r#"{"starting_balance": 1000}"#).expect("summary");
    }
    marks
}

/// Sharpe, Sortino and the Sharpe standard error from 2-hour returns of `long_run`, computed
/// the plain way: the equity at each grid point `2h · k` is the last mark at or before it.
fn two_hour_ratios(marks: &[(i64, f64)], base: f64) -> (f64, f64, f64) {
    let grid: Vec<f64> = (0..=36)
        .map(|k| {
            let (_, mid) = marks
                .iter()
                .rev()
                .find(|(t, _)| *t <= k * 7200)
                .expect("a mark at or before");
            base + mid - 100.0
        })
        .collect();
    let ret: Vec<f64> = grid
        .windows(2)
        .map(|w| {
            if base > 0.0 {
                w[1] / w[0] - 1.0
            } else {
                w[1] - w[0]
            }
        })
        .collect();
    let n = ret.len() as f64;
    assert_eq!(n, 36.0);
    let mean = ret.iter().sum::<f64>() / n;
    let sd = (ret.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
    let down = (ret.iter().map(|r| r.min(0.0).powi(2)).sum::<f64>() / n).sqrt();
    let ann = (365.0f64 * 12.0).sqrt();
    let per = mean / sd;
    (
        per * ann,
        mean / down * ann,
        ((1.0 + per * per / 2.0) / n).sqrt() * ann,
    )
}

#[test]
fn sharpe_and_sortino_use_returns_on_the_chosen_interval_of_a_long_enough_run() {
    for with_balance in [true, false] {
        let dir = tempfile::tempdir().expect("tempdir");
        let marks = long_run(dir.path(), with_balance);
        let opts = ReportOptions {
            return_interval_ns: 2 * 3600 * S,
            ..ReportOptions::default()
        };
        let r = compute(dir.path(), &opts).expect("report");
        assert_eq!(r.ratios_unavailable, None);
        assert_close!(r.periods_per_year, 4380.0);
        let base = if with_balance { 1000.0 } else { 0.0 };
        let (sharpe, sortino, stderr) = two_hour_ratios(&marks, base);
        for m in [&r.total, key(&r, "a")] {
            let rel = |got: Option<f64>, want: f64| (got.expect("ratio") / want - 1.0).abs();
            assert!(rel(m.sharpe, sharpe) < 1e-9, "{:?} vs {sharpe}", m.sharpe);
            assert!(
                rel(m.sortino, sortino) < 1e-9,
                "{:?} vs {sortino}",
                m.sortino
            );
            assert!(rel(m.sharpe_stderr, stderr) < 1e-9, "{:?}", m.sharpe_stderr);
        }
        let table = render_table(&r);
        assert!(table.contains("(2h returns"), "{table}");
    }
}

#[test]
fn ratios_finer_than_the_marks_or_over_a_short_run_say_why_they_are_not_shown() {
    let dir = tempfile::tempdir().expect("tempdir");
    long_run(dir.path(), true);
    let r = compute(dir.path(), &ReportOptions::default()).expect("report");
    assert_eq!(r.total.sharpe, None);
    assert_eq!(
        r.ratios_unavailable.as_deref(),
        Some("returns every 1m but marks only every 1h; pick --return-interval 1h or more")
    );
    let opts = ReportOptions {
        return_interval_ns: 3 * 3600 * S,
        ..ReportOptions::default()
    };
    let r = compute(dir.path(), &opts).expect("report");
    assert_eq!(key(&r, "a").sortino, None);
    assert_eq!(
        r.ratios_unavailable.as_deref(),
        Some("3.0d of 3h returns (24 intervals); needs >= 1d of data and >= 30 return intervals")
    );
    let table = render_table(&r);
    assert!(
        table.contains("Sharpe, Sortino: n/a: 3.0d of 3h returns"),
        "{table}"
    );
    let zero = ReportOptions {
        return_interval_ns: 0,
        ..ReportOptions::default()
    };
    let err = compute(dir.path(), &zero).expect_err("zero interval");
    assert!(err.to_string().contains("positive"), "{err}");
}

#[test]
fn starting_balance_option_overrides_summary() {
    let dir = tempfile::tempdir().expect("tempdir");
    hand_run(dir.path(), true);
    let opts = ReportOptions {
        starting_balance: Some(5000.0),
        ..ReportOptions::default()
    };
    let r = compute(dir.path(), &opts).expect("report");
    assert_close!(r.total.final_equity.expect("equity"), 5023.27);
}

#[test]
fn missing_marks_file_is_reported_with_its_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_fills(dir.path(), &hand_fills());
    let err = compute(dir.path(), &ReportOptions::default()).expect_err("must fail");
    assert!(matches!(err, ReportError::MissingInput { .. }), "{err}");
    assert!(err.to_string().contains("marks.parquet"), "{err}");
}

#[test]
fn fills_without_marks_still_count_trades_and_mark_at_last_fill() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_fills(dir.path(), &hand_fills());
    write_marks(dir.path(), &[(0, "a", "BTC", 100.0, 0.0)]);
    let r = compute(dir.path(), &ReportOptions::default()).expect("report");
    let b = key(&r, "b");
    assert_eq!(b.marks, 0);
    // No ETH marks: the open short is marked at the last fill price (48).
    assert_close!(b.unrealized_pnl, -4.0 * (48.0 - 49.5));
    assert_eq!(r.total.trades, 8);
}

#[test]
fn bad_side_names_the_row() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut fills = hand_fills();
    fills[0].side = "BUY";
    write_fills(dir.path(), &fills);
    write_marks(dir.path(), &[(0, "a", "BTC", 100.0, 0.0)]);
    let err = compute(dir.path(), &ReportOptions::default()).expect_err("must fail");
    assert!(err.to_string().contains("row 0"), "{err}");
    assert!(err.to_string().contains("side"), "{err}");
}

#[test]
fn a_missing_or_mistyped_column_is_named_with_its_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_fills(dir.path(), &hand_fills());
    write_parquet(
        &dir.path().join("marks.parquet"),
        vec![
            ts_col("ts", &[0]),
            str_col("strategy", &["a"]),
            str_col("venue", &["sim"]),
            str_col("symbol", &["BTC"]),
            f64_col("position", &[0.0]),
        ],
    );
    let err = compute(dir.path(), &ReportOptions::default()).expect_err("no mid");
    let text = err.to_string();
    assert!(text.contains("marks.parquet"), "{text}");
    assert!(text.contains("no column \"mid\""), "{text}");

    write_parquet(
        &dir.path().join("marks.parquet"),
        vec![
            ts_col("ts", &[0]),
            str_col("strategy", &["a"]),
            str_col("venue", &["sim"]),
            str_col("symbol", &["BTC"]),
            str_col("mid", &["100"]),
            f64_col("position", &[0.0]),
        ],
    );
    let err = compute(dir.path(), &ReportOptions::default()).expect_err("text mid");
    let text = err.to_string();
    assert!(text.contains("marks.parquet"), "{text}");
    assert!(
        text.contains("column \"mid\" is Utf8, not numbers"),
        "{text}"
    );
}

#[test]
fn chart_has_per_strategy_pnl_price_with_fills_and_positions() {
    let dir = tempfile::tempdir().expect("tempdir");
    hand_run(dir.path(), true);
    let opts = ReportOptions {
        chart_max_points: 100,
        ..ReportOptions::default()
    };
    let r = compute(dir.path(), &opts).expect("report");

    // The series behind the panels, against the hand-worked books above.
    let s = &r.series;
    let a_pnl = &s.key_pnl[0];
    assert_eq!(
        (a_pnl.strategy.as_str(), a_pnl.symbol.as_str()),
        ("a", "BTC")
    );
    let want = [0.0, -0.2, 7.8, 19.85, 15.85, 14.55, 4.55, 8.35, 8.35];
    assert_eq!(a_pnl.points.len(), want.len(), "{:?}", a_pnl.points);
    for (p, w) in a_pnl.points.iter().zip(want) {
        assert_close!(p.1, w);
    }
    assert_close!(s.key_pnl[1].points.last().expect("b").1, 14.92);
    let btc = &s.mids[0];
    assert_eq!((btc.venue.as_str(), btc.symbol.as_str()), ("sim", "BTC"));
    let mids: Vec<f64> = btc.points.iter().map(|p| p.1).collect();
    assert_eq!(mids, BTC_MID);
    let a_fills = &s.fills[0];
    let at = |secs: i64, price: f64| (T0 + secs * S, price);
    assert_eq!(a_fills.buys, [at(1, 100.0), at(1, 100.0), at(7, 108.0)]);
    assert_eq!(a_fills.sells, [at(3, 110.0), at(5, 105.0)]);
    // Position steps: flat until t1, +2, +1 at t3, −2 at t5, 0 at t7, held to t8.
    let steps = &s.key_position[0].points;
    assert_eq!(steps.first(), Some(&at(0, 0.0)));
    assert!(steps.contains(&at(5, -2.0)) && steps.contains(&at(7, 0.0)));
    assert_eq!(steps.last(), Some(&at(8, 0.0)));

    let path = dir.path().join("chart.svg");
    write_chart(&r, &path).expect("chart");
    let svg = std::fs::read_to_string(&path).expect("read chart");
    assert!(svg.trim_end().ends_with("</svg>"));
    for title in [
        "Equity - hand",
        "Drawdown - hand",
        "Net PnL by strategy - hand",
        "Mid price and fills - sim/BTC - hand",
        "Mid price and fills - sim/ETH - hand",
        "Position by strategy - hand",
        "Inventory notional (all strategies) - hand",
    ] {
        assert!(svg.contains(title), "missing panel title {title}");
    }
    for legend in ["a sim/BTC buy", "a sim/BTC sell", "b sim/ETH sell", "mid"] {
        assert!(svg.contains(legend), "missing legend {legend}");
    }
    // Buys are filled triangles: 4 buys and 2 in the legends, beside the drawdown's area.
    assert_eq!(svg.matches("<polygon").count(), 4 + 2 + 1, "buy markers");
}

/// Mids are the marks (every second), so +100 ms is n/a, +10 s runs past the last mark
/// (t8) for every fill, and +1 s is `side × (mid(t+1) − mid(t)) / mid(t)` in bps:
/// - a buys (taker) at t1, t1, t7: +400, +400, 0 → 266.67; a sells at t3 (maker)
///   −(106 − 110)/110 → +363.64, at t5 (taker) −(110 − 105)/105 → −476.19;
/// - b sells at t2 (maker) −(48 − 50)/50 → +400, t6 (taker) −(49 − 48)/48 → −208.33;
///   b buys at t4 (taker) (46 − 45)/45 → +222.22.
///
/// Every fill is at the mid of its instant, so every edge is 0.
#[test]
fn markouts_average_signed_mid_moves_by_strategy_side_and_liquidity() {
    let dir = tempfile::tempdir().expect("tempdir");
    hand_run(dir.path(), true);
    let r = compute(dir.path(), &ReportOptions::default()).expect("report");
    let m = &r.markouts;
    assert_eq!(m.horizons, ["100ms", "1s", "10s"]);
    assert_eq!(
        m.unresolved,
        ["+100ms: sim/BTC marks every 1s, sim/ETH marks every 1s"]
    );
    let group = |strategy: &str, side: &str, liquidity: &str| {
        m.groups
            .iter()
            .find(|g| {
                (g.strategy.as_str(), g.side.as_str(), g.liquidity.as_str())
                    == (strategy, side, liquidity)
            })
            .unwrap_or_else(|| panic!("group {strategy} {side} {liquidity}"))
    };
    let bps = |v: f64| v * 1e4;
    let cases = [
        ("a", "buy", "taker", 3, 800.0 / 3.0),
        ("a", "sell", "maker", 1, bps(4.0 / 110.0)),
        ("a", "sell", "taker", 1, -bps(5.0 / 105.0)),
        ("b", "sell", "maker", 1, bps(2.0 / 50.0)),
        ("b", "sell", "taker", 1, -bps(1.0 / 48.0)),
        ("b", "buy", "taker", 1, bps(1.0 / 45.0)),
    ];
    assert_eq!(m.groups.len(), cases.len());
    for (strategy, side, liquidity, fills, one_second) in cases {
        let g = group(strategy, side, liquidity);
        assert_eq!(g.fills, fills);
        assert_eq!(g.mark_interval_ns, Some(S));
        assert_close!(g.edge_bps.expect("edge"), 0.0);
        assert_eq!(g.markout_bps[0], None, "+100ms is finer than the marks");
        assert_close!(g.markout_bps[1].expect("+1s"), one_second);
        assert_eq!(g.markout_fills[1], fills);
        assert_eq!(
            (g.markout_bps[2], g.markout_fills[2]),
            (None, 0),
            "+10s is past the end"
        );
    }
    let table = render_table(&r);
    let row = table
        .lines()
        .find(|l| l.starts_with("a/sim/BTC") && l.contains("buy"))
        .expect("markout row");
    assert_eq!(
        row.split_whitespace().collect::<Vec<_>>(),
        [
            "a/sim/BTC",
            "buy",
            "taker",
            "3",
            "+0.00",
            "n/a",
            "+266.67",
            "-"
        ],
        "{table}"
    );
    assert!(
        table.contains("n/a at +100ms: sim/BTC marks every 1s"),
        "{table}"
    );
    let json: serde_json::Value = serde_json::from_str(&render_json(&r)).expect("json");
    assert_eq!(
        json["markouts"]["groups"][0]["markout_bps"][0],
        serde_json::Value::Null
    );
}

/// Each fill with the ledger's view of it (the books are worked out above `hand_fills`).
#[test]
fn trade_list_has_every_fill_with_position_after_and_realized_pnl() {
    let dir = tempfile::tempdir().expect("tempdir");
    hand_run(dir.path(), true);
    let mut fills = hand_fills();
    // After the last mark: sold 18 below the last mid (108), no mid after it.
    fills.push(fill(9, ("a", "BTC"), "sell", 90.0, "1", 0.1, "taker"));
    write_fills(dir.path(), &fills);
    let out = dir.path().join("trades.csv");
    let opts = ReportOptions {
        trades: Some(out.clone()),
        ..ReportOptions::default()
    };
    run(dir.path(), None, &opts).expect("run");
    let csv = std::fs::read_to_string(out).expect("trades.csv");
    let rows: Vec<Vec<&str>> = csv.lines().map(|l| l.split(',').collect()).collect();
    assert_eq!(rows[0], TRADE_COLUMNS);
    assert_eq!(rows.len(), 1 + 9);
    let col = |name: &str| {
        TRADE_COLUMNS
            .iter()
            .position(|c| *c == name)
            .expect("column")
    };
    let pick = |row: &[&str], names: &[&str]| -> Vec<String> {
        names.iter().map(|n| row[col(n)].to_string()).collect()
    };
    let names = [
        "ts",
        "strategy",
        "side",
        "price",
        "size",
        "fee",
        "liquidity",
        "position_after",
        "realized_pnl",
    ];
    let want = [
        [
            "2024-01-01T00:00:01Z",
            "a",
            "buy",
            "100",
            "1",
            "0.1",
            "taker",
            "1",
            "0",
        ],
        [
            "2024-01-01T00:00:01Z",
            "a",
            "buy",
            "100",
            "1",
            "0.1",
            "taker",
            "2",
            "0",
        ],
        [
            "2024-01-01T00:00:02Z",
            "b",
            "sell",
            "50",
            "4",
            "-0.02",
            "maker",
            "-4",
            "0",
        ],
        [
            "2024-01-01T00:00:03Z",
            "a",
            "sell",
            "110",
            "1",
            "-0.05",
            "maker",
            "1",
            "10",
        ],
        [
            "2024-01-01T00:00:04Z",
            "b",
            "buy",
            "45",
            "1",
            "0.05",
            "taker",
            "-3",
            "5",
        ],
        [
            "2024-01-01T00:00:05Z",
            "a",
            "sell",
            "105",
            "3",
            "0.3",
            "taker",
            "-2",
            "5",
        ],
        [
            "2024-01-01T00:00:06Z",
            "b",
            "sell",
            "48",
            "1",
            "0.05",
            "taker",
            "-4",
            "0",
        ],
        [
            "2024-01-01T00:00:07Z",
            "a",
            "buy",
            "108",
            "2",
            "0.2",
            "taker",
            "0",
            "-6",
        ],
        [
            "2024-01-01T00:00:09Z",
            "a",
            "sell",
            "90",
            "1",
            "0.1",
            "taker",
            "-1",
            "0",
        ],
    ];
    for (row, want) in rows[1..].iter().zip(want) {
        assert_eq!(pick(row, &names), want, "{csv}");
    }
    assert_eq!(rows[1][col("ts_ns")], (T0 + S).to_string());
    // The late fill: mid at the fill is the last mark's (108), edge −18/108, no markouts.
    let late = &rows[9];
    assert_eq!(late[col("mid_at_fill")], "108");
    let edge: f64 = late[col("edge_bps")].parse().expect("edge");
    assert_close!(edge, -18.0 / 108.0 * 1e4);
    assert_eq!(late[col("markout_1s_bps")], "");
    // A fill inside the marks: +1 s markout of a's sell at t5, −(110 − 105)/105.
    let t5: f64 = rows[6][col("markout_1s_bps")].parse().expect("markout");
    assert_close!(t5, -5.0 / 105.0 * 1e4);
    assert_eq!(rows[6][col("markout_100ms_bps")], "");
}

#[test]
fn renderers_show_every_key_and_a_total() {
    let dir = tempfile::tempdir().expect("tempdir");
    hand_run(dir.path(), true);
    let r = compute(dir.path(), &ReportOptions::default()).expect("report");

    let table = render_table(&r);
    assert!(table.contains("a/sim/BTC") && table.contains("b/sim/ETH"));
    assert!(table.contains("TOTAL"));
    assert!(table.contains("1,023.27"), "{table}");

    let csv = render_csv(&r);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 4);
    assert!(lines[0].starts_with("strategy,venue,symbol,realized_pnl"));
    assert!(lines[3].starts_with("TOTAL,,,14,"), "{}", lines[3]);
    assert!(
        lines
            .iter()
            .all(|l| l.split(',').count() == render::CSV_COLUMNS.len())
    );

    let json: serde_json::Value = serde_json::from_str(&render_json(&r)).expect("json");
    assert_eq!(json["schema_version"], 2);
    assert_eq!(json["total"]["trades"], 8);
    assert_eq!(json["by_key"][0]["strategy"], "a");
    assert!(json["by_key"][0]["realized_pnl"].is_number());
    assert!(json.get("series").is_none());
    let back: Report = serde_json::from_value(json).expect("round trip");
    assert_eq!(back.total, r.total);
}

#[test]
fn compare_shows_both_runs_and_the_difference() {
    let a_dir = tempfile::tempdir().expect("tempdir");
    let b_dir = tempfile::tempdir().expect("tempdir");
    hand_run(a_dir.path(), true);
    hand_run(b_dir.path(), false);
    let a = compute(a_dir.path(), &ReportOptions::default()).expect("a");
    let b = compute(b_dir.path(), &ReportOptions::default()).expect("b");
    let text = compare(&a, &b);
    let line = text
        .lines()
        .find(|l| l.starts_with("final equity"))
        .expect("final equity row");
    assert!(
        line.contains("1,023.27") && line.contains("23.27"),
        "{line}"
    );
    assert!(line.contains("-1,000.00"), "{line}");
    assert!(text.contains("a/sim/BTC"));
    // Eight-second runs: no Sharpe, and no relative change of one.
    let sharpe = text
        .lines()
        .find(|l| l.starts_with("Sharpe "))
        .expect("Sharpe row");
    assert_eq!(
        sharpe.split_whitespace().collect::<Vec<_>>(),
        ["Sharpe", "n/a", "n/a", "-", "-"],
        "{text}"
    );
    assert!(text.contains("Sharpe, Sortino of A: n/a: 8.0s of 1m returns"));
}

/// The error and its causes, as `ticktape` prints them (`a: b: c`).
fn chain(err: &ReportError) -> String {
    let mut text = err.to_string();
    let mut cause = std::error::Error::source(err);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

#[test]
fn compare_chart_overlays_both_runs_named_in_a_legend() {
    let root = tempfile::tempdir().expect("tempdir");
    let (a_dir, b_dir) = (root.path().join("run-a"), root.path().join("run-b"));
    std::fs::create_dir_all(&a_dir).expect("mkdir");
    std::fs::create_dir_all(&b_dir).expect("mkdir");
    hand_run(&a_dir, true);
    // B: the same books with a starting balance of 5000: equity 5000 to 5036.
    hand_run(&b_dir, false);
    std::fs::write(b_dir.join("summary.json"), r#"{"starting_balance": 5000}"#).expect("summary");
    let single = root.path().join("single.svg");
    let both = root.path().join("both.svg");
    let opts = |chart: &Path| ReportOptions {
        chart: Some(chart.to_path_buf()),
        chart_max_points: 100,
        ..ReportOptions::default()
    };
    run(&a_dir, None, &opts(&single)).expect("single run");
    run(&a_dir, Some(&b_dir), &opts(&both)).expect("compare run");
    let single = std::fs::read_to_string(single).expect("single chart");
    let both = std::fs::read_to_string(both).expect("compare chart");
    assert_ne!(
        single, both,
        "the comparison chart must not be run A's chart"
    );
    assert!(both.contains("A: run-a (hand)"), "legend names run A");
    assert!(both.contains("B: run-b\n"), "legend names run B");
    // Equity, drawdown and net inventory: one line per run in each panel.
    let lines = |svg: &str| svg.matches("<polyline").count();
    assert!(lines(&both) >= 6, "{} lines", lines(&both));
    // A's equity is 1000 to 1036, B's 5000 to 5036: the equity axis must reach up to B's
    // values, so it has a tick at 5,000 (plotters writes each label on its own line).
    assert!(
        both.contains(">\n5,000\n<"),
        "B is drawn on the equity axis"
    );
    assert!(!single.contains(">\n5,000\n<"));
}

#[test]
fn compare_checks_both_runs_before_writing_and_names_the_failing_run() {
    let root = tempfile::tempdir().expect("tempdir");
    let (a_dir, b_dir) = (root.path().join("a"), root.path().join("b"));
    std::fs::create_dir_all(&a_dir).expect("mkdir");
    std::fs::create_dir_all(&b_dir).expect("mkdir");
    hand_run(&a_dir, true);
    write_fills(&b_dir, &hand_fills()); // no marks.parquet
    let out = root.path().join("out");
    std::fs::create_dir_all(&out).expect("mkdir");
    let opts = ReportOptions {
        chart: Some(out.join("c.svg")),
        csv: Some(out.join("c.csv")),
        ..ReportOptions::default()
    };
    let err = run(&a_dir, Some(&b_dir), &opts).expect_err("B is broken");
    let text = chain(&err);
    assert!(
        text.starts_with(&format!("run B ({})", b_dir.display())),
        "{text}"
    );
    assert!(text.contains("marks.parquet not found"), "{text}");
    assert!(!out.join("c.svg").exists() && !out.join("c.csv").exists());

    let err = run(&b_dir, Some(&a_dir), &opts).expect_err("A is broken");
    assert!(chain(&err).starts_with("run A ("), "{}", chain(&err));
    let missing = root.path().join("nope");
    let err = run(&a_dir, Some(&missing), &opts).expect_err("B does not exist");
    assert!(
        chain(&err).contains("is not a directory"),
        "{}",
        chain(&err)
    );
    assert!(!out.join("c.svg").exists());

    let no_folder = ReportOptions {
        chart: Some(root.path().join("missing/c.svg")),
        ..ReportOptions::default()
    };
    let err = run(&a_dir, None, &no_folder).expect_err("no output folder");
    assert!(chain(&err).contains("does not exist"), "{}", chain(&err));
}

#[test]
fn run_writes_csv_and_chart_and_returns_json_or_comparison() {
    let a_dir = tempfile::tempdir().expect("tempdir");
    let b_dir = tempfile::tempdir().expect("tempdir");
    hand_run(a_dir.path(), true);
    hand_run(b_dir.path(), false);
    let out = tempfile::tempdir().expect("tempdir");
    let opts = ReportOptions {
        json: true,
        csv: Some(out.path().join("r.csv")),
        chart: Some(out.path().join("r.svg")),
        ..ReportOptions::default()
    };
    let text = run(a_dir.path(), None, &opts).expect("run");
    let json: serde_json::Value = serde_json::from_str(&text).expect("json");
    assert_eq!(json["total"]["trades"], 8);
    assert!(out.path().join("r.csv").is_file());
    assert!(out.path().join("r.svg").is_file());

    let both = run(a_dir.path(), Some(b_dir.path()), &opts).expect("compare run");
    let both: serde_json::Value = serde_json::from_str(&both).expect("json");
    assert_eq!(both["a"]["starting_balance"], 1000.0);
    assert_eq!(both["b"]["starting_balance"], 0.0);

    let table =
        run(a_dir.path(), Some(b_dir.path()), &ReportOptions::default()).expect("compare table");
    assert!(table.contains("B - A"), "{table}");
}
