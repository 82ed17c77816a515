//! The report chart: one SVG with stacked panels (equity, drawdown, inventory) for one run,
//! or for two runs overlaid (`--compare`), each run in its own colour and named in a legend.
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
/// Height of the band naming the runs of a comparison.
const LEGEND_BAND: u32 = 36;
/// Run A and run B of a comparison.
const RUN_COLORS: [RGBColor; 2] = [RGBColor(31, 119, 180), RGBColor(230, 120, 0)];

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

/// One run on the chart: its legend name, its report and its colour.
struct Run<'a> {
    label: String,
    report: &'a Report,
    color: RGBColor,
    /// Subtracted from the run's timestamps: the shared origin, or the run's own start
    /// when two runs cover different periods.
    t0: i64,
}

impl Run<'_> {
    fn first_ts(&self) -> Option<i64> {
        let s = &self.report.series;
        [&s.equity, &s.drawdown, &s.net_notional, &s.gross_notional]
            .iter()
            .filter_map(|v| v.first().map(|p| p.0))
            .min()
            .or(self.report.start_ns)
    }

    fn last_ts(&self) -> Option<i64> {
        let s = &self.report.series;
        [&s.equity, &s.drawdown, &s.net_notional, &s.gross_notional]
            .iter()
            .filter_map(|v| v.last().map(|p| p.0))
            .max()
            .or(self.report.end_ns)
    }
}

/// Writes the SVG chart of `report` to `path`.
pub fn write_chart(report: &Report, path: &Path) -> Result<()> {
    write_svg(&[(run_label(report, None), report)], path)
}

/// Writes one SVG with run `a` and run `b` overlaid in every panel, named `A: …` and
/// `B: …` in the legends.
pub fn write_compare_chart(a: &Report, b: &Report, path: &Path) -> Result<()> {
    write_svg(
        &[
            (run_label(a, Some(("A", b))), a),
            (run_label(b, Some(("B", a))), b),
        ],
        path,
    )
}

/// The legend name of a run: `A: <dir> (<scenario>)` when compared, else the scenario.
fn run_label(r: &Report, compared: Option<(&str, &Report)>) -> String {
    let dir = Path::new(&r.run_dir)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| r.run_dir.clone());
    match compared {
        None => r.scenario.clone().unwrap_or(dir),
        Some((tag, other)) => {
            let other_dir = Path::new(&other.run_dir).file_name().map(|n| n.to_owned());
            // Two runs called runs/x/out and runs/y/out: the base name would not tell them apart.
            let dir = if Path::new(&r.run_dir).file_name().map(|n| n.to_owned()) == other_dir {
                r.run_dir.clone()
            } else {
                dir
            };
            match &r.scenario {
                Some(s) => format!("{tag}: {dir} ({s})"),
                None => format!("{tag}: {dir}"),
            }
        }
    }
}

