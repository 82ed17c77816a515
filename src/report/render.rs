//! Text renderings of a [`Report`]: the terminal table, JSON and CSV.
//!
//! Owns formatting only (units, alignment, field order). Never computes a metric and never
//! touches the file system; callers decide where the text goes.

use std::fmt::Write as _;

use super::{KeyMetrics, Markouts, Metrics, OrderCounts, OrderStats, Report};

/// `YYYY-MM-DD HH:MM:SS UTC` for ns since the Unix epoch (no time-zone database needed).
pub(super) fn format_ts(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // Civil-from-days (H. Hinnant), valid for the proleptic Gregorian calendar.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        sod / 3600,
        sod / 60 % 60,
        sod % 60
    )
}

/// Human duration: `850ms`, `42.0s`, `12.5m`, `3.2h`, `1.5d`.
pub(super) fn format_secs(secs: f64) -> String {
    let a = secs.abs();
    if a < 1.0 {
        format!("{:.0}ms", secs * 1e3)
    } else if a < 120.0 {
        format!("{secs:.1}s")
    } else if a < 7200.0 {
        format!("{:.1}m", secs / 60.0)
    } else if a < 172_800.0 {
        format!("{:.1}h", secs / 3600.0)
    } else {
        format!("{:.1}d", secs / 86_400.0)
    }
}

/// A return interval as typed on the command line when it is whole (`100ms`, `1s`, `5m`,
/// `2h`, `1d`), else [`format_secs`].
pub(super) fn format_interval(ns: i64) -> String {
    const UNITS: [(i64, &str); 5] = [
        (86_400_000_000_000, "d"),
        (3_600_000_000_000, "h"),
        (60_000_000_000, "m"),
        (1_000_000_000, "s"),
        (1_000_000, "ms"),
    ];
    for (unit, name) in UNITS {
        if ns >= unit && ns % unit == 0 {
            return format!("{}{name}", ns / unit);
        }
    }
    format_secs(ns as f64 / 1e9)
}

/// Money with thousands separators and two decimals: `-12,345.67`.
pub(super) fn money(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    let s = format!("{:.2}", v.abs());
    let (int, frac) = s.split_once('.').unwrap_or((&s, "00"));
    let mut grouped = String::with_capacity(int.len() + int.len() / 3);
    for (i, ch) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(ch);
    }
    let sign = if v < 0.0 && s != "0.00" { "-" } else { "" };
    format!("{sign}{grouped}.{frac}")
}

fn opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map(f).unwrap_or_else(|| "-".into())
}

fn pct(v: Option<f64>) -> String {
    opt(v, |x| format!("{:.1}%", x * 100.0))
}

fn size(v: f64) -> String {
    let s = format!("{v:.6}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".into() } else { s.into() }
}

/// Lays out rows as aligned columns: first column left-aligned, the rest right-aligned.
pub(super) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: &mut dyn Iterator<Item = &str>| {
        let mut parts = Vec::new();
        for (i, cell) in cells.enumerate() {
            let w = widths.get(i).copied().unwrap_or(0);
            parts.push(if i == 0 {
                format!("{cell:<w$}")
            } else {
                format!("{cell:>w$}")
            });
        }
        let _ = writeln!(out, "{}", parts.join("  ").trim_end());
    };
    line(&mut out, &mut header.iter().copied());
    let total: usize = widths.iter().sum::<usize>() + 2 * widths.len().saturating_sub(1);
    let _ = writeln!(out, "{}", "-".repeat(total));
    for row in rows {
        line(&mut out, &mut row.iter().map(String::as_str));
    }
    out
}

fn key_label(k: &KeyMetrics) -> String {
    format!("{}/{}/{}", k.strategy, k.venue, k.symbol)
}

/// A Sharpe/Sortino cell: the value, `n/a` when the run is too short for ratios, `-` when
/// undefined (no variation).
fn ratio_cell(r: &Report, v: Option<f64>) -> String {
    match (v, &r.ratios_unavailable) {
        (Some(x), _) => format!("{x:.2}"),
        (None, Some(_)) => "n/a".into(),
        (None, None) => "-".into(),
    }
}

fn pnl_row(r: &Report, label: String, m: &Metrics) -> Vec<String> {
    vec![
        label,
        m.trades.to_string(),
        money(m.turnover),
        money(m.realized_pnl),
        money(m.unrealized_pnl),
        money(m.fees),
        money(m.net_pnl),
        money(m.max_drawdown),
        ratio_cell(r, m.sharpe),
        ratio_cell(r, m.sortino),
    ]
}

