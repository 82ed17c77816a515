//! The in-process engine against the bus lockstep: the same scenario gives the same fills
//! in-process, in bus simple lockstep and in bus lookahead lockstep, on the shipped demo
//! data and on the real Binance USD-M capture.

use std::path::{Path, PathBuf};

use crate::util::*;

fn run_scenario(scenario: &Path, out: &Path) -> String {
    run_ok(&[
        "run",
        scenario.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--quiet",
    ]);
    digest(out)
}

/// `base` with `[engine] mode`, lookahead, window and dataset replaced, written to `dir`.
fn variant(
    base: &str,
    dir: &Path,
    name: &str,
    mode: &str,
    lookahead: Option<&str>,
    window: (&str, &str),
    dataset: &Path,
) -> PathBuf {
    let mut text = String::new();
    let mut top = true;
    for line in base.lines() {
        top &= !line.starts_with('[');
        let key = line.split('=').next().unwrap_or("").trim();
        match key {
            "lookahead" | "start" | "end" | "dataset" | "mode" | "[engine]" => continue,
            "name" if top => {
                text.push_str(&format!("name = \"{name}\"\n"));
                continue;
            }
            _ => {}
        }
        text.push_str(line);
        text.push('\n');
        if line.trim() == "[data]" {
            text.push_str(&format!(
                "dataset = {:?}\nstart = {:?}\nend = {:?}\n",
                dataset.display().to_string(),
                window.0,
                window.1
            ));
        }
        if line.trim() == "[replay]"
            && let Some(l) = lookahead
        {
            text.push_str(&format!("lookahead = {l:?}\n"));
        }
    }
    text.push_str(&format!("\n[engine]\nmode = {mode:?}\n"));
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn demo_dataset() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/binance-spot")
}

#[test]
fn inproc_demo_prints_the_same_digest_and_files_as_the_bus_lockstep() {
    let dir = tempdir();
    let (inproc, bus) = (dir.path().join("inproc"), dir.path().join("bus"));
    let a = run_scenario(Path::new("scenarios/demo-inproc.toml"), &inproc);
    let b = run_scenario(Path::new("scenarios/demo.toml"), &bus);
    assert_eq!(a, b, "demo-inproc.toml and demo.toml (bus, 1 ms lookahead)");
    let s = summary(&inproc);
    assert_eq!(s["engine"], "inproc");
    assert_eq!(s["replay"]["events"], 135_830);
    assert!(s["fills"].as_u64().unwrap() > 100, "{s}");
    for file in ["fills.parquet", "orders.parquet", "marks.parquet"] {
        assert_eq!(rows(&inproc, file), rows(&bus, file), "{file} differs");
    }
    assert!(inproc.join("report.svg").exists(), "run writes the report");
}

#[test]
fn simple_lockstep_lookahead_and_inproc_agree_on_one_minute_of_the_demo() {
    let dir = tempdir();
    let base = std::fs::read_to_string("scenarios/demo.toml").unwrap();
    let window = ("2024-08-08T23:56:00Z", "2024-08-08T23:57:00Z");
    let data = demo_dataset();
    let simple = variant(&base, dir.path(), "simple", "bus", None, window, &data);
    let ahead = variant(
        &base,
        dir.path(),
        "ahead",
        "bus",
        Some("1ms"),
        window,
        &data,
    );
    let inproc = variant(&base, dir.path(), "inproc", "inproc", None, window, &data);
    let d_simple = run_scenario(&simple, &dir.path().join("r-simple"));
    let d_ahead = run_scenario(&ahead, &dir.path().join("r-ahead"));
    let d_inproc = run_scenario(&inproc, &dir.path().join("r-inproc"));
    let fills = summary(&dir.path().join("r-inproc"))["fills"]
        .as_u64()
        .unwrap();
    assert!(fills > 0, "the minute has fills to compare");
    assert_eq!(d_simple, d_inproc, "bus simple lockstep vs in-process");
    assert_eq!(d_ahead, d_inproc, "bus lookahead lockstep vs in-process");
    assert_eq!(
        rows(&dir.path().join("r-simple"), "fills.parquet"),
        rows(&dir.path().join("r-inproc"), "fills.parquet")
    );
}

#[test]
fn inproc_and_bus_lookahead_agree_on_the_binance_usdm_capture() {
    let Some(capture) = real_data("hftbacktest/examples/usdm/btcusdt_20240808.gz") else {
        return;
    };
    let dir = tempdir();
    let data = dir.path().join("usdm");
    run_ok(&[
        "import",
        capture.to_str().unwrap(),
        "--out",
        data.to_str().unwrap(),
    ]);
    let base = std::fs::read_to_string("scenarios/demo.toml")
        .unwrap()
        .replace("\"binance\"", "\"binance-usdm\"")
        .replace("size = \"0.01\"", "size = \"0.002\"");
    let window = ("2024-08-08T23:55:00Z", "2024-08-08T23:57:00Z");
    let ahead = variant(
        &base,
        dir.path(),
        "ahead",
        "bus",
        Some("1ms"),
        window,
        &data,
    );
    let inproc = variant(&base, dir.path(), "inproc", "inproc", None, window, &data);
    let d_ahead = run_scenario(&ahead, &dir.path().join("r-ahead"));
    let d_inproc = run_scenario(&inproc, &dir.path().join("r-inproc"));
    let s = summary(&dir.path().join("r-inproc"));
    assert!(s["fills"].as_u64().unwrap() > 0, "{s}");
    assert!(s["replay"]["events"].as_u64().unwrap() > 100_000, "{s}");
    assert_eq!(d_ahead, d_inproc, "bus lookahead vs in-process on USD-M");
}

