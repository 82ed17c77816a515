//! `ticktape sweep`: one scenario over a grid of parameter values, run locally in
//! parallel, summarised in one table.
//!
//! Each grid point is a self-contained unit — a scenario file (the base with the point's
//! values set) and the data path it names in, a run directory out — run as its own
//! `ticktape run` process, so a cluster back end only has to ship those units elsewhere.
//! Owns the `--set` syntax, the grid, the worker pool and the summary (`sweep.parquet`
//! written with arrow-rs, `sweep.csv`, `sweep.json`, and `heatmap.svg` for two-parameter
//! grids). Never runs a backtest itself.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use serde::Serialize;

use crate::shutdown::Stop;

/// One swept parameter: a dotted path into the scenario and its values.
#[derive(Clone, Debug, PartialEq)]
pub struct Axis {
    /// Dotted path: `strategy.<name>.…` selects the `[[strategy]]` table of that name
    /// (`strategy.mm.params.skew_ticks`), other segments are table keys
    /// (`exchange.order_latency.ns`).
    pub path: String,
    /// Values, in the order given.
    pub values: Vec<toml::Value>,
}

impl Axis {
    /// Parses `PATH=V1,V2,…`. Values are TOML scalars: integers (`1e6` counts as the
    /// integer 1000000), floats, booleans, else strings.
    pub fn parse(text: &str) -> Result<Axis> {
        let Some((path, list)) = text.split_once('=') else {
            bail!(
                "bad --set {text:?}: give PATH=V1,V2,… (e.g. strategy.mm.params.skew_ticks=0,1,2)"
            );
        };
        let path = path.trim();
        if path.is_empty() || path.split('.').any(str::is_empty) {
            bail!(
                "bad --set {text:?}: the path must be dotted keys like exchange.order_latency.ns"
            );
        }
        let values: Vec<toml::Value> = list
            .split(',')
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(scalar)
            .collect();
        if values.is_empty() {
            bail!("bad --set {text:?}: no values after '='");
        }
        Ok(Axis {
            path: path.to_string(),
            values,
        })
    }
}

fn scalar(text: &str) -> toml::Value {
    if let Ok(i) = text.parse::<i64>() {
        return toml::Value::Integer(i);
    }
    if let Ok(f) = text.parse::<f64>()
        && f.is_finite()
    {
        if f.fract() == 0.0 && f.abs() < 9e15 {
            return toml::Value::Integer(f as i64);
        }
        return toml::Value::Float(f);
    }
    match text {
        "true" => toml::Value::Boolean(true),
        "false" => toml::Value::Boolean(false),
        _ => toml::Value::String(text.trim_matches('"').to_string()),
    }
}

/// Every combination of the axes' values, first axis slowest.
pub fn grid(axes: &[Axis]) -> Vec<Vec<toml::Value>> {
    let mut points: Vec<Vec<toml::Value>> = vec![Vec::new()];
    for axis in axes {
        points = points
            .into_iter()
            .flat_map(|p| {
                axis.values.iter().map(move |v| {
                    let mut q = p.clone();
                    q.push(v.clone());
                    q
                })
            })
            .collect();
    }
    points
}

