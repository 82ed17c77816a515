//! The report chart: one SVG with stacked panels sharing the time axis. One run: equity,
//! drawdown, net PnL by strategy, the mid price of each market with every strategy's fills
//! (buys ▲, sells ▽), position by strategy, inventory notional. Two runs (`--compare`):
//! equity, drawdown, net PnL by strategy and inventory, overlaid, each run in its own colour
//! (per-strategy lines: A solid, B dashed) and named in a band above the panels.
//!
//! Owns drawing only; it plots the already-downsampled [`super::ChartSeries`] (at most a
//! few thousand points, whatever the number of marks) and never computes metrics. SVG text
//! is emitted as `<text>` elements, so no font files are needed.

use std::path::Path;

use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use super::render::{format_ts, money};
use super::{KeyFills, KeySeries, Report, ReportError, Result};

const WIDTH: u32 = 1200;
const DARK_GREEN: RGBColor = RGBColor(0, 128, 0);
/// Width of the right-hand gutter that holds each panel's legend, px.
const GUTTER: u32 = 190;
/// The mid price line.
const MID_GREY: RGBColor = RGBColor(100, 100, 100);
/// The gross notional line.
const GREY: RGBColor = RGBColor(140, 140, 140);
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

/// What one panel shows.
enum Panel<'a> {
    Equity,
    Drawdown,
    KeyPnl,
    /// Mid price of one (venue, symbol) with every strategy's fills on it.
    Price(&'a KeySeries),
    Position,
    Notional,
}

impl Panel<'_> {
    fn height(&self) -> u32 {
        match self {
            Panel::Equity | Panel::KeyPnl => 300,
            Panel::Price(_) => 360,
            Panel::Drawdown | Panel::Position | Panel::Notional => 240,
        }
    }
}