fn activity_row(label: String, m: &Metrics) -> Vec<String> {
    vec![
        label,
        m.closing_trades.to_string(),
        pct(m.win_rate),
        m.round_trips.to_string(),
        opt(m.avg_holding_secs, format_secs),
        pct(m.maker_share),
        money(m.maker_fees),
        money(m.taker_fees),
        opt(m.final_position, size),
        opt(m.mean_abs_position, size),
        opt(m.max_abs_position, size),
        opt(m.time_weighted_abs_position, size),
        opt(m.max_gross_notional, money),
    ]
}

/// The terminal table: header block, a PnL table and an activity/inventory table (one row
/// per strategy/venue/symbol plus TOTAL), then whole-run risk figures.
pub fn render_table(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "ticktape report: {}", r.run_dir);
    if let Some(s) = &r.scenario {
        let _ = writeln!(out, "scenario:         {s}");
    }
    if let (Some(a), Some(b)) = (r.start_ns, r.end_ns) {
        let _ = writeln!(
            out,
            "period:           {} -> {} ({})",
            format_ts(a),
            format_ts(b),
            format_secs((b - a) as f64 / 1e9)
        );
    }
    let _ = writeln!(
        out,
        "marks:            {} (every {})",
        r.total.marks,
        opt(r.mark_interval_ns.map(|i| i as f64), |i| format_interval(
            i as i64
        )),
    );
    let _ = writeln!(
        out,
        "starting balance: {}   final equity: {}",
        money(r.starting_balance),
        opt(r.total.final_equity, money)
    );
    let _ = writeln!(out, "\nPnL (quote currency)");
    let mut rows: Vec<Vec<String>> = r
        .by_key
        .iter()
        .map(|k| pnl_row(r, key_label(k), &k.metrics))
        .collect();
    rows.push(pnl_row(r, "TOTAL".into(), &r.total));
    out.push_str(&table(
        &[
            "strategy/venue/symbol",
            "fills",
            "turnover",
            "realized",
            "unrealized",
            "fees",
            "net PnL",
            "max DD",
            "Sharpe",
            "Sortino",
        ],
        &rows,
    ));
    let _ = writeln!(out, "\nActivity and inventory (positions in base units)");
    let mut rows: Vec<Vec<String>> = r
        .by_key
        .iter()
        .map(|k| activity_row(key_label(k), &k.metrics))
        .collect();
    rows.push(activity_row("TOTAL".into(), &r.total));
    out.push_str(&table(
        &[
            "strategy/venue/symbol",
            "closes",
            "win rate",
            "round trips",
            "avg hold",
            "maker %",
            "maker fees",
            "taker fees",
            "final pos",
            "mean |pos|",
            "max |pos|",
            "tw |pos|",
            "max gross",
        ],
        &rows,
    ));
    let t = &r.total;
    let _ = writeln!(
        out,
        "\nmax drawdown: {} ({})",
        money(t.max_drawdown),
        opt(t.max_drawdown_pct, |p| format!("{p:.2}%")),
    );
    match &r.ratios_unavailable {
        Some(why) => {
            let _ = writeln!(out, "Sharpe, Sortino: n/a: {why}");
        }
        None => {
            let _ = writeln!(
                out,
                "Sharpe: {} (standard error {})   Sortino: {}   ({} returns, annualised x sqrt({:.0}), risk-free 0)",
                ratio_cell(r, t.sharpe),
                opt(t.sharpe_stderr, |x| format!("{x:.2}")),
                ratio_cell(r, t.sortino),
                format_interval(r.interval_ns),
                r.periods_per_year,
            );
        }
    }
    if t.position_mismatches > 0 {
        let _ = writeln!(
            out,
            "warning: {} marks report a position that differs from the one rebuilt from fills",
            t.position_mismatches
        );
    }
    if let Some(o) = &r.orders {
        out.push_str(&orders_table(o));
    }
    if !r.markouts.groups.is_empty() {
        out.push_str(&markouts_table(&r.markouts));
    }
    out
}

/// Final statuses in the order a trader reads them; anything else goes to `other`.
const STATUS_COLUMNS: [(&str, &str); 5] = [
    ("filled", "filled"),
    ("partially_filled", "open part-filled"),
    ("new", "open unfilled"),
    ("canceled", "canceled"),
    ("rejected", "rejected"),
];

fn orders_row(label: String, c: &OrderCounts) -> Vec<String> {
    let mut row = vec![label, c.orders.to_string()];
    for (status, _) in STATUS_COLUMNS {
        row.push(c.by_status.get(status).copied().unwrap_or(0).to_string());
    }
    let other: u64 = c
        .by_status
        .iter()
        .filter(|(k, _)| !STATUS_COLUMNS.iter().any(|(s, _)| s == k))
        .map(|(_, v)| v)
        .sum();
    row.push(other.to_string());
    row.push(pct(c.fill_ratio));
    row.push(c.updates.to_string());
    row
}