/// Sets `path` to `value` in a scenario document, creating tables on the way; a
/// `strategy.<name>` segment selects the `[[strategy]]` table with that name.
pub fn set(doc: &mut toml::Table, path: &str, value: toml::Value) -> Result<()> {
    let keys: Vec<&str> = path.split('.').collect();
    let (mut table, rest) = if keys[0] == "strategy" {
        let Some(name) = keys.get(1) else {
            bail!("--set {path}: say which strategy, e.g. strategy.mm.params.skew_ticks");
        };
        let strategies = doc
            .get_mut("strategy")
            .and_then(toml::Value::as_array_mut)
            .context("the scenario has no [[strategy]] tables")?;
        let names: Vec<String> = strategies
            .iter()
            .filter_map(|s| s.get("name")?.as_str().map(str::to_string))
            .collect();
        let found = strategies
            .iter_mut()
            .filter_map(toml::Value::as_table_mut)
            .find(|t| t.get("name").and_then(toml::Value::as_str) == Some(name));
        let Some(found) = found else {
            bail!(
                "--set {path}: no strategy named {name:?} (the scenario has {})",
                names.join(", ")
            );
        };
        (found, &keys[2..])
    } else {
        (doc, &keys[..])
    };
    let Some((last, parents)) = rest.split_last() else {
        bail!("--set {path}: names a whole table; name a value inside it");
    };
    for key in parents {
        let entry = table
            .entry(key.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = entry
            .as_table_mut()
            .with_context(|| format!("--set {path}: {key} is a value, not a table"))?;
    }
    table.insert(last.to_string(), value);
    Ok(())
}

/// What a sweep does.
#[derive(Clone, Debug)]
pub struct SweepConfig {
    /// The base scenario.
    pub scenario: PathBuf,
    /// The swept parameters.
    pub axes: Vec<Axis>,
    /// Runs at once.
    pub jobs: usize,
    /// Sweep directory (run directories, scenarios, logs, the summary).
    pub out: PathBuf,
    /// The `ticktape` executable that runs each point.
    pub exe: PathBuf,
}

/// One finished grid point.
#[derive(Clone, Debug, Serialize)]
pub struct PointResult {
    /// Index in the grid.
    pub run: usize,
    /// The point's values, by axis path.
    pub params: Vec<(String, String)>,
    /// Its run directory.
    pub run_dir: PathBuf,
    /// Fills digest.
    pub digest: Option<String>,
    /// Net PnL (after fees), quote currency.
    pub net_pnl: Option<f64>,
    /// Fees, quote currency.
    pub fees: Option<f64>,
    /// Fills.
    pub fills: Option<u64>,
    /// Max drawdown, quote currency.
    pub max_drawdown: Option<f64>,
    /// Traded notional.
    pub turnover: Option<f64>,
    /// Error, when the run failed.
    pub error: Option<String>,
}

/// What a sweep produced.
#[derive(Clone, Debug, Serialize)]
pub struct SweepSummary {
    /// The axes' paths, in order.
    pub axes: Vec<String>,
    /// Every point, best net PnL first (failed runs last).
    pub points: Vec<PointResult>,
    /// The sweep directory.
    pub out: PathBuf,
}

/// Runs every grid point (`jobs` at once) and writes the summary. `on_done` sees each
/// finished point and how many are done.
pub fn run(
    config: &SweepConfig,
    stop: &Stop,
    on_done: impl Fn(&PointResult, usize, usize) + Sync,
) -> Result<SweepSummary> {
    let text = std::fs::read_to_string(&config.scenario)
        .with_context(|| format!("cannot read scenario {}", config.scenario.display()))?;
    // The base must load on its own; each point is checked again by its run.
    crate::scenario::Scenario::parse(&text, &config.scenario)?;
    let base: toml::Table = toml::from_str(&text)
        .with_context(|| format!("cannot parse {}", config.scenario.display()))?;
    if config.axes.is_empty() {
        bail!("nothing to sweep: give at least one --set PATH=V1,V2");
    }
    let points = grid(&config.axes);
    let scenarios = config.out.join("scenarios");
    std::fs::create_dir_all(&scenarios)
        .with_context(|| format!("cannot create {}", scenarios.display()))?;
    let logs = config.out.join("logs");
    std::fs::create_dir_all(&logs)?;
    let mut jobs = VecDeque::new();
    for (i, values) in points.iter().enumerate() {
        let mut doc = base.clone();
        let mut params = Vec::new();
        for (axis, value) in config.axes.iter().zip(values) {
            set(&mut doc, &axis.path, value.clone())?;
            params.push((axis.path.clone(), value.to_string()));
        }
        let path = scenarios.join(format!("{i:04}.toml"));
        std::fs::write(&path, toml::to_string(&doc)?)?;
        jobs.push_back((i, params, path));
    }
    let total = jobs.len();
    let queue = Arc::new(Mutex::new(jobs));
    let results: Mutex<Vec<PointResult>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..config.jobs.clamp(1, total) {
            scope.spawn(|| {
                loop {
                    let job = queue.lock().ok().and_then(|mut q| q.pop_front());
                    let Some((i, params, scenario)) = job else {
                        return;
                    };
                    let run_dir = config.out.join(format!("run-{i:04}"));
                    let log = logs.join(format!("run-{i:04}.log"));
                    let result = run_point(config, i, params, &scenario, &run_dir, &log, stop);
                    let mut all = results.lock().unwrap_or_else(|e| e.into_inner());
                    all.push(result);
                    on_done(all.last().expect("just pushed"), all.len(), total);
                }
            });
        }
    });
    let mut points = results.into_inner().unwrap_or_else(|e| e.into_inner());
    points.sort_by(|a, b| match (a.net_pnl, b.net_pnl) {
        (Some(x), Some(y)) => y.total_cmp(&x),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.run.cmp(&b.run),
    });
    let summary = SweepSummary {
        axes: config.axes.iter().map(|a| a.path.clone()).collect(),
        points,
        out: config.out.clone(),
    };
    write_summary(&summary)?;
    Ok(summary)
}

