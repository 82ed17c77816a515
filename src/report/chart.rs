//! The report chart: one SVG with three stacked panels (equity, drawdown, inventory).
//!
//! Owns drawing only; it plots the already-downsampled [`super::ChartSeries`] (at most a
//! few thousand points, whatever the number of marks) and never computes metrics. SVG text
//! is emitted as `<text>` elements, so no font files are needed.

use std::path::Path;

use plotters::prelude::*;

use super::render::{format_ts, money};
use super::{Report, ReportError, Result};

const WIDTH: u32 = 1200;
const DARK_GREEN: RGBColor = RGBColor(0, 128, 0);
const PANEL_HEIGHT: u32 = 320;

/// Axis labels: whole numbers with thousands separators from 100 up (`1,000,500`), else
/// two decimals; millions of equity must stay distinguishable at a 0.05% range.
fn axis_label(v: f64) -> String {
    if v.abs() >= 100.0 {
        let m = money(v.round());
        m.trim_end_matches(".00").to_string()
    } else {
        format!("{v:.2}")
    }
}

/// Picks a readable time unit for the x axis from the span, in ns.
fn time_unit(span_ns: i64) -> (f64, &'static str) {
    let s = span_ns as f64 / 1e9;
    if s <= 300.0 {
        (1e9, "s")
    } else if s <= 3.0 * 3600.0 {
        (60e9, "min")
    } else if s <= 3.0 * 86_400.0 {
        (3600e9, "h")
    } else {
        (86_400e9, "days")
    }
}

fn y_range<'a>(series: impl Iterator<Item = &'a [(i64, f64)]>, include_zero: bool) -> (f64, f64) {
    let mut lo = f64::INFINITY;
    let mut hi = f64::NEG_INFINITY;
    for s in series {
        for &(_, v) in s {
            if v.is_finite() {
                lo = lo.min(v);
                hi = hi.max(v);
            }
        }
    }
    if include_zero {
        lo = lo.min(0.0);
        hi = hi.max(0.0);
    }
    if !lo.is_finite() || !hi.is_finite() {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.05).max(hi.abs().max(1.0) * 1e-6);
    (lo - pad, hi + pad)
}

/// Writes the three-panel SVG for `report` to `path`.
pub fn write_chart(report: &Report, path: &Path) -> Result<()> {
    let svg = render_svg(report).map_err(|reason| ReportError::Chart {
        path: path.to_path_buf(),
        reason,
    })?;
    std::fs::write(path, svg).map_err(|source| ReportError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn render_svg(report: &Report) -> std::result::Result<String, String> {
    let s = &report.series;
    let all = [
        &s.equity[..],
        &s.drawdown[..],
        &s.net_notional[..],
        &s.gross_notional[..],
    ];
    let t0 = all
        .iter()
        .filter_map(|v| v.first().map(|p| p.0))
        .min()
        .or(report.start_ns)
        .unwrap_or(0);
    let t1 = all
        .iter()
        .filter_map(|v| v.last().map(|p| p.0))
        .max()
        .or(report.end_ns)
        .unwrap_or(t0);
    let (unit_ns, unit) = time_unit(t1 - t0);
    let x = |ts: i64| (ts - t0) as f64 / unit_ns;
    let x_max = x(t1).max(1e-9);
    let x_desc = format!("time since {} ({unit})", format_ts(t0));

    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, (WIDTH, PANEL_HEIGHT * 3)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let panels = root.split_evenly((3, 1));
        let title = |name: &str| match &report.scenario {
            Some(sc) => format!("{name} - {sc}"),
            None => name.to_string(),
        };

        // Panel 1: equity.
        let (lo, hi) = y_range([&s.equity[..]].into_iter(), false);
        let mut c = ChartBuilder::on(&panels[0])
            .caption(title("Equity"), ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(90)
            .build_cartesian_2d(0.0..x_max, lo..hi)
            .map_err(|e| e.to_string())?;
        c.configure_mesh()
            .x_desc(x_desc.as_str())
            .y_desc("equity (quote)")
            .y_label_formatter(&|v| axis_label(*v))
            .draw()
            .map_err(|e| e.to_string())?;
        c.draw_series(LineSeries::new(
            s.equity.iter().map(|&(t, v)| (x(t), v)),
            BLUE.stroke_width(2),
        ))
        .map_err(|e| e.to_string())?;

        // Panel 2: drawdown (area down from zero).
        let (lo, hi) = y_range([&s.drawdown[..]].into_iter(), true);
        let mut c = ChartBuilder::on(&panels[1])
            .caption(title("Drawdown"), ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(90)
            .build_cartesian_2d(0.0..x_max, lo..hi)
            .map_err(|e| e.to_string())?;
        c.configure_mesh()
            .x_desc(x_desc.as_str())
            .y_desc("drawdown (quote)")
            .y_label_formatter(&|v| axis_label(*v))
            .draw()
            .map_err(|e| e.to_string())?;
        c.draw_series(
            AreaSeries::new(
                s.drawdown.iter().map(|&(t, v)| (x(t), v)),
                0.0,
                RED.mix(0.25),
            )
            .border_style(RED.stroke_width(1)),
        )
        .map_err(|e| e.to_string())?;

        // Panel 3: inventory notional, net (signed) and gross.
        let (lo, hi) = y_range(
            [&s.net_notional[..], &s.gross_notional[..]].into_iter(),
            true,
        );
        let mut c = ChartBuilder::on(&panels[2])
            .caption(title("Inventory"), ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(90)
            .build_cartesian_2d(0.0..x_max, lo..hi)
            .map_err(|e| e.to_string())?;
        c.configure_mesh()
            .x_desc(x_desc.as_str())
            .y_desc("notional (quote)")
            .y_label_formatter(&|v| axis_label(*v))
            .draw()
            .map_err(|e| e.to_string())?;
        c.draw_series(LineSeries::new(
            s.net_notional.iter().map(|&(t, v)| (x(t), v)),
            DARK_GREEN.stroke_width(2),
        ))
        .map_err(|e| e.to_string())?
        .label("net position x mid")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], DARK_GREEN.stroke_width(2)));
        c.draw_series(LineSeries::new(
            s.gross_notional.iter().map(|&(t, v)| (x(t), v)),
            BLACK.mix(0.5).stroke_width(1),
        ))
        .map_err(|e| e.to_string())?
        .label("gross |position| x mid")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.mix(0.5)));
        c.configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(buf)
}
