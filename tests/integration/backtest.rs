//! Whole backtests: `ticktape run` on the shipped demo scenario, a Python strategy,
//! failing strategies and malformed scenario files.

use std::path::{Path, PathBuf};
use std::time::Duration;

use arrow_array::{Array, StringArray};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::util::*;

/// Fill rows per strategy in a run's fills.parquet.
fn fills_by_strategy(run_dir: &Path) -> std::collections::BTreeMap<String, u64> {
    let file = std::fs::File::open(run_dir.join("fills.parquet")).unwrap();
    let mut out = std::collections::BTreeMap::new();
    for batch in ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap()
    {
        let batch = batch.unwrap();
        let col = batch.column_by_name("strategy").unwrap();
        let names = col.as_any().downcast_ref::<StringArray>().unwrap();
        for i in 0..names.len() {
            *out.entry(names.value(i).to_string()).or_default() += 1;
        }
    }
    out
}

#[test]
fn demo_scenario_completes_with_report_chart_and_a_stable_digest() {
    let dir = tempdir();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let out = run_ok(&[
        "run",
        "scenarios/demo.toml",
        "--out",
        a.to_str().unwrap(),
        "--quiet",
    ]);
    run_ok(&[
        "run",
        "scenarios/demo.toml",
        "--out",
        b.to_str().unwrap(),
        "--quiet",
        "--speed",
        "max",
    ]);
    let (sa, sb) = (summary(&a), summary(&b));
    assert!(sa["digest"].as_str().is_some_and(|d| d.len() == 16), "{sa}");
    assert_eq!(sa["digest"], sb["digest"], "same inputs, same fills");
    assert_eq!(sa["replay"]["events"], 135_830);
    // The replay's own peak memory at the end of the stream: a process holds a few MiB
    // at least, and this one far less than a GiB (the demo is 135,830 events).
    let rss = sa["replay"]["peak_rss_mib"].as_f64().unwrap();
    assert!(rss > 2.0 && rss < 1024.0, "{sa}");
    // What the machine took meanwhile: Linux reports its steal (0 on a machine that is
    // not a guest), and the faults are a count.
    if cfg!(target_os = "linux") {
        assert!(
            sa["replay"]["steal_secs"]
                .as_f64()
                .is_some_and(|s| s >= 0.0),
            "{sa}"
        );
    }
    assert!(sa["replay"]["major_faults"].is_u64(), "{sa}");
    // The lookahead form waits for acks at holes in the data; the summary names who
    // was waited for, and the time charged to one strategy never exceeds the total.
    let waits = sa["replay"]["ack_wait_secs"].as_f64().unwrap();
    let slowest = sa["replay"]["slowest"].as_array().unwrap();
    let names: Vec<&str> = slowest.iter().map(|s| s[0].as_str().unwrap()).collect();
    assert!(names.contains(&"mm") && names.contains(&"taker"), "{sa}");
    let most = slowest[0][1].as_f64().unwrap();
    assert!(most > 0.0 && most <= waits + 1e-6, "{sa}");
    let fills = fills_by_strategy(&a);
    assert!(
        fills.get("mm").copied().unwrap_or(0) > 0,
        "market maker filled: {fills:?}"
    );
    assert!(
        fills.get("taker").copied().unwrap_or(0) > 0,
        "taker filled: {fills:?}"
    );
    let svg = std::fs::read_to_string(a.join("report.svg")).expect("chart written");
    assert!(svg.contains("<svg"));
    assert!(a.join("report.csv").exists() && a.join("report.json").exists());
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("mm") && table.contains("taker"),
        "report table printed:\n{table}"
    );
    if let Some(py) = python() {
        run_python(
            &py,
            "report_python_check.py",
            &[a.to_str().unwrap(), a.join("report.json").to_str().unwrap()],
        );
        // The run files, written by ticktape's own Parquet writer, read alike by
        // pyarrow (page checksums verified), polars and DuckDB.
        run_python(&py, "check_run_files.py", &[a.to_str().unwrap(), "100"]);
    }
}

/// Runs the Python momentum strategy in a 2-minute lockstep backtest of the demo data with
/// the bus in `encoding`; returns the run directory. The scenario says plain `python3`, as
/// docs/SCENARIOS.md does, and `py`'s venv comes first on `PATH`, as after activating it:
/// the strategy imports the installed `ticktape_client` package (no `sys.path` help).
fn run_python_backtest(dir: &Path, py: &Path, encoding: &str) -> PathBuf {
    let scenario = dir.join(format!("py-{encoding}.toml"));
    std::fs::write(
        &scenario,
        format!(
            r#"name = "py-{encoding}"
[data]
dataset = "data/binance-spot"
start = "2024-08-08T23:55:00Z"
end = "2024-08-08T23:57:00Z"
[replay]
lockstep = true
lookahead = "1ms"
encoding = "{encoding}"
[[strategy]]
name = "py-momentum"
command = ["python3", "examples/python/momentum.py", "--bus", "{{bus}}", "--gateway", "{{gateway}}",
           "--venue", "{{venue}}", "--symbol", "{{symbol}}", "--size", "{{size}}", "--name", "{{name}}",
           "--cooldown-ms", "200", "{{lockstep}}"]
venue = "binance"
symbol = "BTCUSDT"
size = "0.01"
[exchange]
order_latency = {{ model = "constant", ns = 1_000_000 }}
"#
        ),
    )
    .unwrap();
    let run_dir = dir.join(format!("run-{encoding}"));
    let out = spawn_with_path(
        &[
            "run",
            scenario.to_str().unwrap(),
            "--out",
            run_dir.to_str().unwrap(),
            "--quiet",
        ],
        &path_with_python_first(py),
    )
    .wait(Duration::from_secs(300));
    assert_ok(&format!("run py scenario ({encoding})"), &out);
    run_dir
}