/// The orders section: distinct orders by final status and the quantity fill ratio.
fn orders_table(o: &OrderStats) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nOrders (each counted once, by final status; fill ratio = filled / ordered quantity, rejected excluded)"
    );
    let mut rows: Vec<Vec<String>> = o
        .by_key
        .iter()
        .map(|k| {
            orders_row(
                format!("{}/{}/{}", k.strategy, k.venue, k.symbol),
                &k.counts,
            )
        })
        .collect();
    rows.push(orders_row("TOTAL".into(), &o.total));
    let mut header = vec!["strategy/venue/symbol", "orders"];
    header.extend(STATUS_COLUMNS.iter().map(|(_, label)| *label));
    header.extend(["other", "fill ratio", "status rows"]);
    out.push_str(&table(&header, &rows));
    out
}

/// The markouts section: mean mid move after fills by strategy × side × liquidity.
fn markouts_table(m: &Markouts) -> String {
    let mut out = String::new();
    let resolution: Vec<String> = {
        let mut v: Vec<String> = m
            .groups
            .iter()
            .filter_map(|g| g.mark_interval_ns.map(format_interval))
            .collect();
        v.sort();
        v.dedup();
        v
    };
    let _ = writeln!(
        out,
        "\nMarkouts (mean mid move after each fill, bps of the mid, + = favourable; mids from marks every {})",
        if resolution.is_empty() {
            "-".to_string()
        } else {
            resolution.join("/")
        }
    );
    let bps = |v: Option<f64>| opt(v, |x| format!("{x:+.2}"));
    let rows: Vec<Vec<String>> = m
        .groups
        .iter()
        .map(|g| {
            let mut row = vec![
                format!("{}/{}/{}", g.strategy, g.venue, g.symbol),
                g.side.clone(),
                g.liquidity.clone(),
                g.fills.to_string(),
                bps(g.edge_bps),
            ];
            for (i, _) in m.horizons.iter().enumerate() {
                let unresolved = g
                    .mark_interval_ns
                    .zip(m.horizons_ns.get(i))
                    .is_none_or(|(mi, h)| *h < mi);
                row.push(if unresolved {
                    "n/a".into()
                } else {
                    bps(g.markout_bps.get(i).copied().flatten())
                });
            }
            row
        })
        .collect();
    let labels: Vec<String> = m.horizons.iter().map(|h| format!("+{h}")).collect();
    let mut header = vec![
        "strategy/venue/symbol",
        "side",
        "liquidity",
        "fills",
        "edge",
    ];
    header.extend(labels.iter().map(String::as_str));
    out.push_str(&table(&header, &rows));
    for why in &m.unresolved {
        let _ = writeln!(
            out,
            "n/a at {why}; mids are only as fine as the marks (mark_interval_secs in the scenario's [replay])"
        );
    }
    out
}