/// Colour of the `i`-th strategy (matplotlib's tab10).
fn key_color(i: usize) -> RGBColor {
    const TAB10: [RGBColor; 10] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
        RGBColor(188, 189, 34),
        RGBColor(23, 190, 207),
    ];
    TAB10[i % TAB10.len()]
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

    // Strategies (keys) over all runs get one colour each, the same in every panel.
    let mut keys: Vec<(String, String, String)> = runs
        .iter()
        .flat_map(|r| &r.report.series.key_pnl)
        .chain(runs.iter().flat_map(|r| &r.report.series.key_position))
        .map(|k| (k.strategy.clone(), k.venue.clone(), k.symbol.clone()))
        .collect();
    keys.sort();
    keys.dedup();
    let one_market = keys
        .windows(2)
        .all(|w| (&w[0].1, &w[0].2) == (&w[1].1, &w[1].2));
    let key_of = |k: &str, v: &str, s: &str| {
        keys.iter()
            .position(|x| (x.0.as_str(), x.1.as_str(), x.2.as_str()) == (k, v, s))
            .unwrap_or(0)
    };
    let key_name = |i: usize| {
        let (k, v, s) = &keys[i];
        if one_market {
            k.clone()
        } else {
            format!("{k} {v}/{s}")
        }
    };

    // In a comparison blue and orange name the runs, so strategies take the next colours.
    let color_offset = if single { 0 } else { RUN_COLORS.len() };
    let mut plan = vec![Panel::Equity, Panel::Drawdown];
    if !keys.is_empty() {
        plan.push(Panel::KeyPnl);
    }
    if single {
        plan.extend(runs[0].report.series.mids.iter().map(Panel::Price));
        if !keys.is_empty() {
            plan.push(Panel::Position);
        }
    }
    plan.push(Panel::Notional);

    let band = if single { 0 } else { LEGEND_BAND };
    let height = band + plan.iter().map(Panel::height).sum::<u32>();
    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let (top, mut body) = root.split_vertically(band);
        if !single {
            run_legend(&top, &runs)?;
        }
        let err = |e: DrawingAreaErrorKind<_>| e.to_string();

        for panel in &plan {
            let (area, rest) = body.split_vertically(panel.height());
            body = rest;
            let mut keyed: Vec<(String, Mark)> = Vec::new();
            match panel {
                Panel::Equity => {
                    let range = y_range(runs.iter().map(|r| &r.report.series.equity[..]), false);
                    let mut c = panel_frame(
                        &area,
                        &title("Equity"),
                        &x_desc,
                        x_max,
                        "equity (quote)",
                        range,
                    )?;
                    for (ri, r) in runs.iter().enumerate() {
                        line(
                            &mut c,
                            points(r, &r.report.series.equity),
                            r.color.stroke_width(2),
                            ri > 0,
                        )?;
                    }
                }
                Panel::Drawdown => {
                    let range = y_range(runs.iter().map(|r| &r.report.series.drawdown[..]), true);
                    let mut c = panel_frame(
                        &area,
                        &title("Drawdown"),
                        &x_desc,
                        x_max,
                        "drawdown (quote)",
                        range,
                    )?;
                    for (ri, r) in runs.iter().enumerate() {
                        let pts = points(r, &r.report.series.drawdown);
                        if single {
                            c.draw_series(
                                AreaSeries::new(pts, 0.0, RED.mix(0.25))
                                    .border_style(RED.stroke_width(1)),
                            )
                            .map_err(err)?;
                        } else {
                            // Overlapping areas would mix colours; two runs are two lines.
                            line(&mut c, pts, r.color.stroke_width(2), ri > 0)?;
                        }
                    }
                }
                Panel::KeyPnl => {
                    let range = y_range(
                        runs.iter()
                            .flat_map(|r| r.report.series.key_pnl.iter().map(|k| &k.points[..])),
                        true,
                    );
                    let name = "Net PnL by strategy";
                    let mut c = panel_frame(
                        &area,
                        &title(name),
                        &x_desc,
                        x_max,
                        "net PnL (quote)",
                        range,
                    )?;
                    for (ri, r) in runs.iter().enumerate() {
                        for k in &r.report.series.key_pnl {
                            let i = key_of(&k.strategy, &k.venue, &k.symbol);
                            let color = key_color(i + color_offset);
                            line(&mut c, points(r, &k.points), color.stroke_width(2), ri > 0)?;
                            keyed.push(if single {
                                (key_name(i), Mark::Line(color, 2))
                            } else if ri == 0 {
                                (format!("A {}", key_name(i)), Mark::Line(color, 2))
                            } else {
                                (format!("B {}", key_name(i)), Mark::Dashed(color))
                            });
                        }
                    }
                }
                Panel::Price(mid) => {
                    let r = &runs[0];
                    let fills: Vec<&KeyFills> = r
                        .report
                        .series
                        .fills
                        .iter()
                        .filter(|f| (&f.venue, &f.symbol) == (&mid.venue, &mid.symbol))
                        .collect();
                    let range = y_range(
                        std::iter::once(&mid.points[..])
                            .chain(fills.iter().flat_map(|f| [&f.buys[..], &f.sells[..]])),
                        false,
                    );
                    let thinned = fills.iter().any(|f| f.thinned);
                    let name = format!(
                        "Mid price and fills - {}/{}{}",
                        mid.venue,
                        mid.symbol,
                        if thinned {
                            " (fills thinned: highest and lowest per time slice)"
                        } else {
                            ""
                        }
                    );
                    let mut c =
                        panel_frame(&area, &title(&name), &x_desc, x_max, "price (quote)", range)?;
                    c.draw_series(LineSeries::new(
                        points(r, &mid.points),
                        MID_GREY.stroke_width(1),
                    ))
                    .map_err(err)?;
                    keyed.push(("mid".into(), Mark::Line(MID_GREY, 1)));
                    for f in fills {
                        let i = key_of(&f.strategy, &f.venue, &f.symbol);
                        let color = key_color(i + color_offset);
                        let buy = color.mix(0.8).filled();
                        let sell = color.stroke_width(2);
                        c.draw_series(
                            points(r, &f.buys)
                                .into_iter()
                                .map(|p| EmptyElement::at(p) + Polygon::new(buy_triangle(), buy)),
                        )
                        .map_err(err)?;
                        c.draw_series(points(r, &f.sells).into_iter().map(|p| {
                            EmptyElement::at(p) + PathElement::new(sell_triangle(), sell)
                        }))
                        .map_err(err)?;
                        keyed.push((format!("{} buy", key_name(i)), Mark::Buy(color)));
                        keyed.push((format!("{} sell", key_name(i)), Mark::Sell(color)));
                    }
                }
                Panel::Position => {
                    let r = &runs[0];
                    let range = y_range(
                        r.report.series.key_position.iter().map(|k| &k.points[..]),
                        true,
                    );
                    let mut c = panel_frame(
                        &area,
                        &title("Position by strategy"),
                        &x_desc,
                        x_max,
                        "position (base units)",
                        range,
                    )?;
                    for k in &r.report.series.key_position {
                        let i = key_of(&k.strategy, &k.venue, &k.symbol);
                        let color = key_color(i + color_offset);
                        c.draw_series(LineSeries::new(points(r, &k.points), color.stroke_width(2)))
                            .map_err(err)?;
                        keyed.push((key_name(i), Mark::Line(color, 2)));
                    }
                }
                Panel::Notional => {
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
                        "Inventory notional (all strategies)"
                    } else {
                        "Inventory (net position x mid, all strategies)"
                    };
                    let mut c = panel_frame(
                        &area,
                        &title(name),
                        &x_desc,
                        x_max,
                        "notional (quote)",
                        range,
                    )?;
                    for (ri, r) in runs.iter().enumerate() {
                        let net = if single { DARK_GREEN } else { r.color };
                        line(
                            &mut c,
                            points(r, &r.report.series.net_notional),
                            net.stroke_width(2),
                            ri > 0,
                        )?;
                        if single {
                            c.draw_series(LineSeries::new(
                                points(r, &r.report.series.gross_notional),
                                GREY.stroke_width(1),
                            ))
                            .map_err(err)?;
                            keyed.push(("net position x mid".into(), Mark::Line(net, 2)));
                            keyed.push(("gross |position| x mid".into(), Mark::Line(GREY, 1)));
                        }
                    }
                }
            }
            gutter_legend(&area, &keyed)?;
        }
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(buf)
}