/// The Python strategy's last log line (its own counters).
fn python_strategy_summary(run_dir: &Path) -> serde_json::Value {
    let log = std::fs::read_to_string(run_dir.join("strategy-py-momentum.log")).unwrap();
    serde_json::from_str(log.lines().last().unwrap()).unwrap()
}

#[test]
fn python_strategy_runs_unchanged_in_a_lockstep_backtest_and_trades() {
    let Some(py) = python() else { return };
    let dir = tempdir();
    let run_dir = run_python_backtest(dir.path(), &py, "json");
    let fills = fills_by_strategy(&run_dir);
    assert!(
        fills.get("py-momentum").copied().unwrap_or(0) > 0,
        "{fills:?}"
    );
    assert_eq!(
        python_strategy_summary(&run_dir)["fills"].as_u64(),
        fills.get("py-momentum").copied(),
        "the strategy saw every fill"
    );
}

#[test]
fn python_strategy_trades_the_same_over_the_binary_encoding_as_over_json() {
    let Some(py) = python() else { return };
    let dir = tempdir();
    // The same lockstep backtest twice, only the bus encoding differs.
    let binary = run_python_backtest(dir.path(), &py, "binary");
    let json = run_python_backtest(dir.path(), &py, "json");
    let fills = fills_by_strategy(&binary);
    let n = fills.get("py-momentum").copied().unwrap_or(0);
    assert!(n > 0, "the strategy traded over binary: {fills:?}");
    let last = python_strategy_summary(&binary);
    assert!(
        last["events"].as_u64().unwrap_or(0) > 0,
        "the strategy decoded market data: {last}"
    );
    assert_eq!(
        last["fills"].as_u64(),
        Some(n),
        "the strategy saw every fill"
    );
    let (sb, sj) = (summary(&binary), summary(&json));
    assert!(sb["digest"].as_str().is_some_and(|d| d.len() == 16), "{sb}");
    assert_eq!(sb["digest"], sj["digest"], "the encoding changes no fill");
    assert_eq!(fills_by_strategy(&json), fills);
}

#[test]
fn a_crashing_strategy_ends_the_run_with_a_clear_message() {
    let dir = tempdir();
    let scenario = dir.path().join("crash.toml");
    std::fs::write(
        &scenario,
        r#"name = "crash"
[data]
dataset = "data/binance-spot"
[[strategy]]
name = "boom"
command = ["sh", "-c", "echo about to fail; exit 3"]
venue = "binance"
symbol = "BTCUSDT"
"#,
    )
    .unwrap();
    let out = spawn(&[
        "run",
        scenario.to_str().unwrap(),
        "--out",
        dir.path().join("r").to_str().unwrap(),
        "--quiet",
    ])
    .wait(Duration::from_secs(60));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("\"boom\"") && err.contains("code 3") && err.contains("about to fail"),
        "{err}"
    );
}

#[test]
fn malformed_scenario_names_file_line_and_key() {
    let dir = tempdir();
    let scenario = dir.path().join("bad.toml");
    std::fs::write(
        &scenario,
        "name = \"bad\"\n[data]\ndataset = \"data/binance-spot\"\n[replay]\nspeeed = \"max\"\n",
    )
    .unwrap();
    let out = spawn(&["run", scenario.to_str().unwrap(), "--quiet"]).wait(Duration::from_secs(30));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml:5:") && err.contains("speeed"),
        "{err}"
    );
}