/// Pretty JSON with the field names documented in `docs/REPORT.md`.
pub fn render_json(r: &Report) -> String {
    // Serializing plain structs of numbers and strings cannot fail; NaN/inf become null.
    serde_json::to_string_pretty(r).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

/// CSV columns, in order; `strategy,venue,symbol` are `TOTAL,,` on the total row.
pub const CSV_COLUMNS: [&str; 34] = [
    "strategy",
    "venue",
    "symbol",
    "realized_pnl",
    "unrealized_pnl",
    "fees",
    "net_pnl",
    "final_equity",
    "max_drawdown",
    "max_drawdown_pct",
    "sharpe",
    "sortino",
    "turnover",
    "trades",
    "closing_trades",
    "winning_trades",
    "win_rate",
    "round_trips",
    "avg_holding_secs",
    "final_position",
    "mean_abs_position",
    "max_abs_position",
    "time_weighted_abs_position",
    "mean_gross_notional",
    "max_gross_notional",
    "maker_trades",
    "taker_trades",
    "maker_notional",
    "taker_notional",
    "maker_share",
    "position_mismatches",
    "orders",
    "order_fill_ratio",
    "sharpe_stderr",
];

/// A CSV document (RFC 4180 quoting, `\n` line ends) of a header and rows, written by
/// the `csv` crate. Shared by the report, its trade list and the sweep table.
pub(crate) fn csv_document<R, C>(header: &[&str], rows: R) -> String
where
    R: IntoIterator<Item = C>,
    C: IntoIterator,
    C::Item: AsRef<[u8]>,
{
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    // Writing into memory fails only on a record of the wrong length: every caller
    // builds its rows from the same column list as its header, and a short row would be
    // a bug, reported as the text below instead of a panic.
    let written = w
        .write_record(header)
        .and_then(|()| rows.into_iter().try_for_each(|row| w.write_record(row)));
    match (written, w.into_inner()) {
        (Ok(()), Ok(bytes)) => String::from_utf8_lossy(&bytes).into_owned(),
        (Err(e), _) => format!("error: cannot write CSV: {e}\n"),
        (_, Err(e)) => format!("error: cannot write CSV: {}\n", e.error()),
    }
}

fn csv_row(names: [&str; 3], m: &Metrics, orders: Option<&OrderCounts>) -> Vec<String> {
    let o = |v: Option<f64>| v.map(|x| x.to_string()).unwrap_or_default();
    let cells = [
        names[0].to_string(),
        names[1].to_string(),
        names[2].to_string(),
        m.realized_pnl.to_string(),
        m.unrealized_pnl.to_string(),
        m.fees.to_string(),
        m.net_pnl.to_string(),
        o(m.final_equity),
        m.max_drawdown.to_string(),
        o(m.max_drawdown_pct),
        o(m.sharpe),
        o(m.sortino),
        m.turnover.to_string(),
        m.trades.to_string(),
        m.closing_trades.to_string(),
        m.winning_trades.to_string(),
        o(m.win_rate),
        m.round_trips.to_string(),
        o(m.avg_holding_secs),
        o(m.final_position),
        o(m.mean_abs_position),
        o(m.max_abs_position),
        o(m.time_weighted_abs_position),
        o(m.mean_gross_notional),
        o(m.max_gross_notional),
        m.maker_trades.to_string(),
        m.taker_trades.to_string(),
        m.maker_notional.to_string(),
        m.taker_notional.to_string(),
        o(m.maker_share),
        m.position_mismatches.to_string(),
        orders.map(|c| c.orders.to_string()).unwrap_or_default(),
        o(orders.and_then(|c| c.fill_ratio)),
        o(m.sharpe_stderr),
    ];
    cells.into()
}

/// CSV: header [`CSV_COLUMNS`], one row per strategy/venue/symbol, then a `TOTAL` row.
/// Undefined values are empty cells.
pub fn render_csv(r: &Report) -> String {
    let mut rows: Vec<Vec<String>> = r
        .by_key
        .iter()
        .map(|k| {
            let orders = r.orders.as_ref().and_then(|o| {
                o.by_key
                    .iter()
                    .find(|c| {
                        (&c.strategy, &c.venue, &c.symbol) == (&k.strategy, &k.venue, &k.symbol)
                    })
                    .map(|c| &c.counts)
            });
            csv_row([&k.strategy, &k.venue, &k.symbol], &k.metrics, orders)
        })
        .collect();
    rows.push(csv_row(
        ["TOTAL", "", ""],
        &r.total,
        r.orders.as_ref().map(|o| &o.total),
    ));
    csv_document(&CSV_COLUMNS, rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_documents_quote_only_what_needs_quoting() {
        let text = csv_document(
            &["name", "value"],
            [
                vec!["plain", "1.5"],
                vec!["a,b", "say \"hi\""],
                vec!["two\nlines", ""],
            ],
        );
        assert_eq!(
            text,
            "name,value\nplain,1.5\n\"a,b\",\"say \"\"hi\"\"\"\n\"two\nlines\",\n"
        );
        // A row of the wrong length is reported in the text, not a panic.
        let bad = csv_document(&["a", "b"], [vec!["only one"]]);
        assert!(bad.contains("cannot write CSV"), "{bad}");
    }

    #[test]
    fn timestamps_format_as_utc_calendar_dates() {
        assert_eq!(format_ts(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(
            format_ts(1_700_000_000_000_000_000),
            "2023-11-14 22:13:20 UTC"
        );
    }

    #[test]
    fn money_groups_thousands_and_keeps_sign() {
        assert_eq!(money(-1234567.891), "-1,234,567.89");
        assert_eq!(money(12.0), "12.00");
        assert_eq!(money(-0.001), "0.00");
    }

    #[test]
    fn table_columns_are_aligned() {
        let t = table(
            &["k", "value"],
            &[
                vec!["a".into(), "1".into()],
                vec!["bbb".into(), "12345".into()],
            ],
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "k    value");
        assert_eq!(lines[2], "a        1");
        assert_eq!(lines[3], "bbb  12345");
    }
}