fn run_point(
    config: &SweepConfig,
    i: usize,
    params: Vec<(String, String)>,
    scenario: &Path,
    run_dir: &Path,
    log: &Path,
    stop: &Stop,
) -> PointResult {
    let mut result = PointResult {
        run: i,
        params,
        run_dir: run_dir.to_path_buf(),
        digest: None,
        net_pnl: None,
        fees: None,
        fills: None,
        max_drawdown: None,
        turnover: None,
        error: None,
    };
    if stop.is_set() {
        result.error = Some("interrupted before it started".into());
        return result;
    }
    let outcome = (|| -> Result<()> {
        let log_file = std::fs::File::create(log)?;
        let mut child = Command::new(&config.exe)
            .arg("run")
            .arg(scenario)
            .arg("--out")
            .arg(run_dir)
            .arg("--quiet")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .context("cannot start ticktape run")?;
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if stop.is_set() {
                let _ = child.kill();
                let _ = child.wait();
                bail!("interrupted");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        if !status.success() {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let last = text
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            bail!(
                "ticktape run exited with {status}: {last} (log {})",
                log.display()
            );
        }
        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(run_dir.join("report.json"))?)?;
        let summary: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(run_dir.join("summary.json"))?)?;
        let total = &report["total"];
        result.net_pnl = total["net_pnl"].as_f64();
        result.fees = total["fees"].as_f64();
        result.fills = total["trades"].as_u64();
        result.max_drawdown = total["max_drawdown"].as_f64();
        result.turnover = total["turnover"].as_f64();
        result.digest = summary["digest"].as_str().map(str::to_string);
        Ok(())
    })();
    if let Err(e) = outcome {
        result.error = Some(format!("{e:#}"));
    }
    result
}