/// A panel's axes: caption, time on x (`0 ..= x_max`), `lo ..= hi` on y.
fn panel_frame<'a, 'b>(
    area: &'a DrawingArea<SVGBackend<'b>, Shift>,
    caption: &str,
    x_desc: &str,
    x_max: f64,
    y_desc: &str,
    (lo, hi): (f64, f64),
) -> std::result::Result<
    ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
    String,
> {
    let mut c = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 22))
        .margin(12)
        .margin_right(GUTTER)
        .x_label_area_size(40)
        .y_label_area_size(90)
        .build_cartesian_2d(0.0..x_max, lo..hi)
        .map_err(|e| e.to_string())?;
    c.configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .y_label_formatter(&|v| axis_label(*v))
        .draw()
        .map_err(|e| e.to_string())?;
    Ok(c)
}

/// Half-width of a fill marker, px.
const MARKER: i32 = 4;

/// A buy on the price panel: a filled triangle pointing up (pixel offsets).
fn buy_triangle() -> Vec<(i32, i32)> {
    vec![(-MARKER, MARKER), (MARKER, MARKER), (0, -MARKER)]
}

/// A sell: an open triangle pointing down (pixel offsets, closed path).
fn sell_triangle() -> Vec<(i32, i32)> {
    vec![
        (-MARKER, -MARKER),
        (MARKER, -MARKER),
        (0, MARKER),
        (-MARKER, -MARKER),
    ]
}

/// A line, dashed for run B of a comparison (so that equal runs still show both).
fn line<DB: DrawingBackend>(
    c: &mut ChartContext<'_, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
    pts: Vec<(f64, f64)>,
    style: ShapeStyle,
    dashed: bool,
) -> std::result::Result<(), String> {
    if dashed {
        c.draw_series(DashedLineSeries::new(pts, 8, 5, style))
            .map_err(|e| e.to_string())?;
    } else {
        c.draw_series(LineSeries::new(pts, style))
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The band above the panels of a comparison: each run's colour and name, once.
fn run_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    runs: &[Run],
) -> std::result::Result<(), String> {
    let mut x = 110;
    let y = (LEGEND_BAND / 2) as i32;
    for (ri, r) in runs.iter().enumerate() {
        let dashes: &[(i32, i32)] = if ri == 0 {
            &[(0, 30)]
        } else {
            &[(0, 8), (11, 19), (22, 30)]
        };
        for &(a, b) in dashes {
            area.draw(&PathElement::new(
                vec![(x + a, y), (x + b, y)],
                r.color.stroke_width(3),
            ))
            .map_err(|e| e.to_string())?;
        }
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

/// How a legend entry is drawn.
enum Mark {
    /// A solid line of this width.
    Line(RGBColor, u32),
    /// A dashed line.
    Dashed(RGBColor),
    /// A buy marker.
    Buy(RGBColor),
    /// A sell marker.
    Sell(RGBColor),
}

/// Legend entries in the right-hand gutter of a panel, outside the plot so they never
/// cover data.
fn gutter_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    entries: &[(String, Mark)],
) -> std::result::Result<(), String> {
    let x = (WIDTH - GUTTER + 16) as i32;
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    for (n, (label, mark)) in entries.iter().enumerate() {
        let y = 48 + 20 * n as i32;
        match mark {
            Mark::Line(c, w) => area
                .draw(&PathElement::new(
                    vec![(x, y), (x + 22, y)],
                    c.stroke_width(*w),
                ))
                .map_err(err)?,
            Mark::Dashed(c) => {
                for dx in [0, 9, 18] {
                    area.draw(&PathElement::new(
                        vec![(x + dx, y), (x + dx + 5, y)],
                        c.stroke_width(2),
                    ))
                    .map_err(err)?;
                }
            }
            Mark::Buy(c) => area
                .draw(
                    &(EmptyElement::at((x + 11, y))
                        + Polygon::new(buy_triangle(), c.mix(0.8).filled())),
                )
                .map_err(err)?,
            Mark::Sell(c) => area
                .draw(
                    &(EmptyElement::at((x + 11, y))
                        + PathElement::new(sell_triangle(), c.stroke_width(2))),
                )
                .map_err(err)?,
        }
        area.draw(&Text::new(
            label.clone(),
            (x + 30, y - 7),
            ("sans-serif", 13).into_font(),
        ))
        .map_err(err)?;
    }
    Ok(())
}
