//! Two reports side by side: each headline metric for run A and run B with the difference.
//!
//! Owns the comparison layout only; it never recomputes metrics from files.

use std::fmt::Write as _;

use super::render::{money, table};
use super::{Metrics, Report};

enum Kind {
    Money,
    Ratio,
    Percent,
    Count,
    Secs,
}

fn rows(m: &Metrics) -> Vec<(&'static str, Kind, Option<f64>)> {
    vec![
        ("final equity", Kind::Money, m.final_equity),
        ("net PnL", Kind::Money, Some(m.net_pnl)),
        ("realized PnL", Kind::Money, Some(m.realized_pnl)),
        ("unrealized PnL", Kind::Money, Some(m.unrealized_pnl)),
        ("fees", Kind::Money, Some(m.fees)),
        ("max drawdown", Kind::Money, Some(m.max_drawdown)),
        ("max drawdown %", Kind::Percent, m.max_drawdown_pct),
        ("Sharpe", Kind::Ratio, m.sharpe),
        ("Sortino", Kind::Ratio, m.sortino),
        ("turnover", Kind::Money, Some(m.turnover)),
        ("fills", Kind::Count, Some(m.trades as f64)),
        ("win rate %", Kind::Percent, m.win_rate.map(|w| w * 100.0)),
        ("round trips", Kind::Count, Some(m.round_trips as f64)),
        ("avg holding (s)", Kind::Secs, m.avg_holding_secs),
        (
            "maker share %",
            Kind::Percent,
            m.maker_share.map(|w| w * 100.0),
        ),
        ("max gross notional", Kind::Money, m.max_gross_notional),
    ]
}

fn cell(kind: &Kind, v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(x) => match kind {
            Kind::Money => money(x),
            Kind::Ratio => format!("{x:.3}"),
            Kind::Percent => format!("{x:.2}"),
            Kind::Count => format!("{x:.0}"),
            Kind::Secs => format!("{x:.1}"),
        },
    }
}

fn diff_cells(kind: &Kind, a: Option<f64>, b: Option<f64>) -> [String; 2] {
    match (a, b) {
        (Some(a), Some(b)) => {
            let d = b - a;
            let sign = if d > 0.0 { "+" } else { "" };
            // A relative change of a ratio that can change sign says nothing.
            let rel = if a != 0.0 && !matches!(kind, Kind::Ratio) {
                format!("{:+.1}%", d / a.abs() * 100.0)
            } else {
                "-".into()
            };
            [format!("{sign}{}", cell(kind, Some(d))), rel]
        }
        _ => ["-".into(), "-".into()],
    }
}

/// Renders run `a` and run `b` side by side: total metrics with `B − A` and the relative
/// change, then net PnL per strategy/venue/symbol present in either run.
pub fn compare(a: &Report, b: &Report) -> String {
    let mut out = String::new();
    let name = |r: &Report| match &r.scenario {
        Some(s) => format!("{} ({s})", r.run_dir),
        None => r.run_dir.clone(),
    };
    let _ = writeln!(out, "A: {}\nB: {}\n", name(a), name(b));
    let mut body = Vec::new();
    // Sharpe/Sortino of a run too short for them are "n/a" (the reason is printed below).
    let shown = |r: &Report, kind: &Kind, v: Option<f64>| match (kind, &r.ratios_unavailable) {
        (Kind::Ratio, Some(_)) => "n/a".to_string(),
        _ => cell(kind, v),
    };
    for ((label, kind, va), (_, _, vb)) in rows(&a.total).into_iter().zip(rows(&b.total)) {
        let [d, rel] = diff_cells(&kind, va, vb);
        body.push(vec![
            label.to_string(),
            shown(a, &kind, va),
            shown(b, &kind, vb),
            d,
            rel,
        ]);
    }
    out.push_str(&table(&["metric", "A", "B", "B - A", "change"], &body));
    for (tag, r) in [("A", a), ("B", b)] {
        if let Some(why) = &r.ratios_unavailable {
            let _ = writeln!(out, "Sharpe, Sortino of {tag}: n/a: {why}");
        }
    }

    let mut keys: Vec<(String, String, String)> = a
        .by_key
        .iter()
        .chain(&b.by_key)
        .map(|k| (k.strategy.clone(), k.venue.clone(), k.symbol.clone()))
        .collect();
    keys.sort();
    keys.dedup();
    let find = |r: &Report, k: &(String, String, String)| {
        r.by_key
            .iter()
            .find(|m| m.strategy == k.0 && m.venue == k.1 && m.symbol == k.2)
            .map(|m| m.metrics.net_pnl)
    };
    let mut body = Vec::new();
    for k in &keys {
        let (va, vb) = (find(a, k), find(b, k));
        let [d, rel] = diff_cells(&Kind::Money, va, vb);
        body.push(vec![
            format!("{}/{}/{}", k.0, k.1, k.2),
            cell(&Kind::Money, va),
            cell(&Kind::Money, vb),
            d,
            rel,
        ]);
    }
    let _ = writeln!(out, "\nnet PnL by strategy/venue/symbol");
    out.push_str(&table(
        &["strategy/venue/symbol", "A", "B", "B - A", "change"],
        &body,
    ));
    out
}