fn write_svg(runs: &[(String, &Report)], path: &Path) -> Result<()> {
    let svg = render_svg(runs).map_err(|reason| ReportError::Chart {
        path: path.to_path_buf(),
        reason,
    })?;
    std::fs::write(path, svg).map_err(|source| ReportError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn render_svg(inputs: &[(String, &Report)]) -> std::result::Result<String, String> {
    let mut runs: Vec<Run> = inputs
        .iter()
        .enumerate()
        .map(|(i, (label, report))| Run {
            label: label.clone(),
            report,
            color: RUN_COLORS[i % RUN_COLORS.len()],
            t0: 0,
        })
        .collect();
    let starts: Vec<i64> = runs.iter().filter_map(Run::first_ts).collect();
    let shared_start = starts.windows(2).all(|w| w[0] == w[1]);
    let t0 = starts.iter().copied().min().unwrap_or(0);
    for r in &mut runs {
        r.t0 = if shared_start {
            t0
        } else {
            r.first_ts().unwrap_or(t0)
        };
    }
    let span = runs
        .iter()
        .filter_map(|r| r.last_ts().map(|t| t - r.t0))
        .max()
        .unwrap_or(0);
    let (unit_ns, unit) = time_unit(span);
    let x_max = (span as f64 / unit_ns).max(1e-9);
    let x_desc = if shared_start {
        format!("time since {} ({unit})", format_ts(t0))
    } else {
        format!("time since each run's first mark ({unit})")
    };
    let single = runs.len() == 1;
    let title = |name: &str| match (single, &runs[0].report.scenario) {
        (true, Some(sc)) => format!("{name} - {sc}"),
        _ => name.to_string(),
    };
    let points = |r: &Run, s: &[(i64, f64)]| -> Vec<(f64, f64)> {
        s.iter()
            .map(|&(t, v)| ((t - r.t0) as f64 / unit_ns, v))
            .collect()
    };

    let band = if single { 0 } else { LEGEND_BAND };
    let mut buf = String::new();
    {
        let root =
            SVGBackend::with_string(&mut buf, (WIDTH, PANEL_HEIGHT * 3 + band)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let (top, body) = root.split_vertically(band);
        if !single {
            run_legend(&top, &runs)?;
        }
        let panels = body.split_evenly((3, 1));
        let frame = |area, name: &str, y_desc: &str, (lo, hi): (f64, f64)| {
            let mut c = ChartBuilder::on(area)
                .caption(title(name), ("sans-serif", 22))
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(90)
                .build_cartesian_2d(0.0..x_max, lo..hi)
                .map_err(|e| e.to_string())?;
            c.configure_mesh()
                .x_desc(x_desc.as_str())
                .y_desc(y_desc)
                .y_label_formatter(&|v| axis_label(*v))
                .draw()
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(c)
        };

        // Panel 1: equity.
        let range = y_range(runs.iter().map(|r| &r.report.series.equity[..]), false);
        let mut c = frame(&panels[0], "Equity", "equity (quote)", range)?;
        for r in &runs {
            let color = r.color;
            c.draw_series(LineSeries::new(
                points(r, &r.report.series.equity),
                color.stroke_width(2),
            ))
            .map_err(|e| e.to_string())?;
        }

        // Panel 2: drawdown (area down from zero).
        let range = y_range(runs.iter().map(|r| &r.report.series.drawdown[..]), true);
        let mut c = frame(&panels[1], "Drawdown", "drawdown (quote)", range)?;
        for r in &runs {
            let pts = points(r, &r.report.series.drawdown);
            if single {
                c.draw_series(
                    AreaSeries::new(pts, 0.0, RED.mix(0.25)).border_style(RED.stroke_width(1)),
                )
                .map_err(|e| e.to_string())?;
            } else {
                // Overlapping areas would mix colours; two runs are two lines.
                c.draw_series(LineSeries::new(pts, r.color.stroke_width(2)))
                    .map_err(|e| e.to_string())?;
            }
        }

        // Panel 3: inventory notional, net (signed) and, for one run, gross.
        let range = y_range(
            runs.iter().flat_map(|r| {
                let s = &r.report.series;
                if single {
                    vec![&s.net_notional[..], &s.gross_notional[..]]
                } else {
                    vec![&s.net_notional[..]]
                }
            }),
            true,
        );
        let name = if single {
            "Inventory"
        } else {
            "Inventory (net position x mid)"
        };
        let mut c = frame(&panels[2], name, "notional (quote)", range)?;
        for r in &runs {
            let net = if single { DARK_GREEN } else { r.color };
            c.draw_series(LineSeries::new(
                points(r, &r.report.series.net_notional),
                net.stroke_width(2),
            ))
            .map_err(|e| e.to_string())?
            .label("net position x mid")
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], net.stroke_width(2)));
            if single {
                c.draw_series(LineSeries::new(
                    points(r, &r.report.series.gross_notional),
                    BLACK.mix(0.5).stroke_width(1),
                ))
                .map_err(|e| e.to_string())?
                .label("gross |position| x mid")
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.mix(0.5)));
            }
        }
        if single {
            legend(&mut c)?;
        }
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(buf)
}

/// The band above the panels of a comparison: each run's colour and name, once.
fn run_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    runs: &[Run],
) -> std::result::Result<(), String> {
    let mut x = 110;
    let y = (LEGEND_BAND / 2) as i32;
    for r in runs {
        area.draw(&PathElement::new(
            vec![(x, y), (x + 30, y)],
            r.color.stroke_width(3),
        ))
        .map_err(|e| e.to_string())?;
        area.draw(&Text::new(
            r.label.clone(),
            (x + 38, y - 8),
            ("sans-serif", 16).into_font(),
        ))
        .map_err(|e| e.to_string())?;
        x += 60 + 9 * r.label.chars().count() as i32;
    }
    Ok(())
}

fn legend<'a, DB: DrawingBackend + 'a, CT: plotters::coord::CoordTranslate>(
    c: &mut ChartContext<'a, DB, CT>,
) -> std::result::Result<(), String> {
    c.configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| e.to_string())
}