/// `sweep.parquet`, `sweep.csv`, `sweep.json` and, for two axes, `heatmap.svg`.
fn write_summary(summary: &SweepSummary) -> Result<()> {
    use arrow_array::{ArrayRef, Float64Array, RecordBatch, StringArray, UInt32Array, UInt64Array};
    use arrow_schema::{DataType, Field, Schema};
    use parquet::arrow::ArrowWriter;

    let out = &summary.out;
    std::fs::write(
        out.join("sweep.json"),
        serde_json::to_string_pretty(summary)?,
    )?;
    let points = &summary.points;
    let mut columns: Vec<(Field, ArrayRef)> = vec![(
        Field::new("run", DataType::UInt32, false),
        Arc::new(UInt32Array::from_iter_values(
            points.iter().map(|p| p.run as u32),
        )),
    )];
    for (k, axis) in summary.axes.iter().enumerate() {
        columns.push((
            Field::new(axis.as_str(), DataType::Utf8, false),
            Arc::new(StringArray::from_iter_values(
                points.iter().map(|p| p.params[k].1.as_str()),
            )),
        ));
    }
    let number = |name: &str, get: &dyn Fn(&PointResult) -> Option<f64>| -> (Field, ArrayRef) {
        (
            Field::new(name, DataType::Float64, true),
            Arc::new(Float64Array::from_iter(points.iter().map(get))),
        )
    };
    let text = |name: &str, get: &dyn Fn(&PointResult) -> Option<&str>| -> (Field, ArrayRef) {
        (
            Field::new(name, DataType::Utf8, true),
            Arc::new(StringArray::from_iter(points.iter().map(get))),
        )
    };
    columns.extend([
        number("net_pnl", &|p| p.net_pnl),
        number("fees", &|p| p.fees),
        number("max_drawdown", &|p| p.max_drawdown),
        number("turnover", &|p| p.turnover),
        (
            Field::new("fills", DataType::UInt64, true),
            Arc::new(UInt64Array::from_iter(points.iter().map(|p| p.fills))),
        ),
        text("digest", &|p| p.digest.as_deref()),
        text("error", &|p| p.error.as_deref()),
    ]);
    let (fields, columns): (Vec<Field>, Vec<ArrayRef>) = columns.into_iter().unzip();
    let schema = Arc::new(Schema::new(fields));
    let batch =
        RecordBatch::try_new(schema.clone(), columns).context("cannot build the sweep table")?;
    let file = std::fs::File::create(out.join("sweep.parquet"))?;
    let props = parquet::file::properties::WriterProperties::builder()
        .set_compression(parquet::basic::Compression::ZSTD(
            parquet::basic::ZstdLevel::default(),
        ))
        .build();
    let mut writer =
        ArrowWriter::try_new(file, schema, Some(props)).context("cannot write sweep.parquet")?;
    writer.write(&batch).context("cannot write sweep.parquet")?;
    writer.close().context("cannot write sweep.parquet")?;
    std::fs::write(out.join("sweep.csv"), csv(summary))?;
    if summary.axes.len() == 2 {
        heatmap(summary, &out.join("heatmap.svg"))?;
    }
    Ok(())
}

fn csv(summary: &SweepSummary) -> String {
    let mut header = vec!["run"];
    header.extend(summary.axes.iter().map(String::as_str));
    header.extend([
        "net_pnl",
        "fees",
        "max_drawdown",
        "turnover",
        "fills",
        "digest",
        "error",
    ]);
    let num = |v: Option<f64>| v.map_or(String::new(), |x| format!("{x}"));
    let rows = summary.points.iter().map(|p| {
        let mut row = vec![p.run.to_string()];
        row.extend(p.params.iter().map(|(_, v)| v.clone()));
        row.extend([
            num(p.net_pnl),
            num(p.fees),
            num(p.max_drawdown),
            num(p.turnover),
            p.fills.map_or(String::new(), |f| f.to_string()),
            p.digest.clone().unwrap_or_default(),
            p.error.clone().unwrap_or_default(),
        ]);
        row
    });
    crate::report::csv_document(&header, rows)
}