#[test]
fn strategy_params_reach_built_ins_in_process_and_over_the_bus() {
    let dir = tempdir();
    let base = std::fs::read_to_string("scenarios/demo.toml")
        .unwrap()
        .replace(
            "builtin = \"mm\"",
            "builtin = \"mm\"\nparams = { skew_ticks = 4, max_inventory = 2 }",
        );
    let window = ("2024-08-08T23:56:00Z", "2024-08-08T23:58:00Z");
    let data = demo_dataset();
    let tuned_bus = variant(&base, dir.path(), "tb", "bus", Some("1ms"), window, &data);
    let tuned_in = variant(&base, dir.path(), "ti", "inproc", None, window, &data);
    let plain_base = std::fs::read_to_string("scenarios/demo.toml").unwrap();
    let plain_in = variant(&plain_base, dir.path(), "pi", "inproc", None, window, &data);
    let d_bus = run_scenario(&tuned_bus, &dir.path().join("r-tb"));
    let d_in = run_scenario(&tuned_in, &dir.path().join("r-ti"));
    let d_plain = run_scenario(&plain_in, &dir.path().join("r-pi"));
    assert_eq!(d_bus, d_in, "the child process got the same parameters");
    assert_ne!(
        d_in, d_plain,
        "the parameters changed the market maker's fills"
    );
    let resolved = std::fs::read_to_string(dir.path().join("r-ti/scenario.toml")).unwrap();
    assert!(resolved.contains("skew_ticks = 4"), "{resolved}");

    let typo = base.replace("skew_ticks = 4", "skew_tiks = 4");
    let bad = dir.path().join("typo.toml");
    std::fs::write(&bad, typo).unwrap();
    let out =
        spawn(&["run", bad.to_str().unwrap(), "--quiet"]).wait(std::time::Duration::from_secs(60));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("strategy.params")
            && err.contains("skew_tiks")
            && err.contains("known: skew_ticks"),
        "{err}"
    );
}

#[test]
fn sweep_runs_every_grid_point_and_tabulates_each_runs_own_report() {
    let dir = tempdir();
    let out = dir.path().join("sweep");
    let base = std::fs::read_to_string("scenarios/demo-inproc.toml").unwrap();
    let window = ("2024-08-08T23:56:00Z", "2024-08-08T23:58:00Z");
    let scenario = variant(
        &base,
        dir.path(),
        "s",
        "inproc",
        None,
        window,
        &demo_dataset(),
    );
    run_ok(&[
        "sweep",
        scenario.to_str().unwrap(),
        "--set",
        "strategy.mm.params.skew_ticks=0,3",
        "--set",
        "exchange.order_latency.ns=1e6,5e6",
        "--jobs",
        "2",
        "--out",
        out.to_str().unwrap(),
        "--quiet",
    ]);
    let table: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("sweep.json")).unwrap()).unwrap();
    let points = table["points"].as_array().unwrap();
    assert_eq!(points.len(), 4, "2 × 2 grid");
    let mut last = f64::INFINITY;
    let mut digests = std::collections::BTreeSet::new();
    for p in points {
        let run_dir = PathBuf::from(p["run_dir"].as_str().unwrap());
        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(run_dir.join("report.json")).unwrap())
                .unwrap();
        assert_eq!(
            p["net_pnl"], report["total"]["net_pnl"],
            "row = its run's report"
        );
        assert_eq!(p["fills"], report["total"]["trades"]);
        assert_eq!(p["digest"], summary(&run_dir)["digest"]);
        let resolved = std::fs::read_to_string(run_dir.join("scenario.toml")).unwrap();
        let skew = p["params"][0][1].as_str().unwrap();
        assert!(
            resolved.contains(&format!("skew_ticks = {skew}")),
            "{resolved}"
        );
        let pnl = p["net_pnl"].as_f64().unwrap();
        assert!(pnl <= last, "sorted by net PnL, best first");
        last = pnl;
        digests.insert(p["digest"].as_str().unwrap().to_string());
    }
    assert_eq!(digests.len(), 4, "every point traded differently");
    for f in ["sweep.parquet", "sweep.csv", "heatmap.svg"] {
        assert!(out.join(f).exists(), "{f}");
    }
    let csv = std::fs::read_to_string(out.join("sweep.csv")).unwrap();
    assert_eq!(csv.lines().count(), 5, "header + 4 rows:\n{csv}");
}
