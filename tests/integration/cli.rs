//! What a user sees at the command line: error messages that name the fix, exact
//! numbers, output folders created, status lines that stay out of each other's way.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::util::*;

fn demo_dataset() -> &'static str {
    concat!(env!("CARGO_MANIFEST_DIR"), "/data/binance-spot")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn book_with_a_wrong_case_symbol_or_venue_names_the_known_ones() {
    let book = |venue: &str, symbol: &str| {
        spawn(&[
            "book",
            demo_dataset(),
            "--venue",
            venue,
            "--symbol",
            symbol,
            "--at",
            "2024-08-08T23:58:00Z",
        ])
        .wait(Duration::from_secs(60))
    };
    let out = book("binance", "btcusdt");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("unknown symbol btcusdt on binance; known: BTCUSDT"),
        "{}",
        stderr(&out)
    );
    let out = book("Binance", "BTCUSDT");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("unknown venue Binance; known: binance"),
        "{}",
        stderr(&out)
    );
    // A known instrument before its first data still says so.
    let out = spawn(&[
        "book",
        demo_dataset(),
        "--venue",
        "binance",
        "--symbol",
        "BTCUSDT",
        "--at",
        "2024-08-01T00:00:00Z",
    ])
    .wait(Duration::from_secs(60));
    assert!(
        stderr(&out).contains("no data for binance/BTCUSDT before"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn recover_of_a_missing_directory_fails_and_says_what_to_give() {
    let dir = tempdir();
    let missing = dir.path().join("no-such-dataset");
    let out = spawn(&["recover", missing.to_str().unwrap()]).wait(Duration::from_secs(60));
    assert!(!out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no such dataset directory"),
        "{}",
        stderr(&out)
    );
    assert!(!missing.exists(), "recover created {}", missing.display());
}

#[test]
fn book_prints_the_mid_as_an_exact_decimal() {
    let out = run_ok(&[
        "book",
        demo_dataset(),
        "--venue",
        "binance",
        "--symbol",
        "BTCUSDT",
        "--at",
        "2024-08-08T23:58:00Z",
        "--depth",
        "1",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    // Best bid 61661.38000000, best ask 61661.39000000 (f64 gave 61661.384999999995).
    assert!(
        text.contains("spread 0.01000000  mid 61661.38500000 "),
        "{text}"
    );
}

/// Runs one minute of the demo in-process; returns the run directory.
fn short_run(dir: &Path) -> PathBuf {
    let scenario = dir.join("short.toml");
    std::fs::write(
        &scenario,
        format!(
            r#"name = "short"
[data]
dataset = "{}"
start = "2024-08-08T23:55:00Z"
end = "2024-08-08T23:56:00Z"
[replay]
lockstep = true
lookahead = "1ms"
[engine]
mode = "inproc"
[[strategy]]
name = "mm"
builtin = "mm"
venue = "binance"
symbol = "BTCUSDT"
size = "0.01"
[exchange]
order_latency = {{ model = "constant", ns = 1_000_000 }}
"#,
            demo_dataset()
        ),
    )
    .unwrap();
    let run_dir = dir.join("run");
    run_ok(&[
        "run",
        scenario.to_str().unwrap(),
        "--out",
        run_dir.to_str().unwrap(),
        "--quiet",
    ]);
    run_dir
}

#[test]
fn report_creates_the_missing_folders_of_its_chart_and_csv() {
    let dir = tempdir();
    let run_dir = short_run(dir.path());
    let chart = dir.path().join("out/charts/x.svg");
    let csv = dir.path().join("tables/r.csv");
    run_ok(&[
        "report",
        run_dir.to_str().unwrap(),
        "--chart",
        chart.to_str().unwrap(),
        "--csv",
        csv.to_str().unwrap(),
    ]);
    assert!(
        std::fs::read_to_string(&chart).unwrap().starts_with("<svg"),
        "chart written"
    );
    assert!(csv.exists(), "csv written");
}

/// Runs `command` under `script` (a pseudo-terminal with `bash -c`) and returns what the
/// terminal showed; `None` (a skip, a failure under CI) without util-linux `script`.
fn in_terminal(command: &str) -> Option<String> {
    let out = match Command::new("script")
        .args(["-qec", command, "/dev/null"])
        .env("SHELL", "/bin/bash")
        .stdin(std::process::Stdio::null())
        .output()
    {
        Ok(out) => out,
        Err(e) => {
            if std::env::var("CI").is_ok() {
                panic!("CI=true but util-linux `script` cannot run: {e}");
            }
            eprintln!("skipping terminal checks: `script` (util-linux) cannot run: {e}");
            return None;
        }
    };
    assert_ok(&format!("script -qec {command:?}"), &out);
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn a_background_job_draws_no_status_line_and_a_foreground_one_does() {
    let dir = tempdir();
    let simulate = format!(
        "{} simulate --bind ipc://{} --rate 2000 --events 3000",
        bin().display(),
        dir.path().join("bus.sock").display()
    );
    let Some(foreground) = in_terminal(&simulate) else {
        return;
    };
    assert!(foreground.contains("simulate on ipc://"), "{foreground}");
    assert!(
        foreground.contains("simulate: published 3000"),
        "{foreground}"
    );
    // `set -m`: job control as in an interactive shell, so `&` makes a background job.
    let background = in_terminal(&format!("set -m; {simulate} & wait $!")).unwrap();
    assert!(
        !background.contains("simulate on ipc://"),
        "no status line from a background job: {background}"
    );
    assert!(
        background.contains("simulate: published 3000"),
        "the summary still comes: {background}"
    );
}

#[test]
fn progress_shows_whole_events_per_second() {
    // 20 s of recorded time at 10x: about two seconds of progress bar.
    let dir = tempdir();
    let shown = in_terminal(&format!(
        "{} replay {} --start 2024-08-08T23:55:00Z --end 2024-08-08T23:55:20Z --speed 10 \
         --wait-for 0 --bind ipc://{}",
        bin().display(),
        demo_dataset(),
        dir.path().join("bus.sock").display()
    ));
    let Some(shown) = shown else { return };
    let rates: Vec<&str> = shown
        .split(|c: char| c.is_whitespace())
        .filter(|w| w.ends_with("/s") && w.starts_with(|c: char| c.is_ascii_digit()))
        .collect();
    assert!(!rates.is_empty(), "a rate is shown: {shown}");
    for rate in rates {
        let digits = rate.trim_end_matches("/s");
        assert!(
            digits.chars().all(|c| c.is_ascii_digit() || c == ','),
            "{rate} is a whole number of events/s:\n{shown}"
        );
    }
}

#[test]
fn replay_own_core_is_refused_unpaced_and_named_in_the_summary_when_paced() {
    let data = demo_dataset();
    let out =
        spawn(&["replay", data, "--own-core", "--wait-for", "0"]).wait(Duration::from_secs(60));
    assert!(!out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--own-core") && stderr(&out).contains("--speed 1"),
        "says what to change: {}",
        stderr(&out)
    );
    // A backup publisher over ZeroMQ: refused before anything is bound, saying why.
    let out = spawn(&[
        "replay",
        data,
        "--speed",
        "10",
        "--own-core",
        "--backup-publisher",
        "--wait-for",
        "0",
    ])
    .wait(Duration::from_secs(60));
    assert!(!out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--backup-publisher") && stderr(&out).contains("--transport shm"),
        "says what to change: {}",
        stderr(&out)
    );
    let Some(cpus) = two_cpus_or_skip("the paced half of --own-core") else {
        return;
    };
    let bind = free_tcp();
    let out = run_ok(&[
        "replay",
        data,
        "--start",
        "2024-08-08T23:57:00Z",
        "--end",
        "2024-08-08T23:57:02Z",
        "--speed",
        "10",
        "--own-core",
        "--pacing",
        "busy",
        "--bind",
        &bind,
        "--wait-for",
        "0",
        "--quiet",
        "--json",
    ]);
    let sum: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        sum["own_cpu"].as_u64(),
        cpus.last().map(|&c| c as u64),
        "the last CPU: {sum}"
    );
    assert_eq!(sum["pacing"]["waiting"], "busy", "{sum}");
    assert!(sum["events"].as_u64().unwrap() > 0, "{sum}");
    // Busy pacing spins to every due time it waits for, so its stall figures are kept
    // (how much of the replay that covers depends on how far the read-ahead keeps up:
    // in a debug build, not always), and the machine's share of its own CPU and the
    // thread's run delay are reported beside them.
    let stalls = &sum["pacing"]["stalls"];
    let spun = stalls["spun_secs"].as_f64().unwrap();
    assert!(
        spun > 0.0 && spun <= sum["elapsed_secs"].as_f64().unwrap(),
        "{sum}"
    );
    assert!(stalls["count"].as_u64().is_some(), "{sum}");
    assert_eq!(
        sum["pacing"]["floor_stalled"]["samples"], sum["pacing"]["floor"]["samples"],
        "{sum}"
    );
    assert!(sum["own_cpu_steal_secs"].as_f64().is_some(), "{sum}");
    assert!(sum["run_delay_secs"].as_f64().is_some(), "{sum}");
}