/// Net PnL over a two-parameter grid: one cell per point, green for gains, red for losses.
fn heatmap(summary: &SweepSummary, path: &Path) -> Result<()> {
    use plotters::prelude::*;
    let distinct = |k: usize| {
        let mut v: Vec<String> = Vec::new();
        let mut sorted: Vec<&PointResult> = summary.points.iter().collect();
        sorted.sort_by_key(|p| p.run);
        for p in sorted {
            if !v.contains(&p.params[k].1) {
                v.push(p.params[k].1.clone());
            }
        }
        v
    };
    let (xs, ys) = (distinct(0), distinct(1));
    let pnls: Vec<f64> = summary.points.iter().filter_map(|p| p.net_pnl).collect();
    let lo = pnls.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = pnls.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let title = format!(
        "net PnL (quote) by {} (columns) and {} (rows); best green, worst red",
        summary.axes[0], summary.axes[1]
    );
    let (cell_w, cell_h, left, top) = (120i32, 50i32, 120i32, 60i32);
    let grid_w = left + cell_w * xs.len() as i32 + 20;
    let width = grid_w.max(title.len() as i32 * 7 + 20) as u32;
    let height = (top + cell_h * ys.len() as i32 + 30) as u32;
    let root = SVGBackend::new(path, (width, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let text = |s: &str, x: i32, y: i32| {
        root.draw(&Text::new(
            s.to_string(),
            (x, y),
            ("sans-serif", 13).into_font(),
        ))
        .map_err(|e| anyhow::anyhow!("{e}"))
    };
    text(&title, 10, 10)?;
    for (i, x) in xs.iter().enumerate() {
        text(x, left + cell_w * i as i32 + 10, top - 20)?;
    }
    for (j, y) in ys.iter().enumerate() {
        text(y, 10, top + cell_h * j as i32 + cell_h / 2 - 7)?;
    }
    for p in &summary.points {
        let (Some(i), Some(j)) = (
            xs.iter().position(|x| *x == p.params[0].1),
            ys.iter().position(|y| *y == p.params[1].1),
        ) else {
            continue;
        };
        let (x0, y0) = (left + cell_w * i as i32, top + cell_h * j as i32);
        // Red (worst) to green (best) across the grid's own range.
        let color = match p.net_pnl {
            Some(v) => {
                let t = if hi > lo { (v - lo) / (hi - lo) } else { 1.0 };
                let red = (230.0 - 140.0 * t) as u8;
                let green = (110.0 + 110.0 * t) as u8;
                RGBColor(red, green, 120)
            }
            None => RGBColor(200, 200, 200),
        };
        root.draw(&Rectangle::new(
            [(x0, y0), (x0 + cell_w - 2, y0 + cell_h - 2)],
            color.filled(),
        ))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        let label = p.net_pnl.map_or("failed".into(), |v| format!("{v:.2}"));
        text(&label, x0 + 10, y0 + cell_h / 2 - 7)?;
    }
    root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_syntax_values_and_grid() {
        let a = Axis::parse("strategy.mm.params.skew_ticks=0, 1,2").unwrap();
        assert_eq!(a.values, vec![0.into(), 1.into(), 2.into()]);
        let b = Axis::parse("exchange.order_latency.ns=1e6,5e6").unwrap();
        assert_eq!(
            b.values,
            vec![1_000_000.into(), 5_000_000.into()],
            "1e6 is an integer"
        );
        let c = Axis::parse("x.y=0.5,true,fast").unwrap();
        assert_eq!(c.values, vec![0.5.into(), true.into(), "fast".into()]);
        assert!(Axis::parse("nothing").is_err());
        assert!(Axis::parse("a..b=1").is_err());
        assert!(Axis::parse("a=").is_err());
        let g = grid(&[a, b]);
        assert_eq!(g.len(), 6);
        assert_eq!(g[1], vec![0.into(), 5_000_000.into()], "first axis slowest");
    }

    #[test]
    fn set_reaches_named_strategies_and_nested_tables() {
        let mut doc: toml::Table = toml::from_str(
            "name = \"x\"\n[[strategy]]\nname = \"mm\"\n[[strategy]]\nname = \"taker\"\n",
        )
        .unwrap();
        set(&mut doc, "strategy.taker.params.window", 9.into()).unwrap();
        set(&mut doc, "exchange.order_latency.ns", 5.into()).unwrap();
        let text = toml::to_string(&doc).unwrap();
        assert!(text.contains("window = 9"), "{text}");
        assert_eq!(doc["exchange"]["order_latency"]["ns"].as_integer(), Some(5));
        assert!(
            doc["strategy"][0].get("params").is_none(),
            "only the named strategy"
        );
        let err = set(&mut doc, "strategy.nope.size", 1.into())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no strategy named \"nope\"") && err.contains("mm, taker"),
            "{err}"
        );
        let err = set(&mut doc, "name.deeper", 1.into())
            .unwrap_err()
            .to_string();
        assert!(err.contains("is a value, not a table"), "{err}");
    }
}