#[test]
fn python_strategy_runs_unchanged_paper_live_against_simulate() {
    let Some(py) = python() else { return };
    let dir = tempdir();
    let live = free_tcp();
    let paper_pub = free_tcp();
    let gw = format!("ipc://{}", dir.path().join("gw.sock").display());
    let paper = spawn(&[
        "paper",
        "--connect",
        &live,
        "--bind",
        &paper_pub,
        "--gateway",
        &gw,
        "--quiet",
        "--order-latency",
        "1ms",
        "--run-dir",
        dir.path().join("paper").to_str().unwrap(),
    ]);
    let strategy = std::process::Command::new(&py)
        .args([
            "examples/python/momentum.py",
            "--bus",
            &live,
            "--bus",
            &paper_pub,
            "--gateway",
            &gw,
            "--venue",
            "sim",
            "--symbol",
            "BTC-USD",
            "--size",
            "0.1",
            "--window",
            "5",
            "--cooldown-ms",
            "50",
            "--exit-on-eos",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let strategy = Proc {
        child: strategy,
        desc: "momentum.py (paper)".into(),
    };
    let sim = spawn(&[
        "simulate",
        "--bind",
        &live,
        "--rate",
        "4000",
        "--events",
        "16000",
        "--wait-for",
        "2",
        "--quiet",
    ]);
    assert_ok("simulate", &sim.wait(Duration::from_secs(60)));
    let out = strategy.wait(Duration::from_secs(60));
    assert_ok("momentum.py", &out);
    let last: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
    assert!(
        last["fills"].as_u64().unwrap() > 0,
        "paper fills reached the strategy: {last}"
    );
    paper.signal("INT");
    assert_ok("paper", &paper.wait(Duration::from_secs(30)));
    assert!(dir.path().join("paper/fills.parquet").exists());
}

#[test]
fn a_truncated_import_fails_with_one_message_and_leaves_no_dataset() {
    let dir = tempdir();
    let full = std::fs::read("tests/fixtures/binance/spot_btcusdt_head.gz").unwrap();
    let cut = dir.path().join("btcusdt_cut.gz");
    std::fs::write(&cut, &full[..full.len() / 2]).unwrap();
    let fresh = dir.path().join("fresh");
    let out = spawn(&[
        "import",
        cut.to_str().unwrap(),
        "--format",
        "binance-raw",
        "--out",
        fresh.to_str().unwrap(),
        "--quiet",
    ])
    .wait(Duration::from_secs(60));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("btcusdt_cut.gz") && err.contains("nothing was added"),
        "{err}"
    );
    assert!(!fresh.exists(), "no half-written dataset left behind");
    // Into an existing dataset: the failed generation is removed, earlier data untouched.
    let good = dir.path().join("good.gz");
    std::fs::write(&good, &full).unwrap();
    run_ok(&[
        "import",
        good.to_str().unwrap(),
        "--out",
        fresh.to_str().unwrap(),
        "--quiet",
    ]);
    let before = inspect(&fresh);
    let out = spawn(&[
        "import",
        cut.to_str().unwrap(),
        "--format",
        "binance-raw",
        "--out",
        fresh.to_str().unwrap(),
        "--quiet",
    ])
    .wait(Duration::from_secs(60));
    assert!(!out.status.success());
    assert_eq!(inspect(&fresh)["partitions"], before["partitions"]);
}

/// Processes whose command line mentions `needle` (the run's socket directory names
/// every strategy it started).
fn processes_mentioning(needle: &str) -> Vec<String> {
    processes(needle).into_iter().map(|(_, cmd)| cmd).collect()
}

#[test]
fn ctrl_c_mid_run_keeps_partial_results_reports_them_and_leaves_no_strategy_behind() {
    let dir = tempdir();
    let run_dir = dir.path().join("r");
    // Recorded pace: six minutes of data, so the interrupt lands mid-run on any machine.
    let proc = spawn(&[
        "run",
        "scenarios/demo.toml",
        "--out",
        run_dir.to_str().unwrap(),
        "--quiet",
        "--speed",
        "1",
    ]);
    let tag = format!("tt-{}-", proc.child.id());
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while processes_mentioning(&tag).len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "strategies never started"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(3));
    proc.signal("INT");
    let out = proc.wait(Duration::from_secs(60));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "an interrupted run is not a success");
    assert!(err.contains("interrupted: partial results are in"), "{err}");
    let s = summary(&run_dir);
    assert_eq!(s["interrupted"], true, "{s}");
    let events = s["replay"]["events"].as_u64().unwrap();
    assert!(events > 0 && events < 135_830, "{s}");
    // The partial run is readable and reported.
    fills_by_strategy(&run_dir);
    assert!(run_dir.join("report.json").exists(), "{err}");
    assert_eq!(processes_mentioning(&tag), Vec::<String>::new());
}

#[test]
fn import_prints_each_warning_once() {
    let dir = tempdir();
    // The fixture's first lines without its REST snapshot: one "no depth snapshot" warning.
    let mut gz = flate2::read::GzDecoder::new(
        std::fs::File::open("tests/fixtures/binance/spot_btcusdt_head.gz").unwrap(),
    );
    let mut text = String::new();
    std::io::Read::read_to_string(&mut gz, &mut text).unwrap();
    let lines: Vec<&str> = text
        .lines()
        .take(200)
        .filter(|l| !l.contains("lastUpdateId"))
        .collect();
    let capture = dir.path().join("btcusdt_nosnapshot.txt");
    std::fs::write(&capture, lines.join("\n") + "\n").unwrap();
    let out = run_ok(&[
        "import",
        capture.to_str().unwrap(),
        "--format",
        "binance-raw",
        "--out",
        dir.path().join("ds").to_str().unwrap(),
        "--quiet",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.contains("warning:")).collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert!(warnings[0].contains("no depth snapshot"), "{stderr}");
}
